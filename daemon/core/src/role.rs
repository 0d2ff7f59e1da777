//! The name policy of a PKI role: which subject names a certificate issued under the role may
//! carry. Pure policy, no HTTP and no SQL: the daemon turns an issue or sign request into a
//! [`NameRequest`], and [`RolePolicy::check`] either approves every name (normalized and
//! de-duplicated, as [`ApprovedNames`]) or refuses the first that breaks a rule.
//!
//! The rules follow Vault's role checks, but stricter:
//!
//! - Subject alternative names are DNS names, IP addresses and URIs (RFC 5280 §4.2.1.6). DNS names
//!   are preferred-name-syntax hostnames (RFC 1035 §2.3.1 as relaxed by RFC 1123 §2.1): labels of
//!   1 to 63 letters, digits and hyphens, neither starting nor ending with a hyphen, at most 253
//!   octets; a rightmost label that is numeric is refused, so IP addresses cannot hide in DNS names.
//! - Internationalized names arrive as A-labels (`xn--…`, RFC 5890), which are LDH; a U-label is
//!   refused with a hint to send the A-label. An A-label must decode to a valid label (UTS #46,
//!   strict) and be in canonical form.
//! - A wildcard is only a whole leftmost `*` label (RFC 6125 §6.4.3), never `*` directly under a
//!   single label (`*.com`), and needs `allow_wildcard_certificates`.
//! - Domains match case-insensitively with one trailing dot ignored: a role entry `*.x.y` matches
//!   exactly one label left of `x.y`, a bare entry `x.y` only itself; with `allow_subdomains`
//!   either form matches names any depth below `x.y` ([`matches_domain`]).
//! - IPs need `allow_ip_sans` and, when `allowed_ip_ranges` is set, a range holding them. IPv4 and
//!   IPv6 are separate families: an IPv4-mapped IPv6 address is not inside an IPv4 range.
//! - URIs (`scheme://host…`, ASCII, no whitespace, no user information, backslash or `.`/`..`
//!   path segment, no empty host label) must match a glob of `allowed_uri_sans`, where `*`
//!   does not cross `/`, `?`, `#`, `@`, `\` or `%` ([`glob_match`]).
//! - At most [`MAX_NAMES`] names per request, checked before any name is looked at.
//!
//! Non-goals: the subject DN beyond the CN ([`crate::name`]), validity and key checks, and public
//! suffix lists (only single-label suffixes are recognized as too broad for a wildcard).

use crate::profile::IpRange;
use crate::{Error, Result};
use std::net::IpAddr;

/// The most names a request may carry: CN (when it is not also in `dns_names`), DNS names, IPs
/// and URIs together.
pub const MAX_NAMES: usize = 100;

/// Longest DNS name without its trailing dot (RFC 1035 §2.3.4: 255 octets on the wire).
const MAX_DNS_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// The name rules of a role.
#[derive(Debug, Clone, Default)]
pub struct RolePolicy {
    /// Domain entries, bare (`example.com`) or one-label wildcards (`*.example.com`).
    pub allowed_domains: Vec<String>,
    /// Whether each entry also covers names any depth below its base domain.
    pub allow_subdomains: bool,
    /// Whether a requested name may be a wildcard (`*.svc.example.com`).
    pub allow_wildcard_certificates: bool,
    /// Whether IP addresses may be requested at all.
    pub allow_ip_sans: bool,
    /// Ranges requested IPs must lie in; empty means any IP (when `allow_ip_sans`).
    pub allowed_ip_ranges: Vec<IpRange>,
    /// Globs requested URIs must match; empty means no URI is allowed.
    pub allowed_uri_sans: Vec<String>,
    /// Skip domain matching (syntax is still checked) and allow a CN that is not a DNS name.
    pub allow_any_name: bool,
    /// Whether a non-empty common name is required.
    pub require_cn: bool,
}

/// The names a request asks for, as given by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct NameRequest<'a> {
    /// The subject common name; `None` or blank means none.
    pub common_name: Option<&'a str>,
    /// DNS subject alternative names (`alt_names`).
    pub dns_names: &'a [String],
    /// IP subject alternative names, as text.
    pub ip_sans: &'a [String],
    /// URI subject alternative names.
    pub uri_sans: &'a [String],
}

