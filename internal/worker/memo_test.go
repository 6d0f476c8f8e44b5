package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

// memoEnv runs real backups into one local destination, each at its own
// injected time, and records which kept archives retention and the shrink
// guard read in full (seams.keptHashed).
type memoEnv struct {
	*testEnv
	cfg  *config.Config
	dest string
	t0   time.Time

	mu     sync.Mutex
	hashed []string
}

func newMemoEnv(t *testing.T, keep int) *memoEnv {
	e := &memoEnv{testEnv: newTestEnv(t), t0: time.Date(2030, 3, 1, 3, 0, 0, 0, time.UTC)}
	e.dests = e.dests[:1]
	e.dest = e.dests[0]
	e.cfg = e.config(nil, func(m map[string]any) { backupSettings(m)["retentionSnapshots"] = keep })
	e.seams.keptHashed = func(dest, name string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if dest != e.dest {
			t.Errorf("hashed %s in %s, want destination %s", name, dest, e.dest)
		}
		e.hashed = append(e.hashed, name)
	}
	return e
}

// runAt runs a backup at t (its archive is named after t) and returns the
// kept archives it read in full, sorted, each once.
func (e *memoEnv) runAt(t time.Time, want int) []string {
	e.t.Helper()
	e.mu.Lock()
	e.hashed = nil
	e.mu.Unlock()
	e.logBuf = &syncBuffer{}
	r := e.runner(e.cfg)
	r.Now = func() time.Time { return t }
	if code := r.Run(context.Background()); code != want {
		e.t.Fatalf("run at %s: exit %d, want %d\n%s", t, code, want, e.logBuf.String())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// Each name once: a bad archive is read by the shrink guard and again
	// by retention (as before the memo).
	got := slices.Clone(e.hashed)
	slices.Sort(got)
	return slices.Compact(got)
}

func (e *memoEnv) name(t time.Time) string { return retention.FileName("app", "tar.gz", t) }

func (e *memoEnv) at(h int) time.Time { return e.t0.Add(time.Duration(h) * time.Hour) }

func (e *memoEnv) memoPath() string { return memoPath(e.stateDir, "app") }

// readMemo returns the memo's records by archive name.
func (e *memoEnv) readMemo() map[string]memoRecord {
	e.t.Helper()
	data, err := os.ReadFile(e.memoPath())
	if err != nil {
		e.t.Fatal(err)
	}
	var mf memoFile
	if err := json.Unmarshal(data, &mf); err != nil {
		e.t.Fatalf("memo: %v\n%s", err, data)
	}
	out := map[string]memoRecord{}
	for _, r := range mf.Records {
		out[r.Archive] = r
	}
	return out
}

// settle waits until files changed just now have a ctime memoCtimeMargin
// old: only then may a check record them (checkKeptLocal).
func settle() { time.Sleep(memoCtimeMargin) }

func wantHashed(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: read in full %q, want %q", what, got, want)
	}
}

// flipByte flips one byte in the middle of path in place (a write: mtime
// and ctime change, size and inode do not); with restoreMtime, the mtime
// is then set back (touch -d), which only root could undo for the ctime.
func flipByte(t *testing.T, path string, restoreMtime bool) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if restoreMtime {
		if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		if now, _ := os.Stat(path); !now.ModTime().Equal(fi.ModTime()) || now.Size() != fi.Size() {
			t.Fatalf("mtime or size not restored: %v %d", now.ModTime(), now.Size())
		}
	}
}

