//! Closure walk: narinfos fetched concurrently and verified on arrival.
//!
//! From the root store path, `{cache}/<hash>.narinfo` is fetched for every
//! path the target store does not already have (reference/nix-protocols.md
//! §1.2). Each narinfo is parsed strictly with the hash part it was asked
//! for, and its signature is checked against the trusted keys (§2) before
//! its references are even looked at. References are followed; a path that
//! is already valid is not descended into (Nix's invariant: the closure of a
//! valid path is valid).
//!
//! The result, [`Plan`], lists the missing paths in topological order
//! (references first), with the bytes to download and to unpack: enough for
//! `--dry-run` and the disk-space check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

use miniserde::json::{Array, Number, Object, Value};

use crate::fetch::{CacheClient, FetchError};
use crate::nix::narinfo::NarInfo;
use crate::nix::signature::TrustedKeys;
use crate::nix::store_path::StorePath;
use crate::store::Store;
use crate::util::mib;

/// What has to be fetched for a root store path.
#[derive(Debug)]
pub struct Plan {
    pub root: StorePath,
    /// Missing paths, references before referrers.
    pub paths: Vec<NarInfo>,
    /// Paths met during the walk that the store already had.
    pub already_valid: usize,
    /// Sum of FileSize (NarSize where FileSize is not given).
    pub download_bytes: u64,
    /// Sum of NarSize.
    pub unpack_bytes: u64,
}

/// Fetch, parse and verify one narinfo.
pub fn fetch_narinfo(
    client: &dyn CacheClient,
    keys: &TrustedKeys,
    path: &StorePath,
) -> Result<NarInfo, FetchError> {
    let url = format!("{}/{}.narinfo", client.base_url(), path.hash_part());
    let text = client
        .get_narinfo(path.hash_part())?
        .ok_or_else(|| FetchError::NarInfoMissing {
            path: path.clone(),
            url: url.clone(),
        })?;
    let info =
        NarInfo::parse(&text, path.hash_part()).map_err(|e| FetchError::NarInfoMalformed {
            path: path.clone(),
            url: url.clone(),
            detail: format!("{e:?}"),
        })?;
    if &info.store_path != path {
        return Err(FetchError::NarInfoMalformed {
            path: path.clone(),
            url,
            detail: format!("asked for {path} but got {}", info.store_path),
        });
    }
    keys.verify(&info).map_err(|e| FetchError::Untrusted {
        path: path.clone(),
        url,
        detail: format!("{e:?}"),
    })?;
    Ok(info)
}

/// Walk the closure of `root` with up to `jobs` narinfo requests at once.
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
    let mut already_valid = 0usize;
    if store
        .query_valid(std::slice::from_ref(root))
        .map_err(store_err)?
        .contains(root)
    {
        return Ok(Plan {
            root: root.clone(),
            paths: Vec::new(),
            already_valid: 1,
            download_bytes: 0,
            unpack_bytes: 0,
        });
    }
    let mut seen: BTreeSet<StorePath> = BTreeSet::new();
    seen.insert(root.clone());
    let mut infos: BTreeMap<StorePath, NarInfo> = BTreeMap::new();
    let mut first_error: Option<FetchError> = None;
    let stop = AtomicBool::new(false);
    let jobs = jobs.max(1);

    let (work_tx, work_rx) = mpsc::channel::<StorePath>();
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|s| {
        let (res_tx, res_rx) = mpsc::channel::<Result<NarInfo, FetchError>>();
        for _ in 0..jobs {
            let res_tx = res_tx.clone();
            let (work_rx, stop) = (&work_rx, &stop);
            s.spawn(move || loop {
                let next = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(path) = next else { return };
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                let r = fetch_narinfo(client, keys, &path);
                if res_tx.send(r).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let mut pending = 0usize;
        // The work sender lives until the walk ends; receivers then stop.
        let _ = work_tx.send(root.clone());
        pending += 1;
        while pending > 0 {
            let Ok(r) = res_rx.recv() else { break };
            pending -= 1;
            let info = match r {
                Ok(info) => info,
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            };
            let new: Vec<StorePath> = info
                .references
                .iter()
                .filter(|r| !seen.contains(*r))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            infos.insert(info.store_path.clone(), info);
            if new.is_empty() {
                continue;
            }
            seen.extend(new.iter().cloned());
            let valid = match store.query_valid(&new) {
                Ok(v) => v,
                Err(e) => {
                    first_error = Some(store_err(e));
                    break;
                }
            };
            for p in new {
                if valid.contains(&p) {
                    already_valid += 1;
                } else {
                    let _ = work_tx.send(p);
                    pending += 1;
                }
            }
        }
        // On error: queued requests are skipped, running ones finish and
        // find nobody listening; the scope then joins every worker.
        stop.store(true, Ordering::Relaxed);
        drop(work_tx);
        drop(res_rx);
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    let paths = topo_order(root, infos)?;
    Ok(Plan {
        root: root.clone(),
        download_bytes: paths
            .iter()
            .map(|i| i.file_size.unwrap_or(i.nar_size))
            .sum(),
        unpack_bytes: paths.iter().map(|i| i.nar_size).sum(),
        paths,
        already_valid,
    })
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

impl Plan {
    /// `--dry-run` output: one line per path, then the totals.
    pub fn render_human(&self) -> String {
        let mut out = String::new();
        for i in &self.paths {
            let dl = i.file_size.unwrap_or(i.nar_size);
            out.push_str(&format!(
                "{}  {} download, {} unpacked\n",
                i.store_path,
                mib(dl),
                mib(i.nar_size)
            ));
        }
        out.push_str(&format!(
            "{} paths to fetch ({} already present): {} to download, {} unpacked\n",
            self.paths.len(),
            self.already_valid,
            mib(self.download_bytes),
            mib(self.unpack_bytes)
        ));
        out
    }

    /// `--dry-run --json` output (also the `plan` progress event's body).
    pub fn to_json_value(&self) -> Object {
        let mut o = Object::new();
        o.insert("root".into(), Value::String(self.root.to_string()));
        let mut arr = Array::new();
        for i in &self.paths {
            let mut p = Object::new();
            p.insert("path".into(), Value::String(i.store_path.to_string()));
            p.insert(
                "download_bytes".into(),
                Value::Number(Number::U64(i.file_size.unwrap_or(i.nar_size))),
            );
            p.insert("nar_size".into(), Value::Number(Number::U64(i.nar_size)));
            arr.push(Value::Object(p));
        }
        o.insert("paths".into(), Value::Array(arr));
        o.insert(
            "already_valid".into(),
            Value::Number(Number::U64(self.already_valid as u64)),
        );
        o.insert(
            "download_bytes".into(),
            Value::Number(Number::U64(self.download_bytes)),
        );
        o.insert(
            "unpack_bytes".into(),
            Value::Number(Number::U64(self.unpack_bytes)),
        );
        o
    }

    pub fn render_json(&self) -> String {
        let mut s = miniserde::json::to_string(&Value::Object(self.to_json_value()));
        s.push('\n');
        s
    }
}

/// Fail early when the filesystem holding `store_dir` (or its nearest
/// existing ancestor, for a fresh image root) has less than `needed` bytes
/// free for unprivileged use.
pub fn check_disk_space(store_dir: &Path, needed: u64) -> Result<(), FetchError> {
    let mut dir = store_dir;
    while !dir.exists() {
        match dir.parent() {
            Some(p) => dir = p,
            None => break,
        }
    }
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
