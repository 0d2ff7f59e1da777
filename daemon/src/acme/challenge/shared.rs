//! The challenge answers of a cluster, in the database (`acme_challenge_answers`, migration 013).
//!
//! With `[storage] backend = "postgres"` ACME orders run on the leader, but the CA's validation
//! request may reach any node behind the load balancer. The order worker writes each http-01 and
//! tls-alpn-01 answer to the table before it tells the CA the challenge is ready, and deletes it
//! when the order ends (the leader's scheduler deletes leftovers older than a day, from a node that
//! died mid-order). A responder that does not find an answer in its own memory looks here.
//!
//! - Every store call runs on the blocking pool (the PostgreSQL client is synchronous), at most
//!   [`LOOKUPS`] at a time: the listeners face the Internet unauthenticated, so a flood of
//!   requests for unknown tokens cannot take the database pool from the API.
//! - Only well-formed keys are looked up: an http-01 token is base64url (RFC 8555 §8.1), a
//!   tls-alpn-01 name is a DNS name; anything else is a miss without a query.
//! - A tls-alpn-01 certificate (a fresh P-256 key and a signature) made from a stored digest is
//!   kept for [`CERT_TTL`] and reused while the stored digest is the same: the CA connects several
//!   times per validation (multi-perspective), and the digest is read on each handshake anyway,
//!   so a new order for the same name is never answered with the previous order's certificate.

use super::tls_alpn_certificate;
use rustls::sign::CertifiedKey;
use scaivault_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// `kind` of an http-01 answer: `name` is the token, `value` the key authorization.
pub const HTTP_01: &str = "http-01";
/// `kind` of a tls-alpn-01 answer: `name` is the lowercase DNS name, `value` the hex SHA-256 of
/// the key authorization.
pub const TLS_ALPN_01: &str = "tls-alpn-01";
/// How long a certificate made from a stored answer is reused.
pub const CERT_TTL: Duration = Duration::from_secs(60);
/// Database lookups in flight at most (per node, both listeners).
pub const LOOKUPS: usize = 8;
/// Certificates kept at most.
const MAX_CACHED: usize = 256;

/// The stored answers, for the responders of a node of a cluster.
#[derive(Debug, Clone)]
pub struct SharedAnswers {
    store: Arc<Store>,
    lookups: Arc<Semaphore>,
    certs: Arc<Mutex<HashMap<String, Cached>>>,
}

#[derive(Debug)]
struct Cached {
    digest: String,
    made: Instant,
    key: Arc<CertifiedKey>,
}

impl SharedAnswers {
    /// Answers stored in `store` (the cluster's PostgreSQL database).
    pub fn new(store: Arc<Store>) -> Self {
        SharedAnswers {
            store,
            lookups: Arc::new(Semaphore::new(LOOKUPS)),
            certs: Arc::default(),
        }
    }

    /// The stored key authorization of http-01 `token`.
    pub async fn http(&self, token: &str) -> Option<String> {
        if !is_token(token) {
            return None;
        }
        self.lookup(HTTP_01, token.to_owned()).await
    }

    /// The RFC 8737 certificate for `name` from its stored digest.
    pub async fn tls(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if !is_dns_name(&name) {
            return None;
        }
        let Some(hex_digest) = self.lookup(TLS_ALPN_01, name.clone()).await else {
            if let Ok(mut m) = self.certs.lock() {
                m.remove(&name);
            }
            return None;
        };
        if let Some(key) = self.cached(&name, &hex_digest) {
            return Some(key);
        }
        let made = hex::decode(&hex_digest)
            .map_err(|e| e.to_string())
            .and_then(|d| tls_alpn_certificate(&name, &d));
        let key = match made {
            Ok(k) => Arc::new(k),
            Err(e) => {
                tracing::warn!(%name, error = %e, "stored tls-alpn-01 answer unusable");
                return None;
            }
        };
        if let Ok(mut m) = self.certs.lock() {
            m.retain(|_, c| c.made.elapsed() < CERT_TTL);
            if m.len() < MAX_CACHED {
                let c = Cached {
                    digest: hex_digest,
                    made: Instant::now(),
                    key: key.clone(),
                };
                m.insert(name, c);
            }
        }
        Some(key)
    }

    fn cached(&self, name: &str, digest: &str) -> Option<Arc<CertifiedKey>> {
        let m = self.certs.lock().ok()?;
        let c = m.get(name)?;
        (c.digest == digest && c.made.elapsed() < CERT_TTL).then(|| c.key.clone())
    }

    async fn lookup(&self, kind: &'static str, name: String) -> Option<String> {
        let _permit = self.lookups.acquire().await.ok()?;
        let store = self.store.clone();
        let read = move || store.read(|tx| tx.challenge_answer(kind, &name));
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(kind, error = %e, "stored challenge answer unreadable");
                None
            }
            Err(e) => {
                tracing::warn!(kind, error = %e, "stored challenge answer lookup failed");
                None
            }
        }
    }
}

/// A token as RFC 8555 §8.1 makes them: base64url, no padding (at most 256 characters here).
fn is_token(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A lowercase DNS name (LDH labels, dots).
fn is_dns_name(n: &str) -> bool {
    (1..=253).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_are_looked_up() {
        assert!(is_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        assert!(!is_token(""));
        assert!(!is_token("a/../b"));
        assert!(!is_token("a%20b"));
        assert!(!is_token(&"a".repeat(257)));
        assert!(is_dns_name("www.example-1.test"));
        assert!(!is_dns_name("WWW.example.test"));
        assert!(!is_dns_name("a b"));
        assert!(!is_dns_name(""));
    }
}
