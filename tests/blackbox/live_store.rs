//! `fh-lite apply --store daemon|local|nix` into a live Nix store (a chroot
//! store under `--root`), judged by real Nix: a nix-daemon serving the
//! root, the local store written directly, the `nix copy` fallback with
//! the closure token kept out of every argv and environment, a garbage
//! collection during a slow transfer, the daemon killed mid-transfer, and
//! a socket that does not speak the worker protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::apply::{no_secret, Deploy};
use crate::fixtures::{fixtures, Fixtures, TRUSTED_KEY_NAME};
use crate::nixd::{nix_cmd, nix_env, NixDaemon};
use crate::util::{output, Run};

/// NARs sent in 32 KiB pieces 40 ms apart (busybox: about 2.5 s).
const SLOW_NARS: &str =
    r#"{"slow": [{"prefix": "/nar/", "chunk": 32768, "delay_ms": 40}]}"#;

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
    let all = String::from_utf8_lossy(&out.stderr).into_owned()
        + &String::from_utf8_lossy(&out.stdout);
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
        r.stdout
            .contains("0 paths to fetch (1 already present)"),
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
    let r = no_secret(output(live(&d, "=0.1.180", &with(&["boot", "--dry-run"], &store))));
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
    assert_eq!(fetched, nar_urls(f, "zstd", &missing), "only the missing NARs");
    assert_eq!(d.hub.requests_to("/nar/").len() - before, missing.len());
    verify_clean(&d);
    judge_closure(&d, f, "system-v2");
}
