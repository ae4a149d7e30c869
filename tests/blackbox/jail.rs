//! `--root DIR` is a jail (issue 11): a symlink planted at each place
//! fh-lite opens under DIR, pointing at a canary outside DIR, never lets
//! apply, rollback, status or fetch change the canary; fh-lite either
//! works inside DIR or refuses, naming the link.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use crate::support::deploy::Deploy;
use crate::support::fixtures::fixtures;
use crate::support::util::{fh_lite, output, Run, TempDir};
use crate::support::{is_root, require};

/// Everything under `dir`: relative path -> (mode, contents or link target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let data = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), (m.mode(), data));
        }
    }
    out
}

/// A canary directory with a file of each name fh-lite writes, a
/// subdirectory and a link, outside any root.
fn canary(tmp: &Path) -> PathBuf {
    let c = tmp.join("canary");
    std::fs::create_dir_all(c.join("sub")).unwrap();
    for f in ["lock", "state.json", "nix-path-registration", "sub/keep"] {
        std::fs::write(c.join(f), format!("canary {f}\n")).unwrap();
    }
    symlink("sub/keep", c.join("link")).unwrap();
    c
}

/// Where the links go (under DIR) and what they point at (in the canary).
const PLACES: &[(&str, &str)] = &[
    ("var/lib/fh-lite/lock", "lock"),
    ("var/lib/fh-lite/state.json", "state.json"),
    ("nix-path-registration", "nix-path-registration"),
    ("nix/var/nix/profiles", ""),
    ("nix/var/nix/gcroots", ""),
    ("nix/store", ""),
    ("nix/var/nix/db", ""),
];

/// The run worked, or it refused and named the planted link.
fn worked_or_named(r: &Run, link: &Path, what: &str) {
    assert!(
        r.code == 0 || r.stderr.contains(&link.display().to_string()),
        "{what}: neither worked nor named {}: {r:?}",
        link.display()
    );
}

fn plant(d: &Deploy, place: &str, target: &Path) -> PathBuf {
    let link = d.root.join(place);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    symlink(target, &link).unwrap();
    link
}

#[test]
fn symlinks_under_root_never_reach_outside() {
    if !require("root (a root's files owned by others)", is_root()) {
        return;
    }
    for (place, in_canary) in PLACES {
        let d = Deploy::new(
            "zstd",
            &[("0.1.1", "system-v1"), ("0.1.2", "system-v2")],
            "{}",
        );
        let outside = TempDir::new("jail-canary");
        let c = canary(outside.path());
        let before = snapshot(&c);
        let link = plant(&d, place, &c.join(in_canary));
        let check = |r: &Run, what: &str| {
            assert_eq!(
                snapshot(&c),
                before,
                "{place}: {what} changed the canary: {r:?}"
            );
            worked_or_named(r, &link, &format!("{place}: {what}"));
        };
        if *place == "nix/var/nix/db" {
            // The local backend lets nix-store follow paths itself: refused.
            let r = d.apply("=0.1.1", &["boot", "-q", "--store", "local"]);
            assert_ne!(r.code, 0, "{r:?}");
            assert!(r.stderr.contains(&link.display().to_string()), "{r:?}");
            assert_eq!(snapshot(&c), before, "--store local changed the canary");
        }
        let r = d.apply("=0.1.1", &["boot", "-q"]);
        check(&r, "apply 1");
        let r = d.apply("=0.1.2", &["boot", "-q"]);
        check(&r, "apply 2");
        let r = d.fh(&["rollback"]);
        // A rollback may also refuse for reasons of its own (nothing to
        // roll back to when the applies refused): the canary is what counts.
        assert_eq!(
            snapshot(&c),
            before,
            "{place}: rollback changed the canary: {r:?}"
        );
        let r = d.fh(&["status"]);
        check(&r, "status");
    }
}

/// The GC root `fetch` leaves (STATE_DIR/fetched and its indirect root in
/// gcroots/auto): a symlink at the link's directory, at gcroots/auto or at
/// the link's own name never lets it write outside DIR.
const PIN_PLACES: &[(&str, &str)] = &[
    ("var/lib/fh-lite", ""),
    ("nix/var/nix/gcroots/auto", ""),
    ("var/lib/fh-lite/fetched", "link"),
];

#[test]
fn fetch_pin_never_reaches_outside() {
    if !require("root (a root's files owned by others)", is_root()) {
        return;
    }
    let f = fixtures();
    for (place, in_canary) in PIN_PLACES {
        let d = Deploy::new("zstd", &[("0.1.1", "system-v1")], "{}");
        let outside = TempDir::new("jail-canary");
        let c = canary(outside.path());
        let before = snapshot(&c);
        let link = plant(&d, place, &c.join(in_canary));
        let reference = d.reference("=0.1.1");
        let online = d.online();
        let mut args = vec![
            "fetch",
            &reference,
            "-q",
            "--root",
            d.root.to_str().unwrap(),
        ];
        args.extend(online.iter().map(String::as_str));
        let r = output(fh_lite(&args));
        assert_eq!(
            snapshot(&c),
            before,
            "{place}: fetch changed the canary: {r:?}"
        );
        worked_or_named(&r, &link, &format!("{place}: fetch"));
        if r.code == 0 {
            // Pinned inside DIR: the link names the store path, its
            // indirect root names the link as the managed system sees it.
            let want = &f.get("system-v1").path;
            let fetched = resolve_in(&d.root, Path::new("var/lib/fh-lite")).join("fetched");
            assert_eq!(
                std::fs::read_link(&fetched).unwrap(),
                Path::new(want),
                "{place}"
            );
            let auto = resolve_in(&d.root, Path::new("nix/var/nix/gcroots/auto"));
            let targets: Vec<PathBuf> = std::fs::read_dir(&auto)
                .unwrap()
                .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
                .collect();
            assert_eq!(
                targets,
                vec![PathBuf::from("/var/lib/fh-lite/fetched")],
                "{place}"
            );
        }
    }
}

/// `rel` beneath `root` with symlinks followed as chroot would (absolute
/// targets restart at `root`), for the test's own checks.
fn resolve_in(root: &Path, rel: &Path) -> PathBuf {
    let mut at = root.to_path_buf();
    for part in rel.components() {
        let next = at.join(part);
        at = match std::fs::read_link(&next) {
            Ok(t) if t.is_absolute() => resolve_in(root, t.strip_prefix("/").unwrap()),
            Ok(t) => resolve_in(root, &at.strip_prefix(root).unwrap().join(t)),
            Err(_) => next,
        };
    }
    at
}
