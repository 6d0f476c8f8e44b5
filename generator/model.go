package generator

import (
	"fmt"
	"sort"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/retention"
	"github.com/backupgen/backupgen/internal/schedule"
)

// Built-in defaults, used where neither [defaults] nor a service sets a key.
// They match the seed document's module defaults.
const (
	defaultNamespace          = "modules.services.virtualization"
	defaultUser               = "root"
	defaultGroup              = "root"
	defaultPath               = "/var/backups/{name}"
	defaultSchedule           = "0 0 * * *"
	defaultFormat             = config.DefaultFormat
	defaultMaxRetentionDays   = 0
	defaultRetentionSnapshots = 7
	defaultMinKeep            = config.DefaultMinKeep
	defaultTimeoutStartSec    = 4 * 3600
	defaultMinSizeRatio       = 0.5
)

// Defaults is the one definition of every built-in default: the Go model
// (resolveService), the Nix helper library (lib.nix's defaults, used by
// hand-written callers) and the option schema (options.nix) are all
// rendered from it, so the copies cannot drift.
func Defaults() ServiceModel {
	return resolveService(ServiceSettings{}, Service{Name: namePlaceholder})
}

// namePlaceholder in a destination path is replaced by the service name, so
// [defaults.backup] paths can give every service its own folder.
const namePlaceholder = "{name}"

// Model is everything the renderer needs, computed once: names, unit names,
// resolved settings. Slices are sorted; the renderer never ranges over maps.
type Model struct {
	// Namespace is the option path, split into components.
	Namespace []string
	Services  []ServiceModel
	// WorkerPath is where plain (non-NixOS) units find backup-worker.
	WorkerPath string
	// ConfigDir is where plain units find the worker configs.
	ConfigDir string
	// MetricsDirectory is [metrics] textfileDirectory ("" = no metrics).
	MetricsDirectory string
}

// ServiceModel is one service with every default applied.
type ServiceModel struct {
	Name        string
	Description string
	Enable      bool
	Units       []string
	DataPaths   []string
	User, Group string
	// CreateUser makes the NixOS module declare User and Group as system
	// accounts; otherwise an assertion requires them to exist.
	CreateUser bool
	Backup     BackupModel
	// OnCalendar is the schedule converted to systemd calendar expressions.
	OnCalendar []string
	// MetricsDirectory is the node_exporter textfile directory ("" = no
	// metrics); the service writes PrometheusTextfile there.
	MetricsDirectory string
}

// PrometheusTextfile is DIR/backup-NAME.prom, or "" without metrics. The
// one definition of the name (lib.nix's prometheusTextfile is the same).
func (s ServiceModel) PrometheusTextfile() string {
	if s.MetricsDirectory == "" {
		return ""
	}
	return s.MetricsDirectory + "/backup-" + s.Name + ".prom"
}

// NeedsNetwork: remote destinations and notifications want the network.
func (s ServiceModel) NeedsNetwork() bool { return s.RemoteDestinations() || s.Backup.Notify() != nil }

// BackupModel is the resolved backup.* settings of a service.
type BackupModel struct {
	Enable             bool
	Paths              []string
	OptionalPaths      []string
	Schedule           string
	Format             string
	MaxRetentionDays   int
	RetentionSnapshots int
	MinKeep            int
	// Keep holds keepHourly … keepYearly (retention.Period order; 0 = off).
	Keep               [retention.NumPeriods]int
	MinSizeRatio       float64
	Exclude            []string
	CompressionLevel   int
	Threads            int
	Persistent         bool
	RandomizedDelaySec int
	TimeoutStartSec    int
	OnFailure          []string
	CaptureFirst       bool
	PreBackup          string
	PostBackup         string
	// Encryption: Recipients and RecipientsFile ("" = none); encrypted when
	// either is set.
	Recipients     []string
	RecipientsFile string
	// HostName: "" is the machine's host name (the worker asks).
	HostName string
	SFTP     SFTPModel
	S3       S3Model
	// NotifyURLsFile, NotifyPingURLFile: backup.notify ("" = none).
	NotifyURLsFile, NotifyPingURLFile string
	// HealthCheck is backup.healthCheck (nil: none).
	HealthCheck *config.HealthCheck
	// Drill is backup.drill: DrillSchedule "" means no drills.
	DrillSchedule, DrillScratchDirectory, DrillIdentityFile string
	// DrillOnCalendar is DrillSchedule converted (buildModel).
	DrillOnCalendar []string
}

