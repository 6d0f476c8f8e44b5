package hostkey

import (
	"crypto/sha256"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// TestLoadCreatesRootOnlyKey: on first use the key is created 0600 and
// owned by the worker's user (root) in a 0700 directory; a second Load
// reads the same key.
func TestLoadCreatesRootOnlyKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lib", "backup-worker", "signing.key")
	k, err := Load(path, true)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
			t.Errorf("%s: owner %d, want %d", p, uid, os.Geteuid())
		}
	}
	k2, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if k.Public() != k2.Public() {
		t.Error("second Load returned another key")
	}
	sum := sha256.Sum256([]byte("x"))
	sig := k.SignatureFile("app-20240101T000000Z.tar.gz", sum[:], 1)
	if err := k2.VerifyFile(sig, "app-20240101T000000Z.tar.gz", sum[:], 1); err != nil {
		t.Errorf("own signature: %v", err)
	}
	// Bound to name, content and size.
	for _, c := range []struct {
		name string
		size int64
		sum  [32]byte
	}{
		{"app-20240101T000001Z.tar.gz", 1, sum},
		{"app-20240101T000000Z.tar.gz", 2, sum},
		{"app-20240101T000000Z.tar.gz", 1, sha256.Sum256([]byte("y"))},
	} {
		if err := k.VerifyFile(sig, c.name, c.sum[:], c.size); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%+v: err %v, want ErrBadSignature", c, err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.key"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing key without create: %v", err)
	}
}

// TestLoadRefusesUnsafeKey: a key readable by others, owned by another
// user, a symlink, or in a directory others can write is refused, never
// used or replaced.
func TestLoadRefusesUnsafeKey(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to nobody")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	for name, spoil := range map[string]func(t *testing.T, path string){
		"world-readable":  func(t *testing.T, path string) { os.Chmod(path, 0o644) },
		"group-readable":  func(t *testing.T, path string) { os.Chmod(path, 0o640) },
		"owned by nobody": func(t *testing.T, path string) { os.Chown(path, uid, -1) },
		"directory writable by others": func(t *testing.T, path string) {
			os.Chmod(filepath.Dir(path), 0o777)
		},
		"directory owned by nobody": func(t *testing.T, path string) { os.Chown(filepath.Dir(path), uid, -1) },
		"symlink": func(t *testing.T, path string) {
			os.Rename(path, path+".real")
			os.Symlink(path+".real", path)
		},
		"fifo": func(t *testing.T, path string) {
			os.Remove(path)
			syscall.Mkfifo(path, 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys", "signing.key")
			if _, err := Load(path, true); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			spoil(t, path)
			if _, err := Load(path, true); err == nil {
				t.Fatal("unsafe key accepted")
			} else {
				t.Log(err)
			}
			if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
				if after, _ := os.ReadFile(path); string(after) != string(before) {
					t.Error("the key was replaced")
				}
			}
		})
	}
}
