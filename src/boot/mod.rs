//! Trial boots: a new generation that needs a reboot is booted once, and
//! becomes the boot loader's persistent default only after it came up and
//! passed its health check on this machine (docs/crash-safety.md, "Trial
//! boots").
//!
//! ```text
//! apply --trial --reboot if-needed, reboot needed:
//!   journal "pinning"    pin the persistent default on the running entry
//!   journal "preparing"  generation N; the RUNNING generation's
//!                        switch-to-configuration boot: entries for every
//!                        generation (N too), the default its own
//!   journal "one-shot"   one-shot boot of N's entry
//!   journal "rebooting"  systemctl reboot
//! next boot (confirm-boot, also first in every apply):
//!   booted the new system  → health check → commit (N's `boot`: N is the
//!                                          default; release the pin)
//!                                          or fall back (profile back,
//!                                          its `boot`, release)
//!   back on the old system → "did not boot": fall back, path failed
//! ```
//!
//! The rule: the persistent default never points at a generation that has
//! not booted and passed its health check here. Nothing before the commit
//! runs the new generation's `boot`: the entries it boots from are written
//! by the running generation's `boot`, whose builder (NixOS's systemd-boot
//! and GRUB builders alike) lists every generation of the profile and
//! makes the system that invoked it the default, so the boot loader's own
//! default (loader.conf, grub.cfg) names the running system throughout,
//! also on firmware that loses the EFI variables written at run time. On
//! systemd-boot the pin (`LoaderEntryDefault` on the running entry) is
//! written before that anyway, and loader.conf's `default` is checked
//! after it (set to the running entry where it names another, e.g. when
//! the profile's generation was not the booted one). The one-shot is armed
//! after the entry exists, each step is journaled before it starts, and
//! only the commit runs the new generation's `boot` (then the pin goes),
//! so a power cut anywhere leaves the default on the running system, and
//! the next run finishes or undoes the trial.
//!
//! Settling a journaled trial boot (confirm-boot, and first in apply,
//! rollback and recover) is the command's: src/cmd/confirm_boot.rs.
//!
//! Backends: systemd-boot ([`systemd_boot`]: pin + one-shot EFI
//! variables); GRUB ([`grub`]: grubenv's `next_entry` boots the new
//! generation once); Raspberry Pi firmware tryboot ([`tryboot`]: the new
//! kernel, initrd and device trees copied to the firmware partition with a
//! `tryboot.txt` naming them, booted once by rebooting with `0 tryboot`).
//! All three: the running generation's `boot` lists the new one, the
//! commit runs the new generation's `boot`. U-Boot/extlinux has no backend
//! here (today's behaviour: commit, then reboot).
//!
//! Auto-detection order: systemd-boot first (its `LoaderInfo` variable is
//! proof that it booted this machine, also on a Pi with UEFI firmware,
//! whose firmware partition exists too), then tryboot (a Raspberry Pi by
//! its device tree with a firmware partition: config.txt starts the boot
//! there, before U-Boot or anything on the root), then GRUB (a grub.cfg
//! on the root does not prove GRUB boots the machine, so it comes after
//! the two that are proven by the firmware), then extlinux (no one-shot).

pub mod efivars;
pub mod grub;
pub mod record;
pub mod systemd_boot;
pub mod tryboot;

use std::path::{Path, PathBuf};

use crate::error::{Error, Exit};
use efivars::EfiVars;
use systemd_boot::SystemdBoot;

pub use record::{Choice, TrialBoot, TrialOutcome};

/// The steps of [`prepare`], journaled before each starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Pinning,
    Preparing,
    OneShot,
    Rebooting,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Pinning => "pinning",
            Step::Preparing => "preparing",
            Step::OneShot => "one-shot",
            Step::Rebooting => "rebooting",
        }
    }

    /// An unknown word reads as "one-shot": the one-shot may be set.
    pub fn parse(s: &str) -> Step {
        [
            Step::Pinning,
            Step::Preparing,
            Step::OneShot,
            Step::Rebooting,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .unwrap_or(Step::OneShot)
    }
}

/// A one-shot mechanism fh-lite can drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loader {
    SystemdBoot(SystemdBoot),
    Grub(grub::Grub),
    Tryboot(tryboot::Tryboot),
}

/// What [`detect`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Detected {
    Loader(Loader),
    /// No safe one-shot here: the sentence saying why (the apply then
    /// commits and reboots as without a trial boot).
    Unsupported(String),
}

/// A trial boot asked for: `--trial --reboot if-needed` (and where the
/// boot loader lives).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootTrial {
    pub choice: Choice,
    pub at: Where,
}

/// Where the boot loader lives: `--root`, `--efivars`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Where {
    pub root: Option<PathBuf>,
    pub efivars: Option<PathBuf>,
    /// The profile (real path), for GRUB's entry titles.
    pub profile: PathBuf,
    /// `--firmware-dir DIR`: the Raspberry Pi firmware partition.
    pub firmware: Option<PathBuf>,
}

impl Where {
    fn vars(&self) -> EfiVars {
        EfiVars::new(self.root.as_deref(), self.efivars.as_deref())
    }

