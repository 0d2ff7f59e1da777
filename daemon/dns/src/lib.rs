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
//!
//! Providers (one file each under `providers/`, see `docs/DNS-PROVIDERS.md`): `rfc2136` (TSIG
//! dynamic updates), `powerdns` (HTTP API), `route53` (SigV4), `cloudflare` (API v4 token),
//! `google` (Cloud DNS v1, service-account JWT). None puts a credential in an error or in its
//! `Debug` output.

mod config;
mod dns;
mod error;
mod http;
mod propagation;
mod providers;

pub use error::DnsError;

use std::net::SocketAddr;
use std::time::Duration;

use config::Fields;

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
    /// How long [`present_and_wait`] waits for the record to be served (default 120 s; zero:
    /// no wait).
    pub propagation_timeout: Duration,
    /// Servers for the CNAME lookups that, when set, are also the servers that must serve the
    /// record; empty means the system's resolvers, which then find the zone's NS servers to ask
    /// on port 53. See [`present_and_wait`].
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

/// Checks `config` for provider `kind`: every key it needs is there and well-formed, and no key
/// is unknown. Nothing is sent over the network.
pub fn validate(kind: &str, config: &serde_json::Value) -> Result<(), DnsError> {
    parse(kind, config).map(drop)
}

/// The config keys of `kind` that hold secrets (empty for an unknown kind).
pub fn secret_keys(kind: &str) -> &'static [&'static str] {
    providers::entry(kind).map(|e| e.secret_keys).unwrap_or(&[])
}

/// The common options of a provider config (`propagation_timeout`, `resolvers`); other keys are
/// not looked at.
///
/// `propagation_timeout` is a duration string (`"90s"`, `"2m"`, `"1m30s"`, `"1h"`) or a number
/// of seconds, at most 2 h, default 120 s; **0 disables the wait**: [`present_and_wait`] then
/// returns as soon as the provider accepted the record (CNAMEs are still followed).
/// `resolvers` is a list of `"ip:port"`; see [`present_and_wait`] for what they are used for.
pub fn options(config: &serde_json::Value) -> Result<Options, DnsError> {
    let mut f = Fields::new(config)?;
    Ok(Options {
        propagation_timeout: f.propagation_timeout()?,
        resolvers: f.resolvers()?,
    })
}

/// Makes the provider of `kind` from a config that passed [`validate`] (it is checked again).
pub fn build(kind: &str, config: &serde_json::Value) -> Result<Box<dyn DnsProvider>, DnsError> {
    parse(kind, config)
}

fn parse(kind: &str, config: &serde_json::Value) -> Result<Box<dyn DnsProvider>, DnsError> {
    let entry = providers::entry(kind)?;
    let mut f = Fields::new(config)?;
    let provider = (entry.parse)(&mut f)?;
    f.propagation_timeout()?;
    f.resolvers()?;
    f.finish()?;
    Ok(provider)
}

/// The dns-01 step for `domain` (without `*.`): follow `_acme-challenge.<domain>`'s CNAME, present
/// the TXT value, wait until it is served.
///
/// - CNAMEs at `_acme-challenge.<domain>` are followed (at most 8, loops refused) through
///   `opts.resolvers`, or the system's resolvers when that is empty; the record is written at the
///   last name.
/// - Then, unless `opts.propagation_timeout` is zero, it polls (every 0.5 s, backing off to 5 s)
///   until every server that must serve the record does: with no `resolvers`, every address of
///   every NS of the zone (found through the system's resolvers), asked without recursion on
///   port 53; with `resolvers`, those servers themselves (so they should be the zone's
///   authoritative servers, on any port, or resolvers whose view matters and that do not hold a
///   stale negative answer). [`DnsError::PropagationTimeout`] when the time is up.
/// - If the wait fails, the record is removed again (best effort) before the error is returned.
pub async fn present_and_wait(
    provider: &dyn DnsProvider,
    opts: &Options,
    domain: &str,
    value: &str,
) -> Result<Presented, DnsError> {
    let presented = target(opts, domain, value).await?;
    present_at_and_wait(provider, opts, &presented).await?;
    Ok(presented)
}

/// The first half of [`present_and_wait`]: where the record for `domain` goes (CNAMEs at
/// `_acme-challenge.<domain>` followed), without writing anything — so that a caller can note it
/// before it exists, and withdraw it after a crash.
///
/// # Errors
/// An invalid domain; a CNAME loop or chain over 8; lookup failures.
pub async fn target(opts: &Options, domain: &str, value: &str) -> Result<Presented, DnsError> {
    let domain = domain.trim_start_matches("*.").trim_end_matches('.');
    let start = dns::name(&format!("_acme-challenge.{domain}"))
        .map_err(|e| DnsError::Provider(format!("invalid domain: {e}")))?;
    let lookup = propagation::lookup_servers(&opts.resolvers)?;
    let target = propagation::follow_cname(&lookup, start).await?;
    Ok(Presented {
        fqdn: target.to_ascii(),
        value: value.to_string(),
    })
}

/// The second half of [`present_and_wait`]: writes `presented` and waits until it is served
/// (removing it again, best effort, when the wait fails).
///
/// # Errors
/// The provider's; [`DnsError::PropagationTimeout`].
pub async fn present_at_and_wait(
    provider: &dyn DnsProvider,
    opts: &Options,
    presented: &Presented,
) -> Result<(), DnsError> {
    let value = presented.value.as_str();
    let target = dns::name(&presented.fqdn)
        .map_err(|e| DnsError::Provider(format!("invalid record name: {e}")))?;
    provider.present(&presented.fqdn, value).await?;
    if opts.propagation_timeout.is_zero() {
        return Ok(());
    }
    let waited = match propagation::check_servers(&opts.resolvers, &target).await {
        Ok((servers, recursion)) => {
            propagation::wait(
                &servers,
                recursion,
                &target,
                value,
                opts.propagation_timeout,
            )
            .await
        }
        Err(e) => Err(e),
    };
    if waited.is_err() {
        // Not served: withdrawn here, so that callers of `present_and_wait` (which get no
        // `Presented` on failure) leave nothing behind.
        let _ = provider.cleanup(&presented.fqdn, value).await;
    }
    waited
}

/// Removes a record made by [`present_and_wait`].
pub async fn cleanup(provider: &dyn DnsProvider, presented: &Presented) -> Result<(), DnsError> {
    provider.cleanup(&presented.fqdn, &presented.value).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_provider() {
        assert_eq!(KINDS.len(), providers::PROVIDERS.len());
        for kind in KINDS {
            assert!(providers::entry(kind).is_ok(), "{kind}");
        }
    }
}
