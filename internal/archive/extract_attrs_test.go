package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A private extraction creates each file with its final permissions and
// chowns/chmods it only where creation gave it something else (the
// fstat after creating it says what). Creation is not trusted to give
// the entry's owner or mode: here the target is setgid to another group
// (every file and directory below inherits that group) and the umask
// takes bits away; every file must still end with the archive's owner
// and mode exactly, setuid bits included.
func TestExtractPrivateFixesWhatCreationGave(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	target := filepath.Join(t.TempDir(), "target")
	must(t, os.Mkdir(target, 0o700))
	must(t, os.Chown(target, 0, 4242))
	must(t, os.Chmod(target, os.ModeSetgid|0o770))
	old := syscall.Umask(0o027)
	defer syscall.Umask(old)

	type want struct {
		mode     uint32
		uid, gid int
	}
	files := map[string]want{
		"a":     {0o644, 0, 0},       // umask would give 0640, setgid 4242
		"b":     {0o664, 4321, 4321}, // another owner: chown
		"c":     {0o600, 0, 0},       // mode as created, group not
		"s":     {0o4755, 0, 0},      // setuid: chmod after chown
		"sub/x": {0o640, 0, 0},       // parent made here, setgid inherited
		"own":   {0o640, 4242, 4242}, // owner and group as creation gave
	}
	var hdrs []tar.Header
	for _, name := range []string{"a", "b", "c", "s", "sub/x", "own"} {
		w := files[name]
		m := int64(w.mode & 0o777)
		if w.mode&0o4000 != 0 {
			m |= 0o4000
		}
		hdrs = append(hdrs, tar.Header{Typeflag: tar.TypeReg, Name: name, Linkname: "body of " + name, Mode: m, Uid: w.uid, Gid: w.gid})
	}
	data := tarGzOf(t, hdrs)
	dir := openDirT(t, target)
	_, err := ExtractAt(context.Background(), bytes.NewReader(data), int64(len(data)), FormatTarGz, dir,
		ExtractOptions{SameOwner: true, AllowSpecial: true, Private: true})
	must(t, err)
	for name, w := range files {
		var st syscall.Stat_t
		must(t, syscall.Lstat(filepath.Join(target, name), &st))
		if got := st.Mode & 0o7777; got != w.mode || int(st.Uid) != w.uid || int(st.Gid) != w.gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o %d:%d", name, got, st.Uid, st.Gid, w.mode, w.uid, w.gid)
		}
		b, err := os.ReadFile(filepath.Join(target, name))
		must(t, err)
		if string(b) != "body of "+name {
			t.Errorf("%s: content %q", name, b)
		}
	}
}
