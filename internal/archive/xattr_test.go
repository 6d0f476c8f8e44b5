package archive

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
)

func paxEntry(h tar.Header, recs map[string]string) tentry {
	h.Format, h.PAXRecords = tar.FormatPAX, recs
	if h.Mode == 0 {
		h.Mode = 0o755
	}
	return tentry{hdr: h}
}

// TestExtractACLTextAndXattrPolicy: ACLs given only in GNU tar's text form
// (SCHILY.acl.*, names mapped to local ids) are restored; user.* xattrs are
// restored; trusted.* and security.capability (file capabilities hand out
// privileges like setuid) only with AllowSpecial; an ACL naming an unknown
// user is a warning, not a failure.
func TestExtractACLTextAndXattrPolicy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for trusted.* and security.capability")
	}
	getfacl := testtool.Require(t, "getfacl", "acl")
	getfattr := testtool.Require(t, "getfattr", "attr")
	// A capability set (VFS_CAP_REVISION_2, cap_setuid effective+permitted).
	capSetuid := "\x01\x00\x00\x02\x80\x00\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	entries := []tentry{
		paxEntry(tar.Header{Name: "d/", Typeflag: tar.TypeDir}, map[string]string{
			"SCHILY.acl.access":  "user::rwx\ngroup::r-x\nother::r-x\n",
			"SCHILY.acl.default": "user::rwx\nuser:nobody:r-x\ngroup::r-x\nmask::r-x\nother::---\n",
		}),
		{hdr: tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o640, Format: tar.FormatPAX, PAXRecords: map[string]string{
			"SCHILY.acl.access":                "user::rw-\nuser:nobody:r--\ngroup::r--\ngroup:nogroup:rw-\nmask::rw-\nother::---\n",
			"SCHILY.xattr.user.note":           "hi",
			"SCHILY.xattr.trusted.x":           "t",
			"SCHILY.xattr.security.capability": capSetuid,
		}}, body: "x"},
		{hdr: tar.Header{Name: "d/unknown", Typeflag: tar.TypeReg, Mode: 0o640, Format: tar.FormatPAX, PAXRecords: map[string]string{
			"SCHILY.acl.access": "user::rw-\nuser:no-such-user-xyz:r--\ngroup::r--\nmask::r--\nother::---\n",
		}}, body: "y"},
	}
	for _, allow := range []bool{false, true} {
		dir := t.TempDir()
		arch := filepath.Join(dir, "a.tar.gz")
		makeTarGz(t, arch, entries)
		target := filepath.Join(dir, "t")
		must(t, os.Mkdir(target, 0o755))
		st, err := ExtractFile(context.Background(), arch, FormatTarGz, target, ExtractOptions{SameOwner: true, AllowSpecial: allow, Logger: quietLogger})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := VerifyFile(context.Background(), arch, FormatTarGz); err != nil {
			t.Errorf("verify: %v", err)
		}
		acl := func(p string) string {
			out, err := exec.Command(getfacl, "-c", "-p", p).Output()
			must(t, err)
			return strings.TrimSpace(string(out))
		}
		wantF := "user::rw-\nuser:nobody:r--\ngroup::r--\ngroup:nogroup:rw-\nmask::rw-\nother::---"
		if got := acl(filepath.Join(target, "d/f")); got != wantF {
			t.Errorf("ACL of d/f:\n%s\nwant\n%s", got, wantF)
		}
		if got := acl(filepath.Join(target, "d")); !strings.Contains(got, "default:user:nobody:r-x") {
			t.Errorf("default ACL of d:\n%s", got)
		}
		out, err := exec.Command(getfattr, "-d", "-m", "-", "-e", "text", filepath.Join(target, "d/f")).Output()
		must(t, err)
		x := string(out)
		if !strings.Contains(x, `user.note="hi"`) {
			t.Errorf("user.note not restored:\n%s", x)
		}
		for _, priv := range []string{"trusted.x", "security.capability"} {
			if strings.Contains(x, priv) != allow {
				t.Errorf("AllowSpecial=%v: %s present=%v:\n%s", allow, priv, !allow, x)
			}
		}
		if fi, err := os.Stat(filepath.Join(target, "d/unknown")); err != nil || fi.Mode().Perm() != 0o640 {
			t.Errorf("d/unknown: %v %v", fi, err)
		}
		warned := strings.Join(st.Warnings, "\n")
		if !strings.Contains(warned, `unknown user "no-such-user-xyz"`) {
			t.Errorf("no warning for the unknown ACL user:\n%s", warned)
		}
		if !allow && !strings.Contains(warned, "not restoring extended attribute security.capability") {
			t.Errorf("no warning for the skipped capability:\n%s", warned)
		}
	}
}

// TestExtractSparseHoles: a PAX sparse entry (GNU.sparse 1.0, as GNU tar
// --sparse writes) is written with holes; a dense entry full of zeros stays
// dense (holes only where the archive says the file is sparse).
func TestExtractSparseHoles(t *testing.T) {
	tarBin := testtool.Require(t, "tar", "tar")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must(t, os.MkdirAll(src, 0o755))
	f, err := os.Create(filepath.Join(src, "sparse"))
	must(t, err)
	must(t, f.Truncate(32<<20))
	_, err = f.WriteAt([]byte("data"), 20<<20)
	must(t, err)
	must(t, f.Close())
	mustWrite(t, filepath.Join(src, "zeros"), make([]byte, 1<<20), 0o644)
	arch := filepath.Join(dir, "a.tar.gz")
	if out, err := exec.Command(tarBin, "--sparse", "-czf", arch, "-C", dir, "src").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	target := filepath.Join(dir, "t")
	must(t, os.Mkdir(target, 0o755))
	if _, err := ExtractFile(context.Background(), arch, FormatTarGz, target, ExtractOptions{Logger: quietLogger}); err != nil {
		t.Fatal(err)
	}
	blocks := func(p string) int64 {
		var st syscall.Stat_t
		must(t, syscall.Stat(p, &st))
		return st.Blocks
	}
	if b := blocks(filepath.Join(target, "src/sparse")); b > 64 {
		t.Errorf("sparse file restored with %d blocks (holes filled)", b)
	}
	if b := blocks(filepath.Join(target, "src/zeros")); b < (1<<20)/512 {
		t.Errorf("dense zero file restored with %d blocks (made sparse)", b)
	}
	got, err := os.ReadFile(filepath.Join(target, "src/sparse"))
	must(t, err)
	if len(got) != 32<<20 || string(got[20<<20:20<<20+4]) != "data" {
		t.Errorf("sparse content wrong (len %d)", len(got))
	}
}
