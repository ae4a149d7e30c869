//! Paths under `--root DIR`: resolved as chroot would see them, never out
//! of DIR.
//!
//! Image builders run fh-lite as root on directories they did not fully
//! create, so nothing under DIR is opened by following a path:
//!
//! - [`open_dir`] / [`create_dir_all`] resolve a directory beneath DIR:
//!   `openat2` with `RESOLVE_IN_ROOT` where the kernel has it, else a walk
//!   one component at a time with `O_NOFOLLOW`. A symlink on the way is
//!   followed as if DIR were `/` (an absolute target restarts at DIR, `..`
//!   stops at DIR), never out of it. A path outside DIR (an explicit
//!   `--state-dir /elsewhere`) or no `--root` at all (a live system): the
//!   path is the real one and is opened as before.
//! - A [`Dir`] then works relative to its descriptor only: files are opened
//!   and created with `O_NOFOLLOW` (and `O_EXCL` where new), renames,
//!   symlinks and readlinks use `*at` calls on single names.
//! - Every file fh-lite writes is written through a [`Dir`]
//!   ([`Dir::write_atomic`], [`Dir::new_file`], [`Dir::symlink_atomic`],
//!   or [`write_file`] for a path): a temporary name nobody can predict
//!   (`.NAME.tmp-PID-RANDOM`), created `O_CREAT|O_EXCL|O_NOFOLLOW` with an
//!   explicit mode, fsync, `renameat` over the name (a symlink there is
//!   replaced, never followed), fsync of the directory. Nothing is ever
//!   opened for writing by path; clippy.toml forbids the std calls that
//!   would.
//! - [`Dir::remove_tree`] removes a tree with `openat`/`fstatat`/`unlinkat`
//!   and `fchmod` on the opened directory, never by path: a directory
//!   swapped for a symlink mid-removal cannot redirect it anywhere.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Symlinks followed in one resolution before giving up (Linux's limit).
const MAX_LINKS: u32 = 40;

/// An open directory and the path it was reached by (for messages).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Reached beneath a root: a symlink at a file name is refused. On a
    /// live system (no root) it is followed, as it always was.
    jailed: bool,
}

/// The error for a final name that is a symlink where fh-lite follows none.
fn refuse_link(e: Errno) -> io::Error {
    if e == Errno::LOOP {
        io::Error::other("it is a symbolic link, which fh-lite does not follow here")
    } else {
        e.into()
    }
}

fn single(name: &OsStr) -> io::Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a single file name: {}", name.to_string_lossy()),
        ));
    }
    Ok(name)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// Open the directory `path`, beneath `root` when it lies under it (see the
/// module text).
pub fn open_dir(root: Option<&Path>, path: &Path) -> io::Result<Dir> {
    resolve(root, path, false)
}

/// [`open_dir`], creating the missing directories (0755) on the way, each
/// beneath `root`.
pub fn create_dir_all(root: Option<&Path>, path: &Path) -> io::Result<Dir> {
    resolve(root, path, true)
}

fn resolve(root: Option<&Path>, path: &Path, create: bool) -> io::Result<Dir> {
    let jailed = root.and_then(|r| path.strip_prefix(r).ok().map(|rel| (r, rel)));
    let Some((base, rel)) = jailed else {
        if create {
            std::fs::create_dir_all(path)?;
        }
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        return Ok(Dir {
            fd,
            path: path.to_path_buf(),
            jailed: false,
        });
    };
    if create {
        // DIR itself is the user's path, taken as given.
        std::fs::create_dir_all(base)?;
    }
    let root_fd = rustix::fs::open(base, DIR_FLAGS, Mode::empty())?;
    let fd = beneath(&root_fd, rel.as_os_str(), create)?;
    Ok(Dir {
        fd,
        path: path.to_path_buf(),
        jailed: true,
    })
}

