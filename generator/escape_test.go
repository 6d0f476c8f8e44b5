package generator

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/backupgen/backupgen/internal/testtool"
)

// hostileStrings would break out of a Nix string, a unit file or a shell
// if rendered raw.
var hostileStrings = []string{
	"", "plain", `"`, `\`, `\\"`, "${", "${builtins.currentTime}", "$${x}", "$", "$$", "''", "'''", "''${x}",
	"\n", "a\nb", "\r\n", "\t", "%", "%n%%", "x.service\nExecStart=/bin/sh", "/path with spaces/x",
	"ünïcødé 日本語 ελληνικά", "\"; builtins.abort \"x", "}", "{", "#", "/*", "*/",
}

func TestNixStringTable(t *testing.T) {
	cases := map[string]string{
		"plain":   `"plain"`,
		`a"b`:     `"a\"b"`,
		`a\b`:     `"a\\b"`,
		"${x}":    `"\${x}"`,
		"$x":      `"\$x"`,
		"''":      `"''"`,
		"a\nb\tc": `"a\nb\tc"`,
		"100%":    `"100%"`,
		"ü":       `"ü"`,
		"\r":      `"\r"`,
	}
	for in, want := range cases {
		if got := nixString(in); got != want {
			t.Errorf("nixString(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNixAttr(t *testing.T) {
	cases := map[string]string{
		"myapp": "myapp", "my-app": "my-app", "my_app'": "my_app'", "2fa": `"2fa"`,
		"app.v2": `"app.v2"`, "let": `"let"`, "or": `"or"`, "": `""`, "${x}": `"\${x}"`,
	}
	for in, want := range cases {
		if got := nixAttr(in); got != want {
			t.Errorf("nixAttr(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSystemdQuote(t *testing.T) {
	cases := map[string]string{
		"/var/backups": `"/var/backups"`,
		"/a b":         `"/a b"`,
		`/a"b`:         `"/a\"b"`,
		`/a\b`:         `"/a\\b"`,
		"/100%":        `"/100%%"`,
		"/%n":          `"/%%n"`,
	}
	for in, want := range cases {
		if got, err := systemdQuote(in); err != nil || got != want {
			t.Errorf("systemdQuote(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	// A newline would end the setting and start a new one (an injected
	// ExecStartPre= or tmpfiles line): no quoting can carry it.
	for _, in := range []string{"/a\nExecStartPre=/bin/sh", "/a\nr /etc/important", "/a\rb", "/a\tb", "/a\x7fb", "/a\x00b"} {
		if got, err := systemdQuote(in); err == nil {
			t.Errorf("systemdQuote(%q) = %s, want an error", in, got)
		}
		if got, err := tmpfilesWord(in); err == nil {
			t.Errorf("tmpfilesWord(%q) = %s, want an error", in, got)
		}
	}
}

// TestNixStringRoundTrip evaluates every hostile string, rendered with
// nixString, in real Nix: the value must equal the input exactly.
func TestNixStringRoundTrip(t *testing.T) {
	nix := testtool.Require(t, "nix-instantiate", "nix-bin")
	var b strings.Builder
	b.WriteString("[\n")
	for _, s := range hostileStrings {
		b.WriteString("  " + nixString(s) + "\n")
	}
	b.WriteString("  " + nixStringList(hostileStrings) + "\n]")
	out, err := exec.Command(nix, "--eval", "--strict", "--json", "-E", b.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("nix-instantiate: %v\n%s\nexpression:\n%s", err, out, b.String())
	}
	var got []any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	want := make([]any, 0, len(hostileStrings)+1)
	list := make([]any, len(hostileStrings))
	for i, s := range hostileStrings {
		want = append(want, s)
		list[i] = s
	}
	want = append(want, list)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Nix values differ from the inputs (-want +got):\n%s", diff)
	}
}

// FuzzNixString checks structural invariants of the escaper: one line,
// quoted, no unescaped '$' or '"'.
func FuzzNixString(f *testing.F) {
	for _, s := range hostileStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := nixString(s)
		if strings.ContainsAny(got, "\n\r") {
			t.Fatalf("nixString(%q) spans lines: %s", s, got)
		}
		inner := got[1 : len(got)-1]
		for i := 0; i < len(inner); i++ {
			switch inner[i] {
			case '\\':
				i++ // the escaped character
			case '"', '$':
				t.Fatalf("nixString(%q) = %s has an unescaped %q", s, got, inner[i])
			}
		}
	})
}

// FuzzGenerate: any input either renders or yields diagnostics; never a
// panic, never both.
func FuzzGenerate(f *testing.F) {
	f.Add([]byte("[[services]]\nname = \"a\"\ndataPaths = [\"/a\"]\n"))
	f.Add([]byte("[[services]]\nname = \"a\"\ndataPaths = [\"/a\"]\n[services.backup]\nschedule = \"*/5 1-3 * jan mon\"\npaths = [\"/b {name}\"]\n"))
	f.Add([]byte("namespace = \"x.y\"\n[defaults.backup]\nformat = \"zip\"\n"))
	f.Add([]byte("[[services]]\n[[services]]\nname = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		files, err := Generate("spec.toml", data, DefaultOptions)
		if (err == nil) == (files == nil) {
			t.Fatalf("files=%d err=%v", len(files), err)
		}
		if err != nil && strings.TrimSpace(err.Error()) == "" {
			t.Fatal("empty diagnostics")
		}
	})
}

// nixUnquote reads a Nix double-quoted string literal the way Nix's lexer
// does: a backslash makes the next character literal, except \n, \r and \t.
func nixUnquote(lit string) (string, bool) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	in := lit[1 : len(lit)-1]
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\\' && i+1 < len(in):
			i++
			switch in[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(in[i])
			}
		case c == '"' || (c == '$' && i+1 < len(in) && in[i+1] == '{'):
			return "", false // would end the string or start an antiquotation
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// systemdUnquote reads one word the way systemd reads a quoted path in
// RequiresMountsFor=, ReadWritePaths= and tmpfiles.d: the quotes enclose
// the word, a backslash makes the next character literal, and "%%" is a
// literal '%' (any other '%' would be a specifier).
func systemdUnquote(word string) (string, bool) {
	if len(word) < 2 || word[0] != '"' || word[len(word)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	in := word[1 : len(word)-1]
	for i := 0; i < len(in); i++ {
		switch c := in[i]; {
		case c == '\\' && i+1 < len(in):
			i++
			b.WriteByte(in[i])
		case c == '"' || c == '\\':
			return "", false // an unescaped quote would end the word early
		case c == '%':
			if i+1 >= len(in) || in[i+1] != '%' {
				return "", false // a specifier
			}
			i++
			b.WriteByte('%')
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// FuzzEscapersRoundTrip: whatever the input, nixString and systemdQuote
// produce one literal that reads back as exactly the input. Real Nix
// confirms the Nix reading in TestNixStringRoundTrip; systemd-tmpfiles
// confirms the systemd reading in TestTmpfilesCreatesExactPaths.
func FuzzEscapersRoundTrip(f *testing.F) {
	for _, s := range hostileStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, ok := nixUnquote(nixString(s)); !ok || got != s {
			t.Fatalf("nixString(%q) = %s reads back as %q (ok=%v)", s, nixString(s), got, ok)
		}
		q, err := systemdQuote(s)
		if err != nil {
			if noControl(s) == nil {
				t.Fatalf("systemdQuote(%q): %v", s, err)
			}
			return // control characters are refused, never quoted
		}
		if got, ok := systemdUnquote(q); !ok || got != s {
			t.Fatalf("systemdQuote(%q) = %s reads back as %q (ok=%v)", s, q, got, ok)
		}
	})
}
