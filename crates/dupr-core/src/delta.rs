//! librsync deltas (magic `rs\x026`). Applying streams: the basis is
//! random-access (positioned reads of a file), the delta and the output are
//! streams, so memory does not grow with the file. Making one
//! ([`diff_window`]) takes the blocks that stayed in place from the new
//! signature's sums and leaves only the rest to `fast_rsync`'s rolling search.

use std::io::{self, Read, Write};

/// The magic number a librsync delta starts with (`rs\x026`, big-endian).
pub const DELTA_MAGIC: u32 = 0x7273_0236;

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad delta: {msg}"))
}

fn read_be<R: Read>(r: &mut R, width: usize) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b[8 - width..])?;
    Ok(u64::from_be_bytes(b))
}

/// Random access to the basis file of a delta.
pub trait Basis {
    /// The basis file's length in bytes.
    fn len(&self) -> u64;
    /// True when the basis file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copy `len` bytes at `start` to `out`.
    fn copy_to(&self, start: u64, len: u64, out: &mut dyn Write) -> io::Result<()>;
}

impl Basis for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn copy_to(&self, start: u64, len: u64, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self[start as usize..(start + len) as usize])
    }
}

/// A file read with positioned reads: constant memory, unlike a mapping,
/// whose pages would count against the process however large the file.
pub struct FileBasis {
    file: std::fs::File,
    len: u64,
}

impl FileBasis {
    /// A basis reading `file`, whose length is taken now.
    pub fn new(file: std::fs::File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(FileBasis { file, len })
    }
}

impl Basis for FileBasis {
    fn len(&self) -> u64 {
        self.len
    }
    fn copy_to(&self, mut start: u64, mut len: u64, out: &mut dyn Write) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len.min(1 << 20) as usize];
        while len > 0 {
            let n = len.min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], start)?;
            out.write_all(&buf[..n])?;
            start += n as u64;
            len -= n as u64;
        }
        Ok(())
    }
}

/// One command of a delta.
enum Command {
    End,
    Literal(u64),
    Copy { start: u64, len: u64 },
}

fn read_magic<R: Read>(delta: &mut R) -> io::Result<()> {
    if read_be(delta, 4)? as u32 != DELTA_MAGIC {
        return Err(bad("wrong magic"));
    }
    Ok(())
}

fn next_command<R: Read>(delta: &mut R) -> io::Result<Command> {
    let widths = [1usize, 2, 4, 8];
    let mut op = [0u8; 1];
    if delta.read(&mut op)? == 0 {
        return Err(bad("missing END command"));
    }
    Ok(match op[0] {
        0 => Command::End,
        n @ 0x01..=0x40 => Command::Literal(n as u64),
        n @ 0x41..=0x44 => Command::Literal(read_be(delta, widths[(n - 0x41) as usize])?),
        n @ 0x45..=0x54 => {
            let k = (n - 0x45) as usize;
            let start = read_be(delta, widths[k / 4])?;
            let len = read_be(delta, widths[k % 4])?;
            start.checked_add(len).ok_or_else(|| bad("copy overflow"))?;
            Command::Copy { start, len }
        }
        _ => return Err(bad("reserved command")),
    })
}

/// Apply `delta` to `base`, writing the new file to `out`; returns its length.
pub fn apply<B: Basis + ?Sized, R: Read, W: Write>(
    base: &B,
    mut delta: R,
    out: &mut W,
) -> io::Result<u64> {
    read_magic(&mut delta)?;
    let mut written = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match next_command(&mut delta)? {
            Command::End => return Ok(written),
            Command::Literal(len) => {
                copy_literal(&mut delta, out, len, &mut buf)?;
                written += len;
            }
            Command::Copy { start, len } => {
                if start + len > base.len() {
                    return Err(bad("copy beyond the end of the basis file"));
                }
                base.copy_to(start, len, out)?;
                written += len;
            }
        }
    }
}

