package worker

import (
	"os"
	"path/filepath"
)

// readCredential reads the file systemd passed with LoadCredential=NAME:PATH
// ($CREDENTIALS_DIRECTORY/NAME) when the variable is set, else the path
// given in the config (a run outside systemd, or a test).
func readCredential(name, fallbackPath string) ([]byte, error) {
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		return os.ReadFile(filepath.Join(dir, name))
	}
	return os.ReadFile(fallbackPath)
}
