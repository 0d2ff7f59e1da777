//! # scaivault-store
//!
//! All SQL of ScaiVault lives here, behind a narrow interface: [`Store::read`] and
//! [`Store::write`] hand a closure a [`Tx`] with typed methods; a write is one transaction, so an
//! object and its audit record land together or not at all. Driver types never leave the crate.
//!
//! Two backends implement it, chosen at open:
//!
//! - **SQLite** ([`Store::open`]): WAL mode with `synchronous=FULL` and foreign keys on;
//!   migrations versioned by `PRAGMA user_version`. One host.
//! - **PostgreSQL** ([`Store::open_postgres`]): several daemons (nodes) may share one database.
//!   Migrations are the same numbered list in PostgreSQL's dialect (`migrations/pg/`), versioned
//!   in a `schema_version` table and applied under an advisory lock, so two nodes starting at once
//!   do not both migrate.
//!
//! Every typed method of [`Tx`] exists once and runs on both (see the `db` module: `?N`
//! placeholders rewritten to `$N`, an owned `Value` for columns, borrowed `Param`s).
//!
//! ## Several nodes on one PostgreSQL database
//!
//! **Writes are serialized cluster-wide.** Every write transaction ([`Store::write`] and each
//! group-commit batch) begins with `pg_advisory_xact_lock(0x5343564100000001)`, held until it
//! commits or rolls back. So writes behave exactly as on SQLite, where one writer holds the
//! database: the audit log stays one linear hash chain (each record's `seq` and `prev_hash` come
//! from `audit_head`, read and updated under the lock), which the existing verification walks
//! unchanged; a read-modify-write inside a write transaction cannot lose an update; sequence
//! values (`events.seq`, the `rowid` identity columns) are allocated in commit order, so cursor
//! readers (webhooks) never skip a row committed late. The alternative, per-node chains with
//! their own sequence numbers, was not chosen: it would change the verification and the
//! `/v1/audit` order for a throughput gain that the group commit already provides (one lock per
//! batch of up to 512 writes). Reads take no lock: `REPEATABLE READ READ ONLY` transactions on a
//! snapshot.
//!
//! Correctness does not rest on the lock alone: state transitions are conditional updates
//! (`UPDATE … WHERE status = <expected>`, checking the rows changed), serials are unique per
//! issuer by primary key, CRL numbers come from one counter row per CA, and an insert that could
//! collide uses `ON CONFLICT DO NOTHING` and reports [`Error::Conflict`].
//!
//! **Scheduled jobs** run on one node: [`Store::try_lead`] holds a session-level advisory lock
//! (`pg_try_advisory_lock(0x5343564100000002)`) on a connection of its own with TCP keepalives,
//! so the lock moves to another node when the leader's process or host dies.
//!
//! **Driver.** `tokio-postgres`, driven on a current-thread runtime inside the calling thread
//! (`pg_client`, as rust-postgres's synchronous `postgres` client drives it, plus a time limit on
//! every call and on the handshake): the daemon calls the store from blocking threads only
//! (`spawn_blocking`, the writer thread), so an async pool would only add a hop between runtimes;
//! each connection is owned by a slot of a fixed pool, like the SQLite connections. TLS uses
//! rustls (ring), like the rest of the workspace.
//!
//! Calls block: the daemon runs them on `spawn_blocking`.
//!
//! The audit log is hash-chained (see [`audit`]).

pub mod audit;
pub(crate) mod db;
mod error;
pub mod journal;
mod pg;
mod pg_client;
mod rows;
mod tx;

pub use audit::{AuditRecord, AuditRow, ChainCheck};
pub use error::{Error, Result};
pub use pg::PgConfig;
pub use rows::{
    CaRow, CertFilter, CertRow, CsrRow, EventRow, IssueBasis, Page, RoleRow, StoredKeyRow,
    TenantRow, TokenRow, TrustAnchorRow, Unfinished, WebhookDeliveryRow, WebhookRow,
};
pub use tx::{
    started_json, AcmeAccountRow, CertStatus, CrlState, DnsProviderRow, DnsRecordRow,
    ManagedCertRow, ManagedVersionRow, OcspResponseRow, Revocation, RevokedRow, Settled, Tx,
};

