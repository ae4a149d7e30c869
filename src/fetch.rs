//! Download → decompress → NAR → store, verified while streaming.
//!
//! For every path of a [`Plan`] that the store lacks, the NAR is streamed
//! through a stack of small `io::Read` adapters (STYLE.md habit 5):
//!
//! ```text
//! HTTP body ─► BodyLimit (FileSize, truncation, progress)
//!           ─► Decoder (none | xz | zstd | bzip2, from narinfo `Compression`)
//!           ─► NarLimit (NarSize: a decompression bomb stops there)
//!           ─► Store::add_path (strict NAR parse, NarHash/NarSize check, write)
//! ```
//!
//! Nothing holds a whole NAR in memory. Each adapter records its own
//! failure in a per-download [`Fault`] slot, so the error reported is the
//! root cause (a body cut short, not the NAR parser's "truncated" that
//! follows from it), whatever the store backend wraps it in.
//!
//! A store whose [`Store::reads_nar`] is false (`nix copy`, which fetches
//! the path itself) gets an empty reader instead, and no NAR is downloaded.
//!
//! Scheduling: up to `jobs` downloads run at once, and a path is handed to
//! the store only after all its references (other than itself) were added;
//! backends rely on that (store/mod.rs). After the first error no new
//! download starts; running ones finish or fail, then the first error is
//! returned.
//!
//! NAR URLs are resolved against the cache base (reference/nix-protocols.md
//! §1.2, §1.4): relative (`nar/x.nar.xz`), host-absolute (`/x`) or absolute.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Exit};
use crate::nix::narinfo::{Compression, NarInfo};
use crate::nix::store_path::StorePath;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::store::{Store, StoreError};
use crate::url::nar_url;
use crate::util::mib;

/// What plan and fetch need from the binary cache. The real implementation
/// is the HTTP client (http.rs, credentials only to the cache host);
/// tests use a directory written by `nix copy --to file://`.
pub trait CacheClient: Sync {
    /// The cache base URL, without a trailing slash (for messages and for
    /// resolving relative NAR URLs).
    fn base_url(&self) -> &str;
    /// `GET {base}/{hash_part}.narinfo`, bounded in size. `Ok(None)` when
    /// the cache answers 404 or 403 (nix-protocols.md §1.2).
    fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError>;
    /// Streaming `GET` of an absolute NAR URL (see [`nar_url`]).
    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError>;
}

/// The binary cache over HTTP (http.rs): the closure token goes as Basic
/// auth `flakehub:<token>`, and http.rs sends it only to the cache host.
pub struct HttpCache<'a> {
    pub client: &'a crate::http::Client,
    /// Cache base URL (`--cache-addr`), without a trailing slash.
    pub base: String,
    pub token: &'a crate::http::Secret,
}

impl CacheClient for HttpCache<'_> {
    fn base_url(&self) -> &str {
        &self.base
    }

    fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError> {
        use crate::http::{Auth, NARINFO_LIMIT};
        let url = format!("{}/{hash_part}.narinfo", self.base);
        match self.client.get_bytes(
            &url,
            Auth::Basic(self.token),
            Some("text/x-nix-narinfo"),
            NARINFO_LIMIT,
        ) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| FetchError::NotText { url }),
            // §1.2: 404 and 403 both mean "not in this cache".
            Err(e) if matches!(e.status(), Some(404 | 403)) => Ok(None),
            Err(e) => Err(status_error(e)),
        }
    }

    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        let s = self
            .client
            .get_stream(url, crate::http::Auth::Basic(self.token))
            .map_err(status_error)?;
        Ok(s)
    }
}

/// A final HTTP status from the cache is a cache error naming the URL;
/// anything else stays the transport's error (network, TLS, …).
fn status_error(e: crate::http::HttpError) -> FetchError {
    match e.status() {
        Some(status) => FetchError::Http {
            url: e.url().to_string(),
            status,
        },
        None => FetchError::Transport(e),
    }
}

