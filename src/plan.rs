//! Closure walk: narinfos fetched concurrently and verified on arrival.
//!
//! From the root store path, `{cache}/<hash>.narinfo` is fetched for every
//! path the target store does not already have (docs/formats.md,
//! "Binary caches"). Each narinfo is parsed strictly with the hash part it was asked
//! for, and its signature is checked against the trusted keys (formats.md "Signatures") before
//! its references are even looked at. References are followed; a path that
//! is already valid is not descended into (Nix's invariant: the closure of a
//! valid path is valid).
//!
//! The result, [`Plan`], lists the missing paths in topological order
//! (references first), with the bytes to download and to unpack: enough for
//! `--dry-run` and the disk-space check. Totals are summed with checked
//! arithmetic; [`Plan::closure`] is what the run pins with temp roots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use miniserde::json::{Array, Object, Value};

use crate::cache::{fetch_narinfo, CacheClient, FetchError};
use crate::nix::narinfo::signature::TrustedKeys;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::pool;
use crate::progress::{num, Totals};
use crate::store::Store;
use crate::util::size;

/// What has to be fetched for a root store path.
#[derive(Debug)]
pub struct Plan {
    pub root: StorePath,
    /// Missing paths, references before referrers.
    pub paths: Vec<NarInfo>,
    /// Paths met during the walk that the store already had.
    pub already_valid: usize,
    /// Those paths themselves (the root, when it is valid already). With
    /// `paths` they cover the whole closure: a valid path's own closure is
    /// valid, and a root on it keeps that closure (see [`Plan::closure`]).
    pub valid: Vec<StorePath>,
    /// Sum of FileSize (NarSize where FileSize is not given).
    pub download_bytes: u64,
    /// Sum of NarSize.
    pub unpack_bytes: u64,
}

/// Narinfo requests at once for `--jobs N`: a narinfo is a few hundred
/// bytes and its request mostly latency, so the walk runs much wider than
/// the NAR downloads.
pub fn narinfo_width(jobs: usize) -> usize {
    jobs.saturating_mul(8).clamp(1, 32)
}

/// Walk the closure of `root` with up to [`narinfo_width`]`(jobs)` narinfo
/// requests at once.
pub fn plan(
    client: &dyn CacheClient,
    store: &dyn Store,
    keys: &TrustedKeys,
    root: &StorePath,
    jobs: usize,
) -> Result<Plan, FetchError> {
    let store_err = |source| FetchError::Store {
        url: client.base_url().to_string(),
        source,
    };
    let mut valid_met: Vec<StorePath> = Vec::new();
    if store
        .query_valid(std::slice::from_ref(root))
        .map_err(store_err)?
        .contains(root)
    {
        return Ok(Plan {
            root: root.clone(),
            paths: Vec::new(),
            already_valid: 1,
            valid: vec![root.clone()],
            download_bytes: 0,
            unpack_bytes: 0,
        });
    }
    let mut seen: BTreeSet<StorePath> = BTreeSet::new();
    seen.insert(root.clone());
    let mut infos: BTreeMap<StorePath, NarInfo> = BTreeMap::new();
    // Each narinfo arrives verified; its references not met before are
    // asked for next, unless the store has them (and so their closure).
    let fetch = |path: &StorePath| fetch_narinfo(client, keys, path);
    pool::run(narinfo_width(jobs), vec![root.clone()], fetch, |_, info| {
        // `insert` is false for a path met before.
        let new: Vec<StorePath> = (info.references.iter())
            .filter(|r| seen.insert((*r).clone()))
            .cloned()
            .collect();
        infos.insert(info.store_path.clone(), info);
        if new.is_empty() {
            return Ok(new);
        }
        let valid = store.query_valid(&new).map_err(store_err)?;
        let (valid, missing): (Vec<_>, Vec<_>) = new.into_iter().partition(|p| valid.contains(p));
        valid_met.extend(valid);
        Ok(missing)
    })?;
    let paths = topo_order(root, infos)?;
    let (download_bytes, unpack_bytes) = totals(client, &paths)?;
    Ok(Plan {
        root: root.clone(),
        download_bytes,
        unpack_bytes,
        paths,
        already_valid: valid_met.len(),
        valid: valid_met,
    })
}

