// Package worker is the backup engine behind the backup-worker program
// (cmd/backup-worker holds its commands: flags, help, output): for the
// service a config.Config describes, the Runner stops the service's units
// if they run, archives the data paths into every destination, starts the
// units again and prunes (run.go lists the phases, phase_*.go, one file
// each).
//
// Around the run are the operations the other commands call. Each returns
// a result value and never writes to stdout; the command prints it
// (WriteText) and maps the error to the exit code (ExitCode). Logs go to
// the *slog.Logger given:
//
//	List     list.go                       ListResult: archives per destination
//	Verify   verify.go, verify_remote.go   VerifyResult: a Verdict per archive, also
//	                                       streamed (VerifyOptions.Report)
//	Prune    prune.go                      PruneResult: kept, removed, bad per destination
//	Restore  restore*.go                   RestoreResult: what went where
//	Recover  recover.go; ReadStatus status.go; DryRun dryrun.go
//
// Destinations are reached through the Destination interface
// (destination.go): localDir (dest_local.go), S3 (dest_s3*.go), SFTP
// (dest_sftp*.go), opened by openStore (dest_open.go). Archive names follow
// one rule (parseArchiveName, archivename.go); trust.go checks checksums
// and signatures.
//
// Exit codes (returned by Runner.Run, and by ExitCode for the operations):
//
//	0    success
//	1    failed (no verified archive anywhere, a hook or unit stop failed,
//	     a unit did not come back, verify found a bad archive, ...)
//	2    usage error, or missing/invalid config (all problems listed)
//	3    partial: some destinations failed, at least one has a verified archive
//	4    lock held: another run for this service is in progress
//	5    warning: committed, but something needs attention
//	130  interrupted by SIGINT/SIGTERM (units are started again first)
package worker
