#!/usr/bin/env python3
"""fh-lite's device lab: the static binary on booting machines of three
architectures, in full-system qemu, with real power cuts.

    scripts/lab boot --arch A [--keep DIR]
    scripts/lab apply --arch A [--keep DIR]
    scripts/lab powercut --arch A --cuts N [--seed S] [--keep DIR]
    scripts/lab rss --arch A [--keep DIR]
    scripts/lab smoke [--arch A …]
    scripts/lab trialboot [--keep DIR] [--scenario NAME …] [--seed S]

What a machine is (tests/lab/README.md has the whole story):
- Debian's own kernel of the architecture and a stage 1 initramfs made here
  (busybox-static of the architecture, Debian's virtio/ext4 modules, which
  are modules in Debian's kernels: insmod'ed in dependency order);
- a root disk: ext4 made with `mkfs.ext4 -d` (no loop mounts), holding the
  guest's busybox, fh-lite's static binary, /lab/* scripts, the token and
  the stand-in's CA; read back with debugfs, never mounted on the host;
- the network: qemu user-mode networking with `restrict=on`; the only way
  out is a guestfwd of 10.0.2.100:443 to the FlakeHub stand-in on the
  host's 127.0.0.1.
Stage 1 boots what the boot loader entry /boot/loader/entries/default.conf
names (`init /nix/store/…-system/init`, written by the system's
switch-to-configuration), else /lab/init (a fresh image). The system's init
points /run/current-system at itself and hands over to /lab/init, which
runs /lab/<lab.run> (from the kernel command line), syncs, remounts / read
only and powers off.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import queue
import random
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.environ.get("FH_LITE_TOOLS") or os.path.expanduser("~/.cache/fh-lite-tools")
LAB_TOOLS = os.path.join(TOOLS, "lab")
GUEST_HUB = "10.0.2.100"

ARCHES = {
    "x86_64": {
        "deb": "amd64", "flavour": "amd64", "triple": "x86_64-unknown-linux-musl",
        "qemu": "qemu-system-x86_64", "machine": ["-M", "pc"], "console": "ttyS0",
        "limit": 420,
    },
    "aarch64": {
        "deb": "arm64", "flavour": "arm64", "triple": "aarch64-unknown-linux-musl",
        "qemu": "qemu-system-aarch64", "machine": ["-M", "virt", "-cpu", "cortex-a72"],
        "console": "ttyAMA0", "limit": 300,
    },
    "armv7": {
        "deb": "armhf", "flavour": "armmp-lpae", "triple": "armv7-unknown-linux-musleabihf",
        "qemu": "qemu-system-arm", "machine": ["-M", "virt,highmem=off", "-cpu", "cortex-a15"],
        "console": "ttyAMA0", "limit": 300,
    },
}
# Loaded in stage 1 (with what they depend on): Debian builds them as modules.
MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4"]
# The UEFI machine's stage 1 adds: the ESP (vfat), efivarfs, the emulated
# watchdog, and fw_cfg (the lab's arguments).
EFI_MODULES = ["vfat", "nls_cp437", "nls_ascii", "nls_utf8", "efivarfs", "i6300esb", "qemu_fw_cfg"]
# Debian's ovmf and systemd-boot-efi.
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
SYSTEMD_BOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"


def say(msg):
    print(f"lab: {msg}", flush=True)


class LabError(Exception):
    pass


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# ------------------------------------------------------------ kernels, stage 1

def unpacked(arch):
    """The directory where scripts/setup unpacked the kernel and busybox debs."""
    d = os.path.join(LAB_TOOLS, ARCHES[arch]["deb"])
    if not os.path.isdir(os.path.join(d, "boot")) or not os.path.exists(os.path.join(d, "bin/busybox")):
        raise LabError(f"no kernel or busybox for {arch} in {d}: run scripts/setup")
    return d


def kernel(arch):
    d = os.path.join(unpacked(arch), "boot")
    k = [f for f in os.listdir(d) if f.startswith("vmlinuz-") and f.endswith(ARCHES[arch]["flavour"])]
    if len(k) != 1:
        raise LabError(f"expected one vmlinuz-*-{ARCHES[arch]['flavour']} in {d}, found {k}")
    return os.path.join(d, k[0]), k[0][len("vmlinuz-"):]


def module_order(arch, extra=()):
    """The .ko files to insmod, dependencies first (read from each module's
    .modinfo `depends=`: the unpacked deb has no modules.dep)."""
    _, ver = kernel(arch)
    base = os.path.join(unpacked(arch), "lib/modules", ver)
    by_name = {}
    for dirpath, _, files in os.walk(os.path.join(base, "kernel")):
        for f in files:
            if f.endswith(".ko"):
                by_name[f[:-3].replace("-", "_")] = os.path.join(dirpath, f)
    order = []

    def add(name):
        if name in order:
            return
        path = by_name.get(name)
        if path is None:
            return  # built in
        with open(path, "rb") as f:
            data = f.read()
        m = re.search(rb"\0depends=([^\0]*)\0", data)
        for dep in (m.group(1).decode().split(",") if m and m.group(1) else []):
            add(dep.replace("-", "_"))
        order.append(name)

    for m in MODULES + list(extra):
        add(m)
        if m not in order:
            raise LabError(f"no module {m}.ko in {base}")
    return [(n, by_name[n]) for n in order]


def cpio_newc(entries):
    """entries: (name, mode, data bytes or None for a dir, or str symlink target)."""
    out = io.BytesIO()
    ino = 1

    def put(name, mode, body):
        nonlocal ino
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(nb), 0))
        out.write(hdr.encode() + nb)
        out.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
        out.write(body)
        out.write(b"\0" * ((4 - len(body) % 4) % 4))
        ino += 1

    for name, mode, body in entries:
        if body is None:
            put(name, stat.S_IFDIR | mode, b"")
        elif isinstance(body, str):
            put(name, stat.S_IFLNK | 0o777, body.encode())
        else:
            put(name, stat.S_IFREG | mode, body)
    put("TRAILER!!!", 0, b"")
    return out.getvalue()


STAGE1 = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
arg() { for w in $(cat /proc/cmdline); do case $w in "$1"=*) echo "${w#*=}" ;; esac; done; }
while read -r m; do insmod "/lib/mod/$m.ko" || echo "LAB-ERROR insmod $m"; done < /modules
if [ "$(arg lab.run)" = probe ]; then echo LAB-PROBE-OK; poweroff -f; fi
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
# noauto_da_alloc: a file renamed over another is not flushed for it by
# ext4's heuristic, so a missing fsync shows as it would on most other
# file systems.
mount -t ext4 -o noauto_da_alloc /dev/vda /newroot || { echo "LAB-ERROR cannot mount /dev/vda"; poweroff -f; }
[ -e /lab-initrd ] && echo "LAB-INITRD $(cat /lab-initrd)"
init=/lab/init
entry=/newroot/boot/loader/entries/default.conf
e=$(arg init)
if [ -n "$e" ]; then
    # A boot loader entry's `init=` (systemd-boot's, as NixOS writes them).
    if [ -x "/newroot$e" ]; then init=$e; else echo "LAB-BOOT-ENTRY-BROKEN '$e'"; fi
elif [ -e "$entry" ]; then
    e=$(sed -n 's/^init //p' "$entry")
    if [ -n "$e" ] && [ -x "/newroot$e" ]; then init=$e; else echo "LAB-BOOT-ENTRY-BROKEN '$e'"; fi
fi
echo "LAB-BOOT init=$init"
mount -t tmpfs -o mode=0755 run /newroot/run
mount -t tmpfs tmp /newroot/tmp
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot "$init"
"""


