package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ManifestCheck is what CheckManifest found.
type ManifestCheck struct {
	Entries  int64 // manifest entries checked
	Unhashed int64 // regular files listed without a SHA-256 (changed while archived): only type, mode and size checked
	Bytes    int64 // content bytes hashed
	// Differences lists the first differences (at most the limit given);
	// Total counts them all.
	Differences []string
	Total       int64
	present     int64 // entries listed and found
}

// OK: the restored tree is what the manifest lists.
func (c *ManifestCheck) OK() bool { return c.Total == 0 }

func (c *ManifestCheck) differ(limit int, format string, args ...any) {
	c.Total++
	if len(c.Differences) < limit {
		c.Differences = append(c.Differences, fmt.Sprintf(format, args...))
	}
}

// CheckManifest compares the tree a restore made under dir (archive entry
// names are relative to dir) with the manifest in r: every entry listed
// must be there with its type, mode (permission and sticky bits; restore
// strips setuid/setgid by default), size, content SHA-256 and link
// target, and nothing else may be below roots (the entry names of the
// data paths). It keeps nothing per entry in memory: extra entries are
// found by counting (the entries below roots, against those listed and
// found; names in a manifest are unique). At most limit differences are described.
func CheckManifest(ctx context.Context, dir string, r io.Reader, roots []string, limit int) (*ManifestCheck, error) {
	mr, err := NewManifestReader(r)
	if err != nil {
		return nil, err
	}
	c := &ManifestCheck{}
	buf := make([]byte, copyBufSize)
	for {
		if err := ctx.Err(); err != nil {
			return c, err
		}
		e, err := mr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, err
		}
		c.Entries++
		if err := c.entry(dir, e, buf, limit); err != nil {
			return c, err
		}
	}
	var found int64
	for _, root := range roots {
		n, err := countTree(filepath.Join(dir, root))
		if err != nil {
			return c, err
		}
		found += n
	}
	if found > c.present {
		c.differ(limit, "%d entries restored that the manifest does not list", found-c.present)
	}
	return c, nil
}

// entry checks one manifest entry against the restored tree.
func (c *ManifestCheck) entry(dir string, e ManifestEntry, buf []byte, limit int) error {
	name, err := cleanName(e.Name)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	p := filepath.Join(dir, filepath.FromSlash(name))
	fi, err := os.Lstat(p)
	if err != nil {
		c.differ(limit, "%s: missing from the restore", e.Name)
		return nil
	}
	c.present++
	if want := manifestType(e.Type); fi.Mode().Type() != want {
		c.differ(limit, "%s: restored as %s, the manifest says %s", e.Name, typeWord(fi.Mode().Type()), typeWord(want))
		return nil
	}
	if e.Type != ManifestSymlink {
		if got, want := unixMode(fi.Mode())&0o1777, e.Mode&0o1777; got != want {
			c.differ(limit, "%s: mode %04o, the manifest says %04o", e.Name, got, want)
		}
	}
	switch e.Type {
	case ManifestSymlink:
		if t, err := os.Readlink(p); err != nil || t != e.Link {
			c.differ(limit, "%s: symlink target %q, the manifest says %q", e.Name, t, e.Link)
		}
	case ManifestHardlink:
		lname, err := cleanName(e.Link)
		if err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		if li, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(lname))); err != nil || !os.SameFile(fi, li) {
			c.differ(limit, "%s: not a hard link to %s", e.Name, e.Link)
		}
	case ManifestFile:
		return c.file(p, fi, e, buf, limit)
	}
	return nil
}

func (c *ManifestCheck) file(p string, fi fs.FileInfo, e ManifestEntry, buf []byte, limit int) error {
	if fi.Size() != e.Size {
		c.differ(limit, "%s: size %d, the manifest says %d", e.Name, fi.Size(), e.Size)
		return nil
	}
	if e.Sum == nil {
		c.Unhashed++
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, onlyReader{f}, buf)
	c.Bytes += n
	if err != nil {
		return fmt.Errorf("read %s: %w", e.Name, err)
	}
	if !bytes.Equal(h.Sum(nil), e.Sum) {
		c.differ(limit, "%s: content differs (SHA-256 %x, the manifest says %x)", e.Name, h.Sum(nil), e.Sum)
	}
	return nil
}

// countTree counts the entries at and below root (0 when it is missing).
func countTree(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(_ string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

func manifestType(t byte) fs.FileMode {
	switch t {
	case ManifestDir:
		return fs.ModeDir
	case ManifestSymlink:
		return fs.ModeSymlink
	}
	return 0 // a regular file (a hard link too)
}

func typeWord(m fs.FileMode) string {
	switch {
	case m == 0:
		return "a regular file"
	case m&fs.ModeDir != 0:
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "a " + typeName(m)
}
