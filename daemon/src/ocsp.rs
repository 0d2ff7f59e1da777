//! The OCSP responder service (RFC 6960, RFC 5019 profile): finds the CA, answers from the
//! response cache when it can, otherwise looks the serials up in the inventory and has the CA
//! key sign a fresh response (`scaivault_core::ocsp`).
//!
//! Caching (RFC 5019 §2.2.4, §6): only responses to a single `CertID` without a nonce are cached,
//! keyed by CA id and serial (and the exact `CertID`, which the response echoes). A cached
//! response is served until half its validity has passed (`thisUpdate + validity/2`), then
//! re-signed on the next request, so a client never gets one with less than half its validity
//! left. A request with a nonce (RFC 8954) is always signed afresh. The revocation code calls
//! [`OcspCache::invalidate`] right after a revocation commits; an epoch counter makes sure that a
//! response signed from a status read before that commit is not cached afterwards.
//!
//! **Several nodes** (`[storage] backend = "postgres"`): the responses are also kept in the
//! database table `ocsp_responses`, shared by the nodes. A node that misses its own cache reads
//! the shared row before signing, and serves it (and caches it) while it is fresh for the caller;
//! a node that signs a response (on demand, any node) stores it there. Only the leader pre-signs
//! (new certificates it issued, revoked ones, and, on each scheduler tick, its cached responses
//! and the shared rows about to go stale); a follower's pre-signing queue is ignored, and a
//! follower's new certificates get their first response from whichever node is asked first. A
//! row is stored only while the certificate's status still matches what it says (one conditional
//! statement under the cluster's write lock), and a revocation deletes the serial's rows in its
//! own transaction, so no node can read a `good` for a certificate once its revocation is visible;
//! the local caches of the other nodes are dropped by the revocation watch (`crate::cluster`), and
//! the epoch rule below keeps a row read before that from being cached after it.
//!
//! Every failure is an OCSP status, never an HTTP error: an unknown or pending CA is
//! `unauthorized`, an unavailable token or database `tryLater`, anything else `internalError`.

use crate::app::{App, Issuer};
use crate::error::ApiError;
use scaivault_core::ocsp::{CertState, OcspError, ParsedRequest, Refusal, Responder};
use scaivault_core::serial::Serial;
use scaivault_core::{duration, pem, sign, time_util};
use scaivault_store::{CaRow, Store};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use time::{Duration, OffsetDateTime};

/// Cached responses kept at most (each a few hundred bytes to about 1 KiB for RSA-4096 keys).
const MAX_ENTRIES: usize = 100_000;
/// Pre-signing jobs waiting at most; more are dropped (signed on demand instead).
const PRESIGN_QUEUE: usize = 4096;
/// Pause between two pre-signing jobs, so background signing takes at most a slice of the CPU
/// and the token (about a thousand responses a second) while requests are being served.
const PRESIGN_PACE: std::time::Duration = std::time::Duration::from_millis(1);
/// Cached responses that go stale within this horizon are re-signed by the pre-signer (queued by
/// the scheduler, whose tick is 10 s: two ticks).
pub const REFRESH_HORIZON: Duration = Duration::seconds(20);
/// The pre-signer starts only after this long without a new job (issuance has paused).
const PRESIGN_QUIET: std::time::Duration = std::time::Duration::from_millis(50);
/// OCSP validity when the CA's setting is missing or unreadable (the API's default, `12h`).
const DEFAULT_VALIDITY_SECS: u64 = 12 * 3600;

