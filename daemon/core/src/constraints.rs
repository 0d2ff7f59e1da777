//! Name constraints (RFC 5280 §4.2.1.10) as they bind what a CA issues.
//!
//! A CA whose certificate, or an ancestor's, carries NameConstraints must not sign a leaf with a
//! name outside them: every relying party (openssl, browsers, the daemon's own validator) would
//! reject that leaf. [`NameRules`] collects the constraints of a CA's certificate and of its
//! chain up to the root, and [`NameRules::check`] tells, before anything is reserved or signed,
//! which name breaks which constraint. The same check runs again on the finished TBS as part of
//! the lint before signing.
//!
//! Name forms, each matched the way OpenSSL matches it (the stricter reading where OpenSSL and
//! RFC 5280 differ, so that no relying party rejects what the CA issues):
//! - dNSName: a constraint `example.com` covers the name and every name below it,
//!   `.example.com` only the names below; a wildcard `*.a.example` is one label under
//!   `a.example`, and an excluded subtree it could cover counts against it. When the leaf has no
//!   DNS name in its SAN, a common name that reads as a host name (`10.1.2.3` included) is checked
//!   as one, as OpenSSL does (`NAME_CONSTRAINTS_check_CN`).
//! - iPAddress: address and mask.
//! - uniformResourceIdentifier: the host as OpenSSL reads it — after `scheme://`, up to the
//!   first `:`, else the first `/`, else the end — exact, or below a constraint with a leading dot.
//! - rfc822Name: the subject's `emailAddress` attributes (ScaiVault issues no e-mail SANs): a
//!   constraint `user@host` is that mailbox, `host` every mailbox at host, `.domain` every
//!   mailbox below domain.
//! - directoryName: the subject, RDN by RDN under RFC 5280 §7.1 (case and spacing aside, see
//!   [`crate::name::canonical`]); an empty subject is not constrained.
//!
//! Other forms constrain only names of their own form, which a leaf of this CA never carries.

use crate::name::EMAIL_ADDRESS;
use std::fmt;
use std::net::IpAddr;
use x509_cert::ext::pkix::constraints::name::{GeneralSubtrees, NameConstraints};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::Certificate;

/// One name of a leaf, as the constraints see it.
#[derive(Debug, Clone, Copy)]
pub enum LeafName<'a> {
    /// A dNSName SAN (lowercase or not; a leading `*.` label is a wildcard).
    Dns(&'a str),
    /// A subject common name checked as a DNS name (no DNS SAN, and it reads as a host name).
    CommonName(&'a str),
    /// An iPAddress SAN.
    Ip(IpAddr),
    /// A uniformResourceIdentifier SAN.
    Uri(&'a str),
    /// An `emailAddress` of the subject.
    Email(&'a str),
    /// The subject.
    Subject(&'a Name),
}

impl fmt::Display for LeafName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafName::Dns(d) => write!(f, "DNS name {d:?}"),
            LeafName::CommonName(c) => write!(
                f,
                "common name {c:?} (which OpenSSL checks as a DNS name when the SAN has none)"
            ),
            LeafName::Ip(ip) => write!(f, "IP address {ip}"),
            LeafName::Uri(u) => write!(f, "URI {u:?}"),
            LeafName::Email(e) => write!(f, "subject emailAddress {e:?}"),
            LeafName::Subject(n) => write!(f, "subject \"{n}\""),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    Dns(String),
    Ip {
        addr: Vec<u8>,
        mask: Vec<u8>,
    },
    Uri(String),
    Email(String),
    Dir(Vec<Vec<(const_oid::ObjectIdentifier, Vec<u8>)>>),
    /// A form no leaf of ours carries.
    Other,
}

impl fmt::Display for Base {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base::Dns(d) if d.is_empty() => write!(f, "DNS (every name)"),
            Base::Dns(d) => write!(f, "DNS {d}"),
            Base::Ip { addr, mask } => {
                let prefix: u32 = mask.iter().map(|b| b.count_ones()).sum();
                let shown = match addr.len() {
                    4 => <[u8; 4]>::try_from(addr.as_slice()).map(IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(addr.as_slice()).map(IpAddr::from).ok(),
                    _ => None,
                };
                match shown {
                    Some(ip) => write!(f, "IP {ip}/{prefix}"),
                    None => write!(f, "IP (malformed)"),
                }
            }
            Base::Uri(u) => write!(f, "URI host {u}"),
            Base::Email(e) => write!(f, "e-mail {e}"),
            Base::Dir(_) => write!(f, "directory name"),
            Base::Other => write!(f, "another name form"),
        }
    }
}

/// The NameConstraints of one CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Set {
    /// Whose they are (the CA's subject), for messages.
    ca: String,
    permitted: Vec<Base>,
    excluded: Vec<Base>,
}

/// The name constraints that bind a CA's leaves: its own and its ancestors'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRules {
    sets: Vec<Set>,
}