/// Resolve `rel` beneath the directory `root` (as chroot would).
fn beneath(root: &OwnedFd, rel: &OsStr, create: bool) -> io::Result<OwnedFd> {
    if rel.is_empty() {
        return root.try_clone();
    }
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    for _ in 0..4 {
        match rustix::fs::openat2(root, rel, DIR_FLAGS, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(e) if e == Errno::NOENT && create => break,
            // A rename raced the lookup: try again, then walk.
            Err(e) if e == Errno::AGAIN => continue,
            // No openat2 (kernel < 5.6, seccomp): walk.
            Err(e) if e == Errno::NOSYS || e == Errno::PERM || e == Errno::INVAL => break,
            Err(e) => return Err(e.into()),
        }
    }
    walk(root, rel, create)
}

/// The component-by-component resolution: `O_NOFOLLOW` on every step, a
/// symlink read and its target resolved again beneath `root`.
fn walk(root: &OwnedFd, rel: &OsStr, create: bool) -> io::Result<OwnedFd> {
    // Components still to resolve, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, rel.as_bytes());
    // The directories above `cur`, for "..".
    let mut above: Vec<OwnedFd> = Vec::new();
    let mut cur = root.try_clone()?;
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            if let Some(up) = above.pop() {
                cur = up;
            }
            continue;
        }
        match rustix::fs::openat(&cur, &c, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => above.push(std::mem::replace(&mut cur, fd)),
            Err(e) if e == Errno::NOENT && create => {
                match rustix::fs::mkdirat(&cur, &c, Mode::from_raw_mode(0o755)) {
                    Ok(()) => {}
                    Err(e) if e == Errno::EXIST => {}
                    Err(e) => return Err(e.into()),
                }
                todo.push(c);
            }
            Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                let st = rustix::fs::statat(&cur, &c, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    return Err(Errno::NOTDIR.into());
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::LOOP.into());
                }
                let target = rustix::fs::readlinkat(&cur, &c, Vec::new())?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    cur = root.try_clone()?;
                    above.clear();
                }
                push_components(&mut todo, target);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(cur)
}

fn push_components(todo: &mut Vec<OsString>, path: &[u8]) {
    for c in path.split(|&b| b == b'/').rev() {
        if !c.is_empty() && c != b"." {
            todo.push(OsString::from_vec(c.to_vec()));
        }
    }
}

