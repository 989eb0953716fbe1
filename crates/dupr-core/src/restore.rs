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

fn read_manifest(
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
    let text = if with_filelist {
        let mut v = Vec::new();
        let mut r = reader;
        r.read_to_end(&mut v).map_err(|e| bad(e.to_string()))?;
        v
    } else {
        manifest_head(reader).map_err(|e| bad(e.to_string()))?
    };
    let m = Manifest::parse(&text).map_err(bad)?;
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
}

/// The needed volumes of one set read as one tar stream, with multivol
/// chunks joined back into whole entries.
struct SetStream<'a> {
    backend: &'a dyn Backend,
    tempdir: PathBuf,
    vols: VecDeque<VolRef>,
    tar: Option<(tar::Reader<Box<dyn Read + Send>>, String)>,
    peeked: Option<(EntryName, tar::Header)>,
    /// Volume temp copies (remote backends) to delete.
    temp: Option<PathBuf>,
    /// The next volume, being checked ahead.
    next: Option<Pending>,
    seq: u64,
    buf: Vec<u8>,
}

struct Pending {
    v: VolRef,
    path: PathBuf,
    temp: Option<PathBuf>,
    hash: Option<std::thread::JoinHandle<io::Result<String>>>,
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
        let (path, temp) = match self.backend.local_path(&v.name) {
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
        let hash = v.sha1.as_ref().map(|_| {
            let p = path.clone();
            std::thread::spawn(move || crypt::sha1_file(&p))
        });
        Ok(Pending {
            v,
            path,
            temp,
            hash,
        })
    }

    fn open_pending(&mut self, p: Pending) -> Result<Box<dyn Read + Send>> {
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
        crypt::decoder(f, &p.v.codec)
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
                let r = self.open_pending(cur)?;
                self.tar = Some((tar::Reader::new(r), name));
            }
            let (tr, name) = self.tar.as_mut().expect("opened");
            match tr.next_header().map_err(|e| Self::corrupt(name, e))? {
                Some(h) => {
                    let en = parse_entry_name(&h.name).map_err(|e| Self::corrupt(name, e))?;
                    return Ok(Some((en, h)));
                }
                None => {
                    // Read to the end so a decryptor reaches its integrity check.
                    tr.drain().map_err(|e| Self::corrupt(name, e))?;
                    self.tar = None;
                    if let Some(t) = self.temp.take() {
                        let _ = std::fs::remove_file(t);
                    }
                }
            }
        }
    }

    fn head(&mut self) -> Result<Option<Head>> {
        Ok(self.next_raw()?.map(|(name, header)| Head { name, header }))
    }

    /// Copy the data of `head` (all its chunks) to `w`.
    fn copy_data(&mut self, head: &Head, w: &mut dyn Write) -> Result<u64> {
        let mut total = 0;
        let mut chunk = head.name.chunk;
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
                    let _ = h;
                }
                other => {
                    self.peeked = other;
                    return Ok(total);
                }
            }
        }
    }
}

pub struct RestoreOptions {
    pub dest: PathBuf,
    /// Restore only this path (relative to the backup root).
    pub path: Option<Index>,
    pub force: bool,
    pub restore_owner: bool,
    /// Owners by uid/gid only, ignoring the recorded names.
    pub numeric_owner: bool,
    /// `--rename FROM TO`: archive path prefixes placed elsewhere.
    pub rename: Vec<(Index, Index)>,
    /// Restore-time `--include`/`--exclude` (archive-relative).
    pub selection: Option<Arc<crate::select::Selection>>,
    pub tempdir: PathBuf,
    pub crypto: Option<Arc<Crypto>>,
}

