//! Issuing leaf certificates under a role: `issue` (key made here, returned once) and `sign` (a
//! client's CSR, signed at once under the same rules).
//!
//! Order of work, so that nothing is signed unless it was authorised and recorded:
//! role policy → lifetime → issuer active and outliving the certificate → (key) → TBS built →
//! serial and TBS reserved (with the `started` record that stands for the attempt should a crash
//! leave it unfinished) → basis checked → TBS linted → signed on the token → signature verified →
//! certificate stored with the call's one audit record, `success` (API.md: one record per call)
//! (the UNIQUE(issuer, serial) constraint makes a serial single-use). A failure after the
//! reservation releases the serial and writes an `error:<code>` record.
//!
//! The reservation goes to the SQLite store's reservation journal (one page-aligned `write` from
//! the request's thread, see [`scaivault_store::journal`]) or, on PostgreSQL, to a row of the
//! shared database (a group commit without its own `fsync`). With `[hsm] call_timeout` set (the
//! default) the steps after it are chained from thread to thread (a signer thread, see
//! [`crate::signers`] → store writer) and the request's task wakes once, at the end (see
//! `chained`).

use crate::app::{App, Caller, Issuer};
use crate::error::ApiError;
use crate::issuecache::{CachedRole, IssueCache};
use crate::leafkey;
use crate::metrics::IssueStage;
use crate::roles::{self, RoleSpec};
use aes_gcm::aead::{Aead, KeyInit};
use scaivault_core::leaf::{self, LeafNames, LeafTemplate, LeafUrls};
use scaivault_core::role::{ApprovedNames, NameRequest};
use scaivault_core::serial::Serial;
use scaivault_core::sign::EncodedTbs;
use scaivault_core::{csr, duration, pem, time_util};
use scaivault_hsm::KeyType;
use scaivault_store::journal::{Reservation, Ticket};
use scaivault_store::{AuditRecord, CertRow, Durability, IssueBasis, Store, StoredKeyRow};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Label of the token key that encrypts stored leaf keys' data keys.
pub const KEK_LABEL: &str = "scaivault-kek-v1";
/// How far `notBefore` is set back to absorb clock skew between relying parties.
const BACKDATE: Duration = Duration::seconds(30);

/// What `POST /v1/pki/issue/{role}` asks for.
#[derive(Debug, Clone, Default)]
pub struct IssueInput {
    /// Subject CN.
    pub common_name: Option<String>,
    /// DNS SANs.
    pub alt_names: Vec<String>,
    /// IP SANs.
    pub ip_sans: Vec<String>,
    /// URI SANs.
    pub uri_sans: Vec<String>,
    /// Lifetime (Go duration).
    pub ttl: Option<String>,
    /// Private key as PKCS#8.
    pub pkcs8: bool,
}

/// A signed leaf.
pub struct Issued {
    /// PEM.
    pub certificate: String,
    /// PEM private key (issue only).
    pub private_key: Option<Zeroizing<String>>,
    /// Issuing CA first, up to the root.
    pub ca_chain: Vec<String>,
    /// Serial.
    pub serial: Serial,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// The CA that signed.
    pub issuing_ca_id: String,
}

/// The validity window for a request: `ttl` (or the role default) must not exceed the role's
/// `max_ttl` nor the issuer's `notAfter` — refused, never shortened.
fn lifetime(
    spec: &RoleSpec,
    ttl: Option<&str>,
    issuer: &Issuer,
) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    let max = spec.max_ttl_secs()?;
    let secs = match ttl {
        Some(t) => duration::parse_seconds(t)?,
        None => spec.default_ttl_secs()?,
    };
    if secs == 0 {
        return Err(ApiError::bad_request(
            "invalid_duration",
            "ttl must be positive",
        ));
    }
    if secs > max {
        return Err(roles::ttl_over_max(secs, &spec.max_ttl));
    }
    let now = time_util::now();
    let not_after = now + Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2));
    if not_after > issuer.info.not_after {
        return Err(ApiError::bad_request(
            "ttl_exceeds_ca_validity",
            format!(
                "the certificate would end {} but CA {} ends {}",
                time_util::rfc3339(not_after),
                issuer.ca_id,
                time_util::rfc3339(issuer.info.not_after)
            ),
        ));
    }
    Ok((issuer.info.backdated(now, BACKDATE), not_after))
}

fn subject(
    spec: &RoleSpec,
    names: &ApprovedNames,
    issuer: &Issuer,
) -> Result<x509_cert::name::Name, ApiError> {
    let cn = default_cn(names, issuer.info.name_rules.constrains_dns());
    Ok(scaivault_core::name::leaf_subject(
        cn.as_deref(),
        spec.organization.as_deref(),
    )?)
}

/// The subject CN: the requested one, else (as step-ca does) the first DNS name that fits a CN,
/// else the first IP address. None when the names are only URIs or DNS names longer than a CN
/// may be (64 characters): the subject then has no CN and the subjectAltName, which carries every
/// name anyway, is marked critical (RFC 5280 §4.2.1.6). A URI is never a CN (the pre-signing lint
/// would refuse a CN that is not among the SAN's DNS names and IP addresses). Not an IP address
/// under a CA whose chain constrains DNS names (`dns_constrained`): OpenSSL would check that CN
/// as a DNS name and reject the leaf; the subject is then empty instead.
fn default_cn(names: &ApprovedNames, dns_constrained: bool) -> Option<String> {
    names.common_name.clone().or_else(|| {
        names
            .dns_names
            .iter()
            .find(|d| d.chars().count() <= scaivault_core::name::MAX_CN_CHARS)
            .cloned()
            .or_else(|| {
                names
                    .ips
                    .first()
                    .filter(|_| !dns_constrained)
                    .map(ToString::to_string)
            })
    })
}

/// Every leaf carries a subjectAltName (RFC 5280 §4.2.1.6, CA/B BR): a request whose only name is a
/// free-text common name (allowed by `allow_any_name`) has nothing to put there.
fn require_san(names: &ApprovedNames) -> Result<(), ApiError> {
    if names.dns_names.is_empty() && names.ips.is_empty() && names.uris.is_empty() {
        return Err(ApiError::bad_request(
            "no_names",
            "the request names no DNS name, IP address or URI for the subjectAltName",
        ));
    }
    Ok(())
}

