package schedule

import "time"

// Next elapse times are computed the way systemd computes them: a search
// over a broken-down time (like C's struct tm), field by field from the
// year down, where every step normalizes the time through the zone as
// mktime(3) does. Following systemd step by step matters at the edges:
// the end of a month, daylight-saving gaps and repeated hours, and a zone
// abbreviation that forces standard or daylight time.

// maxIterations is systemd's MAX_CALENDAR_ITERATIONS: a search that takes
// longer gives up and reports no next elapse.
const maxIterations = 1000

// tm is a broken-down time; mon is 1-12; isdst is -1 (let the zone
// decide), 0 (standard time) or 1 (daylight-saving time).
type tm struct {
	year, mon, day, hour, min, sec int
	isdst                          int
}

// clock converts broken-down times in one zone. last is glibc's mktime
// cache: the offset between the wall time asked for and the result of the
// previous conversion, which decides which of two occurrences of a
// repeated wall time (when clocks go back) mktime picks.
type clock struct {
	loc     *time.Location
	last    int64
	hasLast bool
}

func toTm(t time.Time) tm {
	dst := 0
	if t.IsDST() {
		dst = 1
	}
	return tm{t.Year(), int(t.Month()), t.Day(), t.Hour(), t.Minute(), t.Second(), dst}
}

// mktime normalizes c like mktime(3): out-of-range fields carry over, a
// time in a daylight-saving gap moves forward, a repeated time is taken
// in standard time unless c.isdst asks for daylight time; a c.isdst that
// the date does not have reads the time with the offset it asks for.
func (k *clock) mktime(c tm) (tm, time.Time) {
	t := time.Date(c.year, time.Month(c.mon), c.day, c.hour, c.min, c.sec, 0, k.loc)
	if k.loc == time.UTC {
		return toTm(t), t
	}
	wall := time.Date(c.year, time.Month(c.mon), c.day, c.hour, c.min, c.sec, 0, time.UTC)
	if k.hasLast {
		// glibc starts from the previous offset and keeps it when it
		// gives the wall time asked for: a repeated hour stays in the
		// offset the search is already in.
		guess := wall.Add(-time.Duration(k.last) * time.Second).In(k.loc)
		if sameWall(guess, wall) && (c.isdst < 0 || guess.IsDST() == (c.isdst == 1)) {
			t = guess
		}
	}
	if c.isdst >= 0 && t.IsDST() != (c.isdst == 1) {
		t = k.withDST(c, t, c.isdst == 1)
	}
	k.last, k.hasLast = wall.Unix()-t.Unix(), true
	return toTm(t), t
}

func sameWall(t, wall time.Time) bool {
	y, m, d := t.Date()
	wy, wm, wd := wall.Date()
	return y == wy && m == wm && d == wd && t.Hour() == wall.Hour() && t.Minute() == wall.Minute() && t.Second() == wall.Second()
}

// withDST reads c with the UTC offset of the nearest time (around t) whose
// daylight-saving flag is want, searching outwards as glibc does.
func (k *clock) withDST(c tm, t time.Time, want bool) time.Time {
	wall := time.Date(c.year, time.Month(c.mon), c.day, c.hour, c.min, c.sec, 0, time.UTC)
	probe := func(u time.Time) (time.Time, bool) {
		if u.IsDST() != want {
			return time.Time{}, false
		}
		_, off := u.Zone()
		return wall.Add(-time.Duration(off) * time.Second).In(k.loc), true
	}
	for _, d := range []time.Duration{-12 * time.Hour, 12 * time.Hour} {
		if r, ok := probe(t.Add(d)); ok {
			return r
		}
	}
	// glibc's probes: every 601200 s, up to 228621600 s either way.
	const stride = 601200 * time.Second
	for d := stride; d < 228621600*time.Second+stride; d += stride {
		for _, dir := range []time.Duration{-1, 1} {
			if r, ok := probe(t.Add(dir * d)); ok {
				return r
			}
		}
	}
	// None found: glibc assumes daylight-saving time is one hour ahead.
	if want {
		return t.Add(-time.Hour)
	}
	return t.Add(time.Hour)
}

// within checks that c is a real time. It returns 1 if so; 0 if c was out
// of range and has been replaced by its normalized form (with the field
// below the first one that changed reset); -1 if c lies beyond the year
// 2199 or would normalize to an earlier time.
func (k *clock) within(c *tm) int {
	if c.year > maxYear {
		return -1
	}
	n, _ := k.mktime(*c)
	cmp := 0
	switch {
	case n.year != c.year:
		cmp, n.mon = n.year-c.year, 1
	case n.mon != c.mon:
		cmp, n.day = n.mon-c.mon, 1
	case n.day != c.day:
		cmp, n.hour = n.day-c.day, 0
	case n.hour != c.hour:
		cmp, n.min = n.hour-c.hour, 0
	case n.min != c.min:
		cmp, n.sec = n.min-c.min, 0
	default:
		cmp = n.sec - c.sec
	}
	switch {
	case cmp < 0:
		return -1
	case cmp > 0:
		*c = n
		return 0
	}
	return 1
}

// endOfMonth returns the day that is `back` days before the end of c's
// month (1 = the last day), or -1 if there is none.
func (k *clock) endOfMonth(c tm, back int) int {
	t := c
	t.mon++
	t.day = 1 - back
	n, _ := k.mktime(t)
	if n.mon != c.mon {
		return -1
	}
	return n.day
}

