//! Trust anchors and `POST /v1/pki/certificates/validate` over HTTP: chains from our own CAs, a
//! vendor chain made with the `openssl` command line (name constraints, CRLs), tenant isolation,
//! trust-anchor CRUD and policies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{openssl, openssl_ok, write, Daemon};
use serde_json::{json, Value};
use std::path::Path;

fn codes(v: &Value) -> Vec<String> {
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect()
}

fn validate_as(d: &Daemon, token: &str, body: &Value) -> Value {
    let r = d.call(
        "POST",
        "/v1/pki/certificates/validate",
        Some(token),
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn validate(d: &Daemon, body: &Value) -> Value {
    validate_as(d, &d.admin, body)
}

/// A fresh directory for the test's files, inside the daemon's.
fn scratch(d: &Daemon, name: &str) -> std::path::PathBuf {
    let dir = d.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn token_for(d: &Daemon, tenant: &str, policy: &str) -> String {
    if tenant != "default" {
        let _ = d.cli(&["tenant", "create", tenant]);
    }
    let out = d.cli(&["token", "create", "--tenant", tenant, "--policy", policy]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn chains_from_our_own_cas_validate_and_fail_for_the_right_reasons() {
    let d = Daemon::start();
    let root = d.create_root("root", "ec", Some(256));
    let int = d
        .post(
            "/v1/pki/ca",
            &json!({"name": "int", "common_name": "Validation Intermediate", "ca_type": "intermediate",
                    "parent_ca_id": root["id"], "validity_days": 1000}),
        )
        .json();
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "web", "ca_id": int["id"], "allowed_domains": ["*.svc.internal"],
                "server_flag": true, "client_flag": false}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let issued = d
        .post(
            "/v1/pki/issue/web",
            &json!({"common_name": "a.svc.internal", "ttl": "48h"}),
        )
        .json();
    let leaf = issued["certificate"].as_str().unwrap();
    let chain = issued["ca_chain"][0].as_str().unwrap();

    // Right purpose and name, with the chain: valid, up to our root.
    let ok = validate(
        &d,
        &json!({"certificate_pem": leaf, "chain_pem": chain, "purpose": "server_auth",
                "dns_name": "a.svc.internal"}),
    );
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(ok["errors"], json!([]));
    assert_eq!(
        ok["trust_anchor"],
        json!({"kind": "internal_ca", "id": root["id"]})
    );
    let links = ok["chain"].as_array().unwrap();
    assert_eq!(links.len(), 3, "{ok}");
    assert_eq!(links[0]["serial_number"], issued["serial_number"]);
    assert_eq!(links[1]["serial_number"], int["serial_number"]);
    assert_eq!(links[2]["serial_number"], root["serial_number"]);
    assert_eq!(links[0]["subject"], "CN=a.svc.internal");
    assert_eq!(
        links[0]["fingerprint_sha256"].as_str().unwrap().len(),
        64,
        "{ok}"
    );
    // Our own intermediates are found without chain_pem.
    let ok2 = validate(
        &d,
        &json!({"certificate_pem": leaf, "dns_name": "a.svc.internal"}),
    );
    assert_eq!(ok2["valid"], true, "{ok2}");

    // The same leaf: wrong EKU, wrong name, after its expiry.
    let v = validate(
        &d,
        &json!({"certificate_pem": leaf, "chain_pem": chain, "purpose": "client_auth"}),
    );
    assert_eq!(v["valid"], false);
    assert!(codes(&v).contains(&"wrong_purpose".into()), "{v}");
    let v = validate(
        &d,
        &json!({"certificate_pem": leaf, "chain_pem": chain, "dns_name": "b.svc.internal"}),
    );
    assert_eq!(v["valid"], false);
    assert_eq!(codes(&v), vec!["name_mismatch"], "{v}");
    let v = validate(
        &d,
        &json!({"certificate_pem": leaf, "chain_pem": chain, "at_time": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(v["valid"], false);
    assert!(codes(&v).contains(&"expired".into()), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("CN=a.svc.internal"),
        "{v}"
    );
    assert_eq!(v["chain"].as_array().unwrap().len(), 3, "{v}");

    // Revocation: the inventory answers at once, with the reason.
    let body = json!({"certificate_pem": leaf, "chain_pem": chain, "check_revocation": true});
    assert_eq!(validate(&d, &body)["valid"], true);
    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": issued["serial_number"], "reason": "key_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = validate(&d, &body);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(codes(&v), vec!["revoked"], "{v}");
    // The path verified: its chain and anchor are given with the reason.
    assert_eq!(v["chain"].as_array().unwrap().len(), 3, "{v}");
    assert!(v["trust_anchor"]["id"].is_string(), "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("key_compromise"),
        "{v}"
    );
    // Without check_revocation the revocation is not looked at.
    assert_eq!(
        validate(&d, &json!({"certificate_pem": leaf, "chain_pem": chain}))["valid"],
        true
    );

    // Another tenant does not trust this tenant's CAs.
    let other = token_for(&d, "other", "admin");
    let v = validate_as(
        &d,
        &other,
        &json!({"certificate_pem": leaf, "chain_pem": chain}),
    );
    assert_eq!(v["valid"], false);
    assert_eq!(codes(&v), vec!["untrusted"], "{v}");
    assert_eq!(v["trust_anchor"], Value::Null);

    // Any token of the tenant may validate: here an issuer-only token.
    let issuer = token_for(&d, "default", "issuer:web");
    let issued2 = d
        .post(
            "/v1/pki/issue/web",
            &json!({"common_name": "c.svc.internal"}),
        )
        .json();
    let v = validate_as(
        &d,
        &issuer,
        &json!({"certificate_pem": issued2["certificate"], "purpose": "server_auth"}),
    );
    assert_eq!(v["valid"], true, "{v}");

    // Malformed requests are 400s.
    let bad = |body: Value, code: &str| {
        d.call(
            "POST",
            "/v1/pki/certificates/validate",
            Some(&d.admin),
            Some(body.to_string().as_bytes()),
        )
        .problem(400, code);
    };
    bad(json!({"certificate_pem": "nope"}), "invalid_certificate");
    bad(
        json!({"certificate_pem": format!("{leaf}{chain}")}),
        "invalid_certificate",
    );
    bad(
        json!({"certificate_pem": leaf, "purpose": "code_signing"}),
        "invalid_purpose",
    );
    bad(
        json!({"certificate_pem": leaf, "ip": "300.1.1.1"}),
        "invalid_ip",
    );
    bad(
        json!({"certificate_pem": leaf, "dns_name": "no spaces allowed"}),
        "invalid_dns_name",
    );
    bad(
        json!({"certificate_pem": leaf, "at_time": "yesterday"}),
        "invalid_time",
    );
    bad(
        json!({"certificate_pem": leaf, "bogus": 1}),
        "unknown_field",
    );
    bad(
        json!({"certificate_pem": leaf, "chain_pem": chain.repeat(33)}),
        "chain_too_long",
    );
    // A chain_pem that holds no certificate, or one that does not decode, is refused: it would
    // otherwise be left out of the search unseen.
    for text in [
        "this is not PEM at all",
        "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
    ] {
        bad(
            json!({"certificate_pem": leaf, "chain_pem": text}),
            "invalid_certificate",
        );
    }
    assert_eq!(
        validate(&d, &json!({"certificate_pem": leaf, "chain_pem": ""}))["valid"],
        true
    );
    // DER in PEM armour that is not a certificate is a verdict, not a 400.
    let v = validate(
        &d,
        &json!({"certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
    );
    assert_eq!(v["valid"], false);
    assert_eq!(codes(&v), vec!["malformed"], "{v}");
}

/// A vendor PKI made with the openssl command line: a root, an intermediate limited to
/// `vendor.example` by name constraints (DNS names and mailboxes), leaves inside and outside, and
/// CRLs.
struct Vendor {
    root: String,
    int: String,
    inside: String,
    outside: String,
    /// DNS name inside, subject `emailAddress` inside and outside the rfc822Name constraint.
    mail_inside: String,
    mail_outside: String,
    /// No SAN: the CN inside and outside the DNS constraint.
    cn_only_inside: String,
    cn_only_outside: String,
}

fn vendor(dir: &Path) -> Vendor {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (rk, rc) = (p("root.key"), p("root.pem"));
    args.extend([
        "-keyout",
        &rk,
        "-out",
        &rc,
        "-days",
        "3650",
        "-subj",
        "/O=Vendor/CN=Vendor Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl_ok(&args);
    let int_ext = write(
        dir,
        "int.ext",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
         nameConstraints=critical,permitted;DNS:vendor.example,permitted;email:vendor.example\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n",
    );
    let sign = |name: &str, subj: &str, ca: &str, ca_key: &str, ext: &str| {
        let (key, csr, crt) = (
            p(&format!("{name}.key")),
            p(&format!("{name}.csr")),
            p(&format!("{name}.pem")),
        );
        let mut a = vec!["req", "-new"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
        openssl_ok(&a);
        openssl_ok(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            ext,
            "-out",
            &crt,
        ]);
        crt
    };
    let int = sign("int", "/O=Vendor/CN=Vendor Devices CA", &rc, &rk, &int_ext);
    let leaf_ext = |name: &str| {
        write(
            dir,
            &format!("{name}.ext"),
            &format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:{name}\n\
                 subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
            ),
        )
    };
    let ik = p("int.key");
    let inside = sign(
        "inside",
        "/CN=device-7.vendor.example",
        &int,
        &ik,
        &leaf_ext("device-7.vendor.example"),
    );
    let outside = sign(
        "outside",
        "/CN=evil.example.org",
        &int,
        &ik,
        &leaf_ext("evil.example.org"),
    );
    let mail_inside = sign(
        "mail-inside",
        "/CN=mail.vendor.example/emailAddress=ops@vendor.example",
        &int,
        &ik,
        &leaf_ext("mail.vendor.example"),
    );
    let mail_outside = sign(
        "mail-outside",
        "/CN=mail.vendor.example/emailAddress=ops@evil.example",
        &int,
        &ik,
        &leaf_ext("mail.vendor.example"),
    );
    // No SAN at all: the CN is the host name OpenSSL checks against the DNS constraints.
    let cn_only_ext = write(
        dir,
        "cn-only.ext",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n",
    );
    let cn_only_inside = sign(
        "cn-only-inside",
        "/CN=legacy.vendor.example",
        &int,
        &ik,
        &cn_only_ext,
    );
    let cn_only_outside = sign("cn-only-outside", "/CN=evil.org", &int, &ik, &cn_only_ext);
    let read = |f: &str| std::fs::read_to_string(f).unwrap();
    Vendor {
        cn_only_inside: read(&cn_only_inside),
        cn_only_outside: read(&cn_only_outside),
        root: read(&rc),
        int: read(&int),
        inside: read(&inside),
        outside: read(&outside),
        mail_inside: read(&mail_inside),
        mail_outside: read(&mail_outside),
    }
}

/// An `openssl ca` setup for `ca_cert`/`ca_key` in `dir/name/`, to revoke and make CRLs.
fn openssl_ca(dir: &Path, name: &str, ca_cert: &str, ca_key: &str) -> String {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("crlnumber"), "01\n").unwrap();
    let cnf = format!(
        "[ca]\ndefault_ca = x\n[x]\ndatabase = {db}\ncrlnumber = {num}\ncertificate = {ca_cert}\n\
         private_key = {ca_key}\ndefault_md = sha256\ndefault_crl_days = 7\ncrl_extensions = ext\n\
         [ext]\nauthorityKeyIdentifier = keyid:always\n",
        db = d.join("index.txt").display(),
        num = d.join("crlnumber").display(),
    );
    write(&d, "ca.cnf", &cnf)
}

#[test]
fn a_vendor_chain_outside_its_name_constraints_fails_once_its_root_is_trusted() {
    let d = Daemon::start();
    let dir = scratch(&d, "vendor");
    let v = vendor(&dir);
    let body =
        |leaf: &str| json!({"certificate_pem": leaf, "chain_pem": v.int, "purpose": "server_auth"});

    // Not trusted yet.
    let r = validate(&d, &body(&v.inside));
    assert_eq!(r["valid"], false);
    assert_eq!(codes(&r), vec!["untrusted"], "{r}");

    let ta = d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "vendor-root", "certificate_pem": v.root}),
    );
    assert_eq!(ta.status, 201, "{}", ta.text());
    let ta = ta.json();
    assert!(ta["id"].as_str().unwrap().starts_with("ta_"), "{ta}");

    let ok = validate(
        &d,
        &json!({"certificate_pem": v.inside, "chain_pem": v.int, "purpose": "server_auth",
                "dns_name": "device-7.vendor.example"}),
    );
    assert_eq!(ok["valid"], true, "{ok}");
    assert_eq!(
        ok["trust_anchor"],
        json!({"kind": "trust_anchor", "id": ta["id"]})
    );
    assert_eq!(ok["chain"].as_array().unwrap().len(), 3);

    let bad = validate(&d, &body(&v.outside));
    assert_eq!(bad["valid"], false, "{bad}");
    assert_eq!(codes(&bad), vec!["name_constraint_violation"], "{bad}");
    // The subject's emailAddress is held to the rfc822Name constraint (RFC 5280 §4.2.1.10; webpki
    // looks at the SAN only), as openssl does.
    let ok = validate(&d, &body(&v.mail_inside));
    assert_eq!(ok["valid"], true, "{ok}");
    let bad = validate(&d, &body(&v.mail_outside));
    assert_eq!(bad["valid"], false, "{bad}");
    assert_eq!(codes(&bad), vec!["name_constraint_violation"], "{bad}");
    assert!(
        bad["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ops@evil.example"),
        "{bad}"
    );
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let judge = |leaf: &str| {
        openssl(&[
            "verify",
            "-CAfile",
            &p("root.pem"),
            "-untrusted",
            &p("int.pem"),
            &p(leaf),
        ])
        .status
        .success()
    };
    assert!(judge("mail-inside.pem") && !judge("mail-outside.pem"));
    // A leaf without SAN: its host-name CN is held to the DNS constraints, as openssl holds it.
    let cn_body = |leaf: &str| json!({"certificate_pem": leaf, "chain_pem": v.int});
    let ok = validate(&d, &cn_body(&v.cn_only_inside));
    assert_eq!(ok["valid"], true, "{ok}");
    let bad = validate(&d, &cn_body(&v.cn_only_outside));
    assert_eq!(codes(&bad), vec!["name_constraint_violation"], "{bad}");
    assert!(bad.to_string().contains("evil.org"), "{bad}");
    assert!(judge("cn-only-inside.pem") && !judge("cn-only-outside.pem"));

    // External revocation: CRLs from the vendor's CAs, made by `openssl ca`.
    let int_cnf = openssl_ca(&dir, "intca", &p("int.pem"), &p("int.key"));
    let root_cnf = openssl_ca(&dir, "rootca", &p("root.pem"), &p("root.key"));
    let crl = |cnf: &str, out: &str| {
        openssl_ok(&["ca", "-config", cnf, "-gencrl", "-out", &p(out)]);
        std::fs::read_to_string(p(out)).unwrap()
    };
    let root_crl = crl(&root_cnf, "root.crl");
    let int_crl = crl(&int_cnf, "int0.crl");
    let stale_int_crl = int_crl.clone();
    let rev = |crls: String| {
        validate(
            &d,
            &json!({"certificate_pem": v.inside, "chain_pem": v.int, "check_revocation": true,
                    "crls_pem": crls}),
        )
    };
    let r = rev(format!("{root_crl}{int_crl}"));
    assert_eq!(r["valid"], true, "{r}");
    // Only the intermediate's CRL: the intermediate's own status is unknown.
    let r = rev(int_crl.clone());
    assert_eq!(r["valid"], false);
    assert_eq!(codes(&r), vec!["revocation_unknown"], "{r}");
    // The leaf revoked on the intermediate's CRL, with its reason.
    openssl_ok(&[
        "ca",
        "-config",
        &int_cnf,
        "-revoke",
        &p("inside.pem"),
        "-crl_reason",
        "keyCompromise",
    ]);
    let int_crl = crl(&int_cnf, "int1.crl");
    let r = rev(format!("{root_crl}{int_crl}"));
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(codes(&r), vec!["revoked"], "{r}");
    assert!(r["trust_anchor"]["id"].is_string(), "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("key_compromise"),
        "{r}"
    );
    // The stale CRL supplied first does not hide the revocation the newer one lists (openssl
    // -crl_check_all says "certificate revoked" in either order too).
    let r = rev(format!("{root_crl}{stale_int_crl}{int_crl}"));
    assert_eq!(codes(&r), vec!["revoked"], "{r}");
    // A CRL issued after the validation time is not relied on ("CRL is not yet valid").
    let future = {
        let in_days = |d: i64| {
            let out = std::process::Command::new("date")
                .args(["-u", "-d", &format!("+{d} days"), "+%y%m%d%H%M%SZ"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        openssl_ok(&[
            "ca",
            "-config",
            &int_cnf,
            "-gencrl",
            "-crl_lastupdate",
            &in_days(3),
            "-crl_nextupdate",
            &in_days(10),
            "-out",
            &p("int-future.crl"),
        ]);
        std::fs::read_to_string(p("int-future.crl")).unwrap()
    };
    let r = rev(format!("{root_crl}{future}"));
    assert_eq!(codes(&r), vec!["revocation_unknown"], "{r}");
    assert!(r.to_string().contains("after the validation time"), "{r}");
    // crls_pem without check_revocation is a mistake.
    d.call(
        "POST",
        "/v1/pki/certificates/validate",
        Some(&d.admin),
        Some(
            json!({"certificate_pem": v.inside, "crls_pem": int_crl})
                .to_string()
                .as_bytes(),
        ),
    )
    .problem(400, "invalid_field");
    // So is text with no CRL in it (it would have read as "no CRLs").
    d.call(
        "POST",
        "/v1/pki/certificates/validate",
        Some(&d.admin),
        Some(
            json!({"certificate_pem": v.inside, "chain_pem": v.int, "check_revocation": true,
                   "crls_pem": "hello"})
            .to_string()
            .as_bytes(),
        ),
    )
    .problem(400, "invalid_crl");
}

#[test]
fn trust_anchor_crud_policies_and_tenant_isolation() {
    let d = Daemon::start();
    let dir = scratch(&d, "vendor");
    let v = vendor(&dir);
    let fp = openssl_ok(&[
        "x509",
        "-in",
        dir.join("root.pem").to_str().unwrap(),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();

    let created = d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "vendor-root", "certificate_pem": v.root}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let ta = created.json();
    let id = ta["id"].as_str().unwrap();
    assert_eq!(ta["name"], "vendor-root");
    assert_eq!(ta["subject"], "CN=Vendor Root,O=Vendor");
    assert_eq!(ta["fingerprint_sha256"], fp);
    assert!(ta["not_after"].as_str().unwrap().ends_with('Z'), "{ta}");

    // Duplicates: the same certificate under another name, another certificate under the name.
    d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "again", "certificate_pem": v.root}),
    )
    .problem(409, "trust_anchor_exists");
    d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "vendor-root", "certificate_pem": v.int}),
    )
    .problem(409, "trust_anchor_name_taken");
    // A leaf is refused with a clear code; junk and two certificates too.
    let p = d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "leaf", "certificate_pem": v.inside}),
    );
    let doc = p.problem(400, "not_a_ca_certificate");
    assert!(doc["detail"].as_str().unwrap().contains("CA"), "{doc}");
    d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "junk", "certificate_pem": "hello"}),
    )
    .problem(400, "invalid_certificate");
    d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "two", "certificate_pem": format!("{}{}", v.root, v.int)}),
    )
    .problem(400, "invalid_certificate");
    d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "", "certificate_pem": v.int}),
    )
    .problem(400, "invalid_name");

    // An intermediate may be an anchor too.
    let int = d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "vendor-devices", "certificate_pem": v.int}),
    );
    assert_eq!(int.status, 201, "{}", int.text());

    // List (paginated) and get.
    let page = d.get("/v1/pki/trust-anchors?limit=1").json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], id);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2 = d
        .get(&format!("/v1/pki/trust-anchors?limit=1&cursor={cursor}"))
        .json();
    assert_eq!(page2["items"][0]["name"], "vendor-devices");
    assert_eq!(page2["next_cursor"], Value::Null);
    let one = d.get(&format!("/v1/pki/trust-anchors/{id}")).json();
    assert_eq!(one["fingerprint_sha256"], fp);

    // Policies: an auditor reads, cannot create or delete; an issuer token cannot read.
    let auditor = token_for(&d, "default", "auditor");
    assert_eq!(
        d.call("GET", "/v1/pki/trust-anchors", Some(&auditor), None)
            .status,
        200
    );
    d.call(
        "POST",
        "/v1/pki/trust-anchors",
        Some(&auditor),
        Some(
            json!({"name": "x", "certificate_pem": v.root})
                .to_string()
                .as_bytes(),
        ),
    )
    .problem(403, "forbidden");
    d.call(
        "DELETE",
        &format!("/v1/pki/trust-anchors/{id}"),
        Some(&auditor),
        None,
    )
    .problem(403, "forbidden");
    let issuer = token_for(&d, "default", "issuer:none");
    d.call("GET", "/v1/pki/trust-anchors", Some(&issuer), None)
        .problem(403, "forbidden");

    // Another tenant sees nothing, and its validations do not use these anchors.
    let other = token_for(&d, "other", "admin");
    d.call(
        "GET",
        &format!("/v1/pki/trust-anchors/{id}"),
        Some(&other),
        None,
    )
    .problem(404, "trust_anchor_not_found");
    d.call(
        "DELETE",
        &format!("/v1/pki/trust-anchors/{id}"),
        Some(&other),
        None,
    )
    .problem(404, "trust_anchor_not_found");
    let list = d
        .call("GET", "/v1/pki/trust-anchors", Some(&other), None)
        .json();
    assert_eq!(list["items"], json!([]));
    let body = json!({"certificate_pem": v.inside, "chain_pem": v.int});
    assert_eq!(validate(&d, &body)["valid"], true);
    let r = validate_as(&d, &other, &body);
    assert_eq!(codes(&r), vec!["untrusted"], "{r}");
    // The same certificate may be an anchor in another tenant.
    let r = d.call(
        "POST",
        "/v1/pki/trust-anchors",
        Some(&other),
        Some(
            json!({"name": "vendor-root", "certificate_pem": v.root})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // Delete: 204, then gone; its validations stop.
    let r = d.call(
        "DELETE",
        &format!("/v1/pki/trust-anchors/{id}"),
        Some(&d.admin),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    d.get(&format!("/v1/pki/trust-anchors/{id}"))
        .problem(404, "trust_anchor_not_found");
    d.call(
        "DELETE",
        &format!("/v1/pki/trust-anchors/{id}"),
        Some(&d.admin),
        None,
    )
    .problem(404, "trust_anchor_not_found");
    // The intermediate anchor still makes the inside leaf valid; removing it ends that.
    let int_id = int.json()["id"].as_str().unwrap().to_owned();
    let r = validate(&d, &body);
    assert_eq!(r["valid"], true, "{r}");
    assert_eq!(r["trust_anchor"]["id"], int_id.as_str());
    d.call(
        "DELETE",
        &format!("/v1/pki/trust-anchors/{int_id}"),
        Some(&d.admin),
        None,
    );
    assert_eq!(codes(&validate(&d, &body)), vec!["untrusted"]);

    // Audited: creations, the deletion, the denials.
    let audit = d.get("/v1/audit?limit=1000").json();
    let actions: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("trust_anchor.create", "success"),
        ("trust_anchor.create", "error:trust_anchor_exists"),
        ("trust_anchor.create", "error:not_a_ca_certificate"),
        ("trust_anchor.create", "denied"),
        ("trust_anchor.delete", "success"),
        ("trust_anchor.delete", "denied"),
    ] {
        assert!(
            actions.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} not in {actions:?}"
        );
    }
}

