//! Certificate-authority operations: create (root, intermediate under an internal parent, or
//! pending for an external parent), install an externally signed certificate, import, retire,
//! chains. Policy and profile live in `scaivault-core`; this module orders the steps so that
//! nothing is signed unless its audit record could be written, and nothing half-made stays
//! behind on the token or in the database.

use crate::app::{App, Caller};
use crate::error::ApiError;
use der::{Decode, Encode};
use scaivault_core::name::DnFields;
use scaivault_core::profile::{self, CaTemplate, Constraints, IpRange, IssuerInfo, LintExpect};
use scaivault_core::serial::Serial;
use scaivault_core::validate::MAX_PATH_INTERMEDIATES;
use scaivault_core::{pem, sign, time_util, verify};
use scaivault_hsm::{KeySpec, Signer, Token};
use scaivault_store::{CaRow, CertRow};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;

/// Longest CA validity accepted (100 years).
const MAX_VALIDITY_DAYS: i64 = 36_500;

/// What a new CA should be.
#[derive(Debug, Clone)]
pub struct NewCa {
    /// Unique per tenant.
    pub name: String,
    /// Subject fields.
    pub subject: DnFields,
    /// `root` or `intermediate`.
    pub ca_type: String,
    /// Key type and size.
    pub key: KeySpec,
    /// Validity in days.
    pub validity_days: i64,
    /// Internal parent of an intermediate.
    pub parent_ca_id: Option<String>,
    /// Stored settings.
    pub settings: CaSettings,
}

/// Settings kept with a CA.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CaSettings {
    /// pathLenConstraint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_path_length: Option<u8>,
    /// Name constraints: permitted DNS subtrees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted_dns_domains: Vec<String>,
    /// Name constraints: excluded DNS subtrees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_dns_domains: Vec<String>,
    /// Name constraints: permitted IP ranges (CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted_ip_ranges: Vec<String>,
    /// CRL regeneration interval (Go duration).
    pub crl_interval: String,
    /// OCSP response validity (Go duration).
    pub ocsp_validity: String,
    /// Who signs OCSP responses: `ca` (the CA key) or `delegated` (an OCSP signing certificate
    /// issued by the CA, key on the token, rotated automatically).
    #[serde(default = "default_ocsp_signer")]
    pub ocsp_signer: String,
    /// Lifetime of a delegated OCSP signing certificate (Go duration); it is replaced after two
    /// thirds of it.
    #[serde(default = "default_ocsp_signer_lifetime")]
    pub ocsp_signer_lifetime: String,
}

