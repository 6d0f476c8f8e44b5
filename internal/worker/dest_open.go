package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
)

// openForReading opens a destination for the commands that only read it
// or remove archives from it (list, verify, prune, restore, drill): they
// create nothing, so no owner is set, and no test seam applies.
func openForReading(cfg *config.Config, dir string, log *slog.Logger) (Destination, error) {
	return openStore(cfg, dir, false, owner{uid: -1, gid: -1}, nil, log)
}

// openStore makes the Destination of one entry of backup.paths: a local
// directory, or a remote store named by its URL. The local fields (owner,
// seams) only matter to a local directory.
func openStore(cfg *config.Config, dir string, optional bool, own owner, s *seams, log *slog.Logger) (Destination, error) {
	dest, err := config.ParseDestination(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if dest.Kind == "local" {
		return &localDir{dir: dir, name: cfg.Name, optional: optional, owner: own, seams: s, log: log}, nil
	}
	// Remote stores lay out PREFIX/HOST/NAME.
	host, err := hostName(cfg)
	if err != nil {
		return nil, err
	}
	switch dest.Kind {
	case "sftp":
		return newSFTPDest(cfg, dir, dest, host, log)
	case "s3":
		idle := s3IdleTimeout
		if s != nil && s.s3Idle > 0 {
			idle = s.s3Idle
		}
		return newS3Store(cfg, dest, host, idle, log)
	}
	return nil, fmt.Errorf("%s: destinations of kind %s are not supported", dir, dest.Kind)
}

// hostName is backup.hostName, else the machine's host name: the part of
// a remote destination's layout (PREFIX/HOST/NAME) that keeps hosts apart,
// so it must be a plain name, never a path.
func hostName(cfg *config.Config) (string, error) {
	if cfg.Backup.HostName != "" {
		return cfg.Backup.HostName, nil
	}
	h, err := os.Hostname()
	if err != nil || !config.ValidName(h) {
		return "", fmt.Errorf("host name %q unusable in a remote destination's layout (set backup.hostName): %v", h, err)
	}
	return h, nil
}

// closeStore closes a store's connection, if it has one.
func closeStore(d Destination) {
	if c, ok := d.(io.Closer); ok {
		c.Close()
	}
}

// joinDest names archive name in destination dir for messages: a path
// in a local directory, URL/NAME in a remote store (filepath.Join would
// fold the URL's "//").
func joinDest(dir, name string) string {
	if config.IsRemote(dir) {
		return strings.TrimSuffix(dir, "/") + "/" + name
	}
	return filepath.Join(dir, name)
}

// lightTruster is an optional capability of a Destination whose archives
// are too costly to re-read on every run (an SFTP destination with
// verifyReadBack off, on a metered link): retention and the shrink guard
// then trust an archive whose signature verifies against its .sha256 and
// the size the server reports, without reading its content. A flipped
// byte in such an archive goes unnoticed until `verify`.
type lightTruster interface {
	LightTrust() bool
}

// checkKept is the trust check of an archive that retention may count
// (see lightTruster): ok reports whether it counts. In a local directory,
// memo (memo.go; nil: none) may spare the read of an archive verified
// before and unchanged since. Remote stores (S3, SFTP) do not use it: no
// inode identity there proves an object unchanged, so they are checked as
// before (in full, or lightly: lightTruster).
func checkKept(ctx context.Context, key *hostkey.Key, store Destination, name string, memo *verifyMemo) (archiveCheck, bool) {
	if l, ok := store.(*localDir); ok && memo != nil {
		return checkKeptLocal(ctx, key, l, name, memo)
	}
	light := false
	if lt, is := store.(lightTruster); is {
		light = lt.LightTrust()
	}
	c := inspectStored(ctx, key, store, name, !light, nil)
	if light {
		return c, c.err == nil && c.checksum == checksumPresent && c.signature == signatureOK
	}
	return c, c.trusted()
}
