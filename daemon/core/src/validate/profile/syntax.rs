//! Syntax of names in certificates and name constraints.

use super::super::failure::{Code, Failure};
use super::super::parsed::Parsed;
use x509_cert::ext::pkix::name::GeneralName;

/// A common name that is an IP address literal (in any notation a legacy parser accepts:
/// `192.168.001.001`, `0xC0A80101`, uppercase or uncompressed IPv6) or an internationalized
/// domain name (U-labels or `xn--` A-labels) must be one of the SubjectAltName values, written
/// the same way (IP addresses in canonical form, RFC 5952 for IPv6; DNS names ignoring ASCII case,
/// RFC 4343). Such CNs are where name parsers disagree (CVE-class "CN confusion", homographs);
/// CA/B BR §7.1.4.3 requires every CN to be a SAN value. A plain DNS-name CN that is not a SAN is
/// accepted: clients match SANs only (RFC 9525 §6.4.4), and private PKIs often carry a free-form
/// or legacy CN.
pub(super) fn ambiguous_cn(c: &Parsed) -> Option<Failure> {
    let cn = crate::name::common_name(&c.cert.tbs_certificate.subject)?;
    let hex_ip = cn
        .strip_prefix("0x")
        .or_else(|| cn.strip_prefix("0X"))
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let dotted = cn.contains('.') && cn.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let ipv6 = cn.parse::<std::net::Ipv6Addr>().is_ok();
    let idn = cn.contains('.')
        && !cn.contains(char::is_whitespace)
        && (!cn.is_ascii()
            || cn
                .split('.')
                .any(|l| l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--"))));
    if !(hex_ip || dotted || ipv6 || idn) {
        return None;
    }
    let listed = c.san_names().iter().any(|n| match n {
        GeneralName::DnsName(d) => d.as_str().eq_ignore_ascii_case(&cn),
        GeneralName::IpAddress(o) => ip_text(o.as_bytes()).is_some_and(|t| t == cn),
        _ => false,
    });
    (!listed).then(|| {
        Failure::new(
            Code::ProfileViolation,
            format!(
                "{}: the common name {cn:?} is an IP address or internationalized name that is not written as one of the SubjectAltName values (CA/B BR §7.1.4.3)",
                c.describe()
            ),
        )
    })
}

/// The canonical text of an iPAddress SAN.
fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv4Addr::from(a).to_string()),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv6Addr::from(a).to_string()),
        _ => None,
    }
}

/// RFC 5280 §4.2.1.6 / RFC 1034 §3.5 preferred name syntax (letters, digits, hyphens; labels of
/// 1..63 octets not starting or ending with a hyphen). A SAN may carry one leading `*` label (a
/// wildcard, RFC 6125 §6.4.3); a name constraint may not.
pub(super) fn dns_name_ok(name: &str, constraint: bool) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').enumerate().all(|(i, label)| {
        if label == "*" && i == 0 && !constraint {
            return true;
        }
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// `*.<public suffix>` (`*.com`, `*.co.uk`): a wildcard that would match every registrant under
/// an ICANN suffix of the Public Suffix List. The list's private section is not used: its owners
/// do hold such wildcards (`*.s3.amazonaws.com` is in Amazon's own certificate). Names under
/// suffixes the list does not know (`*.corp.internal`) are not affected.
pub(super) fn wildcard_on_public_suffix(name: &str) -> bool {
    let Some(base) = name.strip_prefix("*.") else {
        return false;
    };
    let base = base.strip_suffix('.').unwrap_or(base).to_ascii_lowercase();
    psl::suffix(base.as_bytes())
        .is_some_and(|s| s.typ() == Some(psl::Type::Icann) && s.as_bytes() == base.as_bytes())
}

pub(super) fn ip_constraint_ok(b: &[u8]) -> bool {
    let (addr, mask) = match b.len() {
        8 => b.split_at(4),
        32 => b.split_at(16),
        _ => return false,
    };
    let _ = addr;
    // The mask is some ones followed by zeros.
    let bits: Vec<bool> = mask
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| byte & (1 << i) != 0))
        .collect();
    let ones = bits.iter().take_while(|b| **b).count();
    bits.iter().skip(ones).all(|b| !b)
}

pub(super) fn mailbox_ok(m: &str) -> bool {
    match m.rsplit_once('@') {
        Some((local, host)) => !local.is_empty() && dns_name_ok(host, true),
        None => false,
    }
}

/// RFC 5280 §4.2.1.10: a mailbox, a host, or a domain written with a leading period.
pub(super) fn mail_constraint_ok(m: &str) -> bool {
    if m.contains('@') {
        return mailbox_ok(m);
    }
    let host = m.strip_prefix('.').unwrap_or(m);
    dns_name_ok(host, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_syntax() {
        assert!(dns_name_ok("example.com", false));
        assert!(dns_name_ok("*.example.com", false));
        assert!(!dns_name_ok("*.example.com", true));
        assert!(!dns_name_ok("foo_bar.example.com", false));
        assert!(!dns_name_ok(".example.com", true));
        assert!(!dns_name_ok("a..b", false));
        assert!(!dns_name_ok("-a.b", false));
    }

    #[test]
    fn public_suffix_wildcards() {
        assert!(wildcard_on_public_suffix("*.co.uk"));
        assert!(wildcard_on_public_suffix("*.com"));
        assert!(!wildcard_on_public_suffix("*.s3.amazonaws.com"));
        assert!(!wildcard_on_public_suffix("*.example.co.uk"));
        assert!(!wildcard_on_public_suffix("*.svc.cluster.local"));
        assert!(!wildcard_on_public_suffix("*.internal"));
        assert!(!wildcard_on_public_suffix("example.com"));
    }

    #[test]
    fn ip_masks() {
        assert!(ip_constraint_ok(&[10, 0, 0, 0, 255, 0, 0, 0]));
        assert!(!ip_constraint_ok(&[10, 0, 0, 0, 255, 0, 255, 0]));
        assert!(!ip_constraint_ok(&[10, 0, 0, 0]));
    }
}
