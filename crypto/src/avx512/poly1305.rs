//! Poly1305 (RFC 8439) in radix 2^44: three limbs of 44, 44 and 42 bits,
//! so that the AVX-512 IFMA instructions (52-bit multiply-add) can hash
//! eight blocks per step, each lane a Horner accumulator over every eighth
//! block, joined at the end by multiplying lane j by r^(8-j). That is the
//! form for one message; many at once take a lane each ([`super::mac_lanes`]),
//! with the same vector arithmetic. The scalar code (u128 products) serves
//! the key powers, the associated data and messages too short for the lanes
//! to pay.

use std::arch::x86_64::*;

use super::chacha20::Step;

const MASK44: u64 = (1 << 44) - 1;
const MASK42: u64 = (1 << 42) - 1;
/// Bit 128 of a block (its padding 0x01 byte) sits at bit 40 of limb 2.
const HIBIT: u64 = 1 << 40;
/// Eight blocks per vector step.
pub(super) const STRIDE: usize = 128;

/// A number mod 2^130 - 5 in three limbs; between operations limbs stay
/// below 2^45 (limb 2 below 2^43).
#[derive(Clone, Copy, Default)]
pub(super) struct Limbs(pub(super) [u64; 3]);

impl Limbs {
    /// A 16-byte block with its padding bit.
    fn block(b: &[u8; 16]) -> Limbs {
        let lo = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let hi = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        Limbs([
            lo & MASK44,
            ((lo >> 44) | (hi << 20)) & MASK44,
            (hi >> 24) | HIBIT,
        ])
    }

    fn add(self, o: Limbs) -> Limbs {
        Limbs([self.0[0] + o.0[0], self.0[1] + o.0[1], self.0[2] + o.0[2]])
    }

    /// self * r mod p, partly reduced. 2^132 = 4 * 2^130 = 20 (mod p), so
    /// products reaching limb 3 or 4 wrap round with a factor of 20.
    fn mul(self, r: Limbs) -> Limbs {
        let [h0, h1, h2] = self.0.map(u128::from);
        let [r0, r1, r2] = r.0.map(u128::from);
        let (s1, s2) = (r1 * 20, r2 * 20);
        let d0 = h0 * r0 + h1 * s2 + h2 * s1;
        let d1 = h0 * r1 + h1 * r0 + h2 * s2;
        let d2 = h0 * r2 + h1 * r1 + h2 * r0;
        carry([d0, d1, d2])
    }

    /// The tag: the value mod p, fully reduced, plus `s`, mod 2^128.
    pub(super) fn tag(self, s: u128) -> [u8; 16] {
        let Limbs([mut h0, mut h1, mut h2]) = carry(self.0.map(u128::from));
        // One more pass leaves h < 2^130 + small; carry limb 1 again.
        let c = h1 >> 44;
        h1 &= MASK44;
        h2 += c;
        let c = h2 >> 42;
        h2 &= MASK42;
        h0 += c * 5;
        let c = h0 >> 44;
        h0 &= MASK44;
        h1 += c;
        let c = h1 >> 44;
        h1 &= MASK44;
        h2 += c;
        // Now h < 2^130. Subtract p if h >= p, i.e. if h + 5 >= 2^130,
        // choosing by mask rather than branch.
        let mut g0 = h0 + 5;
        let c = g0 >> 44;
        g0 &= MASK44;
        let mut g1 = h1 + c;
        let c = g1 >> 44;
        g1 &= MASK44;
        let g2 = h2 + c;
        let use_g = 0u64.wrapping_sub(g2 >> 42);
        let g2 = g2 & MASK42;
        let pick = |h: u64, g: u64| (h & !use_g) | (g & use_g);
        let (h0, h1, h2) = (pick(h0, g0), pick(h1, g1), pick(h2, g2));
        let h = u128::from(h0) | (u128::from(h1) << 44) | (u128::from(h2) << 88);
        h.wrapping_add(s).to_le_bytes()
    }
}

