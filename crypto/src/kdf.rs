//! Key derivation: HKDF-SHA256 (RFC 5869) for session keys, Argon2id for
//! the network password.

use ring::hkdf::{self, HKDF_SHA256, KeyType};

use crate::key::{KEY_LEN, SecretKey};

struct Len32;

impl KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// HKDF-SHA256: extract with `salt`, expand with the concatenation of
/// `info` into a 32-byte key.
pub fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> SecretKey {
    let prk = hkdf::Salt::new(HKDF_SHA256, salt).extract(ikm);
    let mut out = [0u8; KEY_LEN];
    prk.expand(info, Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 length");
    SecretKey::from_bytes(out)
}

/// A key of its own for each use of a shared secret.
pub(crate) fn derive(secret: &SecretKey, label: &str) -> SecretKey {
    hkdf(b"weft v1", secret.expose(), &[label.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5869, test case 1 (its first 32 bytes of output).
    #[test]
    fn rfc5869_test_case_1() {
        let ikm = unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let okm = hkdf(&salt, &ikm, &[&info[..5], &info[5..]]);
        assert_eq!(
            okm.expose().to_vec(),
            unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
        );
    }

    #[test]
    fn labels_separate_keys() {
        let secret = SecretKey::from_bytes([7; KEY_LEN]);
        assert_ne!(derive(&secret, "a"), derive(&secret, "b"));
        assert_eq!(derive(&secret, "a"), derive(&secret, "a"));
    }
}
