package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/backupgen/backupgen/archive"
	"github.com/backupgen/backupgen/config"
)

// Destination write protocol (one destination directory, one archive):
//
//  1. create .NAME-TS.EXT.tmp-RANDOM in the destination with O_EXCL and mode
//     0600: private from the first byte, and never a name that prune, list
//     or a user would take for an archive;
//  2. stream the archive into it (via fanout);
//  3. fsync, then fchown to the configured user:group and fchmod 0640 —
//     still under the temp name;
//  4. verify the temp file: re-read it and compare its SHA-256 with the one
//     computed from the stream, then parse it fully (archive.VerifyFile).
//     Every copy is re-read and hashed, but the full parse runs on one copy
//     only (structureCheck): a copy whose SHA-256 equals the stream's has
//     the same bytes as the copy that parsed, so parsing it again would
//     only repeat the decompression (with three destinations on two cores
//     that tripled the verification time). If the parse fails on one copy,
//     the next copy is parsed in its turn, so a read error in one copy does
//     not condemn the others;
//  5. write the checksum the same way: .NAME-TS.EXT.sha256.tmp-RANDOM, 0600,
//     fsync, fchown, fchmod 0640;
//  6. move the archive to NAME-TS.EXT, then the checksum to NAME-TS.EXT.sha256
//     (link+unlink, which never replaces an existing file), fsync the
//     directory.
//
// So the final archive name only ever points at complete, fsynced and
// verified content. A crash between the two moves leaves an archive without
// its .sha256 (list shows "missing"), never a checksum for an absent or
// partial archive. On any failure the temp files are removed and no final
// name appears; temp files left by a killed run are removed by the next
// run's preflight (staleTempRE).
type destination struct {
	dir      string
	name     string // service name
	base     string // final archive base name NAME-TS.EXT
	tmp      string
	sumTmp   string
	file     *os.File
	optional bool

	status string // "ok", "skipped", "failed", "interrupted"
	err    error
	pruned int // archives removed
	count  int // archives of this service after pruning
	size   int64
}

func (d *destination) finalPath() string    { return filepath.Join(d.dir, d.base) }
func (d *destination) checksumPath() string { return d.finalPath() + ".sha256" }

// fail records the first error of the destination.
func (d *destination) fail(err error) {
	if d.err == nil {
		d.err = err
		d.status = "failed"
	}
}

// create opens the private temp file.
func (d *destination) create() error {
	d.tmp = filepath.Join(d.dir, "."+d.base+".tmp-"+randomSuffix())
	f, err := os.OpenFile(d.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		d.tmp = ""
		return err
	}
	d.file = f
	return nil
}

// Write makes destination an io.Writer for the fan-out.
func (d *destination) Write(p []byte) (int, error) { return d.file.Write(p) }

// finish runs steps 3–6 of the protocol. sum is the stream's SHA-256.
func (d *destination) finish(ctx context.Context, sum []byte, own owner, format string, sc *structureCheck) error {
	f := d.file
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	if err := setOwnerMode(f, own, 0o640); err != nil {
		return fmt.Errorf("set owner and mode: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	d.size = fi.Size()
	err = f.Close()
	d.file = nil
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	got, err := fileSHA256(ctx, d.tmp)
	if err != nil {
		return fmt.Errorf("verify: re-read: %w", err)
	}
	if !bytes.Equal(got, sum) {
		return fmt.Errorf("verify: written copy has SHA-256 %x, stream had %x", got, sum)
	}
	if err := sc.verify(ctx, d.tmp, format); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	d.sumTmp = filepath.Join(d.dir, "."+d.base+".sha256.tmp-"+randomSuffix())
	if err := writeChecksumTemp(d.sumTmp, sum, d.base, own); err != nil {
		return fmt.Errorf("write checksum: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if err := commitName(d.tmp, d.finalPath()); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	d.tmp = ""
	if err := commitName(d.sumTmp, d.checksumPath()); err != nil {
		return fmt.Errorf("commit checksum: %w", err)
	}
	d.sumTmp = ""
	if err := syncDir(d.dir); err != nil {
		return err
	}
	d.status = "ok"
	return nil
}

// structureCheck parses the archive fully once for all copies of one
// stream (see step 4 above). Only call verify for a copy whose SHA-256 was
// checked against the stream's.
type structureCheck struct {
	mu sync.Mutex
	ok bool
}

func (sc *structureCheck) verify(ctx context.Context, path, format string) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.ok {
		return nil
	}
	if _, err := archive.VerifyFile(ctx, path, format); err != nil {
		return err
	}
	sc.ok = true
	return nil
}

// abort closes and removes whatever temp files the destination still has.
func (d *destination) abort() error {
	var errs []error
	if d.file != nil {
		d.file.Close()
		d.file = nil
	}
	for _, p := range []*string{&d.tmp, &d.sumTmp} {
		if *p == "" {
			continue
		}
		if err := os.Remove(*p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		*p = ""
	}
	return errors.Join(errs...)
}

func writeChecksumTemp(path string, sum []byte, base string, own owner) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.WriteString(f, checksumLine(sum, base)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return setOwnerMode(f, own, 0o640)
}

// checksumLine is one line in sha256sum's format: "<hex>  <name>\n" (two
// spaces: text mode), so `sha256sum -c NAME.sha256` works in the directory.
func checksumLine(sum []byte, base string) string {
	return hex.EncodeToString(sum) + "  " + base + "\n"
}

// parseChecksumFile reads a sha256sum-format file and returns the digest
// given for base.
func parseChecksumFile(path, base string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		hexSum, name, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(strings.TrimPrefix(name, " "), "*")
		if name != base {
			continue
		}
		sum, err := hex.DecodeString(hexSum)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("%s: malformed checksum line", path)
		}
		return sum, nil
	}
	return nil, fmt.Errorf("%s: no checksum for %s", path, base)
}

// fileSHA256 hashes a file, honouring cancellation between reads.
func fileSHA256(ctx context.Context, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return h.Sum(nil), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// staleTempRE matches temp, capture (captureFirst) and probe files a killed
// run of service name may have left in a destination; nothing else is ever
// removed as "stale".
func staleTempRE(name string) *regexp.Regexp {
	exts := make([]string, len(config.Formats))
	for i, f := range config.Formats {
		exts[i] = regexp.QuoteMeta(config.ArchiveExt(f))
	}
	return regexp.MustCompile(`^\.` + regexp.QuoteMeta(name) +
		`-(\d{8}T\d{6}Z\.((` + strings.Join(exts, "|") + `)(\.sha256)?|capture)\.tmp|probe)-[0-9a-f]{8}$`)
}
