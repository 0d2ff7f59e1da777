//! Webhooks over HTTP against the real daemon, with a tiny HTTP receiver in the test: signed
//! deliveries of issuance and revocation events, filters, retries with backoff, a restart with a
//! pending delivery, DELETE, tenant isolation, input problems, and the secret kept out of
//! responses, logs, audit records and the database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::webhook::{Received, Receiver};
use scaivault_tests::Daemon;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec-test-9f8e7d6c5b4a39281706";

/// Checks the request line, the timestamp and the signature (and that another secret fails).
fn check_signature(r: &Received) {
    assert!(
        r.request_line.starts_with("POST /hook?src=test HTTP/1.1"),
        "{}",
        r.request_line
    );
    let ts = r.header("scaivault-timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (ts.parse::<i64>().unwrap() - now).abs() < 300,
        "timestamp {ts} is not now"
    );
    assert!(r.signature_valid(SECRET.as_bytes()), "signature: {r:?}");
    assert!(!r.signature_valid(b"another-secret-of-length"));
}

/// A daemon whose webhook worker polls every 100 ms and retries after `retry_base_ms`.
fn daemon(retry_base_ms: u64) -> Daemon {
    daemon_with(&format!(
        "retry_base_ms = {retry_base_ms}\ntimeout_secs = 5\n"
    ))
}

/// A daemon with `[webhooks]` set to `poll_ms = 100` and `settings`.
fn daemon_with(settings: &str) -> Daemon {
    let d = Daemon::start();
    let mut cfg = std::fs::read_to_string(d.config()).unwrap();
    let ca_file = d.data().join("webhook-ca.pem");
    cfg.push_str(&format!(
        "\n[webhooks]\npoll_ms = 100\nca_file = \"{}\"\n{settings}",
        ca_file.display()
    ));
    std::fs::write(d.config(), cfg).unwrap();
    Daemon::start_in(d.into_dir())
}

