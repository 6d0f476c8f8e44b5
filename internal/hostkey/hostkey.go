// Package hostkey holds the worker's root-only ed25519 signing key.
//
// The destinations belong to the service user, who can write any file
// there, including an archive and a matching .sha256. A checksum therefore
// proves nothing against that user; a signature made with a key only root
// can read does. The worker signs every archive it commits (its final base
// name, SHA-256 and size) and trusts for retention and restore only
// archives whose signature verifies.
//
// The key file holds the 32-byte ed25519 seed as PKCS#8 PEM (openssl can
// read it). It must be a regular file owned by the worker's effective user
// (root) with no group or other permission bits, in a directory owned by
// that user that nobody else can write: the directory is opened with
// O_NOFOLLOW and the key relative to it, so neither can be swapped for a
// symlink.
package hostkey

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultPath is where the key lives unless backup.signingKey says otherwise.
const DefaultPath = "/var/lib/backup-worker/signing.key"

// maxKeyFile bounds what is read from the key file.
const maxKeyFile = 4 << 10

// Key is a loaded signing key.
type Key struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// Load reads the key at path. With create, a missing key (and a missing
// directory, 0700) is created: a new random key, 0600, written under a
// temp name and linked into place without replacing a key created
// meanwhile. The file and its directory are checked as described in the
// package comment; a key that fails the checks is refused, never replaced.
func Load(path string, create bool) (*Key, error) {
	dir, base := filepath.Split(path)
	if !filepath.IsAbs(path) || base == "" {
		return nil, fmt.Errorf("signing key %q: not an absolute file path", path)
	}
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("signing key directory: %w", err)
		}
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("signing key directory %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	if err := checkOwner(dfd, dir, true); err != nil {
		return nil, err
	}
	k, err := readKey(dfd, path, base)
	if errors.Is(err, os.ErrNotExist) && create {
		if err := createKey(dfd, base); err != nil {
			return nil, fmt.Errorf("create signing key %s: %w", path, err)
		}
		k, err = readKey(dfd, path, base)
	}
	return k, err
}

// checkOwner refuses a file or directory not owned by the effective user,
// or (dir) writable by others, or (key file) accessible by others at all.
func checkOwner(fd int, path string, dir bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s: owned by uid %d, not by uid %d; refusing it for the signing key", path, st.Uid, os.Geteuid())
	}
	perm := st.Mode & 0o7777
	switch {
	case dir && perm&0o022 != 0:
		return fmt.Errorf("%s: mode %04o lets others write it; refusing it for the signing key (chmod 0700)", path, perm)
	case !dir && st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s: not a regular file", path)
	case !dir && perm&0o077 != 0:
		return fmt.Errorf("%s: mode %04o lets others read or write it; refusing the signing key (chmod 0600)", path, perm)
	}
	return nil
}

func readKey(dfd int, path, base string) (*Key, error) {
	fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return nil, fmt.Errorf("signing key %s: %w", path, os.ErrNotExist)
		}
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := checkOwner(fd, path, false); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("signing key %s: larger than %d bytes", path, maxKeyFile)
	}
	return parse(data, path)
}

func parse(data []byte, path string) (*Key, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: not a PEM \"PRIVATE KEY\"", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an ed25519 key", path)
	}
	return &Key{priv: priv, pub: priv.Public().(ed25519.PublicKey)}, nil
}

// createKey writes a new key under a temp name in the directory and links
// it to base; EEXIST (another process won) is not an error.
func createKey(dfd int, base string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := "." + base + ".tmp-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Unlinkat(dfd, tmp, 0)
	f := os.NewFile(uintptr(fd), tmp)
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return werr
	}
	if err := unix.Linkat(dfd, tmp, dfd, base, 0); err != nil && err != unix.EEXIST {
		return err
	}
	return unix.Fsync(dfd)
}

// sigDomain separates these signatures from any other use of the key.
const sigDomain = "backupgen archive signature v1\x00"

// message is what gets signed: the archive's final base name, its SHA-256
// and its size, so a signature cannot be moved to another name (another
// service, another time) or to other content.
func message(name string, sum []byte, size int64) []byte {
	var b bytes.Buffer
	b.WriteString(sigDomain)
	b.WriteString("name=" + name + "\x00")
	b.WriteString("sha256=" + hex.EncodeToString(sum) + "\x00")
	b.WriteString("size=" + strconv.FormatInt(size, 10) + "\x00")
	return b.Bytes()
}

// sigPrefix starts the one line of a signature file.
const sigPrefix = "ed25519 "

// MaxSigFile bounds what a reader takes from a signature file.
const MaxSigFile = 1 << 10

// SignatureFile returns the content of NAME.sig for the archive.
func (k *Key) SignatureFile(name string, sum []byte, size int64) []byte {
	sig := ed25519.Sign(k.priv, message(name, sum, size))
	return []byte(sigPrefix + hex.EncodeToString(sig) + "\n")
}

// ErrBadSignature: the signature file is well formed but does not match.
var ErrBadSignature = errors.New("signature does not match (not written by this host's worker, or altered)")

// VerifyFile checks the content of NAME.sig against the archive's name,
// SHA-256 and size.
func (k *Key) VerifyFile(data []byte, name string, sum []byte, size int64) error {
	line := strings.TrimSuffix(string(data), "\n")
	h, ok := strings.CutPrefix(line, sigPrefix)
	if !ok || strings.ContainsAny(h, "\n ") {
		return errors.New("malformed signature file")
	}
	sig, err := hex.DecodeString(h)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("malformed signature file")
	}
	if !ed25519.Verify(k.pub, message(name, sum, size), sig) {
		return ErrBadSignature
	}
	return nil
}

// Public returns the public half, hex-encoded (for logs and docs).
func (k *Key) Public() string { return hex.EncodeToString(k.pub) }
