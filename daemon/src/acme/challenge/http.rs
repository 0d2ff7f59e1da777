//! The http-01 responder (RFC 8555 §8.3): `GET /.well-known/acme-challenge/{token}` answers the
//! key authorization, from this process's [`Responses`] or, on a node of a cluster, from the
//! database ([`SharedAnswers::http`]); anything else is `404`.

use super::{Responses, SharedAnswers, IO_TIMEOUT};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HTTP_PREFIX: &str = "/.well-known/acme-challenge/";

/// Accepts connections until aborted; one task per connection, bounded by [`IO_TIMEOUT`].
pub(super) async fn serve(
    listener: TcpListener,
    responses: Arc<Responses>,
    shared: Option<SharedAnswers>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (r, s) = (responses.clone(), shared.clone());
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(IO_TIMEOUT, answer(stream, &r, s.as_ref())).await {
                tracing::debug!(%peer, error = %e, "http-01 request timed out");
            }
        });
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    responses: &Responses,
    shared: Option<&SharedAnswers>,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let answer = match (method, target.strip_prefix(HTTP_PREFIX)) {
        ("GET" | "HEAD", Some(token)) => match (responses.http(token), shared) {
            (Some(a), _) => Some(a),
            // Not an order of this node: the leader may run it (several nodes).
            (None, Some(s)) => s.http(token).await,
            (None, None) => None,
        },
        _ => None,
    };
    tracing::debug!(target_path = %target, found = answer.is_some(), "http-01 request");
    let (status, body) = match answer {
        Some(a) => ("200 OK", a),
        None => ("404 Not Found", "not found\n".to_owned()),
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}
