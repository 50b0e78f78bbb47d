//! Keys, sealing and opening values.
//!
//! Hierarchy: master key (`VAULT_MASTER_KEY`) → per-organization key (HKDF-SHA256 with a random 32-byte
//! salt stored once per organization) → per-write data key (random, 256-bit) that seals the value with
//! AES-256-GCM. The data key is stored wrapped (AES-256-GCM) by the organization key. The associated data
//! of both layers binds the ciphertext to its organization, owner and name, so a ciphertext copied to
//! another item fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::policy::Owner;

/// The envelope format written today. Stored with every secret so the format can evolve.
pub const ENVELOPE_VERSION: u8 = 1;
/// Length of AES-GCM nonces.
const NONCE_LEN: usize = 12;
/// Length of AES-GCM tags.
const TAG_LEN: usize = 16;
/// Length of every symmetric key here.
pub const KEY_LEN: usize = 32;
/// Length of an organization salt.
pub const SALT_LEN: usize = 32;

/// The master key: 32 bytes that zeroize on drop, with a public id derived from it.
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).field("key", &"[REDACTED]").finish()
    }
}

impl MasterKey {
    /// Parses 64 hex characters. The error never contains the input.
    pub fn from_hex(hex_key: &str) -> Result<Self, &'static str> {
        let hex_key = hex_key.trim();
        if hex_key.len() != 2 * KEY_LEN {
            return Err("must be exactly 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`");
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(hex_key, key.as_mut_slice()).map_err(|_| "must contain only hex characters 0-9, a-f")?;
        Ok(Self::from_bytes(key))
    }

    /// Wraps raw key bytes. The id is a one-way fingerprint (HMAC of a fixed label), safe to store and log.
    pub fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"token-vault/v1/master-key-id");
        let digest = mac.finalize().into_bytes();
        let id = format!("mk-{}", hex::encode(&digest[..6]));
        Self { id, key }
    }

    /// The key's public id, stored in every envelope it protects.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Derives the key of one organization (RFC 5869 HKDF-SHA256).
    pub fn derive_org_key(&self, org_id: &str, salt: &[u8; SALT_LEN]) -> OrgKey {
        let hk = Hkdf::<Sha256>::new(Some(salt), self.key.as_slice());
        let mut info = Vec::with_capacity(64 + org_id.len());
        push_field(&mut info, b"token-vault/v1/org-key");
        push_field(&mut info, org_id.as_bytes());
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        hk.expand(&info, okm.as_mut_slice())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
        OrgKey { key_id: self.id.clone(), key: okm }
    }
}

/// Generates a fresh random organization salt.
pub fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    salt
}

/// One organization's key, derived from a master key; zeroizes on drop.
pub struct OrgKey {
    key_id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgKey").field("key_id", &self.key_id).field("key", &"[REDACTED]").finish()
    }
}

/// Where a secret lives: what its ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub org_id: &'a str,
    pub owner: &'a Owner,
    pub name: &'a str,
}

/// A sealed value as stored: format version, master key id, the wrapped data key and the ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: u8,
    pub key_id: String,
    /// nonce ‖ AES-256-GCM(org key, data key) ‖ tag
    pub wrapped_key: Vec<u8>,
    /// nonce ‖ AES-256-GCM(data key, value) ‖ tag
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Why an envelope did not open. Carries no key material and no plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntegrityError {
    #[error("envelope format version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("envelope was sealed under master key id {found:?}, which is not the configured key {configured:?}")]
    UnknownKeyId { found: String, configured: String },
    #[error("wrapped data key failed authentication")]
    WrappedKey,
    #[error("value ciphertext failed authentication")]
    Ciphertext,
}

/// Failure of the AES-GCM primitive itself while sealing (not expected in practice).
#[derive(Debug, thiserror::Error)]
#[error("AES-GCM sealing failed")]
pub struct SealError;

