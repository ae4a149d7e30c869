//! What ships beside the binary: flake.nix parses, its NixOS module
//! evaluates for ARM hosts and yields units systemd accepts, README's
//! exit-code table is the one `--help-all` prints.

use crate::support::host::have;
use crate::support::require;
use crate::support::util::{run, TempDir};
use miniserde::json::{self, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `nix-instantiate --parse FILE` (its output) with HOME, XDG dirs and NIX_CONF_DIR in a
/// temp dir and the dummy store, so nothing of the host's Nix set-up (or
/// /nix) is touched.
pub fn nix_parse(file: &Path) -> Result<String, String> {
    let mut cmd = Command::new("nix-instantiate");
    cmd.args(["--store", "dummy://", "--parse"]).arg(file);
    nix_output(cmd)
}

/// The output of a Nix command run with HOME, XDG dirs and NIX_CONF_DIR in
/// a temp dir, so nothing of the host's Nix set-up (or /nix) is touched.
fn nix_output(mut cmd: Command) -> Result<String, String> {
    let tmp = TempDir::new("nix-env");
    let out = cmd
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

/// README.md's table lists exactly the codes and meanings of `--help-all`
/// (no row missing, none left over).
#[test]
fn readme_exit_table_matches_help() {
    let help = run(&["--help-all"]).stdout;
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

/// Splits an `ExecStart=` value as systemd does for the words fh-lite's
/// module writes (bare words, or double-quoted with C escapes) and undoes
/// `%%` and `$$`; a lone `%` or `$` (which systemd would expand) is an error.
fn exec_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut raw = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in {line}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => raw.push('\n'),
                        Some('t') => raw.push('\t'),
                        Some(c @ ('"' | '\\' | '/')) => raw.push(c),
                        other => return Err(format!("escape \\{other:?} in {line}")),
                    },
                    Some(c) => raw.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                raw.push(c);
                chars.next();
            }
        }
        let mut word = String::new();
        let mut it = raw.chars();
        while let Some(c) = it.next() {
            if c == '%' || c == '$' {
                match it.next() {
                    Some(d) if d == c => word.push(c),
                    _ => return Err(format!("systemd would expand the {c} in {raw}")),
                }
            } else {
                word.push(c);
            }
        }
        words.push(word);
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    match v {
        Value::Object(o) => match o.get(key) {
            Some(Value::String(s)) => s,
            other => panic!("module-eval.nix: {key} is {other:?}"),
        },
        other => panic!("module-eval.nix: not an object: {other:?}"),
    }
}

