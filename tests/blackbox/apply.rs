//! `fh-lite apply` end to end against the FlakeHub stand-in serving caches
//! that real Nix built and signed: substitution into an image root judged
//! by Nix itself, dry runs, untrusted signatures, faults mid-transfer, the
//! no-op re-run, and activation with rollback.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::deploy::{judge_image, no_secret, Deploy, ATTR};
use crate::support::fixtures::fixtures;
use crate::support::util::{fh_lite, output};
use crate::support::{is_root, require};

fn substitutes_into_an_image_root(cache: &'static str) {
    let f = fixtures();
    let d = Deploy::new(
        cache,
        &[("0.1.175", "system-full"), ("0.1.180", "system-v2")],
        "{}",
    );
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let path = &f.get("system-full").path;
    assert!(
        r.stderr
            .contains(&format!("org/demo/=0.1.175#{ATTR} resolves to {path}")),
        "{r:?}"
    );
    judge_image(&d, f, "system-full");
    // The profile generation is there for first boot.
    let gen1 = d.root.join("nix/var/nix/profiles/system-1-link");
    assert_eq!(std::fs::read_link(&gen1).unwrap(), PathBuf::from(path));
    assert_eq!(
        std::fs::read_link(d.root.join("nix/var/nix/profiles/system")).unwrap(),
        PathBuf::from("system-1-link")
    );
    // Every NAR was fetched once, with Basic auth, never with the device token.
    let nars = d.hub.requests_to("/nar/");
    assert_eq!(nars.len(), f.get("system-full").closure.len(), "{nars:?}");
    assert!(
        nars.iter().all(|r| r.auth == "basic" && r.status == 200),
        "{nars:?}"
    );
}

#[test]
fn image_root_none() {
    substitutes_into_an_image_root("none");
}

#[test]
fn image_root_xz() {
    substitutes_into_an_image_root("xz");
}

#[test]
fn image_root_zstd() {
    substitutes_into_an_image_root("zstd");
}

#[test]
fn image_root_bzip2() {
    substitutes_into_an_image_root("bzip2");
}

#[test]
fn second_run_is_a_no_op_with_one_request() {
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let before = d.hub.requests().len();
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("is already the current system; nothing to do"),
        "{r:?}"
    );
    let after = d.hub.requests();
    assert_eq!(
        after.len(),
        before + 1,
        "one request (the resolve): {after:?}"
    );
    assert!(after[before].path.starts_with("/f/org/demo/"), "{after:?}");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-full")], "{}");
    let r = d.apply("=0.1.175", &["boot", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    let n = f.get("system-full").closure.len();
    assert!(
        r.stdout
            .contains(&format!("{n} paths to fetch (0 already present)")),
        "{r:?}"
    );
    for p in &f.get("system-full").closure {
        assert!(r.stdout.contains(p.as_str()), "plan lacks {p}: {r:?}");
    }
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
    assert!(!d.root.join("nix-path-registration").exists());
    assert!(!d.root.join("nix/var/nix/profiles").exists());
    assert!(d.hub.requests_to("/nar/").is_empty());
    let j = d.apply("=0.1.175", &["boot", "--dry-run", "--json"]);
    assert_eq!(j.code, 0, "{j:?}");
    let first = j.stdout.lines().next().unwrap_or_default();
    let v: miniserde::json::Value = miniserde::json::from_str(first).expect("JSON plan");
    let miniserde::json::Value::Object(o) = v else {
        panic!("plan is not an object: {j:?}")
    };
    assert!(o.contains_key("paths"), "{j:?}");
}

/// Sizes in one format (B, KiB, MiB, GiB), every progress line prefixed,
/// and a run with nothing to fetch says so rather than "0 paths".
#[test]
fn sizes_and_progress_lines_read_alike() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-full")], "{}");
    let r = d.apply("=0.1.175", &["boot", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains(" 0.0 MiB"), "{r:?}");
    let sized = |l: &str| {
        [" B ", " KiB ", " MiB ", " GiB "]
            .iter()
            .any(|u| l.contains(u))
    };
    assert!(r.stdout.lines().all(sized), "{r:?}");
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    for l in r.stderr.lines() {
        assert!(l.starts_with("fh-lite: "), "unprefixed line {l:?}: {r:?}");
        assert!(!l.contains(" 0.0 MiB"), "{r:?}");
    }
    let n = f.get("system-full").closure.len();
    assert!(
        r.stderr.contains(&format!("fh-lite: fetched {n} paths (")),
        "{r:?}"
    );
    let root = &f.get("system-full").path;
    let r = d.apply("=0.1.175", &["boot", "--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: nothing to fetch: the closure of {root} is already in image root {} (",
            d.root.display()
        )),
        "{r:?}"
    );
}

