package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/backupgen/backupgen/internal/schedule"
)

// appendScheduleErrors checks backup.onCalendar, the OnCalendar values of
// the timer that starts this job. They are in the worker's config so that
// check-config, which runs when NixOS builds the system, refuses a value
// systemd would refuse ("Timer unit lacks value setting. Refusing.") or
// that never elapses: either way no backup would ever run, and nothing
// would say so. The rules are the schedule package's, the same that
// backupgen validate applies to the spec's schedule.
func appendScheduleErrors(errs *multierror.Error, b Backup) *multierror.Error {
	return appendCalendarErrors(errs, "backup.onCalendar", b.OnCalendar)
}

// appendCalendarErrors checks the OnCalendar values exprs of key.
func appendCalendarErrors(errs *multierror.Error, key string, exprs []string) *multierror.Error {
	now := time.Now()
	for i, expr := range exprs {
		err := schedule.CheckCalendar(expr, now)
		if err == nil {
			continue
		}
		msg := err.Error()
		var ce *schedule.CalendarError
		if errors.As(err, &ce) {
			msg = ce.Msg
		}
		errs = multierror.Append(errs, &FieldError{
			Key: calendarKey(key, i),
			Msg: fmt.Sprintf("%q: %s (systemd would refuse or never start this timer)", expr, msg),
		})
	}
	return errs
}
