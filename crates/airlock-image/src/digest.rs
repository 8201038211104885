//! `sha256:<hex>` digests, and readers/writers that compute them.

use crate::error::{ImageError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};

/// A sha256 content digest. Only sha256 is accepted: the hex part is
/// exactly 64 lowercase hex digits, so it is always safe as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::BadDigest {
                input: s.to_string(),
                why: "only sha256:<64 hex digits> is supported",
            })?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageError::BadDigest {
                input: s.to_string(),
                why: "the hex part must be 64 lowercase hex digits",
            });
        }
        Ok(Digest(s.to_string()))
    }

    /// A digest from 64 hex digits (e.g. a file name).
    pub fn from_hex(hex: &str) -> Result<Digest> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits, as `docker image ls` shows.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// OCI chain id: ChainID(L0) = DiffID(L0); ChainID(L0..n) =
    /// sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
    pub fn chain(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
        match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{} {}", p.0, diff_id.0).as_bytes()),
        }
    }

    /// The chain id of a list of diff ids (the empty chain gets the digest of
    /// nothing, naming the empty tree).
    pub fn chain_of(diff_ids: &[Digest]) -> Digest {
        let mut c: Option<Digest> = None;
        for d in diff_ids {
            c = Some(Digest::chain(c.as_ref(), d));
        }
        c.unwrap_or_else(|| Digest::of(b""))
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Self> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An incremental sha256.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.0.finalize())))
    }
}

/// Reads through, hashing and counting what passes, and refuses to go past
/// `limit` bytes (a decompression bomb stops here).
pub struct HashReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
    limit: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        HashReader {
            inner,
            hasher: Hasher::new(),
            count: 0,
            limit,
        }
    }
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.count)
    }
}

/// The marker error a [`HashReader`] returns when its limit is passed.
#[derive(Debug)]
pub struct OverLimit(pub u64);

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data exceeds the limit of {} bytes", self.0)
    }
}
impl std::error::Error for OverLimit {}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(OverLimit(self.limit)));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes through, hashing and counting.
pub struct HashWriter<W> {
    pub inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Hasher::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_chain() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.short(), "2cf24dba5fb0");
        assert!(Digest::parse("sha256:../../etc").is_err());
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse(&d.as_str().to_uppercase()).is_err());
        let e = Digest::of(b"x");
        assert_eq!(Digest::chain_of(std::slice::from_ref(&d)), d);
        assert_eq!(
            Digest::chain_of(&[d.clone(), e.clone()]),
            Digest::of(format!("{d} {e}").as_bytes())
        );
    }

    #[test]
    fn hash_reader_limit() {
        let data = vec![7u8; 100];
        let mut r = HashReader::new(&data[..], 50);
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
        let mut r = HashReader::new(&data[..], 100);
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.finish().0, Digest::of(&data));
    }
}
