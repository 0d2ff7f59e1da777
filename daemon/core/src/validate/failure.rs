//! Why a validation failed: stable codes (the API's `errors[].code`) and the one mapping from
//! webpki's errors to them.

/// A reason the certificate is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// A certificate of the path is past its notAfter at the validation time.
    Expired,
    /// A certificate of the path is before its notBefore at the validation time.
    NotYetValid,
    /// No path to a trust anchor of the tenant (unknown issuer, or the path ended elsewhere).
    Untrusted,
    /// The leaf does not carry the requested DNS name, IP address or e-mail address.
    NameMismatch,
    /// A name in the path lies outside a CA's name constraints.
    NameConstraintViolation,
    /// The ExtendedKeyUsage (of the leaf or of a CA on the path) excludes the requested purpose,
    /// or the leaf's KeyUsage lacks a required bit.
    WrongPurpose,
    /// A CA's pathLenConstraint, or the deepest path we build, is exceeded.
    PathLengthExceeded,
    /// A signature on the path does not verify.
    BadSignature,
    /// A signature or key algorithm we do not accept (weak RSA, DSA, P-192, explicit curves…).
    UnsupportedAlgorithm,
    /// A certificate of the path is revoked (the message names the reason).
    Revoked,
    /// Revocation was to be checked and the status of a certificate could not be established.
    RevocationUnknown,
    /// An end-entity certificate is used as a CA, or a CA certificate as the end entity.
    InvalidBasicConstraints,
    /// A critical extension we do not process.
    UnsupportedCriticalExtension,
    /// The certificate breaks a rule of the RFC 5280 profile (the message cites the section).
    ProfileViolation,
    /// The path search gave up: too many candidates or signature checks (a pathological input).
    PathTooComplex,
    /// DER that does not decode.
    Malformed,
}

impl Code {
    /// Every code, in declaration order.
    pub const ALL: [Code; 16] = [
        Code::Expired,
        Code::NotYetValid,
        Code::Untrusted,
        Code::NameMismatch,
        Code::NameConstraintViolation,
        Code::WrongPurpose,
        Code::PathLengthExceeded,
        Code::BadSignature,
        Code::UnsupportedAlgorithm,
        Code::Revoked,
        Code::RevocationUnknown,
        Code::InvalidBasicConstraints,
        Code::UnsupportedCriticalExtension,
        Code::ProfileViolation,
        Code::PathTooComplex,
        Code::Malformed,
    ];

