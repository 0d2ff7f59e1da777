//! Checks of the leaf alone: its profile, validity, purpose, key usage and names. They run
//! whether or not a path is found, so that every reason is reported.

use super::failure::{self, Code, Failure};
use super::parsed::Parsed;
use super::path::unix_time;
use super::profile::{self, Role};
use super::types::{PeerName, Purpose, Request};
use rustls_pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;
use webpki::EndEntityCert;
use x509_cert::ext::pkix::name::GeneralName;

/// Properties of the leaf alone, found whether or not a path is built.
pub(super) fn leaf_checks(leaf: &Parsed, req: &Request<'_>) -> Vec<Failure> {
    let mut out = profile::check(leaf, Role::Leaf);
    out.extend(validity(leaf, req.time));
    let wanted = match req.purpose {
        Purpose::ServerAuth => Some((const_oid::db::rfc5280::ID_KP_SERVER_AUTH, "serverAuth")),
        Purpose::ClientAuth => Some((const_oid::db::rfc5280::ID_KP_CLIENT_AUTH, "clientAuth")),
        Purpose::Any => None,
    };
    if let (Some((oid, name)), Some(eku)) = (wanted, leaf.eku.value()) {
        if !eku.0.contains(&oid) {
            out.push(Failure::new(
                Code::WrongPurpose,
                format!(
                    "{}: its extended key usage does not include {name}",
                    leaf.describe()
                ),
            ));
        }
    }
    if let Some(ku) = leaf.key_usage.value() {
        for bit in req.key_usage {
            if !ku.0.contains(*bit) {
                out.push(Failure::new(
                    Code::WrongPurpose,
                    format!("{}: its key usage lacks {bit:?}", leaf.describe()),
                ));
            }
        }
    }
    for name in req.names {
        if let Some(f) = name_check(leaf, name) {
            out.push(f);
        }
    }
    out
}

pub(super) fn validity(c: &Parsed, at: OffsetDateTime) -> Option<Failure> {
    let t = unix_time(at).as_secs();
    if t > c.not_after {
        Some(Failure::new(
            Code::Expired,
            format!(
                "{} expired at {} (validation time {})",
                c.describe(),
                failure::unix(c.not_after),
                failure::unix(t)
            ),
        ))
    } else if t < c.not_before {
        Some(Failure::new(
            Code::NotYetValid,
            format!(
                "{} is valid only from {} (validation time {})",
                c.describe(),
                failure::unix(c.not_before),
                failure::unix(t)
            ),
        ))
    } else {
        None
    }
}

fn name_check(leaf: &Parsed, name: &PeerName) -> Option<Failure> {
    let mismatch = |shown: &str| {
        Some(Failure::new(
            Code::NameMismatch,
            format!(
                "{} is not valid for {shown} (names are matched against SubjectAltName only)",
                leaf.describe()
            ),
        ))
    };
    match name {
        PeerName::Dns(d) => {
            let Ok(dns) = rustls_pki_types::DnsName::try_from(d.as_str()) else {
                return Some(Failure::new(
                    Code::NameMismatch,
                    format!("{d:?} is not a valid DNS name"),
                ));
            };
            match webpki_name_ok(leaf, &ServerName::DnsName(dns)) {
                Some(false) => mismatch(&format!("DNS name {d:?}")),
                _ => None,
            }
        }
        PeerName::Ip(ip) => match webpki_name_ok(leaf, &ServerName::IpAddress((*ip).into())) {
            Some(false) => mismatch(&format!("IP address {ip}")),
            _ => None,
        },
        PeerName::Email(m) => {
            let found = leaf.san_names().iter().any(|n| match n {
                GeneralName::Rfc822Name(s) => mail_eq(s.as_str(), m),
                _ => false,
            });
            if found {
                None
            } else {
                mismatch(&format!("e-mail address {m:?}"))
            }
        }
    }
}

/// Whether webpki finds `name` in the leaf; `None` when webpki cannot read the leaf at all (that
/// failure is reported by path building).
fn webpki_name_ok(leaf: &Parsed, name: &ServerName<'_>) -> Option<bool> {
    let der = CertificateDer::from(leaf.der.as_slice());
    let ee = EndEntityCert::try_from(&der).ok()?;
    Some(ee.verify_is_valid_for_subject_name(name).is_ok())
}

/// Mailboxes are equal when the local parts are byte-equal and the domains equal ignoring ASCII
/// case (RFC 5280 §7.5).
fn mail_eq(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => false,
    }
}
