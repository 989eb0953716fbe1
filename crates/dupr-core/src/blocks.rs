//! Seekable volumes: the block index.
//!
//! dupr's writer compresses each volume in independent blocks (see
//! `stream::BlockDeflater`), so a reader can start inflating at any block.
//! What it needs to get there is recorded here, per volume: the lengths of
//! the OpenPGP packets around the deflate stream (their partial-length
//! framing is fixed, so every offset follows from them), where each block's
//! deflated bytes start, a SHA-256 of each block's plaintext, and the first
//! archive entry whose header starts in each block. A restore of one path
//! then reads, decrypts and inflates only the blocks holding it, and checks
//! each against its hash before any byte of it is used: integrity as strong
//! as reading the whole volume, whose SHA-1 and MDC such a read skips.
//!
//! The stored volume stays one ordinary gzip file or OpenPGP message, which
//! gzip, gpg and duplicity read unchanged; the index is an extra file.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use crate::index::Index;

/// Body bytes per partial chunk of the literal packet (2^16).
pub const LITERAL_POW: u8 = 16;
/// ... of the compressed packet.
pub const COMPRESSED_POW: u8 = 16;
/// ... of the SEIPD packet.
pub const SEIPD_POW: u8 = 20;
/// The literal packet's own header inside its body: binary, no name, date 0.
pub const LITERAL_HEADER: u64 = 6;
/// Random prefix at the start of SEIPD v1 plaintext (AES: 16 + 2).
pub const SEIPD_PREFIX: u64 = 18;
/// Tar bytes per block.
pub const BLOCK_TAR: u64 = 1 << 20;
/// A set gets an index only when one of its volumes holds at least this many
/// blocks: a smaller volume is read whole in about the time its index takes
/// to fetch, so the extra file on the target would buy nothing.
pub const MIN_INDEXED_BLOCKS: usize = 4;

/// How a volume's blocks sit in the stored file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// gzip: a 10-byte header, then the deflate stream.
    Gzip,
    /// Symmetric OpenPGP: `prefix` bytes of session-key packets, then one
    /// SEIPD v1 packet holding a compressed (ZIP) packet holding a literal
    /// packet, each with partial lengths of the sizes above.
    Pgp {
        /// Bytes of the session-key packets in front of the SEIPD packet.
        prefix: u64,
        /// The session key's symmetric algorithm (OpenPGP algorithm id).
        cipher: u8,
        /// Body bytes of the literal packet (its own header included).
        literal_len: u64,
        /// Body bytes of the compressed packet.
        compressed_len: u64,
        /// Body bytes of the SEIPD packet (version byte, random prefix and
        /// MDC included).
        seipd_len: u64,
    },
}

/// One independently compressed block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Where its deflated bytes start in the deflate stream, and how many.
    pub out_off: u64,
    /// Length of its deflated bytes.
    pub out_len: u64,
    /// Its plaintext (for OpenPGP: the framed literal packet) length and hash.
    pub in_len: u64,
    /// Hash of its plaintext ([`Layout::hash`] says which), checked before
    /// any byte of it is used.
    pub hash: [u8; 32],
}

/// Which hash an index's block records hold: SHA-256 in the first version
/// of the index, BLAKE3 (about three times faster) since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockHash {
    /// SHA-256 (`dupr-blocks 1`).
    Sha256,
    /// BLAKE3, 256-bit (`dupr-blocks 2`).
    Blake3,
}

impl BlockHash {
    /// The hash of `data`.
    pub fn of(self, data: &[u8]) -> [u8; 32] {
        match self {
            BlockHash::Sha256 => Sha256::digest(data).into(),
            BlockHash::Blake3 => blake3::hash(data).into(),
        }
    }
}

/// The first entry whose tar header starts in a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstEntry {
    /// The block it starts in, from 0.
    pub block: u32,
    /// Where its header starts in the volume's tar stream.
    pub tar_offset: u64,
    /// Its path in the archive.
    pub index: Index,
}

/// The layout of one stored volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// How the blocks are wrapped.
    pub framing: Framing,
    /// The blocks, in stream order.
    pub blocks: Vec<BlockInfo>,
    /// The hash their records hold.
    pub hash: BlockHash,
}

/// Header length of a final (non-partial) chunk of `len` body bytes.
fn final_header_len(len: u64) -> u64 {
    match len {
        0..=191 => 1,
        192..=8383 => 2,
        _ => 5,
    }
}

