package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Corpus composition (fractions of the requested size):
//   - ~20% small text files: 20,000 per GiB of 1-20 KB (JSON, YAML, INI, Markdown),
//     in a nested directory tree, plus symlinks and empty directories;
//   - ~40% large logs (4 files) - very compressible;
//   - ~15% database-like files (8 KiB pages, rows with text, numbers and
//     random tokens, zero-filled free space) - moderately compressible;
//   - ~25% media-like random bytes (2 big files and a few hundred medium ones)
//     - incompressible.
//
// Everything comes from a fixed seed: the same size always gives the same
// bytes, names and mtimes.

const corpusSeed = 20240611

var words = strings.Fields(`backup restore service nixos archive config data user group
error warning info debug request response latency session token cache index
database table row column value server client connect timeout retry queue worker
job schedule daily weekly monthly storage volume snapshot mount path file directory
the of and to in is for on with as by at from this that be are was it an or
alpha beta gamma delta epsilon status ok failed pending running stopped started`)

var logLevels = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}

type gen struct {
	r *rand.Rand
}

func (g *gen) word() string { return words[g.r.IntN(len(words))] }

func (g *gen) sentence(n int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(g.word())
	}
	return sb.String()
}

func (g *gen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.r.IntN(16)]
	}
	return string(b)
}

// smallFile returns a text file of about n bytes, by kind.
func (g *gen) smallFile(kind, n int) []byte {
	var sb strings.Builder
	switch kind {
	case 0: // JSON
		sb.WriteString("{\n  \"items\": [\n")
		for sb.Len() < n {
			fmt.Fprintf(&sb, "    {\"id\": %d, \"name\": %q, \"enabled\": %t, \"tags\": [%q, %q], \"hash\": %q, \"score\": %.3f},\n",
				g.r.IntN(1000000), g.sentence(2), g.r.IntN(2) == 0, g.word(), g.word(), g.hex(16), g.r.Float64()*100)
		}
		sb.WriteString("    {}\n  ]\n}\n")
	case 1: // YAML
		for sb.Len() < n {
			fmt.Fprintf(&sb, "%s:\n  %s: %d\n  %s: %q\n  %s: [%s, %s]\n", g.word(), g.word(), g.r.IntN(65536), g.word(), g.sentence(3), g.word(), g.word(), g.word())
		}
	case 2: // INI
		for sb.Len() < n {
			fmt.Fprintf(&sb, "[%s.%s]\n%s = %s\n%s = %d\n# %s\n", g.word(), g.word(), g.word(), g.sentence(2), g.word(), g.r.IntN(10000), g.sentence(6))
		}
	default: // Markdown
		for sb.Len() < n {
			fmt.Fprintf(&sb, "## %s\n\n%s.\n\n", g.sentence(3), g.sentence(20+g.r.IntN(40)))
		}
	}
	s := sb.String()
	if len(s) > n {
		s = s[:n]
	}
	return []byte(s)
}

func (g *gen) writeLog(w *bufio.Writer, n int64, t time.Time) error {
	var written int64
	for written < n {
		t = t.Add(time.Duration(g.r.IntN(2000)) * time.Millisecond)
		line := fmt.Sprintf("%s host%02d %s[%d]: %s request_id=%s user=%s latency_ms=%d %s\n",
			t.Format("2006-01-02T15:04:05.000Z07:00"), g.r.IntN(8), g.word(), 1000+g.r.IntN(30000),
			logLevels[g.r.IntN(len(logLevels))], g.hex(12), g.word(), g.r.IntN(5000), g.sentence(4+g.r.IntN(10)))
		m, err := w.WriteString(line)
		if err != nil {
			return err
		}
		written += int64(m)
	}
	return w.Flush()
}

func (g *gen) writeDB(w *bufio.Writer, n int64) error {
	page := make([]byte, 8192)
	for pg := int64(0); pg*8192 < n; pg++ {
		clear(page)
		copy(page, fmt.Sprintf("PAGE%08d", pg))
		off := 64
		rows := 20 + g.r.IntN(40)
		for i := 0; i < rows; i++ {
			row := fmt.Sprintf("%d|%s|%s@example.org|%d|%s|%.2f\x00", pg*100+int64(i), g.sentence(2), g.word(), 1600000000+g.r.IntN(100000000), g.hex(32), g.r.Float64()*1000)
			if off+len(row) > len(page) {
				break
			}
			off += copy(page[off:], row)
		}
		if _, err := w.Write(page); err != nil {
			return err
		}
	}
	return w.Flush()
}