fn setup_role(d: &Daemon) {
    let root = d.create_root("root", "ec", Some(256));
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": root["id"], "allowed_domains": ["*.internal"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

fn issue(d: &Daemon, cn: &str) -> String {
    let r = d.post("/v1/pki/issue/svc", &json!({"common_name": cn}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["serial_number"].as_str().unwrap().to_owned()
}

fn create_hook(d: &Daemon, url: &str, events: Value) -> Value {
    let r = d.post(
        "/v1/webhooks",
        &json!({"url": url, "events": events, "secret": SECRET}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("wh_"), "{v}");
    assert!(
        v.get("secret").is_none() && !r.text().contains(SECRET),
        "{v}"
    );
    v
}

fn deliveries(d: &Daemon, id: &str) -> Vec<Value> {
    let r = d.get(&format!("/v1/webhooks/{id}/deliveries"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"].as_array().unwrap().clone()
}

/// The deliveries once `done` holds for them (an outcome is written after the
/// receiver's answer, so a test that saw the answer polls for the record).
fn deliveries_once(d: &Daemon, id: &str, secs: u64, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let ds = deliveries(d, id);
        if done(&ds) {
            return ds;
        }
        assert!(Instant::now() < deadline, "{ds:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn norm(serial: &str) -> String {
    serial.replace(':', "").to_lowercase()
}

#[test]
fn signed_events_arrive_filtered_and_stop_after_delete() {
    let d = daemon(1000);
    setup_role(&d);
    let before = issue(&d, "before.internal");

    let all = Receiver::start();
    let only_revoked = Receiver::start();
    let w1 = create_hook(
        &d,
        &all.url,
        json!(["certificate.issued", "certificate.revoked"]),
    );
    let w2 = create_hook(&d, &only_revoked.url, json!(["certificate.revoked"]));
    let w3_csr = create_hook(&d, &only_revoked.url, json!(["csr.*"]));
    let (w1_id, w2_id) = (w1["id"].as_str().unwrap(), w2["id"].as_str().unwrap());

    let serial = issue(&d, "a.internal");
    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": serial, "reason": "key_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let got = all.wait_for(2, 30);
    assert_eq!(
        got.len(),
        2,
        "the certificate issued before the webhook is not sent"
    );
    let (issued, revoked) = (got[0].json(), got[1].json());
    assert_eq!(issued["type"], "certificate.issued", "{issued}");
    assert_eq!(revoked["type"], "certificate.revoked", "{revoked}");
    // Serials in payloads are in the API's form (`1A:2B:…`), as `serial_number` is.
    assert_eq!(issued["data"]["serial"].as_str().unwrap(), serial);
    assert_eq!(revoked["data"]["serial"].as_str().unwrap(), serial);
    assert_ne!(norm(&before), norm(&serial));
    for (r, v) in got.iter().zip([&issued, &revoked]) {
        check_signature(r);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("scaivault-event"), v["type"].as_str().unwrap());
        assert!(r.header("scaivault-delivery").starts_with("whd_"));
        assert!(v["id"].as_str().unwrap().starts_with("evt_"), "{v}");
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v["tenant"].as_str().unwrap().starts_with("tn_"), "{v}");
    }

    // The filter: the second receiver gets the revocation only (and no csr.* events).
    let got2 = only_revoked.wait_for(1, 30);
    std::thread::sleep(Duration::from_millis(800));
    let got2b = only_revoked.got();
    assert_eq!(got2b.len(), 1, "{got2b:?}");
    assert_eq!(got2[0].json()["type"], "certificate.revoked");
    check_signature(&got2[0]);

    // Deliveries: both delivered at the first attempt, newest first.
    let ds = deliveries_once(&d, w1_id, 10, |ds| {
        ds.len() == 2 && ds.iter().all(|x| x["status"] != "pending")
    });
    for x in &ds {
        assert_eq!(x["status"], "delivered", "{x}");
        assert_eq!(x["attempts"], 1, "{x}");
        assert_eq!(x["http_status"], 200, "{x}");
    }
    assert_eq!(ds[0]["event_type"], "certificate.revoked");
    assert_eq!(
        ds[0]["id"].as_str().unwrap(),
        got[1].header("scaivault-delivery")
    );
    // Paged: one at a time, the cursor leads to the older one and then ends.
    let p1 = d
        .get(&format!("/v1/webhooks/{w1_id}/deliveries?limit=1"))
        .json();
    assert_eq!(p1["items"][0]["id"], ds[0]["id"], "{p1}");
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = d
        .get(&format!(
            "/v1/webhooks/{w1_id}/deliveries?limit=1&cursor={cursor}"
        ))
        .json();
    assert_eq!(p2["items"][0]["id"], ds[1]["id"], "{p2}");
    assert!(p2["next_cursor"].is_null(), "{p2}");
    d.get(&format!("/v1/webhooks/{w1_id}/deliveries?cursor=abc"))
        .problem(400, "invalid_cursor");

    // Reads never show the secret.
    let list = d.get("/v1/webhooks");
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 3);
    let one = d.get(&format!("/v1/webhooks/{w1_id}"));
    assert_eq!(one.json()["url"], all.url.as_str());
    assert_eq!(
        one.json()["events"],
        json!(["certificate.issued", "certificate.revoked"])
    );
    for r in [&list, &one] {
        assert!(
            !r.text().contains(SECRET) && !r.text().contains("secret"),
            "{}",
            r.text()
        );
    }

    // DELETE stops deliveries.
    let del = d.call(
        "DELETE",
        &format!("/v1/webhooks/{w1_id}"),
        Some(&d.admin),
        None,
    );
    assert_eq!(del.status, 204, "{}", del.text());
    d.get(&format!("/v1/webhooks/{w1_id}"))
        .problem(404, "webhook_not_found");
    d.get(&format!("/v1/webhooks/{w1_id}/deliveries"))
        .problem(404, "webhook_not_found");
    let later = issue(&d, "b.internal");
    d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": later, "reason": "superseded"}),
    );
    let got2 = only_revoked.wait_for(2, 30);
    assert_eq!(
        norm(got2[1].json()["data"]["serial"].as_str().unwrap()),
        norm(&later)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(all.got().len(), 2, "a deleted webhook gets nothing more");
    assert_eq!(deliveries(&d, w2_id).len(), 2);
    assert_eq!(deliveries(&d, w3_csr["id"].as_str().unwrap()).len(), 0);

    // The secret is nowhere: log, audit records, database file.
    assert!(!d.log_text().contains(SECRET), "secret in the log");
    let audit = d.get("/v1/audit?limit=1000");
    assert_eq!(audit.status, 200);
    assert!(!audit.text().contains(SECRET), "secret in the audit log");
    let actions: Vec<String> = audit.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        actions.iter().any(|a| a == "webhook.create success"),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a == "webhook.delete success"),
        "{actions:?}"
    );
    let bytes = d.database_bytes();
    assert!(
        bytes
            .windows(b"webhook.delete".len())
            .any(|w| w == b"webhook.delete"),
        "the database bytes searched hold the audit records"
    );
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "secret in the database"
    );
}

#[test]
fn bad_input_policies_and_tenants() {
    let d = daemon(1000);
    let url = "http://127.0.0.1:9/hook";
    let bad = |body: Value, code: &str| {
        d.post("/v1/webhooks", &body).problem(400, code);
    };
    bad(
        json!({"url": "ftp://h/x", "events": ["*"], "secret": SECRET}),
        "invalid_url",
    );
    bad(
        json!({"url": "https://user:pw@h/x", "events": ["*"], "secret": SECRET}),
        "invalid_url",
    );
    bad(
        json!({"url": "not a url", "events": ["*"], "secret": SECRET}),
        "invalid_url",
    );
    bad(
        json!({"url": url, "events": ["*"], "secret": "short"}),
        "invalid_secret",
    );
    bad(
        json!({"url": url, "events": [], "secret": SECRET}),
        "invalid_events",
    );
    bad(
        json!({"url": url, "events": ["certificate.exploded"], "secret": SECRET}),
        "invalid_events",
    );
    bad(
        json!({"url": url, "events": ["nope.*"], "secret": SECRET}),
        "invalid_events",
    );
    bad(
        json!({"url": url, "events": ["*"], "secret": SECRET, "x": 1}),
        "unknown_field",
    );
    bad(json!({"url": url, "events": ["*"]}), "missing_field");
    d.get("/v1/webhooks/wh_0123456789abcdef0123456789abcdef")
        .problem(404, "webhook_not_found");
    d.get("/v1/webhooks?limit=0").problem(400, "invalid_limit");

    let w = create_hook(&d, url, json!(["*"]));
    let id = w["id"].as_str().unwrap();

    let cli = |args: &[&str]| {
        let out = d.cli(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    cli(&["tenant", "create", "tenant-b"]);
    let b_admin = cli(&[
        "token", "create", "--tenant", "tenant-b", "--policy", "admin",
    ]);
    let auditor = cli(&[
        "token", "create", "--tenant", "default", "--policy", "auditor",
    ]);
    let ca_admin = cli(&[
        "token", "create", "--tenant", "default", "--policy", "ca-admin",
    ]);

    // Another tenant neither sees nor deletes it.
    d.call("GET", &format!("/v1/webhooks/{id}"), Some(&b_admin), None)
        .problem(404, "webhook_not_found");
    d.call(
        "DELETE",
        &format!("/v1/webhooks/{id}"),
        Some(&b_admin),
        None,
    )
    .problem(404, "webhook_not_found");
    d.call(
        "GET",
        &format!("/v1/webhooks/{id}/deliveries"),
        Some(&b_admin),
        None,
    )
    .problem(404, "webhook_not_found");
    let blist = d.call("GET", "/v1/webhooks", Some(&b_admin), None);
    assert_eq!(blist.json()["items"].as_array().unwrap().len(), 0);
    assert_eq!(d.get(&format!("/v1/webhooks/{id}")).status, 200);

    // Only admin manages webhooks.
    let body = json!({"url": url, "events": ["*"], "secret": SECRET}).to_string();
    for t in [&auditor, &ca_admin] {
        d.call("POST", "/v1/webhooks", Some(t), Some(body.as_bytes()))
            .problem(403, "forbidden");
        d.call("GET", "/v1/webhooks", Some(t), None)
            .problem(403, "forbidden");
        d.call("DELETE", &format!("/v1/webhooks/{id}"), Some(t), None)
            .problem(403, "forbidden");
    }
    d.call("GET", "/v1/webhooks", None, None)
        .problem(401, "unauthorized");
}

#[test]
fn retries_back_off_keep_order_and_survive_a_restart() {
    let d = daemon(1000);
    setup_role(&d);
    let rx = Receiver::start();
    rx.script.lock().unwrap().extend([500, 500]);
    let w = create_hook(&d, &rx.url, json!(["certificate.*"]));
    let id = w["id"].as_str().unwrap().to_owned();
    let first = issue(&d, "one.internal");
    let second = issue(&d, "two.internal");

    // 500, 500, then 200 for the first event; the second waits its turn.
    let got = rx.wait_for(4, 60);
    let serials: Vec<String> = got
        .iter()
        .map(|r| norm(r.json()["data"]["serial"].as_str().unwrap()))
        .collect();
    assert_eq!(
        serials,
        vec![norm(&first), norm(&first), norm(&first), norm(&second)],
        "in order per webhook"
    );
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![500, 500, 200, 200]
    );
    let delivery = got[0].header("scaivault-delivery");
    assert!(got[..3]
        .iter()
        .all(|r| r.header("scaivault-delivery") == delivery));
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(
        gap1 >= Duration::from_millis(900),
        "first retry after {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1900),
        "second retry after {gap2:?}"
    );
    for r in &got {
        check_signature(r);
    }
    let ds = deliveries(&d, &id);
    assert_eq!(ds.len(), 2, "{ds:?}");
    assert_eq!(ds[1]["status"], "delivered", "{ds:?}");
    assert_eq!(ds[1]["attempts"], 3, "{ds:?}");
    assert_eq!(ds[1]["http_status"], 200, "{ds:?}");
    assert_eq!(ds[0]["attempts"], 1, "{ds:?}");

    // The receiver fails; the delivery is pending when the daemon stops.
    *rx.default.lock().unwrap() = 503;
    let third = issue(&d, "three.internal");
    let before = rx.got().len();
    rx.wait_for(before + 1, 30);
    // An attempt is counted when it starts; its outcome is written after the
    // answer, so wait for the outcome, not just the count.
    let pending = deliveries_once(&d, &id, 10, |ds| {
        ds[0]["attempts"].as_i64().unwrap() >= 1 && !ds[0]["http_status"].is_null()
    })[0]
        .clone();
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["http_status"], 503, "{pending}");
    assert!(
        pending["next_attempt_at"].as_str().unwrap().ends_with('Z'),
        "{pending}"
    );
    assert!(
        pending["last_error"].as_str().unwrap().contains("503"),
        "{pending}"
    );

    let dir = d.into_dir();
    *rx.default.lock().unwrap() = 200;
    let stopped = Instant::now();
    let d = Daemon::start_in(dir);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rx.got();
        if let Some(ok) = got.iter().find(|r| r.answered == 200 && r.at > stopped) {
            assert_eq!(
                norm(ok.json()["data"]["serial"].as_str().unwrap()),
                norm(&third)
            );
            check_signature(ok);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered after the restart: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ds = deliveries_once(&d, &id, 10, |ds| ds[0]["status"] == "delivered");
    assert!(ds[0]["attempts"].as_i64().unwrap() >= 2, "{ds:?}");
    assert_eq!(ds[0]["http_status"], 200);
    assert!(ds[0]["next_attempt_at"].is_null());
    assert!(!d.log_text().contains(SECRET));
}

#[test]
fn gives_up_after_max_attempts_follows_no_redirect_and_times_out() {
    let d = daemon_with("retry_base_ms = 200\nmax_attempts = 2\ntimeout_secs = 1\n");
    setup_role(&d);
    let redirecting = Receiver::start();
    let target = Receiver::start();
    *redirecting.redirect_to.lock().unwrap() = target.url.clone();
    *redirecting.default.lock().unwrap() = 307;
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());

    let w = create_hook(&d, &redirecting.url, json!(["certificate.issued"]));
    let ws = create_hook(&d, &silent_url, json!(["certificate.issued"]));
    let (id, sid) = (w["id"].as_str().unwrap(), ws["id"].as_str().unwrap());
    let first = issue(&d, "one.internal");
    let second = issue(&d, "two.internal");

    // Two attempts per event, then the next event: A, A, B, B; never the redirect's target.
    let got = redirecting.wait_for(4, 60);
    let serials: Vec<String> = got
        .iter()
        .map(|r| norm(r.json()["data"]["serial"].as_str().unwrap()))
        .collect();
    assert_eq!(
        serials,
        vec![norm(&first), norm(&first), norm(&second), norm(&second)]
    );
    let ds = deliveries_once(&d, id, 10, |ds| {
        ds.len() == 2 && ds.iter().all(|x| x["status"] == "failed")
    });
    for x in &ds {
        assert_eq!(x["attempts"], 2, "{x}");
        assert_eq!(x["http_status"], 307, "{x}");
        assert!(x["next_attempt_at"].is_null(), "{x}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redirecting.got().len(), 4, "no attempt after giving up");
    assert!(target.got().is_empty(), "a redirect was followed");

    // The silent receiver: each attempt ends after timeout_secs; both events fail in turn.
    let ds = deliveries_once(&d, sid, 30, |ds| {
        ds.len() == 2 && ds.iter().all(|x| x["status"] == "failed")
    });
    for x in &ds {
        assert!(x["http_status"].is_null(), "{x}");
        assert!(
            x["last_error"].as_str().unwrap().contains("no answer"),
            "{x}"
        );
    }
    drop(silent);
}

/// A TLS server certificate for 127.0.0.1 from a new root; (root PEM, certificate chain, key).
fn tls_material(d: &Daemon, name: &str) -> (String, String, String) {
    let root = d.create_root(name, "ec", Some(256));
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": name, "ca_id": root["id"], "allowed_domains": ["localhost"],
                "allow_ip_sans": true, "server_flag": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = d.post(
        &format!("/v1/pki/issue/{name}"),
        &json!({"common_name": "localhost", "ip_sans": ["127.0.0.1"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (
        root["certificate"].as_str().unwrap().to_owned(),
        v["certificate"].as_str().unwrap().to_owned(),
        v["private_key"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn https_receivers_are_verified_against_the_ca_file() {
    let d = daemon_with("retry_base_ms = 200\nmax_attempts = 2\n");
    let (root_pem, cert, key) = tls_material(&d, "trusted");
    std::fs::write(d.data().join("webhook-ca.pem"), &root_pem).unwrap();
    let (_, other_cert, other_key) = tls_material(&d, "untrusted");
    let good = Receiver::start_tls(&cert, &key);
    let bad = Receiver::start_tls(&other_cert, &other_key);
    assert!(good.url.starts_with("https://127.0.0.1:"), "{}", good.url);
    let wg = create_hook(&d, &good.url, json!(["certificate.issued"]));
    let wb = create_hook(&d, &bad.url, json!(["certificate.issued"]));
    setup_role(&d);
    let serial = issue(&d, "tls.internal");

    let got = good.wait_for(1, 30);
    assert_eq!(
        norm(got[0].json()["data"]["serial"].as_str().unwrap()),
        norm(&serial)
    );
    check_signature(&got[0]);
    // The receiver has the request; the daemon records the delivery once it read the answer.
    let ds = deliveries_once(&d, wg["id"].as_str().unwrap(), 10, |ds| {
        ds.first().is_some_and(|x| x["status"] != "pending")
    });
    assert_eq!(ds[0]["status"], "delivered", "{ds:?}");

    // A certificate from a CA outside ca_file: the handshake fails, nothing is sent.
    let ds = deliveries_once(&d, wb["id"].as_str().unwrap(), 30, |ds| {
        ds.first().is_some_and(|x| x["status"] == "failed")
    });
    assert!(ds[0]["http_status"].is_null(), "{ds:?}");
    assert!(
        ds[0]["last_error"].as_str().unwrap().contains("TLS"),
        "{ds:?}"
    );
    assert!(bad.got().is_empty());
}

/// A crash during the last allowed attempt: the attempt was counted when it started, so after the
/// restart and the attempt's lease the delivery is `failed` (its outcome was never recorded)
/// instead of being sent once more than `max_attempts`.
#[test]
fn an_attempt_whose_outcome_was_lost_still_counts() {
    let mut d = daemon_with("max_attempts = 1\ntimeout_secs = 5\n");
    setup_role(&d);
    // Accepts connections, counts them and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    let w = create_hook(&d, &url, json!(["certificate.issued"]));
    let id = w["id"].as_str().unwrap().to_owned();
    issue(&d, "lost.internal");
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the attempt reached the receiver");
    d.kill();
    let d = Daemon::start_in(d.into_dir());
    let failed = deliveries_once(&d, &id, 40, |ds| {
        ds.len() == 1 && ds[0]["status"] == "failed"
    })[0]
        .clone();
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("outcome of attempt 1 was not recorded"),
        "{failed}"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "a second attempt was sent"
    );
}
