//! A local webhook receiver for system tests: a tiny HTTP/1.1 server (plain, or TLS with a given
//! certificate) on a loopback port that records each request and answers with scripted statuses,
//! and the check of ScaiVault's `ScaiVault-Signature` header (docs/WEBHOOKS.md).

use hmac::{Hmac, Mac};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// `POST /path?query HTTP/1.1`.
    pub request_line: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// A header's value (`""` when absent); `name` in lowercase.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Whether `ScaiVault-Signature` is `v1=<hex HMAC-SHA256(secret, timestamp "." body)>`.
    pub fn signature_valid(&self, secret: &[u8]) -> bool {
        let ts = self.header("scaivault-timestamp");
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        !ts.is_empty() && self.header("scaivault-signature") == want
    }
}

/// The receiver. Its thread lives as long as the test process.
pub struct Receiver {
    /// `http://127.0.0.1:PORT/hook?src=test` (or `https://`).
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    /// Statuses for the next requests, in order.
    pub script: Arc<Mutex<VecDeque<u16>>>,
    /// The status once the script is used up (200 at first).
    pub default: Arc<Mutex<u16>>,
    /// The `Location` sent with 3xx answers.
    pub redirect_to: Arc<Mutex<String>>,
}

struct Shared {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    default: Arc<Mutex<u16>>,
    redirect_to: Arc<Mutex<String>>,
}

impl Receiver {
    /// A plain HTTP receiver.
    pub fn start() -> Receiver {
        Self::spawn(None)
    }

    /// An HTTPS receiver presenting `cert_pem` (leaf first, then its chain) with `key_pem`.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Receiver {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::spawn(Some(Arc::new(config)))
    }

    fn spawn(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!(
            "{scheme}://{}/hook?src=test",
            listener.local_addr().unwrap()
        );
        let r = Receiver {
            url,
            got: Arc::default(),
            script: Arc::default(),
            default: Arc::new(Mutex::new(200)),
            redirect_to: Arc::default(),
        };
        let shared = Shared {
            got: r.got.clone(),
            script: r.script.clone(),
            default: r.default.clone(),
            redirect_to: r.redirect_to.clone(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                // A failed exchange (a client that gave up, a refused handshake) is not recorded.
                let _ = match &tls {
                    Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                        Ok(c) => serve(rustls::StreamOwned::new(c, tcp), &shared),
                        Err(_) => continue,
                    },
                    None => serve(tcp, &shared),
                };
            }
        });
        r
    }

    /// The requests so far.
    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (at most `secs`) until `n` requests arrived; returns them.
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} deliveries in {secs} s: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve<S: Read + Write>(stream: S, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let code = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(*shared.default.lock().unwrap());
    shared.got.lock().unwrap().push(Received {
        at: Instant::now(),
        request_line: request_line.trim_end().to_owned(),
        headers,
        body,
        answered: code,
    });
    let location = if (300..400).contains(&code) {
        format!("Location: {}\r\n", shared.redirect_to.lock().unwrap())
    } else {
        String::new()
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {code} X\r\n{location}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()
}
