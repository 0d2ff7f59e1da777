//! Revocation and CRLs. A revocation commits (with its audit record and a `certificate.revoked`
//! event), marks the issuer's CRL dirty and wakes the scheduler, which rebuilds dirty CRLs after a
//! short debounce; every CA's CRL is also rebuilt once per `crl_interval`. The CRL number is
//! reserved in the database before the CRL is built and published, so numbers strictly increase
//! across restarts; entries are read in chunks of short transactions.

use crate::app::{App, Caller};
use crate::error::ApiError;
use scaivault_core::crl::{self, CrlParams, RevokedEntry};
use scaivault_core::serial::Serial;
use scaivault_core::{duration, pem, sign, time_util};
use scaivault_store::CaRow;
use std::sync::Arc;
use time::Duration;

/// Entries read per transaction while building a CRL.
const CHUNK: usize = 10_000;
/// Revoked certificates stay on the CRL this long after they expire (RFC 5280 §3.3 allows dropping
/// them at expiry; a grace period covers clock skew and late checks).
pub(crate) const EXPIRED_GRACE: Duration = Duration::days(7);

/// The outcome of a revocation.
pub struct Revoked {
    /// Serial, API form.
    pub serial_number: String,
    /// RFC 3339.
    pub revoked_at: String,
    /// Reason name.
    pub reason: String,
}

/// For a serial that is none of the tenant's certificates: when it is a version of one of the
/// tenant's ACME-managed certificates (issued by a public CA, which alone can revoke it), a
/// refusal that says so instead of "not found".
async fn not_ours(app: &App, tenant: &str, serial: &Serial) -> Option<ApiError> {
    let (t, shown) = (tenant.to_owned(), serial.to_string());
    let mc = app
        .db(move |s| Ok(s.read(|tx| tx.managed_cert_of_serial(&t, &shown))?))
        .await
        .ok()??;
    Some(ApiError::bad_request(
        "acme_certificate_not_revocable",
        format!(
            "{serial} is a certificate of ACME-managed certificate {mc}, issued by its ACME CA: \
             only that CA can revoke it, and ScaiVault does not ask it to yet (docs/ACME.md)"
        ),
    ))
}

/// Revokes the caller's tenant's certificate `serial` for `reason`.
///
/// # Errors
/// `400 invalid_reason` / `invalid_serial`, `404 certificate_not_found`, `409 already_revoked`.
pub async fn revoke(
    app: &App,
    caller: &Caller,
    serial: &str,
    reason: &str,
) -> Result<Revoked, ApiError> {
    if crl::reason_code(reason).is_none() {
        return Err(ApiError::bad_request(
            "invalid_reason",
            format!(
                "reason {reason:?} is not one of {}",
                crl::REASONS.join(", ")
            ),
        ));
    }
    let parsed = Serial::parse(serial)?;
    let key = parsed.key();
    let at = time_util::rfc3339(time_util::now());
    let (t, k, a, r) = (
        caller.tenant_id.clone(),
        key.clone(),
        at.clone(),
        reason.to_owned(),
    );
    let rec = caller.record("certificate.revoke", Some(&key), "success");
    let shown = serial.to_owned();
    // In the group commit, like issuance: no second writer connection competing for SQLite's
    // write lock (whose busy handler sleeps in steps of milliseconds).
    let found = Arc::new(std::sync::Mutex::new(None));
    let slot = found.clone();
    let shared = app.cluster.is_shared();
    // A root's own certificate has no parent whose CRL could list it (a root listing itself in
    // its own CRL means nothing to path validation): a root is retired, not revoked. Found in the
    // same transaction (its savepoint undoes the revocation), so a revocation costs no extra read.
    let root = Arc::new(std::sync::OnceLock::new());
    let root_seen = root.clone();
    let res = app.write(Box::new(move |tx| {
        let row = tx.revoke_certificate(&t, &k, &a, &r)?;
        if row.subject_ca_id.as_deref() == Some(row.issuer_ca_id.as_str()) {
            let _ = root_seen.set(row.issuer_ca_id.clone());
            return Err(scaivault_store::Error::Conflict("a root's own certificate".into()));
        }
        if shared {
            // The cluster's stored OCSP answers for it go in the same transaction: no node can
            // read a `good` for it once the revocation is visible (see `crate::ocsp`).
            tx.delete_ocsp_responses(&row.issuer_ca_id, &row.serial)?;
        }
        if let Some(ca) = &row.subject_ca_id {
            // A CA's own certificate: that CA stops issuing.
            let mut ca_row = tx.get_ca(&t, ca)?;
            ca_row.status = "retired".into();
            tx.update_ca(&ca_row)?;
        }
        let data = serde_json::json!({"serial": scaivault_core::serial::api_form(&k), "ca_id": row.issuer_ca_id, "reason": r, "revoked_at": a}).to_string();
        tx.insert_event(&t, "certificate.revoked", Some(&k), &a, &data)?;
        tx.append_audit(&rec)?;
        if let Ok(mut s) = slot.lock() {
            *s = Some(row);
        }
        Ok(())
    }))
    .await
    .map_err(|e| match e {
        _ if root.get().is_some() => {
            let ca = root.get().map_or("", String::as_str);
            ApiError::bad_request(
                "cannot_revoke_root",
                format!(
                    "{shown} is the self-signed certificate of root CA {ca}: a root has no parent \
                     CRL to list it; retire it with DELETE /v1/pki/ca/{ca}"
                ),
            )
        }
        scaivault_store::Error::NotFound => {
            ApiError::not_found("certificate_not_found", "certificate")
        }
        scaivault_store::Error::Conflict(_) => ApiError::conflict(
            "already_revoked",
            format!("certificate {shown} is already revoked"),
        ),
        other => ApiError::from(other),
    });
    let res = match res {
        Err(e) if e.code == "certificate_not_found" => {
            Err(not_ours(app, &caller.tenant_id, &parsed).await.unwrap_or(e))
        }
        other => other,
    };
    res?;
    let row = found
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .ok_or_else(|| ApiError::internal("revocation committed without its row"))?;
    crate::metrics::Metrics::bump(&app.metrics.certificates_revoked);
    if row.subject_ca_id.is_some() {
        // That CA was retired with it.
        app.issue_cache.clear();
    }
    app.after_revocation(&row.issuer_ca_id, &row.serial);
    Ok(Revoked {
        serial_number: Serial::parse(&key)?.to_string(),
        revoked_at: at,
        reason: reason.to_owned(),
    })
}

