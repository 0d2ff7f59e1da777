//! The providers, one file each. Adding one: a file with `SECRET_KEYS` and
//! `parse(&mut Fields) -> Result<Box<dyn DnsProvider>, DnsError>` (read every key it accepts
//! through `Fields`, build no network connection), one row in [`PROVIDERS`], and its kind in
//! [`crate::KINDS`].

use crate::config::Fields;
use crate::{DnsError, DnsProvider};

mod cloudflare;
mod google;
mod powerdns;
mod rfc2136;
mod route53;

/// One provider kind: its secret config keys and its config parser.
pub(crate) struct Entry {
    pub(crate) kind: &'static str,
    pub(crate) secret_keys: &'static [&'static str],
    pub(crate) parse: fn(&mut Fields<'_>) -> Result<Box<dyn DnsProvider>, DnsError>,
}

pub(crate) const PROVIDERS: &[Entry] = &[
    Entry {
        kind: "rfc2136",
        secret_keys: rfc2136::SECRET_KEYS,
        parse: rfc2136::parse,
    },
    Entry {
        kind: "powerdns",
        secret_keys: powerdns::SECRET_KEYS,
        parse: powerdns::parse,
    },
    Entry {
        kind: "route53",
        secret_keys: route53::SECRET_KEYS,
        parse: route53::parse,
    },
    Entry {
        kind: "cloudflare",
        secret_keys: cloudflare::SECRET_KEYS,
        parse: cloudflare::parse,
    },
    Entry {
        kind: "google",
        secret_keys: google::SECRET_KEYS,
        parse: google::parse,
    },
];

pub(crate) fn entry(kind: &str) -> Result<&'static Entry, DnsError> {
    PROVIDERS
        .iter()
        .find(|e| e.kind == kind)
        .ok_or_else(|| DnsError::UnknownKind(kind.to_string()))
}
