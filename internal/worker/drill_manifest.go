package worker

import (
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
)

// With backup.drill set, every run writes the manifest of its archive
// (archive.ManifestWriter: every entry's type, mode, size and content
// SHA-256) while it archives, gzipped into a temp file in the service's
// manifest directory (backup.drill.manifestDirectory: root-only, on the host),
// and names it ARCHIVE.manifest.gz once a destination holds the archive.
// Nothing per entry stays in memory. A drill restores an archive and
// compares the result with its manifest (drill.go).
//
// The manifests stay on the host, not beside the archives: a destination
// is writable by the service's user (or a bucket's other users), so a
// manifest there would need a signature of its own, and an encrypted
// archive's would show its file names in clear off-site. The archive a
// drill reads is tied to its manifest by its name and its signature.

// manifestSuffix ends the name of an archive's manifest.
const manifestSuffix = ".manifest.gz"

// keepManifests bounds the manifests kept per service: the newest
// archives' (a destination whose newest archive is older than that has
// missed as many runs, which its drill then reports).
const keepManifests = 8

// runManifest is the manifest a run is writing.
type runManifest struct {
	dir, tmp string
	f        *os.File
	gz       *gzip.Writer
	w        *archive.ManifestWriter
}

// startManifest opens the run's manifest, when drills are on. A manifest
// that cannot be written is a warning, never a failed backup.
func (rn *run) startManifest() {
	if rn.cfg.Backup.Drill == nil {
		return
	}
	dir := rn.cfg.Backup.Drill.ManifestDirectoryOrDefault(rn.cfg.Name)
	m, err := newRunManifest(dir, rn.base)
	if err != nil {
		rn.warn(fmt.Sprintf("cannot write the manifest restore drills compare with: %v", err))
		return
	}
	rn.manifest = m
}

func newRunManifest(dir, base string) (*runManifest, error) {
	if err := ensureStateDir(dir); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, err
	}
	gz, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	return &runManifest{dir: dir, tmp: f.Name(), f: f, gz: gz, w: archive.NewManifestWriter(gz)}, nil
}

// manifestSink is what the archiver feeds (nil: no manifest).
func (rn *run) manifestSink() archive.ManifestSink {
	if rn.manifest == nil {
		return nil
	}
	return rn.manifest.w
}

// keepManifest names the manifest after the archive, now that a
// destination holds it, and drops the oldest manifests.
func (rn *run) keepManifest() {
	m := rn.manifest
	if m == nil {
		return
	}
	final := filepath.Join(m.dir, rn.base+manifestSuffix)
	if err := m.finish(final); err != nil {
		rn.warn(fmt.Sprintf("cannot write the manifest restore drills compare with: %v", err))
		return
	}
	rn.log.Info("manifest written", keyArchive, rn.base, "manifest", final, "entries", m.w.Entries())
	if err := pruneManifests(m.dir, rn.cfg.Name, keepManifests); err != nil {
		rn.log.Warn("cannot remove old manifests", "error", err)
	}
}

func (m *runManifest) finish(final string) error {
	err := errors.Join(m.w.Close(), m.gz.Close(), m.f.Sync(), m.f.Close())
	m.f = nil
	if err == nil {
		err = os.Rename(m.tmp, final)
	}
	if err == nil {
		m.tmp = ""
		err = syncDir(m.dir)
	}
	return err
}

// dropManifest removes an unfinished manifest (the run failed).
func (rn *run) dropManifest() {
	m := rn.manifest
	if m == nil {
		return
	}
	if m.f != nil {
		m.f.Close()
	}
	if m.tmp != "" {
		os.Remove(m.tmp)
	}
}

// pruneManifests keeps the keep newest manifests of service name in dir
// (and removes temp files a killed run left).
func pruneManifests(dir, name string, keep int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	type found struct {
		file string
		a    StoredArchive
	}
	var all []found
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "."+name+"-") && strings.Contains(e.Name(), ".tmp-") {
			// A killed run's; this run holds the service lock.
			errs = append(errs, os.Remove(filepath.Join(dir, e.Name())))
			continue
		}
		base, ok := strings.CutSuffix(e.Name(), manifestSuffix)
		if a, valid := parseArchiveName(name, base); ok && valid && e.Type().IsRegular() {
			all = append(all, found{e.Name(), a})
		}
	}
	slices.SortFunc(all, func(x, y found) int { return y.a.Time.Compare(x.a.Time) })
	for i, f := range all {
		if i >= keep {
			errs = append(errs, os.Remove(filepath.Join(dir, f.file)))
		}
	}
	return errors.Join(errs...)
}

// manifestPath is where the manifest of archive base of cfg's service is.
func manifestPath(cfg *config.Config, base string) string {
	return filepath.Join(cfg.Backup.Drill.ManifestDirectoryOrDefault(cfg.Name), base+manifestSuffix)
}
