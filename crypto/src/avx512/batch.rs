//! Many packets under one key: ChaCha20 as one stream of blocks whose
//! sixteen lanes are filled across packet boundaries, so a 1400-byte
//! packet costs its 23 blocks instead of a chunk and a half; Poly1305 a
//! packet per lane (see [`mac_lanes`]), so no packet pays for powers of r
//! or for joining lanes.
//!
//! Sealing encrypts every packet of a group, then hashes them. Opening
//! computes the packets' Poly1305 keys (keystream block 0), hashes them,
//! and decrypts only the packets whose tags match: a forged packet is
//! never decrypted, and is left as it came.

use std::arch::x86_64::*;
use std::ops::Range;

use super::chacha20::{self, Chunk, State};
use super::equal;
use super::mac_lanes::{self, Message};
use super::poly1305::Feed;
use crate::key::Job;

/// Packets per group: their keys and tags live on the stack. 16, 32 and
/// 64 measured alike; 64 is a full send batch of the data path.
const GROUP: usize = 64;

/// Fewer packets than this go one by one: a Poly1305 step costs the same
/// with idle lanes, and 1400-byte packets measured 0.7x one by one in
/// twos, 0.85x in threes, even in fours, 1.2x in sixes, 1.4x from eight.
const TOGETHER_MIN: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Seal,
    Open,
}

/// Seals or opens `jobs`, a group at a time.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
pub(super) fn run(key: &[u8; 32], direction: Direction, jobs: &mut [Job]) {
    let state = State::new(key, &[0; 12]);
    for group in jobs.chunks_mut(GROUP) {
        if group.len() < TOGETHER_MIN {
            one_by_one(key, direction, group);
            continue;
        }
        let mut keys = [[0u8; 32]; GROUP];
        let mut tags = [[0u8; 16]; GROUP];
        let tags = &mut tags[..group.len()];
        match direction {
            Direction::Seal => {
                keystream(&state, group, all_blocks, |jobs, ks, lanes| {
                    take_keys(&mut keys, ks, lanes);
                    apply(jobs, ks, lanes);
                });
                hash(group, &keys, tags);
                for (job, tag) in group.iter_mut().zip(tags.iter()) {
                    *job.tag = *tag;
                }
            }
            Direction::Open => {
                keystream(
                    &state,
                    group,
                    |_| 0..1,
                    |_, ks, lanes| take_keys(&mut keys, ks, lanes),
                );
                hash(group, &keys, tags);
                for (job, tag) in group.iter_mut().zip(tags.iter()) {
                    job.authentic = equal(tag, job.tag);
                }
                let authentic_data = |job: &Job| match job.authentic {
                    true => 1..all_blocks(job).end,
                    false => 0..0,
                };
                keystream(&state, group, authentic_data, |jobs, ks, lanes| {
                    apply(jobs, ks, lanes)
                });
            }
        }
        for key in &mut keys {
            key.fill(0);
        }
    }
}

/// Each job on its own, with its Poly1305 woven into its ChaCha20 rounds.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
fn one_by_one(key: &[u8; 32], direction: Direction, jobs: &mut [Job]) {
    for job in jobs {
        let state = State::new(key, &job.nonce);
        match direction {
            Direction::Seal => *job.tag = super::seal(&state, job.aad, job.data),
            Direction::Open => {
                job.authentic = super::open(&state, job.aad, job.data, job.tag).is_ok();
            }
        }
    }
}

/// Keystream block 0 keys Poly1305; the data takes blocks 1 onwards.
fn all_blocks(job: &Job) -> Range<usize> {
    0..1 + job.data.len().div_ceil(64)
}

/// The tags of `jobs`, given their Poly1305 keys.
#[target_feature(enable = "avx512f,avx512ifma")]
fn hash(jobs: &[Job], keys: &[[u8; 32]; GROUP], tags: &mut [[u8; 16]]) {
    let messages: arrayvec::ArrayVec<Message, GROUP> = jobs
        .iter()
        .zip(keys)
        .map(|(job, key)| Message {
            key,
            aad: job.aad,
            ciphertext: job.data,
        })
        .collect();
    mac_lanes::tags(&messages, tags);
}

