//! The one HTTP agent: TLS roots, timeouts, retries, per-host credentials.
//!
//! Every request fh-lite makes goes through [`Client`]: one `ureq::Agent`
//! over rustls (ring), HTTP/1.1, blocking.
//!
//! - **Roots**: Mozilla's (webpki-roots) built in, because devices often
//!   have no CA bundle. `--ca-file FILE` and `SSL_CERT_FILE` name PEM files
//!   whose certificates *replace* the built-in roots (a private FlakeHub
//!   stand-in or a TLS-intercepting proxy).
//! - **Schemes**: `https://` only; `http://` is refused unless
//!   `--allow-insecure-http`, also as a redirect target.
//! - **Timeouts**: connect 15 s, each read 30 s; a small body (a narinfo,
//!   an API answer) must be whole within [`small_body_deadline`] (2 min);
//!   a NAR on a slow link may take long, but it must keep moving (fetch/mod.rs
//!   watches its throughput).
//! - **Proxies**: `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` (and lower-case)
//!   with `NO_PROXY`, read by ureq's default configuration.
//! - **Retries**: idempotent GETs are retried on connection errors,
//!   timeouts, 429 and 5xx, with exponential backoff and jitter (base
//!   500 ms, at most 8 s), `Retry-After: SECONDS` honoured up to 30 s, at
//!   most [`RetryPolicy::max_retries`] times and within a total budget. Each
//!   retry is one stderr line naming the URL and the reason (not with
//!   `--quiet`).
//! - **Credentials** ([`Auth`]) belong to one host: redirects are followed
//!   here (at most 10), not by ureq, and the `Authorization` header is
//!   dropped for good as soon as a redirect leaves the original
//!   scheme/host/port. Secrets are [`Secret`]s: their `Debug` and `Display`
//!   print `<redacted>`, and no error or log line contains one.
//! - **Limits**: bodies read into memory have an explicit size limit
//!   ([`JSON_LIMIT`], [`NARINFO_LIMIT`]); only [`Client::get_stream`] is
//!   unbounded, for NARs, whose reader checks sizes itself.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Exit;
use crate::url::{host_of, join_location, Origin};

/// Largest FlakeHub API answer read (1 MiB).
pub const JSON_LIMIT: u64 = 1 << 20;
/// Largest narinfo read (64 KiB; real ones are under 2 KiB).
pub const NARINFO_LIMIT: u64 = 64 << 10;
/// Redirects followed per request.
pub const MAX_REDIRECTS: u32 = 10;
/// How much of an error response's body is kept for the message.
const ERROR_BODY_LIMIT: u64 = 4 << 10;
/// How much of it is shown.
const ERROR_BODY_SHOWN: usize = 300;

