//! PKCS#10 certificate requests (RFC 2986) from outside: parsed, their self-signature checked
//! (proof of possession), their key classified, their requested names extracted from the
//! `extensionRequest` attribute (RFC 2985 §5.4.2). Nothing here decides what is allowed: roles and
//! reviewers do.

use crate::{verify, Error, Result};
use const_oid::db::rfc5912;
use const_oid::{AssociatedOid, ObjectIdentifier};
use der::{Decode, Encode};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::CertReq;

/// `extensionRequest` (PKCS#9).
const EXTENSION_REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
/// The PEM label of a PKCS#10 request (RFC 7468 §7).
const CSR_PEM_LABEL: &str = "CERTIFICATE REQUEST";
/// The most names a CSR may ask for.
pub const MAX_NAMES: usize = 100;

/// The public key family and size of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// `ec`, `rsa` or `ed25519`.
    pub key_type: &'static str,
    /// Curve size, modulus size, or 256 for Ed25519.
    pub bits: u32,
}

/// A parsed, signature-checked CSR.
#[derive(Debug, Clone)]
pub struct ParsedCsr {
    /// The DER of the whole request.
    pub der: Vec<u8>,
    /// Subject.
    pub subject: Name,
    /// Subject CN, if any.
    pub common_name: Option<String>,
    /// SAN DNS names.
    pub dns: Vec<String>,
    /// SAN IPs.
    pub ips: Vec<IpAddr>,
    /// SAN URIs.
    pub uris: Vec<String>,
    /// SAN e-mail addresses.
    pub emails: Vec<String>,
    /// Other requested extensions (OIDs), reported for review and never copied.
    pub other_extensions: Vec<String>,
    /// The public key, DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Key family and size.
    pub key: KeyInfo,
    /// SHA-256 of the request DER, hex.
    pub fingerprint_sha256: String,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::invalid("invalid_csr", detail)
}

/// Parses a PEM CSR (any base64 line width, CRLF and surrounding whitespace tolerated) and checks
/// its signature.
///
/// # Errors
/// `invalid_csr` with a reason: not PEM, not a CSR, truncated, bad signature, RSA under 2048 bits,
/// unsupported key or algorithm, more than [`MAX_NAMES`] names.
pub fn parse_pem(pem: &str) -> Result<ParsedCsr> {
    let text = pem.trim();
    if text.contains("BEGIN CERTIFICATE-----") && !text.contains("REQUEST") {
        return Err(bad("this is a certificate, not a certificate request"));
    }
    // The PEM is decoded to DER in one piece first: `der` 0.7's streaming PEM reader
    // (`CertReq::from_pem`) loops forever when a length octet lies past the end of the body
    // (found by fuzz/fuzz_targets/csr_import.rs; docs/FUZZING.md). Leniently: CSRs come from many
    // tools, and some wrap the base64 at 76 columns.
    let (label, der) = crate::pem::decode_lax(text)
        .map_err(|e| bad(format!("not a PEM certificate request: {e}")))?;
    // "NEW CERTIFICATE REQUEST" is what Windows `certreq` and older Netscape tools write.
    if label != CSR_PEM_LABEL && label != "NEW CERTIFICATE REQUEST" {
        return Err(bad(format!(
            "not a PEM certificate request: the PEM label is {label:?}, not {CSR_PEM_LABEL:?}"
        )));
    }
    let req =
        CertReq::from_der(&der).map_err(|e| bad(format!("not a PEM certificate request: {e}")))?;
    parse(req, der)
}

/// Parses a DER CSR and checks its signature.
///
/// # Errors
/// As [`parse_pem`].
pub fn parse_der(der: &[u8]) -> Result<ParsedCsr> {
    let req =
        CertReq::from_der(der).map_err(|e| bad(format!("not a DER certificate request: {e}")))?;
    parse(req, der.to_vec())
}