use db::Exec;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_roles.sql"),
    include_str!("migrations/003_lean_indexes.sql"),
    include_str!("migrations/004_csrs_events.sql"),
    include_str!("migrations/005_revocation.sql"),
    include_str!("migrations/006_audit_detail.sql"),
    include_str!("migrations/007_ocsp_signers.sql"),
    include_str!("migrations/008_trust_anchors.sql"),
    include_str!("migrations/009_reservation_tbs.sql"),
    include_str!("migrations/010_webhooks.sql"),
    include_str!("migrations/011_acme.sql"),
    include_str!("migrations/012_crl_blobs.sql"),
    include_str!("migrations/013_acme_challenge_answers.sql"),
    include_str!("migrations/014_ocsp_responses.sql"),
    include_str!("migrations/015_no_serial_index.sql"),
    include_str!("migrations/016_acme_dns_records.sql"),
    include_str!("migrations/017_reservation_started.sql"),
];

/// PostgreSQL's migrations: position `i` here is the same change as position `i` of
/// `MIGRATIONS` (add a new migration to both lists).
const PG_MIGRATIONS: &[&str] = &[
    include_str!("migrations/pg/001_init.sql"),
    include_str!("migrations/pg/002_roles.sql"),
    include_str!("migrations/pg/003_lean_indexes.sql"),
    include_str!("migrations/pg/004_csrs_events.sql"),
    include_str!("migrations/pg/005_revocation.sql"),
    include_str!("migrations/pg/006_audit_detail.sql"),
    include_str!("migrations/pg/007_ocsp_signers.sql"),
    include_str!("migrations/pg/008_trust_anchors.sql"),
    include_str!("migrations/pg/009_reservation_tbs.sql"),
    include_str!("migrations/pg/010_webhooks.sql"),
    include_str!("migrations/pg/011_acme.sql"),
    include_str!("migrations/pg/012_crl_blobs.sql"),
    include_str!("migrations/pg/013_acme_challenge_answers.sql"),
    include_str!("migrations/pg/014_ocsp_responses.sql"),
    include_str!("migrations/pg/015_no_serial_index.sql"),
    include_str!("migrations/pg/016_acme_dns_records.sql"),
    include_str!("migrations/pg/017_reservation_started.sql"),
];

/// How many read connections the SQLite store keeps (WAL lets them read while a write commits).
const READERS: usize = 4;

/// A write for the group commit: runs inside a shared transaction, under its own savepoint.
pub type BatchJob = Box<dyn FnOnce(&Tx<'_>) -> Result<()> + Send>;
/// Receives a batched job's outcome once its transaction committed (or failed).
pub type BatchReply = Box<dyn FnOnce(Result<()>) + Send>;

/// The most jobs one group commit takes.
const MAX_BATCH: usize = 512;

/// WAL pages after which a connection that commits checkpoints by itself (SQLite's
/// `wal_autocheckpoint`, default 1 000): a safety net only. The checkpointer thread
/// ([`checkpoint_loop`]) normally copies the WAL back long before, off the writer's path.
const AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// How long the checkpointer lets commits accumulate once woken by one.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// How durable a batched job must be when its reply is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (`fsync` of the WAL): survives a power loss.
    Disk,
    /// Written to the WAL in the OS page cache (`synchronous=NORMAL`): survives a crash of the
    /// process, not of the machine. It becomes durable with the next `Disk` commit, which syncs the
    /// WAL up to and including it. For records that precede an operation whose own outcome is
    /// committed with `Disk` before anyone sees it (a serial reservation and its `started` audit
    /// record: if the machine dies before the certificate's commit, the certificate never left
    /// the process either). On PostgreSQL such a batch commits with `synchronous_commit = off`.
    Wal,
}

type Queued = (BatchJob, BatchReply, Durability);

/// The SQLite connections.
struct Sqlite {
    readers: Vec<Mutex<Connection>>,
    writer: Mutex<Connection>,
    path: PathBuf,
}

/// The PostgreSQL connections (the group-commit writer owns one more).
struct Postgres {
    settings: Arc<pg::Settings>,
    readers: Vec<Mutex<Option<pg::PgConn>>>,
    writer: Mutex<Option<pg::PgConn>>,
    leader: Mutex<pg::Leader>,
}

