//! The daemon's one error type, [`ApiError`], and the single place where the errors of the other
//! crates become HTTP statuses and stable problem codes (RFC 9457). Rendering lives in
//! `api::problem`.

use rocket::http::Status;
use scaivault_core::ErrorKind;

/// An error on its way to the client: status, stable code, and a detail safe to show.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: Status,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human-readable detail (never a secret; generic for 5xx).
    pub detail: String,
    /// Seconds for a `Retry-After` header (`429`, some `503`s).
    pub retry_after: Option<u64>,
    /// The failure is in the audit trail already (an issuance that reserved a serial settles
    /// its `started` record itself): [`crate::app::App::finish`] adds no second record.
    pub audited: bool,
    /// For a 5xx, what went wrong (never shown to the client): logged where it happens, and
    /// again with the request id when the problem document is written.
    pub cause: Option<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: Status, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            audited: false,
            cause: None,
        }
    }

    /// `self` with `cause` (see [`ApiError::cause`]).
    #[must_use]
    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// `429 rate_limited`: the `what` bucket is empty for `wait`.
    pub fn rate_limited(what: &str, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut e = Self::new(
            Status::TooManyRequests,
            "rate_limited",
            format!("rate limit of this {what} reached; retry in {secs} s"),
        );
        e.retry_after = Some(secs.max(1));
        e
    }

    /// `400` with `code`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, code, detail)
    }

    /// `404`: missing, or another tenant's (indistinguishable).
    pub fn not_found(code: &'static str, what: &str) -> Self {
        Self::new(Status::NotFound, code, format!("{what} not found"))
    }

    /// `409`.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::Conflict, code, detail)
    }

    /// `403`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(Status::Forbidden, "forbidden", detail)
    }

    /// `401`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Status::Unauthorized, "unauthorized", detail)
    }

    /// `503` because the audit record could not be written: the call did nothing.
    pub fn audit_unavailable() -> Self {
        Self::new(
            Status::ServiceUnavailable,
            "audit_unavailable",
            "the audit record could not be written; nothing was done",
        )
    }

    /// The answer to a failed transaction that carried the call's audit record: a refusal by the
    /// data (not found, a conflict) as usual, any other failure as `503 audit_unavailable` (the
    /// record, and so the change, was not written).
    pub fn from_audited_write(e: scaivault_store::Error) -> Self {
        use scaivault_store::Error as S;
        match e {
            // Another writer held the database: it is unavailable, not the audit trail.
            S::NotFound | S::Conflict(_) | S::Changed(_) => e.into(),
            _ if e.is_lock_wait() => e.into(),
            S::Unavailable(cause) | S::Unconfirmed(cause) | S::Corrupt(cause) | S::Sql(cause) => {
                tracing::error!(%cause, "a change and its audit record could not be written");
                Self::audit_unavailable().with_cause(cause)
            }
        }
    }

    /// `503 hsm_unavailable` for a token call that did not answer in time (`[hsm] call_timeout`).
    pub fn hsm_unavailable() -> Self {
        Self::new(
            Status::ServiceUnavailable,
            "hsm_unavailable",
            "the HSM is unavailable",
        )
    }

    /// `500`, logged with its cause; the client sees a generic detail.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(
            Status::InternalServerError,
            "internal_error",
            "internal error; see the server log",
        )
        .with_cause(cause)
    }

    /// Whether this error is on our side (5xx).
    pub fn is_server_error(&self) -> bool {
        self.status.code >= 500
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.code, self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl From<scaivault_core::Error> for ApiError {
    fn from(e: scaivault_core::Error) -> Self {
        match e.kind() {
            ErrorKind::Invalid => ApiError::bad_request(e.code(), e.to_string()),
            ErrorKind::Conflict => ApiError::conflict(e.code(), e.to_string()),
            ErrorKind::Unavailable => {
                tracing::error!(cause = %e, "hsm unavailable");
                let detail = if e.code() == "hsm_key_missing" {
                    "a key this needs is not on the token (deleted, or the token was replaced); \
                     see the server log"
                } else {
                    "the HSM is unavailable"
                };
                ApiError::new(Status::ServiceUnavailable, e.code(), detail).with_cause(&e)
            }
            ErrorKind::Internal => {
                tracing::error!(cause = %e, code = e.code(), "internal error");
                ApiError::new(
                    Status::InternalServerError,
                    e.code(),
                    "internal error; see the server log",
                )
                .with_cause(&e)
            }
        }
    }
}

impl From<scaivault_hsm::Error> for ApiError {
    fn from(e: scaivault_hsm::Error) -> Self {
        ApiError::from(scaivault_core::Error::from(e))
    }
}

impl From<scaivault_store::Error> for ApiError {
    fn from(e: scaivault_store::Error) -> Self {
        use scaivault_store::Error as S;
        match e {
            S::NotFound => ApiError::not_found("not_found", "object"),
            S::Conflict(what) => ApiError::conflict("conflict", what),
            S::Unavailable(cause) | S::Unconfirmed(cause) => {
                tracing::error!(%cause, "database unavailable");
                ApiError::new(
                    Status::ServiceUnavailable,
                    "database_unavailable",
                    "the database is unavailable",
                )
                .with_cause(cause)
            }
            S::Corrupt(cause) | S::Sql(cause) => ApiError::internal(cause),
            S::Changed(what) => ApiError::conflict(
                "changed_concurrently",
                format!("the {what} changed during the request; try again"),
            ),
        }
    }
}

impl From<scaivault_dns::DnsError> for ApiError {
    fn from(e: scaivault_dns::DnsError) -> Self {
        use scaivault_dns::DnsError as D;
        let status = match &e {
            D::UnknownKind(_) | D::InvalidConfig { .. } => Status::BadRequest,
            D::Provider(_) => Status::BadGateway,
            D::PropagationTimeout { .. } => Status::GatewayTimeout,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}
