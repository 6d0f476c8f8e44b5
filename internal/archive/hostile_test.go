package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

type tentry struct {
	hdr  tar.Header
	body string
}

func makeTarGz(t *testing.T, file string, entries []tentry) {
	t.Helper()
	var buf bytes.Buffer
	zw := kgzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		must(t, tw.WriteHeader(&h))
		if e.body != "" {
			_, err := tw.Write([]byte(e.body))
			must(t, err)
		}
	}
	must(t, tw.Close())
	must(t, zw.Close())
	must(t, os.WriteFile(file, buf.Bytes(), 0o644))
}

type zentry struct {
	name string
	mode fs.FileMode
	body string
}

func makeZip(t *testing.T, file string, entries []zentry) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		fh := &zip.FileHeader{Name: e.name, Method: zip.Store}
		fh.SetMode(e.mode)
		w, err := zw.CreateHeader(fh)
		must(t, err)
		_, err = w.Write([]byte(e.body))
		must(t, err)
	}
	must(t, zw.Close())
	must(t, os.WriteFile(file, buf.Bytes(), 0o644))
}

// hostileEnv: base/target (extraction target), base/sibling (must stay
// empty), nothing else may appear in base.
type hostileEnv struct {
	base, target, sibling, arch string
}

func newHostileEnv(t *testing.T) hostileEnv {
	base := t.TempDir()
	e := hostileEnv{base, filepath.Join(base, "target", "inner"), filepath.Join(base, "sibling"), filepath.Join(t.TempDir(), "hostile")}
	must(t, os.MkdirAll(e.target, 0o755))
	must(t, os.Mkdir(e.sibling, 0o755))
	return e
}

func (e hostileEnv) checkNothingOutside(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(e.sibling)
	must(t, err)
	if len(ents) != 0 {
		t.Errorf("sibling directory is not empty: %v", ents)
	}
	for _, dir := range []string{e.base, filepath.Dir(e.target)} {
		ents, err := os.ReadDir(dir)
		must(t, err)
		for _, d := range ents {
			if p := filepath.Join(dir, d.Name()); p != e.sibling && p != e.target && p != filepath.Dir(e.target) {
				t.Errorf("unexpected %s outside target", p)
			}
		}
	}
	for _, p := range []string{"/evil", "/tmp/evil", "/etc/evil"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists", p)
		}
	}
}

func dir(name string) tentry {
	return tentry{tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}, ""}
}

// assertVerifyAgrees checks that VerifyFile accepts the archive exactly
// when ExtractFile did (extractErr), refusing it with the same message.
func assertVerifyAgrees(t *testing.T, arch, format string, extractErr error) {
	t.Helper()
	_, verr := VerifyFile(context.Background(), arch, format)
	strip := func(err error, verb string) string {
		if err == nil {
			return "<nil>"
		}
		return strings.TrimPrefix(err.Error(), "archive: "+verb+" "+arch+": ")
	}
	if v, x := strip(verr, "verify"), strip(extractErr, "extract"); v != x {
		t.Errorf("verify and restore disagree:\n verify:  %s\n restore: %s", v, x)
	}
}

func reg(name, body string) tentry {
	return tentry{tar.Header{Name: name, Typeflag: tar.TypeReg}, body}
}

