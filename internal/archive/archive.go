// Package archive creates, verifies and safely extracts backup archives in the
// formats "tar.gz", "tar.xz", "tar.bz2", "tar.zst" and "zip".
//
// Archives are written as a stream with bounded memory. Tar archives use the
// PAX format (long and non-ASCII names, large ids, sub-second mtimes) and keep
// regular files, directories, symlinks (never followed), hard links, modes,
// numeric owners and owner names, extended attributes, POSIX ACLs and the
// holes of sparse files (as GNU tar --xattrs --acls --sparse stores them). Zip archives keep unix modes (external
// attributes), symlinks (symlink-mode entries holding the link target),
// mtimes (extended timestamp field) and uid/gid (Info-ZIP "ux" field 0x7875);
// hard links become full copies in zip.
//
// Entry names are the absolute data paths without their leading "/" (see
// EntryName), so extracting into "/" puts every data path back where it was.
package archive

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// Supported formats.
const (
	FormatTarGz  = "tar.gz"
	FormatTarXz  = "tar.xz"
	FormatTarBz2 = "tar.bz2"
	FormatTarZst = "tar.zst"
	FormatZip    = "zip"
)

// Formats lists the supported formats.
var Formats = []string{FormatTarGz, FormatTarXz, FormatTarBz2, FormatTarZst, FormatZip}

// Options configure Write.
//
// Level 0 selects the format default:
//   - tar.gz: 4 (gzip levels 1-9, -1 = 6; -2 = Huffman only). klauspost's
//     deflate at level 4 is ~1.5% larger than gzip -6 at a third of the CPU,
//   - tar.zst: 3 (1-22; the pure-Go encoder maps them to its four levels),
//   - tar.xz: 6 (1-9, the xz(1) presets; the pure-Go encoder only uses
//     them to select the dictionary size: 1: 1 MiB, 2: 2 MiB, 3-4: 4 MiB,
//     5-6: 8 MiB, 7: 16 MiB, 8: 32 MiB, 9: 64 MiB),
//   - tar.bz2: 6 (block size level*100 kB, 1-9),
//   - zip: deflate level 4 (1-9), like tar.gz.
//
// tar.xz, tar.bz2 and tar.zst pipe the tar stream through the native
// compressor when it is on PATH (xz -T Threads; pbzip2 -p Threads, else
// bzip2; zstd -T Threads), which is several times faster than the pure-Go
// encoders used otherwise (an Info message is logged then). Threads is also
// used by tar.gz (parallel gzip, 1 MiB blocks), zip (entries cut into 1 MiB
// chunks deflated concurrently) and the pure-Go zstd encoder; the pure-Go xz
// and bzip2 encoders run on one goroutine.
type Options struct {
	Format  string       // "tar.gz" | "tar.xz" | "tar.bz2" | "tar.zst" | "zip"
	Level   int          // 0 = format default
	Threads int          // 0 = runtime.NumCPU()
	Exclude []string     // doublestar patterns relative to each data path: "cache/**", "*.tmp" (a pattern without '/' matches a base name at any depth)
	Logger  *slog.Logger // warnings (skipped sockets/fifos/devices, vanished files); nil = slog.Default()
	// Progress, if set, is advanced as Write, Capture and Convert go (see
	// Progress); another goroutine may read it at any time.
	Progress *Progress
	// SkipDirs are directories left out of the walk (with a warning)
	// wherever it meets them, by identity: the destinations, so that one
	// reachable inside a data path (bind mount, symlinked parent) is not
	// archived into itself. See DirIdentity.
	SkipDirs []SkipDir
	// Manifest, if set, receives every entry of the archive as Write,
	// WriteTree or Convert write it (not Capture: its Convert does), with
	// the SHA-256 of each regular file's content (manifest.go).
	Manifest ManifestSink
}

// Progress counts the work done by a Write, Capture or Convert so far. The
// counters are updated once per copied chunk (up to 1 MiB) and once per
// entry, never per byte, and are safe to read from another goroutine (e.g.
// a ticker printing progress). A nil *Progress counts nothing.
type Progress struct {
	files, bytes atomic.Int64
}

// Files returns the regular files completed so far.
func (p *Progress) Files() int64 { return p.files.Load() }

