//! `fh-lite apply --store daemon|local|nix` into a live Nix store (a chroot
//! store under `--root`), judged by real Nix: a nix-daemon serving the
//! root, the local store written directly, the `nix copy` fallback with
//! the closure token kept out of every argv and environment, a garbage
//! collection during a slow transfer, the daemon killed mid-transfer, and
//! a socket that does not speak the worker protocol; a fresh root for the
//! local store, and `nix copy` from a cache behind a private CA.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::deploy::{no_secret, Deploy};
use crate::support::fixtures::{fixtures, Fixtures, TRUSTED_KEY_NAME};
use crate::support::nixd::{nix_cmd, nix_env, NixDaemon};
use crate::support::procs::descendants;
use crate::support::util::{output, Run};

/// NARs sent in 32 KiB pieces 40 ms apart (busybox: about 2.5 s).
const SLOW_NARS: &str = r#"{"slow": [{"prefix": "/nar/", "chunk": 32768, "delay_ms": 40}]}"#;

/// The apply command with the isolated Nix environment (fh-lite's `nix`
/// and `nix-store` children inherit it) and a private TMPDIR.
fn live(d: &Deploy, req: &str, extra: &[&str]) -> Command {
    let mut c = d.command(req, extra);
    c.envs(nix_env(d.tmp.path())).env("TMPDIR", tmpdir(d));
    c
}

fn tmpdir(d: &Deploy) -> PathBuf {
    let t = d.tmp.path().join("fh-tmp");
    std::fs::create_dir_all(&t).unwrap();
    t
}

fn daemon_args(daemon: &NixDaemon) -> Vec<String> {
    vec![
        "--store".into(),
        "daemon".into(),
        "--daemon-socket".into(),
        daemon.socket.display().to_string(),
    ]
}

fn with<'a>(base: &[&'a str], more: &'a [String]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend(more.iter().map(String::as_str));
    v
}

/// A Nix command on the root's store (direct chroot-store access).
fn nix_root(d: &Deploy, program: &str) -> Command {
    let mut c = nix_cmd(d.tmp.path(), program);
    c.arg("--store").arg(&d.root);
    c
}

