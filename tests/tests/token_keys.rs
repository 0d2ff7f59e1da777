//! The CA private keys on the token: generated there, sensitive, never extractable, only for
//! signing. Checked two independent ways: through PKCS#11 from this test process
//! (`scaivault-hsm`) and with OpenSC's `pkcs11-tool`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_hsm::pkcs11::{Pkcs11Config, Pkcs11Token};
use scaivault_hsm::Token;
use scaivault_tests::Daemon;
use serde_json::json;
use std::process::Command;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[test]
fn every_ca_key_is_sensitive_and_never_extractable() {
    let d = Daemon::start();
    let mut ids = Vec::new();
    for (i, (kt, size)) in [
        ("ec", Some(256)),
        ("ec", Some(384)),
        ("rsa", Some(2048)),
        ("rsa", Some(3072)),
        ("rsa", Some(4096)),
        ("ed25519", None),
    ]
    .into_iter()
    .enumerate()
    {
        let root = d.create_root(&format!("r{i}"), kt, size);
        ids.push(root["id"].as_str().unwrap().to_owned());
        let int = d.post("/v1/pki/ca", &json!({"name": format!("i{i}"), "common_name": "I", "ca_type": "intermediate", "parent_ca_id": root["id"], "key_type": kt, "key_size": size, "validity_days": 30}));
        ids.push(int.json()["id"].as_str().unwrap().to_owned());
    }
    let pending = d.post(
        "/v1/pki/ca",
        &json!({"name": "p", "common_name": "P", "ca_type": "intermediate", "validity_days": 30}),
    );
    ids.push(pending.json()["id"].as_str().unwrap().to_owned());

    let conf = d.data().join("softhsm/softhsm2.conf");
    let pin = std::fs::read_to_string(d.data().join("hsm.pin"))
        .unwrap()
        .trim()
        .to_owned();

    // 1. Through PKCS#11 in this process (the only test in this binary: SOFTHSM2_CONF is global).
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let token = Pkcs11Token::open(&Pkcs11Config {
        module: MODULE.into(),
        token_label: "scaivault-dev".into(),
        pin: zeroize::Zeroizing::new(pin.clone()),
    })
    .unwrap();
    for id in &ids {
        let a = token.attributes(id).unwrap();
        assert!(
            a.token && a.private && a.sensitive && a.always_sensitive && a.never_extractable,
            "{id}: {a:?}"
        );
        assert!(!a.extractable, "{id}: {a:?}");
        assert!(a.sign, "{id}: {a:?}");
        assert!(
            a.value_read_refused,
            "{id}: reading the private value must be refused"
        );
    }

    // 2. With pkcs11-tool.
    let tool = |args: &[&str]| {
        Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--module",
                MODULE,
                "--token-label",
                "scaivault-dev",
                "--login",
                "--pin",
                &pin,
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = tool(&["--list-objects", "--type", "privkey"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let blocks: Vec<&str> = listing.split("Private Key Object").skip(1).collect();
    assert_eq!(blocks.len(), ids.len(), "{listing}");
    for b in blocks {
        assert!(
            b.contains("sensitive, always sensitive, never extractable, local"),
            "{b}"
        );
        assert!(
            b.contains("Usage:      sign")
                && !b.contains("decrypt")
                && !b.contains("unwrap")
                && !b.contains("derive"),
            "{b}"
        );
    }
    // (pkcs11-tool cannot try to read a private key's value at all — "reading private keys not
    // (yet) supported" — so the CKA_VALUE refusal is checked through PKCS#11 above.)
}
