//! A deploy against the FlakeHub stand-in: releases that map to fixture
//! closures, a device token, an image root, the commands that drive fh-lite
//! at them, and Nix as the judge of what it wrote. Shared by every
//! black-box module that runs `apply` or `fetch`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::fakehub::{write_token, FakeHub, Opts};
use crate::support::fixtures::{fixtures, Fixtures};
use crate::support::util::{fh_lite, output, Run, TempDir};

pub const TOKEN: &str = "fhdev_apply-S3CRET-never-print-91b2";
pub const ATTR: &str = "nixosConfigurations.pi";

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
