//! OCSP responses (RFC 6960) in the RFC 5019 lightweight profile, signed by the CA key through
//! the token. Pure: no HTTP, no SQL; the caller looks serials up through a closure.
//!
//! - Requests: a DER `OCSPRequest` (RFC 6960 §4.1.1). Each `CertID` must use SHA-1 or SHA-256
//!   and carry this CA's `issuerNameHash` (over the DER of the CA's subject) and `issuerKeyHash`
//!   (over the contents of the CA's `subjectPublicKey` BIT STRING), §4.1.1; otherwise the answer
//!   is `unauthorized` (RFC 5019 §2.2.3: we are not authoritative for it). A request signature is
//!   neither required nor checked (§4.1.2 makes it optional).
//! - Nonce (RFC 6960 §4.4.1, RFC 8954 §2.1): echoed in the response extensions. A nonce of zero
//!   or more than 32 octets is refused with `malformedRequest`.
//! - Responses: a `BasicOCSPResponse` (§4.2.1) with `responderID` byKey (SHA-1 of the signer's
//!   public key bits), `producedAt`, one `SingleResponse` per `CertID`: `good`, `revoked`
//!   (revocationTime, and revocationReason unless `unspecified`, RFC 5280 §5.3.1) or `unknown`
//!   for serials the CA never signed (§2.2), `thisUpdate` = now and `nextUpdate` = now + the
//!   CA's OCSP validity (RFC 5019 §2.2.4). The signature is checked in software before the
//!   response leaves (as [`crate::sign`] does for certificates). No `certs` are included: the
//!   CA signs its own responses, so the client already holds the signer (RFC 6960 §4.2.2.2).
//! - Error responses (§4.2.1): `malformedRequest`, `internalError`, `tryLater`, `unauthorized`,
//!   each without `responseBytes`.
//!
//! Non-goals here: caching, HTTP and the delegated-signer mode (`id-kp-OCSPSigning`).

use crate::profile::IssuerInfo;
use crate::serial::Serial;
use crate::{crl, verify, Error};
use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256};
use const_oid::db::rfc6960::{ID_PKIX_OCSP_NONCE, ID_PKIX_OCSP_RESPONSE};
use der::asn1::{BitString, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use scaivault_hsm::Signer;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use time::{Duration, OffsetDateTime};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    ResponderId, ResponseData, RevokedInfo, SingleResponse, Version,
};

/// Longest nonce accepted, in octets (RFC 8954 §2.1).
pub const MAX_NONCE_LEN: usize = 32;

/// Most `CertID`s answered in one request; more are refused as `malformedRequest`. RFC 5019 §2.1.1
/// clients send exactly one.
pub const MAX_CERT_IDS: usize = 32;

/// Why there is no successful response: an `OCSPResponseStatus` other than `successful`
/// (RFC 6960 §4.2.1), sent without `responseBytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `malformedRequest` (1): the request does not parse or breaks a rule (nonce length, …).
    MalformedRequest,
    /// `internalError` (2): something broke on our side.
    InternalError,
    /// `tryLater` (3): a dependency (token, database) is unavailable for now.
    TryLater,
    /// `unauthorized` (6): a `CertID` names an issuer this responder does not serve.
    Unauthorized,
}

impl Refusal {
    /// The `OCSPResponseStatus` value.
    pub fn code(self) -> u8 {
        match self {
            Refusal::MalformedRequest => 1,
            Refusal::InternalError => 2,
            Refusal::TryLater => 3,
            Refusal::Unauthorized => 6,
        }
    }

    /// The RFC 6960 name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::MalformedRequest => "malformedRequest",
            Refusal::InternalError => "internalError",
            Refusal::TryLater => "tryLater",
            Refusal::Unauthorized => "unauthorized",
        }
    }

    /// The whole `OCSPResponse`: `SEQUENCE { ENUMERATED code }` (RFC 6960 §4.2.1).
    pub fn to_der(self) -> Vec<u8> {
        vec![0x30, 0x03, 0x0a, 0x01, self.code()]
    }
}

/// Why a response could not be made: refused outright, or a failure (token, encoder, signature
/// check) that the caller should log before answering with [`OcspError::refusal`].
#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    /// Answered with this status.
    #[error("OCSP request refused: {}", .0.name())]
    Refused(Refusal),
    /// A failure while building or signing.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl OcspError {
    /// The status to answer with: `tryLater` while the token is unavailable, `internalError` for
    /// other failures.
    pub fn refusal(&self) -> Refusal {
        match self {
            OcspError::Refused(r) => *r,
            OcspError::Failed(e) if e.kind() == crate::ErrorKind::Unavailable => Refusal::TryLater,
            OcspError::Failed(_) => Refusal::InternalError,
        }
    }
}

