//! Fixture closures built by real Nix (`tests/fixtures/build`, see
//! tests/fixtures/README.md) and published as signed binary caches.
//!
//! `fixtures()` builds them once per test process into `$FH_LITE_FIXTURES`
//! (default `target/fixtures`), holding `<dir>.lock` so parallel test
//! processes do not race, and parses `manifest.json`. The big file's size is
//! `$FH_LITE_FIXTURES_BIG_MB` MiB (default 50); a different size rebuilds.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use miniserde::Deserialize;

/// Compressions the signed caches are published in (manifest `caches` keys;
/// `untrusted` is zstd, signed only by the untrusted key).
pub const COMPRESSIONS: [&str; 4] = ["none", "xz", "zstd", "bzip2"];

/// Key names in the `Sig:` lines.
pub const TRUSTED_KEY_NAME: &str = "fh-lite-test-1";
pub const UNTRUSTED_KEY_NAME: &str = "fh-lite-test-untrusted-1";

/// Everything `tests/fixtures/build` produced, paths made absolute.
#[derive(Debug)]
pub struct Fixtures {
    /// The output directory (OUTDIR).
    pub dir: PathBuf,
    /// The chroot store: `/nix/store/x` lives at `store_root/nix/store/x`.
    pub store_root: PathBuf,
    pub big_mib: u64,
    /// Size in bytes of `basic-big`'s `big.bin`.
    pub big_size: u64,
    /// `fh-lite-test-1:<base64>`, signs cache-{none,xz,zstd,bzip2}.
    pub public_key: String,
    /// `fh-lite-test-untrusted-1:<base64>`, signs cache-untrusted only.
    pub untrusted_public_key: String,
    pub secret_key_file: PathBuf,
    /// "none", "xz", "zstd", "bzip2", "untrusted" → cache directory.
    pub caches: BTreeMap<String, PathBuf>,
    /// Fixture name (basic, basic-big, basic-leaf, basic-mid1, basic-mid2,
    /// system-v1, system-v2, system-exit{1,2,4,100}, darwin-{ok,fail},
    /// home-manager-{ok,ok2,fail}) → store path and closure.
    pub fixtures: BTreeMap<String, Fixture>,
    /// Every path of every closure → its NAR hash, size, references.
    pub paths: BTreeMap<String, PathInfo>,
}

#[derive(Debug, Deserialize)]
pub struct Fixture {
    /// `/nix/store/<hash>-<name>`.
    pub path: String,
    /// `nix-store -qR path`, sorted; includes `path`.
    pub closure: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct PathInfo {
    /// `sha256:<nix32>` (as narinfo NarHash).
    #[serde(rename = "narHash")]
    pub nar_hash: String,
    #[serde(rename = "narSize")]
    pub nar_size: u64,
    /// Full store paths, sorted; may include the path itself.
    pub references: Vec<String>,
}

#[derive(Deserialize)]
struct Manifest {
    schema: u64,
    store_dir: String,
    store: String,
    hash_format: String,
    big_mib: u64,
    big_size: u64,
    public_key: String,
    untrusted_public_key: String,
    secret_key_file: String,
    caches: BTreeMap<String, String>,
    fixtures: BTreeMap<String, Fixture>,
    paths: BTreeMap<String, PathInfo>,
}

impl Fixtures {
    /// The named fixture; panics naming the known ones.
    pub fn get(&self, name: &str) -> &Fixture {
        self.fixtures.get(name).unwrap_or_else(|| {
            panic!(
                "no fixture {name:?}; known: {:?}",
                self.fixtures.keys().collect::<Vec<_>>()
            )
        })
    }

    /// The cache directory for a compression ("none", "xz", "zstd",
    /// "bzip2") or "untrusted".
    pub fn cache(&self, which: &str) -> &Path {
        self.caches
            .get(which)
            .unwrap_or_else(|| panic!("no cache {which:?}"))
    }

    /// Where a store path's files are in the chroot store.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        self.store_root
            .join(store_path.strip_prefix('/').unwrap_or(store_path))
    }

    /// NAR hash, size and references of a path of some closure.
    pub fn info(&self, store_path: &str) -> &PathInfo {
        self.paths
            .get(store_path)
            .unwrap_or_else(|| panic!("{store_path} is in no fixture closure"))
    }

    /// The 32-character hash part of a store path (the narinfo file name).
    pub fn hash_part(store_path: &str) -> &str {
        let base = store_path.strip_prefix("/nix/store/").unwrap_or(store_path);
        &base[..32.min(base.len())]
    }
}

