//! Image-root backend: `--root DIR` writes `DIR/nix/store/<base>` and
//! records each path in `DIR/nix-path-registration`, which a NixOS image
//! loads on first boot with `nix-store --load-db` (docs/formats.md,
//! "nix-store --load-db"). One record per path, references first:
//!
//! ```text
//! /nix/store/<base>
//! <NarHash as bare base16, as --dump-db writes it>
//! <NarSize>
//! <deriver full path, or an empty line>
//! <number of references>
//! <one full reference path per line>
//! ```
//!
//! Validity: a path is valid when it is listed in the registration file and
//! present under `DIR/nix/store`. A path present but not listed is a
//! leftover of an interrupted run: `add_path` removes it and writes it anew.
//!
//! Durability: records are appended in batches: the store filesystem is
//! synced once, then the batch's records are written and fsync'd. Syncing
//! per path cost about 0.5 s per GiB (scripts/bench); a batch is flushed
//! when a couple of seconds have passed, at `finish`, and (best effort)
//! when the store is dropped after a failure, so finished paths stay
//! valid. Records are appended in `add_path` order, which is topological
//! (store/mod.rs), so a crash never lists a path whose references are not
//! listed; a torn last record is cut off when the file is next opened, and
//! paths on disk that a crash left unlisted are replaced on the next run.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::unpack::{self, Commit};
use super::{Store, StoreError};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::rootfs::{self, Dir};
use rustix::fs::OFlags;

pub const REGISTRATION: &str = "nix-path-registration";

/// Longest registration file read back (it lists paths, not contents).
const MAX_REGISTRATION: u64 = 256 * 1024 * 1024;

/// How long finished paths may wait for their batch to be registered.
const FLUSH_EVERY: Duration = Duration::from_secs(2);

pub struct ImageStore {
    root: PathBuf,
    reg_path: PathBuf,
    reg: Mutex<Registration>,
    /// Temp trees of dead runs removed (once, by the first `add_path` or
    /// `finish`: a run that writes; a dry run only opens the store).
    swept: std::sync::Once,
}

struct Registration {
    listed: BTreeSet<StorePath>,
    /// Opened on the first append, so that opening (a dry run) creates nothing.
    file: Option<File>,
    /// Records of complete paths not yet written (in `listed` already).
    pending: String,
    last_flush: Instant,
}

