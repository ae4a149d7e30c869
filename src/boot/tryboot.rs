//! Raspberry Pi firmware `tryboot` as a trial boot's one-shot.
//!
//! The Pi firmware (start*.elf, and the Pi 4/5 EEPROM bootloader) reads
//! `config.txt` from the FAT firmware partition on every boot, except
//! once after a reboot with the one-shot `tryboot` flag: then it reads
//! `tryboot.txt` instead, clearing the flag first, so a reset or a power
//! cut during that boot comes back on `config.txt`. fh-lite:
//!
//! 1. copies the new generation's `kernel`, `initrd` and device trees
//!    (its `dtbs/`: the `.dtb` files at its top and under `broadcom/`,
//!    flattened, and `overlays/`) into `fh-lite-trial/` on the firmware
//!    partition — a temporary directory first, every file and directory
//!    fsynced, then renamed into place — after checking the free space;
//! 2. writes `fh-lite-trial/cmdline.txt` (`init=<toplevel>/init` and the
//!    toplevel's `kernel-params`, as NixOS's boot builders compose it);
//! 3. writes `tryboot.txt` (temporary file, fsync, rename, directory
//!    fsync): `config.txt` as it is, then an `[all]` section pointing the
//!    firmware at that directory;
//! 4. reboots with the argument `0 tryboot` (`systemctl
//!    --reboot-argument=`, fleet/mod.rs), which Raspberry Pi's kernel turns
//!    into the firmware's tryboot flag.
//!
//! `config.txt` is never written here: the commit is the new generation's
//! own `switch-to-configuration boot` (as for GRUB), and afterwards, or on
//! a fallback, `tryboot.txt` then `fh-lite-trial/` are removed.
//!
//! What the firmware does with the lines fh-lite appends (Raspberry Pi's
//! config.txt documentation, "Boot options" and "Conditional filters"):
//! - `[all]` resets every earlier conditional filter (`[pi4]`, `[none]`,
//!   …), so what follows applies on every model; a setting given again
//!   later overrides the earlier one, so these lines win over `config.txt`'s
//!   own `kernel=`/`initramfs`/`cmdline=` (U-Boot, on NixOS).
//! - `os_prefix=fh-lite-trial/` is prepended to every "operating system
//!   file" the firmware loads: kernel, initramfs, cmdline.txt, `.dtb`s and
//!   overlays. So `kernel=kernel.img`, `initramfs initrd followkernel`
//!   (the initramfs placed after the kernel in memory) and
//!   `cmdline=cmdline.txt` name files inside the directory.
//! - The firmware ignores the prefix unless the kernel and the board's
//!   `.dtb` exist under it (so the `.dtb` files are copied flat beside the
//!   kernel), and loads overlays from `fh-lite-trial/overlays/` only when
//!   `fh-lite-trial/overlays/README` exists (fh-lite writes one when it
//!   copies overlays); otherwise the partition's own overlays are used.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Exit};
use crate::rootfs::{self, Dir};

/// The directory on the firmware partition (and the `os_prefix`).
pub const DIR: &str = "fh-lite-trial";
pub const TRYBOOT: &str = "tryboot.txt";
pub const CONFIG: &str = "config.txt";
/// The names inside [`DIR`].
pub const KERNEL: &str = "kernel.img";
pub const INITRD: &str = "initrd";
pub const CMDLINE: &str = "cmdline.txt";
const OVERLAYS: &str = "overlays";
/// The reboot argument that sets the firmware's tryboot flag (`0`: the
/// boot partition, as Raspberry Pi's `reboot '0 tryboot'`).
pub const REBOOT_ARG: &str = "0 tryboot";
/// Bytes needed on top of the files, each rounded up to the partition's
/// block (FAT's cluster): directory entries, and room to spare.
const MARGIN: u64 = 1024 * 1024;
/// The block size assumed when the filesystem does not say.
const BLOCK: u64 = 32 * 1024;

/// What the firmware partition has: (bytes free, block size).
pub type Space = Option<(u64, u64)>;

/// The firmware partition of a Raspberry Pi.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tryboot {
    pub root: Option<PathBuf>,
    /// Its mount point (a real path).
    pub dir: PathBuf,
}

/// One file to copy: where from (a real path) and its name in [`DIR`]
/// (`overlays/x.dtbo` for an overlay).
#[derive(Debug)]
struct Copy {
    from: PathBuf,
    to: PathBuf,
    len: u64,
}

