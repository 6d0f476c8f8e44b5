package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
)

// Capture-first mode (backup.captureFirst). The units are down only while
// the data paths are captured into a private staging place in a
// destination:
//
//	stop units → capture → start units → compress the capture and fan it
//	out through the normal write/verify/commit path → remove the capture
//
// The capture is one of:
//   - a reflink copy (archive.Clone): a directory .NAME-TS.capture.tmp-RANDOM
//     (0700) holding a copy of each data path whose files share their
//     blocks with the originals (FICLONE). It is tried when the staging
//     destination is on the same file system (st_dev) as every data path;
//     it needs a copy-on-write file system (XFS with reflink, btrfs, ...)
//     and takes about the time of copying the directory tree without the
//     file contents. The archive is written from it with archive.WriteTree
//     under the original names, so it is the archive Write would have made;
//     the copy is made and read through a descriptor of its directory
//     (archive.OpenClone), as the destination's owner may rename entries.
//   - otherwise, or when the clone reports archive.ErrCloneUnsupported
//     (logged at Info; the units stay down and the tar capture follows in
//     the same downtime window), an uncompressed tar (archive.Capture) in a
//     file .NAME-TS.capture.tmp-RANDOM (0600, O_EXCL), converted with
//     archive.Convert. It is given the *os.File itself: with the staging
//     destination on the data's file system the file contents are copied
//     by the kernel (copy_file_range), which is why that destination is
//     preferred; elsewhere they are read and written.
//
// The staging destination is the first usable destination whose file system
// has room for a tar capture on top of the archive(s) it receives, one on
// the data's file system preferred (checked in preflight, before anything is
// stopped). The room is required for the reflink copy too: the tar capture
// is its fallback, and a service rewriting its data while the capture is
// compressed makes the copy's blocks its own. The capture is never in /tmp,
// so it costs disk space, not memory. It is removed as soon as the archive
// stream is complete, and on every error or interruption; one left by a
// killed run matches staleTempRE and is removed by the next run's preflight
// (a directory with everything in it). It is not fsynced: it is worthless
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

// Capture methods, logged as capture_method.
const (
	captureReflink = "reflink"
	captureTar     = "tar"
)

// archiveCapture compresses the capture into the archive format.
func (rn *run) archiveCapture(ctx context.Context, w io.Writer, opts archive.Options) (archive.Stats, error) {
	if rn.captureMethod == captureReflink {
		// Read through the open directory: the destination's owner may
		// rename its entries, and must not be able to swap the copy.
		roots, release, err := archive.OpenClone(rn.cloneDir, rn.cfg.DataPaths)
		if err != nil {
			return archive.Stats{}, fmt.Errorf("open capture: %w", err)
		}
		defer release()
		st, err := rn.writeTree(ctx, w, roots, opts)
		return withCaptureChanges(st, rn.stats), err
	}
	// Read through the descriptor the capture was written with (pread),
	// never by its name, which the destination's owner may swap.
	fi, err := rn.captureFile.Stat()
	if err != nil {
		return archive.Stats{}, fmt.Errorf("open capture: %w", err)
	}
	r := io.NewSectionReader(rn.captureFile, 0, fi.Size())
	st, err := rn.convertCapture(ctx, w, bufio.NewReaderSize(r, 1<<20), opts)
	return withCaptureChanges(st, rn.stats), err
}

// withCaptureChanges carries the files that changed while the capture read
// them into the stats of the compression, which replace the capture's.
func withCaptureChanges(st, capture archive.Stats) archive.Stats {
	st.Changed, st.ChangedFiles = capture.Changed, capture.ChangedFiles
	return st
}

// captureName returns a fresh staging file name in dir for archive base.
func captureName(base, format string) string {
	base = strings.TrimSuffix(base, config.EncryptedSuffix)
	return "." + strings.TrimSuffix(base, "."+config.ArchiveExt(format)) + ".capture.tmp-" + randomSuffix()
}

