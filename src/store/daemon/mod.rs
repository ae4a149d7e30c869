//! The nix-daemon backend: a client of the worker protocol over the daemon's
//! unix socket (docs/formats.md, "Daemon protocol").
//!
//! Wire primitives (little-endian): `u64`; strings are `u64 len ‖ bytes ‖
//! zero padding to 8`; sets are `u64 count ‖ items`. After every operation
//! the daemon sends a "stderr stream" of tagged messages (log lines,
//! activities, an error) ending in `STDERR_LAST`, then the op's result.
//!
//! Handshake: we announce protocol 1.37 (docs/formats.md, "Daemon protocol"; no
//! feature exchange, works with Nix 2.8's 1.34 and with 1.38 daemons, which
//! negotiate down to 1.37). The feature exchange of ≥ 1.38 is implemented
//! too (we offer no features), so a daemon that insists on 1.38 also works.
//! We need ≥ 1.23 (framed NAR upload); older daemons get a clear error.
//!
//! Connections: one long-lived connection (behind a `Mutex`) carries the
//! queries, the temporary GC roots (`AddTempRoot` roots live as long as the
//! connection, i.e. until this store object is dropped at the end of the
//! apply) and indirect roots. Every `add_path` opens its own connection, so
//! the fetch threads upload in parallel and an aborted upload (which kills
//! its connection on purpose) never takes the temp roots with it.
//!
//! Upload (`AddToStoreNar`, op 39): the NAR is sent as ≥ 1.23 frames of at
//! most 64 KiB straight from the caller's reader; the bytes are hashed,
//! counted (limit NarSize) and parsed strictly (`nix::nar::parse`) in the
//! same pass. Only when NarHash and NarSize match is the terminating empty
//! frame sent; on any mismatch the connection is shut down instead, so the
//! daemon sees a truncated stream and registers nothing. The daemon may
//! send stderr messages while we upload; a reader thread on a clone of the
//! socket (`try_clone`) drains them concurrently, so neither side can block
//! on a full socket buffer (simpler and more robust than toggling the
//! socket non-blocking between frames and resuming half-read messages).
//!
//! `dontCheckSigs`: [`DaemonStore::connect`] takes `check_sigs`. With
//! `true` we send 0 and the daemon checks the signatures against its own
//! `trusted-public-keys` as well (and for untrusted clients the daemon
//! always does). [`super::select`] passes `false` (send 1) only when the
//! connection is trusted (root/trusted-users): fh-lite has already verified
//! every signature against the keys the user configured, which the daemon's
//! nix.conf may not list.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::{Store, StoreError};
use crate::nix::hash::HashingReader;
use crate::nix::nar::{self, NarSink};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;

// The wire codec and the stderr stream decoder: pure, so the fuzz
// targets (fuzz/) can build them on their own.
pub mod wire;
pub use wire::LogFn;
use wire::*;

/// Where Nix puts the daemon socket when nothing else is configured.
pub const DEFAULT_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";

const WORKER_MAGIC_1: u64 = 0x6e69_7863;
const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// What we announce (see the module doc).
const CLIENT_VERSION: u64 = proto(1, 37);
/// The oldest daemon protocol we speak: framed NAR upload.
const MIN_DAEMON_VERSION: u64 = proto(1, 23);

const OP_ADD_TEMP_ROOT: u64 = 11;
#[cfg(test)]
const OP_ADD_INDIRECT_ROOT: u64 = 12;
const OP_QUERY_VALID_PATHS: u64 = 31;
const OP_ADD_TO_STORE_NAR: u64 = 39;

/// Payload bytes per upload frame.
const FRAME: usize = 64 * 1024;
/// How long the handshake may take (a socket that accepts but never
/// answers must not hang fh-lite).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Temp roots are sent in pipelined batches of this many requests.
const ROOT_BATCH: usize = 128;

impl Wire {
    fn at(self, socket: &Path, doing: &str) -> StoreError {
        let socket = socket.to_path_buf();
        match self {
            Wire::Io(err) => StoreError::DaemonIo {
                socket,
                doing: doing.to_string(),
                err,
            },
            Wire::Protocol(detail) => StoreError::DaemonProtocol { socket, detail },
            Wire::Daemon(message) => StoreError::Daemon {
                socket,
                doing: doing.to_string(),
                message,
            },
        }
    }
}

/// Show a daemon log line on our stderr.
pub fn log_to_stderr(line: &str) {
    crate::ui::relay("nix-daemon", line);
}

// ---- one connection -----------------------------------------------------

/// One handshaken connection to the daemon.
struct Conn {
    stream: UnixStream,
    socket: PathBuf,
    /// Negotiated protocol version.
    version: u64,
    /// `nixVersion` (≥ 1.33).
    daemon_version: Option<String>,
    /// Trust flag (≥ 1.35): Some(true) trusted, Some(false) not, None unknown.
    trusted: Option<bool>,
    log: LogFn,
}

