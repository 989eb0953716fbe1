//! The compression/encryption layer between tar bytes and stored files.
//! Every stored byte passes a counter (volume boundaries are measured on
//! stored size, as duplicity does) and a SHA-1 (the manifest's hash).
//!
//! OpenPGP is rPGP (pure Rust, permissive, fastest in our measurements).
//! Its encoder pulls from a reader, so encryption runs on its own thread fed
//! through a channel; that also puts it on the second core.
//! Symmetric messages carry an SKESK without an encrypted session key (as
//! gpg writes them): the S2K-derived key is the session key, derived once
//! per run and shared by every file of the run, so the deliberately slow
//! S2K is paid once rather than per volume.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flate2::write::GzEncoder;
use flate2::Compression;
use pgp::composed::{DecryptionOptions, Esk};
use pgp::composed::{Message, MessageBuilder, PlainSessionKey, RawSessionKey, TheRing};
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{CompressionAlgorithm, Password, Seipdv1ReadMode, StringToKey};
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use crate::error::{Error, IoContext, Result};

/// Symmetric OpenPGP settings of one run.
pub struct Crypto {
    passphrase: Zeroizing<Vec<u8>>,
    s2k: StringToKey,
    sym_alg: SymmetricKeyAlgorithm,
    /// Derived on first use: reading unencrypted archives never pays the S2K.
    key: std::sync::OnceLock<RawSessionKey>,
    compression: Option<CompressionAlgorithm>,
    /// Session keys derived while decrypting, by serialized SKESK.
    derived: Mutex<HashMap<Vec<u8>, PlainSessionKey>>,
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Crypto { .. }")
    }
}

impl Crypto {
    /// Derive this run's key from `passphrase` (iterated + salted SHA-256,
    /// the maximum count gpg uses, AES-256).
    pub fn symmetric(passphrase: Zeroizing<Vec<u8>>, compress: bool) -> Result<Arc<Crypto>> {
        let s2k = StringToKey::new_iterated(rand::thread_rng(), HashAlgorithm::Sha256, 255);
        let sym_alg = SymmetricKeyAlgorithm::AES256;
        Ok(Arc::new(Crypto {
            passphrase,
            s2k,
            sym_alg,
            key: std::sync::OnceLock::new(),
            compression: compress.then_some(CompressionAlgorithm::ZLIB),
            derived: Mutex::new(HashMap::new()),
        }))
    }

    fn key(&self) -> Result<RawSessionKey> {
        if let Some(k) = self.key.get() {
            return Ok(k.clone());
        }
        let k = self
            .s2k
            .derive_key(&self.passphrase, self.sym_alg.key_size())
            .map_err(|e| Error::Crypto(format!("key derivation failed: {e}")))?;
        Ok(self.key.get_or_init(|| k).clone())
    }

    /// The SKESK v4 packet (no encrypted session key) every message starts with.
    fn skesk(&self) -> Vec<u8> {
        let mut body = vec![4u8, u8::from(self.sym_alg)];
        self.s2k.to_writer(&mut body).expect("writing to a Vec");
        let mut p = vec![0xC0 | 3, body.len() as u8];
        p.extend_from_slice(&body);
        p
    }

    /// A session key for an SKESK: ours without derivation, others derived
    /// once and remembered (gpg salts each file differently).
    fn session_key_for(&self, esk: &[Esk]) -> Result<Option<PlainSessionKey>> {
        for e in esk {
            let Esk::SymKeyEncryptedSessionKey(k) = e else {
                continue;
            };
            let mut id = Vec::new();
            let _ = k.to_writer(&mut id);
            if let Some(sk) = self.derived.lock().expect("poisoned").get(&id) {
                return Ok(Some(sk.clone()));
            }
            let empty_esk = k.encrypted_key().is_none_or(|b| b.is_empty());
            let sk = if empty_esk
                && k.s2k() == Some(&self.s2k)
                && k.sym_algorithm() == Some(self.sym_alg)
            {
                PlainSessionKey::V3_4 {
                    sym_alg: self.sym_alg,
                    key: self.key()?,
                }
            } else {
                let pw = Password::from(self.passphrase.as_slice());
                match pgp::composed::decrypt_session_key_with_password(k, &pw) {
                    Ok(sk) => sk,
                    Err(_) => continue,
                }
            };
            self.derived
                .lock()
                .expect("poisoned")
                .insert(id, sk.clone());
            return Ok(Some(sk));
        }
        Ok(None)
    }
}

