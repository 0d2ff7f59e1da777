//! The relying-party listener (`server.public_listen`): plain HTTP/1.1 serving only what relying
//! parties fetch without credentials, the URLs written into issued certificates:
//!
//! - `POST /v1/pki/ocsp/<ca_id>` and `GET /v1/pki/ocsp/<ca_id>/<base64 request>` (AIA OCSP),
//! - `GET /v1/pki/ca/<id>/crl[?format=pem]` (CRL distribution point),
//! - `GET /v1/pki/ca/<id>/certificate[?format=der]` (AIA CA issuers),
//!
//! with the same answers, headers and errors as the same paths on the API listener (the code that
//! builds them is shared with the Rocket routes). Everything else is `404 not_found`: neither the
//! API nor a token is reachable here. `HEAD` works wherever `GET` does.
//!
//! Why a second listener, and why not Rocket:
//! - Plain HTTP on purpose. RFC 5019 §5 and RFC 5280 §4.2.1.13 expect `http` URLs for OCSP and
//!   CRLs (a client checking a TLS server's revocation cannot first need TLS to fetch it; Windows
//!   and many OCSP clients do not follow `https` there), while the API listener should be HTTPS.
//!   Operators point `server.public_base_url` at this listener.
//! - It is the hot path of a CA: every TLS handshake of every relying party may ask. hyper's
//!   HTTP/1.1 connection handler with one small router costs a fraction of Rocket's per-request
//!   work (request object, fairings, guards, local cache), and nothing here needs it.
//!
//! Per request: the public-IP rate limit (`limits.public_rate`), the `scaivault_http_responses_*`
//! counters, and a log line at `debug` (target `scaivault::http::public`) rather than `info`: an
//! OCSP responder answers at a rate no access log wants. Headers must arrive within
//! [`HEADER_TIMEOUT`] and a POST body within `limits.body_timeout`.

use super::ocsp::{http_reply, request_from_path, MAX_REQUEST_BYTES};
use super::problem::problem_json;
use crate::app::App;
use crate::error::ApiError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rocket::http::Status;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client has to send a request's headers (also how long an idle keep-alive
/// connection is kept waiting for its next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr`.
///
/// # Errors
/// The address cannot be bound (naming it).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("server.public_listen {addr}: {e}"))
}

/// Serves `listener` until the returned task is aborted.
pub fn spawn(listener: TcpListener, app: App) -> tokio::task::JoinHandle<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "relying-party listener (OCSP, CRLs, CA certificates)");
    tokio::spawn(serve(listener, Arc::new(app)))
}

async fn serve(listener: TcpListener, app: Arc<App>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "relying-party listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, peer, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "relying-party connection ended");
            }
        });
    }
}

type Reply = Response<Full<Bytes>>;

async fn handle(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = match app.limits.check_public(Some(peer.ip())) {
        Ok(()) => route(app, req).await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| problem(&e, &path));
    let status = res.status().as_u16();
    app.metrics.http_answered(status);
    tracing::debug!(target: "scaivault::http::public", %method, %path, status, %peer);
    res
}

