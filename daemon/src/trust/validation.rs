//! `POST /v1/pki/certificates/validate`: loads the caller's tenant's trust store and revocation
//! data and runs `scaivault_core::validate` on the blocking pool.
//!
//! The trust store is the tenant's trust anchors plus its own CAs (active and retired; a retired
//! CA stops issuing but what it issued stays valid):
//! - internal **roots** are anchors (kind `internal_ca`);
//! - internal **intermediates signed by an internal parent** are not anchors: they are offered to
//!   path building as untrusted intermediates, so a leaf validates up to the internal root and the
//!   intermediate's own validity, constraints and revocation are checked on the way;
//! - internal **intermediates signed outside ScaiVault** (installed with `signed-certificate`) are
//!   anchors themselves: the tenant operates them, while their external root is trusted only if
//!   the tenant adds it as a trust anchor.
//!
//! Another tenant's anchors and CAs are never loaded.

use crate::app::{App, Caller};
use crate::error::ApiError;
use scaivault_core::serial::Serial;
use scaivault_core::time_util;
use scaivault_core::validate::{
    self, Anchor, AnchorKind, Outcome, PeerName, Purpose, Request, Revocation, RevocationSource,
    Status,
};
use scaivault_store::{CaRow, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The most certificates `chain_pem` may hold.
pub const MAX_CHAIN: usize = 32;
/// The most trust anchors and CAs of a tenant taken into the trust store.
const MAX_STORE: usize = 1000;

/// A validation request, as decoded from the API body.
#[derive(Debug, Clone, Default)]
pub struct ValidateInput {
    /// The leaf, PEM.
    pub certificate_pem: String,
    /// Untrusted intermediates, PEM, any order.
    pub chain_pem: Option<String>,
    /// `server_auth`, `client_auth`, `any` (default).
    pub purpose: Option<String>,
    /// DNS name the leaf must carry.
    pub dns_name: Option<String>,
    /// IP address the leaf must carry.
    pub ip: Option<String>,
    /// RFC 3339 validation time (default now).
    pub at_time: Option<String>,
    /// Check revocation.
    pub check_revocation: bool,
    /// CRLs for CAs that are not the tenant's own, PEM.
    pub crls_pem: Option<String>,
}

/// Decoded and checked input, ready for the core.
struct Prepared {
    leaf: Vec<u8>,
    chain: Vec<Vec<u8>>,
    purpose: Purpose,
    names: Vec<PeerName>,
    time: time::OffsetDateTime,
    crls: Vec<Vec<u8>>,
}

fn prepare(input: &ValidateInput) -> Result<Prepared, ApiError> {
    let mut leaf = validate::pem_blocks(&input.certificate_pem, "CERTIFICATE").map_err(|e| {
        ApiError::bad_request("invalid_certificate", format!("certificate_pem: {e}"))
    })?;
    if leaf.len() != 1 {
        return Err(ApiError::bad_request(
            "invalid_certificate",
            format!(
                "certificate_pem must hold exactly one certificate, not {} (put the issuers in chain_pem)",
                leaf.len()
            ),
        ));
    }
    let chain = match &input.chain_pem {
        Some(text) => {
            let chain = validate::pem_blocks(text, "CERTIFICATE").map_err(|e| {
                ApiError::bad_request("invalid_certificate", format!("chain_pem: {e}"))
            })?;
            // Text that holds no certificate is a mistake, not "no chain" (say "" for none), and
            // a block that is no certificate would otherwise be left out of the search unseen.
            if chain.is_empty() && !text.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_certificate",
                    "chain_pem holds no -----BEGIN CERTIFICATE----- block",
                ));
            }
            if chain.len() > MAX_CHAIN {
                return Err(ApiError::bad_request(
                    "chain_too_long",
                    format!(
                        "chain_pem holds {} certificates (at most {MAX_CHAIN})",
                        chain.len()
                    ),
                ));
            }
            for (n, der) in chain.iter().enumerate() {
                validate::check_decodes(der).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_certificate",
                        format!("chain_pem: block {} does not decode: {e}", n + 1),
                    )
                })?;
            }
            chain
        }
        None => Vec::new(),
    };
    let purpose = match input.purpose.as_deref() {
        None => Purpose::Any,
        Some(p) => Purpose::parse(p).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_purpose",
                format!("purpose {p:?} is not server_auth, client_auth or any"),
            )
        })?,
    };
    let mut names = Vec::new();
    if let Some(d) = &input.dns_name {
        names.push(PeerName::dns(d)?);
    }
    if let Some(ip) = &input.ip {
        names.push(PeerName::Ip(ip.parse().map_err(|_| {
            ApiError::bad_request("invalid_ip", format!("ip {ip:?} is not an IP address"))
        })?));
    }
    let time = match &input.at_time {
        Some(t) => time_util::parse_rfc3339(t)?,
        None => time_util::now(),
    };
    let crls = match &input.crls_pem {
        Some(_) if !input.check_revocation => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "crls_pem is used only with \"check_revocation\": true",
            ))
        }
        Some(text) => {
            let crls = validate::pem_blocks(text, "X509 CRL")
                .map_err(|e| ApiError::bad_request("invalid_crl", format!("crls_pem: {e}")))?;
            // Text that holds no CRL at all is a mistake, not "no CRLs" (say "" for none).
            if crls.is_empty() && !text.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_crl",
                    "crls_pem holds no -----BEGIN X509 CRL----- block",
                ));
            }
            crls
        }
        None => Vec::new(),
    };
    if crls.len() > validate::MAX_CRLS {
        return Err(ApiError::bad_request(
            "too_many_crls",
            format!(
                "crls_pem holds {} CRLs (at most {})",
                crls.len(),
                validate::MAX_CRLS
            ),
        ));
    }
    Ok(Prepared {
        leaf: leaf.pop().unwrap_or_default(),
        chain,
        purpose,
        names,
        time,
        crls,
    })
}