// Drill is the worker config's backup.drill (nil: no drills).
func (b BackupModel) Drill() *config.Drill {
	if b.DrillSchedule == "" {
		return nil
	}
	return &config.Drill{OnCalendar: b.DrillOnCalendar, ScratchDirectory: b.DrillScratchDirectory, IdentityFile: b.DrillIdentityFile}
}

// Notify is the worker config's backup.notify (nil: none).
func (b BackupModel) Notify() *config.Notify {
	if b.NotifyURLsFile == "" && b.NotifyPingURLFile == "" {
		return nil
	}
	return &config.Notify{URLsFile: b.NotifyURLsFile, PingURLFile: b.NotifyPingURLFile}
}

// KeepRule is one calendar rule as the templates see it: its key, value,
// longest period in hours and largest value (config's rule, copied into
// lib.nix's check).
type KeepRule struct {
	Key        string
	N          int
	Hours, Max int
}

// KeepRules lists keepHourly … keepYearly.
func (b BackupModel) KeepRules() []KeepRule {
	var out []KeepRule
	for _, p := range retention.Periods {
		out = append(out, KeepRule{config.KeepKey(p), b.Keep[p], p.Hours(), config.MaxKeepPeriods})
	}
	return out
}

// Encrypted reports whether the service's archives are encrypted.
func (b BackupModel) Encrypted() bool { return len(b.Recipients) > 0 || b.RecipientsFile != "" }

// encryption is the worker config's backup.encryption (nil: none).
func (b BackupModel) encryption() *config.Encryption {
	if !b.Encrypted() {
		return nil
	}
	return &config.Encryption{Recipients: b.Recipients, RecipientsFile: b.RecipientsFile}
}

// SFTPModel is the resolved backup.sftp.* settings.
type SFTPModel struct {
	PrivateKeyFile string
	KnownHostsFile string
	VerifyReadBack bool
}

// UnitBase is the name shared by the backup service and timer.
func (s ServiceModel) UnitBase() string { return s.Name + "-backup" }

// ServiceUnit is the backup service's unit name.
func (s ServiceModel) ServiceUnit() string { return s.UnitBase() + ".service" }

// ModuleFile is the module's path in the output tree.
func (s ServiceModel) ModuleFile() string { return "modules/" + s.Name + ".nix" }

// StateDirectory is the worker's lock and state folder for this service;
// the unit creates it as a RuntimeDirectory that survives the run, so the
// ExecStopPost recovery can read what the worker recorded.
func (s ServiceModel) StateDirectory() string { return "/run/backup-worker/" + s.Name }

// S3Model is the resolved backup.s3.* settings.
type S3Model struct {
	Endpoint, Region string
	PathStyle        bool
	CredentialsFile  string
	VerifyReadBack   bool
}

// RemoteDestinations reports whether the service writes to a remote
// destination (s3://): its unit then wants the network.
func (s ServiceModel) RemoteDestinations() bool { return config.HasRemote(s.Backup.Paths) }

// LocalDestinations are the destinations that are directories on this
// machine (the unit's ReadWritePaths=).
func (s ServiceModel) LocalDestinations() []string { return config.LocalPaths(s.Backup.Paths) }

// UsesS3 reports whether backup.s3 is set (endpoint or credentials file).
func (s ServiceModel) UsesS3() bool {
	return s.Backup.S3.Endpoint != "" || s.Backup.S3.CredentialsFile != ""
}

// workerS3 is backup.s3 of the worker's JSON (nil when not set).
func (s ServiceModel) workerS3() *config.S3 {
	if !s.UsesS3() {
		return nil
	}
	b := s.Backup.S3
	verify := b.VerifyReadBack
	return &config.S3{Endpoint: b.Endpoint, Region: b.Region, PathStyle: b.PathStyle, CredentialsFile: b.CredentialsFile, VerifyReadBack: &verify}
}

// workerHostName is backup.hostName of the worker's JSON: only with a
// remote destination, where it keys the objects.
func (s ServiceModel) workerHostName() string {
	if !s.RemoteDestinations() {
		return ""
	}
	return s.Backup.HostName
}

// RequiredDestinations are the local destinations that are not optional:
// the only ones tmpfiles may create (an optional one is a mount point of a
// removable disk, and creating it would put backups on the root disk).
func (s ServiceModel) RequiredDestinations() []string {
	var out []string
	for _, p := range s.LocalDestinations() {
		if !contains(s.Backup.OptionalPaths, p) {
			out = append(out, p)
		}
	}
	return out
}

