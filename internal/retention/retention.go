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
	"strings"
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
	// Why says, in Plan's results, every reason the archive is kept ("last
	// 3", "daily 2026-11-30", "weekly 2026-W48", "minKeep", …) or why it is
	// removed ("older than maxAge 720h0m0s", "beyond last 3; daily
	// 2026-11-29 keeps a newer archive").
	Why []string
}

// Policy says which archives to keep.
type Policy struct {
	// MaxAge removes archives older than this (0 = no age limit).
	MaxAge time.Duration
	// KeepLast keeps the newest this many archives (restic's keep-last).
	// With no calendar rule (Keep all zero), 0 keeps all: KeepLast is then
	// the count limit it always was.
	KeepLast int
	// Keep holds the calendar rules, indexed by Period: keep the newest
	// archive of each of the newest Keep[p] periods that hold one (0 = off).
	Keep [NumPeriods]int
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
// the result in their Check field, and every result says why in Why.
//
// An archive is kept when any of these keeps it (docs/retention.md):
//   - it is known bad (Check == Bad, or Verify said so): kept as evidence,
//     and it counts towards no rule;
//   - it is dated after now (clock skew, or a clock that was fixed);
//   - it is one of the newest max(MinKeep, 1) good archives not dated in
//     the future (the floor: nothing removes these);
//   - it is named in Protect;
//   - a keep rule selects it and it is not older than MaxAge. The keep
//     rules: KeepLast (the newest KeepLast archives not known bad, future
//     ones included) and the calendar rules (the newest good archive of
//     each of the newest Keep[p] periods that hold a good archive not dated
//     in the future). With no calendar rule and KeepLast 0 every archive
//     is selected.
//
// Everything else is removed. MaxAge is thus an upper bound on every keep
// rule but not on the floor, as KeepLast always was; config.Validate
// refuses a calendar rule whose periods reach beyond MaxAge, so under
// regular backups MaxAge never cuts what a rule was asked to keep.
//
// Every archive that would be kept if good is verified (Policy.Verify)
// first, newest first, so a corrupt or untrusted archive never satisfies
// the floor or takes a rank or a period.
func Plan(archives []Archive, policy Policy, now time.Time) (keep, remove []Archive) {
	sorted := slices.Clone(archives)
	sortNewestFirst(sorted)
	pl := newPlanner(policy, now)
	for _, a := range sorted {
		floor, sel, not := pl.rules(a)
		tooOld := policy.MaxAge > 0 && now.Sub(a.Time) > policy.MaxAge
		wanted := len(floor) > 0 || (len(sel) > 0 && !tooOld)
		if wanted && a.Check == Unchecked && policy.Verify != nil {
			if policy.Verify(a) {
				a.Check = Good
			} else {
				a.Check = Bad
			}
		}
		if a.Check == Bad {
			a.Why = []string{"failed verification: never pruned"}
			keep = append(keep, a)
			continue
		}
		pl.take(a)
		switch {
		case len(floor) > 0:
			a.Why = floor
			if !tooOld {
				a.Why = append(a.Why, sel...)
			}
			keep = append(keep, a)
		case len(sel) > 0 && !tooOld:
			a.Why = sel
			keep = append(keep, a)
		case tooOld:
			a.Why = append([]string{"older than maxRetentionDays (" + days(policy.MaxAge) + ")"}, not...)
			if len(sel) > 0 {
				a.Why = append(a.Why, "although "+strings.Join(sel, ", "))
			}
			remove = append(remove, a)
		default:
			a.Why = not
			remove = append(remove, a)
		}
	}
	return keep, remove
}

// planner holds what Plan has counted so far, going newest first.
type planner struct {
	p        Policy
	now      time.Time
	minKeep  int
	calendar bool               // any calendar rule on
	good     int                // good archives not in the future (the floor)
	rank     int                // archives not known bad (KeepLast)
	taken    [NumPeriods]int    // periods taken per calendar rule
	last     [NumPeriods]string // key of the newest period not yet passed
}

func newPlanner(p Policy, now time.Time) *planner {
	pl := &planner{p: p, now: now, minKeep: max(p.MinKeep, 1)}
	for _, n := range p.Keep {
		pl.calendar = pl.calendar || n > 0
	}
	return pl
}

// rules says, for a if it is good, what keeps it whatever its age (floor),
// which keep rules select it (sel) and why the others do not (not). It
// changes nothing: take counts a once it is known not to be bad.
func (pl *planner) rules(a Archive) (floor, sel, not []string) {
	future := a.Time.After(pl.now)
	if future {
		floor = append(floor, "dated in the future")
	} else if pl.good < pl.minKeep {
		floor = append(floor, "minKeep")
	}
	if slices.Contains(pl.p.Protect, a.Name) {
		floor = append(floor, "written by this run")
	}
	switch {
	case pl.p.KeepLast > 0 && pl.rank < pl.p.KeepLast:
		sel = append(sel, fmt.Sprintf("last %d", pl.p.KeepLast))
	case pl.p.KeepLast > 0:
		not = append(not, fmt.Sprintf("beyond last %d", pl.p.KeepLast))
	case !pl.calendar:
		sel = append(sel, "no count limit")
	}
	for _, p := range Periods {
		n := pl.p.Keep[p]
		if n == 0 || future {
			continue
		}
		key := p.Key(a.Time)
		switch {
		case key == pl.last[p]:
			not = append(not, fmt.Sprintf("%s %s keeps a newer archive", p, key))
		case pl.taken[p] < n:
			sel = append(sel, fmt.Sprintf("%s %s", p, key))
		default:
			not = append(not, fmt.Sprintf("beyond %s %d", p, n))
		}
	}
	return floor, sel, not
}

// take counts a (not known bad) towards the floor, KeepLast and the
// calendar rules.
func (pl *planner) take(a Archive) {
	pl.rank++
	if a.Time.After(pl.now) {
		return
	}
	if pl.good < pl.minKeep {
		pl.good++
	}
	for _, p := range Periods {
		if key := p.Key(a.Time); pl.p.Keep[p] > 0 && key != pl.last[p] && pl.taken[p] < pl.p.Keep[p] {
			pl.taken[p]++
			pl.last[p] = key
		}
	}
}

// days prints d in whole days when it is a whole number of days.
func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// PolicyFromConfig builds a Policy from the config's settings; keep holds
// keepHourly … keepYearly, indexed by Period.
func PolicyFromConfig(maxRetentionDays, retentionSnapshots, minKeep int, keep [NumPeriods]int) Policy {
	return Policy{
		MaxAge:   time.Duration(maxRetentionDays) * 24 * time.Hour,
		KeepLast: retentionSnapshots,
		MinKeep:  minKeep,
		Keep:     keep,
	}
}

// String describes the policy for logs and dry runs.
func (p Policy) String() string {
	age := "none"
	if p.MaxAge > 0 {
		age = p.MaxAge.String()
	}
	last := "all"
	switch {
	case p.KeepLast > 0:
		last = fmt.Sprint(p.KeepLast)
	case p.Keep != [NumPeriods]int{}:
		last = "off" // the calendar rules decide
	}
	s := fmt.Sprintf("maxAge=%s keepLast=%s minKeep=%d", age, last, max(p.MinKeep, 1))
	for _, per := range Periods {
		if n := p.Keep[per]; n > 0 {
			s += fmt.Sprintf(" %s=%d", per, n)
		}
	}
	return s
}

// Period is one of the calendar rules: keep the newest archive of each of
// the newest N periods (hours, days, ISO weeks, months, years) that hold an
// archive, restic's --keep-hourly … --keep-yearly. Periods are in UTC, the
// time zone of archive names.
type Period int

const (
	Hourly Period = iota
	Daily
	Weekly
	Monthly
	Yearly
)

// NumPeriods is the number of calendar rules.
const NumPeriods = len(periodNames)

// Periods lists the calendar rules, shortest first.
var Periods = []Period{Hourly, Daily, Weekly, Monthly, Yearly}

var periodNames = [...]string{"hourly", "daily", "weekly", "monthly", "yearly"}

// periodHours is the longest each period lasts.
var periodHours = [...]int{1, 24, 7 * 24, 31 * 24, 366 * 24}

func (p Period) String() string { return periodNames[p] }

// Hours is the longest the period lasts: a rule keeping n periods keeps,
// under regular backups, archives up to n*Hours hours old.
func (p Period) Hours() int { return periodHours[p] }

// Key names the period t falls in, in UTC: "2026-11-30T14" (hour),
// "2026-11-30", "2026-W48" (ISO week, Monday to Sunday), "2026-11", "2026".
func (p Period) Key(t time.Time) string {
	t = t.UTC()
	switch p {
	case Hourly:
		return t.Format("2006-01-02T15")
	case Daily:
		return t.Format("2006-01-02")
	case Weekly:
		y, w := t.ISOWeek()
		return fmt.Sprintf("%04d-W%02d", y, w)
	case Monthly:
		return t.Format("2006-01")
	}
	return t.Format("2006")
}