/// Whether every copy of `delta` starts at or after the end of the copy
/// before it, so that the delta applies to a basis streaming past once
/// ([`Forward`]). Deltas of files appended to or patched in place are;
/// a block moved back is not. Reads the whole delta.
pub fn is_forward<R: Read>(mut delta: R) -> io::Result<bool> {
    read_magic(&mut delta)?;
    let mut end = 0u64;
    loop {
        match next_command(&mut delta)? {
            Command::End => return Ok(true),
            Command::Literal(len) => {
                if io::copy(&mut (&mut delta).take(len), &mut io::sink())? != len {
                    return Err(bad("literal cut short"));
                }
            }
            Command::Copy { start, len } => {
                if start < end {
                    return Ok(false);
                }
                end = start + len;
            }
        }
    }
}

/// One delta of a [`Forward`] chain, applied as its basis streams past.
struct Stage<R> {
    delta: R,
    /// Basis bytes seen so far.
    pos: u64,
    /// The copy waiting for basis bytes: where it is at, and what is left.
    copy: Option<(u64, u64)>,
    ended: bool,
    buf: Vec<u8>,
}

/// Forward deltas ([`is_forward`]) applied in a chain to a basis written
/// to it as a stream: the first delta applies to the basis, each next one
/// to the output of the one before, and the last one's output goes to
/// `out`. No copy of the basis or of a middle version is kept anywhere.
pub struct Forward<R, W> {
    stages: Vec<Stage<R>>,
    out: W,
}

impl<R: Read, W: Write> Forward<R, W> {
    /// The chain of `deltas`, oldest first, each positioned at its start.
    pub fn new(deltas: Vec<R>, out: W) -> io::Result<Self> {
        let mut stages = Vec::with_capacity(deltas.len());
        for mut delta in deltas {
            read_magic(&mut delta)?;
            stages.push(Stage {
                delta,
                pos: 0,
                copy: None,
                ended: false,
                buf: Vec::new(),
            });
        }
        Ok(Forward { stages, out })
    }

    /// The basis has ended: the deltas' remaining literals go out, and a
    /// copy still waiting for basis bytes is an error. Returns `out`.
    pub fn finish(mut self) -> io::Result<W> {
        for k in 0..self.stages.len() {
            let (stage, rest) = self.stages[k..].split_first_mut().expect("k in range");
            if stage.copy.is_some() {
                return Err(bad("copy beyond the end of the basis file"));
            }
            while !stage.ended {
                match next_command(&mut stage.delta)? {
                    Command::End => stage.ended = true,
                    Command::Literal(len) => stage.literal(len, rest, &mut self.out)?,
                    // Nothing to copy, from within the basis: as `apply`.
                    Command::Copy { start, len: 0 } if start <= stage.pos => {}
                    Command::Copy { start, len } if start + len <= stage.pos => {
                        return Err(bad("a copy goes back in a delta applied forward"))
                    }
                    Command::Copy { .. } => {
                        return Err(bad("copy beyond the end of the basis file"))
                    }
                }
            }
        }
        Ok(self.out)
    }
}

impl<R: Read> Stage<R> {
    /// Pass `len` literal bytes of the delta on to the later stages.
    fn literal<W: Write>(
        &mut self,
        mut len: u64,
        rest: &mut [Stage<R>],
        out: &mut W,
    ) -> io::Result<()> {
        self.buf.resize(1 << 16, 0);
        while len > 0 {
            let n = len.min(self.buf.len() as u64) as usize;
            self.delta.read_exact(&mut self.buf[..n])?;
            feed(rest, out, &self.buf[..n])?;
            len -= n as u64;
        }
        Ok(())
    }
}

