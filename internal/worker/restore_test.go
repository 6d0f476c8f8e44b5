package worker

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/testtool"
	kgzip "github.com/klauspost/compress/gzip"
)

// forged is one entry of an archive the service user could plant.
type forged struct {
	hdr  tar.Header
	body []byte
}

// plantTarGz writes a tar.gz named like the service's archives into dir
// (a destination, which the service user can write).
func plantTarGz(t *testing.T, dir string, entries []forged) string {
	t.Helper()
	var buf bytes.Buffer
	zw := kgzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = h.ChangeTime
		}
		noErr(t, tw.WriteHeader(&h))
		if len(e.body) > 0 {
			_, err := tw.Write(e.body)
			noErr(t, err)
		}
	}
	noErr(t, tw.Close())
	noErr(t, zw.Close())
	noErr(t, os.MkdirAll(dir, 0o755))
	p := filepath.Join(dir, "app-20991231T235959Z.tar.gz")
	noErr(t, os.WriteFile(p, buf.Bytes(), 0o644))
	return p
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func fdir(name string) forged {
	return forged{hdr: tar.Header{Name: archive.EntryName(name) + "/", Typeflag: tar.TypeDir, Mode: 0o755}}
}

// restoreCmd is `backup-worker restore --config PATH ...`: exit code,
// stdout, stderr. The archives here are forged by the test, so unsigned:
// restore gets --trust-unsigned, as an admin who chose to trust one would
// give it. These tests prove that even then an archive cannot plant
// privileges or escape its target; the signature check itself is tested
// in destsec_test.go (TestPlantedArchiveUntrusted).
func (e *testEnv) restoreCmd(path string, opts RestoreOptions) (int, string, string) {
	e.t.Helper()
	opts.TrustUnsigned = true
	return e.logged(e.restoreStrict(path, opts))
}

// serviceUserEnv: a test world whose service user is nobody:nogroup, so
// files owned by the service user are told apart from root's.
func serviceUserEnv(t *testing.T) (*testEnv, string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: restores owners and runs a file as nobody")
	}
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfg := e.configFile([]string{"app.service"}, func(m map[string]any) {
		m["user"], m["group"] = "nobody", "nogroup"
	})
	return e, cfg
}