// Credential is one LoadCredential= of the unit: the worker reads the file
// as $CREDENTIALS_DIRECTORY/ID.
type Credential struct{ ID, Path string }

// Credentials are the files the unit passes to the worker: the SSH key
// and known_hosts of the sftp:// destinations, and the age recipients
// file (not secret, but read the same way), and the notification files.
// lib.nix's credentials is the same list.
func (s ServiceModel) Credentials() []Credential {
	var out []Credential
	if s.hasKind("sftp") {
		if p := s.Backup.SFTP.PrivateKeyFile; p != "" {
			out = append(out, Credential{"sftp-key", p})
		}
		if p := s.Backup.SFTP.KnownHostsFile; p != "" {
			out = append(out, Credential{"sftp-known-hosts", p})
		}
	}
	if s.hasKind("s3") && s.Backup.S3.CredentialsFile != "" {
		out = append(out, Credential{"s3-credentials", s.Backup.S3.CredentialsFile})
	}
	if p := s.Backup.RecipientsFile; p != "" {
		out = append(out, Credential{"age-recipients", p})
	}
	if p := s.Backup.NotifyURLsFile; p != "" {
		out = append(out, Credential{config.NotifyURLsCredential, p})
	}
	if p := s.Backup.NotifyPingURLFile; p != "" {
		out = append(out, Credential{config.NotifyPingCredential, p})
	}
	return out
}

// DrillCredentials are the drill unit's: the backup's, and the identity
// that decrypts (only the drill unit gets it).
func (s ServiceModel) DrillCredentials() []Credential {
	out := s.Credentials()
	if p := s.Backup.DrillIdentityFile; p != "" {
		out = append(out, Credential{config.DrillIdentityCredential, p})
	}
	return out
}

// DrillUnitBase is the base name of the drill's service and timer.
func (s ServiceModel) DrillUnitBase() string { return s.UnitBase() + "-drill" }

// hasKind reports whether a destination is of kind (config.Destination).
func (s ServiceModel) hasKind(kind string) bool {
	for _, p := range s.Backup.Paths {
		if d, err := config.ParseDestination(p); err == nil && d.Kind == kind {
			return true
		}
	}
	return false
}

// MountPaths are the paths the unit needs mounted (RequiresMountsFor=): the
// data paths, so a data disk that failed to mount is not backed up as an
// empty folder, and the required destinations.
func (s ServiceModel) MountPaths() []string {
	return append(append([]string{}, s.DataPaths...), s.RequiredDestinations()...)
}

// HasHooks reports whether the service runs preBackup/postBackup commands,
// which need a looser sandbox (see Hardening).
func (s ServiceModel) HasHooks() bool { return s.Backup.PreBackup != "" || s.Backup.PostBackup != "" }

// HookWritablePaths are the container runtimes' state folders that hooks
// may write (see Runtimes); none without hooks.
func (s ServiceModel) HookWritablePaths() []string {
	if !s.HasHooks() {
		return nil
	}
	var out []string
	for _, r := range Runtimes {
		for _, u := range s.Units {
			if strings.HasPrefix(u, r.UnitPrefix) {
				out = append(out, r.HookWritablePaths...)
				break
			}
		}
	}
	return out
}

// Hardening is the [Service] sandbox of this service's unit (see
// unitHardening).
func (s ServiceModel) Hardening() []Setting { return hardeningFor(s.HasHooks()) }

// WorkerConfig is the JSON config the plain units hand to backup-worker.
func (s ServiceModel) WorkerConfig() config.Config {
	minKeep, ratio := s.Backup.MinKeep, s.Backup.MinSizeRatio
	return config.Config{
		Comment:     config.GeneratedComment,
		Name:        s.Name,
		ServiceName: s.Units,
		DataPaths:   s.DataPaths,
		User:        s.User,
		Group:       s.Group,
		Backup: config.Backup{
			Paths:              s.Backup.Paths,
			OptionalPaths:      s.Backup.OptionalPaths,
			Format:             s.Backup.Format,
			MaxRetentionDays:   s.Backup.MaxRetentionDays,
			RetentionSnapshots: s.Backup.RetentionSnapshots,
			MinKeep:            &minKeep,
			KeepHourly:         s.Backup.Keep[retention.Hourly],
			KeepDaily:          s.Backup.Keep[retention.Daily],
			KeepWeekly:         s.Backup.Keep[retention.Weekly],
			KeepMonthly:        s.Backup.Keep[retention.Monthly],
			KeepYearly:         s.Backup.Keep[retention.Yearly],
			MinSizeRatio:       &ratio,
			OnCalendar:         s.OnCalendar,
			Exclude:            s.Backup.Exclude,
			PreBackup:          s.Backup.PreBackup,
			PostBackup:         s.Backup.PostBackup,
			CompressionLevel:   s.Backup.CompressionLevel,
			Threads:            s.Backup.Threads,
			CaptureFirst:       s.Backup.CaptureFirst,
			StateDirectory:     s.StateDirectory(),
			Encryption:         s.Backup.encryption(),
			HostName:           s.workerHostName(),
			SFTP:               s.sftpConfig(),
			S3:                 s.workerS3(),
			Notify:             s.Backup.Notify(),
			PrometheusTextfile: s.PrometheusTextfile(),

			HealthCheck: s.Backup.HealthCheck,
			Drill:       s.Backup.Drill(),
		},
	}
}

