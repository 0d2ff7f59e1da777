//! Test support: real DNS servers (Knot, PowerDNS) and the moto server started from a temp dir on
//! free loopback ports, and a DNS query helper independent of the crate under test.
//! A missing server binary fails the test: nothing is skipped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The TSIG secret the Knot test servers trust (base64 of 32 bytes).
pub const TSIG_SECRET: &str = "c2NhaXZhdWx0LWRucy10ZXN0LXRzaWcta2V5LTMyYnl0ZXM=";
pub const TSIG_KEY: &str = "acme-update.";

/// A loopback port free for both TCP and UDP, outside the kernel's ephemeral range (a port from
/// `127.0.0.1:0` could be taken as the local end of another test's connection before the server
/// binds it: knotd then failed with "address already in use").
pub use scaivault_tests::free_port;

/// The path of a server binary; fails the test when it is not installed.
pub fn binary(name: &str, candidates: &[&str]) -> PathBuf {
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_file() {
            return p;
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("`{name}` is not installed: run `bash ci/install-deps.sh` (as root)");
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{what} exited ({status}):\n{}", self.log_text());
        }
    }
}

/// Asks `server` over TCP (no recursion) and returns the response.
pub async fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    try_query(server, name, rtype)
        .await
        .unwrap_or_else(|e| panic!("{server}: {name} {rtype}: {e}"))
}

/// [`query`], with a failure (timeout, refused or reset connection, bad answer) as an error:
/// a server that is still starting may accept a connection and reset it.
pub async fn try_query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<Message, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(
        Name::from_ascii(name).map_err(|e| format!("name: {e}"))?,
        rtype,
    ));
    let bytes = msg.to_vec().map_err(|e| format!("encode: {e}"))?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&bytes).await?;
        let mut lb = [0u8; 2];
        stream.read_exact(&mut lb).await?;
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(lb))];
        stream.read_exact(&mut resp).await?;
        Ok::<_, std::io::Error>(resp)
    };
    let resp = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Message::from_vec(&resp).map_err(|e| format!("decode: {e}"))
}