impl Dir {
    /// The path this directory was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// A second descriptor for the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            jailed: self.jailed,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Open the file `name` with `flags` (plus `O_CLOEXEC`, and
    /// `O_NOFOLLOW` beneath a root); `mode` when it is created.
    pub fn open_file(&self, name: impl AsRef<OsStr>, flags: OFlags, mode: u32) -> io::Result<File> {
        let name = single(name.as_ref())?;
        let mut flags = flags | OFlags::CLOEXEC;
        if self.jailed {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode))
            .map_err(refuse_link)?;
        Ok(File::from(fd))
    }

    /// Create the new file `name` for writing (`O_CREAT|O_EXCL|O_NOFOLLOW`,
    /// exactly `mode` whatever the umask): for scratch files that are
    /// never renamed (a netrc in a private directory). Files that replace
    /// something go through [`Dir::new_file`].
    pub fn create_new(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let f = self.open_file(name, flags, mode)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        Ok(f)
    }

    /// Open (creating it with `mode` if missing) the lock file `name`,
    /// never through a symlink, and set its mode to `mode` (a lock file
    /// made by an older version with a looser mode is tightened).
    pub fn open_lock(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW;
        let f = self.open_file(name, flags, mode)?;
        let st = rustix::fs::fstat(&f)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other("it is not a regular file"));
        }
        if st.st_mode & 0o7777 != mode {
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        }
        Ok(f)
    }

    /// Set the mode of this directory (through its descriptor).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        let st = rustix::fs::fstat(&self.fd)?;
        if st.st_mode & 0o7777 != mode {
            rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))?;
        }
        Ok(())
    }

    /// A new file that will replace `name` when committed: created under a
    /// random temporary name with `mode` (see the module text).
    pub fn new_file(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<NewFile<'_>> {
        let name = single(name.as_ref())?.to_os_string();
        let tmp = temp_name(&name, "tmp");
        let file = self.create_new(&tmp, mode)?;
        Ok(NewFile {
            dir: self,
            tmp,
            name,
            file: Some(file),
        })
    }

    /// Replace `name` with a file holding `data`, atomically and durably.
    pub fn write_atomic(&self, name: impl AsRef<OsStr>, mode: u32, data: &[u8]) -> io::Result<()> {
        let mut f = self.new_file(name, mode)?;
        f.write_all(data)?;
        f.commit()
    }

    /// Replace `name` with the symlink `name` -> `target`, atomically and
    /// durably: made under a random temporary name, then renamed over it
    /// (a symlink or file there is replaced, never followed).
    pub fn symlink_atomic(
        &self,
        target: impl AsRef<OsStr>,
        name: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        let name = single(name.as_ref())?;
        let tmp = temp_name(name, "tmp");
        rustix::fs::symlinkat(target.as_ref(), &self.fd, &tmp)?;
        if let Err(e) = rustix::fs::renameat(&self.fd, &tmp, &self.fd, name) {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
            return Err(e.into());
        }
        self.sync()
    }

    /// Make the directory `name` (0755) in this directory.
    pub fn create_dir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = single(name.as_ref())?;
        Ok(rustix::fs::mkdirat(
            &self.fd,
            name,
            Mode::from_raw_mode(0o755),
        )?)
    }

    /// Open the directory `name` in this directory, never through a
    /// symlink.
    pub fn open_subdir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = single(name.as_ref())?;
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
            .map_err(refuse_link)?;
        Ok(Dir {
            fd,
            path: self.path.join(name),
            jailed: true,
        })
    }

    /// A new private (0700) directory beside `name`, under a random
    /// temporary name, to be filled then renamed over `name`: its name and
    /// the open directory.
    pub fn create_temp_dir(
        &self,
        name: impl AsRef<OsStr>,
        tag: &str,
    ) -> io::Result<(OsString, Dir)> {
        let name = single(name.as_ref())?;
        let tmp = temp_name(name, tag);
        rustix::fs::mkdirat(&self.fd, &tmp, Mode::from_raw_mode(0o700))?;
        let fd = rustix::fs::openat(&self.fd, &tmp, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
        let d = Dir {
            fd,
            path: self.path.join(&tmp),
            jailed: true,
        };
        Ok((tmp, d))
    }

    /// Read the file `name` (not followed if a symlink beneath a root).
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        self.open_file(name, OFlags::RDONLY, 0)
    }

    /// The whole of the small regular file `name`, at most `limit` bytes:
    /// opened without blocking (a FIFO planted there cannot hold fh-lite),
    /// refused when it is not a regular file (`/dev/zero`) or is bigger.
    pub fn read_small(&self, name: impl AsRef<OsStr>, limit: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let f = self.open_file(name, OFlags::RDONLY | OFlags::NONBLOCK, 0)?;
        let st = rustix::fs::fstat(&f)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::other("it is not a regular file"));
        }
        let mut bytes = Vec::new();
        f.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is bigger than {limit} bytes"),
            ));
        }
        Ok(bytes)
    }

    /// Rename `from` to `to`, both in this directory, replacing `to`.
    pub fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> io::Result<()> {
        let (from, to) = (single(from.as_ref())?, single(to.as_ref())?);
        Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Rename `from` to `to` in this directory, never replacing `to`:
    /// Ok(false) when `to` exists.
    pub fn rename_noreplace(
        &self,
        from: impl AsRef<OsStr>,
        to: impl AsRef<OsStr>,
    ) -> io::Result<bool> {
        let (from, to) = (single(from.as_ref())?, single(to.as_ref())?);
        match rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e == Errno::EXIST || e == Errno::NOTEMPTY => Ok(false),
            // Filesystems without RENAME_NOREPLACE: check, then rename.
            Err(e) if e == Errno::INVAL || e == Errno::NOSYS => {
                if self.exists(to) {
                    return Ok(false);
                }
                rustix::fs::renameat(&self.fd, from, &self.fd, to)?;
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Create the symlink `name` -> `target`.
    pub fn symlink(&self, target: impl AsRef<OsStr>, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = single(name.as_ref())?;
        Ok(rustix::fs::symlinkat(target.as_ref(), &self.fd, name)?)
    }

    /// The target of the symlink `name`.
    pub fn readlink(&self, name: impl AsRef<OsStr>) -> io::Result<PathBuf> {
        let name = single(name.as_ref())?;
        let t = rustix::fs::readlinkat(&self.fd, name, Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(t.into_bytes())))
    }

    /// Something (anything, a dangling symlink included) is at `name`.
    pub fn exists(&self, name: impl AsRef<OsStr>) -> bool {
        rustix::fs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Remove the file or symlink `name`.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = single(name.as_ref())?;
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// The names in this directory (without `.` and `..`).
    pub fn entries(&self) -> io::Result<Vec<OsString>> {
        entries(self.fd.as_fd())
    }

    /// fsync the directory (a rename or create in it is durable).
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// `fstat` of the directory itself.
    pub fn fstat(&self) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Remove the file, symlink or tree `name` (directories may be
    /// read-only: each is made writable through its open descriptor).
    /// Missing is fine. Never by path: see the module text.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        remove_at(self.fd.as_fd(), single(name.as_ref())?)
    }
}

/// `.NAME.TAG-PID-RANDOM`: the pid lets a later run tell a dead run's
/// leftovers; the random part makes the name unpredictable, so nobody can
/// plant something there in advance (and `O_EXCL` refuses it anyway). Its
/// top 16 bits are this boot's tag ([`tagged_random`]).
pub fn temp_name(name: &OsStr, tag: &str) -> OsString {
    let mut n = OsString::from(".");
    // Leave room for the suffix within NAME_MAX.
    let bytes = name.as_bytes();
    n.push(OsStr::from_bytes(&bytes[..bytes.len().min(200)]));
    n.push(format!(
        ".{tag}-{}-{:016x}",
        std::process::id(),
        tagged_random()
    ));
    n
}

/// The pid in a name [`temp_name`] made for `name` and `tag`, if it is one.
pub fn temp_name_pid(tmp: &OsStr, name: &OsStr, tag: &str) -> Option<u32> {
    temp_name_parts(tmp, name, tag).map(|(pid, _)| pid)
}

/// The pid and the random part of a name [`temp_name`] made for `name` and
/// `tag`, if it is one.
pub fn temp_name_parts(tmp: &OsStr, name: &OsStr, tag: &str) -> Option<(u32, u64)> {
    let bytes = name.as_bytes();
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(&bytes[..bytes.len().min(200)]);
    prefix.extend_from_slice(format!(".{tag}-").as_bytes());
    let rest = tmp.as_bytes().strip_prefix(prefix.as_slice())?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (pid, rand) = rest.split_once('-')?;
    if rand.len() != 16 || !rand.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((pid.parse().ok()?, u64::from_str_radix(rand, 16).ok()?))
}

/// The first 16 bits of this boot's id (`/proc/sys/kernel/random/boot_id`,
/// new at every boot), or None where the kernel does not say.
pub fn boot_tag() -> Option<u16> {
    u16::from_str_radix(crate::util::boot_id()?.get(..4)?, 16).ok()
}

/// 64 random bits whose top 16 are this boot's tag ([`boot_tag`]), for the
/// names of temporary files and trees: a later run tells one left in an
/// earlier boot by the tag, even when its pid now belongs to a live
/// process (a device that boots the same way each time hands out the same
/// pids). A failing system RNG leaves the name predictable, never unsafe:
/// O_EXCL|O_NOFOLLOW (or mkdirat, symlinkat) refuse anything there.
pub fn tagged_random() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let r = u64::from_le_bytes(b) ^ u64::from(std::process::id());
    match boot_tag() {
        Some(tag) => (u64::from(tag) << 48) | (r & 0xffff_ffff_ffff),
        None => r,
    }
}

/// Whether a leftover named with `pid` and `rand` ([`tagged_random`]) was
/// left by a run that is dead: made in an earlier boot (the tag differs;
/// two boots share a tag once in 65,536, and then only the pid decides), or
/// its pid is not alive. With no /proc, nothing is known dead. This
/// process's own pid counts as alive: callers that sweep before they make
/// anything decide that case themselves.
pub fn left_by_dead_run(pid: u32, rand: u64, this_boot: Option<u16>) -> bool {
    if std::fs::symlink_metadata("/proc/self").is_err() {
        return false;
    }
    if this_boot.is_some_and(|tag| (rand >> 48) as u16 != tag) {
        return true;
    }
    pid != std::process::id() && std::fs::symlink_metadata(format!("/proc/{pid}")).is_err()
}

/// A file being written under a temporary name in a [`Dir`]: nothing is
/// at its final name until [`NewFile::commit`]; dropped uncommitted, the
/// temporary file is removed.
pub struct NewFile<'d> {
    dir: &'d Dir,
    tmp: OsString,
    name: OsString,
    file: Option<File>,
}

