//! The application state shared by the HTTP layer, the CLI and the scheduler: configuration, the
//! store, the token, and the helpers that run blocking work off the async runtime and write audit
//! records.

use crate::auth::{self, Perm};
use crate::config::Config;
use crate::error::ApiError;
use scaivault_core::constraints::NameRules;
use scaivault_core::profile::IssuerInfo;
use scaivault_hsm::Signer;
use scaivault_hsm::Token;
use scaivault_store::{AuditRecord, Store, TokenRow};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Who is calling: resolved from the bearer token by the request guard.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's tenant.
    pub tenant_id: String,
    /// The token id (never the token).
    pub token_id: String,
    /// The token's policies.
    pub policies: Vec<String>,
    /// This request's id.
    pub request_id: String,
    /// [`crate::issuecache::IssueCache::generation`] before this caller's token was looked up:
    /// an issuance relying on cached rows checks them against the database before signing
    /// unless nothing may have changed since ([`crate::issuecache::IssueCache::unchanged_since`]).
    pub cache_generation: u64,
}

impl Caller {
    /// An audit record for this caller.
    pub fn record(&self, action: &str, object_id: Option<&str>, outcome: &str) -> AuditRecord {
        AuditRecord {
            time: scaivault_core::time_util::rfc3339(scaivault_core::time_util::now()),
            tenant_id: Some(self.tenant_id.clone()),
            token_id: Some(self.token_id.clone()),
            action: action.to_owned(),
            // An id comes from the caller (a path segment): a bearer token given there by
            // mistake must not reach the audit trail, which cannot be edited afterwards.
            object_id: object_id.map(|o| crate::auth::redact_tokens(o).into_owned()),
            outcome: outcome.to_owned(),
            request_id: Some(self.request_id.clone()),
            detail: None,
        }
    }
}

/// Shared state. Cheap to clone (everything shared sits behind an `Arc`): the HTTP layer and the
/// scheduler each hold one.
#[derive(Clone)]
pub struct App {
    /// Loaded configuration.
    pub config: Config,
    /// Metadata store.
    pub store: Arc<Store>,
    /// The token with the CA keys.
    pub token: Arc<dyn Token>,
    /// Unix time of the scheduler's last tick.
    pub scheduler_beat: Arc<AtomicI64>,
    /// Pre-generated RSA keys for issuance.
    pub rsa_pool: Arc<crate::leafkey::RsaPool>,
    /// Issuing CAs ready to sign, by CA id (checked against the stored serial on every use).
    pub issuers: Arc<RwLock<HashMap<String, Arc<Issuer>>>>,
    /// Wakes the scheduler after a revocation (CRLs are rebuilt after a short debounce).
    pub crl_wake: Arc<tokio::sync::Notify>,
    /// Wakes the scheduler for a whole pass now (this node just became the cluster's leader).
    pub sched_wake: Arc<tokio::sync::Notify>,
    /// Wakes the ACME task for a pass now (this node just became the cluster's leader).
    pub acme_wake: Arc<tokio::sync::Notify>,
    /// This node's place among the nodes sharing the database.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Signed OCSP responses (invalidated per certificate on revocation).
    pub ocsp: Arc<crate::ocsp::OcspCache>,
    /// How fast the token has been answering (decides inline vs blocking-pool signing).
    pub token_pace: Arc<TokenPace>,
    /// The threads that make leaf signatures (see [`crate::signers`]).
    pub signers: crate::signers::Signers,
    /// The CRLs last served, so that a GET does not read an unchanged CRL again.
    pub crls: Arc<crate::revoke::CrlCache>,
    /// Counters for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Request rate limits.
    pub limits: Arc<crate::limits::RateLimits>,
    /// The ACME client's shared state (challenge answers, running orders).
    pub acme: Arc<crate::acme::Runtime>,
    /// Tokens and roles for the issuance path (SQLite; checked at each reservation).
    pub issue_cache: Arc<crate::issuecache::IssueCache>,
    /// Set when the database refused a signed certificate's commit (SQLite): until an issuance
    /// is stored again, issuances reserve their serial in the database, with a probe of their
    /// audit record, instead of the journal, so that a database that refuses writes is found
    /// before the token signs (see `issue::sign_order`).
    pub store_refused: Arc<RefusedMark>,
    /// Active CAs whose key the last check did not find on the token ([`crate::sched`]): they
    /// cannot sign until it is back, and health counts them.
    pub missing_ca_keys: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Serials whose certificate commit was not confirmed and whose settling write failed
    /// ([`crate::settle`]): the scheduler tries again on every tick.
    pub unsettled: Arc<std::sync::Mutex<Vec<crate::settle::Unsettled>>>,
}

