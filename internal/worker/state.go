package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/backupgen/backupgen/internal/config"
)

// The state file <stateDir>/<name>.stopped holds a JSON list of the units a
// run stopped and has not started again yet. It is written before each stop
// call, so that whatever kills the worker afterwards (SIGKILL, OOM, power
// loss of a tmpfs-less state dir), `backup-worker recover` knows what to
// start. It is removed only once every listed unit is active again.
//
// Root starts whatever units the state file lists, so the state file and
// the lock beside it live only where nobody but root can write (see
// ensureStateDir), are opened without following symlinks, and the units
// read back are checked against the config (issue 10 item 5).

func stateFilePath(stateDir, name string) string {
	return filepath.Join(stateDir, name+".stopped")
}

func lockFilePath(stateDir, name string) string {
	return filepath.Join(stateDir, name+".lock")
}

// maxStateFileBytes bounds the state file: a list of a few unit names.
const maxStateFileBytes = 64 << 10

// writeStoppedState atomically replaces the state file with units.
func writeStoppedState(path string, units []string) error {
	if units == nil {
		units = []string{}
	}
	data, err := json.Marshal(units)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), 0o600, owner{uid: -1, gid: -1})
}

// readStoppedState returns the units in the state file, or nil, nil when
// there is no state file. Every unit must be a valid unit name and one of
// allowed (the config's serviceName): the worker only ever starts units it
// would itself stop, whatever the file says.
func readStoppedState(path string, allowed []string) ([]string, error) {
	data, err := readPrivateFile(path, maxStateFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var units []string
	if err := json.Unmarshal(data, &units); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, u := range units {
		if !config.ValidUnit(u) || !slices.Contains(allowed, u) {
			return nil, fmt.Errorf("%s lists %q, which is not one of this service's units (%s): not starting anything; "+
				"start the service's units by hand if needed, then remove the file", path, u, strings.Join(allowed, ", "))
		}
	}
	return units, nil
}

// readPrivateFile reads a root-private file without following a symlink,
// without blocking on a FIFO, only if it is a regular file and at most
// limit bytes long.
func readPrivateFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink; refusing to follow it", path)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d a state file can hold", path, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%s grew beyond %d bytes while read", path, limit)
	}
	return data, err
}

// removeStoppedState deletes the state file durably.
func removeStoppedState(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// ensureStateDir creates the state directory if needed (0700, one missing
// component at a time, each after its parent was checked) and checks that
// only root can change it: it and every ancestor must be owned by root and
// not writable by group or others. An ancestor writable by all but sticky (/tmp) is
// accepted: others cannot rename or remove a root-owned entry in it. A
// symlink on the way is accepted only when root owns it, and the directory
// it leads to is checked the same way. The checks apply to a worker running
// as root: an unprivileged worker can do no more than the users who could
// plant files there (and in the Nix build sandbox, where the tests run
// unprivileged, "/" belongs to an unmapped uid).
func ensureStateDir(dir string) error { return checkStateDir(dir, true) }

// checkStateDir is ensureStateDir; without create, a missing component is
// an error (os.ErrNotExist) instead of being created: the check of the
// commands that only read the state directory.
func checkStateDir(dir string, create bool) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("state directory %s: not an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	parts := strings.Split(strings.TrimPrefix(dir, "/"), "/")
	cur := "/"
	for i, part := range append([]string{""}, parts...) {
		cur = filepath.Join(cur, part)
		last := i == len(parts)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) && create {
			if err := os.Mkdir(cur, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("state directory %s: create %s: %w", dir, cur, err)
			}
			fi, err = os.Lstat(cur)
		}
		if err != nil {
			return fmt.Errorf("state directory %s: %w", dir, err)
		}
		if err := checkPrivate(cur, fi, last); err != nil && os.Geteuid() == 0 {
			return fmt.Errorf("state directory %s: %w; the lock and state files must be writable by root only", dir, err)
		}
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	if real != dir {
		return checkStateDir(real, create)
	}
	return nil
}

// checkPrivate checks one path component of the state directory.
func checkPrivate(path string, fi os.FileInfo, last bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", path)
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not root", path, st.Uid)
	}
	mode := fi.Mode()
	switch {
	case mode&os.ModeSymlink != 0:
		if last {
			return fmt.Errorf("%s is a symlink", path)
		}
		return nil
	case !mode.IsDir():
		return fmt.Errorf("%s is not a directory", path)
	case mode.Perm()&0o022 != 0 && (last || mode&os.ModeSticky == 0):
		return fmt.Errorf("%s is writable by group or others (mode %04o)", path, mode.Perm())
	}
	return nil
}
