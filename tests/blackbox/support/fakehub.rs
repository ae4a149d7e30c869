//! The local FlakeHub stand-in (tests/fakehub/fakehub.py) as a test
//! fixture: started with a temporary config, waited for, killed on drop.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::util::TempDir;

/// How to start the stand-in.
#[derive(Clone, Copy, Default)]
pub struct Opts {
    /// HTTPS with a CA made at start (`ca_file()`), else plain HTTP.
    pub tls: bool,
    /// A second, plain-HTTP listener (a redirect target on another port).
    pub second: bool,
}

pub struct FakeHub {
    child: Child,
    dir: TempDir,
    pub port: u16,
    pub second_port: Option<u16>,
    pub tls: bool,
}

/// One line of the request log.
#[derive(miniserde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub server: String,
    pub method: String,
    pub path: String,
    pub auth: String,
    pub status: u16,
    /// The request's Range header.
    pub range: Option<String>,
    /// Body bytes the answer sent (fewer than the file when it was cut).
    pub bytes: Option<u64>,
}

/// Start `python3 tests/fakehub/SCRIPT ARGS… --port-file DIR/port` with
/// its stderr in DIR/stderr, and wait until it listens.
fn start_python(script: &str, dir: &Path, args: Vec<OsString>) -> (Child, u16) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fakehub")
        .join(script);
    let port_file = dir.join("port");
    let stderr = std::fs::File::create(dir.join("stderr")).expect("server stderr file");
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .arg("--port-file")
        .arg(&port_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start python3 {}: {e}", path.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(&port_file) {
            if let Ok(p) = s.trim().parse() {
                return (child, p);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
            panic!("{script} exited early ({status}):\n{err}");
        }
        assert!(Instant::now() < deadline, "{script} did not start in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP CONNECT proxy on loopback (tests/fakehub/proxy.py) that logs
/// the targets it tunnels to; stopped on drop.
pub struct Proxy {
    child: Child,
    dir: TempDir,
    pub port: u16,
}

impl Proxy {
    pub fn start() -> Proxy {
        let dir = TempDir::new("proxy");
        let log = dir.path().join("tunnels.log");
        let (child, port) = start_python("proxy.py", dir.path(), vec!["--log".into(), log.into()]);
        Proxy { child, dir, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One line per tunnel: `CONNECT host:port`.
    pub fn tunnels(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("tunnels.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeHub {
    /// Start with `config` (the JSON described in fakehub.py).
    pub fn start(config: &str, opts: Opts) -> FakeHub {
        let dir = TempDir::new("fakehub");
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, config).expect("write fakehub config");
        let second_file = dir.path().join("second-port");
        let mut args: Vec<OsString> = vec![
            "--config".into(),
            cfg.into(),
            "--log".into(),
            dir.path().join("requests.jsonl").into(),
        ];
        if opts.tls {
            args.extend(["--tls-dir".into(), dir.path().join("tls").into()]);
        }
        if opts.second {
            args.extend(["--second-port-file".into(), second_file.clone().into()]);
        }
        let (child, port) = start_python("fakehub.py", dir.path(), args);
        let mut hub = FakeHub {
            child,
            dir,
            port,
            second_port: None,
            tls: opts.tls,
        };
        if opts.second {
            let s = std::fs::read_to_string(&second_file).expect("second port file");
            hub.second_port = Some(s.trim().parse().expect("second port"));
        }
        hub
    }

    /// `https://127.0.0.1:PORT` or `http://…`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The second listener, by another name: `http://localhost:PORT2`.
    pub fn second_url(&self) -> String {
        format!(
            "http://localhost:{}",
            self.second_port.expect("started with second")
        )
    }

    /// The CA certificate (with `tls`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// Every request so far, in order. A last line without its newline is
    /// one the stand-in is still writing (a test that killed fh-lite reads
    /// the log while a handler finishes): it is not a request yet.
    pub fn requests(&self) -> Vec<Request> {
        let text =
            std::fs::read_to_string(self.dir.path().join("requests.jsonl")).unwrap_or_default();
        text.split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .map(|l| miniserde::json::from_str(l).unwrap_or_else(|_| panic!("log line {l}")))
            .collect()
    }

    /// The requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `token` to `dir/name` with `mode` (0600 normally).
pub fn write_token(dir: &Path, name: &str, token: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("token dir");
    }
    std::fs::write(&p, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod token");
    p
}

impl FakeHub {
    /// POST /_control with `knobs` (JSON, see fakehub.py) on a plain-HTTP
    /// stand-in; panics unless it answers 200.
    pub fn control(&self, knobs: &str) {
        use std::io::{Read, Write};
        assert!(!self.tls, "control() speaks plain HTTP");
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect fakehub");
        write!(
            s,
            "POST /_control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{knobs}",
            knobs.len()
        )
        .expect("send /_control");
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .expect("read /_control answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "{answer}"
        );
    }
}
