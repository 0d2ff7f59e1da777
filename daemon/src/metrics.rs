//! Counters and gauges for `GET /metrics` (Prometheus text exposition format 0.0.4).
//!
//! Aggregates only: like `/v1/sys/health` the endpoint needs no token (a scraper on the host or
//! the monitoring network), so it names no tenant, CA, role or certificate. Counters are plain
//! atomics bumped on the paths that already exist; nothing here blocks or allocates per request.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    http: [AtomicU64; 5],
    /// Certificates signed and stored (issue, sign, CSR workflow).
    pub certificates_issued: AtomicU64,
    /// Revocations committed.
    pub certificates_revoked: AtomicU64,
    /// OCSP responses served from the cache.
    pub ocsp_cached: AtomicU64,
    /// OCSP responses signed (on request or pre-signed).
    pub ocsp_signed: AtomicU64,
    /// OCSP responses served from the table shared by the nodes of a cluster (signed by another
    /// node, or by this one before its cache dropped them).
    pub ocsp_shared_hits: AtomicU64,
    /// CRLs built and published.
    pub crl_builds: AtomicU64,
    /// Duration of the last CRL build, milliseconds.
    pub crl_last_build_ms: AtomicU64,
    /// Entries of the last CRL built.
    pub crl_last_entries: AtomicU64,
    /// Scheduler passes of the cluster-wide jobs (CRLs, ACME) this node ran as leader.
    pub leader_passes: AtomicU64,
    /// Connections the relying-party listener refused at `server.public_max_connections`.
    pub public_connections_refused: AtomicU64,
    /// Connections open on the relying-party listener (each holds a place under
    /// `server.public_max_connections` from accept until it closes).
    pub public_connections_open: AtomicU64,
    /// How long the three steps of a leaf issuance that wait on something took.
    pub issue_stages: [Histogram; 3],
}

/// The steps of an issuance timed in [`Metrics::issue_stages`]: the serial reservation with its
/// `started` record (a group commit), the signature on the token with its lint and check, the
/// certificate's durable commit with its `success` record.
#[derive(Debug, Clone, Copy)]
pub enum IssueStage {
    /// Waiting for the reservation's commit.
    Reserve = 0,
    /// Lint, signature on the token, signature check.
    Sign = 1,
    /// Waiting for the certificate's durable commit.
    Store = 2,
}

