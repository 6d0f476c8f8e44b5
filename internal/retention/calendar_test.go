package retention

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/plan.golden")

// goldenNow is a Tuesday, 2026-12-01, so the histories below cross a month,
// an ISO week and (case "year boundary") a year.
var goldenNow = time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)

// every returns one archive per step from goldenNow-3h back over span,
// skipping the steps skip says.
func every(step, span time.Duration, skip func(time.Time) bool) []Archive {
	var out []Archive
	for t := goldenNow.Add(-3 * time.Hour); goldenNow.Sub(t) <= span; t = t.Add(-step) {
		if skip == nil || !skip(t) {
			out = append(out, Archive{Name: FileName("app", "tar.gz", t), Time: t})
		}
	}
	return out
}

func atTime(s string, c Check) Archive {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return Archive{Name: FileName("app", "tar.gz", t), Time: t, Check: c}
}

type goldenCase struct {
	name    string
	in      []Archive
	policy  Policy
	badName map[string]bool // Verify says these are bad
}

const day = 24 * time.Hour

func keepN(h, d, w, m, y int) [NumPeriods]int { return [NumPeriods]int{h, d, w, m, y} }

func goldenCases() []goldenCase {
	daily := every(day, 200*day, nil)
	return []goldenCase{
		{name: "daily backups, keepDaily 7 keepWeekly 4 keepMonthly 6 (the example)", in: daily,
			policy: Policy{MinKeep: 1, Keep: keepN(0, 7, 4, 6, 0)}},
		{name: "daily backups, retentionSnapshots 3 with keepMonthly 2", in: daily[:70],
			policy: Policy{MinKeep: 1, KeepLast: 3, Keep: keepN(0, 0, 0, 2, 0)}},
		{name: "hourly backups, keepHourly 6 keepDaily 3", in: every(time.Hour, 4*day, nil),
			policy: Policy{MinKeep: 1, Keep: keepN(6, 3, 0, 0, 0)}},
		{name: "gaps: no backups on weekends, keepDaily 7 counts days that have one",
			in: every(day, 21*day, func(t time.Time) bool {
				return t.Weekday() == time.Saturday || t.Weekday() == time.Sunday
			}),
			policy: Policy{MinKeep: 1, Keep: keepN(0, 7, 0, 0, 0)}},
		{name: "backups stopped 40 days ago, keepDaily 7 maxRetentionDays 30 minKeep 2",
			in:     every(day, 60*day, func(t time.Time) bool { return goldenNow.Sub(t) < 40*day }),
			policy: Policy{MinKeep: 2, MaxAge: 30 * day, Keep: keepN(0, 7, 0, 0, 0)}},
		{name: "year boundary: ISO week 2026-W01 starts on 2025-12-29, keepWeekly 3 keepYearly 3",
			in: []Archive{
				atTime("2026-11-30T03:00:00Z", Unchecked), atTime("2026-01-02T03:00:00Z", Unchecked),
				atTime("2026-01-01T03:00:00Z", Unchecked), atTime("2025-12-31T03:00:00Z", Unchecked),
				atTime("2025-12-29T03:00:00Z", Unchecked), atTime("2025-12-28T03:00:00Z", Unchecked),
				atTime("2024-06-01T03:00:00Z", Unchecked), atTime("2023-06-01T03:00:00Z", Unchecked),
			},
			policy: Policy{MinKeep: 1, Keep: keepN(0, 0, 3, 0, 3)}},
		{name: "corrupt, untrusted and future archives with keepDaily 3",
			in: []Archive{
				atTime("2026-12-05T03:00:00Z", Unchecked), // future
				atTime("2026-12-01T03:00:00Z", Good), atTime("2026-11-30T23:00:00Z", Unchecked),
				atTime("2026-11-30T03:00:00Z", Unchecked), atTime("2026-11-29T03:00:00Z", Bad),
				atTime("2026-11-28T03:00:00Z", Unchecked), atTime("2026-11-27T03:00:00Z", Unchecked),
			},
			badName: map[string]bool{FileName("app", "tar.gz", time.Date(2026, 11, 30, 23, 0, 0, 0, time.UTC)): true},
			policy:  Policy{MinKeep: 1, Keep: keepN(0, 3, 0, 0, 0)}},
		{name: "no calendar rule: retentionSnapshots 5 and maxRetentionDays 3, as before", in: daily[:10],
			policy: Policy{MinKeep: 1, KeepLast: 5, MaxAge: 3 * day}},
		{name: "protected run archive and minKeep 4 with keepWeekly 2", in: every(12*time.Hour, 30*day, nil),
			policy: Policy{MinKeep: 4, Keep: keepN(0, 0, 2, 0, 0), Protect: []string{FileName("app", "tar.gz", goldenNow.Add(-3*time.Hour))}}},
	}
}

