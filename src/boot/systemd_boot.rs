//! systemd-boot's one-shot boot: the loader's EFI variables under its
//! vendor GUID, written through efivarfs ([`super::efivars`]).
//!
//! - `LoaderInfo` exists when systemd-boot booted this machine (detection).
//! - `LoaderEntrySelected`: the entry it booted (the running one).
//! - `LoaderEntryDefault`: overrides `default` in `loader/loader.conf`:
//!   fh-lite pins the running entry there before a trial boot.
//! - `LoaderEntryOneShot`: boot this entry once; systemd-boot deletes it
//!   when it reads it, so a reset or power cut during that boot falls back
//!   to the default.
//!
//! NixOS's builder names entries `nixos-generation-N.conf` (a
//! specialisation: `nixos-generation-N-specialisation-NAME.conf`). With
//! NixOS's own boot counting on, entries carry a `+LEFT[-DONE]` tries
//! suffix and systemd-bless-boot decides: fh-lite then defers to it.

use std::io;
use std::path::{Path, PathBuf};

use super::efivars::EfiVars;

/// systemd-boot's vendor GUID.
pub const GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
pub const INFO: &str = "LoaderInfo";
pub const SELECTED: &str = "LoaderEntrySelected";
pub const DEFAULT: &str = "LoaderEntryDefault";
pub const ONESHOT: &str = "LoaderEntryOneShot";

/// Where the ESP may be mounted (inside the root).
const ESP_MOUNTS: [&str; 3] = ["boot", "efi", "boot/efi"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemdBoot {
    pub vars: EfiVars,
    /// `--root` (the ESP is looked for beneath it).
    pub root: Option<PathBuf>,
}

impl SystemdBoot {
    /// Whether systemd-boot booted this machine (its `LoaderInfo`).
    pub fn detect(vars: &EfiVars) -> bool {
        vars.exists(INFO, GUID)
    }

    /// The entry id NixOS's builder gives a generation.
    pub fn entry(generation: u64) -> String {
        format!("nixos-generation-{generation}.conf")
    }

    /// The entry systemd-boot booted (`LoaderEntrySelected`).
    pub fn booted_entry(&self) -> io::Result<Option<String>> {
        self.vars.read(SELECTED, GUID)
    }

    #[cfg(test)]
    /// The persistent default as the loader sees it: `LoaderEntryDefault`
    /// if set, else None (loader.conf's `default` applies).
    pub fn pinned(&self) -> io::Result<Option<String>> {
        self.vars.read(DEFAULT, GUID)
    }

    #[cfg(test)]
    pub fn one_shot_entry(&self) -> io::Result<Option<String>> {
        self.vars.read(ONESHOT, GUID)
    }

    /// Keep the persistent default on `entry` whatever loader.conf says.
    pub fn pin(&self, entry: &str) -> io::Result<()> {
        self.vars.write(DEFAULT, GUID, entry)
    }

    /// Boot `entry` once, on the next boot only.
    pub fn one_shot(&self, entry: &str) -> io::Result<()> {
        self.vars.write(ONESHOT, GUID, entry)
    }

    /// Remove the one-shot and the pin: loader.conf's default (written by
    /// `switch-to-configuration boot`) applies again. The one-shot goes
    /// first: a pin without a one-shot is always safe.
    pub fn release(&self) -> io::Result<()> {
        self.vars.remove(ONESHOT, GUID)?;
        self.vars.remove(DEFAULT, GUID)
    }

    /// The `loader/entries` directories of the ESP, where mounted.
    fn entries_dirs(&self) -> Vec<PathBuf> {
        let root = self.root.as_deref().unwrap_or(Path::new("/"));
        ESP_MOUNTS
            .iter()
            .map(|m| root.join(m).join("loader/entries"))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// An entry file named like NixOS's boot counting names them
    /// (`…+LEFT.conf`, `…+LEFT-DONE.conf`), if any: then NixOS's own boot
    /// counting is on.
    pub fn boot_counting(&self) -> Option<PathBuf> {
        self.entries_dirs().into_iter().find_map(|d| {
            std::fs::read_dir(&d).ok()?.flatten().find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                is_counted(&name).then(|| d.join(name))
            })
        })
    }

    /// Whether the ESP (where found) has `entry`; None when no ESP with
    /// entries is mounted here.
    pub fn has_entry(&self, entry: &str) -> Option<bool> {
        let dirs = self.entries_dirs();
        if dirs.is_empty() {
            return None;
        }
        let file = match entry.ends_with(".conf") {
            true => entry.to_string(),
            false => format!("{entry}.conf"),
        };
        Some(dirs.iter().any(|d| d.join(&file).is_file()))
    }
}

/// `NAME+LEFT.conf` or `NAME+LEFT-DONE.conf` (LEFT, DONE decimal).
pub fn is_counted(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".conf") else {
        return false;
    };
    let Some((_, tries)) = stem.rsplit_once('+') else {
        return false;
    };
    let mut parts = tries.splitn(2, '-');
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_counting() {
        assert_eq!(SystemdBoot::entry(7), "nixos-generation-7.conf");
        assert!(is_counted("nixos-generation-3+3.conf"));
        assert!(is_counted("nixos-abc123+2-1.conf"));
        assert!(!is_counted("nixos-generation-3.conf"));
        assert!(!is_counted("nixos+x.conf"));
        assert!(!is_counted("nixos+3-.conf"));
    }

    #[test]
    fn detect_pin_one_shot_release() {
        let t = crate::testutil::TempDir::new("sdboot");
        let vars = EfiVars::new(None, Some(&t.path().join("vars")));
        std::fs::create_dir_all(&vars.dir).unwrap();
        assert!(!SystemdBoot::detect(&vars));
        vars.write(INFO, GUID, "systemd-boot 252").unwrap();
        assert!(SystemdBoot::detect(&vars));
        let sb = SystemdBoot {
            vars: vars.clone(),
            root: Some(t.path().to_path_buf()),
        };
        assert_eq!(sb.has_entry("nixos-generation-1.conf"), None);
        let entries = t.path().join("boot/loader/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::fs::write(entries.join("nixos-generation-1.conf"), "").unwrap();
        assert_eq!(sb.has_entry("nixos-generation-1.conf"), Some(true));
        assert_eq!(sb.has_entry("nixos-generation-2.conf"), Some(false));
        assert_eq!(sb.has_entry("nixos-generation-1"), Some(true));
        assert_eq!(sb.boot_counting(), None);
        sb.pin("nixos-generation-1.conf").unwrap();
        sb.one_shot("nixos-generation-2.conf").unwrap();
        let file = |n: &str| std::fs::read(vars.dir.join(format!("{n}-{GUID}"))).unwrap();
        assert_eq!(
            file(DEFAULT),
            super::super::efivars::encode("nixos-generation-1.conf")
        );
        assert_eq!(
            file(ONESHOT),
            super::super::efivars::encode("nixos-generation-2.conf")
        );
        sb.release().unwrap();
        assert_eq!(sb.pinned().unwrap(), None);
        assert_eq!(sb.one_shot_entry().unwrap(), None);
        std::fs::write(entries.join("nixos-generation-2+3.conf"), "").unwrap();
        assert_eq!(
            sb.boot_counting(),
            Some(entries.join("nixos-generation-2+3.conf"))
        );
    }
}
