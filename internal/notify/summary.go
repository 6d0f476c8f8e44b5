package notify

import (
	"fmt"
	"strings"
	"time"
)

// Results of a run, as the worker names them (BACKUP_RESULT).
const (
	ResultSuccess     = "success"
	ResultWarning     = "warning"
	ResultPartial     = "partial"
	ResultFailed      = "failed"
	ResultInterrupted = "interrupted"
)

// Summary is what a message says about a run.
type Summary struct {
	// Kind names what ran: "" is a backup; "restore drill" a drill
	// (which has no downtime).
	Kind    string
	Service string
	Host    string
	Result  string // one of the Result constants
	Archive string // NAME-TS.EXT, "" when none was named
	// Size of the archive written, Duration of the run, Downtime of the
	// service's units.
	Size               int64
	Duration, Downtime time.Duration
	Destinations       []Outcome
	Error              string   // every failure, "" on success
	Warnings           []string // what needs attention (ResultWarning)
}

// Outcome is one destination's part of the run, e.g. "ok, pruned 2" or
// "failed: no space left on device".
type Outcome struct{ Destination, Status string }

// Title is the message's subject line.
func (s Summary) Title() string {
	kind := s.Kind
	if kind == "" {
		kind = "backup"
	}
	if s.Host != "" {
		return fmt.Sprintf("%s %s on %s: %s", kind, s.Service, s.Host, s.Result)
	}
	return fmt.Sprintf("%s %s: %s", kind, s.Service, s.Result)
}

// Text is the message body: the run's summary, one fact per line.
func (s Summary) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", s.Title())
	fmt.Fprintf(&b, "service: %s\nresult: %s\n", s.Service, s.Result)
	if s.Archive != "" {
		fmt.Fprintf(&b, "archive: %s\n", s.Archive)
	}
	if s.Kind == "" {
		fmt.Fprintf(&b, "size: %s\nduration: %s\ndowntime: %s\n", HumanBytes(s.Size),
			s.Duration.Round(time.Millisecond), s.Downtime.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "duration: %s\n", s.Duration.Round(time.Millisecond))
	}
	if len(s.Destinations) > 0 {
		b.WriteString("destinations:\n")
		for _, d := range s.Destinations {
			fmt.Fprintf(&b, "  %s: %s\n", d.Destination, d.Status)
		}
	}
	for _, w := range s.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	if s.Error != "" {
		fmt.Fprintf(&b, "error: %s\n", s.Error)
	}
	return b.String()
}

// Line is the one-line form (Uptime Kuma's msg).
func (s Summary) Line() string {
	line := fmt.Sprintf("%s: %s in %s, downtime %s", s.Result, HumanBytes(s.Size),
		s.Duration.Round(time.Second), s.Downtime.Round(time.Second))
	if s.Error != "" {
		line += "; " + strings.ReplaceAll(s.Error, "\n", "; ")
	}
	const max = 250
	if len(line) > max {
		line = line[:max] + "…"
	}
	return line
}

// HumanBytes formats n with binary units (1.5 MiB), as messages, logs and
// status show sizes.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
