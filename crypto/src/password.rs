//! The network password, turned into the pre-shared key of the handshake.

use argon2::{Algorithm, Argon2, Params, Version};

use crate::key::{KEY_LEN, SecretKey};

/// Every router derives the same key from the same password, so the salt
/// is fixed; Argon2id makes each guess at a password recorded off the wire
/// cost 19 MiB and two passes (OWASP's minimum), not one hash.
const SALT: &[u8] = b"weft network password v1";
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;

/// The pre-shared key derived from a network password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Password(SecretKey);

impl Password {
    /// Derives the key; takes tens of milliseconds by design, so do it once
    /// per process, not per connection.
    pub fn derive(password: &str) -> Password {
        let params =
            Params::new(MEMORY_KIB, PASSES, 1, Some(KEY_LEN)).expect("valid Argon2 parameters");
        let mut key = [0u8; KEY_LEN];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(password.as_bytes(), SALT, &mut key)
            .expect("Argon2id accepts any password with these parameters");
        Password(SecretKey::from_bytes(key))
    }

    pub(crate) fn psk(&self) -> &[u8; KEY_LEN] {
        self.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Computed independently with Python's argon2-cffi:
    /// `hash_secret_raw(b"correct horse", b"weft network password v1",
    /// time_cost=2, memory_cost=19456, parallelism=1, hash_len=32,
    /// type=Type.ID, version=19)`.
    #[test]
    fn matches_an_independent_argon2id() {
        let derived = Password::derive("correct horse");
        assert_eq!(hex(derived.psk()), ARGON2_KAT);
    }

    const ARGON2_KAT: &str =
        include_str!("../tests/vectors/argon2id-correct-horse.hex").trim_ascii();

    #[test]
    fn different_passwords_differ() {
        assert_ne!(Password::derive("a"), Password::derive("b"));
    }
}