fn bad(what: impl Into<String>) -> Error {
    Error::new(Exit::ActivationFailed, what.into())
}

impl Tryboot {
    /// `--firmware-dir DIR` as given, else `/boot/firmware` (NixOS's
    /// sd-image mounts the FIRMWARE partition there) when it has a
    /// config.txt, else `/boot` when it has one, under the root.
    pub fn new(root: Option<&Path>, firmware_dir: Option<&Path>) -> Tryboot {
        let dir = match firmware_dir {
            Some(d) => d.to_path_buf(),
            None => {
                let base = root.unwrap_or(Path::new("/"));
                let firmware = base.join("boot/firmware");
                match !firmware.join(CONFIG).is_file()
                    && is_firmware_config(root, &base.join("boot"))
                {
                    true => base.join("boot"),
                    false => firmware,
                }
            }
        };
        Tryboot {
            root: root.map(Path::to_path_buf),
            dir,
        }
    }

    /// A Raspberry Pi (its device tree's model) with a firmware
    /// partition (a config.txt of firmware settings where [`Tryboot::new`]
    /// looks).
    pub fn detect(&self) -> bool {
        let model = self
            .root
            .as_deref()
            .unwrap_or(Path::new("/"))
            .join("proc/device-tree/model");
        let pi = rootfs::split(&model)
            .and_then(|(dir, name)| {
                rootfs::open_dir(self.root.as_deref(), dir)?.read_small(name, 4096)
            })
            .is_ok_and(|m| m.starts_with(b"Raspberry Pi"));
        pi && is_firmware_config(self.root.as_deref(), &self.dir)
    }

    /// The firmware partition's config.txt is there (a usage error
    /// before the trial starts, when the partition is not mounted).
    pub fn config_present(&self) -> Result<(), Error> {
        match self.dir.join(CONFIG).is_file() {
            true => Ok(()),
            false => Err(Error::new(
                Exit::Usage,
                format!(
                    "a tryboot trial boot needs the Raspberry Pi firmware partition, but {} does not exist (mount the partition: NixOS's sd-image mounts /boot/firmware with noauto; or name its mount point with --firmware-dir)",
                    self.dir.join(CONFIG).display()
                ),
            )),
        }
    }

    fn open(&self) -> Result<Dir, Error> {
        rootfs::open_dir(self.root.as_deref(), &self.dir).map_err(|e| {
            bad(format!(
                "the Raspberry Pi firmware partition {}: {e} (mount it, or name it with --firmware-dir)",
                self.dir.display()
            ))
        })
    }

    fn io(&self, what: &str, e: io::Error) -> Error {
        Error::new(
            Exit::Internal,
            format!(
                "{what} on the firmware partition {}: {e}",
                self.dir.display()
            ),
        )
    }

    /// Copy `store_path`'s boot files into [`DIR`] and write tryboot.txt
    /// (module text), checking the free space first.
    pub fn arm(&self, store_path: &str) -> Result<(), Error> {
        self.arm_with(store_path, &|d| {
            let st = rustix::fs::statvfs(d).ok()?;
            Some((st.f_bavail.saturating_mul(st.f_frsize), st.f_frsize))
        })
    }

    /// [`Tryboot::arm`] with `free` telling the space at a path.
    pub fn arm_with(&self, store_path: &str, free: &dyn Fn(&Path) -> Space) -> Result<(), Error> {
        let dir = self.open()?;
        let config = dir.read_small(CONFIG, MAX_CONFIG).map_err(|e| {
            bad(format!(
                "{}: {e} (the firmware partition needs its config.txt for a tryboot trial boot)",
                dir.join(CONFIG).display()
            ))
        })?;
        let (files, cmdline) = self.sources(store_path)?;
        // A trial left over from before (a cut run): gone first, so its
        // bytes count as free.
        self.remove(&dir)?;
        let tryboot = tryboot_txt(&config, store_path);
        let space = free(&self.dir);
        let block = space.map_or(BLOCK, |(_, b)| b).clamp(512, 1 << 20);
        let round = |n: u64| n.div_ceil(block) * block;
        let needed = files.iter().map(|f| round(f.len)).sum::<u64>()
            + round(cmdline.len() as u64)
            + round(tryboot.len() as u64)
            + MARGIN;
        if let Some((available, _)) = space {
            if available < needed {
                return Err(Error::new(
                    Exit::Store,
                    format!(
                        "the Raspberry Pi firmware partition {} has {available} bytes free, but the trial boot of {store_path} needs {needed} (its kernel, initrd and device trees, plus a margin); free space there or enlarge the partition (NixOS sd-image: sdImage.firmwareSize), or use --boot-loader none to commit without a trial boot",
                        self.dir.display()
                    ),
                ));
            }
        }
        let (tmp, t) = dir
            .create_temp_dir(DIR, "tmp")
            .map_err(|e| self.io("creating a directory", e))?;
        let filled = fill(self.root.as_deref(), &t, &files, &cmdline);
        let placed = filled.and_then(|()| {
            // The directory in place: renamed, its parent fsynced.
            dir.rename(&tmp, DIR)?;
            dir.sync()
        });
        if let Err(e) = placed {
            let _ = dir.remove_tree(&tmp);
            let _ = dir.sync();
            return Err(self.io(&format!("copying the trial boot files of {store_path}"), e));
        }
        dir.write_atomic(TRYBOOT, 0o644, &tryboot)
            .map_err(|e| self.io("writing tryboot.txt", e))
    }