func TestHostileTar(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries func(e hostileEnv) []tentry
		pre     func(t *testing.T, e hostileEnv)
		opts    ExtractOptions
		wantErr bool
		// restoreOnly: the outcome depends on the target's state or on an
		// extraction option, not only on the archive, so VerifyFile is not
		// expected to agree.
		restoreOnly bool
		check       func(t *testing.T, e hostileEnv, st Stats)
	}{
		{name: "dotdot", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{reg("ok.txt", "ok"), reg("../evil", "x"), reg("../../sibling/evil", "x")}
		}},
		{name: "absolute", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{reg(filepath.Join(e.sibling, "evil"), "x")}
		}},
		{name: "inner dotdot", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{reg("a/../../evil", "x")}
		}},
		{name: "symlink then entry through it (absolute)", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: e.sibling}, ""}, reg("link/evil", "x")}
		}},
		{name: "symlink then entry through it (dotdot)", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../sibling"}, ""}, reg("up/evil", "x")}
		}},
		{name: "symlink dir then dir through it", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: e.sibling}, ""},
				{tar.Header{Name: "d/sub/", Typeflag: tar.TypeDir, Mode: 0o755}, ""}}
		}},
		{name: "symlink replaced by itself then file", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755}, ""},
				{tar.Header{Name: "y", Typeflag: tar.TypeSymlink, Linkname: e.sibling}, ""},
				{tar.Header{Name: "y/./z", Typeflag: tar.TypeReg}, ""}}
		}},
		{name: "existing symlink in target", wantErr: true, restoreOnly: true,
			pre: func(t *testing.T, e hostileEnv) { must(t, os.Symlink(e.sibling, filepath.Join(e.target, "existing"))) },
			entries: func(e hostileEnv) []tentry {
				return []tentry{reg("existing/evil", "x")}
			}},
		// A name may appear once: the symlink is neither followed nor replaced.
		{name: "symlink then file of the same name", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{dir("./"), {tar.Header{Name: "f", Typeflag: tar.TypeSymlink, Linkname: filepath.Join(e.sibling, "evil")}, ""}, reg("f", "content")}
		}},
		{name: "final symlink in target is replaced, not followed", restoreOnly: true,
			pre: func(t *testing.T, e hostileEnv) {
				must(t, os.Symlink(filepath.Join(e.sibling, "evil"), filepath.Join(e.target, "f")))
			},
			entries: func(e hostileEnv) []tentry { return []tentry{reg("f", "content")} },
			check: func(t *testing.T, e hostileEnv, st Stats) {
				b, err := os.ReadFile(filepath.Join(e.target, "f"))
				if err != nil || string(b) != "content" {
					t.Errorf("f: %q %v", b, err)
				}
			}},
		{name: "directory swapped to symlink, then a file under it", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{dir("data/"), {tar.Header{Name: "data/sub", Typeflag: tar.TypeSymlink, Linkname: e.sibling}, ""}, reg("data/sub/evil", "x")}
		}},
		{name: "data path root is a symlink", wantErr: true, opts: ExtractOptions{Prefixes: []string{"/srv/data"}}, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "srv/data", Typeflag: tar.TypeSymlink, Linkname: e.sibling}, ""}}
		}},
		{name: "root hard link", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{dir("a/"), reg("a/f", "x"), {tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a/f"}, ""}}
		}},
		{name: "file used as a directory", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{dir("d/"), reg("d/f", "x"), reg("d/f/g", "y")}
		}},
		{name: "hard link to a later file", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{dir("d/"), {tar.Header{Name: "d/l", Typeflag: tar.TypeLink, Linkname: "d/f"}, ""}, reg("d/f", "x")}
		}},
		{name: "hard link to a directory", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{dir("d/"), dir("d/e/"), {tar.Header{Name: "d/l", Typeflag: tar.TypeLink, Linkname: "d/e"}, ""}}
		}},
		{name: "repeated directory is fine", entries: func(e hostileEnv) []tentry {
			return []tentry{dir("d/"), reg("d/f", "x"), dir("d/")}
		}},
		{name: "malformed ACL", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX,
				PAXRecords: map[string]string{"SCHILY.acl.access": "user::rwx\nuser:nobody:rwx\ngroup::r-x\nother::---\n"}}, ""}}
		}},
		{name: "hardlink dotdot", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}, ""}}
		}},
		{name: "hardlink absolute", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}, ""}}
		}},
		{name: "hardlink to pre-existing file", wantErr: true, restoreOnly: true,
			pre: func(t *testing.T, e hostileEnv) {
				mustWrite(t, filepath.Join(e.target, "preexisting"), []byte("p"), 0o600)
			},
			entries: func(e hostileEnv) []tentry {
				return []tentry{{tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "preexisting"}, ""}}
			}},
		{name: "hardlink through symlink", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: e.sibling}, ""},
				{tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "s/x"}, ""}}
		}},
		{name: "hardlink inside archive ok", entries: func(e hostileEnv) []tentry {
			return []tentry{dir("./"), reg("a", "data"), {tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}, ""}}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			a, _ := os.Stat(filepath.Join(e.target, "a"))
			b, _ := os.Stat(filepath.Join(e.target, "b"))
			if a == nil || b == nil || !os.SameFile(a, b) || st.Hardlinks != 1 {
				t.Errorf("hard link not restored: %v %v %+v", a, b, st)
			}
		}},
		{name: "devices and fifos skipped", entries: func(e hostileEnv) []tentry {
			return []tentry{dir("./"), {tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, ""},
				{tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0}, ""},
				{tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}, ""}, reg("ok", "ok")}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			for _, n := range []string{"null", "sda", "fifo"} {
				if _, err := os.Lstat(filepath.Join(e.target, n)); err == nil {
					t.Errorf("%s was created", n)
				}
			}
			if st.Skipped != 3 || len(st.Warnings) != 3 || st.Files != 1 {
				t.Errorf("stats %+v", st)
			}
		}},
		{name: "setuid stripped without SameOwner", entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755}, ""}, {tar.Header{Name: "sgid/", Typeflag: tar.TypeDir, Mode: 0o2775}, ""}}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			fi, err := os.Stat(filepath.Join(e.target, "suid"))
			must(t, err)
			if fi.Mode() != 0o755 {
				t.Errorf("suid mode %v", fi.Mode())
			}
			fi, err = os.Stat(filepath.Join(e.target, "sgid"))
			must(t, err)
			if fi.Mode()&fs.ModeSetgid != 0 || len(st.Warnings) != 2 {
				t.Errorf("sgid mode %v, warnings %q", fi.Mode(), st.Warnings)
			}
		}},
		{name: "setuid stripped with SameOwner", opts: ExtractOptions{SameOwner: true}, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: os.Getuid(), Gid: os.Getgid()}, ""}}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			fi, err := os.Stat(filepath.Join(e.target, "suid"))
			must(t, err)
			if fi.Mode() != 0o755 || len(st.Warnings) != 1 {
				t.Errorf("suid mode %v, warnings %q", fi.Mode(), st.Warnings)
			}
		}},
		{name: "setuid kept with SameOwner and AllowSpecial", opts: ExtractOptions{SameOwner: true, AllowSpecial: true}, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: os.Getuid(), Gid: os.Getgid()}, ""}}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			fi, err := os.Stat(filepath.Join(e.target, "suid"))
			must(t, err)
			if fi.Mode() != 0o755|fs.ModeSetuid {
				t.Errorf("suid mode %v", fi.Mode())
			}
		}},
		{name: "too many entries", wantErr: true, restoreOnly: true, opts: ExtractOptions{MaxEntries: 10}, entries: func(e hostileEnv) []tentry {
			var es []tentry
			for i := 0; i < 20; i++ {
				es = append(es, reg("f"+itoa(i), "x"))
			}
			return es
		}},
		{name: "too many bytes", wantErr: true, restoreOnly: true, opts: ExtractOptions{MaxBytes: 1000}, entries: func(e hostileEnv) []tentry {
			return []tentry{reg("small", "x"), reg("big", strings.Repeat("A", 1<<20))}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			if _, err := os.Lstat(filepath.Join(e.target, "big")); err == nil {
				t.Errorf("big was created")
			}
		}},
		{name: "empty name", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{reg("", "x")}
		}},
		{name: "dir replaced by file refused", wantErr: true, entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, ""}, reg("d/f", "x"), reg("d", "x")}
		}},
		{name: "dot entries are harmless", entries: func(e hostileEnv) []tentry {
			return []tentry{{tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o777}, ""}, reg("./a/./b", "x")}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			if fi, err := os.Stat(e.target); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("target attributes changed: %v %v", fi.Mode(), err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHostileEnv(t)
			if tc.pre != nil {
				tc.pre(t, e)
			}
			makeTarGz(t, e.arch, tc.entries(e))
			opts := tc.opts
			opts.Logger = quietLogger
			st, err := ExtractFile(context.Background(), e.arch, FormatTarGz, e.target, opts)
			if tc.wantErr && err == nil {
				t.Errorf("ExtractFile succeeded, want error")
			} else if !tc.wantErr && err != nil {
				t.Errorf("ExtractFile: %v", err)
			}
			t.Logf("err: %v", err)
			if !tc.restoreOnly {
				assertVerifyAgrees(t, e.arch, FormatTarGz, err)
			}
			e.checkNothingOutside(t)
			if tc.check != nil {
				tc.check(t, e, st)
			}
		})
	}
}

