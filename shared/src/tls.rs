//! The TLS client settings the vault's own HTTPS clients share (the JWKS client and the proxy's
//! upstream client): rustls on aws-lc (the provider the AWS SDK brings), servers verified against the
//! system's root certificates. Those come from rustls-native-certs (the files `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` name when set, the platform's store otherwise) and are read and parsed once per
//! process, by whichever client is built first (BENCHMARKS.md, "Cold start as deployed").

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;

/// The system's root certificates, parsed once.
static SYSTEM_ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();

/// The system's root certificates (empty when none could be read: each client refuses to start then).
pub(crate) fn system_roots() -> Arc<RootCertStore> {
    SYSTEM_ROOTS
        .get_or_init(|| {
            crate::timings::time("roots", || {
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                Arc::new(roots)
            })
        })
        .clone()
}

/// A client configuration trusting `roots`, with rustls's safe default protocol versions.
pub(crate) fn client_config(roots: Arc<RootCertStore>) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_are_read_once_per_process_and_shared() {
        let (first, second) = (system_roots(), system_roots());
        assert!(Arc::ptr_eq(&first, &second));
        assert!(client_config(first).is_ok());
    }
}
