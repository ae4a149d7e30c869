//! `--mirror URL` (repeatable): binary caches asked before the run's own
//! cache (FlakeHub Cache, or the `--cache`), in the order given, per path.
//!
//! [`Chain`] is a [`CacheClient`] over the mirrors and the upstream cache.
//! For each narinfo it asks the mirrors in order; the first one that has
//! it, and whose narinfo parses for the path asked for and is signed by a
//! trusted key, serves the path. A miss (404/403) moves on quietly; an
//! error moves on with one warning per mirror, and a mirror that cannot be
//! reached (connect, DNS, TLS, timeout) is not asked again in this run.
//! The narinfo's unsigned `URL:` is rewritten to the absolute URL on that
//! mirror, so the NAR is asked of the same mirror, with the mirror's own
//! client and credential (`source::cache::mirror_client`: its
//! `--netrc-file` entry, never the closure token). The upstream cache is
//! asked last, as before.
//!
//! A NAR from a mirror goes through the same verified fetch (FileSize,
//! FileHash, NarHash, NarSize, strict NAR parse). When it fails, the fetch
//! step asks [`CacheClient::next_source`]: one warning line names the
//! mirror, and the path's narinfo is taken from the next source (the next
//! mirrors, then upstream), verified again, and fetched from there. Nothing
//! a mirror served wrong is registered: the store only takes a path whose
//! hash and size match.
//!
//! Bytes are counted per source ([`by_source`]) for `status` and the
//! metrics file.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::cache::{fetch_narinfo, CacheClient, FetchError};
use crate::error::{Error, Exit};
use crate::http::RangeAnswer;
use crate::nix::narinfo::signature::TrustedKeys;
use crate::nix::narinfo::{Compression, NarInfo};

/// One `--mirror`.
pub struct Mirror {
    /// As given (without a trailing slash), for messages and counts.
    pub url: String,
    client: Box<dyn CacheClient + Send>,
    /// Not reachable: not asked again in this run.
    dead: AtomicBool,
    /// One warning per mirror for errors other than a bad NAR.
    warned: AtomicBool,
    bytes: AtomicU64,
}

impl Mirror {
    pub fn new(url: &str, client: Box<dyn CacheClient + Send>) -> Mirror {
        Mirror {
            url: url.trim_end_matches('/').to_string(),
            client,
            dead: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
        }
    }

    /// Whether `url` is one of this mirror's NARs.
    fn owns(&self, url: &str) -> bool {
        let base = self.client.base_url();
        url.strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

struct Mirrors {
    list: Vec<Mirror>,
    /// Bytes from the upstream cache, and its URL (the first one seen).
    upstream_bytes: AtomicU64,
    upstream_url: OnceLock<String>,
}

static MIRRORS: OnceLock<Mirrors> = OnceLock::new();

fn mirrors() -> &'static Mirrors {
    MIRRORS.get_or_init(|| Mirrors {
        list: Vec::new(),
        upstream_bytes: AtomicU64::new(0),
        upstream_url: OnceLock::new(),
    })
}

/// Set this run's mirrors (once per process; a second call is refused).
pub fn install(list: Vec<Mirror>) -> Result<(), Error> {
    let some = !list.is_empty();
    MIRRORS
        .set(Mirrors {
            list,
            upstream_bytes: AtomicU64::new(0),
            upstream_url: OnceLock::new(),
        })
        .map_err(|_| Error::new(Exit::Internal, "the mirrors were set twice"))?;
    if some {
        // The state file's records count bytes per source from here on.
        crate::state::count_bytes_by_source(by_source);
    }
    Ok(())
}

/// Whether this run has mirrors.
pub fn any() -> bool {
    !mirrors().list.is_empty()
}

/// The bytes each source delivered in this run (narinfos and NARs, as
/// read): every mirror in order, then the upstream cache (when it was
/// asked). Empty when there are no mirrors and nothing came from upstream.
pub fn by_source() -> Vec<(String, u64)> {
    let m = mirrors();
    let mut out: Vec<(String, u64)> = (m.list.iter())
        .map(|x| (x.url.clone(), x.bytes.load(Ordering::Relaxed)))
        .collect();
    if let Some(u) = m.upstream_url.get() {
        out.push((u.clone(), m.upstream_bytes.load(Ordering::Relaxed)));
    }
    out
}

/// `upstream` with this run's mirrors in front of it.
pub fn wrap<'a>(upstream: &'a dyn CacheClient, keys: &'a TrustedKeys) -> Chain<'a> {
    let m = mirrors();
    let _ = m.upstream_url.set(upstream.base_url().to_string());
    Chain {
        mirrors: &m.list,
        upstream,
        keys,
        upstream_bytes: &m.upstream_bytes,
    }
}

/// The mirrors, then `upstream` (see the module doc).
pub struct Chain<'a> {
    mirrors: &'static [Mirror],
    upstream: &'a dyn CacheClient,
    keys: &'a TrustedKeys,
    upstream_bytes: &'static AtomicU64,
}

/// A body that counts what is read from it.
struct Counting<R> {
    inner: R,
    bytes: &'static AtomicU64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn counted(body: Box<dyn Read + Send>, bytes: &'static AtomicU64) -> Box<dyn Read + Send> {
    Box::new(Counting { inner: body, bytes })
}

