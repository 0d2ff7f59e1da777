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
//! Why a second listener:
//! - Plain HTTP on purpose. RFC 5019 §5 and RFC 5280 §4.2.1.13 expect `http` URLs for OCSP and
//!   CRLs (a client checking a TLS server's revocation cannot first need TLS to fetch it; Windows
//!   and many OCSP clients do not follow `https` there), while the API listener should be HTTPS.
//!   Operators point `server.public_base_url` at this listener.
//! - It is the hot path of a CA: every TLS handshake of every relying party may ask.
//!
//! Why not Rocket, nor hyper: measured on the 2-core machine with the same client and cached OCSP
//! answer (docs/PERFORMANCE.md), Rocket answered ~15 000 requests/s, hyper's HTTP/1.1 server
//! ~25 000–34 000, and the loop below, which parses with `httparse` (hyper's own parser) and
//! writes each answer with one `write` call, more than twice hyper's rate. What it
//! supports is what these four endpoints need: `Content-Length` bodies up to 8 KiB (`411` for a
//! chunked one, `413` beyond), `Expect: 100-continue`, keep-alive (HTTP/1.1 by default, HTTP/1.0
//! on request) with pipelining, origin- and absolute-form targets, `HEAD`. The head must arrive
//! within [`HEADER_TIMEOUT`] (also the idle limit between requests), a body within
//! `limits.body_timeout`; a head over [`MAX_HEAD`] is `431`.
//!
//! Per request: the public-IP rate limit (`limits.public_rate`), the `scaivault_http_responses_*`
//! counters, and a log line at `debug` (target `scaivault::http::public`) rather than `info`: an
//! OCSP responder answers at a rate no access log wants.

use super::ocsp::{http_reply, request_from_path, MAX_REQUEST_BYTES};
use super::problem::problem_json;
use crate::app::App;
use crate::error::ApiError;
use rocket::http::Status;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client has to send a request's head, and how long an idle keep-alive connection
/// waits for the next one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;

/// Most headers in a request.
const MAX_HEADERS: usize = 32;

/// Binds `addr`.
///
/// # Errors
/// The address cannot be bound (naming it).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("server.public_listen {addr}: {e}"))
}

/// The running listener: its threads stop when this is dropped (or [`Running::stop`]ped).
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Stops accepting and drops every connection (each thread's runtime ends).
    pub fn stop(self) {
        let _ = self.stop.send(true);
    }
}

/// Serves `listener` on [`threads`] threads of its own, each a single-threaded runtime accepting
/// from the same socket: a connection stays on the thread that accepted it, and a cached OCSP
/// answer is written without a hand-off between threads. What needs more (signing a response,
/// reading a CRL or a CA) runs on `main`, the daemon's runtime.
///
/// # Errors
/// A thread or runtime cannot be created.
pub fn spawn(
    listener: TcpListener,
    app: App,
    main: tokio::runtime::Handle,
) -> Result<Running, String> {
    let addr = listener.local_addr().ok();
    let std_listener = listener
        .into_std()
        .map_err(|e| format!("relying-party listener: {e}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let app = Arc::new(app);
    let n = threads();
    for i in 0..n {
        let l = std_listener
            .try_clone()
            .map_err(|e| format!("relying-party listener: {e}"))?;
        let (app, main, mut stopped) = (app.clone(), main.clone(), stopped.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("relying-party listener runtime: {e}"))?;
        std::thread::Builder::new()
            .name(format!("sv-public-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(l) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "relying-party listener: cannot register the socket");
                            return;
                        }
                    };
                    tokio::select! {
                        () = serve(listener, app, main) => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            })
            .map_err(|e| format!("relying-party listener thread: {e}"))?;
    }
    tracing::info!(
        ?addr,
        threads = n,
        "relying-party listener (OCSP, CRLs, CA certificates)"
    );
    Ok(Running { stop })
}

/// One thread per core, at most 4.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4))
}

async fn serve(listener: TcpListener, app: Arc<App>, main: tokio::runtime::Handle) {
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
        let (app, main) = (app.clone(), main.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, &app, &main).await {
                tracing::debug!(%peer, error = %e, "relying-party connection ended");
            }
        });
    }
}

/// A request head, owned (the buffer it was parsed from moves on).
#[derive(Debug, Clone, PartialEq)]
struct Head {
    /// Bytes of the head, up to and including the blank line.
    len: usize,
    method: String,
    /// The path, from an origin- or absolute-form target.
    path: String,
    query: Option<String>,
    /// HTTP/1.1 (else 1.0).
    http11: bool,
    content_length: usize,
    chunked: bool,
    /// The connection ends after this request.
    close: bool,
    expect_continue: bool,
    if_none_match: Option<String>,
}

