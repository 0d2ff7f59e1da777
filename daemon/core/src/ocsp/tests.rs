use super::*;
use crate::time_util;
use der::asn1::Null;
use scaivault_hsm::soft::SoftToken;
use scaivault_hsm::KeySpec;
use std::process::Command;
use x509_cert::Certificate;
use x509_ocsp::{OcspResponseStatus, Request, TbsRequest};

fn ca(token: &SoftToken, spec: KeySpec, label: &str) -> crate::testca::TestCa {
    crate::testca::self_signed(token, spec, label, &format!("OCSP CA {label}"))
}

fn cert_id<D: Digest>(
    issuer: &Certificate,
    oid: der::oid::ObjectIdentifier,
    serial: &[u8],
) -> CertId {
    let tbs = &issuer.tbs_certificate;
    CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(D::digest(tbs.subject.to_der().unwrap()).to_vec())
            .unwrap(),
        issuer_key_hash: OctetString::new(
            D::digest(tbs.subject_public_key_info.subject_public_key.raw_bytes()).to_vec(),
        )
        .unwrap(),
        serial_number: x509_cert::serial_number::SerialNumber::new(serial).unwrap(),
    }
}

fn request(ids: Vec<CertId>, nonce: Option<&[u8]>) -> Vec<u8> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: ids
                .into_iter()
                .map(|req_cert| Request {
                    req_cert,
                    single_request_extensions: None,
                })
                .collect(),
            request_extensions: nonce.map(|n| {
                vec![Extension {
                    extn_id: ID_PKIX_OCSP_NONCE,
                    critical: false,
                    extn_value: OctetString::new(OctetString::new(n).unwrap().to_der().unwrap())
                        .unwrap(),
                }]
            }),
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap()
}

fn basic(der: &[u8]) -> BasicOcspResponse {
    let resp = OcspResponse::from_der(der).unwrap();
    assert_eq!(resp.response_status, OcspResponseStatus::Successful);
    let bytes = resp.response_bytes.unwrap();
    BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap()
}

