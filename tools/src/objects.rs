//! The synthetic object catalogue: `obj-<i>` has a size from the configuration and
//! content derived from its key alone, so any program can check a body's digest
//! without asking a node.

use crate::cluster::Objects;
use sha2::{Digest, Sha256};

/// The key of object `i`.
pub fn key(i: u32) -> String {
    format!("obj-{i}")
}

/// Size of `key` in the catalogue, or None if there is no such object.
pub fn size_of(catalog: &Objects, key: &str) -> Option<usize> {
    let i: u32 = key.strip_prefix("obj-")?.parse().ok()?;
    if i >= catalog.count || key != self::key(i) {
        return None;
    }
    Some(catalog.sizes[i as usize % catalog.sizes.len()])
}

/// The content of `key` (`size` bytes): xorshift64* seeded by the key's FNV-1a hash.
pub fn content(key: &str, size: usize) -> Vec<u8> {
    let mut state = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// The hex SHA-256 a body of `key` must have, or None if there is no such object.
pub fn expected_digest(catalog: &Objects, key: &str) -> Option<String> {
    size_of(catalog, key).map(|size| digest(&content(key, size)))
}

/// Hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_sizes_and_content_are_fixed_by_the_key() {
        let c = Objects::default();
        assert_eq!(size_of(&c, "obj-0"), Some(4096));
        assert_eq!(size_of(&c, "obj-2"), Some(1 << 20));
        assert_eq!(size_of(&c, "obj-24"), None);
        assert_eq!(size_of(&c, "obj-01"), None);
        assert_eq!(size_of(&c, "x"), None);
        assert_eq!(content("obj-1", 100), content("obj-1", 100));
        assert_ne!(content("obj-1", 100), content("obj-2", 100));
        assert_eq!(content("obj-1", 13).len(), 13);
        assert_eq!(
            expected_digest(&c, "obj-0"),
            Some(digest(&content("obj-0", 4096)))
        );
        assert_eq!(expected_digest(&c, "obj-99"), None);
        assert_eq!(
            digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
