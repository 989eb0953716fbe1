//! Restore: pick the sets for the wanted time, stream each set's needed
//! volumes (SHA-1 checked against the manifest before any byte is used),
//! collate the sets by index, rebuild each file from its newest snapshot plus
//! later deltas, and write it under a temporary name that is renamed into
//! place only when complete.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::cache::Cache;
use crate::chain::BackupSet;
use std::sync::Arc;

use crate::crypt::{self, Codec, Crypto};
use crate::entry::{parse_entry_name, EntryName, Kind, Meta, Names, Role};
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::manifest::Manifest;
use crate::naming::{self, Prefixes};
use crate::tar;

/// Load a set's manifest: the cached plain copy, else the remote one.
/// The manifest without its Filelist (which can hold a line per file of the
/// backup and is not needed here), read to the end so an encrypted
/// manifest still reaches its integrity check.
fn manifest_head(r: Box<dyn Read + Send>) -> io::Result<Vec<u8>> {
    use std::io::BufRead;
    let mut r = io::BufReader::new(r);
    let mut text = Vec::new();
    let mut line = Vec::new();
    let mut in_filelist = false;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(text);
        }
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"filelist") {
            in_filelist = true;
            continue;
        }
        // Filelist items are indented; a Filelist written before the
        // volume records (duplicity's other layout) ends at "Volume".
        if in_filelist && line.first().is_some_and(|c| c.is_ascii_whitespace()) {
            continue;
        }
        in_filelist = false;
        text.extend_from_slice(&line);
    }
}

