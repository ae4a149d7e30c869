//! ed25519 narinfo signatures and keys (§2). INTERFACE STUB.

use super::narinfo::NarInfo;

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

#[derive(Debug, PartialEq, Eq)]
pub enum SigError {
    Todo,
}

/// The keys a narinfo must be signed by (first definition of a name wins).
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    pub keys: Vec<PublicKey>,
}

impl Signature {
    pub fn parse(s: &str) -> Result<Signature, SigError> {
        todo!("{s}")
    }
}

impl PublicKey {
    pub fn parse(s: &str) -> Result<PublicKey, SigError> {
        todo!("{s}")
    }
}

impl TrustedKeys {
    /// The eight cache.flakehub.com-3 … -10 keys.
    pub fn flakehub_defaults() -> TrustedKeys {
        todo!()
    }
    pub fn add(&mut self, key: PublicKey) {
        self.keys.push(key)
    }
    /// Ok(name of the key that verified) when ≥ 1 signature verifies.
    pub fn verify(&self, info: &NarInfo) -> Result<String, SigError> {
        todo!("{info:?}")
    }
}
