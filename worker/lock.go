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
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	// O_CLOEXEC (set by os.OpenFile) keeps the descriptor, and so the lock,
	// out of systemctl and hook child processes that might outlive us.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
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