/// A successful response and what the HTTP layer needs for its cache headers.
#[derive(Debug)]
pub struct SignedResponse {
    /// The DER `OCSPResponse`.
    pub der: Arc<[u8]>,
    /// `thisUpdate` (and `producedAt`).
    pub this_update: OffsetDateTime,
    /// `nextUpdate`.
    pub next_update: OffsetDateTime,
    /// Lowercase hex SHA-256 of `der`.
    pub etag: String,
    /// Serve from cache until then.
    refresh_at: OffsetDateTime,
    /// The `CertID` (DER) answered, part of the cache key.
    cert_id: Vec<u8>,
    /// Its HTTP header values (`Last-Modified`, `Expires`, `ETag`), formatted on first use by the
    /// HTTP layer and kept with the response: a cache hit formats no date.
    pub(crate) http_headers: std::sync::OnceLock<[String; 3]>,
}

impl SignedResponse {
    /// Whether this response may still be served from a cache at `now` (the pre-signer replaces
    /// it before then).
    pub fn is_fresh(&self, now: OffsetDateTime) -> bool {
        now < self.refresh_at
    }
}

/// The answer to one OCSP request.
#[derive(Debug, Clone)]
pub enum OcspAnswer {
    /// A signed, successful response.
    Signed(Arc<SignedResponse>),
    /// An error status (RFC 6960 §4.2.1).
    Refused(Refusal),
}

/// Cached responses by (CA id, serial key); one per `CertID` form asked (SHA-1, SHA-256).
type Entries = HashMap<(String, String), Vec<Arc<SignedResponse>>>;

/// Responses per (CA id, serial key), bounded in size.
#[derive(Debug, Default)]
pub struct OcspCache {
    entries: RwLock<Entries>,
    /// Delegated OCSP signers by CA id.
    delegates: RwLock<HashMap<String, Arc<Delegate>>>,
    /// Bumped by every invalidation; a response is cached only if no invalidation happened
    /// since its status was read.
    epoch: AtomicU64,
    /// Responses to sign before anyone asks: `(CA id, CertID DER)`, bounded (see [`presigner`]).
    queue: std::sync::Mutex<std::collections::VecDeque<(String, Vec<u8>)>>,
    /// Wakes the pre-signer.
    wake: tokio::sync::Notify,
    /// When the last job was queued (milliseconds since the Unix epoch): the pre-signer waits
    /// for a quiet moment, so it never competes with a burst of issuance for CPU and token.
    last_queued_ms: AtomicU64,
    /// Serialises loading and making delegated signers (the pre-signer and a request may both
    /// find none, and only one may make it).
    delegate_lock: tokio::sync::Mutex<()>,
}

impl OcspCache {
    /// Drops the cached responses for serial `serial_key` (canonical uppercase hex) of CA
    /// `ca_id`: the next request is signed from the database. Call it after a revocation commits.
    ///
    /// The dropped responses' `CertID`s are queued for pre-signing, so the `revoked` answer is
    /// usually signed before the next relying party asks.
    pub fn invalidate(&self, ca_id: &str, serial_key: &str) {
        let removed = if let Ok(mut map) = self.entries.write() {
            let r = map.remove(&(ca_id.to_owned(), serial_key.to_owned()));
            self.epoch.fetch_add(1, Ordering::SeqCst);
            r
        } else {
            // A poisoned lock: bump anyway so nothing in flight gets cached.
            self.epoch.fetch_add(1, Ordering::SeqCst);
            None
        };
        for r in removed.unwrap_or_default() {
            self.presign(ca_id, r.cert_id.clone());
        }
    }

    /// Queues a response for `cert_id_der` of CA `ca_id` to be signed in the background (dropped
    /// when the queue is full: the response is then signed when first asked for).
    pub fn presign(&self, ca_id: &str, cert_id_der: Vec<u8>) {
        self.last_queued_ms.store(now_ms(), Ordering::Relaxed);
        if let Ok(mut q) = self.queue.lock() {
            if q.len() < PRESIGN_QUEUE {
                q.push_back((ca_id.to_owned(), cert_id_der));
                self.wake.notify_one();
            }
        }
    }

    /// `(cached responses, pre-signing jobs waiting)`, for metrics.
    pub fn sizes(&self) -> (usize, usize) {
        let entries = self
            .entries
            .read()
            .map_or(0, |m| m.values().map(Vec::len).sum());
        let queued = self.queue.lock().map_or(0, |q| q.len());
        (entries, queued)
    }

