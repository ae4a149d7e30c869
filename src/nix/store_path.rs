//! Store paths: `/nix/store/<32 nix32 chars>-<name>` (docs/formats.md, "Hashes, nix32 and store paths").
//!
//! Validation follows Nix (`StorePath::StorePath`, `checkName`,
//! `parseStorePath`):
//!
//! * base name = `<hash>-<name>`, at least 33 bytes; the first 32 are nix32
//!   characters (`[0-9a-z]` without `e o u t`), byte 32 is `-`;
//! * name: 1 ..= 211 bytes of `[0-9A-Za-z+\-._?=]`, not `.` or `..`, not
//!   starting with `.-` or `..-`;
//! * a full path is exactly `/nix/store/<base name>`: nothing below it, no
//!   trailing slash, no `//` or `.` components (the store dir is fixed; a
//!   cache for another store dir is refused elsewhere).

use std::fmt;

pub const STORE_DIR: &str = "/nix/store";

/// Longest name Nix accepts (`MaxPathLen`).
pub const MAX_NAME_LEN: usize = 211;

/// A validated store path. Ordered by base name (= by full path).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    /// `<hash>-<name>`
    base: String,
}

/// Each variant carries the offending path (or base name) as given.
#[derive(Debug, PartialEq, Eq)]
pub enum StorePathError {
    /// Does not start with `/nix/store/`.
    NotInStore(String),
    /// Something below a store path (`/nix/store/<base>/bin`).
    Nested(String),
    /// Ends with `/`.
    TrailingSlash(String),
    /// Base name shorter than 33 bytes.
    TooShort(String),
    /// A hash character outside the nix32 alphabet.
    BadHashChar(String),
    /// Byte 32 of the base name is not `-`.
    MissingDash(String),
    /// Empty, `.`/`..`, `.-`/`..-` prefix, or a forbidden character.
    BadName(String),
    /// Name longer than 211 bytes.
    NameTooLong(String),
}

impl fmt::Display for StorePathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, what) = match self {
            StorePathError::NotInStore(p) => (p, "not directly in /nix/store".to_string()),
            StorePathError::Nested(p) => (p, "points inside a store path, not at one".into()),
            StorePathError::TrailingSlash(p) => (p, "has a trailing slash".into()),
            StorePathError::TooShort(p) => (p, "too short for <32-char hash>-<name>".into()),
            StorePathError::BadHashChar(p) => (
                p,
                "hash part has a character outside the nix32 alphabet".into(),
            ),
            StorePathError::MissingDash(p) => (p, "no '-' after the 32-character hash".into()),
            StorePathError::BadName(p) => (
                p,
                "invalid name (allowed: 0-9 A-Z a-z + - . _ ? =, not '.', '..', '.-…', '..-…')"
                    .into(),
            ),
            StorePathError::NameTooLong(p) => (p, format!("name longer than {MAX_NAME_LEN} bytes")),
        };
        write!(f, "store path {p:?}: {what}")
    }
}

fn is_hash_char(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'a'..=b'z') && !matches!(c, b'e' | b'o' | b'u' | b't')
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'_' | b'?' | b'=')
}

impl StorePath {
    /// Parse a full path `/nix/store/<hash>-<name>` (nothing below it).
    pub fn parse(full: &str) -> Result<StorePath, StorePathError> {
        let Some(rest) = full
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Err(StorePathError::NotInStore(full.to_string()));
        };
        match rest.find('/') {
            None => {}
            Some(i) if i + 1 == rest.len() => {
                return Err(StorePathError::TrailingSlash(full.to_string()))
            }
            Some(_) => return Err(StorePathError::Nested(full.to_string())),
        }
        Self::check(rest).map_err(|e| e(full.to_string()))?;
        Ok(StorePath {
            base: rest.to_string(),
        })
    }

    /// Parse a base name `<hash>-<name>` (as in narinfo References).
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        if base.contains('/') {
            return Err(StorePathError::Nested(base.to_string()));
        }
        Self::check(base).map_err(|e| e(base.to_string()))?;
        Ok(StorePath {
            base: base.to_string(),
        })
    }

    /// Validate a base name; on error, the variant constructor to apply.
    fn check(base: &str) -> Result<(), fn(String) -> StorePathError> {
        let b = base.as_bytes();
        if b.len() < 33 {
            return Err(StorePathError::TooShort);
        }
        if !b[..32].iter().all(|&c| is_hash_char(c)) {
            return Err(StorePathError::BadHashChar);
        }
        if b[32] != b'-' {
            return Err(StorePathError::MissingDash);
        }
        let name = &b[33..];
        if name.len() > MAX_NAME_LEN {
            return Err(StorePathError::NameTooLong);
        }
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.starts_with(b".-")
            || name.starts_with(b"..-")
            || !name.iter().all(|&c| is_name_char(c))
        {
            return Err(StorePathError::BadName);
        }
        Ok(())
    }

    /// The 32-character nix32 hash part (the narinfo file name).
    pub fn hash_part(&self) -> &str {
        &self.base[..32]
    }
    #[cfg(test)]
    pub fn name(&self) -> &str {
        &self.base[33..]
    }
    pub fn base_name(&self) -> &str {
        &self.base
    }
    /// `/nix/store/<base>`
    pub fn to_absolute(&self) -> String {
        format!("{STORE_DIR}/{}", self.base)
    }
}

