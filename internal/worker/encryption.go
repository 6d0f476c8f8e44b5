package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	ageenc "filippo.io/age"
	"filippo.io/age/agessh"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
)

// Encryption (backup.encryption). The archive stream is encrypted with age
// once, before the fan-out, so every destination (whatever its kind)
// receives the same ciphertext, and its .sha256 and .sig are of the
// ciphertext: list, verify, prune and the trust checks need no identity.
//
// The host holds public keys only, so the written archive cannot be
// decrypted to parse it (step 4 of the write protocol in dest.go). What is
// verified instead:
//   - the plaintext stream is parsed in full while it is produced, before
//     it is encrypted (archive.StreamCheck, as for an unencrypted archive:
//     every entry, every checksum of the compression format, the counts
//     against the archiver's), so an archiver or compressor bug is caught
//     exactly as in an unencrypted archive;
//   - the ciphertext is hashed as it leaves the encryptor, and every
//     destination's copy, re-read after fsync, must have that SHA-256:
//     what was written is what was encrypted.
//
// Only the age encryption itself is taken on trust (filippo.io/age;
// `backup-worker verify --identity FILE` decrypts and parses a stored
// archive end to end). zip is refused with encryption (config): its
// central directory is at the end, so it can be neither parsed while it is
// produced nor extracted from a decrypting stream.

// ageCredential is the LoadCredential= name of backup.encryption.recipientsFile.
const ageCredential = "age-recipients"

