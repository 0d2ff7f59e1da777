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
use std::sync::Mutex;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_init.sql"),
    include_str!("migrations/002_roles.sql"),
];

/// The metadata store.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if missing) the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the file cannot be opened or is not a database;
    /// [`Error::Corrupt`] when it is newer than this build.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)
            .map_err(|e| Error::Unavailable(format!("{}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(Error::from)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| Error::Unavailable(format!("{}: {e}", path.display())))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction.
    ///
    /// # Errors
    /// What `f` returns, or [`Error::Unavailable`].
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::Unavailable("store lock poisoned".into()))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        let out = f(&Tx::new(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in one write transaction, committed only when `f` succeeds.
    ///
    /// # Errors
    /// What `f` returns, or the commit's error; nothing is written then.
    pub fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::Unavailable("store lock poisoned".into()))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&Tx::new(&tx))?;
        tx.commit()?;
        Ok(out)
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
