// Package testtool finds the real tools (nix-instantiate, systemd-analyze,
// GNU tar, unzip, ...) that tests check the project's output with.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// RequireGoTool is Require for a tool installed with `go install`: it is
// looked for on PATH, then in $GOBIN and $GOPATH/bin (where go install puts
// it when that is not on PATH). install is the go install argument.
func RequireGoTool(t testing.TB, name, install string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, v := range []string{"GOBIN", "GOPATH"} {
		out, err := exec.Command("go", "env", v).Output()
		dir := strings.TrimSpace(string(out))
		if err != nil || dir == "" {
			continue
		}
		if v == "GOPATH" {
			dir = filepath.Join(strings.Split(dir, string(os.PathListSeparator))[0], "bin")
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	msg := fmt.Sprintf("!!! %s not found: this check did NOT run; install it with go install %s", name, install)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so a missing tool is a failure)")
	}
	t.Skip(msg)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
