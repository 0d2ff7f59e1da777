//! The x509-limbo corpus run through ScaiVault's validator (`scaivault_core::validate::validate`,
//! the function behind `POST /v1/pki/certificates/validate`), compared with each case's
//! `expected_result`.
//!
//! - Corpus: `$SCAIVAULT_LIMBO` (a `.json.xz` or `.json` file), else `limbo.json.xz` in
//!   `shared/x509-limbo/` beside the repository (`<repo>/../shared/x509-limbo/`, where the
//!   workplace and CI lay it). A missing corpus fails the test: it never passes vacuously.
//! - Exceptions: `tests/limbo-exceptions.txt`, one `<case id> <reason>` per line. Every case we
//!   knowingly disagree with is listed there; "feature not supported" marks optional features.
//! - `SCAIVAULT_LIMBO_VERBOSE=1` prints every case's verdict and reasons.
//! - Fails on: a disagreement not listed, a listed case that now agrees or no longer exists
//!   (stale exception), a panic in any case, or a run longer than 5 minutes.
//!
//! Mapping of the corpus' fields: `extended_key_usage` [] → purpose `any`, [`serverAuth`] →
//! `server_auth`, [`clientAuth`] → `client_auth`; `expected_peer_name(s)` → the names the leaf
//! must carry (DNS, IP, RFC822); `key_usage` → required leaf KeyUsage bits; `max_chain_depth` →
//! the most non-self-issued intermediates; `crls` → revocation checking against them;
//! `validation_time` null → now. Every `trusted_certs` entry is a trust anchor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_core::validate::{
    self, Anchor, AnchorKind, KeyUsages, Outcome, PeerName, Purpose, Request, Revocation,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIME_LIMIT: Duration = Duration::from_secs(300);

fn corpus_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SCAIVAULT_LIMBO") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/x509-limbo/limbo.json.xz")
}

fn load_corpus() -> Value {
    let path = corpus_path();
    let raw = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the x509-limbo corpus is missing at {} ({e}); set SCAIVAULT_LIMBO to its path",
            path.display()
        )
    });
    let json = if path.extension().is_some_and(|x| x == "xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(raw.as_slice()), &mut out)
            .unwrap_or_else(|e| panic!("{}: not xz: {e:?}", path.display()));
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// `<id> <reason>` lines; `#` starts a comment line.
fn load_exceptions() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("limbo-exceptions.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = line
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("{}:{}: no reason given", path.display(), n + 1));
        assert!(
            out.insert(id.to_owned(), reason.trim().to_owned())
                .is_none(),
            "{}:{}: {id} listed twice",
            path.display(),
            n + 1
        );
    }
    out
}

fn pems(v: &Value, label: &str) -> Vec<Vec<u8>> {
    let texts: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().map(|p| p.as_str().unwrap()).collect(),
        _ => Vec::new(),
    };
    texts
        .into_iter()
        .flat_map(|t| validate::pem_blocks(t, label).unwrap())
        .collect()
}

fn names(case: &Value) -> Vec<PeerName> {
    let mut list: Vec<&Value> = Vec::new();
    if !case["expected_peer_name"].is_null() {
        list.push(&case["expected_peer_name"]);
    }
    list.extend(case["expected_peer_names"].as_array().into_iter().flatten());
    list.iter()
        .map(|n| {
            let value = n["value"].as_str().unwrap().to_owned();
            match n["kind"].as_str().unwrap() {
                "DNS" => PeerName::Dns(value),
                "IP" => PeerName::Ip(value.parse().unwrap()),
                "RFC822" => PeerName::Email(value),
                other => panic!("unknown peer name kind {other}"),
            }
        })
        .collect()
}

fn key_usage(name: &str) -> KeyUsages {
    match name {
        "digitalSignature" => KeyUsages::DigitalSignature,
        "contentCommitment" => KeyUsages::NonRepudiation,
        "keyEncipherment" => KeyUsages::KeyEncipherment,
        "dataEncipherment" => KeyUsages::DataEncipherment,
        "keyAgreement" => KeyUsages::KeyAgreement,
        "keyCertSign" => KeyUsages::KeyCertSign,
        "cRLSign" => KeyUsages::CRLSign,
        "encipherOnly" => KeyUsages::EncipherOnly,
        "decipherOnly" => KeyUsages::DecipherOnly,
        other => panic!("unknown key usage {other}"),
    }
}

