package schedule

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// parser reads the part of a calendar expression before its zone:
//
//	[WEEKDAYS ]( @EPOCH | [[YEAR-]MONTH(-|~)DAY ][HOUR:MINUTE[:SECOND]] )
//
// following systemd's grammar step by step, so that it accepts exactly
// what systemd accepts.
type parser struct {
	s   string
	pos int
	c   *Calendar
}

func (p *parser) peek(off int) byte {
	if p.pos+off < len(p.s) {
		return p.s[p.pos+off]
	}
	return 0
}

func (p *parser) rest() string { return p.s[p.pos:] }

// clip shortens s to at most n bytes, for quoting in messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// quote quotes an expression for a message, shortened.
func quote(s string) string {
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return fmt.Sprintf("%q", s)
}

func (p *parser) skipSpaces() {
	for p.peek(0) == ' ' {
		p.pos++
	}
}

// errorf formats a message; pieces of the expression in it are shortened
// so that a long expression gives a readable message.
func (p *parser) errorf(format string, args ...any) error {
	for i, a := range args {
		if str, ok := a.(string); ok && len(str) > 40 && strings.Contains(p.s, str) {
			args[i] = str[:37] + "..."
		}
	}
	return fmt.Errorf(format, args...)
}

// unexpected describes the text at the cursor.
func (p *parser) unexpected(after string) error {
	rest := p.rest()
	if rest == "" {
		return p.errorf("ends too early after %q", after)
	}
	if rest[0] == ' ' {
		return p.errorf("unexpected %q after %q; the parts are [WEEKDAYS] [DATE] [TIME] [ZONE], separated by single spaces", strings.TrimLeft(rest, " "), after)
	}
	return p.errorf("unexpected %q after %q", rest, after)
}

func (p *parser) parse() error {
	if err := p.weekdays(); err != nil {
		return err
	}
	done, err := p.date()
	if err != nil {
		return err
	}
	if !done {
		if err := p.time(); err != nil {
			return err
		}
	}
	if p.pos < len(p.s) {
		return p.trailing()
	}
	return nil
}

// trailing explains text left over after a complete expression.
func (p *parser) trailing() error {
	before := strings.TrimRight(p.s[:p.pos], " ")
	rest := strings.TrimLeft(p.rest(), " ")
	if isDayName(rest) {
		return p.errorf("weekdays come first: write %s %s", rest, before)
	}
	if strings.ContainsAny(rest, "/") || len(rest) > 0 && rest[0] >= 'A' && rest[0] <= 'Z' {
		return p.errorf("%q is not a time zone systemd knows; write UTC or a tz database name such as Europe/Berlin (case matters)", rest)
	}
	return p.errorf("unexpected %q after %q", rest, before)
}

var dayNames = []struct {
	name string
	nr   int
}{
	{"monday", 0}, {"mon", 0}, {"tuesday", 1}, {"tue", 1}, {"wednesday", 2}, {"wed", 2},
	{"thursday", 3}, {"thu", 3}, {"friday", 4}, {"fri", 4}, {"saturday", 5}, {"sat", 5},
	{"sunday", 6}, {"sun", 6},
}

