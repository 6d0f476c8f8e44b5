package config

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultHealthCheckTimeoutSec bounds a health check when timeoutSec is
// unset: the probe is retried until then.
const DefaultHealthCheckTimeoutSec = 60

// HealthCheck is backup.healthCheck: after the run has started the
// service's units again (and systemd reports them active), the worker
// probes the application with exactly one of URL, TCP or Command, retrying
// until TimeoutSec. An application that does not come back fails the run;
// the committed archives are kept and pruning is skipped.
type HealthCheck struct {
	// URL is fetched with GET; any 2xx status is healthy.
	URL string `json:"url,omitempty"`
	// TCP is HOST:PORT; a completed connect is healthy.
	TCP string `json:"tcp,omitempty"`
	// Command is an argv (no shell; Command[0] an absolute path) run as
	// root inside the backup unit's sandbox, like the hooks; exit 0 is
	// healthy.
	Command []string `json:"command,omitempty"`
	// TimeoutSec bounds the retries (default 60).
	TimeoutSec int `json:"timeoutSec,omitempty"`
}

// TimeoutSecOrDefault returns TimeoutSec, or the default when unset.
func (h HealthCheck) TimeoutSecOrDefault() int {
	if h.TimeoutSec == 0 {
		return DefaultHealthCheckTimeoutSec
	}
	return h.TimeoutSec
}

// Kind names the probe that is set ("url", "tcp", "command"), or "" when
// none or several are.
func (h HealthCheck) Kind() string {
	var kinds []string
	if h.URL != "" {
		kinds = append(kinds, "url")
	}
	if h.TCP != "" {
		kinds = append(kinds, "tcp")
	}
	if len(h.Command) > 0 {
		kinds = append(kinds, "command")
	}
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// healthCheck: exactly one probe, well formed, and a timeout within bounds.
func (v *validator) healthCheck(h *HealthCheck) {
	if h == nil {
		return
	}
	const key = "backup.healthCheck"
	n := 0
	for _, set := range []bool{h.URL != "", h.TCP != "", len(h.Command) > 0} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.add(key, "set exactly one of url, tcp and command (found %d)", n)
	}
	if h.URL != "" {
		if why := CheckHealthURL(h.URL); why != "" {
			v.add(key+".url", "%q: %s", h.URL, why)
		}
	}
	if h.TCP != "" {
		if why := CheckHostPort(h.TCP); why != "" {
			v.add(key+".tcp", "%q: %s", h.TCP, why)
		}
	}
	for i, arg := range h.Command {
		k := fmt.Sprintf("%s.command[%d]", key, i)
		switch {
		case strings.ContainsRune(arg, 0):
			v.add(k, "contains a NUL character")
		case i == 0 && ValidPath(arg) != "":
			v.add(k, "%q: the program must be an absolute path (no shell, no PATH lookup)", arg)
		}
	}
	if h.TimeoutSec < 0 || h.TimeoutSec > MaxTimeoutSec {
		v.add(key+".timeoutSec", "%d: must be 0 (the default, %d) up to %d seconds", h.TimeoutSec, DefaultHealthCheckTimeoutSec, MaxTimeoutSec)
	}
}

// CheckHealthURL says why u is not an http(s) URL with a host, or "".
func CheckHealthURL(u string) string {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return "not a URL"
	case p.Scheme != "http" && p.Scheme != "https":
		return "must be an http:// or https:// URL"
	case p.Host == "":
		return "has no host"
	case p.User != nil:
		return "must not hold a user or password (it is stored in the Nix store and logged)"
	case strings.ContainsAny(u, " \t\r\n"):
		return "contains white space"
	}
	return ""
}

// CheckHostPort says why s is not HOST:PORT with a port 1-65535, or "".
func CheckHostPort(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "must be HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "the port must be a number from 1 to 65535"
	}
	return ""
}