/// The bytes to download (FileSize, else NarSize) and to unpack (NarSize)
/// for `paths`. The sizes come from the cache: a sum that does not fit in
/// 64 bits is a malformed narinfo, named with the path that overflowed it.
fn totals(client: &dyn CacheClient, paths: &[NarInfo]) -> Result<(u64, u64), FetchError> {
    let (mut download, mut unpack) = (0u64, 0u64);
    for i in paths {
        let d = download.checked_add(i.file_size.unwrap_or(i.nar_size));
        let u = unpack.checked_add(i.nar_size);
        let (Some(d), Some(u)) = (d, u) else {
            return Err(FetchError::NarInfoMalformed {
                path: i.store_path.clone(),
                url: client.narinfo_url(i.store_path.hash_part()),
                detail: format!(
                    "narinfo: NarSize {} / FileSize {} makes the closure larger than 2^64 bytes",
                    i.nar_size,
                    i.file_size.map_or("-".to_string(), |f| f.to_string())
                ),
            });
        };
        (download, unpack) = (d, u);
    }
    Ok((download, unpack))
}

/// References first; deterministic (depth-first from the root, references
/// in path order). A cycle other than a self-reference is an error.
fn topo_order(
    root: &StorePath,
    mut infos: BTreeMap<StorePath, NarInfo>,
) -> Result<Vec<NarInfo>, FetchError> {
    enum Mark {
        Open,
        Done,
    }
    let mut marks: BTreeMap<StorePath, Mark> = BTreeMap::new();
    let mut order: Vec<StorePath> = Vec::new();
    // Explicit stack (closures can be deep): (path, next reference index).
    let mut stack: Vec<(StorePath, usize)> = vec![(root.clone(), 0)];
    marks.insert(root.clone(), Mark::Open);
    let sorted_refs = |p: &StorePath, infos: &BTreeMap<StorePath, NarInfo>| -> Vec<StorePath> {
        let mut r: Vec<StorePath> = infos
            .get(p)
            .map(|i| {
                i.references
                    .iter()
                    .filter(|r| *r != p && infos.contains_key(*r))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        r.sort();
        r.dedup();
        r
    };
    while let Some((p, k)) = stack.pop() {
        let refs = sorted_refs(&p, &infos);
        if let Some(next) = refs.get(k) {
            stack.push((p.clone(), k + 1));
            match marks.get(next) {
                Some(Mark::Done) => {}
                Some(Mark::Open) => return Err(FetchError::Cycle { path: next.clone() }),
                None => {
                    marks.insert(next.clone(), Mark::Open);
                    stack.push((next.clone(), 0));
                }
            }
        } else {
            marks.insert(p.clone(), Mark::Done);
            order.push(p);
        }
    }
    Ok(order.into_iter().filter_map(|p| infos.remove(&p)).collect())
}

/// The missing paths, references first (what the fetch step takes).
impl AsRef<[NarInfo]> for Plan {
    fn as_ref(&self) -> &[NarInfo] {
        &self.paths
    }
}

/// The figures the `plan` progress event reports.
impl From<&Plan> for Totals {
    fn from(plan: &Plan) -> Totals {
        Totals {
            root: plan.root.to_string(),
            paths: plan.paths.len(),
            already_valid: plan.already_valid,
            download_bytes: plan.download_bytes,
            unpack_bytes: plan.unpack_bytes,
        }
    }
}

impl Plan {
    /// Every path of the root's closure that this run relies on: the ones
    /// to fetch, the valid ones met during the walk, and the root. A temp
    /// root on each keeps all of it from a garbage collection until the
    /// paths are registered (a root keeps the closure of a valid path).
    pub fn closure(&self) -> Vec<StorePath> {
        let mut all: Vec<StorePath> = (self.paths.iter().map(|i| i.store_path.clone()))
            .chain(self.valid.iter().cloned())
            .chain(std::iter::once(self.root.clone()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// `--dry-run` output: one line per path, then the totals.
    pub fn render_human(&self) -> String {
        let mut out = String::new();
        for i in &self.paths {
            let dl = i.file_size.unwrap_or(i.nar_size);
            out.push_str(&format!(
                "{}  {} download, {} unpacked\n",
                i.store_path,
                size(dl),
                size(i.nar_size)
            ));
        }
        out.push_str(&format!(
            "{} paths to fetch ({} already present): {} to download, {} unpacked\n",
            self.paths.len(),
            self.already_valid,
            size(self.download_bytes),
            size(self.unpack_bytes)
        ));
        out
    }

    /// `--dry-run --json` output: the totals and every path.
    /// With what the real run would do: `verdict` (`activate`,
    /// `already-current`, `skip`, `defer`, `held`) and its `would_exit`.
    pub fn render_json(&self, verdict: &str, would_exit: u8) -> String {
        let mut o = Totals::from(self).to_json();
        o.insert("event".into(), Value::String("plan".into()));
        o.insert("verdict".into(), Value::String(verdict.into()));
        o.insert("would_exit".into(), num(u64::from(would_exit)));
        o.insert("path_count".into(), num(self.paths.len() as u64));
        let mut arr = Array::new();
        for i in &self.paths {
            let mut p = Object::new();
            p.insert("path".into(), Value::String(i.store_path.to_string()));
            p.insert(
                "download_bytes".into(),
                num(i.file_size.unwrap_or(i.nar_size)),
            );
            p.insert("nar_size".into(), num(i.nar_size));
            arr.push(Value::Object(p));
        }
        o.insert("paths".into(), Value::Array(arr));
        let mut s = miniserde::json::to_string(&Value::Object(o));
        s.push('\n');
        s
    }
}

/// Fail early when the filesystem holding `store_dir` (or its nearest
/// existing ancestor, for a fresh image root) has less than `needed` bytes
/// free for unprivileged use.
pub fn check_disk_space(store_dir: &Path, needed: u64) -> Result<(), FetchError> {
    let dir = store_dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(store_dir);
    let Ok(st) = rustix::fs::statvfs(dir) else {
        // No answer is no reason to refuse: ENOSPC is still reported later.
        return Ok(());
    };
    let available = st.f_bavail.saturating_mul(st.f_frsize);
    if available < needed {
        return Err(FetchError::DiskSpace {
            dir: store_dir.display().to_string(),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use crate::nix::narinfo::signature::PublicKey;
    use crate::store::image::ImageStore;
    use crate::testutil::cache::{apply, Entry, TestCache};
    use crate::testutil::nar::Node;
    use crate::testutil::{sp, TempDir};

    #[test]
    fn a_reference_cycle_is_refused_before_any_nar() {
        let cache = TestCache::new();
        let (a, b) = (sp('5', "a"), sp('6', "b"));
        // A self-reference is fine; a -> b -> a is not.
        let file = |s: &[u8]| Node::File(false, s.to_vec());
        cache.add(&Entry::new(a.clone(), file(b"a"), &[&a, &b]));
        cache.add(&Entry::new(b.clone(), file(b"b"), &[&a]));
        let (_img, r) = apply(&cache, &a);
        let err = r.unwrap_err();
        assert_eq!(
            err.to_string(),
            "references of /nix/store/55555555555555555555555555555555-a form a cycle, which no \
             Nix store can hold: refusing the closure"
        );
        assert_eq!(err.exit(), Exit::Verification);
        assert_eq!(cache.nar_requests(), Vec::<String>::new());
    }

    #[test]
    fn a_narinfo_without_a_trusted_signature_is_refused() {
        let cache = TestCache::new();
        let a = sp('5', "a");
        cache.add(&Entry::new(
            a.clone(),
            Node::File(false, b"a".to_vec()),
            &[],
        ));
        let key = |name: &str, key| PublicKey {
            name: name.into(),
            key,
        };
        let test_key = cache.keys().keys[0].key;
        let prefix = "refusing the narinfo at \
                      http://cache.test/c/55555555555555555555555555555555.narinfo: \
                      /nix/store/55555555555555555555555555555555-a";
        let cases = [
            (
                "signed by another key",
                key("other-1", test_key),
                " is not signed by a trusted key (signed by: test-1; trusted: other-1); add the \
                 cache's public key with --trusted-key if you trust it",
            ),
            (
                "trusted name, other key bytes",
                key("test-1", [1u8; 32]),
                ": the signature by trusted key test-1 does not verify (the narinfo was altered \
                 or the signature is corrupt)",
            ),
        ];
        for (name, k, want) in cases {
            let mut keys = TrustedKeys::default();
            keys.add(k);
            let img = TempDir::new("img");
            let store = ImageStore::open(&img.0).unwrap();
            let err = plan(&cache, &store, &keys, &a, 2).unwrap_err();
            assert_eq!(err.to_string(), format!("{prefix}{want}"), "{name}");
            assert_eq!(err.exit(), Exit::Verification, "{name}");
        }
    }

    #[test]
    fn an_overflowing_total_is_a_malformed_narinfo() {
        let cache = TestCache::new();
        let (a, b) = (sp('5', "a"), sp('6', "b"));
        let file = |s: &[u8]| Node::File(false, s.to_vec());
        let mut eb = Entry::new(b.clone(), file(b"b"), &[]);
        eb.nar_size = Some(u64::MAX);
        let mut ea = Entry::new(a.clone(), file(b"a"), &[&b]);
        ea.nar_size = Some(2);
        cache.add(&eb);
        cache.add(&ea);
        let img = TempDir::new("img");
        let store = ImageStore::open(&img.0).unwrap();
        let err = plan(&cache, &store, &cache.keys(), &a, 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET http://cache.test/c/55555555555555555555555555555555.narinfo: narinfo: NarSize \
             2 / FileSize 120 makes the closure larger than 2^64 bytes; the cache sent a \
             malformed narinfo for /nix/store/55555555555555555555555555555555-a"
        );
        assert_eq!(err.exit(), Exit::Verification);
        assert_eq!(cache.nar_requests(), Vec::<String>::new());
    }

    #[test]
    fn the_closure_includes_the_paths_already_valid() {
        let cache = TestCache::new();
        let (lib, app) = (sp('1', "lib"), sp('3', "app"));
        let file = |s: &[u8]| Node::File(false, s.to_vec());
        cache.add(&Entry::new(lib.clone(), file(b"lib"), &[]));
        cache.add(&Entry::new(app.clone(), file(b"app"), &[&lib]));
        // lib is in the store already; app is not.
        let (img, r) = apply(&cache, &lib);
        r.unwrap();
        let store = ImageStore::open(&img.0).unwrap();
        let p = plan(&cache, &store, &cache.keys(), &app, 2).unwrap();
        let fetched: Vec<&StorePath> = p.paths.iter().map(|i| &i.store_path).collect();
        assert_eq!(fetched, vec![&app]);
        assert_eq!((p.already_valid, p.valid.clone()), (1, vec![lib.clone()]));
        assert_eq!(p.closure(), vec![lib.clone(), app.clone()]);
        // A valid root: the closure is the root (its own closure is kept
        // by a root on it).
        let p = plan(&cache, &store, &cache.keys(), &lib, 2).unwrap();
        assert_eq!(p.closure(), vec![lib]);
    }
}
