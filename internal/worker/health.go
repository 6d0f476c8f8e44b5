package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
)

// healthRetry is the pause between two failed probes, and probeTimeout
// bounds one probe (a connect or request that hangs counts as a failure
// and is retried while the overall timeout allows).
const (
	healthRetry  = time.Second
	probeTimeout = 10 * time.Second
)

// checkHealth probes the application (backup.healthCheck) until it answers
// or the timeout passes, and returns the last probe's error then. It runs
// after the units are active again: systemd's "active" says a process
// runs, not that the application serves (a database replaying its log, a
// container whose entrypoint fails after start).
func checkHealth(ctx context.Context, h *config.HealthCheck, retry time.Duration, log *slog.Logger) error {
	timeout := time.Duration(h.TimeoutSecOrDefault()) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	what := describeProbe(h)
	log.Info("checking the application's health", "probe", what, "timeout", timeout)
	for attempt := 1; ; attempt++ {
		err := probeOnce(ctx, h)
		if err == nil {
			log.Info("application healthy", "probe", what, "attempts", attempt)
			return nil
		}
		log.Debug("health probe failed; retrying", "probe", what, "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("the application did not come back: health check %s failed for %s (%d attempts), last error: %w", what, timeout, attempt, err)
		case <-time.After(retry):
		}
	}
}

// describeProbe names the probe in logs (the URL as configured: it holds
// no credentials, config.CheckHealthURL refuses them).
func describeProbe(h *config.HealthCheck) string {
	switch h.Kind() {
	case "url":
		return "GET " + h.URL
	case "tcp":
		return "tcp " + h.TCP
	}
	return "command " + strings.Join(h.Command, " ")
}

// probeOnce runs one probe, bounded by probeTimeout and ctx.
func probeOnce(ctx context.Context, h *config.HealthCheck) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	switch h.Kind() {
	case "url":
		return probeURL(ctx, h.URL)
	case "tcp":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", h.TCP)
		if err != nil {
			return err
		}
		return conn.Close()
	case "command":
		// No shell: the argv is the config's, exactly. It runs as the
		// worker (root, in the unit's sandbox), as the hooks do: the unit's
		// capability bounding set has no CAP_SETUID to switch users.
		out, err := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(truncate(out, 512))))
		}
		return nil
	}
	return fmt.Errorf("no health probe configured")
}

// probeURL is healthy on a 2xx answer to GET. Redirects are followed (a
// /health that redirects to /health/ is common); proxies from the
// environment are not used, the probe is of this host's application.
func probeURL(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "backup-worker health check")
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP status %s", resp.Status)
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
