//! The operator's decisions through the real binary against the FlakeHub
//! stand-in: a plain `fh-lite rollback` passes over generations whose
//! systems failed on this machine; a rollback is remembered (the next
//! apply of the release rolled away from is skipped, its reboot need is
//! dropped); `fh-lite hold` / `unhold`.

use std::path::Path;

use crate::support::deploy::Deploy;
use crate::support::fixtures::fixtures;
use crate::support::{is_root, require};

const PROFILES: &str = "nix/var/nix/profiles";

/// Chrooting needs root: a recorded skip without it (`support::require`).
pub fn can_chroot() -> bool {
    require("root to chroot", is_root())
}

pub fn path(fixture: &str) -> String {
    fixtures().get(fixture).path.clone()
}

pub fn profile(d: &Deploy) -> String {
    std::fs::read_link(d.root.join(PROFILES).join("system"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// "VARIANT ARGS" of every switch-to-configuration call, in order.
pub fn switches(root: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(root.join("var/log/fh-lite-test/switch.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let field = |k: &str| {
                let rest = l.split_once(&format!(" {k}=")).map_or("", |x| x.1);
                match k {
                    "args" => rest.to_string(),
                    _ => rest.split(' ').next().unwrap_or("").to_string(),
                }
            };
            format!("{} {}", field("variant"), field("args"))
        })
        .collect()
}

/// 0.1.1 = v1 (good), 0.1.2 = exit 1 (rolled back), 0.1.3 = exit 100
/// (reboot needed), 0.1.4 = v2 (good).
pub fn deploy() -> Deploy {
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

/// Generation 1 good, 2 failed and rolled back (its link stays), 3 needs a
/// reboot.
pub fn good_failed_reboot(d: &Deploy) {
    assert_eq!(d.apply("=0.1.1", &["-q"]).code, 0);
    let r = d.apply("=0.1.2", &["-q"]);
    assert_eq!(r.code, 32, "{r:?}");
    let r = d.apply("=0.1.3", &["-q"]);
    assert_eq!(r.code, 40, "{r:?}");
    assert_eq!(profile(d), "system-3-link");
    assert!(d
        .root
        .join(PROFILES)
        .join("system-2-link")
        .symlink_metadata()
        .is_ok());
}

#[test]
fn plain_rollback_skips_generations_that_failed_here() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    good_failed_reboot(&d);
    let r = d.fh(&["rollback"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: rollback: skipping generation 2 ({}): it failed on this machine at ",
            path("system-exit1")
        )),
        "{r:?}"
    );
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: profile {}/{PROFILES}/system: generation 3 -> 1 ({})\n",
            d.root.display(),
            path("system-v1")
        )),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(
        switches(&d.root),
        [
            "v1 switch",
            "exit1 switch",
            "v1 switch",
            "exit100 switch",
            "v1 switch"
        ]
    );

    // --to N still goes where it is told (here: the broken system, whose
    // script fails again: exit 33).
    let r = d.fh(&["rollback", "--to", "2"]);
    assert_eq!(r.code, 33, "{r:?}");
    assert!(!r.stderr.contains("skipping"), "{r:?}");
    assert_eq!(profile(&d), "system-2-link");
}

#[test]
fn plain_rollback_with_only_failed_generations_below_names_them() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    // Generation 1: a failed system kept (--no-rollback); 2: a good one.
    let r = d.apply("=0.1.2", &["-q", "--no-rollback"]);
    assert_eq!(r.code, 30, "{r:?}");
    assert_eq!(d.apply("=0.1.4", &["-q"]).code, 0);
    assert_eq!(profile(&d), "system-2-link");
    let r = d.fh(&["rollback"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.ends_with(
            "has no generation before the current one (2) whose system has not failed on this machine (failed: generation 1); choose one with --to N\n"
        ),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-2-link");
}

/// The value of `name` in the metrics file (a sample without labels).
pub fn metric(file: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_string()
}

/// `status` text: the line starting with `key`, if any.
pub fn status_line(d: &Deploy, key: &str) -> Option<String> {
    let st = d.fh(&["status"]);
    assert_eq!(st.code, 0, "{st:?}");
    st.stdout
        .lines()
        .find(|l| l.starts_with(key))
        .map(str::to_string)
}

#[test]
fn an_operators_rollback_is_remembered_and_drops_the_reboot_need() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let mf = d.tmp.path().join("fh-lite.prom");
    let mf = mf.to_str().unwrap();
    good_failed_reboot(&d);
    assert!(status_line(&d, "reboot needed").is_some());

    let r = d.fh(&["rollback", "--to", "1", "--metrics-file", mf]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: rollback: {} is remembered as rolled away from; a later apply that resolves to it skips it (exit 34) unless --retry-failed\n",
            path("system-exit100")
        )),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    // The reboot need belonged to generation 3: gone from status and the
    // metrics.
    assert_eq!(status_line(&d, "reboot needed"), None);
    assert_eq!(metric(Path::new(mf), "fh_lite_reboot_needed"), "0");
    let failed = d.fh(&["status"]).stdout;
    assert!(
        failed.contains(&format!(
            "{} ({}, rolled-away at ",
            path("system-exit100"),
            d.reference("=0.1.3")
        )),
        "{failed}"
    );

    // The next run of the same reference does not re-apply it, and says
    // how to.
    let log = switches(&d.root);
    let r = d.apply("=0.1.3", &[]);
    assert_eq!(r.code, 34, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: {} ({}) was rolled away from by 'fh-lite rollback' at ",
            path("system-exit100"),
            d.reference("=0.1.3")
        )),
        "{r:?}"
    );
    assert!(
        r.stderr
            .ends_with("; skipped. Run again with --retry-failed to apply it anyway\n"),
        "{r:?}"
    );
    assert_eq!(switches(&d.root), log);
    assert_eq!(profile(&d), "system-1-link");
    let r = d.apply("=0.1.3", &["--retry-failed", "-q"]);
    assert_eq!(r.code, 40, "{r:?}");
}

