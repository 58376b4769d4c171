//! Many packets under one key as one stream of ChaCha20 blocks. The
//! sixteen lanes of a chunk are filled across packet boundaries, so a
//! 1400-byte packet costs its 23 blocks instead of a chunk and a half, and
//! the Poly1305 work of earlier blocks is woven into every chunk's rounds,
//! where one packet alone has none to give its first chunk.
//!
//! Poly1305 works through the packets in order, one step at a time. In
//! sealing, a step may hash what the keystream has already encrypted. In
//! opening, it may hash any packet whose key (keystream block 0) is known,
//! and a chunk's keystream is applied only after the next chunk's rounds,
//! once every packet it touches has been hashed and its tag checked: so a
//! forged packet is never decrypted, and is left as it came.

use std::arch::x86_64::*;

use super::chacha20::{self, Chunk, State, Step};
use super::poly1305::{Mac, STRIDE};
use super::{VECTOR_MIN, equal};
use crate::key::Job;

/// Packets per pipeline run: their progress lives on the stack.
const GROUP: usize = 64;

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
        let mut pipeline = Pipeline {
            direction,
            jobs: group,
            keys: [[0; 32]; GROUP],
            keyed: 0,
            applied: [0; GROUP],
            hashing: 0,
            mac: Mac::default(),
            absorbed: 0,
            stage: Stage::Unstarted,
            next: (0, 0),
        };
        pipeline.run(&state);
    }
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

struct Pipeline<'j, 'a> {
    direction: Direction,
    jobs: &'j mut [Job<'a>],
    /// The Poly1305 keys (from keystream block 0) of the first `keyed`
    /// jobs, each wiped once its [`Mac`] is made.
    keys: [[u8; 32]; GROUP],
    keyed: usize,
    /// Bytes of each job's data the keystream has been applied to.
    applied: [usize; GROUP],
    /// The job Poly1305 is on; those before it have their tags.
    hashing: usize,
    /// That job's [`Mac`] once started, the bytes its strides hashed, and
    /// where it stands.
    mac: Mac,
    absorbed: usize,
    stage: Stage,
    /// The next keystream block to compute: (job, block).
    next: (usize, usize),
}

impl Pipeline<'_, '_> {
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
    fn run(&mut self, state: &State) {
        // Two chunks, in turn the one being computed and, in opening, the
        // one before, whose keystream waits for its packets' tags.
        let mut chunks = [[_mm512_setzero_si512(); 16]; 2];
        let mut lanes = [Lanes::default(), Lanes::default()];
        let mut now = 0;
        loop {
            self.next_lanes(&mut lanes[now]);
            let computing = lanes[now].count > 0;
            if computing {
                let tail = self.tail(&lanes[now]);
                state.chunk_of(tail, Some(&mut *self), &mut chunks[now]);
            }
            let before = 1 - now;
            if self.direction == Direction::Open && lanes[before].count > 0 {
                let last = lanes[before].spans()[lanes[before].len - 1].job;
                while self.hashing <= last && self.advance() {}
                debug_assert!(self.hashing > last, "the waiting chunk's tags are checked");
                self.apply(&chunks[before], &lanes[before]);
            }
            if !computing {
                break;
            }
            self.take_keys(&chunks[now], &lanes[now]);
            if self.direction == Direction::Seal {
                self.apply(&chunks[now], &lanes[now]);
            }
            now = before;
        }
        while self.advance() {}
        debug_assert_eq!(self.hashing, self.jobs.len(), "every job has its tag");
    }

    /// The next sixteen keystream blocks to compute, or fewer at the end.
    fn next_lanes(&mut self, lanes: &mut Lanes) {
        lanes.len = 0;
        lanes.count = 0;
        while lanes.count < 16 && self.next.0 < self.jobs.len() {
            let (job, block) = self.next;
            // Block 0 keys Poly1305; the data takes blocks 1 onwards.
            let blocks = 1 + self.jobs[job].data.len().div_ceil(64);
            let count = (blocks - block).min(16 - lanes.count);
            lanes.spans[lanes.len] = Span {
                job,
                block,
                lane: lanes.count,
                count,
            };
            lanes.len += 1;
            lanes.count += count;
            self.next = if block + count < blocks {
                (job, block + count)
            } else {
                (job + 1, 0)
            };
        }
    }

