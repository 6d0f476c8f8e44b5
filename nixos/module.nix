# The backupgen flake's NixOS module (nixosModules.default): the shared
# core.nix, with backupgen.package defaulting to this flake's worker, so
# neither the overlay nor a backup-worker in pkgs is needed.
#
# flake.nix: nixosModules.default = import ./nixos/module.nix { inherit self generated; };
# where `generated` is a folder backupgen wrote (the example's): its
# core.nix and lib.nix are the helpers every generated folder shares.
{ self, generated }:
{ lib, pkgs, ... }:
let
  system = pkgs.stdenv.hostPlatform.system;
in
{
  # An anonymous module has no file to deduplicate on: the key makes a
  # second import harmless. core.nix is keyed too, so a generated folder
  # may import its own copy.
  key = "backupgen-flake-module";
  _file = ./module.nix;

  imports = [ (generated + "/core.nix") ];

  # The helpers this flake ships: core.nix asserts that the copy in use
  # (the first core.nix imported) is this one, so a generated folder from
  # another backupgen version does not silently meet the flake's helpers.
  backupgen.helpers."backupgen flake (nixosModules.default)" = (import (generated + "/lib.nix") { }).version;

  backupgen.package = lib.mkDefault (
    self.packages.${system}.backup-worker
      or (throw "backupgen: the flake has no package for ${system}; set backupgen.package")
  );
}
