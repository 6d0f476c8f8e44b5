package worker

import (
	"io"
	"log/slog"
	"os"
)

// Log attribute keys. They are stable: dashboards and journal queries
// (journalctl ... | grep destination=) depend on them.
const (
	keyService     = "service"
	keyUnit        = "unit"
	keyArchive     = "archive"
	keyDestination = "destination"
	keyBytes       = "bytes"
	keyDuration    = "duration"
)

// NewLogger logs text to w. Under systemd (JOURNAL_STREAM set) the time
// attribute is dropped, since journald timestamps every line itself.
func NewLogger(w io.Writer, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("JOURNAL_STREAM") != "" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