// sftpConfig is backup.sftp for the worker: left out (zero) without an
// sftp:// destination, so the JSON of other services does not change.
func (s ServiceModel) sftpConfig() config.SFTP {
	if !s.hasKind("sftp") {
		return config.SFTP{}
	}
	readBack := s.Backup.SFTP.VerifyReadBack
	return config.SFTP{
		PrivateKeyFile: s.Backup.SFTP.PrivateKeyFile,
		KnownHostsFile: s.Backup.SFTP.KnownHostsFile,
		VerifyReadBack: &readBack,
	}
}

// buildModel applies defaults and converts schedules; the spec has been
// validated, so an error here is a bug rather than bad input.
func buildModel(spec *Spec, opts Options) (*Model, error) {
	ns := spec.Namespace
	if ns == "" {
		ns = defaultNamespace
	}
	m := &Model{Namespace: strings.Split(ns, "."), WorkerPath: opts.WorkerPath, ConfigDir: opts.ConfigDir,
		MetricsDirectory: spec.Metrics.TextfileDirectory}
	for _, svc := range spec.Services {
		s := resolveService(spec.Defaults, svc)
		cal, err := schedule.ToOnCalendar(s.Backup.Schedule)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		s.OnCalendar = cal
		if s.Backup.DrillSchedule != "" {
			if s.Backup.DrillOnCalendar, err = schedule.ToOnCalendar(s.Backup.DrillSchedule); err != nil {
				return nil, fmt.Errorf("service %s: drill: %w", s.Name, err)
			}
		}
		s.MetricsDirectory = spec.Metrics.TextfileDirectory
		m.Services = append(m.Services, s)
	}
	sort.Slice(m.Services, func(i, j int) bool { return m.Services[i].Name < m.Services[j].Name })
	return m, nil
}

