//! One backup set as a stream of tar entries: its needed volumes fetched
//! (whole, or by blocks through the set's block index), SHA-1 checked
//! against the manifest before any byte is used, and decoded.

use super::*;

pub(super) struct VolRef {
    pub(super) name: String,
    pub(super) sha1: Option<String>,
    codec: Codec,
    /// Its block index, when one path is wanted and the set has one: only
    /// the blocks holding that path are read.
    pub(super) seek: Option<crate::blocks::VolumeIndex>,
}

/// The needed volumes of one set read as one tar stream, with multivol
/// chunks joined back into whole entries.
pub(super) struct SetStream<'a> {
    pub(super) backend: &'a dyn Backend,
    pub(super) tempdir: PathBuf,
    vols: VecDeque<VolRef>,
    pub(super) tar: Option<(tar::Reader<Box<dyn Read + Send + 'a>>, String)>,
    /// The open volume is read through its block index: it ends for us
    /// after the wanted path.
    seeking: bool,
    want: Index,
    pub(super) crypto: Option<Arc<Crypto>>,
    peeked: Option<(EntryName, tar::Header)>,
    /// The path of the last entry [`Self::head`] returned.
    prev_head: Option<Index>,
    /// Volume temp copies (remote backends) to delete.
    temp: Option<PathBuf>,
    /// The next volume, being checked ahead.
    pub(super) next: Option<Pending>,
    seq: u64,
    pub(super) buf: Vec<u8>,
    /// The content hash on the last chunk [`Self::copy_data`] read, if any.
    pub(super) last_hash: Option<ContentHash>,
    pub(super) plain: Option<Arc<dyn PlainVolumes>>,
    /// The plain copy of the open volume being written, with its name
    /// and hash: kept if the volume reads to its end without error.
    copying: Option<(String, String, SharedCopy)>,
}

pub(super) type SharedCopy = Arc<std::sync::Mutex<Option<io::BufWriter<tempfile::NamedTempFile>>>>;

/// Passes a volume's plain bytes on and writes them to a copy; a failing
/// copy is dropped, never the read.
pub(super) struct Tee<R> {
    pub(super) inner: R,
    pub(super) copy: SharedCopy,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut c = self.copy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = c.as_mut() {
            if w.write_all(&buf[..n]).is_err() {
                *c = None;
            }
        }
        Ok(n)
    }
}

pub(super) struct Pending {
    v: VolRef,
    pub(super) path: PathBuf,
    temp: Option<PathBuf>,
    pub(super) hash: Option<std::thread::JoinHandle<io::Result<String>>>,
    /// A checked plain copy of the volume, from [`PlainVolumes`].
    pub(super) plain: Option<File>,
}

/// A whole logical entry at the head of a set stream.
pub(super) struct Head {
    pub(super) name: EntryName,
    pub(super) header: tar::Header,
}

impl<'a> SetStream<'a> {
    /// Locate (or download) a volume and start hashing it on another
    /// thread, so the check of volume N+1 overlaps the restore of volume N.
    fn start(&mut self, v: VolRef) -> Result<Pending> {
        let local = self.backend.local_path(&v.name);
        if v.seek.is_some() && (local.is_some() || !self.want.is_root()) {
            // Read block by block when opened (by ranges from a remote
            // target, for one path); nothing to fetch or hash ahead.
            return Ok(Pending {
                v,
                path: PathBuf::new(),
                temp: None,
                hash: None,
                plain: None,
            });
        }
        if let (Some(pv), Some(sha1)) = (&self.plain, &v.sha1) {
            if let Some(f) = pv.open(&v.name, sha1) {
                return Ok(Pending {
                    v,
                    path: PathBuf::new(),
                    temp: None,
                    hash: None,
                    plain: Some(f),
                });
            }
        }
        let (path, temp) = match local {
            Some(p) => {
                if !p.exists() {
                    return Err(Error::MissingVolume {
                        name: v.name.clone(),
                    });
                }
                (p, None)
            }
            None => {
                // Start the volumes after this one downloading meanwhile.
                let ahead: Vec<String> = self.vols.iter().take(4).map(|v| v.name.clone()).collect();
                self.backend.prefetch(&ahead);
                self.seq += 1;
                let tmp =
                    self.tempdir
                        .join(format!(".dupr-vol.{}.{}", std::process::id(), self.seq));
                self.backend.get(&v.name, &tmp)?;
                (tmp.clone(), Some(tmp))
            }
        };
        // A volume read through its index is checked block by block.
        let hash = v.sha1.as_ref().filter(|_| v.seek.is_none()).map(|_| {
            let p = path.clone();
            std::thread::spawn(move || crypt::sha1_file(&p))
        });
        Ok(Pending {
            v,
            path,
            temp,
            hash,
            plain: None,
        })
    }