impl NameRules {
    /// The constraints of `certs` (a CA's certificate and its chain, in any order; certificates
    /// without NameConstraints add nothing). A NameConstraints extension that does not decode
    /// permits nothing: such a CA cannot issue.
    pub fn from_certs<'a>(certs: impl IntoIterator<Item = &'a Certificate>) -> Self {
        use const_oid::AssociatedOid;
        let mut sets = Vec::new();
        for cert in certs {
            let tbs = &cert.tbs_certificate;
            let Some(ext) = tbs
                .extensions
                .as_deref()
                .and_then(|e| e.iter().find(|e| e.extn_id == NameConstraints::OID))
            else {
                continue;
            };
            let set = Set::from_der(tbs.subject.to_string(), ext.extn_value.as_bytes());
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        NameRules { sets }
    }

    /// The constraints of CAs given as their name (for messages) and decoded extension: the
    /// validator's certificates, decoded by their own profile. Decoding failures are the caller's
    /// to report.
    pub fn from_decoded<'a>(cas: impl IntoIterator<Item = (String, &'a NameConstraints)>) -> Self {
        let mut sets = Vec::new();
        for (ca, nc) in cas {
            let set = Set::from_decoded(ca, nc);
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        NameRules { sets }
    }

    /// Checks what of `subject` webpki does not: its `emailAddress` attributes against the
    /// rfc822Name constraints (RFC 5280 §4.2.1.10; whether or not the certificate has a SAN) and, when the certificate has no DNS name in its SAN
    /// (`has_dns_san`), its common names that read as host names against the DNS constraints —
    /// OpenSSL does both, and so does issuance ([`NameRules::check_leaf`]).
    ///
    /// # Errors
    /// As [`NameRules::check`].
    pub fn check_subject(&self, subject: &Name, has_dns_san: bool) -> Result<(), String> {
        if self.sets.is_empty() {
            return Ok(());
        }
        let emails = subject_strings(subject, EMAIL_ADDRESS);
        let cns: Vec<String> = if has_dns_san {
            Vec::new()
        } else {
            subject_strings(subject, const_oid::db::rfc4519::CN)
                .into_iter()
                .filter(|cn| reads_as_host_name(cn))
                .collect()
        };
        self.check(
            emails
                .iter()
                .map(|e| LeafName::Email(e))
                .chain(cns.iter().map(|c| LeafName::CommonName(c))),
        )
    }

    /// Whether there are no constraints at all.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Whether any CA of the chain constrains DNS names (a common name that reads as a host name
    /// is then checked as one when the SAN has no DNS name).
    pub fn constrains_dns(&self) -> bool {
        self.sets
            .iter()
            .flat_map(|s| s.permitted.iter().chain(&s.excluded))
            .any(|b| matches!(b, Base::Dns(_)))
    }

    /// Checks a leaf's names: its SAN's DNS names, IP addresses and URIs, and its subject (with
    /// its `emailAddress` attributes, and its common names when the SAN has no DNS name).
    ///
    /// # Errors
    /// As [`NameRules::check`].
    pub fn check_leaf(
        &self,
        subject: &Name,
        dns: &[&str],
        ips: &[IpAddr],
        uris: &[&str],
    ) -> Result<(), String> {
        if self.sets.is_empty() {
            return Ok(());
        }
        let emails = subject_strings(subject, EMAIL_ADDRESS);
        let cns: Vec<String> = if dns.is_empty() {
            subject_strings(subject, const_oid::db::rfc4519::CN)
                .into_iter()
                .filter(|cn| reads_as_host_name(cn))
                .collect()
        } else {
            Vec::new()
        };
        let names = dns
            .iter()
            .map(|d| LeafName::Dns(d))
            .chain(cns.iter().map(|c| LeafName::CommonName(c)))
            .chain(ips.iter().map(|ip| LeafName::Ip(*ip)))
            .chain(uris.iter().map(|u| LeafName::Uri(u)))
            .chain(emails.iter().map(|e| LeafName::Email(e)))
            .chain(std::iter::once(LeafName::Subject(subject)));
        self.check(names)
    }

    /// Checks every name: `Err` names the first one outside a constraint, the constraint and
    /// the CA that set it.
    ///
    /// # Errors
    /// A sentence for the caller's error (`name_constraint_violation` before reservation,
    /// `profile_violation` in the lint).
    pub fn check<'a>(&self, names: impl IntoIterator<Item = LeafName<'a>>) -> Result<(), String> {
        if self.sets.is_empty() {
            return Ok(());
        }
        for name in names {
            for set in &self.sets {
                set.check(name)?;
            }
        }
        Ok(())
    }
}

