//! Hardening: the closure token stays with the cache's origin,
//! and a NAR cannot make the decompressor take more memory than the cap.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::deploy::{judge_image, no_secret, Deploy, TOKEN};
use crate::support::fakehub::{FakeHub, Opts};
use crate::support::fixtures::{fixtures, Fixtures};
use crate::support::util::{output, Run, TempDir};

const ATTR: &str = "nixosConfigurations.pi";

/// A NixOS deploy (apply.rs's `Deploy`) over the binary cache in
/// `cache_dir`, with the stand-in started with `opts` (TLS, a second
/// listener).
pub fn deploy(cache_dir: &Path, releases: &[(&str, &str)], opts: Opts) -> Deploy {
    let f = fixtures();
    let rel: Vec<String> = releases
        .iter()
        .map(|(v, fx)| format!(r#""{v}": {{"{ATTR}": "{}"}}"#, f.get(fx).path))
        .collect();
    let config = format!(
        r#"{{"releases": {{"org/demo": {{{}}}}},
            "device_tokens": {{"{TOKEN}": {{"project": "org/demo", "version_req": "0.1", "attribute": "{ATTR}"}}}},
            "cache_dir": "{}"}}"#,
        rel.join(", "),
        cache_dir.display()
    );
    Deploy::start(FakeHub::start(&config, opts), "nixos", ATTR)
}

#[test]
fn an_absolute_nar_url_on_another_host_gets_no_credential() {
    let f = fixtures();
    let opts = Opts {
        tls: false,
        second: true,
    };
    let d = deploy(f.cache("zstd"), &[("0.1.175", "system-v1")], opts);
    // Narinfos now point at http://localhost:PORT2/_open/nar/…: another
    // host and port, which answers 400 to any Authorization header.
    d.hub.control(&format!(
        r#"{{"absolute_nar_url": "{}"}}"#,
        d.hub.second_url()
    ));
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    judge_image(&d, f, "system-v1");
    let reqs = d.hub.requests();
    let nars: Vec<_> = reqs.iter().filter(|q| q.path.contains("/nar/")).collect();
    assert_eq!(nars.len(), f.get("system-v1").closure.len(), "{reqs:?}");
    for q in &nars {
        assert_eq!(
            (q.server.as_str(), q.auth.as_str(), q.status),
            ("second", "none", 200),
            "{q:?}"
        );
        assert!(q.path.starts_with("/_open/nar/"), "{q:?}");
    }
    // The cache's own origin still got the token, for every narinfo.
    let narinfos: Vec<_> = reqs
        .iter()
        .filter(|q| q.path.ends_with(".narinfo"))
        .collect();
    assert!(!narinfos.is_empty());
    for q in narinfos {
        assert_eq!(
            (q.server.as_str(), q.auth.as_str()),
            ("main", "basic"),
            "{q:?}"
        );
    }
}

/// A copy of the fixture cache `which` in which `store_path`'s NAR is
/// replaced by `body` (its narinfo's FileSize adjusted: it is not signed).
fn spoiled_cache(f: &Fixtures, which: &str, store_path: &str, body: &[u8], dir: &Path) -> PathBuf {
    let copy = dir.join(format!("cache-{which}"));
    let ok = Command::new("cp")
        .arg("-r")
        .arg(f.cache(which))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(ok.success());
    let narinfo = copy.join(format!("{}.narinfo", Fixtures::hash_part(store_path)));
    let text = std::fs::read_to_string(&narinfo).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL line")
        .to_string();
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("FileSize: ") {
            Some(_) => format!("FileSize: {}\n", body.len()),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&narinfo, text).unwrap();
    std::fs::write(copy.join(url), body).unwrap();
    copy
}

/// CRC-32 (IEEE), for a hand-made xz header.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// An xz stream header and a block header whose LZMA2 dictionary is
/// 1.5 GiB (property 37), CRCs valid; no data follows.
fn xz_asking_for_1_5_gib() -> Vec<u8> {
    let mut out = vec![0xFD, b'7', b'z', b'X', b'Z', 0, 0, 1];
    out.extend(crc32(&[0, 1]).to_le_bytes());
    let block = [2, 0, 0x21, 1, 37, 0, 0, 0];
    out.extend(block);
    out.extend(crc32(&block).to_le_bytes());
    out
}

