//! Crash safety of the transfer: a NAR body that breaks off is
//! resumed with a Range request (or started over when the server cannot
//! answer one), the NarHash still covers every byte, and temp trees that
//! dead runs left in the store are removed.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use crate::support::deploy::{judge_image, Deploy};
use crate::support::fakehub::Request;
use crate::support::fixtures::{fixtures, Fixtures};

/// The NAR URL (`/nar/…`) and FileSize of `store_path` in cache `which`.
fn nar_of(which: &str, store_path: &str) -> (String, u64) {
    let f = fixtures();
    let ni = f
        .cache(which)
        .join(format!("{}.narinfo", Fixtures::hash_part(store_path)));
    let text = std::fs::read_to_string(&ni).expect("narinfo");
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_else(|| panic!("{}: no {k}", ni.display()))
            .to_string()
    };
    (
        format!("/{}", field("URL")),
        field("FileSize").parse().unwrap(),
    )
}

/// The big NAR of `basic-big` (50 MiB, uncompressed cache), in the
/// `system-full` closure, cut in the middle of its first answer; `more`
/// adds fault knobs.
fn cut_big(more: &str) -> (Deploy, String, u64) {
    let f = fixtures();
    let big = &f.get("basic-big").path;
    let (url, size) = nar_of("none", big);
    let faults = format!(
        r#"{{"truncate": [{{"count": 1, "fraction": 0.5, "store_path": "{big}"}}]{more}}}"#
    );
    let d = Deploy::new("none", &[("0.1.175", "system-full")], &faults);
    (d, url, size)
}

fn bytes(reqs: &[Request]) -> u64 {
    reqs.iter().map(|r| r.bytes.expect("bytes logged")).sum()
}

#[test]
fn a_nar_cut_in_the_middle_is_resumed_with_one_range_request() {
    let f = fixtures();
    let (d, url, size) = cut_big("");
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    let half = size / 2;
    assert!(
        r.stderr.contains(&format!(
            "{url}: body broke off at {half} of {size} bytes ("
        )) && r
            .stderr
            .contains("); resuming with a Range request (attempt 1 of 3)\n"),
        "{r:?}"
    );
    let reqs = d.hub.requests_to(&url);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(
        (reqs[0].status, reqs[0].range.as_deref(), reqs[0].bytes),
        (200, None, Some(half))
    );
    assert_eq!(
        (reqs[1].status, reqs[1].range.clone(), reqs[1].bytes),
        (206, Some(format!("bytes={half}-")), Some(size - half))
    );
    assert!(reqs.iter().all(|q| q.auth == "basic"), "{reqs:?}");
    let served = bytes(&reqs);
    assert!(
        served >= size && served * 10 < size * 11,
        "{served} bytes served for a {size}-byte NAR"
    );
    judge_image(&d, f, "system-full");
}

#[test]
fn a_server_that_ignores_range_gets_the_path_started_over() {
    let f = fixtures();
    let (d, url, size) = cut_big(r#", "ignore_range": true"#);
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "{url}: the Range request was answered with http status 200 instead of 206; \
             fetching it again from the start"
        )),
        "{r:?}"
    );
    let reqs = d.hub.requests_to(&url);
    let seen: Vec<(u16, Option<&str>)> = reqs
        .iter()
        .map(|q| (q.status, q.range.as_deref()))
        .collect();
    let range = format!("bytes={}-", size / 2);
    assert_eq!(
        seen,
        vec![(200, None), (200, Some(range.as_str())), (200, None)],
        "cut, range ignored, whole body again"
    );
    judge_image(&d, f, "system-full");
}

#[test]
fn wrong_bytes_in_the_range_answer_fail_the_nar_hash() {
    let f = fixtures();
    let big = &f.get("basic-big").path;
    let (d, url, _) = cut_big(r#", "range_corrupt": true"#);
    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 21, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "{url}: NAR of {big}: hash mismatch: the narinfo says "
        )),
        "{r:?}"
    );
    let reqs = d.hub.requests_to(&url);
    assert_eq!(reqs.len(), 2, "one cut, one corrupt range: {reqs:?}");
    assert_eq!(reqs[1].status, 206);
    // Nothing half-written: the store holds registered paths only, and not
    // the big one.
    let registered = registered(&d);
    let big_base = big.strip_prefix("/nix/store/").unwrap();
    assert!(!registered.contains(big_base));
    for e in d.store_entries() {
        assert!(registered.contains(&e), "{e} in the store, not registered");
    }
    assert!(!d.root.join("nix/var/nix/profiles/system").exists());
}

/// Base names of the paths in `ROOT/nix-path-registration`.
fn registered(d: &Deploy) -> BTreeSet<String> {
    let text = std::fs::read_to_string(d.root.join("nix-path-registration")).unwrap_or_default();
    let mut lines = text.lines();
    let mut out = BTreeSet::new();
    while let Some(path) = lines.next() {
        let fields: Vec<&str> = lines.by_ref().take(4).collect();
        assert_eq!(fields.len(), 4, "torn record for {path}");
        let n: usize = fields[3].parse().expect("reference count");
        lines.by_ref().take(n).for_each(drop);
        out.insert(path.strip_prefix("/nix/store/").unwrap().to_string());
    }
    out
}

#[test]
fn temp_trees_of_dead_runs_are_removed_and_live_ones_kept() {
    let f = fixtures();
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let store = d.root.join("nix/store");
    std::fs::create_dir_all(&store).unwrap();
    // A pid that was alive and is not any more.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let hash = Fixtures::hash_part(&f.get("system-v1").path);
    let dead_name = format!("{hash}-fhlite-tmp-{dead}-0123456789abcdef");
    // A live run's name carries this boot's tag (the top 16 bits of the
    // random part: the first four hex digits of the kernel's boot id).
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let live_name = format!(
        "{hash}-fhlite-tmp-{}-{}ba9876543210",
        std::process::id(),
        &boot_id[..4]
    );
    // Half-unpacked, read-only, as a killed run leaves it.
    let t = store.join(&dead_name);
    std::fs::create_dir_all(t.join("bin")).unwrap();
    std::fs::write(t.join("bin/half"), b"half a file").unwrap();
    for p in [t.join("bin"), t.clone()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    std::fs::create_dir(store.join(&live_name)).unwrap();

    let r = d.apply("=0.1.175", &["boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: removed {}, left by an interrupted run (pid {dead})\n",
            t.display()
        )),
        "{r:?}"
    );
    assert_eq!(
        r.stderr.matches(", left by an interrupted run").count(),
        1,
        "{r:?}"
    );
    let mut want = registered(&d);
    assert_eq!(want.len(), f.get("system-v1").closure.len());
    // A live process's tree is never touched.
    want.insert(live_name);
    let got: BTreeSet<String> = d.store_entries().into_iter().collect();
    assert_eq!(got, want);
}
