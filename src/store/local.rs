//! The local-store backend: root writes the store directly (no daemon) and
//! registers paths with `nix-store --load-db` (docs/formats.md, "nix-store --load-db").
//!
//! The store lives under `root` ("/" on a live system, DIR with `--root`):
//! paths in `<root>/nix/store`, state in `<root>/nix/var/nix`.
//!
//! Coordination with other Nix processes, as Nix itself does it (formats.md "nix-store --load-db"):
//! - GC protection: temp roots in `temproots/<pid>` (full paths, each
//!   followed by NUL) under a shared flock, appended under an exclusive
//!   one; before each append we try to take `gc.lock` shared without
//!   blocking; if a collector holds it we tell it about the path through
//!   `gc-socket/socket` (path + `\n`, answer byte `1`).
//! - Per-path lock `<store>/<base>.lock` (flock exclusive); a lock file
//!   with content is stale (its owner deleted it) and is reopened.
//!
//! `add_path`: lock, unpack with [`unpack::unpack_verified_as`] into
//! `<store>/<hash>-fhlite-tmp-<pid>-<rand>` (made a temp root first, so a
//! concurrent GC leaves it alone) while hashing, counting and strictly
//! parsing the NAR, check NarHash/NarSize, rename into place, then
//! `nix-store --load-db` with the record (hash and size given, so Nix does
//! not re-hash). On any failure the temp dir or the moved path is removed:
//! nothing half-written stays and nothing is registered.
//! `--load-db` cannot carry signatures, so [`Store::finish`] has Nix add
//! them to its own database: the narinfos of the paths registered (with
//! the cache's `Sig:` lines, which fh-lite verified before downloading) are
//! written to a private `file://` binary cache, and `nix store copy-sigs
//! --substituter file://DIR --store ROOT PATHS` copies their signatures
//! into the store's database, so `nix path-info --sigs` shows them and a
//! later `nix copy` or `require-sigs` finds signed paths. (A run killed
//! between a path's registration and the end of the fetch leaves it
//! unsigned.) CA fields are not carried.
//!
//! Durability: before `--load-db` makes a path valid, the store's
//! filesystem is synced (`syncfs`, as the image backend does), so a power
//! cut never leaves a valid path with files still in the page cache.
//!
//! A fresh root (no `nix/var/nix/db` yet) is initialised by Nix itself on
//! the first `nix-store --store DIR` call; [`LocalStore::check_writable`]
//! says what is missing when it cannot be (not root, read-only).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::program::{self, show_args};
use super::unpack::{self, Commit};
use super::{Store, StoreError};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::rootfs::{self, Dir};
use rustix::fs::OFlags;

/// The local-store backend (see the module doc).
pub struct LocalStore {
    root: PathBuf,
    nix_store: OsString,
    /// Extra environment for `nix-store` (tests point it at a private
    /// config); empty in production.
    env: Vec<(OsString, OsString)>,
    roots: Mutex<TempRoots>,
    /// `nix`, for `nix store copy-sigs`.
    nix: OsString,
    /// The paths registered by this run that carry signatures, for
    /// [`Store::finish`].
    signed: Mutex<Vec<NarInfo>>,
    /// Temp trees of dead runs removed (once, by the first `add_path` or
    /// `finish`: a run that writes).
    swept: std::sync::Once,
}

#[derive(Default)]
struct TempRoots {
    /// `temproots/<pid>`, held with a shared flock while we live, and
    /// the `temproots` directory it is in.
    file: Option<(PathBuf, File)>,
    dir: Option<(Dir, String)>,
    gc_lock: Option<File>,
    gc_socket: Option<UnixStream>,
}

fn io_err(what: &'static str, file: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let file = file.to_path_buf();
    move |err| StoreError::Io { what, file, err }
}

impl LocalStore {
    /// A local store under `root` ("/" for the live system).
    pub fn new(root: &Path) -> LocalStore {
        LocalStore {
            root: root.to_path_buf(),
            nix_store: "nix-store".into(),
            env: Vec::new(),
            roots: Mutex::new(TempRoots::default()),
            nix: "nix".into(),
            signed: Mutex::new(Vec::new()),
            swept: std::sync::Once::new(),
        }
    }

    /// Remove what killed runs left in the store (unpack::remove_debris).
    fn sweep(&self) {
        self.swept.call_once(|| {
            if let Ok(d) = unpack::open_store_dir(&self.root, false) {
                unpack::remove_debris(&d);
            }
        });
    }

    /// Run `nix-store` with this environment added (tests).
    #[cfg(test)]
    pub fn with_env(mut self, env: Vec<(OsString, OsString)>) -> LocalStore {
        self.env = env;
        self
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join("nix/var/nix")
    }

