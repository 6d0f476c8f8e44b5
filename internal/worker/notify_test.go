package worker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/backupgen/backupgen/internal/archive"
)

// hookServer is a local HTTP server for the ping and the generic webhook;
// each request records the systemctl calls made before it arrived.
type hookServer struct {
	mu   sync.Mutex
	reqs []hookReq
	srv  *httptest.Server
	hang chan struct{} // non-nil: requests wait for it to close
}

type hookReq struct {
	method, path, body string
	callsBefore        []string
}

func newHookServer(t *testing.T, e *testEnv, hang bool) *hookServer {
	h := &hookServer{}
	if hang {
		h.hang = make(chan struct{})
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.reqs = append(h.reqs, hookReq{r.Method, r.URL.Path, string(body), e.callsWithoutPolls()})
		h.mu.Unlock()
		if h.hang != nil {
			<-h.hang
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookServer) got() []hookReq {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reqs)
}

// notifyFiles writes the ping URL file and a shoutrrr file with the
// generic webhook of h, and points the config at them.
func (e *testEnv) notifyFiles(h *hookServer) func(m map[string]any) {
	host := strings.TrimPrefix(h.srv.URL, "http://")
	urls := filepath.Join(e.root, "secrets", "notify-urls")
	ping := filepath.Join(e.root, "secrets", "notify-ping")
	e.writeFile(urls, []byte("# ops channel\ngeneric://"+host+"/hook/T0KEN?disabletls=yes\n"), 0o600)
	e.writeFile(ping, []byte(h.srv.URL+"/ping/5ecret\n"), 0o600)
	return func(m map[string]any) {
		backupSettings(m)["notify"] = map[string]any{"urlsFile": urls, "pingUrlFile": ping}
	}
}

// A successful run pings start (before anything is stopped) and success
// (after the unit is started again); a plain success sends no message.
func TestRunNotifySuccess(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	h := newHookServer(t, e, false)
	if code := e.run(e.config([]string{"app.service"}, e.notifyFiles(h))); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	got := h.got()
	if len(got) != 2 || got[0].path != "/ping/5ecret/start" || got[1].path != "/ping/5ecret" {
		t.Fatalf("requests %+v, want the start and the success ping", got)
	}
	if slices.Contains(got[0].callsBefore, "stop app.service") {
		t.Errorf("start ping after the stop: %q", got[0].callsBefore)
	}
	if !slices.Contains(got[1].callsBefore, "start app.service") {
		t.Errorf("success ping before the unit was started again: %q", got[1].callsBefore)
	}
	if !strings.Contains(got[1].body, "result: success") || !strings.Contains(got[1].body, "destinations:\n  "+e.dests[0]+": ok") {
		t.Errorf("success ping body:\n%s", got[1].body)
	}
	if log := e.logBuf.String(); strings.Contains(log, "5ecret") || strings.Contains(log, "T0KEN") {
		t.Errorf("the log holds a secret of the URLs:\n%s", log)
	}
}

// A failed run pings /fail and sends the message with the summary, after
// the unit is started again, and its exit code stays 1.
func TestRunNotifyFailure(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.setUnit("app.service", "active")
	h := newHookServer(t, e, false)
	r := e.runner(e.config([]string{"app.service"}, e.notifyFiles(h)))
	r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		return archive.Stats{}, errors.New("injected archive failure")
	}
	if code := r.Run(context.Background()); code != ExitFailed {
		t.Fatalf("exit %d, want 1; log:\n%s", code, e.logBuf.String())
	}
	var fail, msg *hookReq
	for _, q := range h.got() {
		switch q.path {
		case "/ping/5ecret/fail":
			fail = &q
		case "/hook/T0KEN":
			msg = &q
		}
	}
	if fail == nil || msg == nil {
		t.Fatalf("requests %+v, want the fail ping and the webhook message", h.got())
	}
	for what, q := range map[string]*hookReq{"fail ping": fail, "message": msg} {
		if !slices.Contains(q.callsBefore, "start app.service") {
			t.Errorf("%s sent before the unit was started again: %q", what, q.callsBefore)
		}
		for _, want := range []string{"service: app", "result: failed", "downtime: ", "duration: ", e.dests[1] + ": failed", "injected archive failure"} {
			if !strings.Contains(q.body, want) {
				t.Errorf("%s lacks %q:\n%s", what, want, q.body)
			}
		}
	}
}

// Endpoints that never answer do not hold the run: it returns with its
// own exit code while the server still holds every request (the server is
// released only after Run returned, so a run that waited would never end).
func TestRunNotifyHangingEndpoint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fail bool
		want int
	}{{"success", false, ExitOK}, {"failure", true, ExitFailed}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.setUnit("app.service", "active")
			h := newHookServer(t, e, true)
			r := e.runner(e.config([]string{"app.service"}, e.notifyFiles(h)))
			r.notifyTimeout, r.notifyTotal = 50*time.Millisecond, 100*time.Millisecond
			if tc.fail {
				r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
					return archive.Stats{}, errors.New("injected archive failure")
				}
			}
			code := r.Run(context.Background())
			close(h.hang)
			if code != tc.want {
				t.Fatalf("exit %d, want %d; log:\n%s", code, tc.want, e.logBuf.String())
			}
			if e.unitState("app.service") != "active" {
				t.Error("unit not active")
			}
			if n := strings.Count(e.logBuf.String(), "notification failed"); n < 2 {
				t.Errorf("%d notification warnings, want one per hanging request:\n%s", n, e.logBuf.String())
			}
		})
	}
}

