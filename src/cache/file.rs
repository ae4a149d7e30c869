//! A `file://` binary cache as a [`CacheClient`]: the directory that
//! `nix copy --to file://DIR` writes (`DIR/nix-cache-info`,
//! `DIR/<hash>.narinfo`, `DIR/nar/…`), read from the local filesystem.
//!
//! A narinfo is read bounded, like one from the network; a missing one is
//! "not in this cache". A NAR's `URL:` must stay inside DIR: an absolute
//! URL, a host-absolute one or a `..` component is refused (the URL is not
//! covered by the narinfo signature, so it must not name other files).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::cache::{CacheClient, FetchError};
use crate::http::{HttpError, NARINFO_LIMIT};
use crate::nix::narinfo::NarInfo;

pub struct FileCache {
    /// `file:///abs/dir`, without a trailing slash or a query.
    base: String,
    dir: PathBuf,
}

impl FileCache {
    /// The cache at `url` (`file:///abs/dir`, an optional `?query` such as
    /// Nix's `?compression=…` is ignored). Err: why the URL is unusable.
    pub fn new(url: &str) -> Result<FileCache, String> {
        let rest = url
            .strip_prefix("file://")
            .ok_or_else(|| format!("'{url}' is not a file:// URL"))?;
        let path = rest.split('?').next().unwrap_or_default();
        let path = path.trim_end_matches('/');
        if !path.starts_with('/') {
            return Err(format!(
                "'{url}' does not name an absolute directory (file:///path/to/cache)"
            ));
        }
        Ok(FileCache {
            base: format!("file://{path}"),
            dir: PathBuf::from(path),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file behind a NAR URL, or why it is refused.
    fn nar_file(&self, url: &str) -> Result<PathBuf, FetchError> {
        let bad = |detail: &str| {
            FetchError::Transport(HttpError::BadUrl {
                url: url.to_string(),
                detail: detail.to_string(),
            })
        };
        let Some(rel) = url.strip_prefix(&format!("{}/", self.base)) else {
            return Err(bad(&format!(
                "the narinfo's URL points outside the cache directory {}",
                self.dir.display()
            )));
        };
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
            || rel.contains('\\')
        {
            return Err(bad(&format!(
                "the narinfo's URL points outside the cache directory {}",
                self.dir.display()
            )));
        }
        Ok(self.dir.join(rel))
    }
}

fn read_error(url: &str, e: &io::Error) -> FetchError {
    FetchError::Transport(HttpError::Body {
        url: url.to_string(),
        detail: format!("cannot read the file: {e}"),
    })
}

impl CacheClient for FileCache {
    fn base_url(&self) -> &str {
        &self.base
    }

    fn get_narinfo(&self, hash_part: &str) -> Result<Option<String>, FetchError> {
        let url = self.narinfo_url(hash_part);
        let file = match std::fs::File::open(self.dir.join(format!("{hash_part}.narinfo"))) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_error(&url, &e)),
        };
        let mut bytes = Vec::new();
        file.take(NARINFO_LIMIT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read_error(&url, &e))?;
        if bytes.len() as u64 > NARINFO_LIMIT {
            return Err(FetchError::Transport(HttpError::TooLarge {
                url,
                limit: NARINFO_LIMIT,
            }));
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| FetchError::NotText { url })
    }

    fn get_nar(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        let path = self.nar_file(url)?;
        let f = std::fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FetchError::Http {
                url: url.to_string(),
                status: 404,
            },
            _ => read_error(url, &e),
        })?;
        Ok(Box::new(io::BufReader::new(f)))
    }

    fn nar_url(&self, info: &NarInfo) -> String {
        crate::url::nar_url(&self.base, &info.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_an_absolute_directory() {
        let c = FileCache::new("file:///srv/cache/?compression=zstd").unwrap();
        assert_eq!(c.base_url(), "file:///srv/cache");
        assert_eq!(c.dir(), Path::new("/srv/cache"));
        for bad in ["file://relative/dir", "https://x/y", "file://"] {
            assert!(FileCache::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn narinfos_and_nars_are_read_from_the_directory_only() {
        let dir = std::env::temp_dir().join(format!("fh-lite-cache-file-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nar")).unwrap();
        let hp = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr";
        std::fs::write(dir.join(format!("{hp}.narinfo")), "StorePath: x\n").unwrap();
        std::fs::write(dir.join("nar/a.nar"), "nar bytes").unwrap();
        let c = FileCache::new(&format!("file://{}", dir.display())).unwrap();
        assert_eq!(
            c.get_narinfo(hp).unwrap().as_deref(),
            Some("StorePath: x\n")
        );
        assert_eq!(
            c.get_narinfo("0jqd0rlxzra1rs38rdxl43yh6rxchgc6").unwrap(),
            None
        );
        let mut s = String::new();
        let url = format!("{}/nar/a.nar", c.base_url());
        c.get_nar(&url).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "nar bytes");
        // A missing NAR is the cache's 404; a URL leaving the directory is
        // refused before any file is opened.
        let missing = c.get_nar(&format!("{}/nar/b.nar", c.base_url()));
        assert!(matches!(missing, Err(FetchError::Http { status: 404, .. })));
        for escape in [
            format!("{}/nar/../../etc/passwd", c.base_url()),
            "file:///etc/passwd".to_string(),
            format!("{}//etc/passwd", c.base_url()),
        ] {
            let e = c.get_nar(&escape).err().expect(&escape).to_string();
            assert!(e.contains("outside the cache directory"), "{escape}: {e}");
        }
        // A narinfo is bounded like one from the network.
        let big = "x".repeat(NARINFO_LIMIT as usize + 1);
        std::fs::write(dir.join(format!("{hp}.narinfo")), big).unwrap();
        assert!(c.get_narinfo(hp).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