impl IssueStage {
    const LABELS: [&'static str; 3] = ["reserve", "sign", "store"];
}

/// Upper bounds of the histogram buckets, microseconds (Prometheus `le` in seconds).
const BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// A Prometheus histogram of durations: one counter per bucket (an observation counts in the
/// first bucket that holds it; the exposition sums them, as `le` buckets are cumulative), the sum
/// in microseconds and the count. Lock-free: two or three relaxed additions per observation.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|b| us <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (b, le) in self.buckets.iter().zip(BUCKETS_US) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
                le as f64 / 1e6
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

impl Metrics {
    /// Counts one HTTP answer by status class.
    pub fn http_answered(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.http.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records how long `stage` of an issuance took.
    pub fn issue_stage(&self, stage: IssueStage, took: std::time::Duration) {
        if let Some(h) = self.issue_stages.get(stage as usize) {
            h.observe(took);
        }
    }

    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `extra` counters and `gauges` are `(name, help, value)` read by the
    /// caller at scrape time (e.g. `scaivault_hsm_sign_calls_total`, kept by `scaivault-hsm`).
    pub fn render(&self, extra: &[(&str, &str, u64)], gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(2048);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP scaivault_build_info The daemon's version.\n# TYPE scaivault_build_info gauge\nscaivault_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP scaivault_http_requests_total HTTP answers by status class.\n# TYPE scaivault_http_requests_total counter"
        );
        for (i, c) in self.http.iter().enumerate() {
            let _ = writeln!(
                out,
                "scaivault_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                get(c)
            );
        }
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "scaivault_certificates_issued_total",
                "Leaf certificates signed and stored.",
                &self.certificates_issued,
            ),
            (
                "scaivault_certificates_revoked_total",
                "Revocations committed.",
                &self.certificates_revoked,
            ),
            (
                "scaivault_crl_builds_total",
                "CRLs built, signed and published.",
                &self.crl_builds,
            ),
            (
                "scaivault_ocsp_signed_total",
                "OCSP responses signed (on request or pre-signed).",
                &self.ocsp_signed,
            ),
            (
                "scaivault_ocsp_shared_hits_total",
                "OCSP responses served from the table shared by the nodes of a cluster.",
                &self.ocsp_shared_hits,
            ),
            (
                "scaivault_scheduler_leader_passes_total",
                "Passes of the cluster-wide scheduled jobs (CRLs, ACME) run on this node as leader.",
                &self.leader_passes,
            ),
            (
                "scaivault_public_connections_refused_total",
                "Connections the relying-party listener refused at server.public_max_connections.",
                &self.public_connections_refused,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(c)
            );
        }
        for (name, help, v) in extra {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP scaivault_ocsp_cache_hits_total OCSP responses served from the cache.\n# TYPE scaivault_ocsp_cache_hits_total counter\nscaivault_ocsp_cache_hits_total {}",
            get(&self.ocsp_cached)
        );
        let mut all_gauges: Vec<(&str, &str, f64)> = vec![
            (
                "scaivault_crl_last_build_seconds",
                "Duration of the last CRL build.",
                get(&self.crl_last_build_ms) as f64 / 1000.0,
            ),
            (
                "scaivault_crl_last_entries",
                "Entries of the last CRL built.",
                get(&self.crl_last_entries) as f64,
            ),
            (
                "scaivault_public_connections_open",
                "Connections open on the relying-party listener.",
                get(&self.public_connections_open) as f64,
            ),
        ];
        all_gauges.extend_from_slice(gauges);
        for (name, help, v) in all_gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let name = "scaivault_issue_stage_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Leaf issuance steps: reserve (the serial's commit), sign (lint, token, check), store (the certificate's durable commit).\n# TYPE {name} histogram"
        );
        for (h, stage) in self.issue_stages.iter().zip(IssueStage::LABELS) {
            h.render(&mut out, name, &format!("stage=\"{stage}\""));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.http_answered(200);
        m.http_answered(204);
        m.http_answered(404);
        m.http_answered(503);
        Metrics::bump(&m.certificates_issued);
        let text = m.render(
            &[("scaivault_y_total", "A counter.", 7)],
            &[("scaivault_x", "A gauge.", 1.5)],
        );
        assert!(text.contains("scaivault_http_requests_total{class=\"2xx\"} 2\n"));
        assert!(text.contains("scaivault_http_requests_total{class=\"4xx\"} 1\n"));
        assert!(text.contains("scaivault_http_requests_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("scaivault_certificates_issued_total 1\n"));
        assert!(text.contains("# TYPE scaivault_x gauge\nscaivault_x 1.5\n"));
        assert!(text.contains("# TYPE scaivault_y_total counter\nscaivault_y_total 7\n"));
        assert!(text.contains("scaivault_issue_stage_seconds_count{stage=\"store\"} 0\n"));
        // Every sample line is `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("scaivault_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn stage_histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::default();
        let ms = std::time::Duration::from_micros;
        m.issue_stage(IssueStage::Sign, ms(80)); // first bucket
        m.issue_stage(IssueStage::Sign, ms(100)); // on a bound: that bucket
        m.issue_stage(IssueStage::Sign, ms(3_000));
        m.issue_stage(IssueStage::Sign, ms(5_000_000)); // above every bound: +Inf only
        m.issue_stage(IssueStage::Reserve, ms(400));
        let text = m.render(&[], &[]);
        let sign = |rest: &str| format!("scaivault_issue_stage_seconds{rest}");
        for (line, want) in [
            (sign("_bucket{stage=\"sign\",le=\"0.0001\"}"), "2"),
            (sign("_bucket{stage=\"sign\",le=\"0.00025\"}"), "2"),
            (sign("_bucket{stage=\"sign\",le=\"0.0025\"}"), "2"),
            (sign("_bucket{stage=\"sign\",le=\"0.005\"}"), "3"),
            (sign("_bucket{stage=\"sign\",le=\"1\"}"), "3"),
            (sign("_bucket{stage=\"sign\",le=\"+Inf\"}"), "4"),
            (sign("_count{stage=\"sign\"}"), "4"),
            (sign("_sum{stage=\"sign\"}"), "5.00318"),
            (sign("_bucket{stage=\"reserve\",le=\"0.0005\"}"), "1"),
            (sign("_bucket{stage=\"reserve\",le=\"0.00025\"}"), "0"),
            (sign("_count{stage=\"store\"}"), "0"),
        ] {
            assert!(
                text.contains(&format!("{line} {want}\n")),
                "{line} {want}\n{text}"
            );
        }
    }
}
