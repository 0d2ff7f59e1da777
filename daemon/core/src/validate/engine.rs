//! One validation run: limits, decoding, leaf checks, webpki's path search with our hook, and the
//! verdict.

use super::failure::{self, Code, Failure};
use super::leaf::leaf_checks;
use super::parsed::Parsed;
use super::path::{chain_cert, explain, link_by_name, push, unix_time, PathContext};
use super::revocation::Crl;
use super::types::{
    Anchor, AnchorRef, Outcome, Request, MAX_CERT_BYTES, MAX_CRLS, MAX_INTERMEDIATES,
};
use rustls_pki_types::{CertificateDer, TrustAnchor};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use webpki::{EndEntityCert, VerifiedPath};

/// A usable trust anchor: webpki's view and ours.
pub(super) struct AnchorInfo<'a> {
    pub(super) webpki: TrustAnchor<'a>,
    pub(super) parsed: Parsed,
    pub(super) source: &'a Anchor,
}

/// Validates `req.leaf`. Never fails: every problem is a reason in the outcome.
pub fn validate(req: &Request<'_>) -> Outcome {
    if let Some(f) = oversized(req) {
        return Outcome::failed(vec![f], Vec::new());
    }
    let leaf = match Parsed::new(req.leaf) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::failed(
                vec![Failure::new(
                    Code::Malformed,
                    format!("the certificate does not decode: {e}"),
                )],
                Vec::new(),
            )
        }
    };
    let mut errors = leaf_checks(&leaf, req);
    let crls = match parse_crls(req) {
        Ok(c) => c,
        Err(f) => {
            errors.push(f);
            return Outcome::failed(errors, vec![chain_cert(&leaf)]);
        }
    };
    // Untrusted candidates: each distinct certificate once, never the leaf itself.
    let mut seen: HashSet<&[u8]> = HashSet::from([req.leaf]);
    let mut inter_der: Vec<CertificateDer<'_>> = Vec::new();
    let mut inter_parsed: HashMap<&[u8], Parsed> = HashMap::new();
    for d in req.intermediates {
        if !seen.insert(d.as_slice()) {
            continue;
        }
        inter_der.push(CertificateDer::from(d.as_slice()));
        if let Ok(p) = Parsed::new(d) {
            inter_parsed.insert(d.as_slice(), p);
        }
    }
    let anchors: Vec<AnchorInfo<'_>> = req
        .anchors
        .iter()
        .filter_map(|a| {
            let der = CertificateDer::from(a.der.as_slice());
            let webpki = webpki::anchor_from_trusted_cert(&der).ok()?.to_owned();
            Some(AnchorInfo {
                webpki,
                parsed: Parsed::new(&a.der).ok()?,
                source: a,
            })
        })
        .collect();
    let trust: Vec<TrustAnchor<'_>> = anchors.iter().map(|a| a.webpki.clone()).collect();
    let leaf_der = CertificateDer::from(req.leaf);
    let ee = match EndEntityCert::try_from(&leaf_der) {
        Ok(ee) => ee,
        Err(e) => {
            push(&mut errors, failure::from_webpki(&e));
            return Outcome::failed(errors, vec![chain_cert(&leaf)]);
        }
    };
    let ctx = PathContext {
        req,
        anchors: &anchors,
        trust: &trust,
        inter_parsed: &inter_parsed,
        crls: &crls,
        rejected: RefCell::new(Vec::new()),
        revocation: true,
    };
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls
        .iter()
        .filter(|c| !c.not_yet_valid)
        .map(|c| &c.webpki)
        .collect();
    let revocation = match (req.revocation, crl_refs.is_empty()) {
        (Some(_), false) => webpki::RevocationOptionsBuilder::new(&crl_refs)
            .ok()
            .map(|b| {
                b.with_depth(webpki::RevocationCheckDepth::Chain)
                    .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                    .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                    .build()
            }),
        _ => None,
    };
    let verify = |revocation, ctx: &PathContext<'_, '_>, inter_der: &[CertificateDer<'_>]| {
        let hook = |p: &VerifiedPath<'_>| ctx.check_path(p);
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust,
            inter_der,
            unix_time(req.time),
            req.purpose,
            revocation,
            Some(&hook),
        )
        .map(|path| {
            let mut chain = vec![chain_cert(&leaf)];
            for c in path.intermediate_certificates() {
                if let Some(p) = inter_parsed.get(c.der().as_ref()) {
                    chain.push(chain_cert(p));
                }
            }
            let used = anchors
                .iter()
                .zip(&trust)
                .find(|(_, t)| std::ptr::eq(*t, path.anchor()))
                .map(|(a, _)| a);
            if let Some(a) = used {
                chain.push(chain_cert(&a.parsed));
            }
            let anchor = used.map(|a| AnchorRef {
                kind: a.source.kind,
                id: a.source.id.clone(),
            });
            (chain, anchor)
        })
    };
    match verify(revocation, &ctx, &inter_der) {
        Ok((chain, anchor)) => Outcome {
            valid: errors.is_empty() && anchor.is_some(),
            chain,
            anchor,
            errors,
        },
        Err(e) => {
            // webpki ranks a bad signature above every other reason: with two candidates of one
            // name (a re-keyed CA beside the old one), the real path's failure (a name
            // constraint, a path length) is lost to the other candidate's signature. Searched
            // again without each same-named candidate in turn, the first search that fails for
            // another reason explains the failure instead.
            let (e, ctx) = match retry_without_rivals(&e, &inter_der, &inter_parsed, |subset| {
                let again = PathContext {
                    rejected: RefCell::new(Vec::new()),
                    ..ctx
                };
                verify(revocation, &again, subset)
                    .err()
                    .map(|e2| (e2, again))
            }) {
                Some((e2, again)) => (e2, again),
                None => (e, ctx),
            };
            let rejected = ctx.rejected.into_inner();
            let linked = link_by_name(&leaf, &inter_parsed, &anchors);
            for f in rejected {
                push(&mut errors, f);
            }
            explain(&mut errors, &e, &linked, &crls, req);
            // A revoked certificate, or one whose status is unknown, on a path that verifies
            // otherwise: the path and its anchor are given with the reason, as for a name
            // mismatch (webpki stops at the revocation and returns no path, so it is searched
            // again without the revocation check).
            if matches!(
                e,
                webpki::Error::CertRevoked | webpki::Error::UnknownRevocationStatus
            ) {
                let again = PathContext {
                    rejected: RefCell::new(Vec::new()),
                    revocation: false,
                    ..ctx
                };
                if let Ok((chain, anchor)) = verify(None, &again, &inter_der) {
                    return Outcome {
                        valid: false,
                        chain,
                        anchor,
                        errors,
                    };
                }
            }
            Outcome::failed(errors, linked.iter().map(|p| chain_cert(p)).collect())
        }
    }
}

