//! The fallback backend: let `nix copy` substitute each path itself.
//!
//! `nix --extra-experimental-features nix-command copy --from <cache-url>
//! <path> [--store DIR] --option narinfo-cache-negative-ttl 0 --option
//! trusted-public-keys '<keys>' --netrc-file <f>`. With `--root DIR` the
//! destination is the chroot store DIR; otherwise Nix's default store (the
//! daemon on a live system).
//!
//! The closure token reaches Nix only through a netrc file
//! (`machine <cache host> login flakehub password <token>`), mode 0600,
//! inside a fresh private directory (0700, created exclusively) that a
//! guard removes when the copy ends, also on error or panic. The token is
//! never in argv or the environment, and this type has no `Debug`. A run
//! that is killed (SIGKILL, power cut) leaves its directory behind: its
//! name holds the run's pid and start time (`fh-lite-netrc-PID-TICKS-N`),
//! and the first copy of a later run removes every such directory whose
//! run is gone ([`sweep_netrc_dirs`]), also when a later process got the
//! same pid.
//!
//! One `nix copy` runs at a time: Nix 2.8 keeps a narinfo disk cache
//! (`$XDG_CACHE_HOME/nix/binary-cache-v6.sqlite`), and several processes
//! inserting into it at once fail with "executing SQLite statement 'insert
//! or replace into NARs…': constraint failed". Each copy's own downloads
//! are parallel inside Nix anyway. The copies run on the fetch's calling
//! thread ([`crate::fetch::fetch_all`]) and the netrc watcher starts after
//! the exec: when `nix` is spawned no other thread of fh-lite is alive.
//! qemu-user (aarch64 and armv7 binaries tested on x86_64) can leave a
//! child forked beside a live thread hung on a futex before its exec.
//!
//! TLS: with `--ca-file FILE` (or `SSL_CERT_FILE`), the child gets
//! `NIX_SSL_CERT_FILE=FILE`, which Nix takes as its `ssl-cert-file`
//! setting: a cache behind a private CA works as it does for fh-lite.
//!
//! A failure names the program, the cache URL, the store path and the exit
//! status, with the end of Nix's stderr; never the whole command line
//! (with every trusted key and the netrc path).
//!
//! This backend does not read the NAR ([`Store::reads_nar`] is false):
//! Nix downloads and verifies it (against the keys we pass) on its own.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::program::{self, show_args};
use super::{Store, StoreError};
use crate::http::Secret;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

/// The `nix copy` backend (see the module doc).
pub struct NixCopyStore {
    cache_url: String,
    token: Option<Secret>,
    root: Option<PathBuf>,
    /// `name:base64` keys, space-separated for `trusted-public-keys`.
    trusted_keys: Vec<String>,
    nix: OsString,
    /// Extra environment for `nix` (tests); empty in production.
    env: Vec<(OsString, OsString)>,
    /// PEM CA certificates for the cache's TLS (`NIX_SSL_CERT_FILE`).
    ca_file: Option<PathBuf>,
    /// Where the private netrc directories are made.
    tmp_base: PathBuf,
    /// Held while a `nix copy` runs (see the module doc).
    copying: Mutex<()>,
    /// Dead runs' netrc directories were swept ([`sweep_netrc_dirs`]).
    swept: std::sync::Once,
    /// A SIGTERM or SIGINT arrived ([`crate::signal::interrupted`]).
    interrupted: fn() -> bool,
}

