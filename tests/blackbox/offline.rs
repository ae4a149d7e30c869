//! Offline and beyond FlakeHub: `fetch` stages without
//! activating; `bundle create` (tar and dir) then `apply --from` with no
//! network (every proxy variable at a closed port, the stand-in never
//! asked), judged by real Nix; tampered bundles refused before anything is
//! registered; the anti-downgrade memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::deploy::{judge_image, nix_isolated, no_secret, ok, Deploy};
use crate::support::fixtures::{fixtures, Fixtures};
use crate::support::util::{fh_lite, output, Run};

const REQ: &str = "=0.1.175";

pub(crate) fn run(args: &[String]) -> Run {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    no_secret(output(fh_lite(&a)))
}

/// `bundle create org/demo/REQ#ATTR --output OUT [extra]`, checked.
fn create(d: &Deploy, out: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = ["bundle", "create", &d.reference(REQ), "--output"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(out.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(d.online());
    let r = run(&args);
    assert_eq!(r.code, 0, "bundle create: {r:?}");
    r
}

/// `apply nixos --from FROM boot --root ROOT` with no token, no network:
/// every proxy variable points at a closed port, HOME is empty.
pub(crate) fn apply_from(
    d: &Deploy,
    root: &Path,
    from: &str,
    extra: &[&str],
    stdin: Option<&Path>,
) -> Run {
    let f = fixtures();
    let mut args = vec![
        "apply",
        "nixos",
        "--from",
        from,
        "boot",
        "--root",
        root.to_str().unwrap(),
        "--no-default-keys",
        "--trusted-key",
        &f.public_key,
    ];
    args.extend_from_slice(extra);
    let mut cmd = fh_lite(&args);
    let closed = "http://127.0.0.1:9";
    for v in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        cmd.env(v, closed);
    }
    let home = d.tmp.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    cmd.env("HOME", &home).env_remove("CREDENTIALS_DIRECTORY");
    cmd.env("XDG_CONFIG_HOME", home.join("config"));
    if let Some(p) = stdin {
        cmd.stdin(Stdio::from(std::fs::File::open(p).unwrap()));
    }
    no_secret(output(cmd))
}

/// `--trusted-bundle-key` for the fixtures' key (it also signs bundles here).
pub(crate) fn bundle_key() -> String {
    fixtures().public_key.clone()
}

pub(crate) fn sign_key() -> String {
    fixtures().secret_key_file.display().to_string()
}

#[test]
fn bundle_tar_file_and_pipe_apply_offline_judged_by_nix() {
    let f = fixtures();
    for via_pipe in [false, true] {
        let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
        let bundle = d.tmp.path().join("pi.bundle");
        // What a killed `bundle create` left (a pid that cannot exist), and
        // a part of a run that is alive (this test process): the first is
        // removed, the second kept.
        let dead = d.tmp.path().join(".pi.bundle.part-4294967294");
        let live = d
            .tmp
            .path()
            .join(format!(".pi.bundle.part-{}", std::process::id()));
        std::fs::write(&dead, b"half a bundle").unwrap();
        std::fs::write(&live, b"another run").unwrap();
        create(&d, &bundle, &["--sign-key", &sign_key()]);
        assert!(!dead.exists(), "a dead run's partial bundle was left");
        assert!(live.exists(), "a live run's partial bundle was removed");
        let before = d.hub.requests().len();
        let key = bundle_key();
        let extra = ["--trusted-bundle-key", key.as_str()];
        let r = if via_pipe {
            apply_from(&d, &d.root, "-", &extra, Some(&bundle))
        } else {
            apply_from(&d, &d.root, bundle.to_str().unwrap(), &extra, None)
        };
        assert_eq!(r.code, 0, "apply --from (pipe: {via_pipe}): {r:?}");
        assert_eq!(
            d.hub.requests().len(),
            before,
            "the stand-in was asked nothing"
        );
        judge_image(&d, f, "system-v1");
        // The reference came from the manifest.
        let state = std::fs::read_to_string(d.root.join("var/lib/fh-lite/state.json")).unwrap();
        assert!(
            state.contains("org/demo/=0.1.175#nixosConfigurations.pi"),
            "{state}"
        );
    }
}

#[test]
fn dir_bundle_applies_offline_and_nix_copies_it_back() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let dir = d.tmp.path().join("bundle-dir");
    create(&d, &dir, &["--format", "dir"]);
    assert!(dir.join("nix-cache-info").is_file());
    assert!(dir.join("fh-lite-manifest.json").is_file());
    let r = apply_from(
        &d,
        &d.root,
        dir.to_str().unwrap(),
        &["--allow-unsigned-bundle"],
        None,
    );
    assert_eq!(r.code, 0, "apply --from DIR: {r:?}");
    judge_image(&d, f, "system-v1");
    // Nix reads the directory as a binary cache, signatures intact.
    let store = d.tmp.path().join("nix-copy-store");
    let mut copy = nix_isolated(d.tmp.path(), "nix");
    copy.args(["copy", "--from"])
        .arg(format!("file://{}", dir.display()))
        .arg("--to")
        .arg(&store)
        .arg("--option")
        .arg("trusted-public-keys")
        .arg(&f.public_key)
        .arg(&f.get("system-v1").path);
    ok(copy, "nix copy --from file://DIR");
    let mut q = nix_isolated(d.tmp.path(), "nix-store");
    q.arg("--store")
        .arg(&store)
        .args(["-qR", &f.get("system-v1").path]);
    let mut got: Vec<String> = ok(q, "nix-store -qR").lines().map(String::from).collect();
    got.sort();
    assert_eq!(got, f.get("system-v1").closure);
}

