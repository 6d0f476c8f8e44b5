package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// limitedWriter fails with err after limit bytes, like a disk filling up.
type limitedWriter struct {
	buf   bytes.Buffer
	limit int
	err   error
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	room := w.limit - w.buf.Len()
	if len(p) > room {
		w.buf.Write(p[:max(room, 0)])
		return max(room, 0), w.err
	}
	return w.buf.Write(p)
}

func TestFanoutDropsFailingDestination(t *testing.T) {
	t.Parallel()
	good := &limitedWriter{limit: 1 << 30}
	full := &limitedWriter{limit: 100, err: errors.New("no space left on device")}
	fo := newFanout(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"good", "full"}, []io.Writer{good, full})
	var want bytes.Buffer
	for i := 0; i < 50; i++ {
		chunk := bytes.Repeat([]byte{byte(i)}, 37)
		want.Write(chunk)
		if _, err := fo.Write(chunk); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	fo.Close()
	if !bytes.Equal(good.buf.Bytes(), want.Bytes()) {
		t.Error("good destination did not get the whole stream")
	}
	if fo.sinkErr(0) != nil || fo.sinkErr(1) == nil {
		t.Errorf("sink errors: %v, %v", fo.sinkErr(0), fo.sinkErr(1))
	}
	if sum := sha256.Sum256(want.Bytes()); !bytes.Equal(fo.Sum(), sum[:]) || fo.Len() != int64(want.Len()) {
		t.Error("hash or length of the stream wrong")
	}
	if d := fo.Digest(); d.CRC64 != crcOf(want.Bytes()) || d.Size != int64(want.Len()) {
		t.Error("CRC-64 or length of the stream's digest wrong")
	}
}

func TestFanoutFailsWhenAllDestinationsFail(t *testing.T) {
	t.Parallel()
	a := &limitedWriter{limit: 10, err: errors.New("EIO")}
	b := &limitedWriter{limit: 20, err: errors.New("read-only file system")}
	fo := newFanout(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"a", "b"}, []io.Writer{a, b})
	defer fo.Close()
	var err error
	for i := 0; i < 5 && err == nil; i++ {
		_, err = fo.Write(make([]byte, 8))
	}
	if err == nil {
		t.Fatal("no error although every destination failed")
	}
	for _, want := range []string{"a: EIO", "b: read-only file system", "every destination failed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestFanoutStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	fo := newFanout(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"a"}, []io.Writer{io.Discard})
	defer fo.Close()
	cancel()
	if _, err := fo.Write([]byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("boom") }

func TestFanoutPanickingWriterIsAnError(t *testing.T) {
	t.Parallel()
	var good bytes.Buffer
	fo := newFanout(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"good", "bad"}, []io.Writer{&good, panicWriter{}})
	defer fo.Close()
	if _, err := fo.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := fo.sinkErr(1); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("panic not turned into an error: %v", err)
	}
}