/// The private directory holding the netrc; removed on drop, and at once
/// when a SIGTERM or SIGINT arrives while `nix` runs (a watcher thread,
/// started once `nix` has exec'd: the flag of [`crate::signal`] does not
/// end the process, and the copy may run on for long).
struct NetrcDir {
    dir: PathBuf,
    watcher: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// How often the watcher looks at the signal flag.
const WATCH_EVERY: Duration = Duration::from_millis(50);

static NETRC_SEQ: AtomicU64 = AtomicU64::new(0);

impl NetrcDir {
    fn create(base: &Path, host: &str, token: &Secret) -> Result<(NetrcDir, PathBuf), StoreError> {
        let n = NETRC_SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ticks = crate::util::proc_stat(pid).map_or(0, |s| s.2);
        let dir = base.join(format!("{NETRC_PREFIX}{pid}-{ticks}-{n}"));
        // `create` (not create_all) fails if it exists: nobody can have
        // prepared it for us.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|err| StoreError::Io {
                what: "creating",
                file: dir.clone(),
                err,
            })?;
        let guard = NetrcDir { dir, watcher: None };
        let file = guard.dir.join("netrc");
        let mut f = crate::rootfs::open_dir(None, &guard.dir)
            .and_then(|d| d.create_new("netrc", 0o600))
            .map_err(|err| StoreError::Io {
                what: "creating",
                file: file.clone(),
                err,
            })?;
        let line = format!(
            "machine {host} login flakehub password {}\n",
            token.expose()
        );
        f.write_all(line.as_bytes()).map_err(|err| StoreError::Io {
            what: "writing",
            file: file.clone(),
            err,
        })?;
        Ok((guard, file))
    }

    /// Start the watcher (see the type's doc). Called once `nix` runs, not
    /// before: the spawn happens with no other thread of ours alive.
    fn watch(&mut self, interrupted: fn() -> bool) {
        let done = Arc::new(AtomicBool::new(false));
        let (stop, dir) = (done.clone(), self.dir.clone());
        let watch = std::thread::Builder::new()
            .name("netrc-watch".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if interrupted() {
                        let _ = fs::remove_dir_all(&dir);
                        return;
                    }
                    std::thread::sleep(WATCH_EVERY);
                }
            });
        // No thread to spare: the netrc is still removed on drop.
        if let Ok(watch) = watch {
            self.watcher = Some((done, watch));
        }
    }
}

/// The start of a netrc directory's name; then `PID-TICKS-N` (older
/// versions: `PID-N`).
const NETRC_PREFIX: &str = "fh-lite-netrc-";

/// The pid and (newer names) start time in a netrc directory's name.
fn netrc_dir_owner(name: &str) -> Option<(u32, Option<u64>)> {
    let rest = name.strip_prefix(NETRC_PREFIX)?;
    let parts: Vec<&str> = rest.split('-').collect();
    if !parts
        .iter()
        .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    match parts[..] {
        [pid, _] => Some((pid.parse().ok()?, None)),
        [pid, ticks, _] => Some((pid.parse().ok()?, Some(ticks.parse().ok()?))),
        _ => None,
    }
}

/// Remove the netrc directories in `base` that runs which are gone left
/// behind (killed before their guard ran; each holds a closure token until
/// it expires). A directory's run is alive when its pid is, with the
/// start time in the name (a later process with the same pid is another
/// run: a device boots the same way each time), or for an older name, a
/// pid other than ours. Only directories this user owns are touched,
/// never followed ([`crate::rootfs::Dir::remove_tree`]); without /proc
/// nothing is. A directory that cannot be removed is a warning.
fn sweep_netrc_dirs(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    if fs::symlink_metadata("/proc/self").is_err() {
        return;
    }
    let (Ok(entries), Ok(dir)) = (fs::read_dir(base), crate::rootfs::open_dir(None, base)) else {
        return;
    };
    let me = std::process::id();
    let uid = rustix::process::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, ticks)) = name.to_str().and_then(netrc_dir_owner) else {
            continue;
        };
        let alive = crate::util::proc_stat(pid).is_some_and(|(state, _, start)| {
            state != 'Z'
                && match ticks {
                    Some(t) => t == start,
                    None => pid != me,
                }
        });
        let ours = fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if alive || !ours {
            continue;
        }
        crate::store::unpack::remove_left_by(&dir, &name, pid);
    }
}

