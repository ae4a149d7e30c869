//! `apply --from FILE|DIR|-`: a bundle as the source of a closure.
//!
//! [`open`] reads the manifest, its signature and every narinfo (bounded,
//! before any NAR), and checks, in this order: the manifest signature
//! against `--trusted-bundle-key`; each narinfo is the one of the path it
//! is named after and is signed by a trusted cache key; each agrees with
//! the manifest's entry; the references from the manifest's store path
//! reach exactly the manifest's closure. For a regular file it then reads
//! the NARs once without writing anything, checking each one's FileHash
//! and FileSize, so a damaged file is refused before anything is
//! registered. Fetch then streams each NAR through the same verified
//! pipeline as a download (fetch/mod.rs: NarHash, NarSize, strict NAR parse).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::bundle::tar::Reader;
use crate::bundle::SIGNATURE_LIMIT;
use crate::bundle::{
    Entry, Manifest, DELTA_FORMAT, FORMAT, MANIFEST, MANIFEST_LIMIT, NARINFO_LIMIT, SIGNATURE,
};
use crate::cache::{CacheClient, FetchError};
use crate::error::{Error, Exit};
use crate::fetch::FetchOptions;
use crate::http::Secret;
use crate::nix::hash::Sha256;
use crate::nix::narinfo::signature::TrustedKeys;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::options::{ApplyOpts, OfflineOpts};
use crate::outref::OutputRef;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::source::Source;
use crate::store::Store;

type Stream = Reader<Box<dyn Read + Send>>;

/// Where the bundle is.
enum Place {
    /// A tar stream (a file or standard input), read once, in order.
    Tar(Arc<Mutex<Stream>>),
    /// A binary-cache directory.
    Dir(PathBuf),
}

pub struct Bundle {
    /// The bundle's name in messages (the path, or "standard input").
    what: String,
    /// Some(what) when no trusted key signed the manifest
    /// (`--allow-unsigned-bundle`): its reference is unproven.
    unproven: Option<String>,
    place: Place,
    store_path: StorePath,
    /// The manifest's reference; None for a bundle made from a store path.
    reference: Option<OutputRef>,
    /// hash part → narinfo text, all verified by [`open`].
    narinfos: BTreeMap<String, String>,
    /// NAR name → store path (for messages).
    nars: BTreeMap<String, StorePath>,
    /// Store path → its NAR's name in the bundle, from the manifest (a
    /// narinfo's `URL:` is not signed and never used).
    nar_of: BTreeMap<StorePath, String>,
    /// NAR name → the NAR names of its references (stream order check).
    refs_of: BTreeMap<String, Vec<String>>,
    /// NAR names met so far in the tar stream.
    seen: BTreeSet<String>,
    /// NAR name → the most bytes its file may have.
    limit_of: BTreeMap<String, u64>,
    /// A delta: the closure's paths it does not carry (bundle/delta.rs).
    left_out: Vec<StorePath>,
    /// A truncation met while streaming: the message for a second request.
    broken: Arc<Mutex<Option<String>>>,
    no_token: Secret,
}

fn refuse(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(Exit::Verification, format!("{what}: {msg}"))
}

fn read_err(what: &str, e: io::Error) -> Error {
    match e.kind() {
        // The tar reader's messages name the bundle already.
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
            Error::new(Exit::Verification, e.to_string())
        }
        _ => Error::new(Exit::Internal, format!("read {what}: {e}")),
    }
}

