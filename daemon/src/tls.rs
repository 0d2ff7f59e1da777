//! HTTPS on the API listener (`[server.tls]`): the certificate and key Rocket serves.
//!
//! Two sources, exactly one per configuration:
//! - **files**: `cert_file` (PEM chain, leaf first) and `key_file` (PEM key: PKCS#8, SEC1 or
//!   PKCS#1). Read at start and again on `SIGHUP`, so a renewed certificate is picked up by
//!   `systemctl reload scaivault`.
//! - **role**: ScaiVault issues the listener's certificate itself at start, from `role` of
//!   `tenant`, through the ordinary issuance path (policy checks, lint, token signature, inventory
//!   row and audit records with token id `daemon`). The key is made in memory and never written
//!   to disk. The certificate is renewed when two thirds of its life have passed, and on `SIGHUP`
//!   when `[server.tls]` changed.
//!
//! Before anything is handed to Rocket the material is checked: the chain parses, the key parses
//! and belongs to the leaf, and the leaf has not expired. A bad file at start stops the daemon; a
//! bad file at reload keeps the running listener and logs why.

use crate::app::{App, Caller};
use crate::config::TlsSettings;
use crate::issue::IssueInput;
use der::Decode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The token id recorded in audit records of certificates the daemon issues for itself.
pub const DAEMON_TOKEN_ID: &str = "daemon";

/// A checked certificate chain and key for the listener.
#[derive(Clone)]
pub struct TlsMaterial {
    /// PEM chain, leaf first.
    pub chain_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: Zeroizing<Vec<u8>>,
    /// The leaf, DER (what the readiness probe pins).
    pub leaf_der: Vec<u8>,
    /// SHA-256 of the leaf, hex (for logs).
    pub fingerprint: String,
    /// End of the leaf's validity.
    pub not_after: OffsetDateTime,
    /// When to replace a certificate issued from a role (two thirds into its life).
    pub renew_at: Option<OffsetDateTime>,
    /// Where it came from, for logs.
    pub origin: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("origin", &self.origin)
            .field("fingerprint", &self.fingerprint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Checks `chain_pem` and `key_pem` and describes them.
    ///
    /// # Errors
    /// A sentence: no certificate, no key, a key that does not belong to the leaf, an expired
    /// leaf.
    pub fn from_pem(
        chain_pem: Vec<u8>,
        key_pem: Zeroizing<Vec<u8>>,
        origin: String,
    ) -> Result<TlsMaterial, String> {
        let certs = CertificateDer::pem_slice_iter(&chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{origin}: the certificate chain is not valid PEM: {e}"))?;
        let Some(leaf) = certs.first() else {
            return Err(format!("{origin}: no certificate in the chain"));
        };
        let leaf_der = leaf.as_ref().to_vec();
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!("{origin}: no usable private key (PKCS#8, SEC1 or PKCS#1 PEM): {e}")
        })?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("{origin}: the private key is not usable for TLS: {e}"))?;
        rustls::sign::CertifiedKey::new(certs.clone(), signing)
            .keys_match()
            .map_err(|e| {
                format!("{origin}: the private key does not belong to the certificate: {e}")
            })?;
        let cert = x509_cert::Certificate::from_der(&leaf_der)
            .map_err(|e| format!("{origin}: the leaf certificate does not parse: {e}"))?;
        let validity = &cert.tbs_certificate.validity;
        let not_after = scaivault_core::time_util::from_x509(&validity.not_after);
        let now = OffsetDateTime::now_utc();
        if not_after <= now {
            return Err(format!(
                "{origin}: the certificate expired on {}",
                scaivault_core::time_util::rfc3339(not_after)
            ));
        }
        let not_before = scaivault_core::time_util::from_x509(&validity.not_before);
        if not_before > now {
            tracing::warn!(origin = %origin, not_before = %scaivault_core::time_util::rfc3339(not_before), "the listener certificate is not valid yet");
        }
        Ok(TlsMaterial {
            chain_pem,
            key_pem,
            fingerprint: hex::encode(Sha256::digest(&leaf_der)),
            leaf_der,
            not_after,
            renew_at: None,
            origin,
        })
    }

    /// Rocket's TLS configuration for this material.
    pub fn rocket_config(&self) -> rocket::config::TlsConfig {
        rocket::config::TlsConfig::from_bytes(&self.chain_pem, &self.key_pem)
    }

    /// Whether `other` serves the same certificate and key.
    pub fn same_as(&self, other: &TlsMaterial) -> bool {
        self.chain_pem == other.chain_pem && *self.key_pem == *other.key_pem
    }
}

/// Reads and checks `cert_file` and `key_file`.
///
/// # Errors
/// A sentence naming the file (never the key's content).
pub fn load_files(cert_file: &Path, key_file: &Path) -> Result<TlsMaterial, String> {
    let chain = std::fs::read(cert_file).map_err(|e| {
        format!(
            "cannot read server.tls.cert_file {}: {e}",
            cert_file.display()
        )
    })?;
    let key = Zeroizing::new(std::fs::read(key_file).map_err(|e| {
        format!(
            "cannot read server.tls.key_file {}: {e}",
            key_file.display()
        )
    })?);
    TlsMaterial::from_pem(
        chain,
        key,
        format!("TLS certificate {}", cert_file.display()),
    )
}

