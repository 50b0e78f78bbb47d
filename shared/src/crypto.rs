//! Keys, sealing and opening values.
//!
//! Hierarchy: master key (`VAULT_MASTER_KEY`) → per-organization key (HKDF-SHA256 with a random 32-byte
//! salt stored once per organization) → per-write data key (random, 256-bit) that seals the value with
//! AES-256-GCM. The data key is stored wrapped (AES-256-GCM) by the organization key. The associated data
//! of both layers binds the ciphertext to its organization, owner and name, and (format 2) to its access
//! mode and upstream, so a ciphertext copied to another item fails to open, and a value cannot be made
//! readable, or pointed at another host, by editing its item.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::model::{Access, Injection, Owner, Upstream};

/// The envelope format written today (2: the associated data also binds the access mode and the
/// upstream). Stored with every secret so the format can evolve.
pub(crate) const ENVELOPE_VERSION: u8 = 2;
/// The first format, which binds organization, owner and name only: it still opens, for a readable
/// secret without an upstream (what every secret it sealed was).
const FORMAT_1: u8 = 1;
/// Length of AES-GCM nonces.
const NONCE_LEN: usize = 12;
/// Length of AES-GCM tags.
const TAG_LEN: usize = 16;
/// Length of every symmetric key here.
pub(crate) const KEY_LEN: usize = 32;
/// Length of an organization salt.
pub(crate) const SALT_LEN: usize = 32;

/// A master key: 32 bytes that zeroize on drop, with the id stored in every envelope it protects and a
/// one-way fingerprint (`mk-` + 12 hex digits of an HMAC) that is safe to store and log.
pub struct MasterKey {
    id: String,
    fingerprint: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).field("key", &"[REDACTED]").finish()
    }
}

/// Parses 64 hex characters into key bytes. The error never contains the input.
fn parse_hex_key(hex_key: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, &'static str> {
    let hex_key = hex_key.trim();
    if hex_key.len() != 2 * KEY_LEN {
        return Err("must be exactly 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`");
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(hex_key, key.as_mut_slice()).map_err(|_| "must contain only hex characters 0-9, a-f")?;
    Ok(key)
}

fn fingerprint(key: &[u8; KEY_LEN]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"token-vault/v1/master-key-id");
    let digest = mac.finalize().into_bytes();
    format!("mk-{}", hex::encode(&digest[..6]))
}

impl MasterKey {
    /// Parses a lone key (`VAULT_MASTER_KEY`); its id is its fingerprint.
    pub fn from_hex(hex_key: &str) -> Result<Self, &'static str> {
        Ok(Self::from_bytes(parse_hex_key(hex_key)?))
    }

    /// Wraps raw key bytes; the id is the fingerprint.
    pub fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let fingerprint = fingerprint(&key);
        Self { id: fingerprint.clone(), fingerprint, key }
    }

    /// A key of a keyring, under an operator-chosen id.
    pub fn with_id(id: &str, hex_key: &str) -> Result<Self, &'static str> {
        let key = parse_hex_key(hex_key)?;
        Ok(Self { id: id.to_owned(), fingerprint: fingerprint(&key), key })
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
        OrgKey { key_id: self.id.clone(), salt: *salt, key: okm }
    }
}

/// The master keys in use: the active one, which seals every new write, and older ones that still open
/// the envelopes sealed under them until the rewrap job has moved every data key to the active key.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// A ring of one key.
    pub fn single(key: MasterKey) -> Self {
        Self { keys: vec![key] }
    }

    /// Parses `id:hex,id:hex,...`, the first one active. Ids are 1–64 of `[A-Za-z0-9_.-]` and may not
    /// start with `mk-` (reserved for fingerprints). Errors never contain key material.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for (i, entry) in spec.split(',').map(str::trim).enumerate() {
            let (id, hex_key) = entry.split_once(':').ok_or_else(|| format!("entry {} is not id:hex", i + 1))?;
            let id = id.trim();
            let id_ok = !id.is_empty()
                && id.len() <= 64
                && !id.starts_with("mk-")
                && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !id_ok {
                return Err(format!(
                    "entry {}: key ids are 1 to 64 of A-Z a-z 0-9 _ . - and may not start with mk-",
                    i + 1
                ));
            }
            let key = MasterKey::with_id(id, hex_key).map_err(|why| format!("key {id:?} {why}"))?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(format!("key id {id:?} appears twice"));
            }
            if keys.iter().any(|k| k.fingerprint == key.fingerprint) {
                return Err(format!("key {id:?} repeats the key material of another entry"));
            }
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The key that seals new writes.
    pub fn active(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// Every key, active first.
    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// The key an envelope names, by id or by fingerprint (envelopes sealed under a lone
    /// `VAULT_MASTER_KEY` name its fingerprint, so that key opens them again once given an id in a ring).
    pub fn find(&self, key_id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == key_id).or_else(|| self.keys.iter().find(|k| k.fingerprint == key_id))
    }
}