/// What a buffer holds.
#[derive(Debug, PartialEq)]
enum Parsed {
    Head(Head),
    /// Not a whole head yet.
    Partial,
    /// Not HTTP: answer 400 and close.
    Bad(&'static str),
}

/// Parses the head at the start of `buf` (`httparse`, which hyper uses too).
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad("too many headers"),
        Err(_) => return Parsed::Bad("not an HTTP/1.x request"),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Bad("incomplete request line");
    };
    let http11 = version == 1;
    // Absolute form (`http://host/path`, RFC 9112 §3.2.2): keep the path.
    let target = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let mut head = Head {
        len,
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        http11,
        content_length: 0,
        chunked: false,
        close: !http11,
        expect_continue: false,
        if_none_match: None,
    };
    let mut lengths = 0;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match value.parse::<usize>() {
                Ok(n) => head.content_length = n,
                Err(_) => return Parsed::Bad("bad Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    head.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(value.to_owned());
        }
    }
    // RFC 9112 §6.3: two lengths, or a length with a transfer coding, cannot be trusted.
    if lengths > 1 || (lengths == 1 && head.chunked) {
        return Parsed::Bad("conflicting message lengths");
    }
    Parsed::Head(head)
}

/// A response's body.
enum Body {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Shared(b) => b,
            Body::Owned(b) => b,
        }
    }
}

/// A response: status, headers (without `Date`, `Content-Length`, `Connection`), body.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Reply {
    fn bytes(status: u16, mime: &'static str, body: Vec<u8>) -> Self {
        Reply {
            status,
            headers: vec![("Content-Type", mime.to_owned())],
            body: Body::Owned(body),
        }
    }

    /// The RFC 9457 problem document for `e` (as on the API listener).
    fn problem(e: &ApiError, path: &str) -> Self {
        if e.is_server_error() {
            tracing::warn!(
                status = e.status.code,
                code = e.code,
                "relying-party request failed"
            );
        }
        let request_id = super::guards::RequestId::new().0;
        let body = problem_json(e, &request_id, path).into_bytes();
        let mut r = Reply::bytes(e.status.code, "application/problem+json", body);
        r.headers.push(("X-Request-Id", request_id));
        if let Some(secs) = e.retry_after {
            r.headers.push(("Retry-After", secs.to_string()));
        }
        r
    }

    fn error(status: Status, code: &'static str, detail: impl Into<String>, path: &str) -> Self {
        Reply::problem(&ApiError::new(status, code, detail), path)
    }
}

/// Serves one connection: requests in order until the client closes, asks to close, goes
/// quiet for [`HEADER_TIMEOUT`], or sends something that ends the connection.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: &Arc<App>,
    main: &tokio::runtime::Handle,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let head = match parse_head(&buf) {
            Parsed::Head(h) => h,
            Parsed::Partial if buf.len() >= MAX_HEAD => {
                let r = Reply::error(
                    Status::new(431),
                    "request_header_too_large",
                    format!("the request head exceeds {MAX_HEAD} bytes"),
                    "",
                );
                return finish(&mut stream, &mut out, app, &r, false, true).await;
            }
            Parsed::Partial => {
                match tokio::time::timeout(HEADER_TIMEOUT, read_more(&mut stream, &mut buf)).await {
                    Ok(Ok(true)) => continue,
                    // Closed, failed or quiet: nothing to answer (RFC 9112 §9.5: a timeout on
                    // an idle connection just closes it).
                    Ok(Ok(false)) | Ok(Err(_)) | Err(_) => return Ok(()),
                }
            }
            Parsed::Bad(why) => {
                let r = Reply::error(Status::BadRequest, "bad_request", why, "");
                return finish(&mut stream, &mut out, app, &r, false, true).await;
            }
        };
        let head_only = head.method == "HEAD";
        // The body: announced by Content-Length only.
        if head.chunked {
            let r = Reply::error(
                Status::LengthRequired,
                "length_required",
                "send the body with a Content-Length",
                &head.path,
            );
            return finish(&mut stream, &mut out, app, &r, head_only, true).await;
        }
        if head.content_length as u64 > MAX_REQUEST_BYTES {
            let r = Reply::error(
                Status::PayloadTooLarge,
                "body_too_large",
                format!("the request body exceeds {MAX_REQUEST_BYTES} bytes"),
                &head.path,
            );
            return finish(&mut stream, &mut out, app, &r, head_only, true).await;
        }
        let end = head.len + head.content_length;
        if buf.len() < end {
            if head.expect_continue {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            let timeout = app.limits.body_timeout;
            let read = tokio::time::timeout(timeout, async {
                while buf.len() < end {
                    if !read_more(&mut stream, &mut buf).await? {
                        return Ok(false);
                    }
                }
                Ok::<_, std::io::Error>(true)
            })
            .await;
            match read {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) | Ok(Err(_)) => return Ok(()),
                Err(_) => {
                    let r = Reply::error(
                        Status::RequestTimeout,
                        "request_timeout",
                        format!(
                            "the request body did not arrive within {} s",
                            timeout.as_secs()
                        ),
                        &head.path,
                    );
                    return finish(&mut stream, &mut out, app, &r, head_only, true).await;
                }
            }
        }
        let body = buf.get(head.len..end).unwrap_or_default();
        let reply = match app.limits.check_public(Some(peer.ip())) {
            Ok(()) => match from_cache(app, &head, body) {
                Some(r) => r,
                None => {
                    // Signing, the database, files: on the daemon's runtime.
                    let (a, h, b) = (app.clone(), head.clone(), body.to_vec());
                    main.spawn(async move { route(&a, &h, &b).await })
                        .await
                        .unwrap_or_else(|e| {
                            tracing::error!(error = %e, "relying-party request task failed");
                            Reply::error(
                                Status::InternalServerError,
                                "internal_error",
                                "internal error; see the server log",
                                &head.path,
                            )
                        })
                }
            },
            Err(e) => Reply::problem(&e, &head.path),
        };
        tracing::debug!(target: "scaivault::http::public", method = %head.method, path = %head.path, status = reply.status, %peer);
        buf.drain(..end);
        finish(&mut stream, &mut out, app, &reply, head_only, head.close).await?;
        if head.close {
            return Ok(());
        }
    }
}

