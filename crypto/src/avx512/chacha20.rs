//! ChaCha20 (RFC 8439) keystream, sixteen blocks at a time: each 32-bit
//! lane of a 512-bit register carries one block, so the rounds run on
//! sixteen blocks with no shuffles, and one transpose at the end puts each
//! block's 64 bytes back together.

use std::arch::x86_64::*;

/// Work woven between the double rounds, one step after each: Poly1305's
/// steps are bound by latency, the rounds by throughput, so each fills the
/// other's gaps.
pub(super) trait Step {
    /// # Safety
    /// The CPU must have AVX-512 F, BW and IFMA.
    unsafe fn step(&mut self);
}

/// 16 blocks of 64 bytes; block `i` of the chunk is `ks[i]`.
pub(super) type Chunk = [__m512i; 16];

pub(super) const CHUNK_BYTES: usize = 1024;

/// The (a, b, c, d) words of the quarter rounds of a double round.
const COLUMNS: [[usize; 4]; 4] = [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]];
const DIAGONALS: [[usize; 4]; 4] = [[0, 5, 10, 15], [1, 6, 11, 12], [2, 7, 8, 13], [3, 4, 9, 14]];

/// The twenty rounds on sixteen registers of one state word each, with
/// the given 32-bit lane operations. A macro, so that each register width
/// gets the same code and the registers never leave the register file (a
/// function taking them is not reliably inlined and then spills them all
/// on every call). Each step runs on four quarter rounds at once so that
/// their independent operations can issue together.
macro_rules! rounds {
    ($x:ident, $add:ident, $xor:ident, $rol:ident, $feed:ident) => {{
        macro_rules! step {
            ($qs:expr, $a:literal, $b:literal, $d:literal, $rot:literal) => {
                for q in $qs {
                    $x[q[$a]] = $add($x[q[$a]], $x[q[$b]]);
                }
                for q in $qs {
                    $x[q[$d]] = $rol::<$rot>($xor($x[q[$d]], $x[q[$a]]));
                }
            };
        }
        // Written out rather than looped over, so that every register
        // index is a constant and `$x` can live in registers.
        for _ in 0..10 {
            step!(COLUMNS, 0, 1, 3, 16);
            step!(COLUMNS, 2, 3, 1, 12);
            step!(COLUMNS, 0, 1, 3, 8);
            step!(COLUMNS, 2, 3, 1, 7);
            step!(DIAGONALS, 0, 1, 3, 16);
            step!(DIAGONALS, 2, 3, 1, 12);
            step!(DIAGONALS, 0, 1, 3, 8);
            step!(DIAGONALS, 2, 3, 1, 7);
            if let Some(feed) = $feed.as_mut() {
                // SAFETY: the rounds run only in functions that enable
                // AVX-512 F, BW and IFMA.
                unsafe { feed.step() };
            }
        }
    }};
}

/// The first two transpose stages, alike for every register width: from
/// registers of one state word each to `v[g][j]`, whose 128-bit lane L
/// holds words 4g..4g+4 of block 4L+j.
macro_rules! quads {
    ($x:ident, $zero:ident, $lo32:ident, $hi32:ident, $lo64:ident, $hi64:ident) => {{
        // a[2i] holds words (2i, 2i+1) of blocks 4L and 4L+1 in lane L,
        // a[2i+1] those of blocks 4L+2 and 4L+3.
        let mut a = [$zero(); 16];
        for i in 0..8 {
            a[2 * i] = $lo32($x[2 * i], $x[2 * i + 1]);
            a[2 * i + 1] = $hi32($x[2 * i], $x[2 * i + 1]);
        }
        let mut v = [[$zero(); 4]; 4];
        for (g, quad) in v.iter_mut().enumerate() {
            let (lo, hi) = (&a[4 * g..4 * g + 2], &a[4 * g + 2..4 * g + 4]);
            *quad = [
                $lo64(lo[0], hi[0]),
                $hi64(lo[0], hi[0]),
                $lo64(lo[1], hi[1]),
                $hi64(lo[1], hi[1]),
            ];
        }
        v
    }};
}

/// A ChaCha20 state with its block counter (word 12) left to each call.
#[derive(Clone, Copy)]
pub(super) struct State {
    words: [u32; 16],
}