impl CaSettings {
    fn constraints(&self) -> Result<Constraints, ApiError> {
        Ok(Constraints {
            permitted_dns_domains: self.permitted_dns_domains.clone(),
            excluded_dns_domains: self.excluded_dns_domains.clone(),
            permitted_ip_ranges: self
                .permitted_ip_ranges
                .iter()
                .map(|r| IpRange::parse_exact(r))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn default_ocsp_signer() -> String {
    "ca".into()
}

/// 30 days, as step-ca and EJBCA default their OCSP signer certificates to weeks, not years.
pub fn default_ocsp_signer_lifetime() -> String {
    "720h".into()
}

fn parse_settings(row: &CaRow) -> CaSettings {
    serde_json::from_str(&row.settings).unwrap_or_default()
}

/// The issuer data of an active CA, with its signing key.
fn issuer_of(token: &dyn Token, row: &CaRow) -> Result<(IssuerInfo, Arc<dyn Signer>), ApiError> {
    let der = row.cert_der.as_deref().ok_or_else(|| {
        ApiError::conflict(
            "parent_ca_not_active",
            format!("CA {} has no certificate yet", row.id),
        )
    })?;
    let cert = pem::from_der(der)?;
    let key = token.find(&row.key_label)?;
    let info = sign::issuer_info(&cert, key.algorithm_der())?;
    Ok((info, key))
}

/// A CA's name: not blank, at most 128 bytes of UTF-8 (a 50-character CJK name is 150), no
/// control or invisible characters.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty()
        || name.len() > 128
        || name.chars().any(scaivault_core::name::is_hidden)
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "name must be 1 to 128 bytes of UTF-8 (this one is {}), not blank, without \
                 control or invisible characters",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn check_new(req: &NewCa) -> Result<(), ApiError> {
    check_name(&req.name)?;
    if !(1..=MAX_VALIDITY_DAYS).contains(&req.validity_days) {
        return Err(ApiError::bad_request(
            "invalid_validity",
            format!(
                "validity_days must be between 1 and {MAX_VALIDITY_DAYS}, got {}",
                req.validity_days
            ),
        ));
    }
    match (req.ca_type.as_str(), &req.parent_ca_id) {
        ("root", Some(_)) => Err(ApiError::bad_request(
            "invalid_parent",
            "a root CA takes no parent_ca_id",
        )),
        ("root" | "intermediate", _) => Ok(()),
        (other, _) => Err(ApiError::bad_request(
            "invalid_ca_type",
            format!("ca_type {other:?} is not root or intermediate"),
        )),
    }
}

/// Creates a CA. The key pair is generated on the token; a `started` audit record is written
/// before the token is touched and the success record with the CA rows in one transaction.
///
/// # Errors
/// `400` for bad input or an unusable parent, `409` for a taken name, `503` when the token,
/// database or audit log is unavailable.
pub async fn create(app: &App, caller: &Caller, mut req: NewCa) -> Result<CaRow, ApiError> {
    check_new(&req)?;
    let constraints = req.settings.constraints()?;
    profile::check_constraints(&constraints)?;
    let subject = req.subject.to_name()?;
    let tenant = caller.tenant_id.clone();
    let (name, parent_id) = (req.name.clone(), req.parent_ca_id.clone());
    let parent = app
        .db(move |s| {
            s.read(|tx| {
                if tx.ca_name_taken(&tenant, &name)? {
                    return Ok(Err(ApiError::conflict(
                        "ca_name_taken",
                        format!("a CA named {name:?} exists"),
                    )));
                }
                match parent_id {
                    None => Ok(Ok(None)),
                    Some(pid) => match tx.get_ca(&tenant, &pid) {
                        Ok(p) => match depth_below(tx, &tenant, &p)? {
                            Err(e) => Ok(Err(e)),
                            Ok(()) => Ok(Ok(Some(p))),
                        },
                        Err(scaivault_store::Error::NotFound) => Ok(Err(ApiError::bad_request(
                            "parent_ca_not_found",
                            format!("parent CA {pid:?} not found"),
                        ))),
                        Err(e) => Err(e),
                    },
                }
            })
            .map_err(ApiError::from)
        })
        .await??;
    if let Some(p) = &parent {
        if p.status != "active" {
            return Err(ApiError::conflict(
                "parent_ca_not_active",
                format!("parent CA {} is {}", p.id, p.status),
            ));
        }
        if p.is_offline() {
            return Err(ApiError::bad_request(
                "parent_ca_offline",
                format!(
                    "parent CA {} is offline: create the intermediate without parent_ca_id and sign its CSR in a key ceremony",
                    p.id
                ),
            ));
        }
        req.settings.max_path_length = effective_path_length(p, req.settings.max_path_length)?;
    }
    let now = time_util::now();
    let not_after = now + Duration::days(req.validity_days);
    if let Some(p) = &parent {
        let parent_end = p
            .not_after
            .as_deref()
            .map(time_util::parse_rfc3339)
            .transpose()?;
        if parent_end.is_some_and(|end| not_after > end) {
            return Err(ApiError::bad_request(
                "validity_exceeds_parent",
                format!(
                    "the CA would end {} but its parent {} ends {}",
                    time_util::rfc3339(not_after),
                    p.id,
                    p.not_after.as_deref().unwrap_or("?")
                ),
            ));
        }
    }
    if let Some(der) = parent.as_ref().and_then(|p| p.cert_der.as_ref()) {
        let parent_subject = pem::from_der(der)?.tbs_certificate.subject;
        if scaivault_core::name::same_name(&parent_subject, &subject) {
            return Err(ApiError::bad_request(
                "invalid_subject",
                format!(
                    "the intermediate's subject is its parent's (\"{parent_subject}\"): such a \
                     self-issued CA certificate would not count against the parent's path length \
                     limit (RFC 5280 §6.1.4); give it another common name"
                ),
            ));
        }
    }
    let id = scaivault_core::ids::new_id("ca");
    app.audit(caller.record("ca.create", Some(&id), "started"))
        .await?;
    // A failure from here on is recorded under the id its `started` record carries.
    let res = create_started(app, caller, req, parent, subject, constraints, now, &id).await;
    app.finish(caller, "ca.create", Some(&id), res)
        .await
        .map_err(|mut e| {
            e.audited = true;
            e
        })
}

/// [`create`] after its `started` record: the key on the token, the certificate or CSR, the row.
#[allow(clippy::too_many_arguments)]
async fn create_started(
    app: &App,
    caller: &Caller,
    req: NewCa,
    parent: Option<CaRow>,
    subject: x509_cert::name::Name,
    constraints: Constraints,
    now: OffsetDateTime,
    id: &str,
) -> Result<CaRow, ApiError> {
    let id = id.to_owned();
    let not_after = now + Duration::days(req.validity_days);
    let pending = req.ca_type == "intermediate" && parent.is_none();
    let template = CaTemplate {
        subject: subject.clone(),
        spki_der: Vec::new(),
        serial: Serial::fresh(),
        not_before: now,
        not_after,
        max_path_length: req.settings.max_path_length,
        constraints,
        // The parent's CRL, OCSP responder and certificate, as in the leaves it signs: a relying
        // party finds this intermediate's revocation where the certificate says.
        issuer_urls: parent.as_ref().map(|p| {
            scaivault_core::leaf::LeafUrls::for_ca(&app.config.server.public_base_url, &p.id)
        }),
    };
    let token = app.token.clone();
    let (label, spec, parent_row) = (id.clone(), req.key, parent.clone());
    let (undo_token, undo_label) = (app.token.clone(), id.clone());
    let made = app
        .token_work(app.config.hsm.keygen_limit(), "generate", move || {
            let key = token.generate(spec, &label)?;
            let result = build_ca_material(token.as_ref(), key.as_ref(), template, parent_row.as_ref(), pending);
            if result.is_err() {
                if let Err(e) = token.destroy(&label) {
                    tracing::error!(error = %e, key = %label, "could not remove the key of a failed CA");
                }
            }
            result
        }, move |_| {
            // The request gave up (keygen_timeout) before the key came: no CA will use it.
            match undo_token.destroy(&undo_label) {
                Ok(()) => tracing::warn!(key = %undo_label, "destroyed the key of a CA creation that timed out"),
                Err(e) => tracing::error!(error = %e, key = %undo_label, "could not remove the key of a CA creation that timed out"),
            }
        })
        .await?;

    let row = CaRow {
        id: id.clone(),
        tenant_id: caller.tenant_id.clone(),
        name: req.name.clone(),
        common_name: req.subject.common_name.clone(),
        ca_type: req.ca_type.clone(),
        parent_ca_id: req.parent_ca_id.clone(),
        status: if pending {
            "pending_signature"
        } else {
            "active"
        }
        .into(),
        key_type: req.key.type_name().into(),
        key_size: req.key.bits(),
        key_label: id.clone(),
        cert_der: made.cert_der.clone(),
        chain_pem: None,
        csr_pem: made.csr_pem.clone(),
        serial: made.serial.as_ref().map(Serial::key),
        not_before: made.cert_der.as_ref().map(|_| time_util::rfc3339(now)),
        not_after: made
            .cert_der
            .as_ref()
            .map(|_| time_util::rfc3339(not_after)),
        settings: serde_json::to_string(&req.settings).map_err(ApiError::internal)?,
        created_at: time_util::rfc3339(now),
    };
    let rec = caller.record("ca.create", Some(&id), "success");
    let (r2, token) = (row.clone(), app.token.clone());
    app.db(move |s| {
        let res = s.write(|tx| {
            tx.insert_ca(&r2)?;
            if let (Some(der), Some(serial)) = (&r2.cert_der, &r2.serial) {
                tx.insert_certificate(&CertRow {
                    issuer_ca_id: r2.parent_ca_id.clone().unwrap_or_else(|| r2.id.clone()),
                    serial: serial.clone(),
                    tenant_id: r2.tenant_id.clone(),
                    kind: "ca".into(),
                    subject_ca_id: Some(r2.id.clone()),
                    role: None,
                    common_name: Some(r2.common_name.clone()),
                    sans: None,
                    cert_der: Some(der.clone()),
                    status: "valid".into(),
                    not_before: r2.not_before.clone(),
                    not_after: r2.not_after.clone(),
                    revoked_at: None,
                    revocation_reason: None,
                    created_at: r2.created_at.clone(),
                })?;
            }
            tx.append_audit(&rec)
        });
        if let Err(e) = &res {
            if let Err(d) = token.destroy(&r2.key_label) {
                tracing::error!(error = %d, key = %r2.key_label, "could not remove the key of a CA that was not stored");
            }
            tracing::error!(error = %e, ca = %r2.id, "storing the new CA failed");
        }
        res.map_err(|e| match e {
            scaivault_store::Error::Conflict(what) => ApiError::conflict("ca_name_taken", what),
            other => ApiError::from(other),
        })
    })
    .await?;
    Ok(row)
}

/// Whether a CA may be made below `parent` (created or imported): `400 hierarchy_too_deep` when
/// its leaves would have more intermediates on their path than validation follows.
fn depth_below(
    tx: &scaivault_store::Tx<'_>,
    tenant: &str,
    parent: &CaRow,
) -> scaivault_store::Result<Result<(), ApiError>> {
    let depth = intermediates_above(tx, tenant, parent)?;
    if depth < MAX_PATH_INTERMEDIATES {
        return Ok(Ok(()));
    }
    Ok(Err(ApiError::bad_request(
        "hierarchy_too_deep",
        format!(
            "parent CA {} is the {depth}th intermediate below its root: a CA below it would put \
             {} intermediate CAs between its leaves and the root, more than the \
             {MAX_PATH_INTERMEDIATES} path validation follows",
            parent.id,
            depth + 1
        ),
    )))
}

/// How many intermediate CAs a leaf of `ca` has on its path up to the anchor: `ca` itself and
/// each CA above it that has a parent in ScaiVault (a root, or an intermediate signed outside,
/// is the anchor). Bounded: a loop in stored rows cannot hold the request.
fn intermediates_above(
    tx: &scaivault_store::Tx<'_>,
    tenant: &str,
    ca: &CaRow,
) -> scaivault_store::Result<usize> {
    let mut depth = 0;
    let mut parent = ca.parent_ca_id.clone();
    while let Some(pid) = parent {
        depth += 1;
        if depth > MAX_PATH_INTERMEDIATES {
            break;
        }
        parent = tx.get_ca(tenant, &pid)?.parent_ca_id;
    }
    Ok(depth)
}

/// The pathLenConstraint a sub-CA of `parent` may carry (RFC 5280 §4.2.1.9): refused when the
/// parent allows no further CA below it or a larger value is asked for; inherited as
/// `parent - 1` when none is asked for.
fn effective_path_length(parent: &CaRow, asked: Option<u8>) -> Result<Option<u8>, ApiError> {
    let Some(der) = parent.cert_der.as_deref() else {
        return Ok(asked);
    };
    let Some(limit) = sign::path_len_constraint(&pem::from_der(der)?) else {
        return Ok(asked);
    };
    let Some(allowed) = limit.checked_sub(1) else {
        return Err(ApiError::bad_request(
            "parent_path_length_exceeded",
            format!(
                "parent CA {} has pathLenConstraint 0: no CA may be created below it",
                parent.id
            ),
        ));
    };
    match asked {
        Some(n) if n > allowed => Err(ApiError::bad_request(
            "parent_path_length_exceeded",
            format!(
                "max_path_length {n} exceeds the {allowed} that parent CA {} allows",
                parent.id
            ),
        )),
        Some(n) => Ok(Some(n)),
        None => Ok(Some(allowed)),
    }
}

struct Material {
    cert_der: Option<Vec<u8>>,
    csr_pem: Option<String>,
    serial: Option<Serial>,
}

fn build_ca_material(
    token: &dyn Token,
    key: &dyn Signer,
    mut t: CaTemplate,
    parent: Option<&CaRow>,
    pending: bool,
) -> Result<Material, ApiError> {
    if pending {
        let csr = sign::build_csr(&t.subject, key)?;
        return Ok(Material {
            cert_der: None,
            csr_pem: Some(csr),
            serial: None,
        });
    }
    t.spki_der = key.public_key_der().to_vec();
    let serial = t.serial.clone();
    let der = match parent {
        None => {
            let alg = key.algorithm_der();
            let tbs = profile::ca_tbs(&t, None, &alg)?;
            sign::sign_certificate(
                tbs,
                LintExpect {
                    issuer: None,
                    ca: true,
                    algorithm_der: &alg,
                },
                key,
            )?
        }
        Some(p) => {
            let (info, parent_key) = issuer_of(token, p)?;
            let tbs = profile::ca_tbs(&t, Some(&info), &key.algorithm_der())?;
            sign::sign_certificate(
                tbs,
                LintExpect {
                    issuer: Some(&info),
                    ca: true,
                    algorithm_der: &info.algorithm_der,
                },
                parent_key.as_ref(),
            )?
        }
    };
    Ok(Material {
        cert_der: Some(der),
        csr_pem: None,
        serial: Some(serial),
    })
}

/// Loads a CA of the caller's tenant.
///
/// # Errors
/// `404 ca_not_found` (also for another tenant's CA).
pub async fn get(app: &App, tenant_id: &str, id: &str) -> Result<CaRow, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| tx.get_ca(&t, &i)).map_err(|e| match e {
            scaivault_store::Error::NotFound => ApiError::not_found("ca_not_found", "CA"),
            other => ApiError::from(other),
        })
    })
    .await
}

