{
  description = "fh-lite: deploy FlakeHub-published NixOS configurations onto Raspberry Pis, ARM boards and servers";

  inputs.nixpkgs.url = "https://flakehub.com/f/NixOS/nixpkgs/0.1";

  outputs = { self, nixpkgs }:
    let
      # Where the packages can be built from (the build host).
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # A static musl fh-lite built by `pkgs` (a static package set).
      fhLite = pkgs: pkgs.rustPlatform.buildRustPackage {
        pname = "fh-lite";
        version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).package.version;
        src = nixpkgs.lib.cleanSource self;
        cargoLock.lockFile = ./Cargo.lock;
        # The black-box suite needs Nix, qemu and a loopback FlakeHub
        # stand-in; it runs in scripts/test, not in the sandbox.
        doCheck = false;
        meta = {
          description = "Deploy a FlakeHub-published NixOS configuration onto this machine";
          mainProgram = "fh-lite";
          platforms = nixpkgs.lib.platforms.linux;
        };
      };
    in
    {
      packages = forAllSystems (pkgs: {
        # Static for the build host's own architecture.
        default = fhLite pkgs.pkgsStatic;
        # The three release targets, cross-compiled, static musl.
        fh-lite-x86_64-linux-musl = fhLite pkgs.pkgsCross.musl64.pkgsStatic;
        fh-lite-aarch64-linux-musl = fhLite pkgs.pkgsCross.aarch64-multiplatform.pkgsStatic;
        fh-lite-armv7l-linux-musleabihf = fhLite pkgs.pkgsCross.armv7l-hf-multiplatform.pkgsStatic;
      });

      # services.fh-lite: the systemd service and timer (see README, "Fleets").
      # The package is built where the configuration is built: natively when
      # its build and host platforms agree, else this flake's static cross
      # package for the host (an aarch64 or 32-bit ARM image built on x86_64
      # needs no ARM builder). A pair this flake has no package for (say an
      # armv7l system built natively) builds fh-lite with the
      # configuration's own nixpkgs.
      nixosModules.default = { lib, pkgs, ... }:
        let
          build = pkgs.stdenv.buildPlatform.system;
          host = pkgs.stdenv.hostPlatform.system;
          crossAttr = {
            x86_64-linux = "fh-lite-x86_64-linux-musl";
            aarch64-linux = "fh-lite-aarch64-linux-musl";
            armv7l-linux = "fh-lite-armv7l-linux-musleabihf";
          }.${host} or null;
          fromHere = self.packages.${build} or null;
          package =
            if fromHere != null && build == host then fromHere.default
            else if fromHere != null && crossAttr != null then fromHere.${crossAttr}
            else fhLite pkgs.pkgsStatic;
        in
        {
          imports = [ ./nix/module.nix ];
          services.fh-lite.package = lib.mkDefault package;
        };
      nixosModules.fh-lite = self.nixosModules.default;
    };
}