/// Number of partial chunks in a packet of `total` body bytes (the rest is
/// the final chunk, 0 < final <= 2^pow unless the body is empty).
fn partial_chunks(total: u64, pow: u8) -> u64 {
    if total == 0 {
        0
    } else {
        (total - 1) >> pow
    }
}

/// Offset, from the packet's tag byte, of body byte `b` of a new-format
/// packet of `total` body bytes written with partial chunks of 2^pow.
pub fn framed_offset(b: u64, total: u64, pow: u8) -> u64 {
    let parts = partial_chunks(total, pow);
    let j = b >> pow;
    if j < parts {
        1 + (j + 1) + b
    } else {
        1 + parts + final_header_len(total - (parts << pow)) + b
    }
}

/// Length of the chunk header in front of body byte `b` when `b` starts a
/// chunk.
pub fn header_len_at(b: u64, total: u64, pow: u8) -> u64 {
    let parts = partial_chunks(total, pow);
    if b >> pow < parts {
        1
    } else {
        final_header_len(total - (parts << pow))
    }
}

/// The body bytes of a packet, read from framed bytes that start with body
/// byte `body_start` itself (any header in front of it already skipped).
/// Returns up to `want` body bytes.
pub fn deframe(
    data: &[u8],
    body_start: u64,
    total: u64,
    pow: u8,
    want: u64,
) -> io::Result<Vec<u8>> {
    let mut out = data.to_vec();
    deframe_in_place(&mut out, 0, body_start, total, pow, want)?;
    Ok(out)
}

/// [`deframe`] of `buf[start..]` into `buf` itself (the body bytes moved
/// to its front, then cut), so a block is decoded without a new buffer.
fn deframe_in_place(
    buf: &mut Vec<u8>,
    start: usize,
    body_start: u64,
    total: u64,
    pow: u8,
    want: u64,
) -> io::Result<()> {
    let parts = partial_chunks(total, pow);
    let mut pos = start;
    let mut w = 0usize;
    let mut b = body_start;
    let end = (body_start + want).min(total);
    let short = || io::Error::new(io::ErrorKind::UnexpectedEof, "block range ends early");
    while b < end {
        let j = b >> pow;
        if b == j << pow && b != body_start {
            // At a chunk boundary: skip its header.
            pos += header_len_at(b, total, pow) as usize;
        }
        let chunk_end = if j < parts { (j + 1) << pow } else { total };
        let n = (chunk_end.min(end) - b) as usize;
        if pos.checked_add(n).is_none_or(|e| e > buf.len()) {
            return Err(short());
        }
        // The write position never passes the read position: only
        // header bytes are dropped.
        buf.copy_within(pos..pos + n, w);
        w += n;
        pos += n;
        b += n as u64;
    }
    buf.truncate(w);
    Ok(())
}

/// A stored file that can be read at any offset.
pub trait RangeRead {
    /// `len` bytes from `offset`; fewer bytes than that is an error.
    fn read_range(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>>;

    /// [`RangeRead::read_range`] into `buf` (its old contents dropped), so
    /// a caller can reuse one buffer.
    fn read_range_into(&mut self, offset: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        *buf = self.read_range(offset, len)?;
        Ok(())
    }
}

impl<T: Read + Seek> RangeRead for T {
    fn read_range(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_range_into(offset, len, &mut v)?;
        Ok(v)
    }

    fn read_range_into(&mut self, offset: u64, len: u64, v: &mut Vec<u8>) -> io::Result<()> {
        self.seek(SeekFrom::Start(offset))?;
        v.clear();
        v.reserve(len as usize);
        self.take(len).read_to_end(v)?;
        if (v.len() as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the volume is shorter than its index says",
            ));
        }
        Ok(())
    }
}