fn parse(req: CertReq, der: Vec<u8>) -> Result<ParsedCsr> {
    let spki_der = req.info.public_key.to_der()?;
    let key = key_info(&spki_der)?;
    let info_der = req.info.to_der()?;
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| bad("signature has unused bits"))?;
    verify::verify_signature(&spki_der, &req.algorithm, &info_der, sig).map_err(|e| match e {
        Error::Invalid { detail, .. } => bad(detail),
        // The plain refusal is said once, not repeated through each layer that passed it on.
        Error::BadSignature(d) if d == "signature does not verify" => {
            bad("the request's signature does not verify")
        }
        Error::BadSignature(d) => bad(format!("the request's signature does not verify: {d}")),
        other => bad(format!("the request's signature does not verify: {other}")),
    })?;
    let mut out = ParsedCsr {
        fingerprint_sha256: hex::encode(Sha256::digest(&der)),
        der,
        common_name: crate::name::common_name(&req.info.subject),
        subject: req.info.subject.clone(),
        dns: Vec::new(),
        ips: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        other_extensions: Vec::new(),
        spki_der,
        key,
    };
    for attr in req.info.attributes.iter() {
        if attr.oid != EXTENSION_REQUEST {
            continue;
        }
        for value in attr.values.iter() {
            let exts: Vec<Extension> = value
                .decode_as()
                .map_err(|e| bad(format!("extensionRequest does not decode: {e}")))?;
            for ext in exts {
                if ext.extn_id == SubjectAltName::OID {
                    let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                        .map_err(|e| bad(format!("subjectAltName does not decode: {e}")))?;
                    collect_names(&mut out, san.0)?;
                } else {
                    out.other_extensions.push(ext.extn_id.to_string());
                }
            }
        }
    }
    let total = out.dns.len() + out.ips.len() + out.uris.len() + out.emails.len();
    if total > MAX_NAMES {
        return Err(bad(format!("{total} names requested; at most {MAX_NAMES}")));
    }
    Ok(out)
}

fn collect_names(out: &mut ParsedCsr, names: Vec<GeneralName>) -> Result<()> {
    for n in names {
        match n {
            GeneralName::DnsName(d) => out.dns.push(d.to_string()),
            GeneralName::UniformResourceIdentifier(u) => out.uris.push(u.to_string()),
            GeneralName::Rfc822Name(m) => out.emails.push(m.to_string()),
            GeneralName::IpAddress(o) => {
                let b = o.as_bytes();
                let ip = if let Ok(a) = <[u8; 4]>::try_from(b) {
                    IpAddr::from(a)
                } else if let Ok(a) = <[u8; 16]>::try_from(b) {
                    IpAddr::from(a)
                } else {
                    return Err(bad(format!("IP address of {} octets", b.len())));
                };
                out.ips.push(ip);
            }
            other => {
                let kind = match other {
                    GeneralName::OtherName(o) => format!("otherName ({})", o.type_id),
                    // The requester's own words are not echoed (they could carry anything).
                    GeneralName::DirectoryName(_) => "directoryName".to_owned(),
                    GeneralName::RegisteredId(id) => format!("registeredID ({id})"),
                    GeneralName::EdiPartyName(_) => "ediPartyName".to_owned(),
                    _ => "another type".to_owned(),
                };
                return Err(bad(format!(
                    "the subjectAltName holds a name of type {kind}; only DNS names, IP \
                     addresses, URIs and e-mail addresses can be requested"
                )));
            }
        }
    }
    Ok(())
}

