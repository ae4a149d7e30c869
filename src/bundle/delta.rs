//! Delta bundles: `bundle create REF --since OLD`.
//!
//! A delta carries the narinfos and NARs of the paths of REF's closure
//! that are not in OLD's closure, and nothing else. Its manifest (format
//! [`DELTA_FORMAT`]) still lists the whole closure it
//! completes, with NarHash, NarSize and references for every path, and
//! names the paths it leaves out (`left_out`), so a reader can check the
//! closure as for a full bundle and knows what the device must already
//! have. `apply --from` a delta first asks the store for every left-out
//! path ([`check_base`]) and refuses, naming the missing ones, before it
//! registers anything.
//!
//! `OLD` is what the devices already have: an earlier bundle (a tar file
//! or a dir bundle), its manifest, or a store path whose closure is then
//! walked in the same cache, every narinfo verified as for a plan.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use super::{Manifest, DELTA_FORMAT, FORMAT, MANIFEST, MANIFEST_LIMIT};
use crate::cache::CacheClient;
use crate::error::{Error, Exit};
use crate::nix::narinfo::signature::TrustedKeys;
use crate::nix::store_path::StorePath;
use crate::store::Store;

/// What the devices already have, by `--since`.
#[derive(Debug)]
pub struct Since {
    /// The store path OLD deploys (the manifest's), or the one given.
    pub root: String,
    /// Every path of its closure.
    pub closure: BTreeSet<String>,
}

fn bad(since: &str, msg: impl std::fmt::Display) -> Error {
    Error::usage(format!("--since {since}: {msg}"))
}

/// Read `--since OLD`: a bundle file or directory, a manifest, or a store
/// path (its closure walked through `cache`, narinfos verified by `keys`).
pub fn read_since(
    since: &str,
    cache: &dyn CacheClient,
    keys: &TrustedKeys,
    jobs: usize,
) -> Result<Since, Error> {
    let p = Path::new(since);
    let bundle_dir = p.is_dir() && p.join(MANIFEST).exists();
    if !bundle_dir {
        if let Ok(root) = StorePath::parse(since) {
            let plan =
                crate::plan::plan(cache, &crate::store::EmptyStore, keys, &root, jobs)
                    .map_err(|e| {
                        let e = Error::from(e);
                        Error::new(
                            e.exit,
                            format!(
                                "--since {since}: walking its closure in {}: {} (an earlier bundle or its manifest works without the cache)",
                                cache.base_url(),
                                e.message
                            ),
                        )
                    })?;
            return Ok(Since {
                root: root.to_absolute(),
                closure: (plan.paths.iter())
                    .map(|i| i.store_path.to_absolute())
                    .collect(),
            });
        }
    }
    let bytes = if bundle_dir {
        read_bounded(&p.join(MANIFEST), since)?
    } else {
        let f = std::fs::File::open(p).map_err(|e| {
            bad(
                since,
                format!("{e} (expected a bundle, its manifest or a store path)"),
            )
        })?;
        let mut peek = std::io::BufReader::new(f);
        let first = {
            use std::io::BufRead as _;
            let buf = peek.fill_buf().map_err(|e| bad(since, e))?;
            buf.first().copied()
        };
        if first == Some(b'{') {
            read_limited(peek, since)?
        } else {
            let what = format!("bundle {since}");
            let mut r = super::tar::Reader::new(peek, &what);
            match r.next_entry().map_err(|e| bad(since, e))? {
                Some((name, _)) if name == MANIFEST => {}
                _ => {
                    return Err(bad(
                        since,
                        format!("not a bundle or a manifest: no {MANIFEST} first"),
                    ))
                }
            }
            r.read_entry(MANIFEST_LIMIT).map_err(|e| bad(since, e))?
        }
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad(since, "the manifest is not UTF-8"))?;
    let manifest: Manifest = miniserde::json::from_str(text)
        .map_err(|_| bad(since, format!("not a valid {MANIFEST}")))?;
    if manifest.format != FORMAT && manifest.format != DELTA_FORMAT {
        return Err(bad(
            since,
            format!("manifest format '{}' is not {FORMAT}", manifest.format),
        ));
    }
    // A delta's manifest lists the whole closure it completed: a device
    // that applied it has all of it.
    Ok(Since {
        root: manifest.store_path.clone(),
        closure: manifest.closure.iter().map(|e| e.path.clone()).collect(),
    })
}

fn read_bounded(p: &Path, since: &str) -> Result<Vec<u8>, Error> {
    let f = std::fs::File::open(p).map_err(|e| bad(since, format!("{}: {e}", p.display())))?;
    read_limited(f, since)
}

fn read_limited(r: impl Read, since: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    r.take(MANIFEST_LIMIT + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(since, e))?;
    if out.len() as u64 > MANIFEST_LIMIT {
        return Err(bad(
            since,
            format!("the manifest is larger than {} MiB", MANIFEST_LIMIT >> 20),
        ));
    }
    Ok(out)
}

/// A delta's left-out paths must all be valid in `store` (this machine,
/// or the `--root`): otherwise refuse, naming them, before anything is
/// registered.
pub fn check_base(what: &str, store: &dyn Store, left_out: &[StorePath]) -> Result<(), Error> {
    if left_out.is_empty() {
        return Ok(());
    }
    let valid = store.query_valid(left_out).map_err(Error::from)?;
    let missing: Vec<String> = (left_out.iter())
        .filter(|p| !valid.contains(*p))
        .map(|p| p.to_absolute())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Exit::Cache,
        format!(
            "{what} is a delta: it leaves out {} that {} does not have, so nothing was registered: {}; apply the bundle it was made against first, or a full bundle",
            crate::progress::plural(missing.len() as u64, "path"),
            store.describe(),
            missing.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manifest_reads_without_the_delta_fields() {
        let json = r#"{"format":"fh-lite-bundle-1","reference":"o/p/=1#a","version":"1","attribute_path":"a","store_path":"/nix/store/00000000000000000000000000000000-a","created":1,"fh_lite_version":"0","closure":[]}"#;
        let m: Manifest = miniserde::json::from_str(json).unwrap();
        assert!(m.since.is_none() && m.left_out.is_none());
        assert_eq!(m.carried().count(), 0);
    }

    #[test]
    fn a_manifest_file_names_its_whole_closure() {
        let dir = crate::testutil::TempDir::new("delta");
        let p = dir.0.join("m.json");
        let a = "/nix/store/00000000000000000000000000000000-a";
        let b = "/nix/store/11111111111111111111111111111111-b";
        let entry = |p: &str| {
            format!(
                r#"{{"path":"{p}","nar_hash":"h","nar_size":1,"file_hash":null,"file_size":null,"references":[],"nar":"nar/x"}}"#
            )
        };
        std::fs::write(
            &p,
            format!(
                r#"{{"format":"fh-lite-delta-1","reference":"r","version":null,"attribute_path":"a","store_path":"{a}","created":1,"fh_lite_version":"0","closure":[{},{}],"since":null,"left_out":["{b}"]}}"#,
                entry(a),
                entry(b)
            ),
        )
        .unwrap();
        let cache = crate::testutil::cache::TestCache::new();
        let s = read_since(p.to_str().unwrap(), &cache, &TrustedKeys::default(), 1).unwrap();
        assert_eq!(s.root, a);
        assert_eq!(s.closure.len(), 2, "a delta's manifest counts whole");
        let e = read_since("/nonexistent/x", &cache, &TrustedKeys::default(), 1).unwrap_err();
        assert!(
            e.message.contains("--since /nonexistent/x"),
            "{}",
            e.message
        );
    }
}
