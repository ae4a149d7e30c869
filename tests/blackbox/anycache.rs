//! Any signed binary cache, no FlakeHub: `apply nixos /nix/store/HASH-NAME
//! --cache URL` from a plain `file://` directory that `nix copy` wrote, and
//! from the HTTPS stand-in wanting a netrc login (whose password never
//! appears in output, argv, environment or a file under the root); judged
//! by real Nix. `--trusted-key` is required; a wrong password is a cache
//! error naming the URL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::deploy::{judge_image, Deploy};
use crate::support::fakehub::{FakeHub, Opts};
use crate::support::fixtures::fixtures;
use crate::support::procs::descendants;
use crate::support::util::{fh_lite, output, Run};

const LOGIN: &str = "deploy";
const PASSWORD: &str = "netrc-PW-never-print-7c1e";

/// `apply nixos STOREPATH boot --cache URL --root ROOT --trusted-key KEY
/// [extra]`, with every proxy variable at a closed port (none is needed:
/// the stand-in is on loopback, and FlakeHub is never asked).
fn direct(d: &Deploy, fixture: &str, cache: &str, extra: &[&str]) -> Command {
    let f = fixtures();
    let path = &f.get(fixture).path;
    let mut args = vec![
        "apply",
        "nixos",
        path,
        "boot",
        "--cache",
        cache,
        "--root",
        d.root.to_str().unwrap(),
        "--trusted-key",
        &f.public_key,
        // FlakeHub is not used: an address nothing answers on.
        "--api-addr",
        "https://127.0.0.1:9",
    ];
    args.extend_from_slice(extra);
    let mut cmd = fh_lite(&args);
    for v in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        cmd.env(v, "http://127.0.0.1:9");
    }
    cmd.env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1");
    cmd
}

fn state(d: &Deploy) -> String {
    std::fs::read_to_string(d.root.join("var/lib/fh-lite/state.json")).unwrap_or_default()
}

