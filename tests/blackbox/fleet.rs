//! Fleet options through `fh-lite apply` against the FlakeHub stand-in:
//! the Prometheus metrics file after a success, a failure rolled back, a
//! no-op and a reboot-needed run (and never half-written); the reboot
//! policy with a fake `systemctl` on PATH and a fake clock
//! (`FH_LITE_TEST_NOW`, `TZ`); `--window`; `--rollout-spread`. The spread
//! of delays over 1,000 machine ids is a unit test of the delay function
//! (src/fleet/schedule.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::deploy::{no_secret, Deploy};
use crate::support::fixtures::fixtures;
use crate::support::util::{fh_lite, output, Run};
use crate::support::{is_root, require};

/// 2027-01-15 08:00:00 UTC.
const EIGHT_UTC: u64 = 1_800_000_000;

fn can_chroot() -> bool {
    require("root to chroot", is_root())
}

fn path(fixture: &str) -> String {
    fixtures().get(fixture).path.clone()
}

/// Deployment: 0.1.1 = v1, 0.1.2 = exit 1 (rolled back), 0.1.3 = exit 100,
/// 0.1.4 = v2.
fn deploy() -> Deploy {
    Deploy::new(
        "zstd",
        &[
            ("0.1.1", "system-v1"),
            ("0.1.2", "system-exit1"),
            ("0.1.3", "system-exit100"),
            ("0.1.4", "system-v2"),
        ],
        "{}",
    )
}

/// `apply` with a fake clock at `now` (local time zone `tz`, POSIX form).
fn apply_at(d: &Deploy, req: &str, extra: &[&str], now: u64, tz: &str) -> Run {
    let mut c = d.command(req, extra);
    c.env("FH_LITE_TEST_NOW", now.to_string()).env("TZ", tz);
    no_secret(output(c))
}

/// Parse the Prometheus text format: every sample's metric has HELP and
/// TYPE lines before it, every name starts with `fh_lite_`; the result maps
/// `name{labels}` to its value.
fn parse_prom(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with('\n'), "complete lines only: {text:?}");
    let mut help = Vec::new();
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP name text");
            assert!(!doc.is_empty(), "{line}");
            help.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            typed.push(name.to_string());
        } else {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample: {line:?}"));
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("fh_lite_"), "{line}");
            assert!(help.iter().any(|h| h == name), "no HELP before {line}");
            assert!(typed.iter().any(|h| h == name), "no TYPE before {line}");
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "{line}"
                );
            }
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value of {line:?}"));
            assert!(
                samples.insert(series.to_string(), v).is_none(),
                "duplicate {line}"
            );
        }
    }
    samples
}

fn metrics(file: &Path) -> BTreeMap<String, f64> {
    parse_prom(&std::fs::read_to_string(file).unwrap())
}

fn info_key(d: &Deploy, req: &str, fixture: &str) -> String {
    format!(
        "fh_lite_deployed_info{{reference=\"{}\",store_path=\"{}\"}}",
        d.reference(req),
        path(fixture)
    )
}

