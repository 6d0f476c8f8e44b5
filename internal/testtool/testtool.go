// Package testtool finds the real tools (nix-instantiate, systemd-analyze,
// GNU tar, unzip, ...) that tests check the project's output with.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Require returns the path of the tool name. Without it the test is skipped
// with a loud message naming the Debian package that provides it, except
// when CI is set: CI must run every check, so there it fails.
func Require(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("!!! %s not found: this check did NOT run; install it with apt-get install -y %s", name, debianPackage)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so a missing tool is a failure)")
	}
	t.Skip(msg)
	return ""
}