    /// Remove tryboot.txt, then [`DIR`] and any temporary copy of it (all
    /// fsynced). Nothing there is fine.
    pub fn release(&self) -> Result<(), Error> {
        if !self.dir.exists() {
            return Ok(());
        }
        let dir = self.open()?;
        self.remove(&dir)
    }

    fn remove(&self, dir: &Dir) -> Result<(), Error> {
        let what = |e| self.io("removing the trial boot files", e);
        if dir.exists(TRYBOOT) {
            dir.remove_file(TRYBOOT).map_err(what)?;
            dir.sync().map_err(what)?;
        }
        // Temporary names a cut run left: `.NAME.tmp-PID-RANDOM`.
        let (temp, temp_txt) = (format!(".{DIR}."), format!(".{TRYBOOT}."));
        let mut removed = false;
        for name in dir.entries().map_err(what)? {
            let n = name.to_string_lossy();
            if n == DIR || n.starts_with(&temp) || n.starts_with(&temp_txt) {
                dir.remove_tree(&name).map_err(what)?;
                removed = true;
            }
        }
        if removed {
            dir.sync().map_err(what)?;
        }
        Ok(())
    }

    /// The files to copy and the command line, from the toplevel
    /// `store_path` (resolved under the root; every file must lie in the
    /// store, and the device trees in their own store path).
    fn sources(&self, store_path: &str) -> Result<(Vec<Copy>, String), Error> {
        let root = self.root.as_deref().unwrap_or(Path::new("/"));
        let top = Path::new(store_path);
        let store = Path::new(crate::nix::store_path::STORE_DIR);
        let find = |name: &str| -> Result<PathBuf, Error> {
            let logical = top.join(name);
            let real = rootfs::resolve_in_root(root, &logical).map_err(|e| {
                bad(format!(
                    "{}: {e} (a tryboot trial boot copies it to the firmware partition)",
                    logical.display()
                ))
            })?;
            let seen = rootfs::logical(self.root.as_deref(), &real);
            if !seen.starts_with(store) || seen.components().count() < 4 {
                return Err(bad(format!(
                    "{} leads to {}, outside {}; refused",
                    logical.display(),
                    seen.display(),
                    store.display()
                )));
            }
            Ok(real)
        };
        let file = |name: &str, to: &str| -> Result<Copy, Error> {
            let from = find(name)?;
            let meta =
                std::fs::metadata(&from).map_err(|e| bad(format!("{}: {e}", from.display())))?;
            if !meta.is_file() {
                return Err(bad(format!("{store_path}/{name} is not a file")));
            }
            Ok(Copy {
                from,
                to: PathBuf::from(to),
                len: meta.len(),
            })
        };
        let mut files = vec![file("kernel", KERNEL)?, file("initrd", INITRD)?];
        let params_file = find("kernel-params")?;
        let params = std::fs::read_to_string(&params_file)
            .map_err(|e| bad(format!("{}: {e}", params_file.display())))?;
        let params = params.trim_end_matches('\n');
        if params.contains(['\n', '\r']) {
            return Err(bad(format!(
                "{store_path}/kernel-params has more than one line; the firmware reads one"
            )));
        }
        find("init")?;
        let cmdline = format!("init={store_path}/init {params}\n");
        let dtbs = find("dtbs")?;
        let dtbs_store = store_path_of(&rootfs::logical(self.root.as_deref(), &dtbs));
        let inside = |p: &Path| -> Result<PathBuf, Error> {
            let logical = rootfs::logical(self.root.as_deref(), p);
            let real = rootfs::resolve_in_root(root, &logical)
                .map_err(|e| bad(format!("{}: {e}", logical.display())))?;
            let seen = rootfs::logical(self.root.as_deref(), &real);
            if dtbs_store.is_none() || store_path_of(&seen) != dtbs_store {
                return Err(bad(format!(
                    "{} is a symbolic link to {}, outside the device trees' store path; refused",
                    logical.display(),
                    seen.display()
                )));
            }
            Ok(real)
        };
        let mut names: Vec<OsString> = Vec::new();
        let mut dtb_count = 0;
        for sub in [None, Some("broadcom")] {
            let d = match sub {
                Some(s) => dtbs.join(s),
                None => dtbs.clone(),
            };
            for (name, from) in listing(&d, &inside)? {
                let is_dtb = Path::new(&name).extension().is_some_and(|e| e == "dtb");
                if !is_dtb || names.contains(&name) {
                    continue;
                }
                let len = regular_len(&from)?;
                names.push(name.clone());
                dtb_count += 1;
                files.push(Copy {
                    from,
                    to: PathBuf::from(name),
                    len,
                });
            }
        }
        if dtb_count == 0 {
            return Err(bad(format!(
                "{store_path}/dtbs has no device trees (.dtb) for the firmware to boot with"
            )));
        }
        let overlays = listing(&dtbs.join(OVERLAYS), &inside)?;
        let has_readme = overlays.iter().any(|(n, _)| n == "README");
        for (name, from) in overlays {
            let len = regular_len(&from)?;
            files.push(Copy {
                from,
                to: Path::new(OVERLAYS).join(name),
                len,
            });
        }
        if !has_readme && files.iter().any(|f| f.to.starts_with(OVERLAYS)) {
            files.push(Copy {
                from: PathBuf::new(),
                to: Path::new(OVERLAYS).join("README"),
                len: README.len() as u64,
            });
        }
        Ok((files, cmdline))
    }
}