/// The TXT values `server` serves at `name`, sorted.
pub async fn txt_values(server: SocketAddr, name: &str) -> Vec<String> {
    let resp = query(server, name, RecordType::TXT).await;
    assert!(
        matches!(
            resp.metadata.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ),
        "{server} answered {} for {name} TXT",
        resp.metadata.response_code
    );
    let mut out: Vec<String> = resp
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Waits until `server` answers SOA for `zone` with NOERROR.
pub async fn wait_for_zone(server: SocketAddr, zone: &str, proc: &mut Proc, what: &str) {
    let start = Instant::now();
    loop {
        proc.assert_running(what);
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::spawn(async move { tokio::net::TcpStream::connect(server).await.is_ok() }),
        )
        .await;
        if matches!(attempt, Ok(Ok(true))) {
            // Not ready yet if the exchange fails (Knot may reset connections while it loads).
            if let Ok(resp) = try_query(server, zone, RecordType::SOA).await {
                if resp.metadata.response_code == ResponseCode::NoError && !resp.answers.is_empty()
                {
                    return;
                }
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!(
                "{what} did not serve {zone} within 20 s:\n{}",
                proc.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Knot DNS server on a loopback port, serving `zone` from a zone file and accepting dynamic
/// updates signed with [`TSIG_KEY`]/[`TSIG_SECRET`] (hmac-sha256).
pub struct Knot {
    pub addr: SocketAddr,
    pub zone: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Knot {
    /// `records`: extra zone-file lines (relative names).
    pub async fn start(zone: &str, records: &str, allow_updates: bool) -> Knot {
        Knot::start_full(zone, records, allow_updates, "hmac-sha256").await
    }

    /// An updatable zone whose key uses `algorithm`.
    pub async fn start_with_algorithm(zone: &str, algorithm: &str) -> Knot {
        Knot::start_full(zone, "", true, algorithm).await
    }

    async fn start_full(zone: &str, records: &str, allow_updates: bool, algorithm: &str) -> Knot {
        let knotd = binary("knotd", &["/usr/sbin/knotd"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let zone = zone.trim_end_matches('.').to_string();
        let acl = if allow_updates {
            "    acl: update\n"
        } else {
            ""
        };
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
             control:\n    listen: \"{d}/knot.sock\"\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{d}\"\n\
             key:\n  - id: {TSIG_KEY}\n    algorithm: {algorithm}\n    secret: {TSIG_SECRET}\n\
             acl:\n  - id: update\n    key: {TSIG_KEY}\n    action: update\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    semantic-checks: off\n\
             zone:\n  - domain: {zone}.\n{acl}"
        );
        std::fs::write(dir.path().join("knot.conf"), conf).expect("write knot.conf");
        let zonefile = format!(
            "$ORIGIN {zone}.\n$TTL 60\n\
             @ SOA ns1 hostmaster 1 3600 600 86400 60\n\
             @ NS ns1\n\
             ns1 A 127.0.0.1\n{records}\n"
        );
        std::fs::write(dir.path().join(format!("{zone}.zone")), zonefile).expect("zone file");
        let mut proc = Proc::spawn(
            Command::new(knotd)
                .arg("-c")
                .arg(dir.path().join("knot.conf")),
            dir.path().join("knotd.log"),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for_zone(addr, &format!("{zone}."), &mut proc, "knotd").await;
        Knot {
            addr,
            zone,
            proc,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }
}

/// A provider config for the rfc2136 provider against `knot`.
pub fn rfc2136_config(knot: &Knot) -> serde_json::Value {
    serde_json::json!({
        "server": knot.addr.to_string(),
        "zone": knot.zone,
        "tsig_key_name": TSIG_KEY,
        "tsig_algorithm": "hmac-sha256",
        "tsig_secret": TSIG_SECRET,
        "resolvers": [knot.addr.to_string()],
        "propagation_timeout": "20s",
    })
}

/// The API key of the PowerDNS test servers.
pub const PDNS_API_KEY: &str = "pdns-test-api-key-0123456789";

/// A PowerDNS Authoritative Server (SQLite backend) on loopback ports with its HTTP API on,
/// serving `zone` (created through the API).
pub struct PowerDns {
    pub dns: SocketAddr,
    pub api_url: String,
    pub zone: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl PowerDns {
    pub async fn start(zone: &str) -> PowerDns {
        let pdns = binary("pdns_server", &["/usr/sbin/pdns_server"]);
        let schema = Path::new("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql");
        assert!(
            schema.is_file(),
            "pdns-backend-sqlite3 is not installed: run `bash ci/install-deps.sh` (as root)"
        );
        let sqlite3 = binary("sqlite3", &["/usr/bin/sqlite3"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("pdns.sqlite3");
        let status = Command::new(sqlite3)
            .arg(&db)
            .stdin(std::fs::File::open(schema).expect("schema"))
            .status()
            .expect("sqlite3");
        assert!(status.success(), "creating the PowerDNS database failed");
        let port = free_port();
        let web = free_port();
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\n\
             local-address=127.0.0.1\nlocal-port={port}\n\
             api=yes\napi-key={PDNS_API_KEY}\n\
             webserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={web}\n\
             webserver-allow-from=127.0.0.0/8\n\
             socket-dir={d}\nguardian=no\ndaemon=no\ndisable-syslog=yes\n\
             security-poll-suffix=\n\
             cache-ttl=0\nnegquery-cache-ttl=0\nquery-cache-ttl=0\n",
            db = db.display(),
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("pdns.conf"), conf).expect("pdns.conf");
        let mut proc = Proc::spawn(
            Command::new(pdns).arg(format!("--config-dir={}", dir.path().display())),
            dir.path().join("pdns.log"),
        );
        let api_url = format!("http://127.0.0.1:{web}");
        let zone = zone.trim_end_matches('.').to_string();
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            proc.assert_running("pdns_server");
            let r = client
                .post(format!("{api_url}/api/v1/servers/localhost/zones"))
                .header("X-API-Key", PDNS_API_KEY)
                .json(&serde_json::json!({
                    "name": format!("{zone}."),
                    "kind": "Native",
                    "nameservers": [format!("ns1.{zone}.")],
                }))
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().as_u16() == 201 => break,
                Ok(resp) => panic!(
                    "PowerDNS refused to create the zone: {} {}",
                    resp.status(),
                    resp.text().await.unwrap_or_default()
                ),
                Err(_) if started.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("PowerDNS API not up in 20 s: {e}\n{}", proc.log_text()),
            }
        }
        let dns: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for_zone(dns, &format!("{zone}."), &mut proc, "pdns_server").await;
        PowerDns {
            dns,
            api_url,
            zone,
            proc,
            _dir: dir,
        }
    }

    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "api_url": self.api_url,
            "api_key": PDNS_API_KEY,
            "server_id": "localhost",
            "resolvers": [self.dns.to_string()],
            "propagation_timeout": "20s",
        })
    }
}

/// moto's server (a local AWS API), optionally with IAM authentication on: requests must then
/// carry a valid SigV4 signature by an access key moto issued (moto recomputes it with botocore).
/// The first actions (creating the user, its key, its policy and the hosted zone, plus
/// `extra_free` more) run before authentication starts.
///
/// moto 5.2.1 miscomputes the signature of Route 53 GET requests (ListResourceRecordSets fails
/// with SignatureDoesNotMatch for botocore's own signer too), so a test with authentication on
/// lets the provider's first GET through unauthenticated and checks the signed POST after it.
pub struct Moto {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub zone_id: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..]
        .find(&format!("</{tag}>"))
        .expect("closing tag")
        + start;
    xml[start..end].to_string()
}

impl Moto {
    pub async fn start(zone: &str, auth: Option<u32>) -> Moto {
        let moto = std::env::var("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| binary("moto_server", &["/opt/scaivault-ci/moto/bin/moto_server"]));
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(moto);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(extra_free) = auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", (4 + extra_free).to_string());
        }
        let mut proc = Proc::spawn(&mut cmd, dir.path().join("moto.log"));
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        // Unsigned set-up calls; moto routes them by the credential scope's service name.
        let scope = |svc: &str| {
            format!("AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/{svc}/aws4_request, SignedHeaders=host, Signature=00")
        };
        let iam = |form: Vec<(&'static str, String)>| {
            client
                .post(format!("{endpoint}/"))
                .header("Authorization", scope("iam"))
                .form(&form)
                .send()
        };
        let started = Instant::now();
        let user = loop {
            proc.assert_running("moto_server");
            match iam(vec![
                ("Action", "CreateUser".into()),
                ("UserName", "acme".into()),
                ("Version", "2010-05-08".into()),
            ])
            .await
            {
                Ok(r) => break r,
                Err(_) if started.elapsed() < Duration::from_secs(60) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("moto_server not up in 60 s: {e}\n{}", proc.log_text()),
            }
        };
        assert!(
            user.status().is_success(),
            "CreateUser: {}",
            user.text().await.unwrap_or_default()
        );
        let key = iam(vec![
            ("Action", "CreateAccessKey".into()),
            ("UserName", "acme".into()),
            ("Version", "2010-05-08".into()),
        ])
        .await
        .expect("CreateAccessKey")
        .text()
        .await
        .expect("body");
        let policy = iam(vec![
            ("Action", "PutUserPolicy".into()),
            ("UserName", "acme".into()),
            ("PolicyName", "dns01".into()),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"route53:*","Resource":"*"}]}"#.into(),
            ),
            ("Version", "2010-05-08".into()),
        ])
        .await
        .expect("PutUserPolicy");
        assert!(policy.status().is_success());
        let zone = zone.trim_end_matches('.');
        let created = client
            .post(format!("{endpoint}/2013-04-01/hostedzone"))
            .header("Authorization", scope("route53"))
            .header("Content-Type", "application/xml")
            .body(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Name>{zone}.</Name><CallerReference>scaivault-test</CallerReference></CreateHostedZoneRequest>"
            ))
            .send()
            .await
            .expect("CreateHostedZone")
            .text()
            .await
            .expect("body");
        let zone_id = xml_text(&created, "Id")
            .trim_start_matches("/hostedzone/")
            .to_string();
        Moto {
            endpoint,
            access_key_id: xml_text(&key, "AccessKeyId"),
            secret_access_key: xml_text(&key, "SecretAccessKey"),
            zone_id,
            proc,
            _dir: dir,
        }
    }

    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "region": "us-east-1",
            "hosted_zone_id": self.zone_id,
            "endpoint_url": self.endpoint,
        })
    }

    /// The TXT values of the record set at `name`: an unsigned ListResourceRecordSets (moto
    /// without authentication, or before it starts), independent of the signer under test.
    pub async fn txt_values(&self, name: &str) -> Vec<String> {
        let xml = reqwest::Client::new()
            .get(format!(
                "{}/2013-04-01/hostedzone/{}/rrset",
                self.endpoint, self.zone_id
            ))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=00",
            )
            .send()
            .await
            .expect("ListResourceRecordSets")
            .text()
            .await
            .expect("body");
        assert!(xml.contains("<ListResourceRecordSetsResponse"), "{xml}");
        let mut out = Vec::new();
        for set in xml.split("<ResourceRecordSet>").skip(1) {
            if xml_text(set, "Name") == name && xml_text(set, "Type") == "TXT" {
                for v in set.split("<Value>").skip(1) {
                    let v = &v[..v.find("</Value>").expect("</Value>")];
                    out.push(v.replace("&quot;", "\"").trim_matches('"').to_string());
                }
            }
        }
        out.sort();
        out
    }
}
