//! Benchmark: issuance throughput of `POST /v1/pki/issue/{role}` (issue #3, "Benchmark").
//!
//! A closed-loop load generator over loopback: N workers, each with its own HTTP keep-alive
//! connection, POST one issuance after another for S seconds. It measures EC P-256, RSA-2048 and
//! Ed25519 leaves under an EC P-256 intermediate whose key lives in SoftHSM, an RSA burst after an
//! idle period, and two references on the same machine: the raw SoftHSM ECDSA P-256 signing rate
//! through `scaivault-hsm` (the ceiling) and cfssl's `/api/v1/cfssl/newcert` (the peer). Besides
//! rates and latencies, each row gives the daemon's CPU and what it wrote (bytes and `write`-family
//! calls, from `/proc/<pid>/io`) per certificate: steadier figures than rates on a shared machine.
//! Prints Markdown tables for `docs/PERFORMANCE.md`; asserts nothing about speed.
//!
//! ```sh
//! cargo build --release -p scaivault -p scaivault-tests
//! SCAIVAULT_BIN=target/release/scaivault target/release/bench-issue \
//!     [--seconds 10] [--conns 4,16] [--keys ec256,rsa2048,ed25519] [--skip-cfssl]
//! ```
//! (`ci/bench-issue.sh` does all of this, installing `golang-cfssl` when missing.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark driver

