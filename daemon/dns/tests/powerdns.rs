//! powerdns against a real PowerDNS Authoritative Server (SQLite backend) and its HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{txt_values, PowerDns, PDNS_API_KEY};
use scaivault_dns::DnsError;
use std::time::Duration;

#[tokio::test]
async fn two_values_at_one_name_then_cleanup_one() {
    let pdns = PowerDns::start("example.test").await;
    let p = scaivault_dns::build("powerdns", &pdns.config()).unwrap();
    let name = "_acme-challenge.www.example.test.";
    p.present(name, "value-one").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    // Presenting the same value again is harmless.
    p.present(name, "value-two").await.unwrap();
    assert_eq!(txt_values(pdns.dns, name).await, ["value-one", "value-two"]);
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(txt_values(pdns.dns, name).await, ["value-two"]);
    p.cleanup(name, "value-two").await.unwrap();
    assert!(txt_values(pdns.dns, name).await.is_empty());
    // The zone's own records are untouched.
    assert_eq!(
        common::query(pdns.dns, "example.test.", hickory_proto::rr::RecordType::NS)
            .await
            .answers
            .len(),
        1
    );
}

#[tokio::test]
async fn api_url_with_api_v1_suffix_and_longest_zone_match() {
    let pdns = PowerDns::start("example.test").await;
    // A sub-zone on the same server: names under it go there.
    reqwest::Client::new()
        .post(format!("{}/api/v1/servers/localhost/zones", pdns.api_url))
        .header("X-API-Key", PDNS_API_KEY)
        .json(&serde_json::json!({"name": "sub.example.test.", "kind": "Native", "nameservers": ["ns1.example.test."]}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let mut cfg = pdns.config();
    cfg["api_url"] = format!("{}/api/v1/", pdns.api_url).into();
    let p = scaivault_dns::build("powerdns", &cfg).unwrap();
    p.present("_acme-challenge.sub.example.test.", "in-sub")
        .await
        .unwrap();
    let zone: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/servers/localhost/zones/sub.example.test.",
            pdns.api_url
        ))
        .header("X-API-Key", PDNS_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let txt: Vec<_> = zone["rrsets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "TXT")
        .collect();
    assert_eq!(txt.len(), 1, "{zone}");
    assert_eq!(txt[0]["name"], "_acme-challenge.sub.example.test.");
    assert_eq!(txt[0]["records"][0]["content"], "\"in-sub\"");
}

#[tokio::test]
async fn wrong_api_key_is_a_provider_error_without_the_key() {
    let pdns = PowerDns::start("example.test").await;
    let wrong = "wrong-api-key-which-must-not-leak";
    let mut cfg = pdns.config();
    cfg["api_key"] = wrong.into();
    let p = scaivault_dns::build("powerdns", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.www.example.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(
        !text.contains(wrong) && !text.contains(PDNS_API_KEY),
        "{text}"
    );
    assert!(!format!("{p:?}").contains(wrong));

    // An unknown server_id is the provider's error too.
    let mut cfg = pdns.config();
    cfg["server_id"] = "nope".into();
    let p = scaivault_dns::build("powerdns", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.www.example.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
}

#[tokio::test]
async fn present_and_wait_then_cleanup_and_timeout() {
    let pdns = PowerDns::start("example.test").await;
    let cfg = pdns.config();
    let p = scaivault_dns::build("powerdns", &cfg).unwrap();
    let opts = scaivault_dns::options(&cfg).unwrap();
    let presented = scaivault_dns::present_and_wait(p.as_ref(), &opts, "www.example.test", "tok")
        .await
        .unwrap();
    assert_eq!(presented.fqdn, "_acme-challenge.www.example.test.");
    assert_eq!(txt_values(pdns.dns, &presented.fqdn).await, ["tok"]);
    scaivault_dns::cleanup(p.as_ref(), &presented)
        .await
        .unwrap();
    assert!(txt_values(pdns.dns, &presented.fqdn).await.is_empty());

    // Checked against a second server that never gets the record: timeout, record removed.
    let other = PowerDns::start("example.test").await;
    let mut cfg = pdns.config();
    cfg["resolvers"] = serde_json::json!([other.dns.to_string()]);
    cfg["propagation_timeout"] = "1s".into();
    let opts = scaivault_dns::options(&cfg).unwrap();
    assert_eq!(opts.propagation_timeout, Duration::from_secs(1));
    let err = scaivault_dns::present_and_wait(p.as_ref(), &opts, "www.example.test", "late")
        .await
        .unwrap_err();
    assert!(
        matches!(err, DnsError::PropagationTimeout { secs: 1, .. }),
        "{err:?}"
    );
    assert!(txt_values(pdns.dns, "_acme-challenge.www.example.test.")
        .await
        .is_empty());
}
