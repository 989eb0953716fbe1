//! The tar dialect duplicity writes (Python `tarfile`, PAX format) and every
//! dialect it has written (GNU long names, base-256 numbers), hand-rolled
//! because the `tar` crate never emits PAX records and its reader gives no
//! control over duplicity's quirks (top-off garbage after the end marker, a
//! clean EOF with no end marker at all, `hdrcharset=BINARY`).

use std::io::{self, Read};

/// The tar block size: headers and padded entry data are multiples of it.
pub const BLOCK: usize = 512;
/// Python's tarfile RECORDSIZE: archives end on a multiple of this.
pub const RECORD: usize = 20 * BLOCK;

/// Type flag of a regular file.
pub const REGTYPE: u8 = b'0';
/// Type flag of a hard link; duplicity writes none.
pub const LNKTYPE: u8 = b'1';
/// Type flag of a symbolic link.
pub const SYMTYPE: u8 = b'2';
/// Type flag of a character device.
pub const CHRTYPE: u8 = b'3';
/// Type flag of a block device.
pub const BLKTYPE: u8 = b'4';
/// Type flag of a directory.
pub const DIRTYPE: u8 = b'5';
/// Type flag of a named pipe (FIFO).
pub const FIFOTYPE: u8 = b'6';

/// One tar header with long values already resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The entry's path, whole (a long or non-ASCII one comes from a PAX or
    /// GNU long-name record).
    pub name: Vec<u8>,
    /// The type flag (`REGTYPE`, `DIRTYPE`, ...).
    pub typeflag: u8,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// The owner's user id.
    pub uid: u64,
    /// The owner's group id.
    pub gid: u64,
    /// Size of the entry's data in bytes.
    pub size: u64,
    /// Modification time, in seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target (or a hard link's); empty otherwise.
    pub linkname: Vec<u8>,
    /// The owner's user name.
    pub uname: Vec<u8>,
    /// The owner's group name.
    pub gname: Vec<u8>,
    /// Major device number (character and block devices).
    pub devmajor: u32,
    /// Minor device number (character and block devices).
    pub devminor: u32,
    /// PAX records beyond the standard ones (dupr's `DUPR.*` extensions).
    pub extra: Vec<(String, Vec<u8>)>,
}

impl Header {
    /// Append the header block(s) (PAX record entry when needed + ustar) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut binary = false;
        for (key, val, limit) in [
            ("path", &self.name, 100),
            ("linkpath", &self.linkname, 100),
            ("uname", &self.uname, 32),
            ("gname", &self.gname, 32),
        ] {
            if val.len() > limit || !val.is_ascii() {
                binary |= std::str::from_utf8(val).is_err();
                pax.push((key, val.clone()));
            }
        }
        let mut uid = self.uid;
        let mut gid = self.gid;
        let mut size = self.size;
        let mut mtime = self.mtime.max(0) as u64;
        for (key, val, limit) in [
            ("uid", &mut uid, 8u64.pow(7)),
            ("gid", &mut gid, 8u64.pow(7)),
            ("size", &mut size, 8u64.pow(11)),
            ("mtime", &mut mtime, 8u64.pow(11)),
        ] {
            if *val >= limit {
                pax.push((key, val.to_string().into_bytes()));
                *val = 0;
            }
        }
        for (k, v) in &self.extra {
            pax.push((k.as_str(), v.clone()));
        }
        if !pax.is_empty() {
            let mut records = Vec::new();
            if binary {
                records.extend_from_slice(b"21 hdrcharset=BINARY\n");
            }
            for (k, v) in &pax {
                pax_record(&mut records, k, v);
            }
            let ph = Header {
                name: b"././@PaxHeader".to_vec(),
                typeflag: b'x',
                size: records.len() as u64,
                ..Default::default()
            };
            ph.encode_ustar(out, 0, 0, ph.size, 0);
            out.extend_from_slice(&records);
            pad_block(out);
        }
        self.encode_ustar(out, uid, gid, size, mtime);
    }

    fn encode_ustar(&self, out: &mut Vec<u8>, uid: u64, gid: u64, size: u64, mtime: u64) {
        let mut h = [0u8; BLOCK];
        put_str(&mut h[0..100], &self.name);
        put_octal(&mut h[100..108], (self.mode & 0o7777) as u64);
        put_octal(&mut h[108..116], uid);
        put_octal(&mut h[116..124], gid);
        put_octal(&mut h[124..136], size);
        put_octal(&mut h[136..148], mtime);
        h[156] = self.typeflag;
        put_str(&mut h[157..257], &self.linkname);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        put_str(&mut h[265..297], &self.uname);
        put_str(&mut h[297..329], &self.gname);
        if self.typeflag == CHRTYPE || self.typeflag == BLKTYPE {
            put_octal(&mut h[329..337], self.devmajor as u64);
            put_octal(&mut h[337..345], self.devminor as u64);
        }
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let s = format!("{:06o}\0 ", sum);
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
    }
}

