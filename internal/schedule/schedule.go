// Package schedule converts the `schedule` of a backup into systemd
// OnCalendar expressions.
//
// Users may write either a classic 5-field cron expression (or one of the
// cron shortcuts such as @daily), because that is what most people already
// know, or a systemd calendar expression, because that is what the generated
// timers finally use. Cron expressions are converted so that the timer fires
// at exactly the minutes cron would fire at; calendar expressions are passed
// through unchanged once [ParseCalendar], a Go twin of systemd's own parser
// (see calendar.go), accepts them.
//
// The same conversion is implemented in Nix in templates/nix/cron.nix, so
// that generated NixOS modules can convert schedules at evaluation time.
// Both implementations are checked against the shared table in
// testdata/cases.json and must produce byte-identical output.
//
// # Output format
//
// Every cron expression becomes one or two OnCalendar strings of the form
//
//	[WEEKDAYS ]*-MONTHS-DAYS HOURS:MINUTES:00
//
// which is exactly systemd's own normalized form, so `systemd-analyze
// calendar` prints it back unchanged:
//
//   - the year is always `*` and the seconds always `00`;
//   - a numeric component is `*` when cron's set covers the field's whole
//     range, otherwise a comma-separated list, ascending, of two-digit numbers
//     where a run of three or more consecutive values is written `a..b`
//     (e.g. `00,15,30,45`, `01..05,07`, `09..17`);
//   - weekdays use systemd's names in systemd's order (Mon first, Sun last),
//     a run of three or more written `a..b`, e.g. `Mon..Fri`, `Mon,Wed`,
//     `Sat,Sun`, `Tue,Thu,Sat,Sun`; they are omitted when every weekday is
//     selected.
//
// When both day-of-month and day-of-week are restricted the result has two
// entries, in this order: first the weekday entry (day `*`), then the
// day-of-month entry (no weekday). See [Cron.OnCalendar] for why.
package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxLen is the maximum length in bytes of a schedule (before trimming).
// It keeps generated unit files sane and bounds the work of the Nix
// implementation, whose regular expressions recurse per input byte.
const MaxLen = 256

// spaceChars are the characters separating cron fields and trimmed from a
// schedule. They are POSIX [[:space:]] in the C locale, spelled out so that
// the Nix implementation can use the very same set independent of locale.
const spaceChars = " \t\n\v\f\r"

func isSpace(r rune) bool { return strings.ContainsRune(spaceChars, r) }

// isCronChar reports whether c may appear in a cron field.
func isCronChar(c rune) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
		c == '*' || c == ',' || c == '/' || c == '-'
}

// fields splits a schedule into whitespace-separated fields and reports
// whether every field consists only of cron characters.
func fields(expr string) ([]string, bool) {
	fs := strings.FieldsFunc(expr, isSpace)
	for _, f := range fs {
		for _, c := range f {
			if !isCronChar(c) {
				return fs, false
			}
		}
	}
	return fs, true
}

// IsCron reports whether expr is to be read as a cron expression: it starts
// with `@` (a shortcut such as @daily) or consists of exactly five
// whitespace-separated fields made only of the characters 0-9 a-z A-Z * , / -.
// Anything else is a systemd calendar expression. No systemd calendar
// expression has that shape (its time contains `:` and it has at most four
// parts), so the rule is unambiguous.
func IsCron(expr string) bool {
	expr = strings.Trim(expr, spaceChars)
	if strings.HasPrefix(expr, "@") {
		return true
	}
	fs, ok := fields(expr)
	return ok && len(fs) == 5
}

// shortcuts maps cron's @-shortcuts to their 5-field equivalents. They are
// converted through cron (not mapped to systemd's words of the same name)
// because the meanings differ: cron's @weekly is Sunday 00:00, systemd's
// `weekly` is Monday 00:00.
var shortcuts = map[string]string{
	"@hourly":   "0 * * * *",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@weekly":   "0 0 * * 0",
	"@monthly":  "0 0 1 * *",
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
}

