//! Revocation: CRLs supplied with the request (checked by webpki during path building) and the
//! revocation data of our own CAs (looked up through [`RevocationSource`] once a path is built).
//!
//! webpki runs with `UnknownStatusPolicy::Allow`, because a path may mix our CAs (no CRL needed:
//! the inventory is authoritative and current) with external CAs. Once webpki has built a path,
//! every link is accounted for here: a link whose issuer is one of our CAs is looked up in the
//! inventory; any other link needs a supplied CRL that covers it (issuer, scope and distribution
//! point, as webpki decides), or the status is unknown and the validation fails.

use super::failure::{Code, Failure};
use super::parsed::Parsed;
use const_oid::db::rfc5280 as oids;
use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::CrlDistributionPoints;

/// The status of one certificate according to our own records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Issued and not revoked.
    Good,
    /// Revoked.
    Revoked {
        /// RFC 5280 reason name (`key_compromise`, …).
        reason: String,
        /// When, RFC 3339.
        revoked_at: Option<String>,
    },
    /// The issuer is ours but the serial is not in its inventory.
    Unknown,
}

/// Revocation data of the tenant's own CAs.
pub trait RevocationSource {
    /// The status of the certificate with serial `serial` (DER INTEGER content octets) issued by
    /// the key `issuer_spki` (DER SubjectPublicKeyInfo), or `None` when that key is not one of
    /// ours.
    fn status(&self, issuer_spki: &[u8], serial: &[u8]) -> Option<Status>;
}

/// A supplied CRL, parsed twice: by webpki (which checks it during path building) and by
/// `x509-cert` (for the scope and conformance checks here).
pub struct Crl {
    /// For webpki.
    pub webpki: webpki::CertRevocationList<'static>,
    /// DER of the issuer name.
    pub issuer_der: Vec<u8>,
    /// The issuing distribution point, if any.
    idp: Option<IssuingDistributionPoint>,
    /// Its DER (the CRL's scope, with the issuer: which CRLs are versions of one another).
    idp_der: Option<Vec<u8>>,
    /// The CRL number's magnitude (big-endian, no leading zeros), when it has one.
    number: Option<Vec<u8>>,
    /// `thisUpdate`, seconds since the epoch.
    this_update: i64,
    /// Why the CRL cannot be relied on, if it cannot.
    defect: Option<String>,
    /// Issued after the validation time: not used at all (see [`Crl::check_time`]).
    pub not_yet_valid: bool,
}