/// The CA's key and issuer data for signing its CRL (active and retired CAs alike).
async fn crl_issuer(
    app: &App,
    row: &CaRow,
) -> Result<
    (
        scaivault_core::profile::IssuerInfo,
        Arc<dyn scaivault_hsm::Signer>,
    ),
    ApiError,
> {
    let der = row.cert_der.clone().ok_or_else(|| {
        ApiError::conflict(
            "ca_pending_signature",
            format!("CA {} has no certificate yet", row.id),
        )
    })?;
    if row.is_offline() {
        return Err(ApiError::conflict(
            "ca_offline",
            format!(
                "CA {} is offline: its CRL is signed in a key ceremony and imported with POST /v1/pki/ca/{}/crl/import",
                row.id, row.id
            ),
        ));
    }
    let token = app.token.clone();
    let label = row.key_label.clone();
    let signer = app
        .token_blocking("find", move || Ok(token.find(&label)?))
        .await?;
    let cert = pem::from_der(&der)?;
    let info = sign::issuer_info(&cert, signer.algorithm_der())?;
    Ok((info, signer))
}

/// Builds, signs and publishes a new CRL for CA `ca_id`; returns its number and entry count.
///
/// # Errors
/// `404`/`409` for a missing or pending CA; token and store failures.
pub async fn rebuild(app: &App, ca_id: &str) -> Result<(i64, usize), ApiError> {
    rebuild_audited(app, ca_id, None).await
}

