//! The OCSP responder (RFC 6960 / RFC 5019) over HTTP, judged by `openssl ocsp`: good, revoked
//! (time and reason, within seconds of the revocation) and unknown; with and without nonces;
//! SHA-1 and SHA-256 CertIDs; POST and GET (base64 with `+`, `/`, `=`, percent-encoded or not);
//! `malformedRequest` for garbage and `unauthorized` for issuers we do not serve, always HTTP 200;
//! the RFC 5019 cache headers; responses served from cache until a revocation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{openssl, openssl_ok, verified_crl_text, write, Daemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The files a relying party holds.
struct Pki {
    int_id: String,
    root_pem: String,
    int_pem: String,
    chain_pem: String,
    leaf_pem: String,
    leaf_serial: String,
}

/// A root, an intermediate, a role on it and one issued leaf.
fn setup(d: &Daemon) -> Pki {
    setup_with(d, json!({})).0
}

/// [`setup`] with `extra` fields in the intermediate's creation request; also returns the
/// intermediate as the API answered.
fn setup_with(d: &Daemon, extra: Value) -> (Pki, Value) {
    let root = d.create_root("ocsp-root", "ec", Some(256));
    let mut req = json!({"name": "ocsp-int", "common_name": "OCSP Intermediate", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 1000});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    let int = d.post("/v1/pki/ca", &req);
    assert_eq!(int.status, 201, "{}", int.text());
    let int = int.json();
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": int["id"], "allowed_domains": ["*.svc.internal"], "key_type": "ec", "key_bits": 256}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let leaf = issue(d, "api.svc.internal");
    let tmp = d.dir.path();
    let root_pem = write(tmp, "root.pem", root["certificate"].as_str().unwrap());
    let int_text = int["certificate"].as_str().unwrap();
    let int_pem = write(tmp, "int.pem", int_text);
    let chain_pem = write(
        tmp,
        "chain.pem",
        &format!("{int_text}{}", root["certificate"].as_str().unwrap()),
    );
    let leaf_pem = write(tmp, "leaf.pem", leaf["certificate"].as_str().unwrap());
    let p = Pki {
        int_id: int["id"].as_str().unwrap().to_owned(),
        root_pem,
        int_pem,
        chain_pem,
        leaf_pem,
        leaf_serial: leaf["serial_number"].as_str().unwrap().to_owned(),
    };
    (p, int)
}