/// What the reviewed CSR workflow copies into a certificate must be fit for one: every SAN DNS
/// name valid ([`crate::role::normalize_dns_name`]: LDH labels, valid A-labels, a wildcard only
/// as a whole leftmost label), every URI of the form `scheme://authority…`, and the subject's
/// attributes within RFC 5280's upper bounds (Appendix A: CN, O, OU and serialNumber at most 64
/// characters, L and ST 128, C two letters; others of X.520's: title 64, pseudonym 128, …; an
/// attribute of another type at most 128), each as a string of its type (a DirectoryString as
/// UTF8String or PrintableString) without control or invisible characters,
/// and one common name at most.
/// Role-based signing needs none of this: the role's checks take the names apart, and the subject
/// is rebuilt from the CN.
///
/// # Errors
/// `invalid_csr` naming the value and the rule.
pub fn check_for_workflow(csr: &ParsedCsr) -> Result<()> {
    for d in &csr.dns {
        crate::role::normalize_dns_name(d)
            .map_err(|e| bad(format!("subjectAltName dNSName: {e}")))?;
    }
    for u in &csr.uris {
        check_uri(u).map_err(|why| bad(format!("subjectAltName URI {u:?} {why}")))?;
    }
    // The CN is copied as written and must read as one of the SAN values: an IP address in its
    // canonical form, a host name without a trailing dot.
    if let Some(cn) = &csr.common_name {
        if let Ok(ip) = cn.parse::<IpAddr>() {
            if ip.to_string() != *cn {
                return Err(bad(format!(
                    "the common name {cn:?} is an IP address not written in its canonical form \
                     ({ip}): the certificate would carry a CN that reads as none of its SAN values"
                )));
            }
        } else if cn.len() > 1 && cn.ends_with('.') && !cn.contains(' ') {
            return Err(bad(format!(
                "the common name {cn:?} ends in a dot: request {:?}",
                cn.trim_end_matches('.')
            )));
        }
    }
    check_subject(&csr.subject)
}

/// How many common-name attributes `subject` holds.
fn common_names(subject: &x509_cert::name::Name) -> usize {
    subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == const_oid::db::rfc4519::CN)
        .count()
}

/// Refuses a subject with more than one common name (role-based signing): only one is read —
/// checked against the role and copied into the certificate —, and a name dropped unseen is a
/// name never checked.
///
/// # Errors
/// `invalid_csr` with the count.
pub fn check_one_common_name(csr: &ParsedCsr) -> Result<()> {
    let cns = common_names(&csr.subject);
    if cns > 1 {
        return Err(bad(format!(
            "the subject has {cns} common names; a certificate carries one (put further names in \
             the subjectAltName extension)"
        )));
    }
    Ok(())
}

/// RFC 5280 §4.2.1.6: an absolute URI (RFC 3986 §4.3), a scheme and a scheme-specific part,
/// in ASCII without whitespace or controls (`urn:…` as well as `spiffe://…`).
fn check_uri(u: &str) -> std::result::Result<(), &'static str> {
    if !u.is_ascii()
        || u.chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err("is not ASCII without whitespace or control characters");
    }
    let Some((scheme, rest)) = u.split_once(':') else {
        return Err("has no scheme");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("has an invalid scheme");
    }
    if rest.is_empty() || rest == "//" {
        return Err("has no scheme-specific part");
    }
    if u.contains('#') {
        return Err("has a fragment, which an absolute URI has not");
    }
    Ok(())
}

