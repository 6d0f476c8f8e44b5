//go:build !linux

package worker

import "log/slog"

// lowerPriority: thread nice values and I/O classes are Linux's; the
// worker's units are systemd's, so elsewhere this does nothing.
func lowerPriority(log *slog.Logger) {}