/// Errors of the plan and fetch steps. Every variant names the URL and,
/// where known, the store path.
#[derive(Debug)]
pub enum FetchError {
    /// The cache answered 404/403 for a narinfo: it does not have the path.
    NarInfoMissing { path: StorePath, url: String },
    /// An HTTP error status other than a narinfo's 404/403.
    Http { url: String, status: u16 },
    /// The HTTP layer failed (its error names the URL).
    Transport(crate::http::HttpError),
    /// A narinfo that is not UTF-8 text.
    NotText { url: String },
    /// The narinfo did not parse (or was for another store path).
    NarInfoMalformed {
        path: StorePath,
        url: String,
        detail: String,
    },
    /// No signature on the narinfo verified with a trusted key.
    Untrusted {
        path: StorePath,
        url: String,
        detail: String,
    },
    /// References form a cycle (other than a self-reference).
    Cycle { path: StorePath },
    /// A `Compression` this build cannot decode.
    UnsupportedCompression {
        path: StorePath,
        url: String,
        compression: String,
    },
    /// The body went on past the narinfo's FileSize.
    BodyTooLong {
        path: StorePath,
        url: String,
        file_size: u64,
    },
    /// The body ended before FileSize, or before the NAR was complete.
    Truncated {
        path: StorePath,
        url: String,
        detail: String,
    },
    /// The decompressor rejected the body.
    Decompress {
        path: StorePath,
        url: String,
        codec: &'static str,
        detail: String,
    },
    /// The decompressed NAR went on past NarSize.
    NarTooLong {
        path: StorePath,
        url: String,
        nar_size: u64,
    },
    /// The store refused the path: malformed NAR, hash or size mismatch,
    /// disk full, registration failed. The store error names the path.
    Store { url: String, source: StoreError },
    /// The filesystem of the store has less room than the plan needs.
    DiskSpace {
        dir: String,
        needed: u64,
        available: u64,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NarInfoMissing { path, url } => write!(
                f,
                "binary cache does not have {path}: GET {url}: not found (404/403)"
            ),
            FetchError::Http { url, status: 401 } => write!(
                f,
                "GET {url}: http status 401: the cache refused the closure token \
                 (it is valid for about an hour; run the apply again to get a fresh one)"
            ),
            FetchError::Http { url, status: 403 } => write!(
                f,
                "GET {url}: http status 403: the closure token does not cover this path"
            ),
            FetchError::Http { url, status } => write!(f, "GET {url}: http status {status}"),
            FetchError::Transport(e) => write!(f, "{e}"),
            FetchError::NotText { url } => write!(f, "GET {url}: narinfo is not UTF-8 text"),
            FetchError::NarInfoMalformed { path, url, detail } => {
                write!(f, "malformed narinfo for {path} at {url}: {detail}")
            }
            FetchError::Untrusted { path, url, detail } => write!(
                f,
                "narinfo for {path} at {url} has no valid signature by a trusted key ({detail}); \
                 check --trusted-key / --no-default-keys"
            ),
            FetchError::Cycle { path } => {
                write!(f, "references of {path} form a cycle: refusing the closure")
            }
            FetchError::UnsupportedCompression {
                path,
                url,
                compression,
            } => write!(
                f,
                "{path}: the cache serves {url} with Compression '{compression}', which fh-lite \
                 cannot decode (supported: none, xz, zstd, bzip2)"
            ),
            FetchError::BodyTooLong {
                path,
                url,
                file_size,
            } => write!(
                f,
                "GET {url}: body longer than FileSize {file_size} given in the narinfo of {path}"
            ),
            FetchError::Truncated { path, url, detail } => {
                write!(
                    f,
                    "GET {url}: body cut short ({detail}) while fetching {path}"
                )
            }
            FetchError::Decompress {
                path,
                url,
                codec,
                detail,
            } => write!(
                f,
                "{url}: {codec} decompression failed for {path}: {detail}"
            ),
            FetchError::NarTooLong {
                path,
                url,
                nar_size,
            } => write!(
                f,
                "{url}: NAR of {path} longer than NarSize {nar_size} after decompression"
            ),
            FetchError::Store { url, source } => write!(f, "{url}: {source}"),
            FetchError::DiskSpace {
                dir,
                needed,
                available,
            } => write!(
                f,
                "not enough space for the store at {dir}: need {needed} bytes ({}), {available} \
                 bytes ({}) available; free some space or use a bigger filesystem",
                mib(*needed),
                mib(*available)
            ),
        }
    }
}

impl FetchError {
    /// The cache answered 401: the closure token expired or was refused.
    pub fn is_token_refused(&self) -> bool {
        matches!(self, FetchError::Http { status: 401, .. })
    }

    /// The exit class (error.rs) of this error.
    pub fn exit(&self) -> Exit {
        match self {
            FetchError::NarInfoMissing { .. }
            | FetchError::Http { .. }
            | FetchError::Truncated { .. }
            | FetchError::UnsupportedCompression { .. } => Exit::Cache,
            // A final error status from the cache is a cache error.
            FetchError::Transport(e) if e.status().is_some() => Exit::Cache,
            FetchError::Transport(e) => e.exit(),
            FetchError::NotText { .. } => Exit::Verification,
            FetchError::NarInfoMalformed { .. }
            | FetchError::Untrusted { .. }
            | FetchError::Cycle { .. }
            | FetchError::BodyTooLong { .. }
            | FetchError::Decompress { .. }
            | FetchError::NarTooLong { .. } => Exit::Verification,
            FetchError::Store { source, .. } => source.exit(),
            FetchError::DiskSpace { .. } => Exit::Store,
        }
    }
}

impl From<FetchError> for Error {
    fn from(e: FetchError) -> Error {
        Error::new(e.exit(), e.to_string())
    }
}

/// What went wrong inside the adapter stack, recorded by the adapter that
/// saw it (the first fault wins).
#[derive(Debug, Clone)]
enum Fault {
    BodyRead(String),
    BodyTooLong,
    BodyShort { got: u64, want: u64 },
    Decompress(String),
    NarTooLong,
}

type FaultSlot = Arc<Mutex<Option<Fault>>>;

fn record(slot: &FaultSlot, fault: Fault) -> io::Error {
    let msg = format!("{fault:?}");
    if let Ok(mut s) = slot.lock() {
        if s.is_none() {
            *s = Some(fault);
        }
    }
    io::Error::other(msg)
}

/// The HTTP body, cut at FileSize (when the narinfo gives it), with
/// truncation detected and progress counted.
struct BodyLimit<'a> {
    inner: Box<dyn Read + Send>,
    file_size: Option<u64>,
    count: u64,
    slot: FaultSlot,
    progress: &'a Progress,
}