#[test]
fn metrics_after_success_rollback_noop_and_reboot_needed() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let file = d.tmp.path().join("textfile/fh-lite.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mf = file.to_str().unwrap();

    // success
    let r = d.apply("=0.1.1", &["--metrics-file", mf]);
    assert_eq!(r.code, 0, "{r:?}");
    let m = metrics(&file);
    assert_eq!(m["fh_lite_last_exit_code"], 0.0, "{m:?}");
    assert_eq!(m["fh_lite_generation"], 1.0);
    assert_eq!(m["fh_lite_reboot_needed"], 0.0);
    assert_eq!(m["fh_lite_failed_paths"], 0.0);
    assert!(m["fh_lite_last_downloaded_bytes"] > 0.0, "{m:?}");
    assert!(m["fh_lite_last_duration_seconds"] > 0.0, "{m:?}");
    let first_ok = m["fh_lite_last_success_timestamp_seconds"];
    assert_eq!(first_ok, m["fh_lite_last_run_timestamp_seconds"]);
    assert_eq!(m[&info_key(&d, "=0.1.1", "system-v1")], 1.0, "{m:?}");
    assert!(
        !m.contains_key("fh_lite_token_expiry_timestamp_seconds"),
        "not a JWT: {m:?}"
    );

    // no-op: nothing downloaded, still a success
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = d.apply("=0.1.1", &["--metrics-file", mf]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("nothing to do"), "{r:?}");
    let m = metrics(&file);
    assert_eq!(m["fh_lite_last_exit_code"], 0.0);
    assert_eq!(m["fh_lite_last_downloaded_bytes"], 0.0, "{m:?}");
    let noop_ok = m["fh_lite_last_success_timestamp_seconds"];
    assert!(noop_ok > first_ok, "{m:?}");
    assert_eq!(m["fh_lite_generation"], 1.0);

    // failure with rollback: the last success stays
    let r = d.apply("=0.1.2", &["--metrics-file", mf]);
    assert_eq!(r.code, 32, "{r:?}");
    let m = metrics(&file);
    assert_eq!(m["fh_lite_last_exit_code"], 32.0);
    assert_eq!(m["fh_lite_failed_paths"], 1.0);
    assert_eq!(m["fh_lite_generation"], 1.0, "rolled back to 1: {m:?}");
    assert_eq!(m["fh_lite_last_success_timestamp_seconds"], noop_ok);
    assert!(m["fh_lite_last_run_timestamp_seconds"] >= noop_ok);
    assert!(m["fh_lite_last_downloaded_bytes"] > 0.0, "{m:?}");
    assert_eq!(m[&info_key(&d, "=0.1.1", "system-v1")], 1.0, "{m:?}");

    // reboot needed (switch-to-configuration exit 100)
    let r = d.apply("=0.1.3", &["--metrics-file", mf]);
    assert_eq!(r.code, 40, "{r:?}");
    let m = metrics(&file);
    assert_eq!(m["fh_lite_last_exit_code"], 40.0);
    assert_eq!(m["fh_lite_reboot_needed"], 1.0, "{m:?}");
    assert_eq!(m["fh_lite_generation"], 3.0, "{m:?}");
    assert_eq!(m[&info_key(&d, "=0.1.3", "system-exit100")], 1.0, "{m:?}");
    let st = d.fh(&["status"]);
    assert!(
        st.stdout
            .contains(&format!("reboot needed   {}", path("system-exit100"))),
        "{st:?}"
    );

    // Never half-written: a reader racing five runs always parses a
    // complete file; no temporary file is left behind.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, file) = (stop.clone(), file.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&file).unwrap();
                let m = parse_prom(&text);
                assert!(
                    m.contains_key("fh_lite_failed_paths"),
                    "cut short: {text:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..5 {
        assert_eq!(d.apply("=0.1.3", &["--metrics-file", mf, "-q"]).code, 0);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let left: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("fh-lite.prom")]);
}

/// A `systemctl` that only records its arguments, on PATH after a
/// directory anyone may write holding another `systemctl` (and fakes of
/// every other program), which must never run: [`no_writable_fakes_ran`].
fn fake_systemctl(d: &Deploy) -> (String, PathBuf) {
    let bin = d.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = d.tmp.path().join("systemctl.log");
    let script = bin.join("systemctl");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (evil, _) = crate::rootenv::writable_dir_of_fakes(d.tmp.path());
    let path = format!(
        "{}:{}:{}",
        evil.display(),
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, log)
}

/// None of the fakes in the writable PATH directory ran (fh-lite finds
/// what it runs as root on the sanitised PATH only).
fn no_writable_fakes_ran(d: &Deploy) {
    let log = d.tmp.path().join("evil.log");
    assert_eq!(std::fs::read_to_string(log).unwrap_or_default(), "");
}

