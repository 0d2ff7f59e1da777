//! The CA certificate profile (RFC 5280 §4.2) and the lint every to-be-signed certificate passes
//! before the token is asked to sign it.
//!
//! A CA certificate carries: BasicConstraints `CA:TRUE` critical (with `pathLenConstraint` when
//! asked, §4.2.1.9), KeyUsage `keyCertSign, cRLSign` critical (§4.2.1.3), SubjectKeyIdentifier
//! (method 1 of §4.2.1.2: SHA-1 of the subjectPublicKey bits), AuthorityKeyIdentifier on
//! non-self-signed certificates (§4.2.1.1), and NameConstraints, critical, when asked (§4.2.1.10).

use crate::serial::Serial;
use crate::{time_util, Error, Result};
use const_oid::AssociatedOid;
use der::asn1::{Ia5String, OctetString};
use der::{Decode, Encode};
use sha1::{Digest, Sha1};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::collections::HashSet;
use std::net::IpAddr;
use time::OffsetDateTime;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::constraints::name::{GeneralSubtree, NameConstraints};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::time::Validity;

/// An IP range for name constraints: network address and prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl IpRange {
    /// Parses CIDR notation (`10.0.0.0/8`, `fd00::/8`).
    ///
    /// # Errors
    /// `invalid_ip_range` naming the input.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "invalid_ip_range",
                format!("{s:?} is not a CIDR range like 10.0.0.0/8"),
            )
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(IpRange { addr, prefix })
    }

    /// Parses CIDR notation as [`IpRange::parse`] does, and refuses a range whose address has
    /// bits set past the prefix (`10.1.2.3/8`): the range it names is wider than the address
    /// suggests, so the writer is told which range that is instead of getting it silently.
    ///
    /// # Errors
    /// `invalid_ip_range` naming the input (and the network it stands for).
    pub fn parse_exact(s: &str) -> Result<Self> {
        let r = Self::parse(s)?;
        let network = r.network();
        if network != r.addr {
            return Err(Error::invalid(
                "invalid_ip_range",
                format!(
                    "{s:?} has bits set past its /{} prefix: it names the range {network}/{}; \
                     give that",
                    r.prefix, r.prefix
                ),
            ));
        }
        Ok(r)
    }

    /// The network address: [`IpRange::addr`] with the bits past the prefix cleared.
    #[must_use]
    pub fn network(&self) -> IpAddr {
        let keep = |bits: u32| {
            u128::MAX
                .checked_shl(bits.saturating_sub(u32::from(self.prefix)))
                .unwrap_or(0)
        };
        match self.addr {
            IpAddr::V4(a) => {
                let m = u32::try_from(keep(32) & u128::from(u32::MAX)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & keep(128)).into()),
        }
    }

    /// Address followed by mask, as name constraints encode an iPAddress subtree.
    fn to_constraint_bytes(&self) -> Vec<u8> {
        let (mut bytes, len) = match self.addr {
            IpAddr::V4(a) => (a.octets().to_vec(), 4usize),
            IpAddr::V6(a) => (a.octets().to_vec(), 16usize),
        };
        let mut mask = vec![0u8; len];
        for (i, m) in mask.iter_mut().enumerate() {
            let bits = usize::from(self.prefix).saturating_sub(i * 8).min(8);
            *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        for (b, m) in bytes.iter_mut().zip(&mask) {
            *b &= m;
        }
        bytes.extend_from_slice(&mask);
        bytes
    }
}

/// Name constraints a CA may carry.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    /// Permitted DNS subtrees.
    pub permitted_dns_domains: Vec<String>,
    /// Excluded DNS subtrees.
    pub excluded_dns_domains: Vec<String>,
    /// Permitted IP ranges.
    pub permitted_ip_ranges: Vec<IpRange>,
}

impl Constraints {
    fn is_empty(&self) -> bool {
        self.permitted_dns_domains.is_empty()
            && self.excluded_dns_domains.is_empty()
            && self.permitted_ip_ranges.is_empty()
    }
}

/// Who signs a certificate: the issuer's name and key identifier, its validity end, and its
/// public key (the post-signature check uses it).
#[derive(Debug, Clone)]
pub struct IssuerInfo {
    /// The issuer's subject name (copied byte for byte into the issuer field).
    pub name: Name,
    /// The issuer's SubjectKeyIdentifier (becomes the AuthorityKeyIdentifier).
    pub key_id: Vec<u8>,
    /// The issuer's `notBefore`: nothing it signs may start earlier.
    pub not_before: OffsetDateTime,
    /// The issuer's `notAfter`: nothing it signs may outlive it.
    pub not_after: OffsetDateTime,
    /// The issuer's public key, DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The signature algorithm the issuer's key produces, DER AlgorithmIdentifier.
    pub algorithm_der: Vec<u8>,
    /// The name constraints its leaves must satisfy: its own certificate's, plus its chain's
    /// once the caller adds them ([`crate::constraints::NameRules::from_certs`]).
    pub name_rules: crate::constraints::NameRules,
}

