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
//!
//! loader.conf: NixOS's builder writes `<ESP>/loader/loader.conf` on every
//! `boot` (temporary file, fsync, rename), its `default` line naming the
//! entry of the generation that ran it (`default nixos-generation-N.conf`,
//! never a specialisation; users sometimes edit it to `@saved`). During a
//! trial boot only the running generation's `boot` runs before the commit,
//! so the line names the running entry; fh-lite checks that it does
//! ([`SystemdBoot::set_conf_default`]: written only where it names
//! another entry), so firmware that loses the EFI variables written at run
//! time (some Raspberry Pi UEFI builds, an NVRAM reset) still boots the
//! running entry. The commit runs the new generation's `boot`, which names
//! the new entry. Every other line is kept byte for byte.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::efivars::EfiVars;
use crate::rootfs::{self, Dir};

/// systemd-boot's vendor GUID.
pub const GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
pub const INFO: &str = "LoaderInfo";
pub const SELECTED: &str = "LoaderEntrySelected";
pub const DEFAULT: &str = "LoaderEntryDefault";
pub const ONESHOT: &str = "LoaderEntryOneShot";

/// Where the ESP may be mounted (inside the root).
pub const ESP_MOUNTS: [&str; 3] = ["boot", "efi", "boot/efi"];

/// The boot loader's configuration, in the ESP's `loader` directory.
pub const LOADER_CONF: &str = "loader.conf";

/// loader.conf is a few lines; anything bigger is not one.
const MAX_CONF: u64 = 64 * 1024;

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

    /// The ESP's `loader` directory (beneath the root): the first of
    /// /boot, /efi, /boot/efi with a `loader/loader.conf`, else the first
    /// with `loader/entries`. None: no ESP is mounted here.
    pub fn loader_dir(&self) -> Option<Dir> {
        let root = self.root.as_deref();
        let dirs: Vec<Dir> = ESP_MOUNTS
            .iter()
            .filter_map(|m| {
                let path = root.unwrap_or(Path::new("/")).join(m).join("loader");
                rootfs::open_dir(root, &path).ok()
            })
            .collect();
        let has_conf = dirs.iter().position(|d| d.exists(LOADER_CONF));
        let has_entries = || dirs.iter().position(|d| d.open_subdir("entries").is_ok());
        let i = has_conf.or_else(has_entries)?;
        dirs.into_iter().nth(i)
    }

    /// Set loader.conf's `default` to `entry` (added when it has none; a
    /// missing loader.conf is created), crash-safely: a temporary file in
    /// the same directory, fsync, rename, directory fsync. Every other
    /// line is kept byte for byte. Returns the file and the value its
    /// last `default` line had before (None: it had none); None when no
    /// ESP is mounted here.
    pub fn set_conf_default(&self, entry: &str) -> io::Result<Option<(PathBuf, Option<String>)>> {
        let Some(dir) = self.loader_dir() else {
            return Ok(None);
        };
        let file = dir.join(LOADER_CONF);
        let old = match dir.read_small(LOADER_CONF, MAX_CONF) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (new, before) = with_default(&old, entry);
        // Already naming it (with or without `.conf`, as systemd-boot
        // matches ids): the file is left as it is.
        let named = before.as_deref().is_some_and(|b| same_entry(b, entry));
        if !named && (new != old || !dir.exists(LOADER_CONF)) {
            let mut f = dir.new_file(LOADER_CONF, 0o644)?;
            f.write_all(&new)?;
            f.commit()?;
        }
        Ok(Some((file, before)))
    }

    #[cfg(test)]
    /// loader.conf's `default` value (its last `default` line), where an
    /// ESP is mounted; None: no ESP, no loader.conf or no such line.
    pub fn conf_default(&self) -> io::Result<Option<String>> {
        let Some(dir) = self.loader_dir() else {
            return Ok(None);
        };
        let bytes = match dir.read_small(LOADER_CONF, MAX_CONF) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(default_lines(&bytes).last().map(|(_, v)| v.clone()))
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

/// The `default` lines of loader.conf as systemd-boot reads them (a key,
/// whitespace, the value; `#` comments; blank lines): (index of the line
/// in `conf.split_inclusive('\n')`, the value without surrounding
/// whitespace). systemd-boot uses the last one.
fn default_lines(conf: &[u8]) -> Vec<(usize, String)> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    conf.split_inclusive(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let body = body.strip_suffix(b"\r").unwrap_or(body);
            let start = body.iter().position(|b| !blank(b))?;
            let rest = body[start..].strip_prefix(b"default")?;
            if !rest.is_empty() && !blank(&rest[0]) {
                return None;
            }
            let value = String::from_utf8_lossy(rest).trim().to_string();
            Some((i, value))
        })
        .collect()
}

