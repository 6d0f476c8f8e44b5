//go:build linux

package archive

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/backupgen/backupgen/internal/testtool"
)

// richTree makes, on a file system with xattrs and ACLs (XFS), a file with
// user and trusted xattrs and an access ACL, a directory with a default
// ACL, and a 64 MiB sparse file with three small data blocks ending in a
// hole.
func richTree(t *testing.T, data string) {
	t.Helper()
	mustWrite(t, filepath.Join(data, "f.txt"), []byte("hello\n"), 0o640)
	mustWrite(t, filepath.Join(data, "sub", "inner.txt"), []byte("inner\n"), 0o644)
	run := func(name string, args ...string) {
		t.Helper()
		if b, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, b)
		}
	}
	f := filepath.Join(data, "f.txt")
	run("setfattr", "-n", "user.comment", "-v", "hello world", f)
	run("setfattr", "-n", "trusted.origin", "-v", "0x00ff10", f)
	run("setfacl", "-m", "u:65534:r,g:100:rw", f)
	run("setfacl", "-d", "-m", "u:65534:rx", filepath.Join(data, "sub"))
	sp := filepath.Join(data, "sparse.img")
	fd, err := os.Create(sp)
	must(t, err)
	for _, off := range []int64{0, 10 << 20, 40 << 20} {
		_, err := fd.WriteAt(pseudoRandom(8192, off), off)
		must(t, err)
	}
	must(t, fd.Truncate(64<<20))
	must(t, fd.Close())
}

// attrsOf lists a path's xattrs (all namespaces, values hex) and ACLs as
// getfattr and getfacl print them, without the file name lines.
func attrsOf(t *testing.T, p string) string {
	t.Helper()
	xa, err := exec.Command("getfattr", "--absolute-names", "-d", "-m", "-", "-e", "hex", p).Output()
	must(t, err)
	acl, err := exec.Command("getfacl", "--absolute-names", "-n", "--omit-header", p).Output()
	must(t, err)
	var out []string
	for _, l := range strings.Split(string(xa)+string(acl), "\n") {
		if l != "" && !strings.HasPrefix(l, "# file:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func blocksOf(t *testing.T, p string) int64 {
	var st syscall.Stat_t
	must(t, syscall.Stat(p, &st))
	return st.Blocks
}

// TestXattrsACLsSparseGNUTar (issue 10 item 12): Write, Capture and
// WriteTree from a reflink Clone store
// xattrs (user.*, trusted.*), POSIX ACLs (access and default) and holes the
// way GNU tar --xattrs --acls --sparse does; GNU tar extracts them with
// `--xattrs --xattrs-include='*' --acls` to the same getfattr/getfacl
// output, and the sparse file's content is identical while its allocated
// blocks stay far below its size. The archive itself holds only the data
// blocks.
func TestXattrsACLsSparseGNUTar(t *testing.T) {
	for _, tool := range []string{"tar", "setfattr", "getfattr", "setfacl", "getfacl"} {
		requireTool(t, tool)
	}
	mnt := filepath.Join(t.TempDir(), "xfs")
	testtool.MountXFS(t, mnt, "300M")
	data := filepath.Join(mnt, "data")
	richTree(t, data)
	for _, mode := range []string{"write", "capture", "reflink"} {
		t.Run(mode, func(t *testing.T) {
			arch := filepath.Join(mnt, mode+".tar")
			f, err := os.Create(arch)
			must(t, err)
			opts := Options{Format: FormatTarXz, Logger: quietLogger}
			switch mode {
			case "capture":
				_, err = Capture(context.Background(), f, []string{data}, opts)
			case "reflink":
				// The reflink copy keeps the xattrs and ACLs, so the
				// archive written from it has them too.
				stage := filepath.Join(mnt, "stage")
				_, err = Clone(context.Background(), stage, []string{data}, opts)
				must(t, err)
				roots, release, err2 := OpenClone(stage, []string{data})
				must(t, err2)
				_, err = WriteTree(context.Background(), f, roots, opts)
				release()
				defer RemoveTree(stage)
			default:
				_, err = Write(context.Background(), f, []string{data}, opts)
			}
			must(t, err)
			must(t, f.Close())
			if fi, _ := os.Stat(arch); mode == "capture" && fi.Size() > 1<<20 {
				t.Errorf("capture of a 64 MiB sparse file is %d bytes: holes stored", fi.Size())
			}
			out := filepath.Join(mnt, mode+"-out")
			must(t, os.Mkdir(out, 0o755))
			cmd := exec.Command("tar", "--xattrs", "--xattrs-include=*", "--acls", "-xf", arch, "-C", out)
			if b, err := cmd.CombinedOutput(); err != nil || len(b) > 0 {
				t.Fatalf("GNU tar: %v\n%s", err, b)
			}
			got := filepath.Join(out, EntryName(data))
			for _, p := range []string{"f.txt", "sub", "sub/inner.txt"} {
				if w, g := attrsOf(t, filepath.Join(data, p)), attrsOf(t, filepath.Join(got, p)); w != g {
					t.Errorf("%s: extracted attributes\n%s\nwant\n%s", p, g, w)
				}
			}
			if !strings.Contains(attrsOf(t, filepath.Join(got, "f.txt")), "user.comment=0x68656c6c6f20776f726c64") {
				t.Errorf("user.comment missing")
			}
			want, _ := os.ReadFile(filepath.Join(data, "sparse.img"))
			gotb, _ := os.ReadFile(filepath.Join(got, "sparse.img"))
			if !bytes.Equal(want, gotb) {
				t.Errorf("sparse file content differs (%d vs %d bytes)", len(gotb), len(want))
			}
			if b := blocksOf(t, filepath.Join(got, "sparse.img")); b*512 > 1<<20 {
				t.Errorf("extracted sparse file allocates %d blocks (%s bytes): holes lost", b, strconv.FormatInt(b*512, 10))
			}
			// Go's reader (Verify, ExtractFile) reads the sparse entry as
			// its full content.
			if mode == "write" {
				if _, err := VerifyFile(context.Background(), arch, FormatTarXz); err != nil {
					t.Errorf("Verify: %v", err)
				}
				ex := filepath.Join(mnt, "extracted")
				must(t, os.Mkdir(ex, 0o755))
				if _, err := ExtractFile(context.Background(), arch, FormatTarXz, ex, ExtractOptions{}); err != nil {
					t.Errorf("ExtractFile: %v", err)
				} else if b, _ := os.ReadFile(filepath.Join(ex, EntryName(data), "sparse.img")); !bytes.Equal(b, want) {
					t.Errorf("ExtractFile: sparse content differs")
				}
			}
		})
	}
}
