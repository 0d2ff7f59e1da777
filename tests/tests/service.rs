//! The daemon as a system service: `sd_notify` readiness (`READY=1` only once the API answers,
//! never with a wrong PIN), watchdog pings, `SIGHUP` reloads (log level, the listener's TLS
//! certificate), HTTPS on the listener (certificate files, or a certificate issued from a role;
//! judged by curl and `openssl s_client`), `SIGTERM` in the middle of a burst of issuance (nothing
//! that was answered `200` is lost, nothing is half-written), and the unit file
//! (`systemd-analyze verify` and `security`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bin, free_port, openssl_ok, Daemon};
use serde_json::{json, Value};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One `sd_notify` datagram, with what a health request answered right after a `READY=1`.
#[derive(Debug, Clone)]
struct Msg {
    text: String,
    health_at_ready: Option<String>,
}

/// A notification socket of the test's own, read by a thread. On every `READY=1` the thread runs
/// `on_ready` (a health request) before reading on, and keeps its answer with the message.
struct NotifySocket {
    env: String,
    msgs: Arc<Mutex<Vec<Msg>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    fn at_path(path: &Path, on_ready: impl Fn() -> String + Send + 'static) -> NotifySocket {
        let sock = UnixDatagram::bind(path).unwrap();
        Self::read(sock, path.to_str().unwrap().to_owned(), on_ready)
    }

    fn abstract_name(name: &str, on_ready: impl Fn() -> String + Send + 'static) -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        Self::read(sock, format!("@{name}"), on_ready)
    }

