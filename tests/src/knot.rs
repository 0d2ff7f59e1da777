//! A Knot DNS fixture for the ACME dns-01 tests: one zone on a loopback port, accepting RFC 2136
//! dynamic updates signed with [`TSIG_KEY`]/[`TSIG_SECRET`] (hmac-sha256). Pebble's `-dnsserver`
//! points at it, so pebble's validation reads the TXT records our rfc2136 provider wrote. Killed on
//! drop. (The `scaivault-dns` crate's own tests have an async twin in `daemon/dns/tests/common`.)

use crate::free_port;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The TSIG key name.
pub const TSIG_KEY: &str = "acme-update.";
/// Its secret (base64).
pub const TSIG_SECRET: &str = "c2NhaXZhdWx0LWRucy10ZXN0LXRzaWcta2V5LTMyYnl0ZXM=";

/// A running `knotd`.
pub struct Knot {
    /// UDP and TCP address.
    pub addr: SocketAddr,
    /// The zone, without the trailing dot.
    pub zone: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Knot {
    /// Serves `zone` (SOA, NS, `ns1` A 127.0.0.1), updatable with the TSIG key.
    pub fn start(zone: &str) -> Knot {
        let knotd = ["/usr/sbin/knotd", "/usr/bin/knotd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("knotd (apt-get install knot)");
        let dir = tempfile::Builder::new()
            .prefix("scaivault-knot-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let d = dir.path().display();
        let zone = zone.trim_end_matches('.').to_owned();
        let conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
             control:\n    listen: \"{d}/knot.sock\"\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{d}\"\n\
             key:\n  - id: {TSIG_KEY}\n    algorithm: hmac-sha256\n    secret: {TSIG_SECRET}\n\
             acl:\n  - id: update\n    key: {TSIG_KEY}\n    action: update\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    semantic-checks: off\n\
             zone:\n  - domain: {zone}.\n    acl: update\n"
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        let zonefile = format!(
            "$ORIGIN {zone}.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 127.0.0.1\n"
        );
        std::fs::write(dir.path().join(format!("{zone}.zone")), zonefile).unwrap();
        let log = std::fs::File::create(dir.path().join("knotd.log")).unwrap();
        let child = Command::new(knotd)
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let k = Knot {
            addr,
            zone,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "knotd did not start: {}",
                k.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Loaded zones are logged; give it the moment it needs after binding.
        while !k.log().contains("loaded") {
            assert!(
                Instant::now() < deadline,
                "knotd did not load the zone: {}",
                k.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        k
    }

    /// The daemon's rfc2136 provider config for this server.
    pub fn rfc2136_config(&self) -> serde_json::Value {
        serde_json::json!({
            "server": self.addr.to_string(),
            "zone": self.zone,
            "tsig_key_name": TSIG_KEY,
            "tsig_algorithm": "hmac-sha256",
            "tsig_secret": TSIG_SECRET,
            "resolvers": [self.addr.to_string()],
            "propagation_timeout": "20s",
        })
    }

    /// The TXT values the zone holds now (read through `knotc zone-read`).
    pub fn txt_values(&self) -> Vec<String> {
        let knotc = ["/usr/sbin/knotc", "/usr/bin/knotc"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("knotc (apt-get install knot)");
        let out = Command::new(knotc)
            .arg("-s")
            .arg(self.dir.path().join("knot.sock"))
            .args(["zone-read", &format!("{}.", self.zone)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "knotc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" TXT "))
            .filter_map(|l| l.rsplit(' ').next())
            .map(|v| v.trim_matches('"').to_owned())
            .collect()
    }

    /// knotd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knotd.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
