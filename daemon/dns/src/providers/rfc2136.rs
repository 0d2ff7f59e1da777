//! `rfc2136`: TSIG-signed dynamic updates (RFC 2136, RFC 8945) to the zone's primary server —
//! BIND, Knot, PowerDNS, Windows DNS with TSIG, and most self-hosted DNS.
//!
//! `present` sends "add to an RRset" (RFC 2136 2.5.1) and `cleanup` "delete an RR from an RRset"
//! (2.5.4) for exactly one TXT value, so other values at the name stay. Updates go over TCP; the
//! response must carry a valid TSIG signature before its result is believed.
//!
//! Config: `server` (`host:port`, port 53 when left out), `zone`, `tsig_key_name`,
//! `tsig_algorithm` (`hmac-sha256` (default), `hmac-sha384`, `hmac-sha512`; hmac-sha1 and
//! hmac-md5 are not offered), `tsig_secret` (base64).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use crate::config::{invalid, Fields};
use crate::{dns, DnsError, DnsProvider};

pub(crate) const SECRET_KEYS: &[&str] = &["tsig_secret"];

/// TTL of the TXT records written.
const TTL: u32 = 60;
/// Allowed clock difference with the server (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;

pub(crate) struct Rfc2136 {
    server: String,
    zone: Name,
    signer: TSigner,
    algorithm: &'static str,
}

impl fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("zone", &self.zone.to_ascii())
            .field("tsig_key_name", &self.signer.signer_name().to_ascii())
            .field("tsig_algorithm", &self.algorithm)
            .field("tsig_secret", &"[redacted]")
            .finish()
    }
}

pub(crate) fn parse(f: &mut Fields<'_>) -> Result<Box<dyn DnsProvider>, DnsError> {
    let server = f.req_str("server")?;
    check_hostport(server).map_err(|d| invalid("server", d))?;
    let zone = dns::name(f.req_str("zone")?).map_err(|d| invalid("zone", d))?;
    let key_name =
        dns::name(f.req_str("tsig_key_name")?).map_err(|d| invalid("tsig_key_name", d))?;
    let (algorithm, alg_name) = match f
        .opt_str("tsig_algorithm")?
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
        .as_deref()
    {
        None | Some("hmac-sha256") => (TsigAlgorithm::HmacSha256, "hmac-sha256"),
        Some("hmac-sha384") => (TsigAlgorithm::HmacSha384, "hmac-sha384"),
        Some("hmac-sha512") => (TsigAlgorithm::HmacSha512, "hmac-sha512"),
        Some(_) => {
            return Err(invalid(
                "tsig_algorithm",
                "must be hmac-sha256, hmac-sha384 or hmac-sha512",
            ))
        }
    };
    let secret = base64::engine::general_purpose::STANDARD
        .decode(f.req_str("tsig_secret")?.trim())
        .map_err(|_| invalid("tsig_secret", "must be base64"))?;
    if secret.is_empty() {
        return Err(invalid("tsig_secret", "must not be empty"));
    }
    let signer = TSigner::new(secret, algorithm, key_name, FUDGE)
        .map_err(|_| invalid("tsig_algorithm", "not supported"))?;
    Ok(Box::new(Rfc2136 {
        server: server.to_string(),
        zone,
        signer,
        algorithm: alg_name,
    }))
}

/// `host:port` or `host`; IPv6 literals in brackets when a port is given.
fn check_hostport(s: &str) -> Result<(), String> {
    if crate::config::parse_server(s).is_some() {
        return Ok(());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("`{p}` is not a port")),
        }
    }
    let ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if ok {
        Ok(())
    } else {
        Err("must be host:port".into())
    }
}

impl Rfc2136 {
    fn txt_record(&self, fqdn: &str, value: &str) -> Result<Record, DnsError> {
        let name = dns::name(fqdn).map_err(DnsError::Provider)?;
        if !self.zone.zone_of(&name) {
            return Err(DnsError::Provider(format!(
                "{} is not in the zone {} this provider updates",
                name, self.zone
            )));
        }
        Ok(Record::from_rdata(
            name,
            TTL,
            RData::TXT(TXT::new(vec![value.to_string()])),
        ))
    }

    /// One signed update message with `record` in its update section, its id, and the verifier
    /// of the response.
    fn signed_update(
        &self,
        record: &Record,
    ) -> Result<(Vec<u8>, u16, hickory_proto::rr::TSigVerifier), DnsError> {
        let mut msg = Message::query();
        msg.metadata.op_code = OpCode::Update;
        msg.metadata.recursion_desired = false;
        let mut zone = Query::query(self.zone.clone(), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        msg.add_zone(zone);
        msg.add_update(record.clone());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let verifier = msg
            .finalize(&self.signer, now)
            .map_err(|e| DnsError::Provider(format!("rfc2136: cannot sign the update: {e}")))?
            .ok_or_else(|| DnsError::Provider("rfc2136: the update was not signed".into()))?;
        let bytes = msg
            .to_vec()
            .map_err(|e| DnsError::Provider(format!("rfc2136: cannot encode the update: {e}")))?;
        Ok((bytes, msg.metadata.id, verifier))
    }

    /// Sends one signed update with `record` to the server (each of its addresses in turn until
    /// one answers).
    async fn update(&self, record: Record) -> Result<(), DnsError> {
        let addrs = dns::resolve_host(&self.server)
            .await
            .map_err(|e| DnsError::Provider(format!("rfc2136: {e}")))?;
        let mut errors = Vec::new();
        for addr in addrs {
            let (bytes, id, mut verifier) = self.signed_update(&record)?;
            let resp = match dns::tcp_exchange(addr, &bytes).await {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            // Believe nothing the key did not sign, except to report why it was refused.
            return match verifier.verify(&resp).map(|r| r.into_message()) {
                Ok(m) if m.metadata.id != id || m.metadata.message_type != MessageType::Response => {
                    Err(DnsError::Provider(format!(
                        "rfc2136: {addr} sent a response to another message"
                    )))
                }
                Ok(m) if m.metadata.response_code == ResponseCode::NoError => Ok(()),
                Ok(m) => Err(DnsError::Provider(format!(
                    "rfc2136: {addr} refused the update: {}",
                    m.metadata.response_code
                ))),
                Err(_) => Err(DnsError::Provider(format!(
                    "rfc2136: {addr} refused the update: {} (response not signed with the TSIG key; check tsig_key_name, tsig_algorithm and tsig_secret)",
                    unsigned_rcode(&resp)
                ))),
            };
        }
        Err(DnsError::Provider(format!(
            "rfc2136: no server answered: {}",
            errors.join("; ")
        )))
    }
}

/// The response code of a response that could not be verified, with its TSIG error if any.
fn unsigned_rcode(resp: &[u8]) -> String {
    match Message::from_vec(resp) {
        Ok(m) => {
            let tsig_err = m
                .signature
                .as_ref()
                .and_then(|s| s.data.error)
                .map(|e| format!(", TSIG error {e:?}"))
                .unwrap_or_default();
            format!("{}{tsig_err}", m.metadata.response_code)
        }
        Err(_) => "malformed response".into(),
    }
}

#[async_trait::async_trait]
impl DnsProvider for Rfc2136 {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let record = self.txt_record(fqdn, value)?;
        self.update(record).await
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let mut record = self.txt_record(fqdn, value)?;
        record.dns_class = DNSClass::NONE;
        record.ttl = 0;
        self.update(record).await
    }
}
