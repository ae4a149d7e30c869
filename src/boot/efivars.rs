//! EFI variables through efivarfs (`/sys/firmware/efi/efivars`), or a
//! plain directory holding files of the same format (tests, `--efivars`).
//!
//! A file is named `<Name>-<vendor GUID>` and holds a little-endian u32 of
//! attributes followed by the value. fh-lite writes the boot loader's
//! string variables: attributes NON_VOLATILE | BOOTSERVICE_ACCESS |
//! RUNTIME_ACCESS (0x7), the value UTF-16LE with a terminating NUL.
//!
//! efivarfs marks existing variables immutable (`FS_IMMUTABLE_FL`, as
//! `chattr +i`): the flag is cleared before a rewrite or a removal. A
//! variable is written with one `write` of attributes and value (efivarfs
//! takes each write as the whole variable; it has no rename). On a plain
//! directory the file is also truncated and fsynced, so a test directory
//! holds exactly what efivarfs would.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{IFlags, OFlags};

use crate::rootfs::{self, Dir};

/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
pub const ATTRIBUTES: u32 = 0x7;

/// efivarfs's `statfs` magic.
const EFIVARFS_MAGIC: u64 = 0xde5e_81e4;

/// A variable's value is small; anything bigger is not a loader string.
const MAX_VALUE: u64 = 4096;

/// Where EFI variables live: efivarfs under the root, or `--efivars DIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiVars {
    pub dir: PathBuf,
    /// `--root`, when the directory is the root's own efivarfs path.
    root: Option<PathBuf>,
}

