//! Real Nix 2.8 for the unit tests: a private environment (HOME, XDG_*,
//! NIX_CONF_DIR, NIX_CONFIG; the host's /nix is never used) with its own
//! signing key, a source chroot store with a signed
//! two-path closure, and a real `nix-daemon` on a private socket.
//! Everything is removed or killed on drop.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{have, require, skipped, TempDir};
use crate::nix::hash::Sha256;
use crate::nix::narinfo::signature::Signature;
use crate::nix::narinfo::{Compression, NarInfo};
use crate::nix::store_path::StorePath;

/// Why unit tests that drive real Nix are skipped under qemu-user; the
/// skip log groups by this text (scripts/test prints it in its summary).
pub const QEMU_SKIP: &str =
    "unit tests under qemu that drive real Nix; covered by the black-box suite";

/// A private Nix environment with its own signing key (`sk`, `pk`), or
/// None when the test is skipped (no Nix, not root, under qemu-user).
pub struct NixEnv {
    pub dir: TempDir,
    pub env: Vec<(OsString, OsString)>,
    pub sk: PathBuf,
    pub pk: String,
}

impl NixEnv {
    pub fn new(test: &str) -> Option<NixEnv> {
        // scripts/env sets this for the unit tests it runs under qemu-user:
        // there a child forked by a multithreaded emulated process can hang
        // in qemu's own locks. A deliberate skip, also with
        // FH_LITE_REQUIRE_ALL: the black-box suite drives real Nix with the
        // emulated binary instead.
        if std::env::var_os("FH_LITE_UNIT_UNDER_QEMU").is_some() {
            skipped(QEMU_SKIP);
            return None;
        }
        for p in [
            "nix",
            "nix-store",
            "nix-daemon",
            "nix-instantiate",
            "nix-env",
        ] {
            if !require(&format!("{p} on PATH; apt-get install nix-bin"), have(p)) {
                return None;
            }
        }
        if !require("root for chroot stores", super::is_root()) {
            return None;
        }
        let dir = TempDir::new(test);
        let d = dir.path().to_path_buf();
        for sub in ["home", "cache", "config", "data", "etc"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let mut env: Vec<(OsString, OsString)> = vec![
            ("HOME".into(), d.join("home").into()),
            ("XDG_CACHE_HOME".into(), d.join("cache").into()),
            ("XDG_CONFIG_HOME".into(), d.join("config").into()),
            ("XDG_DATA_HOME".into(), d.join("data").into()),
            ("NIX_CONF_DIR".into(), d.join("etc").into()),
            (
                "NIX_CONFIG".into(),
                "experimental-features = nix-command".into(),
            ),
        ];
        if let Some(path) = std::env::var_os("PATH") {
            env.push(("PATH".into(), path));
        }
        let mut ne = NixEnv {
            dir,
            env,
            sk: d.join("sk"),
            pk: String::new(),
        };
        let sk = ne.run(
            "nix",
            &["key", "generate-secret", "--key-name", "test-1"],
            None,
        );
        fs::write(&ne.sk, &sk).unwrap();
        ne.pk = ne.run(
            "nix",
            &["key", "convert-secret-to-public"],
            Some(sk.as_bytes()),
        );
        let config = format!(
            "experimental-features = nix-command\nbuild-users-group =\nsubstituters =\ntrusted-public-keys = {}\n",
            ne.pk.trim()
        );
        for (k, v) in ne.env.iter_mut() {
            if k == "NIX_CONFIG" {
                *v = config.clone().into();
            }
        }
        Some(ne)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Run and return stdout; panic with stderr on failure.
    pub fn run(&self, prog: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.run_status(prog, args, stdin);
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn run_status(
        &self,
        prog: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> std::process::Output {
        use std::io::Write;
        let had_nix = Path::new("/nix").exists();
        let mut c = self.cmd(prog);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut w = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            w.write_all(data).unwrap();
        }
        drop(w);
        let out = child.wait_with_output().unwrap();
        assert!(
            had_nix || !Path::new("/nix").exists(),
            "{prog} {args:?} created the host's /nix"
        );
        out
    }

    /// A chroot store with a signed closure: `top.txt` → `dep` (a
    /// directory with a 200 KiB file, an executable, a symlink).
    pub fn source_closure(&self) -> Closure {
        let d = self.path();
        let src = d.join("src/dep");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("hello"), "hello from the dep\n").unwrap();
        let big: Vec<u8> = (0..200 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(src.join("big"), big).unwrap();
        fs::write(src.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(src.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("hello", src.join("link")).unwrap();
        fs::write(
            d.join("refs.nix"),
            "let dep = builtins.path { path = ./src/dep; name = \"dep\"; };\n\
             in builtins.toFile \"top.txt\" \"dep lives at ${dep}\\n\"\n",
        )
        .unwrap();
        let store = d.join("src-store");
        let s = store.to_str().unwrap();
        let out = self.run(
            "nix-instantiate",
            &[
                "--store",
                s,
                "--eval",
                "--read-write-mode",
                d.join("refs.nix").to_str().unwrap(),
            ],
            None,
        );
        let top = out.trim().trim_matches('"').to_string();
        self.run(
            "nix",
            &[
                "store",
                "sign",
                "--store",
                s,
                "--key-file",
                self.sk.to_str().unwrap(),
                "-r",
                &top,
            ],
            None,
        );
        let json = self.run(
            "nix",
            &["path-info", "--store", s, "--json", "-r", &top],
            None,
        );
        let infos = parse_path_info(&json);
        let top_path = StorePath::parse(&top).unwrap();
        let top_info = infos
            .iter()
            .find(|i| i.store_path == top_path)
            .unwrap()
            .clone();
        let dep_info = infos
            .iter()
            .find(|i| i.store_path != top_path)
            .unwrap()
            .clone();
        let nar = |i: &NarInfo| -> Vec<u8> {
            let real = store.join(i.store_path.to_string().trim_start_matches('/'));
            let mut c = self.cmd("nix-store");
            c.arg("--dump").arg(real);
            let out = c.output().unwrap();
            assert!(out.status.success(), "nix-store --dump");
            out.stdout
        };
        Closure {
            dep_nar: nar(&dep_info),
            top_nar: nar(&top_info),
            dep: dep_info,
            top: top_info,
            store,
        }
    }

    /// `nix-store --verify --check-contents` of a chroot store: its output.
    pub fn verify(&self, store: &Path) -> String {
        let out = self.run_status(
            "nix-store",
            &[
                "--store",
                store.to_str().unwrap(),
                "--verify",
                "--check-contents",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        // Progress lines are always printed; anything else is a finding.
        const PROGRESS: [&str; 4] = [
            "reading the Nix store...",
            "checking path existence...",
            "checking link hashes...",
            "checking store hashes...",
        ];
        all.lines()
            .filter(|l| !PROGRESS.contains(l))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// `nix path-info --sigs` of one path in a chroot store (None: invalid).
    pub fn sigs(&self, store: &Path, p: &StorePath) -> Option<String> {
        let out = self.run_status(
            "nix",
            &[
                "path-info",
                "--store",
                store.to_str().unwrap(),
                "--sigs",
                &p.to_string(),
            ],
            None,
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn valid(&self, store: &Path, p: &StorePath) -> bool {
        self.run_status(
            "nix-store",
            &[
                "--store",
                store.to_str().unwrap(),
                "--check-validity",
                &p.to_string(),
            ],
            None,
        )
        .status
        .success()
    }
}

/// A two-path closure in a source store, with NARs and real metadata.
pub struct Closure {
    pub store: PathBuf,
    pub dep: NarInfo,
    pub top: NarInfo,
    pub dep_nar: Vec<u8>,
    pub top_nar: Vec<u8>,
}

impl Closure {
    /// Ways to get `dep` wrong, each with the start of the error a store
    /// must give: (name, narinfo, NAR, message prefix). Every one is a
    /// verification failure and must leave nothing behind.
    pub fn bad_dep_cases(&self) -> Vec<(&'static str, NarInfo, Vec<u8>, String)> {
        let p = &self.dep.store_path;
        let mut flipped = self.dep_nar.clone();
        let at = 1000; // inside the first file's (big's) contents
        flipped[at] ^= 0xff;
        let mut wrong_hash = self.dep.clone();
        wrong_hash.nar_hash.0[0] ^= 1;
        let mut short = self.dep.clone();
        short.nar_size -= 8;
        let mut long = self.dep.clone();
        long.nar_size += 8;
        let truncated = self.dep_nar[..self.dep_nar.len() - 100].to_vec();
        vec![
            (
                "contents changed",
                self.dep.clone(),
                flipped,
                format!(
                    "NAR of {p}: hash mismatch: the narinfo says {}, the NAR has ",
                    self.dep.nar_hash.to_nix32_prefixed()
                ),
            ),
            (
                "narinfo hash differs",
                wrong_hash.clone(),
                self.dep_nar.clone(),
                format!(
                    "NAR of {p}: hash mismatch: the narinfo says {}, the NAR has {}",
                    wrong_hash.nar_hash.to_nix32_prefixed(),
                    self.dep.nar_hash.to_nix32_prefixed()
                ),
            ),
            (
                "NarSize too small",
                short,
                self.dep_nar.clone(),
                format!("NAR of {p}: "),
            ),
            (
                "NarSize too large",
                long.clone(),
                self.dep_nar.clone(),
                format!(
                    "NAR of {p}: size mismatch: the narinfo says {} bytes, the NAR has {}",
                    long.nar_size, self.dep.nar_size
                ),
            ),
            (
                "truncated",
                self.dep.clone(),
                truncated,
                format!("NAR of {p}: "),
            ),
        ]
    }
}

fn parse_path_info(json: &str) -> Vec<NarInfo> {
    use miniserde::json::{self, Value};
    let v: Value = json::from_str(json).unwrap();
    let Value::Array(items) = v else {
        panic!("path-info: {json}")
    };
    let s = |o: &json::Object, k: &str| -> Option<String> {
        match o.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Object(o) = item else { panic!() };
            let list = |k: &str| -> Vec<String> {
                match o.get(k) {
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|x| match x {
                            Value::String(s) => s.clone(),
                            _ => panic!(),
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            };
            let nar_size = match o.get("narSize") {
                Some(Value::Number(n)) => n.to_string().parse().unwrap(),
                _ => panic!("narSize"),
            };
            NarInfo {
                store_path: StorePath::parse(&s(&o, "path").unwrap()).unwrap(),
                url: String::new(),
                compression: Compression::None,
                file_hash: None,
                file_size: None,
                nar_hash: Sha256::parse(&s(&o, "narHash").unwrap()).unwrap(),
                nar_size,
                references: list("references")
                    .iter()
                    .map(|r| StorePath::parse(r).unwrap())
                    .collect(),
                deriver: s(&o, "deriver").map(|d| StorePath::parse(&d).unwrap()),
                sigs: list("signatures")
                    .iter()
                    .map(|g| {
                        use base64::Engine;
                        let (name, b64) = g.split_once(':').unwrap();
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap();
                        Signature {
                            name: name.to_string(),
                            bytes: bytes.try_into().unwrap(),
                        }
                    })
                    .collect(),
                ca: s(&o, "ca"),
            }
        })
        .collect()
}

/// A real `nix-daemon` over a chroot store on a private socket; its whole
/// process group (workers included) is killed on drop.
pub struct Daemon {
    child: Child,
    killed: bool,
    pub socket: PathBuf,
    pub store: PathBuf,
}

impl Daemon {
    pub fn start(env: &NixEnv, name: &str) -> Daemon {
        let store = env.path().join(format!("{name}-store"));
        let socket = env.path().join(format!("{name}-socket/socket"));
        let mut c = env.cmd("nix-daemon");
        c.arg("--store")
            .arg(&store)
            .env("NIX_DAEMON_SOCKET_PATH", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().unwrap();
        let d = Daemon {
            child,
            killed: false,
            socket,
            store,
        };
        let start = Instant::now();
        // Ready = a full handshake works: its worker has also created the
        // store's database, so later connections do not race on that.
        while crate::store::daemon::probe(&d.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nix-daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// SIGKILL the daemon and its workers (which start their own
    /// sessions, so they are found as its descendants).
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        let pids = super::procs::descendants(self.child.id());
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