/// Whether the database refused a signed certificate's commit (see [`App::store_refused`]), with a
/// count of refusals so that a stored certificate clears only a mark no newer refusal set.
#[derive(Debug, Default)]
pub struct RefusedMark {
    set: std::sync::atomic::AtomicBool,
    refusals: AtomicU64,
}

impl RefusedMark {
    /// Records a refusal.
    pub fn set(&self) {
        self.refusals.fetch_add(1, Ordering::AcqRel);
        self.set.store(true, Ordering::Release);
    }

    /// Whether the mark is set, and the refusal count to pass to [`RefusedMark::clear`].
    pub fn get(&self) -> (bool, u64) {
        let n = self.refusals.load(Ordering::Acquire);
        (self.set.load(Ordering::Acquire), n)
    }

    /// Whether the mark is set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Clears the mark after a certificate was stored, unless a refusal came after `seen` (the
    /// count when that issuance began).
    pub fn clear(&self, seen: u64) {
        if self.refusals.load(Ordering::Acquire) == seen {
            self.set.store(false, Ordering::Release);
        }
    }
}

/// A moving average of token call durations, in microseconds.
#[derive(Debug)]
pub struct TokenPace {
    avg_us: AtomicU64,
}

impl TokenPace {
    /// Calls slower than this on average go to the blocking pool.
    pub const INLINE_LIMIT_US: u64 = 500;

    /// Starts out assuming a slow token (first calls go to the blocking pool and measure it).
    pub fn new() -> Self {
        TokenPace {
            avg_us: AtomicU64::new(Self::INLINE_LIMIT_US * 2),
        }
    }

    /// Whether recent calls were fast enough to run inline.
    pub fn is_fast(&self) -> bool {
        self.avg_us.load(Ordering::Relaxed) < Self::INLINE_LIMIT_US
    }

    /// Folds one call's duration into the average (weight 1/8; races only lose a sample).
    pub fn observe(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX / 16);
        let old = self.avg_us.load(Ordering::Relaxed);
        let new = old.saturating_mul(7).saturating_add(us) / 8;
        self.avg_us.store(new, Ordering::Relaxed);
    }
}

impl Default for TokenPace {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs a token call that outlived its request's `call_timeout` (the request answers 503).
pub(crate) fn log_token_timeout(what: &str, limit: std::time::Duration) {
    tracing::error!(
        operation = what,
        limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        "the token did not answer in time: answering 503; the call keeps its blocking thread \
         until the module returns"
    );
}

/// Logs a token call that returned after its request gave up on it (its result is dropped).
pub(crate) fn log_late_token_result(what: &str, ok: bool) {
    tracing::warn!(
        operation = what,
        ok,
        "a token call returned after its request had given up on it"
    );
}

/// An active CA ready to sign: its issuer data, its key on the token, its chain.
pub struct Issuer {
    /// CA id.
    pub ca_id: String,
    /// The CA certificate's serial (canonical), to notice a replaced certificate.
    pub serial: String,
    /// Issuer name, key id, validity end, public key, algorithm.
    pub info: IssuerInfo,
    /// The CA key on the token.
    pub signer: Arc<dyn Signer>,
    /// PEM certificates from this CA up to its root.
    pub chain: Vec<String>,
}

impl App {
    /// Runs `f` with the store on the blocking pool.
    ///
    /// # Errors
    /// What `f` returns; `internal_error` if the task panicked.
    pub async fn db<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(ApiError::internal)?
    }