impl IssuerInfo {
    /// `now` moved back by `by` (room for relying parties' clock skew), but never before the
    /// issuer's own `notBefore`: a certificate must not start before the CA that signs it.
    pub fn backdated(&self, now: OffsetDateTime, by: time::Duration) -> OffsetDateTime {
        (now - by).max(self.not_before)
    }
}

/// Everything that goes into a CA certificate.
#[derive(Debug, Clone)]
pub struct CaTemplate {
    /// Subject name.
    pub subject: Name,
    /// Subject public key (DER SubjectPublicKeyInfo), from the token.
    pub spki_der: Vec<u8>,
    /// Serial number.
    pub serial: Serial,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// pathLenConstraint, if any.
    pub max_path_length: Option<u8>,
    /// Name constraints.
    pub constraints: Constraints,
    /// Where relying parties find the issuer's CRL, OCSP responder and certificate: the CRL
    /// distribution point and authority information access of an intermediate its parent signs
    /// here (so that a revoked intermediate is found revoked). `None` for roots and for what an
    /// offline root signs.
    pub issuer_urls: Option<crate::leaf::LeafUrls>,
}

/// SubjectKeyIdentifier by RFC 5280 §4.2.1.2 method 1.
///
/// # Errors
/// `invalid_encoding` when the SPKI does not decode.
pub fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>> {
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|e| Error::decode("public key", e))?;
    Ok(Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec())
}

/// Wraps an extension value.
///
/// # Errors
/// Only on an encoder bug.
pub fn extension<T: AssociatedOid + Encode>(value: &T, critical: bool) -> Result<Extension> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// Builds the TBSCertificate of a CA. `issuer` is `None` for a self-signed root, whose issuer is
/// its own subject and whose signing key is its own.
///
/// # Errors
/// `invalid_*` codes for bad input; [`Error::ProfileViolation`] when the result fails the lint.
pub fn ca_tbs(
    t: &CaTemplate,
    issuer: Option<&IssuerInfo>,
    self_algorithm_der: &[u8],
) -> Result<TbsCertificate> {
    let spki = SubjectPublicKeyInfoOwned::from_der(&t.spki_der)
        .map_err(|e| Error::decode("public key", e))?;
    let ski = key_identifier(&t.spki_der)?;
    let mut exts = vec![
        extension(
            &BasicConstraints {
                ca: true,
                path_len_constraint: t.max_path_length,
            },
            true,
        )?,
        extension(&KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign), true)?,
        extension(&SubjectKeyIdentifier(OctetString::new(ski)?), false)?,
    ];
    if let Some(i) = issuer {
        exts.push(extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(i.key_id.clone())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )?);
    }
    if !t.constraints.is_empty() {
        exts.push(extension(&name_constraints(&t.constraints)?, true)?);
    }
    if let (Some(urls), Some(_)) = (&t.issuer_urls, issuer) {
        exts.extend(urls.extensions()?);
    }
    let algorithm_der = issuer.map_or(self_algorithm_der, |i| i.algorithm_der.as_slice());
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: t.serial.to_x509()?,
        signature: AlgorithmIdentifierOwned::from_der(algorithm_der)
            .map_err(|e| Error::decode("algorithm", e))?,
        issuer: issuer.map_or_else(|| t.subject.clone(), |i| i.name.clone()),
        validity: Validity {
            not_before: time_util::to_x509(t.not_before)?,
            not_after: time_util::to_x509(t.not_after)?,
        },
        subject: t.subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(exts),
    };
    Ok(tbs)
}

/// The most entries each name-constraint list of a CA may hold.
const MAX_CONSTRAINTS: usize = 100;

/// Checks constraints before any key is made (the same rules [`ca_tbs`] applies).
///
/// # Errors
/// `invalid_name_constraint`.
pub fn check_constraints(c: &Constraints) -> Result<()> {
    name_constraints(c).map(|_| ())
}