/// [`rebuild`], with `audit` (its detail set to the CRL number and entry count) committed in the
/// same transaction as the CRL's publication: the CRL is served only if its record is written.
///
/// # Errors
/// As [`rebuild`]; `503 audit_unavailable` when the record cannot be written.
pub async fn rebuild_audited(
    app: &App,
    ca_id: &str,
    audit: Option<scaivault_store::AuditRecord>,
) -> Result<(i64, usize), ApiError> {
    let row = crate::ca::get_public(app, ca_id).await?;
    let (info, signer) = crl_issuer(app, &row).await?;
    let settings = crate::ca::settings(&row);
    let interval = i64::try_from(duration::parse_seconds(&settings.crl_interval).unwrap_or(3600))
        .unwrap_or(3600);
    let now = time_util::now();
    // Two intervals, but never past the CA certificate's end (as an OCSP response's): nothing
    // it issued outlives it, and a CRL claiming freshness beyond it would mislead.
    let mut next = now + Duration::seconds(interval.saturating_mul(2));
    if info.not_after > now {
        next = next.min(info.not_after);
    }
    let keep_after = time_util::rfc3339(now - EXPIRED_GRACE);
    let store = app.store.clone();
    let id = ca_id.to_owned();
    let path = crl_path(app, ca_id)?;
    let shared = app.cluster.is_shared();
    let metrics = app.metrics.clone();
    let tenant = row.tenant_id.clone();
    app.blocking(move || {
        let started = std::time::Instant::now();
        // The number is durable before anything is published. Reserving it clears the CA's
        // `dirty` mark (a revocation after this point sets it again); should anything after it
        // fail, the mark is set again, so the next scheduler pass retries the rebuild.
        let number = store.write(|tx| tx.next_crl_number(&id))?;
        let build_and_publish = |number: i64| -> Result<(i64, usize), ApiError> {
            let mut after = 0i64;
            let params = CrlParams {
                number: u64::try_from(number).unwrap_or(0),
                this_update: now,
                next_update: next,
            };
            let (der, count) = crl::build(&info, signer.as_ref(), &params, || {
                let chunk = store
                    .read(|tx| tx.revoked_chunk(&id, &keep_after, after, CHUNK))
                    .map_err(|e| scaivault_core::Error::Encode(e.to_string()))?;
                if let Some((rowid, ..)) = chunk.last() {
                    after = *rowid;
                }
                chunk
                    .into_iter()
                    .map(|(_, serial, at, reason)| {
                        Ok(RevokedEntry {
                            serial,
                            revoked_at: time_util::parse_rfc3339(&at)?,
                            reason,
                        })
                    })
                    .collect()
            })?;
            let (this_s, next_s) = (time_util::rfc3339(now), time_util::rfc3339(next));
            let event = serde_json::json!({
                "ca_id": id, "crl_number": number, "entries": count,
                "this_update": this_s, "next_update": next_s, "source": "rebuild",
            })
            .to_string();
            let audit = audit.map(|mut r| {
                r.detail = Some(format!("crl_number={number} entries={count}"));
                r
            });
            publish_crl(
                (!shared).then_some(path.as_path()),
                &id,
                number,
                &der,
                || {
                    let audited = audit.is_some();
                    store
                        .write(|tx| {
                            if shared {
                                // Every node serves it from the database (a newer number reserved
                                // meanwhile wins).
                                tx.store_crl_der(&id, number, &der)?;
                            }
                            tx.publish_crl(&id, number, &this_s, &next_s)?;
                            tx.insert_event(&tenant, "crl.generated", Some(&id), &this_s, &event)?;
                            match &audit {
                                Some(r) => tx.append_audit(r).map(|_| ()),
                                None => Ok(()),
                            }
                        })
                        .map_err(|e| {
                            if audited {
                                ApiError::from_audited_write(e)
                            } else {
                                e.into()
                            }
                        })
                },
            )?;
            tracing::info!(ca = %id, number, entries = count, bytes = der.len(), "CRL published");
            crate::metrics::Metrics::bump(&metrics.crl_builds);
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            metrics
                .crl_last_build_ms
                .store(ms, std::sync::atomic::Ordering::Relaxed);
            metrics.crl_last_entries.store(
                u64::try_from(count).unwrap_or(u64::MAX),
                std::sync::atomic::Ordering::Relaxed,
            );
            Ok((number, count))
        };
        let rebuilt = build_and_publish(number);
        if rebuilt.is_ok() {
            crl_retries().remove(&id);
        } else {
            // The database write first, the short lock after it.
            if let Err(e) = store.write(|tx| tx.mark_crl_dirty(&id)) {
                tracing::warn!(ca = %id, error = %e, "cannot mark a failed CRL rebuild for a retry");
            }
            let mut retries = crl_retries();
            let (failures, at) = retries
                .entry(id.clone())
                .or_insert((0, std::time::Instant::now()));
            *failures = failures.saturating_add(1);
            *at = std::time::Instant::now() + crl_retry_wait(*failures);
        }
        rebuilt
    })
    .await
}

/// CAs whose last CRL rebuild failed: how many times in a row, and when the scheduler may try
/// again. A failed rebuild is due again once that time has come, whether or not its `dirty` mark
/// could be written, and not before, however dirty: a token that stays away must not have every
/// pass reserve a CRL number and call it.
static CRL_RETRY: std::sync::Mutex<std::collections::BTreeMap<String, (u32, std::time::Instant)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn crl_retries(
) -> std::sync::MutexGuard<'static, std::collections::BTreeMap<String, (u32, std::time::Instant)>> {
    CRL_RETRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The wait after `failures` failed rebuilds in a row: 10 s, doubling, at most 10 minutes.
fn crl_retry_wait(failures: u32) -> std::time::Duration {
    let doublings = failures.clamp(1, 7) - 1;
    std::time::Duration::from_secs(10 << doublings).min(std::time::Duration::from_secs(600))
}