/// How a stored file is encoded.
#[derive(Clone, Debug)]
pub enum Codec {
    Plain,
    Gzip,
    Gpg(Arc<Crypto>),
}

impl PartialEq for Codec {
    fn eq(&self, other: &Self) -> bool {
        matches!(
            (self, other),
            (Codec::Plain, Codec::Plain)
                | (Codec::Gzip, Codec::Gzip)
                | (Codec::Gpg(_), Codec::Gpg(_))
        )
    }
}

impl Codec {
    /// Remote name suffix flags: (encrypted, gzipped).
    pub fn flags(&self) -> (bool, bool) {
        match self {
            Codec::Plain => (false, false),
            Codec::Gzip => (false, true),
            Codec::Gpg(_) => (true, false),
        }
    }

    /// The codec for a stored file with these name flags.
    pub fn for_name(
        encrypted: bool,
        gzipped: bool,
        crypto: Option<&Arc<Crypto>>,
        name: &str,
    ) -> Result<Codec> {
        match (encrypted, gzipped) {
            (true, _) => crypto.map(|c| Codec::Gpg(c.clone())).ok_or_else(|| {
                Error::Crypto(format!(
                    "{name} is encrypted: set PASSPHRASE (or drop --no-encryption)"
                ))
            }),
            (false, true) => Ok(Codec::Gzip),
            (false, false) => Ok(Codec::Plain),
        }
    }
}

/// Counts and hashes the bytes that reach the file.
pub struct Stored<W> {
    inner: W,
    count: Arc<AtomicU64>,
    sha1: Sha1,
}

impl<W: Write> Write for Stored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Stored<W> {
    fn finish(self) -> io::Result<(W, String)> {
        Ok((self.inner, hex::encode(self.sha1.finalize())))
    }
}

/// A reader fed by a channel: the encrypting thread pulls plaintext from it.
struct ChannelReader {
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct GpgWriter {
    tx: Option<crossbeam_channel::Sender<Vec<u8>>>,
    buf: Vec<u8>,
    thread: Option<std::thread::JoinHandle<io::Result<(File, String)>>>,
}

const GPG_BATCH: usize = 256 * 1024;

impl GpgWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(GPG_BATCH));
        match self.tx.as_ref().map(|t| t.send(b)) {
            Some(Ok(())) => Ok(()),
            _ => Err(self.thread_error()),
        }
    }

    fn thread_error(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("encryption thread stopped"),
        }
    }

    fn finish(mut self) -> io::Result<(File, String)> {
        self.send()?;
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("encryption thread panicked")),
        }
    }
}

impl Write for GpgWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= GPG_BATCH {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Layer {
    Plain(Stored<BufWriter<File>>),
    Gzip(Box<GzEncoder<Stored<BufWriter<File>>>>),
    Gpg(GpgWriter),
}

/// A file being written through a codec.
pub struct Encoder {
    layer: Layer,
    count: Arc<AtomicU64>,
}

/// What an encoder leaves behind.
pub struct Written {
    pub size: u64,
    pub sha1_hex: String,
}

impl Encoder {
    pub fn create(path: &Path, codec: &Codec) -> io::Result<Self> {
        let file = File::create(path)?;
        let count = Arc::new(AtomicU64::new(0));
        let stored = Stored {
            inner: BufWriter::with_capacity(1 << 20, file),
            count: count.clone(),
            sha1: Sha1::new(),
        };
        let layer = match codec {
            Codec::Plain => Layer::Plain(stored),
            Codec::Gzip => Layer::Gzip(Box::new(GzEncoder::new(stored, Compression::new(6)))),
            Codec::Gpg(c) => {
                let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(8);
                let c = c.clone();
                let key = c.key().map_err(io::Error::other)?;
                let thread = std::thread::spawn(move || -> io::Result<(File, String)> {
                    let mut out = stored;
                    out.write_all(&c.skesk())?;
                    let reader = ChannelReader {
                        rx,
                        cur: Vec::new(),
                        pos: 0,
                    };
                    let mut b = MessageBuilder::from_reader("", reader)
                        .seipd_v1(rand::thread_rng(), c.sym_alg);
                    b.set_session_key(key).map_err(io::Error::other)?;
                    if let Some(alg) = c.compression {
                        b.compression(alg);
                    }
                    b.to_writer(rand::thread_rng(), &mut out)
                        .map_err(io::Error::other)?;
                    let (w, sha) = out.finish()?;
                    let f = w.into_inner().map_err(|e| e.into_error())?;
                    Ok((f, sha))
                });
                Layer::Gpg(GpgWriter {
                    tx: Some(tx),
                    buf: Vec::with_capacity(GPG_BATCH),
                    thread: Some(thread),
                })
            }
        };
        Ok(Encoder { layer, count })
    }

