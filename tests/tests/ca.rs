//! Certificate authorities over HTTP, judged by `openssl`: a root and an intermediate for every
//! key type, the CA profile, the pending intermediate signed by an external parent, validity and
//! parent rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{openssl, openssl_ok, write, Daemon};
use serde_json::json;

const KEY_TYPES: &[(&str, Option<u32>, &str)] = &[
    ("ec", Some(256), "prime256v1"),
    ("ec", Some(384), "secp384r1"),
    ("rsa", Some(2048), "2048 bit"),
    ("rsa", Some(3072), "3072 bit"),
    ("rsa", Some(4096), "4096 bit"),
    ("ed25519", None, "ED25519"),
];

#[test]
fn root_and_intermediate_for_every_key_type_verify_with_openssl() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    for (i, (kt, size, marker)) in KEY_TYPES.iter().enumerate() {
        let root = d.create_root(&format!("root-{i}"), kt, *size);
        assert_eq!(root["status"], "active");
        assert_eq!(root["key_type"], *kt);
        assert_eq!(root["ca_type"], "root");
        let serial = root["serial_number"].as_str().unwrap();
        assert!(
            serial.len() >= 8 * 3 - 1
                && serial
                    .split(':')
                    .all(|p| p.len() == 2 && p == p.to_uppercase()),
            "{serial}"
        );
        let int = d.post(
            "/v1/pki/ca",
            &json!({
                "name": format!("int-{i}"), "common_name": format!("Intermediate {i}"), "ca_type": "intermediate",
                "parent_ca_id": root["id"], "key_type": kt, "key_size": size, "validity_days": 1825,
                "max_path_length": 0, "organization": "Acme", "country": "NL",
                "permitted_dns_domains": ["svc.cluster.local"], "permitted_ip_ranges": ["10.0.0.0/8"]
            }),
        );
        assert_eq!(int.status, 201, "{}", int.text());
        let int = int.json();
        assert_eq!(int["parent_ca_id"], root["id"]);

        // The certificate endpoints (PEM and DER) agree with the JSON.
        let rid = root["id"].as_str().unwrap();
        let iid = int["id"].as_str().unwrap();
        let pem = d.call("GET", &format!("/v1/pki/ca/{rid}/certificate"), None, None);
        assert_eq!(pem.status, 200);
        assert_eq!(pem.content_type, "application/x-pem-file");
        assert_eq!(pem.text(), root["certificate"].as_str().unwrap());
        let der = d.call(
            "GET",
            &format!("/v1/pki/ca/{rid}/certificate?format=der"),
            None,
            None,
        );
        assert_eq!(der.content_type, "application/pkix-cert");
        let der_path = tmp.join(format!("root{i}.der"));
        std::fs::write(&der_path, &der.bytes).unwrap();

        let root_pem = write(
            tmp,
            &format!("root{i}.pem"),
            root["certificate"].as_str().unwrap(),
        );
        let int_pem = write(
            tmp,
            &format!("int{i}.pem"),
            int["certificate"].as_str().unwrap(),
        );
        let out = openssl_ok(&["verify", "-x509_strict", "-CAfile", &root_pem, &int_pem]);
        assert!(out.trim_end().ends_with(": OK"), "{out}");
        let same = openssl_ok(&[
            "x509",
            "-inform",
            "DER",
            "-in",
            der_path.to_str().unwrap(),
            "-noout",
            "-fingerprint",
            "-sha256",
        ]);
        assert_eq!(
            same,
            openssl_ok(&[
                "x509",
                "-in",
                &root_pem,
                "-noout",
                "-fingerprint",
                "-sha256"
            ])
        );

        let rt = openssl_ok(&["x509", "-in", &root_pem, "-noout", "-text"]);
        assert!(rt.contains(marker), "{kt}: {rt}");
        assert!(
            rt.contains("X509v3 Basic Constraints: critical") && rt.contains("CA:TRUE"),
            "{rt}"
        );
        assert!(
            rt.contains("X509v3 Key Usage: critical") && rt.contains("Certificate Sign, CRL Sign"),
            "{rt}"
        );
        assert!(rt.contains("X509v3 Subject Key Identifier"), "{rt}");
        let it = openssl_ok(&["x509", "-in", &int_pem, "-noout", "-text"]);
        assert!(it.contains("CA:TRUE, pathlen:0"), "{it}");
        assert!(
            it.contains("X509v3 Key Usage: critical") && it.contains("Certificate Sign, CRL Sign"),
            "{it}"
        );
        assert!(
            it.contains("X509v3 Subject Key Identifier")
                && it.contains("X509v3 Authority Key Identifier"),
            "{it}"
        );
        assert!(
            it.contains("X509v3 Name Constraints: critical")
                && it.contains("DNS:svc.cluster.local"),
            "{it}"
        );
        assert!(it.contains("IP:10.0.0.0/255.0.0.0"), "{it}");
        assert!(
            it.contains("Subject: C = NL, O = Acme, CN = Intermediate"),
            "{it}"
        );

        // The chain endpoint: intermediate then root.
        let chain = d
            .call("GET", &format!("/v1/pki/ca/{iid}/chain"), None, None)
            .text();
        assert_eq!(
            chain,
            format!(
                "{}{}",
                int["certificate"].as_str().unwrap(),
                root["certificate"].as_str().unwrap()
            )
        );
    }
    let list = d.get("/v1/pki/ca?limit=5").json();
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    let next = list["next_cursor"].as_str().unwrap();
    let rest = d.get(&format!("/v1/pki/ca?limit=100&cursor={next}")).json();
    assert_eq!(
        rest["items"].as_array().unwrap().len(),
        KEY_TYPES.len() * 2 - 5
    );
    assert!(rest["next_cursor"].is_null());
}