#[test]
fn a_pathological_chain_answers_quickly_with_a_reason() {
    // 32 self-issued CAs that all share one name and each have their own key: every one of them
    // could issue every other, so a naive path search explores 32^6 candidate paths.
    let d = Daemon::start();
    let dir = scratch(&d, "loop");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let mut chain = String::new();
    for i in 0..32 {
        let (k, c) = (p(&format!("k{i}.pem")), p(&format!("c{i}.pem")));
        openssl_ok(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &k,
            "-out",
            &c,
            "-days",
            "30",
            "-subj",
            "/CN=Pathological CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ]);
        chain.push_str(&std::fs::read_to_string(&c).unwrap());
    }
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("leaf.key"),
        "-out",
        &p("leaf.csr"),
        "-subj",
        "/CN=victim.example",
    ]);
    let leaf_ext = write(&dir, "leaf.ext", "subjectAltName=DNS:victim.example\n");
    openssl_ok(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("c0.pem"),
        "-CAkey",
        &p("k0.pem"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &leaf_ext,
        "-out",
        &p("leaf.pem"),
    ]);
    let leaf = std::fs::read_to_string(p("leaf.pem")).unwrap();
    // Trust one of them, so that some path could in principle end at an anchor.
    let r = d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "loop", "certificate_pem": std::fs::read_to_string(p("c31.pem")).unwrap()}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let t0 = std::time::Instant::now();
    let v = validate(&d, &json!({"certificate_pem": leaf, "chain_pem": chain}));
    let took = t0.elapsed();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(codes(&v), vec!["path_too_complex"], "{v}");
    assert!(
        took < std::time::Duration::from_secs(5),
        "took {took:?}: {v}"
    );
    println!("pathological chain: {took:?}, {}", v["errors"]);
}