def initramfs(arch, cache_dir, extra_modules=(), marker=None, script=None):
    """Stage 1 for ARCH (cached by content): the lab's STAGE1 (or SCRIPT),
    with EXTRA_MODULES, and MARKER in /lab-initrd (printed at boot)."""
    script = script or STAGE1
    bb = os.path.join(unpacked(arch), "bin/busybox")
    mods = module_order(arch, extra_modules)
    h = hashlib.sha256(script.encode() + (marker or "").encode())
    for n, p in mods:
        h.update(n.encode() + str(os.path.getsize(p)).encode())
    h.update(str(os.path.getsize(bb)).encode())
    out = os.path.join(cache_dir, f"initrd-{arch}-{h.hexdigest()[:16]}.gz")
    if os.path.exists(out):
        return out
    entries = [("bin", 0o755, None), ("lib", 0o755, None), ("lib/mod", 0o755, None)]
    with open(bb, "rb") as f:
        entries.append(("bin/busybox", 0o755, f.read()))
    for n, p in mods:
        with open(p, "rb") as f:
            entries.append((f"lib/mod/{n}.ko", 0o644, f.read()))
    entries.append(("modules", 0o644, "".join(f"{n}\n" for n, _ in mods).encode()))
    entries.append(("init", 0o755, script.encode()))
    if marker:
        entries.append(("lab-initrd", 0o644, (marker + "\n").encode()))
    os.makedirs(cache_dir, exist_ok=True)
    with open(out + ".tmp", "wb") as f:
        f.write(gzip.compress(cpio_newc(entries), 6))
    os.replace(out + ".tmp", out)
    return out


# ------------------------------------------------------------------ fixtures

