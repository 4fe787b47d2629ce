//! P-256 points in projective coordinates, eight at a time: the complete addition law of
//! Renes, Costello and Batina (2016, for `a = -3`), and fixed-base multiplication `k·G`
//! from a table of the multiples `d·16^i·G`.
//!
//! The addition law has no exceptional cases (doubling, the identity and inverse points go
//! through the same formula), so a secret scalar never chooses a code path; the table
//! entry for each 4-bit digit is chosen by reading every entry of its window and blending
//! by lane mask, so it never chooses a memory address either.

use super::super::lanes::Lanes;
use super::field::{scatter, splat, Element, Field, LIMBS};

/// One point's coordinates `X, Y, Z` (Montgomery form), as stored in the table.
pub type Coordinates = [[u64; LIMBS]; 3];

/// The multiples `0..16` of one power `16^i·G`.
pub type Window = [Coordinates; 16];

/// Windows of a 256-bit scalar in 4-bit digits.
pub const WINDOWS: usize = 64;

/// Eight points, one per lane.
#[derive(Clone, Copy)]
pub struct Point {
    /// `X` in Montgomery form.
    pub x: Element,
    /// `Y` in Montgomery form.
    pub y: Element,
    /// `Z` in Montgomery form; `x = X/Z`, `y = Y/Z`.
    pub z: Element,
}

impl Point {
    /// The point at infinity `(0 : 1 : 0)`, with `one` the field's `R mod p`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn identity(one: &[u64; LIMBS]) -> Self {
        Point {
            x: splat(&[0; LIMBS]),
            y: splat(one),
            z: splat(&[0; LIMBS]),
        }
    }

    /// The same point in every lane.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn splat(c: &Coordinates) -> Self {
        Point {
            x: splat(&c[0]),
            y: splat(&c[1]),
            z: splat(&c[2]),
        }
    }

    /// Lane 0's coordinates.
    #[inline]
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub fn first_lane(&self) -> Coordinates {
        [
            scatter(&self.x)[0],
            scatter(&self.y)[0],
            scatter(&self.z)[0],
        ]
    }
}

/// `p + q` for any two points (Algorithm 4 of Renes–Costello–Batina: 12 multiplications,
/// 2 by the curve's `b`, given in Montgomery form).
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn add(f: &Field, b: &Element, p: &Point, q: &Point) -> Point {
    let t0 = f.mul(&p.x, &q.x);
    let t1 = f.mul(&p.y, &q.y);
    let t2 = f.mul(&p.z, &q.z);
    // X1·Y2 + X2·Y1
    let t3 = f.sub(
        &f.mul(&f.add(&p.x, &p.y), &f.add(&q.x, &q.y)),
        &f.add(&t0, &t1),
    );
    // Y1·Z2 + Y2·Z1
    let t4 = f.sub(
        &f.mul(&f.add(&p.y, &p.z), &f.add(&q.y, &q.z)),
        &f.add(&t1, &t2),
    );
    // X1·Z2 + X2·Z1
    let xz = f.sub(
        &f.mul(&f.add(&p.x, &p.z), &f.add(&q.x, &q.z)),
        &f.add(&t0, &t2),
    );
    let x3 = f.sub(&xz, &f.mul(b, &t2));
    let x3 = f.add(&x3, &f.add(&x3, &x3));
    let z3 = f.sub(&t1, &x3);
    let x3 = f.add(&t1, &x3);
    let t2 = f.add(&t2, &f.add(&t2, &t2));
    let y3 = f.sub(&f.sub(&f.mul(b, &xz), &t2), &t0);
    let y3 = f.add(&y3, &f.add(&y3, &y3));
    let t0 = f.sub(&f.add(&t0, &f.add(&t0, &t0)), &t2);
    let t1 = f.mul(&t4, &y3);
    let t2 = f.mul(&t0, &y3);
    let y3 = f.add(&f.mul(&x3, &z3), &t2);
    let x3 = f.sub(&f.mul(&t3, &x3), &t1);
    let z3 = f.add(&f.mul(&t4, &z3), &f.mul(&t3, &t0));
    Point {
        x: x3,
        y: y3,
        z: z3,
    }
}

/// The entry of `window` each lane's digit names, reading all sixteen.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
fn select(window: &Window, digits: Lanes) -> Point {
    let mut out = [[Lanes::zero(); LIMBS]; 3];
    for (d, entry) in window.iter().enumerate() {
        let mask = digits.eq_mask(Lanes::splat(d as u64));
        for (coordinate, limbs) in out.iter_mut().zip(entry) {
            for (limb, &value) in coordinate.iter_mut().zip(limbs) {
                *limb = limb.blend(mask, Lanes::splat(value));
            }
        }
    }
    Point {
        x: out[0],
        y: out[1],
        z: out[2],
    }
}

/// `k·G` per lane for scalars given as four little-endian 64-bit words: one table
/// addition per 4-bit digit, the same 64 additions whatever the scalars.
#[inline]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn multiply_base(
    f: &Field,
    b: &Element,
    one: &[u64; LIMBS],
    table: &[Window; WINDOWS],
    scalars: &[[u64; 4]; 8],
) -> Point {
    let mut acc = Point::identity(one);
    for (i, window) in table.iter().enumerate() {
        let (word, shift) = (i / 16, 4 * (i % 16));
        let digits = Lanes::from_array(&scalars.map(|k| (k[word] >> shift) & 0xf));
        acc = add(f, b, &acc, &select(window, digits));
    }
    acc
}

/// The table of `d·16^i·G` for `i < 64`, `d < 16`, from `G` in Montgomery form: each
/// window's entries by repeated addition, the next window's base as its sixteenth
/// multiple.
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn base_table(
    f: &Field,
    b: &Element,
    one: &[u64; LIMBS],
    g: &Coordinates,
) -> Box<[Window; WINDOWS]> {
    let identity = Point::identity(one).first_lane();
    let mut table = Box::new([[identity; 16]; WINDOWS]);
    let mut base = Point::splat(g);
    for window in table.iter_mut() {
        let mut multiple = Point::identity(one);
        for entry in window.iter_mut().skip(1) {
            multiple = add(f, b, &multiple, &base);
            *entry = multiple.first_lane();
        }
        base = add(f, b, &multiple, &base);
    }
    table
}

/// Lane `i` of the result is `points[i]`: how tests feed arbitrary points.
#[cfg(test)]
#[target_feature(enable = "avx512f,avx512ifma")]
pub fn gather_points(points: &[Coordinates; 8]) -> Point {
    use super::field::gather;
    Point {
        x: gather(&points.map(|c| c[0])),
        y: gather(&points.map(|c| c[1])),
        z: gather(&points.map(|c| c[2])),
    }
}
