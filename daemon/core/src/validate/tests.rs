//! Unit tests of the validator on chains made by ScaiVault's own profile code (`ca_tbs`,
//! `leaf_tbs`) with in-memory keys.

use super::*;
use crate::leaf::{leaf_tbs, sign_leaf, LeafNames, LeafTemplate, LeafUrls};
use crate::name::DnFields;
use crate::profile::{ca_tbs, CaTemplate, Constraints, IssuerInfo, LintExpect};
use crate::serial::Serial;
use crate::sign::{issuer_info, sign_certificate};
use crate::{pem, time_util};
use scaivault_hsm::soft::SoftToken;
use scaivault_hsm::{KeySpec, Signer, Token};
use std::sync::Arc;
use time::Duration;

struct Ca {
    der: Vec<u8>,
    info: IssuerInfo,
    key: Arc<dyn Signer>,
}

fn ca(token: &SoftToken, cn: &str, parent: Option<&Ca>, constraints: Constraints) -> Ca {
    ca_with_path_length(token, cn, parent, constraints, None)
}

fn ca_with_path_length(
    token: &SoftToken,
    cn: &str,
    parent: Option<&Ca>,
    constraints: Constraints,
    max_path_length: Option<u8>,
) -> Ca {
    let key = token.generate(KeySpec::EcP256, cn).unwrap();
    let now = time_util::now();
    let t = CaTemplate {
        subject: DnFields {
            common_name: cn.into(),
            ..Default::default()
        }
        .to_name()
        .unwrap(),
        spki_der: key.public_key_der().to_vec(),
        serial: Serial::fresh(),
        not_before: now - Duration::hours(1),
        // Never past the parent (the lint refuses that), also when a second ticks by.
        not_after: parent.map_or(now + Duration::days(365), |p| p.info.not_after),
        max_path_length,
        constraints,
        issuer_urls: None,
    };
    let alg = key.algorithm_der();
    let tbs = ca_tbs(&t, parent.map(|p| &p.info), &alg).unwrap();
    let signer = parent.map_or(key.clone(), |p| p.key.clone());
    let der = sign_certificate(
        tbs,
        LintExpect {
            issuer: parent.map(|p| &p.info),
            ca: true,
            algorithm_der: &parent.map_or(alg.clone(), |p| p.info.algorithm_der.clone()),
        },
        signer.as_ref(),
    )
    .unwrap();
    let info = issuer_info(&pem::from_der(&der).unwrap(), alg).unwrap();
    Ca { der, info, key }
}

fn leaf(token: &SoftToken, issuer: &Ca, dns: &str, server: bool, client: bool) -> Vec<u8> {
    let key = token
        .generate(KeySpec::EcP256, &format!("leaf-{dns}"))
        .unwrap();
    let now = time_util::now();
    let t = LeafTemplate {
        subject: DnFields {
            common_name: dns.into(),
            ..Default::default()
        }
        .to_name()
        .unwrap(),
        spki_der: key.public_key_der().to_vec(),
        key_type: scaivault_hsm::KeyType::Ec,
        serial: Serial::fresh(),
        not_before: now - Duration::minutes(5),
        not_after: now + Duration::days(7),
        names: LeafNames {
            dns: vec![dns.into()],
            ips: vec![],
            uris: vec![],
        },
        server_auth: server,
        client_auth: client,
        urls: LeafUrls::for_ca("http://x", "ca_1"),
    };
    sign_leaf(
        &crate::sign::EncodedTbs::new(leaf_tbs(&t, &issuer.info).unwrap()).unwrap(),
        &issuer.info,
        issuer.key.as_ref(),
    )
    .unwrap()
}

struct Pki {
    root: Ca,
    int: Ca,
    leaf: Vec<u8>,
}

fn pki() -> Pki {
    let token = SoftToken::new();
    let root = ca(&token, "Test Root", None, Constraints::default());
    let int = ca(
        &token,
        "Test Intermediate",
        Some(&root),
        Constraints::default(),
    );
    let leaf = leaf(&token, &int, "a.svc.internal", true, false);
    Pki { root, int, leaf }
}

fn anchor(c: &Ca, id: &str) -> Anchor {
    Anchor {
        der: c.der.clone(),
        kind: AnchorKind::InternalCa,
        id: id.into(),
    }
}

