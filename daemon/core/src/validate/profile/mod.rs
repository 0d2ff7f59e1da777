//! RFC 5280 rules checked on top of webpki, where webpki is deliberately lax or looks only at part
//! of a certificate (a trust anchor is to webpki just a name, a key and name constraints).
//!
//! Every rule names its section. Each check applies to one certificate in its role on the path:
//! the leaf, an intermediate CA, or the trust anchor's own certificate. Of the CA/Browser Forum
//! Baseline Requirements only rules with little risk for private PKIs are added (no wildcard over
//! an ICANN public suffix, an IP-literal or IDN common name must be a SAN value, SAN not critical
//! beside a subject, key sizes); others (EKU required in leaves, no EKU in roots, a plain CN in
//! the SAN) are not enforced: ScaiVault validates private PKIs too.
//!
//! - `checks`: the rules by extension and role.
//! - `syntax`: name syntax (DNS, IP masks, mailboxes, public suffixes, ambiguous CNs).
//! - `keys`: public key algorithms and sizes.

mod checks;
mod keys;
mod syntax;

pub use checks::{check, Role};
pub use keys::{key, webpki_refuses_rsa};