/// Appends what the socket has to `buf`; `false` at end of stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    Ok(stream.read_buf(buf).await? > 0)
}

/// Writes `reply` (and closes the write side when `close`), counting it in the metrics.
async fn finish(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    app: &App,
    reply: &Reply,
    head_only: bool,
    close: bool,
) -> std::io::Result<()> {
    app.metrics.http_answered(reply.status);
    encode(out, reply, head_only, close);
    stream.write_all(out).await?;
    if close {
        let _ = stream.shutdown().await;
    }
    Ok(())
}

/// The response in HTTP/1.1 form into `out` (cleared first): one buffer, one write.
fn encode(out: &mut Vec<u8>, reply: &Reply, head_only: bool, close: bool) {
    use std::io::Write;
    out.clear();
    let reason = reason_phrase(reply.status);
    let body = reply.body.bytes();
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\nDate: {}\r\n",
        reply.status,
        date_now()
    );
    // A 304 has no body and describes none (RFC 9110 §15.4.5).
    if reply.status != 304 {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    for (name, value) in &reply.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(if close {
        b"Connection: close\r\n\r\n".as_slice()
    } else {
        b"\r\n".as_slice()
    });
    if !head_only && reply.status != 304 {
        out.extend_from_slice(body);
    }
}

/// The reason phrase for `status`.
fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// The `Date` header value, formatted once per second per thread.
fn date_now() -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = scaivault_core::time_util::now();
    let sec = now.unix_timestamp();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != sec {
            *c = (sec, super::ocsp::http_date(now));
        }
        c.1.clone()
    })
}

/// What a path names.
#[derive(Debug, PartialEq)]
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

/// A fresh cached OCSP answer for the request, without leaving this thread; `None` for every
/// other request.
fn from_cache(app: &App, head: &Head, body: &[u8]) -> Option<Reply> {
    let Some(Target::Ocsp { ca, has_request }) = target(&head.path) else {
        return None;
    };
    let hit = match (head.method.as_str(), has_request) {
        ("POST", false) => crate::ocsp::cached(app, ca, body)?,
        ("GET" | "HEAD", true) => crate::ocsp::cached(app, ca, &request_from_path(&head.path)?)?,
        _ => return None,
    };
    Some(ocsp_reply(
        crate::ocsp::OcspAnswer::Signed(hit),
        head.if_none_match.as_deref().filter(|_| has_request),
    ))
}

async fn route(app: &App, head: &Head, body: &[u8]) -> Reply {
    let path = head.path.as_str();
    let Some(target) = target(path) else {
        return Reply::error(
            Status::NotFound,
            "not_found",
            format!("no route for {} {path}", head.method),
            path,
        );
    };
    let get = matches!(head.method.as_str(), "GET" | "HEAD");
    let format = format_param(head.query.as_deref());
    let result = match target {
        Target::Ocsp { ca, has_request } if has_request && get => {
            let answer = match request_from_path(path) {
                Some(der) => crate::ocsp::answer(app, ca, &der).await,
                None => crate::ocsp::OcspAnswer::Refused(
                    scaivault_core::ocsp::Refusal::MalformedRequest,
                ),
            };
            return ocsp_reply(answer, head.if_none_match.as_deref());
        }
        Target::Ocsp { ca, has_request } if !has_request && head.method == "POST" => {
            return ocsp_reply(crate::ocsp::answer(app, ca, body).await, None);
        }
        Target::Ocsp { has_request, .. } => {
            let allow = if has_request { "GET, HEAD" } else { "POST" };
            return method_not_allowed(&head.method, path, allow);
        }
        Target::Crl(id) if get => super::revoke::crl_body(app, id, format).await,
        Target::CaCertificate(id) if get => super::ca::certificate_body(app, id, format).await,
        Target::Crl(_) | Target::CaCertificate(_) => {
            return method_not_allowed(&head.method, path, "GET, HEAD")
        }
    };
    match result {
        Ok((mime, bytes)) => Reply::bytes(200, mime, bytes),
        Err(e) => Reply::problem(&e, path),
    }
}

