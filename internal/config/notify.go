package config

import "strings"

// Notify names the files that hold the notification URLs. The URLs carry
// tokens and passwords, so only the files' paths are in the config (and
// the Nix store); the unit passes the files with LoadCredential= (names
// NotifyURLsCredential, NotifyPingCredential) and the worker reads them
// when it runs. internal/notify parses their content (check-config and
// the run).
type Notify struct {
	// URLsFile holds shoutrrr URLs, one per line ("#" comments allowed).
	URLsFile string `json:"urlsFile,omitempty"`
	// PingURLFile holds one healthchecks.io or Uptime Kuma push URL.
	PingURLFile string `json:"pingUrlFile,omitempty"`
}

// LoadCredential= names of the notification files.
const (
	NotifyURLsCredential = "notify-urls"
	NotifyPingCredential = "notify-ping"
)

// Enabled reports whether any notification file is named.
func (n *Notify) Enabled() bool { return n != nil && (n.URLsFile != "" || n.PingURLFile != "") }

// notify: each file is an absolute path the unit can pass with
// LoadCredential= (unquoted there), outside the Nix store (a secret there
// is world-readable).
func (v *validator) notify(n *Notify) {
	if n == nil {
		return
	}
	if !n.Enabled() {
		v.add("backup.notify", "set urlsFile, pingUrlFile or both (or leave notify out)")
	}
	for _, f := range []struct{ key, p string }{
		{"backup.notify.urlsFile", n.URLsFile},
		{"backup.notify.pingUrlFile", n.PingURLFile},
	} {
		if f.p == "" {
			continue
		}
		if why := SecretFileProblem(f.p, "the URLs hold secrets"); why != "" {
			v.add(f.key, "%q: %s", f.p, why)
		}
	}
}

// SecretFileProblem says why p cannot name a secret file the unit passes
// with LoadCredential=, or "". secret says what is secret about it.
func SecretFileProblem(p, secret string) string {
	switch {
	case ValidPath(p) != "":
		return ValidPath(p)
	case strings.ContainsAny(p, " \t\"'\\:%;"):
		return "must not hold spaces, quotes, backslashes, ':', '%' or ';' (it is passed with LoadCredential=)"
	case strings.HasPrefix(p, "/nix/store/"):
		return secret + ", and the Nix store is readable by every user; point at a file outside it (sops-nix, agenix)"
	}
	return ""
}

// MetricsDirectoryProblem says why dir cannot be node_exporter's textfile
// directory, or "". Besides a clean absolute path, it is written unquoted
// into the exporter's --collector.textfile.directory= flag.
func MetricsDirectoryProblem(dir string) string {
	if why := ValidPath(dir); why != "" {
		return why
	}
	if strings.ContainsAny(dir, " \t\"'\\%$`;") {
		return "must not hold spaces, quotes, backslashes, '%', '$', '`' or ';' (it is passed to node_exporter's --collector.textfile.directory=)"
	}
	return ""
}
