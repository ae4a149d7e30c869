//! `.narinfo` files (docs/formats.md, "Narinfo"), parsed strictly.
//!
//! Grammar (Nix `NarInfo::NarInfo`): a sequence of lines `Key: value\n`.
//! The key is everything before the first `:`, the separator is exactly
//! `": "`, every line (the last one too) ends in `\n`, and `\r` is not
//! allowed anywhere. Unknown keys (e.g. the historical `System`) are ignored.
//!
//! | field         | required | format                                                  |
//! |---------------|----------|---------------------------------------------------------|
//! | `StorePath`   | yes      | full store path; must carry the requested hash part     |
//! | `URL`         | yes      | non-empty, relative to the cache URL (opaque here)      |
//! | `Compression` | no       | absent/empty = bzip2; see [`Compression`]               |
//! | `FileHash`    | no       | `sha256:…` of the file at URL (Nix never checks it)     |
//! | `FileSize`    | no       | decimal u64                                             |
//! | `NarHash`     | yes      | `sha256:` + nix32/hex/base64, or SRI                    |
//! | `NarSize`     | yes      | decimal u64, not 0                                      |
//! | `References`  | no       | space-separated base names, may be empty, may hold self |
//! | `Deriver`     | no       | base name; `unknown-deriver` = none                     |
//! | `Sig`         | 0..n     | `<key name>:<base64>`, repeated                         |
//! | `CA`          | no       | `text:…` or `fixed:…`                                   |
//!
//! `Compression` and `References` may be absent, as in narinfos of other
//! caches (harmonia, old caches): Nix reads them as bzip2 and as no
//! references, and so does fh-lite. Every field but `Sig` may appear at most once. The fingerprint that the
//! signatures cover is formats.md "Signatures": `1;<path>;sha256:<nix32>;<size>;<refs>` with the
//! references as full paths, sorted and deduplicated. The caller bounds the
//! text's length before parsing (it comes from the network).

pub mod signature;

use std::fmt;

use super::hash::{HashError, Sha256};
use super::store_path::{StorePath, StorePathError};
use signature::{SigError, Signature};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
    Bzip2,
    /// A value Nix knows (br, gzip, lz4, lzip, …) that fh-lite cannot decode.
    Unsupported(String),
}

/// Values Nix accepts in `Compression:` that fh-lite has no decoder for.
const NIX_ONLY_COMPRESSIONS: [&str; 9] = [
    "br", "compress", "grzip", "gzip", "lrzip", "lz4", "lzip", "lzma", "lzop",
];

impl Compression {
    /// The `Compression:` value; `None` for a value Nix does not know.
    pub fn parse(s: &str) -> Option<Compression> {
        Some(match s {
            "none" => Compression::None,
            "xz" => Compression::Xz,
            "zstd" => Compression::Zstd,
            "bzip2" => Compression::Bzip2,
            other if NIX_ONLY_COMPRESSIONS.contains(&other) => {
                Compression::Unsupported(other.to_string())
            }
            _ => return None,
        })
    }
    pub fn as_str(&self) -> &str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Unsupported(s) => s,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    pub url: String,
    pub compression: Compression,
    pub file_hash: Option<Sha256>,
    pub file_size: Option<u64>,
    pub nar_hash: Sha256,
    pub nar_size: u64,
    /// Full store paths, in file order (sort for the fingerprint).
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    pub sigs: Vec<Signature>,
    pub ca: Option<String>,
}