impl Read for BodyLimit<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => return Err(record(&self.slot, Fault::BodyRead(e.to_string()))),
        };
        self.count += n as u64;
        self.progress.bytes(n as u64);
        if let Some(want) = self.file_size {
            if self.count > want {
                return Err(record(&self.slot, Fault::BodyTooLong));
            }
            if n == 0 && !buf.is_empty() && self.count < want {
                let f = Fault::BodyShort {
                    got: self.count,
                    want,
                };
                return Err(record(&self.slot, f));
            }
        }
        Ok(n)
    }
}

/// One decoder per supported `Compression` (crates chosen by measurement,
/// see Cargo.toml).
enum Decoder<'a> {
    None(BodyLimit<'a>),
    Xz(Box<lzma_rust2::XzReader<BodyLimit<'a>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<BodyLimit<'a>>>>),
    Bzip2(Box<bzip2::read::MultiBzDecoder<BodyLimit<'a>>>),
}

impl<'a> Decoder<'a> {
    fn new(c: &Compression, body: BodyLimit<'a>) -> Result<Decoder<'a>, (String, io::Error)> {
        Ok(match c {
            Compression::None => Decoder::None(body),
            // One xz stream per NAR, as Nix writes them; concatenated
            // streams are accepted like liblzma's decoder does.
            Compression::Xz => Decoder::Xz(Box::new(lzma_rust2::XzReader::new(body, true))),
            Compression::Zstd => {
                let d =
                    zstd::stream::read::Decoder::new(body).map_err(|e| ("zstd".to_string(), e))?;
                Decoder::Zstd(Box::new(d))
            }
            Compression::Bzip2 => Decoder::Bzip2(Box::new(bzip2::read::MultiBzDecoder::new(body))),
            Compression::Unsupported(s) => {
                return Err((s.clone(), io::Error::other("unsupported compression")))
            }
        })
    }
}

fn codec_name(c: &Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Bzip2 => "bzip2",
        Compression::Unsupported(_) => "unsupported",
    }
}

/// The decoder, with its own errors recorded as `Fault::Decompress`
/// unless a lower layer already recorded the cause.
struct Decoded<'a> {
    dec: Decoder<'a>,
    slot: FaultSlot,
}

impl Read for Decoded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = match &mut self.dec {
            Decoder::None(r) => r.read(buf),
            Decoder::Xz(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
            Decoder::Bzip2(r) => r.read(buf),
        };
        r.map_err(|e| record(&self.slot, Fault::Decompress(e.to_string())))
    }
}

/// Stops the decompressed stream one byte past NarSize.
struct NarLimit<'a> {
    inner: Decoded<'a>,
    left: u64,
    slot: FaultSlot,
}

impl Read for NarLimit<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for at most one byte more than allowed: enough to notice.
        let cap = (self.left.saturating_add(1)).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..cap])?;
        if n as u64 > self.left {
            return Err(record(&self.slot, Fault::NarTooLong));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Fetch one path into the store: the whole adapter stack.
pub fn fetch_one(
    client: &dyn CacheClient,
    store: &dyn Store,
    info: &NarInfo,
    progress: &Progress,
) -> Result<(), FetchError> {
    let url = nar_url(client.base_url(), &info.url);
    let path = &info.store_path;
    if let Compression::Unsupported(c) = &info.compression {
        return Err(FetchError::UnsupportedCompression {
            path: path.clone(),
            url,
            compression: c.clone(),
        });
    }
    if !store.reads_nar() {
        // The store fetches the path itself (`nix copy`): download nothing.
        return store
            .add_path(info, &mut io::empty())
            .map_err(|source| FetchError::Store { url, source });
    }
    let body = client.get_nar(&url)?;
    let slot: FaultSlot = Arc::new(Mutex::new(None));
    let limited = BodyLimit {
        inner: body,
        file_size: info.file_size,
        count: 0,
        slot: slot.clone(),
        progress,
    };
    let codec = codec_name(&info.compression);
    let dec =
        Decoder::new(&info.compression, limited).map_err(|(_, e)| FetchError::Decompress {
            path: path.clone(),
            url: url.clone(),
            codec,
            detail: e.to_string(),
        })?;
    let mut nar = NarLimit {
        inner: Decoded {
            dec,
            slot: slot.clone(),
        },
        left: info.nar_size,
        slot: slot.clone(),
    };
    let result = with_read_ahead(&mut nar, |r| store.add_path(info, r));
    let fault = slot.lock().ok().and_then(|s| s.clone());
    match (result, fault) {
        (Ok(()), _) => Ok(()),
        (Err(source), None) => Err(FetchError::Store { url, source }),
        (Err(_), Some(fault)) => Err(fault_error(fault, path, url, info, codec)),
    }
}

/// Chunks decoded ahead of the store, and their size: at most
/// `READ_AHEAD * CHUNK` (128 KiB) in flight.
const READ_AHEAD: usize = 4;
const CHUNK: usize = 32 * 1024;

/// Run `consume` on what `source` yields, with `source` read (downloaded
/// and decompressed) on a second thread, so that decompression overlaps
/// hashing, NAR parsing and writing. Memory stays bounded: the chunk
/// buffers go round between the two threads.
fn with_read_ahead<R, T>(source: &mut R, consume: impl FnOnce(&mut dyn Read) -> T) -> T
where
    R: Read + Send,
{
    use std::sync::mpsc::sync_channel;
    let (full_tx, full_rx) = sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(READ_AHEAD + 2);
    std::thread::scope(|s| {
        s.spawn(move || loop {
            let mut buf = free_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            buf.resize(CHUNK, 0);
            match source.read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    // The consumer is gone (it failed or finished): stop.
                    if full_tx.send(Ok(buf)).is_err() || n == 0 {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = full_tx.send(Err(e));
                    return;
                }
            }
        });
        let mut reader = ChannelReader {
            full: full_rx,
            free: free_tx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
        };
        // Dropping the reader (end of this closure) lets the producer stop.
        consume(&mut reader)
    })
}