/// The next basis bytes for the first of `stages`; its output goes on to
/// the rest, the last one's to `out`.
fn feed<R: Read, W: Write>(stages: &mut [Stage<R>], out: &mut W, data: &[u8]) -> io::Result<()> {
    let Some((stage, rest)) = stages.split_first_mut() else {
        return out.write_all(data);
    };
    let (from, to) = (stage.pos, stage.pos + data.len() as u64);
    while !stage.ended {
        match stage.copy {
            None => match next_command(&mut stage.delta)? {
                Command::End => stage.ended = true,
                Command::Literal(len) => stage.literal(len, rest, out)?,
                Command::Copy { start, len } => {
                    if start < from {
                        return Err(bad("a copy goes back in a delta applied forward"));
                    }
                    stage.copy = Some((start, len));
                }
            },
            Some((start, len)) => {
                // Wait for the basis to reach the copy (an empty copy only
                // needs its start to be inside it, as `apply` checks).
                if start > to || (start == to && len > 0) {
                    break;
                }
                let take = len.min(to - start);
                let at = (start - from) as usize;
                if take > 0 {
                    feed(rest, out, &data[at..at + take as usize])?;
                }
                stage.copy = (take < len).then_some((start + take, len - take));
                if stage.copy.is_some() {
                    break;
                }
            }
        }
    }
    stage.pos = to;
    Ok(())
}

