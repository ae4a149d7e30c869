//! Bundles: everything an offline apply needs, in one file or directory.
//!
//! A tar bundle is an ordered ustar archive ([`tar`]):
//!
//! ```text
//! fh-lite-manifest.json      what the bundle is (Manifest), first
//! fh-lite-manifest.sig       NAME:BASE64 ed25519 signature of the manifest (optional)
//! <hash>.narinfo             each narinfo as the cache served it (URL: rewritten)
//! nar/<hash>.nar[.xz|.zst|.bz2]   each NAR as served (compressed), references first
//! ```
//!
//! So a reader verifies it in one pass through a pipe: the manifest and its
//! signature, then every narinfo against the manifest and the trusted cache
//! keys, all before the first NAR byte; then each NAR while it streams.
//! A `dir` bundle is the same files as a binary-cache directory (with
//! `nix-cache-info`), which Nix itself reads (`nix copy --from file://DIR`).
//!
//! The narinfos' `URL:` lines point at the bundle's own NAR names; the URL
//! is not part of the signed fingerprint, so the cache's signatures stay
//! valid.

pub mod delta;
pub mod tar;

use base64::Engine as _;
use miniserde::{Deserialize, Serialize};

use crate::error::{Error, Exit};
use crate::nix::narinfo::signature::PublicKey;
use crate::nix::narinfo::{Compression, NarInfo};

pub const MANIFEST: &str = "fh-lite-manifest.json";
pub const SIGNATURE: &str = "fh-lite-manifest.sig";
pub const FORMAT: &str = "fh-lite-bundle-1";
/// A delta bundle (`bundle create --since`): a distinct format, so that a
/// reader that does not know deltas refuses one by its format line.
pub const DELTA_FORMAT: &str = "fh-lite-delta-1";
/// Bounds on what is read into memory before the NARs.
pub const MANIFEST_LIMIT: u64 = 32 << 20;
pub const SIGNATURE_LIMIT: u64 = 4096;
pub const NARINFO_LIMIT: u64 = 64 << 10;

/// What the bundle holds: the first entry, and what its signature covers.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Manifest {
    pub format: String,
    /// The reference as given to `bundle create` (`org/project/req#attr`).
    pub reference: String,
    /// The exact version, when the reference pins one.
    pub version: Option<String>,
    pub attribute_path: String,
    pub store_path: String,
    /// Unix seconds.
    pub created: u64,
    pub fh_lite_version: String,
    /// The whole closure, references first.
    pub closure: Vec<Entry>,
    /// A delta: the store path given to `--since` (or the root of the
    /// bundle given to it).
    pub since: Option<String>,
    /// A delta: the paths of `closure` it does not carry (no narinfo, no
    /// NAR), which the device must already have.
    pub left_out: Option<Vec<String>>,
}

