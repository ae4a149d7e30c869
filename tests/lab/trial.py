"""`scripts/lab trialboot`: trial boots on a UEFI machine (tests/lab/README.md).

x86_64 under qemu with Debian's OVMF (code read-only, a per-VM copy of the
variable store) and systemd-boot on an ESP image made with mkfs.vfat and
mtools. Generation 1 is installed by fh-lite in the machine's first boot;
generation 2 changes the kernel and initrd (so it needs a reboot) and is
one of:

  good    boots and passes its health check
  panic   its initrd exits: kernel panic, `panic=5` reboots the machine
  hang    its init arms the i6300esb watchdog and never feeds it: a reset

Scenarios (each from the installed generation 1, on copies of its disks):

  good      2 boots, passes, is committed: the default is 2
  panic     back on 1 by itself; fh-lite records "did not boot"; the timer
            run after it does not retry it; the default is 1
  hang      as panic, through the watchdog
  powercut  SIGKILL of qemu at a random moment of 2's first boot (seed
            printed), then a boot: back on 1 with 2 recorded failed, or on
            2 committed; never a default that has not booted
  cut-preparing
            SIGKILL of qemu inside fh-lite's step 2, after the pin and
            before the one-shot: generation 2's `boot` (trial-switch.sh,
            with lab.stall-switch=good on fw_cfg) says LAB-SWITCH-STALL and
            stalls, and the lab cuts then; the next boot comes up on 1,
            confirm-boot undoes the trial (not "did not boot": the path is
            not failed), the default is 1; that boot runs no timer apply
            (lab.timer=off), which would only try the trial again
  cut-held  SIGKILL of qemu as soon as the ESP image shows loader.conf's
            default set back to generation 1 after generation 2's `boot`
            (which says LAB-SWITCH-END with lab.announce-switch=good) had
            set it to 2: fh-lite's hold, then maybe its journal or the
            one-shot; the next boot is back on 1 with the trial undone or
            failed, or on 2 committed

In the guest: the first boot of a scenario runs `fh-lite apply ... --trial
--reboot if-needed --boot-loader systemd-boot --health-check /lab/health`,
which reboots through `systemctl --no-block reboot` (the lab's systemctl
queues the reboot for when the run ends); every boot first runs `fh-lite
confirm-boot` as the boot-time unit does; every later boot runs the timer's
apply, writes `status --json`, and powers off. qemu stays up across the
guest's reboots: one serial log per VM run, its boots split at OVMF's
"BdsDxe: starting".

The judge reads, from the host, after the last clean power-off: the
generation the last boot came up on (serial log: stage 1's `LAB-BOOT
init=`), the persistent default (the variable store's live, non-deleted
`LoaderEntryDefault` of systemd-boot's vendor GUID, parsed from the OVMF
vars copy; else loader.conf's `default` on the ESP, read with mtype), and
what fh-lite's state records (state.json and status --json, via debugfs).
loader.conf is also read when the trial apply has armed the one-shot (the
guest syncs, says LAB-TRIAL-APPLIED and waits 3 s before it reboots) and at
every cut: while generation 2 is untried it must never be loader.conf's
`default` (firmware that loses the EFI variables written at run time would
boot it without the pin).
"""
import json
import os
import queue
import random
import re
import shutil
import signal
import struct
import subprocess
import time
import uuid

ARCH = "x86_64"
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
VARIANTS = ("v1", "good", "panic", "hang")
SCENARIOS = ("good", "panic", "hang", "powercut", "cut-preparing", "cut-held")
TARGET = {"good": "good", "panic": "panic", "hang": "hang", "powercut": "good", "cut-preparing": "good",
          "cut-held": "good"}
CUTS = ("cut-preparing", "cut-held")
# Extra lab arguments (fw_cfg) of a scenario's first VM run and of the one
# after its cut.
FIRST_ARGS = {"cut-preparing": "lab.stall-switch=good", "cut-held": "lab.announce-switch=good"}
AFTER_ARGS = {"cut-preparing": "lab.timer=off", "cut-held": "lab.timer=off"}
ENTRY2 = "nixos-generation-2.conf"

# The panic variant's stage 1: it exits, the kernel panics ("Attempted to
# kill init"), and `panic=5` on its command line reboots the machine.
PANIC_STAGE1 = r"""#!/bin/busybox sh
/bin/busybox echo "LAB-STAGE1-PANIC this initrd exits"
exit 1
"""

# The guest's side (trial images only).
TRIAL_RUN = r"""#!/bin/sh
# A trial-boot scenario across the reboots of one VM run: the first boot
# applies with --trial (fh-lite reboots through systemctl); every later
# boot runs the timer.
step=/var/lib/lab/trial-step
if [ ! -e $step ]; then
    echo applied > $step.tmp && sync && mv $step.tmp $step && sync
    echo "LAB-RUN-START $1 trial"
    if [ -x /lab/by-hand ]; then
        /lab/by-hand "$1"
        echo "LAB-RUN-EXIT $?"
    else
        fh-lite apply nixos "org/lab/0.1#nixosConfigurations.$1" switch $(cat /lab/args-trial)
        rc=$?
        echo "LAB-RUN-EXIT $rc"
        if [ $rc = 40 ] && [ ! -e /run/lab-reboot ]; then
            # Under --root fh-lite arms the trial boot but leaves the reboot
            # to a later run or the operator (exit 40): the operator reboots.
            echo "LAB-REBOOT-BY-HAND after exit 40 (the trial is armed, the reboot left to us)"
            : > /run/lab-reboot
        fi
    fi
    # The ESP as the trial left it, for the lab to read before the reboot.
    sync
    echo "LAB-TRIAL-APPLIED"
    sleep 3
else
    /lab/trial-timer "$1"
fi
"""