    fn read(
        sock: UnixDatagram,
        env: String,
        on_ready: impl Fn() -> String + Send + 'static,
    ) -> NotifySocket {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (msgs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let health_at_ready = text.lines().any(|l| l == "READY=1").then(&on_ready);
                m.lock().unwrap().push(Msg {
                    text,
                    health_at_ready,
                });
            }
        });
        NotifySocket { env, msgs, stop }
    }

    fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// The index of the first message from `from` on that has line `line`.
    fn wait_for(&self, line: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.all();
            if let Some(i) = all
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| m.text.lines().any(|l| l == line || l.starts_with(line)))
                .map(|(i, _)| i)
            {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} from message {from} on within {timeout:?}: {all:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `curl` status code for `url` (`000` when there was no HTTP answer at all).
fn curl_status(url: &str, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl on PATH");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A dev-mode data directory (token, PIN, database, tenant `default`, admin token), not running.
fn provisioned() -> (tempfile::TempDir, String) {
    let d = Daemon::start();
    let admin = d.admin.clone();
    (d.into_dir(), admin)
}

/// The dev configuration of `dir`, moved to `port`, with `log` as its level and `extra` appended
/// (for example a `[server.tls]` table); written to `dir/<name>`.
fn config(dir: &Path, name: &str, port: u16, log: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("data/scaivault.toml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("listen = ") {
            out.push_str(&format!("listen = \"127.0.0.1:{port}\"\n"));
        } else if line.starts_with("public_base_url = ") {
            out.push_str(&format!("public_base_url = \"http://127.0.0.1:{port}\"\n"));
        } else if line.starts_with("level = ") {
            out.push_str(&format!("level = \"{log}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(extra);
    let p = dir.join(name);
    std::fs::write(&p, out).unwrap();
    p
}

/// Starts `scaivault --config CONFIG serve` with `env`; stderr to `log`. `RUST_LOG` is removed so
/// that `[log] level` governs.
fn serve(config: &Path, env: &[(&str, &str)], log: &Path) -> Child {
    let mut c = Command::new(bin());
    c.arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("RUST_LOG")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_log(log: &Path, needle: &str) -> String {
    wait_log_for(log, needle, Duration::from_secs(10))
}

fn wait_log_for(log: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in the log: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ready_only_once_the_api_answers_then_watchdog_reload_and_graceful_stop() {
    let (dir, _) = provisioned();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cfg = config(dir.path(), "serve.toml", port, "warn", "");
    let health = format!("{base}/v1/sys/health");
    let h = health.clone();
    let notify = NotifySocket::at_path(&dir.path().join("notify"), move || curl_status(&h, &[]));
    let log = dir.path().join("serve.log");
    let mut child = serve(
        &cfg,
        &[("NOTIFY_SOCKET", &notify.env), ("WATCHDOG_USEC", "900000")],
        &log,
    );

    let ready = notify.wait_for("READY=1", 0, Duration::from_secs(60));
    let all = notify.all();
    let msg = &all[ready];
    assert_eq!(
        msg.health_at_ready.as_deref(),
        Some("200"),
        "READY=1 came before the API answered: {all:#?}"
    );
    assert!(
        msg.text
            .contains(&format!("STATUS=serving on http://127.0.0.1:{port}")),
        "{}",
        msg.text
    );
    assert!(
        all[..ready].iter().any(|m| m
            .text
            .starts_with("STATUS=starting: logging in to the HSM token")),
        "progress is reported before READY=1: {all:#?}"
    );
    // The watchdog: WATCHDOG_USEC=0.9 s, so a ping every 0.3 s while token and scheduler live.
    let w = notify.wait_for("WATCHDOG=1", ready, Duration::from_secs(5));
    notify.wait_for("WATCHDOG=1", w + 1, Duration::from_secs(5));

    // SIGHUP: the log level goes from warn to info. Request lines are logged at info.
    let tagged = |id: &str| curl_status(&health, &["-H", &format!("X-Request-Id: {id}")]);
    assert_eq!(tagged("before-reload-1"), "200");
    config(dir.path(), "serve.toml", port, "info", "");
    let before = notify.all().len();
    signal(&child, "HUP");
    let r = notify.wait_for("RELOADING=1", before, Duration::from_secs(10));
    let again = notify.wait_for("READY=1", r, Duration::from_secs(10));
    assert_eq!(notify.all()[again].health_at_ready.as_deref(), Some("200"));
    assert_eq!(tagged("after-reload-1"), "200");
    let text = wait_log(&log, "after-reload-1");
    assert!(
        !text.contains("before-reload-1"),
        "at level warn no request line: {text}"
    );
    assert!(text.contains("log level changed"), "{text}");

    // SIGTERM: STOPPING=1, everything committed and closed, exit 0.
    let before = notify.all().len();
    signal(&child, "TERM");
    notify.wait_for("STOPPING=1", before, Duration::from_secs(10));
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    for line in [
        "queued database writes committed",
        "pkcs#11 sessions closed",
        "stopped",
    ] {
        assert!(text.contains(line), "{line:?} missing: {text}");
    }
    let stopping = notify.wait_for("STOPPING=1", before, Duration::ZERO);
    assert!(
        notify.all()[stopping..]
            .iter()
            .all(|m| !m.text.contains("READY=1")),
        "{:#?}",
        notify.all()
    );
}

#[test]
fn a_wrong_pin_never_reports_ready_and_exits_with_a_clear_message() {
    let (dir, _) = provisioned();
    let port = free_port();
    let bad = dir.path().join("bad.pin");
    std::fs::write(&bad, "000000\n").unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), "badpin.toml", port, "info", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &data.join("hsm.pin").display().to_string(),
        &bad.display().to_string(),
    );
    std::fs::write(&cfg, text).unwrap();
    let name = format!("scaivault-test-notify-{}-{port}", std::process::id());
    let notify = NotifySocket::abstract_name(&name, || "unexpected".into());
    let log = dir.path().join("badpin.log");
    let mut child = serve(&cfg, &[("NOTIFY_SOCKET", &notify.env)], &log);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(!status.success(), "a wrong PIN must fail the start");
    // Its own exit status, which the unit does not restart on (RestartPreventExitStatus=3).
    assert_eq!(status.code(), Some(3), "{status:?}");
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/scaivault.service"),
    )
    .unwrap();
    assert!(unit.contains("\nRestartPreventExitStatus=3\n"), "{unit}");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("login refused"), "{err}");
    assert!(!err.contains("000000"), "the PIN must not be echoed: {err}");
    std::thread::sleep(Duration::from_millis(300));
    let all = notify.all();
    assert!(all.iter().all(|m| !m.text.contains("READY=1")), "{all:#?}");
    assert!(
        all.iter()
            .any(|m| m.text.starts_with("STATUS=failed: ") && m.text.contains("login refused")),
        "systemctl status shows why: {all:#?}"
    );
    assert_eq!(
        curl_status(&format!("http://127.0.0.1:{port}/v1/sys/health"), &[]),
        "000"
    );
    // A configuration that does not load says why the same way.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[server]\nlisten = \"127.0.0.1:1\"\nno_such_key = 1\n",
    )
    .unwrap();
    let log = dir.path().join("broken.log");
    let mut child = serve(&broken, &[("NOTIFY_SOCKET", &notify.env)], &log);
    assert!(!wait_exit(&mut child, Duration::from_secs(30)).success());
    std::thread::sleep(Duration::from_millis(300));
    let all = notify.all();
    assert!(
        all.iter()
            .any(|m| m.text.starts_with("STATUS=failed: configuration")),
        "{all:#?}"
    );
}

/// The SHA-256 fingerprint of the certificate the listener on `port` presents.
fn served_fingerprint(dir: &Path, port: u16) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let pem = scaivault_tests::write(dir, "served.pem", &String::from_utf8_lossy(&out.stdout));
    openssl_ok(&["x509", "-in", &pem, "-noout", "-fingerprint", "-sha256"])
}

fn fingerprint(pem: &Path) -> String {
    openssl_ok(&[
        "x509",
        "-in",
        pem.to_str().unwrap(),
        "-noout",
        "-fingerprint",
        "-sha256",
    ])
}

/// A test CA and two server certificates for `localhost` / 127.0.0.1 signed by it.
fn tls_files(dir: &Path) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "30",
        "-subj",
        "/CN=test TLS CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let ext = scaivault_tests::write(
        dir,
        "server.ext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
    );
    for n in ["one", "two"] {
        openssl_ok(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &p(&format!("{n}.key")),
            "-out",
            &p(&format!("{n}.csr")),
            "-subj",
            &format!("/CN=localhost {n}"),
        ]);
        openssl_ok(&[
            "x509",
            "-req",
            "-in",
            &p(&format!("{n}.csr")),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &ext,
            "-out",
            &p(&format!("{n}.pem")),
        ]);
    }
}

