package generator

import (
	"fmt"
	"strings"
)

// position is a 1-based line and byte column in the spec file.
type position struct{ Line, Col int }

// keyPos is where a key is written and where its value starts.
type keyPos struct{ Key, Value position }

// orphanTable is a [services…] header that comes before any [[services]].
type orphanTable struct {
	Header string // "services.backup"
	Pos    position
}

// positions maps indexed key paths (services[1].backup.paths[0]) to where
// they are written. BurntSushi/toml keeps key positions private and gives a
// position only for the first error, so this scanner recovers them. It
// tokenizes the TOML a spec is written in: table and array-of-tables
// headers, dotted and quoted keys, the four string forms, arrays (one entry
// per element, across lines) and inline tables. It runs on text the TOML
// library already accepted (or is about to reject), so it is lenient: on
// anything unexpected it skips a byte, and a key it cannot place falls back
// to its nearest located parent.
type positions struct {
	byIndexed map[string]keyPos
	orphans   []orphanTable
}

type posScanner struct {
	s          string
	i          int
	line, col  int
	p          *positions
	arrayCount map[string]int // [[x]] header -> occurrences so far
}

// scanPositions indexes every key, table and array element in data.
func scanPositions(data []byte) *positions {
	sc := &posScanner{s: string(data), line: 1, col: 1, p: &positions{byIndexed: map[string]keyPos{}}, arrayCount: map[string]int{}}
	var table []string
	for sc.i < len(sc.s) {
		sc.skipSpace(true)
		if sc.i >= len(sc.s) {
			break
		}
		switch c := sc.s[sc.i]; {
		case c == '[':
			table = sc.header()
		case c == '"' || c == '\'' || isBare(c):
			sc.keyValue(table)
		default:
			sc.advance()
		}
	}
	return sc.p
}

func (sc *posScanner) pos() position { return position{sc.line, sc.col} }

func (sc *posScanner) advance() {
	if sc.s[sc.i] == '\n' {
		sc.line, sc.col = sc.line+1, 1
	} else {
		sc.col++
	}
	sc.i++
}

func (sc *posScanner) peek(prefix string) bool { return strings.HasPrefix(sc.s[sc.i:], prefix) }

// skipSpace skips blanks and comments, and newlines when multiline is set.
func (sc *posScanner) skipSpace(multiline bool) {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r':
		case '\n':
			if !multiline {
				return
			}
		case '#':
			for sc.i < len(sc.s) && sc.s[sc.i] != '\n' {
				sc.advance()
			}
			continue
		default:
			return
		}
		sc.advance()
	}
}

// header reads [a.b] or [[a.b]] and returns the new table's indexed path.
func (sc *posScanner) header() []string {
	start := sc.pos()
	array := sc.peek("[[")
	sc.advance()
	if array {
		sc.advance()
	}
	keys := sc.key()
	for sc.i < len(sc.s) && sc.s[sc.i] != '\n' && sc.s[sc.i] != '#' {
		sc.advance()
	}
	if len(keys) == 0 {
		return nil
	}
	plain := strings.Join(keys, ".")
	if array {
		sc.arrayCount[plain]++
	} else if sc.arrayCount[keys[0]] == 0 && keys[0] == "services" {
		sc.p.orphans = append(sc.p.orphans, orphanTable{Header: plain, Pos: start})
	}
	table := sc.indexKeys(keys)
	sc.p.add(strings.Join(table, "."), keyPos{start, start})
	return table
}

// indexKeys adds the current array index to every prefix that names an
// array of tables ([services.backup] after [[services]] means the last one).
func (sc *posScanner) indexKeys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k
		if n := sc.arrayCount[strings.Join(keys[:i+1], ".")]; n > 0 {
			out[i] = fmt.Sprintf("%s[%d]", k, n-1)
		}
	}
	return out
}

// keyValue reads key = value in the current table.
func (sc *posScanner) keyValue(table []string) {
	start := sc.pos()
	keys := sc.key()
	sc.skipSpace(false)
	if len(keys) == 0 || sc.i >= len(sc.s) || sc.s[sc.i] != '=' {
		sc.skipLine()
		return
	}
	sc.advance()
	sc.skipSpace(false)
	sc.value(join(table, keys), start)
}

func (sc *posScanner) skipLine() {
	for sc.i < len(sc.s) && sc.s[sc.i] != '\n' {
		sc.advance()
	}
}

