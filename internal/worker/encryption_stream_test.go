package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ageenc "filippo.io/age"

	"github.com/backupgen/backupgen/internal/archive"
)

// plainArchive writes a tar.gz of a few MiB of incompressible data (so
// that the stream spans many encryptor buffers and the pool recycles
// them) and returns it.
func plainArchive(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	for i, n := range []int{3 << 20, 1 << 20, 12345} {
		if err := os.WriteFile(filepath.Join(dir, "f"+string(rune('a'+i))), randomBytes(t, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := archive.Write(context.Background(), &buf, []string{dir}, archive.Options{Format: "tar.gz", Threads: 2}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeInPieces writes data to w in pieces of the sizes a pipe and the
// archiver produce, smaller and larger than the encryptor's buffers.
func writeInPieces(w io.Writer, data []byte) error {
	sizes := []int{65536, 1, 300 << 10, 4096, 65535}
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// TestEncryptingStreamRoundTrip: the ciphertext the encryptor goroutine
// writes decrypts to exactly the bytes written, its SHA-256 is the one
// finish returns (nil when the fan-out hashes), across buffers reused
// from the free list.
func TestEncryptingStreamRoundTrip(t *testing.T) {
	plain := plainArchive(t)
	id, err := ageenc.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for _, hashed := range []bool{true, false} {
		var out bytes.Buffer
		s, err := newEncryptingStream(&out, []ageenc.Recipient{id.Recipient()}, hashed)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeInPieces(s, plain); err != nil {
			t.Fatal(err)
		}
		sum, err := s.finish()
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(out.Bytes()); hashed && (sum == nil || !bytes.Equal(sum.SHA256, want[:])) || !hashed && sum != nil {
			t.Fatalf("hashed=%v: finish returned %+v, the ciphertext has SHA-256 %x", hashed, sum, want)
		}
		if crc := archive.NewCRC64(); hashed {
			crc.Write(out.Bytes())
			if sum.CRC64 != crc.Sum64() || sum.Size != int64(out.Len()) {
				t.Fatalf("finish returned CRC-64 %016x and %d bytes, the ciphertext has %016x and %d", sum.CRC64, sum.Size, crc.Sum64(), out.Len())
			}
		}
		r, err := ageenc.Decrypt(&out, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("hashed=%v: decrypted %d bytes differ from the %d written", hashed, len(got), len(plain))
		}
	}
}

// failingWriter fails every write after the first ok bytes, as a fan-out
// whose destinations all failed does.
type failingWriter struct{ ok int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.ok < len(p) {
		return 0, errors.New("every destination failed")
	}
	w.ok -= len(p)
	return len(p), nil
}

// TestEncryptingStreamOutputFails: a failed write of the ciphertext (done
// by the encryptor goroutine) fails the stream: a later Write or finish
// returns it, and nothing blocks.
func TestEncryptingStreamOutputFails(t *testing.T) {
	plain := plainArchive(t)
	id, _ := ageenc.GenerateX25519Identity()
	s, err := newEncryptingStream(&failingWriter{ok: 1 << 20}, []ageenc.Recipient{id.Recipient()}, true)
	if err != nil {
		t.Fatal(err)
	}
	werr := writeInPieces(s, plain)
	_, ferr := s.finish()
	if ferr == nil || !strings.Contains(ferr.Error(), "every destination failed") {
		t.Fatalf("finish = %v (Write: %v), want the write error", ferr, werr)
	}
}

// TestEncryptingStreamAbort: abort after a failed producer stops the
// encryptor goroutine and returns at once, with buffers still queued.
func TestEncryptingStreamAbort(t *testing.T) {
	plain := plainArchive(t)
	id, _ := ageenc.GenerateX25519Identity()
	var out bytes.Buffer
	s, err := newEncryptingStream(&out, []ageenc.Recipient{id.Recipient()}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeInPieces(s, plain[:len(plain)/2]); err != nil {
		t.Fatal(err)
	}
	s.abort()
	select {
	case <-s.done:
	default:
		t.Fatal("the encryptor still runs after abort")
	}
	s.abort() // a second abort (a deferred cleanup) is harmless
}