/// What fh-lite writes as `overlays/README` when the overlays have none:
/// the firmware loads overlays from the prefix only when it exists.
const README: &str = "Device tree overlays of a generation on its fh-lite trial boot.\n";

/// `/nix/store/NAME` of a logical path in the store.
fn store_path_of(p: &Path) -> Option<PathBuf> {
    let mut c = p.components();
    let parts: Vec<_> = c.by_ref().take(4).collect();
    (parts.len() == 4 && p.starts_with(crate::nix::store_path::STORE_DIR))
        .then(|| parts.iter().collect())
}

/// The files in `dir` (none when it does not exist), each resolved by
/// `inside`, sorted by name; subdirectories are skipped.
fn listing(
    dir: &Path,
    inside: &dyn Fn(&Path) -> Result<PathBuf, Error>,
) -> Result<Vec<(OsString, PathBuf)>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(bad(format!("{}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        let real = inside(&e.path())?;
        if real.is_dir() {
            continue;
        }
        out.push((e.file_name(), real));
    }
    out.sort();
    Ok(out)
}

fn regular_len(p: &Path) -> Result<u64, Error> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(m.len()),
        Ok(_) => Err(bad(format!("{} is not a file", p.display()))),
        Err(e) => Err(bad(format!("{}: {e}", p.display()))),
    }
}

/// Copy every file into the temporary directory `t`, write cmdline.txt,
/// fsync every file and then the directories. The files are created
/// under their final names (`O_EXCL`, never through a symlink): nothing
/// reads the directory before it is renamed into place as a whole. The
/// sources are opened beneath the root, never following a symlink at
/// their name.
fn fill(root: Option<&Path>, t: &Dir, files: &[Copy], cmdline: &str) -> io::Result<()> {
    let mut overlays: Option<Dir> = None;
    for f in files {
        let (into, name) = match f.to.strip_prefix(OVERLAYS) {
            Ok(rest) => {
                if overlays.is_none() {
                    t.create_dir(OVERLAYS)?;
                    overlays = Some(t.open_subdir(OVERLAYS)?);
                }
                (overlays.as_ref().unwrap_or(t), rest.as_os_str())
            }
            Err(_) => (t, f.to.as_os_str()),
        };
        let mut out = into.create_new(name, 0o644)?;
        if f.from.as_os_str().is_empty() {
            out.write_all(README.as_bytes())?;
        } else {
            let (parent, file) = rootfs::split(&f.from)?;
            let mut src = rootfs::open_dir(root, parent)?.open_read(file)?;
            let n = io::copy(&mut src, &mut out)?;
            if n != f.len {
                return Err(io::Error::other(format!(
                    "{} changed while being copied",
                    f.from.display()
                )));
            }
        }
        out.sync_all()?;
    }
    let mut out = t.create_new(CMDLINE, 0o644)?;
    out.write_all(cmdline.as_bytes())?;
    out.sync_all()?;
    if let Some(o) = &overlays {
        o.sync()?;
    }
    t.sync()
}