impl Crl {
    /// Parses a CRL.
    ///
    /// # Errors
    /// A message when the DER is not a CRL either decoder accepts.
    pub fn new(der: &[u8]) -> Result<Self, String> {
        let webpki =
            webpki::OwnedCertRevocationList::from_der(der).map_err(|e| format!("webpki: {e:?}"))?;
        let list = CertificateList::from_der(der).map_err(|e| e.to_string())?;
        let tbs = &list.tbs_cert_list;
        let issuer_der = der::Encode::to_der(&tbs.issuer).map_err(|e| e.to_string())?;
        let exts = tbs.crl_extensions.as_deref().unwrap_or(&[]);
        let number = exts.iter().find(|e| e.extn_id == oids::ID_CE_CRL_NUMBER);
        // RFC 5280 §5.2.3: conforming CRL issuers MUST include the (non-critical) CRL number.
        let defect = match number {
            None => Some("the CRL has no CRL number (RFC 5280 §5.2.3)".to_owned()),
            Some(e) if e.critical => {
                Some("the CRL number is marked critical (RFC 5280 §5.2.3)".to_owned())
            }
            Some(_) if tbs.version != x509_cert::Version::V2 => {
                Some("the CRL is not version 2 (RFC 5280 §5.1.2.1)".to_owned())
            }
            Some(_) => None,
        };
        let idp_ext = exts
            .iter()
            .find(|e| e.extn_id == oids::ID_CE_ISSUING_DISTRIBUTION_POINT);
        let idp = idp_ext
            .map(|e| IssuingDistributionPoint::from_der(e.extn_value.as_bytes()))
            .transpose()
            .map_err(|e| format!("issuing distribution point: {e}"))?;
        let number = number
            .and_then(|e| der::asn1::UintRef::from_der(e.extn_value.as_bytes()).ok())
            .map(|n| n.as_bytes().to_vec());
        let this_update =
            i64::try_from(tbs.this_update.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        Ok(Crl {
            webpki: webpki.into(),
            issuer_der,
            idp,
            idp_der: idp_ext.map(|e| e.extn_value.as_bytes().to_vec()),
            number,
            this_update,
            defect,
            not_yet_valid: false,
        })
    }

    /// Whether `self` and `other` are versions of one CRL: the same issuer and scope.
    fn same_list(&self, other: &Crl) -> bool {
        self.issuer_der == other.issuer_der && self.idp_der == other.idp_der
    }

    /// Whether `self` is a later version than `other` (of the same list): a higher CRL number,
    /// or, where a number is missing or equal, a later `thisUpdate`.
    fn newer_than(&self, other: &Crl) -> bool {
        let magnitude = |n: &Vec<u8>| (n.len(), n.clone());
        match (&self.number, &other.number) {
            (Some(a), Some(b)) if a != b => magnitude(a) > magnitude(b),
            _ => self.this_update > other.this_update,
        }
    }

    /// Marks the CRL as not to be relied on when it was issued after `now` (RFC 5280 §6.3.3:
    /// only a current CRL is used; OpenSSL says "CRL is not yet valid"): webpki is not given it,
    /// and a certificate it would cover has an unknown status.
    pub fn check_time(&mut self, now: i64) {
        self.not_yet_valid = self.this_update > now;
        if self.defect.is_none() && self.not_yet_valid {
            self.defect = Some(format!(
                "its thisUpdate ({}) is after the validation time",
                super::failure::unix(u64::try_from(self.this_update).unwrap_or(0))
            ));
        }
    }
}

/// Of several versions of one CRL (same issuer and scope), only the newest: RFC 5280 §6.3.3
/// uses the current CRL, and a stale one supplied beside it must not hide a revocation that only
/// the newer one lists (webpki takes the first CRL that covers a certificate). Order is kept
/// otherwise.
pub fn newest_only(crls: Vec<Crl>) -> Vec<Crl> {
    let mut out: Vec<Crl> = Vec::with_capacity(crls.len());
    for c in crls {
        match out.iter_mut().find(|k| k.same_list(&c)) {
            Some(kept) if c.newer_than(kept) => *kept = c,
            Some(_) => {}
            None => out.push(c),
        }
    }
    out
}

impl Crl {
    /// Whether webpki would take this CRL as authoritative for `cert` (same rule as
    /// `CertRevocationList::authoritative`, which is not public).
    pub fn covers(&self, cert: &Parsed, cert_is_ca: bool) -> bool {
        if self.issuer_der != cert.issuer_der {
            return false;
        }
        let Some(idp) = &self.idp else {
            return true;
        };
        if (idp.only_contains_ca_certs && !cert_is_ca)
            || (idp.only_contains_user_certs && cert_is_ca)
        {
            return false;
        }
        let exts = cert
            .cert
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or(&[]);
        let Some(dp_ext) = exts
            .iter()
            .find(|e| e.extn_id == oids::ID_CE_CRL_DISTRIBUTION_POINTS)
        else {
            return true;
        };
        let Ok(dps) = CrlDistributionPoints::from_der(dp_ext.extn_value.as_bytes()) else {
            return false;
        };
        let idp_uris = full_name_uris(idp.distribution_point.as_ref());
        dps.0.iter().any(|dp| {
            dp.crl_issuer.is_none()
                && dp.reasons.is_none()
                && full_name_uris(dp.distribution_point.as_ref())
                    .iter()
                    .any(|u| idp_uris.contains(u))
        })
    }

    /// Why the CRL cannot be relied on, if it cannot.
    pub fn defect(&self) -> Option<&str> {
        self.defect.as_deref()
    }

    /// The reason and time of `cert`'s entry, when the CRL lists it.
    pub fn entry(&self, cert: &Parsed) -> Option<(String, String)> {
        let found = self.webpki.find_serial(cert.serial_der()).ok()??;
        let reason = found.reason_code.map_or("unspecified", reason_name);
        Some((
            reason.to_owned(),
            super::failure::unix(found.revocation_date.as_secs()),
        ))
    }
}

fn full_name_uris(n: Option<&DistributionPointName>) -> Vec<String> {
    match n {
        Some(DistributionPointName::FullName(names)) => names
            .iter()
            .filter_map(|g| match g {
                GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The API name of a CRL reason.
pub fn reason_name(r: webpki::RevocationReason) -> &'static str {
    use webpki::RevocationReason as R;
    match r {
        R::Unspecified => "unspecified",
        R::KeyCompromise => "key_compromise",
        R::CaCompromise => "ca_compromise",
        R::AffiliationChanged => "affiliation_changed",
        R::Superseded => "superseded",
        R::CessationOfOperation => "cessation_of_operation",
        R::CertificateHold => "certificate_hold",
        R::RemoveFromCrl => "remove_from_crl",
        R::PrivilegeWithdrawn => "privilege_withdrawn",
        R::AaCompromise => "aa_compromise",
    }
}

/// The failure for `cert` revoked for `reason` at `at`, according to `source`.
pub fn revoked(cert: &Parsed, reason: &str, at: Option<&str>, source: &str) -> Failure {
    let when = at.map(|t| format!(" at {t}")).unwrap_or_default();
    Failure::new(
        Code::Revoked,
        format!(
            "{} is revoked (reason: {reason}){when}, according to {source}",
            cert.describe()
        ),
    )
}