impl Conn {
    fn connect(socket: &Path, log: LogFn) -> Result<Conn, StoreError> {
        Conn::connect_as(socket, log, CLIENT_VERSION)
    }

    /// `connect`, announcing `client_version` (tests try 1.38 too).
    fn connect_as(socket: &Path, log: LogFn, client_version: u64) -> Result<Conn, StoreError> {
        let stream = UnixStream::connect(socket).map_err(|err| StoreError::DaemonConnect {
            socket: socket.to_path_buf(),
            err,
        })?;
        let mut conn = Conn {
            stream,
            socket: socket.to_path_buf(),
            version: 0,
            daemon_version: None,
            trusted: None,
            log,
        };
        conn.handshake(client_version)
            .map_err(|e| e.at(socket, "during the handshake"))?;
        Ok(conn)
    }

    fn handshake(&mut self, client_version: u64) -> Result<(), Wire> {
        self.stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        // Magic and our version back to back, as Nix's own client does.
        let mut hello = Vec::new();
        put_u64(&mut hello, WORKER_MAGIC_1);
        put_u64(&mut hello, client_version);
        self.stream.write_all(&hello)?;
        let r = &mut self.stream;
        let magic = get_u64(r).map_err(|e| match e {
            Wire::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Wire::Protocol(
                "the socket closed the connection without answering; is it a nix-daemon socket?"
                    .into(),
            ),
            Wire::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Wire::Protocol(format!(
                    "no answer within {} s; is it a nix-daemon socket?",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            }
            e => e,
        })?;
        if magic != WORKER_MAGIC_2 {
            return Err(Wire::Protocol(format!(
                "not a nix-daemon socket: expected magic {WORKER_MAGIC_2:#x}, got {magic:#x}"
            )));
        }
        let server = get_u64(r)?;
        if server >> 8 != 1 {
            return Err(Wire::Protocol(format!(
                "unsupported protocol major version {} (fh-lite speaks 1.x)",
                server >> 8
            )));
        }
        if server < MIN_DAEMON_VERSION {
            return Err(Wire::Protocol(format!(
                "daemon protocol 1.{} is too old: fh-lite needs 1.23 or newer (Nix 2.4+)",
                server & 0xff
            )));
        }
        let version = server.min(client_version);
        let mut out = Vec::new();
        if version >= proto(1, 38) {
            // Feature exchange: we offer none; the result is the intersection.
            put_u64(&mut out, 0);
            self.stream.write_all(&out)?;
            out.clear();
            let n = get_count(&mut self.stream, "feature list")?;
            for _ in 0..n {
                get_bytes(&mut self.stream, "feature name")?;
            }
        }
        put_u64(&mut out, 0); // obsolete CPU affinity (≥ 1.14)
        put_u64(&mut out, 0); // obsolete reserveSpace (≥ 1.11)
        self.stream.write_all(&out)?;
        if version >= proto(1, 33) {
            self.daemon_version = Some(get_string(&mut self.stream, "daemon version")?);
        }
        if version >= proto(1, 35) {
            self.trusted = match get_u64(&mut self.stream)? {
                0 => None,
                1 => Some(true),
                2 => Some(false),
                t => return Err(Wire::Protocol(format!("unknown trust flag {t}"))),
            };
        }
        self.version = version;
        process_stderr(&mut self.stream, version, self.log)?;
        // Operations may legitimately take long (the daemon waits for path
        // locks); after the handshake only a dead peer ends a read.
        self.stream.set_read_timeout(None)?;
        Ok(())
    }

    fn stderr(&mut self) -> Result<(), Wire> {
        process_stderr(&mut self.stream, self.version, self.log)
    }

    fn query_valid(&mut self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, Wire> {
        let mut req = Vec::new();
        put_u64(&mut req, OP_QUERY_VALID_PATHS);
        let full: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        put_set(&mut req, &full);
        if self.version >= proto(1, 27) {
            put_u64(&mut req, 0); // do not substitute
        }
        self.stream.write_all(&req)?;
        self.stderr()?;
        let n = get_count(&mut self.stream, "valid path set")?;
        let mut valid = BTreeSet::new();
        for _ in 0..n {
            let s = get_string(&mut self.stream, "store path")?;
            let p = StorePath::parse(&s)
                .map_err(|e| Wire::Protocol(format!("the daemon answered an invalid path: {e}")))?;
            valid.insert(p);
        }
        Ok(valid)
    }

    fn add_temp_roots(&mut self, paths: &[StorePath]) -> Result<(), Wire> {
        for batch in paths.chunks(ROOT_BATCH) {
            let mut req = Vec::new();
            for p in batch {
                put_u64(&mut req, OP_ADD_TEMP_ROOT);
                put_bytes(&mut req, p.to_string().as_bytes());
            }
            self.stream.write_all(&req)?;
            for _ in batch {
                self.stderr()?;
                get_u64(&mut self.stream)?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn add_indirect_root(&mut self, link: &Path) -> Result<(), Wire> {
        use std::os::unix::ffi::OsStrExt;
        let mut req = Vec::new();
        put_u64(&mut req, OP_ADD_INDIRECT_ROOT);
        put_bytes(&mut req, link.as_os_str().as_bytes());
        self.stream.write_all(&req)?;
        self.stderr()?;
        get_u64(&mut self.stream)?;
        Ok(())
    }

    /// `AddToStoreNar`; see the module doc. Consumes the connection: after
    /// a failed upload it is unusable.
    fn add_to_store_nar(
        self,
        info: &NarInfo,
        nar: &mut dyn Read,
        dont_check_sigs: bool,
    ) -> Result<(), StoreError> {
        let path = &info.store_path;
        let doing = format!("adding {path}");
        let mut req = Vec::new();
        put_u64(&mut req, OP_ADD_TO_STORE_NAR);
        put_bytes(&mut req, path.to_string().as_bytes());
        let deriver = info
            .deriver
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        put_bytes(&mut req, deriver.as_bytes());
        // NarHash as bare base16, as Nix sends it.
        put_bytes(&mut req, info.nar_hash.to_hex().as_bytes());
        let refs: Vec<String> = info.references.iter().map(|r| r.to_string()).collect();
        put_set(&mut req, &refs);
        put_u64(&mut req, 0); // registrationTime: now
        put_u64(&mut req, info.nar_size);
        put_u64(&mut req, 0); // ultimate: we did not build it
        let sigs: Vec<String> = info.sigs.iter().map(|s| s.to_string()).collect();
        put_set(&mut req, &sigs);
        put_bytes(&mut req, info.ca.as_deref().unwrap_or("").as_bytes());
        put_u64(&mut req, 0); // repair
        put_u64(&mut req, u64::from(dont_check_sigs));
        let socket = self.socket.clone();
        let write_half = &self.stream;
        (&*write_half)
            .write_all(&req)
            .map_err(|e| Wire::Io(e).at(&socket, &doing))?;
        let mut read_half = self
            .stream
            .try_clone()
            .map_err(|e| Wire::Io(e).at(&socket, &doing))?;
        let (version, log) = (self.version, self.log);
        let (upload, answer) = std::thread::scope(|s| {
            let reader = s.spawn(move || process_stderr(&mut read_half, version, log));
            let upload = upload_nar(write_half, info, nar);
            if upload.is_err() {
                // Never send the terminator for a bad NAR: cut the
                // connection so the daemon aborts and registers nothing,
                // and so the reader thread wakes up.
                let _ = write_half.shutdown(std::net::Shutdown::Both);
            }
            let answer = match reader.join() {
                Ok(a) => a,
                Err(_) => Err(Wire::Protocol("the stderr reader thread panicked".into())),
            };
            (upload, answer)
        });
        match (upload, answer) {
            (Ok(()), Ok(())) => Ok(()),
            (Ok(()), Err(e)) => Err(e.at(&socket, &doing)),
            (Err(Upload::Verify(e)), _) => Err(e),
            // The socket broke while we wrote: the daemon's own error, if
            // it sent one, says why.
            (Err(Upload::Socket(_)), Err(e @ Wire::Daemon(_))) => Err(e.at(&socket, &doing)),
            (Err(Upload::Socket(err)), _) => Err(StoreError::DaemonIo { socket, doing, err }),
        }
    }
}

enum Upload {
    /// The NAR itself failed: hash, size, format, or its source.
    Verify(StoreError),
    /// Writing to the daemon failed.
    Socket(io::Error),
}

/// Reads through the hashing/counting reader and forwards every byte it
/// yields into 64 KiB frames on the socket.
struct FrameTee<'a> {
    inner: HashingReader<io::BufReader<&'a mut dyn Read>>,
    out: &'a UnixStream,
    /// 8 bytes reserved for the frame header, then up to FRAME bytes.
    buf: Vec<u8>,
    socket_err: Option<io::Error>,
}

impl FrameTee<'_> {
    fn flush_frame(&mut self) -> io::Result<()> {
        let len = self.buf.len() - 8;
        if len == 0 {
            return Ok(());
        }
        self.buf[..8].copy_from_slice(&(len as u64).to_le_bytes());
        if let Err(e) = self.out.write_all(&self.buf) {
            let kind = e.kind();
            self.socket_err = Some(e);
            return Err(io::Error::new(kind, "writing to the nix-daemon failed"));
        }
        self.buf.truncate(8);
        Ok(())
    }
}

impl Read for FrameTee<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let room = FRAME + 8 - self.buf.len();
        let want = b.len().min(room);
        let n = self.inner.read(&mut b[..want])?;
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == FRAME + 8 {
            self.flush_frame()?;
        }
        Ok(n)
    }
}

/// A NAR sink that keeps nothing: used to check the NAR's grammar.
struct Discard;

impl NarSink for Discard {
    fn directory(&mut self, _path: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn directory_end(&mut self, _path: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn file(&mut self, _: &[u8], _: bool, _: u64, contents: &mut dyn Read) -> io::Result<()> {
        io::copy(contents, &mut io::sink()).map(|_| ())
    }
    fn symlink(&mut self, _path: &[u8], _target: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

fn upload_nar(out: &UnixStream, info: &NarInfo, nar: &mut dyn Read) -> Result<(), Upload> {
    let path = &info.store_path;
    let mut buf = Vec::with_capacity(FRAME + 8);
    buf.resize(8, 0);
    let mut tee = FrameTee {
        inner: HashingReader::new(io::BufReader::with_capacity(FRAME, nar), info.nar_size),
        out,
        buf,
        socket_err: None,
    };
    let parsed = nar::parse(&mut tee, &mut Discard);
    if let Some(e) = tee.socket_err.take() {
        return Err(Upload::Socket(e));
    }
    if let Err(e) = parsed {
        return Err(Upload::Verify(StoreError::BadNar {
            path: path.clone(),
            detail: super::nar_error_detail(&e),
        }));
    }
    // The NAR must end where its grammar ends (and within NarSize).
    super::check_nar_end(info, &mut tee.inner).map_err(Upload::Verify)?;
    let FrameTee { inner, mut buf, .. } = tee;
    let (hash, size) = inner.finish();
    super::check_hash_size(info, hash, size).map_err(Upload::Verify)?;
    // Verified: send what is left and the terminator in one write.
    let len = buf.len() - 8;
    buf[..8].copy_from_slice(&(len as u64).to_le_bytes());
    if len == 0 {
        buf.clear();
    }
    buf.extend_from_slice(&0u64.to_le_bytes());
    let mut w = out;
    w.write_all(&buf).map_err(Upload::Socket)?;
    Ok(())
}

// ---- the Store ----------------------------------------------------------

/// The nix-daemon backend.
pub struct DaemonStore {
    socket: PathBuf,
    /// The long-lived connection: queries, temp roots, indirect roots.
    main: Mutex<Conn>,
    /// Send `dontCheckSigs = 1` (see the module doc).
    dont_check_sigs: bool,
    log: LogFn,
}

impl DaemonStore {
    /// Connect and handshake; `check_sigs = false` asks the daemon not to
    /// check signatures again (honoured for trusted clients only).
    pub fn connect(socket: &Path, check_sigs: bool) -> Result<DaemonStore, StoreError> {
        Self::connect_with_log(socket, check_sigs, log_to_stderr)
    }

    pub fn connect_with_log(
        socket: &Path,
        check_sigs: bool,
        log: LogFn,
    ) -> Result<DaemonStore, StoreError> {
        let conn = Conn::connect(socket, log)?;
        Ok(DaemonStore {
            socket: socket.to_path_buf(),
            main: Mutex::new(conn),
            dont_check_sigs: !check_sigs,
            log,
        })
    }

    /// Whether the daemon trusts us: `Some` from daemons speaking ≥ 1.35
    /// (Nix 2.15+), `None` when unknown (Nix 2.8).
    pub fn trusted(&self) -> Option<bool> {
        self.lock().trusted
    }

    /// The daemon's Nix version (≥ 1.33), e.g. "2.8.0".
    pub fn daemon_version(&self) -> Option<String> {
        self.lock().daemon_version.clone()
    }

    /// Register `link` (a symlink outside the store pointing into it) as
    /// an indirect GC root (`gcroots/auto/…`). The activation step writes
    /// gcroots itself (it runs as root); this is for an unprivileged
    /// activation, which is not wired up yet.
    #[cfg(test)]
    pub fn add_indirect_root(&self, link: &Path) -> Result<(), StoreError> {
        self.lock()
            .add_indirect_root(link)
            .map_err(|e| e.at(&self.socket, &format!("adding GC root {}", link.display())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        // A panic while holding the lock leaves the connection in an
        // unknown state, but the next operation's protocol checks catch
        // that; poisoning adds nothing.
        self.main.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for DaemonStore {
    fn describe(&self) -> String {
        match self.daemon_version() {
            Some(v) => format!("nix-daemon {v} at {}", self.socket.display()),
            None => format!("nix-daemon at {}", self.socket.display()),
        }
    }

    fn query_valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        self.lock()
            .query_valid(paths)
            .map_err(|e| e.at(&self.socket, "querying valid paths"))
    }

    fn add_temp_roots(&self, paths: &[StorePath]) -> Result<(), StoreError> {
        self.lock()
            .add_temp_roots(paths)
            .map_err(|e| e.at(&self.socket, "adding temporary GC roots"))
    }

    fn add_path(&self, info: &NarInfo, nar: &mut dyn Read) -> Result<(), StoreError> {
        super::check_references(self, info)?;
        let conn = Conn::connect(&self.socket, self.log)?;
        conn.add_to_store_nar(info, nar, self.dont_check_sigs)
    }

    fn finish(&self) -> Result<(), StoreError> {
        // Every AddToStoreNar was registered by the daemon when it returned.
        Ok(())
    }
}

/// Does a nix-daemon answer the handshake at `socket`?
#[cfg(test)]
pub fn probe(socket: &Path) -> Result<(), StoreError> {
    Conn::connect(socket, log_to_stderr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Closure, Daemon, NixEnv, Slow, TempDir};
    use std::cell::RefCell;
    use std::os::unix::net::UnixListener;

    thread_local! {
        static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }
    fn capture(line: &str) {
        LOG.with(|l| l.borrow_mut().push(line.to_string()));
    }

    fn s(out: &mut Vec<u8>, v: &str) {
        put_bytes(out, v.as_bytes());
    }

    #[test]
    fn stderr_stream_cases() {
        type Build = fn(&mut Vec<u8>);
        let v37 = proto(1, 37);
        // (name, protocol version, stream before LAST, result, log lines)
        type Case = (
            &'static str,
            u64,
            Build,
            Result<(), &'static str>,
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            ("last only", v37, |_| {}, Ok(()), &[]),
            (
                "log lines, ansi stripped",
                v37,
                |o| {
                    put_u64(o, STDERR_NEXT);
                    s(o, "copying \u{1b}[35;1mpath\u{1b}[0m\n");
                    put_u64(o, STDERR_NEXT);
                    s(o, "\n");
                },
                Ok(()),
                &["copying path"],
            ),
            (
                "activities and results",
                v37,
                |o| {
                    put_u64(o, STDERR_START_ACTIVITY);
                    for v in [7, 3, 100] {
                        put_u64(o, v);
                    }
                    s(o, "copying path");
                    put_u64(o, 2);
                    put_u64(o, 0);
                    put_u64(o, 42);
                    put_u64(o, 1);
                    s(o, "field");
                    put_u64(o, 0); // parent
                    put_u64(o, STDERR_RESULT);
                    put_u64(o, 7);
                    put_u64(o, 105);
                    put_u64(o, 0);
                    put_u64(o, STDERR_STOP_ACTIVITY);
                    put_u64(o, 7);
                },
                Ok(()),
                &[],
            ),
            (
                "error, new format with a trace",
                v37,
                |o| {
                    put_u64(o, STDERR_ERROR);
                    s(o, "Error");
                    put_u64(o, 0);
                    s(o, "Error");
                    s(o, "path '\u{1b}[35;1m/nix/store/x\u{1b}[0m' is not valid");
                    put_u64(o, 0);
                    put_u64(o, 1);
                    put_u64(o, 0);
                    s(o, "while adding");
                },
                Err("daemon: path '/nix/store/x' is not valid; while adding"),
                &[],
            ),
            (
                "error, old format",
                proto(1, 25),
                |o| {
                    put_u64(o, STDERR_ERROR);
                    s(o, "error: out of disk space");
                    put_u64(o, 1);
                },
                Err("daemon: out of disk space"),
                &[],
            ),
            (
                "read request",
                v37,
                |o| {
                    put_u64(o, STDERR_READ);
                    put_u64(o, 100);
                },
                Err("protocol: the daemon asked to exchange raw data, which no operation fh-lite uses does"),
                &[],
            ),
            (
                "write request",
                v37,
                |o| {
                    put_u64(o, STDERR_WRITE);
                    s(o, "data");
                },
                Err("protocol: the daemon asked to exchange raw data, which no operation fh-lite uses does"),
                &[],
            ),
            (
                "unknown tag",
                v37,
                |o| put_u64(o, 0x1234),
                Err("protocol: unknown stderr message tag 0x1234"),
                &[],
            ),
            (
                "oversized string",
                v37,
                |o| {
                    put_u64(o, STDERR_NEXT);
                    put_u64(o, MAX_STRING + 1);
                },
                Err("protocol: log line of 1048577 bytes is longer than the limit of 1048576"),
                &[],
            ),
            (
                "bad padding",
                v37,
                |o| {
                    put_u64(o, STDERR_NEXT);
                    put_u64(o, 1);
                    o.extend_from_slice(b"a\x01\0\0\0\0\0\0");
                },
                Err("protocol: log line has non-zero padding"),
                &[],
            ),
            (
                "bad field kind",
                v37,
                |o| {
                    put_u64(o, STDERR_RESULT);
                    put_u64(o, 1);
                    put_u64(o, 105);
                    put_u64(o, 1);
                    put_u64(o, 9);
                },
                Err("protocol: unknown activity field kind 9"),
                &[],
            ),
        ];
        for (name, version, build, want, logs) in cases {
            let mut bytes = Vec::new();
            build(&mut bytes);
            let is_err = want.is_err();
            if !is_err {
                put_u64(&mut bytes, STDERR_LAST);
            }
            LOG.with(|l| l.borrow_mut().clear());
            let got = process_stderr(&mut &bytes[..], *version, capture).map_err(|e| match e {
                Wire::Daemon(m) => format!("daemon: {m}"),
                Wire::Protocol(m) => format!("protocol: {m}"),
                Wire::Io(e) => format!("io: {e}"),
            });
            assert_eq!(got, want.map_err(str::to_string), "{name}");
            let got_logs = LOG.with(|l| l.borrow().clone());
            assert_eq!(got_logs, *logs, "{name}: log lines");
        }
        // A stream cut short is an I/O error, never a hang or a panic.
        let mut cut = Vec::new();
        put_u64(&mut cut, STDERR_NEXT);
        put_u64(&mut cut, 10);
        let e = process_stderr(&mut &cut[..], v37, capture).unwrap_err();
        assert!(
            matches!(e, Wire::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{e:?}"
        );
    }

    /// A scripted daemon: speaks `server` and, at ≥ 1.38, offers a feature.
    fn fake_daemon(dir: &Path, server: u64) -> (PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sock = dir.join(format!("fake-{server:x}-{n}"));
        let l = UnixListener::bind(&sock).unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 16];
            c.read_exact(&mut buf).unwrap();
            seen.extend_from_slice(&buf);
            let client = u64::from_le_bytes(buf[8..].try_into().unwrap());
            let mut o = Vec::new();
            put_u64(&mut o, WORKER_MAGIC_2);
            put_u64(&mut o, server);
            c.write_all(&o).unwrap();
            if server >> 8 != 1 || server < MIN_DAEMON_VERSION {
                return seen;
            }
            let v = server.min(client);
            if v >= proto(1, 38) {
                let n = get_u64(&mut c).unwrap();
                seen.extend_from_slice(&n.to_le_bytes());
                let mut o = Vec::new();
                put_set(&mut o, &["realisation-with-path-not-hash"]);
                c.write_all(&o).unwrap();
            }
            c.read_exact(&mut buf).unwrap();
            seen.extend_from_slice(&buf);
            let mut o = Vec::new();
            if v >= proto(1, 33) {
                s(&mut o, "2.99.0");
            }
            if v >= proto(1, 35) {
                put_u64(&mut o, 2);
            }
            put_u64(&mut o, STDERR_NEXT);
            s(&mut o, "welcome\n");
            put_u64(&mut o, STDERR_LAST);
            c.write_all(&o).unwrap();
            seen
        });
        (sock, h)
    }

    #[test]
    fn handshake_with_fake_daemons() {
        let dir = TempDir::new("fake-daemon");
        // (name, server, announced, negotiated, nix version, trusted, bytes the server saw after the hello)
        type Case = (
            &'static str,
            u64,
            u64,
            u64,
            Option<&'static str>,
            Option<bool>,
            usize,
        );
        let cases: &[Case] = &[
            (
                "nix 2.8",
                proto(1, 34),
                CLIENT_VERSION,
                proto(1, 34),
                Some("2.99.0"),
                None,
                16,
            ),
            (
                "nix 2.3 style 1.23",
                proto(1, 23),
                CLIENT_VERSION,
                proto(1, 23),
                None,
                None,
                16,
            ),
            (
                "1.38 daemon, we announce 1.37",
                proto(1, 38),
                CLIENT_VERSION,
                proto(1, 37),
                Some("2.99.0"),
                Some(false),
                16,
            ),
            (
                "1.38 daemon, we announce 1.38",
                proto(1, 38),
                proto(1, 38),
                proto(1, 38),
                Some("2.99.0"),
                Some(false),
                24,
            ),
        ];
        for (name, server, announce, negotiated, nixv, trusted, seen_len) in cases {
            let (sock, h) = fake_daemon(dir.path(), *server);
            LOG.with(|l| l.borrow_mut().clear());
            let c = Conn::connect_as(&sock, capture, *announce)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.version, *negotiated, "{name}: version");
            assert_eq!(c.daemon_version.as_deref(), *nixv, "{name}: nix version");
            assert_eq!(c.trusted, *trusted, "{name}: trusted");
            drop(c);
            let seen = h.join().unwrap();
            assert_eq!(&seen[..8], &WORKER_MAGIC_1.to_le_bytes(), "{name}: magic");
            assert_eq!(
                &seen[8..16],
                &announce.to_le_bytes(),
                "{name}: version sent"
            );
            // Feature list (when ≥ 1.38: empty), then two obsolete zeros.
            assert_eq!(seen.len() - 16, *seen_len, "{name}: rest");
            assert!(seen[16..].iter().all(|&b| b == 0), "{name}: zeros");
            assert_eq!(LOG.with(|l| l.borrow().clone()), ["welcome"], "{name}: log");
        }
        let refused: &[(&str, u64, String)] = &[
            (
                "too old",
                proto(1, 21),
                "daemon protocol 1.21 is too old: fh-lite needs 1.23 or newer (Nix 2.4+)".into(),
            ),
            (
                "major 2",
                proto(2, 0),
                "unsupported protocol major version 2 (fh-lite speaks 1.x)".into(),
            ),
        ];
        for (name, server, want) in refused {
            let (sock, h) = fake_daemon(dir.path(), *server);
            let e = Conn::connect(&sock, capture).err().unwrap();
            assert_eq!(
                e.to_string(),
                format!("nix-daemon at {}: protocol error: {want}", sock.display()),
                "{name}"
            );
            h.join().unwrap();
        }
    }

    #[test]
    fn wrong_sockets_give_clear_errors() {
        let dir = TempDir::new("wrong-socket");
        let sock = dir.path().join("http");
        let l = UnixListener::bind(&sock).unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            let mut b = [0u8; 16];
            let _ = c.read_exact(&mut b);
        });
        let e = probe(&sock).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "nix-daemon at {}: protocol error: not a nix-daemon socket: expected magic 0x6478696f, got 0x312e312f50545448",
                sock.display()
            )
        );
        h.join().unwrap();
        let missing = dir.path().join("nothing-here");
        let e = probe(&missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "nix-daemon at {}: cannot connect: No such file or directory (os error 2) (is nix-daemon running? see --daemon-socket, --store)",
                missing.display()
            )
        );
        assert_eq!(crate::error::Error::from(e).exit, crate::error::Exit::Store);
    }