fn name_constraints(c: &Constraints) -> Result<NameConstraints> {
    let lists = [
        ("permitted_dns_domains", c.permitted_dns_domains.len()),
        ("excluded_dns_domains", c.excluded_dns_domains.len()),
        ("permitted_ip_ranges", c.permitted_ip_ranges.len()),
    ];
    for (what, n) in lists {
        if n > MAX_CONSTRAINTS {
            return Err(Error::invalid(
                "invalid_name_constraint",
                format!("{what} has {n} entries, more than {MAX_CONSTRAINTS}"),
            ));
        }
    }
    let dns = |raw: &String| -> Result<GeneralSubtree> {
        let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        // A DNS name: it covers itself and every name below (RFC 5280 §4.2.1.10). A leading dot
        // is the form of URI and mailbox constraints, not of dNSName ones: OpenSSL and Go accept
        // it, RFC 5280 path validators (ScaiVault's own `validate` among them) refuse the CA.
        if d.starts_with('.') {
            return Err(Error::invalid(
                "invalid_name_constraint",
                format!(
                    "{raw:?} is not a DNS name constraint: RFC 5280 §4.2.1.10 has no leading dot \
                     for dNSName (\"x.y\" already covers every name below x.y)"
                ),
            ));
        }
        let host = d.as_str();
        if host.contains('*') {
            return Err(Error::invalid(
                "invalid_name_constraint",
                format!("{raw:?} is not a DNS name constraint: no wildcards (\"x.y\" covers every name below x.y)"),
            ));
        }
        if let Err(e) = crate::role::normalize_dns_name(host) {
            return Err(Error::invalid(
                "invalid_name_constraint",
                format!("{raw:?} is not a DNS name constraint: {e}"),
            ));
        }
        Ok(GeneralSubtree {
            base: GeneralName::DnsName(
                Ia5String::new(&d)
                    .map_err(|e| Error::invalid("invalid_name_constraint", e.to_string()))?,
            ),
            minimum: 0,
            maximum: None,
        })
    };
    let mut permitted: Vec<GeneralSubtree> = c
        .permitted_dns_domains
        .iter()
        .map(dns)
        .collect::<Result<_>>()?;
    for r in &c.permitted_ip_ranges {
        permitted.push(GeneralSubtree {
            base: GeneralName::IpAddress(OctetString::new(r.to_constraint_bytes())?),
            minimum: 0,
            maximum: None,
        });
    }
    let excluded: Vec<GeneralSubtree> = c
        .excluded_dns_domains
        .iter()
        .map(dns)
        .collect::<Result<_>>()?;
    Ok(NameConstraints {
        permitted_subtrees: (!permitted.is_empty()).then_some(permitted),
        excluded_subtrees: (!excluded.is_empty()).then_some(excluded),
    })
}

/// What the lint expects of a to-be-signed certificate.
#[derive(Debug, Clone, Copy)]
pub struct LintExpect<'a> {
    /// The signer's issuer data (`None`: self-signed, checked against the subject).
    pub issuer: Option<&'a IssuerInfo>,
    /// Whether the certificate must be a CA certificate.
    pub ca: bool,
    /// The signature algorithm the signing key produces (DER).
    pub algorithm_der: &'a [u8],
}