impl Set {
    fn from_decoded(ca: String, nc: &NameConstraints) -> Self {
        Set {
            ca,
            permitted: bases(nc.permitted_subtrees.as_ref()),
            excluded: bases(nc.excluded_subtrees.as_ref()),
        }
    }

    /// The constraints of CA `ca` from the extension's value.
    fn from_der(ca: String, der: &[u8]) -> Self {
        use der::Decode;
        match NameConstraints::from_der(der) {
            Ok(nc) => Set::from_decoded(ca, &nc),
            Err(_) => Set {
                ca,
                // Every form permitted nowhere.
                permitted: vec![
                    Base::Dns("\u{0}".into()),
                    Base::Ip {
                        addr: Vec::new(),
                        mask: Vec::new(),
                    },
                    Base::Uri("\u{0}".into()),
                    Base::Dir(vec![vec![(NOTHING, Vec::new())]]),
                ],
                excluded: Vec::new(),
            },
        }
    }

    fn check(&self, name: LeafName<'_>) -> Result<(), String> {
        if let LeafName::Subject(n) = name {
            if n.0.is_empty() {
                return Ok(());
            }
        }
        let of_form: Vec<&Base> = self
            .permitted
            .iter()
            .filter(|b| same_form(b, name))
            .collect();
        if !of_form.is_empty() && !of_form.iter().any(|b| permits(b, name)) {
            let list: Vec<String> = of_form.iter().map(ToString::to_string).collect();
            return Err(format!(
                "{name} is outside the name constraints of CA \"{}\" (permitted: {})",
                self.ca,
                list.join(", ")
            ));
        }
        if let Some(b) = self
            .excluded
            .iter()
            .find(|b| same_form(b, name) && excludes(b, name))
        {
            return Err(format!(
                "{name} falls under an excluded subtree of CA \"{}\" ({b})",
                self.ca
            ));
        }
        Ok(())
    }
}

/// An attribute type no name carries (a broken NameConstraints' directory subtree).
const NOTHING: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::new_unwrap("0.0.0");

/// The string values of every `oid` attribute of `name`.
fn subject_strings(name: &Name, oid: const_oid::ObjectIdentifier) -> Vec<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == oid)
        .filter_map(|atv| crate::name::attribute_text(&atv.value))
        .collect()
}

/// OpenSSL's test of a common name that names a host (`cn2dnsid`): letters, digits and `_`,
/// with `-` and `.` inside, a `.` next to neither `.` nor `-`, and at least one such dot.
fn reads_as_host_name(cn: &str) -> bool {
    let b = cn.as_bytes();
    let n = b.len();
    let mut dotted = false;
    for i in 0..n {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            continue;
        }
        if i > 0 && i + 1 < n {
            if c == b'-' {
                continue;
            }
            if c == b'.' && b[i + 1] != b'.' && b[i - 1] != b'-' && b[i + 1] != b'-' {
                dotted = true;
                continue;
            }
        }
        return false;
    }
    dotted
}