/// Whether `e` is webpki's "a signature does not verify".
fn is_bad_signature(e: &webpki::Error) -> bool {
    matches!(
        e,
        webpki::Error::InvalidSignatureForPublicKey | webpki::Error::SignatureAlgorithmMismatch
    )
}

/// For a search that failed on a bad signature with several candidates of one subject name:
/// `search` run on the candidates without each of those in turn (at most
/// [`MAX_RIVAL_RETRIES`] searches); the first result that fails for another reason.
fn retry_without_rivals<'d, T>(
    e: &webpki::Error,
    inter_der: &[CertificateDer<'d>],
    inter_parsed: &HashMap<&[u8], Parsed>,
    mut search: impl FnMut(&[CertificateDer<'d>]) -> Option<(webpki::Error, T)>,
) -> Option<(webpki::Error, T)> {
    if !is_bad_signature(e) {
        return None;
    }
    let subject = |d: &CertificateDer<'_>| {
        inter_parsed
            .get(d.as_ref())
            .map(|p| p.subject_der.as_slice())
    };
    let rivals: Vec<usize> = (0..inter_der.len())
        .filter(|&i| {
            let s = subject(&inter_der[i]);
            s.is_some()
                && inter_der
                    .iter()
                    .enumerate()
                    .any(|(j, d)| j != i && subject(d) == s)
        })
        .take(MAX_RIVAL_RETRIES)
        .collect();
    for i in rivals {
        let subset: Vec<CertificateDer<'d>> = inter_der
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, d)| d.clone())
            .collect();
        if let Some((e2, t)) = search(&subset) {
            if !is_bad_signature(&e2) {
                return Some((e2, t));
            }
        }
    }
    None
}

/// At most this many searches again after a bad signature (see [`retry_without_rivals`]).
const MAX_RIVAL_RETRIES: usize = 4;

/// Input limits, checked before any parsing.
fn oversized(req: &Request<'_>) -> Option<Failure> {
    if req.intermediates.len() > MAX_INTERMEDIATES {
        return Some(Failure::new(
            Code::PathTooComplex,
            format!(
                "{} intermediate certificates (at most {MAX_INTERMEDIATES})",
                req.intermediates.len()
            ),
        ));
    }
    let big = std::iter::once(req.leaf)
        .chain(req.intermediates.iter().map(Vec::as_slice))
        .any(|d| d.len() > MAX_CERT_BYTES);
    if big {
        return Some(Failure::new(
            Code::Malformed,
            format!("a certificate is larger than {MAX_CERT_BYTES} octets"),
        ));
    }
    match req.revocation {
        Some(r) if r.crls.len() > MAX_CRLS => Some(Failure::new(
            Code::PathTooComplex,
            format!("{} CRLs (at most {MAX_CRLS})", r.crls.len()),
        )),
        _ => None,
    }
}

fn parse_crls(req: &Request<'_>) -> Result<Vec<Crl>, Failure> {
    let Some(r) = req.revocation else {
        return Ok(Vec::new());
    };
    let now = req.time.unix_timestamp();
    let crls = r
        .crls
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let mut c = Crl::new(der).map_err(|e| {
                Failure::new(
                    Code::RevocationUnknown,
                    format!("CRL {} cannot be used: {e}", i + 1),
                )
            })?;
            c.check_time(now);
            Ok(c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(super::revocation::newest_only(crls))
}