/// Carries a sum of products back into limbs: the result's limbs are
/// below 2^44 + 2^16 (limb 2 below 2^42).
fn carry([d0, d1, d2]: [u128; 3]) -> Limbs {
    let d1 = d1 + (d0 >> 44);
    let d2 = d2 + (d1 >> 44);
    let c = (d2 >> 42) as u64;
    let h0 = (d0 as u64 & MASK44) + c * 5;
    let h1 = (d1 as u64 & MASK44) + (h0 >> 44);
    Limbs([h0 & MASK44, h1, d2 as u64 & MASK42])
}

/// The key's r (clamped) and s.
pub(super) fn split_key(key: &[u8; 32]) -> (Limbs, u128) {
    let r = u128::from_le_bytes(key[..16].try_into().expect("16 bytes"))
        & 0x0fff_fffc_0fff_fffc_0fff_fffc_0fff_ffff;
    let s = u128::from_le_bytes(key[16..].try_into().expect("16 bytes"));
    let r = Limbs([
        r as u64 & MASK44,
        (r >> 44) as u64 & MASK44,
        (r >> 88) as u64,
    ]);
    (r, s)
}

/// Poly1305 over RFC 8439's AEAD input: `aad` and the ciphertext, both
/// zero-padded to whole blocks, then a block of their lengths.
///
/// The ciphertext comes in two parts: whole 128-byte strides from its start
/// through [`Mac::stride`], each one eight blocks for the vector lanes, as
/// soon as they are final; then the rest through [`Mac::finish`].
pub(super) struct Mac {
    h: Limbs,
    r: Limbs,
    s: u128,
    aad_len: usize,
    /// r^1 ..= r^8, once the first stride came.
    powers: [Limbs; 8],
    acc: Option<Lanes>,
    strides: usize,
    /// The blocks left for [`Mac::last`], as bytes, and how many.
    tail: [__m512i; 2],
    tail_blocks: usize,
}

impl Mac {
    pub(super) fn new(key: &[u8; 32], aad: &[u8]) -> Mac {
        let (r, s) = split_key(key);
        let mut h = Limbs::default();
        for block in padded_blocks(aad) {
            h = h.add(Limbs::block(&block)).mul(r);
        }
        Mac {
            h,
            r,
            s,
            aad_len: aad.len(),
            powers: [Limbs::default(); 8],
            acc: None,
            strides: 0,
            // SAFETY: all zeros is a valid __m512i.
            tail: unsafe { std::mem::zeroed() },
            tail_blocks: 0,
        }
    }

