//! The reviewed CSR workflow over HTTP: import → approve/reject → sign, judged by `openssl`; the
//! state machine, separation of duties, parallel sign calls, and hostile CSRs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{make_csr, openssl, openssl_ok, write, Daemon};
use serde_json::{json, Value};

fn hierarchy(d: &Daemon) -> (Value, Value) {
    let root = d.create_root("root", "ec", Some(256));
    let int = d.post("/v1/pki/ca", &json!({"name": "int", "common_name": "CSR Intermediate", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 1000}));
    assert_eq!(int.status, 201, "{}", int.text());
    (root, int.json())
}

#[test]
fn csrs_of_every_key_type_go_through_import_approve_sign() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (root, int) = hierarchy(&d);
    let root_pem = write(tmp, "root.pem", root["certificate"].as_str().unwrap());
    let cases: [(&str, &[&str], &str, u32); 5] = [
        (
            "p256",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "ec",
            256,
        ),
        (
            "p384",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "ec",
            384,
        ),
        ("rsa2048", &["-newkey", "rsa:2048"], "rsa", 2048),
        ("rsa4096", &["-newkey", "rsa:4096"], "rsa", 4096),
        ("ed25519", &["-newkey", "ed25519"], "ed25519", 256),
    ];
    for (tag, newkey, kt, bits) in cases {
        let (csr_pem, key) = make_csr(
            tmp,
            tag,
            newkey,
            &format!("/O=Vendor XYZ/CN=device-{tag}.iot.example"),
            Some(&format!("DNS:device-{tag}.iot.example,IP:192.0.2.7")),
        );
        // CRLF line ends and surrounding whitespace are accepted.
        let crlf = format!("\n  {}  \n", csr_pem.replace('\n', "\r\n"));
        let imported = d.post(
            "/v1/pki/csr/import",
            &json!({"csr_pem": crlf, "note": "from the vendor portal"}),
        );
        assert_eq!(imported.status, 201, "{tag}: {}", imported.text());
        let c = imported.json();
        assert_eq!(c["status"], "pending");
        assert!(c["id"].as_str().unwrap().starts_with("csr_"));
        assert_eq!(c["key_type"], kt);
        assert_eq!(c["key_bits"], bits);
        assert_eq!(
            c["sans"]["dns"],
            json!([format!("device-{tag}.iot.example")])
        );
        assert_eq!(c["sans"]["ip"], json!(["192.0.2.7"]));
        assert!(c["subject"]
            .as_str()
            .unwrap()
            .contains(&format!("CN=device-{tag}.iot.example")));
        assert_eq!(c["fingerprint_sha256"].as_str().unwrap().len(), 64);
        assert!(c["requested_by"].as_str().unwrap().starts_with("tok_"));
        let id = c["id"].as_str().unwrap();
        let ok = d.post(
            &format!("/v1/pki/csr/{id}/approve"),
            &json!({"comment": "vendor ticket 42"}),
        );
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.json()["status"], "approved");
        let signed = d.post(
            &format!("/v1/pki/csr/{id}/sign"),
            &json!({"ca_id": int["id"], "validity_days": 90, "usage": "client"}),
        );
        assert_eq!(signed.status, 200, "{tag}: {}", signed.text());
        let s = signed.json();
        let leaf = write(
            tmp,
            &format!("{tag}.pem"),
            s["certificate"].as_str().unwrap(),
        );
        let chain = write(
            tmp,
            &format!("{tag}-chain.pem"),
            s["ca_chain"][0].as_str().unwrap(),
        );
        let out = openssl_ok(&["verify", "-CAfile", &root_pem, "-untrusted", &chain, &leaf]);
        assert!(out.trim_end().ends_with(": OK"), "{out}");
        assert_eq!(
            openssl_ok(&["x509", "-in", &leaf, "-noout", "-pubkey"]),
            openssl_ok(&["pkey", "-in", &key, "-pubout"]),
            "{tag}: the certificate's key is the CSR's"
        );
        let text = openssl_ok(&["x509", "-in", &leaf, "-noout", "-text"]);
        assert!(
            text.contains("TLS Web Client Authentication")
                && !text.contains("TLS Web Server Authentication"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "DNS:device-{tag}.iot.example, IP Address:192.0.2.7"
            )),
            "{text}"
        );
        assert!(text.contains("O = Vendor XYZ"), "{text}");
        let after = d.get(&format!("/v1/pki/csr/{id}")).json();
        assert_eq!(after["status"], "signed");
        assert_eq!(after["serial_number"], s["serial_number"]);
        assert_eq!(after["comment"], "vendor ticket 42");
        // The certificate is in the inventory.
        let inv = d.get(&format!(
            "/v1/pki/certificates/{}",
            s["serial_number"].as_str().unwrap()
        ));
        assert_eq!(inv.status, 200, "{}", inv.text());
    }
    assert_eq!(
        d.get("/v1/pki/csr?status=signed").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        d.get("/v1/pki/csr?status=pending").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Events were recorded.
    let ev = d.get("/v1/events?limit=1000").json();
    let kinds: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for k in [
        "csr.imported",
        "csr.approved",
        "certificate.issued",
        "csr.signed",
    ] {
        assert_eq!(
            kinds.iter().filter(|x| **x == k).count(),
            5,
            "{k}: {kinds:?}"
        );
    }
    // The feed's filter takes the types and patterns webhooks take, and nothing else.
    assert_eq!(
        d.get("/v1/events?type=csr.*&limit=1000").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        15
    );
    for bad in ["bogus", "certificate.bogus", "", "cert*", "csr.imported*"] {
        d.get(&format!("/v1/events?type={bad}"))
            .problem(400, "invalid_type");
    }
}

