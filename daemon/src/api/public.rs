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
//! on request) with pipelining, origin- and absolute-form targets, `HEAD`. A request's whole head
//! must arrive within `limits.header_timeout` (default 10 s) of the connection's start or of the
//! previous answer, however it trickles in (a client sending a byte a second cannot hold a
//! connection), a body within `limits.body_timeout`; a head over [`MAX_HEAD`] is `431`. Repeated
//! OCSP requests are answered from per-thread copies of their encoded answers ([`repeats`]).
//!
//! Per request: the public-IP rate limit (`limits.public_rate`), the `scaivault_http_responses_*`
//! counters, and a log line at `debug` (target `scaivault::http::public`) rather than `info`: an
//! OCSP responder answers at a rate no access log wants.

pub(crate) mod head;
mod repeats;

use super::ocsp::{http_reply, request_from_path, MAX_REQUEST_BYTES};
use super::problem::answer_body;
use crate::app::App;
use crate::error::ApiError;
use head::{parse_head, Head, Parsed};
use rocket::http::Status;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;

/// Bodies up to this size are written in one buffer with the head; larger ones from their own
/// (shared) bytes after it.
const INLINE_BODY: usize = 16 * 1024;

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
    let limit = Arc::new(Connections {
        open: AtomicUsize::new(0),
        max: usize::try_from(app.config.server.public_max_connections).unwrap_or(usize::MAX),
        refusing: AtomicUsize::new(0),
        metrics: app.metrics.clone(),
    });
    let app = Arc::new(app);
    let n = threads();
    for i in 0..n {
        let l = std_listener
            .try_clone()
            .map_err(|e| format!("relying-party listener: {e}"))?;
        let (app, main, mut stopped) = (app.clone(), main.clone(), stopped.clone());
        let limit = limit.clone();
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
                        () = serve(listener, app, main, limit) => {}
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

/// The connections open on the listener's threads, and how many may be.
struct Connections {
    open: AtomicUsize,
    max: usize,
    /// Refusals being written (each holds its socket for up to a second).
    refusing: AtomicUsize,
    /// Where `scaivault_public_connections_open` is kept.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Most refusals written at once; beyond, a connection over the cap is closed without an answer,
/// so that a flood of connections cannot hold more sockets than the cap plus this.
const MAX_REFUSING: usize = 64;

/// A connection's place under `server.public_max_connections`, given back on drop.
struct Slot(Arc<Connections>);

impl Connections {
    fn take(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                self.metrics
                    .public_connections_open
                    .fetch_add(1, Ordering::Relaxed);
                Slot(self.clone())
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0
            .metrics
            .public_connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    main: tokio::runtime::Handle,
    limit: Arc<Connections>,
) {
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
        let Some(slot) = limit.take() else {
            crate::metrics::Metrics::bump(&app.metrics.public_connections_refused);
            tracing::debug!(%peer, max = limit.max, "relying-party listener: too many connections");
            if limit.refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
                let limit = limit.clone();
                tokio::spawn(async move {
                    refuse(stream).await;
                    limit.refusing.fetch_sub(1, Ordering::AcqRel);
                });
            } else {
                limit.refusing.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
            }
            continue;
        };
        let (app, main) = (app.clone(), main.clone());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection(stream, peer, &app, &main).await {
                tracing::debug!(%peer, error = %e, "relying-party connection ended");
            }
        });
    }
}

/// Answers a connection over `server.public_max_connections` with `503 too_many_connections`
/// (`Retry-After: 1`) and closes it, without acting on what it sent.
async fn refuse(mut stream: TcpStream) {
    let mut reply = Reply::error(
        Status::ServiceUnavailable,
        "too_many_connections",
        "the relying-party listener holds server.public_max_connections connections; retry shortly",
        "/",
    )
    .named(None);
    reply.headers.push(("Retry-After", "1".to_owned()));
    let mut out = Vec::with_capacity(512);
    encode(&mut out, &reply, false, true);
    // Write, end our side, then read what the client sent until it closes (at most 1 s and
    // 16 KiB): closing with unread data would reset the connection and could discard the answer.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 16 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        std::io::Result::Ok(())
    })
    .await;
}

