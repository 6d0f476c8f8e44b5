package worker

import (
	"context"
	"io"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
)

// archiveWriter is archive.Write's signature, a seam for tests.
type archiveWriter func(ctx context.Context, w io.Writer, dataPaths []string, opts archive.Options) (archive.Stats, error)

// archiveConverter is archive.Convert's signature, a seam for tests.
type archiveConverter func(ctx context.Context, w io.Writer, r io.Reader, opts archive.Options) (archive.Stats, error)

// seams are the Runner's test seams, the only ones in the package (no
// package variable, so tests can run in parallel). Zero values mean the
// real thing.
type seams struct {
	// systemd controls the service's units (default Systemctl{}: the
	// systemctl on PATH). Every command that talks to systemd (run, run
	// --dry-run, recover, restore in place, status) uses this one.
	systemd          Systemd
	writeArchive     archiveWriter
	captureData      archiveWriter
	convertCapture   archiveConverter
	cloneData        func(ctx context.Context, dir string, paths []string, opts archive.Options) (archive.Stats, error)
	writeTree        func(ctx context.Context, w io.Writer, roots []archive.Root, opts archive.Options) (archive.Stats, error)
	afterStop        func(ctx context.Context)
	progressTTY      func() bool   // default stderrIsTerminal
	progressInterval time.Duration // 0: 1 s on a terminal, 30 s logged
	progressOut      io.Writer     // terminal progress (default os.Stderr)
	activePoll       time.Duration // how often a started unit is checked for "active" (default 200 ms)
	fstabPath        string        // default /etc/fstab
	mountinfoPath    string        // default /proc/self/mountinfo
	s3Idle           time.Duration // S3 connection idle timeout (default s3IdleTimeout)
	notifyTimeout    time.Duration // one notification request (default notify.DefaultTimeout)
	notifyTotal      time.Duration // all notifications of a run (default notify.DefaultTotal)

	healthRetry time.Duration // pause between health probes (default healthRetry)
	// beforeReread runs when a destination's copy has been fsynced, right
	// before it is re-read for its CRC-64 (step 4 in dest.go), with the
	// destination directory (nil: nothing).
	beforeReread func(dir string)
	// keptHashed is called for each kept archive of a local destination
	// that retention or the shrink guard reads in full (the verification
	// memo did not spare it: memo.go), with the destination and the
	// archive name (nil: nothing).
	keptHashed func(dest, name string)
	// inCommit runs inside a local commit, after the archive was handed
	// to its owner and before it is linked under its final name, with the
	// temp file's path (nil: nothing).
	inCommit func(tmp string)
}

// withDefaults fills the unset seams with the real implementations.
func (s *seams) withDefaults() {
	if s.systemd == nil {
		s.systemd = Systemctl{}
	}
	if s.writeArchive == nil {
		s.writeArchive = archive.Write
	}
	if s.captureData == nil {
		s.captureData = archive.Capture
	}
	if s.convertCapture == nil {
		s.convertCapture = archive.Convert
	}
	if s.cloneData == nil {
		s.cloneData = archive.Clone
	}
	if s.writeTree == nil {
		s.writeTree = archive.WriteTree
	}
	if s.progressTTY == nil {
		s.progressTTY = stderrIsTerminal
	}
	if s.activePoll == 0 {
		s.activePoll = defaultActivePoll
	}
	if s.healthRetry == 0 {
		s.healthRetry = healthRetry
	}
	if s.fstabPath == "" {
		s.fstabPath = "/etc/fstab"
	}
	if s.mountinfoPath == "" {
		s.mountinfoPath = "/proc/self/mountinfo"
	}
}