fn ocsp_reply(answer: crate::ocsp::OcspAnswer, if_none_match: Option<&str>) -> Reply {
    let r = http_reply(answer, if_none_match);
    Reply {
        status: r.status,
        headers: r.headers,
        body: r.body.map_or(Body::Owned(Vec::new()), Body::Shared),
    }
}

/// `405` with the `Allow` header RFC 9110 §15.5.6 asks for.
fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Reply {
    let mut r = Reply::error(
        Status::MethodNotAllowed,
        "method_not_allowed",
        format!("{method} is not served for {path} (allowed: {allow})"),
        path,
    );
    r.headers.push(("Allow", allow.to_owned()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse_head(raw.as_bytes()) {
            Parsed::Head(h) => h,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let h =
            head("POST /v1/pki/ocsp/ca_1 HTTP/1.1\r\nHost: x\r\nContent-Length: 83\r\n\r\nBODY");
        assert_eq!(h.len, 64);
        assert_eq!(
            (
                h.method.as_str(),
                h.path.as_str(),
                h.content_length,
                h.close
            ),
            ("POST", "/v1/pki/ocsp/ca_1", 83, false)
        );
        // HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 stays unless asked to close.
        assert!(head("GET / HTTP/1.0\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").close);
        assert!(head("GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n").close);
        // Absolute form, query, conditional and Expect.
        let h = head("GET http://pki.example/v1/pki/ca/ca_1/crl?format=pem HTTP/1.1\r\nIf-None-Match: \"a\"\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.path, "/v1/pki/ca/ca_1/crl");
        assert_eq!(h.query.as_deref(), Some("format=pem"));
        assert_eq!(h.if_none_match.as_deref(), Some("\"a\""));
        assert!(h.expect_continue);
        assert_eq!(head("GET http://pki.example HTTP/1.1\r\n\r\n").path, "/");
        assert!(head("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").chunked);
    }

    #[test]
    fn partial_and_bad_heads_are_told_apart() {
        assert_eq!(parse_head(b""), Parsed::Partial);
        assert_eq!(
            parse_head(b"GET /v1/pki/ocsp/x HTTP/1.1\r\nHost:"),
            Parsed::Partial
        );
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse_head(many.as_bytes()), Parsed::Bad("too many headers"));
    }

    #[test]
    fn responses_are_one_buffer_with_length_and_date() {
        let mut out = Vec::new();
        let reply = Reply::bytes(200, "application/pkix-crl", b"0123".to_vec());
        encode(&mut out, &reply, false, false);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nDate: "), "{text}");
        assert!(
            text.contains(
                " GMT\r\nContent-Length: 4\r\nContent-Type: application/pkix-crl\r\n\r\n0123"
            ),
            "{text}"
        );
        encode(&mut out, &reply, true, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Content-Length: 4\r\nContent-Type: application/pkix-crl\r\nConnection: close\r\n\r\n"), "{text}");
    }

    #[test]
    fn paths_name_their_targets() {
        assert_eq!(
            target("/v1/pki/ocsp/ca_1"),
            Some(Target::Ocsp {
                ca: "ca_1",
                has_request: false
            })
        );
        assert_eq!(
            target("/v1/pki/ocsp/ca_1///8="),
            Some(Target::Ocsp {
                ca: "ca_1",
                has_request: true
            })
        );
        assert_eq!(target("/v1/pki/ca/ca_1/crl"), Some(Target::Crl("ca_1")));
        assert_eq!(
            target("/v1/pki/ca/ca_1/certificate"),
            Some(Target::CaCertificate("ca_1"))
        );
        for other in [
            "/",
            "*",
            "/v1/pki/ocsp/",
            "/v1/pki/ca/ca_1",
            "/v1/pki/ca//crl",
            "/v1/pki/ca/ca_1/chain",
            "/v1/pki/roles",
            "/v1/sys/health",
            "/metrics",
        ] {
            assert_eq!(target(other), None, "{other}");
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