fn systemctl_calls(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn reboot_only_when_needed_inside_the_window_never_under_root() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let (path_var, log) = fake_systemctl(&d);
    let reboot = ["--reboot", "if-needed", "--reboot-window", "10:00-11:00"];
    let with = |req: &str, now: u64| {
        let mut c = d.command(req, &reboot);
        c.env("PATH", &path_var)
            .env("FH_LITE_TEST_NOW", now.to_string())
            .env("TZ", "UTC0");
        no_secret(output(c))
    };
    // Not needed (v1), inside the window: no reboot.
    let r = with("=0.1.1", EIGHT_UTC + 2 * 3600 + 60);
    assert_eq!(r.code, 0, "{r:?}");
    // Needed (exit 100), inside the window, but under --root: never.
    let r = with("=0.1.3", EIGHT_UTC + 2 * 3600 + 60);
    assert_eq!(r.code, 40, "{r:?}");
    assert!(
        r.stderr
            .contains("needs a reboot; never rebooting under --root"),
        "{r:?}"
    );
    assert_eq!(systemctl_calls(&log), "");

    // The same machine's state, seen from its own running system (no
    // --root; the reference does not resolve, so nothing else happens and
    // the host's /nix is never touched).
    let state = d.root.join("var/lib/fh-lite");
    let live = |state: &Path, now: u64, tz: &str| {
        let url = d.hub.url();
        let profile = d.tmp.path().join("live-profile/system");
        let reference = d.reference("=0.1.99");
        let mut c = fh_lite(&["apply", "nixos", &reference]);
        c.args(reboot)
            .args([
                "--state-dir",
                state.to_str().unwrap(),
                "--profile",
                profile.to_str().unwrap(),
            ])
            .args([
                "--api-addr",
                &url,
                "--cache-addr",
                &url,
                "--allow-insecure-http",
            ])
            .args(["--token-file", d.token_file.to_str().unwrap()])
            .env("PATH", &path_var)
            .env("FH_LITE_TEST_NOW", now.to_string())
            .env("TZ", tz);
        no_secret(output(c))
    };
    // No reboot recorded: inside the window, no reboot.
    let empty = d.tmp.path().join("empty-state");
    let r = live(&empty, EIGHT_UTC + 2 * 3600 + 60, "UTC0");
    assert_eq!(r.code, 12, "no such release: {r:?}");
    assert_eq!(systemctl_calls(&log), "", "not needed");
    // Needed, outside the window (08:00): left for later.
    let r = live(&state, EIGHT_UTC, "UTC0");
    assert_eq!(r.code, 12, "no such release: {r:?}");
    assert!(
        r.stderr.contains(&format!(
            "{} needs a reboot; a run inside the reboot window 10:00-11:00 (local time) reboots",
            path("system-exit100")
        )),
        "{r:?}"
    );
    assert_eq!(systemctl_calls(&log), "", "outside the window");
    // 07:00 UTC is 10:00 local time in UTC+3: inside; it reboots before
    // resolving anything.
    let r = live(&state, EIGHT_UTC - 3600, "XXX-3");
    no_writable_fakes_ran(&d);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(systemctl_calls(&log), "--no-block reboot\n");
    assert!(
        r.stderr
            .contains(&format!("rebooting into {}", path("system-exit100"))),
        "{r:?}"
    );
    // The journal carries the confirmation: the next run resumes it with
    // the health check (crash recovery); status names it as a reboot, not
    // as a kill.
    let st = d.fh(&["status"]);
    assert!(
        st.stdout.contains(&format!(
            "pending         {} (switch, rebooted into it); the next run confirms it with the health check",
            path("system-exit100")
        )),
        "{st:?}"
    );
    assert!(!st.stdout.contains("reboot needed"), "{st:?}");
}