/// A set's manifest without its Filelist (all a restore needs), read from
/// the cache when it has a copy, else from the target.
pub fn load_manifest(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Result<Manifest> {
    read_manifest(backend, cache, set, prefixes, crypto, false, false)
}

/// A set's manifest with its Filelist (the changed paths), for status
/// reports; restores never need it.
pub fn load_manifest_with_filelist(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Result<Manifest> {
    read_manifest(backend, cache, set, prefixes, crypto, false, true)
}

/// The target's own copy of a set's manifest, ignoring the cache.
pub fn load_remote_manifest(
    backend: &dyn Backend,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Result<Manifest> {
    read_manifest(backend, None, set, prefixes, crypto, true, false)
}

/// `name` failed to decrypt or failed its integrity check. Symmetric
/// OpenPGP cannot tell a wrong passphrase from damage (no key check before
/// the MDC at the end), so read other encrypted files of the archive
/// (`others`; manifests first, they are small) to their end: if the
/// passphrase opens one, `name` is damaged; else the passphrase is wrong.
pub fn wrong_passphrase_or_damaged(
    backend: &dyn Backend,
    name: &str,
    why: &str,
    others: &[String],
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Error {
    let opens = |other: &String| -> bool {
        let Some(p) = naming::parse(other, prefixes) else {
            return false;
        };
        let Ok(codec) = Codec::for_name(true, p.gzipped, crypto, other) else {
            return false;
        };
        backend
            .open(other)
            .ok()
            .and_then(|r| crypt::decoder(r, &codec).ok())
            .is_some_and(|mut r| io::copy(&mut r, &mut io::sink()).is_ok())
    };
    let mut candidates: Vec<(u8, &String)> = others
        .iter()
        .filter(|o| *o != name)
        .filter_map(|o| {
            let p = naming::parse(o, prefixes)?;
            if !p.encrypted || p.partial {
                return None;
            }
            let rank = match p.kind {
                naming::FileType::Manifest => 0,
                naming::FileType::Signature
                | naming::FileType::JsonStat
                | naming::FileType::Blocks => 1,
                naming::FileType::Volume(_) => 2,
            };
            Some((rank, o))
        })
        .collect();
    candidates.sort();
    match candidates.iter().take(2).find(|(_, o)| opens(o)) {
        Some((_, other)) => Error::Damaged {
            name: name.to_string(),
            reason: format!("{why} (the same passphrase decrypts {other})"),
        },
        None => Error::WrongPassphrase,
    }
}

/// [`read_manifest_inner`], telling a damaged encrypted manifest from a
/// wrong passphrase.
fn read_manifest(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    remote_only: bool,
    with_filelist: bool,
) -> Result<Manifest> {
    let r = read_manifest_inner(
        backend,
        cache,
        set,
        prefixes,
        crypto,
        remote_only,
        with_filelist,
    );
    let name = set.manifest.as_deref().unwrap_or_default();
    let from_cache = !remote_only
        && cache
            .and_then(|c| Cache::local_name(name, prefixes).map(|l| c.path(&l)))
            .is_some_and(|p| p.exists());
    let encrypted = !from_cache && naming::parse(name, prefixes).is_some_and(|p| p.encrypted);
    match r {
        Err(Error::WrongPassphrase) if encrypted => {
            let others: Vec<String> = set.volumes.values().cloned().collect();
            Err(wrong_passphrase_or_damaged(
                backend,
                name,
                "it does not decrypt",
                &others,
                prefixes,
                crypto,
            ))
        }
        // Unreadable after decryption began: damage, or garbage from a
        // wrong key.
        Err(Error::BadManifest { reason, .. } | Error::Damaged { reason, .. }) if encrypted => {
            let others: Vec<String> = set.volumes.values().cloned().collect();
            Err(wrong_passphrase_or_damaged(
                backend, name, &reason, &others, prefixes, crypto,
            ))
        }
        r => r,
    }
}

fn read_manifest_inner(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    remote_only: bool,
    with_filelist: bool,
) -> Result<Manifest> {
    let name = set.manifest.as_deref().ok_or_else(|| Error::BadManifest {
        name: format!("set {}", crate::time::to_filename(set.end)),
        reason: "missing".into(),
    })?;
    let bad = |reason: String| Error::BadManifest {
        name: name.to_string(),
        reason,
    };
    let cached = cache
        .and_then(|c| Cache::local_name(name, prefixes).map(|l| c.path(&l)))
        .filter(|p| p.exists() && !remote_only);
    let reader: Box<dyn Read + Send> = match cached {
        Some(p) => Box::new(File::open(&p).ctx(&p)?),
        None => {
            let p = naming::parse(name, prefixes).ok_or_else(|| bad("unparsable name".into()))?;
            let codec = Codec::for_name(p.encrypted, p.gzipped, crypto, name)?;
            crypt::decoder(backend.open(name)?, &codec)?
        }
    };
    let read_err = |e: io::Error| match crypt::signature_failure(&e) {
        Some(sig) => sig,
        None => bad(e.to_string()),
    };
    let text = if with_filelist {
        let mut v = Vec::new();
        let mut r = reader;
        r.read_to_end(&mut v).map_err(read_err)?;
        v
    } else {
        manifest_head(reader).map_err(read_err)?
    };
    let m = Manifest::parse(&text).map_err(|e| bad(e.to_string()))?;
    // duplicity (0.6 on) and dupr write "Hash SHA1 <40 hex>" for every
    // volume; without it the volume's check would be skipped silently.
    for (n, v) in &m.volumes {
        let ok = v.hash.as_ref().is_some_and(|(alg, h)| {
            alg == "SHA1" && h.len() == 40 && h.bytes().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(bad(format!(
                "volume {n} has no valid \"Hash SHA1\" line (damaged manifest)"
            )));
        }
    }
    // Every set has at least one volume; a manifest that lists none (empty
    // or garbage text) would otherwise look like an empty backup.
    if m.volumes.is_empty() && !set.volumes.is_empty() {
        return Err(bad(format!(
            "it lists no volumes, but the target holds {} volume file(s) of this set",
            set.volumes.len()
        )));
    }
    Ok(m)
}

struct VolRef {
    name: String,
    sha1: Option<String>,
    codec: Codec,
    /// Its block index, when one path is wanted and the set has one: only
    /// the blocks holding that path are read.
    seek: Option<crate::blocks::VolumeIndex>,
}

/// The needed volumes of one set read as one tar stream, with multivol
/// chunks joined back into whole entries.
struct SetStream<'a> {
    backend: &'a dyn Backend,
    tempdir: PathBuf,
    vols: VecDeque<VolRef>,
    tar: Option<(tar::Reader<Box<dyn Read + Send + 'a>>, String)>,
    /// The open volume is read through its block index: it ends for us
    /// after the wanted path.
    seeking: bool,
    want: Index,
    crypto: Option<Arc<Crypto>>,
    peeked: Option<(EntryName, tar::Header)>,
    /// The path of the last entry [`Self::head`] returned.
    prev_head: Option<Index>,
    /// Volume temp copies (remote backends) to delete.
    temp: Option<PathBuf>,
    /// The next volume, being checked ahead.
    next: Option<Pending>,
    seq: u64,
    buf: Vec<u8>,
    /// The content hash on the last chunk [`Self::copy_data`] read, if any.
    last_hash: Option<String>,
    plain: Option<Arc<dyn PlainVolumes>>,
    /// The plain copy of the open volume being written, with its name
    /// and hash: kept if the volume reads to its end without error.
    copying: Option<(String, String, SharedCopy)>,
}

type SharedCopy = Arc<std::sync::Mutex<Option<io::BufWriter<tempfile::NamedTempFile>>>>;

/// Passes a volume's plain bytes on and writes them to a copy; a failing
/// copy is dropped, never the read.
struct Tee<R> {
    inner: R,
    copy: SharedCopy,
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

/// The content hash a tar header records ([`crate::backup::CONTENT_HASH`]).
fn content_hash(h: &tar::Header) -> Option<String> {
    h.extra
        .iter()
        .find(|(k, _)| k == crate::backup::CONTENT_HASH)
        .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
}

struct Pending {
    v: VolRef,
    path: PathBuf,
    temp: Option<PathBuf>,
    hash: Option<std::thread::JoinHandle<io::Result<String>>>,
    /// A checked plain copy of the volume, from [`PlainVolumes`].
    plain: Option<File>,
}

/// A whole logical entry at the head of a set stream.
struct Head {
    name: EntryName,
    header: tar::Header,
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
    fn head(&mut self) -> Result<Option<Head>> {
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
    fn copy_data(&mut self, head: &Head, w: &mut dyn Write) -> Result<u64> {
        let mut total = 0;
        let mut chunk = head.name.chunk;
        self.last_hash = content_hash(&head.header);
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
                    self.last_hash = content_hash(&h);
                }
                other => {
                    self.peeked = other;
                    return Ok(total);
                }
            }
        }
    }
}

/// Plain (decrypted, inflated and checked) copies of whole volumes, kept by
/// a caller that reads the same volumes again and again (`mount` of an
/// archive without a block index).
pub trait PlainVolumes: Send + Sync {
    /// The plain tar of volume `name` whose manifest hash is `sha1`.
    fn open(&self, name: &str, sha1: &str) -> Option<File>;
    /// Where to write a plain copy while the volume is read.
    fn scratch(&self) -> Option<tempfile::NamedTempFile>;
    /// Keep a copy: called only once the volume passed every check.
    fn keep(&self, name: &str, sha1: &str, copy: tempfile::NamedTempFile);
}

/// What a restore does and where it writes.
pub struct RestoreOptions {
    /// The restore target: a directory for a tree, or the file itself for a
    /// single file.
    pub dest: PathBuf,
    /// Restore only this path (relative to the backup root).
    pub path: Option<Index>,
    /// `--force`: write into an existing non-empty target, replacing what the
    /// archive holds there.
    pub force: bool,
    /// Set owners as recorded (has effect only when running as root).
    pub restore_owner: bool,
    /// Owners by uid/gid only, ignoring the recorded names.
    pub numeric_owner: bool,
    /// `--rename FROM TO`: archive path prefixes placed elsewhere.
    pub rename: Vec<(Index, Index)>,
    /// Restore-time `--include`/`--exclude` (archive-relative).
    pub selection: Option<Arc<crate::select::Selection>>,
    /// Where downloaded volumes are kept while they are read.
    pub tempdir: PathBuf,
    /// The keys to decrypt with; None when the archive is not encrypted.
    pub crypto: Option<Arc<Crypto>>,
    /// A cache of plain volumes to read from and fill (None: none).
    pub plain: Option<Arc<dyn PlainVolumes>>,
    /// Live counters (entries placed, file bytes written) a progress
    /// display can poll.
    pub counters: Option<Arc<crate::backup::Counters>>,
}

impl RestoreOptions {
    /// Restore everything into `dest` (which must not exist or be empty),
    /// downloads kept in `tempdir`, decrypting with `crypto`; owners as
    /// this machine names them, no renames, no selection.
    pub fn new(dest: PathBuf, tempdir: PathBuf, crypto: Option<Arc<Crypto>>) -> RestoreOptions {
        RestoreOptions {
            dest,
            path: None,
            force: false,
            restore_owner: false,
            numeric_owner: false,
            rename: Vec::new(),
            selection: None,
            tempdir,
            crypto,
            plain: None,
            counters: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Non-directory entries placed (files, symlinks, FIFOs, devices).
    pub files: u64,
    /// Bytes of regular file data written.
    pub bytes: u64,
    /// Non-fatal errors (each logged): deltas that did not apply, paths not
    /// replaced.
    pub errors: u64,
}

/// Where collated entries go: the restore target, or a comparison with the
/// source tree (verify).
pub trait Sink {
    /// A scratch file for data being rebuilt.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile>;
    /// One restored path, its data complete and checked.
    fn place(
        &mut self,
        index: &Index,
        meta: &Meta,
        data: Option<tempfile::NamedTempFile>,
    ) -> Result<()>;
    /// Called once after the last entry (the restore target sets the
    /// directories' metadata here).
    fn finish(&mut self) -> Result<()>;
    /// Count a non-fatal error (a delta that did not apply, ...).
    fn error(&mut self);
}

/// Restore the state given by `sets` (full first, then incrementals in order).
pub fn restore(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    sets: &[&BackupSet],
    prefixes: &Prefixes,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    check_target(&opts.dest, opts.force)?;
    // Temporaries of a killed restore: beside the target (dead owners
    // only) and, with --force, in the target itself.
    if let Some(parent) = opts.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        remove_stale_temps(parent);
    }
    if opts.force && opts.dest.is_dir() {
        remove_stale_temps(&opts.dest);
    }
    let want = opts.path.clone().unwrap_or_default();
    let mut w = TreeWriter::new(opts, want.clone());
    let r = match &opts.selection {
        Some(sel) => {
            let mut f = FilteredSink {
                inner: &mut w,
                filter: crate::select::ArchiveFilter::new(sel.clone()),
            };
            collate(backend, cache, sets, prefixes, opts, &mut f)
        }
        None => collate(backend, cache, sets, prefixes, opts, &mut w),
    };
    if r.is_err() {
        w.abort();
    }
    r?;
    Ok(RestoreStats {
        files: w.files,
        bytes: w.bytes,
        errors: w.errors,
    })
}

impl<'a> SetStream<'a> {
    /// The entries of `set` for restoring `want` (everything when empty):
    /// its volumes that can hold `want`, in order, each with its block
    /// index when the set has one made for that very volume.
    fn open(
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

/// Read the sets' needed volumes and hand every path under `opts.path`, in
/// index order and rebuilt to its newest state, to `w`.
pub fn collate(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    sets: &[&BackupSet],
    prefixes: &Prefixes,
    opts: &RestoreOptions,
    w: &mut dyn Sink,
) -> Result<()> {
    let want = opts.path.clone().unwrap_or_default();
    let mut streams = Vec::with_capacity(sets.len());
    for set in sets {
        streams.push(SetStream::open(backend, cache, set, prefixes, opts, &want)?);
    }

    let mut heads: Vec<Option<Head>> = Vec::new();
    for s in streams.iter_mut() {
        heads.push(s.head()?);
    }
    let mut found = false;
    while let Some(min) = heads.iter().flatten().map(|h| &h.name.index).min().cloned() {
        // Between files: a SIGINT/SIGTERM stops here; the temporaries of
        // the file in progress are dropped (deleted) on the way out.
        crate::interrupt::check()?;
        // All entries for this index, oldest set first.
        let at: Vec<usize> = (0..heads.len())
            .filter(|&i| heads[i].as_ref().is_some_and(|h| h.name.index == min))
            .collect();
        let wanted = min.starts_with(&want);
        let base = at
            .iter()
            .rposition(|&i| heads[i].as_ref().is_some_and(|h| h.name.role != Role::Diff));
        let mut work: Option<tempfile::NamedTempFile> = None;
        // SHA-256 of `work`'s content, computed as it was written.
        let mut digest: Option<String> = None;
        let mut meta: Option<Meta> = None;
        // The content hash recorded with `work`'s newest entry, and its set.
        let mut expect: Option<(String, usize)> = None;
        for (k, &i) in at.iter().enumerate() {
            let head = heads[i].take().expect("filtered");
            let use_it = wanted && base.is_some_and(|b| k >= b);
            if use_it && head.name.chunk.is_some_and(|c| c != 1) {
                // Chunks count from 1: the file's start is missing.
                return Err(Error::CorruptVolume {
                    name: min.to_string(),
                    reason: format!(
                        "its data starts at chunk {} in {}: the chunks before it are missing",
                        head.name.chunk.unwrap_or_default(),
                        set_label(sets[i])
                    ),
                });
            }
            if !use_it {
                if wanted && base.is_none() && head.name.role == Role::Diff {
                    tracing::warn!("no base file for delta of {}; skipped", min);
                    w.error();
                }
                streams[i].copy_data(&head, &mut io::sink())?;
            } else {
                match head.name.role {
                    Role::Deleted => {
                        meta = None;
                        expect = None;
                        streams[i].copy_data(&head, &mut io::sink())?;
                    }
                    Role::Snapshot => {
                        let m = Meta::from_header(&head.header).ok_or_else(|| {
                            Error::CorruptVolume {
                                name: min.to_string(),
                                reason: format!(
                                    "unsupported tar type {:?}",
                                    head.header.typeflag as char
                                ),
                            }
                        })?;
                        work = None;
                        expect = None;
                        if m.kind == Kind::File {
                            let mut t = w.temp_file()?;
                            // dupr's archives record a content hash: compute
                            // it on the way instead of reading the file again;
                            // not for a basis a later delta patches (only the
                            // patched file's hash is compared).
                            let patched_later = at[k + 1..].iter().any(|&j| {
                                heads[j].as_ref().is_some_and(|h| h.name.role == Role::Diff)
                            });
                            let mut hw = HashWriter::new(
                                SparseWriter::new(t.as_file_mut()),
                                content_hash(&head.header).is_some() && !patched_later,
                            );
                            streams[i].copy_data(&head, &mut hw)?;
                            let (sw, d) = hw.finish();
                            sw.finish().ctx(t.path())?;
                            digest = d;
                            work = Some(t);
                            expect = streams[i].last_hash.take().map(|h| (h, i));
                        } else {
                            streams[i].copy_data(&head, &mut io::sink())?;
                        }
                        meta = Some(m);
                    }
                    Role::Diff => {
                        let m = Meta::from_header(&head.header).ok_or_else(|| {
                            Error::CorruptVolume {
                                name: min.to_string(),
                                reason: "bad delta entry".into(),
                            }
                        })?;
                        let basis = work.take();
                        let mut delta = w.temp_file()?;
                        streams[i].copy_data(&head, delta.as_file_mut())?;
                        expect = streams[i].last_hash.take().map(|h| (h, i));
                        let patched = match basis {
                            Some(b) if meta.as_ref().is_some_and(|m| m.kind == Kind::File) => {
                                apply_delta(w, b, delta, &min, &set_label(sets[i]), &mut digest)?
                            }
                            _ => {
                                tracing::warn!(
                                    "delta for {} has no regular file to patch; skipped",
                                    min
                                );
                                w.error();
                                None
                            }
                        };
                        meta = patched.is_some().then_some(m);
                        work = patched;
                    }
                    Role::Signature => {
                        return Err(Error::CorruptVolume {
                            name: min.to_string(),
                            reason: "signature entry inside a volume".into(),
                        })
                    }
                }
            }
            heads[i] = streams[i].head()?;
        }
        if let Some(m) = meta {
            found = true;
            if let (Some(t), Some((want, i))) = (&work, &expect) {
                // Checked before the file reaches its final place.
                let got = match digest.take() {
                    Some(d) => d,
                    None => sha256_file(t.path()).ctx(t.path())?,
                };
                if got != *want {
                    return Err(Error::ContentMismatch {
                        path: min.to_string(),
                        set: set_label(sets[*i]),
                    });
                }
            }
            w.place(&min, &m, work)?;
        }
    }
    w.finish()?;
    if !found {
        return Err(Error::PathNotFound(
            String::from_utf8_lossy(want.as_bytes()).into_owned(),
        ));
    }
    Ok(())
}

/// A stored file read by ranges through a backend.
struct BackendRange<'a> {
    backend: &'a dyn Backend,
    name: String,
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
fn load_blocks(
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

fn apply_delta(
    w: &mut dyn Sink,
    basis: tempfile::NamedTempFile,
    mut delta: tempfile::NamedTempFile,
    index: &Index,
    set: &str,
    digest: &mut Option<String>,
) -> Result<Option<tempfile::NamedTempFile>> {
    *digest = None;
    let mut out = w.temp_file()?;
    delta
        .as_file_mut()
        .seek(SeekFrom::Start(0))
        .ctx(delta.path())?;
    let base = crate::delta::FileBasis::new(basis.as_file().try_clone().ctx(basis.path())?)
        .ctx(basis.path())?;
    let mut bw = io::BufWriter::with_capacity(
        1 << 20,
        HashWriter::new(SparseWriter::new(out.as_file_mut()), true),
    );
    let r = crate::delta::apply(&base, io::BufReader::new(delta.as_file_mut()), &mut bw);
    match r {
        Ok(_) => {
            let hw = bw
                .into_inner()
                .map_err(|e| Error::io(index.to_string(), e.into_error()))?;
            let (sw, d) = hw.finish();
            sw.finish().ctx(out.path())?;
            *digest = d;
            Ok(Some(out))
        }
        Err(e) => {
            tracing::error!("cannot apply the delta of {} in {}: {}", index, set, e);
            w.error();
            Ok(None)
        }
    }
}

fn sha256_file(p: &Path) -> io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(sha2::Digest::finalize(h)));
        }
        sha2::Digest::update(&mut h, &buf[..n]);
    }
}

/// A set's name for messages: its manifest's name, or its time.
fn set_label(s: &BackupSet) -> String {
    s.manifest
        .as_deref()
        .and_then(|m| m.strip_suffix(".gpg").or(Some(m)))
        .and_then(|m| m.strip_suffix(".manifest"))
        .map(str::to_string)
        .unwrap_or_else(|| crate::time::to_filename(s.end))
}

/// Refuse a non-empty target unless forced.
fn check_target(dest: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => {
            let non_empty = std::fs::read_dir(dest).ctx(dest)?.next().is_some();
            if non_empty && !force {
                Err(Error::RestoreTargetNotEmpty(dest.to_path_buf()))
            } else {
                Ok(())
            }
        }
        Ok(_) if force => Ok(()),
        Ok(_) => Err(Error::RestoreTargetNotEmpty(dest.to_path_buf())),
    }
}

/// Writes all-zero blocks (4 KiB, aligned to the file offset) as holes, so
/// sparse files restore sparse. Reads hand over chunks of any length; the
/// part of a block not yet complete waits in `pending`.
struct SparseWriter<'f> {
    f: &'f mut File,
    len: u64,
    pending: Vec<u8>,
}

const BLOCK: usize = 4096;

impl<'f> SparseWriter<'f> {
    fn new(f: &'f mut File) -> Self {
        SparseWriter {
            f,
            len: 0,
            pending: Vec::with_capacity(BLOCK),
        }
    }

    /// Write whole blocks: data runs at once, zero blocks skipped.
    fn blocks(f: &mut File, buf: &[u8]) -> io::Result<()> {
        debug_assert!(buf.len().is_multiple_of(BLOCK));
        let mut run = 0;
        for (k, b) in buf.chunks_exact(BLOCK).enumerate() {
            if b.iter().all(|&x| x == 0) {
                f.write_all(&buf[run..k * BLOCK])?;
                f.seek(SeekFrom::Current(BLOCK as i64))?;
                run = (k + 1) * BLOCK;
            }
        }
        f.write_all(&buf[run..])
    }

    fn finish(self) -> io::Result<()> {
        if !self.pending.is_empty() {
            if self.pending.iter().all(|&x| x == 0) {
                // A trailing hole: set_len below makes it.
            } else {
                self.f.write_all(&self.pending)?;
            }
        }
        // Trailing holes exist only once the length is set.
        self.f.set_len(self.len)
    }
}

impl Write for SparseWriter<'_> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        self.len += n as u64;
        if !self.pending.is_empty() {
            let take = (BLOCK - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.pending.len() < BLOCK {
                return Ok(n);
            }
            let block = std::mem::take(&mut self.pending);
            Self::blocks(self.f, &block)?;
            self.pending = block;
            self.pending.clear();
        }
        let whole = buf.len() / BLOCK * BLOCK;
        Self::blocks(self.f, &buf[..whole])?;
        self.pending.extend_from_slice(&buf[whole..]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.f.flush()
    }
}

/// Hashes (SHA-256) what passes through, when asked to.
struct HashWriter<W> {
    inner: W,
    h: Option<sha2::Sha256>,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W, hash: bool) -> Self {
        HashWriter {
            inner,
            h: hash.then(<sha2::Sha256 as sha2::Digest>::new),
        }
    }

    fn finish(self) -> (W, Option<String>) {
        let d = self
            .h
            .map(|h| hex::encode(<sha2::Sha256 as sha2::Digest>::finalize(h)));
        (self.inner, d)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.h.as_mut() {
            sha2::Digest::update(h, &buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Restore selection in front of the tree writer.
struct FilteredSink<'a> {
    inner: &'a mut TreeWriter,
    filter: crate::select::ArchiveFilter,
}

impl Sink for FilteredSink<'_> {
    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        self.inner.temp_file()
    }

    fn place(
        &mut self,
        index: &Index,
        meta: &Meta,
        mut data: Option<tempfile::NamedTempFile>,
    ) -> Result<()> {
        for (ix, m) in self.filter.admit(index, meta) {
            let d = if ix == *index { data.take() } else { None };
            self.inner.place(&ix, &m, d)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()
    }

    fn error(&mut self) {
        self.inner.error()
    }
}

/// Places restored entries under the target, directories' metadata applied
/// after their contents.
///
/// Nothing is deleted that the restore did not write, except the exact path
/// an archive entry replaces, and that only once its new content is
/// complete: a file, link or node is made under a temporary name beside it
/// and renamed over; a directory that replaces a non-directory is filled
/// under a temporary name and swapped in when closed. A non-empty directory
/// is never replaced by a non-directory.
struct TreeWriter {
    dest: PathBuf,
    prefix: Index,
    force: bool,
    restore_owner: bool,
    numeric_owner: bool,
    rename: Vec<(Index, Index)>,
    names: Names,
    /// Open directories, innermost last.
    dirs: Vec<OpenDir>,
    files: u64,
    bytes: u64,
    errors: u64,
    /// The caller's live counters, fed as `files` and `bytes` grow.
    counters: Option<Arc<crate::backup::Counters>>,
}

struct OpenDir {
    index: Index,
    /// Its path relative to the target (after `--rename`).
    rel: Index,
    /// Where it is being written (a staging name when `staged_for`), reached
    /// through its parent.
    path: PathBuf,
    /// How its entries are reached: `path`, or through the open descriptor
    /// `_fd` once `path` is long (see `walk::dir_access`).
    inner: PathBuf,
    _fd: Option<File>,
    meta: Meta,
    /// The final path, now a non-directory, this one replaces when closed.
    staged_for: Option<PathBuf>,
}

/// Name prefix of every temporary a restore creates in the tree; the pid
/// after it tells a later restore whether its owner is gone.
const TEMP_PREFIX: &str = ".dupr-restore.";

fn temp_prefix() -> String {
    format!("{TEMP_PREFIX}{}.", std::process::id())
}

/// Remove temporaries that restores killed before they finished left in
/// `dir`: those whose owning process no longer runs (or of unknown owner).
fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for de in rd.flatten() {
        let name = de.file_name();
        let Some(rest) = name.as_bytes().strip_prefix(TEMP_PREFIX.as_bytes()) else {
            continue;
        };
        let pid = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| {
            p > 0 && (p as u32 == std::process::id() || Path::new(&format!("/proc/{p}")).exists())
        });
        if alive {
            continue;
        }
        let path = de.path();
        let r = match de.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match r {
            Ok(()) => tracing::info!("removed {} left by an interrupted restore", path.display()),
            Err(e) => tracing::warn!("cannot remove stale {}: {}", path.display(), e),
        }
    }
}

/// The last component of a non-root index.
fn last_name(ix: &Index) -> &[u8] {
    let b = ix.as_bytes();
    match b.iter().rposition(|&c| c == b'/') {
        Some(p) => &b[p + 1..],
        None => b,
    }
}

/// A temporary path of ours that is removed unless kept.
struct Temp(Option<PathBuf>);

impl Temp {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("not yet kept")
    }
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = match std::fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

/// Make something at a fresh temporary name in `dir` with `make`.
fn make_temp(dir: &Path, make: impl Fn(&Path) -> io::Result<()>) -> Result<Temp> {
    let t = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .make_in(dir, |p| make(p))
        .ctx(dir)?;
    let p = t
        .into_temp_path()
        .keep()
        .map_err(|e| Error::io(dir, e.error))?;
    Ok(Temp(Some(p)))
}

impl TreeWriter {
    fn new(opts: &RestoreOptions, prefix: Index) -> Self {
        TreeWriter {
            dest: opts.dest.clone(),
            prefix,
            force: opts.force,
            restore_owner: opts.restore_owner && nix::unistd::geteuid().is_root(),
            numeric_owner: opts.numeric_owner,
            rename: opts.rename.clone(),
            names: Names::default(),
            dirs: Vec::new(),
            files: 0,
            bytes: 0,
            errors: 0,
            counters: opts.counters.clone(),
        }
    }

    /// Where `p` (a final path) is being written now: under a staged
    /// directory's temporary name, if one of its ancestors is staged.
    fn map(&self, p: PathBuf) -> PathBuf {
        for d in &self.dirs {
            if let Some(f) = &d.staged_for {
                if let Ok(rest) = p.strip_prefix(f) {
                    return if rest.as_os_str().is_empty() {
                        d.path.clone()
                    } else {
                        d.path.join(rest)
                    };
                }
            }
        }
        p
    }

    /// A failed restore removes the staged directories it was filling (the
    /// paths they were to replace are still intact).
    fn abort(&mut self) {
        for d in self.dirs.drain(..) {
            if d.staged_for.is_some() {
                let _ = std::fs::remove_dir_all(&d.path);
            }
        }
    }
}

impl Sink for TreeWriter {
    /// A temporary file in the target (or beside it), so the final rename
    /// stays on one file system.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let dest = self.map(self.dest.clone());
        let dir = if dest.is_dir() {
            dest
        } else {
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).ctx(parent)?;
            parent.to_path_buf()
        };
        tempfile::Builder::new()
            .prefix(&temp_prefix())
            .tempfile_in(&dir)
            .ctx(&dir)
    }

    fn place(
        &mut self,
        index: &Index,
        meta: &Meta,
        data: Option<tempfile::NamedTempFile>,
    ) -> Result<()> {
        self.place_entry(index, meta, data)
    }

    fn finish(&mut self) -> Result<()> {
        while let Some(d) = self.dirs.pop() {
            self.close_dir(d)?;
        }
        Ok(())
    }

    fn error(&mut self) {
        self.errors += 1;
    }
}

