//! The request head of the relying-party listener: `httparse` (hyper's parser) plus the framing
//! rules this listener applies (RFC 9112): the body's length, `Connection`, `Expect`, the
//! conditional. Self-contained (only `httparse` and `std`) so that the fuzz target
//! `fuzz/fuzz_targets/http_head.rs` compiles this very file.

/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;

/// A request head, owned (the buffer it was parsed from moves on).
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    pub method: String,
    /// The path, from an origin- or absolute-form target.
    pub path: String,
    pub query: Option<String>,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    pub content_length: usize,
    pub chunked: bool,
    /// The connection ends after this request.
    pub close: bool,
    pub expect_continue: bool,
    pub if_none_match: Option<String>,
    /// The client's `X-Request-Id`, when it is one the API listener would keep too.
    pub request_id: Option<String>,
}

/// Whether a client's `X-Request-Id` is kept: 1 to 64 letters, digits, `-`, `_`, `.` (the API
/// listener's rule too; this file stands alone, the fuzz target includes it).
pub fn request_id_acceptable(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// What a buffer holds.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    Head(Head),
    /// Not a whole head yet.
    Partial,
    /// Not HTTP: answer 400 and close.
    Bad(&'static str),
}

/// Parses the head at the start of `buf` (`httparse`, which hyper uses too).
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad("too many headers"),
        Err(_) => return Parsed::Bad("not an HTTP/1.x request"),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Bad("incomplete request line");
    };
    let http11 = version == 1;
    // Absolute form (`http://host/path`, RFC 9112 §3.2.2): keep the path. Only `http`: this
    // listener speaks plain HTTP, and a `https://` or `ftp://` target is meant for someone else.
    let target = match target.split_once("://") {
        Some((scheme, rest)) if !target.starts_with('/') => {
            if !scheme.eq_ignore_ascii_case("http") {
                return Parsed::Bad("invalid request target");
            }
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        _ => target,
    };
    // Origin form starts with `/`; `*` is the asterisk form, for `OPTIONS` only (RFC 9112
    // §3.2.4). Anything else (a relative reference, the authority form) is not a request this
    // listener can route.
    let routable = target.starts_with('/') || (target == "*" && method == "OPTIONS");
    if !routable {
        return Parsed::Bad("invalid request target");
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let mut head = Head {
        len,
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        http11,
        content_length: 0,
        chunked: false,
        close: !http11,
        expect_continue: false,
        if_none_match: None,
        request_id: None,
    };
    let mut lengths = 0;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match value.parse::<usize>() {
                Ok(n) => head.content_length = n,
                Err(_) => return Parsed::Bad("bad Content-Length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    head.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("x-request-id")
            && head.request_id.is_none()
            && request_id_acceptable(value)
        {
            head.request_id = Some(value.to_owned());
        }
    }
    // RFC 9112 §6.3: two lengths, or a length with a transfer coding, cannot be trusted.
    if lengths > 1 || (lengths == 1 && head.chunked) {
        return Parsed::Bad("conflicting message lengths");
    }
    Parsed::Head(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse_head(raw.as_bytes()) {
            Parsed::Head(h) => h,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn heads_are_parsed_with_their_framing() {
        let h =
            head("POST /v1/pki/ocsp/ca_1 HTTP/1.1\r\nHost: x\r\nContent-Length: 83\r\n\r\nBODY");
        assert_eq!(h.len, 64);
        assert_eq!(
            (
                h.method.as_str(),
                h.path.as_str(),
                h.content_length,
                h.close
            ),
            ("POST", "/v1/pki/ocsp/ca_1", 83, false)
        );
        // HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 stays unless asked to close.
        assert!(head("GET / HTTP/1.0\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").close);
        assert!(head("GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n").close);
        // Absolute form, query, conditional and Expect.
        let h = head("GET http://pki.example/v1/pki/ca/ca_1/crl?format=pem HTTP/1.1\r\nIf-None-Match: \"a\"\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.path, "/v1/pki/ca/ca_1/crl");
        assert_eq!(h.query.as_deref(), Some("format=pem"));
        assert_eq!(h.if_none_match.as_deref(), Some("\"a\""));
        assert!(h.expect_continue);
        assert_eq!(head("GET http://pki.example HTTP/1.1\r\n\r\n").path, "/");
        assert_eq!(head("OPTIONS * HTTP/1.1\r\n\r\n").path, "*");
        assert!(head("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").chunked);
    }

    #[test]
    fn partial_and_bad_heads_are_told_apart() {
        assert_eq!(parse_head(b""), Parsed::Partial);
        assert_eq!(
            parse_head(b"GET /v1/pki/ocsp/x HTTP/1.1\r\nHost:"),
            Parsed::Partial
        );
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET ki/ocsp/ca_1 HTTP/1.1\r\n\r\n",
            b"CONNECT pki.example:80 HTTP/1.1\r\n\r\n",
            // `*` is for OPTIONS only; absolute targets only of this listener's scheme.
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET https://pki.example/v1/pki/ca/x/crl HTTP/1.1\r\n\r\n",
            b"GET ftp://pki.example/v1/pki/ca/x/crl HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad), Parsed::Bad(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse_head(many.as_bytes()), Parsed::Bad("too many headers"));
    }
}
