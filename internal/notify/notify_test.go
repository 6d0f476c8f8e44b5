package notify

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// recorder is a local HTTP server that records every request.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
	srv  *httptest.Server
}

type recorded struct{ method, path, query, body string }

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, recorded{req.Method, req.URL.Path, req.URL.RawQuery, string(body)})
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) got() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func failedSummary() Summary {
	return Summary{
		Service: "myapp", Host: "web1", Result: ResultPartial, Archive: "myapp-20261202T010000Z.tar.gz",
		Size: 3 << 20, Duration: 42 * time.Second, Downtime: 1500 * time.Millisecond,
		Destinations: []Outcome{{"/var/backups/myapp", "ok, pruned 1"}, {"/mnt/usb/myapp", "failed: no space left on device"}},
		Error:        "destination /mnt/usb/myapp: no space left on device",
	}
}

// The summary a message or ping body must carry, field by field.
func assertSummary(t *testing.T, what, text string) {
	t.Helper()
	for _, want := range []string{
		"service: myapp", "result: partial", "size: 3.0 MiB", "duration: 42s", "downtime: 1.5s",
		"/var/backups/myapp: ok, pruned 1", "/mnt/usb/myapp: failed: no space left on device",
		"error: destination /mnt/usb/myapp: no space left on device",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("%s lacks %q:\n%s", what, want, text)
		}
	}
}

func TestPingHealthchecks(t *testing.T) {
	r := newRecorder(t)
	n := &Notifier{Ping: r.srv.URL + "/ping/0b1c2d3e", Log: quiet()}
	n.Start(context.Background())
	n.Finish(context.Background(), failedSummary())
	ok := failedSummary()
	ok.Result, ok.Error = ResultSuccess, ""
	n.Finish(context.Background(), ok)
	got := r.got()
	if len(got) != 3 {
		t.Fatalf("requests %+v, want start, fail, success", got)
	}
	want := []struct{ method, path string }{{"POST", "/ping/0b1c2d3e/start"}, {"POST", "/ping/0b1c2d3e/fail"}, {"POST", "/ping/0b1c2d3e"}}
	for i, w := range want {
		if got[i].method != w.method || got[i].path != w.path {
			t.Errorf("request %d: %s %s, want %s %s", i, got[i].method, got[i].path, w.method, w.path)
		}
	}
	assertSummary(t, "the fail ping's body", got[1].body)
	if !strings.Contains(got[2].body, "result: success") {
		t.Errorf("success ping body %q", got[2].body)
	}
}

func TestPingUptimeKuma(t *testing.T) {
	r := newRecorder(t)
	n := &Notifier{Ping: r.srv.URL + "/api/push/Xy12Ab34?status=up&msg=OK&ping=", Log: quiet()}
	n.Start(context.Background()) // Kuma has no start signal: nothing sent
	n.Finish(context.Background(), failedSummary())
	got := r.got()
	if len(got) != 1 {
		t.Fatalf("requests %+v, want one push", got)
	}
	if got[0].method != "GET" || got[0].path != "/api/push/Xy12Ab34" {
		t.Errorf("push %s %s", got[0].method, got[0].path)
	}
	q := got[0].query
	if !strings.Contains(q, "status=down") || strings.Contains(q, "status=up") || !strings.Contains(q, "msg=partial") || !strings.Contains(q, "no+space+left") {
		t.Errorf("push query %q: want status=down and the summary as msg", q)
	}
}

// A message through shoutrrr's generic webhook reaches a local server
// with the summary; a clean success sends no message (the ping says it).
func TestMessageGenericWebhook(t *testing.T) {
	r := newRecorder(t)
	u := "generic://" + strings.TrimPrefix(r.srv.URL, "http://") + "/hooks/backup?disabletls=yes&template=json"
	if _, err := ParseURLs([]byte(u + "\n")); err != nil {
		t.Fatal(err)
	}
	n := &Notifier{URLs: []string{u}, Log: quiet()}
	ok := failedSummary()
	ok.Result = ResultSuccess
	n.Finish(context.Background(), ok)
	if got := r.got(); len(got) != 0 {
		t.Fatalf("a clean success sent messages: %+v", got)
	}
	n.Finish(context.Background(), failedSummary())
	got := r.got()
	if len(got) != 1 || got[0].method != "POST" || got[0].path != "/hooks/backup" {
		t.Fatalf("requests %+v, want one POST /hooks/backup", got)
	}
	// The JSON template escapes newlines; the summary is there.
	body := strings.ReplaceAll(got[0].body, `\n`, "\n")
	assertSummary(t, "the webhook body", body)
	if !strings.Contains(body, `"title":"backup myapp on web1: partial"`) {
		t.Errorf("webhook body lacks the title: %s", body)
	}
}

// smtpSink is a local SMTP server (emersion/go-smtp) keeping every mail.
type smtpSink struct {
	mu    sync.Mutex
	mails []string
	rcpts []string
}

type smtpSession struct{ sink *smtpSink }

func (s *smtpSession) Reset()                               {}
func (s *smtpSession) Logout() error                        { return nil }
func (s *smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.sink.mu.Lock()
	s.sink.rcpts = append(s.sink.rcpts, to)
	s.sink.mu.Unlock()
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.sink.mu.Lock()
	s.sink.mails = append(s.sink.mails, string(b))
	s.sink.mu.Unlock()
	return err
}