// captureDirRE matches the name of a reflink capture directory of service
// name (a subset of staleTempRE): the only directories preflight removes.
func captureDirRE(name string) *regexp.Regexp {
	return regexp.MustCompile(`^\.` + regexp.QuoteMeta(name) + `-\d{8}T\d{6}Z\.capture\.tmp-[0-9a-f]{8}$`)
}

// sameFileSystem reports whether dir and every data path (symlinks
// followed, as the archiver resolves them) have the same st_dev: a reflink
// copy of the data into dir is possible only then.
func sameFileSystem(dir string, dataPaths []string) bool {
	dev, err := pathDevice(dir)
	if err != nil {
		return false
	}
	for _, p := range dataPaths {
		if d, err := pathDevice(p); err != nil || d != dev {
			return false
		}
	}
	return true
}

// captureOrStream is phase 5's first half. Normally the archive is
// streamed straight from the data paths while the units are stopped. With
// captureFirst, the data is captured first (capture), the units are
// started again at once, and the archive is compressed from the capture.
// It returns what produces the archive stream, or false when the capture
// failed or the run was interrupted.
func (rn *run) captureOrStream(ctx context.Context) (archiveProducer, bool) {
	if !rn.cfg.Backup.CaptureFirst {
		return archiveProducer{"archiving", rn.archiveDataPaths}, true
	}
	ok := rn.capture(ctx)
	// The data paths are no longer read: the service comes back now,
	// before the slow part (compression, fan-out, verification).
	rn.restartUnits(ctx)
	if !ok || ctx.Err() != nil {
		return archiveProducer{}, false
	}
	rn.log.Info("data captured and units started again; compressing the capture",
		"downtime", rn.units.Downtime().Round(time.Millisecond))
	return archiveProducer{"compressing", rn.archiveCapture}, true
}

// capture captures the data paths into the staging destination: as a
// reflink copy when preflight found it on the data's file system and the
// file system supports it, otherwise as an uncompressed tar. It reports
// success; failures are recorded as run failures.
func (rn *run) capture(ctx context.Context) bool {
	if rn.tryReflink {
		if done, ok := rn.captureClone(ctx); done {
			return ok
		}
	}
	return rn.captureTar(ctx)
}

// captureOptions are the archive options of a capture.
func (rn *run) captureOptions(prog *archive.Progress) archive.Options {
	return archive.Options{
		Format:   rn.cfg.Backup.Format,
		Exclude:  rn.cfg.Backup.Exclude,
		Logger:   rn.log,
		Progress: prog,
		SkipDirs: rn.skipDirs(),
	}
}

// skipDirs identifies the usable destinations for the walk: one reachable
// inside a data path (bind mount, symlinked parent) is left out of the
// archive, by device and inode, instead of archiving every earlier archive
// into the next one.
func (rn *run) skipDirs() []archive.SkipDir {
	var out []archive.SkipDir
	for _, d := range rn.usableDests() {
		if _, local := d.store.(*localDir); !local {
			continue // a remote store is nowhere in the data paths
		}
		id, err := archive.DirIdentity(d.dir, "it is the destination "+d.dir)
		if err != nil {
			rn.log.Warn("cannot identify destination to leave it out of the walk", keyDestination, d.dir, "error", err)
			continue
		}
		out = append(out, id)
	}
	return out
}

// warnChanged turns the files that changed while they were read (a live
// backup) into a warning result, as GNU tar reports "file changed as we
// read it".
func (rn *run) warnChanged() {
	st := rn.stats
	if st.Changed == 0 {
		return
	}
	files := st.ChangedFiles
	more := ""
	if len(files) > 10 {
		files, more = files[:10], fmt.Sprintf(" and %d more", st.Changed-10)
	}
	rn.warn(fmt.Sprintf("%d file(s) changed as we read them; their archived content may be inconsistent: %s%s",
		st.Changed, strings.Join(files, ", "), more))
}

// captureFailed records a capture error as the run's failure.
func (rn *run) captureFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		rn.fatal(fmt.Errorf("interrupted while capturing the data: %w", context.Cause(ctx)))
	} else {
		rn.fatal(fmt.Errorf("capture data (no archive written): %w", err))
	}
}