fn pax_record(out: &mut Vec<u8>, key: &str, val: &[u8]) {
    // The length prefix counts itself, so iterate to a fixed point.
    let l = key.len() + val.len() + 3;
    let mut p = 0;
    let n = loop {
        let n = l + p.to_string().len();
        if n == p {
            break n;
        }
        p = n;
    };
    out.extend_from_slice(format!("{n} {key}=").as_bytes());
    out.extend_from_slice(val);
    out.push(b'\n');
}

/// Truncate to the field and replace non-ASCII bytes, as Python's
/// `encode("ascii", "replace")` does; the PAX record carries the real value.
fn put_str(field: &mut [u8], s: &[u8]) {
    for (d, &c) in field.iter_mut().zip(s) {
        *d = if c.is_ascii() { c } else { b'?' };
    }
}

fn put_octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{:0width$o}", v, width = digits);
    let b = s.as_bytes();
    // Values that do not fit were moved to PAX by the caller; keep the low digits.
    field[..digits].copy_from_slice(&b[b.len() - digits..]);
    field[digits] = 0;
}

/// NUL-pad `out` to a 512-byte boundary.
pub fn pad_block(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, 0);
    }
}

/// Bytes of zero padding after `size` bytes of entry data.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Streaming tar reader. `next()` skips any unread data of the previous entry;
/// the entry's data is then read through `Read`.
pub struct Reader<R> {
    inner: R,
    remaining: u64,
    pad: usize,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// A reader of the tar stream `inner`.
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            remaining: 0,
            pad: 0,
            done: false,
        }
    }

    /// The underlying stream, wherever the reader left it: just past the
    /// first zero block once `next_header` has returned None at one.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Next header, or None at an all-zero block or a clean EOF on a header
    /// boundary (0.8 volumes have no end marker; gpg volumes may carry
    /// top-off filler after it).
    pub fn next_header(&mut self) -> io::Result<Option<Header>> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut pax_path = None;
        let mut pax_link = None;
        let mut pax_nums: Vec<(String, Vec<u8>)> = Vec::new();
        let mut gnu_name = None;
        let mut gnu_link = None;
        loop {
            let mut blk = [0u8; BLOCK];
            if !read_full_or_eof(&mut self.inner, &mut blk)? {
                self.done = true;
                return Ok(None);
            }
            if blk.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            let mut h = parse_ustar(&blk)?;
            match h.typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    let data = self.read_meta_data(h.size)?;
                    match h.typeflag {
                        b'x' => {
                            for (k, v) in parse_pax(&data)? {
                                match k.as_str() {
                                    "path" => pax_path = Some(v),
                                    "linkpath" => pax_link = Some(v),
                                    _ => pax_nums.push((k, v)),
                                }
                            }
                        }
                        b'L' => gnu_name = Some(trim_nul(&data)),
                        b'K' => gnu_link = Some(trim_nul(&data)),
                        _ => {} // global PAX headers carry nothing duplicity uses
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(n) = gnu_name.take() {
                h.name = n;
            }
            if let Some(l) = gnu_link.take() {
                h.linkname = l;
            }
            if let Some(p) = pax_path.take() {
                h.name = p;
            }
            if let Some(l) = pax_link.take() {
                h.linkname = l;
            }
            for (k, v) in &pax_nums {
                let num = || -> io::Result<u64> {
                    let s = std::str::from_utf8(v).map_err(|_| bad("bad PAX number"))?;
                    let int = s.split('.').next().unwrap_or("");
                    int.parse::<u64>().map_err(|_| bad("bad PAX number"))
                };
                match k.as_str() {
                    "uid" => h.uid = num()?,
                    "gid" => h.gid = num()?,
                    "size" => h.size = num()?,
                    "mtime" => h.mtime = num()? as i64,
                    "uname" => h.uname = v.clone(),
                    "gname" => h.gname = v.clone(),
                    k if k.starts_with("DUPR.") => h.extra.push((k.to_string(), v.clone())),
                    _ => {}
                }
            }
            self.remaining = h.size;
            self.pad = padding(h.size);
            return Ok(Some(h));
        }
    }

    fn read_meta_data(&mut self, size: u64) -> io::Result<Vec<u8>> {
        if size > 16 << 20 {
            return Err(bad("oversized tar metadata entry"));
        }
        let mut data = vec![0u8; size as usize];
        self.inner.read_exact(&mut data)?;
        let mut pad = vec![0u8; padding(size)];
        self.inner.read_exact(&mut pad)?;
        Ok(data)
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.remaining + self.pad as u64;
        if n > 0 {
            let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
            if copied != n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tar entry data truncated",
                ));
            }
        }
        self.remaining = 0;
        self.pad = 0;
        Ok(())
    }

    /// Read the rest of the underlying stream (so a decryptor reaches its
    /// integrity check), discarding it.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(&mut self.inner, &mut io::sink())?;
        Ok(())
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar entry data truncated",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_full_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        Ok(false)
    } else if got < buf.len() {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated tar header",
        ))
    } else {
        Ok(true)
    }
}

