package generator

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/backupgen/backupgen/internal/config"
)

// The 3-2-1 example, examples/offsite: a local disk, an optional USB disk,
// and age-encrypted S3 and SFTP copies, credentials from sops-nix/agenix
// files. cmd/backup-worker/TestOffsiteExample runs its worker JSON end to
// end against real servers.

const offsiteOut = "examples/offsite/backup"

// offsiteCredentials is what each unit of the example must pass with
// LoadCredential=: NAME:PATH, the paths outside the store.
var offsiteCredentials = []string{
	"sftp-key:/run/agenix/backup-ssh-key",
	"sftp-known-hosts:/etc/backupgen/known_hosts",
	"s3-credentials:/run/secrets/backup-s3.env",
	"age-recipients:/etc/backupgen/age-recipients",
}

func offsiteHost(t *testing.T, extra string) string {
	return writeNix(t, "host.nix", `{ ... }: {
  harness.fakePackages = [ "backup-worker" ];
  networking.hostName = "homelab";
  `+exampleNS+`.paperless.enable = true;
  `+exampleNS+`.gitea.enable = true;
`+extra+`
}
`)
}

// offsiteEval evaluates the example with the host; the harness does not
// declare networking.hostName (which the modules read), so a stub does.
func offsiteEval(t *testing.T, flags []string, hostExtra string) evalResult {
	t.Helper()
	stub := writeNix(t, "networking.nix", `{ lib, ... }: {
  options.networking.hostName = lib.mkOption { type = lib.types.str; default = "nixos"; };
}
`)
	def := filepath.Join(projectRoot(t), filepath.FromSlash(offsiteOut), "default.nix")
	args := append(append([]string{"--extra-module", stub}, flags...), def, offsiteHost(t, hostExtra))
	return nixosEval(t, args...)
}

// TestNixOSOffsiteExample is issue 13's "done when" for the NixOS side:
// the example's modules evaluate with the real module system, the units
// pass systemd-analyze verify, want network-online.target and pass every
// secret with LoadCredential= (the same lines as the plain units); the
// worker JSON Nix writes passes check-config, holds only the secrets'
// paths and equals the plain unit's JSON but for the host name; tmpfiles
// creates the local disk's folder only (not the USB mount point, nothing
// for a URL).
func TestNixOSOffsiteExample(t *testing.T) {
	r := offsiteEval(t, []string{"--verify", "--tmpfiles"}, "")
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	for _, name := range []string{"gitea", "paperless"} {
		unit := name + "-backup.service"
		plain, err := os.ReadFile(filepath.Join(projectRoot(t), offsiteOut, "etc/systemd/system", unit))
		if err != nil {
			t.Fatal(err)
		}
		for kind, text := range map[string]string{"NixOS": r.unit(unit), "plain": string(plain)} {
			checkOffsiteUnit(t, kind+" "+unit, text)
		}
		file := r.workerConfigFile(t, unit)
		checkConfig(t, file)
		checkOffsiteJSON(t, r, name, file)
	}
	tree, _ := r.get("tmpfiles", "tree").([]any)
	var created []string
	for _, e := range tree {
		created = append(created, e.(map[string]any)["path"].(string))
	}
	for _, p := range []string{"/var/backups/gitea", "/var/backups/paperless"} {
		if !slices.Contains(created, p) {
			t.Errorf("tmpfiles did not create %s; created %v", p, created)
		}
	}
	for _, p := range created {
		if p != "/var" && p != "/var/backups" && !strings.HasPrefix(p, "/var/backups/") {
			t.Errorf("tmpfiles created %s: only the local disk's folders may be created (not the USB mount point, nothing for a URL)", p)
		}
	}
}

// checkOffsiteUnit: the network is wanted, every secret is passed by path
// with LoadCredential=, and no line other than those names a secret path.
func checkOffsiteUnit(t *testing.T, what, text string) {
	t.Helper()
	var creds []string
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "LoadCredential="); ok {
			creds = append(creds, v)
			continue
		}
		if strings.Contains(line, "/run/secrets") || strings.Contains(line, "/run/agenix") {
			t.Errorf("%s names a secret outside LoadCredential=: %s", what, line)
		}
	}
	if !cmp.Equal(creds, offsiteCredentials) {
		t.Errorf("%s: LoadCredential= %q, want %q", what, creds, offsiteCredentials)
	}
	for _, want := range []string{"Wants=network-online.target", "After=network-online.target"} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("%s lacks %s", what, want)
		}
	}
}

// checkOffsiteJSON compares the worker config Nix wrote (a store file) with
// the plain unit's, and checks it holds the secrets' paths, not secrets.
func checkOffsiteJSON(t *testing.T, r evalResult, name, file string) {
	t.Helper()
	nix, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := config.Load(filepath.Join(projectRoot(t), offsiteOut, "etc/backupgen", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if nix.Backup.HostName != "homelab" || plain.Backup.HostName != "" {
		t.Errorf("%s: host name NixOS %q (want networking.hostName), plain %q (want the worker's)", name, nix.Backup.HostName, plain.Backup.HostName)
	}
	plain.Backup.HostName = nix.Backup.HostName
	plain.Comment = nix.Comment // the generated header, in the plain file only
	if diff := cmp.Diff(plain, nix, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("%s: the NixOS worker config differs from the plain one (-plain +nix):\n%s", name, diff)
	}
	b := nix.Backup
	paths := []string{b.S3.CredentialsFile, b.SFTP.PrivateKeyFile, b.SFTP.KnownHostsFile, b.Encryption.RecipientsFile}
	if !cmp.Equal(paths, []string{"/run/secrets/backup-s3.env", "/run/agenix/backup-ssh-key", "/etc/backupgen/known_hosts", "/etc/backupgen/age-recipients"}) {
		t.Errorf("%s: credential paths %q", name, paths)
	}
	// Nothing the evaluation put in the store (the JSON included) holds a
	// secret's path other than that JSON, nor anything secret-shaped.
	entries, _ := os.ReadDir(r.files)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(r.files, e.Name()))
		for _, bad := range []string{"AWS_SECRET_ACCESS_KEY", "PRIVATE KEY", "AGE-SECRET-KEY"} {
			if strings.Contains(string(data), bad) {
				t.Errorf("store file %s holds %q", e.Name(), bad)
			}
		}
	}
}

