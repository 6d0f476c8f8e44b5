package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// hooks is a local HTTP server recording the ping and webhook requests.
type hooks struct {
	mu   sync.Mutex
	reqs []string // "PATH BODY"
	srv  *httptest.Server
}

func newHooks(t *testing.T) *hooks {
	h := &hooks{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.reqs = append(h.reqs, r.URL.Path+" "+string(body))
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hooks) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reqs)
}

// withNotify points e's config at notification files for h.
func (e *e2e) withNotify(h *hooks) {
	urls, ping := filepath.Join(e.root, "notify-urls"), filepath.Join(e.root, "notify-ping")
	os.WriteFile(urls, []byte("generic://"+strings.TrimPrefix(h.srv.URL, "http://")+"/hook?disabletls=yes\n"), 0o600)
	os.WriteFile(ping, []byte(h.srv.URL+"/ping\n"), 0o600)
	e.editConfig(func(m map[string]any) {
		backupOf(m)["notify"] = map[string]any{"urlsFile": urls, "pingUrlFile": ping}
	})
}

// TestKilledRunIsReported: a run that systemd kills (SIGKILL after
// TimeoutStartSec) never reaches its report; the unit's ExecStopPost
// (`recover`) finds its marker and reports it as failed, with what
// systemd says, to the ping URL (/fail) and the notification URLs, once.
// A run that reported leaves recover nothing to say.
func TestKilledRunIsReported(t *testing.T) {
	e := setup(t, []string{"app.service"})
	e.setUnit("app.service", "active")
	h := newHooks(t)
	e.withNotify(h)
	e.slowData(4)
	cmd, _ := e.startWorker(nil, "run", "--config", e.config)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.waitForTempInEveryDest(cmd, exited)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	before := len(h.got())
	e.env = append(e.env, "SERVICE_RESULT=timeout", "EXIT_CODE=killed", "EXIT_STATUS=KILL")
	code, _, stderr := e.worker("recover", "--config", e.config)
	if code != 0 || e.unitState("app.service") != "active" {
		t.Fatalf("recover: exit %d, unit %s", code, e.unitState("app.service"))
	}
	if !strings.Contains(stderr, "a backup run was killed before it could report") {
		t.Errorf("recover's log:\n%s", stderr)
	}
	var fail, msg string
	for _, r := range h.got()[before:] {
		switch {
		case strings.HasPrefix(r, "/ping/fail "):
			fail = r
		case strings.HasPrefix(r, "/hook "):
			msg = r
		}
	}
	for _, body := range []string{fail, msg} {
		for _, want := range []string{"result: failed", "was killed before it could report", "SERVICE_RESULT=timeout EXIT_CODE=killed EXIT_STATUS=KILL", "TimeoutStartSec"} {
			if !strings.Contains(body, want) {
				t.Errorf("request lacks %q: %q", want, body)
			}
		}
	}
	n := len(h.got())
	if code, _, _ := e.worker("recover", "--config", e.config); code != 0 || len(h.got()) != n {
		t.Errorf("a second recover: exit %d, reported again: %q", code, h.got()[n:])
	}
	// A run that reports itself leaves recover nothing to say.
	if code, _, _ := e.worker("run", "--config", e.config); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	n = len(h.got())
	if code, _, _ := e.worker("recover", "--config", e.config); code != 0 || len(h.got()) != n {
		t.Errorf("recover after a run that reported: exit %d, requests %q", code, h.got()[n:])
	}
}
