# The device lab's systems: NixOS-shaped toplevels that really boot in a
# full-system VM of each architecture (tests/lab/lab.py).
#
# Every script in them runs on the guest's own busybox (`guests.<arch>` is a
# directory holding that architecture's static bin/busybox, from Debian's
# busybox-static), so the closure of `<arch>-v2` is what a device of that
# architecture would fetch. The builds themselves run the host's busybox
# (common.nix `mk`), which no output references.
#
#   <arch>-v1   the installed system (small software set)
#   <arch>-v2   the upgrade: a multi-MiB software set (`payloadMB` MiB blob,
#               20 small library paths), activation and health check pass
#   <arch>-bad  the same software, but its switch-to-configuration exits 1
#               after doing its work: fh-lite rolls back to v1
#   rss-64m, rss-512m, rss-many   the ARM peak-RSS workloads (one 64 MiB
#               NAR, one 512 MiB NAR, 500 small paths)
#   x86_64-trial-v1, x86_64-trial-{good,panic,hang}   (with `trial`) the
#               trial-boot machine's generations 1 and 2: each its own
#               kernel and initrd store paths (so 2 needs a reboot), booted
#               by OVMF + systemd-boot from the entries their
#               switch-to-configuration writes (trial-switch.sh);
#               `panic`'s initrd exits (kernel panic, `panic=5`), `hang`'s
#               init arms the watchdog and never feeds it (trial-init.sh)
#
# The toplevel's `init` is what the lab's stage 1 runs (the boot loader
# entry names it, as NixOS's `init=` does): it points /run/booted-system and
# /run/current-system at itself and hands over to the lab's /lab/init.
# `kernel` and `initrd` are placeholders (one shared path, so an upgrade
# needs no reboot): the lab boots Debian's kernel.
#
# bin/switch-to-configuration ACTION logs `start ACTION VARIANT PID` to
# /var/log/lab/switch.log, writes /etc/lab/system (the system's path; tmp +
# rename), for `switch`/`boot` the boot loader entry
# /boot/loader/entries/default.conf (`init <out>/init`), for `switch`/`test`
# sleeps `switchSleep` seconds (a window for power cuts) and points
# /run/current-system at itself, then logs `end ACTION VARIANT PID`. It syncs
# its own files before it logs `end`, as a boot loader installer does, so
# the lab's evidence outlives a power cut; fh-lite's own files get no such
# help.
{ bbdir, guests, payloadMB ? 8, switchSleep ? 2, trial ? null }:
let
  common = import ../fixtures/common.nix { inherit bbdir; };
  inherit (common) mk;

  lib = n: mk "fh-lite-lab-lib-${toString n}" ''
    mkdir -p $out/lib $out/share/doc
    i=0
    while [ $i -lt 40 ]; do
      echo "lab library ${toString n} line $i: the quick brown fox jumps over the lazy dog" >> $out/share/doc/README
      i=$((i + 1))
    done
    head -c $((20000 + ${toString n} * 997)) /dev/urandom > $out/lib/liblab${toString n}.so
    ln -s liblab${toString n}.so $out/lib/liblab.so.${toString n}
  '';
  libs = from: to: if from > to then [ ] else [ (lib from) ] ++ libs (from + 1) to;

  # Half incompressible, half text: zstd streams both kinds of frame.
  payload = mb: name: mk name ''
    mkdir -p $out/share
    half=$((${toString mb} * 524288))
    head -c $half /dev/urandom > $out/share/blob.bin
    i=0
    yes "fh-lite device lab payload line, padded to make it compress: 0123456789abcdef" | head -c $half >> $out/share/blob.bin
  '';

  sw = name: paths: mk name ''
    mkdir -p $out/lib
    ${builtins.concatStringsSep "\n" (map (p: "ln -s ${p} $out/lib/$(basename ${p})") paths)}
  '';
  # One kernel for every system: an upgrade needs no reboot.
  boot = mk "fh-lite-lab-boot" ''
    mkdir -p $out
    echo "placeholder kernel (the lab boots Debian's)" > $out/kernel
    echo "placeholder initrd (the lab's own stage 1)" > $out/initrd
  '';
  swOld = sw "fh-lite-lab-sw-old" (libs 1 4);
  swNew = sw "fh-lite-lab-sw-new" ([ (payload payloadMB "fh-lite-lab-payload") ] ++ libs 5 24);

  system = arch: variant: exit: software:
    let bb = builtins.path { path = /. + guests.${arch}; name = "busybox-static-${arch}"; };
    in mk "nixos-system-lab-${arch}-${variant}" ''
      mkdir -p $out/bin
      gbb=${bb}/bin/busybox
      cat > $out/bin/switch-to-configuration <<EOF
      #!$gbb sh
      # fh-lite lab system ${arch} ${variant}: logs, writes files, exits ${toString exit}.
      bb=$gbb
      action="\$1"
      \$bb mkdir -p /var/log/lab /etc/lab /boot/loader/entries
      echo "start \$action ${variant} \$\$" >> /var/log/lab/switch.log
      echo "$out" > /etc/lab/system.tmp && \$bb mv /etc/lab/system.tmp /etc/lab/system
      case "\$action" in switch|boot)
        echo "init $out/init" > /boot/loader/entries/default.conf.tmp
        \$bb sync
        \$bb mv /boot/loader/entries/default.conf.tmp /boot/loader/entries/default.conf ;;
      esac
      case "\$action" in switch|test)
        \$bb sleep ${toString switchSleep}
        \$bb ln -sfn $out /run/current-system ;;
      esac
      \$bb sync
      echo "end \$action ${variant} \$\$" >> /var/log/lab/switch.log
      \$bb sync
      exit ${toString exit}
      EOF
      cat > $out/init <<EOF
      #!$gbb sh
      $gbb ln -sfn $out /run/booted-system
      $gbb ln -sfn $out /run/current-system
      exec /lab/init
      EOF
      printf '#!%s sh\necho "lab system: activate $*"\n' $gbb > $out/activate
      chmod 0555 $out/bin/switch-to-configuration $out/init $out/activate
      echo "25.05.lab-${variant}" > $out/nixos-version
      echo "${arch}-linux" > $out/system
      ln -s ${boot}/kernel $out/kernel
      ln -s ${boot}/initrd $out/initrd
      echo "init=$out/init console=ttyS0" > $out/kernel-params
      ln -s ${software} $out/sw
    '';

  perArch = arch: {
    "${arch}-v1" = system arch "v1" 0 swOld;
    "${arch}-v2" = system arch "v2" 0 swNew;
    "${arch}-bad" = system arch "bad" 1 swNew;
  };

  many = mk "fh-lite-lab-rss-many" ''
    mkdir -p $out
    ${builtins.concatStringsSep "\n" (map (n: "ln -s ${mk "fh-lite-lab-small-${toString n}" ''
      mkdir -p $out; head -c ${toString (2000 + n * 13)} /dev/urandom > $out/data; echo ${toString n} > $out/n
    ''} $out/${toString n}") (builtins.genList (n: n + 1) 499))}
  '';
  # The trial-boot machine (x86_64, UEFI): Debian's kernel and the lab's
  # initrds (trial.kernel, trial.initrds.<variant>: files made by lab.py).
  # Generation 1 and each generation 2 get their own kernel and initrd
  # paths, as a kernel update gives: the initrds differ in content too
  # (a marker naming the variant), the kernels are copies (with a README
  # naming the generation: no two paths share a NAR).
  trialSystem = variant: gen:
    let
      bb = builtins.path { path = /. + guests.x86_64; name = "busybox-static-x86_64"; };
      linux = mk "linux-6.1-lab-gen${gen}" ''
        mkdir -p $out
        cp ${builtins.path { path = /. + trial.kernel; name = "vmlinuz-lab"; }} $out/bzImage
        echo "lab kernel of generation ${gen}" > $out/README
      '';
      initrd = mk "initrd-lab-${variant}" ''
        mkdir -p $out
        cp ${builtins.path { path = /. + trial.initrds.${variant}; name = "initrd-lab-${variant}.gz"; }} $out/initrd
      '';
    in mk "nixos-system-lab-x86_64-trial-${variant}" ''
      mkdir -p $out/bin
      gbb=${bb}/bin/busybox
      subst() { sed -e "s|@bb@|$gbb|g" -e "s|@out@|$out|g" -e "s|@variant@|${variant}|g" "$1" > "$2"; }
      subst ${./trial-switch.sh} $out/bin/switch-to-configuration
      subst ${./trial-init.sh} $out/init
      printf '#!%s sh\necho "lab system: activate $*"\n' $gbb > $out/activate
      chmod 0555 $out/bin/switch-to-configuration $out/init $out/activate
      echo "25.05.lab-trial-${variant}" > $out/nixos-version
      echo "x86_64-linux" > $out/system
      ln -s ${linux}/bzImage $out/kernel
      ln -s ${initrd}/initrd $out/initrd
      echo "console=ttyS0 panic=5 loglevel=4" > $out/kernel-params
      ln -s ${swOld} $out/sw
    '';
  trialSystems = if trial == null then { } else {
    x86_64-trial-v1 = trialSystem "v1" "1";
    x86_64-trial-good = trialSystem "good" "2";
    x86_64-trial-panic = trialSystem "panic" "2";
    x86_64-trial-hang = trialSystem "hang" "2";
  };
in
  trialSystems //
  builtins.foldl' (acc: a: acc // perArch a) { } (builtins.attrNames guests)
  // {
    rss-64m = payload 64 "fh-lite-lab-rss-64m";
    rss-512m = payload 512 "fh-lite-lab-rss-512m";
    rss-many = many;
  }
