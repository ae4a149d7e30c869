//! Activation end to end through `fh-lite apply` against the FlakeHub
//! stand-in, as root (like CI): fake NixOS systems (tests/fixtures) whose
//! `bin/switch-to-configuration` records each call in the image root
//! (DIR/var/log/fh-lite-test/switch.log, because it runs chrooted), every
//! exit code and what fh-lite makes of it, rollback to the exact previous
//! generation, health checks, the failed-path list, the no-op run, the
//! lock, nix-darwin, Home Manager's refusal of --root, `fh-lite rollback`.
//! Profiles are judged against what `nix-env --set` makes on the same path.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::deploy::{nix, nix_isolated, no_secret, ok, Deploy};
use crate::support::fixtures::fixtures;
use crate::support::{is_root, require};

const PROFILES: &str = "nix/var/nix/profiles";

/// Chrooting needs root: a recorded skip without it (`support::require`).
fn can_chroot() -> bool {
    require("root to chroot", is_root())
}

fn path(fixture: &str) -> String {
    fixtures().get(fixture).path.clone()
}

fn read_link(p: &Path) -> String {
    std::fs::read_link(p)
        .unwrap_or_else(|e| panic!("readlink {}: {e}", p.display()))
        .to_string_lossy()
        .into_owned()
}

/// `(name, target)` of every symlink in `dir`, sorted; `.lock` files and
/// anything that is not a symlink are left out.
fn links(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_symlink())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                read_link(&e.path()),
            )
        })
        .collect();
    v.sort();
    v
}

/// Every entry name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// One line of the fixtures' activation log (tests/fixtures/README.md).
#[derive(Debug)]
struct Call {
    line: String,
}

impl Call {
    fn field(&self, key: &str) -> &str {
        let rest = self
            .line
            .split_once(&format!(" {key}="))
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.line))
            .1;
        if key == "args" {
            rest
        } else {
            rest.split(' ').next().unwrap_or("")
        }
    }

    /// "VARIANT ARGV0 ARGS": which script was run, through which link, how.
    fn summary(&self) -> String {
        format!(
            "{} {} {}",
            self.field("variant"),
            self.field("argv0"),
            self.field("args")
        )
    }
}

/// The calls recorded in `DIR/var/log/fh-lite-test/<log>`. Each ran
/// chrooted (cwd `/`) as root.
fn calls(root: &Path, log: &str) -> Vec<Call> {
    let file = root.join("var/log/fh-lite-test").join(log);
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let calls: Vec<Call> = text
        .lines()
        .map(|l| Call {
            line: l.to_string(),
        })
        .collect();
    for c in &calls {
        assert!(
            c.line.starts_with("fh-lite-test-activation "),
            "{:?}",
            c.line
        );
        assert_eq!(c.field("cwd"), "/", "chrooted: {:?}", c.line);
        assert_eq!(c.field("uid"), "0", "{:?}", c.line);
    }
    calls
}

/// The switch-to-configuration calls, none with NIXOS_INSTALL_BOOTLOADER.
fn switch_log(d: &Deploy) -> Vec<String> {
    calls(&d.root, "switch.log")
        .iter()
        .map(|c| {
            assert_eq!(c.field("bootloader"), "<unset>", "{:?}", c.line);
            c.summary()
        })
        .collect()
}

/// How generation N's switch-to-configuration is called with `args`.
fn gen_call(variant: &str, n: u64, args: &str) -> String {
    format!("{variant} /{PROFILES}/system-{n}-link/bin/switch-to-configuration {args}")
}

/// A deployment whose cache serves 0.1.1 = system-v1 and 0.1.2 = `second`.
fn v1_and(second: &str) -> Deploy {
    Deploy::new("zstd", &[("0.1.1", "system-v1"), ("0.1.2", second)], "{}")
}

fn profile(d: &Deploy) -> String {
    read_link(&d.root.join(PROFILES).join("system"))
}

/// `/bin/sh` and `/bin/sleep` in the image root: busybox from the
/// fixtures' closure (a NixOS root has /bin/sh once activated; the health
/// check runs `/bin/sh -c CMD` chrooted).
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
    for name in ["sh", "sleep"] {
        std::os::unix::fs::symlink(format!("{bb}/bin/busybox"), bin.join(name)).unwrap();
    }
}