/// A variable's value as efivarfs stores it: attributes, UTF-16LE, NUL.
pub fn encode(value: &str) -> Vec<u8> {
    let mut out = ATTRIBUTES.to_le_bytes().to_vec();
    for unit in value.encode_utf16().chain([0]) {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}

/// The string value of a variable's file contents (None: not a string
/// variable: too short, odd length, or not UTF-16). A terminating NUL and
/// anything after it is dropped.
pub fn decode(bytes: &[u8]) -> Option<String> {
    let data = bytes.get(4..)?;
    if data.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

impl EfiVars {
    /// `--efivars DIR` when given, else efivarfs under `--root`.
    pub fn new(root: Option<&Path>, dir: Option<&Path>) -> EfiVars {
        match dir {
            Some(d) => EfiVars {
                dir: d.to_path_buf(),
                root: None,
            },
            None => {
                let logical = Path::new("sys/firmware/efi/efivars");
                EfiVars {
                    dir: root.unwrap_or(Path::new("/")).join(logical),
                    root: root.map(Path::to_path_buf),
                }
            }
        }
    }

    fn open(&self) -> io::Result<Dir> {
        rootfs::open_dir(self.root.as_deref(), &self.dir)
    }

    /// The file name of `name` under `guid`.
    pub fn file_name(name: &str, guid: &str) -> String {
        format!("{name}-{guid}")
    }

    /// Whether the variable exists.
    pub fn exists(&self, name: &str, guid: &str) -> bool {
        self.open()
            .is_ok_and(|d| d.exists(Self::file_name(name, guid)))
    }

    /// The variable's string value (None: it does not exist).
    pub fn read(&self, name: &str, guid: &str) -> io::Result<Option<String>> {
        let file = Self::file_name(name, guid);
        let dir = match self.open() {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let f = match dir.open_read(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        f.take(MAX_VALUE).read_to_end(&mut bytes)?;
        decode(&bytes).map(Some).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "not a UTF-16 string variable")
        })
    }

    /// Set the variable to `value` (created if missing).
    pub fn write(&self, name: &str, guid: &str, value: &str) -> io::Result<()> {
        let file = Self::file_name(name, guid);
        let dir = self.open()?;
        unlock(&dir, &file)?;
        let mut f = dir.open_file(&file, OFlags::WRONLY | OFlags::CREATE, 0o644)?;
        // One write: efivarfs takes it as the whole variable.
        f.write_all(&encode(value))?;
        if !is_efivarfs(&f) {
            let len = encode(value).len() as u64;
            f.set_len(len)?;
            f.sync_all()?;
            dir.sync()?;
        }
        Ok(())
    }

    /// Remove the variable (Ok when it does not exist).
    pub fn remove(&self, name: &str, guid: &str) -> io::Result<()> {
        let file = Self::file_name(name, guid);
        let dir = match self.open() {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !dir.exists(&file) {
            return Ok(());
        }
        unlock(&dir, &file)?;
        match dir.remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if !is_efivarfs_dir(&dir) {
            dir.sync()?;
        }
        Ok(())
    }
}

// f_type is i64, u64 or u32 depending on the target.
#[allow(clippy::unnecessary_cast)]
fn is_efivarfs(fd: impl std::os::fd::AsFd) -> bool {
    // The magic is 32 bits.
    rustix::fs::fstatfs(fd).is_ok_and(|s| (s.f_type as u64) & 0xffff_ffff == EFIVARFS_MAGIC)
}

fn is_efivarfs_dir(d: &Dir) -> bool {
    is_efivarfs(d.fd())
}

/// Clear `FS_IMMUTABLE_FL` on an existing `name` (as `chattr -i`); a
/// missing file, or a filesystem without the flags (ENOTTY, EOPNOTSUPP),
/// is fine.
fn unlock(dir: &Dir, name: impl AsRef<OsStr>) -> io::Result<()> {
    use rustix::io::Errno;
    let f = match dir.open_file(name, OFlags::RDONLY | OFlags::NONBLOCK, 0) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let flags = match rustix::fs::ioctl_getflags(&f) {
        Ok(fl) => fl,
        Err(Errno::NOTTY | Errno::OPNOTSUPP | Errno::INVAL) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !flags.contains(IFlags::IMMUTABLE) {
        return Ok(());
    }
    match rustix::fs::ioctl_setflags(&f, flags - IFlags::IMMUTABLE) {
        Ok(()) | Err(Errno::NOTTY | Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

    #[test]
    fn encode_is_attributes_then_utf16le_with_nul() {
        let b = encode("ab");
        assert_eq!(b, [7, 0, 0, 0, b'a', 0, b'b', 0, 0, 0]);
        assert_eq!(decode(&b).as_deref(), Some("ab"));
        assert_eq!(decode(&[7, 0, 0]), None);
        assert_eq!(decode(&[7, 0, 0, 0, b'a']), None);
        // systemd-boot's own values may come without the NUL.
        assert_eq!(decode(&[6, 0, 0, 0, b'x', 0]).as_deref(), Some("x"));
    }

    #[test]
    fn write_read_rewrite_remove_in_a_plain_directory() {
        let t = crate::testutil::TempDir::new("efivars");
        let v = EfiVars::new(None, Some(t.path()));
        assert_eq!(v.read("LoaderEntryOneShot", G).unwrap(), None);
        v.write("LoaderEntryOneShot", G, "nixos-generation-12.conf")
            .unwrap();
        let file = t.path().join(format!("LoaderEntryOneShot-{G}"));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            encode("nixos-generation-12.conf")
        );
        // A shorter value leaves no tail of the longer one.
        v.write("LoaderEntryOneShot", G, "nixos-generation-3.conf")
            .unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            encode("nixos-generation-3.conf")
        );
        assert!(v.exists("LoaderEntryOneShot", G));
        v.remove("LoaderEntryOneShot", G).unwrap();
        assert!(!file.exists());
        v.remove("LoaderEntryOneShot", G).unwrap();
    }

    #[test]
    fn efivarfs_path_is_under_the_root() {
        let v = EfiVars::new(Some(Path::new("/mnt")), None);
        assert_eq!(v.dir, Path::new("/mnt/sys/firmware/efi/efivars"));
        let v = EfiVars::new(None, None);
        assert_eq!(v.dir, Path::new("/sys/firmware/efi/efivars"));
    }
}