/// A response's body.
enum Body {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
    /// A problem document (the error and its `instance`), rendered by [`Reply::named`] once the
    /// request's id is known: the id in the body is the one in the `X-Request-Id` header.
    Problem(Box<(ApiError, String)>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Shared(b) => b,
            Body::Owned(b) => b,
            Body::Problem(_) => &[],
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

    /// The RFC 9457 problem document for `e` (as on the API listener); its body is rendered by
    /// [`Reply::named`].
    fn problem(e: &ApiError, path: &str) -> Self {
        let mut headers = vec![("Content-Type", "application/problem+json".to_owned())];
        if let Some(secs) = e.retry_after {
            headers.push(("Retry-After", secs.to_string()));
        }
        Reply {
            status: e.status.code,
            headers,
            body: Body::Problem(Box::new((e.clone(), path.to_owned()))),
        }
    }

    /// The reply as sent for the request whose `X-Request-Id` was `client_id` (a fresh id when
    /// the client sent none it may keep): the id in the header, and in a problem document's body.
    fn named(mut self, client_id: Option<&str>) -> Self {
        let id = client_id.map_or_else(|| super::guards::RequestId::new().0, str::to_owned);
        if let Body::Problem(p) = &self.body {
            let (e, path) = &**p;
            self.body = Body::Owned(answer_body(e, &id, path).into_bytes());
        }
        self.headers.push(("X-Request-Id", id));
        self
    }

    fn error(status: Status, code: &'static str, detail: impl Into<String>, path: &str) -> Self {
        Reply::problem(&ApiError::new(status, code, detail), path)
    }
}

/// Serves one connection: requests in order until the client closes, asks to close, does not
/// complete a head within `limits.header_timeout`, or sends something that ends the connection.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: &Arc<App>,
    main: &tokio::runtime::Handle,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut key: Vec<u8> = Vec::with_capacity(256);
    // The next head must be complete by `head_due`: one timer per connection, moved only when it
    // fires (re-arming a timer for every read costs more than the rest of a cached answer).
    let header_timeout = app.limits.header_timeout;
    let mut head_due = tokio::time::Instant::now() + header_timeout;
    let timer = tokio::time::sleep_until(head_due);
    tokio::pin!(timer);
    loop {
        let head = match parse_head(&buf) {
            // The limit holds however the head arrived: in one read, a head over it parses whole.
            Parsed::Head(h) if h.len <= MAX_HEAD => h,
            Parsed::Head(_) => return too_large(&mut stream, &mut out, app).await,
            Parsed::Partial if buf.len() >= MAX_HEAD => {
                return too_large(&mut stream, &mut out, app).await
            }
            Parsed::Partial => {
                if read_by(&mut stream, &mut buf, timer.as_mut(), head_due).await {
                    continue;
                }
                // Closed, failed or too slow: nothing to answer (RFC 9112 §9.5: a timeout on an
                // idle connection just closes it).
                return Ok(());
            }
            Parsed::Bad(why) => {
                let r = Reply::error(Status::BadRequest, "bad_request", why, "");
                return finish(&mut stream, &mut out, app, r, None, false, true).await;
            }
        };
        let head_only = head.method == "HEAD";
        let rid = head.request_id.as_deref();
        // The body: announced by Content-Length only.
        if head.chunked {
            let r = Reply::error(
                Status::LengthRequired,
                "length_required",
                "send the body with a Content-Length",
                &head.path,
            );
            return finish(&mut stream, &mut out, app, r, rid, head_only, true).await;
        }
        if head.content_length as u64 > MAX_REQUEST_BYTES {
            let r = Reply::error(
                Status::PayloadTooLarge,
                "body_too_large",
                format!("the request body exceeds {MAX_REQUEST_BYTES} bytes"),
                &head.path,
            );
            return finish(&mut stream, &mut out, app, r, rid, head_only, true).await;
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
                    return finish(&mut stream, &mut out, app, r, rid, head_only, true).await;
                }
            }
        }
        let body = buf.get(head.len..end).unwrap_or_default();
        let limited = app.limits.check_public(Some(peer.ip()));
        if limited.is_ok() && repeats::answer(app, &head, body, &mut key, &mut out) {
            tracing::debug!(target: "scaivault::http::public", method = %head.method, path = %crate::auth::loggable_path(&head.path), status = 200, %peer, "repeat");
            buf.drain(..end);
            stream.write_all(&out).await?;
            head_due = tokio::time::Instant::now() + header_timeout;
            continue;
        }
        let reply = match limited {
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
        tracing::debug!(target: "scaivault::http::public", method = %head.method, path = %crate::auth::loggable_path(&head.path), status = reply.status, %peer);
        let close = head.close;
        finish(&mut stream, &mut out, app, reply, rid, head_only, close).await?;
        buf.drain(..end);
        if close {
            return Ok(());
        }
        head_due = tokio::time::Instant::now() + header_timeout;
    }
}

/// `431` for a head over [`MAX_HEAD`], and the connection closed.
async fn too_large(stream: &mut TcpStream, out: &mut Vec<u8>, app: &App) -> std::io::Result<()> {
    let r = Reply::error(
        Status::new(431),
        "request_header_too_large",
        format!("the request head exceeds {MAX_HEAD} bytes"),
        "",
    );
    finish(stream, out, app, r, None, false, true).await
}

