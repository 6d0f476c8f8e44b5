package schedule

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	// Embedded zone data: check-config runs in the Nix build sandbox, which
	// has no /usr/share/zoneinfo, and must still accept "Europe/Berlin".
	_ "time/tzdata"
)

// This file parses systemd calendar expressions (systemd.time(7), "Calendar
// Events") with exactly systemd's acceptance rules, checked against
// `systemd-analyze calendar` on testdata/calendar.json. Where systemd only
// says "Invalid argument", the errors here say what is wrong and how to
// write it instead.

const (
	minYear    = 1970
	maxYear    = 2199
	usecPerSec = 1_000_000
	// maxChain is systemd's CALENDARSPEC_COMPONENTS_MAX + 1: the longest
	// comma-separated list one component may hold.
	maxChain = 241
	allDays  = 1<<7 - 1
)

// comp is one element of a component list: start, start..stop or
// start[..stop]/repeat. stop is -1 when absent. Seconds are microseconds.
type comp struct{ start, stop, repeat int }

// Calendar is a parsed systemd calendar expression.
type Calendar struct {
	expr string
	// weekdays: bit 0 is Monday, bit 6 Sunday; 0 means any day.
	weekdays int
	// nil means "*".
	year, month, day, hour, minute, usec []comp
	endOfMonth                           bool // day counts from the end of the month ("~")
	utc                                  bool
	zone                                 string         // a tz database name given in the expression
	loc                                  *time.Location // the loaded zone, when zone != ""
	// dst is 0 or 1 when the expression ends with the local zone's standard
	// or daylight-saving abbreviation (e.g. "CET", "CEST"), else -1.
	dst     int
	dstName string
}

// CalendarError is a calendar expression systemd would refuse.
type CalendarError struct {
	Expr string
	Msg  string
}

func (e *CalendarError) Error() string {
	return fmt.Sprintf("invalid calendar expression %s: %s", quote(e.Expr), e.Msg)
}

// shorthands are systemd's words for common schedules, as the normalized
// expression each stands for (without zone).
var shorthands = map[string]string{
	"minutely":      "*-*-* *:*:00",
	"hourly":        "*-*-* *:00:00",
	"daily":         "*-*-* 00:00:00",
	"monthly":       "*-*-01 00:00:00",
	"weekly":        "Mon *-*-* 00:00:00",
	"yearly":        "*-01-01 00:00:00",
	"annually":      "*-01-01 00:00:00",
	"anually":       "*-01-01 00:00:00",
	"quarterly":     "*-01,04,07,10-01 00:00:00",
	"semiannually":  "*-01,07-01 00:00:00",
	"semi-annually": "*-01,07-01 00:00:00",
	"biannually":    "*-01,07-01 00:00:00",
	"bi-annually":   "*-01,07-01 00:00:00",
}

const shorthandList = "minutely, hourly, daily, weekly, monthly, quarterly, semiannually, yearly"

// ParseCalendar parses a systemd calendar expression as systemd does on a
// machine whose local zone is time.Local (which matters only for the local
// zone's abbreviations, such as "CET", accepted after the time).
func ParseCalendar(expr string) (*Calendar, error) {
	return ParseCalendarIn(expr, time.Local)
}

// ParseCalendarIn is ParseCalendar for a machine whose local zone is local.
func ParseCalendarIn(expr string, local *time.Location) (*Calendar, error) {
	c, syntax, err := parseCalendar(expr, local)
	if syntax {
		return nil, &CalendarError{Expr: expr, Msg: diagnose(expr, local, err)}
	}
	return c, err
}

// parseCalendar parses expr; syntax reports a grammar error (rather than
// a value out of range), which diagnose may explain better.
func parseCalendar(expr string, local *time.Location) (c *Calendar, syntax bool, err error) {
	c = &Calendar{expr: expr, dst: -1}
	fail := func(format string, args ...any) (*Calendar, bool, error) {
		return nil, false, &CalendarError{Expr: expr, Msg: fmt.Sprintf(format, args...)}
	}
	for _, r := range expr {
		if r < 0x20 || r >= 0x7f {
			return fail("contains the character %U; only printable ASCII is allowed", r)
		}
	}
	body := c.cutZone(expr, local)
	if body == "" {
		if expr == "" {
			return fail("is empty; write e.g. %q or %q", "daily", "*-*-* 02:00:00")
		}
		return fail("has nothing before the time zone; write e.g. %q", "*-*-* 02:00:00 UTC")
	}
	if norm, ok := shorthands[strings.ToLower(body)]; ok {
		body = norm
	}
	p := &parser{s: body, c: c}
	if err := p.parse(); err != nil {
		return nil, true, err
	}
	c.normalize()
	if msg := c.check(); msg != "" {
		return fail("%s", msg)
	}
	return c, false, nil
}

