//! Writing a NAR's nodes to disk the way Nix restores a store path
//! (nix-protocols.md §4.3): regular files 0444 (0555 when executable),
//! directories 0555 (made read-only after their entries are written),
//! symlinks as they are; every node, symlinks included, gets mtime 1
//! (`utimensat` with `AT_SYMLINK_NOFOLLOW`). Owner is whoever we run as.
//!
//! [`UnpackSink`] writes below a root path that must not exist yet; the NAR's
//! root node becomes that path. Node names come from the strict NAR parser,
//! and are checked here again (no empty, `.`, `..`, `/` or NUL) before they
//! touch the filesystem.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use crate::nix::nar::NarSink;

/// Writes a NAR below `root` (see the module doc).
pub struct UnpackSink {
    root: PathBuf,
}

impl UnpackSink {
    pub fn new(root: &Path) -> UnpackSink {
        UnpackSink {
            root: root.to_path_buf(),
        }
    }

    fn target(&self, path: &[u8]) -> io::Result<PathBuf> {
        if path.is_empty() {
            return Ok(self.root.clone());
        }
        let mut p = self.root.clone();
        for c in path.split(|&b| b == b'/') {
            if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unsafe name in NAR: {:?}", String::from_utf8_lossy(path)),
                ));
            }
            p.push(OsStr::from_bytes(c));
        }
        Ok(p)
    }
}

/// mtime (and atime) 1, without following a symlink.
pub fn set_mtime_1(p: &Path) -> io::Result<()> {
    let one = Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: one,
        last_modification: one,
    };
    rustix::fs::utimensat(CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

impl NarSink for UnpackSink {
    fn directory(&mut self, path: &[u8]) -> io::Result<()> {
        let p = self.target(path)?;
        fs::DirBuilder::new().mode(0o755).create(&p)
    }

    fn directory_end(&mut self, path: &[u8]) -> io::Result<()> {
        let p = self.target(path)?;
        fs::set_permissions(&p, Permissions::from_mode(0o555))?;
        set_mtime_1(&p)
    }

    fn file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let p = self.target(path)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        let n = io::copy(contents, &mut f)?;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: {n} of {size} bytes", p.display()),
            ));
        }
        f.flush()?;
        let mode = if executable { 0o555 } else { 0o444 };
        f.set_permissions(Permissions::from_mode(mode))?;
        drop(f);
        set_mtime_1(&p)
    }

    fn symlink(&mut self, path: &[u8], target: &[u8]) -> io::Result<()> {
        let p = self.target(path)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &p)?;
        set_mtime_1(&p)
    }
}

/// Remove `p` (file, symlink or tree) even when its directories are
/// read-only, as unpacked store paths are. Missing is fine.
pub fn remove_tree(p: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        fs::set_permissions(p, Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(p)? {
            remove_tree(&entry?.path())?;
        }
        fs::remove_dir(p)
    } else {
        fs::remove_file(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn unpack_sink_writes_canonical_nodes() {
        let dir = crate::store::testutil::TempDir::new("unpack");
        let root = dir.path().join("out");
        let mut s = UnpackSink::new(&root);
        s.directory(b"").unwrap();
        s.file(b"a", false, 3, &mut &b"abc"[..]).unwrap();
        s.file(b"x", true, 0, &mut &b""[..]).unwrap();
        s.directory(b"d").unwrap();
        s.symlink(b"d/l", b"../a").unwrap();
        s.directory_end(b"d").unwrap();
        s.directory_end(b"").unwrap();
        let cases: &[(&str, u32)] = &[
            ("", 0o40555),
            ("a", 0o100444),
            ("x", 0o100555),
            ("d", 0o40555),
            ("d/l", 0o120777),
        ];
        for (name, mode) in cases {
            let p = if name.is_empty() {
                root.clone()
            } else {
                root.join(name)
            };
            let m = fs::symlink_metadata(&p).unwrap();
            assert_eq!(m.mode(), *mode, "{name}: mode");
            assert_eq!(m.mtime(), 1, "{name}: mtime");
        }
        assert_eq!(fs::read(root.join("a")).unwrap(), b"abc");
        assert_eq!(fs::read_link(root.join("d/l")).unwrap(), Path::new("../a"));
        remove_tree(&root).unwrap();
        assert!(!root.exists());
    }

    #[test]
    fn unpack_sink_rejects_unsafe_names_and_short_files() {
        let dir = crate::store::testutil::TempDir::new("unpack-bad");
        let root = dir.path().join("out");
        let mut s = UnpackSink::new(&root);
        s.directory(b"").unwrap();
        let names: &[(&str, &[u8])] = &[
            ("dotdot", b".."),
            ("dot", b"."),
            ("nested dotdot", b"a/../../x"),
            ("empty component", b"a//b"),
            ("nul", b"a\0b"),
        ];
        for (case, name) in names {
            let e = s.symlink(name, b"t").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{case}");
        }
        let e = s.file(b"short", false, 5, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(!dir.path().join("x").exists());
    }
}