    /// Open a volume at the block where the wanted path starts.
    fn open_seek(
        &mut self,
        name: &str,
        vi: crate::blocks::VolumeIndex,
        downloaded: Option<PathBuf>,
    ) -> Result<Option<Box<dyn Read + Send + 'a>>> {
        use crate::blocks::{Framing, RangeRead};
        let at = downloaded.or_else(|| self.backend.local_path(name));
        let mut file: Box<dyn RangeRead + Send + 'a> = match at {
            Some(p) => Box::new(File::open(&p).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::MissingVolume {
                    name: name.to_string(),
                },
                _ => Error::io(&p, e),
            })?),
            None => Box::new(BackendRange {
                backend: self.backend,
                name: name.to_string(),
            }),
        };
        let key = match &vi.layout.framing {
            Framing::Gzip => zeroize::Zeroizing::new(Vec::new()),
            Framing::Pgp { prefix, .. } => {
                let head = file
                    .read_range(0, (*prefix).min(1 << 16))
                    .map_err(|e| Self::corrupt(name, e))?;
                let crypto = self.crypto.as_ref().ok_or_else(|| Error::NoPassphrase {
                    subject: format!("{name} is encrypted"),
                    hint: "",
                })?;
                // A key that fails its check: damage or a wrong passphrase;
                // the whole-volume read (SHA-1 first) tells which.
                let Some((_, key)) = crypto.session_key_of(&head).ok().flatten() else {
                    return Ok(None);
                };
                if !crate::blocks::check_key(file.as_mut(), &vi.layout, &key).unwrap_or(false) {
                    return Ok(None);
                }
                key
            }
        };
        let (block, off) = vi.start_for(&self.want);
        let mut stream = crate::blocks::BlockStream::new(file, key, vi, block, off);
        // Its first block fails: a key that passed the quick check by
        // chance, or damage; the whole-volume read tells which.
        if stream.fill().is_err() {
            return Ok(None);
        }
        Ok(Some(Box::new(stream)))
    }

    fn open_pending(&mut self, p: Pending) -> Result<Box<dyn Read + Send>> {
        if let Some(f) = p.plain {
            // Checked when it was kept: read it like an indexed volume,
            // up to the wanted path only.
            self.seeking = true;
            return Ok(Box::new(io::BufReader::with_capacity(256 * 1024, f)));
        }
        if let (Some(want), Some(h)) = (&p.v.sha1, p.hash) {
            let got = h
                .join()
                .map_err(|_| Error::CorruptVolume {
                    name: p.v.name.clone(),
                    reason: "hashing thread panicked".into(),
                })?
                .ctx(&p.path)?;
            if &got != want {
                return Err(Error::HashMismatch {
                    name: p.v.name.clone(),
                    expected: want.clone(),
                    got,
                });
            }
        }
        self.temp = p.temp;
        let f = File::open(&p.path).ctx(&p.path)?;
        let r = crypt::decoder(f, &p.v.codec)?;
        let (Some(pv), Some(sha1)) = (&self.plain, &p.v.sha1) else {
            return Ok(r);
        };
        let Some(scratch) = pv.scratch() else {
            return Ok(r);
        };
        let copy: SharedCopy = Arc::new(std::sync::Mutex::new(Some(io::BufWriter::with_capacity(
            256 * 1024,
            scratch,
        ))));
        self.copying = Some((p.v.name.clone(), sha1.clone(), copy.clone()));
        Ok(Box::new(Tee { inner: r, copy }))
    }

    fn corrupt(name: &str, e: impl ToString + 'static) -> Error {
        // A volume without the required signature fails on its own terms.
        let any: &dyn std::any::Any = &e;
        if let Some(sig) = any
            .downcast_ref::<io::Error>()
            .and_then(crypt::signature_failure)
        {
            return sig;
        }
        Error::CorruptVolume {
            name: name.to_string(),
            reason: e.to_string(),
        }
    }

    /// Next raw tar header across volume boundaries.
    fn next_raw(&mut self) -> Result<Option<(EntryName, tar::Header)>> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        loop {
            if self.tar.is_none() {
                // A copy of a volume not read to its end is never kept.
                self.copying = None;
                let cur = match self.next.take() {
                    Some(p) => p,
                    None => match self.vols.pop_front() {
                        Some(v) => self.start(v)?,
                        None => return Ok(None),
                    },
                };
                if let Some(v) = self.vols.pop_front() {
                    self.next = Some(self.start(v)?);
                }
                let name = cur.v.name.clone();
                let mut cur = cur;
                let r = match cur.v.seek.take() {
                    Some(vi) => {
                        // A remote volume downloaded whole (restore all).
                        let downloaded = cur.temp.clone();
                        match self.open_seek(&name, vi, downloaded)? {
                            Some(r) => {
                                self.seeking = true;
                                self.temp = cur.temp.take();
                                r
                            }
                            None => {
                                self.seeking = false;
                                if let Some(t) = cur.temp.take() {
                                    let _ = std::fs::remove_file(t);
                                }
                                let p = self.start(cur.v)?;
                                self.open_pending(p)?
                            }
                        }
                    }
                    None => {
                        self.seeking = false;
                        self.open_pending(cur)?
                    }
                };
                self.tar = Some((tar::Reader::new(r), name));
            }
            let (tr, name) = self.tar.as_mut().expect("opened");
            match tr.next_header().map_err(|e| Self::corrupt(name, e))? {
                Some(h) => {
                    let en = parse_entry_name(&h.name).map_err(|e| Self::corrupt(name, e))?;
                    if self.seeking && en.index > self.want && !en.index.starts_with(&self.want) {
                        // Past the wanted path: the rest of this volume
                        // is not needed (its blocks were each checked).
                        self.tar = None;
                        if let Some(t) = self.temp.take() {
                            let _ = std::fs::remove_file(t);
                        }
                        continue;
                    }
                    return Ok(Some((en, h)));
                }
                None => {
                    // Read to the end so a decryptor reaches its integrity check.
                    tr.drain().map_err(|e| Self::corrupt(name, e))?;
                    self.tar = None;
                    self.keep_copy();
                    if let Some(t) = self.temp.take() {
                        let _ = std::fs::remove_file(t);
                    }
                }
            }
        }
    }

    /// The open volume read to its end and passed its checks: its plain
    /// copy may be kept.
    fn keep_copy(&mut self) {
        let (Some(pv), Some((name, sha1, copy))) = (&self.plain, self.copying.take()) else {
            return;
        };
        let w = copy.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = w.and_then(|w| w.into_inner().ok()) {
            pv.keep(&name, &sha1, f);
        }
    }

    /// The next whole logical entry. Entries come in strictly increasing
    /// path order, each path once per set (its chunks are joined by
    /// [`Self::copy_data`]); anything else is a damaged or hand-made
    /// volume, whose later entry would silently replace the earlier.
    pub(super) fn head(&mut self) -> Result<Option<Head>> {
        let Some((name, header)) = self.next_raw()? else {
            return Ok(None);
        };
        if let Some(prev) = &self.prev_head {
            if name.index <= *prev {
                let vol = self.tar.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
                return Err(Self::corrupt(
                    vol,
                    format!(
                        "entry {} ({:?}{}) comes after {}: entries out of order or repeated",
                        name.index,
                        name.role,
                        name.chunk
                            .map(|c| format!(", chunk {c}"))
                            .unwrap_or_default(),
                        prev
                    ),
                ));
            }
        }
        self.prev_head = Some(name.index.clone());
        Ok(Some(Head { name, header }))
    }

    /// Copy the data of `head` (all its chunks) to `w`.
    pub(super) fn copy_data(&mut self, head: &Head, w: &mut dyn Write) -> Result<u64> {
        let mut total = 0;
        let mut chunk = head.name.chunk;
        self.last_hash = ContentHash::of_header(&head.header);
        loop {
            let (tr, name) = self.tar.as_mut().expect("head came from an open volume");
            let mut n = 0u64;
            loop {
                let got = tr.read(&mut self.buf).map_err(|e| Self::corrupt(name, e))?;
                if got == 0 {
                    break;
                }
                w.write_all(&self.buf[..got])
                    .map_err(|e| Error::io("restore target", e))?;
                n += got as u64;
            }
            total += n;
            let Some(c) = chunk else { return Ok(total) };
            // A chunk shorter than 64 KiB is the last one.
            if n < 65536 {
                return Ok(total);
            }
            match self.next_raw()? {
                Some((en, h))
                    if en.chunk == Some(c + 1)
                        && en.index == head.name.index
                        && en.role == head.name.role =>
                {
                    chunk = en.chunk;
                    self.last_hash = ContentHash::of_header(&h);
                }
                other => {
                    self.peeked = other;
                    return Ok(total);
                }
            }
        }
    }
}

