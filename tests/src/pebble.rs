//! A pebble fixture (Debian's `pebble` 2.4, the ACME test CA from Let's Encrypt) for the ACME
//! client tests: `pebble-challtestsrv` answers pebble's DNS queries (every name resolves to
//! 127.0.0.1, no AAAA: see RECIPES §5's IPv6 trap) and serves no challenges of its own; pebble's
//! validation ports (`httpPort`, `tlsPort`) point at the daemon's challenge listeners. Pebble's
//! HTTPS certificate comes from a throwaway CA made with `openssl` here; the tests give that CA
//! to the daemon as the account's `directory_ca_pem`. Free ports throughout; both processes are
//! killed on drop.

use crate::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start pebble.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// Where pebble's VA connects for http-01 (the daemon's `http_challenge_listen` port).
    pub http_port: u16,
    /// Where pebble's VA connects for tls-alpn-01 (the daemon's `tls_challenge_listen` port).
    pub tls_port: u16,
    /// `PEBBLE_WFE_NONCEREJECT`: percentage of nonces refused with badNonce (0 here by default).
    pub nonce_reject: u8,
    /// `PEBBLE_VA_SLEEPTIME`: validations sleep up to this many seconds; `None` sets
    /// `PEBBLE_VA_NOSLEEP=1`.
    pub va_sleep_secs: Option<u32>,
    /// External account binding required, with this `(kid, base64url HMAC key)`.
    pub eab: Option<(String, String)>,
    /// The DNS server pebble asks (A records and dns-01 TXT records), e.g. a Knot fixture;
    /// `None`: challtestsrv, which answers 127.0.0.1 for every name.
    pub dns_server: Option<std::net::SocketAddr>,
}

impl PebbleOptions {
    /// Validation on these ports, no sleeps, no badNonce.
    pub fn new(http_port: u16, tls_port: u16) -> Self {
        PebbleOptions {
            http_port,
            tls_port,
            nonce_reject: 0,
            va_sleep_secs: None,
            eab: None,
            dns_server: None,
        }
    }
}