fn issue(d: &Daemon, cn: &str) -> Value {
    let r = d.post("/v1/pki/issue/svc", &json!({"common_name": cn}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Runs `openssl ocsp ARGS`; returns (exit success, stdout + stderr).
fn ocsp(args: &[&str]) -> (bool, String) {
    let mut all = vec!["ocsp"];
    all.extend_from_slice(args);
    let out = openssl(&all);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `openssl ocsp` against the responder URL of the intermediate, verified against the chain.
fn ask(d: &Daemon, p: &Pki, target: &[&str], extra: &[&str]) -> String {
    ask_at(&d.base, p, target, extra)
}

/// [`ask`] with the responder at `base` (`http://host:port`).
fn ask_at(base: &str, p: &Pki, target: &[&str], extra: &[&str]) -> String {
    let url = format!("{base}/v1/pki/ocsp/{}", p.int_id);
    let mut args: Vec<&str> = extra.to_vec();
    args.extend_from_slice(&["-issuer", &p.int_pem]);
    args.extend_from_slice(target);
    args.extend_from_slice(&["-url", &url, "-CAfile", &p.chain_pem, "-resp_text"]);
    let (ok, out) = ocsp(&args);
    assert!(ok, "openssl ocsp {args:?}: {out}");
    assert!(out.contains("Response verify OK"), "{out}");
    out
}

/// Asks the responder at `base` (nonce-less) until it says `leaf.pem: revoked`, at most 5 s;
/// returns openssl's output.
fn revoked_within_5s(base: &str, p: &Pki, target: &[&str]) -> String {
    let t0 = Instant::now();
    let out = loop {
        let out = ask_at(base, p, target, &["-no_nonce"]);
        if out.contains("leaf.pem: revoked") || t0.elapsed() > Duration::from_secs(5) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.contains("leaf.pem: revoked"), "within 5 s: {out}");
    assert!(t0.elapsed() <= Duration::from_secs(5));
    out
}

/// A random positive serial of `len` octets, `0x…`.
fn random_serial(len: usize) -> String {
    let hex = openssl_ok(&["rand", "-hex", &len.to_string()]);
    format!("0x7{}", &hex.trim()[1..])
}

fn percent_encode(b64: &str) -> String {
    b64.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// An HTTP reply with its headers.
struct Http {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Http {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
            .to_str()
            .unwrap()
    }
}

fn http(method: reqwest::Method, url: &str, body: Option<Vec<u8>>, etag: Option<&str>) -> Http {
    let client = reqwest::blocking::Client::new();
    let mut rb = client.request(method, url);
    if let Some(b) = body {
        rb = rb
            .header("Content-Type", "application/ocsp-request")
            .body(b);
    }
    if let Some(e) = etag {
        rb = rb.header("If-None-Match", e);
    }
    let r = rb.send().unwrap();
    Http {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().unwrap().to_vec(),
    }
}

/// Checks the RFC 5019 §6.2 headers of a successful response.
fn check_cache_headers(r: &Http) {
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/ocsp-response");
    let cc = r.header("cache-control");
    let max_age: i64 = cc
        .strip_prefix("max-age=")
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("{cc}"))
        .parse()
        .unwrap();
    assert!((43_100..=43_200).contains(&max_age), "12h by default: {cc}");
    assert!(
        cc.ends_with(", public, no-transform, must-revalidate"),
        "{cc}"
    );
    let etag = r.header("etag");
    assert!(
        etag.len() == 66 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    assert!(r.header("last-modified").ends_with(" GMT"));
    assert!(r.header("expires").ends_with(" GMT"));
}

/// Writes a response and has `openssl ocsp -respin` read and verify it.
fn read_response(d: &Daemon, p: &Pki, tag: &str, der: &[u8], target: &[&str]) -> String {
    let path = d.dir.path().join(format!("{tag}.der"));
    std::fs::write(&path, der).unwrap();
    let mut args = vec!["-respin", path.to_str().unwrap(), "-issuer", &p.int_pem];
    args.extend_from_slice(target);
    args.extend_from_slice(&["-CAfile", &p.chain_pem, "-resp_text"]);
    let (ok, out) = ocsp(&args);
    assert!(ok, "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    out
}

/// Builds a nonce-less request with openssl; returns its DER.
fn request_der(d: &Daemon, issuer: &str, target: &[&str], tag: &str) -> Vec<u8> {
    let path = d.dir.path().join(format!("{tag}.req"));
    let mut args = vec!["-issuer", issuer];
    args.extend_from_slice(target);
    args.extend_from_slice(&["-no_nonce", "-reqout", path.to_str().unwrap()]);
    let (ok, out) = ocsp(&args);
    assert!(ok, "{out}");
    std::fs::read(&path).unwrap()
}

fn base64(d: &Daemon, der: &[u8]) -> String {
    let path = d.dir.path().join("b64.in");
    std::fs::write(&path, der).unwrap();
    openssl_ok(&["base64", "-A", "-in", path.to_str().unwrap()])
        .trim()
        .to_owned()
}

#[test]
fn good_and_unknown_with_and_without_nonce_over_post() {
    let d = Daemon::start();
    let p = setup(&d);
    let leaf = ["-cert", p.leaf_pem.as_str()];
    for extra in [
        &["-no_nonce"][..],
        &["-nonce"][..],
        &["-sha256", "-no_nonce"][..],
        &["-sha256"][..],
    ] {
        let out = ask(&d, &p, &leaf, extra);
        assert!(out.contains("leaf.pem: good"), "{extra:?}: {out}");
        assert!(out.contains("Cert Status: good"), "{out}");
        assert!(
            out.contains("This Update:") && out.contains("Next Update:"),
            "{out}"
        );
        assert!(
            out.contains("Produced At:") && out.contains("Responder Id:"),
            "{out}"
        );
        assert!(!out.contains("WARNING"), "{out}");
        if extra.contains(&"-nonce") || extra == ["-sha256"] {
            assert!(out.contains("OCSP Nonce"), "the nonce is echoed: {out}");
        } else {
            assert!(!out.contains("OCSP Nonce"), "{out}");
        }
        let hash = if extra.contains(&"-sha256") {
            "sha256"
        } else {
            "sha1"
        };
        assert!(out.contains(&format!("Hash Algorithm: {hash}")), "{out}");
    }
    // Never issued: unknown, not good.
    for extra in [&["-no_nonce"][..], &["-nonce"][..]] {
        let serial = random_serial(16);
        let out = ask(&d, &p, &["-serial", &serial], extra);
        assert!(out.contains(&format!("{serial}: unknown")), "{out}");
        assert!(!out.contains(": good"), "{out}");
    }
    // The leaf's own AIA points at this responder.
    let text = openssl_ok(&["x509", "-in", &p.leaf_pem, "-noout", "-ocsp_uri"]);
    assert_eq!(text.trim(), format!("{}/v1/pki/ocsp/{}", d.base, p.int_id));
}

#[test]
fn get_form_with_base64_specials_and_cache_headers() {
    let d = Daemon::start();
    let p = setup(&d);
    let leaf = ["-cert", p.leaf_pem.as_str()];
    let base = format!("{}/v1/pki/ocsp/{}", d.base, p.int_id);
    let der = request_der(&d, &p.int_pem, &leaf, "leaf");
    let b64 = base64(&d, &der);
    let first = http(
        reqwest::Method::GET,
        &format!("{base}/{}", percent_encode(&b64)),
        None,
        None,
    );
    check_cache_headers(&first);
    let out = read_response(&d, &p, "get-leaf", &first.body, &leaf);
    assert!(out.contains("leaf.pem: good"), "{out}");
    // Served from cache: the same bytes and ETag; the ETag revalidates to 304.
    let again = http(reqwest::Method::GET, &format!("{base}/{b64}"), None, None);
    check_cache_headers(&again);
    assert_eq!(again.body, first.body, "cached response");
    assert_eq!(again.header("etag"), first.header("etag"));
    let etag = first.header("etag").to_owned();
    let not_modified = http(
        reqwest::Method::GET,
        &format!("{base}/{}", percent_encode(&b64)),
        None,
        Some(&etag),
    );
    assert_eq!(not_modified.status, 304);
    // POST of the same nonce-less request hits the same cache entry.
    let post = http(reqwest::Method::POST, &base, Some(der), None);
    check_cache_headers(&post);
    assert_eq!(post.body, first.body);

    // Requests whose base64 holds `+`, `/` and `=`, sent percent-encoded and raw.
    let mut found = 0;
    for i in 0..200 {
        let serial = random_serial(8 + i % 12);
        let target = ["-serial", serial.as_str()];
        let der = request_der(&d, &p.int_pem, &target, &format!("s{i}"));
        let b64 = base64(&d, &der);
        if !(b64.contains('+') && b64.contains('/') && b64.contains('=')) {
            continue;
        }
        for (form, path) in [("encoded", percent_encode(&b64)), ("raw", b64.clone())] {
            let r = http(reqwest::Method::GET, &format!("{base}/{path}"), None, None);
            check_cache_headers(&r);
            let out = read_response(&d, &p, &format!("s{i}-{form}"), &r.body, &target);
            assert!(
                out.contains(&format!("{serial}: unknown")),
                "{b64} {form}: {out}"
            );
        }
        found += 1;
        if found == 3 {
            break;
        }
    }
    assert_eq!(
        found, 3,
        "no request with +, / and = in its base64 in 200 tries"
    );
}

const MALFORMED: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x01];
const UNAUTHORIZED: [u8; 5] = [0x30, 0x03, 0x0a, 0x01, 0x06];

#[test]
fn garbage_is_malformed_and_foreign_issuers_unauthorized() {
    let d = Daemon::start();
    let p = setup(&d);
    let base = format!("{}/v1/pki/ocsp/{}", d.base, p.int_id);
    for (method, url, body) in [
        (
            reqwest::Method::POST,
            base.clone(),
            Some(b"garbage, not DER".to_vec()),
        ),
        (reqwest::Method::POST, base.clone(), Some(Vec::new())),
        (reqwest::Method::GET, format!("{base}/!!not-base64!!"), None),
        (
            reqwest::Method::GET,
            format!("{base}/Z2FyYmFnZQ%3D%3D"),
            None,
        ),
    ] {
        let r = http(method.clone(), &url, body, None);
        assert_eq!(r.status, 200, "{method} {url}");
        assert_eq!(r.header("content-type"), "application/ocsp-response");
        assert_eq!(r.body, MALFORMED, "{method} {url}");
    }
    // Over the 8 KiB request limit: an HTTP-level 413 problem, not an OCSP answer.
    let r = http(reqwest::Method::POST, &base, Some(vec![0x30; 70_000]), None);
    assert_eq!(r.status, 413);
    assert!(String::from_utf8_lossy(&r.body).contains("body_too_large"));
    let path = d.dir.path().join("malformed.der");
    std::fs::write(&path, MALFORMED).unwrap();
    let (_, out) = ocsp(&["-respin", path.to_str().unwrap(), "-resp_text"]);
    assert!(out.contains("malformedrequest"), "{out}");

    // A CertID with the root's hashes sent to the intermediate's responder.
    let leaf = ["-cert", p.leaf_pem.as_str()];
    let foreign = request_der(&d, &p.root_pem, &leaf, "foreign");
    let r = http(reqwest::Method::POST, &base, Some(foreign), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, UNAUTHORIZED);
    let (_, out) = ocsp(&[
        "-issuer",
        &p.root_pem,
        "-cert",
        &p.leaf_pem,
        "-url",
        &base,
        "-CAfile",
        &p.chain_pem,
    ]);
    assert!(out.contains("unauthorized"), "{out}");
    // A CA id nobody has, and a pending intermediate: unauthorized too.
    let good = request_der(&d, &p.int_pem, &leaf, "good");
    let r = http(
        reqwest::Method::POST,
        &format!("{}/v1/pki/ocsp/ca_00000000000000000000000000000000", d.base),
        Some(good.clone()),
        None,
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &UNAUTHORIZED[..]));
    let pending = d.post(
        "/v1/pki/ca",
        &json!({"name": "pending", "common_name": "Pending", "ca_type": "intermediate", "validity_days": 100}),
    );
    assert_eq!(pending.status, 201, "{}", pending.text());
    let pid = pending.json()["id"].as_str().unwrap().to_owned();
    let r = http(
        reqwest::Method::POST,
        &format!("{}/v1/pki/ocsp/{pid}", d.base),
        Some(good),
        None,
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &UNAUTHORIZED[..]));
}

#[test]
fn revoked_within_seconds_with_time_and_reason() {
    let d = Daemon::start();
    let p = setup(&d);
    let leaf = ["-cert", p.leaf_pem.as_str()];
    // Prime the cache with a "good" answer (nonce-less, POST and GET).
    let out = ask(&d, &p, &leaf, &["-no_nonce"]);
    assert!(out.contains("leaf.pem: good"), "{out}");
    let base = format!("{}/v1/pki/ocsp/{}", d.base, p.int_id);
    let der = request_der(&d, &p.int_pem, &leaf, "leaf");
    let get_url = format!("{base}/{}", percent_encode(&base64(&d, &der)));
    let before = http(reqwest::Method::GET, &get_url, None, None);
    assert!(read_response(&d, &p, "before", &before.body, &leaf).contains("leaf.pem: good"));

    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": p.leaf_serial, "reason": "key_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked_at = r.json()["revoked_at"].as_str().unwrap().to_owned();
    let out = revoked_within_5s(&d.base, &p, &leaf);
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    assert!(out.contains("Revocation Time:"), "{out}");
    // The revocation time is the API's (2026-11-28T17:18:15Z → "Nov 28 17:18:15 2026 GMT").
    let (date, clock) = revoked_at.trim_end_matches('Z').split_once('T').unwrap();
    assert!(out.contains(clock), "{revoked_at}: {out}");
    let year = &date[..4];
    assert!(
        out.contains(&format!("{clock} {year} GMT")),
        "{revoked_at}: {out}"
    );
    // With a nonce, and over GET (the cached "good" is gone).
    let out = ask(&d, &p, &leaf, &["-nonce"]);
    assert!(
        out.contains("leaf.pem: revoked") && out.contains("OCSP Nonce"),
        "{out}"
    );
    let after = http(reqwest::Method::GET, &get_url, None, None);
    check_cache_headers(&after);
    assert_ne!(after.header("etag"), before.header("etag"));
    let out = read_response(&d, &p, "after", &after.body, &leaf);
    assert!(out.contains("leaf.pem: revoked"), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    // Another leaf of the same CA is still good.
    let other = issue(&d, "other.svc.internal");
    let other_pem = write(
        d.dir.path(),
        "other.pem",
        other["certificate"].as_str().unwrap(),
    );
    let out = ask(&d, &p, &["-cert", &other_pem], &[]);
    assert!(out.contains("other.pem: good"), "{out}");
}

#[test]
fn a_retired_ca_still_answers_for_what_it_issued() {
    let d = Daemon::start();
    let p = setup(&d);
    let r = d.call(
        "DELETE",
        &format!("/v1/pki/ca/{}", p.int_id),
        Some(&d.admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = ask(&d, &p, &["-cert", &p.leaf_pem], &["-nonce"]);
    assert!(out.contains("leaf.pem: good"), "{out}");
}

#[test]
fn a_delegated_signer_answers_and_verifies() {
    let d = Daemon::start();
    d.post("/v1/pki/ca", &json!({"name": "bad", "common_name": "B", "ca_type": "root", "validity_days": 10, "ocsp_signer": "someone"}))
        .problem(400, "invalid_ocsp_signer");
    let (p, int) = setup_with(
        &d,
        json!({"common_name": "Delegating Intermediate", "ocsp_signer": "delegated"}),
    );
    assert_eq!(int["ocsp_signer"], "delegated");
    let leaf_pem = p.leaf_pem.clone();
    let out = ask(&d, &p, &["-cert", &leaf_pem], &["-no_nonce"]);
    assert!(out.contains(": good"), "{out}");
    // The response carries the delegate's certificate: EKU OCSP Signing, ocsp-nocheck, issued by
    // the intermediate; the responder id is not the CA's key.
    assert!(out.contains("OCSP Signing"), "{out}");
    assert!(out.contains("OCSP No Check"), "{out}");
    assert!(
        out.contains("Issuer: CN=Delegating Intermediate")
            && out.contains("Subject: CN=OCSP responder"),
        "{out}"
    );
    // With a nonce, and after a revocation.
    let out = ask(&d, &p, &["-cert", &leaf_pem], &["-nonce"]);
    assert!(
        out.contains(": good") && out.contains("OCSP Nonce"),
        "{out}"
    );
    assert_eq!(
        d.post(
            "/v1/pki/revoke",
            &json!({"serial_number": p.leaf_serial, "reason": "key_compromise"})
        )
        .status,
        200
    );
    let out = ask(&d, &p, &["-cert", &leaf_pem], &["-no_nonce"]);
    assert!(out.contains(": revoked"), "{out}");
    // The delegate key lives on the token, issued once and reused; its issuance is audited.
    let audit = d.get("/v1/audit?limit=1000").text();
    let _ = &p.root_pem;
    assert_eq!(
        audit.matches("ocsp.delegate_issued").count(),
        1,
        "issued once, then reused: {audit}"
    );
}

/// A response signed with the CA's own key never outlives the CA's certificate, whatever its
/// `ocsp_validity` (the delegated signer's are capped by the delegate's certificate).
#[test]
fn a_ca_signed_response_ends_with_the_ca() {
    let d = Daemon::start();
    let (p, _) = setup_with(
        &d,
        json!({"common_name": "Short Intermediate", "validity_days": 4, "ocsp_validity": "7d"}),
    );
    let out = ask(&d, &p, &["-cert", &p.leaf_pem], &["-no_nonce"]);
    assert!(out.contains(": good"), "{out}");
    let next = openssl_time(&out, "Next Update: ");
    let end = openssl_ok(&["x509", "-in", &p.int_pem, "-noout", "-enddate"]);
    let end = openssl_time(&end.replace("notAfter=", "End: "), "End: ");
    assert!(
        next <= end,
        "nextUpdate {next} is past the CA's notAfter {end}: {out}"
    );
    assert!(
        next > unix_now() + 3 * 86_400 - 600,
        "capped, not cut short: {out}"
    );
}

/// The Unix time of openssl's "Produced At: Nov 28 19:40:01 2026 GMT" line.
fn produced_at(out: &str) -> i64 {
    openssl_time(out, "Produced At: ")
}

/// The Unix time of the first line of openssl's output that starts with `label` (after spaces).
fn openssl_time(out: &str, label: &str) -> i64 {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label}: {out}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == f[0])
    .unwrap() as i64
        + 1;
    let day: i64 = f[1].parse().unwrap();
    let hms: Vec<i64> = f[2].split(':').map(|x| x.parse().unwrap()).collect();
    let year: i64 = f[3].parse().unwrap();
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn responses_are_presigned_at_issuance_and_after_revocation() {
    let d = Daemon::start();
    let p = setup(&d);
    let leaf = ["-cert", p.leaf_pem.as_str()];
    // Nobody has asked about this leaf yet: its "good" answer was signed in the background when
    // it was issued, so it is older than the question.
    std::thread::sleep(Duration::from_secs(3));
    let asked = unix_now();
    let out = ask(&d, &p, &leaf, &["-no_nonce"]);
    assert!(out.contains("leaf.pem: good"), "{out}");
    let produced = produced_at(&out);
    assert!(
        produced <= asked - 2,
        "produced at {produced}, asked at {asked}: not pre-signed: {out}"
    );
    // A revocation drops the cached answer and signs the "revoked" one right away.
    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": p.leaf_serial, "reason": "superseded"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked = unix_now();
    std::thread::sleep(Duration::from_secs(3));
    let asked = unix_now();
    let out = ask(&d, &p, &leaf, &["-no_nonce"]);
    assert!(out.contains("leaf.pem: revoked"), "{out}");
    assert!(out.contains("Reason: superseded"), "{out}");
    let produced = produced_at(&out);
    assert!(
        produced >= revoked - 1 && produced <= asked - 2,
        "revoked at {revoked}, produced at {produced}, asked at {asked}: {out}"
    );
}

/// The serial of the responder certificate that `openssl ocsp -resp_text` printed.
fn responder_serial(out: &str) -> String {
    let cert = out
        .split("Certificate:")
        .nth(1)
        .unwrap_or_else(|| panic!("no responder certificate: {out}"));
    let mut lines = cert.lines().skip_while(|l| !l.contains("Serial Number:"));
    let first = lines.next().unwrap();
    let inline = first.split("Serial Number:").nth(1).unwrap().trim();
    if inline.is_empty() {
        lines.next().unwrap().trim().to_owned()
    } else {
        inline.to_owned()
    }
}

#[test]
fn the_delegated_signer_rotates_before_it_expires() {
    let d = Daemon::start();
    d.post(
        "/v1/pki/ca",
        &json!({"name": "x", "common_name": "X", "ca_type": "root",
            "validity_days": 10, "ocsp_signer": "delegated", "ocsp_signer_lifetime": "10s"}),
    )
    .problem(400, "invalid_duration");
    let (p, int) = setup_with(
        &d,
        json!({"ocsp_signer": "delegated", "ocsp_signer_lifetime": "1m"}),
    );
    assert_eq!(int["ocsp_signer_lifetime"], "1m");
    let leaf_pem = p.leaf_pem.clone();
    let t0 = Instant::now();
    let out = ask(&d, &p, &["-cert", &leaf_pem], &["-nonce"]);
    assert!(out.contains(": good"), "{out}");
    let first = responder_serial(&out);
    // Responses never outlive the signer: nextUpdate within its minute.
    let produced = produced_at(&out);
    let next = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Next Update: "))
        .map(|n| produced_at(&format!("Produced At: {n}")))
        .unwrap();
    assert!(next - produced <= 60, "{out}");
    // After two thirds of its minute, the next signature comes from a new delegate.
    std::thread::sleep(Duration::from_secs(42).saturating_sub(t0.elapsed()));
    let out = ask(&d, &p, &["-cert", &leaf_pem], &["-nonce"]);
    assert!(out.contains(": good"), "{out}");
    let second = responder_serial(&out);
    assert_ne!(first, second, "rotated: {out}");
    let audit = d.get("/v1/audit?limit=1000").text();
    let _ = (&p.root_pem, &p.leaf_serial);
    assert_eq!(audit.matches("ocsp.delegate_issued").count(), 2, "{audit}");
}

/// The relying-party listener (`server.public_listen`): plain HTTP with only the OCSP, CRL and CA
/// certificate paths, the ones issued certificates name when `public_base_url` points at it.
#[test]
fn the_relying_party_listener_serves_ocsp_crls_and_ca_certificates() {
    let (d, public) = with_public_listener("");
    let base = format!("http://{public}");
    let p = setup(&d);
    // The leaf's AIA and CRL distribution point name the relying-party listener.
    let ocsp_uri = openssl_ok(&["x509", "-noout", "-ocsp_uri", "-in", &p.leaf_pem]);
    assert_eq!(ocsp_uri.trim(), format!("{base}/v1/pki/ocsp/{}", p.int_id));
    let text = openssl_ok(&["x509", "-noout", "-text", "-in", &p.leaf_pem]);
    assert!(
        text.contains(&format!("URI:{base}/v1/pki/ca/{}/crl", p.int_id)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "CA Issuers - URI:{base}/v1/pki/ca/{}/certificate?format=der",
            p.int_id
        )),
        "{text}"
    );

    // OCSP: openssl at the URL from the certificate, POST, with and without a nonce.
    let leaf = ["-cert", p.leaf_pem.as_str()];
    for extra in [&["-no_nonce"][..], &["-nonce"][..]] {
        let out = ask_at(&base, &p, &leaf, extra);
        assert!(out.contains("leaf.pem: good"), "{extra:?}: {out}");
    }
    // GET with the cache headers, and 304 for the current ETag.
    let der = request_der(&d, &p.int_pem, &leaf, "leaf");
    let ocsp_base = format!("{base}/v1/pki/ocsp/{}", p.int_id);
    let get_url = format!("{ocsp_base}/{}", percent_encode(&base64(&d, &der)));
    let r = http(reqwest::Method::GET, &get_url, None, None);
    check_cache_headers(&r);
    assert!(read_response(&d, &p, "public-get", &r.body, &leaf).contains("leaf.pem: good"));
    let etag = r.header("etag").to_owned();
    let r304 = http(reqwest::Method::GET, &get_url, None, Some(&etag));
    assert_eq!(r304.status, 304);
    assert!(r304.body.is_empty());
    // Cached answers, the repeats of one connection included, name their request too; a query
    // on a cached request is checked like any other (a repeated parameter is refused).
    let client = reqwest::blocking::Client::new();
    for i in 0..3 {
        let r = client.get(&get_url).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_"));
        let mine = format!("rp-ocsp-{i}");
        let r = client
            .post(&ocsp_base)
            .header("Content-Type", "application/ocsp-request")
            .header("X-Request-Id", &mine)
            .body(der.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-request-id"], mine.as_str());
    }
    let twice = http(
        reqwest::Method::GET,
        &format!("{get_url}?x=1&x=2"),
        None,
        None,
    );
    assert_eq!(twice.status, 400);
    assert!(String::from_utf8_lossy(&twice.body).contains("repeated_query_parameter"));
    // Garbage: the OCSP error status with HTTP 200; over 8 KiB: 413.
    let r = http(
        reqwest::Method::POST,
        &ocsp_base,
        Some(b"garbage".to_vec()),
        None,
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &MALFORMED[..]));
    let r = http(
        reqwest::Method::POST,
        &ocsp_base,
        Some(vec![0x30; 9 * 1024]),
        None,
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert!(String::from_utf8_lossy(&r.body).contains("\"code\":\"body_too_large\""));
    let r = http(
        reqwest::Method::POST,
        &format!("{base}/v1/pki/ocsp/ca_00000000000000000000000000000000"),
        Some(der),
        None,
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &UNAUTHORIZED[..]));

    // A revocation shows here within seconds, as on the API listener.
    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": p.leaf_serial, "reason": "key_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let out = revoked_within_5s(&base, &p, &leaf);
    assert!(out.contains("Reason: keyCompromise"), "{out}");

    // The CRL, DER and PEM, verified by openssl, listing the revoked serial once rebuilt.
    let r = d.post(&format!("/v1/pki/ca/{}/crl", p.int_id), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let crl_url = format!("{base}/v1/pki/ca/{}/crl", p.int_id);
    let r = http(reqwest::Method::GET, &crl_url, None, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/pkix-crl");
    let text = verified_crl_text(d.dir.path(), &r.body, &p.chain_pem, "public");
    let serial_hex = p.leaf_serial.replace(':', "").to_uppercase();
    assert!(
        text.replace(':', "").to_uppercase().contains(&serial_hex),
        "{serial_hex}: {text}"
    );
    let pem = http(
        reqwest::Method::GET,
        &format!("{crl_url}?format=pem"),
        None,
        None,
    );
    assert_eq!(pem.status, 200);
    assert!(String::from_utf8_lossy(&pem.body).starts_with("-----BEGIN X509 CRL-----"));
    let bad = http(
        reqwest::Method::GET,
        &format!("{crl_url}?format=xml"),
        None,
        None,
    );
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("\"code\":\"invalid_format\""));
    // A repeated parameter is refused as on the API listener, not read as no format.
    let twice = http(
        reqwest::Method::GET,
        &format!("{crl_url}?format=pem&format=der"),
        None,
        None,
    );
    assert_eq!(twice.status, 400);
    assert!(String::from_utf8_lossy(&twice.body).contains("repeated_query_parameter"));
    // Every answer has a request id; a client's plain one is kept.
    assert!(r.header("x-request-id").starts_with("req_"));
    let mine = reqwest::blocking::Client::new()
        .get(&crl_url)
        .header("X-Request-Id", "rp-check-1")
        .send()
        .unwrap();
    assert_eq!(mine.headers()["x-request-id"], "rp-check-1");
    // A problem document names the same id in its body as in its header.
    let refused = reqwest::blocking::Client::new()
        .get(format!("{crl_url}?format=xml"))
        .header("X-Request-Id", "rp-check-2")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["x-request-id"], "rp-check-2");
    let problem: Value = refused.json().unwrap();
    assert_eq!(problem["request_id"], "rp-check-2", "{problem}");
    assert_eq!(problem["code"], "invalid_format", "{problem}");
    // HEAD: the headers of GET, no body.
    let head = http(reqwest::Method::HEAD, &crl_url, None, None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), r.body.len().to_string());
    assert!(head.body.is_empty());

    // The CA certificate the AIA names: the intermediate, DER; PEM by default.
    let cert_url = format!("{base}/v1/pki/ca/{}/certificate", p.int_id);
    let r = http(
        reqwest::Method::GET,
        &format!("{cert_url}?format=der"),
        None,
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/pkix-cert");
    let int_der = d.dir.path().join("int.der");
    openssl_ok(&[
        "x509",
        "-in",
        &p.int_pem,
        "-outform",
        "DER",
        "-out",
        int_der.to_str().unwrap(),
    ]);
    assert_eq!(r.body, std::fs::read(&int_der).unwrap());
    let r = http(reqwest::Method::GET, &cert_url, None, None);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        std::fs::read_to_string(&p.int_pem).unwrap()
    );

    // Nothing of the API: not even with the admin token.
    let client = reqwest::blocking::Client::new();
    for path in ["/v1/pki/roles", "/v1/sys/health", "/metrics", "/v1/pki/ca"] {
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(&d.admin)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["code"], "not_found", "{path}: {body}");
        assert_eq!(body["instance"], path);
    }
    let r = client.post(&crl_url).bearer_auth(&d.admin).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = client.delete(&ocsp_base).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
    // GET without a request part: malformedRequest, as on the API listener.
    let r = client.get(&ocsp_base).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), [0x30, 3, 0x0a, 1, 1]);
    let api = d.call("GET", &format!("/v1/pki/ocsp/{}", p.int_id), None, None);
    assert_eq!(
        (api.status, api.bytes.as_slice()),
        (200, &[0x30, 3, 0x0a, 1, 1][..])
    );
    // The API listener still serves the same paths.
    let r = d.call("GET", &format!("/v1/pki/ca/{}/crl", p.int_id), None, None);
    assert_eq!(r.status, 200);
}