// key reads a dotted key of bare and quoted parts, stopping before '=', ']'
// or anything else that cannot be part of a key.
func (sc *posScanner) key() []string {
	var parts []string
	for sc.i < len(sc.s) {
		sc.skipSpace(false)
		if sc.i >= len(sc.s) {
			break
		}
		c := sc.s[sc.i]
		switch {
		case c == '"' || c == '\'':
			parts = append(parts, sc.str())
		case isBare(c):
			begin := sc.i
			for sc.i < len(sc.s) && isBare(sc.s[sc.i]) {
				sc.advance()
			}
			parts = append(parts, sc.s[begin:sc.i])
		default:
			return parts
		}
		sc.skipSpace(false)
		if sc.i >= len(sc.s) || sc.s[sc.i] != '.' {
			return parts
		}
		sc.advance()
	}
	return parts
}

// value records path at the value's position and reads the value; arrays
// and inline tables record their elements and keys too.
func (sc *posScanner) value(path string, keyStart position) {
	if sc.i >= len(sc.s) {
		return
	}
	sc.p.add(path, keyPos{keyStart, sc.pos()})
	switch sc.s[sc.i] {
	case '"', '\'':
		sc.str()
	case '[':
		sc.advance()
		for n := 0; ; n++ {
			sc.skipSpace(true)
			if sc.i >= len(sc.s) || sc.s[sc.i] == ']' {
				break
			}
			before := sc.i
			elem := sc.pos()
			sc.value(fmt.Sprintf("%s[%d]", path, n), elem)
			sc.skipSpace(true)
			if sc.i < len(sc.s) && sc.s[sc.i] == ',' {
				sc.advance()
			} else if sc.i == before {
				sc.advance()
			}
		}
		if sc.i < len(sc.s) {
			sc.advance()
		}
	case '{':
		sc.advance()
		for sc.i < len(sc.s) {
			sc.skipSpace(false)
			if sc.i >= len(sc.s) || sc.s[sc.i] == '}' || sc.s[sc.i] == '\n' {
				break
			}
			before := sc.i
			start := sc.pos()
			keys := sc.key()
			sc.skipSpace(false)
			if len(keys) > 0 && sc.i < len(sc.s) && sc.s[sc.i] == '=' {
				sc.advance()
				sc.skipSpace(false)
				sc.value(path+"."+strings.Join(keys, "."), start)
			}
			sc.skipSpace(false)
			if sc.i < len(sc.s) && sc.s[sc.i] == ',' || sc.i == before {
				sc.advance()
			}
		}
		if sc.i < len(sc.s) && sc.s[sc.i] == '}' {
			sc.advance()
		}
	default:
		for sc.i < len(sc.s) && !strings.ContainsRune(" \t\r\n,]}#", rune(sc.s[sc.i])) {
			sc.advance()
		}
	}
}

// str reads a basic, literal or multi-line string and returns its text
// (escapes are kept as written: only key names use the result).
func (sc *posScanner) str() string {
	q := sc.s[sc.i : sc.i+1]
	if sc.peek(q + q + q) {
		q += q + q
	}
	for range q {
		sc.advance()
	}
	begin := sc.i
	for sc.i < len(sc.s) {
		if sc.peek(q) {
			text := sc.s[begin:sc.i]
			for range q {
				sc.advance()
			}
			return text
		}
		if sc.s[sc.i] == '\\' && q[0] == '"' && sc.i+1 < len(sc.s) {
			sc.advance()
		} else if sc.s[sc.i] == '\n' && len(q) == 1 {
			break
		}
		sc.advance()
	}
	return sc.s[begin:sc.i]
}

func isBare(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func join(table, keys []string) string {
	return strings.Join(append(append([]string{}, table...), keys...), ".")
}

func (p *positions) add(path string, kp keyPos) {
	if _, ok := p.byIndexed[path]; !ok {
		p.byIndexed[path] = kp
	}
}

// has reports whether the spec writes the key path itself.
func (p *positions) has(path string) bool {
	_, ok := p.byIndexed[path]
	return ok
}

// lookup returns the position of the indexed key path, or of its nearest
// located ancestor.
func (p *positions) lookup(path string) (keyPos, bool) {
	for path != "" {
		if kp, ok := p.byIndexed[path]; ok {
			return kp, true
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return keyPos{}, false
}

// diag builds a diagnostic about a key's value, placed at the value.
func (p *positions) diag(file, path, msg string) Diagnostic {
	d := Diagnostic{File: file, Key: path, Message: msg}
	if kp, ok := p.lookup(path); ok {
		d.Line, d.Col = kp.Value.Line, kp.Value.Col
	}
	return d
}

// keyDiag builds a diagnostic about the key itself (an unknown key).
func (p *positions) keyDiag(file, path, msg string) Diagnostic {
	d := Diagnostic{File: file, Key: path, Message: msg}
	if kp, ok := p.lookup(path); ok {
		d.Line, d.Col = kp.Key.Line, kp.Key.Col
	}
	return d
}