// ToOnCalendar converts a schedule to the list of systemd OnCalendar
// expressions whose union fires exactly when the schedule does.
//
// A cron expression (see [IsCron]) is converted as described in the package
// documentation. Anything else is a systemd calendar expression and is
// returned, trimmed of surrounding whitespace, as a one-element list once
// [CheckCalendar] accepts it: systemd would refuse the timer otherwise, and
// no backup would ever run.
//
// Five or more whitespace-separated fields are always read as cron (no
// calendar expression has more than four parts: weekdays, date, time,
// zone), so "0 0 ? * *" gets cron's error about "?"; so are four or more
// fields made only of cron characters (typically a 6-field cron with
// seconds).
func ToOnCalendar(expr string) ([]string, error) {
	if len(expr) > MaxLen {
		return nil, fmt.Errorf("schedule is %d bytes long, at most %d allowed", len(expr), MaxLen)
	}
	trimmed := strings.Trim(expr, spaceChars)
	if trimmed == "" {
		return nil, fmt.Errorf("schedule is empty")
	}
	if fs, ok := fields(trimmed); IsCron(trimmed) || ok && len(fs) >= 4 || len(fs) >= 5 {
		c, err := ParseCron(trimmed)
		if err != nil && !ok {
			return nil, fmt.Errorf("%w (a schedule of 5 or more fields is cron: minute hour day-of-month month day-of-week)", err)
		}
		if err != nil {
			return nil, err
		}
		return c.OnCalendar(), nil
	}
	if r, ok := firstControl(trimmed); ok {
		return nil, fmt.Errorf("calendar schedule %q contains control character %U", trimmed, r)
	}
	if err := CheckCalendar(trimmed, time.Now()); err != nil {
		return nil, err
	}
	return []string{trimmed}, nil
}

// CheckCalendar reports whether systemd accepts expr as an OnCalendar
// value that elapses at some time after now; a timer that never elapses
// is as silent a failure as one systemd refuses. The expression is read
// in the local zone.
func CheckCalendar(expr string, now time.Time) error {
	c, err := ParseCalendar(expr)
	if err != nil {
		return err
	}
	if c.Next(now, time.Local).IsZero() {
		return &CalendarError{Expr: expr, Msg: fmt.Sprintf("never elapses after %s (normalized: %s), so the timer would never start a backup",
			now.Format("2006-01-02 15:04 MST"), c.Normalized())}
	}
	return nil
}

// firstControl returns the first control character (C0, DEL or C1) in s.
// Such characters would break the generated unit files and Nix strings.
func firstControl(s string) (rune, bool) {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r < 0x20 || r >= 0x7f && r <= 0x9f {
			return r, true
		}
		i += n
	}
	return 0, false
}

// field describes one of the five cron fields.
type field struct {
	name   string
	lo, hi int
	names  []string // names[i] names the value base+i
	base   int
	hint   string // shown when a name is not recognised
}

