package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// The rules below are the worker's: the archiver (package archive) and the
// run call them, and Validate applies them to a config, so a value that
// check-config and `backupgen validate` accept is one the run accepts.

// Level is the range of compression levels a format accepts. A config's
// compressionLevel 0 always selects Default, so a format's own level 0
// (xz -0) cannot be chosen; every other level in Min..Max can.
type Level struct{ Min, Max, Default int }

// levels: gzip and zip use klauspost deflate (1-9; its level 4 is the
// default, see archive/codec.go); xz and bzip2 take the presets of xz(1)
// and bzip2(1) (block size level×100 kB); zstd takes 1-22 (levels above 19
// are passed to zstd(1) with --ultra). zstd's negative "fast" levels are
// not offered: the pure-Go encoder has no equivalent.
var levels = map[string]Level{
	"tar.gz":  {1, 9, 4},
	"tar.xz":  {1, 9, 6},
	"tar.bz2": {1, 9, 6},
	"tar.zst": {1, 22, 3},
	"zip":     {1, 9, 4},
}

// LevelRange returns the compression levels format accepts.
func LevelRange(format string) (Level, bool) {
	l, ok := levels[format]
	return l, ok
}

// ResolveLevel returns the level to compress format with: level itself, or
// the format's default for 0. A level outside the format's range is an
// error that says which levels the format takes.
func ResolveLevel(format string, level int) (int, error) {
	l, ok := levels[format]
	if !ok {
		return 0, fmt.Errorf("unknown format %q", format)
	}
	if level == 0 {
		return l.Default, nil
	}
	if level < l.Min || level > l.Max {
		return 0, fmt.Errorf("%d: %s takes levels %d-%d (0 = its default, %d)", level, format, l.Min, l.Max, l.Default)
	}
	return level, nil
}

// Bounds of numeric settings. A value beyond them is a typo, not a wish,
// and some would break the run: seconds beyond MaxTimeoutSec come close to
// time.Duration's 292-year limit, days beyond MaxRetentionDays overflow it
// (a negative age limit would prune everything).
const (
	MaxThreads       = 1024
	MaxTimeoutSec    = 365 * 24 * 3600 // one year
	MaxRetentionDays = 100 * 366       // a century
	// MaxKeepPeriods bounds keepHourly … keepYearly (a century of hours).
	MaxKeepPeriods = 100 * 366 * 24
)

// Exclude is a parsed exclude pattern.
type Exclude struct {
	// Pattern is the doublestar glob, without a leading "./" or trailing "/".
	Pattern string
	// DirOnly: the pattern ended in "/" and matches directories only.
	DirOnly bool
	// Base: the pattern has no "/" and matches a base name at any depth.
	Base bool
}

// ParseExclude parses one exclude pattern: a doublestar glob relative to
// each data path ("cache/**", "*.tmp", "logs/"). The error says how to fix it.
func ParseExclude(p string) (Exclude, error) {
	switch {
	case p == "":
		return Exclude{}, errors.New("empty; give a glob relative to each data path, e.g. \"cache/**\"")
	case strings.HasPrefix(p, "/"):
		return Exclude{}, errors.New("starts with /; patterns are relative to each data path: write it without the leading /")
	case strings.ContainsAny(p, "\x00\n\r"):
		return Exclude{}, errors.New("contains a NUL or newline character")
	}
	e := Exclude{Pattern: strings.TrimPrefix(p, "./")}
	if strings.HasSuffix(e.Pattern, "/") {
		e.DirOnly = true
		e.Pattern = strings.TrimRight(e.Pattern, "/")
	}
	if e.Pattern == "" || e.Pattern == "." {
		return Exclude{}, errors.New("matches nothing; give a glob relative to each data path, e.g. \"cache/**\"")
	}
	if !doublestar.ValidatePattern(e.Pattern) {
		return Exclude{}, errors.New("not a valid glob (an unclosed [ or {, or a trailing \\?); escape a literal [ as \\[")
	}
	e.Base = !strings.Contains(e.Pattern, "/")
	return e, nil
}

// accountRE: a user or group name as useradd and systemd accept it (no
// spaces, colons or control characters, which would corrupt a tmpfiles
// line or /etc/passwd), or a numeric id.
var accountRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$`)

// ValidAccount reports whether s is a plausible user or group name or id.
func ValidAccount(s string) bool { return len(s) <= 256 && accountRE.MatchString(s) }

// inside reports whether p is dir or lies below it (both clean).
func inside(p, dir string) bool {
	p, dir = filepath.Clean(p), filepath.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}
