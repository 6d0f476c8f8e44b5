package worker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxCredential bounds what readCredential reads: keys and known_hosts
// files are small, and a path pointing at a device must not fill memory.
const maxCredential = 1 << 20

// readCredential returns the secret the unit passed with
// LoadCredential=name (in $CREDENTIALS_DIRECTORY, private to the unit's
// processes), or else the file fallbackPath from the config. Errors name
// the file, never its content.
func readCredential(name, fallbackPath string) ([]byte, error) {
	p := credentialFile(name, fallbackPath)
	if p == "" {
		return nil, fmt.Errorf("credential %s: no file given", name)
	}
	// Not readSmallFile: sops-nix and agenix paths are symlinks, and the
	// file is root's configuration, not something a service user plants.
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCredential+1))
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", name, err)
	}
	if len(data) > maxCredential {
		return nil, fmt.Errorf("credential %s: %s is larger than %d bytes", name, p, maxCredential)
	}
	return data, nil
}

// credentialFile is the file readCredential reads: $CREDENTIALS_DIRECTORY/
// name when the unit passed it, else fallbackPath. For libraries that
// take a file name (knownhosts).
func credentialFile(name, fallbackPath string) string {
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	return fallbackPath
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
