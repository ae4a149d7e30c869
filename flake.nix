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
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.fh-lite.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
      nixosModules.fh-lite = self.nixosModules.default;
    };
}