// TestMemoSecondRunReadsNothingAgain: archives verified by a run (the ones
// it committed, and older ones it checked in full) are not read again by
// the next runs while unchanged; retention still keeps and counts them.
func TestMemoSecondRunReadsNothingAgain(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	older := []string{e.name(e.at(-3)), e.name(e.at(-2))}
	for _, n := range older {
		e.writeSummedArchive(e.dest, n)
	}
	settle()
	// Run 0: the two older archives (not written by a run) are read once.
	wantHashed(t, "run 0", e.runAt(e.at(0), ExitOK), older...)
	for h := 1; h <= 3; h++ {
		wantHashed(t, "run "+e.at(h).Format(time.Kitchen), e.runAt(e.at(h), ExitOK))
	}
	got := archivesIn(t, e.dest, "tar.gz")
	slices.Sort(got)
	want := []string{e.name(e.at(1)), e.name(e.at(2)), e.name(e.at(3))}
	if !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	// The memo knows exactly what is there.
	recs := e.readMemo()
	if len(recs) != len(want) {
		t.Errorf("memo holds %d records, want %d: %v", len(recs), len(want), recs)
	}
	for _, n := range want {
		r, ok := recs[n]
		if !ok {
			t.Errorf("no record of %s", n)
			continue
		}
		f, err := os.Open(filepath.Join(e.dest, n))
		if err != nil {
			t.Fatal(err)
		}
		id, err := identityOf(f)
		f.Close()
		if err != nil || id != r.fileIdentity || r.Destination != e.dest {
			t.Errorf("%s: record %+v, file %+v (%v)", n, r, id, err)
		}
	}
}

// TestMemoRewrittenArchiveIsReadAgain: an archive the service user
// rewrote (a bit flip through write, with or without its mtime set back
// afterwards) is read again, found bad, kept as evidence and not counted.
func TestMemoRewrittenArchiveIsReadAgain(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	wantHashed(t, "run 0", e.runAt(e.at(0), ExitOK))
	wantHashed(t, "run 1", e.runAt(e.at(1), ExitOK))
	flipped, touched := e.name(e.at(0)), e.name(e.at(1))
	flipByte(t, filepath.Join(e.dest, flipped), false)
	flipByte(t, filepath.Join(e.dest, touched), true)
	for h := 2; h <= 3; h++ {
		// Both are read in every run (never recorded while bad) and
		// kept; only the good ones count, so none is pruned.
		got := e.runAt(e.at(h), ExitOK)
		wantHashed(t, "run "+e.at(h).Format(time.Kitchen), got, flipped, touched)
		log := e.logBuf.String()
		for _, n := range []string{flipped, touched} {
			if !strings.Contains(log, "archive failed its checksum check; kept as evidence and not counted for retention") ||
				!strings.Contains(log, "archive="+n+" error=\"SHA-256 mismatch") {
				t.Errorf("run %d: %s not reported bad:\n%s", h, n, log)
			}
			if _, ok := e.readMemo()[n]; ok {
				t.Errorf("run %d: bad %s has a record", h, n)
			}
		}
	}
	got := archivesIn(t, e.dest, "tar.gz")
	slices.Sort(got)
	want := []string{flipped, touched, e.name(e.at(2)), e.name(e.at(3))}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v (the bad ones as evidence)", got, want)
	}
}

// TestMemoRecordExpiresAfterSevenDays: a record older than memoMaxAge is
// not trusted (bit rot does not show in stat): the archive is read again,
// and the fresh record spares the next run.
func TestMemoRecordExpiresAfterSevenDays(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 0) // keep all
	day := 24 * time.Hour
	t0, t1, t2 := e.t0, e.t0.Add(6*day), e.t0.Add(8*day)
	wantHashed(t, "day 0", e.runAt(t0, ExitOK))
	wantHashed(t, "day 6: the day-0 record is 6 days old", e.runAt(t1, ExitOK))
	wantHashed(t, "day 8: the day-0 record is 8 days old", e.runAt(t2, ExitOK), e.name(t0))
	wantHashed(t, "day 8 + 1h", e.runAt(t2.Add(time.Hour), ExitOK))
	if r := e.readMemo()[e.name(t0)]; !r.Verified.Equal(t2) {
		t.Errorf("record of %s verified at %v, want %v", e.name(t0), r.Verified, t2)
	}
}

// TestMemoReplacedArchiveIsReadAgain: a file renamed over an archive (the
// same bytes, another inode) is read again.
func TestMemoReplacedArchiveIsReadAgain(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	wantHashed(t, "run 0", e.runAt(e.at(0), ExitOK))
	wantHashed(t, "run 1", e.runAt(e.at(1), ExitOK))
	victim := filepath.Join(e.dest, e.name(e.at(0)))
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(e.dest, "replacement")
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, victim); err != nil {
		t.Fatal(err)
	}
	settle()
	wantHashed(t, "run 2", e.runAt(e.at(2), ExitOK), e.name(e.at(0)))
	wantHashed(t, "run 3", e.runAt(e.at(3), ExitOK))
}