/// Loads a CA by id whatever its tenant (public certificate, chain, CRL and OCSP endpoints).
///
/// # Errors
/// `404 ca_not_found`.
pub async fn get_public(app: &App, id: &str) -> Result<CaRow, ApiError> {
    let i = id.to_owned();
    app.db(move |s| {
        s.read(|tx| tx.get_ca_any_tenant(&i)).map_err(|e| match e {
            scaivault_store::Error::NotFound => ApiError::not_found("ca_not_found", "CA"),
            other => ApiError::from(other),
        })
    })
    .await
}

/// The CA's certificate followed by its issuers up to the root, as PEM.
///
/// # Errors
/// `409 ca_pending_signature` when the CA has no certificate yet.
pub async fn chain_pem(app: &App, row: &CaRow) -> Result<String, ApiError> {
    let mut out = String::new();
    let mut current = row.clone();
    for _ in 0..16 {
        let der = current.cert_der.as_deref().ok_or_else(|| {
            ApiError::conflict(
                "ca_pending_signature",
                format!("CA {} has no certificate yet", current.id),
            )
        })?;
        out.push_str(&pem::certificate(der)?);
        if let Some(chain) = &current.chain_pem {
            out.push_str(chain);
            if !chain.ends_with('\n') {
                out.push('\n');
            }
            return Ok(out);
        }
        match &current.parent_ca_id {
            None => return Ok(out),
            Some(pid) => current = get_public(app, pid).await?,
        }
    }
    Err(ApiError::internal("CA chain longer than 16"))
}

