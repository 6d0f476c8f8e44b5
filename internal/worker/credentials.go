package worker

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// readCredential reads the credential name that the unit passed with
// LoadCredential= ($CREDENTIALS_DIRECTORY/name), else the file at
// fallbackPath (a run outside systemd, or an old unit). Secrets never sit
// in the worker's JSON, only the path does.
func readCredential(name, fallbackPath string) ([]byte, error) {
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil {
			return b, nil
		}
		if !os.IsNotExist(err) {
			return nil, fmt.Errorf("credential %s: %w", name, err)
		}
	}
	if fallbackPath == "" {
		return nil, fmt.Errorf("credential %s: not passed by the unit and no file configured", name)
	}
	b, err := os.ReadFile(fallbackPath)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", name, err)
	}
	return b, nil
}

// parseEnvFile reads KEY=VALUE lines (blank lines and # comments skipped,
// an optional "export ", values optionally in single or double quotes).
// Errors name the line, never its value.
func parseEnvFile(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("line %d: not KEY=VALUE", n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out, sc.Err()
}