    fn real(&self, logical: &str) -> PathBuf {
        self.root.as_deref().unwrap_or(Path::new("/")).join(logical)
    }
}

/// Find the one-shot mechanism for `choice`.
pub fn detect(choice: Choice, at: &Where) -> Detected {
    let vars = at.vars();
    let systemd_boot = || {
        let sb = SystemdBoot {
            vars: vars.clone(),
            root: at.root.clone(),
        };
        if let Some(entry) = sb.boot_counting() {
            return Detected::Unsupported(format!(
                "NixOS's own systemd-boot boot counting is on ({} has a tries suffix): it decides which entry boots, so fh-lite defers to it",
                entry.display()
            ));
        }
        Detected::Loader(Loader::SystemdBoot(sb))
    };
    let grub = || {
        Detected::Loader(Loader::Grub(grub::Grub::new(
            at.root.as_deref(),
            &at.profile,
        )))
    };
    let pi = tryboot::Tryboot::new(at.root.as_deref(), at.firmware.as_deref());
    match choice {
        Choice::None => Detected::Unsupported("--boot-loader none".to_string()),
        Choice::SystemdBoot => systemd_boot(),
        Choice::Grub => grub(),
        Choice::Tryboot => Detected::Loader(Loader::Tryboot(pi)),
        Choice::Auto if SystemdBoot::detect(&vars) => systemd_boot(),
        Choice::Auto if pi.detect() => Detected::Loader(Loader::Tryboot(pi)),
        Choice::Auto if grub::Grub::detect(at.root.as_deref()) => grub(),
        Choice::Auto if at.real("boot/extlinux/extlinux.conf").exists() => Detected::Unsupported(
            "U-Boot with extlinux has no safe one-shot boot (it needs bootcount, bootlimit and altbootcmd; see README)".to_string(),
        ),
        Choice::Auto => Detected::Unsupported(format!(
            "no boot loader with a one-shot boot found (no systemd-boot LoaderInfo in {})",
            vars.dir.display()
        )),
    }
}

