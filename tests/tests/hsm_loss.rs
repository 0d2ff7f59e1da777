//! HSM loss (issue #10, point 2): the daemon runs on the fault-injecting PKCS#11 module
//! (`hsm/fault-shim`) wrapped around SoftHSM2. While the shim's control file says `removed`, every
//! token call fails with `CKR_DEVICE_REMOVED`; while it says `hang N`, every token call blocks.
//! Either way signing and key operations answer `503 hsm_unavailable` within 2 s, health says the
//! token is down, what was already signed (the cached OCSP response, the CRL file) is still
//! served, and once the control file is gone the daemon signs again without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{fault_shim, openssl, write, Daemon, Reply};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bound on a refused call (the daemon runs with `call_timeout` and `keygen_timeout` of 1 s).
const BOUND: Duration = Duration::from_secs(2);

/// A daemon on the shim, with the control file it watches.
struct Rig {
    d: Daemon,
    control: PathBuf,
    /// The real module the shim wraps.
    real: String,
    ca_id: String,
    root_pem: String,
}

impl Rig {
    /// Starts the daemon again in its directory (after a kill), on the shim; `between` runs while
    /// it is down.
    fn restart(&mut self, between: impl FnOnce(&Path)) {
        self.d.kill();
        let dir = self.d.take_dir();
        between(dir.path());
        self.d = Daemon::start_in_with_env(
            dir,
            &[
                ("SCAIVAULT_FAULT_MODULE", OsStr::new(&self.real)),
                ("SCAIVAULT_FAULT_CONTROL", self.control.as_os_str()),
            ],
        );
    }
}

/// Starts a dev-mode daemon (SoftHSM2), then restarts it in the same directory with the shim as
/// its module and 1 s token-call limits; creates a root and a role.
fn rig() -> Rig {
    rig_with("1s", &[])
}

/// [`rig`] with a signing call limit of `call_timeout` and `env` for the daemon.
fn rig_with(call_timeout: &str, env: &[(&str, &OsStr)]) -> Rig {
    let first = Daemon::start();
    let dir = first.into_dir();
    let config = dir.path().join("data/scaivault.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let module_line = text
        .lines()
        .find(|l| l.starts_with("module = "))
        .unwrap()
        .to_owned();
    let real: String = serde_json::from_str(module_line.trim_start_matches("module = ")).unwrap();
    let shim = fault_shim();
    let text = text.replace(
        &module_line,
        &format!(
            "module = {}\ncall_timeout = \"{call_timeout}\"\nkeygen_timeout = \"1s\"",
            json!(shim.to_str().unwrap())
        ),
    );
    std::fs::write(&config, text).unwrap();
    let control = dir.path().join("fault-control");
    let mut all = vec![
        ("SCAIVAULT_FAULT_MODULE", OsStr::new(&real)),
        ("SCAIVAULT_FAULT_CONTROL", control.as_os_str()),
    ];
    all.extend_from_slice(env);
    let d = Daemon::start_in_with_env(dir, &all);
    let root = d.create_root("loss", "ec", None);
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
    Rig {
        d,
        control,
        real,
        ca_id,
        root_pem,
    }
}

/// Writes the control file atomically (the shim may read it at any moment).
fn set_fault(control: &Path, mode: &str) {
    let tmp = control.with_extension("tmp");
    std::fs::write(&tmp, mode).unwrap();
    std::fs::rename(&tmp, control).unwrap();
}

/// Runs `f`, returning its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let out = f();
    (out, t0.elapsed())
}

fn issue(d: &Daemon, cn: &str) -> Reply {
    d.post("/v1/pki/issue/svc", &json!({"common_name": cn}))
}

fn create_ca(d: &Daemon, name: &str) -> Reply {
    d.post(
        "/v1/pki/ca",
        &json!({"name": name, "common_name": name, "ca_type": "root", "validity_days": 30}),
    )
}