TRIAL_TIMER = r"""#!/bin/sh
# The timer's run after the trial boot, as a device's timer runs it (not
# with lab.timer=off among the lab's arguments).
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/fh-lite-lab/cmdline/raw
if [ ! -x /lab/by-hand ] && ! grep -qw "lab.timer=off" $fw 2>/dev/null; then
    echo "LAB-RUN-START $1 timer"
    fh-lite apply nixos "org/lab/0.1#nixosConfigurations.$1" switch $(cat /lab/args-trial)
    echo "LAB-RUN-EXIT $?"
fi
fh-lite status --json --root / > /var/lib/lab/status.json.tmp && mv /var/lib/lab/status.json.tmp /var/lib/lab/status.json
echo "LAB-STATUS $(tr -d '\n' < /var/lib/lab/status.json)"
sync
"""

BOOT_CONFIRM = r"""#!/bin/sh
# What fh-lite-confirm-boot.service runs at every boot.
echo "LAB-CONFIRM-START"
fh-lite confirm-boot $(cat /lab/args-confirm)
echo "LAB-CONFIRM-EXIT $?"
"""

SYSTEMCTL = r"""#!/bin/sh
# The lab's systemctl: `systemctl [--no-block] reboot` queues a reboot that
# the lab's init does when the running step has ended (as systemd stops
# the unit, then reboots); nothing else.
for a in "$@"; do
    case "$a" in
        reboot) echo "LAB-REBOOT-REQUESTED $*"; : > /run/lab-reboot; exit 0 ;;
    esac
done
echo "lab systemctl: not supported here: $*" >&2
exit 1
"""

# `--by-hand`: the machine without fh-lite's trial boot -- an apply of
# `boot` (profile, entries, loader.conf's default on 2), then the script
# itself pins LoaderEntryDefault on 1 and arms LoaderEntryOneShot for 2
# through efivarfs and reboots: checks the lab (firmware, loader, the
# variants, the judge's reading of the variable store), not fh-lite.
BY_HAND = r"""#!/bin/sh
efivar() { # efivar NAME VALUE: a systemd-boot variable, NV+BS+RT
    f=/sys/firmware/efi/efivars/$1-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
    printf '\007\000\000\000' > /tmp/efivar
    printf '%s' "$2" | sed 's/./&\n/g' | while read -r c; do [ -n "$c" ] && printf '%s\000' "$c"; done >> /tmp/efivar
    printf '\000\000' >> /tmp/efivar
    [ -e "$f" ] && chattr -i "$f"
    cat /tmp/efivar > "$f" || echo "LAB-ERROR cannot write $1"
}
fh-lite apply nixos "org/lab/0.1#nixosConfigurations.$1" boot $(cat /lab/args-trial)
echo "by hand: apply boot exit $?"
efivar LoaderEntryDefault nixos-generation-1.conf
efivar LoaderEntryOneShot nixos-generation-2.conf
systemctl --no-block reboot
"""

# --root /: the guest has no nix-daemon and no nix-store (the image
# store); --install-bootloader: under --root, `boot` runs
# switch-to-configuration only with it.
TRIAL_ARGS = "--root / {conn} --health-check /lab/health --activation-timeout 120 " \
             "--install-bootloader --trial --reboot if-needed --boot-loader systemd-boot\n"
CONFIRM_ARGS = "--root / --boot-loader systemd-boot\n"


def trial_files(by_hand=False):
    extra = {"lab/by-hand": BY_HAND, "lab/args-trial": TRIAL_ARGS.split(" --trial")[0] + "\n"} if by_hand else {}
    return {"lab/trial": TRIAL_RUN, "lab/trial-timer": TRIAL_TIMER, "lab/boot-confirm": BOOT_CONFIRM,
            "usr/bin/systemctl": SYSTEMCTL, "lab/args-trial": TRIAL_ARGS,
            "lab/args-confirm": CONFIRM_ARGS, **extra}


# ------------------------------------------------------------------ the ESP

