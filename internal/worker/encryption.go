package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
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
//     it is encrypted (plainCheck: every entry, every checksum of the
//     compression format), so an archiver or compressor bug is caught
//     exactly as by the parse of an unencrypted archive;
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

// loadIdentities reads an identity file for verify/restore: age identities
// (AGE-SECRET-KEY-1…, one per line, as age-keygen writes them) or an
// unencrypted OpenSSH private key (ssh-ed25519 or ssh-rsa).
func loadIdentities(path string) ([]ageenc.Identity, error) {
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

// encryptingStream is the writer the producer writes the plaintext archive
// to when archives are encrypted: it encrypts it to out (the primary's
// writer, or the fan-out), hashes the ciphertext unless the fan-out does
// already, and feeds the plaintext to plainCheck.
//
// Write only copies p into a pooled buffer, and queues the buffer once it
// holds encryptBuf bytes (fewer, larger handoffs than the pipe's 64 KiB
// reads: each one may wake a goroutine): a goroutine encrypts it
// (chacha20poly1305), hashes and writes the ciphertext out, then hands the
// same buffer to the parse. The producer (the goroutine that drains the
// compressor's pipe) thus does one copy per write, so the compressor is
// not held up while a chunk is sealed, hashed and written, and the three
// run on different cores.
type encryptingStream struct {
	enc    io.WriteCloser
	sum    hash.Hash // nil: out is the fan-out, which hashes the ciphertext
	check  *plainCheck
	cur    []byte      // the buffer being filled
	q      chan []byte // plaintext buffers, to the encryptor
	done   chan struct{}
	mu     sync.Mutex
	err    error // the encryptor's first error
	closed bool
}

const (
	encryptQueue = 8         // buffers queued to the encryptor
	encryptBuf   = 256 << 10 // bytes per buffer
)

// newEncryptingStream encrypts to out; with hashed, it hashes the
// ciphertext itself (one primary: nothing else does).
func newEncryptingStream(ctx context.Context, out io.Writer, recipients []ageenc.Recipient, format string, hashed bool) (*encryptingStream, error) {
	s := &encryptingStream{q: make(chan []byte, encryptQueue), done: make(chan struct{})}
	if hashed {
		s.sum = sha256.New()
		out = io.MultiWriter(out, s.sum)
	}
	enc, err := ageenc.Encrypt(out, recipients...)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	s.enc, s.check = enc, newPlainCheck(ctx, format)
	go s.encryptor()
	return s, nil
}

// encryptor encrypts the queued buffers in order and passes each to the
// parse. After an error it only returns the buffers to the pool, so that
// a Write never blocks; the next Write returns the error.
func (s *encryptingStream) encryptor() {
	defer close(s.done)
	for b := range s.q {
		if s.failed() != nil {
			s.check.put(b)
			continue
		}
		if _, err := s.enc.Write(b); err != nil {
			s.check.put(b)
			s.fail(err)
			continue
		}
		if err := s.check.feed(b); err != nil {
			s.fail(err)
		}
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

// Write copies p for the encryptor; it fails once the encryption, the
// write of the ciphertext or the parse has failed.
func (s *encryptingStream) Write(p []byte) (int, error) {
	if err := s.failed(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		if s.cur == nil {
			s.cur = s.check.get(encryptBuf)[:0]
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
	s.closed = true
	if s.cur != nil {
		if flush && len(s.cur) > 0 {
			s.q <- s.cur
		} else {
			s.check.put(s.cur)
		}
		s.cur = nil
	}
	close(s.q)
	<-s.done
}

// finish waits for the encryptor, writes the last encrypted chunk and
// waits for the parse: its verdict on the plaintext, then the
// ciphertext's SHA-256 (nil when not hashed here).
func (s *encryptingStream) finish() ([]byte, error) {
	s.end(true)
	if err := s.failed(); err != nil {
		s.check.abort(err)
		return nil, err
	}
	if err := s.enc.Close(); err != nil {
		s.check.abort(err)
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	if err := s.check.wait(); err != nil {
		return nil, fmt.Errorf("verify the archive before encryption: %w", err)
	}
	if s.sum == nil {
		return nil, nil
	}
	return s.sum.Sum(nil), nil
}

// abort stops the encryptor and the parse after a failed stream.
func (s *encryptingStream) abort(err error) {
	if !s.closed {
		s.end(false)
		s.check.abort(err)
	}
}

// plainCheck parses the plaintext archive (archive.VerifyTar) in its own
// goroutine while it is produced. The encryptor queues each encrypted
// write's buffer (from the pool, see get); the parse reads the buffers in
// place (no pipe, no goroutine in between) and returns them to the pool,
// so the plaintext costs one copy and no garbage, and the stream waits
// for the parse only when it falls plainCheckQueue writes behind.
type plainCheck struct {
	q        chan []byte
	done     chan struct{}
	err      error // the parse's verdict, set before done closes
	once     sync.Once
	abortErr error // set by abort before q closes
	pool     sync.Pool
}

const plainCheckQueue = 8 // buffers of encryptBuf bytes

func newPlainCheck(ctx context.Context, format string) *plainCheck {
	c := &plainCheck{q: make(chan []byte, plainCheckQueue), done: make(chan struct{})}
	go func() {
		r := &queueReader{c: c}
		c.err = parsePlain(ctx, r, format)
		close(c.done)
		// Release a feed blocked on a full queue; feed fails from now on.
		for b := range c.q {
			c.put(b)
		}
	}()
	return c
}

// parsePlain parses the archive from r and refuses anything after its end.
func parsePlain(ctx context.Context, r io.Reader, format string) error {
	if _, err := archive.VerifyTar(ctx, r, format); err != nil {
		return err
	}
	// VerifyTar reads to the compressor's end; anything after it would
	// be in the archive too.
	if n, _ := io.Copy(io.Discard, r); n > 0 {
		return fmt.Errorf("%d bytes after the end of the compressed stream", n)
	}
	return nil
}

func (c *plainCheck) get(n int) []byte {
	if b, ok := c.pool.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}

func (c *plainCheck) put(b []byte) { c.pool.Put(&b) }

// queueReader reads the queued writes in order; EOF once the queue is
// closed, or abort's error.
type queueReader struct {
	c        *plainCheck
	buf, cur []byte
}

func (r *queueReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.buf != nil {
			r.c.put(r.buf)
			r.buf = nil
		}
		b, ok := <-r.c.q
		if !ok {
			if r.c.abortErr != nil {
				return 0, r.c.abortErr
			}
			return 0, io.EOF
		}
		r.buf, r.cur = b, b
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// feed queues b, which the parse returns to the pool once read; it fails
// (and returns b to the pool) once the parse has failed, which stops the
// stream early.
func (c *plainCheck) feed(b []byte) error {
	select {
	case <-c.done:
		c.put(b)
		if c.err != nil {
			return fmt.Errorf("verify the archive before encryption: %w", c.err)
		}
		return errors.New("verify the archive before encryption: data after the end of the archive")
	default:
	}
	c.q <- b
	return nil
}

// wait ends the input and returns the parse's verdict.
func (c *plainCheck) wait() error {
	c.once.Do(func() { close(c.q) })
	<-c.done
	return c.err
}

// abort ends the parse with err and waits for it.
func (c *plainCheck) abort(err error) {
	c.once.Do(func() {
		c.abortErr = err
		close(c.q)
	})
	<-c.done
}