fn request<'a>(
    leaf: &'a [u8],
    inter: &'a [Vec<u8>],
    anchors: &'a [Anchor],
    names: &'a [PeerName],
) -> Request<'a> {
    Request {
        leaf,
        intermediates: inter,
        anchors,
        purpose: Purpose::ServerAuth,
        names,
        key_usage: &[],
        time: time_util::now(),
        max_intermediates: None,
        revocation: None,
    }
}

fn codes(o: &Outcome) -> Vec<Code> {
    o.errors.iter().map(|f| f.code).collect()
}

#[test]
fn our_own_chain_validates_with_its_anchor_and_chain() {
    let p = pki();
    let inter = vec![p.int.der.clone()];
    let anchors = vec![anchor(&p.root, "ca_root")];
    let names = vec![PeerName::dns("a.svc.internal").unwrap()];
    let o = validate(&request(&p.leaf, &inter, &anchors, &names));
    assert!(o.valid, "{:?}", o.errors);
    assert_eq!(o.chain.len(), 3);
    assert_eq!(o.chain[0].subject, "CN=a.svc.internal");
    assert_eq!(o.chain[2].subject, "CN=Test Root");
    assert_eq!(
        o.anchor,
        Some(AnchorRef {
            kind: AnchorKind::InternalCa,
            id: "ca_root".into()
        })
    );
}

#[test]
fn each_failure_has_its_code() {
    let p = pki();
    let inter = vec![p.int.der.clone()];
    let anchors = vec![anchor(&p.root, "ca_root")];
    let good = vec![PeerName::dns("a.svc.internal").unwrap()];

    let mut r = request(&p.leaf, &inter, &anchors, &good);
    r.purpose = Purpose::ClientAuth;
    let o = validate(&r);
    assert!(!o.valid && codes(&o).contains(&Code::WrongPurpose), "{o:?}");

    let wrong = vec![PeerName::dns("b.svc.internal").unwrap()];
    let o = validate(&request(&p.leaf, &inter, &anchors, &wrong));
    assert_eq!(codes(&o), vec![Code::NameMismatch], "{o:?}");
    // The path itself verified: the anchor is reported.
    assert!(o.anchor.is_some());

    let mut r = request(&p.leaf, &inter, &anchors, &good);
    r.time = time_util::now() + Duration::days(30);
    let o = validate(&r);
    assert!(codes(&o).contains(&Code::Expired), "{o:?}");
    assert!(o.errors[0].message.contains("CN=a.svc.internal"), "{o:?}");

    let mut r = request(&p.leaf, &inter, &anchors, &good);
    r.time = time_util::now() - Duration::days(30);
    assert!(codes(&validate(&r)).contains(&Code::NotYetValid));

    let o = validate(&request(&p.leaf, &inter, &[], &good));
    assert_eq!(codes(&o), vec![Code::Untrusted], "{o:?}");
    assert_eq!(o.chain.len(), 2, "linked by name as far as it goes");
    assert!(o.anchor.is_none());

    // Another root with the same name but another key: a bad signature, not a valid path.
    let other = ca(&SoftToken::new(), "Test Root", None, Constraints::default());
    let o = validate(&request(&p.leaf, &inter, &[anchor(&other, "x")], &good));
    assert!(!o.valid);
    assert!(codes(&o).contains(&Code::BadSignature), "{o:?}");

    let o = validate(&request(b"not a certificate", &inter, &anchors, &good));
    assert_eq!(codes(&o), vec![Code::Malformed]);
}

/// webpki reads only an anchor's name, key and name constraints; its pathLenConstraint binds
/// the path as well (openssl: "path length constraint exceeded").
#[test]
fn the_anchors_path_length_binds_the_path() {
    let token = SoftToken::new();
    let root = ca_with_path_length(&token, "Len0 Root", None, Constraints::default(), Some(0));
    let int = ca(&token, "Len0 Int", Some(&root), Constraints::default());
    let deep = leaf(&token, &int, "a.svc.internal", true, false);
    let inter = vec![int.der.clone()];
    let anchors = vec![anchor(&root, "ta_len0")];
    let names = vec![PeerName::dns("a.svc.internal").unwrap()];
    let o = validate(&request(&deep, &inter, &anchors, &names));
    assert!(!o.valid, "{o:?}");
    assert_eq!(codes(&o), vec![Code::PathLengthExceeded], "{o:?}");
    assert!(o.errors[0].message.contains("allows 0"), "{o:?}");
    // pathLen 1 allows the one intermediate.
    let root = ca_with_path_length(&token, "Len1 Root", None, Constraints::default(), Some(1));
    let int = ca(&token, "Len1 Int", Some(&root), Constraints::default());
    let allowed = leaf(&token, &int, "b.svc.internal", true, false);
    let inter = vec![int.der.clone()];
    let anchors = vec![anchor(&root, "ta_len1")];
    let names = vec![PeerName::dns("b.svc.internal").unwrap()];
    let o = validate(&request(&allowed, &inter, &anchors, &names));
    assert!(o.valid, "{o:?}");
}

