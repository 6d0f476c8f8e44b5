package main

// The 3-2-1 example (examples/offsite) end to end: the worker JSON and the
// unit backupgen generated for it, run by the real binary against a real
// S3 server (versitygw) and a real sshd. Only what cannot be the same on a
// test machine is rewritten: the S3 endpoint, the SFTP host, port and
// directory, local paths (moved under a temporary root), the owner; the
// secrets reach the worker the way systemd passes them, as files named by
// the unit's LoadCredential= lines in $CREDENTIALS_DIRECTORY. See
// docs/RELIABILITY.md ("example321").

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/internal/testtool"
)

const offsiteDir = "../../examples/offsite/backup"

// offsite is one service of the example, ready to run on this machine.
type offsite struct {
	*e2e
	name      string
	cfg       *config.Config
	s3        *testtool.S3Server
	ssh       *testtool.SSHServer
	bucket    string // the example's bucket, created on the test server
	s3Prefix  string // PREFIX/HOST/NAME/ in it
	sftpDir   string // PATH/HOST/NAME on the server (a local directory here)
	local     string // the local disk's destination
	usb       string // the optional USB disk's
	credDir   string // $CREDENTIALS_DIRECTORY
	identity  string // the age identity of the test's recipient
	s3Creds   string // the working s3-credentials file content
	content   map[string]string
	unitNames []string
}

// loadCredentials parses the plain unit's LoadCredential=NAME:PATH lines.
func loadCredentials(t *testing.T, unit string) map[string]string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(offsiteDir, "etc/systemd/system", unit))
	if err != nil {
		t.Fatal(err)
	}
	creds := map[string]string{}
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, "LoadCredential="); ok {
			name, path, _ := strings.Cut(v, ":")
			creds[name] = path
		}
	}
	return creds
}

