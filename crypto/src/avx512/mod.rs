//! ChaCha20-Poly1305 (RFC 8439) for x86-64 CPUs with AVX-512 and IFMA:
//! sixteen ChaCha20 blocks and eight Poly1305 blocks per step. A packet
//! alone has its Poly1305 steps woven into its ChaCha20 rounds; a batch
//! runs ChaCha20 across packet boundaries and Poly1305 a packet per lane
//! ([`batch`]). ring's implementation tops out at AVX2, about half of
//! what these CPUs can do, and the userspace data path seals and opens
//! every packet; on other CPUs [`crate::key::AeadKey`] keeps using ring.

mod batch;
mod chacha20;
mod mac_lanes;
mod poly1305;

use std::arch::x86_64::{__m512i, _mm512_setzero_si512};

use chacha20::{CHUNK_BYTES, State};
use poly1305::{Feed, Mac, STRIDE};

use crate::key::{Forged, Job};

/// Whether this CPU runs this implementation.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512ifma")
}

/// ChaCha20-Poly1305 under one key; only built where [`available`] holds.
pub(crate) struct Aead<'k> {
    key: &'k [u8; 32],
}

impl<'k> Aead<'k> {
    /// # Safety
    /// [`available`] must have returned true.
    pub(crate) unsafe fn new(key: &'k [u8; 32]) -> Aead<'k> {
        Aead { key }
    }

    /// Encrypts `data` in place and returns the tag.
    pub(crate) fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        // SAFETY: `Aead` exists only where the CPU has the features.
        unsafe { seal(&State::new(self.key, nonce), aad, data) }
    }

    /// Decrypts `data` in place if `tag` authenticates it; otherwise
    /// leaves it as it was.
    pub(crate) fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), Forged> {
        // SAFETY: `Aead` exists only where the CPU has the features.
        unsafe { open(&State::new(self.key, nonce), aad, data, tag) }
    }

    /// Seals each job: as [`Aead::seal`] on each, but faster together.
    pub(crate) fn seal_many(&self, jobs: &mut [Job]) {
        // SAFETY: `Aead` exists only where the CPU has the features.
        unsafe { batch::run(self.key, batch::Direction::Seal, jobs) }
    }

    /// Opens each job: as [`Aead::open`] on each, but faster together. A
    /// job that is not `authentic` is left as it came.
    pub(crate) fn open_many(&self, jobs: &mut [Job]) {
        // SAFETY: `Aead` exists only where the CPU has the features.
        unsafe { batch::run(self.key, batch::Direction::Open, jobs) }
    }
}