/// config.txt is small (the firmware reads at most a few KiB of it); this
/// bounds what an image root's file can make fh-lite read.
const MAX_CONFIG: u64 = 1024 * 1024;

/// A config.txt of firmware settings in `dir`: a `[filter]` line or a
/// setting (`name=value`, or `initramfs FILE ADDR`) outside comments.
fn is_firmware_config(root: Option<&Path>, dir: &Path) -> bool {
    let Ok(bytes) = rootfs::open_dir(root, dir).and_then(|d| d.read_small(CONFIG, MAX_CONFIG))
    else {
        return false;
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .any(|l| {
            !l.starts_with('#')
                && (l.starts_with('[') || l.contains('=') || l.starts_with("initramfs "))
        })
}

/// tryboot.txt: `config` as it is, then the section booting [`DIR`].
pub fn tryboot_txt(config: &[u8], store_path: &str) -> Vec<u8> {
    let mut out = config.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!(
        "\n# fh-lite: the trial boot of {store_path} (this file is removed after it)\n[all]\nos_prefix={DIR}/\nkernel={KERNEL}\ninitramfs {INITRD} followkernel\ncmdline={CMDLINE}\n"
    ).as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    pub(super) const TOP: &str =
        "/nix/store/00000000000000000000000000000000-nixos-system-pi-25.05";
    const LINUX: &str = "/nix/store/11111111111111111111111111111111-linux-6.6";
    const INITRD_SP: &str = "/nix/store/22222222222222222222222222222222-initrd-linux";
    pub(super) const CONFIG_TXT: &[u8] =
        b"[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\n\n[all]\narm_64bit=1\nenable_uart=1";

    /// An image root: a Pi 4's device tree model, a firmware partition
    /// with config.txt at /boot/firmware, and a toplevel whose kernel,
    /// initrd and dtbs live in other store paths.
    pub(super) struct Pi {
        pub(super) t: crate::testutil::TempDir,
    }

    impl Pi {
        pub(super) fn new() -> Pi {
            let t = crate::testutil::TempDir::new("tryboot");
            let r = t.path();
            let mk = |p: &str| std::fs::create_dir_all(r.join(p.trim_start_matches('/'))).unwrap();
            let put = |p: &str, data: &[u8]| {
                std::fs::write(r.join(p.trim_start_matches('/')), data).unwrap()
            };
            mk("proc/device-tree");
            put(
                "proc/device-tree/model",
                b"Raspberry Pi 4 Model B Rev 1.4\0",
            );
            mk("boot/firmware");
            put("boot/firmware/config.txt", CONFIG_TXT);
            put("boot/firmware/start4.elf", b"firmware");
            mk(TOP);
            mk(&format!("{LINUX}/dtbs/broadcom"));
            mk(&format!("{LINUX}/dtbs/overlays"));
            mk(&format!("{LINUX}/dtbs/arm"));
            mk(INITRD_SP);
            put(&format!("{LINUX}/Image"), &[7u8; 70_000]);
            put(&format!("{INITRD_SP}/initrd"), b"\x28\xb5\x2f\xfd initrd");
            put(
                &format!("{LINUX}/dtbs/broadcom/bcm2711-rpi-4-b.dtb"),
                b"dtb pi4",
            );
            put(
                &format!("{LINUX}/dtbs/broadcom/bcm2837-rpi-3-b.dtb"),
                b"dtb pi3",
            );
            put(&format!("{LINUX}/dtbs/arm/vexpress.dtb"), b"not a pi");
            put(
                &format!("{LINUX}/dtbs/overlays/vc4-kms-v3d.dtbo"),
                b"overlay",
            );
            let top = r.join(TOP.trim_start_matches('/'));
            symlink(format!("{LINUX}/Image"), top.join("kernel")).unwrap();
            symlink(format!("{INITRD_SP}/initrd"), top.join("initrd")).unwrap();
            symlink(format!("{LINUX}/dtbs"), top.join("dtbs")).unwrap();
            std::fs::write(top.join("init"), "#!/bin/sh\n").unwrap();
            std::fs::write(
                top.join("kernel-params"),
                "console=ttyS1,115200n8 console=tty0 loglevel=4",
            )
            .unwrap();
            Pi { t }
        }
        fn tb(&self) -> Tryboot {
            Tryboot::new(Some(self.t.path()), None)
        }
        pub(super) fn fw(&self) -> PathBuf {
            self.t.path().join("boot/firmware")
        }
        fn store(&self, p: &str) -> PathBuf {
            self.t.path().join(p.trim_start_matches('/'))
        }
        /// The firmware partition's names, sorted.
        pub(super) fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.fw())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    fn plenty(_: &Path) -> Space {
        Some((1 << 40, 4096))
    }

    #[test]
    fn arming_copies_the_boot_files_and_writes_tryboot_txt_but_never_config_txt() {
        let pi = Pi::new();
        let tb = pi.tb();
        assert_eq!(tb.dir, pi.fw());
        assert!(tb.detect());
        tb.arm_with(TOP, &plenty).unwrap();
        let d = pi.fw().join(DIR);
        let same = |copied: &str, original: PathBuf| {
            assert_eq!(
                std::fs::read(d.join(copied)).unwrap(),
                std::fs::read(&original).unwrap(),
                "{copied}"
            );
        };
        same(KERNEL, pi.store(&format!("{LINUX}/Image")));
        same(INITRD, pi.store(&format!("{INITRD_SP}/initrd")));
        // The board's device trees flat beside the kernel (the firmware
        // looks for them there), overlays with the README that makes the
        // firmware take them from the prefix; other vendors' not copied.
        same(
            "bcm2711-rpi-4-b.dtb",
            pi.store(&format!("{LINUX}/dtbs/broadcom/bcm2711-rpi-4-b.dtb")),
        );
        same(
            "bcm2837-rpi-3-b.dtb",
            pi.store(&format!("{LINUX}/dtbs/broadcom/bcm2837-rpi-3-b.dtb")),
        );
        same(
            "overlays/vc4-kms-v3d.dtbo",
            pi.store(&format!("{LINUX}/dtbs/overlays/vc4-kms-v3d.dtbo")),
        );
        assert!(d.join("overlays/README").is_file());
        assert!(!d.join("vexpress.dtb").exists());
        let mut copied: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        copied.sort();
        assert_eq!(
            copied,
            [
                "bcm2711-rpi-4-b.dtb",
                "bcm2837-rpi-3-b.dtb",
                "cmdline.txt",
                "initrd",
                "kernel.img",
                "overlays"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(d.join(CMDLINE)).unwrap(),
            format!("init={TOP}/init console=ttyS1,115200n8 console=tty0 loglevel=4\n")
        );
        let expected = format!(
            "[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\n\n[all]\narm_64bit=1\nenable_uart=1\n\n# fh-lite: the trial boot of {TOP} (this file is removed after it)\n[all]\nos_prefix=fh-lite-trial/\nkernel=kernel.img\ninitramfs initrd followkernel\ncmdline=cmdline.txt\n"
        );
        assert_eq!(
            std::fs::read_to_string(pi.fw().join(TRYBOOT)).unwrap(),
            expected
        );
        assert_eq!(std::fs::read(pi.fw().join(CONFIG)).unwrap(), CONFIG_TXT);
        // Nothing else: no temporary directory or file left.
        assert_eq!(
            pi.names(),
            ["config.txt", "fh-lite-trial", "start4.elf", "tryboot.txt"]
        );
        // Armed again (a retried trial): the same result.
        tb.arm_with(TOP, &plenty).unwrap();
        assert_eq!(
            pi.names(),
            ["config.txt", "fh-lite-trial", "start4.elf", "tryboot.txt"]
        );
        // Released (commit or fallback): only what was there before.
        tb.release().unwrap();
        assert_eq!(pi.names(), ["config.txt", "start4.elf"]);
        assert_eq!(std::fs::read(pi.fw().join(CONFIG)).unwrap(), CONFIG_TXT);
        tb.release().unwrap();
    }

    #[test]
    fn too_little_space_is_refused_before_anything_is_written() {
        let pi = Pi::new();
        let tb = pi.tb();
        let e = tb.arm_with(TOP, &|_| Some((500_000, 4096))).unwrap_err();
        assert_eq!(e.exit, Exit::Store);
        assert!(
            e.message.contains(&format!(
                "the Raspberry Pi firmware partition {} has 500000 bytes free, but the trial boot of {TOP} needs ",
                pi.fw().display()
            )),
            "{}",
            e.message
        );
        assert!(e.message.contains("sdImage.firmwareSize"), "{}", e.message);
        assert_eq!(pi.names(), ["config.txt", "start4.elf"]);
        // Exactly enough is enough.
        let needed: u64 = e
            .message
            .split(" needs ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(needed > 70_000 + 1024 * 1024, "{needed}");
        // Every file rounded up to the 4 KiB block: the kernel (70,000 B)
        // takes 73,728; initrd, two .dtb, the overlay, its README,
        // cmdline.txt and tryboot.txt one block each; plus 1 MiB.
        assert_eq!(needed, 73_728 + 7 * 4096 + 1024 * 1024);
        tb.arm_with(TOP, &|_| Some((needed, 4096))).unwrap();
        tb.arm_with(TOP, &|_| Some((needed - 1, 4096))).unwrap_err();
        assert_eq!(
            pi.names(),
            ["config.txt", "start4.elf"],
            "a refused re-arm removed the old copy too"
        );
    }

    #[test]
    fn a_symlink_leaving_the_store_path_is_refused_and_nothing_is_left() {
        // An overlay pointing out of the device trees' store path.
        let pi = Pi::new();
        std::fs::create_dir_all(pi.t.path().join("etc")).unwrap();
        std::fs::write(pi.t.path().join("etc/shadow"), "secret").unwrap();
        symlink(
            "/etc/shadow",
            pi.store(&format!("{LINUX}/dtbs/overlays/evil.dtbo")),
        )
        .unwrap();
        let e = pi.tb().arm_with(TOP, &plenty).unwrap_err();
        assert!(
            e.message.contains("evil.dtbo is a symbolic link to /etc/shadow, outside the device trees' store path; refused"),
            "{}",
            e.message
        );
        assert_eq!(pi.names(), ["config.txt", "start4.elf"]);
        // The toplevel's kernel pointing out of the store.
        let pi = Pi::new();
        let kernel = pi.store(TOP).join("kernel");
        std::fs::remove_file(&kernel).unwrap();
        std::fs::write(pi.t.path().join("etc-kernel"), "x").unwrap();
        symlink("/etc-kernel", &kernel).unwrap();
        let e = pi.tb().arm_with(TOP, &plenty).unwrap_err();
        assert!(
            e.message.contains("outside /nix/store; refused"),
            "{}",
            e.message
        );
        assert_eq!(pi.names(), ["config.txt", "start4.elf"]);
        // No device trees at all: refused (the firmware would ignore the
        // prefix without the board's .dtb).
        let pi = Pi::new();
        std::fs::remove_dir_all(pi.store(&format!("{LINUX}/dtbs/broadcom"))).unwrap();
        let e = pi.tb().arm_with(TOP, &plenty).unwrap_err();
        assert!(e.message.contains("has no device trees"), "{}", e.message);
        assert_eq!(pi.names(), ["config.txt", "start4.elf"]);
    }

    #[test]
    fn release_removes_a_copy_a_cut_run_left_half_done() {
        let pi = Pi::new();
        let tmp = pi.fw().join(".fh-lite-trial.tmp-123-456");
        std::fs::create_dir_all(tmp.join("overlays")).unwrap();
        std::fs::write(tmp.join("kernel.img"), "half").unwrap();
        std::fs::write(pi.fw().join(TRYBOOT), "old").unwrap();
        std::fs::write(pi.fw().join(".tryboot.txt.tmp-123-456"), "half").unwrap();
        pi.tb().release().unwrap();
        assert_eq!(pi.names(), ["config.txt", "start4.elf"]);
    }

    #[test]
    fn detection_needs_a_pi_and_its_firmware_partition() {
        let pi = Pi::new();
        let r = Some(pi.t.path());
        assert!(Tryboot::new(r, None).detect());
        // --firmware-dir names it elsewhere.
        let other = pi.t.path().join("mnt/fw");
        std::fs::create_dir_all(&other).unwrap();
        assert!(!Tryboot::new(r, Some(&other)).detect());
        std::fs::write(other.join(CONFIG), "arm_64bit=1\n").unwrap();
        assert!(Tryboot::new(r, Some(&other)).detect());
        // /boot/config.txt with firmware settings (no /boot/firmware one).
        std::fs::remove_file(pi.fw().join(CONFIG)).unwrap();
        assert!(!Tryboot::new(r, None).detect());
        std::fs::write(pi.t.path().join("boot/config.txt"), "# only a comment\n").unwrap();
        assert!(!Tryboot::new(r, None).detect());
        std::fs::write(pi.t.path().join("boot/config.txt"), "[all]\nkernel=x\n").unwrap();
        let tb = Tryboot::new(r, None);
        assert_eq!(tb.dir, pi.t.path().join("boot"));
        assert!(tb.detect());
        // An unmounted partition: refused before the trial starts.
        let unmounted = Tryboot::new(r, Some(&pi.t.path().join("mnt/empty")));
        let e = unmounted.config_present().unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
        assert!(
            e.message.contains("mnt/empty/config.txt does not exist"),
            "{}",
            e.message
        );
        assert!(tb.config_present().is_ok());
        // Not a Raspberry Pi.
        std::fs::write(
            pi.t.path().join("proc/device-tree/model"),
            "Pine64 RockPro64\0",
        )
        .unwrap();
        assert!(!tb.detect());
    }
}

#[cfg(test)]
mod steps {
    use super::tests::{Pi, TOP};
    use super::*;
    use crate::boot::{detect, prepare, Choice, Detected, Steps, TrialBoot, Where};

    /// The trial's steps with a power cut after `cut_after` of them.
    struct Cut {
        cut_after: usize,
        steps: usize,
    }

    impl Cut {
        fn tick(&mut self) -> Result<(), Error> {
            self.steps += 1;
            match self.steps > self.cut_after {
                true => Err(Error::new(Exit::Internal, "power cut")),
                false => Ok(()),
            }
        }
    }

    impl Steps for Cut {
        fn journal(&mut self, _: &TrialBoot) -> Result<(), Error> {
            self.tick()
        }
        fn boot_entries(&mut self, by_running: bool) -> Result<u64, Error> {
            assert!(by_running, "the running generation's boot");
            self.tick()?;
            Ok(2)
        }
    }

    /// Cut anywhere: config.txt is never touched, and a tryboot.txt only
    /// ever exists with its complete directory beside it.
    #[test]
    fn a_power_cut_at_any_step_leaves_config_txt_and_a_whole_tryboot() {
        let mut full = 0;
        for cut in 0..8 {
            let pi = Pi::new();
            let at = Where {
                root: Some(pi.t.path().to_path_buf()),
                profile: pi.t.path().join("nix/var/nix/profiles/system"),
                ..Where::default()
            };
            let Detected::Loader(loader) = detect(Choice::Auto, &at) else {
                panic!("tryboot not detected");
            };
            assert_eq!(loader.name(), "tryboot");
            let mut t = TrialBoot {
                store_path: TOP.to_string(),
                ..TrialBoot::default()
            };
            let mut steps = Cut {
                cut_after: cut,
                steps: 0,
            };
            let done = prepare(&loader, &mut t, &mut steps).is_ok();
            assert_eq!(
                std::fs::read(pi.fw().join(CONFIG)).unwrap(),
                super::tests::CONFIG_TXT,
                "cut after {cut}"
            );
            let names = pi.names();
            if names.contains(&TRYBOOT.to_string()) {
                assert!(pi.fw().join(DIR).join(CMDLINE).is_file(), "cut after {cut}");
            }
            if done {
                assert_eq!(t.phase, "rebooting");
                assert_eq!(t.entry.as_deref(), Some("fh-lite-trial/"));
                assert_eq!(t.pinned.as_deref(), Some("config.txt"));
                assert_eq!(
                    names,
                    ["config.txt", "fh-lite-trial", "start4.elf", "tryboot.txt"]
                );
                loader.release().unwrap();
                assert_eq!(pi.names(), ["config.txt", "start4.elf"]);
                full += 1;
            }
        }
        assert!(full > 0, "prepare never completed");
    }
}
