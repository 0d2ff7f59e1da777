//! One ACME order, start to end (RFC 8555 §7.4): new order → authorizations → challenges →
//! poll → finalize with a CSR for a key made here → download the chain. Its caller
//! (`worker.rs`) stores the result or the failure. `Err` values are the messages for
//! `last_error`: the CA's own detail and problem type whenever the CA gave one.

use super::challenge::{HTTP_01, TLS_ALPN_01};
use super::{accounts, ca_detail, nonce_retry, problem_text, providers};
use crate::app::{split_pem, App};
use crate::error::ApiError;
use instant_acme::{
    AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus, RetryPolicy,
};
use scaivault_core::time_util;
use scaivault_store::ManagedCertRow;
use std::time::Duration;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// What a successful order produced.
pub struct Issued {
    /// PEM leaf.
    pub leaf_pem: String,
    /// PEM chain, issuer first.
    pub chain_pem: String,
    /// API form.
    pub serial: String,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end.
    pub not_after: OffsetDateTime,
    /// The private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<String>,
}

/// What to undo when the order ends.
#[derive(Default)]
struct Provisioned {
    http: Vec<String>,
    tls: Vec<String>,
    /// dns-01 records with the id of their note in `acme_dns_records`.
    dns: Vec<(String, scaivault_dns::Presented)>,
}

/// The dns-01 provider of a managed certificate.
struct Dns {
    id: String,
    provider: Box<dyn scaivault_dns::DnsProvider>,
    options: scaivault_dns::Options,
}

async fn dns_provider(app: &App, mc: &ManagedCertRow) -> Result<Option<Dns>, String> {
    let Some(pid) = &mc.dns_provider_id else {
        return Ok(None);
    };
    load_dns(app, &mc.tenant_id, pid).await.map(Some)
}

async fn load_dns(app: &App, tenant_id: &str, provider_id: &str) -> Result<Dns, String> {
    let row = providers::get(app, tenant_id, provider_id)
        .await
        .map_err(|e| e.detail)?;
    let cfg = providers::full_config(app, &row)
        .await
        .map_err(|e| e.detail)?;
    let provider = scaivault_dns::build(&row.kind, &cfg).map_err(|e| e.to_string())?;
    let options = scaivault_dns::options(&cfg).map_err(|e| e.to_string())?;
    Ok(Dns {
        id: provider_id.to_owned(),
        provider,
        options,
    })
}

/// Withdraws the dns-01 records an earlier order of `mc` noted and did not withdraw (it was
/// killed, or the provider failed then): each is removed at its provider, then forgotten. One that
/// still cannot be removed stays noted for the next order; one whose provider is gone is
/// forgotten with a warning.
pub(super) async fn withdraw_leftovers(app: &App, mc: &ManagedCertRow) {
    let id = mc.id.clone();
    let Ok(rows) = app
        .db(move |s| Ok(s.read(|tx| tx.dns_records_of(&id))?))
        .await
    else {
        return;
    };
    for r in rows {
        let gone = match load_dns(app, &mc.tenant_id, &r.dns_provider_id).await {
            Ok(d) => {
                let p = scaivault_dns::Presented {
                    fqdn: r.fqdn.clone(),
                    value: r.value.clone(),
                };
                match scaivault_dns::cleanup(d.provider.as_ref(), &p).await {
                    Ok(()) => {
                        tracing::info!(mc = %mc.id, record = %r.fqdn, "withdrew a dns-01 record an earlier order left behind");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(mc = %mc.id, record = %r.fqdn, error = %e, "a dns-01 record an earlier order left behind could not be withdrawn; next order tries again");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(mc = %mc.id, record = %r.fqdn, error = %e, "the DNS provider of a leftover dns-01 record is gone: forgotten");
                true
            }
        };
        if gone {
            forget_dns_record(app, &r.id).await;
        }
    }
}

async fn forget_dns_record(app: &App, id: &str) {
    let id = id.to_owned();
    let res = app
        .db(move |s| Ok(s.write(|tx| tx.delete_dns_record(&id))?))
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "a withdrawn dns-01 record stays noted (the next order withdraws it again)");
    }
}