/// Peak RSS in KiB from `/usr/bin/time -v`'s report (None without it).
pub fn run_measured(cmd: Command) -> (Run, Option<u64>) {
    if !Path::new("/usr/bin/time").exists() {
        return (no_secret(output(cmd)), None);
    }
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-v").arg(cmd.get_program()).args(cmd.get_args());
    timed.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    let r = no_secret(output(timed));
    let rss = r
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|n| n.trim().parse().ok());
    (r, rss)
}

#[test]
fn an_xz_nar_asking_for_a_1_5_gib_dictionary_is_refused() {
    let f = fixtures();
    let tmp = TempDir::new("harden-xz");
    let root_path = f.get("system-v1").path.clone();
    let body = xz_asking_for_1_5_gib();
    let cache = spoiled_cache(f, "xz", &root_path, &body, tmp.path());
    let d = deploy(&cache, &[("0.1.175", "system-v1")], Opts::default());
    let (r, rss) = run_measured(d.command("=0.1.175", &["boot"]));
    assert_eq!(r.code, 21, "{r:?}");
    let nar_url = format!(
        "{}/nar/",
        d.hub.url() // the NAR URL is named, under the cache
    );
    assert!(
        r.stderr.contains(&format!(
            "the xz stream of {root_path} asks for a 1.5 GiB (1610612736 bytes) dictionary, \
             over the decoder memory cap of 64.0 MiB: refusing it (--max-decoder-memory MIB \
             raises the cap, if you trust this cache)"
        )) && r.stderr.contains(&nar_url),
        "{r:?}"
    );
    if let Some(kib) = rss {
        eprintln!("peak RSS with a 1.5 GiB xz dictionary asked for: {kib} KiB");
        // Under qemu-user the figure is qemu's too (its translation cache
        // grows with the code run): the bound is for the binary itself.
        let emulated = crate::support::util::exe().1.is_some();
        assert!(emulated || kib < 16 * 1024, "peak RSS {kib} KiB");
    }
    // Nothing of the refused path is in the store.
    let base = root_path.trim_start_matches("/nix/store/");
    assert!(
        !d.store_entries().iter().any(|e| e.contains(base)),
        "{:?}",
        d.store_entries()
    );
    // A cap above what it asks for lets the decoder try (and the body,
    // which has no data, then fails as corrupt, not as too big).
    let r = d.apply("=0.1.175", &["boot", "--max-decoder-memory", "2048"]);
    assert_eq!(r.code, 21, "{r:?}");
    assert!(!r.stderr.contains("decoder memory cap"), "{r:?}");
}

/// Symlinks named as the temporary files of `name` (`.NAME.tmp-PID`) for
/// the next few thousand pids, all to `victim`: a writer whose temporary
/// name is predictable and followed writes through one of them.
fn plant_temp_links(dir: &Path, name: &str, victim: &Path) {
    let next = Command::new("true").spawn().unwrap();
    let pid = next.id();
    let mut child = next;
    child.wait().unwrap();
    for p in pid + 1..pid + 3000 {
        std::os::unix::fs::symlink(victim, dir.join(format!(".{name}.tmp-{p}"))).unwrap();
    }
}

