package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The state file <stateDir>/<name>.stopped holds a JSON list of the units a
// run stopped and has not started again yet. It is written before each stop
// call, so that whatever kills the worker afterwards (SIGKILL, OOM, power
// loss of a tmpfs-less state dir), `backup-worker recover` knows what to
// start. It is removed only once every listed unit is active again.

func stateFilePath(stateDir, name string) string {
	return filepath.Join(stateDir, name+".stopped")
}

func lockFilePath(stateDir, name string) string {
	return filepath.Join(stateDir, name+".lock")
}

// writeStoppedState atomically replaces the state file with units.
func writeStoppedState(path string, units []string) error {
	if units == nil {
		units = []string{}
	}
	data, err := json.Marshal(units)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), 0o600, owner{uid: -1, gid: -1})
}

// readStoppedState returns the units in the state file, or nil, nil when
// there is no state file.
func readStoppedState(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var units []string
	if err := json.Unmarshal(data, &units); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return units, nil
}

// removeStoppedState deletes the state file durably.
func removeStoppedState(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}