/// Generates a fresh random organization salt.
pub(crate) fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    salt
}

/// One organization's key, derived from a master key; zeroizes on drop.
pub struct OrgKey {
    key_id: String,
    /// The organization salt it derives from (not secret): writes check it still exists.
    salt: [u8; SALT_LEN],
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for OrgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgKey").field("key_id", &self.key_id).field("key", &"[REDACTED]").finish()
    }
}

/// Where a secret lives and where its value may go: what its ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub org_id: &'a str,
    pub owner: &'a Owner,
    pub name: &'a str,
    pub access: Access,
    pub upstream: Option<&'a Upstream>,
}

impl<'a> Binding<'a> {
    /// A readable secret without an upstream.
    pub fn new(org_id: &'a str, owner: &'a Owner, name: &'a str) -> Self {
        Self { org_id, owner, name, access: Access::Readable, upstream: None }
    }

    /// The same secret with `access` and `upstream`.
    pub fn with_usage(self, access: Access, upstream: Option<&'a Upstream>) -> Self {
        Self { access, upstream, ..self }
    }

    fn is_plain(&self) -> bool {
        self.access == Access::Readable && self.upstream.is_none()
    }
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
    #[error("envelope was sealed under master key id {0:?}, which is not in the key ring")]
    UnknownKeyId(String),
    #[error("wrapped data key failed authentication")]
    WrappedKey,
    #[error("value ciphertext failed authentication")]
    Ciphertext,
    #[error("an envelope of format 1 binds no access mode or upstream, but the item names one")]
    UsageNotBound,
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
        check_format(envelope.version, binding)?;
        let data_key =
            gcm_open(&self.key, &envelope.wrapped_key, &wrap_aad(envelope.version, &envelope.key_id, binding))
                .ok_or(IntegrityError::WrappedKey)?;
        if data_key.len() != KEY_LEN {
            return Err(IntegrityError::WrappedKey);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&data_key);
        let data_key = key;
        gcm_open(&data_key, &envelope.ciphertext, &value_aad(envelope.version, binding))
            .ok_or(IntegrityError::Ciphertext)
    }
}

impl OrgKey {
    /// The organization salt this key derives from.
    pub fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// Moves `envelope`'s data key from this key to `to`, leaving the value's ciphertext untouched.
    pub fn rewrap(&self, to: &OrgKey, binding: Binding<'_>, envelope: &Envelope) -> Result<Envelope, IntegrityError> {
        check_format(envelope.version, binding)?;
        let data_key =
            gcm_open(&self.key, &envelope.wrapped_key, &wrap_aad(envelope.version, &envelope.key_id, binding))
                .ok_or(IntegrityError::WrappedKey)?;
        let wrapped_key = gcm_seal(&to.key, &data_key, &wrap_aad(envelope.version, &to.key_id, binding))
            .map_err(|_| IntegrityError::WrappedKey)?;
        Ok(Envelope { key_id: to.key_id.clone(), wrapped_key, ..envelope.clone() })
    }
}

