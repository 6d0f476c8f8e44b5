package archive

import (
	"compress/bzip2"
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"

	"github.com/backupgen/backupgen/internal/config"
	dbzip2 "github.com/dsnet/compress/bzip2"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/ulikunitz/xz"
)

// pgzip compresses 1 MiB blocks, up to 2*threads of them in flight (the
// extra ones keep every core busy while the walker reads the next files).
const pgzipBlockSize = 1 << 20

// The tar.gz and zip default level (config.LevelRange) is 4: klauspost/
// compress level 4 is 2.5-3x faster than zlib (gzip, pigz, zip) at level 6
// while its output is only ~1.5% larger on the bench corpus (level 6: 3.3x
// less CPU, same size; see bench/results.md).

// newCompressor returns the stream compressor for a tar format: a native
// compressor process for xz, bzip2 and zstd when one is on PATH (see
// native.go), the pure-Go encoder otherwise. For tar.zst it also sums the
// tar stream (tarSumOf).
func newCompressor(ctx context.Context, w io.Writer, format string, level, threads int, log *slog.Logger) (io.WriteCloser, error) {
	c, err := newStreamCompressor(ctx, w, format, level, threads, log)
	if err == nil && format == FormatTarZst {
		// The stream check compares the zstd frame's content checksum
		// with the XXH64 of what went in (TarSum, StreamCheck.Finish).
		c = newSummingCompressor(c)
	}
	return c, err
}

func newStreamCompressor(ctx context.Context, w io.Writer, format string, level, threads int, log *slog.Logger) (io.WriteCloser, error) {
	// The one definition of each format's levels and default is config's,
	// so what check-config accepts is what this accepts.
	level, err := config.ResolveLevel(format, level)
	if err != nil {
		return nil, fmt.Errorf("archive: compression level %w", err)
	}
	threads = hostThreads(threads)
	switch format {
	case FormatTarXz, FormatTarBz2, FormatTarZst:
		argv, missing := nativeCommand(format, level, threads)
		logNative(log, format, argv, missing)
		if argv != nil {
			return startNative(ctx, w, argv)
		}
	}
	switch format {
	case FormatTarGz:
		zw, err := pgzip.NewWriterLevel(w, level)
		if err != nil {
			return nil, fmt.Errorf("archive: gzip level %d: %w", level, err)
		}
		if err := zw.SetConcurrency(pgzipBlockSize, 2*threads); err != nil {
			return nil, fmt.Errorf("archive: gzip concurrency: %w", err)
		}
		return zw, nil
	case FormatTarZst:
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(threads), zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderCRC(true))
	case FormatTarXz:
		// The pure-Go encoder uses the xz(1) preset only for its dictionary size.
		dict := map[int]int{1: 1 << 20, 2: 2 << 20, 3: 4 << 20, 4: 4 << 20, 5: 8 << 20, 6: 8 << 20, 7: 16 << 20, 8: 32 << 20, 9: 64 << 20}[level]
		cfg := xz.WriterConfig{DictCap: dict, CheckSum: xz.CRC64}
		return cfg.NewWriter(w)
	case FormatTarBz2:
		return dbzip2.NewWriter(w, &dbzip2.WriterConfig{Level: level})
	}
	return nil, fmt.Errorf("archive: no stream compressor for format %q", format)
}

// hostThreads caps a thread count at the host's cores. More threads than
// cores compress no faster, and each costs buffers: zstd(1) -22 needs about
// 0.5 GiB per thread and fails with "Allocation error" from -T48 on a
// 24 GiB host, pgzip and the zip sink buffer 2 MiB per thread. The config
// allows up to config.MaxThreads so that one config fits large hosts.
func hostThreads(n int) int {
	if n <= 0 || n > runtime.NumCPU() {
		return runtime.NumCPU()
	}
	return n
}

// newDecompressor returns a reader of the decompressed tar stream. Every
// decompressor verifies its checksums (gzip CRC-32 and size, xz CRC-64,
// bzip2 block and stream CRCs, zstd frame checksum) when read to the end.
func newDecompressor(r io.Reader, format string) (io.Reader, func(), error) {
	switch format {
	case FormatTarGz:
		zr, err := kgzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("archive: gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case FormatTarZst:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("archive: zstd: %w", err)
		}
		return zr, zr.Close, nil
	case FormatTarXz:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("archive: xz: %w", err)
		}
		return zr, func() {}, nil
	case FormatTarBz2:
		return bzip2.NewReader(r), func() {}, nil
	}
	return nil, nil, fmt.Errorf("archive: no stream decompressor for format %q", format)
}
