//! Request guards and the request fairing: a request id for every request (echoed as
//! `X-Request-Id`, written into problems and audit records), the bearer-token guard that resolves
//! a [`Caller`], and one log line per request (method, path, status, duration, request id; never
//! headers or bodies).

use super::problem::remember;
use crate::app::{App, Caller};
use crate::error::ApiError;
use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::request::{FromRequest, Outcome};
use rocket::{Data, Request, Response};
use std::time::Instant;

/// This request's id: the client's `X-Request-Id` when it is short and plain, else a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh id: 128 bits from the thread's CSPRNG (ChaCha, seeded and reseeded from the OS),
    /// not a `getrandom` system call per request. Request ids correlate logs; they are no secret.
    pub fn new() -> Self {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        RequestId(format!("req_{}", hex::encode(b)))
    }
}

impl RequestId {
    /// Whether a client's `X-Request-Id` is kept: 1 to 64 letters, digits, `-`, `_`, `.`.
    pub fn acceptable(v: &str) -> bool {
        super::public::head::request_id_acceptable(v)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// When the request arrived, and its method as sent (Rocket answers a `HEAD` by routing it as a
/// `GET`, and the request then says `GET`).
struct Started(Instant, rocket::http::Method);

/// Assigns request ids, sets `X-Request-Id`, logs one line per request.
pub struct RequestLog;

#[rocket::async_trait]
impl Fairing for RequestLog {
    fn info(&self) -> Info {
        Info {
            name: "request id and log",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        let given = req
            .headers()
            .get_one("X-Request-Id")
            .filter(|v| RequestId::acceptable(v))
            .map(str::to_owned);
        let _ = req.local_cache(|| given.map(RequestId).unwrap_or_default());
        let method = req.method();
        let _ = req.local_cache(|| Started(Instant::now(), method));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let id = req.local_cache(RequestId::new).0.clone();
        let started = req.local_cache(|| Started(Instant::now(), req.method()));
        let ms = started.0.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "scaivault::http",
            method = %started.1,
            path = %crate::auth::loggable_path(req.uri().path().as_str()),
            status = res.status().code,
            ms = format_args!("{ms:.2}"),
            request_id = %id,
        );
        if let Some(app) = req.rocket().state::<App>() {
            app.metrics.http_answered(res.status().code);
        }
        res.set_header(Header::new("X-Request-Id", id));
        // What a token's holder reads (issued private keys, new tokens, stored keys, lists) is
        // kept out of every cache, as Vault does; public answers (OCSP, CRLs, CA certificates)
        // keep their own caching headers.
        if req.headers().contains("Authorization") && !res.headers().contains("Cache-Control") {
            res.set_header(Header::new("Cache-Control", "no-store"));
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Caller {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        caller(req, false)
    }
}

/// The caller of an issuance endpoint (`/v1/pki/issue/{role}`, `/v1/pki/sign/{role}`): the same
/// checks as [`Caller`], with the token row possibly from [`crate::issuecache`] — the serial
/// reservation checks it against the database before anything is signed.
pub struct IssuingCaller(pub Caller);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for IssuingCaller {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        caller(req, true).map(IssuingCaller)
    }
}

/// The first query parameter named twice, if any: a handler reading one value would otherwise
/// see none (Rocket turns a repeated scalar into an error, which an `Option` parameter swallows),
/// and a filter the caller asked for would silently not apply.
fn repeated_query_key(req: &Request<'_>) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    req.query_fields()
        .map(|f| f.name.source().as_str())
        .find(|name| !seen.insert(*name))
        .map(str::to_owned)
}

/// `400 repeated_query_parameter` when a query parameter is named twice.
fn no_repeated_query(req: &Request<'_>) -> Result<(), ApiError> {
    match repeated_query_key(req) {
        Some(name) => Err(ApiError::bad_request(
            "repeated_query_parameter",
            format!("query parameter {name:?} is given more than once"),
        )),
        None => Ok(()),
    }
}

/// `400 unknown_query_parameter` when the query names a parameter the route does not take: a
/// misspelt filter (`?stauts=revoked`) would otherwise be dropped and the whole list answered.
fn no_unknown_query(req: &Request<'_>) -> Result<(), ApiError> {
    let Some(route) = req.route() else {
        return Ok(());
    };
    let mut known: Vec<&str> = Vec::new();
    for seg in route.uri.query().unwrap_or("").split('&') {
        match seg.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
            // A trailing `<rest..>` takes anything.
            Some(name) if name.ends_with("..") => return Ok(()),
            Some(name) => known.push(name),
            None => known.push(seg.split('=').next().unwrap_or(seg)),
        }
    }
    match req
        .query_fields()
        .map(|f| f.name.source().as_str())
        .find(|name| !name.is_empty() && !known.contains(name))
    {
        None => Ok(()),
        Some(name) => {
            let known: Vec<&str> = known.into_iter().filter(|k| !k.is_empty()).collect();
            let takes = if known.is_empty() {
                "this endpoint takes no query parameters".to_owned()
            } else {
                format!("this endpoint takes {}", known.join(", "))
            };
            Err(ApiError::bad_request(
                "unknown_query_parameter",
                format!("unknown query parameter {name:?}: {takes}"),
            ))
        }
    }
}

fn caller(req: &Request<'_>, issuing: bool) -> Outcome<Caller, ApiError> {
    let request_id = req.local_cache(RequestId::new).0.clone();
    let Some(app) = req.rocket().state::<App>() else {
        return Outcome::Error(remember(
            req,
            ApiError::internal("application state missing"),
        ));
    };
    let mut headers = req.headers().get("Authorization");
    let header = headers.next().unwrap_or("");
    if headers.next().is_some() {
        // Which one counts is ambiguous (a proxy may read the last one): neither does.
        return Outcome::Error(remember(
            req,
            ApiError::unauthorized("Authorization is given more than once"),
        ));
    }
    let token = match header.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => {
            return Outcome::Error(remember(
                req,
                ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)"),
            ))
        }
    };
    let found = if issuing {
        app.authenticate_issuing(token, request_id)
    } else {
        app.authenticate(token, request_id)
    };
    // The token first (API.md: `401` before anything else), then the query.
    match found
        .and_then(|c| no_repeated_query(req).map(|()| c))
        .and_then(|c| no_unknown_query(req).map(|()| c))
    {
        Ok(c) => match app.limits.check_caller(&c.token_id, &c.tenant_id) {
            Ok(()) => Outcome::Success(c),
            Err(e) => Outcome::Error(remember(req, e)),
        },
        Err(e) => Outcome::Error(remember(req, e)),
    }
}

/// A request of a public endpoint that names no query parameter twice (`?format=der&format=der`
/// would reach the handler as no format at all).
pub struct SingleQuery;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SingleQuery {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        match no_repeated_query(req) {
            Ok(()) => Outcome::Success(SingleQuery),
            Err(e) => Outcome::Error(remember(req, e)),
        }
    }
}

/// An unauthenticated client of the CRL and OCSP endpoints, within its address's rate limit.
pub struct PublicClient;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PublicClient {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(app) = req.rocket().state::<App>() else {
            return Outcome::Error(remember(
                req,
                ApiError::internal("application state missing"),
            ));
        };
        // The socket peer, never a forwarded-for header a client could forge.
        if let Err(e) = app.limits.check_public(req.remote().map(|a| a.ip())) {
            return Outcome::Error(remember(req, e));
        }
        // `?format=der&format=der` would reach the handler as no format at all.
        match no_repeated_query(req) {
            Ok(()) => Outcome::Success(PublicClient),
            Err(e) => Outcome::Error(remember(req, e)),
        }
    }
}