    /// Every code's name, as [`Code::ALL`] gives them (the API documents them as an enum).
    pub const NAMES: [&'static str; 16] = [
        "expired",
        "not_yet_valid",
        "untrusted",
        "name_mismatch",
        "name_constraint_violation",
        "wrong_purpose",
        "path_length_exceeded",
        "bad_signature",
        "unsupported_algorithm",
        "revoked",
        "revocation_unknown",
        "invalid_basic_constraints",
        "unsupported_critical_extension",
        "profile_violation",
        "path_too_complex",
        "malformed",
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Expired => "expired",
            Code::NotYetValid => "not_yet_valid",
            Code::Untrusted => "untrusted",
            Code::NameMismatch => "name_mismatch",
            Code::NameConstraintViolation => "name_constraint_violation",
            Code::WrongPurpose => "wrong_purpose",
            Code::PathLengthExceeded => "path_length_exceeded",
            Code::BadSignature => "bad_signature",
            Code::UnsupportedAlgorithm => "unsupported_algorithm",
            Code::Revoked => "revoked",
            Code::RevocationUnknown => "revocation_unknown",
            Code::InvalidBasicConstraints => "invalid_basic_constraints",
            Code::UnsupportedCriticalExtension => "unsupported_critical_extension",
            Code::ProfileViolation => "profile_violation",
            Code::PathTooComplex => "path_too_complex",
            Code::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason, with a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code.
    pub code: Code,
    /// What exactly is wrong, naming the certificate where known.
    pub message: String,
}

impl Failure {
    /// A new failure.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The code and a message for an error webpki returned from path building.
pub fn from_webpki(e: &webpki::Error) -> Failure {
    use webpki::Error as E;
    #[allow(deprecated)] // the deprecated variants are matched so that none falls through
    let (code, msg): (Code, String) = match e {
        E::CertExpired { time, not_after } => (
            Code::Expired,
            format!(
                "a certificate of the path expired at {} (validation time {})",
                unix(not_after.as_secs()),
                unix(time.as_secs())
            ),
        ),
        E::CertNotValidYet { time, not_before } => (
            Code::NotYetValid,
            format!(
                "a certificate of the path is valid only from {} (validation time {})",
                unix(not_before.as_secs()),
                unix(time.as_secs())
            ),
        ),
        E::UnknownIssuer => (
            Code::Untrusted,
            "no path to a trust anchor of this tenant".into(),
        ),
        E::CertNotValidForName(_) => (
            Code::NameMismatch,
            "the certificate is not valid for the requested name".into(),
        ),
        E::NameConstraintViolation => (
            Code::NameConstraintViolation,
            "a name in the path is outside a CA's name constraints (or of a form whose constraints are not supported)".into(),
        ),
        E::InvalidNetworkMaskConstraint | E::MalformedNameConstraint => (
            Code::NameConstraintViolation,
            format!("a CA's name constraints are malformed ({e:?})"),
        ),
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => (
            Code::WrongPurpose,
            "the extended key usage of a certificate on the path does not allow the requested purpose".into(),
        ),
        E::PathLenConstraintViolated => (
            Code::PathLengthExceeded,
            "a CA's pathLenConstraint is exceeded".into(),
        ),
        // No certificate's pathLenConstraint is at stake: the validator's own depth limit.
        E::MaximumPathDepthExceeded => (
            Code::PathTooComplex,
            format!(
                "the path would need more than {} intermediate CAs, the most this validator follows",
                super::MAX_PATH_INTERMEDIATES
            ),
        ),
        E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => (
            Code::BadSignature,
            format!("a signature on the path does not verify ({e:?})"),
        ),
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => (
            Code::UnsupportedAlgorithm,
            "a signature or key algorithm on the path is not accepted (ECDSA P-256/P-384, RSA 2048-8192 PKCS#1 or PSS, Ed25519 are)".into(),
        ),
        E::CertRevoked => (Code::Revoked, "a certificate of the path is revoked".into()),
        E::UnknownRevocationStatus
        | E::CrlExpired { .. }
        | E::InvalidCrlSignatureForPublicKey
        | E::IssuerNotCrlSigner
        | E::UnsupportedCrlSignatureAlgorithm
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKey
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
        | E::UnsupportedCrlIssuingDistributionPoint
        | E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedRevocationReason
        | E::UnsupportedRevocationReasonsPartitioning
        | E::InvalidCrlNumber => (
            Code::RevocationUnknown,
            format!("the revocation status could not be established ({e:?})"),
        ),
        E::CaUsedAsEndEntity => (
            Code::InvalidBasicConstraints,
            "the leaf is a CA certificate (BasicConstraints cA=TRUE)".into(),
        ),
        E::EndEntityUsedAsCa => (
            Code::InvalidBasicConstraints,
            "a certificate that is not a CA (no BasicConstraints cA=TRUE) issued another".into(),
        ),
        E::UnsupportedCriticalExtension => (
            Code::UnsupportedCriticalExtension,
            "a certificate of the path has a critical extension that is not supported".into(),
        ),
        E::MaximumSignatureChecksExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumNameConstraintComparisonsExceeded => (
            Code::PathTooComplex,
            format!("path building gave up ({e:?}): the input is too complex"),
        ),
        E::CertDistrusted => (
            Code::Untrusted,
            "a key on the path is explicitly distrusted".into(),
        ),
        E::InvalidCertValidity => (
            Code::Malformed,
            "a certificate's notBefore is after its notAfter".into(),
        ),
        E::InvalidSerialNumber => (
            Code::ProfileViolation,
            "a serial number is invalid (RFC 5280 §4.1.2.2)".into(),
        ),
        E::UnsupportedCertVersion => (
            Code::Malformed,
            "a certificate is not X.509 version 3".into(),
        ),
        E::MalformedDnsIdentifier | E::UnsupportedNameType => (
            Code::NameMismatch,
            format!("the name cannot be compared ({e:?})"),
        ),
        E::BadDer
        | E::BadDerTime
        | E::MalformedExtensions
        | E::ExtensionValueInvalid
        | E::TrailingData(_) => (
            Code::Malformed,
            format!("a certificate does not decode ({e:?})"),
        ),
        other => (Code::Malformed, format!("{other:?}")),
    };
    Failure::new(code, msg)
}

/// RFC 3339 for a Unix time in seconds.
pub fn unix(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map(crate::time_util::rfc3339)
        .unwrap_or_else(|_| format!("@{secs}"))
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn all_codes_are_listed_with_their_names() {
        // No wildcard: a new code fails to compile here until it is in `ALL`.
        let position = |c: Code| match c {
            Code::Expired => 0,
            Code::NotYetValid => 1,
            Code::Untrusted => 2,
            Code::NameMismatch => 3,
            Code::NameConstraintViolation => 4,
            Code::WrongPurpose => 5,
            Code::PathLengthExceeded => 6,
            Code::BadSignature => 7,
            Code::UnsupportedAlgorithm => 8,
            Code::Revoked => 9,
            Code::RevocationUnknown => 10,
            Code::InvalidBasicConstraints => 11,
            Code::UnsupportedCriticalExtension => 12,
            Code::ProfileViolation => 13,
            Code::PathTooComplex => 14,
            Code::Malformed => 15,
        };
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(position(*c), i);
        }
        assert_eq!(Code::ALL.map(Code::as_str), Code::NAMES);
    }
}
