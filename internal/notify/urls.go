package notify

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/hashicorp/go-multierror"
	"github.com/nicholas-fedor/shoutrrr/pkg/router"
)

// lines returns the non-blank lines of a credential file that are not
// "#" comments, with their 1-based line numbers.
func lines(data []byte) (nums []int, out []string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		nums, out = append(nums, n), append(out, l)
	}
	return nums, out
}

// ParseURLs reads a file of shoutrrr URLs, one per line ("#" comments and
// blank lines skipped). It returns the good URLs, and an error listing
// every bad line by number and scheme, never by its text: the URLs hold
// tokens and passwords. A URL is checked offline: it parses, its service
// is one shoutrrr knows, and the service accepts its settings (Matrix
// logs in when it reads its URL, so only its scheme is checked).
func ParseURLs(data []byte) ([]string, error) {
	nums, ls := lines(data)
	var good []string
	var errs *multierror.Error
	for i, l := range ls {
		if err := checkURL(l); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("line %d: %w", nums[i], err))
			continue
		}
		good = append(good, l)
	}
	if len(ls) == 0 {
		errs = multierror.Append(errs, fmt.Errorf("no notification URL in the file"))
	}
	if errs != nil {
		errs.ErrorFormat = joinFormat
		return good, errs
	}
	return good, nil
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("not a URL (SCHEME://…, e.g. ntfy://ntfy.sh/TOPIC)")
	}
	scheme, _, _ := strings.Cut(u.Scheme, "+")
	r := router.ServiceRouter{}
	svc, err := r.NewService(scheme)
	if err != nil {
		return fmt.Errorf("unknown notification service %q (known: %s)", scheme, strings.Join(knownServices(), ", "))
	}
	if scheme == "matrix" || scheme != u.Scheme {
		// Matrix's Initialize logs in; custom "x+https" forms are
		// converted when sent.
		return nil
	}
	if err := svc.Initialize(u, nil); err != nil {
		return fmt.Errorf("%s URL is invalid: %s", scheme, scrub(err.Error(), raw))
	}
	return nil
}

func knownServices() []string {
	r := router.ServiceRouter{}
	s := r.ListServices()
	sort.Strings(s)
	return s
}

// ParsePingURL reads the ping URL file: exactly one http:// or https://
// URL ("#" comments and blank lines skipped). Errors never hold the URL.
func ParsePingURL(data []byte) (string, error) {
	nums, ls := lines(data)
	switch {
	case len(ls) == 0:
		return "", fmt.Errorf("no ping URL in the file")
	case len(ls) > 1:
		return "", fmt.Errorf("line %d: a second URL; the file holds one ping URL", nums[1])
	}
	u, err := url.Parse(ls[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("line %d: not an http:// or https:// URL", nums[0])
	}
	return ls[0], nil
}

// Redact names an endpoint without its secrets: scheme and host only
// (a token in the user part, path or query is left out).
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(unparseable URL)"
	}
	return u.Scheme + "://" + u.Hostname()
}

// scrub removes from text every part of raw that may be secret: the URL
// itself, its user and password, its path segments and its query values,
// as written and as escaped. Libraries quote the URL they called in their
// errors (net/http: `Post "https://…/TOKEN": …`), and a service may build
// that URL from parts of ours.
func scrub(text, raw string) string {
	secrets := []string{raw}
	if u, err := url.Parse(raw); err == nil {
		if u.User != nil {
			secrets = append(secrets, u.User.Username())
			if p, ok := u.User.Password(); ok {
				secrets = append(secrets, p)
			}
		}
		secrets = append(secrets, strings.Split(u.Path, "/")...)
		secrets = append(secrets, u.Fragment, u.RawQuery)
		for _, vs := range u.Query() {
			secrets = append(secrets, vs...)
		}
	}
	// Longest first, so a part inside a longer one does not break it up.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, s := range secrets {
		if len(s) < 4 {
			continue // "api", "v1": too short to be a secret, too common to remove
		}
		for _, form := range []string{s, url.PathEscape(s), url.QueryEscape(s)} {
			text = strings.ReplaceAll(text, form, "[redacted]")
		}
	}
	return text
}

// joinFormat lists errors on one line each, without multierror's header.
func joinFormat(errs []error) string {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}