/// Runs one case; `Err` for what the harness cannot express.
fn run(case: &Value) -> Result<Outcome, String> {
    let purpose = match case["extended_key_usage"].as_array().map(Vec::as_slice) {
        None | Some([]) => Purpose::Any,
        Some([one]) if one == "serverAuth" => Purpose::ServerAuth,
        Some([one]) if one == "clientAuth" => Purpose::ClientAuth,
        Some(other) => return Err(format!("extended_key_usage {other:?} not expressible")),
    };
    if case["signature_algorithms"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        return Err("signature_algorithms constraints not expressible".into());
    }
    let leaf = pems(&case["peer_certificate"], "CERTIFICATE")
        .pop()
        .ok_or("no peer certificate")?;
    let intermediates = pems(&case["untrusted_intermediates"], "CERTIFICATE");
    let anchors: Vec<Anchor> = pems(&case["trusted_certs"], "CERTIFICATE")
        .into_iter()
        .enumerate()
        .map(|(i, der)| Anchor {
            der,
            kind: AnchorKind::TrustAnchor,
            id: format!("trusted-{i}"),
        })
        .collect();
    let crls = pems(&case["crls"], "X509 CRL");
    let ku: Vec<KeyUsages> = case["key_usage"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| key_usage(k.as_str().unwrap()))
        .collect();
    let time = match case["validation_time"].as_str() {
        Some(t) => scaivault_core::time_util::parse_rfc3339(t).map_err(|e| e.to_string())?,
        None => scaivault_core::time_util::now(),
    };
    let names = names(case);
    let req = Request {
        leaf: &leaf,
        intermediates: &intermediates,
        anchors: &anchors,
        purpose,
        names: &names,
        key_usage: &ku,
        time,
        max_intermediates: case["max_chain_depth"]
            .as_u64()
            .map(|d| usize::try_from(d).unwrap()),
        revocation: (!crls.is_empty()).then_some(Revocation {
            crls: &crls,
            source: None,
        }),
    };
    Ok(validate::validate(&req))
}

#[derive(Default)]
struct Tally {
    run: usize,
    passed: usize,
    excepted: usize,
}

#[test]
fn limbo_corpus_agrees_except_for_listed_cases() {
    let started = Instant::now();
    let corpus = load_corpus();
    let exceptions = load_exceptions();
    let cases = corpus["testcases"].as_array().expect("testcases");
    assert!(!cases.is_empty(), "the corpus has no test cases");
    let mut by_ns: BTreeMap<String, Tally> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut slowest = (Duration::ZERO, String::new());
    for case in cases {
        let id = case["id"].as_str().expect("id").to_owned();
        seen.insert(id.clone());
        let ns = id.split("::").next().unwrap_or("").to_owned();
        let tally = by_ns.entry(ns).or_default();
        tally.run += 1;
        let expected_ok = case["expected_result"] == "SUCCESS";
        let t0 = Instant::now();
        let outcome = std::panic::catch_unwind(|| run(case));
        let took = t0.elapsed();
        if took > slowest.0 {
            slowest = (took, id.clone());
        }
        let verdict = match outcome {
            Err(_) => {
                problems.push(format!("{id}: PANIC"));
                continue;
            }
            Ok(Err(why)) => Err(why),
            Ok(Ok(o)) => Ok(o),
        };
        let (agrees, detail) = match &verdict {
            Ok(o) => (
                o.valid == expected_ok,
                o.errors
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.message))
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
            Err(why) => (false, format!("not run: {why}")),
        };
        if std::env::var_os("SCAIVAULT_LIMBO_VERBOSE").is_some() {
            println!(
                "{} {id} expected {} [{detail}]",
                if agrees { "ok  " } else { "DIFF" },
                case["expected_result"].as_str().unwrap_or("?")
            );
        }
        match (agrees, exceptions.get(&id)) {
            (true, None) => tally.passed += 1,
            (false, Some(_)) => tally.excepted += 1,
            (true, Some(reason)) => problems.push(format!(
                "{id}: stale exception (the case now agrees; listed as: {reason})"
            )),
            (false, None) => problems.push(format!(
                "{id}: expected {}, got {} [{detail}]",
                case["expected_result"].as_str().unwrap_or("?"),
                if expected_ok { "FAILURE" } else { "SUCCESS" }
            )),
        }
    }
    for id in exceptions.keys() {
        if !seen.contains(id) {
            problems.push(format!(
                "{id}: stale exception (no such case in the corpus)"
            ));
        }
    }
    let elapsed = started.elapsed();
    let total = by_ns.values().fold(Tally::default(), |a, t| Tally {
        run: a.run + t.run,
        passed: a.passed + t.passed,
        excepted: a.excepted + t.excepted,
    });
    println!("x509-limbo: {}", corpus_path().display());
    println!(
        "{:<14} {:>5} {:>7} {:>9}",
        "namespace", "run", "passed", "excepted"
    );
    for (ns, t) in &by_ns {
        println!("{ns:<14} {:>5} {:>7} {:>9}", t.run, t.passed, t.excepted);
    }
    println!(
        "{:<14} {:>5} {:>7} {:>9}",
        "total", total.run, total.passed, total.excepted
    );
    println!(
        "run time {:.2} s (slowest case {} in {:.3} s)",
        elapsed.as_secs_f64(),
        slowest.1,
        slowest.0.as_secs_f64()
    );
    assert!(
        elapsed <= TIME_LIMIT,
        "the corpus took {elapsed:?} (limit {TIME_LIMIT:?})"
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