    /// Can this process write the store's existing database (for `--store
    /// auto`, which never creates a store)?
    pub fn writable(root: &Path) -> bool {
        rustix::process::geteuid().is_root()
            && symlink_in_nix_dirs(root).is_none()
            && rustix::fs::access(root.join("nix/var/nix/db"), rustix::fs::Access::WRITE_OK).is_ok()
    }

    /// For `--store local`: Ok when this process can write the database
    /// under `root`, or create it (a fresh root: Nix makes the database on
    /// first use); else what is wrong and what to do.
    pub fn check_writable(root: &Path) -> Result<(), String> {
        use rustix::fs::{access, Access};
        let db = root.join("nix/var/nix/db");
        if !rustix::process::geteuid().is_root() {
            return Err(format!(
                "--store local writes the store database {} directly, which needs root: run \
                 fh-lite as root, or use --store daemon",
                db.display()
            ));
        }
        if let Some(link) = symlink_in_nix_dirs(root) {
            return Err(format!(
                "--store local: {} is a symbolic link; nix-store would follow it out of {}: \
                 make it a directory, or use --store image",
                link.display(),
                root.display()
            ));
        }
        // The database, or the nearest directory above it that exists.
        let Some(dir) = db.ancestors().find(|d| d.exists()) else {
            return Err(format!("--store local: {} does not exist", root.display()));
        };
        if !dir.is_dir() {
            return Err(format!(
                "--store local: cannot create the store database {}: {} is not a directory",
                db.display(),
                dir.display()
            ));
        }
        match access(dir, Access::WRITE_OK) {
            Ok(()) => Ok(()),
            Err(e) if dir == db => Err(format!(
                "--store local: cannot write the store database {}: {e} (a read-only store? \
                 use --store daemon)",
                db.display()
            )),
            Err(e) => Err(format!(
                "--store local: cannot create the store database {}: {} is not writable ({e})",
                db.display(),
                dir.display()
            )),
        }
    }

    /// Sync the filesystem of the store, so that what was unpacked is on
    /// disk before it is registered.
    fn sync_store(&self) -> Result<(), StoreError> {
        let store = unpack::open_store_dir(&self.root, false)?;
        rustix::fs::syncfs(store.fd()).map_err(|e| io_err("syncing", store.path())(e.into()))
    }

