package generator

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/backupgen/backupgen/internal/config"
)

// nodeExporterStub declares services.prometheus.exporters the way nixpkgs
// does (a submodule whose node exporter has enable, enabledCollectors and
// extraFlags) and renders the exporter's ExecStart from them as nixpkgs'
// node exporter module does; the harness has no nixpkgs services.
const nodeExporterStub = `{ config, lib, ... }:
let cfg = config.services.prometheus.exporters.node; in
{
  options.services.prometheus.exporters = lib.mkOption {
    type = lib.types.submodule {
      options.node = {
        enable = lib.mkEnableOption "the node exporter";
        enabledCollectors = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
        extraFlags = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
      };
    };
    default = { };
  };
  config = lib.mkIf cfg.enable {
    systemd.services.prometheus-node-exporter = {
      wantedBy = [ "multi-user.target" ];
      serviceConfig.ExecStart = "/bin/node_exporter "
        + lib.concatMapStringsSep " " (c: "--collector." + c) cfg.enabledCollectors
        + " " + lib.concatStringsSep " " cfg.extraFlags;
    };
  };
}
`

const exampleTextfileDir = "/var/lib/prometheus-node-exporter-text-files"

// TestNixOSMetrics: the example's [metrics] textfileDirectory reaches
// every service's worker config (DIR/backup-NAME.prom, as in the plain
// JSON) and its sandbox (ReadWritePaths=); tmpfiles creates DIR; with the
// node exporter enabled its textfile collector reads DIR, and without it
// the exporter is left alone. A host can move the directory.
func TestNixOSMetrics(t *testing.T) {
	stub := writeNix(t, "node-exporter.nix", nodeExporterStub)
	r := nixosEval(t, "--extra-module", stub, exampleDefault(t),
		exampleHost(t, "services.prometheus.exporters.node.enable = true;"))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	exec, _ := r.get("systemd", "services", "prometheus-node-exporter", "serviceConfig", "ExecStart").(string)
	for _, want := range []string{"--collector.textfile ", "--collector.textfile.directory=" + exampleTextfileDir} {
		if !strings.Contains(exec+" ", want) {
			t.Errorf("node exporter ExecStart lacks %q: %q", want, exec)
		}
	}
	rules, _ := r.get("systemd", "tmpfiles", "rules").([]any)
	var found bool
	for _, x := range rules {
		found = found || x.(string) == `d "`+exampleTextfileDir+`" 0755 root root -`
	}
	if !found {
		t.Errorf("no tmpfiles rule for the textfile directory in %v", rules)
	}
	for _, name := range []string{"immich", "myapp", "vaultwarden"} {
		unit := name + "-backup.service"
		cfg, err := config.Load(r.workerConfigFile(t, unit))
		if err != nil {
			t.Fatal(err)
		}
		if want := exampleTextfileDir + "/backup-" + name + ".prom"; cfg.Backup.PrometheusTextfile != want {
			t.Errorf("%s: prometheusTextfile %q, want %q", name, cfg.Backup.PrometheusTextfile, want)
		}
		if !strings.Contains(r.unit(unit), `ReadWritePaths=-"`+exampleTextfileDir+`"`) {
			t.Errorf("%s cannot write the textfile directory:\n%s", unit, r.unit(unit))
		}
	}

	// Exporter off: no collector flags are forced on it.
	r = nixosEval(t, "--extra-module", stub, exampleDefault(t), exampleHost(t, ""))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	if r.get("systemd", "services", "prometheus-node-exporter") != nil {
		t.Error("the node exporter was enabled by backupgen")
	}

	// A host moves the directory; a bad one fails at the option.
	r = nixosEval(t, "--extra-module", stub, exampleDefault(t),
		exampleHost(t, `services.prometheus.exporters.node.enable = true; backupgen.metrics.textfileDirectory = "/srv/textfiles";`))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	exec, _ = r.get("systemd", "services", "prometheus-node-exporter", "serviceConfig", "ExecStart").(string)
	cfg, err := config.Load(r.workerConfigFile(t, "myapp-backup.service"))
	if err != nil || !strings.Contains(exec, "--collector.textfile.directory=/srv/textfiles") || cfg.Backup.PrometheusTextfile != "/srv/textfiles/backup-myapp.prom" {
		t.Errorf("moved directory: %q, %v %q", exec, err, cfg.Backup.PrometheusTextfile)
	}
	r = nixosEval(t, exampleDefault(t), exampleHost(t, `backupgen.metrics.textfileDirectory = "/srv/text files";`))
	if r.rc == 0 || !strings.Contains(r.stderr, "backupgen.metrics.textfileDirectory") {
		t.Errorf("a directory with a space: exit %d\n%s", r.rc, r.stderr)
	}
}

// TestNixOSNotify: the notification files reach the worker config as
// paths and the unit as LoadCredential=notify-urls/notify-ping (never
// their content), the unit wants the network, and a file in the Nix store
// or a relative path fails evaluation naming the option.
func TestNixOSNotify(t *testing.T) {
	r := nixosEval(t, "--verify", exampleDefault(t), exampleHost(t, ""))
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	unit := r.unit("myapp-backup.service")
	for _, want := range []string{
		"LoadCredential=notify-urls:/run/secrets/backup-notify-urls\n",
		"LoadCredential=notify-ping:/run/secrets/backup-ping-myapp\n",
		"Wants=network-online.target",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	cfg, err := config.Load(r.workerConfigFile(t, "myapp-backup.service"))
	if err != nil {
		t.Fatal(err)
	}
	if n := cfg.Backup.Notify; n == nil || n.URLsFile != "/run/secrets/backup-notify-urls" || n.PingURLFile != "/run/secrets/backup-ping-myapp" {
		t.Errorf("notify = %+v", n)
	}
	my := exampleNS + ".myapp"
	for _, tc := range []struct{ set, want string }{
		{my + `.backup.notify.urlsFile = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-urls";`, "Nix store"},
		{my + `.backup.notify.pingUrlFile = "run/secrets/ping";`, "notify.pingUrlFile"},
		{my + `.backup.notify.pingUrlFile = ./ping;`, "notify.pingUrlFile"},
	} {
		r := nixosEval(t, exampleDefault(t), exampleHost(t, tc.set))
		if r.rc == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, want an error with %q\n%s", tc.set, r.rc, tc.want, r.stderr)
		}
	}
}

// The plain output of the example: the same credentials and the
// textfile, and one tmpfiles line for the directory.
func TestExampleNotifyMetricsPlain(t *testing.T) {
	unit, err := os.ReadFile(exampleFile(t, "etc/systemd/system/immich-backup.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`(?m)^LoadCredential=notify-urls:/run/secrets/backup-notify-urls$`, `(?m)^LoadCredential=notify-ping:/run/secrets/backup-ping-immich$`, `(?m)^ReadWritePaths=-"` + exampleTextfileDir + `"$`} {
		if !regexp.MustCompile(re).Match(unit) {
			t.Errorf("immich-backup.service lacks %s", re)
		}
	}
	tmp, err := os.ReadFile(exampleFile(t, filepath.Join("etc", "tmpfiles.d", "backupgen-metrics.conf")))
	if err != nil || !strings.Contains(string(tmp), `d "`+exampleTextfileDir+`" 0755 root root -`) {
		t.Errorf("backupgen-metrics.conf: %v\n%s", err, tmp)
	}
}
