package archive

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestVerify: good archives verify with the stats Write reported; truncated
// copies and copies with one flipped byte fail, for every format.
func TestVerify(t *testing.T) {
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			src, single := buildTree(t, filepath.Join(dir, "data"))
			arch := filepath.Join(dir, archiveExt(format))
			wst := writeArchive(t, arch, format, []string{src, single}, Options{})
			vst, err := VerifyFile(context.Background(), arch, format)
			if err != nil {
				t.Fatalf("good archive: %v", err)
			}
			if vst.Files != wst.Files || vst.Dirs != wst.Dirs || vst.Symlinks != wst.Symlinks || vst.Hardlinks != wst.Hardlinks || vst.BytesRead != wst.BytesRead {
				t.Errorf("verify stats %+v != write stats %+v", vst, wst)
			}
			good, err := os.ReadFile(arch)
			must(t, err)
			bad := filepath.Join(dir, "bad")
			check := func(what string, data []byte) {
				t.Helper()
				must(t, os.WriteFile(bad, data, 0o644))
				if _, err := VerifyFile(context.Background(), bad, format); err == nil {
					t.Errorf("%s: VerifyFile succeeded on a corrupt archive", what)
				} else {
					t.Logf("%s: %v", what, err)
				}
				x := t.TempDir()
				if _, err := ExtractFile(context.Background(), bad, format, x, ExtractOptions{}); err == nil {
					t.Errorf("%s: ExtractFile succeeded on a corrupt archive", what)
				}
			}
			for _, n := range []int{len(good) / 2, len(good) - 1, len(good) - 5, 1000} {
				check("truncated to "+itoa(n), good[:n])
			}
			for _, pos := range []int{len(good) / 3, len(good) / 2, 2 * len(good) / 3} {
				for _, mask := range []byte{0x01, 0x80} {
					c := append([]byte(nil), good...)
					c[pos] ^= mask
					check("byte "+itoa(pos)+" flipped", c)
				}
			}
		})
	}
}

func itoa(n int) string { return fmtInt(int64(n)) }

func fmtInt(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	if neg {
		b = append([]byte{'-'}, b...)
	}
	return string(b)
}