impl Drop for Postgres {
    /// A PostgreSQL connection closes by blocking on a runtime of its own, which panics
    /// (and, inside a destructor, aborts the process) on a thread that drives async tasks — where
    /// the daemon's last reference to the store can go at shutdown. There, the connections are
    /// closed on a thread of their own.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let readers = std::mem::take(&mut self.readers);
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let leader = std::mem::take(
            self.leader
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let closing = std::thread::Builder::new()
            .name("store-close".into())
            .spawn(move || drop((readers, writer, leader)));
        if let Ok(t) = closing {
            let _ = t.join();
        }
    }
}

enum Backend {
    Sqlite(Sqlite),
    Postgres(Box<Postgres>),
}

/// The metadata store.
pub struct Store {
    backend: Backend,
    /// The reservation journal (SQLite only; see [`journal`]).
    journal: Option<journal::Journal>,
    next_reader: AtomicUsize,
    batches: mpsc::Sender<Queued>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

/// What an operator can check when the database cannot be opened: SQLite's "unable to open
/// database file" names neither the cause nor the remedy.
fn open_hint(path: &Path) -> String {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return format!(" (the directory {} does not exist)", dir.display());
    }
    " (check that the file and its directory belong to the user the daemon runs as — \
     scaivault under systemd — and that the directory is writable: SQLite creates files beside \
     the database)"
        .to_owned()
}

/// Refuses an existing SQLite file that holds tables but not our schema: another application's
/// database (a `storage.path` typed wrong), which opening would change (WAL mode, then our
/// tables). Read-only: nothing is written, and a missing file is left to be created.
///
/// # Errors
/// [`Error::Corrupt`] naming up to three of its tables.
fn refuse_foreign(path: &Path) -> Result<()> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Ok(());
    }
    // A file SQLite cannot read is reported by `connect`, with its hint.
    let Ok(conn) = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Ok(());
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let Ok(version) = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)) else {
        return Ok(());
    };
    if version != 0 {
        return Ok(());
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name LIMIT 3")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if tables.is_empty() {
        return Ok(());
    }
    Err(Error::Corrupt(format!(
        "{} is not a ScaiVault database: it holds another application's tables ({}) and no \
         ScaiVault schema; storage.path must name a ScaiVault database or a new file",
        path.display(),
        tables.join(", ")
    )))
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| Error::Unavailable(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(Error::from)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| Error::Unavailable(format!("{}: {e}", path.display())))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// The group commit's connection: [`connect`], with statement journals kept in memory
/// (`temp_store=MEMORY`). Every group-commit job runs under a savepoint, whose statement journal
/// SQLite keeps in memory up to 64 KiB and then spills to a temporary file in `/var/tmp` — kept
/// for the rest of the transaction and deleted after it: measured at 16 connections, about ten
/// such files a second, each opened, written (~135 KiB) and unlinked by the writer thread. In
/// memory the journal is truncated whenever a job's savepoint is released, so it never holds
/// more than one job's pages. (Not for the connection that runs migrations: an index built over
/// a large table would then sort in memory too.)
fn connect_batch(path: &Path) -> Result<Connection> {
    let conn = connect(path)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::Unavailable("store lock poisoned".into()))
}

/// A free slot of `slots` if there is one (starting round-robin), else waits for the next one.
fn pick<'s, T>(slots: &'s [Mutex<T>], next: &AtomicUsize) -> Result<MutexGuard<'s, T>> {
    let n = slots.len();
    if n == 0 {
        return Err(Error::Unavailable("no reader".into()));
    }
    let start = next.fetch_add(1, Ordering::Relaxed) % n;
    for k in 0..n {
        if let Some(Ok(g)) = slots.get((start + k) % n).map(Mutex::try_lock) {
            return Ok(g);
        }
    }
    slots
        .get(start)
        .ok_or_else(|| Error::Unavailable("no reader".into()))
        .and_then(lock)
}

