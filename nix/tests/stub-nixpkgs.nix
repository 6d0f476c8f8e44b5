# A stand-in for the nixpkgs flake, just enough to evaluate flake.nix's
# outputs with builtins only (no network, no nixpkgs checkout). Derivations
# are attribute sets with type = "derivation" and a fake outPath; builders
# return their arguments, so tests can inspect what package.nix passes to
# buildGoModule.
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

  # Only what package.nix uses.
  lib = {
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
      "riscv64-linux"
    ];
  };

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