    // ---- against a real nix-daemon (Debian nix-bin 2.8) ------------------

    fn setup(test: &str) -> Option<(NixEnv, Closure, Daemon)> {
        let env = NixEnv::new(test)?;
        let closure = env.source_closure();
        let daemon = Daemon::start(&env, "d");
        Some((env, closure, daemon))
    }

    #[test]
    fn real_daemon_adds_signed_closure() {
        let Some((env, c, daemon)) = setup("daemon-add") else {
            return;
        };
        let store = DaemonStore::connect_with_log(&daemon.socket, true, capture).unwrap();
        assert_eq!(store.daemon_version().as_deref(), Some("2.8.0"));
        let both = [c.dep.store_path.clone(), c.top.store_path.clone()];
        assert!(store.query_valid(&both).unwrap().is_empty());
        store.add_temp_roots(&both).unwrap();
        store.add_path(&c.dep, &mut &c.dep_nar[..]).unwrap();
        store.add_path(&c.top, &mut &c.top_nar[..]).unwrap();
        store.finish().unwrap();
        assert_eq!(
            env.verify(&daemon.store).trim(),
            "",
            "verify --check-contents"
        );
        for p in &both {
            let sigs = env.sigs(&daemon.store, p).unwrap();
            assert!(sigs.contains(&format!("{p}")), "{sigs}");
            assert!(sigs.contains("test-1:"), "signature of {p} missing: {sigs}");
        }
        // A second run finds everything valid: nothing to transfer.
        let again = DaemonStore::connect(&daemon.socket, true).unwrap();
        assert_eq!(
            again.query_valid(&both).unwrap(),
            both.iter().cloned().collect()
        );
    }

