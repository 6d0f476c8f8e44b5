package config

import (
	"fmt"
	"path/filepath"
)

// Drill is backup.drill: a restore drill, started by its own timer
// (OnCalendar), restores the newest archive of each destination into a
// private scratch directory and compares it with the manifest the backup
// wrote (docs/operations.md#restore-drills). Setting it also makes every
// backup run write that manifest.
type Drill struct {
	// OnCalendar holds the drill timer's OnCalendar values (the spec's
	// backup.drill.schedule, converted as backup.schedule is).
	OnCalendar []string `json:"onCalendar,omitempty"`
	// ScratchDirectory is where a drill makes its private restore
	// directory (removed afterwards); never a data path or a destination.
	ScratchDirectory string `json:"scratchDirectory,omitempty"`
	// ManifestDirectory is where the backup runs keep the manifests a
	// drill compares with (default DefaultManifestDirectory/NAME).
	ManifestDirectory string `json:"manifestDirectory,omitempty"`
	// IdentityFile is an age identity for encrypted archives, passed
	// with LoadCredential=drill-identity. Without it an encrypted
	// archive's drill checks only its checksum and signature.
	IdentityFile string `json:"identityFile,omitempty"`
}

// Defaults of backup.drill: beside the signing key (the units'
// StateDirectory=, root-only and persistent).
const (
	DefaultDrillScratchDirectory = "/var/lib/backup-worker/drill"
	DefaultManifestDirectory     = "/var/lib/backup-worker/manifests"
	// DrillIdentityCredential is the LoadCredential= name of IdentityFile.
	DrillIdentityCredential = "drill-identity"
)

// ScratchDirectoryOrDefault returns ScratchDirectory, or the default.
func (d Drill) ScratchDirectoryOrDefault() string {
	if d.ScratchDirectory == "" {
		return DefaultDrillScratchDirectory
	}
	return d.ScratchDirectory
}

// ManifestDirectoryOrDefault is where the backup runs of service name
// keep the manifests a drill compares with: root-only, on the host (never
// beside the archives, where the service user or the bucket's other users
// could rewrite them and where they would show file names in clear).
func (d Drill) ManifestDirectoryOrDefault(name string) string {
	if d.ManifestDirectory != "" {
		return d.ManifestDirectory
	}
	return filepath.Join(DefaultManifestDirectory, name)
}

// drill: the schedule as the backup's, a scratch directory that can never
// be or hold a data path or a destination, an identity file passable with
// LoadCredential=.
func (v *validator) drill(c *Config) {
	d := c.Backup.Drill
	if d == nil {
		return
	}
	v.errs = appendCalendarErrors(v.errs, "backup.drill.onCalendar", d.OnCalendar)
	v.privatePath("backup.drill.scratchDirectory", d.ScratchDirectoryOrDefault(), c.Backup.Paths, c.DataPaths,
		"a drill restores into it and removes what it restored; it must never be live data or an archive")
	v.privatePath("backup.drill.manifestDirectory", d.ManifestDirectoryOrDefault(c.Name), c.Backup.Paths, c.DataPaths,
		"the service's user could rewrite the manifests a drill trusts")
	if d.IdentityFile != "" {
		if why := SecretFileProblem(d.IdentityFile, "the identity decrypts every archive"); why != "" {
			v.add("backup.drill.identityFile", "%q: %s", d.IdentityFile, why)
		}
	}
}

// calendarKey is the key of exprs[i] in messages.
func calendarKey(key string, i int) string { return fmt.Sprintf("%s[%d]", key, i) }
