package config

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"filippo.io/age"
	"filippo.io/age/agessh"
)

// EncryptedSuffix is appended to the name of an encrypted archive
// (NAME-TS.tar.zst.age).
const EncryptedSuffix = ".age"

// Encryption encrypts every archive with age (filippo.io/age) to every
// recipient: the host holds public keys only, so a stolen disk or bucket
// reveals nothing. Recipients are age X25519 keys ("age1…") or SSH public
// keys ("ssh-ed25519 …", "ssh-rsa …"), inline or one per line in
// RecipientsFile (blank lines and "#" comments allowed; not a secret, but
// read through LoadCredential=age-recipients so it may live anywhere).
type Encryption struct {
	Recipients     []string `json:"recipients,omitempty"`
	RecipientsFile string   `json:"recipientsFile,omitempty"`
}

// Encrypted reports whether archives are encrypted.
func (b Backup) Encrypted() bool {
	e := b.Encryption
	return e != nil && (len(e.Recipients) > 0 || e.RecipientsFile != "")
}

// RunExt returns the extension of the archives a run writes: the
// format's, plus EncryptedSuffix when encrypted.
func (b Backup) RunExt() string {
	if b.Encrypted() {
		return ArchiveExt(b.Format) + EncryptedSuffix
	}
	return ArchiveExt(b.Format)
}

// ParseRecipient parses one age recipient: an X25519 key or an SSH
// public key (ssh-ed25519, ssh-rsa). The error never repeats the key's
// bytes beyond what the caller shows.
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "age1"):
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("not a valid age X25519 recipient: %w", err)
		}
		return r, nil
	case strings.HasPrefix(s, "ssh-ed25519 "), strings.HasPrefix(s, "ssh-rsa "):
		r, err := agessh.ParseRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("not a valid SSH public key: %w", err)
		}
		return r, nil
	case looksSecret(s):
		return nil, fmt.Errorf("this is a private key; give the public key (the host must never hold the identity)")
	}
	return nil, fmt.Errorf("not an age recipient: want an age1… X25519 key, or an ssh-ed25519 or ssh-rsa public key")
}

// ParseRecipientsFile parses a recipients file: one recipient per line,
// blank lines and lines starting with "#" ignored. Errors name the line.
func ParseRecipientsFile(data []byte, name string) ([]age.Recipient, error) {
	var out []age.Recipient
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r, err := ParseRecipient(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", name, n, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no recipients in it", name)
	}
	return out, nil
}

// encryption: every inline recipient parses; the file path is absolute
// (its content is checked by the run's preflight, where the file is);
// zip cannot be encrypted (its central directory is at the end, so it can
// neither be parsed while it is produced nor restored from a decrypting
// stream).
func (v *validator) encryption(b Backup) {
	e := b.Encryption
	if e == nil {
		return
	}
	for i, s := range e.Recipients {
		if _, err := ParseRecipient(s); err != nil {
			v.add(fmt.Sprintf("backup.encryption.recipients[%d]", i), "%q: %v", shortKey(s), err)
		}
	}
	if e.RecipientsFile != "" {
		if why := ValidPath(e.RecipientsFile); why != "" {
			v.add("backup.encryption.recipientsFile", "%q: %s", e.RecipientsFile, why)
		}
	}
	if b.Encrypted() && b.Format == "zip" {
		v.add("backup.format", "%q: cannot be encrypted (backup.encryption is set); use a tar format", b.Format)
	}
}

// shortKey shortens a key for a message: the start names it well enough.
// A private key pasted by mistake is never repeated.
func shortKey(s string) string {
	if looksSecret(s) {
		return "(a private key, not shown)"
	}
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func looksSecret(s string) bool {
	return strings.Contains(strings.ToUpper(s), "AGE-SECRET-KEY-") || strings.Contains(s, "PRIVATE KEY")
}
