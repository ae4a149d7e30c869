#!@bb@ sh
# switch-to-configuration of the lab's trial-boot system @variant@
# (systems.nix): for `boot` and `switch`, what NixOS's systemd-boot builder
# does on an ESP mounted at /boot -- a `nixos-generation-N.conf` entry for
# every generation of the system profile (`linux`, `initrd` copied to
# /EFI/nixos/, `options init=<system>/init <kernel-params>`), loader.conf's
# `default` set to the profile's current generation, stale entries and
# files removed; every file written to a temporary name, synced, renamed.
export PATH=/bin:/usr/bin
action="$1"
mkdir -p /var/log/lab /etc/lab
log() { echo "$*" >> /var/log/lab/switch.log; }
log "start $action @variant@ $$"

# `scripts/lab trialboot --scenario cut-preparing`: with
# lab.stall-switch=@variant@ among the lab's arguments (qemu's fw_cfg),
# this system's `boot` says so on the console and stalls before it writes
# anything, until the lab cuts the power: a cut inside fh-lite's step 2,
# after the pin and before the one-shot.
case "$action" in switch|boot)
    for w in $(cat /sys/firmware/qemu_fw_cfg/by_name/opt/fh-lite-lab/cmdline/raw 2>/dev/null); do
        if [ "$w" = "lab.stall-switch=@variant@" ]; then
            echo "LAB-SWITCH-STALL @variant@ $action" > /dev/console
            while :; do sleep 3600; done
        fi
    done ;;
esac
echo "@out@" > /etc/lab/system.tmp && mv /etc/lab/system.tmp /etc/lab/system

put() { # put SRC DEST: copy, sync, rename
    cp "$1" "$2.tmp" && sync && mv "$2.tmp" "$2"
}

install_bootloader() {
    if ! grep -q " /boot vfat " /proc/mounts; then
        echo "switch-to-configuration: /boot is not a mounted ESP (vfat)" >&2
        return 1
    fi
    mkdir -p /boot/EFI/nixos /boot/loader/entries || return 1
    keep=""
    for link in /nix/var/nix/profiles/system-*-link; do
        [ -L "$link" ] || continue
        gen=${link##*/system-}
        gen=${gen%-link}
        sys=$(readlink -f "$link")
        k=$(readlink -f "$sys/kernel")
        i=$(readlink -f "$sys/initrd")
        kn=$(basename "$(dirname "$k")")-$(basename "$k").efi
        in=$(basename "$(dirname "$i")")-$(basename "$i").efi
        [ -e "/boot/EFI/nixos/$kn" ] || put "$k" "/boot/EFI/nixos/$kn" || return 1
        [ -e "/boot/EFI/nixos/$in" ] || put "$i" "/boot/EFI/nixos/$in" || return 1
        keep="$keep $kn $in"
        e=/boot/loader/entries/nixos-generation-$gen.conf
        {
            echo "title NixOS"
            echo "version Generation $gen NixOS $(cat "$sys/nixos-version")"
            echo "linux /EFI/nixos/$kn"
            echo "initrd /EFI/nixos/$in"
            echo "options init=$sys/init $(cat "$sys/kernel-params")"
            echo "sort-key nixos"
        } > /tmp/lab-entry && put /tmp/lab-entry "$e" || return 1
    done
    cur=$(readlink /nix/var/nix/profiles/system)
    cur=${cur#system-}
    cur=${cur%-link}
    printf 'timeout 0\ndefault nixos-generation-%s.conf\n' "$cur" > /tmp/lab-loader &&
        put /tmp/lab-loader /boot/loader/loader.conf || return 1
    for e in /boot/loader/entries/nixos-generation-*.conf; do
        [ -e "$e" ] || continue
        g=${e##*-generation-}
        g=${g%.conf}
        [ -L "/nix/var/nix/profiles/system-$g-link" ] || rm -f "$e"
    done
    for f in /boot/EFI/nixos/*; do
        [ -e "$f" ] || continue
        case " $keep " in *" ${f##*/} "*) ;; *) rm -f "$f" ;; esac
    done
    sync
}

case "$action" in switch|boot)
    if ! install_bootloader; then
        log "fail $action @variant@ $$"
        exit 1
    fi ;;
esac
case "$action" in switch|test)
    ln -sfn @out@ /run/current-system ;;
esac
sync
log "end $action @variant@ $$"
sync
# `--scenario cut-held`: with lab.announce-switch=@variant@, say on the
# console that this `boot` wrote loader.conf and is returning.
case "$action" in switch|boot)
    for w in $(cat /sys/firmware/qemu_fw_cfg/by_name/opt/fh-lite-lab/cmdline/raw 2>/dev/null); do
        [ "$w" = "lab.announce-switch=@variant@" ] && echo "LAB-SWITCH-END @variant@ $action" > /dev/console
    done ;;
esac
exit 0