impl NewFile<'_> {
    /// fsync, rename over the final name, fsync the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let Some(f) = self.file.take() else {
            return Err(io::Error::other("already committed"));
        };
        f.sync_all()?;
        drop(f);
        rustix::fs::renameat(&self.dir.fd, &self.tmp, &self.dir.fd, &self.name)?;
        self.tmp.clear();
        self.dir.sync()
    }
}

impl Write for NewFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl io::Seek for NewFile<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        match &mut self.file {
            Some(f) => f.seek(pos),
            None => Err(io::Error::other("already committed")),
        }
    }
}

impl Drop for NewFile<'_> {
    fn drop(&mut self) {
        if !self.tmp.is_empty() {
            let _ = rustix::fs::unlinkat(&self.dir.fd, &self.tmp, AtFlags::empty());
        }
    }
}

/// Replace the file `path` with `data` (mode `mode`), beneath `root` when
/// it lies under it: [`Dir::write_atomic`] in its directory, which must
/// exist.
pub fn write_file(root: Option<&Path>, path: &Path, mode: u32, data: &[u8]) -> io::Result<()> {
    let (dir, name) = split(path)?;
    open_dir(root, dir)?.write_atomic(name, mode, data)
}

/// The directory and the file name of `path` (`.` for a bare name).
pub fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a path to a file (it has no file name)",
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