func TestMessageSMTP(t *testing.T) {
	sink := &smtpSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{sink}, nil }))
	srv.Domain = "localhost"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	port := l.Addr().(*net.TCPAddr).Port
	u := "smtp://127.0.0.1:" + strconv.Itoa(port) + "/?from=backup@web1.example&to=ops@example.org&auth=None&encryption=None&usestarttls=no"
	if _, err := ParseURLs([]byte(u)); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	n := &Notifier{URLs: []string{u}, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	n.Finish(context.Background(), failedSummary())
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.mails) != 1 {
		t.Fatalf("mails received: %d, want 1; log:\n%s", len(sink.mails), logs.String())
	}
	if len(sink.rcpts) != 1 || sink.rcpts[0] != "ops@example.org" {
		t.Errorf("recipients %q", sink.rcpts)
	}
	mail := strings.ReplaceAll(sink.mails[0], "\r\n", "\n")
	if !strings.Contains(mail, "Subject: backup myapp on web1: partial") {
		t.Errorf("mail subject:\n%s", mail)
	}
	assertSummary(t, "the mail", mail)
}

// An endpoint that never answers costs at most the bound: Finish returns
// while the server still holds every request (it is released only after
// Finish returned, so a Finish that waited for it would never return).
func TestHangingEndpointIsBounded(t *testing.T) {
	release := make(chan struct{})
	var arrived sync.WaitGroup
	arrived.Add(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	var logs bytes.Buffer
	n := &Notifier{
		Ping:    srv.URL + "/ping/abc",
		URLs:    []string{"generic://" + strings.TrimPrefix(srv.URL, "http://") + "/hook?disabletls=yes"},
		Timeout: 100 * time.Millisecond, Total: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	}
	n.Finish(context.Background(), failedSummary())
	arrived.Wait() // both requests reached the server and hang there
	if c := strings.Count(logs.String(), "notification failed"); c != 2 {
		t.Errorf("%d warnings, want one per endpoint:\n%s", c, logs.String())
	}
}

// A down endpoint is a warning that names it by scheme and host; no part
// of the secret URL reaches the log, not even through the library's error.
func TestFailureLogsNoSecret(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := closed.Addr().String()
	closed.Close()
	const token = "s3cr3tT0k3nValue"
	var logs bytes.Buffer
	n := &Notifier{
		Ping: srv.URL + "/ping/" + token,
		URLs: []string{
			"generic://" + deadAddr + "/hook/" + token + "?disabletls=yes",
			"ntfy://:" + token + "@" + deadAddr + "/topic" + token + "?scheme=http",
			"smtp://user:" + token + "@" + deadAddr + "/?from=a@b.example&to=c@d.example&auth=Plain&encryption=None&usestarttls=no",
		},
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	}
	n.Start(context.Background())
	n.Finish(context.Background(), failedSummary())
	out := logs.String()
	if c := strings.Count(out, "notification failed"); c != 5 {
		t.Errorf("%d warnings, want 5 (start ping, result ping, 3 messages):\n%s", c, out)
	}
	if strings.Contains(out, token) {
		t.Errorf("the log holds the secret:\n%s", out)
	}
	for _, want := range []string{"endpoint=generic://127.0.0.1", "endpoint=ntfy://127.0.0.1", "endpoint=smtp://127.0.0.1", "endpoint=http://127.0.0.1", "HTTP status 503"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestParseURLs(t *testing.T) {
	const secret = "hunter2hunter2"
	good := "ntfy://:" + secret + "@ntfy.example.org/backups"
	data := "# ops\n\n" + good + "\nfoo://" + secret + "@x/y\n   \nnot a url " + secret + "\ndiscord://" + secret + "\n"
	urls, err := ParseURLs([]byte(data))
	if len(urls) != 1 || urls[0] != good {
		t.Errorf("good URLs %q, want the ntfy line", urls)
	}
	if err == nil {
		t.Fatal("bad lines accepted")
	}
	msg := err.Error()
	for _, want := range []string{`line 4: unknown notification service "foo"`, "line 6: not a URL", "line 7: discord URL is invalid"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, secret) {
		t.Errorf("error holds the secret: %q", msg)
	}
	if _, err := ParseURLs([]byte("# nothing\n")); err == nil || !strings.Contains(err.Error(), "no notification URL") {
		t.Errorf("empty file: %v", err)
	}
	for _, u := range []string{
		"gotify://gotify.example.org/Atoken123", "smtp://u:p@mail.example.org:587/?from=a@b.example&to=c@d.example",
		"matrix://user:pass@matrix.example.org/?rooms=!room:example.org", "telegram://123456:ABCdef@telegram?chats=@backups",
		"discord://token@1234567890", "slack://hook:WNA3PBYV6-F20DUQND3RQ-Webc4MAvoacrpPakR8phF0zi@webhook", "generic://hooks.example.org/backup",
	} {
		if _, err := ParseURLs([]byte(u)); err != nil {
			t.Errorf("%s: %v", Redact(u), err)
		}
	}
}

func TestParsePingURL(t *testing.T) {
	if u, err := ParsePingURL([]byte("# hc\nhttps://hc-ping.com/0b1c\n")); err != nil || u != "https://hc-ping.com/0b1c" {
		t.Errorf("got %q, %v", u, err)
	}
	for _, bad := range []string{"", "ftp://x/y", "https://a/b\nhttps://c/d", "hc-ping.com/uuid", "https:///nohost"} {
		_, err := ParsePingURL([]byte(bad))
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("error %q repeats the URL", err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://hc-ping.com/0b1c2d":                    "https://hc-ping.com",
		"ntfy://:tok@ntfy.sh/topic":                     "ntfy://ntfy.sh",
		"smtp://user:pass@mail.example.org:587/?to=a@b": "smtp://mail.example.org",
		"telegram://123:ABC@telegram?chats=1":           "telegram://telegram",
		"::nonsense":                                    "(unparseable URL)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
