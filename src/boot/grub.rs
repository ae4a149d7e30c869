//! GRUB's one-shot boot: `next_entry` in `grubenv` (NixOS's grub.cfg
//! loads the environment block and boots `next_entry` once, clearing it).
//!
//! `grubenv` is exactly 1024 bytes: the line `# GRUB Environment Block`,
//! then `name=value` lines, then `#` up to 1024 bytes. fh-lite rewrites it
//! crash-safely (temporary file, fsync, rename, directory fsync), keeping
//! every other variable as it was. Values holding a newline or a
//! backslash (GRUB escapes those) are refused, never half-written.
//!
//! NixOS's GRUB builder titles a generation `NixOS - Configuration N
//! (DATE - VERSION)` inside the submenu `NixOS - All configurations`, with
//! DATE the generation link's modification day (local time) and VERSION
//! its `nixos-version`; `next_entry` names it as `SUBMENU>TITLE`.

use std::io;
use std::path::{Path, PathBuf};

/// The size of an environment block.
pub const SIZE: usize = 1024;
pub const HEADER: &str = "# GRUB Environment Block\n";
pub const SUBMENU: &str = "NixOS - All configurations";

/// The variables of a grubenv block, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    pub vars: Vec<(String, String)>,
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl Env {
    /// Parse a 1024-byte block (anything else is refused).
    pub fn parse(bytes: &[u8]) -> io::Result<Env> {
        if bytes.len() != SIZE {
            return Err(bad(format!(
                "is {} bytes, not a {SIZE}-byte GRUB environment block",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("is not text"))?;
        let body = text
            .strip_prefix(HEADER)
            .ok_or_else(|| bad("does not start with '# GRUB Environment Block'"))?;
        let mut vars = Vec::new();
        for line in body.split('\n') {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| bad(format!("has a line without '=': {line}")))?;
            vars.push((k.to_string(), v.to_string()));
        }
        Ok(Env { vars })
    }

    /// The 1024-byte block.
    pub fn render(&self) -> io::Result<Vec<u8>> {
        let mut out = HEADER.as_bytes().to_vec();
        for (k, v) in &self.vars {
            out.extend_from_slice(format!("{k}={v}\n").as_bytes());
        }
        if out.len() > SIZE {
            return Err(bad(format!("the variables do not fit in {SIZE} bytes")));
        }
        out.resize(SIZE, b'#');
        Ok(out)
    }

    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Set `key` (in place when present, else appended).
    pub fn set(&mut self, key: &str, value: &str) -> io::Result<()> {
        if value.contains(['\n', '\\']) || key.contains(['\n', '=', '\\']) {
            return Err(bad(format!(
                "{key}: a newline or backslash is not written to grubenv"
            )));
        }
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.to_string(),
            None => self.vars.push((key.to_string(), value.to_string())),
        }
        Ok(())
    }

    pub fn unset(&mut self, key: &str) {
        self.vars.retain(|(k, _)| k != key);
    }
}

/// The `next_entry` value for generation `n` made on `date` (YYYY-MM-DD)
/// with `version` (its `nixos-version`).
pub fn title(n: u64, date: &str, version: &str) -> String {
    format!("{SUBMENU}>NixOS - Configuration {n} ({date} - {version})")
}

/// GRUB as a trial boot's one-shot: NixOS's grub.cfg boots its first
/// entry ("NixOS - Default", the system whose `switch-to-configuration
/// boot` wrote it) unless `next_entry` names another once. So the new
/// generation's entries are written by the *running* generation's `boot`
/// (the default stays the running system; the new one is listed in the
/// submenu), `next_entry` names it, and only the commit runs the new
/// generation's `boot`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grub {
    pub root: Option<PathBuf>,
    /// `/boot/grub/grubenv` (under the root).
    pub env: PathBuf,
    /// The profile (a real path, under the root).
    pub profile: PathBuf,
}

impl Grub {
    pub fn new(root: Option<&Path>, profile: &Path) -> Grub {
        Grub {
            root: root.map(Path::to_path_buf),
            env: root.unwrap_or(Path::new("/")).join("boot/grub/grubenv"),
            profile: profile.to_path_buf(),
        }
    }

    /// NixOS's GRUB is installed here (its grub.cfg exists).
    pub fn detect(root: Option<&Path>) -> bool {
        root.unwrap_or(Path::new("/"))
            .join("boot/grub/grub.cfg")
            .is_file()
    }