/// The fixtures, built on first use (cold: about a minute; warm: a stamp check).
pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(build_and_load)
}

fn build_and_load() -> Fixtures {
    let dir = match std::env::var_os("FH_LITE_FIXTURES").filter(|s| !s.is_empty()) {
        Some(d) => PathBuf::from(d),
        // CARGO_TARGET_TMPDIR is <target>/tmp.
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("fixtures"),
    };
    let big_mb = std::env::var("FH_LITE_FIXTURES_BIG_MB").unwrap_or_else(|_| "50".into());
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let dir = dir.canonicalize().expect("canonical fixtures dir");

    // The script locks OUTDIR/.lock itself; this lock (a different file, so
    // the child does not wait for its parent) also covers reading the
    // manifest while another process might rebuild.
    let lock_path = dir.with_extension("lock");
    let lock = fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build");
    let out = Command::new(&script)
        .arg(&dir)
        .arg("--big-mb")
        .arg(&big_mb)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {} --big-mb {big_mb} failed ({}); it needs root, nix-bin and busybox-static\n--- stdout\n{}--- stderr\n{}",
        script.display(),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let manifest_path = dir.join("manifest.json");
    let text = fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest_path.display()));
    drop(lock);
    let m: Manifest = miniserde::json::from_str(&text)
        .unwrap_or_else(|e| panic!("parse {}: {e}", manifest_path.display()));
    assert_eq!(m.schema, 1, "{}: unknown schema", manifest_path.display());
    assert_eq!(m.store_dir, "/nix/store");
    assert_eq!(m.hash_format, "sha256:nix32");
    Fixtures {
        store_root: dir.join(&m.store),
        big_mib: m.big_mib,
        big_size: m.big_size,
        public_key: m.public_key,
        untrusted_public_key: m.untrusted_public_key,
        secret_key_file: dir.join(&m.secret_key_file),
        caches: m
            .caches
            .into_iter()
            .map(|(k, v)| (k, dir.join(v)))
            .collect(),
        fixtures: m.fixtures,
        paths: m.paths,
        dir,
    }
}

/// What one walk of a store path found.
#[derive(Default, Debug)]
struct Kinds {
    relative_symlink: bool,
    absolute_symlink_into_closure: bool,
    empty_dir: bool,
    empty_file: bool,
    executable: bool,
    non_ascii_name: bool,
    max_depth: usize,
    largest_file: u64,
}

fn walk(dir: &Path, depth: usize, closure: &[String], me: &str, k: &mut Kinds) {
    let mut entries = 0;
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let e = e.expect("dir entry");
        entries += 1;
        let p = e.path();
        let depth = depth + 1;
        k.max_depth = k.max_depth.max(depth);
        if e.file_name().to_str().is_some_and(|n| !n.is_ascii()) {
            k.non_ascii_name = true;
        }
        let meta = fs::symlink_metadata(&p).expect("lstat");
        if meta.file_type().is_symlink() {
            let t = fs::read_link(&p).expect("readlink");
            let t = t.to_str().expect("UTF-8 symlink target");
            if !t.starts_with('/') {
                k.relative_symlink = true;
            } else if closure
                .iter()
                .any(|c| c != me && (t == c || t.starts_with(&format!("{c}/"))))
            {
                k.absolute_symlink_into_closure = true;
            }
        } else if meta.is_dir() {
            walk(&p, depth, closure, me, k);
        } else {
            k.empty_file |= meta.len() == 0;
            k.executable |= meta.permissions().mode() & 0o111 != 0;
            k.largest_file = k.largest_file.max(meta.len());
        }
    }
    if entries == 0 {
        k.empty_dir = true;
    }
}

/// The narinfo fields of one file, by key (Sig may repeat: all kept).
fn narinfo(path: &Path) -> BTreeMap<String, Vec<String>> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("missing narinfo {}: {e}", path.display()));
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let (k, v) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
            .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
        m.entry(k.to_string()).or_default().push(v.to_string());
    }
    m
}

