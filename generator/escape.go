package generator

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// nixString renders s as a Nix double-quoted string literal whose value is
// exactly s. Every '$' is escaped (not only "${"), so no antiquotation can
// start whatever follows it; backslashes, quotes and control characters are
// escaped so the literal stays on one line.
func nixString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	// Bytes, not runes: every special character is ASCII, and a byte loop
	// keeps any other byte (even invalid UTF-8) exactly as it was.
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '$':
			b.WriteString(`\$`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// nixStringList renders a Nix list of strings on one line: [ "a" "b" ].
func nixStringList(items []string) string {
	if len(items) == 0 {
		return "[ ]"
	}
	parts := make([]string, len(items))
	for i, s := range items {
		parts[i] = nixString(s)
	}
	return "[ " + strings.Join(parts, " ") + " ]"
}

var nixIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'-]*$`)

// nixReserved are keywords that cannot be bare attribute names.
var nixReserved = map[string]bool{
	"if": true, "then": true, "else": true, "assert": true, "with": true,
	"let": true, "in": true, "rec": true, "inherit": true, "or": true,
}

// nixAttr renders one attribute name: bare when it is an identifier, quoted
// otherwise (a service called "my.app" must stay one attribute).
func nixAttr(name string) string {
	if nixIdentRE.MatchString(name) && !nixReserved[name] {
		return name
	}
	return nixString(name)
}

// nixAttrPath renders a dotted attribute path from its components.
func nixAttrPath(parts ...string) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = nixAttr(p)
	}
	return strings.Join(out, ".")
}

// systemdQuote renders s as one quoted word for unit-file and tmpfiles
// settings that split on whitespace and expand specifiers
// (RequiresMountsFor=, ReadWritePaths=, tmpfiles paths): quotes and
// backslashes are backslash-escaped and '%' is doubled, so spaces, quotes
// and '%' in a path stay literal. A control character cannot be quoted
// there at all (a newline ends the line whatever the quoting), so it is an
// error here, whatever validation let through.
func systemdQuote(s string) (string, error) {
	if err := noControl(s); err != nil {
		return "", err
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `%`, `%%`)
	return `"` + r.Replace(s) + `"`, nil
}

// tmpfilesWord quotes a tmpfiles.d user or group field, where specifiers
// are not expanded: only quotes and backslashes are escaped, so a name
// with a space stays one field.
func tmpfilesWord(s string) (string, error) {
	if err := noControl(s); err != nil {
		return "", err
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`, nil
}

// noControl refuses control characters (C0 and DEL), which no unit-file or
// tmpfiles quoting can carry.
func noControl(s string) error {
	for _, c := range []byte(s) {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%q contains a control character and cannot be written into a unit or tmpfiles.d file", s)
		}
	}
	return nil
}

// nixFloat renders f as a Nix float literal (always with a point, since
// "1" would be an integer).
func nixFloat(f float64) string {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}

// systemdValue escapes a free-text value (Description=) where only
// specifiers are special; a control character is an error.
func systemdValue(s string) (string, error) {
	if err := noControl(s); err != nil {
		return "", err
	}
	return strings.ReplaceAll(s, "%", "%%"), nil
}

// systemdVerbatim passes a value whose specifiers are meant (OnFailure=
// notify@%n.service, OnCalendar=, a unit name, a comment) through as it
// is, refusing control characters: whatever validation let through, it
// stays on its line.
func systemdVerbatim(s string) (string, error) {
	if err := noControl(s); err != nil {
		return "", err
	}
	return s, nil
}