fn entries(fd: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsString::from_vec(n.to_vec()));
        }
    }
    Ok(out)
}

/// How often the removal of one name starts over when what is there
/// changes under it (a directory swapped for something else).
const REMOVE_TRIES: u32 = 8;

fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let mut last = None;
    for _ in 0..REMOVE_TRIES {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if e == Errno::NOENT => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(e) if e == Errno::NOENT => return Ok(()),
                // Became a directory meanwhile: look again.
                Err(e) if e == Errno::ISDIR || e == Errno::PERM => last = Some(e),
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let dir =
            match rustix::fs::openat(parent, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if e == Errno::NOENT => return Ok(()),
                // Swapped for a symlink or a file since the stat: look again.
                Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
        // Entries are removed from the directory that was opened, wherever
        // it is now; nothing below follows a name.
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o755))?;
        for child in entries(dir.as_fd())? {
            remove_at(dir.as_fd(), &child)?;
        }
        drop(dir);
        match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
            Ok(()) => return Ok(()),
            Err(e) if e == Errno::NOENT => return Ok(()),
            // Swapped (ENOTDIR) or refilled (ENOTEMPTY) meanwhile: again.
            Err(e) if e == Errno::NOTDIR || e == Errno::NOTEMPTY || e == Errno::EXIST => {
                last = Some(e)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| Errno::AGAIN.into(), io::Error::from))
}

/// A path as the managed system sees it → this machine's filesystem: the
/// same path under `root` (`--root DIR`), or itself without one.
pub fn real(root: Option<&Path>, logical: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(logical.strip_prefix("/").unwrap_or(logical)),
        None => logical.to_path_buf(),
    }
}