impl Manifest {
    /// The closure entries the bundle carries (all but `left_out`).
    pub fn carried(&self) -> impl Iterator<Item = &Entry> {
        let out: std::collections::BTreeSet<&str> = (self.left_out.iter().flatten())
            .map(String::as_str)
            .collect();
        (self.closure.iter()).filter(move |e| !out.contains(e.path.as_str()))
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub nar_hash: String,
    pub nar_size: u64,
    pub file_hash: Option<String>,
    pub file_size: Option<u64>,
    /// Full store paths, sorted.
    pub references: Vec<String>,
    /// The NAR's name in the bundle (`nar/<hash>.nar.xz`).
    pub nar: String,
}

impl Entry {
    pub fn of(info: &NarInfo) -> Entry {
        let mut references: Vec<String> = info.references.iter().map(|r| r.to_absolute()).collect();
        references.sort();
        references.dedup();
        Entry {
            path: info.store_path.to_absolute(),
            nar_hash: info.nar_hash.to_string(),
            nar_size: info.nar_size,
            file_hash: info.file_hash.as_ref().map(|h| h.to_string()),
            file_size: info.file_size,
            references,
            nar: nar_name(info),
        }
    }
}

/// The reference a bundle made from a store path (`bundle create PATH
/// --cache URL`) records in its manifest: loose, so no version is
/// remembered, and `apply --from` records the store path instead.
pub const STORE_PATH_REF: &str = "fh-lite/store-path/*";

/// True for a manifest reference that is [`STORE_PATH_REF`].
pub fn is_store_path_ref(r: &crate::outref::OutputRef) -> bool {
    r.org == "fh-lite" && r.project == "store-path"
}

/// `nar/<hash part>.nar` plus the compression's usual suffix.
pub fn nar_name(info: &NarInfo) -> String {
    let ext = match &info.compression {
        Compression::None => "",
        Compression::Xz => ".xz",
        Compression::Zstd => ".zst",
        Compression::Bzip2 => ".bz2",
        Compression::Unsupported(_) => ".bin",
    };
    format!("nar/{}.nar{ext}", info.store_path.hash_part())
}

/// The narinfo text as served, with its `URL:` line pointing at `url`.
pub fn rewrite_url(text: &str, url: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with("URL: ") {
            out.push_str(&format!("URL: {url}\n"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A Nix-style ed25519 secret key `NAME:BASE64(64 bytes: seed, public key)`.
pub struct SecretKey {
    pub name: String,
    pair: ring::signature::Ed25519KeyPair,
}

impl SecretKey {
    /// Parse the key file's text; errors name `file`.
    pub fn parse(text: &str, file: &str) -> Result<SecretKey, Error> {
        let bad = |why: &str| {
            Error::usage(format!(
                "--sign-key {file}: {why}; expected a Nix secret key NAME:BASE64 (nix-store --generate-binary-cache-key)"
            ))
        };
        let (name, b64) = text.trim().split_once(':').ok_or_else(|| bad("no ':'"))?;
        if name.is_empty() {
            return Err(bad("empty key name"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("invalid base64"))?;
        if bytes.len() != 64 {
            return Err(bad("not 64 bytes of base64"));
        }
        let pair =
            ring::signature::Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..])
                .map_err(|_| bad("the public half does not match the seed"))?;
        Ok(SecretKey {
            name: name.to_string(),
            pair,
        })
    }

    /// `NAME:BASE64(signature)` of `data`.
    pub fn sign(&self, data: &[u8]) -> String {
        let sig = self.pair.sign(data);
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        format!("{}:{b64}\n", self.name)
    }
}

/// Check the manifest signature `sig` (`NAME:BASE64`) over `manifest` with
/// the trusted bundle keys; `what` names the bundle in messages. Ok(true)
/// when a trusted key signed it; Ok(false) when `allow_unsigned` let an
/// unsigned manifest (or one signed by an untrusted key) through: its
/// reference, and so its version, is then unproven.
pub fn verify_manifest(
    what: &str,
    manifest: &[u8],
    sig: Option<&[u8]>,
    keys: &[PublicKey],
    allow_unsigned: bool,
) -> Result<bool, Error> {
    let refuse = |msg: String| Error::new(Exit::Verification, format!("{what}: {msg}"));
    let Some(sig) = sig else {
        if allow_unsigned {
            return Ok(false);
        }
        return Err(refuse(format!(
            "the manifest is not signed (no {SIGNATURE}); refusing the bundle (--allow-unsigned-bundle accepts it on the strength of the narinfo signatures alone)"
        )));
    };
    if keys.is_empty() && !allow_unsigned {
        return Err(Error::usage(
            "apply --from needs --trusted-bundle-key NAME:KEY to check the bundle's manifest signature (or --allow-unsigned-bundle)",
        ));
    }
    let text = std::str::from_utf8(sig).unwrap_or("").trim();
    let sig = crate::nix::narinfo::signature::Signature::parse(text)
        .map_err(|e| refuse(format!("{SIGNATURE}: {e}")))?;
    let Some(key) = keys.iter().find(|k| k.name == sig.name) else {
        if allow_unsigned {
            return Ok(false);
        }
        let trusted: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        return Err(refuse(format!(
            "the manifest is signed by {}, which is not a trusted bundle key (trusted: {}); add it with --trusted-bundle-key if you trust it",
            sig.name,
            trusted.join(", ")
        )));
    };
    let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key.key);
    public.verify(manifest, &sig.bytes).map_err(|_| {
        refuse(format!(
            "the manifest signature by {} does not verify: the manifest was altered or the signature is corrupt",
            key.name
        ))
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test-1:qSUqv3ohpBqIrbnxNkCjVmm5cxuEMW3WhgozvIGjAxaVx1oDjCjGdKoyp0l+fLjH2a5EnH3kLz6kDjiiR03/BA==";

    #[test]
    fn sign_and_verify_manifest() {
        // Any 32-byte seed makes a key; build the public half from it.
        let seed = [7u8; 32];
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        use ring::signature::KeyPair as _;
        let mut both = seed.to_vec();
        both.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&both);
        let key = SecretKey::parse(&format!("k-1:{b64}\n"), "f").unwrap();
        let public = PublicKey {
            name: "k-1".into(),
            key: pair.public_key().as_ref().try_into().unwrap(),
        };
        let sig = key.sign(b"manifest");
        let keys = std::slice::from_ref(&public);
        verify_manifest("b", b"manifest", Some(sig.as_bytes()), keys, false).unwrap();
        let e = verify_manifest("b", b"manifesT", Some(sig.as_bytes()), keys, false).unwrap_err();
        assert!(e.message.contains("does not verify"), "{}", e.message);
        let e = verify_manifest("b", b"manifest", None, keys, false).unwrap_err();
        assert!(e.message.contains("is not signed"), "{}", e.message);
        assert!(
            SecretKey::parse(SECRET, "f").is_err(),
            "mismatched halves refused"
        );
    }

    #[test]
    fn url_line_is_rewritten_only() {
        let t = "StorePath: /nix/store/x\nURL: nar/abc.nar.xz\nCompression: xz\nSig: k:v\n";
        assert_eq!(
            rewrite_url(t, "nar/x.nar.xz"),
            "StorePath: /nix/store/x\nURL: nar/x.nar.xz\nCompression: xz\nSig: k:v\n"
        );
    }
}