    /// Runs a short indexed read on this thread, without a trip to the blocking pool.
    ///
    /// For the hot path only (token lookup, role and CA of an issuance): a read under WAL never
    /// waits for the writer, and one indexed lookup costs microseconds, less than the two thread
    /// switches `db` would add. Anything that scans goes through [`App::db`].
    ///
    /// # Errors
    /// What `f` returns.
    pub fn read_now<T>(
        &self,
        f: impl Fn(&scaivault_store::Tx<'_>) -> scaivault_store::Result<T>,
    ) -> scaivault_store::Result<T> {
        if self.cluster.is_shared() {
            // A PostgreSQL read is a network round trip, and its client blocks: tell the runtime
            // (its other tasks move to another worker meanwhile). Lookups only: no transaction.
            tokio::task::block_in_place(|| self.store.lookup(f))
        } else {
            self.store.read(f)
        }
    }

    /// Runs token work (a signature) on the blocking pool, bounded by `[hsm] call_timeout`
    /// ([`App::token_blocking`]); with the limit off (`0s`), here when the token has been
    /// answering fast.
    ///
    /// A local token (SoftHSM, a PCIe module) signs in tens of microseconds: less than handing the
    /// job to another thread and back. A network HSM can take milliseconds, which must not hold an
    /// async worker: the moving average of recent calls decides. But a call made here cannot be
    /// abandoned: a module that hangs would hold the worker (and every request queued on it) until
    /// it returns. So the inline path is taken only when the operator turned the limit off.
    ///
    /// # Errors
    /// What `f` returns; `503 hsm_unavailable` when the token does not answer in time;
    /// `internal_error` if a blocking task panicked.
    pub async fn token_call<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let pace = self.token_pace.clone();
        if self.config.hsm.call_limit().is_none() && pace.is_fast() {
            let t0 = std::time::Instant::now();
            let out = f();
            pace.observe(t0.elapsed());
            out
        } else {
            self.token_blocking("sign", move || {
                let t0 = std::time::Instant::now();
                let out = f();
                pace.observe(t0.elapsed());
                out
            })
            .await
        }
    }

    /// Runs token work (lookups, signatures, KEK use, pings) on the blocking pool, bounded by
    /// `[hsm] call_timeout` (see [`App::token_work`]).
    ///
    /// # Errors
    /// What `f` returns; `503 hsm_unavailable` when the token does not answer in time;
    /// `internal_error` if the task panicked.
    pub async fn token_blocking<T, F>(&self, what: &'static str, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        self.token_work(self.config.hsm.call_limit(), what, f, |_| {})
            .await
    }

