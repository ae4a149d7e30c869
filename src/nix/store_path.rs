//! Store paths: `/nix/store/<32 nix32 chars>-<name>` (§3). INTERFACE STUB.

pub const STORE_DIR: &str = "/nix/store";

/// A validated store path. Ordered by base name (= by full path).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    /// `<hash>-<name>`
    base: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StorePathError {
    NotInStore(String),
    Nested(String),
    TooShort(String),
    BadHashChar(String),
    MissingDash(String),
    BadName(String),
    NameTooLong(String),
}

impl StorePath {
    /// Parse a full path `/nix/store/<hash>-<name>` (nothing below it).
    pub fn parse(full: &str) -> Result<StorePath, StorePathError> {
        todo!("{full}")
    }
    /// Parse a base name `<hash>-<name>` (as in narinfo References).
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        todo!("{base}")
    }
    /// The 32-character nix32 hash part (the narinfo file name).
    pub fn hash_part(&self) -> &str {
        &self.base[..32]
    }
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