    fn next_presign(&self) -> Option<(String, Vec<u8>)> {
        self.queue.lock().ok()?.pop_front()
    }

    /// Queues every cached response that goes stale within `horizon` for re-signing, so a
    /// response in use is replaced before it is due (RFC 5019 §6: refreshed before nextUpdate).
    pub fn queue_refresh(&self, now: OffsetDateTime, horizon: Duration) -> usize {
        let due: Vec<(String, Vec<u8>)> = match self.entries.read() {
            Ok(map) => map
                .iter()
                .flat_map(|((ca, _), list)| {
                    list.iter()
                        .filter(|r| r.refresh_at <= now + horizon)
                        .map(|r| (ca.clone(), r.cert_id.clone()))
                })
                .take(PRESIGN_QUEUE)
                .collect(),
            Err(_) => return 0,
        };
        let n = due.len();
        for (ca, id) in due {
            self.presign(&ca, id);
        }
        n
    }

    /// The invalidation counter: it changes whenever a cached response is dropped by
    /// [`OcspCache::invalidate`]. A copy of a cached response kept elsewhere (the relying-party
    /// listener's encoded repeats) is valid only while the counter is the one read before the
    /// response was looked up.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A fresh cached response for this `CertID`.
    fn get(
        &self,
        ca_id: &str,
        serial_key: &str,
        cert_id: &[u8],
        now: OffsetDateTime,
    ) -> Option<Arc<SignedResponse>> {
        let map = self.entries.read().ok()?;
        map.get(&(ca_id.to_owned(), serial_key.to_owned()))?
            .iter()
            .find(|r| r.cert_id == cert_id && r.is_fresh(now))
            .cloned()
    }

