package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrLockHeld is returned (wrapped) when another process holds the service
// lock for longer than the lock timeout.
var ErrLockHeld = errors.New("lock held")

// lockPollInterval is how often a held lock is retried.
const lockPollInterval = 100 * time.Millisecond

// serviceLock is an flock on <stateDir>/<name>.lock. flock locks belong to
// the open file description, so the kernel releases the lock when the
// process dies, even by SIGKILL: a crashed run never leaves a stale lock.
type serviceLock struct {
	file *os.File
}

// acquireLock takes the exclusive lock on path, polling a non-blocking flock
// until timeout (a blocking flock could not be interrupted by a signal).
func acquireLock(ctx context.Context, path, name string, timeout time.Duration) (*serviceLock, error) {
	// Every command that takes the lock checks the state directory first:
	// only root may be able to plant files there (issue 10 item 5).
	if err := ensureStateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	f, err := openLockFile(path)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &serviceLock{file: f}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Since(start) >= timeout {
			f.Close()
			return nil, fmt.Errorf("another backup of %s is running (lock %s held for %s): %w",
				name, path, timeout.Round(time.Second), ErrLockHeld)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-time.After(lockPollInterval):
		}
	}
}

// openLockFile opens or creates the lock file. O_NOFOLLOW: a symlink in its
// place (dangling or not) is refused, never followed to create or open a
// file elsewhere; O_NONBLOCK: a FIFO does not hang the open; the result
// must be a regular file. O_CLOEXEC (set by os.OpenFile) keeps the
// descriptor, and so the lock, out of systemctl and hook child processes
// that might outlive us.
func openLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("lock file %s is a symlink; refusing to follow it (remove it)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("lock file %s is not a regular file (%s); remove it", path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Release unlocks. The lock file itself stays: removing it would let a
// waiter lock the old inode while a newcomer locks a new one.
func (l *serviceLock) Release() {
	if l == nil || l.file == nil {
		return
	}
	syscall.Flock(int(l.file.Fd()), syscall.LOCK_UN)
	l.file.Close()
	l.file = nil
}