/// The names approved by a role, normalized and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovedNames {
    /// The common name: lowercased without trailing dot when it is a DNS name, else as given.
    pub common_name: Option<String>,
    /// DNS names, lowercased without trailing dot: the CN first (when it is a DNS name, since the
    /// CN is repeated in the SAN), then the requested names in request order.
    pub dns_names: Vec<String>,
    /// IP addresses: the CN first (when it is one), then the requested ones in request order.
    pub ips: Vec<IpAddr>,
    /// URIs as given, in request order.
    pub uris: Vec<String>,
}

impl RolePolicy {
    /// Checks every requested name exactly once, in the order CN, DNS names, IPs, URIs, and
    /// returns the approved names or the first refusal.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the offending value and rule, with code `too_many_names`,
    /// `cn_required`, `invalid_dns_name`, `wildcard_not_allowed`, `domain_not_allowed`,
    /// `ip_sans_not_allowed`, `invalid_ip`, `ip_not_allowed`, `invalid_uri` or
    /// `uri_not_allowed`.
    pub fn check(&self, req: &NameRequest<'_>) -> Result<ApprovedNames> {
        let count = name_count(req);
        if count > MAX_NAMES {
            return Err(Error::invalid(
                "too_many_names",
                format!("the request carries {count} names, more than the limit of {MAX_NAMES}"),
            ));
        }
        let mut out = ApprovedNames::default();
        // An empty CN is no CN (as in Vault); one of whitespace alone is a mistake, not silence.
        if let Some(cn) = req.common_name {
            if !cn.is_empty() && cn.trim().is_empty() {
                return Err(Error::invalid(
                    "invalid_dns_name",
                    format!(
                        "common name {cn:?} is only whitespace: give a name, or leave common_name \
                         out"
                    ),
                ));
            }
        }
        match req.common_name.filter(|cn| !cn.is_empty()) {
            Some(cn) => match self.check_cn(cn)? {
                CommonName::Dns(name) => {
                    out.common_name = Some(name.clone());
                    out.dns_names.push(name);
                }
                CommonName::Ip(ip) => {
                    out.common_name = Some(ip.to_string());
                    out.ips.push(ip);
                }
                CommonName::FreeForm(cn) => out.common_name = Some(cn),
            },
            None if self.require_cn => {
                return Err(Error::invalid(
                    "cn_required",
                    "the role requires a common_name and none was given",
                ))
            }
            None => {}
        }
        for raw in req.dns_names {
            push_unique(&mut out.dns_names, self.check_dns_name(raw)?);
        }
        for raw in req.ip_sans {
            push_unique(&mut out.ips, self.check_ip(raw)?);
        }
        for raw in req.uri_sans {
            self.check_uri(raw)?;
            push_unique(&mut out.uris, raw.clone());
        }
        Ok(out)
    }

    /// A CN is a DNS name when it passes as one; an IP address when it parses as one and the role
    /// allows IP SANs (it is then checked as an IP SAN and repeated in the SAN, as Vault does);
    /// with `allow_any_name`, a CN that does not pass as a host name and is clearly not meant as
    /// one (it has whitespace, or neither a dot nor a `*`) is kept as free text. (`Billing` passes:
    /// a single-label host name, lowercased and repeated in the SAN.)
    fn check_cn(&self, cn: &str) -> Result<CommonName> {
        if cn.parse::<IpAddr>().is_ok() {
            if !self.allow_ip_sans {
                return Err(Error::invalid(
                    "ip_sans_not_allowed",
                    format!(
                        "common name {cn:?} is an IP address and the role does not allow IP SANs"
                    ),
                ));
            }
            return self.check_ip(cn).map(CommonName::Ip);
        }
        match self.check_dns_name(cn) {
            Ok(name) => Ok(CommonName::Dns(name)),
            Err(e) => {
                // Free text (`Billing Service`) has an inner ASCII space or neither a dot nor a
                // `*`: the lint before signing reads anything else as a host name.
                let free_form = cn.contains(' ') || !cn.contains(['.', '*']);
                if !self.allow_any_name || !free_form || reads_as_ip(cn) {
                    return Err(e);
                }
                let bad = |why: &str| {
                    Error::invalid("invalid_dns_name", format!("common name {cn:?} {why}"))
                };
                if cn.chars().any(crate::name::is_hidden) {
                    return Err(bad("contains control or invisible characters"));
                }
                // Padding would carry an IP address or a wildcard past the rules for them
                // (`"10.0.0.1 "`), and other spaces would read as host names to some clients.
                if cn.trim() != cn {
                    return Err(bad("has leading or trailing whitespace"));
                }
                if cn.chars().any(|c| c.is_whitespace() && c != ' ') {
                    return Err(bad("contains whitespace other than the ASCII space"));
                }
                Ok(CommonName::FreeForm(cn.to_owned()))
            }
        }
    }

