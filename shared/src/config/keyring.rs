//! The master key ring sealed under AWS KMS, as deployed stacks hold it: `VAULT_KEYRING_CIPHERTEXT` is
//! the KMS ciphertext of the ring (`id:hex,...`, or one 64-hex key), encrypted under the encryption
//! context `{"purpose": "token-vault-keyring", "stack": <VAULT_KEYRING_STACK>}`. A function that seals or
//! opens values decrypts it once per cold start and keeps the plaintext only in zeroizing memory; no
//! function's configuration holds key material in the clear.

use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{Config, ConfigError};
use crate::crypto::{Keyring, MasterKey};

/// The encryption context's `purpose`: a ciphertext made for anything else never opens as a key ring.
pub const KEYRING_PURPOSE: &str = "token-vault-keyring";

/// The key ring as a KMS ciphertext, with what decrypting it takes.
#[derive(Clone)]
pub struct SealedKeyring {
    pub ciphertext: Vec<u8>,
    /// The stack the ring belongs to: the encryption context's `stack`.
    pub stack: String,
    /// `VAULT_KMS_KEY_ARN`: the KMS key it must be sealed under (KMS refuses another).
    pub key_id: Option<String>,
}

impl std::fmt::Debug for SealedKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKeyring")
            .field("stack", &self.stack)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SealedKeyring {
    pub(super) fn from_lookup(get: &impl Fn(&'static str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let Some(text) = get("VAULT_KEYRING_CIPHERTEXT") else { return Ok(None) };
        let ciphertext = STANDARD.decode(text.as_bytes()).map_err(|_| ConfigError::Invalid {
            name: "VAULT_KEYRING_CIPHERTEXT",
            why: "must be the base64 CiphertextBlob of `aws kms encrypt`".into(),
        })?;
        let stack = get("VAULT_KEYRING_STACK").ok_or(ConfigError::Missing("VAULT_KEYRING_STACK"))?;
        Ok(Some(Self { ciphertext, stack, key_id: get("VAULT_KMS_KEY_ARN") }))
    }
}

impl SealedKeyring {
    /// Opens the ring with one `Decrypt` under its encryption context. A ring that does not open is one
    /// clear error (which names neither the ciphertext nor any key).
    pub(crate) async fn open(self, kms: &aws_sdk_kms::Client) -> Result<Keyring, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid { name: "VAULT_KEYRING_CIPHERTEXT", why };
        let out = kms
            .decrypt()
            .ciphertext_blob(Blob::new(self.ciphertext))
            .encryption_context("purpose", KEYRING_PURPOSE)
            .encryption_context("stack", &self.stack)
            .set_key_id(self.key_id)
            .send()
            .await
            .map_err(|e| invalid(format!("AWS KMS did not decrypt it: {}", crate::error::chain(&e))))?;
        let plain = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
        let text = std::str::from_utf8(&plain).map_err(|_| invalid("it does not decrypt to a key ring".into()))?;
        let text = Zeroizing::new(text.trim().to_owned());
        if text.contains(':') {
            Keyring::parse(&text).map_err(|why| invalid(format!("the key ring it holds is invalid: {why}")))
        } else {
            Ok(Keyring::single(
                MasterKey::from_hex(&text).map_err(|why| invalid(format!("the key it holds is invalid: {why}")))?,
            ))
        }
    }
}

impl Config {
    /// Opens the KMS-sealed key ring, if the configuration holds one, with one `Decrypt` under its
    /// encryption context. A ring that does not open fails the cold start with one clear line (which
    /// names neither the ciphertext nor any key).
    pub async fn unseal_keyring(&mut self, kms: &aws_sdk_kms::Client) -> Result<(), ConfigError> {
        let Some(sealed) = self.sealed_keyring.take() else { return Ok(()) };
        self.keyring = Some(sealed.open(kms).await?);
        Ok(())
    }
}