    /// Absorbs the next eight blocks of ciphertext.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) fn stride(&mut self, bytes: &[u8]) {
        let blocks = load8(bytes);
        self.strides += 1;
        self.acc = Some(match self.acc {
            None => self.first_stride(blocks),
            Some(acc) => add(mul(acc, &Multiplier::all(self.powers[7])), blocks),
        });
    }

    /// The lanes after the first stride, with the powers of r made for the
    /// rest. Kept out of line so that [`Mac::stride`] stays small enough to
    /// be inlined into the ChaCha20 rounds.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn first_stride(&mut self, blocks: Lanes) -> Lanes {
        self.powers = powers_of(self.r);
        add(blocks, h_in_lane(self.h, 0))
    }

    /// The tag, given the ciphertext after the strides.
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    pub(super) fn finish(&mut self, rest: &[u8]) -> [u8; 16] {
        self.close(rest);
        self.last();
        self.tag()
    }

    /// Takes the ciphertext after the strides: in the lanes, the blocks
    /// left are it, zero-padded, and the lengths block (1 to 9 blocks), of
    /// which a full stride is absorbed now and the rest by [`Mac::last`];
    /// without lanes, they are all absorbed now.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    fn close(&mut self, rest: &[u8]) {
        let ct_len = self.strides * STRIDE + rest.len();
        let mut lengths = [0u8; 16];
        lengths[..8].copy_from_slice(&(self.aad_len as u64).to_le_bytes());
        lengths[8..].copy_from_slice(&(ct_len as u64).to_le_bytes());
        let Some(acc) = self.acc else {
            for block in padded_blocks(rest).chain([lengths]) {
                self.h = self.h.add(Limbs::block(&block)).mul(self.r);
            }
            self.tail_blocks = 0;
            return;
        };
        debug_assert!(rest.len() < STRIDE);
        // The rest, zero-padded, in two vectors: masked loads, because
        // bytes gathered through memory would stall the vector reads.
        let mask = |skip: usize| u64::MAX >> (64 - rest.len().saturating_sub(skip).min(64)) as u32;
        let mask = |skip: usize| if rest.len() > skip { mask(skip) } else { 0 };
        // SAFETY: the masks cover only bytes of `rest`; masked-out bytes
        // are not read.
        let (mut lo, mut hi) = unsafe {
            (
                _mm512_maskz_loadu_epi8(mask(0), rest.as_ptr().cast()),
                _mm512_maskz_loadu_epi8(mask(64), rest.as_ptr().wrapping_add(64).cast()),
            )
        };
        // SAFETY: `lengths` is 16 bytes.
        let lengths = unsafe { _mm_loadu_si128(lengths.as_ptr().cast()) };
        let lengths_block = rest.len().div_ceil(16);
        if lengths_block == 8 {
            self.acc = Some(add(
                mul(acc, &Multiplier::all(self.powers[7])),
                from_halves(lo, hi),
            ));
            self.tail = [_mm512_castsi128_si512(lengths), _mm512_setzero_si512()];
            self.tail_blocks = 1;
            return;
        }
        let lane = |block: usize| 0xf_u16 << (4 * (block % 4));
        if lengths_block < 4 {
            lo = _mm512_mask_broadcast_i32x4(lo, lane(lengths_block), lengths);
        } else {
            hi = _mm512_mask_broadcast_i32x4(hi, lane(lengths_block), lengths);
        }
        self.tail = [lo, hi];
        self.tail_blocks = lengths_block + 1;
    }

    /// Absorbs the m blocks left (1 to 8) into the top m lanes, after the
    /// others were multiplied by r^m instead of r^8: every block then has
    /// the power of r it has in the plain sequential evaluation, once lane
    /// j is multiplied by r^(8-j) in [`Mac::tag`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn last(&mut self) {
        let (Some(acc), m) = (self.acc, self.tail_blocks) else {
            return;
        };
        let blocks = from_halves(self.tail[0], self.tail[1]);
        // Block i goes to lane 8 - m + i; the lanes below it stay empty.
        let first_lane = 8 - m;
        let from = _mm512_sub_epi64(
            _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi64(first_lane as i64),
        );
        let mask = 0xffu8 << first_lane;
        let blocks = Lanes(
            blocks
                .0
                .map(|limb| _mm512_maskz_permutexvar_epi64(mask, from, limb)),
        );
        self.acc = Some(add(mul(acc, &Multiplier::all(self.powers[m - 1])), blocks));
    }

    /// The tag, once [`Mac::close`] and [`Mac::last`] are done.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    fn tag(&self) -> [u8; 16] {
        let h = match self.acc {
            None => self.h,
            Some(acc) => {
                let acc = mul(acc, &Multiplier::descending(&self.powers));
                let sum = |k: usize| _mm512_reduce_add_epi64(acc.0[k]) as u64;
                // Eight lanes below 2^46 each sum to below 2^49: carry once
                // more.
                carry([sum(0), sum(1), sum(2)].map(u128::from))
            }
        };
        h.tag(self.s)
    }
}

/// Hashes the strides of `data` up to `limit` into a [`Mac`], one per
/// call of [`Feed::step`]: the ChaCha20 rounds call it between their
/// double rounds.
pub(super) struct Feed<'a> {
    pub(super) mac: &'a mut Mac,
    pub(super) data: &'a [u8],
    pub(super) absorbed: usize,
    pub(super) limit: usize,
}

