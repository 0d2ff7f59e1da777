//! The request and the verdict of a validation.

use super::revocation::RevocationSource;
use super::Failure;
use std::net::IpAddr;
use time::OffsetDateTime;
use webpki::KeyPurposeIdIter;
use x509_cert::ext::pkix::KeyUsages;

/// The most intermediate certificates one validation looks at (supplied plus the tenant's own).
pub const MAX_INTERMEDIATES: usize = 1024;
/// The most intermediate CAs a path may hold between the leaf and its anchor: rustls-webpki's
/// fixed limit (RFC 5280 sets none). CA creation refuses a hierarchy deeper than this, so that
/// every leaf ScaiVault issues validates here.
pub const MAX_PATH_INTERMEDIATES: usize = 6;
/// The largest certificate accepted, in octets.
pub const MAX_CERT_BYTES: usize = 64 * 1024;
/// The most CRLs one validation takes.
pub const MAX_CRLS: usize = 32;

/// What the leaf is to be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// TLS server: EKU `serverAuth` when the leaf (or a CA on the path) has an EKU extension.
    ServerAuth,
    /// TLS client: EKU `clientAuth`, likewise.
    ClientAuth,
    /// No purpose: any EKU is accepted (an empty EKU extension is still an error).
    Any,
}

impl Purpose {
    /// From the API name (`server_auth`, `client_auth`, `any`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "server_auth" => Purpose::ServerAuth,
            "client_auth" => Purpose::ClientAuth,
            "any" => Purpose::Any,
            _ => return None,
        })
    }
}

impl webpki::ExtendedKeyUsageValidator for Purpose {
    fn validate(&self, mut iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        match self {
            Purpose::ServerAuth => webpki::KeyUsage::server_auth().validate(iter),
            Purpose::ClientAuth => webpki::KeyUsage::client_auth().validate(iter),
            Purpose::Any => iter.try_for_each(|id| id.map(|_| ())),
        }
    }
}

/// An identity the leaf must carry (all given must match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerName {
    /// A DNS name, matched against dNSName SANs (wildcards per RFC 6125; never the CN).
    Dns(String),
    /// An IP address, matched against iPAddress SANs.
    Ip(IpAddr),
    /// An e-mail address, matched against rfc822Name SANs (domain case-insensitive).
    Email(String),
}

impl PeerName {
    /// A DNS reference name, checked for syntax (what webpki accepts as a DNS name; no wildcards).
    ///
    /// # Errors
    /// `invalid_dns_name`.
    pub fn dns(name: &str) -> crate::Result<Self> {
        rustls_pki_types::DnsName::try_from(name)
            .map(|_| PeerName::Dns(name.to_owned()))
            .map_err(|_| {
                crate::Error::invalid("invalid_dns_name", format!("{name:?} is not a DNS name"))
            })
    }
}

/// Where a trust anchor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorKind {
    /// A certificate the tenant added as a trust anchor.
    TrustAnchor,
    /// One of the tenant's own CAs.
    InternalCa,
}

impl AnchorKind {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            AnchorKind::TrustAnchor => "trust_anchor",
            AnchorKind::InternalCa => "internal_ca",
        }
    }
}

/// A trusted certificate.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// Its DER.
    pub der: Vec<u8>,
    /// Where it comes from.
    pub kind: AnchorKind,
    /// Its id (`ta_…`, `ca_…`; any label in tests).
    pub id: String,
}

/// Revocation checking: supplied CRLs and our own CAs' records.
#[derive(Clone, Copy)]
pub struct Revocation<'a> {
    /// DER CRLs (for CAs that are not ours).
    pub crls: &'a [Vec<u8>],
    /// The tenant's own revocation data.
    pub source: Option<&'a dyn RevocationSource>,
}

/// One validation.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The leaf, DER.
    pub leaf: &'a [u8],
    /// Untrusted certificates for path building, any order.
    pub intermediates: &'a [Vec<u8>],
    /// The trust store.
    pub anchors: &'a [Anchor],
    /// Required purpose.
    pub purpose: Purpose,
    /// Identities the leaf must carry.
    pub names: &'a [PeerName],
    /// KeyUsage bits the leaf must assert (when it has the extension, all of them; without the
    /// extension the key may be used for anything, RFC 5280 §4.2.1.3).
    pub key_usage: &'a [KeyUsages],
    /// The validation time (sub-second parts are dropped: RFC 5280 times have whole seconds).
    pub time: OffsetDateTime,
    /// The most intermediates on the path, not counting self-issued ones (`None`: webpki's 6).
    pub max_intermediates: Option<usize>,
    /// Check revocation, and how.
    pub revocation: Option<Revocation<'a>>,
}

/// One certificate of the reported chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCert {
    /// RFC 4514 subject.
    pub subject: String,
    /// Serial, uppercase hex pairs.
    pub serial_number: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint_sha256: String,
}

/// The trust anchor a verified path ends at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRef {
    /// Where it comes from.
    pub kind: AnchorKind,
    /// Its id.
    pub id: String,
}

/// The verdict.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whether the leaf is valid: a verified path exists and nothing failed.
    pub valid: bool,
    /// Leaf first, up to the anchor's certificate. When no path verified, the certificates that
    /// link by name as far as they go (signatures not checked).
    pub chain: Vec<ChainCert>,
    /// The anchor of the verified path (none when no path verified).
    pub anchor: Option<AnchorRef>,
    /// Every reason found; empty when valid.
    pub errors: Vec<Failure>,
}

impl Outcome {
    pub(super) fn failed(errors: Vec<Failure>, chain: Vec<ChainCert>) -> Self {
        Outcome {
            valid: false,
            chain,
            anchor: None,
            errors,
        }
    }
}