impl Store {
    /// Opens (creating if missing) the SQLite database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the file cannot be opened or is not a database;
    /// [`Error::Corrupt`] when it is newer than this build.
    pub fn open(path: &Path) -> Result<Self> {
        refuse_foreign(path)?;
        let mut writer = connect(path).map_err(|e| match e {
            Error::Unavailable(m) => Error::Unavailable(format!("{m}{}", open_hint(path))),
            e => e,
        })?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| connect(path).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let batch_conn = connect_batch(path)?;
        let checkpoints = start_checkpointer(connect(path)?)?;
        let batches = start_writer(BatchConn::Sqlite(batch_conn), Some(checkpoints))?;
        Ok(Store {
            backend: Backend::Sqlite(Sqlite {
                readers,
                writer: Mutex::new(writer),
                path: path.to_path_buf(),
            }),
            journal: Some(journal::Journal::new(path)),
            next_reader: AtomicUsize::new(0),
            batches,
        })
    }

    /// Connects to PostgreSQL (a pool of `pool_size` readers, a writer and a group-commit writer)
    /// and applies pending migrations.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached or the URL is invalid;
    /// [`Error::Corrupt`] when its schema is newer than this build.
    pub fn open_postgres(cfg: &PgConfig) -> Result<Self> {
        let settings = Arc::new(pg::Settings::new(cfg)?);
        let mut writer = Some(settings.connect()?);
        pg::migrate(&settings, &mut writer)?;
        let readers = (0..cfg.pool_size.max(1))
            .map(|_| settings.connect().map(|c| Mutex::new(Some(c))))
            .collect::<Result<Vec<_>>>()?;
        let batch_conn = Some(settings.connect()?);
        let batches = start_writer(
            BatchConn::Postgres(settings.clone(), Box::new(batch_conn)),
            None,
        )?;
        Ok(Store {
            backend: Backend::Postgres(Box::new(Postgres {
                settings,
                readers,
                writer: Mutex::new(writer),
                leader: Mutex::new(pg::Leader::default()),
            })),
            journal: None,
            next_reader: AtomicUsize::new(0),
            batches,
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Where issuances record their reservations before signing: the journal next to the SQLite
    /// file; `None` on PostgreSQL, where the reservation is a row of the shared database (another
    /// node reconciles it if this one never comes back).
    pub fn journal(&self) -> Option<&journal::Journal> {
        self.journal.as_ref()
    }

    /// The database file (SQLite only).
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(s) => Some(&s.path),
            Backend::Postgres(_) => None,
        }
    }

    /// Runs `f` in a read transaction on one of the read connections.
    ///
    /// # Errors
    /// What `f` returns, or [`Error::Unavailable`].
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let conn = pick(&s.readers, &self.next_reader)?;
                in_transaction(&conn, "BEGIN DEFERRED", |c| f(&Tx::new(c)))
            }
            Backend::Postgres(p) => {
                // Refused at once, before waiting for a connection, while the database is known
                // not to answer.
                p.settings.check_not_paused()?;
                let mut slot = pick(&p.readers, &self.next_reader)?;
                pg::run(&p.settings, &mut slot, pg::BEGIN_READ, |tx| f(&Tx::new(tx)))
            }
        }
    }

    /// Runs `f`, a few indexed lookups that need not see one snapshot (the request path's token,
    /// role and CA reads): with PostgreSQL without a transaction, each statement on its own (one
    /// round trip each instead of three for a one-statement transaction), retried once on a
    /// fresh connection when the pooled one was dead; with SQLite the same as [`Store::read`].
    ///
    /// # Errors
    /// What `f` returns, or [`Error::Unavailable`].
    pub fn lookup<T>(&self, f: impl Fn(&Tx<'_>) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(_) => self.read(f),
            Backend::Postgres(p) => {
                // Refused at once, before waiting for a connection, while the database is known
                // not to answer.
                p.settings.check_not_paused()?;
                let mut slot = pick(&p.readers, &self.next_reader)?;
                pg::run_autocommit(&p.settings, &mut slot, |tx| f(&Tx::new(tx)))
            }
        }
    }

    /// Runs `f` in one write transaction of its own, committed only when `f` succeeds.
    ///
    /// # Errors
    /// What `f` returns, or the commit's error; nothing is written then.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let mut conn = lock(&s.writer)?;
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&Tx::new(&*tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres(p) => {
                p.settings.check_not_paused()?;
                let mut slot = lock(&p.writer)?;
                pg::run(&p.settings, &mut slot, &pg::begin_write(true), |tx| {
                    f(&Tx::new(tx))
                })
            }
        }
    }

    /// Queues `job` for the group commit and calls `reply` with its outcome once the batch it
    /// joined has committed: jobs that arrive while a batch is being written share the next
    /// transaction and its one `fsync`, each under its own savepoint, so a failing job leaves
    /// nothing behind and does not affect the others. A dedicated writer thread runs the batches,
    /// so callers need not block a thread while they wait.
    pub fn submit(&self, job: BatchJob, reply: BatchReply) {
        self.submit_with(job, reply, Durability::Disk);
    }

    /// [`Store::submit`] with a chosen [`Durability`]: a batch whose jobs are all
    /// [`Durability::Wal`] commits without an `fsync`.
    pub fn submit_with(&self, job: BatchJob, reply: BatchReply, durability: Durability) {
        if let Err(mpsc::SendError((_, reply, _))) = self.batches.send((job, reply, durability)) {
            reply(Err(Error::Unavailable(
                "the store writer has stopped".into(),
            )));
        }
    }

    /// [`Store::submit`], waiting for the outcome on this thread.
    ///
    /// # Errors
    /// What the job returns, or the commit's error (then nothing of the batch was written).
    pub fn write_batched(&self, job: BatchJob) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            job,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .map_err(|_| Error::Unavailable("the store writer has stopped".into()))?
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn ping(&self) -> Result<()> {
        self.read(|tx| tx.ping())
    }

    /// Whether a write could start now: SQLite takes the write lock (`BEGIN IMMEDIATE`, within
    /// the busy timeout) and lets it go without writing, so a database that reads but refuses
    /// writes (another process holding the lock, a read-only file) is not reported healthy;
    /// PostgreSQL as [`Store::ping`].
    ///
    /// # Errors
    /// [`Error::Unavailable`] and the like when it cannot.
    pub fn ping_write(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(s) => {
                let conn = pick(&s.readers, &self.next_reader)?;
                in_transaction(&conn, "BEGIN IMMEDIATE", |c| Tx::new(c).ping())
            }
            Backend::Postgres(_) => self.ping(),
        }
    }

    /// Whether this node leads the cluster's scheduled jobs (CRL rebuilds, OCSP pre-signing, ACME
    /// renewals, webhook deliveries). SQLite: always (one node). PostgreSQL: this node holds the
    /// leadership advisory lock on a connection kept for it, checked with a round trip on every
    /// call; any failure drops that connection (which releases the lock) and answers false, so
    /// call it before each run of a job. A node that dies loses the lock when its connection
    /// closes (TCP keepalives on both sides notice a dead host within about half a minute).
    ///
    /// # Errors
    /// [`Error::Unavailable`] only when the store's own lock is poisoned.
    pub fn try_lead(&self) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(p) => Ok(lock(&p.leader)?.try_lead(&p.settings, None)),
        }
    }

    /// [`Store::try_lead`] for a cluster whose nodes check every half `lease`: the leadership
    /// session is also ended by the server once it has been silent for a `lease`
    /// (`idle_session_timeout`), so a leader whose path to the database hangs loses the lock
    /// and another node takes over.
    ///
    /// # Errors
    /// As [`Store::try_lead`].
    pub fn try_lead_for(&self, lease: std::time::Duration) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(p) => Ok(lock(&p.leader)?.try_lead(&p.settings, Some(lease))),
        }
    }

    /// Gives up leadership (PostgreSQL: closes the leadership connection), e.g. at shutdown.
    pub fn step_down(&self) {
        if let Backend::Postgres(p) = &self.backend {
            if let Ok(mut l) = lock(&p.leader) {
                l.step_down();
            }
        }
    }
}

