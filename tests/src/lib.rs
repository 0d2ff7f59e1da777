//! Test kit for ScaiVault's system tests. [`Daemon::start`] runs the real `scaivault` binary in dev
//! mode on a free loopback port with a fresh data directory (its own SoftHSM2 token and SQLite
//! file) and waits for `/v1/sys/health`; helpers call the API, run the CLI, and ask the `openssl`
//! command line for an independent verdict.
//!
//! The binary is `$SCAIVAULT_BIN`, or `target/debug/scaivault` of this workspace (honouring
//! `$CARGO_TARGET_DIR`); build it first (`cargo build -p scaivault`, as `ci/test.sh` does).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support: failing loudly is the point

pub mod ari;
pub mod contract;
pub mod knot;
pub mod pdns;
pub mod pebble;
pub mod pg;
pub mod stubs;

use serde_json::Value;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The scaivault binary under test.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SCAIVAULT_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/scaivault");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p scaivault` first (ci/test.sh does), or set SCAIVAULT_BIN",
        p.display()
    );
    p
}

/// The fault-injecting PKCS#11 module (`hsm/fault-shim`): `$SCAIVAULT_FAULT_SHIM`, or
/// `libscaivault_fault_shim.so` next to the daemon binary of this workspace's target directory
/// (built by `cargo build -p scaivault-fault-shim`, as `ci/test.sh` does).
pub fn fault_shim() -> PathBuf {
    if let Some(p) = std::env::var_os("SCAIVAULT_FAULT_SHIM") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug/libscaivault_fault_shim.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p scaivault-fault-shim` first (ci/test.sh does), or set SCAIVAULT_FAULT_SHIM",
        p.display()
    );
    p
}

/// The secret part of a bearer token `svt_<id>_<secret>`, for checking that it was not logged.
///
/// The secret is URL-safe base64 and may itself contain `_`: everything after the id's `_` is
/// the secret (the part after the last `_` can be a character or two that any log contains).
pub fn token_secret(token: &str) -> &str {
    let secret = token.splitn(3, '_').nth(2).unwrap_or_default();
    assert!(secret.len() >= 40, "not a bearer token: {token}");
    secret
}

/// The id of a bearer token `svt_<id>_<secret>`, as `token revoke` takes it (`tok_<id>`).
pub fn token_id(token: &str) -> String {
    let id = token.split('_').nth(1).unwrap_or_default();
    assert_eq!(id.len(), 32, "not a bearer token: {token}");
    format!("tok_{id}")
}

/// A free loopback port (TCP and UDP), for a server a test configures and starts later.
///
/// The port is taken from outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): a port the kernel hands out as `127.0.0.1:0` can be
/// taken, between this call and the server's bind, as the local end of any outgoing connection
/// (a daemon's PostgreSQL pool, a client of another test), and a server configured with it (an
/// ACME challenge listener pebble was told about) then cannot start. Outside that range only an
/// explicit bind can take it; ports are handed out round-robin from a per-process starting point
/// so that tests in one process do not pick the same one, and each is checked bindable.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (lo, hi) = static_port_range();
    let span = u32::from(hi - lo) + 1;
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let _ = NEXT.compare_exchange(u32::MAX, seed % span, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = lo + u16::try_from(n).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {lo}..={hi}")
}

/// The ports [`free_port`] draws from: below the ephemeral range when there is room, else above.
fn static_port_range() -> (u16, u16) {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = range
        .split_whitespace()
        .filter_map(|w| w.parse::<u16>().ok());
    let (low, high) = (it.next().unwrap_or(32768), it.next().unwrap_or(60999));
    if low > 12_000 {
        (10_000, low - 1)
    } else if high < 63_000 {
        (high + 1, 65_535)
    } else {
        panic!("the ephemeral port range {low}-{high} leaves no room for test servers")
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// `X-Request-Id`.
    pub request_id: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// Raw body.
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Asserts an RFC 9457 problem with `status` and `code`; returns the document.
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.content_type,
            "application/problem+json",
            "body: {}",
            self.text()
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["status"], status, "{v}");
        assert!(
            v["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:scaivault:problem:"),
            "{v}"
        );
        assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
        assert_eq!(v["request_id"].as_str(), self.request_id.as_deref(), "{v}");
        v
    }
}

/// A running dev-mode daemon.
pub struct Daemon {
    child: Option<Child>,
    /// The data directory.
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin token of tenant `default`.
    pub admin: String,
    /// The daemon's stderr log.
    pub log: PathBuf,
    /// The daemon's stdout.
    pub out: PathBuf,
    http: reqwest::blocking::Client,
}

impl Daemon {
    /// Starts a daemon in a fresh data directory.
    pub fn start() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("scaivault-test-")
            .tempdir()
            .unwrap();
        Self::start_in(dir)
    }

    /// Starts a daemon in a fresh data directory whose configuration ends with `extra` (TOML,
    /// e.g. an `[acme]` section): dev mode provisions the directory on a first start, then the
    /// daemon is stopped, `extra` appended, and started again.
    pub fn start_with_config(extra: &str) -> Daemon {
        let d = Self::start();
        let config = d.config();
        let dir = d.into_dir();
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push('\n');
        text.push_str(extra);
        std::fs::write(&config, text).unwrap();
        Self::start_in(dir)
    }

    /// Stops the daemon, passes its configuration through `edit` and starts it again in the same
    /// data directory (on a new port).
    pub fn restart_with(self, edit: impl Fn(String) -> String) -> Daemon {
        let config = self.config();
        let dir = self.into_dir();
        let text = edit(std::fs::read_to_string(&config).unwrap());
        std::fs::write(&config, text).unwrap();
        Self::start_in(dir)
    }

    /// Kills the daemon with SIGKILL (no graceful stop), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a daemon in `dir` (a fresh or a previously used data directory).
    pub fn start_in(dir: tempfile::TempDir) -> Daemon {
        Self::start_in_with_env(dir, &[])
    }

    /// Starts a second node of this daemon's cluster: its own data directory and port, this
    /// daemon's configuration (the same PostgreSQL database, SoftHSM2 token directory and PIN).
    /// `edit` may change the copied configuration (e.g. the node name). Needs the PostgreSQL
    /// backend (see [`pg`]).
    pub fn start_peer(&self, edit: impl Fn(String) -> String) -> Daemon {
        assert!(
            pg::enabled(),
            "a peer shares the database: run with SCAIVAULT_TEST_BACKEND=postgres"
        );
        let dir = tempfile::Builder::new()
            .prefix("scaivault-peer-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let text = edit(std::fs::read_to_string(self.config()).unwrap());
        std::fs::write(dir.path().join("data/scaivault.toml"), text).unwrap();
        Self::start_in(dir)
    }

    /// [`Daemon::start_in`] with extra environment variables for the daemon process.
    ///
    /// The port is picked free but released before the daemon binds it, so a test running beside
    /// this one can take it in between: when the daemon exits because its address is in use, it
    /// is started again on a fresh port (up to three attempts).
    pub fn start_in_with_env(
        mut dir: tempfile::TempDir,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        for attempt in 1..=3 {
            let mut d = Self::spawn_in(dir, env);
            match d.wait_healthy() {
                Ok(()) => {
                    d.admin = std::fs::read_to_string(d.data().join("admin.token"))
                        .unwrap()
                        .trim()
                        .to_owned();
                    return d;
                }
                Err(log) if attempt < 3 && log.contains("in use") => {
                    eprintln!("daemon start {attempt}: its port was taken, again on another");
                    dir = d.into_dir();
                }
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn_in(dir: tempfile::TempDir, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let port = free_port();
        let log = dir.path().join("daemon.log");
        let out = dir.path().join("daemon.out");
        let mut cmd = Command::new(bin());
        if pg::enabled() && !dir.path().join("data/scaivault.toml").exists() {
            // First start with the PostgreSQL backend: a database of its own.
            let db = pg::create_database();
            std::fs::write(dir.path().join(pg::DATABASE_FILE), &db.name).unwrap();
            cmd.env("SCAIVAULT_DEV_DATABASE_URL", &db.url);
        }
        let child = cmd
            .args(["dev", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(
                "RUST_LOG",
                std::env::var("SCAIVAULT_TEST_LOG")
                    .unwrap_or_else(|_| "debug,rocket=info,hyper=info".into()),
            )
            // The test's own variables last: they may set RUST_LOG too.
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            admin: String::new(),
            log,
            out,
            dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        };
        d
    }

    /// Waits until the daemon answers its health check; `Err` with its log when it exits first.
    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "daemon exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if let Ok(r) = self.http.get(format!("{}/v1/sys/health", self.base)).send() {
                if r.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon not healthy in 60 s: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The data directory the daemon was given.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs OpenSC's `pkcs11-tool` on the daemon's dev token (its SoftHSM2 configuration, logged
    /// in with its user PIN) with `args`, and checks that it succeeded; its standard output.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let pin = std::fs::read_to_string(self.data().join("hsm.pin")).unwrap();
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.data().join("softhsm/softhsm2.conf"))
            .args([
                "--module",
                "/usr/lib/softhsm/libsofthsm2.so",
                "--token-label",
                "scaivault-dev",
                "--login",
                "--pin",
                pin.trim(),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The generated configuration file.
    pub fn config(&self) -> PathBuf {
        self.data().join("scaivault.toml")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a request; `token` is sent as a bearer token when given.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Reply {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, format!("{}{}", self.base, path));
        if let Some(t) = token {
            rb = rb.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_vec());
        }
        // A body over the daemon's limit is answered 413 while the client may still be sending
        // it; the server then closes the connection and, depending on timing, the client sees
        // the reset instead of the answer. Such a request changes nothing: send it again.
        // It also must not leave a half-closed connection in the pool for the next request.
        let oversized = body.is_some_and(|b| b.len() > 1024 * 1024);
        if oversized {
            rb = rb.header("Connection", "close");
        }
        let mut tries = 0;
        let r = loop {
            tries += 1;
            let attempt = rb.try_clone().expect("a byte body can be cloned");
            match attempt.send() {
                Ok(r) => break r,
                Err(e) if oversized && tries < 8 && e.is_request() => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{method} {path}: {e:?}"),
            }
        };
        let status = r.status().as_u16();
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        let request_id = header("x-request-id");
        let cache_control = header("cache-control");
        let mut bytes = Vec::new();
        let mut r = r;
        r.read_to_end(&mut bytes).unwrap();
        let fetch = || {
            let doc = self
                .http
                .get(format!("{}/v1/openapi.json", self.base))
                .send()
                .ok()?;
            doc.status().is_success().then(|| doc.json().ok())?
        };
        if let Some(contract) = contract::get(fetch) {
            contract.check(&contract::Exchange {
                method,
                path,
                request: body,
                status,
                content_type: &content_type,
                body: &bytes,
            });
        }
        Reply {
            status,
            content_type,
            request_id,
            cache_control,
            bytes,
        }
    }

    /// `POST` JSON with the admin token.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(
            "POST",
            path,
            Some(&self.admin),
            Some(body.to_string().as_bytes()),
        )
    }

    /// `GET` with the admin token.
    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, Some(&self.admin), None)
    }

    /// The value of the unlabelled sample `name` in `GET /metrics` (panics when absent).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.call("GET", "/metrics", None, None).text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in /metrics: {text}"))
    }

    /// Runs `scaivault --config <this daemon's config> ARGS`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }

    /// Creates a root CA, asserting `201`; returns the response.
    pub fn create_root(&self, name: &str, key_type: &str, key_size: Option<u32>) -> Value {
        let mut body = serde_json::json!({
            "name": name, "common_name": format!("{name} Root CA"), "ca_type": "root",
            "key_type": key_type, "validity_days": 3650
        });
        if let Some(s) = key_size {
            body["key_size"] = s.into();
        }
        let r = self.post("/v1/pki/ca", &body);
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (at most 30 s) for the daemon to exit; its exit status, or `None`
    /// when it had to be killed (or was stopped already).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Stops the daemon and hands back its directory (to restart in it).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.take_dir()
    }

    /// [`Daemon::into_dir`] for a daemon held in a field: this value keeps an empty directory.
    pub fn take_dir(&mut self) -> tempfile::TempDir {
        self.stop();
        let tmp = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, tmp)
    }

    /// The stored bytes of the daemon's database, for "this secret is not stored in plaintext"
    /// checks: the SQLite file and its WAL, or a `pg_dump` of its PostgreSQL database with every
    /// `bytea` value also appended decoded.
    pub fn database_bytes(&self) -> Vec<u8> {
        if let Ok(name) = std::fs::read_to_string(self.dir.path().join(pg::DATABASE_FILE)) {
            return pg::dump(name.trim());
        }
        ["scaivault.db", "scaivault.db-wal"]
            .iter()
            .filter_map(|f| std::fs::read(self.data().join(f)).ok())
            .flatten()
            .collect()
    }

    /// The CA's published CRL (`GET /v1/pki/ca/{id}/crl`, DER) as `openssl crl -text`, after
    /// asserting that openssl verifies it against `trust` (a PEM file); `tag` names the copy kept
    /// in the test directory.
    pub fn crl_text(&self, ca_id: &str, trust: &str, tag: &str) -> String {
        let r = self.call("GET", &format!("/v1/pki/ca/{ca_id}/crl"), None, None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.content_type, "application/pkix-crl");
        verified_crl_text(self.dir.path(), &r.bytes, trust, tag)
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // The data directory goes with this value (not handed on by `into_dir`): so does its
        // PostgreSQL database.
        if let Ok(name) = std::fs::read_to_string(self.dir.path().join(pg::DATABASE_FILE)) {
            pg::drop_database(name.trim());
        }
    }
}

