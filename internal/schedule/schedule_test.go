package schedule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/testtool"
)

// tableCase is one entry of testdata/cases.json, the table shared by the Go
// and the Nix implementation: either OnCalendar (valid) or Error (a
// substring of Go's error message) is set.
type tableCase struct {
	Expr       string   `json:"expr"`
	OnCalendar []string `json:"onCalendar,omitempty"`
	Error      string   `json:"error,omitempty"`
}

func loadCases(t testing.TB) []tableCase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []tableCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("testdata/cases.json: %v", err)
	}
	for _, c := range cases {
		if (c.OnCalendar == nil) == (c.Error == "") {
			t.Fatalf("case %q: exactly one of onCalendar and error must be set", c.Expr)
		}
	}
	return cases
}

func TestTable(t *testing.T) {
	cases := loadCases(t)
	if len(cases) < 40 {
		t.Errorf("only %d cases in the table", len(cases))
	}
	for _, c := range cases {
		got, err := ToOnCalendar(c.Expr)
		switch {
		case c.Error != "" && err == nil:
			t.Errorf("ToOnCalendar(%q) = %q, want error containing %q", c.Expr, got, c.Error)
		case c.Error != "" && !strings.Contains(err.Error(), c.Error):
			t.Errorf("ToOnCalendar(%q) error = %q, want it to contain %q", c.Expr, err, c.Error)
		case c.Error == "" && err != nil:
			t.Errorf("ToOnCalendar(%q) error: %v", c.Expr, err)
		case c.Error == "" && !reflect.DeepEqual(got, c.OnCalendar):
			t.Errorf("ToOnCalendar(%q) = %q, want %q", c.Expr, got, c.OnCalendar)
		}
		if err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("ToOnCalendar(%q) error is not a single line: %q", c.Expr, err)
		}
	}
}

func TestIsCron(t *testing.T) {
	for expr, want := range map[string]bool{
		"0 0 * * *":               true,
		" \t0 0 * * *\n":          true,
		"@daily":                  true,
		"@whatever":               true,
		"*/5 1-3 1,2 jan mon-fri": true,
		"daily":                   false,
		"0 0 * *":                 false,
		"0 0 * * * *":             false,
		"*-*-* 03:30":             false,
		"Mon..Fri *-*-* 02:00:00": false,
		"0 0 * * 1.5":             false,
		"":                        false,
	} {
		if got := IsCron(expr); got != want {
			t.Errorf("IsCron(%q) = %v, want %v", expr, got, want)
		}
	}
}

func TestParseCronFieldCount(t *testing.T) {
	for _, expr := range []string{"", "daily", "0 0 * *", "0 0 * * * *"} {
		if _, err := ParseCron(expr); err == nil || !strings.Contains(err.Error(), "want 5") {
			t.Errorf("ParseCron(%q) error = %v, want wrong number of fields", expr, err)
		}
	}
}