fn damaged(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Layout {
    fn block(&self, k: usize) -> io::Result<&BlockInfo> {
        let blk = self
            .blocks
            .get(k)
            .ok_or_else(|| damaged(format!("no block {k} in the index")))?;
        // Sane bounds before any allocation sized by the index.
        if blk.in_len > 4 * BLOCK_TAR || blk.out_len > 5 * BLOCK_TAR {
            return Err(damaged(format!(
                "block {k} is larger than any block dupr writes"
            )));
        }
        // Offsets far below u64's range (so no sum of them wraps into a
        // wrong range or a huge read), and the block inside its packet.
        let inside = match &self.framing {
            Framing::Gzip => blk.out_off <= MAX_OFFSET,
            Framing::Pgp {
                prefix,
                literal_len,
                compressed_len,
                seipd_len,
                ..
            } => {
                [*prefix, *literal_len, *compressed_len, *seipd_len]
                    .iter()
                    .all(|&v| v <= MAX_OFFSET)
                    && blk.out_off <= MAX_OFFSET
                    && blk.out_off + blk.out_len <= *compressed_len
            }
        };
        if !inside {
            return Err(damaged(format!("block {k} lies outside its volume")));
        }
        Ok(blk)
    }

    /// The stored bytes block `k` needs (read with [`RangeRead`]).
    pub fn fetch(&self, f: &mut dyn RangeRead, k: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.fetch_into(f, k, &mut v)?;
        Ok(v)
    }

    /// [`Layout::fetch`] into a reused buffer.
    pub fn fetch_into(&self, f: &mut dyn RangeRead, k: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        let blk = self.block(k)?;
        match &self.framing {
            Framing::Gzip => f.read_range_into(10 + blk.out_off, blk.out_len, buf),
            Framing::Pgp {
                prefix,
                compressed_len,
                seipd_len,
                ..
            } => {
                let (from, s_end) = self.cipher_range(blk, *compressed_len);
                // Ciphertext byte c is SEIPD body byte 1 + c (after the version).
                let file_at = |c: u64| prefix + framed_offset(1 + c, *seipd_len, SEIPD_POW);
                f.read_range_into(file_at(from), file_at(s_end) - file_at(from), buf)
            }
        }
    }

    /// Ciphertext range (from the IV block on) holding a block.
    fn cipher_range(&self, blk: &BlockInfo, compressed_len: u64) -> (u64, u64) {
        // Deflate byte D is compressed-body byte 1 + D (after the algorithm
        // octet); its framed position inside the SEIPD plaintext follows
        // the random prefix.
        let cb = 1 + blk.out_off;
        let s = SEIPD_PREFIX + framed_offset(cb, compressed_len, COMPRESSED_POW);
        let s_end = SEIPD_PREFIX + framed_offset(cb + blk.out_len, compressed_len, COMPRESSED_POW);
        // CFB: start on a cipher block, the one before it is the IV.
        let c0 = s / 16 * 16;
        (c0.saturating_sub(16), s_end)
    }

    /// The plaintext of block `k` (for OpenPGP: the framed literal bytes)
    /// from what [`Layout::fetch`] read, checked against its hash.
    pub fn decode(&self, k: usize, raw: Vec<u8>, key: &[u8]) -> io::Result<Vec<u8>> {
        let mut raw = raw;
        let mut plain = Vec::new();
        self.decode_into(k, &mut raw, key, &mut plain)?;
        Ok(plain)
    }

    /// [`Layout::decode`] working in `raw` (left holding scratch) into the
    /// reused buffer `plain`: no allocation per block once warm (1 MiB
    /// buffers freed and made again cost a page fault per 4 KiB).
    pub fn decode_into(
        &self,
        k: usize,
        raw: &mut Vec<u8>,
        key: &[u8],
        plain: &mut Vec<u8>,
    ) -> io::Result<()> {
        let blk = self.block(k)?;
        match &self.framing {
            Framing::Gzip => {}
            Framing::Pgp {
                cipher,
                compressed_len,
                seipd_len,
                ..
            } => {
                let (from, s_end) = self.cipher_range(blk, *compressed_len);
                let cb = 1 + blk.out_off;
                let s = SEIPD_PREFIX + framed_offset(cb, *compressed_len, COMPRESSED_POW);
                let c0 = s / 16 * 16;
                deframe_in_place(raw, 0, 1 + from, *seipd_len, SEIPD_POW, s_end - from)?;
                if (raw.len() as u64) < s_end - from {
                    return Err(damaged(format!("block {k} is cut short")));
                }
                let iv: [u8; 16] = if c0 >= 16 {
                    raw[..16].try_into().expect("16 bytes")
                } else {
                    [0u8; 16]
                };
                let at = (c0 - from) as usize;
                cfb_decrypt(*cipher, key, &iv, &mut raw[at..])?;
                // Compressed-packet framing: from body byte cb, the block's
                // deflated length.
                let framed = at + (s - c0) as usize;
                deframe_in_place(
                    raw,
                    framed,
                    cb,
                    *compressed_len,
                    COMPRESSED_POW,
                    blk.out_len,
                )?;
            }
        }
        if raw.len() as u64 != blk.out_len {
            return Err(damaged(format!("block {k} is cut short")));
        }
        inflate_block(raw, blk.in_len as usize, plain)
            .map_err(|e| damaged(format!("block {k} does not inflate: {e}")))?;
        if plain.len() as u64 != blk.in_len || self.hash.of(&plain[..]) != blk.hash {
            return Err(damaged(format!("block {k} does not match its hash")));
        }
        Ok(())
    }

    /// [`Layout::fetch`] and [`Layout::decode`] in one.
    pub fn read_block(&self, f: &mut dyn RangeRead, key: &[u8], k: usize) -> io::Result<Vec<u8>> {
        let raw = self.fetch(f, k)?;
        self.decode(k, raw, key)
    }

    /// Tar bytes of block `k` and the tar offset they start at.
    pub fn tar_of_block(&self, k: usize, plain: Vec<u8>) -> io::Result<(u64, Vec<u8>)> {
        let mut plain = plain;
        let off = self.tar_of_block_in_place(k, &mut plain)?;
        Ok((off, plain))
    }

    /// [`Layout::tar_of_block`] in the block's own buffer.
    fn tar_of_block_in_place(&self, k: usize, plain: &mut Vec<u8>) -> io::Result<u64> {
        match &self.framing {
            Framing::Gzip => Ok(k as u64 * BLOCK_TAR),
            Framing::Pgp { literal_len, .. } => {
                // Blocks start on literal chunk boundaries (block 0 at the tag).
                let body = k as u64 * BLOCK_TAR;
                // Block 0 starts at the packet's tag, the others at a
                // chunk header.
                let skip =
                    if k == 0 { 1 } else { 0 } + header_len_at(body, *literal_len, LITERAL_POW);
                if skip as usize > plain.len() {
                    return Err(damaged(format!("block {k} is empty")));
                }
                let want = (*literal_len - body.min(*literal_len)).min(BLOCK_TAR);
                deframe_in_place(plain, skip as usize, body, *literal_len, LITERAL_POW, want)?;
                if k == 0 {
                    let skip = (LITERAL_HEADER as usize).min(plain.len());
                    plain.drain(..skip);
                    Ok(0)
                } else {
                    Ok(body - LITERAL_HEADER)
                }
            }
        }
    }
}

/// Inflate one block: non-final deflate blocks ending byte-aligned, so no
/// end-of-stream marker comes; all input must give exactly `want` bytes.
fn inflate_block(data: &[u8], want: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let mut d = flate2::Decompress::new(false);
    out.clear();
    out.reserve(want + 1);
    loop {
        let (i0, o0) = (d.total_in(), d.total_out());
        let st = d
            .decompress_vec(&data[i0 as usize..], out, flate2::FlushDecompress::Sync)
            .map_err(|e| damaged(e.to_string()))?;
        if d.total_in() as usize == data.len() || st == flate2::Status::StreamEnd {
            break;
        }
        if out.len() > want {
            return Err(damaged("more data than recorded"));
        }
        if (d.total_in(), d.total_out()) == (i0, o0) {
            return Err(damaged("stuck"));
        }
    }
    if out.len() != want {
        return Err(damaged(format!("{} bytes, {want} recorded", out.len())));
    }
    Ok(())
}

/// Decrypt OpenPGP CFB (no resync) from a cipher-block boundary.
fn cfb_decrypt(cipher: u8, key: &[u8], iv: &[u8; 16], data: &mut [u8]) -> io::Result<()> {
    use aes::cipher::KeyIvInit;
    let bad = |e: aes::cipher::InvalidLength| damaged(format!("bad key: {e}"));
    match cipher {
        7 => cfb_mode::BufDecryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(bad)?
            .decrypt(data),
        8 => cfb_mode::BufDecryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(bad)?
            .decrypt(data),
        9 => cfb_mode::BufDecryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(bad)?
            .decrypt(data),
        c => {
            return Err(damaged(format!(
                "cipher {c} is not supported for ranged reads"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_offsets_match_the_writer() {
        // Partial(pow 9) over 1200 bytes: tag, [hdr 512] x2, [len 176].
        assert_eq!(framed_offset(0, 1200, 9), 2);
        assert_eq!(framed_offset(511, 1200, 9), 513);
        assert_eq!(framed_offset(512, 1200, 9), 515);
        assert_eq!(framed_offset(1024, 1200, 9), 1028);
        assert_eq!(framed_offset(1200, 1200, 9), 1204);
        // One chunk exactly: no partial chunk, a 5-byte length (>= 8384).
        assert_eq!(framed_offset(0, 1 << 16, 16), 6);
    }

    /// Offsets from an index are data from the target: ones that would
    /// wrap u64 sums (a huge read, a wrong range) are damage.
    /// A block checks against its index's hash: BLAKE3 in indexes written
    /// now, SHA-256 in the first version's, which still read.
    #[test]
    fn blocks_check_against_either_version_of_the_index() {
        let plain = b"a block of tar bytes, ".repeat(200);
        let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut raw = Vec::with_capacity(plain.len() + 64);
        c.compress_vec(&plain, &mut raw, flate2::FlushCompress::Sync)
            .unwrap();
        let mut volume = vec![0u8; 10];
        volume.extend_from_slice(&raw);
        let layout = |hash: BlockHash, of: BlockHash| Layout {
            framing: Framing::Gzip,
            blocks: vec![BlockInfo {
                out_off: 0,
                out_len: raw.len() as u64,
                in_len: plain.len() as u64,
                hash: of.of(&plain),
            }],
            hash,
        };
        let read = |l: &Layout| l.read_block(&mut std::io::Cursor::new(volume.clone()), &[], 0);
        for h in [BlockHash::Blake3, BlockHash::Sha256] {
            assert!(read(&layout(h, h)).unwrap() == plain);
        }
        let e = read(&layout(BlockHash::Blake3, BlockHash::Sha256)).unwrap_err();
        assert!(e.to_string().contains("does not match its hash"), "{e}");
        // Written as version 2; the same bytes under version 1's magic read
        // as SHA-256 records.
        let v = VolumeIndex {
            num: 3,
            sha1: "ab".repeat(20),
            layout: layout(BlockHash::Blake3, BlockHash::Blake3),
            firsts: vec![],
        };
        let mut file = Vec::new();
        write_magic(&mut file).unwrap();
        write_volume(&mut file, &v).unwrap();
        assert_eq!(read_volumes(&file[..], |_| true).unwrap(), vec![v.clone()]);
        file[..MAGIC_SHA256.len()].copy_from_slice(MAGIC_SHA256);
        let old = read_volumes(&file[..], |_| true).unwrap();
        assert_eq!(old[0].layout.hash, BlockHash::Sha256);
        assert!(read(&old[0].layout).is_err());
        let mut sha = v;
        sha.layout.hash = BlockHash::Sha256;
        assert!(write_volume(&mut Vec::new(), &sha).is_err());
    }

    #[test]
    fn a_hostile_layout_reads_as_damage_not_a_crash() {
        let volume = vec![0u8; 4096];
        for (out_off, compressed_len, prefix) in [
            (u64::MAX - 2, 100, 10),
            (0, u64::MAX, 10),
            (0, 100, u64::MAX - 5),
            (1 << 50, 1 << 51, 0),
        ] {
            let layout = Layout {
                framing: Framing::Pgp {
                    prefix,
                    cipher: 9,
                    literal_len: 1000,
                    compressed_len,
                    seipd_len: 4000,
                },
                blocks: vec![BlockInfo {
                    out_off,
                    out_len: 50,
                    in_len: 1000,
                    hash: [0; 32],
                }],
                hash: BlockHash::Blake3,
            };
            let mut f = std::io::Cursor::new(volume.clone());
            let e = layout.read_block(&mut f, &[7u8; 32], 0).unwrap_err();
            assert!(e.to_string().contains("outside"), "{e}");
        }
        let gz = Layout {
            framing: Framing::Gzip,
            blocks: vec![BlockInfo {
                out_off: u64::MAX - 5,
                out_len: 50,
                in_len: 1000,
                hash: [0; 32],
            }],
            hash: BlockHash::Sha256,
        };
        let mut f = std::io::Cursor::new(volume);
        assert!(gz.read_block(&mut f, &[], 0).is_err());
    }
}

/// The index of one volume, as stored in a set's `.dupr-blocks` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeIndex {
    /// The volume number, from 1.
    pub num: u32,
    /// The volume's SHA-1 (as in the manifest): binds the index to it.
    pub sha1: String,
    /// Where the volume's blocks are.
    pub layout: Layout,
    /// The first entry starting in each block that has one, in block order.
    pub firsts: Vec<FirstEntry>,
}

/// What an index written now starts with: its block hashes are BLAKE3.
const MAGIC: &[u8] = b"dupr-blocks 2\n";
/// The first version's start: SHA-256 block hashes, otherwise the same.
const MAGIC_SHA256: &[u8] = b"dupr-blocks 1\n";
/// No volume offset or length in an index is larger (256 TiB).
const MAX_OFFSET: u64 = 1 << 48;
/// Bytes of a block index holding no volume.
pub const MAGIC_LEN: u64 = MAGIC.len() as u64;
/// Caps for reading (an index is data from the target: never trust a
/// length in it with an allocation).
const MAX_BLOCKS: u32 = 1 << 22;
const MAX_PATH: u32 = 1 << 16;

/// The first tar block number for tar offset `t`, in a volume written as
/// OpenPGP (`framing_is_pgp`) or as gzip.
pub fn block_of(framing_is_pgp: bool, t: u64) -> u32 {
    let b = if framing_is_pgp {
        t + LITERAL_HEADER
    } else {
        t
    };
    (b / BLOCK_TAR) as u32
}

/// Start a `.dupr-blocks` file.
pub fn write_magic(w: &mut impl io::Write) -> io::Result<()> {
    w.write_all(MAGIC)
}

/// Append one volume's record; its blocks' hashes must be BLAKE3, as the
/// magic [`write_magic`] wrote says.
pub fn write_volume(w: &mut impl io::Write, v: &VolumeIndex) -> io::Result<()> {
    if v.layout.hash != BlockHash::Blake3 {
        return Err(io::Error::other(
            "a block index is written with BLAKE3 hashes",
        ));
    }
    let mut b = Vec::with_capacity(64 + v.layout.blocks.len() * 56);
    b.extend_from_slice(&v.num.to_le_bytes());
    let sha = v.sha1.as_bytes();
    b.push(sha.len() as u8);
    b.extend_from_slice(&sha[..sha.len().min(255)]);
    match &v.layout.framing {
        Framing::Gzip => b.push(1),
        Framing::Pgp {
            prefix,
            cipher,
            literal_len,
            compressed_len,
            seipd_len,
        } => {
            b.push(2);
            b.extend_from_slice(&prefix.to_le_bytes());
            b.push(*cipher);
            b.extend_from_slice(&literal_len.to_le_bytes());
            b.extend_from_slice(&compressed_len.to_le_bytes());
            b.extend_from_slice(&seipd_len.to_le_bytes());
        }
    }
    b.extend_from_slice(&(v.layout.blocks.len() as u32).to_le_bytes());
    for k in &v.layout.blocks {
        b.extend_from_slice(&k.out_off.to_le_bytes());
        b.extend_from_slice(&k.out_len.to_le_bytes());
        b.extend_from_slice(&k.in_len.to_le_bytes());
        b.extend_from_slice(&k.hash);
    }
    b.extend_from_slice(&(v.firsts.len() as u32).to_le_bytes());
    for f in &v.firsts {
        let p = f.index.as_bytes();
        b.extend_from_slice(&f.block.to_le_bytes());
        b.extend_from_slice(&f.tar_offset.to_le_bytes());
        b.extend_from_slice(&(p.len() as u32).to_le_bytes());
        b.extend_from_slice(p);
    }
    w.write_all(&b)
}

struct In<R> {
    r: R,
}

impl<R: Read> In<R> {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0u8; N];
        self.r.read_exact(&mut a)?;
        Ok(a)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        (&mut self.r).take(n as u64).read_to_end(&mut v)?;
        if v.len() < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(v)
    }
}

/// Read a `.dupr-blocks` file, keeping the volumes `keep` wants.
pub fn read_volumes(r: impl Read, keep: impl Fn(u32) -> bool) -> io::Result<Vec<VolumeIndex>> {
    let mut r = In { r };
    let hash = match &r.vec(MAGIC.len())?[..] {
        m if m == MAGIC => BlockHash::Blake3,
        m if m == MAGIC_SHA256 => BlockHash::Sha256,
        _ => return Err(damaged("not a dupr block index")),
    };
    let mut out = Vec::new();
    loop {
        let num = match r.bytes::<4>() {
            Ok(b) => u32::from_le_bytes(b),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e),
        };
        let n = r.u8()? as usize;
        let sha1 = String::from_utf8(r.vec(n)?).map_err(|_| damaged("bad volume hash"))?;
        let framing = match r.u8()? {
            1 => Framing::Gzip,
            2 => Framing::Pgp {
                prefix: r.u64()?,
                cipher: r.u8()?,
                literal_len: r.u64()?,
                compressed_len: r.u64()?,
                seipd_len: r.u64()?,
            },
            k => return Err(damaged(format!("unknown framing {k}"))),
        };
        let nb = r.u32()?;
        if nb > MAX_BLOCKS {
            return Err(damaged("too many blocks"));
        }
        let mut blocks = Vec::new();
        for _ in 0..nb {
            blocks.push(BlockInfo {
                out_off: r.u64()?,
                out_len: r.u64()?,
                in_len: r.u64()?,
                hash: r.bytes()?,
            });
        }
        let nf = r.u32()?;
        if nf > MAX_BLOCKS {
            return Err(damaged("too many entries"));
        }
        let mut firsts = Vec::new();
        for _ in 0..nf {
            let block = r.u32()?;
            let tar_offset = r.u64()?;
            let len = r.u32()?;
            if len > MAX_PATH {
                return Err(damaged("path too long"));
            }
            let p = r.vec(len as usize)?;
            let index = Index::parse(&p).ok_or_else(|| damaged("bad path"))?;
            firsts.push(FirstEntry {
                block,
                tar_offset,
                index,
            });
        }
        if keep(num) {
            out.push(VolumeIndex {
                num,
                sha1,
                layout: Layout {
                    framing,
                    blocks,
                    hash,
                },
                firsts,
            });
        }
    }
}

impl VolumeIndex {
    /// The block and tar offset to start reading at to meet every entry
    /// at or after `want` (index order): the last recorded entry before it.
    pub fn start_for(&self, want: &Index) -> (usize, u64) {
        self.firsts
            .iter()
            .take_while(|f| f.index < *want)
            .last()
            .map_or((0, 0), |f| (f.block as usize, f.tar_offset))
    }
}

type Decoded = io::Result<(u64, Vec<u8>)>;

struct Job {
    k: usize,
    raw: Vec<u8>,
    reply: crossbeam_channel::Sender<Decoded>,
}

/// Tar bytes of a volume from a given offset, read block by block through
/// its index, each block checked before use. Stored bytes are read on the
/// caller's thread; blocks are decrypted, inflated and hashed ahead on
/// worker threads, more of them the longer the read goes on.
pub struct BlockStream<'a> {
    file: Box<dyn RangeRead + Send + 'a>,
    v: std::sync::Arc<VolumeIndex>,
    key: std::sync::Arc<zeroize::Zeroizing<Vec<u8>>>,
    next: usize,
    inflight: std::collections::VecDeque<crossbeam_channel::Receiver<Decoded>>,
    ahead: usize,
    jobs: Option<crossbeam_channel::Sender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    cur: Vec<u8>,
    pos: usize,
    skip: u64,
    pool: Pool,
}

/// Blocks decoded ahead at most (each holds ~2 MiB while in flight).
const MAX_AHEAD: usize = 4;

/// Block buffers passed between the reader, the decoders and the consumer,
/// and reused: glibc (with dupr's low mmap threshold) would map and unmap
/// each 1 MiB buffer, and the page faults of filling fresh pages cost a
/// quarter of a restore's CPU.
#[derive(Clone, Default)]
struct Pool(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// Never more buffers kept than can be in use at once anyway.
    const MAX: usize = 2 * MAX_AHEAD + 2;

    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    fn give(&self, mut v: Vec<u8>) {
        v.clear();
        if let Ok(mut p) = self.0.lock() {
            if p.len() < Self::MAX {
                p.push(v);
            }
        }
    }
}

/// Decode block `k` from its stored bytes `raw` (given back to the pool).
fn decode_job(v: &VolumeIndex, k: usize, mut raw: Vec<u8>, key: &[u8], pool: &Pool) -> Decoded {
    let mut plain = pool.take();
    let r = v
        .layout
        .decode_into(k, &mut raw, key, &mut plain)
        .and_then(|()| v.layout.tar_of_block_in_place(k, &mut plain));
    pool.give(raw);
    r.map(|off| (off, plain))
}

impl<'a> BlockStream<'a> {
    /// A stream of `v`'s tar bytes from `tar_offset`, which lies in block
    /// `block`; `key` is the session key (empty for gzip volumes).
    pub fn new(
        file: Box<dyn RangeRead + Send + 'a>,
        key: zeroize::Zeroizing<Vec<u8>>,
        v: VolumeIndex,
        block: usize,
        tar_offset: u64,
    ) -> Self {
        let v = std::sync::Arc::new(v);
        let key = std::sync::Arc::new(key);
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, MAX_AHEAD);
        let (tx, rx) = crossbeam_channel::bounded::<Job>(MAX_AHEAD);
        let pool = Pool::default();
        let workers = (0..n)
            .filter_map(|i| {
                let rx = rx.clone();
                let v = v.clone();
                let key = key.clone();
                let pool = pool.clone();
                std::thread::Builder::new()
                    .name(format!("dupr-inflate-{i}"))
                    .spawn(move || {
                        for job in rx {
                            let r = decode_job(&v, job.k, job.raw, &key, &pool);
                            let _ = job.reply.send(r);
                        }
                    })
                    .ok()
            })
            .collect();
        BlockStream {
            file,
            v,
            key,
            next: block,
            inflight: Default::default(),
            ahead: 1,
            jobs: Some(tx),
            workers,
            cur: Vec::new(),
            pos: 0,
            skip: tar_offset,
            pool,
        }
    }

    fn top_up(&mut self) -> io::Result<()> {
        while self.inflight.len() < self.ahead && self.next < self.v.layout.blocks.len() {
            let k = self.next;
            self.next += 1;
            let mut raw = self.pool.take();
            self.v.layout.fetch_into(self.file.as_mut(), k, &mut raw)?;
            let (reply, rx) = crossbeam_channel::bounded(1);
            let job = Job { k, raw, reply };
            match &self.jobs {
                Some(tx) if !self.workers.is_empty() => {
                    tx.send(job)
                        .map_err(|_| io::Error::other("block decoder stopped"))?;
                }
                // No worker thread could start: decode here.
                _ => {
                    let r = decode_job(&self.v, k, job.raw, &self.key, &self.pool);
                    let _ = job.reply.send(r);
                }
            }
            self.inflight.push_back(rx);
        }
        Ok(())
    }
}