impl ImageStore {
    /// Open: read `DIR/nix-path-registration` if there is one. Nothing is
    /// created until the first path is added.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        let reg_path = root.join(REGISTRATION);
        let io_err = |what, err| StoreError::Io {
            what,
            file: reg_path.clone(),
            err,
        };
        let opened = open_root(root)
            .and_then(|d| d.open_file(REGISTRATION, OFlags::RDWR | OFlags::APPEND, 0));
        let (listed, file) = match opened {
            Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeSet::new(), None),
            Err(e) => return Err(io_err("opening", e)),
            Ok(mut file) => {
                let len = file.metadata().map_err(|e| io_err("reading", e))?.len();
                if len > MAX_REGISTRATION {
                    return Err(io_err(
                        "reading",
                        io::Error::other(format!("larger than {MAX_REGISTRATION} bytes")),
                    ));
                }
                let mut text = String::new();
                (&mut file)
                    .take(MAX_REGISTRATION)
                    .read_to_string(&mut text)
                    .map_err(|e| io_err("reading", e))?;
                let (listed, complete) = parse_registration(&text)
                    .map_err(|e| io_err("reading", io::Error::other(e)))?;
                if complete < text.len() {
                    // A record torn by a crash: drop it.
                    file.set_len(complete as u64)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io_err("truncating", e))?;
                }
                (listed, Some(file))
            }
        };
        Ok(ImageStore {
            root: root.to_path_buf(),
            reg_path,
            reg: Mutex::new(Registration {
                listed,
                file,
                pending: String::new(),
                last_flush: Instant::now(),
            }),
            swept: std::sync::Once::new(),
        })
    }

    /// Remove what killed runs left in the store (unpack::remove_debris).
    fn sweep(&self) {
        self.swept.call_once(|| {
            if let Ok(d) = unpack::open_store_dir(&self.root, false) {
                unpack::remove_debris(&d);
            }
        });
    }

    fn store_path_of(&self, p: &StorePath) -> PathBuf {
        self.root.join("nix/store").join(p.base_name())
    }

    fn is_listed(&self, p: &StorePath) -> bool {
        self.reg
            .lock()
            .map(|r| r.listed.contains(p))
            .unwrap_or(false)
    }

    /// Queue the record of a complete path; flush the batch when it has
    /// waited long enough.
    fn append(&self, info: &NarInfo) -> Result<(), StoreError> {
        let mut reg = self.lock_reg()?;
        reg.pending.push_str(&record_for(info));
        reg.listed.insert(info.store_path.clone());
        if reg.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush(&mut reg)?;
        }
        Ok(())
    }

    fn lock_reg(&self) -> Result<std::sync::MutexGuard<'_, Registration>, StoreError> {
        self.reg.lock().map_err(|_| StoreError::Io {
            what: "appending to",
            file: self.reg_path.clone(),
            err: io::Error::other("lock poisoned by a failed worker"),
        })
    }

    /// Sync the store's files, then append and fsync the pending records.
    fn flush(&self, reg: &mut Registration) -> Result<(), StoreError> {
        reg.last_flush = Instant::now();
        if reg.pending.is_empty() {
            return Ok(());
        }
        // The files must be durable before the records that make them valid.
        let store = unpack::open_store_dir(&self.root, false)?;
        rustix::fs::syncfs(store.fd()).map_err(|err| StoreError::Io {
            what: "syncing",
            file: store.path().to_path_buf(),
            err: err.into(),
        })?;
        if reg.file.is_none() {
            let created = open_root(&self.root).and_then(|d| {
                let flags = OFlags::RDWR | OFlags::APPEND | OFlags::CREATE;
                let file = d.open_file(REGISTRATION, flags, 0o644)?;
                // The file's directory entry must be durable too.
                let _ = d.sync();
                Ok(file)
            });
            let file = created.map_err(|err| StoreError::Io {
                what: "creating",
                file: self.reg_path.clone(),
                err,
            })?;
            reg.file = Some(file);
        }
        let Some(file) = reg.file.as_mut() else {
            unreachable!("opened just above")
        };
        file.write_all(reg.pending.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|err| StoreError::Io {
                what: "appending to",
                file: self.reg_path.clone(),
                err,
            })?;
        reg.pending.clear();
        Ok(())
    }
}

/// DIR itself, where the registration file lives (the file is never
/// followed if a symlink).
fn open_root(root: &Path) -> io::Result<Dir> {
    rootfs::open_dir(Some(root), root)
}

/// After a failed apply the paths that did complete stay valid.
impl Drop for ImageStore {
    fn drop(&mut self) {
        if let Ok(mut reg) = self.reg.lock() {
            let _ = self.flush(&mut reg);
        }
    }
}

/// One `--load-db` record (formats.md "nix-store --load-db").
fn record_for(info: &NarInfo) -> String {
    let mut s = format!(
        "{}\n{}\n{}\n{}\n{}\n",
        info.store_path,
        info.nar_hash.to_hex(),
        info.nar_size,
        info.deriver
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
        info.references.len()
    );
    for r in &info.references {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    s
}

/// The paths listed, and the length of the prefix made of complete
/// records. A malformed complete record is an error naming its line.
fn parse_registration(text: &str) -> Result<(BTreeSet<StorePath>, usize), String> {
    let mut listed = BTreeSet::new();
    let mut complete = 0usize;
    let mut lines = Lines {
        text,
        pos: 0,
        no: 0,
    };
    'records: while let Some(path) = lines.next_line() {
        let no = lines.no;
        let path = StorePath::parse(path).map_err(|e| format!("line {no}: {e}"))?;
        let mut fields = [""; 4];
        for f in &mut fields {
            let Some(l) = lines.next_line() else {
                break 'records;
            };
            *f = l;
        }
        let n: usize = fields[3]
            .parse()
            .map_err(|_| format!("line {}: bad reference count '{}'", no + 4, fields[3]))?;
        for _ in 0..n {
            if lines.next_line().is_none() {
                break 'records;
            }
        }
        listed.insert(path);
        complete = lines.pos;
    }
    Ok((listed, complete))
}

/// Full lines ('\n'-terminated) of a text; a torn last line is not given.
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    no: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<&'a str> {
        let rest = &self.text[self.pos..];
        let end = rest.find('\n')?;
        self.pos += end + 1;
        self.no += 1;
        Some(&rest[..end])
    }
}

