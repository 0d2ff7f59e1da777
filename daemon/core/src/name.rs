//! Distinguished names built from API fields (RFC 5280 §4.1.2.4, upper bounds from Appendix A.1).

use crate::{Error, Result};
use const_oid::db::rfc4519;
use const_oid::ObjectIdentifier;
use der::asn1::{Any, PrintableStringRef, SetOfVec, Utf8StringRef};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

/// The subject fields a request may carry.
#[derive(Debug, Clone, Default)]
pub struct DnFields {
    /// `CN` (required, at most 64 characters).
    pub common_name: String,
    /// `O`.
    pub organization: Option<String>,
    /// `OU`.
    pub organizational_unit: Option<String>,
    /// `C`: two ASCII letters.
    pub country: Option<String>,
    /// `L`.
    pub locality: Option<String>,
    /// `ST`.
    pub province: Option<String>,
}

impl DnFields {
    /// Builds the name in the conventional order C, ST, L, O, OU, CN (one attribute per RDN).
    ///
    /// # Errors
    /// `invalid_subject` naming the field that is empty, too long, or not printable.
    pub fn to_name(&self) -> Result<Name> {
        let mut rdns = Vec::new();
        if let Some(c) = &self.country {
            if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()) {
                return Err(Error::invalid(
                    "invalid_subject",
                    format!("country {c:?} must be two letters (ISO 3166)"),
                ));
            }
            let v = PrintableStringRef::new(c.as_str())
                .map_err(|_| Error::invalid("invalid_subject", "country is not printable"))?;
            rdns.push(rdn(rfc4519::C, Any::encode_from(&v)?)?);
        }
        let utf8 = [
            (rfc4519::ST, "province", &self.province, 128),
            (rfc4519::L, "locality", &self.locality, 128),
            (rfc4519::O, "organization", &self.organization, 64),
            (
                rfc4519::OU,
                "organizational_unit",
                &self.organizational_unit,
                64,
            ),
        ];
        for (oid, field, value, max) in utf8 {
            if let Some(v) = value {
                rdns.push(utf8_rdn(oid, field, v, max)?);
            }
        }
        rdns.push(utf8_rdn(
            rfc4519::CN,
            "common_name",
            &self.common_name,
            MAX_CN_CHARS,
        )?);
        Ok(RdnSequence(rdns))
    }
}

/// Whether `c` has no visible form of its own and can disguise text: a control character, or an
/// invisible character that makes a name look exactly like another (`bill\u{200b}ing`) or shows
/// it reordered (`\u{202e}`): zero-width space, word joiner and the other invisible operators,
/// bidirectional embeddings, overrides and isolates, the soft hyphen, the byte-order mark,
/// Hangul fillers, tag characters. None is accepted in a name, a subject field or free text.
///
/// Not refused: the zero-width joiner and non-joiner (U+200C, U+200D), the left-to-right and
/// right-to-left marks (U+200E, U+200F, U+061C) and the Mongolian variation selectors — ordinary
/// parts of Persian, Indic, Arabic and Hebrew, and Mongolian writing (and of emoji sequences).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{034f}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{200b}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// The subject of a leaf: an optional `O` and an optional `CN` (RFC 5280 §4.1.2.6 allows an empty
/// subject when the subjectAltName carries the names; the leaf then marks its SAN critical).
///
/// # Errors
/// `invalid_subject` when a value is empty, too long (64 characters) or has control or invisible characters.
pub fn leaf_subject(common_name: Option<&str>, organization: Option<&str>) -> Result<Name> {
    let mut rdns = Vec::new();
    if let Some(o) = organization {
        rdns.push(utf8_rdn(rfc4519::O, "organization", o, 64)?);
    }
    if let Some(cn) = common_name {
        rdns.push(utf8_rdn(rfc4519::CN, "common_name", cn, MAX_CN_CHARS)?);
    }
    Ok(RdnSequence(rdns))
}