/// Format 2 opens for any binding; format 1 only for a readable secret without an upstream.
fn check_format(version: u8, binding: Binding<'_>) -> Result<(), IntegrityError> {
    match version {
        ENVELOPE_VERSION => Ok(()),
        FORMAT_1 if binding.is_plain() => Ok(()),
        FORMAT_1 => Err(IntegrityError::UsageNotBound),
        other => Err(IntegrityError::UnsupportedVersion(other)),
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
    if version >= 2 {
        usage_fields(out, binding.access, binding.upstream);
    }
}

/// The access mode and the upstream, field by field (lists prefixed by their length), so that no two
/// different usages encode the same bytes.
fn usage_fields(out: &mut Vec<u8>, access: Access, upstream: Option<&Upstream>) {
    push_field(out, access.as_str().as_bytes());
    let Some(up) = upstream else {
        push_field(out, b"no-upstream");
        return;
    };
    push_field(out, b"upstream");
    push_field(out, up.base_url.as_bytes());
    match &up.inject {
        Injection::Header { name, template } => {
            push_field(out, b"header");
            push_field(out, name.as_bytes());
            push_field(out, template.as_bytes());
        }
        Injection::Query { name } => {
            push_field(out, b"query");
            push_field(out, name.as_bytes());
        }
    }
    for list in [&up.methods, &up.paths] {
        push_field(out, &(list.len() as u64).to_be_bytes());
        for entry in list {
            push_field(out, entry.as_bytes());
        }
    }
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

    /// Organization `org1`'s key under master key 7, and the owner `c1`.
    fn org1() -> (OrgKey, Owner) {
        (master(7).derive_org_key("org1", &[1; SALT_LEN]), app("c1"))
    }

    fn app(client: &str) -> Owner {
        Owner::App { client_id: client.into() }
    }

    #[test]
    fn round_trip() {
        let key = master(7).derive_org_key("org1", &[1; SALT_LEN]);
        let owner = app("c1");
        let b = Binding::new("org1", &owner, "openai");
        for value in [&b"x"[..], b"sk-abc123", &[0u8; 65_536]] {
            let env = key.seal(b, value).unwrap();
            assert_eq!(env.version, ENVELOPE_VERSION);
            assert_eq!(key.open(b, &env).unwrap().as_slice(), value);
        }
    }

    #[test]
    fn ciphertext_never_contains_plaintext_and_is_randomised() {
        let (key, owner) = org1();
        let b = Binding::new("org1", &owner, "n");
        let a = key.seal(b, b"sk-very-secret-value").unwrap();
        let c = key.seal(b, b"sk-very-secret-value").unwrap();
        assert_ne!(a.ciphertext, c.ciphertext);
        assert_ne!(a.wrapped_key, c.wrapped_key);
        assert!(!a.ciphertext.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn any_flipped_byte_fails() {
        let (key, owner) = org1();
        let b = Binding::new("org1", &owner, "n");
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
        bad.version = 3;
        assert_eq!(key.open(b, &bad).unwrap_err(), IntegrityError::UnsupportedVersion(3));
    }

    fn upstream(base_url: &str) -> Upstream {
        Upstream {
            base_url: base_url.into(),
            inject: Injection::Header { name: "authorization".into(), template: "Bearer {value}".into() },
            methods: vec!["POST".into()],
            paths: vec!["/chat/completions".into()],
        }
    }

    #[test]
    fn the_access_mode_and_the_upstream_are_bound() {
        let (key, owner) = org1();
        let openai = upstream("https://api.openai.com/v1");
        let b = Binding::new("org1", &owner, "n").with_usage(Access::UseOnly, Some(&openai));
        let env = key.seal(b, b"sk-live").unwrap();
        assert_eq!(key.open(b, &env).unwrap().as_slice(), b"sk-live");
        let evil = upstream("https://evil.example");
        let query = Upstream { inject: Injection::Query { name: "key".into() }, ..openai.clone() };
        let any_method = Upstream { methods: vec![], ..openai.clone() };
        let other_path = Upstream { paths: vec!["/".into()], ..openai.clone() };
        let template = Upstream {
            inject: Injection::Header { name: "authorization".into(), template: "Basic {value}".into() },
            ..openai.clone()
        };
        for changed in [
            b.with_usage(Access::Readable, Some(&openai)),
            b.with_usage(Access::UseOnly, None),
            b.with_usage(Access::Readable, None),
            b.with_usage(Access::UseOnly, Some(&evil)),
            b.with_usage(Access::UseOnly, Some(&query)),
            b.with_usage(Access::UseOnly, Some(&any_method)),
            b.with_usage(Access::UseOnly, Some(&other_path)),
            b.with_usage(Access::UseOnly, Some(&template)),
        ] {
            assert_eq!(key.open(changed, &env).unwrap_err(), IntegrityError::WrappedKey, "{changed:?}");
        }
        // Relabelled as format 1 (which binds no usage), it opens for no binding at all.
        let relabelled = Envelope { version: FORMAT_1, ..env.clone() };
        assert!(key.open(b, &relabelled).is_err());
        assert!(key.open(Binding::new("org1", &owner, "n"), &relabelled).is_err());
    }

    /// An envelope as format 1 sealed it (organization, owner and name only).
    fn seal_format_1(key: &OrgKey, binding: Binding<'_>, plaintext: &[u8]) -> Envelope {
        let data_key = Zeroizing::new([9u8; KEY_LEN]);
        let ciphertext = gcm_seal(&data_key, plaintext, &value_aad(FORMAT_1, binding)).unwrap();
        let wrapped_key = gcm_seal(&key.key, data_key.as_slice(), &wrap_aad(FORMAT_1, &key.key_id, binding)).unwrap();
        Envelope { version: FORMAT_1, key_id: key.key_id.clone(), wrapped_key, ciphertext }
    }

    #[test]
    fn format_1_opens_only_as_a_readable_secret_without_an_upstream() {
        let (key, owner) = org1();
        let plain = Binding::new("org1", &owner, "n");
        let env = seal_format_1(&key, plain, b"old");
        assert_eq!(key.open(plain, &env).unwrap().as_slice(), b"old");
        let openai = upstream("https://api.openai.com/v1");
        for named in [plain.with_usage(Access::UseOnly, None), plain.with_usage(Access::Readable, Some(&openai))] {
            assert_eq!(key.open(named, &env).unwrap_err(), IntegrityError::UsageNotBound);
        }
        // Rewrapping keeps its format, and the same rule.
        let moved = key.rewrap(&key, plain, &env).unwrap();
        assert_eq!((moved.version, key.open(plain, &moved).unwrap().as_slice()), (FORMAT_1, &b"old"[..]));
        assert!(key.rewrap(&key, plain.with_usage(Access::UseOnly, None), &env).is_err());
    }

    #[test]
    fn swapped_binding_fails() {
        let (key, owner) = org1();
        let b = Binding::new("org1", &owner, "n");
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
        let b = Binding::new("org1", &owner, "n");
        let k1 = m.derive_org_key("org1", &[1; SALT_LEN]);
        let env = k1.seal(b, b"value").unwrap();
        // Same master, same salt, other organization.
        assert_ne!(k1.key.as_slice(), m.derive_org_key("org2", &[1; SALT_LEN]).key.as_slice());
        // Same organization, other salt.
        let k_salt = m.derive_org_key("org1", &[2; SALT_LEN]);
        assert_ne!(k1.key.as_slice(), k_salt.key.as_slice());
        assert_eq!(k_salt.open(b, &env).unwrap_err(), IntegrityError::WrappedKey);
        // Other master key.
        let other = master(8).derive_org_key("org1", &[1; SALT_LEN]);
        assert_eq!(other.open(b, &env).unwrap_err(), IntegrityError::WrappedKey);
    }

    #[test]
    fn rewrap_moves_the_data_key_and_keeps_the_ciphertext() {
        let old = MasterKey::with_id("k1", &"11".repeat(32)).unwrap().derive_org_key("org1", &[1; SALT_LEN]);
        let new = MasterKey::with_id("k2", &"22".repeat(32)).unwrap().derive_org_key("org1", &[1; SALT_LEN]);
        let owner = app("c1");
        let b = Binding::new("org1", &owner, "n");
        let env = old.seal(b, b"value").unwrap();
        let moved = old.rewrap(&new, b, &env).unwrap();
        assert_eq!((moved.key_id.as_str(), &moved.ciphertext), ("k2", &env.ciphertext));
        assert_eq!(new.open(b, &moved).unwrap().as_slice(), b"value");
        assert!(old.open(b, &moved).is_err());
        // Rewrapping for another binding, or with the wrong source key, fails.
        assert!(old.rewrap(&new, Binding { name: "m", ..b }, &env).is_err());
        assert!(new.rewrap(&old, b, &env).is_err());
        // The key id is bound: relabelling a wrapped key fails.
        let relabelled = Envelope { key_id: "k1".into(), ..moved };
        assert!(old.open(b, &relabelled).is_err());
    }

    #[test]
    fn keyrings_parse_and_find_keys_by_id_or_fingerprint() {
        let ring = Keyring::parse(&format!("k2:{},k1:{}", "22".repeat(32), "11".repeat(32))).unwrap();
        assert_eq!(ring.active().id(), "k2");
        assert_eq!(ring.find("k1").unwrap().id(), "k1");
        let lone = MasterKey::from_bytes(Zeroizing::new([0x11; KEY_LEN]));
        assert_eq!(ring.find(lone.id()).unwrap().id(), "k1", "a lone key's envelopes open once it joins a ring");
        assert!(ring.find("k3").is_none());
        for bad in [
            String::new(),
            "k1".into(),
            format!("k1:{}", "zz".repeat(32)),
            format!("k1:{},k1:{}", "11".repeat(32), "22".repeat(32)),
            format!("k1:{},k2:{}", "11".repeat(32), "11".repeat(32)),
            format!("mk-1:{}", "11".repeat(32)),
            format!("a b:{}", "11".repeat(32)),
        ] {
            let err = Keyring::parse(&bad).unwrap_err();
            assert!(!err.contains("1111") && !err.contains("2222"), "{err}");
        }
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

    /// Property tests (proptest): the laws of sealing, over arbitrary values, names, owners,
    /// organizations and salts. Case counts stay modest so the default test run stays fast.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn owner() -> impl Strategy<Value = Owner> {
            prop_oneof![
                "\\PC{0,24}".prop_map(|client_id| Owner::App { client_id }),
                "\\PC{0,24}".prop_map(|user_id| Owner::User { user_id }),
            ]
        }

        /// Ids from a small alphabet rich in separators and escapes, so near-collisions are common.
        fn id() -> impl Strategy<Value = String> {
            prop_oneof!["[#%235a|/:]{0,6}", "\\PC{0,16}"]
        }

        fn binding_parts() -> impl Strategy<Value = (String, Owner, String)> {
            (id(), owner(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn open_inverts_seal(
                value in proptest::collection::vec(any::<u8>(), 0..4096),
                (org, owner, name) in binding_parts(),
                salt in any::<[u8; SALT_LEN]>(),
                master_byte in any::<u8>(),
            ) {
                let key = master(master_byte).derive_org_key(&org, &salt);
                let binding = Binding::new(&org, &owner, &name);
                let envelope = key.seal(binding, &value).unwrap();
                let opened = key.open(binding, &envelope).unwrap();
                prop_assert_eq!(opened.as_slice(), value.as_slice());
            }

            #[test]
            fn any_single_byte_change_fails(
                value in proptest::collection::vec(any::<u8>(), 1..512),
                (org, owner, name) in binding_parts(),
                in_wrapped_key in any::<bool>(),
                at in any::<prop::sample::Index>(),
                xor in 1u8..=255,
            ) {
                let key = master(3).derive_org_key(&org, &[9; SALT_LEN]);
                let binding = Binding::new(&org, &owner, &name);
                let mut envelope = key.seal(binding, &value).unwrap();
                let bytes = if in_wrapped_key { &mut envelope.wrapped_key } else { &mut envelope.ciphertext };
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
                prop_assert!(key.open(binding, &envelope).is_err());
            }

            #[test]
            fn any_binding_change_fails(
                value in proptest::collection::vec(any::<u8>(), 1..256),
                sealed_for in binding_parts(),
                opened_as in binding_parts(),
            ) {
                prop_assume!(sealed_for != opened_as);
                // One organization key for both, so only the associated data differs.
                let key = master(5).derive_org_key("org", &[1; SALT_LEN]);
                let (org, owner, name) = &sealed_for;
                let envelope = key.seal(Binding::new(org, owner, name), &value).unwrap();
                let (org, owner, name) = &opened_as;
                let other = Binding::new(org, owner, name);
                prop_assert!(key.open(other, &envelope).is_err());
            }

            #[test]
            fn another_organization_or_salt_fails(
                value in proptest::collection::vec(any::<u8>(), 1..64),
                (org, owner, name) in binding_parts(),
                other_org in id(),
                salt in any::<[u8; SALT_LEN]>(),
                other_salt in any::<[u8; SALT_LEN]>(),
            ) {
                prop_assume!(org != other_org && salt != other_salt);
                let binding = Binding::new(&org, &owner, &name);
                let envelope = master(1).derive_org_key(&org, &salt).seal(binding, &value).unwrap();
                prop_assert!(master(1).derive_org_key(&other_org, &salt).open(binding, &envelope).is_err());
                prop_assert!(master(1).derive_org_key(&org, &other_salt).open(binding, &envelope).is_err());
                prop_assert!(master(2).derive_org_key(&org, &salt).open(binding, &envelope).is_err());
            }
        }
    }
}