/// Label prefixes of the keys the daemon generates (CA keys, OCSP delegates, the KEK).
const DAEMON_KEY_PREFIXES: [&str; 3] = ["ca_", "ocsp_", "scaivault-"];

/// The most certificates a chain given with a CA may hold (a root and intermediates).
const MAX_CHAIN: usize = 8;

/// `400 validity_exceeds_parent` when `cert` ends after `parent` (API.md: an intermediate's
/// `not_after` never exceeds its parent's).
fn within_parent(cert: &Certificate, parent: &Certificate) -> Result<(), ApiError> {
    let end = time_util::from_x509(&cert.tbs_certificate.validity.not_after);
    let parent_end = time_util::from_x509(&parent.tbs_certificate.validity.not_after);
    if end > parent_end {
        return Err(ApiError::bad_request(
            "validity_exceeds_parent",
            format!(
                "the certificate ends {} but its issuer ends {}",
                time_util::rfc3339(end),
                time_util::rfc3339(parent_end)
            ),
        ));
    }
    Ok(())
}

/// Checks that `chain` links `cert` to a self-signed root: each certificate is signed by the next,
/// every issuer is a CA, names chain, and the last one — and only the last one — signs itself;
/// at most [`MAX_CHAIN`] certificates; `cert` ends no later than its issuer.
fn verify_chain(cert: &Certificate, chain: &[Certificate]) -> Result<(), ApiError> {
    let bad = |d: String| ApiError::bad_request("chain_invalid", d);
    if chain.len() > MAX_CHAIN {
        return Err(bad(format!(
            "a chain of {} certificates; at most {MAX_CHAIN} are accepted",
            chain.len()
        )));
    }
    let mut child = cert;
    for (i, issuer) in chain.iter().enumerate() {
        if child.tbs_certificate.issuer.to_der().ok() == child.tbs_certificate.subject.to_der().ok()
        {
            return Err(bad(format!(
                "the chain goes on past a self-signed certificate (at certificate {i})"
            )));
        }
        if child.tbs_certificate.issuer.to_der().ok()
            != issuer.tbs_certificate.subject.to_der().ok()
        {
            return Err(bad(format!(
                "certificate {i} of the chain is not the issuer of the one before"
            )));
        }
        if let Err(e) = check_ca_certificate(issuer, false) {
            return Err(bad(format!(
                "certificate {i} of the chain is not a CA certificate that may sign: {}",
                e.detail
            )));
        }
        let spki = issuer
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(ApiError::internal)?;
        verify::verify_certificate(child, &spki).map_err(|e| {
            bad(format!(
                "certificate {i} of the chain did not sign the one before: {e}"
            ))
        })?;
        if i == 0 {
            within_parent(cert, issuer)?;
        }
        child = issuer;
    }
    let spki = child
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(ApiError::internal)?;
    if child.tbs_certificate.issuer.to_der().ok() != child.tbs_certificate.subject.to_der().ok()
        || verify::verify_certificate(child, &spki).is_err()
    {
        return Err(bad("the chain does not end in a self-signed root".into()));
    }
    Ok(())
}

