package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Systemd is the part of systemd the worker needs. It is an interface so the
// run logic does not care whether units are controlled by systemctl, a test
// stand-in or nothing at all.
type Systemd interface {
	// ActiveState returns the unit's state as `systemctl is-active` prints
	// it (active, inactive, failed, activating, ...). A state it cannot
	// tell is an error, never a guess.
	ActiveState(ctx context.Context, unit string) (string, error)
	Stop(ctx context.Context, unit string) error
	Start(ctx context.Context, unit string) error
}

// Unit states (systemd's ActiveState). Only inactive and failed mean that
// nothing of the unit runs: every other state may have the application
// writing its data (activating: starting; deactivating: still stopping;
// reloading, refreshing: running), so the worker stops the unit then
// (`systemctl stop` waits for a stop in progress). A state missing here is
// an error: a new systemd state, or garbage from a broken systemctl, must
// not be taken for "not running" (issue 10 item 11).
var (
	statesDown = []string{"inactive", "failed"}
	statesUp   = []string{"active", "reloading", "refreshing"}
	statesBusy = []string{"activating", "deactivating", "maintenance"}
)

// unitRunning reports whether the unit must be stopped before its data is read.
func unitRunning(state string) bool { return !slices.Contains(statesDown, state) }

// unitUp reports whether a started unit has come up.
func unitUp(state string) bool { return slices.Contains(statesUp, state) }

// Systemctl controls units by running systemctl. Unit names always follow
// `--`, so a name can never be read as an option. The zero value is the
// production one: the systemctl found on PATH, with the worker's
// environment. Tests give each their own recording stand-in (Path) and its
// state directory (Env), so no test changes PATH or any other
// process-wide state and they can run in parallel.
type Systemctl struct {
	// Path is the systemctl binary ("": "systemctl" looked up on PATH on
	// every call).
	Path string
	// Env is added to the worker's environment for each call (KEY=VALUE;
	// nil: the environment as it is).
	Env []string
}

// ActiveState runs `systemctl is-active -- UNIT` and reads the state it
// prints. Its exit status is 0 for active units and 3 (4 for a unit that
// does not exist, in some versions) otherwise; any other status, or a
// state it does not know ("Failed to connect to bus" prints nothing and
// exits 1), is an error: the run then fails before anything is archived.
func (s Systemctl) ActiveState(ctx context.Context, unit string) (string, error) {
	stdout, err := s.output(ctx, "is-active", "--", unit)
	state := strings.TrimSpace(stdout)
	var exit *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return "", err
	case errors.As(err, &exit) && (exit.ExitCode() == 3 || exit.ExitCode() == 4):
	default:
		return "", fmt.Errorf("cannot tell whether %s is running: %w", unit, err)
	}
	known := slices.Contains(statesDown, state) || slices.Contains(statesUp, state) || slices.Contains(statesBusy, state)
	if !known || (err == nil) != unitUp(state) {
		return "", fmt.Errorf("cannot tell whether %s is running: systemctl is-active printed %q (%v)", unit, state, exitStatus(err))
	}
	if !unitRunning(state) {
		if err := s.checkUnitExists(ctx, unit); err != nil {
			return "", err
		}
	}
	return state, nil
}

// checkUnitExists fails for a unit systemd does not know: is-active calls
// it "inactive", so a misspelt serviceName would have the data archived
// while the application keeps writing it, every night, with exit 0.
func (s Systemctl) checkUnitExists(ctx context.Context, unit string) error {
	stdout, err := s.output(ctx, "show", "-p", "LoadState", "--value", "--", unit)
	if err != nil {
		return fmt.Errorf("cannot tell whether %s exists: %w", unit, err)
	}
	if load := strings.TrimSpace(stdout); load == "not-found" {
		return fmt.Errorf("unit %s does not exist (LoadState=not-found): check serviceName; "+
			"backing up its data would read it while the application writes it", unit)
	}
	return nil
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Stop runs `systemctl stop -- UNIT`, which waits for the stop job to finish.
func (s Systemctl) Stop(ctx context.Context, unit string) error {
	_, err := s.output(ctx, "stop", "--", unit)
	return err
}

// Start runs `systemctl start -- UNIT`.
func (s Systemctl) Start(ctx context.Context, unit string) error {
	_, err := s.output(ctx, "start", "--", unit)
	return err
}

// output runs systemctl and returns its standard output; an error carries
// its standard error.
func (s Systemctl) output(ctx context.Context, args ...string) (string, error) {
	path := s.Path
	if path == "" {
		var err error
		if path, err = exec.LookPath("systemctl"); err != nil {
			return "", fmt.Errorf("systemctl not found on PATH: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if s.Env != nil {
		cmd.Env = append(os.Environ(), s.Env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	if ctx.Err() != nil {
		return stdout.String(), fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), context.Cause(ctx))
	}
	var exit *exec.ExitError
	if msg := strings.TrimSpace(stderr.String()); errors.As(err, &exit) && msg != "" {
		return stdout.String(), &systemctlError{args: args, msg: msg, err: err}
	}
	return stdout.String(), fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
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
