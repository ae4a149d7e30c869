//! NAR → directory tree in a store, verified (docs/formats.md, "NAR").
//!
//! [`unpack_verified`] restores one NAR stream into a temporary name on the
//! store's filesystem, `<store>/<hash>-fhlite-tmp-<pid>-<rand>` (see
//! [`temp_name`]), while the stream is hashed and counted; only when NarHash
//! and NarSize match is it handed back, and [`Unpacked::commit`] moves it to
//! `<store>/<base>` with one rename that never replaces an existing path.
//! Anything that fails removes the temporary tree (made writable first): a
//! store never shows a half-written or unverified path under its final name.
//!
//! The temporary name is shaped like a store path on purpose: a Nix garbage
//! collector deletes every other name in the store directory on sight, but
//! leaves a store-path-shaped one alone while it is a temp root (the local
//! backend registers it as one before unpacking, via [`unpack_verified_as`]).
//! A run that is killed leaves its temporary tree behind; the next run that
//! writes the store removes it ([`remove_debris`]: only trees whose pid is
//! no longer alive).
//!
//! The tree ends in Nix's canonical state (formats.md "NAR: On disk"): directories 0555, files
//! 0444 or 0555 (executable), symlinks as symlinks, mtime 1 on everything,
//! symlinks included (`utimensat` with `AT_SYMLINK_NOFOLLOW`; a directory's
//! after its entries), owner = this process.
//!
//! Names come from the NAR as raw bytes. The NAR reader forbids empty, `.`,
//! `..`, `/` and NUL in names and requires strictly increasing names; the
//! sink checks the components again, and every node is created exclusively
//! (`mkdir`, `O_CREAT|O_EXCL`, `symlink` all fail on an existing name), so a
//! symlink from the NAR can never be followed while writing below it.
//! Every backend that writes a store directory (image, local) uses this
//! module.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::StoreError;
use crate::nix::hash::HashingReader;
use crate::nix::nar::{self, NarSink};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::rootfs::{self, Dir};
use rustix::fs::{Mode, OFlags};

/// Nix's canonical mtime: 1 second after the epoch.
fn mtime_one() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1)
}

/// A verified tree under its temporary name; removed on drop unless
/// committed.
#[derive(Debug)]
pub struct Unpacked {
    store: Dir,
    tmp: Option<String>,
    final_name: String,
}

/// What [`Unpacked::commit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Commit {
    /// The tree is now at its final name.
    Placed,
    /// Something already was at the final name; ours was removed.
    AlreadyThere,
}

impl Unpacked {
    /// Rename to `<store>/<base>`, never replacing what is there.
    pub fn commit(mut self) -> Result<Commit, StoreError> {
        let Some(tmp) = self.tmp.clone() else {
            return Ok(Commit::Placed);
        };
        match self.store.rename_noreplace(&tmp, &self.final_name) {
            Ok(true) => {
                self.tmp = None;
                Ok(Commit::Placed)
            }
            Ok(false) => Ok(Commit::AlreadyThere),
            Err(err) => Err(StoreError::Io {
                what: "moving into place",
                file: self.store.join(&self.final_name),
                err,
            }),
        }
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = self.store.remove_tree(tmp);
        }
    }
}

/// The store directory `<root>/nix/store`, resolved beneath `root`
/// ([`rootfs`]); created when `create`. A directory that is this machine's
/// own `/nix/store` (reached through a symlink) is refused: fh-lite would
/// write, and remove leftovers, in the host's store.
pub fn open_store_dir(root: &Path, create: bool) -> Result<Dir, StoreError> {
    let path = root.join("nix/store");
    let opened = if create {
        rootfs::create_dir_all(Some(root), &path)
    } else {
        rootfs::open_dir(Some(root), &path)
    };
    let dir = opened.map_err(|err| StoreError::Io {
        what: if create { "creating" } else { "opening" },
        file: path.clone(),
        err,
    })?;
    if root != Path::new("/") && rootfs::same_dir(&dir, Path::new("/nix/store")) {
        return Err(StoreError::Io {
            what: "using",
            file: path,
            err: io::Error::other(
                "it is this machine's own /nix/store (a symlink leads there); \
                 --root needs a store of its own: remove the link",
            ),
        });
    }
    Ok(dir)
}

/// The temporary name [`unpack_verified`] uses for `path`:
/// `<hash>-fhlite-tmp-<pid>-<rand>`, a valid store path name (see the
/// module doc), unique per call. The top 16 bits of `<rand>` are this
/// boot's tag ([`rootfs::tagged_random`]), so that [`remove_debris`] knows a tree from
/// an earlier boot even when its pid now belongs to a live process.
pub fn temp_name(path: &StorePath) -> String {
    format!(
        "{}-fhlite-tmp-{}-{:016x}",
        path.hash_part(),
        std::process::id(),
        rootfs::tagged_random()
    )
}