/// A credential: Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The credential for one request; it is sent only to the request's own
/// scheme/host/port.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    /// `Authorization: Bearer <token>` (the FlakeHub API).
    Bearer(&'a Secret),
    /// `Authorization: Basic base64("flakehub:<token>")` (the binary cache,
    /// as Nix sends a netrc entry `login flakehub password <token>`).
    Basic(&'a Secret),
    /// `Authorization: Basic base64("<login>:<password>")`: the secret
    /// holds `login:password` (a netrc entry for another cache, source/cache.rs).
    Login(&'a Secret),
}

/// When and how often to retry. The defaults are for devices on flaky
/// links: 4 retries, about 7.5 s of backoff in all.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// The first backoff; it doubles per retry (with jitter: 50–100 %).
    pub base: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` obeyed; a longer one is cut to this.
    pub retry_after_cap: Duration,
    /// No retry starts after this much time since the first attempt.
    pub total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(30),
            total: Duration::from_secs(90),
        }
    }
}

/// Errors of the HTTP layer; every variant names the URL.
#[derive(Debug)]
pub enum HttpError {
    /// An `http://` address (or redirect target) without `--allow-insecure-http`.
    Insecure {
        url: String,
    },
    /// Not an `https://`/`http://` URL with a host.
    BadUrl {
        url: String,
        detail: String,
    },
    /// `--ca-file`/`SSL_CERT_FILE` could not be read or holds no certificate.
    CaFile {
        path: PathBuf,
        detail: String,
    },
    /// The credential cannot be sent as a header (control characters).
    BadCredential {
        url: String,
    },
    /// The TLS handshake failed (unknown issuer, wrong name, protocol).
    Tls {
        url: String,
        host: String,
        detail: String,
    },
    /// DNS, connect, reset before a response.
    Connect {
        url: String,
        host: String,
        detail: String,
    },
    Timeout {
        url: String,
        detail: String,
    },
    /// A body that came too slowly (a small answer past its deadline, a
    /// NAR under the minimum throughput); not retried.
    TooSlow {
        url: String,
        detail: String,
    },
    /// The final answer was not 2xx (after retries for 429/5xx).
    Status {
        url: String,
        status: u16,
        attempts: u32,
        /// `Retry-After: SECONDS`, when the server sent one.
        retry_after: Option<Duration>,
        /// The start of the body, printable ASCII only.
        body: String,
    },
    /// The body is larger than the limit for its kind.
    TooLarge {
        url: String,
        limit: u64,
    },
    /// The body could not be read completely.
    Body {
        url: String,
        detail: String,
    },
    /// Too many redirects, or one without a usable `Location`.
    Redirect {
        url: String,
        detail: String,
    },
    /// The server spoke something that is not HTTP/1.1.
    Protocol {
        url: String,
        detail: String,
    },
}

impl HttpError {
    /// The URL this error is about.
    pub fn url(&self) -> &str {
        match self {
            HttpError::CaFile { .. } => "",
            HttpError::Insecure { url }
            | HttpError::BadUrl { url, .. }
            | HttpError::BadCredential { url }
            | HttpError::Tls { url, .. }
            | HttpError::Connect { url, .. }
            | HttpError::Timeout { url, .. }
            | HttpError::TooSlow { url, .. }
            | HttpError::Status { url, .. }
            | HttpError::TooLarge { url, .. }
            | HttpError::Body { url, .. }
            | HttpError::Redirect { url, .. }
            | HttpError::Protocol { url, .. } => url,
        }
    }

    /// The HTTP status, when the server answered with a final non-2xx one.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Worth another attempt: the network or the server may recover.
    fn retryable(&self) -> bool {
        match self {
            HttpError::Connect { .. }
            | HttpError::Timeout { .. }
            | HttpError::Protocol { .. }
            | HttpError::Body { .. } => true,
            HttpError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The exit class when no layer above knows better.
    pub fn exit(&self) -> Exit {
        match self {
            HttpError::Insecure { .. } | HttpError::BadUrl { .. } | HttpError::CaFile { .. } => {
                Exit::Usage
            }
            HttpError::BadCredential { .. } => Exit::Unauthorized,
            HttpError::Tls { .. }
            | HttpError::Connect { .. }
            | HttpError::Timeout { .. }
            | HttpError::TooSlow { .. }
            | HttpError::Body { .. } => Exit::Network,
            HttpError::Status { status, .. } => match status {
                401 => Exit::Unauthorized,
                403 => Exit::Forbidden,
                404 => Exit::NotFound,
                429 | 500..=599 => Exit::Unavailable,
                _ => Exit::BadResponse,
            },
            HttpError::TooLarge { .. }
            | HttpError::Redirect { .. }
            | HttpError::Protocol { .. } => Exit::BadResponse,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Insecure { url } => write!(
                f,
                "refusing insecure address {url}: http:// sends requests and credentials in clear text; \
use https://, or pass --allow-insecure-http (tests and labs only)"
            ),
            HttpError::BadUrl { url, detail } => write!(f, "bad URL {url}: {detail}"),
            HttpError::CaFile { path, detail } => write!(
                f,
                "CA certificates {}: {detail} (--ca-file and SSL_CERT_FILE take a PEM file)",
                path.display()
            ),
            HttpError::BadCredential { url } => write!(
                f,
                "GET {url}: the token contains characters that cannot be sent in an HTTP header; \
check the token file"
            ),
            HttpError::Tls { url, host, detail } => write!(
                f,
                "TLS connection to {host} failed: {detail} (GET {url}); if {host} uses a private CA, \
pass its certificate with --ca-file FILE (or SSL_CERT_FILE)"
            ),
            HttpError::Connect { url, host, detail } => write!(
                f,
                "cannot connect to {host}: {detail} (GET {url}); check the address and the network"
            ),
            HttpError::Timeout { url, detail } => {
                write!(f, "GET {url}: timed out ({detail}); check the network")
            }
            HttpError::Status {
                url,
                status,
                attempts,
                body,
                ..
            } => {
                write!(f, "GET {url}: http status {status}")?;
                if *attempts > 1 {
                    write!(f, " after {attempts} attempts")?;
                }
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
            HttpError::TooLarge { url, limit } => write!(
                f,
                "GET {url}: response larger than {limit} bytes, refused (is this the right server?)"
            ),
            HttpError::Body { url, detail } => {
                write!(f, "GET {url}: reading the response failed: {detail}")
            }
            HttpError::TooSlow { url, detail } => write!(f, "GET {url}: {detail}"),
            HttpError::Redirect { url, detail } => write!(f, "GET {url}: {detail}"),
            HttpError::Protocol { url, detail } => {
                write!(f, "GET {url}: malformed HTTP response: {detail}")
            }
        }
    }
}

impl From<HttpError> for crate::error::Error {
    fn from(e: HttpError) -> Self {
        crate::error::Error::new(e.exit(), e.to_string())
    }
}

/// The answer to a GET with a `Range` header ([`Client::get_stream_from`]).
pub struct RangeAnswer {
    /// 206 (partial), or 200 when the server ignored the range.
    pub status: u16,
    pub content_range: Option<String>,
    pub body: Box<dyn Read + Send>,
}

/// What the command line sets of the HTTP client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `--ca-file`: trusted besides `SSL_CERT_FILE` (else the built-in
    /// roots).
    pub ca_file: Option<PathBuf>,
    /// `--allow-insecure-http`.
    pub allow_insecure_http: bool,
    /// `--verbose` without `--quiet`: one line per request.
    pub verbose: bool,
}

/// The one HTTP client (see the module doc).
pub struct Client {
    agent: ureq::Agent,
    allow_insecure_http: bool,
    /// `--verbose`: one line per request (URL and status; never credentials).
    verbose: bool,
    retry: RetryPolicy,
    /// A `--mirror`'s client: not under `--limit-rate-uplink` (rate.rs).
    mirror: bool,
}

impl Client {
    /// The client with `settings`; `SSL_CERT_FILE` is read here.
    pub fn new(settings: &Settings) -> Result<Client, HttpError> {
        let env_ca = std::env::var_os("SSL_CERT_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let ca_files: Vec<&Path> = settings
            .ca_file
            .as_deref()
            .into_iter()
            .chain(env_ca.as_deref())
            .collect();
        let mut client = Client::build(
            &ca_files,
            settings.allow_insecure_http,
            RetryPolicy::default(),
        )?;
        client.verbose = settings.verbose;
        Ok(client)
    }

    /// The client of a `--mirror` (cache/mirror.rs): `http://` allowed
    /// (what a mirror serves is verified), only the `--limit-rate` cap (not
    /// `--limit-rate-uplink`), and one retry in at most 20 s, so that a
    /// mirror that went away costs little before the next source is asked.
    pub fn for_mirror(settings: &Settings) -> Result<Client, HttpError> {
        let mut client = Client::new(settings)?;
        client.allow_insecure_http = true;
        client.mirror = true;
        client.retry = RetryPolicy {
            max_retries: 1,
            total: Duration::from_secs(20),
            ..RetryPolicy::default()
        };
        Ok(client)
    }

    pub fn build(
        ca_files: &[&Path],
        allow_insecure_http: bool,
        retry: RetryPolicy,
    ) -> Result<Client, HttpError> {
        use ureq::tls::{RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if !ca_files.is_empty() {
            let mut certs = Vec::new();
            for path in ca_files {
                certs.extend(read_pem_certs(path)?);
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .https_only(false) // checked per URL, with a better message
            .http_status_as_error(false)
            .max_redirects(0) // followed here, for per-host credentials
            .user_agent(concat!("fh-lite/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // Keep a connection per concurrent request (plan.rs walks up to
            // 32 narinfos at once): a new one costs a round trip or three.
            .max_idle_connections(32)
            .max_idle_connections_per_host(32)
            // Each connection keeps its buffers, touched: ureq's 128 KiB
            // each way cost 8 MiB of RSS over 32 connections. 32 KiB reads
            // are as fast as 128 KiB for a big NAR (scripts/bench); a
            // request (URL, bearer token) fits in 8 KiB.
            .input_buffer_size(32 << 10)
            .output_buffer_size(8 << 10)
            .build();
        Ok(Client {
            agent: config.into(),
            allow_insecure_http,
            verbose: false,
            retry,
            mirror: false,
        })
    }

    /// GET a FlakeHub API answer: `Accept: application/json`, at most
    /// [`JSON_LIMIT`] bytes.
    pub fn get_json(&self, url: &str, auth: Auth<'_>) -> Result<Vec<u8>, HttpError> {
        self.get_bytes(url, auth, Some("application/json"), JSON_LIMIT)
    }

    /// GET a small body (narinfo: [`NARINFO_LIMIT`]) into memory; a non-2xx
    /// final answer is [`HttpError::Status`].
    pub fn get_bytes(
        &self,
        url: &str,
        auth: Auth<'_>,
        accept: Option<&str>,
        limit: u64,
    ) -> Result<Vec<u8>, HttpError> {
        self.with_retries(url, |attempts| {
            let (final_url, resp) = self.send(url, auth, accept)?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(status_error(final_url, resp, attempts));
            }
            let mut body = resp.into_body();
            let deadline = small_body_deadline();
            let mut reader = crate::rate::Limited::new(
                body.with_config().limit(limit).reader(),
                crate::rate::buckets(self.mirror),
            );
            let until = Instant::now() + deadline;
            let mut out = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                if Instant::now() > until {
                    return Err(HttpError::TooSlow {
                        url: final_url,
                        detail: format!(
                            "the answer was not complete after {} s (a small answer must arrive whole within that)",
                            deadline.as_secs_f64()
                        ),
                    });
                }
                match reader.read(&mut buf) {
                    Ok(0) => return Ok(out),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(body_io_error(&final_url, e, limit)),
                }
            }
        })
    }

    /// GET a body to stream, unbounded (NARs). Only the response head is
    /// retried; a failure while reading the body is the caller's.
    /// The body is unlimited here: its consumer checks sizes (FileSize,
    /// NarSize). Read errors are `io::Error`s without the URL.
    pub fn get_stream(&self, url: &str, auth: Auth<'_>) -> Result<Box<dyn Read + Send>, HttpError> {
        self.with_retries(url, |attempts| {
            let (final_url, resp) = self.send(url, auth, None)?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(status_error(final_url, resp, attempts));
            }
            let body: Box<dyn Read + Send> = Box::new(crate::rate::Limited::new(
                resp.into_body().into_reader(),
                crate::rate::buckets(self.mirror),
            ));
            Ok(body)
        })
    }

    /// GET a body to stream from byte `offset` on (`Range: bytes=<offset>-`),
    /// like [`Client::get_stream`], keeping the status and `Content-Range`:
    /// a server may answer `206` or ignore the range (`200`); the caller
    /// (fetch/resume.rs) decides.
    pub fn get_stream_from(
        &self,
        url: &str,
        auth: Auth<'_>,
        offset: u64,
    ) -> Result<RangeAnswer, HttpError> {
        self.with_retries(url, |attempts| {
            let (final_url, resp) = self.send_with(url, auth, None, Some(offset))?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(status_error(final_url, resp, attempts));
            }
            let content_range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            Ok(RangeAnswer {
                status,
                content_range,
                body: Box::new(crate::rate::Limited::new(
                    resp.into_body().into_reader(),
                    crate::rate::buckets(self.mirror),
                )),
            })
        })
    }

    /// Run `attempt` until it succeeds, fails for good, or the retry
    /// policy is spent. `attempt` gets the 1-based attempt number.
    fn with_retries<T>(
        &self,
        url: &str,
        mut attempt: impl FnMut(u32) -> Result<T, HttpError>,
    ) -> Result<T, HttpError> {
        let start = Instant::now();
        let mut n = 1;
        loop {
            let err = match attempt(n) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let retry_after = match &err {
                HttpError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            if !err.retryable() || n > self.retry.max_retries {
                return Err(err);
            }
            let delay = match retry_after {
                Some(d) => d.min(self.retry.retry_after_cap),
                None => backoff(&self.retry, n, jitter()),
            };
            if start.elapsed() + delay > self.retry.total {
                return Err(err);
            }
            crate::ui::say(&format!(
                "GET {url}: {}; retry {n} of {} in {:.1}s",
                reason(&err),
                self.retry.max_retries,
                delay.as_secs_f64()
            ));
            std::thread::sleep(delay);
            n += 1;
        }
    }

    /// One GET, following redirects; credentials stay with their host.
    fn send(
        &self,
        url: &str,
        auth: Auth<'_>,
        accept: Option<&str>,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), HttpError> {
        self.send_with(url, auth, accept, None)
    }

    /// [`Client::send`], with `Range: bytes=<from>-` when `from` is given.
    fn send_with(
        &self,
        url: &str,
        auth: Auth<'_>,
        accept: Option<&str>,
        from: Option<u64>,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), HttpError> {
        let mut current = url.to_string();
        let mut auth = auth;
        let mut origin = self.origin(&current)?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&current);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(v) = auth_header(&current, auth)? {
                req = req.header("Authorization", v);
            }
            if let Some(from) = from {
                req = req.header("Range", format!("bytes={from}-"));
            }
            let resp = req.call().map_err(|e| classify(&current, &origin, e))?;
            let status = resp.status().as_u16();
            if self.verbose {
                crate::ui::say(&format!("GET {current}: http status {status}"));
            }
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok((current, resp));
            }
            let Some(location) = resp.headers().get("location").and_then(|v| v.to_str().ok())
            else {
                return Err(HttpError::Redirect {
                    url: current,
                    detail: format!("redirect (http status {status}) without a Location header"),
                });
            };
            let next = join_location(&current, location).map_err(|detail| HttpError::Redirect {
                url: current.clone(),
                detail,
            })?;
            let next_origin = self.origin(&next)?;
            if next_origin != origin {
                // Never forward credentials to another host, and never
                // restore them: the chain has left the host they belong to.
                auth = Auth::None;
            }
            current = next;
            origin = next_origin;
        }
        Err(HttpError::Redirect {
            url: url.to_string(),
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// `(scheme, host, port)` of `url`, refusing what cannot be fetched.
    fn origin(&self, url: &str) -> Result<Origin, HttpError> {
        let o = crate::url::origin(url).map_err(|detail| HttpError::BadUrl {
            url: url.to_string(),
            detail,
        })?;
        if o.scheme == "http" && !self.allow_insecure_http {
            return Err(HttpError::Insecure {
                url: url.to_string(),
            });
        }
        Ok(o)
    }
}

fn auth_header(url: &str, auth: Auth<'_>) -> Result<Option<ureq::http::HeaderValue>, HttpError> {
    use base64::Engine;
    let value = match auth {
        Auth::None => return Ok(None),
        Auth::Bearer(s) => format!("Bearer {}", s.expose()),
        Auth::Basic(s) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("flakehub:{}", s.expose()))
        ),
        Auth::Login(s) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s.expose())
        ),
    };
    let mut v =
        ureq::http::HeaderValue::from_str(&value).map_err(|_| HttpError::BadCredential {
            url: url.to_string(),
        })?;
    v.set_sensitive(true);
    Ok(Some(v))
}

/// A non-2xx final answer: keep the start of its body for the message.
fn status_error(url: String, resp: ureq::http::Response<ureq::Body>, attempts: u32) -> HttpError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut raw = Vec::new();
    let _ = resp
        .into_body()
        .into_with_config()
        .limit(ERROR_BODY_LIMIT)
        .reader()
        .take(ERROR_BODY_LIMIT)
        .read_to_end(&mut raw);
    HttpError::Status {
        url,
        status,
        attempts,
        retry_after,
        body: printable(&raw),
    }
}

/// The body as one line of printable ASCII, shortened.
fn printable(raw: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > ERROR_BODY_SHOWN {
        // ASCII only, so any index is a char boundary.
        format!("{}…", &s[..ERROR_BODY_SHOWN])
    } else {
        s
    }
}

/// `Retry-After: <seconds>`. The HTTP-date form is not used by the servers
/// fh-lite talks to; it falls back to the normal backoff.
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Backoff before retry `n` (1-based): `base * 2^(n-1)`, capped, scaled
/// by `jitter` in [0.5, 1].
fn backoff(p: &RetryPolicy, n: u32, jitter: f64) -> Duration {
    let exp = p
        .base
        .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
        .min(p.max_backoff);
    exp.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A factor in [0.5, 1] from the system's random source.
fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    // A failing system RNG only removes the jitter.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 1.0;
    }
    0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0
}