def nix_env(home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIX_")}
    env.update({
        "HOME": home, "XDG_CACHE_HOME": os.path.join(home, "cache"),
        "NIX_CONF_DIR": home,
        "NIX_CONFIG": "experimental-features = nix-command\nbuild-users-group =\nsubstituters =\n"
                      "nix-path =\nmax-jobs = 2\nkeep-derivations = false",
    })
    os.makedirs(home, exist_ok=True)
    return env


def build_fixtures(out, attrs, payload_mb, trial=None):
    """Build ATTRS of systems.nix with real Nix in a throwaway store under OUT
    and publish them as one signed zstd cache; returns {attr: path},
    the cache dir and the public key. Cached by a stamp. TRIAL: the
    trial-boot machine's files, {"kernel": path, "initrds": {variant: path}}."""
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    guests = {}
    for arch in ARCHES:
        d = os.path.join(out, "guests", arch)
        os.makedirs(os.path.join(d, "bin"), exist_ok=True)
        dst = os.path.join(d, "bin/busybox")
        src = os.path.join(unpacked(arch), "bin/busybox")
        if not os.path.exists(dst):
            shutil.copy(src, dst)
            os.chmod(dst, 0o555)
        guests[arch] = d
    bbdir = os.path.join(out, "bbdir")
    os.makedirs(os.path.join(bbdir, "bin"), exist_ok=True)
    if not os.path.exists(os.path.join(bbdir, "bin/busybox")):
        shutil.copy("/bin/busybox", os.path.join(bbdir, "bin/busybox"))
    h = hashlib.sha256()
    for f in ("systems.nix", "lab.py"):
        with open(os.path.join(HERE, f), "rb") as fh:
            h.update(fh.read()) if f == "systems.nix" else None
    with open(os.path.join(REPO, "tests/fixtures/common.nix"), "rb") as fh:
        h.update(fh.read())
    h.update(f"{payload_mb} {sorted(attrs)}".encode())
    if trial:
        for f in ("trial-switch.sh", "trial-init.sh"):
            with open(os.path.join(HERE, f), "rb") as fh:
                h.update(fh.read())
        for p in [trial["kernel"]] + [trial["initrds"][k] for k in sorted(trial["initrds"])]:
            h.update(p.encode() + str(os.path.getsize(p)).encode())
    stamp = h.hexdigest()
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            m = json.load(f)
        if m.get("stamp") == stamp:
            return m
    env = nix_env(os.path.join(out, "home"))
    store = os.path.join(out, "store")
    keys = os.path.join(out, "keys")
    os.makedirs(keys, exist_ok=True)
    sk, pk = os.path.join(keys, "secret"), os.path.join(keys, "public")
    if not os.path.exists(pk):
        s = run(["nix", "key", "generate-secret", "--key-name", "fh-lite-lab-1"], env=env,
                capture_output=True).stdout
        with open(sk, "wb") as f:
            f.write(s)
        p = run(["nix", "key", "convert-secret-to-public"], input=s, env=env, capture_output=True).stdout
        with open(pk, "wb") as f:
            f.write(p)
    guests_nix = "{ " + " ".join(f'{a} = "{d}";' for a, d in guests.items()) + " }"
    trial_nix = ""
    if trial:
        trial_nix = ("trial = { kernel = \"" + trial["kernel"] + "\"; initrds = { "
                     + " ".join(f'{k} = "{v}";' for k, v in sorted(trial["initrds"].items())) + " }; };")
    expr = (f'import {HERE}/systems.nix {{ bbdir = "{bbdir}"; guests = {guests_nix}; '
            f"payloadMB = {payload_mb}; {trial_nix} }}")
    t0 = time.time()
    say(f"building the lab's systems with Nix ({', '.join(sorted(attrs))})")
    args = ["nix-build", "--store", store, "--no-out-link", "-E", expr]
    for a in attrs:
        args += ["-A", a]
    r = run(args, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise LabError(f"nix-build of the lab systems failed:\n{r.stderr[-3000:]}")
    paths = r.stdout.split()
    if len(paths) != len(attrs):
        raise LabError(f"nix-build gave {len(paths)} paths for {len(attrs)} attributes")
    cache = os.path.join(out, "cache-zstd")
    if os.path.exists(cache):
        shutil.rmtree(cache)
    r = run(["nix", "copy", "--store", store, "--to", f"file://{cache}?compression=zstd&secret-key={sk}",
             *paths], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise LabError(f"nix copy to the lab cache failed:\n{r.stderr[-3000:]}")
    with open(pk) as f:
        key = f.read().strip()
    m = {"stamp": stamp, "paths": dict(zip(attrs, paths)), "cache": cache, "public_key": key}
    with open(manifest + ".tmp", "w") as f:
        json.dump(m, f, indent=1)
    os.replace(manifest + ".tmp", manifest)
    say(f"lab systems built and published in {time.time() - t0:.0f} s")
    return m


# ------------------------------------------------------------------ the hub

class Hub:
    """The FlakeHub stand-in on 127.0.0.1 (HTTPS, its CA made at start, the
    certificate also valid for the guest's address of it)."""

    def __init__(self, work, fixtures):
        self.dir = os.path.join(work, "hub")
        os.makedirs(self.dir)
        self.token = "fhlab_" + secrets.token_hex(16)
        attrs = {f"nixosConfigurations.{a}": p for a, p in fixtures["paths"].items()}
        config = {
            "releases": {"org/lab": {"0.1.1": attrs}},
            "device_tokens": {self.token: {"project": "org/lab", "version_req": "0.1", "attribute": None}},
            "cache_dir": fixtures["cache"],
        }
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(config, f)
        self.log = open(os.path.join(self.dir, "stderr"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tests/fakehub/fakehub.py"),
             "--config", os.path.join(self.dir, "config.json"),
             "--port-file", os.path.join(self.dir, "port"), "--tls-dir", os.path.join(self.dir, "tls"),
             "--log", os.path.join(self.dir, "requests.jsonl"), "--san", f"IP:{GUEST_HUB}"],
            stdout=self.log, stderr=self.log)
        for _ in range(300):
            if os.path.exists(os.path.join(self.dir, "port")):
                break
            if self.proc.poll() is not None:
                raise LabError(f"the stand-in exited: see {self.dir}/stderr")
            time.sleep(0.1)
        else:
            raise LabError("the stand-in did not start in 30 s")
        with open(os.path.join(self.dir, "port")) as f:
            self.port = int(f.read())
        self.ca = os.path.join(self.dir, "tls/ca.pem")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------ images

LAB_INIT = r"""#!/bin/sh
# The lab's stage 2 (after the system's own init, or directly on a fresh
# image): run /lab/<lab.run>, then a clean power-off.
# On the UEFI machine (trialboot) the arguments come from qemu's fw_cfg
# (the boot loader entries, written in the guest, carry the kernel's).
export PATH=/bin:/usr/bin
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/fh-lite-lab/cmdline/raw
arg() { for w in $(cat /proc/cmdline; cat $fw 2>/dev/null); do case $w in "$1"=*) echo "${w#*=}" ;; esac; done; }
d=$(arg lab.date); [ -n "$d" ] && date -s "@$d" >/dev/null
if [ -d /sys/firmware/efi ]; then
    # As NixOS mounts them: efivarfs, the ESP at /boot (the second disk).
    mount -t efivarfs efivarfs /sys/firmware/efi/efivars || echo "LAB-ERROR cannot mount efivarfs"
    mount -t vfat /dev/vdb /boot || echo "LAB-ERROR cannot mount the ESP at /boot"
    sel=/sys/firmware/efi/efivars/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
    [ -e $sel ] && echo "LAB-EFI-SELECTED $(tail -c +5 $sel | tr -d '\000')"
fi
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 || echo "LAB-ERROR no network"
echo "LAB-CURRENT $(readlink /run/current-system)"
# What fh-lite-confirm-boot.service does at every boot (trial-boot images).
[ -x /lab/boot-confirm ] && /lab/boot-confirm
r=$(arg lab.run)
if [ -x "/lab/$r" ]; then "/lab/$r" "$(arg lab.target)"; else echo "LAB-ERROR no /lab/$r"; fi
echo "LAB-CURRENT-END $(readlink /run/current-system)"
sync
if grep -q " /boot vfat " /proc/mounts; then umount /boot || echo "LAB-ERROR cannot unmount the ESP"; fi
mount -o remount,ro / || echo "LAB-ERROR remount read-only failed"
if [ -e /run/lab-reboot ]; then
    # `systemctl reboot` was called (the lab's systemctl queues it).
    echo "LAB-REBOOTING"
    reboot -f
fi
echo "LAB-DONE"
poweroff -f
"""

LAB_APPLY = r"""#!/bin/sh
# One apply, as a device's timer runs it.
echo "LAB-RUN-START $1"
fh-lite apply nixos "org/lab/0.1#nixosConfigurations.$1" switch $(cat /lab/args)
echo "LAB-RUN-EXIT $?"
"""

LAB_TIMER = LAB_APPLY + r"""
fh-lite status --json --root / > /var/lib/lab/status.json.tmp && mv /var/lib/lab/status.json.tmp /var/lib/lab/status.json
echo "LAB-STATUS $(tr -d '\n' < /var/lib/lab/status.json)"
"""

LAB_VERSION = r"""#!/bin/sh
echo "LAB-VERSION $(fh-lite --version) on $(uname -m), kernel $(uname -r)"
"""

LAB_HEALTH = r"""#!/bin/sh
# The health check: the running system is the one the activation recorded.
mkdir -p /var/log/lab
sys=$(readlink /run/current-system)
echo "health start $sys $$" >> /var/log/lab/health.log
sleep 1
want=$(cat /etc/lab/system 2>/dev/null)
echo "health end $sys $$" >> /var/log/lab/health.log
sync
[ "$sys" = "$want" ]
"""

LAB_RSS = r"""#!/bin/sh
# Peak RSS of one apply (VmHWM, sampled until the process ends).
echo "LAB-RUN-START $1"
fh-lite fetch "org/lab/0.1#nixosConfigurations.$1" $(cat /lab/args-fetch) &
pid=$!
hwm=0
# Sampled with shell builtins only (no fork per sample); VmHWM only grows.
while [ -e /proc/$pid/status ]; do
    while read -r k v rest; do
        [ "$k" = VmHWM: ] && [ "$v" -gt "$hwm" ] && hwm=$v
    done < /proc/$pid/status 2>/dev/null
    sleep 0.05
done
wait $pid
echo "LAB-RUN-EXIT $?"
echo "LAB-RSS-KB $hwm"
"""


def busybox_applets():
    out = run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
    return [a for a in out if a not in ("busybox",)]


def make_image(arch, path, exe, hub, fixtures, size_mb=256, files=None):
    """A fresh root disk: ext4 from a staged tree (mkfs.ext4 -d), no mounts.
    FILES: {path in the image: text} of executables to add; a text may
    name the connection arguments as {conn}."""
    stage = tempfile.mkdtemp(prefix="lab-stage-", dir=os.path.dirname(path))
    try:
        for d in ("bin", "usr/bin", "lab", "proc", "sys", "dev", "run", "tmp", "etc/fh-lite",
                  "var/lib/lab", "var/log/lab", "boot/loader/entries", "root"):
            os.makedirs(os.path.join(stage, d), exist_ok=True)
        shutil.copy(os.path.join(unpacked(arch), "bin/busybox"), os.path.join(stage, "bin/busybox"))
        for a in busybox_applets():
            os.symlink("busybox", os.path.join(stage, "bin", a))
        shutil.copy(exe, os.path.join(stage, "usr/bin/fh-lite"))
        os.chmod(os.path.join(stage, "usr/bin/fh-lite"), 0o755)
        for name, text in (("init", LAB_INIT), ("apply", LAB_APPLY), ("timer", LAB_TIMER),
                           ("health", LAB_HEALTH), ("rss", LAB_RSS), ("version", LAB_VERSION)):
            p = os.path.join(stage, "lab", name)
            with open(p, "w") as f:
                f.write(text)
            os.chmod(p, 0o755)
        conn = (f"--token-file /etc/fh-lite/token --api-addr https://{GUEST_HUB} "
                f"--cache-addr https://{GUEST_HUB} --ca-file /etc/fh-lite/ca.pem "
                f"--no-default-keys --trusted-key {fixtures['public_key']}")
        with open(os.path.join(stage, "lab/args"), "w") as f:
            f.write(f"--root / {conn} --health-check /lab/health --activation-timeout 120\n")
        with open(os.path.join(stage, "lab/args-fetch"), "w") as f:
            f.write(f"--root / {conn} --jobs 4 --quiet\n")
        for rel, text in (files or {}).items():
            p = os.path.join(stage, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text.replace("{conn}", conn))
            os.chmod(p, 0o755)
        old = os.umask(0o077)
        with open(os.path.join(stage, "etc/fh-lite/token"), "w") as f:
            f.write(hub.token + "\n")
        os.umask(old)
        shutil.copy(hub.ca, os.path.join(stage, "etc/fh-lite/ca.pem"))
        with open(os.path.join(stage, "etc/hostname"), "w") as f:
            f.write(f"lab-{arch}\n")
        if os.path.exists(path):
            os.unlink(path)
        run(["mkfs.ext4", "-q", "-F", "-L", "labroot", "-E", "root_owner=0:0", "-d", stage, path,
             f"{size_mb}M"], capture_output=True)
    finally:
        shutil.rmtree(stage)


def debugfs(img, *cmds, write=False):
    args = ["debugfs"] + (["-w"] if write else []) + [img]
    r = run(args, input="\n".join(cmds) + "\n", capture_output=True, text=True, check=False)
    return r.stdout, r.stderr


def read_file(img, path):
    """A file's bytes from the image, or None (debugfs `cat`; the image's
    journal must have been replayed)."""
    r = subprocess.run(["debugfs", "-R", f"cat {path}", img], capture_output=True)
    err = r.stderr.decode(errors="replace")
    if "File not found" in err or r.returncode != 0:
        return None
    return r.stdout


def replay_journal(img):
    """What the guest's kernel does at mount: replay ext4's journal (so the
    host reads the state a reboot would see)."""
    r = subprocess.run(["e2fsck", "-E", "journal_only", "-p", img], capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise LabError(f"e2fsck -E journal_only {img}: exit {r.returncode}: {r.stdout}{r.stderr}")


def dump_root(img, dest):
    os.makedirs(dest)
    cmds = [f"rdump /nix /var /etc /boot {dest}", f"dump -p /nix-path-registration {dest}/nix-path-registration"]
    out, err = debugfs(img, *cmds)
    return err


# ------------------------------------------------------------------ qemu

class Boot:
    """One boot of a VM; serial output to LOG, markers watched live."""

    def __init__(self, arch, img, run_name, target, log, accel, limit, efi=None, extra=""):
        """EFI: {"esp", "vars"} for a UEFI machine (x86_64): OVMF's code
        read-only, its variable store VARS (a per-VM copy), systemd-boot on
        the ESP image (the second disk, first to boot), the i6300esb
        watchdog (a reset when it fires), and qemu kept across the guest's
        reboots (one serial log for all its boots); the lab's arguments
        come through fw_cfg. Else the kernel is booted directly and a
        reboot ends qemu. EXTRA: more of the lab's `lab.*=` arguments."""
        self.arch, self.log_path, self.limit = arch, log, limit
        a = ARCHES[arch]
        args = f"lab.run={run_name} lab.target={target}" + (f" {extra}" if extra else "")
        self.cmd = [a["qemu"], *a["machine"], "-accel", accel, "-m", "512", "-smp", "1",
                    "-nographic", "-nodefaults", "-serial", "stdio"]
        if efi:
            self.cmd[1:1 + len(a["machine"])] = ["-M", "q35"]
            self.cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                         "-drive", f"if=pflash,format=raw,file={efi['vars']}",
                         "-fw_cfg", f"name=opt/fh-lite-lab/cmdline,string={args}",
                         "-device", "i6300esb", "-watchdog-action", "reset"]
        else:
            vmlinuz, _ = kernel(arch)
            initrd = initramfs(arch, os.path.join(LAB_TOOLS, "initrd"))
            append = f"console={a['console']} panic=-1 loglevel=4 {args} lab.date={int(time.time())}"
            self.cmd += ["-no-reboot", "-kernel", vmlinuz, "-initrd", initrd, "-append", append]
        if img:
            self.cmd += ["-drive", f"file={img},format=raw,if=none,id=d0,cache=writeback",
                         "-device", "virtio-blk-pci,drive=d0"]
        if efi:
            self.cmd += ["-drive", f"file={efi['esp']},format=raw,if=none,id=d1,cache=writeback",
                         "-device", "virtio-blk-pci,drive=d1,bootindex=0"]
        if Boot.hub_port:
            fwd = f"guestfwd=tcp:{GUEST_HUB}:443-cmd:/bin/busybox nc 127.0.0.1 {Boot.hub_port}"
            # romfile=: no iPXE option ROM (OVMF would try a network boot).
            self.cmd += ["-netdev", f"user,id=n0,restrict=on,{fwd}",
                         "-device", "virtio-net-pci,netdev=n0" + (",romfile=" if efi else "")]
        self.firmware_starts = 0
        self.lines, self.times = [], []
        self.events = queue.Queue()
        self.t0 = time.monotonic()
        self.logf = open(log, "w")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    hub_port = None

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            t = time.monotonic() - self.t0
            self.logf.write(f"[{t:8.3f}] {line}\n")
            self.logf.flush()
            self.lines.append(line)
            self.times.append(t)
            if "BdsDxe: starting" in line:
                # OVMF starts a boot option: a (re)boot of the UEFI machine.
                self.firmware_starts += 1
                self.events.put(("FIRMWARE", str(self.firmware_starts), time.monotonic()))
            m = re.search(r"(LAB-[A-Z-]+)(.*)", line)
            if m:
                self.events.put((m.group(1), m.group(2).strip(), time.monotonic()))
        self.events.put(("EOF", "", time.monotonic()))

    def wait_for(self, marker, timeout):
        """The marker's (rest, time), or None when qemu ended or time ran out."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            try:
                ev, rest, t = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if ev == marker:
                return rest, t
            if ev == "EOF":
                self.events.put((ev, rest, t))
                return None

    def power_cut(self):
        """SIGKILL of qemu: the guest's page cache and everything in flight
        is gone, as in a power cut."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.finish()

    def finish(self, timeout=None):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.reader.join(5)
            self.logf.close()
            raise LabError(f"the VM did not finish within {timeout} s (serial log {self.log_path})")
        self.reader.join(5)
        if not self.logf.closed:
            self.logf.close()
        return self.proc.returncode

    def marker(self, name):
        return [l.split(name, 1)[1].strip() for l in self.lines if name in l]


def choose_accel(arch, work):
    if arch != "x86_64":
        return "tcg"
    if os.environ.get("FH_LITE_LAB_ACCEL"):
        return os.environ["FH_LITE_LAB_ACCEL"]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    log = os.path.join(work, "kvm-probe.log")
    b = Boot(arch, None, "probe", "-", log, "kvm", 20)
    ok = b.wait_for("LAB-PROBE-OK", 20) is not None
    b.power_cut()
    say(f"KVM probe: {'the guest reached init' if ok else 'no init within 20 s'}; using {'kvm' if ok else 'tcg'}")
    return "kvm" if ok else "tcg"


# ------------------------------------------------------------------ judging

def parse_json(b):
    try:
        v = json.loads(b)
        return v if isinstance(v, dict) else None
    except (ValueError, TypeError):
        return None


def readlink(root, p):
    try:
        return os.readlink(os.path.join(root, p.lstrip("/")))
    except OSError:
        return None


def judge(img, boots, target, fixtures, work):
    """Everything a device owner would check after the final clean boot."""
    bad = []
    paths = fixtures["paths"]
    arch = target.split("-")[0] if not target.startswith("x86_64") else "x86_64"
    v1, new = paths[f"{arch}-v1"], paths[target]
    final = boots[-1]
    r = subprocess.run(["e2fsck", "-fn", img], capture_output=True, text=True)
    if r.returncode != 0:
        bad.append(f"e2fsck -fn finds errors after the clean power-off: {r.stdout.strip()[-500:]}")
    if "LAB-DONE" not in "\n".join(final.lines):
        bad.append("the last boot did not reach its clean power-off")
    exits = final.marker("LAB-RUN-EXIT")
    if not exits or exits[-1] not in ("0", "32", "34"):
        bad.append(f"the timer run exited {exits[-1] if exits else 'never'}")
    for b in boots:
        if b.marker("LAB-BOOT-ENTRY-BROKEN"):
            bad.append(f"a boot found a broken boot loader entry ({b.log_path})")
        for e in b.marker("LAB-ERROR"):
            bad.append(f"guest error: {e} ({b.log_path})")

    dest = os.path.join(work, "root")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    dump_root(img, dest)

    # fh-lite's files parse and none is empty.
    st_raw = None
    try:
        with open(os.path.join(dest, "var/lib/fh-lite/state.json"), "rb") as f:
            st_raw = f.read()
    except OSError:
        bad.append("no /var/lib/fh-lite/state.json")
    state = parse_json(st_raw) if st_raw is not None else None
    if st_raw is not None and state is None:
        bad.append(f"state.json does not parse ({len(st_raw)} bytes)")
    for sub in ("var/lib/fh-lite", "nix/var/nix/profiles", "nix/var/nix/gcroots"):
        for dp, _, files in os.walk(os.path.join(dest, sub)):
            for fn in files:
                p = os.path.join(dp, fn)
                if os.path.islink(p):
                    continue
                if os.path.getsize(p) == 0 and "lock" not in fn:
                    bad.append(f"empty file {os.path.relpath(p, dest)}")
                if fn.endswith(".json") and parse_json(open(p, "rb").read()) is None:
                    bad.append(f"{os.path.relpath(p, dest)} does not parse")
    reg = os.path.join(dest, "nix-path-registration")
    if not os.path.exists(reg) or os.path.getsize(reg) == 0:
        bad.append("no (or an empty) /nix-path-registration")

    # Real Nix judges the store: load the registration, verify the contents,
    # and nothing but registered paths is in the store.
    env = nix_env(os.path.join(work, "nix-home"))
    if os.path.exists(reg):
        with open(reg, "rb") as f:
            r = subprocess.run(["nix-store", "--store", dest, "--load-db"], stdin=f, env=env,
                               capture_output=True, text=True)
        if r.returncode != 0:
            bad.append(f"nix-store --load-db refused the registration: {r.stderr.strip()[-400:]}")
        else:
            r = subprocess.run(["nix-store", "--store", dest, "--verify", "--check-contents"], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0 or "modified" in r.stderr or "error" in r.stderr:
                bad.append(f"nix-store --verify --check-contents: {r.stderr.strip()[-600:]}")
            r = subprocess.run(["nix", "path-info", "--store", dest, "--all"], env=env,
                               capture_output=True, text=True)
            valid = {l.strip()[len("/nix/store/"):] for l in r.stdout.splitlines() if l.strip()}
            for e in sorted(os.listdir(os.path.join(dest, "nix/store"))):
                if e == ".links":
                    continue
                if e not in valid:
                    bad.append(f"the store holds {e}, which is not a registered path")

    # The profile, the boot loader entry, the booted and running system,
    # state.json and status --json agree.
    link = readlink(dest, "nix/var/nix/profiles/system")
    prof = readlink(dest, f"nix/var/nix/profiles/{link}") if link and "/" not in link else None
    entry = None
    try:
        with open(os.path.join(dest, "boot/loader/entries/default.conf")) as f:
            entry = f.read().split()[1].rsplit("/init", 1)[0]
    except (OSError, IndexError):
        bad.append("no boot loader entry")
    booted = (final.marker("LAB-BOOT init=") or [""])[-1].rsplit("/init", 1)[0]
    running = (final.marker("LAB-CURRENT-END") or [""])[-1]
    if prof != entry:
        bad.append(f"the profile is {prof} but the boot loader entry boots {entry}")
    if prof != running:
        bad.append(f"the profile is {prof} but /run/current-system is {running}")
    if booted not in (v1, new):
        bad.append(f"the last boot booted {booted}, neither v1 nor the new system")
    touched = any("fh-lite: recovering" in l or "fh-lite: activated" in l or "rolled back" in l
                  for l in final.lines)
    if not touched and booted != prof:
        bad.append(f"the last boot booted {booted}, the profile is {prof}, and nothing was activated")
    failed = []
    if state:
        if state.get("pending") is not None:
            bad.append(f"state.json still has a pending attempt: {state.get('pending')}")
        failed = [f.get("store_path") if isinstance(f, dict) else f for f in (state.get("failed") or [])]
        failed = [x for x in failed if isinstance(x, str)]
    status = None
    try:
        status = parse_json(open(os.path.join(dest, "var/lib/lab/status.json"), "rb").read())
    except OSError:
        pass
    if status is None:
        bad.append("no status --json from the last boot")
    else:
        if status.get("generation_path") != prof:
            bad.append(f"status --json generation_path {status.get('generation_path')}, the profile {prof}")
        if status.get("pending") is not None:
            bad.append("status --json: pending is set")
        res = (status.get("last_attempt") or {}).get("result")
        want = ["success"] if prof == new else ["rolled-back", "skipped-failed"]
        if res not in want:
            bad.append(f"status --json last_attempt result {res}, wanted one of {want}")

    # Converged: the new system, activated and checked to its end, or the
    # old one re-activated with the new one marked failed.
    sw = open(os.path.join(dest, "var/log/lab/switch.log")).read().splitlines() \
        if os.path.exists(os.path.join(dest, "var/log/lab/switch.log")) else []
    he = open(os.path.join(dest, "var/log/lab/health.log")).read().splitlines() \
        if os.path.exists(os.path.join(dest, "var/log/lab/health.log")) else []
    variant = target.rsplit("-", 1)[1]

    def ran_to_end(lines, prefix, end_of):
        i = max((k for k, l in enumerate(lines) if l.startswith(prefix)), default=None)
        if i is None:
            return False
        pid = lines[i].rsplit(" ", 1)[1]
        return end_of(pid) in lines[i:]

    if prof == new and variant != "bad":
        if not ran_to_end(sw, f"start switch {variant} ", lambda p: f"end switch {variant} {p}"):
            bad.append(f"the profile is at {variant} but its switch did not run to its end")
        if not ran_to_end(he, "health start ", lambda p: f"health end {new} {p}"):
            bad.append(f"the profile is at {variant} but its health check did not run to its end")
        if running != new:
            bad.append(f"profile at {variant} but the running system is {running}")
        if new in failed:
            bad.append(f"{variant} is current and also in `failed`")
    elif prof == v1:
        if new not in failed:
            bad.append(f"the profile is back at v1 but {variant} is not in state.json's `failed`")
        last_bad = max((k for k, l in enumerate(sw) if l.startswith(f"start switch {variant} ")), default=-1)
        if not ran_to_end(sw[last_bad + 1:], "start switch v1 ", lambda p: f"end switch v1 {p}"):
            bad.append("the profile is back at v1 but v1's switch did not run to its end after the attempt")
        if running != v1:
            bad.append(f"profile at v1 but the running system is {running}")
    else:
        bad.append(f"the profile points at {prof}: neither a healthy {variant} nor v1 with {variant} failed")
    return bad


def cut_phase(img):
    """The journal phase on the disk after a cut (what the next boot sees)."""
    replay_journal(img)
    raw = read_file(img, "/var/lib/fh-lite/state.json")
    if raw is None:
        return "no-state"
    st = parse_json(raw)
    if st is None:
        return f"unparsable-state({len(raw)} bytes)"
    p = st.get("pending")
    if p is None:
        return "idle"
    return p.get("phase", "?") if isinstance(p, dict) else "?"


# ------------------------------------------------------------------ the lab

class Lab:
    def __init__(self, arch, keep, exe=None, payload_mb=8, attrs_extra=(), fixdir=None, attrs=None,
                 trial=None):
        self.arch = arch
        self.limit = ARCHES[arch]["limit"]
        self.keep = keep
        self.work = tempfile.mkdtemp(prefix=f"fh-lite-lab-{arch}-")
        self.exe = exe or os.environ.get(f"FH_LITE_LAB_EXE_{arch.upper()}") or \
            os.path.join(REPO, "target", ARCHES[arch]["triple"], "release/fh-lite")
        if not os.path.exists(self.exe):
            raise LabError(f"no fh-lite binary for {arch} at {self.exe} (build it: "
                           f". scripts/env; build_target {ARCHES[arch]['triple']})")
        if attrs is None:
            attrs = [f"{a}-{v}" for a in ARCHES for v in ("v1", "v2", "bad")] + list(attrs_extra)
        fixdir = fixdir or os.environ.get("FH_LITE_LAB_FIXTURES") or os.path.join(REPO, "target/lab-fixtures")
        self.fixtures = build_fixtures(fixdir, attrs, payload_mb, trial)
        self.hub = Hub(self.work, self.fixtures)
        Boot.hub_port = self.hub.port
        self.accel = choose_accel(arch, self.work)
        self.nboot = 0
        self.boots_all = []

    def close(self, ok):
        self.hub.stop()
        if self.keep:
            os.makedirs(self.keep, exist_ok=True)
            for f in os.listdir(self.work):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(self.work, f), self.keep)
        shutil.rmtree(self.work, ignore_errors=True)

    def boot(self, img, run_name, target, tag):
        self.nboot += 1
        log = os.path.join(self.work, f"boot-{self.nboot:03d}-{tag}.log")
        b = Boot(self.arch, img, run_name, target, log, self.accel, self.limit)
        self.boots_all.append(b)
        return b

    def boot_through(self, img, run_name, target, tag):
        """A boot that runs to its clean power-off."""
        b = self.boot(img, run_name, target, tag)
        rc = b.finish(self.limit)
        if rc != 0 or "LAB-DONE" not in "\n".join(b.lines):
            raise LabError(f"boot {tag} did not end cleanly (qemu exit {rc}; serial log {b.log_path}):\n"
                           + "\n".join(b.lines[-15:]))
        return b

    def base_image(self):
        """A device with v1 installed by fh-lite in its own first boot."""
        base = os.path.join(self.work, "base.img")
        make_image(self.arch, base, self.exe, self.hub, self.fixtures)
        t = time.monotonic()
        b = self.boot_through(base, "apply", f"{self.arch}-v1", "install-v1")
        if b.marker("LAB-RUN-EXIT")[-1:] != ["0"]:
            raise LabError(f"installing v1 failed in the guest (serial log {b.log_path})")
        say(f"{self.arch}: v1 installed by fh-lite in the guest's first boot ({time.monotonic() - t:.0f} s wall)")
        return base

    def apply_once(self, base, target):
        """An uncut apply from the base image: its duration and verdict."""
        img = os.path.join(self.work, "disk.img")
        run(["cp", "--sparse=always", base, img])
        b = self.boot_through(img, "timer", target, f"apply-{target}")
        t_start = next(t for l, t in zip(b.lines, b.times) if "LAB-RUN-START" in l)
        t_end = next(t for l, t in zip(b.lines, b.times) if "LAB-RUN-EXIT" in l)
        bad = judge(img, [b], target, self.fixtures, self.work)
        return t_end - t_start, bad, img


def cmd_boot(args):
    lab = Lab(args.arch, args.keep)
    ok = False
    try:
        img = os.path.join(lab.work, "disk.img")
        make_image(args.arch, img, lab.exe, lab.hub, lab.fixtures)
        t = time.monotonic()
        b = lab.boot_through(img, "version", "-", "boot")
        say(f"{args.arch}: booted, ran fh-lite and powered off in {time.monotonic() - t:.1f} s wall "
            f"({lab.accel}): {b.marker('LAB-VERSION')}")
        ok = True
    finally:
        lab.close(ok)


def cmd_apply(args):
    lab = Lab(args.arch, args.keep)
    ok = False
    try:
        base = lab.base_image()
        dur, bad, img = lab.apply_once(base, f"{args.arch}-v2")
        say(f"{args.arch}: apply of v2 in the guest took {dur:.1f} s wall ({lab.accel}); "
            + ("judged good" if not bad else "FAILED:\n  " + "\n  ".join(bad)))
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(img, os.path.join(args.keep, "disk.img"))
        ok = not bad
    finally:
        lab.close(ok)
    return 0 if ok else 1


def powercut(arch, cuts, seed, keep, exe=None, variants=("v2", "bad"), only=None):
    """N power cuts, each from the base image: returns the summary. Each
    trial (from the seed): the target (v2, or bad: a failing activation
    that is rolled back), the moment of the cut (uniform over 0.05 to 1.0
    times the uncut apply's length, so that the late phases -- profile,
    activation, health check -- are hit as often as fetching; a cut after the
    run ended would only test an idle disk), and in 3 of 10 a second cut
    during the next boot's recovery run. `only`: the trial numbers to run
    (the others are drawn from the seed and skipped), to replay one."""
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 32)
    say(f"{arch}: power cuts with seed {seed} (replay: scripts/lab powercut --arch {arch} "
        f"--cuts {cuts} --seed {seed})")
    rng = random.Random(seed)
    lab = Lab(arch, keep, exe)
    summary = {"arch": arch, "seed": seed, "accel": lab.accel, "cuts": [], "failures": []}
    ok = False
    img = None
    try:
        base = lab.base_image()
        cal = {}
        for variant in variants:
            dur, bad, img = lab.apply_once(base, f"{arch}-{variant}")
            cal[variant] = dur
            say(f"{arch}: uncut apply of {variant}: {dur:.1f} s wall"
                + ("" if not bad else "; FAILED: " + "; ".join(bad)))
            if bad:
                summary["failures"].append({"cut": None, "target": variant, "problems": bad})
        for n in range(1, cuts + 1):
            variant = "v2" if rng.random() < 0.6 or "bad" not in variants else "bad"
            target = f"{arch}-{variant}"
            at = (0.05 + 0.95 * rng.random()) * cal[variant]
            again = rng.random() < 0.3
            at2 = rng.random() * cal[variant] * 0.8
            if only and n not in only:
                continue
            img = os.path.join(lab.work, "disk.img")
            run(["cp", "--sparse=always", base, img])
            boots, entries = [], []
            b = lab.boot(img, "apply", target, f"cut{n}-apply")
            boots.append(b)
            if b.wait_for("LAB-RUN-START", lab.limit) is None:
                raise LabError(f"the apply never started (serial log {b.log_path})")
            time.sleep(at)
            b.power_cut()
            entries.append({"cut": n, "at_s": round(at, 3), "phase": cut_phase(img), "target": variant,
                            "during": "apply"})
            if again:
                b = lab.boot(img, "timer", target, f"cut{n}-recovery")
                boots.append(b)
                if b.wait_for("LAB-RUN-START", lab.limit) is None:
                    raise LabError(f"the recovery run never started (serial log {b.log_path})")
                time.sleep(at2)
                b.power_cut()
                entries.append({"cut": n, "at_s": round(at2, 3), "phase": cut_phase(img), "target": variant,
                                "during": "recovery"})
            boots.append(lab.boot_through(img, "timer", target, f"cut{n}-timer"))
            bad = judge(img, boots, target, lab.fixtures, lab.work)
            verdict = "ok" if not bad else "FAIL"
            for e in entries:
                e["verdict"] = verdict
                summary["cuts"].append(e)
            say(f"{arch}: cut {n}/{cuts}: " + ", ".join(
                f"{e['during']} of {variant} at {e['at_s']:.2f} s, phase {e['phase']}" for e in entries)
                + f": {verdict}" + ("" if not bad else "\n  " + "\n  ".join(bad)))
            if bad:
                summary["failures"].append({"cut": n, "target": variant, "problems": bad,
                                            "logs": [os.path.basename(x.log_path) for x in boots]})
                if keep:
                    os.makedirs(keep, exist_ok=True)
                    shutil.copy(img, os.path.join(keep, f"disk-cut{n}.img"))
            if keep:
                # After every trial, so a run stopped early still leaves its record.
                os.makedirs(keep, exist_ok=True)
                with open(os.path.join(keep, "summary.json.tmp"), "w") as f:
                    json.dump(summary, f, indent=1)
                os.replace(os.path.join(keep, "summary.json.tmp"), os.path.join(keep, "summary.json"))
        ok = not summary["failures"]
    finally:
        if keep:
            os.makedirs(keep, exist_ok=True)
            if img and os.path.exists(img):
                shutil.copy(img, os.path.join(keep, "disk.img"))
            with open(os.path.join(keep, "summary.json"), "w") as f:
                json.dump(summary, f, indent=1)
        lab.close(ok)
    phases = {}
    for c in summary["cuts"]:
        phases[c["phase"]] = phases.get(c["phase"], 0) + 1
    say(f"{arch}: {len(summary['cuts'])} cuts in {cuts} trials, seed {seed}; per phase: "
        + ", ".join(f"{k} {v}" for k, v in sorted(phases.items()))
        + f"; {len(summary['failures'])} failures")
    return summary


RSS_WORKLOADS = [("rss-64m", "1 NAR of 64 MiB, zstd"), ("rss-many", "500 small paths, zstd, --jobs 4"),
                 ("rss-512m", "1 NAR of 512 MiB, zstd")]


def cmd_rss(args):
    """Peak RSS (VmHWM) of `fh-lite fetch` inside the guest, per workload,
    over HTTPS from the stand-in; each on a fresh disk."""
    fixdir = os.path.join(REPO, "target/lab-fixtures-rss")
    lab = Lab(args.arch, args.keep, attrs_extra=[w for w, _ in RSS_WORKLOADS], fixdir=fixdir)
    ok, rows = False, []
    try:
        for attr, label in RSS_WORKLOADS:
            img = os.path.join(lab.work, "disk.img")
            make_image(args.arch, img, lab.exe, lab.hub, lab.fixtures, size_mb=1536)
            b = lab.boot_through(img, "rss", attr, f"rss-{attr}")
            code = (b.marker("LAB-RUN-EXIT") or ["?"])[-1]
            kb = (b.marker("LAB-RSS-KB") or ["?"])[-1]
            t_start = next(t for l, t in zip(b.lines, b.times) if "LAB-RUN-START" in l)
            t_end = next(t for l, t in zip(b.lines, b.times) if "LAB-RUN-EXIT" in l)
            if code != "0" or not kb.isdigit():
                raise LabError(f"{attr}: fetch exited {code} (serial log {b.log_path})")
            rows.append((label, int(kb) / 1024, t_end - t_start))
            say(f"{args.arch}: {label}: peak RSS {int(kb) / 1024:.1f} MiB (VmHWM), "
                f"{t_end - t_start:.1f} s wall under {lab.accel} (not a device figure)")
            os.unlink(img)
        ok = True
    finally:
        lab.close(ok)
    print(f"| workload | arch | peak RSS MiB (VmHWM in the guest) | wall s under {lab.accel} |")
    for label, mib, wall in rows:
        print(f"| {label} | {args.arch} | {mib:.1f} | {wall:.1f} |")
    return 0


def cmd_smoke(args):
    """The CI smoke: per architecture, the lab boots, fh-lite installs v1 in
    the guest, applies v2 (judged), and one power cut during an apply of
    v2 is recovered by the next boot's run (judged)."""
    t0 = time.monotonic()
    failed = []
    for arch in args.arch or ["aarch64", "armv7", "x86_64"]:
        t = time.monotonic()
        keep = os.path.join(args.keep, arch) if args.keep else None
        s = powercut(arch, 1, args.seed, keep, variants=("v2",))
        say(f"smoke {arch}: {time.monotonic() - t:.0f} s")
        if s["failures"]:
            failed.append(arch)
    say(f"smoke: {time.monotonic() - t0:.0f} s in all; "
        + ("all good" if not failed else f"FAILED: {', '.join(failed)}"))
    return 1 if failed else 0


def cmd_powercut(args):
    s = powercut(args.arch, args.cuts, args.seed, args.keep, only=args.only)
    return 0 if not s["failures"] else 1


def main():
    ap = argparse.ArgumentParser(prog="scripts/lab", description="fh-lite's device lab")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("smoke")
    p.add_argument("--arch", action="append", choices=sorted(ARCHES))
    p.add_argument("--keep", metavar="DIR")
    p.add_argument("--seed", type=int, default=20)
    for name in ("boot", "apply", "powercut", "rss"):
        p = sub.add_parser(name)
        p.add_argument("--arch", required=True, choices=sorted(ARCHES))
        p.add_argument("--keep", metavar="DIR")
        if name == "powercut":
            p.add_argument("--cuts", type=int, default=5)
            p.add_argument("--seed", type=int)
            p.add_argument("--only", type=int, action="append", metavar="N",
                           help="run only trial N of the seed's sequence (repeatable): replays one cut")
    p = sub.add_parser("trialboot", help="trial boots on x86_64 with OVMF + systemd-boot")
    p.add_argument("--keep", metavar="DIR")
    p.add_argument("--scenario", action="append",
                   choices=["good", "panic", "hang", "powercut", "cut-preparing", "cut-held"])
    p.add_argument("--seed", type=int, help="the power cut's moment")
    p.add_argument("--by-hand", action="store_true",
                   help="the guest arms the one-shot boot itself (checks the lab, not fh-lite)")
    args = ap.parse_args()
    if args.cmd == "trialboot":
        import trial
        try:
            return trial.cmd_trialboot(args, sys.modules[__name__])
        except LabError as e:
            print(f"lab: {e}", file=sys.stderr)
            return 1
    try:
        rc = {"boot": cmd_boot, "apply": cmd_apply, "powercut": cmd_powercut, "smoke": cmd_smoke,
              "rss": cmd_rss}[args.cmd](args)
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