    /// Words 12 to 15 of each lane's block: its counter and its nonce.
    #[target_feature(enable = "avx512f")]
    fn tail(&self, lanes: &Lanes) -> [__m512i; 4] {
        let lane_numbers = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let mut words = [_mm512_setzero_si512(); 4];
        for span in lanes.spans() {
            let mask = (((1u32 << span.count) - 1) << span.lane) as u16;
            // Lane `span.lane + i` computes block `span.block + i`.
            let first = span.block as i32 - span.lane as i32;
            let counters = _mm512_add_epi32(_mm512_set1_epi32(first), lane_numbers);
            words[0] = _mm512_mask_mov_epi32(words[0], mask, counters);
            let nonce = &self.jobs[span.job].nonce;
            for (k, w) in nonce.chunks_exact(4).enumerate() {
                let w = i32::from_le_bytes(w.try_into().expect("4 bytes"));
                words[k + 1] = _mm512_mask_mov_epi32(words[k + 1], mask, _mm512_set1_epi32(w));
            }
        }
        words
    }

    /// Keeps the Poly1305 keys of the packets whose block 0 is in `ks`.
    #[target_feature(enable = "avx512f")]
    fn take_keys(&mut self, ks: &Chunk, lanes: &Lanes) {
        for span in lanes.spans() {
            if span.block == 0 {
                debug_assert_eq!(span.job, self.keyed, "block 0s come in job order");
                self.keys[self.keyed] = chacha20::poly_key(ks[span.lane]);
                self.keyed += 1;
            }
        }
    }

    /// Applies the data blocks of `ks` to their packets, except to forged
    /// ones.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn apply(&mut self, ks: &Chunk, lanes: &Lanes) {
        for span in lanes.spans() {
            let job = &mut self.jobs[span.job];
            if self.direction == Direction::Open && !job.authentic {
                continue;
            }
            // Data block b is keystream block b + 1.
            let skip = usize::from(span.block == 0);
            let start = (span.block + skip).saturating_sub(1) * 64;
            let end = job.data.len().min((span.block + span.count - 1) * 64);
            if start < end {
                let lanes = span.lane + skip..span.lane + span.count;
                chacha20::xor(&ks[lanes], &mut job.data[start..end]);
                self.applied[span.job] = end;
            }
        }
    }

    /// One step of Poly1305 work, if there is one to do now.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    fn advance(&mut self) -> bool {
        let j = self.hashing;
        if j >= self.keyed {
            return false;
        }
        if self.stage == Stage::Unstarted {
            self.start();
            return true;
        }
        let data = &self.jobs[j].data;
        let ready = match self.direction {
            Direction::Seal => self.applied[j],
            Direction::Open => data.len(),
        };
        if data.len() >= VECTOR_MIN && self.absorbed + STRIDE <= ready {
            self.mac
                .stride(&data[self.absorbed..self.absorbed + STRIDE]);
            self.absorbed += STRIDE;
            return true;
        }
        if ready < data.len() {
            return false;
        }
        self.end();
        true
    }

    /// One of the three steps after the strides, each waiting on the one
    /// before, so that the rounds in between hide their latency. Kept out
    /// of line so that [`Pipeline::advance`] is inlined into the rounds.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    fn end(&mut self) {
        match self.stage {
            Stage::Unstarted | Stage::Strides => {
                self.mac
                    .close(&self.jobs[self.hashing].data[self.absorbed..]);
                self.stage = Stage::Closed;
            }
            Stage::Closed => {
                self.mac.last();
                self.stage = Stage::Last;
            }
            Stage::Last => self.finish(),
        }
    }

    /// Makes the [`Mac`] of the job being hashed, and wipes its key.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn start(&mut self) {
        let key = &mut self.keys[self.hashing];
        self.mac.restart(key, self.jobs[self.hashing].aad);
        key.fill(0);
        self.stage = Stage::Strides;
        self.absorbed = 0;
    }

    /// The tag of the job being hashed: written when sealing, checked when
    /// opening.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn finish(&mut self) {
        let job = &mut self.jobs[self.hashing];
        let tag = self.mac.tag();
        match self.direction {
            Direction::Seal => *job.tag = tag,
            Direction::Open => job.authentic = equal(&tag, job.tag),
        }
        self.stage = Stage::Unstarted;
        self.hashing += 1;
    }
}

/// Where the job being hashed stands: its [`Mac`] not made yet, taking
/// strides, or in the three steps of its end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Unstarted,
    Strides,
    Closed,
    Last,
}

impl Step for Pipeline<'_, '_> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    unsafe fn step(&mut self) {
        self.advance();
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