impl OrgKey {
    /// Seals `plaintext` for `binding` under a fresh data key.
    pub fn seal(&self, binding: Binding<'_>, plaintext: &[u8]) -> Result<Envelope, SealError> {
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(data_key.as_mut_slice());
        let ciphertext = gcm_seal(&data_key, plaintext, &value_aad(ENVELOPE_VERSION, binding))?;
        let wrapped_key = gcm_seal(&self.key, data_key.as_slice(), &wrap_aad(ENVELOPE_VERSION, &self.key_id, binding))?;
        Ok(Envelope { version: ENVELOPE_VERSION, key_id: self.key_id.clone(), wrapped_key, ciphertext })
    }

    /// Opens `envelope` as stored for `binding`; any tampering, move or wrong key fails.
    pub fn open(&self, binding: Binding<'_>, envelope: &Envelope) -> Result<Zeroizing<Vec<u8>>, IntegrityError> {
        if envelope.version != ENVELOPE_VERSION {
            return Err(IntegrityError::UnsupportedVersion(envelope.version));
        }
        if envelope.key_id != self.key_id {
            return Err(IntegrityError::UnknownKeyId {
                found: envelope.key_id.clone(),
                configured: self.key_id.clone(),
            });
        }
        let data_key =
            gcm_open(&self.key, &envelope.wrapped_key, &wrap_aad(envelope.version, &envelope.key_id, binding))
                .ok_or(IntegrityError::WrappedKey)?;
        let data_key: Zeroizing<[u8; KEY_LEN]> =
            Zeroizing::new(data_key.as_slice().try_into().map_err(|_| IntegrityError::WrappedKey)?);
        gcm_open(&data_key, &envelope.ciphertext, &value_aad(envelope.version, binding))
            .ok_or(IntegrityError::Ciphertext)
    }
}

fn gcm_seal(key: &[u8; KEY_LEN], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sealed = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).map_err(|_| SealError)?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn gcm_open(key: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(key.into());
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad }).ok().map(Zeroizing::new)
}

/// Appends a length-prefixed field, so that no two different field lists encode the same bytes.
fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

fn binding_fields(out: &mut Vec<u8>, version: u8, binding: Binding<'_>) {
    push_field(out, &[version]);
    push_field(out, binding.org_id.as_bytes());
    push_field(out, binding.owner.kind().as_bytes());
    push_field(out, binding.owner.id().as_bytes());
    push_field(out, binding.name.as_bytes());
}

fn value_aad(version: u8, binding: Binding<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(128);
    push_field(&mut aad, b"token-vault/value");
    binding_fields(&mut aad, version, binding);
    aad
}

