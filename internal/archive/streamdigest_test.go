package archive

import (
	"bytes"
	"crypto/sha256"
	"hash/crc64"
	"testing"
)

// TestDigester: the Digest of bytes written in any pieces is their
// SHA-256, their length and their CRC-64 with the NVMe polynomial
// (checked against the standard library's table-driven CRC-64 of that
// polynomial: init and final XOR all ones).
func TestDigester(t *testing.T) {
	data := pseudoRandom(3<<20+17, 5)
	table := crc64.MakeTable(0x9a6c9329ac4bc9b5)
	want := crc64.Checksum(data, table) // inverted before and after, as CRC-64/NVME is
	for _, piece := range []int{1 << 20, 4097, len(data)} {
		d := NewDigester()
		for b := data; len(b) > 0; {
			n := min(piece, len(b))
			d.Write(b[:n])
			b = b[n:]
		}
		got := d.Digest()
		if sum := sha256.Sum256(data); !bytes.Equal(got.SHA256, sum[:]) || got.Size != int64(len(data)) || got.CRC64 != want {
			t.Errorf("pieces of %d: %x, %d bytes, CRC-64 %016x; want %x, %d, %016x", piece, got.SHA256, got.Size, got.CRC64, sum, len(data), want)
		}
	}
	// The CRC-64/NVME check value.
	if c := NewCRC64(); func() uint64 { c.Write([]byte("123456789")); return c.Sum64() }() != 0xae8b14860a799888 {
		t.Errorf("CRC-64 of 123456789 = %016x, want ae8b14860a799888", c.Sum64())
	}
}
