# Evaluates flake.nix's outputs against nix/tests/stub-nixpkgs.nix, without
# nixpkgs or network, and checks their shape. Evaluates to the failed
# cases, so [ ] means every case passed:
#
#   nix-instantiate --eval --strict --json -E 'import ./nix/tests/flake-outputs.nix { nixpkgsLib = ../shared/nixos-eval/inputs/nixpkgs-lib; }'
#
# Reading the filtered package source copies it into the store: the Go
# test (nix/nix_test.go) points Nix at a private temporary store.
{
  root ? ../..,
  # The real nixpkgs lib folder (for lib.fileset); see stub-nixpkgs.nix.
  nixpkgsLib,
}:
let
  flake = import (root + "/flake.nix");
  nixpkgs = import ./stub-nixpkgs.nix { inherit nixpkgsLib; };
  # What Nix passes as `self`: the outputs plus the source's attributes.
  self =
    outputs
    // {
      outPath = root;
      sourceInfo.outPath = root;
      inputs = { inherit nixpkgs; };
      _type = "flake";
    };
  outputs = flake.outputs { inherit self nixpkgs; };

  system = "x86_64-linux";
  pkgs = nixpkgs.legacyPackages.${system};
  inherit (outputs.packages.${system}) backupgen backup-worker default;

  hasSuffix =
    suffix: s:
    let
      n = builtins.stringLength s;
      k = builtins.stringLength suffix;
    in
    n >= k && builtins.substring (n - k) k s == suffix;
  contains = needle: s: builtins.match ".*${needle}.*" s != null;
  throws = expr: !(builtins.tryEval (builtins.deepSeq expr expr)).success;

  # Minimal NixOS lib for calling module functions directly.
  moduleLib = {
    mkDefault = content: {
      _type = "override";
      priority = 1000;
      inherit content;
    };
  };
  flakeModule = outputs.nixosModules.default {
    lib = moduleLib;
    inherit pkgs;
  };
  riscvModule = outputs.nixosModules.default {
    lib = moduleLib;
    pkgs = nixpkgs.legacyPackages.riscv64-linux;
  };

  src = backupgen.src;
  srcTop = builtins.readDir src;
  inherit (nixpkgs) lib;

  helpers = outputs.lib.mkHelpers pkgs;
  service = helpers.mkBackupService {
    name = "app";
    dataPaths = [ "/var/lib/app" ];
    user = "root";
    group = "root";
    backupConfig.paths = [ "/var/backups/app" ];
  };

  overlaid = outputs.overlays.default pkgs pkgs;

  cases = [
    {
      name = "inputs: nixpkgs from nixos-unstable";
      expr = flake.inputs.nixpkgs.url;
      expected = "github:NixOS/nixpkgs/nixos-unstable";
    }
    {
      name = "packages: systems";
      expr = builtins.attrNames outputs.packages;
      expected = [
        "aarch64-linux"
        "x86_64-linux"
      ];
    }
    {
      name = "packages: names";
      expr = builtins.attrNames outputs.packages.${system};
      expected = [
        "backup-worker"
        "backupgen"
        "default"
      ];
    }
    {
      name = "packages: built with buildGoModule from package.nix";
      expr = map (p: p.builder) [
        backupgen
        backup-worker
      ];
      expected = [
        "buildGoModule"
        "buildGoModule"
      ];
    }
    {
      name = "packages: both commands are built";
      expr = backup-worker.subPackages;
      expected = [
        "cmd/backupgen"
        "cmd/backup-worker"
      ];
    }
    {
      name = "packages: backupgen and backup-worker differ only in meta (one build)";
      expr = removeAttrs backupgen [ "meta" ] == removeAttrs backup-worker [ "meta" ];
      expected = true;
    }
    {
      name = "packages: mainProgram";
      expr = map (p: p.meta.mainProgram) [
        backupgen
        backup-worker
        default
      ];
      expected = [
        "backupgen"
        "backup-worker"
        "backupgen"
      ];
    }
    {
      name = "packages: vendorHash is nix/vendor-hash.nix";
      expr = {
        same = backupgen.vendorHash == import (root + "/nix/vendor-hash.nix");
        sri = builtins.match "sha256-[A-Za-z0-9+/]{43}=" backupgen.vendorHash != null;
      };
      expected = {
        same = true;
        sri = true;
      };
    }
    {
      name = "packages: ldflags strip and set main.version";
      expr = backupgen.ldflags;
      expected = [
        "-s"
        "-w"
        "-X main.version=dev"
      ];
    }
    {
      name = "packages: checkPhase tests the whole module and never sets CI";
      expr = {
        doCheck = backupgen.doCheck or true;
        all = contains "go test [^\n]*\\./\\.\\.\\." backupgen.checkPhase;
        unsetCI = contains "unset CI" backupgen.checkPhase;
        setsCI = contains "CI=" backupgen.checkPhase;
      };
      expected = {
        doCheck = true;
        all = true;
        unsetCI = true;
        setsCI = false;
      };
    }
    {
      name = "packages: Linux only";
      expr = backupgen.meta.platforms;
      expected = nixpkgs.lib.platforms.linux;
    }
    {
      name = "source: what the build and tests read";
      expr = {
        top = builtins.attrNames srcTop;
        testdata = map (d: builtins.pathExists (src + "/${d}/testdata")) [
          "generator"
          "internal/schedule"
        ];
        goFile = builtins.pathExists (src + "/cmd/backupgen/main.go");
        template = builtins.pathExists (src + "/templates/nix/cron.nix");
        example = builtins.pathExists (src + "/examples/homelab/backup/core.nix");
      };
      expected = {
        # The Go packages (directories holding .go files), go.mod, go.sum,
        # templates/ and examples/; nothing else at the top.
        top = builtins.attrNames (
          lib.filterAttrs (
            n: t:
            builtins.elem n [
              "go.mod"
              "go.sum"
            ]
            || t == "directory" && !(builtins.elem n [ ".ci" ".git" "bin" "docs" "nix" "nixos" "scripts" "vendor" ])
          ) (builtins.readDir root)
        );
        testdata = [
          true
          true
        ];
        goFile = true;
        template = true;
        example = true;
      };
    }
    {
      name = "source: nothing else";
      expr = builtins.filter (n: builtins.pathExists (src + "/${n}")) [
        ".git"
        ".ci"
        ".gitignore"
        "flake.nix"
        "flake.lock"
        "package.nix"
        "nix"
        "nixos"
        "docs"
        "scripts"
        "Makefile"
        "README.md"
        "bench/results.md"
        "bin"
        "vendor"
      ];
      expected = [ ];
    }
    {
      name = "nixosModules.default: imports core.nix";
      expr = map toString flakeModule.imports;
      expected = [ (toString (root + "/examples/homelab/backup/core.nix")) ];
    }
    {
      name = "nixosModules.default: backupgen.package defaults to this flake's worker";
      expr = {
        inherit (flakeModule.backupgen.package) _type priority;
        mainProgram = flakeModule.backupgen.package.content.meta.mainProgram;
        same = flakeModule.backupgen.package.content == backup-worker;
      };
      expected = {
        _type = "override";
        priority = 1000;
        mainProgram = "backup-worker";
        same = true;
      };
    }
    {
      name = "nixosModules.default: keyed, so a second import is harmless";
      expr = flakeModule.key;
      expected = "backupgen-flake-module";
    }
    {
      name = "nixosModules.default: a system without a package says so";
      expr = throws riscvModule.backupgen.package.content;
      expected = true;
    }
    {
      name = "nixosModules.example: the generated example folder";
      expr = toString outputs.nixosModules.example;
      expected = toString (root + "/examples/homelab/backup/default.nix");
    }
    {
      name = "lib: cronToOnCalendar is pure";
      expr = outputs.lib.cronToOnCalendar "@weekly";
      expected = [ "Sun *-*-* 00:00:00" ];
    }
    {
      name = "lib: mkHelpers uses this flake's worker and pkgs.writeText";
      expr = service.serviceConfig.ExecStart;
      expected = "${backup-worker}/bin/backup-worker run --config /nix/store/00000000000000000000000000000000-app-backup.json";
    }
    {
      name = "lib: mkHelpers wraps every worker config in the build-time check-config";
      expr =
        ((outputs.lib.mkHelpers (
          pkgs
          // {
            runCommand =
              name: env: script:
              "/checked/${name}" + (if contains "backup-worker check-config" script then ":checked" else ":not-checked");
          }
        )).mkBackupService
          {
            name = "app";
            dataPaths = [ "/var/lib/app" ];
            user = "root";
            group = "root";
            backupConfig.paths = [ "/var/backups/app" ];
          }).serviceConfig.ExecStart;
      expected = "${backup-worker}/bin/backup-worker run --config /checked/app-backup.json:checked";
    }
    {
      name = "nixosModules.default: records the helpers version it ships, for core.nix's assertion";
      expr = flakeModule.backupgen.helpers."backupgen flake (nixosModules.default)";
      expected = (import (root + "/examples/homelab/backup/lib.nix") { }).version;
    }
    {
      name = "lib: nothing under packages";
      expr = builtins.filter (n: n == "lib" || n == "mkHelpers") (
        builtins.attrNames outputs.packages.${system}
      );
      expected = [ ];
    }
    {
      name = "overlays.default: adds both packages";
      expr = map (p: p.meta.mainProgram) [
        overlaid.backupgen
        overlaid.backup-worker
      ];
      expected = [
        "backupgen"
        "backup-worker"
      ];
    }
    {
      name = "apps: backupgen and default run bin/backupgen";
      expr = map (a: {
        inherit (a) type;
        bin = hasSuffix "/bin/backupgen" a.program;
      }) (builtins.attrValues outputs.apps.${system});
      expected = [
        {
          type = "app";
          bin = true;
        }
        {
          type = "app";
          bin = true;
        }
      ];
    }
    {
      name = "apps: names";
      expr = builtins.attrNames outputs.apps.${system};
      expected = [
        "backupgen"
        "default"
      ];
    }
    {
      name = "devShells: Go and Nix tools";
      expr = map (p: p.name) outputs.devShells.${system}.default.packages;
      expected = [
        "go"
        "gopls"
        "gotools"
        "nixfmt"
        "nix"
        "systemd"
        "zstd"
        "xz"
        "bzip2"
        "unzip"
      ];
    }
    {
      name = "formatter: nixfmt";
      expr = outputs.formatter.${system}.name;
      expected = "nixfmt-tree";
    }
    {
      name = "checks: package build, drift and helper evaluation";
      expr = builtins.attrNames outputs.checks.${system};
      expected = [
        "backupgen"
        "drift"
        "helpers"
      ];
    }
    {
      name = "checks: drift runs backupgen check on both examples";
      expr = {
        inputs = outputs.checks.${system}.drift.nativeBuildInputs == [ backupgen ];
        command = contains "backupgen check --spec [^ ]*-backup.toml --out [^ ]*-backup\nbackupgen check --spec [^ ]*-backup.toml --out [^ ]*-backup\n.*" outputs.checks.${system}.drift.buildCommand;
      };
      expected = {
        inputs = true;
        command = true;
      };
    }
    {
      name = "checks: helpers evaluates nix/tests/helpers.nix";
      expr = contains "nix-instantiate --eval --strict --json.*-helpers.nix.*" outputs.checks.${system}.helpers.buildCommand;
      expected = true;
    }
  ];
in
map (c: {
  inherit (c) name expected;
  result = c.expr;
}) (builtins.filter (c: c.expr != c.expected) cases)
