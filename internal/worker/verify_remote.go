package worker

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/backupgen/backupgen/internal/archive"
)

// storedTargets are archives verify reads through their Destination (a
// remote store: no path to open).
type storedTargets struct {
	store    Destination
	archives []StoredArchive
}

// verifyStored is verifyLocal for an archive read through its Destination
// (a remote store): the checksum, the full parse (of the plaintext, when
// encrypted and identities are given) and the signature. With Adopt, an
// archive that verifies but is unsigned or badly signed gets a new .sig,
// written beside it in the store (sigAdopter).
func (vr *verifyRun) verifyStored(ctx context.Context, store Destination, a StoredArchive) {
	label := joinDest(store.String(), a.Name)
	ids, adopt := vr.opts.Identities, vr.opts.Adopt
	if adopt && a.Encrypted && ids == nil {
		err := errors.New("not adopted: an encrypted archive is adopted only once decrypted and parsed: give --identity FILE")
		vr.report(Verdict{Status: VerdictFailed, Target: label, Err: err}, err)
		return
	}
	parsed := !a.Encrypted || ids != nil
	ck := inspectStored(ctx, vr.key, store, a.Name, true, func(f io.ReaderAt, size int64) error {
		if !a.Encrypted {
			_, err := archive.VerifyAt(ctx, f, size, a.Format)
			return err
		}
		if ids != nil {
			return verifyEncrypted(ctx, f, size, a.Format, ids)
		}
		return nil
	})
	switch {
	case ck.err != nil:
		vr.report(Verdict{Status: VerdictFailed, Target: label, Err: ck.err}, ck.err)
		return
	case adopt && !ck.trusted():
		vr.adoptStored(ctx, store, a.Name, label, ck)
		return
	case ck.signature != signatureOK:
		vr.report(Verdict{Status: VerdictUntrusted, Target: label, Err: ck.reason()}, fmt.Errorf("%s: %w", label, ck.reason()))
		return
	}
	note := ""
	switch {
	case adopt:
		note = "(already signed)"
	case ck.checksum == checksumMissing:
		note = "(no .sha256; structure verified only)"
	case a.Encrypted && !parsed:
		note = "(encrypted: checksum and signature verified; give --identity FILE to decrypt and parse it)"
	case a.Encrypted:
		note = "(decrypted and parsed)"
	}
	vr.report(Verdict{Status: VerdictOK, Target: label, Note: note}, nil)
}

// adoptStored signs a remote archive that verified (ck): the admin
// vouches for it with verify --adopt.
func (vr *verifyRun) adoptStored(ctx context.Context, store Destination, name, label string, ck archiveCheck) {
	ad, ok := store.(sigAdopter)
	var err error
	switch {
	case ck.sum == nil:
		err = errors.New("not adopted: the archive was not read")
	case !ok:
		err = fmt.Errorf("not adopted: %s cannot store a signature", store)
	default:
		err = ad.AdoptSignature(ctx, name, vr.key.SignatureFile(name, ck.sum, ck.size), ck.signature == signatureBad)
	}
	if err != nil {
		vr.report(Verdict{Status: VerdictFailed, Target: label, Err: err}, err)
		return
	}
	vr.report(Verdict{Status: VerdictOK, Target: label, Note: "(adopted (signed))"}, nil)
}