/// Runs one order to the end; `Err` is the message for `last_error`.
pub async fn run(app: &App, mc: &ManagedCertRow, budget: Duration) -> Result<Issued, String> {
    let deadline = tokio::time::Instant::now() + budget;
    let account_row = accounts::get(app, &mc.tenant_id, &mc.account_id)
        .await
        .map_err(|e| e.detail)?;
    if account_row.status != "valid" {
        return Err(format!(
            "ACME account {} is {}",
            account_row.id, account_row.status
        ));
    }
    let account = accounts::open(app, &account_row)
        .await
        .map_err(|e| ca_detail(&e))?;
    let domains: Vec<String> = serde_json::from_str(&mc.domains).map_err(|e| e.to_string())?;
    let challenge = match mc.challenge_type.as_str() {
        "http-01" => ChallengeType::Http01,
        "tls-alpn-01" => ChallengeType::TlsAlpn01,
        _ => ChallengeType::Dns01,
    };
    withdraw_leftovers(app, mc).await;
    let dns = if challenge == ChallengeType::Dns01 {
        dns_provider(app, mc).await?
    } else {
        None
    };
    // Orders validating a name with tls-alpn-01 take turns (one certificate per name at a time).
    let _turn = if challenge == ChallengeType::TlsAlpn01 {
        Some(app.acme.challenges.reserve_tls(&domains).await)
    } else {
        None
    };
    let idents: Vec<Identifier> = domains.iter().cloned().map(Identifier::Dns).collect();
    let mut new = NewOrder::new(&idents);
    if let Some(p) = &mc.profile {
        new = new.profile(p);
    }
    let mut order = nonce_retry!(account.new_order(&new)).map_err(|e| ca_detail(&e))?;
    let url = order.url().to_owned();
    let (i, u) = (mc.id.clone(), url.clone());
    let _ = app
        .db(move |s| {
            Ok(s.write(|tx| {
                let mut row = tx.get_managed_cert_any_tenant(&i)?;
                row.order_url = Some(u.clone());
                tx.update_managed_cert(&row)
            })?)
        })
        .await;
    tracing::debug!(mc = %mc.id, order = %url, "ACME order created");

    let mut provisioned = Provisioned::default();
    let result = async {
        fetch_authorizations(&mut order).await?;
        provision(
            app,
            mc,
            &mut order,
            &challenge,
            dns.as_ref(),
            &mut provisioned,
        )
        .await?;
        let status = poll(&mut order, deadline, |o, p| Box::pin(o.poll_ready(p))).await?;
        if status == OrderStatus::Invalid {
            return Err(invalid_reason(&mut order).await);
        }
        finalize(app, mc, &domains, &mut order, deadline).await
    }
    .await;
    unprovision(app, dns.as_ref(), provisioned).await;
    result
}

/// Fetches every authorization's state (re-iterating after a badNonce: the stream skips an
/// authorization whose fetch failed, and a fresh stream fetches only the missing ones).
async fn fetch_authorizations(order: &mut Order) -> Result<(), String> {
    for attempt in 0..8 {
        let mut failed = None;
        let mut auths = order.authorizations();
        while let Some(a) = auths.next().await {
            if let Err(e) = a {
                failed = Some(e);
                break;
            }
        }
        match failed {
            None => return Ok(()),
            Some(e) if super::is_bad_nonce(&e) && attempt < 7 => continue,
            Some(e) => return Err(ca_detail(&e)),
        }
    }
    Err("authorizations could not be fetched".into())
}

