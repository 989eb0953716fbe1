//! The fast writing path for stored files: a push-based, two-stage pipeline
//! (compress on a pool of threads; encrypt, hash and write on another) producing
//! gzip files or gpg-compatible symmetric OpenPGP messages.
//!
//! Why not rPGP's builder here: it pulls from a reader on one thread, cannot
//! set the compression level, and deflates incompressible data at full cost.
//! This writer frames the packets itself (literal and compressed packets with
//! partial lengths, SEIPD v1 with its MDC) on RustCrypto's AES-CFB and SHA-1,
//! and compresses in independent 1 MiB blocks on every core, each kept
//! deflated only if that makes it smaller (see `BlockDeflater`).
//! Reading stays with rPGP, which accepts anything gpg writes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use aes::cipher::KeyIvInit;
use crossbeam_channel::{bounded, Receiver, Sender};
use flate2::{Compress, Compression, Crc, FlushCompress};
use sha1::{Digest, Sha1};

use crate::blocks::{BlockHash, BlockInfo, Framing, Layout};

/// Read until `buf` is full or the reader ends; the bytes read.
pub fn read_full(f: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads a stream on a thread of its own, up to `depth` chunks ahead of the
/// caller: the decoding behind a reader (decrypt, inflate, hash) then runs
/// beside the caller's own work instead of between it. The end is an
/// explicit empty chunk, so a reader thread that died reads as an error,
/// never as a short stream.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    /// Spent chunks go back to the thread: a fresh 256 KiB buffer per chunk
    /// costs an mmap and a page fault per 4 KiB.
    spent: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ReadAhead {
    /// Start reading `inner` in chunks of `chunk` bytes.
    pub fn new<R: io::Read + Send + 'static>(mut inner: R, chunk: usize, depth: usize) -> Self {
        let (tx, rx) = bounded(depth.max(1));
        let (spent, reuse) = bounded::<Vec<u8>>(depth.max(1) + 2);
        let on_failure = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("dupr-read-ahead".into())
            .spawn(move || loop {
                let mut buf = reuse.try_recv().unwrap_or_default();
                buf.resize(chunk.max(1), 0);
                let r = read_full(&mut inner, &mut buf).map(|n| {
                    buf.truncate(n);
                    buf
                });
                let last = !matches!(&r, Ok(b) if !b.is_empty());
                // A send fails only when the caller stopped reading.
                if tx.send(r).is_err() || last {
                    return;
                }
            });
        if let Err(e) = spawned {
            let _ = on_failure.send(Err(e));
        }
        ReadAhead {
            rx,
            spent,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

/// Stored files at least this big are decoded on a read-ahead thread
/// (each such reader holds about 1 MiB).
const READ_AHEAD_FROM: u64 = 1 << 20;

/// `r`, the decoder of a stored file of `stored` bytes, read ahead on a
/// thread of its own when the file is large (a full's signature file), so
/// its decryption, inflation and checks run beside the caller's work.
pub fn ahead_if_large(r: Box<dyn io::Read + Send>, stored: u64) -> Box<dyn io::Read + Send> {
    if stored >= READ_AHEAD_FROM {
        Box::new(ReadAhead::new(r, 256 << 10, 4))
    } else {
        r
    }
}

impl io::Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    let done = std::mem::replace(&mut self.cur, chunk);
                    let _ = self.spent.try_send(done);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    return Err(e);
                }
                Err(_) => return Err(io::Error::other("the read-ahead thread stopped")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the stored file looks like.
#[derive(Clone)]
pub enum Format {
    /// The bytes as written, neither compressed nor encrypted.
    Plain,
    /// A gzip file.
    Gzip {
        /// The deflate level, 0 to 9.
        level: u32,
    },
    /// Symmetric OpenPGP: the SKESK packet to start with, the AES session
    /// key (128, 192 or 256 bits), and the deflate level (None: no
    /// compressed packet).
    Pgp {
        /// The session-key packet (SKESK) the message starts with.
        skesk: Vec<u8>,
        /// The session key.
        key: zeroize::Zeroizing<Vec<u8>>,
        /// OpenPGP cipher id: 7, 8 or 9 (AES-128/192/256).
        cipher: u8,
        /// The deflate level of the compressed packet; None writes the literal
        /// packet without one.
        deflate_level: Option<u32>,
    },
}

const CHUNK: usize = 256 * 1024;

/// How much a stream may hold in flight. Volumes carry nearly all the
/// bytes: every core, blocks of `BLOCK_TAR`. The side files (signature
/// tars, manifests, the block index) carry about 1% of them: one worker and
/// blocks a quarter of that size, so they do not triple the memory a backup
/// needs (three encoders are open at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// A volume: all cores, full-size blocks.
    Volume,
    /// A side file: one worker, smaller blocks.
    Small,
}

impl Scale {
    fn workers(self) -> usize {
        match self {
            Scale::Volume => workers(),
            Scale::Small => 1,
        }
    }

    /// Divisor of the block size.
    fn shrink(self) -> u64 {
        match self {
            Scale::Volume => 1,
            Scale::Small => 4,
        }
    }
}

/// Each block starts with an empty dictionary and ends byte-aligned, so
/// blocks compress on any thread in any order and inflate without the ones
/// before them.
#[cfg(test)]
const BLOCK: usize = 1 << 20;

/// Bytes a run of stored deflate blocks takes for `n` input bytes.
fn stored_len(n: usize) -> usize {
    n + 5 * n.div_ceil(65535).max(1)
}

/// Append `data` as non-final stored deflate blocks.
fn stored_blocks(data: &[u8], out: &mut Vec<u8>) {
    // Exactly what it needs: pushes would double a 1 MiB block's buffer.
    out.reserve(stored_len(data.len()));
    for part in data.chunks(65535) {
        let n = part.len() as u16;
        out.push(0); // BFINAL=0, BTYPE=00; stored blocks start byte-aligned
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(part);
    }
}

/// A final, empty block with fixed codes: ends a raw deflate stream made of
/// non-final blocks.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// True when samples spread over `input` do not shrink at level 1: the block
/// is then stored without paying for a full deflate of random data. One
/// compressible sample is enough to try the whole block.
fn looks_incompressible(probe: &mut Compress, input: &[u8], buf: &mut Vec<u8>) -> bool {
    const SAMPLE: usize = 4096;
    const SAMPLES: usize = 4;
    if input.len() < SAMPLE * SAMPLES {
        return false;
    }
    (0..SAMPLES).all(|k| {
        let at = k * (input.len() - SAMPLE) / (SAMPLES - 1);
        probe.reset();
        buf.clear();
        buf.reserve(SAMPLE + 256);
        let ok = probe.compress_vec(&input[at..at + SAMPLE], buf, FlushCompress::Finish);
        matches!(ok, Ok(flate2::Status::StreamEnd)) && buf.len() * 100 >= SAMPLE * 97
    })
}

/// Deflate one block on its own: the deflated form unless it fails to
/// shrink below the stored form. Ends byte-aligned and non-final.
fn deflate_block(
    c: &mut Compress,
    probe: &mut Compress,
    scratch: &mut Vec<u8>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    if looks_incompressible(probe, input, scratch) {
        stored_blocks(input, out);
        return Ok(());
    }
    c.reset();
    let limit = stored_len(input.len());
    out.reserve(limit + 64);
    let mut rest = input;
    loop {
        let before = c.total_in();
        c.compress_vec(rest, out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        rest = &rest[(c.total_in() - before) as usize..];
        if out.len() > limit {
            break;
        }
        if rest.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        out.reserve(64 * 1024);
    }
    // Did not shrink: store it (one incompressible stretch costs only itself).
    out.clear();
    stored_blocks(input, out);
    Ok(())
}

/// Where compressed bytes go, in order.
type Emit<'a> = dyn FnMut(&[u8]) -> io::Result<()> + 'a;

struct Job {
    input: Vec<u8>,
    reply: Sender<io::Result<Done>>,
}

struct Done {
    out: Vec<u8>,
    in_len: u64,
    hash: [u8; 32],
}

/// Raw deflate of a stream cut into blocks, compressed on a pool of threads
/// and emitted in order (pigz-style). The output is one valid deflate
/// stream that zlib, gzip and gpg read unchanged; where each block starts
/// is recorded for [`crate::blocks`].
struct BlockDeflater {
    pending: Vec<u8>,
    /// Input bytes per block, and for the first block.
    block: usize,
    first: usize,
    inflight: VecDeque<Receiver<io::Result<Done>>>,
    max_inflight: usize,
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    emitted: u64,
    infos: Vec<BlockInfo>,
}

impl BlockDeflater {
    fn new(level: u32, block: usize, first: usize, n: usize) -> io::Result<Self> {
        let (tx, rx) = bounded::<Job>(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let rx: Receiver<Job> = rx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("dupr-deflate-{i}"))
                    .spawn(move || {
                        let mut c = Compress::new(Compression::new(level), false);
                        let mut probe = Compress::new(Compression::new(1), false);
                        let mut scratch = Vec::new();
                        for job in rx {
                            let mut out = Vec::new();
                            let r = if level == 0 {
                                stored_blocks(&job.input, &mut out);
                                Ok(())
                            } else {
                                deflate_block(
                                    &mut c,
                                    &mut probe,
                                    &mut scratch,
                                    &job.input,
                                    &mut out,
                                )
                            };
                            let r = r.map(|()| Done {
                                out,
                                in_len: job.input.len() as u64,
                                hash: BlockHash::Blake3.of(&job.input),
                            });
                            let _ = job.reply.send(r);
                        }
                    })?,
            );
        }
        Ok(BlockDeflater {
            pending: Vec::with_capacity(first),
            block,
            first,
            inflight: VecDeque::new(),
            max_inflight: n + 1,
            jobs: Some(tx),
            workers: handles,
            emitted: 0,
            infos: Vec::new(),
        })
    }

    fn submit(&mut self, input: Vec<u8>, out: &mut Emit<'_>) -> io::Result<()> {
        let (reply, rx) = bounded(1);
        self.jobs
            .as_ref()
            .expect("until dropped")
            .send(Job { input, reply })
            .map_err(|_| io::Error::other("compression worker stopped"))?;
        self.inflight.push_back(rx);
        while self.inflight.len() > self.max_inflight {
            self.collect_front(out)?;
        }
        // Emit whatever is already done, in order, without waiting.
        while let Some(Ok(r)) = self.inflight.front().map(|f| f.try_recv()) {
            self.inflight.pop_front();
            self.emit(r?, out)?;
        }
        Ok(())
    }

    /// Hand one finished block on as it is (no gathering of several).
    fn emit(&mut self, d: Done, out: &mut Emit<'_>) -> io::Result<()> {
        self.infos.push(BlockInfo {
            out_off: self.emitted,
            out_len: d.out.len() as u64,
            in_len: d.in_len,
            hash: d.hash,
        });
        self.emitted += d.out.len() as u64;
        out(&d.out)
    }

    fn collect_front(&mut self, out: &mut Emit<'_>) -> io::Result<()> {
        if let Some(rx) = self.inflight.pop_front() {
            let r = rx
                .recv()
                .map_err(|_| io::Error::other("compression worker panicked"))?;
            self.emit(r?, out)?;
        }
        Ok(())
    }

    fn cut_at(&self) -> usize {
        if self.infos.is_empty() && self.inflight.is_empty() {
            self.first
        } else {
            self.block
        }
    }

    /// Add input; compressed bytes that are ready are appended to `out`.
    fn push(&mut self, mut data: &[u8], out: &mut Emit<'_>) -> io::Result<()> {
        while !data.is_empty() {
            let cut = self.cut_at();
            let take = (cut - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == cut {
                let block = std::mem::replace(&mut self.pending, Vec::with_capacity(self.block));
                self.submit(block, out)?;
            }
        }
        Ok(())
    }

    /// Compress the rest (`tail` joins the last block, however long), wait
    /// for every block and end the stream.
    fn finish(&mut self, tail: &[u8], out: &mut Emit<'_>) -> io::Result<()> {
        self.pending.extend_from_slice(tail);
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            self.submit(block, out)?;
        }
        while !self.inflight.is_empty() {
            self.collect_front(out)?;
        }
        self.emitted += FINAL_BLOCK.len() as u64;
        out(&FINAL_BLOCK)
    }
}

impl Drop for BlockDeflater {
    fn drop(&mut self) {
        self.inflight.clear();
        self.jobs = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Compression threads per stored file: every core (the tar producer and the
/// encryption stage mostly wait on them), at most 8.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// New-format OpenPGP packet with partial body lengths.
struct Partial {
    tag: u8,
    started: bool,
    /// Body bytes so far.
    total: u64,
    buf: Vec<u8>,
    pow: u8,
}

impl Partial {
    fn new(tag: u8, pow: u8) -> Self {
        Partial {
            tag,
            started: false,
            total: 0,
            buf: Vec::new(),
            pow,
        }
    }

    /// Frame `data`: every full chunk goes out (always leaving at least one
    /// byte for the final length); only the rest, at most one chunk, is
    /// kept, so a 1 MiB push never doubles into the buffer first.
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.total += data.len() as u64;
        let n = 1usize << self.pow;
        let pending = self.buf.len() + data.len();
        if pending <= n {
            self.buf.extend_from_slice(data);
            return;
        }
        let chunks = (pending - 1) / n;
        out.reserve(chunks * (n + 1) + 1);
        let mut rest = data;
        for _ in 0..chunks {
            if !self.started {
                out.push(0xC0 | self.tag);
                self.started = true;
            }
            out.push(0xE0 | self.pow);
            // The buffered bytes (fewer than a chunk) lead the first one.
            let held = std::mem::take(&mut self.buf);
            out.extend_from_slice(&held);
            let (now, later) = rest.split_at(n - held.len());
            out.extend_from_slice(now);
            rest = later;
            self.buf = held;
            self.buf.clear();
        }
        self.buf.extend_from_slice(rest);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            out.push(0xC0 | self.tag);
        }
        let len = self.buf.len();
        if len < 192 {
            out.push(len as u8);
        } else if len < 8384 {
            let l = len - 192;
            out.push(((l >> 8) + 192) as u8);
            out.push((l & 0xff) as u8);
        } else {
            out.push(0xFF);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        out.extend_from_slice(&self.buf);
        self.buf.clear();
    }
}

/// OpenPGP CFB over the AES variants.
enum Cfb {
    A128(cfb_mode::BufEncryptor<aes::Aes128>),
    A192(cfb_mode::BufEncryptor<aes::Aes192>),
    A256(cfb_mode::BufEncryptor<aes::Aes256>),
}

impl Cfb {
    fn new(cipher: u8, key: &[u8]) -> io::Result<Cfb> {
        let iv = [0u8; 16];
        let e = |e: aes::cipher::InvalidLength| io::Error::other(format!("bad key: {e}"));
        Ok(match cipher {
            7 => Cfb::A128(cfb_mode::BufEncryptor::new_from_slices(key, &iv).map_err(e)?),
            8 => Cfb::A192(cfb_mode::BufEncryptor::new_from_slices(key, &iv).map_err(e)?),
            9 => Cfb::A256(cfb_mode::BufEncryptor::new_from_slices(key, &iv).map_err(e)?),
            c => {
                return Err(io::Error::other(format!(
                    "cipher {c} is not supported for writing"
                )))
            }
        })
    }

    fn encrypt(&mut self, data: &mut [u8]) {
        match self {
            Cfb::A128(c) => c.encrypt(data),
            Cfb::A192(c) => c.encrypt(data),
            Cfb::A256(c) => c.encrypt(data),
        }
    }
}

/// Stage 2: SEIPD v1 encryption (CFB, zero IV, random prefix, MDC).
struct Seipd {
    cfb: Cfb,
    mdc: Sha1,
    frame: Partial,
}

impl Seipd {
    fn new(cipher: u8, key: &[u8], out: &mut Vec<u8>) -> io::Result<Self> {
        let mut cfb = Cfb::new(cipher, key)?;
        let mut frame = Partial::new(18, crate::blocks::SEIPD_POW);
        let mut prefix = [0u8; 18];
        rand::Rng::fill(&mut rand::thread_rng(), &mut prefix[..16]);
        prefix[16] = prefix[14];
        prefix[17] = prefix[15];
        let mut mdc = Sha1::new();
        mdc.update(prefix);
        cfb.encrypt(&mut prefix);
        let mut body = vec![1u8];
        body.extend_from_slice(&prefix);
        frame.push(&body, out);
        Ok(Seipd { cfb, mdc, frame })
    }

    fn push(&mut self, plain: &mut [u8], out: &mut Vec<u8>) {
        self.mdc.update(&plain[..]);
        self.cfb.encrypt(plain);
        self.frame.push(plain, out);
    }

    /// Returns the SEIPD packet's body length.
    fn finish(mut self, out: &mut Vec<u8>) -> u64 {
        let mut tail = vec![0xD3, 0x14];
        self.mdc.update(&tail);
        tail.extend_from_slice(&self.mdc.finalize());
        self.cfb.encrypt(&mut tail);
        self.frame.push(&tail, out);
        self.frame.finish(out);
        self.frame.total
    }
}

/// A stored file being written through the two stages.
pub struct FastEncoder {
    tx: Option<Sender<Vec<u8>>>,
    buf: Vec<u8>,
    pushed: u64,
    consumed: Arc<AtomicU64>,
    stored: Arc<AtomicU64>,
    stage1: Option<JoinHandle<io::Result<Option<Stage1Layout>>>>,
    format: Format,
    stage2: Option<JoinHandle<io::Result<StoreDone>>>,
}

/// The store stage's result: the file, its SHA-1, and for OpenPGP the
/// session-key packets' length and the SEIPD body length.
type StoreDone = (File, String, Option<(u64, u64)>);

/// What the compression stage knows of the layout.
struct Stage1Layout {
    literal_len: u64,
    compressed_len: u64,
    blocks: Vec<BlockInfo>,
}

/// What a finished stored file is.
pub struct Finished {
    /// The stored file, as written.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-1, in hex (for a volume, the hash the manifest records).
    pub sha1_hex: String,
    /// Where its blocks are, when it can be read from any block.
    pub layout: Option<Layout>,
}

impl FastEncoder {
    /// An encoder writing `file` in `format`, scaled for a volume.
    pub fn new(file: File, format: Format) -> io::Result<Self> {
        Self::with_scale(file, format, Scale::Volume)
    }

    /// An encoder writing `file` in `format`, with the threads and block size
    /// of `scale`.
    pub fn with_scale(file: File, format: Format, scale: Scale) -> io::Result<Self> {
        let (tx, rx) = bounded::<Vec<u8>>(4);
        let (tx2, rx2) = bounded::<Vec<u8>>(2);
        let consumed = Arc::new(AtomicU64::new(0));
        let stored = Arc::new(AtomicU64::new(0));
        let c1 = consumed.clone();
        let f1 = format.clone();
        let f2 = format.clone();
        let stage1 = std::thread::Builder::new()
            .name("dupr-compress".into())
            .spawn(move || compress_stage(rx, tx2, f1, c1, scale))?;
        let s2 = stored.clone();
        let stage2 = std::thread::Builder::new()
            .name("dupr-encrypt".into())
            .spawn(move || store_stage(rx2, file, f2, s2))?;
        Ok(FastEncoder {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            pushed: 0,
            consumed,
            stored,
            stage1: Some(stage1),
            stage2: Some(stage2),
            format,
        })
    }

    /// Estimated stored size: all input so far at the output/input ratio,
    /// scaled by the compression ratio so far (volume boundaries need it).
    pub fn stored_estimate(&self) -> u64 {
        let stored = self.stored.load(Ordering::Relaxed);
        let consumed = self.consumed.load(Ordering::Relaxed).max(1);
        estimate(stored, consumed, self.pushed + self.buf.len() as u64)
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.pushed += b.len() as u64;
        match self.tx.as_ref().map(|t| t.send(b)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.fail()),
        }
    }

    /// The error that stopped a stage.
    fn fail(&mut self) -> io::Error {
        self.tx = None;
        if let Some(Ok(Err(e))) = self.stage1.take().map(|h| h.join()) {
            return e;
        }
        if let Some(Ok(Err(e))) = self.stage2.take().map(|h| h.join()) {
            return e;
        }
        io::Error::other("compression thread stopped")
    }

    /// Flush everything; returns the file, its size, SHA-1 and layout.
    pub fn finish(mut self) -> io::Result<Finished> {
        self.send()?;
        self.tx = None;
        let r1 = self.stage1.take().map(|h| h.join());
        let r2 = self.stage2.take().map(|h| h.join());
        let l1 = match r1 {
            Some(Ok(Ok(l))) => l,
            Some(Ok(Err(e))) => return Err(e),
            _ => return Err(io::Error::other("compression thread panicked")),
        };
        let (file, sha1_hex, l2) = match r2 {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => return Err(e),
            _ => return Err(io::Error::other("encryption thread panicked")),
        };
        let layout = match (l1, l2, &self.format) {
            (Some(l), None, Format::Gzip { .. }) => Some(Layout {
                framing: Framing::Gzip,
                blocks: l.blocks,
                hash: BlockHash::Blake3,
            }),
            (Some(l), Some((prefix, seipd_len)), Format::Pgp { cipher, .. }) => Some(Layout {
                framing: Framing::Pgp {
                    prefix,
                    cipher: *cipher,
                    literal_len: l.literal_len,
                    compressed_len: l.compressed_len,
                    seipd_len,
                },
                blocks: l.blocks,
                hash: BlockHash::Blake3,
            }),
            _ => None,
        };
        Ok(Finished {
            file,
            size: self.stored.load(Ordering::Relaxed),
            sha1_hex,
            layout,
        })
    }
}

impl Write for FastEncoder {
    /// Input goes on in chunks, however big the write: a 1 MiB write does
    /// not grow the chunk buffer to 1 MiB.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = (CHUNK - self.buf.len().min(CHUNK)).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() >= CHUNK {
                self.send()?;
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn compress_stage(
    rx: Receiver<Vec<u8>>,
    tx: Sender<Vec<u8>>,
    format: Format,
    consumed: Arc<AtomicU64>,
    scale: Scale,
) -> io::Result<Option<Stage1Layout>> {
    // Pieces of at most a chunk: a finished 1 MiB block does not sit whole
    // in the channel and again in the next stage's buffers.
    let send = |v: Vec<u8>| -> io::Result<()> {
        let stopped = |_| io::Error::other("encryption thread stopped");
        if v.len() <= CHUNK {
            if !v.is_empty() {
                tx.send(v).map_err(stopped)?;
            }
            return Ok(());
        }
        for piece in v.chunks(CHUNK) {
            tx.send(piece.to_vec()).map_err(stopped)?;
        }
        Ok(())
    };
    let send_slice = |b: &[u8]| -> io::Result<()> {
        for piece in b.chunks(CHUNK) {
            tx.send(piece.to_vec())
                .map_err(|_| io::Error::other("encryption thread stopped"))?;
        }
        Ok(())
    };
    match format {
        Format::Plain => {
            for v in rx {
                consumed.fetch_add(v.len() as u64, Ordering::Relaxed);
                send(v)?;
            }
            Ok(None)
        }
        Format::Gzip { level } => {
            // RFC 1952 header: no name, no mtime, OS unknown.
            send(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            let block = (crate::blocks::BLOCK_TAR / scale.shrink()) as usize;
            let mut d = BlockDeflater::new(level, block, block, scale.workers())?;
            let mut crc = Crc::new();
            let mut sink = |b: &[u8]| send_slice(b);
            for v in rx {
                crc.update(&v);
                d.push(&v, &mut sink)?;
                consumed.fetch_add(v.len() as u64, Ordering::Relaxed);
            }
            d.finish(&[], &mut sink)?;
            let mut tail = Vec::with_capacity(8);
            tail.extend_from_slice(&crc.sum().to_le_bytes());
            tail.extend_from_slice(&crc.amount().to_le_bytes());
            send(tail)?;
            Ok(Some(Stage1Layout {
                literal_len: 0,
                compressed_len: 0,
                blocks: std::mem::take(&mut d.infos),
            }))
        }
        Format::Pgp { deflate_level, .. } => {
            let mut literal = Partial::new(11, crate::blocks::LITERAL_POW);
            let mut lit_out = Vec::with_capacity(CHUNK + 64);
            // Literal header: binary, no file name, date 0.
            literal.push(&[b'b', 0, 0, 0, 0, 0], &mut lit_out);
            match deflate_level {
                None => {
                    for v in rx {
                        literal.push(&v, &mut lit_out);
                        consumed.fetch_add(v.len() as u64, Ordering::Relaxed);
                        send(std::mem::take(&mut lit_out))?;
                    }
                    literal.finish(&mut lit_out);
                    send(lit_out)?;
                    Ok(None)
                }
                Some(level) => {
                    let mut compressed = Partial::new(8, crate::blocks::COMPRESSED_POW);
                    let mut out = Vec::with_capacity(CHUNK + 64);
                    // ZIP (raw deflate), as gpg 2.2 writes for symmetric
                    // messages; raw deflate lets stored blocks be spliced in.
                    compressed.push(&[1], &mut out);
                    // Blocks hold whole literal chunks (header + 2^16 body
                    // bytes), BLOCK_TAR body bytes each, the first one also
                    // the packet's tag: every block starts on a chunk header.
                    let per =
                        (crate::blocks::BLOCK_TAR >> crate::blocks::LITERAL_POW) / scale.shrink();
                    let block = (per.max(1) * ((1u64 << crate::blocks::LITERAL_POW) + 1)) as usize;
                    let mut d = BlockDeflater::new(level, block, block + 1, scale.workers())?;
                    let mut sink = |b: &[u8]| {
                        compressed.push(b, &mut out);
                        send(std::mem::take(&mut out))
                    };
                    for v in rx {
                        literal.push(&v, &mut lit_out);
                        d.push(&lit_out, &mut sink)?;
                        lit_out.clear();
                        consumed.fetch_add(v.len() as u64, Ordering::Relaxed);
                    }
                    // The final chunk (its header is 1 to 5 bytes) stays in
                    // the last block, so no block starts inside it.
                    literal.finish(&mut lit_out);
                    d.finish(&lit_out, &mut sink)?;
                    compressed.finish(&mut out);
                    send(out)?;
                    Ok(Some(Stage1Layout {
                        literal_len: literal.total,
                        compressed_len: compressed.total,
                        blocks: std::mem::take(&mut d.infos),
                    }))
                }
            }
        }
    }
}

fn store_stage(
    rx: Receiver<Vec<u8>>,
    file: File,
    format: Format,
    stored: Arc<AtomicU64>,
) -> io::Result<StoreDone> {
    let mut w = BufWriter::with_capacity(256 << 10, file);
    let mut layout = None;
    let mut sha = Sha1::new();
    let mut put = |b: &[u8], w: &mut BufWriter<File>| -> io::Result<()> {
        w.write_all(b)?;
        sha.update(b);
        stored.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(())
    };
    match format {
        Format::Pgp {
            skesk, key, cipher, ..
        } => {
            put(&skesk, &mut w)?;
            let mut out = Vec::with_capacity(CHUNK + 64);
            let mut seipd = Seipd::new(cipher, &key, &mut out)?;
            for mut v in rx {
                seipd.push(&mut v, &mut out);
                put(&out, &mut w)?;
                out.clear();
            }
            let seipd_len = seipd.finish(&mut out);
            put(&out, &mut w)?;
            layout = Some((skesk.len() as u64, seipd_len));
        }
        _ => {
            for v in rx {
                put(&v, &mut w)?;
            }
        }
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    Ok((file, hex::encode(sha.finalize()), layout))
}

/// The stored size of `total` input bytes, `stored` of output having come
/// from (at most) `consumed` of them. The stages hold a block or more of
/// input before any output appears, so until a few MiB are out the ratio is
/// unreliable (it reads far too low) and 1.0 is assumed: a volume then ends
/// near `--volsize` for incompressible data and early, never late, for
/// compressible data.
pub fn estimate(stored: u64, consumed: u64, total: u64) -> u64 {
    let ratio = if stored < 4 << 20 {
        1.0
    } else {
        (stored as f64 / consumed.max(1) as f64).min(1.1)
    };
    ((total as f64 * ratio) as u64).max(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes arrive in order and end cleanly; an error arrives in its place
    /// after the bytes before it; a reader thread that stops is an error.
    #[test]
    fn read_ahead_keeps_order_errors_and_ends() {
        use std::io::Read;
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        ReadAhead::new(std::io::Cursor::new(data.clone()), 4096, 2)
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == data);
        struct Fails(usize);
        impl Read for Fails {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("damaged at the end"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = ReadAhead::new(Fails(10_000), 4096, 2);
        let mut got = vec![0u8; 8192];
        r.read_exact(&mut got).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("damaged at the end"), "{e}");
        struct Panics;
        impl Read for Panics {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("reader thread dies (expected in this test)")
            }
        }
        let e = ReadAhead::new(Panics, 4096, 2)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("stopped"), "{e}");
    }
    use std::io::Read;

    fn data() -> Vec<u8> {
        let mut v: Vec<u8> = Vec::new();
        for i in 0..200_000u32 {
            v.extend_from_slice(format!("line {} of text {}\n", i, i % 7).as_bytes());
        }
        let mut x = 12345u64;
        for _ in 0..3_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x as u8);
        }
        v
    }

    #[test]
    fn gzip_round_trip_and_stores_random_data() {
        let d = data();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        let mut e = FastEncoder::new(File::create(&p).unwrap(), Format::Gzip { level: 6 }).unwrap();
        for c in d.chunks(100_000) {
            e.write_all(c).unwrap();
        }
        let fin = e.finish().unwrap();
        let size = fin.size;
        assert_eq!(size, std::fs::metadata(&p).unwrap().len());
        assert_eq!(fin.sha1_hex, crate::crypt::sha1_file(&p).unwrap());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(&p).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, d);
        // The random 3 MB are stored, not inflated; the text shrinks.
        assert!(size < 3_000_000 + 1_500_000, "{size}");
    }

    /// Issue 18: an incompressible start must not switch compression off for
    /// the text after it, and random data is stored, not inflated.
    #[test]
    fn compression_is_decided_per_block() {
        let d = data();
        let (text, random) = d.split_at(d.len() - 3_000_000);
        let mut v = random.to_vec();
        v.extend_from_slice(text);
        v.extend_from_slice(&random[..100_000]);
        v.extend_from_slice(text);
        let dir = tempfile::tempdir().unwrap();
        for level in [1, 3, 9] {
            let text_alone = {
                let mut e =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
                e.write_all(text).unwrap();
                e.finish().unwrap().len()
            };
            let p = dir.path().join("x.gz");
            let mut e =
                FastEncoder::new(File::create(&p).unwrap(), Format::Gzip { level }).unwrap();
            for c in v.chunks(300_000) {
                e.write_all(c).unwrap();
            }
            let size = e.finish().unwrap().size;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(File::open(&p).unwrap())
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == v, "level {level}: round trip");
            // Random parts stored at ~0.01% overhead; both texts compressed
            // (independent blocks cost a little against one stream).
            let bound = 3_000_000 + 100_000 + 2 * text_alone * 110 / 100 + 1000;
            assert!(size as usize <= bound, "level {level}: {size} > {bound}");
        }
    }

    #[test]
    fn blocks_inflate_on_their_own() {
        let d = mixed();
        let mut out = Vec::new();
        let mut b = BlockDeflater::new(3, BLOCK, BLOCK, workers()).unwrap();
        let mut starts = Vec::new();
        let mut sink = |x: &[u8]| {
            out.extend_from_slice(x);
            Ok(())
        };
        for c in d.chunks(BLOCK) {
            starts.push(b.emitted as usize);
            b.push(c, &mut sink).unwrap();
            // Force each block out before the next starts.
            while !b.inflight.is_empty() {
                b.collect_front(&mut sink).unwrap();
            }
        }
        b.finish(&[], &mut sink).unwrap();
        // The whole stream inflates...
        let mut all = Vec::new();
        flate2::read::DeflateDecoder::new(&out[..])
            .read_to_end(&mut all)
            .unwrap();
        assert!(all == d);
        // ...and so does every tail of it, from any block start.
        for (k, &s) in starts.iter().enumerate() {
            let mut tail = Vec::new();
            flate2::read::DeflateDecoder::new(&out[s..])
                .read_to_end(&mut tail)
                .unwrap();
            assert!(tail[..] == d[k * BLOCK..], "block {k}");
        }
    }

    #[test]
    fn partial_lengths() {
        let mut p = Partial::new(11, 9);
        let mut out = Vec::new();
        p.push(&[7u8; 1200], &mut out);
        p.finish(&mut out);
        assert_eq!(out[0], 0xCB);
        assert_eq!(out[1], 0xE9);
        assert_eq!(out[2 + 512], 0xE9);
        // 1200 - 1024 = 176 final bytes, one-octet length.
        assert_eq!(out[2 + 512 + 1 + 512], 176);
        assert_eq!(out.len(), 1 + 1 + 512 + 1 + 512 + 1 + 176);
    }

    fn mixed() -> Vec<u8> {
        let d = data();
        let (text, random) = d.split_at(d.len() - 3_000_000);
        let mut v = Vec::new();
        for _ in 0..2 {
            v.extend_from_slice(random);
            v.extend_from_slice(text);
        }
        v
    }

    /// SKESK (no ESK) + key for a passphrase, as crypt::Crypto makes them.
    fn pgp_format(pw: &str) -> Format {
        use pgp::crypto::hash::HashAlgorithm;
        use pgp::ser::Serialize;
        use pgp::types::StringToKey;
        let s2k = StringToKey::new_iterated(rand::thread_rng(), HashAlgorithm::Sha256, 96);
        let key = s2k.derive_key(pw.as_bytes(), 32).unwrap();
        let mut body = vec![4u8, 9];
        s2k.to_writer(&mut body).unwrap();
        let mut skesk = vec![0xC3, body.len() as u8];
        skesk.extend_from_slice(&body);
        Format::Pgp {
            skesk,
            key: zeroize::Zeroizing::new(key.as_ref().to_vec()),
            cipher: 9,
            deflate_level: Some(6),
        }
    }

    #[test]
    fn gzip_switches_between_stored_and_deflated() {
        let d = mixed();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gz");
        let mut e = FastEncoder::new(File::create(&p).unwrap(), Format::Gzip { level: 1 }).unwrap();
        e.write_all(&d).unwrap();
        e.finish().unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(&p).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == d);
    }

    /// Every block of a written volume reads on its own (seekable volumes),
    /// at lengths that put chunk and block edges everywhere.
    #[test]
    fn every_block_reads_on_its_own() {
        let big = mixed();
        let dir = tempfile::tempdir().unwrap();
        let lens = [
            0usize,
            100,
            65530,
            65531,
            (1 << 20) - 6,
            (1 << 20) - 5,
            3 * (1 << 20) + 17,
            big.len(),
        ];
        for len in lens {
            let d = &big[..len];
            for fmt in [Format::Gzip { level: 3 }, pgp_format("pw")] {
                let key = match &fmt {
                    Format::Pgp { key, .. } => key.to_vec(),
                    _ => Vec::new(),
                };
                let p = dir.path().join("v");
                let mut e = FastEncoder::new(File::create(&p).unwrap(), fmt).unwrap();
                for c in d.chunks(100_003) {
                    e.write_all(c).unwrap();
                }
                let layout = e.finish().unwrap().layout.expect("a layout");
                let mut f = File::open(&p).unwrap();
                let mut at = 0usize;
                for k in 0..layout.blocks.len() {
                    let plain = layout.read_block(&mut f, &key, k).unwrap();
                    let (off, tar) = layout.tar_of_block(k, plain).unwrap();
                    assert_eq!(off as usize, at, "len {len} block {k}");
                    assert!(tar[..] == d[at..at + tar.len()], "len {len} block {k}");
                    at += tar.len();
                }
                assert_eq!(at, len);
                // A damaged byte inside a block is caught by that block.
                if len > 200_000 {
                    let mut raw = std::fs::read(&p).unwrap();
                    let mid = raw.len() / 2;
                    raw[mid] ^= 0x40;
                    let mut c = std::io::Cursor::new(raw);
                    let bad = (0..layout.blocks.len())
                        .filter(|&k| layout.read_block(&mut c, &key, k).is_err())
                        .count();
                    assert!((1..=2).contains(&bad), "len {len}: {bad} blocks failed");
                }
            }
        }
    }

    #[test]
    fn pgp_messages_decrypt_with_rpgp() {
        use pgp::composed::Message;
        use pgp::types::Password;
        let d = mixed();
        let dir = tempfile::tempdir().unwrap();
        for fmt in [pgp_format("pw"), {
            let Format::Pgp { skesk, key, .. } = pgp_format("pw") else {
                unreachable!()
            };
            Format::Pgp {
                skesk,
                key,
                cipher: 9,
                deflate_level: None,
            }
        }] {
            let p = dir.path().join("m.gpg");
            let mut e = FastEncoder::new(File::create(&p).unwrap(), fmt).unwrap();
            for c in d.chunks(77_777) {
                e.write_all(c).unwrap();
            }
            e.finish().unwrap();
            let raw = std::fs::read(&p).unwrap();
            let msg = Message::from_bytes(&raw[..]).unwrap();
            let mut msg = msg.decrypt_with_password(&Password::from("pw")).unwrap();
            if msg.is_compressed() {
                msg = msg.decompress().unwrap();
            }
            let mut out = Vec::new();
            msg.read_to_end(&mut out).unwrap();
            assert!(out == d);
            // A flipped bit is caught (MDC or CFB garbage).
            let mut bad = raw.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 1;
            let r = Message::from_bytes(&bad[..])
                .and_then(|m| m.decrypt_with_password(&Password::from("pw")))
                .and_then(|mut m| {
                    if m.is_compressed() {
                        m = m.decompress()?;
                    }
                    let mut v = Vec::new();
                    m.read_to_end(&mut v).map_err(pgp::errors::Error::from)?;
                    Ok(v)
                });
            assert!(r.is_err() || r.unwrap() != d);
        }
    }
}