/// `nix-hash`'s nix32 of sha1(`text`): the name Nix gives the indirect GC
/// root of the link `text`.
fn nix_gcroot_name(tmp: &Path, text: &str) -> String {
    let file = tmp.join("gcroot-name-input");
    std::fs::write(&file, text).unwrap();
    let mut c = nix_isolated(tmp, "nix-hash");
    c.args(["--type", "sha1", "--flat", "--base32"]).arg(&file);
    ok(c, "nix-hash").trim().to_string()
}

#[test]
fn switch_v1_then_v2_makes_generations_like_nix_env() {
    if !can_chroot() {
        return;
    }
    let (v1, v2) = (path("system-v1"), path("system-v2"));
    let d = v1_and("system-v2");
    let r = d.apply("=0.1.1", &["switch"]);
    assert_eq!(r.code, 0, "{r:?}");
    // The script's own output goes to stderr; stdout stays empty.
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: profile {}/{PROFILES}/system is now generation 1 ({v1})\n\
             fh-lite-test: nixos v1 called with: switch\n\
             fh-lite-test: nixos v1 exits with 0\n\
             fh-lite: activated {v1} (switch)\n",
            d.root.display()
        )),
        "{r:?}"
    );
    assert_eq!(r.stdout, "", "{r:?}");
    let r = d.apply("=0.1.2", &["switch"]);
    assert_eq!(r.code, 0, "{r:?}");

    let dir = d.root.join(PROFILES);
    assert_eq!(
        links(&dir),
        [
            ("system".to_string(), "system-2-link".to_string()),
            ("system-1-link".to_string(), v1.clone()),
            ("system-2-link".to_string(), v2.clone()),
        ]
    );
    assert_eq!(names(&dir), ["system", "system-1-link", "system-2-link"]);
    // One indirect GC root per generation, named and pointing as the
    // booted system sees it.
    let auto = d.root.join("nix/var/nix/gcroots/auto");
    let mut want_roots: Vec<(String, String)> = (1..=2)
        .map(|n| {
            let link = format!("/{PROFILES}/system-{n}-link");
            (nix_gcroot_name(d.tmp.path(), &link), link)
        })
        .collect();
    want_roots.sort();
    assert_eq!(links(&auto), want_roots);
    // Each generation's script ran with `switch`, through its link, chrooted.
    let calls = calls(&d.root, "switch.log");
    assert_eq!(
        calls.iter().map(Call::summary).collect::<Vec<_>>(),
        [gen_call("v1", 1, "switch"), gen_call("v2", 2, "switch")]
    );
    assert_eq!(calls[0].field("out"), v1);
    assert_eq!(calls[1].field("out"), v2);
    // The activation script's environment carries no secret.
    for n in 1..=2 {
        let env = std::fs::read_to_string(
            d.root
                .join(format!("var/log/fh-lite-test/switch.log.env.{n}")),
        )
        .unwrap();
        assert!(!env.contains("fhdev_") && !env.contains("eyJ"), "{env}");
    }

    // Real Nix on the same store makes the same profile links.
    let reg = std::fs::File::open(d.root.join("nix-path-registration")).unwrap();
    let mut load = nix(d.tmp.path(), "nix-store", &d.root);
    load.arg("--load-db").stdin(reg);
    ok(load, "nix-store --load-db");
    let nix_dir = d.tmp.path().join("nix-env-profiles");
    std::fs::create_dir_all(&nix_dir).unwrap();
    let nix_prof = nix_dir.join("system");
    for p in [&v1, &v2] {
        let mut set = nix(d.tmp.path(), "nix-env", &d.root);
        set.arg("-p").arg(&nix_prof).args(["--set", p]);
        ok(set, "nix-env --set");
    }
    assert_eq!(links(&nix_dir), links(&dir), "fh-lite vs nix-env --set");
    assert!(
        !Path::new("/nix").exists(),
        "something created the host /nix"
    );
}

#[test]
fn rollback_command_goes_back_to_generation_1_and_runs_it() {
    if !can_chroot() {
        return;
    }
    let d = Deploy::new(
        "zstd",
        &[
            ("0.1.1", "system-v1"),
            ("0.1.2", "system-v2"),
            ("0.1.3", "system-exit1"),
        ],
        "{}",
    );
    assert_eq!(d.apply("=0.1.1", &["switch", "-q"]).code, 0);
    assert_eq!(d.apply("=0.1.2", &["switch", "-q"]).code, 0);
    let r = d.fh(&["rollback"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: profile {}/{PROFILES}/system: generation 2 -> 1 ({})\n",
            d.root.display(),
            path("system-v1")
        )),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(
        switch_log(&d),
        [
            gen_call("v1", 1, "switch"),
            gen_call("v2", 2, "switch"),
            gen_call("v1", 1, "switch"),
        ]
    );
    // Generation 2 stays for a roll forward.
    assert_eq!(
        read_link(&d.root.join(PROFILES).join("system-2-link")),
        path("system-v2")
    );
    // A failure now rolls back to the generation that was current (1),
    // not to the one below the new generation 3.
    let r = d.apply("=0.1.3", &["switch", "-q"]);
    assert_eq!(r.code, 32, "{r:?}");
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(
        switch_log(&d)[3..],
        [gen_call("exit1", 3, "switch"), gen_call("v1", 1, "switch")]
    );
}