    fn check_dns_name(&self, raw: &str) -> Result<String> {
        let name = parse_dns_name(raw)?;
        if name.starts_with("*.") && !self.allow_wildcard_certificates {
            return Err(Error::invalid(
                "wildcard_not_allowed",
                format!("{name:?} is a wildcard and the role does not allow wildcard certificates"),
            ));
        }
        if !self.allow_any_name
            && !self
                .allowed_domains
                .iter()
                .any(|p| matches_domain(p, &name, self.allow_subdomains))
        {
            let subdomains = if self.allow_subdomains {
                "with"
            } else {
                "without"
            };
            return Err(Error::invalid(
                "domain_not_allowed",
                format!(
                    "{name:?} matches none of the role's allowed_domains {:?} ({subdomains} subdomains)",
                    self.allowed_domains
                ),
            ));
        }
        Ok(name)
    }

    fn check_ip(&self, raw: &str) -> Result<IpAddr> {
        if !self.allow_ip_sans {
            return Err(Error::invalid(
                "ip_sans_not_allowed",
                format!("ip san {raw:?} refused: the role does not allow IP SANs"),
            ));
        }
        let ip: IpAddr = raw.parse().map_err(|_| {
            Error::invalid(
                "invalid_ip",
                format!("{raw:?} is not an IPv4 or IPv6 address"),
            )
        })?;
        // Go, Java and others take `::ffff:a.b.c.d` for the IPv4 address: allowed by an IPv6
        // range, it would reach clients as an IPv4 address no IPv4 range allowed.
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(Error::invalid(
                    "invalid_ip",
                    format!(
                        "{raw:?} is an IPv4-mapped IPv6 address, which clients read as {v4}: \
                         request {v4}"
                    ),
                ));
            }
        }
        if !self.allowed_ip_ranges.is_empty()
            && !self.allowed_ip_ranges.iter().any(|r| range_contains(r, ip))
        {
            let ranges: Vec<String> = self
                .allowed_ip_ranges
                .iter()
                .map(|r| format!("{}/{}", r.addr, r.prefix))
                .collect();
            return Err(Error::invalid(
                "ip_not_allowed",
                format!(
                    "{ip} is outside the role's allowed_ip_ranges [{}]",
                    ranges.join(", ")
                ),
            ));
        }
        Ok(ip)
    }

    fn check_uri(&self, raw: &str) -> Result<()> {
        check_uri_syntax(raw)?;
        if self.allowed_uri_sans.is_empty() {
            return Err(Error::invalid(
                "uri_not_allowed",
                format!("uri san {raw:?} refused: the role allows no URI SANs"),
            ));
        }
        if !self.allowed_uri_sans.iter().any(|g| glob_match(g, raw)) {
            return Err(Error::invalid(
                "uri_not_allowed",
                format!(
                    "{raw:?} matches none of the role's allowed_uri_sans {:?}",
                    self.allowed_uri_sans
                ),
            ));
        }
        Ok(())
    }
}

/// How a checked common name goes into the certificate.
enum CommonName {
    /// A DNS name, normalized; it is repeated in the SAN.
    Dns(String),
    /// An IP address (the role allows IP SANs); it is repeated in the SAN.
    Ip(IpAddr),
    /// Free text (only with `allow_any_name`); not in the SAN.
    FreeForm(String),
}

/// Whether `name` is covered by the role entry `pattern`, case-insensitively and ignoring one
/// trailing dot on either. A bare entry `x.y` matches `x.y`; an entry `*.x.y` matches exactly one
/// label left of `x.y` (`a.x.y`, and a requested wildcard `*.x.y`), never `x.y` itself. With
/// `allow_subdomains`, either form also matches names any depth below `x.y`. An empty entry, or
/// one with a `*` anywhere but a whole leftmost label, matches nothing.
pub fn matches_domain(pattern: &str, name: &str, allow_subdomains: bool) -> bool {
    let pattern = strip_dot(pattern).to_ascii_lowercase();
    let name = strip_dot(name).to_ascii_lowercase();
    let (base, wildcard) = match pattern.strip_prefix("*.") {
        Some(base) => (base, true),
        None => (pattern.as_str(), false),
    };
    if base.is_empty() || base.contains('*') || name.is_empty() {
        return false;
    }
    if !wildcard && name == base {
        return true;
    }
    let Some(prefix) = name
        .strip_suffix(base)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return false;
    };
    if prefix.split('.').any(str::is_empty) {
        return false;
    }
    allow_subdomains || (wildcard && !prefix.contains('.'))
}