    /// Runs token work `f` on the blocking pool and waits at most `limit` (no limit: `None`).
    ///
    /// A PKCS#11 call cannot be cancelled: when the limit passes, the request answers
    /// `503 hsm_unavailable` while `f` keeps its blocking-pool thread until the module returns.
    /// If `f` then succeeds, `undo` runs on that thread with its result (e.g. destroys a key
    /// generated for a request that already failed); exactly one of "the caller got the result"
    /// and "undo ran" happens.
    ///
    /// # Errors
    /// What `f` returns; `503 hsm_unavailable` after `limit`; `internal_error` if the task
    /// panicked.
    pub async fn token_work<T, F, U>(
        &self,
        limit: Option<std::time::Duration>,
        what: &'static str,
        f: F,
        undo: U,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        U: FnOnce(&T) + Send + 'static,
    {
        const RUNNING: u8 = 0;
        const DONE: u8 = 1;
        const ABANDONED: u8 = 2;
        let Some(limit) = limit else {
            return self.blocking(f).await;
        };
        let state = Arc::new(std::sync::atomic::AtomicU8::new(RUNNING));
        let seen = state.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let out = f();
            let claimed = seen.compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst);
            if claimed.is_err() {
                log_late_token_result(what, out.is_ok());
                if let Ok(value) = &out {
                    undo(value);
                }
            }
            out
        });
        match tokio::time::timeout(limit, &mut task).await {
            Ok(joined) => joined.map_err(ApiError::internal)?,
            Err(_) => {
                let gave_up =
                    state.compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst);
                if gave_up.is_ok() {
                    log_token_timeout(what, limit);
                    Err(ApiError::hsm_unavailable())
                } else {
                    // It finished at the very moment the limit passed: its result is ours.
                    task.await.map_err(ApiError::internal)?
                }
            }
        }
    }

    /// Whether the token answers a ping within `[hsm] call_timeout` (5 s when that is off), for
    /// health checks: a hung module makes health report the token down instead of hanging it.
    pub async fn token_alive(&self) -> bool {
        const PING_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
        let token = self.token.clone();
        let limit = self.config.hsm.call_limit().unwrap_or(PING_LIMIT);
        self.token_work(
            Some(limit),
            "ping",
            move || Ok(token.ping().is_ok()),
            |_| {},
        )
        .await
        .unwrap_or(false)
    }

    /// Called after a revocation committed: wakes the CRL scheduler.
    pub fn after_revocation(&self, ca_id: &str, serial_key: &str) {
        tracing::debug!(ca = %ca_id, serial = %serial_key, "revoked; CRL rebuild scheduled");
        self.ocsp.invalidate(ca_id, serial_key);
        self.crl_wake.notify_one();
    }

    /// Queues `job` for the store's group commit and waits, without holding a thread, until the
    /// batch it joined is durable on disk.
    ///
    /// # Errors
    /// The job's or the commit's store error.
    pub async fn write(
        &self,
        job: scaivault_store::BatchJob,
    ) -> Result<(), scaivault_store::Error> {
        self.write_with(job, scaivault_store::Durability::Disk)
            .await
    }

    /// [`App::write`] with a chosen durability (see [`scaivault_store::Durability`]).
    ///
    /// # Errors
    /// The job's or the commit's store error.
    pub async fn write_with(
        &self,
        job: scaivault_store::BatchJob,
        durability: scaivault_store::Durability,
    ) -> Result<(), scaivault_store::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.submit_with(
            job,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
            durability,
        );
        rx.await.map_err(|_| {
            scaivault_store::Error::Unavailable("the store writer has stopped".into())
        })?
    }

    /// Runs blocking work (HSM calls) on the blocking pool.
    ///
    /// # Errors
    /// What `f` returns; `internal_error` if the task panicked.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(ApiError::internal)?
    }

    /// The issuer for a CA row just read (active, ready to sign); cached by CA id and serial.
    ///
    /// # Errors
    /// `409 ca_not_active`; token failures.
    pub async fn issuer_for(&self, row: scaivault_store::CaRow) -> Result<Arc<Issuer>, ApiError> {
        let ca_id = row.id.clone();
        if row.status != "active" {
            return Err(ApiError::conflict(
                "ca_not_active",
                format!("CA {ca_id} is {}", row.status),
            ));
        }
        if row.is_offline() {
            return Err(ApiError::bad_request(
                "ca_offline",
                format!("CA {ca_id} is offline: its key signs only in a key ceremony"),
            ));
        }
        let serial = row.serial.clone().unwrap_or_default();
        if let Ok(cache) = self.issuers.read() {
            if let Some(i) = cache.get(&ca_id).filter(|i| i.serial == serial) {
                return Ok(i.clone());
            }
        }
        let chain_text = crate::ca::chain_pem(self, &row).await?;
        let chain = split_pem(&chain_text);
        let der = row.cert_der.clone().ok_or_else(|| {
            ApiError::conflict("ca_not_active", format!("CA {ca_id} has no certificate"))
        })?;
        let token = self.token.clone();
        let label = row.key_label.clone();
        let signer = self
            .token_blocking("find", move || Ok(token.find(&label)?))
            .await?;
        let cert = scaivault_core::pem::from_der(&der)?;
        let mut info = scaivault_core::sign::issuer_info(&cert, signer.algorithm_der())?;
        // Its leaves are bound by the name constraints of every CA above it, too.
        let ancestors = scaivault_core::pem::parse_certificates(&chain_text)?;
        info.name_rules = NameRules::from_certs(std::iter::once(&cert).chain(&ancestors));
        let issuer = Arc::new(Issuer {
            ca_id: ca_id.clone(),
            serial,
            info,
            signer,
            chain,
        });
        if let Ok(mut cache) = self.issuers.write() {
            cache.insert(ca_id, issuer.clone());
        }
        Ok(issuer)
    }

    /// Writes one audit record in its own transaction.
    ///
    /// # Errors
    /// `503 audit_unavailable` when it cannot be written.
    pub async fn audit(&self, rec: AuditRecord) -> Result<(), ApiError> {
        let action = rec.action.clone();
        self.db(move |s| {
            s.write(|tx| tx.append_audit(&rec)).map_err(|e| {
                tracing::error!(error = %e, action = %action, "audit write failed");
                // Another writer held the database past the wait: the database is unavailable
                // (API.md, `database_unavailable`), not the audit trail alone.
                if e.is_lock_wait() {
                    ApiError::from(e)
                } else {
                    ApiError::audit_unavailable().with_cause(&e)
                }
            })
        })
        .await
        .map(|_| ())
    }

    /// Checks a permission; a refusal is audited (outcome `denied`, with the object the path
    /// names) and answered `403`.
    ///
    /// # Errors
    /// `403 forbidden`, or `503` when the denial cannot be audited.
    pub async fn require(
        &self,
        caller: &Caller,
        perm: Perm,
        action: &str,
        object_id: Option<&str>,
    ) -> Result<(), ApiError> {
        if auth::allows(&caller.policies, perm) {
            return Ok(());
        }
        self.audit(caller.record(action, object_id, "denied"))
            .await?;
        Err(ApiError::forbidden(format!(
            "the token's policies do not allow {action}"
        )))
    }

    /// Checks that the caller may issue under `role`; a refusal is audited and answered `403`.
    ///
    /// # Errors
    /// `403 forbidden`, or `503` when the denial cannot be audited.
    pub async fn require_issuer(
        &self,
        caller: &Caller,
        role: &str,
        action: &str,
    ) -> Result<(), ApiError> {
        if auth::may_issue(&caller.policies, role) {
            return Ok(());
        }
        self.audit(caller.record(action, Some(role), "denied"))
            .await?;
        Err(ApiError::forbidden(format!(
            "the token's policies do not allow {action} under role {role}"
        )))
    }

    /// Finishes a state-changing call: a failure is audited with its code, a refusal (`403`, e.g.
    /// `separation_of_duties`) as `denied` like [`App::require`]'s (success is audited by the
    /// operation itself, inside its transaction).
    ///
    /// # Errors
    /// The original error, or `503` when even the failure cannot be audited.
    pub async fn finish<T>(
        &self,
        caller: &Caller,
        action: &str,
        object: Option<&str>,
        res: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        match res {
            Ok(v) => Ok(v),
            Err(e) if e.code == "audit_unavailable" || e.audited => Err(e),
            Err(e) => {
                let outcome = if e.status == rocket::http::Status::Forbidden {
                    "denied".to_owned()
                } else {
                    format!("error:{}", e.code)
                };
                self.audit(caller.record(action, object, &outcome)).await?;
                Err(e)
            }
        }
    }

    /// Resolves a bearer token to a caller.
    ///
    /// # Errors
    /// `401` for an unknown, malformed, revoked or expired token.
    pub fn authenticate(&self, token: &str, request_id: String) -> Result<Caller, ApiError> {
        self.resolve(token, request_id, false)
    }

    /// [`App::authenticate`] for the issuance endpoints: the token row may come from
    /// [`crate::issuecache`], whose every use the serial reservation checks against the database.
    ///
    /// # Errors
    /// As [`App::authenticate`].
    pub fn authenticate_issuing(
        &self,
        token: &str,
        request_id: String,
    ) -> Result<Caller, ApiError> {
        self.resolve(token, request_id, true)
    }

    /// Reads the caller's token again from the database (the issuance path, after a reservation
    /// found that something it relied on changed).
    ///
    /// # Errors
    /// `401` when the token is gone, revoked or expired.
    pub fn recheck(&self, caller: &Caller) -> Result<(), ApiError> {
        let row = match self.read_now(|tx| tx.token_by_id(&caller.token_id)) {
            Ok((row, _)) => row,
            Err(scaivault_store::Error::NotFound) => {
                return Err(ApiError::unauthorized("unknown token"))
            }
            Err(e) => return Err(ApiError::from(e)),
        };
        check_token_usable(&row)
    }

    fn resolve(&self, token: &str, request_id: String, cached: bool) -> Result<Caller, ApiError> {
        let Some(id) = auth::token_id(token) else {
            return Err(ApiError::unauthorized("malformed bearer token"));
        };
        let cache_generation = self.issue_cache.generation();
        let hit = if cached {
            self.issue_cache.token(&id)
        } else {
            None
        };
        let found = match hit {
            Some(t) => t,
            None => match self.read_now(|tx| tx.token_by_id(&id)) {
                Ok((row, hash)) => {
                    if cached {
                        self.issue_cache
                            .put_token(row.clone(), hash.clone(), cache_generation);
                    }
                    Arc::new((row, hash))
                }
                Err(scaivault_store::Error::NotFound) => {
                    return Err(ApiError::unauthorized("unknown token"))
                }
                Err(e) => return Err(ApiError::from(e)),
            },
        };
        let (row, stored) = &*found;
        if !auth::hash_matches(token, stored) {
            return Err(ApiError::unauthorized("unknown token"));
        }
        check_token_usable(row)?;
        Ok(Caller {
            tenant_id: row.tenant_id.clone(),
            token_id: row.id.clone(),
            policies: row.policies.clone(),
            request_id,
            cache_generation,
        })
    }
}

/// Splits concatenated PEM certificates into one string each.
pub fn split_pem(text: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    text.split_inclusive(END)
        .map(str::trim_start)
        .filter(|p| p.contains(END))
        .map(|p| format!("{p}\n"))
        .collect()
}

fn check_token_usable(row: &TokenRow) -> Result<(), ApiError> {
    if row.revoked_at.is_some() {
        return Err(ApiError::unauthorized("token revoked"));
    }
    if let Some(exp) = &row.expires_at {
        let exp = scaivault_core::time_util::parse_rfc3339(exp).map_err(ApiError::internal)?;
        if exp <= time::OffsetDateTime::now_utc() {
            return Err(ApiError::unauthorized("token expired"));
        }
    }
    Ok(())
}