// TestMemoClaimDisagrees: a .sha256 rewritten to claim another SHA-256
// than the record's is not overruled by the memo: the archive is read, and
// reported bad.
func TestMemoClaimDisagrees(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	wantHashed(t, "run 0", e.runAt(e.at(0), ExitOK))
	n := e.name(e.at(0))
	other := bytes.Repeat([]byte{0xab}, 32)
	e.writeFile(filepath.Join(e.dest, n+".sha256"), []byte(checksumLine(other, n)), 0o640)
	wantHashed(t, "run 1", e.runAt(e.at(1), ExitOK), n)
	if !strings.Contains(e.logBuf.String(), "archive="+n+" error=\"SHA-256 mismatch") {
		t.Errorf("%s not reported bad:\n%s", n, e.logBuf.String())
	}
}

// TestMemoGarbageOrMissing: a memo that is garbage, of another version,
// not private, a symlink, or missing costs a full check, never a failure;
// the run then writes a good one, which spares the next run.
func TestMemoGarbageOrMissing(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 0) // keep all: every older archive is checked
	h := 0
	var all []string
	run := func(what string, wantRead []string) {
		t.Helper()
		wantHashed(t, what, e.runAt(e.at(h), ExitOK), wantRead...)
		all = append(all, e.name(e.at(h)))
		h++
	}
	run("first run", nil)
	run("second run", nil)
	good, err := os.ReadFile(e.memoPath())
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(e.root, "memo-elsewhere.json")
	if err := os.WriteFile(elsewhere, good, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what  string
		setup func()
	}{
		{"garbage", func() { os.WriteFile(e.memoPath(), []byte("{\"version\": 1, \"records\": [garb"), 0o600) }},
		{"another version", func() {
			os.WriteFile(e.memoPath(), bytes.Replace(good, []byte(`"version": 1`), []byte(`"version": 99`), 1), 0o600)
		}},
		{"readable by others", func() { os.WriteFile(e.memoPath(), good, 0o600); os.Chmod(e.memoPath(), 0o644) }},
		{"a symlink", func() { os.Remove(e.memoPath()); os.Symlink(elsewhere, e.memoPath()) }},
		{"missing", func() { os.Remove(e.memoPath()) }},
	} {
		c.setup()
		run(c.what, slices.Clone(all))
		if recs := e.readMemo(); len(recs) != len(all) {
			t.Errorf("%s: memo rewritten with %d records, want %d", c.what, len(recs), len(all))
		}
		run(c.what+", then rewritten", nil)
	}
}

// TestMemoFileIsPrivate: the memo is a regular file of root's, mode 0600,
// in the root-owned 0700 state directory: the service user can neither
// write it nor replace it.
func TestMemoFileIsPrivate(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	e.runAt(e.at(0), ExitOK)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{e.memoPath(), 0o600}, {e.stateDir, os.ModeDir | 0o700}} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != c.mode || int(st.Uid) != os.Geteuid() {
			t.Errorf("%s: mode %v uid %d, want %v uid %d", c.path, fi.Mode(), st.Uid, c.mode, os.Geteuid())
		}
	}
}

// TestMemoHandoverWrite: a write to the new archive in the moment between
// its hand-over to the service user (fchown) and its final name (through
// the temp name, mtime set back) keeps it out of the memo: the next run
// reads it and finds it bad.
func TestMemoHandoverWrite(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	e.runAt(e.at(0), ExitOK)
	e.seams.inCommit = func(tmp string) { flipByte(t, tmp, true) }
	e.runAt(e.at(1), ExitOK)
	e.seams.inCommit = nil
	n := e.name(e.at(1))
	if _, ok := e.readMemo()[n]; ok {
		t.Errorf("%s recorded although written during its commit", n)
	}
	wantHashed(t, "run 2", e.runAt(e.at(2), ExitOK), n)
	if !strings.Contains(e.logBuf.String(), "archive="+n+" error=\"SHA-256 mismatch") {
		t.Errorf("%s not reported bad:\n%s", n, e.logBuf.String())
	}
}

