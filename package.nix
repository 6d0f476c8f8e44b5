# backupgen and backup-worker, for `callPackage ./package.nix { }`.
#
# One build makes both commands and runs every Go test; `mainProgram`
# changes only meta, which is not part of the derivation, so
# `callPackage ./package.nix { mainProgram = "backup-worker"; }` is the same
# store path with `nix run` / lib.getExe pointing at the worker.
{
  lib,
  buildGoModule,
  version ? "dev",
  mainProgram ? "backupgen",
}:
let
  fs = lib.fileset;

  # Every folder named testdata (golden files, fuzz corpora), wherever a
  # package keeps one. Hidden folders (.git) are not searched.
  testdata =
    dir:
    let
      entries = builtins.readDir dir;
      search =
        name:
        if entries.${name} != "directory" || builtins.substring 0 1 name == "." then
          [ ]
        else if name == "testdata" then
          [ (dir + "/${name}") ]
        else
          testdata (dir + "/${name}");
    in
    builtins.concatMap search (builtins.attrNames entries);

  # What the build and its tests read: the Go module, the embedded
  # templates, the tests' testdata, and examples/ (the tests compare the
  # committed example output with a fresh render, and run and evaluate it).
  # Everything else (flake.nix, nix/ and docs/ with their tests of Nix and
  # Markdown files, nixos/, CI files) stays out, so editing it does not
  # rebuild.
  source = fs.difference (fs.unions (
    [
      ./go.mod
      ./go.sum
      (fs.fileFilter (file: file.hasExt "go") ./.)
      ./templates
      ./examples
    ]
    ++ testdata ./.
  )) (fs.unions [ ./nix ./docs ]);
in
buildGoModule {
  pname = "backupgen";
  inherit version;

  src = fs.toSource {
    root = ./.;
    fileset = source;
  };

  # One source of truth, refreshed by `make vendor-hash`.
  vendorHash = import ./nix/vendor-hash.nix;

  subPackages = [
    "cmd/backupgen"
    "cmd/backup-worker"
  ];

  ldflags = [
    "-s"
    "-w"
    "-X main.version=${version}"
  ];

  # buildGoModule tests only subPackages; test the whole module. Tests that
  # need nix-instantiate, systemd-analyze or archive tools skip when the
  # tool is missing unless CI is set, so CI must stay unset here.
  checkPhase = ''
    runHook preCheck
    unset CI
    export GOFLAGS=''${GOFLAGS//-trimpath/}
    go test -vet=off -count=1 -p "$NIX_BUILD_CORES" ./...
    runHook postCheck
  '';

  meta = {
    description = "Renders NixOS backup modules from a TOML spec, and the worker that runs the backups";
    homepage = "https://github.com/backupgen/backupgen";
    platforms = lib.platforms.linux;
    inherit mainProgram;
  };
}