// weekdays parses an optional weekday list such as "Mon..Fri,Sun".
func (p *parser) weekdays() error {
	open := -1 // first day of a range whose end is still to come
	first := true
	for {
		lower := strings.ToLower(clip(p.rest(), len("wednesday")+1))
		nr, n := -1, 0
		for _, d := range dayNames {
			if strings.HasPrefix(lower, d.name) {
				nr, n = d.nr, len(d.name)
				break
			}
		}
		if nr < 0 {
			if first {
				return nil
			}
			return p.badWeekday()
		}
		word := p.s[p.pos : p.pos+n]
		if after := p.peek(n); !strings.ContainsRune("-., ", rune(after)) && after != 0 {
			return p.errorf("%q is not a weekday; write Mon..Sun or Monday..Sunday, lists as Sat,Sun and ranges as Mon..Fri", word+p.wordAt(n))
		}
		p.c.weekdays |= 1 << nr
		if open >= 0 {
			if open > nr {
				wrap := (1<<(nr+1) - 1) | (allDays &^ (1<<open - 1))
				return p.errorf("weekday range %s..%s is reversed: weeks run Mon..Sun, so write %s", dayAbbr(open), word, weekdays(uint64(wrap)<<1|uint64(wrap)>>6))
			}
			for j := open + 1; j < nr; j++ {
				p.c.weekdays |= 1 << j
			}
		}
		p.pos += n
		switch p.peek(0) {
		case 0:
			return nil
		case ' ':
			p.skipSpaces()
			return nil
		case '.':
			if open >= 0 {
				return p.errorf("a weekday range cannot go on after %s; separate ranges with \",\"", word)
			}
			if p.peek(1) != '.' {
				return p.errorf("a weekday range is written with two dots, e.g. Mon..Fri")
			}
			open = nr
			p.pos += 2
		case '-':
			if open >= 0 {
				return p.errorf("a weekday range cannot go on after %s; separate ranges with \",\"", word)
			}
			open = nr
			p.pos++
		case ',':
			open = -1
			p.pos++
		}
		if c := p.peek(0); c == 0 || c == ' ' {
			p.skipSpaces()
			if open >= 0 {
				return p.errorf("weekday range starting at %s has no end; write e.g. %s..Fri", word, word)
			}
			return nil
		}
		first = false
	}
}

func (p *parser) badWeekday() error {
	if p.rest() == "" || p.peek(0) == ',' {
		return p.errorf("empty element in the weekday list")
	}
	return p.errorf("%q is not a weekday; write Mon..Sun or Monday..Sunday", p.wordAt(0))
}

// wordAt returns the letters at the cursor + off.
func (p *parser) wordAt(off int) string {
	i := p.pos + off
	j := i
	for j < len(p.s) && isLetters(p.s[j:j+1]) {
		j++
	}
	return p.s[i:j]
}

func dayAbbr(nr int) string { return systemdDays[nr] }

// date parses an optional date, or "@EPOCH". It reports done when nothing
// may follow (after "@EPOCH").
func (p *parser) date() (done bool, err error) {
	if p.pos == len(p.s) {
		return false, nil
	}
	if p.peek(0) == '@' {
		return true, p.epoch()
	}
	start := p.pos
	first, err := p.chain(false)
	if err != nil {
		return false, err
	}
	if c := p.peek(0); c == 0 || c == ':' {
		p.pos = start // it was the hour
		return false, nil
	}
	if err := p.dateSep(); err != nil {
		return false, err
	}
	second, err := p.chain(false)
	if err != nil {
		return false, err
	}
	if c := p.peek(0); c == 0 || c == ' ' {
		p.skipSpaces()
		p.c.month, p.c.day = first, second
		return false, nil
	}
	if p.c.endOfMonth {
		return false, p.errorf("\"~\" (days from the end of the month) goes between month and day, e.g. *-02~03")
	}
	if err := p.dateSep(); err != nil {
		return false, err
	}
	third, err := p.chain(false)
	if err != nil {
		return false, err
	}
	if c := p.peek(0); c != 0 && c != ' ' {
		if c == '-' || c == '~' {
			return false, p.errorf("a date has at most three parts, YEAR-MONTH-DAY")
		}
		return false, p.unexpected(p.s[start:p.pos])
	}
	p.skipSpaces()
	p.c.year, p.c.month, p.c.day = first, second, third
	return false, nil
}

func (p *parser) dateSep() error {
	switch p.peek(0) {
	case '~':
		p.c.endOfMonth = true
	case '-':
	case ' ':
		if isDigits(p.s[:p.pos]) {
			return p.errorf("%q alone is neither a date nor a time; write a time as %s:00 or a date as YEAR-MONTH-DAY", p.s[:p.pos], p.s[:p.pos])
		}
		return p.unexpected(p.s[:p.pos])
	default:
		return p.unexpected(p.s[:p.pos])
	}
	p.pos++
	return nil
}