func writeRandom(path string, n int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 7}))
	buf := make([]byte, 1<<20)
	for n > 0 {
		m := int64(len(buf))
		if n < m {
			m = n
		}
		for i := 0; i+8 <= int(m); i += 8 {
			v := r.Uint64()
			buf[i], buf[i+1], buf[i+2], buf[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
			buf[i+4], buf[i+5], buf[i+6], buf[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
		}
		if _, err := f.Write(buf[:m]); err != nil {
			f.Close()
			return err
		}
		n -= m
	}
	return f.Close()
}

func writeWith(path string, fn func(w *bufio.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := fn(w); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// buildCorpus creates the corpus of about size bytes in dir unless dir/.complete
// exists already.
func buildCorpus(dir string, size int64) error {
	marker := dir + ".complete"
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil { // a partial corpus from an interrupted build
		return err
	}
	start := time.Now()
	fmt.Fprintf(os.Stderr, "building corpus %s (%s)...\n", dir, human(size))
	g := &gen{r: rand.New(rand.NewPCG(corpusSeed, uint64(size)))}
	base := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)

	// Small files.
	nSmall := int(float64(20000) * float64(size) / float64(1<<30))
	if nSmall < 200 {
		nSmall = 200
	}
	nDirs := nSmall/100 + 1
	exts := []string{".json", ".yaml", ".ini", ".md"}
	var smallNames []string
	for i := 0; i < nSmall; i++ {
		d := g.r.IntN(nDirs)
		rel := filepath.Join("etc", fmt.Sprintf("app%02d", d%20), fmt.Sprintf("module%03d", d), fmt.Sprintf("%s-%05d%s", g.word(), i, exts[i%4]))
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, g.smallFile(i%4, 1000+g.r.IntN(19000)), 0o644); err != nil {
			return err
		}
		smallNames = append(smallNames, rel)
	}
	// Symlinks (relative, to small files) and empty directories.
	for i := 0; i < nSmall/100+10; i++ {
		target := smallNames[g.r.IntN(len(smallNames))]
		link := filepath.Join(dir, "links", fmt.Sprintf("link%04d", i))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join("..", target), link); err != nil {
			return err
		}
	}
	for i := 0; i < 50; i++ {
		if err := os.MkdirAll(filepath.Join(dir, "spool", fmt.Sprintf("empty%02d", i)), 0o755); err != nil {
			return err
		}
	}
	// Logs.
	if err := os.MkdirAll(filepath.Join(dir, "log"), 0o755); err != nil {
		return err
	}
	for i := 0; i < 4; i++ {
		err := writeWith(filepath.Join(dir, "log", fmt.Sprintf("app%d.log", i)), func(w *bufio.Writer) error {
			return g.writeLog(w, size/10, base.Add(time.Duration(i)*time.Hour))
		})
		if err != nil {
			return err
		}
	}
	// Database-like.
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o755); err != nil {
		return err
	}
	for i := 0; i < 2; i++ {
		if err := writeWith(filepath.Join(dir, "db", fmt.Sprintf("table%d.db", i)), func(w *bufio.Writer) error {
			return g.writeDB(w, size*15/200)
		}); err != nil {
			return err
		}
	}
	// Media-like.
	if err := os.MkdirAll(filepath.Join(dir, "media", "photos"), 0o755); err != nil {
		return err
	}
	for i := 0; i < 2; i++ {
		if err := writeRandom(filepath.Join(dir, "media", fmt.Sprintf("video%d.mp4", i)), size/16, uint64(i+1)); err != nil {
			return err
		}
	}
	rest := size/4 - 2*(size/16)
	for i := 0; rest > 0; i++ {
		n := int64(200_000 + g.r.IntN(1_800_000))
		if n > rest {
			n = rest
		}
		if err := writeRandom(filepath.Join(dir, "media", "photos", fmt.Sprintf("IMG_%04d.jpg", i)), n, uint64(100+i)); err != nil {
			return err
		}
		rest -= n
	}
	// Fixed mtimes for everything (directories last, deepest first).
	var paths []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&os.ModeSymlink == 0 {
			paths = append(paths, p)
		}
		return nil
	})
	for i := len(paths) - 1; i >= 0; i-- {
		t := base.Add(time.Duration(i) * time.Second)
		os.Chtimes(paths[i], t, t)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "corpus built in %s\n", time.Since(start).Round(time.Second))
	return nil
}