/// The entries of a tar bundle, and the same written back.
pub(crate) fn entries(p: &Path) -> Vec<(String, Vec<u8>)> {
    let data = std::fs::read(p).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= data.len() && data[at..at + 512].iter().any(|&b| b != 0) {
        let h = &data[at..at + 512];
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8(h[..end].to_vec()).unwrap();
        let size_s = std::str::from_utf8(&h[124..135]).unwrap();
        let size = usize::from_str_radix(size_s, 8).unwrap();
        out.push((name, data[at + 512..at + 512 + size].to_vec()));
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn write_entries(p: &Path, es: &[(String, Vec<u8>)]) {
    let mut data = Vec::new();
    for (name, body) in es {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        data.extend_from_slice(&h);
        data.extend_from_slice(body);
        data.resize(data.len().div_ceil(512) * 512, 0);
    }
    data.resize(data.len() + 1024, 0);
    std::fs::write(p, data).unwrap();
}

#[test]
fn tampered_bundles_are_refused_before_anything_is_registered() {
    let f = fixtures();
    let d = Deploy::new("none", &[("0.1.175", "system-v1")], "{}");
    let signed = d.tmp.path().join("signed.bundle");
    create(&d, &signed, &["--sign-key", &sign_key()]);
    let unsigned = d.tmp.path().join("unsigned.bundle");
    create(&d, &unsigned, &[]);
    let key = bundle_key();
    let other = f.get("system-v2").path.clone();
    let base = entries(&signed);
    let nar_at = base
        .iter()
        .position(|(n, _)| n.starts_with("nar/"))
        .unwrap();
    let narinfos: Vec<usize> = (0..base.len())
        .filter(|&i| base[i].0.ends_with(".narinfo"))
        .collect();
    assert!(narinfos.len() >= 2);

    type Tamper = Box<dyn Fn(&mut Vec<(String, Vec<u8>)>)>;
    let cases: Vec<(&str, &str, Tamper, &[&str])> = vec![
        (
            "flipped NAR byte",
            "does not match the FileHash of",
            Box::new(move |e| {
                let body = &mut e[nar_at].1;
                let mid = body.len() / 2;
                body[mid] ^= 0x20;
            }),
            &[],
        ),
        (
            "narinfo swapped for another path's",
            "not of /nix/store/",
            Box::new(move |e| {
                let (a, b) = (narinfos[0], narinfos[1]);
                let tmp = e[a].1.clone();
                e[a].1 = e[b].1.clone();
                e[b].1 = tmp;
            }),
            &[],
        ),
        (
            "manifest naming another store path (unsigned bundle)",
            "as the system to deploy, but its closure does not hold it",
            Box::new(move |e| {
                let m = String::from_utf8(e[0].1.clone()).unwrap();
                let i = m.find("\"store_path\":\"").unwrap() + 14;
                let j = i + m[i..].find('"').unwrap();
                e[0].1 = format!("{}{other}{}", &m[..i], &m[j..]).into_bytes();
                e.retain(|(n, _)| n != "fh-lite-manifest.sig");
            }),
            &["--allow-unsigned-bundle"],
        ),
        (
            "manifest altered under its signature",
            "does not verify: the manifest was altered",
            Box::new(|e| {
                let m = String::from_utf8(e[0].1.clone()).unwrap();
                e[0].1 = m.replacen("\"created\":", "\"created\":1", 1).into_bytes();
            }),
            &[],
        ),
        (
            "signature missing",
            "the manifest is not signed",
            Box::new(|e| e.retain(|(n, _)| n != "fh-lite-manifest.sig")),
            &[],
        ),
    ];
    for (k, (name, want, tamper, extra)) in cases.iter().enumerate() {
        let mut es = base.clone();
        tamper(&mut es);
        let file = d.tmp.path().join(format!("tampered-{k}.bundle"));
        write_entries(&file, &es);
        let root = d.tmp.path().join(format!("root-{k}"));
        std::fs::create_dir_all(&root).unwrap();
        let mut args = vec!["--trusted-bundle-key", key.as_str()];
        args.extend_from_slice(extra);
        let r = apply_from(&d, &root, file.to_str().unwrap(), &args, None);
        assert_eq!(r.code, 21, "{name}: {r:?}");
        assert!(
            r.stderr.contains(want),
            "{name}: want {want:?} in {}",
            r.stderr
        );
        assert_nothing_registered(&root, name);
    }
    // A truncated file (cut inside the last NAR).
    let data = std::fs::read(&unsigned).unwrap();
    let cut = d.tmp.path().join("cut.bundle");
    std::fs::write(&cut, &data[..data.len() - 2048]).unwrap();
    let root = d.tmp.path().join("root-cut");
    std::fs::create_dir_all(&root).unwrap();
    let r = apply_from(
        &d,
        &root,
        cut.to_str().unwrap(),
        &["--allow-unsigned-bundle"],
        None,
    );
    assert_eq!(r.code, 21, "truncated: {r:?}");
    assert!(r.stderr.contains("is truncated"), "{}", r.stderr);
    assert_nothing_registered(&root, "truncated");
    // The untampered unsigned bundle needs --allow-unsigned-bundle.
    let root = d.tmp.path().join("root-unsigned");
    std::fs::create_dir_all(&root).unwrap();
    let r = apply_from(
        &d,
        &root,
        unsigned.to_str().unwrap(),
        &["--trusted-bundle-key", &key],
        None,
    );
    assert_eq!(r.code, 21, "{r:?}");
    assert!(
        r.stderr.contains("the manifest is not signed"),
        "{}",
        r.stderr
    );
}

pub(crate) fn assert_nothing_registered(root: &Path, name: &str) {
    assert!(
        !root.join("nix-path-registration").exists(),
        "{name}: something was registered"
    );
    let store: Vec<PathBuf> = std::fs::read_dir(root.join("nix/store"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(store.is_empty(), "{name}: store not empty: {store:?}");
}

#[test]
fn fetch_then_apply_requests_no_nar() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let mut args: Vec<String> = [
        "fetch",
        &d.reference(REQ),
        "--json",
        "--root",
        d.root.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(d.online());
    let r = run(&args);
    assert_eq!(r.code, 0, "fetch: {r:?}");
    let want = &f.get("system-v1").path;
    let last = r.stdout.lines().last().unwrap_or("");
    assert!(
        last.contains(&format!("\"store_path\":\"{want}\"")),
        "{}",
        r.stdout
    );
    // Pinned, and nothing activated.
    let link = d.root.join("var/lib/fh-lite/fetched");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(want));
    let auto: Vec<PathBuf> = std::fs::read_dir(d.root.join("nix/var/nix/gcroots/auto"))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(auto, vec![PathBuf::from("/var/lib/fh-lite/fetched")]);
    assert!(
        !d.root.join("nix/var/nix/profiles/system").exists(),
        "no profile change"
    );
    let nars = d.hub.requests_to("/nar/").len();
    assert!(nars > 0);
    let r = d.apply(REQ, &["boot"]);
    assert_eq!(r.code, 0, "apply after fetch: {r:?}");
    assert_eq!(
        d.hub.requests_to("/nar/").len(),
        nars,
        "the apply requested no NAR"
    );
    judge_image(&d, f, "system-v1");
}

/// `fetch --root img` given relative (from the image's parent directory):
/// the pin and Nix's indirect GC root name in-image paths, so the staged
/// closure stays rooted inside the booted image; nothing points at the
/// build host's directory.
#[test]
fn fetch_with_a_relative_root_roots_in_image_paths() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let mut args = vec!["fetch".to_string(), d.reference(REQ), "-q".to_string()];
    args.extend(["--root".to_string(), "root".to_string()]);
    args.extend(d.online());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = fh_lite(&a);
    cmd.current_dir(d.tmp.path());
    let r = no_secret(output(cmd));
    assert_eq!(r.code, 0, "fetch: {r:?}");
    let want = &f.get("system-v1").path;
    let link = d.root.join("var/lib/fh-lite/fetched");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(want));
    let auto: Vec<PathBuf> = std::fs::read_dir(d.root.join("nix/var/nix/gcroots/auto"))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(auto, vec![PathBuf::from("/var/lib/fh-lite/fetched")]);
}

#[test]
fn older_exact_version_is_refused_after_a_newer_one() {
    let d = Deploy::new(
        "zstd",
        &[("0.1.175", "system-v1"), ("0.1.176", "system-v2")],
        "{}",
    );
    let r = d.apply("=0.1.176", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let nars = d.hub.requests_to("/nar/").len();
    let r = d.apply(REQ, &["boot"]);
    assert_eq!(r.code, 35, "{r:?}");
    assert!(r.stderr.contains("older than 0.1.176"), "{}", r.stderr);
    assert_eq!(
        d.hub.requests_to("/nar/").len(),
        nars,
        "refused before any download"
    );
    let r = d.apply(REQ, &["boot", "--allow-downgrade"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// `dry-activate` changes nothing: an older release may be looked at
/// (no refusal as a downgrade), and a newer one looked at is not
/// remembered (a later apply of the running release is no downgrade).
#[test]
fn dry_activate_is_no_downgrade_and_remembers_nothing() {
    let d = Deploy::new(
        "zstd",
        &[("0.1.175", "system-v1"), ("0.1.176", "system-v2")],
        "{}",
    );
    let r = d.apply(REQ, &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = d.apply("=0.1.176", &["dry-activate"]);
    assert_eq!(r.code, 0, "dry-activate of a newer release: {r:?}");
    let r = d.apply(REQ, &["boot"]);
    assert_eq!(
        r.code, 0,
        "0.1.175 again after a dry-activate of 0.1.176: {r:?}"
    );
    let r = d.apply("=0.1.176", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = d.apply(REQ, &["dry-activate"]);
    assert_eq!(r.code, 0, "dry-activate of an older release: {r:?}");
    assert!(!r.stderr.contains("downgrade"), "{}", r.stderr);
    let r = d.apply(REQ, &["boot"]);
    assert_eq!(
        r.code, 35,
        "a real apply of the older release is still refused: {r:?}"
    );
}

/// A `--sign-key` file readable by group or others draws a warning naming
/// it and the fix; a mode 600 file draws none.
#[test]
fn readable_sign_key_draws_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let d = Deploy::new("none", &[("0.1.175", "system-v1")], "{}");
    let key = d.tmp.path().join("bundle.sec");
    std::fs::copy(sign_key(), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let k = key.to_str().unwrap();
    let r = create(&d, &d.tmp.path().join("a.bundle"), &["--sign-key", k]);
    let want = format!(
        "fh-lite: warning: --sign-key {k} is readable by group or others (mode 644); anyone \
         who can read it can sign bundles: run 'chmod 600 {k}'\n"
    );
    assert_eq!(r.stderr.matches(&want).count(), 1, "{r:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = create(&d, &d.tmp.path().join("b.bundle"), &["--sign-key", k]);
    assert!(!r.stderr.contains("warning"), "{r:?}");
}

/// The signed bundle's tar, rewritten: the root's NAR first and twice,
/// one of its references left out (the tar order is not signed). Refused
/// before anything is registered.
#[test]
fn a_reordered_bundle_with_a_repeated_nar_is_refused() {
    let f = fixtures();
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    let bundle = d.tmp.path().join("pi.bundle");
    create(&d, &bundle, &["--sign-key", &sign_key()]);
    let x = d.tmp.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&bundle)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(ok.success());
    let root_path = &f.get("system-v1").path;
    let hash = Fixtures::hash_part(root_path);
    let narinfo = std::fs::read_to_string(x.join(format!("{hash}.narinfo"))).unwrap();
    let dep = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("References: "))
        .unwrap()
        .split(' ')
        .find(|r| !root_path.ends_with(*r))
        .expect("the root has a reference")
        .to_string();
    let dep_hash = dep.split('-').next().unwrap();
    let root_nar = format!("nar/{hash}.nar.xz");
    let dep_nar = format!("nar/{dep_hash}.nar.xz");
    let mut names = vec![
        "fh-lite-manifest.json".to_string(),
        "fh-lite-manifest.sig".to_string(),
    ];
    let mut nars = Vec::new();
    for e in std::fs::read_dir(&x).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if n.ends_with(".narinfo") {
            names.push(n);
        }
    }
    for e in std::fs::read_dir(x.join("nar")).unwrap() {
        let n = format!("nar/{}", e.unwrap().file_name().to_string_lossy());
        if n != root_nar && n != dep_nar {
            nars.push(n);
        }
    }
    names.push(root_nar.clone());
    names.push(root_nar.clone());
    names.extend(nars);
    let evil = d.tmp.path().join("evil.bundle");
    let ok = std::process::Command::new("tar")
        .arg("--format=ustar")
        .arg("-cf")
        .arg(&evil)
        .arg("-C")
        .arg(&x)
        .args(&names)
        .status()
        .unwrap();
    assert!(ok.success());
    let key = bundle_key();
    let extra = ["--trusted-bundle-key", key.as_str()];
    let r = apply_from(&d, &d.root, evil.to_str().unwrap(), &extra, None);
    assert_eq!(r.code, 21, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "{root_nar} comes before {dep_nar}, the NAR of one of its references"
        )),
        "{r:?}"
    );
    assert!(d.store_entries().is_empty(), "{:?}", d.store_entries());
    // Streamed on standard input (no prepass): refused too, and the
    // referrer is never registered without its reference.
    let r = apply_from(&d, &d.root, "-", &extra, Some(&evil));
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stderr.contains("comes before"), "{r:?}");
    let reg = std::fs::read_to_string(d.root.join("nix-path-registration")).unwrap_or_default();
    assert!(!reg.contains(root_path.as_str()), "{reg}");
}

/// A dir bundle whose narinfo `URL:` (not signed) points outside the
/// bundle: the NAR is taken from the manifest's name only, never there.
#[test]
fn a_dir_bundle_url_outside_the_bundle_is_never_opened() {
    let f = fixtures();
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    let bundle = d.tmp.path().join("pi.dir");
    create(&d, &bundle, &["--sign-key", &sign_key(), "--format", "dir"]);
    let root_path = &f.get("system-v1").path;
    let hash = Fixtures::hash_part(root_path);
    let nar = format!("nar/{hash}.nar.xz");
    let outside = d.tmp.path().join("outside.nar.xz");
    std::fs::rename(bundle.join(&nar), &outside).unwrap();
    let ni = bundle.join(format!("{hash}.narinfo"));
    let text: String = std::fs::read_to_string(&ni)
        .unwrap()
        .lines()
        .map(|l| match l.strip_prefix("URL: ") {
            Some(_) => format!("URL: {}\n", outside.display()),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&ni, text).unwrap();
    let key = bundle_key();
    let extra = ["--trusted-bundle-key", key.as_str()];
    let r = apply_from(&d, &d.root, bundle.to_str().unwrap(), &extra, None);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&bundle.join(&nar).display().to_string()),
        "{r:?}"
    );
    let reg = std::fs::read_to_string(d.root.join("nix-path-registration")).unwrap_or_default();
    assert!(!reg.contains(root_path.as_str()), "{reg}");
}

/// A dir bundle whose manifest is a symlink to /dev/zero: refused at once,
/// in bounded memory (peak RSS printed).
#[test]
fn a_dev_zero_manifest_is_refused_in_bounded_memory() {
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    let bundle = d.tmp.path().join("zero.dir");
    std::fs::create_dir_all(&bundle).unwrap();
    std::os::unix::fs::symlink("/dev/zero", bundle.join("fh-lite-manifest.json")).unwrap();
    let f = fixtures();
    let root = d.root.to_str().unwrap();
    let args = [
        "apply",
        "nixos",
        "--from",
        bundle.to_str().unwrap(),
        "boot",
        "--root",
        root,
        "--no-default-keys",
        "--trusted-key",
        &f.public_key,
        "--trusted-bundle-key",
        &f.public_key,
    ];
    // A 1 GiB address-space limit keeps a binary that reads it whole from
    // taking the machine's memory. Under qemu-user the limit must leave
    // room for the emulator, which reserves the whole 32-bit guest address
    // space (4 GiB) up front for armv7: 8 GiB there.
    let emulated = crate::support::util::exe().1.is_some();
    let limit = if emulated { 8u64 << 30 } else { 1u64 << 30 };
    let inner = fh_lite(&args);
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg(format!("--as={limit}"))
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let (r, rss) = crate::hardening::run_measured(cmd);
    assert_eq!(r.code, 21, "{r:?}");
    assert!(
        r.stderr.contains("fh-lite-manifest.json") && r.stderr.contains("symbolic link"),
        "{r:?}"
    );
    if let Some(kib) = rss {
        eprintln!("peak RSS with a /dev/zero manifest: {kib} KiB");
        assert!(emulated || kib < 32 * 1024, "peak RSS {kib} KiB");
    }
}

/// A bundle read from a FIFO whose writer stalls half-way (in a NAR, the
/// lock held): SIGTERM ends the run within 10 s, as "interrupted".
#[test]
fn a_stalled_fifo_bundle_ends_on_sigterm() {
    let f = fixtures();
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    let bundle = d.tmp.path().join("pi.bundle");
    create(&d, &bundle, &["--sign-key", &sign_key()]);
    let bytes = std::fs::read(&bundle).unwrap();
    let fifo = d.tmp.path().join("pi.fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let fifo = fifo.clone();
        let half = bytes[..bytes.len() / 2].to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let _ = w.write_all(&half);
            // Stall, the FIFO open, until the test is done.
            let _ = stop_rx.recv_timeout(std::time::Duration::from_secs(60));
        })
    };
    let key = bundle_key();
    let mut cmd = fh_lite(&[
        "apply",
        "nixos",
        "--from",
        fifo.to_str().unwrap(),
        "boot",
        "--root",
        d.root.to_str().unwrap(),
        "--no-default-keys",
        "--trusted-key",
        &f.public_key,
        "--trusted-bundle-key",
        &key,
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Wait until it fetches (the journal says so), with the lock held.
    let state = d.root.join("var/lib/fh-lite/state.json");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&state)
        .unwrap_or_default()
        .contains("\"phase\":\"fetching\"")
    {
        if t0.elapsed().as_secs() >= 30 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("it never started fetching (blocked before the lock?)");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed().as_secs() >= 10 {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let _ = stop_tx.send(());
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = status.expect("still running 10 s after SIGTERM");
    assert_eq!(status.code(), Some(42), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
}

/// `bundle create REF --output - [extra]` with its stdout given.
fn create_to_stdout(d: &Deploy, extra: &[&str], stdout: Stdio) -> std::process::Command {
    let mut args: Vec<String> = ["bundle", "create", &d.reference(REQ), "--output", "-"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(d.online());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = fh_lite(&a);
    cmd.current_dir(d.tmp.path()).stdout(stdout);
    cmd
}

#[test]
fn bundle_to_stdout_pipes_into_apply_from_stdin() {
    let f = fixtures();
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    let sign = sign_key();
    // bundle create … --output - | fh-lite apply nixos --from - …
    let mut create = create_to_stdout(&d, &["--sign-key", &sign], Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = create.stdout.take().unwrap();
    let key = bundle_key();
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
        "--trusted-bundle-key",
        &key,
    ]);
    apply.stdin(Stdio::from(pipe));
    let r = no_secret(output(apply));
    let c = create.wait_with_output().unwrap();
    let c_err = String::from_utf8_lossy(&c.stderr);
    assert!(c.status.success(), "bundle create --output -: {c_err}");
    assert!(c_err.contains("standard output"), "{c_err}");
    assert_eq!(r.code, 0, "apply --from - fed by bundle create: {r:?}");
    judge_image(&d, f, "system-v1");
    // Nothing but the bundle on stdout, no file written beside it.
    let o = create_to_stdout(&d, &[], Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tar = d.tmp.path().join("out.tar");
    std::fs::write(&tar, &o.stdout).unwrap();
    let names: Vec<String> = entries(&tar).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names.first().map(String::as_str),
        Some("fh-lite-manifest.json"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("nar/")), "{names:?}");
    let parts: Vec<_> = std::fs::read_dir(d.tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part-"))
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
}

#[test]
fn bundle_to_stdout_refuses_dir_and_fails_clearly_on_a_broken_pipe() {
    let d = Deploy::new("xz", &[("0.1.175", "system-v1")], "{}");
    let r = output(create_to_stdout(&d, &["--format", "dir"], Stdio::piped()));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--format dir"), "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    // The reader is gone before anything is written.
    let mut child = create_to_stdout(&d, &[], Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let c = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&c.stderr);
    assert_eq!(c.status.code(), Some(1), "{err}");
    assert!(
        err.contains("standard output") && err.contains("broken pipe"),
        "{err}"
    );
    let names: Vec<String> = std::fs::read_dir(d.tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("bundle") || n.contains(".part-") || n == "-")
        .collect();
    assert!(names.is_empty(), "files left: {names:?}");
}

/// An unsigned bundle (`--allow-unsigned-bundle`) cannot prove the version
/// its manifest claims: after 0.1.176 was applied, one holding 0.1.175
/// is refused as a possible downgrade whether its reference is loose
/// (`*`) or claims a newer exact version; with `--allow-downgrade` it
/// applies and the remembered version stays 0.1.176. On a device that
/// remembers nothing it applies and is not remembered.
#[test]
fn an_unsigned_bundle_neither_passes_nor_moves_the_anti_downgrade_memory() {
    let d = Deploy::new(
        "zstd",
        &[("0.1.175", "system-v1"), ("0.1.176", "system-v2")],
        "{}",
    );
    let r = d.apply("=0.1.176", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let versions = d.root.join("var/lib/fh-lite/versions.json");
    let remembered = || std::fs::read_to_string(&versions).unwrap_or_default();
    assert!(remembered().contains("\"0.1.176\""), "{}", remembered());
    let dir = d.tmp.path().join("old-bundle");
    create(&d, &dir, &["--format", "dir"]);
    let manifest = dir.join("fh-lite-manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("org/demo/=0.1.175#"), "{text}");
    for claim in ["*", "=9.9.9"] {
        std::fs::write(&manifest, text.replace("/=0.1.175#", &format!("/{claim}#"))).unwrap();
        let r = apply_from(
            &d,
            &d.root,
            dir.to_str().unwrap(),
            &["--allow-unsigned-bundle"],
            None,
        );
        assert_eq!(r.code, 35, "unsigned bundle claiming {claim}: {r:?}");
        assert!(
            r.stderr.contains("is unproven") && r.stderr.contains("0.1.176 of org/demo"),
            "{claim}: {}",
            r.stderr
        );
        assert!(
            remembered().contains("\"0.1.176\""),
            "{claim}: {}",
            remembered()
        );
    }
    let r = apply_from(
        &d,
        &d.root,
        dir.to_str().unwrap(),
        &["--allow-unsigned-bundle", "--allow-downgrade"],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        remembered().contains("\"0.1.176\"") && !remembered().contains("9.9.9"),
        "an unsigned bundle moved the memory: {}",
        remembered()
    );
    // A device that remembers nothing: applied, and nothing remembered.
    let root = d.tmp.path().join("fresh-root");
    std::fs::create_dir_all(&root).unwrap();
    let r = apply_from(
        &d,
        &root,
        dir.to_str().unwrap(),
        &["--allow-unsigned-bundle"],
        None,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let fresh =
        std::fs::read_to_string(root.join("var/lib/fh-lite/versions.json")).unwrap_or_default();
    assert!(!fresh.contains("9.9.9"), "{fresh}");
}
