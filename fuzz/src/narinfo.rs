//! `narinfo`: `NarInfo::parse` on arbitrary text. An accepted narinfo must
//! print (`Display`) as text that parses back to the same value, and its
//! fingerprint must name its store path; rejections must say "narinfo: ".

use crate::nix::narinfo::{NarInfo, NarInfoError};
use crate::nix::narinfo::signature::TrustedKeys;
use crate::nix::store_path::StorePath;

/// The hash part asked for first; a narinfo for another path is parsed
/// again with its own hash part, so the fuzzer need not guess it.
pub const HASH_PART: &str = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr";

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let info = match NarInfo::parse(text, HASH_PART) {
        Ok(info) => info,
        Err(NarInfoError::WrongStorePath { value, .. }) => {
            let path = StorePath::parse(&value).expect("WrongStorePath names a valid store path");
            NarInfo::parse(text, path.hash_part())
                .expect("a narinfo refused only for its hash part parses with that hash part")
        }
        Err(e) => {
            assert!(e.to_string().starts_with("narinfo: "), "{e}");
            return;
        }
    };
    assert!(info.nar_size > 0);
    assert!(!info.url.is_empty());
    let hash_part = info.store_path.hash_part().to_string();
    let shown = info.to_string();
    let again = NarInfo::parse(&shown, &hash_part)
        .unwrap_or_else(|e| panic!("printed narinfo does not parse: {e}\n{shown}"));
    assert_eq!(again, info, "printed narinfo parses to another value");
    assert_eq!(again.to_string(), shown);
    let fingerprint = info.fingerprint();
    assert!(fingerprint.starts_with(&format!("1;{};sha256:", info.store_path.to_absolute())));
    // Signature checking must not panic on anything the parser accepts.
    let _ = TrustedKeys::flakehub_defaults().verify(&info);
}

/// Seed inputs (examples/seeds.rs): narinfo.rs's unit-test vectors.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    const REAL: &str = "\
StorePath: /nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin
URL: nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz
Compression: xz
FileHash: sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56
FileSize: 68852
NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0
NarSize: 196040
References: 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0 6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115 j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12 yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n
Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv
Sig: cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==
";
    let minimal = |extra: &str| {
        format!(
            "StorePath: /nix/store/{HASH_PART}-x\nURL: nar/x.nar\nNarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\nNarSize: 120\n{extra}"
        )
    };
    let sri = minimal(&format!(
        "References: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b {HASH_PART}-x 00000000000000000000000000000000-a\n"
    ))
    .replace(
        "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
        "sha256-QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqw=",
    );
    let hex = minimal("Compression: zstd\nDeriver: unknown-deriver\n").replace(
        "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
        "sha256:407bcd9b608b7a78f9885930c2ce1fcafae0977d31ccd43fc1e998cb475a9aac",
    );
    vec![
        ("real", REAL.into()),
        ("minimal", minimal("").into_bytes()),
        ("sri-refs", sri.into_bytes()),
        ("hex-zstd", hex.into_bytes()),
        (
            "fields",
            minimal("Compression: \nFileHash: md5:x\nFileSize: 1\nCA: fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\nSystem: x86_64-linux\n")
                .into_bytes(),
        ),
        ("crlf", REAL.replace('\n', "\r\n").into_bytes()),
    ]
}