/// `boot --root DIR` without --install-bootloader moves only the profile,
/// and says so (even with -q): the image's boot loader does not know the
/// generation, and the line says what to run. With --install-bootloader
/// the script runs chrooted as `nixos-install` runs it: /dev, /proc and
/// /sys mounted in DIR and NIXOS_INSTALL_BOOTLOADER=1; the mounts are
/// gone afterwards, on this machine and in DIR.
#[test]
fn boot_under_root_runs_the_script_only_to_install_the_bootloader() {
    if !can_chroot() {
        return;
    }
    let d = v1_and("system-v2");
    let r = d.apply("=0.1.1", &["boot", "-q"]);
    assert_eq!(r.code, 0, "{r:?}");
    let root = d.root.display();
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: warning: --root {root}: the profile's default is now generation 1, but the boot \
loader was not updated (nothing was run in {root}), so the image still boots what its boot loader \
knew; to update it, run this again as root with --install-bootloader, or run: nixos-enter --root \
{root} -c 'NIXOS_INSTALL_BOOTLOADER=1 /{PROFILES}/system/bin/switch-to-configuration boot'\n"
        ),
        "{r:?}"
    );
    assert!(calls(&d.root, "switch.log").is_empty());
    let r = d.apply("=0.1.2", &["boot", "--install-bootloader"]);
    assert_eq!(r.code, 0, "{r:?}");
    let calls = calls(&d.root, "switch.log");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].summary(), gen_call("v2", 2, "boot"));
    assert_eq!(calls[0].field("bootloader"), "1");
    assert_eq!(calls[0].field("mounts"), "dev+proc+sys", "{calls:?}");
    assert_eq!(profile(&d), "system-2-link");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!(" {root}/")),
        "mounts left under {root}:\n{mounts}"
    );
    for dir in ["dev", "proc", "sys"] {
        let entries = std::fs::read_dir(d.root.join(dir)).unwrap().count();
        assert_eq!(entries, 0, "{root}/{dir} is not empty after the run");
    }
}

/// Each exit code of switch-to-configuration after generation 1 (v1), and
/// the options that change what it means.
#[test]
fn every_switch_exit_code_maps_to_an_fh_lite_exit_code() {
    if !can_chroot() {
        return;
    }
    // (name, fixture, extra options, fh-lite exit, rolled back, stderr end)
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], i32, bool, &'a str);
    let cases: &[Case] = &[
        ("0", "system-v2", &[], 0, false, "activated {p} (switch)"),
        (
            "100 reboot needed",
            "system-exit100",
            &[],
            40,
            false,
            "{s} exited 100: reboot for {p} to take full effect",
        ),
        ("1 rolls back", "system-exit1", &[], 32, true, "{s} exited 1 (usage error, failed pre-switch check or bootloader installation); rolled back to generation 1 ({v1})"),
        ("2 rolls back", "system-exit2", &[], 32, true, "{s} exited 2 (the activation script failed); rolled back to generation 1 ({v1})"),
        ("4 rolls back", "system-exit4", &[], 32, true, "{s} exited 4 (some units failed to stop, start, reload or restart); rolled back to generation 1 ({v1})"),
        ("1 --no-rollback", "system-exit1", &["--no-rollback"], 30, false, "{s} exited 1 (usage error, failed pre-switch check or bootloader installation); kept (--no-rollback)"),
        ("2 --no-rollback", "system-exit2", &["--no-rollback"], 30, false, "{s} exited 2 (the activation script failed); kept (--no-rollback)"),
        ("4 --no-rollback", "system-exit4", &["--no-rollback"], 31, false, "{s} exited 4 (some units failed to stop, start, reload or restart); kept (--no-rollback)"),
        ("4 not in --rollback-on 1", "system-exit4", &["--rollback-on", "1"], 31, false, "{s} exited 4 (some units failed to stop, start, reload or restart); kept (not in --rollback-on)"),
    ];
    let v1 = path("system-v1");
    for (name, fixture, extra, exit, rolled_back, end) in cases {
        let p = path(fixture);
        let variant = fixture.trim_start_matches("system-");
        let d = v1_and(fixture);
        assert_eq!(d.apply("=0.1.1", &["switch", "-q"]).code, 0, "{name}");
        let mut args = vec!["switch"];
        args.extend_from_slice(extra);
        let r = d.apply("=0.1.2", &args);
        assert_eq!(r.code, *exit, "{name}: {r:?}");
        let s = format!("/{PROFILES}/system-2-link/bin/switch-to-configuration switch");
        let end = end
            .replace("{p}", &p)
            .replace("{v1}", &v1)
            .replace("{s}", &s);
        assert!(
            r.stderr.ends_with(&format!("fh-lite: {end}\n")),
            "{name}: wanted to end with {end:?}: {r:?}"
        );
        // The generation was made either way; the profile points back at
        // 1 only after a rollback, whose v1 script ran `switch` again.
        assert_eq!(
            read_link(&d.root.join(PROFILES).join("system-2-link")),
            p,
            "{name}"
        );
        let mut want = vec![gen_call("v1", 1, "switch"), gen_call(variant, 2, "switch")];
        if *rolled_back {
            assert_eq!(profile(&d), "system-1-link", "{name}");
            want.push(gen_call("v1", 1, "switch"));
        } else {
            assert_eq!(profile(&d), "system-2-link", "{name}");
        }
        assert_eq!(switch_log(&d), want, "{name}");
        // status: the last attempt carries the exit code.
        let st = d.fh(&["status"]);
        assert!(
            st.stdout.contains(&format!(" -> {p}, generation 2: ")),
            "{name}: {st:?}"
        );
        assert!(
            st.stdout.contains(&format!(" (exit {exit}), ")),
            "{name}: {st:?}"
        );
    }
}

