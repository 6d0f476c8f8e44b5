package archive

import (
	"bufio"
	"context"
	"fmt"
	"io"
)

// VerifyAt is VerifyFile for an archive the caller already holds open (the
// first size bytes of ra), so that what is verified is exactly the file
// the caller wrote or checked, not whatever a path names by then. It reads
// with ReadAt only: the caller's file offset is not used.
func VerifyAt(ctx context.Context, ra io.ReaderAt, size int64, format string) (Stats, error) {
	if err := checkFormat(format); err != nil {
		return Stats{}, err
	}
	if format == FormatZip {
		st, err := verifyZip(ctx, ra, size)
		if err != nil {
			return st, fmt.Errorf("archive: verify: %w", err)
		}
		return st, nil
	}
	st, err := verifyTar(ctx, bufio.NewReaderSize(io.NewSectionReader(ra, 0, size), 1<<20), format)
	if err != nil {
		return st, fmt.Errorf("archive: verify: %w", err)
	}
	return st, nil
}