/// `conf` with every `default` line set to `default VALUE` (its line
/// ending kept), or the line added at the end when there is none; every
/// other byte unchanged. Also the value the last `default` line had.
pub fn with_default(conf: &[u8], value: &str) -> (Vec<u8>, Option<String>) {
    let found = default_lines(conf);
    let before = found.last().map(|(_, v)| v.clone());
    let mut out = Vec::with_capacity(conf.len() + value.len() + 16);
    for (i, line) in conf.split_inclusive(|b| *b == b'\n').enumerate() {
        if !found.iter().any(|(j, _)| *j == i) {
            out.extend_from_slice(line);
            continue;
        }
        let ending: &[u8] = if line.ends_with(b"\r\n") {
            b"\r\n"
        } else if line.ends_with(b"\n") {
            b"\n"
        } else {
            b""
        };
        out.extend_from_slice(b"default ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(ending);
    }
    if found.is_empty() {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(format!("default {value}\n").as_bytes());
    }
    (out, before)
}

/// Whether two entry ids name the same entry (one may lack `.conf`).
pub fn same_entry(a: &str, b: &str) -> bool {
    a.trim_end_matches(".conf") == b.trim_end_matches(".conf")
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

    const BUILT: &str = "timeout 0\ndefault nixos-generation-2.conf\neditor 0\nconsole-mode keep\n";

    #[test]
    fn the_default_line_is_rewritten_and_nothing_else() {
        let (out, before) = with_default(BUILT.as_bytes(), "nixos-generation-1.conf");
        assert_eq!(before.as_deref(), Some("nixos-generation-2.conf"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "timeout 0\ndefault nixos-generation-1.conf\neditor 0\nconsole-mode keep\n"
        );
        // CRLF endings, comments, a lookalike key, tabs and a last line
        // without its newline: only the default lines change, each keeps
        // its ending; the last one is the value systemd-boot uses.
        let conf = "# default nixos-generation-9.conf\r\ndefaultx 1\r\n  default\t@saved \r\ntimeout 3\r\ndefault nixos-generation-2.conf";
        let (out, before) = with_default(conf.as_bytes(), "nixos-generation-1.conf");
        assert_eq!(before.as_deref(), Some("nixos-generation-2.conf"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# default nixos-generation-9.conf\r\ndefaultx 1\r\ndefault nixos-generation-1.conf\r\ntimeout 3\r\ndefault nixos-generation-1.conf"
        );
        assert_eq!(
            default_lines(b"  default\t@saved \n"),
            [(0, "@saved".to_string())]
        );
    }

    #[test]
    fn a_missing_default_line_is_added() {
        let (out, before) = with_default(b"timeout 0\neditor 0", "nixos-generation-1.conf");
        assert_eq!(before, None);
        assert_eq!(
            out,
            b"timeout 0\neditor 0\ndefault nixos-generation-1.conf\n"
        );
        let (out, _) = with_default(b"", "nixos-generation-1.conf");
        assert_eq!(out, b"default nixos-generation-1.conf\n");
    }

    fn esp(t: &crate::testutil::TempDir, mount: &str) -> SystemdBoot {
        let vars = EfiVars::new(None, Some(&t.path().join("vars")));
        std::fs::create_dir_all(t.path().join(mount).join("loader/entries")).unwrap();
        SystemdBoot {
            vars,
            root: Some(t.path().to_path_buf()),
        }
    }

    #[test]
    fn loader_conf_on_the_esp_is_held_and_put_back() {
        let t = crate::testutil::TempDir::new("loaderconf");
        let sb = esp(&t, "boot");
        let conf = t.path().join("boot/loader/loader.conf");
        std::fs::write(&conf, BUILT).unwrap();
        let (file, before) = sb
            .set_conf_default("nixos-generation-1.conf")
            .unwrap()
            .unwrap();
        assert_eq!(file, conf);
        assert_eq!(before.as_deref(), Some("nixos-generation-2.conf"));
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            BUILT.replace("generation-2", "generation-1")
        );
        assert_eq!(
            sb.conf_default().unwrap().as_deref(),
            Some("nixos-generation-1.conf")
        );
        // The commit: the builder's file again, byte for byte; no
        // temporary file left beside it.
        sb.set_conf_default("nixos-generation-2.conf").unwrap();
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), BUILT);
        let names: Vec<_> = std::fs::read_dir(t.path().join("boot/loader"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // An ESP with entries but no loader.conf gets one.
        std::fs::remove_file(&conf).unwrap();
        let (_, before) = sb
            .set_conf_default("nixos-generation-1.conf")
            .unwrap()
            .unwrap();
        assert_eq!(before, None);
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "default nixos-generation-1.conf\n"
        );
    }

    #[test]
    fn the_esp_is_where_loader_conf_is() {
        let t = crate::testutil::TempDir::new("loaderconf-efi");
        let sb = SystemdBoot {
            vars: EfiVars::new(None, Some(&t.path().join("vars"))),
            root: Some(t.path().to_path_buf()),
        };
        assert!(sb.loader_dir().is_none());
        assert!(sb.set_conf_default("x.conf").unwrap().is_none());
        // XBOOTLDR at /boot (entries), the ESP at /efi (loader.conf).
        std::fs::create_dir_all(t.path().join("boot/loader/entries")).unwrap();
        std::fs::create_dir_all(t.path().join("efi/loader")).unwrap();
        std::fs::write(t.path().join("efi/loader/loader.conf"), BUILT).unwrap();
        sb.set_conf_default("nixos-generation-1.conf").unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("efi/loader/loader.conf")).unwrap(),
            BUILT.replace("generation-2", "generation-1")
        );
        assert!(!t.path().join("boot/loader/loader.conf").exists());
    }

    #[test]
    fn a_symlinked_loader_conf_escaping_the_root_is_refused() {
        let t = crate::testutil::TempDir::new("loaderconf-link");
        let root = t.path().join("root");
        let outside = t.path().join("outside.conf");
        std::fs::write(&outside, BUILT).unwrap();
        std::fs::create_dir_all(root.join("boot/loader/entries")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("boot/loader/loader.conf")).unwrap();
        let sb = SystemdBoot {
            vars: EfiVars::new(None, Some(&t.path().join("vars"))),
            root: Some(root.clone()),
        };
        let e = sb.set_conf_default("nixos-generation-1.conf").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), BUILT);
        // A /boot symlink pointing out of the root resolves inside it.
        let t2 = crate::testutil::TempDir::new("loaderconf-link2");
        let root2 = t2.path().join("root");
        std::fs::create_dir_all(&root2).unwrap();
        std::fs::create_dir_all(t2.path().join("esp/loader/entries")).unwrap();
        std::fs::write(t2.path().join("esp/loader/loader.conf"), BUILT).unwrap();
        std::os::unix::fs::symlink(t2.path().join("esp"), root2.join("boot")).unwrap();
        let sb = SystemdBoot {
            vars: EfiVars::new(None, Some(&t2.path().join("vars"))),
            root: Some(root2),
        };
        assert!(sb
            .set_conf_default("nixos-generation-1.conf")
            .unwrap()
            .is_none());
        assert_eq!(
            std::fs::read_to_string(t2.path().join("esp/loader/loader.conf")).unwrap(),
            BUILT
        );
    }
}
