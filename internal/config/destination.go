package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Destination is one entry of backup.paths, parsed: a local directory, or
// a remote store named by a URL.
type Destination struct {
	// Kind is "local" (Path is an absolute directory) or "s3" (Bucket,
	// Prefix).
	Kind string
	// Path is the local directory.
	Path string
	// Bucket and Prefix locate an S3 destination (s3://BUCKET[/PREFIX]);
	// Prefix has no leading or trailing "/" ("" for the bucket's root).
	Bucket, Prefix string
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
	}
	return Destination{}, fmt.Errorf("%q: unknown scheme %q (a destination is an absolute path or s3://BUCKET[/PREFIX])", s, scheme)
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
	case "s3":
		if d.Prefix == "" {
			return "s3://" + d.Bucket
		}
		return "s3://" + d.Bucket + "/" + d.Prefix
	}
	return d.Path
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
	// ETag the server reports are the check).
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
	}
	if b.S3.Region != "" && !regexp.MustCompile(`^[a-z0-9-]{1,64}$`).MatchString(b.S3.Region) {
		v.add("backup.s3.region", "%q: not a region name (lowercase letters, digits, '-')", b.S3.Region)
	}
}
