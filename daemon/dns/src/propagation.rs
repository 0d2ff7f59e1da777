//! Where the record goes (following `_acme-challenge` CNAMEs) and when it is visible (every
//! authoritative server serves it).
//!
//! Which servers must serve the record:
//! - no `resolvers` configured: the system's resolvers (`/etc/resolv.conf`) find the zone (its
//!   SOA), its NS names and their addresses, and every address is asked directly, without
//!   recursion, on port 53;
//! - `resolvers` configured: they do the CNAME lookups, and they are also the servers that must
//!   serve the record. Point them at the zone's authoritative servers (any port), or at resolvers
//!   whose view matters (split-horizon DNS, the resolver the ACME CA uses); a caching resolver may
//!   hold a negative answer for up to the zone's SOA minimum TTL.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::dns;
use crate::DnsError;

/// At most this many CNAME hops from `_acme-challenge.<domain>`.
const MAX_CNAME_HOPS: usize = 8;
/// First and longest pause between two rounds of checks.
const FIRST_POLL: Duration = Duration::from_millis(500);
const MAX_POLL: Duration = Duration::from_secs(5);
/// At most this many authoritative addresses are checked.
const MAX_AUTHORITATIVE: usize = 16;

/// The servers used for lookups: the configured resolvers, else the system's.
pub(crate) fn lookup_servers(resolvers: &[SocketAddr]) -> Result<Vec<SocketAddr>, DnsError> {
    if resolvers.is_empty() {
        dns::system_resolvers()
    } else {
        Ok(resolvers.to_vec())
    }
}

/// Asks the servers in turn (recursion desired) until one gives an authoritative outcome
/// (NOERROR or NXDOMAIN).
async fn lookup(
    servers: &[SocketAddr],
    qname: &Name,
    rtype: RecordType,
) -> Result<Message, DnsError> {
    let mut errors = Vec::new();
    for server in servers {
        match dns::query(*server, qname, rtype, true).await {
            Ok(resp)
                if matches!(
                    resp.metadata.response_code,
                    ResponseCode::NoError | ResponseCode::NXDomain
                ) =>
            {
                return Ok(resp)
            }
            Ok(resp) => errors.push(format!("{server}: {}", resp.metadata.response_code)),
            Err(e) => errors.push(e),
        }
    }
    Err(DnsError::Provider(format!(
        "DNS lookup of {qname} {rtype} failed: {}",
        errors.join("; ")
    )))
}

/// Follows CNAMEs from `start` (bounded, loops refused) and returns the name to write the TXT
/// record at.
pub(crate) async fn follow_cname(servers: &[SocketAddr], start: Name) -> Result<Name, DnsError> {
    let mut current = start;
    let mut seen = BTreeSet::new();
    seen.insert(current.to_lowercase());
    for _ in 0..MAX_CNAME_HOPS {
        let resp = lookup(servers, &current, RecordType::CNAME).await?;
        let target = resp.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name.to_lowercase() == current.to_lowercase() => Some(c.0.clone()),
            _ => None,
        });
        let Some(mut target) = target else {
            return Ok(current);
        };
        target.set_fqdn(true);
        if !seen.insert(target.to_lowercase()) {
            return Err(DnsError::Provider(format!(
                "CNAME loop at {current} -> {target}"
            )));
        }
        current = target;
    }
    Err(DnsError::Provider(format!(
        "more than {MAX_CNAME_HOPS} CNAMEs from the challenge name"
    )))
}

/// The servers that must serve the record, and whether to ask them with recursion desired.
pub(crate) async fn check_servers(
    resolvers: &[SocketAddr],
    fqdn: &Name,
) -> Result<(Vec<SocketAddr>, bool), DnsError> {
    if !resolvers.is_empty() {
        return Ok((resolvers.to_vec(), true));
    }
    let servers = dns::system_resolvers()?;
    let zone = find_zone(&servers, fqdn).await?;
    let ns = lookup(&servers, &zone, RecordType::NS).await?;
    let mut out: Vec<SocketAddr> = Vec::new();
    let names: Vec<Name> = ns
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(n) => Some(n.0.clone()),
            _ => None,
        })
        .collect();
    for ns_name in &names {
        // Glue first, then A/AAAA lookups.
        let mut addrs: Vec<SocketAddr> = ns
            .additionals
            .iter()
            .filter(|r| r.name.to_lowercase() == ns_name.to_lowercase())
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(SocketAddr::new(a.0.into(), 53)),
                RData::AAAA(a) => Some(SocketAddr::new(a.0.into(), 53)),
                _ => None,
            })
            .collect();
        if addrs.is_empty() {
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Ok(resp) = lookup(&servers, ns_name, rtype).await {
                    addrs.extend(resp.answers.iter().filter_map(|r| match &r.data {
                        RData::A(a) => Some(SocketAddr::new(a.0.into(), 53)),
                        RData::AAAA(a) => Some(SocketAddr::new(a.0.into(), 53)),
                        _ => None,
                    }));
                }
            }
        }
        for a in addrs {
            if !out.contains(&a) && out.len() < MAX_AUTHORITATIVE {
                out.push(a);
            }
        }
    }
    if out.is_empty() {
        return Err(DnsError::Provider(format!(
            "no authoritative server address found for zone {zone}"
        )));
    }
    Ok((out, false))
}

/// The apex of the zone holding `fqdn`: the owner of the SOA a resolver returns for it.
async fn find_zone(servers: &[SocketAddr], fqdn: &Name) -> Result<Name, DnsError> {
    let resp = lookup(servers, fqdn, RecordType::SOA).await?;
    resp.answers
        .iter()
        .chain(resp.authorities.iter())
        .find(|r| matches!(r.data, RData::SOA(_)) && r.name.zone_of(fqdn))
        .map(|r| r.name.clone())
        .ok_or_else(|| DnsError::Provider(format!("no zone (SOA) found for {fqdn}")))
}

/// Whether `server` serves the TXT `value` at `fqdn`.
async fn serves(server: SocketAddr, fqdn: &Name, value: &str, recursion: bool) -> bool {
    match dns::query(server, fqdn, RecordType::TXT, recursion).await {
        Ok(resp) if resp.metadata.response_code == ResponseCode::NoError => {
            resp.answers.iter().any(|r| {
                r.name.to_lowercase() == fqdn.to_lowercase()
                    && dns::txt_value(r).is_some_and(|v| v == value)
            })
        }
        _ => false,
    }
}

/// Polls `servers` until each serves the record, or `timeout` passes.
pub(crate) async fn wait(
    servers: &[SocketAddr],
    recursion: bool,
    fqdn: &Name,
    value: &str,
    timeout: Duration,
) -> Result<(), DnsError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<SocketAddr> = servers.to_vec();
    let mut pause = FIRST_POLL;
    loop {
        let mut still = Vec::new();
        for server in pending {
            if !serves(server, fqdn, value, recursion).await {
                still.push(server);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(DnsError::PropagationTimeout {
                fqdn: fqdn.to_ascii(),
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}
