package generator

import (
	"fmt"
	"sort"
	"strings"
)

// position is a 1-based line and column in the spec file.
type position struct{ Line, Col int }

// keyOccurrence is one place where a key is defined in the spec.
type keyOccurrence struct {
	Indexed string // services[1].backup.format
	Plain   string // services.backup.format (what toml.Key.String gives)
	Pos     position
}

// positions maps dotted key paths to where they are defined. The TOML
// library keeps key positions private and reports only the first decoding
// error, so this small line scanner recovers them for diagnostics. It knows
// table headers, array-of-tables headers, dotted and quoted keys, and skips
// multi-line strings; a key it cannot place falls back to its nearest
// located parent, and a message without any position still names the key.
type positions struct {
	byIndexed map[string]position
	all       []keyOccurrence
}

// scanPositions indexes every key definition in data.
func scanPositions(data []byte) *positions {
	p := &positions{byIndexed: map[string]position{}}
	arrayCount := map[string]int{} // plain path of [[x]] -> occurrences so far
	var table []string             // current table, indexed components
	var tablePlain []string
	inMultiline := ""
	for i, line := range strings.Split(string(data), "\n") {
		lineNo := i + 1
		if inMultiline != "" {
			if strings.Count(line, inMultiline)%2 == 1 {
				inMultiline = ""
			}
			continue
		}
		trimmed := strings.TrimLeft(line, " \t")
		col := len(line) - len(trimmed) + 1
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case strings.HasPrefix(trimmed, "["):
			// [table] or [[array.of.tables]]; the latter counts its
			// occurrences so indexKeys can name this one services[n].
			open, close := "[", "]"
			if strings.HasPrefix(trimmed, "[[") {
				open, close = "[[", "]]"
			}
			end := strings.Index(trimmed, close)
			if end < 0 {
				continue
			}
			keys := splitKey(trimmed[len(open):end])
			if len(keys) == 0 {
				continue
			}
			if open == "[[" {
				arrayCount[strings.Join(keys, ".")]++
			}
			tablePlain = keys
			table = indexKeys(keys, arrayCount)
			p.add(table, tablePlain, position{lineNo, col})
		default:
			eq := keyEnd(trimmed)
			if eq < 0 {
				continue
			}
			keys := splitKey(trimmed[:eq])
			if len(keys) == 0 {
				continue
			}
			p.add(append(append([]string{}, table...), keys...), append(append([]string{}, tablePlain...), keys...), position{lineNo, col})
			rest := trimmed[eq+1:]
			for _, q := range []string{`"""`, `'''`} {
				if strings.Count(rest, q)%2 == 1 {
					inMultiline = q
				}
			}
		}
	}
	return p
}

func (p *positions) add(indexed, plain []string, pos position) {
	occ := keyOccurrence{Indexed: strings.Join(indexed, "."), Plain: strings.Join(plain, "."), Pos: pos}
	if _, ok := p.byIndexed[occ.Indexed]; !ok {
		p.byIndexed[occ.Indexed] = pos
	}
	p.all = append(p.all, occ)
}

// indexKeys adds the current array index to every prefix that names an
// array of tables ([services.backup] after [[services]] means the last one).
func indexKeys(keys []string, arrayCount map[string]int) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k
		if n, ok := arrayCount[strings.Join(keys[:i+1], ".")]; ok && n > 0 {
			out[i] = fmt.Sprintf("%s[%d]", k, n-1)
		}
	}
	return out
}

// keyEnd returns the index of the '=' that ends the key part of an
// assignment line, or -1; '=' inside quoted keys does not count.
func keyEnd(s string) int {
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		case c == '#' || c == '[' || c == '{':
			return -1
		}
	}
	return -1
}

// splitKey splits a dotted TOML key, unquoting quoted components.
func splitKey(s string) []string {
	var out []string
	var cur strings.Builder
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	if last := strings.TrimSpace(cur.String()); last != "" || len(out) > 0 {
		out = append(out, last)
	}
	return out
}

// lookup returns the position of the indexed key path, or of its nearest
// located ancestor.
func (p *positions) lookup(path string) (position, bool) {
	for path != "" {
		if pos, ok := p.byIndexed[path]; ok {
			return pos, true
		}
		switch i := strings.LastIndexAny(path, ".["); {
		case i < 0:
			path = ""
		default:
			path = path[:i]
		}
	}
	return position{}, false
}

// occurrences returns every place a plain (index-free) key is defined, in
// file order.
func (p *positions) occurrences(plain string) []keyOccurrence {
	var out []keyOccurrence
	for _, o := range p.all {
		if o.Plain == plain {
			out = append(out, o)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pos.Line < out[j].Pos.Line })
	return out
}

// diag builds a diagnostic for an indexed key path.
func (p *positions) diag(file, path, msg string) Diagnostic {
	d := Diagnostic{File: file, Key: path, Message: msg}
	if pos, ok := p.lookup(path); ok {
		d.Line, d.Col = pos.Line, pos.Col
	}
	return d
}
