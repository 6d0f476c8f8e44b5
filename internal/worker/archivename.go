package worker

import (
	"path/filepath"
	"sort"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

// formatOf returns the archive format of a file name by its extension
// (an encrypted archive's is that of its plaintext: NAME-TS.tar.zst.age is
// tar.zst; see isEncryptedName).
func formatOf(name string) (string, bool) {
	name = strings.TrimSuffix(name, config.EncryptedSuffix)
	for _, f := range config.Formats {
		if strings.HasSuffix(name, "."+config.ArchiveExt(f)) {
			return f, true
		}
	}
	return "", false
}

// parseArchiveName reads a name as one of service's archives,
// NAME-TS.EXT or NAME-TS.EXT.age in any format: the one rule every
// Destination's List and name checks apply.
func parseArchiveName(service, name string) (StoredArchive, bool) {
	format, ok := formatOf(name)
	if !ok {
		return StoredArchive{}, false
	}
	ext, encrypted := config.ArchiveExt(format), isEncryptedName(name)
	if encrypted {
		ext += config.EncryptedSuffix
	}
	t, ok := retention.ParseName(service, ext, name)
	if !ok {
		return StoredArchive{}, false
	}
	return StoredArchive{Archive: retention.Archive{Name: name, Time: t}, Format: format, Encrypted: encrypted}, true
}

// destArchive is an archive found in a destination.
type destArchive struct {
	retention.Archive
	dir       string
	format    string
	encrypted bool // NAME-TS.EXT.age
}

func (a destArchive) path() string { return filepath.Join(a.dir, a.Name) }

// scanAllFormats lists the service's archives in dir in every known format
// (the format may have changed over time), encrypted or not (encryption
// may have been turned on or off), newest first.
func scanAllFormats(dir, name string) ([]destArchive, error) {
	var out []destArchive
	for _, f := range config.Formats {
		for _, enc := range []bool{false, true} {
			ext := config.ArchiveExt(f)
			if enc {
				ext += config.EncryptedSuffix
			}
			as, err := retention.Scan(dir, name, ext)
			if err != nil {
				return nil, err
			}
			for _, a := range as {
				out = append(out, destArchive{Archive: a, dir: dir, format: f, encrypted: enc})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, nil
}

// Checksum states reported by list and verify.
const (
	checksumOK       = "ok"       // verified against the file's content
	checksumPresent  = "present"  // a well-formed .sha256 exists (not verified)
	checksumMissing  = "missing"  // no .sha256 beside the archive
	checksumMismatch = "mismatch" // the content does not match
	checksumInvalid  = "invalid"  // the .sha256 is unreadable or names another file
)

// ArchiveFormat is the archive format a file name's extension names (that
// of the plaintext for NAME.EXT.age); ok is false for any other name.
func ArchiveFormat(name string) (format string, ok bool) { return formatOf(name) }

// IsEncryptedName: name is an encrypted archive's (NAME.EXT.age).
func IsEncryptedName(name string) bool { return isEncryptedName(name) }