/// Reads more of a request head into `buf`; `false` when the stream ends or fails, or `due`
/// passes first. `timer` may be set earlier than `due` (it is then moved to `due`).
async fn read_by(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    due: tokio::time::Instant,
) -> bool {
    loop {
        tokio::select! {
            biased;
            r = read_more(stream, buf) => return matches!(r, Ok(true)),
            () = timer.as_mut() => {
                if tokio::time::Instant::now() >= due {
                    return false;
                }
                timer.as_mut().reset(due);
            }
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

/// Writes `reply` (and closes the write side when `close`), counting it in the metrics. As on
/// the API listener, every answer names its request: the client's `X-Request-Id` (`client_id`,
/// when acceptable), else a fresh one.
async fn finish(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    app: &App,
    reply: Reply,
    client_id: Option<&str>,
    head_only: bool,
    close: bool,
) -> std::io::Result<()> {
    let reply = &reply.named(client_id);
    app.metrics.http_answered(reply.status);
    // A large body (a CRL: ~5 MB at 100 000 entries, ~50 MB at a million) is written from the
    // shared copy after the head, not copied into the connection's buffer: every connection
    // downloading it would otherwise hold a copy of its own.
    let body = reply.body.bytes();
    let separate = !head_only && reply.status != 304 && body.len() > INLINE_BODY;
    encode(out, reply, head_only || separate, close);
    stream.write_all(out).await?;
    if separate {
        stream.write_all(body).await?;
    }
    if close {
        let _ = stream.shutdown().await;
    }
    Ok(())
}

/// The response in HTTP/1.1 form into `out` (cleared first): one buffer, one write.
fn encode(out: &mut Vec<u8>, reply: &Reply, head_only: bool, close: bool) {
    encode_at(
        out,
        reply,
        head_only,
        close,
        scaivault_core::time_util::now(),
    );
}

/// [`encode`] with the `Date` of `now`.
fn encode_at(
    out: &mut Vec<u8>,
    reply: &Reply,
    head_only: bool,
    close: bool,
    now: time::OffsetDateTime,
) {
    use std::io::Write;
    out.clear();
    let reason = reason_phrase(reply.status);
    let body = reply.body.bytes();
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\nDate: {}\r\n",
        reply.status,
        date_at(now)
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

/// The `Date` header value for `now`, formatted once per second per thread.
fn date_at(now: time::OffsetDateTime) -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
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

/// The query's fields, decoded as the API listener (Rocket) decodes them: form-urlencoded, so
/// `form%61t` is `format` and `%70em` is `pem`; a field without `=` has an empty value.
fn query_fields(query: Option<&str>) -> Vec<(String, String)> {
    query.map_or_else(Vec::new, |q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
}

/// The `format` field, if any.
fn format_param(fields: &[(String, String)]) -> Option<&str> {
    fields
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
}

/// The first field named twice, as the API listener refuses it.
fn repeated_param(fields: &[(String, String)]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    fields
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| !seen.insert(*k))
}

/// A fresh cached OCSP answer for the request, without leaving this thread; `None` for every
/// other request.
fn from_cache(app: &App, head: &Head, body: &[u8]) -> Option<Reply> {
    // A query takes the ordinary path, which refuses repeated parameters first.
    if head.query.is_some() {
        return None;
    }
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
    let fields = query_fields(head.query.as_deref());
    if let Some(name) = repeated_param(&fields) {
        return Reply::error(
            Status::BadRequest,
            "repeated_query_parameter",
            format!("query parameter {name:?} is given more than once"),
            path,
        );
    }
    let format = format_param(&fields);
    let result = match target {
        // GET without a request part is a malformed request, as on the API listener.
        Target::Ocsp { ca, has_request } if get => {
            let answer = match request_from_path(path).filter(|_| has_request) {
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
            let allow = if has_request {
                "GET, HEAD"
            } else {
                "GET, HEAD, POST"
            };
            return method_not_allowed(&head.method, path, allow);
        }
        Target::Crl(id) if get => {
            return match super::revoke::crl_body(app, id, format).await {
                Ok((mime, bytes)) => Reply {
                    status: 200,
                    headers: vec![("Content-Type", mime.to_owned())],
                    body: Body::Shared(bytes),
                },
                Err(e) => Reply::problem(&e, path),
            }
        }
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
    fn format_is_read_from_the_query_as_the_api_listener_reads_it() {
        let f = |q: Option<&str>| {
            let fields = query_fields(q);
            (
                format_param(&fields).map(str::to_owned),
                repeated_param(&fields).map(str::to_owned),
            )
        };
        assert_eq!(f(Some("format=pem")), (Some("pem".into()), None));
        assert_eq!(f(Some("a=b&format=der")), (Some("der".into()), None));
        assert_eq!(f(Some("a=b")), (None, None));
        assert_eq!(f(None), (None, None));
        assert_eq!(f(Some("form%61t=%70em")), (Some("pem".into()), None));
        assert_eq!(f(Some("format")), (Some(String::new()), None));
        assert_eq!(
            f(Some("form%61t=pem&format=der")),
            (Some("pem".into()), Some("format".into()))
        );
    }
}
