{
  description = "backupgen: NixOS backup modules from a TOML spec, and the worker that runs them";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      # The worker drives systemd units: Linux only.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system nixpkgs.legacyPackages.${system};
          }) systems
        );

      version = self.shortRev or self.dirtyShortRev or "dev";

      # The example's generated folder (from examples/homelab/backup.toml).
      # Its helper files (core.nix, lib.nix, options.nix, cron.nix) are the
      # same in every generated folder; the flake ships this copy, which
      # checks.drift keeps current.
      generated = ./examples/homelab/backup;

      # Both are the same build (see package.nix); only meta.mainProgram
      # differs.
      mkPackages = pkgs: {
        backupgen = pkgs.callPackage ./package.nix { inherit version; };
        backup-worker = pkgs.callPackage ./package.nix {
          inherit version;
          mainProgram = "backup-worker";
        };
      };
    in
    {
      packages = forAllSystems (
        system: pkgs:
        let
          own = mkPackages pkgs;
        in
        own // { default = own.backupgen; }
      );

      # Sets backupgen.package to this flake's worker; works without the
      # overlay.
      nixosModules.default = import ./nixos/module.nix { inherit self generated; };
      # The example's service modules; users import their own generated
      # folder instead.
      nixosModules.example = generated + "/default.nix";

      # Helpers for modules written by hand in the generated modules' style.
      # Inside NixOS, core.nix already passes them as module arguments.
      lib = {
        # pkgs -> { mkBackupService, mkBackupTimer, mkBackupDirectories,
        # mkBackupCommand,
        # mkWorkerConfig, cronToOnCalendar, systemdQuote, mkServiceOption,
        # ... }. Every worker config goes through the build-time
        # `backup-worker check-config`, as in the generated modules.
        mkHelpers =
          pkgs:
          import (generated + "/lib.nix") {
            inherit pkgs;
            inherit (pkgs) lib;
            worker = self.packages.${pkgs.stdenv.hostPlatform.system}.backup-worker;
            writeText = pkgs.writeText;
            runCommand = pkgs.runCommand;
            tools = [
              pkgs.xz
              pkgs.pbzip2
              pkgs.zstd
            ];
          };
        # Pure: cron or calendar expression -> list of OnCalendar values.
        cronToOnCalendar = import (generated + "/cron.nix");
      };

      overlays.default = final: prev: mkPackages final;

      apps = forAllSystems (
        system: pkgs:
        let
          backupgen = {
            type = "app";
            program = "${self.packages.${system}.backupgen}/bin/backupgen";
            meta.description = "Generate or check NixOS backup modules from a TOML spec";
          };
        in
        {
          inherit backupgen;
          default = backupgen;
        }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              pkgs.go
              pkgs.gopls
              pkgs.gotools
              pkgs.nixfmt
              # The Go tests run the real tools when present.
              pkgs.nix
              pkgs.systemd
              pkgs.zstd
              pkgs.xz
              pkgs.bzip2
              pkgs.unzip
            ];
          };
        }
      );

      formatter = forAllSystems (system: pkgs: pkgs.nixfmt-tree);

      checks = forAllSystems (
        system: pkgs:
        let
          inherit (self.packages.${system}) backupgen;
        in
        {
          # Builds both commands and runs the Go tests.
          inherit backupgen;

          # The committed example output is what the spec generates.
          drift = pkgs.runCommand "backupgen-drift" { nativeBuildInputs = [ backupgen ]; } ''
            backupgen check --spec ${./examples/homelab/backup.toml} --out ${generated}
            backupgen check --spec ${./examples/offsite/backup.toml} --out ${./examples/offsite/backup}
            touch $out
          '';

          # nix/tests/helpers.nix evaluates to its failed cases.
          helpers = pkgs.runCommand "backupgen-helpers-eval" { nativeBuildInputs = [ pkgs.nix ]; } ''
            # A private store: the sandbox has none.
            export HOME=$TMPDIR NIX_STATE_DIR=$TMPDIR/state NIX_STORE_DIR=$TMPDIR/store
            export NIX_LOG_DIR=$TMPDIR/log NIX_CONF_DIR=$TMPDIR/etc
            failed=$(nix-instantiate --eval --strict --json \
              --arg generated ${generated} ${./nix/tests/helpers.nix})
            if [ "$failed" != "[]" ]; then
              echo "failed cases: $failed" >&2
              exit 1
            fi
            touch $out
          '';
        }
      );
    };
}