#[derive(Debug, Default)]
pub struct RestoreStats {
    pub files: u64,
    pub bytes: u64,
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
    let want = opts.path.clone().unwrap_or_default();
    let mut w = TreeWriter::new(opts, want.clone());
    match &opts.selection {
        Some(sel) => {
            let mut f = FilteredSink {
                inner: &mut w,
                filter: crate::select::ArchiveFilter::new(sel.clone()),
            };
            collate(backend, cache, sets, prefixes, opts, &mut f)?;
        }
        None => collate(backend, cache, sets, prefixes, opts, &mut w)?,
    }
    Ok(RestoreStats {
        files: w.files,
        bytes: w.bytes,
        errors: w.errors,
    })
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
    let mut streams = Vec::new();
    for set in sets {
        let m = load_manifest(backend, cache, set, prefixes, opts.crypto.as_ref())?;
        let mut vols = VecDeque::new();
        for (n, v) in &m.volumes {
            if !v.contains(&want) {
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
            vols.push_back(VolRef { name, sha1, codec });
        }
        streams.push(SetStream {
            backend,
            tempdir: opts.tempdir.clone(),
            vols,
            tar: None,
            peeked: None,
            temp: None,
            next: None,
            seq: 0,
            buf: vec![0u8; 256 * 1024],
        });
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
        let mut meta: Option<Meta> = None;
        for (k, &i) in at.iter().enumerate() {
            let head = heads[i].take().expect("filtered");
            let use_it = wanted && base.is_some_and(|b| k >= b);
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
                        if m.kind == Kind::File {
                            let mut t = w.temp_file()?;
                            let mut sw = SparseWriter::new(t.as_file_mut());
                            streams[i].copy_data(&head, &mut sw)?;
                            sw.finish().ctx(t.path())?;
                            work = Some(t);
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
                        let patched = match basis {
                            Some(b) if meta.as_ref().is_some_and(|m| m.kind == Kind::File) => {
                                apply_delta(w, b, delta, &min, &set_label(sets[i]))?
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

fn apply_delta(
    w: &mut dyn Sink,
    basis: tempfile::NamedTempFile,
    mut delta: tempfile::NamedTempFile,
    index: &Index,
    set: &str,
) -> Result<Option<tempfile::NamedTempFile>> {
    let mut out = w.temp_file()?;
    delta
        .as_file_mut()
        .seek(SeekFrom::Start(0))
        .ctx(delta.path())?;
    let base = crate::delta::FileBasis::new(basis.as_file().try_clone().ctx(basis.path())?)
        .ctx(basis.path())?;
    let mut bw = io::BufWriter::with_capacity(1 << 20, SparseWriter::new(out.as_file_mut()));
    let r = crate::delta::apply(&base, io::BufReader::new(delta.as_file_mut()), &mut bw);
    match r {
        Ok(_) => {
            let sw = bw
                .into_inner()
                .map_err(|e| Error::io(index.to_string(), e.into_error()))?;
            sw.finish().ctx(out.path())?;
            Ok(Some(out))
        }
        Err(e) => {
            tracing::error!("cannot apply the delta of {} in {}: {}", index, set, e);
            w.error();
            Ok(None)
        }
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

/// Writes zeros as holes (restores sparse files sparse).
struct SparseWriter<'f> {
    f: &'f mut File,
    len: u64,
    hole: bool,
}

impl<'f> SparseWriter<'f> {
    fn new(f: &'f mut File) -> Self {
        SparseWriter {
            f,
            len: 0,
            hole: false,
        }
    }

    fn finish(self) -> io::Result<()> {
        if self.hole {
            self.f.set_len(self.len)?;
        }
        Ok(())
    }
}

impl Write for SparseWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Runs of data are written at once; whole zero pages become holes.
        let mut run_start = 0;
        let mut pos = 0;
        while pos < buf.len() {
            let end = (pos + 4096).min(buf.len());
            let piece = &buf[pos..end];
            if piece.len() == 4096 && piece.iter().all(|&b| b == 0) {
                self.f.write_all(&buf[run_start..pos])?;
                self.f.seek(SeekFrom::Current(4096))?;
                self.hole = true;
                run_start = end;
            }
            pos = end;
        }
        self.f.write_all(&buf[run_start..])?;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.f.flush()
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
struct TreeWriter {
    dest: PathBuf,
    prefix: Index,
    restore_owner: bool,
    numeric_owner: bool,
    rename: Vec<(Index, Index)>,
    names: Names,
    /// Open directories (index, path, meta), innermost last.
    dirs: Vec<(Index, PathBuf, Meta)>,
    files: u64,
    bytes: u64,
    errors: u64,
}

impl TreeWriter {
    fn new(opts: &RestoreOptions, prefix: Index) -> Self {
        TreeWriter {
            dest: opts.dest.clone(),
            prefix,
            restore_owner: opts.restore_owner && nix::unistd::geteuid().is_root(),
            numeric_owner: opts.numeric_owner,
            rename: opts.rename.clone(),
            names: Names::default(),
            dirs: Vec::new(),
            files: 0,
            bytes: 0,
            errors: 0,
        }
    }
}

impl Sink for TreeWriter {
    /// A temporary file beside the target, so the final rename is atomic.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let dir = if self.dest.is_dir() {
            self.dest.clone()
        } else {
            let parent = self
                .dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).ctx(parent)?;
            parent.to_path_buf()
        };
        tempfile::Builder::new()
            .prefix(".dupr-restore.")
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
        while let Some((_, path, meta)) = self.dirs.pop() {
            self.set_meta(&path, &meta)?;
        }
        Ok(())
    }

    fn error(&mut self) {
        self.errors += 1;
    }
}

impl TreeWriter {
    fn close_dirs_until(&mut self, index: &Index) -> Result<()> {
        while let Some((ix, _, _)) = self.dirs.last() {
            if index.starts_with(ix) && index != ix {
                break;
            }
            let (_, path, meta) = self.dirs.pop().expect("non-empty");
            self.set_meta(&path, &meta)?;
        }
        Ok(())
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
        let path = rel.to_path(&self.dest);
        if let Some(parent) = path.parent() {
            let under_open_dir = self.dirs.last().is_some_and(|(_, p, _)| p == parent);
            if !rel.is_root() && !under_open_dir {
                // Never write through a symlink a hostile archive planted.
                let mut p = self.dest.clone();
                for c in rel.parent().unwrap_or_default().components() {
                    p.push(std::ffi::OsStr::from_bytes(c));
                    if let Ok(md) = std::fs::symlink_metadata(&p) {
                        if !md.is_dir() {
                            return Err(Error::CorruptVolume {
                                name: index.to_string(),
                                reason: format!("parent {} is not a directory", p.display()),
                            });
                        }
                    }
                }
                std::fs::create_dir_all(parent).ctx(parent)?;
            }
        }
        match meta.kind {
            Kind::Dir => {
                match std::fs::symlink_metadata(&path) {
                    Ok(md) if md.is_dir() => {}
                    Ok(_) => {
                        std::fs::remove_file(&path).ctx(&path)?;
                        std::fs::create_dir(&path).ctx(&path)?;
                    }
                    Err(_) => std::fs::create_dir(&path).ctx(&path)?,
                }
                // Writable while we fill it; the real mode comes at close.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                    .ctx(&path)?;
                self.dirs.push((index.clone(), path, meta.clone()));
                return Ok(());
            }
            Kind::File => {
                let t = data.expect("regular files come with data");
                self.bytes += t.as_file().metadata().map(|m| m.len()).unwrap_or(0);
                remove_existing(&path)?;
                t.persist(&path).map_err(|e| Error::io(&path, e.error))?;
            }
            Kind::Symlink => {
                remove_existing(&path)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&meta.link), &path)
                    .ctx(&path)?;
            }
            Kind::Fifo => {
                remove_existing(&path)?;
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| Error::io(&path, e.into()))?;
            }
            Kind::Char | Kind::Block => {
                remove_existing(&path)?;
                let kind = if meta.kind == Kind::Char {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                let dev = libc::makedev(meta.devmajor, meta.devminor);
                nix::sys::stat::mknod(
                    &path,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(|e| Error::io(&path, e.into()))?;
            }
            Kind::Socket => return Ok(()),
        }
        self.files += 1;
        self.set_meta(&path, meta)
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

fn remove_existing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(path).ctx(path),
        Ok(_) => std::fs::remove_file(path).ctx(path),
        Err(_) => Ok(()),
    }
}
