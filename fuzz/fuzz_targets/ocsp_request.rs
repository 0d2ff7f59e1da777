//! OCSP request parsing and answering: `POST /v1/pki/ocsp/<ca>` and the GET form hand the DER to
//! `ocsp::ParsedRequest::parse`, then `Responder::respond_parsed` answers for the CA.
//!
//! OCSP answers are always HTTP 200 with an `OCSPResponseStatus` (RFC 6960 §4.2.1), so the "4xx"
//! of this endpoint is a client-side status: what a client sends may be refused as
//! `malformedRequest` or `unauthorized` only; `internalError` or `tryLater` (a failure on our side)
//! is a finding. A successful response must decode, answer every `CertID` and echo the nonce.
#![no_main]

use der::Decode;
use libfuzzer_sys::fuzz_target;
use scaivault_core::ocsp::{self, CertState, OcspError, ParsedRequest, Refusal, Responder};
use scaivault_fuzz::{fixture, AT};
use x509_ocsp::{BasicOcspResponse, OcspResponse, OcspResponseStatus};

fuzz_target!(|data: &[u8]| {
    let req = match ParsedRequest::parse(data) {
        Ok(r) => r,
        Err(r) => {
            assert_eq!(
                r,
                Refusal::MalformedRequest,
                "parse refused with {}",
                r.name()
            );
            return;
        }
    };
    assert!(!req.is_empty() && req.len() <= ocsp::MAX_CERT_IDS);
    if let Some((key, id_der)) = req.cache_key() {
        assert!(!key.is_empty() && !id_der.is_empty());
    }
    let f = fixture();
    let responder =
        Responder::new(&f.issuer, &f.key, time::Duration::hours(12)).expect("responder");
    let answer = responder.respond_parsed(&req, AT, |serial| {
        Ok(match serial.as_bytes().last().map(|b| b % 3) {
            Some(0) => CertState::Good,
            Some(1) => CertState::Revoked {
                at: AT - time::Duration::days(1),
                reason: Some("key_compromise".into()),
            },
            _ => CertState::Unknown,
        })
    });
    match answer {
        Err(OcspError::Refused(r)) => assert!(
            matches!(r, Refusal::Unauthorized | Refusal::MalformedRequest),
            "refused with {}",
            r.name()
        ),
        Err(e @ OcspError::Failed(_)) => {
            panic!("{} for a client's request: {e}", e.refusal().name())
        }
        Ok(signed) => {
            let resp = OcspResponse::from_der(&signed.der).expect("our response decodes");
            assert_eq!(resp.response_status, OcspResponseStatus::Successful);
            let bytes = resp.response_bytes.expect("responseBytes");
            let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic");
            assert_eq!(basic.tbs_response_data.responses.len(), req.len());
            assert_eq!(
                basic.tbs_response_data.response_extensions.is_some(),
                req.has_nonce()
            );
        }
    }
});