/// Open `from` (`-`: standard input) and verify everything but the NARs.
pub fn open(
    frontend_addr: &str,
    opts: &ApplyOpts,
    offline: &OfflineOpts,
    from: &Path,
) -> Result<Bundle, Error> {
    let stdin = from == Path::new("-");
    let what = if stdin {
        "bundle on standard input".to_string()
    } else {
        format!("bundle {}", from.display())
    };
    let is_dir = !stdin && from.is_dir();
    let (manifest_bytes, sig, narinfos, place) = if is_dir {
        read_dir(from, &what)?
    } else {
        let input: Box<dyn Read + Send> = if stdin {
            Box::new(io::stdin())
        } else {
            Box::new(open_file(from)?)
        };
        read_head(Reader::new(input, &what), &what)?
    };
    let signed = crate::bundle::verify_manifest(
        &what,
        &manifest_bytes,
        sig.as_deref(),
        &offline.trusted_bundle_keys,
        offline.allow_unsigned_bundle,
    )?;
    let manifest = parse_manifest(&what, &manifest_bytes)?;
    let left_out = check_left_out(&what, &manifest)?;
    let store_path = check_closure(&what, &manifest, &narinfos, &opts.trusted_keys)?;
    // A regular file can be read twice; a FIFO or a device is a stream,
    // checked while it is read, as standard input is.
    let regular = !stdin && !is_dir && std::fs::metadata(from).is_ok_and(|m| m.is_file());
    if regular {
        prepass(from, &what, &manifest)?;
    }
    let reference =
        crate::outref::parse(&manifest.reference, frontend_addr, &manifest.attribute_path)
            .map_err(|e| refuse(&what, format!("manifest reference: {e}")))?;
    let reference = (!crate::bundle::is_store_path_ref(&reference)).then_some(reference);
    let nars = (manifest.carried())
        .filter_map(|e| Some((e.nar.clone(), StorePath::parse(&e.path).ok()?)))
        .collect();
    let nar_of = (manifest.carried())
        .filter_map(|e| Some((StorePath::parse(&e.path).ok()?, e.nar.clone())))
        .collect();
    let refs_of = references_by_nar(&manifest);
    let limit_of = (manifest.carried())
        .map(|e| {
            let bound = e.file_size.unwrap_or(crate::fetch::body_bound(e.nar_size));
            (e.nar.clone(), bound)
        })
        .collect();
    let unproven = (!signed).then(|| what.clone());
    Ok(Bundle {
        what,
        unproven,
        place,
        store_path,
        reference,
        narinfos,
        nars,
        nar_of,
        refs_of,
        seen: BTreeSet::new(),
        limit_of,
        left_out,
        broken: Arc::new(Mutex::new(None)),
        no_token: Secret::new(""),
    })
}

/// The manifest of the bundle `what`: UTF-8 JSON of a format this fh-lite
/// reads, a delta exactly when it has a left_out list.
fn parse_manifest(what: &str, bytes: &[u8]) -> Result<Manifest, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| refuse(what, "the manifest is not UTF-8"))?;
    let manifest: Manifest = miniserde::json::from_str(text)
        .map_err(|_| refuse(what, format!("{MANIFEST} is not a valid manifest")))?;
    let delta = manifest.format == DELTA_FORMAT;
    if manifest.format != FORMAT && !delta {
        return Err(refuse(
            what,
            format!("manifest format '{}' is not {FORMAT}", manifest.format),
        ));
    }
    if delta != manifest.left_out.is_some() {
        return Err(refuse(
            what,
            "the manifest's format and its left_out list disagree: the manifest was altered",
        ));
    }
    Ok(manifest)
}

fn open_file(p: &Path) -> Result<std::fs::File, Error> {
    std::fs::File::open(p).map_err(|e| {
        Error::new(
            Exit::Usage,
            format!("cannot open bundle {}: {e}", p.display()),
        )
    })
}

/// Open `name` in the dir bundle `dir` for reading: never through a
/// symlink, never blocking (`O_NOFOLLOW|O_NONBLOCK`: a FIFO there does not
/// hang the open), and only a regular file of at most `limit` bytes.
fn open_member(dir: &Path, name: &str, limit: u64) -> io::Result<std::fs::File> {
    use rustix::fs::{FileType, Mode, OFlags};
    let (sub, base) = match name.split_once('/') {
        Some((d, b)) => (dir.join(d), b),
        None => (dir.to_path_buf(), name),
    };
    if base.is_empty() || base == "." || base == ".." || base.contains('/') {
        return Err(io::Error::other(format!(
            "'{name}' is not a file name in the bundle"
        )));
    }
    let d = rustix::fs::open(
        &sub,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&d, base, flags, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            io::Error::other("it is a symbolic link")
        } else {
            e.into()
        }
    })?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("it is not a regular file"));
    }
    if st.st_size as u64 > limit {
        return Err(io::Error::other(format!(
            "it is {} bytes, more than the {limit} allowed",
            st.st_size
        )));
    }
    // Back to blocking reads (a regular file never blocks anyway).
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(std::fs::File::from(fd))
}

/// Read the dir bundle's member `name` whole, bounded ([`open_member`]).
fn read_member(dir: &Path, name: &str, limit: u64) -> io::Result<Vec<u8>> {
    let f = open_member(dir, name, limit)?;
    let mut out = Vec::new();
    f.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::other(format!("more than {limit} bytes")));
    }
    Ok(out)
}