// epoch parses "@SECONDS" (UTC seconds since 1970) the way strtoul does:
// optional leading spaces and sign.
func (p *parser) epoch() error {
	p.pos++
	p.skipSpaces()
	neg := false
	if c := p.peek(0); c == '+' || c == '-' {
		neg = c == '-'
		p.pos++
	}
	digits := p.pos
	var v uint64
	for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
		d := uint64(p.s[p.pos] - '0')
		if v > (math.MaxUint64-d)/10 {
			return p.errorf("@%s is too large", p.s[digits:])
		}
		v = v*10 + d
		p.pos++
	}
	if p.pos == digits {
		return p.errorf("\"@\" must be followed by seconds since 1970-01-01 UTC, e.g. @1700000000")
	}
	if p.pos < len(p.s) {
		return p.errorf("nothing may follow @%s except a time zone", p.s[digits:p.pos])
	}
	if neg && v != 0 || v > maxEpoch {
		return p.errorf("@%s is out of range: the year must be 1970-2199", p.s[digits:p.pos])
	}
	p.c.epochChains(time.Unix(int64(v), 0).UTC())
	return nil
}

// time parses an optional HOUR:MINUTE[:SECOND]; without it the time is
// 00:00:00, and without seconds they are 00.
func (p *parser) time() error {
	zero := func() []comp { return []comp{{0, -1, 0}} }
	if p.pos == len(p.s) {
		p.c.hour, p.c.minute, p.c.usec = zero(), zero(), zero()
		return nil
	}
	start := p.pos
	h, err := p.chain(false)
	if err != nil {
		return err
	}
	if p.peek(0) != ':' {
		if p.pos == len(p.s) && isDigits(p.s[start:]) {
			return p.errorf("time %q needs minutes: write %s:00", p.s[start:], p.s[start:])
		}
		return p.unexpected(p.s[start:p.pos])
	}
	p.pos++
	m, err := p.chain(false)
	if err != nil {
		return err
	}
	p.c.hour, p.c.minute = h, m
	if p.pos == len(p.s) {
		p.c.usec = zero()
		return nil
	}
	if p.peek(0) != ':' {
		return p.trailing()
	}
	p.pos++
	s, err := p.chain(true)
	if err != nil {
		return err
	}
	p.c.usec = s
	if p.pos < len(p.s) {
		if p.peek(0) == ':' {
			return p.errorf("a time has at most three parts, HOUR:MINUTE:SECOND")
		}
		return p.trailing()
	}
	return nil
}

// chain parses "*" or a comma-separated list of VALUE[..VALUE][/STEP].
// In seconds (usec) values may have a fraction and are kept in µs.
func (p *parser) chain(usec bool) ([]comp, error) {
	if p.peek(0) == '*' {
		p.pos++
		if p.peek(0) == '/' {
			return nil, p.errorf("\"*/STEP\" is cron syntax; systemd writes the start value: e.g. 0/15 for every 15 minutes, 1/2 for every other day or month")
		}
		if usec {
			return []comp{{0, -1, usecPerSec}}, nil
		}
		return nil, nil
	}
	var ch []comp
	for {
		if len(ch) == maxChain {
			return nil, p.errorf("a list may have at most %d elements", maxChain)
		}
		e, err := p.element(usec)
		if err != nil {
			return nil, err
		}
		ch = append(ch, e)
		if p.peek(0) != ',' {
			return ch, nil
		}
		p.pos++
	}
}

func (p *parser) element(usec bool) (comp, error) {
	start := p.pos
	e := comp{stop: -1}
	var err error
	if e.start, err = p.decimal(usec); err != nil {
		return e, err
	}
	if p.peek(0) == '.' && p.peek(1) == '.' {
		p.pos += 2
		if e.stop, err = p.decimal(usec); err != nil {
			return e, err
		}
		e.repeat = 1
		if usec {
			e.repeat = usecPerSec
		}
	}
	if p.peek(0) == '/' {
		p.pos++
		if e.repeat, err = p.decimal(usec); err != nil {
			return e, err
		}
		if e.repeat == 0 {
			return e, p.errorf("step in %q must not be 0", p.s[start:p.pos])
		}
	} else if usec && e.stop >= 0 && e.start+e.repeat > e.stop {
		return e, p.errorf("seconds range %q is shorter than its default step of 1s; add a step such as /0.5", p.s[start:p.pos])
	}
	if c := p.peek(0); !strings.ContainsRune(" ,-~:", rune(c)) && c != 0 {
		if c == '.' {
			return e, p.errorf("fractions are allowed only in seconds, and ranges are written a..b: %q", p.s[start:])
		}
		return e, p.unexpected(p.s[start:p.pos])
	}
	return e, nil
}

