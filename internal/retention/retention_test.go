package retention

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var now = time.Date(2024, 6, 15, 12, 0, 0, 0, time.UTC)

func at(daysAgo float64) time.Time {
	return now.Add(-time.Duration(daysAgo * float64(24*time.Hour)))
}

func arch(daysAgo float64) Archive {
	t := at(daysAgo)
	return Archive{Name: FileName("app", "tar.gz", t), Time: t}
}

func bad(a Archive) Archive  { a.Check = Bad; return a }
func good(a Archive) Archive { a.Check = Good; return a }

func names(as []Archive) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Name)
	}
	return out
}

func TestPlanTable(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name       string
		in         []Archive
		policy     Policy
		wantRemove []Archive
	}{
		{"empty", nil, Policy{MaxAge: day, KeepLast: 1, MinKeep: 1}, nil},
		{"no limits keeps all", []Archive{arch(0), arch(100), arch(1000)}, Policy{MinKeep: 1}, nil},
		{"max age", []Archive{arch(0), arch(5), arch(8), arch(30)}, Policy{MaxAge: 7 * day, MinKeep: 1},
			[]Archive{arch(8), arch(30)}},
		{"exactly max age is kept", []Archive{arch(0), arch(7)}, Policy{MaxAge: 7 * day, MinKeep: 1}, nil},
		{"keep last", []Archive{arch(3), arch(1), arch(2), arch(0)}, Policy{KeepLast: 2, MinKeep: 1},
			[]Archive{arch(2), arch(3)}},
		{"min keep beats max age", []Archive{arch(10), arch(20), arch(30)}, Policy{MaxAge: day, MinKeep: 2},
			[]Archive{arch(30)}},
		{"min keep beats keep last", []Archive{arch(0), arch(1), arch(2), arch(3)}, Policy{KeepLast: 1, MinKeep: 3},
			[]Archive{arch(3)}},
		{"min keep zero counts as one", []Archive{arch(10), arch(20)}, Policy{MaxAge: day, MinKeep: 0},
			[]Archive{arch(20)}},
		{"future archives kept and do not count for min keep",
			[]Archive{arch(-2), arch(10), arch(20)}, Policy{MaxAge: day, MinKeep: 1},
			[]Archive{arch(20)}},
		{"future archives count for keep last",
			[]Archive{arch(-2), arch(0), arch(1), arch(2)}, Policy{KeepLast: 2, MinKeep: 1},
			[]Archive{arch(1), arch(2)}},
		{"protected kept", []Archive{arch(-1), arch(0), arch(1), arch(2)},
			Policy{KeepLast: 1, MinKeep: 1, Protect: []string{arch(2).Name}},
			[]Archive{arch(1)}},
		{"keep last and max age combine", []Archive{arch(0), arch(1), arch(2), arch(9)},
			Policy{KeepLast: 3, MaxAge: 7 * day, MinKeep: 1}, []Archive{arch(9)}},

		// Integrity: a bad archive is never removed and never counts.
		{"newest bad: older good one satisfies min keep and keep last",
			[]Archive{bad(arch(0)), arch(1)}, Policy{KeepLast: 1, MinKeep: 1}, nil},
		{"newest bad: the one after the good one goes",
			[]Archive{bad(arch(0)), arch(1), arch(2)}, Policy{KeepLast: 1, MinKeep: 1}, []Archive{arch(2)}},
		{"bad archives never removed, even very old",
			[]Archive{arch(0), bad(arch(50)), bad(arch(400))}, Policy{KeepLast: 1, MaxAge: day, MinKeep: 1}, nil},
		{"all bad: nothing removed",
			[]Archive{bad(arch(0)), bad(arch(1)), bad(arch(2))}, Policy{KeepLast: 1, MaxAge: day, MinKeep: 1}, nil},
		{"bad archives do not use up keep last",
			[]Archive{arch(0), bad(arch(1)), arch(2), arch(3)}, Policy{KeepLast: 2, MinKeep: 1}, []Archive{arch(3)}},
		{"min keep counts good ones only",
			[]Archive{bad(arch(0)), bad(arch(1)), arch(10), arch(20), arch(30)}, Policy{MaxAge: day, MinKeep: 2},
			[]Archive{arch(30)}},

		// Clock skew: the run's clock set back or forward.
		{"clock set back: every archive in the future, none removed",
			[]Archive{arch(-400), arch(-399), arch(-398)}, Policy{KeepLast: 1, MaxAge: day, MinKeep: 1}, nil},
		{"clock set back: only the run's own archive in the past",
			[]Archive{arch(-400), arch(-399), good(arch(0))}, Policy{KeepLast: 1, MaxAge: day, MinKeep: 1}, nil},
		{"clock set forward: min keep still holds",
			[]Archive{arch(4000), arch(4001), arch(4002), arch(4003)}, Policy{MaxAge: day, MinKeep: 2},
			[]Archive{arch(4002), arch(4003)}},
		{"future archive and bad newest past one: older good kept",
			[]Archive{arch(-30), bad(arch(0)), arch(1), arch(2)}, Policy{KeepLast: 1, MaxAge: day, MinKeep: 1},
			[]Archive{arch(2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keep, remove := Plan(tt.in, tt.policy, now)
			if !slices.Equal(names(remove), names(tt.wantRemove)) {
				t.Errorf("remove = %v, want %v", names(remove), names(tt.wantRemove))
			}
			if len(keep)+len(remove) != len(tt.in) {
				t.Errorf("keep %d + remove %d != %d", len(keep), len(remove), len(tt.in))
			}
		})
	}
}

