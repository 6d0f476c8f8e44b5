package worker

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
)

// destFixture is one fresh, empty Destination of service "app" and what the
// contract needs to look behind it.
type destFixture struct {
	dest Destination
	// names lists everything the store holds, ours or not, committed or
	// not (for a directory: its entries).
	names func(t *testing.T) []string
	// plant puts something that is not a plain archive under name: a
	// "fifo", a "symlink" to a file outside the store, or a plain "file"
	// of another service. It calls t.Skip if the store cannot hold one.
	plant func(t *testing.T, name, kind string)
}

// testDestinationContract is the contract every Destination must meet; run
// it on each implementation with a function that makes a fresh one.
func testDestinationContract(t *testing.T, newDest func(t *testing.T) destFixture) {
	ctx := context.Background()
	base := retention.FileName("app", "tar.gz", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	content := bytes.Repeat([]byte("archive bytes\n"), 10_000)

	t.Run("prepare and free space", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		if skip, err := f.dest.Prepare(ctx); skip || err != nil {
			t.Fatalf("Prepare = %v, %v", skip, err)
		}
		if avail, _, err := f.dest.FreeSpace(ctx); err != nil || avail == 0 {
			t.Fatalf("FreeSpace = %d, %v", avail, err)
		}
	})
	t.Run("uncommitted is invisible", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		up := writeUpload(t, f.dest, base, content)
		if err := up.Seal(ctx, []byte("sum\n"), []byte("sig\n")); err != nil {
			t.Fatal(err)
		}
		assertNoArchive(t, f, base)
		if err := up.Abort(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("commit publishes archive, checksum and signature", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		commitArchive(t, f.dest, base, content)
		list, err := f.dest.List(ctx)
		if err != nil || len(list) != 1 || list[0].Name != base || list[0].Format != "tar.gz" {
			t.Fatalf("List = %+v, %v", list, err)
		}
		if got := readAll(t, f.dest, base); !bytes.Equal(got, content) {
			t.Fatalf("Open returned %d bytes, want the %d committed", len(got), len(content))
		}
		want := []string{base, base + ".sha256", base + ".sig"}
		if got := f.names(t); !sameSet(got, want) {
			t.Fatalf("store holds %q, want %q", got, want)
		}
	})
	t.Run("commit never overwrites", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		commitArchive(t, f.dest, base, content)
		up := writeUpload(t, f.dest, base, []byte("the second archive"))
		if err := up.Seal(ctx, []byte("sum2\n"), []byte("sig2\n")); err != nil {
			t.Fatal(err)
		}
		if err := up.Commit(ctx); err == nil {
			t.Fatal("a second archive under the same name was committed")
		}
		if err := up.Abort(); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, f.dest, base); !bytes.Equal(got, content) {
			t.Fatal("the committed archive changed")
		}
		want := []string{base, base + ".sha256", base + ".sig"}
		if got := f.names(t); !sameSet(got, want) {
			t.Fatalf("store holds %q, want %q", got, want)
		}
	})
	t.Run("a committed name is taken, an uncommitted one is not", func(t *testing.T) {
		// What preflight's pickName asks every destination: two runs in
		// one second must pick distinct names in every store.
		t.Parallel()
		f := newDest(t)
		commitArchive(t, f.dest, base, content)
		next := retention.FileName("app", "tar.gz", time.Date(2030, 1, 2, 3, 4, 6, 0, time.UTC))
		up := writeUpload(t, f.dest, next, content)
		defer up.Abort()
		names, err := takenNames(ctx, f.dest)
		if err != nil || !names[base] || names[next] {
			t.Fatalf("takenNames = %v, %v: want %s taken, %s free", names, err, base, next)
		}
		rn := &run{Runner: &Runner{Now: func() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) }},
			cfg: &config.Config{Name: "app", Backup: config.Backup{Format: "tar.gz"}},
			log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if got := rn.pickName(ctx, []*destination{{dir: f.dest.String(), store: f.dest}}); got != next {
			t.Fatalf("pickName = %s, want %s (%s is committed)", got, next, base)
		}
	})
	t.Run("abort leaves nothing", func(t *testing.T) {
		t.Parallel()
		for _, sealed := range []bool{false, true} {
			f := newDest(t)
			up := writeUpload(t, f.dest, base, content)
			if sealed {
				if err := up.Seal(ctx, []byte("sum\n"), []byte("sig\n")); err != nil {
					t.Fatal(err)
				}
			}
			if err := up.Abort(); err != nil {
				t.Fatal(err)
			}
			if err := up.Abort(); err != nil {
				t.Fatalf("second Abort: %v", err)
			}
			if got := f.names(t); len(got) != 0 {
				t.Fatalf("sealed=%v: store holds %q after Abort", sealed, got)
			}
		}
	})
	t.Run("commit without seal fails and publishes nothing", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		up := writeUpload(t, f.dest, base, content)
		if err := up.Commit(ctx); err == nil {
			t.Fatal("committed without checksum and signature")
		}
		if err := up.Abort(); err != nil {
			t.Fatal(err)
		}
		if got := f.names(t); len(got) != 0 {
			t.Fatalf("store holds %q", got)
		}
	})
	t.Run("remove removes archive and side files", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		commitArchive(t, f.dest, base, content)
		if err := f.dest.Remove(ctx, base); err != nil {
			t.Fatal(err)
		}
		if got := f.names(t); len(got) != 0 {
			t.Fatalf("store holds %q after Remove", got)
		}
	})
	t.Run("clean stale removes only our uncommitted archives", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		commitArchive(t, f.dest, base, content)
		other := retention.FileName("other", "tar.gz", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
		f.plant(t, other, "file")
		f.plant(t, "notes.txt", "file")
		// A killed run: written and sealed, never committed nor aborted.
		killed := writeUpload(t, f.dest, retention.FileName("app", "tar.gz", time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC)), content)
		if err := killed.Seal(ctx, []byte("sum\n"), []byte("sig\n")); err != nil {
			t.Fatal(err)
		}
		if err := f.dest.CleanStale(ctx); err != nil {
			t.Fatal(err)
		}
		want := []string{base, base + ".sha256", base + ".sig", other, "notes.txt"}
		if got := f.names(t); !sameSet(got, want) {
			t.Fatalf("store holds %q after CleanStale, want %q", got, want)
		}
		killed.Abort()
	})
	for _, kind := range []string{"fifo", "symlink"} {
		t.Run("planted "+kind+" is refused", func(t *testing.T) {
			t.Parallel()
			f := newDest(t)
			f.plant(t, base, kind)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if list, err := f.dest.List(ctx); err != nil || len(list) != 0 {
					t.Errorf("List = %+v, %v; want nothing", list, err)
				}
				if r, err := f.dest.Open(ctx, base); err == nil {
					r.Close()
					t.Error("Open accepted it")
				}
				if err := f.dest.Remove(ctx, base); err == nil {
					t.Error("Remove accepted it")
				}
				if err := f.dest.CleanStale(ctx); err != nil {
					t.Error(err)
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("blocked on the planted " + kind)
			}
			if got := f.names(t); !slices.Equal(got, []string{base}) {
				t.Fatalf("store holds %q, want the planted %s left alone", got, kind)
			}
		})
	}
	t.Run("copier copies from a committed source", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		src := writeUpload(t, f.dest, base, content)
		srcCopier, ok := src.(Copier)
		if !ok {
			src.Abort()
			t.Skip("no Copier capability")
		}
		other := retention.FileName("app", "tar.gz", time.Date(2030, 1, 3, 0, 0, 0, 0, time.UTC))
		dst, err := f.dest.Create(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		k1, ok1 := srcCopier.StoreKey()
		k2, ok2 := dst.(Copier).StoreKey()
		if !ok1 || !ok2 || k1 != k2 {
			t.Fatalf("two uploads in one store have keys %q/%v and %q/%v", k1, ok1, k2, ok2)
		}
		cs, err := srcCopier.CopySource()
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		// The source stays readable after its upload is committed.
		if err := src.Seal(ctx, []byte("sum\n"), []byte("sig\n")); err != nil {
			t.Fatal(err)
		}
		if err := src.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := dst.(Copier).CopyFrom(ctx, cs, int64(len(content))); err != nil {
			t.Fatal(err)
		}
		if err := dst.Seal(ctx, []byte("sum\n"), []byte("sig\n")); err != nil {
			t.Fatal(err)
		}
		if err := dst.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, f.dest, other); !bytes.Equal(got, content) {
			t.Fatal("the copy differs from its source")
		}
	})
	t.Run("foreign names are refused", func(t *testing.T) {
		t.Parallel()
		f := newDest(t)
		f.plant(t, "notes.txt", "file")
		if r, err := f.dest.Open(ctx, "notes.txt"); err == nil {
			r.Close()
			t.Error("Open accepted a name that is not an archive of the service")
		}
		if err := f.dest.Remove(ctx, "notes.txt"); err == nil {
			t.Error("Remove accepted a name that is not an archive of the service")
		}
		if _, err := f.dest.Create(ctx, "../escape.tar.gz"); err == nil {
			t.Error("Create accepted a name that is not an archive of the service")
		}
	})
}

