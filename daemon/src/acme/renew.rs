//! The ACME client's scheduled job, run every tick by a task of its own (`sched::acme_renewals`,
//! on the leader):
//!
//! 0. Several nodes: stored challenge answers older than a day (left by a node that died
//!    mid-order) are deleted.
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
                        "managed_certificate_id": id, "version": version, "serial": serial,
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

/// Stored challenge answers older than this are leftovers (a node died mid-order): no order
/// outlives `[acme] order_timeout`, which is far shorter.
const ANSWER_LEFTOVER_AGE: time::Duration = time::Duration::days(1);

/// Several nodes: deletes the stored challenge answers an order did not delete (its node died).
async fn sweep_challenge_answers(app: &App) {
    if !app.cluster.is_shared() {
        return;
    }
    let before = time_util::rfc3339(time_util::now() - ANSWER_LEFTOVER_AGE);
    match app
        .db(move |s| Ok(s.write(|tx| tx.delete_challenge_answers_before(&before))?))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "leftover ACME challenge answers deleted"),
        Err(e) => tracing::warn!(error = %e, "ACME scheduler: challenge answer clean-up failed"),
    }
}

/// ARI checks at most this often per certificate, and at least once a day (RFC 9773 §4.3.2 asks
/// clients to follow `Retry-After`, within reason).
const ARI_MIN_RECHECK: Duration = Duration::from_secs(60);
const ARI_MAX_RECHECK: Duration = Duration::from_secs(24 * 3600);

/// The RFC 9773 certificate identifier of a PEM certificate: its AuthorityKeyIdentifier
/// keyIdentifier and its serial's content octets.
fn ari_identifier(pem: &str) -> Result<instant_acme::CertificateIdentifier<'static>, String> {
    use der::Decode as _;
    let cert = scaivault_core::pem::parse_certificate(pem).map_err(|e| e.to_string())?;
    let aki = cert
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|e| e.extn_id == x509_cert::der::oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .ok_or("no AuthorityKeyIdentifier")?;
    let aki = x509_cert::ext::pkix::AuthorityKeyIdentifier::from_der(aki.extn_value.as_bytes())
        .map_err(|e| e.to_string())?;
    let key_id = aki.key_identifier.ok_or("no keyIdentifier in the AKI")?;
    let id = instant_acme::CertificateIdentifier::new(
        rustls_pki_types::Der::from_slice(key_id.as_bytes()),
        rustls_pki_types::Der::from_slice(cert.tbs_certificate.serial_number.as_bytes()),
    );
    Ok(instant_acme::CertificateIdentifier {
        authority_key_identifier: id.authority_key_identifier.into_owned().into(),
        serial: id.serial.into_owned().into(),
    })
}