#[test]
fn parent_and_validity_rules() {
    let d = Daemon::start();
    let root = d.create_root("r", "ec", None);
    let too_long = d.post(
        "/v1/pki/ca",
        &json!({"name": "i", "common_name": "I", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 4000}),
    );
    too_long.problem(400, "validity_exceeds_parent");
    // The parent's own name: a self-issued intermediate would escape its path length limit.
    // Names compare as RFC 5280 §7.1 (and OpenSSL) say: case and spacing aside.
    for same in ["r Root CA", "R ROOT CA", "r  Root CA "] {
        let p = d
            .post(
                "/v1/pki/ca",
                &json!({"name": "same", "common_name": same, "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 10}),
            )
            .problem(400, "invalid_subject");
        assert!(
            p["detail"].as_str().unwrap().contains("CN=r Root CA"),
            "{p}"
        );
    }
    let missing = d.post(
        "/v1/pki/ca",
        &json!({"name": "i", "common_name": "I", "ca_type": "intermediate", "parent_ca_id": "ca_00", "validity_days": 10}),
    );
    missing.problem(400, "parent_ca_not_found");
    d.post("/v1/pki/ca", &json!({"name": "r2", "common_name": "R", "ca_type": "root", "key_type": "rsa", "key_size": 1024, "validity_days": 10}))
        .problem(400, "invalid_key_type");
    d.post(
        "/v1/pki/ca",
        &json!({"name": "r2", "common_name": "R", "ca_type": "root", "validity_days": 0}),
    )
    .problem(400, "invalid_validity");
    d.post(
        "/v1/pki/ca",
        &json!({"name": "r2", "common_name": "R", "ca_type": "leaf", "validity_days": 10}),
    )
    .problem(400, "invalid_ca_type");
    d.post(
        "/v1/pki/ca",
        &json!({"name": "r", "common_name": "R", "ca_type": "root", "validity_days": 10}),
    )
    .problem(409, "ca_name_taken");
    // pathLenConstraint of the parent is honoured (RFC 5280 §4.2.1.9).
    let leafish = d.post("/v1/pki/ca", &json!({"name": "pl0", "common_name": "PL0", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 30, "max_path_length": 0}));
    assert_eq!(leafish.status, 201, "{}", leafish.text());
    d.post("/v1/pki/ca", &json!({"name": "below-pl0", "common_name": "X", "ca_type": "intermediate", "parent_ca_id": leafish.json()["id"], "validity_days": 10}))
        .problem(400, "parent_path_length_exceeded");
    let pl2 = d.post("/v1/pki/ca", &json!({"name": "pl2", "common_name": "PL2", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 30, "max_path_length": 2})).json();
    d.post("/v1/pki/ca", &json!({"name": "pl3", "common_name": "X", "ca_type": "intermediate", "parent_ca_id": pl2["id"], "validity_days": 10, "max_path_length": 2}))
        .problem(400, "parent_path_length_exceeded");
    let inherited = d.post("/v1/pki/ca", &json!({"name": "pl1", "common_name": "PL1", "ca_type": "intermediate", "parent_ca_id": pl2["id"], "validity_days": 10}));
    assert_eq!(inherited.status, 201, "{}", inherited.text());
    let text = openssl_ok(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        &write(
            d.dir.path(),
            "pl1.pem",
            inherited.json()["certificate"].as_str().unwrap(),
        ),
    ]);
    assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");
    d.post("/v1/pki/ca", &json!({"name": "nc", "common_name": "NC", "ca_type": "root", "validity_days": 10, "permitted_dns_domains": ["bücher.example"]}))
        .problem(400, "invalid_name_constraint");
    // Entries that are no DNS name, and lists that would bloat the certificate, are refused.
    for bad in [
        "exa mple.com",
        "*",
        "*.example.com",
        &format!("{}.com", "a".repeat(300)),
        // RFC 5280 §4.2.1.10 has no leading dot for dNSName (validators refuse such a CA).
        ".sub.example",
    ] {
        d.post("/v1/pki/ca", &json!({"name": "nc", "common_name": "NC", "ca_type": "root", "validity_days": 10, "excluded_dns_domains": [bad]}))
            .problem(400, "invalid_name_constraint");
    }
    let many: Vec<String> = (0..101).map(|i| format!("d{i}.example")).collect();
    d.post("/v1/pki/ca", &json!({"name": "nc", "common_name": "NC", "ca_type": "root", "validity_days": 10, "permitted_dns_domains": many}))
        .problem(400, "invalid_name_constraint");
    let ok = d.post("/v1/pki/ca", &json!({"name": "nc", "common_name": "NC", "ca_type": "root", "validity_days": 10, "permitted_dns_domains": ["sub.example", "host.example."]}));
    assert_eq!(ok.status, 201, "{}", ok.text());
    // A retired CA stops being a parent.
    let rid = root["id"].as_str().unwrap();
    let retired = d.call("DELETE", &format!("/v1/pki/ca/{rid}"), Some(&d.admin), None);
    assert_eq!(retired.status, 200, "{}", retired.text());
    assert_eq!(retired.json()["status"], "retired");
    d.post("/v1/pki/ca", &json!({"name": "i2", "common_name": "I", "ca_type": "intermediate", "parent_ca_id": rid, "validity_days": 10}))
        .problem(409, "parent_ca_not_active");
    // Its certificate stays published.
    assert_eq!(
        d.call("GET", &format!("/v1/pki/ca/{rid}/certificate"), None, None)
            .status,
        200
    );
    d.call("GET", "/v1/pki/ca/ca_missing/certificate", None, None)
        .problem(404, "ca_not_found");
}

#[test]
fn pending_intermediate_signed_by_an_external_root() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let r = d.post("/v1/pki/ca", &json!({"name": "ext", "common_name": "Externally Signed", "ca_type": "intermediate", "key_type": "ec", "key_size": 384, "validity_days": 365}));
    assert_eq!(r.status, 201, "{}", r.text());
    let ca = r.json();
    assert_eq!(ca["status"], "pending_signature");
    assert!(ca["certificate"].is_null());
    let id = ca["id"].as_str().unwrap();
    d.call("GET", &format!("/v1/pki/ca/{id}/certificate"), None, None)
        .problem(409, "ca_pending_signature");
    let csr = write(tmp, "p.csr", ca["csr"].as_str().unwrap());
    openssl_ok(&["req", "-in", &csr, "-noout", "-verify"]);
    let subj = openssl_ok(&["req", "-in", &csr, "-noout", "-subject"]);
    assert!(subj.contains("CN = Externally Signed"), "{subj}");

    // An offline root made by openssl signs the CSR.
    let key = tmp.join("ext-root.key").to_str().unwrap().to_owned();
    let root = tmp.join("ext-root.pem").to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &root,
        "-days",
        "3650",
        "-subj",
        "/CN=Offline Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let ext = write(tmp, "ca.ext", "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
    // The offline root signs the request `req` for `days` with extensions `ext` (and another
    // subject than the request's, when `subj` is not empty), into `out`.
    let root_signs_as = |req: &str, days: &str, ext: &str, subj: &str, out: &str| {
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            req,
            "-CA",
            &root,
            "-CAkey",
            &key,
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            ext,
            "-out",
            out,
        ];
        if !subj.is_empty() {
            args.extend(["-subj", subj]);
        }
        openssl_ok(&args);
    };
    let root_signs = |req: &str, days: &str, out: &str| root_signs_as(req, days, &ext, "", out);
    // The parent renames the CA (some CAs write their own subject): the certificate is what
    // the CA is, and its common name is what the API shows from then on.
    let signed = tmp.join("signed.pem").to_str().unwrap().to_owned();
    root_signs_as(
        &csr,
        "365",
        &ext,
        "/O=Example/CN=Renamed By The Parent",
        &signed,
    );
    let signed_pem = std::fs::read_to_string(&signed).unwrap();
    let root_pem = std::fs::read_to_string(&root).unwrap();

    // A certificate for another key is refused.
    let other_key = tmp.join("o.key").to_str().unwrap().to_owned();
    let other = tmp.join("o.pem").to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        &other_key,
        "-subj",
        "/CN=Other",
        "-out",
        &tmp.join("o.csr").to_string_lossy(),
    ]);
    root_signs(&tmp.join("o.csr").to_string_lossy(), "30", &other);
    let path = format!("/v1/pki/ca/{id}/signed-certificate");
    d.post(&path, &json!({"certificate_pem": std::fs::read_to_string(&other).unwrap(), "chain_pem": root_pem}))
        .problem(400, "certificate_key_mismatch");
    // A chain that does not lead to the signer is refused.
    d.post(&path, &json!({"certificate_pem": signed_pem, "chain_pem": std::fs::read_to_string(&other).unwrap()}))
        .problem(400, "chain_invalid");
    d.post(
        &path,
        &json!({"certificate_pem": "not pem", "chain_pem": root_pem}),
    )
    .problem(400, "invalid_certificate");
    // A chain that goes on past its root (the root twice), or is too long, is refused.
    d.post(
        &path,
        &json!({"certificate_pem": signed_pem, "chain_pem": root_pem.repeat(2)}),
    )
    .problem(400, "chain_invalid");
    d.post(
        &path,
        &json!({"certificate_pem": signed_pem, "chain_pem": root_pem.repeat(9)}),
    )
    .problem(400, "chain_invalid");
    // A certificate that outlives the root that signed it is refused (5000 days under 3650).
    let long = tmp.join("long.pem").to_str().unwrap().to_owned();
    root_signs(&csr, "5000", &long);
    d.post(
        &path,
        &json!({"certificate_pem": std::fs::read_to_string(&long).unwrap(), "chain_pem": root_pem}),
    )
    .problem(400, "validity_exceeds_parent");
    // A CA certificate this CA could not work with: no keyCertSign, no cRLSign (it signs its
    // own CRLs here), an empty subject.
    for (n, (exts, subj)) in [
        (
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature\n",
            "",
        ),
        (
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
            "",
        ),
        (
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
            "/",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let e = write(tmp, &format!("bad{n}.ext"), exts);
        let out = tmp.join(format!("bad{n}.pem")).to_str().unwrap().to_owned();
        root_signs_as(&csr, "30", &e, subj, &out);
        let p = d
            .post(
                &path,
                &json!({"certificate_pem": std::fs::read_to_string(&out).unwrap(), "chain_pem": root_pem}),
            )
            .problem(400, "not_a_ca_certificate");
        let detail = p["detail"].as_str().unwrap().to_owned();
        let expected = ["keyCertSign", "cRLSign", "subject is empty"][n];
        assert!(detail.contains(expected), "{n}: {detail}");
    }
    assert_eq!(
        d.get(&format!("/v1/pki/ca/{id}")).json()["status"],
        "pending_signature"
    );

    let ok = d.post(
        &path,
        &json!({"certificate_pem": signed_pem, "chain_pem": root_pem}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ca = ok.json();
    assert_eq!(ca["status"], "active");
    assert_eq!(ca["common_name"], "Renamed By The Parent", "{ca}");
    assert!(ca["serial_number"].is_string());
    let chain = d
        .call("GET", &format!("/v1/pki/ca/{id}/chain"), None, None)
        .text();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    let chain_path = write(tmp, "chain.pem", &chain);
    let out = openssl(&["verify", "-CAfile", &root, &chain_path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Installing twice is a state conflict.
    d.post(
        &path,
        &json!({"certificate_pem": signed_pem, "chain_pem": root_pem}),
    )
    .problem(409, "ca_not_pending");

    // The now active CA issues intermediates of its own, signed on the token.
    let child = d.post("/v1/pki/ca", &json!({"name": "child", "common_name": "Child", "ca_type": "intermediate", "parent_ca_id": id, "validity_days": 100}));
    assert_eq!(child.status, 201, "{}", child.text());
    let child_pem = write(
        tmp,
        "child.pem",
        child.json()["certificate"].as_str().unwrap(),
    );
    let out = openssl(&[
        "verify",
        "-CAfile",
        &root,
        "-untrusted",
        &signed,
        &child_pem,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn import_a_ca_whose_key_is_already_on_the_token() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    // A security officer generates a key on the token outside ScaiVault…
    let tool = |args: &[&str]| {
        d.pkcs11_tool(args);
    };
    tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "ceremony-key",
        "--id",
        "c0ffee",
        "--usage-sign",
    ]);
    let pub_der = tmp.join("pub.der").to_str().unwrap().to_owned();
    tool(&[
        "--read-object",
        "--type",
        "pubkey",
        "--label",
        "ceremony-key",
        "-o",
        &pub_der,
    ]);
    let pub_pem = tmp.join("pub.pem").to_str().unwrap().to_owned();
    openssl_ok(&[
        "pkey", "-pubin", "-inform", "DER", "-in", &pub_der, "-out", &pub_pem,
    ]);
    // …and an offline root certifies it.
    let rk = tmp.join("rk.pem").to_str().unwrap().to_owned();
    let r = tmp.join("r.pem").to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &rk,
        "-out",
        &r,
        "-subj",
        "/CN=Ceremony Root",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let ext = write(tmp, "imp.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n");
    let cert = tmp.join("imp.pem").to_str().unwrap().to_owned();
    openssl_ok(&[
        "x509",
        "-new",
        "-force_pubkey",
        &pub_pem,
        "-subj",
        "/CN=Imported Issuing CA",
        "-CA",
        &r,
        "-CAkey",
        &rk,
        "-days",
        "10",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    let root_pem = std::fs::read_to_string(&r).unwrap();

    d.post("/v1/pki/ca/import", &json!({"name": "imp", "key_label": "no-such-key", "certificate_pem": cert_pem, "chain_pem": root_pem}))
        .problem(400, "key_not_found");
    // A private key without its public key object: the same refusal, saying what is missing
    // (it was a 500).
    tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "half-key",
        "--id",
        "c0ffef",
        "--usage-sign",
    ]);
    tool(&["--delete-object", "--type", "pubkey", "--label", "half-key"]);
    let p = d.post("/v1/pki/ca/import", &json!({"name": "imp", "key_label": "half-key", "certificate_pem": cert_pem, "chain_pem": root_pem}))
        .problem(400, "key_not_found");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("no public key object"),
        "{p}"
    );
    // A key that could leave the token is no CA key (checked before anything else about it).
    tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "loose-key",
        "--id",
        "c0fff0",
        "--usage-sign",
        "--extractable",
    ]);
    let p = d.post("/v1/pki/ca/import", &json!({"name": "imp", "key_label": "loose-key", "certificate_pem": cert_pem, "chain_pem": root_pem}))
        .problem(400, "key_not_protected");
    assert!(
        p["detail"].as_str().unwrap().contains("CKA_EXTRACTABLE"),
        "{p}"
    );
    d.post("/v1/pki/ca/import", &json!({"name": "imp", "key_label": "ceremony-key", "certificate_pem": root_pem, "chain_pem": root_pem}))
        .problem(400, "certificate_key_mismatch");
    d.post(
        "/v1/pki/ca/import",
        &json!({"name": "imp", "key_label": "ceremony-key", "certificate_pem": cert_pem}),
    )
    .problem(400, "chain_invalid");
    let ok = d.post("/v1/pki/ca/import", &json!({"name": "imp", "key_label": "ceremony-key", "certificate_pem": cert_pem, "chain_pem": root_pem}));
    assert_eq!(ok.status, 201, "{}", ok.text());
    let ca = ok.json();
    assert_eq!(ca["status"], "active");
    assert_eq!(ca["ca_type"], "intermediate");
    assert_eq!(ca["common_name"], "Imported Issuing CA");
    let p = d.post("/v1/pki/ca/import", &json!({"name": "imp2", "key_label": "ceremony-key", "certificate_pem": cert_pem, "chain_pem": root_pem}))
        .problem(409, "ca_conflict");
    assert!(
        p["detail"].as_str().unwrap().contains(&format!(
            "CA \"imp\" ({}) holds this certificate already",
            ca["id"].as_str().unwrap()
        )),
        "{p}"
    );
    // Keys the daemon made for itself (a CA's, an OCSP delegate's) are never another CA's.
    for label in [ca["id"].as_str().unwrap(), "ocsp_0123", "scaivault-kek-v1"] {
        d.post("/v1/pki/ca/import", &json!({"name": "imp3", "key_label": label, "certificate_pem": cert_pem, "chain_pem": root_pem}))
            .problem(400, "invalid_key_label");
    }

    // The imported key signs on the token.
    let child = d.post("/v1/pki/ca", &json!({"name": "under-imp", "common_name": "Under Imported", "ca_type": "intermediate", "parent_ca_id": ca["id"], "validity_days": 5}));
    assert_eq!(child.status, 201, "{}", child.text());
    let child_pem = write(
        tmp,
        "under.pem",
        child.json()["certificate"].as_str().unwrap(),
    );
    let out = openssl(&["verify", "-CAfile", &r, "-untrusted", &cert, &child_pem]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = d
        .call(
            "GET",
            &format!("/v1/pki/ca/{}/chain", ca["id"].as_str().unwrap()),
            None,
            None,
        )
        .text();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
}

/// A dev daemon with an EC root CA `name` and a role `svc` on it for `*.internal`, which has
/// issued once: the daemon and the CA's id.
fn root_with_svc_role(name: &str) -> (Daemon, String) {
    let d = Daemon::start();
    let root = d.create_root(name, "ec", None);
    let id = root["id"].as_str().unwrap().to_owned();
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": id, "allowed_domains": ["*.internal"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(issue(&d).status, 200);
    (d, id)
}

/// An issuance of `a.internal` against the role `svc`.
fn issue(d: &Daemon) -> scaivault_tests::Reply {
    d.post("/v1/pki/issue/svc", &json!({"common_name": "a.internal"}))
}

/// A CA key deleted from the token behind the daemon's back (`pkcs11-tool --delete-object`): within
/// a key check (each scheduler tick, 10 s) the CA stops signing — the session copy the daemon
/// holds would sign on — and issuance and a CRL rebuild answer `503 hsm_key_missing`; health
/// counts the CA; a restart finds it missing at once.
#[test]
fn a_ca_whose_key_leaves_the_token_stops_signing() {
    let (d, id) = root_with_svc_role("doomed");
    assert_eq!(d.get("/v1/sys/health").json()["ca_keys_missing"], 0);

    d.pkcs11_tool(&["--delete-object", "--type", "privkey", "--label", &id]);
    let noticed = |d: &Daemon| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while d.get("/v1/sys/health").json()["ca_keys_missing"] != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the missing key went unnoticed"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    noticed(&d);
    let check = |d: &Daemon| {
        let p = issue(d).problem(503, "hsm_key_missing");
        assert!(
            p["detail"].as_str().unwrap().contains("not on the token"),
            "{p}"
        );
        d.post(&format!("/v1/pki/ca/{id}/crl"), &json!({}))
            .problem(503, "hsm_key_missing");
    };
    check(&d);
    assert!(d
        .log_text()
        .contains("the CA's key pair is not (wholly) on the token"));
    // The health endpoint itself stays 200: the other CAs work.
    assert_eq!(d.get("/v1/sys/health").status, 200);
    let d = Daemon::start_in(d.into_dir());
    check(&d);
    noticed(&d);
}

/// The way back: a CA key that left the token (deleted) and is put back as it was (its object
/// file restored from a copy of the token directory, as an operator restoring a token backup
/// would) is found at the next key check: health counts it no more, and the CA signs again
/// without a restart.
#[test]
fn a_ca_key_put_back_on_the_token_signs_again() {
    fn files(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "object") {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let (d, id) = root_with_svc_role("returning");
    let mut before = Vec::new();
    files(&d.data(), &mut before);
    assert!(
        !before.is_empty(),
        "no token object files under {:?}",
        d.data()
    );

    d.pkcs11_tool(&["--delete-object", "--type", "privkey", "--label", &id]);
    let missing = |d: &Daemon, want: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while d.get("/v1/sys/health").json()["ca_keys_missing"] != want {
            assert!(
                std::time::Instant::now() < deadline,
                "health never counted {want} missing CA keys"
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    missing(&d, 1);
    issue(&d).problem(503, "hsm_key_missing");

    // Put back the object file that went. SoftHSM re-reads its token directory when the token's
    // generation changes, which any write through SoftHSM does (a restore through the ceremony's
    // unwrap would): one data object written and deleted by another process.
    let gone: Vec<_> = before.iter().filter(|(p, _)| !p.exists()).collect();
    assert_eq!(
        gone.len(),
        1,
        "the deletion removed {} object files",
        gone.len()
    );
    std::fs::write(&gone[0].0, &gone[0].1).unwrap();
    let note = d.data().join("note.bin");
    std::fs::write(&note, b"x").unwrap();
    let note = note.display().to_string();
    d.pkcs11_tool(&[
        "--write-object",
        &note,
        "--type",
        "data",
        "--label",
        "touch",
    ]);
    d.pkcs11_tool(&["--delete-object", "--type", "data", "--label", "touch"]);
    missing(&d, 0);
    assert!(d
        .log_text()
        .contains("the CA's key pair is on the token again"));
    let leaf = issue(&d);
    assert_eq!(leaf.status, 200, "{}", leaf.text());
    let crl = d.post(&format!("/v1/pki/ca/{id}/crl"), &json!({}));
    assert_eq!(crl.status, 200, "{}", crl.text());
}