#[test]
fn name_constraints_of_an_intermediate_bind_the_leaf() {
    let token = SoftToken::new();
    let root = ca(&token, "NC Root", None, Constraints::default());
    let int = ca(
        &token,
        "NC Intermediate",
        Some(&root),
        Constraints {
            permitted_dns_domains: vec!["vendor.example".into()],
            ..Default::default()
        },
    );
    let inside = leaf(&token, &int, "a.vendor.example", true, true);
    // ScaiVault's own lint refuses to sign this one (constraints::tests); a CA that does not
    // check is what the validator must catch.
    let careless = Ca {
        der: int.der.clone(),
        info: IssuerInfo {
            name_rules: crate::constraints::NameRules::default(),
            ..int.info.clone()
        },
        key: int.key.clone(),
    };
    let outside = leaf(&token, &careless, "evil.example.org", true, true);
    let inter = vec![int.der.clone()];
    let anchors = vec![anchor(&root, "r")];
    assert!(validate(&request(&inside, &inter, &anchors, &[])).valid);
    let o = validate(&request(&outside, &inter, &anchors, &[]));
    assert_eq!(codes(&o), vec![Code::NameConstraintViolation], "{o:?}");
    // A re-keyed intermediate of the same name beside it (in either order): webpki's bad
    // signature on that candidate does not hide the real path's reason.
    let rekeyed = ca(
        &SoftToken::new(),
        "NC Intermediate",
        Some(&root),
        Constraints {
            permitted_dns_domains: vec!["vendor.example".into()],
            ..Default::default()
        },
    );
    for both in [
        vec![int.der.clone(), rekeyed.der.clone()],
        vec![rekeyed.der.clone(), int.der.clone()],
    ] {
        let o = validate(&request(&outside, &both, &anchors, &[]));
        assert_eq!(codes(&o), vec![Code::NameConstraintViolation], "{o:?}");
        assert!(validate(&request(&inside, &both, &anchors, &[])).valid);
    }
}

struct Fixed(Option<Status>, Vec<u8>);

impl RevocationSource for Fixed {
    fn status(&self, issuer_spki: &[u8], _serial: &[u8]) -> Option<Status> {
        (issuer_spki == self.1.as_slice())
            .then(|| self.0.clone())
            .flatten()
    }
}

#[test]
fn revocation_from_our_records_and_unknown_status() {
    let p = pki();
    let inter = vec![p.int.der.clone()];
    let anchors = vec![anchor(&p.root, "r")];
    let int_spki = subject_public_key_info(&p.int.der).unwrap();
    let root_spki = subject_public_key_info(&p.root.der).unwrap();
    let run = |source: &dyn RevocationSource| {
        let mut r = request(&p.leaf, &inter, &anchors, &[]);
        r.revocation = Some(Revocation {
            crls: &[],
            source: Some(source),
        });
        validate(&r)
    };
    // Both issuers are ours and say good.
    struct Both(Vec<u8>, Vec<u8>);
    impl RevocationSource for Both {
        fn status(&self, spki: &[u8], _: &[u8]) -> Option<Status> {
            (spki == self.0.as_slice() || spki == self.1.as_slice()).then_some(Status::Good)
        }
    }
    assert!(run(&Both(int_spki.clone(), root_spki.clone())).valid);
    // The leaf is revoked.
    struct LeafRevoked(Vec<u8>, Vec<u8>);
    impl RevocationSource for LeafRevoked {
        fn status(&self, spki: &[u8], _: &[u8]) -> Option<Status> {
            if spki == self.0.as_slice() {
                Some(Status::Revoked {
                    reason: "key_compromise".into(),
                    revoked_at: Some("2026-01-01T00:00:00Z".into()),
                })
            } else {
                (spki == self.1.as_slice()).then_some(Status::Good)
            }
        }
    }
    let o = run(&LeafRevoked(int_spki.clone(), root_spki.clone()));
    assert_eq!(codes(&o), vec![Code::Revoked], "{o:?}");
    assert!(o.errors[0].message.contains("key_compromise"), "{o:?}");
    // Only the intermediate is ours: the link root → intermediate has no CRL.
    let o = run(&Fixed(Some(Status::Good), int_spki.clone()));
    assert_eq!(codes(&o), vec![Code::RevocationUnknown], "{o:?}");
    // The path verified: its anchor and chain are given, as for a revocation.
    assert!(o.anchor.is_some(), "{o:?}");
    assert_eq!(o.chain.len(), 3, "{o:?}");
    // A serial our CA never issued.
    let o = run(&Fixed(Some(Status::Unknown), int_spki));
    assert!(codes(&o).contains(&Code::RevocationUnknown), "{o:?}");
    assert!(
        o.errors
            .iter()
            .any(|f| f.message.contains("not in the inventory")),
        "{o:?}"
    );
}