impl Chain<'_> {
    /// `hash_part`'s narinfo from mirror `m`, verified, its `URL:` made
    /// absolute on `m`; None when `m` does not have it or serves it wrong.
    fn ask_mirror(&self, m: &Mirror, hash_part: &str) -> Option<(String, NarInfo)> {
        if m.dead.load(Ordering::Relaxed) {
            return None;
        }
        let text = match m.client.get_narinfo(hash_part) {
            Ok(Some(text)) => text,
            Ok(None) => return None,
            Err(e) => {
                let unreachable = matches!(&e, FetchError::Transport(t) if t.status().is_none());
                if unreachable {
                    m.dead.store(true, Ordering::Relaxed);
                }
                if !m.warned.swap(true, Ordering::Relaxed) {
                    crate::ui::warn(&format!(
                        "mirror {}: {e}; {}",
                        m.url,
                        if unreachable {
                            "not asking it again in this run"
                        } else {
                            "taking the paths it fails on from the next source"
                        }
                    ));
                }
                return None;
            }
        };
        m.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
        let refuse = |why: String| {
            crate::ui::warn(&format!(
                "mirror {}: {hash_part}.narinfo {why}; taking the path from the next source",
                m.url
            ));
            None
        };
        let info = match NarInfo::parse(&text, hash_part) {
            Ok(i) => i,
            Err(e) => return refuse(format!("is malformed ({e})")),
        };
        if info.store_path.hash_part() != hash_part {
            return refuse(format!("is for {}", info.store_path));
        }
        if let Err(e) = self.keys.verify(&info) {
            return refuse(format!("is refused: {e}"));
        }
        if let Compression::Unsupported(c) = &info.compression {
            return refuse(format!(
                "names Compression '{c}', which fh-lite cannot decode"
            ));
        }
        let url = m.client.nar_url(&info);
        let text = crate::bundle::rewrite_url(&text, &url);
        let info = NarInfo {
            url: url.clone(),
            ..info
        };
        Some((text, info))
    }

    fn owner(&self, url: &str) -> Option<&'static Mirror> {
        self.mirrors.iter().find(|m| m.owns(url))
    }
}

impl CacheClient for Chain<'_> {
    fn base_url(&self) -> &str {
        self.upstream.base_url()
    }

    fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError> {
        for m in self.mirrors {
            if let Some((text, _)) = self.ask_mirror(m, hash_part) {
                return Ok(Some(text));
            }
        }
        let got = self.upstream.get_narinfo(hash_part)?;
        if let Some(t) = &got {
            self.upstream_bytes
                .fetch_add(t.len() as u64, Ordering::Relaxed);
        }
        Ok(got)
    }

    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        match self.owner(url) {
            Some(m) => Ok(counted(m.client.get_nar(url)?, &m.bytes)),
            None => Ok(counted(self.upstream.get_nar(url)?, self.upstream_bytes)),
        }
    }

    fn get_nar_from(&self, url: &str, offset: u64) -> Result<RangeAnswer, FetchError> {
        let (mut answer, bytes) = match self.owner(url) {
            Some(m) => (m.client.get_nar_from(url, offset)?, &m.bytes),
            None => (
                self.upstream.get_nar_from(url, offset)?,
                self.upstream_bytes,
            ),
        };
        answer.body = counted(answer.body, bytes);
        Ok(answer)
    }

    fn narinfo_url(&self, hash_part: &str) -> String {
        self.upstream.narinfo_url(hash_part)
    }

    fn nar_url(&self, info: &NarInfo) -> String {
        if self.owner(&info.url).is_some() {
            info.url.clone()
        } else {
            self.upstream.nar_url(info)
        }
    }

    fn next_source(&self, info: &NarInfo, err: &FetchError) -> Result<Option<NarInfo>, FetchError> {
        // Room and registration failures are this machine's, not the
        // mirror's: another source would not help.
        let local = match err {
            FetchError::DiskSpace { .. } => true,
            FetchError::Store { source, .. } => source.exit() == Exit::Store,
            _ => false,
        };
        let Some(at) = self.mirrors.iter().position(|m| m.owns(&info.url)) else {
            return Ok(None);
        };
        if local {
            return Ok(None);
        }
        let path = &info.store_path;
        crate::ui::warn(&format!(
            "mirror {}: {err}; {path} comes from the next source",
            self.mirrors[at].url
        ));
        for m in &self.mirrors[at + 1..] {
            if let Some((_, next)) = self.ask_mirror(m, path.hash_part()) {
                return Ok(Some(next));
            }
        }
        // Parsed and verified as every narinfo is.
        fetch_narinfo(self.upstream, self.keys, path).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_owns_only_urls_under_its_base() {
        let m = Mirror::new(
            "file:///srv/mirror/",
            Box::new(crate::cache::file::FileCache::new("file:///srv/mirror").unwrap()),
        );
        assert!(m.owns("file:///srv/mirror/nar/x.nar"));
        assert!(!m.owns("file:///srv/mirror2/nar/x.nar"));
        assert!(!m.owns("https://cache.flakehub.com/nar/x.nar"));
    }
}
