//! Download → decompress → NAR → store, verified while streaming.
//!
//! For every path of a [`Plan`](crate::plan::Plan) that the store lacks, the NAR is streamed
//! through a stack of small `io::Read` adapters (each adapter tags its own errors):
//!
//! ```text
//! HTTP body ─► BodyLimit (FileSize, truncation, progress; without a
//!              FileSize at most NarSize + 1/64 + 64 KiB: see [`body_bound`])
//!           ─► Decoder (none | xz | zstd | bzip2, from narinfo `Compression`;
//!              xz dictionary and zstd window capped, see [`crate::options::DEFAULT_DECODER_MEMORY`])
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
//! Scheduling: up to [`nar_width`]`(jobs)` downloads run at once (pool.rs),
//! and together they hold at most [`NAR_MEMORY`] for their decoders and
//! buffers: each takes what its decoder's header declares (zstd window, xz
//! dictionary, no more than the NAR's size) before a byte is decoded
//! ([`pool::Budget`]), so many small paths run wide and big ones few at a
//! time, whatever `--jobs` says. A path is handed to the store only after
//! all its references (other than itself) were added ([`Dependencies`]);
//! backends rely on that (store/mod.rs).
//! After the first error no new download starts; running ones finish or
//! fail, then the first error is returned.

pub mod resume;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use crate::cache::{CacheClient, FetchError};
use crate::nix::narinfo::{Compression, NarInfo};
use crate::nix::store_path::StorePath;
use crate::pool;
use crate::progress::Progress;
use crate::store::Store;

/// What went wrong inside the adapter stack, recorded by the adapter that
/// saw it (the first fault wins).
#[derive(Debug, Clone)]
enum Fault {
    BodyRead(String),
    BodyTooLong,
    /// No FileSize, and the body went on past [`body_bound`].
    BodyUnbounded {
        limit: u64,
    },
    /// The stream asks the decoder for more memory than the cap (the size
    /// asked for, when the header that asked was read here).
    DecoderMemory {
        asked: Option<u64>,
    },
    BodyShort {
        got: u64,
        want: u64,
    },
    Decompress(String),
    NarTooLong,
    /// SIGTERM/SIGINT: the transfer stops between chunks (signal.rs).
    Interrupted,
    /// Under the minimum throughput: `bytes` in `secs`.
    TooSlow {
        bytes: u64,
        secs: f64,
    },
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
    inner: Box<dyn Read + Send + 'a>,
    file_size: Option<u64>,
    /// Without a FileSize: the most compressed bytes a NAR of its NarSize
    /// can take ([`body_bound`]).
    bound: u64,
    count: u64,
    slot: FaultSlot,
    progress: &'a Progress,
    /// The throughput watchdog: bytes since `since`, at least `min_bytes`
    /// per `window`.
    since: std::time::Instant,
    in_window: u64,
    min_bytes: u64,
    window: std::time::Duration,
}

impl Read for BodyLimit<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // A signal stops the download before its next chunk; the path
        // fails like any broken download (its temporary tree is removed).
        if crate::signal::interrupted() {
            return Err(record(&self.slot, Fault::Interrupted));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => return Err(record(&self.slot, Fault::BodyRead(e.to_string()))),
        };
        self.count += n as u64;
        self.progress.bytes(n as u64);
        self.in_window += n as u64;
        if self.since.elapsed() >= self.window {
            if self.in_window < self.min_bytes && n > 0 {
                let f = Fault::TooSlow {
                    bytes: self.in_window,
                    secs: self.since.elapsed().as_secs_f64(),
                };
                return Err(record(&self.slot, f));
            }
            self.since = std::time::Instant::now();
            self.in_window = 0;
        }
        if self.file_size.is_none() && self.count > self.bound {
            return Err(record(
                &self.slot,
                Fault::BodyUnbounded { limit: self.bound },
            ));
        }
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

/// The most compressed bytes fetch reads for a NAR of `nar_size` bytes
/// when the narinfo gives no FileSize: NarSize plus 1/64 plus 64 KiB, more
/// than xz, zstd or bzip2 add to incompressible data (about 0.05 %, 0.4 %
/// and 1 %, plus headers). Without it a body of zstd skippable frames or
/// xz stream padding could stream forever while decoding to nothing.
pub fn body_bound(nar_size: u64) -> u64 {
    nar_size
        .saturating_add(nar_size / 64)
        .saturating_add(64 * 1024)
}

/// The body with its first bytes read already, to look at the header.
type Peeked<'a> = io::Chain<io::Cursor<Vec<u8>>, BodyLimit<'a>>;