/// A health check under `--root` whose root has no `/bin/sh` is refused
/// before anything is fetched or activated, naming the missing shell; the
/// release is not marked failed.
#[test]
fn health_check_without_a_shell_in_the_root_is_refused_first() {
    if !can_chroot() {
        return;
    }
    let d = v1_and("system-v2");
    assert_eq!(d.apply("=0.1.1", &["switch", "-q"]).code, 0);
    let before = profile(&d);
    let nars = d.hub.requests_to("/nar/").len();
    let r = d.apply("=0.1.2", &["switch", "--health-check", "exit 0"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "but {}/bin/sh is missing (or not an executable file); nothing was done. Drop \
             --health-check, or give the root a /bin/sh first (NixOS activation creates it: \
             apply once without --health-check)\n",
            d.root.display()
        )),
        "{r:?}"
    );
    assert_eq!(profile(&d), before, "nothing activated");
    assert_eq!(d.hub.requests_to("/nar/").len(), nars, "nothing fetched");
    // Not remembered as failed: with a shell, the same release applies.
    add_shell(&d);
    let r = d.apply("=0.1.2", &["switch", "--health-check", "exit 0"]);
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn failing_health_check_rolls_back() {
    if !can_chroot() {
        return;
    }
    let v1 = path("system-v1");
    let back = format!("rolled back to generation 1 ({v1})");
    // (name, extra options, stderr end, exit, at most this long)
    let cases: &[(&str, &[&str], String, i32, u64)] = &[
        (
            "exit 3",
            &["--health-check", "exit 3"],
            format!("health check 'exit 3' exited 3; {back}"),
            32,
            30,
        ),
        (
            "timeout",
            &["--health-check", "sleep 30", "--health-timeout", "1"],
            format!("health check 'sleep 30' did not finish within 1 s (killed); {back}"),
            32,
            15,
        ),
        (
            "--no-rollback",
            &["--health-check", "exit 3", "--no-rollback"],
            "health check 'exit 3' exited 3; kept (--no-rollback)".to_string(),
            30,
            30,
        ),
        (
            "passing",
            &["--health-check", "test -L /nix/var/nix/profiles/system"],
            format!("activated {} (switch)", path("system-v2")),
            0,
            30,
        ),
    ];
    for (name, extra, end, exit, secs) in cases {
        let d = v1_and("system-v2");
        add_shell(&d);
        assert_eq!(d.apply("=0.1.1", &["switch", "-q"]).code, 0, "{name}");
        let mut args = vec!["switch"];
        args.extend_from_slice(extra);
        let start = Instant::now();
        let r = d.apply("=0.1.2", &args);
        let took = start.elapsed();
        assert_eq!(r.code, *exit, "{name}: {r:?}");
        assert!(
            took < Duration::from_secs(*secs),
            "{name}: took {took:?}: {r:?}"
        );
        assert!(
            r.stderr.ends_with(&format!("fh-lite: {end}\n")),
            "{name}: {r:?}"
        );
        let mut want = vec![gen_call("v1", 1, "switch"), gen_call("v2", 2, "switch")];
        if *exit == 32 {
            assert_eq!(profile(&d), "system-1-link", "{name}");
            want.push(gen_call("v1", 1, "switch"));
        } else {
            assert_eq!(profile(&d), "system-2-link", "{name}");
        }
        assert_eq!(switch_log(&d), want, "{name}");
    }
}

