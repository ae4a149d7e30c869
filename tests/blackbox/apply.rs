//! `fh-lite apply` end to end against the FlakeHub stand-in serving caches
//! that real Nix built and signed: substitution into an image root judged
//! by Nix itself, dry runs, untrusted signatures, faults mid-transfer, the
//! no-op re-run, and activation with rollback.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::fakehub::{write_token, FakeHub, Opts};
use crate::support::fixtures::{fixtures, Fixtures};
use crate::support::util::{fh_lite, output, Run, TempDir};
use crate::support::{is_root, require};

pub const TOKEN: &str = "fhdev_apply-S3CRET-never-print-91b2";
const ATTR: &str = "nixosConfigurations.pi";

/// A stand-in FlakeHub whose `org/demo` releases map to fixture closures,
/// one device token for `0.1`, the cache `cache` of the fixtures, and a
/// fresh image root; `kind` is the apply type (`nixos`, `nix-darwin`,
/// `home-manager`), with the attribute and `--root` to match.
pub struct Deploy {
    pub hub: FakeHub,
    pub tmp: TempDir,
    pub token_file: PathBuf,
    pub root: PathBuf,
    pub kind: &'static str,
    /// The output attribute of every release (and of the device token).
    pub attr: &'static str,
    /// Pass `--root ROOT` (not for Home Manager, which refuses it).
    pub use_root: bool,
}

impl Deploy {
    /// NixOS releases `(version, fixture)` under `nixosConfigurations.pi`.
    pub fn new(cache: &'static str, releases: &[(&str, &str)], faults: &str) -> Deploy {
        Deploy::for_kind("nixos", cache, releases, faults)
    }

    /// Releases of `kind`: `nixos` (`nixosConfigurations.pi`), `nix-darwin`
    /// (`darwinConfigurations.mac`), `home-manager`
    /// (`homeConfigurations.tester`, and no `--root`).
    pub fn for_kind(
        kind: &'static str,
        cache: &'static str,
        releases: &[(&str, &str)],
        faults: &str,
    ) -> Deploy {
        let f = fixtures();
        let attr = match kind {
            "nixos" => ATTR,
            "nix-darwin" => "darwinConfigurations.mac",
            "home-manager" => "homeConfigurations.tester",
            other => panic!("unknown apply kind {other}"),
        };
        let rel: Vec<String> = releases
            .iter()
            .map(|(v, fx)| format!(r#""{v}": {{"{attr}": "{}"}}"#, f.get(fx).path))
            .collect();
        let config = format!(
            r#"{{"releases": {{"org/demo": {{{}}}}},
                "device_tokens": {{"{TOKEN}": {{"project": "org/demo", "version_req": "0.1", "attribute": "{attr}"}}}},
                "cache_dir": "{}",
                "faults": {faults}}}"#,
            rel.join(", "),
            f.cache(cache).display()
        );
        Deploy::start(FakeHub::start(&config, Opts::default()), kind, attr)
    }

    /// A deploy against a started stand-in `hub`: a scratch dir with the
    /// device token file and an empty root.
    pub fn start(hub: FakeHub, kind: &'static str, attr: &'static str) -> Deploy {
        let tmp = TempDir::new("apply");
        let token_file = write_token(tmp.path(), "token", TOKEN, 0o600);
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        Deploy {
            hub,
            tmp,
            token_file,
            root,
            kind,
            attr,
            use_root: kind != "home-manager",
        }
    }

    /// The reference `org/demo/REQ#ATTR`.
    pub fn reference(&self, req: &str) -> String {
        format!("org/demo/{req}#{}", self.attr)
    }

    /// `fh-lite apply KIND org/demo/REQ#ATTR [extra] [--root ROOT]` with the
    /// stand-in's addresses and only the fixtures' key trusted, not yet run
    /// (to add environment or spawn it).
    pub fn command(&self, req: &str, extra: &[&str]) -> Command {
        let reference = self.reference(req);
        let mut args: Vec<&str> = vec!["apply", self.kind, &reference];
        args.extend_from_slice(extra);
        if self.use_root {
            args.extend_from_slice(&["--root", self.root.to_str().unwrap()]);
        }
        let online = self.online();
        args.extend(online.iter().map(String::as_str));
        fh_lite(&args)
    }