fn bases(subtrees: Option<&GeneralSubtrees>) -> Vec<Base> {
    subtrees
        .map(|s| {
            s.iter()
                .map(|t| match &t.base {
                    GeneralName::DnsName(d) => Base::Dns(dns_key(d.as_str())),
                    GeneralName::IpAddress(o) => {
                        let b = o.as_bytes();
                        let half = b.len() / 2;
                        if matches!(b.len(), 8 | 32) {
                            Base::Ip {
                                addr: b[..half].to_vec(),
                                mask: b[half..].to_vec(),
                            }
                        } else {
                            // Malformed: matches no address, so a permitted one permits none.
                            Base::Ip {
                                addr: Vec::new(),
                                mask: Vec::new(),
                            }
                        }
                    }
                    GeneralName::UniformResourceIdentifier(u) => {
                        Base::Uri(u.as_str().to_ascii_lowercase())
                    }
                    GeneralName::Rfc822Name(m) => Base::Email(m.as_str().to_owned()),
                    GeneralName::DirectoryName(n) => Base::Dir(crate::name::canonical(n)),
                    _ => Base::Other,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn dns_key(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

fn same_form(b: &Base, name: LeafName<'_>) -> bool {
    matches!(
        (b, name),
        (Base::Dns(_), LeafName::Dns(_) | LeafName::CommonName(_))
            | (Base::Ip { .. }, LeafName::Ip(_))
            | (Base::Uri(_), LeafName::Uri(_))
            | (Base::Email(_), LeafName::Email(_))
            | (Base::Dir(_), LeafName::Subject(_))
    )
}

/// Whether the subtree `b` holds every name `name` stands for.
fn permits(b: &Base, name: LeafName<'_>) -> bool {
    match (b, name) {
        (Base::Dns(c), LeafName::Dns(d) | LeafName::CommonName(d)) => dns_within(c, &dns_key(d)),
        (Base::Email(c), LeafName::Email(e)) => email_within(c, e),
        (Base::Ip { addr, mask }, LeafName::Ip(ip)) => ip_within(addr, mask, ip),
        (Base::Uri(c), LeafName::Uri(u)) => uri_host(u).is_some_and(|h| host_within(c, &h)),
        (Base::Dir(c), LeafName::Subject(n)) => {
            // RFC 5280 §7.1 comparison, as OpenSSL does it: case and spacing do not matter.
            let subject = crate::name::canonical(n);
            c.len() <= subject.len() && c.iter().zip(&subject).all(|(a, b)| a == b)
        }
        _ => false,
    }
}

/// Whether the subtree `b` holds any name `name` stands for (a wildcard stands for many).
fn excludes(b: &Base, name: LeafName<'_>) -> bool {
    if permits(b, name) {
        return true;
    }
    match (b, name) {
        // `*.a.example` stands for every `x.a.example`: an excluded subtree `x.a.example` holds
        // one of them. (`.x.a.example` holds only names below `x.a.example`, none of which the
        // wildcard stands for.)
        (Base::Dns(c), LeafName::Dns(d)) => {
            let d = dns_key(d);
            let Some(parent) = d.strip_prefix("*.") else {
                return false;
            };
            !c.starts_with('.')
                && c.strip_suffix(parent)
                    .and_then(|l| l.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        }
        // A URI without a host is outside every subtree: excluded ones do not hold it either.
        _ => false,
    }
}

/// RFC 5280: any name formed by adding labels to the left of the constraint; with a leading
/// dot, only names below it; the empty constraint holds every name.
fn dns_within(c: &str, name: &str) -> bool {
    if c.is_empty() {
        return true;
    }
    if c.starts_with('.') {
        return name.len() > c.len() && name.ends_with(c);
    }
    name == c
        || (name.len() > c.len()
            && name.ends_with(c)
            && name[..name.len() - c.len()].ends_with('.'))
}

fn ip_within(addr: &[u8], mask: &[u8], ip: IpAddr) -> bool {
    let octets = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    octets.len() == addr.len()
        && addr.len() == mask.len()
        && octets
            .iter()
            .zip(addr.iter().zip(mask))
            .all(|(o, (a, m))| o & m == a & m)
}

/// OpenSSL's `nc_email`: `.domain` matches the end of the address below domain; `local@host` the
/// mailbox (local part exact, host in any case); `host` every mailbox at host.
fn email_within(c: &str, e: &str) -> bool {
    let Some((local, host)) = e.rsplit_once('@') else {
        return false;
    };
    if c.starts_with('.') {
        return e.len() > c.len()
            && e.get(e.len() - c.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(c));
    }
    match c.rsplit_once('@') {
        Some((c_local, c_host)) => {
            (c_local.is_empty() || c_local == local) && c_host.eq_ignore_ascii_case(host)
        }
        None => c.eq_ignore_ascii_case(host),
    }
}

/// RFC 5280 §4.2.1.10 for URIs: the host must be the constraint, or below it when the
/// constraint starts with a dot.
fn host_within(c: &str, host: &str) -> bool {
    if c.starts_with('.') {
        host.len() > c.len() && host.ends_with(c)
    } else {
        host == c
    }
}

/// The host of a URI as OpenSSL's `nc_uri` reads it — after `scheme://`, up to the first `:`,
/// else the first `/`, else the end — lowercased. A URI with a user part, a query or fragment
/// right after the host, or a trailing dot gets a "host" no constraint matches, as in OpenSSL;
/// `None` without `://`, for an empty host, or for an IP address (URI constraints name hosts).
fn uri_host(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let end = rest
        .find(':')
        .or_else(|| rest.find('/'))
        .unwrap_or(rest.len());
    let host = &rest[..end];
    if host.is_empty() || host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
