//! The fast writing path for stored files: a push-based, two-stage pipeline
//! (compress on one thread; encrypt, hash and write on another) producing
//! gzip files or gpg-compatible symmetric OpenPGP messages.
//!
//! Why not rPGP's builder here: it pulls from a reader on one thread, cannot
//! set the compression level, and deflates incompressible data at full cost.
//! This writer frames the packets itself (literal and compressed packets with
//! partial lengths, SEIPD v1 with its MDC) on RustCrypto's AES-CFB and SHA-1,
//! and stores data that does not compress (deflate level 0) after a probe.
//! Reading stays with rPGP, which accepts anything gpg writes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use aes::cipher::KeyIvInit;
use crossbeam_channel::{bounded, Receiver, Sender};
use flate2::{Compress, Compression, Crc, FlushCompress};
use sha1::{Digest, Sha1};

/// What the stored file looks like.
#[derive(Clone)]
pub enum Format {
    Plain,
    Gzip {
        level: u32,
    },
    /// Symmetric OpenPGP: the SKESK packet to start with, the AES-256 session
    /// key, and the deflate level (None: no compressed packet).
    Pgp {
        skesk: Vec<u8>,
        key: zeroize::Zeroizing<Vec<u8>>,
        /// OpenPGP cipher id: 7, 8 or 9 (AES-128/192/256).
        cipher: u8,
        deflate_level: Option<u32>,
    },
}

const CHUNK: usize = 256 * 1024;

/// Adaptive raw deflate: data that does not shrink is written as stored
/// blocks for a while, then probed again, so random data costs little more
/// than a copy. Switching back restarts the compressor with the last 32 KiB
/// as its dictionary, so the deflate stream stays one valid stream.
struct Deflater {
    c: Compress,
    level: u32,
    storing: u32,
    /// The last input seen (dictionary for a restart).
    last: Vec<u8>,
    out: Vec<u8>,
}

impl Deflater {
    fn new(level: u32) -> Self {
        Deflater {
            c: Compress::new(Compression::new(level), false),
            level,
            storing: 0,
            last: Vec::new(),
            out: Vec::with_capacity(CHUNK + 1024),
        }
    }

    fn run(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        loop {
            if self.out.capacity() - self.out.len() < 64 * 1024 {
                self.out.reserve(CHUNK);
            }
            let before = self.c.total_in();
            let st = self
                .c
                .compress_vec(input, &mut self.out, flush)
                .map_err(io::Error::other)?;
            input = &input[(self.c.total_in() - before) as usize..];
            let room = self.out.len() < self.out.capacity();
            match flush {
                FlushCompress::Finish if st != flate2::Status::StreamEnd => continue,
                _ if input.is_empty() && room => return Ok(()),
                _ => continue,
            }
        }
    }

    fn stored_blocks(&mut self, data: &[u8]) {
        for part in data.chunks(65535) {
            let n = part.len() as u16;
            self.out.push(0); // BFINAL=0, BTYPE=00, aligned
            self.out.extend_from_slice(&n.to_le_bytes());
            self.out.extend_from_slice(&(!n).to_le_bytes());
            self.out.extend_from_slice(part);
        }
    }

    fn remember(&mut self, input: &[u8]) {
        if input.len() >= 32 * 1024 {
            self.last.clear();
            self.last
                .extend_from_slice(&input[input.len() - 32 * 1024..]);
        } else {
            self.last.extend_from_slice(input);
            let excess = self.last.len().saturating_sub(32 * 1024);
            self.last.drain(..excess);
        }
    }

    /// Compress one segment of input, deciding per segment whether to store.
    fn segment(&mut self, input: &[u8]) -> io::Result<()> {
        if self.level == 0 || input.is_empty() {
            self.remember(input);
            return self.run(input, FlushCompress::None);
        }
        if self.storing > 0 {
            self.stored_blocks(input);
            self.remember(input);
            self.storing -= 1;
            if self.storing == 0 {
                self.c.reset();
                self.c
                    .set_dictionary(&self.last)
                    .map_err(io::Error::other)?;
            }
            return Ok(());
        }
        let out_before = self.c.total_out();
        self.run(input, FlushCompress::Sync)?;
        self.remember(input);
        let grew = self.c.total_out() - out_before;
        if grew * 100 > input.len() as u64 * 97 {
            // Incompressible: store the next 4 MiB, then look again. The
            // sync flush above left the stream byte-aligned.
            self.storing = 16;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.storing > 0 {
            // Final empty stored block.
            self.out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
            Ok(())
        } else {
            self.run(&[], FlushCompress::Finish)
        }
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.out, Vec::with_capacity(CHUNK + 1024))
    }
}

/// New-format OpenPGP packet with partial body lengths.
struct Partial {
    tag: u8,
    started: bool,
    buf: Vec<u8>,
    pow: u8,
}

impl Partial {
    fn new(tag: u8, pow: u8) -> Self {
        Partial {
            tag,
            started: false,
            buf: Vec::new(),
            pow,
        }
    }

    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(data);
        let n = 1usize << self.pow;
        let mut off = 0;
        while self.buf.len() - off > n {
            if !self.started {
                out.push(0xC0 | self.tag);
                self.started = true;
            }
            out.push(0xE0 | self.pow);
            out.extend_from_slice(&self.buf[off..off + n]);
            off += n;
        }
        self.buf.drain(..off);
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
        let mut frame = Partial::new(18, 20);
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