/// The pid and the random part in a [`temp_name`]-shaped name
/// (`<32 nix32 chars>-fhlite-tmp-<pid>-<16 hex digits>`), or None.
fn temp_name_parts(name: &str) -> Option<(u32, u64)> {
    // A valid store path name (the hash part checked) …
    StorePath::from_base_name(name).ok()?;
    let (_, rest) = name.split_at_checked(32)?;
    let (pid, rand) = rest.strip_prefix("-fhlite-tmp-")?.split_once('-')?;
    if rand.len() != 16 || !rand.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((pid.parse().ok()?, u64::from_str_radix(rand, 16).ok()?))
}

/// Remove the temporary trees ([`temp_name`]) that runs which are no longer
/// alive left in `store_dir` (killed, or the machine lost power); one line
/// on stderr per tree. A tree made in an earlier boot (its boot tag is not
/// this boot's) is a dead run's whatever its pid; one of this boot whose
/// pid is alive (`/proc/<pid>` exists) is never touched; without /proc
/// nothing is. A tree named with this process's own pid is a dead run's:
/// the stores call this once, before they make any tree. A device that
/// boots the same way each time gives the timer's run, or any other
/// process, the same pid as the run a power cut killed (the lab found both:
/// `scripts/lab powercut --arch x86_64 --cuts 30 --seed 2722847947`, cut
/// 17, left a tree whose pid 127 was another process after the reboot).
/// Two boots share a tag once in 65,536: then only the pid decides.
/// Read-only directories are made writable first ([`Dir::remove_tree`]). A
/// tree that cannot be removed is a warning, not an error: the run goes on.
pub fn remove_debris(store_dir: &Dir) {
    let Ok(entries) = store_dir.entries() else {
        return;
    };
    if fs::symlink_metadata("/proc/self").is_err() {
        return;
    }
    let this_boot = rootfs::boot_tag();
    for name in entries {
        let Some((pid, rand)) = name.to_str().and_then(temp_name_parts) else {
            continue;
        };
        if pid != std::process::id() && !rootfs::left_by_dead_run(pid, rand, this_boot) {
            continue;
        }
        remove_left_by(store_dir, &name, pid);
    }
}

/// Restore the NAR `nar` of `info` under a fresh [`temp_name`] in
/// `store_dir` and verify NarHash and NarSize. `store_dir` must exist.
pub fn unpack_verified(
    store_dir: &Dir,
    info: &NarInfo,
    nar: &mut dyn Read,
) -> Result<Unpacked, StoreError> {
    unpack_verified_as(store_dir, &temp_name(&info.store_path), info, nar)
}

/// [`unpack_verified`] under the caller's temporary name `tmp_name` (from
/// [`temp_name`], e.g. already made a GC temp root). Nothing may exist
/// under that name.
pub fn unpack_verified_as(
    store_dir: &Dir,
    tmp_name: &str,
    info: &NarInfo,
    nar: &mut dyn Read,
) -> Result<Unpacked, StoreError> {
    let path = &info.store_path;
    let store = store_dir.try_clone().map_err(|err| StoreError::Io {
        what: "opening",
        file: store_dir.path().to_path_buf(),
        err,
    })?;
    let guard = Unpacked {
        store,
        tmp: Some(tmp_name.to_string()),
        final_name: path.base_name().to_string(),
    };
    // Buffers no larger than the NAR: many small paths unpack at once.
    let buf = info.nar_size.clamp(512, 64 * 1024) as usize;
    let mut hashing = HashingReader::new(io::BufReader::with_capacity(buf, nar), info.nar_size);
    let mut sink = DirSink {
        store: store_dir,
        root: tmp_name.to_string(),
        failed: None,
        buf: vec![0u8; buf],
    };
    if let Err(e) = nar::parse(&mut hashing, &mut sink) {
        // A filesystem failure is the store's; anything else is the NAR's.
        if let Some(f) = sink.failed.take() {
            return Err(f);
        }
        return Err(StoreError::BadNar {
            path: path.clone(),
            detail: super::nar_error_detail(&e),
        });
    }
    super::check_nar_end(info, &mut hashing)?;
    let (got_hash, got_size) = hashing.finish();
    super::check_hash_size(info, got_hash, got_size)?;
    Ok(guard)
}

/// Bytes of one file written between two [`start_writeback`] calls.
const WRITEBACK_EVERY: u64 = 4 << 20;

