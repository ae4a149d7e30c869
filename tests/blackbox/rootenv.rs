//! What fh-lite runs as root, and with what: programs are found only on
//! the sanitised PATH (a directory others can write is never searched),
//! and activation scripts and health checks get a minimal environment
//! (src/exec.rs).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::deploy::{no_secret, Deploy};
use crate::support::fixtures::fixtures;
use crate::support::nixd::{nix_cmd, nix_env};
use crate::support::util::output;
use crate::support::{is_root, require};

/// The PATH a chrooted program gets (exec::DEFAULT_PATH).
const ROOT_PATH: &str = "/run/wrappers/bin:/run/current-system/sw/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// 2027-01-15 08:00:00 UTC.
const EIGHT_UTC: u64 = 1_800_000_000;

fn can_chroot() -> bool {
    require("root to chroot", is_root())
}

/// `/bin/sh`, `/bin/sleep` and `/bin/env` in the image root: busybox
/// from the fixtures' closure (the health check runs `/bin/sh -c CMD`
/// chrooted).
fn add_shell(d: &Deploy) {
    let bb = fixtures()
        .get("system-v1")
        .closure
        .iter()
        .find(|p| p.ends_with("-busybox-static"))
        .expect("busybox in the system closure")
        .clone();
    let bin = d.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["sh", "sleep", "env"] {
        std::os::unix::fs::symlink(format!("{bb}/bin/busybox"), bin.join(name)).unwrap();
    }
}

/// A directory anyone may write (mode 0777, as a user's stray PATH entry
/// might be) holding a fake of every program fh-lite runs, each only
/// recording that it ran in `evil.log` beside it. Returns (dir, log).
pub fn writable_dir_of_fakes(tmp: &Path) -> (PathBuf, PathBuf) {
    let dir = tmp.join("evil-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let log = tmp.join("evil.log");
    for name in [
        "chroot",
        "unshare",
        "sh",
        "mount",
        "date",
        "systemctl",
        "nix-store",
        "nix",
    ] {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"{name} $*\" >> {}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    (dir, log)
}

/// `NAME=value` lines of `env` output → map (values on one line only).
fn env_of(file: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn programs_in_a_directory_others_can_write_never_run_as_root() {
    if !can_chroot() {
        return;
    }
    let d = Deploy::new(
        "zstd",
        &[("0.1.1", "system-v1"), ("0.1.2", "system-v2")],
        "{}",
    );
    add_shell(&d);
    let (evil, evil_log) = writable_dir_of_fakes(d.tmp.path());
    let path = format!(
        "{}:{}",
        evil.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // An empty live store in the root, so that `nix-store` (and `nix`,
    // for the signatures) run too.
    let mut init = nix_cmd(d.tmp.path(), "nix-store");
    init.arg("--store").arg(&d.root).arg("--verify");
    assert!(
        init.output().unwrap().status.success(),
        "nix-store --verify"
    );
    let tmpdir = d.tmp.path().join("fh-tmp");
    std::fs::create_dir_all(&tmpdir).unwrap();
    let run = |req: &str, extra: &[&str]| {
        let mut c = d.command(req, extra);
        c.envs(nix_env(d.tmp.path()))
            .env("TMPDIR", &tmpdir)
            .env("PATH", &path)
            .env("FH_LITE_TEST_NOW", EIGHT_UTC.to_string())
            .env("TZ", "UTC0");
        let r = no_secret(output(c));
        assert_eq!(
            std::fs::read_to_string(&evil_log).unwrap_or_default(),
            "",
            "a program from the writable directory ran: {r:?}"
        );
        r
    };
    // switch (chroot), a window (date), the local store (nix-store, nix).
    let r = run(
        "=0.1.1",
        &[
            "switch",
            "-v",
            "--store",
            "local",
            "--window",
            "07:00-09:00",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let said = format!(
        "fh-lite: PATH entry {} is not used for programs run as root: writable by group or others (mode 777)\n",
        evil.display()
    );
    assert_eq!(
        r.stderr.matches(&said).count(),
        1,
        "said once with -v: {r:?}"
    );
    // A health check (chroot, sh; the root has its /bin/sh now).
    let r = run(
        "=0.1.2",
        &["switch", "--store", "local", "--health-check", "exit 0"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stderr.contains("PATH entry"), "only with -v: {r:?}");
    // boot --install-bootloader (unshare, sh, mount, chroot).
    let r = run(
        "=0.1.2",
        &[
            "boot",
            "--force",
            "--store",
            "local",
            "--install-bootloader",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    // The genuine programs did: both activations were recorded.
    let log = std::fs::read_to_string(d.root.join("var/log/fh-lite-test/switch.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
}

#[test]
fn activation_and_health_check_get_a_minimal_environment() {
    if !can_chroot() {
        return;
    }
    let d = Deploy::new("zstd", &[("0.1.1", "system-v1")], "{}");
    add_shell(&d);
    let run = |extra: &[&str]| {
        let mut c = d.command("=0.1.1", extra);
        c.env("TZ", "XXX-3")
            .env("HOME", "/home/somebody")
            .env("FOO", "bar")
            .env("LANG", "de_DE.UTF-8")
            .env("TERM", "xterm")
            .env("LD_LIBRARY_PATH", "/nonexistent-fh-lite-lib")
            .env("LOCALE_ARCHIVE", "/nonexistent-fh-lite/locale-archive");
        no_secret(output(c))
    };
    // Once to have the root's /bin/sh (busybox from the closure), then
    // again with the health check.
    let r = run(&["switch"]);
    assert_eq!(r.code, 0, "{r:?}");
    let health = "env > /var/log/fh-lite-test/health.env";
    let r = run(&["switch", "--force", "--health-check", health]);
    assert_eq!(r.code, 0, "{r:?}");
    let logs = d.root.join("var/log/fh-lite-test");
    for file in ["switch.log.env.1", "switch.log.env.2", "health.env"] {
        let env = env_of(&logs.join(file));
        assert_eq!(
            env.get("PATH").map(String::as_str),
            Some(ROOT_PATH),
            "{file}: {env:?}"
        );
        assert_eq!(
            env.get("LOCALE_ARCHIVE").map(String::as_str),
            Some("/nonexistent-fh-lite/locale-archive"),
            "{file}: {env:?}"
        );
        // Only those two, and what the shell itself sets.
        let extra: Vec<&String> = env
            .keys()
            .filter(|k| !["PATH", "LOCALE_ARCHIVE", "PWD", "SHLVL", "_"].contains(&k.as_str()))
            .collect();
        assert!(extra.is_empty(), "{file}: {extra:?} in {env:?}");
    }
}