#[test]
fn store_path_from_a_plain_file_cache_into_a_fresh_root() {
    let f = fixtures();
    // The stand-in of Deploy is not used: it must see no request.
    let d = Deploy::new("xz", &[], "{}");
    let cache = format!("file://{}", f.cache("xz").display());
    let r = output(direct(&d, "system-v1", &cache, &[]));
    assert_eq!(r.code, 0, "apply --cache file://: {r:?}");
    assert!(d.hub.requests().is_empty(), "FlakeHub was asked");
    judge_image(&d, f, "system-v1");
    // The reference recorded is the store path.
    let path = &f.get("system-v1").path;
    assert!(
        state(&d).contains(&format!(r#""reference":"{path}""#)),
        "{}",
        state(&d)
    );
    let status = d.fh(&["status"]);
    assert!(status.stdout.contains(path.as_str()), "{status:?}");
}

#[test]
fn trusted_key_is_required_and_a_foreign_key_refuses_the_cache() {
    let f = fixtures();
    let d = Deploy::new("xz", &[], "{}");
    let cache = format!("file://{}", f.cache("xz").display());
    let path = &f.get("system-v1").path;
    let r = output(fh_lite(&[
        "apply",
        "nixos",
        path,
        "--cache",
        &cache,
        "--root",
        d.root.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--cache needs --trusted-key"), "{r:?}");
    // The untrusted cache's signatures are not the given key's: nothing lands.
    let untrusted = format!("file://{}", f.cache("untrusted").display());
    let r = output(direct(&d, "system-v1", &untrusted, &[]));
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stderr.contains(&untrusted), "names the cache: {r:?}");
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
}

/// The HTTPS stand-in serving the xz cache only to `deploy:PASSWORD`.
fn login_hub() -> FakeHub {
    let config = format!(
        r#"{{"cache_dir": "{}", "cache_login": {{"login": "{LOGIN}", "password": "{PASSWORD}"}}}}"#,
        fixtures().cache("xz").display()
    );
    FakeHub::start(
        &config,
        Opts {
            tls: true,
            second: false,
        },
    )
}

fn netrc(d: &Deploy, password: &str) -> PathBuf {
    let p = d.tmp.path().join("netrc");
    let text = format!(
        "machine cache.other.example login x password y\nmachine 127.0.0.1\n  login {LOGIN}\n  password {password}\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// Run `cmd`, scanning the argv and environment of it and its children
/// every few milliseconds for `secrets`; returns the run, the number of
/// scans and the findings.
fn run_scanned(mut cmd: Command, secrets: &[String]) -> (Run, u64, Vec<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = crate::support::watchdog::spawn(cmd);
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let found = Arc::new(Mutex::new((0u64, Vec::new())));
    let watcher = {
        let (done, found, secrets) = (done.clone(), found.clone(), secrets.to_vec());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let mut f = found.lock().unwrap();
                f.0 += 1;
                for p in descendants(pid) {
                    for what in ["cmdline", "environ"] {
                        let bytes = std::fs::read(format!("/proc/{p}/{what}")).unwrap_or_default();
                        for s in &secrets {
                            if bytes.windows(s.len()).any(|w| w == s.as_bytes()) {
                                f.1.push(format!("pid {p} {what}"));
                            }
                        }
                    }
                }
                drop(f);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    let (scans, leaks) = std::mem::take(&mut *found.lock().unwrap());
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, scans, leaks)
}

/// The password and its Basic encoding, as they could leak.
fn secrets(password: &str) -> Vec<String> {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{LOGIN}:{password}"));
    vec![password.to_string(), basic]
}

/// Files under `dir` (not following symlinks) that contain `s`.
fn files_holding(dir: &Path, s: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                if bytes.windows(s.len()).any(|w| w == s.as_bytes()) {
                    hits.push(e.path());
                }
            }
        }
    }
    hits
}

#[test]
fn store_path_from_an_https_cache_that_wants_a_netrc_login() {
    let f = fixtures();
    let hub = login_hub();
    let d = Deploy::new("xz", &[], "{}");
    let netrc = netrc(&d, PASSWORD);
    let url = hub.url();
    let ca = hub.ca_file();
    let extra = [
        "--netrc-file",
        netrc.to_str().unwrap(),
        "--ca-file",
        ca.to_str().unwrap(),
    ];
    let cmd = direct(&d, "system-v1", &url, &extra);
    let (r, scans, leaks) = run_scanned(cmd, &secrets(PASSWORD));
    assert_eq!(
        r.code, 0,
        "apply --cache https:// with a netrc login: {r:?}"
    );
    assert!(scans > 0, "the scanner ran");
    assert!(leaks.is_empty(), "the password in argv/environ: {leaks:?}");
    for s in secrets(PASSWORD) {
        assert!(
            !r.stdout.contains(&s) && !r.stderr.contains(&s),
            "leaked: {r:?}"
        );
        assert!(
            files_holding(&d.root, &s).is_empty(),
            "a file under the root holds it"
        );
    }
    // Every request carried the login and was answered; FlakeHub was not asked.
    let reqs = hub.requests();
    assert!(reqs.iter().any(|q| q.path.starts_with("/nar/")), "{reqs:?}");
    assert!(
        reqs.iter().all(|q| q.auth == "basic" && q.status == 200),
        "{reqs:?}"
    );
    assert!(d.hub.requests().is_empty(), "FlakeHub was asked");
    judge_image(&d, f, "system-v1");
    let path = &f.get("system-v1").path;
    assert!(state(&d).contains(&format!(r#""reference":"{path}""#)));
}

#[test]
fn a_wrong_netrc_password_is_a_cache_error_naming_the_url() {
    let hub = login_hub();
    let d = Deploy::new("xz", &[], "{}");
    let wrong = "wrong-PW-also-secret-55";
    let netrc = netrc(&d, wrong);
    let url = hub.url();
    let ca = hub.ca_file();
    let extra = [
        "--netrc-file",
        netrc.to_str().unwrap(),
        "--ca-file",
        ca.to_str().unwrap(),
    ];
    let r = output(direct(&d, "system-v1", &url, &extra));
    assert_eq!(r.code, 20, "{r:?}");
    let hash = crate::support::fixtures::Fixtures::hash_part(&fixtures().get("system-v1").path);
    assert!(
        r.stderr
            .contains(&format!("GET {url}/{hash}.narinfo: http status 401")),
        "{r:?}"
    );
    assert!(
        r.stderr
            .contains(&format!("--netrc-file {}", netrc.display())),
        "{r:?}"
    );
    for s in secrets(wrong).iter().chain(&secrets(PASSWORD)) {
        assert!(
            !r.stderr.contains(s) && !r.stdout.contains(s),
            "leaked: {r:?}"
        );
    }
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
    // Without any credential: the message says how to give one.
    let r = output(direct(
        &d,
        "system-v1",
        &url,
        &["--ca-file", ca.to_str().unwrap()],
    ));
    assert_eq!(r.code, 20, "{r:?}");
    assert!(
        r.stderr.contains("asks for a login; pass --netrc-file"),
        "{r:?}"
    );
}

#[test]
fn a_cache_token_file_goes_as_bearer() {
    let f = fixtures();
    let token = "bearer-TOKEN-never-print-3a9d";
    let config = format!(
        r#"{{"cache_dir": "{}", "cache_bearer": "{token}"}}"#,
        f.cache("zstd").display()
    );
    let hub = FakeHub::start(
        &config,
        Opts {
            tls: true,
            second: false,
        },
    );
    let d = Deploy::new("zstd", &[], "{}");
    let file = d.tmp.path().join("cache-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let ca = hub.ca_file();
    let extra = [
        "--cache-token-file",
        file.to_str().unwrap(),
        "--ca-file",
        ca.to_str().unwrap(),
    ];
    let (r, _, leaks) = run_scanned(
        direct(&d, "system-v1", &hub.url(), &extra),
        &[token.to_string()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(leaks.is_empty(), "{leaks:?}");
    assert!(
        !r.stdout.contains(token) && !r.stderr.contains(token),
        "{r:?}"
    );
    let reqs = hub.requests();
    assert!(
        reqs.iter().all(|q| q.auth == "bearer" && q.status == 200),
        "{reqs:?}"
    );
    judge_image(&d, f, "system-v1");
}

/// `CMD… STOREPATH --cache URL --trusted-key KEY [extra]` for `fetch` and
/// `bundle create`, FlakeHub at a closed port.
fn direct_cmd(cmd: &[&str], fixture: &str, cache: &str, extra: &[&str]) -> Command {
    let f = fixtures();
    let path = &f.get(fixture).path;
    let mut args = cmd.to_vec();
    args.extend_from_slice(&[
        path,
        "--cache",
        cache,
        "--trusted-key",
        &f.public_key,
        "--api-addr",
        "https://127.0.0.1:9",
    ]);
    args.extend_from_slice(extra);
    fh_lite(&args)
}

#[test]
fn fetch_stages_a_store_path_from_any_cache() {
    let f = fixtures();
    let d = Deploy::new("xz", &[], "{}");
    let cache = format!("file://{}", f.cache("xz").display());
    let root = d.root.to_str().unwrap();
    let r = output(direct_cmd(
        &["fetch"],
        "system-v1",
        &cache,
        &["--root", root],
    ));
    assert_eq!(r.code, 0, "fetch --cache file://: {r:?}");
    let want = &f.get("system-v1").path;
    assert_eq!(r.stdout.trim(), want.as_str(), "{r:?}");
    assert!(d.hub.requests().is_empty(), "FlakeHub was asked");
    // Pinned and registered, nothing activated.
    let link = d.root.join("var/lib/fh-lite/fetched");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(want));
    assert!(
        !d.root.join("nix/var/nix/profiles/system").exists(),
        "no profile change"
    );
    let name = want.rsplit('/').next().unwrap();
    assert!(
        d.store_entries().iter().any(|e| e == name),
        "{:?}",
        d.store_entries()
    );
    // A later apply from a cache that no longer exists needs nothing from it.
    let gone = format!("file://{}", d.tmp.path().join("no-cache").display());
    std::fs::create_dir_all(d.tmp.path().join("no-cache")).unwrap();
    let r = output(direct(&d, "system-v1", &gone, &[]));
    assert_eq!(r.code, 0, "apply after fetch, empty cache: {r:?}");
    judge_image(&d, f, "system-v1");

    // A cache signed by another key: refused, nothing lands, no pin.
    let d = Deploy::new("xz", &[], "{}");
    let untrusted = format!("file://{}", f.cache("untrusted").display());
    let root = d.root.to_str().unwrap();
    let r = output(direct_cmd(
        &["fetch"],
        "system-v1",
        &untrusted,
        &["--root", root],
    ));
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stderr.contains(&untrusted), "names the cache: {r:?}");
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
    assert!(!d.root.join("var/lib/fh-lite/fetched").exists());
}

#[test]
fn bundle_create_from_any_cache_applies_offline() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[], "{}");
    let cache = format!("file://{}", f.cache("zstd").display());
    let bundle = d.tmp.path().join("pi.bundle");
    let out = bundle.to_str().unwrap();
    let sign = f.secret_key_file.display().to_string();
    let r = output(direct_cmd(
        &["bundle", "create"],
        "system-v1",
        &cache,
        &["--output", out, "--sign-key", &sign],
    ));
    assert_eq!(r.code, 0, "bundle create --cache file://: {r:?}");
    assert!(d.hub.requests().is_empty(), "FlakeHub was asked");
    let r = output(fh_lite(&[
        "apply",
        "nixos",
        "--from",
        out,
        "boot",
        "--root",
        d.root.to_str().unwrap(),
        "--no-default-keys",
        "--trusted-key",
        &f.public_key,
        "--trusted-bundle-key",
        &f.public_key,
    ]));
    assert_eq!(r.code, 0, "apply --from the bundle: {r:?}");
    assert!(
        !r.stderr.contains("is loose") && !r.stderr.contains("fh-lite/store-path"),
        "no loose-reference warning: {r:?}"
    );
    judge_image(&d, f, "system-v1");
    // The reference recorded is the store path, as with apply --cache.
    let path = &f.get("system-v1").path;
    assert!(
        state(&d).contains(&format!(r#""reference":"{path}""#)),
        "{}",
        state(&d)
    );

    // Another key's cache: refused naming it, no bundle, no part left.
    let untrusted = format!("file://{}", f.cache("untrusted").display());
    let bad = d.tmp.path().join("bad").join("x.bundle");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    let r = output(direct_cmd(
        &["bundle", "create"],
        "system-v1",
        &untrusted,
        &["--output", bad.to_str().unwrap()],
    ));
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stderr.contains(&untrusted), "names the cache: {r:?}");
    let left: Vec<_> = std::fs::read_dir(bad.parent().unwrap()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // The store path is required, and --trusted-key.
    let r = output(fh_lite(&[
        "bundle", "create", "--cache", &cache, "--output", out,
    ]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("bundle create --cache URL needs a store path"),
        "{r:?}"
    );
    let r = output(fh_lite(&["fetch", path, "--cache", &cache]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--cache needs --trusted-key"), "{r:?}");
}

#[test]
fn bundle_from_an_https_cache_with_a_login_streams_into_apply() {
    let f = fixtures();
    let hub = login_hub();
    let d = Deploy::new("xz", &[], "{}");
    let netrc = netrc(&d, PASSWORD);
    let (url, ca) = (hub.url(), hub.ca_file());
    // bundle create STOREPATH --cache https://… --netrc-file F --output - |
    // apply nixos --from - (unsigned manifest, narinfos still checked)
    let mut create = direct_cmd(
        &["bundle", "create"],
        "system-v1",
        &url,
        &[
            "--netrc-file",
            netrc.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
            "--output",
            "-",
        ],
    );
    let mut create = (create.stdout(Stdio::piped()).stderr(Stdio::piped()))
        .spawn()
        .unwrap();
    let mut apply = fh_lite(&[
        "apply",
        "nixos",
        "--from",
        "-",
        "boot",
        "--root",
        d.root.to_str().unwrap(),
        "--no-default-keys",
        "--trusted-key",
        &f.public_key,
        "--allow-unsigned-bundle",
    ]);
    apply.stdin(Stdio::from(create.stdout.take().unwrap()));
    let r = output(apply);
    let c = create.wait_with_output().unwrap();
    let c_err = String::from_utf8_lossy(&c.stderr);
    assert!(
        c.status.success(),
        "bundle create --cache https://: {c_err}"
    );
    assert_eq!(r.code, 0, "apply --from -: {r:?}");
    for s in secrets(PASSWORD) {
        assert!(!c_err.contains(&s) && !r.stderr.contains(&s), "leaked");
    }
    let reqs = hub.requests();
    assert!(reqs.iter().any(|q| q.path.starts_with("/nar/")), "{reqs:?}");
    assert!(
        reqs.iter().all(|q| q.auth == "basic" && q.status == 200),
        "{reqs:?}"
    );
    assert!(d.hub.requests().is_empty(), "FlakeHub was asked");
    judge_image(&d, f, "system-v1");
}