/// Checks a to-be-signed certificate against the profile before anything is signed (the idea of
/// Boulder's `issuance.Prepare`): serial rules, validity inside the issuer's, the issuer name byte
/// equal to the issuer's subject, BasicConstraints and KeyUsage present and consistent, SKI
/// present, AKI equal to the issuer's SKI, no extension twice, and the signature algorithm the
/// signing key really produces.
///
/// # Errors
/// [`Error::ProfileViolation`] listing every failed check.
pub fn lint(tbs: &TbsCertificate, expect: LintExpect<'_>) -> Result<()> {
    let mut failures: Vec<String> = Vec::new();
    let serial = tbs.serial_number.as_bytes();
    let magnitude: Vec<u8> = serial.iter().copied().skip_while(|b| *b == 0).collect();
    if magnitude.len() < 8 || serial.len() > 20 || serial.first().is_some_and(|b| b & 0x80 != 0) {
        failures.push(format!(
            "serial of {} octets is outside 8..=20 or negative",
            serial.len()
        ));
    }
    let nb = time_util::from_x509(&tbs.validity.not_before);
    let na = time_util::from_x509(&tbs.validity.not_after);
    if nb >= na {
        failures.push("notBefore is not before notAfter".into());
    }
    if let Some(i) = expect.issuer {
        if na > i.not_after {
            failures.push("notAfter is past the issuer's notAfter".into());
        }
        if nb < i.not_before {
            failures.push("notBefore is before the issuer's notBefore".into());
        }
        if tbs.issuer.to_der().ok() != i.name.to_der().ok() {
            failures.push("issuer name differs from the issuer's subject".into());
        }
    } else if tbs.issuer.to_der().ok() != tbs.subject.to_der().ok() {
        failures.push("self-signed certificate whose issuer is not its subject".into());
    }
    if expect.ca {
        if tbs.subject.0.is_empty() {
            failures.push("a CA certificate needs a non-empty subject (RFC 5280 §4.1.2.6)".into());
        }
        // RFC 5280 §6.1.4 (h), (l): a self-issued CA certificate does not count against the
        // pathLenConstraint above it, and a name constraint's exemption for it would let it
        // escape both. ScaiVault issues no key-rollover certificates, so none is self-issued.
        if expect.issuer.is_some() && crate::name::same_name(&tbs.issuer, &tbs.subject) {
            failures.push(
                "a CA certificate whose subject is its issuer's name is self-issued: it would not \
                 count against the issuer's pathLenConstraint (RFC 5280 §6.1.4)"
                    .into(),
            );
        }
    }
    if tbs.signature.to_der().ok().as_deref() != Some(expect.algorithm_der) {
        failures.push("signature algorithm differs from the signing key's".into());
    }
    let exts = tbs.extensions.as_deref().unwrap_or(&[]);
    let mut seen = HashSet::new();
    for e in exts {
        if !seen.insert(e.extn_id) {
            failures.push(format!("extension {} appears twice", e.extn_id));
        }
    }
    let find = |oid| exts.iter().find(|e| e.extn_id == oid);
    match find(BasicConstraints::OID).map(|e| {
        (
            e.critical,
            BasicConstraints::from_der(e.extn_value.as_bytes()),
        )
    }) {
        Some((critical, Ok(bc))) => {
            if bc.ca != expect.ca {
                failures.push(format!(
                    "basicConstraints cA is {} but must be {}",
                    bc.ca, expect.ca
                ));
            }
            if expect.ca && !critical {
                failures.push("basicConstraints of a CA must be critical".into());
            }
        }
        Some((_, Err(_))) => failures.push("basicConstraints does not decode".into()),
        None => failures.push("basicConstraints missing".into()),
    }
    match find(KeyUsage::OID).map(|e| KeyUsage::from_der(e.extn_value.as_bytes())) {
        Some(Ok(ku)) => {
            if expect.ca && !ku.key_cert_sign() {
                failures.push("CA keyUsage lacks keyCertSign".into());
            }
            if !expect.ca && ku.key_cert_sign() {
                failures.push("leaf keyUsage has keyCertSign".into());
            }
        }
        Some(Err(_)) => failures.push("keyUsage does not decode".into()),
        None => failures.push("keyUsage missing".into()),
    }
    let spki_der = tbs.subject_public_key_info.to_der()?;
    match find(SubjectKeyIdentifier::OID)
        .map(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()))
    {
        Some(Ok(ski)) => {
            if ski.0.as_bytes() != key_identifier(&spki_der)?.as_slice() {
                failures.push("subjectKeyIdentifier does not match the subject key".into());
            }
        }
        _ => failures.push("subjectKeyIdentifier missing".into()),
    }
    if let Some(i) = expect.issuer {
        match find(AuthorityKeyIdentifier::OID)
            .map(|e| AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes()))
        {
            Some(Ok(aki))
                if aki.key_identifier.as_ref().map(|k| k.as_bytes())
                    == Some(i.key_id.as_slice()) => {}
            _ => failures.push("authorityKeyIdentifier missing or not the issuer's key id".into()),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::ProfileViolation(failures.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::IpRange;

    #[test]
    fn a_range_must_be_written_as_its_network() {
        for ok in [
            "10.0.0.0/8",
            "10.1.2.3/32",
            "0.0.0.0/0",
            "192.168.4.0/22",
            "fd00::/8",
            "2001:db8::1/128",
            "::/0",
        ] {
            assert!(IpRange::parse_exact(ok).is_ok(), "{ok}");
        }
        for (bad, network) in [
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.168.5.0/22", "192.168.4.0/22"),
            ("1.2.3.4/0", "0.0.0.0/0"),
            ("fd12:3456::1/16", "fd12::/16"),
            ("2001:db8::1/127", "2001:db8::/127"),
        ] {
            // The lenient parse keeps accepting it (stored roles and CAs still load) ...
            assert!(IpRange::parse(bad).is_ok(), "{bad}");
            // ... the exact one names the range the writer got.
            let e = IpRange::parse_exact(bad).unwrap_err().to_string();
            assert!(e.contains(network) && e.contains(bad), "{bad}: {e}");
        }
    }
}