#[test]
fn the_state_machine_and_its_conflicts() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d);
    let (csr_pem, _) = make_csr(
        tmp,
        "a",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=a.iot.example",
        None,
    );
    let imp = |d: &Daemon| {
        d.post("/v1/pki/csr/import", &json!({"csr_pem": csr_pem}))
            .json()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let sign_body = json!({"ca_id": int["id"], "validity_days": 30});

    // Sign before approve: 409 csr_not_approved.
    let a = imp(&d);
    // Approve's body is optional, but one that is there is decoded strictly: a malformed one
    // approves nothing (and never loses the reviewer's comment).
    for (body, code) in [
        (&br#"{"comment":"ok","extra":true}"#[..], "unknown_field"),
        (br#"{"comment":5}"#, "invalid_field"),
        (b"garbage", "invalid_json"),
    ] {
        d.call(
            "POST",
            &format!("/v1/pki/csr/{a}/approve"),
            Some(&d.admin),
            Some(body),
        )
        .problem(400, code);
    }
    assert_eq!(
        d.get(&format!("/v1/pki/csr/{a}")).json()["status"],
        "pending"
    );
    d.post(&format!("/v1/pki/csr/{a}/sign"), &sign_body)
        .problem(409, "csr_not_approved");
    // Reject without a reason: 400. With one: kept.
    d.post(&format!("/v1/pki/csr/{a}/reject"), &json!({}))
        .problem(400, "reason_required");
    d.post(&format!("/v1/pki/csr/{a}/reject"), &json!({"reason": "  "}))
        .problem(400, "reason_required");
    // Free text a reviewer reads and the audit chain keeps: nothing that hides or reorders it.
    for text in ["approved\u{202e}gnp.exe", "bad\u{0}ctl", "x\u{200b}y"] {
        d.post(
            &format!("/v1/pki/csr/{a}/reject"),
            &json!({ "reason": text }),
        )
        .problem(400, "invalid_comment");
        d.post(
            &format!("/v1/pki/csr/{a}/approve"),
            &json!({ "comment": text }),
        )
        .problem(400, "invalid_comment");
    }
    let rej = d.post(
        &format!("/v1/pki/csr/{a}/reject"),
        &json!({"reason": "unknown vendor"}),
    );
    assert_eq!(rej.status, 200, "{}", rej.text());
    assert_eq!(rej.json()["reason"], "unknown vendor");
    // Rejected → sign / approve / reject again: 409, and the reason stays.
    let p = d
        .post(&format!("/v1/pki/csr/{a}/sign"), &sign_body)
        .problem(409, "csr_state_conflict");
    assert!(p["detail"].as_str().unwrap().contains("rejected"), "{p}");
    d.call(
        "POST",
        &format!("/v1/pki/csr/{a}/approve"),
        Some(&d.admin),
        None,
    )
    .problem(409, "csr_state_conflict");
    d.post(
        &format!("/v1/pki/csr/{a}/reject"),
        &json!({"reason": "again"}),
    )
    .problem(409, "csr_state_conflict");
    assert_eq!(
        d.get(&format!("/v1/pki/csr/{a}")).json()["reason"],
        "unknown vendor"
    );
    assert_eq!(
        d.get("/v1/pki/csr?status=rejected").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let audit = d.get("/v1/audit?limit=1000").json();
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "csr.reject"
                && r["outcome"] == "success"
                && r["object_id"] == a.as_str()
                && r["detail"] == "unknown vendor"),
        "the rejection's audit record carries its reason"
    );

    // Signed → sign again: 409. Approve without a body works.
    let b = imp(&d);
    let ok = d.call(
        "POST",
        &format!("/v1/pki/csr/{b}/approve"),
        Some(&d.admin),
        None,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        d.post(&format!("/v1/pki/csr/{b}/sign"), &sign_body).status,
        200
    );
    d.post(&format!("/v1/pki/csr/{b}/sign"), &sign_body)
        .problem(409, "csr_state_conflict");
    // Bad sign inputs leave the CSR approved.
    let c = imp(&d);
    d.call(
        "POST",
        &format!("/v1/pki/csr/{c}/approve"),
        Some(&d.admin),
        None,
    );
    d.post(
        &format!("/v1/pki/csr/{c}/sign"),
        &json!({"ca_id": int["id"], "validity_days": 5000}),
    )
    .problem(400, "invalid_validity");
    d.post(
        &format!("/v1/pki/csr/{c}/sign"),
        &json!({"ca_id": int["id"], "validity_days": 2000}),
    )
    .problem(400, "validity_exceeds_ca");
    d.post(
        &format!("/v1/pki/csr/{c}/sign"),
        &json!({"ca_id": "ca_nope", "validity_days": 5}),
    )
    .problem(400, "ca_not_found");
    d.post(
        &format!("/v1/pki/csr/{c}/sign"),
        &json!({"ca_id": int["id"], "validity_days": 5, "usage": "code"}),
    )
    .problem(400, "invalid_usage");
    assert_eq!(
        d.get(&format!("/v1/pki/csr/{c}")).json()["status"],
        "approved"
    );
    d.get("/v1/pki/csr/csr_nope").problem(404, "csr_not_found");
    d.get("/v1/pki/csr?status=odd")
        .problem(400, "invalid_status");
}

#[test]
fn parallel_sign_calls_yield_exactly_one_certificate() {
    let d = std::sync::Arc::new(Daemon::start());
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d);
    let (csr_pem, _) = make_csr(
        tmp,
        "p",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=p.iot.example",
        None,
    );
    let id = d
        .post("/v1/pki/csr/import", &json!({"csr_pem": csr_pem}))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        d.call(
            "POST",
            &format!("/v1/pki/csr/{id}/approve"),
            Some(&d.admin),
            None
        )
        .status,
        200
    );
    let body = json!({"ca_id": int["id"], "validity_days": 30});
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (d, id, body) = (d.clone(), id.clone(), body.clone());
            std::thread::spawn(move || d.post(&format!("/v1/pki/csr/{id}/sign"), &body))
        })
        .collect();
    let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one sign call succeeds");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.problem(409, "csr_state_conflict");
    }
    let inv = d.get("/v1/pki/certificates?limit=1000").json();
    let leaves = inv["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "leaf")
        .count();
    assert_eq!(leaves, 1, "one certificate in the inventory");

    // Concurrent approve and reject: one wins.
    let (csr2, _) = make_csr(
        tmp,
        "q",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=q.iot.example",
        None,
    );
    let id2 = d
        .post("/v1/pki/csr/import", &json!({"csr_pem": csr2}))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hs: Vec<_> = (0..10)
        .map(|i| {
            let (d, id2) = (d.clone(), id2.clone());
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    d.call(
                        "POST",
                        &format!("/v1/pki/csr/{id2}/approve"),
                        Some(&d.admin),
                        None,
                    )
                } else {
                    d.post(
                        &format!("/v1/pki/csr/{id2}/reject"),
                        &json!({"reason": "race"}),
                    )
                }
            })
        })
        .collect();
    let rs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(rs.iter().filter(|r| r.status == 200).count(), 1);
    assert_eq!(rs.iter().filter(|r| r.status == 409).count(), 9);
}