def mtools(*cmd, capture=False):
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    r = subprocess.run(list(cmd), env=env, capture_output=True)
    if r.returncode != 0:
        if capture:
            return None
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def make_esp(L, path, kernel, initrd, size_mb=96):
    """The ESP: FAT (mkfs.vfat -C), systemd-boot as the removable-media
    loader, and an installer entry booting the lab's stage 1 without
    `init=` (so it runs /lab/init on the fresh root disk)."""
    if os.path.exists(path):
        os.unlink(path)
    L.run(["mkfs.vfat", "-C", "-n", "ESP", path, str(size_mb * 1024)], capture_output=True)
    mtools("mmd", "-i", path, "::/EFI", "::/EFI/BOOT", "::/EFI/lab", "::/loader", "::/loader/entries")
    mtools("mcopy", "-i", path, L.SYSTEMD_BOOT, "::/EFI/BOOT/BOOTX64.EFI")
    mtools("mcopy", "-i", path, kernel, "::/EFI/lab/vmlinuz.efi")
    mtools("mcopy", "-i", path, initrd, "::/EFI/lab/initrd.efi")
    tmp = path + ".txt"
    with open(tmp, "w") as f:
        f.write("title lab installer\nlinux /EFI/lab/vmlinuz.efi\ninitrd /EFI/lab/initrd.efi\n"
                "options console=ttyS0 panic=5 loglevel=4\n")
    mtools("mcopy", "-i", path, tmp, "::/loader/entries/lab-installer.conf")
    with open(tmp, "w") as f:
        f.write("timeout 0\ndefault lab-installer.conf\n")
    mtools("mcopy", "-i", path, tmp, "::/loader/loader.conf")
    os.unlink(tmp)


def esp_text(esp, name):
    out = mtools("mtype", "-i", esp, "::" + name, capture=True)
    return None if out is None else out.decode(errors="replace")


def conf_value(text, key):
    for line in (text or "").splitlines():
        w = line.split(None, 1)
        if len(w) == 2 and w[0] == key:
            return w[1].strip()
    return None


# ------------------------------------------------------------------ OVMF's variable store

AUTH_STORE = uuid.UUID("aaf32c78-947b-439a-a180-2e144ec37792").bytes_le
PLAIN_STORE = uuid.UUID("ddcf3616-3275-4164-98b6-fe85707ffe7d").bytes_le
VAR_ADDED, VAR_IN_DELETED_TRANSITION = 0x3F, 0xFE


def efi_variables(data):
    """The variables of an OVMF variable store (the VARS flash image): a
    firmware volume header, a variable store header, then 4-byte aligned
    variables, each with a header (StartId 0x55AA, State, Attributes, the
    name's and data's sizes, the vendor GUID; the authenticated format adds
    a monotonic count, a timestamp and a key index), its UTF-16LE name and
    its data. Returns (name, guid, state, attributes, data) in store order."""
    if data[40:44] != b"_FVH":
        raise ValueError("no firmware volume header (_FVH) at offset 40")
    hl = struct.unpack_from("<H", data, 48)[0]
    sig = data[hl:hl + 16]
    if sig not in (AUTH_STORE, PLAIN_STORE):
        raise ValueError("unknown variable store signature")
    auth = sig == AUTH_STORE
    size = struct.unpack_from("<I", data, hl + 16)[0]
    off, end = hl + 28, min(hl + size, len(data))
    out = []
    while off + 32 <= end:
        start, st, _, attr = struct.unpack_from("<HBBI", data, off)
        if start != 0x55AA:
            break
        if auth:
            ns, ds = struct.unpack_from("<II", data, off + 36)
            guid, h = data[off + 44:off + 60], 60
        else:
            ns, ds = struct.unpack_from("<II", data, off + 8)
            guid, h = data[off + 16:off + 32], 32
        name = data[off + h:off + h + ns].decode("utf-16-le", errors="replace").rstrip("\0")
        value = data[off + h + ns:off + h + ns + ds]
        out.append((name, str(uuid.UUID(bytes_le=guid)), st, attr, value))
        off = (off + h + ns + ds + 3) & ~3
    return out


def live_variable(variables, name, guid=LOADER_GUID):
    """The value of NAME as the firmware sees it: the copy in state ADDED,
    else one caught in deletion transition (still valid when no ADDED copy
    exists); a deleted one is gone."""
    added = [v for n, g, st, _, v in variables if n == name and g == guid and st == VAR_ADDED]
    if added:
        return added[-1]
    trans = [v for n, g, st, _, v in variables
             if n == name and g == guid and st == VAR_ADDED & VAR_IN_DELETED_TRANSITION]
    return trans[-1] if trans else None


def utf16z(value):
    return value.decode("utf-16-le", errors="replace").split("\0", 1)[0] if value is not None else None


# ------------------------------------------------------------------ serial logs

def segments(lines):
    """One VM run's serial log split into its boots (at OVMF's "BdsDxe:
    starting"): what each boot came up on and what it did."""
    segs = []
    started = False
    for line in lines:
        if not segs or ("BdsDxe: starting" in line and started):
            segs.append({"lines": []})
            started = False
        started = started or "BdsDxe: starting" in line
        segs[-1]["lines"].append(line)
    for s in segs:
        text = s["lines"]

        def marker(m, text=text):
            return [l.split(m, 1)[1].strip() for l in text if m in l]
        inits = marker("LAB-BOOT init=")
        s["init"] = inits[-1].rsplit("/init", 1)[0] if inits else None
        s["initrd"] = (marker("LAB-INITRD") or [None])[-1]
        s["system"] = (marker("LAB-SYSTEM") or [None])[-1]
        s["panic"] = any("Kernel panic" in l for l in text)
        s["stage1_panic"] = bool(marker("LAB-STAGE1-PANIC"))
        s["hang"] = bool(marker("LAB-HANG"))
        s["reboot_requested"] = bool(marker("LAB-REBOOT-REQUESTED"))
        s["reboot_by_hand"] = bool(marker("LAB-REBOOT-BY-HAND"))
        s["confirm"] = marker("LAB-CONFIRM-EXIT")
        s["runs"] = list(zip(marker("LAB-RUN-START"), marker("LAB-RUN-EXIT")))
        s["done"] = bool(marker("LAB-DONE"))
        s["errors"] = marker("LAB-ERROR") + [f"broken entry {e}" for e in marker("LAB-BOOT-ENTRY-BROKEN")]
    return segs