    #[test]
    fn real_daemon_rejects_bad_nars_and_keeps_nothing() {
        let Some((env, c, daemon)) = setup("daemon-bad") else {
            return;
        };
        let store = DaemonStore::connect(&daemon.socket, true).unwrap();
        let p = c.dep.store_path.clone();
        for (name, info, nar, want) in c.bad_dep_cases() {
            let e = store.add_path(&info, &mut &nar[..]).unwrap_err();
            assert!(e.to_string().starts_with(want.as_str()), "{name}: {e}");
            assert_eq!(e.exit(), crate::error::Exit::Verification, "{name}");
            assert!(
                store
                    .query_valid(std::slice::from_ref(&p))
                    .unwrap()
                    .is_empty(),
                "{name}: became valid"
            );
        }
        assert!(!env.valid(&daemon.store, &p));
        assert_eq!(env.verify(&daemon.store).trim(), "");
        // The good NAR still goes in afterwards.
        store.add_path(&c.dep, &mut &c.dep_nar[..]).unwrap();
        assert!(env.valid(&daemon.store, &p));
    }

    #[test]
    fn real_daemon_needs_references_first_and_reports_its_errors() {
        let Some((_env, c, daemon)) = setup("daemon-refs") else {
            return;
        };
        let store = DaemonStore::connect(&daemon.socket, true).unwrap();
        let e = store.add_path(&c.top, &mut &c.top_nar[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot add {}: its reference {} is not valid in the store yet (references must be added first)",
                c.top.store_path, c.dep.store_path
            )
        );
        // Unsigned, and we ask the daemon to check: its refusal is ours.
        // (Nix accepts content-addressed paths unsigned: drop the CA too.)
        let mut unsigned = c.dep.clone();
        unsigned.sigs.clear();
        unsigned.ca = None;
        let e = store.add_path(&unsigned, &mut &c.dep_nar[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "nix-daemon at {}: adding {p}: cannot add path '{p}' because it lacks a valid signature",
                daemon.socket.display(),
                p = c.dep.store_path
            )
        );
        assert_eq!(e.exit(), crate::error::Exit::Store);
        // Trusted (root) with dontCheckSigs: accepted.
        let trusting = DaemonStore::connect(&daemon.socket, false).unwrap();
        trusting.add_path(&unsigned, &mut &c.dep_nar[..]).unwrap();
    }

