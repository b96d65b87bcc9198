//! Secrets at rest. API keys and the administrator's opaque token are kept as SHA-256 digests, so
//! that a copy of the database does not let anyone call Berth; an API key is also kept sealed
//! (AES-256-GCM under a key derived from the data directory's `token-signing.key`), because
//! `listKeys` must show it again. Presented secrets are found by digest and the digests compared in
//! constant time.

use crate::error::Result;
use crate::ControlError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_store::StoredKey;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::{digest as sha, hmac};

/// Rows carried over from databases that kept keys in plain text start with this.
const PLAIN: &str = "plain:";
const DIGEST: &str = "sha256:";

pub(crate) struct Vault {
    sealing: LessSafeKey,
}

impl Vault {
    /// The sealing key is HMAC-SHA256(master, label): one secret file serves tokens and keys.
    pub(crate) fn new(master: &[u8]) -> Self {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, master), b"berth/api-key-sealing/v1");
        let key = tag.as_ref();
        Vault { sealing: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key")) }
    }

    /// How an API key is stored.
    pub(crate) fn store(&self, key: &str) -> StoredKey {
        StoredKey { digest: digest(key), sealed: self.seal(key) }
    }

    /// The API key behind a stored one; fails if the data directory's secret is not the one it was
    /// sealed under.
    pub(crate) fn open(&self, stored: &StoredKey) -> Result<String> {
        if let Some(plain) = stored.sealed.strip_prefix(PLAIN) {
            return Ok(plain.to_owned());
        }
        let broken = || ControlError::Internal("an API key cannot be unsealed: was token-signing.key replaced?".into());
        let bytes = STANDARD.decode(&stored.sealed).map_err(|_| broken())?;
        if bytes.len() < NONCE_LEN {
            return Err(broken());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| broken())?;
        let mut in_out = sealed.to_vec();
        let plain = self
            .sealing
            .open_in_place(nonce, Aad::from(stored.digest.as_bytes()), &mut in_out)
            .map_err(|_| broken())?;
        String::from_utf8(plain.to_vec()).map_err(|_| broken())
    }

    fn seal(&self, key: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut in_out = key.as_bytes().to_vec();
        // The digest is the associated data: a sealed key moved to another row does not open.
        self.sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(digest(key).as_bytes()),
                &mut in_out,
            )
            .expect("AES-GCM seals any key-sized input");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&in_out);
        STANDARD.encode(out)
    }

    /// A stored key still in plain text, digested and sealed; `None` when it already is.
    pub(crate) fn upgrade(&self, stored: &StoredKey) -> Option<StoredKey> {
        stored.digest.strip_prefix(PLAIN).map(|plain| self.store(plain))
    }
}

/// `sha256:<hex>` of a secret.
pub(crate) fn digest(secret: &str) -> String {
    let hash = sha::digest(&sha::SHA256, secret.as_bytes());
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{DIGEST}{hex}")
}

pub(crate) fn is_digest(value: &str) -> bool {
    value.starts_with(DIGEST)
}

/// Whether a presented secret matches a stored digest, in time independent of where they differ.
pub(crate) fn matches(secret: &str, stored_digest: &str) -> bool {
    let (a, b) = (digest(secret), stored_digest.as_bytes().to_vec());
    // Every byte is compared whatever the first difference; black_box keeps the fold from being cut short.
    a.len() == b.len() && std::hint::black_box(a.as_bytes().iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_do_not_open_under_another_secret_or_row() {
        let vault = Vault::new(b"master one");
        let stored = vault.store("key-a");
        assert!(is_digest(&stored.digest) && !stored.sealed.contains("key-a"));
        assert_eq!(vault.open(&stored).unwrap(), "key-a");
        assert!(matches("key-a", &stored.digest) && !matches("key-b", &stored.digest));
        assert!(Vault::new(b"master two").open(&stored).is_err());
        let other = vault.store("key-b");
        let moved = StoredKey { digest: other.digest, sealed: stored.sealed.clone() };
        assert!(vault.open(&moved).is_err());
        let legacy = StoredKey { digest: "plain:old".into(), sealed: "plain:old".into() };
        let upgraded = vault.upgrade(&legacy).unwrap();
        assert_eq!((vault.open(&upgraded).unwrap(), upgraded.digest), ("old".to_owned(), digest("old")));
        assert!(vault.upgrade(&stored).is_none());
    }
}