/// Asks the CA's renewal information (RFC 9773) for each due certificate: a suggested window that
/// starts before the current `renew_at` moves the renewal to a random moment inside it (or now,
/// when the window has begun). CAs without ARI are asked again a day later.
async fn ari_tick(app: &App) {
    /// The most one certificate's renewal information may take (account and directory included).
    const ARI_ASK_LIMIT: Duration = Duration::from_secs(20);
    /// The most one pass may spend asking.
    const ARI_PASS_BUDGET: Duration = Duration::from_secs(30);
    let now = time_util::now();
    let now_s = time_util::rfc3339(now);
    let due = match app
        .db(move |s| Ok(s.read(|tx| tx.managed_certs_ari_due(&now_s))?))
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "ACME scheduler: cannot read ARI candidates");
            return;
        }
    };
    // The pass runs before every due renewal is started: a CA that does not answer may cost it a
    // bounded time (what is left waits for the next tick; a certificate whose CA did not answer
    // in its own limit is asked again an hour later, as after any failure).
    let started = std::time::Instant::now();
    for (id, tenant, account_id, version, pem, renew_at) in due {
        let Some(left) = ARI_PASS_BUDGET.checked_sub(started.elapsed()) else {
            break;
        };
        let limit = ARI_ASK_LIMIT.min(left);
        let Ok(asked) = tokio::time::timeout(limit, ari_ask(app, &tenant, &account_id, &pem)).await
        else {
            if limit < ARI_ASK_LIMIT {
                // Cut short by the pass's budget, not the CA's fault: asked again next tick.
                break;
            }
            tracing::warn!(mc = %id, "ARI request failed: the CA did not answer within {} s", limit.as_secs());
            store_ari(app, &id, version, now + Duration::from_secs(3600), None).await;
            continue;
        };
        let (next, new_renew_at) = match asked {
            Ok((window_start, window_end, retry)) => {
                let retry = retry.clamp(ARI_MIN_RECHECK, ARI_MAX_RECHECK);
                let span = (window_end - window_start).max(time::Duration::ZERO);
                let pick = window_start + span * rand::random::<f64>();
                let pick = pick.max(now);
                let current = renew_at
                    .as_deref()
                    .and_then(|r| time_util::parse_rfc3339(r).ok());
                let earlier = current.is_none_or(|c| pick < c);
                (now + retry, earlier.then(|| time_util::rfc3339(pick)))
            }
            Err(AriError::Unsupported) => (now + ARI_MAX_RECHECK, None),
            Err(AriError::Failed(e)) => {
                tracing::warn!(mc = %id, error = %e, "ARI request failed");
                (now + Duration::from_secs(3600), None)
            }
        };
        if let Some(r) = &new_renew_at {
            tracing::info!(mc = %id, renew_at = %r, "renewal moved into the CA's ARI window");
        }
        store_ari(app, &id, version, next, new_renew_at).await;
    }
}

/// Notes when to ask about `id`'s renewal information next, and its new `renew_at`.
async fn store_ari(
    app: &App,
    id: &str,
    version: i64,
    next: OffsetDateTime,
    new_renew_at: Option<String>,
) {
    let (id, next) = (id.to_owned(), time_util::rfc3339(next));
    let res = app
        .db(move |s| {
            Ok(
                s.write(|tx| {
                    tx.set_managed_cert_ari(&id, version, &next, new_renew_at.as_deref())
                })?,
            )
        })
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "ARI result could not be stored");
    }
}

enum AriError {
    Unsupported,
    Failed(String),
}

/// One ARI request: the suggested window and the CA's `Retry-After`.
async fn ari_ask(
    app: &App,
    tenant: &str,
    account_id: &str,
    pem: &str,
) -> Result<(OffsetDateTime, OffsetDateTime, Duration), AriError> {
    let row = super::accounts::get(app, tenant, account_id)
        .await
        .map_err(|e| AriError::Failed(e.detail))?;
    let account = super::accounts::open(app, &row)
        .await
        .map_err(|e| AriError::Failed(e.to_string()))?;
    let cert_id = ari_identifier(pem).map_err(AriError::Failed)?;
    match account.renewal_info(&cert_id).await {
        Ok((info, retry)) => Ok((
            info.suggested_window.start,
            info.suggested_window.end,
            retry,
        )),
        Err(instant_acme::Error::Unsupported(_)) => Err(AriError::Unsupported),
        Err(e) => Err(AriError::Failed(e.to_string())),
    }
}

/// One pass: resume orders left in flight, ask ARI, start due renewals, fire
/// `certificate.expiring`.
pub async fn tick(app: &App) {
    sweep_challenge_answers(app).await;
    fire_expiring(app).await;
    ari_tick(app).await;
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
                    // One conditional update: only if no order is in flight (of two nodes, or a
                    // renewal and an API call, one starts it).
                    let now = time_util::rfc3339(time_util::now());
                    if !tx.claim_managed_order(&i, "renew", &now)? {
                        return Ok(false);
                    }
                    let row = tx.get_managed_cert_any_tenant(&i)?;
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