#[test]
fn metrics_file_temp_name_cannot_redirect_the_write() {
    let f = fixtures();
    let d = deploy(
        f.cache("zstd"),
        &[("0.1.175", "system-v1")],
        Opts::default(),
    );
    let textfile = d.tmp.path().join("textfile");
    std::fs::create_dir_all(&textfile).unwrap();
    let victim = d.tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    plant_temp_links(&textfile, "fh.prom", &victim);
    let prom = textfile.join("fh.prom");
    let r = d.apply(
        "=0.1.175",
        &["boot", "--metrics-file", prom.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let md = std::fs::symlink_metadata(&prom).unwrap();
    assert!(
        md.file_type().is_file(),
        "fh.prom is not a plain file: {md:?}"
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains("fh_lite_last_exit_code 0"), "{text}");
}

#[test]
fn versions_json_stays_in_the_root_and_follows_no_planted_link() {
    let f = fixtures();
    let victim_text = "precious\n";
    // The state directory is a symlink to a directory outside the root.
    let d = deploy(
        f.cache("zstd"),
        &[("0.1.175", "system-v1")],
        Opts::default(),
    );
    let outside = d.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(d.root.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(&outside, d.root.join("var/lib/fh-lite")).unwrap();
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(left.is_empty(), "written outside the root: {left:?}");
    // Resolved as chroot would: the same path beneath the root.
    let inside = d.root.join(outside.strip_prefix("/").unwrap());
    assert!(inside.join("versions.json").is_file(), "{r:?}");

    // A planted temporary-name symlink in the real state directory.
    let d = deploy(
        f.cache("zstd"),
        &[("0.1.175", "system-v1")],
        Opts::default(),
    );
    let state = d.root.join("var/lib/fh-lite");
    std::fs::create_dir_all(&state).unwrap();
    let victim = d.tmp.path().join("victim");
    std::fs::write(&victim, victim_text).unwrap();
    plant_temp_links(&state, "versions.json", &victim);
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), victim_text);
    let v = state.join("versions.json");
    assert!(std::fs::symlink_metadata(&v).unwrap().file_type().is_file());
    assert!(std::fs::read_to_string(&v).unwrap().contains("0.1.175"));
}

/// A journal entry planted in the image's state.json (a path of the image,
/// killed "activating", with a health check): `apply boot --root` runs
/// nothing of it, says so, clears it and goes on.
#[test]
fn a_planted_journal_entry_runs_nothing() {
    let f = fixtures();
    let d = deploy(
        f.cache("zstd"),
        &[("0.1.175", "system-v1")],
        Opts::default(),
    );
    let Some(root) = crate::support::chroot_root(&d.tmp.path().to_path_buf()) else {
        return;
    };
    assert_eq!(root, d.root);
    let evil = crate::support::fake_system(&root, "sys-evil", "bin/switch-to-configuration", 0);
    let state = root.join("var/lib/fh-lite");
    std::fs::create_dir_all(&state).unwrap();
    let pending = format!(
        "{{\"reference\":\"org/demo/=0.1.175#{ATTR}\",\"store_path\":\"{evil}\",\"action\":\"switch\",\"trial\":false,\"phase\":\"activating\",\"generation\":null,\"previous_generation\":null,\"previous_system\":null,\"time\":1700000000,\"pid\":999999,\"kind\":\"nixos\",\"install_bootloader\":false,\"rollback_on\":[1,2,4],\"no_rollback\":false,\"health_check\":\"echo ran > /health.log\",\"health_timeout\":60,\"activation_timeout\":null}}"
    );
    std::fs::write(
        state.join("state.json"),
        format!("{{\"version\":1,\"last_attempt\":null,\"last_success\":null,\"failed\":[],\"pending\":{pending}}}\n"),
    )
    .unwrap();
    let r = d.apply("=0.1.175", &["boot"]);
    assert!(
        !root.join("activation.log").exists(),
        "activation ran: {r:?}"
    );
    assert!(!root.join("health.log").exists(), "health check ran: {r:?}");
    assert!(
        r.stderr.contains("refusing the interrupted attempt")
            && r.stderr.contains(&evil)
            && r.stderr.contains("which this command does not run"),
        "{r:?}"
    );
    assert_eq!(r.code, 0, "{r:?}");
    judge_image(&d, f, "system-v1");
    let st = d.fh(&["status", "--json"]);
    assert!(st.stdout.contains("\"pending\":null"), "{st:?}");
}

/// The state directory is 0700, the lock and state.json 0600, also when an
/// older run left them looser; `nobody` cannot take the lock.
#[test]
fn nobody_cannot_hold_the_lock() {
    use std::os::unix::fs::PermissionsExt;
    if !crate::support::require("root, to run flock as nobody", crate::support::is_root()) {
        return;
    }
    let f = fixtures();
    let d = deploy(
        f.cache("zstd"),
        &[("0.1.175", "system-v1")],
        Opts::default(),
    );
    // What an older version left: a 0755 directory, a 0644 lock and state.
    let state = d.root.join("var/lib/fh-lite");
    std::fs::create_dir_all(&state).unwrap();
    for (p, mode) in [
        (d.tmp.path(), 0o755),
        (&d.root, 0o755),
        (&d.root.join("var"), 0o755),
        (&d.root.join("var/lib"), 0o755),
        (&state, 0o755),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(state.join("lock"), "").unwrap();
    std::fs::write(
        state.join("state.json"),
        "{\"version\":1,\"last_attempt\":null,\"last_success\":null,\"failed\":[]}\n",
    )
    .unwrap();
    for name in ["lock", "state.json"] {
        std::fs::set_permissions(state.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("lock")), 0o600);
    assert_eq!(mode(&state.join("state.json")), 0o600);
    assert_eq!(mode(&state.join("versions.json")), 0o600);
    // As nobody: the lock cannot even be opened.
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(["flock", "-n", "-x"])
        .arg(state.join("lock"))
        .arg("true")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "nobody took the lock: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The next apply is not blocked.
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// `--max-decoder-memory` is the cap for every source: a `file://` cache
/// and a bundle too (the NAR asks for a 1.5 GiB xz dictionary: refused
/// under the default cap, tried, and found corrupt, under a higher one).
#[test]
fn max_decoder_memory_holds_for_file_caches_and_bundles() {
    let f = fixtures();
    let tmp = TempDir::new("harden-cap");
    let root_path = f.get("system-v1").path.clone();
    let cache = spoiled_cache(f, "xz", &root_path, &xz_asking_for_1_5_gib(), tmp.path());
    // The bundle is made from the genuine cache, then its NAR replaced
    // (an unsigned dir bundle: its manifest and narinfo adjusted).
    let d = deploy(f.cache("xz"), &[("0.1.175", "system-v1")], Opts::default());
    let bundle = d.tmp.path().join("pi.bundle");
    let mut args = vec![
        "bundle".to_string(),
        "create".into(),
        d.reference("=0.1.175"),
        "--output".into(),
        bundle.display().to_string(),
        "--format".into(),
        "dir".into(),
    ];
    args.extend(d.online());
    let r = output(crate::support::util::fh_lite(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(r.code, 0, "bundle create: {r:?}");
    spoil_dir_bundle(&bundle, &root_path, &xz_asking_for_1_5_gib());
    let file_cache = format!("file://{}", cache.display());
    let sources: [Vec<&str>; 2] = [
        vec![&root_path, "--cache", &file_cache],
        vec![
            "--from",
            bundle.to_str().unwrap(),
            "--allow-unsigned-bundle",
        ],
    ];
    for source in sources {
        for (cap, refused) in [(None, true), (Some("2048"), false)] {
            let mut args = vec!["apply", "nixos"];
            args.extend_from_slice(&source);
            args.extend_from_slice(&[
                "boot",
                "--root",
                d.root.to_str().unwrap(),
                "--no-default-keys",
                "--trusted-key",
                &f.public_key,
                "--api-addr",
                "https://127.0.0.1:9",
            ]);
            if let Some(cap) = cap {
                args.extend_from_slice(&["--max-decoder-memory", cap]);
            }
            let r = output(crate::support::util::fh_lite(&args));
            assert_eq!(r.code, 21, "{args:?}: {r:?}");
            assert_eq!(
                r.stderr.contains("over the decoder memory cap"),
                refused,
                "{args:?}: {r:?}"
            );
        }
    }
}

/// Replace `store_path`'s NAR in the dir bundle `dir` by `body`: its
/// narinfo and manifest entry say the new FileSize and no FileHash.
fn spoil_dir_bundle(dir: &Path, store_path: &str, body: &[u8]) {
    let hash = Fixtures::hash_part(store_path);
    let narinfo = dir.join(format!("{hash}.narinfo"));
    let text = std::fs::read_to_string(&narinfo).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL line")
        .to_string();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("FileHash: "))
        .map(|l| match l.strip_prefix("FileSize: ") {
            Some(_) => format!("FileSize: {}\n", body.len()),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&narinfo, text).unwrap();
    std::fs::write(dir.join(&url), body).unwrap();
    let manifest = dir.join("fh-lite-manifest.json");
    let m = std::fs::read_to_string(&manifest).unwrap();
    // The entry of this path: its file_hash and file_size.
    let at = m
        .find(&format!("\"path\":\"{store_path}\""))
        .expect("manifest entry");
    let end = at + m[at..].find('}').unwrap();
    let entry = &m[at..end];
    let fixed = regex_free_replace(entry, "\"file_hash\":", "null");
    let fixed = regex_free_replace(&fixed, "\"file_size\":", &body.len().to_string());
    std::fs::write(&manifest, format!("{}{fixed}{}", &m[..at], &m[end..])).unwrap();
    let _ = std::fs::remove_file(dir.join("fh-lite-manifest.sig"));
}

/// In `s`, the JSON value after `key` (up to the next `,` or the end)
/// replaced by `value`.
fn regex_free_replace(s: &str, key: &str, value: &str) -> String {
    let Some(k) = s.find(key) else {
        return s.to_string();
    };
    let from = k + key.len();
    let to = from + s[from..].find(',').unwrap_or(s.len() - from);
    format!("{}{value}{}", &s[..from], &s[to..])
}

/// A server on loopback that answers every request 200 with a 1000-byte
/// body dripped one byte every 300 ms; stopped on drop.
struct Drip {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drip {
    fn start() -> Drip {
        Drip::serving(None)
    }

    /// Narinfos (and nix-cache-info) from `cache` at once; everything else
    /// dripped.
    fn serving(cache: Option<PathBuf>) -> Drip {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let s = s.clone();
                let cache = cache.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let n = c.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = req.split(' ').nth(1).unwrap_or("/").to_string();
                    if let Some(dir) = &cache {
                        if path.ends_with(".narinfo") || path == "/nix-cache-info" {
                            let body = std::fs::read(dir.join(path.trim_start_matches('/')));
                            let head = match &body {
                                Ok(b) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len()),
                                Err(_) => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                            };
                            let _ = c.write_all(head.as_bytes());
                            let _ = c.write_all(&body.unwrap_or_default());
                            return;
                        }
                    }
                    let _ = c.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/x-nix-narinfo\r\nContent-Length: 1000\r\n\r\n",
                    );
                    for _ in 0..1000 {
                        if s.load(std::sync::atomic::Ordering::SeqCst) || c.write_all(b"x").is_err()
                        {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(300));
                    }
                });
            }
        });
        Drip { port, stop }
    }
}