/// One decoder per supported `Compression` (crates chosen by measurement,
/// see Cargo.toml).
enum Decoder<'a> {
    None(BodyLimit<'a>),
    Xz(Box<liblzma::bufread::XzDecoder<io::BufReader<Peeked<'a>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, io::BufReader<Peeked<'a>>>>),
    Bzip2(Box<bzip2::read::MultiBzDecoder<BodyLimit<'a>>>),
}

impl<'a> Decoder<'a> {
    /// The decoder for `c`, refusing a stream whose first header asks for a
    /// dictionary/window over `cap` bytes before anything is allocated;
    /// later headers are held to the same cap by the decoder itself. With
    /// it, the memory its header declares (`cap` when it declares none).
    fn new(c: &Compression, mut body: BodyLimit<'a>, cap: u64) -> io::Result<(Decoder<'a>, u64)> {
        let slot = body.slot.clone();
        let declared = std::cell::Cell::new(0);
        let refuse = |asked: Option<u64>| -> io::Result<()> {
            declared.set(asked.unwrap_or(cap));
            match asked {
                Some(n) if n > cap => Err(record(&slot, Fault::DecoderMemory { asked })),
                _ => Ok(()),
            }
        };
        // Small bodies get small input buffers.
        let in_buf = body.file_size.unwrap_or(u64::MAX).clamp(512, 128 << 10) as usize;
        let dec = match c {
            Compression::None => Decoder::None(body),
            Compression::Xz => {
                let head = peek(&mut body, XZ_PEEK)?;
                refuse(xz_dict_size(&head))?;
                // Dictionary plus the decoder's own state (liblzma counts
                // about 30 KiB), so a dictionary of exactly `cap` passes.
                let limit = cap.saturating_add(1 << 20);
                // One xz stream per NAR, as Nix writes them; concatenated
                // streams are accepted, later headers held to the same limit.
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    limit,
                    liblzma::stream::CONCATENATED,
                )?;
                let body = io::BufReader::with_capacity(in_buf, io::Cursor::new(head).chain(body));
                Decoder::Xz(Box::new(liblzma::bufread::XzDecoder::new_stream(
                    body, stream,
                )))
            }
            Compression::Zstd => {
                let head = peek(&mut body, ZSTD_PEEK)?;
                refuse(zstd_window(&head))?;
                let body = io::Cursor::new(head).chain(body);
                let body = io::BufReader::with_capacity(in_buf, body);
                let mut d = zstd::stream::read::Decoder::with_buffer(body)?;
                // zstd takes the cap as a power of two: rounded down.
                d.window_log_max(cap.max(1 << 10).ilog2().min(31))?;
                Decoder::Zstd(Box::new(d))
            }
            Compression::Bzip2 => {
                // Up to 900 kB blocks, about 4 bytes of state per byte.
                declared.set(4 << 20);
                Decoder::Bzip2(Box::new(bzip2::read::MultiBzDecoder::new(body)))
            }
            // Refused before any download (fetch_one).
            Compression::Unsupported(_) => return Err(io::Error::other("unsupported")),
        };
        Ok((dec, declared.get()))
    }

    /// True when `e` is the decoder refusing a later header over the cap.
    fn is_memory_limit(&self, e: &io::Error) -> bool {
        match self {
            Decoder::Xz(_) => e
                .get_ref()
                .and_then(|e| e.downcast_ref::<liblzma::stream::Error>())
                .is_some_and(|e| matches!(e, liblzma::stream::Error::MemLimit)),
            // zstd's error name for ZSTD_error_frameParameter_windowTooLarge.
            Decoder::Zstd(_) => e.to_string().contains("too much memory"),
            _ => false,
        }
    }
}

/// Bytes read ahead for the xz stream header (12) and the largest block
/// header (1024), and for the largest zstd frame header (18).
const XZ_PEEK: usize = 12 + 1024;
const ZSTD_PEEK: usize = 18;

