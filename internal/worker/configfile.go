package worker

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/hashicorp/go-multierror"
)

// LoadConfig reads, decodes and validates the config at path. Its error is
// written for the user: "cannot read config: ...", or a header naming the
// file and how many problems there are, then one indented line per
// problem, each starting with the JSON key (backup.compressionLevel,
// dataPaths[1]) and saying how to fix it.
func LoadConfig(path string) (*config.Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	defer f.Close()
	cfg, err := config.Decode(f)
	if err != nil {
		n := 1
		var merr *multierror.Error
		if errors.As(err, &merr) {
			n = len(merr.Errors)
		}
		what := "1 problem"
		if n != 1 {
			what = fmt.Sprintf("%d problems", n)
		}
		return nil, fmt.Errorf("invalid config %s (%s):\n%s", path, what, indent(err.Error()))
	}
	return cfg, nil
}

// CheckNotifyFiles reads and parses the notification files of cfg (loaded
// from path) as the run would ($CREDENTIALS_DIRECTORY first): a missing
// file, a malformed URL or an unknown service is reported under its key,
// by line number, never with the secret. nil when notifications are off.
func CheckNotifyFiles(path string, cfg *config.Config) error {
	if !cfg.Backup.Notify.Enabled() {
		return nil
	}
	_, _, errs := readNotifyFiles(cfg.Backup.Notify)
	if len(errs) == 0 {
		return nil
	}
	var lines []string
	for _, e := range errs {
		lines = append(lines, e.Error())
	}
	return fmt.Errorf("invalid notification files of %s:\n%s", path, indent(strings.Join(lines, "\n")))
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}
