//! The scheduler's ACME job, run on every tick:
//!
//! 1. Managed certificates with an order in flight that no task of this process runs (the
//!    daemon was restarted or killed mid-order) are started again — never left `pending`.
//! 2. `auto_renew` certificates whose `renew_at` has come get a renewal order. `renew_at` is set
//!    when a version is stored: `not_after - min(30 days, lifetime / 3)`, or
//!    `not_after - acme.renew_before` when that is configured. A failed renewal keeps the current
//!    version, fires `certificate.renewal_failed` and moves `renew_at` by an exponential backoff
//!    with jitter (5 min doubling up to 24 h; at least an hour after a `rateLimited` answer).

use crate::app::App;
use crate::config::AcmeConfig;
use scaivault_core::time_util;
use std::time::Duration;
use time::OffsetDateTime;

/// The shortest wait after the CA answered `rateLimited`.
pub const RATE_LIMITED_DELAY: Duration = Duration::from_secs(3600);

/// When a certificate valid `not_before..not_after` is due for renewal.
pub fn due_at(
    cfg: &AcmeConfig,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> OffsetDateTime {
    let before = match cfg.renew_before_secs() {
        Some(secs) => time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2)),
        None => {
            let lifetime: time::Duration = not_after - not_before;
            std::cmp::min(lifetime / 3, time::Duration::days(30))
        }
    };
    not_after - before
}

/// The delay before retry number `failures` (1, 2, …): 5 min × 2^(failures-1), at most 24 h,
/// ±10 % jitter.
pub fn backoff(failures: i64) -> Duration {
    let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    let base = 300u64.saturating_mul(1u64 << exp).min(24 * 3600);
    let jitter = rand::random::<f64>() * 0.2 - 0.1;
    Duration::from_secs_f64(base as f64 * (1.0 + jitter))
}

/// Fires `certificate.expiring` once per version for valid managed certificates with less than
/// `acme.expiring_within` left (a renewal that keeps failing shows up before the end).
async fn fire_expiring(app: &App) {
    let within = time::Duration::seconds(
        i64::try_from(app.config.acme.expiring_within_secs()).unwrap_or(i64::MAX / 2),
    );
    let horizon = time_util::rfc3339(time_util::now() + within);
    let res = app
        .db(move |s| {
            Ok(s.write(|tx| {
                let rows = tx.managed_certs_expiring(&horizon)?;
                let now = time_util::rfc3339(time_util::now());
                for (id, tenant, version, serial, not_after) in &rows {
                    let data = serde_json::json!({
                        "id": id, "version": version, "serial_number": serial,
                        "not_after": not_after,
                    })
                    .to_string();
                    tx.insert_event(tenant, "certificate.expiring", Some(id), &now, &data)?;
                    tx.mark_managed_cert_expiring(id, *version)?;
                }
                Ok(rows.len())
            })?)
        })
        .await;
    match res {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "certificate.expiring fired"),
        Err(e) => tracing::warn!(error = %e, "ACME scheduler: expiring check failed"),
    }
}

/// One pass: resume orders left in flight, start due renewals, fire `certificate.expiring`.
pub async fn tick(app: &App) {
    fire_expiring(app).await;
    let now = time_util::rfc3339(time_util::now());
    let found = app
        .db(move |s| {
            Ok(s.read(|tx| Ok((tx.managed_certs_in_flight()?, tx.managed_certs_due(&now)?)))?)
        })
        .await;
    let (in_flight, due) = match found {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "ACME scheduler: cannot read managed certificates");
            return;
        }
    };
    for id in in_flight {
        super::worker::spawn(app, &id);
    }
    for id in due {
        let i = id.clone();
        let started = app
            .db(move |s| {
                Ok(s.write(|tx| {
                    let mut row = tx.get_managed_cert_any_tenant(&i)?;
                    if row.order_kind.is_some() {
                        return Ok(false);
                    }
                    row.order_kind = Some("renew".into());
                    row.order_attempts = 0;
                    row.updated_at = time_util::rfc3339(time_util::now());
                    tx.update_managed_cert(&row)?;
                    let rec =
                        super::worker::record(&row, "acme.certificate.renew", "started", None);
                    tx.append_audit(&rec)?;
                    Ok(true)
                })?)
            })
            .await;
        match started {
            Ok(true) => {
                tracing::info!(mc = %id, "ACME renewal due");
                super::worker::spawn(app, &id);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(mc = %id, error = %e, "ACME renewal could not start"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn due_is_min_of_30_days_and_a_third_of_the_lifetime() {
        let cfg = AcmeConfig::default();
        // 90-day certificate: 30 days before the end (a third is also 30 days).
        let nb = datetime!(2026-01-01 0:00 UTC);
        assert_eq!(
            due_at(&cfg, nb, nb + time::Duration::days(90)),
            nb + time::Duration::days(60)
        );
        // 5-year certificate: 30 days before the end.
        let na = nb + time::Duration::days(1826);
        assert_eq!(due_at(&cfg, nb, na), na - time::Duration::days(30));
        // 6-day certificate: after two thirds of its life.
        assert_eq!(
            due_at(&cfg, nb, nb + time::Duration::days(6)),
            nb + time::Duration::days(4)
        );
        // renew_before replaces the rule.
        let cfg = AcmeConfig {
            renew_before: Some("87600h".into()),
            ..AcmeConfig::default()
        };
        assert!(due_at(&cfg, nb, na) < nb);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_a_day() {
        let b1 = backoff(1).as_secs_f64();
        assert!((270.0..=330.0).contains(&b1), "{b1}");
        let b3 = backoff(3).as_secs_f64();
        assert!((1080.0..=1320.0).contains(&b3), "{b3}");
        let b_max = backoff(40).as_secs_f64();
        assert!(
            (24.0 * 3600.0 * 0.9..=24.0 * 3600.0 * 1.1).contains(&b_max),
            "{b_max}"
        );
    }
}
