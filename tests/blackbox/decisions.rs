//! The operator's decisions through the real binary against the FlakeHub
//! stand-in: a plain `fh-lite rollback` passes over generations whose
//! systems failed on this machine; a rollback is remembered (the next
//! apply of the release rolled away from is skipped, its reboot need is
//! dropped); `fh-lite hold` / `unhold`.

use std::path::Path;

use crate::apply::Deploy;
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

fn profile(d: &Deploy) -> String {
    std::fs::read_link(d.root.join(PROFILES).join("system"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// "VARIANT ARGS" of every switch-to-configuration call, in order.
fn switches(root: &Path) -> Vec<String> {
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

/// Generation 1 good, 2 failed and rolled back (its link stays), 3 needs a
/// reboot.
fn good_failed_reboot(d: &Deploy) {
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