/// Refuses a certificate this CA could not issue with: no basicConstraints `cA` (RFC 5280
/// §4.2.1.9), a keyUsage without `keyCertSign` — or, for a CA that signs its own CRLs here
/// (`signs_crls`), without `cRLSign` (§4.2.1.3; relying parties refuse such a CA's certificates
/// and CRLs) —, or an empty subject (§4.1.2.6: the issuer name of everything it signs).
fn check_ca_certificate(cert: &Certificate, signs_crls: bool) -> Result<(), ApiError> {
    use der::oid::AssociatedOid;
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
    let not_ca = |why: &str| ApiError::bad_request("not_a_ca_certificate", why.to_owned());
    let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
    let ca = exts.iter().any(|e| {
        e.extn_id == BasicConstraints::OID
            && BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|bc| bc.ca)
    });
    if !ca {
        return Err(not_ca("the certificate lacks basicConstraints CA:TRUE"));
    }
    if let Some(e) = exts.iter().find(|e| e.extn_id == KeyUsage::OID) {
        let ku = KeyUsage::from_der(e.extn_value.as_bytes())
            .map_err(|_| not_ca("the certificate's keyUsage does not decode"))?;
        if !ku.0.contains(KeyUsages::KeyCertSign) {
            return Err(not_ca(
                "the certificate's keyUsage lacks keyCertSign: it cannot sign certificates",
            ));
        }
        if signs_crls && !ku.0.contains(KeyUsages::CRLSign) {
            return Err(not_ca(
                "the certificate's keyUsage lacks cRLSign: the CRLs this CA signs would be refused",
            ));
        }
    }
    if cert.tbs_certificate.subject.0.is_empty() {
        return Err(not_ca(
            "the certificate's subject is empty: it would be the issuer name of every certificate the CA signs",
        ));
    }
    Ok(())
}

