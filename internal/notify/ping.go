package notify

import (
	"net/url"
	"strings"
)

// The ping conventions. One ping URL file serves both:
//   - healthchecks.io (and compatible: Cronitor's, self-hosted
//     healthchecks): POST URL/start when the run begins, URL on success,
//     URL/fail on failure, with the summary as the body.
//   - Uptime Kuma push monitors, recognised by "/api/push/" in the path:
//     GET URL?status=up|down&msg=SUMMARY when the run ends (Kuma has no
//     start signal).

type event int

const (
	eventStart event = iota
	eventSuccess
	eventFailure
)

// resultEvent: a committed archive (success, warning) is a success ping;
// partial, failed and interrupted runs are failures someone must see.
func resultEvent(s Summary) event {
	if s.Result == ResultSuccess || s.Result == ResultWarning {
		return eventSuccess
	}
	return eventFailure
}

type pingReq struct{ method, url, body string }

// maxPingBody stays well under healthchecks.io's 100 kB body limit.
const maxPingBody = 10_000

// pingRequest builds the request for ev; false when the convention has
// no such signal.
func pingRequest(raw string, ev event, s Summary) (pingReq, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		return pingReq{}, false
	}
	if isKuma(u) {
		if ev == eventStart {
			return pingReq{}, false
		}
		q := u.Query()
		q.Set("status", map[bool]string{true: "up", false: "down"}[ev == eventSuccess])
		q.Set("msg", s.Line())
		u.RawQuery = q.Encode()
		return pingReq{method: "GET", url: u.String()}, true
	}
	switch ev {
	case eventStart:
		u.Path = strings.TrimSuffix(u.Path, "/") + "/start"
	case eventFailure:
		u.Path = strings.TrimSuffix(u.Path, "/") + "/fail"
	}
	u.RawPath = ""
	body := ""
	if ev != eventStart {
		body = s.Text()
		if len(body) > maxPingBody {
			body = body[:maxPingBody]
		}
	}
	return pingReq{method: "POST", url: u.String(), body: body}, true
}

func isKuma(u *url.URL) bool { return strings.Contains(u.Path, "/api/push/") }
