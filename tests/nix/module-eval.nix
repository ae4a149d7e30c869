# Evaluates the flake's NixOS module (flake.nix's nixosModules.default, so
# nix/module.nix and the package choice) with nixpkgs' real `lib`, for a few
# build/host platform pairs, and renders the systemd units NixOS would write.
# Used by tests/blackbox/packaging.rs:
#
#   nix-instantiate --store dummy:// --eval --strict --json tests/nix/module-eval.nix \
#     --argstr lib DIR/lib --argstr repo REPO --argstr stubRoot DIR --argstr healthCheck CMD
#
# Nothing is built: nixpkgs itself is a stub whose packages are plain
# directories under stubRoot (the test creates what the units run). The
# NixOS options the module sets are declared here, with NixOS's semantics:
# a service's `path` gets coreutils, findutils, gnugrep, gnused and systemd
# appended and becomes Environment=PATH=…bin:…sbin; unit files are
# `Key=value` lines, one per list element, booleans as true/false.
{ lib, repo, stubRoot, healthCheck }:

let
  l = import (/. + lib);
  inherit (l) mkOption types;

  drv = name: { type = "derivation"; inherit name; outPath = "${stubRoot}/${name}"; };

  tools = [ "bash" "coreutils" "curl" "findutils" "gawk" "gnugrep" "gnused" "iproute2" "systemd" "util-linux" ];

  # A package set building on `build` for `host`; `origin` tells the flake's
  # nixpkgs from the configuration's own in the package's name.
  mkPkgs = origin: build: host:
    let fhLite = target: { rustPlatform.buildRustPackage = _: drv "${origin}-fh-lite-${build}-to-${target}"; };
    in {
      stdenv.buildPlatform.system = build;
      stdenv.hostPlatform.system = host;
      pkgsStatic = fhLite host;
      pkgsCross = {
        musl64.pkgsStatic = fhLite "x86_64-linux";
        aarch64-multiplatform.pkgsStatic = fhLite "aarch64-linux";
        armv7l-hf-multiplatform.pkgsStatic = fhLite "armv7l-linux";
      };
    } // l.genAttrs tools (n: drv "tools/${n}");

  nixpkgs = {
    lib = l;
    legacyPackages = l.genAttrs [ "x86_64-linux" "aarch64-linux" "armv7l-linux" ] (s: mkPkgs "flake" s s);
  };
  flake = import (/. + repo + "/flake.nix");
  self = flake.outputs { inherit self nixpkgs; } // { outPath = repo; };

  unitOption = with types; oneOf [ bool int str path (listOf (oneOf [ bool int str path ])) ];

  commonUnit = {
    options = {
      description = mkOption { type = types.str; default = ""; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; };
      after = mkOption { type = types.listOf types.str; default = [ ]; };
      before = mkOption { type = types.listOf types.str; default = [ ]; };
      requires = mkOption { type = types.listOf types.str; default = [ ]; };
      conflicts = mkOption { type = types.listOf types.str; default = [ ]; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  # The NixOS options nix/module.nix sets.
  nixosStub = { config, pkgs, ... }: {
    options = {
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      systemd.package = mkOption { type = types.package; default = pkgs.systemd; };
      systemd.services = mkOption {
        default = { };
        type = types.attrsOf (types.submodule ({ config, ... }: {
          imports = [ commonUnit ];
          options = {
            path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
            environment = mkOption { type = types.attrsOf (types.nullOr types.str); default = { }; };
            serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
            restartIfChanged = mkOption { type = types.bool; default = true; };
            stopIfChanged = mkOption { type = types.bool; default = true; };
          };
          config.path = l.mkAfter (with pkgs; [ coreutils findutils gnugrep gnused systemd ]);
          config.environment.PATH =
            "${l.makeBinPath config.path}:${l.makeSearchPathOutput "bin" "sbin" config.path}";
        }));
      };
      systemd.timers = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          imports = [ commonUnit ];
          options.timerConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
        });
      };
    };
  };

  # Unit file text, as NixOS writes it.
  value = x: if x == true then "true" else if x == false then "false" else toString x;
  section = attrs: l.concatStrings (l.mapAttrsToList
    (k: v: l.concatMapStrings (x: "${k}=${value x}\n") (l.toList v)) attrs);
  unitSection = u: "[Unit]\n" + section (l.filterAttrs (_: v: v != "") {
    Description = u.description;
    Wants = toString u.wants;
    After = toString u.after;
    Before = toString u.before;
    Requires = toString u.requires;
    Conflicts = toString u.conflicts;
  } // u.unitConfig);
  serviceText = s: unitSection s + "\n[Service]\n"
    + l.concatMapStrings (n: "Environment=${builtins.toJSON "${n}=${s.environment.${n}}"}\n")
      (l.filter (n: s.environment.${n} != null) (l.attrNames s.environment))
    + l.optionalString (!s.restartIfChanged) "X-RestartIfChanged=false\n"
    + l.optionalString (!s.stopIfChanged) "X-StopIfChanged=false\n"
    + section s.serviceConfig;
  timerText = t: unitSection t + "\n[Timer]\n" + section t.timerConfig;

  evalFor = build: host:
    let
      eval = l.evalModules {
        modules = [
          nixosStub
          self.nixosModules.default
          {
            _module.args.pkgs = mkPkgs "config" build host;
            services.fh-lite = {
              enable = true;
              reference = "MyOrg/my-fleet/0.1#nixosConfigurations.pi";
              reboot = "if-needed";
              inherit healthCheck;
              mirrors = [ "http://lan-box:8080" "file:///srv/fh-mirror" ];
              limitRate = "2M";
              trialBoot.firmwareDir = "/boot/firmware";
            };
          }
        ];
      };
      cfg = eval.config;
      service = cfg.systemd.services.fh-lite;
      timer = cfg.systemd.timers.fh-lite;
    in {
      inherit build host;
      package = toString cfg.services.fh-lite.package;
      service = serviceText service;
      timer = timerText timer;
      confirmBoot = serviceText cfg.systemd.services.fh-lite-confirm-boot;
      confirmWantedBy = cfg.systemd.services.fh-lite-confirm-boot.wantedBy;
      timerWantedBy = timer.wantedBy;
      PATH = service.environment.PATH;
      example = eval.options.services.fh-lite.healthCheck.example;
    };
in
[
  (evalFor "x86_64-linux" "aarch64-linux")
  (evalFor "x86_64-linux" "armv7l-linux")
  (evalFor "aarch64-linux" "aarch64-linux")
  (evalFor "armv7l-linux" "armv7l-linux")
]