impl From<Refusal> for OcspError {
    fn from(r: Refusal) -> Self {
        OcspError::Refused(r)
    }
}

impl From<der::Error> for OcspError {
    fn from(e: der::Error) -> Self {
        OcspError::Failed(Error::from(e))
    }
}

/// What the inventory says about one serial of the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    /// Issued and not revoked.
    Good,
    /// Revoked at `at`; `reason` is the API reason name (omitted from the response when
    /// `unspecified` or unknown, RFC 5280 §5.3.1).
    Revoked {
        /// Revocation time.
        at: OffsetDateTime,
        /// API reason name (`key_compromise`, …).
        reason: Option<String>,
    },
    /// Never issued by this CA (RFC 6960 §2.2 `unknown`).
    Unknown,
}

/// A decoded `OCSPRequest`: the `CertID`s asked about and the nonce extension, if any.
#[derive(Debug, Clone)]
pub struct ParsedRequest {
    cert_ids: Vec<CertId>,
    nonce: Option<Extension>,
}

impl ParsedRequest {
    /// Decodes a DER `OCSPRequest` (RFC 6960 §4.1.1) and checks the nonce (RFC 8954 §2.1).
    ///
    /// # Errors
    /// [`Refusal::MalformedRequest`] for anything that does not decode, an empty or over-long
    /// request list, a critical extension it does not understand, duplicate nonces, or a nonce
    /// of 0 or more than [`MAX_NONCE_LEN`] octets.
    pub fn parse(der: &[u8]) -> Result<Self, Refusal> {
        let req = OcspRequest::from_der(der).map_err(|_| Refusal::MalformedRequest)?;
        let tbs = req.tbs_request;
        if tbs.request_list.is_empty() || tbs.request_list.len() > MAX_CERT_IDS {
            return Err(Refusal::MalformedRequest);
        }
        // RFC 6960 §4.4: an extension is ignored unless it is critical and not understood. The
        // responder understands two request extensions: the nonce, and the acceptable response
        // types (it answers with the basic type, which is the one every client accepts); no
        // per-certificate extension.
        let request_exts = tbs.request_extensions.unwrap_or_default();
        let understood = |e: &Extension| {
            !e.critical || e.extn_id == ID_PKIX_OCSP_NONCE || e.extn_id == ID_PKIX_OCSP_RESPONSE
        };
        let single_critical = tbs
            .request_list
            .iter()
            .flat_map(|r| r.single_request_extensions.iter().flatten())
            .any(|e| e.critical);
        if single_critical || !request_exts.iter().all(understood) {
            return Err(Refusal::MalformedRequest);
        }
        let mut nonces = request_exts
            .into_iter()
            .filter(|e| e.extn_id == ID_PKIX_OCSP_NONCE);
        let nonce = nonces.next();
        if nonces.next().is_some() {
            return Err(Refusal::MalformedRequest);
        }
        if let Some(n) = &nonce {
            let len = nonce_len(n.extn_value.as_bytes());
            if len == 0 || len > MAX_NONCE_LEN {
                return Err(Refusal::MalformedRequest);
            }
        }
        Ok(ParsedRequest {
            cert_ids: tbs.request_list.into_iter().map(|r| r.req_cert).collect(),
            nonce,
        })
    }

    /// How many `CertID`s the request asks about.
    pub fn len(&self) -> usize {
        self.cert_ids.len()
    }

    /// Whether the request asks about nothing (never true for a parsed request).
    pub fn is_empty(&self) -> bool {
        self.cert_ids.is_empty()
    }

    /// Whether the request carries a nonce (its response must then be signed afresh).
    pub fn has_nonce(&self) -> bool {
        self.nonce.is_some()
    }

    /// For a cacheable request (exactly one `CertID`, no nonce): the serial's canonical key and
    /// the `CertID`'s DER (the response echoes the `CertID`, so it is part of the cache key).
    pub fn cache_key(&self) -> Option<(String, Vec<u8>)> {
        if self.nonce.is_some() {
            return None;
        }
        let [id] = self.cert_ids.as_slice() else {
            return None;
        };
        let serial = serial_of(id)?;
        Some((serial.key(), id.to_der().ok()?))
    }
}