async fn provision(
    app: &App,
    mc: &ManagedCertRow,
    order: &mut Order,
    challenge: &ChallengeType,
    dns: Option<&Dns>,
    done: &mut Provisioned,
) -> Result<(), String> {
    let responses = app.acme.challenges.clone();
    let mut auths = order.authorizations();
    while let Some(a) = auths.next().await {
        let mut a = a.map_err(|e| ca_detail(&e))?;
        let name = a.identifier().to_string();
        match a.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(format!("the authorization for {name} is {other:?}")),
        }
        let domain = match a.identifier().identifier {
            Identifier::Dns(d) => d.clone(),
            other => return Err(format!("unsupported identifier {other:?}")),
        };
        let mut ch = a
            .challenge(challenge.clone())
            .ok_or_else(|| format!("the CA offers no {challenge:?} challenge for {name}"))?;
        let key_auth = ch.key_authorization();
        match challenge {
            ChallengeType::Http01 => {
                responses.add_http(&ch.token, key_auth.as_str());
                done.http.push(ch.token.clone());
                share(app, HTTP_01, &ch.token, key_auth.as_str()).await?;
            }
            ChallengeType::TlsAlpn01 => {
                let digest = key_auth.digest();
                responses.add_tls(&domain, digest.as_ref())?;
                done.tls.push(domain.clone());
                let (name, value) = (domain.to_ascii_lowercase(), hex::encode(digest.as_ref()));
                share(app, TLS_ALPN_01, &name, &value).await?;
            }
            _ => {
                let d = dns.ok_or("dns-01 needs a DNS provider")?;
                let presented = scaivault_dns::target(&d.options, &domain, &key_auth.dns_value())
                    .await
                    .map_err(|e| format!("dns-01 for {name}: {e}"))?;
                // Noted before it is written: a crash from here on leaves a note the next order
                // of this certificate withdraws the record by.
                let note = scaivault_store::DnsRecordRow {
                    id: scaivault_core::ids::new_id("dnsrec"),
                    managed_cert_id: mc.id.clone(),
                    dns_provider_id: d.id.clone(),
                    fqdn: presented.fqdn.clone(),
                    value: presented.value.clone(),
                    created_at: time_util::rfc3339(time_util::now()),
                };
                let noted = note.clone();
                app.db(move |s| Ok(s.write(|tx| tx.insert_dns_record(&noted))?))
                    .await
                    .map_err(|e| {
                        format!(
                            "dns-01 for {name}: the record could not be noted: {}",
                            e.detail
                        )
                    })?;
                done.dns.push((note.id, presented.clone()));
                scaivault_dns::present_at_and_wait(d.provider.as_ref(), &d.options, &presented)
                    .await
                    .map_err(|e| format!("dns-01 for {name}: {e}"))?;
            }
        }
        nonce_retry!(ch.set_ready()).map_err(|e| ca_detail(&e))?;
    }
    Ok(())
}

/// With several nodes (PostgreSQL), stores an answer so that whichever node the CA's validation
/// reaches can serve it (`challenge::shared`); with SQLite this node is the only one.
async fn share(app: &App, kind: &'static str, name: &str, value: &str) -> Result<(), String> {
    if !app.cluster.is_shared() {
        return Ok(());
    }
    let (n, v) = (name.to_owned(), value.to_owned());
    app.db(move |s| {
        let at = time_util::rfc3339(time_util::now());
        Ok(s.write(|tx| tx.put_challenge_answer(kind, &n, &v, &at))?)
    })
    .await
    .map_err(|e| {
        format!(
            "the {kind} answer could not be shared with the other nodes: {}",
            e.detail
        )
    })
}

/// Deletes this order's stored answers (several nodes); a failure leaves them to the scheduler's
/// clean-up of leftovers.
async fn unshare(app: &App, done: &Provisioned) {
    if !app.cluster.is_shared() || (done.http.is_empty() && done.tls.is_empty()) {
        return;
    }
    let http = done.http.clone();
    let tls: Vec<String> = done.tls.iter().map(|n| n.to_ascii_lowercase()).collect();
    let res = app
        .db(move |s| {
            Ok(s.write(|tx| {
                for t in &http {
                    tx.delete_challenge_answer(HTTP_01, t)?;
                }
                for n in &tls {
                    tx.delete_challenge_answer(TLS_ALPN_01, n)?;
                }
                Ok(())
            })?)
        })
        .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "stored challenge answers not deleted (the scheduler will)");
    }
}

async fn unprovision(app: &App, dns: Option<&Dns>, done: Provisioned) {
    let r = &app.acme.challenges;
    for t in &done.http {
        r.remove_http(t);
    }
    for n in &done.tls {
        r.remove_tls(n);
    }
    unshare(app, &done).await;
    if let Some(d) = dns {
        for (id, p) in &done.dns {
            match scaivault_dns::cleanup(d.provider.as_ref(), p).await {
                Ok(()) => forget_dns_record(app, id).await,
                Err(e) => {
                    tracing::warn!(record = %p.fqdn, error = %e, "dns-01 record cleanup failed (the next order of this certificate tries again)");
                }
            }
        }
    }
}

type PollFuture<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, instant_acme::Error>> + Send + 'a>,
>;

/// Polls with `f` until the deadline, honouring the CA's `Retry-After` (instant-acme's
/// `RetryPolicy` does) and retrying badNonce.
async fn poll<T>(
    order: &mut Order,
    deadline: tokio::time::Instant,
    f: for<'a> fn(&'a mut Order, &'a RetryPolicy) -> PollFuture<'a, T>,
) -> Result<T, String> {
    for _ in 0..8 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let policy = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(left);
        match f(order, &policy).await {
            Err(e) if super::is_bad_nonce(&e) => continue,
            Err(instant_acme::Error::Timeout(_)) => {
                return Err("the CA did not finish the order within acme.order_timeout".into())
            }
            Err(e) => return Err(ca_detail(&e)),
            Ok(v) => return Ok(v),
        }
    }
    Err("too many badNonce answers while polling".into())
}

