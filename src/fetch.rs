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

/// Errors of the plan and fetch steps. Every variant names the URL and,
/// where known, the store path.
#[derive(Debug)]
pub enum FetchError {
    /// The cache answered 404/403 for a narinfo: it does not have the path.
    NarInfoMissing { path: StorePath, url: String },
    /// An HTTP error status other than a narinfo's 404/403.
    Http { url: String, status: u16 },
    /// DNS, connect, TLS, timeout, or a read error on the body.
    Network { url: String, detail: String },
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
            FetchError::Http { url, status } => write!(f, "GET {url}: http status {status}"),
            FetchError::Network { url, detail } => write!(f, "GET {url}: {detail}"),
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

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
}

impl FetchError {
    /// The exit class (error.rs) of this error.
    pub fn exit(&self) -> Exit {
        match self {
            FetchError::NarInfoMissing { .. }
            | FetchError::Http { .. }
            | FetchError::Truncated { .. }
            | FetchError::UnsupportedCompression { .. } => Exit::Cache,
            FetchError::Network { .. } => Exit::Network,
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

/// The absolute URL of a narinfo's `URL:` field, resolved against the
/// cache base the way Nix does (`{cache}/` + URL; §1.2, §1.4).
pub fn nar_url(base: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let base = base.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix('/') {
        // Host-absolute: keep scheme://host[:port] of the base.
        let host_end = base
            .find("://")
            .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(base.len());
        return format!("{}/{rest}", &base[..host_end]);
    }
    format!("{base}/{url}")
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
    Zstd(Box<ruzstd::decoding::StreamingDecoder<BodyLimit<'a>, ruzstd::decoding::FrameDecoder>>),
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
                let d = ruzstd::decoding::StreamingDecoder::new(body)
                    .map_err(|e| ("zstd".to_string(), io::Error::other(e.to_string())))?;
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
    let result = store.add_path(info, &mut nar);
    let fault = slot.lock().ok().and_then(|s| s.clone());
    match (result, fault) {
        (Ok(()), _) => Ok(()),
        (Err(source), None) => Err(FetchError::Store { url, source }),
        (Err(_), Some(fault)) => Err(fault_error(fault, path, url, info, codec)),
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