// Bytes returns the bytes processed so far: file content read from the data
// paths (Write, Capture) or tar stream bytes read from the capture (Convert).
func (p *Progress) Bytes() int64 { return p.bytes.Load() }

func (p *Progress) addBytes(n int64) {
	if p != nil {
		p.bytes.Add(n)
	}
}

func (p *Progress) addFile() {
	if p != nil {
		p.files.Add(1)
	}
}

// Stats summarise an archive written, verified or extracted.
type Stats struct {
	Files, Dirs, Symlinks, Hardlinks, Skipped int64
	BytesRead                                 int64 // content bytes read from the data paths (Verify/Extract: content bytes read from the archive)
	// ZeroFill counts the zero bytes the archive holds as file content
	// that were not read (Write only): the padding of a tar entry whose
	// file shrank while read, the holes of a sparse file. BytesRead +
	// ZeroFill is what a Verify of the archive counts (CheckCounts).
	ZeroFill int64
	Warnings []string
	// Changed counts the regular files that changed while they were read
	// (GNU tar's "file changed as we read it": size, mtime or ctime
	// differ after reading, or fewer bytes than the size could be read;
	// the entry is still complete, padded with zeros if it shrank, but its
	// content may be inconsistent). ChangedFiles lists their paths (at
	// most 1000). Only a live backup sees such changes.
	Changed      int64
	ChangedFiles []string
	// Tar (Write and Convert of tar.zst; nil otherwise) is the length and
	// XXH64 of the tar stream fed to the compressor, which the stream
	// check compares with the zstd frame (StreamCheck.Finish).
	Tar *TarSum
	// CopiedInKernel (Capture) counts the content bytes the kernel copied
	// into the capture file with copy_file_range; they never passed
	// through this process.
	CopiedInKernel int64
}

// maxWarnings bounds Stats.Warnings; further warnings are still logged and
// counted in a final summary line.
const maxWarnings = 1000

type warner struct {
	stats   *Stats
	log     *slog.Logger
	dropped int
}

func (w *warner) warn(msg string, args ...any) {
	s := fmt.Sprintf(msg, args...)
	w.log.Warn("archive: " + s)
	if len(w.stats.Warnings) < maxWarnings {
		w.stats.Warnings = append(w.stats.Warnings, s)
	} else {
		w.dropped++
	}
}

func (w *warner) finish() {
	if w.dropped > 0 {
		w.stats.Warnings = append(w.stats.Warnings, fmt.Sprintf("... and %d more warnings (see log)", w.dropped))
		w.dropped = 0
	}
}

func loggerOr(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

func checkFormat(format string) error {
	for _, f := range Formats {
		if f == format {
			return nil
		}
	}
	return fmt.Errorf("archive: unsupported format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

// EntryName maps an absolute data path to its name in the archive: the
// cleaned path without its leading "/", like GNU tar does, so `tar -C / -xf`
// (or ExtractFile with target "/") puts every data path back where it was.
// EntryName("/") is ".".
func EntryName(absPath string) string {
	p := path.Clean(filepath.ToSlash(absPath))
	p = strings.TrimLeft(p, "/")
	if p == "" {
		return "."
	}
	return p
}

// ErrUnsafeName is wrapped by SafeJoin errors.
var ErrUnsafeName = errors.New("unsafe archive entry name")

// cleanName validates an archive entry name and returns it cleaned
// (slash-separated, no trailing slash, "." for the root).
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: empty name", ErrUnsafeName)
	case strings.IndexByte(name, 0) >= 0:
		return "", fmt.Errorf("%w: %q contains NUL", ErrUnsafeName, name)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w: %q is absolute", ErrUnsafeName, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: %q contains \"..\"", ErrUnsafeName, name)
		}
	}
	return path.Clean(name), nil
}

// SafeJoin returns target joined with the archive entry name, or an error
// (wrapping ErrUnsafeName) when the name is absolute, contains a ".."
// element, is empty, or contains NUL. Names are slash-separated; "." and
// empty elements are ignored, a trailing "/" is allowed (directories). The
// result equals filepath.Clean(target) exactly when the name cleans to "."
// (e.g. "." or "./", as written by `tar -C dir .`); otherwise it lies strictly
// inside target. Backslashes are ordinary characters. Pure function.
func SafeJoin(target, name string) (string, error) {
	c, err := cleanName(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(target, filepath.FromSlash(c)), nil
}