func mustParse(t testing.TB, expr string) *Cron {
	t.Helper()
	c, err := ParseCron(expr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNext(t *testing.T) {
	for _, tc := range []struct{ expr, after, want string }{
		{"*/15 * * * *", "2024-01-01 00:00", "2024-01-01 00:15"},
		{"*/15 * * * *", "2024-01-01 00:14", "2024-01-01 00:15"},
		{"0 0 * * *", "2024-01-01 00:00", "2024-01-02 00:00"},
		{"@weekly", "2024-01-01 00:00", "2024-01-07 00:00"}, // 2024-01-01 is a Monday
		{"0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00"},
		{"0 0 13 * fri", "2024-01-01 00:00", "2024-01-05 00:00"}, // OR: Friday first
		{"0 0 13 * fri", "2024-01-06 00:00", "2024-01-12 00:00"},
		{"0 0 13 * fri", "2024-01-12 00:00", "2024-01-13 00:00"}, // OR: the 13th (a Saturday)
		{"0 0 13 * */5", "2024-01-01 00:00", "2024-09-13 00:00"}, // AND: */5 = Sun,Fri; Friday the 13th
		{"30 12 * * 7", "2024-01-01 00:00", "2024-01-07 12:30"},
	} {
		got := mustParse(t, tc.expr).Next(utc(tc.after))
		if want := utc(tc.want); !got.Equal(want) {
			t.Errorf("%q.Next(%s) = %s, want %s", tc.expr, tc.after, got, want)
		}
	}
	// Seconds are truncated: the next minute counts, not the current one.
	got := mustParse(t, "* * * * *").Next(utc("2024-01-01 10:00").Add(30 * time.Second))
	if want := utc("2024-01-01 10:01"); !got.Equal(want) {
		t.Errorf("Next = %s, want %s", got, want)
	}
}

func TestMatches(t *testing.T) {
	c := mustParse(t, "0 3 1,15 * sun")
	for s, want := range map[string]bool{
		"2024-01-01 03:00": true,  // the 1st (Monday)
		"2024-01-07 03:00": true,  // Sunday
		"2024-01-08 03:00": false, // neither
		"2024-01-07 03:01": false, // wrong minute
		"2024-01-15 04:00": false, // wrong hour
	} {
		if got := c.Matches(utc(s)); got != want {
			t.Errorf("Matches(%s) = %v, want %v", s, got, want)
		}
	}
}

// randomCron returns a random, often but not always valid, cron
// expression built from every syntax form the converter supports.
func randomCron(r *rand.Rand) string {
	type fld struct {
		lo, hi int
		names  []string
	}
	flds := []fld{{0, 59, nil}, {0, 23, nil}, {1, 31, nil},
		{1, 12, []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
		{0, 7, []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}}}
	var out []string
	for _, f := range flds {
		name := func(v int) string {
			if f.names != nil && r.Intn(3) == 0 && v-f.lo < len(f.names) {
				return f.names[v-f.lo]
			}
			return fmt.Sprint(v)
		}
		val := func() string { return name(f.lo + r.Intn(f.hi-f.lo+1)) }
		rng := func() string { // ordered, except now and then
			a, b := f.lo+r.Intn(f.hi-f.lo+1), f.lo+r.Intn(f.hi-f.lo+1)
			if a > b && r.Intn(10) != 0 {
				a, b = b, a
			}
			return name(a) + "-" + name(b)
		}
		if r.Intn(3) == 0 {
			out = append(out, []string{"*", "*/" + fmt.Sprint(1+r.Intn(f.hi))}[r.Intn(2)])
			continue
		}
		var elems []string
		for n := 1 + r.Intn(3); n > 0; n-- {
			switch r.Intn(4) {
			case 0:
				elems = append(elems, val())
			case 1:
				elems = append(elems, rng())
			case 2:
				elems = append(elems, rng()+"/"+fmt.Sprint(1+r.Intn(f.hi)))
			default:
				elems = append(elems, val()+"/"+fmt.Sprint(1+r.Intn(f.hi)))
			}
		}
		out = append(out, strings.Join(elems, ","))
	}
	return strings.Join(out, " ")
}

// randomCases returns n deterministic random expressions with Go's result.
func randomCases(n int) []tableCase {
	r := rand.New(rand.NewSource(1))
	var cases []tableCase
	for len(cases) < n {
		expr := randomCron(r)
		got, err := ToOnCalendar(expr)
		if err != nil {
			cases = append(cases, tableCase{Expr: expr, Error: err.Error()})
		} else {
			cases = append(cases, tableCase{Expr: expr, OnCalendar: got})
		}
	}
	return cases
}

// nixCheck is the Nix expression used by TestNix: it maps cron.nix over a
// table and returns the failures.
const nixCheck = `{ cronFile, casesFile }:
let
  cron = import cronFile;
  cases = builtins.fromJSON (builtins.readFile casesFile);
  check = c:
    let
      r = builtins.tryEval (let v = cron c.expr; in builtins.deepSeq v v);
    in
    if c ? error then
      (if r.success then [ { inherit (c) expr; want = "error: " + c.error; got = r.value; } ] else [ ])
    else if !r.success then
      [ { inherit (c) expr; want = c.onCalendar; got = "<throws>"; } ]
    else if r.value != c.onCalendar then
      [ { inherit (c) expr; want = c.onCalendar; got = r.value; } ]
    else
      [ ];
in
builtins.concatMap check cases
`

func runNix(t *testing.T, nix, casesFile string) {
	t.Helper()
	cronFile, err := filepath.Abs(filepath.Join("..", "..", "templates", "nix", "cron.nix"))
	if err != nil {
		t.Fatal(err)
	}
	if casesFile, err = filepath.Abs(casesFile); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nix, "--eval", "--strict", "--json",
		"--argstr", "cronFile", cronFile, "--argstr", "casesFile", casesFile, "-E", nixCheck)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s", err, stderr.String())
	}
	var failures []struct {
		Expr string `json:"expr"`
		Want any    `json:"want"`
		Got  any    `json:"got"`
	}
	if err := json.Unmarshal(out, &failures); err != nil {
		t.Fatalf("nix-instantiate output %q: %v", out, err)
	}
	for _, f := range failures {
		t.Errorf("cron.nix %q:\n   got %v\n  want %v", f.Expr, f.Got, f.Want)
	}
}

