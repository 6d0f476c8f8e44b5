package config

import (
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// Destination is one entry of backup.paths, parsed: a local directory, or
// a remote store named by a URL.
type Destination struct {
	// Kind is "local", "s3" or "sftp".
	Kind string
	// Path is the local directory (local) or the remote directory (sftp),
	// absolute and clean.
	Path string
	// User, Host and Port address an SFTP server (Port "22" when not
	// given).
	User, Host, Port string
}

// IsRemote reports whether dest (an entry of backup.paths) names a remote
// store rather than a local directory.
func IsRemote(dest string) bool {
	return strings.Contains(dest, "://")
}

// ParseDestination parses an entry of backup.paths: an absolute local
// path, or sftp://USER@HOST[:PORT]/PATH.
func ParseDestination(s string) (Destination, error) {
	if !IsRemote(s) {
		if why := ValidPath(s); why != "" {
			return Destination{}, fmt.Errorf("%s", why)
		}
		return Destination{Kind: "local", Path: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return Destination{}, fmt.Errorf("not a valid URL: %v", err)
	}
	switch u.Scheme {
	case "sftp":
		return parseSFTP(u)
	}
	return Destination{}, fmt.Errorf("unknown destination scheme %q: use an absolute path or sftp://USER@HOST[:PORT]/PATH", u.Scheme)
}

// parseSFTP: a user, a host, an optional numeric port and an absolute
// clean path; no password (the key is a credential file), no query.
func parseSFTP(u *url.URL) (Destination, error) {
	const form = "want sftp://USER@HOST[:PORT]/PATH"
	if u.User == nil || u.User.Username() == "" {
		return Destination{}, fmt.Errorf("no user: %s", form)
	}
	if _, has := u.User.Password(); has {
		return Destination{}, fmt.Errorf("a password in the URL is refused (it would be in the Nix store and the logs): use backup.sftp.privateKeyFile")
	}
	if u.Hostname() == "" {
		return Destination{}, fmt.Errorf("no host: %s", form)
	}
	port := u.Port()
	if port == "" {
		port = "22"
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return Destination{}, fmt.Errorf("port %q: must be 1 to 65535", port)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return Destination{}, fmt.Errorf("query or fragment not allowed: %s", form)
	}
	p := u.Path
	if p == "" || !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return Destination{}, fmt.Errorf("path %q: must be an absolute clean directory below /: %s", p, form)
	}
	return Destination{Kind: "sftp", Path: p, User: u.User.Username(), Host: u.Hostname(), Port: port}, nil
}

// sftp: the key and known_hosts files are needed (the unit may pass them
// as credentials, but the JSON names where they come from).
func (v *validator) sftp(s SFTP) {
	for _, f := range []struct{ key, p string }{
		{"backup.sftp.privateKeyFile", s.PrivateKeyFile},
		{"backup.sftp.knownHostsFile", s.KnownHostsFile},
	} {
		if f.p == "" {
			v.add(f.key, "required with an sftp:// destination")
		} else if why := ValidPath(f.p); why != "" {
			v.add(f.key, "%q: %s", f.p, why)
		} else if strings.ContainsAny(f.p, " \t\"'\\:%;") {
			// The unit passes it as LoadCredential=ID:PATH, unquoted.
			v.add(f.key, "%q: must not hold spaces, quotes, backslashes, ':', '%%' or ';' (it is passed with LoadCredential=)", f.p)
		} else if f.key == "backup.sftp.privateKeyFile" && strings.HasPrefix(f.p, "/nix/store/") {
			v.add(f.key, "%q: a secret in the Nix store is readable by every user; point at a file outside it (sops-nix, agenix)", f.p)
		}
	}
}