/// Where an issuance reads its token and role from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// [`crate::issuecache`] when it is on (the API's issuance endpoints, whose caller came from
    /// [`crate::api::guards::IssuingCaller`]); the reservation then checks what was used.
    Cached,
    /// The database (the daemon's own callers, and the retry after a failed check).
    Fresh,
}

/// Refusal of a reservation whose basis changed; never leaves this module (the request is retried
/// from the database).
const BASIS_CHANGED: &str = "issue_basis_changed";

/// Runs `attempt` with [`Lookup::Cached`] and, when the reservation found that the token, role or
/// CA it relied on changed, once more from the database after checking the token again.
async fn with_retry<F, Fut>(
    app: &App,
    caller: &Caller,
    lookup: Lookup,
    mut attempt: F,
) -> Result<Issued, ApiError>
where
    F: FnMut(Lookup) -> Fut,
    Fut: std::future::Future<Output = Result<Issued, ApiError>>,
{
    match attempt(lookup).await {
        Err(e) if e.code == BASIS_CHANGED => {
            app.issue_cache.clear();
            app.recheck(caller)?;
            attempt(Lookup::Fresh).await
        }
        other => other,
    }
}

/// The role and its issuing CA: from [`crate::issuecache`] for [`Lookup::Cached`] when it is on
/// (with the basis the reservation must check), otherwise in one indexed read on this thread
/// (see [`App::read_now`]).
async fn load(
    app: &App,
    caller: &Caller,
    role: &str,
    lookup: Lookup,
) -> Result<(Arc<CachedRole>, Option<IssueBasis>), ApiError> {
    let cached = lookup == Lookup::Cached && app.issue_cache.enabled();
    // What the reservation and the certificate's commit check under the write lock: always with
    // PostgreSQL (several nodes, and the token and role were read outside the write), with
    // SQLite when they came from the cache.
    let shared = app.store.backend() == "postgres";
    let basis =
        |r: &CachedRole| (cached || shared).then(|| r.basis(&caller.token_id, &caller.tenant_id));
    if cached {
        if let Some(r) = app.issue_cache.role(&caller.tenant_id, role) {
            let b = basis(&r);
            return Ok((r, b));
        }
    }
    let tenant_id = caller.tenant_id.as_str();
    let (role_row, ca_row) = app
        .read_now(|tx| {
            let role_row = match tx.get_role(tenant_id, role) {
                Ok(x) => x,
                Err(scaivault_store::Error::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            let ca = match tx.get_ca(tenant_id, &role_row.ca_id) {
                Ok(c) => Some(c),
                Err(scaivault_store::Error::NotFound) => None,
                Err(e) => return Err(e),
            };
            Ok(Some((role_row, ca)))
        })?
        .ok_or_else(|| ApiError::not_found("role_not_found", "role"))?;
    let spec = roles::decode(&role_row)?;
    let ca_row = ca_row.ok_or_else(|| {
        ApiError::bad_request(
            "ca_not_found",
            format!("CA {:?} of role {role} not found", role_row.ca_id),
        )
    })?;
    let ca_serial = ca_row.serial.clone();
    let ca_key_label = ca_row.key_label.clone();
    let issuer = app.issuer_for(ca_row).await?;
    let entry = Arc::new(CachedRole {
        spec,
        issuer,
        config: role_row.config,
        ca_serial: ca_serial.clone().unwrap_or_default(),
        ca_key_label,
    });
    if cached {
        if ca_serial.is_some() {
            app.issue_cache
                .put_role(tenant_id, entry.clone(), caller.cache_generation);
            let b = basis(&entry);
            return Ok((entry, b));
        }
        // An active CA always has its certificate's serial; without one nothing is cached and
        // there is no basis for the reservation to check, so the caller's token (which may have
        // come from the cache) is read again here.
        app.recheck(caller)?;
        return Ok((entry, None));
    }
    let b = if ca_serial.is_some() {
        basis(&entry)
    } else {
        None
    };
    Ok((entry, b))
}

/// Issues a certificate and a fresh key pair under role `role`.
///
/// # Errors
/// `404 role_not_found`; `400` for names, TTL or key refusals; `503` for token, database or audit
/// failures.
pub async fn issue(
    app: &App,
    caller: &Caller,
    role: &str,
    input: IssueInput,
    lookup: Lookup,
) -> Result<Issued, ApiError> {
    with_retry(app, caller, lookup, |l| {
        issue_once(app, caller, role, &input, l)
    })
    .await
}

async fn issue_once(
    app: &App,
    caller: &Caller,
    role: &str,
    input: &IssueInput,
    lookup: Lookup,
) -> Result<Issued, ApiError> {
    let (loaded, basis) = load(app, caller, role, lookup).await?;
    let (spec, issuer) = (&loaded.spec, &loaded.issuer);
    let names = spec.policy()?.check(&NameRequest {
        common_name: input.common_name.as_deref(),
        dns_names: &input.alt_names,
        ip_sans: &input.ip_sans,
        uri_sans: &input.uri_sans,
    })?;
    require_san(&names)?;
    let (nb, na) = lifetime(spec, input.ttl.as_deref(), issuer)?;
    let key_spec = spec.key_spec()?;
    let pool = app.rsa_pool.clone();
    let pkcs8 = input.pkcs8;
    // EC and Ed25519 keys take tens of microseconds: made right here. RSA may take a generation
    // (when the pool is empty): on the blocking pool.
    let key = if key_spec.key_type() == KeyType::Rsa {
        app.blocking(move || leafkey::generate(key_spec, pkcs8, &pool))
            .await?
    } else {
        leafkey::generate(key_spec, pkcs8, &pool)?
    };
    let sealed = if spec.store_private_key {
        Some(seal(app, &key.private_pem).await?)
    } else {
        None
    };
    let mut out = sign_and_store(
        app,
        caller,
        role,
        spec,
        issuer,
        names,
        key.spki_der.clone(),
        key_spec.key_type(),
        (nb, na),
        sealed,
        basis,
    )
    .await?;
    out.private_key = Some(key.private_pem);
    Ok(out)
}

/// Signs a client's CSR under role `role`.
///
/// # Errors
/// `400 invalid_csr` for a bad request or signature, `400 key_not_allowed` for a key the role does
/// not accept, name refusals as for [`issue`].
pub async fn sign_csr(
    app: &App,
    caller: &Caller,
    role: &str,
    csr_pem: &str,
    ttl: Option<&str>,
    lookup: Lookup,
) -> Result<Issued, ApiError> {
    with_retry(app, caller, lookup, |l| {
        sign_csr_once(app, caller, role, (csr_pem, ttl), l)
    })
    .await
}

/// One attempt of [`sign_csr`]: the CSR (PEM) and the requested `ttl` come as one pair.
async fn sign_csr_once(
    app: &App,
    caller: &Caller,
    role: &str,
    (csr_pem, ttl): (&str, Option<&str>),
    lookup: Lookup,
) -> Result<Issued, ApiError> {
    let (loaded, basis) = load(app, caller, role, lookup).await?;
    let (spec, issuer) = (&loaded.spec, &loaded.issuer);
    let parsed = csr::parse_pem(csr_pem)?;
    csr::check_one_common_name(&parsed)?;
    let want = spec.key_spec()?;
    if parsed.key.key_type != want.type_name() || parsed.key.bits < want.bits() {
        return Err(ApiError::bad_request(
            "key_not_allowed",
            format!(
                "the CSR's key is {} {}; role {role} requires {} of at least {} bits",
                parsed.key.key_type,
                parsed.key.bits,
                want.type_name(),
                want.bits()
            ),
        ));
    }
    if let Some(e) = parsed.emails.first() {
        return Err(ApiError::bad_request(
            "name_not_allowed",
            format!("e-mail SAN {e:?} is not issued by PKI roles"),
        ));
    }
    let ips: Vec<String> = parsed.ips.iter().map(ToString::to_string).collect();
    let names = spec.policy()?.check(&NameRequest {
        common_name: parsed.common_name.as_deref(),
        dns_names: &parsed.dns,
        ip_sans: &ips,
        uri_sans: &parsed.uris,
    })?;
    let window = lifetime(spec, ttl, issuer)?;
    let key_type = match parsed.key.key_type {
        "rsa" => KeyType::Rsa,
        "ed25519" => KeyType::Ed25519,
        _ => KeyType::Ec,
    };
    sign_and_store(
        app,
        caller,
        role,
        spec,
        issuer,
        names,
        parsed.spki_der,
        key_type,
        window,
        None,
        basis,
    )
    .await
}

/// Encrypts a leaf private key for storage: AES-256-GCM under a fresh random data key, the data key
/// encrypted by the token's KEK.
pub(crate) async fn seal(
    app: &App,
    private_pem: &Zeroizing<String>,
) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    let dek = Zeroizing::new(scaivault_core::ids::random_bytes(32));
    let nonce = scaivault_core::ids::random_bytes(12);
    let nonce_arr: [u8; 12] = nonce.as_slice().try_into().map_err(ApiError::internal)?;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&dek).map_err(ApiError::internal)?;
    let ct = cipher
        .encrypt(&aes_gcm::Nonce::from(nonce_arr), private_pem.as_bytes())
        .map_err(|_| ApiError::internal("sealing the private key failed"))?;
    let mut sealed = nonce;
    sealed.extend_from_slice(&ct);
    let token = app.token.clone();
    let wrapped = app
        .token_blocking("kek_encrypt", move || {
            token.ensure_kek(KEK_LABEL)?;
            Ok(token.kek_encrypt(KEK_LABEL, &dek)?)
        })
        .await?;
    Ok((wrapped, sealed))
}