/// The NAR names of each NAR's references (other than itself), from the
/// manifest.
fn references_by_nar(manifest: &Manifest) -> BTreeMap<String, Vec<String>> {
    // A delta's left-out paths have no NAR in the bundle: not waited for.
    let nar_of: BTreeMap<&str, &str> = (manifest.carried())
        .map(|e| (e.path.as_str(), e.nar.as_str()))
        .collect();
    (manifest.carried())
        .map(|e| {
            let refs = (e.references.iter())
                .filter(|r| **r != e.path)
                .filter_map(|r| nar_of.get(r.as_str()).map(|n| n.to_string()))
                .collect();
            (e.nar.clone(), refs)
        })
        .collect()
}

/// The tar stream's NAR `name`, met after those in `seen`: refused when it
/// is not in the manifest, met twice, or before one of its references (a
/// bundle's NARs come references first, as `bundle create` writes them).
fn check_order(
    what: &str,
    refs_of: &BTreeMap<String, Vec<String>>,
    seen: &mut BTreeSet<String>,
    name: &str,
) -> Result<(), Error> {
    let Some(refs) = refs_of.get(name) else {
        return Err(refuse(
            what,
            format!("unexpected entry {name}: the manifest lists no such NAR"),
        ));
    };
    if let Some(r) = refs.iter().find(|r| !seen.contains(*r)) {
        return Err(refuse(
            what,
            format!("{name} comes before {r}, the NAR of one of its references: the bundle was reordered or altered"),
        ));
    }
    if !seen.insert(name.to_string()) {
        return Err(refuse(
            what,
            format!("{name} appears twice: the bundle was altered"),
        ));
    }
    Ok(())
}

type Head = (Vec<u8>, Option<Vec<u8>>, BTreeMap<String, String>, Place);

/// The tar bundle's manifest, signature and narinfos; the stream is left
/// at the first NAR's header.
fn read_head(mut r: Stream, what: &str) -> Result<Head, Error> {
    let e = |err| read_err(what, err);
    match r.next_entry().map_err(e)? {
        Some((name, _)) if name == MANIFEST => {}
        _ => {
            return Err(refuse(
                what,
                format!("not an fh-lite bundle: the first entry is not {MANIFEST}"),
            ))
        }
    }
    let manifest = r.read_entry(MANIFEST_LIMIT).map_err(e)?;
    let mut sig = None;
    let mut narinfos = BTreeMap::new();
    let mut total = 0u64;
    while let Some((name, size)) = r.next_entry().map_err(e)? {
        if name == SIGNATURE && sig.is_none() && narinfos.is_empty() {
            sig = Some(r.read_entry(SIGNATURE_LIMIT).map_err(e)?);
        } else if let Some(hash) = name.strip_suffix(".narinfo") {
            total = total.saturating_add(size);
            check_narinfo_caps(what, narinfos.len() + 1, total)?;
            let text = r.read_entry(NARINFO_LIMIT).map_err(e)?;
            let text = String::from_utf8(text)
                .map_err(|_| refuse(what, format!("{name} is not UTF-8")))?;
            if narinfos.insert(hash.to_string(), text).is_some() {
                return Err(refuse(what, format!("{name} appears twice")));
            }
        } else if name.starts_with("nar/") {
            // The first NAR: fetch reads it.
            r.unread_header();
            break;
        } else {
            return Err(refuse(what, format!("unexpected entry {name}")));
        }
    }
    Ok((manifest, sig, narinfos, Place::Tar(Arc::new(Mutex::new(r)))))
}

/// The dir bundle's manifest, signature and narinfos.
fn read_dir(dir: &Path, what: &str) -> Result<Head, Error> {
    let manifest = read_member(dir, MANIFEST, MANIFEST_LIMIT).map_err(|err| {
        refuse(
            what,
            format!("no readable {MANIFEST} ({err}): not an fh-lite bundle"),
        )
    })?;
    let sig = match read_member(dir, SIGNATURE, SIGNATURE_LIMIT) {
        Ok(s) => Some(s),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => return Err(refuse(what, format!("{SIGNATURE}: {err}"))),
    };
    let mut narinfos = BTreeMap::new();
    let mut total = 0u64;
    let entries = std::fs::read_dir(dir).map_err(|err| Error::option_file("read", dir, &err))?;
    for ent in entries {
        let ent = ent.map_err(|err| Error::option_file("read", dir, &err))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(hash) = name.strip_suffix(".narinfo") {
            let text = read_member(dir, &name, NARINFO_LIMIT)
                .map_err(|err| refuse(what, format!("{name}: {err}")))?;
            total = total.saturating_add(text.len() as u64);
            check_narinfo_caps(what, narinfos.len() + 1, total)?;
            let text = String::from_utf8(text)
                .map_err(|_| refuse(what, format!("{name} is not UTF-8")))?;
            narinfos.insert(hash.to_string(), text);
        }
    }
    Ok((manifest, sig, narinfos, Place::Dir(dir.to_path_buf())))
}