#[test]
fn a_new_kernel_needs_a_reboot() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    std::fs::create_dir_all(d.root.join("run")).unwrap();
    std::os::unix::fs::symlink(path("system-v1"), d.root.join("run/booted-system")).unwrap();
    let r = d.apply("=0.1.1", &[]);
    assert_eq!(r.code, 0, "same kernel as the booted system: {r:?}");
    let r = d.apply("=0.1.4", &[]);
    assert_eq!(r.code, 40, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: {} has a new kernel, initrd or modules: reboot to take full effect\n",
            path("system-v2")
        )),
        "{r:?}"
    );
    let st = d.fh(&["status", "--json"]);
    assert!(
        st.stdout
            .contains(&format!("\"reboot_needed\":\"{}\"", path("system-v2"))),
        "{st:?}"
    );
}

fn profile_exists(d: &Deploy) -> bool {
    d.root
        .join("nix/var/nix/profiles/system")
        .symlink_metadata()
        .is_ok()
}

#[test]
fn window_outside_stages_inside_activates() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let v1 = path("system-v1");
    // 08:00 UTC is outside 10:00-11:00 (UTC) but inside it in UTC+2:30.
    let r = apply_at(
        &d,
        "=0.1.1",
        &["--window", "10:00-11:00"],
        EIGHT_UTC,
        "UTC0",
    );
    assert_eq!(r.code, 43, "{r:?}");
    assert!(
        r.stderr.contains(&format!("outside the activation window 10:00-11:00 (local time): {v1} activates in the window (opens at 2027-01-15 10:00:00 UTC); staged and pinned by ")),
        "{r:?}"
    );
    assert!(!profile_exists(&d), "nothing activated");
    assert!(!d.root.join("var/log/fh-lite-test/switch.log").exists());
    let base = v1.trim_start_matches("/nix/store/");
    assert!(
        d.store_entries().iter().any(|e| e == base),
        "staged: {:?}",
        d.store_entries()
    );
    let fetched = std::fs::read_link(d.root.join("var/lib/fh-lite/fetched")).unwrap();
    assert_eq!(fetched, Path::new(&v1));
    let st = d.fh(&["status"]);
    assert!(st.stdout.contains(": deferred (exit 43)"), "{st:?}");
    // A wrapping window (23:00-08:30) holds 08:00: it activates, and
    // downloads nothing more.
    let r = apply_at(
        &d,
        "=0.1.1",
        &["--window", "23:00-08:30"],
        EIGHT_UTC,
        "UTC0",
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(profile_exists(&d));
    assert!(
        r.stderr.contains(&format!("activated {v1} (switch)")),
        "{r:?}"
    );
    // Local time: 08:00 UTC is 10:30 in UTC+2:30.
    let r = apply_at(
        &d,
        "=0.1.4",
        &["--window", "10:00-11:00"],
        EIGHT_UTC,
        "XXX-2:30",
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("activated {} (switch)", path("system-v2"))),
        "{r:?}"
    );
    // status: the remembered exact version per project and attribute.
    let st = d.fh(&["status"]);
    assert!(
        st.stdout
            .contains("\nversions        org/demo#nixosConfigurations.pi = 0.1.4\n"),
        "{st:?}"
    );
    let st = d.fh(&["status", "--json"]);
    assert!(
        st.stdout
            .contains("\"versions\":{\"org/demo#nixosConfigurations.pi\":\"0.1.4\"}"),
        "{st:?}"
    );
}

/// The time a deferred run says the path activates.
fn activates_at(r: &Run) -> String {
    let rest = r
        .stderr
        .split_once("activates on this device at ")
        .unwrap_or_else(|| panic!("{r:?}"))
        .1;
    rest.split(" (").next().unwrap().to_string()
}

