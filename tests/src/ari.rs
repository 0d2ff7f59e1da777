//! An ARI-capable ACME directory for tests (Debian's pebble 2.4 has no `renewalInfo`): an HTTPS
//! server that serves pebble's own directory with a `renewalInfo` URL added, pointing at itself,
//! and answers RFC 9773 renewal-information requests with a suggested window relative to now.
//! Every other ACME URL in the directory still points at pebble. It presents pebble's TLS
//! certificate, so the account's `directory_ca_pem` (pebble's TLS CA) covers it too.

use crate::pebble::Pebble;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The running directory.
pub struct AriDirectory {
    /// `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// The certificate identifiers asked about, in order.
    pub asked: Arc<Mutex<Vec<String>>>,
    /// While set, directories served from now on send new orders here, and they are refused with
    /// `429 rateLimited` and `Retry-After: 7200`.
    pub rate_limit_orders: Arc<std::sync::atomic::AtomicBool>,
}

/// RFC 3339 (UTC, whole seconds) of a Unix time, via `date` (no date crate in the test kit).
fn rfc3339(unix: i64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl AriDirectory {
    /// Serves pebble's directory plus ARI; the suggested window is `[now + start, now + end]`
    /// (seconds, may be negative), with `Retry-After: 3600`.
    pub fn start(p: &Pebble, window: (i64, i64)) -> AriDirectory {
        let dir = p.dir.path();
        let certs = CertificateDer::pem_file_iter(dir.join("localhost.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("localhost.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let upstream = p.directory_url.clone();
        let ca = dir.join("tls-ca.pem");
        let me = format!("https://127.0.0.1:{port}");
        let seen = asked.clone();
        let directory_url = format!("{me}/dir");
        let limited: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let limit = limited.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (config, upstream, ca, me, seen, limit) = (
                    config.clone(),
                    upstream.clone(),
                    ca.clone(),
                    me.clone(),
                    seen.clone(),
                    limit.clone(),
                );
                std::thread::spawn(move || {
                    let Ok(tls) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut s = rustls::StreamOwned::new(tls, conn);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let (status, extra, body) = if path == "/dir" {
                        let out = std::process::Command::new("curl")
                            .args(["-sSf", "--max-time", "5", "--cacert"])
                            .arg(&ca)
                            .arg(&upstream)
                            .output()
                            .expect("curl");
                        let mut d: serde_json::Value =
                            serde_json::from_slice(&out.stdout).unwrap_or_default();
                        d["renewalInfo"] = format!("{me}/renewal-info").into();
                        if limit.load(std::sync::atomic::Ordering::SeqCst) {
                            d["newOrder"] = format!("{me}/new-order").into();
                        }
                        ("200 OK", String::new(), d.to_string())
                    } else if path == "/new-order" {
                        let body = serde_json::json!({
                            "type": "urn:ietf:params:acme:error:rateLimited",
                            "detail": "too many new orders recently (test)", "status": 429});
                        (
                            "429 Too Many Requests",
                            "Retry-After: 7200\r\n".to_owned(),
                            body.to_string(),
                        )
                    } else if let Some(id) = path.strip_prefix("/renewal-info/") {
                        seen.lock().unwrap().push(id.to_owned());
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        let body = serde_json::json!({"suggestedWindow": {
                            "start": rfc3339(now + window.0), "end": rfc3339(now + window.1)}});
                        (
                            "200 OK",
                            "Retry-After: 3600\r\n".to_owned(),
                            body.to_string(),
                        )
                    } else {
                        ("404 Not Found", String::new(), "{}".to_owned())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes());
                    let _ = s.flush();
                    s.conn.send_close_notify();
                    let _ = s.flush();
                });
            }
        });
        AriDirectory {
            directory_url,
            asked,
            rate_limit_orders: limited,
        }
    }
}
