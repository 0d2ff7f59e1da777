//! # scaivault-store
//!
//! All SQL of ScaiVault lives here, behind a narrow interface: [`Store::read`] and
//! [`Store::write`] hand a closure a [`Tx`] with typed methods; a write is one `IMMEDIATE`
//! transaction, so an object and its audit record land together or not at all. rusqlite types
//! never leave the crate, so a PostgreSQL backend can take its place later.
//!
//! SQLite runs in WAL mode with `synchronous=FULL` and foreign keys on; migrations are versioned
//! by `PRAGMA user_version` and applied at open. Calls block: the daemon runs them on
//! `spawn_blocking`.
//!
//! The audit log is hash-chained (see [`audit`]).

pub mod audit;
mod error;
mod rows;
mod tx;

pub use audit::{AuditRecord, AuditRow, ChainCheck};
pub use error::{Error, Result};
pub use rows::{
    CaRow, CertFilter, CertRow, CsrRow, EventRow, Page, RoleRow, StoredKeyRow, TenantRow, TokenRow,
    TrustAnchorRow, WebhookDeliveryRow, WebhookRow,
};
pub use tx::{
    AcmeAccountRow, CertStatus, CrlState, DnsProviderRow, ManagedCertRow, ManagedVersionRow,
    RevokedRow, Tx,
};

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};

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
];

/// How many read connections the store keeps (WAL lets them read while a write commits).
const READERS: usize = 4;

/// A write for the group commit: runs inside a shared transaction, under its own savepoint.
pub type BatchJob = Box<dyn FnOnce(&Tx<'_>) -> Result<()> + Send>;
/// Receives a batched job's outcome once its transaction committed (or failed).
pub type BatchReply = Box<dyn FnOnce(Result<()>) + Send>;

/// The most jobs one group commit takes.
const MAX_BATCH: usize = 512;

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
    /// the process either).
    Wal,
}

type Queued = (BatchJob, BatchReply, Durability);

/// The metadata store.
pub struct Store {
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    writer: Mutex<Connection>,
    batches: mpsc::Sender<Queued>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
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
    Ok(conn)
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::Unavailable("store lock poisoned".into()))
}

impl Store {
    /// Opens (creating if missing) the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the file cannot be opened or is not a database;
    /// [`Error::Corrupt`] when it is newer than this build.
    pub fn open(path: &Path) -> Result<Self> {
        let mut writer = connect(path)?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| connect(path).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        let batch_conn = connect(path)?;
        let (batches, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || group_commit_loop(batch_conn, jobs))
            .map_err(|e| Error::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Store {
            readers,
            next_reader: AtomicUsize::new(0),
            writer: Mutex::new(writer),
            batches,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction on one of the read connections.
    ///
    /// # Errors
    /// What `f` returns, or [`Error::Unavailable`].
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len().max(1);
        let slot = self
            .readers
            .get(i)
            .ok_or_else(|| Error::Unavailable("no reader".into()))?;
        let mut conn = lock(slot)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        let out = f(&Tx::new(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in one write transaction of its own, committed only when `f` succeeds.
    ///
    /// # Errors
    /// What `f` returns, or the commit's error; nothing is written then.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.writer)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&Tx::new(&tx))?;
        tx.commit()?;
        Ok(out)
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
}

/// The writer thread: takes every job waiting, runs them in one transaction, commits once, replies.
/// The commit syncs the WAL (`synchronous=FULL`) unless every job of the batch asked for
/// [`Durability::Wal`].
fn group_commit_loop(mut conn: Connection, jobs: mpsc::Receiver<Queued>) {
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
        let results = if want_sync != synced {
            let mode = if want_sync { "FULL" } else { "NORMAL" };
            match conn.pragma_update(None, "synchronous", mode) {
                Ok(()) => {
                    synced = want_sync;
                    run_batch(&mut conn, work)
                }
                Err(e) => {
                    let e = Error::from(e);
                    work.iter().map(|_| Err(e.clone())).collect()
                }
            }
        } else {
            run_batch(&mut conn, work)
        };
        for (reply, result) in replies.into_iter().zip(results) {
            reply(result);
        }
    }
}

fn run_batch(conn: &mut Connection, jobs: Vec<BatchJob>) -> Vec<Result<()>> {
    let n = jobs.len();
    let fail_all = |e: Error| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(t) => t,
        Err(e) => return fail_all(Error::from(e)),
    };
    let mut results = Vec::with_capacity(n);
    for job in jobs {
        if let Err(e) = tx.execute_batch("SAVEPOINT job") {
            results.push(Err(Error::from(e)));
            continue;
        }
        let r = job(&Tx::new(&tx));
        let end = if r.is_ok() {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        match tx.execute_batch(end) {
            Ok(()) => results.push(r),
            Err(e) => results.push(Err(Error::from(e))),
        }
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => fail_all(Error::from(e)),
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        return Err(Error::Corrupt(format!(
            "database schema version {version} is newer than this build ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