/// A dev daemon restarted with the relying-party listener on a free port (and `extra` lines in
/// `[server]`), and that listener's address.
fn with_public_listener(extra: &str) -> (Daemon, String) {
    let public = format!("127.0.0.1:{}", scaivault_tests::free_port());
    let d = Daemon::start().restart_with(|text| {
        text.replacen(
            "[server]\n",
            &format!("[server]\npublic_listen = \"{public}\"\n{extra}"),
            1,
        )
    });
    (d, public)
}

/// Sends `bytes` on a fresh connection to `addr`, half-closes nothing, and reads until the server
/// closes the connection or `until` has been seen `count` times; returns what arrived.
fn raw(addr: &str, bytes: &[u8], until: &str, count: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(&got)),
        }
        if String::from_utf8_lossy(&got).matches(until).count() >= count && !until.is_empty() {
            // Give a trailing body a moment to arrive.
            std::thread::sleep(Duration::from_millis(50));
            s.set_nonblocking(true).unwrap();
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
            }
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// `server.public_max_connections`: one connection over the cap is answered `503` and closed,
/// and counted; once a connection closes, the next is served.
#[test]
fn the_relying_party_listener_caps_its_connections() {
    let (d, public) = with_public_listener("public_max_connections = 2\n");
    let served = |out: &str| out.starts_with("HTTP/1.1 404 Not Found\r\n");
    let ask = "GET /nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert!(served(&raw(&public, ask.as_bytes(), "", 0)));
    // The server ends that connection's task (and gives its place back) a moment after the
    // client saw it close: wait for that, or an idle connection below could find the cap full.
    let open_now = |want: f64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let open = d.metric("scaivault_public_connections_open");
            if open == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{open} connections open, want {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    open_now(0.0);
    // Two idle connections fill the cap (each holds its place from accept until it closes).
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&public).unwrap())
        .collect();
    open_now(2.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let out = raw(&public, ask.as_bytes(), "", 0);
        if !served(&out) {
            break out;
        }
        // The listener may not have accepted both idle connections yet.
        assert!(std::time::Instant::now() < deadline, "never refused: {out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    assert!(refused.contains("Retry-After: 1\r\n"), "{refused}");
    assert!(refused.contains("Connection: close\r\n"), "{refused}");
    assert!(
        refused.contains("\"code\":\"too_many_connections\""),
        "{refused}"
    );
    let m = d.call("GET", "/metrics", None, None);
    let count = m
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("scaivault_public_connections_refused_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no counter: {}", m.text()));
    assert!(count >= 1, "{count}");
    // One idle connection closes: its place is free again.
    drop(idle);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = raw(&public, ask.as_bytes(), "", 0);
        if served(&out) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The relying-party listener's own HTTP/1.1 handling, byte by byte: pipelining, HTTP/1.0,
/// `Expect: 100-continue`, and what it refuses (a chunked body, an oversized head, not HTTP).
#[test]
fn the_relying_party_listener_speaks_http_1_1_and_refuses_the_rest() {
    let (d, public) = with_public_listener("");
    let p = setup(&d);
    let der = request_der(&d, &p.int_pem, &["-cert", &p.leaf_pem], "leaf");
    let post = |extra: &str| ocsp_post(&p.int_id, &der, extra);
    // Two pipelined requests in one write, then a CRL request with `Connection: close`: three
    // answers in order on one connection, which the server then closes.
    let mut three = post("");
    three.extend(post(""));
    three.extend(
        format!(
            "GET /v1/pki/ca/{}/crl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            p.int_id
        )
        .into_bytes(),
    );
    let out = raw(&public, &three, "", 0);
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
    assert_eq!(
        out.matches("Content-Type: application/ocsp-response")
            .count(),
        2
    );
    assert!(out.contains("Content-Type: application/pkix-crl"), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(out.contains("\r\nDate: "), "{out}");
    // HTTP/1.0 closes after the answer unless asked to keep the connection.
    let out = raw(
        &public,
        format!("GET /v1/pki/ca/{}/certificate HTTP/1.0\r\n\r\n", p.int_id).as_bytes(),
        "",
        0,
    );
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("-----END CERTIFICATE-----"), "{out}");
    // Expect: 100-continue is honoured: the interim answer, then the response once the body came.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&public).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let full = post("Expect: 100-continue\r\n");
        let (head, body) = full.split_at(full.len() - der.len());
        s.write_all(head).unwrap();
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert_eq!(&chunk[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(body).unwrap();
        let n = s.read(&mut chunk).unwrap();
        let text = String::from_utf8_lossy(&chunk[..n]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    }
    // Refusals: a problem document, then the connection is closed.
    for (request, status, code) in [
        (
            format!(
                "POST /v1/pki/ocsp/{} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                p.int_id
            ),
            "411 Length Required",
            "length_required",
        ),
        (
            format!(
                "GET /v1/pki/ca/{}/crl HTTP/1.1\r\n{}\r\n",
                p.int_id,
                "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(40)
            ),
            "400 Bad Request",
            "bad_request",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n", "a".repeat(9000)),
            "431 Request Header Fields Too Large",
            "request_header_too_large",
        ),
        // Complete, and over the limit: refused however it arrived (one write here).
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000)),
            "431 Request Header Fields Too Large",
            "request_header_too_large",
        ),
        (
            "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\u{3}\u{3}".to_owned(),
            "400 Bad Request",
            "bad_request",
        ),
        (
            format!(
                "POST /v1/pki/ocsp/{} HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                p.int_id
            ),
            "400 Bad Request",
            "bad_request",
        ),
        // A target that is neither origin- nor absolute-form (found by the http_head fuzzer).
        (
            format!("GET v1/pki/ca/{}/crl HTTP/1.1\r\nHost: x\r\n\r\n", p.int_id),
            "400 Bad Request",
            "bad_request",
        ),
    ] {
        let out = raw(&public, request.as_bytes(), "", 0);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{status}: {out}"
        );
        assert!(out.contains("Content-Type: application/problem+json"), "{out}");
        assert!(out.contains(&format!("\"code\":\"{code}\"")), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
    }
    // The listener still answers afterwards.
    let out = ask_at(
        &format!("http://{public}"),
        &p,
        &["-cert", &p.leaf_pem],
        &[],
    );
    assert!(out.contains("leaf.pem: good"), "{out}");
}

