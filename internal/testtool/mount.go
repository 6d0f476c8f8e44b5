package testtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// MountTmpfs mounts a tmpfs of size (mount's size= syntax, e.g. "512k") at
// dir, creating dir, and unmounts it when the test ends. Without root (or in
// a namespace that cannot mount) the test is skipped.
func MountTmpfs(t testing.TB, dir, size string) {
	t.Helper()
	mount(t, dir, "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir)
}

// MountXFS creates an XFS file system with reflink support in a sparse image
// of size (truncate's syntax, at least "300M") and loop-mounts it at dir,
// creating dir; unmounted when the test ends. It needs root and mkfs.xfs
// (xfsprogs): skipped without root, and without mkfs.xfs as Require does.
func MountXFS(t testing.TB, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount a file system")
	}
	mkfs := Require(t, "mkfs.xfs", "xfsprogs")
	img := filepath.Join(t.TempDir(), "xfs.img")
	run(t, "truncate", "-s", size, img)
	run(t, mkfs, "-q", "-m", "reflink=1", img)
	mount(t, dir, "-o", "loop", img, dir)
}

// MountExt4 creates an ext4 file system in a sparse image of size
// (truncate's syntax) and loop-mounts it at dir, creating dir; unmounted
// when the test ends. It needs root and mkfs.ext4 (e2fsprogs): skipped
// without root, and without mkfs.ext4 as Require does.
func MountExt4(t testing.TB, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount a file system")
	}
	mkfs := Require(t, "mkfs.ext4", "e2fsprogs")
	img := filepath.Join(t.TempDir(), "ext4.img")
	run(t, "truncate", "-s", size, img)
	run(t, mkfs, "-q", "-F", img)
	mount(t, dir, "-o", "loop", img, dir)
}

func mount(t testing.TB, dir string, args ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a file system")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Skipf("cannot mount at %s (needs a mount-capable namespace): %v %s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
