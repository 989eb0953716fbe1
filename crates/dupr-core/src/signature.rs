//! librsync MD4 signatures (magic `rs\x016`, strong length 8) computed in
//! constant memory while a file streams through the backup, plus the block
//! length rule of duplicity 3.x. Signatures must be exact: stock duplicity
//! computes its next deltas from them.

use fast_rsync::{Signature, SignatureOptions};

/// The magic number of a librsync MD4 signature (`rs\x016`, big-endian).
pub const MD4_SIG_MAGIC: u32 = 0x7273_0136;
/// Bytes of the strong (MD4) hash kept per block.
pub const STRONG_LEN: u32 = 8;
/// Bytes hashed per `fast_rsync` call; a multiple of every block length is used.
const BATCH: usize = 1 << 20;

/// duplicity 3.x: floor(sqrt(len)) rounded up to a multiple of 512, at least
/// 512, capped by `--max-blocksize` (itself rounded up to 512) when given.
pub fn block_len(file_len: u64, max_blocksize: Option<u32>) -> u32 {
    let root = file_len.isqrt();
    let mut b = root.div_ceil(512).max(1) * 512;
    if let Some(max) = max_blocksize {
        let max = (max as u64).div_ceil(512).max(1) * 512;
        b = b.min(max);
    }
    b.min(u32::MAX as u64 / 2) as u32
}

/// The 12-byte header of a serialized librsync signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The magic number ([`MD4_SIG_MAGIC`] for the signatures dupr reads).
    pub magic: u32,
    /// Bytes per block.
    pub block_len: u32,
    /// Bytes of strong hash kept per block.
    pub strong_len: u32,
}

impl Header {
    /// The header of `sig`, if it is that long.
    pub fn of(sig: &[u8]) -> Option<Header> {
        let be = |at: usize| Some(u32::from_be_bytes(sig.get(at..at + 4)?.try_into().ok()?));
        Some(Header {
            magic: be(0)?,
            block_len: be(4)?,
            strong_len: be(8)?,
        })
    }
}

/// Incremental signature of one stream.
pub struct SigBuilder {
    block_len: usize,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl SigBuilder {
    /// A signature of blocks of `block_len` bytes (see [`block_len`]).
    pub fn new(block_len: u32) -> Self {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MD4_SIG_MAGIC.to_be_bytes());
        out.extend_from_slice(&block_len.to_be_bytes());
        out.extend_from_slice(&STRONG_LEN.to_be_bytes());
        SigBuilder {
            block_len: block_len as usize,
            pending: Vec::new(),
            out,
        }
    }

    /// Feed the next bytes of the file. Every block completed so far is
    /// hashed at once, so [`SigBuilder::block`] can answer for it (the
    /// delta's in-place test reads the new sums while diffing).
    pub fn update(&mut self, mut data: &[u8]) {
        let bl = self.block_len;
        if !self.pending.is_empty() {
            let take = (bl - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < bl {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.hash(&block);
            self.pending = block;
            self.pending.clear();
        }
        // Whole blocks straight from the caller's buffer, a batch at a time.
        let whole = data.len() / bl * bl;
        let batch = (BATCH / bl).max(1) * bl;
        for blocks in data[..whole].chunks(batch) {
            self.hash(blocks);
        }
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The block length this signature uses.
    pub fn block_len(&self) -> u32 {
        self.block_len as u32
    }

    /// Block `k`'s record (rolling checksum, then the strong hash) once the
    /// whole block has been fed; None before that.
    pub fn block(&self, k: u64) -> Option<&[u8]> {
        let rec = 4 + STRONG_LEN as usize;
        let at = usize::try_from(k).ok()?.checked_mul(rec)?.checked_add(12)?;
        self.out.get(at..at.checked_add(rec)?)
    }

    fn hash(&mut self, blocks: &[u8]) {
        if blocks.is_empty() {
            return;
        }
        let sig = Signature::calculate(
            blocks,
            SignatureOptions {
                block_size: self.block_len as u32,
                crypto_hash_size: STRONG_LEN,
            },
        );
        // Every batch is a whole number of blocks, so block records simply
        // concatenate after dropping each batch's 12-byte header.
        self.out.extend_from_slice(&sig.serialized()[12..]);
    }

    /// The signature bytes: the header, then one record per block (the last
    /// may be short).
    pub fn finish(mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.hash(&rest);
        self.out
    }
}

/// Signature of a whole buffer (tests and small files).
pub fn signature_of(data: &[u8], block_len: u32) -> Vec<u8> {
    let mut b = SigBuilder::new(block_len);
    b.update(data);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_len_rule() {
        assert_eq!(block_len(0, None), 512);
        assert_eq!(block_len(6, None), 512);
        assert_eq!(block_len(1_500_000, None), 1536);
        assert_eq!(block_len(1 << 30, None), 32768);
        assert_eq!(block_len(1 << 30, Some(2048)), 2048);
        assert_eq!(block_len(1 << 30, Some(2000)), 2048);
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for bl in [512u32, 1536, 2048] {
            let whole = Signature::calculate(
                &data,
                SignatureOptions {
                    block_size: bl,
                    crypto_hash_size: 8,
                },
            );
            let mut b = SigBuilder::new(bl);
            for c in data.chunks(65536) {
                b.update(c);
            }
            assert_eq!(b.finish(), whole.serialized(), "block len {bl}");
        }
    }

    #[test]
    fn empty_and_tiny() {
        assert_eq!(signature_of(b"", 512).len(), 12);
        let s = signature_of(b"hello\n", 512);
        assert_eq!(s.len(), 24);
        assert_eq!(&s[..12], &[0x72, 0x73, 0x01, 0x36, 0, 0, 2, 0, 0, 0, 0, 8]);
    }
}