use scaivault_hsm::pkcs11::{Pkcs11Config, Pkcs11Token};
use scaivault_hsm::{KeySpec, Token};
use scaivault_tests::bench::{cpu_secs, loadavg, pct, run_delay_secs, status_kib, written};
use scaivault_tests::{free_port, Daemon};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Command-line options.
struct Opts {
    seconds: u64,
    conns: Vec<usize>,
    keys: Vec<String>,
    skip_cfssl: bool,
    skip_ceiling: bool,
    client_threads: usize,
    /// `[hsm] call_timeout` for the daemon (e.g. `0s` for inline signing); the default if unset.
    hsm_call_timeout: Option<String>,
    /// `[hsm] sign_threads` for the daemon; the default (CPUs + 1) if unset.
    sign_threads: Option<usize>,
    /// `postgres`: the daemons use a PostgreSQL database (`$SCAIVAULT_TEST_PG`, as in the tests).
    backend: String,
    /// Daemons sharing the database and token (more than one needs `--backend postgres`); the
    /// workers are spread over them round robin.
    nodes: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-issue [--seconds S] [--conns 4,16] [--keys ec256,rsa2048,ed25519] \
         [--skip-cfssl] [--skip-ceiling] [--client-threads T] [--hsm-call-timeout 0s] \
         [--sign-threads N] [--backend sqlite|postgres] [--nodes N]\n\
         (the daemon binary is $SCAIVAULT_BIN, e.g. target/release/scaivault)"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        seconds: 10,
        conns: vec![4, 16],
        keys: vec!["ec256".into(), "rsa2048".into(), "ed25519".into()],
        skip_cfssl: false,
        skip_ceiling: false,
        client_threads: 1,
        hsm_call_timeout: None,
        sign_threads: None,
        backend: "sqlite".into(),
        nodes: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seconds" => o.seconds = val().parse().unwrap_or_else(|_| usage()),
            "--conns" => {
                o.conns = val()
                    .split(',')
                    .map(|c| c.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--keys" => o.keys = val().split(',').map(|k| k.trim().to_owned()).collect(),
            "--client-threads" => o.client_threads = val().parse().unwrap_or_else(|_| usage()),
            "--skip-cfssl" => o.skip_cfssl = true,
            "--skip-ceiling" => o.skip_ceiling = true,
            "--hsm-call-timeout" => o.hsm_call_timeout = Some(val()),
            "--sign-threads" => o.sign_threads = Some(val().parse().unwrap_or_else(|_| usage())),
            "--backend" => o.backend = val(),
            "--nodes" => o.nodes = val().parse().unwrap_or_else(|_| usage()),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if o.seconds == 0 || o.conns.is_empty() || o.conns.contains(&0) || o.client_threads == 0 {
        usage();
    }
    if !matches!(o.backend.as_str(), "sqlite" | "postgres")
        || o.nodes == 0
        || (o.nodes > 1 && o.backend != "postgres")
    {
        eprintln!("--nodes above 1 needs --backend postgres");
        usage();
    }
    for k in &o.keys {
        if key_params(k).is_none() {
            eprintln!("unknown key type {k} (ec256, rsa2048, ed25519)");
            usage();
        }
    }
    o
}

/// `key_type`, `key_bits` and a label for a `--keys` entry.
fn key_params(k: &str) -> Option<(&'static str, u32, &'static str)> {
    match k {
        "ec256" => Some(("ec", 256, "EC P-256")),
        "rsa2048" => Some(("rsa", 2048, "RSA-2048")),
        "ed25519" => Some(("ed25519", 256, "Ed25519")),
        _ => None,
    }
}

/// What a load run measured. Latencies are of successful requests only, in milliseconds.
struct LoadResult {
    ok: usize,
    errors: BTreeMap<String, usize>,
    first_error: Option<String>,
    elapsed: Duration,
    lat_ms: Vec<f64>,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn error_count(&self) -> usize {
        self.errors.values().sum()
    }
    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        let kinds: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{n}×{k}"))
            .collect();
        format!("{} ({})", self.error_count(), kinds.join(", "))
    }
    fn lat_cells(&self) -> String {
        let l = &self.lat_ms;
        format!(
            "{:.2} | {:.2} | {:.2} | {:.2}",
            pct(l, 0.5),
            pct(l, 0.9),
            pct(l, 0.99),
            pct(l, 1.0)
        )
    }
}

/// One kind of request to hammer.
#[derive(Clone)]
struct Target {
    /// Worker `w` sends to `urls[w % urls.len()]`.
    urls: Vec<String>,
    bearer: Option<String>,
    /// `common_name` prefix for ScaiVault bodies; `None` sends `fixed_body` every time.
    cn_prefix: Option<String>,
    fixed_body: Vec<u8>,
    /// A body substring a success must contain (cfssl answers 200 with `"success":false` too).
    must_contain: Option<&'static [u8]>,
}

impl Target {
    fn body(&self, worker: usize, i: u64) -> Vec<u8> {
        match &self.cn_prefix {
            Some(p) => {
                json!({"common_name": format!("{p}-w{worker}-{i}.bench.internal"), "ttl": "24h"})
                    .to_string()
                    .into_bytes()
            }
            None => self.fixed_body.clone(),
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// One request; `Ok(())` for a success, `Err(kind, detail)` otherwise.
async fn one(
    c: &reqwest::Client,
    t: &Target,
    worker: usize,
    body: Vec<u8>,
) -> Result<(), (String, String)> {
    let url = &t.urls[worker % t.urls.len()];
    let mut rb = c
        .post(url)
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(b) = &t.bearer {
        rb = rb.header("Authorization", format!("Bearer {b}"));
    }
    let r = rb.send().await.map_err(|e| {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        (kind.to_owned(), e.to_string())
    })?;
    let status = r.status().as_u16();
    let bytes = r
        .bytes()
        .await
        .map_err(|e| ("body".to_owned(), e.to_string()))?;
    let text = || String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    if status != 200 {
        return Err((format!("HTTP {status}"), text()));
    }
    if let Some(m) = t.must_contain {
        if !bytes.windows(m.len()).any(|w| w == m) {
            return Err(("200 without success".to_owned(), text()));
        }
    }
    Ok(())
}

/// Closed loop: `conns` workers, each with its own keep-alive connection, for `dur`.
async fn run_load(t: &Target, conns: usize, dur: Duration) -> LoadResult {
    let start = Instant::now();
    let deadline = start + dur;
    let mut handles = Vec::new();
    for w in 0..conns {
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let c = client();
            let mut lat = Vec::with_capacity(4096);
            let mut errs: Vec<(String, String)> = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let body = t.body(w, i);
                let t0 = Instant::now();
                match one(&c, &t, w, body).await {
                    Ok(()) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errs.push(e);
                        // Do not spin on a dead server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (lat, errs)
        }));
    }
    finish(handles, start).await
}

/// `n` requests at once, each on a fresh connection. The clients are built before the clock
/// starts: building one loads the system's trust store (rustls roots, ~5 ms here), which would
/// otherwise put half a second of the load generator's own work into the figure.
async fn run_burst(t: &Target, n: usize) -> LoadResult {
    let clients: Vec<reqwest::Client> = (0..n).map(|_| client()).collect();
    let start = Instant::now();
    let mut handles = Vec::new();
    for (w, c) in clients.into_iter().enumerate() {
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            match one(&c, &t, w, t.body(w, 0)).await {
                Ok(()) => (vec![t0.elapsed().as_secs_f64() * 1000.0], vec![]),
                Err(e) => (vec![], vec![e]),
            }
        }));
    }
    finish(handles, start).await
}