/// Ask the kernel to start writing bytes `from..to` of `f` to disk now,
/// without waiting, so that the store's one sync at the end (image.rs,
/// local.rs) finds little left to do: it cost about 45 % of a big NAR's
/// wall time when all of it was left to that sync. `POSIX_FADV_DONTNEED`
/// on Linux starts writeback of the range's dirty pages (and drops only
/// pages already clean). Advice only: a failure changes nothing.
/// Returns `to`.
fn start_writeback(f: &File, from: u64, to: u64) -> u64 {
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        let _ = rustix::fs::fadvise(f, from, Some(len), rustix::fs::Advice::DontNeed);
    }
    to
}

/// Writes NAR nodes below `root` (the temporary name) in `store`, with
/// `*at` calls on the store's descriptor: the store path is never looked up
/// again, and every name below `root` was created by this sink.
struct DirSink<'a> {
    store: &'a Dir,
    root: String,
    /// The first filesystem error, with the file it concerns.
    failed: Option<StoreError>,
    buf: Vec<u8>,
}

impl DirSink<'_> {
    /// The node's path relative to the store directory, and in full (for
    /// messages).
    fn target(&self, rel: &[u8]) -> io::Result<(PathBuf, PathBuf)> {
        let rel = self.relative(rel)?;
        let full = self.store.join(&rel);
        Ok((rel, full))
    }

    fn relative(&self, rel: &[u8]) -> io::Result<PathBuf> {
        if rel.is_empty() {
            return Ok(PathBuf::from(&self.root));
        }
        for c in rel.split(|&b| b == b'/') {
            if c.is_empty() || c == b"." || c == b".." || c.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unsafe name in NAR: {:?}", String::from_utf8_lossy(rel)),
                ));
            }
        }
        Ok(Path::new(&self.root).join(OsStr::from_bytes(rel)))
    }

    /// Record a filesystem failure (so the caller reports the file) and
    /// pass it on to the NAR reader.
    fn fail(&mut self, what: &'static str, file: &Path, e: io::Error) -> io::Error {
        let out = io::Error::new(e.kind(), e.to_string());
        if self.failed.is_none() {
            self.failed = Some(StoreError::Io {
                what,
                file: file.to_path_buf(),
                err: e,
            });
        }
        out
    }
}

impl NarSink for DirSink<'_> {
    fn directory(&mut self, path: &[u8]) -> io::Result<()> {
        let (rel, p) = self.target(path)?;
        rustix::fs::mkdirat(self.store.fd(), &rel, Mode::from_raw_mode(0o755))
            .map_err(|e| self.fail("creating directory", &p, e.into()))
    }

    fn directory_end(&mut self, path: &[u8]) -> io::Result<()> {
        let (rel, p) = self.target(path)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let r = rustix::fs::openat(self.store.fd(), &rel, flags, Mode::empty())
            .map(File::from)
            .map_err(io::Error::from)
            .and_then(|d| {
                d.set_modified(mtime_one())?;
                d.set_permissions(fs::Permissions::from_mode(0o555))
            });
        r.map_err(|e| self.fail("finishing directory", &p, e))
    }

    fn file(
        &mut self,
        path: &[u8],
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let (rel, p) = self.target(path)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut f = rustix::fs::openat(self.store.fd(), &rel, flags, Mode::from_raw_mode(0o644))
            .map(File::from)
            .map_err(|e| self.fail("creating file", &p, e.into()))?;
        let mut left = size;
        let mut kicked = 0u64;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            // Read errors come from the NAR stream: not this file's fault.
            let n = contents.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "NAR file contents cut short",
                ));
            }
            if let Err(e) = f.write_all(&self.buf[..n]) {
                return Err(self.fail("writing file", &p, e));
            }
            left -= n as u64;
            if size - left - kicked >= WRITEBACK_EVERY {
                kicked = start_writeback(&f, kicked, size - left);
            }
        }
        start_writeback(&f, kicked, size);
        let mode = if executable { 0o555 } else { 0o444 };
        let r = f
            .set_modified(mtime_one())
            .and_then(|()| f.set_permissions(fs::Permissions::from_mode(mode)));
        r.map_err(|e| self.fail("finishing file", &p, e))
    }

    fn symlink(&mut self, path: &[u8], target: &[u8]) -> io::Result<()> {
        let (rel, p) = self.target(path)?;
        if let Err(e) = rustix::fs::symlinkat(OsStr::from_bytes(target), self.store.fd(), &rel) {
            return Err(self.fail("creating symlink", &p, e.into()));
        }
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(
            self.store.fd(),
            &rel,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail("setting symlink mtime", &p, io::Error::from(e)))
    }
}

