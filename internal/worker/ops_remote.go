package worker

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/hostkey"
)

// verifyRemote is verifyOne for an archive in a remote store: it is read
// through the Destination (checksum, signature, full parse), never
// downloaded to a file. Adopting (signing) is for local archives only.
func (c *cli) verifyRemote(ctx context.Context, key *hostkey.Key, a destArchive, adopt bool) error {
	label := a.store.String() + "/" + a.Name
	if adopt {
		err := errors.New("--adopt signs local archives only")
		fmt.Fprintf(c.stdout, "FAILED %s: %v\n", label, err)
		return err
	}
	ck := inspectStored(ctx, key, a.store, a.Name, true, func(f io.ReaderAt, size int64) error {
		_, err := archive.VerifyAt(ctx, f, size, a.format)
		return err
	})
	switch {
	case ck.err != nil:
		fmt.Fprintf(c.stdout, "FAILED %s: %v\n", label, ck.err)
		return ck.err
	case ck.signature != signatureOK:
		fmt.Fprintf(c.stdout, "UNTRUSTED %s: %v\n", label, ck.reason())
		return fmt.Errorf("%s: %w", label, ck.reason())
	}
	fmt.Fprintf(c.stdout, "OK %s\n", label)
	return nil
}
