//! Several nodes on one PostgreSQL database and one SoftHSM2 token directory (#11): issuance
//! spread over two nodes yields distinct serials, revocations made on one node reach the other's
//! CRL and OCSP answers, the scheduled jobs run on one node, and they move when that node dies;
//! OCSP responses are signed once per cluster and served by every node from the shared table.
//!
//! Needs `SCAIVAULT_TEST_PG` (`export SCAIVAULT_TEST_PG=$(bash ci/postgres.sh)`); these tests set
//! the PostgreSQL backend for their daemons themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bin, crl_number, make_csr, openssl, write, Daemon};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// Two nodes: `a` (started first, so the leader) and `b`, with a lease of `lease`.
fn two_nodes(lease: &str) -> (Daemon, Daemon) {
    scaivault_tests::pg::require();
    std::env::set_var("SCAIVAULT_TEST_BACKEND", "postgres");
    let a = Daemon::start_with_config(&format!(
        "[cluster]\nnode_name = \"a\"\nlease = \"{lease}\"\n"
    ));
    wait_until(Duration::from_secs(10), "node a leads", || leader(&a));
    let b = a.start_peer(|c| c.replace("node_name = \"a\"", "node_name = \"b\""));
    let h = b.get("/v1/sys/health").json();
    assert_eq!(h["cluster"]["backend"], "postgres", "{h}");
    assert_eq!(h["cluster"]["node"], "b", "{h}");
    assert_eq!(h["cluster"]["leader"], false, "{h}");
    (a, b)
}