// captureClone makes the reflink copy. done is false when reflink copies
// are not possible here (nothing is left behind; the caller falls back to
// the tar capture); otherwise ok reports success.
func (rn *run) captureClone(ctx context.Context) (done, ok bool) {
	dir := filepath.Join(rn.staging.dir, captureName(rn.base, rn.cfg.Backup.Format))
	rn.cloneDir = dir
	rn.log.Info("capturing data as a reflink copy while the units are stopped", "capture", dir)
	t0 := time.Now()
	prog := &archive.Progress{}
	stopProgress := rn.startProgress(ctx, "capturing", rn.dataSize, prog)
	st, err := rn.cloneData(ctx, dir, rn.cfg.DataPaths, rn.captureOptions(prog))
	stopProgress()
	if err != nil {
		// archive.Clone removed its partial copy; make sure of it.
		rn.removeCapture()
		if ctx.Err() == nil && errors.Is(err, archive.ErrCloneUnsupported) {
			rn.log.Info("reflink copy not available; capturing as an uncompressed tar instead",
				keyDestination, rn.staging.dir, "reason", err.Error())
			return false, false
		}
		rn.captureFailed(ctx, err)
		return true, false
	}
	rn.stats = st
	rn.captureMethod = captureReflink
	rn.log.Info("data captured", "capture", dir, "capture_method", captureReflink, "files", st.Files,
		"bytes_read", st.BytesRead, keyDuration, time.Since(t0).Round(time.Millisecond))
	return true, true
}

// captureTar writes the uncompressed tar capture to the staging destination.
func (rn *run) captureTar(ctx context.Context) bool {
	cfg := rn.cfg
	path := filepath.Join(rn.staging.dir, captureName(rn.base, cfg.Backup.Format))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		rn.fatal(fmt.Errorf("create capture file in %s (no archive written): %w", rn.staging.dir, err))
		return false
	}
	rn.capturePath, rn.captureFile = path, f
	rn.log.Info("capturing data uncompressed while the units are stopped", "capture", path)
	t0 := time.Now()
	prog := &archive.Progress{}
	stopProgress := rn.startProgress(ctx, "capturing", rn.dataSize, prog)
	st, err := rn.captureData(ctx, f, cfg.DataPaths, rn.captureOptions(prog))
	stopProgress()
	if err != nil {
		rn.captureFailed(ctx, err)
		return false
	}
	rn.stats = st
	rn.captureMethod = captureTar
	// copied_in_kernel: content bytes copy_file_range moved without
	// passing through the worker (data and staging on one file system).
	rn.log.Info("data captured", "capture", path, "capture_method", captureTar, "files", st.Files,
		"bytes_read", st.BytesRead, "copied_in_kernel", st.CopiedInKernel, keyDuration, time.Since(t0).Round(time.Millisecond))
	return true
}

// removeCapture removes the capture (file or reflink copy) if it still
// exists.
func (rn *run) removeCapture() {
	if rn.cloneDir != "" {
		if err := archive.RemoveTree(rn.cloneDir); err != nil {
			rn.log.Error("cannot remove capture directory", "capture", rn.cloneDir, "error", err)
		} else {
			rn.cloneDir = ""
		}
	}
	if rn.captureFile != nil {
		rn.captureFile.Close()
		rn.captureFile = nil
	}
	if rn.capturePath == "" {
		return
	}
	if rn.captureFile != nil {
		// Remove the name only while it still is our file (the
		// destination's owner may have renamed or replaced it).
		if !sameFileAs(rn.captureFile, rn.capturePath) {
			rn.log.Warn("capture file was renamed or replaced; not removing what is at its name now", "capture", rn.capturePath)
			rn.captureFile.Close()
			rn.capturePath, rn.captureFile = "", nil
			return
		}
		rn.captureFile.Close()
		rn.captureFile = nil
	}
	if err := os.Remove(rn.capturePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		rn.log.Error("cannot remove capture file", "capture", rn.capturePath, "error", err)
		return
	}
	rn.capturePath = ""
}

// sameFileAs reports whether name (not followed) is the open file f.
func sameFileAs(f *os.File, name string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(name)
	return err == nil && os.SameFile(a, b)
}
