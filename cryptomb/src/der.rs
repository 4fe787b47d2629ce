//! Reads private keys from DER: the components of an RSA key from PKCS#1
//! `RSAPrivateKey` (RFC 8017 A.1.2) or the PKCS#8 `PrivateKeyInfo` (RFC 5208)
//! that wraps it, only what the CRT private operation needs; and the scalar of
//! a P-256 key from SEC 1 `ECPrivateKey` (RFC 5915) or its PKCS#8 wrapping.

use crate::Error;

/// DER tags this reader meets.
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const SEQUENCE: u8 = 0x30;

const OBJECT_IDENTIFIER: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
/// `[0]` and `[1]`, the explicit tags of `ECPrivateKey`'s parameters and public key.
const CONTEXT_0: u8 = 0xa0;
const CONTEXT_1: u8 = 0xa1;

/// The rsaEncryption algorithm identifier, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// id-ecPublicKey, 1.2.840.10045.2.1.
const EC_PUBLIC_KEY_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// prime256v1 (P-256), 1.2.840.10045.3.1.7.
const PRIME256V1_OID: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The integers of an RSA private key, big-endian without leading zeros.
pub struct RsaComponents<'a> {
    /// Modulus `n`.
    pub n: &'a [u8],
    /// Public exponent `e`.
    pub e: &'a [u8],
    /// First prime `p`.
    pub p: &'a [u8],
    /// Second prime `q`.
    pub q: &'a [u8],
    /// `d mod (p-1)`.
    pub dp: &'a [u8],
    /// `d mod (q-1)`.
    pub dq: &'a [u8],
    /// `q⁻¹ mod p`.
    pub qinv: &'a [u8],
}

/// A cursor over DER bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next element's value, which must carry `tag`.
    fn element(&mut self, tag: u8) -> Result<&'a [u8], Error> {
        let bad = || Error::Key("malformed DER".into());
        let (&found, rest) = self.0.split_first().ok_or_else(bad)?;
        if found != tag {
            return Err(Error::Key(format!(
                "expected DER tag {tag:#04x}, found {found:#04x}"
            )));
        }
        let (&first, rest) = rest.split_first().ok_or_else(bad)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(bad());
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[count..])
        };
        if rest.len() < len {
            return Err(bad());
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(value)
    }

    /// The next INTEGER as an unsigned big-endian magnitude.
    fn unsigned(&mut self) -> Result<&'a [u8], Error> {
        let value = self.element(INTEGER)?;
        if value.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(Error::Key("negative integer in private key".into()));
        }
        let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
        Ok(&value[start..])
    }
}

/// Parses PKCS#1 or PKCS#8 DER into the key's integers.
pub fn rsa_components(der: &[u8]) -> Result<RsaComponents<'_>, Error> {
    let mut outer = Reader(Reader(der).element(SEQUENCE)?);
    outer.unsigned()?;
    let mut key = if outer.0.first() == Some(&SEQUENCE) {
        let mut algorithm = Reader(outer.element(SEQUENCE)?);
        if algorithm.element(0x06)? != RSA_ENCRYPTION_OID {
            return Err(Error::Key("PKCS#8 key is not rsaEncryption".into()));
        }
        let inner = outer.element(OCTET_STRING)?;
        let mut key = Reader(Reader(inner).element(SEQUENCE)?);
        key.unsigned()?;
        key
    } else {
        outer
    };
    let n = key.unsigned()?;
    let e = key.unsigned()?;
    key.unsigned()?;
    Ok(RsaComponents {
        n,
        e,
        p: key.unsigned()?,
        q: key.unsigned()?,
        dp: key.unsigned()?,
        dq: key.unsigned()?,
        qinv: key.unsigned()?,
    })
}

/// What a P-256 private key holds: the secret scalar and, when the key carries it, the
/// uncompressed public point.
pub struct EcComponents<'a> {
    /// The private scalar, big-endian, 32 bytes.
    pub scalar: [u8; 32],
    /// The public key's encoded point, if present.
    pub public: Option<&'a [u8]>,
    /// Whether the key came as PKCS#8 (else SEC 1).
    pub pkcs8: bool,
}

/// Parses a PKCS#8 or SEC 1 P-256 private key. Another curve, or a SEC 1 key that does
/// not name its curve, is refused.
pub fn ec_p256_components(der: &[u8]) -> Result<EcComponents<'_>, Error> {
    let mut outer = Reader(Reader(der).element(SEQUENCE)?);
    outer.unsigned()?;
    if outer.0.first() == Some(&SEQUENCE) {
        let mut algorithm = Reader(outer.element(SEQUENCE)?);
        if algorithm.element(OBJECT_IDENTIFIER)? != EC_PUBLIC_KEY_OID {
            return Err(Error::Key("PKCS#8 key is not an EC key".into()));
        }
        if algorithm.element(OBJECT_IDENTIFIER)? != PRIME256V1_OID {
            return Err(Error::Key("EC key is not on P-256".into()));
        }
        let inner = outer.element(OCTET_STRING)?;
        let mut key = Reader(Reader(inner).element(SEQUENCE)?);
        key.unsigned()?;
        let mut parts = ec_private_key(key, true)?;
        parts.pkcs8 = true;
        return Ok(parts);
    }
    if outer.0.first() != Some(&OCTET_STRING) {
        return Err(Error::Key(
            "not an EC key (neither PKCS#8 nor SEC 1)".into(),
        ));
    }
    ec_private_key(outer, false)
}

/// The rest of an `ECPrivateKey` after its version: the scalar, the optional curve (which
/// must be P-256, and must be there unless `curve_known`) and the optional public key.
fn ec_private_key(mut key: Reader<'_>, curve_known: bool) -> Result<EcComponents<'_>, Error> {
    let secret = key.element(OCTET_STRING)?;
    let mut named_curve = curve_known;
    if key.0.first() == Some(&CONTEXT_0) {
        let mut parameters = Reader(key.element(CONTEXT_0)?);
        if parameters.element(OBJECT_IDENTIFIER)? != PRIME256V1_OID {
            return Err(Error::Key("EC key is not on P-256".into()));
        }
        named_curve = true;
    }
    if !named_curve {
        return Err(Error::Key("SEC 1 EC key does not name its curve".into()));
    }
    if secret.len() > 32 {
        return Err(Error::Key("EC private scalar longer than 32 bytes".into()));
    }
    let mut scalar = [0u8; 32];
    scalar[32 - secret.len()..].copy_from_slice(secret);
    let public = if key.0.first() == Some(&CONTEXT_1) {
        let bits = Reader(key.element(CONTEXT_1)?).element(BIT_STRING)?;
        match bits.split_first() {
            Some((0, point)) => Some(point),
            _ => return Err(Error::Key("malformed EC public key".into())),
        }
    } else {
        None
    };
    Ok(EcComponents {
        scalar,
        public,
        pkcs8: false,
    })
}