/// A download that finds no CRL builds one, unless the last build of that CA failed and its
/// backoff has not passed: then `503 crl_unavailable` (an unauthenticated client must not make the
/// token try again and again).
fn first_build_allowed(ca_id: &str) -> Result<(), ApiError> {
    match crl_retry_due(ca_id) {
        Some(false) => Err(ApiError::new(
            rocket::http::Status::ServiceUnavailable,
            "crl_unavailable",
            "the CRL could not be built; it is tried again shortly",
        )),
        _ => Ok(()),
    }
}

/// `Some(due)` for a CA whose last rebuild failed (due once its wait is over), `None` otherwise.
fn crl_retry_due(ca_id: &str) -> Option<bool> {
    crl_retries()
        .get(ca_id)
        .map(|(_, at)| std::time::Instant::now() >= *at)
}

/// Where the published CRL of `ca_id` lives with SQLite: `crl/<ca_id>.crl` next to the database.
/// With PostgreSQL the CRL is a row every node reads (`crl_blobs`).
fn crl_path(app: &App, ca_id: &str) -> Result<std::path::PathBuf, ApiError> {
    // CA ids are `ca_` and 32 hex digits (imported CAs keep the same form); anything longer than a
    // generous 128 bytes is no CA's, and would only make the file system answer "name too long"
    // (a 503 and an error in the log for every such request).
    if ca_id.is_empty()
        || ca_id.len() > 128
        || !ca_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::not_found("ca_not_found", "CA"));
    }
    let db = app.config.db_path();
    let dir = db
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    Ok(dir.join("crl").join(format!("{ca_id}.crl")))
}

/// After the SQLite database was restored from a backup, the published CRL files next to it
/// (`crl/<ca_id>.crl`) can be newer than the database: they carry a higher number and list
/// revocations made after the backup. Served as they are, and then rebuilt from the database,
/// they would be followed by a different CRL with a number relying parties already hold, and the
/// later revocations would be dropped. So at start, for every file whose number is above the
/// stored one: the stored number is raised to it, every serial it lists is recorded as revoked
/// (with its time and reason; a serial the database does not know at all as a revoked serial
/// without a certificate), and the CRL is marked for a rebuild. Returns how many CAs were behind.
///
/// # Errors
/// The database cannot be written. A file that cannot be read or parsed, or of an unknown CA, is
/// skipped with a warning.
pub fn adopt_published_crls(
    store: &scaivault_store::Store,
    db_path: &std::path::Path,
) -> Result<usize, crate::serve::StartError> {
    let dir = db_path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
        .join("crl");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut adopted = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(ca_id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".crl"))
            .map(str::to_owned)
        else {
            continue;
        };
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|der| crl::read_published(&der).map_err(|e| e.to_string()));
        let (number, revoked) = match parsed {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a published CRL file cannot be read: left alone");
                continue;
            }
        };
        let res = store.write(|tx| {
            let stored = tx.published_crl(&ca_id)?.map_or(0, |s| s.0);
            if number <= stored {
                return Ok(None);
            }
            let ca = tx.get_ca_any_tenant(&ca_id)?;
            let ca_end = ca.not_after.clone().unwrap_or_default();
            let mut recorded = 0usize;
            for e in &revoked {
                let at = time_util::rfc3339(e.revoked_at);
                let reason = e.reason.as_deref().unwrap_or("unspecified");
                if tx.adopt_revocation(&ca.id, &ca.tenant_id, &e.serial, &at, reason, &ca_end)? {
                    recorded += 1;
                }
            }
            tx.adopt_crl_number(&ca.id, number)?;
            tx.append_audit(&scaivault_store::AuditRecord {
                time: time_util::rfc3339(time_util::now()),
                tenant_id: Some(ca.tenant_id.clone()),
                token_id: Some("daemon".into()),
                action: "crl.adopt".into(),
                object_id: Some(ca.id.clone()),
                outcome: "success".into(),
                request_id: None,
                detail: Some(format!(
                    "the published CRL {number} is newer than the database's {stored} (restored \
                     from a backup?): number raised, {recorded} revocations recorded"
                )),
            })?;
            Ok(Some((stored, recorded)))
        });
        match res {
            Ok(Some((stored, recorded))) => {
                adopted += 1;
                tracing::warn!(ca = %ca_id, published = number, stored, revocations_recorded = recorded, "the published CRL is newer than the database (restored from a backup?): its number and revocations adopted, a new CRL follows");
            }
            Ok(None) => {}
            Err(scaivault_store::Error::NotFound) => {
                tracing::warn!(path = %path.display(), "a CRL file of a CA the database does not know: left alone");
            }
            Err(e) => {
                return Err(crate::serve::StartError(format!(
                    "cannot adopt the published CRL {}: {e}",
                    path.display()
                )))
            }
        }
    }
    Ok(adopted)
}