impl Drop for NetrcDir {
    fn drop(&mut self) {
        if let Some((done, watch)) = self.watcher.take() {
            done.store(true, Ordering::SeqCst);
            let _ = watch.join();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl NixCopyStore {
    /// `trusted_keys`: `name:base64` public keys Nix must accept.
    pub fn new(
        cache_url: &str,
        token: Option<&Secret>,
        root: Option<&Path>,
        trusted_keys: Vec<String>,
    ) -> NixCopyStore {
        NixCopyStore {
            cache_url: cache_url.trim_end_matches('/').to_string(),
            token: token.cloned(),
            root: root.map(Path::to_path_buf),
            trusted_keys,
            nix: "nix".into(),
            env: Vec::new(),
            ca_file: None,
            tmp_base: std::env::temp_dir(),
            copying: Mutex::new(()),
            swept: std::sync::Once::new(),
            interrupted: crate::signal::interrupted,
        }
    }

    /// Trust the PEM CA certificates in `ca_file` for the cache (what
    /// `--ca-file` or `SSL_CERT_FILE` gave fh-lite itself).
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> NixCopyStore {
        self.ca_file = ca_file;
        self
    }

    #[cfg(test)]
    pub fn with_test_setup(
        mut self,
        env: Vec<(OsString, OsString)>,
        tmp_base: &Path,
        nix: &str,
    ) -> NixCopyStore {
        self.env = env;
        self.tmp_base = tmp_base.to_path_buf();
        self.nix = nix.into();
        self
    }

    /// Run `nix ARGS`; an error shows the program and `shown` (a short
    /// form of the arguments), the exit status and the end of stderr.
    fn nix(&self, args: &[OsString], shown: &str) -> Result<String, StoreError> {
        self.nix_then(args, shown, || {})
    }

    /// [`Self::nix`], calling `started` once `nix` runs.
    fn nix_then(
        &self,
        args: &[OsString],
        shown: &str,
        started: impl FnOnce(),
    ) -> Result<String, StoreError> {
        let mut cmd = program::command(&self.nix)?;
        cmd.arg("--extra-experimental-features").arg("nix-command");
        cmd.args(args);
        if let Some(root) = &self.root {
            cmd.arg("--store").arg(root);
        }
        if let Some(ca) = &self.ca_file {
            cmd.env("NIX_SSL_CERT_FILE", ca);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        program::run_then(cmd, shown, None, started).map_err(|e| match e {
            StoreError::Program { command, detail } => {
                // "<exit status>: <stderr>"; the status ("exit status: 3",
                // "signal: 9 (SIGKILL)") holds one ": " itself.
                let cut = detail.match_indices(": ").nth(1).map(|(i, _)| i + 2);
                let (status, stderr) = detail.split_at(cut.unwrap_or(0));
                StoreError::Program {
                    command,
                    detail: format!("{status}{}", tail(stderr, STDERR_TAIL)),
                }
            }
            e => e,
        })
    }
}

impl Store for NixCopyStore {
    fn describe(&self) -> String {
        match &self.root {
            Some(r) => format!("nix copy into {}", r.display()),
            None => "nix copy into the default store".to_string(),
        }
    }

    fn query_valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        if paths.is_empty() {
            return Ok(BTreeSet::new());
        }
        // `nix path-info P` exits non-zero when P is not valid.
        let mut valid = BTreeSet::new();
        for p in paths {
            let args: Vec<OsString> = vec!["path-info".into(), p.to_string().into()];
            match self.nix(&args, &show_args(&args)) {
                Ok(_) => {
                    valid.insert(p.clone());
                }
                Err(StoreError::Program { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(valid)
    }

    fn add_temp_roots(&self, _paths: &[StorePath]) -> Result<(), StoreError> {
        // `nix copy` holds its own temp roots for what it copies; a path
        // copied earlier is protected by the later copies' closures only
        // until they finish, which is the usual `nix copy` guarantee.
        Ok(())
    }

    fn add_path(&self, info: &NarInfo, _nar: &mut dyn Read) -> Result<(), StoreError> {
        self.swept.call_once(|| sweep_netrc_dirs(&self.tmp_base));
        let mut args: Vec<OsString> = vec![
            "copy".into(),
            "--from".into(),
            self.cache_url.clone().into(),
            "--option".into(),
            "narinfo-cache-negative-ttl".into(),
            "0".into(),
        ];
        if !self.trusted_keys.is_empty() {
            args.push("--option".into());
            args.push("trusted-public-keys".into());
            args.push(self.trusted_keys.join(" ").into());
        }
        let mut guard = match (&self.token, crate::url::url_host(&self.cache_url)) {
            (Some(token), Some(host)) => {
                let (guard, file) = NetrcDir::create(&self.tmp_base, host, token)?;
                args.push("--netrc-file".into());
                args.push(file.into_os_string());
                Some(guard)
            }
            _ => None,
        };
        args.push(info.store_path.to_string().into());
        // A poisoned lock only means another copy panicked: still usable.
        let one_at_a_time = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        let shown = format!("copy --from {} {}", self.cache_url, info.store_path);
        let interrupted = self.interrupted;
        let result = self
            .nix_then(&args, &shown, || {
                if let Some(g) = guard.as_mut() {
                    g.watch(interrupted);
                }
            })
            .map(|_| ());
        drop(one_at_a_time);
        drop(guard);
        result
    }

    fn finish(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn reads_nar(&self) -> bool {
        false
    }
}

/// How much of a failed `nix`'s message is kept: its last lines say why.
const STDERR_TAIL: usize = 2000;

/// The last `max` bytes of `s` (at a character boundary), marked as cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{NixEnv, TempDir};
    use std::io::{self, BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    const TOKEN: &str = "closure-token-s3cr3t-7f2a";

    fn token() -> Secret {
        Secret::new(TOKEN)
    }

    /// A loopback binary-cache server over `dir` that demands HTTP Basic
    /// `flakehub:<TOKEN>`; counts good and refused requests.
    struct AuthServer {
        url: String,
        ok: Arc<AtomicUsize>,
        refused: Arc<AtomicUsize>,
    }

    fn serve(dir: PathBuf) -> AuthServer {
        use base64::Engine;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (ok2, refused2) = (ok.clone(), refused.clone());
        let want = format!(
            "authorization: basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("flakehub:{TOKEN}"))
        )
        .to_lowercase();
        // Detached: it lives as long as the test process (one per test).
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("/").to_string();
                let mut authed = false;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if h.trim().to_lowercase() == want {
                        authed = true;
                    }
                }
                let resp = if !authed {
                    refused2.fetch_add(1, Ordering::Relaxed);
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .as_bytes()
                        .to_vec()
                } else {
                    ok2.fetch_add(1, Ordering::Relaxed);
                    let rel = target.trim_start_matches('/');
                    match (rel.contains(".."), fs::read(dir.join(rel))) {
                        (false, Ok(body)) => {
                            let mut v = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            if method != "HEAD" {
                                v.extend_from_slice(&body);
                            }
                            v
                        }
                        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .as_bytes()
                            .to_vec(),
                    }
                };
                let _ = conn.write_all(&resp);
            }
        });
        AuthServer { url, ok, refused }
    }

    fn empty(dir: &Path) -> bool {
        fs::read_dir(dir).unwrap().next().is_none()
    }

    /// This test's own stand-in for the signal flag (the real one is
    /// process-wide and other tests look at it).
    static SIGNALLED: AtomicBool = AtomicBool::new(false);

    #[test]
    fn netrc_is_removed_when_a_signal_arrives_during_the_copy() {
        let dir = TempDir::new("nixcopy-signal");
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        // A stand-in `nix` that reports whether its netrc is still there
        // after the signal, then exits.
        let fake = dir.path().join("nix");
        let o = dir.path().display();
        fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprev=\nfor a; do [ \"$prev\" = --netrc-file ] && f=$a; prev=$a; done\n\
                 test -e \"$f\" && echo there > {o}/before\n\
                 touch {o}/started\nsleep 1\n\
                 test -e \"$f\" && echo there > {o}/after\nexit 0\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        let mut store = NixCopyStore::new("http://127.0.0.1:1", Some(&token()), None, vec![])
            .with_test_setup(vec![], &tmp, fake.to_str().unwrap());
        store.interrupted = || SIGNALLED.load(Ordering::SeqCst);
        let started = dir.path().join("started");
        let signaller = std::thread::spawn(move || {
            while !started.exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            SIGNALLED.store(true, Ordering::SeqCst);
        });
        let info = NarInfo {
            store_path: crate::testutil::sp('1', "a"),
            url: String::new(),
            compression: crate::nix::narinfo::Compression::None,
            file_hash: None,
            file_size: None,
            nar_hash: crate::nix::hash::Sha256([0; 32]),
            nar_size: 1,
            references: Vec::new(),
            deriver: None,
            sigs: Vec::new(),
            ca: None,
        };
        store.add_path(&info, &mut io::empty()).unwrap();
        signaller.join().unwrap();
        assert!(dir.path().join("before").exists(), "the copy saw no netrc");
        assert!(
            !dir.path().join("after").exists(),
            "the netrc outlived the signal while the copy ran"
        );
        assert!(empty(&tmp));
    }

    #[test]
    fn netrc_dirs_of_dead_runs_are_swept_and_live_ones_kept() {
        use crate::util::proc_stat;
        let dir = TempDir::new("nixcopy-sweep");
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        // A pid that has ended, a live process, and this process.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (lpid, lticks) = (live.id(), proc_stat(live.id()).unwrap().2);
        let me = std::process::id();
        let make = |name: &str| {
            fs::create_dir(tmp.join(name)).unwrap();
            fs::write(
                tmp.join(name).join("netrc"),
                "machine h login flakehub password t\n",
            )
            .unwrap();
        };
        let removed = [
            format!("fh-lite-netrc-{dead}-7"),
            format!("fh-lite-netrc-{dead}-{lticks}-0"),
            // The live pid, another start time: a dead run whose pid was reused.
            format!("fh-lite-netrc-{lpid}-{}-0", lticks + 1),
            // This pid in the older name: a dead run (the sweep runs first).
            format!("fh-lite-netrc-{me}-3"),
        ];
        let kept = [
            format!("fh-lite-netrc-{lpid}-{lticks}-0"),
            format!("fh-lite-netrc-{lpid}-2"),
            "fh-lite-netrc-x-1".to_string(),
            "other".to_string(),
        ];
        for n in removed.iter().chain(&kept) {
            make(n);
        }
        // Not a directory: left alone.
        std::os::unix::fs::symlink(dir.path(), tmp.join(format!("fh-lite-netrc-{dead}-8")))
            .unwrap();
        let fake = dir.path().join("nix");
        crate::testutil::write_executable(&fake, "#!/bin/sh\nexit 0\n");
        let store = NixCopyStore::new("http://127.0.0.1:1", Some(&token()), None, vec![])
            .with_test_setup(vec![], &tmp, fake.to_str().unwrap());
        store
            .add_path(&info_of(crate::testutil::sp('1', "a")), &mut io::empty())
            .unwrap();
        let _ = live.kill();
        let _ = live.wait();
        for n in &removed {
            assert!(!tmp.join(n).exists(), "{n} was not swept");
        }
        for n in &kept {
            assert!(tmp.join(n).join("netrc").exists(), "{n} was removed");
        }
        assert!(fs::symlink_metadata(tmp.join(format!("fh-lite-netrc-{dead}-8"))).is_ok());
        assert!(
            dir.path().join("nix").exists(),
            "the sweep followed a symlink"
        );
    }

    fn info_of(store_path: StorePath) -> NarInfo {
        NarInfo {
            store_path,
            url: String::new(),
            compression: crate::nix::narinfo::Compression::None,
            file_hash: None,
            file_size: None,
            nar_hash: crate::nix::hash::Sha256([0; 32]),
            nar_size: 1,
            references: Vec::new(),
            deriver: None,
            sigs: Vec::new(),
            ca: None,
        }
    }

    #[test]
    fn nix_copy_substitutes_with_token_in_netrc_only() {
        let Some(env) = NixEnv::new("nixcopy") else {
            return;
        };
        let c = env.source_closure();
        let cache = env.path().join("cache");
        env.run(
            "nix",
            &[
                "copy",
                "--store",
                c.store.to_str().unwrap(),
                "--to",
                &format!("file://{}?compression=none", cache.display()),
                &c.top.store_path.to_string(),
            ],
            None,
        );
        let server = serve(cache);
        let dest = env.path().join("dest");
        let tmp = TempDir::new("nixcopy-tmp");
        let store = NixCopyStore::new(
            &server.url,
            Some(&token()),
            Some(&dest),
            vec![env.pk.trim().to_string()],
        )
        .with_test_setup(env.env.clone(), tmp.path(), "nix");
        assert!(!store.reads_nar());
        let both = [c.dep.store_path.clone(), c.top.store_path.clone()];
        store.add_path(&c.dep, &mut io::empty()).unwrap();
        store.add_path(&c.top, &mut io::empty()).unwrap();
        assert!(empty(tmp.path()), "netrc directory left behind");
        assert_eq!(env.verify(&dest), "");
        for p in &both {
            let sigs = env.sigs(&dest, p).unwrap();
            assert!(sigs.contains("test-1:"), "{p}: {sigs}");
        }
        assert_eq!(
            store.query_valid(&both).unwrap(),
            both.iter().cloned().collect()
        );
        assert!(server.ok.load(Ordering::Relaxed) > 0);
        assert_eq!(
            server.refused.load(Ordering::Relaxed),
            0,
            "a request went without the token"
        );

        // Without the token the cache refuses: a clear error, no secret in it.
        let dest2 = env.path().join("dest2");
        let anon = NixCopyStore::new(&server.url, None, Some(&dest2), vec![env.pk.trim().into()])
            .with_test_setup(env.env.clone(), tmp.path(), "nix");
        let e = anon
            .add_path(&c.dep, &mut io::empty())
            .unwrap_err()
            .to_string();
        // The program by the path found on the sanitised PATH (crate::exec).
        let nix = crate::exec::find("nix").unwrap();
        assert!(e.starts_with(&format!("{} copy", nix.display())), "{e}");
        assert!(!e.contains(TOKEN), "{e}");
        assert!(!env.valid(&dest2, &c.dep.store_path));
        assert!(empty(tmp.path()));
    }

    #[test]
    fn nix_copy_argv_env_and_netrc_file() {
        // A stand-in `nix` that records what it was given.
        let dir = TempDir::new("nixcopy-fake");
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let fake = dir.path().join("nix");
        crate::testutil::write_executable(
            &fake,
            &format!(
                "#!/bin/sh\nO={o}\necho \"$@\" > $O/argv\nenv > $O/env\nprev=\nfor a; do\n  if [ \"$prev\" = --netrc-file ]; then\n    stat -c %a \"$a\" > $O/mode; stat -c %a \"$(dirname \"$a\")\" > $O/dirmode; cat \"$a\" > $O/netrc\n  fi\n  prev=$a\ndone\n",
                o = out.display()
            ),
        );
        let tmp = TempDir::new("nixcopy-fake-tmp");
        let store = NixCopyStore::new(
            "https://cache.example.org/",
            Some(&token()),
            Some(Path::new("/mnt/root")),
            vec!["k-1:AAAA".into(), "k-2:BBBB".into()],
        )
        .with_test_setup(Vec::new(), tmp.path(), fake.to_str().unwrap());
        let p = StorePath::parse("/nix/store/00000000000000000000000000000000-x").unwrap();
        let info = NarInfo {
            store_path: p.clone(),
            url: String::new(),
            compression: crate::nix::narinfo::Compression::None,
            file_hash: None,
            file_size: None,
            nar_hash: crate::nix::hash::Sha256([0; 32]),
            nar_size: 1,
            references: Vec::new(),
            deriver: None,
            sigs: Vec::new(),
            ca: None,
        };
        store.add_path(&info, &mut io::empty()).unwrap();
        let read = |f: &str| fs::read_to_string(out.join(f)).unwrap();
        let argv = read("argv");
        let netrc_path = argv
            .split_whitespace()
            .skip_while(|a| *a != "--netrc-file")
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(
            argv.trim(),
            format!(
                "--extra-experimental-features nix-command copy --from https://cache.example.org \
                 --option narinfo-cache-negative-ttl 0 --option trusted-public-keys k-1:AAAA k-2:BBBB \
                 --netrc-file {netrc_path} {p} --store /mnt/root"
            )
        );
        assert!(!argv.contains(TOKEN));
        assert!(!read("env").contains(TOKEN));
        assert_eq!(
            read("netrc"),
            format!("machine cache.example.org login flakehub password {TOKEN}\n")
        );
        assert_eq!(read("mode").trim(), "600");
        assert_eq!(read("dirmode").trim(), "700");
        assert!(!Path::new(&netrc_path).exists());
        assert!(empty(tmp.path()));

        // With a CA file, the child gets it as NIX_SSL_CERT_FILE.
        let with_ca = NixCopyStore::new("https://cache.example.org", None, None, vec![])
            .with_ca_file(Some(PathBuf::from("/etc/fh-ca.pem")))
            .with_test_setup(Vec::new(), tmp.path(), fake.to_str().unwrap());
        with_ca.add_path(&info, &mut io::empty()).unwrap();
        assert!(
            read("env")
                .lines()
                .any(|l| l == "NIX_SSL_CERT_FILE=/etc/fh-ca.pem"),
            "{}",
            read("env")
        );

        // A failing `nix`: program, cache, path, status and the end of its
        // stderr; not the keys or the netrc path.
        let failing = dir.path().join("nix-fails");
        crate::testutil::write_executable(
            &failing,
            "#!/bin/sh\nhead -c 5000 /dev/zero | tr '\\0' x >&2\necho ' error: cannot fetch' >&2\nexit 3\n",
        );
        let bad = NixCopyStore::new(
            "https://cache.example.org",
            Some(&token()),
            None,
            vec!["k-1:AAAA".into()],
        )
        .with_test_setup(Vec::new(), tmp.path(), failing.to_str().unwrap());
        let e = bad
            .add_path(&info, &mut io::empty())
            .unwrap_err()
            .to_string();
        let want = format!(
            "{} copy --from https://cache.example.org {p}: exit status: 3: …",
            failing.display()
        );
        assert!(e.starts_with(&want), "{e}");
        assert!(e.ends_with("xxx error: cannot fetch"), "{e}");
        assert!(e.len() < want.len() + STDERR_TAIL + 10, "{}", e.len());
        assert!(!e.contains("k-1:AAAA") && !e.contains("netrc"), "{e}");
        assert!(empty(tmp.path()));

        // No `nix`: a clear error, and still no netrc left.
        let missing = NixCopyStore::new("https://cache.example.org", Some(&token()), None, vec![])
            .with_test_setup(Vec::new(), tmp.path(), "/nonexistent/nix");
        let e = missing.add_path(&info, &mut io::empty()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/nonexistent/nix: not found on PATH (install Nix, or pick another --store)"
        );
        assert!(empty(tmp.path()));
    }
}
