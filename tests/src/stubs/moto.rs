//! moto's server (`moto[server]` from PyPI, installed by `ci/install-deps.sh` under
//! /opt/scaivault-ci/moto) as a local Route 53 API, without IAM authentication (the SigV4
//! signatures themselves are checked by moto in `scaivault-dns`'s own tests). A [`Mirror`] polls
//! the hosted zone's TXT record sets and reports every change to an [`OnChange`] hook.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::OnChange;

/// An `Authorization` header moto routes by (service in the credential scope); moto without
/// authentication does not check the signature.
const UNSIGNED: &str = "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=00";

/// A running moto server with one hosted zone.
pub struct Moto {
    /// `http://127.0.0.1:PORT`, the provider's `endpoint_url`.
    pub endpoint: String,
    /// The hosted zone's id (without `/hostedzone/`).
    pub zone_id: String,
    child: Child,
    dir: tempfile::TempDir,
}

fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

impl Moto {
    /// Starts `moto_server` (`$MOTO_SERVER`, else /opt/scaivault-ci/moto/bin/moto_server, else
    /// `PATH`) and creates the hosted zone `zone`.
    pub fn start(zone: &str) -> Moto {
        let bin = std::env::var_os("MOTO_SERVER")
            .map(PathBuf::from)
            .or_else(|| {
                let p = PathBuf::from("/opt/scaivault-ci/moto/bin/moto_server");
                p.is_file().then_some(p)
            })
            .unwrap_or_else(|| PathBuf::from("moto_server"));
        let dir = tempfile::Builder::new()
            .prefix("scaivault-moto-")
            .tempdir()
            .unwrap();
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run `bash ci/install-deps.sh` (as root)",
                    bin.display()
                )
            });
        let mut moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            zone_id: String::new(),
            child,
            dir,
        };
        let zone = zone.trim_end_matches('.');
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Name>{zone}.</Name><CallerReference>scaivault-acme-test</CallerReference></CreateHostedZoneRequest>"
        );
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let created = loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}):\n{}", moto.log());
            }
            let r = http
                .post(format!("{}/2013-04-01/hostedzone", moto.endpoint))
                .header("Authorization", UNSIGNED)
                .header("Content-Type", "application/xml")
                .body(body.clone())
                .send();
            match r {
                Ok(r) => break r.text().unwrap(),
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "moto_server not up in 60 s: {e}\n{}",
                        moto.log()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        moto.zone_id = xml_text(&created, "Id")
            .unwrap_or_else(|| panic!("CreateHostedZone: {created}"))
            .trim_start_matches("/hostedzone/")
            .to_string();
        moto
    }

    /// A route53 provider config for the hosted zone with these (arbitrary) credentials.
    pub fn config(&self, access_key_id: &str, secret_access_key: &str) -> Value {
        json!({
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "region": "us-east-1",
            "hosted_zone_id": self.zone_id,
            "endpoint_url": self.endpoint,
        })
    }

    /// The zone's TXT record sets: absolute name → values (unquoted, sorted), through an
    /// unsigned ListResourceRecordSets.
    pub fn txt_sets(&self) -> BTreeMap<String, Vec<String>> {
        txt_sets(
            &reqwest::blocking::Client::new(),
            &self.endpoint,
            &self.zone_id,
        )
    }

    /// Starts polling the zone (every 100 ms) and calls `on_change` for every name whose TXT
    /// values changed; stops when the [`Mirror`] is dropped.
    pub fn mirror(&self, on_change: OnChange) -> Mirror {
        let stop = Arc::new(AtomicBool::new(false));
        let (endpoint, zone, flag) = (self.endpoint.clone(), self.zone_id.clone(), stop.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                let now = txt_sets(&http, &endpoint, &zone);
                let names: std::collections::BTreeSet<&String> =
                    seen.keys().chain(now.keys()).collect();
                for name in names {
                    if seen.get(name) != now.get(name) {
                        on_change(name, now.get(name).map_or(&[][..], Vec::as_slice));
                    }
                }
                seen = now;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Mirror { stop }
    }

    /// moto's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

fn txt_sets(
    http: &reqwest::blocking::Client,
    endpoint: &str,
    zone: &str,
) -> BTreeMap<String, Vec<String>> {
    let xml = http
        .get(format!("{endpoint}/2013-04-01/hostedzone/{zone}/rrset"))
        .header("Authorization", UNSIGNED)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for set in xml.split("<ResourceRecordSet>").skip(1) {
        if xml_text(set, "Type").as_deref() != Some("TXT") {
            continue;
        }
        let Some(name) = xml_text(set, "Name") else {
            continue;
        };
        let mut values: Vec<String> = set
            .split("<Value>")
            .skip(1)
            .filter_map(|v| v.find("</Value>").map(|end| &v[..end]))
            .map(|v| v.replace("&quot;", "\"").trim_matches('"').to_string())
            .collect();
        values.sort();
        out.insert(name, values);
    }
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The polling thread of [`Moto::mirror`]; stops when dropped.
pub struct Mirror {
    stop: Arc<AtomicBool>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