impl Loader {
    pub fn name(&self) -> &'static str {
        match self {
            Loader::SystemdBoot(_) => "systemd-boot",
            Loader::Grub(_) => "grub",
            Loader::Tryboot(_) => "tryboot",
        }
    }

    /// Whether the running generation's `boot` writes the new entries in
    /// step 2 (its builder lists every generation of the profile and keeps
    /// the default on the system that invoked it), and the commit runs the
    /// new generation's `boot` (which makes it the default). Every loader
    /// here does: nothing before the commit makes the new generation the
    /// boot loader's own default.
    pub fn entries_by_running(&self) -> bool {
        matches!(
            self,
            Loader::Grub(_) | Loader::SystemdBoot(_) | Loader::Tryboot(_)
        )
    }

    /// Rebuild the loader a journal entry names.
    pub fn of_journal(
        t: &TrialBoot,
        root: Option<&Path>,
        efivars: Option<&Path>,
        firmware: Option<&Path>,
        profile: &Path,
    ) -> Loader {
        if t.loader == "grub" {
            return Loader::Grub(grub::Grub::new(root, profile));
        }
        if t.loader == "tryboot" {
            let journaled = t.firmware_dir.as_ref().map(PathBuf::from);
            return Loader::Tryboot(tryboot::Tryboot::new(
                root,
                firmware.or(journaled.as_deref()),
            ));
        }
        let efivars = efivars
            .map(Path::to_path_buf)
            .or(t.efivars.as_ref().map(PathBuf::from));
        Loader::SystemdBoot(SystemdBoot {
            vars: EfiVars::new(root, efivars.as_deref()),
            root: root.map(Path::to_path_buf),
        })
    }

    /// The running entry (what the pin keeps as the default).
    pub fn running_entry(&self) -> Result<String, Error> {
        match self {
            Loader::SystemdBoot(sb) => match sb.booted_entry() {
                Ok(Some(e)) if !e.is_empty() => Ok(e),
                Ok(_) => Err(Error::new(
                    Exit::Usage,
                    format!(
                        "a trial boot needs the running entry, but systemd-boot's {} is missing in {}",
                        systemd_boot::SELECTED,
                        sb.vars.dir.display()
                    ),
                )),
                Err(e) => Err(self.error("read", systemd_boot::SELECTED, &e)),
            },
            // The first entry: the running system's, as its `boot` writes it.
            Loader::Grub(_) => Ok("NixOS - Default".to_string()),
            // The firmware's persistent configuration (checked before
            // anything changes: the partition may not be mounted).
            Loader::Tryboot(p) => p.config_present().map(|()| tryboot::CONFIG.to_string()),
        }
    }

    /// The entry of generation `n`, spelled like `running` (the id the
    /// loader reported for the running entry: with or without `.conf`).
    pub fn entry(&self, n: u64, running: &str) -> Result<String, Error> {
        match self {
            Loader::SystemdBoot(_) => {
                let id = SystemdBoot::entry(n);
                Ok(match running.ends_with(".conf") {
                    true => id,
                    false => id.trim_end_matches(".conf").to_string(),
                })
            }
            Loader::Grub(g) => g.title_of(n).map_err(|e| {
                Error::new(
                    Exit::ActivationFailed,
                    format!(
                        "the GRUB title of generation {n} (its link in {} and its nixos-version): {e}",
                        g.profile.display()
                    ),
                )
            }),
            Loader::Tryboot(_) => Ok(format!("{}/", tryboot::DIR)),
        }
    }

    fn error(&self, what: &str, var: &str, e: &std::io::Error) -> Error {
        match self {
            Loader::SystemdBoot(sb) => Error::new(
                Exit::Internal,
                format!(
                    "{what} EFI variable {}: {e}",
                    sb.vars
                        .dir
                        .join(EfiVars::file_name(var, systemd_boot::GUID))
                        .display()
                ),
            ),
            Loader::Grub(g) => Error::new(
                Exit::Internal,
                format!("{what} {var} in {}: {e}", g.env.display()),
            ),
            Loader::Tryboot(p) => Error::new(
                Exit::Internal,
                format!("{what} {var} in {}: {e}", p.dir.display()),
            ),
        }
    }

    pub fn pin(&self, entry: &str) -> Result<(), Error> {
        match self {
            Loader::SystemdBoot(sb) => sb
                .pin(entry)
                .map_err(|e| self.error("write", systemd_boot::DEFAULT, &e)),
            // Nothing to pin: the default is the system whose `boot` ran
            // (and config.txt is not touched).
            Loader::Grub(_) | Loader::Tryboot(_) => Ok(()),
        }
    }

    /// Arm the one-shot boot of `entry`, the system `store_path`.
    pub fn one_shot(&self, entry: &str, store_path: &str) -> Result<(), Error> {
        match self {
            Loader::SystemdBoot(sb) => {
                if sb.has_entry(entry) == Some(false) {
                    return Err(Error::new(
                        Exit::ActivationFailed,
                        format!("switch-to-configuration boot wrote no boot entry {entry} (looked in the ESP's loader/entries)"),
                    ));
                }
                sb.one_shot(entry)
                    .map_err(|e| self.error("write", systemd_boot::ONESHOT, &e))
            }
            Loader::Grub(g) => g
                .one_shot(entry)
                .map_err(|e| self.error("write", "next_entry", &e)),
            Loader::Tryboot(p) => p.arm(store_path),
        }
    }

    /// systemd-boot: check that loader.conf's `default` names `entry` (the
    /// running one, as pinned), and set it so where it names another (the
    /// running generation's `boot` normally wrote exactly that: then
    /// nothing is written), so that firmware which loses the EFI variables
    /// written at run time still boots it; the value the line had. No ESP
    /// mounted here: the pin alone holds it (said in one line when `say`).
    /// GRUB, tryboot: nothing (the default is the system whose `boot` ran).
    pub fn hold_default(&self, entry: &str, say: bool) -> Result<Option<String>, Error> {
        let Loader::SystemdBoot(sb) = self else {
            return Ok(None);
        };
        match sb.set_conf_default(entry) {
            Ok(Some((_, before))) => Ok(before),
            Ok(None) => {
                if !say {
                    return Ok(None);
                }
                crate::ui::warn(&format!(
                    "no ESP (loader/loader.conf or loader/entries) found at /boot, /efi or /boot/efi under {}: only the {} EFI variable keeps the default on {entry} during the trial boot",
                    sb.root.as_deref().unwrap_or(Path::new("/")).display(),
                    systemd_boot::DEFAULT
                ));
                Ok(None)
            }
            Err(e) => Err(conf_error(sb, entry, &e)),
        }
    }

    /// The commit, after the new generation's `boot` ran (it wrote
    /// loader.conf's `default` for its own entry): check that the line
    /// names the new entry, before the pin goes; nothing is written when
    /// it does. A journal written by an earlier fh-lite, which ran the new
    /// generation's `boot` in step 2 and held the line on the running
    /// entry, has the builder's value in `conf_default`: that value (the
    /// same entry) is used. GRUB, tryboot: nothing here.
    pub fn commit_default(&self, t: &TrialBoot) -> Result<(), Error> {
        let Loader::SystemdBoot(sb) = self else {
            return Ok(());
        };
        let Some(value) = t.conf_default.as_ref().or(t.entry.as_ref()) else {
            return Ok(());
        };
        sb.set_conf_default(value)
            .map(|_| ())
            .map_err(|e| conf_error(sb, value, &e))
    }

    /// Remove the one-shot and the pin.
    pub fn release(&self) -> Result<(), Error> {
        match self {
            Loader::SystemdBoot(sb) => sb
                .release()
                .map_err(|e| self.error("remove", systemd_boot::DEFAULT, &e)),
            Loader::Grub(g) => g
                .release()
                .map_err(|e| self.error("clear", "next_entry", &e)),
            Loader::Tryboot(p) => p.release(),
        }
    }
}