fn check_current(cert: &Certificate) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    let nb = time_util::from_x509(&cert.tbs_certificate.validity.not_before);
    let na = time_util::from_x509(&cert.tbs_certificate.validity.not_after);
    let now = time_util::now();
    if now < nb - Duration::minutes(5) || now >= na {
        return Err(ApiError::bad_request(
            "certificate_not_current",
            format!(
                "the certificate is valid from {} to {}",
                time_util::rfc3339(nb),
                time_util::rfc3339(na)
            ),
        ));
    }
    Ok((nb, na))
}

/// Installs the certificate an external parent signed for a `pending_signature` intermediate.
///
/// # Errors
/// `409 ca_not_pending`; `400 certificate_key_mismatch`, `not_a_ca_certificate`, `chain_invalid`,
/// `certificate_not_current`.
pub async fn install_signed(
    app: &App,
    caller: &Caller,
    id: &str,
    cert_pem: &str,
    chain_pem: &str,
) -> Result<CaRow, ApiError> {
    let mut row = get(app, &caller.tenant_id, id).await?;
    if row.status != "pending_signature" {
        return Err(ApiError::conflict(
            "ca_not_pending",
            format!("CA {id} is {}, not pending_signature", row.status),
        ));
    }
    let cert = pem::parse_certificate(cert_pem)?;
    let chain = pem::parse_certificates(chain_pem)?;
    let token = app.token.clone();
    let label = row.key_label.clone();
    let key_spki = app
        .token_blocking("find", move || {
            Ok(token.find(&label)?.public_key_der().to_vec())
        })
        .await?;
    let key_spki =
        spki::SubjectPublicKeyInfoOwned::from_der(&key_spki).map_err(ApiError::internal)?;
    if !verify::same_key(&cert.tbs_certificate.subject_public_key_info, &key_spki) {
        return Err(ApiError::bad_request(
            "certificate_key_mismatch",
            "the certificate is not for this CA's key",
        ));
    }
    check_ca_certificate(&cert, true)?;
    let (nb, na) = check_current(&cert)?;
    verify_chain(&cert, &chain)?;
    let mut chain_text = String::new();
    for c in &chain {
        chain_text.push_str(&pem::certificate(&pem::to_der(c)?)?);
    }
    // The parent may have written another subject than the CSR's (a CA that rewrites names):
    // the certificate is what the CA is, and its common name is what the API shows.
    if let Some(cn) = scaivault_core::name::common_name(&cert.tbs_certificate.subject) {
        row.common_name = cn;
    }
    row.status = "active".into();
    row.cert_der = Some(pem::to_der(&cert)?);
    row.chain_pem = Some(chain_text);
    row.serial = Some(Serial::from_bytes(cert.tbs_certificate.serial_number.as_bytes())?.key());
    row.not_before = Some(time_util::rfc3339(nb));
    row.not_after = Some(time_util::rfc3339(na));
    let rec = caller.record("ca.install_certificate", Some(id), "success");
    let r2 = row.clone();
    app.db(move |s| {
        s.write(|tx| {
            tx.update_ca(&r2)?;
            tx.append_audit(&rec)
        })
        .map_err(ApiError::from)
    })
    .await?;
    app.issue_cache.clear();
    Ok(row)
}

/// Refuses a token key that could leave the token or may not sign: a CA key is sensitive and
/// not extractable — except under a trusted wrapping key (`CKA_WRAP_WITH_TRUSTED`), the
/// ceremony's backup-enabled keys (docs/CEREMONY.md, step 6) — and may sign.
fn check_key_protected(label: &str, a: &scaivault_hsm::KeyAttributes) -> Result<(), ApiError> {
    let why = if !a.sensitive {
        Some("is not sensitive (CKA_SENSITIVE false): its value can be read off the token")
    } else if a.extractable && !a.wrap_with_trusted {
        Some(
            "is extractable (CKA_EXTRACTABLE true) without CKA_WRAP_WITH_TRUSTED: it can be \
             wrapped out of the token under any key",
        )
    } else if !a.sign {
        Some("may not sign (CKA_SIGN false)")
    } else {
        None
    };
    match why {
        Some(why) => Err(ApiError::bad_request(
            "key_not_protected",
            format!("the key labelled {label:?} {why}; a CA key must stay on the token"),
        )),
        None => Ok(()),
    }
}