/// The nonce's length: the contents of the inner OCTET STRING (RFC 8954 §2.1), or of the raw
/// extension value when a client put the bytes there directly.
fn nonce_len(extn_value: &[u8]) -> usize {
    OctetString::from_der(extn_value).map_or(extn_value.len(), |o| o.as_bytes().len())
}

/// The serial a `CertID` asks about; `None` for a zero or negative serial (never ours).
fn serial_of(id: &CertId) -> Option<Serial> {
    let bytes = id.serial_number.as_bytes();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    Serial::from_bytes(bytes).ok()
}

/// A request (no nonce) for one `CertID` given as DER: what the responder's pre-signing uses to
/// produce a response before anyone asks, or again before the cached one goes stale.
///
/// # Errors
/// `invalid_encoding` when `cert_id_der` is not a `CertID`.
pub fn request_for_cert_id(cert_id_der: &[u8]) -> Result<Vec<u8>, Error> {
    let req_cert = CertId::from_der(cert_id_der).map_err(|e| Error::decode("CertID", e))?;
    OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![x509_ocsp::Request {
                req_cert,
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(Error::from)
}

/// The SHA-1 `CertID` for serial `serial` of CA `issuer` (the form `openssl ocsp` and most clients
/// send by default), DER.
///
/// # Errors
/// Encoding errors.
pub fn sha1_cert_id(issuer: &IssuerInfo, serial: &Serial) -> Result<Vec<u8>, Error> {
    let spki = SubjectPublicKeyInfoOwned::from_der(&issuer.spki_der)
        .map_err(|e| Error::decode("public key", e))?;
    let name_der = issuer_name_der(&issuer.name)?;
    CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: ID_SHA_1,
            parameters: Some(der::Any::null()),
        },
        issuer_name_hash: OctetString::new(Sha1::digest(&name_der).to_vec())?,
        issuer_key_hash: OctetString::new(
            Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec(),
        )?,
        serial_number: serial.to_x509()?,
    }
    .to_der()
    .map_err(Error::from)
}

/// `id-pkix-ocsp-nocheck` (RFC 6960 §4.2.2.2.1).
pub const ID_PKIX_OCSP_NOCHECK: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");

/// The TBSCertificate of a delegated OCSP signing certificate for `issuer`: BasicConstraints
/// CA:FALSE, KeyUsage digitalSignature (critical), EKU `id-kp-OCSPSigning`, `ocsp-nocheck`
/// (relying parties do not check the responder's own status), SKI and AKI.
///
/// # Errors
/// Encoding errors.
pub fn delegate_tbs(
    subject: x509_cert::name::Name,
    spki_der: &[u8],
    serial: &crate::serial::Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    issuer: &IssuerInfo,
) -> Result<x509_cert::certificate::TbsCertificate, Error> {
    use crate::profile::{extension, key_identifier};
    use x509_cert::ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
        SubjectKeyIdentifier,
    };
    let nocheck = x509_cert::ext::Extension {
        extn_id: ID_PKIX_OCSP_NOCHECK,
        critical: false,
        extn_value: OctetString::new(vec![0x05, 0x00])?,
    };
    let exts = vec![
        extension(
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
            true,
        )?,
        extension(&KeyUsage(KeyUsages::DigitalSignature.into()), true)?,
        extension(
            &ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_OCSP_SIGNING]),
            false,
        )?,
        nocheck,
        extension(
            &SubjectKeyIdentifier(OctetString::new(key_identifier(spki_der)?)?),
            false,
        )?,
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(issuer.key_id.clone())?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )?,
    ];
    Ok(x509_cert::certificate::TbsCertificate {
        version: x509_cert::certificate::Version::V3,
        serial_number: serial.to_x509()?,
        signature: AlgorithmIdentifierOwned::from_der(&issuer.algorithm_der)
            .map_err(|e| Error::decode("algorithm", e))?,
        issuer: issuer.name.clone(),
        validity: x509_cert::time::Validity {
            not_before: crate::time_util::to_x509(not_before)?,
            not_after: crate::time_util::to_x509(not_after)?,
        },
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der)
            .map_err(|e| Error::decode("public key", e))?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(exts),
    })
}

/// The issuer hashes a `CertID` may carry, for one hash algorithm (RFC 6960 §4.1.1).
#[derive(Debug, Clone)]
struct IssuerHashes {
    name: Vec<u8>,
    key: Vec<u8>,
}

