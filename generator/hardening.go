package generator

import (
	"path/filepath"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
)

// Setting is one unit-file setting, rendered as Key=Value in the plain
// units and as serviceConfig.Key in lib.nix.
type Setting struct {
	Key, Value string
}

// baseHardening is the sandbox of every backup unit. The worker runs as
// root to stop units, read every data file and hand archives to the
// service's user; these settings take away what it never needs. The unit
// keeps normal CPU and I/O priority: the worker lowers its own once the
// application runs again (worker/priority.go), so downtime is not
// stretched by an idle scheduling class.
//
// One definition: lib.nix's mkBackupService and the plain .service
// template are both rendered from this list, and TestUnitsAgree compares
// the two rendered units.
var baseHardening = []Setting{
	{"ProtectSystem", "strict"},
	{"ProtectHome", "read-only"},
	{"PrivateTmp", "yes"},
	{"NoNewPrivileges", "yes"},
	{"ProtectKernelModules", "yes"},
	{"ProtectKernelLogs", "yes"},
	{"ProtectClock", "yes"},
	{"ProtectHostname", "yes"},
	{"ProtectProc", "invisible"},
	{"RestrictRealtime", "yes"},
	{"RestrictSUIDSGID", "yes"},
	{"LockPersonality", "yes"},
	{"SystemCallArchitectures", "native"},
	// The worker mounts nothing.
	{"PrivateMounts", "yes"},
	// Nothing it creates is world-readable by accident; archives and
	// folders get their modes explicitly (0640, 0750), which 0027 keeps.
	{"UMask", "0027"},
	// The root-only folder of the key that signs every archive
	// (config.DefaultSigningKey): ProtectSystem=strict would make the
	// first run fail to create it.
	{"StateDirectory", signingKeyStateDirectory()},
	{"StateDirectoryMode", "0700"},
}

// signingKeyStateDirectory is config.DefaultSigningKey's folder relative to
// /var/lib, as StateDirectory= wants it.
func signingKeyStateDirectory() string {
	rel, err := filepath.Rel("/var/lib", filepath.Dir(config.DefaultSigningKey))
	if err != nil || strings.HasPrefix(rel, "..") {
		panic("config.DefaultSigningKey must lie under /var/lib: " + config.DefaultSigningKey)
	}
	return rel
}

// strictHardening applies only to services without hooks: a preBackup such
// as `podman exec … pg_dumpall` runs the container runtime inside this
// unit, and that runtime enters namespaces (setns), needs CAP_SYS_ADMIN,
// netlink sockets, /dev and writable cgroups.
var strictHardening = []Setting{
	// What the worker itself needs as root: read everything
	// (DAC_READ_SEARCH), write into destinations owned by the service's
	// user (DAC_OVERRIDE), hand archives to that user (CHOWN), set modes
	// and times on files it does not own (FOWNER) and keep mode bits on
	// chowned files (FSETID). systemctl talks to systemd over D-Bus, which
	// authorises uid 0 without any capability; FICLONE needs none either.
	{"CapabilityBoundingSet", "CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER CAP_FSETID"},
	{"SystemCallFilter", "@system-service"},
	{"SystemCallErrorNumber", "EPERM"},
	{"RestrictNamespaces", "yes"},
	// Go and the native compressors never map writable code; a hook's
	// program (node, java) may JIT, and the filter is inherited.
	{"MemoryDenyWriteExecute", "yes"},
	{"PrivateDevices", "yes"},
	{"ProtectKernelTunables", "yes"},
	{"ProtectControlGroups", "yes"},
	// D-Bus and journald; IP for off-site destinations later.
	{"RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"},
}

// hardeningFor returns the sandbox of a unit, strict unless it runs hooks.
func hardeningFor(hooks bool) []Setting {
	out := append([]Setting{}, baseHardening...)
	if !hooks {
		out = append(out, strictHardening...)
	}
	return out
}

// Runtime is a container runtime that a hook may drive: its package goes
// on the unit's PATH when a stopped unit's name says the service runs on
// it, and its state folders become writable for hooks (ProtectSystem=strict
// would otherwise make `podman exec` fail on its lock files).
type Runtime struct {
	Name string
	// UnitPrefix: NixOS virtualisation.oci-containers names its units
	// <backend>-<container>.service.
	UnitPrefix string
	// Package is the nixpkgs attribute of the CLI.
	Package string
	// HookWritablePaths are made writable (ReadWritePaths=-) for hooks.
	HookWritablePaths []string
}

// Runtimes is the one table of container runtimes; lib.nix is rendered
// from it.
var Runtimes = []Runtime{
	{Name: "docker", UnitPrefix: "docker-", Package: "docker"},
	{Name: "podman", UnitPrefix: "podman-", Package: "podman",
		HookWritablePaths: []string{"/run/containers", "/run/crun", "/run/libpod", "/var/lib/containers"}},
}