/// Whether `value` matches the glob `pattern`, where `*` matches any run of characters (possibly
/// empty) except `/` and the other delimiters of [`star_may_match`], and every other character
/// matches itself, case-sensitively. So
/// `spiffe://cluster.local/ns/*/sa/*` matches `spiffe://cluster.local/ns/prod/sa/billing` but not
/// `spiffe://cluster.local/ns/a/b/sa/x`.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let mut pattern_segments = pattern.split('/');
    let mut value_segments = value.split('/');
    loop {
        match (pattern_segments.next(), value_segments.next()) {
            (Some(p), Some(v)) if segment_match(p.as_bytes(), v.as_bytes()) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Characters a `*` never matches: those that would move the rest of the match into another
/// part of the URI — `?` (query), `#` (fragment), `@` (the end of user information), `\` (which
/// WHATWG URL parsers read as `/`) — and `%`, since a percent-encoded `/` or `?` decodes to one.
/// So `https://*.example.com/*` does not match `https://evil.com#.example.com/a`.
fn star_may_match(b: u8) -> bool {
    !matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\' | b'%')
}

/// Glob match inside one `/`-free segment, `*` matching any run (possibly empty) of characters
/// [`star_may_match`] allows: `dp[j]` says whether the pattern so far matches `value[..j]`
/// (time and space linear in the value per pattern character).
fn segment_match(pattern: &[u8], value: &[u8]) -> bool {
    let mut dp = vec![false; value.len() + 1];
    dp[0] = true;
    let mut next = vec![false; value.len() + 1];
    for &pc in pattern {
        if pc == b'*' {
            next[0] = dp[0];
            for j in 1..=value.len() {
                next[j] = dp[j] || (star_may_match(value[j - 1]) && next[j - 1]);
            }
        } else {
            next[0] = false;
            for j in 1..=value.len() {
                next[j] = dp[j - 1] && value[j - 1] == pc;
            }
        }
        std::mem::swap(&mut dp, &mut next);
    }
    dp[value.len()]
}

/// Checks that a role's `allowed_domains` entry can match something: a DNS name (as a requested
/// name would have to be), optionally after one leading `*.` label. Entries such as `a..com`,
/// `*`, `*x.y`, `a.*.y`, `a_b.com` or an IP address can never match a requested name.
///
/// # Errors
/// `invalid_dns_name` naming what is wrong with the entry.
pub fn check_domain_pattern(pattern: &str) -> Result<()> {
    let base = pattern.strip_prefix("*.").unwrap_or(pattern);
    if base.contains('*') {
        return Err(Error::invalid(
            "invalid_dns_name",
            format!("{pattern:?} has a '*' that is not a whole leftmost label"),
        ));
    }
    parse_dns_name(base).map(|_| ())
}

/// The DNS name `raw` normalized (lowercase, no trailing dot) when it is one by the rules of
/// this module (LDH labels, valid A-labels, not an IP address), else why not.
///
/// # Errors
/// `invalid_dns_name`.
pub fn normalize_dns_name(raw: &str) -> Result<String> {
    parse_dns_name(raw)
}

/// Checks the syntax of a requested DNS name and returns it lowercased without its trailing dot.
fn parse_dns_name(raw: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid("invalid_dns_name", format!("{raw:?} {why}"));
    let trimmed = strip_dot(raw);
    if trimmed.parse::<IpAddr>().is_ok() {
        return Err(bad("is an IP address, not a DNS name: send it in ip_sans"));
    }
    if !trimmed.is_ascii() {
        return Err(bad(
            "is not ASCII: send internationalized labels as IDNA A-labels (punycode, \"xn--…\")",
        ));
    }
    if trimmed.is_empty() {
        return Err(bad("is empty"));
    }
    if trimmed.len() > MAX_DNS_LEN {
        return Err(bad(&format!(
            "is {} octets long, more than {MAX_DNS_LEN}",
            trimmed.len()
        )));
    }
    let name = trimmed.to_ascii_lowercase();
    let (wildcard, rest) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name.as_str()),
    };
    if rest.contains('*') {
        return Err(bad(
            "has a '*' that is not a whole leftmost label (RFC 6125 §6.4.3)",
        ));
    }
    for label in rest.split('.') {
        check_label(label).map_err(|why| bad(&why))?;
    }
    let labels = rest.split('.').count();
    if wildcard && labels < 2 {
        return Err(bad(
            "is a wildcard directly under a single label, which is too broad",
        ));
    }
    if rest.rsplit('.').next().is_some_and(is_numeric_label) {
        return Err(bad(
            "ends in a numeric label (RFC 1123 §2.1), which reads as an IP address",
        ));
    }
    check_a_labels(rest).map_err(|why| bad(&why))?;
    Ok(name)
}