/// Decrypts a stored leaf private key.
///
/// # Errors
/// Internal when the data does not decrypt (tampering or a different token).
pub async fn unseal(
    app: &App,
    wrapped: Vec<u8>,
    sealed: Vec<u8>,
) -> Result<Zeroizing<String>, ApiError> {
    let token = app.token.clone();
    let dek = app
        .token_blocking("kek_decrypt", move || {
            Ok(Zeroizing::new(token.kek_decrypt(KEK_LABEL, &wrapped)?))
        })
        .await?;
    let (nonce, ct) = sealed
        .split_at_checked(12)
        .ok_or_else(|| ApiError::internal("stored key too short"))?;
    let nonce_arr: [u8; 12] = nonce.try_into().map_err(ApiError::internal)?;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&dek).map_err(ApiError::internal)?;
    let pt = cipher
        .decrypt(&aes_gcm::Nonce::from(nonce_arr), ct)
        .map_err(|_| ApiError::internal("stored key does not decrypt"))?;
    String::from_utf8(pt)
        .map(Zeroizing::new)
        .map_err(ApiError::internal)
}

/// Extra work done in the transaction that stores a certificate, given its serial.
pub type OnStore =
    Box<dyn FnOnce(&scaivault_store::Tx<'_>, &str) -> scaivault_store::Result<()> + Send>;

/// A certificate to sign, decided and checked by the caller (a role, or a reviewed CSR).
pub struct LeafOrder {
    /// The role it is issued under, if any.
    pub role: Option<String>,
    /// Subject.
    pub subject: x509_cert::name::Name,
    /// Approved names.
    pub names: ApprovedNames,
    /// The subject key, DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Key family (KeyUsage).
    pub key_type: KeyType,
    /// Validity window.
    pub window: (OffsetDateTime, OffsetDateTime),
    /// EKU serverAuth.
    pub server_auth: bool,
    /// EKU clientAuth.
    pub client_auth: bool,
    /// A sealed private key to store with it.
    pub sealed: Option<(Vec<u8>, Vec<u8>)>,
    /// Runs in the transaction that stores the certificate (e.g. a CSR's state change), with the
    /// serial; its failure fails the whole store.
    pub on_store: Option<OnStore>,
    /// What the reservation must find unchanged (the caller read token and role from
    /// [`crate::issuecache`]).
    pub basis: Option<IssueBasis>,
}

#[allow(clippy::too_many_arguments)] // one internal step with the whole request's context
async fn sign_and_store(
    app: &App,
    caller: &Caller,
    role: &str,
    spec: &RoleSpec,
    issuer: &Arc<Issuer>,
    names: ApprovedNames,
    spki_der: Vec<u8>,
    key_type: KeyType,
    window: (OffsetDateTime, OffsetDateTime),
    sealed: Option<(Vec<u8>, Vec<u8>)>,
    basis: Option<IssueBasis>,
) -> Result<Issued, ApiError> {
    let order = LeafOrder {
        role: Some(role.to_owned()),
        subject: subject(spec, &names, issuer)?,
        names,
        spki_der,
        key_type,
        window,
        server_auth: spec.server_flag,
        client_auth: spec.client_flag,
        sealed,
        on_store: None,
        basis,
    };
    sign_order(app, caller, issuer, order).await
}

/// How an issuance's reservation is made.
enum Reserve {
    /// A group-commit job (PostgreSQL): the basis check and the reservation row in one
    /// transaction, written before the token signs.
    Row(scaivault_store::BatchJob),
    /// Already written to the store's reservation journal (SQLite; see
    /// [`scaivault_store::journal`]). The basis is read from the database right before the token
    /// signs unless nothing can have changed since `seen` (see
    /// [`crate::issuecache::IssueCache::unchanged_since`]), and checked again by the certificate's
    /// commit.
    Journal {
        ticket: Ticket,
        basis: Option<IssueBasis>,
        seen: u64,
    },
}

/// What an issuance's reservation, signature and store came to. A journal ticket comes back when
/// the request has to settle it.
enum Outcome {
    /// The reservation was not written, or its basis changed: nothing was signed.
    NotReserved(scaivault_store::Error, Option<Ticket>),
    /// Lint, token or check failed (or the token did not answer in time): the reservation stands
    /// and must be released.
    SignFailed(ApiError, Option<Ticket>),
    /// Not signed because a commit was refused since the reservation (see `App::store_refused`):
    /// nothing was signed, so the reservation is cancelled even when the failure record cannot
    /// be written.
    NotSigned(ApiError, Option<Ticket>),
    /// Signed but the certificate's commit failed: the certificate never left the process, so
    /// the reservation is released like a failed signature's (the ticket, when the request has
    /// to settle it).
    NotStored(scaivault_store::Error, Option<Ticket>),
    /// Signed and durably stored.
    Stored(Vec<u8>),
    /// Signed, but its basis had changed by the certificate's commit: stored revoked, not to be
    /// returned (names what changed).
    Voided(String),
}

/// The certificate's commit, prepared before the signature.
struct StoreJob {
    row: CertRow,
    stored: Option<StoredKeyRow>,
    on_store: Option<OnStore>,
    done: AuditRecord,
    row_write: RowWrite,
}

/// How the certificate's commit writes its row.
enum RowWrite {
    /// Inserted: the reservation was journaled (SQLite); with the basis to check under the write
    /// lock.
    Insert(Option<IssueBasis>),
    /// Completed: the reservation is a row already (PostgreSQL); with the basis to check again
    /// under the write lock.
    Complete(Option<IssueBasis>),
}

impl StoreJob {
    /// The group-commit job storing the signed certificate `der` with its event and `success`
    /// record. With a journaled reservation whose basis no longer holds (a change that raced the
    /// issuance, or came from a process the daemon cannot see), the certificate is stored revoked
    /// (`cessation_of_operation`) with an `error:issue_basis_changed` record instead, and `voided`
    /// names what changed: it is never returned.
    fn into_job(
        self,
        der: Vec<u8>,
        voided: Arc<std::sync::OnceLock<String>>,
    ) -> scaivault_store::BatchJob {
        let StoreJob {
            mut row,
            stored,
            on_store,
            mut done,
            row_write,
        } = self;
        row.cert_der = Some(der);
        row.status = "valid".into();
        Box::new(move |tx| {
            let basis = match &row_write {
                RowWrite::Insert(b) | RowWrite::Complete(b) => b,
            };
            let changed = match basis.as_ref().map(|b| tx.check_issue_basis(b)) {
                Some(Err(scaivault_store::Error::Changed(what))) => Some(what),
                Some(Err(e)) => return Err(e),
                Some(Ok(())) | None => None,
            };
            if let Some(what) = changed {
                let at = time_util::rfc3339(time_util::now());
                match &row_write {
                    RowWrite::Insert(_) => {
                        row.status = "revoked".into();
                        row.revoked_at = Some(at);
                        row.revocation_reason = Some("cessation_of_operation".into());
                        tx.insert_certificate(&row)?;
                        tx.mark_crl_dirty(&row.issuer_ca_id)?;
                    }
                    RowWrite::Complete(_) => {
                        tx.complete_certificate(&row)?;
                        tx.revoke_certificate(
                            &row.tenant_id,
                            &row.serial,
                            &at,
                            "cessation_of_operation",
                        )?;
                    }
                }
                done.outcome = format!("error:{BASIS_CHANGED}");
                done.detail = Some(format!(
                    "the {what} changed before the certificate was stored: stored revoked, not returned"
                ));
                tx.append_audit(&done)?;
                let _ = voided.set(what);
                return Ok(());
            }
            match &row_write {
                RowWrite::Insert(_) => tx.insert_certificate(&row)?,
                RowWrite::Complete(_) => tx.complete_certificate(&row)?,
            }
            if let Some(k) = &stored {
                tx.insert_stored_key(k)?;
            }
            let at = time_util::rfc3339(time_util::now());
            let data = serde_json::json!({
                "ca_id": row.issuer_ca_id, "serial": scaivault_core::serial::api_form(&row.serial), "role": row.role,
                "common_name": row.common_name, "not_after": row.not_after,
            })
            .to_string();
            tx.insert_event(
                &row.tenant_id,
                "certificate.issued",
                Some(&row.serial),
                &at,
                &data,
            )?;
            if let Some(f) = on_store {
                f(tx, &row.serial)?;
            }
            tx.append_audit(&done).map(|_| ())
        })
    }
}

/// The answer to a reservation the store refused.
fn reservation_refused(e: scaivault_store::Error) -> ApiError {
    match e {
        scaivault_store::Error::Changed(what) => {
            tracing::debug!(%what, "issuance basis changed before the reservation; retried");
            ApiError::conflict(
                BASIS_CHANGED,
                format!("the {what} changed during the request"),
            )
        }
        // Another writer held the database past the wait: the database is unavailable, as for
        // any other write (API.md, `database_unavailable`).
        e if e.is_lock_wait() => e.into(),
        e => {
            tracing::error!(error = %e, "reserving a serial with its audit record failed");
            ApiError::audit_unavailable()
        }
    }
}

/// Whether the request's basis still holds (journaled reservations): known when nothing can have
/// changed since the caller's token was looked up (`seen`), otherwise read from the database.
fn basis_holds(
    db: &Store,
    cache: &IssueCache,
    seen: u64,
    basis: Option<&IssueBasis>,
) -> scaivault_store::Result<()> {
    match basis {
        Some(b) if !cache.unchanged_since(seen) => db.read(|tx| tx.check_issue_basis(b)),
        _ => Ok(()),
    }
}

/// Whether a failed certificate commit means the database refuses writes: any failure but a
/// changed basis (stored revoked, `Voided`) or a missing row; a constraint (`Conflict`: a trigger,
/// a serial clash) included.
fn is_refusal(e: &scaivault_store::Error) -> bool {
    !matches!(
        e,
        scaivault_store::Error::Changed(_) | scaivault_store::Error::NotFound
    )
}

/// Submits the certificate's commit; its reply settles the journal ticket (resolved once the
/// certificate is durable; on failure left for the next start, which revokes the serial) and sends
/// the outcome. A refusal sets `mark` (see [`App::store_refused`]).
fn submit_store(
    db: &Arc<Store>,
    metrics: Arc<crate::metrics::Metrics>,
    mark: &Arc<crate::app::RefusedMark>,
    job: StoreJob,
    der: Vec<u8>,
    ticket: Option<Ticket>,
    tx: tokio::sync::oneshot::Sender<Outcome>,
) {
    let t1 = Instant::now();
    let store = db.clone();
    let voided = Arc::new(std::sync::OnceLock::new());
    let seen = voided.clone();
    let mark = mark.clone();
    let journaled = ticket.is_some();
    let inner = job.into_job(der.clone(), voided);
    let early = mark.clone();
    // The mark is set as soon as the certificate's statements fail, inside the batch, before its
    // commit and `fsync`: the issuances reserved meanwhile see it before they sign.
    let job: scaivault_store::BatchJob = Box::new(move |tx| {
        let r = inner(tx);
        if journaled && r.as_ref().is_err_and(is_refusal) {
            early.set();
        }
        r
    });
    db.submit(
        job,
        Box::new(move |r| {
            metrics.issue_stage(IssueStage::Store, t1.elapsed());
            let outcome = match r {
                Ok(()) => {
                    if let (Some(t), Some(j)) = (ticket, store.journal()) {
                        j.resolve(t);
                    }
                    match seen.get() {
                        Some(what) => Outcome::Voided(what.clone()),
                        None => Outcome::Stored(der),
                    }
                }
                Err(e) => {
                    // (Also when the commit itself failed, after the statements.)
                    if ticket.is_some() && is_refusal(&e) {
                        mark.set();
                    }
                    Outcome::NotStored(e, ticket)
                }
            };
            let _ = tx.send(outcome);
        }),
    );
}

/// Reservation, signature and store one after the other from this task (`[hsm] call_timeout =
/// "0s"`: the signature inline while the token is fast, see [`App::token_call`]).
async fn stepwise(
    app: &App,
    issuer: &Arc<Issuer>,
    tbs: EncodedTbs,
    reserve: Reserve,
    store: StoreJob,
    timer: Instant,
) -> Outcome {
    let ticket = match reserve {
        Reserve::Row(job) => {
            if let Err(e) = app.write_with(job, Durability::Wal).await {
                return Outcome::NotReserved(e, None);
            }
            None
        }
        Reserve::Journal {
            ticket: t,
            basis,
            seen,
        } => {
            if let Err(e) = basis_holds(&app.store, &app.issue_cache, seen, basis.as_ref()) {
                return Outcome::NotReserved(e, Some(t));
            }
            Some(t)
        }
    };
    let timer = stage_done(app, IssueStage::Reserve, timer);
    if ticket.is_some() && app.store_refused.is_set() {
        // A commit was refused since this reservation: not signed (see `chained`).
        return Outcome::NotSigned(ApiError::audit_unavailable(), ticket);
    }
    let iss = issuer.clone();
    let signed = app
        .token_call(move || {
            leaf::sign_leaf(&tbs, &iss.info, iss.signer.as_ref()).map_err(ApiError::from)
        })
        .await;
    let der = match signed {
        Ok(d) => d,
        Err(e) => return Outcome::SignFailed(e, ticket),
    };
    stage_done(app, IssueStage::Sign, timer);
    let (tx, rx) = tokio::sync::oneshot::channel();
    submit_store(
        &app.store,
        app.metrics.clone(),
        &app.store_refused,
        store,
        der.clone(),
        ticket,
        tx,
    );
    rx.await.unwrap_or_else(|_| {
        Outcome::NotStored(
            scaivault_store::Error::Unconfirmed("the store writer ended without an outcome".into()),
            None,
        )
    })
}

/// Where the token call of a [`chained`] issuance is.
struct SignWatch {
    /// [`SignWatch::WAITING`], [`SignWatch::SIGNING`] (queued for a signer thread or in the
    /// token call), [`SignWatch::SIGNED`] or [`SignWatch::ABANDONED`].
    state: AtomicU8,
    /// When the token call was queued for a signer thread, microseconds after `base`.
    began_us: AtomicU64,
    base: Instant,
}

impl SignWatch {
    const WAITING: u8 = 0;
    const SIGNING: u8 = 1;
    const SIGNED: u8 = 2;
    const ABANDONED: u8 = 3;

    fn new() -> Self {
        SignWatch {
            state: AtomicU8::new(Self::WAITING),
            began_us: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    fn begin(&self) {
        let us = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.began_us.store(us, Ordering::SeqCst);
        self.state.store(Self::SIGNING, Ordering::SeqCst);
    }

    /// The token call returned: false when the request gave up on it meanwhile.
    fn finish(&self) -> bool {
        self.state
            .compare_exchange(
                Self::SIGNING,
                Self::SIGNED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// The request gave up on the call (before or during it).
    fn abandoned(&self) -> bool {
        self.state.load(Ordering::SeqCst) == Self::ABANDONED
    }

    /// The token call returned in time: a certificate exists and may have been stored.
    fn signed(&self) -> bool {
        self.state.load(Ordering::SeqCst) == Self::SIGNED
    }

    /// How long the token call has been running, if it is.
    fn running_for(&self) -> Option<std::time::Duration> {
        (self.state.load(Ordering::SeqCst) == Self::SIGNING).then(|| {
            let began = std::time::Duration::from_micros(self.began_us.load(Ordering::SeqCst));
            self.base.elapsed().saturating_sub(began)
        })
    }

    /// Gives up on a running token call: false when it returned meanwhile.
    fn abandon(&self) -> bool {
        self.state
            .compare_exchange(
                Self::SIGNING,
                Self::ABANDONED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }
}

/// Reservation, signature and store chained from thread to thread without waking this task in
/// between: the reservation's commit queues the token call for a signer thread
/// ([`crate::signers`]), whose end submits the certificate's commit, whose reply wakes the
/// request. Two hand-offs fewer than [`stepwise`] (each a wait for a CPU; see
/// docs/PERFORMANCE.md). The token call is still bounded by `limit`, counted from the moment it
/// is queued: when it waits or runs longer, the request gives up with `503 hsm_unavailable`; a
/// call not yet begun is then never made, one under way keeps its signer thread until the module
/// returns (its result is then dropped).
async fn chained(
    app: &App,
    issuer: &Arc<Issuer>,
    tbs: EncodedTbs,
    reserve: Reserve,
    store: StoreJob,
    limit: std::time::Duration,
    timer: Instant,
) -> Outcome {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<Outcome>();
    let watch = Arc::new(SignWatch::new());
    let seen = watch.clone();
    let (metrics, pace, db) = (
        app.metrics.clone(),
        app.token_pace.clone(),
        app.store.clone(),
    );
    let iss = issuer.clone();
    let (ticket, basis, since, job) = match reserve {
        Reserve::Row(job) => (None, None, 0, Some(job)),
        Reserve::Journal {
            ticket,
            basis,
            seen,
        } => (Some(ticket), basis, seen, None),
    };
    let cache = app.issue_cache.clone();
    let (mark, journaled) = (app.store_refused.clone(), ticket.is_some());
    // A journal ticket goes with whoever settles the issuance: the chain, or the request when it
    // gives up on the token call (exactly one of them, see `SignWatch`).
    let slot = Arc::new(std::sync::Mutex::new(ticket));
    let held = slot.clone();
    let take = move || held.lock().ok().and_then(|mut t| t.take());
    // On a signer thread once the reservation is written: the basis check of a journaled
    // reservation, the token call and its check, then the certificate's commit is submitted.
    let sign = move |reserved: scaivault_store::Result<()>| {
        if seen.abandoned() {
            // The request gave up before a signer took the job: nothing to sign or settle.
            return;
        }
        if let Err(e) = reserved.and_then(|()| basis_holds(&db, &cache, since, basis.as_ref())) {
            let _ = tx.send(Outcome::NotReserved(e, take()));
            return;
        }
        metrics.issue_stage(IssueStage::Reserve, timer.elapsed());
        if journaled && mark.is_set() {
            // The database refused a certificate's commit since this issuance reserved in the
            // journal: its own commit would most likely be refused too, after the token signed.
            // Not signed; the reservation is cancelled.
            let _ = tx.send(Outcome::NotSigned(ApiError::audit_unavailable(), take()));
            return;
        }
        let t0 = Instant::now();
        let signed = leaf::sign_leaf(&tbs, &iss.info, iss.signer.as_ref()).map_err(ApiError::from);
        let took = t0.elapsed();
        pace.observe(took);
        if !seen.finish() {
            crate::app::log_late_token_result("sign", signed.is_ok());
            return;
        }
        metrics.issue_stage(IssueStage::Sign, took);
        match signed {
            Ok(der) => submit_store(&db, metrics, &mark, store, der, take(), tx),
            Err(e) => {
                let _ = tx.send(Outcome::SignFailed(e, take()));
            }
        }
    };
    // The call limit counts from the moment the job is queued for a signer thread.
    let (signers, queued) = (app.signers.clone(), watch.clone());
    match job {
        Some(job) => {
            app.store.submit_with(
                job,
                Box::new(move |r| match r {
                    Ok(()) => {
                        queued.begin();
                        signers.run(move || sign(Ok(())));
                    }
                    Err(e) => sign(Err(e)),
                }),
                Durability::Wal,
            );
        }
        None => {
            queued.begin();
            signers.run(move || sign(Ok(())));
        }
    }
    let take = move || slot.lock().ok().and_then(|mut t| t.take());
    let mut wait = limit;
    loop {
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(outcome)) => return outcome,
            // The chain ended without an answer (a panic, or the runtime shutting down). After
            // the signature the certificate's commit may have happened: settled as one that was
            // not confirmed (as `stepwise` does); before it, the reservation is released.
            Ok(Err(_)) if watch.signed() => {
                return Outcome::NotStored(
                    scaivault_store::Error::Unconfirmed(
                        "the issuance ended without an outcome after the signature".into(),
                    ),
                    take(),
                )
            }
            Ok(Err(_)) => {
                return Outcome::SignFailed(
                    ApiError::internal("the issuance ended without an outcome"),
                    take(),
                )
            }
            Err(_) => match watch.running_for() {
                Some(ran) if ran >= limit => {
                    if watch.abandon() {
                        crate::app::log_token_timeout("sign", limit);
                        return Outcome::SignFailed(ApiError::hsm_unavailable(), take());
                    }
                    wait = limit;
                }
                Some(ran) => {
                    wait = limit
                        .saturating_sub(ran)
                        .max(std::time::Duration::from_millis(1));
                }
                // Not signing: waiting for the store (whose own errors come back), or done.
                None => wait = limit,
            },
        }
    }
}

/// Records in `GET /metrics` that `stage` of an issuance, begun at `since`, ended now; returns now.
fn stage_done(app: &App, stage: IssueStage, since: Instant) -> Instant {
    let now = Instant::now();
    app.metrics
        .issue_stage(stage, now.saturating_duration_since(since));
    now
}

/// Reserves a serial, builds, lints, signs, checks and stores a leaf certificate for `order`.
///
/// # Errors
/// `503 audit_unavailable` when the reservation cannot be written; profile, token and store
/// errors.
pub async fn sign_order(
    app: &App,
    caller: &Caller,
    issuer: &Arc<Issuer>,
    order: LeafOrder,
) -> Result<Issued, ApiError> {
    let LeafOrder {
        role,
        subject,
        names,
        spki_der,
        key_type,
        window: (not_before, not_after),
        server_auth,
        client_auth,
        sealed,
        on_store,
        basis,
    } = order;
    require_san(&names)?;
    let serial = Serial::fresh();
    let object = format!("{}:{}", issuer.ca_id, serial.key());
    let now = time_util::rfc3339(time_util::now());
    let mut sans: Vec<String> = names.dns_names.clone();
    sans.extend(names.ips.iter().map(ToString::to_string));
    sans.extend(names.uris.iter().cloned());
    let row = CertRow {
        issuer_ca_id: issuer.ca_id.clone(),
        serial: serial.key(),
        tenant_id: caller.tenant_id.clone(),
        kind: "leaf".into(),
        subject_ca_id: None,
        role,
        common_name: scaivault_core::name::common_name(&subject),
        sans: Some(serde_json::to_string(&sans).map_err(ApiError::internal)?),
        cert_der: None,
        status: "reserved".into(),
        not_before: Some(time_util::rfc3339(not_before)),
        not_after: Some(time_util::rfc3339(not_after)),
        revoked_at: None,
        revocation_reason: None,
        created_at: now,
    };
    let template = LeafTemplate {
        subject,
        spki_der,
        key_type,
        serial: serial.clone(),
        not_before,
        not_after,
        names: LeafNames {
            dns: names.dns_names,
            ips: names.ips,
            uris: names.uris,
        },
        server_auth,
        client_auth,
        urls: LeafUrls::for_ca(&app.config.server.public_base_url, &issuer.ca_id),
    };
    leaf::check_subject(&template, &issuer.info)?;
    leaf::check_name_constraints(&template, &issuer.info)?;
    let tbs = EncodedTbs::new(leaf::leaf_tbs(&template, &issuer.info)?)?;
    let tbs_der = tbs.der().to_vec();
    let done = caller.record("certificate.issue", Some(&object), "success");
    let stored = sealed.map(|(wrapped_key, sealed)| StoredKeyRow {
        issuer_ca_id: issuer.ca_id.clone(),
        serial: serial.key(),
        wrapped_key,
        sealed,
    });
    // The serial and the to-be-signed certificate are written before the token signs: to the
    // reservation journal next to the SQLite file (one page-aligned `write` from this thread,
    // with the `started` record that stands for the attempt if a crash leaves it unfinished), or
    // on PostgreSQL as a row in the shared database that keeps that record (a group commit
    // without its own `fsync`).
    // Either survives a crash of the process and is made durable by the certificate's own commit
    // before anyone sees the certificate; a crash in between leaves the reservation, which the
    // next start revokes with its audit records (`serve::reconcile_reservations`). Then lint,
    // signature on the token and its check; then the certificate with the call's audit record
    // (`success`) in the next group commit.
    let timer = Instant::now();
    // After the database refused a signed certificate's commit, the journal (which does not touch
    // the database) would let the token sign again before that refusal shows: the reservation
    // goes to the database instead, with a probe of the audit record, until a certificate is
    // stored again.
    let (refused, refusals_seen) = app.store_refused.get();
    let journal = app.store.journal().filter(|_| !refused);
    let (reserve, row_write) = match journal {
        Some(j) => {
            let ticket = j
                .reserve(&Reservation {
                    row: row.clone(),
                    tbs_der,
                    started: caller.record("certificate.issue", Some(&object), "started"),
                })
                .map_err(reservation_refused)?;
            let reserve = Reserve::Journal {
                ticket,
                basis: basis.clone(),
                seen: caller.cache_generation,
            };
            (reserve, RowWrite::Insert(basis))
        }
        None => {
            let reserve = row.clone();
            let at_commit = basis.clone();
            let started = scaivault_store::started_json(&caller.record(
                "certificate.issue",
                Some(&object),
                "started",
            ))
            .map_err(ApiError::from)?;
            let probe = refused.then(|| done.clone());
            let job: scaivault_store::BatchJob = Box::new(move |tx| {
                if let Some(b) = &basis {
                    tx.check_issue_basis(b)?;
                }
                if let Some(rec) = &probe {
                    tx.probe_audit(rec)?;
                }
                tx.reserve_certificate(&reserve, &tbs_der, Some(&started))
            });
            (Reserve::Row(job), RowWrite::Complete(at_commit))
        }
    };
    let reserved_serial = row.serial.clone();
    // A failure after the reservation: the serial is released (nothing was signed, or the token's
    // late answer is dropped) with an `error:<code>` record.
    // `unsigned`: the token certainly signed nothing, so a journaled reservation is cancelled
    // even when the failure record cannot be written (otherwise the next start would revoke a
    // serial no certificate carries).
    // `unconfirmed`: the certificate's commit failed, perhaps only on the way back, so the same
    // write settles the serial (a certificate found stored is revoked: `crate::settle`), and
    // when it cannot be written the serial waits for the scheduler to settle it.
    let release = |e: ApiError, ticket: Option<Ticket>, unsigned: bool, unconfirmed: bool| {
        let mut failed = caller.record("certificate.issue", Some(&object), "error:");
        failed.outcome = format!("error:{}", e.code);
        let (ca, sn) = (issuer.ca_id.clone(), reserved_serial.clone());
        let row_reserved = journal.is_none();
        let unsettled = crate::settle::Unsettled {
            tenant_id: caller.tenant_id.clone(),
            ca_id: ca.clone(),
            serial: sn.clone(),
        };
        let shared = app.cluster.is_shared();
        async move {
            let (ca2, sn2) = (ca.clone(), sn.clone());
            let found = crate::settle::Found::default();
            let (job_u, slot) = (unsettled.clone(), found.clone());
            let written = app
                .write(Box::new(move |tx| {
                    if unconfirmed {
                        slot.apply(tx, &job_u, shared)?;
                    } else if row_reserved {
                        // The reservation is a row (PostgreSQL); a journaled one is released
                        // below.
                        tx.release_serial(&ca, &sn)?;
                    }
                    tx.append_audit(&failed).map(|_| ())
                }))
                .await;
            if unconfirmed {
                match &written {
                    Ok(()) => crate::settle::after(app, &unsettled, found.take()),
                    Err(_) => crate::settle::defer(app, unsettled),
                }
            }
            if let (Some(t), Some(j)) = (ticket, journal) {
                if written.is_ok() || unsigned {
                    j.release(t, &ca2, &sn2);
                }
            }
            written.map_err(|w| {
                // The database held by another writer past the wait: it is unavailable, the
                // failure record with it (API.md, `database_unavailable`).
                if w.is_lock_wait() {
                    ApiError::from(w)
                } else {
                    ApiError::audit_unavailable()
                }
            })?;
            Err::<Issued, ApiError>(ApiError { audited: true, ..e })
        }
    };
    let store_job = StoreJob {
        row,
        stored,
        on_store,
        done,
        row_write,
    };
    let outcome = match app.config.hsm.call_limit() {
        Some(limit) => chained(app, issuer, tbs, reserve, store_job, limit, timer).await,
        None => stepwise(app, issuer, tbs, reserve, store_job, timer).await,
    };
    let der = match outcome {
        Outcome::NotReserved(e, ticket) => {
            if let (Some(t), Some(j)) = (ticket, journal) {
                j.release(t, &issuer.ca_id, &reserved_serial);
            }
            return Err(reservation_refused(e));
        }
        Outcome::SignFailed(e, ticket) => return release(e, ticket, false, false).await,
        Outcome::NotSigned(e, ticket) => return release(e, ticket, true, false).await,
        Outcome::NotStored(e, ticket) => {
            // Signed but not stored: the certificate is dropped here, never returned nor logged,
            // so the serial is released as after a failed signature. When even that cannot be
            // written (the database is gone), the journal keeps the reservation and the next
            // start revokes the serial, as after a crash.
            tracing::error!(serial = %serial, ca = %issuer.ca_id, error = %e, "a signed certificate could not be stored: discarded, not returned");
            let unconfirmed = matches!(e, scaivault_store::Error::Unconfirmed(_));
            let failed = ApiError::new(
                rocket::http::Status::ServiceUnavailable,
                "database_unavailable",
                if unconfirmed {
                    "the database did not confirm the certificate's commit; the certificate was \
                     not returned, and is revoked if the commit was applied after all"
                } else {
                    "the database refused to store the certificate; it was discarded and nothing was issued"
                },
            );
            return release(failed, ticket, false, unconfirmed).await;
        }
        Outcome::Voided(what) => {
            tracing::warn!(serial = %serial, ca = %issuer.ca_id, %what, "signed on a basis that changed meanwhile: stored revoked, not returned");
            return Err(reservation_refused(scaivault_store::Error::Changed(what)));
        }
        Outcome::Stored(der) => {
            if refused {
                app.store_refused.clear(refusals_seen);
            }
            der
        }
    };
    crate::metrics::Metrics::bump(&app.metrics.certificates_issued);
    // Its OCSP response ("good"), signed in the background before a relying party asks. In a
    // cluster only the leader pre-signs (into the shared table); a follower's new certificates
    // are signed on first request by whichever node is asked (see `crate::ocsp`).
    if app.cluster.is_leader() {
        match scaivault_core::ocsp::sha1_cert_id(&issuer.info, &serial) {
            Ok(id) => app.ocsp.presign(&issuer.ca_id, id),
            Err(e) => {
                tracing::warn!(serial = %serial, error = %e, "no CertID for OCSP pre-signing");
            }
        }
    }
    Ok(Issued {
        certificate: pem::certificate(&der)?,
        private_key: None,
        ca_chain: issuer.chain.clone(),
        serial,
        not_before: time_util::rfc3339(not_before),
        not_after: time_util::rfc3339(not_after),
        issuing_ca_id: issuer.ca_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::SignWatch;

    #[test]
    fn a_token_call_is_either_finished_or_abandoned_never_both() {
        let w = SignWatch::new();
        // Before the call starts nothing can be abandoned (the request waits for the store).
        assert!(w.running_for().is_none());
        assert!(!w.abandon());
        w.begin();
        assert!(w.running_for().is_some());
        assert!(w.finish());
        assert!(!w.abandon(), "finished first: the result is the request's");
        assert!(w.running_for().is_none());

        let w = SignWatch::new();
        w.begin();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(w.running_for().unwrap() >= std::time::Duration::from_millis(5));
        assert!(!w.abandoned());
        assert!(w.abandon());
        assert!(
            w.abandoned(),
            "a signer thread that takes the job now drops it"
        );
        assert!(!w.finish(), "abandoned first: the late result is dropped");
        assert!(w.running_for().is_none());
    }
}