/// The CRL number each CA's file holds, as written by this process.
static CRL_FILES: std::sync::Mutex<std::collections::BTreeMap<String, i64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Publishes CRL `number` of CA `ca_id`: `commit` records it in the database (its state, event
/// and audit record, in one transaction) and, with SQLite, the file is written around it — staged
/// (written and synced under a temporary name) before the commit and renamed into place after it,
/// so that a CRL is served only once its commit succeeded, and a commit is made only for a CRL
/// whose bytes are on disk. Rebuilds run concurrently (the API, the scheduler, revocations): one
/// at a time publishes, and a CRL whose number was overtaken while it was being signed is
/// committed (the database keeps the higher number) but not written over the newer file.
fn publish_crl(
    path: Option<&std::path::Path>,
    ca_id: &str,
    number: i64,
    der: &[u8],
    commit: impl FnOnce() -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let Some(path) = path else {
        return commit();
    };
    let mut written = CRL_FILES
        .lock()
        .map_err(|_| ApiError::internal("CRL file lock poisoned"))?;
    if written.get(ca_id).is_some_and(|n| *n >= number) {
        tracing::debug!(ca = %ca_id, number, "a newer CRL is published already");
        return commit();
    }
    let staged = stage_crl_file(path, der)?;
    if let Err(e) = commit() {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    install_crl_file(&staged, path)?;
    written.insert(ca_id.to_owned(), number);
    Ok(())
}

fn crl_file_error(path: &std::path::Path, what: &str, e: &std::io::Error) -> ApiError {
    tracing::error!(path = %path.display(), error = %e, "{what}");
    ApiError::new(
        rocket::http::Status::ServiceUnavailable,
        "crl_unavailable",
        "the CRL could not be written",
    )
}

/// Writes `der` next to `path` under a temporary name, synced; returns that name.
fn stage_crl_file(path: &std::path::Path, der: &[u8]) -> Result<std::path::PathBuf, ApiError> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| ApiError::internal("CRL path has no directory"))?;
    let io = |what: &str, e: std::io::Error| crl_file_error(path, what, &e);
    std::fs::create_dir_all(dir).map_err(|e| io("creating the CRL directory failed", e))?;
    let tmp = path.with_extension("crl.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating the CRL file failed", e))?;
    if let Err(e) = f.write_all(der).and_then(|()| f.sync_all()) {
        drop(f);
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing the CRL file failed", e));
    }
    Ok(tmp)
}

/// Renames the staged file over `path` (atomic) and syncs the directory.
fn install_crl_file(staged: &std::path::Path, path: &std::path::Path) -> Result<(), ApiError> {
    let io = |what: &str, e: std::io::Error| crl_file_error(path, what, &e);
    std::fs::rename(staged, path).map_err(|e| io("publishing the CRL file failed", e))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the CRL directory failed", e))?;
    }
    Ok(())
}

/// What identifies a published CRL's version without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CrlVersion {
    /// SQLite: the file's inode, length and modification time (every publication renames a new
    /// file over the old one).
    File {
        ino: u64,
        len: u64,
        modified: Option<std::time::SystemTime>,
    },
    /// PostgreSQL: the stored CRL number (it only grows).
    Number(i64),
}

/// The CRL last served per CA, with its version. A CRL of a million entries is ~50 MB: a GET reads
/// it again only when a newer one was published (a `stat` of the file, or the stored number),
/// and answers share one copy. Reading a new one is done by one request at a time (`fill`):
/// relying parties asking together right after a publication wait for that one read instead of
/// each holding a copy of its own.
#[derive(Debug, Default)]
pub struct CrlCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, CachedCrl>>,
    fill: tokio::sync::Mutex<()>,
    /// Held while a GET builds a CA's first CRL: the GETs that came with it wait and read that
    /// one, instead of each having the token sign a CRL (the endpoint needs no token).
    first_build: tokio::sync::Mutex<()>,
}

/// A cached CRL: its version and DER.
type CachedCrl = (CrlVersion, Arc<[u8]>);

impl CrlCache {
    fn get(&self, ca_id: &str, version: &CrlVersion) -> Option<Arc<[u8]>> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(ca_id)
            .filter(|(v, _)| v == version)
            .map(|(_, der)| der.clone())
    }

    fn put(&self, ca_id: &str, version: CrlVersion, der: Arc<[u8]>) -> Arc<[u8]> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.insert(ca_id.to_owned(), (version, der.clone()));
        der
    }
}

