//! Public key algorithms and sizes.

use super::super::failure::{Code, Failure};
use super::super::parsed::Parsed;
use const_oid::db::rfc5912;
use const_oid::ObjectIdentifier;
use der::asn1::UintRef;
use der::{Decode, Sequence};

#[derive(Sequence)]
struct RsaKey<'a> {
    n: UintRef<'a>,
    e: UintRef<'a>,
}

/// The bit size of an RSA key, `None` for other keys (or one that does not decode).
fn rsa_bits(c: &Parsed) -> Option<usize> {
    let spki = &c.cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != rfc5912::RSA_ENCRYPTION {
        return None;
    }
    let k = RsaKey::from_der(spki.subject_public_key.as_bytes()?).ok()?;
    let n = k.n.as_bytes();
    let lead = n.first().map_or(8, |b| b.leading_zeros() as usize);
    Some((n.len() * 8).saturating_sub(lead.min(8)))
}

/// Whether webpki refuses to verify signatures made with this certificate's key while calling
/// them signatures that do not verify: an RSA modulus outside 2048..=8192 bits.
pub fn webpki_refuses_rsa(c: &Parsed) -> bool {
    rsa_bits(c).is_some_and(|bits| !(2048..=8192).contains(&bits))
}

/// Keys no current profile allows: RSA under 2048 bits or not a whole number of octets, DSA,
/// elliptic curves other than P-256/P-384/P-521, explicitly encoded curves (CA/B BR §6.1.5,
/// §7.1.3.1). webpki refuses such keys only where it verifies a signature with them, so never
/// for the leaf and only loosely for CAs (it accepts any RSA modulus of 2048 to 8192 bits).
pub fn key(c: &Parsed) -> Option<Failure> {
    let spki = &c.cert.tbs_certificate.subject_public_key_info;
    let oid = spki.algorithm.oid;
    let bad = |what: String| {
        Some(Failure::new(
            Code::UnsupportedAlgorithm,
            format!("{}: {what}", c.describe()),
        ))
    };
    if oid == rfc5912::RSA_ENCRYPTION {
        let Some(bits) = spki.subject_public_key.as_bytes() else {
            return bad("RSA key bit string is not octet aligned".into());
        };
        return match RsaKey::from_der(bits) {
            Ok(k) => {
                let _ = k.e;
                let size = rsa_bits(c).unwrap_or(0);
                if size < 2048 {
                    bad(format!("RSA key of {size} bits (at least 2048)"))
                } else if !size.is_multiple_of(8) {
                    bad(format!("RSA modulus of {size} bits is not a multiple of 8"))
                } else {
                    None
                }
            }
            Err(e) => bad(format!("RSA key does not decode: {e}")),
        };
    }
    if oid == rfc5912::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c)
                if c == rfc5912::SECP_256_R_1
                    || c == rfc5912::SECP_384_R_1
                    || c == rfc5912::SECP_521_R_1 =>
            {
                None
            }
            Some(c) => bad(format!(
                "elliptic curve {c} is not accepted (P-256, P-384, P-521 are)"
            )),
            None => bad(
                "elliptic-curve key without a named curve (explicit parameters are not accepted)"
                    .into(),
            ),
        };
    }
    if oid == const_oid::db::rfc8410::ID_ED_25519 || oid == const_oid::db::rfc8410::ID_ED_448 {
        return None;
    }
    bad(format!("public key algorithm {oid} is not accepted"))
}