/// Consecutive blocks of one job in consecutive lanes of a chunk.
#[derive(Clone, Copy, Default)]
struct Span {
    job: usize,
    block: usize,
    lane: usize,
    count: usize,
}

/// The blocks of one chunk, in lane order.
#[derive(Default)]
struct Lanes {
    spans: [Span; 16],
    len: usize,
    /// Lanes used.
    count: usize,
}

impl Lanes {
    fn spans(&self) -> &[Span] {
        &self.spans[..self.len]
    }
}

/// Computes the keystream blocks `blocks(job)` of every job, sixteen at a
/// time, and hands each chunk to `visit` with the lanes it holds.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
fn keystream(
    state: &State,
    jobs: &mut [Job],
    blocks: impl Fn(&Job) -> Range<usize>,
    mut visit: impl FnMut(&mut [Job], &Chunk, &Lanes),
) {
    let mut chunk = [_mm512_setzero_si512(); 16];
    let mut lanes = Lanes::default();
    let mut next = (0, blocks(&jobs[0]).start);
    loop {
        lanes.len = 0;
        lanes.count = 0;
        while lanes.count < 16 && next.0 < jobs.len() {
            let (job, block) = next;
            let end = blocks(&jobs[job]).end;
            let count = end.saturating_sub(block).min(16 - lanes.count);
            if count > 0 {
                lanes.spans[lanes.len] = Span {
                    job,
                    block,
                    lane: lanes.count,
                    count,
                };
                lanes.len += 1;
                lanes.count += count;
            }
            next = if block + count < end {
                (job, block + count)
            } else {
                (job + 1, jobs.get(job + 1).map_or(0, |j| blocks(j).start))
            };
        }
        if lanes.count == 0 {
            return;
        }
        state.chunk_of(tail(jobs, &lanes), None::<&mut Feed>, &mut chunk);
        visit(jobs, &chunk, &lanes);
    }
}

/// Words 12 to 15 of each lane's block: its counter and its nonce.
#[target_feature(enable = "avx512f")]
fn tail(jobs: &[Job], lanes: &Lanes) -> [__m512i; 4] {
    let lane_numbers = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let mut words = [_mm512_setzero_si512(); 4];
    for span in lanes.spans() {
        let mask = (((1u32 << span.count) - 1) << span.lane) as u16;
        // Lane `span.lane + i` computes block `span.block + i`.
        let first = span.block as i32 - span.lane as i32;
        let counters = _mm512_add_epi32(_mm512_set1_epi32(first), lane_numbers);
        words[0] = _mm512_mask_mov_epi32(words[0], mask, counters);
        let nonce = &jobs[span.job].nonce;
        for (k, w) in nonce.chunks_exact(4).enumerate() {
            let w = i32::from_le_bytes(w.try_into().expect("4 bytes"));
            words[k + 1] = _mm512_mask_mov_epi32(words[k + 1], mask, _mm512_set1_epi32(w));
        }
    }
    words
}

/// Keeps the Poly1305 keys of the jobs whose block 0 is in `ks`.
#[target_feature(enable = "avx512f")]
fn take_keys(keys: &mut [[u8; 32]; GROUP], ks: &Chunk, lanes: &Lanes) {
    for span in lanes.spans() {
        if span.block == 0 {
            keys[span.job] = chacha20::poly_key(ks[span.lane]);
        }
    }
}

