//! `--mirror URL`: a LAN mirror in front of FlakeHub Cache. Five simulated
//! devices (separate roots) apply one release through a mirror made by
//! `bundle create --format dir` and served by Python's `http.server`
//! (127.0.0.1, every request and its headers logged): FlakeHub is asked
//! for no NAR the mirror has; a path missing from the mirror is the only
//! NAR FlakeHub serves; a corrupted NAR on the mirror is named in one
//! warning and comes from FlakeHub; real Nix verifies every root; the
//! mirror never sees a credential.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::deploy::{judge_image, Deploy, TOKEN};
use crate::support::fixtures::{fixtures, Fixtures};
use crate::support::util::{fh_lite, output, Run};

/// Python's http.server over a directory, logging each request line with
/// its headers; killed on drop.
struct Mirror {
    child: Child,
    port: u16,
    log: PathBuf,
}

const SERVER: &str = r#"
import functools, http.server, sys
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        heads = " ; ".join(f"{k}: {v}" for k, v in self.headers.items())
        log.write(f"{self.requestline} | {args[1] if len(args) > 1 else '-'} | {heads}\n")
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(H, directory=sys.argv[1]))
with open(sys.argv[3] + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os; os.rename(sys.argv[3] + ".tmp", sys.argv[3])
srv.serve_forever()
"#;

impl Mirror {
    fn serve(dir: &Path, tmp: &Path) -> Mirror {
        let log = tmp.join("mirror.log");
        let port_file = tmp.join("mirror.port");
        let child = Command::new("python3")
            .args(["-c", SERVER])
            .arg(dir)
            .arg(&log)
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let until = Instant::now() + Duration::from_secs(20);
        while !port_file.exists() {
            assert!(Instant::now() < until, "the mirror did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Mirror { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hash(p: &str) -> &str {
    &p.trim_start_matches("/nix/store/")[..32]
}

/// The NAR file name of `path` in a binary-cache dir (its narinfo's URL).
fn nar_of(dir: &Path, path: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{}.narinfo", hash(path)))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_string()
}

/// Apply on a fresh root (device `n`) through the mirror.
fn device(d: &mut Deploy, n: u32, mirror: &Mirror) -> Run {
    d.root = d.tmp.path().join(format!("device-{n}"));
    std::fs::create_dir_all(&d.root).unwrap();
    let metrics = d.root.join("metrics.prom");
    let mut cmd = d.command(
        "=0.1.175",
        &[
            "--mirror",
            &mirror.url(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    cmd.env_remove("CREDENTIALS_DIRECTORY");
    output(cmd)
}

/// `fh_lite_last_downloaded_bytes_by_source` of the mirror and of the
/// stand-in, from the device's metrics file.
fn by_source(d: &Deploy, mirror: &Mirror) -> (u64, u64) {
    let text = std::fs::read_to_string(d.root.join("metrics.prom")).unwrap();
    let get = |source: &str| -> u64 {
        let key = format!("fh_lite_last_downloaded_bytes_by_source{{source=\"{source}\"}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(key.as_str()));
        line.unwrap_or_else(|| panic!("no {key} in {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    (get(&mirror.url()), get(&d.hub.url()))
}

fn nar_requests(d: &Deploy) -> Vec<String> {
    d.hub
        .requests_to("/nar/")
        .into_iter()
        .map(|r| r.path)
        .collect()
}

#[test]
fn five_devices_behind_a_lan_mirror() {
    let f: &Fixtures = fixtures();
    let fixture = "system-full";
    let mut d = Deploy::new("zstd", &[("0.1.175", fixture)], "{}");
    // The mirror: a dir bundle, made from FlakeHub once.
    let dir = d.tmp.path().join("lan-mirror");
    let mut args = vec![
        "bundle".to_string(),
        "create".into(),
        d.reference("=0.1.175"),
        "--format".into(),
        "dir".into(),
        "--output".into(),
        dir.display().to_string(),
    ];
    args.extend(d.online());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = output(fh_lite(&a));
    assert_eq!(r.code, 0, "bundle create --format dir: {r:?}");
    let mirror = Mirror::serve(&dir, d.tmp.path());
    // What bundle create asked for; the devices start from here.
    let made = nar_requests(&d).len();
    let closure = f.get(fixture).closure.clone();
    let root_path = f.get(fixture).path.clone();

    // Devices 1-3: everything from the mirror.
    for n in 1..=3 {
        let before = d.hub.requests().len();
        let r = device(&mut d, n, &mirror);
        assert_eq!(r.code, 0, "device {n}: {r:?}");
        let asked: Vec<String> = d.hub.requests()[before..]
            .iter()
            .filter(|q| q.path.starts_with("/nar/") || q.path.ends_with(".narinfo"))
            .map(|q| q.path.clone())
            .collect();
        assert!(
            asked.is_empty(),
            "device {n} asked FlakeHub Cache for {asked:?}"
        );
        assert!(!r.stderr.contains("warning: mirror"), "{}", r.stderr);
        judge_image(&d, f, fixture);
        // Bytes per source: in the metrics file and in status.
        let (from_mirror, from_hub) = by_source(&d, &mirror);
        assert!(
            from_mirror > 1_000_000 && from_hub == 0,
            "{from_mirror} / {from_hub}"
        );
        let status = d.fh(&["status"]);
        assert!(
            status
                .stdout
                .contains(&format!("{from_mirror} from {}", mirror.url())),
            "{}",
            status.stdout
        );
    }
    assert_eq!(nar_requests(&d).len(), made, "no NAR from FlakeHub");

    // Device 4: one path missing from the mirror: only its NAR from FlakeHub.
    let missing = closure
        .iter()
        .find(|p| **p != root_path && !p.contains("busybox"))
        .unwrap();
    let missing_nar = nar_of(f.cache("zstd"), missing);
    std::fs::rename(
        dir.join(format!("{}.narinfo", hash(missing))),
        d.tmp.path().join("held-back.narinfo"),
    )
    .unwrap();
    let r = device(&mut d, 4, &mirror);
    assert_eq!(r.code, 0, "device 4: {r:?}");
    assert_eq!(
        nar_requests(&d)[made..],
        [format!("/{missing_nar}")],
        "only the missing NAR"
    );
    judge_image(&d, f, fixture);
    let (_, from_hub) = by_source(&d, &mirror);
    let hub_nar_bytes = d
        .hub
        .requests_to("/nar/")
        .last()
        .and_then(|q| q.bytes)
        .unwrap();
    assert!(from_hub >= hub_nar_bytes, "{from_hub} < {hub_nar_bytes}");
    std::fs::rename(
        d.tmp.path().join("held-back.narinfo"),
        dir.join(format!("{}.narinfo", hash(missing))),
    )
    .unwrap();

    // Device 5: the mirror serves a corrupted NAR (same size): named in a
    // warning, that path from FlakeHub, nothing wrong registered.
    let bad = closure
        .iter()
        .find(|p| **p != root_path && *p != missing && !p.contains("busybox"))
        .unwrap();
    let file = dir.join(nar_of(&dir, bad));
    let bad_nar = nar_of(f.cache("zstd"), bad);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    let before = nar_requests(&d).len();
    let r = device(&mut d, 5, &mirror);
    assert_eq!(r.code, 0, "device 5: {r:?}");
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("warning: mirror"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", r.stderr);
    assert!(
        warnings[0].contains(&mirror.url()) && warnings[0].contains(bad.as_str()),
        "the warning names the mirror and the path: {}",
        warnings[0]
    );
    assert_eq!(
        nar_requests(&d)[before..],
        [format!("/{bad_nar}")],
        "only the bad NAR"
    );
    judge_image(&d, f, fixture);

    // The mirror saw every device, and never a credential.
    let log = mirror.log();
    assert!(
        log.matches(".narinfo").count() >= 5 * closure.len() - 1,
        "{log}"
    );
    assert!(!log.to_ascii_lowercase().contains("authorization"), "{log}");
    assert!(!log.contains(TOKEN), "the device token reached the mirror");
    assert!(!log.contains("flakehub"), "{log}");
}

#[test]
fn mirror_options_are_checked() {
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    for (bad, says) in [
        (
            "ftp://lan/cache",
            "is not an http://, https:// or file:// binary cache URL",
        ),
        ("http://user:pw@lan/cache", "must not carry a login"),
    ] {
        let r = d.apply("=0.1.175", &["--mirror", bad]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains(says), "{}", r.stderr);
    }
    // A mirror that is not there: one warning, everything from FlakeHub.
    let r = d.apply("=0.1.175", &["--mirror", "http://127.0.0.1:9"]);
    assert_eq!(r.code, 0, "{r:?}");
    let w = r
        .stderr
        .matches("warning: mirror http://127.0.0.1:9")
        .count();
    assert_eq!(w, 1, "{}", r.stderr);
}
