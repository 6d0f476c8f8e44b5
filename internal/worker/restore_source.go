package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/config"
)

// restoreSource is the archive a restore reads: a local file, or an
// archive in one of the service's destinations (local or remote), read
// through its Destination as one stream.
type restoreSource struct {
	r      ArchiveReader
	base   string // the archive's name (what its .sha256 and .sig name)
	label  string // for messages
	format string
	store  Destination // nil for a local file given by path
	// claimed is the SHA-256 its .sha256 states (nil: none); the stream
	// must hash to it (precheck, restorer.extract).
	claimed []byte
}

func (s *restoreSource) Close() {
	s.r.Close()
	if s.store != nil {
		closeStore(s.store)
	}
}

// isLocalPath: --archive names a file by path (it has a slash, or is a
// file in the current directory) unless --destination picks a
// destination to read the name from.
func isLocalPath(arg, dest string) bool {
	if dest != "" {
		return false
	}
	if strings.Contains(arg, "/") {
		return true
	}
	_, err := os.Lstat(arg)
	return err == nil
}

// openSource opens what --archive (and --destination) name: a file by
// path, or an archive name as `list` shows it, looked up in the
// destination given, else in every destination in order. Only names of
// the service's own pattern are looked up, so a hostile object name
// planted under a remote prefix ("../x", control characters, a bad
// timestamp) is refused before any request names it.
func (rs *restorer) openSource(ctx context.Context, arg string) (*restoreSource, error) {
	if isLocalPath(arg, rs.dest) {
		format, ok := formatOf(arg)
		if !ok {
			return nil, fmt.Errorf("%s: unknown archive extension (want one of %s)", arg, strings.Join(config.Formats, ", "))
		}
		af, err := openLocalArchive(arg)
		if err != nil {
			return nil, err
		}
		return &restoreSource{r: af, base: filepath.Base(arg), label: arg, format: format}, nil
	}
	a, ok := parseArchiveName(rs.cfg.Name, arg)
	if !ok {
		return nil, fmt.Errorf("%s is not an archive name of %s (NAME-TIMESTAMP.EXT as `list` shows it), nor a path", strconv.Quote(arg), rs.cfg.Name)
	}
	dests := rs.cfg.Backup.Paths
	if rs.dest != "" {
		if !configuredDest(rs.cfg, rs.dest) {
			return nil, fmt.Errorf("--destination %s is not one of the service's destinations (%s)", rs.dest, strings.Join(dests, ", "))
		}
		dests = []string{rs.dest}
	}
	var errs *multierror.Error
	for _, dir := range dests {
		store, err := openForReading(rs.cfg, dir, rs.log)
		if err != nil {
			errs = multierror.Append(errs, err)
			continue
		}
		r, err := store.Open(ctx, arg)
		if err != nil {
			closeStore(store)
			errs = multierror.Append(errs, fmt.Errorf("%s: %w", dir, err))
			continue
		}
		return &restoreSource{r: r, base: arg, label: joinDest(store.String(), arg), format: a.Format, store: store}, nil
	}
	return nil, fmt.Errorf("archive %s not found: %w", arg, listErr(errs))
}

// configuredDest: dest is one of the service's destinations (its
// credentials and host layout come with it).
func configuredDest(cfg *config.Config, dest string) bool {
	for _, p := range cfg.Backup.Paths {
		if strings.TrimSuffix(p, "/") == strings.TrimSuffix(dest, "/") {
			return true
		}
	}
	return false
}

// precheck decides, before a byte of the archive is read, whether it may
// be restored: its .sig (by this host's key) must verify against the
// SHA-256 and size its .sha256 and the destination state. The stream is
// then held to that SHA-256 (checkStream), so what is extracted is what
// was signed. An unsigned or badly signed archive passes only with
// --trust-unsigned; an unreadable .sha256 never does.
func (rs *restorer) precheck(src *restoreSource) error {
	c := archiveCheck{checksum: checksumInvalid, signature: signatureUnchecked, size: src.r.Size()}
	data, err := src.r.ReadSide(".sha256", maxSideFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		c.checksum = checksumMissing
	case err != nil:
		return err
	default:
		if src.claimed, err = parseChecksum(data, src.label+".sha256", src.base); err != nil {
			return err
		}
		c.checksum, c.sum = checksumOK, src.claimed
	}
	key, keyErr := loadSigningKey(rs.cfg, false)
	c.checkSignature(key, src.r, src.base, src.claimed)
	var untrusted error
	switch {
	case keyErr != nil:
		untrusted = fmt.Errorf("cannot check its signature: %w", keyErr)
	case !c.trusted():
		untrusted = fmt.Errorf("not trusted: %w", c.reason())
	}
	if untrusted == nil {
		return nil
	}
	if rs.trustUnsigned {
		rs.log.Warn("restoring an untrusted archive because --trust-unsigned was given", keyArchive, src.label, "reason", untrusted.Error())
		return nil
	}
	return fmt.Errorf("%w; restore it only if you know where it came from, with --trust-unsigned", untrusted)
}

// checkStream holds the SHA-256 of the bytes extracted to what precheck
// accepted.
func (src *restoreSource) checkStream(sum []byte) error {
	if src.claimed != nil && !bytes.Equal(sum, src.claimed) {
		return fmt.Errorf("SHA-256 mismatch: the archive read has %x, %s.sha256 says %x (corrupt, truncated, or changed since it was checked)", sum, src.base, src.claimed)
	}
	return nil
}
