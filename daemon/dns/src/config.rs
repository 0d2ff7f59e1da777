//! Reading a provider config: typed getters that name the offending key, and a final check that
//! no key was left unread (an unknown key is an error, so a typo never silently drops a setting).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::DnsError;

/// The longest `propagation_timeout` accepted.
pub(crate) const MAX_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// The `propagation_timeout` when the config has none.
pub(crate) const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many `resolvers`.
const MAX_RESOLVERS: usize = 16;

pub(crate) fn invalid(field: &str, detail: impl Into<String>) -> DnsError {
    DnsError::InvalidConfig {
        field: field.to_string(),
        detail: detail.into(),
    }
}

/// A config object being read; remembers which keys were read.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    read: BTreeSet<&'static str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(config: &'a Value) -> Result<Self, DnsError> {
        match config {
            Value::Object(map) => Ok(Fields {
                map,
                read: BTreeSet::new(),
            }),
            _ => Err(invalid("config", "must be a JSON object")),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.insert(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// The raw value of `key`, if present and not null.
    pub(crate) fn opt_value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.get(key)
    }

    /// A non-empty string, if present.
    pub(crate) fn opt_str(&mut self, key: &'static str) -> Result<Option<&'a str>, DnsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(invalid(key, "must not be empty")),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid(key, "must be a string")),
        }
    }

    /// A required non-empty string.
    pub(crate) fn req_str(&mut self, key: &'static str) -> Result<&'a str, DnsError> {
        self.opt_str(key)?
            .ok_or_else(|| invalid(key, "is required"))
    }

    /// A required credential that goes into an HTTP header or a signature: printable ASCII
    /// without spaces (surrounding whitespace is trimmed). Checked here, at creation, so that a
    /// pasted `\r\n` or NUL is refused with the key's name instead of failing every order.
    pub(crate) fn req_credential(&mut self, key: &'static str) -> Result<&'a str, DnsError> {
        let v = self.req_str(key)?.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                key,
                "must be printable ASCII without spaces or control characters",
            ));
        }
        Ok(v)
    }

    /// An optional `http://` or `https://` URL, returned without a trailing `/`.
    pub(crate) fn opt_url(&mut self, key: &'static str) -> Result<Option<String>, DnsError> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(s).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(key, "must be an http:// or https:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(invalid(key, "must not carry credentials or a query"));
        }
        Ok(Some(s.trim_end_matches('/').to_string()))
    }

    /// `propagation_timeout`: `"90s"`, `"2m"`, `"1h"`, `"1m30s"`, or a number of seconds.
    pub(crate) fn propagation_timeout(&mut self) -> Result<Duration, DnsError> {
        const KEY: &str = "propagation_timeout";
        let d = match self.get(KEY) {
            None => return Ok(DEFAULT_PROPAGATION_TIMEOUT),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Duration::from_secs)
                .ok_or_else(|| invalid(KEY, "must be a whole number of seconds"))?,
            Some(Value::String(s)) => parse_duration(s).ok_or_else(|| {
                invalid(
                    KEY,
                    "must be a duration such as \"90s\", \"2m\" or \"1m30s\"",
                )
            })?,
            Some(_) => return Err(invalid(KEY, "must be a duration string or seconds")),
        };
        if d > MAX_PROPAGATION_TIMEOUT {
            return Err(invalid(KEY, "must be at most 2h"));
        }
        Ok(d)
    }

    /// `resolvers`: a list of `"ip:port"` (or `"ip"`, port 53; IPv6 as `"[::1]:53"`).
    pub(crate) fn resolvers(&mut self) -> Result<Vec<SocketAddr>, DnsError> {
        const KEY: &str = "resolvers";
        let list = match self.get(KEY) {
            None => return Ok(Vec::new()),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(invalid(KEY, "must be a list of \"ip:port\" strings")),
        };
        if list.len() > MAX_RESOLVERS {
            return Err(invalid(KEY, format!("at most {MAX_RESOLVERS} entries")));
        }
        list.iter()
            .map(|v| {
                let s = v
                    .as_str()
                    .ok_or_else(|| invalid(KEY, "must be a list of \"ip:port\" strings"))?;
                parse_server(s).ok_or_else(|| invalid(KEY, format!("`{s}` is not an ip:port")))
            })
            .collect()
    }

    /// Fails on the first key that no getter asked for.
    pub(crate) fn finish(self) -> Result<(), DnsError> {
        match self.map.keys().find(|k| !self.read.contains(k.as_str())) {
            Some(k) => Err(invalid(k, "unknown key for this provider type")),
            None => Ok(()),
        }
    }
}

/// `"1.2.3.4:53"`, `"[::1]:53"`, `"1.2.3.4"` or `"::1"` (port 53).
pub(crate) fn parse_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// `"90s"`, `"2m"`, `"1h"`, `"1m30s"`, `"1500ms"`, `"0"`, `"45"` (seconds).
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
        for bad in ["", "s", "5x", "m5", "1.5s", "-1s", "5 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn servers() {
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            "127.0.0.1:5353".parse().ok()
        );
        assert_eq!(parse_server("127.0.0.1"), "127.0.0.1:53".parse().ok());
        assert_eq!(parse_server("[::1]:54"), "[::1]:54".parse().ok());
        assert_eq!(parse_server("::1"), "[::1]:53".parse().ok());
        assert_eq!(parse_server("ns1.example.com:53"), None);
    }
}
