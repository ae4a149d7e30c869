# NixOS module: services.fh-lite — apply a FlakeHub-published configuration
# from a systemd timer (the units of systemd/fh-lite.{service,timer}).
#
#   services.fh-lite = {
#     enable = true;
#     reference = "MyOrg/my-fleet/0.1#nixosConfigurations.pi";
#     healthCheck = "systemctl is-active --quiet sshd";
#   };
#
# The flake passes `package` (the fh-lite build for this system; built on
# the build platform, cross-compiled when the configuration is cross).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.fh-lite;
  inherit (lib) mkEnableOption mkIf mkOption types optionals concatMapStringsSep literalExpression;

  # One argument of an Exec*= line: a double-quoted string with C escapes
  # (systemd unquotes JSON's escapes), every `%` doubled so no specifier
  # expands (`date +%H` stays itself, `%Q` is no unit error) and every `$`
  # doubled so systemd expands no variable: fh-lite gets the text as written.
  execArg = arg: builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON (toString arg));
  execArgs = concatMapStringsSep " " execArg;

  # The PATH of the service, and so of the health check (NixOS adds
  # coreutils, findutils, gnugrep, gnused and systemd to every service).
  basePath = [ pkgs.bash pkgs.curl pkgs.gawk pkgs.iproute2 pkgs.util-linux config.systemd.package ];

  args =
    # A loose reference is how a timer follows new releases: no warning
    # every run (the flag changes nothing for an exact one).
    [ "apply" "nixos" cfg.reference cfg.action "--no-loose-warning" ]
    ++ optionals (cfg.trial && cfg.action == "switch") [ "--trial" ]
    ++ optionals (cfg.activationTimeout != null)
      [ "--activation-timeout" (toString cfg.activationTimeout) ]
    ++ optionals (cfg.healthCheck != null)
      [ "--health-check" cfg.healthCheck "--health-timeout" (toString cfg.healthTimeout) ]
    ++ optionals (cfg.metricsFile != null) [ "--metrics-file" cfg.metricsFile ]
    ++ optionals (cfg.reboot != "never") [ "--reboot" cfg.reboot ]
    ++ optionals (cfg.rebootWindow != null) [ "--reboot-window" cfg.rebootWindow ]
    ++ optionals (cfg.window != null) [ "--window" cfg.window ]
    ++ optionals (cfg.rolloutSpread != null) [ "--rollout-spread" cfg.rolloutSpread ]
    ++ optionals (cfg.trialBoot.bootLoader != "auto" || !cfg.trialBoot.enable)
      [ "--boot-loader" (if cfg.trialBoot.enable then cfg.trialBoot.bootLoader else "none") ]
    ++ optionals (cfg.trialBoot.enable && cfg.trialBoot.firmwareDir != null)
      [ "--firmware-dir" cfg.trialBoot.firmwareDir ]
    ++ lib.concatMap (m: [ "--mirror" m ]) cfg.mirrors
    ++ optionals (cfg.limitRate != null) [ "--limit-rate" cfg.limitRate ]
    ++ optionals (cfg.limitRateUplink != null) [ "--limit-rate-uplink" cfg.limitRateUplink ]
    ++ cfg.extraArgs;

  # The boot-time confirmation of a trial boot.
  # With reboot = "if-needed", a new system that fails its health check
  # after its trial boot is rebooted back to the previous one.
  confirmArgs = [ "confirm-boot" ]
    ++ optionals (cfg.metricsFile != null) [ "--metrics-file" cfg.metricsFile ]
    ++ optionals (cfg.reboot != "never") [ "--reboot" cfg.reboot ]
    ++ optionals (cfg.rebootWindow != null) [ "--reboot-window" cfg.rebootWindow ]
    ++ optionals (cfg.trialBoot.firmwareDir != null) [ "--firmware-dir" cfg.trialBoot.firmwareDir ];