fn leader(d: &Daemon) -> bool {
    d.get("/v1/sys/health").json()["cluster"]["leader"] == true
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A root and an issuing role, made on node `a`.
fn setup(a: &Daemon, crl_interval: &str) -> Value {
    let root = a.post(
        "/v1/pki/ca",
        &json!({"name": "root", "common_name": "Cluster Root", "ca_type": "root",
                "key_type": "ec", "validity_days": 3650, "crl_interval": crl_interval}),
    );
    assert_eq!(root.status, 201, "{}", root.text());
    let root = root.json();
    let r = a.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": root["id"], "allowed_domains": ["*.svc.internal"], "ttl": "24h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    root
}

fn issue(d: &Daemon, cn: &str) -> String {
    let r = d.post("/v1/pki/issue/svc", &json!({"common_name": cn}));
    assert_eq!(r.status, 200, "{}: {}", d.base, r.text());
    r.json()["serial_number"].as_str().unwrap().to_owned()
}

fn revoke(d: &Daemon, serial: &str) {
    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": serial, "reason": "key_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `openssl ocsp` against node `d`, verified against the root: the status word.
fn ocsp(d: &Daemon, ca_id: &str, root_pem: &str, serial: &str) -> String {
    let o = openssl(&[
        "ocsp",
        "-issuer",
        root_pem,
        "-CAfile",
        root_pem,
        "-serial",
        &format!("0x{}", serial.replace(':', "")),
        "-url",
        &format!("{}/v1/pki/ocsp/{ca_id}", d.base),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("Response verify OK"), "{text}");
    if text.contains(": revoked") {
        "revoked".into()
    } else if text.contains(": good") {
        "good".into()
    } else {
        panic!("{text}")
    }
}

fn audit_verify(d: &Daemon) {
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_nodes_issue_distinct_serials_and_see_each_others_revocations() {
    let (a, b) = two_nodes("4s");
    let root = setup(&a, "1h");
    let ca_id = root["id"].as_str().unwrap().to_owned();
    let root_pem = write(
        a.dir.path(),
        "root.pem",
        root["certificate"].as_str().unwrap(),
    );

    // 1,000 issuances, eight clients, alternating between the nodes.
    let nodes = [&a, &b];
    let serials: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                s.spawn(move || {
                    (0..125)
                        .map(|i| issue(nodes[(t + i) % 2], &format!("h{t}-{i}.svc.internal")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(serials.len(), 1000);
    let distinct: HashSet<&String> = serials.iter().collect();
    assert_eq!(
        distinct.len(),
        1000,
        "duplicate serials across the two nodes"
    );
    // Both nodes list all of them (one database).
    for d in [&a, &b] {
        let mut seen = 0;
        let mut cursor = String::new();
        loop {
            let page = d
                .get(&format!("/v1/pki/certificates?limit=500&cursor={cursor}"))
                .json();
            seen += page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["role"] == "svc")
                .count();
            match page["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = c.to_owned(),
                _ => break,
            }
        }
        assert_eq!(seen, 1000, "{}", d.base);
    }

    // Node b caches "good" answers; node a revokes; b answers "revoked" without being told.
    let (on_a, on_b) = (&serials[0..3], &serials[3..6]);
    for s in on_a.iter().chain(on_b) {
        assert_eq!(ocsp(&b, &ca_id, &root_pem, s), "good");
        assert_eq!(ocsp(&a, &ca_id, &root_pem, s), "good");
    }
    let n0 = crl_number(&a.crl_text(&ca_id, &root_pem, "now"));
    for s in on_a {
        revoke(&a, s);
    }
    for s in on_b {
        revoke(&b, s);
    }
    let took = wait_until(
        Duration::from_secs(10),
        "OCSP revoked on the other node",
        || {
            on_a.iter()
                .all(|s| ocsp(&b, &ca_id, &root_pem, s) == "revoked")
                && on_b
                    .iter()
                    .all(|s| ocsp(&a, &ca_id, &root_pem, s) == "revoked")
        },
    );
    eprintln!("revocations reached the other node's OCSP answers in {took:?}");
    // One rebuild (the leader's, a few seconds after the revocations) puts all six on the CRL,
    // served alike by both nodes.
    let took = wait_until(
        Duration::from_secs(20),
        "all revocations on b's CRL",
        || {
            let text = b.crl_text(&ca_id, &root_pem, "now");
            on_a.iter()
                .chain(on_b)
                .all(|s| text.contains(&s.replace(':', "")))
        },
    );
    eprintln!("revocations reached node b's CRL in {took:?}");
    let text_b = b.crl_text(&ca_id, &root_pem, "now");
    let text_a = a.crl_text(&ca_id, &root_pem, "now");
    assert_eq!(text_a, text_b, "both nodes serve the same CRL");
    assert!(crl_number(&text_b) > n0);
    // The follower built none of them.
    assert_eq!(b.metric("scaivault_crl_builds_total"), 0.0);
    assert_eq!(b.metric("scaivault_scheduler_leader_passes_total"), 0.0);
    assert!(a.metric("scaivault_crl_builds_total") >= 1.0);
    assert_eq!(a.metric("scaivault_cluster_leader"), 1.0);
    assert_eq!(b.metric("scaivault_cluster_leader"), 0.0);
    // Both nodes wrote audit records at once: the chain is whole.
    audit_verify(&a);
    audit_verify(&b);
}

#[test]
fn scheduled_jobs_run_once_per_interval_and_move_when_the_leader_dies() {
    let (mut a, b) = two_nodes("4s");
    let root = setup(&a, "1m");
    let ca_id = root["id"].as_str().unwrap().to_owned();
    let root_pem = write(
        a.dir.path(),
        "root.pem",
        root["certificate"].as_str().unwrap(),
    );
    let events = |d: &Daemon| -> Vec<i64> {
        d.get("/v1/events?type=crl.generated&limit=1000").json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"]["ca_id"] == ca_id.as_str() || e["object_id"] == ca_id.as_str())
            .map(|e| e["data"]["crl_number"].as_i64().unwrap_or(-1))
            .collect()
    };
    // The first CRL (built when first asked for, or by the leader's first pass).
    let first = crl_number(&a.crl_text(&ca_id, &root_pem, "now"));
    // One interval (1 minute; the scheduler ticks every 10 s) later there is exactly one more.
    wait_until(Duration::from_secs(90), "the scheduled rebuild", || {
        crl_number(&a.crl_text(&ca_id, &root_pem, "now")) > first
    });
    std::thread::sleep(Duration::from_secs(12)); // a further tick of both schedulers
    let numbers = events(&b);
    assert_eq!(
        numbers
            .iter()
            .filter(|n| **n > i64::try_from(first).unwrap())
            .count(),
        1,
        "one rebuild per interval across the two nodes: {numbers:?}"
    );
    assert_eq!(b.metric("scaivault_crl_builds_total"), 0.0);
    assert_eq!(b.metric("scaivault_scheduler_leader_passes_total"), 0.0);
    assert!(a.metric("scaivault_scheduler_leader_passes_total") >= 1.0);

    // The leader dies (SIGKILL: no goodbye); b takes the jobs over within the lease.
    a.kill();
    let took = wait_until(Duration::from_secs(4), "node b leads after a died", || {
        leader(&b)
    });
    eprintln!("node b became leader {took:?} after node a was killed (lease 4s)");
    // And runs them: a revocation on b is on b's CRL shortly, built by b.
    let serial = issue(&b, "late.svc.internal");
    revoke(&b, &serial);
    wait_until(Duration::from_secs(15), "b rebuilds the CRL", || {
        b.crl_text(&ca_id, &root_pem, "now")
            .contains(&serial.replace(':', ""))
    });
    assert!(b.metric("scaivault_crl_builds_total") >= 1.0);
    assert_eq!(b.metric("scaivault_cluster_elections_total"), 1.0);
    audit_verify(&b);
}

/// An OCSP request without a nonce (so answered from the caches) for `serial`, sent with GET to
/// node `d`: the status `openssl ocsp` reads from the response (verified against the root) and
/// the response's DER.
fn ocsp_cacheable(d: &Daemon, ca_id: &str, root_pem: &str, serial: &str) -> (String, Vec<u8>) {
    use base64::Engine;
    let hex = format!("0x{}", serial.replace(':', ""));
    let req = d.dir.path().join("req.der");
    let resp = d.dir.path().join("resp.der");
    let o = openssl(&[
        "ocsp",
        "-issuer",
        root_pem,
        "-serial",
        &hex,
        "-no_nonce",
        "-reqout",
        req.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).unwrap());
    let b64 = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let r = d.call("GET", &format!("/v1/pki/ocsp/{ca_id}/{b64}"), None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    std::fs::write(&resp, &r.bytes).unwrap();
    let o = openssl(&[
        "ocsp",
        "-respin",
        resp.to_str().unwrap(),
        "-issuer",
        root_pem,
        "-CAfile",
        root_pem,
        "-serial",
        &hex,
        "-no_nonce",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("Response verify OK"), "{text}");
    let status = if text.contains(": revoked") {
        "revoked"
    } else if text.contains(": good") {
        "good"
    } else {
        panic!("{text}")
    };
    (status.to_owned(), r.bytes)
}

#[test]
fn ocsp_responses_are_signed_once_per_cluster_and_served_by_every_node() {
    const SIGNED: &str = "scaivault_ocsp_signed_total";
    const SHARED: &str = "scaivault_ocsp_shared_hits_total";
    let (a, b) = two_nodes("4s");
    // A one-minute OCSP validity: responses are due for refresh after 30 s.
    let root = a.post(
        "/v1/pki/ca",
        &json!({"name": "root", "common_name": "Cluster Root", "ca_type": "root",
                "key_type": "ec", "validity_days": 3650, "ocsp_validity": "1m"}),
    );
    assert_eq!(root.status, 201, "{}", root.text());
    let root = root.json();
    let r = a.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": root["id"], "allowed_domains": ["*.svc.internal"], "ttl": "24h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ca_id = root["id"].as_str().unwrap().to_owned();
    let root_pem = write(
        a.dir.path(),
        "root.pem",
        root["certificate"].as_str().unwrap(),
    );

    // Issued on the leader: its pre-signer signs the responses and stores them for the cluster;
    // the follower serves the same bytes without signing anything.
    let on_a: Vec<String> = (0..3)
        .map(|i| issue(&a, &format!("a{i}.svc.internal")))
        .collect();
    wait_until(Duration::from_secs(10), "the leader pre-signs", || {
        a.metric(SIGNED) >= 3.0
    });
    std::thread::sleep(Duration::from_secs(1)); // the background store of the last one
    for s in &on_a {
        let (status_b, der_b) = ocsp_cacheable(&b, &ca_id, &root_pem, s);
        let (status_a, der_a) = ocsp_cacheable(&a, &ca_id, &root_pem, s);
        assert_eq!((status_a.as_str(), status_b.as_str()), ("good", "good"));
        assert_eq!(der_a, der_b, "both nodes serve the leader's response");
    }
    assert_eq!(b.metric(SIGNED), 0.0, "the follower signed nothing");
    assert_eq!(b.metric(SHARED), 3.0);
    assert_eq!(b.metric("scaivault_ocsp_presign_queue"), 0.0);
    // Asked again, the follower answers from its own cache.
    let hits = b.metric("scaivault_ocsp_cache_hits_total");
    ocsp_cacheable(&b, &ca_id, &root_pem, &on_a[0]);
    assert_eq!(b.metric("scaivault_ocsp_cache_hits_total"), hits + 1.0);
    assert_eq!(b.metric(SIGNED), 0.0);

    // Issued on the follower: no pre-signing there; the first node asked signs and stores it, and
    // the other serves that response.
    let on_b = issue(&b, "b0.svc.internal");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.metric(SIGNED), 0.0, "a follower does not pre-sign");
    let (status, first) = ocsp_cacheable(&b, &ca_id, &root_pem, &on_b);
    assert_eq!(status, "good");
    assert_eq!(b.metric(SIGNED), 1.0);
    std::thread::sleep(Duration::from_secs(1));
    let shared_a = a.metric(SHARED);
    let (_, on_a_der) = ocsp_cacheable(&a, &ca_id, &root_pem, &on_b);
    assert_eq!(on_a_der, first, "the leader serves the follower's response");
    assert_eq!(a.metric(SHARED), shared_a + 1.0);

    // The leader keeps the shared responses fresh, also those only the follower serves: once the
    // follower's copy is half-way through its minute, it finds a newer one, signed by the leader.
    let took = wait_until(Duration::from_secs(60), "a refreshed response on b", || {
        let (status, der) = ocsp_cacheable(&b, &ca_id, &root_pem, &on_b);
        assert_eq!(status, "good");
        std::thread::sleep(Duration::from_millis(500));
        der != first
    });
    eprintln!("the follower served the leader's refreshed response after {took:?}");
    assert_eq!(b.metric(SIGNED), 1.0, "the follower never refreshes");
    assert_eq!(b.metric("scaivault_scheduler_leader_passes_total"), 0.0);

    // A revocation on the follower: both nodes answer `revoked` within seconds, from their caches
    // and signed afresh (with a nonce).
    revoke(&b, &on_a[1]);
    revoke(&b, &on_b);
    let took = wait_until(Duration::from_secs(5), "revoked on both nodes", || {
        [&a, &b].iter().all(|d| {
            [&on_a[1], &on_b]
                .iter()
                .all(|s| ocsp_cacheable(d, &ca_id, &root_pem, s).0 == "revoked")
        })
    });
    eprintln!("both nodes answered revoked {took:?} after the follower's revocations");
    for d in [&a, &b] {
        for s in [&on_a[1], &on_b] {
            assert_eq!(ocsp(d, &ca_id, &root_pem, s), "revoked");
            assert_eq!(ocsp_cacheable(d, &ca_id, &root_pem, s).0, "revoked");
        }
        assert_eq!(ocsp_cacheable(d, &ca_id, &root_pem, &on_a[0]).0, "good");
    }
    assert_eq!(b.metric("scaivault_scheduler_leader_passes_total"), 0.0);

    // Anyone may ask about random serials: `unknown` answers are not stored for the cluster.
    let db =
        std::fs::read_to_string(a.dir.path().join(scaivault_tests::pg::DATABASE_FILE)).unwrap();
    let rows = |serial: &str| -> i64 {
        scaivault_tests::pg::query(
            db.trim(),
            &format!("SELECT count(*) FROM ocsp_responses WHERE serial = '{serial}'"),
        )
        .parse()
        .unwrap()
    };
    assert!(
        rows(&on_a[0].replace(':', "").to_uppercase()) >= 1,
        "known serials are stored"
    );
    let stranger = "7123456789ABCDEF0123";
    let req = b.dir.path().join("unknown.der");
    let o = openssl(&[
        "ocsp",
        "-issuer",
        &root_pem,
        "-serial",
        &format!("0x{stranger}"),
        "-no_nonce",
        "-reqout",
        req.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&req).unwrap())
    };
    let b64 = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let r = b.call("GET", &format!("/v1/pki/ocsp/{ca_id}/{b64}"), None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        rows(stranger),
        0,
        "an unknown serial's answer was stored for the cluster"
    );
    audit_verify(&a);
    audit_verify(&b);
}

/// A node whose listen address is taken exits with an error naming it, not a crash. Its store's
/// last reference goes on an async thread at shutdown, where dropping a PostgreSQL connection
/// used to panic inside a destructor and abort (seen in CI: SIGABRT after a failed bind).
#[test]
fn a_node_that_cannot_bind_its_address_exits_with_an_error() {
    scaivault_tests::pg::require();
    std::env::set_var("SCAIVAULT_TEST_BACKEND", "postgres");
    let a = Daemon::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(a.config()).unwrap();
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else {
                l.to_owned()
            }
        })
        .collect();
    let cfg = write(&a.data(), "taken.toml", &text.join("\n"));
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // An exit code (the startup error's), not a signal.
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "{}: {err}",
        out.status
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    drop(taken);
}

/// `HOST:PORT` of the test PostgreSQL server (from `SCAIVAULT_TEST_PG`).
fn pg_hostport() -> String {
    let pg = std::env::var("SCAIVAULT_TEST_PG").unwrap();
    pg.split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned()
}

/// A TCP relay to `target` that can be frozen: it then stops forwarding but keeps both
/// connections open, as a stalled network path or a proxy that hangs does (no reset, no
/// timeout the kernel would notice).
struct Relay {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(target: &str) -> Relay {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = frozen.clone();
        let target = target.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut buf = [0u8; 16384];
                        loop {
                            if flag.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                                continue;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Relay { addr, frozen }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The leader's path to the database hangs (its connections stay open, nothing moves): it stops
/// acting as leader within a quarter lease, the server ends its silent leadership session after a
/// lease, and the other node takes over; its health answers `503` within seconds instead of
/// hanging. When the path comes back it works again, as a follower.
#[test]
fn a_leader_whose_database_path_hangs_gives_way() {
    scaivault_tests::pg::require();
    std::env::set_var("SCAIVAULT_TEST_BACKEND", "postgres");
    let a = Daemon::start_with_config("[cluster]\nnode_name = \"a\"\nlease = \"4s\"\n");
    wait_until(Duration::from_secs(10), "node a leads", || leader(&a));
    let hostport = pg_hostport();
    let relay = Relay::start(&hostport);
    let cfg = std::fs::read_to_string(a.config()).unwrap();
    assert!(cfg.contains(&hostport), "{cfg}");
    let mut b = a.start_peer(|c| {
        c.replace("node_name = \"a\"", "node_name = \"b\"")
            .replace(&hostport, &relay.addr.to_string())
    });
    // b leads: a leaves (a clean stop gives the lock up) and comes back as a follower.
    let dir = a.into_dir();
    wait_until(Duration::from_secs(10), "node b leads", || leader(&b));
    let a = Daemon::start_in(dir);
    assert!(!leader(&a));

    relay.freeze(true);
    let took = wait_until(Duration::from_secs(20), "node a takes over", || leader(&a));
    eprintln!("node a took over {took:?} after b's database path hung (lease 4s)");
    let t0 = Instant::now();
    let h = b.call("GET", "/v1/sys/health", None, None);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!(h.status, 503, "{}", h.text());
    let h = h.json();
    assert_eq!(h["database"], "unavailable", "{h}");
    assert_eq!(h["cluster"]["leader"], false, "{h}");
    // The database's silence is not blamed on the token (the CA key check read the database
    // inside its token call, whose limit then ran out).
    std::thread::sleep(Duration::from_secs(11));
    let log = b.log_text();
    assert!(
        !log.contains("the token did not answer in time"),
        "a database hang was reported as the token's:\n{log}"
    );

    relay.freeze(false);
    wait_until(Duration::from_secs(30), "node b is healthy again", || {
        b.call("GET", "/v1/sys/health", None, None).status == 200
    });
    assert!(!leader(&b));
    assert!(leader(&a));
    audit_verify(&a);

    // A stop while the path hangs again ends within systemd's 30 s stop timeout: the scheduler
    // and the queued writes are waited for a bounded time, not for the database's answers (each
    // statement may take a minute before it is given up; the stop took over two minutes).
    relay.freeze(true);
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let status = b.terminate();
    let took = t0.elapsed();
    assert!(
        status.is_some() && took < Duration::from_secs(28),
        "the stop took {took:?} ({status:?}):\n{}",
        b.log_text()
    );
    relay.freeze(false);
}

/// A TCP relay to PostgreSQL that loses the confirmation of one `COMMIT`: once armed with a
/// marker, it forwards the `COMMIT` that follows the second client message carrying the marker
/// (an issuance's certificate commit, after its reservation) and then closes the client's side
/// at once, keeping the server's side open. The server applies the commit; the daemon sees its
/// connection drop and never hears of it. For `refuse` after that cut, new connections are closed
/// as soon as they are accepted, so the daemon's next writes fail too.
struct CommitCutter {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<CutState>>,
}

#[derive(Default)]
struct CutState {
    marker: Option<(Vec<u8>, Duration)>,
    seen: usize,
    last_conn: usize,
    cut: bool,
    refuse_until: Option<Instant>,
}

impl CommitCutter {
    fn start(target: &str) -> CommitCutter {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(std::sync::Mutex::new(CutState::default()));
        let st = state.clone();
        let target = target.to_owned();
        std::thread::spawn(move || {
            for (conn, client) in listener.incoming().flatten().enumerate() {
                let refuse = st
                    .lock()
                    .unwrap()
                    .refuse_until
                    .is_some_and(|t| Instant::now() < t);
                if refuse {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let st = st.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        let mut cut_now = false;
                        {
                            let mut s = st.lock().unwrap();
                            if let Some((m, refuse)) = s.marker.clone() {
                                if chunk.windows(m.len()).any(|w| w == m) {
                                    s.seen += 1;
                                    s.last_conn = conn;
                                } else if s.seen >= 2
                                    && s.last_conn == conn
                                    && chunk.windows(6).any(|w| w == b"COMMIT")
                                {
                                    s.marker = None;
                                    s.cut = true;
                                    s.refuse_until = Some(Instant::now() + refuse);
                                    cut_now = true;
                                }
                            }
                        }
                        if s_write.write_all(chunk).is_err() {
                            return;
                        }
                        if cut_now {
                            let _ = c_read.shutdown(std::net::Shutdown::Both);
                            // The server reads the COMMIT before it sees this side close.
                            std::thread::sleep(Duration::from_secs(2));
                            return;
                        }
                    }
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    loop {
                        match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if c_write.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        CommitCutter { addr, state }
    }

    /// Cuts after the certificate commit of the issuance whose messages carry `marker`, then
    /// refuses connections for `refuse`.
    fn arm(&self, marker: &str, refuse: Duration) {
        let mut s = self.state.lock().unwrap();
        *s = CutState {
            marker: Some((marker.as_bytes().to_vec(), refuse)),
            ..CutState::default()
        };
    }

    fn was_cut(&self) -> bool {
        self.state.lock().unwrap().cut
    }
}

/// The certificate row with common name `cn`.
fn certificate_named(d: &Daemon, cn: &str) -> Option<Value> {
    let r = d.get("/v1/pki/certificates?limit=100");
    if r.status != 200 {
        return None;
    }
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["common_name"] == cn)
        .cloned()
}

/// An issuance whose certificate commit the server applied but never confirmed (the connection
/// dropped right after `COMMIT`): the caller is told nothing was issued, so the certificate must
/// not stay `valid` in the inventory. The failed issuance's own write revokes it; when that write
/// fails too (the database refuses connections for a while), the scheduler does it on a later
/// tick. The CRL then lists both serials (openssl judges), and the audit chain holds.
#[test]
fn a_certificate_commit_that_was_never_confirmed_is_revoked_not_left_valid() {
    scaivault_tests::pg::require();
    std::env::set_var("SCAIVAULT_TEST_BACKEND", "postgres");
    let a = Daemon::start_with_config("[cluster]\nnode_name = \"a\"\n");
    let root = setup(&a, "24h");
    let ca_id = root["id"].as_str().unwrap().to_owned();
    let hostport = pg_hostport();
    let cutter = CommitCutter::start(&hostport);
    let cfg_path = a.config();
    let dir = a.into_dir();
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(cfg.contains(&hostport), "{cfg}");
    std::fs::write(&cfg_path, cfg.replace(&hostport, &cutter.addr.to_string())).unwrap();
    let d = Daemon::start_in(dir);
    issue(&d, "before.svc.internal");

    // The settling write goes through at once.
    cutter.arm("unconfirmed-1.svc.internal", Duration::ZERO);
    let r = d.post(
        "/v1/pki/issue/svc",
        &json!({"common_name": "unconfirmed-1.svc.internal"}),
    );
    assert!(cutter.was_cut(), "the relay saw no certificate commit");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "database_unavailable", "{}", r.text());
    let first = certificate_named(&d, "unconfirmed-1.svc.internal")
        .expect("the commit the server applied is in the inventory");
    assert_eq!(first["status"], "revoked", "{first}");
    assert_eq!(
        first["revocation_reason"], "cessation_of_operation",
        "{first}"
    );

    // The settling write fails (no connection for 3 s): a later scheduler tick makes it.
    cutter.arm("unconfirmed-2.svc.internal", Duration::from_secs(3));
    let r = d.post(
        "/v1/pki/issue/svc",
        &json!({"common_name": "unconfirmed-2.svc.internal"}),
    );
    assert!(cutter.was_cut(), "the relay saw no certificate commit");
    assert_eq!(r.status, 503, "{}", r.text());
    // Settling waits for the connection pause (5 s) and a scheduler tick.
    assert_eq!(d.metric("scaivault_unsettled_commits"), 1.0);
    wait_until(
        Duration::from_secs(40),
        "the second serial is settled",
        || {
            certificate_named(&d, "unconfirmed-2.svc.internal")
                .is_some_and(|c| c["status"] == "revoked")
        },
    );
    let second = certificate_named(&d, "unconfirmed-2.svc.internal").unwrap();
    assert_eq!(d.metric("scaivault_unsettled_commits"), 0.0);
    let log = d.log_text();
    assert!(
        log.contains("could not be settled yet"),
        "the first settling write did not fail:\n{log}"
    );
    assert!(
        log.contains("was not confirmed was found stored: revoked"),
        "{log}"
    );

    // A reviewed CSR whose certificate commit was not confirmed: the certificate is revoked and
    // the CSR is back to `approved` (its commit had marked it `signed`), so it can be signed
    // again.
    let (csr_pem, _) = make_csr(
        d.dir.path(),
        "unconfirmed-3",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=unconfirmed-3.svc.internal",
        None,
    );
    let csr = d.post("/v1/pki/csr/import", &json!({"csr_pem": csr_pem}));
    assert_eq!(csr.status, 201, "{}", csr.text());
    let csr_id = csr.json()["id"].as_str().unwrap().to_owned();
    let ok = d.post(&format!("/v1/pki/csr/{csr_id}/approve"), &json!({}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    cutter.arm("unconfirmed-3.svc.internal", Duration::ZERO);
    let sign = json!({"ca_id": ca_id, "validity_days": 1});
    let r = d.post(&format!("/v1/pki/csr/{csr_id}/sign"), &sign);
    assert!(cutter.was_cut(), "the relay saw no certificate commit");
    assert_eq!(r.status, 503, "{}", r.text());
    let third = certificate_named(&d, "unconfirmed-3.svc.internal")
        .expect("the commit the server applied is in the inventory");
    assert_eq!(third["status"], "revoked", "{third}");
    let c = d.get(&format!("/v1/pki/csr/{csr_id}")).json();
    assert_eq!(c["status"], "approved", "{c}");
    assert!(c["serial_number"].is_null(), "{c}");
    let again = d.post(&format!("/v1/pki/csr/{csr_id}/sign"), &sign);
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(
        !d.log_text().contains("could not release a CSR"),
        "{}",
        d.log_text()
    );

    // Audited, and on the next CRL.
    let audit = d.get("/v1/audit?limit=1000").json();
    let settled = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["outcome"] == "revoked_unconfirmed")
        .count();
    assert_eq!(settled, 3, "{audit}");
    let r = d.post(&format!("/v1/pki/ca/{ca_id}/crl"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let root_pem = write(
        d.dir.path(),
        "root.pem",
        root["certificate"].as_str().unwrap(),
    );
    let text = d.crl_text(&ca_id, &root_pem, "settled");
    for c in [&first, &second, &third] {
        let hex = c["serial_number"]
            .as_str()
            .unwrap()
            .replace(':', "")
            .to_uppercase();
        assert!(text.contains(&hex), "{hex} not in\n{text}");
    }
    audit_verify(&d);
}