// loadRecipients returns the recipients of the config (nil: not encrypted).
// A recipients file is read through the credential when systemd passed it.
func loadRecipients(cfg *config.Config) ([]ageenc.Recipient, error) {
	if !cfg.Backup.Encrypted() {
		return nil, nil
	}
	e := cfg.Backup.Encryption
	var out []ageenc.Recipient
	for i, s := range e.Recipients {
		r, err := config.ParseRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("backup.encryption.recipients[%d]: %w", i, err)
		}
		out = append(out, r)
	}
	if e.RecipientsFile != "" {
		data, err := readCredential(ageCredential, e.RecipientsFile)
		if err != nil {
			return nil, fmt.Errorf("backup.encryption.recipientsFile: %w", err)
		}
		rs, err := config.ParseRecipientsFile(data, e.RecipientsFile)
		if err != nil {
			return nil, fmt.Errorf("backup.encryption.recipientsFile: %w", err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// LoadIdentities reads an identity file for verify/restore: age identities
// (AGE-SECRET-KEY-1…, one per line, as age-keygen writes them) or an
// unencrypted OpenSSH private key (ssh-ed25519 or ssh-rsa).
func LoadIdentities(path string) ([]ageenc.Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		id, err := agessh.ParseIdentity(data)
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w (passphrase-protected keys are not supported)", path, err)
		}
		return []ageenc.Identity{id}, nil
	}
	ids, err := ageenc.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	return ids, nil
}

// decryptReader returns the plaintext of the age file r with ids.
func decryptReader(r io.Reader, ids []ageenc.Identity) (io.Reader, error) {
	pr, err := ageenc.Decrypt(r, ids...)
	if err != nil {
		var noMatch *ageenc.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, fmt.Errorf("decrypt: the identity is not one of the archive's recipients")
		}
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return pr, nil
}

// isEncryptedName reports whether an archive file name is an encrypted one.
func isEncryptedName(name string) bool { return strings.HasSuffix(name, config.EncryptedSuffix) }

// verifyEncrypted decrypts the age file in f (size bytes) with ids and
// parses the plaintext archive in full.
func verifyEncrypted(ctx context.Context, f io.ReaderAt, size int64, format string, ids []ageenc.Identity) error {
	pr, err := decryptReader(io.NewSectionReader(f, 0, size), ids)
	if err != nil {
		return err
	}
	_, err = archive.VerifyTar(ctx, pr, format)
	return err
}

// encryptingStream is the writer the checked plaintext archive goes to when
// archives are encrypted (phase_stream.go: the archive.StreamCheck before
// it parses the plaintext): it encrypts it to out (the primary's writer,
// or the fan-out) and hashes the ciphertext unless the fan-out does
// already.
//
// Write only copies p into a buffer from a small free list and queues the
// buffer once it holds encryptBuf bytes (fewer, larger handoffs: each may
// wake a goroutine); a goroutine encrypts it (chacha20poly1305), hashes
// and writes the ciphertext out. The producer (the goroutine that drains
// the compressor) thus does one copy per write, and is not held up while
// a chunk is sealed, hashed and written: the two run on different cores.
type encryptingStream struct {
	enc    io.WriteCloser
	sum    *archive.Digester // nil: out is the fan-out, which hashes the ciphertext
	cur    []byte            // the buffer being filled
	q      chan []byte       // full buffers, to the encryptor
	free   chan []byte       // empty buffers, back from the encryptor
	done   chan struct{}
	mu     sync.Mutex
	err    error // the encryptor's first error
	closed bool
}

const (
	encryptQueue = 8         // buffers in flight
	encryptBuf   = 256 << 10 // bytes per buffer
)

// newEncryptingStream encrypts to out; with hashed, it hashes the
// ciphertext itself (one primary: nothing else does).
func newEncryptingStream(out io.Writer, recipients []ageenc.Recipient, hashed bool) (*encryptingStream, error) {
	s := &encryptingStream{q: make(chan []byte, encryptQueue), free: make(chan []byte, encryptQueue), done: make(chan struct{})}
	if hashed {
		s.sum = archive.NewDigester()
		out = io.MultiWriter(out, s.sum)
	}
	enc, err := ageenc.Encrypt(out, recipients...)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	s.enc = enc
	for range encryptQueue {
		s.free <- make([]byte, 0, encryptBuf)
	}
	go s.encryptor()
	return s, nil
}

// encryptor encrypts the queued buffers in order. After an error it only
// returns the buffers to the free list, so that a Write never blocks; the
// next Write returns the error.
func (s *encryptingStream) encryptor() {
	defer close(s.done)
	for b := range s.q {
		if s.failed() == nil {
			if _, err := s.enc.Write(b); err != nil {
				s.fail(fmt.Errorf("encrypt: %w", err))
			}
		}
		s.free <- b[:0]
	}
}

func (s *encryptingStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *encryptingStream) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Write copies p for the encryptor; it fails once the encryption or the
// write of the ciphertext has failed.
func (s *encryptingStream) Write(p []byte) (int, error) {
	if err := s.failed(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		if s.cur == nil {
			s.cur = <-s.free
		}
		k := copy(s.cur[len(s.cur):cap(s.cur)], p)
		s.cur, p = s.cur[:len(s.cur)+k], p[k:]
		if len(s.cur) == cap(s.cur) {
			s.q <- s.cur
			s.cur = nil
		}
	}
	return n, nil
}

// end queues the last, partly filled buffer (flush) or drops it, and
// waits for the encryptor.
func (s *encryptingStream) end(flush bool) {
	if s.closed {
		return
	}
	s.closed = true
	if s.cur != nil && flush && len(s.cur) > 0 {
		s.q <- s.cur
	}
	s.cur = nil
	close(s.q)
	<-s.done
}

// finish waits for the encryptor, writes the last encrypted chunk and
// returns the ciphertext's Digest (nil when not hashed here).
func (s *encryptingStream) finish() (*archive.Digest, error) {
	s.end(true)
	if err := s.failed(); err != nil {
		return nil, err
	}
	if err := s.enc.Close(); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if s.sum == nil {
		return nil, nil
	}
	d := s.sum.Digest()
	return &d, nil
}

// abort stops the encryptor after a failed stream.
func (s *encryptingStream) abort() { s.end(false) }
