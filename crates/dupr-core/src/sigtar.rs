//! Signature tars: the complete metadata of a backup plus librsync
//! signatures of regular files. The chain of sigtars alone answers
//! list-current-files and drives incrementals; volumes are never read.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::content::{self, ContentHash};
use crate::crypt::{Codec, Encoder, Written};
use crate::entry::{entry_name, parse_entry_name, Kind, Meta, Role};
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::tar::{self, Header};

/// Writes one sigtar stream to the cache (gzip) and, when the remote codec
/// differs, a second copy for the target.
pub struct SigtarWriter {
    local: Encoder,
    local_path: PathBuf,
    remote: Option<Remote>,
    len: u64,
    buf: Vec<u8>,
    /// Of the plain tar bytes, for the manifest's record.
    hash: content::Hasher,
}

impl SigtarWriter {
    /// A writer of the cache copy at `local_path` and, with `remote`, of the
    /// target's copy at that path in that codec.
    pub fn create(local_path: &Path, remote: Option<(&Path, Codec)>) -> Result<Self> {
        let local = Encoder::create(local_path, &Codec::GZIP).ctx(local_path)?;
        let remote = remote.map(|(p, c)| Remote::new(p, c));
        Ok(SigtarWriter {
            local,
            local_path: local_path.to_path_buf(),
            remote,
            len: 0,
            buf: Vec::with_capacity(4096),
            hash: content::Hasher::for_writing(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.local.write_all(bytes).ctx(&self.local_path)?;
        if let Some(r) = &mut self.remote {
            r.write(bytes)?;
        }
        self.len += bytes.len() as u64;
        self.hash.update(bytes);
        Ok(())
    }

    /// A metadata-only entry (dir, symlink, fifo, device) or a deleted marker.
    pub fn add_meta(&mut self, index: &Index, meta: Option<&Meta>) -> Result<()> {
        let h = match meta {
            Some(m) => m.header(
                entry_name(Role::Snapshot, index, None, m.kind == Kind::Dir, false),
                0,
            ),
            None => Header {
                name: entry_name(Role::Deleted, index, None, false, false),
                typeflag: tar::REGTYPE,
                ..Default::default()
            },
        };
        self.buf.clear();
        h.encode(&mut self.buf);
        let b = std::mem::take(&mut self.buf);
        self.write(&b)?;
        self.buf = b;
        Ok(())
    }

    /// A regular file's signature.
    pub fn add_signature(&mut self, index: &Index, meta: &Meta, sig: &[u8]) -> Result<()> {
        self.buf.clear();
        let mut h = meta.header(
            entry_name(Role::Signature, index, None, false, false),
            sig.len() as u64,
        );
        h.extra = meta.exact_pax();
        h.encode(&mut self.buf);
        let b = std::mem::take(&mut self.buf);
        self.write(&b)?;
        self.buf = b;
        self.write(sig)?;
        let pad = tar::padding(sig.len() as u64);
        self.write(&vec![0u8; pad])
    }

    /// Close the tar (two zero blocks, NULs to a record) and the files;
    /// also returns the SHA-256 (hex) of the plain tar bytes.
    pub fn finish(mut self) -> Result<(Written, Option<Written>, ContentHash)> {
        let after = self.len + 2 * tar::BLOCK as u64;
        let pad = 2 * tar::BLOCK
            + ((tar::RECORD as u64 - after % tar::RECORD as u64) % tar::RECORD as u64) as usize;
        self.write(&vec![0u8; pad])?;
        let local = self.local.finish().ctx(&self.local_path)?;
        let remote = match self.remote {
            Some(r) => Some(r.finish()?),
            None => None,
        };
        Ok((local, remote, self.hash.finish()))
    }
}

/// The target's copy of a signature tar. Its encoder (and with it the
/// passphrase's key, which another thread may still be deriving from the
/// previous manifest) is only wanted once a megabyte is waiting, or at the
/// end: a small incremental's walk does not wait for the key.
struct Remote {
    path: PathBuf,
    codec: Codec,
    /// What was written before the encoder was opened.
    held: Vec<u8>,
    enc: Option<Encoder>,
}

impl Remote {
    const HOLD: usize = 1 << 20;

    fn new(path: &Path, codec: Codec) -> Remote {
        Remote {
            path: path.to_path_buf(),
            codec,
            held: Vec::new(),
            enc: None,
        }
    }

    fn encoder(&mut self) -> Result<&mut Encoder> {
        if self.enc.is_none() {
            let mut enc = Encoder::create(&self.path, &self.codec).ctx(&self.path)?;
            enc.write_all(&std::mem::take(&mut self.held))
                .ctx(&self.path)?;
            self.enc = Some(enc);
        }
        Ok(self.enc.as_mut().expect("set above"))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.enc.is_none() && self.held.len() + bytes.len() <= Self::HOLD {
            self.held.extend_from_slice(bytes);
            return Ok(());
        }
        self.encoder()?.write_all(bytes).ctx(&self.path)
    }

    fn finish(mut self) -> Result<Written> {
        self.encoder()?;
        let path = self.path;
        self.enc.expect("opened above").finish().ctx(&path)
    }
}

/// Reads a signature file's plain bytes and, at their end, fails unless
/// they hash to what the set's manifest recorded: a signature file swapped
/// for another (valid) one must not become an incremental's base.
pub struct CheckedSigtar<R> {
    inner: R,
    /// Until the end is checked.
    hash: Option<(content::Hasher, ContentHash)>,
    name: String,
}

impl<R: Read> CheckedSigtar<R> {
    /// Reads `inner`, the plain bytes of signature file `name`, against
    /// `want`, the hash its manifest recorded.
    pub fn new(inner: R, want: ContentHash, name: &str) -> Self {
        CheckedSigtar {
            inner,
            hash: Some((content::Hasher::new(want.algo), want)),
            name: name.to_string(),
        }
    }
}

impl<R: Read> Read for CheckedSigtar<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // Checked once; later reads at the end stay quiet.
            if let Some((h, want)) = self.hash.take() {
                let got = h.finish();
                if got != want {
                    return Err(std::io::Error::other(format!(
                        "{} does not belong to its set: its {} hash {} differs from the manifest's record {}",
                        self.name,
                        want.algo.name(),
                        got.hex,
                        want.hex
                    )));
                }
            }
        } else if let Some((h, _)) = &mut self.hash {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// One sigtar record: the path and its state (None = deleted), with the
/// signature bytes for regular files.
pub struct SigEntry {
    /// The path.
    pub index: Index,
    /// Its metadata; None when the record marks it deleted.
    pub meta: Option<Meta>,
    /// A regular file's librsync signature, when the reader was asked for
    /// signatures.
    pub signature: Option<Vec<u8>>,
}

/// Reads sigtar entries in order.
pub struct SigtarReader<R: Read> {
    tar: tar::Reader<R>,
    name: String,
    want_sigs: bool,
}

impl<R: Read> SigtarReader<R> {
    /// A reader of the plain sigtar `r` of signature file `name` (for errors);
    /// `want_sigs` reads the signatures, else they are skipped.
    pub fn new(r: R, name: &str, want_sigs: bool) -> Self {
        SigtarReader {
            tar: tar::Reader::new(r),
            name: name.to_string(),
            want_sigs,
        }
    }

    fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadSignature {
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Read the rest of the stream (so a decompressor checks its trailer).
    pub fn drain(&mut self) -> Result<()> {
        self.tar.drain().map_err(|e| self.bad(e.to_string()))
    }

    /// The next record; None at the end of the tar.
    pub fn next_entry(&mut self) -> Result<Option<SigEntry>> {
        let Some(h) = self
            .tar
            .next_header()
            .map_err(|e| self.bad(e.to_string()))?
        else {
            return Ok(None);
        };
        let en = parse_entry_name(&h.name).map_err(|e| self.bad(e.to_string()))?;
        let (meta, signature) = match en.role {
            Role::Deleted => (None, None),
            Role::Snapshot | Role::Signature => {
                let meta = Meta::from_header(&h).ok_or_else(|| {
                    self.bad(format!("unsupported entry type {:?}", h.typeflag as char))
                })?;
                let sig = if en.role == Role::Signature && self.want_sigs {
                    // The size comes from the target: never trust it for
                    // an allocation (the read stops at the entry's end).
                    let mut v = Vec::with_capacity((h.size as usize).min(1 << 20));
                    self.tar
                        .read_to_end(&mut v)
                        .map_err(|e| self.bad(e.to_string()))?;
                    Some(v)
                } else {
                    None
                };
                (Some(meta), sig)
            }
            Role::Diff => return Err(self.bad("diff entry in a signature file")),
        };
        Ok(Some(SigEntry {
            index: en.index,
            meta,
            signature,
        }))
    }
}

/// Merge sigtar streams oldest first: for each index the newest record wins,
/// and a deleted record hides the path. Yields present paths in index order.
pub struct SigMerge<R: Read> {
    readers: Vec<SigtarReader<R>>,
    heads: Vec<Option<SigEntry>>,
}

impl<R: Read> SigMerge<R> {
    /// A merge of `readers`, given oldest first.
    pub fn new(mut readers: Vec<SigtarReader<R>>) -> Result<Self> {
        let mut heads = Vec::with_capacity(readers.len());
        for r in readers.iter_mut() {
            heads.push(r.next_entry()?);
        }
        Ok(SigMerge { readers, heads })
    }

    /// Drain every stream to its end (after `next_present` returned None).
    pub fn drain(&mut self) -> Result<()> {
        for r in self.readers.iter_mut() {
            r.drain()?;
        }
        Ok(())
    }

    /// Next present entry (deleted paths are skipped).
    pub fn next_present(&mut self) -> Result<Option<SigEntry>> {
        loop {
            let Some(min) = self
                .heads
                .iter()
                .filter_map(|h| h.as_ref().map(|e| &e.index))
                .min()
                .cloned()
            else {
                return Ok(None);
            };
            let mut newest = None;
            for i in 0..self.heads.len() {
                if self.heads[i].as_ref().is_some_and(|e| e.index == min) {
                    newest = self.heads[i].take();
                    self.heads[i] = self.readers[i].next_entry()?;
                }
            }
            let e = newest.expect("min came from a head");
            if e.meta.is_some() {
                return Ok(Some(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Names;

    #[test]
    fn write_read_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut names = Names::default();
        let md = std::fs::metadata(dir.path()).unwrap();
        let dmeta = Meta::from_fs(&md, Vec::new(), &mut names);
        let mut fmeta = dmeta.clone();
        fmeta.kind = Kind::File;
        let p1 = dir.path().join("a.sigtar.gz");
        let mut w = SigtarWriter::create(&p1, None).unwrap();
        w.add_meta(&Index::root(), Some(&dmeta)).unwrap();
        w.add_signature(&Index::from_bytes(*b"a"), &fmeta, b"sigA")
            .unwrap();
        w.add_signature(&Index::from_bytes(*b"b"), &fmeta, b"sigB")
            .unwrap();
        let (wr, _, _) = w.finish().unwrap();
        assert!(wr.size > 0);
        let p2 = dir.path().join("b.sigtar.gz");
        let mut w = SigtarWriter::create(&p2, None).unwrap();
        w.add_meta(&Index::from_bytes(*b"a"), None).unwrap();
        w.add_signature(&Index::from_bytes(*b"c"), &fmeta, b"sigC")
            .unwrap();
        w.finish().unwrap();
        let open = |p: &Path| {
            let f = std::fs::File::open(p).unwrap();
            SigtarReader::new(crate::crypt::decoder(f, &Codec::GZIP).unwrap(), "t", true)
        };
        let mut m = SigMerge::new(vec![open(&p1), open(&p2)]).unwrap();
        let mut got = Vec::new();
        while let Some(e) = m.next_present().unwrap() {
            got.push((e.index.to_string(), e.signature));
        }
        assert_eq!(
            got,
            vec![
                (".".to_string(), None),
                ("b".to_string(), Some(b"sigB".to_vec())),
                ("c".to_string(), Some(b"sigC".to_vec()))
            ]
        );
    }
}
