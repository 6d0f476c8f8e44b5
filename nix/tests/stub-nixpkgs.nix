# A stand-in for the nixpkgs flake, just enough to evaluate flake.nix's
# outputs without network or a nixpkgs checkout. Derivations are attribute
# sets with type = "derivation" and a fake outPath; builders return their
# arguments, so tests can inspect what package.nix passes to
# buildGoModule. `lib` is the real nixpkgs lib (package.nix filters its
# source with lib.fileset), from a folder the caller names: nix/nix_test.go
# passes the copy bundled with ../shared/nixos-eval.
{ nixpkgsLib }:
let
  systems = [
    "x86_64-linux"
    "aarch64-linux"
    "riscv64-linux"
  ];

  fakeDerivation =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
      drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
    };

  # The bundled lib targets Nix >= 2.18; Debian's nix-instantiate (2.8)
  # lacks builtins.readFileType, which lib.fileset calls. Importing the
  # lib in a scope that adds it (and hands the same scope to nested
  # imports) is enough there; a newer Nix uses the lib as it is.
  readFileType =
    p: if toString p == "/" then "directory" else (builtins.readDir (dirOf p)).${baseNameOf p};
  scope = {
    builtins = builtins // {
      inherit readFileType;
    };
    import = scopedImport scope;
  };
  lib =
    if builtins ? readFileType then
      import nixpkgsLib
    else
      scopedImport scope (nixpkgsLib + "/default.nix");

  mkPkgs =
    system:
    let
      pkgs = {
        inherit lib system;
        stdenv.hostPlatform.system = system;

        callPackage =
          fn: overrides:
          let
            f = if builtins.isFunction fn then fn else import fn;
          in
          f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);

        buildGoModule =
          args:
          fakeDerivation "${args.pname}-${args.version}" (
            args
            // {
              builder = "buildGoModule";
            }
          );
        writeText = name: text: fakeDerivation name { inherit text; };
        runCommand =
          name: env: buildCommand:
          fakeDerivation name (env // { inherit buildCommand; });
        mkShell = args: fakeDerivation "nix-shell" args;
      }
      // builtins.listToAttrs (
        map (name: {
          inherit name;
          value = fakeDerivation name { };
        }) tools
      );
      tools = [
        "go"
        "gopls"
        "gotools"
        "nixfmt"
        "nixfmt-tree"
        "nix"
        "systemd"
        "zstd"
        "xz"
        "pbzip2"
        "docker"
        "podman"
        "bzip2"
        "unzip"
      ];
    in
    pkgs;
in
{
  inherit lib;
  legacyPackages = builtins.listToAttrs (
    map (system: {
      name = system;
      value = mkPkgs system;
    }) systems
  );
}