/// The longest `CN` (X.520 ub-common-name, RFC 5280 Appendix A.1).
pub const MAX_CN_CHARS: usize = 64;

fn utf8_rdn(
    oid: ObjectIdentifier,
    field: &str,
    value: &str,
    max: usize,
) -> Result<RelativeDistinguishedName> {
    let chars = value.chars().count();
    if value.trim().is_empty() || chars > max {
        return Err(Error::invalid(
            "invalid_subject",
            format!("{field} must be 1 to {max} characters, got {chars}"),
        ));
    }
    if value.chars().any(is_hidden) {
        return Err(Error::invalid(
            "invalid_subject",
            format!("{field} contains control or invisible characters"),
        ));
    }
    let v =
        Utf8StringRef::new(value).map_err(|e| Error::invalid("invalid_subject", e.to_string()))?;
    rdn(oid, Any::encode_from(&v)?)
}

fn rdn(oid: ObjectIdentifier, value: Any) -> Result<RelativeDistinguishedName> {
    let set = SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])?;
    Ok(RelativeDistinguishedName(set))
}

/// A name as RFC 5280 §7.1 compares names, the way OpenSSL does it (`X509_NAME_cmp` on its
/// canonical encoding): per RDN, its attributes sorted, each the type and, for a directory string
/// (UTF8String, PrintableString, IA5String), the value with leading and trailing whitespace
/// removed, inner runs of whitespace made one space and ASCII letters lower-cased; any other value
/// as encoded.
pub fn canonical(name: &Name) -> Vec<Vec<(ObjectIdentifier, Vec<u8>)>> {
    use der::Encode;
    name.0
        .iter()
        .map(|rdn| {
            let mut atvs: Vec<(ObjectIdentifier, Vec<u8>)> = rdn
                .0
                .iter()
                .map(|atv| {
                    let text = attribute_text(&atv.value);
                    let value = match text {
                        Some(t) => t
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                            .to_ascii_lowercase()
                            .into_bytes(),
                        None => atv.value.to_der().unwrap_or_default(),
                    };
                    (atv.oid, value)
                })
                .collect();
            atvs.sort();
            atvs
        })
        .collect()
}

/// An attribute value that is a directory string ScaiVault reads (UTF8String, PrintableString,
/// IA5String), as text.
pub fn attribute_text(value: &Any) -> Option<String> {
    use der::asn1::Ia5StringRef;
    value
        .decode_as::<String>()
        .ok()
        .or_else(|| {
            value
                .decode_as::<PrintableStringRef<'_>>()
                .ok()
                .map(|s| s.to_string())
        })
        .or_else(|| {
            value
                .decode_as::<Ia5StringRef<'_>>()
                .ok()
                .map(|s| s.to_string())
        })
}

/// Whether two names are the same name under RFC 5280 §7.1 (see [`canonical`]): `CN=Test Root`
/// and `CN=test  root` are.
pub fn same_name(a: &Name, b: &Name) -> bool {
    canonical(a) == canonical(b)
}

/// PKCS #9 `emailAddress` (1.2.840.113549.1.9.1).
pub const EMAIL_ADDRESS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

/// `name` without its `emailAddress` attributes (an RDN left empty goes too). RFC 5280 §4.1.2.6:
/// an e-mail address belongs in the SAN as an rfc822Name; in the subject alone it is a legacy form
/// that linters refuse, and ScaiVault issues no e-mail names.
///
/// # Errors
/// Never in practice (a subset of a valid RDN is a valid RDN).
pub fn without_email(name: &Name) -> Result<Name> {
    let mut rdns = Vec::with_capacity(name.0.len());
    for rdn in &name.0 {
        let kept: Vec<AttributeTypeAndValue> = rdn
            .0
            .iter()
            .filter(|atv| atv.oid != EMAIL_ADDRESS)
            .cloned()
            .collect();
        if !kept.is_empty() {
            rdns.push(RelativeDistinguishedName(SetOfVec::try_from(kept)?));
        }
    }
    Ok(RdnSequence(rdns))
}