// diagnose explains a parse error where a likelier cause is visible:
// surrounding spaces, or a last word meant as a zone that systemd does not
// know.
func diagnose(expr string, local *time.Location, err error) string {
	if t := strings.Trim(expr, " "); t != expr && t != "" {
		if _, _, e := parseCalendar(t, local); e == nil {
			return "remove the leading or trailing spaces, which systemd refuses"
		}
	}
	i := strings.LastIndexByte(expr, ' ')
	if i < 0 {
		return err.Error()
	}
	word := expr[i+1:]
	if !validZoneName(word) || !isLetters(word[:1]) || isDayName(word) {
		return err.Error()
	}
	if _, _, e := parseCalendar(expr[:i], local); e != nil {
		return err.Error()
	}
	if word == strings.ToUpper(word) && len(word) <= 5 {
		return fmt.Sprintf("%q is not a time zone systemd knows: besides UTC it accepts only the local zone's abbreviations (here %s), so write a tz database name such as Europe/Berlin", word, strings.Join(uniq(localAbbrevs(local)), " and "))
	}
	return fmt.Sprintf("%q is not a time zone systemd knows; write UTC or a tz database name such as Europe/Berlin (case matters)", word)
}

func isDayName(word string) bool {
	for _, d := range dayNames {
		if strings.EqualFold(word, d.name) {
			return true
		}
	}
	return false
}

func uniq(names [2]string) []string {
	if names[0] == names[1] {
		return names[:1]
	}
	return names[:]
}

// cutZone removes a trailing zone from expr, as systemd does: " UTC" (any
// case), then the local zone's abbreviations, then a tz database name
// after the last space.
func (c *Calendar) cutZone(expr string, local *time.Location) string {
	lower := strings.ToLower(expr)
	if strings.HasSuffix(lower, " utc") {
		c.utc = true
		return expr[:len(expr)-4]
	}
	for j, name := range localAbbrevs(local) {
		n := len(name)
		if name != "" && len(expr) > n && strings.HasSuffix(lower, strings.ToLower(name)) && expr[len(expr)-n-1] == ' ' {
			c.dst, c.dstName, c.loc = j, name, local
			return expr[:len(expr)-n-1]
		}
	}
	if i := strings.LastIndexByte(expr, ' '); i >= 0 {
		if loc := loadZone(expr[i+1:]); loc != nil {
			c.zone, c.loc = expr[i+1:], loc
			return expr[:i]
		}
	}
	return expr
}

var zoneCache sync.Map // name → *time.Location, or nil when invalid

// loadZone returns the zone named name if systemd would accept it: a
// relative path of letters, digits and "-_+" in "/"-separated parts that
// names a tz database file.
func loadZone(name string) *time.Location {
	if v, ok := zoneCache.Load(name); ok {
		loc, _ := v.(*time.Location)
		return loc
	}
	var loc *time.Location
	if validZoneName(name) && name != "Local" {
		loc, _ = time.LoadLocation(name)
	}
	zoneCache.Store(name, loc)
	return loc
}

func validZoneName(name string) bool {
	if name == "" || len(name) > 255 || name[0] == '/' || name[len(name)-1] == '/' || strings.Contains(name, "//") {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_+/", r)) {
			return false
		}
	}
	return true
}

var abbrevCache sync.Map // *time.Location → [2]string

