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
    Ok((authoritative(&servers, fqdn, 53).await?, false))
}

/// Every address (on `port`) of every NS of the zone holding `fqdn`, found through `servers`.
async fn authoritative(
    servers: &[SocketAddr],
    fqdn: &Name,
    port: u16,
) -> Result<Vec<SocketAddr>, DnsError> {
    let zone = find_zone(servers, fqdn).await?;
    let ns = lookup(servers, &zone, RecordType::NS).await?;
    let mut out: Vec<SocketAddr> = Vec::new();
    let names: Vec<Name> = ns
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(n) => Some(n.0.clone()),
            _ => None,
        })
        .collect();
    let addr = |r: &hickory_proto::rr::Record| match &r.data {
        RData::A(a) => Some(SocketAddr::new(a.0.into(), port)),
        RData::AAAA(a) => Some(SocketAddr::new(a.0.into(), port)),
        _ => None,
    };
    for ns_name in &names {
        // Glue first, then A/AAAA lookups.
        let mut addrs: Vec<SocketAddr> = ns
            .additionals
            .iter()
            .filter(|r| r.name.to_lowercase() == ns_name.to_lowercase())
            .filter_map(addr)
            .collect();
        if addrs.is_empty() {
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Ok(resp) = lookup(servers, ns_name, rtype).await {
                    addrs.extend(
                        resp.answers
                            .iter()
                            .filter(|r| r.name.to_lowercase() == ns_name.to_lowercase())
                            .filter_map(addr),
                    );
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
    Ok(out)
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

#[cfg(test)]
mod tests {
    //! The NS-discovery path (no `resolvers` configured) against a small in-process resolver:
    //! the zone from the SOA in a negative answer, NS names, glue, and A/AAAA lookups.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::rdata::{A, NS, SOA};
    use hickory_proto::rr::Record;
    use std::net::Ipv4Addr;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn answer(q: &Message) -> Message {
        let query = q.queries[0].clone();
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.message_type = MessageType::Response;
        r.add_query(query.clone());
        let soa = Record::from_rdata(
            n("example.test."),
            60,
            RData::SOA(SOA::new(
                n("ns1.example.test."),
                n("h.example.test."),
                1,
                1,
                1,
                1,
                60,
            )),
        );
        match (query.name.to_ascii().as_str(), query.query_type) {
            ("example.test.", RecordType::NS) => {
                r.add_answer(Record::from_rdata(
                    n("example.test."),
                    60,
                    RData::NS(NS(n("ns1.example.test."))),
                ));
                r.add_answer(Record::from_rdata(
                    n("example.test."),
                    60,
                    RData::NS(NS(n("ns2.other.test."))),
                ));
                r.add_additional(Record::from_rdata(
                    n("ns1.example.test."),
                    60,
                    RData::A(A(Ipv4Addr::new(127, 0, 0, 10))),
                ));
            }
            ("ns2.other.test.", RecordType::A) => {
                r.add_answer(Record::from_rdata(
                    n("ns2.other.test."),
                    60,
                    RData::A(A(Ipv4Addr::new(127, 0, 0, 11))),
                ));
                r.add_answer(Record::from_rdata(
                    n("ns2.other.test."),
                    60,
                    RData::A(A(Ipv4Addr::new(127, 0, 0, 12))),
                ));
            }
            ("ns2.other.test.", RecordType::AAAA) => {}
            _ => {
                r.metadata.response_code = ResponseCode::NXDomain;
                r.add_authority(soa);
            }
        }
        r
    }

    #[tokio::test]
    async fn authoritative_servers_from_soa_ns_glue_and_address_lookups() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, from)) = sock.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..len]).unwrap();
                let bytes = answer(&q).to_vec().unwrap();
                let _ = sock.send_to(&bytes, from).await;
            }
        });
        let fqdn = n("_acme-challenge.www.example.test.");
        let got = authoritative(&[resolver], &fqdn, 5300).await.unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.10:5300", "127.0.0.11:5300", "127.0.0.12:5300"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);

        // A name whose zone has no NS answer: an error, not an empty set.
        let err = authoritative(&[resolver], &n("x.nowhere.invalid."), 53).await;
        assert!(err.is_err());
    }
}
