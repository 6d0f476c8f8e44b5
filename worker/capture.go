package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/backupgen/backupgen/archive"
	"github.com/backupgen/backupgen/config"
)

// Capture-first mode (backup.captureFirst). The units are down only while
// the data paths are captured as an uncompressed tar (archive.Capture) into
// a private staging file in a destination:
//
//	stop units → capture → start units → compress the capture and fan it
//	out through the normal write/verify/commit path → remove the capture
//
// The staging file is .NAME-TS.capture.tmp-RANDOM (0600, O_EXCL) in the
// first usable destination whose file system has room for the capture on
// top of the archive(s) it receives (checked in preflight, before anything
// is stopped); it is never in /tmp, so it costs disk space, not memory. It
// is removed as soon as the archive stream is complete, and on every error
// or interruption; one left by a killed run matches staleTempRE and is
// removed by the next run's preflight. It is not fsynced: it is worthless
// after a crash.

// archiveProducer writes the archive stream for writeArchives.
type archiveProducer struct {
	phase string // for progress reports
	run   func(ctx context.Context, w io.Writer, opts archive.Options) (archive.Stats, error)
}

// archiveDataPaths archives the data paths directly (the normal mode).
func (rn *run) archiveDataPaths(ctx context.Context, w io.Writer, opts archive.Options) (archive.Stats, error) {
	return rn.writeArchive(ctx, w, rn.cfg.DataPaths, opts)
}

// archiveCapture compresses the capture into the archive format.
func (rn *run) archiveCapture(ctx context.Context, w io.Writer, opts archive.Options) (archive.Stats, error) {
	f, err := os.Open(rn.capturePath)
	if err != nil {
		return archive.Stats{}, fmt.Errorf("open capture: %w", err)
	}
	defer f.Close()
	return rn.convertCapture(ctx, w, bufio.NewReaderSize(f, 1<<20), opts)
}

// captureName returns a fresh staging file name in dir for archive base.
func captureName(base, format string) string {
	return "." + strings.TrimSuffix(base, "."+config.ArchiveExt(format)) + ".capture.tmp-" + randomSuffix()
}

// capture writes the uncompressed capture to the staging destination. It
// reports success; failures are recorded as run failures.
func (rn *run) capture(ctx context.Context) bool {
	cfg := rn.cfg
	path := filepath.Join(rn.staging.dir, captureName(rn.base, cfg.Backup.Format))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		rn.fatal(fmt.Errorf("create capture file in %s (no archive written): %w", rn.staging.dir, err))
		return false
	}
	rn.capturePath = path
	rn.log.Info("capturing data uncompressed while the units are stopped", "capture", path)
	t0 := time.Now()
	prog := &archive.Progress{}
	stopProgress := rn.startProgress(ctx, "capturing", rn.dataSize, prog)
	st, err := rn.captureData(ctx, f, cfg.DataPaths, archive.Options{
		Format:   cfg.Backup.Format,
		Exclude:  cfg.Backup.Exclude,
		Logger:   rn.log,
		Progress: prog,
	})
	stopProgress()
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	if err != nil {
		if ctx.Err() != nil {
			rn.fatal(fmt.Errorf("interrupted while capturing the data: %w", context.Cause(ctx)))
		} else {
			rn.fatal(fmt.Errorf("capture data (no archive written): %w", err))
		}
		return false
	}
	rn.stats = st
	rn.log.Info("data captured", "capture", path, "files", st.Files, "bytes_read", st.BytesRead,
		keyDuration, time.Since(t0).Round(time.Millisecond))
	return true
}

// removeCapture removes the capture file if it still exists.
func (rn *run) removeCapture() {
	if rn.capturePath == "" {
		return
	}
	if err := os.Remove(rn.capturePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		rn.log.Error("cannot remove capture file", "capture", rn.capturePath, "error", err)
		return
	}
	rn.capturePath = ""
}