/// Read up to `n` bytes (fewer only at the end of the body).
fn peek(body: &mut BodyLimit<'_>, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    body.by_ref().take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The LZMA2 dictionary size the first block of an xz stream asks for
/// (xz file format 1.2.1, §2.1.1 stream header, §3.1 block header, §5.3.1
/// LZMA2 properties); None when `head` does not show one (the decoder then
/// judges the stream).
pub fn xz_dict_size(head: &[u8]) -> Option<u64> {
    if head.get(..6)? != b"\xFD7zXZ\0" {
        return None;
    }
    let block = head.get(12..)?;
    // Size byte 0 is the index: a stream with no block.
    let size = (usize::from(*block.first()?) + 1) * 4;
    let block = block.get(..size).filter(|_| block[0] != 0)?;
    let flags = *block.get(1)?;
    let mut pos = 2;
    let varint = |pos: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for i in 0..9 {
            let b = *block.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    // Compressed and uncompressed sizes, when present.
    for bit in [0x40, 0x80] {
        if flags & bit != 0 {
            varint(&mut pos)?;
        }
    }
    for _ in 0..=(flags & 3) {
        let id = varint(&mut pos)?;
        let props = usize::try_from(varint(&mut pos)?).ok()?;
        if id == 0x21 && props == 1 {
            let p = *block.get(pos)?;
            return match p {
                0..=39 => Some((2 | u64::from(p & 1)) << (p / 2 + 11)),
                40 => Some(u64::from(u32::MAX)),
                _ => None,
            };
        }
        pos += props;
    }
    None
}

/// The window size the first frame of a zstd stream asks for (RFC 8878
/// §3.1.1.1: frame header descriptor, window descriptor, frame content
/// size); None for a skippable frame or when `head` does not show one.
pub fn zstd_window(head: &[u8]) -> Option<u64> {
    if head.get(..4)? != [0x28, 0xB5, 0x2F, 0xFD] {
        return None;
    }
    let fhd = *head.get(4)?;
    if fhd & 0x20 == 0 {
        // Window descriptor: exponent and mantissa.
        let wd = *head.get(5)?;
        let base = 1u64 << (10 + (wd >> 3));
        return Some(base + base / 8 * u64::from(wd & 7));
    }
    // Single segment: the window is the frame content size.
    let did = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = [1, 2, 4, 8][usize::from(fhd >> 6)];
    let bytes = head.get(5 + did..5 + did + fcs)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    Some(if fcs == 2 { v + 256 } else { v })
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
        r.map_err(|e| {
            let fault = if self.dec.is_memory_limit(&e) {
                Fault::DecoderMemory { asked: None }
            } else {
                Fault::Decompress(e.to_string())
            };
            record(&self.slot, fault)
        })
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

/// How a fetch runs: settings passed down to every transfer, never left to
/// the cache client (a wrapper around a client cannot forget one).
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// NARs in flight at once (`--jobs`).
    pub jobs: usize,
    /// The largest xz dictionary / zstd window a NAR may ask for, in bytes
    /// (`--max-decoder-memory`).
    pub max_decoder_memory: u64,
    /// Lines about the transfer (fetch/resume.rs) on stderr; off with `--quiet`.
    pub notes: bool,
    /// A NAR body must bring at least this many bytes in every window of
    /// [`FetchOptions::window`], else it is given up as too slow.
    pub min_bytes: u64,
    pub window: std::time::Duration,
}

/// The minimum throughput of a NAR: 4 KiB a minute (a link slower than
/// that is stalled, not slow).
pub(crate) const MIN_BYTES: u64 = 4 << 10;
pub(crate) const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// The throughput window; debug builds (the tests) read
/// `FH_LITE_TEST_NAR_WINDOW_MS`, release builds have no such knob.
fn window() -> std::time::Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("FH_LITE_TEST_NAR_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return std::time::Duration::from_millis(ms);
    }
    WINDOW
}

impl FetchOptions {
    /// `jobs` NARs at once, decoders capped at `max_decoder_memory`
    /// bytes, lines about the transfer if `notes`.
    pub fn new(jobs: usize, max_decoder_memory: u64, notes: bool) -> FetchOptions {
        FetchOptions {
            jobs,
            max_decoder_memory,
            notes,
            min_bytes: MIN_BYTES,
            window: window(),
        }
    }

    /// One line about the transfer, `fh-lite: <line>`, unless silenced.
    pub fn note(&self, line: &str) {
        if self.notes {
            crate::ui::say(line);
        }
    }
}

/// Fetch one path into the store: the whole adapter stack.
pub fn fetch_one(
    client: &dyn CacheClient,
    store: &dyn Store,
    info: &NarInfo,
    how: &FetchOptions,
    progress: &Progress,
    budget: &pool::Budget,
) -> Result<(), FetchError> {
    let url = client.nar_url(info);
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
    // A body that breaks off is resumed with a Range request; when that
    // cannot be done the path starts over here, a bounded number of times
    // (fetch/resume.rs).
    let restarts = crate::fetch::resume::Budget::new();
    loop {
        match fetch_body(client, store, info, how, progress, &url, &restarts, budget) {
            Err(_) if !crate::signal::interrupted() && restarts.take_restart() => continue,
            r => return r,
        }
    }
}

/// One download of `info`'s NAR into the store: the adapter stack.
#[allow(clippy::too_many_arguments)]
fn fetch_body(
    client: &dyn CacheClient,
    store: &dyn Store,
    info: &NarInfo,
    how: &FetchOptions,
    progress: &Progress,
    url: &str,
    budget: &crate::fetch::resume::Budget,
    memory: &pool::Budget,
) -> Result<(), FetchError> {
    let url = url.to_string();
    let body = client.get_nar(&url)?;
    let nar = url.clone();
    let reopen: crate::fetch::resume::Reopen =
        Box::new(move |offset| client.get_nar_from(&nar, offset).map_err(|e| e.to_string()));
    let log = |line: &str| how.note(line);
    let body =
        crate::fetch::resume::Resuming::new(&url, body, info.file_size, reopen, budget, &log);
    let slot: FaultSlot = Arc::new(Mutex::new(None));
    let limited = BodyLimit {
        inner: Box::new(body),
        file_size: info.file_size,
        bound: body_bound(info.nar_size),
        count: 0,
        slot: slot.clone(),
        progress,
        since: std::time::Instant::now(),
        in_window: 0,
        min_bytes: how.min_bytes,
        window: how.window,
    };
    let cap = how.max_decoder_memory;
    let (dec, declared) = match Decoder::new(&info.compression, limited, cap) {
        Ok(dec) => dec,
        Err(e) => {
            let fault = slot.lock().ok().and_then(|s| s.clone());
            let fault = fault.unwrap_or(Fault::Decompress(e.to_string()));
            return Err(fault_error(fault, url, info, cap));
        }
    };
    let mut nar = NarLimit {
        inner: Decoded {
            dec,
            slot: slot.clone(),
        },
        left: info.nar_size,
        slot: slot.clone(),
    };
    // Held until the path is in the store. A window larger than the NAR
    // is never filled: the NAR's size bounds what the decoder touches.
    let big = info.nar_size >= READ_AHEAD_FROM;
    let chunk = if info.nar_size >= BIG_CHUNKS_FROM {
        BIG_CHUNK
    } else {
        CHUNK
    };
    let overhead = if big {
        STREAM + (READ_AHEAD + 2) as u64 * chunk as u64
    } else {
        SMALL_STREAM
    };
    let _held = memory.take(overhead + declared.min(info.nar_size));
    let result = if big {
        with_read_ahead(&mut nar, chunk, |r| store.add_path(info, r))
    } else {
        // A second thread and its buffers do not pay for a small NAR.
        store.add_path(info, &mut nar)
    };
    let fault = slot.lock().ok().and_then(|s| s.clone());
    match (result, fault) {
        (Ok(()), _) => Ok(()),
        (Err(source), None) => Err(FetchError::Store { url, source }),
        (Err(_), Some(fault)) => Err(fault_error(fault, url, info, cap)),
    }
}

/// Chunks decoded ahead of the store, and their size: at most
/// `READ_AHEAD` chunks queued, `READ_AHEAD + 2` in flight. NARs from
/// [`BIG_CHUNKS_FROM`] on use chunks of [`BIG_CHUNK`] (1 MiB in flight):
/// one hand-over, a wake-up on each side, per 256 KiB instead of per
/// 64 KiB took a 512 MiB NAR from 1.09 to 0.91 s (docs/performance.md, "Where the time
/// goes"); smaller ones keep [`CHUNK`] (256 KiB in flight), so that many
/// mid-size NARs at once stay within the memory target.
const READ_AHEAD: usize = 2;
const CHUNK: usize = 64 * 1024;
const BIG_CHUNK: usize = 256 * 1024;
const BIG_CHUNKS_FROM: u64 = 16 << 20;

/// NARs from this size on are decoded on a thread of their own
/// ([`with_read_ahead`]).
const READ_AHEAD_FROM: u64 = 1 << 20;

/// What concurrent downloads may hold for decoders and buffers, and what
/// one download costs besides its decoder's window or dictionary: the
/// connection's buffers, the decoder's input, the unpacker's buffers, a
/// thread stack ([`STREAM`]), and (big NARs) the read-ahead chunks.
/// Measured with scripts/bench: peak RSS stays under 8 MiB at any `--jobs`.
pub const NAR_MEMORY: u64 = 4 << 20;
const STREAM: u64 = 512 << 10;
const SMALL_STREAM: u64 = 128 << 10;

/// Downloads at once for `--jobs N`: NARs of small paths are mostly
/// latency, so more run than `jobs`; [`NAR_MEMORY`] bounds them.
pub fn nar_width(jobs: usize) -> usize {
    jobs.saturating_mul(4).clamp(1, 16)
}

/// Run `consume` on what `source` yields, with `source` read (downloaded
/// and decompressed) on a second thread, so that decompression overlaps
/// hashing, NAR parsing and writing. Memory stays bounded: the chunk
/// buffers go round between the two threads.
fn with_read_ahead<R, T>(
    source: &mut R,
    chunk: usize,
    consume: impl FnOnce(&mut dyn Read) -> T,
) -> T
where
    R: Read + Send,
{
    use std::sync::mpsc::sync_channel;
    let (full_tx, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(READ_AHEAD);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(READ_AHEAD + 2);
    std::thread::scope(|s| {
        s.spawn(move || loop {
            // Buffers go round at full length: no zeroing per chunk.
            let mut buf = free_rx.try_recv().unwrap_or_else(|_| vec![0u8; chunk]);
            // Filled before it is handed over: a decoder returns a block at
            // a time, and every hand-over costs a wake-up on each side.
            let mut n = 0;
            let mut failed = None;
            while n < buf.len() {
                match source.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            // What was read before an error still goes first, in order.
            if n > 0 && full_tx.send(Ok((buf, n))).is_err() {
                return; // The consumer is gone (it failed or finished).
            }
            match failed {
                Some(e) => {
                    let _ = full_tx.send(Err(e));
                    return;
                }
                None if n < chunk => {
                    let _ = full_tx.send(Ok((Vec::new(), 0)));
                    return;
                }
                None => {}
            }
        });
        let mut reader = ChannelReader {
            full: full_rx,
            free: free_tx,
            cur: Vec::new(),
            len: 0,
            pos: 0,
            eof: false,
        };
        // Dropping the reader (end of this closure) lets the producer stop.
        consume(&mut reader)
    })
}

/// The consumer's end of [`with_read_ahead`].
struct ChannelReader {
    full: std::sync::mpsc::Receiver<io::Result<(Vec<u8>, usize)>>,
    free: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// The chunk being read: its first `len` bytes are data.
    cur: Vec<u8>,
    len: usize,
    pos: usize,
    eof: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos == self.len {
            if self.eof {
                return Ok(0);
            }
            let (next, len) = match self.full.recv() {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => return Err(e),
                // The producer ended without an EOF chunk: it panicked.
                Err(_) => return Err(io::Error::other("the download thread stopped")),
            };
            let used = std::mem::replace(&mut self.cur, next);
            if !used.is_empty() {
                let _ = self.free.try_send(used);
            }
            (self.pos, self.len) = (0, len);
            self.eof = len == 0;
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn fault_error(fault: Fault, url: String, info: &NarInfo, cap: u64) -> FetchError {
    let path = info.store_path.clone();
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
        Fault::BodyUnbounded { limit } => FetchError::CompressedTooLong {
            path,
            url,
            limit,
            nar_size: info.nar_size,
        },
        Fault::DecoderMemory { asked } => FetchError::DecoderMemory {
            path,
            url,
            codec: info.compression.to_string(),
            asked,
            cap,
        },
        Fault::Decompress(detail) => FetchError::Decompress {
            path,
            url,
            codec: info.compression.to_string(),
            detail,
        },
        Fault::NarTooLong => FetchError::NarTooLong {
            path,
            url,
            nar_size: info.nar_size,
        },
        Fault::TooSlow { bytes, secs } => FetchError::Truncated {
            path,
            url,
            detail: format!(
                "only {bytes} bytes came in {secs:.1} s, under the minimum throughput; the transfer is stalled"
            ),
        },
        // The apply reports it as Exit::Interrupted.
        Fault::Interrupted => FetchError::Truncated {
            path,
            url,
            detail: "interrupted by a signal".to_string(),
        },
    }
}

/// Fetch every path of `plan` (the plan step's missing paths, references
/// first) into `store`, at most `jobs` at a time, each only after its
/// references; then `store.finish()`. A store that fetches paths itself
/// ([`Store::reads_nar`] false) gets them one by one on this thread.
pub fn fetch_all<P: AsRef<[NarInfo]> + ?Sized>(
    client: &dyn CacheClient,
    store: &dyn Store,
    plan: &P,
    how: &FetchOptions,
    progress: &Progress,
) -> Result<(), FetchError> {
    let jobs = how.jobs;
    let paths = plan.as_ref();
    // Refuse undecodable paths before downloading anything.
    for info in paths {
        if let Compression::Unsupported(c) = &info.compression {
            return Err(FetchError::UnsupportedCompression {
                path: info.store_path.clone(),
                url: client.nar_url(info),
                compression: c.clone(),
            });
        }
    }
    let memory = pool::Budget::new(NAR_MEMORY);
    if !store.reads_nar() {
        // The store copies each path itself, one at a time (`nix copy`):
        // in plan order (references first) on this thread, so that no
        // other thread is alive when it spawns its program (nix_copy.rs).
        for info in paths {
            progress.path_start(info);
            fetch_one(client, store, info, how, progress, &memory)?;
            progress.path_done(info);
        }
        return finish(client, store, progress);
    }
    let mut deps = Dependencies::new(paths);
    let fetch = |&i: &usize| {
        let info = &paths[i];
        progress.path_start(info);
        // A mirror's NAR that fails: the same path from the next source.
        let mut next;
        let mut from = info;
        while let Err(e) = fetch_one(client, store, from, how, progress, &memory) {
            match client.next_source(from, &e)? {
                Some(n) => next = n,
                None => return Err(e),
            }
            from = &next;
        }
        progress.path_done(info);
        Ok(())
    };
    let jobs = nar_width(jobs).min(paths.len()).max(1);
    pool::run(jobs, deps.ready(), fetch, |i, ()| Ok(deps.done(i)))?;
    if let Some(i) = deps.waiting() {
        // Only possible with a reference cycle, which plan rejects.
        return Err(FetchError::Cycle {
            path: paths[i].store_path.clone(),
        });
    }
    finish(client, store, progress)
}

/// The end of [`fetch_all`]: `store.finish()`, then the progress line.
fn finish(
    client: &dyn CacheClient,
    store: &dyn Store,
    progress: &Progress,
) -> Result<(), FetchError> {
    store.finish().map_err(|source| FetchError::Store {
        url: client.base_url().to_string(),
        source,
    })?;
    progress.done();
    Ok(())
}

/// When a path (an index into the list) may go to the store: once its
/// references in the list, other than itself, are done. References outside
/// the list are valid already.
struct Dependencies {
    /// `waiting[i]`: references of `i` not yet done.
    waiting: Vec<usize>,
    /// `dependents[j]`: the paths that wait for `j`.
    dependents: Vec<Vec<usize>>,
}

impl Dependencies {
    fn new(paths: &[NarInfo]) -> Dependencies {
        let index: BTreeMap<&StorePath, usize> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (&p.store_path, i))
            .collect();
        let mut deps = Dependencies {
            waiting: vec![0; paths.len()],
            dependents: vec![Vec::new(); paths.len()],
        };
        for (i, info) in paths.iter().enumerate() {
            for &j in info.references.iter().filter_map(|r| index.get(r)) {
                if j != i {
                    deps.waiting[i] += 1;
                    deps.dependents[j].push(i);
                }
            }
        }
        deps
    }

    /// The paths that may start at once, in list order.
    fn ready(&self) -> Vec<usize> {
        (0..self.waiting.len())
            .filter(|&i| self.waiting[i] == 0)
            .collect()
    }

    /// `i` is in the store: the paths that may start now, in list order.
    fn done(&mut self, i: usize) -> Vec<usize> {
        let mut ready = Vec::new();
        for &d in &self.dependents[i] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                ready.push(d);
            }
        }
        ready
    }

    /// The first path still waiting for a reference (after a complete run:
    /// one on, or behind, a reference cycle).
    fn waiting(&self) -> Option<usize> {
        self.waiting.iter().position(|&w| w > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use crate::nix::hash::Sha256;
    use crate::store::image::ImageStore;
    use crate::store::StoreError;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use crate::testutil::cache::{apply, compress, quiet, test_opts, Entry, TestCache};
    use crate::testutil::nar::{dir, nar, Node};
    use crate::testutil::{sp, TempDir};

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
            /// The whole message.
            message: &'static str,
            nar_of_root_requested: bool,
        }
        let cases = [
            Case {
                name: "malformed narinfo",
                spoil: |e, c| c.put_narinfo(e.path.hash_part(), "StorePath /nix/store/nonsense\n"),
                exit: Exit::Verification,
                message: "GET http://cache.test/c/33333333333333333333333333333333.narinfo: narinfo: line 1 \"StorePath /nix/store/nonsense\" has no ':'; the cache sent a malformed narinfo for /nix/store/33333333333333333333333333333333-app",
                nar_of_root_requested: false,
            },
            Case {
                name: "narinfo for another store path",
                spoil: |e, _| e.path = sp('3', "other"),
                exit: Exit::Verification,
                message: "GET http://cache.test/c/33333333333333333333333333333333.narinfo: narinfo: StorePath /nix/store/33333333333333333333333333333333-other is not the path asked for; the cache sent a malformed narinfo for /nix/store/33333333333333333333333333333333-app",
                nar_of_root_requested: false,
            },
            Case {
                name: "unknown compression",
                spoil: |e, _| e.compression = "lz4",
                exit: Exit::Cache,
                message: "/nix/store/33333333333333333333333333333333-app: the cache serves http://cache.test/c/nar/33333333333333333333333333333333.nar.lz4 with Compression 'lz4', which fh-lite cannot decode (supported: none, xz, zstd, bzip2)",
                nar_of_root_requested: false,
            },
            Case {
                name: "not signed",
                spoil: |e, _| e.signed = false,
                exit: Exit::Verification,
                message: "refusing the narinfo at http://cache.test/c/33333333333333333333333333333333.narinfo: /nix/store/33333333333333333333333333333333-app is not signed (its narinfo has no Sig: line); a binary cache must sign what it serves",
                nar_of_root_requested: false,
            },
            Case {
                name: "nar hash mismatch",
                spoil: |e, _| e.nar_hash = Some(Sha256::digest(b"something else")),
                exit: Exit::Verification,
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: NAR of /nix/store/33333333333333333333333333333333-app: hash mismatch: the narinfo says sha256:1y3ca7diw4374g1y9x19q4iymv3icgv6nigglzf0s4pz4nk3y7zl, the NAR has sha256:0dyjw958rjpbgm3nsc2wbjsdv5di5s7q1zpbz6vv9l3w94i11ral; the path was not added to the store: the cache's copy is corrupt or was altered",
                nar_of_root_requested: true,
            },
            Case {
                name: "nar size mismatch (NarSize larger)",
                spoil: |e, _| e.nar_size = Some(e.nar.len() as u64 + 8),
                exit: Exit::Verification,
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: NAR of /nix/store/33333333333333333333333333333333-app: size mismatch: the narinfo says 296 bytes, the NAR has 288; the path was not added to the store: the cache's copy is corrupt or was altered",
                nar_of_root_requested: true,
            },
            Case {
                name: "body longer than FileSize",
                spoil: |e, _| {
                    let body = compress("zstd", &e.nar);
                    e.file_size = Some(Some(body.len() as u64 - 5));
                },
                exit: Exit::Verification,
                message: "GET http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: body longer than FileSize 134 given in the narinfo of /nix/store/33333333333333333333333333333333-app",
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
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: NAR of /nix/store/33333333333333333333333333333333-app longer than NarSize 1000 after decompression",
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
                message: "GET http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: body cut short (broke off at 132 of 139 bytes (the body ended early); gave up after 3 Range requests) while fetching /nix/store/33333333333333333333333333333333-app",
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
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: NAR of /nix/store/33333333333333333333333333333333-app: /a: directory entries not in ascending order",
                nar_of_root_requested: true,
            },
            Case {
                name: "xz header asks for a 1.5 GiB dictionary",
                spoil: |e, _| {
                    e.compression = "xz";
                    e.body = Some(xz_header(37));
                },
                exit: Exit::Verification,
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.xz: the xz stream of /nix/store/33333333333333333333333333333333-app asks for a 1.5 GiB (1610612736 bytes) dictionary, over the decoder memory cap of 64.0 MiB: refusing it (--max-decoder-memory MIB raises the cap, if you trust this cache)",
                nar_of_root_requested: true,
            },
            Case {
                name: "a second xz stream asks for a 1.5 GiB dictionary",
                spoil: |e, _| {
                    e.compression = "xz";
                    let mut body = compress("xz", &e.nar);
                    body.extend(xz_header(37));
                    e.body = Some(body);
                },
                exit: Exit::Verification,
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.xz: the xz stream of /nix/store/33333333333333333333333333333333-app asks for a larger dictionary, over the decoder memory cap of 64.0 MiB: refusing it (--max-decoder-memory MIB raises the cap, if you trust this cache)",
                nar_of_root_requested: true,
            },
            Case {
                name: "zstd header asks for a 2 GiB window",
                spoil: |e, _| {
                    e.body = Some(vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA8, 1, 2, 3, 4]);
                },
                exit: Exit::Verification,
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: the zstd stream of /nix/store/33333333333333333333333333333333-app asks for a 2.0 GiB (2147483648 bytes) window, over the decoder memory cap of 64.0 MiB: refusing it (--max-decoder-memory MIB raises the cap, if you trust this cache)",
                nar_of_root_requested: true,
            },
            Case {
                name: "a second zstd frame asks for a 128 MiB window",
                spoil: |e, _| {
                    let mut body = compress("zstd", &e.nar);
                    body.extend([0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x88, 1, 2, 3, 4]);
                    e.body = Some(body);
                },
                exit: Exit::Verification,
                message: "http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: the zstd stream of /nix/store/33333333333333333333333333333333-app asks for a larger window, over the decoder memory cap of 64.0 MiB: refusing it (--max-decoder-memory MIB raises the cap, if you trust this cache)",
                nar_of_root_requested: true,
            },
            Case {
                name: "zstd skippable frames and no FileSize",
                spoil: |e, _| {
                    // 200 KiB of frames that decode to nothing, then the NAR.
                    let mut body = Vec::new();
                    for _ in 0..200 {
                        body.extend([0x50, 0x2A, 0x4D, 0x18]);
                        body.extend(1016u32.to_le_bytes());
                        body.extend([0u8; 1016]);
                    }
                    body.extend(compress("zstd", &e.nar));
                    e.body = Some(body);
                    e.file_size = Some(None);
                },
                exit: Exit::Verification,
                message: "GET http://cache.test/c/nar/33333333333333333333333333333333.nar.zstd: compressed body of /nix/store/33333333333333333333333333333333-app goes on past 65828 bytes, more than a NAR of NarSize 288 can take, and its narinfo gives no FileSize: refusing it",
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
            assert_eq!(msg, case.message, "{}", case.name);
            assert_eq!(err.exit(), case.exit, "{}: {msg}", case.name);
            let root_nar = cache
                .nar_requests()
                .iter()
                .any(|u| u.contains(root.hash_part()));
            assert_eq!(root_nar, case.nar_of_root_requested, "{}", case.name);
            assert_clean(&img, &[&lib]);
        }
    }

    /// CRC-32 (IEEE, as xz uses it), for hand-made xz headers.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    /// An xz stream header and a first block header whose LZMA2 filter has
    /// dictionary property `p` (37: 1.5 GiB), with valid CRCs; no data.
    pub fn xz_header(p: u8) -> Vec<u8> {
        let mut out = vec![0xFD, b'7', b'z', b'X', b'Z', 0, 0, 1];
        out.extend(crc32(&[0, 1]).to_le_bytes());
        let block = [2, 0, 0x21, 1, p, 0, 0, 0];
        out.extend(block);
        out.extend(crc32(&block).to_le_bytes());
        out
    }

    #[test]
    fn decoder_headers_tell_the_memory_they_ask_for() {
        assert_eq!(xz_dict_size(&xz_header(37)), Some(3 << 29));
        assert_eq!(xz_dict_size(&xz_header(0)), Some(4096));
        assert_eq!(xz_dict_size(&xz_header(40)), Some(u64::from(u32::MAX)));
        assert_eq!(xz_dict_size(&xz_header(41)), None);
        // xz -6 uses an 8 MiB dictionary.
        assert_eq!(xz_dict_size(&compress("xz", b"data")), Some(8 << 20));
        assert_eq!(xz_dict_size(&xz_header(37)[..20]), None, "cut short");
        assert_eq!(xz_dict_size(b"not xz at all, not xz at all"), None);
        // A small zstd frame is one segment: its window is its content size.
        assert_eq!(zstd_window(&compress("zstd", &[7u8; 300])), Some(300));
        let window = |wd: u8| zstd_window(&[0x28, 0xB5, 0x2F, 0xFD, 0, wd]);
        assert_eq!(window(0xA8), Some(1 << 31));
        assert_eq!(window(0x83), Some((1 << 26) + 3 * (1 << 23)));
        // Skippable frames ask for nothing (the body bound limits them).
        assert_eq!(zstd_window(&[0x50, 0x2A, 0x4D, 0x18, 0, 0, 0, 0]), None);
        assert_eq!(body_bound(6400), 6400 + 100 + 65536);
        assert_eq!(body_bound(u64::MAX), u64::MAX);
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
        let err = fetch_all(&cache, &store, &plan, &test_opts(), &quiet()).unwrap_err();
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
            format!("{}: nix copy: refused", cache.nar_url(&plan.paths[2]))
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

    fn narinfo(path: &StorePath, refs: &[&StorePath]) -> NarInfo {
        NarInfo {
            store_path: path.clone(),
            url: format!("nar/{}.nar", path.hash_part()),
            compression: Compression::None,
            file_hash: None,
            file_size: None,
            nar_hash: Sha256::digest(b""),
            nar_size: 8,
            references: refs.iter().map(|r| (*r).clone()).collect(),
            deriver: None,
            sigs: Vec::new(),
            ca: None,
        }
    }

    #[test]
    fn a_path_is_ready_once_its_references_are_done() {
        let (a, b, c, d) = (sp('1', "a"), sp('2', "b"), sp('3', "c"), sp('4', "d"));
        let valid = sp('9', "valid");
        // b refers to itself and to a path outside the list (valid already);
        // c lists b twice.
        let paths = [
            narinfo(&a, &[]),
            narinfo(&b, &[&a, &b, &valid]),
            narinfo(&c, &[&b, &a, &b]),
            narinfo(&d, &[]),
        ];
        let mut deps = Dependencies::new(&paths);
        assert_eq!(deps.ready(), [0, 3]);
        assert_eq!(deps.waiting(), Some(1));
        assert_eq!(deps.done(3), [0usize; 0]);
        assert_eq!(deps.done(0), [1]);
        assert_eq!(deps.waiting(), Some(2), "c still waits for b");
        assert_eq!(deps.done(1), [2]);
        assert_eq!(deps.waiting(), None);
        assert_eq!(deps.done(2), [0usize; 0]);
    }

    #[test]
    fn paths_on_a_reference_cycle_never_become_ready() {
        let (x, y, z, w) = (sp('1', "x"), sp('2', "y"), sp('3', "z"), sp('4', "w"));
        // x and y refer to each other; w waits behind the cycle.
        let paths = [
            narinfo(&x, &[&y]),
            narinfo(&y, &[&x]),
            narinfo(&z, &[]),
            narinfo(&w, &[&y, &z]),
        ];
        let mut deps = Dependencies::new(&paths);
        assert_eq!(deps.ready(), [2]);
        assert_eq!(deps.done(2), [0usize; 0]);
        assert_eq!(deps.waiting(), Some(0));
    }

    #[test]
    fn read_ahead_passes_everything_through_in_order() {
        // Not a multiple of the chunk size, and bigger than all buffers.
        let data: Vec<u8> = (0..3 * CHUNK * READ_AHEAD + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut src = std::io::Cursor::new(data.clone());
        let got = with_read_ahead(&mut src, CHUNK, |r| {
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
        // Everything read before the error arrives first, then the error.
        let (got, err) = with_read_ahead(&mut Failing(100_000), CHUNK, |r| {
            let mut v = Vec::new();
            let err = r.read_to_end(&mut v).unwrap_err();
            (v.len(), err)
        });
        assert_eq!(got, 100_000);
        assert_eq!(err.to_string(), "body cut short");
        // A source that yields a little at a time (a decoder's blocks).
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(999);
                self.0.read(&mut buf[..n])
            }
        }
        let data: Vec<u8> = (0..BIG_CHUNK * 2 + 77).map(|i| (i % 253) as u8).collect();
        let got = with_read_ahead(
            &mut Trickle(std::io::Cursor::new(data.clone())),
            BIG_CHUNK,
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).unwrap();
                v
            },
        );
        assert!(got == data, "bytes differ");
        // An endless source and a consumer that reads 10 bytes: returns.
        let mut endless = std::io::repeat(7);
        let first = with_read_ahead(&mut endless, CHUNK, |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).unwrap();
            b
        });
        assert_eq!(first, [7u8; 10]);
    }
}