func TestHostileZip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries func(e hostileEnv) []zentry
		wantErr bool
		check   func(t *testing.T, e hostileEnv, st Stats)
	}{
		{name: "dotdot", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{"../evil", 0o644, "x"}}
		}},
		{name: "absolute", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{filepath.Join(e.sibling, "evil"), 0o644, "x"}}
		}},
		{name: "inner dotdot", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{"a/../../evil", 0o644, "x"}}
		}},
		{name: "symlink then entry through it", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{"link", fs.ModeSymlink | 0o777, e.sibling}, {"link/evil", 0o644, "x"}}
		}},
		{name: "symlink dotdot then entry", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{"up", fs.ModeSymlink | 0o777, "../.."}, {"up/sibling/evil", 0o644, "x"}}
		}},
		{name: "directory swapped to symlink, then a file under it", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{"data/", fs.ModeDir | 0o755, ""}, {"data/sub", fs.ModeSymlink | 0o777, e.sibling}, {"data/sub/evil", 0o644, "x"}}
		}},
		{name: "duplicate file", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{"data/", fs.ModeDir | 0o755, ""}, {"data/f", 0o644, "x"}, {"data/f", 0o644, "y"}}
		}},
		{name: "root symlink", wantErr: true, entries: func(e hostileEnv) []zentry {
			return []zentry{{"data", fs.ModeSymlink | 0o777, "/etc"}}
		}},
		{name: "device skipped, setuid stripped", entries: func(e hostileEnv) []zentry {
			return []zentry{{"./", fs.ModeDir | 0o755, ""}, {"null", fs.ModeDevice | fs.ModeCharDevice | 0o666, ""}, {"suid", fs.ModeSetuid | 0o755, "#!"}}
		}, check: func(t *testing.T, e hostileEnv, st Stats) {
			if _, err := os.Lstat(filepath.Join(e.target, "null")); err == nil {
				t.Errorf("device created")
			}
			fi, err := os.Stat(filepath.Join(e.target, "suid"))
			must(t, err)
			if fi.Mode() != 0o755 || st.Skipped != 1 || len(st.Warnings) != 2 {
				t.Errorf("mode %v, stats %+v", fi.Mode(), st)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHostileEnv(t)
			makeZip(t, e.arch, tc.entries(e))
			st, err := ExtractFile(context.Background(), e.arch, FormatZip, e.target, ExtractOptions{Logger: quietLogger})
			if tc.wantErr && err == nil {
				t.Errorf("ExtractFile succeeded, want error")
			} else if !tc.wantErr && err != nil {
				t.Errorf("ExtractFile: %v", err)
			}
			assertVerifyAgrees(t, e.arch, FormatZip, err)
			if tc.wantErr && err != nil && !errors.Is(err, ErrUnsafeName) {
				t.Errorf("error does not wrap ErrUnsafeName: %v", err)
			}
			t.Logf("err: %v", err)
			e.checkNothingOutside(t)
			if tc.check != nil {
				tc.check(t, e, st)
			}
		})
	}
}