func renderPlan(c goldenCase) string {
	p := c.policy
	p.Verify = func(a Archive) bool { return !c.badName[a.Name] }
	keep, remove := Plan(c.in, p, goldenNow)
	all := append(slices.Clone(keep), remove...)
	sortNewestFirst(all)
	removed := map[string]bool{}
	for _, a := range remove {
		removed[a.Name] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\npolicy: %s\n", c.name, c.policy)
	for _, a := range all {
		verb := "keep  "
		if removed[a.Name] {
			verb = "remove"
		}
		fmt.Fprintf(&b, "%s %s %s: %s\n", verb, a.Time.Format("2006-01-02T15Z"), a.Time.Weekday().String()[:3], strings.Join(a.Why, "; "))
	}
	return b.String()
}

// TestPlanGolden: a table of mixed histories and policies, and what Plan
// keeps and removes and why (testdata/plan.golden; -update rewrites it).
func TestPlanGolden(t *testing.T) {
	var b strings.Builder
	for i, c := range goldenCases() {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(renderPlan(c))
	}
	path := filepath.Join("testdata", "plan.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; run go test ./internal/retention -update", err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("plan differs from %s; run go test ./internal/retention -update and review the diff:\n%s", path, got)
	}
}

// calendarOracle returns, by brute force over the good archives not dated
// in the future, the newest archive of each of the newest n periods of
// each calendar rule.
func calendarOracle(good []Archive, keep [NumPeriods]int) map[string][]string {
	sel := map[string][]string{}
	for _, p := range Periods {
		newest := map[string]Archive{}
		var keys []string
		for _, a := range good {
			k := p.Key(a.Time)
			if b, ok := newest[k]; !ok || a.Time.After(b.Time) {
				if !ok {
					keys = append(keys, k)
				}
				newest[k] = a
			}
		}
		// Keys sort like times, but ISO week-years do not sort with their
		// calendar year at the boundary: order by the newest archive.
		slices.SortFunc(keys, func(x, y string) int { return newest[y].Time.Compare(newest[x].Time) })
		for i, k := range keys {
			if i < keep[p] {
				sel[newest[k].Name] = append(sel[newest[k].Name], p.String()+" "+k)
			}
		}
	}
	return sel
}

// TestPlanCalendarInvariants: random histories (hourly to yearly spread,
// some corrupt, some in the future) and random policies. Plan never
// removes the newest verified archive or anything a rule keeps that is not
// older than MaxAge; it is idempotent and does not depend on input order;
// every result says why.
func TestPlanCalendarInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	spans := []time.Duration{6 * time.Hour, 3 * day, 40 * day, 400 * day, 3000 * day}
	for iter := 0; iter < 3000; iter++ {
		span := spans[rng.IntN(len(spans))]
		seen := map[string]bool{}
		var in []Archive
		for n := rng.IntN(40); len(in) < n; {
			tm := goldenNow.Add(time.Duration(rng.Int64N(int64(span)+int64(span/20))) - span).Truncate(time.Second)
			a := Archive{Name: FileName("app", "tar.gz", tm), Time: tm}
			if rng.IntN(8) == 0 {
				a.Check = Good
			}
			if !seen[a.Name] {
				seen[a.Name] = true
				in = append(in, a)
			}
		}
		truth := map[string]bool{}
		for _, a := range in {
			truth[a.Name] = a.Check == Good || rng.IntN(6) != 0
		}
		p := Policy{MinKeep: rng.IntN(4), KeepLast: rng.IntN(3) * rng.IntN(4)}
		for _, per := range Periods {
			if rng.IntN(2) == 0 {
				p.Keep[per] = rng.IntN(6)
			}
		}
		if rng.IntN(3) == 0 {
			p.MaxAge = time.Duration(rng.Int64N(int64(span)))
		}
		if len(in) > 0 && rng.IntN(3) == 0 {
			p.Protect = []string{in[rng.IntN(len(in))].Name}
		}
		verified := map[string]bool{}
		p.Verify = func(a Archive) bool { verified[a.Name] = true; return truth[a.Name] }
		keep, remove := Plan(in, p, goldenNow)
		checkCalendarPlan(t, in, p, keep, remove, truth, verified)

		// Order-independent: a shuffled input gives the same plan.
		shuffled := slices.Clone(in)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		keep2, remove2 := Plan(shuffled, p, goldenNow)
		if !slices.Equal(names(keep), names(keep2)) || !slices.Equal(names(remove), names(remove2)) {
			t.Fatalf("policy %v: order changes the plan", p)
		}
		// Idempotent: planning again over what was kept removes nothing.
		again, removedAgain := Plan(keep, p, goldenNow)
		if len(removedAgain) > 0 {
			t.Fatalf("policy %v: second plan removes %v\nfirst kept %v", p, names(removedAgain), names(keep))
		}
		if !slices.Equal(names(again), names(keep)) {
			t.Fatalf("policy %v: second plan keeps %v, first %v", p, names(again), names(keep))
		}
	}
}

