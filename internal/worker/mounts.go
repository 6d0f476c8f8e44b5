package worker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A destination on a removable or network disk has a mount point: a
// directory on the parent file system that the disk is mounted over. While
// the disk is not mounted, that directory is still there, empty, and
// writing to it would silently fill the parent disk (issue 11 item 3). The
// worker therefore tells a mounted destination from its bare mount point:
//
//   - fstab rule: a destination, or a directory above it, that /etc/fstab
//     lists as a mount point but that is not mounted now is not there. An
//     optional destination is skipped; a required one fails preflight.
//   - empty-directory rule: an empty directory that is not a mount point,
//     in a directory that is not one either, may be a mount point known
//     only to the admin (mounted by hand, by udisks). An optional
//     destination that is such a directory is skipped, and a missing
//     destination is never created inside one. A directory right at the
//     top of a mounted file system (/mnt/backup/myapp with a disk at
//     /mnt/backup) is used even when empty. Required destinations that
//     exist are used: nothing distinguishes an empty bare mount point from
//     a freshly created folder, and the unit's RequiresMountsFor= covers
//     the systemd case.
//   - optional destinations are never created.
//
// So a plain folder deeper down, meant as an optional destination, needs
// one file in it (any file; the run's archives do that after the first run).

// mountTable knows which directories are mount points now and which ones
// fstab declares.
type mountTable struct {
	mounted  map[string]bool // from mountinfo
	declared map[string]bool // from fstab
	fstab    string          // the fstab read, for messages
}

// readMountTable reads mountinfo and fstab (normally /proc/self/mountinfo
// and /etc/fstab); either may be missing (a container without fstab),
// which leaves its part empty.
func readMountTable(mountinfoPath, fstabPath string) (*mountTable, error) {
	mt := &mountTable{mounted: map[string]bool{}, declared: map[string]bool{}, fstab: fstabPath}
	if err := readFields(mountinfoPath, 4, mt.mounted); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", mountinfoPath, err)
	}
	if err := readFields(fstabPath, 1, mt.declared); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", fstabPath, err)
	}
	return mt, nil
}

// readFields adds field i (0-based, octal escapes decoded) of every
// non-comment line of path to set, when it is an absolute path.
func readFields(path string, i int, set map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) <= i {
			continue
		}
		if p := unescapeOctal(fields[i]); filepath.IsAbs(p) {
			set[filepath.Clean(p)] = true
		}
	}
	return sc.Err()
}

// unescapeOctal decodes fstab's and mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMountPoint reports whether dir is mounted on now: listed in mountinfo,
// or on another device than its parent (a mount mountinfo missed).
func (mt *mountTable) isMountPoint(dir string) bool {
	dir = filepath.Clean(dir)
	if mt.mounted[dir] || dir == "/" {
		return true
	}
	var st, pst syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(dir), &pst) != nil {
		return false
	}
	return st.Dev != pst.Dev
}

// unmountedAbove returns the nearest of dir and its ancestors that fstab
// declares as a mount point but that is not mounted now.
func (mt *mountTable) unmountedAbove(dir string) (string, bool) {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if mt.declared[p] && !mt.isMountPoint(p) {
			return p, true
		}
		if p == "/" {
			return "", false
		}
	}
}

// bareMountPoint reports whether dir looks like the mount point of a disk
// that is not mounted: an empty directory that is not a mount point, in a
// directory that is not a mount point either.
func (mt *mountTable) bareMountPoint(dir string) bool {
	if mt.isMountPoint(dir) || mt.isMountPoint(filepath.Dir(filepath.Clean(dir))) {
		return false
	}
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	return len(names) == 0 && errors.Is(err, io.EOF)
}

// nearestExisting returns dir's nearest existing ancestor (or dir).
func nearestExisting(dir string) string {
	p := filepath.Clean(dir)
	for {
		if _, err := os.Lstat(p); err == nil || p == "/" {
			return p
		}
		p = filepath.Dir(p)
	}
}