#[test]
fn a_timer_run_of_a_loose_reference_does_not_undo_a_rollback() {
    if !can_chroot() {
        return;
    }
    let d = Deploy::new(
        "zstd",
        &[("0.1.1", "system-v1"), ("0.1.2", "system-v2")],
        "{}",
    );
    assert_eq!(d.apply("=0.1.1", &["-q"]).code, 0);
    assert_eq!(d.apply("0.1", &["-q"]).code, 0);
    assert_eq!(profile(&d), "system-2-link");
    assert_eq!(d.fh(&["rollback", "-q"]).code, 0);
    assert_eq!(profile(&d), "system-1-link");
    let r = d.apply("0.1", &[]);
    assert_eq!(r.code, 34, "{r:?}");
    assert!(
        r.stderr
            .contains("was rolled away from by 'fh-lite rollback'"),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(switches(&d.root), ["v1 switch", "v2 switch", "v1 switch"]);
}

#[test]
fn hold_keeps_the_device_on_its_release_until_unhold() {
    if !can_chroot() {
        return;
    }
    let d = deploy();
    let mf = d.tmp.path().join("fh-lite.prom");
    let mf = mf.to_str().unwrap();
    let v1 = path("system-v1");
    assert_eq!(d.apply("=0.1.1", &["-q"]).code, 0);

    let r = d.fh(&["hold", "--metrics-file", mf]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stderr,
        format!("fh-lite: held on generation 1 ({v1}): apply changes nothing (exit 44) until 'fh-lite unhold'\n")
    );
    assert_eq!(metric(Path::new(mf), "fh_lite_held"), "1");
    let held = status_line(&d, "held").unwrap_or_default();
    assert!(
        held.starts_with(&format!("held            on generation 1 ({v1}) since ")),
        "{held}"
    );
    let js = d.fh(&["status", "--json"]);
    assert!(
        js.stdout.contains(&format!(
            "\"held\":{{\"generation\":1,\"store_path\":\"{v1}\",\"time\":"
        )),
        "{js:?}"
    );

    // apply changes nothing while held: exit 44, nothing fetched or run.
    let nars = d.hub.requests_to("/nar/").len();
    let r = d.apply("=0.1.4", &["--metrics-file", mf]);
    assert_eq!(r.code, 44, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: this device is held on generation 1 ({v1}) since "
        )),
        "{r:?}"
    );
    assert!(
        r.stderr
            .ends_with(" ('fh-lite hold'); nothing applied. 'fh-lite unhold' releases it\n"),
        "{r:?}"
    );
    assert_eq!(d.hub.requests_to("/nar/").len(), nars);
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(metric(Path::new(mf), "fh_lite_held"), "1");
    assert_eq!(metric(Path::new(mf), "fh_lite_last_exit_code"), "44");

    let r = d.fh(&["unhold", "--metrics-file", mf]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .starts_with("fh-lite: released the hold on generation 1"),
        "{r:?}"
    );
    assert_eq!(metric(Path::new(mf), "fh_lite_held"), "0");
    assert_eq!(status_line(&d, "held"), None);
    assert!(d.fh(&["status", "--json"]).stdout.contains("\"held\":null"));
    let r = d.apply("=0.1.4", &["-q"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(profile(&d), "system-2-link");
}
