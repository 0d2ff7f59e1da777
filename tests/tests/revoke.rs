//! Revocation and CRLs over HTTP, judged by `openssl crl`: reasons, conflicts, the CRL rebuilt
//! within seconds, CRL numbers increasing across restarts, revoking a CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{crl_number, openssl, write, Daemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn setup(d: &Daemon) -> (Value, Value) {
    let root = d.create_root("root", "ec", Some(256));
    let int = d.post("/v1/pki/ca", &json!({"name": "int", "common_name": "Revoking Intermediate", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 1000})).json();
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": int["id"], "allowed_domains": ["*.svc.internal"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    (root, int)
}

#[test]
fn revoke_and_see_it_on_the_crl_within_seconds() {
    let d = Daemon::start();
    let (root, int) = setup(&d);
    let tmp = d.dir.path();
    let iid = int["id"].as_str().unwrap();
    let trust = write(
        tmp,
        "trust.pem",
        &format!(
            "{}{}",
            int["certificate"].as_str().unwrap(),
            root["certificate"].as_str().unwrap()
        ),
    );
    let leaf = d
        .post(
            "/v1/pki/issue/svc",
            &json!({"common_name": "a.svc.internal"}),
        )
        .json();
    let serial = leaf["serial_number"].as_str().unwrap();
    let before = d.crl_text(iid, &trust, "before");
    assert!(before.contains("No Revoked Certificates"), "{before}");
    let n0 = crl_number(&before);

    d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": serial, "reason": "stolen"}),
    )
    .problem(400, "invalid_reason");
    d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": "0102030405060708", "reason": "superseded"}),
    )
    .problem(404, "certificate_not_found");
    let t0 = Instant::now();
    let r = d.post("/v1/pki/revoke", &json!({"serial_number": serial.to_lowercase().replace(':', ""), "reason": "key_compromise"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(r["serial_number"], serial);
    assert_eq!(r["reason"], "key_compromise");
    assert!(r["revoked_at"].as_str().unwrap().ends_with('Z'));
    d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": serial, "reason": "key_compromise"}),
    )
    .problem(409, "already_revoked");
    // Success and refusal name the certificate the same way in the audit log.
    let objects: Vec<(String, String)> = d.get("/v1/audit?limit=1000").json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "certificate.revoke")
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_owned(),
                r["object_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let key = serial.replace(':', "").to_uppercase();
    assert!(
        objects
            .iter()
            .any(|(o, id)| o == "success" && id.ends_with(&key))
            && objects
                .iter()
                .any(|(o, id)| o == "error:already_revoked" && id.ends_with(&key)),
        "{objects:?}"
    );

    // The scheduler rebuilds the CRL shortly after the revocation.
    let hex = serial.replace(':', "");
    let text = loop {
        let t = d.crl_text(iid, &trust, "after");
        if t.contains(&hex) {
            break t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the revocation is not on the CRL after 5 s: {t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(crl_number(&text) > n0);
    // PEM form, public.
    let pem = d.call(
        "GET",
        &format!("/v1/pki/ca/{iid}/crl?format=pem"),
        None,
        None,
    );
    assert!(
        pem.text().starts_with("-----BEGIN X509 CRL-----"),
        "{}",
        pem.text()
    );
    // The published CRL is a file next to the database, the same bytes the API serves; the
    // database row holds only its state (a revocation rewrites that row, so no blob lives there).
    // With PostgreSQL (several nodes) it is a row of its own, `crl_blobs`, that every node serves.
    let der = d.call("GET", &format!("/v1/pki/ca/{iid}/crl"), None, None);
    if let Ok(db) = std::fs::read_to_string(tmp.join(scaivault_tests::pg::DATABASE_FILE)) {
        let stored = scaivault_tests::pg::query(
            db.trim(),
            &format!("SELECT encode(der, 'hex') FROM crl_blobs WHERE ca_id = '{iid}'"),
        );
        assert_eq!(hex::encode(&der.bytes), stored);
        assert!(!tmp.join(format!("data/crl/{iid}.crl")).exists());
    } else {
        let file = std::fs::read(tmp.join(format!("data/crl/{iid}.crl"))).unwrap();
        assert_eq!(der.bytes, file);
        let blobs = std::process::Command::new("sqlite3")
            .arg(tmp.join("data/scaivault.db"))
            .arg("SELECT COUNT(*) FROM crl_state WHERE der IS NOT NULL")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&blobs.stdout).trim(), "0");
    }
    // Health shows the CRL scheduler's state (aggregated: no CA ids on the public endpoint).
    let health = d.get("/v1/sys/health").json();
    assert!(
        health["crl"]["published"].as_i64().unwrap() >= 1,
        "{health}"
    );
    assert_eq!(health["crl"]["pending_rebuild"], 0, "{health}");
    assert!(health["crl"]["earliest_next_update"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    // Prometheus metrics, no token: aggregate counters of what just happened.
    let m = d.call("GET", "/metrics", None, None);
    assert_eq!(m.status, 200);
    assert!(
        m.content_type.starts_with("text/plain"),
        "{}",
        m.content_type
    );
    let metric = |name: &str| -> f64 {
        m.text()
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing: {}", m.text()))
            .parse()
            .unwrap()
    };
    assert!(metric("scaivault_certificates_issued_total") >= 1.0);
    assert_eq!(metric("scaivault_certificates_revoked_total"), 1.0);
    assert!(metric("scaivault_crl_builds_total") >= 2.0);
    assert!(metric("scaivault_http_requests_total{class=\"2xx\"}") >= 5.0);
    assert!(metric("scaivault_http_requests_total{class=\"4xx\"}") >= 3.0);
    assert!(metric("scaivault_scheduler_last_tick_timestamp_seconds") > 1.7e9);
    assert!(!m.text().contains(iid), "no CA ids in metrics");
    // The inventory and the events feed know.
    let inv = d.get(&format!("/v1/pki/certificates/{serial}")).json();
    assert_eq!(inv["status"], "revoked");
    assert_eq!(inv["revocation_reason"], "key_compromise");
    assert_eq!(
        d.get("/v1/pki/certificates?status=revoked").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let ev = d.get("/v1/events?limit=1000").json();
    assert!(ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "certificate.revoked"));
    // An unspecified reason carries no reason code (RFC 5280 §5.3.1).
    let other = d
        .post(
            "/v1/pki/issue/svc",
            &json!({"common_name": "b.svc.internal"}),
        )
        .json();
    assert_eq!(
        d.post(
            "/v1/pki/revoke",
            &json!({"serial_number": other["serial_number"]})
        )
        .status,
        200
    );
    let rebuilt = d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({}));
    assert_eq!(rebuilt.status, 200, "{}", rebuilt.text());
    assert_eq!(rebuilt.json()["entries"], 2);
    let text = d.crl_text(iid, &trust, "two");
    assert_eq!(text.matches("Serial Number:").count(), 2, "{text}");
    assert_eq!(text.matches("CRL Reason Code").count(), 1, "{text}");
    // A revoked leaf fails openssl verification with the CRL.
    let crl_pem = write(tmp, "crl.pem", &pem.text());
    let leaf_pem = write(tmp, "leaf.pem", leaf["certificate"].as_str().unwrap());
    let chain = write(tmp, "int.pem", int["certificate"].as_str().unwrap());
    let rootp = write(tmp, "root.pem", root["certificate"].as_str().unwrap());
    let root_crl = d
        .call(
            "GET",
            &format!("/v1/pki/ca/{}/crl?format=pem", root["id"].as_str().unwrap()),
            None,
            None,
        )
        .text();
    let crls = write(
        tmp,
        "crls.pem",
        &format!(
            "{}{}",
            d.call(
                "GET",
                &format!("/v1/pki/ca/{iid}/crl?format=pem"),
                None,
                None
            )
            .text(),
            root_crl
        ),
    );
    let _ = crl_pem;
    let out = openssl(&[
        "verify",
        "-crl_check_all",
        "-CRLfile",
        &crls,
        "-CAfile",
        &rootp,
        "-untrusted",
        &chain,
        &leaf_pem,
    ]);
    assert!(
        !out.status.success(),
        "a revoked certificate must not verify"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("certificate revoked")
            || String::from_utf8_lossy(&out.stderr).contains("certificate revoked")
    );
}

#[test]
fn crl_numbers_increase_across_restarts_and_revoking_a_ca_stops_it() {
    let d = Daemon::start();
    let (root, int) = setup(&d);
    let iid = int["id"].as_str().unwrap().to_owned();
    let rid = root["id"].as_str().unwrap().to_owned();
    let n1 = d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({})).json()["crl_number"]
        .as_i64()
        .unwrap();
    let n2 = d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({})).json()["crl_number"]
        .as_i64()
        .unwrap();
    assert!(n2 > n1);
    let admin = d.admin.clone();
    let dir = d.into_dir();
    let d = Daemon::start_in(dir);
    assert_eq!(d.admin, admin);
    let n3 = d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({})).json()["crl_number"]
        .as_i64()
        .unwrap();
    assert!(n3 > n2, "{n3} after restart must exceed {n2}");
    // Each build is a `crl.generated` event with its number.
    let ev = d.get("/v1/events?type=crl.generated&limit=1000").json();
    let numbers: Vec<i64> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object_id"] == iid.as_str())
        .map(|e| e["data"]["crl_number"].as_i64().unwrap())
        .collect();
    for n in [n1, n2, n3] {
        assert!(numbers.contains(&n), "{n} not in {numbers:?}");
    }

    // Rebuilds at the same time all succeed, and the CRL served is the newest of them.
    let got: Vec<i64> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let r = d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({}));
                    assert_eq!(r.status, 200, "{}", r.text());
                    r.json()["crl_number"].as_i64().unwrap()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let newest = *got.iter().max().unwrap();
    assert!(got.iter().all(|n| *n > n3), "{got:?}");
    let served = d.get(&format!("/v1/pki/ca/{iid}/crl?format=pem"));
    assert_eq!(served.status, 200);
    let file = write(d.dir.path(), "parallel.crl", &served.text());
    let out = openssl(&["crl", "-in", &file, "-noout", "-text"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(crl_number(&text), u64::try_from(newest).unwrap(), "{got:?}");

    // A root's own certificate is not revoked (no parent CRL could list it): retired instead.
    let p = d
        .post(
            "/v1/pki/revoke",
            &json!({"serial_number": root["serial_number"], "reason": "ca_compromise"}),
        )
        .problem(400, "cannot_revoke_root");
    assert!(p["detail"].as_str().unwrap().contains("DELETE"), "{p}");
    assert_eq!(
        d.get(&format!("/v1/pki/ca/{rid}")).json()["status"],
        "active"
    );

    // An intermediate points at its parent's CRL, OCSP responder and certificate, as leaves
    // point at theirs. (A new one: the first was made before the restart, on another port.)
    let tmp = d.dir.path();
    let root_pem = write(tmp, "root-only.pem", root["certificate"].as_str().unwrap());
    let int2 = d.post("/v1/pki/ca", &json!({"name": "int2", "common_name": "Second Intermediate", "ca_type": "intermediate", "parent_ca_id": rid, "validity_days": 100})).json();
    let int2_pem = write(tmp, "int2.pem", int2["certificate"].as_str().unwrap());
    let exts = openssl(&[
        "x509",
        "-in",
        &int2_pem,
        "-noout",
        "-ext",
        "crlDistributionPoints,authorityInfoAccess",
    ]);
    let exts = String::from_utf8_lossy(&exts.stdout).into_owned();
    for url in [
        format!("URI:{}/v1/pki/ca/{rid}/crl", d.base),
        format!("OCSP - URI:{}/v1/pki/ocsp/{rid}", d.base),
        format!(
            "CA Issuers - URI:{}/v1/pki/ca/{rid}/certificate?format=der",
            d.base
        ),
    ] {
        assert!(exts.contains(&url), "{url} not in {exts}");
    }
    // The intermediate checked as a relying party checks it: its CRL fetched from its own
    // distribution point, its status asked of the responder its AIA names.
    let verify = || {
        openssl(&[
            "verify",
            "-crl_check",
            "-crl_download",
            "-CAfile",
            &root_pem,
            &int2_pem,
        ])
    };
    let ocsp_url = String::from_utf8_lossy(
        &openssl(&["x509", "-in", &int2_pem, "-noout", "-ocsp_uri"]).stdout,
    )
    .trim()
    .to_owned();
    let ocsp = || {
        let out = openssl(&[
            "ocsp", "-issuer", &root_pem, "-cert", &int2_pem, "-url", &ocsp_url, "-CAfile",
            &root_pem,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ocsp().contains("int2.pem: good"), "{}", ocsp());
    let before = verify();
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );

    // Revoking the intermediate's own certificate: on the root's CRL, and it stops issuing.
    let int_serial = int["serial_number"].as_str().unwrap();
    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": int_serial, "reason": "ca_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    d.post(
        "/v1/pki/issue/svc",
        &json!({"common_name": "x.svc.internal"}),
    )
    .problem(409, "ca_not_active");
    assert_eq!(
        d.get(&format!("/v1/pki/ca/{iid}")).json()["status"],
        "retired"
    );
    d.post(&format!("/v1/pki/ca/{rid}/crl"), &json!({}));
    let text = d.crl_text(&rid, &root_pem, "root");
    assert!(
        text.contains(&int_serial.replace(':', "")) && text.contains("CA Compromise"),
        "{text}"
    );
    // A relying party following the URLs finds a revoked intermediate revoked.
    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": int2["serial_number"], "reason": "key_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    d.post(&format!("/v1/pki/ca/{rid}/crl"), &json!({}));
    let after = verify();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&after.stdout),
        String::from_utf8_lossy(&after.stderr)
    );
    assert!(
        !after.status.success() && said.contains("certificate revoked"),
        "{said}"
    );
    assert!(ocsp().contains("int2.pem: revoked"), "{}", ocsp());
    // The retired CA's CRL is still served.
    assert_eq!(
        d.call("GET", &format!("/v1/pki/ca/{iid}/crl"), None, None)
            .status,
        200
    );
    // Tenant isolation: another tenant cannot revoke or rebuild.
    assert!(d.cli(&["tenant", "create", "other"]).status.success());
    let t = String::from_utf8(
        d.cli(&["token", "create", "--tenant", "other", "--policy", "admin"])
            .stdout,
    )
    .unwrap();
    d.call(
        "POST",
        &format!("/v1/pki/ca/{rid}/crl"),
        Some(t.trim()),
        None,
    )
    .problem(404, "ca_not_found");
    let leaf = d.post(
        "/v1/pki/roles",
        &json!({"name": "r2", "ca_id": rid, "allowed_domains": ["*.svc.internal"]}),
    );
    assert_eq!(leaf.status, 201);
    let l = d
        .post(
            "/v1/pki/issue/r2",
            &json!({"common_name": "y.svc.internal"}),
        )
        .json();
    d.call(
        "POST",
        "/v1/pki/revoke",
        Some(t.trim()),
        Some(
            json!({"serial_number": l["serial_number"], "reason": "superseded"})
                .to_string()
                .as_bytes(),
        ),
    )
    .problem(404, "certificate_not_found");
}