/// The group-commit writer's connection.
enum BatchConn {
    Sqlite(Connection),
    Postgres(Arc<pg::Settings>, Box<Option<pg::PgConn>>),
}

fn start_writer(conn: BatchConn, checkpoints: Option<Checkpoints>) -> Result<mpsc::Sender<Queued>> {
    let (batches, jobs) = mpsc::channel();
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || group_commit_loop(conn, jobs, checkpoints))
        .map_err(|e| Error::Unavailable(format!("cannot start the store writer: {e}")))?;
    Ok(batches)
}

/// The group writer's side of the checkpointer.
struct Checkpoints {
    /// Wakes the checkpointer after a commit.
    wake: mpsc::SyncSender<()>,
    /// Set by the checkpointer after each of its checkpoints: the writer then copies what was
    /// committed meanwhile, so that the WAL can start over (see [`group_commit_loop`]).
    ran: Arc<AtomicBool>,
}

/// Starts the SQLite checkpointer on its own connection; the writer wakes it after its commits.
fn start_checkpointer(conn: Connection) -> Result<Checkpoints> {
    let (wake, woken) = mpsc::sync_channel(1);
    let ran = Arc::new(AtomicBool::new(false));
    let done = ran.clone();
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || checkpoint_loop(&conn, &woken, &done))
        .map_err(|e| Error::Unavailable(format!("cannot start the store checkpointer: {e}")))?;
    Ok(Checkpoints { wake, ran })
}