#[test]
fn fixtures_are_complete() {
    let f = fixtures();
    let basic = f.get("basic");
    let big = f.get("basic-big");
    let (mid1, mid2, leaf) = (
        f.get("basic-mid1"),
        f.get("basic-mid2"),
        f.get("basic-leaf"),
    );

    // Every kind of NAR entry, in the basic closure.
    let mut k = Kinds::default();
    for p in &basic.closure {
        let mut kp = Kinds::default();
        walk(&f.real_path(p), 0, &basic.closure, p, &mut kp);
        k.relative_symlink |= kp.relative_symlink;
        k.absolute_symlink_into_closure |= kp.absolute_symlink_into_closure;
        k.empty_dir |= kp.empty_dir;
        k.empty_file |= kp.empty_file;
        k.executable |= kp.executable;
        k.non_ascii_name |= kp.non_ascii_name;
        k.max_depth = k.max_depth.max(kp.max_depth);
        k.largest_file = k.largest_file.max(kp.largest_file);
    }
    assert!(k.relative_symlink, "{k:?}");
    assert!(k.absolute_symlink_into_closure, "{k:?}");
    assert!(k.empty_dir, "{k:?}");
    assert!(k.empty_file, "{k:?}");
    assert!(k.executable, "{k:?}");
    assert!(k.non_ascii_name, "{k:?}");
    assert!(k.max_depth >= 10, "{k:?}");
    assert_eq!(f.big_size, f.big_mib * 1024 * 1024);
    assert!(k.largest_file >= f.big_size, "{k:?}");
    let big_file = f.real_path(&big.path).join("big.bin");
    assert_eq!(fs::metadata(&big_file).expect("big.bin").len(), f.big_size);

    // Self-reference, in contents and in the references.
    let self_path = fs::read_to_string(f.real_path(&basic.path).join("data/self-path.txt"))
        .expect("self-path.txt");
    assert_eq!(self_path.trim_end(), basic.path);
    assert!(f.info(&basic.path).references.contains(&basic.path));

    // The diamond: basic → mid1, mid2 → leaf; leaf only transitively.
    let refs = |p: &str| f.info(p).references.clone();
    assert!(refs(&basic.path).contains(&mid1.path));
    assert!(refs(&basic.path).contains(&mid2.path));
    assert!(refs(&basic.path).contains(&big.path));
    assert!(!refs(&basic.path).contains(&leaf.path));
    assert_eq!(refs(&mid1.path), vec![leaf.path.clone()]);
    assert_eq!(refs(&mid2.path), vec![leaf.path.clone()]);
    assert!(basic.closure.contains(&leaf.path));
    assert_eq!(basic.closure.len(), 6, "{:?}", basic.closure); // + big, busybox

    // Activation fixtures: executables whose interpreter is in the closure.
    for (name, rel, exit) in [
        ("system-v1", "bin/switch-to-configuration", 0),
        ("system-v2", "bin/switch-to-configuration", 0),
        ("system-exit1", "bin/switch-to-configuration", 1),
        ("system-exit2", "bin/switch-to-configuration", 2),
        ("system-exit4", "bin/switch-to-configuration", 4),
        ("system-exit100", "bin/switch-to-configuration", 100),
        ("darwin-ok", "sw/bin/darwin-rebuild", 0),
        ("darwin-fail", "sw/bin/darwin-rebuild", 1),
        ("home-manager-ok", "activate-record", 0),
        ("home-manager-ok2", "activate-record", 0),
        ("home-manager-fail", "activate-record", 1),
    ] {
        let fx = f.get(name);
        let script = f.real_path(&fx.path).join(rel);
        let meta = fs::metadata(&script).unwrap_or_else(|e| panic!("{name}: {rel}: {e}"));
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "{name}: {rel} not executable"
        );
        let text = fs::read_to_string(&script).expect("script");
        let interp = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("#!"))
            .and_then(|l| l.strip_suffix(" sh"))
            .unwrap_or_else(|| panic!("{name}: no #!… sh line"));
        assert!(
            fx.closure
                .iter()
                .any(|c| interp.starts_with(&format!("{c}/"))),
            "{name}: interpreter {interp} not in its closure"
        );
        assert!(
            text.contains(&format!("\nexit {exit}\n")),
            "{name}: exit {exit}"
        );
    }
    assert_ne!(f.get("system-v1").path, f.get("system-v2").path);

    // Caches: a signed narinfo per closure path, matching the manifest.
    assert!(f.public_key.starts_with(&format!("{TRUSTED_KEY_NAME}:")));
    assert!(f
        .untrusted_public_key
        .starts_with(&format!("{UNTRUSTED_KEY_NAME}:")));
    let all: Vec<&String> = f.paths.keys().collect();
    for fx in f.fixtures.values() {
        for p in &fx.closure {
            assert!(f.paths.contains_key(p), "{p} not in manifest paths");
        }
    }
    for which in COMPRESSIONS.iter().chain(&["untrusted"]) {
        let (comp, key) = match *which {
            "untrusted" => ("zstd", UNTRUSTED_KEY_NAME),
            c => (c, TRUSTED_KEY_NAME),
        };
        let cache = f.cache(which);
        assert_eq!(
            fs::read_to_string(cache.join("nix-cache-info")).expect("nix-cache-info"),
            "StoreDir: /nix/store\n"
        );
        for p in &all {
            let ni_path = cache.join(format!("{}.narinfo", Fixtures::hash_part(p)));
            let ni = narinfo(&ni_path);
            let one = |key: &str| -> &str {
                match ni.get(key).map(Vec::as_slice) {
                    Some([v]) => v,
                    other => panic!("{}: {key}: {other:?}", ni_path.display()),
                }
            };
            let info = f.info(p);
            assert_eq!(one("StorePath"), p.as_str());
            assert_eq!(one("Compression"), comp);
            assert_eq!(one("NarHash"), info.nar_hash);
            assert_eq!(one("NarSize"), info.nar_size.to_string());
            let names: Vec<&str> = info
                .references
                .iter()
                .map(|r| r.strip_prefix("/nix/store/").expect("store path"))
                .collect();
            assert_eq!(one("References"), names.join(" "));
            let sigs = &ni["Sig"];
            assert_eq!(sigs.len(), 1, "{}", ni_path.display());
            assert!(
                sigs[0].starts_with(&format!("{key}:")),
                "{}",
                ni_path.display()
            );
            let nar = cache.join(one("URL"));
            let size = fs::metadata(&nar)
                .unwrap_or_else(|e| panic!("{}: {e}", nar.display()))
                .len();
            assert_eq!(one("FileSize"), size.to_string());
            if **p == big.path && comp != "none" {
                // Compresses, but not to nothing.
                assert!(size > info.nar_size / 2, "{which}: big NAR {size} bytes");
                assert!(size < info.nar_size, "{which}: big NAR {size} bytes");
            }
        }
    }
}