// TestNixOSOffsiteSecretsStayOutOfStore: a host that gives a secret as a
// Nix path (which would copy it into the world-readable store) fails
// evaluation at the option; one that gives a store path as a string gets a
// worker config that check-config (run at build time) refuses.
func TestNixOSOffsiteSecretsStayOutOfStore(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "backup-s3.env")
	if err := os.WriteFile(secret, []byte("AWS_ACCESS_KEY_ID=x\nAWS_SECRET_ACCESS_KEY=y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opt := exampleNS + ".gitea.backup.s3.credentialsFile"
	r := offsiteEval(t, nil, "  "+opt+" = "+secret+";")
	if r.rc == 0 || !strings.Contains(r.stderr, "credentialsFile") {
		t.Errorf("a Nix path as credentialsFile: exit %d\n%s", r.rc, r.stderr)
	}
	r = offsiteEval(t, nil, "  "+opt+` = "/nix/store/00000000000000000000000000000000-backup-s3.env";`)
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	out, err := runCheckConfig(t, r.workerConfigFile(t, "gitea-backup.service"))
	if err == nil || !strings.Contains(out, "credentialsFile") {
		t.Errorf("check-config accepted a credentials file in the Nix store: %v\n%s", err, out)
	}
}

// runCheckConfig runs the real `backup-worker check-config` on file and
// returns its output and error (checkConfig requires success).
func runCheckConfig(t *testing.T, file string) (string, error) {
	t.Helper()
	out, err := exec.Command(workerBinary(t), "check-config", file).CombinedOutput()
	return string(out), err
}

// TestReadmeOffsiteRecipe: the README's 3-2-1 recipe (its ```toml block,
// with a real key for the "age1…" placeholder and a service added) is a
// valid spec, and its destinations, encryption, S3 and SFTP settings are
// the example's, which the tests above and cmd/backup-worker run.
func TestReadmeOffsiteRecipe(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(projectRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## A 3-2-1 recipe")
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(section)
	if !ok || m == nil {
		t.Fatal("README.md has no 3-2-1 recipe with a ```toml block")
	}
	example, err := config.Load(filepath.Join(projectRoot(t), offsiteOut, "etc/backupgen/paperless.json"))
	if err != nil {
		t.Fatal(err)
	}
	spec := strings.Replace(m[1], `"age1…"`, `"`+example.Backup.Encryption.Recipients[0]+`"`, 1) +
		"\n[[services]]\nname = \"paperless\"\ndataPaths = [\"/var/lib/paperless\"]\n"
	files, err := Generate("README.md", []byte(spec), goldenOptions)
	if err != nil {
		t.Fatalf("the README's recipe is not a valid spec:\n%v\n%s", err, spec)
	}
	var got *config.Config
	for _, f := range files {
		if f.Path == "etc/backupgen/paperless.json" {
			if got, err = config.Decode(bytes.NewReader(f.Content)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got == nil {
		t.Fatal("no worker config generated")
	}
	gb, eb := got.Backup, example.Backup
	eb.S3.VerifyReadBack, eb.Encryption.RecipientsFile = gb.S3.VerifyReadBack, ""
	for what, pair := range map[string][2]any{
		"paths": {gb.Paths, eb.Paths}, "optionalPaths": {gb.OptionalPaths, eb.OptionalPaths},
		"encryption": {gb.Encryption, eb.Encryption}, "s3": {gb.S3, eb.S3}, "sftp": {gb.SFTP, eb.SFTP},
	} {
		if diff := cmp.Diff(pair[1], pair[0]); diff != "" {
			t.Errorf("README recipe's %s differs from examples/offsite (-example +README):\n%s", what, diff)
		}
	}
}

// TestOffsiteDocSnippet evaluates the host config docs/offsite.md gives
// for the example (its ```nix block in "The 3-2-1 example") with the
// example's modules; sops-nix, agenix and environment.etc, which the
// harness lacks, are stub options. The units come out with the secrets'
// paths, not their content.
func TestOffsiteDocSnippet(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(projectRoot(t), "docs", "offsite.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "## The 3-2-1 example")
	m := regexp.MustCompile("(?s)```nix\n(.*?)```").FindStringSubmatch(section)
	if !ok || m == nil {
		t.Fatal("docs/offsite.md has no ```nix block in its 3-2-1 section")
	}
	stubs := writeNix(t, "stubs.nix", `{ lib, ... }: {
  options.sops.secrets = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  options.age.secrets = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  options.environment.etc = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  options.networking.hostName = lib.mkOption { type = lib.types.str; default = "nixos"; };
  config.harness.fakePackages = [ "backup-worker" ];
}
`)
	host := writeNix(t, "host.nix", m[1])
	def := filepath.Join(projectRoot(t), filepath.FromSlash(offsiteOut), "default.nix")
	r := nixosEval(t, "--verify", "--extra-module", stubs, def, host)
	if r.rc != 0 {
		t.Fatalf("exit %d\n%s", r.rc, r.stderr)
	}
	for _, unit := range []string{"paperless-backup.service", "gitea-backup.service"} {
		checkOffsiteUnit(t, unit, r.unit(unit))
	}
}
