//! Real Nix for the live-store tests: an isolated environment (HOME, XDG
//! dirs, NIX_CONF_DIR and NIX_CONFIG under a test directory, trusting only
//! the fixtures' key; the host's /nix and nix.conf are never used) and a
//! `nix-daemon` over a chroot store on a private socket, killed with its
//! workers on drop.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fixtures::fixtures;
use crate::support::procs::descendants;

/// The environment for Nix programs (and for fh-lite, whose `nix` and
/// `nix-store` children inherit it), everything under `dir/nix-env`.
pub fn nix_env(dir: &Path) -> Vec<(OsString, OsString)> {
    let d = dir.join("nix-env");
    for sub in ["home", "cache", "config", "data", "etc"] {
        fs::create_dir_all(d.join(sub)).unwrap();
    }
    let config = format!(
        "experimental-features = nix-command\nbuild-users-group =\nsubstituters =\ntrusted-public-keys = {}\n",
        fixtures().public_key
    );
    let mut env: Vec<(OsString, OsString)> = vec![
        ("HOME".into(), d.join("home").into()),
        ("XDG_CACHE_HOME".into(), d.join("cache").into()),
        ("XDG_CONFIG_HOME".into(), d.join("config").into()),
        ("XDG_DATA_HOME".into(), d.join("data").into()),
        ("NIX_CONF_DIR".into(), d.join("etc").into()),
        ("NIX_CONFIG".into(), config.into()),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        env.push(("PATH".into(), path));
    }
    env
}

/// `program` with only [`nix_env`] as its environment.
pub fn nix_cmd(dir: &Path, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear().envs(nix_env(dir)).stdin(Stdio::null());
    c
}

/// A `nix-daemon --store STORE` on `dir/daemon/socket`.
pub struct NixDaemon {
    child: Option<Child>,
    dir: PathBuf,
    pub store: PathBuf,
    pub socket: PathBuf,
}

impl NixDaemon {
    /// Start it and wait until a client handshake works.
    pub fn start(dir: &Path, store: &Path) -> NixDaemon {
        let mut d = NixDaemon {
            child: None,
            dir: dir.to_path_buf(),
            store: store.to_path_buf(),
            socket: dir.join("daemon/socket"),
        };
        d.spawn();
        d
    }

    /// `unix://SOCKET`, the store URL of this daemon for Nix clients.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.dir.join("daemon.log")).unwrap();
        let mut c = nix_cmd(&self.dir, "nix-daemon");
        c.arg("--store")
            .arg(&self.store)
            .env("NIX_DAEMON_SOCKET_PATH", &self.socket)
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(c.spawn().expect("start nix-daemon"));
        let start = Instant::now();
        loop {
            // A full handshake (its worker also creates the database, so
            // later connections do not race on that).
            if self.socket.exists() {
                let mut ping = nix_cmd(&self.dir, "nix");
                ping.args(["store", "ping", "--store", &self.url()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if ping.status().map(|s| s.success()).unwrap_or(false) {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nix-daemon did not start: {}",
                fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the daemon and its workers (which start their own
    /// sessions, so they are found as its descendants).
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pids = descendants(child.id());
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
    }

    /// A fresh daemon on the same store and socket.
    pub fn restart(&mut self) {
        self.kill();
        let _ = fs::remove_file(&self.socket);
        self.spawn();
    }
}

impl Drop for NixDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}
