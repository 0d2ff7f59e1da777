//! Request rate limits (`[limits]` in the config): token buckets per API token, per tenant, and per
//! client IP (an IPv6 client's /64) on the unauthenticated CRL and OCSP endpoints. A refused request gets `429
//! rate_limited` with `Retry-After`. Each limit is off when its rate is 0 (the default, as in Vault
//! and step-ca); docs/OPERATIONS.md suggests production values.
//!
//! The buckets are `governor`'s keyed GCRA limiters (a well-kept crate; one atomic compare-and-swap
//! per check, no lock on the hot path). Idle keys are dropped by [`RateLimits::forget_idle`], which
//! the scheduler calls every tick, so memory stays bounded by the keys seen in one bucket period.

use crate::config::LimitsConfig;
use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

/// One keyed token bucket.
struct Bucket<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    fn new(rate: u32, burst: u32, what: &'static str) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Bucket {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            what,
        })
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(self.what, wait)
        })
    }
}

/// The daemon's rate limits, and how long a request body may take to arrive.
#[derive(Default)]
pub struct RateLimits {
    /// `[limits] body_timeout`.
    pub body_timeout: std::time::Duration,
    /// `[limits] header_timeout` (the relying-party listener).
    pub header_timeout: std::time::Duration,
    token: Option<Bucket<String>>,
    tenant: Option<Bucket<String>>,
    public_ip: Option<Bucket<IpAddr>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("token", &self.token.is_some())
            .field("tenant", &self.tenant.is_some())
            .field("public_ip", &self.public_ip.is_some())
            .field("body_timeout", &self.body_timeout)
            .field("header_timeout", &self.header_timeout)
            .finish()
    }
}

impl RateLimits {
    /// The limits of a configuration.
    pub fn new(c: &LimitsConfig) -> Self {
        let secs = scaivault_core::duration::parse_seconds(&c.body_timeout).unwrap_or(30);
        let head_secs = scaivault_core::duration::parse_seconds(&c.header_timeout).unwrap_or(10);
        RateLimits {
            body_timeout: std::time::Duration::from_secs(secs.max(1)),
            header_timeout: std::time::Duration::from_secs(head_secs.max(1)),
            token: Bucket::new(c.token_rate, c.token_burst, "API token"),
            tenant: Bucket::new(c.tenant_rate, c.tenant_burst, "tenant"),
            public_ip: Bucket::new(c.public_ip_rate, c.public_ip_burst, "client address"),
        }
    }

    /// Takes one request from the caller's token and tenant buckets.
    ///
    /// # Errors
    /// `429 rate_limited` with the wait.
    pub fn check_caller(&self, token_id: &str, tenant_id: &str) -> Result<(), ApiError> {
        if let Some(b) = &self.token {
            b.check(&token_id.to_owned())?;
        }
        if let Some(b) = &self.tenant {
            b.check(&tenant_id.to_owned())?;
        }
        Ok(())
    }

    /// Takes one request from the bucket of an unauthenticated client address.
    ///
    /// # Errors
    /// `429 rate_limited` with the wait.
    pub fn check_public(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match (&self.public_ip, ip) {
            (Some(b), Some(ip)) => b.check(&client_key(ip)),
            _ => Ok(()),
        }
    }

    /// Drops the state of keys whose buckets are full again (they behave as new).
    pub fn forget_idle(&self) {
        if let Some(b) = &self.token {
            b.limiter.retain_recent();
        }
        if let Some(b) = &self.tenant {
            b.limiter.retain_recent();
        }
        if let Some(b) = &self.public_ip {
            b.limiter.retain_recent();
        }
    }
}

/// The bucket of a client address: an IPv4 address (also written IPv4-mapped, IPv4-compatible, or
/// through the NAT64 well-known prefix `64:ff9b::/96`: each IPv4 client its own), or the /64 of
/// an IPv6 one — a single IPv6 host holds a /64 and may use a new address for every connection.
fn client_key(ip: IpAddr) -> IpAddr {
    const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000;
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let top = bits >> 32;
            if top == NAT64 || (top == 0 && bits > 1) {
                let v4 = u32::try_from(bits & u128::from(u32::MAX)).unwrap_or(0);
                return IpAddr::V4(std::net::Ipv4Addr::from(v4));
            }
            IpAddr::V6(std::net::Ipv6Addr::from(bits & !u128::from(u64::MAX)))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_clients_share_the_bucket_of_their_64() {
        let l = limits(0, 0, 1);
        let a: IpAddr = "2001:db8:1:2::a".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::b".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::a".parse().unwrap();
        // Burst 1 (see `limits`), shared by every address of the /64.
        assert!(l.check_public(Some(a)).is_ok());
        assert_eq!(l.check_public(Some(b)).unwrap_err().code, "rate_limited");
        assert!(
            l.check_public(Some(other)).is_ok(),
            "another /64 has its own bucket"
        );
        // IPv4, plain or IPv4-mapped, is one address per bucket.
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), v4);
        assert_ne!(client_key("192.0.2.8".parse().unwrap()), v4);
        // IPv4 clients behind NAT64 (or written IPv4-compatible) keep a bucket each.
        assert_eq!(client_key("64:ff9b::192.0.2.7".parse().unwrap()), v4);
        assert_eq!(client_key("::192.0.2.7".parse().unwrap()), v4);
        assert_ne!(client_key("64:ff9b::192.0.2.8".parse().unwrap()), v4);
    }

    fn limits(token: u32, tenant: u32, ip: u32) -> RateLimits {
        RateLimits::new(&LimitsConfig {
            token_rate: token,
            token_burst: 2,
            tenant_rate: tenant,
            tenant_burst: 3,
            public_ip_rate: ip,
            public_ip_burst: 1,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn buckets_refuse_past_the_burst_and_name_the_wait() {
        let l = limits(1, 0, 0);
        assert!(l.check_caller("t1", "a").is_ok());
        assert!(l.check_caller("t1", "a").is_ok());
        let e = l.check_caller("t1", "a").unwrap_err();
        assert_eq!((e.status.code, e.code), (429, "rate_limited"));
        assert!(e.retry_after.is_some_and(|s| (1..=2).contains(&s)), "{e:?}");
        // Another token has its own bucket.
        assert!(l.check_caller("t2", "a").is_ok());
    }

    #[test]
    fn the_tenant_bucket_is_shared_by_its_tokens() {
        let l = limits(0, 1, 0);
        for t in ["t1", "t2", "t3"] {
            assert!(l.check_caller(t, "a").is_ok());
        }
        assert!(l.check_caller("t4", "a").is_err());
        assert!(l.check_caller("t4", "b").is_ok());
    }

    #[test]
    fn off_by_default_and_per_address_when_on() {
        let off = RateLimits::new(&LimitsConfig::default());
        for _ in 0..1000 {
            assert!(off.check_caller("t", "a").is_ok());
            assert!(off.check_public(Some([127, 0, 0, 1].into())).is_ok());
        }
        let l = limits(0, 0, 1);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(l.check_public(a).is_ok());
        assert!(l.check_public(a).is_err());
        assert!(l.check_public(Some([10, 0, 0, 2].into())).is_ok());
        l.forget_idle();
    }
}