/// Running pebble and challtestsrv.
pub struct Pebble {
    pebble: Option<Child>,
    challtestsrv_proc: Option<Child>,
    /// Scratch directory (certificates, config, logs).
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT/dir`.
    pub directory_url: String,
    /// The CA of pebble's HTTPS certificate (for `directory_ca_pem`).
    pub tls_ca_pem: String,
    /// challtestsrv: its DNS server (pebble's resolver unless `dns_server` was set) and its
    /// management API.
    pub challtestsrv: ChallTestSrv,
    mgmt_port: u16,
}

/// The addresses of a running `pebble-challtestsrv`.
#[derive(Debug, Clone)]
pub struct ChallTestSrv {
    /// Its DNS server (UDP and TCP).
    pub dns: std::net::SocketAddr,
    /// Its management API (`/set-txt`, `/clear-txt`, …).
    pub management: std::net::SocketAddr,
}

impl ChallTestSrv {
    /// Makes challtestsrv serve exactly `values` as the TXT records at `fqdn` (absolute):
    /// `/clear-txt`, then one `/set-txt` per value. Plain blocking HTTP/1.1 on a `TcpStream`, so
    /// it can be called from inside a stub's async handler.
    pub fn set_txt_values(&self, fqdn: &str, values: &[String]) {
        let host = format!("{}.", fqdn.trim_end_matches('.'));
        self.post("/clear-txt", &serde_json::json!({ "host": host }));
        for v in values {
            self.post("/set-txt", &serde_json::json!({ "host": host, "value": v }));
        }
    }

    /// A record-change hook for the stubs ([`crate::stubs::OnChange`]) that mirrors every change
    /// into this challtestsrv.
    pub fn mirror(&self) -> crate::stubs::OnChange {
        let me = self.clone();
        std::sync::Arc::new(move |fqdn: &str, values: &[String]| me.set_txt_values(fqdn, values))
    }

    fn post(&self, path: &str, body: &serde_json::Value) {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut s = std::net::TcpStream::connect(self.management).expect("challtestsrv management");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.management,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "challtestsrv {path} {body}: {answer}"
        );
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes into `dir` a test TLS CA (`tls-ca.pem`, `tls-ca.key`) and a server certificate from it
/// for `localhost`, 127.0.0.1 and ::1 (`localhost.pem`, `localhost.key`): pebble's HTTPS, and any
/// other HTTPS server a test starts.
pub fn https_tls(dir: &Path) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    run_ok(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("tls-ca.key"),
        "-out",
        &p("tls-ca.pem"),
        "-days",
        "30",
        "-subj",
        "/CN=pebble test TLS CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]));
    run_ok(Command::new("openssl").args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("localhost.key"),
        "-out",
        &p("localhost.csr"),
        "-subj",
        "/CN=localhost",
    ]));
    std::fs::write(
        dir.join("localhost.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    run_ok(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("localhost.csr"),
        "-CA",
        &p("tls-ca.pem"),
        "-CAkey",
        &p("tls-ca.key"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &p("localhost.ext"),
        "-out",
        &p("localhost.pem"),
    ]));
}

impl Pebble {
    /// Starts challtestsrv and pebble and waits until pebble's directory answers.
    ///
    /// The ports are picked free but released before the processes bind them, so a test running
    /// beside this one can take one in between (pebble then exits with "address already in use"):
    /// up to three attempts, with fresh ports each time.
    pub fn start(opts: &PebbleOptions) -> Pebble {
        let mut last = String::new();
        for attempt in 1..=3 {
            match Self::try_start(opts) {
                Ok(p) => return p,
                Err(log) => {
                    eprintln!("pebble attempt {attempt} failed: {log}");
                    last = log;
                }
            }
        }
        panic!("pebble did not start (3 attempts, fresh ports each): {last}");
    }

    /// One attempt of [`Pebble::start`]: pebble's log when it exits or does not answer in 20 s.
    fn try_start(opts: &PebbleOptions) -> Result<Pebble, String> {
        let dir = tempfile::Builder::new()
            .prefix("scaivault-pebble-")
            .tempdir()
            .unwrap();
        https_tls(dir.path());
        let (acme_port, mgmt_port, dns_port, cts_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let log = |n: &str| std::fs::File::create(dir.path().join(n)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-management", &format!("127.0.0.1:{cts_mgmt}")])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv on PATH (apt-get install pebble)");
        let cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.path().join("localhost.pem"),
            "privateKey": dir.path().join("localhost.key"),
            "httpPort": opts.http_port,
            "tlsPort": opts.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": opts.eab.is_some(),
            "externalAccountMACKeys": opts.eab.iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
        }});
        let cfg_path = dir.path().join("pebble-config.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&cfg_path)
            .args([
                "-dnsserver",
                &opts
                    .dns_server
                    .map_or_else(|| format!("127.0.0.1:{dns_port}"), |a| a.to_string()),
            ])
            .env("PEBBLE_WFE_NONCEREJECT", opts.nonce_reject.to_string())
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"));
        match opts.va_sleep_secs {
            None => cmd.env("PEBBLE_VA_NOSLEEP", "1"),
            Some(s) => cmd.env("PEBBLE_VA_SLEEPTIME", s.to_string()),
        };
        let pebble = cmd
            .spawn()
            .expect("pebble on PATH (apt-get install pebble)");
        let mut p = Pebble {
            pebble: Some(pebble),
            challtestsrv_proc: Some(challtestsrv),
            directory_url: format!("https://127.0.0.1:{acme_port}/dir"),
            tls_ca_pem: std::fs::read_to_string(dir.path().join("tls-ca.pem")).unwrap(),
            challtestsrv: ChallTestSrv {
                dns: ([127, 0, 0, 1], dns_port).into(),
                management: ([127, 0, 0, 1], cts_mgmt).into(),
            },
            dir,
            mgmt_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.curl(&p.directory_url).is_none() {
            let exited = [&mut p.pebble, &mut p.challtestsrv_proc]
                .into_iter()
                .any(|c| {
                    c.as_mut()
                        .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
                });
            if exited || Instant::now() >= deadline {
                return Err(p.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(p)
    }

    /// GET `url` through `curl`, trusting pebble's TLS CA; the body when it answered 2xx.
    fn curl(&self, url: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sSf", "--max-time", "5", "--cacert"])
            .arg(self.dir.path().join("tls-ca.pem"))
            .arg(url)
            .output()
            .expect("curl on PATH");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Pebble's current root certificate (PEM), from the management port.
    pub fn root_pem(&self) -> String {
        self.curl(&format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .expect("pebble's root")
    }

    /// pebble's stdout and stderr so far.
    pub fn log(&self) -> String {
        let r = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", r("pebble.log"), r("pebble.err"))
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the pebble process: a stopped pebble accepts
    /// connections (the kernel does) and never answers.
    pub fn signal(&self, signal: &str) {
        let pid = self.pebble.as_ref().expect("pebble runs").id();
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Kills both processes.
    pub fn stop(&mut self) {
        for c in [self.pebble.take(), self.challtestsrv_proc.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}
