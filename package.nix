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
  root = toString ./.;
  # Path relative to the repository root ("" for the root itself).
  relative = path: builtins.substring (builtins.stringLength root + 1) (-1) (toString path);
  hasSuffix =
    suffix: s:
    let
      n = builtins.stringLength s;
      k = builtins.stringLength suffix;
    in
    n >= k && builtins.substring (n - k) k s == suffix;
  under = dir: rel: rel == dir || builtins.substring 0 (builtins.stringLength dir + 1) rel == dir + "/";
  inTestdata = rel: builtins.match "(.*/)?testdata(/.*)?" rel != null;

  # What the build and its tests read: the Go module, the embedded
  # templates, the tests' testdata, and examples/ + nixos/ (the generator
  # test compares the committed example output with a fresh render).
  # Everything else (flake.nix, nix/, READMEs, CI files) stays out, so
  # editing it does not rebuild.
  keep =
    path: type:
    let
      rel = relative path;
      top = builtins.head (builtins.split "/" rel);
    in
    if type == "directory" then
      !(builtins.elem top [
        ".git"
        ".github"
        ".ci"
        "nix"
        "bin"
        "vendor"
      ])
      && builtins.match "result.*" top == null
    else
      builtins.elem rel [
        "go.mod"
        "go.sum"
      ]
      || hasSuffix ".go" rel
      || under "templates" rel
      || under "examples" rel
      || inTestdata rel
      || under "nixos" rel
        && !(builtins.elem rel [
          "nixos/module.nix"
          "nixos/README.md"
        ]);
in
buildGoModule {
  pname = "backupgen";
  inherit version;

  src = builtins.path {
    path = ./.;
    name = "backupgen-source";
    filter = keep;
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
