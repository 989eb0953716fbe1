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
use crate::content::{self, ContentHash};
use std::sync::Arc;

use crate::crypt::{self, Codec, Crypto};
use crate::entry::{parse_entry_name, EntryName, Kind, Meta, Names, Role};
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::manifest::Manifest;
use crate::naming::{self, Prefixes};
use crate::tar;

mod manifests;
mod sets;
mod tree;

pub use manifests::{
    load_manifest, load_manifest_with_filelist, load_remote_manifest, wrong_passphrase_or_damaged,
};
use sets::*;
use tree::*;

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
        // The content hash of `work`, computed as it was written.
        let mut digest: Option<ContentHash> = None;
        let mut meta: Option<Meta> = None;
        // The content hash recorded with `work`'s newest entry, and its set.
        let mut expect: Option<(ContentHash, usize)> = None;
        for (k, &i) in at.iter().enumerate() {
            let head = heads[i].take().expect("filtered");
            let use_it = wanted && base.is_some_and(|b| k >= b);
            if use_it && head.name.chunk.is_some_and(|c| c != 1) {
                // Chunks count from 1: the file's start is missing.
                return Err(missing_start(&min, &head, sets[i]));
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
                        let later = &at[k + 1..];
                        if m.kind == Kind::File && !later.is_empty() {
                            // Only deltas follow the base: read them first,
                            // then stream the base through them.
                            let p = through_deltas(
                                w,
                                &mut streams,
                                &mut heads,
                                (sets, i, &head, &min),
                                later,
                            )?;
                            (work, meta, digest, expect) = (p.work, p.meta, p.digest, p.expect);
                            heads[i] = streams[i].head()?;
                            break;
                        }
                        if m.kind == Kind::File {
                            let mut t = w.temp_file()?;
                            // dupr's archives record a content hash: compute
                            // it on the way instead of reading the file again.
                            let mut hw = HashWriter::new(
                                SparseWriter::new(t.as_file_mut()),
                                ContentHash::of_header(&head.header).map(|h| h.algo),
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
                    // A regular file's deltas are taken with its base
                    // (through_deltas): a delta reaching here has no
                    // regular file to patch.
                    Role::Diff => {
                        streams[i].copy_data(&head, &mut io::sink())?;
                        tracing::warn!("delta for {} has no regular file to patch; skipped", min);
                        w.error();
                        (work, meta, expect) = (None, None, None);
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
                    Some(d) if d.algo == want.algo => d,
                    _ => content::of_file(want.algo, t.path()).ctx(t.path())?,
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

/// A file's entry whose data starts past its first chunk (chunks count
/// from 1): the chunks before it are missing.
fn missing_start(min: &Index, head: &Head, set: &BackupSet) -> Error {
    Error::CorruptVolume {
        name: min.to_string(),
        reason: format!(
            "its data starts at chunk {} in {}: the chunks before it are missing",
            head.name.chunk.unwrap_or_default(),
            set_label(set)
        ),
    }
}

/// A file rebuilt from its base and the deltas after it.
struct Patched {
    work: Option<tempfile::NamedTempFile>,
    meta: Option<Meta>,
    digest: Option<ContentHash>,
    expect: Option<(ContentHash, usize)>,
}

/// Swallows what is written after the first error, keeping that error:
/// the base's data is still read to its end (the set's stream goes on),
/// while a delta that cannot apply fails only its own file.
struct KeepError<W> {
    inner: W,
    err: Option<io::Error>,
}

impl<W: Write> Write for KeepError<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.err.is_none() {
            if let Err(e) = self.inner.write_all(data) {
                self.err = Some(e);
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Rebuild a regular file from its base (`head` of set `i`) and the deltas
/// of the sets `later`, which are all deltas of it. The deltas are read
/// first; when each only moves forward in its basis (appends and in-place
/// changes, the usual case) the base streams through all of them straight
/// into the new file, so no copy of the base or of a middle version is
/// written and read back. Otherwise the base is written out and each delta
/// applied in turn.
fn through_deltas(
    w: &mut dyn Sink,
    streams: &mut [SetStream<'_>],
    heads: &mut [Option<Head>],
    (sets, i, head, min): (&[&BackupSet], usize, &Head, &Index),
    later: &[usize],
) -> Result<Patched> {
    let mut deltas = Vec::with_capacity(later.len());
    for &j in later {
        let h = heads[j].take().expect("filtered");
        if h.name.chunk.is_some_and(|c| c != 1) {
            return Err(missing_start(min, &h, sets[j]));
        }
        let m = Meta::from_header(&h.header).ok_or_else(|| Error::CorruptVolume {
            name: min.to_string(),
            reason: "bad delta entry".into(),
        })?;
        let mut d = w.temp_file()?;
        streams[j].copy_data(&h, d.as_file_mut())?;
        let e = streams[j].last_hash.take().map(|x| (x, j));
        heads[j] = streams[j].head()?;
        deltas.push((d, m, e, j));
    }
    let mut forward = true;
    for (d, ..) in &mut deltas {
        let f = d.as_file_mut();
        f.seek(SeekFrom::Start(0)).ctx(d.path())?;
        // A delta that does not parse goes the old way, to fail there.
        forward &= crate::delta::is_forward(io::BufReader::new(d.as_file())).unwrap_or(false);
    }
    let Some((_, last_meta, last_expect, last_set)) = deltas.last() else {
        unreachable!("later is not empty")
    };
    let (last_meta, last_expect, last_set) = (last_meta.clone(), last_expect.clone(), *last_set);
    if forward {
        let mut readers = Vec::with_capacity(deltas.len());
        for (d, ..) in &mut deltas {
            d.as_file_mut().seek(SeekFrom::Start(0)).ctx(d.path())?;
            readers.push(io::BufReader::new(d.as_file().try_clone().ctx(d.path())?));
        }
        let mut out = w.temp_file()?;
        let out_path = out.path().to_path_buf();
        let algo = last_expect.as_ref().map(|(h, _)| h.algo);
        // The new file's digest, or why a delta did not apply.
        let applied: std::result::Result<Option<ContentHash>, io::Error> = {
            let sink = io::BufWriter::with_capacity(
                1 << 20,
                HashWriter::new(SparseWriter::new(out.as_file_mut()), algo),
            );
            let finished = match crate::delta::Forward::new(readers, sink) {
                Ok(mut f) => {
                    let mut keep = KeepError {
                        inner: &mut f,
                        err: None,
                    };
                    streams[i].copy_data(head, &mut keep)?;
                    match keep.err.take() {
                        Some(e) => Err(e),
                        None => f.finish(),
                    }
                }
                Err(e) => {
                    // The base's data is read past all the same.
                    streams[i].copy_data(head, &mut io::sink())?;
                    Err(e)
                }
            };
            match finished {
                Ok(sink) => {
                    let hw = sink
                        .into_inner()
                        .map_err(|e| Error::io(&out_path, e.into_error()))?;
                    let (sw, digest) = hw.finish();
                    sw.finish().ctx(&out_path)?;
                    Ok(digest)
                }
                Err(e) => Err(e),
            }
        };
        return Ok(match applied {
            Ok(digest) => Patched {
                work: Some(out),
                meta: Some(last_meta),
                digest,
                expect: last_expect,
            },
            Err(e) => {
                tracing::error!(
                    "cannot apply the deltas of {} up to {}: {}",
                    min,
                    set_label(sets[last_set]),
                    e
                );
                w.error();
                Patched {
                    work: None,
                    meta: None,
                    digest: None,
                    expect: None,
                }
            }
        });
    }
    let mut t = w.temp_file()?;
    let mut hw = HashWriter::new(SparseWriter::new(t.as_file_mut()), None);
    streams[i].copy_data(head, &mut hw)?;
    hw.finish().0.finish().ctx(t.path())?;
    let mut p = Patched {
        work: Some(t),
        meta: None,
        digest: None,
        expect: None,
    };
    for (d, m, e, j) in deltas {
        p.expect = e;
        let algo = p.expect.as_ref().map(|(h, _)| h.algo);
        p.work = match p.work.take() {
            Some(b) => apply_delta(w, b, d, min, &set_label(sets[j]), algo, &mut p.digest)?,
            None => None,
        };
        p.meta = p.work.is_some().then_some(m);
    }
    Ok(p)
}

fn apply_delta(
    w: &mut dyn Sink,
    basis: tempfile::NamedTempFile,
    mut delta: tempfile::NamedTempFile,
    index: &Index,
    set: &str,
    algo: Option<content::Algo>,
    digest: &mut Option<ContentHash>,
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
        HashWriter::new(SparseWriter::new(out.as_file_mut()), algo),
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
