//! The ACME client (RFC 8555, issue #7): ScaiVault obtains public certificates from Let's
//! Encrypt, ZeroSSL, BuyPass, Google or any RFC 8555 CA and keeps each one as a managed
//! certificate (`mc_…`) with versions.
//!
//! - `accounts`: registration at the CA (EAB, private directory roots), deactivation.
//! - `providers`: DNS providers for dns-01 (the providers themselves are `scaivault-dns`).
//! - `certs`: `POST /v1/pki/acme/issue` checks and the managed-certificate reads.
//! - `order`: one order's ACME steps; `worker`: runs one order (new order → authorizations → challenges → poll → finalize →
//!   download) in a background task; failures end in `failed` with the CA's detail.
//! - `challenge`: the http-01 and tls-alpn-01 (RFC 8737) responders.
//! - `renew`: the scheduler job: resumes orders left in flight by a restart and renews.
//!
//! Secrets (account credentials with the account key, managed-certificate keys, DNS provider
//! credentials) are stored as AES-256-GCM ciphertext under a data key that the token's
//! key-encryption key encrypts (`issue::seal`), never in plaintext.

pub mod accounts;
pub mod certs;
pub mod challenge;
mod client;
pub mod order;
pub mod providers;
pub mod renew;
pub mod worker;

use crate::app::App;
use crate::error::ApiError;
use rocket::http::Status;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

pub use client::account_builder;

/// ACME state shared by the API, the worker and the challenge listeners.
#[derive(Debug, Default)]
pub struct Runtime {
    /// Challenge answers the responders serve.
    pub challenges: Arc<challenge::Responses>,
    /// Managed certificates whose order runs in this process.
    running: Mutex<HashSet<String>>,
    /// Set when the daemon stops (see [`Runtime::stop`]).
    stopping: std::sync::atomic::AtomicBool,
    stop_notify: tokio::sync::Notify,
}

impl Runtime {
    /// The daemon stops: orders in flight give up where they are, before the challenge
    /// listeners close, and stay in flight in the database (the next start runs them again
    /// from a new order) instead of failing on the CA's "connection refused"; no order starts.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_notify.notify_waiters();
    }

    /// Whether [`Runtime::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once [`Runtime::stop`] has been called.
    pub async fn stopped(&self) {
        loop {
            let notified = self.stop_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopping() {
                return;
            }
            notified.await;
        }
    }

    /// Marks `id` running; false when it already runs.
    pub fn claim(&self, id: &str) -> bool {
        match self.running.lock() {
            Ok(mut set) => set.insert(id.to_owned()),
            Err(_) => false,
        }
    }

    /// Clears the running mark of `id`.
    pub fn release(&self, id: &str) {
        if let Ok(mut set) = self.running.lock() {
            set.remove(id);
        }
    }
}

/// Encrypts `text` under a fresh data key wrapped by the token's KEK: `(wrapped, sealed)`.
///
/// # Errors
/// Token failures.
pub async fn seal_text(app: &App, text: &str) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    crate::issue::seal(app, &Zeroizing::new(text.to_owned())).await
}

/// Decrypts what [`seal_text`] made.
///
/// # Errors
/// Internal when it does not decrypt (another token, tampering).
pub async fn unseal_text(
    app: &App,
    wrapped: Vec<u8>,
    sealed: Vec<u8>,
) -> Result<Zeroizing<String>, ApiError> {
    crate::issue::unseal(app, wrapped, sealed).await
}

/// Whether an instant-acme error is the CA's `badNonce` (to be retried with a fresh nonce).
pub fn is_bad_nonce(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
}

/// Retries an ACME call while the CA answers `badNonce` (instant-acme itself retries twice per
/// request; a CA rejecting many nonces, like pebble with `PEBBLE_WFE_NONCEREJECT`, needs more).
/// The expression is evaluated afresh on each attempt.
macro_rules! nonce_retry {
    ($call:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $call.await {
                Err(e) if $crate::acme::is_bad_nonce(&e) && attempt < 8 => {
                    attempt += 1;
                    tracing::debug!(attempt, "ACME badNonce; retrying");
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use nonce_retry;

/// The CA's own words for an error: its problem detail and type, or the transport failure.
pub fn ca_detail(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => problem_text(p),
        // A transport failure says whom it could not reach (as an account's creation does).
        _ if client::is_transport(e) => {
            format!("the ACME CA could not be reached: {}", with_causes(e))
        }
        other => with_causes(other),
    }
}

/// An error with its chain of causes, `: `-separated, each said once: hyper's "client error
/// (Connect)" alone does not tell an untrusted certificate from a closed port.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        next = cause.source();
    }
    s
}

/// A problem document as one line: `detail (type)` plus subproblems.
pub fn problem_text(p: &instant_acme::Problem) -> String {
    let mut s = p.detail.clone().unwrap_or_else(|| "no detail".into());
    if let Some(t) = &p.r#type {
        s.push_str(&format!(" ({t})"));
    }
    for sp in &p.subproblems {
        s.push_str(&format!("; {sp}"));
    }
    s
}

/// An instant-acme error as an API problem: the CA's refusals of our input are `400
/// acme_ca_rejected`, other CA problems and answers this client cannot use (not JSON, a missing
/// header) `502 acme_ca_error`, transport failures (connection, TLS, no answer in time) `502
/// acme_ca_unreachable`; each carries the CA's detail.
pub fn api_error(e: &instant_acme::Error) -> ApiError {
    const CLIENT_SIDE: &[&str] = &[
        "malformed",
        "invalidContact",
        "unsupportedContact",
        "externalAccountRequired",
        "rejectedIdentifier",
        "badCSR",
        "unsupportedIdentifier",
        "userActionRequired",
        "accountDoesNotExist",
        "unauthorized",
    ];
    match e {
        instant_acme::Error::Api(p) => {
            let kind = p
                .r#type
                .as_deref()
                .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
                .unwrap_or("");
            let detail = format!("the ACME CA refused: {}", problem_text(p));
            if CLIENT_SIDE.contains(&kind) {
                ApiError::bad_request("acme_ca_rejected", detail)
            } else {
                ApiError::new(Status::BadGateway, "acme_ca_error", detail)
            }
        }
        other if client::is_transport(other) => ApiError::new(
            Status::BadGateway,
            "acme_ca_unreachable",
            format!("the ACME CA could not be reached: {}", with_causes(other)),
        ),
        // This side: the account key, a request that could not be built.
        instant_acme::Error::Crypto
        | instant_acme::Error::KeyRejected
        | instant_acme::Error::Http(_) => ApiError::internal(with_causes(e)),
        // An answer this client cannot use: JSON it cannot read, a missing header or URL, a
        // feature the CA lacks.
        other => ApiError::new(
            Status::BadGateway,
            "acme_ca_error",
            format!(
                "the ACME CA's answer could not be used: {}",
                with_causes(other)
            ),
        ),
    }
}

/// Checks a name (accounts, DNS providers): 1-128 bytes, no control or invisible characters.
///
/// # Errors
/// `400 invalid_name`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty()
        || name.len() > 128
        || name.chars().any(scaivault_core::name::is_hidden)
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("name {name:?} must be 1-128 bytes without control or invisible characters"),
        ));
    }
    Ok(())
}
