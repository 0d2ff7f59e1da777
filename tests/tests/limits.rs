//! Request limits (issue #10, point 5): body limits per route (JSON 1 MiB, CSR 64 KiB, OCSP 8 KiB)
//! answered with `413` before the body is read; a body that does not arrive in time gets `408`;
//! token buckets per API token, per tenant, and per client address on the public CRL/OCSP
//! endpoints answer `429` with `Retry-After`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bench, Daemon};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `body` with a raw HTTP/1.1 request and returns the status line's code and the response
/// text; the server may answer before it has read the body (it then closes the connection).
fn raw(
    d: &Daemon,
    method: &str,
    path: &str,
    ctype: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let addr = d.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ctype}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // Write in pieces and stop at the first error: the server closing early is allowed.
    for chunk in body.chunks(64 * 1024) {
        if s.write_all(chunk).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (code, text)
}

/// `raw` POST of a JSON body with the admin token.
fn admin_json(d: &Daemon, path: &str, body: &[u8]) -> (u16, String) {
    raw(d, "POST", path, "application/json", Some(&d.admin), body)
}

/// `raw` POST of an OCSP request.
fn ocsp_post(d: &Daemon, path: &str, body: &[u8]) -> (u16, String) {
    raw(d, "POST", path, "application/ocsp-request", None, body)
}

#[test]
fn oversized_bodies_get_413_quickly_without_memory_growth() {
    let d = Daemon::start();
    let root = d.create_root("r", "ec", None);
    let role = d.post(
        "/v1/pki/roles",
        &json!({"name": "web", "ca_id": root["id"], "allowed_domains": ["example.test"], "allow_subdomains": true, "max_ttl": "24h"}),
    );
    assert_eq!(role.status, 201, "{}", role.text());
    let ten_mb = vec![b'a'; 10 * 1024 * 1024];
    let routes = [
        ("POST", "/v1/pki/roles", "application/json", true),
        ("POST", "/v1/pki/csr/import", "application/json", true),
        ("POST", "/v1/pki/sign/web", "application/json", true),
        (
            "POST",
            &format!("/v1/pki/ocsp/{}", root["id"].as_str().unwrap()) as &str,
            "application/ocsp-request",
            false,
        ),
    ];
    let pid = d.pid();
    // Warm up, then measure resident memory across 40 refused 10 MB requests.
    let (code, _) = admin_json(&d, "/v1/pki/roles", &ten_mb);
    assert_eq!(code, 413);
    let before = bench::status_kib(pid, "VmRSS:");
    for round in 0..10 {
        for (method, path, ctype, auth) in &routes {
            let t0 = Instant::now();
            let token = auth.then_some(d.admin.as_str());
            let (code, text) = raw(&d, method, path, ctype, token, &ten_mb);
            let took = t0.elapsed();
            assert_eq!(code, 413, "{path}: {text}");
            assert!(text.contains("body_too_large"), "{path}: {text}");
            assert!(
                took < Duration::from_secs(2),
                "{path} round {round}: {took:?}"
            );
        }
    }
    let after = bench::status_kib(pid, "VmRSS:");
    assert!(
        after < before + 16 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );

    // Per-route limits: CSR routes take 64 KiB, others the configured 1 MiB; OCSP takes 8 KiB.
    let pad = |n: usize| json!({"csr_pem": "x".repeat(n)}).to_string().into_bytes();
    let (code, text) = admin_json(&d, "/v1/pki/csr/import", &pad(70 * 1024));
    assert_eq!(code, 413, "{text}");
    let (code, text) = admin_json(&d, "/v1/pki/csr/import", &pad(60 * 1024));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("invalid_csr"), "{text}");
    let big_role = json!({"name": "x".repeat(200 * 1024)})
        .to_string()
        .into_bytes();
    let (code, text) = admin_json(&d, "/v1/pki/roles", &big_role);
    assert_eq!(
        code, 400,
        "a 200 KiB role body is under the 1 MiB limit: {text}"
    );
    let ocsp = format!("/v1/pki/ocsp/{}", root["id"].as_str().unwrap());
    let (code, text) = ocsp_post(&d, &ocsp, &[0u8; 9 * 1024]);
    assert_eq!(code, 413, "{text}");
    let (code, text) = ocsp_post(&d, &ocsp, &[0u8; 100]);
    assert_eq!(
        code, 200,
        "garbage within the limit is an OCSP malformedRequest: {text}"
    );
    // The daemon is fine afterwards.
    assert_eq!(d.get("/v1/sys/health").status, 200);
}

/// Restarts `d` with `extra` appended to its configuration.
fn restart_with(d: Daemon, extra: &str) -> Daemon {
    let cfg_path = d.config();
    let dir = d.into_dir();
    let mut cfg = std::fs::read_to_string(&cfg_path).unwrap();
    cfg.push_str(extra);
    std::fs::write(&cfg_path, cfg).unwrap();
    Daemon::start_in(dir)
}