#[test]
fn separation_of_duties_and_policies() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d);
    let (csr_pem, _) = make_csr(
        tmp,
        "s",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=s.iot.example",
        None,
    );
    let token = |p: &[&str]| {
        d.post("/v1/auth/tokens", &json!({"policies": p})).json()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let requester = token(&["csr-requester"]);
    let approver = token(&["csr-approver"]);
    let signer = token(&["ca-admin"]);
    let call = |t: &str, path: &str, body: Value| {
        d.call("POST", path, Some(t), Some(body.to_string().as_bytes()))
    };

    // Policies: a requester imports only; an approver cannot sign; a ca-admin cannot approve.
    let imported = call(
        &requester,
        "/v1/pki/csr/import",
        json!({"csr_pem": csr_pem}),
    );
    assert_eq!(imported.status, 201, "{}", imported.text());
    let id = imported.json()["id"].as_str().unwrap().to_owned();
    call(&requester, &format!("/v1/pki/csr/{id}/approve"), json!({})).problem(403, "forbidden");
    call(&signer, &format!("/v1/pki/csr/{id}/approve"), json!({})).problem(403, "forbidden");
    d.call("GET", &format!("/v1/pki/csr/{id}"), Some(&requester), None)
        .problem(403, "forbidden");

    // With separation of duties on, the importing token may not approve its own CSR.
    let out = d.cli(&[
        "tenant",
        "set",
        "default",
        "--csr-distinct-approver",
        "true",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The audit record says what was set.
    let audit = d.get("/v1/audit?limit=1000").json();
    let set = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|r| r["action"] == "tenant.set")
        .cloned()
        .unwrap();
    assert_eq!(set["detail"], "csr_distinct_approver = true", "{set}");
    assert_eq!(set["token_id"], "cli", "{set}");
    let own = call(&approver, "/v1/pki/csr/import", json!({"csr_pem": csr_pem})).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(&approver, &format!("/v1/pki/csr/{own}/approve"), json!({}))
        .problem(403, "separation_of_duties");
    call(
        &approver,
        &format!("/v1/pki/csr/{own}/reject"),
        json!({"reason": "mine"}),
    )
    .problem(403, "separation_of_duties");
    // Each refusal is one record, `denied`.
    let audit = d.get("/v1/audit?limit=1000").json();
    let about = |csr: &str| -> Vec<(String, String)> {
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["object_id"] == csr)
            .map(|r| {
                (
                    r["action"].as_str().unwrap().to_owned(),
                    r["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |a: &str, o: &str| (a.to_owned(), o.to_owned());
    assert_eq!(
        about(&own),
        vec![
            pair("csr.import", "success"),
            pair("csr.approve", "denied"),
            pair("csr.reject", "denied")
        ],
        "{audit}"
    );
    // A token without the policy: the refusal names the CSR the path names.
    assert_eq!(
        about(&id),
        vec![
            pair("csr.import", "success"),
            pair("csr.approve", "denied"),
            pair("csr.approve", "denied"),
            pair("csr.read", "denied")
        ],
        "{audit}"
    );
    // Another token may.
    assert_eq!(
        call(&approver, &format!("/v1/pki/csr/{id}/approve"), json!({})).status,
        200
    );
    call(
        &approver,
        &format!("/v1/pki/csr/{id}/sign"),
        json!({"ca_id": int["id"], "validity_days": 10}),
    )
    .problem(403, "forbidden");
    assert_eq!(
        call(
            &signer,
            &format!("/v1/pki/csr/{id}/sign"),
            json!({"ca_id": int["id"], "validity_days": 10})
        )
        .status,
        200
    );
    // Off again: the importer may decide.
    let out = d.cli(&[
        "tenant",
        "set",
        "default",
        "--csr-distinct-approver",
        "false",
    ]);
    assert!(out.status.success());
    assert_eq!(
        call(&approver, &format!("/v1/pki/csr/{own}/approve"), json!({})).status,
        200
    );
}

#[test]
fn hostile_csrs_are_refused_cleanly() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (csr_pem, _) = make_csr(
        tmp,
        "h",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=h.iot.example",
        Some("DNS:h.iot.example"),
    );
    let imp = |pem: &str| d.post("/v1/pki/csr/import", &json!({"csr_pem": pem}));
    // A flipped signature byte.
    let der_path = tmp.join("h.der");
    openssl_ok(&[
        "req",
        "-in",
        tmp.join("h.csr").to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der_path.to_str().unwrap(),
    ]);
    let mut der = std::fs::read(&der_path).unwrap();
    let n = der.len();
    der[n - 3] ^= 0x01;
    let flipped = tmp.join("flipped.der");
    std::fs::write(&flipped, &der).unwrap();
    let flipped_pem = openssl_ok(&[
        "req",
        "-inform",
        "DER",
        "-in",
        flipped.to_str().unwrap(),
        "-outform",
        "PEM",
    ]);
    imp(&flipped_pem).problem(400, "invalid_csr");
    // Garbage, a certificate instead of a CSR, a truncated one, a small RSA key.
    imp("garbage").problem(400, "invalid_csr");
    let cert_pem = openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        tmp.join("c.key").to_str().unwrap(),
        "-subj",
        "/CN=c",
        "-days",
        "1",
    ]);
    imp(&cert_pem).problem(400, "invalid_csr");
    let lines: Vec<&str> = csr_pem.lines().collect();
    let truncated = format!(
        "{}\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines[0], lines[1]
    );
    imp(&truncated).problem(400, "invalid_csr");
    let (small, _) = make_csr(
        tmp,
        "small",
        &["-newkey", "rsa:1024"],
        "/CN=small.iot.example",
        None,
    );
    let p = imp(&small).problem(400, "invalid_csr");
    assert!(p["detail"].as_str().unwrap().contains("1024"), "{p}");
    // Names no certificate may carry (the workflow copies them as they are): refused at import,
    // naming the value.
    let long_label = format!("{}.com", "l".repeat(70));
    for (i, (san, shown)) in [
        ("DNS:exa mple.com", "exa mple.com"),
        ("DNS:a..b.example", "a..b.example"),
        ("DNS:*.*.example", "*.*.example"),
        ("DNS:-bad-.com", "-bad-.com"),
        (&format!("DNS:{long_label}")[..], &long_label[..]),
        ("DNS:xn--zz.example", "xn--zz.example"),
        ("URI:not a uri", "not a uri"),
        ("URI:nocolon", "nocolon"),
    ]
    .into_iter()
    .enumerate()
    {
        let (pem, _) = make_csr(
            tmp,
            &format!("odd{i}"),
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            &format!("/CN=odd{i}"),
            Some(san),
        );
        let p = imp(&pem).problem(400, "invalid_csr");
        assert!(p["detail"].as_str().unwrap().contains(shown), "{san}: {p}");
    }
    // 1,000 SANs.
    let many: Vec<String> = (0..1000).map(|i| format!("DNS:n{i}.iot.example")).collect();
    let cnf = tmp.join("many.cnf");
    std::fs::write(&cnf, format!("[req]\ndistinguished_name=dn\nreq_extensions=ext\nprompt=no\n[dn]\nCN=many.iot.example\n[ext]\nsubjectAltName={}\n", many.join(","))).unwrap();
    let many_csr = tmp.join("many.csr");
    let out = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        tmp.join("many.key").to_str().unwrap(),
        "-config",
        cnf.to_str().unwrap(),
        "-out",
        many_csr.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = imp(&std::fs::read_to_string(&many_csr).unwrap()).problem(400, "invalid_csr");
    assert!(p["detail"].as_str().unwrap().contains("1000 names"), "{p}");
    // A 1 MiB body.
    let huge = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        "A".repeat(1_100_000)
    );
    imp(&huge).problem(413, "body_too_large");
    // Nothing was stored, and the daemon still works.
    assert_eq!(
        d.get("/v1/pki/csr").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(imp(&csr_pem).status, 201);
}

/// The CN of a reviewed CSR goes into the SAN only as what it is: an IP address as an IP
/// address, a DNS name as a DNS name; a CN that reads like a host name but is neither (a URI
/// here) is refused at signing, instead of becoming a DNS SAN that is not one (or a 500 from
/// the pre-signing lint). A CSR without a subject gets a critical SAN.
#[test]
fn the_common_name_of_a_csr_goes_into_the_san_only_as_what_it_is() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d);
    let import = |tag: &str, subj: &str, san: Option<&str>| {
        let (pem, _) = make_csr(
            tmp,
            tag,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            subj,
            san,
        );
        d.post("/v1/pki/csr/import", &json!({"csr_pem": pem}))
    };
    let approve_and_sign = |tag: &str, subj: &str, san: Option<&str>| {
        let c = import(tag, subj, san);
        assert_eq!(c.status, 201, "{tag}: {}", c.text());
        let id = c.json()["id"].as_str().unwrap().to_owned();
        let ok = d.post(&format!("/v1/pki/csr/{id}/approve"), &json!({}));
        assert_eq!(ok.status, 200, "{}", ok.text());
        d.post(
            &format!("/v1/pki/csr/{id}/sign"),
            &json!({"ca_id": int["id"], "validity_days": 30}),
        )
    };
    let text = |tag: &str, r: &scaivault_tests::Reply| {
        assert_eq!(r.status, 200, "{tag}: {}", r.text());
        let leaf = write(
            tmp,
            &format!("{tag}.pem"),
            r.json()["certificate"].as_str().unwrap(),
        );
        openssl_ok(&["x509", "-in", &leaf, "-noout", "-text"])
    };
    let t = text("ip", &approve_and_sign("ip", "/CN=10.1.2.3", None));
    assert!(t.contains("IP Address:10.1.2.3"), "{t}");
    assert!(!t.contains("DNS:"), "{t}");
    let t = text(
        "dns",
        &approve_and_sign("dns", "/CN=Device.IoT.example", Some("URI:urn:device:1")),
    );
    assert!(t.contains("DNS:device.iot.example"), "{t}");
    let t = text(
        "empty",
        &approve_and_sign("empty", "/", Some("DNS:e.iot.example")),
    );
    assert!(
        t.contains("X509v3 Subject Alternative Name: critical"),
        "{t}"
    );
    // An e-mail address is shown at review but not issued: not in the SAN (no e-mail names),
    // and so not in the subject either (RFC 5280 §4.1.2.6: only beside an rfc822Name).
    let t = text(
        "mail",
        &approve_and_sign(
            "mail",
            "/CN=dev3.iot.example/emailAddress=dev3@iot.example",
            Some("email:dev3@iot.example"),
        ),
    );
    assert!(t.contains("Subject: CN = dev3.iot.example\n"), "{t}");
    assert!(!t.contains("dev3@iot.example"), "{t}");
    // …and the CSR says so to its approver.
    let (pem, _) = make_csr(
        tmp,
        "mail2",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=dev4.iot.example",
        Some("email:dev4@iot.example"),
    );
    let c = d
        .post("/v1/pki/csr/import", &json!({"csr_pem": pem}))
        .json();
    assert_eq!(c["not_issued"], json!(["email:dev4@iot.example"]), "{c}");
    let c = d
        .get(&format!("/v1/pki/csr/{}", c["id"].as_str().unwrap()))
        .json();
    assert_eq!(c["not_issued"], json!(["email:dev4@iot.example"]), "{c}");
    let t = text(
        "mailonly",
        &approve_and_sign(
            "mailonly",
            "/emailAddress=x@iot.example",
            Some("DNS:m.iot.example"),
        ),
    );
    assert!(
        t.contains("X509v3 Subject Alternative Name: critical"),
        "{t}"
    );
    assert!(!t.contains("x@iot.example"), "{t}");
    // What could never be signed never reaches an approver: refused at import.
    let p = import(
        "uri",
        "/CN=spiffe:\\/\\/cluster.local\\/ns\\/a\\/sa\\/b",
        Some("URI:spiffe://cluster.local/ns/a/sa/b"),
    )
    .problem(400, "invalid_csr");
    assert!(
        p["detail"].as_str().unwrap().contains("neither a DNS"),
        "{p}"
    );
    // Only an e-mail address, which is not issued: nothing to certify.
    import(
        "mailnames",
        "/CN=Device Four",
        Some("email:dev4@iot.example"),
    )
    .problem(400, "csr_without_names");
}
