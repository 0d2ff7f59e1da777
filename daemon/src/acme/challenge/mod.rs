//! The challenge responders.
//!
//! - http-01 (RFC 8555 §8.3, [`http`]): a small plain-HTTP/1.1 server on
//!   `[acme] http_challenge_listen` answering `GET /.well-known/acme-challenge/{token}` with the
//!   key authorization; anything else is `404`. One request per connection, 8 KiB and 10 s at most
//!   per request.
//! - tls-alpn-01 (RFC 8737, [`tls`]): a TLS server on `[acme] tls_challenge_listen` that offers
//!   only the ALPN protocol `acme-tls/1` and presents, for the SNI name, a self-signed certificate
//!   whose only SAN is that name and that carries the critical acmeIdentifier extension
//!   (1.3.6.1.5.5.7.1.31) with the SHA-256 of the key authorization. Handshakes without
//!   `acme-tls/1` or for an unknown name are refused.
//!
//! The order worker adds answers to [`Responses`] (this process's memory) before it tells the CA
//! a challenge is ready and removes them when the order ends. With several nodes on one
//! PostgreSQL database the worker runs on the leader only, but the CA's validation request may
//! reach any node behind the load balancer: the worker then also writes each answer to the
//! database, and on a miss in memory the responders look it up there ([`shared`]).

mod http;
pub mod shared;
mod tls;

use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

pub use shared::{SharedAnswers, HTTP_01, TLS_ALPN_01};

/// The ALPN protocol of RFC 8737.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers currently served.
#[derive(Debug, Default)]
pub struct Responses {
    http: RwLock<HashMap<String, String>>,
    tls: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// One tls-alpn-01 certificate can be presented per name at a time: orders that validate the
    /// same name with tls-alpn-01 take turns (see [`Responses::reserve_tls`]).
    tls_turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while an order may present tls-alpn-01 certificates for its names.
#[derive(Debug)]
pub struct TlsTurn(#[allow(dead_code)] Vec<tokio::sync::OwnedMutexGuard<()>>);

impl Responses {
    /// Waits until no other order validates any of `names` with tls-alpn-01 and reserves them
    /// until the returned value is dropped. Names are taken in sorted order, so two orders with
    /// overlapping names cannot wait for each other.
    pub async fn reserve_tls(&self, names: &[String]) -> TlsTurn {
        let mut sorted: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        sorted.sort();
        sorted.dedup();
        let mut guards = Vec::with_capacity(sorted.len());
        for n in sorted {
            let lock = match self.tls_turns.lock() {
                Ok(mut m) => m.entry(n).or_default().clone(),
                Err(_) => continue,
            };
            guards.push(lock.lock_owned().await);
        }
        TlsTurn(guards)
    }

    /// Serves `key_authorization` for http-01 `token`.
    pub fn add_http(&self, token: &str, key_authorization: &str) {
        if let Ok(mut m) = self.http.write() {
            m.insert(token.to_owned(), key_authorization.to_owned());
        }
    }

    /// Stops serving http-01 `token`.
    pub fn remove_http(&self, token: &str) {
        if let Ok(mut m) = self.http.write() {
            m.remove(token);
        }
    }

    fn http(&self, token: &str) -> Option<String> {
        self.http.read().ok()?.get(token).cloned()
    }

    /// Serves a tls-alpn-01 certificate for `name` proving `digest` (SHA-256 of the key
    /// authorization).
    ///
    /// # Errors
    /// Certificate generation failures (as text).
    pub fn add_tls(&self, name: &str, digest: &[u8]) -> Result<(), String> {
        let key = tls_alpn_certificate(name, digest)?;
        if let Ok(mut m) = self.tls.write() {
            m.insert(name.to_ascii_lowercase(), Arc::new(key));
        }
        Ok(())
    }

    /// Stops serving `name`.
    pub fn remove_tls(&self, name: &str) {
        if let Ok(mut m) = self.tls.write() {
            m.remove(&name.to_ascii_lowercase());
        }
    }

    fn tls(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls
            .read()
            .ok()?
            .get(&name.to_ascii_lowercase())
            .cloned()
    }
}

/// The RFC 8737 §3 certificate: self-signed, SAN = `name` only, critical acmeIdentifier.
fn tls_alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    if digest.len() != 32 {
        return Err("the acmeIdentifier digest must be 32 bytes".into());
    }
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(
        rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

/// Bound challenge listeners, ready to serve.
#[derive(Debug, Default)]
pub struct Listeners {
    http: Option<TcpListener>,
    tls: Option<TcpListener>,
}

/// Binds the configured listeners (none when not configured).
///
/// # Errors
/// The address cannot be bound (naming it).
pub async fn bind(http: Option<SocketAddr>, tls: Option<SocketAddr>) -> Result<Listeners, String> {
    let bind = |a: SocketAddr, key: &'static str| async move {
        TcpListener::bind(a)
            .await
            .map_err(|e| format!("acme.{key} {a}: {e}"))
    };
    Ok(Listeners {
        http: match http {
            Some(a) => Some(bind(a, "http_challenge_listen").await?),
            None => None,
        },
        tls: match tls {
            Some(a) => Some(bind(a, "tls_challenge_listen").await?),
            None => None,
        },
    })
}

/// Serves the bound listeners until the returned tasks are aborted. `shared`: the cluster's
/// stored answers, looked up on a miss in `responses` (`None` with SQLite: one node).
pub fn spawn(
    listeners: Listeners,
    responses: Arc<Responses>,
    shared: Option<SharedAnswers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(l) = listeners.http {
        tracing::info!(addr = ?l.local_addr().ok(), "ACME http-01 challenge listener");
        tasks.push(tokio::spawn(http::serve(
            l,
            responses.clone(),
            shared.clone(),
        )));
    }
    if let Some(l) = listeners.tls {
        tracing::info!(addr = ?l.local_addr().ok(), "ACME tls-alpn-01 challenge listener");
        tasks.push(tokio::spawn(tls::serve(l, responses, shared)));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn tls_alpn_certificate_has_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = tls_alpn_certificate("a.example.test", &digest).unwrap();
        let cert = x509_cert::Certificate::from_der(key.cert[0].as_ref()).unwrap();
        let exts = cert.tbs_certificate.extensions.unwrap();
        let acme = exts
            .iter()
            .find(|e| e.extn_id.to_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(acme.critical);
        // OCTET STRING (32 bytes) holding the digest.
        let mut want = vec![0x04, 0x20];
        want.extend_from_slice(&digest);
        assert_eq!(acme.extn_value.as_bytes(), want.as_slice());
        assert!(tls_alpn_certificate("a.example.test", &[0u8; 16]).is_err());
    }
}
