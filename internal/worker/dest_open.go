package worker

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
)

// openStore makes the Destination of one entry of backup.paths: a local
// directory, or a remote store named by its URL. The local fields (owner,
// seams) only matter to a local directory.
func openStore(cfg *config.Config, dir string, optional bool, own owner, s *seams, log *slog.Logger) (Destination, error) {
	dest, err := config.ParseDestination(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	switch dest.Kind {
	case "sftp":
		return newSFTPDest(cfg, dir, dest, log)
	case "local":
		return &localDir{dir: dir, name: cfg.Name, optional: optional, owner: own, seams: s, log: log}, nil
	}
	return nil, fmt.Errorf("%s: destinations of kind %s are not supported", dir, dest.Kind)
}

// closeStore closes a store's connection, if it has one.
func closeStore(d Destination) {
	if c, ok := d.(io.Closer); ok {
		c.Close()
	}
}

// joinDest names archive name in destination dir for messages: a path
// in a local directory, URL/NAME in a remote store (filepath.Join would
// fold the URL's "//").
func joinDest(dir, name string) string {
	if config.IsRemote(dir) {
		return strings.TrimSuffix(dir, "/") + "/" + name
	}
	return filepath.Join(dir, name)
}