    #[test]
    fn real_daemon_killed_mid_transfer() {
        let Some((env, c, mut daemon)) = setup("daemon-kill") else {
            return;
        };
        let store = DaemonStore::connect(&daemon.socket, true).unwrap();
        let p = c.dep.store_path.clone();
        let result = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut slow = Slow {
                    data: &c.dep_nar,
                    chunk: 16 * 1024,
                    pause: Duration::from_millis(40),
                };
                store.add_path(&c.dep, &mut slow)
            });
            std::thread::sleep(Duration::from_millis(300));
            daemon.kill();
            h.join().unwrap()
        });
        let e = result.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "nix-daemon at {}: connection lost while adding {p}: ",
                daemon.socket.display()
            )),
            "{msg}"
        );
        assert!(!env.valid(&daemon.store, &p));
    }

    #[test]
    fn real_daemon_temp_roots_survive_gc() {
        let Some((env, c, daemon)) = setup("daemon-gc") else {
            return;
        };
        let sock = format!("unix://{}", daemon.socket.display());
        let gc = || env.run("nix-store", &["--store", &sock, "--gc"], None);
        // Control: without a temp root the collector takes a fresh path.
        {
            let store = DaemonStore::connect(&daemon.socket, true).unwrap();
            store.add_path(&c.dep, &mut &c.dep_nar[..]).unwrap();
        }
        assert!(env.valid(&daemon.store, &c.dep.store_path));
        gc();
        assert!(
            !env.valid(&daemon.store, &c.dep.store_path),
            "control: GC kept an unrooted path"
        );
        // With the closure temp-rooted, a GC while `top` uploads slowly
        // keeps `dep` (already added) and lets `top` finish.
        let store = DaemonStore::connect(&daemon.socket, true).unwrap();
        store
            .add_temp_roots(&[c.dep.store_path.clone(), c.top.store_path.clone()])
            .unwrap();
        store.add_path(&c.dep, &mut &c.dep_nar[..]).unwrap();
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut slow = Slow {
                    data: &c.top_nar,
                    chunk: 16,
                    pause: Duration::from_millis(50),
                };
                store.add_path(&c.top, &mut slow)
            });
            std::thread::sleep(Duration::from_millis(200));
            gc();
            h.join().unwrap().unwrap();
        });
        gc();
        assert!(
            env.valid(&daemon.store, &c.dep.store_path),
            "dep was collected"
        );
        assert!(
            env.valid(&daemon.store, &c.top.store_path),
            "top was collected"
        );
        assert_eq!(env.verify(&daemon.store).trim(), "");
        drop(store);
    }

    #[test]
    fn real_daemon_indirect_root() {
        let Some((env, c, daemon)) = setup("daemon-indirect") else {
            return;
        };
        let store = DaemonStore::connect(&daemon.socket, true).unwrap();
        store.add_path(&c.dep, &mut &c.dep_nar[..]).unwrap();
        let link = env.path().join("result");
        std::os::unix::fs::symlink(c.dep.store_path.to_string(), &link).unwrap();
        store.add_indirect_root(&link).unwrap();
        drop(store);
        let sock = format!("unix://{}", daemon.socket.display());
        env.run("nix-store", &["--store", &sock, "--gc"], None);
        assert!(
            env.valid(&daemon.store, &c.dep.store_path),
            "indirect root did not hold"
        );
        let auto = daemon.store.join("nix/var/nix/gcroots/auto");
        let n = std::fs::read_dir(&auto).unwrap().count();
        assert_eq!(n, 1, "{}", auto.display());
    }
}