/// Remove `name` in `dir`, a tree the interrupted run `pid` left, and say
/// so (a warning when it cannot be removed: the next run tries again).
pub(crate) fn remove_left_by(dir: &Dir, name: &std::ffi::OsStr, pid: u32) {
    let p = dir.join(name);
    match dir.remove_tree(name) {
        Ok(()) => crate::ui::say(&format!(
            "removed {}, left by an interrupted run (pid {pid})",
            p.display()
        )),
        Err(err) => crate::ui::warn(&format!(
            "cannot remove {}, left by an interrupted run (pid {pid}): {err}",
            p.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sink(store: &Dir) -> DirSink<'_> {
        DirSink {
            store,
            root: "out".to_string(),
            failed: None,
            buf: vec![0u8; 4],
        }
    }

    #[test]
    fn unpack_sink_writes_canonical_nodes() {
        let dir = crate::testutil::TempDir::new("unpack");
        let root = dir.path().join("out");
        let store = rootfs::open_dir(None, dir.path()).unwrap();
        let mut s = sink(&store);
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
        crate::testutil::remove_tree(&root).unwrap();
        assert!(!root.exists());
        crate::testutil::remove_tree(&root).unwrap();
    }

    #[test]
    fn unpack_sink_rejects_unsafe_names_and_short_files() {
        let dir = crate::testutil::TempDir::new("unpack-bad");
        let store = rootfs::open_dir(None, dir.path()).unwrap();
        let mut s = sink(&store);
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
            assert!(e.to_string().starts_with("unsafe name in NAR: "), "{case}");
        }
        let e = s.file(b"short", false, 5, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn debris_of_dead_runs_is_removed_and_live_runs_are_kept() {
        let dir = crate::testutil::TempDir::new("debris");
        let store = dir.path();
        // A pid that was alive and is not any more.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let h = "0123456789abcdfghijklmnpqrsvwxyz";
        let dead_tree = format!("{h}-fhlite-tmp-{dead}-00112233445566aa");
        let dead_file = format!("{h}-fhlite-tmp-{dead}-00112233445566bb");
        // A live run's tree is kept; one named with this process's own pid
        // was left by a dead run before a reboot (the lab found it: a power
        // cut during fetching on aarch64, scripts/lab powercut --seed 1).
        let mut live = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        // Tagged as this boot's; the same live pid under another boot's tag
        // is a dead run's from before a reboot (the lab found it:
        // scripts/lab powercut --arch x86_64 --cuts 30 --seed 2722847947).
        let tag = rootfs::boot_tag().expect("this kernel has a boot id");
        let ours = format!("{h}-fhlite-tmp-{}-{tag:04x}2233445566cc", live.id());
        let earlier_boot = format!(
            "{h}-fhlite-tmp-{}-{:04x}2233445566cd",
            live.id(),
            tag.wrapping_add(1)
        );
        fs::create_dir(store.join(&earlier_boot)).unwrap();
        let own = format!("{h}-fhlite-tmp-{}-00112233445566ff", std::process::id());
        fs::create_dir(store.join(&own)).unwrap();
        let others = [
            format!("{h}-name"),
            format!("{h}-fhlite-tmp-{dead}-short"),
            format!("{h}-fhlite-tmp-x{dead}-00112233445566dd"),
            format!("eeee-fhlite-tmp-{dead}-00112233445566ee"),
        ];
        // The dead run's tree is read-only, as unpacked trees are.
        let t = store.join(&dead_tree);
        fs::create_dir_all(t.join("sub")).unwrap();
        fs::write(t.join("sub/f"), b"x").unwrap();
        fs::set_permissions(t.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(&t, fs::Permissions::from_mode(0o555)).unwrap();
        fs::write(store.join(&dead_file), b"a NAR whose root is a file").unwrap();
        fs::create_dir(store.join(&ours)).unwrap();
        for o in &others {
            fs::create_dir(store.join(o)).unwrap();
        }
        remove_debris(&rootfs::open_dir(None, store).unwrap());
        live.kill().unwrap();
        live.wait().unwrap();
        let mut left: Vec<String> = fs::read_dir(store)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want: Vec<String> = others.to_vec();
        want.push(ours);
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn temp_name_pids() {
        let p = StorePath::parse("/nix/store/11111111111111111111111111111111-a").unwrap();
        assert_eq!(
            temp_name_parts(&temp_name(&p)).map(|(pid, _)| pid),
            Some(std::process::id())
        );
        assert_eq!(temp_name_parts(p.base_name()), None);
    }

    #[test]
    fn temp_names_are_store_path_names() {
        let p = StorePath::parse("/nix/store/11111111111111111111111111111111-a").unwrap();
        let (a, b) = (temp_name(&p), temp_name(&p));
        assert_ne!(a, b, "two calls, two names");
        for n in [a, b] {
            let full = format!("/nix/store/{n}");
            let parsed = StorePath::parse(&full).unwrap();
            assert_eq!(parsed.hash_part(), p.hash_part(), "{n}");
            assert!(
                n.starts_with(&format!(
                    "11111111111111111111111111111111-fhlite-tmp-{}-",
                    std::process::id()
                )),
                "{n}"
            );
        }
    }
}