impl BlockStream<'_> {
    /// Decode (and check) the first block now, so a caller can still fall
    /// back to a whole-volume read: a session key that passed the 2-byte
    /// quick check by chance (1 in 65,536 wrong passphrases) fails here,
    /// and the whole read tells a wrong passphrase from damage.
    pub fn fill(&mut self) -> io::Result<bool> {
        while self.pos >= self.cur.len() {
            self.top_up()?;
            let Some(rx) = self.inflight.pop_front() else {
                return Ok(false);
            };
            let (off, tar) = rx
                .recv()
                .map_err(|_| io::Error::other("block decoder panicked"))??;
            let done = std::mem::replace(&mut self.cur, tar);
            self.pool.give(done);
            // The first block may start before the wanted offset.
            self.pos = self.skip.saturating_sub(off).min(self.cur.len() as u64) as usize;
            // A read that goes on is a long one: decode further ahead.
            self.ahead = (self.ahead * 2).min(MAX_AHEAD);
        }
        Ok(true)
    }
}

impl Read for BlockStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for BlockStream<'_> {
    fn drop(&mut self) {
        self.inflight.clear();
        self.jobs = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Check a session key against the quick-check bytes of the SEIPD prefix
/// (its last two bytes repeat the two before): a wrong passphrase is told
/// apart from a damaged block.
pub fn check_key(f: &mut dyn RangeRead, layout: &Layout, key: &[u8]) -> io::Result<bool> {
    let Framing::Pgp {
        prefix,
        cipher,
        seipd_len,
        ..
    } = &layout.framing
    else {
        return Ok(true);
    };
    let from = prefix + framed_offset(1, *seipd_len, SEIPD_POW);
    let mut ct = f.read_range(from, SEIPD_PREFIX)?;
    cfb_decrypt(*cipher, key, &[0u8; 16], &mut ct)?;
    Ok(ct[14..16] == ct[16..18])
}