/// Copies committed WAL frames back into the database file, at most every [`CHECKPOINT_EVERY`]
/// while commits keep coming and not at all when idle. Left to the committing connection (SQLite's
/// default), a checkpoint runs inside a commit every ~1 000 pages — several milliseconds during
/// which every queued write waits; a `PASSIVE` checkpoint on another connection runs beside the
/// writer (it copies only what no reader still needs and never waits for readers or writers).
/// A failing checkpoint is left to the next one, to the writer's own safety net
/// ([`AUTOCHECKPOINT_PAGES`]) and to the commits, which report the same disk's errors. Ends when
/// the writer does.
///
/// **The WAL starts over.** SQLite rewinds the WAL to its first frame only when a write
/// transaction begins with every frame already in the database file; under a steady stream of
/// commits a checkpoint beside the writer never catches up (each commit lands while it copies),
/// so the WAL grew for as long as the load lasted (93 MB after 30 s of issuance) and every commit
/// appended to it — an `fsync` that must also journal the file's new size and blocks (~230 µs
/// here, against ~140 µs for rewriting blocks the file already has). So after each checkpoint
/// the writer, between two batches, copies the few commits that landed meanwhile itself: the
/// next batch then rewinds the WAL, which stays at the size of ~50 ms of commits and is
/// rewritten in place (measured in docs/PERFORMANCE.md).
fn checkpoint_loop(conn: &Connection, woken: &mpsc::Receiver<()>, ran: &AtomicBool) {
    while woken.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_EVERY);
        while woken.try_recv().is_ok() {}
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        ran.store(true, Ordering::Release);
    }
}

/// The writer thread: takes every job waiting, runs them in one transaction, commits once, replies.
/// The commit syncs the WAL (`synchronous=FULL`) unless every job of the batch asked for
/// [`Durability::Wal`].
fn group_commit_loop(
    mut conn: BatchConn,
    jobs: mpsc::Receiver<Queued>,
    checkpoints: Option<Checkpoints>,
) {
    let mut synced = true; // `connect` set synchronous=FULL
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let want_sync = batch.iter().any(|(_, _, d)| *d == Durability::Disk);
        let mut work = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (job, reply, _) in batch {
            work.push(job);
            replies.push(reply);
        }
        let n = work.len();
        let fail_all = |e: Error| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
        let results = match &mut conn {
            BatchConn::Sqlite(c) => {
                if want_sync != synced {
                    let mode = if want_sync { "FULL" } else { "NORMAL" };
                    match c.pragma_update(None, "synchronous", mode) {
                        Ok(()) => {
                            synced = want_sync;
                            run_batch_sqlite(c, work)
                        }
                        Err(e) => fail_all(Error::from(e)),
                    }
                } else {
                    run_batch_sqlite(c, work)
                }
            }
            BatchConn::Postgres(settings, slot) => {
                match pg::run(settings, slot, &pg::begin_write(want_sync), |tx| {
                    Ok(run_jobs(tx, work))
                }) {
                    Ok(r) => r,
                    Err(e) => fail_all(e),
                }
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            reply(result);
        }
        if let Some(c) = &checkpoints {
            // Full: the checkpointer is already due to run; gone: the safety net remains.
            let _ = c.wake.try_send(());
            if let BatchConn::Sqlite(db) = &conn {
                if c.ran.swap(false, Ordering::AcqRel) {
                    // Copies what was committed while the checkpointer ran (a few commits'
                    // pages), so that the WAL is wholly in the database file when the next
                    // batch begins and SQLite starts the WAL over from its first frame. A
                    // failure is left to the next round.
                    let _ = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            }
        }
    }
}

/// Runs each job under a savepoint of the open transaction on `db`.
fn run_jobs(db: &dyn Exec, jobs: Vec<BatchJob>) -> Vec<Result<()>> {
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Err(e) = db.repeat("SAVEPOINT job") {
            results.push(Err(e));
            continue;
        }
        let r = job(&Tx::new(db));
        let end = if r.is_ok() {
            db.repeat("RELEASE job")
        } else {
            db.batch("ROLLBACK TO job; RELEASE job")
        };
        match end {
            Ok(()) => results.push(r),
            Err(e) => results.push(Err(e)),
        }
    }
    results
}