impl Drop for Drip {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A narinfo dripped one byte at a time fails at the small-body deadline
/// (shortened to 1.5 s for a debug build; a release build has no such knob
/// and is held to its 120 s), with an error naming the URL.
#[test]
fn a_dripped_narinfo_fails_at_the_deadline() {
    let f = fixtures();
    let drip = Drip::start();
    let tmp = TempDir::new("harden-drip");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let cache = format!("http://127.0.0.1:{}", drip.port);
    let path = &f.get("system-v1").path;
    let mut cmd = crate::support::util::fh_lite(&[
        "apply",
        "nixos",
        path,
        "boot",
        "--cache",
        &cache,
        "--allow-insecure-http",
        "--root",
        root.to_str().unwrap(),
        "--trusted-key",
        &f.public_key,
        "--api-addr",
        "https://127.0.0.1:9",
    ]);
    cmd.env("FH_LITE_TEST_SMALL_BODY_MS", "1500")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let release = crate::support::util::exe()
        .0
        .to_string_lossy()
        .contains("/release/");
    let (deadline, wait) = if release { ("120", 150) } else { ("1.5", 20) };
    let t0 = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap();
    let done = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if t0.elapsed().as_secs() >= wait {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(done, "still running after {wait} s: {stderr}");
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    let hash = Fixtures::hash_part(path);
    assert!(
        stderr.contains(&format!("{cache}/{hash}.narinfo"))
            && stderr.contains(&format!("was not complete after {deadline} s")),
        "{stderr}"
    );
}

/// A NAR dripped one byte every 300 ms fails under the minimum throughput
/// (its window shortened to 1 s for a debug build), naming the NAR's URL.
#[test]
fn a_dripped_nar_fails_under_the_minimum_throughput() {
    let f = fixtures();
    if crate::support::util::exe()
        .0
        .to_string_lossy()
        .contains("/release/")
    {
        // No test knob in a release build; the debug suite covers it.
        return;
    }
    let drip = Drip::serving(Some(f.cache("xz").to_path_buf()));
    let tmp = TempDir::new("harden-drip-nar");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let cache = format!("http://127.0.0.1:{}", drip.port);
    let path = &f.get("system-v1").path;
    let mut cmd = crate::support::util::fh_lite(&[
        "apply",
        "nixos",
        path,
        "boot",
        "--cache",
        &cache,
        "--allow-insecure-http",
        "--root",
        root.to_str().unwrap(),
        "--trusted-key",
        &f.public_key,
        "--api-addr",
        "https://127.0.0.1:9",
    ]);
    cmd.env("FH_LITE_TEST_NAR_WINDOW_MS", "1000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let t0 = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap();
    let done = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if t0.elapsed().as_secs() >= 60 {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(done, "still running after 60 s: {stderr}");
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("{cache}/nar/"))
            && stderr.contains("under the minimum throughput"),
        "{stderr}"
    );
}