// Under systemd the worker reads $CREDENTIALS_DIRECTORY/notify-urls and
// notify-ping, not the paths in the config (which root-only secrets may
// not be readable at, in the unit's sandbox).
func TestRunNotifyFromCredentials(t *testing.T) {
	// Not parallel: it sets CREDENTIALS_DIRECTORY (t.Setenv), a process-wide variable.
	e := newTestEnv(t)
	h := newHookServer(t, e, false)
	creds := filepath.Join(e.root, "creds")
	e.writeFile(filepath.Join(creds, "notify-ping"), []byte(h.srv.URL+"/ping/fromcred\n"), 0o600)
	e.writeFile(filepath.Join(creds, "notify-urls"), []byte("generic://"+strings.TrimPrefix(h.srv.URL, "http://")+"/hook/fromcred?disabletls=yes\n"), 0o600)
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg := e.config(nil, func(m map[string]any) {
		backupSettings(m)["notify"] = map[string]any{"urlsFile": "/nonexistent/urls", "pingUrlFile": "/nonexistent/ping"}
	})
	r := e.runner(cfg)
	r.writeArchive = func(ctx context.Context, w io.Writer, paths []string, opts archive.Options) (archive.Stats, error) {
		return archive.Stats{}, errors.New("injected archive failure")
	}
	r.Run(context.Background())
	var paths []string
	for _, q := range h.got() {
		paths = append(paths, q.path)
	}
	slices.Sort(paths)
	if want := []string{"/hook/fromcred", "/ping/fromcred/fail", "/ping/fromcred/start"}; !slices.Equal(paths, want) {
		t.Errorf("requests %q, want %q", paths, want)
	}
}

// A notification file that is missing or holds a bad line is a warning
// naming the key; the backup runs, notifies the good endpoints, and keeps
// its exit code.
func TestRunNotifyBadFileIsAWarning(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	h := newHookServer(t, e, false)
	urls := filepath.Join(e.root, "urls")
	e.writeFile(urls, []byte("nope://s3cr3t@x\n"), 0o600)
	cfg := e.config(nil, func(m map[string]any) {
		backupSettings(m)["notify"] = map[string]any{"urlsFile": urls, "pingUrlFile": filepath.Join(e.root, "missing")}
	})
	if code := e.run(cfg); code != ExitOK {
		t.Fatalf("exit %d, want 0", code)
	}
	log := e.logBuf.String()
	for _, want := range []string{`backup.notify.urlsFile: line 1: unknown notification service \"nope\"`, "backup.notify.pingUrlFile", "no such file"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "s3cr3t") {
		t.Errorf("log holds the secret:\n%s", log)
	}
	if len(h.got()) != 0 {
		t.Errorf("requests %+v to no configured endpoint", h.got())
	}
}

// check-config reads the notification files (a malformed URL, an unknown
// service, a missing file: exit 2, the key named, the secret never
// printed); --no-credentials checks the config alone, as the Nix build
// does (its sandbox cannot see secrets).
func TestCheckConfigNotifyFiles(t *testing.T) {
	// Not parallel: it sets CREDENTIALS_DIRECTORY (t.Setenv), a process-wide variable.
	e := newTestEnv(t)
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	urls := filepath.Join(e.root, "urls")
	ping := filepath.Join(e.root, "ping")
	cfgPath := e.configFile(nil, func(m map[string]any) {
		backupSettings(m)["notify"] = map[string]any{"urlsFile": urls, "pingUrlFile": ping}
	})
	check := func(args ...string) (int, string, string) {
		return e.checkConfigCmd(args[len(args)-1], args[0] == "--no-credentials")
	}
	e.writeFile(urls, []byte("ntfy://:tk_secret1@ntfy.example.org/backups\ngotify://gotify.example.org/Asecret2\n"), 0o600)
	e.writeFile(ping, []byte("https://hc-ping.com/secret-uuid-3\n"), 0o600)
	if code, out, errOut := check(cfgPath); code != ExitOK || out != "ok\n" {
		t.Fatalf("good files: exit %d, %q %q", code, out, errOut)
	}
	e.writeFile(urls, []byte("ntfy://:tk_secret1@ntfy.example.org/backups\nfoo://secret4@host\nhttp//secret5\n"), 0o600)
	os.Remove(ping)
	code, _, errOut := check(cfgPath)
	if code != ExitUsage {
		t.Errorf("bad files: exit %d, want 2", code)
	}
	for _, want := range []string{`backup.notify.urlsFile: line 2: unknown notification service "foo"`, "line 3: not a URL", "backup.notify.pingUrlFile: credential notify-ping", "no such file"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "secret") {
		t.Errorf("stderr holds a secret:\n%s", errOut)
	}
	if code, out, errOut := check("--no-credentials", cfgPath); code != ExitOK || out != "ok\n" {
		t.Errorf("--no-credentials: exit %d, %q %q", code, out, errOut)
	}
}
