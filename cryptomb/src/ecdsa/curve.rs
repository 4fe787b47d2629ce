//! P-256's domain parameters (SEC 2 §2.4.2, FIPS 186-4 D.1.2.3), big-endian.

/// Decodes 64 hex digits at compile time.
const fn hex(digits: &str) -> [u8; 32] {
    let text = digits.as_bytes();
    assert!(text.len() == 64, "a P-256 constant has 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 64 {
        let nibble = match text[i] {
            b'0'..=b'9' => text[i] - b'0',
            b'a'..=b'f' => text[i] - b'a' + 10,
            _ => panic!("lowercase hex digits only"),
        };
        out[i / 2] |= nibble << (4 * (1 - i % 2));
        i += 1;
    }
    out
}

/// The field prime `p = 2^256 - 2^224 + 2^192 + 2^96 - 1`.
pub const P: [u8; 32] = hex("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");

/// The order `n` of the base point.
pub const N: [u8; 32] = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");

/// The curve coefficient `b` of `y² = x³ - 3x + b`.
pub const B: [u8; 32] = hex("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b");

/// The base point's `x`.
pub const GX: [u8; 32] = hex("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");

/// The base point's `y`.
pub const GY: [u8; 32] = hex("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