// TestPlanInvariants checks properties that must hold for any input.
func TestPlanInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 5000; iter++ {
		n := rng.IntN(15)
		seen := map[string]bool{}
		var in []Archive
		for len(in) < n {
			// Mostly the past, some future (clock skew), whole seconds.
			secs := rng.Int64N(200*86400) - 10*86400
			tm := now.Add(-time.Duration(secs) * time.Second).Truncate(time.Second)
			a := Archive{Name: FileName("app", "tar.gz", tm), Time: tm}
			// Integrity: mostly unknown, some already known.
			switch rng.IntN(6) {
			case 0:
				a.Check = Bad
			case 1:
				a.Check = Good
			}
			if seen[a.Name] {
				continue
			}
			seen[a.Name] = true
			in = append(in, a)
		}
		p := Policy{
			MaxAge:   time.Duration(rng.IntN(60)) * 24 * time.Hour,
			KeepLast: rng.IntN(6),
			MinKeep:  rng.IntN(5),
		}
		if len(in) > 0 && rng.IntN(3) == 0 {
			p.Protect = []string{in[rng.IntN(len(in))].Name}
		}
		// Verify answers from a hidden truth, and records what it was asked.
		truth := map[string]bool{}
		for _, a := range in {
			truth[a.Name] = a.Check == Good || (a.Check == Unchecked && rng.IntN(4) != 0)
		}
		verified := map[string]bool{}
		var asked []Archive
		p.Verify = func(a Archive) bool {
			if verified[a.Name] {
				t.Fatalf("%s verified twice", a.Name)
			}
			if a.Check != Unchecked {
				t.Fatalf("%s verified although already %v", a.Name, a.Check)
			}
			verified[a.Name] = true
			asked = append(asked, a)
			return truth[a.Name]
		}
		keep, remove := Plan(in, p, now)
		p.Verify = nil // for %+v
		isBad := func(a Archive) bool {
			return a.Check == Bad || (verified[a.Name] && !truth[a.Name])
		}

		// keep ∪ remove = input, disjoint.
		all := append(names(keep), names(remove)...)
		slices.Sort(all)
		want := names(in)
		slices.Sort(want)
		if !slices.Equal(all, want) {
			t.Fatalf("policy %+v: keep ∪ remove != input (or not disjoint)\nin=%v\nkeep=%v\nremove=%v", p, want, names(keep), names(remove))
		}
		removed := map[string]bool{}
		for _, a := range remove {
			removed[a.Name] = true
		}
		// Nothing kept counts unverified: every kept archive was known
		// good, or verified (and then counts only if it passed), or bad.
		for _, a := range keep {
			orig := in[slices.IndexFunc(in, func(b Archive) bool { return b.Name == a.Name })]
			if orig.Check == Unchecked && !verified[a.Name] {
				t.Fatalf("policy %+v: %s kept without being verified", p, a.Name)
			}
		}
		if len(keep) < min(max(p.MinKeep, 1), len(in)) {
			t.Fatalf("policy %+v: kept %d of %d, below MinKeep", p, len(keep), len(in))
		}
		// The newest archive, and the newest MinKeep non-future ones, stay.
		sorted := slices.Clone(in)
		sortNewestFirst(sorted)
		if len(sorted) > 0 && removed[sorted[0].Name] {
			t.Fatalf("policy %+v: newest %s removed", p, sorted[0].Name)
		}
		var goodPast []Archive // not in the future and not known bad
		for _, a := range sorted {
			if a.Time.After(now) {
				if removed[a.Name] {
					t.Fatalf("future archive %s removed", a.Name)
				}
				continue
			}
			if !isBad(a) {
				goodPast = append(goodPast, a)
			}
		}
		// The newest MinKeep archives that are not bad stay, and none of the
		// archives newer than them (good or bad) is removed.
		minKeep := max(p.MinKeep, 1)
		for i := 0; i < min(minKeep, len(goodPast)); i++ {
			if removed[goodPast[i].Name] {
				t.Fatalf("policy %+v: %s within MinKeep removed", p, goodPast[i].Name)
			}
		}
		keptGood := 0
		for _, a := range keep {
			if !a.Time.After(now) && !isBad(a) {
				keptGood++
			}
		}
		if keptGood < min(minKeep, len(goodPast)) {
			t.Fatalf("policy %+v: %d good archives kept, want at least %d", p, keptGood, min(minKeep, len(goodPast)))
		}
		// Bad archives are never removed, and their state is reported.
		for _, a := range remove {
			if isBad(a) {
				t.Fatalf("policy %+v: bad archive %s removed", p, a.Name)
			}
		}
		for _, a := range keep {
			if isBad(a) != (a.Check == Bad) {
				t.Fatalf("%s: Check=%v in the result, bad=%v", a.Name, a.Check, isBad(a))
			}
		}
		// Lazy: archives are verified newest first, and an archive that is
		// removed was never read.
		for i := 1; i < len(asked); i++ {
			if !asked[i].Time.Before(asked[i-1].Time) {
				t.Fatalf("verified out of order: %s after %s", asked[i].Name, asked[i-1].Name)
			}
		}
		for _, a := range remove {
			if verified[a.Name] {
				t.Fatalf("policy %+v: %s verified, then removed", p, a.Name)
			}
		}
		for _, name := range p.Protect {
			if removed[name] {
				t.Fatalf("protected %s removed", name)
			}
		}
		// Nothing younger than MaxAge is removed unless ranked beyond KeepLast
		// (bad archives do not take a rank).
		rank := -1
		for _, a := range sorted {
			if !isBad(a) {
				rank++
			}
			if !removed[a.Name] {
				continue
			}
			tooOld := p.MaxAge > 0 && now.Sub(a.Time) > p.MaxAge
			beyondLast := p.KeepLast > 0 && rank >= p.KeepLast
			if !tooOld && !beyondLast {
				t.Fatalf("policy %+v: %s removed though neither too old nor beyond KeepLast", p, a.Name)
			}
		}
		// With no limits nothing is removed.
		if p.MaxAge == 0 && p.KeepLast == 0 && len(remove) > 0 {
			t.Fatalf("no limits but removed %v", names(remove))
		}
	}
}

