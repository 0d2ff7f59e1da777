//! ACME challenges with several nodes (#11): the order runs on the leader, but the CA's
//! validation may reach any node behind the load balancer. Here pebble validates http-01 and
//! tls-alpn-01 against the FOLLOWER's challenge listeners only (pebble's `httpPort`/`tlsPort` are
//! the follower's ports; the leader's listeners are on other ports), so the certificates are
//! issued only if the follower answers from the database (`acme_challenge_answers`).
//!
//! Needs `SCAIVAULT_TEST_PG` (`export SCAIVAULT_TEST_PG=$(bash ci/postgres.sh)`) and Debian's
//! pebble; these tests set the PostgreSQL backend for their daemons themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::pebble::{Pebble, PebbleOptions};
use scaivault_tests::{free_port, openssl_ok, pg, write, Daemon};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn leader(d: &Daemon) -> bool {
    d.get("/v1/sys/health").json()["cluster"]["leader"] == true
}

/// `GET /.well-known/acme-challenge/{token}` on `port`: (status line, body).
fn http01(port: u16, token: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: x.example.test\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// A tls-alpn-01 handshake (`acme-tls/1`, SNI `name`) on `port`: the certificate presented as
/// `openssl x509 -text`, or `None` when the handshake failed.
fn tls_alpn01(port: u16, name: &str) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", name, "-alpn", "acme-tls/1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return None;
    }
    assert!(text.contains("ALPN protocol: acme-tls/1"), "{text}");
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let dir = tempfile::tempdir().unwrap();
    let pem = write(dir.path(), "presented.pem", &text[begin..end]);
    Some(openssl_ok(&[
        "x509", "-in", &pem, "-noout", "-text", "-certopt", "ext_dump",
    ]))
}

