//! SHA-256 digests of passwords.
//!
//! The table stores a password only as its digest. The item's key is derived from the digest
//! (its first half, hex), and the full digest is stored beside it so the guard can compare the
//! two in constant time after finding the item by key.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Digests some bytes.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Rebuilds a digest from its 32 raw bytes (as read from the table).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes, as stored in the table.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The table key of the password with this digest: `pw#` and the first 16 bytes in hex.
    pub fn table_key(&self) -> String {
        format!(
            "{}{}",
            crate::table::PASSWORD_PREFIX,
            hex::encode(&self.0[..16])
        )
    }

    /// Compares two digests in constant time.
    pub fn ct_eq(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Digest {
    /// Shows only the first four bytes: enough to correlate, too little to be worth anything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}…)", hex::encode(&self.0[..4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256() {
        let d = Digest::of(b"abc");
        assert_eq!(
            hex::encode(d.as_bytes()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.table_key(), "pw#ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn constant_time_comparison_agrees_with_equality() {
        let a = Digest::of(b"a");
        assert!(a.ct_eq(&Digest::of(b"a")));
        assert!(!a.ct_eq(&Digest::of(b"b")));
        assert_eq!(Digest::from_slice(a.as_bytes()), Some(a));
        assert_eq!(Digest::from_slice(&[0; 31]), None);
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let d = Digest::of(b"abc");
        assert_eq!(format!("{d:?}"), "Digest(ba7816bf…)");
    }
}