/// More narinfos than any closure has, or more bytes of them: refused
/// before they are read (the signature is not checked yet).
pub const MAX_NARINFOS: usize = 100_000;
pub const NARINFOS_TOTAL_LIMIT: u64 = 32 << 20;

fn check_narinfo_caps(what: &str, count: usize, total: u64) -> Result<(), Error> {
    if count > MAX_NARINFOS {
        return Err(refuse(
            what,
            format!("it holds more than {MAX_NARINFOS} narinfos"),
        ));
    }
    if total > NARINFOS_TOTAL_LIMIT {
        return Err(refuse(
            what,
            format!(
                "its narinfos come to more than {} MiB",
                NARINFOS_TOTAL_LIMIT >> 20
            ),
        ));
    }
    Ok(())
}

/// Every narinfo against its name, the cache keys and the manifest; the
/// closure against the manifest. Returns the store path to deploy.
fn check_closure(
    what: &str,
    manifest: &Manifest,
    narinfos: &BTreeMap<String, String>,
    keys: &TrustedKeys,
) -> Result<StorePath, Error> {
    let root = StorePath::parse(&manifest.store_path)
        .map_err(|e| refuse(what, format!("manifest store path: {e}")))?;
    let mut infos: BTreeMap<StorePath, NarInfo> = BTreeMap::new();
    // A delta's left-out paths: their references, from the manifest.
    let mut left_refs: BTreeMap<StorePath, Vec<StorePath>> = BTreeMap::new();
    let left_out: BTreeSet<&str> = (manifest.left_out.iter().flatten())
        .map(String::as_str)
        .collect();
    for entry in &manifest.closure {
        let path = StorePath::parse(&entry.path)
            .map_err(|e| refuse(what, format!("manifest closure: {e}")))?;
        if left_out.contains(entry.path.as_str()) {
            let refs = (entry.references.iter())
                .map(|r| StorePath::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refuse(what, format!("manifest closure: {e}")))?;
            left_refs.insert(path, refs);
            continue;
        }
        let name = format!("{}.narinfo", path.hash_part());
        let Some(text) = narinfos.get(path.hash_part()) else {
            return Err(refuse(
                what,
                format!("the manifest lists {path}, but the bundle has no {name}"),
            ));
        };
        let info = match NarInfo::parse(text, path.hash_part()) {
            Ok(info) => info,
            Err(e) => {
                let other = text.lines().find_map(|l| l.strip_prefix("StorePath: "));
                return Err(match other {
                    Some(o) if o != path.to_absolute() => refuse(
                        what,
                        format!("{name} holds the narinfo of {o}, not of {path}: the bundle was altered"),
                    ),
                    _ => refuse(what, format!("{name}: {e}")),
                });
            }
        };
        keys.verify(&info)
            .map_err(|e| refuse(what, format!("{name}: {e}")))?;
        let from_narinfo = Entry::of(&info);
        if &from_narinfo != entry {
            return Err(refuse(
                what,
                format!("the manifest's entry for {path} does not match its signed narinfo (NarHash, NarSize, FileHash, FileSize or References): the bundle was altered"),
            ));
        }
        infos.insert(path, info);
    }
    if narinfos.len() != infos.len() {
        return Err(refuse(
            what,
            "the bundle holds narinfos the manifest does not list",
        ));
    }
    if !infos.contains_key(&root) && !left_refs.contains_key(&root) {
        return Err(refuse(
            what,
            format!("the manifest names {root} as the system to deploy, but its closure does not hold it: the manifest was altered"),
        ));
    }
    // The closure of the root, by the signed references.
    let mut reached: BTreeSet<&StorePath> = BTreeSet::new();
    let mut todo = vec![&root];
    while let Some(p) = todo.pop() {
        if !reached.insert(p) {
            continue;
        }
        if let Some(refs) = left_refs.get(p) {
            todo.extend(refs.iter());
            continue;
        }
        let Some(info) = infos.get(p) else {
            return Err(refuse(
                what,
                format!("{p} is in the closure of {root} but not in the bundle"),
            ));
        };
        todo.extend(info.references.iter());
    }
    if reached.len() != infos.len() + left_refs.len() {
        return Err(refuse(
            what,
            format!(
                "the manifest's closure is not the closure of {root}: the manifest was altered"
            ),
        ));
    }
    Ok(root)
}