def describe(segs, names):
    out = []
    for i, s in enumerate(segs, 1):
        what = names.get(s["init"], s["init"]) if s["init"] else \
            ("the panic initrd" if s["stage1_panic"] else "no system")
        bits = [f"boot {i}: {what}"]
        if s["initrd"]:
            bits.append(f"initrd {s['initrd']}")
        if s["panic"]:
            bits.append("kernel panic")
        if s["hang"]:
            bits.append("hung (watchdog armed)")
        if s["confirm"]:
            bits.append(f"confirm-boot exit {','.join(s['confirm'])}")
        for start, code in s["runs"]:
            bits.append(f"{start.split()[-1]} run exit {code}")
        if s["reboot_requested"]:
            bits.append("fh-lite asked systemctl to reboot")
        if s["reboot_by_hand"]:
            bits.append("rebooted by the lab (apply exit 40)")
        if s["done"]:
            bits.append("powered off")
        out.append(", ".join(bits))
    return out


# ------------------------------------------------------------------ the lab

class TrialLab:
    def __init__(self, L, keep, seed, by_hand=False):
        self.L = L
        self.by_hand = by_hand
        self.keep = keep
        cache = os.path.join(L.LAB_TOOLS, "initrd")
        self.installer_initrd = L.initramfs(ARCH, cache, L.EFI_MODULES, marker="installer")
        initrds = {}
        for v in VARIANTS:
            initrds[v] = L.initramfs(ARCH, cache, L.EFI_MODULES, marker=f"trial-{v}",
                                     script=PANIC_STAGE1 if v == "panic" else None)
        self.kernel, _ = L.kernel(ARCH)
        attrs = [f"{ARCH}-trial-{v}" for v in VARIANTS]
        fixdir = os.path.join(L.REPO, "target/lab-fixtures-trial")
        self.lab = L.Lab(ARCH, keep, attrs=attrs, fixdir=fixdir,
                         trial={"kernel": self.kernel, "initrds": initrds})
        self.paths = {v: self.lab.fixtures["paths"][f"{ARCH}-trial-{v}"] for v in VARIANTS}
        self.names = {p: v for v, p in self.paths.items()}
        self.limit = 900
        self.seed = seed
        self.vms = 0

    def vm(self, root, esp, vars_fd, run_name, target, tag, extra=""):
        """Start a VM run of the UEFI machine (qemu up across reboots)."""
        L = self.L
        self.vms += 1
        log = os.path.join(self.lab.work, f"vm-{self.vms:02d}-{tag}.log")
        b = L.Boot(ARCH, root, run_name, target, log, self.lab.accel, self.limit,
                   efi={"esp": esp, "vars": vars_fd}, extra=extra)
        self.lab.boots_all.append(b)
        return b

    def through(self, b, max_boots, on=None):
        """Wait for the VM run's clean power-off; a run that boots more than
        MAX_BOOTS times (a loop) or overruns the limit is cut and fails.
        ON: {marker: function(rest)} called as markers arrive."""
        end = time.monotonic() + self.limit
        while True:
            left = end - time.monotonic()
            if left <= 0:
                b.power_cut()
                raise self.L.LabError(f"the VM run did not end within {self.limit} s "
                                      f"(serial log {b.log_path}):\n" + "\n".join(b.lines[-15:]))
            try:
                ev, rest, _ = b.events.get(timeout=left)
            except queue.Empty:
                continue
            if on and ev in on:
                on[ev](rest)
            if ev == "FIRMWARE" and int(rest) > max_boots:
                b.power_cut()
                raise self.L.LabError(f"the machine booted more than {max_boots} times in one run "
                                      f"(serial log {b.log_path}):\n  "
                                      + "\n  ".join(describe(segments(b.lines), self.names)))
            if ev == "EOF":
                b.finish(30)
                return b

    def install(self):
        """Generation 1, installed by fh-lite in the machine's first boot
        (the installer entry), whose switch-to-configuration writes the
        systemd-boot entry and loader.conf's default."""
        L, lab = self.L, self.lab
        base = {k: os.path.join(lab.work, f"base-{k}") for k in ("root.img", "esp.img", "vars.fd")}
        L.make_image(ARCH, base["root.img"], lab.exe, lab.hub, lab.fixtures, files=trial_files(self.by_hand))
        make_esp(L, base["esp.img"], self.kernel, self.installer_initrd)
        shutil.copy(L.OVMF_VARS, base["vars.fd"])
        t = time.monotonic()
        b = self.through(self.vm(base["root.img"], base["esp.img"], base["vars.fd"], "apply",
                                 f"{ARCH}-trial-v1", "install-v1"), 1)
        exits = b.marker("LAB-RUN-EXIT")
        if exits[-1:] not in (["0"], ["40"]) or "LAB-DONE" not in "\n".join(b.lines):
            raise L.LabError(f"installing generation 1 failed (apply exit {exits}; serial log "
                             f"{b.log_path}):\n" + "\n".join(b.lines[-20:]))
        conf = esp_text(base["esp.img"], "/loader/loader.conf")
        if conf_value(conf, "default") != "nixos-generation-1.conf":
            raise L.LabError(f"after installing generation 1, loader.conf is {conf!r}")
        L.say(f"{ARCH}: generation 1 installed by fh-lite through OVMF + systemd-boot "
              f"({time.monotonic() - t:.0f} s wall, {lab.accel})")
        return base

    def copies(self, base, name):
        d = os.path.join(self.lab.work, name)
        os.makedirs(d, exist_ok=True)
        out = {}
        for k, p in base.items():
            out[k] = os.path.join(d, k)
            self.L.run(["cp", "--sparse=always", p, out[k]])
        return out

    def snapshot(self, d, variant, when):
        """The boot loader's view now (what the next boot follows): the
        variables, loader.conf's default, and fh-lite's record."""
        L = self.L
        with open(d["vars.fd"], "rb") as f:
            try:
                variables = efi_variables(f.read())
            except ValueError:
                variables = []
        snap = {"when": when,
                "LoaderEntryDefault": utf16z(live_variable(variables, "LoaderEntryDefault")),
                "LoaderEntryOneShot": utf16z(live_variable(variables, "LoaderEntryOneShot")),
                "loader.conf": conf_value(esp_text(d["esp.img"], "/loader/loader.conf"), "default")}
        return snap

    def record_at_cut(self, d, variant, cut):
        """fh-lite's record after a cut (the journal replayed, as the next
        mount does)."""
        L = self.L
        L.replay_journal(d["root.img"])
        st = L.parse_json(L.read_file(d["root.img"], "/var/lib/fh-lite/state.json") or b"") or {}
        ltb = st.get("last_trial_boot") if isinstance(st.get("last_trial_boot"), dict) else {}
        cut["committed"] = ltb.get("store_path") == self.paths[variant] and ltb.get("result") == "committed"
        cut["trial_phase"] = (st.get("trial_boot") or {}).get("phase") if isinstance(st.get("trial_boot"), dict) else None

    def scenario(self, name, base, calib):
        """Run one scenario from copies of the installed machine; returns its
        summary entry and the boot durations it measured."""
        L = self.L
        variant = TARGET[name]
        target = f"{ARCH}-trial-{variant}"
        d = self.copies(base, name)
        t0 = time.monotonic()
        vms, cut = [], None
        # loader.conf (and the variables) once the trial apply armed the
        # one-shot, before the reboot.
        samples = []
        on = {"LAB-TRIAL-APPLIED": lambda _rest: samples.append(self.snapshot(d, variant, "trial applied"))}
        b = self.vm(d["root.img"], d["esp.img"], d["vars.fd"], "trial", target, name,
                    extra=FIRST_ARGS.get(name, ""))
        vms.append(b)
        if name in CUTS:
            # cut-preparing: generation 2's `boot` stalls inside fh-lite's
            # step 2: cut then. cut-held: it returned; cut when the ESP
            # image shows loader.conf's default back on generation 1.
            marker = "LAB-SWITCH-STALL" if name == "cut-preparing" else "LAB-SWITCH-END"
            end = time.monotonic() + self.limit
            seen = None
            while time.monotonic() < end:
                try:
                    ev, rest, tm = b.events.get(timeout=end - time.monotonic())
                except queue.Empty:
                    break
                if ev == marker:
                    seen = tm
                    break
                if ev == "EOF":
                    break
            held = None
            if seen is not None and name == "cut-held":
                while time.monotonic() < end and b.proc.poll() is None:
                    conf = esp_text(d["esp.img"], "/loader/loader.conf")
                    if conf_value(conf, "default") == "nixos-generation-1.conf":
                        held = time.monotonic()
                        break
                    time.sleep(0.02)
            b.power_cut()
            if seen is None or (name == "cut-held" and held is None):
                raise L.LabError(f"{name}: no {marker}{'' if seen is None else ' then loader.conf on 1'} "
                                 f"(serial log {b.log_path}):\n  "
                                 + "\n  ".join(describe(segments(b.lines), self.names)))
            cut = self.snapshot(d, variant, "cut in step 2" if name == "cut-preparing"
                                else "cut after loader.conf was held")
            cut["at_s"] = round(seen - b.t0, 1)
            if held is not None:
                cut["held_after_s"] = round(held - seen, 2)
            self.record_at_cut(d, variant, cut)
            L.say(f"{ARCH}: {name}: qemu killed {'while generation 2' if name == 'cut-preparing' else 'after generation 2'}"
                  f"'s switch-to-configuration boot {'stalled' if name == 'cut-preparing' else 'returned and loader.conf was held'}"
                  f" (journal phase at the cut: {cut['trial_phase']})")
            b = self.vm(d["root.img"], d["esp.img"], d["vars.fd"], "trial", target, name + "-after",
                        extra=AFTER_ARGS.get(name, ""))
            vms.append(b)
        if name == "powercut":
            rng = random.Random(self.seed)
            span = calib or 45.0
            at = rng.uniform(0.0, span)
            # Wait for OVMF's second start: generation 2's first boot.
            end = time.monotonic() + self.limit
            started = None
            while time.monotonic() < end:
                try:
                    ev, rest, tm = b.events.get(timeout=end - time.monotonic())
                except queue.Empty:
                    break
                if ev in on:
                    on[ev](rest)
                if ev == "FIRMWARE" and rest == "2":
                    started = tm
                    break
                if ev == "EOF":
                    break
            if started is None:
                b.power_cut()
                raise L.LabError(f"powercut: generation 2's boot never started (serial log {b.log_path}):\n  "
                                 + "\n  ".join(describe(segments(b.lines), self.names)))
            time.sleep(max(0.0, started + at - time.monotonic()))
            ended = b.proc.poll() is not None
            b.power_cut()
            # The boot loader's view at the moment of the cut (what the next
            # boot will follow), and fh-lite's record then.
            cut = {"seed": self.seed, "at_s": round(at, 2), "span_s": round(span, 1),
                   "after_end": ended, **self.snapshot(d, variant, "cut in 2's first boot")}
            self.record_at_cut(d, variant, cut)
            L.say(f"{ARCH}: powercut: seed {self.seed}: qemu killed {at:.1f} s into generation 2's "
                  f"first boot (of ~{span:.0f} s){' (the run had already ended)' if ended else ''}")
            b = self.vm(d["root.img"], d["esp.img"], d["vars.fd"], "trial", target, name + "-after")
            vms.append(b)
        self.through(b, 4, on=on)
        wall = time.monotonic() - t0
        entry = self.judge(name, variant, d, vms)
        entry["wall_s"] = round(wall)
        entry["loader_conf_during_trial"] = samples
        n_judged = len(entry["problems"])
        # Generation 2 untried: neither the persistent default nor
        # loader.conf's default may name it.
        for snap in samples:
            if snap["loader.conf"] == ENTRY2:
                entry["problems"].append(f"{snap['when']}: loader.conf's default is {ENTRY2}, "
                                         f"which has not booted yet")
        if name not in CUTS and not samples:
            entry["problems"].append("no reading of loader.conf after the trial apply (no LAB-TRIAL-APPLIED)")
        if cut:
            entry["cut"] = cut
            eff = cut["LoaderEntryDefault"] or cut["loader.conf"]
            if eff and eff != "nixos-generation-1.conf" and not cut["committed"]:
                entry["problems"].append(f"at the cut the persistent default was {eff}, not yet committed")
            if cut["loader.conf"] == ENTRY2 and not cut["committed"]:
                entry["problems"].append(f"at the cut loader.conf's default was {ENTRY2}, not yet committed")
        if name == "cut-preparing":
            if cut["trial_phase"] != "preparing" or cut["LoaderEntryDefault"] != "nixos-generation-1.conf" \
                    or cut["LoaderEntryOneShot"]:
                entry["problems"].append(
                    f"cut-preparing: the cut was not between the pin and the one-shot (journal phase "
                    f"{cut['trial_phase']}, LoaderEntryDefault {cut['LoaderEntryDefault']}, "
                    f"LoaderEntryOneShot {cut['LoaderEntryOneShot']})")
        if entry["problems"]:
            entry["verdict"] = "FAIL"
        if entry["problems"][n_judged:]:
            L.say(f"{ARCH}: trialboot {name}: more problems:\n    " + "\n    ".join(entry["problems"][n_judged:]))
        # Generation 2's first boot, for the power cut's span.
        segs = segments(vms[0].lines)
        second = None
        if len(segs) >= 2:
            starts = [t for l, t in zip(vms[0].lines, vms[0].times) if "BdsDxe: starting" in l]
            if len(starts) >= 2:
                second = vms[0].times[-1] - starts[1]
        if self.keep:
            kd = os.path.join(self.keep, name)
            os.makedirs(kd, exist_ok=True)
            for v in vms:
                shutil.copy(v.log_path, kd)
            for k, p in d.items():
                shutil.copy(p, os.path.join(kd, k))
        shutil.rmtree(os.path.dirname(d["root.img"]), ignore_errors=True)
        return entry, second

    def judge(self, name, variant, d, vms):
        L = self.L
        bad = []
        v1, new = self.paths["v1"], self.paths[variant]
        gen = {v1: 1, new: 2}
        segs_all = [segments(v.lines) for v in vms]
        story = [f"VM run {i}: {s}" for i, segs in enumerate(segs_all, 1) for s in describe(segs, self.names)]
        final = segs_all[-1]
        last = final[-1]
        for segs in segs_all:
            for s in segs:
                for e in s["errors"]:
                    bad.append(f"guest error: {e}")
        if not last["done"]:
            bad.append("the last boot did not reach its clean power-off")

        # The generation the last boot came up on.
        booted = gen.get(last["init"])
        if booted is None:
            bad.append(f"the last boot came up on {last['init']}, neither generation 1 nor 2")

        # The persistent default: LoaderEntryDefault (live) overrides loader.conf.
        with open(d["vars.fd"], "rb") as f:
            try:
                variables = efi_variables(f.read())
            except ValueError as e:
                variables = []
                bad.append(f"the OVMF variable store does not parse: {e}")
        var_default = utf16z(live_variable(variables, "LoaderEntryDefault"))
        oneshot = utf16z(live_variable(variables, "LoaderEntryOneShot"))
        conf = esp_text(d["esp.img"], "/loader/loader.conf")
        conf_default = conf_value(conf, "default")
        effective = var_default or conf_default
        default, default_sys = None, None
        entry_text = esp_text(d["esp.img"], f"/loader/entries/{effective}") if effective else None
        if entry_text is None:
            bad.append(f"the default entry {effective} is not on the ESP")
        else:
            m = re.search(r"\binit=(\S+)/init\b", entry_text)
            default_sys = m.group(1) if m else None
            default = gen.get(default_sys)
            if default is None:
                bad.append(f"the default entry {effective} boots {default_sys}")
        if oneshot:
            bad.append(f"a one-shot boot of {oneshot} is still armed at the end")

        # What fh-lite's state records (the disk after its clean power-off).
        L.replay_journal(d["root.img"])
        state = L.parse_json(L.read_file(d["root.img"], "/var/lib/fh-lite/state.json") or b"")
        status = L.parse_json(L.read_file(d["root.img"], "/var/lib/lab/status.json") or b"")
        # state.json: `last_trial_boot` {store_path, result: committed |
        # did-not-boot | health-check-failed | undone}, `failed` [{store_path,
        # result}], `trial_boot` while one is in progress.
        recorded = "nothing"
        state = state or {}
        failed = [f for f in (state.get("failed") or []) if isinstance(f, dict) and f.get("store_path") == new]
        ltb = state.get("last_trial_boot") if isinstance(state.get("last_trial_boot"), dict) else {}
        if not state:
            bad.append("no (or an unparsable) /var/lib/fh-lite/state.json")
        elif ltb.get("store_path") == new and ltb.get("result") == "committed" and not failed:
            recorded = "committed"
        elif failed:
            recorded = f"failed: {failed[-1].get('result')}"
        elif ltb:
            recorded = f"last trial boot: {ltb.get('result')} of {self.names.get(ltb.get('store_path'), ltb.get('store_path'))}"
        else:
            recorded = f"no trial boot recorded; last attempt: {(state.get('last_attempt') or {}).get('result')}"
        for key in ("trial_boot", "pending"):
            if state.get(key) is not None:
                p = state[key]
                recorded += f" ({key}: {p.get('phase') if isinstance(p, dict) else '?'})"
                bad.append(f"state.json still has `{key}` at the end")
        if (status or {}).get("trial_boot") is not None:
            bad.append("status --json still shows a trial boot in progress")
        if status is None:
            bad.append("no status --json from the last boot")
        elif (status.get("last_attempt") or {}).get("result") == "running":
            bad.append("status --json's last_attempt is still `running` at the end")
        r = subprocess.run(["e2fsck", "-fn", d["root.img"]], capture_output=True, text=True)
        if r.returncode != 0:
            bad.append(f"e2fsck -fn finds errors: {r.stdout.strip()[-300:]}")

        # Never a persistent default that has not booted and passed.
        booted_new = any(s["init"] == new for segs in segs_all for s in segs)
        if default == 2 and not (booted_new and recorded == "committed"):
            bad.append(f"the default is generation 2, which {'booted but is not committed' if booted_new else 'never booted'}")
        if booted is not None and default is not None and booted != default:
            bad.append(f"the machine runs generation {booted} but the default is {default}")

        first = final[0] if len(vms) == 1 else segs_all[0][0]
        if gen.get(first["init"]) != 1:
            bad.append(f"the scenario's first boot came up on {first['init']}, not generation 1")
        if name not in CUTS and not first["reboot_requested"] and not first["reboot_by_hand"]:
            bad.append(f"the trial apply did not arm a reboot (runs: {first['runs']})")
        if name == "good":
            if booted != 2 or default != 2 or recorded != "committed":
                bad.append(f"good: wanted generation 2 booted, default and committed")
            if len(final) != 2:
                bad.append(f"good: {len(final)} boots, wanted 2")
            elif final[1]["confirm"][-1:] != ["0"]:
                bad.append(f"good: confirm-boot on generation 2 exited {final[1]['confirm']}, wanted 0 (committed)")
        elif name in ("panic", "hang"):
            if booted != 1 or default != 1:
                bad.append(f"{name}: wanted back on generation 1 with the default on 1")
            if "did-not-boot" not in recorded:
                bad.append(f"{name}: fh-lite recorded {recorded!r}, wanted generation 2 failed with did-not-boot")
            tried = [s for s in final if s["init"] == new or s["stage1_panic"]]
            if name == "panic" and not any(s["panic"] and s["stage1_panic"] for s in final):
                bad.append("panic: no boot of generation 2 panicked")
            if name == "hang" and not any(s["hang"] for s in final):
                bad.append("hang: no boot of generation 2 hung")
            if len(tried) != 1:
                bad.append(f"{name}: generation 2 was booted {len(tried)} times, wanted once")
            if last["confirm"][-1:] != ["36"]:
                bad.append(f"{name}: confirm-boot back on generation 1 exited {last['confirm']}, wanted 36 (did not boot)")
            if last["reboot_requested"] or last["reboot_by_hand"]:
                bad.append(f"{name}: the last boot's timer run asked for a reboot again")
            if not last["runs"] or last["runs"][-1][1] != "34":
                bad.append(f"{name}: the timer run after the fallback: {last['runs']}, wanted exit 34 (skipped-failed)")
        elif name == "cut-preparing":
            # Cut before the one-shot: the next boot undoes the trial.
            if booted != 1 or default != 1:
                bad.append(f"{name}: wanted back on generation 1 with the default on 1")
            if failed:
                bad.append(f"{name}: generation 2 was recorded failed ({recorded}); the trial never armed")
            if ltb.get("store_path") != new or ltb.get("result") != "undone":
                bad.append(f"{name}: fh-lite recorded {recorded!r}, wanted the trial of generation 2 undone")
            if any(s["init"] == new or s["stage1_panic"] for segs in segs_all for s in segs):
                bad.append(f"{name}: generation 2 was booted")
            if last["confirm"][-1:] != ["0"]:
                bad.append(f"{name}: confirm-boot after the cut exited {last['confirm']}, wanted 0 (undone)")
        elif name == "cut-held":
            # Cut after the hold: undone (phase preparing), or the one-shot
            # armed: 2 boots once and is committed (or, cut in its boot,
            # did not boot).
            if booted == 2 and recorded != "committed":
                bad.append(f"{name}: on generation 2 but fh-lite recorded {recorded!r}")
            if booted == 1 and (ltb.get("store_path") != new
                                or ltb.get("result") not in ("undone", "did-not-boot")):
                bad.append(f"{name}: back on generation 1 but fh-lite recorded {recorded!r}")
        elif name == "powercut":
            if booted == 2 and recorded != "committed":
                bad.append(f"powercut: on generation 2 but fh-lite recorded {recorded!r}")
            if booted == 1 and "did-not-boot" not in recorded and recorded != "committed":
                bad.append(f"powercut: back on generation 1 but fh-lite recorded {recorded!r}")
        verdict = "ok" if not bad else "FAIL"
        L.say(f"{ARCH}: trialboot {name}: booted {booted}, default {default} "
              f"(LoaderEntryDefault {var_default}, loader.conf {conf_default}), recorded {recorded}: {verdict}\n  "
              + "\n  ".join(story) + ("" if not bad else "\n  problems:\n    " + "\n    ".join(bad)))
        return {"name": name, "booted": booted, "default": default, "recorded": recorded, "verdict": verdict,
                "reason": ltb.get("reason") if ltb.get("store_path") == new else None,
                "default_from": {"LoaderEntryDefault": var_default, "loader.conf": conf_default,
                                 "source": "variable store" if var_default else "loader.conf"},
                "boots": story, "problems": bad,
                "logs": [os.path.basename(v.log_path) for v in vms]}


