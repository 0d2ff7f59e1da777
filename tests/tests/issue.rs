//! Roles and issuance over HTTP, judged by `openssl`: every key type, chain verification, the
//! leaf profile, an mTLS handshake, refusals, CSR signing, the inventory, policies, and where the
//! private keys (do not) end up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{make_csr, openssl, openssl_ok, write, Daemon};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};

/// `openssl req` key options for an EC P-256 key ([`make_csr`]).
const EC_P256: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// A root, an intermediate under it, and role `name` on the intermediate.
fn hierarchy(d: &Daemon, tag: &str) -> (Value, Value) {
    let root = d.create_root(&format!("{tag}-root"), "ec", Some(256));
    let int = d.post(
        "/v1/pki/ca",
        &json!({"name": format!("{tag}-int"), "common_name": format!("{tag} Intermediate"), "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 1825}),
    );
    assert_eq!(int.status, 201, "{}", int.text());
    (root, int.json())
}

fn role(d: &Daemon, name: &str, ca: &Value, extra: Value) -> Value {
    let mut body = json!({
        "name": name, "ca_id": ca["id"], "allowed_domains": ["*.svc.cluster.local", "*.internal"],
        "allow_subdomains": true, "allow_ip_sans": true, "max_ttl": "720h", "key_type": "ec", "key_bits": 256, "require_cn": true
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = d.post("/v1/pki/roles", &body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// Writes leaf, chain, root and key files; returns their paths.
fn files(dir: &Path, tag: &str, issued: &Value) -> (String, String, String, String) {
    let chain = issued["ca_chain"].as_array().unwrap();
    let leaf = write(
        dir,
        &format!("{tag}.pem"),
        issued["certificate"].as_str().unwrap(),
    );
    let untrusted = write(
        dir,
        &format!("{tag}-chain.pem"),
        &chain[..chain.len() - 1]
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect::<String>(),
    );
    let root = write(
        dir,
        &format!("{tag}-root.pem"),
        chain.last().unwrap().as_str().unwrap(),
    );
    let key = dir.join(format!("{tag}.key")).to_str().unwrap().to_owned();
    if let Some(k) = issued["private_key"].as_str() {
        std::fs::write(&key, k).unwrap();
    }
    (leaf, untrusted, root, key)
}

#[test]
fn issue_for_every_key_type_and_verify_with_openssl() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (root, int) = hierarchy(&d, "kt");
    let cases = [
        ("ec", 256, "-----BEGIN EC PRIVATE KEY-----", "prime256v1"),
        ("ec", 384, "-----BEGIN EC PRIVATE KEY-----", "secp384r1"),
        ("rsa", 2048, "-----BEGIN RSA PRIVATE KEY-----", "(2048 bit)"),
        ("rsa", 3072, "-----BEGIN RSA PRIVATE KEY-----", "(3072 bit)"),
        ("rsa", 4096, "-----BEGIN RSA PRIVATE KEY-----", "(4096 bit)"),
        ("ed25519", 256, "-----BEGIN PRIVATE KEY-----", "ED25519"),
    ];
    for (kt, bits, header, marker) in cases {
        let name = format!("r-{kt}-{bits}");
        role(&d, &name, &int, json!({"key_type": kt, "key_bits": bits}));
        let r = d.post(
            &format!("/v1/pki/issue/{name}"),
            &json!({"common_name": "billing.svc.cluster.local", "alt_names": ["billing-api.svc.cluster.local"], "ip_sans": ["10.0.5.100"], "ttl": "168h"}),
        );
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let issued = r.json();
        // The product page's response shape, plus not_before and issuing_ca_id.
        for f in [
            "certificate",
            "private_key",
            "ca_chain",
            "serial_number",
            "not_after",
            "not_before",
            "issuing_ca_id",
        ] {
            assert!(!issued[f].is_null(), "{name}: {f} missing");
        }
        assert_eq!(issued["issuing_ca_id"], int["id"]);
        assert!(
            issued["private_key"].as_str().unwrap().starts_with(header),
            "{name}"
        );
        let chain = issued["ca_chain"].as_array().unwrap();
        assert_eq!(chain.len(), 2, "issuing CA first, up to the root");
        assert_eq!(chain[0], int["certificate"]);
        assert_eq!(chain[1], root["certificate"]);
        let (leaf, untrusted, root_pem, key) = files(tmp, &name, &issued);
        let out = openssl_ok(&[
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            &root_pem,
            "-untrusted",
            &untrusted,
            &leaf,
        ]);
        assert!(out.trim_end().ends_with(": OK"), "{out}");
        openssl_ok(&[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            &root_pem,
            "-untrusted",
            &untrusted,
            &leaf,
        ]);
        // The private key belongs to the certificate.
        let from_cert = openssl_ok(&["x509", "-in", &leaf, "-noout", "-pubkey"]);
        let from_key = openssl_ok(&["pkey", "-in", &key, "-pubout"]);
        assert_eq!(from_cert, from_key, "{name}");
        let text = openssl_ok(&["x509", "-in", &leaf, "-noout", "-text"]);
        assert!(text.contains(marker), "{name}: {text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
        if kt == "rsa" {
            assert!(
                text.contains("Digital Signature, Key Encipherment"),
                "{text}"
            );
        } else {
            assert!(
                text.contains("Digital Signature") && !text.contains("Key Encipherment"),
                "{text}"
            );
        }
        assert!(
            text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
            "{text}"
        );
        assert!(text.contains("DNS:billing.svc.cluster.local, DNS:billing-api.svc.cluster.local, IP Address:10.0.5.100"), "{text}");
        assert!(
            text.contains("X509v3 Subject Key Identifier")
                && text.contains("X509v3 Authority Key Identifier"),
            "{text}"
        );
        let iid = int["id"].as_str().unwrap();
        assert!(
            text.contains(&format!("{}/v1/pki/ca/{iid}/crl", d.base)),
            "{text}"
        );
        assert!(
            text.contains(&format!("OCSP - URI:{}/v1/pki/ocsp/{iid}", d.base)),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "CA Issuers - URI:{}/v1/pki/ca/{iid}/certificate?format=der",
                d.base
            )),
            "{text}"
        );
        let serial = issued["serial_number"].as_str().unwrap();
        assert_eq!(serial.split(':').count(), 16, "128-bit serials: {serial}");
        let dates = openssl_ok(&["x509", "-in", &leaf, "-noout", "-enddate"]);
        assert!(dates.contains("GMT"));
    }
    // PKCS#8 on request.
    let r = d
        .post(
            "/v1/pki/issue/r-ec-256",
            &json!({"common_name": "p8.svc.cluster.local", "private_key_format": "pkcs8"}),
        )
        .json();
    assert!(r["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let r = d
        .post(
            "/v1/pki/issue/r-rsa-2048",
            &json!({"common_name": "p8.svc.cluster.local", "private_key_format": "pkcs8"}),
        )
        .json();
    assert!(r["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    d.post(
        "/v1/pki/issue/r-ec-256",
        &json!({"common_name": "p8.svc.cluster.local", "private_key_format": "jks"}),
    )
    .problem(400, "invalid_private_key_format");
}

fn s_server(
    dir: &Path,
    port: u16,
    cert: &str,
    key: &str,
    chain: &str,
    trust: &str,
) -> std::process::Child {
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-www",
            "-cert",
            cert,
            "-key",
            key,
            "-cert_chain",
            chain,
            "-CAfile",
            trust,
            "-Verify",
            "3",
            "-verify_return_error",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// Connects with a client certificate and asks for the `-www` status page; returns the page.
fn s_client(port: u16, cert: &str, key: &str, chain: &str, trust: &str) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "billing.svc.cluster.local",
            "-verify_hostname",
            "billing.svc.cluster.local",
            "-cert",
            cert,
            "-key",
            key,
            "-cert_chain",
            chain,
            "-CAfile",
            trust,
            "-verify_return_error",
            "-ign_eof",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text.contains("HTTP/1.0 200 ok"), text)
}

#[test]
fn mtls_between_certificates_of_one_role_and_not_with_another_ca() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d, "m");
    role(&d, "svc-mtls", &int, json!({}));
    let server = d
        .post(
            "/v1/pki/issue/svc-mtls",
            &json!({"common_name": "billing.svc.cluster.local", "ttl": "1h"}),
        )
        .json();
    let client = d
        .post(
            "/v1/pki/issue/svc-mtls",
            &json!({"common_name": "reporting.svc.cluster.local", "ttl": "1h"}),
        )
        .json();
    let (s_cert, s_chain, s_root, s_key) = files(tmp, "server", &server);
    let (c_cert, c_chain, _, c_key) = files(tmp, "client", &client);
    // Another CA of the same daemon: a client certificate from it must be refused.
    let (_, other_int) = hierarchy(&d, "o");
    role(&d, "other", &other_int, json!({}));
    let stranger = d
        .post(
            "/v1/pki/issue/other",
            &json!({"common_name": "reporting.svc.cluster.local", "ttl": "1h"}),
        )
        .json();
    let (x_cert, x_chain, _, x_key) = files(tmp, "stranger", &stranger);

    let port = scaivault_tests::free_port();
    let mut srv = s_server(tmp, port, &s_cert, &s_key, &s_chain, &s_root);
    let (ok, text) = s_client(port, &c_cert, &c_key, &c_chain, &s_root);
    let _ = srv.kill();
    let srv_out = srv.wait_with_output().unwrap();
    assert!(
        ok,
        "mTLS with a certificate of the same role must succeed: {text}\nserver: {}",
        String::from_utf8_lossy(&srv_out.stderr)
    );

    let port = scaivault_tests::free_port();
    let mut srv = s_server(tmp, port, &s_cert, &s_key, &s_chain, &s_root);
    let (ok, text) = s_client(port, &x_cert, &x_key, &x_chain, &s_root);
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(
        !ok,
        "a client certificate from another CA must be refused: {text}"
    );
}

#[test]
fn refusals_name_the_rule_and_the_value() {
    let d = Daemon::start();
    let (root, int) = hierarchy(&d, "rf");
    role(
        &d,
        "svc",
        &int,
        json!({"allowed_uri_sans": ["spiffe://cluster.local/ns/*/sa/*"], "allowed_ip_ranges": ["10.0.0.0/8"]}),
    );
    let issue = |body: Value| d.post("/v1/pki/issue/svc", &body);
    // Several distinct names; only the last is outside the role, and it is the one named.
    let p = issue(json!({"common_name": "a.svc.cluster.local", "alt_names": ["b.svc.cluster.local", "c.b.internal", "evil.example.com"]}))
        .problem(400, "domain_not_allowed");
    assert!(
        p["detail"].as_str().unwrap().contains("evil.example.com"),
        "{p}"
    );
    issue(json!({"common_name": "x.svc.cluster.local", "ip_sans": ["192.168.1.1"]}))
        .problem(400, "ip_not_allowed");
    issue(json!({"common_name": "x.svc.cluster.local", "ip_sans": ["not-an-ip"]}))
        .problem(400, "invalid_ip");
    issue(json!({"common_name": "*.svc.cluster.local"})).problem(400, "wildcard_not_allowed");
    issue(json!({"common_name": "bücher.svc.cluster.local"})).problem(400, "invalid_dns_name");
    issue(json!({"alt_names": ["x.svc.cluster.local"]})).problem(400, "cn_required");
    issue(json!({"common_name": "x.svc.cluster.local", "uri_sans": ["spiffe://cluster.local/ns/a/b/sa/x"]})).problem(400, "uri_not_allowed");
    // No query, fragment or encoded '/', no dot or empty segments: not SPIFFE IDs (and the
    // glob's * stays inside its segment anyway: glob_match_table in scaivault-core).
    for (uri, code) in [
        ("spiffe://cluster.local/ns/x?/sa/y", "invalid_uri"),
        ("spiffe://cluster.local/ns/x#/sa/y", "invalid_uri"),
        ("spiffe://cluster.local/ns/a%2Fb/sa/x", "invalid_uri"),
        ("spiffe://cluster.local/ns//sa/x", "invalid_uri"),
        ("spiffe://cluster.local/ns/a/sa/", "invalid_uri"),
        ("spiffe://cluster.local/ns/../sa/admin", "invalid_uri"),
        ("spiffe://admin@cluster.local/ns/a/sa/b", "invalid_uri"),
    ] {
        issue(json!({"common_name": "x.svc.cluster.local", "uri_sans": [uri]})).problem(400, code);
    }
    let ok = issue(
        json!({"common_name": "x.svc.cluster.local", "uri_sans": ["spiffe://cluster.local/ns/prod/sa/billing"], "ip_sans": ["10.1.2.3"]}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let text = openssl_ok(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        &write(
            d.dir.path(),
            "u.pem",
            ok.json()["certificate"].as_str().unwrap(),
        ),
    ]);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/prod/sa/billing")
            && text.contains("IP Address:10.1.2.3"),
        "{text}"
    );
    // Lifetimes: over the role's max, or past the CA's end, are refused, never shortened.
    issue(json!({"common_name": "x.svc.cluster.local", "ttl": "721h"}))
        .problem(400, "ttl_exceeds_role_max");
    issue(json!({"common_name": "x.svc.cluster.local", "ttl": "soon"}))
        .problem(400, "invalid_duration");
    // Go's grammar: fractions and small units, when the total is whole seconds.
    issue(json!({"common_name": "x.svc.cluster.local", "ttl": "1500ms"}))
        .problem(400, "invalid_duration");
    let frac = issue(json!({"common_name": "x.svc.cluster.local", "ttl": "1.5h"})).json();
    let at = |k: &str| scaivault_core::time_util::parse_rfc3339(frac[k].as_str().unwrap()).unwrap();
    let lifetime = at("not_after") - at("not_before");
    // notBefore is 30 s in the past for clock skew.
    assert!(
        (5400..=5400 + 60).contains(&lifetime.whole_seconds()),
        "{frac}"
    );
    let short = d.post("/v1/pki/ca", &json!({"name": "short", "common_name": "Short", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 1})).json();
    // A role's durations are stored in the form every version reads (1.5h as 90m); the classic
    // forms as given.
    let r = role(
        &d,
        "short",
        &short,
        json!({"max_ttl": "1.5d", "ttl": "1500000ms"}),
    );
    assert_eq!(
        (r["max_ttl"].as_str(), r["ttl"].as_str()),
        (Some("36h"), Some("25m")),
        "{r}"
    );
    let body = json!({"ca_id": short["id"], "allowed_domains": ["*.svc.cluster.local", "*.internal"], "allow_subdomains": true, "allow_ip_sans": true, "max_ttl": "720h", "key_type": "ec", "key_bits": 256, "require_cn": true});
    let again = d.call(
        "PUT",
        "/v1/pki/roles/short",
        Some(&d.admin),
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["max_ttl"], "720h");
    d.post(
        "/v1/pki/issue/short",
        &json!({"common_name": "x.svc.cluster.local", "ttl": "48h"}),
    )
    .problem(400, "ttl_exceeds_ca_validity");
    // Unknown role, bad bodies, bad role settings.
    d.post(
        "/v1/pki/issue/nope",
        &json!({"common_name": "x.svc.cluster.local"}),
    )
    .problem(404, "role_not_found");
    d.post(
        "/v1/pki/issue/svc",
        &json!({"common_name": "x.svc.cluster.local", "key_type": "rsa"}),
    )
    .problem(400, "unknown_field");
    d.post("/v1/pki/roles", &json!({"name": "bad", "ca_id": int["id"], "allowed_domains": ["x"], "key_type": "rsa", "key_bits": 1024})).problem(400, "invalid_key_type");
    d.post(
        "/v1/pki/roles",
        &json!({"name": "bad", "ca_id": "ca_nope", "allowed_domains": ["x"]}),
    )
    .problem(400, "ca_not_found");
    d.post(
        "/v1/pki/roles",
        &json!({"name": "bad", "ca_id": int["id"], "allowed_domains": ["x"], "max_ttl": "forever"}),
    )
    .problem(400, "invalid_duration");
    d.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": int["id"], "allowed_domains": ["x"]}),
    )
    .problem(409, "role_name_taken");
    // A free-text common name alone (allowed by allow_any_name) leaves nothing for the SAN: a
    // clear 400, not a profile violation.
    role(
        &d,
        "any",
        &int,
        json!({"allow_any_name": true, "allowed_domains": []}),
    );
    d.post(
        "/v1/pki/issue/any",
        &json!({"common_name": "Billing Service"}),
    )
    .problem(400, "no_names");
    let ok = d.post(
        "/v1/pki/issue/any",
        &json!({"common_name": "Billing Service", "alt_names": ["billing.example.org"]}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    // A leaf named exactly like its CA would be self-issued (RFC 5280 §6.1): refused.
    let ca_cn = int["common_name"].as_str().unwrap().to_owned();
    let p = d
        .post(
            "/v1/pki/issue/any",
            &json!({"common_name": ca_cn, "alt_names": ["billing.example.org"]}),
        )
        .problem(400, "invalid_subject");
    assert!(p["detail"].as_str().unwrap().contains("issuing CA"), "{p}");
    // A retired CA stops issuing.
    let sid = short["id"].as_str().unwrap();
    assert_eq!(
        d.call("DELETE", &format!("/v1/pki/ca/{sid}"), Some(&d.admin), None)
            .status,
        200
    );
    d.post(
        "/v1/pki/issue/short",
        &json!({"common_name": "x.svc.cluster.local", "ttl": "1h"}),
    )
    .problem(409, "ca_not_active");
}

#[test]
fn roles_crud_and_issuer_policies() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "p");
    role(
        &d,
        "web",
        &int,
        json!({"allowed_domains": ["web.internal"], "allow_subdomains": false, "ttl": "24h"}),
    );
    role(&d, "db", &int, json!({"allowed_domains": ["db.internal"]}));
    let got = d.get("/v1/pki/roles/web").json();
    assert_eq!(got["ttl"], "24h");
    assert_eq!(got["server_flag"], true);
    // What was left unset is shown with the value that applies.
    let plain = d.post(
        "/v1/pki/roles",
        &json!({"name": "plain", "ca_id": int["id"], "allowed_domains": ["p.internal"], "max_ttl": "48h"}),
    );
    assert_eq!(plain.status, 201, "{}", plain.text());
    for shown in [plain.json(), d.get("/v1/pki/roles/plain").json()] {
        assert_eq!(
            (&shown["ttl"], &shown["key_bits"]),
            (&json!(null), &json!(null)),
            "unset stays unset (the defaults apply): {shown}"
        );
    }
    // …and applies: a certificate of the role lives 48h (72h capped by max_ttl).
    let leaf = d.post(
        "/v1/pki/issue/plain",
        &json!({"common_name": "x.p.internal"}),
    );
    assert_eq!(leaf.status, 400, "{}", leaf.text()); // x.p.internal is not p.internal
    let leaf = d.post("/v1/pki/issue/plain", &json!({"common_name": "p.internal"}));
    assert_eq!(leaf.status, 200, "{}", leaf.text());
    let (nb, na) = (
        leaf.json()["not_before"].as_str().unwrap().to_owned(),
        leaf.json()["not_after"].as_str().unwrap().to_owned(),
    );
    let secs = |t: &str| {
        let out = std::process::Command::new("date")
            .args(["-ud", t, "+%s"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let life = secs(&na) - secs(&nb);
    assert!((48 * 3600..=48 * 3600 + 120).contains(&life), "{life} s");
    assert_eq!(
        d.call("DELETE", "/v1/pki/roles/plain", Some(&d.admin), None)
            .status,
        204
    );
    assert_eq!(
        d.get("/v1/pki/roles").json()["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Update: only clientAuth from now on.
    let mut upd = got.clone();
    upd["server_flag"] = json!(false);
    let r = d.call(
        "PUT",
        "/v1/pki/roles/web",
        Some(&d.admin),
        Some(upd.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let cert = d
        .post("/v1/pki/issue/web", &json!({"common_name": "web.internal"}))
        .json();
    let pem = write(
        d.dir.path(),
        "web.pem",
        cert["certificate"].as_str().unwrap(),
    );
    let eku = openssl_ok(&["x509", "-noout", "-ext", "extendedKeyUsage", "-in", &pem]);
    assert!(
        eku.contains("TLS Web Client Authentication") && !eku.contains("Server"),
        "{eku}"
    );
    // The role's default ttl (24h) is used when the request names none.
    let nb = cert["not_before"].as_str().unwrap();
    let na = cert["not_after"].as_str().unwrap();
    assert!(na > nb);
    // Subdomains off: a name below web.internal is refused.
    d.post(
        "/v1/pki/issue/web",
        &json!({"common_name": "a.web.internal"}),
    )
    .problem(400, "domain_not_allowed");

    // issuer:<role> may issue under that role only, and cannot manage roles or read the inventory.
    let t = d
        .post("/v1/auth/tokens", &json!({"policies": ["issuer:web"]}))
        .json();
    let t = t["token"].as_str().unwrap();
    let body = json!({"common_name": "web.internal"}).to_string();
    assert_eq!(
        d.call("POST", "/v1/pki/issue/web", Some(t), Some(body.as_bytes()))
            .status,
        200
    );
    d.call(
        "POST",
        "/v1/pki/issue/db",
        Some(t),
        Some(json!({"common_name": "db.internal"}).to_string().as_bytes()),
    )
    .problem(403, "forbidden");
    d.call(
        "POST",
        "/v1/pki/roles",
        Some(t),
        Some(
            json!({"name": "x", "ca_id": int["id"], "allowed_domains": ["x"]})
                .to_string()
                .as_bytes(),
        ),
    )
    .problem(403, "forbidden");
    d.call("GET", "/v1/pki/certificates", Some(t), None)
        .problem(403, "forbidden");
    // Another tenant sees none of it.
    let out = d.cli(&["tenant", "create", "b"]);
    assert!(out.status.success());
    let b = String::from_utf8(
        d.cli(&["token", "create", "--tenant", "b", "--policy", "admin"])
            .stdout,
    )
    .unwrap();
    d.call("GET", "/v1/pki/roles/web", Some(b.trim()), None)
        .problem(404, "role_not_found");
    d.call(
        "POST",
        "/v1/pki/issue/web",
        Some(b.trim()),
        Some(body.as_bytes()),
    )
    .problem(404, "role_not_found");
    let serial = cert["serial_number"].as_str().unwrap();
    d.call(
        "GET",
        &format!("/v1/pki/certificates/{serial}"),
        Some(b.trim()),
        None,
    )
    .problem(404, "certificate_not_found");
    // Delete.
    assert_eq!(
        d.call("DELETE", "/v1/pki/roles/db", Some(&d.admin), None)
            .status,
        204
    );
    d.get("/v1/pki/roles/db").problem(404, "role_not_found");
}

#[test]
fn sign_a_csr_under_a_role() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d, "s");
    role(&d, "dev", &int, json!({}));
    let key = tmp.join("dev.key").to_str().unwrap().to_owned();
    let csr = tmp.join("dev.csr").to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=device.svc.cluster.local",
        "-addext",
        "subjectAltName=DNS:device.svc.cluster.local,DNS:alt.internal,IP:10.9.9.9",
    ]);
    let csr_pem = std::fs::read_to_string(&csr).unwrap();
    let r = d.post(
        "/v1/pki/sign/dev",
        &json!({"csr_pem": csr_pem, "ttl": "24h"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let signed = r.json();
    assert!(signed["private_key"].is_null(), "sign never returns a key");
    let (leaf, untrusted, root, _) = files(tmp, "dev", &signed);
    openssl_ok(&["verify", "-CAfile", &root, "-untrusted", &untrusted, &leaf]);
    assert_eq!(
        openssl_ok(&["x509", "-in", &leaf, "-noout", "-pubkey"]),
        openssl_ok(&["pkey", "-in", &key, "-pubout"])
    );
    let san = openssl_ok(&["x509", "-noout", "-ext", "subjectAltName", "-in", &leaf]);
    assert!(
        san.contains("DNS:device.svc.cluster.local, DNS:alt.internal, IP Address:10.9.9.9"),
        "{san}"
    );

    // A CSR asking for a name outside the role.
    let csr2 = tmp.join("bad.csr").to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-new",
        "-key",
        &key,
        "-out",
        &csr2,
        "-subj",
        "/CN=device.svc.cluster.local",
        "-addext",
        "subjectAltName=DNS:www.example.com",
    ]);
    d.post(
        "/v1/pki/sign/dev",
        &json!({"csr_pem": std::fs::read_to_string(&csr2).unwrap()}),
    )
    .problem(400, "domain_not_allowed");
    // A key the role does not accept.
    let rsa_csr = tmp.join("rsa.csr").to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &tmp.join("rsa.key").to_string_lossy(),
        "-out",
        &rsa_csr,
        "-subj",
        "/CN=device.svc.cluster.local",
    ]);
    d.post(
        "/v1/pki/sign/dev",
        &json!({"csr_pem": std::fs::read_to_string(&rsa_csr).unwrap()}),
    )
    .problem(400, "key_not_allowed");
    // Two common names: only one could be read, so the CSR is refused whatever their order
    // (the other one was dropped unchecked).
    for (n, subj) in [
        "/CN=device.svc.cluster.local/CN=evil.com",
        "/CN=evil.com/CN=device.svc.cluster.local",
    ]
    .into_iter()
    .enumerate()
    {
        let (two, _) = make_csr(tmp, &format!("two{n}"), EC_P256, subj, None);
        let p = d
            .post("/v1/pki/sign/dev", &json!({"csr_pem": two}))
            .problem(400, "invalid_csr");
        assert!(
            p["detail"].as_str().unwrap().contains("2 common names"),
            "{p}"
        );
    }
    // A name type no certificate here carries is named plainly (it was a Rust debug dump).
    for (n, (san, shown)) in [
        ("RID:1.2.3.4", "registeredID (1.2.3.4)"),
        (
            "otherName:1.3.6.1.4.1.311.20.2.3;UTF8:u@example.com",
            "otherName (1.3.6.1.4.1.311.20.2.3)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let subj = "/CN=device.svc.cluster.local";
        let (odd, _) = make_csr(tmp, &format!("odd{n}"), EC_P256, subj, Some(san));
        let p = d
            .post("/v1/pki/sign/dev", &json!({"csr_pem": odd}))
            .problem(400, "invalid_csr");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(shown) && !detail.contains("SetOfVec"),
            "{p}"
        );
    }
    // A CSR whose signature was damaged (one bit of the signature flipped).
    let der_path = tmp.join("dev.der");
    let out = openssl(&[
        "req",
        "-in",
        &csr,
        "-outform",
        "DER",
        "-out",
        der_path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let mut der = std::fs::read(&der_path).unwrap();
    let last = der.len() - 5;
    der[last] ^= 0x01;
    let b64 = {
        let p = tmp.join("flipped.der");
        std::fs::write(&p, &der).unwrap();
        openssl_ok(&[
            "req",
            "-inform",
            "DER",
            "-in",
            p.to_str().unwrap(),
            "-outform",
            "PEM",
        ])
    };
    let p = d
        .post("/v1/pki/sign/dev", &json!({"csr_pem": b64}))
        .problem(400, "invalid_csr");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("signature") && detail.matches("does not verify").count() == 1,
        "{p}"
    );
    d.post("/v1/pki/sign/dev", &json!({"csr_pem": "garbage"}))
        .problem(400, "invalid_csr");
    d.post(
        "/v1/pki/sign/dev",
        &json!({"csr_pem": signed["certificate"]}),
    )
    .problem(400, "invalid_csr");
}

#[test]
fn inventory_and_private_key_storage() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "inv");
    role(&d, "plain", &int, json!({}));
    role(&d, "kept", &int, json!({"store_private_key": true}));
    let plain = d
        .post(
            "/v1/pki/issue/plain",
            &json!({"common_name": "plain.svc.cluster.local", "ttl": "2h"}),
        )
        .json();
    let kept = d
        .post(
            "/v1/pki/issue/kept",
            &json!({"common_name": "kept.svc.cluster.local", "ttl": "700h"}),
        )
        .json();
    let serial = plain["serial_number"].as_str().unwrap();

    // Inventory: filters and lookups in any serial spelling.
    let all = d.get("/v1/pki/certificates?role=plain").json();
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["serial_number"], serial);
    assert_eq!(items[0]["status"], "valid");
    assert_eq!(items[0]["common_name"], "plain.svc.cluster.local");
    assert_eq!(items[0]["sans"], json!(["plain.svc.cluster.local"]));
    assert_eq!(items[0]["certificate"], plain["certificate"]);
    let by_ca = d
        .get(&format!(
            "/v1/pki/certificates?ca_id={}&limit=1",
            int["id"].as_str().unwrap()
        ))
        .json();
    assert_eq!(by_ca["items"].as_array().unwrap().len(), 1);
    assert!(by_ca["next_cursor"].is_string());
    let soon = d.get("/v1/pki/certificates?expiring_within=24h").json();
    assert_eq!(soon["items"].as_array().unwrap().len(), 1, "{soon}");
    assert_eq!(soon["items"][0]["serial_number"], serial);
    let lower = serial.replace(':', "").to_lowercase();
    let one = d.get(&format!("/v1/pki/certificates/{lower}"));
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["serial_number"], serial);
    d.get("/v1/pki/certificates/00:11")
        .problem(404, "certificate_not_found");
    d.get("/v1/pki/certificates/xyz")
        .problem(400, "invalid_serial");
    for odd in ["01::A2", "1:A2", "01:A2:"] {
        d.get(&format!("/v1/pki/certificates/{odd}"))
            .problem(400, "invalid_serial");
    }
    d.get("/v1/pki/certificates?status=odd")
        .problem(400, "invalid_status");

    // Keys: absent from the database without the opt-in, recoverable (by an admin) with it.
    d.get(&format!("/v1/pki/certificates/{serial}/private-key"))
        .problem(404, "private_key_not_stored");
    let ks = kept["serial_number"].as_str().unwrap();
    let back = d.get(&format!("/v1/pki/certificates/{ks}/private-key"));
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(back.json()["private_key"], kept["private_key"]);
    let auditor = d
        .post(
            "/v1/auth/tokens",
            &json!({"policies": ["auditor", "ca-admin"]}),
        )
        .json();
    d.call(
        "GET",
        &format!("/v1/pki/certificates/{ks}/private-key"),
        auditor["token"].as_str(),
        None,
    )
    .problem(403, "forbidden");
    let audit = d.get("/v1/audit?limit=1000").json();
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "certificate.read_private_key" && r["outcome"] == "success"));

    // Neither private key's bytes appear in the database files (the kept one is sealed).
    let db_bytes = d.database_bytes();
    for issued in [&plain, &kept] {
        let pem_text = issued["private_key"].as_str().unwrap();
        let key_path = write(d.dir.path(), "k.pem", pem_text);
        let der_path = d.dir.path().join("k.der");
        openssl_ok(&[
            "pkey",
            "-in",
            &key_path,
            "-outform",
            "DER",
            "-out",
            der_path.to_str().unwrap(),
        ]);
        let raw = openssl_ok(&["pkey", "-in", &key_path, "-noout", "-text"]);
        let der = std::fs::read(&der_path).unwrap();
        let body: String = pem_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(
            !contains(&db_bytes, body.as_bytes()),
            "PEM body of a private key found in the database"
        );
        assert!(
            !contains(&db_bytes, &der),
            "DER of a private key found in the database"
        );
        // The 32-byte scalar itself, from openssl's text dump.
        let hex: String = raw
            .split("priv:")
            .nth(1)
            .unwrap()
            .split("pub:")
            .next()
            .unwrap()
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        let scalar: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(scalar.len() >= 32);
        assert!(
            !contains(&db_bytes, &scalar[scalar.len() - 32..]),
            "private scalar found in the database"
        );
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The issuance path keeps tokens and roles in memory (`issuecache`); every change made before a
/// request's serial reservation — through the API, the CLI, or straight into the database file —
/// is honoured exactly as without the cache, and refused requests leave nothing behind.
#[test]
fn issuance_follows_token_role_and_ca_changes_at_once() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "chg");
    role(
        &d,
        "chg",
        &int,
        json!({"allowed_domains": ["a.internal", "b.internal"], "allow_subdomains": false}),
    );
    let token = |name: &str| {
        let r = d.post(
            "/v1/auth/tokens",
            &json!({"policies": ["issuer:chg"], "name": name}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let v = r.json();
        (
            v["token"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        )
    };
    let issue = |t: &str, cn: &str| {
        d.call(
            "POST",
            "/v1/pki/issue/chg",
            Some(t),
            Some(json!({ "common_name": cn }).to_string().as_bytes()),
        )
    };
    let ok = |t: &str, cn: &str| {
        let r = issue(t, cn);
        assert_eq!(r.status, 200, "{cn}: {}", r.text());
    };
    let (t1, _) = token("api-revoked");
    let (t2, id2) = token("cli-revoked");
    let (t3, _) = token("stays");
    let mut issued = 0;
    for t in [&t1, &t2, &t3] {
        ok(t, "a.internal"); // each token and the role now cached
        issued += 1;
    }

    // Through the API: a revoked token, a role that no longer allows a.internal.
    let t1_id = d.get("/v1/auth/tokens").json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "api-revoked")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = d.call(
        "DELETE",
        &format!("/v1/auth/tokens/{t1_id}"),
        Some(&d.admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    issue(&t1, "a.internal").problem(401, "unauthorized");
    let mut upd = d.get("/v1/pki/roles/chg").json();
    upd["allowed_domains"] = json!(["b.internal"]);
    let r = d.call(
        "PUT",
        "/v1/pki/roles/chg",
        Some(&d.admin),
        Some(upd.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    issue(&t3, "a.internal").problem(400, "domain_not_allowed");
    ok(&t3, "b.internal");
    issued += 1;

    // From outside the daemon: the CLI revokes a cached token.
    ok(&t2, "b.internal");
    issued += 1;
    let out = d.cli(&["token", "revoke", &id2]);
    assert!(out.status.success(), "{out:?}");
    let p = issue(&t2, "b.internal").problem(401, "unauthorized");
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");

    let db = d.data().join("scaivault.db");
    if db.exists() {
        // Straight into the file (SQLite; with PostgreSQL the cache is off): the role allows
        // a.internal again, then its CA is retired.
        ok(&t3, "b.internal");
        issued += 1;
        scaivault_tests::sqlite(
            &db,
            "PRAGMA busy_timeout = 5000; UPDATE roles SET config = replace(config, '\"b.internal\"', '\"a.internal\"') WHERE name = 'chg'",
        );
        issue(&t3, "b.internal").problem(400, "domain_not_allowed");
        ok(&t3, "a.internal");
        issued += 1;
        scaivault_tests::sqlite(
            &db,
            &format!(
                "PRAGMA busy_timeout = 5000; UPDATE cas SET status = 'retired' WHERE id = '{}'",
                int["id"].as_str().unwrap()
            ),
        );
        issue(&t3, "a.internal").problem(409, "ca_not_active");
    }

    // Exactly the successful requests left certificates; no reservation is left over.
    assert_all_valid(&d, &int, issued);
}

/// A process that opened the database file before the daemon started is not seen by its watch
/// (`issuecache::DbWatch`), so the daemon signs on its cached basis when such a process revokes the
/// token; the certificate's commit checks the basis again under the write lock, stores the
/// certificate revoked and never returns it, and the request is retried from the database and
/// refused. (Changes by processes that open the file afterwards — the CLI, `sqlite3` — stop the
/// issuance before the token signs: `issuance_follows_token_role_and_ca_changes_at_once`.)
#[test]
fn a_change_the_daemon_cannot_see_revokes_what_was_signed_on_it() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "unseen");
    role(&d, "unseen", &int, json!({}));
    let r = d.post(
        "/v1/auth/tokens",
        &json!({"policies": ["issuer:unseen"], "name": "held"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let (token, token_id) = {
        let v = r.json();
        (
            v["token"].as_str().unwrap().to_owned(),
            v["id"].as_str().unwrap().to_owned(),
        )
    };
    let db = d.data().join("scaivault.db");
    if !db.exists() {
        return; // PostgreSQL: no cache, the reservation checks the basis before signing
    }
    // Opened (and read) while the daemon is down, so that its watch never sees this handle.
    let d = {
        let mut d = d;
        d.stop();
        d
    };
    let held = rusqlite::Connection::open(&db).unwrap();
    held.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let n: i64 = held
        .query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
        .unwrap();
    assert!(n >= 2);
    let d = d.restart_with(|c| c);
    let issue = |cn: &str| {
        d.call(
            "POST",
            "/v1/pki/issue/unseen",
            Some(&token),
            Some(json!({ "common_name": cn }).to_string().as_bytes()),
        )
    };
    let r = issue("a.internal");
    assert_eq!(r.status, 200, "{}", r.text()); // token and role now cached
    wait_metric(&d, "scaivault_ocsp_cache_entries", 1.0, 30); // its OCSP answer pre-signed
    let signs = d.metric("scaivault_hsm_sign_calls_total");
    held.execute(
        "UPDATE tokens SET revoked_at = '2026-01-01T00:00:00Z' WHERE id = ?1",
        [&token_id],
    )
    .unwrap();
    let p = issue("b.internal").problem(401, "unauthorized");
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    assert_eq!(
        d.metric("scaivault_hsm_sign_calls_total"),
        signs + 1.0,
        "signed once on the cached basis"
    );
    let inv = d
        .get(&format!(
            "/v1/pki/certificates?ca_id={}",
            int["id"].as_str().unwrap()
        ))
        .json();
    let items = inv["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{inv}");
    let voided: Vec<_> = items.iter().filter(|c| c["status"] == "revoked").collect();
    assert_eq!(voided.len(), 1, "{inv}");
    assert_eq!(voided[0]["common_name"], "b.internal", "{inv}");
    assert_eq!(
        voided[0]["revocation_reason"], "cessation_of_operation",
        "{inv}"
    );
    let audit = d.get("/v1/audit?limit=1000").json();
    let outcomes: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "certificate.issue")
        .map(|a| a["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        outcomes.iter().any(|o| o == "error:issue_basis_changed"),
        "{outcomes:?}"
    );
    let out = d.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
}

/// The CA's inventory holds exactly `n` certificates, all valid (no reservation left over).
fn assert_all_valid(d: &Daemon, ca: &Value, n: usize) {
    let inv = d
        .get(&format!(
            "/v1/pki/certificates?ca_id={}",
            ca["id"].as_str().unwrap()
        ))
        .json();
    let items = inv["items"].as_array().unwrap();
    assert_eq!(items.len(), n, "{inv}");
    assert!(items.iter().all(|c| c["status"] == "valid"), "{inv}");
}

/// Polls `GET /metrics` until `name` reaches `want` (panics after `secs`).
fn wait_metric(d: &Daemon, name: &str, want: f64, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let v = d.metric(name);
        if v >= want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {v} (want {want}) for {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn rsa_key_pool_fills_for_rsa_roles_and_again_after_a_restart() {
    let d = Daemon::start_with_config("[limits]\nrsa_key_pool = 3\n");
    let (_, int) = hierarchy(&d, "pool");
    // No RSA role yet: the pool makes nothing.
    role(&d, "pool-ec", &int, json!({}));
    assert_eq!(d.metric("scaivault_rsa_key_pool_target"), 0.0);
    assert_eq!(d.metric("scaivault_rsa_key_pool_ready"), 0.0);

    role(
        &d,
        "pool-rsa",
        &int,
        json!({"key_type": "rsa", "key_bits": 2048}),
    );
    assert_eq!(d.metric("scaivault_rsa_key_pool_target"), 3.0);
    wait_metric(&d, "scaivault_rsa_key_pool_ready", 3.0, 120);
    assert_eq!(
        d.metric("scaivault_rsa_key_pool_ready"),
        3.0,
        "never above the target"
    );

    // An issuance takes a ready key (the pool drops by one until the filler replaces it), and the
    // key is a fresh RSA-2048 key matching the certificate.
    let r = d.post(
        "/v1/pki/issue/pool-rsa",
        &json!({"common_name": "a.svc.cluster.local"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let issued = r.json();
    let dir = tempfile::tempdir().unwrap();
    let (leaf, untrusted, root, key) = files(dir.path(), "pool", &issued);
    openssl_ok(&["verify", "-CAfile", &root, "-untrusted", &untrusted, &leaf]);
    let text = openssl_ok(&["rsa", "-in", &key, "-noout", "-text"]);
    assert!(text.contains("Private-Key: (2048 bit"), "{text}");
    let from_key = openssl_ok(&["rsa", "-in", &key, "-pubout"]);
    let from_cert = openssl_ok(&["x509", "-in", &leaf, "-noout", "-pubkey"]);
    assert_eq!(from_key, from_cert);

    // After a restart the pool is empty, and fills for the stored RSA role with no role change.
    let d = d.restart_with(|t| t);
    assert_eq!(d.metric("scaivault_rsa_key_pool_target"), 3.0);
    wait_metric(&d, "scaivault_rsa_key_pool_ready", 3.0, 120);
}

#[test]
fn metrics_time_the_steps_of_each_issuance() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "stages");
    role(&d, "stages", &int, json!({}));
    let sample = |what: &str, stage: &str| {
        d.metric(&format!(
            "scaivault_issue_stage_seconds_{what}{{stage=\"{stage}\"}}"
        ))
    };
    for stage in ["reserve", "sign", "store"] {
        assert_eq!(sample("count", stage), 0.0, "{stage}");
    }
    for cn in ["a.svc.cluster.local", "b.svc.cluster.local"] {
        let r = d.post("/v1/pki/issue/stages", &json!({"common_name": cn}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A refused request reaches none of the steps.
    d.post(
        "/v1/pki/issue/stages",
        &json!({"common_name": "evil.example.com"}),
    )
    .problem(400, "domain_not_allowed");
    for stage in ["reserve", "sign", "store"] {
        assert_eq!(sample("count", stage), 2.0, "{stage}");
        assert!(sample("sum", stage) > 0.0, "{stage}");
        assert_eq!(
            d.metric(&format!(
                "scaivault_issue_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}"
            )),
            2.0,
            "{stage}"
        );
    }
}

/// With `[hsm] call_timeout = "0s"` the steps run one after the other from the request's task
/// (signing inline once the token has proved fast) instead of being chained between threads.
#[test]
fn issuance_without_a_call_timeout_takes_the_stepwise_path() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "steps");
    role(&d, "steps", &int, json!({}));
    let d = d.restart_with(|t| {
        assert!(t.contains("[hsm]\n"), "{t}");
        t.replacen("[hsm]\n", "[hsm]\ncall_timeout = \"0s\"\n", 1)
    });
    let dir = tempfile::tempdir().unwrap();
    // The first calls measure the token on the blocking pool; later ones sign inline.
    for i in 0..12 {
        let r = d.post(
            "/v1/pki/issue/steps",
            &json!({"common_name": format!("s{i}.svc.cluster.local")}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let issued = r.json();
        let (leaf, untrusted, root_file, _) = files(dir.path(), &format!("s{i}"), &issued);
        openssl_ok(&[
            "verify",
            "-CAfile",
            &root_file,
            "-untrusted",
            &untrusted,
            &leaf,
        ]);
    }
    for stage in ["reserve", "sign", "store"] {
        assert_eq!(
            d.metric(&format!(
                "scaivault_issue_stage_seconds_count{{stage=\"{stage}\"}}"
            )),
            12.0,
            "{stage}"
        );
    }
    assert_all_valid(&d, &int, 12);
}

/// Threads of the daemon named `name` (`/proc/PID/task/*/comm`).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[test]
fn concurrent_issuances_share_the_configured_signer_threads() {
    let d = Daemon::start().restart_with(|t| t.replacen("[hsm]\n", "[hsm]\nsign_threads = 2\n", 1));
    let (root, int) = hierarchy(&d, "thr");
    role(&d, "thr", &int, json!({}));
    // Sixteen issuances at once, twice: every one signed and verified, on at most two signer
    // threads (one blocking-pool thread per issuance before).
    let mut serials = std::collections::BTreeSet::new();
    for round in 0..2 {
        let replies: Vec<Value> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..16)
                .map(|i| {
                    let d = &d;
                    s.spawn(move || {
                        let r = d.post(
                            "/v1/pki/issue/thr",
                            &json!({"common_name": format!("r{round}-{i}.svc.cluster.local")}),
                        );
                        assert_eq!(r.status, 200, "{}", r.text());
                        r.json()
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for v in &replies {
            assert_eq!(v["issuing_ca_id"], int["id"]);
            assert!(serials.insert(v["serial_number"].as_str().unwrap().to_owned()));
        }
        let signers = threads_named(d.pid(), "signer");
        assert!(
            (1..=2).contains(&signers),
            "{signers} signer threads for 16 concurrent issuances"
        );
    }
    assert_eq!(serials.len(), 32);
    // The last one verifies against the root with the chain it came with.
    let dir = tempfile::tempdir().unwrap();
    let last = d.post(
        "/v1/pki/issue/thr",
        &json!({"common_name": "last.svc.cluster.local"}),
    );
    assert_eq!(last.status, 200, "{}", last.text());
    let (leaf, untrusted, _, _) = files(dir.path(), "last", &last.json());
    let root_pem = write(
        dir.path(),
        "root.pem",
        root["certificate"].as_str().unwrap(),
    );
    openssl_ok(&[
        "verify",
        "-CAfile",
        &root_pem,
        "-untrusted",
        &untrusted,
        &leaf,
    ]);
}

#[test]
fn an_issuance_writes_one_audit_record() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "one");
    role(&d, "one", &int, json!({}));
    let ok = d.post(
        "/v1/pki/issue/one",
        &json!({"common_name": "a.svc.cluster.local"}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let serial = ok.json()["serial_number"]
        .as_str()
        .unwrap()
        .replace(':', "")
        .to_uppercase();
    // A refused one (a TTL over the role's max) is audited once too.
    d.post(
        "/v1/pki/issue/one",
        &json!({"common_name": "b.svc.cluster.local", "ttl": "9999h"}),
    )
    .problem(400, "ttl_exceeds_role_max");
    let audit = d.get("/v1/audit?limit=1000").json();
    let issues: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "certificate.issue")
        .map(|a| {
            (
                a["object_id"].as_str().unwrap_or("").to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let object = format!("{}:{serial}", int["id"].as_str().unwrap());
    assert_eq!(
        issues
            .iter()
            .filter(|(o, _)| *o == object)
            .collect::<Vec<_>>(),
        vec![&(object.clone(), "success".to_owned())],
        "{issues:?}"
    );
    assert!(
        !issues.iter().any(|(_, outcome)| outcome == "started"),
        "{issues:?}"
    );
    assert_eq!(
        issues
            .iter()
            .filter(|(_, outcome)| outcome == "error:ttl_exceeds_role_max")
            .count(),
        1,
        "{issues:?}"
    );
    let out = d.cli(&["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
}

/// Names that make a poor or impossible CN: a leaf whose names are only URIs (SPIFFE), or only a
/// DNS name longer than a CN may be, has no CN and a critical SAN (RFC 5280 §4.2.1.6); an IP
/// address may be the CN when the role allows IP SANs (it is repeated in the SAN); and a leaf
/// never starts before the CA that signs it, even one issued within seconds of the CA.
#[test]
fn subjects_without_a_usable_cn_ip_common_names_and_the_start_of_validity() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d, "subj");
    role(
        &d,
        "spiffe",
        &int,
        json!({"allowed_uri_sans": ["spiffe://cluster.local/ns/*/sa/*"], "require_cn": false}),
    );
    // The subject (RFC 2253 form, "subject=" when empty) and the text of a verified leaf.
    let text_of = |tag: &str, issued: &Value| {
        let (leaf, untrusted, root, _) = files(tmp, tag, issued);
        openssl_ok(&["verify", "-CAfile", &root, "-untrusted", &untrusted, &leaf]);
        let subject = openssl_ok(&[
            "x509", "-in", &leaf, "-noout", "-subject", "-nameopt", "RFC2253",
        ]);
        (
            subject.trim().to_owned(),
            openssl_ok(&["x509", "-in", &leaf, "-noout", "-text"]),
        )
    };

    // URI only (issue): no CN, the SAN critical.
    let r = d.post(
        "/v1/pki/issue/spiffe",
        &json!({"uri_sans": ["spiffe://cluster.local/ns/default/sa/web"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let issued = r.json();
    let (subject, text) = text_of("uri", &issued);
    assert_eq!(subject, "subject=", "an empty subject: {text}");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/default/sa/web"),
        "{text}"
    );

    // The same through /sign, from a CSR whose only name is the URI.
    let (csr_pem, _) = make_csr(
        tmp,
        "uri",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/O=Workload",
        Some("URI:spiffe://cluster.local/ns/default/sa/api"),
    );
    let r = d.post(
        "/v1/pki/sign/spiffe",
        &json!({"csr_pem": csr_pem, "ttl": "1h"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (subject, text) = text_of("uri-csr", &r.json());
    assert_eq!(subject, "subject=", "{text}");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );

    // Only a DNS name longer than 64 characters, no CN requested: no CN either.
    role(&d, "long", &int, json!({"require_cn": false}));
    let long = format!("{}.svc.cluster.local", "a".repeat(50));
    assert!(long.len() > 64);
    let r = d.post("/v1/pki/issue/long", &json!({"alt_names": [long]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let (subject, text) = text_of("long", &r.json());
    assert_eq!(subject, "subject=", "{text}");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert!(text.contains(&format!("DNS:{long}")), "{text}");
    // A shorter DNS name among them becomes the CN, and the SAN stays non-critical.
    let r = d.post(
        "/v1/pki/issue/long",
        &json!({"alt_names": [long, "short.svc.cluster.local"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (subject, text) = text_of("long2", &r.json());
    assert_eq!(subject, "subject=CN=short.svc.cluster.local", "{text}");
    assert!(
        text.contains("X509v3 Subject Alternative Name: \n"),
        "{text}"
    );

    // An IP address as the CN under a role that allows IP SANs (require_cn on).
    role(&d, "ip", &int, json!({"allowed_ip_ranges": ["10.0.0.0/8"]}));
    let r = d.post("/v1/pki/issue/ip", &json!({"common_name": "10.1.2.3"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let (subject, text) = text_of("ip", &r.json());
    assert_eq!(subject, "subject=CN=10.1.2.3", "{text}");
    assert!(text.contains("IP Address:10.1.2.3"), "{text}");
    d.post("/v1/pki/issue/ip", &json!({"common_name": "192.168.1.1"}))
        .problem(400, "ip_not_allowed");

    // Every leaf above was issued within seconds of its CA: none starts before it.
    let ca = d.get(&format!("/v1/pki/ca/{}", int["id"].as_str().unwrap()));
    let ca_start = ca.json()["not_before"].as_str().unwrap().to_owned();
    let listed = d.get(&format!(
        "/v1/pki/certificates?ca_id={}",
        int["id"].as_str().unwrap()
    ));
    let items = listed.json()["items"].as_array().unwrap().clone();
    assert!(items.len() >= 5, "{items:?}");
    for c in items {
        let start = c["not_before"].as_str().unwrap();
        assert!(
            start >= ca_start.as_str(),
            "leaf starts {start}, before its CA ({ca_start})"
        );
    }
}

/// A role setting that would have to be cut on every issuance, or that can never match a name,
/// is refused when the role is written; so is an A-label that is not valid IDNA.
#[test]
fn role_settings_that_cannot_work_and_invalid_a_labels_are_refused() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "rv");
    let create = |extra: Value| {
        let mut body = json!({"name": "rv", "ca_id": int["id"], "allowed_domains": ["x.example"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        d.post("/v1/pki/roles", &body)
    };
    let p = create(json!({"max_ttl": "1h", "ttl": "2h"})).problem(400, "ttl_exceeds_role_max");
    assert!(p["detail"].as_str().unwrap().contains("2h"), "{p}");
    // The default max_ttl is 720h.
    create(json!({"ttl": "1000h"})).problem(400, "ttl_exceeds_role_max");
    // `.` and `..` are not names a URL can carry.
    for name in [".", "..", ""] {
        create(json!({"name": name})).problem(400, "invalid_name");
    }
    // No name at all: the required field is missing.
    let p = d
        .post(
            "/v1/pki/roles",
            &json!({"ca_id": int["id"], "allowed_domains": ["x.example"]}),
        )
        .problem(400, "missing_field");
    assert!(p["detail"].as_str().unwrap().contains("name"), "{p}");
    // As any body that does not decode: refused before the policy check (a token without the
    // role-writing policy hears the same) and not audited.
    let auditor = d
        .post("/v1/auth/tokens", &json!({"policies": ["auditor"]}))
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"ca_id": int["id"], "allowed_domains": ["x.example"]}).to_string();
    d.call(
        "POST",
        "/v1/pki/roles",
        Some(&auditor),
        Some(body.as_bytes()),
    )
    .problem(400, "missing_field");
    let audit = d.get("/v1/audit?limit=1000").json();
    assert!(
        !audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "role.create" && r["outcome"] == "error:missing_field"),
        "{audit}"
    );
    // PUT may leave it out (the path names the role).
    assert_eq!(create(json!({"name": "rvput"})).status, 201);
    let r = d.call(
        "PUT",
        "/v1/pki/roles/rvput",
        Some(&d.admin),
        Some(
            json!({"ca_id": int["id"], "allowed_domains": ["y.example"]})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "rvput");
    for bad in [
        "a..com",
        "*",
        "*.",
        ".x.y",
        "a.*.y",
        "*x.y",
        "a_b.com",
        "10.0.0.1",
        "xn--zz.example",
    ] {
        let p = create(json!({"allowed_domains": [bad]})).problem(400, "invalid_role");
        assert!(p["detail"].as_str().unwrap().contains(bad), "{bad}: {p}");
    }
    create(json!({"allowed_domains": [], "allowed_uri_sans": [""]})).problem(400, "invalid_role");
    // An IPv4-mapped IPv6 range can never match (such addresses are refused): named, refused.
    let p = create(json!({"allow_ip_sans": true, "allowed_ip_ranges": ["::ffff:10.0.0.0/104"]}))
        .problem(400, "invalid_role");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("::ffff:10.0.0.0/104"),
        "{p}"
    );
    // Each pattern list is bounded (read on every issuance, written into every role page).
    let many: Vec<String> = (0..1001).map(|i| format!("h{i}.example")).collect();
    let p = create(json!({"allowed_domains": many})).problem(400, "invalid_role");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("allowed_domains has 1001 entries"),
        "{p}"
    );
    // A range written with bits past its prefix names a wider range than it shows: refused,
    // naming the range it stands for, and nothing is created.
    let p = create(json!({"allow_ip_sans": true, "allowed_ip_ranges": ["10.1.2.3/8"]}))
        .problem(400, "invalid_ip_range");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("10.1.2.3/8") && detail.contains("10.0.0.0/8"),
        "{p}"
    );
    assert_eq!(
        d.call("GET", "/v1/pki/roles/rv", Some(&d.admin), None)
            .status,
        404
    );

    // A valid role; an update cannot bring in what a create may not.
    let r = create(json!({"max_ttl": "2h", "ttl": "1h", "allow_subdomains": true}));
    assert_eq!(r.status, 201, "{}", r.text());
    let put = |body: Value| {
        d.call(
            "PUT",
            "/v1/pki/roles/rv",
            Some(&d.admin),
            Some(body.to_string().as_bytes()),
        )
    };
    put(
        json!({"ca_id": int["id"], "allowed_domains": ["x.example"], "max_ttl": "1h", "ttl": "2h"}),
    )
    .problem(400, "ttl_exceeds_role_max");
    // Without a ttl the role's own 1h applies (not the 72h default cut to max_ttl).
    let r = d.post("/v1/pki/issue/rv", &json!({"common_name": "a.x.example"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let leaf = write(
        d.dir.path(),
        "rv.pem",
        r.json()["certificate"].as_str().unwrap(),
    );
    let ends_within = |secs: &str| {
        !openssl(&["x509", "-in", &leaf, "-noout", "-checkend", secs])
            .status
            .success()
    };
    assert!(
        !ends_within("3500") && ends_within("3700"),
        "a 1h certificate"
    );

    // A-labels are decoded: valid ones are issued, broken ones refused.
    let r = d.post(
        "/v1/pki/issue/rv",
        &json!({"common_name": "xn--bcher-kva.x.example"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for bad in ["xn--zz.x.example", "xn--a.x.example"] {
        let p = d
            .post("/v1/pki/issue/rv", &json!({"common_name": bad}))
            .problem(400, "invalid_dns_name");
        assert!(p["detail"].as_str().unwrap().contains("A-label"), "{p}");
    }
}

/// CSRs as other tools write them: base64 wrapped at 76 columns (Python, Java), the
/// `NEW CERTIFICATE REQUEST` label (Windows `certreq`), and RSA keys larger than 4096 bits.
#[test]
fn csrs_from_other_tools_are_read() {
    use base64::Engine as _;
    let d = Daemon::start();
    let tmp = d.dir.path();
    let (_, int) = hierarchy(&d, "tools");
    role(&d, "ec", &int, json!({}));
    role(
        &d,
        "rsa",
        &int,
        json!({"key_type": "rsa", "key_bits": 2048}),
    );
    let make = |tag: &str, newkey: &[&str]| {
        let key = tmp.join(format!("{tag}.key")).to_str().unwrap().to_owned();
        let der = tmp.join(format!("{tag}.der")).to_str().unwrap().to_owned();
        let mut args = vec!["req", "-new"];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&[
            "-nodes",
            "-keyout",
            &key,
            "-outform",
            "DER",
            "-out",
            &der,
            "-subj",
            "/CN=tool.svc.cluster.local",
        ]);
        openssl_ok(&args);
        std::fs::read(&der).unwrap()
    };
    let pem = |label: &str, der: &[u8], width: usize| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(width)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let ec = make(
        "ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    for (label, width) in [
        ("CERTIFICATE REQUEST", 76),
        ("CERTIFICATE REQUEST", 1000),
        ("NEW CERTIFICATE REQUEST", 64),
    ] {
        let text = pem(label, &ec, width);
        let r = d.post("/v1/pki/sign/ec", &json!({"csr_pem": text, "ttl": "1h"}));
        assert_eq!(r.status, 200, "{label} at {width}: {}", r.text());
        let r = d.post("/v1/pki/csr/import", &json!({"csr_pem": text}));
        assert_eq!(r.status, 201, "{label} at {width}: {}", r.text());
    }
    // Broken base64 is still refused.
    let broken = pem("CERTIFICATE REQUEST", &ec, 76).replacen('M', "!", 1);
    d.post("/v1/pki/sign/ec", &json!({"csr_pem": broken}))
        .problem(400, "invalid_csr");

    // RSA 6144: within the 2048–8192 the daemon accepts, at least the role's 2048.
    let rsa = make("rsa", &["-newkey", "rsa:6144"]);
    let r = d.post(
        "/v1/pki/sign/rsa",
        &json!({"csr_pem": pem("CERTIFICATE REQUEST", &rsa, 64), "ttl": "1h"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (leaf, untrusted, root, _) = files(tmp, "rsa6144", &r.json());
    openssl_ok(&["verify", "-CAfile", &root, "-untrusted", &untrusted, &leaf]);
    let text = openssl_ok(&["x509", "-in", &leaf, "-noout", "-text"]);
    assert!(text.contains("(6144 bit)"), "{text}");
}

/// A CA's name constraints (and its ancestors') bind every issuance path: a name outside them is
/// refused with `400 name_constraint_violation` before a serial is reserved — by a role that
/// allows any name, by `sign/{role}` and by the reviewed CSR workflow — and what is inside
/// verifies with openssl, which enforces the constraints itself.
#[test]
fn names_outside_the_ca_name_constraints_are_refused_on_every_path() {
    let d = Daemon::start();
    let tmp = d.dir.path();
    let root = d.create_root("nc-root", "ec", Some(256));
    let nc = d.post(
        "/v1/pki/ca",
        &json!({"name": "nc", "common_name": "NC Intermediate", "ca_type": "intermediate",
                "parent_ca_id": root["id"], "validity_days": 400,
                "permitted_dns_domains": ["only.example"],
                "excluded_dns_domains": ["secret.only.example"],
                "permitted_ip_ranges": ["10.0.0.0/8"]}),
    );
    assert_eq!(nc.status, 201, "{}", nc.text());
    let nc = nc.json();
    // An unconstrained CA below it: its leaves are bound by nc's constraints all the same.
    let sub = d.post(
        "/v1/pki/ca",
        &json!({"name": "nc-sub", "common_name": "NC Sub", "ca_type": "intermediate",
                "parent_ca_id": nc["id"], "validity_days": 300}),
    );
    assert_eq!(sub.status, 201, "{}", sub.text());
    let sub = sub.json();
    let any = json!({"allow_any_name": true, "allow_wildcard_certificates": true, "allow_ip_sans": true, "require_cn": false});
    role(&d, "nc-any", &nc, any.clone());
    role(&d, "sub-any", &sub, any);

    let inside = d.post(
        "/v1/pki/issue/nc-any",
        &json!({"common_name": "a.only.example", "ip_sans": ["10.1.2.3"]}),
    );
    assert_eq!(inside.status, 200, "{}", inside.text());
    let (leaf, untrusted, root_pem, _) = files(tmp, "nc-in", &inside.json());
    openssl_ok(&[
        "verify",
        "-CAfile",
        &root_pem,
        "-untrusted",
        &untrusted,
        &leaf,
    ]);
    // Only an IP address: no CN, since OpenSSL checks a CN that reads as a host name (an IP
    // address does) against the DNS subtrees when the SAN has no DNS name.
    let ip_only = d.post("/v1/pki/issue/nc-any", &json!({"ip_sans": ["10.9.8.7"]}));
    assert_eq!(ip_only.status, 200, "{}", ip_only.text());
    let (leaf, untrusted, root_pem, _) = files(tmp, "nc-ip", &ip_only.json());
    openssl_ok(&[
        "verify",
        "-CAfile",
        &root_pem,
        "-untrusted",
        &untrusted,
        &leaf,
    ]);
    let subject = openssl_ok(&["x509", "-in", &leaf, "-noout", "-subject"]);
    assert!(!subject.contains("CN"), "{subject}");

    let refused = |path: &str, body: Value, name: &str| {
        let p = d
            .post(path, &body)
            .problem(400, "name_constraint_violation");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(name), "{detail}");
        assert!(detail.contains("NC Intermediate"), "{detail}");
    };
    refused(
        "/v1/pki/issue/nc-any",
        json!({"common_name": "x1.other.example"}),
        "x1.other.example",
    );
    refused(
        "/v1/pki/issue/nc-any",
        json!({"common_name": "a.only.example", "alt_names": ["b.secret.only.example"]}),
        "b.secret.only.example",
    );
    refused(
        "/v1/pki/issue/nc-any",
        json!({"common_name": "a.only.example", "alt_names": ["*.only.example"]}),
        "*.only.example",
    );
    refused(
        "/v1/pki/issue/nc-any",
        json!({"common_name": "a.only.example", "ip_sans": ["192.168.1.1"]}),
        "192.168.1.1",
    );
    refused(
        "/v1/pki/issue/sub-any",
        json!({"common_name": "y.other.example"}),
        "y.other.example",
    );
    // An IP address asked for as the CN is refused for the same reason, with it named.
    refused(
        "/v1/pki/issue/nc-any",
        json!({"common_name": "10.9.8.7"}),
        "common name \"10.9.8.7\"",
    );
    let (csr_pem, _) = make_csr(
        tmp,
        "nc-out",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=z.only.example",
        Some("DNS:z.only.example,DNS:z.elsewhere.example"),
    );
    refused(
        "/v1/pki/sign/nc-any",
        json!({"csr_pem": csr_pem}),
        "z.elsewhere.example",
    );

    // The reviewed CSR workflow: refused at sign time, the CSR stays approved.
    let id = d
        .post("/v1/pki/csr/import", &json!({"csr_pem": csr_pem}))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = d.post(&format!("/v1/pki/csr/{id}/approve"), &json!({}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    refused(
        &format!("/v1/pki/csr/{id}/sign"),
        json!({"ca_id": nc["id"], "validity_days": 5}),
        "z.elsewhere.example",
    );
    assert_eq!(
        d.get(&format!("/v1/pki/csr/{id}")).json()["status"],
        "approved"
    );

    // Only the one good certificate exists under either CA; nothing was reserved for the rest.
    for (ca, want) in [(&nc, 2), (&sub, 0)] {
        let list = d.get(&format!(
            "/v1/pki/certificates?ca_id={}",
            ca["id"].as_str().unwrap()
        ));
        let items = list.json()["items"].as_array().unwrap().clone();
        let leaves = items.iter().filter(|c| c["kind"] == "leaf").count();
        assert_eq!(leaves, want, "{items:?}");
    }
    let audit = d.get("/v1/audit?limit=1000").json();
    let refusals = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "error:name_constraint_violation")
        .count();
    assert_eq!(refusals, 8, "every refusal is audited once");
}

/// Issuances in flight when their token is revoked: none is stored as a success after the
/// revocation's audit record (the certificate's commit checks the basis under the write lock;
/// a certificate signed on a basis that changed is stored revoked and not returned) — on both
/// backends (with PostgreSQL the basis used to be checked by nobody).
#[test]
fn no_issuance_succeeds_on_a_token_after_its_revocation() {
    let d = Daemon::start();
    let (_, int) = hierarchy(&d, "rr");
    role(&d, "rr", &int, json!({}));
    let r = d.post(
        "/v1/auth/tokens",
        &json!({"policies": ["issuer:rr"], "name": "racer"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let (tok, tok_id) = (
        r.json()["token"].as_str().unwrap().to_owned(),
        r.json()["id"].as_str().unwrap().to_owned(),
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let issued = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..8 {
            let (d, tok, stop, issued) = (&d, &tok, &stop, &issued);
            s.spawn(move || {
                for n in 0.. {
                    let r = d.call(
                        "POST",
                        "/v1/pki/issue/rr",
                        Some(tok),
                        Some(
                            json!({"common_name": format!("r{i}-{n}.svc.cluster.local")})
                                .to_string()
                                .as_bytes(),
                        ),
                    );
                    match r.status {
                        200 => {
                            issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        401 => break,
                        other => panic!("{other}: {}", r.text()),
                    }
                    if stop.load(std::sync::atomic::Ordering::SeqCst) && n > 10_000 {
                        break;
                    }
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(800));
        let r = d.call(
            "DELETE",
            &format!("/v1/auth/tokens/{tok_id}"),
            Some(&d.admin),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    assert!(issued.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // Every audit record, in order.
    let mut records = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=1000&cursor={c}"),
            None => "/v1/audit?limit=1000".into(),
        };
        let page = d.get(&path).json();
        records.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let revoked_at = records
        .iter()
        .position(|r| r["action"] == "token.revoke" && r["object_id"] == tok_id.as_str())
        .expect("the revocation is audited");
    let late: Vec<&Value> = records[revoked_at..]
        .iter()
        .filter(|r| {
            r["action"] == "certificate.issue"
                && r["outcome"] == "success"
                && r["token_id"] == tok_id.as_str()
        })
        .collect();
    assert!(late.is_empty(), "issued after the revocation: {late:?}");
}