/// A delta's `left_out`: store paths of its closure, each once.
fn check_left_out(what: &str, manifest: &Manifest) -> Result<Vec<StorePath>, Error> {
    let closure: BTreeSet<&str> = manifest.closure.iter().map(|e| e.path.as_str()).collect();
    let mut out = Vec::new();
    let mut met = BTreeSet::new();
    for p in manifest.left_out.iter().flatten() {
        if !closure.contains(p.as_str()) || !met.insert(p.as_str()) {
            return Err(refuse(
                what,
                format!("the manifest leaves out {p}, which is not once in its closure: the manifest was altered"),
            ));
        }
        out.push(StorePath::parse(p).map_err(|e| refuse(what, format!("manifest left_out: {e}")))?);
    }
    Ok(out)
}

/// A regular file: read every NAR once, checking FileSize and FileHash
/// (from the signed manifest), before anything is registered.
fn prepass(from: &Path, what: &str, manifest: &Manifest) -> Result<(), Error> {
    let e = |err| read_err(what, err);
    let file: Box<dyn Read + Send> = Box::new(io::BufReader::new(open_file(from)?));
    let mut r = Reader::new(file, what);
    let by_nar: BTreeMap<&str, &Entry> = manifest.carried().map(|e| (e.nar.as_str(), e)).collect();
    let refs_of = references_by_nar(manifest);
    let mut met = BTreeSet::new();
    let mut seen = 0usize;
    while let Some((name, size)) = r.next_entry().map_err(e)? {
        if !name.starts_with("nar/") {
            continue;
        }
        check_order(what, &refs_of, &mut met, &name)?;
        let Some(entry) = by_nar.get(name.as_str()) else {
            continue;
        };
        seen += 1;
        if entry.file_size.is_some_and(|s| s != size) {
            return Err(refuse(what, format!("{name} is {size} bytes, but the narinfo of {} says FileSize {}: the bundle was altered", entry.path, entry.file_size.unwrap_or(0))));
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(e)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        if let Some(want) = &entry.file_hash {
            let got = Sha256(ctx.finish().as_ref().try_into().unwrap_or([0; 32]));
            if Sha256::parse(want).ok() != Some(got) {
                return Err(refuse(what, format!("{name} does not match the FileHash of {} ({want}, got {got}): the NAR was altered or damaged; nothing was registered", entry.path)));
            }
        }
    }
    let carried = manifest.carried().count();
    if seen != carried {
        return Err(refuse(
            what,
            format!("it holds {seen} of the {carried} NARs its manifest lists"),
        ));
    }
    Ok(())
}

/// One NAR entry of the tar stream, read through the shared reader.
struct EntryReader {
    stream: Arc<Mutex<Stream>>,
    broken: Arc<Mutex<Option<String>>>,
}

impl Read for EntryReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("bundle reader poisoned"))?;
        let r = s.read(buf);
        if let Err(e) = &r {
            if let Ok(mut b) = self.broken.lock() {
                b.get_or_insert_with(|| e.to_string());
            }
        }
        r
    }
}

impl CacheClient for Bundle {
    fn base_url(&self) -> &str {
        &self.what
    }
    fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError> {
        Ok(self.narinfos.get(hash_part).cloned())
    }
    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        let name = url.strip_prefix(&format!("{}/", self.what)).unwrap_or(url);
        match &self.place {
            Place::Dir(dir) => {
                let p = dir.join(name);
                // A bound on the file: its signed FileSize, else what the
                // fetch accepts for its NarSize.
                let limit = self.limit_of.get(name).copied().unwrap_or(0);
                let f = open_member(dir, name, limit).map_err(|e| FetchError::Truncated {
                    path: self
                        .nars
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| self.store_path.clone()),
                    url: url.to_string(),
                    detail: format!("cannot open {}: {e}", p.display()),
                })?;
                Ok(Box::new(io::BufReader::new(f)))
            }
            Place::Tar(stream) => {
                if let Some(b) = self.broken.lock().ok().and_then(|b| b.clone()) {
                    return Err(FetchError::Truncated {
                        path: self
                            .nars
                            .get(name)
                            .cloned()
                            .unwrap_or_else(|| self.store_path.clone()),
                        url: url.to_string(),
                        detail: b,
                    });
                }
                Ok(Box::new(EntryReader {
                    stream: stream.clone(),
                    broken: self.broken.clone(),
                }))
            }
        }
    }
    fn nar_url(&self, info: &NarInfo) -> String {
        // The manifest's name for it; never the narinfo's unsigned URL.
        let name = (self.nar_of.get(&info.store_path))
            .map_or_else(|| crate::bundle::nar_name(info), String::clone);
        format!("{}/{name}", self.what)
    }
}