fn conf_error(sb: &SystemdBoot, value: &str, e: &std::io::Error) -> Error {
    let file = match sb.loader_dir() {
        Some(d) => d.join(systemd_boot::LOADER_CONF),
        None => PathBuf::from("loader/loader.conf"),
    };
    Error::new(
        Exit::Internal,
        format!(
            "cannot set the default of {} to {value}: {e}",
            file.display()
        ),
    )
}

/// What [`prepare`] needs from the activation layer.
pub trait Steps {
    /// Write the journal entry (its phase is the step about to start).
    fn journal(&mut self, t: &TrialBoot) -> Result<(), Error>;
    /// Create the generation, point the profile at it and run its
    /// `switch-to-configuration boot` (`by_running`: the running
    /// generation's); its number.
    fn boot_entries(&mut self, by_running: bool) -> Result<u64, Error>;
}

/// Pin, generation and entries, one-shot; each step journaled first.
/// Ok: ready to reboot (journaled "rebooting"). Err: the step that
/// failed; the journal says how far it got (the caller undoes it).
pub fn prepare(loader: &Loader, t: &mut TrialBoot, steps: &mut dyn Steps) -> Result<(), Error> {
    let running = loader.running_entry()?;
    t.loader = loader.name().to_string();
    t.pinned = Some(running.clone());
    t.phase = Step::Pinning.as_str().to_string();
    steps.journal(t)?;
    loader.pin(&running)?;
    t.phase = Step::Preparing.as_str().to_string();
    steps.journal(t)?;
    let n = steps.boot_entries(loader.entries_by_running())?;
    // The running generation's `boot` named itself in loader.conf: a
    // check (and a repair where it names another entry) before anything
    // can boot. Nothing to put back at the commit: the new generation's
    // `boot` writes its own default then (`conf_default` stays null).
    loader.hold_default(&running, true)?;
    let entry = loader.entry(n, &running)?;
    t.generation = Some(n);
    t.entry = Some(entry.clone());
    t.phase = Step::OneShot.as_str().to_string();
    steps.journal(t)?;
    loader.one_shot(&entry, &t.store_path)?;
    t.phase = Step::Rebooting.as_str().to_string();
    steps.journal(t)
}

/// What the next run does with a journaled trial boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The new system is booted: run its health check, then commit or
    /// fall back.
    Check,
    /// The machine rebooted after the one-shot was set, and came back on
    /// the old system: "did not boot".
    DidNotBoot,
    /// The trial stopped before its one-shot could take effect (a crash
    /// or power cut before it was set): undo it; the path is not failed.
    Undo,
    /// Same boot, the reboot still to come (it failed, or is outside the
    /// reboot window): leave it.
    Wait,
}

/// Decide from the journal, this boot's id and `/run/booted-system`.
pub fn decide(t: &TrialBoot, boot_id: &str, booted: Option<&str>) -> Decision {
    let step = Step::parse(&t.phase);
    if booted == Some(t.store_path.as_str()) && step != Step::Pinning {
        return Decision::Check;
    }
    let rebooted = t.boot_id != boot_id;
    // tryboot: the one-shot is the reboot itself (its argument sets the
    // firmware's flag); any other reboot boots config.txt, the old system.
    let by_reboot = t.loader == "tryboot";
    match (rebooted, step) {
        (false, Step::Rebooting) => Decision::Wait,
        (false, _) => Decision::Undo,
        (true, Step::OneShot) if by_reboot => Decision::Undo,
        (true, Step::Rebooting) if by_reboot && t.reboot_requested.is_none() => Decision::Undo,
        (true, Step::OneShot | Step::Rebooting) => Decision::DidNotBoot,
        (true, Step::Pinning | Step::Preparing) => Decision::Undo,
    }
}

