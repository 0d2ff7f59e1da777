use super::*;
use crate::ErrorKind;

/// A role allowing exactly these domain entries, nothing else switched on.
fn domains(entries: &[&str]) -> RolePolicy {
    RolePolicy {
        allowed_domains: entries.iter().map(|s| (*s).to_owned()).collect(),
        ..RolePolicy::default()
    }
}

fn ip_role(ranges: &[&str]) -> RolePolicy {
    RolePolicy {
        allow_ip_sans: true,
        allowed_ip_ranges: ranges.iter().map(|r| IpRange::parse(r).unwrap()).collect(),
        ..RolePolicy::default()
    }
}

fn uri_role(globs: &[&str]) -> RolePolicy {
    RolePolicy {
        allowed_uri_sans: globs.iter().map(|s| (*s).to_owned()).collect(),
        ..RolePolicy::default()
    }
}

fn any_name() -> RolePolicy {
    RolePolicy {
        allow_any_name: true,
        ..RolePolicy::default()
    }
}

fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

/// `n` distinct names below `example.com`.
fn many(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i}.example.com")).collect()
}

enum Want {
    /// Approved; each `Some` part is compared, `None` parts are not.
    Ok {
        cn: Option<Option<String>>,
        dns: Option<Vec<String>>,
        ips: Option<Vec<IpAddr>>,
        uris: Option<Vec<String>>,
    },
    /// Refused with this code and a detail containing this text.
    Err(&'static str, String),
}

struct Case {
    name: &'static str,
    policy: RolePolicy,
    cn: Option<String>,
    dns: Vec<String>,
    ips: Vec<String>,
    uris: Vec<String>,
    want: Want,
}

fn case(name: &'static str, policy: RolePolicy) -> Case {
    Case {
        name,
        policy,
        cn: None,
        dns: Vec::new(),
        ips: Vec::new(),
        uris: Vec::new(),
        want: Want::Ok {
            cn: None,
            dns: None,
            ips: None,
            uris: None,
        },
    }
}

impl Case {
    fn cn(mut self, cn: &str) -> Self {
        self.cn = Some(cn.to_owned());
        self
    }
    fn dns<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.dns = strings(names);
        self
    }
    fn ips(mut self, ips: &[&str]) -> Self {
        self.ips = strings(ips.iter().copied());
        self
    }
    fn uris(mut self, uris: &[&str]) -> Self {
        self.uris = strings(uris.iter().copied());
        self
    }
    fn want_ok(mut self, f: impl FnOnce(&mut Want)) -> Self {
        if matches!(self.want, Want::Err(..)) {
            self.want = Want::Ok {
                cn: None,
                dns: None,
                ips: None,
                uris: None,
            };
        }
        f(&mut self.want);
        self
    }
    fn ok_dns<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> Self {
        let names = strings(names);
        self.want_ok(|w| {
            if let Want::Ok { dns, .. } = w {
                *dns = Some(names);
            }
        })
    }
    fn ok_cn(self, expected: Option<&str>) -> Self {
        let expected = expected.map(str::to_owned);
        self.want_ok(|w| {
            if let Want::Ok { cn, .. } = w {
                *cn = Some(expected);
            }
        })
    }
    fn ok_ips(self, expected: &[&str]) -> Self {
        let expected: Vec<IpAddr> = expected.iter().map(|s| s.parse().unwrap()).collect();
        self.want_ok(|w| {
            if let Want::Ok { ips, .. } = w {
                *ips = Some(expected);
            }
        })
    }
    fn ok_uris(self, expected: &[&str]) -> Self {
        let expected = strings(expected.iter().copied());
        self.want_ok(|w| {
            if let Want::Ok { uris, .. } = w {
                *uris = Some(expected);
            }
        })
    }
    fn err(mut self, code: &'static str, needle: impl Into<String>) -> Self {
        self.want = Want::Err(code, needle.into());
        self
    }
}

