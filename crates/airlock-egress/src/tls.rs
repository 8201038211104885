//! The server name of a TLS ClientHello, read without consuming it (the
//! bytes are forwarded unchanged once the name is checked).

/// What the first bytes of a stream are.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not all of the first record is here yet.
    Incomplete,
    /// A ClientHello, with its server name (None: no SNI).
    Sni(Option<String>),
    /// Not a TLS handshake record.
    NotTls,
    /// A handshake we refuse to read past.
    Bad(&'static str),
}

struct R<'a> {
    b: &'a [u8],
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

const EXT_SNI: usize = 0;
const EXT_ECH: usize = 0xfe0d;

/// Reads the ClientHello at the start of `b` (one record; a hello split
/// over several records is refused).
pub fn client_hello(b: &[u8]) -> Hello {
    if b.is_empty() {
        return Hello::Incomplete;
    }
    if b[0] != 0x16 {
        return Hello::NotTls;
    }
    if b.len() < 5 {
        return Hello::Incomplete;
    }
    if b[1] != 3 {
        return Hello::NotTls;
    }
    let len = u16::from_be_bytes([b[3], b[4]]) as usize;
    if len > 16384 + 256 {
        return Hello::Bad("a TLS record over the maximum length");
    }
    if b.len() < 5 + len {
        return Hello::Incomplete;
    }
    let mut r = R { b: &b[5..5 + len] };
    match parse(&mut r) {
        Ok(s) => Hello::Sni(s),
        Err(e) => Hello::Bad(e),
    }
}

fn parse(r: &mut R<'_>) -> Result<Option<String>, &'static str> {
    const SHORT: &str = "a ClientHello split over records, or cut short";
    if r.u8().ok_or(SHORT)? != 1 {
        return Err("the first handshake message is not a ClientHello");
    }
    let hlen = r.u24().ok_or(SHORT)?;
    let mut h = R {
        b: r.take(hlen).ok_or(SHORT)?,
    };
    h.take(2 + 32).ok_or(SHORT)?; // version, random
    h.vec8().ok_or(SHORT)?; // session id
    h.vec16().ok_or(SHORT)?; // cipher suites
    h.vec8().ok_or(SHORT)?; // compression
    if h.b.is_empty() {
        return Ok(None);
    }
    let mut exts = R {
        b: h.vec16().ok_or(SHORT)?,
    };
    let mut sni = None;
    let mut seen_sni = false;
    while !exts.b.is_empty() {
        let ty = exts.u16().ok_or(SHORT)?;
        let data = exts.vec16().ok_or(SHORT)?;
        if ty == EXT_ECH {
            return Err("an encrypted ClientHello (ECH) hides the server name");
        }
        if ty != EXT_SNI {
            continue;
        }
        if seen_sni {
            return Err("two server-name extensions");
        }
        seen_sni = true;
        let mut d = R { b: data };
        let mut list = R {
            b: d.vec16().ok_or(SHORT)?,
        };
        if !d.b.is_empty() {
            return Err("bytes after the server-name list");
        }
        while !list.b.is_empty() {
            let kind = list.u8().ok_or(SHORT)?;
            let name = list.vec16().ok_or(SHORT)?;
            if kind != 0 {
                continue;
            }
            if sni.is_some() {
                return Err("two host names in the server-name extension");
            }
            let s = std::str::from_utf8(name).map_err(|_| "a server name that is not text")?;
            sni = Some(s.to_string());
        }
    }
    Ok(sni)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given extensions.
    pub fn hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut e = Vec::new();
        for (t, d) in exts {
            e.extend_from_slice(&t.to_be_bytes());
            e.extend_from_slice(&(d.len() as u16).to_be_bytes());
            e.extend_from_slice(d);
        }
        let mut h = vec![3, 3];
        h.extend_from_slice(&[7; 32]);
        h.push(0);
        h.extend_from_slice(&[0, 2, 0x13, 0x01]);
        h.extend_from_slice(&[1, 0]);
        h.extend_from_slice(&(e.len() as u16).to_be_bytes());
        h.extend_from_slice(&e);
        let mut hs = vec![1];
        hs.extend_from_slice(&(h.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&h);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut l = vec![0];
        l.extend_from_slice(&(name.len() as u16).to_be_bytes());
        l.extend_from_slice(name.as_bytes());
        let mut d = (l.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(&l);
        (0, d)
    }

    #[test]
    fn reads_sni() {
        let h = hello(&[(10, vec![0, 2, 0, 29]), sni("example.com")]);
        assert_eq!(client_hello(&h), Hello::Sni(Some("example.com".into())));
        for cut in 0..h.len() {
            assert_eq!(client_hello(&h[..cut]), Hello::Incomplete, "{cut}");
        }
        assert_eq!(client_hello(&hello(&[])), Hello::Sni(None));
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert!(matches!(
            client_hello(&hello(&[sni("a.com"), sni("b.com")])),
            Hello::Bad(_)
        ));
        assert!(matches!(
            client_hello(&hello(&[sni("a.com"), (0xfe0d, vec![1, 2, 3])])),
            Hello::Bad(_)
        ));
    }
}
