//! The crate's one error type.

/// The crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Storage failures. rusqlite errors are kept as text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached, is locked past the busy timeout, or the disk failed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was broken (`what` names it).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// Stored data is inconsistent or from a newer version.
    #[error("database unusable: {0}")]
    Corrupt(String),
    /// Any other SQL failure (a bug).
    #[error("database error: {0}")]
    Sql(String),
    /// A `COMMIT` was sent and its answer never came (the connection broke or the server went
    /// silent): the transaction may or may not have been applied, perhaps later. Callers treat it
    /// as [`Error::Unavailable`], and settle what the transaction may have written.
    #[error("database unavailable (the commit was not confirmed): {0}")]
    Unconfirmed(String),
    /// What a write was decided on has changed since it was read (see
    /// [`crate::Tx::check_issue_basis`]); `what` names it.
    #[error("changed since read: {0}")]
    Changed(String),
}

impl Error {
    /// Whether the database answered but another writer held it past the wait (SQLite's busy
    /// timeout: `database is locked`; PostgreSQL's `lock_timeout`: SQLSTATE `55P03`). The
    /// database itself is fine: the caller says `database_unavailable`, whatever the write was.
    pub fn is_lock_wait(&self) -> bool {
        match self {
            Error::Unavailable(why) => {
                why.starts_with(LOCKED) || why.starts_with("55P03") || why.contains(": 55P03")
            }
            _ => false,
        }
    }
}

/// How a SQLite lock held past the busy timeout starts its [`Error::Unavailable`] text.
const LOCKED: &str = "locked by another connection: ";

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::QueryReturnedNoRows => Error::NotFound,
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                ErrorCode::ConstraintViolation => {
                    Error::Conflict(msg.clone().unwrap_or_else(|| "constraint".into()))
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    Error::Unavailable(format!("{LOCKED}{e}"))
                }
                ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::NotADatabase
                | ErrorCode::PermissionDenied
                | ErrorCode::OutOfMemory => Error::Unavailable(e.to_string()),
                ErrorCode::DatabaseCorrupt => Error::Corrupt(e.to_string()),
                _ => Error::Sql(e.to_string()),
            },
            _ => Error::Sql(e.to_string()),
        }
    }
}

#[cfg(test)]
mod lock_tests {
    use super::Error;
    use rusqlite::ffi;

    #[test]
    fn a_lock_held_past_the_wait_is_told_from_other_outages() {
        let sqlite =
            |code| Error::from(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
        assert!(sqlite(ffi::SQLITE_BUSY).is_lock_wait());
        assert!(sqlite(ffi::SQLITE_LOCKED).is_lock_wait());
        for other in [ffi::SQLITE_FULL, ffi::SQLITE_READONLY, ffi::SQLITE_IOERR] {
            let e = sqlite(other);
            assert!(
                matches!(e, Error::Unavailable(_)) && !e.is_lock_wait(),
                "{e:?}"
            );
        }
        assert!(
            Error::Unavailable("55P03: canceling statement due to lock timeout".into())
                .is_lock_wait()
        );
        assert!(!Error::Unavailable("08006: connection failure".into()).is_lock_wait());
        assert!(!Error::Unconfirmed("locked by another connection: x".into()).is_lock_wait());
    }
}