// match finds the smallest value >= val selected by ch. It returns the
// value and 1 if it differs from val, 0 if val itself matches (or ch is
// "*"), -1 if nothing matches.
func (k *clock) match(ch []comp, eom bool, c tm, val int) (int, int) {
	if ch == nil {
		return val, 0
	}
	best, found := 0, false
	for _, e := range ch {
		start, stop := e.start, e.stop
		if eom {
			start, stop = k.endOfMonth(c, e.start), k.endOfMonth(c, e.stop)
			if stop > 0 {
				start, stop = stop, start
			}
		}
		switch {
		case start >= val:
			if !found || start < best {
				best, found = start, true
			}
		case e.repeat > 0:
			next := start + e.repeat*((val-start+e.repeat-1)/e.repeat)
			if (!found || next < best) && (stop < 0 || next <= stop) {
				best, found = next, true
			}
		}
	}
	switch {
	case !found:
		return val, -1
	case best != val:
		return best, 1
	}
	return val, 0
}

func (c *Calendar) clock(local *time.Location) (*clock, int) {
	switch {
	case c.utc:
		return &clock{loc: time.UTC}, -1
	case c.loc != nil:
		return &clock{loc: c.loc}, c.dst
	case local == nil:
		return &clock{loc: time.Local}, -1
	}
	return &clock{loc: local}, -1
}

func (c *Calendar) weekdayMatches(k *clock, t tm) bool {
	if c.weekdays == 0 {
		return true
	}
	_, u := k.mktime(t)
	return c.weekdays&(1<<((int(u.Weekday())+6)%7)) != 0
}

// Next returns the first time strictly after `after` at which c elapses,
// or the zero Time if it never does (as `systemd-analyze calendar` says
// "never"). Expressions without a zone are read in local, the zone the
// timer's machine runs in (nil means time.Local); the result is in the
// zone the expression is read in.
func (c *Calendar) Next(after time.Time, local *time.Location) time.Time {
	k, dst := c.clock(local)
	us := after.UnixMicro() + 1
	cur := toTm(time.Unix(us/usecPerSec, 0).In(k.loc))
	usec := int(us % usecPerSec)
	for range maxIterations {
		cur, _ = k.mktime(cur)
		cur.isdst = dst
		v, r := k.match(c.year, false, cur, cur.year)
		if r < 0 {
			return time.Time{}
		}
		if r > 0 {
			cur = tm{v, 1, 1, 0, 0, 0, dst}
			usec = 0
		}
		if k.within(&cur) <= 0 {
			return time.Time{}
		}
		if !k.step(&cur, &usec, c.month, false, &cur.mon, func() { cur.year++; cur.mon = 1; cur.day = 1 }, func() { cur.day = 1 }) {
			continue
		}
		if !k.step(&cur, &usec, c.day, c.endOfMonth, &cur.day, func() { cur.mon++; cur.day = 1 }, nil) {
			continue
		}
		if !c.weekdayMatches(k, cur) {
			cur.day++
			cur.hour, cur.min, cur.sec, usec = 0, 0, 0, 0
			continue
		}
		if !k.step(&cur, &usec, c.hour, false, &cur.hour, func() { cur.day++; cur.hour = 0 }, nil) {
			continue
		}
		if !k.step(&cur, &usec, c.minute, false, &cur.min, func() { cur.hour++; cur.min = 0 }, nil) {
			continue
		}
		v, r = k.match(c.usec, false, cur, cur.sec*usecPerSec+usec)
		if r >= 0 {
			cur.sec, usec = v/usecPerSec, v%usecPerSec
		}
		w := -1
		if r >= 0 {
			w = k.within(&cur)
		}
		if w < 0 {
			cur.min++
			cur.sec, usec = 0, 0
			continue
		}
		if w == 0 {
			continue
		}
		_, t := k.mktime(cur)
		t = t.Add(time.Duration(usec) * time.Microsecond)
		if !t.After(after) {
			// Only a zone abbreviation that forces standard or daylight
			// time can lead here, next to a change of the clocks.
			return time.Time{}
		}
		return t
	}
	return time.Time{}
}

// step matches one of month, day, hour and minute: on a new value it
// resets the smaller fields (reset sets those above the seconds, which
// step clears itself); when nothing matches it moves on with advance. It
// reports whether the search may go on to the next smaller field.
func (k *clock) step(cur *tm, usec *int, ch []comp, eom bool, field *int, advance, reset func()) bool {
	v, r := k.match(ch, eom, *cur, *field)
	if r >= 0 {
		*field = v
	}
	if r > 0 {
		clearBelow(cur, usec, field)
		if reset != nil {
			reset()
		}
	}
	if r >= 0 {
		switch k.within(cur) {
		case 1:
			return true
		case 0:
			return false
		}
	}
	clearBelow(cur, usec, field)
	advance()
	return false
}

// clearBelow zeroes the time fields smaller than field (days reset to 1
// by the callers that need it).
func clearBelow(cur *tm, usec *int, field *int) {
	switch field {
	case &cur.mon, &cur.day:
		cur.hour, cur.min, cur.sec = 0, 0, 0
	case &cur.hour:
		cur.min, cur.sec = 0, 0
	case &cur.min:
		cur.sec = 0
	}
	*usec = 0
}