fn run_batch_sqlite(conn: &mut Connection, jobs: Vec<BatchJob>) -> Vec<Result<()>> {
    let n = jobs.len();
    match in_transaction(conn, "BEGIN IMMEDIATE", |c| Ok(run_jobs(c, jobs))) {
        Ok(results) => results,
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

/// Runs `f` in one read transaction on the SQLite file at `path`, opened read-only and not
/// migrated: what `scaivault audit verify` needs to check a backup without changing it (a
/// pre-upgrade backup stays usable by the version that wrote it, one on read-only media can be
/// checked, and no `-wal`/`-shm` files are left beside a copy that has none).
///
/// # Errors
/// [`Error::Unavailable`] when the file cannot be opened or read; [`Error::Corrupt`] when it is
/// no ScaiVault database (not SQLite, or no schema: an empty file, a backup of a path that did
/// not exist) or its schema is newer than this build.
pub fn read_file<T>(path: &Path, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
    use rusqlite::OpenFlags;
    let shown = path.display();
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let conn = if Path::new(&wal).exists() {
        // A live database (or one a crash left with its log): read through the log, which is
        // there already.
        Connection::open_with_flags(path, flags)
    } else {
        // A copy without a log (a backup): read as an immutable file, or SQLite would create
        // `-wal` and `-shm` files beside it (and could not, on read-only media).
        let uri = path
            .to_string_lossy()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23");
        Connection::open_with_flags(
            format!("file:{uri}?immutable=1"),
            flags | OpenFlags::SQLITE_OPEN_URI,
        )
    }
    .map_err(|e| {
        Error::Unavailable(format!(
            "{shown}: {e} (check that this user may read the file and its directory: run as the \
             daemon's user, scaivault under systemd)"
        ))
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| Error::Corrupt(format!("{shown} is not a SQLite database: {e}")))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version == 0 {
        return Err(Error::Corrupt(format!(
            "{shown} is not a ScaiVault database: it has no schema (an empty file, or a backup \
             that copied nothing)"
        )));
    }
    if version > known {
        return Err(Error::Corrupt(format!(
            "{shown}: database schema version {version} is newer than this build ({known}): a \
             newer scaivault wrote it; check it with that version"
        )));
    }
    in_transaction(&conn, "BEGIN DEFERRED", |c| f(&Tx::new(c)))
}

/// Runs `f` between `begin` and `COMMIT` on `conn`, rolling back when `f` or the commit fails.
/// `begin` and `COMMIT` stay prepared on the connection (`rusqlite::Transaction` parses them again
/// on every call: twice per request on the read path, once per group commit).
fn in_transaction<T>(
    conn: &Connection,
    begin: &str,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    conn.prepare_cached(begin)?.execute([])?;
    let out = f(conn).and_then(|v| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(v)
    });
    if out.is_err() && !conn.is_autocommit() {
        // Nothing of a failed transaction stays; a failing ROLLBACK leaves the connection to
        // SQLite's own recovery (the next BEGIN fails and is reported).
        let _ = conn.execute_batch("ROLLBACK");
    }
    out
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    loop {
        // The version is read inside the write transaction: of two processes opening the file at
        // once, the second waits and then sees the first's work.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > known {
            return Err(Error::Corrupt(format!(
                "database schema version {version} is newer than this build ({known}): a newer \
                 scaivault wrote it; run that version, or restore the backup taken before the \
                 upgrade (docs/OPERATIONS.md §7)"
            )));
        }
        let Some(sql) = MIGRATIONS.get(usize::try_from(version).unwrap_or(usize::MAX)) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;