    /// The stand-in's addresses, the device token file and the fixtures'
    /// cache key (the only one trusted): what every online command takes.
    pub fn online(&self) -> Vec<String> {
        let url = self.hub.url();
        [
            "--api-addr",
            &url,
            "--cache-addr",
            &url,
            "--allow-insecure-http",
            "--token-file",
            self.token_file.to_str().unwrap(),
            "--no-default-keys",
            "--trusted-key",
            &fixtures().public_key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// [`Deploy::command`], run; the token never shows in its output.
    pub fn apply(&self, req: &str, extra: &[&str]) -> Run {
        no_secret(output(self.command(req, extra)))
    }

    /// Another fh-lite command (`status`, `rollback`, …) on the same root.
    pub fn fh(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--root", self.root.to_str().unwrap()]);
        no_secret(output(fh_lite(&all)))
    }

    /// Store entries under ROOT/nix/store (names only).
    pub fn store_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("nix/store"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The device token never reaches stdout or stderr; nor does anything that
/// looks like a JWT (the closure token).
pub fn no_secret(r: Run) -> Run {
    for out in [&r.stdout, &r.stderr] {
        assert!(!out.contains(TOKEN), "device token leaked: {r:?}");
        assert!(!out.contains("eyJ"), "something JWT-like leaked: {r:?}");
    }
    r
}

/// A Nix command on the image root (a chroot store), isolated from the
/// host: private HOME, XDG dirs and config, never /nix.
pub fn nix(tmp: &Path, program: &str, root: &Path) -> Command {
    let mut c = nix_isolated(tmp, program);
    c.arg("--store").arg(root);
    c
}

/// A Nix command with HOME, XDG dirs and config under `tmp` (no store
/// argument: for commands such as nix-hash that open none).
pub fn nix_isolated(tmp: &Path, program: &str) -> Command {
    let home = tmp.join("nix-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut c = Command::new(program);
    c.env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("NIX_CONF_DIR", &home)
        .env(
            "NIX_CONFIG",
            "experimental-features = nix-command\nbuild-users-group =\nsubstituters =",
        );
    c
}

pub fn ok(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nix is the judge: load the registration fh-lite wrote, verify every
/// path's contents, and compare the closure with the manifest.
pub fn judge_image(d: &Deploy, f: &Fixtures, fixture: &str) {
    let reg = std::fs::File::open(d.root.join("nix-path-registration"))
        .expect("nix-path-registration written");
    let mut load = nix(d.tmp.path(), "nix-store", &d.root);
    load.arg("--load-db").stdin(reg);
    ok(load, "nix-store --load-db");
    let mut verify = nix(d.tmp.path(), "nix-store", &d.root);
    verify.args(["--verify", "--check-contents"]);
    let out = verify.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {err}");
    assert!(
        !err.contains("modified") && !err.contains("error") && !err.contains("corrupt"),
        "nix-store --verify complained: {err}"
    );
    let want = &f.get(fixture).closure;
    let mut q = nix(d.tmp.path(), "nix-store", &d.root);
    q.args(["-qR", &f.get(fixture).path]);
    let mut got: Vec<String> = ok(q, "nix-store -qR").lines().map(String::from).collect();
    got.sort();
    assert_eq!(&got, want, "closure in the image root");
    let mut pi = nix(d.tmp.path(), "nix", &d.root);
    pi.args(["path-info", "--json", "-r", &f.get(fixture).path]);
    let json = ok(pi, "nix path-info");
    for p in want {
        let info = f.info(p);
        assert!(
            json.contains(&format!(r#""path":"{p}""#)),
            "{p} missing from path-info"
        );
        assert!(
            json.contains(&format!(r#""narSize":{}"#, info.nar_size)),
            "{p} narSize"
        );
    }
    // The narHash Nix registered is the manifest's (path-info prints SRI;
    // --dump-db prints base16: compare through the query instead).
    for p in want {
        let mut h = nix(d.tmp.path(), "nix-store", &d.root);
        h.args(["-q", "--hash", p]);
        assert_eq!(
            ok(h, "nix-store -q --hash").trim(),
            f.info(p).nar_hash,
            "{p}"
        );
    }
    // Nothing but complete paths in the store.
    for e in d.store_entries() {
        assert!(
            !e.starts_with('.') || e == ".links",
            "leftover temporary entry {e} in the store"
        );
    }
}

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
    let v: miniserde::json::Value = miniserde::json::from_str(j.stdout.trim()).expect("JSON plan");
    let miniserde::json::Value::Object(o) = v else {
        panic!("plan is not an object: {j:?}")
    };
    assert!(o.contains_key("paths"), "{j:?}");
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
        // Every NAR answer cut: resuming with Range (resume.rs) cannot help.
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
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("done"),
        "{events:?}"
    );
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
