//! Crash safety (issue #10, point 1): 64 concurrent clients issue certificates while the daemon is
//! killed with SIGKILL at random moments (after the first certificate of each cycle), 20 times. Afterwards: no duplicate serial, every
//! certificate a client received is in the database, `PRAGMA integrity_check` is ok, the audit
//! chain verifies, no reservation is left unfinished (the restart revokes them), and OCSP never
//! answers `good` for a serial the database does not hold as issued.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bin, openssl, write, Daemon};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENTS: usize = 64;
const CYCLES: usize = 20;

/// A small xorshift generator for the kill moments (no dependency, seed printed for replays).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn sql(db: &std::path::Path, q: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(q).output().unwrap();
    assert!(
        out.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn sigkill_during_issuance_loses_nothing_and_leaves_nothing_half_done() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-moment seed {seed}");
    let mut rng = Rng(seed);
    let mut d = Daemon::start();
    let root = d.create_root("crash-root", "ec", None);
    let ca_id = root["id"].as_str().unwrap().to_owned();
    let root_pem = write(
        d.dir.path(),
        "root.pem",
        root["certificate"].as_str().unwrap(),
    );
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": ca_id, "allowed_domains": ["svc.test"], "allow_subdomains": true, "max_ttl": "24h"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // Every certificate a client got back: (serial, PEM).
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut kills = 0;
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (base, token) = (d.base.clone(), d.admin.clone());
                let (stop, received) = (stop.clone(), received.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(20))
                        .build()
                        .unwrap();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let res = http
                            .post(format!("{base}/v1/pki/issue/svc"))
                            .bearer_auth(&token)
                            .json(&json!({"common_name": format!("c{cycle}-{i}-{n}.svc.test"), "ttl": "1h"}))
                            .send();
                        n += 1;
                        let Ok(res) = res else { break };
                        let status = res.status().as_u16();
                        let Ok(body) = res.json::<Value>() else { break };
                        if status == 200 {
                            received.lock().unwrap().push((
                                body["serial_number"].as_str().unwrap().to_owned(),
                                body["certificate"].as_str().unwrap().to_owned(),
                            ));
                        } else if status >= 500 {
                            break;
                        }
                    }
                })
            })
            .collect();
        // Let the clients get going (at least one certificate out in this cycle, however slow
        // the machine), then kill at a random moment.
        let before = received.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.lock().unwrap().len() == before {
            assert!(
                Instant::now() < deadline,
                "no issuance in 60 s: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 1000));
        let pid = d.pid();
        assert!(Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap()
            .success());
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        d = Daemon::start_in(d.into_dir());
    }
    assert_eq!(kills, CYCLES);

    let received = received.lock().unwrap().clone();
    assert!(
        received.len() > CYCLES * 10,
        "too few issuances to mean anything: {}",
        received.len()
    );
    let db = d.data().join("scaivault.db");
    // 0 duplicate serials, in the database and among what clients got.
    assert_eq!(sql(&db, "PRAGMA integrity_check"), "ok");
    assert_eq!(
        sql(&db, "SELECT count(*) FROM (SELECT serial FROM certificates GROUP BY serial HAVING count(*) > 1)"),
        "0"
    );
    let distinct: HashSet<&str> = received.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        distinct.len(),
        received.len(),
        "a serial was handed out twice"
    );
    // No reservation survives a restart.
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM certificates WHERE status = 'reserved'"
        ),
        "0"
    );
    // Every certificate a client received is stored, byte for byte, and valid.
    for (serial, pem) in &received {
        let r = d.get(&format!("/v1/pki/certificates/{serial}"));
        assert_eq!(r.status, 200, "{serial} missing: {}", r.text());
        let v = r.json();
        assert_eq!(
            v["certificate"].as_str().unwrap().trim(),
            pem.trim(),
            "{serial}"
        );
        assert_eq!(v["status"], "valid", "{serial}");
    }
    // The audit chain is intact.
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
    // Reservations a kill interrupted were revoked at the next start, never handed out, and are
    // on the audit record.
    let unfinished: Vec<String> = sql(
        &db,
        "SELECT serial FROM certificates WHERE cert_der IS NULL AND revocation_reason = 'cessation_of_operation'",
    )
    .lines()
    .map(str::to_owned)
    .collect();
    let received_keys: HashSet<String> = received
        .iter()
        .map(|(s, _)| s.replace(':', "").to_uppercase())
        .collect();
    for s in &unfinished {
        assert!(
            !received_keys.contains(s),
            "{s} was handed out and also revoked as unfinished"
        );
    }
    let reconciled: usize = sql(
        &db,
        "SELECT count(*) FROM audit WHERE action = 'certificate.reconcile'",
    )
    .parse()
    .unwrap();
    assert_eq!(reconciled, unfinished.len());
    eprintln!(
        "{} certificates received over {CYCLES} kills; {} unfinished reservations revoked at restart",
        received.len(),
        unfinished.len()
    );

    // OCSP: never `good` for what the database does not hold as issued.
    let ocsp = |serial_hex: &str| -> String {
        let o = openssl(&[
            "ocsp",
            "-issuer",
            &root_pem,
            "-serial",
            &format!("0x{serial_hex}"),
            "-url",
            &format!("{}/v1/pki/ocsp/{ca_id}", d.base),
            "-noverify",
        ]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    for s in unfinished.iter().take(5) {
        let out = ocsp(s);
        assert!(out.contains(": revoked"), "unfinished {s}: {out}");
    }
    let out = ocsp("0123456789ABCDEF0123456789ABCDEF");
    assert!(out.contains(": unknown"), "{out}");
    let (serial, _) = &received[received.len() / 2];
    let out = ocsp(&serial.replace(':', ""));
    assert!(out.contains(": good"), "{serial}: {out}");
    let t0 = Instant::now();
    assert_eq!(d.get("/v1/sys/health").status, 200);
    assert!(t0.elapsed() < Duration::from_secs(5));
}