/// switch-to-configuration, run chrooted into a root holding its closure,
/// writes the documented log line and env file and exits with its code.
#[test]
fn system_fixture_records_its_call_in_a_chroot() {
    let f = fixtures();
    let root = crate::support::util::TempDir::new("fixture-chroot");
    for (name, code) in [("system-v1", 0), ("system-exit100", 100)] {
        let fx = f.get(name);
        fs::create_dir_all(root.path().join("nix/store")).expect("mkdir");
        for p in &fx.closure {
            let st = Command::new("cp")
                .arg("-a")
                .arg(f.real_path(p))
                .arg(root.path().join("nix/store"))
                .status()
                .expect("cp");
            assert!(st.success());
        }
        let out = Command::new("chroot")
            .arg(root.path())
            .arg(format!("{}/bin/switch-to-configuration", fx.path))
            .args(["boot", "two words"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NIXOS_INSTALL_BOOTLOADER", "1")
            .output()
            .expect("chroot (needs root)");
        assert_eq!(out.status.code(), Some(code), "{name}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "fh-lite-test: nixos {} called with: boot two words\n",
                name.strip_prefix("system-").unwrap()
            )
        );
    }
    let log = fs::read_to_string(root.path().join("var/log/fh-lite-test/switch.log"))
        .expect("switch.log inside the chroot");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    for (line, (variant, exit)) in lines.iter().zip([("v1", 0), ("exit100", 100)]) {
        let out = &f.get(&format!("system-{variant}")).path;
        let fields: Vec<&str> = line.splitn(14, ' ').collect();
        assert_eq!(fields[0], "fh-lite-test-activation");
        assert_eq!(fields[1], "kind=nixos");
        assert_eq!(fields[2], format!("variant={variant}"));
        assert_eq!(fields[3], format!("exit={exit}"));
        assert!(fields[4]
            .strip_prefix("time=")
            .unwrap()
            .parse::<u64>()
            .is_ok());
        assert_eq!(fields[5], "uid=0");
        assert_eq!(fields[6], "bootloader=1");
        // A chroot without /dev, /proc or /sys mounted.
        assert_eq!(fields[7], "mounts=");
        assert_eq!(fields[8], "cwd=/");
        assert_eq!(fields[9], format!("out={out}"));
        assert_eq!(
            fields[10],
            format!("argv0={out}/bin/switch-to-configuration")
        );
        assert_eq!(fields[11], "argc=2");
        assert_eq!(fields[12..].join(" "), "args=boot two words");
    }
    let env1 = fs::read_to_string(root.path().join("var/log/fh-lite-test/switch.log.env.1"))
        .expect("env file of call 1");
    assert!(
        env1.lines().any(|l| l == "NIXOS_INSTALL_BOOTLOADER=1"),
        "{env1}"
    );
    assert!(root
        .path()
        .join("var/log/fh-lite-test/switch.log.env.2")
        .exists());
}
