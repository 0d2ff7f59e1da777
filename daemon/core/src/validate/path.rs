//! The `verify_path` hook (our checks on each path webpki verifies) and the report of a failed
//! search.

use super::engine::AnchorInfo;
use super::failure::{self, Code, Failure};
use super::leaf::validity;
use super::parsed::Parsed;
use super::profile::{self, Role};
use super::revocation::{self, Crl, Status};
use super::types::{ChainCert, Request};
use rustls_pki_types::{TrustAnchor, UnixTime};
use std::cell::RefCell;
use std::collections::HashMap;
use time::OffsetDateTime;
use webpki::VerifiedPath;

/// What the `verify_path` hook needs.
pub(super) struct PathContext<'a, 'r> {
    pub(super) req: &'a Request<'r>,
    pub(super) anchors: &'a [AnchorInfo<'a>],
    pub(super) trust: &'a [TrustAnchor<'a>],
    pub(super) inter_parsed: &'a HashMap<&'a [u8], Parsed>,
    pub(super) crls: &'a [Crl],
    /// Reasons candidate paths were rejected for (reported only if no path is accepted).
    pub(super) rejected: RefCell<Vec<Failure>>,
    /// Whether revocation is looked at (when the request asks for it): off for the second search
    /// that finds the path and anchor of a revoked certificate.
    pub(super) revocation: bool,
}

impl PathContext<'_, '_> {
    /// Our checks on a path webpki verified. An error makes webpki try the next candidate.
    pub(super) fn check_path(&self, path: &VerifiedPath<'_>) -> Result<(), webpki::Error> {
        let mut fails = Vec::new();
        let mut certs: Vec<Option<&Parsed>> = Vec::new();
        for c in path.intermediate_certificates() {
            let p = self.inter_parsed.get(c.der().as_ref());
            match p {
                Some(p) => fails.extend(profile::check(p, Role::Intermediate)),
                None => fails.push(Failure::new(
                    Code::Malformed,
                    "an intermediate certificate does not decode".to_owned(),
                )),
            }
            certs.push(p);
        }
        let anchor = self
            .anchors
            .iter()
            .zip(self.trust)
            .find(|(_, t)| std::ptr::eq(*t, path.anchor()))
            .map(|(a, _)| a);
        if let Some(a) = anchor {
            fails.extend(profile::check(&a.parsed, Role::Anchor));
            fails.extend(validity(&a.parsed, self.req.time));
            // webpki takes only the anchor's name, key and name constraints; its
            // pathLenConstraint binds the path too (RFC 5280 §4.2.1.9: the non-self-issued
            // intermediates that may follow it), as openssl checks.
            let limit = a
                .parsed
                .basic_constraints
                .value()
                .and_then(|b| b.path_len_constraint);
            if let Some(limit) = limit {
                let below = path
                    .intermediate_certificates()
                    .filter(|c| c.issuer() != c.subject())
                    .count();
                if below > usize::from(limit) {
                    fails.push(Failure::new(
                        Code::PathLengthExceeded,
                        format!(
                            "the trust anchor {} allows {limit} intermediate(s) below it \
                             (pathLenConstraint); the path has {below}",
                            a.parsed.describe()
                        ),
                    ));
                }
            }
        }
        if let Some(max) = self.req.max_intermediates {
            let logical = path
                .intermediate_certificates()
                .filter(|c| c.issuer() != c.subject())
                .count();
            if logical > max {
                fails.push(Failure::new(
                    Code::PathLengthExceeded,
                    format!("the path has {logical} intermediates (at most {max})"),
                ));
            }
        }
        // webpki checks the SAN and the subject's DN against name constraints, not the
        // subject's `emailAddress` attributes against rfc822Name ones (RFC 5280 §4.2.1.10), nor
        // a host-name CN of a leaf without DNS names in its SAN against dNSName ones (OpenSSL
        // checks both).
        let leaf = Parsed::new(self.req.leaf).ok();
        if let Some(leaf) = &leaf {
            let cas = certs
                .iter()
                .flatten()
                .copied()
                .chain(anchor.map(|a| &a.parsed))
                .filter_map(|c| Some((c.subject_text.clone(), c.name_constraints.value()?)));
            let rules = crate::constraints::NameRules::from_decoded(cas);
            let has_dns_san = leaf.san.value().is_some_and(|san| {
                san.0
                    .iter()
                    .any(|g| matches!(g, x509_cert::ext::pkix::name::GeneralName::DnsName(_)))
            });
            if let Err(why) = rules.check_subject(&leaf.cert.tbs_certificate.subject, has_dns_san) {
                fails.push(Failure::new(Code::NameConstraintViolation, why));
            }
        }
        if self.revocation && self.req.revocation.is_some() {
            let mut links: Vec<(Option<&Parsed>, bool)> = vec![(leaf.as_ref(), false)];
            links.extend(certs.iter().map(|c| (*c, true)));
            let mut issuers: Vec<Option<&Parsed>> = certs.clone();
            issuers.push(anchor.map(|a| &a.parsed));
            for ((cert, is_ca), issuer) in links.into_iter().zip(issuers) {
                if let (Some(cert), Some(issuer)) = (cert, issuer) {
                    fails.extend(self.revocation_of(cert, is_ca, issuer));
                }
            }
        }
        if fails.is_empty() {
            return Ok(());
        }
        let err = if fails.iter().any(|f| f.code == Code::Revoked) {
            webpki::Error::CertRevoked
        } else if fails.iter().any(|f| f.code == Code::RevocationUnknown) {
            webpki::Error::UnknownRevocationStatus
        } else {
            // Stands for "rejected by our checks"; webpki never returns it from path building.
            webpki::Error::UnsupportedNameType
        };
        let mut rejected = self.rejected.borrow_mut();
        for f in fails {
            if !rejected.contains(&f) {
                rejected.push(f);
            }
        }
        Err(err)
    }

