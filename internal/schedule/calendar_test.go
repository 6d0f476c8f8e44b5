package schedule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/testtool"
)

var update = flag.Bool("update", false, "rewrite normalized forms and next elapses in testdata/calendar.json from the Go parser (TestCalendarSystemd then checks them against systemd)")

// calendarCase is one row of testdata/calendar.json, the table of systemd
// calendar expressions shared by the Go parser and real systemd: either
// Error (a substring of Go's message; systemd must refuse it too) or
// Normalized and Next (the first elapses after Base, UTC; empty: never).
type calendarCase struct {
	Expr string `json:"expr"`
	// TZ is the machine's local zone (default UTC); Base the time the
	// elapses are computed from (default calendarBase).
	TZ         string   `json:"tz,omitempty"`
	Base       string   `json:"base,omitempty"`
	Normalized string   `json:"normalized,omitempty"`
	Next       []string `json:"next,omitempty"`
	Error      string   `json:"error,omitempty"`
	Why        string   `json:"why,omitempty"`
}

const calendarBase = "2024-02-27T13:37:00Z"

// calendarIterations is how many elapses each valid row lists.
const calendarIterations = 4

const calendarFile = "testdata/calendar.json"

func loadCalendar(t testing.TB) []calendarCase {
	t.Helper()
	data, err := os.ReadFile(calendarFile)
	if err != nil {
		t.Fatal(err)
	}
	var cases []calendarCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("%s: %v", calendarFile, err)
	}
	return cases
}

