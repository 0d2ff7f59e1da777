//! Starting and restarting: `serve` refuses a wrong PIN, token or database with a clear message;
//! dev mode reuses its token, database and admin token on a second run; `check-config` names the
//! bad key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bin, Daemon};
use std::process::Command;
use std::time::Duration;

fn serve_fails(config: &std::path::Path) -> String {
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            let out = child.wait_with_output().unwrap();
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("serve did not refuse to start");
}

#[test]
fn dev_mode_reuses_its_state_and_serve_refuses_bad_setups() {
    let d = Daemon::start();
    let admin = d.admin.clone();
    let root = d.create_root("kept", "ec", None);
    let dir = d.into_dir();

    // Second run: same token, database and admin token; the CA still signs.
    let d = Daemon::start_in(dir);
    assert_eq!(d.admin, admin);
    let out = std::fs::read_to_string(&d.out).unwrap();
    assert!(
        !out.contains("svt_"),
        "the admin token is printed only on the first run: {out}"
    );
    let got = d.get(&format!("/v1/pki/ca/{}", root["id"].as_str().unwrap()));
    assert_eq!(got.status, 200, "{}", got.text());
    let int = d.post(
        "/v1/pki/ca",
        &serde_json::json!({"name": "after-restart", "common_name": "I", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 30}),
    );
    assert_eq!(int.status, 201, "{}", int.text());
    let cfg_text = std::fs::read_to_string(d.config()).unwrap();
    let data = d.data();
    let dir = d.into_dir();

    // A wrong PIN.
    let bad_pin = dir.path().join("bad.pin");
    std::fs::write(&bad_pin, "0000\n").unwrap();
    let cfg = dir.path().join("badpin.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &data.join("hsm.pin").display().to_string(),
            &bad_pin.display().to_string(),
        ),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("login refused"), "{err}");
    assert!(!err.contains("0000"), "the PIN must not be echoed: {err}");
    // A wrong token label.
    let cfg = dir.path().join("badlabel.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace("token_label = \"scaivault-dev\"", "token_label = \"nope\""),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("no token labelled \"nope\""), "{err}");
    // A database path that cannot be opened.
    let cfg = dir.path().join("baddb.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &data.join("scaivault.db").display().to_string(),
            "/nonexistent/dir/x.db",
        ),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(
        err.contains("cannot open database /nonexistent/dir/x.db"),
        "{err}"
    );
    // A database that is not one.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let cfg = dir.path().join("junkdb.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &data.join("scaivault.db").display().to_string(),
            &junk.display().to_string(),
        ),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("cannot open database"), "{err}");
    // An unknown key, and check-config naming it.
    let cfg = dir.path().join("unknown.toml");
    std::fs::write(&cfg, format!("{cfg_text}\n[tuning]\nturbo = true\n")).unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("tuning"), "{err}");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tuning"));
    let good = Command::new(bin())
        .arg("--config")
        .arg(data.join("scaivault.toml"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}