// TestRestoreForgedSetuidAndDevices: an archive the service user planted
// in a destination holds a setuid-root copy of id(1), a setgid file and
// device nodes. Neither `restore --yes` nor `restore --target` creates a
// setuid/setgid file or a device node, and the planted binary, run as
// nobody, does not get euid 0. With --allow-special (the admin's explicit
// choice) they are restored, which also shows the checks can fail.
func TestRestoreForgedSetuidAndDevices(t *testing.T) {
	t.Parallel()
	e, cfgPath := serviceUserEnv(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	idBin, err := os.ReadFile("/usr/bin/id")
	noErr(t, err)
	d1, d2 := e.dataPaths[0], e.dataPaths[1]
	in := func(p, n string) string { return archive.EntryName(filepath.Join(p, n)) }
	arch := plantTarGz(t, e.dests[0], []forged{
		fdir(d1),
		{hdr: tar.Header{Name: in(d1, "suid-id"), Typeflag: tar.TypeReg, Mode: 0o4755, Uname: "root", Gname: "root"}, body: idBin},
		{hdr: tar.Header{Name: in(d1, "sgid"), Typeflag: tar.TypeReg, Mode: 0o2755, Uname: "root", Gname: "root"}, body: []byte("#!/bin/sh\n")},
		{hdr: tar.Header{Name: in(d1, "mem"), Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1}},
		{hdr: tar.Header{Name: in(d1, "disk"), Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 8, Devminor: 0}},
		fdir(d2),
	})
	// nobody must be able to reach the restored files.
	for p := d1; p != filepath.Dir(filepath.Dir(e.root)); p = filepath.Dir(p) {
		noErr(t, os.Chmod(p, 0o755))
	}
	euidAsNobody := func(bin string) string {
		out, err := exec.Command(setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", bin, "-u").CombinedOutput()
		if err != nil {
			t.Fatalf("%s as nobody: %v %s", bin, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	assertSafe := func(dir string) {
		t.Helper()
		for _, n := range []string{"suid-id", "sgid"} {
			fi, err := os.Lstat(filepath.Join(dir, n))
			noErr(t, err)
			if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 || !fi.Mode().IsRegular() {
				t.Errorf("%s restored with mode %v", n, fi.Mode())
			}
		}
		for _, n := range []string{"mem", "disk"} {
			if fi, err := os.Lstat(filepath.Join(dir, n)); err == nil {
				t.Errorf("device node %s created: %v", n, fi.Mode())
			}
		}
		if got := euidAsNobody(filepath.Join(dir, "suid-id")); got == "0" {
			t.Errorf("the planted binary gives nobody euid 0")
		}
	}

	t.Run("target", func(t *testing.T) {
		target := filepath.Join(e.root, "restored")
		if code, _, _ := e.restoreCmd(cfgPath, RestoreOptions{Archive: arch, Target: target}); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		assertSafe(filepath.Join(target, archive.EntryName(d1)))
	})
	t.Run("in place", func(t *testing.T) {
		code, _, stderr := e.restoreCmd(cfgPath, RestoreOptions{Archive: arch})
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		assertSafe(d1)
		if !strings.Contains(stderr, "stripping setuid/setgid") || !strings.Contains(stderr, "skipping") {
			t.Errorf("no warning about what was left out:\n%s", stderr)
		}
	})
	t.Run("allow-special", func(t *testing.T) {
		target := filepath.Join(e.root, "special")
		if code, _, _ := e.restoreCmd(cfgPath, RestoreOptions{Archive: arch, Target: target, AllowSpecial: true}); code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		dir := filepath.Join(target, archive.EntryName(d1))
		for p := dir; p != e.root; p = filepath.Dir(p) {
			noErr(t, os.Chmod(p, 0o755))
		}
		fi, err := os.Lstat(filepath.Join(dir, "suid-id"))
		noErr(t, err)
		if fi.Mode()&fs.ModeSetuid == 0 {
			t.Errorf("--allow-special: setuid bit not restored: %v", fi.Mode())
		}
		if got := euidAsNobody(filepath.Join(dir, "suid-id")); got != "0" {
			t.Errorf("--allow-special: setuid-root binary gives euid %s (the euid check cannot fail?)", got)
		}
		if fi, err := os.Lstat(filepath.Join(dir, "mem")); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
			t.Errorf("--allow-special: device node not created: %v", err)
		}
	})
}

// TestRestoreRootSymlinkRefused: a planted archive whose entry for a data
// path's root is a symlink to /etc is refused by verify and by both restore
// modes, with the same message, before any unit is touched; the data path
// stays a directory.
func TestRestoreRootSymlinkRefused(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfgPath := e.configFile([]string{"app.service"}, nil)
	d1, d2 := e.dataPaths[0], e.dataPaths[1]
	for _, tc := range []struct {
		name    string
		entries []forged
		want    string
	}{
		{"root symlink", []forged{
			{hdr: tar.Header{Name: archive.EntryName(d1), Typeflag: tar.TypeSymlink, Linkname: "/etc"}}, fdir(d2)},
			"(symlink to /etc) is not inside a directory entry"},
		{"symlink then an entry under it", []forged{
			fdir(d1),
			{hdr: tar.Header{Name: archive.EntryName(d1) + "/sub", Typeflag: tar.TypeSymlink, Linkname: "/etc"}},
			{hdr: tar.Header{Name: archive.EntryName(d1) + "/sub/cron.d/evil", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("* * * * * root sh")},
			fdir(d2)},
			"would be written through the earlier non-directory entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arch := plantTarGz(t, filepath.Join(e.root, "planted", strings.ReplaceAll(tc.name, " ", "-")), tc.entries)
			os.Remove(filepath.Join(e.sysDir, "calls.log"))
			var msgs []string
			for _, c := range []struct {
				name string
				run  func() (int, string, string)
			}{
				{"verify", func() (int, string, string) {
					return e.logged(e.verifyCmd(cfgPath, VerifyOptions{Archives: []string{arch}}))
				}},
				{"restore", func() (int, string, string) { return e.restoreCmd(cfgPath, RestoreOptions{Archive: arch}) }},
				{"restore --target", func() (int, string, string) {
					return e.restoreCmd(cfgPath, RestoreOptions{Archive: arch, Target: filepath.Join(t.TempDir(), "t")})
				}},
			} {
				code, stdout, stderr := c.run()
				if code != ExitFailed {
					t.Errorf("%s: exit %d, want 1", c.name, code)
				}
				// The log quotes the message (slog's text format).
				out := strings.ReplaceAll(stdout+stderr, `\"`, `"`)
				i := strings.Index(out, tc.want)
				if i < 0 {
					t.Errorf("%s: output lacks %q:\n%s", c.name, tc.want, out)
					continue
				}
				j := strings.LastIndex(out[:i], "unsafe archive entry name")
				msgs = append(msgs, out[max(j, 0):i+len(tc.want)])
			}
			for _, m := range msgs {
				if m != msgs[0] {
					t.Errorf("verify and restore refuse with different messages:\n %s\n %s", msgs[0], m)
				}
			}
			if fi, err := os.Lstat(d1); err != nil || !fi.IsDir() {
				t.Errorf("data path changed: %v %v", fi, err)
			}
			if got := e.calls(); len(got) != 0 {
				t.Errorf("units touched for a refused archive: %q", got)
			}
		})
	}
}

// TestRestoreRootTypeChangeRefused: an archive that turns a directory data
// path into a regular file verifies (a single-file data path is legal) but
// an in-place restore refuses it and leaves the data alone.
func TestRestoreRootTypeChangeRefused(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfgPath := e.configFile([]string{"app.service"}, nil)
	d1, d2 := e.dataPaths[0], e.dataPaths[1]
	arch := plantTarGz(t, e.dests[0], []forged{
		{hdr: tar.Header{Name: archive.EntryName(d1), Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("not a directory")},
		fdir(d2),
	})
	code, _, stderr := e.restoreCmd(cfgPath, RestoreOptions{Archive: arch})
	if code != ExitFailed || !strings.Contains(stderr, "refusing to replace data path") {
		t.Errorf("exit %d, want 1 with a refusal", code)
	}
	if fi, err := os.Lstat(d1); err != nil || !fi.IsDir() {
		t.Errorf("data path changed: %v %v", fi, err)
	}
	if m, _ := filepath.Glob(d1 + ".pre-restore-*"); len(m) > 0 {
		t.Errorf("data moved aside for a refused restore: %v", m)
	}
}

// TestRestoreZipWithoutOwner: zip entries without the Info-ZIP "ux" field
// (Go's archive/zip writes none) carry no owner; restored as root they
// belong to the service's user and group, not root, and lose setuid.
func TestRestoreZipWithoutOwner(t *testing.T) {
	t.Parallel()
	e, _ := serviceUserEnv(t)
	cfgPath := e.configFile([]string{"app.service"}, func(m map[string]any) {
		m["user"], m["group"] = "nobody", "nogroup"
		backupSettings(m)["format"] = "zip"
	})
	d1, d2 := e.dataPaths[0], e.dataPaths[1]
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, mode fs.FileMode, body string) {
		fh := &zip.FileHeader{Name: name, Method: zip.Deflate}
		fh.SetMode(mode)
		w, err := zw.CreateHeader(fh)
		noErr(t, err)
		_, err = w.Write([]byte(body))
		noErr(t, err)
	}
	add(archive.EntryName(d1)+"/", fs.ModeDir|0o755, "")
	add(archive.EntryName(d1)+"/suid", fs.ModeSetuid|0o755, "#!/bin/sh\nid\n")
	add(archive.EntryName(d1)+"/plain.txt", 0o644, "plain")
	add(archive.EntryName(d2)+"/", fs.ModeDir|0o755, "")
	noErr(t, zw.Close())
	arch := filepath.Join(e.dests[0], "app-20991231T235959Z.zip")
	noErr(t, os.MkdirAll(e.dests[0], 0o755))
	noErr(t, os.WriteFile(arch, buf.Bytes(), 0o644))

	target := filepath.Join(e.root, "restored")
	if code, _, _ := e.restoreCmd(cfgPath, RestoreOptions{Archive: arch, Target: target}); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	dir := filepath.Join(target, archive.EntryName(d1))
	for _, p := range []string{dir, filepath.Join(dir, "suid"), filepath.Join(dir, "plain.txt")} {
		fi, err := os.Lstat(p)
		noErr(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want nobody:nogroup (65534)", p, st.Uid, st.Gid)
		}
		if fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
	}
}

// TestRestoreGNUTarXattrsACLsSparse: an archive made by GNU tar itself
// (`tar --xattrs --xattrs-include='*' --acls --sparse`) from a tmpfs with
// user xattrs, access and default ACLs and a sparse file is restored by
// `restore --target` onto a tmpfs with the same getfattr and getfacl output
// and the sparse file's holes kept (stat %b).
func TestRestoreGNUTarXattrsACLsSparse(t *testing.T) {
	t.Parallel()
	tarBin := testtool.Require(t, "tar", "tar")
	getfattr := testtool.Require(t, "getfattr", "attr")
	setfattr := testtool.Require(t, "setfattr", "attr")
	getfacl := testtool.Require(t, "getfacl", "acl")
	setfacl := testtool.Require(t, "setfacl", "acl")
	e := newTestEnv(t)
	src := filepath.Join(e.root, "src")
	testtool.MountTmpfs(t, src, "128m")
	d := filepath.Join(src, "data")
	e.writeFile(filepath.Join(d, "f"), []byte("hello\n"), 0o640)
	e.writeFile(filepath.Join(d, "sub", "g"), []byte("g\n"), 0o600)
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = src
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run(setfattr, "-n", "user.color", "-v", "blue", "data/f")
	run(setfattr, "-n", "user.bin", "-v", "0sAAECA/8=", "data/f")
	run(setfattr, "-n", "user.dir", "-v", "yes", "data/sub")
	run(setfacl, "-m", "u:nobody:r,g:nogroup:rw", "data/f")
	run(setfacl, "-d", "-m", "u:nobody:rx", "data/sub")
	// 64 MiB with 1 byte at 5 MB and 8 KiB at 40 MB: holes everywhere else.
	sparse := filepath.Join(d, "sparse")
	f, err := os.Create(sparse)
	noErr(t, err)
	noErr(t, f.Truncate(64<<20))
	_, err = f.WriteAt([]byte{'x'}, 5_000_000)
	noErr(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{'y'}, 8192), 40<<20)
	noErr(t, err)
	noErr(t, f.Close())

	dest := filepath.Join(e.root, "dest")
	noErr(t, os.MkdirAll(dest, 0o755))
	arch := filepath.Join(dest, "app-20990101T000000Z.tar.gz")
	cmd := exec.Command(tarBin, "--xattrs", "--xattrs-include=*", "--acls", "--sparse", "-czf", arch, "-C", "/", archive.EntryName(d))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v\n%s", err, out)
	}
	cfgPath := e.configFile(nil, func(m map[string]any) {
		m["dataPaths"] = []string{d}
		backupSettings(m)["paths"] = []string{dest}
	})
	target := filepath.Join(e.root, "restored")
	testtool.MountTmpfs(t, target, "128m")
	code, _, stderr := e.restoreCmd(cfgPath, RestoreOptions{Archive: arch, Target: target})
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(stderr, "cannot restore") {
		t.Errorf("restore warned:\n%s", stderr)
	}
	restoredParent := filepath.Join(target, archive.EntryName(src))
	dump := func(dir string) (string, string) {
		t.Helper()
		c1 := exec.Command(getfattr, "-R", "-d", "-m", "-", "data")
		c1.Dir = dir
		x, err := c1.Output()
		noErr(t, err)
		c2 := exec.Command(getfacl, "-R", "-p", "data")
		c2.Dir = dir
		a, err := c2.Output()
		noErr(t, err)
		return sortedBlocks(string(x)), sortedBlocks(string(a))
	}
	wantX, wantA := dump(src)
	gotX, gotA := dump(restoredParent)
	for _, want := range []string{"user.color", "user.bin", "user.dir", "posix_acl_access", "posix_acl_default"} {
		if !strings.Contains(wantX, want) {
			t.Fatalf("the source lacks %s (no xattr/ACL support on tmpfs?):\n%s", want, wantX)
		}
	}
	if gotX != wantX {
		t.Errorf("getfattr differs:\n--- source\n%s--- restored\n%s", wantX, gotX)
	}
	if gotA != wantA {
		t.Errorf("getfacl differs:\n--- source\n%s--- restored\n%s", wantA, gotA)
	}
	blocks := func(p string) int64 {
		var st syscall.Stat_t
		noErr(t, syscall.Stat(p, &st))
		return st.Blocks
	}
	restoredSparse := filepath.Join(restoredParent, "data", "sparse")
	srcBlocks, gotBlocks := blocks(sparse), blocks(restoredSparse)
	t.Logf("sparse file: %d blocks in the source, %d restored (%d if dense)", srcBlocks, gotBlocks, (64<<20)/512)
	if gotBlocks > srcBlocks {
		t.Errorf("restored sparse file uses %d blocks, source %d: holes were filled", gotBlocks, srcBlocks)
	}
	a, err := os.ReadFile(sparse)
	noErr(t, err)
	b, err := os.ReadFile(restoredSparse)
	noErr(t, err)
	if !bytes.Equal(a, b) {
		t.Errorf("sparse file content differs")
	}
}

// sortedBlocks sorts the per-file blocks of getfattr/getfacl output, which
// come in directory order.
func sortedBlocks(out string) string {
	blocks := strings.Split(strings.TrimSpace(out), "\n\n")
	slices.Sort(blocks)
	return strings.Join(blocks, "\n\n") + "\n"
}

// TestRestoreStagingSwapRace: the staging directories of an in-place
// restore live in the data paths' parent, which the service user usually
// owns. A goroutine plays that user: in a tight loop it renames every
// staging directory away and puts a symlink to a decoy directory in its
// place. Over many restores nothing may be written into the decoy, the data
// paths stay real directories, and a restore either fails cleanly (data
// untouched) or puts back the archived data.
func TestRestoreStagingSwapRace(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfgPath := e.configFile([]string{"app.service"}, nil)
	cfg, _ := config.Load(cfgPath)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	arch := filepath.Join(e.dests[0], archivesIn(t, e.dests[0], "tar.gz")[0])
	want, err := os.ReadFile(filepath.Join(e.dataPaths[0], "db.sqlite"))
	noErr(t, err)
	parent := filepath.Dir(e.dataPaths[0])
	decoy := filepath.Join(e.root, "decoy")
	noErr(t, os.Mkdir(decoy, 0o755))

	stop := make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		defer func() { swapped <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ents, _ := os.ReadDir(parent)
			for _, d := range ents {
				if !strings.HasPrefix(d.Name(), ".") || !strings.Contains(d.Name(), ".restore-") || d.Type()&fs.ModeSymlink != 0 {
					continue
				}
				p := filepath.Join(parent, d.Name())
				if os.Rename(p, filepath.Join(parent, "stolen-"+strconv.Itoa(n))) == nil {
					os.Symlink(decoy, p)
					n++
				}
			}
		}
	}()
	deadline := time.Now().Add(4 * time.Second)
	ok, failed := 0, 0
	for i := 0; i < 60 && time.Now().Before(deadline); i++ {
		code, _, stderr := e.restoreStrict(cfgPath, RestoreOptions{Archive: arch})
		if code == ExitOK {
			ok++
		} else {
			failed++
		}
		if ents, _ := os.ReadDir(decoy); len(ents) > 0 {
			t.Fatalf("restore %d wrote into the decoy through a swapped staging directory: %v\n%s", i, ents, stderr)
		}
		for _, dp := range e.dataPaths {
			if fi, err := os.Lstat(dp); err != nil || !fi.IsDir() {
				t.Fatalf("restore %d: data path %s is %v (%v)\n%s", i, dp, fi, err, stderr)
			}
		}
		if got, err := os.ReadFile(filepath.Join(e.dataPaths[0], "db.sqlite")); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("restore %d (exit %d): data differs (%v)\n%s", i, code, err, stderr)
		}
		// Drop the moved-aside copies so the next restore (same second)
		// can move the data aside again.
		asides, _ := filepath.Glob(filepath.Join(parent, "*.pre-restore-*"))
		for _, a := range asides {
			os.RemoveAll(a)
		}
	}
	close(stop)
	n := <-swapped
	t.Logf("%d restores succeeded, %d refused; %d staging directories swapped", ok, failed, n)
	if n == 0 {
		t.Fatal("the swapper never caught a staging directory: the test proves nothing")
	}
}