type WorkerOut = (Vec<f64>, Vec<(String, String)>);

async fn finish(handles: Vec<tokio::task::JoinHandle<WorkerOut>>, start: Instant) -> LoadResult {
    let mut res = LoadResult {
        ok: 0,
        errors: BTreeMap::new(),
        first_error: None,
        elapsed: Duration::ZERO,
        lat_ms: Vec::new(),
    };
    for h in handles {
        let (lat, errs) = h.await.unwrap();
        res.ok += lat.len();
        res.lat_ms.extend(lat);
        for (kind, detail) in errs {
            if res.first_error.is_none() {
                res.first_error = Some(format!("{kind}: {detail}"));
            }
            *res.errors.entry(kind).or_default() += 1;
        }
    }
    res.elapsed = start.elapsed();
    res.lat_ms.sort_by(f64::total_cmp);
    res
}

fn report_errors(what: &str, r: &LoadResult) {
    if let Some(e) = &r.first_error {
        eprintln!("  note: {what}: {} errors; first: {e}", r.error_count());
    }
}

/// Longest wait before the RSA burst for the daemons' RSA key pools to fill.
const RSA_POOL_WAIT_SECS: u64 = 300;

/// Waits until every daemon's RSA-2048 pool holds its target (`GET /metrics`), at most
/// [`RSA_POOL_WAIT_SECS`]; returns the seconds waited and the keys ready / wanted at the end.
/// The issuance steps timed by the daemons (`scaivault_issue_stage_seconds`): for reserve, sign
/// and store, the seconds and the count summed over `daemons`.
fn stage_totals(daemons: &[&Daemon]) -> [(f64, f64); 3] {
    ["reserve", "sign", "store"].map(|stage| {
        daemons.iter().fold((0.0, 0.0), |(s, c), d| {
            let m = |what: &str| {
                d.metric(&format!(
                    "scaivault_issue_stage_seconds_{what}{{stage=\"{stage}\"}}"
                ))
            };
            (s + m("sum"), c + m("count"))
        })
    })
}

