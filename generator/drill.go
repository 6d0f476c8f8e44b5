package generator

// Restore drills (backup.drill): a service and a timer of their own,
// NAME-backup-drill.{service,timer}, that run `backup-worker drill`. The
// drill never stops the application; it takes the backup's lock, so it
// waits for a backup in progress instead of racing it.

// drillPriority: a drill reads and writes as much as a full restore and
// is in no hurry; it runs at idle priority (the backup unit does not:
// downtime must not stretch).
var drillPriority = []Setting{
	{"Nice", "19"},
	{"IOSchedulingClass", "idle"},
}

// DrillOn reports whether the service has restore drills.
func (s ServiceModel) DrillOn() bool { return s.Backup.DrillSchedule != "" }

// DrillHardening is the drill unit's sandbox: the backup's strict one
// (a drill runs no hooks) and idle priority.
func (s ServiceModel) DrillHardening() []Setting {
	return append(hardeningFor(false), drillPriority...)
}

// DrillWritablePaths are the drill unit's ReadWritePaths: its scratch
// directory unless it lies in the units' StateDirectory (created there),
// and the metrics directory.
func (s ServiceModel) DrillWritablePaths() []string {
	var out []string
	if d := s.Backup.DrillScratchDirectory; !insideStateDirectory(d) {
		out = append(out, d)
	}
	if s.MetricsDirectory != "" {
		out = append(out, s.MetricsDirectory)
	}
	return out
}

// insideStateDirectory: p is in /var/lib/<the units' StateDirectory>.
func insideStateDirectory(p string) bool {
	base := "/var/lib/" + signingKeyStateDirectory()
	return p == base || len(p) > len(base) && p[:len(base)+1] == base+"/"
}
