//! Delta bundles: `bundle create REF --since OLD` carries only the paths
//! OLD's closure lacks. One leaf package changed between two releases: the
//! delta is a fraction of the full bundle; applied on a root that has the
//! old release, real Nix verifies the store; on a root without it, it is
//! refused with the missing paths named, and nothing is registered.

use std::collections::BTreeSet;
use std::path::Path;

use crate::offline::{apply_from, assert_nothing_registered, bundle_key, entries, run, sign_key};
use crate::support::deploy::{judge_image, Deploy};
use crate::support::fixtures::fixtures;
use crate::support::util::Run;

/// `bundle create org/demo/REQ#ATTR --output OUT --sign-key K [extra]`, checked.
fn create(d: &Deploy, req: &str, out: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec![
        "bundle".into(),
        "create".into(),
        d.reference(req),
        "--output".into(),
        out.display().to_string(),
        "--sign-key".into(),
        sign_key(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(d.online());
    let r = run(&args);
    assert_eq!(r.code, 0, "bundle create {req}: {r:?}");
    r
}

/// The NAR and narinfo entries of a tar bundle, by store-path hash part.
fn carried(bundle: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut narinfos, mut nars) = (BTreeSet::new(), BTreeSet::new());
    for (name, _) in entries(bundle) {
        if let Some(h) = name.strip_suffix(".narinfo") {
            narinfos.insert(h.to_string());
        } else if let Some(n) = name.strip_prefix("nar/") {
            nars.insert(n.split('.').next().unwrap().to_string());
        }
    }
    (narinfos, nars)
}

fn hash(p: &str) -> String {
    p.trim_start_matches("/nix/store/")[..32].to_string()
}

#[test]
fn delta_bundle_carries_only_the_change_and_needs_the_old_closure() {
    let f = fixtures();
    let d = Deploy::new(
        "xz",
        &[("0.1.175", "system-full"), ("0.1.180", "system-full-leaf2")],
        "{}",
    );
    let tmp = d.tmp.path();
    let old = tmp.join("old.bundle");
    let full = tmp.join("new-full.bundle");
    let delta = tmp.join("new-delta.bundle");
    create(&d, "=0.1.175", &old, &[]);
    create(&d, "=0.1.180", &full, &[]);
    let r = create(&d, "=0.1.180", &delta, &["--since", old.to_str().unwrap()]);
    let old_closure: BTreeSet<&String> = f.get("system-full").closure.iter().collect();
    let new_closure = &f.get("system-full-leaf2").closure;
    let want: BTreeSet<String> = (new_closure.iter())
        .filter(|p| !old_closure.contains(p))
        .map(|p| hash(p))
        .collect();
    let left_out = new_closure.len() - want.len();
    assert!(left_out >= 3 && want.len() >= 5, "fixture shape: {want:?}");
    assert!(
        r.stderr
            .contains(&format!("{left_out} paths of the closure left out")),
        "{}",
        r.stderr
    );
    // Exactly the new paths travel: narinfos and NARs.
    let (narinfos, nars) = carried(&delta);
    assert_eq!(narinfos, want, "narinfos in the delta");
    assert_eq!(nars, want, "NARs in the delta");
    let (full_size, delta_size) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    eprintln!(
        "delta bundle: {delta_size} B ({} of {} paths); full bundle: {full_size} B; big file {} MiB",
        want.len(),
        new_closure.len(),
        f.big_mib
    );
    assert!(
        delta_size * 2 < full_size,
        "the delta ({delta_size} B) is not much smaller than the full bundle ({full_size} B)"
    );
    // The manifest names the whole closure and what it leaves out.
    let manifest = String::from_utf8(entries(&delta)[0].1.clone()).unwrap();
    assert!(
        manifest.contains(r#""format":"fh-lite-delta-1""#),
        "{manifest}"
    );
    for p in new_closure {
        assert!(
            manifest.contains(&format!(r#""path":"{p}""#)),
            "{p} not in the manifest"
        );
    }
    assert!(
        manifest.contains(&format!(r#""since":"{}""#, f.get("system-full").path)),
        "{manifest}"
    );

    // A root without the old release: refused, the missing paths named
    // (exit 20), nothing registered.
    let key = bundle_key();
    let trust = ["--trusted-bundle-key", key.as_str()];
    let bare = tmp.join("bare-root");
    std::fs::create_dir_all(&bare).unwrap();
    let r = apply_from(&d, &bare, delta.to_str().unwrap(), &trust, None);
    assert_eq!(r.code, 20, "a delta without its base: {r:?}");
    assert!(r.stderr.contains("is a delta"), "{}", r.stderr);
    for p in new_closure.iter().filter(|p| !want.contains(&hash(p))) {
        assert!(r.stderr.contains(p.as_str()), "{p} not named: {}", r.stderr);
    }
    assert_nothing_registered(&bare, "delta without its base");
    // The same from a pipe: refused before the first NAR is read.
    let r = apply_from(&d, &bare, "-", &trust, Some(&delta));
    assert_eq!(r.code, 20, "a delta without its base, piped: {r:?}");
    assert_nothing_registered(&bare, "delta without its base, piped");

    // A root with the old release: the delta completes it; Nix verifies.
    let r = apply_from(&d, &d.root, old.to_str().unwrap(), &trust, None);
    assert_eq!(r.code, 0, "apply the old full bundle: {r:?}");
    let before = d.hub.requests().len();
    let r = apply_from(&d, &d.root, delta.to_str().unwrap(), &trust, None);
    assert_eq!(r.code, 0, "apply the delta on the old release: {r:?}");
    assert_eq!(
        d.hub.requests().len(),
        before,
        "the stand-in was asked nothing"
    );
    judge_image(&d, f, "system-full-leaf2");
}

#[test]
fn delta_since_a_store_path_walks_its_closure_in_the_cache() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[], "{}");
    let cache = format!("file://{}", f.cache("zstd").display());
    let out = d.tmp.path().join("delta.bundle");
    let new = &f.get("system-full-leaf2").path;
    let old = &f.get("system-full").path;
    let args: Vec<String> = [
        "bundle",
        "create",
        new,
        "--cache",
        &cache,
        "--no-default-keys",
        "--trusted-key",
        &f.public_key,
        "--output",
        out.to_str().unwrap(),
        "--since",
        old,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = run(&args);
    assert_eq!(r.code, 0, "{r:?}");
    let old_closure: BTreeSet<&String> = f.get("system-full").closure.iter().collect();
    let want: BTreeSet<String> = (f.get("system-full-leaf2").closure.iter())
        .filter(|p| !old_closure.contains(p))
        .map(|p| hash(p))
        .collect();
    assert_eq!(carried(&out).1, want, "NARs in the delta");
    // A --since that is none of the three forms is a usage error naming it.
    let mut bad = args.clone();
    let n = bad.len();
    bad[n - 1] = d.tmp.path().join("nope").display().to_string();
    let r = run(&bad);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--since"), "{}", r.stderr);
}
