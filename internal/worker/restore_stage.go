package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/backupgen/backupgen/internal/archive"
)

// Restoring in place: the archive is extracted into a private staging
// directory beside each data path, then swapped in (restore.go).

// staged is one data path extracted next to its final place.
type staged struct {
	dataPath string
	staging  string   // private directory in the data path's parent
	dir      *os.File // staging, open: every later step goes through it
	restored string   // the data path inside staging, via dir
	aside    string   // where the current data went ("" if there was none)
	done     bool     // the restored data is in place
}

// newStaging makes a private staging directory in parent (named
// prefix + random) and opens it. The parent usually belongs to the
// service user, who can rename the staging directory or put a symlink in
// its place at any moment: so it is opened once, checked to be the
// private directory just made, and everything after (extraction, checks,
// the final rename) goes through that descriptor, never through its name.
func newStaging(parent, prefix string) (*staged, error) {
	name, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return nil, err
	}
	s := &staged{staging: name}
	if s.dir, err = openPrivateDir(name); err != nil {
		s.remove()
		return nil, err
	}
	return s, nil
}

// stageAll extracts every data path p from the archive, in one pass, into
// a staging directory in p's parent directory, and checks what each holds.
func (rs *restorer) stageAll(ctx context.Context, src *restoreSource) ([]*staged, error) {
	opts, err := rs.extractOptions()
	if err != nil {
		return nil, err
	}
	var stages []*staged
	for _, p := range rs.cfg.DataPaths {
		parent := filepath.Dir(p)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return stages, err
		}
		s, err := newStaging(parent, "."+filepath.Base(p)+".restore-")
		if err != nil {
			return stages, err
		}
		s.dataPath = p
		s.restored = filepath.Join(fdPath(s.dir), archive.EntryName(p))
		stages = append(stages, s)
		opts.Roots = append(opts.Roots, archive.StageRoot{Path: p, Dir: s.dir})
	}
	rs.log.Info("extracting and verifying", keyArchive, src.label, "data_paths", strings.Join(rs.cfg.DataPaths, ","))
	if _, err := rs.extract(ctx, src, nil, opts); err != nil {
		return stages, err
	}
	for _, s := range stages {
		fi, err := os.Lstat(s.restored)
		if err != nil {
			return stages, fmt.Errorf("archive %s holds nothing for data path %s", src.label, s.dataPath)
		}
		if err := checkRootType(s.dataPath, fi); err != nil {
			return stages, err
		}
	}
	return stages, nil
}

// moveContentTo moves everything in the staging directory into dir (a
// target the restore checked empty). No fsync: like tar -x, the restored
// tree is left to the kernel's write-back (an fsync of dir would, on
// ext4's data=ordered, wait for every byte extracted).
func (s *staged) moveContentTo(dir string) error {
	ents, err := os.ReadDir(fdPath(s.dir))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Rename(filepath.Join(fdPath(s.dir), e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// openPrivateDir opens the directory os.MkdirTemp made at name, refusing
// anything else put there since (a symlink, or a directory that is not
// ours and 0700).
func openPrivateDir(name string) (*os.File, error) {
	d, err := os.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("staging directory: %w", err)
	}
	fi, err := d.Stat()
	if err == nil {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm() != 0o700 {
			err = fmt.Errorf("staging directory %s was replaced (owner or mode changed)", name)
		}
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// fdPath names an open directory by its descriptor: paths below it resolve
// from the directory itself, whatever happens to its name.
func fdPath(d *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", d.Fd()) }

// remove deletes the staging directory's content through its descriptor,
// and its name only while that name is still the same directory.
func (s *staged) remove() {
	if s.dir == nil {
		if s.staging != "" {
			os.Remove(s.staging) // opening failed: remove only if empty
			s.staging = ""
		}
		return
	}
	if ents, err := os.ReadDir(fdPath(s.dir)); err == nil {
		for _, e := range ents {
			os.RemoveAll(filepath.Join(fdPath(s.dir), e.Name()))
		}
	}
	if fi, err := os.Lstat(s.staging); err == nil {
		if own, err := s.dir.Stat(); err == nil && os.SameFile(fi, own) {
			os.Remove(s.staging)
		}
	}
	s.dir.Close()
	s.dir, s.staging = nil, ""
}

// checkRootType: a data path is only ever replaced by a directory, or by a
// regular file where the data path is one (or is missing). archive's rules
// already keep links and special files off a root; this also refuses a
// directory turned into a file or the other way round.
func checkRootType(p string, restored os.FileInfo) error {
	if !restored.IsDir() && !restored.Mode().IsRegular() {
		return fmt.Errorf("refusing to restore data path %s as a %s", p, restored.Mode().Type())
	}
	cur, err := os.Lstat(p)
	if err != nil || (!cur.IsDir() && !cur.Mode().IsRegular()) {
		return nil // missing, or a symlink or other planted thing: moved aside
	}
	if cur.IsDir() != restored.IsDir() {
		return fmt.Errorf("refusing to replace data path %s (%s) with a %s from the archive", p, kindOf(cur), kindOf(restored))
	}
	return nil
}

func kindOf(fi os.FileInfo) string {
	if fi.IsDir() {
		return "directory"
	}
	return "regular file"
}

// swap moves the current data aside and the staged copy into place.
func (rs *restorer) swap(s *staged, ts string) error {
	if _, err := os.Lstat(s.dataPath); err == nil {
		aside := s.dataPath + ".pre-restore-" + ts
		if _, err := os.Lstat(aside); err == nil {
			return fmt.Errorf("%s already exists; not moving %s there", aside, s.dataPath)
		}
		if err := os.Rename(s.dataPath, aside); err != nil {
			return fmt.Errorf("move %s aside: %w", s.dataPath, err)
		}
		s.aside = aside
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(s.restored, s.dataPath); err != nil {
		err = fmt.Errorf("move restored %s into place: %w", s.dataPath, err)
		if s.aside != "" {
			if rerr := os.Rename(s.aside, s.dataPath); rerr != nil {
				return fmt.Errorf("%w; and moving the previous data back failed: %v (it is at %s)", err, rerr, s.aside)
			}
			s.aside = ""
		}
		return err
	}
	return syncDir(filepath.Dir(s.dataPath))
}