/// `fh-lite status --json`'s rollout entry: (first_seen, activate_at).
fn scheduled(d: &Deploy) -> (u64, u64) {
    let st = d.fh(&["status", "--json"]);
    let num = |key: &str| -> u64 {
        let rest = st
            .stdout
            .split_once(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key}: {st:?}"))
            .1;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (num("first_seen"), num("activate_at"))
}

#[test]
fn rollout_spread_holds_a_new_path_for_this_devices_delay() {
    if !can_chroot() {
        return;
    }
    let spread = ["--rollout-spread", "24h"];
    let device = |id: &str| {
        let d = deploy();
        std::fs::create_dir_all(d.root.join("etc")).unwrap();
        std::fs::write(d.root.join("etc/machine-id"), format!("{id}\n")).unwrap();
        d
    };
    let d = device("0123456789abcdef0123456789abcdef");
    let r = apply_at(&d, "=0.1.1", &spread, EIGHT_UTC, "UTC0");
    assert_eq!(r.code, 43, "{r:?}");
    assert!(!profile_exists(&d));
    let (first, at) = scheduled(&d);
    assert_eq!(first, EIGHT_UTC);
    assert!((EIGHT_UTC..EIGHT_UTC + 86_400).contains(&at), "{at}");
    let said = activates_at(&r);
    let st = d.fh(&["status"]);
    assert!(
        st.stdout
            .contains(&format!("rollout         {} (", path("system-v1"))),
        "{st:?}"
    );
    assert!(
        st.stdout.contains(&format!("activates at {said} (")),
        "{st:?}"
    );
    // Later runs keep the first-seen time and the delay.
    let r = apply_at(&d, "=0.1.1", &spread, EIGHT_UTC + 600, "UTC0");
    if at > EIGHT_UTC + 600 {
        assert_eq!(r.code, 43, "{r:?}");
        assert_eq!(activates_at(&r), said);
    }
    assert_eq!(scheduled(&d), (first, at));
    if at > EIGHT_UTC {
        let r = apply_at(&d, "=0.1.1", &spread, at - 1, "UTC0");
        assert_eq!(r.code, 43, "one second early: {r:?}");
    }
    let r = apply_at(&d, "=0.1.1", &spread, at, "UTC0");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(profile_exists(&d));
    // The same machine id elsewhere gets the same delay; another one
    // (almost surely) not.
    let twin = device("0123456789abcdef0123456789abcdef");
    assert_eq!(
        apply_at(&twin, "=0.1.1", &spread, EIGHT_UTC, "UTC0").code,
        if at > EIGHT_UTC { 43 } else { 0 }
    );
    assert_eq!(scheduled(&twin), (first, at));
    let other = device("fedcba9876543210fedcba9876543210");
    apply_at(&other, "=0.1.1", &spread, EIGHT_UTC, "UTC0");
    assert_ne!(scheduled(&other).1, at);
}

/// A run under a wrong clock (here the year 2100) records a rollout time
/// far ahead; the next run with the right clock recomputes it from now,
/// says so, and activates at this device's delay, not in 2100.
#[test]
fn a_rollout_time_recorded_under_a_wrong_clock_is_recomputed() {
    if !can_chroot() {
        return;
    }
    let spread = ["--rollout-spread", "24h"];
    let d = deploy();
    std::fs::create_dir_all(d.root.join("etc")).unwrap();
    std::fs::write(
        d.root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let y2100 = 4_102_444_800;
    let r = apply_at(&d, "=0.1.1", &spread, y2100, "UTC0");
    assert_eq!(r.code, 43, "{r:?}");
    let (first, _) = scheduled(&d);
    assert_eq!(first, y2100);
    let r = apply_at(&d, "=0.1.1", &spread, EIGHT_UTC, "UTC0");
    assert!(
        r.stderr.contains("beyond now plus the 24h00m spread")
            && r.stderr.contains("recomputed from now"),
        "{r:?}"
    );
    let (first, at) = scheduled(&d);
    assert_eq!(first, EIGHT_UTC, "first seen not recomputed");
    assert!((EIGHT_UTC..EIGHT_UTC + 86_400).contains(&at), "{at}");
    let r = apply_at(&d, "=0.1.1", &spread, at, "UTC0");
    assert_eq!(r.code, 0, "activates at its delay after the fix: {r:?}");
    assert!(profile_exists(&d));
}
