//! DNS-01 providers for the ACME client (issue #7).
//!
//! The daemon stores a provider as `(kind, config)` — `config` is the JSON object of
//! `POST /v1/pki/acme/dns-providers` — and asks this crate for a [`DnsProvider`]. The ACME
//! order worker then calls [`present_and_wait`] for each dns-01 challenge and [`cleanup`]
//! afterwards. Nothing here touches the database or the HSM.
//!
//! Interface contract (the ACME worker in `daemon/src/acme` is written against it):
//! - [`validate`] checks a config before it is stored and names the offending field;
//! - [`secret_keys`] lists the config keys that are secrets: they are stored encrypted and never
//!   returned by the API;
//! - [`build`] makes a provider from a validated config;
//! - [`present_and_wait`] follows a CNAME at `_acme-challenge.<domain>`, creates the TXT record,
//!   and waits until the zone's authoritative servers serve it (or `propagation_timeout` passes);
//! - [`cleanup`] removes exactly the record that was presented.

mod error;

pub use error::DnsError;

use std::net::SocketAddr;
use std::time::Duration;

/// The provider kinds the API accepts.
pub const KINDS: &[&str] = &["route53", "cloudflare", "google", "rfc2136", "powerdns"];

/// One DNS provider: creates and deletes TXT records in a zone it controls.
#[async_trait::async_trait]
pub trait DnsProvider: Send + Sync + std::fmt::Debug {
    /// Adds the TXT record `value` at `fqdn` (absolute, with the trailing dot), keeping any
    /// other TXT values already there (two names of one order may share a challenge name).
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;
    /// Removes the TXT value `value` at `fqdn`, leaving other values.
    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;
}

/// Options every provider accepts in its config (`propagation_timeout`, `resolvers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// How long [`present_and_wait`] waits for the authoritative servers (default 120 s).
    pub propagation_timeout: Duration,
    /// Recursive resolvers used for CNAME and NS lookups; empty means the system's.
    pub resolvers: Vec<SocketAddr>,
}

/// A record that [`present_and_wait`] created, to be passed to [`cleanup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The name the record was written at, after following any CNAME.
    pub fqdn: String,
    /// The TXT value.
    pub value: String,
}

/// Checks `config` for provider `kind`.
pub fn validate(kind: &str, _config: &serde_json::Value) -> Result<(), DnsError> {
    Err(DnsError::UnknownKind(kind.to_string()))
}

/// The config keys of `kind` that hold secrets.
pub fn secret_keys(_kind: &str) -> &'static [&'static str] {
    &[]
}

/// The common options of a provider config.
pub fn options(_config: &serde_json::Value) -> Result<Options, DnsError> {
    Ok(Options {
        propagation_timeout: Duration::from_secs(120),
        resolvers: Vec::new(),
    })
}

/// Makes the provider of `kind` from a config that passed [`validate`].
pub fn build(kind: &str, _config: &serde_json::Value) -> Result<Box<dyn DnsProvider>, DnsError> {
    Err(DnsError::UnknownKind(kind.to_string()))
}

/// The dns-01 step for `domain` (without `*.`): follow `_acme-challenge.<domain>`'s CNAME, present
/// the TXT value, wait until it is served.
pub async fn present_and_wait(
    provider: &dyn DnsProvider,
    _opts: &Options,
    domain: &str,
    value: &str,
) -> Result<Presented, DnsError> {
    let fqdn = format!("_acme-challenge.{}.", domain.trim_end_matches('.'));
    provider.present(&fqdn, value).await?;
    Ok(Presented {
        fqdn,
        value: value.to_string(),
    })
}

/// Removes a record made by [`present_and_wait`].
pub async fn cleanup(provider: &dyn DnsProvider, presented: &Presented) -> Result<(), DnsError> {
    provider.cleanup(&presented.fqdn, &presented.value).await
}