impl Store for ImageStore {
    fn describe(&self) -> String {
        format!("image root {}", self.root.display())
    }

    fn query_valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        let store = match unpack::open_store_dir(&self.root, false) {
            Ok(d) => d,
            Err(StoreError::Io { err, .. }) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(BTreeSet::new())
            }
            Err(e) => return Err(e),
        };
        Ok(paths
            .iter()
            .filter(|p| self.is_listed(p))
            .filter(|p| store.exists(p.base_name()))
            .cloned()
            .collect())
    }

    fn add_temp_roots(&self, _paths: &[StorePath]) -> Result<(), StoreError> {
        // Nothing collects garbage in an image being built.
        Ok(())
    }

    fn add_path(&self, info: &NarInfo, nar: &mut dyn Read) -> Result<(), StoreError> {
        self.sweep();
        // As every backend: never register a path before its references.
        super::check_references(self, info)?;
        let path = &info.store_path;
        let final_path = self.store_path_of(path);
        let store = unpack::open_store_dir(&self.root, true)?;
        let present = store.exists(path.base_name());
        if present && !self.is_listed(path) {
            // Leftover of an interrupted run: never trust it.
            store
                .remove_tree(path.base_name())
                .map_err(|err| StoreError::Io {
                    what: "removing unregistered leftover",
                    file: final_path.clone(),
                    err,
                })?;
        }
        let unpacked = unpack::unpack_verified(&store, info, nar)?;
        match unpacked.commit()? {
            Commit::Placed => {}
            Commit::AlreadyThere if self.is_listed(path) => return Ok(()),
            Commit::AlreadyThere => {
                return Err(StoreError::Conflict {
                    path: path.clone(),
                    file: final_path,
                })
            }
        }
        self.append(info)
    }

    fn finish(&self) -> Result<(), StoreError> {
        self.sweep();
        let mut reg = self.lock_reg()?;
        self.flush(&mut reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{sp, TempDir};

    const A: &str = "/nix/store/11111111111111111111111111111111-a";
    const B: &str = "/nix/store/22222222222222222222222222222222-b";

    #[test]
    fn registration_parse_cases() {
        let rec_a = format!("{A}\nabcd\n8\n\n0\n");
        let rec_b = format!("{B}\nabcd\n8\n\n1\n{A}\n");
        let cases: [(&str, String, usize, usize); 4] = [
            ("empty", String::new(), 0, 0),
            (
                "two records",
                format!("{rec_a}{rec_b}"),
                2,
                rec_a.len() + rec_b.len(),
            ),
            (
                "torn in references",
                format!("{rec_a}{B}\nabcd\n8\n\n1\n"),
                1,
                rec_a.len(),
            ),
            ("torn mid-line", format!("{rec_a}{B}\nab"), 1, rec_a.len()),
        ];
        for (name, text, n, complete) in cases {
            let (listed, c) = parse_registration(&text).unwrap();
            assert_eq!((listed.len(), c), (n, complete), "{name}");
        }
        assert_eq!(
            parse_registration(&format!("{A}\nabcd\n8\n\nmany\n")).unwrap_err(),
            "line 5: bad reference count 'many'"
        );
        assert_eq!(
            parse_registration(
                "/etc/passwd
"
            )
            .unwrap_err(),
            "line 1: store path \"/etc/passwd\": not directly in /nix/store"
        );
    }

    #[test]
    fn open_cuts_a_torn_record_and_validity_needs_the_files() {
        let img = TempDir::new("reg");
        let good = format!("{A}\nabcd\n8\n\n0\n{B}\nabcd\n8\n\n1\n{A}\n");
        std::fs::write(img.0.join(REGISTRATION), format!("{good}{B}\nab")).unwrap();
        let store = ImageStore::open(&img.0).unwrap();
        assert_eq!(
            std::fs::read_to_string(img.0.join(REGISTRATION)).unwrap(),
            good
        );
        let (a, b) = (sp('1', "a"), sp('2', "b"));
        // Listed but absent on disk: not valid.
        std::fs::create_dir_all(img.0.join("nix/store")).unwrap();
        std::fs::write(img.0.join("nix/store").join(a.base_name()), b"x").unwrap();
        let valid = store.query_valid(&[a.clone(), b]).unwrap();
        assert_eq!(valid.into_iter().collect::<Vec<_>>(), vec![a]);
    }
}
