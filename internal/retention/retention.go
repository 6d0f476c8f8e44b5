// Package retention decides which archives of one service to delete.
//
// Plan is a pure function over names, timestamps and integrity (given in
// Archive.Check or asked lazily through Policy.Verify), so the policy can be
// tested exhaustively without a file system. The timestamp of an archive is
// the one in its file name (NAME-YYYYMMDDTHHMMSSZ.EXT), never the file's
// mtime: copying or restoring a directory of archives resets mtimes, and an
// archive must not look young (kept forever) or old (deleted) because of it.
//
// Scan is the only part that reads a directory. It returns only regular files
// whose names match this service's pattern exactly, so other services'
// archives (including one whose name merely starts with this service's name,
// such as "app-db" for "app"), user files, symlinks and directories are never
// candidates for deletion.
package retention

import (
	"cmp"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// TimeLayout is the UTC timestamp in archive names: sortable, no colons (which
// some file systems and tools mishandle), one-second resolution.
const TimeLayout = "20060102T150405Z"

// Check is what is known about an archive's integrity.
type Check int

const (
	// Unchecked: not verified (yet). Plan asks Policy.Verify when it needs
	// to know; an unchecked archive that Plan never asks about is treated as
	// good for KeepLast ranking (it was verified when it was written).
	Unchecked Check = iota
	// Good: the archive's checksum file exists and matches its content.
	Good
	// Bad: the checksum file is missing, unreadable or does not match.
	// A bad archive is never removed and never counts towards MinKeep or
	// KeepLast.
	Bad
)

func (c Check) String() string {
	switch c {
	case Good:
		return "good"
	case Bad:
		return "bad"
	}
	return "unchecked"
}

// Archive is one candidate for pruning.
type Archive struct {
	// Name is the base name of the file.
	Name string
	// Time is the timestamp parsed from Name.
	Time time.Time
	// Check is the archive's integrity as far as known. Plan fills it in
	// (in its results) for the archives it verified.
	Check Check
}

// Policy says which archives to keep.
type Policy struct {
	// MaxAge removes archives older than this (0 = no age limit).
	MaxAge time.Duration
	// KeepLast keeps at most this many archives (0 = keep all).
	KeepLast int
	// MinKeep is a floor: the newest MinKeep archives (not counting ones
	// dated in the future) are always kept. Values below 1 count as 1, so a
	// policy can never delete every archive.
	MinKeep int
	// Protect names archives that are kept whatever their age or rank, such
	// as the archive the current run just wrote. They still count towards
	// KeepLast and MinKeep.
	Protect []string
	// Verify reports whether an archive is intact and trusted (its checksum
	// file exists and matches, its signature verifies). Plan calls it
	// lazily, newest first, for every archive not already marked Good or
	// Bad that it would keep and count if it were good (future-dated ones
	// included: they take KeepLast ranks), so nothing unverified ever
	// counts towards MinKeep, KeepLast or MaxAge; archives it removes
	// anyway are not read. nil treats unchecked archives as good.
	Verify func(Archive) bool
}

// FileName returns the archive name for service name, extension ext (the
// format, e.g. "tar.gz") and time t (converted to UTC).
func FileName(name, ext string, t time.Time) string {
	return name + "-" + t.UTC().Format(TimeLayout) + "." + ext
}

// Pattern returns the regular expression that matches exactly the archive
// names of service name with extension ext. The timestamp is captured as
// group 1.
func Pattern(name, ext string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `-(\d{8}T\d{6}Z)\.` + regexp.QuoteMeta(ext) + `$`)
}

