//! Poly1305 of many messages at once, one message per lane of eight. Each
//! lane runs its own message's Horner chain with its own r, so no powers
//! of r are needed and a lane's tag is whole when its message ends; the
//! lane then takes the next message. Per message this saves the seven
//! multiplications for r^2..r^8 and the joining of lanes that hashing one
//! message across eight lanes pays, which at packet sizes cost a fifth of
//! the work. A step loads one block from each lane's message; vector
//! gathers measured slower than the eight loads.

use std::arch::x86_64::*;

use super::poly1305::{Lanes, Limbs, Multiplier, add, from_halves, mul, split_key};

/// One message: its Poly1305 key (keystream block 0), the associated data
/// and the ciphertext, hashed as RFC 8439's AEAD construction does.
pub(super) struct Message<'a> {
    pub(super) key: &'a [u8; 32],
    pub(super) aad: &'a [u8],
    pub(super) ciphertext: &'a [u8],
}

const LANES: usize = 8;

/// The blocks left in an idle lane's run: never reached.
const IDLE: usize = usize::MAX;

/// The tag of each of `messages` into `tags`.
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn tags(messages: &[Message], tags: &mut [[u8; 16]]) {
    assert_eq!(messages.len(), tags.len(), "a tag per message");
    let zero = _mm512_setzero_si512();
    let mut hasher = Hasher {
        messages,
        taken: 0,
        feeders: [Feeder::default(); LANES],
        h: Lanes([zero; 3]),
        r: Multiplier {
            r: [zero; 3],
            s1: zero,
            s2: zero,
        },
        at: [std::ptr::null(); LANES],
        left: [IDLE; LANES],
    };
    for lane in 0..LANES {
        hasher.take(lane);
    }
    while hasher.absorb() {
        hasher.next_runs(tags);
    }
}

/// The lanes, each hashing a message or idle.
struct Hasher<'m, 'a> {
    messages: &'m [Message<'a>],
    /// Messages handed to lanes so far.
    taken: usize,
    feeders: [Feeder; LANES],
    h: Lanes,
    r: Multiplier,
    /// Each lane's next block, and how many blocks are left in its run.
    at: [*const u8; LANES],
    left: [usize; LANES],
}

impl Hasher<'_, '_> {
    /// Absorbs blocks in every lane until the first run ends; false if
    /// every lane is idle.
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn absorb(&mut self) -> bool {
        let busy = (0..LANES).find(|&lane| self.left[lane] != IDLE);
        let Some(busy) = busy else { return false };
        let steps = self.left.into_iter().min().expect("lanes");
        // Idle lanes hash a busy lane's blocks, into sums nobody reads.
        let at = std::array::from_fn::<_, LANES, _>(|lane| match self.left[lane] {
            IDLE => self.at[busy],
            _ => self.at[lane],
        });
        let (mut h, r) = (self.h, self.r);
        for step in 0..steps {
            // SAFETY: each busy lane, and so each lane, has `steps` blocks
            // of 16 readable bytes from `at`: whole blocks of a message's
            // associated data or ciphertext, or its feeder's staged blocks.
            let block =
                |lane: usize| unsafe { _mm_loadu_si128(at[lane].wrapping_add(16 * step).cast()) };
            let four = |first: usize| {
                let v = _mm512_castsi128_si512(block(first));
                let v = _mm512_inserti32x4::<1>(v, block(first + 1));
                let v = _mm512_inserti32x4::<2>(v, block(first + 2));
                _mm512_inserti32x4::<3>(v, block(first + 3))
            };
            h = mul(add(h, from_halves(four(0), four(4))), &r);
        }
        self.h = h;
        for lane in 0..LANES {
            if self.left[lane] != IDLE {
                self.at[lane] = self.at[lane].wrapping_add(16 * steps);
                self.left[lane] -= steps;
            }
        }
        true
    }