func (c calendarCase) zone(t testing.TB) *time.Location {
	if c.TZ == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(c.TZ)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func (c calendarCase) base(t testing.TB) time.Time {
	s := c.Base
	if s == "" {
		s = calendarBase
	}
	b, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goElapses returns the first n elapses of cal after base, as the table
// writes them.
func goElapses(cal *Calendar, base time.Time, loc *time.Location, n int) []string {
	var out []string
	for t := base; len(out) < n; {
		t = cal.Next(t, loc)
		if t.IsZero() {
			break
		}
		out = append(out, t.UTC().Format(time.RFC3339Nano))
	}
	return out
}

// TestCalendarTable checks ParseCalendar, Normalized and Next against the
// table, and that ToOnCalendar refuses every expression systemd refuses.
func TestCalendarTable(t *testing.T) {
	cases := loadCalendar(t)
	if len(cases) < 80 {
		t.Errorf("only %d cases in %s", len(cases), calendarFile)
	}
	for i, c := range cases {
		loc := c.zone(t)
		cal, err := ParseCalendarIn(c.Expr, loc)
		if c.Error != "" {
			if err == nil {
				t.Errorf("ParseCalendar(%q) = %s, want error containing %q", c.Expr, cal.Normalized(), c.Error)
			} else if !strings.Contains(err.Error(), c.Error) {
				t.Errorf("ParseCalendar(%q) error = %q, want it to contain %q", c.Expr, err, c.Error)
			}
			if strings.TrimSpace(c.Expr) == c.Expr && c.TZ == "" {
				if got, err := ToOnCalendar(c.Expr); err == nil {
					t.Errorf("ToOnCalendar(%q) = %q, want an error: systemd refuses it", c.Expr, got)
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCalendar(%q): %v", c.Expr, err)
			continue
		}
		got := goElapses(cal, c.base(t), loc, calendarIterations)
		if *update {
			cases[i].Normalized, cases[i].Next = cal.Normalized(), got
			continue
		}
		if n := cal.Normalized(); n != c.Normalized {
			t.Errorf("%q normalized = %q, want %q", c.Expr, n, c.Normalized)
		}
		if !slices.Equal(got, c.Next) {
			t.Errorf("%q (tz %s) next after %s:\n   got %q\n  want %q", c.Expr, loc, c.base(t).Format(time.RFC3339), got, c.Next)
		}
	}
	if *update {
		data, err := json.MarshalIndent(cases, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(calendarFile, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var (
	normalizedLine = regexp.MustCompile(`^\s*Normalized form: (.*)$`)
	// With TZ=UTC systemd prints elapses in UTC; otherwise each is
	// followed by an "(in UTC)" line.
	elapseUTC = regexp.MustCompile(`^\s*(?:Next elapse|Iter\. #\d+|\(in UTC\)): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$`)
)

// analyzeCalendar runs `systemd-analyze calendar` in zone tz and returns
// its normalized form and elapses (UTC, whole seconds), or ok=false when
// systemd refuses the expression.
func analyzeCalendar(t *testing.T, analyze, expr, tz string, base time.Time, n int) (normalized string, next []string, ok bool) {
	t.Helper()
	if tz == "" {
		tz = "UTC"
	}
	cmd := exec.Command(analyze, "calendar", "--base-time="+base.UTC().Format("2006-01-02 15:04:05.000000 UTC"),
		fmt.Sprintf("--iterations=%d", n), "--", expr)
	cmd.Env = append(os.Environ(), "TZ="+tz, "LC_ALL=C", "SYSTEMD_COLORS=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// systemd gives up after 1000 search steps ("Infinite loop in calendar
	// calculation"): the expression is valid but has no next elapse (and
	// systemd prints no normalized form then).
	gaveUp := strings.Contains(stderr.String(), "Failed to determine next elapse")
	if err != nil && !gaveUp {
		if !strings.Contains(stderr.String(), "Failed to parse calendar specification") {
			t.Errorf("systemd-analyze calendar %q: %v\n%s", expr, err, stderr.String())
		}
		return "", nil, false
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := normalizedLine.FindStringSubmatch(sc.Text()); m != nil {
			normalized = m[1]
		}
		if m := elapseUTC.FindStringSubmatch(sc.Text()); m != nil {
			ts, err := time.Parse("2006-01-02 15:04:05", m[1])
			if err != nil {
				t.Fatal(err)
			}
			next = append(next, ts.UTC().Format(time.RFC3339))
		}
	}
	return normalized, next, true
}

func truncSeconds(t *testing.T, ts []string) []string {
	var out []string
	for _, s := range ts {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v.Truncate(time.Second).Format(time.RFC3339))
	}
	return out
}

// TestCalendarSystemd checks the whole table against the real systemd:
// systemd refuses exactly the rows with an error, and for the others it
// prints the same normalized form and the same elapses (to the second,
// which is what it prints).
func TestCalendarSystemd(t *testing.T) {
	analyze := testtool.Require(t, "systemd-analyze", "systemd")
	for _, c := range loadCalendar(t) {
		normalized, next, ok := analyzeCalendar(t, analyze, c.Expr, c.TZ, c.base(t), calendarIterations)
		switch {
		case c.Error != "" && ok:
			t.Errorf("systemd accepts %q (normalized %q), but the table says it refuses it", c.Expr, normalized)
		case c.Error == "" && !ok:
			t.Errorf("systemd refuses %q, but the table says it is valid", c.Expr)
		case c.Error == "":
			if normalized != c.Normalized && normalized != "" {
				t.Errorf("%q: systemd normalizes to %q, the table says %q", c.Expr, normalized, c.Normalized)
			}
			if want := truncSeconds(t, c.Next); !slices.Equal(next, want) {
				t.Errorf("%q (tz %s): systemd elapses at\n  %q\n the table says\n  %q", c.Expr, c.TZ, next, want)
			}
		}
	}
}

// TestCalendarRandomSystemd compares Go and systemd on random expressions
// built from every piece of the grammar, valid or not: in UTC, and in
// Europe/Berlin just before the clocks go back (the repeated hour).
func TestCalendarRandomSystemd(t *testing.T) {
	analyze := testtool.Require(t, "systemd-analyze", "systemd")
	t.Run("UTC", func(t *testing.T) { randomSystemd(t, analyze, "UTC", calendarBase, 2) })
	t.Run("Berlin", func(t *testing.T) { randomSystemd(t, analyze, "Europe/Berlin", "2024-10-26T23:50:00Z", 3) })
}

func randomSystemd(t *testing.T, analyze, tz, baseTime string, seed int64) {
	base, _ := time.Parse(time.RFC3339, baseTime)
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	r := newRand(seed)
	valid := 0
	for i := 0; i < 120; i++ {
		expr := randomCalendar(r)
		cal, err := ParseCalendarIn(expr, loc)
		normalized, next, ok := analyzeCalendar(t, analyze, expr, tz, base, 3)
		if (err == nil) != ok {
			t.Errorf("%q: Go error %v, systemd accepts: %v", expr, err, ok)
			continue
		}
		if err != nil {
			continue
		}
		valid++
		if cal.Normalized() != normalized && normalized != "" {
			t.Errorf("%q: Go normalizes to %q, systemd to %q", expr, cal.Normalized(), normalized)
		}
		if got := truncSeconds(t, goElapses(cal, base, loc, 3)); !slices.Equal(got, next) {
			t.Errorf("%q: Go elapses at %q, systemd at %q", expr, got, next)
		}
	}
	t.Logf("%d of 120 random expressions valid", valid)
	if valid < 30 {
		t.Errorf("only %d random expressions are valid", valid)
	}
}

// FuzzCalendar: parsing never panics, the normalized form parses to
// itself, and Next moves forward.
func FuzzCalendar(f *testing.F) {
	for _, c := range loadCalendar(f) {
		f.Add(c.Expr)
	}
	base, _ := time.Parse(time.RFC3339, calendarBase)
	f.Fuzz(func(t *testing.T, expr string) {
		cal, err := ParseCalendarIn(expr, time.UTC)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("ParseCalendar(%q) error is not one line: %q", expr, err)
			}
			return
		}
		n := cal.Normalized()
		again, err := ParseCalendarIn(n, time.UTC)
		if err != nil {
			t.Fatalf("normalized form %q of %q does not parse: %v", n, expr, err)
		}
		if again.Normalized() != n {
			t.Errorf("%q normalizes to %q, which normalizes to %q", expr, n, again.Normalized())
		}
		if next := cal.Next(base, time.UTC); !next.IsZero() && !next.After(base) {
			t.Errorf("%q: Next(%s) = %s, not after it", expr, base, next)
		}
	})
}

func newRand(seed int64) *rand.Rand { return rand.New(rand.NewSource(seed)) }

// randomCalendar returns a random calendar expression, often valid, built
// from every piece of systemd's grammar.
func randomCalendar(r *rand.Rand) string {
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	num := func(lo, hi int) string { return fmt.Sprint(lo + r.Intn(hi-lo+1)) }
	elem := func(lo, hi int) string {
		switch r.Intn(5) {
		case 0:
			return num(lo, hi) + ".." + num(lo, hi)
		case 1:
			return num(lo, hi) + "/" + num(1, (hi-lo)/2+1)
		case 2:
			return num(lo, hi) + ".." + num(lo, hi) + "/" + num(1, 5)
		default:
			return num(lo, hi)
		}
	}
	chain := func(lo, hi int) string {
		if r.Intn(3) == 0 {
			return "*"
		}
		var es []string
		for n := 1 + r.Intn(3); n > 0; n-- {
			es = append(es, elem(lo, hi))
		}
		return strings.Join(es, ",")
	}
	if r.Intn(12) == 0 {
		return pick("minutely", "hourly", "daily", "weekly", "monthly", "quarterly", "semiannually", "yearly", "Weekly", "annually daily")
	}
	var parts []string
	if r.Intn(3) == 0 {
		days := []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "monday", "FRIDAY"}
		var ws []string
		for n := 1 + r.Intn(3); n > 0; n-- {
			w := pick(days...)
			if r.Intn(2) == 0 {
				w += pick("..", "-") + pick(days...)
			}
			ws = append(ws, w)
		}
		parts = append(parts, strings.Join(ws, ","))
	}
	if r.Intn(3) != 0 {
		date := chain(1, 12) + pick("-", "-", "~") + chain(1, 31)
		if r.Intn(2) == 0 {
			date = pick("*", "2024", "2025..2030", "24", "2199", "2200") + "-" + date
		}
		parts = append(parts, date)
	}
	if r.Intn(4) != 0 {
		tm := chain(0, 24) + ":" + chain(0, 60)
		if r.Intn(2) == 0 {
			sec := chain(0, 60)
			if r.Intn(3) == 0 {
				sec = num(0, 59) + "." + num(0, 999999)
			}
			tm += ":" + sec
		}
		parts = append(parts, tm)
	}
	if len(parts) == 0 {
		parts = append(parts, "*:0/"+num(1, 40))
	}
	if r.Intn(4) == 0 {
		parts = append(parts, pick("UTC", "utc", "Europe/Berlin", "America/New_York", "Nowhere/Else"))
	}
	return strings.Join(parts, " ")
}