/// The consumer's end of [`with_read_ahead`].
struct ChannelReader {
    full: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    free: std::sync::mpsc::SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            let next = match self.full.recv() {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => return Err(e),
                // The producer ended without an EOF chunk: it panicked.
                Err(_) => return Err(io::Error::other("the download thread stopped")),
            };
            let used = std::mem::replace(&mut self.cur, next);
            let _ = self.free.try_send(used);
            self.pos = 0;
            self.eof = self.cur.is_empty();
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn fault_error(
    fault: Fault,
    path: &StorePath,
    url: String,
    info: &NarInfo,
    codec: &'static str,
) -> FetchError {
    let path = path.clone();
    match fault {
        Fault::BodyRead(detail) => FetchError::Truncated { path, url, detail },
        Fault::BodyShort { got, want } => FetchError::Truncated {
            path,
            url,
            detail: format!("{got} of {want} bytes"),
        },
        Fault::BodyTooLong => FetchError::BodyTooLong {
            path,
            url,
            file_size: info.file_size.unwrap_or(0),
        },
        Fault::Decompress(detail) => FetchError::Decompress {
            path,
            url,
            codec,
            detail,
        },
        Fault::NarTooLong => FetchError::NarTooLong {
            path,
            url,
            nar_size: info.nar_size,
        },
    }
}

/// Fetch every path of `plan` into `store`, at most `jobs` at a time,
/// each only after its references; then `store.finish()`.
pub fn fetch_all(
    client: &dyn CacheClient,
    store: &dyn Store,
    plan: &Plan,
    jobs: usize,
    progress: &Progress,
) -> Result<(), FetchError> {
    // Refuse undecodable paths before downloading anything.
    for info in &plan.paths {
        if let Compression::Unsupported(c) = &info.compression {
            return Err(FetchError::UnsupportedCompression {
                path: info.store_path.clone(),
                url: nar_url(client.base_url(), &info.url),
                compression: c.clone(),
            });
        }
    }
    let n = plan.paths.len();
    let index: BTreeMap<&StorePath, usize> = plan
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.store_path, i))
        .collect();
    // waiting[i]: references of i in the plan not yet added;
    // dependents[j]: the paths that wait for j.
    let mut waiting = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, info) in plan.paths.iter().enumerate() {
        for r in &info.references {
            if r == &info.store_path {
                continue;
            }
            if let Some(&j) = index.get(r) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).rev().filter(|&i| waiting[i] == 0).collect();
    let jobs = jobs.max(1);
    let mut first_error: Option<FetchError> = None;
    let (work_tx, work_rx) = mpsc::channel::<usize>();
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<(usize, Result<(), FetchError>)>();
        for _ in 0..jobs.min(n.max(1)) {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            s.spawn(move || loop {
                // A poisoned lock means another worker panicked: stop.
                let next = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(i) = next else { return };
                let info = &plan.paths[i];
                progress.path_start(info);
                let r = fetch_one(client, store, info, progress);
                if r.is_ok() {
                    progress.path_done(info);
                }
                if done_tx.send((i, r)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut in_flight = 0usize;
        let mut finished = 0usize;
        let mut work_tx = Some(work_tx);
        loop {
            if first_error.is_none() {
                while in_flight < jobs {
                    let Some(i) = ready.pop() else { break };
                    if let Some(tx) = &work_tx {
                        // Workers live until work_tx is dropped.
                        let _ = tx.send(i);
                    }
                    in_flight += 1;
                }
            }
            if in_flight == 0 {
                break;
            }
            let Ok((i, r)) = done_rx.recv() else { break };
            in_flight -= 1;
            finished += 1;
            match r {
                Ok(()) => {
                    for &d in &dependents[i] {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            ready.push(d);
                        }
                    }
                }
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                    work_tx = None;
                }
            }
        }
        drop(work_tx);
        if first_error.is_none() && finished != n {
            // Only possible with a reference cycle, which plan rejects.
            first_error = Some(FetchError::Cycle {
                path: plan.root.clone(),
            });
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    store.finish().map_err(|source| FetchError::Store {
        url: client.base_url().to_string(),
        source,
    })?;
    progress.done();
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    //! A fake cache over a directory laid out like `nix copy --to file://`
    //! (`<hash>.narinfo`, `nar/…`), NARs built in code, narinfos signed
    //! with a test key; shared by the plan, store and progress tests.

    use super::*;
    use crate::nix::hash::Sha256;
    use crate::nix::signature::{PublicKey, TrustedKeys};
    use crate::progress::Mode;
    use crate::store::image::ImageStore;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    /// A temporary directory, removed (read-only trees too) on drop.
    pub use crate::store::testutil::TempDir;

    fn fs_create(p: &Path) {
        std::fs::create_dir_all(p).unwrap();
    }

    use crate::nix::nar::testutil::{dir, nar, Node};

    pub fn sp(hash_digit: char, name: &str) -> StorePath {
        let h: String = std::iter::repeat_n(hash_digit, 32).collect();
        StorePath::from_base_name(&format!("{h}-{name}")).unwrap()
    }

    pub fn compress(c: &str, data: &[u8]) -> Vec<u8> {
        match c {
            "none" => data.to_vec(),
            "zstd" => zstd::stream::encode_all(data, 3).unwrap(),
            "bzip2" => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                std::io::Write::write_all(&mut e, data).unwrap();
                e.finish().unwrap()
            }
            "xz" => {
                // The xz encoder is not compiled in; use xz(1).
                use std::io::Write as _;
                let mut child = std::process::Command::new("xz")
                    .args(["-c", "-6"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("xz(1) is needed for the xz test case");
                child.stdin.take().unwrap().write_all(data).unwrap();
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success());
                out.stdout
            }
            // A compression fh-lite cannot decode: the bytes are never
            // downloaded, so they may stay as they are.
            "lz4" | "br" | "gzip" => data.to_vec(),
            other => panic!("no compressor for {other}"),
        }
    }

    /// One path to put in the cache; the knobs make it bad on purpose.
    pub struct Entry {
        pub path: StorePath,
        pub nar: Vec<u8>,
        pub refs: Vec<StorePath>,
        pub compression: &'static str,
        /// What the narinfo claims (default: the truth).
        pub nar_hash: Option<Sha256>,
        pub nar_size: Option<u64>,
        pub file_size: Option<Option<u64>>,
        /// Body served instead of the compressed NAR.
        pub body: Option<Vec<u8>>,
        pub signed: bool,
    }

    impl Entry {
        pub fn new(path: StorePath, node: Node, refs: &[&StorePath]) -> Entry {
            Entry {
                path,
                nar: nar(&node),
                refs: refs.iter().map(|r| (*r).clone()).collect(),
                compression: "none",
                nar_hash: None,
                nar_size: None,
                file_size: None,
                body: None,
                signed: true,
            }
        }
        pub fn comp(mut self, c: &'static str) -> Entry {
            self.compression = c;
            self
        }
    }

    pub struct TestCache {
        pub dir: TempDir,
        pub base: String,
        key: ring::signature::Ed25519KeyPair,
        pub requests: Mutex<Vec<String>>,
    }

    impl TestCache {
        pub fn new() -> TestCache {
            let dir = TempDir::new("cache");
            fs_create(&dir.0.join("nar"));
            TestCache {
                dir,
                base: "http://cache.test/c".to_string(),
                key: ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap(),
                requests: Mutex::new(Vec::new()),
            }
        }

        pub fn keys(&self) -> TrustedKeys {
            use ring::signature::KeyPair;
            let mut k = TrustedKeys::default();
            let mut pk = [0u8; 32];
            pk.copy_from_slice(self.key.public_key().as_ref());
            k.add(PublicKey {
                name: "test-1".into(),
                key: pk,
            });
            k
        }

        pub fn add(&self, e: &Entry) {
            let body = e
                .body
                .clone()
                .unwrap_or_else(|| compress(e.compression, &e.nar));
            let hash = e.nar_hash.unwrap_or_else(|| Sha256::digest(&e.nar));
            let size = e.nar_size.unwrap_or(e.nar.len() as u64);
            let file_size = e.file_size.unwrap_or(Some(body.len() as u64));
            let nar_name = format!("nar/{}.nar.{}", e.path.hash_part(), e.compression);
            std::fs::write(self.dir.0.join(&nar_name), &body).unwrap();
            let mut refs: Vec<String> = e.refs.iter().map(|r| r.to_string()).collect();
            refs.sort();
            let fp = format!(
                "1;{};{};{};{}",
                e.path,
                hash.to_nix32_prefixed(),
                size,
                refs.join(",")
            );
            let sig = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                self.key.sign(fp.as_bytes()).as_ref(),
            );
            let mut text = format!(
                "StorePath: {}\nURL: {nar_name}\nCompression: {}\n",
                e.path, e.compression
            );
            if let Some(fs) = file_size {
                text.push_str(&format!("FileSize: {fs}\n"));
            }
            let bases: Vec<&str> = e.refs.iter().map(|r| r.base_name()).collect();
            text.push_str(&format!(
                "NarHash: {}\nNarSize: {size}\nReferences: {}\n",
                hash.to_nix32_prefixed(),
                bases.join(" ")
            ));
            if e.signed {
                text.push_str(&format!("Sig: test-1:{sig}\n"));
            }
            self.put_narinfo(e.path.hash_part(), &text);
        }

        pub fn put_narinfo(&self, hash_part: &str, text: &str) {
            std::fs::write(self.dir.0.join(format!("{hash_part}.narinfo")), text).unwrap();
        }

        pub fn nar_requests(&self) -> Vec<String> {
            let r = self.requests.lock().unwrap();
            r.iter().filter(|u| u.contains("/nar/")).cloned().collect()
        }
    }

    impl CacheClient for TestCache {
        fn base_url(&self) -> &str {
            &self.base
        }
        fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError> {
            let url = format!("{}/{hash_part}.narinfo", self.base);
            self.requests.lock().unwrap().push(url);
            match std::fs::read_to_string(self.dir.0.join(format!("{hash_part}.narinfo"))) {
                Ok(t) => Ok(Some(t)),
                Err(_) => Ok(None),
            }
        }
        fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
            self.requests.lock().unwrap().push(url.to_string());
            let rel = url
                .strip_prefix(&format!("{}/", self.base))
                .ok_or_else(|| FetchError::Http {
                    url: url.to_string(),
                    status: 404,
                })?;
            let f = std::fs::File::open(self.dir.0.join(rel)).map_err(|_| FetchError::Http {
                url: url.to_string(),
                status: 404,
            })?;
            Ok(Box::new(f))
        }
    }

    /// Everything under the image's store: relative path → (kind, mode, mtime).
    pub fn listing(dir: &Path) -> Vec<(String, char, u32, i64)> {
        let mut out = Vec::new();
        fn walk(base: &Path, p: &Path, out: &mut Vec<(String, char, u32, i64)>) {
            let md = std::fs::symlink_metadata(p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let kind = if md.is_dir() {
                'd'
            } else if md.file_type().is_symlink() {
                'l'
            } else {
                'f'
            };
            let mode = if kind == 'l' { 0 } else { md.mode() & 0o7777 };
            out.push((rel, kind, mode, md.mtime()));
            if md.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                entries.sort();
                for e in entries {
                    walk(base, &e, out);
                }
            }
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            walk(dir, &e, &mut out);
        }
        out
    }

    pub fn quiet() -> Progress {
        Progress::new(Mode::Quiet)
    }

    /// plan + fetch into a fresh image root.
    pub fn apply(cache: &TestCache, root: &StorePath) -> (TempDir, Result<Plan, FetchError>) {
        let img = TempDir::new("img");
        let store = ImageStore::open(&img.0).unwrap();
        let r = crate::plan::plan(cache, &store, &cache.keys(), root, 3)
            .and_then(|p| fetch_all(cache, &store, &p, 3, &quiet()).map(|()| p));
        (img, r)
    }

    fn closure() -> (TestCache, StorePath, StorePath, StorePath) {
        let cache = TestCache::new();
        let lib = sp('1', "lib");
        let data = sp('2', "data");
        let app = sp('3', "app");
        cache.add(
            &Entry::new(lib.clone(), Node::File(false, b"libfoo\n".to_vec()), &[]).comp("zstd"),
        );
        cache.add(
            &Entry::new(
                data.clone(),
                dir(vec![
                    (b"big", Node::File(false, vec![b'x'; 200_000])),
                    (b"self", Node::Link(b"/nix/store/2222".to_vec())),
                ]),
                &[&lib],
            )
            .comp("bzip2"),
        );
        cache.add(
            &Entry::new(
                app.clone(),
                dir(vec![
                    (
                        b"bin",
                        dir(vec![(b"app", Node::File(true, b"#!/bin/sh\n".to_vec()))]),
                    ),
                    (b"empty", dir(vec![])),
                    (b"lib", Node::Link(b"../lib".to_vec())),
                    (b"readme", Node::File(false, Vec::new())),
                ]),
                &[&lib, &data, &app],
            )
            .comp("xz"),
        );
        (cache, lib, data, app)
    }

    #[test]
    fn closure_unpacks_to_the_canonical_tree() {
        let (cache, lib, data, app) = closure();
        let (img, r) = apply(&cache, &app);
        let plan = r.unwrap();
        let order: Vec<_> = plan.paths.iter().map(|i| i.store_path.clone()).collect();
        assert_eq!(order, vec![lib.clone(), data.clone(), app.clone()]);
        let h = |c: char| std::iter::repeat_n(c, 32).collect::<String>();
        let want: Vec<(String, char, u32, i64)> = vec![
            (format!("{}-lib", h('1')), 'f', 0o444, 1),
            (format!("{}-data", h('2')), 'd', 0o555, 1),
            (format!("{}-data/big", h('2')), 'f', 0o444, 1),
            (format!("{}-data/self", h('2')), 'l', 0, 1),
            (format!("{}-app", h('3')), 'd', 0o555, 1),
            (format!("{}-app/bin", h('3')), 'd', 0o555, 1),
            (format!("{}-app/bin/app", h('3')), 'f', 0o555, 1),
            (format!("{}-app/empty", h('3')), 'd', 0o555, 1),
            (format!("{}-app/lib", h('3')), 'l', 0, 1),
            (format!("{}-app/readme", h('3')), 'f', 0o444, 1),
        ];
        let store = img.0.join("nix/store");
        assert_eq!(listing(&store), want);
        let read = |p: &str| std::fs::read(store.join(p)).unwrap();
        assert_eq!(read(&format!("{}-lib", h('1'))), b"libfoo\n");
        assert_eq!(read(&format!("{}-app/bin/app", h('3'))), b"#!/bin/sh\n");
        assert_eq!(read(&format!("{}-data/big", h('2'))).len(), 200_000);
        assert_eq!(
            std::fs::read_link(store.join(format!("{}-app/lib", h('3')))).unwrap(),
            PathBuf::from("../lib")
        );
        // Registration: references first, bare base16 hashes.
        let reg = std::fs::read_to_string(img.0.join("nix-path-registration")).unwrap();
        let mut want_reg = String::new();
        for info in &plan.paths {
            want_reg.push_str(&format!(
                "{}\n{}\n{}\n\n{}\n",
                info.store_path,
                info.nar_hash.to_hex(),
                info.nar_size,
                info.references.len()
            ));
            for r in &info.references {
                want_reg.push_str(&format!("{r}\n"));
            }
        }
        assert_eq!(reg, want_reg);
        // A second run finds everything valid and downloads nothing.
        let store2 = ImageStore::open(&img.0).unwrap();
        let before = cache.nar_requests().len();
        let p2 = crate::plan::plan(&cache, &store2, &cache.keys(), &app, 2).unwrap();
        assert_eq!((p2.paths.len(), p2.already_valid), (0, 1));
        assert_eq!(cache.nar_requests().len(), before);
    }

    /// Whatever failed, the store holds only complete verified paths and no
    /// temporary trees.
    fn assert_clean(img: &TempDir, allowed: &[&StorePath]) {
        let store = img.0.join("nix/store");
        // Nothing added yet: the store directory need not exist.
        let Ok(entries) = std::fs::read_dir(&store) else {
            return;
        };
        for e in entries {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(
                allowed.iter().any(|p| p.base_name() == name),
                "unexpected {name} left in the store"
            );
        }
    }

    #[test]
    fn bad_inputs_leave_nothing_behind() {
        struct Case {
            name: &'static str,
            /// Applied to the root entry (whose dependency `lib` is fine).
            spoil: fn(&mut Entry, &TestCache),
            exit: Exit,
            message: &'static str,
            nar_of_root_requested: bool,
        }
        let cases = [
            Case {
                name: "malformed narinfo",
                spoil: |e, c| c.put_narinfo(e.path.hash_part(), "StorePath /nix/store/nonsense\n"),
                exit: Exit::Verification,
                message: "malformed narinfo for /nix/store/33333333333333333333333333333333-app at http://cache.test/c/33333333333333333333333333333333.narinfo",
                nar_of_root_requested: false,
            },
            Case {
                name: "narinfo for another store path",
                spoil: |e, _| e.path = sp('3', "other"),
                exit: Exit::Verification,
                message: "/nix/store/33333333333333333333333333333333-app",
                nar_of_root_requested: false,
            },
            Case {
                name: "unknown compression",
                spoil: |e, _| e.compression = "lz4",
                exit: Exit::Cache,
                message: "with Compression 'lz4', which fh-lite cannot decode",
                nar_of_root_requested: false,
            },
            Case {
                name: "no trusted signature",
                spoil: |e, _| e.signed = false,
                exit: Exit::Verification,
                message: "narinfo for /nix/store/33333333333333333333333333333333-app at http://cache.test/c/33333333333333333333333333333333.narinfo has no valid signature",
                nar_of_root_requested: false,
            },
            Case {
                name: "nar hash mismatch",
                spoil: |e, _| e.nar_hash = Some(Sha256::digest(b"something else")),
                exit: Exit::Verification,
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: NAR of /nix/store/33333333333333333333333333333333-app: hash mismatch: the narinfo says sha256:",
                nar_of_root_requested: true,
            },
            Case {
                name: "nar size mismatch (NarSize larger)",
                spoil: |e, _| e.nar_size = Some(e.nar.len() as u64 + 8),
                exit: Exit::Verification,
                message: "NAR of /nix/store/33333333333333333333333333333333-app: size mismatch: the narinfo says 296 bytes, the NAR has 288",
                nar_of_root_requested: true,
            },
            Case {
                name: "body longer than FileSize",
                spoil: |e, _| {
                    let body = compress("zstd", &e.nar);
                    e.file_size = Some(Some(body.len() as u64 - 5));
                },
                exit: Exit::Verification,
                message: "GET http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: body longer than FileSize",
                nar_of_root_requested: true,
            },
            Case {
                name: "decompression bomb past NarSize",
                spoil: |e, _| {
                    // A valid NAR with a big zero file, claimed much smaller.
                    let big = nar(&Node::File(false, vec![0u8; 5_000_000]));
                    e.body = Some(compress("zstd", &big));
                    e.nar_size = Some(1000);
                },
                exit: Exit::Verification,
                message: "longer than NarSize 1000 after decompression",
                nar_of_root_requested: true,
            },
            Case {
                name: "truncated body",
                spoil: |e, _| {
                    let mut body = compress("zstd", &e.nar);
                    let n = body.len() as u64;
                    body.truncate(body.len() - 7);
                    e.body = Some(body);
                    e.file_size = Some(Some(n));
                },
                exit: Exit::Cache,
                message: "GET http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: body cut short",
                nar_of_root_requested: true,
            },
            Case {
                name: "malformed NAR (entries out of order)",
                spoil: |e, _| {
                    e.nar = nar(&dir(vec![
                        (b"b", Node::File(false, vec![])),
                        (b"a", Node::File(false, vec![])),
                    ]));
                },
                exit: Exit::Verification,
                message: "NAR of /nix/store/33333333333333333333333333333333-app: /a: directory entries not in ascending order",
                nar_of_root_requested: true,
            },
        ];
        for case in cases {
            let cache = TestCache::new();
            let lib = sp('1', "lib");
            cache.add(&Entry::new(
                lib.clone(),
                Node::File(false, b"lib\n".to_vec()),
                &[],
            ));
            let root = sp('3', "app");
            let mut e = Entry::new(
                root.clone(),
                dir(vec![(b"x", Node::File(false, b"payload".to_vec()))]),
                &[&lib],
            )
            .comp("zstd");
            (case.spoil)(&mut e, &cache);
            if case.name == "malformed narinfo" {
                // spoil wrote the narinfo itself.
            } else {
                cache.add(&e);
                if e.path != root {
                    // Served under the root's hash part.
                    let text = std::fs::read_to_string(
                        cache.dir.0.join(format!("{}.narinfo", e.path.hash_part())),
                    )
                    .unwrap();
                    cache.put_narinfo(root.hash_part(), &text);
                }
            }
            let (img, r) = apply(&cache, &root);
            let err = match r {
                Ok(_) => panic!("{}: expected an error", case.name),
                Err(err) => err,
            };
            let msg = err.to_string();
            assert!(
                msg.contains(case.message),
                "{}: message {msg:?} lacks {:?}",
                case.name,
                case.message
            );
            assert_eq!(err.exit(), case.exit, "{}: {msg}", case.name);
            let root_nar = cache
                .nar_requests()
                .iter()
                .any(|u| u.contains(root.hash_part()));
            assert_eq!(root_nar, case.nar_of_root_requested, "{}", case.name);
            assert_clean(&img, &[&lib]);
        }
    }

    #[test]
    fn a_store_that_fetches_itself_gets_no_nar() {
        /// Records each `add_path` and how many NAR bytes it was given.
        struct SelfFetching(Mutex<Vec<(StorePath, usize)>>);
        impl Store for SelfFetching {
            fn describe(&self) -> String {
                "self-fetching test store".into()
            }
            fn query_valid(
                &self,
                _paths: &[StorePath],
            ) -> Result<std::collections::BTreeSet<StorePath>, StoreError> {
                Ok(Default::default())
            }
            fn add_temp_roots(&self, _paths: &[StorePath]) -> Result<(), StoreError> {
                Ok(())
            }
            fn add_path(&self, info: &NarInfo, nar: &mut dyn Read) -> Result<(), StoreError> {
                let mut buf = Vec::new();
                nar.read_to_end(&mut buf).unwrap();
                let mut seen = self.0.lock().unwrap();
                seen.push((info.store_path.clone(), buf.len()));
                match info.store_path.name() {
                    "app" => Err(StoreError::Program {
                        command: "nix copy".into(),
                        detail: "refused".into(),
                    }),
                    _ => Ok(()),
                }
            }
            fn finish(&self) -> Result<(), StoreError> {
                Ok(())
            }
            fn reads_nar(&self) -> bool {
                false
            }
        }
        let (cache, lib, data, app) = closure();
        let store = SelfFetching(Mutex::new(Vec::new()));
        let plan = crate::plan::plan(&cache, &store, &cache.keys(), &app, 3).unwrap();
        let err = fetch_all(&cache, &store, &plan, 3, &quiet()).unwrap_err();
        assert_eq!(
            store.0.lock().unwrap().clone(),
            vec![(lib, 0), (data, 0), (app.clone(), 0)],
            "every path in order, each with an empty NAR"
        );
        assert_eq!(
            cache.nar_requests(),
            Vec::<String>::new(),
            "NARs downloaded"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{}: nix copy: refused",
                nar_url(cache.base_url(), &plan.paths[2].url)
            )
        );
        assert_eq!(err.exit(), Exit::Store);
    }

    #[test]
    fn missing_narinfo_names_path_and_url() {
        let cache = TestCache::new();
        let root = sp('4', "gone");
        let (img, r) = apply(&cache, &root);
        let err = r.unwrap_err();
        assert_eq!(
            err.to_string(),
            "binary cache does not have /nix/store/44444444444444444444444444444444-gone: GET \
             http://cache.test/c/44444444444444444444444444444444.narinfo: not found (404/403)"
        );
        assert_eq!(err.exit(), Exit::Cache);
        assert_clean(&img, &[]);
    }

    #[test]
    fn read_ahead_passes_everything_through_in_order() {
        // Not a multiple of the chunk size, and bigger than all buffers.
        let data: Vec<u8> = (0..3 * CHUNK * READ_AHEAD + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut src = std::io::Cursor::new(data.clone());
        let got = with_read_ahead(&mut src, |r| {
            let mut v = Vec::new();
            // Odd read sizes on the consumer side too.
            let mut buf = [0u8; 1000];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                v.extend_from_slice(&buf[..n]);
            }
            // Past the end it stays at the end.
            assert_eq!(r.read(&mut buf).unwrap(), 0);
            v
        });
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
    }

    #[test]
    fn read_ahead_passes_errors_and_lets_the_consumer_stop_early() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("body cut short"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                buf[..n].fill(1);
                Ok(n)
            }
        }
        let err = with_read_ahead(&mut Failing(100_000), |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).unwrap_err()
        });
        assert_eq!(err.to_string(), "body cut short");
        // An endless source and a consumer that reads 10 bytes: returns.
        let mut endless = std::io::repeat(7);
        let first = with_read_ahead(&mut endless, |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).unwrap();
            b
        });
        assert_eq!(first, [7u8; 10]);
    }
}