#[test]
fn a_failed_path_is_skipped_until_retry_failed() {
    if !can_chroot() {
        return;
    }
    let (v1, bad) = (path("system-v1"), path("system-exit2"));
    let d = v1_and("system-exit2");
    assert_eq!(d.apply("=0.1.1", &["switch", "-q"]).code, 0);
    assert_eq!(d.apply("=0.1.2", &["switch", "-q"]).code, 32);
    let log_before = switch_log(&d);
    assert_eq!(log_before.len(), 3, "{log_before:?}");
    let nars = d.hub.requests_to("/nar/").len();

    // Skipped: nothing fetched, nothing run, and the way out is named.
    let r = d.apply("=0.1.2", &["switch"]);
    assert_eq!(r.code, 34, "{r:?}");
    let reference = d.reference("=0.1.2");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: {bad} ({reference}) failed activation at "
        )),
        "{r:?}"
    );
    assert!(
        r.stderr.ends_with(
            " (rolled-back); skipped. Publish a fixed release, or run again with --retry-failed to try it anyway\n"
        ),
        "{r:?}"
    );
    assert_eq!(switch_log(&d), log_before);
    assert_eq!(d.hub.requests_to("/nar/").len(), nars);
    assert_eq!(profile(&d), "system-1-link");

    // status lists it, with the last attempt and the last success.
    let st = d.fh(&["status"]);
    assert_eq!(st.code, 0, "{st:?}");
    let line = |key: &str| -> String {
        st.stdout
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line: {st:?}"))
            .to_string()
    };
    assert!(
        line("failed paths").starts_with(&format!(
            "failed paths    {bad} ({reference}, rolled-back at "
        )),
        "{st:?}"
    );
    let attempt = line("last attempt");
    assert!(
        attempt.contains(&format!(
            ": {reference} -> {bad}, generation 2: rolled-back (exit 32), "
        )),
        "{st:?}"
    );
    assert!(
        line("last success").contains(&format!(
            ": {} -> {v1}, generation 1: success (exit 0), ",
            d.reference("=0.1.1")
        )),
        "{st:?}"
    );
    assert_eq!(line("generation"), format!("generation      1 -> {v1}"));

    // --retry-failed tries again (and it fails and rolls back again); the
    // highest generation already points at the path, so it is reused.
    let r = d.apply("=0.1.2", &["switch", "--retry-failed"]);
    assert_eq!(r.code, 32, "{r:?}");
    assert_eq!(
        names(&d.root.join(PROFILES)),
        ["system", "system-1-link", "system-2-link"]
    );
    let mut want = log_before.clone();
    want.push(gen_call("exit2", 2, "switch"));
    want.push(gen_call("v1", 1, "switch"));
    assert_eq!(switch_log(&d), want);
    assert_eq!(profile(&d), "system-1-link");
}