    /// The `next_entry` of generation `n`: its link's modification day
    /// (local time) and its `nixos-version`, as NixOS's builder titles it.
    pub fn title_of(&self, n: u64) -> io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let name = self
            .profile
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let link = self.profile.with_file_name(format!("{name}-{n}-link"));
        let mtime = std::fs::symlink_metadata(&link)?.mtime().max(0);
        let offset = crate::fleet::schedule::utc_offset(mtime as u64).unwrap_or(0);
        let local = (mtime + offset).max(0) as u64;
        let date = crate::state::format_time(local)
            .get(..10)
            .unwrap_or_default()
            .to_string();
        let root = self.root.as_deref().unwrap_or(Path::new("/"));
        let logical = match link.strip_prefix(root) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => link.clone(),
        };
        let file = crate::rootfs::resolve_in_root(root, &logical.join("nixos-version"))?;
        let version = std::fs::read_to_string(&file)?.trim().to_string();
        Ok(title(n, &date, &version))
    }

    pub fn one_shot(&self, entry: &str) -> io::Result<()> {
        set_next_entry(self.root.as_deref(), &self.env, Some(entry))
    }

    /// Clear `next_entry` (nothing to do without a grubenv).
    pub fn release(&self) -> io::Result<()> {
        match self.env.exists() {
            true => set_next_entry(self.root.as_deref(), &self.env, None),
            false => Ok(()),
        }
    }
}

/// Read `path` (a missing file reads as an empty block).
pub fn read(path: &Path) -> io::Result<Env> {
    match std::fs::read(path) {
        Ok(b) => Env::parse(&b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Env::default()),
        Err(e) => Err(e),
    }
}

/// Replace `path` with `env`, crash-safely.
pub fn write(root: Option<&Path>, path: &Path, env: &Env) -> io::Result<()> {
    crate::rootfs::write_file(root, path, 0o644, &env.render()?)
}

/// Set (Some) or clear (None) `next_entry`, keeping the other variables.
pub fn set_next_entry(root: Option<&Path>, path: &Path, entry: Option<&str>) -> io::Result<()> {
    let mut env = read(path)?;
    match entry {
        Some(e) => env.set("next_entry", e)?,
        None => env.unset("next_entry"),
    }
    write(root, path, &env)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `grub-editenv grubenv create` writes.
    fn empty_block() -> Vec<u8> {
        let mut b = HEADER.as_bytes().to_vec();
        b.resize(1024, b'#');
        b
    }

    #[test]
    fn byte_exact_blocks() {
        assert_eq!(Env::default().render().unwrap(), empty_block());
        let mut env = Env::parse(&empty_block()).unwrap();
        assert_eq!(env, Env::default());
        env.set("saved_entry", "0").unwrap();
        env.set(
            "next_entry",
            &title(5, "2026-12-04", "25.05.20261201.abcdef"),
        )
        .unwrap();
        let b = env.render().unwrap();
        let text = "# GRUB Environment Block\nsaved_entry=0\nnext_entry=NixOS - All configurations>NixOS - Configuration 5 (2026-12-04 - 25.05.20261201.abcdef)\n";
        assert_eq!(&b[..text.len()], text.as_bytes());
        assert!(b[text.len()..].iter().all(|c| *c == b'#'));
        assert_eq!(b.len(), 1024);
        // Cleared again: the other variable stays, the rest is padding.
        let mut env = Env::parse(&b).unwrap();
        env.unset("next_entry");
        let b = env.render().unwrap();
        let text = "# GRUB Environment Block\nsaved_entry=0\n";
        assert_eq!(&b[..text.len()], text.as_bytes());
        assert!(b[text.len()..].iter().all(|c| *c == b'#'));
    }

    #[test]
    fn refuses_what_grub_would_not_read_back() {
        assert!(Env::parse(b"# GRUB Environment Block\n").is_err());
        let mut wrong = empty_block();
        wrong[0] = b'x';
        assert!(Env::parse(&wrong).is_err());
        let mut env = Env::default();
        assert!(env.set("next_entry", "a\nb").is_err());
        env.set("k", &"x".repeat(1000)).unwrap();
        assert!(env.render().is_err(), "more than 1024 bytes");
    }

    #[test]
    fn file_round_trip_keeps_other_variables() {
        let t = crate::testutil::TempDir::new("grubenv");
        let p = t.path().join("grubenv");
        let mut start = Env::default();
        start.set("saved_entry", "NixOS").unwrap();
        std::fs::write(&p, start.render().unwrap()).unwrap();
        set_next_entry(None, &p, Some(&title(2, "2026-01-02", "25.05"))).unwrap();
        let env = read(&p).unwrap();
        assert_eq!(env.get("saved_entry"), Some("NixOS"));
        assert_eq!(
            env.get("next_entry"),
            Some("NixOS - All configurations>NixOS - Configuration 2 (2026-01-02 - 25.05)")
        );
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024);
        set_next_entry(None, &p, None).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), start.render().unwrap());
    }
}