/// What an import names: a key already on the token and its certificate.
#[derive(Debug, Clone)]
pub struct ImportCa {
    /// Unique per tenant.
    pub name: String,
    /// CKA_LABEL of the existing key pair; `None` imports an offline CA (certificate only: it
    /// signs nothing here and its CRL is imported).
    pub key_label: Option<String>,
    /// The CA certificate.
    pub certificate_pem: String,
    /// Issuers up to a root, for a CA signed outside ScaiVault.
    pub chain_pem: Option<String>,
    /// An internal parent that signed it.
    pub parent_ca_id: Option<String>,
    /// Settings.
    pub settings: CaSettings,
}

/// Imports an existing CA whose key already sits on the token.
///
/// # Errors
/// `400 key_not_found`, `certificate_key_mismatch`, `not_a_ca_certificate`, `chain_invalid`;
/// `409` for a taken name or a key label already in use.
pub async fn import(app: &App, caller: &Caller, req: ImportCa) -> Result<CaRow, ApiError> {
    check_name(&req.name)?;
    let cert = pem::parse_certificate(&req.certificate_pem)?;
    let id = scaivault_core::ids::new_id("ca");
    let (key_label, key_type, key_size) = match &req.key_label {
        Some(label) => {
            if label.starts_with(CaRow::OFFLINE_LABEL_PREFIX) {
                return Err(ApiError::bad_request(
                    "invalid_key_label",
                    format!(
                        "key labels starting with {:?} are reserved for offline CAs",
                        CaRow::OFFLINE_LABEL_PREFIX
                    ),
                ));
            }
            // Keys the daemon generates itself belong to what made them (a CA, an OCSP
            // delegate, the key-encryption key): a certificate for one of their public keys —
            // a delegate's is in every OCSP answer — must not turn it into another CA's key.
            if let Some(prefix) = DAEMON_KEY_PREFIXES.iter().find(|p| label.starts_with(*p)) {
                return Err(ApiError::bad_request(
                    "invalid_key_label",
                    format!(
                        "key labels starting with {prefix:?} belong to keys the daemon generates; \
                         import a key made for this CA"
                    ),
                ));
            }
            let token = app.token.clone();
            let l = label.clone();
            let (key, attrs) = app
                .token_blocking("find", move || {
                    let found = token
                        .find(&l)
                        .and_then(|key| Ok((key, token.attributes(&l)?)));
                    found.map_err(|e| match e {
                        scaivault_hsm::Error::KeyNotFound { label } => ApiError::bad_request(
                            "key_not_found",
                            format!("no key labelled {label:?} on the token"),
                        ),
                        e @ scaivault_hsm::Error::PublicKeyMissing { .. } => {
                            ApiError::bad_request("key_not_found", e.to_string())
                        }
                        other => ApiError::from(other),
                    })
                })
                .await?;
            check_key_protected(label, &attrs)?;
            let key_spki = spki::SubjectPublicKeyInfoOwned::from_der(key.public_key_der())
                .map_err(ApiError::internal)?;
            if !verify::same_key(&cert.tbs_certificate.subject_public_key_info, &key_spki) {
                return Err(ApiError::bad_request(
                    "certificate_key_mismatch",
                    "the certificate is not for that key",
                ));
            }
            let spec = key.spec();
            (label.clone(), spec.type_name().to_owned(), spec.bits())
        }
        None => {
            let (t, bits) = offline_key_kind(&cert.tbs_certificate.subject_public_key_info)?;
            (format!("{}{id}", CaRow::OFFLINE_LABEL_PREFIX), t, bits)
        }
    };
    check_ca_certificate(&cert, req.key_label.is_some())?;
    let (nb, na) = check_current(&cert)?;
    let self_signed =
        cert.tbs_certificate.issuer.to_der().ok() == cert.tbs_certificate.subject.to_der().ok();
    let mut chain_text = None;
    if let Some(pid) = &req.parent_ca_id {
        let parent = get(app, &caller.tenant_id, pid).await.map_err(|e| {
            if e.code == "ca_not_found" {
                ApiError::bad_request(
                    "parent_ca_not_found",
                    format!("parent CA {pid:?} not found"),
                )
            } else {
                e
            }
        })?;
        let (t, p2) = (caller.tenant_id.clone(), parent.clone());
        app.db(move |s| {
            s.read(|tx| depth_below(tx, &t, &p2))
                .map_err(ApiError::from)
        })
        .await??;
        let pder = parent.cert_der.ok_or_else(|| {
            ApiError::conflict("parent_ca_not_active", "parent has no certificate")
        })?;
        let pcert = pem::from_der(&pder)?;
        verify::verify_certificate(
            &cert,
            &pcert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .map_err(ApiError::internal)?,
        )
        .map_err(|e| {
            ApiError::bad_request(
                "chain_invalid",
                format!("the parent did not sign this certificate: {e}"),
            )
        })?;
        within_parent(&cert, &pcert)?;
    } else if let Some(chain) = &req.chain_pem {
        let chain = pem::parse_certificates(chain)?;
        verify_chain(&cert, &chain)?;
        let mut t = String::new();
        for c in &chain {
            t.push_str(&pem::certificate(&pem::to_der(c)?)?);
        }
        chain_text = Some(t);
    } else if self_signed {
        verify_chain(&cert, &[])?;
    } else {
        return Err(ApiError::bad_request(
            "chain_invalid",
            "a certificate that is not self-signed needs parent_ca_id or chain_pem",
        ));
    }
    let now = time_util::now();
    let subject_cn =
        scaivault_core::name::common_name(&cert.tbs_certificate.subject).unwrap_or_default();
    let row = CaRow {
        id,
        tenant_id: caller.tenant_id.clone(),
        name: req.name.clone(),
        common_name: subject_cn,
        ca_type: if self_signed { "root" } else { "intermediate" }.into(),
        parent_ca_id: req.parent_ca_id.clone(),
        status: "active".into(),
        key_type,
        key_size,
        key_label,
        cert_der: Some(pem::to_der(&cert)?),
        chain_pem: chain_text,
        csr_pem: None,
        serial: Some(Serial::from_bytes(cert.tbs_certificate.serial_number.as_bytes())?.key()),
        not_before: Some(time_util::rfc3339(nb)),
        not_after: Some(time_util::rfc3339(na)),
        settings: serde_json::to_string(&req.settings).map_err(ApiError::internal)?,
        created_at: time_util::rfc3339(now),
    };
    let rec = caller.record("ca.import", Some(&row.id), "success");
    let r2 = row.clone();
    app.db(move |s| {
        s.write(|tx| {
            if tx.ca_name_taken(&r2.tenant_id, &r2.name)? {
                return Err(scaivault_store::Error::Conflict(format!(
                    "a CA named {:?} exists",
                    r2.name
                )));
            }
            // One certificate, one CA: two CA objects for it would make a CRL import and the
            // retirement of its children ambiguous.
            if let Some((other, name)) = r2
                .cert_der
                .as_deref()
                .map(|der| tx.ca_with_certificate(&r2.tenant_id, der))
                .transpose()?
                .flatten()
            {
                return Err(scaivault_store::Error::Conflict(format!(
                    "CA {name:?} ({other}) holds this certificate already"
                )));
            }
            tx.insert_ca(&r2).map_err(|e| match e {
                // The name is free (above): the key is the one taken.
                scaivault_store::Error::Conflict(_) => scaivault_store::Error::Conflict(format!(
                    "the key {:?} is another CA's already",
                    r2.key_label
                )),
                other => other,
            })?;
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::Conflict(what) => ApiError::conflict("ca_conflict", what),
            other => ApiError::from(other),
        })
    })
    .await?;
    Ok(row)
}