#[test]
fn no_op_run_makes_one_request_and_runs_nothing_until_force() {
    if !can_chroot() {
        return;
    }
    let v1 = path("system-v1");
    let d = Deploy::new("zstd", &[("0.1.1", "system-v1")], "{}");
    assert_eq!(d.apply("=0.1.1", &["switch", "-q"]).code, 0);
    // What the real script would have done: /run/current-system -> v1.
    std::fs::create_dir_all(d.root.join("run")).unwrap();
    std::os::unix::fs::symlink(&v1, d.root.join("run/current-system")).unwrap();
    let before = d.hub.requests().len();
    let r = d.apply("=0.1.1", &["switch"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: {v1} is already the current system; nothing to do (--force re-runs activation)\n"
        )),
        "{r:?}"
    );
    let after = d.hub.requests();
    assert_eq!(after.len(), before + 1, "one request: {after:?}");
    assert!(after[before].path.starts_with("/f/org/demo/"), "{after:?}");
    assert_eq!(switch_log(&d), [gen_call("v1", 1, "switch")]);

    // --force: activation runs again, on the same generation.
    let r = d.apply("=0.1.1", &["switch", "--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        switch_log(&d),
        [gen_call("v1", 1, "switch"), gen_call("v1", 1, "switch")]
    );
    assert_eq!(names(&d.root.join(PROFILES)), ["system", "system-1-link"]);

    // The profile is current but the running system is another: not a no-op.
    std::fs::remove_file(d.root.join("run/current-system")).unwrap();
    std::os::unix::fs::symlink(path("system-v2"), d.root.join("run/current-system")).unwrap();
    let r = d.apply("=0.1.1", &["switch"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(switch_log(&d).len(), 3);
}

#[test]
fn a_concurrent_apply_is_refused() {
    if !can_chroot() {
        return;
    }
    let d = v1_and("system-v2");
    // The first apply holds the lock while its script sleeps.
    // (The fixture reads its sleep from a file: activation gets a minimal
    // environment.)
    let sleep = d.root.join("var/log/fh-lite-test/switch.log.sleep");
    std::fs::create_dir_all(sleep.parent().unwrap()).unwrap();
    std::fs::write(&sleep, "3").unwrap();
    let mut slow = d.command("=0.1.1", &["switch", "-q"]);
    slow.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = crate::support::watchdog::spawn(slow);
    let start = Instant::now();
    while switch_log(&d).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first apply never ran its script"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let requests = d.hub.requests().len();
    let r = d.apply("=0.1.2", &["switch"]);
    let lock = d.root.join("var/lib/fh-lite/lock");
    assert_eq!(r.code, 41, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "fh-lite: another fh-lite apply or rollback is running: {} is locked by pid ",
            lock.display()
        )),
        "{r:?}"
    );
    assert_eq!(d.hub.requests().len(), requests, "refused before resolving");
    let first = output_of(child);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(switch_log(&d), [gen_call("v1", 1, "switch")]);
    assert_eq!(profile(&d), "system-1-link");
    std::fs::remove_file(&sleep).unwrap();
    // Released: the second apply now goes through.
    assert_eq!(d.apply("=0.1.2", &["switch", "-q"]).code, 0);
}

fn output_of(child: std::process::Child) -> crate::support::util::Run {
    let out = child.wait_with_output().unwrap();
    no_secret(crate::support::util::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[test]
fn nix_darwin_activates_its_generation_and_rolls_back() {
    if !can_chroot() {
        return;
    }
    let (ok_path, fail_path) = (path("darwin-ok"), path("darwin-fail"));
    let d = Deploy::for_kind(
        "nix-darwin",
        "zstd",
        &[("0.1.1", "darwin-ok"), ("0.1.2", "darwin-fail")],
        "{}",
    );
    let darwin_log = |d: &Deploy| -> Vec<String> {
        calls(&d.root, "darwin-rebuild.log")
            .iter()
            .map(|c| {
                assert_eq!(c.field("kind"), "darwin");
                c.summary()
            })
            .collect()
    };
    let call = |variant: &str, n: u64| {
        format!("{variant} /{PROFILES}/system-{n}-link/sw/bin/darwin-rebuild activate")
    };
    let r = d.apply("=0.1.1", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .ends_with(&format!("fh-lite: activated {ok_path} (switch)\n")),
        "{r:?}"
    );
    assert_eq!(
        links(&d.root.join(PROFILES)),
        [
            ("system".to_string(), "system-1-link".to_string()),
            ("system-1-link".to_string(), ok_path.clone()),
        ]
    );
    assert_eq!(darwin_log(&d), [call("ok", 1)]);

    let r = d.apply("=0.1.2", &[]);
    assert_eq!(r.code, 32, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: /{PROFILES}/system-2-link/sw/bin/darwin-rebuild activate exited 1; rolled back to generation 1 ({ok_path})\n"
        )),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(
        read_link(&d.root.join(PROFILES).join("system-2-link")),
        fail_path
    );
    assert_eq!(
        darwin_log(&d),
        [call("ok", 1), call("fail", 2), call("ok", 1)]
    );
    assert!(calls(&d.root, "switch.log").is_empty());

    // With nothing to roll back to, the failure is kept.
    let d = Deploy::for_kind("nix-darwin", "zstd", &[("0.1.2", "darwin-fail")], "{}");
    let r = d.apply("=0.1.2", &[]);
    assert_eq!(r.code, 30, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: /{PROFILES}/system-1-link/sw/bin/darwin-rebuild activate exited 1; nothing to roll back to: profile {}/{PROFILES}/system had no generation before this one; it stays at generation 1\n",
            d.root.display()
        )),
        "{r:?}"
    );
    assert_eq!(darwin_log(&d), [call("fail", 1)]);
}