/// Applies the data blocks of `ks` to their jobs.
#[target_feature(enable = "avx512f,avx512bw")]
fn apply(jobs: &mut [Job], ks: &Chunk, lanes: &Lanes) {
    for span in lanes.spans() {
        let job = &mut jobs[span.job];
        // Data block b is keystream block b + 1.
        let skip = usize::from(span.block == 0);
        let start = (span.block + skip).saturating_sub(1) * 64;
        let end = job.data.len().min((span.block + span.count - 1) * 64);
        if start < end {
            let lanes = span.lane + skip..span.lane + span.count;
            chacha20::xor(&ks[lanes], &mut job.data[start..end]);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::tests::ours;
    use crate::key::{AeadKey, SecretKey};

    use super::*;

    /// One packet: nonce, associated data, plaintext, and whether to bend
    /// one bit of its sealed form before opening.
    type Packet = ([u8; 12], Vec<u8>, Vec<u8>, Option<usize>);

    /// A job per packet over its data and tag.
    fn jobs_for<'a>(
        packets: &'a [Packet],
        data: &'a mut [Vec<u8>],
        tags: &'a mut [[u8; 16]],
    ) -> Vec<Job<'a>> {
        packets
            .iter()
            .zip(data.iter_mut().zip(tags.iter_mut()))
            .map(|((nonce, aad, ..), (d, t))| Job::new(*nonce, aad, d, t))
            .collect()
    }

    /// Seals `packets` together and checks every byte and tag against ring
    /// one by one; opens them together after bending the marked ones and
    /// checks that exactly those fail, left as they came, and that the
    /// others give back their plaintext.
    fn together_as_ring_one_by_one(key: [u8; 32], packets: &[Packet]) {
        let Some(aead) = ours(&key) else { return };
        let ring = AeadKey::with_ring(&SecretKey::from_bytes(key));
        let mut data: Vec<Vec<u8>> = packets.iter().map(|p| p.2.clone()).collect();
        let mut tags = vec![[0u8; 16]; packets.len()];
        let mut jobs = jobs_for(packets, &mut data, &mut tags);
        aead.seal_many(&mut jobs);
        drop(jobs);
        for (i, (nonce, aad, plain, _)) in packets.iter().enumerate() {
            let mut expected = plain.clone();
            let tag = ring.seal(*nonce, aad, &mut expected);
            assert_eq!(
                data[i],
                expected,
                "ciphertext of packet {i}, {} bytes",
                plain.len()
            );
            assert_eq!(tags[i], tag, "tag of packet {i}, {} bytes", plain.len());
        }

        for (i, (.., bend)) in packets.iter().enumerate() {
            if let Some(bit) = bend {
                // Bits past the data bend the tag.
                let byte = bit / 8 % (data[i].len() + 16);
                let mask = 1 << (bit % 8);
                match data[i].get_mut(byte) {
                    Some(b) => *b ^= mask,
                    None => tags[i][byte - data[i].len()] ^= mask,
                }
            }
        }
        let sealed = data.clone();
        let mut jobs = jobs_for(packets, &mut data, &mut tags);
        aead.open_many(&mut jobs);
        let authentic: Vec<bool> = jobs.iter().map(|j| j.authentic).collect();
        drop(jobs);
        for (i, (_, _, plain, bend)) in packets.iter().enumerate() {
            if bend.is_some() {
                assert!(!authentic[i], "bent packet {i} was taken as authentic");
                assert_eq!(data[i], sealed[i], "bent packet {i} is left as it came");
            } else {
                assert!(
                    authentic[i],
                    "packet {i} ({} bytes) failed to open",
                    plain.len()
                );
                assert_eq!(&data[i], plain, "plaintext of packet {i}");
            }
        }
    }

    /// Every length up to two strides and past a chunk, one batch, in
    /// several groups, with all-ones key and bytes where carries are
    /// largest; every fifth packet bent.
    #[test]
    fn every_length_in_one_batch_matches_ring() {
        let lengths = (0..=300).chain([1023, 1024, 1025, 1400, 2200, 4200]);
        let packets: Vec<Packet> = lengths
            .enumerate()
            .map(|(i, len)| {
                let nonce = [
                    0xff, 0xff, 0xff, 0xff, i as u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
                ];
                let bend = (i % 5 == 4).then_some(i * 37);
                (nonce, vec![0xff; i % 20], vec![0xff; len], bend)
            })
            .collect();
        together_as_ring_one_by_one([0xff; 32], &packets);
    }

    fn packet() -> impl Strategy<Value = Packet> {
        (
            any::<[u8; 12]>(),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..1600),
            proptest::option::weighted(0.2, any::<usize>()),
        )
    }

    proptest! {
        #[test]
        fn random_batches_match_ring(
            key in any::<[u8; 32]>(),
            packets in proptest::collection::vec(packet(), 0..40),
        ) {
            together_as_ring_one_by_one(key, &packets);
        }
    }
}