// swapOnStop is a Systemd whose Stop also runs a function: the moment
// between check (hash and verification) and extraction of an in-place
// restore.
type swapOnStop struct {
	Systemd
	onStop func()
}

func (s swapOnStop) Stop(ctx context.Context, unit string) error {
	s.onStop()
	return s.Systemd.Stop(ctx, unit)
}

// TestRestoreArchiveRewrittenAfterVerify: the service user owns the archive
// and can rewrite it at any time. Here it is replaced, in place, by a
// forged archive that passes every structural rule, while the units stop.
// Restore reads the archive once, verifying it while it extracts, before
// it stops anything: the rewrite comes too late to matter, and the data
// restored is the verified archive's, never the forged one's.
func TestRestoreArchiveRewrittenAfterVerify(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	cfg := e.config([]string{"app.service"}, nil)
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("run: exit %d", code)
	}
	arch := filepath.Join(e.dests[0], archivesIn(t, e.dests[0], "tar.gz")[0])
	d1, d2 := e.dataPaths[0], e.dataPaths[1]
	forgedPath := plantTarGz(t, filepath.Join(e.root, "forged"), []forged{
		fdir(d1),
		{hdr: tar.Header{Name: archive.EntryName(d1) + "/db.sqlite", Typeflag: tar.TypeReg, Mode: 0o600}, body: []byte("forged")},
		fdir(d2),
	})
	forgedBytes, err := os.ReadFile(forgedPath)
	noErr(t, err)
	before, err := os.ReadFile(filepath.Join(d1, "db.sqlite"))
	noErr(t, err)
	noErr(t, os.WriteFile(filepath.Join(d1, "db.sqlite"), []byte("changed since the backup"), 0o600))
	var logBuf bytes.Buffer
	rewritten := false
	sys := swapOnStop{e.seams.systemd, func() {
		// Rewrite through the same inode, as its owner can.
		noErr(t, os.WriteFile(arch, forgedBytes, 0o640))
		rewritten = true
	}}
	_, err = Restore(context.Background(), cfg, sys, slog.New(slog.NewTextHandler(&logBuf, nil)), RestoreOptions{Archive: arch})
	code := ExitCode(context.Background(), err)
	t.Log(logBuf.String())
	if code != ExitOK || !rewritten {
		t.Errorf("exit %d (archive rewritten: %v), want 0", code, rewritten)
	}
	if got, _ := os.ReadFile(filepath.Join(d1, "db.sqlite")); !bytes.Equal(got, before) {
		t.Errorf("restored data is %q..., not the verified archive's", got[:min(len(got), 10)])
	}
	if e.unitState("app.service") != "active" {
		t.Errorf("unit not started again")
	}
}

