package generator

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkGenerate1000 renders a spec of 1,000 services (issue: under 1 s).
func BenchmarkGenerate1000(b *testing.B) {
	var spec strings.Builder
	spec.WriteString("[defaults.backup]\npaths = [\"/var/backups/{name}\", \"/mnt/backup/{name}\"]\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&spec, "\n[[services]]\nname = \"svc%04d\"\nserviceName = \"docker-svc%04d.service\"\ndataPaths = [\"/var/lib/svc%04d/a\", \"/var/lib/svc%04d/b\"]\n[services.backup]\nschedule = \"%d %d * * 1-5\"\n", i, i, i, i, i%60, i%24)
	}
	data := []byte(spec.String())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		files, err := Generate("spec.toml", data, DefaultOptions)
		if err != nil {
			b.Fatal(err)
		}
		if len(files) != 4+5*1000 {
			b.Fatalf("%d files", len(files))
		}
	}
}