/// `openssl ocsp` for `leaf` (no nonce, so a cached response may answer); stdout + stderr.
fn ocsp_status(rig: &Rig, leaf: &str) -> String {
    let url = format!("{}/v1/pki/ocsp/{}", rig.d.base, rig.ca_id);
    let out = openssl(&[
        "ocsp",
        "-no_nonce",
        "-timeout",
        "10",
        "-issuer",
        &rig.root_pem,
        "-cert",
        leaf,
        "-url",
        &url,
        "-CAfile",
        &rig.root_pem,
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Issues a leaf, waits until its OCSP answer was pre-signed and the CA's CRL is published.
fn signed_material(rig: &Rig) -> (String, Vec<u8>) {
    let r = issue(&rig.d, "before.svc.test");
    assert_eq!(r.status, 200, "{}", r.text());
    let leaf: Value = r.json();
    let leaf_pem = write(
        rig.d.dir.path(),
        "leaf.pem",
        leaf["certificate"].as_str().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crl = rig.d.get(&format!("/v1/pki/ca/{}/crl", rig.ca_id));
        let presigned = rig.d.metric("scaivault_ocsp_presign_queue") == 0.0
            && rig.d.metric("scaivault_ocsp_cache_entries") >= 1.0;
        if crl.status == 200 && presigned {
            let out = ocsp_status(rig, &leaf_pem);
            assert!(out.contains(": good"), "{out}");
            assert!(out.contains("Response verify OK"), "{out}");
            return (leaf_pem, crl.bytes);
        }
        assert!(
            Instant::now() < deadline,
            "no CRL or pre-signed OCSP answer in 30 s: crl {}",
            crl.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// While the fault is on: refusals within the bound, health down, old material served.
fn check_outage(rig: &Rig, leaf_pem: &str, crl: &[u8], tag: &str) {
    let d = &rig.d;
    let (r, took) = timed(|| issue(d, &format!("{tag}-during.svc.test")));
    r.problem(503, "hsm_unavailable");
    assert!(took <= BOUND, "{tag}: issue answered in {took:?}");
    eprintln!("{tag}: issue -> 503 hsm_unavailable in {took:?}");

    let (r, took) = timed(|| create_ca(d, &format!("{tag}-ca")));
    r.problem(503, "hsm_unavailable");
    assert!(took <= BOUND, "{tag}: CA creation answered in {took:?}");
    eprintln!("{tag}: CA creation -> 503 hsm_unavailable in {took:?}");

    let (r, took) = timed(|| d.call("GET", "/v1/sys/health", None, None));
    assert_eq!(r.status, 503, "{tag}: {}", r.text());
    assert_eq!(r.json()["token"], "unavailable", "{}", r.text());
    assert_eq!(r.json()["database"], "ok", "{}", r.text());
    assert!(took <= BOUND, "{tag}: health answered in {took:?}");
    eprintln!("{tag}: health -> 503 token unavailable in {took:?}");

    // Already signed: the CRL file and the cached OCSP answer.
    let r = d.get(&format!("/v1/pki/ca/{}/crl", rig.ca_id));
    assert_eq!(r.status, 200, "{tag}: {}", r.text());
    assert_eq!(r.bytes, crl, "{tag}: the published CRL is served as it was");
    let (out, took) = timed(|| ocsp_status(rig, leaf_pem));
    assert!(out.contains(": good"), "{tag}: {out}");
    assert!(out.contains("Response verify OK"), "{tag}: {out}");
    assert!(took <= BOUND, "{tag}: OCSP answered in {took:?}");
}

/// After the fault: the daemon recovers by itself (same process) within a few seconds.
fn check_recovery(rig: &mut Rig, pid: u32, tag: &str) {
    std::fs::remove_file(&rig.control).unwrap();
    let t0 = Instant::now();
    loop {
        let r = issue(&rig.d, &format!("{tag}-after.svc.test"));
        if r.status == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{tag}: no recovery in 15 s: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{tag}: issuing again {:?} after the token came back",
        t0.elapsed()
    );
    let r = create_ca(&rig.d, &format!("{tag}-ca-after"));
    assert_eq!(r.status, 201, "{tag}: {}", r.text());
    let r = rig.d.call("GET", "/v1/sys/health", None, None);
    assert_eq!(r.status, 200, "{tag}: {}", r.text());
    assert_eq!(rig.d.pid(), pid, "{tag}: no restart");
    let out = rig.d.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the daemon tells systemd (`NOTIFY_SOCKET`), collected by a thread.
struct Notes {
    msgs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Notes {
    fn listen(path: &Path) -> Notes {
        let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        let msgs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let m = msgs.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                m.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        Notes { msgs }
    }

    fn count(&self, text: &str) -> usize {
        self.msgs
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains(text))
            .count()
    }
}

#[test]
fn a_removed_token_answers_503_quickly_and_service_resumes_without_restart() {
    // Under systemd's watchdog (0.6 s here: a ping every 0.2 s).
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("notify");
    let notes = Notes::listen(&sock);
    let mut rig = rig_with(
        "1s",
        &[
            ("NOTIFY_SOCKET", sock.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("600000")),
        ],
    );
    let pid = rig.d.pid();
    let (leaf_pem, crl) = signed_material(&rig);
    let signs = rig.d.metric("scaivault_hsm_sign_calls_total");
    assert!(signs >= 3.0, "CA, leaf, CRL and OCSP were signed: {signs}");

    set_fault(&rig.control, "removed");
    check_outage(&rig, &leaf_pem, &crl, "removed");
    // A token that answers with errors is no reason for systemd to restart the daemon (which
    // could not start without it, and would stop serving the cached answers): the pings go on,
    // and the status says why the service is degraded.
    let pings = notes.count("WATCHDOG=1");
    let t0 = Instant::now();
    while notes.count("WATCHDOG=1") < pings + 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the watchdog pings stopped while the token was removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(notes.count("STATUS=degraded: token unavailable") >= 1);
    check_recovery(&mut rig, pid, "removed");
    assert!(rig.d.metric("scaivault_hsm_sign_calls_total") > signs);
    // The refused creation was audited as such, once, under the id of its `started` record.
    let audit = rig.d.get("/v1/audit?limit=1000").json();
    let records = audit["items"].as_array().unwrap();
    let failed: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "ca.create" && r["outcome"] == "error:hsm_unavailable")
        .collect();
    assert!(!failed.is_empty(), "{audit}");
    for f in failed {
        let id = f["object_id"].as_str().expect("the failure names the CA");
        let of_id = |outcome: &str| {
            records
                .iter()
                .filter(|r| {
                    r["action"] == "ca.create"
                        && r["object_id"] == id
                        && r["outcome"] == outcome
                        && r["request_id"] == f["request_id"]
                })
                .count()
        };
        assert_eq!(of_id("started"), 1, "{audit}");
        assert_eq!(of_id("error:hsm_unavailable"), 1, "{audit}");
    }
}

#[test]
fn a_hung_token_answers_503_within_the_call_timeout_and_service_resumes() {
    let mut rig = rig();
    let pid = rig.d.pid();
    let (leaf_pem, crl) = signed_material(&rig);

    // Every token call blocks for 60 s (or until the control file goes).
    set_fault(&rig.control, "hang 60");
    check_outage(&rig, &leaf_pem, &crl, "hang");
    // Several requests at once: each gives up on its own, none waits for another's hung call.
    let (codes, took) = timed(|| {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (base, admin) = (rig.d.base.clone(), rig.d.admin.clone());
                std::thread::spawn(move || {
                    reqwest::blocking::Client::new()
                        .post(format!("{base}/v1/pki/issue/svc"))
                        .bearer_auth(admin)
                        .json(&json!({"common_name": format!("p{i}.svc.test")}))
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(codes, vec![503; 4]);
    assert!(took <= BOUND, "4 parallel issues answered in {took:?}");
    // The signer threads caught in the hung module are reported; none of them is waited for.
    let stuck = rig.d.metric("scaivault_signer_stuck");
    assert!(stuck >= 1.0, "signer threads stuck in the token: {stuck}");
    check_recovery(&mut rig, pid, "hang");
    // The hung calls returned once the token was back; the key of the CA creation that had
    // timed out was destroyed then (no CA row will ever use it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = rig.d.log_text();
        if log.contains("returned after its request had given up")
            && log.contains("destroyed the key of a CA creation that timed out")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned calls did not finish (or the orphan key was not destroyed)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // No signer thread is left in the module, and those started beside the stuck ones have
    // ended: the pool is back to its size (`[hsm] sign_threads` unset: CPUs + 1).
    let size = std::thread::available_parallelism().unwrap().get() + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (stuck, threads) = (
            rig.d.metric("scaivault_signer_stuck"),
            rig.d.metric("scaivault_signer_threads"),
        );
        if stuck == 0.0 && threads <= size as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "signer threads after the hang: {threads} ({stuck} stuck), size {size}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_issuance_killed_while_the_token_signs_is_revoked_at_restart_with_its_started_record() {
    let mut rig = rig_with("60s", &[]);
    let t = rig.d.post(
        "/v1/auth/tokens",
        &json!({"name": "svc-issuer", "policies": ["issuer:svc"]}),
    );
    assert_eq!(t.status, 201, "{}", t.text());
    let (token_id, token) = (
        t.json()["id"].as_str().unwrap().to_owned(),
        t.json()["token"].as_str().unwrap().to_owned(),
    );
    // One issuance while the token answers (the CA's signer is then loaded), then the token
    // hangs; an issuance reserves its serial (with its `started` record: in the
    // reservation journal on SQLite, in the reservation row on PostgreSQL) and waits in `C_Sign`.
    let r = issue(&rig.d, "first.svc.test");
    assert_eq!(r.status, 200, "{}", r.text());
    set_fault(&rig.control, "hang 120");
    let base = rig.d.base.clone();
    let client = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{base}/v1/pki/issue/svc"))
            .bearer_auth(token)
            .json(&json!({"common_name": "killed.svc.test"}))
            .send()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_secs(3));
    let control = rig.control.clone();
    rig.restart(|dir| {
        std::fs::remove_file(&control).unwrap();
        if let Ok(db) = std::fs::read_to_string(dir.join(scaivault_tests::pg::DATABASE_FILE)) {
            // Nodes share PostgreSQL: only reservations older than two minutes are reconciled at
            // start (another node may have the newer ones in flight); this one is made older.
            let moved = scaivault_tests::pg::query(
                db.trim(),
                "UPDATE certificates SET created_at = '2000-01-01T00:00:00Z' \
                 WHERE status = 'reserved' RETURNING serial",
            );
            assert_eq!(moved.lines().count(), 1, "one reservation: {moved:?}");
        }
    });
    assert!(
        client.join().unwrap().is_err(),
        "the request got an answer from a killed daemon"
    );

    let records = |d: &Daemon| -> Vec<Value> {
        let a = d.get("/v1/audit?limit=1000").json();
        a["items"].as_array().unwrap().clone()
    };
    let items = records(&rig.d);
    let of = |action: &str, outcome: &str| -> Vec<&Value> {
        items
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome)
            .collect()
    };
    let reconciled = of("certificate.reconcile", "revoked_unfinished");
    assert_eq!(reconciled.len(), 1, "{items:?}");
    let object = reconciled[0]["object_id"].as_str().unwrap();
    // Who asked for the certificate the token may have signed: the `started` record, joined to
    // the chain just before the reconciliation's record.
    let started = of("certificate.issue", "started");
    assert_eq!(started.len(), 1, "{items:?}");
    assert_eq!(started[0]["object_id"], object);
    assert_eq!(started[0]["token_id"], token_id.as_str());
    assert!(started[0]["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(
        started[0]["seq"].as_u64().unwrap() + 1,
        reconciled[0]["seq"].as_u64().unwrap()
    );
    // The serial is revoked, and the chain verifies.
    let serial = object.split_once(':').unwrap().1;
    let c = rig.d.get(&format!("/v1/pki/certificates/{serial}"));
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.json()["status"], "revoked", "{}", c.text());
    let out = rig.d.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second restart finds nothing more to reconcile and appends nothing.
    let before = items.len();
    rig.restart(|_| {});
    assert_eq!(records(&rig.d).len(), before);
}

/// The same crash, with a certificate that expires before the restart (SQLite: the journal's
/// record, whose row a tidy may also have removed): no certificate row is made and nothing is
/// revoked, but the `started` record and a reconciliation record still say who asked for it.
#[test]
fn an_unfinished_issuance_that_expired_before_the_restart_keeps_its_audit_trace() {
    if scaivault_tests::pg::enabled() {
        return; // PostgreSQL keeps the reservation as a row: revoked like any other
    }
    let mut rig = rig_with("60s", &[]);
    let r = issue(&rig.d, "first.svc.test");
    assert_eq!(r.status, 200, "{}", r.text());
    set_fault(&rig.control, "hang 120");
    let (base, admin) = (rig.d.base.clone(), rig.d.admin.clone());
    let client = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{base}/v1/pki/issue/svc"))
            .bearer_auth(admin)
            .json(&json!({"common_name": "brief.svc.test", "ttl": "3s"}))
            .send()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_secs(2));
    let control = rig.control.clone();
    rig.restart(|_| {
        std::fs::remove_file(&control).unwrap();
        std::thread::sleep(Duration::from_secs(3)); // past its notAfter
    });
    assert!(client.join().unwrap().is_err());
    let items = rig.d.get("/v1/audit?limit=1000").json()["items"]
        .as_array()
        .unwrap()
        .clone();
    let rec: Vec<&Value> = items
        .iter()
        .filter(|r| r["action"] == "certificate.reconcile")
        .collect();
    assert_eq!(rec.len(), 1, "{items:?}");
    assert_eq!(rec[0]["outcome"], "expired_unfinished");
    let started: Vec<&Value> = items
        .iter()
        .filter(|r| r["action"] == "certificate.issue" && r["outcome"] == "started")
        .collect();
    assert_eq!(started.len(), 1, "{items:?}");
    assert_eq!(started[0]["object_id"], rec[0]["object_id"]);
    let serial = rec[0]["object_id"]
        .as_str()
        .unwrap()
        .split_once(':')
        .unwrap()
        .1;
    rig.d
        .get(&format!("/v1/pki/certificates/{serial}"))
        .problem(404, "certificate_not_found");
    let out = rig.d.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