def cmd_trialboot(args, L):
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    scenarios = args.scenario or list(SCENARIOS)
    tl = TrialLab(L, args.keep, seed, args.by_hand)
    summary = {"arch": ARCH, "accel": tl.lab.accel, "seed": seed, "scenarios": []}
    ok = False
    t_all = time.monotonic()

    def stop(signum, _frame):
        raise L.LabError(f"stopped by signal {signum}")
    # `timeout` sends SIGTERM: the VMs and the stand-in are stopped on the way out.
    signal.signal(signal.SIGTERM, stop)

    def write():
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            with open(os.path.join(args.keep, "summary.json.tmp"), "w") as f:
                json.dump(summary, f, indent=1)
            os.replace(os.path.join(args.keep, "summary.json.tmp"), os.path.join(args.keep, "summary.json"))
    try:
        t = time.monotonic()
        base = tl.install()
        summary["install_s"] = round(time.monotonic() - t)
        calib = None
        for name in scenarios:
            entry, second = tl.scenario(name, base, calib)
            if name == "good" and second:
                calib = second
            summary["scenarios"].append(entry)
            write()
        ok = all(e["verdict"] == "ok" for e in summary["scenarios"])
    except L.LabError as e:
        summary["error"] = str(e)
        raise
    finally:
        for b in tl.lab.boots_all:
            if b.proc.poll() is None:
                b.power_cut()
        write()
        tl.lab.close(ok)
    L.say(f"{ARCH}: trialboot: " + ", ".join(f"{e['name']} {e['verdict']} ({e['wall_s']} s)"
                                               for e in summary["scenarios"])
          + f"; {time.monotonic() - t_all:.0f} s in all")
    return 0 if ok else 1