// resolveService merges a service over the spec-wide defaults over the
// built-in defaults.
func resolveService(d ServiceSettings, svc Service) ServiceModel {
	b, db := svc.Backup, d.Backup
	s := ServiceModel{
		Name:        svc.Name,
		Description: svc.Description,
		Enable:      pick(svc.Enable, d.Enable, false),
		Units:       unitList(svc.ServiceName),
		DataPaths:   svc.DataPaths,
		User:        pick(svc.User, d.User, defaultUser),
		Group:       pick(svc.Group, d.Group, defaultGroup),
		CreateUser:  pick(svc.CreateUser, d.CreateUser, false),
		Backup: BackupModel{
			Enable:             pick(b.Enable, db.Enable, true),
			Paths:              expandName(pickList(b.Paths, db.Paths, []string{defaultPath}), svc.Name),
			OptionalPaths:      expandName(pickList(b.OptionalPaths, db.OptionalPaths, nil), svc.Name),
			Schedule:           pick(b.Schedule, db.Schedule, defaultSchedule),
			Format:             pick(b.Format, db.Format, defaultFormat),
			MaxRetentionDays:   pick(b.MaxRetentionDays, db.MaxRetentionDays, defaultMaxRetentionDays),
			RetentionSnapshots: pick(b.RetentionSnapshots, db.RetentionSnapshots, defaultRetentionSnapshots),
			MinKeep:            pick(b.MinKeep, db.MinKeep, defaultMinKeep),
			Keep: [retention.NumPeriods]int{
				pick(b.KeepHourly, db.KeepHourly, 0), pick(b.KeepDaily, db.KeepDaily, 0), pick(b.KeepWeekly, db.KeepWeekly, 0),
				pick(b.KeepMonthly, db.KeepMonthly, 0), pick(b.KeepYearly, db.KeepYearly, 0),
			},
			MinSizeRatio:       pick(b.MinSizeRatio, db.MinSizeRatio, defaultMinSizeRatio),
			Exclude:            pickList(b.Exclude, db.Exclude, nil),
			CompressionLevel:   pick(b.CompressionLevel, db.CompressionLevel, 0),
			Threads:            pick(b.Threads, db.Threads, 0),
			Persistent:         pick(b.Persistent, db.Persistent, true),
			RandomizedDelaySec: pick(b.RandomizedDelaySec, db.RandomizedDelaySec, 0),
			TimeoutStartSec:    pick(b.TimeoutStartSec, db.TimeoutStartSec, defaultTimeoutStartSec),
			OnFailure:          pickList(b.OnFailure, db.OnFailure, nil),
			CaptureFirst:       pick(b.CaptureFirst, db.CaptureFirst, false),
			PreBackup:          pick(b.PreBackup, db.PreBackup, ""),
			PostBackup:         pick(b.PostBackup, db.PostBackup, ""),
			Recipients:         pickList(b.Encryption.Recipients, db.Encryption.Recipients, nil),
			RecipientsFile:     pick(b.Encryption.RecipientsFile, db.Encryption.RecipientsFile, ""),
			HostName:           pick(b.HostName, db.HostName, ""),
			SFTP: SFTPModel{
				PrivateKeyFile: pick(b.SFTP.PrivateKeyFile, db.SFTP.PrivateKeyFile, ""),
				KnownHostsFile: pick(b.SFTP.KnownHostsFile, db.SFTP.KnownHostsFile, ""),
				VerifyReadBack: pick(b.SFTP.VerifyReadBack, db.SFTP.VerifyReadBack, true),
			},
			S3: S3Model{
				Endpoint:        pick(b.S3.Endpoint, db.S3.Endpoint, ""),
				Region:          pick(b.S3.Region, db.S3.Region, ""),
				PathStyle:       pick(b.S3.PathStyle, db.S3.PathStyle, false),
				CredentialsFile: pick(b.S3.CredentialsFile, db.S3.CredentialsFile, ""),
				VerifyReadBack:  pick(b.S3.VerifyReadBack, db.S3.VerifyReadBack, true),
			},
			NotifyURLsFile:    pick(b.Notify.URLsFile, db.Notify.URLsFile, ""),
			NotifyPingURLFile: pick(b.Notify.PingURLFile, db.Notify.PingURLFile, ""),

			DrillSchedule:         pick(b.Drill.Schedule, db.Drill.Schedule, ""),
			DrillScratchDirectory: pick(b.Drill.ScratchDirectory, db.Drill.ScratchDirectory, config.DefaultDrillScratchDirectory),
			DrillIdentityFile:     pick(b.Drill.IdentityFile, db.Drill.IdentityFile, ""),
		},
	}
	s.Backup.HealthCheck = resolveHealthCheck(b.HealthCheck, db.HealthCheck)
	if s.Description == "" {
		s.Description = s.Name
	}
	return s
}

// resolveHealthCheck takes the service's healthCheck table if it sets
// anything, else the [defaults.backup] one; timeoutSec gets its default.
func resolveHealthCheck(service, defaults HealthCheckSettings) *config.HealthCheck {
	h := service
	if !h.set() {
		h = defaults
	}
	if !h.set() {
		return nil
	}
	return &config.HealthCheck{
		URL:        pick(h.URL, nil, ""),
		TCP:        pick(h.TCP, nil, ""),
		Command:    h.Command,
		TimeoutSec: pick(h.TimeoutSec, nil, config.DefaultHealthCheckTimeoutSec),
	}
}

func pick[T any](service, defaults *T, builtin T) T {
	switch {
	case service != nil:
		return *service
	case defaults != nil:
		return *defaults
	}
	return builtin
}

func pickList(service, defaults, builtin []string) []string {
	switch {
	case service != nil:
		return service
	case defaults != nil:
		return defaults
	}
	return builtin
}

func expandName(paths []string, name string) []string {
	if paths == nil {
		return nil
	}
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = strings.ReplaceAll(p, namePlaceholder, name)
	}
	return out
}

// unitList converts the decoded serviceName (validated: string or list of
// strings) to a list.
func unitList(v any) []string {
	switch x := v.(type) {
	case string:
		if x == "" {
			return nil
		}
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