/// The API key type and size of an offline CA's public key.
fn offline_key_kind(spki: &spki::SubjectPublicKeyInfoOwned) -> Result<(String, u32), ApiError> {
    let der = spki.to_der().map_err(ApiError::internal)?;
    let info = scaivault_core::csr::key_info(&der).map_err(|e| {
        ApiError::bad_request(
            "unsupported_key_type",
            format!("the CA certificate's key: {e}"),
        )
    })?;
    Ok((info.key_type.to_owned(), info.bits))
}

/// Retires a CA: it stops issuing and stops being a parent; its certificate stays published.
///
/// # Errors
/// `404`, `409 ca_retired` when already retired.
pub async fn retire(app: &App, caller: &Caller, id: &str) -> Result<CaRow, ApiError> {
    let mut row = get(app, &caller.tenant_id, id).await?;
    if row.status == "retired" {
        return Err(ApiError::conflict(
            "ca_retired",
            format!("CA {id} is already retired"),
        ));
    }
    row.status = "retired".into();
    let rec = caller.record("ca.retire", Some(id), "success");
    let r2 = row.clone();
    app.db(move |s| {
        s.write(|tx| {
            tx.update_ca(&r2)?;
            tx.append_audit(&rec)
        })
        .map_err(ApiError::from)
    })
    .await?;
    app.issue_cache.clear();
    Ok(row)
}

/// The settings stored with a CA.
pub fn settings(row: &CaRow) -> CaSettings {
    parse_settings(row)
}
