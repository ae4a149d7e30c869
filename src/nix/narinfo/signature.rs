//! ed25519 narinfo signatures and keys (docs/formats.md, "Signatures").
//!
//! ```text
//! Sig:        <key name>:<base64 of a 64-byte ed25519 signature>   (88 chars)
//! public key: <key name>:<base64 of a 32-byte ed25519 key>         (44 chars)
//! ```
//!
//! Split at the first `:`; the name must not be empty; standard base64 with
//! padding; the decoded length must be exact (Nix: "signature is not
//! valid"). The signed message is the narinfo fingerprint
//! ([`NarInfo::fingerprint`]), plain Ed25519 (RFC 8032), no prehash.
//!
//! Trust: the trusted keys form a map name → key where the first definition
//! of a name wins; each `Sig` is looked up by its key name, unknown names do
//! not count, and a narinfo is accepted when at least one signature by a
//! trusted key verifies (Nix `checkSignatures`).

use std::fmt;

use base64::Engine as _;

use super::NarInfo;

/// `Sig: <name>:<base64 of 64 bytes>`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub bytes: [u8; 64],
}

/// `<name>:<base64 of 32 bytes>`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    pub key: [u8; 32],
}

/// `what` below is "signature" or "public key"; `value` the text as given.
#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    /// No `:` between name and base64.
    NoColon { what: &'static str, value: String },
    /// Nothing before the `:`.
    EmptyName { what: &'static str, value: String },
    /// The part after `:` is not standard padded base64.
    BadBase64 { what: &'static str, value: String },
    /// The base64 decodes (or would decode) to the wrong number of bytes.
    WrongLength {
        what: &'static str,
        value: String,
        expected: usize,
    },
    /// The narinfo has no `Sig:` line at all.
    NoSignatures { path: String },
    /// None of the signatures is by a trusted key.
    NoTrustedSignature {
        path: String,
        signed_by: Vec<String>,
        trusted: Vec<String>,
    },
    /// A signature by a trusted key does not verify (and none other does).
    Invalid { path: String, key: String },
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigError::NoColon { what, value } => {
                write!(f, "{what} {value:?}: expected <key name>:<base64>")
            }
            SigError::EmptyName { what, value } => {
                write!(f, "{what} {value:?}: empty key name")
            }
            SigError::BadBase64 { what, value } => {
                write!(f, "{what} {value:?}: invalid base64")
            }
            SigError::WrongLength {
                what,
                value,
                expected,
            } => write!(f, "{what} {value:?}: not {expected} bytes of base64"),
            SigError::NoSignatures { path } => write!(
                f,
                "{path} is not signed (its narinfo has no Sig: line); a binary cache must sign \
                 what it serves"
            ),
            SigError::NoTrustedSignature {
                path,
                signed_by,
                trusted,
            } => write!(
                f,
                "{path} is not signed by a trusted key (signed by: {}; trusted: {}); add the \
                 cache's public key with --trusted-key if you trust it",
                signed_by.join(", "),
                if trusted.is_empty() {
                    "none".to_string()
                } else {
                    trusted.join(", ")
                }
            ),
            SigError::Invalid { path, key } => write!(
                f,
                "{path}: the signature by trusted key {key} does not verify (the narinfo was \
                 altered or the signature is corrupt)"
            ),
        }
    }
}

/// The keys a narinfo must be signed by (first definition of a name wins).
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    pub keys: Vec<PublicKey>,
}

/// Split `<name>:<base64>` and decode exactly `N` bytes.
fn parse_named<const N: usize>(what: &'static str, s: &str) -> Result<(String, [u8; N]), SigError> {
    let value = || s.to_string();
    let (name, b64) = s.split_once(':').ok_or_else(|| SigError::NoColon {
        what,
        value: value(),
    })?;
    if name.is_empty() {
        return Err(SigError::EmptyName {
            what,
            value: value(),
        });
    }
    let wrong_length = || SigError::WrongLength {
        what,
        value: value(),
        expected: N,
    };
    // Bounded before decoding: N bytes are exactly this many characters.
    if b64.len() != N.div_ceil(3) * 4 {
        return Err(wrong_length());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SigError::BadBase64 {
            what,
            value: value(),
        })?;
    let bytes: [u8; N] = bytes.try_into().map_err(|_| wrong_length())?;
    Ok((name.to_string(), bytes))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Signature {
    pub fn parse(s: &str) -> Result<Signature, SigError> {
        let (name, bytes) = parse_named::<64>("signature", s)?;
        Ok(Signature { name, bytes })
    }
}

/// `<name>:<base64>`, as in a narinfo `Sig:` line.
impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, b64(&self.bytes))
    }
}