fn install_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::copy(dir.join(cert), dir.join("api.pem")).unwrap();
    std::fs::copy(dir.join(key), dir.join("api.key")).unwrap();
}

#[test]
fn https_from_certificate_files_and_sighup_swaps_the_certificate() {
    let (dir, _) = provisioned();
    let d = dir.path();
    tls_files(d);
    install_pair(d, "one.pem", "one.key");
    let port = free_port();
    let tls = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        d.join("api.pem").display(),
        d.join("api.key").display()
    );
    let cfg = config(d, "tls.toml", port, "info", &tls);
    let url = format!("https://127.0.0.1:{port}/v1/sys/health");
    let ca = d.join("ca.pem").display().to_string();
    let (u, c) = (url.clone(), ca.clone());
    let notify = NotifySocket::at_path(&d.join("notify"), move || {
        curl_status(&u, &["--cacert", &c])
    });
    let log = d.join("tls.log");
    let mut child = serve(&cfg, &[("NOTIFY_SOCKET", &notify.env)], &log);

    let ready = notify.wait_for("READY=1", 0, Duration::from_secs(60));
    let msg = &notify.all()[ready];
    assert_eq!(msg.health_at_ready.as_deref(), Some("200"), "{msg:?}");
    assert!(msg.text.contains("https://127.0.0.1:"), "{}", msg.text);
    assert_eq!(curl_status(&url, &["--cacert", &ca]), "200");
    assert_eq!(served_fingerprint(d, port), fingerprint(&d.join("one.pem")));
    assert_ne!(
        curl_status(&format!("http://127.0.0.1:{port}/v1/sys/health"), &[]),
        "200",
        "plain HTTP must not be served"
    );

    // A key that does not belong to the certificate: the reload fails, nothing changes.
    install_pair(d, "two.pem", "one.key");
    let before = notify.all().len();
    signal(&child, "HUP");
    let r = notify.wait_for("READY=1", before, Duration::from_secs(10));
    assert!(
        notify.all()[r].text.contains("reload failed"),
        "{:?}",
        notify.all()[r]
    );
    wait_log(&log, "does not belong to the certificate");
    assert_eq!(served_fingerprint(d, port), fingerprint(&d.join("one.pem")));

    // The renewed pair: SIGHUP swaps it in; the API keeps answering.
    install_pair(d, "two.pem", "two.key");
    let before = notify.all().len();
    signal(&child, "HUP");
    notify.wait_for("RELOADING=1", before, Duration::from_secs(10));
    let r = notify.wait_for("READY=1", before, Duration::from_secs(20));
    assert_eq!(notify.all()[r].health_at_ready.as_deref(), Some("200"));
    assert_eq!(served_fingerprint(d, port), fingerprint(&d.join("two.pem")));
    assert_eq!(curl_status(&url, &["--cacert", &ca]), "200");
    wait_log(&log, "restarting the http listener with the new settings");

    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn https_with_a_certificate_issued_from_a_role_at_start() {
    let d = Daemon::start();
    let admin = d.admin.clone();
    let root = d.create_root("listener", "ec", Some(256));
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "api-tls", "ca_id": root["id"], "allowed_domains": ["localhost"],
                "allow_ip_sans": true, "max_ttl": "720h", "key_type": "ec", "key_bits": 256}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let root_pem = d
        .call(
            "GET",
            &format!("/v1/pki/ca/{}/certificate", root["id"].as_str().unwrap()),
            None,
            None,
        )
        .text();
    let dir = d.into_dir();
    let p = dir.path();
    std::fs::write(p.join("root.pem"), &root_pem).unwrap();
    let port = free_port();
    // A short life, so that the renewal (two thirds in; notBefore is backdated 30 s) comes
    // about 15 s after the start.
    let tls =
        "\n[server.tls]\nrole = \"api-tls\"\ntenant = \"default\"\ncommon_name = \"localhost\"\n\
               alt_names = [\"localhost\"]\nip_sans = [\"127.0.0.1\"]\nttl = \"35s\"\n";
    let cfg = config(p, "role.toml", port, "info", tls);
    let url = format!("https://127.0.0.1:{port}");
    let root_file = p.join("root.pem").display().to_string();
    let (u, c) = (format!("{url}/v1/sys/health"), root_file.clone());
    let notify = NotifySocket::at_path(&p.join("notify"), move || {
        curl_status(&u, &["--cacert", &c])
    });
    let log = p.join("role.log");
    let mut child = serve(&cfg, &[("NOTIFY_SOCKET", &notify.env)], &log);
    let ready = notify.wait_for("READY=1", 0, Duration::from_secs(60));
    assert_eq!(
        notify.all()[ready].health_at_ready.as_deref(),
        Some("200"),
        "{:?}",
        notify.all()
    );

    // openssl's verdict on the served chain, against the ScaiVault root.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            &root_file,
            "-verify_ip",
            "127.0.0.1",
            "-verify_return_error",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The certificate is in the inventory like any other, and audited as the daemon's.
    let listed = Command::new("curl")
        .args(["-s", "--cacert", &root_file, "-H"])
        .arg(format!("Authorization: Bearer {admin}"))
        .arg(format!("{url}/v1/pki/certificates?role=api-tls"))
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let items = listed["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{listed}");
    let db = rusqlite::Connection::open(p.join("data/scaivault.db")).unwrap();
    let audited: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'certificate.issue' AND token_id = 'daemon' \
             AND outcome = 'success'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 1);

    // Renewal: a new certificate from the role, a new listener, READY=1 again.
    let first = served_fingerprint(p, port);
    wait_log_for(
        &log,
        "restarting the http listener",
        Duration::from_secs(60),
    );
    let again = notify.wait_for("READY=1", ready + 1, Duration::from_secs(30));
    assert_eq!(notify.all()[again].health_at_ready.as_deref(), Some("200"));
    assert_ne!(
        served_fingerprint(p, port),
        first,
        "the renewed certificate is served"
    );
    let audited: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE action = 'certificate.issue' AND token_id = 'daemon' \
             AND outcome = 'success'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audited, 2);

    signal(&child, "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn sigterm_during_a_burst_of_issuance_loses_nothing_that_was_answered() {
    let mut d = Daemon::start();
    let root = d.create_root("burst", "ec", Some(256));
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "burst", "ca_id": root["id"], "allowed_domains": ["burst.test"],
                "allow_subdomains": true, "max_ttl": "720h", "key_type": "ec", "key_bits": 256}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ca_id = root["id"].as_str().unwrap().to_owned();

    // Six clients issue as fast as they can until the daemon goes away.
    let answered = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let other = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let (base, admin) = (d.base.clone(), d.admin.clone());
            let (answered, other) = (answered.clone(), other.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                for i in 0.. {
                    let body = json!({"common_name": format!("c{t}-{i}.burst.test"), "ttl": "1h"});
                    let sent = http
                        .post(format!("{base}/v1/pki/issue/burst"))
                        .header("Authorization", format!("Bearer {admin}"))
                        .header("Content-Type", "application/json")
                        .body(body.to_string())
                        .send();
                    let Ok(resp) = sent else { break };
                    let status = resp.status().as_u16();
                    let text = resp.text().unwrap_or_default();
                    if status == 200 {
                        let v: Value = serde_json::from_str(&text).unwrap();
                        answered.lock().unwrap().push((
                            v["serial_number"].as_str().unwrap().to_owned(),
                            v["certificate"].as_str().unwrap().to_owned(),
                        ));
                    } else {
                        other.lock().unwrap().push(format!("{status} {text}"));
                        break;
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.lock().unwrap().len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = d.terminate().expect("the daemon exits after SIGTERM");
    for w in workers {
        w.join().unwrap();
    }
    assert!(status.success(), "{status}: {}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("queued database writes committed"), "{log}");
    assert!(log.contains("pkcs#11 sessions closed"), "{log}");
    let answered = answered.lock().unwrap().clone();
    let other = other.lock().unwrap().clone();
    assert!(answered.len() >= 30, "only {} issued", answered.len());
    assert!(
        other.iter().all(|s| !s.starts_with('5')),
        "no request may fail with a server error while the daemon drains: {other:?}"
    );
    report(&format!(
        "burst: {} certificates answered 200 before SIGTERM ended the daemon",
        answered.len()
    ));

    // After a restart every answered certificate is there, unchanged.
    let dir = d.into_dir();
    let d = Daemon::start_in(dir);
    for (serial, pem) in &answered {
        let got = d.get(&format!("/v1/pki/certificates/{serial}"));
        assert_eq!(got.status, 200, "{serial}: {}", got.text());
        assert_eq!(got.json()["certificate"].as_str().unwrap(), pem.as_str());
    }
    // ... with its audit record; and nothing is half-written: no serial left reserved, no leaf
    // without its certificate or its success record.
    let db = rusqlite::Connection::open(d.data().join("scaivault.db")).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM certificates WHERE status = 'reserved'"),
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM certificates WHERE kind = 'leaf' AND (cert_der IS NULL OR \
             NOT EXISTS (SELECT 1 FROM audit a WHERE a.action = 'certificate.issue' AND \
             a.outcome = 'success' AND a.object_id = certificates.issuer_ca_id || ':' || \
             certificates.serial))"
        ),
        0
    );
    for (serial, _) in &answered {
        let key = serial.replace(':', "").to_uppercase();
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM audit WHERE action = 'certificate.issue' AND outcome = \
                 'success' AND object_id = ?1",
                [format!("{ca_id}:{key}")],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "audit record of {serial}");
    }
    let stored = count("SELECT COUNT(*) FROM certificates WHERE kind = 'leaf'");
    report(&format!(
        "burst: {stored} leaf certificates stored after the restart, {} answered 200",
        answered.len()
    ));
    assert!(stored >= answered.len() as i64);
    let verify = d.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

fn tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Skips (returns false) when `name` is missing outside CI; in CI a missing tool is a failure.
fn require(name: &str) -> bool {
    if tool(name) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} is missing: ci/install-deps.sh installs it"
    );
    report(&format!(
        "SKIPPED: {name} is not installed (ci/install-deps.sh installs it)"
    ));
    false
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes `text` to the test process's stderr directly, past the harness's output capture, so
/// that it shows in CI logs even when the test passes.
fn report(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

#[test]
fn the_unit_verifies_and_scores_2_0_or_better() {
    if !require("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `verify` needs the ExecStart= binary to exist: point it at the one under test.
    let unit = std::fs::read_to_string(repo().join("systemd/scaivault.service")).unwrap();
    let unit = unit.replace(
        "ExecStart=/usr/bin/scaivault",
        &format!("ExecStart={}", bin().display()),
    );
    let path = dir.path().join("scaivault.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.lines().all(|l| !l.contains("scaivault.service")),
        "systemd-analyze verify has findings: {said}"
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score: {text}{}", String::from_utf8_lossy(&out.stderr)));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    report(&format!(
        "systemd-analyze security --offline=yes scaivault.service: {score} ({})",
        line.trim()
    ));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");

    // sysusers and tmpfiles, applied to a scratch root.
    if !nix_root() || !require("systemd-sysusers") || !require("systemd-tmpfiles") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let st = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(repo().join("systemd/scaivault.sysusers"))
        .status()
        .unwrap();
    assert!(st.success());
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("scaivault:"))
        .unwrap_or_else(|| panic!("{passwd}"));
    assert!(entry.contains(":/var/lib/scaivault:"), "{entry}");
    let st = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(repo().join("systemd/scaivault.tmpfiles"))
        .status()
        .unwrap();
    assert!(st.success());
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(root.path().join("var/lib/scaivault")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    let uid: u32 = entry.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(meta.uid(), uid);
}

/// Whether the tests run as root (sysusers and tmpfiles chown into the scratch root).
fn nix_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
