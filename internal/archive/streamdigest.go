package archive

import (
	"crypto/sha256"
	"hash"

	"github.com/minio/crc64nvme"
)

// Digest identifies an archive stream twice over: by its SHA-256, which
// the archive's .sha256 file and its signature carry, and by its length
// and CRC-64 (NVMe polynomial), which is what the re-read of a local copy
// after its fsync is compared with. The copy on disk is written by root,
// mode 0600, and nobody else can write it until it is committed, so the
// re-read guards against accidental damage (a flipped bit, a lost or
// truncated write), which a 64-bit CRC and the length catch (every error
// burst of up to 64 bits, any other with probability 1 − 2⁻⁶⁴), at 25×
// the speed of SHA-256 here. The SHA-256 that gets signed is always the
// stream's, the bytes that were parsed, never one computed from the disk.
type Digest struct {
	SHA256 []byte
	CRC64  uint64
	Size   int64
}

// Digester computes the Digest of what is written to it.
type Digester struct {
	sha hash.Hash
	crc hash.Hash64
	n   int64
}

// NewDigester returns an empty Digester.
func NewDigester() *Digester {
	return &Digester{sha: sha256.New(), crc: crc64nvme.New()}
}

// Write hashes p; it never fails.
func (d *Digester) Write(p []byte) (int, error) {
	d.sha.Write(p)
	d.crc.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}

// Digest is the Digest of everything written so far.
func (d *Digester) Digest() Digest {
	return Digest{SHA256: d.sha.Sum(nil), CRC64: d.crc.Sum64(), Size: d.n}
}

// NewCRC64 returns the CRC-64 of a Digest, for a re-read to compare with
// Digest.CRC64.
func NewCRC64() hash.Hash64 { return crc64nvme.New() }