// TestRestoreCorruptSignedArchiveRefused: a signed archive whose content
// was changed after signing (a bit flip on disk, a truncation, or its
// owner rewriting it) passes the signature check, which looks at the
// .sha256, but not the single extracting pass: the restore is refused,
// nothing is left of the staging directories, the units are never
// touched and the data is unchanged; in a --target restore the target is
// left as it was.
func TestRestoreCorruptSignedArchiveRefused(t *testing.T) {
	for _, damage := range []string{"bitflip", "truncate", "append"} {
		t.Run(damage, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			cfgPath := e.configFile([]string{"app.service"}, nil)
			cfg, _ := config.Load(cfgPath)
			if code := e.run(cfg); code != ExitOK {
				t.Fatalf("run: exit %d", code)
			}
			arch := filepath.Join(e.dests[0], archivesIn(t, e.dests[0], "tar.gz")[0])
			b, err := os.ReadFile(arch)
			noErr(t, err)
			b = corrupt(b, damage)
			noErr(t, os.WriteFile(arch, b, 0o640))
			noErr(t, os.WriteFile(filepath.Join(e.dataPaths[0], "db.sqlite"), []byte("current"), 0o600))
			os.Remove(filepath.Join(e.sysDir, "calls.log"))
			code, _, stderr := e.restoreCmdStrict(cfgPath, RestoreOptions{Archive: arch})
			if code != ExitFailed || !strings.Contains(stderr, "refusing to restore") {
				t.Fatalf("exit %d, want 1 with 'refusing to restore'", code)
			}
			if got := e.calls(); len(got) != 0 {
				t.Errorf("units touched for a corrupt archive: %q", got)
			}
			if got, _ := os.ReadFile(filepath.Join(e.dataPaths[0], "db.sqlite")); string(got) != "current" {
				t.Errorf("data changed: %q", got)
			}
			assertNoStaging(t, e.dataPaths)
			target := filepath.Join(e.root, "target")
			noErr(t, os.Mkdir(target, 0o700))
			if code, _, _ := e.restoreCmdStrict(cfgPath, RestoreOptions{Archive: arch, Target: target}); code != ExitFailed {
				t.Fatalf("--target: exit %d, want 1", code)
			}
			if ents, _ := os.ReadDir(target); len(ents) != 0 {
				t.Errorf("target holds %d entries after a refused restore", len(ents))
			}
		})
	}
}

// corrupt damages an archive: a flipped bit in the middle, the last
// tenth cut off, or garbage appended.
func corrupt(b []byte, how string) []byte {
	b = bytes.Clone(b)
	switch how {
	case "bitflip":
		b[len(b)/2] ^= 0x10
	case "truncate":
		b = b[:len(b)*9/10]
	case "append":
		b = append(b, "garbage"...)
	}
	return b
}

// restoreCmdStrict is restoreCmd without --trust-unsigned.
func (e *testEnv) restoreCmdStrict(path string, opts RestoreOptions) (int, string, string) {
	e.t.Helper()
	return e.logged(e.restoreStrict(path, opts))
}

// assertNoStaging fails when a staging directory is left beside a data path.
func assertNoStaging(t *testing.T, dataPaths []string) {
	t.Helper()
	for _, dp := range dataPaths {
		if m, _ := filepath.Glob(filepath.Join(filepath.Dir(dp), ".*.restore-*")); len(m) > 0 {
			t.Errorf("staging left: %v", m)
		}
	}
}