in
{
  options.services.fh-lite = {
    enable = mkEnableOption "periodic deployment of a FlakeHub-published NixOS configuration with fh-lite";

    package = mkOption {
      type = types.package;
      description = "The fh-lite package.";
    };

    reference = mkOption {
      type = types.str;
      example = "MyOrg/my-fleet/0.1#nixosConfigurations.pi";
      description = ''
        Output reference ORG/PROJECT/VERSION_REQ[#ATTR_PATH]. A loose version
        requirement (0.1, *) always applies the newest matching release.
      '';
    };

    action = mkOption {
      type = types.enum [ "switch" "boot" "test" "dry-activate" ];
      default = "switch";
      description = "What switch-to-configuration does with the new system.";
    };

    trial = mkOption {
      type = types.bool;
      default = true;
      description = ''
        With action "switch": activate the new system with
        `switch-to-configuration test`, run the health check, and only when
        both pass make it the boot default (generation + `boot`). A power
        cut during the trial boots the old system, since the boot loader
        never saw the new one.
      '';
    };

    activationTimeout = mkOption {
      type = types.nullOr types.ints.positive;
      default = 600;
      description = ''
        Seconds a switch-to-configuration may run; a longer one is killed
        (with its process group) and rolled back. null: no limit.
      '';
    };

    healthTimeout = mkOption {
      type = types.ints.positive;
      default = 60;
      description = "Seconds the health check may run (--health-timeout).";
    };

    schedule = mkOption {
      type = types.str;
      default = "hourly";
      example = "*-*-* 04:00:00";
      description = "When to run (systemd OnCalendar= syntax).";
    };

    randomizedDelaySec = mkOption {
      type = types.str;
      default = "30min";
      description = "Random delay added to each run, to spread a fleet (RandomizedDelaySec=).";
    };

    healthCheck = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "curl -fsS http://127.0.0.1:8080/health";
      description = ''
        Shell command run after activation (via /bin/sh -c); a failure or a
        timeout rolls back to the previous generation. It runs with the
        service's PATH: bash, coreutils, findutils, gnugrep, gnused, gawk,
        curl, iproute2 (ip, ss), util-linux and systemd (systemctl), then
        /run/wrappers/bin (setuid wrappers such as ping), then the packages
        of healthCheckPackages. Written as is: `%` and `$` reach the shell
        unchanged.
      '';
    };

    healthCheckPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = literalExpression "[ pkgs.jq pkgs.netcat ]";
      description = ''
        More packages whose bin/ and sbin/ go on the PATH of the service and
        of its health check (after those healthCheck lists).
      '';
    };

    tokenFile = mkOption {
      type = types.path;
      default = "/etc/fh-lite/token";
      description = ''
        Device token file on this machine, handed to the service with
        LoadCredential= (never copied into the Nix store).
      '';
    };

    metricsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text/fh-lite.prom";
      description = ''
        Write Prometheus metrics (fh_lite_*) here after every run, atomically,
        for node_exporter's textfile collector (--metrics-file).
      '';
    };

    reboot = mkOption {
      type = types.enum [ "never" "if-needed" ];
      default = "never";
      description = ''
        "if-needed": when the applied system needs a reboot
        (switch-to-configuration exit 100, or a new kernel, initrd or kernel
        modules), run `systemctl reboot` inside rebootWindow; the next run
        confirms the system with the health check (--reboot).
      '';
    };

    rebootWindow = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "02:00-05:00";
      description = "Local-time HH:MM-HH:MM window for reboots; may wrap past midnight (--reboot-window).";
    };

    window = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "22:00-06:00";
      description = ''
        Activate only inside this local-time HH:MM-HH:MM window; outside it,
        the closure is downloaded and pinned, and the run exits 43 (--window).
      '';
    };

    rolloutSpread = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "24h";
      description = ''
        Staged rollout without a server: a newly seen release activates on
        this machine after a delay in [0, rolloutSpread) derived from
        /etc/machine-id and its store path; until then it is staged and the
        run exits 43 (--rollout-spread; `fh-lite status` shows when).
      '';
    };

    trialBoot = {
      enable = mkOption {
        type = types.bool;
        default = cfg.trial && cfg.action == "switch" && cfg.reboot == "if-needed";
        defaultText = literalExpression ''trial && action == "switch" && reboot == "if-needed"'';
        description = ''
          Trial boots: a new system that needs a reboot (a new kernel, initrd
          or kernel modules) is booted once, and becomes the boot loader's
          default only after it came up and passed the health check; if it
          does not come up, the machine boots the previous system and fh-lite
          records the release as failed ("did not boot", exit 36). Adds
          fh-lite-confirm-boot.service, which settles the trial at boot.
          Needs systemd-boot (UEFI), the Raspberry Pi firmware's tryboot
          (its firmware partition mounted: sd-image mounts /boot/firmware
          with noauto) or GRUB; elsewhere (U-Boot/extlinux alone) fh-lite
          says so and commits before the reboot. A hang while booting only becomes a reset with
          a watchdog: set `systemd.watchdog.runtimeTime = "30s";` (systemd
          arms the hardware watchdog; `fh-lite status` warns when none is
          active).
        '';
      };
      bootLoader = mkOption {
        type = types.enum [ "auto" "systemd-boot" "grub" "tryboot" "none" ];
        default = "auto";
        description = "The one-shot boot mechanism (--boot-loader); auto detects systemd-boot, then tryboot (a Raspberry Pi with its firmware partition mounted), then GRUB.";
      };
      firmwareDir = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/boot/firmware";
        description = "Where the Raspberry Pi firmware partition is mounted, for tryboot (--firmware-dir); null: /boot/firmware, else /boot.";
      };
    };

    mirrors = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "http://lan-box:8080" ];
      description = ''
        Binary caches asked before FlakeHub Cache, per path, in this order
        (--mirror; http://, https://, file://). Everything they serve is
        verified; the FlakeHub token is never sent to them.
      '';
    };

    limitRate = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "2M";
      description = ''
        Cap on all downloads of a run, mirrors included, in bytes per second
        with curl's suffixes k, M, G (--limit-rate).
      '';
    };

    limitRateUplink = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "500k";
      description = ''
        The same cap for everything but the mirrors (--limit-rate-uplink).
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--health-timeout" "120" "--rollback-on" "1,2" ];
      description = "More fh-lite apply options.";
    };
  };

  config = mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];

    systemd.services.fh-lite = {
      description = "fh-lite: apply the FlakeHub-published system configuration";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      conflicts = [ "shutdown.target" ];
      before = [ "shutdown.target" ];
      # Activation must not stop or restart the unit that runs it.
      restartIfChanged = false;
      stopIfChanged = false;
      # sh and the health check's tools (see healthCheck).
      path = basePath ++ [ "/run/wrappers" ] ++ cfg.healthCheckPackages;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/fh-lite ${execArgs args}";
        LoadCredential = "flakehub-token:${toString cfg.tokenFile}";
        # 40: applied, reboot needed; 34: skipped a path that failed before;
        # 43: staged, activates later (window, rollout spread).
        SuccessExitStatus = "40 34 43";
        StateDirectory = "fh-lite";
        StateDirectoryMode = "0700";
        # Activation rewrites /etc, /boot, /nix/var and restarts units, so no
        # ProtectSystem/ProtectHome/PrivateTmp/NoNewPrivileges here (see
        # systemd/fh-lite.service for the reasons); these are safe:
        KeyringMode = "private";
        RestrictRealtime = true;
        SystemCallArchitectures = "native";
        UMask = "0022";
        TimeoutStartSec = "1h";
        # On stop, SIGTERM goes to fh-lite alone (the activation's children
        # are not cut off by systemd); fh-lite stops a transfer at once, but
        # finishes an activation, its health check and any rollback first.
        KillMode = "mixed";
        # How long that may take: activation timeout + health timeout +
        # the rollback's activation (another activation timeout), plus a
        # margin; a trial also runs the commit's `boot` script (a third
        # activation timeout). Only then does systemd SIGKILL the lot (the
        # next run recovers from the journal).
        TimeoutStopSec =
          let
            act = if cfg.activationTimeout == null then 600 else cfg.activationTimeout;
            scripts = if cfg.trial && cfg.action == "switch" then 3 else 2;
          in "${toString (scripts * act + cfg.healthTimeout + 60)}s";
        SyslogIdentifier = "fh-lite";
      };
    };

    # Settles a trial boot once the booted system is up: commit, or fall
    # back to the previous system. Before the timer's first run (which
    # would do the same); after multi-user.target so the health check sees
    # the services of the booted system.
    systemd.services.fh-lite-confirm-boot = mkIf cfg.trialBoot.enable {
      description = "fh-lite: confirm a trial boot, or fall back from it";
      wantedBy = [ "multi-user.target" ];
      after = [ "local-fs.target" "multi-user.target" ];
      before = [ "fh-lite.service" "shutdown.target" ];
      conflicts = [ "shutdown.target" ];
      restartIfChanged = false;
      stopIfChanged = false;
      path = basePath ++ [ "/run/wrappers" ] ++ cfg.healthCheckPackages;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/fh-lite ${execArgs confirmArgs}";
        # 40: the trial boot still waits for its reboot (not a failure).
        SuccessExitStatus = "40";
        StateDirectory = "fh-lite";
        StateDirectoryMode = "0700";
        KeyringMode = "private";
        SystemCallArchitectures = "native";
        UMask = "0022";
        # The health check, and a fallback's `boot` script.
        TimeoutStartSec = "${toString (cfg.healthTimeout + (if cfg.activationTimeout == null then 600 else cfg.activationTimeout) + 60)}s";
        KillMode = "mixed";
        SyslogIdentifier = "fh-lite";
      };
    };

    systemd.timers.fh-lite = {
      description = "fh-lite: apply the FlakeHub-published configuration periodically";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule;
        RandomizedDelaySec = cfg.randomizedDelaySec;
        Persistent = true;
      };
    };
  };
}
