//! Opaque, prefixed, random object identifiers (`ca_…`, `tok_…`): 128 bits from the OS CSPRNG.

use rand::RngCore;

/// A new identifier `"{prefix}_{32 lowercase hex digits}"`.
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}_{}", hex::encode(b))
}

/// `n` random bytes from the OS CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = new_id("ca");
        let b = new_id("ca");
        assert!(a.starts_with("ca_"));
        assert_eq!(a.len(), 3 + 32);
        assert_ne!(a, b);
    }
}