// setupOffsite starts the servers and rewrites the example's JSON of
// service name for them.
func setupOffsite(t *testing.T, name string) *offsite {
	t.Helper()
	cfg, err := config.Load(filepath.Join(offsiteDir, "etc/backupgen", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	o := &offsite{e2e: setup(t, cfg.ServiceName), name: name, cfg: cfg}
	o.s3 = testtool.StartS3ServerRegion(t, cfg.Backup.S3.Region)
	o.ssh = testtool.StartSSHD(t)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	o.rewrite(host)
	o.writeCredentials(loadCredentials(t, name+"-backup.service"))
	o.writeData()
	o.env = append(o.env, "CREDENTIALS_DIRECTORY="+o.credDir)
	for _, u := range cfg.ServiceName {
		o.setUnit(u, "active")
	}
	o.unitNames = cfg.ServiceName
	o.save()
	return o
}

// rewrite moves every local path under the test's root, points the S3
// destination at the test's versitygw and the SFTP one at its sshd.
func (o *offsite) rewrite(host string) {
	t, cfg := o.t, o.cfg
	under := func(p string) string { return filepath.Join(o.root, "host", p) }
	var kinds []string
	for i, p := range cfg.Backup.Paths {
		d, err := config.ParseDestination(p)
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, d.Kind)
		switch d.Kind {
		case "s3":
			o.bucket = d.Bucket
			o.s3Prefix = strings.Trim(d.Prefix+"/"+host+"/"+o.name, "/") + "/"
			o.s3.MakeBucket(d.Bucket)
		case "sftp":
			cfg.Backup.Paths[i] = o.ssh.URL(d.Path)
			o.sftpDir = filepath.Join(o.ssh.Root, d.Path, host, o.name)
		default:
			cfg.Backup.Paths[i] = under(p)
			if slices.Contains(cfg.Backup.OptionalPaths, p) {
				o.usb = under(p)
			} else {
				o.local = under(p)
			}
		}
	}
	if !slices.Equal(kinds, []string{"local", "local", "s3", "sftp"}) || o.usb == "" || len(cfg.Backup.OptionalPaths) != 1 ||
		!cfg.Backup.Encrypted() || !cfg.Backup.S3.PathStyle {
		t.Fatalf("the example changed shape: %v %+v", kinds, cfg.Backup)
	}
	cfg.Backup.OptionalPaths = []string{o.usb}
	cfg.Backup.S3.Endpoint = o.s3.Endpoint()
	for i, p := range cfg.DataPaths {
		cfg.DataPaths[i] = under(p)
	}
	cfg.Backup.StateDirectory = under(cfg.Backup.StateDirectory)
	cfg.Backup.SigningKey = under(cfg.Backup.SigningKeyOrDefault())
	cfg.User, cfg.Group = strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	// The USB disk is plugged in: its directory holds a file, as a used
	// disk does (an empty directory outside any mount is a bare mount
	// point, which the worker skips).
	o.mkdir(o.usb)
	writeTestFile(t, filepath.Join(o.usb, "README"), "backup disk\n")
}

// writeCredentials writes, for each LoadCredential= name of the unit, the
// file systemd would put in $CREDENTIALS_DIRECTORY. The JSON still names
// the example's /run/secrets and /run/agenix paths, absent here.
func (o *offsite) writeCredentials(creds map[string]string) {
	t := o.t
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range creds {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(names, []string{"age-recipients", "s3-credentials", "sftp-key", "sftp-known-hosts"}) {
		t.Fatalf("the unit passes credentials %v", creds)
	}
	for _, p := range creds {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists on this machine: the test could not tell where a credential came from", p)
		}
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	o.identity = filepath.Join(o.root, "offline", "age-identity")
	o.mkdir(filepath.Dir(o.identity))
	writeTestFile(t, o.identity, id.String()+"\n")
	o.credDir = filepath.Join(o.root, "credentials")
	o.mkdir(o.credDir)
	o.s3Creds = readTestFile(t, o.s3.CredFile)
	o.setCredential("s3-credentials", o.s3Creds)
	o.setCredential("sftp-key", readTestFile(t, o.ssh.KeyFile))
	o.setCredential("sftp-known-hosts", readTestFile(t, o.ssh.KnownHostsFile))
	o.setCredential("age-recipients", "# the test's offline key\n"+id.Recipient().String()+"\n")
}

func (o *offsite) setCredential(name, content string) {
	writeTestFile(o.t, filepath.Join(o.credDir, name), content)
}

func (o *offsite) writeData() {
	o.content = map[string]string{}
	for i, dp := range o.cfg.DataPaths {
		for rel, body := range map[string]string{
			"settings.json":         `{"n":` + strconv.Itoa(i) + "}\n",
			"docs/2026/ünïcødé.pdf": strings.Repeat("%PDF page ", 20000),
		} {
			p := filepath.Join(dp, rel)
			o.mkdir(filepath.Dir(p))
			writeTestFile(o.t, p, body)
			o.content[p] = body
		}
	}
}

func (o *offsite) save() {
	b, err := o.cfg.Marshal()
	if err != nil {
		o.t.Fatal(err)
	}
	writeTestFile(o.t, o.config, string(b))
}

func (o *offsite) mkdir(p string) {
	if err := os.MkdirAll(p, 0o750); err != nil {
		o.t.Fatal(err)
	}
}

func writeTestFile(t *testing.T, p, body string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readTestFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// archiveRE is an archive of the example's services: tar.zst, encrypted.
var archiveRE = regexp.MustCompile(`^[a-z]+-\d{8}T\d{6}Z\.tar\.zst\.age$`)

// localArchives lists the archives in a directory (nil when it is absent).
func localArchives(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if archiveRE.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// s3Archives lists the archive objects under the service's prefix, and
// whether a multipart upload is in progress there.
func (o *offsite) s3Archives() (archives []string, uploads bool) {
	for _, k := range o.s3.Keys(o.bucket, o.s3Prefix) {
		if strings.HasPrefix(k, "upload:") {
			uploads = true
		} else if archiveRE.MatchString(k) {
			archives = append(archives, k)
		}
	}
	return archives, uploads
}

// copies lists the archives of every destination, by kind.
func (o *offsite) copies() map[string][]string {
	s3, _ := o.s3Archives()
	return map[string][]string{"local": localArchives(o.local), "usb": localArchives(o.usb), "s3": s3, "sftp": localArchives(o.sftpDir)}
}

// plantOld puts a trusted archive of 2020 (signed by the host's key, far
// older than maxRetentionDays) in every destination, for pruning to remove.
func (o *offsite) plantOld(kinds ...string) string {
	t := o.t
	key, err := hostkey.Load(o.cfg.Backup.SigningKey, true)
	if err != nil {
		t.Fatal(err)
	}
	base := o.name + "-20200101T000000Z.tar.zst.age"
	body := []byte("age ciphertext of an old archive\n")
	sum := sha256.Sum256(body)
	files := map[string][]byte{base: body, base + ".sha256": []byte(hex.EncodeToString(sum[:]) + "  " + base + "\n"),
		base + ".sig": key.SignatureFile(base, sum[:], int64(len(body)))}
	for _, kind := range kinds {
		for name, data := range files {
			switch kind {
			case "s3":
				o.s3.Put(o.bucket, o.s3Prefix+name, data)
			default:
				dir := map[string]string{"local": o.local, "usb": o.usb, "sftp": o.sftpDir}[kind]
				o.mkdir(dir)
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return base
}

// run runs the worker and checks the units were stopped in order,
// started in reverse, and are active again.
func (o *offsite) run(want int) string {
	o.t.Helper()
	os.Remove(filepath.Join(o.sysDir, "calls.log"))
	code, _, stderr := o.worker("run", "--config", o.config)
	if code != want {
		o.t.Fatalf("run: exit %d, want %d", code, want)
	}
	o.checkUnitsCycled()
	return stderr
}

func (o *offsite) checkUnitsCycled() {
	o.t.Helper()
	calls := readTestFile(o.t, filepath.Join(o.sysDir, "calls.log"))
	var stops, starts []string
	for _, line := range strings.Split(calls, "\n") {
		if u, ok := strings.CutPrefix(line, "stop "); ok {
			stops = append(stops, u)
		} else if u, ok := strings.CutPrefix(line, "start "); ok {
			starts = append(starts, u)
		}
	}
	rev := slices.Clone(o.unitNames)
	slices.Reverse(rev)
	if !slices.Equal(stops, o.unitNames) || !slices.Equal(starts, rev) {
		o.t.Errorf("systemctl calls:\n%s", calls)
	}
	for _, u := range o.unitNames {
		if o.unitState(u) != "active" {
			o.t.Errorf("%s ends %s", u, o.unitState(u))
		}
	}
}

// secretsLeaked reports which secret appears in text.
func (o *offsite) secretsLeaked(text string) []string {
	var out []string
	for _, s := range []string{testtool.S3Secret, "AGE-SECRET-KEY", "PRIVATE KEY", readTestFile(o.t, o.identity)[20:40]} {
		if strings.Contains(text, s) {
			out = append(out, s)
		}
	}
	return out
}

// TestOffsiteExample runs each service of the example end to end
// (paperless: two units, S3 read-back on; gitea: S3 read-back off): a run
// writes the same encrypted archive to the local disk, the USB disk, the
// bucket and the SFTP server and prunes an expired one in each; list
// --verify, verify (with and without the identity) and prune --dry-run see
// all four copies; an identity that is no recipient fails; the local copy
// and the one downloaded from S3 restore the data, and not without the
// identity.
func TestOffsiteExample(t *testing.T) {
	for _, name := range []string{"paperless", "gitea"} {
		t.Run(name, func(t *testing.T) { testOffsiteService(t, name) })
	}
}

func testOffsiteService(t *testing.T, name string) {
	o := setupOffsite(t, name)
	old := o.plantOld("local", "usb", "s3", "sftp")
	stderr := o.run(0)
	got := o.copies()
	first := got["local"]
	if len(first) != 1 || first[0] == old {
		t.Fatalf("local disk holds %v, want one new archive", first)
	}
	for kind, names := range got {
		if !slices.Equal(names, first) {
			t.Errorf("%s holds %v, want %v (the old one pruned)", kind, names, first)
		}
	}
	o.checkSameBytes(first[0])
	if leaked := o.secretsLeaked(stderr); leaked != nil {
		t.Errorf("the log shows secrets %q", leaked)
	}

	code, stdout, _ := o.worker("list", "--config", o.config)
	if code != 0 || strings.Count(stdout, first[0]) < 4 {
		t.Errorf("list: exit %d, want every destination's copy of %s", code, first[0])
	}
	// Without the identity the host checks checksums and signatures of
	// the ciphertext; with it (off the host) every copy is decrypted and
	// parsed, the remote ones read through the connection.
	for _, args := range [][]string{{"list", "--verify"}, {"verify"}, {"verify", "--identity", o.identity}} {
		code, stdout, _ := o.worker(append(args, "--config", o.config)...)
		n := strings.Count(stdout, first[0])
		if args[0] == "verify" {
			n = strings.Count(stdout, "OK ")
			if len(args) > 1 {
				n = strings.Count(stdout, ".age (decrypted and parsed)")
			}
		}
		if code != 0 || n != 4 || !strings.Contains(stdout, "s3://") || !strings.Contains(stdout, "sftp://") {
			t.Errorf("%v: exit %d, want all four copies checked", args, code)
		}
	}
	wrong, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	wrongFile := filepath.Join(t.TempDir(), "wrong")
	writeTestFile(t, wrongFile, wrong.String()+"\n")
	if code, stdout, _ := o.worker("verify", "--config", o.config, "--identity", wrongFile); code == 0 || strings.Count(stdout, "FAILED ") != 4 {
		t.Errorf("verify with an identity that is no recipient: exit %d", code)
	}
	code, _, _ = o.worker("prune", "--config", o.config, "--dry-run")
	if code != 0 || !mapsEqual(o.copies(), got) {
		t.Errorf("prune --dry-run: exit %d; destinations %v, were %v", code, o.copies(), got)
	}

	// Restore the local copy, then the off-site one downloaded from S3
	// (with its .sha256 and .sig), as after losing the host's disks.
	o.restore(filepath.Join(o.local, first[0]))
	dl := filepath.Join(o.root, "downloaded")
	o.mkdir(dl)
	for _, ext := range []string{"", ".sha256", ".sig"} {
		writeTestFile(t, filepath.Join(dl, first[0]+ext), string(o.s3.Get(o.bucket, o.s3Prefix+first[0]+ext)))
	}
	o.restore(filepath.Join(dl, first[0]))
	if code, _, _ := o.worker("restore", "--config", o.config, "--archive", filepath.Join(dl, first[0]), "--target", t.TempDir()); code == 0 {
		t.Error("restore of an encrypted archive without --identity succeeded")
	}
}

func mapsEqual(a, b map[string][]string) bool {
	for k := range a {
		if !slices.Equal(a[k], b[k]) {
			return false
		}
	}
	return len(a) == len(b)
}

// checkSameBytes: every destination holds the same ciphertext, with a
// .sha256 that sha256sum -c accepts.
func (o *offsite) checkSameBytes(base string) {
	t := o.t
	want := readTestFile(t, filepath.Join(o.local, base))
	for _, dir := range []string{o.usb, o.sftpDir} {
		if readTestFile(t, filepath.Join(dir, base)) != want {
			t.Errorf("%s: a different archive than the local disk's", dir)
		}
	}
	if string(o.s3.Get(o.bucket, o.s3Prefix+base)) != want {
		t.Error("the S3 object differs from the local archive")
	}
	check := exec.Command("sha256sum", "-c", base+".sha256")
	check.Dir = o.sftpDir
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c on the SFTP server's copy: %v\n%s", err, out)
	}
}

// restore extracts archive into a new folder with the test's identity
// and compares every data file.
func (o *offsite) restore(archive string) {
	t := o.t
	t.Helper()
	target := filepath.Join(t.TempDir(), "restore")
	if code, _, _ := o.worker("restore", "--config", o.config, "--archive", archive, "--identity", o.identity, "--target", target); code != 0 {
		t.Fatalf("restore %s: exit %d", archive, code)
	}
	for p, body := range o.content {
		if got, err := os.ReadFile(filepath.Join(target, p)); err != nil || string(got) != body {
			t.Errorf("restored %s: %v (content ok: %v)", p, err, string(got) == body)
		}
	}
}

// TestOffsiteExampleFaults: the fault cases of issue 13 on the example.
// Wrong S3 credentials and an unknown SSH host key: that destination is
// refused in preflight, before any unit is stopped, the others get the
// archive (exit 3) and no secret is logged. The USB disk unplugged:
// skipped, the run is ok. The S3 server killed mid-upload: exit 3, the
// local, USB and SFTP copies committed and an expired archive pruned in
// each, nothing visible on S3; the next run aborts the stale upload.
func TestOffsiteExampleFaults(t *testing.T) {
	o := setupOffsite(t, "paperless")

	o.setCredential("s3-credentials", strings.Replace(o.s3Creds, testtool.S3Secret, "wrong-secret-0123456789abcdef", 1))
	stderr := o.run(3)
	o.checkRefusedBeforeStop(stderr, "s3://")
	o.checkNewestIn("wrong S3 credentials", "local", "usb", "sftp")
	if _, uploads := o.s3Archives(); uploads {
		t.Error("wrong S3 credentials: an upload was started")
	}
	if leaked := o.secretsLeaked(stderr); leaked != nil || strings.Contains(stderr, "wrong-secret") {
		t.Errorf("the log shows secrets %q", leaked)
	}
	o.setCredential("s3-credentials", o.s3Creds)

	time.Sleep(1100 * time.Millisecond) // archive names have one-second resolution
	before := localArchives(o.sftpDir)
	stranger := testtool.WriteEd25519Key(t, filepath.Join(t.TempDir(), "stranger"))
	good := readTestFile(t, o.ssh.KnownHostsFile)
	o.ssh.WriteKnownHosts(stranger.PublicKey())
	o.setCredential("sftp-known-hosts", readTestFile(t, o.ssh.KnownHostsFile))
	stderr = o.run(3)
	o.checkRefusedBeforeStop(stderr, "sftp://")
	if entries, _ := os.ReadDir(o.sftpDir); len(entries) != 3*len(before) || !slices.Equal(localArchives(o.sftpDir), before) {
		t.Errorf("unknown host key: the server's directory changed: %v", entries)
	}
	o.checkNewestIn("unknown host key", "local", "usb", "s3")
	o.setCredential("sftp-known-hosts", good)

	time.Sleep(1100 * time.Millisecond)
	unplugged := o.usb + ".unplugged"
	if err := os.Rename(o.usb, unplugged); err != nil {
		t.Fatal(err)
	}
	stderr = o.run(0)
	if _, err := os.Stat(o.usb); !os.IsNotExist(err) || !strings.Contains(stderr, "level=WARN") {
		t.Errorf("USB disk absent: created again (%v) or no warning", err)
	}
	o.checkNewestIn("USB disk absent", "local", "s3", "sftp")
	if err := os.Rename(unplugged, o.usb); err != nil {
		t.Fatal(err)
	}

	o.killS3MidUpload()
}

// checkNewestIn: the run's archive (the newest on the local disk, which
// every run of the test reaches) is in exactly the destinations kinds.
func (o *offsite) checkNewestIn(what string, kinds ...string) {
	o.t.Helper()
	got := o.copies()
	local := got["local"]
	if len(local) == 0 {
		o.t.Fatalf("%s: no archive on the local disk", what)
	}
	newest := local[len(local)-1]
	for kind, names := range got {
		if slices.Contains(names, newest) != slices.Contains(kinds, kind) {
			o.t.Errorf("%s: %s holds %v; the run's archive %s belongs in %v only", what, kind, names, newest, kinds)
		}
	}
}

// checkRefusedBeforeStop: the log names the destination of kind (a URL
// prefix) as unusable before the first unit is stopped.
func (o *offsite) checkRefusedBeforeStop(stderr, url string) {
	o.t.Helper()
	refused, stop := -1, -1
	for i, line := range strings.Split(stderr, "\n") {
		if refused < 0 && strings.Contains(line, "destination unusable") && strings.Contains(line, url) {
			refused = i
		}
		if stop < 0 && strings.Contains(line, `msg="stopping unit"`) {
			stop = i
		}
	}
	if refused < 0 || stop < 0 || refused > stop {
		o.t.Errorf("%s was not refused before the units were stopped (log lines %d, %d)", url, refused, stop)
	}
}

// killS3MidUpload kills versitygw once the upload of a big archive
// started, then runs again with the server back.
func (o *offsite) killS3MidUpload() {
	t := o.t
	big := make([]byte, 40<<20) // incompressible: several 8 MiB parts
	rand.Read(big)
	writeTestFile(t, filepath.Join(o.cfg.DataPaths[0], "scan.bin"), string(big))
	time.Sleep(1100 * time.Millisecond)
	old := o.plantOld("local", "usb", "sftp")
	before := o.copies()
	stop := make(chan struct{})
	killed := make(chan bool, 1)
	go func() {
		for {
			select {
			case <-stop:
				killed <- false
				return
			default:
			}
			res, err := o.s3.Client.ListMultipartUploads(context.Background(), o.bucket, o.s3Prefix, "", "", "", 10)
			if err == nil && len(res.Uploads) > 0 {
				o.s3.Kill()
				killed <- true
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	code, _, stderr := o.worker("run", "--config", o.config)
	close(stop)
	if !<-killed {
		t.Fatal("the upload never started")
	}
	if code != 3 {
		t.Fatalf("S3 killed mid-upload: exit %d, want 3", code)
	}
	o.checkUnitsActive()
	for _, kind := range []string{"local", "usb", "sftp"} {
		names := localArchives(map[string]string{"local": o.local, "usb": o.usb, "sftp": o.sftpDir}[kind])
		if slices.Contains(names, old) || len(names) != len(before[kind]) || names[len(names)-1] == before[kind][len(before[kind])-1] {
			t.Errorf("%s: %v before, %v after: want the new archive committed and the expired one pruned", kind, before[kind], names)
		}
	}
	o.s3.Start()
	if archives, uploads := o.s3Archives(); !slices.Equal(archives, before["s3"]) || !uploads {
		t.Errorf("S3 after the kill: archives %v (want %v, nothing new), upload pending %v", archives, before["s3"], uploads)
	}
	if leaked := o.secretsLeaked(stderr); leaked != nil {
		t.Errorf("the log shows secrets %q", leaked)
	}
	time.Sleep(1100 * time.Millisecond)
	stderr = o.run(0)
	archives, uploads := o.s3Archives()
	local := localArchives(o.local)
	if uploads || archives[len(archives)-1] != local[len(local)-1] || !strings.Contains(stderr, "aborted stale upload") {
		t.Errorf("next run: S3 %v (upload pending %v), local %v", archives, uploads, local)
	}
}

func (o *offsite) checkUnitsActive() {
	for _, u := range o.unitNames {
		if o.unitState(u) != "active" {
			o.t.Errorf("%s ends %s", u, o.unitState(u))
		}
	}
}