#[test]
fn untrusted_signature_is_refused_before_any_nar() {
    let d = Deploy::new("untrusted", &[("0.1.175", "system-v1")], "{}");
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 21, "{r:?}");
    let path = &fixtures().get("system-v1").path;
    let hash = &path["/nix/store/".len()..][..32];
    assert_eq!(
        r.stderr.lines().last().unwrap_or_default(),
        format!(
            "fh-lite: refusing the narinfo at {}/{hash}.narinfo: {path} is not signed by a \
             trusted key (signed by: fh-lite-test-untrusted-1; trusted: fh-lite-test-1); add \
             the cache's public key with --trusted-key if you trust it",
            d.hub.url()
        ),
        "names the URL, the path, the signer, the trusted key and what to do once: {r:?}"
    );
    assert!(
        d.hub.requests_to("/nar/").is_empty(),
        "no NAR may be fetched"
    );
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
}

#[test]
fn body_cut_short_leaves_nothing_and_a_rerun_completes() {
    let f = fixtures();
    let d = Deploy::new(
        "none",
        &[("0.1.175", "system-full")],
        // Every NAR answer cut: resuming with Range (fetch/resume.rs) cannot help.
        r#"{"truncate": [{"count": 1000, "prefix": "/nar/", "after": 64}]}"#,
    );
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(r.stderr.contains("/nar/"), "names the URL: {r:?}");
    for e in d.store_entries() {
        assert!(!e.starts_with(".fh-lite"), "leftover {e}");
    }
    d.hub.control(r#"{"reset": true}"#);
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    judge_image(&d, f, "system-full");
}

/// `--no-loose-warning` silences the warning, and the shipped unit and
/// NixOS module (loose `0.1`, run every hour) pass it.
#[test]
fn no_loose_warning_silences_the_loose_reference_warning() {
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let r = d.apply("0.1", &["boot", "--dry-run", "--no-loose-warning"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("is loose"), "{r:?}");
    let r = d.apply("0.1", &["boot", "--dry-run"]);
    assert_eq!(r.stderr.matches("is loose").count(), 1, "{r:?}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(repo.join("systemd/fh-lite.service")).unwrap();
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains(" --no-loose-warning"), "{exec}");
    let module = std::fs::read_to_string(repo.join("nix/module.nix")).unwrap();
    assert!(
        module.contains("\"--no-loose-warning\""),
        "the module passes it"
    );
}

#[test]
fn loose_requirement_warns_once_and_resolves_newest() {
    let f = fixtures();
    let d = Deploy::new(
        "zstd",
        &[("0.1.175", "system-v1"), ("0.1.180", "system-v2")],
        "{}",
    );
    let r = d.apply("0.1", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr.matches("is loose").count(), 1, "{r:?}");
    assert!(
        r.stderr
            .contains("pin an exact release with 'org/demo/=X.Y.Z#"),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read_link(d.root.join("nix/var/nix/profiles/system-1-link")).unwrap(),
        PathBuf::from(&f.get("system-v2").path)
    );
}

/// A transfer that outlives the closure token (it lasts about an hour at
/// FlakeHub; here it is refused after 10 cache requests, which is less than
/// the closure needs) asks FlakeHub for a fresh token and goes on with what
/// is missing.
#[test]
fn an_expired_closure_token_is_renewed_mid_transfer() {
    let f = fixtures();
    let d = Deploy::new(
        "zstd",
        &[("0.1.175", "system-full")],
        r#"{"closure_token_max_uses": 10}"#,
    );
    let r = d.apply("=0.1.175", &["boot", "--jobs", "1"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(
            "the cache refused the closure token (expired?); asking FlakeHub for a fresh one"
        ),
        "{r:?}"
    );
    let reqs = d.hub.requests();
    let resolves = reqs.iter().filter(|q| q.path.starts_with("/f/")).count();
    assert!(
        resolves >= 2,
        "a second resolve for a fresh token: {reqs:?}"
    );
    assert!(reqs.iter().any(|q| q.status == 401), "{reqs:?}");
    judge_image(&d, f, "system-full");
}

/// A cache that refuses every closure token: a bounded number of fresh
/// tokens, then a clear error; nothing lands in the store.
#[test]
fn a_cache_that_refuses_every_token_fails_clearly() {
    let d = Deploy::new(
        "zstd",
        &[("0.1.175", "system-v1")],
        r#"{"closure_token_max_uses": 0}"#,
    );
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(
        r.stderr.ends_with(
            ".narinfo: http status 401: the cache refused the closure token \
             (it is valid for about an hour; run the apply again to get a fresh one)\n"
        ),
        "{r:?}"
    );
    let resolves = d.hub.requests_to("/f/").len();
    assert_eq!(resolves, 9, "the first resolve and 8 renewals");
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
}

/// `--json`: stdout is one JSON object per line (plan, a start and a done
/// per path, done), for tools that watch a deploy; stderr has no progress.
#[test]
fn json_events_describe_the_transfer() {
    use miniserde::json::{self, Value};
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let r = d.apply("=0.1.175", &["boot", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let closure = &f.get("system-v1").closure;
    let mut events: Vec<(String, Option<String>)> = Vec::new();
    for line in r.stdout.lines() {
        let v: Value = json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        let Value::Object(o) = v else {
            panic!("not an object: {line}")
        };
        let text = |k: &str| match o.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        events.push((text("event").expect("an event field"), text("path")));
    }
    assert_eq!(
        events.first().map(|e| e.0.as_str()),
        Some("plan"),
        "{events:?}"
    );
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["done", "result"], "{events:?}");
    for p in closure {
        for kind in ["path-start", "path-done"] {
            let n = events
                .iter()
                .filter(|(k, path)| k == kind && path.as_deref() == Some(p.as_str()))
                .count();
            assert_eq!(n, 1, "{kind} for {p}: {events:?}");
        }
    }
    assert!(
        !r.stderr.contains("fetched"),
        "progress lines on stderr: {r:?}"
    );
}

/// A tmpfs mounted for the length of a test (root only), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if !require("root to mount a tmpfs", is_root()) {
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !require("a tmpfs mount; mount -t tmpfs failed", ok) {
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A store on a filesystem too small for the closure: refused before any
/// NAR is downloaded, with the sizes and what to do; nothing is written.
#[test]
fn too_little_disk_space_is_refused_up_front() {
    let d = Deploy::new("zstd", &[("0.1.175", "system-full")], "{}");
    let Some(_fs) = Tmpfs::mount(&d.root, "8m") else {
        return;
    };
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 22, "{r:?}");
    let store = d.root.join("nix/store");
    assert!(
        r.stderr.contains(&format!(
            "not enough space for the store at {}: need ",
            store.display()
        )) && r
            .stderr
            .contains("free some space or use a bigger filesystem"),
        "{r:?}"
    );
    assert!(
        d.hub.requests_to("/nar/").is_empty(),
        "no NAR may be fetched"
    );
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
    assert!(!d.root.join("nix-path-registration").exists());
}

/// A `--root` that does not exist (a typo of /mnt) is refused before
/// anything is resolved or written, naming the path; `--create-root`
/// creates it.
#[test]
fn a_missing_root_is_refused_unless_create_root() {
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let missing = d.tmp.path().join("images/doesnotexist");
    let reference = d.reference("=0.1.175");
    let online = d.online();
    let mut args = vec![
        "apply",
        "nixos",
        &reference,
        "boot",
        "--root",
        missing.to_str().unwrap(),
    ];
    args.extend(online.iter().map(String::as_str));
    let r = no_secret(output(fh_lite(&args)));
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: --root {}: no such directory; check the path, or add --create-root to create it\n",
            missing.display()
        )
    );
    assert!(!missing.exists(), "the root was created");
    assert!(
        !d.tmp.path().join("images").exists(),
        "its parent was created"
    );
    assert!(d.hub.requests().is_empty(), "FlakeHub was asked");
    let r = no_secret(output(fh_lite(&[
        "status",
        "--root",
        missing.to_str().unwrap(),
    ])));
    assert_eq!(r.code, 2, "status: {r:?}");
    assert!(!missing.exists(), "status created the root");

    args.push("--create-root");
    let r = no_secret(output(fh_lite(&args)));
    assert_eq!(r.code, 0, "{r:?}");
    let profile = missing.join("nix/var/nix/profiles/system");
    assert!(std::fs::symlink_metadata(&profile).is_ok(), "{r:?}");
}