    fn revocation_of(&self, cert: &Parsed, is_ca: bool, issuer: &Parsed) -> Option<Failure> {
        let source = self.req.revocation.and_then(|r| r.source);
        if let Some(status) = source.and_then(|s| s.status(&issuer.spki_der, cert.serial_der())) {
            return match status {
                Status::Good => None,
                Status::Revoked { reason, revoked_at } => Some(revocation::revoked(
                    cert,
                    &reason,
                    revoked_at.as_deref(),
                    &format!("the records of its issuer {}", issuer.describe()),
                )),
                Status::Unknown => Some(Failure::new(
                    Code::RevocationUnknown,
                    format!(
                        "{}: serial {} is not in the inventory of its issuer {}",
                        cert.describe(),
                        cert.serial_text(),
                        issuer.describe()
                    ),
                )),
            };
        }
        let covering: Vec<&Crl> = self.crls.iter().filter(|c| c.covers(cert, is_ca)).collect();
        if covering.is_empty() {
            return Some(Failure::new(
                Code::RevocationUnknown,
                format!(
                    "{}: no CRL from its issuer {} was supplied",
                    cert.describe(),
                    issuer.describe()
                ),
            ));
        }
        // RFC 5280 §4.2.1.3: a CRL is signed with a key whose KeyUsage (when present) asserts
        // cRLSign. webpki checks this for intermediates but not for trust anchors.
        if issuer.key_usage.value().is_some_and(|k| !k.crl_sign()) {
            return Some(Failure::new(
                Code::RevocationUnknown,
                format!(
                    "{}: its issuer {} may not sign CRLs (KeyUsage without cRLSign)",
                    cert.describe(),
                    issuer.describe()
                ),
            ));
        }
        covering.iter().find_map(|c| {
            c.defect().map(|d| {
                Failure::new(
                    Code::RevocationUnknown,
                    format!(
                        "{}: the CRL of {} cannot be relied on: {d}",
                        cert.describe(),
                        issuer.describe()
                    ),
                )
            })
        })
    }
}

