//! Benchmark: time to create a CA per key type (mostly key generation on the token plus one
//! signature) and the daemon's RSS, idle and peak. Prints figures; asserts nothing about speed.
//!
//! ```sh
//! cargo build --release -p scaivault -p scaivault-tests
//! SCAIVAULT_BIN=target/release/scaivault target/release/bench-ca [ROUNDS_SCALE]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark driver

use scaivault_tests::bench::{pct, status_kib};
use scaivault_tests::Daemon;
use serde_json::json;
use std::time::Instant;

fn main() {
    let scale: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let d = Daemon::start();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let pid = d.pid();
    println!(
        "daemon idle after start: VmRSS {} KiB",
        status_kib(pid, "VmRSS:")
    );
    println!(
        "| key | CAs | root: min / p50 / max ms | intermediate under it: min / p50 / max ms |"
    );
    println!("|---|---|---|---|");
    let cases: &[(&str, Option<u32>, usize)] = &[
        ("ec", Some(256), 20),
        ("ec", Some(384), 20),
        ("ed25519", None, 20),
        ("rsa", Some(2048), 10),
        ("rsa", Some(3072), 5),
        ("rsa", Some(4096), 3),
    ];
    let mut n = 0;
    for (kt, size, rounds) in cases {
        let rounds = rounds * scale;
        let (mut roots, mut ints) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            n += 1;
            let t = Instant::now();
            let r = d.post(
                "/v1/pki/ca",
                &json!({"name": format!("b{n}"), "common_name": "Bench Root", "ca_type": "root", "key_type": kt, "key_size": size, "validity_days": 365}),
            );
            roots.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(r.status, 201, "{}", r.text());
            let t = Instant::now();
            let i = d.post(
                "/v1/pki/ca",
                &json!({"name": format!("b{n}-i"), "common_name": "Bench Int", "ca_type": "intermediate", "parent_ca_id": r.json()["id"], "key_type": kt, "key_size": size, "validity_days": 100}),
            );
            ints.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(i.status, 201, "{}", i.text());
        }
        roots.sort_by(f64::total_cmp);
        ints.sort_by(f64::total_cmp);
        let name = match size {
            Some(s) => format!("{kt} {s}"),
            None => kt.to_string(),
        };
        println!(
            "| {name} | {rounds} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |",
            roots[0],
            pct(&roots, 0.5),
            roots[roots.len() - 1],
            ints[0],
            pct(&ints, 0.5),
            ints[ints.len() - 1]
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!(
        "daemon after {} CAs: VmRSS {} KiB, peak VmHWM {} KiB",
        n * 2,
        status_kib(pid, "VmRSS:"),
        status_kib(pid, "VmHWM:")
    );
}