/// The value of the first `CN` in a name, if any.
pub fn common_name(name: &Name) -> Option<String> {
    name.0.iter().flat_map(|rdn| rdn.0.iter()).find_map(|atv| {
        if atv.oid == rfc4519::CN {
            atv.value.decode_as::<String>().ok().or_else(|| {
                atv.value
                    .decode_as::<PrintableStringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string())
            })
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn hidden_characters_are_control_and_format_characters() {
        for c in [
            '\u{0}',
            '\u{1b}',
            '\u{7f}',
            '\u{ad}',
            '\u{200b}',
            '\u{202e}',
            '\u{2066}',
            '\u{2060}',
            '\u{feff}',
            '\u{e0041}',
        ] {
            assert!(super::is_hidden(c), "{c:?}");
        }
        for c in [
            'a', 'Z', ' ', '-', '.', 'é', 'ß', '中', '\u{a0}', '😀', '\u{200c}', '\u{200d}',
            '\u{200e}', '\u{200f}', '\u{180b}',
        ] {
            assert!(!super::is_hidden(c), "{c:?}");
        }
        // Ordinary writing that needs the joiners: Persian, Sinhala, an emoji sequence.
        for text in ["می‌خواهم", "ශ්‍රී ලංකා", "שלום עולם", "👩‍💻"]
        {
            assert!(!text.chars().any(super::is_hidden), "{text}");
        }
    }

    use super::*;
    use der::Encode;

    #[test]
    fn email_addresses_leave_the_subject() {
        use std::str::FromStr;
        let n = Name::from_str("CN=dev3.example.com,emailAddress=dev3@example.com,O=Acme").unwrap();
        let kept = without_email(&n).unwrap();
        assert_eq!(kept.to_string(), "CN=dev3.example.com,O=Acme");
        let only = Name::from_str("emailAddress=a@b.example").unwrap();
        assert!(without_email(&only).unwrap().0.is_empty());
        let plain = Name::from_str("CN=x,O=y").unwrap();
        assert_eq!(without_email(&plain).unwrap(), plain);
    }

    #[test]
    fn builds_and_reads_back() {
        let f = DnFields {
            common_name: "Acme Root CA".into(),
            organization: Some("Acme, Inc.".into()),
            country: Some("NL".into()),
            ..Default::default()
        };
        let n = f.to_name().unwrap();
        assert_eq!(common_name(&n).as_deref(), Some("Acme Root CA"));
        // RFC 4514 writes the most specific RDN first.
        assert_eq!(n.to_string(), "CN=Acme Root CA,O=Acme\\, Inc.,C=NL");
        assert!(n.to_der().is_ok());
    }

    #[test]
    fn names_compare_as_rfc_5280_section_7_1_says() {
        let n = |s: &str| -> Name { s.parse().unwrap() };
        assert!(same_name(
            &n("CN=Test Root,O=Acme"),
            &n("CN=test  root,O= ACME ")
        ));
        assert!(!same_name(&n("CN=Test Root"), &n("CN=Test Roots")));
        assert!(!same_name(&n("CN=Test Root"), &n("O=Test Root")));
        assert!(!same_name(&n("CN=a,O=b"), &n("CN=a")));
    }

    #[test]
    fn refuses_bad_fields() {
        let mut f = DnFields {
            common_name: String::new(),
            ..Default::default()
        };
        assert!(f.to_name().is_err());
        f.common_name = "x".repeat(65);
        assert!(f.to_name().is_err());
        f.common_name = "ok".into();
        f.country = Some("NLD".into());
        assert!(f.to_name().is_err());
        f.country = None;
        f.organization = Some("a\u{0}b".into());
        assert!(f.to_name().is_err());
    }
}