impl Source for Bundle {
    fn store_path(&self) -> &StorePath {
        &self.store_path
    }
    fn reference(&self) -> Option<&OutputRef> {
        self.reference.as_ref()
    }
    fn unproven(&self) -> Option<&str> {
        self.unproven.as_deref()
    }
    fn token(&self) -> &Secret {
        &self.no_token
    }
    fn cache(&self) -> Box<dyn CacheClient + '_> {
        Box::new(BundleRef(self))
    }
    fn check_store(&self, store: &dyn Store) -> Result<(), Error> {
        if !store.reads_nar() {
            return Err(Error::usage("apply --from cannot use --store nix (nix copy fetches from a cache, not from a bundle)"));
        }
        // A delta: what it leaves out must be here already (bundle/delta.rs).
        crate::bundle::delta::check_base(&self.what, store, &self.left_out)
    }
    fn fetch_itself(
        &mut self,
        store: &dyn Store,
        plan: &Plan,
        how: &FetchOptions,
        progress: &Progress,
    ) -> Option<Result<(), Error>> {
        Some(self.fetch(store, plan, how, progress))
    }
}

impl Bundle {
    /// The plan's NARs into the store: from a directory as from a cache; from
    /// a tar stream in the order of the bundle (references first).
    fn fetch(
        &mut self,
        store: &dyn Store,
        plan: &Plan,
        how: &FetchOptions,
        progress: &Progress,
    ) -> Result<(), Error> {
        // A bundle cannot be asked again from an offset: no resume lines.
        let how = &FetchOptions {
            notes: false,
            ..how.clone()
        };
        let Place::Tar(stream) = &self.place else {
            return Ok(crate::fetch::fetch_all(self, store, plan, how, progress)?);
        };
        // A stream: paths in the order of the bundle (references first).
        let mut wanted: BTreeMap<String, &NarInfo> =
            plan.paths.iter().map(|i| (self.nar_url(i), i)).collect();
        // One NAR at a time, in stream order: the whole budget is its.
        let memory = crate::pool::Budget::new(crate::fetch::NAR_MEMORY);
        loop {
            let next = stream
                .lock()
                .map_err(|_| Error::new(Exit::Internal, "bundle reader poisoned"))?
                .next_entry();
            let Some((name, _)) = next.map_err(|e| read_err(&self.what, e))? else {
                break;
            };
            if !name.starts_with("nar/") {
                return Err(refuse(&self.what, format!("unexpected entry {name}")));
            }
            check_order(&self.what, &self.refs_of, &mut self.seen, &name)?;
            let url = format!("{}/{name}", self.what);
            if let Some(info) = wanted.remove(&url) {
                progress.path_start(info);
                crate::fetch::fetch_one(self, store, info, how, progress, &memory)?;
                progress.path_done(info);
            }
        }
        if let Some(info) = wanted.values().next() {
            return Err(refuse(
                &self.what,
                format!("it ends without the NAR of {}", info.store_path),
            ));
        }
        store.finish().map_err(|source| FetchError::Store {
            url: self.what.clone(),
            source,
        })?;
        progress.done();
        Ok(())
    }
}

/// The bundle as a `CacheClient` trait object borrowed from it.
struct BundleRef<'a>(&'a Bundle);

impl CacheClient for BundleRef<'_> {
    fn base_url(&self) -> &str {
        self.0.base_url()
    }
    fn get_narinfo(&self, h: &str) -> Result<Option<String>, FetchError> {
        self.0.get_narinfo(h)
    }
    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        self.0.get_nar(url)
    }
    fn nar_url(&self, info: &NarInfo) -> String {
        self.0.nar_url(info)
    }
}