/// What a path names.
enum Target<'a> {
    Ocsp { ca: &'a str, has_request: bool },
    Crl(&'a str),
    CaCertificate(&'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/v1/pki/")?;
    if let Some(ocsp) = rest.strip_prefix("ocsp/") {
        // GET's base64 may contain `/` and even start with one (`//`).
        let (ca, request) = ocsp.split_once('/').unwrap_or((ocsp, ""));
        return (!ca.is_empty()).then_some(Target::Ocsp {
            ca,
            has_request: !request.is_empty(),
        });
    }
    let (id, what) = rest.strip_prefix("ca/")?.split_once('/')?;
    if id.is_empty() {
        return None;
    }
    match what {
        "crl" => Some(Target::Crl(id)),
        "certificate" => Some(Target::CaCertificate(id)),
        _ => None,
    }
}

/// The `format` query parameter, if any.
fn format_param(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("format="))
}

async fn route(app: &App, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let path = req.uri().path().to_owned();
    let Some(target) = target(&path) else {
        return Err(ApiError::new(
            Status::NotFound,
            "not_found",
            format!("no route for {} {path}", req.method()),
        ));
    };
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match target {
        Target::Ocsp { ca, has_request } if has_request && get => {
            let if_none_match = req
                .headers()
                .get(IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let answer = match request_from_path(&path) {
                Some(der) => crate::ocsp::answer(app, ca, &der).await,
                None => crate::ocsp::OcspAnswer::Refused(
                    scaivault_core::ocsp::Refusal::MalformedRequest,
                ),
            };
            Ok(ocsp_response(answer, if_none_match.as_deref()))
        }
        Target::Ocsp { ca, has_request } if !has_request && req.method() == Method::POST => {
            let body = read_body(app, req).await?;
            Ok(ocsp_response(
                crate::ocsp::answer(app, ca, &body).await,
                None,
            ))
        }
        Target::Ocsp { has_request, .. } => Ok(method_not_allowed(
            req.method(),
            &path,
            if has_request { "GET, HEAD" } else { "POST" },
        )),
        Target::Crl(id) if get => {
            let (mime, body) =
                super::revoke::crl_body(app, id, format_param(req.uri().query())).await?;
            Ok(bytes_response(mime, body))
        }
        Target::CaCertificate(id) if get => {
            let (mime, body) =
                super::ca::certificate_body(app, id, format_param(req.uri().query())).await?;
            Ok(bytes_response(mime, body))
        }
        Target::Crl(_) | Target::CaCertificate(_) => {
            Ok(method_not_allowed(req.method(), &path, "GET, HEAD"))
        }
    }
}

/// A POSTed OCSP request: at most [`MAX_REQUEST_BYTES`], within `limits.body_timeout`.
async fn read_body(app: &App, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Status::PayloadTooLarge,
            "body_too_large",
            format!("the request body exceeds {MAX_REQUEST_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES) {
        return Err(too_large());
    }
    let limit = usize::try_from(MAX_REQUEST_BYTES).unwrap_or(usize::MAX);
    let timeout = app.limits.body_timeout;
    match tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "invalid_body",
            format!("cannot read the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            Status::RequestTimeout,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}

fn ocsp_response(answer: crate::ocsp::OcspAnswer, if_none_match: Option<&str>) -> Reply {
    let reply = http_reply(answer, if_none_match);
    let mut res = Response::new(Full::new(
        reply.body.map(Bytes::from_owner).unwrap_or_default(),
    ));
    *res.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(name, v);
        }
    }
    res
}

fn bytes_response(mime: &'static str, body: Vec<u8>) -> Reply {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(mime));
    res
}

/// `405` with the `Allow` header RFC 9110 §15.5.6 asks for.
fn method_not_allowed(method: &Method, path: &str, allow: &'static str) -> Reply {
    let e = ApiError::new(
        Status::MethodNotAllowed,
        "method_not_allowed",
        format!("{method} is not served for {path} (allowed: {allow})"),
    );
    let mut res = problem(&e, path);
    res.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    res
}

/// The problem document for `e` (RFC 9457, as on the API listener).
fn problem(e: &ApiError, path: &str) -> Reply {
    if e.is_server_error() {
        tracing::warn!(
            status = e.status.code,
            code = e.code,
            "relying-party request failed"
        );
    }
    let request_id = super::guards::RequestId::new().0;
    let body = problem_json(e, &request_id, path);
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() =
        StatusCode::from_u16(e.status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("X-Request-Id", v);
    }
    if let Some(secs) = e.retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_targets() {
        assert!(matches!(
            target("/v1/pki/ocsp/ca_1"),
            Some(Target::Ocsp {
                ca: "ca_1",
                has_request: false
            })
        ));
        assert!(matches!(
            target("/v1/pki/ocsp/ca_1///8="),
            Some(Target::Ocsp {
                ca: "ca_1",
                has_request: true
            })
        ));
        assert!(matches!(
            target("/v1/pki/ca/ca_1/crl"),
            Some(Target::Crl("ca_1"))
        ));
        assert!(matches!(
            target("/v1/pki/ca/ca_1/certificate"),
            Some(Target::CaCertificate("ca_1"))
        ));
        for other in [
            "/",
            "/v1/pki/ocsp/",
            "/v1/pki/ca/ca_1",
            "/v1/pki/ca//crl",
            "/v1/pki/ca/ca_1/chain",
            "/v1/pki/roles",
            "/v1/sys/health",
            "/metrics",
        ] {
            assert!(target(other).is_none(), "{other}");
        }
    }

    #[test]
    fn format_is_read_from_the_query() {
        assert_eq!(format_param(Some("format=pem")), Some("pem"));
        assert_eq!(format_param(Some("a=b&format=der")), Some("der"));
        assert_eq!(format_param(Some("a=b")), None);
        assert_eq!(format_param(None), None);
    }
}