impl TreeWriter {
    fn close_dirs_until(&mut self, index: &Index) -> Result<()> {
        while let Some(d) = self.dirs.last() {
            if index.starts_with(&d.index) && index != &d.index {
                break;
            }
            let d = self.dirs.pop().expect("non-empty");
            self.close_dir(d)?;
        }
        Ok(())
    }

    fn close_dir(&mut self, d: OpenDir) -> Result<()> {
        if let Err(e) = self.set_meta(&d.path, &d.meta) {
            if d.staged_for.is_some() {
                let _ = std::fs::remove_dir_all(&d.path);
            }
            return Err(e);
        }
        let Some(fin) = d.staged_for else {
            return Ok(());
        };
        // The complete directory takes the place of the non-directory.
        let swapped = nix::fcntl::renameat2(
            None,
            &d.path,
            None,
            &fin,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        );
        match swapped {
            Ok(()) => std::fs::remove_file(&d.path).ctx(&d.path),
            // File systems without exchange: remove, then rename.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                std::fs::remove_file(&fin).ctx(&fin)?;
                std::fs::rename(&d.path, &fin).ctx(&fin)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&d.path);
                Err(Error::io(&fin, e.into()))
            }
        }
    }

    fn place_entry(
        &mut self,
        index: &Index,
        meta: &Meta,
        data: Option<tempfile::NamedTempFile>,
    ) -> Result<()> {
        self.close_dirs_until(index)?;
        let mut rel = index
            .strip_prefix(&self.prefix)
            .expect("caller filtered by prefix");
        if let Some((from, to)) = self.rename.iter().find(|(f, _)| rel.starts_with(f)) {
            let rest = rel.strip_prefix(from).expect("prefix checked");
            rel = match (to.is_root(), rest.is_root()) {
                (_, true) => to.clone(),
                (true, false) => rest,
                (false, false) => {
                    Index::from_bytes([to.as_bytes(), b"/", rest.as_bytes()].concat())
                }
            };
        }
        // A child of the open directory is reached through it, so depth
        // never makes a path too long for the kernel.
        let child = self
            .dirs
            .last()
            .filter(|d| rel.parent().as_ref() == Some(&d.rel));
        let under_open_dir = child.is_some();
        let path = match child {
            Some(d) => d.inner.join(std::ffi::OsStr::from_bytes(last_name(&rel))),
            None => self.map(rel.to_path(&self.dest)),
        };
        if let Some(parent) = path.parent() {
            if !rel.is_root() && !under_open_dir {
                // Never write through a symlink a hostile archive planted.
                let mut p = self.dest.clone();
                for c in rel.parent().unwrap_or_default().components() {
                    p.push(std::ffi::OsStr::from_bytes(c));
                    let q = self.map(p.clone());
                    if let Ok(md) = std::fs::symlink_metadata(&q) {
                        if !md.is_dir() {
                            return Err(Error::CorruptVolume {
                                name: index.to_string(),
                                reason: format!("parent {} is not a directory", q.display()),
                            });
                        }
                    }
                }
                std::fs::create_dir_all(parent).ctx(parent)?;
            }
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        let tmp = match meta.kind {
            Kind::Dir => return self.open_dir(index, rel, path, meta),
            Kind::File => {
                let t = data.expect("regular files come with data");
                let len = t.as_file().metadata().map(|m| m.len()).unwrap_or(0);
                self.bytes += len;
                if let Some(c) = &self.counters {
                    c.bytes.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                }
                let p = t
                    .into_temp_path()
                    .keep()
                    .map_err(|e| Error::io(&path, e.error))?;
                Temp(Some(p))
            }
            Kind::Symlink => make_temp(&dir, |p| {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&meta.link), p)
            })?,
            Kind::Fifo => make_temp(&dir, |p| {
                nix::unistd::mkfifo(p, mode).map_err(io::Error::from)
            })?,
            Kind::Char | Kind::Block => {
                let kind = if meta.kind == Kind::Char {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                let dev = libc::makedev(meta.devmajor, meta.devminor);
                make_temp(&dir, |p| {
                    nix::sys::stat::mknod(p, kind, mode, dev).map_err(io::Error::from)
                })?
            }
            Kind::Socket => return Ok(()),
        };
        if !self.replace_with(tmp, &path, rel.is_root())? {
            return Ok(());
        }
        self.files += 1;
        if let Some(c) = &self.counters {
            c.files.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.set_meta(&path, meta)
    }

    /// Open (create, reuse or stage) the directory at `path`.
    fn open_dir(&mut self, index: &Index, rel: Index, path: PathBuf, meta: &Meta) -> Result<()> {
        let mut staged_for = None;
        let mut at = path.clone();
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => {
                if self.force {
                    remove_stale_temps(&path);
                }
            }
            Ok(_) => {
                // A non-directory (only in a target restored into with
                // --force): fill a new directory beside it, swap at close.
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let t = make_temp(dir, |p| std::fs::create_dir(p))?;
                at = t.path().to_path_buf();
                t.keep();
                staged_for = Some(path.clone());
            }
            Err(_) => std::fs::create_dir(&path).ctx(&path)?,
        }
        // Writable while we fill it; the real mode comes at close.
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o700)).ctx(&at)?;
        let (inner, fd) = crate::walk::dir_access(&at).ctx(&at)?;
        self.dirs.push(OpenDir {
            index: index.clone(),
            rel,
            path: at,
            inner,
            _fd: fd,
            meta: meta.clone(),
            staged_for,
        });
        Ok(())
    }

    /// Rename the complete `tmp` onto `path`. An existing non-directory is
    /// replaced atomically, an empty directory removed first; a non-empty
    /// directory is kept: the target itself fails the restore (exit 11),
    /// one inside it is an error (false).
    fn replace_with(&mut self, tmp: Temp, path: &Path, is_target: bool) -> Result<bool> {
        if !std::fs::symlink_metadata(path).is_ok_and(|md| md.is_dir()) {
            std::fs::rename(tmp.path(), path).ctx(path)?;
            tmp.keep();
            return Ok(true);
        }
        let others = std::fs::read_dir(path)
            .ctx(path)?
            .flatten()
            .any(|de| de.path() != tmp.path());
        if others {
            if is_target {
                return Err(Error::RestoreTargetIsDir(path.to_path_buf()));
            }
            tracing::error!(
                "not replacing the non-empty directory {} with the archive's non-directory",
                path.display()
            );
            self.errors += 1;
            return Ok(false);
        }
        // The temporary may sit inside this (otherwise empty) directory.
        let tmp = if tmp.path().parent() == Some(path) {
            let outside = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let moved = outside.join(tmp.path().file_name().expect("temp names have one"));
            std::fs::rename(tmp.path(), &moved).ctx(&moved)?;
            tmp.keep();
            Temp(Some(moved))
        } else {
            tmp
        };
        std::fs::remove_dir(path).ctx(path)?;
        std::fs::rename(tmp.path(), path).ctx(path)?;
        tmp.keep();
        Ok(true)
    }

    fn set_meta(&mut self, path: &Path, meta: &Meta) -> Result<()> {
        if self.restore_owner {
            let (uid, gid) = if self.numeric_owner {
                (meta.uid, meta.gid)
            } else {
                (
                    self.names.uid_for(&meta.uname, meta.uid),
                    self.names.gid_for(&meta.gname, meta.gid),
                )
            };
            // lchown: never follows a symlink; chown before chmod, which
            // would otherwise lose setuid bits.
            nix::unistd::fchownat(
                None,
                path,
                Some(uid.into()),
                Some(gid.into()),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::io(path, e.into()))?;
        }
        if meta.kind == Kind::Symlink {
            return Ok(());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.perms)).ctx(path)?;
        let mt = filetime::FileTime::from_unix_time(meta.mtime, 0);
        filetime::set_symlink_file_times(path, filetime::FileTime::now(), mt).ctx(path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Zero blocks become holes however the data is cut into writes (reads
    /// of a decompressor come in any length, rarely aligned).
    #[test]
    fn sparse_writer_makes_holes_from_unaligned_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut f = File::create(&p).unwrap();
        let len = 64 << 20;
        let mut data = vec![0u8; len];
        data[5] = 1;
        data[len / 2 + 3] = 2;
        let mut w = SparseWriter::new(&mut f);
        for piece in data.chunks(4097) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), data);
        let allocated = std::fs::metadata(&p).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
    }
}
