//! A fake binary cache for the unit tests: a directory laid out like
//! `nix copy --to file://` (`<hash>.narinfo`, `nar/…`), NARs built in code,
//! narinfos signed with a test key, every request recorded; and a plan +
//! fetch into a fresh image root. Shared by the fetch, plan, store and
//! progress tests.

use std::io::Read;
use std::sync::Mutex;

use crate::cache::{CacheClient, FetchError};
use crate::fetch::fetch_all;
use crate::nix::hash::Sha256;
use crate::nix::narinfo::signature::{PublicKey, TrustedKeys};
use crate::nix::store_path::StorePath;
use crate::plan::Plan;
use crate::progress::{Mode, Progress};
use crate::store::image::ImageStore;
use crate::testutil::nar::{nar, Node};
use crate::testutil::TempDir;

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

impl Default for TestCache {
    fn default() -> TestCache {
        TestCache::new()
    }
}

impl TestCache {
    pub fn new() -> TestCache {
        let dir = TempDir::new("cache");
        std::fs::create_dir_all(dir.0.join("nar")).unwrap();
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

/// The fetch settings of the unit tests: 3 jobs, the default cap, silent.
pub fn test_opts() -> crate::fetch::FetchOptions {
    crate::fetch::FetchOptions {
        jobs: 3,
        max_decoder_memory: crate::options::DEFAULT_DECODER_MEMORY,
        notes: false,
        min_bytes: crate::fetch::MIN_BYTES,
        window: crate::fetch::WINDOW,
    }
}

pub fn quiet() -> Progress {
    Progress::new(Mode::Quiet)
}

/// plan + fetch into a fresh image root.
pub fn apply(cache: &TestCache, root: &StorePath) -> (TempDir, Result<Plan, FetchError>) {
    let img = TempDir::new("img");
    let store = ImageStore::open(&img.0).unwrap();
    let r = crate::plan::plan(cache, &store, &cache.keys(), root, 3)
        .and_then(|p| fetch_all(cache, &store, &p, &test_opts(), &quiet()).map(|()| p));
    (img, r)
}