/// A CA ready to answer: its issuer data, its key and how long responses stay valid.
#[derive(Debug)]
pub struct Responder<'a> {
    signer: &'a dyn Signer,
    spki_der: &'a [u8],
    validity: Duration,
    /// SHA-1 of the signing key's public key bits (responderID byKey, RFC 6960 §4.2.2.3).
    responder_key: Vec<u8>,
    /// The delegated responder's certificate, sent with each response (RFC 6960 §4.2.2.2).
    certs: Option<Vec<x509_cert::Certificate>>,
    sha1: IssuerHashes,
    sha256: IssuerHashes,
    algorithm: AlgorithmIdentifierOwned,
}

impl<'a> Responder<'a> {
    /// A responder for the CA `issuer` whose key is `signer`; responses are valid for `validity`
    /// (`nextUpdate - thisUpdate`, RFC 5019 §2.2.4).
    ///
    /// # Errors
    /// `invalid_encoding` when the CA's public key or the signer's algorithm does not decode.
    pub fn new(
        issuer: &'a IssuerInfo,
        signer: &'a dyn Signer,
        validity: Duration,
    ) -> Result<Self, Error> {
        let spki = SubjectPublicKeyInfoOwned::from_der(&issuer.spki_der)
            .map_err(|e| Error::decode("public key", e))?;
        let key_bits = spki.subject_public_key.raw_bytes();
        let name_der = issuer_name_der(&issuer.name)?;
        let algorithm = AlgorithmIdentifierOwned::from_der(&signer.algorithm_der())
            .map_err(|e| Error::decode("algorithm", e))?;
        Ok(Responder {
            signer,
            spki_der: &issuer.spki_der,
            validity,
            responder_key: Sha1::digest(key_bits).to_vec(),
            certs: None,
            sha1: IssuerHashes {
                name: Sha1::digest(&name_der).to_vec(),
                key: Sha1::digest(key_bits).to_vec(),
            },
            sha256: IssuerHashes {
                name: Sha256::digest(&name_der).to_vec(),
                key: Sha256::digest(key_bits).to_vec(),
            },
            algorithm,
        })
    }

    /// A responder for the CA `issuer` whose responses are signed by a delegated OCSP signer
    /// (RFC 6960 §4.2.2.2): `signer` is the delegate's key, `delegate` its certificate (issued by
    /// the CA, with `id-kp-OCSPSigning`), sent along with every response.
    ///
    /// # Errors
    /// `invalid_encoding` when a key or algorithm does not decode.
    pub fn new_delegated(
        issuer: &'a IssuerInfo,
        signer: &'a dyn Signer,
        delegate: &'a x509_cert::Certificate,
        delegate_spki_der: &'a [u8],
        validity: Duration,
    ) -> Result<Self, Error> {
        let mut r = Responder::new(issuer, signer, validity)?;
        let spki = SubjectPublicKeyInfoOwned::from_der(delegate_spki_der)
            .map_err(|e| Error::decode("public key", e))?;
        r.responder_key = Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec();
        r.spki_der = delegate_spki_der;
        r.certs = Some(vec![delegate.clone()]);
        Ok(r)
    }

    /// Parses `request_der` and answers it (see [`Responder::respond_parsed`]).
    ///
    /// # Errors
    /// As [`ParsedRequest::parse`] and [`Responder::respond_parsed`].
    pub fn respond(
        &self,
        request_der: &[u8],
        now: OffsetDateTime,
        lookup: impl FnMut(&Serial) -> Result<CertState, Refusal>,
    ) -> Result<Signed, OcspError> {
        let req = ParsedRequest::parse(request_der)?;
        self.respond_parsed(&req, now, lookup)
    }

    /// Checks every `CertID` against this CA, asks `lookup` for each serial's state, and builds
    /// and signs the response. Serials that cannot be ours (zero, negative) are `unknown`
    /// without a lookup.
    ///
    /// # Errors
    /// [`Refusal::Unauthorized`] when a `CertID` uses another hash algorithm than SHA-1/SHA-256
    /// or names another issuer; what `lookup` refuses with; token and encoder failures, and a
    /// token signature that does not verify, as [`OcspError::Failed`].
    pub fn respond_parsed(
        &self,
        req: &ParsedRequest,
        now: OffsetDateTime,
        mut lookup: impl FnMut(&Serial) -> Result<CertState, Refusal>,
    ) -> Result<Signed, OcspError> {
        for id in &req.cert_ids {
            self.check_issuer(id)?;
        }
        let mut states = Vec::with_capacity(req.cert_ids.len());
        for id in &req.cert_ids {
            states.push(match serial_of(id) {
                Some(serial) => lookup(&serial)?,
                None => CertState::Unknown,
            });
        }
        self.sign(req, &states, now)
    }