// localAbbrevs returns the abbreviations glibc puts in tzname[0] and
// tzname[1] for loc: the most recent standard and daylight-saving names.
func localAbbrevs(loc *time.Location) [2]string {
	if v, ok := abbrevCache.Load(loc); ok {
		return v.([2]string)
	}
	var names [2]string
	var seen [2]bool
	t := time.Now().In(loc)
	for i := 0; i < 2000 && !(seen[0] && seen[1]); i++ {
		name, _ := t.Zone()
		j := 0
		if t.IsDST() {
			j = 1
		}
		if !seen[j] {
			names[j], seen[j] = name, true
		}
		start, _ := t.ZoneBounds()
		if start.IsZero() {
			break
		}
		t = start.Add(-time.Second)
	}
	if !seen[1] {
		names[1] = names[0]
	}
	abbrevCache.Store(loc, names)
	return names
}

// normalize brings c into systemd's normalized form: sorted, deduplicated
// lists, ranges cut to a multiple of their step, four-digit years.
func (c *Calendar) normalize() {
	if c.weekdays == allDays {
		c.weekdays = 0
	}
	if c.endOfMonth && c.day == nil {
		c.endOfMonth = false
	}
	for i := range c.year {
		for _, v := range []*int{&c.year[i].start, &c.year[i].stop} {
			switch {
			case *v >= 0 && *v < 70:
				*v += 2000
			case *v >= 70 && *v < 100:
				*v += 1900
			}
		}
	}
	for _, ch := range []*[]comp{&c.year, &c.month, &c.day, &c.hour, &c.minute, &c.usec} {
		*ch = normalizeChain(*ch)
	}
}

func normalizeChain(ch []comp) []comp {
	for i := range ch {
		e := &ch[i]
		if e.stop > e.start && e.repeat > 0 {
			e.stop -= (e.stop - e.start) % e.repeat
		}
		// A step that never fires a second time, or a one-value range, is
		// a single value.
		if e.stop > e.start && e.repeat > 0 && e.start+e.repeat > e.stop || e.start == e.stop {
			e.repeat, e.stop = 0, -1
		}
	}
	slices.SortFunc(ch, func(a, b comp) int {
		if a.start != b.start {
			return a.start - b.start
		}
		if a.stop != b.stop {
			return a.stop - b.stop
		}
		return a.repeat - b.repeat
	})
	return slices.Compact(ch)
}

// fieldSpec describes one component for range checks and messages.
type fieldSpec struct {
	name     string
	from, to int
	usec     bool
}

// check applies systemd's range rules and returns what is wrong, or "".
func (c *Calendar) check() string {
	for _, f := range []struct {
		spec fieldSpec
		ch   []comp
		eom  bool
	}{
		{fieldSpec{"year", minYear, maxYear, false}, c.year, false},
		{fieldSpec{"month", 1, 12, false}, c.month, false},
		{fieldSpec{"day", 1, 31, false}, c.day, c.endOfMonth},
		{fieldSpec{"hour", 0, 23, false}, c.hour, false},
		{fieldSpec{"minute", 0, 59, false}, c.minute, false},
		{fieldSpec{"second", 0, 60*usecPerSec - 1, true}, c.usec, false},
	} {
		for i, e := range f.ch {
			if msg := f.spec.check(e, f.eom, i); msg != "" {
				return msg
			}
		}
	}
	return ""
}

func (f fieldSpec) num(v int) string {
	if !f.usec {
		return fmt.Sprint(v)
	}
	if v%usecPerSec == 0 {
		return fmt.Sprint(v / usecPerSec)
	}
	return strings.TrimRight(fmt.Sprintf("%d.%06d", v/usecPerSec, v%usecPerSec), "0")
}