/// A path on this machine's filesystem → as the managed system sees it:
/// `/` and the part beneath `root`; a path not under `root` is itself.
pub fn logical(root: Option<&Path>, real: &Path) -> PathBuf {
    match root.and_then(|r| real.strip_prefix(r).ok()) {
        Some(rel) => Path::new("/").join(rel),
        None => real.to_path_buf(),
    }
}

/// Follow `logical` inside `root` the way the kernel would inside a chroot:
/// absolute symlink targets restart at `root`. Returns the real path.
pub fn resolve_in_root(root: &Path, logical: &Path) -> io::Result<PathBuf> {
    let mut pending: Vec<PathBuf> = Vec::new();
    let push_all = |pending: &mut Vec<PathBuf>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push(PathBuf::from(n)),
                Component::ParentDir => pending.push(PathBuf::from("..")),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push_all(&mut pending, logical);
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == Path::new("..") {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let real = real(Some(root), &next);
        let meta = std::fs::symlink_metadata(&real)?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(io::Error::other("too many levels of symbolic links"));
            }
            let target = std::fs::read_link(&real)?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            push_all(&mut pending, &target);
        } else {
            cur = next;
        }
    }
    Ok(real(Some(root), &cur))
}

/// A directory that is (same device and inode) the directory `other` on
/// this machine, e.g. the host's `/nix/store` reached through DIR.
pub fn same_dir(dir: &Dir, other: &Path) -> bool {
    match (dir.fstat(), rustix::fs::stat(other)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// The first symlink on the way from `root` to `path` (for programs that
/// follow paths themselves, such as Nix given `--store DIR`), if any.
pub fn first_symlink(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree(t: &Path) -> (PathBuf, PathBuf) {
        let root = t.join("root");
        let outside = t.join("outside");
        std::fs::create_dir_all(root.join("real/deep")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("canary"), b"keep").unwrap();
        (root, outside)
    }

    #[test]
    fn small_reads_are_bounded_and_never_block() {
        let t = crate::testutil::TempDir::new("rootfs");
        let d = t.path();
        std::fs::write(d.join("conf"), b"default x\n").unwrap();
        std::fs::write(d.join("big"), vec![b'a'; 2049]).unwrap();
        symlink("/dev/zero", d.join("zero")).unwrap();
        let fifo = d.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let dir = open_dir(None, d).unwrap();
        assert_eq!(dir.read_small("conf", 2048).unwrap(), b"default x\n");
        let big = dir.read_small("big", 2048).unwrap_err();
        assert!(big.to_string().contains("bigger than 2048 bytes"), "{big}");
        let zero = dir.read_small("zero", 2048).unwrap_err();
        assert!(zero.to_string().contains("not a regular file"), "{zero}");
        // A FIFO nobody writes to: refused at once, not waited on (the
        // read runs on a thread so that a regression fails here by name
        // instead of hanging the suite).
        let (tx, rx) = std::sync::mpsc::channel();
        let d2 = d.to_path_buf();
        std::thread::spawn(move || {
            let r = open_dir(None, &d2).unwrap().read_small("fifo", 2048);
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("read_small blocked on a FIFO for 10 s");
        assert!(r.unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn symlinks_resolve_as_chroot_sees_them() {
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        // Absolute: restarts at root; relative with "..": stops at root.
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("up")).unwrap();
        symlink(&outside, root.join("escape")).unwrap();
        for walk_only in [false, true] {
            let open = |rel: &str| -> io::Result<Dir> {
                if walk_only {
                    let r = rustix::fs::open(&root, DIR_FLAGS, Mode::empty()).unwrap();
                    let fd = walk(&r, OsStr::new(rel), false)?;
                    Ok(Dir {
                        fd,
                        path: root.join(rel),
                        jailed: true,
                    })
                } else {
                    open_dir(Some(&root), &root.join(rel))
                }
            };
            assert_eq!(open("abs/deep").unwrap().entries().unwrap().len(), 0);
            assert_eq!(
                open("up").unwrap().entries().unwrap(),
                vec![OsString::from("deep")]
            );
            // The outside path does not exist beneath root.
            let e = open("escape").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{walk_only}: {e}");
        }
        // Created beneath root, not outside.
        let d = create_dir_all(Some(&root), &root.join("escape/new")).unwrap();
        d.create_new("f", 0o644).unwrap();
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("new/f")
            .exists());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    }

    #[test]
    fn real_and_logical_paths_convert_both_ways() {
        let root = Path::new("/mnt/img");
        for (seen, on_disk) in [
            (
                "/nix/var/nix/profiles/system",
                "/mnt/img/nix/var/nix/profiles/system",
            ),
            ("/", "/mnt/img"),
        ] {
            assert_eq!(real(Some(root), Path::new(seen)), Path::new(on_disk));
            assert_eq!(logical(Some(root), Path::new(on_disk)), Path::new(seen));
        }
        // Without --root, and for a path outside it, nothing changes.
        assert_eq!(real(None, Path::new("/etc/x")), Path::new("/etc/x"));
        assert_eq!(logical(None, Path::new("/etc/x")), Path::new("/etc/x"));
        assert_eq!(
            logical(Some(root), Path::new("/srv/x")),
            Path::new("/srv/x")
        );
    }

    #[test]
    fn resolve_in_root_follows_links_as_chroot_sees_them() {
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real/deep", root.join("up")).unwrap();
        symlink(&outside, root.join("escape")).unwrap();
        let resolved = |l: &str| resolve_in_root(&root, Path::new(l));
        assert_eq!(resolved("/abs/deep").unwrap(), root.join("real/deep"));
        assert_eq!(resolved("/up").unwrap(), root.join("real/deep"));
        // The outside directory is looked for beneath root, where it is not.
        let e = resolved("/escape/canary").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn files_are_not_followed() {
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        symlink(outside.join("canary"), root.join("lock")).unwrap();
        let d = open_dir(Some(&root), &root).unwrap();
        let e = d
            .open_file("lock", OFlags::RDWR | OFlags::CREATE, 0o600)
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(d.create_new("lock", 0o600).is_err());
        assert!(d.open_read("lock").is_err());
        d.remove_tree("lock").unwrap();
        assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"keep");
    }

    #[test]
    fn atomic_writes_replace_links_and_never_follow_them() {
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        let victim = outside.join("canary");
        for jail in [Some(root.as_path()), None] {
            let d = open_dir(jail, &root).unwrap();
            symlink(&victim, root.join("f")).unwrap();
            d.write_atomic("f", 0o600, b"new").unwrap();
            let md = std::fs::symlink_metadata(root.join("f")).unwrap();
            assert!(md.file_type().is_file());
            assert_eq!(md.permissions().mode() & 0o7777, 0o600);
            assert_eq!(std::fs::read(root.join("f")).unwrap(), b"new");
            d.symlink_atomic("/nix/store/x", "f").unwrap();
            assert_eq!(d.readlink("f").unwrap(), Path::new("/nix/store/x"));
            // Uncommitted: nothing left, nothing replaced.
            let mut nf = d.new_file("g", 0o644).unwrap();
            nf.write_all(b"half").unwrap();
            drop(nf);
            let mut names = d.entries().unwrap();
            names.sort();
            assert_eq!(names, ["f", "real"], "{jail:?}");
            d.remove_file("f").unwrap();
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let n = temp_name(OsStr::new("state.json"), "tmp");
        assert_eq!(
            temp_name_pid(&n, OsStr::new("state.json"), "tmp"),
            Some(std::process::id())
        );
        assert_ne!(n, temp_name(OsStr::new("state.json"), "tmp"));
        assert_eq!(temp_name_pid(&n, OsStr::new("state"), "tmp"), None);
    }

    #[test]
    fn without_a_root_paths_are_the_real_ones() {
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        symlink(&outside, root.join("persist")).unwrap();
        symlink(outside.join("canary"), root.join("file")).unwrap();
        let d = open_dir(None, &root.join("persist")).unwrap();
        assert!(d.entries().unwrap().contains(&OsString::from("canary")));
        let d = open_dir(None, &root).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut d.open_read("file").unwrap(), &mut text).unwrap();
        assert_eq!(text, "keep");
        // A root that is not above the path: also the real path.
        let d = open_dir(Some(&outside), &root.join("persist")).unwrap();
        assert!(d.entries().unwrap().contains(&OsString::from("canary")));
    }

    #[test]
    fn remove_tree_makes_read_only_dirs_writable_and_keeps_link_targets() {
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        let s = root.join("stale");
        std::fs::create_dir_all(s.join("a/b")).unwrap();
        std::fs::write(s.join("a/b/f"), b"x").unwrap();
        symlink(&outside, s.join("a/out")).unwrap();
        std::fs::set_permissions(s.join("a/b"), std::fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::set_permissions(s.join("a"), std::fs::Permissions::from_mode(0o555)).unwrap();
        let d = open_dir(None, &root).unwrap();
        d.remove_tree("stale").unwrap();
        assert!(!s.exists());
        d.remove_tree("stale").unwrap();
        assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"keep");
    }

    /// A helper keeps swapping a directory inside the stale tree for a
    /// symlink to a canary directory while it is removed: the canary
    /// survives every round.
    #[test]
    fn remove_tree_race_never_reaches_the_canary() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        for i in 0..20 {
            std::fs::write(outside.join(format!("c{i}")), b"keep").unwrap();
        }
        let canary_files = || std::fs::read_dir(&outside).unwrap().count();
        let d = open_dir(None, &root).unwrap();
        for round in 0..200 {
            let stale = root.join("stale");
            std::fs::create_dir_all(stale.join("sub")).unwrap();
            for i in 0..20 {
                std::fs::write(stale.join(format!("sub/f{i}")), b"x").unwrap();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let swapping = Arc::new(AtomicBool::new(false));
            let swapper = {
                let (stop, stale, outside) = (stop.clone(), stale.clone(), outside.clone());
                let swapping = swapping.clone();
                std::thread::spawn(move || {
                    // The symlink waits outside the stale tree.
                    let (sub, link) = (stale.join("sub"), stale.with_file_name("spare"));
                    let _ = std::fs::remove_file(&link);
                    let _ = symlink(&outside, &link);
                    // Atomically exchange the directory and the symlink,
                    // over and over: "sub" flips between the two.
                    while !stop.load(Ordering::SeqCst) {
                        let _ = rustix::fs::renameat_with(
                            rustix::fs::CWD,
                            &sub,
                            rustix::fs::CWD,
                            &link,
                            rustix::fs::RenameFlags::EXCHANGE,
                        );
                        swapping.store(true, Ordering::SeqCst);
                    }
                })
            };
            while !swapping.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let _ = d.remove_tree("stale");
            stop.store(true, Ordering::SeqCst);
            swapper.join().unwrap();
            assert_eq!(canary_files(), 21, "round {round}");
            let _ = std::fs::remove_dir_all(&stale);
            let _ = std::fs::remove_dir_all(root.join("spare"));
        }
        for i in 0..20 {
            assert_eq!(
                std::fs::read(outside.join(format!("c{i}"))).unwrap(),
                b"keep"
            );
        }
        assert_eq!(std::fs::read(outside.join("canary")).unwrap(), b"keep");
    }

    #[test]
    fn finds_the_first_symlink_and_the_host_dir() {
        let t = crate::testutil::TempDir::new("rootfs");
        let (root, outside) = tree(t.path());
        std::fs::create_dir_all(root.join("nix/var/nix")).unwrap();
        symlink(&outside, root.join("nix/var/nix/db")).unwrap();
        assert_eq!(
            first_symlink(&root, &root.join("nix/var/nix/db")),
            Some(root.join("nix/var/nix/db"))
        );
        assert_eq!(first_symlink(&root, &root.join("nix/var")), None);
        symlink(&outside, root.join("store")).unwrap();
        let d = open_dir(None, &root.join("store")).unwrap();
        assert!(same_dir(&d, &outside));
        assert!(!same_dir(&d, &root));
    }
}