// decimal parses a non-negative number; in seconds with an optional
// fraction of which the first six digits count (the seventh rounds).
func (p *parser) decimal(usec bool) (int, error) {
	start := p.pos
	if c := p.peek(0); c < '0' || c > '9' {
		return 0, p.expectedNumber()
	}
	var v uint64
	for c := p.peek(0); c >= '0' && c <= '9'; c = p.peek(0) {
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, p.errorf("number %q is too large", p.s[start:])
		}
		v = v*10 + d
		p.pos++
	}
	if usec {
		if v > math.MaxUint64/usecPerSec {
			return 0, p.errorf("number %q is too large", p.s[start:p.pos])
		}
		v *= usecPerSec
		if p.peek(0) == '.' && p.peek(1) != '.' {
			p.pos++
			frac, err := p.fraction()
			if err != nil {
				return 0, err
			}
			v += uint64(frac)
		}
	}
	if v > math.MaxInt32 {
		return 0, p.errorf("number %q is too large", p.s[start:p.pos])
	}
	return int(v), nil
}

// fraction parses the digits after a decimal point as microseconds.
func (p *parser) fraction() (int, error) {
	if c := p.peek(0); c < '0' || c > '9' {
		return 0, p.errorf("a decimal point must be followed by digits, e.g. 00.5")
	}
	v := 0
	for i := 0; i < 6; i++ {
		v *= 10
		if c := p.peek(0); c >= '0' && c <= '9' {
			v += int(c - '0')
			p.pos++
		}
	}
	if c := p.peek(0); c >= '5' && c <= '9' {
		v++
	}
	for c := p.peek(0); c >= '0' && c <= '9'; c = p.peek(0) {
		p.pos++
	}
	return v, nil
}

// expectedNumber explains a non-number where a number or "*" must be.
func (p *parser) expectedNumber() error {
	rest := p.rest()
	word := p.wordAt(0)
	switch {
	case rest == "":
		return p.errorf("ends too early: a number or \"*\" must follow %q", p.s)
	case p.pos == 0 && word != "":
		return p.unknownWord(word)
	case word != "":
		return p.errorf("%q is not a number; months and days are numbers (e.g. *-01-01), weekdays come first (e.g. Mon *-*-01)", word)
	case rest[0] == '?':
		return p.errorf("\"?\" is Quartz cron syntax; systemd writes \"*\"")
	default:
		return p.errorf("expected a number or \"*\" at %q", rest)
	}
}

// unknownWord explains an expression starting with a word systemd does
// not know.
func (p *parser) unknownWord(word string) error {
	lower := strings.ToLower(word)
	hint := ""
	switch {
	case lower == "every" || lower == "each" || lower == "at" || lower == "on":
		hint = "; systemd has no English phrases: \"every day\" is daily, \"every Monday at 2\" is Mon 02:00"
	case lower == "midnight":
		hint = "; midnight every day is daily"
	case lower == "weekday" || lower == "weekdays":
		hint = "; weekdays are Mon..Fri"
	case lower == "weekend" || lower == "weekends":
		hint = "; the weekend is Sat,Sun"
	case lower == "now" || lower == "today" || lower == "tomorrow" || lower == "yesterday":
		hint = "; that is a single point in time, not a repeating calendar event"
	}
	if hint == "" {
		hint = "; write e.g. \"Mon..Fri *-*-* 02:00:00\" (see systemd.time(7))"
	}
	return p.errorf("%q is not a shorthand (%s), a weekday, a date or a time%s", word, shorthandList, hint)
}