impl<'a> SetStream<'a> {
    /// The entries of `set` for restoring `want` (everything when empty):
    /// its volumes that can hold `want`, in order, each with its block
    /// index when the set has one made for that very volume.
    pub(super) fn open(
        backend: &'a dyn Backend,
        cache: Option<&Cache>,
        set: &BackupSet,
        prefixes: &Prefixes,
        opts: &RestoreOptions,
        want: &Index,
    ) -> Result<Self> {
        let m = load_manifest(backend, cache, set, prefixes, opts.crypto.as_ref())?;
        // With a block index, volumes are read in blocks decoded on every
        // core, and for one path only the blocks holding it.
        let mut index = {
            let nums: std::collections::BTreeSet<u32> = m
                .volumes
                .iter()
                .filter(|(_, v)| v.contains(want))
                .map(|(n, _)| *n)
                .collect();
            load_blocks(backend, cache, set, prefixes, opts.crypto.as_ref(), &nums)
        };
        let mut vols = VecDeque::new();
        for (n, v) in &m.volumes {
            if !v.contains(want) {
                continue;
            }
            let name = set
                .volumes
                .get(n)
                .cloned()
                .ok_or_else(|| Error::MissingVolume {
                    name: format!("{n} of the set at {}", crate::time::to_filename(set.end)),
                })?;
            let p = naming::parse(&name, prefixes).expect("listed names parse");
            let codec = Codec::for_name(p.encrypted, p.gzipped, opts.crypto.as_ref(), &name)?;
            let sha1 = match &v.hash {
                Some((a, h)) if a == "SHA1" => Some(h.clone()),
                _ => None,
            };
            // Only an index made for this very volume is used.
            let seek = index.remove(n).filter(|vi| sha1.as_ref() == Some(&vi.sha1));
            vols.push_back(VolRef {
                name,
                sha1,
                codec,
                seek,
            });
        }
        Ok(SetStream {
            backend,
            tempdir: opts.tempdir.clone(),
            vols,
            tar: None,
            seeking: false,
            want: want.clone(),
            crypto: opts.crypto.clone(),
            peeked: None,
            prev_head: None,
            temp: None,
            next: None,
            seq: 0,
            buf: vec![0u8; 256 * 1024],
            last_hash: None,
            plain: opts.plain.clone(),
            copying: None,
        })
    }
}