// TestNix checks that templates/nix/cron.nix agrees byte for byte with Go
// on the shared table (errors: Nix must throw; the message is checked on the
// Go side only) and on a few hundred random cron expressions.
func TestNix(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	cronFile := filepath.Join("..", "..", "templates", "nix", "cron.nix")
	src, err := os.ReadFile(cronFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(src, []byte("{{")) {
		t.Errorf("%s contains {{, which breaks the generator's template", cronFile)
	}
	t.Run("table", func(t *testing.T) {
		runNix(t, nix, filepath.Join("testdata", "cases.json"))
	})
	t.Run("random", func(t *testing.T) {
		data, err := json.Marshal(randomCases(300))
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "random.json")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		runNix(t, nix, file)
	})
}

// systemdBase is the fixed base time of the systemd comparison, chosen just
// before a leap day so that February's end is exercised.
var systemdBase = time.Date(2024, 2, 27, 13, 37, 0, 0, time.UTC)

const systemdIterations = 12

var elapseLine = regexp.MustCompile(`^\s*(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$`)

// systemdCalendar runs `systemd-analyze calendar` on one OnCalendar entry
// and returns its normalized form and its next elapses after systemdBase.
func systemdCalendar(t *testing.T, analyze, entry string) (string, []time.Time) {
	t.Helper()
	cmd := exec.Command(analyze, "calendar",
		"--base-time="+systemdBase.Format("2006-01-02 15:04:05 UTC"),
		fmt.Sprintf("--iterations=%d", systemdIterations), entry)
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C", "SYSTEMD_COLORS=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("systemd-analyze calendar %q: %v\n%s%s", entry, err, out, stderr.String())
		return "", nil
	}
	var normalized string
	var times []time.Time
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "Normalized form: "); ok {
			normalized = s
		}
		if m := elapseLine.FindStringSubmatch(line); m != nil {
			ts, err := time.Parse("2006-01-02 15:04:05", m[1])
			if err != nil {
				t.Fatal(err)
			}
			times = append(times, ts)
		}
	}
	return normalized, times
}