// check checks element i (in sorted order) of a component list.
func (f fieldSpec) check(e comp, eom bool, i int) string {
	to := f.to
	what := f.name
	if eom {
		// systemd allows at most 28 days from the end of the month, and
		// 3 days less for each further element of the list (its check
		// lowers the limit again for every element).
		to -= 3 * (i + 1)
		what = "day counted from the end of the month (~)"
		if i > 0 {
			what = fmt.Sprintf("element %d of a ~ list (systemd allows 3 days less for each further element)", i+1)
		}
	}
	rng := fmt.Sprintf("%s-%s", f.num(f.from), f.num(to))
	switch {
	case e.start < f.from || e.start > to:
		hint := ""
		if f.name == "year" {
			hint = " (two-digit years 00-69 mean 2000-2069, 70-99 mean 1970-1999)"
		}
		return fmt.Sprintf("%s %s is out of range %s%s", what, f.num(e.start), rng, hint)
	case e.repeat > to-f.from:
		return fmt.Sprintf("%s step /%s is too large: at most %s", what, f.num(e.repeat), f.num(to-f.from))
	case e.stop >= 0 && (e.stop < f.from || e.stop > to):
		return fmt.Sprintf("%s %s is out of range %s", what, f.num(e.stop), rng)
	case e.stop >= 0 && e.start+e.repeat > e.stop:
		return fmt.Sprintf("%s range %s..%s is reversed: write the smaller value first", what, f.num(e.start), f.num(e.stop))
	case e.stop < 0 && eom && e.start-e.repeat < f.from:
		return fmt.Sprintf("%s ~%s/%s never repeats within a month: use a step below %s", what, f.num(e.start), f.num(e.repeat), f.num(e.start))
	case e.stop < 0 && !eom && e.start+e.repeat > to:
		return fmt.Sprintf("%s %s/%s never repeats: %s+%s is beyond %s; drop the step or make it smaller",
			what, f.num(e.start), f.num(e.repeat), f.num(e.start), f.num(e.repeat), f.num(to))
	}
	return ""
}

// String returns the expression c was parsed from.
func (c *Calendar) String() string { return c.expr }

// Normalized returns systemd's normalized form of c, as
// `systemd-analyze calendar` prints it.
func (c *Calendar) Normalized() string {
	var b strings.Builder
	if c.weekdays != 0 {
		b.WriteString(weekdays(uint64(c.weekdays)<<1 | uint64(c.weekdays)>>6))
		b.WriteByte(' ')
	}
	sep := byte('-')
	if c.endOfMonth {
		sep = '~'
	}
	b.WriteString(formatChain(c.year, 4, false))
	b.WriteByte('-')
	b.WriteString(formatChain(c.month, 2, false))
	b.WriteByte(sep)
	b.WriteString(formatChain(c.day, 2, false))
	b.WriteByte(' ')
	b.WriteString(formatChain(c.hour, 2, false))
	b.WriteByte(':')
	b.WriteString(formatChain(c.minute, 2, false))
	b.WriteByte(':')
	b.WriteString(formatChain(c.usec, 2, true))
	switch {
	case c.utc:
		b.WriteString(" UTC")
	case c.zone != "":
		b.WriteString(" " + c.zone)
	case c.dst >= 0:
		b.WriteString(" " + c.dstName)
	}
	return b.String()
}

func formatChain(ch []comp, width int, usec bool) string {
	d := 1
	if usec {
		d = usecPerSec
	}
	if ch == nil || usec && slices.Contains(ch, comp{0, -1, usecPerSec}) {
		return "*"
	}
	parts := make([]string, len(ch))
	for i, e := range ch {
		s := fmt.Sprintf("%0*d", width, e.start/d)
		if e.start%d > 0 {
			s += fmt.Sprintf(".%06d", e.start%d)
		}
		if e.stop > 0 {
			s += fmt.Sprintf("..%0*d", width, e.stop/d)
		}
		if e.stop%d > 0 {
			s += fmt.Sprintf(".%06d", e.stop%d)
		}
		if e.repeat > 0 && !(e.stop > 0 && e.repeat == d) {
			s += fmt.Sprintf("/%d", e.repeat/d)
		}
		if e.repeat%d > 0 {
			s += fmt.Sprintf(".%06d", e.repeat%d)
		}
		parts[i] = s
	}
	return strings.Join(parts, ",")
}

// epochChains sets c to the single UTC second t (an "@EPOCH" expression).
func (c *Calendar) epochChains(t time.Time) {
	one := func(v int) []comp { return []comp{{v, -1, 0}} }
	c.utc = true
	c.year, c.month, c.day = one(t.Year()), one(int(t.Month())), one(t.Day())
	c.hour, c.minute, c.usec = one(t.Hour()), one(t.Minute()), one(t.Second()*usecPerSec)
}

// maxEpoch is the last second of 2199 (UTC), the last one systemd accepts.
const maxEpoch = 7258118399
