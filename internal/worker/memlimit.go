package worker

import (
	"os"
	"runtime/debug"
)

// DefaultMemoryLimit is the Go runtime's soft memory limit for a worker
// process. The archivers' buffers are bounded (a few MiB per thread), but
// with the default GC pacing the heap may grow to twice the live data
// before a collection: measured on a 1 GiB corpus, zip peaked at 74 MiB of
// RSS without a limit and 43 MiB with one, at no cost in time (bench/).
// It is soft: a run that needs more still gets it.
const DefaultMemoryLimit = 48 << 20

// ApplyMemoryLimit sets DefaultMemoryLimit unless GOMEMLIMIT is set in the
// environment, which wins (the Go runtime has already applied it).
func ApplyMemoryLimit() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(DefaultMemoryLimit)
	}
}
