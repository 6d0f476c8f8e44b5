package worker

import (
	"os"
	"testing"
)

// TestMain clears JOURNAL_STREAM once, before any test runs: under systemd
// (a CI runner started as a unit) it would change the log and progress
// output the tests read. Once here instead of t.Setenv in every test, which
// would rule out t.Parallel.
func TestMain(m *testing.M) {
	os.Unsetenv("JOURNAL_STREAM")
	os.Exit(m.Run())
}