fn issue(d: &Daemon, account: &str, domains: &[&str], challenge: &str) -> String {
    let r = d.post(
        "/v1/pki/acme/issue",
        &json!({"account_id": account, "domains": domains, "challenge_type": challenge}),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

fn settled(d: &Daemon, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = d.get(&format!("/v1/pki/acme/certificates/{id}")).json();
        if v["status"] != "pending" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "still {v} after {secs} s; leader log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The certificate verifies against pebble's root and carries `names`.
fn verify(p: &Pebble, d: &Daemon, v: &Value, names: &[&str]) {
    let dir = d.dir.path();
    let root = write(dir, "pebble-root.pem", &p.root_pem());
    let chain: String = v["ca_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let chain = write(dir, "chain.pem", &chain);
    let leaf = write(dir, "leaf.pem", v["certificate"].as_str().unwrap());
    let out = openssl_ok(&["verify", "-CAfile", &root, "-untrusted", &chain, &leaf]);
    assert!(out.contains(": OK"), "{out}");
    let text = openssl_ok(&["x509", "-in", &leaf, "-noout", "-ext", "subjectAltName"]);
    for n in names {
        assert!(text.contains(&format!("DNS:{n}")), "{n} not in {text}");
    }
}

#[test]
fn a_follower_answers_the_challenges_of_the_leaders_orders() {
    pg::require();
    std::env::set_var("SCAIVAULT_TEST_BACKEND", "postgres");
    let (a_http, a_tls, b_http, b_tls) = (free_port(), free_port(), free_port(), free_port());
    // Pebble validates on the follower's ports only.
    let p = Pebble::start(&PebbleOptions::new(b_http, b_tls));
    let mut a = Daemon::start_with_config(&format!(
        "[cluster]\nnode_name = \"a\"\nlease = \"4s\"\n\n[acme]\n\
         http_challenge_listen = \"127.0.0.1:{a_http}\"\n\
         tls_challenge_listen = \"127.0.0.1:{a_tls}\"\n"
    ));
    wait_until(Duration::from_secs(10), "node a leads", || leader(&a));
    let b = a.start_peer(|c| {
        c.replace("node_name = \"a\"", "node_name = \"b\"")
            .replace(&format!(":{a_http}\""), &format!(":{b_http}\""))
            .replace(&format!(":{a_tls}\""), &format!(":{b_tls}\""))
    });
    assert!(!leader(&b));
    let db = std::fs::read_to_string(a.dir.path().join(pg::DATABASE_FILE)).unwrap();
    let answers = |filter: &str| {
        pg::query(
            &db,
            &format!("SELECT kind || ' ' || name FROM acme_challenge_answers {filter}"),
        )
    };

    // A follower answers 404 for a token nobody stored, and refuses an unknown tls-alpn-01 name.
    let (status, _) = http01(b_http, "Zm9vYmFyYmF6cXV4dW5rbm93bg");
    assert!(status.contains(" 404 "), "{status}");
    let (status, _) = http01(b_http, "not..a/token");
    assert!(status.contains(" 404 "), "{status}");
    assert!(tls_alpn01(b_tls, "nobody.example.test").is_none());

    // Whatever is stored, any node serves: an http-01 answer and a tls-alpn-01 digest.
    let digest = "0123456789abcdef".repeat(4);
    pg::query(
        &db,
        &format!(
            "INSERT INTO acme_challenge_answers (kind, name, value, created_at) VALUES \
             ('http-01', 'c3RvcmVkVG9rZW4', 'c3RvcmVkVG9rZW4.thumbprint', '2099-01-01T00:00:00Z'), \
             ('tls-alpn-01', 'stored.example.test', '{digest}', '2099-01-01T00:00:00Z'), \
             ('http-01', 'bGVmdG92ZXI', 'bGVmdG92ZXI.old', '2000-01-01T00:00:00Z')"
        ),
    );
    assert_eq!(
        http01(b_http, "c3RvcmVkVG9rZW4"),
        (
            "HTTP/1.1 200 OK".to_owned(),
            "c3RvcmVkVG9rZW4.thumbprint".to_owned()
        )
    );
    let cert = tls_alpn01(b_tls, "stored.example.test").expect("the stored name's certificate");
    assert!(cert.contains("DNS:stored.example.test"), "{cert}");
    assert!(cert.contains("1.3.6.1.5.5.7.1.31: critical"), "{cert}");
    // The extension's value (`-certopt ext_dump`: hex rows of 13 bytes): OCTET STRING (04 20)
    // holding the digest.
    let hex_dump: String = cert
        .split("1.3.6.1.5.5.7.1.31: critical")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take(3)
        .map(|l| {
            let bytes = l.split_once(" - ").unwrap().1;
            bytes.get(..39).unwrap_or(bytes).replace([' ', '-'], "")
        })
        .collect();
    assert!(hex_dump.contains(&format!("0420{digest}")), "{cert}");
    pg::query(
        &db,
        "DELETE FROM acme_challenge_answers WHERE name IN ('c3RvcmVkVG9rZW4', 'stored.example.test')",
    );
    let (status, _) = http01(b_http, "c3RvcmVkVG9rZW4");
    assert!(status.contains(" 404 "), "{status}");
    assert!(tls_alpn01(b_tls, "stored.example.test").is_none());

    let served = |d: &Daemon| {
        let log = d.log_text();
        (
            log.lines()
                .filter(|l| l.contains("http-01 request") && l.contains("found=true"))
                .count(),
            log.matches("tls-alpn-01 handshake done").count(),
        )
    };
    assert_eq!(served(&b), (1, 1));

    // Real orders, run by the leader, validated by pebble through the follower.
    let r = a.post(
        "/v1/pki/acme/accounts",
        &json!({"name": "pebble", "provider": "custom", "directory_url": p.directory_url,
                "email": "certs@example.com", "directory_ca_pem": p.tls_ca_pem}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let account = r.json()["id"].as_str().unwrap().to_owned();
    for (challenge, names) in [
        ("http-01", ["one.example.test", "two.example.test"]),
        ("tls-alpn-01", ["three.example.test", "four.example.test"]),
    ] {
        let id = issue(&a, &account, &names, challenge);
        let v = settled(&a, &id, 90);
        assert_eq!(
            v["status"],
            "valid",
            "{challenge}: {v}\nfollower log:\n{}",
            b.log_text()
        );
        verify(&p, &a, &v, &names);
        // The order ended: its answers are gone from the database.
        assert_eq!(
            answers("WHERE created_at > '2001'"),
            "",
            "{challenge}: the order's answers are still stored"
        );
        // The same certificate, read through the follower.
        let vb = b.get(&format!("/v1/pki/acme/certificates/{id}")).json();
        assert_eq!(vb["serial_number"], v["serial_number"], "{vb}");
    }
    // The order ran on the leader and the follower answered pebble.
    let (a_log, b_log) = (a.log_text(), b.log_text());
    assert!(a_log.contains("ACME order starting"), "{a_log}");
    assert!(!b_log.contains("ACME order starting"), "{b_log}");
    let (http_served, tls_served) = served(&b);
    assert!(http_served >= 3 && tls_served >= 3, "{b_log}");
    assert_eq!(served(&a), (0, 0), "{a_log}");

    // The leftover from a node that died mid-order goes at the leader's next scheduler pass.
    wait_until(Duration::from_secs(30), "leftover answers deleted", || {
        answers("").is_empty()
    });

    // The leader dies; an order accepted by the follower meanwhile waits for a leader. The
    // follower, once it leads, starts it at once — not at its ACME task's next 10 s tick.
    a.kill();
    let id = issue(&b, &account, &["five.example.test"], "http-01");
    let v = settled(&b, &id, 90);
    assert_eq!(v["status"], "valid", "{v}\nlog:\n{}", b.log_text());
    let log = b.log_text();
    let at = |what: &str| -> f64 {
        let line = log
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in the log:\n{log}"));
        // `2026-12-01T03:04:05.123456Z  INFO …`: seconds of the day are enough here.
        let clock = line
            .split('T')
            .nth(1)
            .and_then(|t| t.split('Z').next())
            .unwrap();
        let parts: Vec<f64> = clock.split(':').map(|x| x.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    let waited = at("ACME order starting") - at("this node is now the leader");
    assert!(
        (0.0..3.0).contains(&waited),
        "the new leader started the order {waited:.1} s after it took over:\n{log}"
    );
}