/// The tenant's trust store: anchors, internal intermediates, and our CAs by key.
struct TrustStore {
    anchors: Vec<Anchor>,
    intermediates: Vec<Vec<u8>>,
    /// DER SubjectPublicKeyInfo → CA id, for revocation lookups.
    ca_keys: HashMap<Vec<u8>, String>,
}

fn load_store(store: &Store, tenant: &str) -> Result<TrustStore, scaivault_store::Error> {
    let (anchors, cas) = store.read(|tx| {
        let anchors = tx.all_trust_anchors(tenant, MAX_STORE)?;
        let mut cas: Vec<CaRow> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = tx.list_cas(tenant, cursor.as_deref(), 1000)?;
            cas.extend(page.items);
            match page.next_cursor {
                Some(c) if cas.len() < MAX_STORE => cursor = Some(c),
                _ => break,
            }
        }
        Ok((anchors, cas))
    })?;
    let mut out = TrustStore {
        anchors: anchors
            .into_iter()
            .map(|a| Anchor {
                der: a.cert_der,
                kind: AnchorKind::TrustAnchor,
                id: a.id,
            })
            .collect(),
        intermediates: Vec::new(),
        ca_keys: HashMap::new(),
    };
    for ca in cas {
        let Some(der) = ca.cert_der else { continue };
        if ca.status == "pending_signature" {
            continue;
        }
        if let Some(spki) = validate::subject_public_key_info(&der) {
            out.ca_keys.insert(spki, ca.id.clone());
        }
        if ca.ca_type == "intermediate" && ca.parent_ca_id.is_some() {
            out.intermediates.push(der);
        } else {
            out.anchors.push(Anchor {
                der,
                kind: AnchorKind::InternalCa,
                id: ca.id,
            });
        }
    }
    Ok(out)
}

/// Revocation status from the inventory of the tenant's CAs.
struct Inventory {
    store: Arc<Store>,
    ca_keys: HashMap<Vec<u8>, String>,
    /// A store failure during lookups: the whole call then fails with 503.
    failed: Mutex<Option<scaivault_store::Error>>,
}

impl RevocationSource for Inventory {
    fn status(&self, issuer_spki: &[u8], serial: &[u8]) -> Option<Status> {
        let ca_id = self.ca_keys.get(issuer_spki)?;
        let Ok(key) = Serial::from_bytes(serial).map(|s| s.key()) else {
            return Some(Status::Unknown);
        };
        match self.store.read(|tx| tx.certificate_status(ca_id, &key)) {
            Ok(None) => Some(Status::Unknown),
            Ok(Some((status, revoked_at, reason))) if status == "revoked" => {
                Some(Status::Revoked {
                    reason: reason.unwrap_or_else(|| "unspecified".into()),
                    revoked_at,
                })
            }
            Ok(Some(_)) => Some(Status::Good),
            Err(e) => {
                if let Ok(mut slot) = self.failed.lock() {
                    *slot = Some(e);
                }
                Some(Status::Unknown)
            }
        }
    }
}

/// Validates `input` against the caller's tenant's trust store.
///
/// # Errors
/// `400` for input that does not decode (`invalid_certificate`, `invalid_crl`, `invalid_purpose`,
/// `invalid_dns_name`, `invalid_ip`, `invalid_time`, `chain_too_long`, `too_many_crls`); `503`
/// when the store is unavailable. An invalid certificate is not an error: it is an [`Outcome`]
/// with `valid: false`.
pub async fn validate(
    app: &App,
    caller: &Caller,
    input: ValidateInput,
) -> Result<Outcome, ApiError> {
    let p = prepare(&input)?;
    let store = app.store.clone();
    let tenant = caller.tenant_id.clone();
    let check_revocation = input.check_revocation;
    app.blocking(move || {
        let trust = load_store(&store, &tenant)?;
        let mut intermediates = p.chain;
        intermediates.extend(trust.intermediates);
        let inventory = Inventory {
            store,
            ca_keys: trust.ca_keys,
            failed: Mutex::new(None),
        };
        let req = Request {
            leaf: &p.leaf,
            intermediates: &intermediates,
            anchors: &trust.anchors,
            purpose: p.purpose,
            names: &p.names,
            key_usage: &[],
            time: p.time,
            max_intermediates: None,
            revocation: check_revocation.then_some(Revocation {
                crls: &p.crls,
                source: Some(&inventory),
            }),
        };
        let outcome = validate::validate(&req);
        if let Some(e) = inventory.failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(ApiError::from(e));
        }
        Ok(outcome)
    })
    .await
}