fn trim_nul(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

fn parse_num(f: &[u8]) -> io::Result<u64> {
    if f[0] & 0x80 != 0 {
        // GNU base-256: big-endian two's complement; negative values clamp to 0.
        if f[0] & 0x40 != 0 {
            return Ok(0);
        }
        let mut v: u64 = (f[0] & 0x3f) as u64;
        for &b in &f[1..] {
            v = v.checked_shl(8).ok_or_else(|| bad("tar number overflow"))? | b as u64;
        }
        return Ok(v);
    }
    // Octal digits up to the first NUL, spaces anywhere ignored, one
    // leading '+' allowed (what `from_str_radix` over them would accept),
    // without allocating: this runs eight times per header.
    let mut v: u64 = 0;
    let mut digits = 0;
    let mut plus = false;
    for &c in f.iter().take_while(|&&c| c != 0) {
        match c {
            b' ' => {}
            b'+' if digits == 0 && !plus => plus = true,
            b'0'..=b'7' => {
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(c - b'0')))
                    .ok_or_else(|| bad("bad octal field in tar header"))?;
                digits += 1;
            }
            _ => return Err(bad("bad octal field in tar header")),
        }
    }
    if plus && digits == 0 {
        return Err(bad("bad octal field in tar header"));
    }
    Ok(v)
}

fn parse_ustar(h: &[u8; BLOCK]) -> io::Result<Header> {
    let stored = parse_num(&h[148..156])?;
    // The checksum counts its own field as eight spaces; summed without a
    // branch per byte (this runs for every header of every listing).
    let field_u: u64 = h[148..156].iter().map(|&b| u64::from(b)).sum();
    let field_s: i64 = h[148..156].iter().map(|&b| i64::from(b as i8)).sum();
    let unsigned = h.iter().map(|&b| u64::from(b)).sum::<u64>() - field_u + 8 * u64::from(b' ');
    let signed = h.iter().map(|&b| i64::from(b as i8)).sum::<i64>() - field_s + 8 * i64::from(b' ');
    if stored != unsigned && stored as i64 != signed {
        return Err(bad("tar header checksum mismatch"));
    }
    let mut name = trim_nul(&h[0..100]);
    if &h[257..262] == b"ustar" && h[262] == 0 && h[345] != 0 {
        let mut full = trim_nul(&h[345..500]);
        full.push(b'/');
        full.extend_from_slice(&name);
        name = full;
    }
    let typeflag = if h[156] == 0 { REGTYPE } else { h[156] };
    Ok(Header {
        name,
        typeflag,
        mode: parse_num(&h[100..108])? as u32,
        uid: parse_num(&h[108..116])?,
        gid: parse_num(&h[116..124])?,
        size: parse_num(&h[124..136])?,
        mtime: parse_num(&h[136..148])? as i64,
        linkname: trim_nul(&h[157..257]),
        uname: trim_nul(&h[265..297]),
        gname: trim_nul(&h[297..329]),
        devmajor: parse_num(&h[329..337])? as u32,
        devminor: parse_num(&h[337..345])? as u32,
        extra: Vec::new(),
    })
}