/// Home Manager activates as the calling user in its home and refuses
/// `--root`. Its activation runs `<path>/activate` from the machine's own
/// /nix/store (through a live-system store backend), which these
/// tests must never create on the host, so only the refusals are tested.
#[test]
fn home_manager_refuses_root_before_fetching_and_needs_a_nix_store() {
    let d = Deploy::for_kind(
        "home-manager",
        "zstd",
        &[("0.1.1", "home-manager-ok")],
        "{}",
    );
    let root = d.root.to_str().unwrap().to_string();
    let r = d.apply("=0.1.1", &["--root", &root]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "fh-lite: apply home-manager: --root is not supported (Home Manager activates as the calling user in its home)\n"
    );
    assert!(d.hub.requests().is_empty(), "{:?}", d.hub.requests());
    assert!(names(&d.root).is_empty(), "{:?}", names(&d.root));

    // Without --root it needs this machine's Nix store; this host has
    // none, so store selection says what it tried (and never creates /nix).
    let home = d.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut c = d.command("=0.1.1", &[]);
    c.env("HOME", &home)
        .env("FH_LITE_TEST_LOG", home.join("activate.log"));
    let r = no_secret(crate::support::util::output(c));
    assert_eq!(r.code, 22, "{r:?}");
    assert!(
        r.stderr.ends_with(
            "fh-lite: no usable Nix store: nix-daemon at /nix/var/nix/daemon-socket/socket: cannot connect: \
             No such file or directory (os error 2) (is nix-daemon running? see --daemon-socket, --store); \
             local store: cannot write /nix/var/nix/db (not root, or no Nix store there) \
             (pick one with --store daemon|local|nix)\n"
        ),
        "{r:?}"
    );
    assert!(d.hub.requests_to("/nar/").is_empty());
    assert!(!home.join("activate.log").exists());
    assert!(
        !Path::new("/nix").exists(),
        "something created the host /nix"
    );
}

#[test]
fn test_action_runs_the_path_itself_and_rolls_back_with_test() {
    if !can_chroot() {
        return;
    }
    let (v1, bad) = (path("system-v1"), path("system-exit2"));
    let d = v1_and("system-exit2");
    assert_eq!(d.apply("=0.1.1", &["switch", "-q"]).code, 0);
    let r = d.apply("=0.1.2", &["test"]);
    assert_eq!(r.code, 32, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: {bad}/bin/switch-to-configuration test exited 2 (the activation script failed); rolled back to generation 1 ({v1})\n"
        )),
        "{r:?}"
    );
    // No generation for `test`; the previous one is activated with `test`.
    assert_eq!(names(&d.root.join(PROFILES)), ["system", "system-1-link"]);
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(
        switch_log(&d),
        [
            gen_call("v1", 1, "switch"),
            format!("exit2 {bad}/bin/switch-to-configuration test"),
            gen_call("v1", 1, "test"),
        ]
    );
}

/// A jail for Home Manager as a non-root user (nobody, 65534): a chroot in
/// a private mount namespace with the host's /usr, /etc, /dev and /proc,
/// its own /nix (owned by the user: a single-user store, `--store nix`)
/// and home. The host's /nix is never touched.
struct HomeJail {
    dir: std::path::PathBuf,
    exe: String,
    runner: Option<String>,
}

const JAIL_UID: &str = "65534";

