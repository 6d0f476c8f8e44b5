package worker

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/backupgen/backupgen/internal/notify"
)

// loadNotifier reads the notification files (backup.notify) through
// readCredential. A file that cannot be read, or a bad line in it, is a
// warning naming the key (never the content): the backup runs and
// notifies whatever endpoints are good. check-config rejects the same
// problems before the first run (checkNotifyFiles).
func (rn *run) loadNotifier() *notify.Notifier {
	n := rn.cfg.Backup.Notify
	if !n.Enabled() {
		return nil
	}
	out := &notify.Notifier{Timeout: rn.notifyTimeout, Total: rn.notifyTotal, Log: rn.log}
	urls, ping, errs := readNotifyFiles(n)
	for _, err := range errs {
		rn.log.Warn("notifications: a file is unusable; the backup runs without what it names", "error", err)
	}
	out.URLs, out.Ping = urls, ping
	return out
}

// readNotifyFiles reads and parses both files; every problem names the
// key. Shared by the run and check-config.
func readNotifyFiles(n *config.Notify) (urls []string, ping string, errs []error) {
	if n.URLsFile != "" {
		data, err := readCredential(config.NotifyURLsCredential, n.URLsFile)
		if err == nil {
			urls, err = notify.ParseURLs(data)
		}
		if err != nil {
			errs = append(errs, &config.FieldError{Key: "backup.notify.urlsFile", Msg: err.Error()})
		}
	}
	if n.PingURLFile != "" {
		data, err := readCredential(config.NotifyPingCredential, n.PingURLFile)
		if err == nil {
			ping, err = notify.ParsePingURL(data)
		}
		if err != nil {
			errs = append(errs, &config.FieldError{Key: "backup.notify.pingUrlFile", Msg: err.Error()})
		}
	}
	return urls, ping, errs
}

// summary is what the messages and the ping body say about the run.
func (rn *run) summary(result string, size int64, duration, downtime time.Duration, outcomes []notify.Outcome, err error) notify.Summary {
	host := rn.cfg.Backup.HostName
	if host == "" {
		host, _ = os.Hostname()
	}
	s := notify.Summary{
		Service: rn.cfg.Name, Host: host, Result: result, Archive: rn.base, Size: size,
		Duration: duration, Downtime: downtime, Destinations: outcomes, Warnings: rn.warnings,
	}
	if err != nil {
		s.Error = strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	}
	return s
}

// notifyFinish sends the result; bounded (notify.DefaultTotal), and it
// never changes the run's result.
func (rn *run) notifyFinish(ctx context.Context, s notify.Summary) {
	rn.notifier.Finish(ctx, s)
}
