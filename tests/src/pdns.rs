//! A PowerDNS Authoritative Server fixture (SQLite backend, HTTP API on) for the ACME dns-01
//! tests: one zone, created through the API, on loopback ports. Pebble's `-dnsserver` points at
//! it. Killed on drop. (The `scaivault-dns` crate's own tests have an async twin.)

use crate::free_port;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API key of the test server.
pub const API_KEY: &str = "pdns-acme-test-api-key-0123456789";

/// A running `pdns_server`.
pub struct PowerDns {
    /// DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub api_url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl PowerDns {
    /// Serves `zone` (created through the API with NS `ns1.<zone>`).
    pub fn start(zone: &str) -> PowerDns {
        let pdns = ["/usr/sbin/pdns_server", "/usr/bin/pdns_server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("pdns_server (apt-get install pdns-server pdns-backend-sqlite3)");
        let schema = "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql";
        let dir = tempfile::Builder::new()
            .prefix("scaivault-pdns-")
            .tempdir()
            .unwrap();
        let db = dir.path().join("pdns.sqlite3");
        let status = Command::new("sqlite3")
            .arg(&db)
            .stdin(std::fs::File::open(schema).expect("pdns-backend-sqlite3 schema"))
            .status()
            .unwrap();
        assert!(status.success(), "creating the PowerDNS database failed");
        let (port, web) = (free_port(), free_port());
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\nlocal-address=127.0.0.1\nlocal-port={port}\n\
             api=yes\napi-key={API_KEY}\nwebserver=yes\nwebserver-address=127.0.0.1\n\
             webserver-port={web}\nwebserver-allow-from=127.0.0.0/8\nsocket-dir={d}\nguardian=no\n\
             daemon=no\ndisable-syslog=yes\nsecurity-poll-suffix=\ncache-ttl=0\n\
             negquery-cache-ttl=0\nquery-cache-ttl=0\n",
            db = db.display(),
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("pdns.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.path().join("pdns.log")).unwrap();
        let child = Command::new(pdns)
            .arg(format!("--config-dir={}", dir.path().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = PowerDns {
            dns: ([127, 0, 0, 1], port).into(),
            api_url: format!("http://127.0.0.1:{web}"),
            child,
            dir,
        };
        let zone = zone.trim_end_matches('.');
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = http
                .post(format!("{}/api/v1/servers/localhost/zones", p.api_url))
                .header("X-API-Key", API_KEY)
                .json(&serde_json::json!({"name": format!("{zone}."), "kind": "Native", "nameservers": [format!("ns1.{zone}.")]}))
                .send();
            match r {
                Ok(resp) if resp.status().as_u16() == 201 => break,
                Ok(resp) => panic!(
                    "PowerDNS refused the zone: {}",
                    resp.text().unwrap_or_default()
                ),
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "PowerDNS API not up: {}",
                        p.log()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        while TcpStream::connect_timeout(&p.dns, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PowerDNS not serving DNS: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The daemon's powerdns provider config for this server.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "api_url": self.api_url,
            "api_key": API_KEY,
            "server_id": "localhost",
            "resolvers": [self.dns.to_string()],
            "propagation_timeout": "20s",
        })
    }

    /// pdns_server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }
}

impl Drop for PowerDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