impl PublicKey {
    pub fn parse(s: &str) -> Result<PublicKey, SigError> {
        let (name, key) = parse_named::<32>("public key", s)?;
        Ok(PublicKey { name, key })
    }
}

/// `<name>:<base64>`, as in `trusted-public-keys`.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, b64(&self.key))
    }
}

/// fh's `CACHE_PUBLIC_KEYS` (formats.md "Signatures"): which of them signs FlakeHub narinfos
/// today is not documented, so all are trusted.
pub const FLAKEHUB_KEYS: [&str; 8] = [
    "cache.flakehub.com-3:hJuILl5sVK4iKm86JzgdXW12Y2Hwd5G07qKtHTOcDCM=",
    "cache.flakehub.com-4:Asi8qIv291s0aYLyH6IOnr5Kf6+OF14WVjkE6t3xMio=",
    "cache.flakehub.com-5:zB96CRlL7tiPtzA9/WKyPkp3A2vqxqgdgyTVNGShPDU=",
    "cache.flakehub.com-6:W4EGFwAGgBj3he7c5fNh9NkOXw0PUVaxygCVKeuvaqU=",
    "cache.flakehub.com-7:mvxJ2DZVHn/kRxlIaxYNMuDG1OvMckZu32um1TadOR8=",
    "cache.flakehub.com-8:moO+OVS0mnTjBTcOUh2kYLQEd59ExzyoW1QgQ8XAARQ=",
    "cache.flakehub.com-9:wChaSeTI6TeCuV/Sg2513ZIM9i0qJaYsF+lZCXg0J6o=",
    "cache.flakehub.com-10:2GqeNlIp6AKp4EF2MVbE1kBOp9iBSyo0UPR9KoR0o1Y=",
];

impl TrustedKeys {
    /// The eight cache.flakehub.com-3 … -10 keys.
    pub fn flakehub_defaults() -> TrustedKeys {
        let keys = FLAKEHUB_KEYS
            .iter()
            // The constants above parse: test `flakehub_defaults_are_the_eight_keys`.
            .map(|k| PublicKey::parse(k).expect("built-in FlakeHub key parses"))
            .collect();
        TrustedKeys { keys }
    }
    pub fn add(&mut self, key: PublicKey) {
        self.keys.push(key)
    }