func checkCalendarPlan(t *testing.T, in []Archive, p Policy, keep, remove []Archive, truth, verified map[string]bool) {
	t.Helper()
	removed := map[string]bool{}
	for _, a := range remove {
		removed[a.Name] = true
		if len(a.Why) == 0 {
			t.Fatalf("%s removed without a reason", a.Name)
		}
		if verified[a.Name] && !truth[a.Name] {
			t.Fatalf("policy %v: bad %s removed", p, a.Name)
		}
	}
	for _, a := range keep {
		if len(a.Why) == 0 {
			t.Fatalf("%s kept without a reason", a.Name)
		}
	}
	if len(keep)+len(remove) != len(in) {
		t.Fatalf("keep+remove = %d, input %d", len(keep)+len(remove), len(in))
	}
	sorted := slices.Clone(in)
	sortNewestFirst(sorted)
	// The good past archives as the rules see them: an archive never
	// verified was removed without being needed; treat it by its truth.
	var good []Archive
	for _, a := range sorted {
		if !a.Time.After(goldenNow) && truth[a.Name] {
			good = append(good, a)
		}
	}
	if len(good) > 0 && removed[good[0].Name] {
		t.Fatalf("policy %v: newest verified archive %s removed", p, good[0].Name)
	}
	tooOld := func(a Archive) bool { return p.MaxAge > 0 && goldenNow.Sub(a.Time) > p.MaxAge }
	for name, why := range calendarOracle(good, p.Keep) {
		a := sorted[slices.IndexFunc(sorted, func(b Archive) bool { return b.Name == name })]
		if removed[name] && !tooOld(a) {
			t.Fatalf("policy %v: %s removed though %v keeps it\nkeep=%v", p, name, why, names(keep))
		}
	}
	rank := 0
	for _, a := range sorted {
		if !truth[a.Name] && verified[a.Name] {
			continue
		}
		if p.KeepLast > 0 && rank < p.KeepLast && removed[a.Name] && !tooOld(a) {
			t.Fatalf("policy %v: %s within last %d removed", p, a.Name, p.KeepLast)
		}
		rank++
	}
	for i := 0; i < min(max(p.MinKeep, 1), len(good)); i++ {
		if removed[good[i].Name] {
			t.Fatalf("policy %v: %s within minKeep removed", p, good[i].Name)
		}
	}
}

// TestPlanCalendarVerifiesBeforeTakingAPeriod: the newest archive of a day
// is corrupt, so the next one of that day keeps the day.
func TestPlanCalendarVerifiesBeforeTakingAPeriod(t *testing.T) {
	in := []Archive{
		atTime("2026-12-01T03:00:00Z", Good),
		atTime("2026-11-30T22:00:00Z", Unchecked), // corrupt
		atTime("2026-11-30T10:00:00Z", Unchecked),
		atTime("2026-11-30T02:00:00Z", Unchecked),
		atTime("2026-11-29T02:00:00Z", Unchecked),
	}
	corrupt := in[1].Name
	keep, remove := Plan(in, Policy{MinKeep: 1, Keep: keepN(0, 2, 0, 0, 0), Verify: func(a Archive) bool { return a.Name != corrupt }}, goldenNow)
	if want := []string{in[0].Name, in[1].Name, in[2].Name}; !slices.Equal(names(keep), want) {
		t.Errorf("keep = %v, want %v", names(keep), want)
	}
	if want := []string{in[3].Name, in[4].Name}; !slices.Equal(names(remove), want) {
		t.Errorf("remove = %v, want %v", names(remove), want)
	}
	if got := strings.Join(keep[2].Why, ";"); got != "daily 2026-11-30" {
		t.Errorf("why %s = %q", keep[2].Name, got)
	}
}
