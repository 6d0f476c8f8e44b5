package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

func testRecipients(t *testing.T) (x25519, sshEd string, secret string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient().String(), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " me@host", id.String()
}

func TestValidateEncryption(t *testing.T) {
	x, s, secret := testRecipients(t)
	c := validBase()
	c.Backup.Encryption = &Encryption{Recipients: []string{x, s}, RecipientsFile: "/etc/backup/recipients"}
	expectValid(t, "x25519 + ssh-ed25519 + file", c)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rp, _ := ssh.NewPublicKey(&rk.PublicKey)
	c.Backup.Encryption = &Encryption{Recipients: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rp)))}}
	expectValid(t, "ssh-rsa", c)
	if !c.Backup.Encrypted() || c.Backup.RunExt() != "tar.gz.age" {
		t.Errorf("Encrypted %v, RunExt %q", c.Backup.Encrypted(), c.Backup.RunExt())
	}

	c.Backup.Encryption = &Encryption{Recipients: []string{x, "age1qqqqbad", "ssh-ed25519 AAAAnotbase64", "ssh-dss AAAA"}}
	got := strings.Join(problems(t, c), "\n")
	for _, want := range []string{
		`backup.encryption.recipients[1] "age1qqqqbad": not a valid age X25519 recipient`,
		`backup.encryption.recipients[2] "ssh-ed25519 AAAAnotbase64": not a valid SSH public key`,
		`backup.encryption.recipients[3] "ssh-dss AAAA": not an age recipient`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("want %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "recipients[0]") {
		t.Errorf("a good recipient was rejected:\n%s", got)
	}

	// A private key pasted by mistake is refused and never repeated.
	c.Backup.Encryption = &Encryption{Recipients: []string{secret}}
	got = strings.Join(problems(t, c), "\n")
	if !strings.Contains(got, "recipients[0]") || !strings.Contains(got, "private key") || strings.Contains(got, secret[20:30]) {
		t.Errorf("private key: %s", got)
	}

	c.Backup.Encryption = &Encryption{RecipientsFile: "relative/recipients"}
	expectProblem(t, "relative file", c, "backup.encryption.recipientsFile", "relative/recipients")

	c.Backup.Encryption = &Encryption{Recipients: []string{x}}
	c.Backup.Format = "zip"
	expectProblem(t, "zip", c, "backup.format", "cannot be encrypted")

	c.Backup.Encryption = &Encryption{}
	expectValid(t, "empty encryption (zip, not encrypted)", c)
	if c.Backup.Encrypted() || c.Backup.RunExt() != "zip" {
		t.Error("an empty encryption block encrypts")
	}
}

func TestParseRecipientsFile(t *testing.T) {
	x, s, _ := testRecipients(t)
	rs, err := ParseRecipientsFile([]byte("# team keys\n\n"+x+"\n  "+s+"  \n"), "r.txt")
	if err != nil || len(rs) != 2 {
		t.Fatalf("%d recipients, %v", len(rs), err)
	}
	if _, err := ParseRecipientsFile([]byte(x+"\nnonsense\n"), "r.txt"); err == nil || !strings.Contains(err.Error(), "r.txt line 2") {
		t.Errorf("bad line: %v", err)
	}
	if _, err := ParseRecipientsFile([]byte("# nothing\n"), "r.txt"); err == nil || !strings.Contains(err.Error(), "no recipients") {
		t.Errorf("empty file: %v", err)
	}
}

func TestDecodeEncryptionStrict(t *testing.T) {
	x, _, _ := testRecipients(t)
	base := `{"name":"app","dataPaths":["/srv/app"],"user":"u","group":"g","backup":{"paths":["/backup"],"encryption":%s}}`
	c, err := Decode(strings.NewReader(strings.Replace(base, "%s", `{"recipients":["`+x+`"]}`, 1)))
	if err != nil || !c.Backup.Encrypted() {
		t.Fatalf("%v", err)
	}
	out, err := c.Marshal()
	if err != nil || !strings.Contains(string(out), `"encryption"`) {
		t.Fatalf("marshal: %v\n%s", err, out)
	}
	if _, err := Decode(strings.NewReader(strings.Replace(base, "%s", `{"recipient":["`+x+`"]}`, 1))); err == nil || !strings.Contains(err.Error(), "backup.encryption.recipient: unknown key") {
		t.Errorf("unknown key: %v", err)
	}
}
