//! The relying-party listener's request-head parser (`server.public_listen`: plain HTTP, no
//! credentials, reachable by anyone), compiled from the daemon's own source file: the daemon is a
//! binary crate, and the parser is self-contained for this purpose.
//!
//! Besides "no panic": a parsed head lies inside the input and parses the same from its own
//! bytes (what follows it, a pipelined request or a body, does not change it); every strict
//! prefix of a complete head is `Partial`, never `Bad` (a client sending its head in small pieces
//! must not be refused); a head that claims a body both by length and by transfer coding is
//! never accepted (RFC 9112 §6.3, request smuggling).
#![no_main]

#[path = "../../daemon/src/api/public/head.rs"]
#[allow(dead_code)]
mod head;

use head::{parse_head, Parsed};
use libfuzzer_sys::fuzz_target;

/// Prefixes checked per input: all of them for short heads, evenly spaced ones beyond.
const PREFIXES: usize = 256;

fuzz_target!(|data: &[u8]| {
    let h = match parse_head(data) {
        Parsed::Head(h) => h,
        Parsed::Partial => return,
        Parsed::Bad(why) => {
            assert!(!why.is_empty());
            return;
        }
    };
    assert!(
        h.len > 0 && h.len <= data.len(),
        "head length {} of {}",
        h.len,
        data.len()
    );
    assert!(
        data[..h.len].ends_with(b"\n"),
        "a head ends with its blank line"
    );
    assert_eq!(parse_head(&data[..h.len]), Parsed::Head(h.clone()));
    assert!(
        h.path.starts_with('/') || h.path == "*",
        "path {:?}",
        h.path
    );
    assert!(!h.method.is_empty());
    let head_bytes = &data[..h.len];
    assert!(
        !h.http11
            || !h.close
            || head_bytes
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b"close"))
    );
    let step = (h.len / PREFIXES).max(1);
    for cut in (0..h.len).step_by(step) {
        assert_eq!(
            parse_head(&data[..cut]),
            Parsed::Partial,
            "prefix of {cut} bytes of a {}-byte head",
            h.len
        );
    }
});