impl<R: Read, W: Write> Write for Forward<R, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        feed(&mut self.stages, &mut self.out, data)?;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn copy_literal<R: Read, W: Write>(
    r: &mut R,
    w: &mut W,
    mut len: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    while len > 0 {
        let n = (buf.len() as u64).min(len) as usize;
        r.read_exact(&mut buf[..n])?;
        w.write_all(&buf[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// Bytes of the command starting with `op` (opcode and arguments, without
/// literal data), and the literal length it carries.
fn command_len(op: u8, args: &[u8]) -> Option<(usize, u64)> {
    let widths = [1usize, 2, 4, 8];
    let be = |w: usize| -> Option<u64> {
        let b = args.get(..w)?;
        Some(b.iter().fold(0u64, |v, &x| (v << 8) | x as u64))
    };
    match op {
        n @ 0x01..=0x40 => Some((1, n as u64)),
        n @ 0x41..=0x44 => {
            let w = widths[(n - 0x41) as usize];
            Some((1 + w, be(w)?))
        }
        n @ 0x45..=0x54 => {
            let k = (n - 0x45) as usize;
            let w = widths[k / 4] + widths[k % 4];
            args.get(..w)?;
            Some((1 + w, 0))
        }
        _ => None,
    }
}

/// The literal a delta's command list ends with: where that command starts
/// and how many bytes it carries. `cmds` holds commands only (no magic, no
/// END). None when the last command is a copy, or the list is malformed.
pub fn trailing_literal(cmds: &[u8]) -> Option<(usize, u64)> {
    let mut at = 0usize;
    let mut last = None;
    while at < cmds.len() {
        let (head, lit) = command_len(cmds[at], &cmds[at + 1..])?;
        let next = at
            .checked_add(head)?
            .checked_add(usize::try_from(lit).ok()?)?;
        if next > cmds.len() {
            return None;
        }
        last = (lit > 0).then_some((at, lit));
        at = next;
    }
    last
}

/// Append a literal command header for `len` bytes (librsync's encoding).
pub fn literal_command(len: u64, out: &mut impl Write) -> io::Result<()> {
    match len {
        0 => Ok(()),
        1..=64 => out.write_all(&[len as u8]),
        65..=0xFF => out.write_all(&[0x41, len as u8]),
        0x100..=0xFFFF => {
            out.write_all(&[0x42])?;
            out.write_all(&(len as u16).to_be_bytes())
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.write_all(&[0x43])?;
            out.write_all(&(len as u32).to_be_bytes())
        }
        _ => {
            out.write_all(&[0x44])?;
            out.write_all(&len.to_be_bytes())
        }
    }
}

/// Append a copy command (librsync's encoding: the smallest widths that
/// hold the basis offset and the length).
pub fn copy_command(offset: u64, len: u64, out: &mut impl Write) -> io::Result<()> {
    let class = |v: u64| match v {
        0..=0xFF => 0u8,
        0x100..=0xFFFF => 1,
        0x1_0000..=0xFFFF_FFFF => 2,
        _ => 3,
    };
    let put = |v: u64, out: &mut dyn Write| -> io::Result<()> {
        let b = v.to_be_bytes();
        out.write_all(&b[8 - (1usize << class(v))..])
    };
    out.write_all(&[0x45 + class(offset) * 4 + class(len)])?;
    put(offset, out)?;
    put(len, out)
}

/// One block of an MD4 signature: its checksum and strong-hash record.
fn sig_block(sig: &[u8], record: usize, k: u64) -> Option<&[u8]> {
    let at = usize::try_from(k)
        .ok()?
        .checked_mul(record)?
        .checked_add(12)?;
    sig.get(at..at.checked_add(record)?)
}

/// The delta commands (no magic, no END) that rebuild `data`, the bytes at
/// file offset `base` of the new file, from the basis `old` (a serialized
/// MD4 signature, `index` its index).
///
/// Where a block of `data` sits at the same offset as in the basis and
/// `new` (the new file's signature, fed at least through `data`) has the
/// same checksum and strong hash for it as `old`, it is a copy with no
/// hashing at all: the usual case of a large file appended to or patched
/// in place, which otherwise costs an MD4 per block. The stretches between
/// such blocks go through `fast_rsync`'s search, as all of `data` does when
/// the block lengths differ or `new` is None. None if `fast_rsync` refuses
/// the signature.
pub fn diff_window(
    index: &fast_rsync::IndexedSignature<'_>,
    old: &[u8],
    new: Option<&crate::signature::SigBuilder>,
    base: u64,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    let h = crate::signature::Header::of(old)?;
    let (bs, strong) = (h.block_len, h.strong_len);
    let record = 4 + strong as usize;
    let old_blocks = (old.len().saturating_sub(12) / record) as u64;
    let new = new.filter(|n| {
        n.block_len() == bs
            && bs > 0
            && strong <= crate::signature::STRONG_LEN
            && h.magic == crate::signature::MD4_SIG_MAGIC
    });
    let bsu = bs as usize;
    // Block k of the new file at `pos` equals the basis' block k. The
    // basis' last block may be short, so it never counts.
    let in_place = |pos: usize| -> bool {
        let Some(n) = new else { return false };
        let off = base + pos as u64;
        if !off.is_multiple_of(bs as u64) || pos + bsu > data.len() {
            return false;
        }
        let k = off / bs as u64;
        if k + 1 >= old_blocks {
            return false;
        }
        match (n.block(k), sig_block(old, record, k)) {
            (Some(a), Some(b)) => a[..record] == *b,
            _ => false,
        }
    };
    let mut scratch = Vec::new();
    let mut copy: Option<(u64, u64)> = None;
    let mut pos = 0usize;
    while pos < data.len() {
        if in_place(pos) {
            let at = base + pos as u64;
            copy = match copy {
                Some((o, l)) if o + l == at => Some((o, l + bs as u64)),
                prev => {
                    if let Some((o, l)) = prev {
                        copy_command(o, l, out).ok()?;
                    }
                    Some((at, bs as u64))
                }
            };
            pos += bsu;
            continue;
        }
        // The stretch up to the next block in place.
        let mut end = match new {
            Some(_) => {
                let rem = ((base + pos as u64) % bs as u64) as usize;
                pos + if rem == 0 { bsu } else { bsu - rem }
            }
            None => data.len(),
        };
        while end < data.len() && !in_place(end) {
            end += bsu;
        }
        let end = end.min(data.len());
        if let Some((o, l)) = copy.take() {
            copy_command(o, l, out).ok()?;
        }
        scratch.clear();
        fast_rsync::diff(index, &data[pos..end], &mut scratch).ok()?;
        out.extend_from_slice(scratch.get(4..scratch.len().checked_sub(1)?)?);
        pos = end;
    }
    if let Some((o, l)) = copy {
        copy_command(o, l, out).ok()?;
    }
    Some(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Bytes that do not compress (xorshift), the same for the same seed.
    pub(crate) fn noise(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// `v` with `edits` made, each (where, how many bytes, kind): overwrite,
    /// insert (bytes from `seed`) or delete, clamped to the data.
    pub(crate) fn edited(v: &[u8], edits: &[(usize, usize, u8)], seed: u64) -> Vec<u8> {
        let mut v = v.to_vec();
        for (k, &(at, n, kind)) in edits.iter().enumerate() {
            let at = (at ^ seed as usize) % (v.len() + 1);
            let end = (at + n).min(v.len());
            match kind {
                0 => v[at..end].fill(k as u8),
                1 => {
                    v.splice(at..at, noise(n, seed ^ k as u64));
                }
                _ => {
                    v.drain(at..end);
                }
            }
        }
        v
    }

    fn delta_of(base: &[u8], new: &[u8]) -> Vec<u8> {
        let sig = crate::signature::signature_of(base, 512);
        crate::backup::windowed_delta(&sig, &mut &new[..]).unwrap()
    }

    /// `base` streamed through the chain in pieces of `piece` bytes.
    fn forward(base: &[u8], deltas: &[&[u8]], piece: usize) -> io::Result<Vec<u8>> {
        let mut f = Forward::new(deltas.to_vec(), Vec::new())?;
        for c in base.chunks(piece.max(1)) {
            f.write_all(c)?;
        }
        f.finish()
    }

    proptest::proptest! {
        /// Forward deltas applied to a streaming basis, alone or two in a
        /// chain, give what random-access application gives.
        #[test]
        fn forward_chains_equal_random_access(
            seed in 1u64..u64::MAX,
            len in 0usize..30_000,
            edits in proptest::collection::vec((0usize..30_000, 0usize..900, 0u8..3), 0..4),
            piece in 1usize..5000,
        ) {
            let base = noise(len, seed);
            let v1 = edited(&base, &edits, seed ^ 1);
            let v2 = edited(&v1, &edits, seed ^ 2);
            let (d1, d2) = (delta_of(&base, &v1), delta_of(&v1, &v2));
            let mut direct = Vec::new();
            apply(&base[..], &d1[..], &mut direct).unwrap();
            proptest::prop_assert!(direct == v1);
            if is_forward(&d1[..]).unwrap() {
                proptest::prop_assert!(forward(&base, &[&d1], piece).unwrap() == v1);
                if is_forward(&d2[..]).unwrap() {
                    proptest::prop_assert!(forward(&base, &[&d1, &d2], piece).unwrap() == v2);
                }
            }
        }
    }

    /// A copy that goes back is not forward, and applied forward anyway it
    /// is an error, as is a copy past the basis' end; never wrong bytes.
    #[test]
    fn backward_and_overlong_copies_are_refused() {
        let base = noise(5000, 3);
        let mut d = DELTA_MAGIC.to_be_bytes().to_vec();
        copy_command(2000, 100, &mut d).unwrap();
        copy_command(0, 100, &mut d).unwrap();
        d.push(0);
        assert!(!is_forward(&d[..]).unwrap());
        // Within one piece of the basis it still applies (rightly); across
        // pieces it cannot, and says so.
        let mut back = base[2000..2100].to_vec();
        back.extend_from_slice(&base[..100]);
        assert!(forward(&base, &[&d], 4096).unwrap() == back);
        let e = forward(&base, &[&d], 1000).unwrap_err();
        assert!(e.to_string().contains("goes back"), "{e}");
        let mut d = DELTA_MAGIC.to_be_bytes().to_vec();
        copy_command(4990, 100, &mut d).unwrap();
        d.push(0);
        assert!(is_forward(&d[..]).unwrap());
        let e = forward(&base, &[&d], 300).unwrap_err();
        assert!(e.to_string().contains("beyond the end"), "{e}");
        // An empty copy: fine inside the basis, past its end an error, as
        // `apply` has it (a fuzzer found the difference).
        for (start, ok) in [
            (0u64, true),
            (5000, true),
            (5001, false),
            (u64::MAX - 9, false),
        ] {
            let mut d = DELTA_MAGIC.to_be_bytes().to_vec();
            copy_command(start, 0, &mut d).unwrap();
            d.push(0);
            let applied = apply(&base[..], &d[..], &mut Vec::new()).is_ok();
            assert_eq!(applied, ok, "apply, empty copy at {start}");
            for piece in [1, 4096, 5000] {
                assert_eq!(
                    forward(&base, &[&d], piece).is_ok(),
                    ok,
                    "{start} in {piece}"
                );
            }
        }
        // An appended literal after the last copy, and an unchanged file.
        let mut new = base.clone();
        new.extend_from_slice(b"appended");
        let d = delta_of(&base, &new);
        assert!(is_forward(&d[..]).unwrap());
        assert!(forward(&base, &[&d], 777).unwrap() == new);
        let d = delta_of(&base, &base);
        assert!(forward(&base, &[&d], 1).unwrap() == base);
    }

    #[test]
    fn applies_fast_rsync_deltas() {
        let base: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut new = base.clone();
        new[1000..1100].fill(7);
        new.extend_from_slice(b"tail");
        let sig = fast_rsync::Signature::calculate(
            &base,
            fast_rsync::SignatureOptions {
                block_size: 512,
                crypto_hash_size: 8,
            },
        );
        let mut d = Vec::new();
        fast_rsync::diff(&sig.index(), &new, &mut d).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            apply(&base[..], &d[..], &mut out).unwrap(),
            new.len() as u64
        );
        assert_eq!(out, new);
    }

    #[test]
    fn observed_commands_and_errors() {
        let d = [0x72, 0x73, 0x02, 0x36, 0x45, 0, 3, 0];
        let mut out = Vec::new();
        apply(&b"abcdef"[..], &d[..], &mut out).unwrap();
        assert_eq!(out, b"abc");
        let d = [0x72, 0x73, 0x02, 0x36, 0x45, 4, 9, 0];
        assert!(apply(&b"abcdef"[..], &d[..], &mut Vec::new()).is_err());
        assert!(apply(&b""[..], &[0u8, 0, 0, 0][..], &mut Vec::new()).is_err());
        let d = [0x72, 0x73, 0x02, 0x36, 0x02, b'h'];
        assert!(apply(&b""[..], &d[..], &mut Vec::new()).is_err());
    }

    #[test]
    fn finds_the_trailing_literal() {
        let mut cmds = Vec::new();
        literal_command(3, &mut cmds).unwrap();
        cmds.extend_from_slice(b"abc");
        cmds.extend_from_slice(&[0x45, 7, 9]); // copy 9 bytes from 7
        assert_eq!(trailing_literal(&cmds), None);
        let at = cmds.len();
        literal_command(300, &mut cmds).unwrap();
        cmds.extend_from_slice(&[1u8; 300]);
        assert_eq!(trailing_literal(&cmds), Some((at, 300)));
        // Truncated or reserved: not trusted.
        assert_eq!(trailing_literal(&cmds[..cmds.len() - 1]), None);
        assert_eq!(trailing_literal(&[0x55]), None);
        for len in [1u64, 64, 65, 255, 256, 65535, 65536, 1 << 33] {
            let mut c = Vec::new();
            literal_command(len, &mut c).unwrap();
            assert_eq!(command_len(c[0], &c[1..]), Some((c.len(), len)));
        }
    }
}
