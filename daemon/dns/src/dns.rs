//! The DNS exchanges this crate makes: plain queries (UDP, TCP when truncated) to resolvers and
//! authoritative servers, and single request/response exchanges over TCP for RFC 2136 updates.
//! Message encoding is hickory-proto's; the transport is a few lines of tokio.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::DnsError;

/// One attempt's timeout (UDP datagram or TCP exchange).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// UDP attempts per server before giving up on it.
const UDP_ATTEMPTS: usize = 2;
/// The EDNS payload size we advertise (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// Parses an absolute DNS name (a missing trailing dot is added).
pub(crate) fn name(s: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(s).map_err(|e| format!("`{s}` is not a DNS name: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// A TXT record's value: its character-strings joined (RFC 8555 values fit in one).
pub(crate) fn txt_value(record: &Record) -> Option<String> {
    match &record.data {
        RData::TXT(txt) => {
            let mut out = Vec::new();
            for part in txt.txt_data.iter() {
                out.extend_from_slice(part);
            }
            Some(String::from_utf8_lossy(&out).into_owned())
        }
        _ => None,
    }
}

/// The servers of `/etc/resolv.conf` (port 53).
pub(crate) fn system_resolvers() -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string("/etc/resolv.conf").map_err(|e| {
        DnsError::Provider(format!(
            "no `resolvers` configured and /etc/resolv.conf is unreadable: {e}"
        ))
    })?;
    let servers: Vec<SocketAddr> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => {
                    // A link-local IPv6 address may carry a `%zone`, which we cannot use here.
                    crate::config::parse_server(addr)
                }
                _ => None,
            }
        })
        .collect();
    if servers.is_empty() {
        return Err(DnsError::Provider(
            "no `resolvers` configured and /etc/resolv.conf names no nameserver".into(),
        ));
    }
    Ok(servers)
}

/// Asks `server` for `name`/`rtype`; `recursion` sets the RD bit. Returns the response when the
/// server answered at all (any response code; the caller decides).
pub(crate) async fn query(
    server: SocketAddr,
    qname: &Name,
    rtype: RecordType,
    recursion: bool,
) -> Result<Message, String> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = recursion;
    msg.add_query(Query::query(qname.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD).set_version(0);
    msg.edns = Some(edns);
    let id = msg.metadata.id;
    let bytes = msg
        .to_vec()
        .map_err(|e| format!("cannot encode a query: {e}"))?;

    let mut last_err = String::from("no answer");
    for _ in 0..UDP_ATTEMPTS {
        match udp_exchange(server, &bytes, id, qname, rtype).await {
            Ok(resp) if resp.metadata.truncation => break,
            Ok(resp) => return Ok(resp),
            Err(e) => last_err = e,
        }
    }
    // Truncated over UDP, or UDP failed: TCP.
    match tcp_exchange(server, &bytes).await {
        Ok(resp_bytes) => {
            let resp = Message::from_vec(&resp_bytes)
                .map_err(|e| format!("{server}: malformed DNS response: {e}"))?;
            check_response(&resp, id, qname, rtype).map_err(|e| format!("{server}: {e}"))?;
            Ok(resp)
        }
        Err(e) => Err(format!("{server}: {e} (UDP: {last_err})")),
    }
}

fn check_response(resp: &Message, id: u16, qname: &Name, rtype: RecordType) -> Result<(), String> {
    if resp.metadata.id != id || resp.metadata.message_type != MessageType::Response {
        return Err("response does not match the query".into());
    }
    if resp.metadata.op_code != OpCode::Query {
        return Err("response has the wrong opcode".into());
    }
    match resp.queries.first() {
        Some(q) if q.query_type == rtype && q.name.to_lowercase() == qname.to_lowercase() => Ok(()),
        // Some servers leave the question out of error responses.
        None if resp.metadata.response_code != ResponseCode::NoError => Ok(()),
        _ => Err("response is for another question".into()),
    }
}

async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    id: u16,
    qname: &Name,
    rtype: RecordType,
) -> Result<Message, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("UDP socket: {e}"))?;
    sock.connect(server)
        .await
        .map_err(|e| format!("UDP connect: {e}"))?;
    sock.send(bytes)
        .await
        .map_err(|e| format!("UDP send: {e}"))?;
    let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| "UDP timeout".to_string())?
            .map_err(|e| format!("UDP receive: {e}"))?;
        // Anything that does not parse or match is ignored (spoofing, late answers).
        let Some(bytes) = buf.get(..n) else { continue };
        if let Ok(resp) = Message::from_vec(bytes) {
            if check_response(&resp, id, qname, rtype).is_ok() {
                return Ok(resp);
            }
        }
    }
}

/// One request and its response over TCP (two-byte length prefix, RFC 1035 4.2.2).
pub(crate) async fn tcp_exchange(server: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let len = u16::try_from(bytes.len()).map_err(|_| "message too long".to_string())?;
    let work = async {
        let mut stream = TcpStream::connect(server)
            .await
            .map_err(|e| format!("TCP connect: {e}"))?;
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("TCP send: {e}"))?;
        let mut len_buf = [0u8; 2];
        stream
            .read_exact(&mut len_buf)
            .await
            .map_err(|e| format!("TCP receive: {e}"))?;
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len_buf))];
        stream
            .read_exact(&mut resp)
            .await
            .map_err(|e| format!("TCP receive: {e}"))?;
        Ok(resp)
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT * 2, work)
        .await
        .map_err(|_| "TCP timeout".to_string())?
}

/// Resolves a `host:port` (or `host`, port 53) to socket addresses.
pub(crate) async fn resolve_host(hostport: &str) -> Result<Vec<SocketAddr>, String> {
    if let Some(addr) = crate::config::parse_server(hostport) {
        return Ok(vec![addr]);
    }
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:53")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(with_port.as_str())
        .await
        .map_err(|e| format!("cannot resolve `{hostport}`: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("`{hostport}` has no address"));
    }
    Ok(addrs)
}