/// The CRL number in `openssl crl -text` output.
pub fn crl_number(text: &str) -> u64 {
    text.split("CRL Number:")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// A DER CRL as `openssl crl -text`, after asserting that openssl verifies it against `trust` (a
/// PEM file); the copy is kept as `<dir>/<tag>.crl`.
pub fn verified_crl_text(dir: &Path, der: &[u8], trust: &str, tag: &str) -> String {
    let p = dir.join(format!("{tag}.crl"));
    std::fs::write(&p, der).unwrap();
    let out = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        p.to_str().unwrap(),
        "-CAfile",
        trust,
        "-noout",
        "-text",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && err.contains("verify OK"), "{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `openssl ARGS`.
pub fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl on PATH")
}

/// Runs `openssl ARGS`, asserting success; returns stdout.
pub fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Runs `sqlite3 DB SQL`, asserting success.
pub fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 on PATH");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Small measuring helpers shared by the benchmark programs (`src/bin/bench-*.rs`).
pub mod webhook;

pub mod bench {
    /// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
    pub fn status_kib(pid: u32, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time (user + system) the process has used so far, in seconds; 0 when unreadable.
    pub fn cpu_secs(pid: u32) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start at field 3 (`state`);
        // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / 100.0
    }

    /// Time the live threads of process `pid` have spent runnable but waiting for a CPU, in
    /// seconds (the second field of `/proc/<pid>/task/<tid>/schedstat`, summed; threads that
    /// exited meanwhile are not counted); 0 when unreadable. On a machine with idle CPU this is the
    /// cost of waking threads: each hand-off between threads waits here before the woken thread
    /// runs.
    pub fn run_delay_secs(pid: u32) -> f64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0.0;
        };
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum::<f64>()
            / 1e9
    }

    /// Bytes and calls written so far by process `pid` through `write`-family system calls
    /// (`wchar`, `syscw` of `/proc/<pid>/io`: the database's WAL frames, checkpoints and logs, before
    /// the page cache); zeros when unreadable.
    pub fn written(pid: u32) -> (u64, u64) {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("wchar:"), field("syscw:"))
    }

    /// CPU seconds used so far by every live process whose command is `name` (e.g. the
    /// `postgres` server and its backends; processes that exited meanwhile are not counted).
    pub fn cpu_secs_of(name: &str) -> f64 {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
            })
            .map(cpu_secs)
            .sum()
    }

    /// The 1, 5 and 15 minute load averages.
    pub fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    }

    /// The `p` quantile (0.0..=1.0) of sorted samples; NaN when there are none.
    pub fn pct(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let last = sorted.len() - 1;
        let idx = ((last as f64) * p).round() as usize;
        sorted[idx.min(last)]
    }
}

/// Makes a key and a CSR with `openssl req` (key options `newkey`, e.g. `["-newkey", "ec",
/// "-pkeyopt", "ec_paramgen_curve:P-256"]`, subject `subj`, optional `subjectAltName` `san`) in
/// `dir`; returns the CSR's PEM and the key file's path.
pub fn make_csr(
    dir: &Path,
    tag: &str,
    newkey: &[&str],
    subj: &str,
    san: Option<&str>,
) -> (String, String) {
    let key = dir.join(format!("{tag}.key")).to_str().unwrap().to_owned();
    let csr = dir.join(format!("{tag}.csr")).to_str().unwrap().to_owned();
    let mut args = vec!["req", "-new"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", subj]);
    let ext;
    if let Some(s) = san {
        ext = format!("subjectAltName={s}");
        args.extend_from_slice(&["-addext", &ext]);
    }
    openssl_ok(&args);
    (std::fs::read_to_string(&csr).unwrap(), key)
}
