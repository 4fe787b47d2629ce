//! Modular exponentiation of eight bases by eight exponents.
//!
//! Secret exponents use a fixed 4-bit window over a fixed bit length: the
//! same squarings and multiplications happen whatever the exponents are, and
//! the table entry is chosen by reading all 16 entries and blending by a
//! per-lane mask, so neither memory addresses nor branches depend on them.

use super::lanes::Lanes;
use super::mont::{multiply, square, wipe, Modulus};

/// Window width in bits. Every window reads the whole table, so a 5-bit
/// window's 32 entries (40 KB at 20 limbs) stream through the data cache on
/// every selection; 4 bits costs a quarter more multiplications and
/// measured 1.5% faster for RSA-2048 and 5% for RSA-3072.
const WINDOW: usize = 4;

/// Table entries per window.
const ENTRIES: usize = 1 << WINDOW;

/// `width` bits of a little-endian word array starting at bit `position`.
/// The position is public (it walks the same path for every exponent);
/// `words` must extend at least one word past the last window.
fn bits_at(words: &[u64], position: usize, width: usize) -> u64 {
    let (word, shift) = (position / 64, position % 64);
    let low = words[word] >> shift;
    let high = if shift == 0 {
        0
    } else {
        words[word + 1] << (64 - shift)
    };
    (low | high) & ((1 << width) - 1)
}

/// The table entry each lane's window selects, reading every entry.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn select<const N: usize>(table: &[[Lanes; N]], index: Lanes) -> [Lanes; N] {
    let mut out = [Lanes::zero(); N];
    for (k, entry) in table.iter().enumerate() {
        let mask = index.eq_mask(Lanes::splat(k as u64));
        for j in 0..N {
            out[j] = out[j].blend(mask, entry[j]);
        }
    }
    out
}

/// `base^exponent` in the Montgomery domain, per lane, with secret
/// exponents of `bits` bits (little-endian words, one extra zero word).
/// `base` and `one` (`R mod m`) are in Montgomery form; so is the result,
/// below `2m`. `W` must be `2·N`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn pow_secret<const N: usize, const W: usize>(
    base: &[Lanes; N],
    exponents: [&[u64]; 8],
    bits: usize,
    one: &[Lanes; N],
    m: &Modulus<N>,
) -> [Lanes; N] {
    let mut table = vec![[Lanes::zero(); N]; ENTRIES];
    table[0] = *one;
    table[1] = *base;
    for k in 2..ENTRIES {
        table[k] = multiply::<N, W>(&table[k - 1], base, m);
    }
    let window_at = |position: usize, width: usize| {
        Lanes::from_array(&exponents.map(|words| bits_at(words, position, width)))
    };
    let top = match bits % WINDOW {
        0 => WINDOW,
        rest => rest,
    };
    let mut position = bits - top;
    let mut index = window_at(position, top);
    let mut acc = select(&table, index);
    while position > 0 {
        position -= WINDOW;
        for _ in 0..WINDOW {
            acc = square::<N, W>(&acc, m);
        }
        index = window_at(position, WINDOW);
        let mut entry = select(&table, index);
        acc = multiply::<N, W>(&acc, &entry, m);
        wipe(&mut entry);
    }
    wipe(core::slice::from_mut(&mut index));
    for entry in table.iter_mut() {
        wipe(entry);
    }
    acc
}

/// `base^exponent` in the Montgomery domain for public exponents (RSA's
/// `e`): square-and-multiply, each lane keeping the product only where its
/// own exponent has the bit set, and no multiplication at all for a bit no
/// lane has set (65537 needs two). Branches on the exponents are fine here.
/// `W` must be `2·N`.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn pow_public<const N: usize, const W: usize>(
    base: &[Lanes; N],
    exponents: &[u64; 8],
    one: &[Lanes; N],
    m: &Modulus<N>,
) -> [Lanes; N] {
    let bits = exponents
        .iter()
        .map(|e| 64 - e.leading_zeros())
        .max()
        .unwrap_or(0);
    let mut acc = *one;
    for bit in (0..bits).rev() {
        acc = square::<N, W>(&acc, m);
        let mask = exponents.iter().enumerate().fold(0u8, |mask, (lane, e)| {
            mask | ((((e >> bit) & 1) as u8) << lane)
        });
        if mask != 0 {
            let product = multiply::<N, W>(&acc, base, m);
            for j in 0..N {
                acc[j] = acc[j].blend(mask, product[j]);
            }
        }
    }
    acc
}