/// The deepest hierarchy the API creates is one the validator follows: six intermediates below
/// the root, whose leaves validate (and `openssl verify` agrees); a seventh is refused at
/// creation (`400 hierarchy_too_deep`) instead of issuing leaves ScaiVault would call invalid.
#[test]
fn the_deepest_hierarchy_created_still_validates() {
    let d = Daemon::start();
    let root = d.create_root("root", "ec", Some(256));
    let mut parent = root["id"].as_str().unwrap().to_owned();
    let mut parent_pem = String::new();
    for i in 1..=6 {
        let r = d.post(
            "/v1/pki/ca",
            &json!({"name": format!("deep{i}"), "common_name": format!("Deep {i}"),
                    "ca_type": "intermediate", "parent_ca_id": parent, "validity_days": 1000 - i}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        parent = r.json()["id"].as_str().unwrap().to_owned();
        parent_pem = r.json()["certificate"].as_str().unwrap().to_owned();
    }
    let p = d
        .post(
            "/v1/pki/ca",
            &json!({"name": "deep7", "common_name": "Deep 7", "ca_type": "intermediate",
                    "parent_ca_id": parent, "validity_days": 900}),
        )
        .problem(400, "hierarchy_too_deep");
    assert!(p["detail"].as_str().unwrap().contains(&parent), "{p}");
    // Nor one imported below it (here an offline CA: the depth is checked first).
    d.post(
        "/v1/pki/ca/import",
        &json!({"name": "deep7i", "certificate_pem": parent_pem, "parent_ca_id": parent}),
    )
    .problem(400, "hierarchy_too_deep");
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "deep", "ca_id": parent, "allowed_domains": ["deep.internal"],
                "allow_subdomains": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let issued = d
        .post(
            "/v1/pki/issue/deep",
            &json!({"common_name": "x.deep.internal", "ttl": "1h"}),
        )
        .json();
    let leaf = issued["certificate"].as_str().unwrap();
    let v = validate(
        &d,
        &json!({"certificate_pem": leaf, "dns_name": "x.deep.internal"}),
    );
    assert_eq!(v["valid"], true, "{v}");
    let chain = issued["ca_chain"].as_array().unwrap();
    assert_eq!(chain.len(), 7, "six intermediates and the root");
    let dir = d.dir.path();
    let untrusted: String = chain[..6].iter().map(|c| c.as_str().unwrap()).collect();
    let out = openssl_ok(&[
        "verify",
        "-CAfile",
        &write(dir, "deep-root.pem", chain[6].as_str().unwrap()),
        "-untrusted",
        &write(dir, "deep-chain.pem", &untrusted),
        &write(dir, "deep-leaf.pem", leaf),
    ]);
    assert!(out.contains("OK"), "{out}");
}

/// A sound signature by an RSA-1024 anchor: the verdict blames the key (`unsupported_algorithm`)
/// and does not call the signature bad (webpki reports a key it will not use as a signature
/// that does not verify; `openssl verify` accepts the signature and refuses the key only at
/// `-auth_level 2`).
#[test]
fn a_weak_anchor_key_is_blamed_not_its_signature() {
    let d = Daemon::start();
    let dir = scratch(&d, "weak");
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-keyout",
        &p("weak.key"),
        "-out",
        &p("weak.pem"),
        "-days",
        "365",
        "-subj",
        "/CN=Weak Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("leaf.key"),
        "-out",
        &p("leaf.csr"),
        "-subj",
        "/CN=w.example",
    ]);
    let ext = write(
        &dir,
        "leaf.ext",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:w.example\n",
    );
    openssl_ok(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("weak.pem"),
        "-CAkey",
        &p("weak.key"),
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        &ext,
        "-out",
        &p("leaf.pem"),
    ]);
    // openssl: the signature verifies; the key is too weak at a stricter level.
    let out = openssl(&["verify", "-CAfile", &p("weak.pem"), &p("leaf.pem")]);
    assert!(out.status.success(), "{out:?}");
    let root = std::fs::read_to_string(p("weak.pem")).unwrap();
    let ta = d.post(
        "/v1/pki/trust-anchors",
        &json!({"name": "weak", "certificate_pem": root}),
    );
    assert_eq!(ta.status, 201, "{}", ta.text());
    let leaf = std::fs::read_to_string(p("leaf.pem")).unwrap();
    let v = validate(&d, &json!({"certificate_pem": leaf}));
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(codes(&v), vec!["unsupported_algorithm"], "{v}");
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains("1024"),
        "{v}"
    );
}
