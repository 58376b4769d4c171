//! Secret keys and the AEAD built on them.

use std::{fmt, mem::ManuallyDrop};

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// A 256-bit secret, wiped from memory when dropped and never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// ChaCha20-Poly1305 (RFC 8439) under one key: our AVX-512 code where the
/// CPU has it, ring elsewhere. Both produce the same bytes (tested).
pub(crate) struct AeadKey {
    engine: Engine,
}

// One per key, made at connection setup and rekeying: ring's larger key
// schedule is not worth a heap allocation.
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// ring keeps its own copy of the key inside `LessSafeKey` and does
    /// not wipe it, so we keep that value from being dropped normally and
    /// overwrite its bytes ourselves when done with it.
    Ring(ManuallyDrop<LessSafeKey>),
    #[cfg(target_arch = "x86_64")]
    Avx512(SecretKey),
}

/// One packet of a batch for [`AeadKey::seal_many`] or
/// [`AeadKey::open_many`]: `data` is encrypted or decrypted in place;
/// sealing writes `tag`, opening checks it and sets `authentic`.
pub(crate) struct Job<'a> {
    pub nonce: [u8; NONCE_LEN],
    pub aad: &'a [u8],
    pub data: &'a mut [u8],
    pub tag: &'a mut [u8; TAG_LEN],
    pub authentic: bool,
}

impl<'a> Job<'a> {
    pub fn new(
        nonce: [u8; NONCE_LEN],
        aad: &'a [u8],
        data: &'a mut [u8],
        tag: &'a mut [u8; TAG_LEN],
    ) -> Job<'a> {
        Job {
            nonce,
            aad,
            data,
            tag,
            authentic: false,
        }
    }
}

/// Authentication failed: the ciphertext, tag, nonce or associated data
/// is not what was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forged;

impl AeadKey {
    pub fn new(secret: &SecretKey) -> AeadKey {
        #[cfg(target_arch = "x86_64")]
        if crate::avx512::available() {
            return AeadKey {
                engine: Engine::Avx512(secret.clone()),
            };
        }
        AeadKey::with_ring(secret)
    }

    /// ring's implementation, whatever the CPU.
    pub fn with_ring(secret: &SecretKey) -> AeadKey {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, secret.expose()).expect("32-byte key");
        AeadKey {
            engine: Engine::Ring(ManuallyDrop::new(LessSafeKey::new(unbound))),
        }
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        match &self.engine {
            Engine::Ring(key) => {
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        in_out,
                    )
                    .expect("chacha20-poly1305 seals any length we use");
                tag.as_ref().try_into().expect("16-byte tag")
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this engine is only chosen where `available()` held.
            Engine::Avx512(key) => {
                unsafe { crate::avx512::Aead::new(key.expose()) }.seal(&nonce, aad, in_out)
            }
        }
    }

    /// Decrypts `in_out` in place if `tag` authenticates it; on failure
    /// `in_out` holds garbage and must be discarded.
    pub fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Forged> {
        match &self.engine {
            Engine::Ring(key) => key
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    aead::Tag::from(*tag),
                    in_out,
                    0..,
                )
                .map(drop)
                .map_err(|_| Forged),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this engine is only chosen where `available()` held.
            Engine::Avx512(key) => {
                unsafe { crate::avx512::Aead::new(key.expose()) }.open(&nonce, aad, in_out, tag)
            }
        }
    }
}

impl AeadKey {
    /// Seals each job, as [`AeadKey::seal`] would.
    pub fn seal_many(&self, jobs: &mut [Job]) {
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this engine is only chosen where `available()` held.
            Engine::Avx512(key) => {
                unsafe { crate::avx512::Aead::new(key.expose()) }.seal_many(jobs)
            }
            Engine::Ring(_) => {
                for job in jobs {
                    *job.tag = self.seal(job.nonce, job.aad, job.data);
                }
            }
        }
    }

    /// Opens each job, as [`AeadKey::open`] would; a job that is not
    /// `authentic` must be discarded.
    pub fn open_many(&self, jobs: &mut [Job]) {
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this engine is only chosen where `available()` held.
            Engine::Avx512(key) => {
                unsafe { crate::avx512::Aead::new(key.expose()) }.open_many(jobs)
            }
            Engine::Ring(_) => {
                for job in jobs {
                    job.authentic = self.open(job.nonce, job.aad, job.data, job.tag).is_ok();
                }
            }
        }
    }
}

impl Drop for AeadKey {
    fn drop(&mut self) {
        if let Engine::Ring(key) = &mut self.engine {
            // SAFETY: `key` is never used or dropped after this: it sits in
            // a ManuallyDrop that goes away with `self`, and LessSafeKey
            // owns no heap memory or handles, so not running its drop glue
            // leaks nothing. Writing zeros over it only erases the key
            // schedule. (The AVX-512 engine's SecretKey wipes itself.)
            unsafe { wipe(&mut **key) }
        }
    }
}

/// Overwrites the bytes of `value` with zeros in a way the compiler may
/// not elide.
///
/// # Safety
/// `value` must not be read, used or dropped afterwards.
unsafe fn wipe<T>(value: &mut T) {
    let ptr = (value as *mut T).cast::<u8>();
    for i in 0..std::mem::size_of::<T>() {
        // SAFETY: in bounds of `value`, which the caller gives up.
        unsafe { std::ptr::write_volatile(ptr.add(i), 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_leaves_only_zeros() {
        let secret = SecretKey::from_bytes([0xab; KEY_LEN]);
        let mut key = ManuallyDrop::new(LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, secret.expose()).unwrap(),
        ));
        let bytes = |k: &LessSafeKey| {
            let ptr = (k as *const LessSafeKey).cast::<u8>();
            // SAFETY: reading the bytes of a live value we own.
            (0..std::mem::size_of::<LessSafeKey>())
                .map(|i| unsafe { *ptr.add(i) })
                .collect::<Vec<u8>>()
        };
        assert!(
            bytes(&key).windows(4).any(|w| w == [0xab; 4]),
            "the key is in there before"
        );
        // SAFETY: `key` is not used after this except to read raw bytes.
        unsafe { wipe(&mut *key) };
        assert!(bytes(&key).iter().all(|b| *b == 0));
    }

    #[test]
    fn secret_keys_do_not_print() {
        assert_eq!(
            format!("{:?}", SecretKey::from_bytes([1; KEY_LEN])),
            "SecretKey(..)"
        );
    }
}