    /// Caches `resp` unless an invalidation happened since `epoch` was read. A response that
    /// stays fresh until `keep_until` is kept instead (and returned): the pre-signer passes its
    /// horizon so it never replaces a response a client was just given; a client passes `None`.
    fn put(
        &self,
        ca_id: &str,
        serial_key: &str,
        resp: Arc<SignedResponse>,
        epoch: u64,
        keep_until: Option<OffsetDateTime>,
    ) -> Arc<SignedResponse> {
        let Ok(mut map) = self.entries.write() else {
            return resp;
        };
        if self.epoch() != epoch {
            return resp;
        }
        if map.len() >= MAX_ENTRIES {
            evict(&mut map, time_util::now());
        }
        let list = map
            .entry((ca_id.to_owned(), serial_key.to_owned()))
            .or_default();
        if let Some(until) = keep_until {
            if let Some(kept) = list
                .iter()
                .find(|r| r.cert_id == resp.cert_id && until < r.refresh_at)
            {
                return kept.clone();
            }
        }
        list.retain(|r| r.cert_id != resp.cert_id);
        list.push(resp.clone());
        resp
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Makes room: drops stale responses, then arbitrary ones down to 7/8 of the bound.
fn evict(map: &mut Entries, now: OffsetDateTime) {
    map.retain(|_, list| {
        list.retain(|r| now < r.refresh_at);
        !list.is_empty()
    });
    let target = MAX_ENTRIES / 8 * 7;
    if map.len() > target {
        let excess = map.len() - target;
        let victims: Vec<_> = map.keys().take(excess).cloned().collect();
        for k in victims {
            map.remove(&k);
        }
    }
}

/// Answers the DER OCSP request `der` for CA `ca_id` (any tenant).
pub async fn answer(app: &App, ca_id: &str, der: &[u8]) -> OcspAnswer {
    match answer_inner(app, ca_id, der, Duration::ZERO).await {
        Ok(r) => OcspAnswer::Signed(r),
        Err(r) => OcspAnswer::Refused(r),
    }
}

/// Signs queued responses in the background, one at a time, until the runtime stops: responses
/// for newly issued certificates, for revoked ones right after the revocation, and for cached
/// ones about to go stale (queued by the scheduler). Each lands in the cache as if a client had
/// asked.
pub async fn presigner(app: App) {
    loop {
        loop {
            // Background work: only in a quiet moment (no job queued for PRESIGN_QUIET).
            let since = now_ms().saturating_sub(app.ocsp.last_queued_ms.load(Ordering::Relaxed));
            let quiet = u64::try_from(PRESIGN_QUIET.as_millis()).unwrap_or(50);
            if since < quiet {
                tokio::time::sleep(std::time::Duration::from_millis(quiet - since)).await;
                continue;
            }
            let Some((ca_id, cert_id)) = app.ocsp.next_presign() else {
                break;
            };
            if !app.cluster.is_leader() {
                // A follower of a cluster: the leader pre-signs into the shared table.
                continue;
            }
            match scaivault_core::ocsp::request_for_cert_id(&cert_id) {
                Ok(der) => {
                    if let Err(r) = answer_inner(&app, &ca_id, &der, REFRESH_HORIZON).await {
                        tracing::debug!(ca = %ca_id, refusal = ?r, "OCSP pre-signing refused");
                    }
                }
                Err(e) => tracing::warn!(ca = %ca_id, error = %e, "OCSP pre-signing: bad CertID"),
            }
            tokio::time::sleep(PRESIGN_PACE).await;
        }
        app.ocsp.wake.notified().await;
    }
}

/// The cached response for `der` when there is a fresh one: no signing, no database, no await
/// (the relying-party listener answers such hits on its own threads). `None` for anything else,
/// garbage included: [`answer`] then decides.
pub fn cached(app: &App, ca_id: &str, der: &[u8]) -> Option<Arc<SignedResponse>> {
    let req = ParsedRequest::parse(der).ok()?;
    let (serial, cert_id) = req.cache_key()?;
    let hit = app.ocsp.get(ca_id, &serial, &cert_id, time_util::now())?;
    crate::metrics::Metrics::bump(&app.metrics.ocsp_cached);
    Some(hit)
}

/// Answers `der` from the cache when a response stays fresh for at least `fresh_for` more
/// (zero for a client; [`REFRESH_HORIZON`] for the pre-signer, which so neither re-signs a response
/// a client just caused nor leaves one that would go stale before the next refresh pass), else
/// signs and caches a new one.
async fn answer_inner(
    app: &App,
    ca_id: &str,
    der: &[u8],
    fresh_for: Duration,
) -> Result<Arc<SignedResponse>, Refusal> {
    let req = ParsedRequest::parse(der)?;
    let cache_key = req.cache_key();
    if let Some((serial, cert_id)) = &cache_key {
        if let Some(hit) = app
            .ocsp
            .get(ca_id, serial, cert_id, time_util::now() + fresh_for)
        {
            if fresh_for.is_zero() {
                crate::metrics::Metrics::bump(&app.metrics.ocsp_cached);
            }
            return Ok(hit);
        }
    }
    let shared = app.cluster.is_shared();
    if shared {
        if let Some((serial, cert_id)) = &cache_key {
            // Read the epoch first: a revocation seen after the row was read keeps it out of the
            // cache (the row itself is deleted by the revocation's transaction).
            let epoch = app.ocsp.epoch();
            if let Some(resp) = shared_response(app, ca_id, serial, cert_id).await {
                if time_util::now() + fresh_for < resp.refresh_at {
                    if fresh_for.is_zero() {
                        crate::metrics::Metrics::bump(&app.metrics.ocsp_shared_hits);
                    }
                    let keep_until = (!fresh_for.is_zero()).then(|| time_util::now() + fresh_for);
                    return Ok(app
                        .ocsp
                        .put(ca_id, serial, Arc::new(resp), epoch, keep_until));
                }
            }
        }
    }
    let row = match crate::ca::get_public(app, ca_id).await {
        Ok(r) => r,
        Err(e) if e.status.code == 404 => return Err(Refusal::Unauthorized),
        Err(e) => return Err(refusal_for(&e)),
    };
    let mut validity = validity_of(&row);
    let settings = crate::ca::settings(&row);
    let delegated = settings.ocsp_signer == "delegated";
    let lifetime = duration::parse_seconds(&settings.ocsp_signer_lifetime)
        .ok()
        .and_then(|s| i64::try_from(s).ok())
        .map_or(DELEGATE_LIFETIME, Duration::seconds);
    let tenant = row.tenant_id.clone();
    let issuer = issuer(app, row).await?;
    let delegate = if delegated {
        let d = delegate(app, &issuer, &tenant, lifetime)
            .await
            .map_err(|e| refusal_for(&e))?;
        // A response never outlives the certificate of the key that signed it.
        validity = validity.min(d.not_after - time_util::now());
        Some(d)
    } else {
        // Signed by the CA's own key: not past the CA certificate's end either.
        validity = validity
            .min(issuer.info.not_after - time_util::now())
            .max(Duration::ZERO);
        None
    };
    let epoch = app.ocsp.epoch();
    let store = app.store.clone();
    let ca = ca_id.to_owned();
    let signed = app
        .token_blocking("ocsp_sign", move || {
            let now = time_util::now();
            let responder = match &delegate {
                Some(d) => Responder::new_delegated(
                    &issuer.info,
                    d.signer.as_ref(),
                    &d.cert,
                    &d.spki_der,
                    validity,
                ),
                None => Responder::new(&issuer.info, issuer.signer.as_ref(), validity),
            };
            // What the response says, for the shared table (a cached request has one CertID).
            let mut said = "unknown";
            Ok(responder
                .map_err(OcspError::from)
                .and_then(|r| {
                    r.respond_parsed(&req, now, |s| {
                        let state = lookup(&store, &ca, s);
                        said = match &state {
                            Ok(CertState::Good) => "good",
                            Ok(CertState::Revoked { .. }) => "revoked",
                            _ => "unknown",
                        };
                        state
                    })
                })
                .map(|signed| (signed, said)))
        })
        .await
        .map_err(|e| refusal_for(&e))?
        .map_err(|e| {
            if let OcspError::Failed(cause) = &e {
                tracing::error!(ca = %ca_id, error = %cause, "OCSP signing failed");
            }
            e.refusal()
        })?;
    let (signed, said) = signed;
    crate::metrics::Metrics::bump(&app.metrics.ocsp_signed);
    let (this_update, next_update) = (signed.this_update, signed.next_update);
    let resp = Arc::new(SignedResponse {
        etag: hex::encode(Sha256::digest(&signed.der)),
        der: signed.der.into(),
        this_update,
        next_update,
        refresh_at: this_update + (next_update - this_update) / 2,
        cert_id: cache_key
            .as_ref()
            .map(|(_, id)| id.clone())
            .unwrap_or_default(),
        http_headers: std::sync::OnceLock::new(),
    });
    let keep_until = (!fresh_for.is_zero()).then(|| time_util::now() + fresh_for);
    Ok(match &cache_key {
        Some((serial, _)) => {
            // `unknown` answers stay in this node's bounded cache only: anyone may ask for random
            // serials, and the shared table must not grow with them.
            if shared && said != "unknown" {
                store_shared(app, ca_id, serial, &resp, said);
            }
            app.ocsp.put(ca_id, serial, resp, epoch, keep_until)
        }
        None => resp,
    })
}

/// The response the cluster stored for this `CertID`, if any and readable (a failed read is
/// logged and treated as none: the caller signs instead).
async fn shared_response(
    app: &App,
    ca_id: &str,
    serial: &str,
    cert_id: &[u8],
) -> Option<SignedResponse> {
    let (ca, key, id) = (ca_id.to_owned(), serial.to_owned(), cert_id.to_vec());
    // On the blocking pool: the PostgreSQL client blocks.
    let found = app
        .db(move |s| {
            s.lookup(|tx| tx.ocsp_response(&ca, &key, &id))
                .map_err(ApiError::from)
        })
        .await;
    let row = match found {
        Ok(row) => row?,
        Err(e) => {
            tracing::debug!(ca = %ca_id, error = %e, "OCSP: shared response unreadable; signing");
            return None;
        }
    };
    let at = |t: &str| time_util::parse_rfc3339(t).ok();
    Some(SignedResponse {
        etag: hex::encode(Sha256::digest(&row.der)),
        this_update: at(&row.this_update)?,
        next_update: at(&row.next_update)?,
        refresh_at: at(&row.refresh_at)?,
        der: row.der.into(),
        cert_id: row.cert_id,
        http_headers: std::sync::OnceLock::new(),
    })
}

/// Stores a response this node signed in the cluster's table, in the background (a `Wal` group
/// commit; the answer does not wait for it). The store keeps it only while the certificate's
/// status is still `said`.
fn store_shared(app: &App, ca_id: &str, serial: &str, resp: &SignedResponse, said: &str) {
    let row = scaivault_store::OcspResponseRow {
        ca_id: ca_id.to_owned(),
        serial: serial.to_owned(),
        cert_id: resp.cert_id.clone(),
        der: resp.der.to_vec(),
        status: said.to_owned(),
        this_update: time_util::rfc3339(resp.this_update),
        next_update: time_util::rfc3339(resp.next_update),
        refresh_at: time_util::rfc3339(resp.refresh_at),
    };
    let app = app.clone();
    tokio::spawn(async move {
        let r = app
            .write_with(
                Box::new(move |tx| tx.put_ocsp_response(&row).map(|_| ())),
                scaivault_store::Durability::Wal,
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "OCSP: could not store a response for the other nodes");
        }
    });
}

/// The leader's refresh of the cluster's table (each scheduler tick, after
/// [`OcspCache::queue_refresh`]): queues the stored responses that go stale within
/// [`REFRESH_HORIZON`] (also those only followers serve) and drops those past their nextUpdate.
/// Returns how many were queued.
pub async fn refresh_shared(app: &App, now: OffsetDateTime) -> usize {
    let due = time_util::rfc3339(now + REFRESH_HORIZON);
    let expired = time_util::rfc3339(now);
    let found = app
        .db(move |s| {
            s.write(|tx| tx.delete_ocsp_responses_expired(&expired))?;
            s.read(|tx| tx.ocsp_responses_due(&due, PRESIGN_QUEUE))
                .map_err(ApiError::from)
        })
        .await;
    match found {
        Ok(rows) => {
            let n = rows.len();
            for (ca, cert_id) in rows {
                app.ocsp.presign(&ca, cert_id);
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "OCSP: shared responses due for refresh unreadable");
            0
        }
    }
}

/// A delegated OCSP signer: a key on the token and its certificate from the CA.
#[derive(Debug)]
pub struct Delegate {
    signer: Arc<dyn scaivault_hsm::Signer>,
    cert: x509_cert::Certificate,
    spki_der: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Delegate {
    /// Still good for signing: less than two thirds of its life used (rotation then).
    fn fresh(&self, now: OffsetDateTime) -> bool {
        now < self.not_before + (self.not_after - self.not_before) * 2 / 3
    }
}

/// Lifetime of a delegated OCSP signing certificate when the CA's setting is unreadable (the
/// default of `ocsp_signer_lifetime`; bounded by the CA's own end).
const DELEGATE_LIFETIME: Duration = Duration::days(30);

/// The CA's delegated OCSP signer: cached, else loaded from the store, else (or when two thirds
/// of its life are used) a new key is generated on the token and certified by the CA.
async fn delegate(
    app: &App,
    issuer: &Arc<Issuer>,
    tenant_id: &str,
    lifetime: Duration,
) -> Result<Arc<Delegate>, ApiError> {
    let now = time_util::now();
    if let Some(d) = app
        .ocsp
        .delegates
        .read()
        .ok()
        .and_then(|m| m.get(&issuer.ca_id).cloned())
    {
        if d.fresh(now) {
            return Ok(d);
        }
    }
    let _one_at_a_time = app.ocsp.delegate_lock.lock().await;
    if let Some(d) = app
        .ocsp
        .delegates
        .read()
        .ok()
        .and_then(|m| m.get(&issuer.ca_id).cloned())
    {
        if d.fresh(now) {
            return Ok(d);
        }
    }
    let id = issuer.ca_id.clone();
    let stored = app
        .db(move |s| s.read(|tx| tx.ocsp_signer(&id)).map_err(ApiError::from))
        .await?;
    if let Some((label, der, _)) = stored {
        let token = app.token.clone();
        let signer = app
            .token_blocking("find", move || Ok(token.find(&label)?))
            .await?;
        let cert = pem::from_der(&der)?;
        let d = Arc::new(delegate_from(signer, cert)?);
        if d.fresh(now) {
            if let Ok(mut m) = app.ocsp.delegates.write() {
                m.insert(issuer.ca_id.clone(), d.clone());
            }
            return Ok(d);
        }
    }
    // Make (or rotate to) a new one.
    let label = scaivault_core::ids::new_id("ocsp");
    let not_after = (now + lifetime).min(issuer.info.not_after);
    let subject = scaivault_core::name::DnFields {
        common_name: format!("OCSP responder {}", issuer.ca_id),
        ..Default::default()
    }
    .to_name()?;
    let (token, iss, l) = (app.token.clone(), issuer.clone(), label.clone());
    let (undo_token, undo_label) = (app.token.clone(), label.clone());
    let (signer, der) = app
        .token_work(app.config.hsm.keygen_limit(), "generate", move || {
            let key = token.generate(scaivault_hsm::KeySpec::EcP256, &l)?;
            let tbs = scaivault_core::ocsp::delegate_tbs(
                subject,
                key.public_key_der(),
                &Serial::fresh(),
                iss.info.backdated(now, Duration::seconds(30)),
                not_after,
                &iss.info,
            )?;
            let expect = scaivault_core::profile::LintExpect {
                issuer: Some(&iss.info),
                ca: false,
                algorithm_der: &iss.info.algorithm_der,
            };
            let der = sign::sign_certificate(tbs, expect, iss.signer.as_ref())?;
            Ok((key, der))
        }, move |_| {
            // The request gave up (keygen_timeout): nobody will record this delegate key.
            if let Err(e) = undo_token.destroy(&undo_label) {
                tracing::error!(error = %e, key = %undo_label, "could not remove an abandoned OCSP delegate key");
            }
        })
        .await?;
    let (id, l, d2, na) = (
        issuer.ca_id.clone(),
        label.clone(),
        der.clone(),
        time_util::rfc3339(not_after),
    );
    let mut rec = scaivault_store::AuditRecord {
        time: time_util::rfc3339(now),
        tenant_id: Some(tenant_id.to_owned()),
        token_id: Some("ocsp".into()),
        action: "ocsp.delegate_issued".into(),
        object_id: Some(issuer.ca_id.clone()),
        outcome: "success".into(),
        request_id: None,
        detail: None,
    };
    rec.detail = Some(format!("key {label}"));
    app.db(move |s| {
        s.write(|tx| {
            tx.put_ocsp_signer(&id, &l, &d2, &na)?;
            tx.append_audit(&rec)
        })
        .map_err(ApiError::from)
    })
    .await?;
    let d = Arc::new(delegate_from(signer, pem::from_der(&der)?)?);
    if let Ok(mut m) = app.ocsp.delegates.write() {
        m.insert(issuer.ca_id.clone(), d.clone());
    }
    tracing::info!(ca = %issuer.ca_id, key = %label, "delegated OCSP signer issued");
    Ok(d)
}

fn delegate_from(
    signer: Arc<dyn scaivault_hsm::Signer>,
    cert: x509_cert::Certificate,
) -> Result<Delegate, ApiError> {
    use der::Encode;
    let v = &cert.tbs_certificate.validity;
    Ok(Delegate {
        spki_der: cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(ApiError::internal)?,
        not_before: time_util::from_x509(&v.not_before),
        not_after: time_util::from_x509(&v.not_after),
        signer,
        cert,
    })
}

/// The CA's OCSP validity setting (RFC 5019 §2.2.4 `nextUpdate - thisUpdate`).
fn validity_of(row: &CaRow) -> Duration {
    let secs = duration::parse_seconds(&crate::ca::settings(row).ocsp_validity)
        .unwrap_or(DEFAULT_VALIDITY_SECS);
    Duration::seconds(i64::try_from(secs).unwrap_or(43_200))
}

/// The CA's key and issuer data. Active CAs come from the shared issuer cache; a retired CA still
/// answers for what it issued, with its key found on the token. A CA without a certificate is
/// not a responder (`unauthorized`).
async fn issuer(app: &App, row: CaRow) -> Result<Arc<Issuer>, Refusal> {
    if row.status == "pending_signature" || row.cert_der.is_none() || row.is_offline() {
        return Err(Refusal::Unauthorized);
    }
    if row.status == "active" {
        return app.issuer_for(row).await.map_err(|e| match e.code {
            "ca_not_active" | "ca_pending_signature" => Refusal::Unauthorized,
            _ => refusal_for(&e),
        });
    }
    let der = row.cert_der.clone().unwrap_or_default();
    let token = app.token.clone();
    let label = row.key_label.clone();
    let signer = app
        .token_blocking("find", move || Ok(token.find(&label)?))
        .await
        .map_err(|e| refusal_for(&e))?;
    let info = pem::from_der(&der)
        .and_then(|cert| sign::issuer_info(&cert, signer.algorithm_der()))
        .map_err(|e| refusal_for(&ApiError::from(e)))?;
    Ok(Arc::new(Issuer {
        ca_id: row.id,
        serial: row.serial.unwrap_or_default(),
        info,
        signer,
        chain: Vec::new(),
    }))
}

/// The inventory's word on one serial of CA `ca_id`.
fn lookup(store: &Store, ca_id: &str, serial: &Serial) -> Result<CertState, Refusal> {
    let found = store
        .read(|tx| tx.certificate_status(ca_id, &serial.key()))
        .map_err(|e| refusal_for(&ApiError::from(e)))?;
    let Some((status, revoked_at, reason)) = found else {
        return Ok(CertState::Unknown);
    };
    match status.as_str() {
        "valid" => Ok(CertState::Good),
        "revoked" => {
            let at = revoked_at
                .as_deref()
                .and_then(|a| time_util::parse_rfc3339(a).ok())
                .ok_or_else(|| {
                    tracing::error!(ca = %ca_id, serial = %serial, "revoked certificate without a readable revocation time");
                    Refusal::InternalError
                })?;
            Ok(CertState::Revoked { at, reason })
        }
        other => {
            tracing::debug!(ca = %ca_id, serial = %serial, status = %other, "OCSP: status answered as unknown");
            Ok(CertState::Unknown)
        }
    }
}

/// `tryLater` for an unavailable dependency (503), `internalError` for anything else.
fn refusal_for(e: &ApiError) -> Refusal {
    if e.status.code == 503 {
        tracing::warn!(error = %e, "OCSP: dependency unavailable");
        Refusal::TryLater
    } else {
        tracing::error!(error = %e, "OCSP: internal error");
        Refusal::InternalError
    }
}