impl HomeJail {
    fn new(d: &Deploy) -> HomeJail {
        let dir = d.tmp.path().join("jail");
        for sub in [
            "usr",
            "etc",
            "dev",
            "proc",
            "tmp",
            "nix/store",
            "nix/var/nix",
            "home/u",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for l in ["bin", "lib", "lib64", "sbin"] {
            std::os::unix::fs::symlink(format!("usr/{l}"), dir.join(l)).unwrap();
        }
        let (exe, runner) = crate::support::util::exe();
        std::fs::copy(&exe, dir.join("fh-lite")).unwrap();
        std::fs::copy(&d.token_file, dir.join("home/u/token")).unwrap();
        let own = |p: &str| {
            let st = std::process::Command::new("chown")
                .args(["-R", &format!("{JAIL_UID}:{JAIL_UID}")])
                .arg(dir.join(p))
                .status()
                .unwrap();
            assert!(st.success(), "chown {p}");
        };
        own("nix");
        own("home");
        std::fs::set_permissions(
            dir.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        HomeJail {
            dir,
            exe: "/fh-lite".into(),
            runner,
        }
    }

    /// `fh-lite ARGS` as the user inside the jail, under the time limit.
    fn fh(&self, args: &[String]) -> crate::support::util::Run {
        let j = self.dir.to_str().unwrap();
        let mut inner = vec![
            "chroot".to_string(),
            format!("--userspec={JAIL_UID}:{JAIL_UID}"),
            j.to_string(),
            "env".into(),
            "-i".into(),
            "PATH=/usr/bin:/bin".into(),
            "HOME=/home/u".into(),
            "USER=nobody".into(),
            "FH_LITE_TEST_LOG=/home/u/activate.log".into(),
        ];
        inner.extend(self.runner.iter().cloned());
        inner.push(self.exe.clone());
        inner.extend(args.iter().cloned());
        let script = format!(
            "set -e; cd {j}; for m in usr etc dev proc; do mount --bind /$m $m; done; exec \"$@\""
        );
        let mut c = std::process::Command::new("unshare");
        c.args(["-m", "sh", "-c", &script, "sh"]).args(&inner);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        no_secret(crate::support::util::output(c))
    }

    /// What the user's Home Manager profile points at.
    fn profile(&self) -> Option<String> {
        std::fs::read_link(
            self.dir
                .join("home/u/.local/state/nix/profiles/home-manager"),
        )
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
    }

    /// The fixtures' activation log: `variant` of each call.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("home/u/activate.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let v = l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("variant="))?;
                let uid = l.split_whitespace().find_map(|w| w.strip_prefix("uid="))?;
                Some(format!("{v} uid={uid}"))
            })
            .collect()
    }
}

/// Home Manager as a non-root user: a failed activation, and a failed
/// health check after a good one, run the previous generation's `activate`
/// (as Home Manager's own rollback does) and the profile goes back.
#[test]
fn home_manager_failures_roll_back_to_the_previous_generation() {
    if !require("root to build a jail for a non-root user", is_root()) {
        return;
    }
    let d = Deploy::for_kind(
        "home-manager",
        "zstd",
        &[
            ("0.1.1", "home-manager-ok"),
            ("0.1.2", "home-manager-fail"),
            ("0.1.3", "home-manager-ok2"),
        ],
        "{}",
    );
    let jail = HomeJail::new(&d);
    let (ok, fail) = (path("home-manager-ok"), path("home-manager-fail"));
    let args = |req: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec!["apply".into(), "home-manager".into(), d.reference(req)];
        a.extend(extra.iter().map(|s| s.to_string()));
        let online = d.online();
        let mut i = 0;
        while i < online.len() {
            // The token file, as the jail sees it.
            if online[i] == "--token-file" {
                a.extend(["--token-file".into(), "/home/u/token".into()]);
                i += 2;
                continue;
            }
            a.push(online[i].clone());
            i += 1;
        }
        a.extend(
            ["--store", "nix", "--state-dir", "/home/u/state"]
                .iter()
                .map(|s| s.to_string()),
        );
        a
    };
    let r = jail.fh(&args("=0.1.1", &[]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(jail.profile().as_deref(), Some(ok.as_str()), "{r:?}");

    // The activation fails (exit 1): the previous generation is activated.
    let r = jail.fh(&args("=0.1.2", &[]));
    assert_eq!(r.code, 32, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: {fail}/activate exited 1; rolled back to the previous Home Manager generation ({ok})\n"
        )),
        "{r:?}"
    );
    assert_eq!(jail.profile().as_deref(), Some(ok.as_str()), "{r:?}");
    assert_eq!(
        jail.calls(),
        ["ok uid=65534", "fail uid=65534", "ok uid=65534"],
        "{r:?}"
    );

    // A good activation whose health check fails: back again.
    let r = jail.fh(&args("=0.1.3", &["--health-check", "exit 3"]));
    assert_eq!(r.code, 32, "{r:?}");
    assert!(
        r.stderr
            .contains("rolled back to the previous Home Manager generation")
            && r.stderr.contains(&ok),
        "{r:?}"
    );
    assert_eq!(jail.profile().as_deref(), Some(ok.as_str()), "{r:?}");
    assert_eq!(
        jail.calls()[3..],
        ["ok2 uid=65534", "ok uid=65534"],
        "{r:?}"
    );
    assert!(
        !Path::new("/nix").exists(),
        "something created the host /nix"
    );
}