fn check_subject(subject: &x509_cert::name::Name) -> Result<()> {
    use const_oid::db::rfc4519;
    use der::Tag;
    use der::Tagged;
    /// DirectoryString attributes: UTF8String or PrintableString (IA5String is none of its
    /// choices; the others are not read here). C and serialNumber are PrintableStrings by
    /// RFC 5280, but UTF8String is common and harmless for their checked values.
    const DIRECTORY: &[Tag] = &[Tag::Utf8String, Tag::PrintableString];
    const ANY_TEXT: &[Tag] = &[Tag::Utf8String, Tag::PrintableString, Tag::Ia5String];
    // Upper bounds from RFC 5280 Appendix A (X.520's for title and DC's DNS label).
    let bounds: [(ObjectIdentifier, &str, usize, &[Tag]); 15] = [
        (rfc4519::CN, "CN", 64, DIRECTORY),
        (rfc4519::O, "O", 64, DIRECTORY),
        (rfc4519::OU, "OU", 64, DIRECTORY),
        (rfc4519::SERIAL_NUMBER, "serialNumber", 64, DIRECTORY),
        (rfc4519::L, "L", 128, DIRECTORY),
        (rfc4519::ST, "ST", 128, DIRECTORY),
        (rfc4519::C, "C", 2, DIRECTORY),
        (rfc4519::TITLE, "title", 64, DIRECTORY),
        (rfc4519::STREET, "street", 128, DIRECTORY),
        (
            ObjectIdentifier::new_unwrap("2.5.4.65"),
            "pseudonym",
            128,
            DIRECTORY,
        ),
        (rfc4519::GIVEN_NAME, "givenName", 64, DIRECTORY),
        (rfc4519::SN, "surname", 64, DIRECTORY),
        (rfc4519::DC, "DC", 63, ANY_TEXT),
        (rfc4519::UID, "UID", 256, DIRECTORY),
        // PKCS #9 emailAddress, ub-emailaddress-length.
        (
            ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1"),
            "emailAddress",
            255,
            ANY_TEXT,
        ),
    ];
    let cns = common_names(subject);
    if cns > 1 {
        return Err(bad(format!(
            "the subject has {cns} common names; a certificate from the workflow carries one, \
             which must read as one of its SAN values (put further names in the SAN)"
        )));
    }
    for atv in subject.0.iter().flat_map(|rdn| rdn.0.iter()) {
        let oid = atv.oid.to_string();
        let (label, max, tags) = bounds
            .iter()
            .find(|(o, ..)| *o == atv.oid)
            .map_or((oid.as_str(), 128, ANY_TEXT), |(_, l, m, t)| (*l, *m, *t));
        let tag = atv.value.tag();
        let value = crate::name::attribute_text(&atv.value)
            .filter(|_| tags.contains(&tag))
            .ok_or_else(|| {
                let kinds: Vec<String> = tags.iter().map(|t| format!("{t}")).collect();
                bad(format!(
                    "the subject's {label} is encoded as {tag}; it must be {}",
                    kinds.join(" or ")
                ))
            })?;
        let shown: String = value.chars().take(80).collect();
        if value.chars().any(crate::name::is_hidden) {
            return Err(bad(format!(
                "the subject's {label} {shown:?} contains control or invisible characters"
            )));
        }
        let len = value.chars().count();
        if label == "C" {
            if len != 2 || !value.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(bad(format!(
                    "the subject's C {shown:?} is not a two-letter country code (ISO 3166)"
                )));
            }
        } else if len == 0 || len > max {
            return Err(bad(format!(
                "the subject's {label} has {len} characters; 1 to {max} are allowed \
                 (RFC 5280 Appendix A)"
            )));
        }
    }
    Ok(())
}

