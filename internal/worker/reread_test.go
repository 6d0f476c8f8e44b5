package worker

// The re-read after the fsync compares the copy's length and CRC-64 with
// the stream's (archive.Digest); what is signed is the stream's SHA-256.
// See docs/RELIABILITY.md, "gzrun: the re-read by CRC-64".

import (
	"crypto/sha256"
	"encoding/hex"
	"math/bits"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/backupgen/backupgen/internal/archive"
)

// crcOf is the CRC-64 the re-read computes.
func crcOf(b []byte) uint64 {
	h := archive.NewCRC64()
	h.Write(b)
	return h.Sum64()
}

// crcBlindDamage flips bits in the middle of the file at path so that its
// length and CRC-64 stay what they were: a CRC is linear, so among any 65
// single-bit flips some set cancels out (found by Gaussian elimination
// over GF(2)). Only a deliberate edit does this; random damage keeps the
// CRC-64 with probability 2⁻⁶⁴.
func crcBlindDamage(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil || len(data) < 64 {
		t.Errorf("read %s: %v (%d bytes)", path, err, len(data))
		return
	}
	base, start := crcOf(data), len(data)/2
	flip := func(mask [2]uint64) {
		for j := range 128 {
			if mask[j/64]>>(j%64)&1 == 1 {
				data[start+j/8] ^= 1 << (j % 8)
			}
		}
	}
	type row struct {
		v    uint64    // the CRC-64 difference of ...
		mask [2]uint64 // ... flipping these bits
	}
	basis := map[int]row{} // by the row's highest bit
	for j := range 128 {
		r := row{mask: [2]uint64{}}
		r.mask[j/64] = 1 << (j % 64)
		flip(r.mask)
		r.v = crcOf(data) ^ base
		flip(r.mask)
		for r.v != 0 {
			p := bits.Len64(r.v) - 1
			b, ok := basis[p]
			if !ok {
				basis[p] = r
				break
			}
			r.v ^= b.v
			r.mask[0] ^= b.mask[0]
			r.mask[1] ^= b.mask[1]
		}
		if r.v != 0 {
			continue
		}
		flip(r.mask)
		if crcOf(data) != base {
			t.Error("the damage changes the CRC-64")
			return
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err == nil {
			_, err = f.WriteAt(data[start:start+16], int64(start))
			f.Close()
		}
		if err != nil {
			t.Error(err)
		}
		return
	}
	t.Error("no set of flips keeps the CRC-64")
}

// TestRunRereadDamageKeepingTheCRC: damage made on disk between the fsync
// and the re-read that keeps the copy's length and CRC-64 passes the
// re-read, but the archive's .sha256 and signature are the SHA-256 of the
// stream that was parsed, never one computed from the disk: the damaged
// archive does not match them, and verify reports it. (Had the re-read
// computed the SHA-256 that is signed, the damage would be signed as good,
// and this test would fail.)
func TestRunRereadDamageKeepingTheCRC(t *testing.T) {
	e := newTestEnv(t)
	e.dests = e.dests[:1]
	e.setUnit("app.service", "active")
	var hits atomic.Int32
	e.seams.beforeReread = corruptTempIn(t, e.dests[0], crcBlindDamage, &hits)
	cfgPath := e.configFile([]string{"app.service"}, nil)
	code := e.run(e.loadConfig(cfgPath))
	if hits.Load() != 1 {
		t.Fatalf("damaged %d files, want 1", hits.Load())
	}
	got := archivesIn(t, e.dests[0], "tar.gz")
	if code != ExitOK {
		// A re-read that sees this damage is stronger still: then
		// nothing may be committed.
		if len(got) != 0 {
			t.Fatalf("exit %d, yet %v committed", code, got)
		}
		return
	}
	if len(got) != 1 {
		t.Fatalf("archives %v, want 1", got)
	}
	path := e.dests[0] + "/" + got[0]
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	side, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); strings.HasPrefix(string(side), hex.EncodeToString(sum[:])) {
		t.Fatalf("the .sha256 is the damaged file's SHA-256: the disk's content was signed")
	}
	code, out, _ := e.verifyCmd(cfgPath, VerifyOptions{})
	if code != ExitFailed || !strings.Contains(out, "FAILED "+path) {
		t.Fatalf("verify: exit %d, want %d and FAILED %s:\n%s", code, ExitFailed, path, out)
	}
}

// TestHeldCheck: a re-read copy matches the stream only with its length
// and CRC-64; a remote copy by its SHA-256.
func TestHeldCheck(t *testing.T) {
	sum := sha256.Sum256([]byte("stream"))
	want := &archive.Digest{SHA256: sum[:], CRC64: crcOf([]byte("stream")), Size: 6}
	other := sha256.Sum256([]byte("other"))
	for _, tc := range []struct {
		name string
		h    held
		err  string
	}{
		{"re-read, same", held{crc: want.CRC64, size: 6}, ""},
		{"re-read, longer", held{crc: want.CRC64, size: 7}, "written copy has 7 bytes, the stream had 6"},
		{"re-read, other CRC-64", held{crc: want.CRC64 ^ 1, size: 6}, "written copy has CRC-64"},
		{"sent, same", held{sha: sum[:]}, ""},
		{"sent, other SHA-256", held{sha: other[:], crc: want.CRC64, size: 6}, "written copy has SHA-256"},
	} {
		err := tc.h.check(want, "the stream")
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}