impl Step for Feed<'_> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    unsafe fn step(&mut self) {
        if self.absorbed + STRIDE <= self.limit {
            self.mac
                .stride(&self.data[self.absorbed..self.absorbed + STRIDE]);
            self.absorbed += STRIDE;
        }
    }
}

impl Feed<'_> {
    /// Absorbs every stride left up to the limit.
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    pub(super) fn drain(&mut self) {
        while self.absorbed + STRIDE <= self.limit {
            // SAFETY: this function enables the features `step` needs.
            unsafe { self.step() };
        }
    }
}

/// h in lane `lane`, zero elsewhere.
#[inline]
#[target_feature(enable = "avx512f")]
fn h_in_lane(h: Limbs, lane: usize) -> Lanes {
    let limb = |k: usize| _mm512_maskz_mov_epi64(1 << lane, _mm512_set1_epi64(h.0[k] as i64));
    Lanes([limb(0), limb(1), limb(2)])
}

/// `data` in 16-byte blocks, the last one zero-padded.
fn padded_blocks(data: &[u8]) -> impl Iterator<Item = [u8; 16]> + '_ {
    data.chunks(16).map(|c| {
        let mut b = [0u8; 16];
        b[..c.len()].copy_from_slice(c);
        b
    })
}

fn powers_of(r: Limbs) -> [Limbs; 8] {
    let r2 = r.mul(r);
    let r3 = r2.mul(r);
    let r4 = r2.mul(r2);
    [r, r2, r3, r4, r4.mul(r), r4.mul(r2), r4.mul(r3), r4.mul(r4)]
}

/// Eight lanes of limbs: `l[k]` holds limb k of each lane.
#[derive(Clone, Copy)]
pub(super) struct Lanes(pub(super) [__m512i; 3]);

/// A multiplier in lanes, with 20 * limb 1 and 20 * limb 2 ready.
#[derive(Clone, Copy)]
pub(super) struct Multiplier {
    pub(super) r: [__m512i; 3],
    pub(super) s1: __m512i,
    pub(super) s2: __m512i,
}

impl Multiplier {
    /// `p` in every lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn all(p: Limbs) -> Multiplier {
        let v = |x: u64| _mm512_set1_epi64(x as i64);
        Multiplier {
            r: [v(p.0[0]), v(p.0[1]), v(p.0[2])],
            s1: v(20 * p.0[1]),
            s2: v(20 * p.0[2]),
        }
    }

    /// r^(8-j) in lane j.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn descending(powers: &[Limbs; 8]) -> Multiplier {
        let v = |k: usize, f: u64| {
            let p = |j: usize| (powers[7 - j].0[k] * f) as i64;
            _mm512_set_epi64(p(7), p(6), p(5), p(4), p(3), p(2), p(1), p(0))
        };
        Multiplier {
            r: [v(0, 1), v(1, 1), v(2, 1)],
            s1: v(1, 20),
            s2: v(2, 20),
        }
    }
}

/// Eight blocks from 128 bytes: lane j gets block j.
#[inline]
#[target_feature(enable = "avx512f")]
fn load8(bytes: &[u8]) -> Lanes {
    debug_assert_eq!(bytes.len(), STRIDE);
    // SAFETY: `bytes` holds 128 bytes, read unaligned as two vectors.
    let (lo, hi) = unsafe {
        (
            _mm512_loadu_si512(bytes.as_ptr().cast()),
            _mm512_loadu_si512(bytes.as_ptr().add(64).cast()),
        )
    };
    from_halves(lo, hi)
}