/// A raw HTTP/1.1 OCSP POST of `der` to CA `int_id`, with `extra` header lines (each ending in
/// CRLF) before the blank line.
fn ocsp_post(int_id: &str, der: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /v1/pki/ocsp/{int_id} HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\n{extra}\r\n",
        der.len()
    )
    .into_bytes();
    r.extend_from_slice(der);
    r
}

/// One request and its answer on a keep-alive connection: the status line and headers, and the
/// body of the announced `Content-Length`.
fn exchange(s: &mut std::net::TcpStream, req: &[u8]) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    s.write_all(req).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap_or_else(|| panic!("no length: {head}"))
                .parse()
                .unwrap();
            if got.len() >= i + 4 + len {
                assert_eq!(got.len(), i + 4 + len, "more than one answer: {head}");
                return (head, got[i + 4..].to_vec());
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
}

/// The listener answers a repeated OCSP request from a copy of its encoded answer (per thread;
/// one connection stays on one thread): the repeats are the same signed response with current
/// headers, and a revocation replaces them at once, on the same connection and the same bytes.
#[test]
fn repeated_ocsp_requests_on_one_connection_see_a_revocation() {
    let (d, public) = with_public_listener("");
    let p = setup(&d);
    let leaf = ["-cert", p.leaf_pem.as_str()];
    let der = request_der(&d, &p.int_pem, &leaf, "repeat");
    let req = ocsp_post(&p.int_id, &der, "");
    let mut s = std::net::TcpStream::connect(&public).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (head, first) = exchange(&mut s, &req);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(read_response(&d, &p, "repeat-1", &first, &leaf).contains("leaf.pem: good"));
    for i in 0..5 {
        let (head, body) = exchange(&mut s, &req);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{i}: {head}");
        assert!(
            head.contains("Content-Type: application/ocsp-response\r\n"),
            "{head}"
        );
        assert!(head.contains("Cache-Control: max-age="), "{head}");
        assert!(head.contains("ETag: \""), "{head}");
        assert!(head.contains("Date: "), "{head}");
        assert_eq!(body, first, "repeat {i}");
    }
    // After a second the headers are made again (Date and max-age), the response is the same.
    std::thread::sleep(Duration::from_millis(1100));
    let (later, body) = exchange(&mut s, &req);
    assert_eq!(body, first);
    let date = |h: &str| {
        h.lines()
            .find(|l| l.starts_with("Date: "))
            .unwrap()
            .to_owned()
    };
    assert_ne!(date(&later), date(&head), "{later}");

    let r = d.post(
        "/v1/pki/revoke",
        &json!({"serial_number": p.leaf_serial, "reason": "key_compromise"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The same bytes on the same connection: revoked at once (the answer that was repeated is
    // never written again), signed and verified.
    let (head, body) = exchange(&mut s, &req);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_ne!(
        body, first,
        "the cached 'good' answer outlived the revocation"
    );
    let out = read_response(&d, &p, "repeat-revoked", &body, &leaf);
    assert!(out.contains("leaf.pem: revoked"), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    let (_, again) = exchange(&mut s, &req);
    assert!(read_response(&d, &p, "repeat-revoked-2", &again, &leaf).contains("leaf.pem: revoked"));
}

/// `limits.header_timeout`: a head that trickles in a byte at a time is cut off when the time is
/// up (not each time a byte arrives), and so is an idle keep-alive connection.
#[test]
fn a_head_that_trickles_in_is_cut_off_after_the_header_timeout() {
    use std::io::{Read, Write};
    let public = format!("127.0.0.1:{}", scaivault_tests::free_port());
    let d = Daemon::start().restart_with(|text| {
        format!(
            "{}\n[limits]\nheader_timeout = \"1s\"\n",
            text.replacen(
                "[server]\n",
                &format!("[server]\npublic_listen = \"{public}\"\n"),
                1
            )
        )
    });
    let head = b"GET /v1/pki/ca/nothing/crl HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut s = std::net::TcpStream::connect(&public).unwrap();
    let t0 = Instant::now();
    let mut sent = 0;
    // A byte every 100 ms: the whole head would take ~8 s.
    let cut = loop {
        if s.write_all(&head[sent..=sent]).is_err() {
            break t0.elapsed();
        }
        sent += 1;
        assert!(
            sent < head.len(),
            "the whole head went through in {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => break t0.elapsed(),
            Ok(n) => panic!("answered: {}", String::from_utf8_lossy(&b[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break t0.elapsed(),
        }
        s.set_nonblocking(false).unwrap();
    };
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(4),
        "closed after {cut:?} and {sent} bytes"
    );
    // Idle after an answer: closed after about a second as well.
    let mut s = std::net::TcpStream::connect(&public).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (answer, _) = exchange(
        &mut s,
        b"GET /v1/pki/ca/nothing/crl HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let t0 = Instant::now();
    let mut b = [0u8; 64];
    assert_eq!(s.read(&mut b).unwrap(), 0, "the idle connection got more");
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "idle connection closed after {idle:?}"
    );
    drop(d);
}
