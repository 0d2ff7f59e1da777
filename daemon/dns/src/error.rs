//! The crate's one error type.

/// What went wrong with a DNS provider. [`DnsError::code`] is the stable problem code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// `type` is not one of [`crate::KINDS`].
    #[error("unknown DNS provider type `{0}`")]
    UnknownKind(String),
    /// A config field is missing or malformed.
    #[error("invalid DNS provider config: `{field}`: {detail}")]
    InvalidConfig {
        /// The offending key.
        field: String,
        /// Why.
        detail: String,
    },
    /// The provider's API or server refused or failed (its own message, no credentials).
    #[error("DNS provider error: {0}")]
    Provider(String),
    /// The record was not served by every authoritative server in time.
    #[error("TXT record at {fqdn} not visible on the authoritative servers after {secs} s")]
    PropagationTimeout {
        /// The record's name.
        fqdn: String,
        /// The timeout.
        secs: u64,
    },
}

impl DnsError {
    /// The stable problem `code`.
    pub fn code(&self) -> &'static str {
        match self {
            DnsError::UnknownKind(_) => "dns_provider_unknown_type",
            DnsError::InvalidConfig { .. } => "dns_provider_invalid_config",
            DnsError::Provider(_) => "dns_provider_error",
            DnsError::PropagationTimeout { .. } => "dns_propagation_timeout",
        }
    }
}