    /// Moves each lane whose run ended to its next run; a lane whose
    /// message has none left writes its tag and takes the next message.
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn next_runs(&mut self, tags: &mut [[u8; 16]]) {
        for lane in 0..LANES {
            if self.left[lane] != 0 {
                continue;
            }
            let feeder = &mut self.feeders[lane];
            if let Some((at, blocks)) = feeder.next_run() {
                (self.at[lane], self.left[lane]) = (at, blocks);
                continue;
            }
            let (message, s) = (feeder.message, feeder.s);
            let h = Limbs(self.h.0.map(|limb| {
                let mut all = [0u64; LANES];
                // SAFETY: `all` holds eight u64.
                unsafe { _mm512_storeu_si512(all.as_mut_ptr().cast(), limb) };
                all[lane]
            }));
            tags[message] = h.tag(s);
            self.take(lane);
        }
    }

    /// Gives `lane` the next message, or leaves it idle if there is none.
    #[target_feature(enable = "avx512f")]
    fn take(&mut self, lane: usize) {
        let messages = self.messages;
        let Some(message) = messages.get(self.taken) else {
            (self.at[lane], self.left[lane]) = (std::ptr::null(), IDLE);
            return;
        };
        let feeder = &mut self.feeders[lane];
        let r = feeder.load(self.taken, message);
        (self.at[lane], self.left[lane]) =
            feeder.next_run().expect("a message has its lengths block");
        self.taken += 1;
        let set = |v: __m512i, x: u64| _mm512_mask_set1_epi64(v, 1 << lane, x as i64);
        self.h = Lanes(self.h.0.map(|limb| set(limb, 0)));
        self.r = Multiplier {
            r: [0, 1, 2].map(|i| set(self.r.r[i], r.0[i])),
            s1: set(self.r.s1, 20 * r.0[1]),
            s2: set(self.r.s2, 20 * r.0[2]),
        };
    }
}

/// One lane's message as runs of whole 16-byte blocks in memory: the
/// associated data's, its zero-padded end, the ciphertext's, then its
/// zero-padded end and the lengths block. The padded ends are copied here
/// so that no lane reads past a message's bytes.
#[derive(Clone, Copy)]
struct Feeder {
    message: usize,
    s: u128,
    /// (address, blocks) of each run, and the next one to hand out.
    runs: [(*const u8, usize); 4],
    len: usize,
    next: usize,
    /// The end of the associated data, the end of the ciphertext and the
    /// lengths block.
    staged: [[u8; 16]; 3],
}

impl Default for Feeder {
    fn default() -> Feeder {
        Feeder {
            message: 0,
            s: 0,
            runs: [(std::ptr::null(), 0); 4],
            len: 0,
            next: 0,
            staged: [[0; 16]; 3],
        }
    }
}

impl Feeder {
    /// Starts on message number `index`; returns its r.
    fn load(&mut self, index: usize, message: &Message) -> Limbs {
        let (r, s) = split_key(message.key);
        self.message = index;
        self.s = s;
        self.len = 0;
        self.next = 0;
        let (aad, ct) = (message.aad, message.ciphertext);
        self.staged[2][..8].copy_from_slice(&(aad.len() as u64).to_le_bytes());
        self.staged[2][8..].copy_from_slice(&(ct.len() as u64).to_le_bytes());
        self.push(aad.as_ptr(), aad.len() / 16);
        if self.stage_end(0, aad) {
            self.push(self.staged[0].as_ptr(), 1);
        }
        self.push(ct.as_ptr(), ct.len() / 16);
        if self.stage_end(1, ct) {
            // The padded end and the lengths block are adjacent.
            self.push(self.staged[1].as_ptr(), 2);
        } else {
            self.push(self.staged[2].as_ptr(), 1);
        }
        r
    }

    /// Copies the partial last block of `bytes`, zero-padded, into staged
    /// block `slot`; false if there is none.
    fn stage_end(&mut self, slot: usize, bytes: &[u8]) -> bool {
        let end = &bytes[bytes.len() / 16 * 16..];
        let block = &mut self.staged[slot];
        block.fill(0);
        block[..end.len()].copy_from_slice(end);
        !end.is_empty()
    }

    fn push(&mut self, at: *const u8, blocks: usize) {
        if blocks > 0 {
            self.runs[self.len] = (at, blocks);
            self.len += 1;
        }
    }

    fn next_run(&mut self) -> Option<(*const u8, usize)> {
        let run = self.runs[..self.len].get(self.next).copied();
        self.next += 1;
        run
    }
}
