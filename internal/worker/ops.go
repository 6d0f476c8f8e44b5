package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	ageenc "filippo.io/age"
	"github.com/hashicorp/go-multierror"
	"github.com/spf13/pflag"

	"github.com/backupgen/backupgen/internal/archive"
	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/hostkey"
	"github.com/backupgen/backupgen/internal/retention"
)

// formatOf returns the archive format of a file name by its extension
// (an encrypted archive's is that of its plaintext: NAME-TS.tar.zst.age is
// tar.zst; see isEncryptedName).
func formatOf(name string) (string, bool) {
	name = strings.TrimSuffix(name, config.EncryptedSuffix)
	for _, f := range config.Formats {
		if strings.HasSuffix(name, "."+config.ArchiveExt(f)) {
			return f, true
		}
	}
	return "", false
}

// parseArchiveName reads a name as one of service's archives,
// NAME-TS.EXT or NAME-TS.EXT.age in any format: the one rule every
// Destination's List and name checks apply.
func parseArchiveName(service, name string) (StoredArchive, bool) {
	format, ok := formatOf(name)
	if !ok {
		return StoredArchive{}, false
	}
	ext, encrypted := config.ArchiveExt(format), isEncryptedName(name)
	if encrypted {
		ext += config.EncryptedSuffix
	}
	t, ok := retention.ParseName(service, ext, name)
	if !ok {
		return StoredArchive{}, false
	}
	return StoredArchive{Archive: retention.Archive{Name: name, Time: t}, Format: format, Encrypted: encrypted}, true
}

// destArchive is an archive found in a destination.
type destArchive struct {
	retention.Archive
	dir       string
	format    string
	encrypted bool // NAME-TS.EXT.age
}

func (a destArchive) path() string { return filepath.Join(a.dir, a.Name) }

