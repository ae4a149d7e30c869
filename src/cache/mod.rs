//! The binary-cache client: `{base}/<hash>.narinfo`, and NARs at the
//! narinfo's `URL:` resolved against the base (docs/formats.md, "Binary caches").
//!
//! [`fetch_narinfo`] is the one way a narinfo enters fh-lite: parsed
//! strictly for the hash part asked for, its signature checked against the
//! trusted keys before anything looks at it. [`FetchError`] is the error of
//! the whole transfer: the cache's, and that of plan and fetch built on it.

pub mod file;

use std::fmt;
use std::io::Read;

use crate::error::{Error, Exit};
use crate::http::RangeAnswer;
use crate::nix::narinfo::signature::{SigError, TrustedKeys};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StorePath;
use crate::store::StoreError;
use crate::util::size;

/// What plan and fetch need from the binary cache.
pub trait CacheClient: Sync {
    /// The cache base URL, without a trailing slash.
    fn base_url(&self) -> &str;
    /// `GET {base}/{hash_part}.narinfo`, bounded in size. `Ok(None)` when
    /// the cache answers 404 or 403 (docs/formats.md, "Binary caches").
    fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError>;
    /// Streaming `GET` of an absolute NAR URL (see [`CacheClient::nar_url`]).
    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError>;
    /// [`CacheClient::get_nar`] from byte `offset` on (`Range:
    /// bytes=<offset>-`, the same credentials), to resume a body that broke
    /// off (fetch/resume.rs). The default answers like a server that ignores
    /// Range (status 200, no request made): the path starts over.
    fn get_nar_from(&self, _url: &str, _offset: u64) -> Result<RangeAnswer, FetchError> {
        Ok(RangeAnswer {
            status: 200,
            content_range: None,
            body: Box::new(std::io::empty()),
        })
    }
    fn narinfo_url(&self, hash_part: &str) -> String {
        format!("{}/{hash_part}.narinfo", self.base_url())
    }
    /// The absolute URL of a NAR, from its narinfo's `URL:` field.
    fn nar_url(&self, info: &NarInfo) -> String {
        crate::url::nar_url(self.base_url(), &info.url)
    }
}

/// The binary cache over HTTP (http.rs): the closure token goes as Basic
/// auth `flakehub:<token>`, only to the cache's own origin (scheme, host
/// and port of `base`). A narinfo `URL:` that is absolute on another host
/// (a pre-signed object-store link, say) is not covered by the signature,
/// and such links refuse a second credential anyway: it is fetched with
/// none. http.rs drops the credential on a redirect to another origin.
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
        let url = self.narinfo_url(hash_part);
        let auth = crate::http::Auth::Basic(self.token);
        get_narinfo_at(self.client, url, auth)
    }

    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        let auth = self.nar_auth(url);
        self.client.get_stream(url, auth).map_err(status_error)
    }

    fn get_nar_from(&self, url: &str, offset: u64) -> Result<RangeAnswer, FetchError> {
        let auth = self.nar_auth(url);
        self.client
            .get_stream_from(url, auth, offset)
            .map_err(status_error)
    }
}

impl HttpCache<'_> {
    /// The credential for a NAR at `url`: the closure token on the cache's
    /// own origin, nothing elsewhere.
    fn nar_auth(&self, url: &str) -> crate::http::Auth<'_> {
        if crate::url::same_origin(&self.base, url) {
            crate::http::Auth::Basic(self.token)
        } else {
            crate::http::Auth::None
        }
    }
}

/// `GET` the narinfo at `url` (bounded in size) with `auth`; `Ok(None)`
/// when the cache answers 404 or 403, which both mean "not in this cache"
/// (formats.md "Binary caches"). Every HTTP binary cache client reads narinfos this way.
pub fn get_narinfo_at(
    client: &crate::http::Client,
    url: String,
    auth: crate::http::Auth<'_>,
) -> Result<Option<String>, FetchError> {
    let limit = crate::http::NARINFO_LIMIT;
    match client.get_bytes(&url, auth, Some("text/x-nix-narinfo"), limit) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| FetchError::NotText { url }),
        Err(e) if matches!(e.status(), Some(404 | 403)) => Ok(None),
        Err(e) => Err(status_error(e)),
    }
}

/// A final HTTP status from the cache is a cache error naming the URL;
/// anything else stays the transport's error (network, TLS, …).
pub fn status_error(e: crate::http::HttpError) -> FetchError {
    match e.status() {
        Some(status) => FetchError::Http {
            url: e.url().to_string(),
            status,
        },
        None => FetchError::Transport(e),
    }
}

