//! Helpers: run the binary under test, temporary directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary under test and its optional runner (qemu-user).
pub fn exe() -> (PathBuf, Option<String>) {
    let exe = std::env::var_os("FH_LITE_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fh-lite")));
    let runner = std::env::var("FH_LITE_RUNNER")
        .ok()
        .filter(|s| !s.is_empty());
    (exe, runner)
}

/// A command for fh-lite with a clean environment: no FlakeHub variables,
/// HOME and XDG dirs pointing nowhere, so a developer's token is never read.
/// Run it with [`output`] or `support::watchdog::spawn` (the time limit).
pub fn fh_lite(args: &[&str]) -> Command {
    let (exe, runner) = exe();
    let mut cmd = match runner {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(args);
    cmd.env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd.env("HOME", "/nonexistent-fh-lite-test-home");
    cmd.env("XDG_CONFIG_HOME", "/nonexistent-fh-lite-test-config");
    cmd.env("USER", "tester");
    cmd.stdin(Stdio::null());
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}\n---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `cmd` (from [`fh_lite`]) to its end, under the watchdog's time limit.
pub fn output(cmd: Command) -> Run {
    let out: Output = super::watchdog::output(cmd);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn run(args: &[&str]) -> Run {
    output(fh_lite(args))
}

/// A fresh directory under the system temp dir, removed on drop (read-only
/// store trees included).
pub use fh_lite::testutil::TempDir;

/// `cmd` run in a private mount namespace whose /etc is `etc` (bind
/// mounted; the host's /etc is untouched and other tests do not see it),
/// for the token file fh-lite reads from the running machine's
/// /etc/fh-lite. Needs root and util-linux's `unshare`.
pub fn with_etc(cmd: &Command, etc: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc && shift && exec \"$@\"")
        .arg("sh")
        .arg(etc)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    c.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.stdin(Stdio::null());
    c
}
