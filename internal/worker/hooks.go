package worker

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// hookWaitDelay bounds how long a cancelled hook's output pipes are waited
// for after the shell is killed (a backgrounded child may hold them open).
const hookWaitDelay = 5 * time.Second

// runHook runs command via /bin/sh -c with the worker's environment plus env,
// its output going to out (the worker's stderr, i.e. the journal).
func runHook(ctx context.Context, command string, env []string, out io.Writer) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = hookWaitDelay
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
		return err
	}
	return nil
}