#[test]
fn anchors_must_be_ca_certificates() {
    let p = pki();
    let c = check_anchor(&p.root.der).unwrap();
    assert_eq!(c.subject, "CN=Test Root");
    assert_eq!(c.fingerprint_sha256.len(), 64);
    let e = check_anchor(&p.leaf).unwrap_err();
    assert_eq!(e.code(), "not_a_ca_certificate");
    assert_eq!(
        check_anchor(b"junk").unwrap_err().code(),
        "invalid_certificate"
    );
}

#[test]
fn pem_blocks_reads_chains_and_refuses_broken_blocks() {
    let p = pki();
    let text = format!(
        "junk before\n{}{}",
        pem::certificate(&p.leaf).unwrap(),
        pem::certificate(&p.int.der).unwrap().replace('\n', "\r\n")
    );
    let blocks = pem_blocks(&text, "CERTIFICATE").unwrap();
    assert_eq!(blocks, vec![p.leaf.clone(), p.int.der.clone()]);
    assert!(pem_blocks(
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        "CERTIFICATE"
    )
    .is_err());
    assert!(pem_blocks("-----BEGIN CERTIFICATE-----\nAAAA\n", "CERTIFICATE").is_err());
    assert!(pem_blocks("nothing here", "CERTIFICATE")
        .unwrap()
        .is_empty());
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let p = pki();
    let many = vec![p.int.der.clone(); MAX_INTERMEDIATES + 1];
    let o = validate(&request(&p.leaf, &many, &[], &[]));
    assert_eq!(codes(&o), vec![Code::PathTooComplex]);
    let big = vec![0u8; MAX_CERT_BYTES + 1];
    assert_eq!(
        codes(&validate(&request(&big, &[], &[], &[]))),
        vec![Code::Malformed]
    );
}

#[test]
fn purposes_parse() {
    assert_eq!(Purpose::parse("server_auth"), Some(Purpose::ServerAuth));
    assert_eq!(Purpose::parse("client_auth"), Some(Purpose::ClientAuth));
    assert_eq!(Purpose::parse("any"), Some(Purpose::Any));
    assert_eq!(Purpose::parse("code_signing"), None);
    assert!(PeerName::dns("not a name").is_err());
}

/// The validator follows at most `MAX_PATH_INTERMEDIATES` intermediates (rustls-webpki's limit):
/// a path of that many validates; one more is `path_too_complex` (no pathLenConstraint is at
/// stake, so not `path_length_exceeded`).
#[test]
fn the_path_depth_limit_is_the_validators_own() {
    let token = SoftToken::new();
    let root = ca(&token, "Deep Root", None, Constraints::default());
    let mut cas = vec![root];
    for i in 1..=MAX_PATH_INTERMEDIATES + 1 {
        let parent = cas.last();
        let next = ca(&token, &format!("Deep {i}"), parent, Constraints::default());
        cas.push(next);
    }
    let anchors = vec![anchor(&cas[0], "ca_root")];
    for n in [MAX_PATH_INTERMEDIATES, MAX_PATH_INTERMEDIATES + 1] {
        let dns = format!("n{n}.svc.internal");
        let names = vec![PeerName::dns(&dns).unwrap()];
        let leaf = leaf(&token, &cas[n], &dns, true, false);
        let inter: Vec<Vec<u8>> = cas[1..=n].iter().map(|c| c.der.clone()).collect();
        let o = validate(&request(&leaf, &inter, &anchors, &names));
        if n == MAX_PATH_INTERMEDIATES {
            assert!(o.valid, "{:?}", o.errors);
        } else {
            assert_eq!(codes(&o), vec![Code::PathTooComplex], "{:?}", o.errors);
        }
    }
}