// TestMemoPruneCommand: `prune` records and uses the memo; `prune
// --dry-run` and `run --dry-run` may use it but never write it.
func TestMemoPruneCommand(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	cfgPath := filepath.Join(e.root, "config.json")
	e.runAt(e.at(0), ExitOK)
	e.runAt(e.at(1), ExitOK)
	// Replaced (another inode): its record no longer matches.
	victim := filepath.Join(e.dest, e.name(e.at(0)))
	data, _ := os.ReadFile(victim)
	e.writeFile(victim+".new", data, 0o640)
	if err := os.Rename(victim+".new", victim); err != nil {
		t.Fatal(err)
	}
	settle()
	before, _ := os.ReadFile(e.memoPath())
	if code, out, errOut := e.pruneOut(cfgPath, PruneOptions{DryRun: true}); code != ExitOK {
		t.Fatalf("prune --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	var out, errOut bytes.Buffer
	if code := e.runCmd(cfgPath, true, &out, &errOut); code != ExitOK {
		t.Fatalf("run --dry-run: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if after, _ := os.ReadFile(e.memoPath()); !bytes.Equal(before, after) {
		t.Errorf("a dry run changed the memo:\n%s\n->\n%s", before, after)
	}
	if code, out, errOut := e.pruneOut(cfgPath, PruneOptions{}); code != ExitOK {
		t.Fatalf("prune: exit %d\n%s%s", code, out, errOut)
	}
	f, _ := os.Open(victim)
	id, _ := identityOf(f)
	f.Close()
	if r := e.readMemo()[e.name(e.at(0))]; r.fileIdentity != id {
		t.Errorf("prune did not record the replaced archive: %+v, file %+v", r.fileIdentity, id)
	}
	// Without a memo, a dry run creates none.
	os.Remove(e.memoPath())
	e.pruneOut(cfgPath, PruneOptions{DryRun: true})
	e.runCmd(cfgPath, true, &out, &errOut)
	if _, err := os.Lstat(e.memoPath()); !os.IsNotExist(err) {
		t.Errorf("a dry run wrote the memo: %v", err)
	}
}

// TestMemoWritableMappingNotRecorded: an archive the service user has
// mapped writable while it is checked is not recorded: a write through an
// already dirty page of the mapping changes no time stamp, so after the
// check its content could change under an unchanged identity. The next
// run reads it, and finds it bad.
func TestMemoWritableMappingNotRecorded(t *testing.T) {
	t.Parallel()
	e := newMemoEnv(t, 3)
	n := e.name(e.at(-1))
	e.writeSignedArchive(e.dest, n, bytes.Repeat([]byte("archive\n"), 1024))
	f, err := os.OpenFile(filepath.Join(e.dest, n), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	b := mem[10]
	mem[10] = b // dirty the page, same content
	settle()
	wantHashed(t, "run 0", e.runAt(e.at(0), ExitOK), n)
	if _, ok := e.readMemo()[n]; ok {
		t.Errorf("%s recorded while mapped writable", n)
	}
	mem[10] ^= 0x01 // no page fault: the page is still dirty
	syscall.Munmap(mem)
	f.Close()
	wantHashed(t, "run 1", e.runAt(e.at(1), ExitOK), n)
	if !strings.Contains(e.logBuf.String(), "archive="+n+" error=\"SHA-256 mismatch") {
		t.Errorf("%s not reported bad:\n%s", n, e.logBuf.String())
	}
}

// TestMemoFreshCtimeNotRecorded: an archive changed (ctime) less than the
// margin before its check is trusted but not recorded; with its ctime
// older than the margin, it is.
func TestMemoFreshCtimeNotRecorded(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	dest := e.dests[0]
	n := "app-20300301T030000Z.tar.gz"
	e.writeSummedArchive(dest, n)
	l := &localDir{dir: dest, name: "app"}
	for _, c := range []struct {
		margin time.Duration
		record bool
	}{{time.Hour, false}, {0, true}} {
		m := &verifyMemo{now: time.Now, margin: c.margin, recs: map[memoKey]memoRecord{}}
		if _, ok := checkKeptLocal(context.Background(), e.key(), l, n, m); !ok {
			t.Fatalf("margin %v: %s not trusted", c.margin, n)
		}
		if _, ok := m.recs[memoKey{dest, n}]; ok != c.record {
			t.Errorf("margin %v: recorded %v, want %v", c.margin, ok, c.record)
		}
	}
}
