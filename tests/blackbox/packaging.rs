//! What ships beside the binary: flake.nix parses, README's exit-code table
//! is the one `--help` prints.

use crate::support::util::{run, TempDir};
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `nix-instantiate --parse FILE` (its output) with HOME, XDG dirs and NIX_CONF_DIR in a
/// temp dir and the dummy store, so nothing of the host's Nix set-up (or
/// /nix) is touched.
pub fn nix_parse(file: &Path) -> Result<String, String> {
    let tmp = TempDir::new("nix-parse");
    let out = Command::new("nix-instantiate")
        .args(["--store", "dummy://", "--parse"])
        .arg(file)
        .env("HOME", tmp.path())
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .env("NIX_CONF_DIR", tmp.path())
        .env("NIX_CONFIG", "build-users-group =\nsubstituters =")
        .output()
        .map_err(|e| format!("run nix-instantiate (scripts/setup installs nix-bin): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn flake_nix_parses() {
    nix_parse(&repo().join("flake.nix")).unwrap();
}

#[test]
fn flake_nix_has_the_three_static_packages() {
    let flake = std::fs::read_to_string(repo().join("flake.nix")).unwrap();
    for p in [
        "fh-lite-x86_64-linux-musl",
        "fh-lite-aarch64-linux-musl",
        "fh-lite-armv7l-linux-musleabihf",
    ] {
        assert!(
            flake.contains(&format!("{p} =")),
            "flake.nix lacks package {p}"
        );
    }
}

/// README.md's table lists exactly the codes and meanings of `--help`
/// (no row missing, none left over).
#[test]
fn readme_exit_table_matches_help() {
    let help = run(&["--help"]).stdout;
    let table: Vec<(String, String)> = help
        .split("EXIT STATUS:\n")
        .nth(1)
        .expect("--help has EXIT STATUS")
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (code, meaning) = l.split_once("  ")?;
            Some((code.trim().to_string(), meaning.trim().to_string()))
        })
        .collect();
    assert!(table.len() >= 10, "exit table too short: {table:?}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let want: Vec<String> = table
        .iter()
        .map(|(code, meaning)| format!("| {code} | {meaning} |"))
        .collect();
    let rows: Vec<&str> = readme
        .split("## Exit status")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has '## Exit status'")
        .lines()
        .filter(|l| l.starts_with("| ") && l.as_bytes().get(2).is_some_and(u8::is_ascii_digit))
        .collect();
    assert_eq!(rows, want, "README.md's exit table differs from --help");
}

/// The unit's `TimeoutStopSec=` covers what a stop lets fh-lite finish with
/// its own ExecStart: the activation(s), the health check (default 60 s)
/// and a rollback, each script up to `--activation-timeout`.
#[test]
fn unit_stop_timeout_covers_an_activation_a_health_check_and_a_rollback() {
    let unit = std::fs::read_to_string(repo().join("systemd/fh-lite.service")).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .to_string()
    };
    let exec = value("ExecStart=");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let opt = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .map(|v| v.parse::<u64>().expect("a number of seconds"))
    };
    let act = opt("--activation-timeout").expect("the unit sets --activation-timeout");
    let health = opt("--health-timeout").unwrap_or(60);
    // --trial: `test`, then the commit's `boot`, then a rollback's switch.
    let scripts = if words.contains(&"--trial") { 3 } else { 2 };
    let need = scripts * act + health;
    let stop: u64 = value("TimeoutStopSec=")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop >= need,
        "TimeoutStopSec={stop} is shorter than {scripts} × {act} + {health} = {need}"
    );
}
