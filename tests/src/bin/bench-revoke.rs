//! Benchmark: revocation, CRLs and OCSP (issue #5, "Benchmark").
//!
//! Starts a dev daemon with an EC P-256 root + intermediate (keys in SoftHSM), then for each size
//! N seeds N revoked leaf rows straight into the SQLite file and measures: the synchronous CRL
//! rebuild (`POST /v1/pki/ca/{id}/crl`), CRL size, daemon peak RSS (VmHWM), revoke latency with N
//! already revoked, CRL downloads from the relying-party listener (rate and the daemon's peak
//! RSS), and OCSP responses/s from the cache (closed loop over loopback). The peers on
//! the same machine and data size are `openssl ca -gencrl` (time and peak RSS via
//! `/usr/bin/time -v`) and `openssl ocsp -index … -port …` as a responder. OCSP is measured in
//! rounds (`--rounds`, each row `--seconds` per round, every responder in turn within a round) and
//! reported by the median round, so that a slow spell of a shared machine does not decide a ratio.
//! Prints Markdown tables for `docs/PERFORMANCE.md`; asserts nothing about speed.
//!
//! ```sh
//! cargo build --release -p scaivault -p scaivault-tests
//! SCAIVAULT_BIN=target/release/scaivault target/release/bench-revoke \
//!     [--entries 100000,1000000] [--seconds 5] [--rounds 3] [--revokes 200] [--skip-openssl]
//! ```
//!
//! Note: `openssl ocsp -port` binds all interfaces (`[::]`) for the duration of its run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark driver

use scaivault_tests::bench::{loadavg, pct, status_kib};
use scaivault_tests::{free_port, openssl, write, Daemon};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Opts {
    entries: Vec<usize>,
    seconds: u64,
    revokes: usize,
    rounds: usize,
    skip_openssl: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-revoke [--entries 100000,1000000] [--seconds 5] [--rounds 3] [--revokes 200] [--skip-openssl]\n\
         (the daemon binary is $SCAIVAULT_BIN, e.g. target/release/scaivault)"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        entries: vec![100_000, 1_000_000],
        seconds: 5,
        revokes: 200,
        rounds: 3,
        skip_openssl: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--entries" => {
                o.entries = val()
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .replace('_', "")
                            .parse()
                            .unwrap_or_else(|_| usage())
                    })
                    .collect()
            }
            "--seconds" => o.seconds = val().parse().unwrap_or_else(|_| usage()),
            "--revokes" => o.revokes = val().parse().unwrap_or_else(|_| usage()),
            "--rounds" => o.rounds = val().parse().unwrap_or_else(|_| usage()),
            "--skip-openssl" => o.skip_openssl = true,
            _ => usage(),
        }
    }
    if o.entries.is_empty() || o.seconds == 0 || o.revokes == 0 || o.rounds == 0 {
        usage();
    }
    o.entries.sort_unstable();
    o
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| format!("load average: {}", loadavg()))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// splitmix64: random serials without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 16 bytes, uppercase hex, first nibble < 8 and the first byte non-zero (a minimal DER
    /// INTEGER of 16 bytes).
    fn serial(&mut self) -> String {
        let hi = (self.next() & 0x7FFF_FFFF_FFFF_FFFF) | 0x1000_0000_0000_0000;
        format!("{hi:016X}{:016X}", self.next())
    }
}

/// (year, month, day, hour, minute, second) of a Unix time (UTC).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (sod / 3600) as u32,
        (sod % 3600 / 60) as u32,
        (sod % 60) as u32,
    )
}

fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn utctime(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Inserts `n` revoked leaf rows for `ca_id` in one transaction. Returns the seconds taken.
fn seed(db: &Path, ca_id: &str, tenant: &str, n: usize, rng: &mut Rng) -> f64 {
    let t0 = Instant::now();
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(60)).unwrap();
    let now = now_secs();
    let (nb, na, ra) = (
        rfc3339(now - 86_400),
        rfc3339(now + 365 * 86_400),
        rfc3339(now),
    );
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    {
        let mut st = tx
            .prepare(
                "INSERT OR IGNORE INTO certificates (issuer_ca_id, serial, tenant_id, kind, role, \
                 common_name, status, not_before, not_after, revoked_at, revocation_reason, created_at) \
                 VALUES (?1, ?2, ?3, 'leaf', 'bench', ?4, 'revoked', ?5, ?6, ?7, 'key_compromise', ?7)",
            )
            .unwrap();
        for i in 0..n {
            st.execute(rusqlite::params![
                ca_id,
                rng.serial(),
                tenant,
                format!("seed-{i}.bench.internal"),
                nb,
                na,
                ra
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    t0.elapsed().as_secs_f64()
}

fn db_count(db: &Path, sql: &str, arg: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(60)).unwrap();
    c.query_row(sql, [arg], |r| r.get(0)).unwrap()
}

/// What a load run measured (latencies of successes, ms).
struct Load {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    lat_ms: Vec<f64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// The rounds of one OCSP configuration (responder, connections). Configurations are measured in
/// turns, round after round, so that a slow spell of this shared machine falls on every
/// responder rather than on one; the rate reported is the median round's.
#[derive(Default)]
struct Series {
    rounds: Vec<Load>,
    /// Latencies of every round together, sorted (ms).
    lat_ms: Vec<f64>,
}

impl Series {
    fn push(&mut self, mut l: Load) {
        self.lat_ms.append(&mut l.lat_ms);
        self.lat_ms.sort_by(f64::total_cmp);
        self.rounds.push(l);
    }

    fn rates(&self) -> Vec<f64> {
        self.rounds.iter().map(Load::rate).collect()
    }

    /// The median round's responses/s (the mean of the middle two for an even count).
    fn median_rate(&self) -> f64 {
        let mut r = self.rates();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => 0.0,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    fn ok(&self) -> usize {
        self.rounds.iter().map(|l| l.ok).sum()
    }

    fn errors(&self) -> usize {
        self.rounds.iter().map(|l| l.errors).sum()
    }

    fn first_error(&self) -> Option<&String> {
        self.rounds.iter().find_map(|l| l.first_error.as_ref())
    }

    /// `a / b / c` rounds, in the order run.
    fn rounds_text(&self) -> String {
        self.rates()
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// Closed loop: `conns` workers POST `body` to `url` for `dur`. With `fresh`, every request uses a
/// new connection (for `openssl ocsp`, which speaks HTTP/1.0 and closes); otherwise keep-alive.
///
/// The client is a few lines of HTTP/1.1 over a tokio `TcpStream` rather than reqwest: on two
/// cores the load generator shares the CPU with the responder, and a heavy client would measure
/// itself. Every answer is checked: status 200 and a non-empty body of the announced length.
async fn ocsp_load(url: &str, body: &[u8], conns: usize, dur: Duration, fresh: bool) -> Load {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let conn_hdr = if fresh { "close" } else { "keep-alive" };
    let mut req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: {conn_hdr}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    http_load(addr, req, conns, dur, fresh).await
}

/// Closed loop: `conns` keep-alive workers GET `url` for `dur` (the CRL downloads).
async fn get_load(url: &str, conns: usize, dur: Duration) -> Load {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    http_load(addr, req, conns, dur, false).await
}

/// Closed loop: `conns` workers send `req` to `addr` for `dur` (see [`ocsp_load`]).
async fn http_load(addr: &str, req: Vec<u8>, conns: usize, dur: Duration, fresh: bool) -> Load {
    let start = Instant::now();
    let deadline = start + dur;
    let mut hs = Vec::new();
    for _ in 0..conns {
        let (addr, req) = (addr.to_owned(), req.clone());
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errs = 0usize;
            let mut first = None;
            let mut conn: Option<tokio::net::TcpStream> = None;
            let mut buf = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let res = raw_exchange(&addr, &req, &mut conn, &mut buf, fresh).await;
                match res {
                    Ok(()) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        conn = None;
                        errs += 1;
                        first.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (lat, errs, first)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in hs {
        let (l, e, f) = h.await.unwrap();
        lat.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = start.elapsed();
    lat.sort_by(f64::total_cmp);
    Load {
        ok: lat.len(),
        errors,
        first_error,
        elapsed,
        lat_ms: lat,
    }
}

/// One request/response on `conn` (connecting first when there is none); with `fresh`, reads to
/// the end and drops the connection.
async fn raw_exchange(
    addr: &str,
    req: &[u8],
    conn: &mut Option<tokio::net::TcpStream>,
    buf: &mut Vec<u8>,
    fresh: bool,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if conn.is_none() {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        *conn = Some(s);
    }
    let s = conn.as_mut().ok_or("no connection")?;
    s.write_all(req).await.map_err(|e| format!("send: {e}"))?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    let (head_end, want) = loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            // Checked without allocating: the client shares the CPU with the responder.
            let head = &buf[..i];
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                return Err(String::from_utf8_lossy(line).into_owned());
            }
            let len = head.split(|&b| b == b'\n').find_map(|l| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                let (name, value) = l.split_at(l.iter().position(|&b| b == b':')?);
                name.eq_ignore_ascii_case(b"content-length")
                    .then(|| {
                        std::str::from_utf8(&value[1..])
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .flatten()
            });
            break (i + 4, len);
        }
    };
    match want {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("body cut short".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            if len == 0 {
                return Err("empty body".into());
            }
        }
        None => loop {
            let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        },
    }
    if fresh || want.is_none() {
        *conn = None;
    }
    Ok(())
}

/// Results for one size.
#[derive(Default)]
struct Row {
    n: usize,
    seed_s: f64,
    entries: u64,
    build_ms: f64,
    crl_bytes: usize,
    hwm_before: u64,
    hwm_after: u64,
    rss_after: u64,
    verify: String,
    revoke: Vec<f64>,
    revoke_errors: usize,
    crl_wait_s: f64,
    /// CRL downloads from the relying-party listener: the load, and the daemon's VmHWM before
    /// and after (KiB).
    crl_get: Option<(Load, u64, u64)>,
    /// ((listener, connections), rounds).
    ocsp: Vec<((&'static str, usize), Series)>,
    ocsp_check: String,
    peer: Option<Peer>,
    peer_note: String,
}

#[derive(Default)]
struct Peer {
    gencrl_s: f64,
    gencrl_rss_kib: u64,
    crl_der_bytes: usize,
    /// (connections, rounds) for `openssl ocsp`.
    ocsp: Vec<(usize, Series)>,
    ocsp_note: String,
}

/// A running `openssl ocsp -index` responder, answering.
struct PeerResponder {
    url: String,
    body: Vec<u8>,
    _srv: Kill,
    _dir: tempfile::TempDir,
}

/// The OCSP endpoints measured.
const PUBLIC: &str = "relying-party listener";
const API: &str = "API listener (Rocket)";

struct Pki {
    /// `http://` + `server.public_listen`.
    public_base: String,
    int_id: String,
    int_pem: String,
    trust_pem: String,
    tenant: String,
    db: PathBuf,
}

fn setup(d: &Daemon, public_base: String) -> Pki {
    let root = d.create_root("bench-root", "ec", Some(256));
    let int = d.post(
        "/v1/pki/ca",
        &json!({"name": "bench-int", "common_name": "Bench Revoke Intermediate", "ca_type": "intermediate",
                "parent_ca_id": root["id"], "key_type": "ec", "key_size": 256, "validity_days": 1825}),
    );
    assert_eq!(int.status, 201, "{}", int.text());
    let int = int.json();
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "bench", "ca_id": int["id"], "allowed_domains": ["*.bench.internal"],
                "max_ttl": "720h", "key_type": "ec", "key_bits": 256}),
    );
    assert_eq!(r.status, 201, "role: {}", r.text());
    for i in 0..2 {
        issue(d, &format!("probe-{i}.bench.internal"));
    }
    let tmp = d.dir.path();
    let int_text = int["certificate"].as_str().unwrap();
    let int_pem = write(tmp, "int.pem", int_text);
    let trust_pem = write(
        tmp,
        "trust.pem",
        &format!("{int_text}{}", root["certificate"].as_str().unwrap()),
    );
    let int_id = int["id"].as_str().unwrap().to_owned();
    let db = d.data().join("scaivault.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.busy_timeout(Duration::from_secs(60)).unwrap();
    let tenant: String = c
        .query_row(
            "SELECT tenant_id FROM certificates WHERE issuer_ca_id = ?1 AND kind = 'leaf' LIMIT 1",
            [&int_id],
            |r| r.get(0),
        )
        .unwrap();
    Pki {
        public_base,
        int_id,
        int_pem,
        trust_pem,
        tenant,
        db,
    }
}

fn issue(d: &Daemon, cn: &str) -> serde_json::Value {
    let r = d.post(
        "/v1/pki/issue/bench",
        &json!({"common_name": cn, "ttl": "24h"}),
    );
    assert_eq!(r.status, 200, "issue: {}", r.text());
    r.json()
}

fn bench_size(
    d: &Daemon,
    p: &Pki,
    rt: &tokio::runtime::Runtime,
    o: &Opts,
    n: usize,
    seeded: &mut usize,
    rng: &mut Rng,
) -> Row {
    let pid = d.pid();
    let tmp = d.dir.path();
    let mut row = Row {
        n,
        ..Row::default()
    };
    // 1. Seed up to N rows (the sizes are cumulative).
    let add = n.saturating_sub(*seeded);
    row.seed_s = seed(&p.db, &p.int_id, &p.tenant, add, rng);
    *seeded += add;
    eprintln!("[{n}] seeded {add} rows in {:.1} s", row.seed_s);

    // 2. Synchronous CRL rebuild.
    row.hwm_before = status_kib(pid, "VmHWM:");
    let t0 = Instant::now();
    let r = d.post(&format!("/v1/pki/ca/{}/crl", p.int_id), &json!({}));
    row.build_ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(r.status, 200, "rebuild: {}", r.text());
    row.entries = r.json()["entries"].as_u64().unwrap_or(0);
    row.hwm_after = status_kib(pid, "VmHWM:");
    row.rss_after = status_kib(pid, "VmRSS:");
    let crl = d.call("GET", &format!("/v1/pki/ca/{}/crl", p.int_id), None, None);
    assert_eq!(crl.status, 200, "get crl: {}", crl.text());
    row.crl_bytes = crl.bytes.len();
    let crl_path = tmp.join(format!("sv-{n}.crl"));
    std::fs::write(&crl_path, &crl.bytes).unwrap();
    let t0 = Instant::now();
    let out = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl_path.to_str().unwrap(),
        "-CAfile",
        &p.trust_pem,
        "-noout",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    row.verify = format!(
        "{} ({:.2} s)",
        if out.status.success() && err.contains("verify OK") {
            "verify OK".to_owned()
        } else {
            format!("FAILED: {}", err.trim())
        },
        t0.elapsed().as_secs_f64()
    );
    eprintln!(
        "[{n}] CRL: {} entries, {} B, {:.0} ms, {}",
        row.entries, row.crl_bytes, row.build_ms, row.verify
    );

    // 3. Revoke latency with N already revoked.
    let serials: Vec<String> = (0..o.revokes)
        .map(|i| {
            issue(d, &format!("rev-{n}-{i}.bench.internal"))["serial_number"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for s in &serials {
        let t0 = Instant::now();
        let r = d.post(
            "/v1/pki/revoke",
            &json!({"serial_number": s, "reason": "key_compromise"}),
        );
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if r.status == 200 {
            row.revoke.push(ms);
        } else {
            row.revoke_errors += 1;
            eprintln!("revoke {s}: HTTP {} {}", r.status, r.text());
        }
    }
    row.revoke.sort_by(f64::total_cmp);
    eprintln!(
        "[{n}] revoke p50 {:.2} p99 {:.2} ms",
        pct(&row.revoke, 0.5),
        pct(&row.revoke, 0.99)
    );
    // The revocations marked the CRL dirty; let the scheduler's rebuild finish before OCSP.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(180)
        && db_count(
            &p.db,
            "SELECT COALESCE(MAX(dirty), 0) FROM crl_state WHERE ca_id = ?1",
            &p.int_id,
        ) != 0
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    row.crl_wait_s = t0.elapsed().as_secs_f64();

    // 3b. CRL downloads from the relying-party listener: 4 connections, one shared copy.
    let crl_url = format!("{}/v1/pki/ca/{}/crl", p.public_base, p.int_id);
    let hwm = status_kib(pid, "VmHWM:");
    let l = rt.block_on(get_load(&crl_url, 4, Duration::from_secs(o.seconds)));
    eprintln!("[{n}] CRL GET c=4: {:.1}/s, {} errors", l.rate(), l.errors);
    row.crl_get = Some((l, hwm, status_kib(pid, "VmHWM:")));

    // 4. OCSP from the cache.
    let leaf = issue(d, &format!("ocsp-{n}.bench.internal"));
    let leaf_pem = write(
        tmp,
        &format!("leaf-{n}.pem"),
        leaf["certificate"].as_str().unwrap(),
    );
    let req = tmp.join(format!("req-{n}.der"));
    let out = openssl(&[
        "ocsp",
        "-issuer",
        &p.int_pem,
        "-cert",
        &leaf_pem,
        "-reqout",
        req.to_str().unwrap(),
        "-no_nonce",
    ]);
    assert!(
        out.status.success(),
        "openssl ocsp -reqout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = std::fs::read(&req).unwrap();
    let url = format!("{}/v1/pki/ocsp/{}", p.public_base, p.int_id);
    let resp = rt.block_on(async {
        reqwest::Client::new()
            .post(&url)
            .header("Content-Type", "application/ocsp-request")
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let resp_path = tmp.join(format!("resp-{n}.der"));
    std::fs::write(&resp_path, &resp).unwrap();
    let out = openssl(&[
        "ocsp",
        "-respin",
        resp_path.to_str().unwrap(),
        "-resp_text",
        "-noverify",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    row.ocsp_check = format!(
        "request {} B, response {} B: {}",
        body.len(),
        resp.len(),
        if out.status.success() && text.contains("Cert Status: good") {
            "parses, Cert Status: good".to_owned()
        } else {
            format!(
                "UNEXPECTED: {} {}",
                text.lines().take(5).collect::<Vec<_>>().join(" / "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        }
    );
    let api_url = format!("{}/v1/pki/ocsp/{}", d.base, p.int_id);

    // 5. The openssl peers: `openssl ca -gencrl`, then `openssl ocsp` left running.
    let mut responder = None;
    if o.skip_openssl {
        row.peer_note = "skipped (--skip-openssl)".into();
    } else {
        match peer(rt, n, rng) {
            Ok((pr, r)) => {
                row.peer = Some(pr);
                responder = r;
            }
            Err(e) => row.peer_note = e,
        }
    }

    // 6. OCSP in rounds: within a round every responder and concurrency in turn.
    let dur = Duration::from_secs(o.seconds);
    for round in 1..=o.rounds {
        for conns in [4usize, 16] {
            for (listener, url) in [(PUBLIC, &url), (API, &api_url)] {
                let l = rt.block_on(ocsp_load(url, &body, conns, dur, false));
                eprintln!(
                    "[{n}] round {round} OCSP {listener} c={conns}: {:.0}/s",
                    l.rate()
                );
                series(&mut row.ocsp, (listener, conns)).push(l);
            }
            if let (Some(r), Some(pr)) = (&responder, row.peer.as_mut()) {
                let l = rt.block_on(ocsp_load(&r.url, &r.body, conns, dur, true));
                eprintln!(
                    "[{n}] round {round} openssl ocsp c={conns}: {:.0}/s",
                    l.rate()
                );
                series(&mut pr.ocsp, conns).push(l);
            }
        }
    }
    if let Some(pr) = row.peer.as_mut() {
        let notes: Vec<String> = pr
            .ocsp
            .iter()
            .map(|(conns, s)| {
                format!(
                    "{conns} conns: {} errors{}",
                    s.errors(),
                    s.first_error()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        if !notes.is_empty() {
            pr.ocsp_note = format!("{}; {}", pr.ocsp_note, notes.join(", "));
        }
    }
    row
}

/// The series for `key` in `list`, added when missing.
fn series<K: PartialEq + Copy>(list: &mut Vec<(K, Series)>, key: K) -> &mut Series {
    let i = match list.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            list.push((key, Series::default()));
            list.len() - 1
        }
    };
    &mut list[i].1
}

/// Runs `cmd`, mapping failures to a message.
fn run(cmd: &mut Command, what: &str) -> Result<std::process::Output, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Kills the child (one we started) when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl ca -gencrl` on an index of `n` revoked entries, measured; then `openssl ocsp` on the
/// same index, started and answering (`None` with a note in the result when it does not answer).
fn peer(
    rt: &tokio::runtime::Runtime,
    n: usize,
    rng: &mut Rng,
) -> Result<(Peer, Option<PeerResponder>), String> {
    let dir = tempfile::Builder::new()
        .prefix("bench-revoke-openssl-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let w = dir.path();
    let ws = |f: &str| w.join(f).to_str().unwrap().to_owned();
    run(
        Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ws("ca.key"),
            "-out",
            &ws("ca.pem"),
            "-days",
            "365",
            "-subj",
            "/CN=Bench openssl CA",
        ]),
        "openssl req (CA)",
    )?;
    // The index: N revoked entries.
    let now = now_secs();
    let (exp, rev) = (utctime(now + 365 * 86_400), utctime(now));
    let mut idx = String::with_capacity(n * 80);
    let mut some_serial = String::new();
    for i in 0..n {
        let s = rng.serial();
        if i == n / 2 {
            some_serial = s.clone();
        }
        idx.push_str(&format!("R\t{exp}\t{rev}\t{s}\tunknown\t/CN=r-{i}\n"));
    }
    std::fs::write(w.join("index.txt"), idx).map_err(|e| e.to_string())?;
    std::fs::write(w.join("index.txt.attr"), "unique_subject = no\n").unwrap();
    std::fs::write(w.join("crlnumber"), "1000\n").unwrap();
    std::fs::write(
        w.join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = bench\n[bench]\ndatabase = {}\ncrlnumber = {}\ncertificate = {}\n\
             private_key = {}\ndefault_md = sha256\ndefault_crl_days = 7\nunique_subject = no\n",
            ws("index.txt"),
            ws("crlnumber"),
            ws("ca.pem"),
            ws("ca.key")
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let out = run(
        Command::new("/usr/bin/time").args([
            "-v",
            "openssl",
            "ca",
            "-config",
            &ws("ca.cnf"),
            "-gencrl",
            "-out",
            &ws("crl.pem"),
        ]),
        "/usr/bin/time -v openssl ca -gencrl (apt-get install -y time)",
    )?;
    let gencrl_s = t0.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let gencrl_rss_kib = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    run(
        Command::new("openssl").args([
            "crl",
            "-in",
            &ws("crl.pem"),
            "-outform",
            "DER",
            "-out",
            &ws("crl.der"),
        ]),
        "openssl crl -outform DER",
    )?;
    let crl_der_bytes = std::fs::metadata(w.join("crl.der")).map_or(0, |m| m.len() as usize);
    eprintln!("[{n}] openssl ca -gencrl: {gencrl_s:.2} s, {gencrl_rss_kib} KiB");
    let mut pr = Peer {
        gencrl_s,
        gencrl_rss_kib,
        crl_der_bytes,
        ..Peer::default()
    };

    // The OCSP responder on the same index (signed by the CA key itself, no delegated signer).
    run(
        Command::new("openssl").args([
            "ocsp",
            "-issuer",
            &ws("ca.pem"),
            "-serial",
            &format!("0x{some_serial}"),
            "-reqout",
            &ws("req.der"),
            "-no_nonce",
        ]),
        "openssl ocsp -reqout",
    )?;
    let body = std::fs::read(w.join("req.der")).unwrap();
    let port = free_port();
    let log = std::fs::File::create(w.join("ocsp.log")).unwrap();
    let srv = Kill(
        Command::new("openssl")
            .args([
                "ocsp",
                "-index",
                &ws("index.txt"),
                "-port",
                &port.to_string(),
                "-rsigner",
                &ws("ca.pem"),
                "-rkey",
                &ws("ca.key"),
                "-CA",
                &ws("ca.pem"),
                "-ndays",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("openssl ocsp: {e}"))?,
    );
    let url = format!("http://127.0.0.1:{port}/");
    // Wait with real requests (a bare connect-and-close would make it spin).
    let t0 = Instant::now();
    let ready = loop {
        let l = rt.block_on(ocsp_load(&url, &body, 1, Duration::from_millis(1), true));
        if l.ok > 0 {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if !ready {
        pr.ocsp_note = format!(
            "openssl ocsp did not answer in 120 s: {}",
            std::fs::read_to_string(w.join("ocsp.log")).unwrap_or_default()
        );
        return Ok((pr, None));
    }
    pr.ocsp_note = format!(
        "index of {n} loaded and answering after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok((
        pr,
        Some(PeerResponder {
            url,
            body,
            _srv: srv,
            _dir: dir,
        }),
    ))
}

fn print(rows: &[Row], o: &Opts) {
    println!("\n### CRL rebuild (`POST /v1/pki/ca/{{id}}/crl`, synchronous, HSM-signed EC P-256) vs `openssl ca -gencrl`\n");
    println!("| revoked rows | CRL entries | seed s | ScaiVault build ms | CRL DER bytes | daemon VmHWM before → after MiB (Δ) | VmRSS after MiB | openssl crl verify | openssl -gencrl s | openssl peak RSS MiB | openssl DER bytes |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let (gs, gm, gb) = r.peer.as_ref().map_or(
            ("–".to_owned(), "–".to_owned(), "–".to_owned()),
            |p| {
                (
                    format!("{:.2}", p.gencrl_s),
                    format!("{:.0}", mib(p.gencrl_rss_kib)),
                    p.crl_der_bytes.to_string(),
                )
            },
        );
        println!(
            "| {} | {} | {:.1} | {:.0} | {} | {:.0} → {:.0} (+{:.0}) | {:.0} | {} | {gs} | {gm} | {gb} |",
            r.n,
            r.entries,
            r.seed_s,
            r.build_ms,
            r.crl_bytes,
            mib(r.hwm_before),
            mib(r.hwm_after),
            mib(r.hwm_after.saturating_sub(r.hwm_before)),
            mib(r.rss_after),
            r.verify
        );
    }
    println!(
        "\n### Revoke latency (`POST /v1/pki/revoke`, one at a time, {} fresh leaves, keep-alive)\n",
        o.revokes
    );
    println!("| already revoked | ok | errors | p50 ms | p90 ms | p99 ms | max ms | wait for background CRL rebuild s |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let l = &r.revoke;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.entries,
            l.len(),
            r.revoke_errors,
            pct(l, 0.5),
            pct(l, 0.9),
            pct(l, 0.99),
            pct(l, 1.0),
            r.crl_wait_s
        );
    }
    println!(
        "\n### CRL downloads (`GET /v1/pki/ca/{{id}}/crl`, DER, relying-party listener, 4 keep-alive connections, {} s)\n",
        o.seconds
    );
    println!("| CRL entries | CRL DER bytes | downloads/s | MB/s | errors | p50 ms | p99 ms | daemon VmHWM before → after MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        if let Some((l, before, after)) = &r.crl_get {
            println!(
                "| {} | {} | {:.1} | {:.0} | {} | {:.1} | {:.1} | {:.0} → {:.0} |",
                r.entries,
                r.crl_bytes,
                l.rate(),
                l.rate() * r.crl_bytes as f64 / 1e6,
                l.errors,
                pct(&l.lat_ms, 0.5),
                pct(&l.lat_ms, 0.99),
                mib(*before),
                mib(*after)
            );
        }
    }
    println!(
        "\n### OCSP (`POST application/ocsp-request`, one certID, no nonce; closed loop over loopback; {} rounds of {} s per row, every row in turn within a round; responses/s of the median round, then each round's; latencies over all rounds)\n",
        o.rounds, o.seconds
    );
    println!("| responder | revoked in index | conns | connection | responses/s (median) | rounds | responses | errors | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let line = |who: &str, n: u64, c: usize, how: &str, s: &Series| {
        println!(
            "| {who} | {n} | {c} | {how} | {:.0} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            s.median_rate(),
            s.rounds_text(),
            s.ok(),
            s.errors(),
            pct(&s.lat_ms, 0.5),
            pct(&s.lat_ms, 0.99),
            pct(&s.lat_ms, 1.0)
        );
    };
    for r in rows {
        for ((listener, c), s) in &r.ocsp {
            let who = format!("ScaiVault (cache), {listener}");
            line(&who, r.entries, *c, "keep-alive", s);
        }
        for (c, s) in r.peer.iter().flat_map(|p| p.ocsp.iter()) {
            line(
                "openssl ocsp -index",
                r.n as u64,
                *c,
                "new per request (HTTP/1.0)",
                s,
            );
        }
    }
    println!();
    for r in rows {
        println!(
            "- {} rows: ScaiVault sample response: {}",
            r.n, r.ocsp_check
        );
        if let Some(p) = &r.peer {
            println!("- {} rows: openssl ocsp: {}", r.n, p.ocsp_note);
        } else {
            println!("- {} rows: openssl peers: {}", r.n, r.peer_note);
        }
    }
    println!("\n### Ratios ScaiVault / openssl (targets: CRL time ≤ 0.5, CRL peak memory ≤ 0.5, OCSP responses/s ≥ 10)\n");
    println!("OCSP: median round against median round, then round by round in brackets.\n");
    println!("| revoked | CRL build time | CRL peak memory (daemon VmHWM absolute) | CRL peak memory (VmHWM Δ) | OCSP responses/s, 4 conns (16 conns); relying-party listener |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let Some(p) = &r.peer else { continue };
        let ratio = |listener: &str, conns: usize, rounds: bool| {
            let ours = r.ocsp.iter().find(|(k, _)| *k == (listener, conns));
            let theirs = p.ocsp.iter().find(|(c, _)| *c == conns);
            match (ours, theirs) {
                (Some((_, s)), Some((_, q))) if q.median_rate() > 0.0 => {
                    let median = format!("{:.1}", s.median_rate() / q.median_rate());
                    if !rounds {
                        return median;
                    }
                    let each: Vec<String> = s
                        .rates()
                        .iter()
                        .zip(q.rates())
                        .map(|(a, b)| format!("{:.1}", a / b.max(f64::MIN_POSITIVE)))
                        .collect();
                    format!("**{median}** [{}]", each.join(" / "))
                }
                _ => "–".into(),
            }
        };
        let ocsp = format!(
            "{} ({}); API listener {} ({})",
            ratio(PUBLIC, 4, true),
            ratio(PUBLIC, 16, true),
            ratio(API, 4, false),
            ratio(API, 16, false)
        );
        let rss = p.gencrl_rss_kib.max(1) as f64;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {ocsp} |",
            r.n,
            r.build_ms / 1000.0 / p.gencrl_s,
            r.hwm_after as f64 / rss,
            r.hwm_after.saturating_sub(r.hwm_before) as f64 / rss
        );
    }
}

fn main() {
    let o = parse_opts();
    let cmd: Vec<String> = std::env::args().collect();
    println!("## bench-revoke\n");
    println!(
        "command: `{}{}`",
        std::env::var("SCAIVAULT_BIN")
            .map(|b| format!("SCAIVAULT_BIN={b} "))
            .unwrap_or_default(),
        cmd.join(" ")
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores; at start: `{}`", uptime());
    if std::env::var_os("SCAIVAULT_TEST_LOG").is_none() {
        std::env::set_var("SCAIVAULT_TEST_LOG", "warn");
    }
    // One thread for the load generator, without hand-offs between threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // OCSP is measured on both listeners: the relying-party one (`server.public_listen`) and the
    // API's.
    let public = format!("127.0.0.1:{}", free_port());
    let mut d = Daemon::start().restart_with(|text| {
        text.replacen(
            "[server]\n",
            &format!("[server]\npublic_listen = \"{public}\"\n"),
            1,
        )
    });
    println!(
        "daemon: {} (pid {}), VmRSS after start {} KiB",
        scaivault_tests::bin().display(),
        d.pid(),
        status_kib(d.pid(), "VmRSS:")
    );
    let p = setup(&d, format!("http://{public}"));
    let mut rng = Rng(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64);
    let mut seeded = 0usize;
    let mut rows = Vec::new();
    for &n in &o.entries {
        rows.push(bench_size(&d, &p, &rt, &o, n, &mut seeded, &mut rng));
    }
    d.stop();
    print(&rows, &o);
    println!("\nat the end: `{}`", uptime());
}