/// Why an order became invalid: the failed challenges' errors as the CA worded them.
async fn invalid_reason(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    if let Some(p) = &order.state().error {
        reasons.push(problem_text(p));
    }
    // Every authorization whose fetch fails (a badNonce the stream does not retry) is fetched
    // again by a fresh stream; its challenge errors are the useful part of the reason.
    if let Err(e) = fetch_authorizations(order).await {
        reasons.push(format!("the authorizations could not be fetched: {e}"));
    }
    let mut auths = order.authorizations();
    while let Some(a) = auths.next().await {
        let mut a = match a {
            Ok(a) => a,
            Err(e) => {
                reasons.push(format!(
                    "an authorization could not be fetched: {}",
                    ca_detail(&e)
                ));
                continue;
            }
        };
        let name = a.identifier().to_string();
        if let Err(e) = nonce_retry!(a.refresh()) {
            reasons.push(format!(
                "{name}: the authorization could not be fetched: {}",
                ca_detail(&e)
            ));
            continue;
        }
        for c in &a.challenges {
            if let Some(p) = &c.error {
                reasons.push(format!("{name}: {}", problem_text(p)));
            }
        }
    }
    if reasons.is_empty() {
        "the CA marked the order invalid without a reason".into()
    } else {
        reasons.join("; ")
    }
}

async fn finalize(
    app: &App,
    mc: &ManagedCertRow,
    domains: &[String],
    order: &mut Order,
    deadline: tokio::time::Instant,
) -> Result<Issued, String> {
    let spec = key_spec(&mc.key_type).map_err(|e| e.detail)?;
    let pool = app.rsa_pool.clone();
    let key = app
        .blocking(move || crate::leafkey::generate(spec, true, &pool))
        .await
        .map_err(|e| e.detail)?;
    let csr = csr_der(&key.private_pem, domains)?;
    nonce_retry!(order.finalize_csr(&csr)).map_err(|e| ca_detail(&e))?;
    let chain = poll(order, deadline, |o, p| Box::pin(o.poll_certificate(p))).await?;
    parse_chain(&chain, &key.spki_der, key.private_pem)
}

/// The key spec of an ACME `key_type`.
///
/// # Errors
/// `400 invalid_key_type`.
pub fn key_spec(key_type: &str) -> Result<scaivault_hsm::KeySpec, ApiError> {
    use scaivault_hsm::KeySpec;
    Ok(match key_type {
        "ec256" => KeySpec::EcP256,
        "ec384" => KeySpec::EcP384,
        "rsa2048" => KeySpec::Rsa2048,
        "rsa3072" => KeySpec::Rsa3072,
        "rsa4096" => KeySpec::Rsa4096,
        other => {
            return Err(ApiError::bad_request(
                "invalid_key_type",
                format!("key_type {other:?} is not one of ec256, ec384, rsa2048, rsa3072, rsa4096"),
            ))
        }
    })
}

/// A PKCS#10 CSR for `domains` (SANs; CN = the first name), signed with the new key.
fn csr_der(key_pem: &str, domains: &[String]) -> Result<Vec<u8>, String> {
    let kp = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("CSR key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(domains.to_vec()).map_err(|e| format!("CSR: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(first) = domains.first() {
        dn.push(rcgen::DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&kp)
        .map_err(|e| format!("CSR: {e}"))?;
    Ok(csr.der().to_vec())
}

/// Splits the CA's PEM chain, checks that the leaf carries our key, reads serial and dates.
fn parse_chain(chain: &str, spki_der: &[u8], key_pem: Zeroizing<String>) -> Result<Issued, String> {
    use der::Encode;
    let pems = split_pem(chain);
    let leaf_pem = pems.first().cloned().ok_or("the CA sent no certificate")?;
    let leaf = scaivault_core::pem::parse_certificate(&leaf_pem).map_err(|e| e.to_string())?;
    let tbs = &leaf.tbs_certificate;
    let leaf_spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    if leaf_spki != spki_der {
        return Err("the CA's certificate does not carry the key of our CSR".into());
    }
    let serial = scaivault_core::serial::Serial::from_bytes(tbs.serial_number.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(Issued {
        leaf_pem,
        chain_pem: pems.get(1..).unwrap_or_default().concat(),
        serial: serial.to_string(),
        not_before: time_util::from_x509(&tbs.validity.not_before),
        not_after: time_util::from_x509(&tbs.validity.not_after),
        key_pem,
    })
}