/// A stored file read by ranges through a backend.
pub(super) struct BackendRange<'a> {
    pub(super) backend: &'a dyn Backend,
    pub(super) name: String,
}

impl crate::blocks::RangeRead for BackendRange<'_> {
    fn read_range(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let v = self
            .backend
            .read_range(&self.name, offset, len)
            .map_err(io::Error::other)?;
        if (v.len() as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the volume is shorter than its index says",
            ));
        }
        Ok(v)
    }
}

/// The block index of `set` for the volumes `nums`: a cached copy (left by
/// an earlier build; none are written now), else the target's. None of it
/// when the set has none or it
/// cannot be read: the volumes are then read whole, as without an index.
pub(super) fn load_blocks(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    nums: &std::collections::BTreeSet<u32>,
) -> std::collections::HashMap<u32, crate::blocks::VolumeIndex> {
    let Some(remote) = &set.blocks else {
        return Default::default();
    };
    let keep = |n: u32| nums.contains(&n);
    let r = (|| -> Result<Vec<crate::blocks::VolumeIndex>> {
        let local = cache.and_then(|c| Cache::local_name(remote, prefixes).map(|l| c.path(&l)));
        if let Some(l) = local.as_ref().filter(|l| l.exists()) {
            let r = crypt::decoder(File::open(l).ctx(l)?, &Codec::GZIP)?;
            return crate::blocks::read_volumes(r, keep).map_err(|e| Error::CorruptVolume {
                name: l.display().to_string(),
                reason: e.to_string(),
            });
        }
        let p = naming::parse(remote, prefixes).expect("listed names parse");
        let codec = Codec::for_name(p.encrypted, p.gzipped, crypto, remote)?;
        let mut plain = Vec::new();
        crypt::decoder(backend.open(remote)?, &codec)?
            .read_to_end(&mut plain)
            .map_err(|e| Error::CorruptVolume {
                name: remote.clone(),
                reason: e.to_string(),
            })?;
        let v =
            crate::blocks::read_volumes(&plain[..], keep).map_err(|e| Error::CorruptVolume {
                name: remote.clone(),
                reason: e.to_string(),
            })?;
        // Not cached: duplicity's tools expect only manifests and
        // signatures in the archive dir.
        Ok(v)
    })();
    match r {
        Ok(v) => v.into_iter().map(|vi| (vi.num, vi)).collect(),
        Err(e) => {
            tracing::warn!("not using the block index {remote}: {e}; reading whole volumes");
            Default::default()
        }
    }
}
