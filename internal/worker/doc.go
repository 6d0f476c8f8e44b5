// Package worker is the backup engine behind the backup-worker program
// (cmd/backup-worker holds its commands): for the service a config.Config
// describes, the Runner stops the service's units if they run, archives
// the data paths into every destination, starts the units again and
// prunes (run.go lists the phases, one file each). Around it are the
// maintenance operations the commands call (Recover, ReadStatus, ...).
// Destinations are reached through the Destination interface
// (destination.go); localDir is the local directory.
//
// Exit codes (returned by Runner.Run and the operations):
//
//	0    success
//	1    failed (no verified archive anywhere, a hook or unit stop failed,
//	     a unit did not come back, verify found a bad archive, ...)
//	2    usage error, or missing/invalid config (all problems listed)
//	3    partial: some destinations failed, at least one has a verified archive
//	4    lock held: another run for this service is in progress
//	130  interrupted by SIGINT/SIGTERM (units are started again first)
package worker
