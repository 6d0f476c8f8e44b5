# backupgen — see README.md.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Every examples/NAME/backup.toml generates examples/NAME/backup/.
EXAMPLES ?= homelab offsite

.PHONY: all build test generate check update-golden vet lint fuzz clean vendor-hash check-vendor-hash

all: build

## build: compile backupgen and backup-worker into bin/
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/backupgen ./cmd/backup-worker

## test: every test, including the real Nix, systemd and archive-tool checks
test:
	$(GO) vet ./...
	$(GO) test -count=1 -shuffle=on ./...

## generate: regenerate each example's output (examples/NAME/backup/) from examples/NAME/backup.toml
generate:
	set -e; for e in $(EXAMPLES); do $(GO) run ./cmd/backupgen generate --spec examples/$$e/backup.toml --out examples/$$e/backup; done

## check: fail when an example's output is not what its spec generates
check:
	set -e; for e in $(EXAMPLES); do $(GO) run ./cmd/backupgen check --spec examples/$$e/backup.toml --out examples/$$e/backup; done

## update-golden: rewrite golden files after an intended output change
update-golden:
	$(GO) test ./generator/ -run 'TestGolden|TestExamples|TestHelpersEval' -update
	$(GO) test ./... -count=1

vet:
	$(GO) vet ./...

## lint: staticcheck, pinned (fetched by go run into the module cache; .ci/run calls this)
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) ./...

## fuzz: run every Fuzz* target for FUZZTIME each (default 10s); see scripts/fuzz.sh
FUZZTIME ?= 10s
fuzz:
	GO='$(GO)' FUZZTIME='$(FUZZTIME)' scripts/fuzz.sh

## vendor-hash: recompute package.nix's vendorHash into nix/vendor-hash.nix (after go.mod/go.sum or import changes)
vendor-hash:
	nix/vendor-hash.sh

## check-vendor-hash: fail when nix/vendor-hash.nix is stale
check-vendor-hash:
	nix/vendor-hash.sh --check

## bench: archiver vs native tools on a generated corpus (BENCH_SIZE=1GiB, BENCH_REPS=3,
##        BENCH_XZ_REPS=3, BENCH_WORKER_REPS=BENCH_REPS, BENCH_FORMATS=tar,tar.gz,...; BENCH_FLAGS=-pure-go);
##        writes $(BENCH_RESULTS) (default bench/out/results.md, untracked); `make bench-record`
##        writes the recorded bench/results.md instead. Installs nothing; missing tools are
##        reported as "missing". BENCH_TARGETS=dests,rss,downtime adds the worker targets
##        (bench/targets.go); with BENCH_FLAGS=-skip-main only those run, updating their
##        section of the results file. BENCH_TARGETS=downtime-load (bench/load.go) writes
##        bench/out/downtime-load.md only.
##        BENCH_TARGETS=offsite (bench/offsite.go): local vs local+s3:// (versitygw the bench
##        starts) vs `tar -I zstd | rclone rcat`, encrypted vs not, worker RSS at 1x and 4x.
##        BENCH_OFFSITE_SERVER_DIR=/dev/shm puts versitygw's bucket off the bench disk,
##        BENCH_OFFSITE_TLS=1 serves https (the real case); CPU is split worker / versitygw.
##        BENCH_OFFSITE_SERVER_WRAP="chrt --idle 0" / BENCH_OFFSITE_SERVER_ARGS=--data-integrity-etag
##        separate the server's share (labelled in the section; not the issue's setup).
BENCH_RESULTS ?= bench/out/results.md
.PHONY: bench bench-record bench-downtime-load
bench:
	$(GO) build -o bench/out/bin/bench ./bench
	bench/out/bin/bench -results $(BENCH_RESULTS) $(BENCH_FLAGS)

## bench-fullrun: only the headline (bench/fullrun.go): `backup-worker run` (fsync and verification
##        included, one destination) vs the native pipeline per format, alternating; BENCH_SIZE,
##        BENCH_REPS, BENCH_XZ_REPS, BENCH_FULLRUN_FORMATS=tar.zst,tar.gz,zip,tar.bz2,tar.xz.
##        Replaces the "Full run" section at the top of $(BENCH_RESULTS).
.PHONY: bench-fullrun
bench-fullrun:
	$(MAKE) bench BENCH_FLAGS="-skip-main -targets fullrun $(BENCH_FLAGS)"

## bench-record: make bench, writing the tracked bench/results.md
bench-record:
	$(MAKE) bench BENCH_RESULTS=bench/results.md

## bench-downtime-load: downtime idle vs under a CPU+I/O load, current vs old (nice 19, idle I/O)
##        priority (issue 11 item 9); BENCH_SIZE, BENCH_TARGET_REPS; leaves bench/results.md alone.
bench-downtime-load:
	$(MAKE) bench BENCH_FLAGS="-skip-main -targets downtime-load $(BENCH_FLAGS)"

clean:
	rm -rf bin/