/// Below this much ciphertext, computing the powers of r for the vector
/// lanes costs more than the lanes save.
const VECTOR_MIN: usize = 2 * STRIDE;

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
fn seal(state: &State, aad: &[u8], data: &mut [u8]) -> [u8; 16] {
    let first = keystream(state, 0, data.len() + 64, None);
    let mut mac = mac_for(&first, aad);
    let vector = data.len() >= VECTOR_MIN;
    let mut ready = data.len().min(64 * (first.len() - 1));
    chacha20::xor(&first[1..], &mut data[..ready]);
    // Each further chunk of keystream is computed while the ciphertext
    // already made is hashed.
    let mut absorbed = 0;
    let mut counter = first.len();
    while ready < data.len() {
        let len = (data.len() - ready).min(CHUNK_BYTES);
        let mut feed = Feed {
            mac: &mut mac,
            data,
            absorbed,
            limit: if vector { ready } else { 0 },
        };
        let ks = keystream(state, counter, len, Some(&mut feed));
        absorbed = feed.absorbed;
        chacha20::xor(&ks, &mut data[ready..ready + len]);
        ready += len;
        counter += 16;
    }
    let mut feed = Feed {
        mac: &mut mac,
        data,
        absorbed,
        limit: if vector { data.len() } else { 0 },
    };
    feed.drain();
    let absorbed = feed.absorbed;
    mac.finish(&data[absorbed..])
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
fn open(state: &State, aad: &[u8], data: &mut [u8], tag: &[u8; 16]) -> Result<(), Forged> {
    let first = keystream(state, 0, data.len() + 64, None);
    let mut mac = mac_for(&first, aad);
    let vector = data.len() >= VECTOR_MIN;
    let head = data.len().min(64 * (first.len() - 1));
    // The second chunk of keystream is computed while the ciphertext is
    // hashed, and kept until the tag is checked.
    let mut feed = Feed {
        mac: &mut mac,
        data,
        absorbed: 0,
        limit: if vector { data.len() } else { 0 },
    };
    let second = (head < data.len()).then(|| {
        let len = (data.len() - head).min(CHUNK_BYTES);
        keystream(state, first.len(), len, Some(&mut feed))
    });
    feed.drain();
    let absorbed = feed.absorbed;
    if !equal(&mac.finish(&data[absorbed..]), tag) {
        return Err(Forged);
    }
    chacha20::xor(&first[1..], &mut data[..head]);
    let mut at = head;
    let mut counter = first.len();
    let mut next = second;
    while at < data.len() {
        let len = (data.len() - at).min(CHUNK_BYTES);
        let ks = next
            .take()
            .unwrap_or_else(|| keystream(state, counter, len, None));
        chacha20::xor(&ks, &mut data[at..at + len]);
        at += len;
        counter += 16;
    }
    Ok(())
}

/// Enough keystream blocks from `counter` on for `len` bytes, up to a
/// chunk: eight in 256-bit registers where they do, else sixteen.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
fn keystream(state: &State, counter: usize, len: usize, feed: Option<&mut Feed>) -> Blocks {
    let counter = u32::try_from(counter).expect("packets far below 256 GiB");
    if len <= CHUNK_BYTES / 2 {
        let mut blocks = [_mm512_setzero_si512(); 16];
        blocks[..8].copy_from_slice(&state.half_chunk(counter, feed));
        Blocks { blocks, count: 8 }
    } else {
        Blocks {
            blocks: state.chunk(counter, feed),
            count: 16,
        }
    }
}

/// Eight or sixteen keystream blocks.
struct Blocks {
    blocks: chacha20::Chunk,
    count: usize,
}

impl std::ops::Deref for Blocks {
    type Target = [__m512i];

    fn deref(&self) -> &[__m512i] {
        &self.blocks[..self.count]
    }
}

/// The Poly1305 state keyed by the start of keystream block 0.
#[target_feature(enable = "avx512f")]
fn mac_for(first: &[__m512i], aad: &[u8]) -> Mac {
    let mut key = chacha20::poly_key(first[0]);
    let mac = Mac::new(&key, aad);
    key.fill(0);
    mac
}

/// Compares tags in time independent of where they differ.
fn equal(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::key::{AeadKey, SecretKey};

    /// This implementation, or a loud failure where the CPU cannot run it
    /// (set WEFT_TEST_WITHOUT_AVX512=1 to accept testing ring alone there).
    pub(super) fn ours(key: &[u8; 32]) -> Option<Aead<'_>> {
        if available() {
            // SAFETY: just checked.
            return Some(unsafe { Aead::new(key) });
        }
        assert!(
            std::env::var_os("WEFT_TEST_WITHOUT_AVX512").is_some(),
            "this CPU lacks AVX-512 F/BW/VL/IFMA, so the AVX-512 ChaCha20-Poly1305 \
             cannot be tested here; set WEFT_TEST_WITHOUT_AVX512=1 to skip it knowingly"
        );
        None
    }

    /// Seals with ring and with ours, checks both give the same bytes and
    /// that ours opens it (and nothing altered).
    fn same_as_ring(key: [u8; 32], nonce: [u8; 12], aad: &[u8], plain: &[u8]) {
        let Some(aead) = ours(&key) else { return };
        let ring = AeadKey::with_ring(&SecretKey::from_bytes(key));
        let mut expected = plain.to_vec();
        let expected_tag = ring.seal(nonce, aad, &mut expected);
        let mut sealed = plain.to_vec();
        let tag = aead.seal(&nonce, aad, &mut sealed);
        assert_eq!(sealed, expected, "ciphertext, {} bytes", plain.len());
        assert_eq!(tag, expected_tag, "tag, {} bytes", plain.len());

        let mut opened = sealed.clone();
        aead.open(&nonce, aad, &mut opened, &tag).unwrap();
        assert_eq!(opened, plain);
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        let mut untouched = sealed.clone();
        assert_eq!(
            aead.open(&nonce, aad, &mut untouched, &bad_tag),
            Err(Forged)
        );
        assert_eq!(untouched, sealed, "a forged packet is left as it came");
        if let Some(last) = sealed.last_mut() {
            *last ^= 1;
            assert_eq!(aead.open(&nonce, aad, &mut sealed, &tag), Err(Forged));
        }
    }

    #[test]
    fn rfc8439_aead_test_vector() {
        let key: [u8; 32] = std::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [7, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
        let aad = [
            0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
        ];
        let plain = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
for the future, sunscreen would be it.";
        let Some(aead) = ours(&key) else { return };
        let mut data = plain.to_vec();
        let tag = aead.seal(&nonce, &aad, &mut data);
        assert_eq!(
            &data[..8],
            &[0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb]
        );
        assert_eq!(
            tag,
            [
                0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60,
                0x06, 0x91
            ]
        );
        same_as_ring(key, nonce, &aad, plain);
    }

    /// Every length across the one-chunk, vector-Poly1305 and multi-chunk
    /// boundaries, with all-ones bytes and key, where limbs and carries
    /// are largest.
    #[test]
    fn every_length_matches_ring_at_the_extremes() {
        let ones = vec![0xff; 2200];
        for len in 0..=ones.len() {
            same_as_ring([0xff; 32], [0xff; 12], &[], &ones[..len]);
        }
        for aad_len in [1, 15, 16, 17, 255, 256, 300] {
            same_as_ring([0xff; 32], [0; 12], &ones[..aad_len], &ones[..1400]);
        }
    }

    proptest! {
        #[test]
        fn random_packets_match_ring(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 12]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..300),
            plain in proptest::collection::vec(any::<u8>(), 0..4200),
        ) {
            same_as_ring(key, nonce, &aad, &plain);
        }
    }
}
