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
pub use rows::{CaRow, CertFilter, CertRow, Page, RoleRow, StoredKeyRow, TenantRow, TokenRow};
pub use tx::Tx;

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_roles.sql"),
];

/// How many read connections the store keeps (WAL lets them read while a write commits).
const READERS: usize = 4;

/// A write for the group commit: runs inside a shared transaction, under its own savepoint.
pub type BatchJob = Box<dyn FnOnce(&Tx<'_>) -> Result<()> + Send>;

#[derive(Default)]
struct BatchState {
    next_id: u64,
    queue: Vec<(u64, BatchJob)>,
    results: std::collections::HashMap<u64, Result<()>>,
    leader: bool,
}

/// The metadata store.
pub struct Store {
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    writer: Mutex<Connection>,
    batch_conn: Mutex<Connection>,
    batch: Mutex<BatchState>,
    batch_done: Condvar,
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
        Ok(Store {
            readers,
            next_reader: AtomicUsize::new(0),
            writer: Mutex::new(writer),
            batch_conn: Mutex::new(connect(path)?),
            batch: Mutex::new(BatchState::default()),
            batch_done: Condvar::new(),
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

    /// Runs `job` with group commit: jobs arriving together share one transaction and one
    /// `fsync`, each under its own savepoint, so a failing job leaves nothing behind and does not
    /// affect the others. The first caller to find no batch running becomes the leader, runs every
    /// queued job, commits, and hands out the results; the others wait. Returns once the job's
    /// changes are durable (or failed).
    ///
    /// # Errors
    /// What the job returns, or the commit's error (then nothing of the batch was written).
    pub fn write_batched(&self, job: BatchJob) -> Result<()> {
        let mut state = lock(&self.batch)?;
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push((id, job));
        loop {
            if let Some(r) = state.results.remove(&id) {
                return r;
            }
            if !state.leader {
                state.leader = true;
                let jobs = std::mem::take(&mut state.queue);
                drop(state);
                let results = self.run_batch(jobs);
                state = lock(&self.batch)?;
                state.leader = false;
                state.results.extend(results);
                self.batch_done.notify_all();
                continue;
            }
            state = self
                .batch_done
                .wait(state)
                .map_err(|_| Error::Unavailable("store lock poisoned".into()))?;
        }
    }

    fn run_batch(&self, jobs: Vec<(u64, BatchJob)>) -> Vec<(u64, Result<()>)> {
        let ids: Vec<u64> = jobs.iter().map(|(id, _)| *id).collect();
        let fail_all = |e: Error| {
            ids.iter()
                .map(|id| (*id, Err(e.clone())))
                .collect::<Vec<_>>()
        };
        let mut conn = match lock(&self.batch_conn) {
            Ok(c) => c,
            Err(e) => return fail_all(e),
        };
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(t) => t,
            Err(e) => return fail_all(Error::from(e)),
        };
        let mut results = Vec::with_capacity(jobs.len());
        for (id, job) in jobs {
            if let Err(e) = tx.execute_batch("SAVEPOINT job") {
                results.push((id, Err(Error::from(e))));
                continue;
            }
            let r = job(&Tx::new(&tx));
            let end = if r.is_ok() {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            match tx.execute_batch(end) {
                Ok(()) => results.push((id, r)),
                Err(e) => results.push((id, Err(Error::from(e)))),
            }
        }
        match tx.commit() {
            Ok(()) => results,
            Err(e) => fail_all(Error::from(e)),
        }
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn ping(&self) -> Result<()> {
        self.read(|tx| tx.ping())
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