fn parse_pax(mut data: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("bad PAX record"))?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad PAX record length"))?;
        if len <= sp + 1 || len > data.len() {
            return Err(bad("bad PAX record length"));
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("bad PAX record"))?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        data = &data[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// parse_num as it was written first (collect, then `from_str_radix`).
    fn parse_num_reference(f: &[u8]) -> Option<u64> {
        if f[0] & 0x80 != 0 {
            return parse_num(f).ok();
        }
        let s: Vec<u8> = f
            .iter()
            .copied()
            .take_while(|&c| c != 0)
            .filter(|&c| c != b' ')
            .collect();
        if s.is_empty() {
            return Some(0);
        }
        u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any field of octal digits, spaces, NULs, signs and other bytes
        /// reads as the collect-then-parse version read it.
        #[test]
        fn parse_num_agrees_with_the_reference(
            f in proptest::collection::vec(
                prop_oneof![
                    4 => b'0'..=b'7',
                    1 => Just(b' '),
                    1 => Just(0u8),
                    1 => Just(b'+'),
                    1 => Just(b'-'),
                    1 => any::<u8>().prop_filter("not base-256", |b| b & 0x80 == 0),
                ],
                1..24,
            )
        ) {
            prop_assert_eq!(parse_num(&f).ok(), parse_num_reference(&f));
        }
    }

    fn roundtrip(h: &Header, data: &[u8]) -> (Header, Vec<u8>) {
        let mut buf = Vec::new();
        h.encode(&mut buf);
        buf.extend_from_slice(data);
        pad_block(&mut buf);
        buf.extend_from_slice(&[0u8; 1024]);
        let mut r = Reader::new(&buf[..]);
        let got = r.next_header().unwrap().unwrap();
        let mut d = Vec::new();
        r.read_to_end(&mut d).unwrap();
        assert!(r.next_header().unwrap().is_none());
        (got, d)
    }

    #[test]
    fn plain_roundtrip() {
        let h = Header {
            name: b"snapshot/a.txt".to_vec(),
            typeflag: REGTYPE,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            size: 5,
            mtime: 1_700_000_000,
            uname: b"user".to_vec(),
            gname: b"group".to_vec(),
            ..Default::default()
        };
        let (g, d) = roundtrip(&h, b"hello");
        assert_eq!(g, h);
        assert_eq!(d, b"hello");
    }

    #[test]
    fn pax_long_binary_and_big_numbers() {
        let mut name = b"snapshot/".to_vec();
        name.extend(std::iter::repeat_n(b'x', 250));
        name.push(0xff);
        let h = Header {
            name,
            typeflag: SYMTYPE,
            mode: 0o777,
            uid: 3_000_000,
            gid: 5,
            linkname: "ü".repeat(80).into_bytes(),
            mtime: 1 << 40,
            ..Default::default()
        };
        let mut buf = Vec::new();
        h.encode(&mut buf);
        assert!(buf.windows(20).any(|w| w == b"21 hdrcharset=BINARY"));
        let (g, _) = roundtrip(&h, b"");
        assert_eq!(g, h);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", &[b'a'; 93]);
        assert_eq!(out.len(), 103);
        assert!(out.starts_with(b"103 path="));
    }

    #[test]
    fn eof_on_boundary_and_truncation() {
        let h = Header {
            name: b"snapshot/x".to_vec(),
            typeflag: REGTYPE,
            size: 3,
            ..Default::default()
        };
        let mut buf = Vec::new();
        h.encode(&mut buf);
        buf.extend_from_slice(b"abc");
        pad_block(&mut buf);
        let mut r = Reader::new(&buf[..]);
        assert!(r.next_header().unwrap().is_some());
        assert!(r.next_header().unwrap().is_none());
        let mut r = Reader::new(&buf[..600]);
        assert!(r.next_header().unwrap().is_some());
        assert!(r.next_header().is_err());
        let mut corrupt = buf.clone();
        corrupt[10] ^= 1;
        assert!(Reader::new(&corrupt[..]).next_header().is_err());
    }
}