    /// The key trusted under `name`: the first definition wins.
    fn lookup(&self, name: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// Ok(name of the key that verified) when ≥ 1 signature verifies.
    pub fn verify(&self, info: &NarInfo) -> Result<String, SigError> {
        self.verify_fingerprint(
            &info.store_path.to_absolute(),
            info.fingerprint().as_bytes(),
            &info.sigs,
        )
    }

    /// The check behind [`verify`](Self::verify); `path` is only for messages.
    fn verify_fingerprint(
        &self,
        path: &str,
        fingerprint: &[u8],
        sigs: &[Signature],
    ) -> Result<String, SigError> {
        if sigs.is_empty() {
            return Err(SigError::NoSignatures { path: path.into() });
        }
        let mut failed: Option<&str> = None;
        for sig in sigs {
            let Some(key) = self.lookup(&sig.name) else {
                continue;
            };
            let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.key);
            if pk.verify(fingerprint, &sig.bytes).is_ok() {
                return Ok(key.name.clone());
            }
            failed.get_or_insert(&key.name);
        }
        match failed {
            Some(key) => Err(SigError::Invalid {
                path: path.into(),
                key: key.into(),
            }),
            None => Err(SigError::NoTrustedSignature {
                path: path.into(),
                signed_by: sigs.iter().map(|s| s.name.clone()).collect(),
                trusted: self.keys.iter().map(|k| k.name.clone()).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const NIXOS_KEY: &str =
        "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    const SIG: &str = "cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==";
    const PATH: &str = "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin";
    const FINGERPRINT: &str = "1;/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin;sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0,/nix/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115,/nix/store/j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12,/nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n";

    fn nixos_keys() -> TrustedKeys {
        let mut k = TrustedKeys::default();
        k.add(PublicKey::parse(NIXOS_KEY).unwrap());
        k
    }

    fn real_narinfo() -> NarInfo {
        NarInfo::parse(
            crate::nix::narinfo::tests::REAL,
            "syd87l2rxw8cbsxmxl853h0r6pdwhwjr",
        )
        .unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        let s = Signature::parse(SIG).unwrap();
        assert_eq!(s.name, "cache.nixos.org-1");
        assert_eq!(s.to_string(), SIG);
        let k = PublicKey::parse(NIXOS_KEY).unwrap();
        assert_eq!(k.name, "cache.nixos.org-1");
        assert_eq!(k.to_string(), NIXOS_KEY);
        // Split at the first ':' only: the name may not contain one, the rest may not either.
        assert!(matches!(
            Signature::parse("a:b:c"),
            Err(SigError::WrongLength { .. })
        ));
    }

    #[test]
    fn parse_rejects() {
        let sig_b64 = &SIG[18..];
        let cases: Vec<(&str, Result<Signature, SigError>, SigError)> = vec![
            (
                "no colon",
                Signature::parse(sig_b64),
                SigError::NoColon {
                    what: "signature",
                    value: sig_b64.into(),
                },
            ),
            (
                "empty name",
                Signature::parse(&format!(":{sig_b64}")),
                SigError::EmptyName {
                    what: "signature",
                    value: format!(":{sig_b64}"),
                },
            ),
            (
                "bad base64",
                Signature::parse(&format!("k:{}!", &sig_b64[1..])),
                SigError::BadBase64 {
                    what: "signature",
                    value: format!("k:{}!", &sig_b64[1..]),
                },
            ),
            (
                "key as signature",
                Signature::parse(NIXOS_KEY),
                SigError::WrongLength {
                    what: "signature",
                    value: NIXOS_KEY.into(),
                    expected: 64,
                },
            ),
            (
                "no padding",
                Signature::parse(SIG.trim_end_matches('=')),
                SigError::WrongLength {
                    what: "signature",
                    value: SIG.trim_end_matches('=').into(),
                    expected: 64,
                },
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, Err(want), "{name}");
        }
        assert_eq!(
            PublicKey::parse(SIG),
            Err(SigError::WrongLength {
                what: "public key",
                value: SIG.into(),
                expected: 32,
            })
        );
        assert_eq!(
            PublicKey::parse("k").unwrap_err().to_string(),
            "public key \"k\": expected <key name>:<base64>"
        );
    }

    #[test]
    fn flakehub_defaults_are_the_eight_keys() {
        let keys = TrustedKeys::flakehub_defaults();
        let names: Vec<&str> = keys.keys.iter().map(|k| k.name.as_str()).collect();
        let want: Vec<String> = (3..=10)
            .map(|i| format!("cache.flakehub.com-{i}"))
            .collect();
        assert_eq!(names, want);
        for (k, text) in keys.keys.iter().zip(FLAKEHUB_KEYS) {
            assert_eq!(k.to_string(), text);
        }
    }

    #[test]
    fn real_narinfo_verifies() {
        let info = real_narinfo();
        assert_eq!(info.fingerprint(), FINGERPRINT);
        assert_eq!(nixos_keys().verify(&info), Ok("cache.nixos.org-1".into()));
        // An extra untrusted or unrelated signature does not change that.
        let mut keys = TrustedKeys::flakehub_defaults();
        keys.add(PublicKey::parse(NIXOS_KEY).unwrap());
        assert_eq!(keys.verify(&info), Ok("cache.nixos.org-1".into()));
    }

    #[test]
    fn any_changed_fingerprint_byte_fails() {
        let sigs = [Signature::parse(SIG).unwrap()];
        let keys = nixos_keys();
        let good = FINGERPRINT.as_bytes();
        assert!(keys.verify_fingerprint(PATH, good, &sigs).is_ok());
        for i in 0..good.len() {
            let mut bad = good.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(
                keys.verify_fingerprint(PATH, &bad, &sigs),
                Err(SigError::Invalid {
                    path: PATH.into(),
                    key: "cache.nixos.org-1".into()
                }),
                "byte {i} changed"
            );
        }
    }

    #[test]
    fn any_changed_field_fails() {
        use crate::nix::store_path::StorePath;
        // Replace one hash character of a store path ('0' <-> '1').
        fn tweak(p: &StorePath) -> StorePath {
            let mut b = p.base_name().to_string();
            let c = if b.starts_with('0') { "1" } else { "0" };
            b.replace_range(0..1, c);
            StorePath::from_base_name(&b).unwrap()
        }
        type Mutation = Box<dyn Fn(&mut NarInfo)>;
        let mut cases: Vec<(String, Mutation)> = vec![
            (
                "store path".into(),
                Box::new(|i| i.store_path = tweak(&i.store_path)),
            ),
            ("nar hash".into(), Box::new(|i| i.nar_hash.0[31] ^= 1)),
            ("nar size".into(), Box::new(|i| i.nar_size += 1)),
            (
                "dropped reference".into(),
                Box::new(|i| {
                    i.references.pop();
                }),
            ),
        ];
        for n in 0..4 {
            cases.push((
                format!("reference {n}"),
                Box::new(move |i| i.references[n] = tweak(&i.references[n])),
            ));
        }
        let keys = nixos_keys();
        for (name, mutate) in cases {
            let mut info = real_narinfo();
            mutate(&mut info);
            assert!(
                matches!(keys.verify(&info), Err(SigError::Invalid { ref key, .. }) if key == "cache.nixos.org-1"),
                "{name}: {:?}",
                keys.verify(&info)
            );
        }
    }

    #[test]
    fn verify_errors() {
        let info = real_narinfo();
        let mut unsigned = info.clone();
        unsigned.sigs.clear();
        assert_eq!(
            nixos_keys().verify(&unsigned).unwrap_err().to_string(),
            format!(
                "{PATH} is not signed (its narinfo has no Sig: line); a binary cache must sign \
                 what it serves"
            )
        );

        let mut two = TrustedKeys::default();
        two.add(PublicKey::parse(FLAKEHUB_KEYS[0]).unwrap());
        two.add(PublicKey::parse(FLAKEHUB_KEYS[1]).unwrap());
        let err = two.verify(&info).unwrap_err();
        assert_eq!(
            err,
            SigError::NoTrustedSignature {
                path: PATH.into(),
                signed_by: vec!["cache.nixos.org-1".into()],
                trusted: vec!["cache.flakehub.com-3".into(), "cache.flakehub.com-4".into()],
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{PATH} is not signed by a trusted key (signed by: cache.nixos.org-1; \
                 trusted: cache.flakehub.com-3, cache.flakehub.com-4); \
                 add the cache's public key with --trusted-key if you trust it"
            )
        );
        let err = TrustedKeys::default().verify(&info).unwrap_err();
        assert!(err.to_string().contains("trusted: none"), "{err}");

        // A key trusted under the signer's name but with other key bytes.
        let mut wrong = TrustedKeys::default();
        let mut k = PublicKey::parse(FLAKEHUB_KEYS[0]).unwrap();
        k.name = "cache.nixos.org-1".into();
        wrong.add(k);
        wrong.add(PublicKey::parse(NIXOS_KEY).unwrap()); // second definition: ignored
        let err = wrong.verify(&info).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{PATH}: the signature by trusted key cache.nixos.org-1 does not verify \
                 (the narinfo was altered or the signature is corrupt)"
            )
        );
        let e: crate::error::Error = err.into();
        assert_eq!(e.exit, crate::error::Exit::Verification);
    }
}