/// Issues the listener's certificate from `settings.role` through the ordinary issuance path.
///
/// # Errors
/// A sentence: unknown tenant or role, a request the role refuses, token or database failures.
pub async fn issue_from_role(app: &App, settings: &TlsSettings) -> Result<TlsMaterial, String> {
    let role = settings.role.clone().unwrap_or_default();
    let tenant_name = settings.tenant.clone();
    let tenants = app
        .db(|s| s.read(|tx| tx.list_tenants()).map_err(Into::into))
        .await
        .map_err(|e| format!("cannot read the tenants: {}", e.detail))?;
    let tenant = tenants
        .into_iter()
        .find(|t| t.name == tenant_name)
        .ok_or_else(|| format!("server.tls.tenant {tenant_name:?} does not exist"))?;
    let caller = Caller {
        tenant_id: tenant.id,
        token_id: DAEMON_TOKEN_ID.into(),
        policies: Vec::new(),
        request_id: scaivault_core::ids::new_id("req"),
        cache_generation: app.issue_cache.generation(),
    };
    let input = IssueInput {
        common_name: settings.common_name.clone(),
        alt_names: settings.alt_names.clone(),
        ip_sans: settings.ip_sans.clone(),
        uri_sans: Vec::new(),
        ttl: settings.ttl.clone(),
        pkcs8: true,
    };
    let res = crate::issue::issue(app, &caller, &role, input, crate::issue::Lookup::Fresh).await;
    let issued = app
        .finish(&caller, "certificate.issue", Some(&role), res)
        .await
        .map_err(|e| {
            format!(
                "cannot issue the listener certificate from role {role:?} of tenant \
                 {tenant_name:?}: {} ({})",
                e.detail, e.code
            )
        })?;
    let key = issued
        .private_key
        .ok_or_else(|| "the issuance returned no private key".to_owned())?;
    // Serve the leaf and the intermediates; the root is the relying party's trust anchor.
    let mut chain = issued.certificate.clone();
    let n = issued.ca_chain.len();
    for pem in issued.ca_chain.iter().take(n.saturating_sub(1)) {
        chain.push_str(pem);
    }
    let origin = format!(
        "TLS certificate serial {} from role {role:?}",
        issued.serial
    );
    let mut material = TlsMaterial::from_pem(
        chain.into_bytes(),
        Zeroizing::new(key.as_bytes().to_vec()),
        origin,
    )?;
    let not_before = scaivault_core::time_util::parse_rfc3339(&issued.not_before)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let life = material.not_after - not_before;
    material.renew_at = Some(not_before + life * 2 / 3);
    tracing::info!(
        serial = %issued.serial,
        role = %role,
        not_after = %issued.not_after,
        "issued the API listener's certificate"
    );
    Ok(material)
}

/// The listener's material for `settings`: read from files or issued from a role.
///
/// # Errors
/// As [`load_files`] and [`issue_from_role`].
pub async fn material(app: &App, settings: &TlsSettings) -> Result<Arc<TlsMaterial>, String> {
    let m = match (&settings.cert_file, &settings.key_file) {
        (Some(c), Some(k)) => {
            let (c, k) = (c.clone(), k.clone());
            tokio::task::spawn_blocking(move || load_files(&c, &k))
                .await
                .map_err(|e| format!("reading the TLS files: {e}"))??
        }
        _ => issue_from_role(app, settings).await?,
    };
    tracing::info!(
        origin = %m.origin,
        sha256 = %m.fingerprint,
        not_after = %scaivault_core::time_util::rfc3339(m.not_after),
        "TLS certificate for the API listener"
    );
    Ok(Arc::new(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl(args: &[&str]) -> bool {
        std::process::Command::new("openssl")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn checks_that_key_and_certificate_belong_together() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        let ok = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p("a.key"),
            "-out",
            &p("a.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=a",
        ]) && openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p("b.key"),
            "-out",
            &p("b.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=b",
        ]);
        if !ok {
            eprintln!("openssl missing: skipped");
            return;
        }
        let m = load_files(Path::new(&p("a.pem")), Path::new(&p("a.key"))).unwrap();
        assert_eq!(m.fingerprint.len(), 64);
        assert!(m.not_after > OffsetDateTime::now_utc());
        let e = load_files(Path::new(&p("a.pem")), Path::new(&p("b.key"))).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let e = load_files(Path::new(&p("a.key")), Path::new(&p("a.key"))).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = load_files(Path::new(&p("nope.pem")), Path::new(&p("a.key"))).unwrap_err();
        assert!(e.contains("cannot read server.tls.cert_file"), "{e}");
    }
}