    fn finish(mut self, out: &mut Vec<u8>) {
        let mut tail = vec![0xD3, 0x14];
        self.mdc.update(&tail);
        tail.extend_from_slice(&self.mdc.finalize());
        self.cfb.encrypt(&mut tail);
        self.frame.push(&tail, out);
        self.frame.finish(out);
    }
}

/// A stored file being written through the two stages.
pub struct FastEncoder {
    tx: Option<Sender<Vec<u8>>>,
    buf: Vec<u8>,
    pushed: u64,
    consumed: Arc<AtomicU64>,
    stored: Arc<AtomicU64>,
    stage1: Option<JoinHandle<io::Result<()>>>,
    stage2: Option<JoinHandle<io::Result<(File, String)>>>,
}

impl FastEncoder {
    pub fn new(file: File, format: Format) -> io::Result<Self> {
        let (tx, rx) = bounded::<Vec<u8>>(4);
        let (tx2, rx2) = bounded::<Vec<u8>>(4);
        let consumed = Arc::new(AtomicU64::new(0));
        let stored = Arc::new(AtomicU64::new(0));
        let c1 = consumed.clone();
        let f1 = format.clone();
        let stage1 = std::thread::Builder::new()
            .name("dupr-compress".into())
            .spawn(move || compress_stage(rx, tx2, f1, c1))?;
        let s2 = stored.clone();
        let stage2 = std::thread::Builder::new()
            .name("dupr-encrypt".into())
            .spawn(move || store_stage(rx2, file, format, s2))?;
        Ok(FastEncoder {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            pushed: 0,
            consumed,
            stored,
            stage1: Some(stage1),
            stage2: Some(stage2),
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

    /// Flush everything; returns the file, its size and SHA-1.
    pub fn finish(mut self) -> io::Result<(File, u64, String)> {
        self.send()?;
        self.tx = None;
        let r1 = self.stage1.take().map(|h| h.join());
        let r2 = self.stage2.take().map(|h| h.join());
        match r1 {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => return Err(e),
            _ => return Err(io::Error::other("compression thread panicked")),
        }
        match r2 {
            Some(Ok(Ok((f, sha)))) => Ok((f, self.stored.load(Ordering::Relaxed), sha)),
            Some(Ok(Err(e))) => Err(e),
            _ => Err(io::Error::other("encryption thread panicked")),
        }
    }
}

impl Write for FastEncoder {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
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
) -> io::Result<()> {
    let send = |v: Vec<u8>| -> io::Result<()> {
        if v.is_empty() {
            return Ok(());
        }
        tx.send(v)
            .map_err(|_| io::Error::other("encryption thread stopped"))
    };
    match format {
        Format::Plain => {
            for v in rx {
                consumed.fetch_add(v.len() as u64, Ordering::Relaxed);
                send(v)?;
            }
        }
        Format::Gzip { level } => {
            // RFC 1952 header: no name, no mtime, OS unknown.
            send(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            let mut d = Deflater::new(level);
            let mut crc = Crc::new();
            for v in rx {
                crc.update(&v);
                d.segment(&v)?;
                consumed.fetch_add(v.len() as u64, Ordering::Relaxed);
                send(d.take())?;
            }
            d.finish()?;
            let mut tail = d.take();
            tail.extend_from_slice(&crc.sum().to_le_bytes());
            tail.extend_from_slice(&crc.amount().to_le_bytes());
            send(tail)?;
        }
        Format::Pgp { deflate_level, .. } => {
            let mut literal = Partial::new(11, 16);
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
                }
                Some(level) => {
                    let mut compressed = Partial::new(8, 16);
                    let mut out = Vec::with_capacity(CHUNK + 64);
                    // ZIP (raw deflate), as gpg 2.2 writes for symmetric
                    // messages; raw deflate lets stored blocks be spliced in.
                    compressed.push(&[1], &mut out);
                    let mut d = Deflater::new(level);
                    for v in rx {
                        literal.push(&v, &mut lit_out);
                        d.segment(&lit_out)?;
                        lit_out.clear();
                        consumed.fetch_add(v.len() as u64, Ordering::Relaxed);
                        compressed.push(&d.take(), &mut out);
                        send(std::mem::take(&mut out))?;
                    }
                    literal.finish(&mut lit_out);
                    d.segment(&lit_out)?;
                    d.finish()?;
                    compressed.push(&d.take(), &mut out);
                    compressed.finish(&mut out);
                    send(out)?;
                }
            }
        }
    }
    Ok(())
}

fn store_stage(
    rx: Receiver<Vec<u8>>,
    file: File,
    format: Format,
    stored: Arc<AtomicU64>,
) -> io::Result<(File, String)> {
    let mut w = BufWriter::with_capacity(1 << 20, file);
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
            seipd.finish(&mut out);
            put(&out, &mut w)?;
        }
        _ => {
            for v in rx {
                put(&v, &mut w)?;
            }
        }
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    Ok((file, hex::encode(sha.finalize())))
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
        let (_, size, sha) = e.finish().unwrap();
        assert_eq!(size, std::fs::metadata(&p).unwrap().len());
        assert_eq!(sha, crate::crypt::sha1_file(&p).unwrap());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(&p).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, d);
        // The random 3 MB are stored, not inflated; the text shrinks.
        assert!(size < 3_000_000 + 1_500_000, "{size}");
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