impl std::fmt::Display for StorePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl std::fmt::Debug for StorePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "syd87l2rxw8cbsxmxl853h0r6pdwhwjr";

    #[test]
    fn accepts() {
        let long = "a".repeat(MAX_NAME_LEN);
        let cases: &[(&str, String, &str)] = &[
            ("plain", format!("{H}-curl-7.82.0-bin"), "curl-7.82.0-bin"),
            ("one char", format!("{H}-x"), "x"),
            ("all allowed chars", format!("{H}-aZ09+-._?="), "aZ09+-._?="),
            ("dot prefix", format!("{H}-.foo"), ".foo"),
            ("three dots", format!("{H}-..."), "..."),
            ("max length", format!("{H}-{long}"), &long),
        ];
        for (name, base, want_name) in cases {
            let full = format!("/nix/store/{base}");
            let p = StorePath::parse(&full).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.hash_part(), H, "{name}");
            assert_eq!(p.name(), *want_name, "{name}");
            assert_eq!(p.base_name(), base, "{name}");
            assert_eq!(p.to_absolute(), full, "{name}");
            assert_eq!(p.to_string(), full, "{name}");
            assert_eq!(StorePath::from_base_name(base), Ok(p), "{name}");
        }
    }

    #[test]
    fn rejects_full_paths() {
        type E = fn(String) -> StorePathError;
        let cases: &[(&str, String, E)] = &[
            (
                "relative",
                format!("nix/store/{H}-a"),
                StorePathError::NotInStore,
            ),
            (
                "other store",
                format!("/gnu/store/{H}-a"),
                StorePathError::NotInStore,
            ),
            (
                "store dir prefix",
                format!("/nix/storefoo/{H}-a"),
                StorePathError::NotInStore,
            ),
            ("base only", format!("{H}-a"), StorePathError::NotInStore),
            (
                "nested",
                format!("/nix/store/{H}-a/bin"),
                StorePathError::Nested,
            ),
            (
                "double slash",
                format!("/nix/store//{H}-a"),
                StorePathError::Nested,
            ),
            (
                "trailing slash",
                format!("/nix/store/{H}-a/"),
                StorePathError::TrailingSlash,
            ),
            (
                "store dir",
                "/nix/store/".to_string(),
                StorePathError::TooShort,
            ),
            (
                "too short",
                format!("/nix/store/{}", &H[..20]),
                StorePathError::TooShort,
            ),
            (
                "no name",
                format!("/nix/store/{H}"),
                StorePathError::TooShort,
            ),
            (
                "empty name",
                format!("/nix/store/{H}-"),
                StorePathError::BadName,
            ),
            (
                "hash has e",
                format!("/nix/store/e{}-a", &H[1..]),
                StorePathError::BadHashChar,
            ),
            (
                "hash upper case",
                format!("/nix/store/S{}-a", &H[1..]),
                StorePathError::BadHashChar,
            ),
            (
                "no dash",
                format!("/nix/store/{H}_a"),
                StorePathError::MissingDash,
            ),
            (
                "name dot",
                format!("/nix/store/{H}-."),
                StorePathError::BadName,
            ),
            (
                "name dotdot",
                format!("/nix/store/{H}-.."),
                StorePathError::BadName,
            ),
            (
                "name .-",
                format!("/nix/store/{H}-.-x"),
                StorePathError::BadName,
            ),
            (
                "name ..-",
                format!("/nix/store/{H}-..-x"),
                StorePathError::BadName,
            ),
            (
                "name space",
                format!("/nix/store/{H}-a b"),
                StorePathError::BadName,
            ),
            (
                "name non-ascii",
                format!("/nix/store/{H}-é"),
                StorePathError::BadName,
            ),
            (
                "name too long",
                format!("/nix/store/{H}-{}", "a".repeat(MAX_NAME_LEN + 1)),
                StorePathError::NameTooLong,
            ),
        ];
        for (name, full, want) in cases {
            assert_eq!(StorePath::parse(full), Err(want(full.clone())), "{name}");
        }
    }

    #[test]
    fn rejects_base_names() {
        let cases: &[(&str, String, StorePathError)] = &[
            (
                "with slash",
                format!("{H}-a/b"),
                StorePathError::Nested(format!("{H}-a/b")),
            ),
            (
                "full path",
                format!("/nix/store/{H}-a"),
                StorePathError::Nested(format!("/nix/store/{H}-a")),
            ),
            (
                "too short",
                "abc".into(),
                StorePathError::TooShort("abc".into()),
            ),
            (
                "bad name",
                format!("{H}-a:b"),
                StorePathError::BadName(format!("{H}-a:b")),
            ),
        ];
        for (name, base, want) in cases {
            assert_eq!(
                StorePath::from_base_name(base).as_ref(),
                Err(want),
                "{name}"
            );
        }
    }

    #[test]
    fn ordering_is_by_full_path() {
        let a = StorePath::from_base_name("0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl").unwrap();
        let b = StorePath::from_base_name("6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc").unwrap();
        assert!(a < b);
        assert!(a.to_absolute() < b.to_absolute());
    }

    #[test]
    fn messages() {
        let e = StorePath::parse("/nix/store/x/y").unwrap_err();
        assert_eq!(
            e.to_string(),
            "store path \"/nix/store/x/y\": points inside a store path, not at one"
        );
        let e: crate::error::Error = StorePathError::TooShort("/nix/store/x".into()).into();
        assert_eq!(e.exit, crate::error::Exit::Verification);
        assert_eq!(
            e.message,
            "store path \"/nix/store/x\": too short for <32-char hash>-<name>"
        );
    }
}
