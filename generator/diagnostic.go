package generator

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// Diagnostic is one problem in a spec, printed as
// "file:line:col: key: message" (position and key when known).
type Diagnostic struct {
	File      string
	Line, Col int
	Key       string
	Message   string
}

// Error makes a Diagnostic usable as one error of a multierror.
func (d Diagnostic) Error() string { return d.String() }

func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", d.Line, d.Col)
	}
	b.WriteString(": ")
	if d.Key != "" {
		b.WriteString(d.Key)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Diagnostics is a list of problems.
type Diagnostics []Diagnostic

// err aggregates the diagnostics, sorted by position so the output reads
// top to bottom like the file, into a go-multierror whose format is one
// diagnostic per line (its default bullet list is not what users want).
func (ds Diagnostics) err() error {
	if len(ds) == 0 {
		return nil
	}
	var errs *multierror.Error
	for _, d := range ds.sorted() {
		errs = multierror.Append(errs, d)
	}
	errs.ErrorFormat = func(list []error) string {
		lines := make([]string, len(list))
		for i, e := range list {
			lines[i] = e.Error()
		}
		return strings.Join(lines, "\n")
	}
	return errs
}

func (ds Diagnostics) sorted() Diagnostics {
	out := append(Diagnostics(nil), ds...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Line != b.Line {
			// Diagnostics without a position go last.
			if a.Line == 0 || b.Line == 0 {
				return b.Line == 0 && a.Line != 0
			}
			return a.Line < b.Line
		}
		if a.Col != b.Col {
			return a.Col < b.Col
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Message < b.Message
	})
	return out
}