fn stdout_of(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nix-store --verify --check-contents` finds nothing to report.
fn verify_clean(d: &Deploy) {
    let mut c = nix_root(d, "nix-store");
    c.args(["--verify", "--check-contents"]);
    let out = c.output().unwrap();
    let all =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify failed: {all}");
    const PROGRESS: [&str; 4] = [
        "reading the Nix store...",
        "checking path existence...",
        "checking link hashes...",
        "checking store hashes...",
    ];
    let findings: Vec<&str> = all.lines().filter(|l| !PROGRESS.contains(l)).collect();
    assert!(findings.is_empty(), "nix-store --verify: {findings:?}");
}

fn valid(d: &Deploy, p: &str) -> bool {
    let mut c = nix_root(d, "nix-store");
    c.args(["--check-validity", p])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.status().unwrap().success()
}

/// The closure is valid, equals the manifest's, and every path has the
/// manifest's NAR hash.
fn judge_closure(d: &Deploy, f: &Fixtures, fixture: &str) {
    let fx = f.get(fixture);
    let mut q = nix_root(d, "nix-store");
    q.args(["-qR", &fx.path]);
    let mut got: Vec<String> = stdout_of(q, "nix-store -qR")
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    assert_eq!(got, fx.closure, "closure of {fixture} in the store");
    for p in &fx.closure {
        let mut h = nix_root(d, "nix-store");
        h.args(["-q", "--hash", p]);
        assert_eq!(
            stdout_of(h, "nix-store -q --hash").trim(),
            f.info(p).nar_hash,
            "{p}"
        );
    }
    // Nothing but complete paths (and Nix's own .links) in the store.
    for e in d.store_entries() {
        assert!(
            !e.contains("fhlite-tmp") && (!e.starts_with('.') || e == ".links"),
            "leftover temporary entry {e} in the store"
        );
    }
}

/// `nix path-info --sigs -r`: path → its signature field.
fn sigs(d: &Deploy, path: &str) -> BTreeMap<String, String> {
    let mut c = nix_root(d, "nix");
    c.args(["path-info", "--sigs", "-r", path]);
    stdout_of(c, "nix path-info --sigs")
        .lines()
        .map(|l| {
            let (p, s) = l.split_once('\t').unwrap_or((l, ""));
            (p.trim().to_string(), s.to_string())
        })
        .collect()
}

/// The NAR URLs (`/nar/…`) of `paths`, from the cache's narinfos.
fn nar_urls(f: &Fixtures, cache: &str, paths: &[&String]) -> BTreeSet<String> {
    paths
        .iter()
        .map(|p| {
            let ni = std::fs::read_to_string(
                f.cache(cache)
                    .join(format!("{}.narinfo", Fixtures::hash_part(p))),
            )
            .unwrap();
            let url = ni
                .lines()
                .find_map(|l| l.strip_prefix("URL: "))
                .expect("narinfo URL");
            format!("/{url}")
        })
        .collect()
}

/// A dry run on the filled store: nothing to fetch, no NAR requested. The
/// root is present, so the walk stops there (its closure is valid too):
/// one path already present.
fn dry_run_fetches_nothing(d: &Deploy, req: &str, store: &[String]) {
    let before = d.hub.requests_to("/nar/").len();
    let r = no_secret(output(live(d, req, &with(&["boot", "--dry-run"], store))));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("0 paths to fetch (1 already present)"),
        "{r:?}"
    );
    assert_eq!(d.hub.requests_to("/nar/").len(), before, "no NAR requested");
}

#[test]
fn daemon_store_full_system() {
    let f = fixtures();
    let d = Deploy::new(
        "zstd",
        &[("0.1.175", "system-full"), ("0.1.180", "system-v2")],
        "{}",
    );
    let daemon = NixDaemon::start(d.tmp.path(), &d.root);
    let store = daemon_args(&daemon);
    let r = no_secret(output(live(&d, "=0.1.175", &with(&["boot"], &store))));
    assert_eq!(r.code, 0, "{r:?}");
    let full = f.get("system-full");
    assert!(
        r.stderr.contains(&format!(
            "{} paths in nix-daemon 2.8.0 at {} (",
            full.closure.len(),
            daemon.socket.display()
        )),
        "names the daemon: {r:?}"
    );
    verify_clean(&d);
    judge_closure(&d, f, "system-full");
    // The daemon registered the cache's signature on every path.
    let s = sigs(&d, &full.path);
    assert_eq!(
        s.keys().cloned().collect::<Vec<_>>(),
        full.closure,
        "path-info -r"
    );
    for (p, sig) in &s {
        assert!(
            sig.split_whitespace()
                .any(|g| g.starts_with(&format!("{TRUSTED_KEY_NAME}:"))),
            "{p} lacks the cache's signature: {sig:?}"
        );
    }
    let nars = d.hub.requests_to("/nar/");
    assert_eq!(nars.len(), full.closure.len(), "{nars:?}");
    // The profile generation is there.
    assert_eq!(
        std::fs::read_link(d.root.join("nix/var/nix/profiles/system-1-link")).unwrap(),
        PathBuf::from(&full.path)
    );

    // Again: everything is present, nothing is fetched.
    dry_run_fetches_nothing(&d, "=0.1.175", &store);

    // Another release sharing most of the closure: only what is missing.
    let v2 = f.get("system-v2");
    let missing: Vec<&String> = v2
        .closure
        .iter()
        .filter(|p| !full.closure.contains(p))
        .collect();
    assert!(!missing.is_empty() && missing.len() < v2.closure.len());
    let r = no_secret(output(live(
        &d,
        "=0.1.180",
        &with(&["boot", "--dry-run"], &store),
    )));
    assert_eq!(r.code, 0, "{r:?}");
    let present = v2.closure.len() - missing.len();
    assert!(
        r.stdout.contains(&format!(
            "{} paths to fetch ({present} already present)",
            missing.len()
        )),
        "{r:?}"
    );
    let before = d.hub.requests_to("/nar/").len();
    let r = no_secret(output(live(&d, "=0.1.180", &with(&["boot"], &store))));
    assert_eq!(r.code, 0, "{r:?}");
    let fetched: BTreeSet<String> = d.hub.requests_to("/nar/")[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        fetched,
        nar_urls(f, "zstd", &missing),
        "only the missing NARs"
    );
    assert_eq!(d.hub.requests_to("/nar/").len() - before, missing.len());
    verify_clean(&d);
    judge_closure(&d, f, "system-v2");
}

#[test]
fn local_store_as_root() {
    let f = fixtures();
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    // An empty live store (its database) in the root, made by Nix.
    let mut init = nix_root(&d, "nix-store");
    init.arg("--verify");
    stdout_of(init, "nix-store --verify (creates the database)");
    let store = vec!["--store".to_string(), "local".to_string()];
    let r = no_secret(output(live(&d, "=0.1.175", &with(&["boot"], &store))));
    assert_eq!(r.code, 0, "{r:?}");
    let v1 = f.get("system-v1");
    assert!(
        r.stderr.contains(&format!(
            "{} paths in local store at {} (",
            v1.closure.len(),
            d.root.display()
        )),
        "{r:?}"
    );
    verify_clean(&d);
    judge_closure(&d, f, "system-v1");
    // path-info lists the closure, each path with the cache's signature
    // in Nix's own database.
    let s = sigs(&d, &v1.path);
    assert_eq!(s.keys().cloned().collect::<Vec<_>>(), v1.closure);
    for (p, sig) in &s {
        assert!(
            sig.split_whitespace()
                .any(|g| g.starts_with(&format!("{TRUSTED_KEY_NAME}:"))),
            "{p} lacks the cache's signature: {sig:?}"
        );
    }
    assert_eq!(d.hub.requests_to("/nar/").len(), v1.closure.len());

    dry_run_fetches_nothing(&d, "=0.1.175", &store);
    // A real re-run (--force: activation again) transfers nothing.
    let before = d.hub.requests_to("/nar/").len();
    let r = no_secret(output(live(
        &d,
        "=0.1.175",
        &with(&["boot", "--force"], &store),
    )));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("0 paths in local store at {}", d.root.display())),
        "{r:?}"
    );
    assert_eq!(d.hub.requests_to("/nar/").len(), before, "no NAR requested");
    verify_clean(&d);
}

/// What the watcher saw while fh-lite ran.
#[derive(Default, Debug)]
struct Seen {
    /// Scans of the process tree.
    scans: u64,
    /// argv of every process seen (secrets would be reported, not kept).
    argvs: BTreeSet<String>,
    /// "pid argv[0]: cmdline|environ holds …" findings.
    leaks: BTreeSet<String>,
    /// Private netrc directories seen in TMPDIR: (name, dir mode, netrc mode).
    netrc_dirs: BTreeSet<(String, u32, Option<u32>)>,
}

#[test]
fn nix_copy_fallback_keeps_the_token_out_of_argv_and_environ() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let tmp = tmpdir(&d);
    let store = vec!["--store".to_string(), "nix".to_string()];
    let mut cmd = live(&d, "=0.1.175", &with(&["boot"], &store));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = crate::support::watchdog::spawn(cmd);
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = {
        let (done, seen, tmp) = (done.clone(), seen.clone(), tmp.clone());
        std::thread::spawn(move || {
            let secrets: [&[u8]; 4] = [
                b"flakehub:",
                b"eyJ",
                crate::support::deploy::TOKEN.as_bytes(),
                b"password",
            ];
            while !done.load(Ordering::SeqCst) {
                let mut s = seen.lock().unwrap();
                s.scans += 1;
                for p in descendants(pid) {
                    let dir = PathBuf::from(format!("/proc/{p}"));
                    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
                    let argv = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    for (what, bytes) in [
                        ("cmdline", cmdline.clone()),
                        (
                            "environ",
                            std::fs::read(dir.join("environ")).unwrap_or_default(),
                        ),
                    ] {
                        for sec in secrets {
                            if bytes.windows(sec.len()).any(|w| w == sec) {
                                let name = argv.split(' ').next().unwrap_or("").to_string();
                                s.leaks.insert(format!(
                                    "{name}: {what} holds {:?}",
                                    String::from_utf8_lossy(&sec[..3])
                                ));
                            }
                        }
                    }
                    if !argv.is_empty() {
                        s.argvs.insert(argv);
                    }
                }
                for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let mode = e.metadata().map(|m| m.permissions().mode() & 0o7777);
                    let netrc = std::fs::metadata(e.path().join("netrc"))
                        .ok()
                        .map(|m| m.permissions().mode() & 0o7777);
                    if let Ok(mode) = mode {
                        s.netrc_dirs.insert((name, mode, netrc));
                    }
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let r = no_secret(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    });
    assert_eq!(r.code, 0, "{r:?}");
    let s = seen.lock().unwrap();
    assert!(s.leaks.is_empty(), "secrets in /proc: {:?}", s.leaks);
    // The watcher did see the `nix copy` children and their netrc dirs.
    assert!(
        s.argvs.iter().any(|a| a.contains(" copy --from ")),
        "no nix copy seen in {} scans: {:?}",
        s.scans,
        s.argvs
    );
    assert!(
        s.argvs.iter().any(|a| a.contains("--netrc-file ")),
        "{:?}",
        s.argvs
    );
    assert!(!s.netrc_dirs.is_empty(), "no netrc dir seen");
    for (name, mode, netrc) in &s.netrc_dirs {
        assert!(name.starts_with("fh-lite-netrc-"), "{name} in TMPDIR");
        assert_eq!(*mode, 0o700, "{name}");
        assert!(
            matches!(netrc, None | Some(0o600)),
            "{name}/netrc: {netrc:?}"
        );
    }
    // … and none is left.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    // No lasting file anywhere in the test tree holds the token.
    let grep = Command::new("grep")
        .args(["-rlas", "login flakehub password"])
        .arg(d.tmp.path())
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
    // Nix substituted the closure, with the cache's signatures.
    verify_clean(&d);
    judge_closure(&d, f, "system-v1");
    for (p, sig) in sigs(&d, &f.get("system-v1").path) {
        assert!(sig.contains(&format!("{TRUSTED_KEY_NAME}:")), "{p}: {sig}");
    }
}

/// Spawn the apply with piped output (to run things while it works).
fn spawn_live(d: &Deploy, req: &str, extra: &[&str]) -> std::process::Child {
    let mut c = live(d, req, extra);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    crate::support::watchdog::spawn(c)
}

fn finish(child: std::process::Child) -> Run {
    let out = child.wait_with_output().unwrap();
    no_secret(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[test]
fn gc_during_a_slow_transfer_takes_nothing_of_the_closure() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], SLOW_NARS);
    let daemon = NixDaemon::start(d.tmp.path(), &d.root);
    let store = daemon_args(&daemon);
    // Unrelated garbage the collector must take.
    let junk = d.tmp.path().join("fh-lite-gc-junk.txt");
    std::fs::write(&junk, "garbage\n").unwrap();
    let mut add = nix_cmd(d.tmp.path(), "nix-store");
    add.args(["--store", &daemon.url(), "--add"]).arg(&junk);
    let junk_path = stdout_of(add, "nix-store --add").trim().to_string();
    assert!(valid(&d, &junk_path));

    let v1 = f.get("system-v1");
    let mut child = spawn_live(&d, "=0.1.175", &with(&["boot"], &store));
    let started = Instant::now();
    // (closure paths valid before it, what it said)
    let mut gcs: Vec<(usize, String)> = Vec::new();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(120), "apply hangs");
        if d.hub.requests_to("/nar/").is_empty() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let before = v1.closure.iter().filter(|p| valid(&d, p)).count();
        let mut gc = nix_cmd(d.tmp.path(), "nix-store");
        gc.args(["--store", &daemon.url(), "--gc"]);
        let out = gc.output().unwrap();
        assert!(
            out.status.success(),
            "gc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        gcs.push((
            before,
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ));
        std::thread::sleep(Duration::from_millis(150));
    }
    let r = finish(child);
    assert_eq!(r.code, 0, "{r:?}");
    // The collector ran, and while part of the closure was already valid
    // (and not yet referenced by anything but fh-lite's temp roots).
    assert!(
        gcs.iter().any(|(_, out)| out.contains(&junk_path)),
        "no GC deleted {junk_path}: {gcs:?}"
    );
    assert!(!valid(&d, &junk_path));
    assert!(
        gcs.iter()
            .any(|(before, _)| *before > 0 && *before < v1.closure.len()),
        "no GC ran mid-transfer: {gcs:?}"
    );
    for (_, out) in &gcs {
        for p in &v1.closure {
            // Exactly the path: Nix may also clear `<path>.lock` files.
            assert!(
                !out.contains(&format!("deleting '{p}'\n")),
                "GC deleted {p}: {out}"
            );
        }
    }
    verify_clean(&d);
    judge_closure(&d, f, "system-v1");
    // Once fh-lite is gone (its temp roots with it), the profile keeps the
    // deployed closure.
    let mut gc = nix_cmd(d.tmp.path(), "nix-store");
    gc.args(["--store", &daemon.url(), "--gc"]);
    let out = gc.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    verify_clean(&d);
    judge_closure(&d, f, "system-v1");
}

#[test]
fn daemon_killed_mid_transfer_then_rerun() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], SLOW_NARS);
    let mut daemon = NixDaemon::start(d.tmp.path(), &d.root);
    let store = daemon_args(&daemon);
    let v1 = f.get("system-v1");
    let busybox = v1
        .closure
        .iter()
        .find(|p| p.ends_with("-busybox-static"))
        .unwrap()
        .clone();
    let busybox_nar = nar_urls(f, "zstd", &[&busybox]).pop_first().unwrap();
    let child = spawn_live(&d, "=0.1.175", &with(&["boot"], &store));
    let started = Instant::now();
    while !d
        .hub
        .requests_to("/nar/")
        .iter()
        .any(|r| r.path == busybox_nar)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no busybox NAR request"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // About a third of its 1 MiB is through.
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill();
    let r = finish(child);
    assert_eq!(r.code, 22, "{r:?}");
    let sock = daemon.socket.display().to_string();
    assert!(
        r.stderr.contains(&format!("nix-daemon at {sock}: ")),
        "names the socket: {r:?}"
    );
    assert!(r.stderr.contains(&busybox), "names the path: {r:?}");
    // Nothing half-registered.
    daemon.restart();
    verify_clean(&d);
    assert!(!valid(&d, &busybox), "{busybox} registered after the kill");
    assert!(!valid(&d, &v1.path));
    // A re-run completes.
    d.hub.control(r#"{"reset": true}"#);
    let r = no_secret(output(live(&d, "=0.1.175", &with(&["boot"], &store))));
    assert_eq!(r.code, 0, "{r:?}");
    verify_clean(&d);
    judge_closure(&d, f, "system-v1");
}

/// A unix socket whose server answers every connection with garbage.
struct Garbage(std::process::Child);

impl Drop for Garbage {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn daemon_socket_speaking_another_protocol() {
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let sock = d.tmp.path().join("garbage.sock");
    let server = Garbage(
        Command::new("python3")
            .arg("-c")
            .arg(
                // Listening before the name exists (bind elsewhere, rename),
                // so the first connection cannot be refused.
                "import os, socket, sys\n\
                 s = socket.socket(socket.AF_UNIX)\n\
                 s.bind(sys.argv[1] + '.tmp')\n\
                 s.listen(8)\n\
                 os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n\
                 while True:\n    c, _ = s.accept()\n    c.recv(8)\n    c.sendall(b'HTTP/1.1 400 Bad Request\\r\\n\\r\\n' * 4)\n    c.close()\n",
            )
            .arg(&sock)
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !sock.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "listener");
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = sock.display().to_string();
    let r = no_secret(output(live(
        &d,
        "=0.1.175",
        &["boot", "--store", "daemon", "--daemon-socket", &s],
    )));
    assert_eq!(r.code, 22, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "nix-daemon at {s}: protocol error: not a nix-daemon socket: "
        )),
        "{r:?}"
    );
    assert!(d.hub.requests_to("/nar/").is_empty());
    drop(server);
}

#[test]
fn local_store_into_a_fresh_root() {
    let f = fixtures();
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    // No database in the root: Nix creates it on fh-lite's first call.
    assert!(!d.root.join("nix/var/nix/db").exists());
    let store = vec!["--store".to_string(), "local".to_string()];
    let r = no_secret(output(live(&d, "=0.1.175", &with(&["boot"], &store))));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(d.root.join("nix/var/nix/db/db.sqlite").exists());
    verify_clean(&d);
    judge_closure(&d, f, "system-v1");
    for (p, sig) in sigs(&d, &f.get("system-v1").path) {
        assert!(
            sig.contains(&format!("{TRUSTED_KEY_NAME}:")),
            "{p}: {sig:?}"
        );
    }
    // The private cache the signatures went through is gone (once the run
    // that made it, `fh-lite-sigs-PID-N`, has ended).
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("fh-lite-sigs-")
                .and_then(|r| r.split('-').next())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn nix_copy_with_a_private_ca() {
    let f = fixtures();
    let opts = crate::support::fakehub::Opts {
        tls: true,
        second: false,
    };
    let d = crate::hardening::deploy(f.cache("zstd"), &[("0.1.175", "system-v1")], opts);
    let ca = d.hub.ca_file().display().to_string();
    let args = ["boot", "--store", "nix", "--ca-file", &ca];
    let r = no_secret(output(live(&d, "=0.1.175", &args)));
    assert_eq!(r.code, 0, "{r:?}");
    verify_clean(&d);
    judge_closure(&d, f, "system-v1");
    for (p, sig) in sigs(&d, &f.get("system-v1").path) {
        assert!(sig.contains(&format!("{TRUSTED_KEY_NAME}:")), "{p}: {sig}");
    }
    // Every NAR came over TLS from the stand-in, with the closure token.
    let nars = d.hub.requests_to("/nar/");
    assert!(!nars.is_empty());
    assert!(
        nars.iter().all(|q| q.auth == "basic" && q.status == 200),
        "{nars:?}"
    );
}
