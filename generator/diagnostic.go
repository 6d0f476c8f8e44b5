package generator

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// Diagnostic is one problem in a spec, printed as
// "file:line:col: key: message"; the position, its column and the key are
// left out when unknown.
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
		fmt.Fprintf(&b, ":%d", d.Line)
		if d.Col > 0 {
			fmt.Fprintf(&b, ":%d", d.Col)
		}
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

// specTables are the spec's tables as the user writes their headers, with
// the struct that holds their keys; unknown-key messages search them.
var specTables = []struct {
	header string
	keys   map[string][]int
}{
	{"the top level", tomlFields(reflect.TypeOf(Spec{}))},
	{"[defaults]", tomlFields(reflect.TypeOf(ServiceSettings{}))},
	{"[defaults.backup]", tomlFields(reflect.TypeOf(BackupSettings{}))},
	{"[[services]]", tomlFields(reflect.TypeOf(Service{}))},
	{"[services.backup]", tomlFields(reflect.TypeOf(BackupSettings{}))},
	{"[defaults.backup.s3]", tomlFields(reflect.TypeOf(S3Settings{}))},
	{"[services.backup.s3]", tomlFields(reflect.TypeOf(S3Settings{}))},
}

// family reports whether two headers belong together ([defaults] with
// [defaults.backup], [[services]] with [services.backup]).
func family(a, b string) bool {
	stem := func(h string) string { return strings.SplitN(strings.Trim(h, "[]"), ".", 2)[0] }
	return stem(a) == stem(b)
}

// unknownKeyMessage explains an unknown key: the table it belongs in when
// it is valid elsewhere (preferring the same family of tables), else the
// nearest valid key, else where to look.
func unknownKeyMessage(key, header string) string {
	var all, kin []string
	// A suggestion may be a typo away: one edit in a short key, about one
	// in four in a long one ("colour" must not suggest "group").
	nearKey, nearHeader, bestDist := "", "", max(2, len(key)/4+1)
	for _, t := range specTables {
		if _, ok := t.keys[key]; ok {
			all = append(all, t.header)
			if family(t.header, header) {
				kin = append(kin, t.header)
			}
			continue
		}
		names := make([]string, 0, len(t.keys))
		for k := range t.keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			dist := editDistance(strings.ToLower(key), strings.ToLower(k))
			// Ties go to the table the key was written in, then to its
			// family ([[services]] with [services.backup]).
			if dist < bestDist || dist == bestDist && closer(t.header, nearHeader, header) {
				nearKey, nearHeader, bestDist = k, t.header, dist
			}
		}
	}
	if len(kin) > 0 {
		all = kin
	}
	switch {
	case len(all) > 0:
		return fmt.Sprintf("unknown key %q in %s: it belongs under %s", key, header, strings.Join(all, " or "))
	case nearKey != "" && nearHeader == header:
		return fmt.Sprintf("unknown key %q; did you mean %q?", key, nearKey)
	case nearKey != "":
		return fmt.Sprintf("unknown key %q in %s; did you mean %q under %s?", key, header, nearKey, nearHeader)
	}
	return fmt.Sprintf("unknown key %q in %s; see the spec reference in README.md", key, header)
}

// closer reports whether table a is nearer to where the key was written
// (header) than table b.
func closer(a, b, header string) bool {
	rank := func(h string) int {
		switch {
		case h == header:
			return 0
		case family(h, header):
			return 1
		}
		return 2
	}
	return rank(a) < rank(b)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