/// Eight blocks from their 128 bytes in two vectors.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn from_halves(a: __m512i, b: __m512i) -> Lanes {
    let lo = _mm512_permutex2var_epi64(a, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), b);
    let hi = _mm512_permutex2var_epi64(a, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), b);
    let mask44 = _mm512_set1_epi64(MASK44 as i64);
    Lanes([
        _mm512_and_si512(lo, mask44),
        _mm512_and_si512(
            _mm512_or_si512(_mm512_srli_epi64::<44>(lo), _mm512_slli_epi64::<20>(hi)),
            mask44,
        ),
        _mm512_or_si512(_mm512_srli_epi64::<24>(hi), _mm512_set1_epi64(HIBIT as i64)),
    ])
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn add(a: Lanes, b: Lanes) -> Lanes {
    Lanes(std::array::from_fn(|k| _mm512_add_epi64(a.0[k], b.0[k])))
}

/// a * m in each lane, partly reduced. IFMA gives each product as its low
/// 52 bits and its high 52 bits; a high part of limb k weighs 2^(44k + 52):
/// for k = 0, 1 that is limb k+1 shifted left by 8, for k = 2 it is 2^140 =
/// 5 * 2^10 (mod p) at limb 0.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub(super) fn mul(a: Lanes, m: &Multiplier) -> Lanes {
    let [h0, h1, h2] = a.0;
    let [r0, r1, r2] = m.r;
    let z = _mm512_setzero_si512();
    // Three independent products summed as a tree, not one chain of
    // multiply-adds: this multiply is on the critical path of every step.
    macro_rules! sum3 {
        ($madd:ident, $terms:expr) => {{
            let [(a, b), (c, d), (e, f)] = $terms;
            _mm512_add_epi64(
                _mm512_add_epi64($madd(z, a, b), $madd(z, c, d)),
                $madd(z, e, f),
            )
        }};
    }
    let terms0 = [(h0, r0), (h1, m.s2), (h2, m.s1)];
    let terms1 = [(h0, r1), (h1, r0), (h2, m.s2)];
    let terms2 = [(h0, r2), (h1, r1), (h2, r0)];
    let t0 = sum3!(_mm512_madd52lo_epu64, terms0);
    let t1 = sum3!(_mm512_madd52lo_epu64, terms1);
    let t2 = sum3!(_mm512_madd52lo_epu64, terms2);
    let u0 = sum3!(_mm512_madd52hi_epu64, terms0);
    let u1 = sum3!(_mm512_madd52hi_epu64, terms1);
    let u2 = sum3!(_mm512_madd52hi_epu64, terms2);
    // u2 < 2^38 (h limbs < 2^46 with limb 1 < 2^45 and limb 2 < 2^43,
    // r limbs < 2^44 + 2^13 with limb 2 < 2^42), so 5 * 2^10 * u2 < 2^51
    // is exact in IFMA's low 52 bits; shifts and adds would be folded by
    // the compiler into a slow 64-bit multiply.
    let d0 = _mm512_madd52lo_epu64(t0, u2, _mm512_set1_epi64(5 << 10));
    let d1 = _mm512_add_epi64(t1, _mm512_slli_epi64::<8>(u0));
    let d2 = _mm512_add_epi64(t2, _mm512_slli_epi64::<8>(u1));
    // Carry: limbs end below 2^45 (limb 2 below 2^42).
    let mask44 = _mm512_set1_epi64(MASK44 as i64);
    let d1 = _mm512_add_epi64(d1, _mm512_srli_epi64::<44>(d0));
    let d0 = _mm512_and_si512(d0, mask44);
    let d2 = _mm512_add_epi64(d2, _mm512_srli_epi64::<44>(d1));
    let d1 = _mm512_and_si512(d1, mask44);
    let c = _mm512_srli_epi64::<42>(d2);
    let d2 = _mm512_and_si512(d2, _mm512_set1_epi64(MASK42 as i64));
    let d0 = _mm512_add_epi64(d0, _mm512_add_epi64(c, _mm512_slli_epi64::<2>(c)));
    Lanes([d0, d1, d2])
}