    fn nix_store(
        &self,
        args: &[&std::ffi::OsStr],
        stdin: Option<&[u8]>,
    ) -> Result<String, StoreError> {
        let mut cmd = program::command(&self.nix_store)?;
        cmd.arg("--store").arg(&self.root).args(args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let shown = format!("--store {} {}", self.root.display(), show_args(args));
        program::run(cmd, &shown, stdin)
    }

    fn add_temp_root(&self, full: &str) -> Result<(), StoreError> {
        // No "already added" shortcut: announcing a root again is how the
        // apply makes sure a collector that is running right now has it
        // (cmd/apply.rs, after activation).
        let mut r = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state_dir();
        if r.file.is_none() {
            let dir = state.join("temproots");
            let d =
                rootfs::create_dir_all(Some(&self.root), &dir).map_err(io_err("creating", &dir))?;
            let name = std::process::id().to_string();
            let p = dir.join(&name);
            loop {
                // A file of ours from a dead process with the same pid.
                let _ = d.remove_file(&name);
                let f = open_lock_file(&d, &name)?;
                f.lock_shared().map_err(io_err("locking", &p))?;
                let len = f.metadata().map_err(io_err("reading", &p))?.len();
                // The collector deleted it before we locked it: again.
                if len == 0 {
                    r.file = Some((p, f));
                    r.dir = Some((d, name));
                    break;
                }
            }
        }
        if r.gc_lock.is_none() {
            let d =
                rootfs::open_dir(Some(&self.root), &state).map_err(io_err("opening", &state))?;
            r.gc_lock = Some(open_lock_file(&d, "gc.lock")?);
        }
        loop {
            let gc_lock = r.gc_lock.as_ref().ok_or_else(|| unreachable_io(&state))?;
            let got = match gc_lock.try_lock_shared() {
                Ok(()) => true,
                Err(fs::TryLockError::WouldBlock) => false,
                Err(fs::TryLockError::Error(e)) => {
                    return Err(io_err("locking", &state.join("gc.lock"))(e))
                }
            };
            if !got {
                // The collector is running: tell it about the root.
                let sock = state.join("gc-socket/socket");
                if r.gc_socket.is_none() {
                    let s = UnixStream::connect(&sock).map_err(io_err("connecting to", &sock))?;
                    r.gc_socket = Some(s);
                }
                let told = r.gc_socket.as_mut().map(|s| {
                    s.write_all(format!("{full}\n").as_bytes())?;
                    let mut c = [0u8; 1];
                    s.read_exact(&mut c)?;
                    Ok::<u8, io::Error>(c[0])
                });
                match told {
                    Some(Ok(b'1')) => {}
                    Some(Ok(c)) => {
                        return Err(StoreError::Io {
                            what: "unexpected answer from the garbage collector at",
                            file: sock,
                            err: io::Error::new(io::ErrorKind::InvalidData, format!("byte {c}")),
                        })
                    }
                    // The collector finished meanwhile: start over.
                    _ => {
                        r.gc_socket = None;
                        continue;
                    }
                }
            }
            let (p, f) = r.file.as_ref().ok_or_else(|| unreachable_io(&state))?;
            f.lock().map_err(io_err("locking", p))?;
            let mut w = f;
            w.write_all(format!("{full}\0").as_bytes())
                .map_err(io_err("writing", p))?;
            f.lock_shared().map_err(io_err("locking", p))?;
            if got {
                let _ = r.gc_lock.as_ref().map(File::unlock);
            }
            break;
        }
        Ok(())
    }

    fn is_valid(&self, p: &StorePath) -> Result<bool, StoreError> {
        Ok(self.query_valid(std::slice::from_ref(p))?.contains(p))
    }

    fn register(&self, info: &NarInfo) -> Result<(), StoreError> {
        // formats.md "nix-store --load-db": path, narHash (bare base16), narSize, deriver, refs.
        let mut rec = String::new();
        rec.push_str(&format!("{}\n", info.store_path));
        rec.push_str(&format!("{}\n", info.nar_hash.to_hex()));
        rec.push_str(&format!("{}\n", info.nar_size));
        match &info.deriver {
            Some(d) => rec.push_str(&format!("{d}\n")),
            None => rec.push('\n'),
        }
        rec.push_str(&format!("{}\n", info.references.len()));
        for r in &info.references {
            rec.push_str(&format!("{r}\n"));
        }
        self.nix_store(&["--load-db".as_ref()], Some(rec.as_bytes()))
            .map(|_| ())
    }
}

impl LocalStore {
    /// Have Nix add the signatures of `infos` (registered already) to the
    /// store's database (see the module doc).
    fn copy_sigs(&self, infos: &[NarInfo]) -> Result<(), StoreError> {
        if infos.is_empty() {
            return Ok(());
        }
        let cache = SigCache::create(infos)?;
        let mut cmd = program::command(&self.nix)?;
        let mut args: Vec<OsString> = vec![
            "--extra-experimental-features".into(),
            "nix-command".into(),
            "store".into(),
            "copy-sigs".into(),
            "--store".into(),
            self.root.clone().into(),
            "--substituter".into(),
            format!("file://{}", cache.0.display()).into(),
        ];
        let shown = format!("{} ({} paths)", show_args(&args[2..]), infos.len());
        args.extend(
            infos
                .iter()
                .map(|i| OsString::from(i.store_path.to_string())),
        );
        cmd.args(&args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        program::run(cmd, &shown, None).map(|_| ())
    }
}

/// A private `file://` binary cache holding narinfos only; removed on drop.
struct SigCache(PathBuf);

impl SigCache {
    fn create(infos: &[NarInfo]) -> Result<SigCache, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fh-lite-sigs-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // `create` (not create_all): nobody can have prepared it for us.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("creating", &dir))?;
        let cache = SigCache(dir);
        let write = |name: &str, text: &str| {
            let p = cache.0.join(name);
            crate::rootfs::open_dir(None, &cache.0)
                .and_then(|d| d.write_atomic(name, 0o600, text.as_bytes()))
                .map_err(io_err("writing", &p))
        };
        write(
            "nix-cache-info",
            &format!("StoreDir: {}\n", crate::nix::store_path::STORE_DIR),
        )?;
        for info in infos {
            // Nix reads only the record and the signatures here; it wants
            // a URL, though, and never fetches it.
            let mut info = info.clone();
            if info.url.is_empty() {
                info.url = "nar/none.nar".to_string();
            }
            write(
                &format!("{}.narinfo", info.store_path.hash_part()),
                &info.to_string(),
            )?;
        }
        Ok(cache)
    }
}

impl Drop for SigCache {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn unreachable_io(state: &Path) -> StoreError {
    StoreError::Io {
        what: "temp roots not initialised for",
        file: state.to_path_buf(),
        err: io::Error::other("internal error"),
    }
}

/// Open (create) the lock file `name` in `dir`; never followed if a symlink.
fn open_lock_file(dir: &Dir, name: &str) -> Result<File, StoreError> {
    dir.open_file(name, OFlags::RDWR | OFlags::CREATE, 0o600)
        .map_err(io_err("opening", &dir.join(name)))
}

/// The first symlink in the directories `nix-store --store root` uses
/// (Nix follows them, out of the root if they lead there); None on a live
/// system (`root` is "/").
fn symlink_in_nix_dirs(root: &Path) -> Option<PathBuf> {
    if root == Path::new("/") {
        return None;
    }
    let dirs = [
        "nix/store",
        "nix/var/nix/db",
        "nix/var/nix/temproots",
        "nix/var/nix/gcroots",
        "nix/var/nix/profiles",
        "nix/var/nix/gc-socket",
        "nix/var/nix/gc.lock",
    ];
    dirs.iter()
        .find_map(|d| rootfs::first_symlink(root, &root.join(d)))
}

/// `<path>.lock` in the store directory, held exclusively; dropped =
/// released and deleted.
struct PathLock {
    store: Dir,
    name: String,
    file: File,
}

impl PathLock {
    fn acquire(store: &Dir, name: String) -> Result<PathLock, StoreError> {
        let p = store.join(&name);
        let store = store.try_clone().map_err(io_err("opening", store.path()))?;
        loop {
            let file = open_lock_file(&store, &name)?;
            file.lock().map_err(io_err("locking", &p))?;
            // Non-empty: its owner deleted it after we opened it.
            if file.metadata().map_err(io_err("reading", &p))?.len() == 0 {
                return Ok(PathLock { store, name, file });
            }
        }
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        // As Nix: unlink, then mark the file stale for anyone who opened it
        // before the unlink and is waiting for the lock.
        let _ = self.store.remove_file(&self.name);
        let _ = (&self.file).write_all(b"d");
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local store at {}", self.root.display())
    }

