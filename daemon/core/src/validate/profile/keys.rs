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
                let n = k.n.as_bytes();
                let lead = n.first().map_or(8, |b| b.leading_zeros() as usize);
                let size = (n.len() * 8).saturating_sub(lead.min(8));
                let _ = k.e;
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
