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

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::QueryReturnedNoRows => Error::NotFound,
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                ErrorCode::ConstraintViolation => {
                    Error::Conflict(msg.clone().unwrap_or_else(|| "constraint".into()))
                }
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
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