/// Adds webpki's final error to `errors`, in terms of the certificates involved where possible.
pub(super) fn explain(
    errors: &mut Vec<Failure>,
    e: &webpki::Error,
    linked: &[&Parsed],
    crls: &[Crl],
    req: &Request<'_>,
) {
    match e {
        webpki::Error::UnsupportedNameType => {} // our own rejection, already listed
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            let before = errors.len();
            for c in linked {
                if let Some(f) = validity(c, req.time) {
                    push(errors, f);
                }
            }
            if errors.len() == before && !errors.iter().any(|f| same_code(f, e)) {
                push(errors, failure::from_webpki(e));
            }
        }
        webpki::Error::CertRevoked => {
            let before = errors.len();
            for (i, c) in linked.iter().enumerate() {
                let issuer = linked
                    .get(i + 1)
                    .map_or("its issuer".to_owned(), |p| p.describe());
                for crl in crls {
                    if crl.issuer_der == c.issuer_der {
                        if let Some((reason, at)) = crl.entry(c) {
                            push(
                                errors,
                                revocation::revoked(
                                    c,
                                    &reason,
                                    Some(&at),
                                    &format!("the CRL of {issuer}"),
                                ),
                            );
                        }
                    }
                }
            }
            if errors.len() == before && !errors.iter().any(|f| f.code == Code::Revoked) {
                push(errors, failure::from_webpki(e));
            }
        }
        other => {
            // webpki reports a signature made with a key it cannot use (RSA-1024, a curve it
            // does not know) as one that does not verify: the key is named below instead, and
            // a signature that may well be sound is not called bad.
            let key_to_blame = failure::from_webpki(other).code == Code::BadSignature
                && linked
                    .iter()
                    .skip(1)
                    .any(|c| profile::webpki_refuses_rsa(c));
            if !key_to_blame && !errors.iter().any(|f| same_code(f, other)) {
                push(errors, failure::from_webpki(other));
            }
        }
    }
    // webpki reports a key it cannot use as a bad or unsupported signature; name the key.
    for c in linked.iter().skip(1) {
        if let Some(f) = profile::key(c) {
            push(errors, f);
        }
    }
    if errors.is_empty() {
        push(errors, failure::from_webpki(e));
    }
}

fn same_code(f: &Failure, e: &webpki::Error) -> bool {
    f.code == failure::from_webpki(e).code
}

pub(super) fn push(errors: &mut Vec<Failure>, f: Failure) {
    if !errors.contains(&f) {
        errors.push(f);
    }
}

/// The leaf and the certificates above it that link by name (issuer = next subject), ending at a
/// trust anchor when one links; signatures are not checked. For reporting failed validations.
pub(super) fn link_by_name<'p>(
    leaf: &'p Parsed,
    inters: &'p HashMap<&[u8], Parsed>,
    anchors: &'p [AnchorInfo<'_>],
) -> Vec<&'p Parsed> {
    let mut chain = vec![leaf];
    let mut cur = leaf;
    for _ in 0..8 {
        if let Some(a) = anchors
            .iter()
            .find(|a| a.parsed.subject_der == cur.issuer_der)
        {
            if a.parsed.der != cur.der {
                chain.push(&a.parsed);
            }
            break;
        }
        let next = inters
            .values()
            .filter(|p| p.subject_der == cur.issuer_der && !chain.iter().any(|c| c.der == p.der))
            .min_by(|a, b| a.der.cmp(&b.der));
        match next {
            Some(n) => {
                chain.push(n);
                cur = n;
            }
            None => break,
        }
    }
    chain
}

pub(super) fn chain_cert(p: &Parsed) -> ChainCert {
    ChainCert {
        subject: p.subject_text.clone(),
        serial_number: p.serial_text(),
        fingerprint_sha256: p.fingerprint(),
    }
}

pub(super) fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap_or(0),
    ))
}