    fn query_valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        if paths.is_empty() {
            return Ok(BTreeSet::new());
        }
        let mut args: Vec<OsString> = vec!["--check-validity".into(), "--print-invalid".into()];
        args.extend(paths.iter().map(|p| OsString::from(p.to_string())));
        let argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out = self.nix_store(&argv, None)?;
        let invalid: BTreeSet<String> = out.lines().map(str::to_string).collect();
        Ok(paths
            .iter()
            .filter(|p| !invalid.contains(&p.to_string()))
            .cloned()
            .collect())
    }

    fn add_temp_roots(&self, paths: &[StorePath]) -> Result<(), StoreError> {
        for p in paths {
            self.add_temp_root(&p.to_string())?;
        }
        Ok(())
    }

    fn add_path(&self, info: &NarInfo, nar: &mut dyn Read) -> Result<(), StoreError> {
        self.sweep();
        let path = &info.store_path;
        super::check_references(self, info)?;
        // A fresh root (image builds, tests) may have no store dir yet;
        // `nix-store --load-db` creates the database itself.
        let store = unpack::open_store_dir(&self.root, true)?;
        let tmp_name = unpack::temp_name(path);
        self.add_temp_root(&path.to_string())?;
        self.add_temp_root(&format!("{}/{tmp_name}", crate::nix::store_path::STORE_DIR))?;
        let _lock = PathLock::acquire(&store, format!("{}.lock", path.base_name()))?;
        if self.is_valid(path)? {
            return Ok(());
        }
        let final_path = store.join(path.base_name());
        // A leftover of an earlier, interrupted attempt (not valid: see above).
        store
            .remove_tree(path.base_name())
            .map_err(io_err("removing stale", &final_path))?;
        let unpacked = unpack::unpack_verified_as(&store, &tmp_name, info, nar)?;
        match unpacked.commit()? {
            Commit::Placed => {}
            // Under the path lock nothing else may place it.
            Commit::AlreadyThere => {
                return Err(StoreError::Conflict {
                    path: path.clone(),
                    file: final_path,
                })
            }
        }
        // The files must be durable before the record that makes them valid.
        if let Err(e) = self.sync_store().and_then(|()| self.register(info)) {
            let _ = store.remove_tree(path.base_name());
            return Err(e);
        }
        if !info.sigs.is_empty() {
            let mut signed = self.signed.lock().unwrap_or_else(|p| p.into_inner());
            signed.push(info.clone());
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), StoreError> {
        self.sweep();
        let signed = std::mem::take(&mut *self.signed.lock().unwrap_or_else(|p| p.into_inner()));
        self.copy_sigs(&signed)
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        // Our temp roots end with us, as in Nix's LocalStore destructor.
        let r = self.roots.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some((d, name)) = r.dir.take() {
            let _ = d.remove_file(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::NixEnv;
    use std::os::unix::fs::MetadataExt;

    fn entries(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".links")
            .collect()
    }

    #[test]
    fn local_store_adds_closure() {
        let Some(env) = NixEnv::new("local-add") else {
            return;
        };
        let c = env.source_closure();
        let root = env.path().join("local");
        let store = LocalStore::new(&root).with_env(env.env.clone());
        let both = [c.dep.store_path.clone(), c.top.store_path.clone()];
        assert!(store.query_valid(&both).unwrap().is_empty());
        store.add_temp_roots(&both).unwrap();
        let roots_file = root
            .join("nix/var/nix/temproots")
            .join(std::process::id().to_string());
        assert_eq!(
            fs::read_to_string(&roots_file).unwrap(),
            format!("{}\0{}\0", both[0], both[1])
        );
        store.add_path(&c.dep, &mut &c.dep_nar[..]).unwrap();
        store.add_path(&c.top, &mut &c.top_nar[..]).unwrap();
        store.finish().unwrap();
        assert_eq!(env.verify(&root), "", "verify --check-contents");
        assert_eq!(
            store.query_valid(&both).unwrap(),
            both.iter().cloned().collect()
        );
        let real = root.join("nix/store");
        assert_eq!(
            entries(&real),
            both.iter().map(|p| p.base_name().to_string()).collect(),
            "only the two paths: no temp dirs, no lock files"
        );
        let dep = real.join(c.dep.store_path.base_name());
        let cases: &[(&str, u32)] = &[
            ("", 0o40555),
            ("hello", 0o100444),
            ("big", 0o100444),
            ("bin", 0o40555),
            ("bin/run", 0o100555),
            ("link", 0o120777),
        ];
        for (name, mode) in cases {
            let m = fs::symlink_metadata(dep.join(name)).unwrap();
            assert_eq!(m.mode(), *mode, "{name}: mode");
            assert_eq!(m.mtime(), 1, "{name}: mtime");
        }
        // The registration carries NarHash and NarSize as given.
        let info = env.run(
            "nix",
            &[
                "path-info",
                "--store",
                root.to_str().unwrap(),
                "--json",
                &c.top.store_path.to_string(),
            ],
            None,
        );
        assert!(info.contains(&c.top.nar_hash.to_sri()), "{info}");
        assert!(info.contains(&c.dep.store_path.to_string()), "{info}");
        drop(store);
        assert!(!roots_file.exists(), "temp roots file left behind");
    }

    #[test]
    fn local_store_rejects_bad_nars_and_keeps_nothing() {
        let Some(env) = NixEnv::new("local-bad") else {
            return;
        };
        let c = env.source_closure();
        let root = env.path().join("local");
        let store = LocalStore::new(&root).with_env(env.env.clone());
        let p = c.dep.store_path.clone();
        for (name, info, nar, want) in c.bad_dep_cases() {
            let e = store.add_path(&info, &mut &nar[..]).unwrap_err();
            assert!(e.to_string().starts_with(want.as_str()), "{name}: {e}");
            assert_eq!(e.exit(), crate::error::Exit::Verification, "{name}");
            assert!(!env.valid(&root, &p), "{name}: became valid");
            assert_eq!(
                entries(&root.join("nix/store")),
                BTreeSet::new(),
                "{name}: left files in the store"
            );
        }
        let e = store.add_path(&c.top, &mut &c.top_nar[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot add {}: its reference {p} is not valid in the store yet (references must be added first)",
                c.top.store_path
            )
        );
        assert_eq!(env.verify(&root), "");
    }

    #[test]
    fn local_temp_roots_hold_against_gc() {
        let Some(env) = NixEnv::new("local-gc") else {
            return;
        };
        let c = env.source_closure();
        let root = env.path().join("local");
        let r = root.to_str().unwrap();
        let store = LocalStore::new(&root).with_env(env.env.clone());
        store
            .add_temp_roots(std::slice::from_ref(&c.dep.store_path))
            .unwrap();
        store.add_path(&c.dep, &mut &c.dep_nar[..]).unwrap();
        env.run("nix-store", &["--store", r, "--gc"], None);
        assert!(
            env.valid(&root, &c.dep.store_path),
            "collected while rooted"
        );
        // Control: once our roots are gone, the collector takes it.
        drop(store);
        env.run("nix-store", &["--store", r, "--gc"], None);
        assert!(
            !env.valid(&root, &c.dep.store_path),
            "GC kept an unrooted path"
        );
    }
}