// compareWithSystemd checks that systemd, given Go's OnCalendar entries for
// expr, fires at exactly the minutes Cron.Next computes, and that every
// entry is already in systemd's normalized form.
func compareWithSystemd(t *testing.T, analyze, expr string, entries []string) {
	t.Helper()
	seen := map[time.Time]bool{}
	var merged []time.Time
	for _, e := range entries {
		normalized, times := systemdCalendar(t, analyze, e)
		if normalized != e {
			t.Errorf("%q: entry %q is normalized by systemd to %q", expr, e, normalized)
		}
		if len(times) == 0 {
			t.Errorf("%q: entry %q never elapses according to systemd", expr, e)
		}
		for _, ts := range times {
			if !seen[ts] {
				seen[ts] = true
				merged = append(merged, ts)
			}
		}
	}
	sort.Slice(merged, func(i, j int) bool { return merged[i].Before(merged[j]) })
	if len(merged) > systemdIterations {
		merged = merged[:systemdIterations]
	}
	c, err := ParseCron(expr)
	if err != nil {
		t.Fatal(err)
	}
	var want []time.Time
	for ts := systemdBase; len(want) < systemdIterations; {
		ts = c.Next(ts)
		if ts.IsZero() {
			break
		}
		want = append(want, ts)
	}
	if !reflect.DeepEqual(merged, want) {
		t.Errorf("%q %q:\n systemd fires at %s\n cron fires at    %s", expr, entries, fmtTimes(merged), fmtTimes(want))
	}
}

func fmtTimes(ts []time.Time) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Format("Mon 2006-01-02 15:04"))
	}
	return strings.Join(s, ", ")
}

// TestSystemd checks the conversion against real systemd: for every valid
// cron case (table and random) the first fire times of the union of the
// OnCalendar entries must equal cron's, and systemd must accept every
// calendar expression that is passed through. `systemd-analyze calendar`
// is a pure computation and needs no running systemd.
func TestSystemd(t *testing.T) {
	analyze := testtool.Require(t, "systemd-analyze", "systemd")
	cases := loadCases(t)
	random := randomCases(80)
	valid := 0
	for _, c := range random {
		if c.Error == "" {
			valid++
		}
	}
	if valid < 30 {
		t.Errorf("only %d of the random cases are valid", valid)
	}
	t.Logf("comparing %d table cases and %d valid random cron expressions with systemd", len(cases), valid)
	cases = append(cases, random...)
	for _, c := range cases {
		if c.Error != "" {
			continue
		}
		if !IsCron(c.Expr) {
			cmd := exec.Command(analyze, "calendar", c.OnCalendar[0])
			cmd.Env = append(os.Environ(), "TZ=UTC")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("systemd rejects pass-through calendar expression %q: %v\n%s", c.OnCalendar[0], err, out)
			}
			continue
		}
		compareWithSystemd(t, analyze, c.Expr, c.OnCalendar)
	}
}

func FuzzToOnCalendar(f *testing.F) {
	for _, c := range loadCases(f) {
		f.Add(c.Expr)
	}
	for _, s := range []string{"@", "*/", "-", ",", "0-", "a-b/c", "*/99999999999999999999 * * * *",
		"0 0 31 2 mon", "\x00", "\xff\xfe", "0 0 * * 7-7/7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		got, err := ToOnCalendar(expr)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("ToOnCalendar(%q) error is not a single line: %q", expr, err)
			}
			return
		}
		if len(got) == 0 {
			t.Fatalf("ToOnCalendar(%q) = empty list without error", expr)
		}
		for _, e := range got {
			if e == "" {
				t.Errorf("ToOnCalendar(%q) has an empty entry", expr)
			}
			if r, ok := firstControl(e); ok {
				t.Errorf("ToOnCalendar(%q) entry %q contains control character %U", expr, e, r)
			}
		}
		if IsCron(expr) {
			c, err := ParseCron(expr)
			if err != nil {
				t.Fatalf("ToOnCalendar(%q) succeeded but ParseCron failed: %v", expr, err)
			}
			if next := c.Next(systemdBase); next.IsZero() || !c.Matches(next) {
				t.Errorf("%q.Next = %v, which it does not match", expr, next)
			}
		}
	})
}