    /// Bytes stored so far (lags the input by the codec's buffering).
    pub fn stored_bytes(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn finish(self) -> io::Result<Written> {
        let (file, sha1_hex) = match self.layer {
            Layer::Plain(s) => {
                let (w, h) = s.finish()?;
                (w.into_inner().map_err(|e| e.into_error())?, h)
            }
            Layer::Gzip(g) => {
                let (w, h) = g.finish()?.finish()?;
                (w.into_inner().map_err(|e| e.into_error())?, h)
            }
            Layer::Gpg(g) => g.finish()?,
        };
        file.sync_data()?;
        Ok(Written {
            size: self.count.load(Ordering::Relaxed),
            sha1_hex,
        })
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.layer {
            Layer::Plain(s) => s.write(buf),
            Layer::Gzip(g) => g.write(buf),
            Layer::Gpg(g) => g.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.layer {
            Layer::Plain(s) => s.flush(),
            Layer::Gzip(g) => g.flush(),
            Layer::Gpg(g) => g.flush(),
        }
    }
}

/// Open a stored file for reading its plaintext. For OpenPGP this parses
/// the message head and finds the session key, so a wrong passphrase is
/// reported here, before any plaintext is used.
pub fn decoder<R: Read + Send + 'static>(r: R, codec: &Codec) -> Result<Box<dyn Read + Send>> {
    let r = BufReader::with_capacity(1 << 20, r);
    Ok(match codec {
        Codec::Plain => Box::new(r),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Codec::Gpg(c) => Box::new(open_pgp(r, c)?),
    })
}

struct DebugReader<R>(R);
impl<R> fmt::Debug for DebugReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DebugReader")
    }
}
impl<R: Read> Read for DebugReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl<R: io::BufRead> io::BufRead for DebugReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.0.consume(n)
    }
}

fn open_pgp<R: io::BufRead + Send + 'static>(r: R, c: &Crypto) -> Result<Message<'static>> {
    let bad = |e: pgp::errors::Error| Error::Crypto(format!("not a readable OpenPGP message: {e}"));
    let msg = Message::from_bytes(DebugReader(r)).map_err(bad)?;
    let Message::Encrypted { esk, .. } = &msg else {
        return Err(Error::Crypto("file is not encrypted as expected".into()));
    };
    if !esk
        .iter()
        .any(|e| matches!(e, Esk::SymKeyEncryptedSessionKey(_)))
    {
        return Err(Error::Crypto(
            "file is encrypted to a public key, not with a passphrase".into(),
        ));
    }
    let sk = c.session_key_for(esk)?.ok_or(Error::WrongPassphrase)?;
    let ring = TheRing {
        session_keys: vec![sk],
        decrypt_options: DecryptionOptions::new()
            .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming)
            .enable_gnupg_aead(),
        ..Default::default()
    };
    let (msg, _) = msg
        .decrypt_the_ring(ring, true)
        .map_err(|_| Error::WrongPassphrase)?;
    let msg = if msg.is_compressed() {
        msg.decompress().map_err(bad)?
    } else {
        msg
    };
    Ok(msg)
}

/// SHA-1 of a file, hex.
pub fn sha1_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Write a whole small file (a manifest) through a codec.
pub fn write_file(path: &Path, data: &[u8], codec: &Codec) -> Result<Written> {
    let mut e = Encoder::create(path, codec).ctx(path)?;
    e.write_all(data).ctx(path)?;
    e.finish().ctx(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(pw: &str) -> Arc<Crypto> {
        Crypto::symmetric(Zeroizing::new(pw.as_bytes().to_vec()), true).unwrap()
    }

    #[test]
    fn pgp_round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gpg");
        let c = crypto("secret");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 97) as u8).collect();
        let w = write_file(&p, &data, &Codec::Gpg(c.clone())).unwrap();
        assert_eq!(w.size, std::fs::metadata(&p).unwrap().len());
        assert_eq!(w.sha1_hex, sha1_file(&p).unwrap());
        let mut out = Vec::new();
        decoder(File::open(&p).unwrap(), &Codec::Gpg(c))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let other = crypto("wrong");
        let e = decoder(File::open(&p).unwrap(), &Codec::Gpg(other))
            .err()
            .unwrap();
        assert!(matches!(e, Error::WrongPassphrase), "{e}");
    }
}
