// Package notify tells the outside world how a backup run went: a ping URL
// (the healthchecks.io or the Uptime Kuma convention) and messages through
// shoutrrr (ntfy, Gotify, SMTP, Matrix, Telegram, Discord, Slack, generic
// webhooks, ...).
//
// Notifications are best effort. Every request has a timeout, Finish has a
// total bound however many endpoints hang, nothing here returns an error to
// the run, and nothing logged holds a secret: the URLs carry tokens and
// passwords, so logs name an endpoint by scheme and host only (Redact), and
// error texts are scrubbed of every part of the URL (scrub).
package notify

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Bounds of a notification. A ping or message that takes longer is
// abandoned with a warning: a monitoring endpoint that is down must not
// keep a backup unit running.
const (
	DefaultTimeout = 5 * time.Second  // one request
	DefaultTotal   = 10 * time.Second // Finish, all endpoints together
)

// Notifier sends the pings and messages of one run. The zero value sends
// nothing.
type Notifier struct {
	// URLs are shoutrrr URLs (ParseURLs): messages about the result.
	URLs []string
	// Ping is a healthchecks.io check URL or an Uptime Kuma push URL
	// (ParsePingURL); "" for none.
	Ping string
	// Timeout bounds each request, Total all of Finish (defaults
	// DefaultTimeout, DefaultTotal).
	Timeout, Total time.Duration
	Log            *slog.Logger
}

// Enabled reports whether there is anything to send.
func (n *Notifier) Enabled() bool { return n != nil && (len(n.URLs) > 0 || n.Ping != "") }

func (n *Notifier) timeout() time.Duration {
	if n.Timeout > 0 {
		return n.Timeout
	}
	return DefaultTimeout
}

func (n *Notifier) total() time.Duration {
	if n.Total > 0 {
		return n.Total
	}
	return DefaultTotal
}

func (n *Notifier) log() *slog.Logger {
	if n.Log != nil {
		return n.Log
	}
	return slog.Default()
}

// Start sends the start ping (healthchecks.io: URL/start, which also
// measures the run's duration; Uptime Kuma has no start signal). It
// returns within Timeout.
func (n *Notifier) Start(ctx context.Context) {
	if n == nil || n.Ping == "" {
		return
	}
	req, ok := pingRequest(n.Ping, eventStart, Summary{})
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.timeout())
	defer cancel()
	n.report(n.Ping, "start ping", bounded(ctx, func(ctx context.Context) error { return n.do(ctx, req) }))
}

// Finish sends the result ping and, unless the run was a plain success,
// the messages, all at once; it returns when all are done or Total has
// passed, whichever comes first. It runs on a context of its own: an
// interrupted run is reported too.
func (n *Notifier) Finish(ctx context.Context, s Summary) {
	if !n.Enabled() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.total())
	defer cancel()
	var wg sync.WaitGroup
	send := func(endpoint, what string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, rcancel := context.WithTimeout(ctx, n.timeout())
			defer rcancel()
			n.report(endpoint, what, bounded(rctx, f))
		}()
	}
	if n.Ping != "" {
		if req, ok := pingRequest(n.Ping, resultEvent(s), s); ok {
			send(n.Ping, "result ping", func(ctx context.Context) error { return n.do(ctx, req) })
		}
	}
	if s.Result != ResultSuccess {
		title, body := s.Title(), s.Text()
		for _, u := range n.URLs {
			send(u, "message", func(ctx context.Context) error { return sendMessage(ctx, u, title, body) })
		}
	}
	wg.Wait()
}

// bounded runs f and returns its error, or a timeout error once ctx ends;
// f keeps running in the background then (shoutrrr's Send takes no
// context), which is harmless: the worker exits soon after.
func bounded(ctx context.Context, f func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer in time (%w)", ctx.Err())
	}
}

// report logs the outcome of one request, naming the endpoint by its
// scheme and host and scrubbing the error of every part of the URL.
func (n *Notifier) report(endpoint, what string, err error) {
	if err != nil {
		n.log().Warn("notification failed; the backup's result is unchanged",
			"notify", what, "endpoint", Redact(endpoint), "error", scrub(err.Error(), endpoint))
		return
	}
	n.log().Info("notification sent", "notify", what, "endpoint", Redact(endpoint))
}

// do sends one ping request; any 2xx answer is success.
func (n *Notifier) do(ctx context.Context, p pingReq) error {
	req, err := http.NewRequestWithContext(ctx, p.method, p.url, strings.NewReader(p.body))
	if err != nil {
		return err
	}
	if p.body != "" {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	client := &http.Client{Timeout: n.timeout()}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP status %s", resp.Status)
	}
	return nil
}