/// Every `xn--` label of `name` (lowercase LDH) must be a valid A-label: punycode that decodes
/// to a label UTS #46 allows (strict: STD3 rules, DNS lengths) and encodes back to itself, as
/// Vault's and browsers' IDNA processing require. `xn--zz` (not punycode), `xn--a` (U+0080) are
/// refused.
fn check_a_labels(name: &str) -> std::result::Result<(), String> {
    if !name.split('.').any(|l| l.starts_with("xn--")) {
        return Ok(());
    }
    match idna::domain_to_ascii_strict(name) {
        Ok(ascii) if ascii == name => Ok(()),
        Ok(_) => Err("has an A-label that is not in its canonical form (IDNA)".into()),
        Err(_) => Err("has an xn-- label that is not a valid IDNA A-label".into()),
    }
}

/// One LDH label (RFC 1035 §2.3.1, RFC 1123 §2.1); A-labels are LDH too.
fn check_label(label: &str) -> std::result::Result<(), String> {
    if label.is_empty() {
        return Err("has an empty label".into());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "has label {label:?} of {} octets, more than {MAX_LABEL_LEN}",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "has {c:?} in label {label:?}; only letters, digits and '-' are allowed"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("has label {label:?} starting or ending with '-'"));
    }
    Ok(())
}

/// Whether a free-text common name would read as an IP address to some client: an address in
/// brackets or with a zone (`[::1]`, `fe80::1%eth0`), or the numeric forms `inet_aton` takes
/// (`2130706433`, `0x7f000001`, `127.1`).
fn reads_as_ip(cn: &str) -> bool {
    let unbracketed = cn
        .strip_prefix('[')
        .and_then(|c| c.strip_suffix(']'))
        .unwrap_or(cn);
    let unzoned = unbracketed.split('%').next().unwrap_or(unbracketed);
    unzoned.parse::<IpAddr>().is_ok()
        || (!cn.is_empty() && cn.split('.').count() <= 4 && cn.split('.').all(is_numeric_label))
}

/// All digits, or `0x` and hex digits: what URL parsers read as part of an IPv4 address.
fn is_numeric_label(label: &str) -> bool {
    let all = |s: &str, f: fn(&u8) -> bool| s.as_bytes().iter().all(f);
    all(label, u8::is_ascii_digit)
        || label
            .strip_prefix("0x")
            .is_some_and(|hex| all(hex, u8::is_ascii_hexdigit))
}

/// `scheme://authority…` in ASCII without whitespace or controls (RFC 3986 §3; RFC 5280
/// §4.2.1.6 wants a scheme and a scheme-specific part, and IRIs mapped to URIs first).
fn check_uri_syntax(raw: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("invalid_uri", format!("{raw:?} {why}"));
    if !raw.is_ascii() {
        return Err(bad(
            "is not ASCII: percent-encode it as a URI (RFC 3987 §3.1)",
        ));
    }
    if raw
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(bad("contains whitespace or control characters"));
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(bad("is not of the form scheme://authority/path"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(bad(&format!("has an invalid scheme {scheme:?}")));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("has an empty authority"));
    }
    if raw.contains('\\') {
        return Err(bad(
            "contains a backslash, which URL parsers read as '/' (RFC 3986 has none)",
        ));
    }
    if authority.contains('@') {
        return Err(bad(
            "carries user information (user@host): a certificate names the host alone",
        ));
    }
    let host = authority.strip_prefix('[').map_or_else(
        || authority.split(':').next().unwrap_or_default(),
        |v6| v6.split(']').next().unwrap_or_default(),
    );
    if !authority.starts_with('[') && (host.is_empty() || host.split('.').any(str::is_empty)) {
        return Err(bad("has an empty label in its host"));
    }
    let path = rest[authority.len()..]
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad(
            "has a '.' or '..' path segment (RFC 3986 §6.2.2.3: not normalized; it would name \
             another path)",
        ));
    }
    if scheme.eq_ignore_ascii_case("spiffe") {
        check_spiffe_id(scheme, authority, &rest[authority.len()..]).map_err(bad)?;
    }
    Ok(())
}

