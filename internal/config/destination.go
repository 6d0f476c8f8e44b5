package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Destination is one entry of backup.paths, parsed: a local directory, or
// a remote store named by a URL.
type Destination struct {
	// Kind is "local" (Path is an absolute directory), "s3" (Bucket,
	// Prefix) or "sftp" (User, Host, Port, Path).
	Kind string
	// Path is the local directory (local) or the remote directory (sftp),
	// absolute and clean.
	Path string
	// Bucket and Prefix locate an S3 destination (s3://BUCKET[/PREFIX]);
	// Prefix has no leading or trailing "/" ("" for the bucket's root).
	Bucket, Prefix string
	// User, Host and Port address an SFTP server (Port "22" when not
	// given).
	User, Host, Port string
}

// Remote reports whether the destination is not a local directory.
func (d Destination) Remote() bool { return d.Kind != "local" }

// bucketRE: S3's bucket naming rules (3-63 lowercase letters, digits, '.'
// and '-', starting and ending with a letter or digit).
var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// prefixPartRE: what one "/"-separated part of an S3 prefix may hold: no
// character a shell, a URL or a listing would read otherwise.
var prefixPartRE = regexp.MustCompile(`^[A-Za-z0-9_.=+-]+$`)

// ParseDestination parses an entry of backup.paths: an absolute local path
// or s3://BUCKET[/PREFIX]. The error says what is wrong, without the key.
func ParseDestination(s string) (Destination, error) {
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		if why := ValidPath(s); why != "" {
			return Destination{}, fmt.Errorf("%q: %s", s, why)
		}
		return Destination{Kind: "local", Path: s}, nil
	}
	switch scheme {
	case "s3":
		return parseS3(s, rest)
	case "sftp":
		// parseSFTP never echoes the URL: it may hold a password.
		u, err := url.Parse(s)
		if err != nil {
			return Destination{}, errors.New("not a valid sftp:// URL: want sftp://USER@HOST[:PORT]/PATH")
		}
		return parseSFTP(u)
	}
	return Destination{}, fmt.Errorf("%q: unknown scheme %q (a destination is an absolute path, s3://BUCKET[/PREFIX] or sftp://USER@HOST[:PORT]/PATH)", s, scheme)
}

