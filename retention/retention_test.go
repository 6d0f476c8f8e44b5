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
		keep, remove := Plan(in, p, now)

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
		if len(keep) < min(max(p.MinKeep, 1), len(in)) {
			t.Fatalf("policy %+v: kept %d of %d, below MinKeep", p, len(keep), len(in))
		}
		// The newest archive, and the newest MinKeep non-future ones, stay.
		sorted := slices.Clone(in)
		sortNewestFirst(sorted)
		if len(sorted) > 0 && removed[sorted[0].Name] {
			t.Fatalf("policy %+v: newest %s removed", p, sorted[0].Name)
		}
		var past []Archive
		for _, a := range sorted {
			if a.Time.After(now) {
				if removed[a.Name] {
					t.Fatalf("future archive %s removed", a.Name)
				}
				continue
			}
			past = append(past, a)
		}
		for i := 0; i < min(max(p.MinKeep, 1), len(past)); i++ {
			if removed[past[i].Name] {
				t.Fatalf("policy %+v: %s within MinKeep removed", p, past[i].Name)
			}
		}
		for _, name := range p.Protect {
			if removed[name] {
				t.Fatalf("protected %s removed", name)
			}
		}
		// Nothing younger than MaxAge is removed unless ranked beyond KeepLast.
		for rank, a := range sorted {
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