fn file_version(meta: &std::fs::Metadata) -> CrlVersion {
    use std::os::unix::fs::MetadataExt;
    CrlVersion::File {
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    }
}

fn crl_read_failed(path: &std::path::Path, e: &std::io::Error) -> ApiError {
    tracing::error!(path = %path.display(), error = %e, "reading the CRL failed");
    ApiError::new(
        rocket::http::Status::ServiceUnavailable,
        "crl_unavailable",
        "the CRL could not be read",
    )
}

/// The published CRL file at `path`, from the cache when it has not changed; `None` when there
/// is none. The version is taken before the read, and a publication renames a complete file into
/// place, so what is read is at least that version: a copy cached under an older version than
/// its content is read again on the next request, never served stale.
async fn read_published(
    app: &App,
    ca_id: &str,
    path: &std::path::Path,
) -> Result<Option<Arc<[u8]>>, ApiError> {
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crl_read_failed(path, &e)),
    };
    if let Some(der) = app.crls.get(ca_id, &file_version(&meta)) {
        return Ok(Some(der));
    }
    let _one = app.crls.fill.lock().await;
    // Read by the request that held the lock before this one?
    if let Ok(meta) = tokio::fs::metadata(path).await {
        if let Some(der) = app.crls.get(ca_id, &file_version(&meta)) {
            return Ok(Some(der));
        }
    }
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || read_shared(&owned))
        .await
        .map_err(|e| ApiError::internal(format!("reading the CRL: {e}")))?;
    match read {
        Ok(Some((version, der))) => Ok(Some(app.crls.put(ca_id, version, der))),
        Ok(None) => Ok(None),
        Err(e) => Err(crl_read_failed(path, &e)),
    }
}

/// The file at `path` and its version (from the open file: a publication renames a new file over
/// the path, so what is read matches the version), read straight into one shared buffer; `None`
/// when there is no file.
fn read_shared(path: &std::path::Path) -> std::io::Result<Option<(CrlVersion, Arc<[u8]>)>> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let len = usize::try_from(meta.len()).map_err(std::io::Error::other)?;
    // One allocation of the final size (`repeat_n` has an exact length), filled in place.
    let mut der: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
    let buf = Arc::get_mut(&mut der).ok_or_else(|| std::io::Error::other("shared too early"))?;
    f.read_exact(buf)?;
    Ok(Some((file_version(&meta), der)))
}

/// The published CRL of `ca_id` (built now when there is none yet), DER.
///
/// # Errors
/// `404`, `409 ca_pending_signature`.
pub async fn current(app: &App, ca_id: &str) -> Result<Arc<[u8]>, ApiError> {
    let path = crl_path(app, ca_id)?;
    if app.cluster.is_shared() {
        return current_shared(app, ca_id).await;
    }
    if let Some(der) = read_published(app, ca_id, &path).await? {
        return Ok(der);
    }
    let row = crate::ca::get_public(app, ca_id).await?;
    if row.is_offline() {
        return Err(ApiError::new(
            rocket::http::Status::NotFound,
            "crl_not_found",
            format!("no CRL has been imported for offline CA {ca_id} yet"),
        ));
    }
    let _first = app.crls.first_build.lock().await;
    if let Some(der) = read_published(app, ca_id, &path).await? {
        return Ok(der);
    }
    first_build_allowed(ca_id)?;
    rebuild(app, ca_id).await?;
    read_published(app, ca_id, &path)
        .await?
        .ok_or_else(|| ApiError::internal("CRL missing right after it was built"))
}

/// [`current`] with PostgreSQL: the CRL published by whichever node built or imported it. A GET
/// reads the stored number and the DER only when this node has not cached that number.
async fn current_shared(app: &App, ca_id: &str) -> Result<Arc<[u8]>, ApiError> {
    async fn stored(app: &App, ca_id: &str) -> Result<Option<Arc<[u8]>>, ApiError> {
        let id = ca_id.to_owned();
        let number = app
            .db(move |s| Ok(s.read(|tx| tx.crl_number_stored(&id))?))
            .await?;
        let Some(number) = number else {
            return Ok(None);
        };
        if let Some(der) = app.crls.get(ca_id, &CrlVersion::Number(number)) {
            return Ok(Some(der));
        }
        let _one = app.crls.fill.lock().await;
        // Read by the request that held the lock before this one?
        if let Some(der) = app.crls.get(ca_id, &CrlVersion::Number(number)) {
            return Ok(Some(der));
        }
        let id = ca_id.to_owned();
        let found = app.db(move |s| Ok(s.read(|tx| tx.crl_der(&id))?)).await?;
        Ok(found.map(|(n, der)| app.crls.put(ca_id, CrlVersion::Number(n), der.into())))
    }
    if let Some(der) = stored(app, ca_id).await? {
        return Ok(der);
    }
    let row = crate::ca::get_public(app, ca_id).await?;
    if row.is_offline() {
        return Err(ApiError::new(
            rocket::http::Status::NotFound,
            "crl_not_found",
            format!("no CRL has been imported for offline CA {ca_id} yet"),
        ));
    }
    let _first = app.crls.first_build.lock().await;
    if let Some(der) = stored(app, ca_id).await? {
        return Ok(der);
    }
    first_build_allowed(ca_id)?;
    rebuild(app, ca_id).await?;
    stored(app, ca_id)
        .await?
        .ok_or_else(|| ApiError::internal("CRL missing right after it was built"))
}

