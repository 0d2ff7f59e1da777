//! Encoded answers to repeated OCSP requests, per relying-party listener thread.
//!
//! Relying parties ask about the same certificates over and over, and without a nonce a request
//! for a certificate is the same bytes every time. This keeps, per thread, the whole HTTP answer
//! last written for such a request, keyed by the request as sent (method, target, body): a repeat
//! is one hash lookup and one `write`, without parsing the DER request again, taking the shared
//! cache's lock or formatting headers.
//!
//! An entry is only a copy of what the shared cache ([`crate::ocsp::OcspCache`]) holds, and is
//! used only while all of these hold, else the request takes the ordinary path:
//! - the shared cache's invalidation counter is the one read *before* the response was looked up
//!   (any revocation changes it, so no copy outlives a revocation, on any thread);
//! - the response is still fresh (the pre-signer would replace it by then);
//! - it is the same second as when it was encoded (`Date` and `max-age` change every second).
//!
//! Only keep-alive `POST` and `GET` requests without `If-None-Match` or a query, of at most [`MAX_KEY`] bytes,
//! are kept (a `304`, a `HEAD` or a closing answer takes the ordinary path). The thread's map
//! holds at most [`MAX`] entries and starts over when full.

use super::{encode_at, ocsp_reply, request_from_path, target, Head, Target};
use crate::app::App;
use crate::ocsp::{OcspAnswer, SignedResponse};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries per listener thread (each ~0.5–2 KiB: the request and the encoded answer).
pub const MAX: usize = 1024;

/// Longest request kept (method, target and body together). A nonce-less request for one
/// certificate is ~100–200 bytes; larger ones take the ordinary path, so the map stays within a
/// few MiB per thread whatever clients send.
pub const MAX_KEY: usize = 512;

struct Repeat {
    resp: Arc<SignedResponse>,
    epoch: u64,
    second: i64,
    /// The answer without its `X-Request-Id`, which goes in at `split` (the head's last `\r\n`).
    bytes: Vec<u8>,
    split: usize,
}

thread_local! {
    static REPEATS: RefCell<HashMap<Vec<u8>, Repeat>> = RefCell::new(HashMap::new());
}

/// Writes into `out` the answer to a cached OCSP request and returns `true`; `false` (with `out`
/// unspecified) for every other request, which then takes the ordinary path. `key` is scratch
/// space kept by the connection.
pub fn answer(app: &App, head: &Head, body: &[u8], key: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    let post = match head.method.as_str() {
        "POST" => true,
        "GET" => false,
        _ => return false,
    };
    // A query (repeated parameters are refused before any answer) takes the ordinary path.
    if head.close || head.if_none_match.is_some() || head.query.is_some() {
        return false;
    }
    let Some(Target::Ocsp { ca, has_request }) = target(&head.path) else {
        return false;
    };
    if post == has_request {
        // POST with a request in the path, or GET without one: the ordinary path answers.
        return false;
    }
    if head.method.len() + head.path.len() + body.len() > MAX_KEY {
        return false;
    }
    key.clear();
    key.extend_from_slice(head.method.as_bytes());
    key.push(b' ');
    key.extend_from_slice(head.path.as_bytes());
    key.push(0);
    key.extend_from_slice(body);
    let now = scaivault_core::time_util::now();
    let second = now.unix_timestamp();
    let epoch = app.ocsp.epoch();
    let hit = REPEATS.with(|r| {
        let map = r.borrow();
        let e = map.get(key.as_slice())?;
        (e.epoch == epoch && e.second == second && e.resp.is_fresh(now))
            .then(|| named(out, &e.bytes, e.split, head.request_id.as_deref()))
    });
    if hit.is_some() {
        crate::metrics::Metrics::bump(&app.metrics.ocsp_cached);
        app.metrics.http_answered(200);
        return true;
    }
    // The ordinary cache lookup, after reading the counter (a revocation from now on changes it).
    let resp = if post {
        crate::ocsp::cached(app, ca, body)
    } else {
        request_from_path(&head.path).and_then(|der| crate::ocsp::cached(app, ca, &der))
    };
    let Some(resp) = resp else {
        return false;
    };
    let reply = ocsp_reply(OcspAnswer::Signed(resp.clone()), None);
    let mut bytes = Vec::with_capacity(1024);
    encode_at(&mut bytes, &reply, false, false, now);
    let split = head_end(&bytes);
    named(out, &bytes, split, head.request_id.as_deref());
    app.metrics.http_answered(reply.status);
    if reply.status == 200 {
        REPEATS.with(|r| {
            let mut map = r.borrow_mut();
            if map.len() >= MAX {
                map.clear();
            }
            map.insert(
                key.clone(),
                Repeat {
                    resp,
                    epoch,
                    second,
                    bytes,
                    split,
                },
            );
        });
    }
    true
}

/// Where the `X-Request-Id` header goes in an encoded answer: before the `\r\n` that ends its
/// head.
fn head_end(bytes: &[u8]) -> usize {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |p| p + 2)
}

/// `bytes` into `out` with the request's id (the client's, when kept, else a fresh one) as
/// `X-Request-Id` at `split`: every answer names its request, as on the API listener.
fn named(out: &mut Vec<u8>, bytes: &[u8], split: usize, client_id: Option<&str>) {
    let (head, rest) = bytes.split_at(split.min(bytes.len()));
    out.clear();
    out.extend_from_slice(head);
    out.extend_from_slice(b"X-Request-Id: ");
    match client_id {
        Some(id) => out.extend_from_slice(id.as_bytes()),
        None => fresh_id(out),
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(rest);
}

/// A fresh request id as [`crate::api::guards::RequestId::new`] makes it (`req_` and 128 bits
/// from the thread's CSPRNG in hex), written straight into `out`: this path answers a repeat
/// in a few microseconds and allocates nothing else.
fn fresh_id(out: &mut Vec<u8>) {
    use rand::RngCore;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    out.extend_from_slice(b"req_");
    for x in b {
        out.push(HEX[usize::from(x >> 4)]);
        out.push(HEX[usize::from(x & 0x0f)]);
    }
}
