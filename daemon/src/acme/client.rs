//! The HTTPS client an account talks to its CA with: the platform's trust store, or, when the
//! account has `directory_ca_pem`, exactly those roots (a private or test ACME CA; nothing is
//! added to the system trust store).

use crate::error::ApiError;
use bytes::Bytes;
use instant_acme::{Account, AccountBuilder, BodyWrapper};
use std::sync::Arc;

/// An account builder for a directory, trusting `ca_pem`'s certificates when given.
///
/// # Errors
/// `400 invalid_directory_ca` when `ca_pem` holds no usable certificate; `502` when the platform
/// trust store cannot be loaded.
pub fn account_builder(ca_pem: Option<&str>) -> Result<AccountBuilder, ApiError> {
    let Some(pem) = ca_pem else {
        return Account::builder().map_err(|e| crate::acme::api_error(&e));
    };
    let bad = |m: String| ApiError::bad_request("invalid_directory_ca", m);
    let blocks = scaivault_core::validate::pem_blocks(pem, "CERTIFICATE").map_err(bad)?;
    if blocks.is_empty() {
        return Err(bad("directory_ca_pem holds no certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in blocks {
        roots
            .add(rustls_pki_types::CertificateDer::from(der))
            .map_err(|e| bad(format!("directory_ca_pem: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ApiError::internal)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, BodyWrapper<Bytes>>(connector);
    Ok(Account::builder_with_http(Box::new(client)))
}