/// Runs every case and reports all failures at once.
fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let req = NameRequest {
            common_name: c.cn.as_deref(),
            dns_names: &c.dns,
            ip_sans: &c.ips,
            uri_sans: &c.uris,
        };
        let got = c.policy.check(&req);
        match (&c.want, got) {
            (Want::Ok { cn, dns, ips, uris }, Ok(a)) => {
                let mismatch = cn.as_ref().is_some_and(|cn| *cn != a.common_name)
                    || dns.as_ref().is_some_and(|d| *d != a.dns_names)
                    || ips.as_ref().is_some_and(|i| *i != a.ips)
                    || uris.as_ref().is_some_and(|u| *u != a.uris);
                if mismatch {
                    failures.push(format!("{}: unexpected approval {a:?}", c.name));
                }
            }
            (Want::Ok { .. }, Err(e)) => {
                failures.push(format!("{}: refused {}: {e}", c.name, e.code()));
            }
            (Want::Err(code, _), Ok(a)) => {
                failures.push(format!("{}: wanted {code}, approved {a:?}", c.name));
            }
            (Want::Err(code, needle), Err(e)) => {
                let detail = e.to_string();
                if e.code() != *code || !detail.contains(needle.as_str()) {
                    failures.push(format!(
                        "{}: wanted {code} containing {needle:?}, got {}: {detail}",
                        c.name,
                        e.code()
                    ));
                }
                if e.kind() != ErrorKind::Invalid {
                    failures.push(format!("{}: error kind {:?}", c.name, e.kind()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn matches_domain_table() {
    let table: &[(&str, &str, bool, bool)] = &[
        // (entry, name, allow_subdomains, matches)
        ("*.x.y", "a.x.y", false, true),
        ("*.x.y", "x.y", false, false),
        ("*.x.y", "a.b.x.y", false, false),
        ("*.x.y", "a.x.y", true, true),
        ("*.x.y", "a.b.x.y", true, true),
        ("*.x.y", "x.y", true, false),
        ("x.y", "x.y", false, true),
        ("x.y", "a.x.y", false, false),
        ("x.y", "x.y", true, true),
        ("x.y", "a.x.y", true, true),
        ("x.y", "a.b.x.y", true, true),
        ("x.y", "ax.y", true, false),
        ("x.y", "a.x.y.z", true, false),
        ("X.Y", "a.X.y", true, true),
        ("x.y.", "a.x.y", true, true),
        ("x.y", "x.y.", false, true),
        ("*.x.y", "*.x.y", false, true),
        ("*.x.y", "*.a.x.y", false, false),
        ("x.y", "*.x.y", false, false),
        ("x.y", "*.x.y", true, true),
        ("", "x.y", true, false),
        ("*", "x.y", true, false),
        ("a*.x.y", "ab.x.y", true, false),
        ("x.y", ".x.y", true, false),
        ("x.y", "a..x.y", true, false),
    ];
    let bad: Vec<String> = table
        .iter()
        .filter(|(p, n, s, want)| matches_domain(p, n, *s) != *want)
        .map(|(p, n, s, want)| format!("matches_domain({p:?}, {n:?}, {s}) != {want}"))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn glob_match_table() {
    let spiffe = "spiffe://cluster.local/ns/*/sa/*";
    let table: &[(&str, &str, bool)] = &[
        (spiffe, "spiffe://cluster.local/ns/prod/sa/billing", true),
        (spiffe, "spiffe://cluster.local/ns/a/b/sa/x", false),
        (spiffe, "spiffe://cluster.local/ns/prod/sa/billing/x", false),
        (spiffe, "spiffe://cluster.local/ns/prod/sa", false),
        ("spiffe://a/b", "spiffe://a/b", true),
        ("spiffe://a/b", "spiffe://a/c", false),
        ("spiffe://*.local/x", "spiffe://cluster.local/x", true),
        ("spiffe://a/*-svc", "spiffe://a/pay-svc", true),
        ("spiffe://a/*-svc", "spiffe://a/pay-svc2", false),
        ("spiffe://a/*a*b", "spiffe://a/xaab", true),
        ("spiffe://a/**", "spiffe://a/b", true),
        ("spiffe://a/*", "spiffe://a/", true),
        ("SPIFFE://a/b", "spiffe://a/b", false),
        ("", "", true),
        // `*` stays in its part of the URI: it never takes a query, fragment, user information,
        // backslash or percent-encoded character, so the host cannot be moved out of the glob.
        ("https://*.example.com/*", "https://a.example.com/x", true),
        (
            "https://*.example.com/*",
            "https://evil.com#.example.com/a",
            false,
        ),
        (
            "https://*.example.com/*",
            "https://evil.com?.example.com/a",
            false,
        ),
        (
            "https://*.example.com/*",
            "https://evil.com\\.example.com/a",
            false,
        ),
        ("spiffe://*.local/x", "spiffe://evil.com@a.local/x", false),
        (spiffe, "spiffe://cluster.local/ns/x?/sa/y", false),
        (spiffe, "spiffe://cluster.local/ns/x#/sa/y", false),
        (spiffe, "spiffe://cluster.local/ns/a%2Fb/sa/x", false),
        // Literal delimiters in the pattern match themselves.
        ("https://a/x?*", "https://a/x?q=1", true),
    ];
    let bad: Vec<String> = table
        .iter()
        .filter(|(p, v, want)| glob_match(p, v) != *want)
        .map(|(p, v, want)| format!("glob_match({p:?}, {v:?}) != {want}"))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn domain_entries_and_wildcard_depth() {
    let star = || domains(&["*.example.com"]);
    let bare = || domains(&["example.com"]);
    let sub = |p: RolePolicy| RolePolicy {
        allow_subdomains: true,
        ..p
    };
    run(vec![
        case("star entry, one label", star())
            .dns(["a.example.com"])
            .ok_dns(["a.example.com"]),
        case("star entry, apex", star())
            .dns(["example.com"])
            .err("domain_not_allowed", "\"example.com\""),
        case("star entry, two labels", star())
            .dns(["a.b.example.com"])
            .err("domain_not_allowed", "a.b.example.com"),
        case("star entry + subdomains, two labels", sub(star()))
            .dns(["a.b.example.com"])
            .ok_dns(["a.b.example.com"]),
        case("bare entry, itself", bare())
            .dns(["example.com"])
            .ok_dns(["example.com"]),
        case("bare entry, subdomain refused", bare())
            .dns(["a.example.com"])
            .err("domain_not_allowed", "without subdomains"),
        case("bare entry + subdomains, any depth", sub(bare()))
            .dns(["a.b.c.example.com", "example.com"])
            .ok_dns(["a.b.c.example.com", "example.com"]),
        case("label boundary", sub(bare()))
            .dns(["notexample.com"])
            .err("domain_not_allowed", "notexample.com"),
        case("request upper case", sub(bare()))
            .dns(["WWW.Example.COM"])
            .ok_dns(["www.example.com"]),
        case("entry upper case", domains(&["EXAMPLE.com"]))
            .dns(["example.com"])
            .ok_dns(["example.com"]),
        case("trailing dot removed", sub(bare()))
            .dns(["www.example.com."])
            .ok_dns(["www.example.com"]),
        case("no entries, nothing allowed", RolePolicy::default())
            .dns(["example.com"])
            .err("domain_not_allowed", "example.com"),
    ]);
}

#[test]
fn dns_syntax() {
    let p = || RolePolicy {
        allow_subdomains: true,
        ..domains(&["example", "example.com", "123"])
    };
    let label63 = "a".repeat(63);
    let label64 = "a".repeat(64);
    // 3 labels of 63, 1 of 53 and "example" (7), with 4 dots: 253 octets.
    let long_ok = format!("{l}.{l}.{l}.{m}.example", l = label63, m = "b".repeat(53));
    let long_bad = format!("c{long_ok}");
    run(vec![
        case("two trailing dots", p())
            .dns(["www.example.com.."])
            .err("invalid_dns_name", "empty label"),
        case("lone dot", p())
            .dns(["."])
            .err("invalid_dns_name", "is empty"),
        case("empty", p())
            .dns([""])
            .err("invalid_dns_name", "is empty"),
        case("empty label", p())
            .dns(["a..example.com"])
            .err("invalid_dns_name", "empty label"),
        case("leading dot", p())
            .dns([".example.com"])
            .err("invalid_dns_name", "empty label"),
        case("space", p())
            .dns(["www example.com"])
            .err("invalid_dns_name", "' '"),
        case("underscore", p())
            .dns(["_acme.example.com"])
            .err("invalid_dns_name", "'_'"),
        case("leading hyphen", p())
            .dns(["-a.example.com"])
            .err("invalid_dns_name", "\"-a\""),
        case("trailing hyphen", p())
            .dns(["a-.example.com"])
            .err("invalid_dns_name", "\"a-\""),
        case("63-octet label", p())
            .dns([format!("{label63}.example.com")])
            .ok_dns([format!("{label63}.example.com")]),
        case("64-octet label", p())
            .dns([format!("{label64}.example.com")])
            .err("invalid_dns_name", "64 octets"),
        case("253-octet name", p())
            .dns([long_ok.clone()])
            .ok_dns([long_ok]),
        case("254-octet name", p())
            .dns([long_bad])
            .err("invalid_dns_name", "254 octets"),
        case("A-label", domains(&["xn--bcher-kva.example"]))
            .dns(["xn--bcher-kva.example"])
            .ok_dns(["xn--bcher-kva.example"]),
        case("A-label that is not punycode", p())
            .dns(["xn--zz.example.com"])
            .err("invalid_dns_name", "not a valid IDNA A-label"),
        case("A-label decoding to a control character", p())
            .dns(["xn--a.example.com"])
            .err("invalid_dns_name", "not a valid IDNA A-label"),
        case(
            "valid A-label under a wildcard request",
            RolePolicy {
                allow_wildcard_certificates: true,
                ..p()
            },
        )
        .dns(["*.xn--bcher-kva.example.com"])
        .ok_dns(["*.xn--bcher-kva.example.com"]),
        case("U-label", p())
            .dns(["bücher.example"])
            .err("invalid_dns_name", "xn--"),
        case("U-label CN under allow_any_name", any_name())
            .cn("bücher.example")
            .err("invalid_dns_name", "xn--"),
        case("IPv4 as DNS name", p())
            .dns(["10.0.0.1"])
            .err("invalid_dns_name", "ip_sans"),
        case("IPv6 as DNS name", p())
            .dns(["::1"])
            .err("invalid_dns_name", "ip_sans"),
        case("numeric last label", p())
            .dns(["a.123"])
            .err("invalid_dns_name", "numeric"),
        case("hex last label", any_name())
            .dns(["a.0x1f"])
            .err("invalid_dns_name", "numeric"),
    ]);
}

#[test]
fn wildcard_requests() {
    let wild = |entries: &[&str], subdomains: bool| RolePolicy {
        allow_wildcard_certificates: true,
        allow_subdomains: subdomains,
        ..domains(entries)
    };
    run(vec![
        case(
            "wildcard without permission",
            domains(&["*.svc.cluster.local"]),
        )
        .dns(["*.svc.cluster.local"])
        .err("wildcard_not_allowed", "*.svc.cluster.local"),
        case(
            "wildcard with permission",
            wild(&["*.svc.cluster.local"], false),
        )
        .dns(["*.SVC.cluster.local."])
        .ok_dns(["*.svc.cluster.local"]),
        case(
            "wildcard vs bare entry",
            wild(&["svc.cluster.local"], false),
        )
        .dns(["*.svc.cluster.local"])
        .err("domain_not_allowed", "*.svc.cluster.local"),
        case(
            "wildcard below bare entry + subdomains",
            wild(&["cluster.local"], true),
        )
        .dns(["*.svc.cluster.local"])
        .ok_dns(["*.svc.cluster.local"]),
        case(
            "wildcard two below star entry",
            wild(&["*.cluster.local"], false),
        )
        .dns(["*.svc.cluster.local"])
        .err("domain_not_allowed", "*.svc.cluster.local"),
        case("partial-label wildcard", wild(&["*.x.y"], true))
            .dns(["a*.x.y"])
            .err("invalid_dns_name", "leftmost"),
        case("double wildcard", wild(&["*.x.y"], true))
            .dns(["*.*.x.y"])
            .err("invalid_dns_name", "leftmost"),
        case("inner wildcard", wild(&["*.x.y"], true))
            .dns(["x.*.y"])
            .err("invalid_dns_name", "leftmost"),
        case("lone star", wild(&["x.y"], true))
            .dns(["*"])
            .err("invalid_dns_name", "leftmost"),
        case(
            "wildcard under single label",
            RolePolicy {
                allow_wildcard_certificates: true,
                ..any_name()
            },
        )
        .dns(["*.com"])
        .err("invalid_dns_name", "single label"),
        case(
            "wildcard CN without permission",
            domains(&["*.example.com"]),
        )
        .cn("*.example.com")
        .err("wildcard_not_allowed", "*.example.com"),
        case("wildcard CN under allow_any_name", any_name())
            .cn("*.example.com")
            .err("wildcard_not_allowed", "*.example.com"),
    ]);
}

#[test]
fn ip_sans() {
    run(vec![
        case("IP without allow_ip_sans", RolePolicy::default())
            .ips(&["10.0.0.1"])
            .err("ip_sans_not_allowed", "10.0.0.1"),
        case("no ranges means any", ip_role(&[]))
            .ips(&["10.0.0.1", "2001:db8::1"])
            .ok_ips(&["10.0.0.1", "2001:db8::1"]),
        case("v4 in range", ip_role(&["10.0.0.0/8"]))
            .ips(&["10.1.2.3"])
            .ok_ips(&["10.1.2.3"]),
        case("v4 outside range", ip_role(&["10.0.0.0/8"]))
            .ips(&["11.0.0.1"])
            .err("ip_not_allowed", "11.0.0.1 is outside"),
        case("v6 in range", ip_role(&["fd00::/8"]))
            .ips(&["FD12:3456:0:0::1"])
            .ok_ips(&["fd12:3456::1"]),
        case("v6 outside range", ip_role(&["10.0.0.0/8", "fd00::/8"]))
            .ips(&["2001:db8::1"])
            .err("ip_not_allowed", "fd00::/8"),
        case("v4-mapped v6 is refused", ip_role(&["10.0.0.0/8"]))
            .ips(&["::ffff:10.0.0.1"])
            .err("invalid_ip", "IPv4-mapped"),
        // An IPv6 range does not let it through either: clients read it as 192.168.1.1.
        case("v4-mapped v6 under ::/0", ip_role(&["10.0.0.0/8", "::/0"]))
            .ips(&["::ffff:192.168.1.1"])
            .err("invalid_ip", "request 192.168.1.1"),
        case("/32 range", ip_role(&["192.0.2.7/32"]))
            .ips(&["192.0.2.7", "192.0.2.8"])
            .err("ip_not_allowed", "192.0.2.8"),
        case("/0 range", ip_role(&["0.0.0.0/0"]))
            .ips(&["203.0.113.9"])
            .ok_ips(&["203.0.113.9"]),
        case("out-of-range octet", ip_role(&[]))
            .ips(&["10.0.0.256"])
            .err("invalid_ip", "10.0.0.256"),
        case("CIDR is not an IP", ip_role(&[]))
            .ips(&["10.0.0.1/32"])
            .err("invalid_ip", "10.0.0.1/32"),
        case("hostname is not an IP", ip_role(&[]))
            .ips(&["localhost"])
            .err("invalid_ip", "localhost"),
        case("duplicates and canonical form", ip_role(&[]))
            .ips(&["2001:DB8::1", "2001:db8:0:0:0:0:0:1", "10.0.0.1"])
            .ok_ips(&["2001:db8::1", "10.0.0.1"]),
    ]);
}

#[test]
fn uri_sans() {
    let spiffe = || uri_role(&["spiffe://cluster.local/ns/*/sa/*"]);
    run(vec![
        case("SPIFFE id matches", spiffe())
            .uris(&["spiffe://cluster.local/ns/prod/sa/billing"])
            .ok_uris(&["spiffe://cluster.local/ns/prod/sa/billing"]),
        case("star does not cross '/'", spiffe())
            .uris(&["spiffe://cluster.local/ns/a/b/sa/x"])
            .err("uri_not_allowed", "ns/a/b/sa/x"),
        case("other trust domain", spiffe())
            .uris(&["spiffe://evil.local/ns/prod/sa/billing"])
            .err("uri_not_allowed", "evil.local"),
        case("no globs refuse all", RolePolicy::default())
            .uris(&["spiffe://cluster.local/ns/prod/sa/billing"])
            .err("uri_not_allowed", "allows no URI"),
        case("no scheme", spiffe())
            .uris(&["cluster.local/ns/prod/sa/x"])
            .err("invalid_uri", "scheme://"),
        case("whitespace", spiffe())
            .uris(&["spiffe://cluster.local/ns/prod/sa/a b"])
            .err("invalid_uri", "whitespace"),
        case("control character", spiffe())
            .uris(&["spiffe://cluster.local/ns/prod/sa/a\u{0}"])
            .err("invalid_uri", "control"),
        case("non-ASCII", spiffe())
            .uris(&["spiffe://cluster.local/ns/prod/sa/zoë"])
            .err("invalid_uri", "percent-encode"),
        case("empty authority", uri_role(&["spiffe:///*"]))
            .uris(&["spiffe:///x"])
            .err("invalid_uri", "empty authority"),
        case("bad scheme", uri_role(&["*"]))
            .uris(&["1spiffe://x/y"])
            .err("invalid_uri", "scheme"),
        case("dot-dot segment", spiffe())
            .uris(&["spiffe://cluster.local/ns/../sa/admin"])
            .err("invalid_uri", "'..' path segment"),
        case("trailing dot-dot segment", spiffe())
            .uris(&["spiffe://cluster.local/ns/prod/sa/.."])
            .err("invalid_uri", "'..' path segment"),
        case("user information", uri_role(&["spiffe://*.local/x"]))
            .uris(&["spiffe://evil.com@a.local/x"])
            .err("invalid_uri", "user information"),
        case("empty host label", uri_role(&["spiffe://*.local/x"]))
            .uris(&["spiffe://.local/x"])
            .err("invalid_uri", "empty label"),
        case("backslash", uri_role(&["https://*.example.com/*"]))
            .uris(&["https://evil.com\\.example.com/a"])
            .err("invalid_uri", "backslash"),
        case("fragment trick", uri_role(&["https://*.example.com/*"]))
            .uris(&["https://evil.com#.example.com/a"])
            .err("uri_not_allowed", "evil.com"),
        case("IPv6 host", uri_role(&["https://[2001:db8::1]:8443/*"]))
            .uris(&["https://[2001:db8::1]:8443/x"])
            .ok_uris(&["https://[2001:db8::1]:8443/x"]),
        case("SPIFFE: empty segment", spiffe())
            .uris(&["spiffe://cluster.local/ns//sa/b"])
            .err("invalid_uri", "empty path segment"),
        case("SPIFFE: trailing slash", spiffe())
            .uris(&["spiffe://cluster.local/ns/a/sa/"])
            .err("invalid_uri", "ends with '/'"),
        case(
            "SPIFFE: uppercase trust domain",
            uri_role(&["spiffe://*/x"]),
        )
        .uris(&["spiffe://Cluster.local/x"])
        .err("invalid_uri", "trust domain"),
        case("SPIFFE: port", uri_role(&["spiffe://*/x"]))
            .uris(&["spiffe://cluster.local:8443/x"])
            .err("invalid_uri", "no port"),
        case("SPIFFE: query", uri_role(&["spiffe://cluster.local/*"]))
            .uris(&["spiffe://cluster.local/x?y=1"])
            .err("invalid_uri", "query or fragment"),
        case(
            "SPIFFE: uppercase scheme",
            uri_role(&["*://cluster.local/x"]),
        )
        .uris(&["SPIFFE://cluster.local/x"])
        .err("invalid_uri", "lowercase"),
        case("SPIFFE: percent in a segment", spiffe())
            .uris(&["spiffe://cluster.local/ns/a%2Fb/sa/c"])
            .err("invalid_uri", "path segment of other"),
        case(
            "SPIFFE: trust domain alone",
            uri_role(&["spiffe://cluster.local"]),
        )
        .uris(&["spiffe://cluster.local"])
        .ok_uris(&["spiffe://cluster.local"]),
        case(
            "an empty segment outside SPIFFE is the URI's own",
            uri_role(&["https://x.example/*/b"]),
        )
        .uris(&["https://x.example/a//b"])
        .err("uri_not_allowed", "x.example"),
        case("duplicates", spiffe())
            .uris(&[
                "spiffe://cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns/a/sa/b",
            ])
            .ok_uris(&["spiffe://cluster.local/ns/a/sa/b"]),
    ]);
}

#[test]
fn common_name_and_any_name() {
    let required = || RolePolicy {
        require_cn: true,
        allow_subdomains: true,
        ..domains(&["example.com"])
    };
    run(vec![
        case("require_cn, none", required())
            .dns(["www.example.com"])
            .err("cn_required", "common_name"),
        case("require_cn, empty", required())
            .cn("")
            .err("cn_required", "common_name"),
        case("require_cn, blank: the value is named", required())
            .cn("  ")
            .err("invalid_dns_name", "\"  \" is only whitespace"),
        case(
            "blank CN without require_cn: refused, not dropped",
            any_name(),
        )
        .cn(" ")
        .dns(["x.example.com"])
        .err("invalid_dns_name", "only whitespace"),
        case("require_cn, given", required())
            .cn("WWW.example.com.")
            .ok_cn(Some("www.example.com"))
            .ok_dns(["www.example.com"]),
        case("no CN when not required", domains(&["example.com"]))
            .dns(["example.com"])
            .ok_cn(None)
            .ok_dns(["example.com"]),
        case("CN outside the domains", required())
            .cn("www.example.org")
            .err("domain_not_allowed", "www.example.org"),
        case("allow_any_name skips matching", any_name())
            .dns(["anything.internal"])
            .ok_dns(["anything.internal"]),
        case("free-form CN with allow_any_name", any_name())
            .cn("Billing Service")
            .ok_cn(Some("Billing Service"))
            .ok_dns(Vec::<String>::new()),
        case(
            "free-form CN without allow_any_name",
            domains(&["example.com"]),
        )
        .cn("Billing Service")
        .err("invalid_dns_name", "Billing Service"),
        case("allow_any_name keeps syntax checks", any_name())
            .dns(["bad_name.example"])
            .err("invalid_dns_name", "'_'"),
        case("hostname-shaped CN is not free text", any_name())
            .cn("bad_name.example")
            .err("invalid_dns_name", "'_'"),
        case("IP as CN", any_name())
            .cn("10.0.0.1")
            .err("ip_sans_not_allowed", "\"10.0.0.1\" is an IP address"),
        case("IP as CN with allow_ip_sans", ip_role(&["10.0.0.0/8"]))
            .cn("10.0.0.1")
            .ips(&["10.0.0.1", "10.0.0.2"])
            .ok_cn(Some("10.0.0.1"))
            .ok_ips(&["10.0.0.1", "10.0.0.2"]),
        case("IP CN outside the ranges", ip_role(&["10.0.0.0/8"]))
            .cn("192.168.0.1")
            .err("ip_not_allowed", "192.168.0.1"),
        case("free-form CN with control character", any_name())
            .cn("Billing\u{7}Service")
            .err("invalid_dns_name", "control"),
        // Invisible characters: a look-alike of another name, or text shown reversed.
        case("free text with a zero-width space", any_name())
            .cn("pay\u{200b}pal svc")
            .dns(["a.example"])
            .err("invalid_dns_name", "invisible"),
        case("free text with a right-to-left override", any_name())
            .cn("billing svc\u{202e}gpj")
            .dns(["a.example"])
            .err("invalid_dns_name", "invisible"),
        case("single-label CN is a DNS name", any_name())
            .cn("Billing")
            .ok_cn(Some("billing"))
            .ok_dns(["billing"]),
        // Padding or odd spaces do not carry an IP address or a wildcard past their rules, and
        // a host-shaped CN with a non-ASCII space is a bad host name, not free text (it was a
        // 500 from the lint, which reads it as a host name).
        case("padded IP as free text", any_name())
            .cn("10.0.0.1 ")
            .dns(["a.example"])
            .err("invalid_dns_name", "trailing whitespace"),
        case("padded wildcard as free text", any_name())
            .cn(" *.evil.com")
            .dns(["a.example"])
            .err("invalid_dns_name", "leading or trailing"),
        case("no-break space in a host name", any_name())
            .cn("svc.example\u{a0}")
            .dns(["a.example"])
            .err("invalid_dns_name", "svc.example"),
        case("em space in free text", any_name())
            .cn("Billing\u{2003}Service")
            .dns(["a.example"])
            .err("invalid_dns_name", "other than the ASCII space"),
        case("IPv6 with a zone as free text", any_name())
            .cn("fe80::1%eth0")
            .dns(["a.example"])
            .err("invalid_dns_name", "fe80"),
        case("bracketed IPv6 as free text", any_name())
            .cn("[::1]")
            .dns(["a.example"])
            .err("invalid_dns_name", "::1"),
        case("inet_aton number as free text", any_name())
            .cn("2130706433")
            .dns(["a.example"])
            .err("invalid_dns_name", "2130706433"),
    ]);
}

#[test]
fn dedup_order_and_limits() {
    let p = || RolePolicy {
        allow_subdomains: true,
        allow_ip_sans: true,
        ..domains(&["example.com"])
    };
    let mut hundred_with_cn = many(99);
    hundred_with_cn.push("www.example.com".into());
    let mix = RolePolicy {
        allow_ip_sans: true,
        allowed_uri_sans: vec!["spiffe://x/*".into()],
        ..any_name()
    };
    let thirty_ips: Vec<String> = (1..=30).map(|i| format!("10.0.0.{i}")).collect();
    let twenty_one_uris: Vec<String> = (0..21).map(|i| format!("bad uri {i}")).collect();
    run(vec![
        case("CN repeated in alt_names appears once", p())
            .cn("WWW.example.com")
            .dns(["www.example.com.", "api.example.com", "www.example.com"])
            .ok_cn(Some("www.example.com"))
            .ok_dns(["www.example.com", "api.example.com"]),
        case("CN first, then request order", p())
            .cn("z.example.com")
            .dns(["b.example.com", "a.example.com"])
            .ok_dns(["z.example.com", "b.example.com", "a.example.com"]),
        case("only the last name is bad", p())
            .dns(["a.example.com", "b.example.com", "c.evil.com"])
            .err("domain_not_allowed", "\"c.evil.com\""),
        case("CN checked before alt_names", p())
            .cn("evil.org")
            .dns(["also.evil.net"])
            .err("domain_not_allowed", "\"evil.org\""),
        case("DNS names checked before IPs", p())
            .dns(["evil.org"])
            .ips(&["nope"])
            .err("domain_not_allowed", "evil.org"),
        case("IPs checked before URIs", p())
            .ips(&["10.0.0.1", "nope"])
            .uris(&["spiffe://x/y"])
            .err("invalid_ip", "\"nope\""),
        case("empty request", p()).ok_dns(Vec::<String>::new()),
        case("100 names", p()).dns(many(100)).ok_dns(many(100)),
        case("101 names", p())
            .dns(many(101))
            .err("too_many_names", "101"),
        case("CN also in alt_names counts once", p())
            .cn("www.example.com")
            .dns(hundred_with_cn),
        case("CN not in alt_names counts", p())
            .cn("www.example.com")
            .dns(many(100))
            .err("too_many_names", "101"),
        case("limit spans all kinds, checked first", mix.clone())
            .dns(many(50))
            .ips(&thirty_ips.iter().map(String::as_str).collect::<Vec<_>>())
            .uris(
                &twenty_one_uris
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )
            .err("too_many_names", "101"),
        case("a name repeated counts once, in any spelling", p())
            .cn("a.example.com")
            .dns(
                std::iter::repeat_n(["A.example.com.", "a.example.com", "b.example.com"], 60)
                    .flatten(),
            )
            .ok_dns(["a.example.com", "b.example.com"]),
        case("repeated IPs and URIs count once", mix)
            .dns(many(98))
            .ips(&["10.0.0.1"; 40])
            .uris(&["spiffe://x/y"; 40])
            .ok_dns(many(98)),
        case("far more entries than the limit: refused uncounted", p())
            .dns(std::iter::repeat_n("a.example.com", 2000))
            .err("too_many_names", "2000 names"),
    ]);
}

#[test]
fn domain_patterns_that_can_never_match_are_refused() {
    for ok in [
        "example.com",
        "*.example.com",
        "*.localhost",
        "localhost",
        "Example.COM.",
        "xn--bcher-kva.example",
    ] {
        assert!(
            super::check_domain_pattern(ok).is_ok(),
            "{ok:?} should be accepted"
        );
    }
    for bad in [
        "a..com",
        "-a.com",
        "a_b.com",
        "*",
        "*.",
        ".x.y",
        "a.*.y",
        "*.*.y",
        "*x.y",
        "10.0.0.1",
        "xn--zz.example",
        "",
    ] {
        let err = super::check_domain_pattern(bad).expect_err(bad);
        assert_eq!(err.code(), "invalid_dns_name", "{bad:?}: {err}");
    }
}
