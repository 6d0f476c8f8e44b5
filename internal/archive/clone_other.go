//go:build !linux

package archive

import (
	"context"
	"fmt"
	"runtime"
)

// Clone makes reflink copies with Linux's FICLONE; elsewhere it always
// fails with ErrCloneUnsupported (see the Linux version).
func Clone(ctx context.Context, dstDir string, dataPaths []string, opts Options) (Stats, error) {
	return Stats{}, fmt.Errorf("archive: %w on %s", ErrCloneUnsupported, runtime.GOOS)
}

// OpenClone fails: there are no clones here.
func OpenClone(dstDir string, dataPaths []string) ([]Root, func(), error) {
	return nil, nil, fmt.Errorf("archive: %w on %s", ErrCloneUnsupported, runtime.GOOS)
}