fn wait_for_rsa_pools(daemons: &[&Daemon]) -> (f64, f64, f64) {
    let start = Instant::now();
    loop {
        let (ready, target) = daemons.iter().fold((0.0, 0.0), |(r, t), d| {
            (
                r + d.metric("scaivault_rsa_key_pool_ready"),
                t + d.metric("scaivault_rsa_key_pool_target"),
            )
        });
        let waited = start.elapsed().as_secs_f64();
        if ready >= target || waited > RSA_POOL_WAIT_SECS as f64 {
            return (waited, ready, target);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One server's EC P-256 row at one connection count, for the comparison with cfssl.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    /// The server's CPU per certificate, µs.
    server_us: f64,
    /// The load generator's own CPU per certificate, µs.
    generator_us: f64,
}

/// The ScaiVault part: hierarchy, roles, warm-up, the load runs and the RSA burst.
/// Returns the EC P-256 rows per connection count (for the cfssl ratio).
fn bench_scaivault(rt: &tokio::runtime::Runtime, o: &Opts) -> BTreeMap<usize, Measured> {
    // Request logs at info would cost every request a write; the benchmark measures the work.
    if std::env::var_os("SCAIVAULT_TEST_LOG").is_none() {
        std::env::set_var("SCAIVAULT_TEST_LOG", "warn");
    }
    if o.backend == "postgres" {
        scaivault_tests::pg::require();
        std::env::set_var("SCAIVAULT_TEST_BACKEND", "postgres");
    }
    let mut d = Daemon::start();
    let mut hsm = String::new();
    if let Some(limit) = &o.hsm_call_timeout {
        hsm.push_str(&format!("call_timeout = {limit:?}\n"));
    }
    if let Some(n) = o.sign_threads {
        hsm.push_str(&format!("sign_threads = {n}\n"));
    }
    if !hsm.is_empty() {
        // Restart in the same directory with those `[hsm]` settings.
        let dir = d.into_dir();
        let config = dir.path().join("data/scaivault.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replacen("[hsm]\n", &format!("[hsm]\n{hsm}"), 1);
        std::fs::write(&config, text).unwrap();
        d = Daemon::start_in(dir);
    }
    println!(
        "hsm call_timeout: {}; sign_threads: {}",
        o.hsm_call_timeout.as_deref().unwrap_or("default (5s)"),
        o.sign_threads
            .map_or_else(|| "default (CPUs + 1)".to_owned(), |n| n.to_string())
    );
    let pid = d.pid();
    println!(
        "daemon: {} (pid {pid}), idle after start: VmRSS {} KiB",
        scaivault_tests::bin().display(),
        status_kib(pid, "VmRSS:")
    );
    let root = d.create_root("bench-root", "ec", Some(256));
    let int = d.post(
        "/v1/pki/ca",
        &json!({"name": "bench-int", "common_name": "Bench Intermediate", "ca_type": "intermediate", "parent_ca_id": root["id"], "key_type": "ec", "key_size": 256, "validity_days": 1825}),
    );
    assert_eq!(int.status, 201, "{}", int.text());
    let int = int.json();
    for k in &o.keys {
        let (kt, bits, _) = key_params(k).unwrap();
        let r = d.post(
            "/v1/pki/roles",
            &json!({"name": format!("bench-{k}"), "ca_id": int["id"], "allowed_domains": ["*.bench.internal"],
                    "max_ttl": "720h", "key_type": kt, "key_bits": bits, "require_cn": true}),
        );
        assert_eq!(r.status, 201, "role {k}: {}", r.text());
        // One issuance each, so a broken role fails here and not as a wall of errors.
        let r = d.post(
            &format!("/v1/pki/issue/bench-{k}"),
            &json!({"common_name": format!("probe-{k}.bench.internal"), "ttl": "24h"}),
        );
        assert_eq!(r.status, 200, "issue {k}: {}", r.text());
    }
    // Further nodes: the same database, token and configuration, their own port.
    let peers: Vec<Daemon> = (1..o.nodes)
        .map(|i| {
            d.start_peer(|c| {
                c.replace(
                    "[storage]",
                    &format!("[cluster]\nnode_name = \"bench-{i}\"\n\n[storage]"),
                )
            })
        })
        .collect();
    let pids: Vec<u32> = std::iter::once(pid)
        .chain(peers.iter().map(Daemon::pid))
        .collect();
    println!("backend: {}, nodes: {} (pids {pids:?})", o.backend, o.nodes);
    let cpu_all = |pids: &[u32]| pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
    let waits_all = |pids: &[u32]| pids.iter().map(|p| run_delay_secs(*p)).sum::<f64>();
    let written_all = |pids: &[u32]| {
        pids.iter()
            .map(|p| written(*p))
            .fold((0, 0), |(b, c), (b1, c1)| (b + b1, c + c1))
    };
    let hwm_all = |pids: &[u32]| {
        pids.iter()
            .map(|p| status_kib(*p, "VmHWM:").to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let bases: Vec<String> = std::iter::once(d.base.clone())
        .chain(peers.iter().map(|p| p.base.clone()))
        .collect();
    let target = |k: &str, tag: &str| Target {
        urls: bases
            .iter()
            .map(|b| format!("{b}/v1/pki/issue/bench-{k}"))
            .collect(),
        bearer: Some(d.admin.clone()),
        cn_prefix: Some(format!("{k}-{tag}")),
        fixed_body: Vec::new(),
        must_contain: None,
    };
    // Warm-up: 2 s on the first key type at the largest connection count.
    let warm_conns = o.conns.iter().copied().max().unwrap_or(4);
    let w = rt.block_on(run_load(
        &target(&o.keys[0], "warm"),
        warm_conns,
        Duration::from_secs(2),
    ));
    println!(
        "warm-up: 2 s, {} on {warm_conns} connections: {} certs, {} errors",
        o.keys[0],
        w.ok,
        w.error_count()
    );
    report_errors("warm-up", &w);

    println!(
        "\n### ScaiVault `POST /v1/pki/issue/{{role}}` (CA: EC P-256 intermediate in SoftHSM; {} s per run; load average before: {})\n",
        o.seconds,
        loadavg()
    );
    println!("| leaf key | conns | certs/s | certs | errors | p50 ms | p90 ms | p99 ms | max ms | daemon VmHWM KiB | daemon CPU µs/cert | daemon run-queue wait µs/cert | daemon KiB written/cert | write calls/cert | load generator CPU µs/cert |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ec_rates = BTreeMap::new();
    let mut burst = None;
    let mut notes = Vec::new();
    for k in &o.keys {
        let (_, _, label) = key_params(k).unwrap();
        if k == "rsa2048" {
            // The burst first, once the daemon's RSA pool is full (the role was created above;
            // the pool keeps `limits.rsa_key_pool` keys, default 128).
            let daemons: Vec<&Daemon> = std::iter::once(&d).chain(peers.iter()).collect();
            let pool = wait_for_rsa_pools(&daemons);
            burst = Some((pool, rt.block_on(run_burst(&target(k, "burst"), 100))));
        }
        for &n in &o.conns {
            let all: Vec<&Daemon> = std::iter::once(&d).chain(peers.iter()).collect();
            let stages0 = stage_totals(&all);
            let cpu0 = cpu_all(&pids);
            let wait0 = waits_all(&pids);
            let own_wait0 = run_delay_secs(std::process::id());
            let own_cpu0 = cpu_secs(std::process::id());
            let (bytes0, calls0) = written_all(&pids);
            let pg0 = scaivault_tests::bench::cpu_secs_of("postgres");
            let r = rt.block_on(run_load(
                &target(k, &format!("c{n}")),
                n,
                Duration::from_secs(o.seconds),
            ));
            let certs = r.ok.max(1) as f64;
            let cpu_us = (cpu_all(&pids) - cpu0) * 1e6 / certs;
            let wait_us = (waits_all(&pids) - wait0) * 1e6 / certs;
            let own_wait_us = (run_delay_secs(std::process::id()) - own_wait0) * 1e6 / certs;
            let own_cpu_us = (cpu_secs(std::process::id()) - own_cpu0) * 1e6 / certs;
            let (bytes1, calls1) = written_all(&pids);
            let kib = bytes1.saturating_sub(bytes0) as f64 / 1024.0 / certs;
            let calls = calls1.saturating_sub(calls0) as f64 / certs;
            if o.backend == "postgres" {
                let pg_us = (scaivault_tests::bench::cpu_secs_of("postgres") - pg0) * 1e6
                    / (r.ok.max(1) as f64);
                notes.push(format!(
                    "{label} c={n}: PostgreSQL server CPU {pg_us:.0} µs/cert"
                ));
            }
            println!(
                "| {label} | {n} | {:.0} | {} | {} | {} | {} | {cpu_us:.0} | {wait_us:.0} | {kib:.1} | {calls:.1} | {own_cpu_us:.0} |",
                r.rate(),
                r.ok,
                r.errors_text(),
                r.lat_cells(),
                hwm_all(&pids)
            );
            let stages1 = stage_totals(&all);
            let mean_us = |i: usize| {
                let ((s0, c0), (s1, c1)) = (stages0[i], stages1[i]);
                (s1 - s0) * 1e6 / (c1 - c0).max(1.0)
            };
            notes.push(format!(
                "{label} c={n}: mean time of an issuance's steps (daemon /metrics): reserve {:.0} µs, sign {:.0} µs, store {:.0} µs; the load generator's own run-queue wait {own_wait_us:.0} µs/cert",
                mean_us(0),
                mean_us(1),
                mean_us(2)
            ));
            if let Some(e) = &r.first_error {
                notes.push(format!("{label} c={n}: first error: {e}"));
            }
            if k == "ec256" {
                ec_rates.insert(
                    n,
                    Measured {
                        rate: r.rate(),
                        server_us: cpu_us,
                        generator_us: own_cpu_us,
                    },
                );
            }
        }
    }
    for n in &notes {
        println!("\n{n}");
    }
    if let Some(((waited, ready, wanted), b)) = burst {
        println!(
            "\n### RSA-2048 burst: 100 concurrent issuances (fresh connections) once the RSA key pool held {ready:.0} of {wanted:.0} keys (after waiting {waited:.0} s for it)\n"
        );
        println!("| requests | certs | errors | total ms | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| 100 | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            b.ok,
            b.errors_text(),
            b.elapsed.as_secs_f64() * 1000.0,
            pct(&b.lat_ms, 0.5),
            pct(&b.lat_ms, 0.99),
            pct(&b.lat_ms, 1.0)
        );
        if let Some(e) = &b.first_error {
            println!("\nburst: first error: {e}");
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "\ndaemon memory: peak VmHWM {} KiB, VmRSS at the end {} KiB; load average after: {}",
        hwm_all(&pids),
        status_kib(pid, "VmRSS:"),
        loadavg()
    );
    let log_bytes = std::fs::metadata(&d.log).map(|m| m.len()).unwrap_or(0);
    println!(
        "daemon log (the test kit runs it with RUST_LOG=debug): {} KiB",
        log_bytes / 1024
    );
    d.stop();
    ec_rates
}

fn module_path() -> PathBuf {
    std::env::var_os("SCAIVAULT_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

/// The ceiling: SoftHSM ECDSA P-256 signatures of a 1 KiB message through `scaivault-hsm`, in this
/// process (the daemon has stopped by now; SOFTHSM2_CONF is set before the module is loaded).
fn bench_hsm(o: &Opts) {
    let dir = tempfile::Builder::new()
        .prefix("bench-hsm-")
        .tempdir()
        .unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "bench"])
        .args(["--pin", "1234", "--so-pin", "5678"])
        .output()
        .expect("softhsm2-util (apt-get install softhsm2)");
    assert!(
        out.status.success(),
        "softhsm2-util: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let token = Pkcs11Token::open(&Pkcs11Config {
        module: module_path(),
        token_label: "bench".into(),
        pin: zeroize::Zeroizing::new("1234".into()),
    })
    .unwrap();
    let signer = token.generate(KeySpec::EcP256, "bench-ec256").unwrap();
    let msg: Vec<u8> = (0..1024u32).map(|i| (i * 31 + 7) as u8).collect();
    // Warm-up (the first signature makes the session copy of the key).
    for _ in 0..200 {
        signer.sign(&msg).unwrap();
    }
    println!(
        "\n### Ceiling: SoftHSM ECDSA P-256 `Signer::sign` of 1 KiB through `scaivault-hsm` ({} s per run, session-object copies: {}; load average before: {})\n",
        o.seconds,
        token.session_copies_enabled(),
        loadavg()
    );
    println!("| threads | signatures/s | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    for threads in [1usize, 2] {
        let deadline = Instant::now() + Duration::from_secs(o.seconds);
        let start = Instant::now();
        let mut lat: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let signer = Arc::clone(&signer);
                    let msg = &msg;
                    s.spawn(move || {
                        let mut lat = Vec::with_capacity(1 << 16);
                        while Instant::now() < deadline {
                            let t0 = Instant::now();
                            signer.sign(msg).unwrap();
                            lat.push(t0.elapsed().as_secs_f64() * 1e6);
                        }
                        lat
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let el = start.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        println!(
            "| {threads} | {:.0} | {:.0} | {:.0} | {:.0} |",
            lat.len() as f64 / el,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
    }
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Kills cfssl when dropped.
struct Cfssl(Child);

impl Drop for Cfssl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cfssl_ca(dir: &Path) {
    std::fs::write(
        dir.join("ca-csr.json"),
        r#"{"CN":"Bench Root CA","key":{"algo":"ecdsa","size":256}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"signing":{"default":{"expiry":"24h","usages":["digital signature","key encipherment","server auth"]}}}"#,
    )
    .unwrap();
    let gen = Command::new("cfssl")
        .current_dir(dir)
        .args(["gencert", "-initca", "ca-csr.json"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(gen.status.success(), "cfssl gencert -initca failed");
    let mut j = Command::new("cfssljson")
        .current_dir(dir)
        .args(["-bare", "ca"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        j.stdin.take().unwrap().write_all(&gen.stdout).unwrap();
    }
    assert!(j.wait().unwrap().success(), "cfssljson failed");
    assert!(dir.join("ca.pem").exists() && dir.join("ca-key.pem").exists());
}

/// The peer: cfssl `newcert` with the same load generator. Returns certs/s per connection count.
fn bench_cfssl(rt: &tokio::runtime::Runtime, o: &Opts) -> Option<BTreeMap<usize, Measured>> {
    if o.skip_cfssl {
        println!("\n(cfssl reference skipped: --skip-cfssl)");
        return None;
    }
    if !on_path("cfssl") || !on_path("cfssljson") {
        println!("\n(cfssl reference skipped: `cfssl`/`cfssljson` not on PATH; install with `apt-get install golang-cfssl`)");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("bench-cfssl-")
        .tempdir()
        .unwrap();
    cfssl_ca(dir.path());
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("cfssl.log")).unwrap();
    let _server = Cfssl(
        Command::new("cfssl")
            .current_dir(dir.path())
            .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
            .args([
                "-ca",
                "ca.pem",
                "-ca-key",
                "ca-key.pem",
                "-config",
                "config.json",
            ])
            .args(["-loglevel", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t = Target {
        urls: vec![format!("http://127.0.0.1:{port}/api/v1/cfssl/newcert")],
        bearer: None,
        cn_prefix: None,
        fixed_body: br#"{"request":{"CN":"x.bench.internal","hosts":["x.bench.internal"],"key":{"algo":"ecdsa","size":256}}}"#.to_vec(),
        must_contain: Some(br#""success":true"#),
    };
    // Wait until it answers.
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if rt.block_on(one(&c, &t, 0, t.fixed_body.clone())).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cfssl serve did not answer in 30 s: {}",
            std::fs::read_to_string(dir.path().join("cfssl.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let warm_conns = o.conns.iter().copied().max().unwrap_or(4);
    let w = rt.block_on(run_load(&t, warm_conns, Duration::from_secs(2)));
    report_errors("cfssl warm-up", &w);
    println!(
        "\n### Peer: cfssl `POST /api/v1/cfssl/newcert` (EC P-256 CA key in memory, server-side P-256 leaf key, stores nothing; {} s per run; load average before: {})\n",
        o.seconds,
        loadavg()
    );
    println!("| conns | certs/s | certs | errors | p50 ms | p90 ms | p99 ms | max ms | cfssl CPU µs/cert | cfssl run-queue wait µs/cert | load generator CPU µs/cert |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rates = BTreeMap::new();
    let mut notes = Vec::new();
    let cfssl_pid = _server.0.id();
    for &n in &o.conns {
        let cpu0 = cpu_secs(cfssl_pid);
        let wait0 = run_delay_secs(cfssl_pid);
        let own0 = cpu_secs(std::process::id());
        let r = rt.block_on(run_load(&t, n, Duration::from_secs(o.seconds)));
        let cpu_us = (cpu_secs(cfssl_pid) - cpu0) * 1e6 / (r.ok.max(1) as f64);
        let wait_us = (run_delay_secs(cfssl_pid) - wait0) * 1e6 / (r.ok.max(1) as f64);
        let own_us = (cpu_secs(std::process::id()) - own0) * 1e6 / (r.ok.max(1) as f64);
        println!(
            "| {n} | {:.0} | {} | {} | {} | {cpu_us:.0} | {wait_us:.0} | {own_us:.0} |",
            r.rate(),
            r.ok,
            r.errors_text(),
            r.lat_cells()
        );
        if let Some(e) = &r.first_error {
            notes.push(format!("cfssl c={n}: first error: {e}"));
        }
        rates.insert(
            n,
            Measured {
                rate: r.rate(),
                server_us: cpu_us,
                generator_us: own_us,
            },
        );
    }
    for n in &notes {
        println!("\n{n}");
    }
    Some(rates)
}

/// How the ratio table's last columns are computed (printed above it).
const CPU_BUDGET: &str = "Both servers share the machine's cores with the load generator. In this closed loop a server that keeps them busy answers about cores ÷ (server + load generator CPU per certificate) per second — the \"CPU bound\" column, which cfssl reaches. So 1.5 × cfssl needs the daemon's CPU per certificate at or below (cfssl's + the load generator's against cfssl) ÷ 1.5 − the load generator's against ScaiVault, and the daemon keeping the cores as busy as cfssl does: the last column.";

fn main() {
    let o = parse_opts();
    let cmd: Vec<String> = std::env::args().collect();
    println!("## bench-issue\n");
    println!(
        "command: `{}{}`",
        std::env::var("SCAIVAULT_BIN")
            .map(|b| format!("SCAIVAULT_BIN={b} "))
            .unwrap_or_default(),
        cmd.join(" ")
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores; load average at start: {}; load generator: {} tokio thread(s), one keep-alive connection per worker, closed loop",
        loadavg(),
        o.client_threads
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()
        .unwrap();
    let ec = bench_scaivault(&rt, &o);
    if !o.skip_ceiling {
        bench_hsm(&o);
    }
    let cf = bench_cfssl(&rt, &o);
    if let Some(cf) = cf {
        if !ec.is_empty() {
            println!("\n### Ratio ScaiVault EC P-256 issue / cfssl newcert (target ≥ 1.5)\n");
            println!("{CPU_BUDGET}\n");
            println!("| conns | ScaiVault certs/s | cfssl certs/s | ratio | CPU bound of cfssl certs/s | daemon CPU µs/cert | daemon CPU µs/cert for 1.5 × |");
            println!("|---|---|---|---|---|---|---|");
            for (n, s) in &ec {
                if let Some(c) = cf.get(n) {
                    let bound = cores as f64 * 1e6 / (c.server_us + c.generator_us).max(1.0);
                    let budget = (c.server_us + c.generator_us) / 1.5 - s.generator_us;
                    println!(
                        "| {n} | {:.0} | {:.0} | {:.2} | {bound:.0} | {:.0} | {budget:.0} |",
                        s.rate,
                        c.rate,
                        s.rate / c.rate,
                        s.server_us
                    );
                }
            }
        }
    }
    println!("\nload average at the end: {}", loadavg());
}