/// The outcome of a CRL import.
pub struct Imported {
    /// Its CRL number.
    pub crl_number: i64,
    /// How many certificates it lists.
    pub entries: usize,
    /// RFC 3339.
    pub this_update: String,
    /// RFC 3339.
    pub next_update: String,
    /// The tenant's CAs whose certificates this CRL revokes: they were retired (stop issuing).
    pub retired_cas: Vec<String>,
}

/// Imports are serialised so that "number above the stored one, file written, number stored"
/// holds as one step.
static IMPORT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Publishes a CRL that an offline CA signed in a key ceremony (`scaivault ceremony sign-crl`).
/// The CRL must pass [`crl::check_external`] against the CA's certificate and carry a CRL number
/// above the one published now. The file is written before the number is stored: a failure in
/// between leaves a newer valid CRL published and the same import can be repeated.
///
/// # Errors
/// `404 ca_not_found`; `409 ca_not_offline` for a CA whose key is on the token (it signs its own
/// CRLs), `409 crl_number_not_increasing`; `400 invalid_crl` and the codes of
/// [`crl::check_external`].
pub async fn import(
    app: &App,
    caller: &Caller,
    ca_id: &str,
    crl_text: &str,
) -> Result<Imported, ApiError> {
    let row = crate::ca::get(app, &caller.tenant_id, ca_id).await?;
    if !row.is_offline() {
        return Err(ApiError::conflict(
            "ca_not_offline",
            format!(
                "CA {ca_id} holds its key on the token and signs its own CRLs (POST /v1/pki/ca/{ca_id}/crl)"
            ),
        ));
    }
    let cert = pem::from_der(row.cert_der.as_deref().unwrap_or_default())?;
    let der = crl_der(crl_text)?;
    let info = crl::check_external(&der, &cert, time_util::now())?;
    let retire = revoked_children(app, &caller.tenant_id, &cert, &info.revoked).await?;
    let path = crl_path(app, ca_id)?;
    let shared = app.cluster.is_shared();
    let store = app.store.clone();
    let id = ca_id.to_owned();
    let tenant = caller.tenant_id.clone();
    let mut rec = caller.record("crl.import", Some(ca_id), "success");
    rec.detail = Some(format!(
        "crl_number={} entries={} retired={}",
        info.number,
        info.entries,
        retire.join(",")
    ));
    let this_update = time_util::rfc3339(info.this_update);
    let next_update = time_util::rfc3339(info.next_update);
    let event = serde_json::json!({
        "ca_id": ca_id,
        "crl_number": info.number,
        "entries": info.entries,
        "this_update": this_update,
        "next_update": next_update,
        "source": "import",
    })
    .to_string();
    let (t, n) = (this_update.clone(), next_update.clone());
    let number = info.number;
    let retired = retire.clone();
    app.blocking(move || {
        let _guard = IMPORT_LOCK
            .lock()
            .map_err(|_| ApiError::internal("CRL import lock poisoned"))?;
        let current = store.read(|tx| tx.published_crl(&id))?;
        let stale = |have: i64| {
            ApiError::conflict(
                "crl_number_not_increasing",
                format!("the CRL number {number} is not above the published CRL number {have}"),
            )
        };
        if let Some((have, ..)) = current {
            if number <= have {
                return Err(stale(have));
            }
        }
        let now = time_util::rfc3339(time_util::now());
        publish_crl(
            (!shared).then_some(path.as_path()),
            &id,
            number,
            &der,
            || {
                store
                    .write(|tx| {
                        if !tx.import_crl(&id, number, &t, &n)? {
                            return Err(scaivault_store::Error::Conflict(
                                "crl number not increasing".into(),
                            ));
                        }
                        if shared && !tx.store_crl_der(&id, number, &der)? {
                            return Err(scaivault_store::Error::Conflict(
                                "crl number not increasing".into(),
                            ));
                        }
                        for child in &retire {
                            let mut row = tx.get_ca(&tenant, child)?;
                            row.status = "retired".into();
                            tx.update_ca(&row)?;
                        }
                        tx.insert_event(&tenant, "crl.generated", Some(&id), &now, &event)?;
                        tx.append_audit(&rec).map(|_| ())
                    })
                    .map_err(ApiError::from_audited_write)
            },
        )?;
        tracing::info!(ca = %id, number, entries = info.entries, "imported CRL published");
        Ok(())
    })
    .await?;
    app.issue_cache.clear();
    Ok(Imported {
        crl_number: info.number,
        entries: info.entries,
        this_update,
        next_update,
        retired_cas: retired,
    })
}