fn openssl_ok(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn error_responses_match_the_asn1_encoder() {
    for (r, want) in [
        (Refusal::MalformedRequest, OcspResponse::malformed_request()),
        (Refusal::InternalError, OcspResponse::internal_error()),
        (Refusal::TryLater, OcspResponse::try_later()),
        (Refusal::Unauthorized, OcspResponse::unauthorized()),
    ] {
        assert_eq!(r.to_der(), want.to_der().unwrap(), "{}", r.name());
    }
    assert_eq!(Refusal::MalformedRequest.to_der(), [0x30, 3, 0x0a, 1, 1]);
}

#[test]
fn good_revoked_unknown_for_every_key_type_verify_with_openssl() {
    let token = SoftToken::new();
    let dir = tempfile::tempdir().unwrap();
    for (i, spec) in [
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::Rsa2048,
        KeySpec::Ed25519,
    ]
    .into_iter()
    .enumerate()
    {
        let ca = ca(&token, spec, &format!("ca{i}"));
        let responder = Responder::new(&ca.info, ca.key.as_ref(), Duration::hours(12)).unwrap();
        let (good, revoked, unknown) = (Serial::fresh(), Serial::fresh(), Serial::fresh());
        let revoked_at = time_util::now() - Duration::hours(1);
        let lookup = |s: &Serial| {
            Ok(if *s == good {
                CertState::Good
            } else if *s == revoked {
                CertState::Revoked {
                    at: revoked_at,
                    reason: Some("key_compromise".into()),
                }
            } else {
                CertState::Unknown
            })
        };
        let ids = vec![
            cert_id::<Sha1>(&ca.cert, ID_SHA_1, &good.der_bytes()),
            cert_id::<Sha256>(&ca.cert, ID_SHA_256, &revoked.der_bytes()),
            cert_id::<Sha1>(&ca.cert, ID_SHA_1, &unknown.der_bytes()),
        ];
        let now = time_util::now();
        let signed = responder
            .respond(&request(ids.clone(), Some(&[7u8; 16])), now, lookup)
            .unwrap();
        assert_eq!(signed.this_update, now);
        assert_eq!(signed.next_update, now + Duration::hours(12));
        let b = basic(&signed.der);
        let rd = &b.tbs_response_data;
        assert_eq!(
            rd.responder_id,
            ResponderId::ByKey(
                OctetString::new(
                    Sha1::digest(
                        ca.cert
                            .tbs_certificate
                            .subject_public_key_info
                            .subject_public_key
                            .raw_bytes()
                    )
                    .to_vec()
                )
                .unwrap()
            )
        );
        assert_eq!(rd.nonce().unwrap().0.as_bytes(), &[7u8; 16]);
        assert_eq!(rd.responses.len(), 3);
        for (r, id) in rd.responses.iter().zip(&ids) {
            assert_eq!(&r.cert_id, id);
            assert!(r.next_update.is_some());
        }
        assert_eq!(rd.responses[0].cert_status, CertStatus::good());
        match rd.responses[1].cert_status {
            CertStatus::Revoked(info) => {
                assert_eq!(
                    info.revocation_reason,
                    Some(x509_cert::ext::pkix::CrlReason::KeyCompromise)
                );
                assert_eq!(info.revocation_time, ocsp_time(revoked_at).unwrap());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rd.responses[2].cert_status, CertStatus::unknown());

        // OpenSSL's verdict.
        let ca_pem = dir.path().join(format!("ca{i}.pem"));
        std::fs::write(&ca_pem, crate::pem::certificate(&ca.der).unwrap()).unwrap();
        let resp = dir.path().join(format!("resp{i}.der"));
        std::fs::write(&resp, &signed.der).unwrap();
        let (ca_pem, resp) = (ca_pem.to_str().unwrap(), resp.to_str().unwrap());
        let out = openssl_ok(&[
            "ocsp",
            "-respin",
            resp,
            "-VAfile",
            ca_pem,
            "-CAfile",
            ca_pem,
            "-resp_text",
        ]);
        assert!(out.contains("Response verify OK"), "{spec:?}: {out}");
        assert!(out.contains("Cert Status: good"), "{out}");
        assert!(out.contains("Cert Status: revoked"), "{out}");
        assert!(
            out.contains("Revocation Reason: keyCompromise (0x1)"),
            "{out}"
        );
        assert!(out.contains("Cert Status: unknown"), "{out}");
        assert!(out.contains("OCSP Nonce"), "{out}");
    }
}

#[test]
fn unspecified_reason_is_left_out() {
    let token = SoftToken::new();
    let ca = ca(&token, KeySpec::EcP256, "u");
    let responder = Responder::new(&ca.info, ca.key.as_ref(), Duration::minutes(5)).unwrap();
    let s = Serial::fresh();
    for reason in [Some("unspecified".to_owned()), None] {
        let signed = responder
            .respond(
                &request(
                    vec![cert_id::<Sha1>(&ca.cert, ID_SHA_1, &s.der_bytes())],
                    None,
                ),
                time_util::now(),
                |_| {
                    Ok(CertState::Revoked {
                        at: time_util::now(),
                        reason: reason.clone(),
                    })
                },
            )
            .unwrap();
        let b = basic(&signed.der);
        assert!(b.tbs_response_data.response_extensions.is_none());
        match b.tbs_response_data.responses[0].cert_status {
            CertStatus::Revoked(info) => assert_eq!(info.revocation_reason, None),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn refusals() {
    let token = SoftToken::new();
    let ca = ca(&token, KeySpec::EcP256, "a");
    let other = ca_other(&token);
    let responder = Responder::new(&ca.info, ca.key.as_ref(), Duration::hours(1)).unwrap();
    let s = Serial::fresh().der_bytes();
    let never = |_: &Serial| -> Result<CertState, Refusal> { panic!("no lookup expected") };
    let refused = |der: &[u8]| {
        responder
            .respond(der, time_util::now(), never)
            .unwrap_err()
            .refusal()
    };
    // Garbage, an empty request list, an over-long list.
    assert_eq!(refused(b"not DER"), Refusal::MalformedRequest);
    assert_eq!(refused(&request(vec![], None)), Refusal::MalformedRequest);
    let many = vec![cert_id::<Sha1>(&ca.cert, ID_SHA_1, &s); MAX_CERT_IDS + 1];
    assert_eq!(refused(&request(many, None)), Refusal::MalformedRequest);
    // RFC 8954: nonces of 0 or more than 32 octets.
    let one = || vec![cert_id::<Sha1>(&ca.cert, ID_SHA_1, &s)];
    assert_eq!(
        refused(&request(one(), Some(&[]))),
        Refusal::MalformedRequest
    );
    assert_eq!(
        refused(&request(one(), Some(&[1u8; 33]))),
        Refusal::MalformedRequest
    );
    // RFC 6960 §4.4: a critical extension the responder does not understand, in the request or
    // in one of its certificates' entries; the same ones non-critical are ignored.
    let with_ext = |critical: bool, single: bool| {
        let mut req = OcspRequest::from_der(&request(one(), None)).unwrap();
        let ext = Extension {
            extn_id: const_oid::ObjectIdentifier::new_unwrap("1.2.3.4"),
            critical,
            extn_value: OctetString::new(vec![5, 0]).unwrap(),
        };
        if single {
            req.tbs_request.request_list[0].single_request_extensions = Some(vec![ext]);
        } else {
            req.tbs_request.request_extensions = Some(vec![ext]);
        }
        req.to_der().unwrap()
    };
    for single in [false, true] {
        assert_eq!(refused(&with_ext(true, single)), Refusal::MalformedRequest);
        assert_eq!(
            ParsedRequest::parse(&with_ext(false, single))
                .unwrap()
                .len(),
            1
        );
    }
    // Another CA's hashes, a mix, an unsupported hash algorithm.
    assert_eq!(
        refused(&request(vec![cert_id::<Sha1>(&other, ID_SHA_1, &s)], None)),
        Refusal::Unauthorized
    );
    let mut mixed = one();
    mixed.push(cert_id::<Sha256>(&other, ID_SHA_256, &s));
    assert_eq!(refused(&request(mixed, None)), Refusal::Unauthorized);
    let sha384 = cert_id::<sha2::Sha384>(&ca.cert, const_oid::db::rfc5912::ID_SHA_384, &s);
    assert_eq!(refused(&request(vec![sha384], None)), Refusal::Unauthorized);
    // The key hash of one algorithm with the name hash of the other.
    let mut crossed = cert_id::<Sha1>(&ca.cert, ID_SHA_1, &s);
    crossed.issuer_key_hash = cert_id::<Sha1>(&other, ID_SHA_1, &s).issuer_key_hash;
    assert_eq!(
        refused(&request(vec![crossed], None)),
        Refusal::Unauthorized
    );
    // A lookup refusal is passed on.
    let err = responder
        .respond(&request(one(), Some(&[1u8; 32])), time_util::now(), |_| {
            Err(Refusal::TryLater)
        })
        .unwrap_err();
    assert_eq!(err.refusal(), Refusal::TryLater);
}

fn ca_other(token: &SoftToken) -> Certificate {
    ca(token, KeySpec::EcP256, "other").cert
}

#[test]
fn cache_keys_only_for_single_nonce_less_requests() {
    let token = SoftToken::new();
    let ca = ca(&token, KeySpec::EcP256, "k");
    let s = Serial::fresh();
    let id = cert_id::<Sha1>(&ca.cert, ID_SHA_1, &s.der_bytes());
    let req = ParsedRequest::parse(&request(vec![id.clone()], None)).unwrap();
    assert_eq!(
        req.cache_key(),
        Some((s.key(), id.to_der().unwrap())),
        "serial key is the canonical uppercase hex"
    );
    assert!(!req.has_nonce() && req.len() == 1);
    let with_nonce = ParsedRequest::parse(&request(vec![id.clone()], Some(&[3; 20]))).unwrap();
    assert!(with_nonce.has_nonce() && with_nonce.cache_key().is_none());
    let two = ParsedRequest::parse(&request(vec![id.clone(), id], None)).unwrap();
    assert!(two.cache_key().is_none());
    // A negative serial is never ours: unknown, no lookup, no cache key.
    let mut neg = cert_id::<Sha1>(&ca.cert, ID_SHA_1, &[1]);
    neg.serial_number =
        x509_cert::serial_number::SerialNumber::from_der(&[0x02, 0x03, 0x80, 1, 2]).unwrap();
    let req = ParsedRequest::parse(&request(vec![neg], None)).unwrap();
    assert!(req.cache_key().is_none());
    let responder = Responder::new(&ca.info, ca.key.as_ref(), Duration::hours(1)).unwrap();
    let signed = responder
        .respond_parsed(&req, time_util::now(), |_| panic!("no lookup"))
        .unwrap();
    assert_eq!(
        basic(&signed.der).tbs_response_data.responses[0].cert_status,
        CertStatus::unknown()
    );
}
