package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/internal/notify"
)

// ListOptions are the list command's choices.
type ListOptions struct {
	// Verify re-reads every archive and compares it with its .sha256 and
	// .sig (a mismatch is then an error); without it only the side files
	// are read.
	Verify bool
}

// ListResult is every destination's archives, as the list command shows
// them (WriteText).
type ListResult struct {
	Rows []ListRow
	// Untrusted counts the archives whose signature is not ok.
	Untrusted int
	// KeyErr: the signing key could not be loaded, so no signature was
	// checked (every archive is untrusted).
	KeyErr error
}

// ListRow is one archive, or (Name "") one destination's note.
type ListRow struct {
	Destination string
	Name        string
	// Note replaces the archive columns: "(missing, optional)",
	// "(no archives)", "(error: ...)".
	Note      string
	Size      int64
	SizeKnown bool
	Time      time.Time // from the archive's name
	Checksum  string    // checksumOK, ..., with the reason when not ok
	Signature string    // signatureOK, ..., "(untrusted)" appended when not ok
}

// List lists the service's archives in every destination with the state
// of their checksum and signature. The error lists what is wrong (an
// unreadable destination, a checksum mismatch, with opts.Verify a bad
// signature); the result holds every row either way.
func List(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ListOptions) (ListResult, error) {
	var res ListResult
	key, keyErr := loadSigningKey(cfg, false)
	res.KeyErr = keyErr
	var errs *multierror.Error
	for _, dir := range cfg.Backup.Paths {
		store, err := openForReading(cfg, dir, log)
		var archives []StoredArchive
		if err == nil {
			defer closeStore(store)
			archives, err = store.List(ctx)
		}
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && cfg.Backup.IsOptional(dir) {
				res.Rows = append(res.Rows, ListRow{Destination: dir, Note: "(missing, optional)"})
				continue
			}
			res.Rows = append(res.Rows, ListRow{Destination: dir, Note: fmt.Sprintf("(error: %v)", err)})
			errs = multierror.Append(errs, err)
			continue
		}
		if len(archives) == 0 {
			res.Rows = append(res.Rows, ListRow{Destination: dir, Note: "(no archives)"})
		}
		for _, a := range archives {
			row, err := listOne(ctx, key, store, dir, a, opts.Verify)
			if err != nil {
				errs = multierror.Append(errs, err)
			}
			if row.Signature != signatureOK {
				res.Untrusted++
				row.Signature += " (untrusted)"
			}
			res.Rows = append(res.Rows, row)
		}
	}
	return res, errs.ErrorOrNil()
}

// listOne inspects one archive (hashing it when verify) and returns its
// row and, when it is broken, why.
func listOne(ctx context.Context, key *hostkey.Key, store Destination, dir string, a StoredArchive, verify bool) (ListRow, error) {
	path := joinDest(dir, a.Name)
	ck := inspectStored(ctx, key, store, a.Name, verify, nil)
	row := ListRow{Destination: dir, Name: a.Name, Time: a.Time, Size: ck.size, SizeKnown: ck.err == nil || ck.size > 0,
		Checksum: ck.checksum, Signature: ck.signature}
	if ck.err != nil && row.Checksum != checksumMismatch {
		row.Checksum += " (" + ck.err.Error() + ")"
	}
	switch {
	case ck.checksum == checksumMismatch:
		return row, fmt.Errorf("%s: %w", path, ck.err)
	case verify && ck.signature == signatureBad:
		return row, fmt.Errorf("%s: %w", path, ck.sigErr)
	}
	return row, nil
}

// WriteText prints the result as the list command does: one table row per
// archive (its age as of now) and a note on untrusted archives.
func (r ListResult) WriteText(w io.Writer, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tARCHIVE\tSIZE\tAGE\tCHECKSUM\tSIGNATURE")
	for _, row := range r.Rows {
		if row.Name == "" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\n", row.Destination, row.Note)
			continue
		}
		size := "?"
		if row.SizeKnown {
			size = notify.HumanBytes(row.Size)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", row.Destination, row.Name, size, age(now, row.Time), row.Checksum, row.Signature)
	}
	tw.Flush()
	if r.Untrusted > 0 {
		fmt.Fprintf(w, "%d archive(s) untrusted: not counted for retention, never pruned, restored only with --trust-unsigned; adopt ones you vouch for with `backup-worker verify --adopt`\n", r.Untrusted)
	}
}

// age renders how long ago t was, coarsely.
func age(now, t time.Time) string {
	d := now.Sub(t)
	if d < 0 {
		return "in the future"
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