/// The tenant's active CAs whose certificate `issuer` signed and whose serial is in `revoked`.
async fn revoked_children(
    app: &App,
    tenant_id: &str,
    issuer: &x509_cert::Certificate,
    revoked: &[String],
) -> Result<Vec<String>, ApiError> {
    use der::Encode as _;
    if revoked.is_empty() {
        return Ok(Vec::new());
    }
    let revoked: std::collections::HashSet<String> = revoked.iter().cloned().collect();
    let subject = issuer
        .tbs_certificate
        .subject
        .to_der()
        .map_err(ApiError::internal)?;
    let spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(ApiError::internal)?;
    let tenant = tenant_id.to_owned();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (t, c) = (tenant.clone(), cursor.clone());
        let page = app
            .db(move |s| {
                s.read(|tx| tx.list_cas(&t, c.as_deref(), 1000))
                    .map_err(ApiError::from)
            })
            .await?;
        for row in &page.items {
            let (Some(der), Some(serial)) = (&row.cert_der, &row.serial) else {
                continue;
            };
            if row.status != "active" || !revoked.contains(serial) {
                continue;
            }
            let Ok(cert) = pem::from_der(der) else {
                continue;
            };
            if cert.tbs_certificate.issuer.to_der().ok().as_deref() == Some(subject.as_slice())
                && scaivault_core::verify::verify_certificate(&cert, &spki).is_ok()
            {
                out.push(row.id.clone());
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(out)
}

/// The DER of a CRL given as PEM (`X509 CRL`) or as base64 DER.
fn crl_der(text: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |d: String| ApiError::bad_request("invalid_crl", d);
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        let (label, der) = scaivault_core::pem::decode_lax(t)
            .map_err(|e| bad(format!("the CRL PEM does not decode: {e}")))?;
        if label != "X509 CRL" {
            return Err(bad(format!(
                "expected an X509 CRL PEM block, got {label:?}"
            )));
        }
        Ok(der)
    } else {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(t.split_whitespace().collect::<String>())
            .map_err(|_| bad("crl_pem is neither PEM nor base64 DER".into()))
    }
}

/// One scheduler pass: rebuilds every CRL that is dirty or one `crl_interval` old.
pub async fn rebuild_due(app: &App) {
    let horizon = time_util::rfc3339(time_util::now() + Duration::days(62));
    let candidates = match app
        .db(move |s| {
            s.read(|tx| tx.cas_needing_crl(&horizon))
                .map_err(ApiError::from)
        })
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "CRL scheduler: cannot list CAs");
            return;
        }
    };
    for ca_id in candidates {
        let id = ca_id.clone();
        let state = app
            .db(move |s| s.read(|tx| tx.published_crl(&id)).map_err(ApiError::from))
            .await;
        let due = match state {
            Ok(Some((_, Some(this), Some(_), dirty))) => {
                let row = match crate::ca::get_public(app, &ca_id).await {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                let interval = duration::parse_seconds(&crate::ca::settings(&row).crl_interval)
                    .unwrap_or(3600);
                // One interval after the last build (its nextUpdate, two intervals on, may be
                // cut to the CA's end: counting back from it would rebuild on every pass).
                let rebuild_at = time_util::parse_rfc3339(&this)
                    .map(|t| t + Duration::seconds(i64::try_from(interval).unwrap_or(3600)));
                dirty || rebuild_at.is_ok_and(|t| t <= time_util::now())
            }
            Ok(_) => true,
            Err(_) => false,
        };
        // After a failed rebuild, its backoff decides.
        let due = crl_retry_due(&ca_id).unwrap_or(due);
        if due {
            if let Err(e) = rebuild(app, &ca_id).await {
                tracing::warn!(ca = %ca_id, error = %e, "CRL rebuild failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crl_retry_waits_double_up_to_ten_minutes() {
        let w = |n| super::crl_retry_wait(n).as_secs();
        assert_eq!(
            (w(1), w(2), w(3), w(6), w(7), w(50)),
            (10, 20, 40, 320, 600, 600)
        );
    }
}