/// Classifies a public key.
///
/// # Errors
/// `invalid_csr` for RSA under 2048 bits or over 8192, EC curves other than P-256/P-384, and other
/// algorithms.
pub fn key_info(spki_der: &[u8]) -> Result<KeyInfo> {
    let spki = spki::SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|e| bad(format!("public key: {e}")))?;
    let oid = spki.algorithm.oid;
    if oid == rfc5912::RSA_ENCRYPTION {
        let pk = verify::rsa_public_key(spki_der).map_err(|e| bad(format!("RSA key: {e}")))?;
        let bits = u32::try_from(pk.n().bits()).unwrap_or(0);
        if !(2048..=8192).contains(&bits) {
            return Err(bad(format!(
                "RSA key of {bits} bits; 2048 to 8192 are accepted"
            )));
        }
        return Ok(KeyInfo {
            key_type: "rsa",
            bits,
        });
    }
    if oid == rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c) if c == rfc5912::SECP_256_R_1 => Ok(KeyInfo {
                key_type: "ec",
                bits: 256,
            }),
            Some(c) if c == rfc5912::SECP_384_R_1 => Ok(KeyInfo {
                key_type: "ec",
                bits: 384,
            }),
            _ => Err(bad("EC curve other than P-256 or P-384")),
        };
    }
    if oid == const_oid::db::rfc8410::ID_ED_25519 {
        return Ok(KeyInfo {
            key_type: "ed25519",
            bits: 256,
        });
    }
    Err(bad(format!("unsupported public key algorithm {oid}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::DnFields;
    use scaivault_hsm::soft::SoftToken;
    use scaivault_hsm::{KeySpec, Token};
    use std::time::Duration;

    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("returns within 5 s (no endless loop)")
    }

    /// Subjects openssl itself refuses to write (it knows the bounds) but other tools do not.
    #[test]
    fn the_workflow_refuses_subjects_outside_rfc_5280_bounds() {
        let token = SoftToken::new();
        let key = token.generate(KeySpec::EcP256, "k").unwrap();
        let check = |subject: &str| {
            let name: x509_cert::name::Name = subject.parse().unwrap();
            let pem = crate::sign::build_csr(&name, key.as_ref()).unwrap();
            check_for_workflow(&parse_pem(&pem).unwrap())
        };
        assert!(check("CN=ok.example,O=Example,C=NL").is_ok());
        assert!(check("CN=2001:db8::1").is_ok());
        assert!(check("CN=a.example,title=CEO,DC=example").is_ok());
        // A CN as an IA5String (no DirectoryString) was not read as a CN, so never checked.
        let mut name: x509_cert::name::Name = "O=Example".parse().unwrap();
        let ia5 = der::Any::new(der::Tag::Ia5String, b"evil.org".to_vec()).unwrap();
        name.0.push(x509_cert::name::RelativeDistinguishedName(
            der::asn1::SetOfVec::try_from(vec![x509_cert::attr::AttributeTypeAndValue {
                oid: const_oid::db::rfc4519::CN,
                value: ia5,
            }])
            .unwrap(),
        ));
        let pem = crate::sign::build_csr(&name, key.as_ref()).unwrap();
        let e = check_for_workflow(&parse_pem(&pem).unwrap()).unwrap_err();
        assert!(e.to_string().contains("CN is encoded as IA5String"), "{e}");
        let long_pseudonym = format!("CN=a.example,2.5.4.65={}", "p".repeat(129));
        assert!(check(&long_pseudonym)
            .unwrap_err()
            .to_string()
            .contains("pseudonym has 129 characters"));
        let long_o = format!("CN=a.example,O={}", "o".repeat(300));
        for (subject, says) in [
            (&long_o[..], "O has 300 characters"),
            ("CN=a.example,C=ZZZ", "two-letter"),
            ("CN=a.example,C=1A", "two-letter"),
            ("CN=a.example,L=", "L has 0 characters"),
            ("CN=a.example.org.", "ends in a dot"),
            ("CN=2001:DB8::1", "canonical form (2001:db8::1)"),
            ("CN=a.example,CN=evil.example", "2 common names"),
            ("CN=a.example,title=CEO\n", "title"),
            (
                "CN=a.example,2.5.4.65=p\u{0}q",
                "control or invisible characters",
            ),
            (
                "CN=a.example,1.2.3.4=x\u{1b}[31m",
                "control or invisible characters",
            ),
        ] {
            let e = check(subject).unwrap_err();
            assert_eq!(e.code(), "invalid_csr");
            assert!(e.to_string().contains(says), "{subject}: {e}");
        }
    }

    #[test]
    fn pem_and_der_give_the_same_request() {
        let token = SoftToken::new();
        let key = token.generate(KeySpec::EcP256, "k").unwrap();
        let subject = DnFields {
            common_name: "csr.example.com".into(),
            ..Default::default()
        }
        .to_name()
        .unwrap();
        let pem = crate::sign::build_csr(&subject, key.as_ref()).unwrap();
        let p = parse_pem(&format!("\r\n{}\r\n", pem.replace('\n', "\r\n"))).unwrap();
        let d = parse_der(&p.der).unwrap();
        assert_eq!(p.der, d.der);
        assert_eq!(p.common_name.as_deref(), Some("csr.example.com"));
        assert_eq!(p.key.key_type, "ec");
        let relabelled = pem.replace("CERTIFICATE REQUEST", "PUBLIC KEY");
        let e = parse_pem(&relabelled).unwrap_err();
        assert_eq!(e.code(), "invalid_csr");
        assert!(e.to_string().contains("PUBLIC KEY"), "{e}");
    }

    /// Fuzzing regression (fuzz/corpus/csr_import/regression-pem-truncated-header): `30 82` as
    /// the whole body (a long-form length whose octets are missing) made `der`'s PEM reader loop
    /// forever, holding a request thread at 100 % CPU.
    #[test]
    fn truncated_pem_is_refused_quickly() {
        for body in ["MII=", "MIIB", "MA==", "MIA=", "gg==", ""] {
            let text = format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"
            );
            let code = within_5s(move || parse_pem(&text).err().map(|e| e.code()));
            assert_eq!(code, Some("invalid_csr"), "{body}");
        }
    }
}
