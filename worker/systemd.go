package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Systemd is the part of systemd the worker needs. It is an interface so the
// run logic does not care whether units are controlled by systemctl, a test
// stand-in or nothing at all.
type Systemd interface {
	// IsActive reports whether unit is active (running or reloading).
	IsActive(ctx context.Context, unit string) (bool, error)
	Stop(ctx context.Context, unit string) error
	Start(ctx context.Context, unit string) error
}

// Systemctl controls units by running the systemctl found on PATH (looked up
// on every call, so tests can put a recording stand-in first on PATH).
type Systemctl struct{}

// IsActive runs `systemctl is-active --quiet UNIT`: exit 0 means active, any
// other exit status means not active (inactive, failed, activating, unknown).
// Only a failure to run systemctl at all is an error.
func (Systemctl) IsActive(ctx context.Context, unit string) (bool, error) {
	err := systemctl(ctx, "is-active", "--quiet", unit)
	if err == nil {
		return true, nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && ctx.Err() == nil {
		return false, nil
	}
	return false, err
}

// Stop runs `systemctl stop UNIT`, which waits for the stop job to finish.
func (Systemctl) Stop(ctx context.Context, unit string) error {
	return systemctl(ctx, "stop", unit)
}

// Start runs `systemctl start UNIT`.
func (Systemctl) Start(ctx context.Context, unit string) error {
	return systemctl(ctx, "start", unit)
}

func systemctl(ctx context.Context, args ...string) error {
	path, err := exec.LookPath("systemctl")
	if err != nil {
		return fmt.Errorf("systemctl not found on PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err = cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), context.Cause(ctx))
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		msg := strings.TrimSpace(out.String())
		if msg == "" {
			return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
		}
		return &systemctlError{args: args, msg: msg, err: err}
	}
	return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
}

type systemctlError struct {
	args []string
	msg  string
	err  error
}

func (e *systemctlError) Error() string {
	return fmt.Sprintf("systemctl %s: %v: %s", strings.Join(e.args, " "), e.err, e.msg)
}

func (e *systemctlError) Unwrap() error { return e.err }