/// One variant per rule. `line` numbers count from 1.
#[derive(Debug, PartialEq, Eq)]
pub enum NarInfoError {
    /// The text does not end in `\n` (the last line is cut off).
    NoFinalNewline { line: usize, text: String },
    /// A `\r` somewhere (CRLF line endings).
    CarriageReturn { line: usize, text: String },
    /// A line without `:` (this includes a blank line at the end).
    NoColon { line: usize, text: String },
    /// The `:` is not followed by a space.
    BadSeparator { line: usize, text: String },
    /// A single-valued field appears a second time.
    Duplicate { field: &'static str, value: String },
    /// A required field is absent.
    Missing { field: &'static str },
    /// `URL:` with an empty value.
    EmptyUrl,
    /// `StorePath:` is not a valid store path.
    BadStorePath { value: String, err: StorePathError },
    /// `StorePath:` does not have the hash part that was asked for.
    WrongStorePath {
        expected_hash_part: String,
        value: String,
    },
    /// A `References:` entry is not a valid base name (`index` from 0).
    BadReference {
        index: usize,
        value: String,
        err: StorePathError,
    },
    /// `Deriver:` is not a valid base name.
    BadDeriver { value: String, err: StorePathError },
    /// `NarHash:` or `FileHash:` does not parse.
    BadHash { field: &'static str, err: HashError },
    /// `NarSize:` or `FileSize:` is not a decimal u64.
    BadNumber { field: &'static str, value: String },
    /// `NarSize: 0` (Nix: "NarSize missing or zero").
    ZeroNarSize,
    /// A `Compression:` value Nix does not know either.
    UnknownCompression { value: String },
    /// A `Sig:` line does not parse (`index` among the Sig lines, from 0).
    BadSig { index: usize, err: SigError },
    /// `CA:` is neither `text:…` nor `fixed:…`.
    BadCa { value: String },
}

impl fmt::Display for NarInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use NarInfoError as E;
        f.write_str("narinfo: ")?;
        match self {
            E::NoFinalNewline { line, text } => {
                write!(f, "line {line} {text:?} does not end in a newline")
            }
            E::CarriageReturn { line, text } => {
                write!(f, "line {line} {text:?} contains a carriage return")
            }
            E::NoColon { line, text } => write!(f, "line {line} {text:?} has no ':'"),
            E::BadSeparator { line, text } => {
                write!(
                    f,
                    "line {line} {text:?}: the ':' is not followed by a space"
                )
            }
            E::Duplicate { field, value } => {
                write!(f, "field {field} appears twice (second value {value:?})")
            }
            E::Missing { field } => write!(f, "required field {field} is missing"),
            E::EmptyUrl => write!(f, "field URL is empty"),
            E::BadStorePath { value, err } => write!(f, "field StorePath {value:?}: {err}"),
            E::WrongStorePath {
                expected_hash_part,
                value,
            } => write!(
                f,
                "field StorePath {value:?} does not have the requested hash {expected_hash_part}"
            ),
            E::BadReference { index, value, err } => {
                write!(f, "field References: entry #{index} {value:?}: {err}")
            }
            E::BadDeriver { value, err } => write!(f, "field Deriver {value:?}: {err}"),
            E::BadHash { field, err } => write!(f, "field {field}: {err}"),
            E::BadNumber { field, value } => {
                write!(f, "field {field} {value:?} is not a decimal number")
            }
            E::ZeroNarSize => write!(f, "field NarSize \"0\" must not be zero"),
            E::UnknownCompression { value } => write!(
                f,
                "field Compression {value:?} is not a compression Nix knows"
            ),
            E::BadSig { index, err } => write!(f, "field Sig #{index}: {err}"),
            E::BadCa { value } => write!(
                f,
                "field CA {value:?} is not a content address (text:… or fixed:…)"
            ),
        }
    }
}

/// Set a single-valued field, refusing a second occurrence.
fn once<T>(
    slot: &mut Option<T>,
    field: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, NarInfoError>,
) -> Result<(), NarInfoError> {
    if slot.is_some() {
        return Err(NarInfoError::Duplicate {
            field,
            value: value.to_string(),
        });
    }
    *slot = Some(parse(value)?);
    Ok(())
}

/// Decimal u64, digits only (no sign, no spaces).
fn number(field: &'static str, value: &str) -> Result<u64, NarInfoError> {
    let bad = || NarInfoError::BadNumber {
        field,
        value: value.to_string(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

impl NarInfo {
    /// Strict parse. `expected_hash_part`: the StorePath must carry it.
    pub fn parse(text: &str, expected_hash_part: &str) -> Result<NarInfo, NarInfoError> {
        use NarInfoError as E;
        let mut store_path = None;
        let mut url = None;
        let mut compression: Option<Compression> = None;
        let mut file_hash: Option<Option<Sha256>> = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references: Option<Vec<StorePath>> = None;
        let mut deriver: Option<Option<StorePath>> = None;
        let mut sigs = Vec::new();
        let mut ca = None;

        let mut rest = text;
        let mut line_no = 0;
        while !rest.is_empty() {
            line_no += 1;
            let Some((line, after)) = rest.split_once('\n') else {
                return Err(E::NoFinalNewline {
                    line: line_no,
                    text: rest.to_string(),
                });
            };
            rest = after;
            if line.contains('\r') {
                return Err(E::CarriageReturn {
                    line: line_no,
                    text: line.to_string(),
                });
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(E::NoColon {
                    line: line_no,
                    text: line.to_string(),
                });
            };
            let Some(value) = value.strip_prefix(' ') else {
                return Err(E::BadSeparator {
                    line: line_no,
                    text: line.to_string(),
                });
            };
            match key {
                "StorePath" => once(&mut store_path, "StorePath", value, |v| {
                    StorePath::parse(v).map_err(|err| E::BadStorePath {
                        value: v.to_string(),
                        err,
                    })
                })?,
                "URL" => once(&mut url, "URL", value, |v| {
                    if v.is_empty() {
                        Err(E::EmptyUrl)
                    } else {
                        Ok(v.to_string())
                    }
                })?,
                // Nix treats a missing or empty Compression as bzip2 (the
                // default of the oldest caches), so fh-lite does too (formats.md "Narinfo").
                "Compression" => once(&mut compression, "Compression", value, |v| {
                    if v.is_empty() {
                        return Ok(Compression::Bzip2);
                    }
                    Compression::parse(v).ok_or_else(|| E::UnknownCompression {
                        value: v.to_string(),
                    })
                })?,
                "FileHash" => once(&mut file_hash, "FileHash", value, |v| {
                    match Sha256::parse(v) {
                        Ok(h) => Ok(Some(h)),
                        // Nix accepts any algorithm here and never checks it
                        // (formats.md "Narinfo"); fh-lite only records sha256.
                        Err(HashError::UnsupportedAlgo(_)) => Ok(None),
                        Err(err) => Err(E::BadHash {
                            field: "FileHash",
                            err,
                        }),
                    }
                })?,
                "FileSize" => once(&mut file_size, "FileSize", value, |v| number("FileSize", v))?,
                "NarHash" => once(&mut nar_hash, "NarHash", value, |v| {
                    Sha256::parse(v).map_err(|err| E::BadHash {
                        field: "NarHash",
                        err,
                    })
                })?,
                "NarSize" => once(&mut nar_size, "NarSize", value, |v| {
                    match number("NarSize", v)? {
                        0 => Err(E::ZeroNarSize),
                        n => Ok(n),
                    }
                })?,
                // Nix splits on spaces and skips empty tokens.
                "References" => once(&mut references, "References", value, |v| {
                    v.split(' ')
                        .filter(|r| !r.is_empty())
                        .enumerate()
                        .map(|(index, r)| {
                            StorePath::from_base_name(r).map_err(|err| E::BadReference {
                                index,
                                value: r.to_string(),
                                err,
                            })
                        })
                        .collect()
                })?,
                "Deriver" => once(&mut deriver, "Deriver", value, |v| {
                    if v == "unknown-deriver" {
                        return Ok(None);
                    }
                    StorePath::from_base_name(v)
                        .map(Some)
                        .map_err(|err| E::BadDeriver {
                            value: v.to_string(),
                            err,
                        })
                })?,
                "Sig" => sigs.push(Signature::parse(value).map_err(|err| E::BadSig {
                    index: sigs.len(),
                    err,
                })?),
                "CA" => once(&mut ca, "CA", value, |v| {
                    if v.starts_with("text:") || v.starts_with("fixed:") {
                        Ok(v.to_string())
                    } else {
                        Err(E::BadCa {
                            value: v.to_string(),
                        })
                    }
                })?,
                _ => {} // unknown keys are ignored, as Nix does
            }
        }

        let store_path: StorePath = store_path.ok_or(E::Missing { field: "StorePath" })?;
        let url = url.ok_or(E::Missing { field: "URL" })?;
        let nar_hash = nar_hash.ok_or(E::Missing { field: "NarHash" })?;
        let nar_size = nar_size.ok_or(E::Missing { field: "NarSize" })?;
        if store_path.hash_part() != expected_hash_part {
            return Err(E::WrongStorePath {
                expected_hash_part: expected_hash_part.to_string(),
                value: store_path.to_absolute(),
            });
        }
        Ok(NarInfo {
            store_path,
            url,
            // See the Compression arm above: absent means bzip2.
            compression: compression.unwrap_or(Compression::Bzip2),
            file_hash: file_hash.flatten(),
            file_size,
            nar_hash,
            nar_size,
            references: references.unwrap_or_default(),
            deriver: deriver.flatten(),
            sigs,
            ca,
        })
    }

    /// `1;<path>;sha256:<nix32>;<size>;<sorted full refs, comma-joined>`
    pub fn fingerprint(&self) -> String {
        let mut refs: Vec<String> = self.references.iter().map(|r| r.to_absolute()).collect();
        refs.sort();
        refs.dedup();
        format!(
            "1;{};{};{};{}",
            self.store_path.to_absolute(),
            self.nar_hash.to_nix32_prefixed(),
            self.nar_size,
            refs.join(",")
        )
    }
}

/// Nix's writer order: StorePath, URL, Compression, FileHash?, FileSize?,
/// NarHash, NarSize, References, Deriver?, Sig*, CA?.
impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_path)?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {h}")?;
        }
        if let Some(n) = self.file_size {
            writeln!(f, "FileSize: {n}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash)?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        let refs: Vec<&str> = self.references.iter().map(|r| r.base_name()).collect();
        writeln!(f, "References: {}", refs.join(" "))?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {}", d.base_name())?;
        }
        for s in &self.sigs {
            writeln!(f, "Sig: {s}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real cache.nixos.org narinfo (formats.md "Narinfo").
    pub(crate) const REAL: &str = "\
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
    const HP: &str = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr";
    const SIG: &str = "cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==";

    /// The minimal valid narinfo; `extra` lines are appended.
    fn minimal(extra: &str) -> String {
        format!(
            "StorePath: /nix/store/{HP}-x\nURL: nar/x.nar\nNarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\nNarSize: 120\n{extra}"
        )
    }

    #[test]
    fn real_narinfo_parses() {
        let i = NarInfo::parse(REAL, HP).unwrap();
        assert_eq!(
            i.store_path.to_absolute(),
            "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin"
        );
        assert_eq!(
            i.url,
            "nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz"
        );
        assert_eq!(i.compression, Compression::Xz);
        assert_eq!(
            i.file_hash.unwrap().to_nix32_prefixed(),
            "sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56"
        );
        assert_eq!(i.file_size, Some(68852));
        assert_eq!(
            i.nar_hash.to_hex(),
            "407bcd9b608b7a78f9885930c2ce1fcafae0977d31ccd43fc1e998cb475a9aac"
        );
        assert_eq!(i.nar_size, 196040);
        let refs: Vec<&str> = i.references.iter().map(|r| r.name()).collect();
        assert_eq!(
            refs,
            [
                "curl-7.82.0",
                "glibc-2.34-115",
                "zlib-1.2.12",
                "openssl-1.1.1n"
            ]
        );
        assert_eq!(i.deriver.unwrap().name(), "curl-7.82.0.drv");
        assert_eq!(i.sigs.len(), 1);
        assert_eq!(i.sigs[0].name, "cache.nixos.org-1");
        assert_eq!(i.ca, None);
    }

    #[test]
    fn real_narinfo_round_trips() {
        let i = NarInfo::parse(REAL, HP).unwrap();
        assert_eq!(i.to_string(), REAL);
        assert_eq!(NarInfo::parse(&i.to_string(), HP), Ok(i));
    }

    /// Narinfos from caches other than Nix 2.8's writer, read as Nix reads
    /// them: no `References` line means no references
    /// (harmonia omits it for a leaf), no `Compression` line means bzip2
    /// (old caches). Neither field is in the signed fingerprint, so a
    /// signature stays valid without the `Compression` line; without
    /// `References` it is valid only for a path that has none.
    #[test]
    fn narinfos_of_other_caches_read_as_nix_reads_them() {
        use crate::nix::narinfo::signature::{PublicKey, TrustedKeys};
        let mut keys = TrustedKeys::default();
        keys.add(
            PublicKey::parse("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
                .unwrap(),
        );
        // No Compression line: bzip2, and the signature still verifies.
        let no_compression = REAL.replace("Compression: xz\n", "");
        let i = NarInfo::parse(&no_compression, HP).unwrap();
        assert_eq!(i.compression, Compression::Bzip2);
        assert!(keys.verify(&i).is_ok());
        assert!(keys.verify(&NarInfo::parse(REAL, HP).unwrap()).is_ok());
        // No References line: no references, the fingerprint of an empty
        // References line (so a leaf's signature verifies) ...
        let absent = NarInfo::parse(&minimal(""), HP).unwrap();
        let empty = NarInfo::parse(&minimal("References: \n"), HP).unwrap();
        assert!(absent.references.is_empty());
        assert_eq!(absent.fingerprint(), empty.fingerprint());
        assert!(
            absent.fingerprint().ends_with(";120;"),
            "{}",
            absent.fingerprint()
        );
        // ... and written back with the line Nix writes.
        assert!(absent.to_string().contains("\nReferences: \n"));
        // A path that has references cannot lose the line unnoticed: its
        // signature no longer matches.
        let no_refs = REAL
            .lines()
            .filter(|l| !l.starts_with("References: "))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        let i = NarInfo::parse(&no_refs, HP).unwrap();
        assert!(i.references.is_empty());
        assert!(keys.verify(&i).is_err());
        // Both absent at once, in another order: still one narinfo.
        let both = format!(
            "NarSize: 120\nStorePath: /nix/store/{HP}-x\nNarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\nURL: nar/x.nar.bz2\n"
        );
        let i = NarInfo::parse(&both, HP).unwrap();
        assert_eq!((i.compression, i.references.len()), (Compression::Bzip2, 0));
    }

    #[test]
    fn fingerprint_sorts_dedups_and_renders_nix32() {
        // References out of order, duplicated, with self; NarHash in SRI form.
        let text = minimal(&format!(
            "References: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b {HP}-x 00000000000000000000000000000000-a zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b\n"
        ))
        .replace(
            "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
            "sha256-QHvNm2CLenj5iFkwws4fyvrgl30xzNQ/wemYy0damqw=",
        );
        let i = NarInfo::parse(&text, HP).unwrap();
        assert_eq!(
            i.fingerprint(),
            format!(
                "1;/nix/store/{HP}-x;sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;120;\
                 /nix/store/00000000000000000000000000000000-a,/nix/store/{HP}-x,\
                 /nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b"
            )
        );
        let none = NarInfo::parse(&minimal(""), HP).unwrap();
        assert!(
            none.fingerprint().ends_with(";120;"),
            "{}",
            none.fingerprint()
        );
    }

    #[test]
    fn accepted_variants() {
        type Check = fn(&NarInfo) -> bool;
        let cases: &[(&str, String, Check)] = &[
            ("no Compression = bzip2", minimal(""), |i| {
                i.compression == Compression::Bzip2
            }),
            (
                "empty Compression = bzip2",
                minimal("Compression: \n"),
                |i| i.compression == Compression::Bzip2,
            ),
            ("none", minimal("Compression: none\n"), |i| {
                i.compression == Compression::None
            }),
            ("zstd", minimal("Compression: zstd\n"), |i| {
                i.compression == Compression::Zstd
            }),
            ("br unsupported", minimal("Compression: br\n"), |i| {
                i.compression == Compression::Unsupported("br".into())
            }),
            ("gzip unsupported", minimal("Compression: gzip\n"), |i| {
                i.compression == Compression::Unsupported("gzip".into())
            }),
            ("empty References", minimal("References: \n"), |i| {
                i.references.is_empty()
            }),
            (
                "self reference",
                minimal(&format!("References: {HP}-x\n")),
                |i| i.references[0] == i.store_path,
            ),
            (
                "unknown-deriver",
                minimal("Deriver: unknown-deriver\n"),
                |i| i.deriver.is_none(),
            ),
            (
                "unknown keys ignored",
                minimal("System: x86_64-linux\nFoo: bar\nFoo: baz\n"),
                |i| i.nar_size == 120,
            ),
            ("value with ': ' inside", minimal("Weird: a: b\n"), |i| {
                i.nar_size == 120
            }),
            (
                "two sigs",
                minimal(&format!("Sig: {SIG}\nSig: other-{SIG}\n")),
                |i| i.sigs.len() == 2 && i.sigs[1].name == "other-cache.nixos.org-1",
            ),
            (
                "CA fixed",
                minimal(
                    "CA: fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\n",
                ),
                |i| i.ca.as_deref().is_some_and(|c| c.starts_with("fixed:r:")),
            ),
            (
                "FileHash sha512 ignored",
                minimal("FileHash: sha512:abcd\n"),
                |i| i.file_hash.is_none(),
            ),
            (
                "hex NarHash",
                minimal("").replace(
                    "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
                    "sha256:407bcd9b608b7a78f9885930c2ce1fcafae0977d31ccd43fc1e998cb475a9aac",
                ),
                |i| {
                    i.nar_hash.to_nix32_prefixed()
                        == "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0"
                },
            ),
            (
                "fields in any order",
                format!(
                    "NarSize: 120\n{}",
                    minimal("").replace("NarSize: 120\n", "")
                ),
                |i| i.nar_size == 120,
            ),
        ];
        for (name, text, check) in cases {
            let i = NarInfo::parse(text, HP).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(check(&i), "{name}: {i:?}");
        }
    }

    #[test]
    fn display_writes_nix_order_and_empty_references() {
        let i = NarInfo::parse(&minimal("CA: text:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\nDeriver: unknown-deriver\n"), HP).unwrap();
        assert_eq!(
            i.to_string(),
            format!(
                "StorePath: /nix/store/{HP}-x\nURL: nar/x.nar\nCompression: bzip2\n\
                 NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\nNarSize: 120\n\
                 References: \nCA: text:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\n"
            )
        );
    }

    #[test]
    fn each_rule_has_its_error() {
        use NarInfoError as E;
        let hp2 = "0jqd0rlxzra1rs38rdxl43yh6rxchgc6";
        let bad_sp = format!("/nix/store/{HP}-x/bin");
        let cases: Vec<(&str, String, NarInfoError, &str)> = vec![
            (
                "no final newline",
                minimal("Foo: bar"),
                E::NoFinalNewline { line: 5, text: "Foo: bar".into() },
                "narinfo: line 5 \"Foo: bar\" does not end in a newline",
            ),
            (
                "crlf",
                minimal("").replace("NarSize: 120\n", "NarSize: 120\r\n"),
                E::CarriageReturn { line: 4, text: "NarSize: 120\r".into() },
                "narinfo: line 4 \"NarSize: 120\\r\" contains a carriage return",
            ),
            (
                "trailing blank line",
                minimal("\n"),
                E::NoColon { line: 5, text: "".into() },
                "narinfo: line 5 \"\" has no ':'",
            ),
            (
                "no colon",
                minimal("NarSize 120\n"),
                E::NoColon { line: 5, text: "NarSize 120".into() },
                "narinfo: line 5 \"NarSize 120\" has no ':'",
            ),
            (
                "no space after colon",
                minimal("Foo:bar\n"),
                E::BadSeparator { line: 5, text: "Foo:bar".into() },
                "narinfo: line 5 \"Foo:bar\": the ':' is not followed by a space",
            ),
            (
                "duplicate References",
                minimal("References: \nReferences: a\n"),
                E::Duplicate { field: "References", value: "a".into() },
                "narinfo: field References appears twice (second value \"a\")",
            ),
            (
                "duplicate CA",
                minimal("CA: text:a\nCA: text:b\n"),
                E::Duplicate { field: "CA", value: "text:b".into() },
                "narinfo: field CA appears twice (second value \"text:b\")",
            ),
            (
                "duplicate NarSize",
                minimal("NarSize: 121\n"),
                E::Duplicate { field: "NarSize", value: "121".into() },
                "narinfo: field NarSize appears twice (second value \"121\")",
            ),
            (
                "duplicate StorePath",
                minimal(&format!("StorePath: /nix/store/{HP}-y\n")),
                E::Duplicate { field: "StorePath", value: format!("/nix/store/{HP}-y") },
                "narinfo: field StorePath appears twice (second value \"/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-y\")",
            ),
            (
                "duplicate Compression",
                minimal("Compression: xz\nCompression: xz\n"),
                E::Duplicate { field: "Compression", value: "xz".into() },
                "narinfo: field Compression appears twice (second value \"xz\")",
            ),
            (
                "missing StorePath",
                minimal("").replace(&format!("StorePath: /nix/store/{HP}-x\n"), ""),
                E::Missing { field: "StorePath" },
                "narinfo: required field StorePath is missing",
            ),
            (
                "missing URL",
                minimal("").replace("URL: nar/x.nar\n", ""),
                E::Missing { field: "URL" },
                "narinfo: required field URL is missing",
            ),
            (
                "missing NarHash",
                minimal("").replace("NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\n", ""),
                E::Missing { field: "NarHash" },
                "narinfo: required field NarHash is missing",
            ),
            (
                "missing NarSize",
                minimal("").replace("NarSize: 120\n", ""),
                E::Missing { field: "NarSize" },
                "narinfo: required field NarSize is missing",
            ),
            ("empty text", String::new(), E::Missing { field: "StorePath" }, "narinfo: required field StorePath is missing"),
            (
                "empty URL",
                minimal("").replace("URL: nar/x.nar", "URL: "),
                E::EmptyUrl,
                "narinfo: field URL is empty",
            ),
            (
                "bad StorePath",
                minimal("").replace(&format!("/nix/store/{HP}-x"), &bad_sp),
                E::BadStorePath { value: bad_sp.clone(), err: StorePathError::Nested(bad_sp.clone()) },
                "narinfo: field StorePath \"/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-x/bin\": store path \"/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-x/bin\": points inside a store path, not at one",
            ),
            (
                "wrong hash part",
                minimal("").replace(HP, hp2),
                E::WrongStorePath { expected_hash_part: HP.into(), value: format!("/nix/store/{hp2}-x") },
                "narinfo: field StorePath \"/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-x\" does not have the requested hash syd87l2rxw8cbsxmxl853h0r6pdwhwjr",
            ),
            (
                "bad reference",
                minimal(&format!("References: {hp2}-a /nix/store/{hp2}-b\n")),
                E::BadReference { index: 1, value: format!("/nix/store/{hp2}-b"), err: StorePathError::Nested(format!("/nix/store/{hp2}-b")) },
                "narinfo: field References: entry #1 \"/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-b\": store path \"/nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-b\": points inside a store path, not at one",
            ),
            (
                "bad deriver",
                minimal("Deriver: foo.drv\n"),
                E::BadDeriver { value: "foo.drv".into(), err: StorePathError::TooShort("foo.drv".into()) },
                "narinfo: field Deriver \"foo.drv\": store path \"foo.drv\": too short for <32-char hash>-<name>",
            ),
            (
                "bad NarHash",
                minimal("").replace("sha256:1b4s", "sha256:eb4s"),
                E::BadHash { field: "NarHash", err: HashError::Malformed("sha256:eb4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0".into()) },
                "narinfo: field NarHash: hash: malformed sha256 hash \"sha256:eb4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0\" (expected sha256:<nix32, hex or base64> or sha256-<base64>)",
            ),
            (
                "NarHash other algo",
                minimal("").replace("sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0", "sha1:abc"),
                E::BadHash { field: "NarHash", err: HashError::UnsupportedAlgo("sha1:abc".into()) },
                "narinfo: field NarHash: hash: unsupported algorithm in \"sha1:abc\" (only sha256 is supported)",
            ),
            (
                "bad FileHash",
                minimal("FileHash: 05ra3y\n"),
                E::BadHash { field: "FileHash", err: HashError::Malformed("05ra3y".into()) },
                "narinfo: field FileHash: hash: malformed sha256 hash \"05ra3y\" (expected sha256:<nix32, hex or base64> or sha256-<base64>)",
            ),
            (
                "bad NarSize",
                minimal("").replace("NarSize: 120", "NarSize: 12x"),
                E::BadNumber { field: "NarSize", value: "12x".into() },
                "narinfo: field NarSize \"12x\" is not a decimal number",
            ),
            (
                "negative FileSize",
                minimal("FileSize: -1\n"),
                E::BadNumber { field: "FileSize", value: "-1".into() },
                "narinfo: field FileSize \"-1\" is not a decimal number",
            ),
            (
                "overflowing FileSize",
                minimal("FileSize: 18446744073709551616\n"),
                E::BadNumber { field: "FileSize", value: "18446744073709551616".into() },
                "narinfo: field FileSize \"18446744073709551616\" is not a decimal number",
            ),
            (
                "zero NarSize",
                minimal("").replace("NarSize: 120", "NarSize: 0"),
                E::ZeroNarSize,
                "narinfo: field NarSize \"0\" must not be zero",
            ),
            (
                "unknown compression",
                minimal("Compression: rar\n"),
                E::UnknownCompression { value: "rar".into() },
                "narinfo: field Compression \"rar\" is not a compression Nix knows",
            ),
            (
                "bad sig",
                minimal(&format!("Sig: {SIG}\nSig: nocolon\n")),
                E::BadSig { index: 1, err: SigError::NoColon { what: "signature", value: "nocolon".into() } },
                "narinfo: field Sig #1: signature \"nocolon\": expected <key name>:<base64>",
            ),
            (
                "bad CA",
                minimal("CA: sha256:abc\n"),
                E::BadCa { value: "sha256:abc".into() },
                "narinfo: field CA \"sha256:abc\" is not a content address (text:… or fixed:…)",
            ),
        ];
        for (name, text, want, msg) in cases {
            let got = NarInfo::parse(&text, HP);
            assert_eq!(got.as_ref().err(), Some(&want), "{name}");
            assert_eq!(want.to_string(), msg, "{name}");
        }
        let e: crate::error::Error = E::ZeroNarSize.into();
        assert_eq!(e.exit, crate::error::Exit::Verification);
    }
}
