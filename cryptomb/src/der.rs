//! Reads the components of an RSA private key from DER: PKCS#1
//! `RSAPrivateKey` (RFC 8017 A.1.2) or the PKCS#8 `PrivateKeyInfo`
//! (RFC 5208) that wraps it. Only what the CRT private operation needs.

use crate::Error;

/// DER tags this reader meets.
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const SEQUENCE: u8 = 0x30;

/// The rsaEncryption algorithm identifier, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

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
            return Err(Error::Key("negative integer in RSA key".into()));
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