/// The SPIFFE ID rules (SPIFFE-ID §2) beyond a URI's: a lowercase `spiffe` scheme; a trust domain
/// of lowercase letters, digits, `.`, `-` and `_`, without a port; a path of non-empty segments of
/// letters, digits, `.`, `-` and `_` and no trailing `/`; no query or fragment. An empty segment
/// (`ns//sa/x`) would be read as another identity by software that collapses `//`.
fn check_spiffe_id(
    scheme: &str,
    trust_domain: &str,
    path: &str,
) -> std::result::Result<(), &'static str> {
    if scheme != "spiffe" {
        return Err("is a SPIFFE ID whose scheme is not the lowercase \"spiffe\"");
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(
            "is a SPIFFE ID whose trust domain has other than lowercase letters, digits, '.', '-' \
             and '_' (no port, no uppercase)",
        );
    }
    if path.contains(['?', '#']) {
        return Err("is a SPIFFE ID with a query or fragment");
    }
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err("is a SPIFFE ID whose path ends with '/'");
    }
    let segments = path.strip_prefix('/').unwrap_or(path).split('/');
    for seg in segments {
        if seg.is_empty() {
            return Err("is a SPIFFE ID with an empty path segment ('//')");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(
                "is a SPIFFE ID with a path segment of other than letters, digits, '.', '-' and '_'",
            );
        }
    }
    Ok(())
}

/// Whether `ip` lies in `range`; IPv4 and IPv6 never contain each other.
fn range_contains(range: &IpRange, ip: IpAddr) -> bool {
    match (range.addr, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(
            u128::from(u32::from(net)),
            u128::from(u32::from(ip)),
            32,
            range.prefix,
        ),
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            prefix_match(u128::from(net), u128::from(ip), 128, range.prefix)
        }
        _ => false,
    }
}

/// Whether the top `prefix` of `bits` bits agree; a prefix longer than the family matches nothing.
fn prefix_match(net: u128, ip: u128, bits: u32, prefix: u8) -> bool {
    let Some(host_bits) = bits.checked_sub(u32::from(prefix)) else {
        return false;
    };
    let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    (net & mask) == (ip & mask)
}

/// Names counted against [`MAX_NAMES`]: distinct names, as the certificate would carry them
/// (DNS names and the CN compared without case and trailing dot), so a repeated name counts once
/// wherever it is repeated. A request listing far more entries than the limit is counted no
/// further (the body limit bounds it anyway).
fn name_count(req: &NameRequest<'_>) -> usize {
    let raw = req.dns_names.len()
        + req.ip_sans.len()
        + req.uri_sans.len()
        + usize::from(req.common_name.is_some());
    if raw > MAX_NAMES * 16 {
        return raw;
    }
    let mut dns: std::collections::HashSet<String> = req
        .dns_names
        .iter()
        .map(|d| strip_dot(d).to_ascii_lowercase())
        .collect();
    if let Some(cn) = req.common_name.filter(|cn| !cn.trim().is_empty()) {
        dns.insert(strip_dot(cn).to_ascii_lowercase());
    }
    let mut ips: std::collections::HashSet<&str> = req.ip_sans.iter().map(String::as_str).collect();
    if let Some(cn) = req.common_name.filter(|cn| cn.parse::<IpAddr>().is_ok()) {
        dns.remove(&cn.to_ascii_lowercase());
        ips.insert(cn);
    }
    let uris: std::collections::HashSet<&str> = req.uri_sans.iter().map(String::as_str).collect();
    dns.len() + ips.len() + uris.len()
}

fn strip_dot(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests;