/// How long a small body (narinfo, API answer) may take in all. Debug
/// builds (the tests) read `FH_LITE_TEST_SMALL_BODY_MS`; release builds
/// have no such knob.
pub fn small_body_deadline() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("FH_LITE_TEST_SMALL_BODY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    Duration::from_secs(120)
}

/// A read error of a small body: ureq's, carried in an `io::Error`.
fn body_io_error(url: &str, e: std::io::Error, limit: u64) -> HttpError {
    let detail = e.to_string();
    match e.into_inner().map(|i| i.downcast::<ureq::Error>()) {
        Some(Ok(ue)) => body_error(url, *ue, limit),
        _ => HttpError::Body {
            url: url.to_string(),
            detail,
        },
    }
}

/// The short reason in a retry line.
fn reason(e: &HttpError) -> String {
    match e {
        HttpError::Status { status, .. } => format!("http status {status}"),
        HttpError::Connect { detail, .. }
        | HttpError::Timeout { detail, .. }
        | HttpError::Body { detail, .. }
        | HttpError::Protocol { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

fn body_error(url: &str, e: ureq::Error, limit: u64) -> HttpError {
    match e {
        ureq::Error::BodyExceedsLimit(_) => HttpError::TooLarge {
            url: url.to_string(),
            limit,
        },
        ureq::Error::Timeout(t) => HttpError::Timeout {
            url: url.to_string(),
            detail: t.to_string(),
        },
        other => HttpError::Body {
            url: url.to_string(),
            detail: other.to_string(),
        },
    }
}

/// Map ureq's error for a request to `url` to ours.
fn classify(url: &str, origin: &Origin, e: ureq::Error) -> HttpError {
    let (url, host) = (url.to_string(), host_of(url));
    let tls = |detail: String| HttpError::Tls {
        url: url.clone(),
        host: host.clone(),
        detail,
    };
    let connect = |detail: String| HttpError::Connect {
        url: url.clone(),
        host: host.clone(),
        detail,
    };
    let bad_url = |detail: String| HttpError::BadUrl {
        url: url.clone(),
        detail,
    };
    match e {
        ureq::Error::Tls(d) => tls(d.to_string()),
        ureq::Error::Rustls(d) => tls(d.to_string()),
        ureq::Error::Pem(d) => tls(d.to_string()),
        // rustls reports handshake failures through the stream as
        // InvalidData; nothing else on an https connection before the
        // response head does.
        ureq::Error::Io(io)
            if origin.scheme == "https" && io.kind() == std::io::ErrorKind::InvalidData =>
        {
            tls(io.to_string())
        }
        ureq::Error::Io(io) => connect(io.to_string()),
        ureq::Error::HostNotFound => connect("host not found".into()),
        ureq::Error::ConnectionFailed => connect("connection failed".into()),
        ureq::Error::BadUri(d) => bad_url(d),
        ureq::Error::InvalidProxyUrl => {
            bad_url("invalid proxy address in ALL_PROXY/HTTPS_PROXY/HTTP_PROXY".into())
        }
        ureq::Error::Timeout(t) => HttpError::Timeout {
            detail: t.to_string(),
            url,
        },
        ureq::Error::Protocol(p) => HttpError::Protocol {
            detail: p.to_string(),
            url,
        },
        other => HttpError::Body {
            detail: other.to_string(),
            url,
        },
    }
}

/// Every certificate in the PEM file at `path`.
fn read_pem_certs(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, HttpError> {
    use ureq::tls::{parse_pem, PemItem};
    let err = |detail: String| HttpError::CaFile {
        path: path.to_path_buf(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    // A CA bundle is a few hundred KiB; refuse anything absurd.
    if meta.len() > 16 << 20 {
        return Err(err("larger than 16 MiB".to_string()));
    }
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| err(e.to_string()))? {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(err("no PEM certificate found".to_string()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(insecure: bool) -> Client {
        Client::build(&[], insecure, RetryPolicy::default()).unwrap()
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Auth::Bearer(&s)), "Bearer(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_refused() {
        let c = client(false);
        let cases: &[(&str, &str, &str)] = &[
            (
                "http",
                "http://127.0.0.1:1/f",
                "refusing insecure address http://127.0.0.1:1/f: http:// sends requests and credentials in clear text; use https://, or pass --allow-insecure-http (tests and labs only)",
            ),
            (
                "ftp",
                "ftp://h/x",
                "bad URL ftp://h/x: expected an https:// address",
            ),
            (
                "no scheme",
                "/just/a/path",
                "bad URL /just/a/path: expected an https:// address",
            ),
        ];
        for (name, url, want) in cases {
            let e = c.get_json(url, Auth::None).unwrap_err();
            assert_eq!(e.to_string(), *want, "{name}");
            assert_eq!(e.exit(), Exit::Usage, "{name}");
        }
        assert!(client(true).origin("http://h/x").is_ok());
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let p = RetryPolicy::default();
        let ms = |n, j| backoff(&p, n, j).as_millis();
        assert_eq!(ms(1, 1.0), 500);
        assert_eq!(ms(2, 1.0), 1000);
        assert_eq!(ms(3, 1.0), 2000);
        assert_eq!(ms(3, 0.5), 1000);
        assert_eq!(ms(3, 0.1), 1000); // clamped
        assert_eq!(ms(10, 1.0), 8000);
        assert_eq!(ms(40, 1.0), 8000);
        for _ in 0..100 {
            let j = jitter();
            assert!((0.5..=1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn auth_headers() {
        let s = Secret::new("TOKEN");
        let b = auth_header("u", Auth::Basic(&s)).unwrap().unwrap();
        assert_eq!(b.to_str().unwrap(), "Basic Zmxha2VodWI6VE9LRU4=");
        assert!(b.is_sensitive());
        let b = auth_header("u", Auth::Bearer(&s)).unwrap().unwrap();
        assert_eq!(b.to_str().unwrap(), "Bearer TOKEN");
        assert!(auth_header("u", Auth::None).unwrap().is_none());
        let bad = Secret::new("a\nb");
        let e = auth_header("https://h/x", Auth::Bearer(&bad)).unwrap_err();
        assert!(!e.to_string().contains("a\nb"));
        assert_eq!(e.exit(), Exit::Unauthorized);
    }

    #[test]
    fn status_messages_and_classes() {
        let cases: &[(u16, u32, &str, &str, Exit)] = &[
            (
                503,
                5,
                "",
                "GET https://h/x: http status 503 after 5 attempts",
                Exit::Unavailable,
            ),
            (
                429,
                1,
                "slow down",
                "GET https://h/x: http status 429: slow down",
                Exit::Unavailable,
            ),
            (
                401,
                1,
                "",
                "GET https://h/x: http status 401",
                Exit::Unauthorized,
            ),
            (
                403,
                1,
                "",
                "GET https://h/x: http status 403",
                Exit::Forbidden,
            ),
            (
                404,
                1,
                "",
                "GET https://h/x: http status 404",
                Exit::NotFound,
            ),
            (
                418,
                1,
                "",
                "GET https://h/x: http status 418",
                Exit::BadResponse,
            ),
        ];
        for (status, attempts, body, want, exit) in cases {
            let e = HttpError::Status {
                url: "https://h/x".to_string(),
                status: *status,
                attempts: *attempts,
                retry_after: None,
                body: body.to_string(),
            };
            assert_eq!(e.to_string(), *want);
            assert_eq!(e.exit(), *exit, "{status}");
        }
    }

    #[test]
    fn printable_bodies() {
        assert_eq!(printable(b"a\n\tb\x1b[31m  c"), "a b [31m c");
        assert_eq!(
            printable(&[b'x'; 400]).len(),
            ERROR_BODY_SHOWN + '…'.len_utf8()
        );
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("fh-lite-http-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Client::build(&[&empty], false, RetryPolicy::default())
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "CA certificates {}: no PEM certificate found (--ca-file and SSL_CERT_FILE take a PEM file)",
                empty.display()
            )
        );
        let missing = dir.join("missing.pem");
        let e = Client::build(&[&missing], false, RetryPolicy::default())
            .err()
            .unwrap();
        assert!(e
            .to_string()
            .starts_with(&format!("CA certificates {}: ", missing.display())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