fn wrap_aad(version: u8, key_id: &str, binding: Binding<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(160);
    push_field(&mut aad, b"token-vault/data-key");
    push_field(&mut aad, key_id.as_bytes());
    binding_fields(&mut aad, version, binding);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(byte: u8) -> MasterKey {
        MasterKey::from_bytes(Zeroizing::new([byte; KEY_LEN]))
    }

    fn app(client: &str) -> Owner {
        Owner::App { client_id: client.into() }
    }

    #[test]
    fn round_trip() {
        let key = master(7).derive_org_key("org1", &[1; SALT_LEN]);
        let owner = app("c1");
        let b = Binding { org_id: "org1", owner: &owner, name: "openai" };
        for value in [&b"x"[..], b"sk-abc123", &[0u8; 65_536]] {
            let env = key.seal(b, value).unwrap();
            assert_eq!(env.version, ENVELOPE_VERSION);
            assert_eq!(key.open(b, &env).unwrap().as_slice(), value);
        }
    }

    #[test]
    fn ciphertext_never_contains_plaintext_and_is_randomised() {
        let key = master(7).derive_org_key("org1", &[1; SALT_LEN]);
        let owner = app("c1");
        let b = Binding { org_id: "org1", owner: &owner, name: "n" };
        let a = key.seal(b, b"sk-very-secret-value").unwrap();
        let c = key.seal(b, b"sk-very-secret-value").unwrap();
        assert_ne!(a.ciphertext, c.ciphertext);
        assert_ne!(a.wrapped_key, c.wrapped_key);
        assert!(!a.ciphertext.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn any_flipped_byte_fails() {
        let key = master(7).derive_org_key("org1", &[1; SALT_LEN]);
        let owner = app("c1");
        let b = Binding { org_id: "org1", owner: &owner, name: "n" };
        let env = key.seal(b, b"value").unwrap();
        for i in 0..env.ciphertext.len() {
            let mut bad = env.clone();
            bad.ciphertext[i] ^= 0x01;
            assert_eq!(key.open(b, &bad).unwrap_err(), IntegrityError::Ciphertext, "byte {i}");
        }
        for i in 0..env.wrapped_key.len() {
            let mut bad = env.clone();
            bad.wrapped_key[i] ^= 0x80;
            assert_eq!(key.open(b, &bad).unwrap_err(), IntegrityError::WrappedKey, "byte {i}");
        }
        let mut bad = env.clone();
        bad.ciphertext.truncate(10);
        assert!(key.open(b, &bad).is_err());
        let mut bad = env.clone();
        bad.version = 2;
        assert_eq!(key.open(b, &bad).unwrap_err(), IntegrityError::UnsupportedVersion(2));
    }

    #[test]
    fn swapped_binding_fails() {
        let key = master(7).derive_org_key("org1", &[1; SALT_LEN]);
        let owner = app("c1");
        let b = Binding { org_id: "org1", owner: &owner, name: "n" };
        let env = key.seal(b, b"value").unwrap();
        let other_client = app("c2");
        let user = Owner::User { user_id: "c1".into() };
        for moved in [
            Binding { name: "m", ..b },
            Binding { owner: &other_client, ..b },
            Binding { owner: &user, ..b },
            Binding { org_id: "org2", ..b },
        ] {
            assert!(key.open(moved, &env).is_err(), "{moved:?}");
        }
        // A data key wrapped for one secret does not open another's value.
        let b2 = Binding { name: "m", ..b };
        let env2 = key.seal(b2, b"other").unwrap();
        let swapped = Envelope { wrapped_key: env2.wrapped_key.clone(), ..env.clone() };
        assert!(key.open(b, &swapped).is_err());
    }

    #[test]
    fn per_org_keys_differ_and_other_keys_fail() {
        let m = master(7);
        let owner = app("c1");
        let b = Binding { org_id: "org1", owner: &owner, name: "n" };
        let k1 = m.derive_org_key("org1", &[1; SALT_LEN]);
        let env = k1.seal(b, b"value").unwrap();
        // Same master, same salt, other organization.
        assert_ne!(k1.key.as_slice(), m.derive_org_key("org2", &[1; SALT_LEN]).key.as_slice());
        // Same organization, other salt.
        let k_salt = m.derive_org_key("org1", &[2; SALT_LEN]);
        assert_ne!(k1.key.as_slice(), k_salt.key.as_slice());
        assert_eq!(k_salt.open(b, &env).unwrap_err(), IntegrityError::WrappedKey);
        // Other master key: refused by id before any decryption is attempted.
        let other = master(8).derive_org_key("org1", &[1; SALT_LEN]);
        assert!(matches!(other.open(b, &env).unwrap_err(), IntegrityError::UnknownKeyId { .. }));
    }

    #[test]
    fn key_ids_are_stable_and_distinct_and_debug_is_redacted() {
        assert_eq!(master(1).id(), master(1).id());
        assert_ne!(master(1).id(), master(2).id());
        let hex_key = "ab".repeat(32);
        let m = MasterKey::from_hex(&hex_key).unwrap();
        let printed = format!("{m:?} {:?}", m.derive_org_key("o", &[0; SALT_LEN]));
        assert!(printed.contains("[REDACTED]"));
        assert!(!printed.contains("abab"), "{printed}");
        assert!(!printed.contains("171"), "{printed}");
    }
}