// ParseName returns the timestamp of file name base if it is an archive of
// service name with extension ext. A name with an impossible date (month 13)
// is not an archive.
func ParseName(name, ext, base string) (time.Time, bool) {
	m := Pattern(name, ext).FindStringSubmatch(base)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(TimeLayout, m[1])
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// Scan lists the archives of service name with extension ext in dir: regular
// files (checked with Lstat, so a symlink is never followed or returned)
// whose names match Pattern. The result is sorted newest first.
func Scan(dir, name, ext string) ([]Archive, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	re := Pattern(name, ext)
	var out []Archive
	for _, e := range entries {
		if !re.MatchString(e.Name()) {
			continue
		}
		t, ok := ParseName(name, ext, e.Name())
		if !ok {
			continue
		}
		// ReadDir's type bits come from the directory entry; Lstat again so a
		// file system that reports DT_UNKNOWN is still judged correctly.
		fi, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		if fi.Mode().Type() != 0 || !fi.Mode().IsRegular() {
			continue
		}
		out = append(out, Archive{Name: e.Name(), Time: t})
	}
	sortNewestFirst(out)
	return out, nil
}

// IsRegularFile reports whether path is a regular file, not following
// symlinks. Deletion re-checks this right before removing.
func IsRegularFile(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().Type()&fs.ModeType == 0
}

func sortNewestFirst(as []Archive) {
	slices.SortStableFunc(as, func(a, b Archive) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.Name, a.Name)
	})
}

// Plan splits archives into the ones to keep and the ones to remove under
// policy at time now. Both results are sorted newest first; together they
// hold every input archive exactly once. Archives that Plan verified carry
// the result in their Check field.
//
// Rules, in order of precedence:
//   - every archive that would be kept and counted if good is verified
//     (Policy.Verify) first, so a corrupt or untrusted archive never
//     takes a rank or satisfies the floor;
//   - archives dated after now (clock skew, or a clock that was fixed) are
//     kept and are ranked newest; they are not counted towards MinKeep, so a
//     bogus future archive can never push a real one below the floor;
//   - archives known to be bad (Check == Bad, or Verify said so) are kept
//     as evidence and count towards neither MinKeep nor KeepLast;
//   - going newest first, archives not dated in the future are kept until
//     max(MinKeep, 1) good ones are found;
//   - archives named in Protect are kept;
//   - an archive ranked beyond KeepLast (counting every archive not known to
//     be bad, future ones included, newest first) is removed;
//   - an archive older than MaxAge is removed;
//   - everything else is kept.
func Plan(archives []Archive, policy Policy, now time.Time) (keep, remove []Archive) {
	sorted := slices.Clone(archives)
	sortNewestFirst(sorted)
	minKeep := max(policy.MinKeep, 1)
	good := 0 // good archives not in the future found so far
	rank := 0 // archives not known to be bad seen so far
	for _, a := range sorted {
		future := a.Time.After(now)
		protected := slices.Contains(policy.Protect, a.Name)
		beyondRank := policy.KeepLast > 0 && rank >= policy.KeepLast
		tooOld := policy.MaxAge > 0 && now.Sub(a.Time) > policy.MaxAge
		counts := future || good < minKeep || protected || (!beyondRank && !tooOld)
		if counts && a.Check == Unchecked && policy.Verify != nil {
			if policy.Verify(a) {
				a.Check = Good
			} else {
				a.Check = Bad
			}
		}
		if a.Check == Bad {
			keep = append(keep, a)
			continue
		}
		r := rank
		rank++
		switch {
		case future:
			keep = append(keep, a)
		case good < minKeep:
			good++
			keep = append(keep, a)
		case protected:
			keep = append(keep, a)
		case policy.KeepLast > 0 && r >= policy.KeepLast:
			remove = append(remove, a)
		case tooOld:
			remove = append(remove, a)
		default:
			keep = append(keep, a)
		}
	}
	return keep, remove
}

// PolicyFromConfig builds a Policy from the config's day/count settings.
func PolicyFromConfig(maxRetentionDays, retentionSnapshots, minKeep int) Policy {
	return Policy{
		MaxAge:   time.Duration(maxRetentionDays) * 24 * time.Hour,
		KeepLast: retentionSnapshots,
		MinKeep:  minKeep,
	}
}

// String describes the policy for logs and dry runs.
func (p Policy) String() string {
	age := "none"
	if p.MaxAge > 0 {
		age = p.MaxAge.String()
	}
	last := "all"
	if p.KeepLast > 0 {
		last = fmt.Sprint(p.KeepLast)
	}
	return fmt.Sprintf("maxAge=%s keepLast=%s minKeep=%d", age, last, max(p.MinKeep, 1))
}