#[test]
fn tidy_removes_long_expired_certificates_with_a_dry_run_first() {
    let d = Daemon::start();
    let (root, int) = setup(&d);
    let iid = int["id"].as_str().unwrap();
    let short: Vec<Value> = (0..3)
        .map(|i| {
            d.post(
                "/v1/pki/issue/svc",
                &json!({"common_name": format!("s{i}.svc.internal"), "ttl": "1s"}),
            )
            .json()
        })
        .collect();
    let keep = d
        .post(
            "/v1/pki/issue/svc",
            &json!({"common_name": "keep.svc.internal", "ttl": "1h"}),
        )
        .json();
    assert_eq!(
        d.post(
            "/v1/pki/revoke",
            &json!({"serial_number": short[0]["serial_number"], "reason": "superseded"})
        )
        .status,
        200
    );
    std::thread::sleep(Duration::from_millis(3100));
    d.call(
        "POST",
        "/v1/pki/tidy",
        Some(&d.admin),
        Some(br#"{"retention":"forever"}"#),
    )
    .problem(400, "invalid_duration");
    // The body is optional, but one that is there is decoded strictly: a typo next to
    // `dry_run` must not run a real tidy.
    for (body, code) in [
        (
            &br#"{"retention":"1s","dry_run":true,"note":"x"}"#[..],
            "unknown_field",
        ),
        (br#"{"retention":"1s","dry_run":"yes"}"#, "invalid_field"),
        (b"garbage{", "invalid_json"),
        (b"null", "invalid_json"),
    ] {
        d.call("POST", "/v1/pki/tidy", Some(&d.admin), Some(body))
            .problem(400, code);
    }
    assert_eq!(
        d.get("/v1/pki/certificates?role=svc").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "nothing was tidied by a refused request"
    );
    let dry = d.post("/v1/pki/tidy", &json!({"retention": "1s", "dry_run": true}));
    assert_eq!(dry.status, 200, "{}", dry.text());
    let dry = dry.json();
    // The revoked one stays: its CRL entry outlives its expiry by the CRLs' grace (7 days).
    assert_eq!(dry["certificates_removed"], 2);
    assert_eq!(dry["revoked_removed"], 0);
    assert_eq!(
        d.get("/v1/pki/certificates?role=svc").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "a dry run removes nothing"
    );
    let auditor = d
        .post("/v1/auth/tokens", &json!({"policies": ["ca-admin"]}))
        .json();
    d.call(
        "POST",
        "/v1/pki/tidy",
        auditor["token"].as_str(),
        Some(b"{}"),
    )
    .problem(403, "forbidden");
    let done = d.post("/v1/pki/tidy", &json!({"retention": "1s"})).json();
    assert_eq!(done["certificates_removed"], 2);
    assert_eq!(done["crls_rebuilt_for"], json!([]));
    let left = d.get("/v1/pki/certificates?role=svc").json();
    let items = left["items"].as_array().unwrap();
    let kept: Vec<&Value> = items.iter().map(|c| &c["serial_number"]).collect();
    assert_eq!(
        kept,
        vec![&short[0]["serial_number"], &keep["serial_number"]]
    );
    // The CRL still lists the revoked certificate (RFC 5280 §3.3: until a regular CRL issued
    // after its expiry has).
    d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({}));
    let trust = write(
        d.dir.path(),
        "t.pem",
        &format!(
            "{}{}",
            int["certificate"].as_str().unwrap(),
            root["certificate"].as_str().unwrap()
        ),
    );
    let text = d.crl_text(iid, &trust, "tidied");
    assert!(
        text.contains(&short[0]["serial_number"].as_str().unwrap().replace(':', "")),
        "{text}"
    );
    let audit = d.get("/v1/audit?limit=1000").json();
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "pki.tidy" && r["outcome"] == "dry_run"));

    // Tidied certificates stay gone across a crash (the run's reservation journal still names
    // them: expired ones are not replayed) and across a clean stop (which settles the journal).
    let after_restart = |d: &Daemon| {
        let items = d.get("/v1/pki/certificates?role=svc").json()["items"]
            .as_array()
            .unwrap()
            .len();
        let reconciled = d.get("/v1/audit?limit=1000").json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "certificate.reconcile")
            .count();
        assert_eq!((items, reconciled), (2, 0), "{}", d.log_text());
    };
    let mut d = d;
    d.kill();
    let mut d = Daemon::start_in(d.into_dir());
    after_restart(&d);
    let journal = d.data().join("scaivault.db-reservations");
    d.post(
        "/v1/pki/issue/svc",
        &json!({"common_name": "later.svc.internal", "ttl": "1h"}),
    );
    d.stop();
    if journal.exists() {
        let left: Vec<_> = std::fs::read_dir(&journal).unwrap().flatten().collect();
        assert!(left.is_empty(), "a clean stop leaves no journal: {left:?}");
    }
    let d = Daemon::start_in(d.into_dir());
    assert_eq!(
        d.get("/v1/pki/certificates?role=svc").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// OPERATIONS.md's restore: the database goes back to a backup, the published CRL files next to
/// it do not. The start adopts what the newer files say — their number (the next CRL is numbered
/// above every one relying parties may hold) and their revocations (a certificate revoked after
/// the backup stays revoked; one the restored database never saw is recorded as a revoked serial).
#[test]
fn a_restored_database_adopts_the_newer_published_crl() {
    if scaivault_tests::pg::enabled() {
        return; // CRL files are the SQLite backend's; PostgreSQL keeps them in the database.
    }
    let mut d = Daemon::start();
    let (_, int) = setup(&d);
    let iid = int["id"].as_str().unwrap().to_owned();
    let issue = |d: &Daemon, cn: &str| {
        let r = d.post("/v1/pki/issue/svc", &json!({"common_name": cn}));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["serial_number"].as_str().unwrap().to_owned()
    };
    let before = issue(&d, "a.svc.internal");
    let db = d.data().join("scaivault.db");
    let backup = d.dir.path().join("backup.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(".backup {}", backup.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = issue(&d, "b.svc.internal");
    for s in [&before, &after] {
        let r = d.post(
            "/v1/pki/revoke",
            &json!({"serial_number": s, "reason": "key_compromise"}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let published = d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({})).json()["crl_number"]
        .as_i64()
        .unwrap();
    d.stop();
    // The documented restore.
    std::fs::copy(&backup, &db).unwrap();
    for f in ["scaivault.db-wal", "scaivault.db-shm"] {
        let _ = std::fs::remove_file(d.data().join(f));
    }
    let _ = std::fs::remove_dir_all(d.data().join("scaivault.db-reservations"));
    let d = Daemon::start_in(d.into_dir());
    assert!(
        d.log_text()
            .contains("the published CRL is newer than the database"),
        "{}",
        d.log_text()
    );
    let rebuilt = d.post(&format!("/v1/pki/ca/{iid}/crl"), &json!({})).json()["crl_number"]
        .as_i64()
        .unwrap();
    assert!(rebuilt > published, "{rebuilt} after {published}");
    let pem = d.get(&format!("/v1/pki/ca/{iid}/crl?format=pem")).text();
    let file = write(d.dir.path(), "restored.crl", &pem);
    let text = String::from_utf8_lossy(&openssl(&["crl", "-in", &file, "-noout", "-text"]).stdout)
        .into_owned();
    assert_eq!(crl_number(&text), u64::try_from(rebuilt).unwrap());
    for s in [&before, &after] {
        assert!(text.contains(&s.replace(':', "")), "{s} missing: {text}");
    }
    // The certificate the backup knew is revoked in the inventory too.
    let c = d.get(&format!("/v1/pki/certificates/{before}")).json();
    assert_eq!(c["status"], "revoked", "{c}");
    assert_eq!(c["revocation_reason"], "key_compromise", "{c}");
}

/// A CRL rebuild that fails after its number was reserved (here the file cannot be staged: a
/// directory stands where the temporary file goes) leaves the CA marked for a rebuild, and the
/// scheduler publishes the revocation once the fault is gone, without another revocation or a
/// restart. Nothing half-written is left: no staged file, the old CRL still served.
#[test]
fn a_failed_crl_rebuild_is_retried_until_it_succeeds() {
    let d = Daemon::start();
    let (_root, int) = setup(&d);
    let iid = int["id"].as_str().unwrap();
    let leaf = d
        .post(
            "/v1/pki/issue/svc",
            &json!({"common_name": "a.svc.internal"}),
        )
        .json();
    let serial = leaf["serial_number"].as_str().unwrap();
    let crl = format!("/v1/pki/ca/{iid}/crl");
    let before = d.get(&crl);
    assert_eq!(before.status, 200, "{}", before.text());
    if scaivault_tests::pg::enabled() {
        return; // the CRL is a database row there: no file to fail
    }
    let blocker = d.data().join("crl").join(format!("{iid}.crl.tmp"));
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let r = d.post("/v1/pki/revoke", &json!({"serial_number": serial}));
    assert_eq!(r.status, 200, "{}", r.text());
    d.post(&crl, &json!({})).problem(503, "crl_unavailable");
    assert_eq!(
        d.get(&crl).bytes,
        before.bytes,
        "the old CRL is still served"
    );
    let health = d.get("/v1/sys/health").json();
    assert!(
        health["crl"]["pending_rebuild"].as_i64().unwrap_or(0) >= 1,
        "the failed rebuild is pending: {health}"
    );
    std::fs::remove_dir_all(&blocker).unwrap();
    // The scheduler's next pass (every 10 s) publishes it.
    let hex = serial.replace(':', "");
    let t0 = Instant::now();
    loop {
        let now = d.get(&crl);
        if now.bytes != before.bytes {
            let text = openssl_crl_text(&d, &now.bytes);
            assert!(text.contains(&hex), "{text}");
            break;
        }
        // Two failures so far (the rebuild after the revocation, the POST): the next try
        // comes after the backoff (20 s) at the scheduler's next pass (every 10 s).
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not republished: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("republished {:?} after the fault was cleared", t0.elapsed());
}

fn openssl_crl_text(d: &Daemon, der: &[u8]) -> String {
    let p = d.dir.path().join("retry.crl");
    std::fs::write(&p, der).unwrap();
    let out = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-noout",
        "-text",
        "-in",
        p.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first CRL of a CA is built by the first GET that finds none; GETs arriving together wait
/// for it instead of each having the token sign one (the endpoint is public).
#[test]
fn concurrent_first_crl_downloads_share_one_build() {
    let d = Daemon::start();
    let root = d.create_root("first-crl", "ec", None);
    let id = root["id"].as_str().unwrap().to_owned();
    let signs = d.metric("scaivault_hsm_sign_calls_total");
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let url = format!("{}/v1/pki/ca/{id}/crl", d.base);
            std::thread::spawn(move || {
                reqwest::blocking::get(url)
                    .unwrap()
                    .bytes()
                    .unwrap()
                    .to_vec()
            })
        })
        .collect();
    let bodies: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let distinct: std::collections::HashSet<&Vec<u8>> = bodies.iter().collect();
    let made = d.metric("scaivault_hsm_sign_calls_total") - signs;
    // One build (the scheduler may add one of its own meanwhile).
    assert!(made <= 2.0, "{made} signatures for 16 downloads");
    assert!(distinct.len() <= 2, "{} different CRLs", distinct.len());
}

/// A CRL's nextUpdate stops at the CA certificate's end (an OCSP response's does too: nothing the
/// CA issued outlives it), and a CRL cut short that way is rebuilt one `crl_interval` after its
/// build, not on every scheduler pass.
#[test]
fn a_crls_next_update_stops_at_the_cas_end() {
    let d = Daemon::start();
    let root = d.create_root("root", "ec", Some(256));
    let int = d.post(
        "/v1/pki/ca",
        &json!({"name": "short", "common_name": "Short-lived Intermediate", "ca_type": "intermediate",
                "parent_ca_id": root["id"], "validity_days": 1, "crl_interval": "31d"}),
    );
    assert_eq!(int.status, 201, "{}", int.text());
    let int = int.json();
    let dir = d.dir.path();
    let ca_pem = write(dir, "short.pem", int["certificate"].as_str().unwrap());
    let end = openssl(&["x509", "-noout", "-enddate", "-in", &ca_pem]);
    let end = String::from_utf8_lossy(&end.stdout).trim().to_owned();
    let crl = d.get(&format!("/v1/pki/ca/{}/crl", int["id"].as_str().unwrap()));
    assert_eq!(crl.status, 200, "{}", crl.text());
    let crl_path = dir.join("short.crl");
    std::fs::write(&crl_path, &crl.bytes).unwrap();
    let next = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-noout",
        "-nextupdate",
        "-in",
        crl_path.to_str().unwrap(),
    ]);
    let next = String::from_utf8_lossy(&next.stdout).trim().to_owned();
    assert_eq!(
        next.strip_prefix("nextUpdate="),
        end.strip_prefix("notAfter="),
        "{next} / {end}"
    );
    // What caches and relying parties send first: a HEAD, answered as the GET without a body,
    // logged as what it was, and no error line (Rocket routes it again as a GET).
    let head = d.call(
        "HEAD",
        &format!("/v1/pki/ca/{}/crl", int["id"].as_str().unwrap()),
        None,
        None,
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.content_type, "application/pkix-crl");
    assert!(head.bytes.is_empty());
    let log = d.log_text();
    assert!(log.contains("method=HEAD"), "{log}");
    assert!(!log.contains("No matching routes"), "{log}");
    // Every CA has its CRL now; two scheduler passes later, none was built again.
    let r = d.get(&format!("/v1/pki/ca/{}/crl", root["id"].as_str().unwrap()));
    assert_eq!(r.status, 200);
    let builds = d.metric("scaivault_crl_builds_total");
    std::thread::sleep(Duration::from_secs(21));
    assert_eq!(d.metric("scaivault_crl_builds_total"), builds);
}