var cronFields = [5]field{
	{name: "minute", lo: 0, hi: 59},
	{name: "hour", lo: 0, hi: 23},
	{name: "day-of-month", lo: 1, hi: 31},
	{name: "month", lo: 1, hi: 12, base: 1, hint: "jan..dec",
		names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
	{name: "day-of-week", lo: 0, hi: 7, base: 0, hint: "sun..sat",
		names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
}

// Cron is a parsed 5-field cron expression with Vixie cron / cronie
// semantics.
type Cron struct {
	expr    string
	minute  uint64 // bit i set: minute i selected
	hour    uint64
	dom     uint64 // bits 1..31
	month   uint64 // bits 1..12
	dow     uint64 // bits 0..6, Sunday = 0 (cron's 7 folded onto 0)
	domStar bool   // day-of-month field starts with `*`
	dowStar bool   // day-of-week field starts with `*`
}

// ParseCron parses a 5-field cron expression or an @-shortcut.
func ParseCron(expr string) (*Cron, error) {
	expr = strings.Trim(expr, spaceChars)
	if strings.HasPrefix(expr, "@") {
		equiv, ok := shortcuts[expr]
		if !ok {
			if expr == "@reboot" {
				return nil, fmt.Errorf("cron shortcut \"@reboot\" is not supported: a timer cannot fire at boot; use a calendar expression")
			}
			return nil, fmt.Errorf("unknown cron shortcut %q (known: @hourly @daily @midnight @weekly @monthly @yearly @annually)", expr)
		}
		c, err := ParseCron(equiv)
		if err != nil {
			return nil, err
		}
		c.expr = expr
		return c, nil
	}
	fs := strings.FieldsFunc(expr, isSpace)
	if len(fs) != 5 {
		return nil, fmt.Errorf("cron schedule %q has %d fields, want 5 (minute hour day-of-month month day-of-week)", expr, len(fs))
	}
	var sets [5]uint64
	for i, f := range fs {
		s, err := cronFields[i].parse(f)
		if err != nil {
			return nil, err
		}
		sets[i] = s
	}
	c := &Cron{
		expr:    expr,
		minute:  sets[0],
		hour:    sets[1],
		dom:     sets[2],
		month:   sets[3],
		dow:     (sets[4] | sets[4]>>7) & 0x7f,
		domStar: strings.HasPrefix(fs[2], "*"),
		dowStar: strings.HasPrefix(fs[4], "*"),
	}
	// A schedule that can never fire is certainly a mistake. Only the
	// day-of-month can make it impossible: in "AND" mode (see orMode) each
	// possible month/day falls on every weekday within the 400-year
	// Gregorian cycle, and in "OR" mode the weekday part always fires.
	if !c.orMode() && !c.domPossible() {
		var days []string
		for d := 1; d <= 31; d++ {
			if c.dom&(1<<d) != 0 {
				days = append(days, strconv.Itoa(d))
			}
		}
		what := "day " + days[0]
		if len(days) > 1 {
			what = "any of days " + strings.Join(days, ",")
		}
		return nil, fmt.Errorf("cron schedule %q never fires: no selected month has %s", expr, what)
	}
	return c, nil
}

// parse expands one cron field to its set of values.
func (f field) parse(text string) (uint64, error) {
	var set uint64
	for _, elem := range strings.Split(text, ",") {
		if elem == "" {
			return 0, fmt.Errorf("cron field %q has an empty list element in %q", f.name, text)
		}
		if isQuartz(elem) {
			return 0, fmt.Errorf("cron field %q has invalid element %q: \"?\", \"L\", \"W\" and \"#\" are Quartz cron syntax; plain cron writes \"*\" for any day", f.name, elem)
		}
		invalid := fmt.Errorf("cron field %q has invalid element %q", f.name, elem)
		base, stepText, hasStep := strings.Cut(elem, "/")
		step := 1
		if hasStep {
			if !isDigits(stepText) {
				return 0, invalid
			}
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 || n > f.hi {
				return 0, fmt.Errorf("cron field %q step %s out of range 1-%d", f.name, stepText, f.hi)
			}
			step = n
		}
		var start, end int
		if base == "*" {
			start, end = f.lo, f.hi
		} else {
			a, b, isRange := strings.Cut(base, "-")
			var err error
			if start, err = f.value(a, elem); err != nil {
				return 0, err
			}
			switch {
			case isRange:
				if end, err = f.value(b, elem); err != nil {
					return 0, err
				}
				// "fri-sun" should mean Friday to Sunday, so the
				// name "sun" ending a range is cron's Sunday 7.
				if f.name == "day-of-week" && end == 0 && start > 0 && isLetters(b) {
					end = 7
				}
				if start > end {
					return 0, fmt.Errorf("cron field %q range %q is reversed (%d > %d)", f.name, base, start, end)
				}
			case hasStep:
				// cronie: "N/step" means "N-max/step".
				end = f.hi
			default:
				end = start
			}
		}
		for v := start; v <= end; v += step {
			set |= 1 << v
		}
	}
	return set, nil
}

// value parses a number or, in the month and day-of-week fields, a name.
func (f field) value(tok, elem string) (int, error) {
	switch {
	case isDigits(tok):
		n, err := strconv.Atoi(tok)
		if err != nil || n < f.lo || n > f.hi {
			return 0, fmt.Errorf("cron field %q value %s out of range %d-%d", f.name, tok, f.lo, f.hi)
		}
		return n, nil
	case isLetters(tok):
		lower := strings.ToLower(tok)
		for i, name := range f.names {
			if name == lower {
				return f.base + i, nil
			}
		}
		if f.names == nil {
			return 0, fmt.Errorf("cron field %q value %q is not a number", f.name, tok)
		}
		return 0, fmt.Errorf("cron field %q value %q is not a number or name (%s)", f.name, tok, f.hint)
	default:
		return 0, fmt.Errorf("cron field %q has invalid element %q", f.name, elem)
	}
}

// isQuartz reports whether a cron element uses Quartz's extensions ("?",
// "L", "W", "#"), which cron does not have.
func isQuartz(elem string) bool {
	if strings.ContainsAny(elem, "?#") {
		return true
	}
	t := strings.TrimRight(strings.ToUpper(elem), "LW")
	return t != strings.ToUpper(elem) && (t == "" || isDigits(t))
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func isLetters(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return s != ""
}

// daysIn is the maximum number of days of each month; February has 29
// because leap years exist.
var daysIn = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// domPossible reports whether some selected month has some selected day.
func (c *Cron) domPossible() bool {
	for m := 1; m <= 12; m++ {
		if c.month&(1<<m) != 0 && c.dom&(1<<(daysIn[m]+1)-1) != 0 {
			return true
		}
	}
	return false
}

// orMode reports whether a day matches when EITHER its day-of-month or its
// day-of-week is selected. This is the historic rule of Vixie cron, kept by
// cronie: when both fields are restricted, they are ORed; when either starts
// with `*` (even `*/2`, which does restrict), they are ANDed. systemd always
// ANDs the weekday with the date, hence the two-entry conversion.
func (c *Cron) orMode() bool { return !c.domStar && !c.dowStar }

const (
	allDOW = 1<<7 - 1
	allDOM = (1<<32 - 1) &^ 1
)

// OnCalendar returns the systemd OnCalendar expressions whose union fires
// exactly when c does, in the format described in the package documentation.
//
// In "OR" mode (both day fields restricted, see orMode) cron fires on a day
// if either field matches, but systemd requires the weekday AND the date to
// match, so two entries are returned: first "weekday, any day", then "this
// day of the month, any weekday". If either field selects every value the
// union is every day and a single entry is returned; the day-of-month entry
// is left out when no selected month has a selected day (it would never
// elapse, while the weekday entry still does).
func (c *Cron) OnCalendar() []string {
	tm := fmt.Sprintf("%s:%s:00", numbers(c.hour, 0, 23), numbers(c.minute, 0, 59))
	months := numbers(c.month, 1, 12)
	entry := func(dow uint64, dom uint64) string {
		s := fmt.Sprintf("*-%s-%s %s", months, numbers(dom, 1, 31), tm)
		if dow != allDOW {
			s = weekdays(dow) + " " + s
		}
		return s
	}
	if !c.orMode() {
		return []string{entry(c.dow, c.dom)}
	}
	if c.dow == allDOW || c.dom == allDOM {
		return []string{entry(allDOW, allDOM)}
	}
	out := []string{entry(c.dow, allDOM)}
	if c.domPossible() {
		out = append(out, entry(allDOW, c.dom))
	}
	return out
}

// String returns the expression c was parsed from.
func (c *Cron) String() string { return c.expr }

// runs formats the items selected by in (ascending) as a comma-separated
// list, writing runs of three or more consecutive items as "first..last".
func runs(n int, in func(i int) bool, name func(i int) string) string {
	var parts []string
	for i := 0; i < n; {
		if !in(i) {
			i++
			continue
		}
		j := i
		for j+1 < n && in(j+1) {
			j++
		}
		switch {
		case j-i >= 2:
			parts = append(parts, name(i)+".."+name(j))
		case j == i+1:
			parts = append(parts, name(i), name(j))
		default:
			parts = append(parts, name(i))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// numbers formats the values lo..hi selected in set, `*` if all are.
func numbers(set uint64, lo, hi int) string {
	full := (uint64(1)<<(hi+1) - 1) &^ (uint64(1)<<lo - 1)
	if set&full == full {
		return "*"
	}
	return runs(hi-lo+1,
		func(i int) bool { return set&(1<<(lo+i)) != 0 },
		func(i int) string { return fmt.Sprintf("%02d", lo+i) })
}

// systemdDays lists systemd's weekday names in systemd's order; Sunday,
// cron's day 0, comes last.
var systemdDays = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

func weekdays(set uint64) string {
	return runs(7,
		func(i int) bool { return set&(1<<((i+1)%7)) != 0 },
		func(i int) string { return systemdDays[i] })
}

// Matches reports whether c fires in the minute of t (in t's location).
func (c *Cron) Matches(t time.Time) bool {
	return c.minute&(1<<t.Minute()) != 0 && c.hour&(1<<t.Hour()) != 0 &&
		c.dayMatches(t.Year(), t.Month(), t.Day())
}

func (c *Cron) dayMatches(y int, m time.Month, d int) bool {
	if c.month&(1<<int(m)) == 0 {
		return false
	}
	domOK := c.dom&(1<<d) != 0
	dowOK := c.dow&(1<<int(time.Date(y, m, d, 12, 0, 0, 0, time.UTC).Weekday())) != 0
	if c.orMode() {
		return domOK || dowOK
	}
	return domOK && dowOK
}

// Next returns the first minute strictly after `after` (in its location) at
// which c fires, or the zero Time if there is none within 400 years (which
// ParseCron's never-fires check rules out).
func (c *Cron) Next(after time.Time) time.Time {
	loc := after.Location()
	start := after.Truncate(time.Minute).Add(time.Minute)
	y, m, d := start.Date()
	for i := 0; i <= 400*366; i++ {
		day := time.Date(y, m, d+i, 0, 0, 0, 0, loc)
		if !c.dayMatches(day.Year(), day.Month(), day.Day()) {
			continue
		}
		for h := 0; h < 24; h++ {
			if c.hour&(1<<h) == 0 {
				continue
			}
			for mi := 0; mi < 60; mi++ {
				if c.minute&(1<<mi) == 0 {
					continue
				}
				t := time.Date(day.Year(), day.Month(), day.Day(), h, mi, 0, 0, loc)
				if !t.Before(start) && t.Hour() == h && t.Minute() == mi {
					return t
				}
			}
		}
	}
	return time.Time{}
}