    /// RFC 6960 §4.1.1: the hash algorithm is one we compute and both hashes are this CA's.
    fn check_issuer(&self, id: &CertId) -> Result<(), Refusal> {
        let hashes = match id.hash_algorithm.oid {
            o if o == ID_SHA_1 => &self.sha1,
            o if o == ID_SHA_256 => &self.sha256,
            _ => return Err(Refusal::Unauthorized),
        };
        if id.issuer_name_hash.as_bytes() == hashes.name.as_slice()
            && id.issuer_key_hash.as_bytes() == hashes.key.as_slice()
        {
            Ok(())
        } else {
            Err(Refusal::Unauthorized)
        }
    }

    /// Builds the `ResponseData`, has the token sign it, verifies the signature and wraps it
    /// into a successful `OCSPResponse` (RFC 6960 §4.2.1).
    fn sign(
        &self,
        req: &ParsedRequest,
        states: &[CertState],
        now: OffsetDateTime,
    ) -> Result<Signed, OcspError> {
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let next_update = now + self.validity;
        let this = ocsp_time(now)?;
        let next = ocsp_time(next_update)?;
        let mut responses = Vec::with_capacity(states.len());
        for (id, state) in req.cert_ids.iter().zip(states) {
            responses.push(SingleResponse {
                cert_id: id.clone(),
                cert_status: cert_status(state)?,
                this_update: this,
                next_update: Some(next),
                single_extensions: None,
            });
        }
        let tbs = ResponseData {
            version: Version::V1,
            // RFC 6960 §4.2.2.3: KeyHash = SHA-1 of the responder's public key bits.
            responder_id: ResponderId::ByKey(OctetString::new(self.responder_key.clone())?),
            produced_at: this,
            responses,
            // RFC 6960 §4.4.1: the nonce comes back unchanged.
            response_extensions: req.nonce.clone().map(|n| {
                vec![Extension {
                    critical: false,
                    ..n
                }]
            }),
        };
        let tbs_der = tbs.to_der()?;
        let sig = self.signer.sign(&tbs_der).map_err(Error::from)?;
        verify::verify_signature(self.spki_der, &self.algorithm, &tbs_der, &sig)
            .map_err(|e| Error::TokenSignatureInvalid(e.to_string()))?;
        let basic = BasicOcspResponse {
            tbs_response_data: tbs,
            signature_algorithm: self.algorithm.clone(),
            signature: BitString::from_bytes(&sig)?,
            certs: self.certs.clone(),
        };
        Ok(Signed {
            der: OcspResponse::successful(basic)?.to_der()?,
            this_update: now,
            next_update,
        })
    }
}

/// A signed, successful `OCSPResponse`.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The DER `OCSPResponse`.
    pub der: Vec<u8>,
    /// `producedAt` and `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// `nextUpdate`.
    pub next_update: OffsetDateTime,
}

fn issuer_name_der(name: &Name) -> Result<Vec<u8>, Error> {
    Ok(name.to_der()?)
}

fn ocsp_time(t: OffsetDateTime) -> Result<OcspGeneralizedTime, der::Error> {
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| der::ErrorKind::DateTime)?;
    Ok(OcspGeneralizedTime(GeneralizedTime::from_unix_duration(
        std::time::Duration::from_secs(secs),
    )?))
}

/// RFC 6960 §4.2.1 `CertStatus`; the reason is left out for `unspecified` (RFC 5280 §5.3.1).
fn cert_status(state: &CertState) -> Result<CertStatus, der::Error> {
    Ok(match state {
        CertState::Good => CertStatus::good(),
        CertState::Unknown => CertStatus::unknown(),
        CertState::Revoked { at, reason } => CertStatus::revoked(RevokedInfo {
            revocation_time: ocsp_time(*at)?,
            revocation_reason: reason
                .as_deref()
                .and_then(crl::reason_code)
                .filter(|r| *r != x509_cert::ext::pkix::CrlReason::Unspecified),
        }),
    })
}

#[cfg(test)]
mod tests;