func parseS3(s, rest string) (Destination, error) {
	if strings.Contains(rest, "@") {
		// Never echo it: the part before "@" may be a key and secret.
		return Destination{}, errors.New("an S3 destination is s3://BUCKET[/PREFIX], without user or password (credentials go in backup.s3.credentialsFile)")
	}
	if strings.ContainsAny(rest, "?#:%\\ \t\n\r\x00") {
		return Destination{}, fmt.Errorf("%q: an S3 destination is s3://BUCKET[/PREFIX], without user, port, query or escapes", s)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if !bucketRE.MatchString(bucket) || strings.Contains(bucket, "..") {
		return Destination{}, fmt.Errorf("%q: %q is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')", s, bucket)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		for _, part := range strings.Split(prefix, "/") {
			if part == "." || part == ".." || !prefixPartRE.MatchString(part) {
				return Destination{}, fmt.Errorf("%q: prefix part %q: use letters, digits and _ . = + - between single slashes", s, part)
			}
		}
	}
	return Destination{Kind: "s3", Bucket: bucket, Prefix: prefix}, nil
}

// String is the destination as backup.paths writes it (canonical form).
func (d Destination) String() string {
	switch d.Kind {
	case "sftp":
		host := d.Host
		if d.Port != "22" {
			host += ":" + d.Port
		}
		return "sftp://" + d.User + "@" + host + d.Path
	case "s3":
		if d.Prefix == "" {
			return "s3://" + d.Bucket
		}
		return "s3://" + d.Bucket + "/" + d.Prefix
	}
	return d.Path
}

// Place identifies where a remote destination keeps its archives, so that
// two entries of backup.paths that name one place are listed once
// (destinations): S3 bucket and prefix (the endpoint is one per service),
// or the SFTP user, host, port and path. A host name is compared without
// case and trailing dot (DNS names are case-insensitive), an IP address
// in its canonical form ([::1] and [0:0::1] are one host). Two names for
// one server (an IP and its name, a CNAME) cannot be told apart here.
func (d Destination) Place() string {
	if d.Kind != "sftp" {
		return d.String()
	}
	host := strings.TrimSuffix(strings.ToLower(d.Host), ".")
	if a, err := netip.ParseAddr(d.Host); err == nil {
		host = a.Unmap().String()
	}
	return "sftp://" + d.User + "@" + net.JoinHostPort(host, d.Port) + d.Path
}

// IsRemote reports whether the destination p is written as a URL
// (SCHEME://...), not a local path, valid or not.
func IsRemote(p string) bool { return strings.Contains(p, "://") }

// LocalPaths returns the destinations of paths that are not URLs: local
// directories (what tmpfiles, ReadWritePaths, RequiresMountsFor and every
// file-system check apply to; an invalid one is kept, so its own check
// reports it).
func LocalPaths(paths []string) []string {
	var out []string
	for _, p := range paths {
		if !IsRemote(p) {
			out = append(out, p)
		}
	}
	return out
}

// HasRemote reports whether paths holds a remote destination.
func HasRemote(paths []string) bool {
	for _, p := range paths {
		if IsRemote(p) {
			return true
		}
	}
	return false
}

// S3 holds the settings of every s3:// destination of the service.
type S3 struct {
	// Endpoint is the server's URL: https://HOST[:PORT] (http:// is
	// accepted, with a warning at every run).
	Endpoint string `json:"endpoint"`
	// Region is the bucket's region ("us-east-1" when empty).
	Region string `json:"region,omitempty"`
	// PathStyle addresses the bucket as ENDPOINT/BUCKET instead of
	// BUCKET.ENDPOINT (MinIO, Garage, Ceph RGW and most self-hosted
	// servers need it).
	PathStyle bool `json:"pathStyle,omitempty"`
	// CredentialsFile is a key=value file with AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN; the unit
	// passes it as the credential "s3-credentials".
	CredentialsFile string `json:"credentialsFile"`
	// VerifyReadBack reads every uploaded archive back in full and checks
	// its SHA-256 (default true; off on metered links, where the size and
	// the checksums or ETag the server reports are the check).
	VerifyReadBack *bool `json:"verifyReadBack,omitempty"`
}

// ReadBack returns VerifyReadBack, true when unset.
func (s *S3) ReadBack() bool { return s == nil || s.VerifyReadBack == nil || *s.VerifyReadBack }

// remote checks the settings the remote destinations of b need.
func (v *validator) remote(b Backup) {
	hasS3 := false
	for _, p := range b.Paths {
		if d, err := ParseDestination(p); err == nil && d.Kind == "s3" {
			hasS3 = true
		}
	}
	if b.HostName != "" && (!ValidName(b.HostName) || len(b.HostName) > 253) {
		v.add("backup.hostName", "%q: must start with a letter or digit and contain only letters, digits, '_', '.', '-'", b.HostName)
	}
	if b.S3 == nil {
		if hasS3 {
			v.add("backup.s3", "required by the s3:// destinations (endpoint and credentialsFile)")
		}
		return
	}
	u, err := url.Parse(b.S3.Endpoint)
	switch {
	case b.S3.Endpoint == "":
		v.add("backup.s3.endpoint", "required (e.g. https://s3.eu-central-1.amazonaws.com)")
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		v.add("backup.s3.endpoint", "%q: must be https://HOST[:PORT] (or http:// explicitly)", b.S3.Endpoint)
	}
	if why := ValidPath(b.S3.CredentialsFile); why != "" {
		v.add("backup.s3.credentialsFile", "%q: %s", b.S3.CredentialsFile, why)
	} else if strings.ContainsAny(b.S3.CredentialsFile, " \t\"'\\") {
		// LoadCredential= takes the path as it is, without quoting.
		v.add("backup.s3.credentialsFile", "%q: must not contain spaces, quotes or backslashes (the unit passes it with LoadCredential=)", b.S3.CredentialsFile)
	} else if strings.HasPrefix(b.S3.CredentialsFile, "/nix/store/") {
		v.add("backup.s3.credentialsFile", "%q: a secret in the Nix store is readable by every user; point at a file outside it (sops-nix, agenix)", b.S3.CredentialsFile)
	}
	if b.S3.Region != "" && !regexp.MustCompile(`^[a-z0-9-]{1,64}$`).MatchString(b.S3.Region) {
		v.add("backup.s3.region", "%q: not a region name (lowercase letters, digits, '-')", b.S3.Region)
	}
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