/// `/run/booted-system` resolved (under `--root`).
pub fn booted_system(root: Option<&Path>) -> Option<String> {
    resolve(root, Path::new("/run/booted-system")).map(|p| p.to_string_lossy().into_owned())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or "" when unknown.
pub fn boot_id() -> String {
    crate::util::boot_id().unwrap_or_default()
}

/// Whether a hardware watchdog looks armed: systemd's runtime watchdog
/// (`RuntimeWatchdogUSec` of PID 1 is not 0/infinity) is not readable
/// without D-Bus, so this looks for a watchdog device that is active
/// (`/sys/class/watchdog/*/state` = "active"). None: no watchdog device.
pub fn watchdog_armed(root: Option<&Path>) -> Option<bool> {
    let dir = root.unwrap_or(Path::new("/")).join("sys/class/watchdog");
    let entries = std::fs::read_dir(dir).ok()?;
    let mut any = false;
    for e in entries.flatten() {
        any = true;
        if std::fs::read_to_string(e.path().join("state")).is_ok_and(|s| s.trim() == "active") {
            return Some(true);
        }
    }
    any.then_some(false)
}

/// As NixOS's autoUpgrade checks: kernel, initrd or kernel-modules of the
/// system `new` resolve elsewhere than the booted system's, at `root`. No
/// booted system: false.
pub(crate) fn kernel_differs_at(root: Option<&Path>, new: &str) -> bool {
    let Some(booted) = resolve(root, Path::new("/run/booted-system")) else {
        return false;
    };
    ["kernel", "initrd", "kernel-modules"]
        .iter()
        .any(|f| resolve(root, &booted.join(f)) != resolve(root, &Path::new(new).join(f)))
}

/// `logical` resolved as the managed system sees it (symlinks followed
/// beneath `root`); None when it does not exist.
pub(crate) fn resolve(root: Option<&Path>, logical: &Path) -> Option<PathBuf> {
    let real = crate::rootfs::resolve_in_root(root.unwrap_or(Path::new("/")), logical).ok()?;
    Some(crate::rootfs::logical(root, &real))
}

#[cfg(test)]
mod tests {
    use super::*;
    use systemd_boot::{DEFAULT, GUID, INFO, ONESHOT, SELECTED};

    fn trial(phase: Step) -> TrialBoot {
        TrialBoot {
            store_path: "/nix/store/new".into(),
            previous_system: Some("/nix/store/old".into()),
            phase: phase.as_str().into(),
            boot_id: "boot-1".into(),
            ..<TrialBoot as Default>::default()
        }
    }

    #[test]
    fn decisions() {
        let new = Some("/nix/store/new");
        let old = Some("/nix/store/old");
        // Booted the new system: check it (commit or fall back).
        assert_eq!(
            decide(&trial(Step::Rebooting), "boot-2", new),
            Decision::Check
        );
        assert_eq!(
            decide(&trial(Step::OneShot), "boot-2", new),
            Decision::Check
        );
        // Back on the old one after the one-shot: did not boot.
        assert_eq!(
            decide(&trial(Step::Rebooting), "boot-2", old),
            Decision::DidNotBoot
        );
        assert_eq!(
            decide(&trial(Step::OneShot), "boot-2", old),
            Decision::DidNotBoot
        );
        // Before the one-shot: undone, never "did not boot".
        assert_eq!(
            decide(&trial(Step::Preparing), "boot-2", old),
            Decision::Undo
        );
        assert_eq!(decide(&trial(Step::Pinning), "boot-1", old), Decision::Undo);
        assert_eq!(decide(&trial(Step::OneShot), "boot-1", old), Decision::Undo);
        // Same boot, journaled for the reboot: wait for it.
        assert_eq!(
            decide(&trial(Step::Rebooting), "boot-1", old),
            Decision::Wait
        );
    }

    /// tryboot's one-shot is the reboot with its argument: back on the old
    /// system is "did not boot" only after fh-lite asked for that reboot
    /// (a power cut or a plain reboot before it boots config.txt).
    #[test]
    fn tryboot_decisions() {
        let (new, old) = (Some("/nix/store/new"), Some("/nix/store/old"));
        let tb = |phase: Step, requested: bool| TrialBoot {
            loader: "tryboot".into(),
            reboot_requested: requested.then(|| "boot-1".to_string()),
            ..trial(phase)
        };
        let cases = [
            (tb(Step::OneShot, false), "boot-2", old, Decision::Undo),
            (tb(Step::Rebooting, false), "boot-2", old, Decision::Undo),
            (
                tb(Step::Rebooting, true),
                "boot-2",
                old,
                Decision::DidNotBoot,
            ),
            (tb(Step::Rebooting, true), "boot-2", new, Decision::Check),
            (tb(Step::Rebooting, false), "boot-1", old, Decision::Wait),
            (tb(Step::Rebooting, true), "boot-1", old, Decision::Wait),
            (tb(Step::Preparing, false), "boot-2", old, Decision::Undo),
        ];
        for (t, id, booted, want) in cases {
            assert_eq!(decide(&t, id, booted), want, "{t:?} {id} {booted:?}");
        }
    }

    /// A fake ESP and efivars dir; the default as systemd-boot picks it:
    /// LoaderEntryDefault if set, else loader.conf's `default`.
    struct Machine {
        t: crate::testutil::TempDir,
        cut_after: usize,
        steps: usize,
        next_gen: u64,
        /// The last phase journaled.
        journaled: String,
    }

    impl Machine {
        fn new(cut_after: usize) -> Machine {
            let t = crate::testutil::TempDir::new("trial-steps");
            let entries = t.path().join("boot/loader/entries");
            std::fs::create_dir_all(&entries).unwrap();
            std::fs::create_dir_all(t.path().join("vars")).unwrap();
            std::fs::write(entries.join("nixos-generation-1.conf"), "").unwrap();
            std::fs::write(
                t.path().join("boot/loader/loader.conf"),
                "default nixos-generation-1.conf\n",
            )
            .unwrap();
            let m = Machine {
                t,
                cut_after,
                steps: 0,
                next_gen: 2,
                journaled: String::new(),
            };
            let v = m.vars();
            v.write(INFO, GUID, "systemd-boot 252").unwrap();
            v.write(SELECTED, GUID, "nixos-generation-1.conf").unwrap();
            m
        }
        fn vars(&self) -> EfiVars {
            EfiVars::new(None, Some(&self.t.path().join("vars")))
        }
        fn at(&self) -> Where {
            Where {
                root: Some(self.t.path().to_path_buf()),
                efivars: Some(self.t.path().join("vars")),
                profile: self.t.path().join("nix/var/nix/profiles/system"),
                firmware: None,
            }
        }
        fn tick(&mut self) -> Result<(), Error> {
            self.steps += 1;
            match self.steps > self.cut_after {
                true => Err(Error::new(Exit::Internal, "power cut")),
                false => Ok(()),
            }
        }
        /// What boots after a reset: (once, persistent default).
        fn boots(&self) -> (Option<String>, String) {
            let v = self.vars();
            let conf =
                std::fs::read_to_string(self.t.path().join("boot/loader/loader.conf")).unwrap();
            let conf_default = conf
                .lines()
                .find_map(|l| l.strip_prefix("default "))
                .unwrap_or_default()
                .to_string();
            let default = v.read(DEFAULT, GUID).unwrap().unwrap_or(conf_default);
            (v.read(ONESHOT, GUID).unwrap(), default)
        }
    }

    impl Machine {
        /// NixOS's systemd-boot builder run by generation `by`'s
        /// `switch-to-configuration boot`: an entry for every generation
        /// of the profile, then loader.conf (temporary file, rename) with
        /// `default` naming the generation of the system that invoked it.
        fn builder(&mut self, by: u64, generations: u64) -> Result<(), Error> {
            for g in 1..=generations {
                let e = format!("nixos-generation-{g}.conf");
                std::fs::write(self.t.path().join("boot/loader/entries").join(&e), "").unwrap();
                self.tick()?;
            }
            std::fs::write(
                self.t.path().join("boot/loader/loader.conf"),
                format!("timeout 0\ndefault nixos-generation-{by}.conf\neditor 0\n"),
            )
            .unwrap();
            self.tick()
        }
        fn conf(&self) -> String {
            std::fs::read_to_string(self.t.path().join("boot/loader/loader.conf")).unwrap()
        }
    }

    impl Steps for Machine {
        fn journal(&mut self, t: &TrialBoot) -> Result<(), Error> {
            self.tick()?;
            self.journaled = t.phase.clone();
            Ok(())
        }
        fn boot_entries(&mut self, by_running: bool) -> Result<u64, Error> {
            self.tick()?;
            // The generation made (the profile on it), then the `boot` of
            // the running generation (1) or of the new one.
            let n = self.next_gen;
            self.builder(if by_running { 1 } else { n }, n)?;
            Ok(n)
        }
    }

    /// The commit as confirm-boot does it: the new generation's `boot`,
    /// loader.conf's default checked, the one-shot and the pin removed.
    fn commit(m: &mut Machine, loader: &Loader, t: &TrialBoot) {
        m.cut_after = usize::MAX;
        m.builder(2, 2).unwrap();
        loader.commit_default(t).unwrap();
        loader.release().unwrap();
    }

    /// Cut the power after each step, also inside the builder's run in
    /// step 2: the persistent default is always the running generation,
    /// by the pin and by loader.conf alike (firmware that loses the EFI
    /// variables boots loader.conf's); the new one is only ever a
    /// one-shot, and loader.conf names it only after the commit.
    #[test]
    fn a_power_cut_at_any_step_leaves_the_default_on_the_running_entry() {
        let mut full = 0;
        for cut in 0..20 {
            let mut m = Machine::new(cut);
            let Detected::Loader(loader) = detect(Choice::Auto, &m.at()) else {
                panic!("systemd-boot not detected");
            };
            let mut t = <TrialBoot as Default>::default();
            let done = prepare(&loader, &mut t, &mut m).is_ok();
            let (once, default) = m.boots();
            assert_eq!(default, "nixos-generation-1.conf", "cut after {cut} steps");
            assert!(
                m.conf().contains("default nixos-generation-1.conf\n"),
                "cut after {cut} steps (journaled {}): loader.conf is {:?}",
                m.journaled,
                m.conf()
            );
            assert!(
                once.is_none() || once.as_deref() == Some("nixos-generation-2.conf"),
                "cut after {cut}: {once:?}"
            );
            if done {
                assert_eq!(once.as_deref(), Some("nixos-generation-2.conf"));
                assert_eq!(t.phase, "rebooting");
                assert_eq!(t.pinned.as_deref(), Some("nixos-generation-1.conf"));
                assert_eq!(t.conf_default, None, "nothing to put back at the commit");
                full += 1;
            }
        }
        assert!(full > 0, "prepare never completed");
        // Committing: the new generation's `boot` names it in loader.conf,
        // the pin is released.
        let mut m = Machine::new(100);
        let Detected::Loader(loader) = detect(Choice::Auto, &m.at()) else {
            panic!()
        };
        let mut t = <TrialBoot as Default>::default();
        prepare(&loader, &mut t, &mut m).unwrap();
        commit(&mut m, &loader, &t);
        assert_eq!(m.boots(), (None, "nixos-generation-2.conf".to_string()));
    }

    /// Firmware that loses the EFI variables written at run time boots
    /// loader.conf's default: it names the running entry, exactly as the
    /// running generation's builder wrote it (fh-lite writes nothing
    /// there), right after step 2 and until the commit, where the new
    /// generation's `boot` names the new entry while the pin still holds.
    #[test]
    fn loader_conf_names_the_running_entry_until_the_commit() {
        let built = |n: u64| format!("timeout 0\ndefault nixos-generation-{n}.conf\neditor 0\n");
        let mut full = 0;
        for cut in 0..20 {
            let mut m = Machine::new(cut);
            let Detected::Loader(loader) = detect(Choice::Auto, &m.at()) else {
                panic!("systemd-boot not detected");
            };
            let mut t = <TrialBoot as Default>::default();
            let done = prepare(&loader, &mut t, &mut m).is_ok();
            if matches!(m.journaled.as_str(), "preparing" | "one-shot" | "rebooting") {
                assert!(
                    m.conf() == built(1) || m.conf() == "default nixos-generation-1.conf\n",
                    "cut after {cut} steps, journaled {}: {:?}",
                    m.journaled,
                    m.conf()
                );
            }
            if done {
                full += 1;
                assert_eq!(m.conf(), built(1), "right after step 2");
                // The commit: the new generation's `boot`, then no pin.
                m.cut_after = usize::MAX;
                m.builder(2, 2).unwrap();
                loader.commit_default(&t).unwrap();
                assert_eq!(m.conf(), built(2), "nothing stale put back");
                assert_eq!(
                    m.vars().read(DEFAULT, GUID).unwrap().as_deref(),
                    Some("nixos-generation-1.conf"),
                    "the pin stays until the release"
                );
                loader.release().unwrap();
                assert_eq!(m.boots(), (None, "nixos-generation-2.conf".to_string()));
            }
        }
        assert!(full > 0, "prepare never completed");
    }

    /// A journal written by an earlier version (the new generation's `boot`
    /// ran in step 2, loader.conf held on the running entry, the builder's
    /// value in `conf_default`), settled by this one: the commit runs the
    /// new generation's `boot` again and ends on the new entry; a fallback
    /// ends on the running one.
    #[test]
    fn a_journal_of_the_earlier_order_still_settles() {
        let earlier = |m: &mut Machine, loader: &Loader| {
            let mut t = TrialBoot {
                pinned: Some("nixos-generation-1.conf".into()),
                generation: Some(2),
                entry: Some("nixos-generation-2.conf".into()),
                loader: "systemd-boot".into(),
                phase: "rebooting".into(),
                ..<TrialBoot as Default>::default()
            };
            loader.pin("nixos-generation-1.conf").unwrap();
            m.builder(2, 2).unwrap();
            t.conf_default = loader
                .hold_default("nixos-generation-1.conf", false)
                .unwrap();
            loader
                .one_shot("nixos-generation-2.conf", "/nix/store/new")
                .unwrap();
            t
        };
        let mut m = Machine::new(usize::MAX);
        let Detected::Loader(loader) = detect(Choice::Auto, &m.at()) else {
            panic!()
        };
        let t = earlier(&mut m, &loader);
        assert_eq!(t.conf_default.as_deref(), Some("nixos-generation-2.conf"));
        assert_eq!(m.boots().1, "nixos-generation-1.conf");
        assert!(m.conf().contains("default nixos-generation-1.conf\n"));
        commit(&mut m, &loader, &t);
        assert_eq!(m.boots(), (None, "nixos-generation-2.conf".to_string()));
        assert!(m.conf().contains("default nixos-generation-2.conf\n"));
        // Falling back from it: held, the old generation's `boot`, released.
        let mut m = Machine::new(usize::MAX);
        let loader = loader_of(&m);
        let t = earlier(&mut m, &loader);
        loader
            .hold_default(t.pinned.as_deref().unwrap(), false)
            .unwrap();
        m.builder(1, 2).unwrap();
        loader.release().unwrap();
        assert_eq!(m.boots(), (None, "nixos-generation-1.conf".to_string()));
    }

    fn loader_of(m: &Machine) -> Loader {
        let Detected::Loader(loader) = detect(Choice::Auto, &m.at()) else {
            panic!()
        };
        loader
    }

    /// The check after step 2 writes nothing when loader.conf names the
    /// running entry (with or without `.conf`), and repairs it where the
    /// running generation's `boot` named another (the profile was on a
    /// generation that had not booted).
    #[test]
    fn the_hold_is_a_check_and_a_repair() {
        let m = Machine::new(usize::MAX);
        let loader = loader_of(&m);
        let conf = m.t.path().join("boot/loader/loader.conf");
        std::fs::write(&conf, "timeout 0\ndefault nixos-generation-1.conf\n").unwrap();
        let before = std::fs::metadata(&conf).unwrap();
        use std::os::unix::fs::MetadataExt;
        for running in ["nixos-generation-1.conf", "nixos-generation-1"] {
            assert_eq!(
                loader.hold_default(running, false).unwrap().as_deref(),
                Some("nixos-generation-1.conf")
            );
            let after = std::fs::metadata(&conf).unwrap();
            assert_eq!(after.ino(), before.ino(), "not rewritten");
        }
        std::fs::write(&conf, "timeout 0\ndefault nixos-generation-3.conf\n").unwrap();
        loader
            .hold_default("nixos-generation-1.conf", false)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "timeout 0\ndefault nixos-generation-1.conf\n"
        );
    }

    /// A fake GRUB machine: grub.cfg's default is the system whose `boot`
    /// ran last (`default` file), the one-shot is grubenv's next_entry.
    struct GrubMachine {
        t: crate::testutil::TempDir,
        cut_after: usize,
        steps: usize,
    }

    impl GrubMachine {
        fn new(cut_after: usize) -> GrubMachine {
            let t = crate::testutil::TempDir::new("grub-steps");
            let r = t.path();
            std::fs::create_dir_all(r.join("boot/grub")).unwrap();
            std::fs::create_dir_all(r.join("vars")).unwrap();
            std::fs::write(r.join("boot/grub/grub.cfg"), "").unwrap();
            std::fs::write(r.join("boot/grub/default"), "1").unwrap();
            std::fs::create_dir_all(r.join("nix/var/nix/profiles")).unwrap();
            std::fs::create_dir_all(r.join("sys2")).unwrap();
            std::fs::write(r.join("sys2/nixos-version"), "25.05.v2\n").unwrap();
            std::os::unix::fs::symlink("/sys2", r.join("nix/var/nix/profiles/system-2-link"))
                .unwrap();
            GrubMachine {
                t,
                cut_after,
                steps: 0,
            }
        }
        fn at(&self) -> Where {
            Where {
                root: Some(self.t.path().to_path_buf()),
                efivars: Some(self.t.path().join("vars")),
                profile: self.t.path().join("nix/var/nix/profiles/system"),
                firmware: None,
            }
        }
        fn tick(&mut self) -> Result<(), Error> {
            self.steps += 1;
            match self.steps > self.cut_after {
                true => Err(Error::new(Exit::Internal, "power cut")),
                false => Ok(()),
            }
        }
        fn default(&self) -> String {
            std::fs::read_to_string(self.t.path().join("boot/grub/default")).unwrap()
        }
    }

    impl Steps for GrubMachine {
        fn journal(&mut self, _: &TrialBoot) -> Result<(), Error> {
            self.tick()
        }
        fn boot_entries(&mut self, by_running: bool) -> Result<u64, Error> {
            self.tick()?;
            let wrote = if by_running { "1" } else { "2" };
            std::fs::write(self.t.path().join("boot/grub/default"), wrote).unwrap();
            self.tick()?;
            Ok(2)
        }
    }

    #[test]
    fn grub_a_power_cut_at_any_step_leaves_the_default_on_the_running_system() {
        let mut full = 0;
        for cut in 0..12 {
            let mut m = GrubMachine::new(cut);
            let Detected::Loader(loader) = detect(Choice::Auto, &m.at()) else {
                panic!("GRUB not detected");
            };
            assert_eq!(loader.name(), "grub");
            let mut t = <TrialBoot as Default>::default();
            let done = prepare(&loader, &mut t, &mut m).is_ok();
            assert_eq!(m.default(), "1", "cut after {cut} steps");
            let env = grub::read(&m.t.path().join("boot/grub/grubenv")).unwrap();
            let next = env.get("next_entry").map(str::to_string);
            let title_ok = |n: &str| {
                n.starts_with("NixOS - All configurations>NixOS - Configuration 2 (")
                    && n.ends_with(" - 25.05.v2)")
            };
            // A one-shot is only ever the new generation, armed after the
            // running one's `boot` listed it.
            assert!(
                next.as_deref().is_none_or(title_ok),
                "cut after {cut}: {next:?}"
            );
            if done {
                assert!(next.is_some(), "next_entry set");
                full += 1;
                loader.release().unwrap();
                let env = grub::read(&m.t.path().join("boot/grub/grubenv")).unwrap();
                assert_eq!(env.get("next_entry"), None);
            }
        }
        assert!(full > 0, "prepare never completed");
    }

    #[test]
    fn the_new_entry_is_spelled_like_the_running_one() {
        let m = Machine::new(0);
        let Detected::Loader(loader) = detect(Choice::Auto, &m.at()) else {
            panic!()
        };
        assert_eq!(
            loader.entry(2, "nixos-generation-1.conf").unwrap(),
            "nixos-generation-2.conf"
        );
        assert_eq!(
            loader.entry(2, "nixos-generation-1").unwrap(),
            "nixos-generation-2"
        );
    }

    #[test]
    fn detection() {
        let m = Machine::new(0);
        assert!(matches!(detect(Choice::Auto, &m.at()), Detected::Loader(_)));
        m.vars().remove(INFO, GUID).unwrap();
        assert!(matches!(
            detect(Choice::Auto, &m.at()),
            Detected::Unsupported(_)
        ));
        std::fs::write(
            m.t.path()
                .join("boot/loader/entries/nixos-generation-1+3.conf"),
            "",
        )
        .unwrap();
        let Detected::Unsupported(why) = detect(Choice::SystemdBoot, &m.at()) else {
            panic!()
        };
        assert!(why.contains("boot counting is on"), "{why}");
        assert!(matches!(
            detect(Choice::None, &m.at()),
            Detected::Unsupported(_)
        ));
    }
}
