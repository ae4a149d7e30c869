# NixOS module: services.fh-lite — apply a FlakeHub-published configuration
# from a systemd timer (the units of systemd/fh-lite.{service,timer}).
#
#   services.fh-lite = {
#     enable = true;
#     reference = "MyOrg/my-fleet/0.1#nixosConfigurations.pi";
#     healthCheck = "systemctl is-active --quiet sshd";
#   };
#
# The flake passes `package` (the fh-lite build for this system).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.fh-lite;
  inherit (lib) mkEnableOption mkIf mkOption types escapeShellArgs optionals;

  args =
    [ "apply" "nixos" cfg.reference cfg.action ]
    ++ optionals (cfg.healthCheck != null) [ "--health-check" cfg.healthCheck ]
    ++ cfg.extraArgs;
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
        timeout rolls back to the previous generation.
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
      # chroot, sh and the health check's tools.
      path = [ pkgs.coreutils pkgs.bash config.systemd.package ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/fh-lite ${escapeShellArgs args}";
        LoadCredential = "flakehub-token:${toString cfg.tokenFile}";
        # 40: applied, reboot needed; 34: skipped a path that failed before.
        SuccessExitStatus = "40 34";
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
        KillMode = "process";
        SyslogIdentifier = "fh-lite";
      };
    };

    systemd.timers.fh-lite = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule;
        RandomizedDelaySec = cfg.randomizedDelaySec;
        Persistent = true;
      };
    };
  };
}