/// Errors of the plan and fetch steps. Every variant names the URL (or the
/// directory) and, where known, the store path.
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
    /// The narinfo did not parse (or was for another store path); `detail`
    /// starts with "narinfo: ".
    NarInfoMalformed {
        path: StorePath,
        url: String,
        detail: String,
    },
    /// No signature on the narinfo verified with a trusted key (the
    /// signature error names the store path).
    Untrusted { url: String, err: SigError },
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
    /// No FileSize in the narinfo, and the compressed body went on past
    /// what a NAR of its NarSize can take (fetch/mod.rs `body_bound`).
    CompressedTooLong {
        path: StorePath,
        url: String,
        limit: u64,
        nar_size: u64,
    },
    /// The compressed stream asks for a larger xz dictionary / zstd window
    /// than `--max-decoder-memory` allows (`asked`: when its header said).
    DecoderMemory {
        path: StorePath,
        url: String,
        codec: String,
        asked: Option<u64>,
        cap: u64,
    },
    /// The decompressor rejected the body.
    Decompress {
        path: StorePath,
        url: String,
        codec: String,
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

/// Where a fetch error happened, in the words of its source: `GET <url>`
/// for a cache, `entry <name> of bundle <file>` for a bundle (whose
/// "base URL" is its description, `bundle <file>` or `bundle on standard
/// input`).
fn get(url: &str) -> String {
    match bundle_entry(url) {
        Some((bundle, entry)) => format!("entry {entry} of {bundle}"),
        None => format!("GET {url}"),
    }
}

/// As [`get`], without the verb for a cache URL.
fn at(url: &str) -> String {
    match bundle_entry(url) {
        Some((bundle, entry)) => format!("entry {entry} of {bundle}"),
        None => url.to_string(),
    }
}

/// (bundle, entry) when `url` names an entry of a bundle.
fn bundle_entry(url: &str) -> Option<(&str, &str)> {
    if !url.starts_with("bundle ") {
        return None;
    }
    let cut = url.rfind("/nar/").or_else(|| url.rfind('/'))?;
    Some((&url[..cut], &url[cut + 1..]))
}

/// Who holds the corrupt copy: the cache, or the bundle's entry.
fn copy_of(url: &str) -> String {
    match bundle_entry(url) {
        Some((bundle, entry)) => format!("{bundle}'s entry {entry}"),
        None => "the cache's copy".to_string(),
    }
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
                "{}: http status 401: the cache refused the closure token \
                 (it is valid for about an hour; run the apply again to get a fresh one)",
                get(url)
            ),
            FetchError::Http { url, status: 403 } => write!(
                f,
                "{}: http status 403: the closure token does not cover this path",
                get(url)
            ),
            FetchError::Http { url, status } => write!(f, "{}: http status {status}", get(url)),
            FetchError::Transport(e) => write!(f, "{e}"),
            FetchError::NotText { url } => write!(f, "{}: narinfo is not UTF-8 text", get(url)),
            FetchError::NarInfoMalformed { path, url, detail } => write!(
                f,
                "{}: {detail}; the cache sent a malformed narinfo for {path}",
                get(url)
            ),
            FetchError::Untrusted { url, err } => {
                write!(f, "refusing the narinfo at {url}: {err}")
            }
            FetchError::Cycle { path } => write!(
                f,
                "references of {path} form a cycle, which no Nix store can hold: refusing the \
                 closure"
            ),
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
                "{}: body longer than FileSize {file_size} given in the narinfo of {path}",
                get(url)
            ),
            FetchError::Truncated { path, url, detail } => write!(
                f,
                "{}: body cut short ({detail}) while fetching {path}",
                get(url)
            ),
            FetchError::CompressedTooLong {
                path,
                url,
                limit,
                nar_size,
            } => write!(
                f,
                "{}: compressed body of {path} goes on past {limit} bytes, more than a \
                 NAR of NarSize {nar_size} can take, and its narinfo gives no FileSize: refusing \
                 it",
                get(url)
            ),
            FetchError::DecoderMemory {
                path,
                url,
                codec,
                asked,
                cap,
            } => {
                let what = if codec == "xz" {
                    "dictionary"
                } else {
                    "window"
                };
                let asked = match asked {
                    Some(n) => format!("a {} ({n} bytes) {what}", size(*n)),
                    None => format!("a larger {what}"),
                };
                write!(
                    f,
                    "{}: the {codec} stream of {path} asks for {asked}, over the decoder \
                     memory cap of {}: refusing it (--max-decoder-memory MIB raises the cap, \
                     if you trust this cache)",
                    at(url),
                    size(*cap)
                )
            }
            FetchError::Decompress {
                path,
                url,
                codec,
                detail,
            } => write!(
                f,
                "{}: {codec} decompression failed for {path}: {detail}",
                at(url)
            ),
            FetchError::NarTooLong {
                path,
                url,
                nar_size,
            } => write!(
                f,
                "{}: NAR of {path} longer than NarSize {nar_size} after decompression",
                at(url)
            ),
            FetchError::Store {
                url,
                source: source @ (StoreError::HashMismatch { .. } | StoreError::SizeMismatch { .. }),
            } => write!(
                f,
                "{}: {source}; the path was not added to the store: {} is corrupt or \
                 was altered",
                at(url),
                copy_of(url)
            ),
            FetchError::Store { url, source } => write!(f, "{}: {source}", at(url)),
            FetchError::DiskSpace {
                dir,
                needed,
                available,
            } => write!(
                f,
                "not enough space for the store at {dir}: need {}, {} available; free some \
                 space or use a bigger filesystem",
                size(*needed),
                size(*available)
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
            // The body is not what any cache's compressor writes for this
            // narinfo; trying again does not help, like a corrupt body.
            | FetchError::CompressedTooLong { .. }
            | FetchError::DecoderMemory { .. }
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

/// Fetch, parse and verify the narinfo of `path`.
pub fn fetch_narinfo(
    client: &dyn CacheClient,
    keys: &TrustedKeys,
    path: &StorePath,
) -> Result<NarInfo, FetchError> {
    let url = client.narinfo_url(path.hash_part());
    let malformed = |detail: String| FetchError::NarInfoMalformed {
        path: path.clone(),
        url: url.clone(),
        detail,
    };
    let text = client
        .get_narinfo(path.hash_part())?
        .ok_or_else(|| FetchError::NarInfoMissing {
            path: path.clone(),
            url: url.clone(),
        })?;
    let info = NarInfo::parse(&text, path.hash_part()).map_err(|e| malformed(e.to_string()))?;
    if &info.store_path != path {
        return Err(malformed(format!(
            "narinfo: StorePath {} is not the path asked for",
            info.store_path
        )));
    }
    keys.verify(&info)
        .map_err(|err| FetchError::Untrusted { url, err })?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Auth, Client, RetryPolicy, Secret};

    #[test]
    fn bundle_errors_name_the_bundle_and_its_entry() {
        let p = "/nix/store/33333333333333333333333333333333-app";
        let path = StorePath::parse(p).unwrap();
        let url = "bundle on standard input/nar/3333.nar".to_string();
        let e = FetchError::Store {
            url: url.clone(),
            source: StoreError::SizeMismatch {
                path: path.clone(),
                expected: 296,
                got: 288,
            },
        };
        assert_eq!(
            e.to_string(),
            format!(
                "entry nar/3333.nar of bundle on standard input: NAR of {p}: size mismatch: the \
                 narinfo says 296 bytes, the NAR has 288; the path was not added to the store: \
                 bundle on standard input's entry nar/3333.nar is corrupt or was altered"
            )
        );
        let e = FetchError::Truncated {
            path,
            url: "bundle /srv/b/nar/x.nar".into(),
            detail: "it ended".into(),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "entry nar/x.nar of bundle /srv/b: body cut short (it ended) while fetching {p}"
            )
        );
    }

    #[test]
    fn the_closure_token_goes_only_to_the_cache_origin() {
        let client = Client::build(&[], true, RetryPolicy::default()).unwrap();
        let token = Secret::new("t");
        let cache = HttpCache {
            client: &client,
            base: "https://cache.example/c".to_string(),
            token: &token,
        };
        let cases = [
            ("relative", "https://cache.example/c/nar/x.nar.xz", true),
            ("host-absolute", "https://cache.example:443/x.nar", true),
            (
                "pre-signed link",
                "https://bucket.s3.example/x.nar?sig=1",
                false,
            ),
            ("other port", "https://cache.example:8443/x.nar", false),
            ("plain http", "http://cache.example/x.nar", false),
        ];
        for (name, url, credential) in cases {
            let auth = cache.nar_auth(url);
            assert_eq!(matches!(auth, Auth::Basic(_)), credential, "{name}");
            assert_eq!(matches!(auth, Auth::None), !credential, "{name}");
        }
    }
}