// scanAllFormats lists the service's archives in dir in every known format
// (the format may have changed over time), encrypted or not (encryption
// may have been turned on or off), newest first.
func scanAllFormats(dir, name string) ([]destArchive, error) {
	var out []destArchive
	for _, f := range config.Formats {
		for _, enc := range []bool{false, true} {
			ext := config.ArchiveExt(f)
			if enc {
				ext += config.EncryptedSuffix
			}
			as, err := retention.Scan(dir, name, ext)
			if err != nil {
				return nil, err
			}
			for _, a := range as {
				out = append(out, destArchive{Archive: a, dir: dir, format: f, encrypted: enc})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, nil
}

// Checksum states reported by list and verify.
const (
	checksumOK       = "ok"       // verified against the file's content
	checksumPresent  = "present"  // a well-formed .sha256 exists (not verified)
	checksumMissing  = "missing"  // no .sha256 beside the archive
	checksumMismatch = "mismatch" // the content does not match
	checksumInvalid  = "invalid"  // the .sha256 is unreadable or names another file
)

// verifyArchiveKey checks the checksum (when a .sha256 exists; a missing
// one is reported, not an error: a crash between the links of the write
// protocol leaves one) and parses the whole archive, both through one
// descriptor, and checks the signature against key. c.err covers the
// checksum and the structure, c.signature and c.sigErr the signature.
// An encrypted archive (NAME-TS.EXT.age) is decrypted with ids and its
// plaintext parsed; without ids only its checksum and signature are
// checked (c.structure is false).
func verifyArchiveKey(ctx context.Context, key *hostkey.Key, path, format string, ids []ageenc.Identity) archiveCheck {
	if isEncryptedName(path) {
		if ids == nil {
			return inspectArchive(ctx, key, path, true, nil)
		}
		c := inspectArchive(ctx, key, path, true, func(f io.ReaderAt, size int64) error {
			return verifyEncrypted(ctx, f, size, format, ids)
		})
		c.structure = c.err == nil && c.sum != nil
		return c
	}
	c := inspectArchive(ctx, key, path, true, func(f io.ReaderAt, size int64) error {
		_, err := archive.VerifyAt(ctx, f, size, format)
		return err
	})
	c.structure = c.err == nil && c.sum != nil
	return c
}

func (c *cli) verify(ctx context.Context, args []string) int {
	var common commonFlags
	fs := pflag.NewFlagSet("verify", pflag.ContinueOnError)
	all := fs.Bool("all", false, "verify every archive, not only the newest per destination")
	adopt := fs.Bool("adopt", false, "sign the selected archives that verify but are unsigned (written before signing existed): only for archives you vouch for")
	identity := fs.String("identity", "", "age identity `FILE` (age-keygen output, or an unencrypted ssh-ed25519/ssh-rsa private key): decrypt encrypted (.age) archives and parse them in full; without it only their checksum and signature are checked")
	if done, code := c.parse(fs, "verify --config FILE [--all] [--adopt] [--identity FILE] [ARCHIVE...]", args, &common); done {
		return code
	}
	cfg, ok := c.loadConfig(common.config)
	if !ok {
		return ExitUsage
	}
	var ids []ageenc.Identity
	if *identity != "" {
		var err error
		if ids, err = loadIdentities(*identity); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker verify: %v\n", err)
			return ExitUsage
		}
	}
	var targets []destArchive
	var remote []storedTargets // verified through the Destination
	var errs *multierror.Error
	if fs.NArg() > 0 {
		for _, p := range fs.Args() {
			format, ok := formatOf(p)
			if !ok {
				fmt.Fprintf(c.stderr, "backup-worker verify: %s: unknown archive extension (want one of %s)\n", p, strings.Join(config.Formats, ", "))
				return ExitUsage
			}
			targets = append(targets, destArchive{Archive: retention.Archive{Name: filepath.Base(p)}, dir: filepath.Dir(p), format: format, encrypted: isEncryptedName(p)})
		}
	} else {
		for _, dir := range cfg.Backup.Paths {
			store, err := openStore(cfg, dir, false, owner{uid: -1, gid: -1}, nil, c.log)
			var stored []StoredArchive
			if err == nil {
				defer closeStore(store)
				stored, err = store.List(ctx)
			}
			if err != nil {
				if errors.Is(err, os.ErrNotExist) && cfg.Backup.IsOptional(dir) {
					fmt.Fprintf(c.stdout, "SKIP %s (optional destination missing)\n", dir)
					continue
				}
				fmt.Fprintf(c.stdout, "FAILED %s: %v\n", dir, err)
				errs = multierror.Append(errs, err)
				continue
			}
			if len(stored) == 0 {
				fmt.Fprintf(c.stdout, "FAILED %s: no archives of %s\n", dir, cfg.Name)
				errs = multierror.Append(errs, fmt.Errorf("%s: no archives", dir))
				continue
			}
			if !*all {
				stored = stored[:1]
			}
			if _, local := store.(*localDir); !local {
				remote = append(remote, storedTargets{store, stored})
				continue
			}
			for _, a := range stored {
				targets = append(targets, destArchive{Archive: a.Archive, dir: dir, format: a.Format, encrypted: a.Encrypted})
			}
		}
	}
	key, err := loadSigningKey(cfg, *adopt)
	if err != nil {
		fmt.Fprintf(c.stderr, "backup-worker verify: signatures not checked: %v\n", err)
		if *adopt {
			return ExitFailed
		}
	}
	var own owner
	if *adopt {
		if own, err = lookupOwner(cfg.User, cfg.Group); err != nil {
			fmt.Fprintf(c.stderr, "backup-worker verify: %v\n", err)
			return ExitFailed
		}
	}
	for _, a := range targets {
		if err := c.verifyOne(ctx, key, a, *adopt, own, ids); err != nil {
			errs = multierror.Append(errs, err)
		}
	}
	for _, r := range remote {
		for _, a := range r.archives {
			if err := c.verifyStored(ctx, key, r.store, a, *adopt, ids); err != nil {
				errs = multierror.Append(errs, err)
			}
		}
	}
	if errs != nil {
		return exitCodeFor(ctx, errs)
	}
	return ExitOK
}

// verifyOne verifies (or adopts) one archive and prints the verdict.
func (c *cli) verifyOne(ctx context.Context, key *hostkey.Key, a destArchive, adopt bool, own owner, ids []ageenc.Identity) error {
	if adopt {
		how, err := adoptArchive(ctx, key, a.path(), a.format, own, ids)
		if err != nil {
			fmt.Fprintf(c.stdout, "FAILED %s: %v\n", a.path(), err)
			return err
		}
		fmt.Fprintf(c.stdout, "OK %s (%s)\n", a.path(), how)
		return nil
	}
	ck := verifyArchiveKey(ctx, key, a.path(), a.format, ids)
	if ck.err != nil {
		fmt.Fprintf(c.stdout, "FAILED %s: %v\n", a.path(), ck.err)
		return ck.err
	}
	if ck.signature != signatureOK {
		err := fmt.Errorf("%s: %w", a.path(), ck.reason())
		fmt.Fprintf(c.stdout, "UNTRUSTED %s: %v\n", a.path(), ck.reason())
		return err
	}
	note := ""
	switch {
	case ck.checksum == checksumMissing:
		note = " (no .sha256; structure verified only)"
	case a.encrypted && !ck.structure:
		note = " (encrypted: checksum and signature verified; give --identity FILE to decrypt and parse it)"
	case a.encrypted:
		note = " (decrypted and parsed)"
	}
	fmt.Fprintf(c.stdout, "OK %s%s\n", a.path(), note)
	return nil
}