impl State {
    pub(super) fn new(key: &[u8; 32], nonce: &[u8; 12]) -> State {
        const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];
        let mut words = [0u32; 16];
        words[..4].copy_from_slice(&SIGMA);
        let key_and_nonce = key.chunks_exact(4).chain(nonce.chunks_exact(4));
        for (w, b) in [4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15]
            .into_iter()
            .zip(key_and_nonce)
        {
            words[w] = u32::from_le_bytes(b.try_into().expect("4 bytes"));
        }
        State { words }
    }

    /// The keystream of blocks `counter .. counter + 16`, with a step of
    /// `feed` after each of the ten double rounds. (IFMA is enabled here so
    /// that the steps are inlined.)
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    pub(super) fn chunk<F: Step>(&self, counter: u32, feed: Option<&mut F>) -> Chunk {
        let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        let word = |w: usize| _mm512_set1_epi32(self.words[w] as i32);
        let counters = _mm512_add_epi32(_mm512_set1_epi32(counter as i32), lanes);
        let mut out = [_mm512_setzero_si512(); 16];
        self.chunk_of([counters, word(13), word(14), word(15)], feed, &mut out);
        out
    }

    /// Sixteen keystream blocks whose counter and nonce (words 12 to 15)
    /// are given per lane: `tail[k]` holds word 12 + k of each block.
    /// `feed` as for [`State::chunk`]. Written to `out`: a returned chunk
    /// would be copied.
    #[target_feature(enable = "avx512f,avx512bw,avx512ifma")]
    pub(super) fn chunk_of<F: Step>(
        &self,
        tail: [__m512i; 4],
        mut feed: Option<&mut F>,
        out: &mut Chunk,
    ) {
        let mut init = [_mm512_setzero_si512(); 16];
        for (v, w) in init[..12].iter_mut().zip(self.words) {
            *v = _mm512_set1_epi32(w as i32);
        }
        init[12..].copy_from_slice(&tail);
        let mut x = init;
        rounds!(
            x,
            _mm512_add_epi32,
            _mm512_xor_si512,
            _mm512_rol_epi32,
            feed
        );
        for (w, i) in x.iter_mut().zip(init) {
            *w = _mm512_add_epi32(*w, i);
        }
        transpose(&x, out);
    }

    /// The keystream of blocks `counter .. counter + 8`, computed in
    /// 256-bit registers: for the last few blocks of a packet, at a little
    /// less than the cost of a chunk; `feed` as for [`State::chunk`].
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512ifma")]
    pub(super) fn half_chunk<F: Step>(
        &self,
        counter: u32,
        mut feed: Option<&mut F>,
    ) -> [__m512i; 8] {
        let mut init = [_mm256_setzero_si256(); 16];
        for (v, w) in init.iter_mut().zip(self.words) {
            *v = _mm256_set1_epi32(w as i32);
        }
        let lanes = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
        init[12] = _mm256_add_epi32(_mm256_set1_epi32(counter as i32), lanes);
        let mut x = init;
        rounds!(
            x,
            _mm256_add_epi32,
            _mm256_xor_si256,
            _mm256_rol_epi32,
            feed
        );
        for (w, i) in x.iter_mut().zip(init) {
            *w = _mm256_add_epi32(*w, i);
        }
        let v = quads!(
            x,
            _mm256_setzero_si256,
            _mm256_unpacklo_epi32,
            _mm256_unpackhi_epi32,
            _mm256_unpacklo_epi64,
            _mm256_unpackhi_epi64
        );
        // Block 4L+j is lane L of v[0][j], v[1][j], v[2][j], v[3][j].
        let mut out = [_mm512_setzero_si512(); 8];
        for j in 0..4 {
            let words0_lane0 = _mm256_permute2x128_si256::<0x20>(v[0][j], v[1][j]);
            let words8_lane0 = _mm256_permute2x128_si256::<0x20>(v[2][j], v[3][j]);
            let words0_lane1 = _mm256_permute2x128_si256::<0x31>(v[0][j], v[1][j]);
            let words8_lane1 = _mm256_permute2x128_si256::<0x31>(v[2][j], v[3][j]);
            out[j] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(words0_lane0), words8_lane0);
            out[4 + j] =
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(words0_lane1), words8_lane1);
        }
        out
    }
}

/// Turns sixteen registers of one state word each into sixteen registers
/// of one block each.
#[target_feature(enable = "avx512f")]
fn transpose(x: &[__m512i; 16], out: &mut Chunk) {
    let v = quads!(
        x,
        _mm512_setzero_si512,
        _mm512_unpacklo_epi32,
        _mm512_unpackhi_epi32,
        _mm512_unpacklo_epi64,
        _mm512_unpackhi_epi64
    );
    // A 4x4 transpose of 128-bit lanes for each j: block 4L+j gathers lane
    // L of v[0][j], v[1][j], v[2][j], v[3][j].
    for j in 0..4 {
        let t0 = _mm512_shuffle_i32x4::<0x44>(v[0][j], v[1][j]);
        let t1 = _mm512_shuffle_i32x4::<0xee>(v[0][j], v[1][j]);
        let t2 = _mm512_shuffle_i32x4::<0x44>(v[2][j], v[3][j]);
        let t3 = _mm512_shuffle_i32x4::<0xee>(v[2][j], v[3][j]);
        out[j] = _mm512_shuffle_i32x4::<0x88>(t0, t2);
        out[4 + j] = _mm512_shuffle_i32x4::<0xdd>(t0, t2);
        out[8 + j] = _mm512_shuffle_i32x4::<0x88>(t1, t3);
        out[12 + j] = _mm512_shuffle_i32x4::<0xdd>(t1, t3);
    }
}

/// XORs `data` with the first `data.len()` bytes of the blocks `ks`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn xor(ks: &[__m512i], data: &mut [u8]) {
    assert!(data.len() <= 64 * ks.len(), "more data than keystream");
    let whole = data.len() / 64;
    let mut blocks = data.chunks_exact_mut(64);
    for (block, k) in (&mut blocks).zip(ks) {
        let p = block.as_mut_ptr().cast::<__m512i>();
        // SAFETY: `block` is 64 bytes; unaligned loads and stores.
        unsafe { _mm512_storeu_si512(p, _mm512_xor_si512(_mm512_loadu_si512(p), *k)) };
    }
    let rest = blocks.into_remainder();
    if !rest.is_empty() {
        let k = ks[whole];
        let mask: u64 = (1 << rest.len()) - 1;
        let p = rest.as_mut_ptr().cast::<i8>();
        // SAFETY: the mask covers only the `rest.len()` bytes of `rest`;
        // masked-out bytes are neither read nor written.
        unsafe {
            let v = _mm512_maskz_loadu_epi8(mask, p);
            _mm512_mask_storeu_epi8(p, mask, _mm512_xor_si512(v, k));
        }
    }
}

/// The one-time Poly1305 key: the first 32 bytes of keystream block 0.
#[target_feature(enable = "avx512f")]
pub(super) fn poly_key(block0: __m512i) -> [u8; 32] {
    let mut out = [0u8; 64];
    // SAFETY: `out` is 64 bytes.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), block0) };
    out[..32].try_into().expect("32 bytes")
}