/// Clients that stall on the API listener are not held: a head that never ends is dropped after
/// `[limits] header_timeout`; a body shorter than Rocket's 14-byte form peek gets the `408` of
/// `body_timeout` (before the patch in daemon/vendor/PATCHES.md both were held forever, even on
/// `/v1/sys/health`); a stalled form body gets an answer too.
#[test]
fn stalled_heads_and_short_bodies_are_not_held() {
    let d = restart_with(
        Daemon::start(),
        "\n[limits]\nbody_timeout = \"1s\"\nheader_timeout = \"2s\"\n",
    );
    let addr = d.base.trim_start_matches("http://").to_owned();
    // Sends `text` and reads until the server closes; returns what came back and how long it took.
    let stall = |text: String| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let t0 = Instant::now();
        s.write_all(text.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (String::from_utf8_lossy(&out).into_owned(), t0.elapsed())
    };
    let (text, took) = stall(format!("GET /v1/sys/health HTTP/1.1\r\nHost: {addr}\r\n"));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "unfinished head held for {took:?}: {text:?}"
    );
    // A connection that never sends a byte is closed as well.
    let (text, took) = stall(String::new());
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "a silent connection held for {took:?}: {text:?}"
    );
    let (text, took) = stall(format!(
        "POST /v1/pki/roles HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"na",
        d.admin
    ));
    assert!(text.starts_with("HTTP/1.1 408"), "{took:?}: {text}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (text, took) = stall(format!(
        "POST /v1/pki/roles HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\na=b",
        d.admin
    ));
    assert!(text.starts_with("HTTP/1.1 4"), "{took:?}: {text}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The daemon still answers.
    assert_eq!(d.get("/v1/sys/health").status, 200);
}

/// The body starts and then stalls.
#[test]
fn slow_bodies_time_out_with_408() {
    let d = restart_with(Daemon::start(), "\n[limits]\nbody_timeout = \"1s\"\n");
    let addr = d.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /v1/pki/roles HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"name\": \"slow-and-steady",
        d.admin
    );
    let t0 = Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn token_tenant_and_address_buckets_answer_429_with_retry_after() {
    let d = restart_with(
        Daemon::start(),
        "\n[limits]\ntoken_rate = 1\ntoken_burst = 5\ntenant_rate = 1\ntenant_burst = 8\npublic_ip_rate = 1\npublic_ip_burst = 4\n",
    );
    // A second token of the same tenant.
    let other = d.post("/v1/auth/tokens", &json!({"policies": ["auditor"]}));
    assert_eq!(other.status, 201, "{}", other.text());
    let other = other.json()["token"].as_str().unwrap().to_owned();

    // The admin token: its burst of 5 (one was spent creating the token), then 429.
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(d.get("/v1/pki/ca").status);
    }
    let limited = codes
        .iter()
        .position(|c| *c == 429)
        .expect("no 429 from the token bucket");
    assert!((3..=5).contains(&limited), "{codes:?}");
    let r = d.get("/v1/pki/ca");
    let p = r.problem(429, "rate_limited");
    assert!(p["detail"].as_str().unwrap().contains("API token"), "{p}");
    let retry = raw_retry_after(&d, "/v1/pki/ca", Some(&d.admin));
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // The other token still has its own bucket, but the tenant's (8) runs out first.
    let mut other_codes = Vec::new();
    for _ in 0..4 {
        other_codes.push(d.call("GET", "/v1/audit", Some(&other), None).status);
    }
    assert!(
        other_codes.contains(&429),
        "tenant bucket never ran out: {other_codes:?}"
    );
    let r = d.call("GET", "/v1/audit", Some(&other), None);
    let p = r.problem(429, "rate_limited");
    assert!(p["detail"].as_str().unwrap().contains("tenant"), "{p}");
    // Buckets refill: after the wait, calls go through again.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(d.get("/v1/pki/ca").status, 200);

    // Public endpoints: per address.
    let root = {
        std::thread::sleep(Duration::from_millis(3100));
        d.create_root("pub", "ec", None)
    };
    let crl = format!("/v1/pki/ca/{}/crl", root["id"].as_str().unwrap());
    let mut crl_codes = Vec::new();
    for _ in 0..6 {
        crl_codes.push(d.call("GET", &crl, None, None).status);
    }
    assert_eq!(&crl_codes[..4], &[200, 200, 200, 200], "{crl_codes:?}");
    assert!(crl_codes[4..].contains(&429), "{crl_codes:?}");
    assert!(raw_retry_after(&d, &crl, None) >= 1);
    // Unauthenticated health is not limited.
    assert_eq!(d.get("/v1/sys/health").status, 200);
}

/// The `Retry-After` of a 429 answer to `GET path`.
fn retry_after_of(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Retry-After: {text}"))
}

fn raw_retry_after(d: &Daemon, path: &str, token: Option<&str>) -> u64 {
    let addr = d.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    retry_after_of(&out)
}
