//! The crate's one error type. Each variant names the domain failure and carries a stable `code`
//! (the API's problem `code`) and a [`ErrorKind`] that the daemon maps to an HTTP status in one
//! place.

/// The crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How an error is to be treated by callers: the daemon maps each kind to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400).
    Invalid,
    /// A state conflict (409).
    Conflict,
    /// A dependency (token, database) is not reachable (503).
    Unavailable,
    /// A bug or an inconsistency on our side (500).
    Internal,
}

/// Errors of the CA core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of a request is invalid; `code` is the stable problem code.
    #[error("{detail}")]
    Invalid {
        /// Stable snake_case code, e.g. `invalid_key_type`.
        code: &'static str,
        /// Human-readable detail naming the offending value.
        detail: String,
    },
    /// The to-be-signed object broke the profile: nothing was signed.
    #[error("profile violation: {0}")]
    ProfileViolation(String),
    /// The token's own signature did not verify under its public key: nothing is handed out.
    #[error("the token produced a signature that does not verify: {0}")]
    TokenSignatureInvalid(String),
    /// A signature did not verify.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    /// DER or PEM that does not parse.
    #[error("cannot decode {what}: {detail}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] scaivault_hsm::Error),
    /// Encoding our own structures failed (a bug).
    #[error("encoding failed: {0}")]
    Encode(String),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            detail: detail.into(),
        }
    }

    /// The kind, for the single HTTP mapping in the daemon.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::BadSignature(_) | Error::Decode { .. } => {
                ErrorKind::Invalid
            }
            Error::Hsm(e) if e.is_unavailable() => ErrorKind::Unavailable,
            // A key the daemon relies on is gone from the token (deleted by hand, a token
            // restored from an older copy): unavailable until it is back, not a daemon fault.
            Error::Hsm(
                scaivault_hsm::Error::KeyNotFound { .. }
                | scaivault_hsm::Error::PublicKeyMissing { .. },
            ) => ErrorKind::Unavailable,
            Error::Hsm(scaivault_hsm::Error::UnsupportedKey(_)) => ErrorKind::Invalid,
            Error::Hsm(scaivault_hsm::Error::DuplicateLabel(_)) => ErrorKind::Conflict,
            Error::Hsm(_)
            | Error::ProfileViolation(_)
            | Error::TokenSignatureInvalid(_)
            | Error::Encode(_) => ErrorKind::Internal,
        }
    }

    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { code, .. } => code,
            Error::ProfileViolation(_) => "profile_violation",
            Error::BadSignature(_) => "bad_signature",
            Error::TokenSignatureInvalid(_) => "hsm_signature_invalid",
            Error::Hsm(scaivault_hsm::Error::DuplicateLabel(_)) => "key_label_taken",
            Error::Decode { .. } => "invalid_encoding",
            Error::Hsm(scaivault_hsm::Error::UnsupportedKey(_)) => "invalid_key_type",
            Error::Hsm(e) if e.is_unavailable() => "hsm_unavailable",
            Error::Hsm(
                scaivault_hsm::Error::KeyNotFound { .. }
                | scaivault_hsm::Error::PublicKeyMissing { .. },
            ) => "hsm_key_missing",
            Error::Hsm(_) => "hsm_error",
            Error::Encode(_) => "internal_error",
        }
    }

    pub(crate) fn decode(what: &'static str, e: impl std::fmt::Display) -> Self {
        Error::Decode {
            what,
            detail: e.to_string(),
        }
    }
}

impl From<der::Error> for Error {
    fn from(e: der::Error) -> Self {
        Error::Encode(e.to_string())
    }
}