// writeUpload creates an upload of base and writes data to it.
func writeUpload(t *testing.T, d Destination, base string, data []byte) Upload {
	t.Helper()
	up, err := d.Create(context.Background(), base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Writer().Write(data); err != nil {
		t.Fatal(err)
	}
	r, n, err := up.Stored(context.Background())
	if err != nil || n != int64(len(data)) {
		t.Fatalf("Stored = %d, %v; want %d bytes", n, err, len(data))
	}
	if ru, ok := up.(remoteUpload); ok && r == nil {
		// Not readable before Commit: it proves it sent what it was
		// given (Commit checks the object; "commit publishes" reads it
		// back).
		if err := ru.SentIntact(); err != nil {
			t.Fatalf("SentIntact: %v", err)
		}
		return up
	}
	got := make([]byte, n)
	if _, err := r.ReadAt(got, 0); err != nil && err != io.EOF || !bytes.Equal(got, data) {
		t.Fatalf("Stored returned other bytes (%v)", err)
	}
	return up
}

// commitArchive writes, seals and commits base.
func commitArchive(t *testing.T, d Destination, base string, data []byte) {
	t.Helper()
	up := writeUpload(t, d, base, data)
	if err := up.Seal(context.Background(), []byte(checksumLine(make([]byte, 32), base)), []byte("sig\n")); err != nil {
		t.Fatal(err)
	}
	if err := up.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// readAll opens name and reads it through ReadAt.
func readAll(t *testing.T, d Destination, name string) []byte {
	t.Helper()
	r, err := d.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertNoArchive: base is neither listed nor openable.
func assertNoArchive(t *testing.T, f destFixture, base string) {
	t.Helper()
	if list, err := f.dest.List(context.Background()); err != nil || len(list) != 0 {
		t.Fatalf("List = %+v, %v; want nothing", list, err)
	}
	if r, err := f.dest.Open(context.Background(), base); err == nil {
		r.Close()
		t.Fatal("an uncommitted archive could be opened under its final name")
	}
	if slices.Contains(f.names(t), base) {
		t.Fatal("an uncommitted archive has its final name")
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestLocalDirContract runs the Destination contract on a local directory.
func TestLocalDirContract(t *testing.T) {
	t.Parallel()
	testDestinationContract(t, newLocalFixture)
}

func newLocalFixture(t *testing.T) destFixture {
	root := t.TempDir()
	dir := filepath.Join(root, "dest")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	s := &seams{}
	s.withDefaults()
	d := &localDir{dir: dir, name: "app", owner: owner{uid: -1, gid: -1}, seams: s,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	return dirFixture(d, dir, filepath.Join(root, "outside"))
}

// dirFixture is the fixture of a destination whose archives lie in dir on
// this machine (a local directory, or the directory an SFTP server serves):
// names lists dir, plant puts another tool's entries there; a planted
// symlink points at outside, a file with content that must never be read.
func dirFixture(d Destination, dir, outside string) destFixture {
	return destFixture{
		dest: d,
		names: func(t *testing.T) []string {
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, e := range entries {
				out = append(out, e.Name())
			}
			return out
		},
		plant: func(t *testing.T, name, kind string) {
			p := filepath.Join(dir, name)
			var err error
			switch kind {
			case "fifo":
				err = syscall.Mkfifo(p, 0o600)
			case "symlink":
				target := outside
				if err = os.WriteFile(target, []byte(strings.Repeat("secret\n", 10)), 0o600); err == nil {
					err = os.Symlink(target, p)
				}
			case "file":
				err = os.WriteFile(p, []byte("not ours\n"), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		},
	}
}