/// The flake's NixOS module, evaluated with nixpkgs' real `lib` (the
/// fixture in ../shared/fixtures) for aarch64-linux and armv7l-linux hosts,
/// cross-built from x86_64 and built natively: it evaluates, takes a
/// package built on the configuration's build platform (the flake's cross
/// package, not a native ARM build), writes a service and timer that
/// `systemd-analyze verify` accepts with `%` and `$` in the health check
/// (which reaches fh-lite unchanged), and the module's own example health
/// check (`curl …`) finds its command on the service's PATH.
#[test]
fn nixos_module_evaluates_for_arm_hosts_and_systemd_accepts_its_units() {
    let fixture = repo().join("../shared/fixtures/nixpkgs-lib-de42d442.tar.zst");
    if !require(
        &format!("the nixpkgs lib fixture {}", fixture.display()),
        fixture.is_file(),
    ) || !require("zstd and tar (scripts/setup)", have("zstd") && have("tar"))
        || !require(
            "nix-instantiate (scripts/setup installs nix-bin)",
            have("nix-instantiate"),
        )
        || !require(
            "systemd-analyze (scripts/setup installs systemd)",
            have("systemd-analyze"),
        )
        || !require("curl (scripts/setup installs curl)", have("curl"))
    {
        return;
    }
    let tmp = TempDir::new("module-eval");
    let st = Command::new("sh")
        .args(["-c", "zstd -dc \"$1\" | tar -x -C \"$2\"", "sh"])
        .arg(&fixture)
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(st.success(), "unpack {}", fixture.display());
    let stub = tmp.path().join("stub");
    let health = r#"test "$(date +%H)" != 24 && printf '%s\n' "${HOME:-%Q}" | grep -q ."#;
    let mut cmd = Command::new("timeout");
    cmd.args([
        "120",
        "nix-instantiate",
        "--store",
        "dummy://",
        "--eval",
        "--strict",
        "--json",
    ])
    .arg(repo().join("tests/nix/module-eval.nix"))
    .arg("--argstr")
    .arg("lib")
    .arg(tmp.path().join("lib"))
    .arg("--argstr")
    .arg("repo")
    .arg(repo())
    .arg("--argstr")
    .arg("stubRoot")
    .arg(&stub)
    .args(["--argstr", "healthCheck", health]);
    let out = nix_output(cmd).unwrap_or_else(|e| panic!("the module does not evaluate:\n{e}"));
    let cases = match json::from_str::<Value>(&out).unwrap() {
        Value::Array(a) => a,
        other => panic!("module-eval.nix: {other:?}"),
    };
    assert_eq!(cases.len(), 4);
    let curl = PathBuf::from(
        String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v curl"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    );
    let units = tmp.path().join("units");
    for case in &cases {
        let (build, host) = (str_field(case, "build"), str_field(case, "host"));
        let what = format!("built on {build} for {host}");
        // The package is built where the configuration is built: the
        // flake's own (cross) package where it has one for that pair.
        let package = str_field(case, "package");
        let origin = if build == host && build == "armv7l-linux" {
            "config"
        } else {
            "flake"
        };
        assert_eq!(
            package,
            stub.join(format!("{origin}-fh-lite-{build}-to-{host}"))
                .to_str()
                .unwrap(),
            "{what}: the package"
        );
        // What the units run exists (systemd-analyze checks ExecStart).
        let bin = Path::new(package).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        crate::support::host::write_executable(&bin.join("fh-lite"), "#!/bin/sh\nexit 0\n");
        let path = str_field(case, "PATH");
        for dir in path
            .split(':')
            .filter(|d| d.starts_with(stub.to_str().unwrap()))
        {
            std::fs::create_dir_all(dir).unwrap();
        }
        let tools_curl = stub.join("tools/curl/bin/curl");
        if !tools_curl.exists() {
            std::fs::create_dir_all(tools_curl.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&curl, &tools_curl).unwrap();
        }

        let service = str_field(case, "service");
        let exec = service
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{what}: no ExecStart in\n{service}"));
        let words = exec_words(exec).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(words[0], format!("{package}/bin/fh-lite"), "{what}");
        let at = words.iter().position(|w| w == "--health-check");
        let given = at.and_then(|i| words.get(i + 1));
        assert_eq!(
            given.map(String::as_str),
            Some(health),
            "{what}: the health check fh-lite gets"
        );
        // The module's list of mirrors, in order, and the rate cap.
        let mirrors: Vec<&str> = (words.windows(2))
            .filter(|w| w[0] == "--mirror")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(
            mirrors,
            ["http://lan-box:8080", "file:///srv/fh-mirror"],
            "{what}"
        );
        assert!(
            words
                .windows(2)
                .any(|w| w[0] == "--limit-rate" && w[1] == "2M"),
            "{what}"
        );

        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("fh-lite.service"), service).unwrap();
        std::fs::write(units.join("fh-lite.timer"), str_field(case, "timer")).unwrap();
        // Trial boots (reboot = "if-needed" with trial on): the boot-time
        // unit runs `fh-lite confirm-boot`, and --trial --reboot reach apply.
        let confirm = str_field(case, "confirmBoot");
        let confirm_exec = confirm
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{what}: no ExecStart in\n{confirm}"));
        let cwords = exec_words(confirm_exec).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            cwords[1..],
            [
                "confirm-boot",
                "--reboot",
                "if-needed",
                "--firmware-dir",
                "/boot/firmware"
            ],
            "{what}: {confirm}"
        );
        assert!(
            words
                .windows(2)
                .any(|w| w == ["--firmware-dir", "/boot/firmware"]),
            "{what}: {exec}"
        );
        assert!(
            confirm.contains("After=local-fs.target multi-user.target\n"),
            "{confirm}"
        );
        assert!(words.iter().any(|w| w == "--trial"), "{what}: {exec}");
        assert!(
            words.windows(2).any(|w| w == ["--reboot", "if-needed"]),
            "{what}: {exec}"
        );
        std::fs::write(units.join("fh-lite-confirm-boot.service"), confirm).unwrap();
        let v = Command::new("timeout")
            .args(["60", "systemd-analyze", "verify"])
            .arg(units.join("fh-lite.service"))
            .arg(units.join("fh-lite.timer"))
            .arg(units.join("fh-lite-confirm-boot.service"))
            .output()
            .unwrap();
        let verdict =
            String::from_utf8_lossy(&v.stderr).into_owned() + &String::from_utf8_lossy(&v.stdout);
        assert!(
            v.status.success() && !verdict.contains("fh-lite"),
            "{what}: systemd-analyze verify refuses the units:\n{verdict}\n--- fh-lite.service\n{service}"
        );

        // The module's own example health check runs: its command is on
        // the PATH the service (and so the health check) gets.
        let example = str_field(case, "example");
        assert!(example.starts_with("curl "), "{what}: example {example}");
        let r = Command::new("timeout")
            .args(["20", "env", "-i"])
            .arg(format!("PATH={path}"))
            .args(["/bin/sh", "-c", example])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(
            r.status.code() != Some(127) && !stderr.contains("not found"),
            "{what}: the example health check '{example}' with PATH={path}: exit {:?}, {stderr}",
            r.status.code()
        );
    }
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