// TestPlanVerifiesLazily: Plan reads every archive it keeps and counts
// (the future one included: it takes a KeepLast rank), and none of those it
// removes anyway.
func TestPlanVerifiesLazily(t *testing.T) {
	in := []Archive{arch(-1), arch(0), arch(1), arch(2), arch(3), arch(4), arch(5)}
	var asked []string
	corrupt := arch(1).Name
	p := Policy{KeepLast: 3, MinKeep: 2, Verify: func(a Archive) bool {
		asked = append(asked, a.Name)
		return a.Name != corrupt
	}}
	keep, remove := Plan(in, p, now)
	// arch(-1) is in the future (good), arch(0) good, arch(1) bad, arch(2)
	// good: three ranks taken, nothing older is read.
	if want := []string{arch(-1).Name, arch(0).Name, arch(1).Name, arch(2).Name}; !slices.Equal(asked, want) {
		t.Errorf("verified %v, want %v", asked, want)
	}
	// Ranks (bad skipped): -1→0, 0→1, 2→2, 3→3 (beyond KeepLast 3).
	if want := []string{arch(3).Name, arch(4).Name, arch(5).Name}; !slices.Equal(names(remove), want) {
		t.Errorf("remove = %v, want %v", names(remove), want)
	}
	for _, a := range keep {
		want := map[string]Check{arch(-1).Name: Good, arch(0).Name: Good, arch(1).Name: Bad, arch(2).Name: Good}[a.Name]
		if a.Check != want {
			t.Errorf("%s: Check = %v, want %v", a.Name, a.Check, want)
		}
	}
	// Already known good (the run's own archive): not read again.
	asked = nil
	Plan([]Archive{good(arch(0)), arch(1), arch(2)}, Policy{KeepLast: 1, MinKeep: 1, Verify: p.Verify}, now)
	if len(asked) != 0 {
		t.Errorf("verified %v, want nothing", asked)
	}
}

