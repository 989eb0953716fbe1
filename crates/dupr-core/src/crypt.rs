//! The compression/encryption layer between tar bytes and stored files.
//! Every stored byte passes a counter (volume boundaries are measured on
//! stored size, as duplicity does) and a SHA-1 (the manifest's hash).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha1::{Digest, Sha1};

/// How a stored file is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Plain,
    Gzip,
}

impl Codec {
    /// Remote name suffix flags: (encrypted, gzipped).
    pub fn flags(self) -> (bool, bool) {
        match self {
            Codec::Plain => (false, false),
            Codec::Gzip => (false, true),
        }
    }

    pub fn from_flags(encrypted: bool, gzipped: bool) -> Option<Self> {
        match (encrypted, gzipped) {
            (false, false) => Some(Codec::Plain),
            (false, true) => Some(Codec::Gzip),
            (true, _) => None,
        }
    }
}

/// Counts and hashes the bytes that reach the file.
pub struct Stored<W> {
    inner: W,
    count: u64,
    sha1: Sha1,
}

impl<W: Write> Write for Stored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        self.sha1.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Layer {
    Plain(Stored<BufWriter<File>>),
    Gzip(GzEncoder<Stored<BufWriter<File>>>),
}

/// A file being written through a codec.
pub struct Encoder {
    layer: Layer,
}

/// What an encoder leaves behind.
pub struct Written {
    pub size: u64,
    pub sha1_hex: String,
}

impl Encoder {
    pub fn create(path: &Path, codec: Codec) -> io::Result<Self> {
        let file = File::create(path)?;
        let stored = Stored {
            inner: BufWriter::with_capacity(1 << 20, file),
            count: 0,
            sha1: Sha1::new(),
        };
        let layer = match codec {
            Codec::Plain => Layer::Plain(stored),
            Codec::Gzip => Layer::Gzip(GzEncoder::new(stored, Compression::new(6))),
        };
        Ok(Encoder { layer })
    }

    /// Bytes stored so far (lags the input by the codec's buffering).
    pub fn stored_bytes(&self) -> u64 {
        match &self.layer {
            Layer::Plain(s) => s.count,
            Layer::Gzip(g) => g.get_ref().count,
        }
    }

    pub fn finish(self) -> io::Result<Written> {
        let stored = match self.layer {
            Layer::Plain(s) => s,
            Layer::Gzip(g) => g.finish()?,
        };
        let Stored {
            inner, count, sha1, ..
        } = stored;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok(Written {
            size: count,
            sha1_hex: hex::encode(sha1.finalize()),
        })
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.layer {
            Layer::Plain(s) => s.write(buf),
            Layer::Gzip(g) => g.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.layer {
            Layer::Plain(s) => s.flush(),
            Layer::Gzip(g) => g.flush(),
        }
    }
}

/// Open a stored file for reading its plaintext.
pub fn decoder<R: Read + Send + 'static>(r: R, codec: Codec) -> Box<dyn Read + Send> {
    let r = BufReader::with_capacity(1 << 20, r);
    match codec {
        Codec::Plain => Box::new(r),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
    }
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
pub fn write_file(path: &Path, data: &[u8], codec: Codec) -> crate::error::Result<Written> {
    use crate::error::IoContext;
    let mut e = Encoder::create(path, codec).ctx(path)?;
    e.write_all(data).ctx(path)?;
    e.finish().ctx(path)
}
