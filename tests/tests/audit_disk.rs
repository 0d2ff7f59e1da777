//! Audit fail-closed on a real full filesystem (issue #10, point 3): the daemon's data directory
//! (database, WAL, CRL files, SoftHSM2 token files) is a 32 MiB tmpfs. With the filesystem full,
//! issuing, revoking and creating a CA answer `503 audit_unavailable` and the token signs nothing
//! (`scaivault_hsm_sign_calls_total` does not move); the published CRL and the cached OCSP answer
//! are still served. Once space is back, the same calls succeed and `audit verify` passes.
//!
//! Needs root (mount); a failed mount fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{openssl, write, Daemon, Reply};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Unmounts the tmpfs when dropped (declared before the daemon, so dropped after it).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("mount(8)");
        assert!(
            out.status.success(),
            "mounting a tmpfs at {} failed (the test needs root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the filesystem of `dir` with `dir/filler` until a one-byte write fails (ENOSPC).
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let buf = vec![0x5a_u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let e = f.write_all(&[0]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
    path
}

fn sql(db: &Path, q: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(q).output().unwrap();
    assert!(
        out.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn issue(d: &Daemon, cn: &str) -> Reply {
    d.post("/v1/pki/issue/svc", &json!({"common_name": cn}))
}

fn revoke(d: &Daemon, serial: &str) -> Reply {
    d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": serial, "reason": "superseded"}),
    )
}

fn create_ca(d: &Daemon, name: &str) -> Reply {
    d.post(
        "/v1/pki/ca",
        &json!({"name": name, "common_name": name, "ca_type": "root", "validity_days": 30}),
    )
}

fn ocsp(d: &Daemon, ca_id: &str, root: &str, leaf: &str) -> String {
    let url = format!("{}/v1/pki/ocsp/{ca_id}", d.base);
    let out = openssl(&[
        "ocsp",
        "-no_nonce",
        "-timeout",
        "10",
        "-issuer",
        root,
        "-cert",
        leaf,
        "-url",
        &url,
        "-CAfile",
        root,
    ]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A 503 problem whose code is the audit one (what the daemon answers when it cannot record).
fn refused(r: &Reply, what: &str) {
    r.problem(503, "audit_unavailable");
    eprintln!("full filesystem: {what} -> 503 audit_unavailable");
}

#[test]
fn a_full_filesystem_under_the_database_refuses_changes_and_signs_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("scaivault-fullfs-")
        .tempdir()
        .unwrap();
    let mount = Mount::tmpfs(&dir.path().join("data"), "32m");
    let d = Daemon::start_in(dir);
    let root = d.create_root("full", "ec", None);
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
    let kept: Value = issue(&d, "kept.svc.test").json();
    let kept_pem = write(
        d.dir.path(),
        "kept.pem",
        kept["certificate"].as_str().unwrap(),
    );
    let doomed: Value = issue(&d, "doomed.svc.test").json();
    let doomed_serial = doomed["serial_number"].as_str().unwrap().to_owned();

    // Wait until background signing is done: both OCSP answers pre-signed, the CRL published.
    let deadline = Instant::now() + Duration::from_secs(30);
    let crl = loop {
        let crl = d.get(&format!("/v1/pki/ca/{ca_id}/crl"));
        if crl.status == 200
            && d.metric("scaivault_ocsp_presign_queue") == 0.0
            && d.metric("scaivault_ocsp_cache_entries") >= 2.0
        {
            break crl.bytes;
        }
        assert!(
            Instant::now() < deadline,
            "no CRL / pre-signed OCSP in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = ocsp(&d, &ca_id, &root_pem, &kept_pem);
    assert!(
        out.contains(": good") && out.contains("Response verify OK"),
        "{out}"
    );

    // Empty the WAL (so the next commit must grow it), then fill the filesystem.
    let db = d.data().join("scaivault.db");
    let checkpoint = sql(&db, "PRAGMA wal_checkpoint(TRUNCATE)");
    assert!(
        checkpoint.starts_with("0|"),
        "checkpoint busy: {checkpoint}"
    );
    let filler = fill(&d.data());
    let signs = d.metric("scaivault_hsm_sign_calls_total");
    let audit_rows = sql(&db, "SELECT count(*) FROM audit");

    let t0 = Instant::now();
    refused(&issue(&d, "during.svc.test"), "issue");
    refused(&revoke(&d, &doomed_serial), "revoke");
    refused(&create_ca(&d, "during"), "CA creation");
    eprintln!("three refusals in {:?}", t0.elapsed());
    for line in d.log_text().lines().filter(|l| l.contains("full")) {
        eprintln!("daemon log: {line}");
    }
    assert_eq!(
        d.metric("scaivault_hsm_sign_calls_total"),
        signs,
        "the token signed while nothing could be audited"
    );
    let h = d.call("GET", "/v1/sys/health", None, None);
    eprintln!("health while full: {} {}", h.status, h.text());

    // What was signed before is still served.
    let r = d.get(&format!("/v1/pki/ca/{ca_id}/crl"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.bytes, crl);
    let out = ocsp(&d, &ca_id, &root_pem, &kept_pem);
    assert!(
        out.contains(": good") && out.contains("Response verify OK"),
        "{out}"
    );
    assert_eq!(
        d.metric("scaivault_hsm_sign_calls_total"),
        signs,
        "serving the cached OCSP answer signed nothing"
    );

    // Space again: the same calls go through, nothing half-done was left behind.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(sql(&db, "SELECT count(*) FROM audit"), audit_rows);
    assert_eq!(
        sql(
            &db,
            "SELECT count(*) FROM certificates WHERE status = 'reserved'"
        ),
        "0"
    );
    let r = issue(&d, "after.svc.test");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = revoke(&d, &doomed_serial);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = create_ca(&d, "after");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(d.metric("scaivault_hsm_sign_calls_total") > signs);
    let out = d.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sql(&db, "PRAGMA integrity_check"), "ok");
    drop(d);
    drop(mount);
}