// TestPlanCorruptDoNotCount: the run's own archive is good, the two before
// it are corrupt, an older one is good. With KeepLast 2 the older good one
// must stay: the corrupt ones take no rank. (Plan used to stop verifying
// once MinKeep good archives were found, ranked the corrupt ones as good
// and removed the only older good archive.)
func TestPlanCorruptDoNotCount(t *testing.T) {
	in := []Archive{good(arch(0)), arch(1), arch(2), arch(3), arch(4)}
	bad := map[string]bool{arch(1).Name: true, arch(2).Name: true}
	p := Policy{KeepLast: 2, MinKeep: 1, Verify: func(a Archive) bool { return !bad[a.Name] }}
	keep, remove := Plan(in, p, now)
	if want := []string{arch(0).Name, arch(1).Name, arch(2).Name, arch(3).Name}; !slices.Equal(names(keep), want) {
		t.Errorf("keep = %v, want %v", names(keep), want)
	}
	if want := []string{arch(4).Name}; !slices.Equal(names(remove), want) {
		t.Errorf("remove = %v, want %v", names(remove), want)
	}
}

// TestPlanFutureUntrustedTakesNoRank: archives dated in the future are
// verified too, so planted future-dated files cannot push real archives
// beyond KeepLast.
func TestPlanFutureUntrustedTakesNoRank(t *testing.T) {
	in := []Archive{arch(-2), arch(-1), arch(0), arch(1), arch(2)}
	p := Policy{KeepLast: 2, MinKeep: 1, Verify: func(a Archive) bool { return !a.Time.After(now) }}
	_, remove := Plan(in, p, now)
	if want := []string{arch(2).Name}; !slices.Equal(names(remove), want) {
		t.Errorf("remove = %v, want %v", names(remove), want)
	}
}

func TestPlanDoesNotModifyInput(t *testing.T) {
	in := []Archive{arch(5), arch(1), arch(3)}
	before := names(in)
	Plan(in, Policy{KeepLast: 1}, now)
	if !slices.Equal(before, names(in)) {
		t.Fatalf("input reordered: %v -> %v", before, names(in))
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		base string
		ok   bool
	}{
		{"app-20240615T120000Z.tar.gz", true},
		{"app-db-20240615T120000Z.tar.gz", false},
		{"app-20240615T120000Z.tar.gz.sha256", false},
		{"app-20240615T120000Z.tar.zst", false},
		{"app-20241315T120000Z.tar.gz", false}, // month 13
		{"app-20240615T120000.tar.gz", false},
		{"xapp-20240615T120000Z.tar.gz", false},
		{".app-20240615T120000Z.tar.gz.tmp-abc", false},
		{"app-20240615T120000Z-20240615T120000Z.tar.gz", false},
		{"app-20240615T120000Zxtar.gz", false},
	}
	for _, tt := range tests {
		tm, ok := ParseName("app", "tar.gz", tt.base)
		if ok != tt.ok {
			t.Errorf("ParseName(%q) ok=%v, want %v", tt.base, ok, tt.ok)
		}
		if ok && !tm.Equal(time.Date(2024, 6, 15, 12, 0, 0, 0, time.UTC)) {
			t.Errorf("ParseName(%q) = %v", tt.base, tm)
		}
	}
	// A dot in the service name is literal, not "any character".
	if _, ok := ParseName("a.b", "tar.gz", "axb-20240615T120000Z.tar.gz"); ok {
		t.Error("dot in name matched another character")
	}
}

func TestScanOnlyOwnRegularFiles(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	own := []string{"app-20240101T000000Z.tar.gz", "app-20240102T000000Z.tar.gz"}
	for _, n := range own {
		touch(n)
	}
	touch("app-db-20240101T000000Z.tar.gz")     // other service, name prefix
	touch("app-20240101T000000Z.tar.gz.sha256") // checksum
	touch("notes.txt")
	touch("app-20240103T000000Z.tar.xz") // other format
	if err := os.Mkdir(filepath.Join(dir, "app-20240104T000000Z.tar.gz"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, own[0]), filepath.Join(dir, "app-20240105T000000Z.tar.gz")); err != nil {
		t.Fatal(err)
	}
	got, err := Scan(dir, "app", "tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{own[1], own[0]}
	if !slices.Equal(names(got), want) {
		t.Fatalf("Scan = %v, want %v", names(got), want)
	}
}
