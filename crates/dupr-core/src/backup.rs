//! The backup pipeline: walk → select → (snapshot | delta) → tar blocks →
//! volumes (own thread: compression/encryption, upload) and, beside it, the
//! signature tar. The manifest is uploaded last, so a set without one is
//! visibly incomplete.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use crate::cache::Cache;
use crate::content::{self, ContentHash};
use crate::crypt::Codec;
use crate::entry::{entry_name, Kind, Meta, Role};
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::manifest::{Change, Manifest, VolumeInfo};
use crate::naming::{self, FileType, ParsedName, Prefixes, SetType};
use crate::ops::BackupRequest;
use crate::signature::{block_len, SigBuilder};
use crate::sigtar::{SigEntry, SigMerge, SigtarWriter};
use crate::tar;
use crate::time::{self, Timestamp};
use crate::volume::{Block, ResumePoint, VolumeWriter};
use crate::walk::WalkEntry;
use crate::walk::Walker;

/// Live counters a progress display can poll.
#[derive(Default)]
pub struct Counters {
    /// Source entries walked so far.
    pub files: AtomicU64,
    /// Source file bytes done so far: read (snapshots and deltas), or
    /// passed over unchanged.
    pub bytes: AtomicU64,
}

/// A backup run's settings: the request, and what the target adds.
pub(crate) struct BackupConfig {
    /// What was asked (source, selection, dry run, ...).
    pub req: BackupRequest,
    /// Bytes of tar per volume.
    pub volsize: u64,
    /// How volumes and the set's other files are written.
    pub codec: Codec,
    /// Deflate level for an incremental set's volumes (None: `codec`'s).
    pub incremental_level: Option<u32>,
    /// This host's name, for the manifest.
    pub hostname: Vec<u8>,
    /// File name prefixes on the target.
    pub prefixes: Prefixes,
    /// Volumes uploaded at once.
    pub concurrency: usize,
}

/// What a backup did, as duplicity's statistics block reports it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// The incremental found no change and was not kept (--skip-if-no-change).
    pub skipped: bool,
    /// The set's time (its name's end time).
    pub start_time: Timestamp,
    /// When the last file of the set was stored.
    pub end_time: Timestamp,
    /// Entries the walk selected (files, directories, links, ...).
    pub source_files: u64,
    /// Their sizes, summed.
    pub source_file_size: u64,
    /// Entries the previous backup did not have (all of them in a full).
    pub new_files: u64,
    /// Their sizes, summed.
    pub new_file_size: u64,
    /// Entries the previous backup had and the source no longer has.
    pub deleted_files: u64,
    /// Entries whose content or metadata changed since the previous backup.
    pub changed_files: u64,
    /// Their sizes, summed.
    pub changed_file_size: u64,
    /// Entries written to the volumes (snapshots, deltas, deletions).
    pub delta_entries: u64,
    /// Bytes of snapshot and delta data written, before compression.
    pub raw_delta_size: u64,
    /// Volumes this run stored (those of an interrupted run not counted).
    pub volumes: u32,
    /// Volume bytes written: duplicity's TotalDestinationSizeChange.
    pub dest_size: u64,
    /// Everything written to the target: volumes, signatures, manifest,
    /// block index.
    pub stored_total: u64,
    /// Source entries that could not be read and were left out.
    pub errors: u64,
}

impl Stats {
    /// The statistics under duplicity's `--jsonstat` key names.
    pub fn jsonstat(&self, elapsed_secs: f64) -> JsonStat {
        JsonStat {
            start_time: self.start_time,
            end_time: self.end_time,
            elapsed_time: (elapsed_secs * 100.0).round() / 100.0,
            source_files: self.source_files,
            source_file_size: self.source_file_size,
            new_files: self.new_files,
            new_file_size: self.new_file_size,
            deleted_files: self.deleted_files,
            changed_files: self.changed_files,
            changed_file_size: self.changed_file_size,
            delta_entries: self.delta_entries,
            raw_delta_size: self.raw_delta_size,
            volumes: self.volumes,
            total_destination_size_change: self.dest_size,
            errors: self.errors,
            skipped: self.skipped,
        }
    }
}

/// A backup's statistics as duplicity's `--jsonstat` writes them (stored
/// with the set, printed by `backup --jsonstat`).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JsonStat {
    /// [`Stats::start_time`].
    pub start_time: Timestamp,
    /// [`Stats::end_time`].
    pub end_time: Timestamp,
    /// Seconds, to the hundredth.
    pub elapsed_time: f64,
    /// [`Stats::source_files`].
    pub source_files: u64,
    /// [`Stats::source_file_size`].
    pub source_file_size: u64,
    /// [`Stats::new_files`].
    pub new_files: u64,
    /// [`Stats::new_file_size`].
    pub new_file_size: u64,
    /// [`Stats::deleted_files`].
    pub deleted_files: u64,
    /// [`Stats::changed_files`].
    pub changed_files: u64,
    /// [`Stats::changed_file_size`].
    pub changed_file_size: u64,
    /// [`Stats::delta_entries`].
    pub delta_entries: u64,
    /// [`Stats::raw_delta_size`].
    pub raw_delta_size: u64,
    /// [`Stats::volumes`].
    pub volumes: u32,
    /// [`Stats::dest_size`].
    pub total_destination_size_change: u64,
    /// [`Stats::errors`].
    pub errors: u64,
    /// [`Stats::skipped`].
    pub skipped: bool,
}

/// Drop `.` components and repeated/trailing slashes (Localdir as duplicity writes it).
pub(crate) fn canonical_localdir(arg: &[u8]) -> Vec<u8> {
    let abs = arg.starts_with(b"/");
    let parts: Vec<&[u8]> = arg
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let mut out = if abs { b"/".to_vec() } else { Vec::new() };
    out.extend_from_slice(&parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// What a tar entry records of its source (see [`Block::key`]).
fn entry_key(role: u8, m: Option<&Meta>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    role.hash(&mut h);
    if let Some(m) = m {
        (m.kind as u8, m.perms, m.uid, m.gid, &m.uname, &m.gname).hash(&mut h);
        (m.mtime, m.size, &m.link, m.devmajor, m.devminor).hash(&mut h);
        m.exact.map(|x| (x.size, x.mtime_nsec)).hash(&mut h);
    }
    h.finish()
}

const CHUNK: usize = 65536;

/// Bytes of a changed file diffed at a time.
const DIFF_WINDOW: usize = 8 << 20;

/// A stored volume's number and record.
type Stored = (u32, VolumeInfo);

/// What the volume writer reports: volume count, their bytes, their records.
type Written = (u32, u64, Vec<Stored>);

/// What kind of set to write.
pub(crate) enum Plan {
    Full,
    /// An incremental on top of the chain ending at `start`, whose merged
    /// signature state is `old`.
    Incremental {
        start: Timestamp,
        old: SigMerge<Box<dyn Read + Send>>,
        /// The target's last manifest against the cache's, still running:
        /// it must pass before anything of the set is stored.
        check: Option<crate::ops::RemoteCheck>,
    },
}

/// The producer side of the pipeline: turns walk entries into tar blocks for
/// the volume writer, sigtar records and Filelist lines.
struct Emitter<'a> {
    tx: crossbeam_channel::Sender<Block>,
    sigtar: &'a mut SigtarWriter,
    filelist: BufWriter<File>,
    filelist_path: PathBuf,
    filelist_count: u64,
    stats: &'a mut Stats,
    cfg: &'a BackupConfig,
    buf: Vec<u8>,
    /// Scratch file for deltas (anonymous, reused).
    delta_tmp: File,
    errors: u64,
}

impl Emitter<'_> {
    fn send(&self, b: Block) -> Result<()> {
        self.tx
            .send(b)
            .map_err(|_| Error::Usage("volume writer stopped".into()))
    }

    /// Merge the walk with the old signature state (none for a full), in
    /// index order: each path is new, changed, unchanged or, when only the
    /// old state has it, deleted.
    fn produce(
        &mut self,
        mut walker: Walker<'_>,
        mut old: Option<&mut SigMerge<Box<dyn Read + Send>>>,
        incremental: bool,
    ) -> Result<()> {
        let next_old = |old: &mut Option<&mut SigMerge<_>>| match old {
            Some(o) => o.next_present(),
            None => Ok(None),
        };
        let mut old_head = next_old(&mut old)?;
        for e in walker.by_ref() {
            self.stats.source_files += 1;
            if let Some(c) = &self.cfg.req.counters {
                c.files.fetch_add(1, Ordering::Relaxed);
            }
            // Paths the old state has and the walk passed: deleted.
            while let Some(o) = old_head.take_if(|o| o.index < e.index) {
                self.deleted(&o)?;
                old_head = next_old(&mut old)?;
            }
            let prev = match old_head.take_if(|o| o.index == e.index) {
                Some(o) => {
                    old_head = next_old(&mut old)?;
                    Some(o)
                }
                None => None,
            };
            self.entry(&e, prev, incremental)?;
        }
        while let Some(o) = old_head.take() {
            self.deleted(&o)?;
            old_head = next_old(&mut old)?;
        }
        // Read the old signatures to their checksums: a corrupt chain
        // fails the run (and its volumes are discarded).
        if let Some(o) = old {
            o.drain()?;
        }
        self.errors += walker.errors;
        self.filelist.flush().ctx(&self.filelist_path)?;
        Ok(())
    }

    fn note(&mut self, change: Change, index: &Index) -> Result<()> {
        if !self.cfg.req.files_changed {
            return Ok(());
        }
        self.filelist
            .write_all(&Manifest::filelist_line(&change, index))
            .ctx(&self.filelist_path)?;
        self.filelist_count += 1;
        Ok(())
    }

    fn count(&self, bytes: u64) {
        if let Some(c) = &self.cfg.req.counters {
            c.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Stream `r` as `role` entries under the 64 KiB chunk rule. The last
    /// chunk's header records the file's content hash ([`crate::content`]):
    /// `content` when given (a delta: the hash of the new file), else the
    /// hash of the bytes streamed (a snapshot).
    fn chunks(
        &mut self,
        e: &WalkEntry,
        role: Role,
        r: &mut impl Read,
        mut sig: Option<&mut SigBuilder>,
        content: Option<ContentHash>,
    ) -> Result<u64> {
        let mut hasher = content.is_none().then(content::Hasher::for_writing);
        let mut n = 0u64;
        let mut total = 0u64;
        let mut key = Some(entry_key(role as u8, Some(&e.meta)));
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(CHUNK, 0);
        let res = (|| -> Result<()> {
            loop {
                let got = crate::stream::read_full(r, &mut buf).ctx(&e.path)?;
                if let Some(s) = sig.as_deref_mut() {
                    s.update(&buf[..got]);
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf[..got]);
                }
                total += got as u64;
                let last = got < CHUNK;
                let chunk = if n == 0 && last {
                    None
                } else {
                    n += 1;
                    Some(n)
                };
                let mut data = Vec::with_capacity(got + 2048);
                let mut header = e
                    .meta
                    .header(entry_name(role, &e.index, chunk, false, true), got as u64);
                if last {
                    let hash = match (&content, hasher.take()) {
                        (Some(c), _) => c.clone(),
                        (None, Some(h)) => h.finish(),
                        (None, None) => unreachable!("a hasher when no hash is given"),
                    };
                    header.extra.push(hash.record());
                }
                header.encode(&mut data);
                data.extend_from_slice(&buf[..got]);
                tar::pad_block(&mut data);
                self.send(Block {
                    index: e.index.clone(),
                    chunk: if last { None } else { chunk },
                    data,
                    key: key.take(),
                })?;
                self.count(got as u64);
                if last {
                    return Ok(());
                }
            }
        })();
        self.buf = buf;
        res.map(|_| total)
    }

    /// A complete copy (or metadata-only entry) of `e`; false if unreadable.
    fn snapshot(&mut self, e: &WalkEntry) -> Result<bool> {
        if e.meta.kind != Kind::File {
            let mut data = Vec::with_capacity(1024);
            e.meta
                .header(
                    entry_name(
                        Role::Snapshot,
                        &e.index,
                        None,
                        e.meta.kind == Kind::Dir,
                        true,
                    ),
                    0,
                )
                .encode(&mut data);
            self.send(Block {
                index: e.index.clone(),
                chunk: None,
                data,
                key: Some(entry_key(Role::Snapshot as u8, Some(&e.meta))),
            })?;
            self.sigtar.add_meta(&e.index, Some(&e.meta))?;
            return Ok(true);
        }
        let mut f = match File::open(&e.access) {
            Ok(f) => f,
            Err(err) => {
                self.unreadable(e, &err);
                return Ok(false);
            }
        };
        let mut sig = SigBuilder::new(block_len(e.meta.size, self.cfg.req.max_blocksize));
        let total = self.chunks(e, Role::Snapshot, &mut f, Some(&mut sig), None)?;
        self.sigtar
            .add_signature(&e.index, &e.meta, &sig.finish())?;
        self.stats.source_file_size += total;
        Ok(true)
    }

    fn unreadable(&mut self, e: &WalkEntry, err: &std::io::Error) {
        self.errors += 1;
        tracing::warn!(
            "Error accessing possibly locked file {}: {}",
            e.path.display(),
            err
        );
    }

    /// A librsync delta of `e` against its previous signature; falls back to
    /// a snapshot when the old signature cannot be used.
    fn diff(&mut self, e: &WalkEntry, old_sig: Vec<u8>) -> Result<bool> {
        let Ok(sig) = fast_rsync::Signature::deserialize(old_sig) else {
            return self.snapshot(e);
        };
        let mut f = match File::open(&e.access) {
            Ok(f) => f,
            Err(err) => {
                self.unreadable(e, &err);
                return Ok(false);
            }
        };
        let len = f.metadata().ctx(&e.path)?.len();
        let mut newsig = SigBuilder::new(block_len(len, self.cfg.req.max_blocksize));
        self.delta_tmp.set_len(0).ctx(&e.path)?;
        self.delta_tmp.seek(SeekFrom::Start(0)).ctx(&e.path)?;
        let mut content = content::Hasher::for_writing();
        let total = {
            let mut w = BufWriter::with_capacity(1 << 20, &mut self.delta_tmp);
            let r = write_delta(&sig, &mut f, &mut w, Some(&mut newsig), Some(&mut content))
                .ctx(&e.path)?;
            w.flush().ctx(&e.path)?;
            r
        };
        let Some(total) = total else {
            return self.snapshot(e);
        };
        let content = content.finish();
        let dlen = self.delta_tmp.stream_position().ctx(&e.path)?;
        self.delta_tmp.seek(SeekFrom::Start(0)).ctx(&e.path)?;
        let mut tmp = self.delta_tmp.try_clone().ctx(&e.path)?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, (&mut tmp).take(dlen));
        self.chunks(e, Role::Diff, &mut r, None, Some(content))?;
        self.sigtar
            .add_signature(&e.index, &e.meta, &newsig.finish())?;
        self.stats.source_file_size += total;
        self.stats.delta_entries += 1;
        self.stats.raw_delta_size += dlen;
        Ok(true)
    }

    fn deleted(&mut self, old: &SigEntry) -> Result<()> {
        let h = tar::Header {
            name: entry_name(Role::Deleted, &old.index, None, false, false),
            typeflag: tar::REGTYPE,
            ..Default::default()
        };
        let mut data = Vec::with_capacity(512);
        h.encode(&mut data);
        self.send(Block {
            index: old.index.clone(),
            chunk: None,
            data,
            key: Some(entry_key(Role::Deleted as u8, None)),
        })?;
        self.sigtar.add_meta(&old.index, None)?;
        self.stats.deleted_files += 1;
        if old.meta.as_ref().is_some_and(|m| m.kind == Kind::File) {
            self.note(Change::Deleted, &old.index)?;
        }
        Ok(())
    }

    /// Back up `e` given its previous state (None: new path).
    fn entry(&mut self, e: &WalkEntry, old: Option<SigEntry>, incremental: bool) -> Result<()> {
        let is_file = e.meta.kind == Kind::File;
        match old {
            None => {
                if self.snapshot(e)? {
                    if is_file {
                        self.stats.new_files += 1;
                        self.stats.new_file_size += e.meta.size;
                        self.note(Change::New, &e.index)?;
                    } else if incremental {
                        self.stats.new_files += 1;
                    }
                }
            }
            Some(o) => {
                let om = o.meta.as_ref().expect("present entries carry metadata");
                let changed = e.meta.differs(om)
                    || (is_file && size_mismatch(e.meta.size, o.signature.as_deref()));
                if !changed {
                    if is_file {
                        self.stats.source_file_size += e.meta.size;
                        // Done without reading: progress counts it too.
                        self.count(e.meta.size);
                    }
                    return Ok(());
                }
                let ok = match (is_file && om.kind == Kind::File, o.signature) {
                    (true, Some(sig)) => self.diff(e, sig)?,
                    _ => self.snapshot(e)?,
                };
                if ok {
                    self.stats.changed_files += 1;
                    if is_file {
                        self.stats.changed_file_size += e.meta.size;
                        self.note(Change::Changed, &e.index)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Write a librsync delta of `new` against `old` to `out`, diffing the new
/// data in windows so memory stays constant (each window's commands are
/// spliced in without magic and END; an unmatched tail is carried into the
/// next window, so an edge costs no block). Feeds `newsig` and `content`
/// with the same bytes; a large window's content hash runs on a thread
/// beside its signature and diff, the one part of an incremental that
/// reads whole files. Returns the bytes read, or None if `fast_rsync`
/// refuses the old signature.
pub(crate) fn write_delta(
    old: &fast_rsync::Signature,
    new: &mut impl Read,
    out: &mut impl Write,
    mut newsig: Option<&mut SigBuilder>,
    mut content: Option<&mut content::Hasher>,
) -> std::io::Result<Option<u64>> {
    /// Windows at least this big hash their content on a second thread.
    const HASH_BESIDE: usize = 1 << 20;
    let index = old.index();
    let Some(header) = crate::signature::Header::of(old.serialized()) else {
        return Ok(None);
    };
    let bs = header.block_len as usize;
    out.write_all(&crate::delta::DELTA_MAGIC.to_be_bytes())?;
    let mut window = vec![0u8; DIFF_WINDOW.max(2 * bs)];
    let mut d = Vec::with_capacity(DIFF_WINDOW / 8);
    let mut total = 0u64;
    // Bytes carried over from the last window: its unmatched tail, where a
    // match could start that only the next window's bytes complete.
    let mut carried = 0usize;
    loop {
        let n = crate::stream::read_full(new, &mut window[carried..])?;
        let base = total - carried as u64;
        total += n as u64;
        let len = carried + n;
        if len == 0 {
            break;
        }
        let last = len < window.len();
        d.clear();
        let fresh = &window[carried..len];
        let (diffed, hashed) = std::thread::scope(|s| {
            let mut hashed = true;
            let hashing = match content.as_deref_mut() {
                Some(h) if n >= HASH_BESIDE => {
                    match std::thread::Builder::new().spawn_scoped(s, move || h.update(fresh)) {
                        Ok(j) => Some(j),
                        Err(e) => {
                            // No thread to be had: hashed below, after the diff.
                            tracing::debug!("hashing inline: {e}");
                            hashed = false;
                            None
                        }
                    }
                }
                Some(h) => {
                    h.update(fresh);
                    None
                }
                None => None,
            };
            if let Some(sig) = newsig.as_deref_mut() {
                sig.update(fresh);
            }
            let r = crate::delta::diff_window(
                &index,
                old.serialized(),
                newsig.as_deref(),
                base,
                &window[..len],
                &mut d,
            );
            if let Some(h) = hashing {
                h.join().expect("hashing does not panic");
            }
            (r, hashed)
        });
        if !hashed {
            if let Some(h) = content.as_deref_mut() {
                h.update(fresh);
            }
        }
        if diffed.is_none() {
            return Ok(None);
        }
        carried = 0;
        match crate::delta::trailing_literal(&d) {
            Some((at, lit)) if !last => {
                // Keep the last block's worth of that literal for the next
                // window, so a window edge costs no unmatched block.
                let lit = lit as usize;
                carried = lit.min(bs.saturating_sub(1));
                out.write_all(&d[..at])?;
                crate::delta::literal_command((lit - carried) as u64, out)?;
                out.write_all(&window[len - lit..len - carried])?;
                window.copy_within(len - carried..len, 0);
            }
            _ => out.write_all(&d)?,
        }
        if last {
            break;
        }
    }
    out.write_all(&[0])?;
    Ok(Some(total))
}

/// A whole delta in memory (tests, small files).
pub fn windowed_delta(old_sig: &[u8], new: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let sig = fast_rsync::Signature::deserialize(old_sig.to_vec())
        .map_err(|_| std::io::Error::other("bad signature"))?;
    let mut out = Vec::new();
    // The new file's signature, in the basis' block length, lets blocks
    // that stayed in place skip the search (as in a backup).
    let bs = crate::signature::Header::of(old_sig).map_or(512, |h| h.block_len);
    let mut newsig = SigBuilder::new(bs.max(1));
    write_delta(&sig, new, &mut out, Some(&mut newsig), None)?
        .ok_or_else(|| std::io::Error::other("unusable signature"))?;
    Ok(out)
}

/// dupr's addition to duplicity's change test: a regular file whose size no
/// longer fits its old signature's block count has changed, even when its
/// mtime was restored.
fn size_mismatch(size: u64, sig: Option<&[u8]>) -> bool {
    let Some((sig, h)) = sig.and_then(|s| Some((s, crate::signature::Header::of(s)?))) else {
        return false;
    };
    let (bl, strong) = (h.block_len as u64, h.strong_len as u64);
    if bl == 0 || !(sig.len() as u64 - 12).is_multiple_of(4 + strong) {
        return false;
    }
    let blocks = (sig.len() as u64 - 12) / (4 + strong);
    let fits = if blocks == 0 {
        size == 0
    } else {
        size > (blocks - 1) * bl && size <= blocks * bl
    };
    !fits
}

/// An interrupted set to continue: its name and the volumes it stored.
pub(crate) struct Resume {
    pub set: ParsedName,
    /// Volumes 1..=k, as the partial manifest records them.
    pub volumes: Vec<(u32, VolumeInfo)>,
    /// Their stored bytes.
    pub stored: u64,
    /// Whether the interrupted run left a dupr journal to check the source
    /// against (see [`ResumePoint::checked`]).
    pub checked: bool,
}

/// The cache file journalling a set's entries while it is written.
pub(crate) fn journal_name(set: &ParsedName, prefixes: &Prefixes) -> String {
    let man = naming::name(
        &ParsedName {
            kind: FileType::Manifest,
            encrypted: false,
            gzipped: false,
            partial: false,
            ..*set
        },
        prefixes,
    );
    format!(".dupr-journal.{man}")
}

/// Run a backup of `cfg.req.source` to `backend`: a full set, or an incremental
/// on top of the given signature state; or the rest of an interrupted one.
pub(crate) fn run_backup(
    cfg: &BackupConfig,
    backend: &Arc<dyn Backend>,
    cache: &Cache,
    walker: Walker<'_>,
    plan: Plan,
    resume: Option<Resume>,
) -> Result<Stats> {
    let mut started = None;
    let incremental = matches!(plan, Plan::Incremental { .. });
    let mut r = write_set(cfg, backend, cache, walker, plan, resume, &mut started);
    if let Ok(stats) = &mut r {
        let unchanged = stats.new_files + stats.changed_files + stats.deleted_files == 0;
        if cfg.req.skip_if_no_change && incremental && unchanged && !cfg.req.dry_run {
            tracing::warn!("Skipped the incremental: nothing has changed");
            if let Some(set) = started.take() {
                discard_set(backend.as_ref(), cache, &set, &cfg.prefixes);
            }
            stats.skipped = true;
            stats.volumes = 0;
            stats.dest_size = 0;
            stats.stored_total = 0;
        }
    }
    if let Err(e) = &r {
        if let Some(set) = started {
            if e.is_transient() || matches!(e, Error::Interrupted(_) | Error::LockLost) {
                // The storage gave up for now: the stored volumes stay (with
                // no manifest, so the set never looks complete) and the next
                // run resumes after them.
                tracing::warn!(
                    "Kept the volumes stored so far; the next run resumes the backup after them"
                );
            } else {
                // A failed run leaves nothing behind: no volumes of a set
                // that will never get its manifest, no half-written cache
                // files.
                discard_set(backend.as_ref(), cache, &set, &cfg.prefixes);
            }
        }
    }
    r
}

/// Delete every remote and cached file of `set` (best effort).
pub(crate) fn discard_set(
    backend: &dyn Backend,
    cache: &Cache,
    set: &ParsedName,
    prefixes: &Prefixes,
) {
    let journal = cache.path(&journal_name(set, prefixes));
    let _ = std::fs::remove_file(&journal);
    let _ = std::fs::remove_file(journal.with_extension("new"));
    let same = |n: &str| {
        naming::parse(n, prefixes)
            .is_some_and(|p| p.set == set.set && p.start == set.start && p.end == set.end)
    };
    if let Ok(names) = backend.list() {
        for n in names.iter().filter(|n| same(n)) {
            let _ = backend.delete(n);
        }
    }
    if let Ok(names) = cache.list() {
        for n in names.iter().filter(|n| same(n)) {
            let _ = std::fs::remove_file(cache.path(n));
        }
    }
}

fn write_set(
    cfg: &BackupConfig,
    backend: &Arc<dyn Backend>,
    cache: &Cache,
    walker: Walker<'_>,
    plan: Plan,
    resume: Option<Resume>,
    started: &mut Option<ParsedName>,
) -> Result<Stats> {
    std::fs::symlink_metadata(&cfg.req.source)
        .map_err(|_| Error::SourceMissing(cfg.req.source.clone()))?;
    let (set_type, start, mut old, check) = match plan {
        Plan::Full => (SetType::Full, None, None, None),
        Plan::Incremental { start, old, check } => (SetType::Inc, Some(start), Some(old), check),
    };
    let t = set_time(cfg, &backend.list()?, start, resume.as_ref());
    let incremental = old.is_some();
    let mut stats = Stats {
        start_time: t,
        ..Default::default()
    };
    let set = ParsedName {
        set: set_type,
        kind: FileType::Manifest,
        start,
        end: t,
        encrypted: false,
        gzipped: false,
        partial: false,
    };
    if cfg.req.dry_run {
        if let Some(c) = check {
            c.wait()?;
        }
        count_source(walker, &mut stats);
        return Ok(stats);
    }

    *started = Some(set);
    let staging = backend
        .staging_dir()
        .unwrap_or_else(|| cache.dir().to_path_buf());
    let files = SetFiles::new(cfg, cache, &staging, set);
    // Incremental sets are small and go out often: their bytes matter more
    // than their CPU (unless a level was given, which applies to all).
    let (vol_codec, side_codec) = match cfg.incremental_level {
        Some(level) if incremental => (
            cfg.codec.with_level(level),
            cfg.codec.with_level(crate::crypt::INCREMENTAL_SIDE_LEVEL),
        ),
        _ => (cfg.codec.clone(), cfg.codec.clone()),
    };
    let mut sigtar = SigtarWriter::create(
        &files.sig_local_part,
        (!matches!(cfg.codec, Codec::Gzip(_)))
            .then_some((files.remote_sig_tmp.as_path(), side_codec.clone())),
    )?;
    let mut manifest = Manifest {
        hostname: cfg.hostname.clone(),
        localdir: canonical_localdir(&cfg.req.source_arg),
        ..Default::default()
    };
    let (resumed_vols, resume_point) = start_manifest(&manifest, &files, resume)?;
    let filelist_path = &files.filelist_path;
    let filelist = BufWriter::new(File::create(filelist_path).ctx(filelist_path)?);
    let delta_tmp = tempfile::tempfile_in(cache.dir()).ctx(cache.dir())?;

    let (tx, rx) = crossbeam_channel::bounded::<Block>(16);
    let mut filelist_count = 0;
    let result = std::thread::scope(|s| -> Result<Written> {
        let volumes = VolumeWriter::new(
            backend,
            cfg.concurrency,
            staging.clone(),
            vol_codec,
            set,
            cfg.prefixes.clone(),
            cfg.volsize,
        );
        let writer = s.spawn(|| {
            if let Some(c) = check {
                c.wait()?;
            }
            write_volumes(volumes, rx, &files, resume_point)
        });
        let mut em = Emitter {
            tx,
            sigtar: &mut sigtar,
            filelist,
            filelist_path: filelist_path.clone(),
            filelist_count: 0,
            stats: &mut stats,
            cfg,
            buf: Vec::new(),
            delta_tmp,
            errors: 0,
        };
        let produced = em.produce(walker, old.as_mut(), incremental);
        filelist_count = em.filelist_count;
        let errors = em.errors;
        drop(em);
        stats.errors = errors;
        let written = writer.join().expect("volume writer panicked");
        // The writer's own error explains a producer that found it gone.
        let w = written?;
        produced?;
        Ok(w)
    });
    let (nvols, vol_bytes, vols) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(filelist_path);
            let _ = std::fs::remove_file(&files.blocks_path);
            return Err(e);
        }
    };
    stats.volumes = nvols;
    stats.dest_size += vol_bytes;
    stats.stored_total += vol_bytes;
    for (n, v) in resumed_vols.into_iter().chain(vols) {
        manifest.volumes.insert(n, v);
    }

    finish_set(
        cfg,
        backend.as_ref(),
        &files,
        sigtar,
        manifest,
        filelist_count,
        &side_codec,
        &mut stats,
    )?;
    Ok(stats)
}

/// A dry run: count what the walk selects, write nothing.
fn count_source(mut walker: Walker<'_>, stats: &mut Stats) {
    for e in walker.by_ref() {
        stats.source_files += 1;
        stats.source_file_size += e.meta.size;
    }
    stats.errors = walker.errors;
    stats.end_time = time::now();
}

/// Write the partial manifest's head (with the volumes an interrupted run
/// stored, when resuming): the volume writer appends each volume to it as
/// it is stored. Returns those volumes and where the writer picks up.
fn start_manifest(
    manifest: &Manifest,
    files: &SetFiles,
    resume: Option<Resume>,
) -> Result<(Vec<Stored>, Option<ResumePoint>)> {
    let mut head = manifest.header_bytes();
    let mut resumed = (Vec::new(), None);
    if let Some(r) = resume {
        for (n, v) in &r.volumes {
            head.extend_from_slice(&Manifest::volume_bytes(*n, v));
        }
        if let Some((n, v)) = r.volumes.last() {
            tracing::warn!(
                "Resuming the interrupted backup after volume {n} ({} volume(s) already stored)",
                r.volumes.len()
            );
            resumed.1 = Some(ResumePoint {
                count: *n,
                stored: r.stored,
                until: (v.end.clone(), v.end_block),
                journal: files.journal.clone(),
                checked: r.checked,
            });
        }
        resumed.0 = r.volumes;
    }
    std::fs::write(&files.man_part, &head).ctx(&files.man_part)?;
    Ok(resumed)
}

/// The volume writer's thread: cut the producer's blocks into volumes,
/// store them, and record each stored volume in the partial manifest.
fn write_volumes(
    volumes: VolumeWriter,
    // Owned here, so a writer that stops drops the receiver and the
    // producer's next send fails instead of blocking forever.
    rx: crossbeam_channel::Receiver<Block>,
    files: &SetFiles,
    resume_point: Option<ResumePoint>,
) -> Result<Written> {
    let man_part = &files.man_part;
    let vw = volumes.with_blocks(files.blocks_path.clone())?;
    let mut vw = match resume_point {
        Some(p) => vw
            .with_journal(files.journal.with_extension("new"))?
            .resume(p)?,
        None => vw.with_journal(files.journal.clone())?,
    };
    let mut vols = Vec::new();
    let mut record = |n: u32, v: VolumeInfo| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(man_part)
            .ctx(man_part)?;
        f.write_all(&Manifest::volume_bytes(n, &v)).ctx(man_part)?;
        vols.push((n, v));
        Ok(())
    };
    for b in rx.iter() {
        if let Err(e) = vw.add(b, &mut record) {
            vw.abort();
            return Err(e);
        }
    }
    let (n, bytes) = vw.finish(&mut record)?;
    Ok((n, bytes, vols))
}

/// Where one set's files go: names on the target, paths in the cache
/// (partial while the set is being written) and staged uploads.
struct SetFiles {
    sig_local_part: PathBuf,
    sig_local: PathBuf,
    sig_remote_name: String,
    remote_sig_tmp: PathBuf,
    man_part: PathBuf,
    man_local: PathBuf,
    man_remote_name: String,
    man_tmp: PathBuf,
    /// The Filelist, spooled here until the manifest is written.
    filelist_path: PathBuf,
    /// The block index being written, and its name on the target.
    blocks_path: PathBuf,
    blocks_remote_name: String,
    blocks_tmp: PathBuf,
    jsonstat_remote_name: String,
    jsonstat_tmp: PathBuf,
    jsonstat_local: PathBuf,
    journal: PathBuf,
    /// Whether the target's files are encrypted.
    encrypted: bool,
}

impl SetFiles {
    fn new(
        cfg: &BackupConfig,
        cache: &Cache,
        staging: &std::path::Path,
        set: ParsedName,
    ) -> SetFiles {
        let (enc, gz) = cfg.codec.flags();
        let name_of = |kind: FileType, encrypted: bool, gzipped: bool, partial: bool| {
            naming::name(
                &ParsedName {
                    kind,
                    encrypted,
                    gzipped,
                    partial,
                    ..set
                },
                &cfg.prefixes,
            )
        };
        let sig_remote_name = name_of(FileType::Signature, enc, gz, false);
        let man_remote_name = name_of(FileType::Manifest, enc, false, false);
        let blocks_remote_name = name_of(FileType::Blocks, enc, gz, false);
        let jsonstat_remote_name = name_of(FileType::JsonStat, enc, gz, false);
        SetFiles {
            sig_local_part: cache.path(&name_of(FileType::Signature, false, true, true)),
            sig_local: cache.path(&name_of(FileType::Signature, false, true, false)),
            remote_sig_tmp: staging.join(crate::temp_name(&sig_remote_name)),
            sig_remote_name,
            man_part: cache.path(&name_of(FileType::Manifest, false, false, true)),
            man_local: cache.path(&name_of(FileType::Manifest, false, false, false)),
            man_tmp: staging.join(crate::temp_name(&man_remote_name)),
            man_remote_name,
            filelist_path: cache.path(&format!(".dupr-filelist.{}", std::process::id())),
            blocks_path: cache.path(&crate::temp_name("blocks")),
            blocks_tmp: staging.join(crate::temp_name(&blocks_remote_name)),
            blocks_remote_name,
            jsonstat_tmp: staging.join(crate::temp_name(&jsonstat_remote_name)),
            jsonstat_remote_name,
            jsonstat_local: cache.path(&name_of(FileType::JsonStat, false, true, false)),
            journal: cache.path(&journal_name(&set, &cfg.prefixes)),
            encrypted: enc,
        }
    }
}

/// The set's time: now, but after every set the target has and after the
/// incremental's start (set times are whole seconds and never reused); an
/// interrupted set keeps its own. Waits until that time has come: a set
/// dated in the future would be invisible to "now" restores.
fn set_time(
    cfg: &BackupConfig,
    remote: &[String],
    start: Option<Timestamp>,
    resume: Option<&Resume>,
) -> Timestamp {
    let mut t = time::now();
    for n in remote {
        if let Some(p) = naming::parse(n, &cfg.prefixes) {
            if p.end >= t {
                t = p.end + 1;
            }
        }
    }
    if let Some(start) = start {
        if start >= t {
            t = start + 1;
        }
    }
    if let Some(r) = resume {
        t = r.set.end;
    }
    while time::now() < t && !time::is_overridden() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    t
}

/// After the volumes: the signature file, then the manifest (which marks
/// the set complete), then the statistics and the block index, which a set
/// may lack.
#[allow(clippy::too_many_arguments)]
fn finish_set(
    cfg: &BackupConfig,
    backend: &dyn Backend,
    files: &SetFiles,
    sigtar: SigtarWriter,
    mut manifest: Manifest,
    filelist_count: u64,
    side_codec: &Codec,
    stats: &mut Stats,
) -> Result<()> {
    let f = files;
    // Signatures, then the manifest: the manifest marks the set complete.
    let (local_w, remote_w, sig_hash) = sigtar.finish()?;
    manifest.sigtar_hash = Some(sig_hash);
    stats.stored_total += remote_w.as_ref().map_or(local_w.size, |w| w.size);
    if remote_w.is_none() {
        std::fs::copy(&f.sig_local_part, &f.remote_sig_tmp).ctx(&f.remote_sig_tmp)?;
    }
    backend.put(&f.remote_sig_tmp, &f.sig_remote_name)?;
    std::fs::rename(&f.sig_local_part, &f.sig_local).ctx(&f.sig_local)?;

    // The manifest is streamed together from its head and the Filelist
    // spooled on disk: a million files must not mean a million lines in memory.
    let mut head = manifest.header_bytes();
    for (n, v) in &manifest.volumes {
        head.extend_from_slice(&Manifest::volume_bytes(*n, v));
    }
    head.extend_from_slice(format!("Filelist {filelist_count}\n").as_bytes());
    let man_tmp = &f.man_tmp;
    let spool = |out: &mut dyn Write, to: &std::path::Path| -> Result<()> {
        out.write_all(&head).ctx(to)?;
        let mut fl = File::open(&f.filelist_path).ctx(&f.filelist_path)?;
        std::io::copy(&mut fl, out).ctx(to)?;
        Ok(())
    };
    {
        let codec = if f.encrypted {
            side_codec.clone()
        } else {
            Codec::Plain
        };
        let mut e = crate::crypt::Encoder::create(man_tmp, &codec).ctx(man_tmp)?;
        spool(&mut e, man_tmp)?;
        e.finish().ctx(man_tmp)?;
    }
    stats.stored_total += std::fs::metadata(man_tmp).map(|m| m.len()).unwrap_or(0);
    backend.put(man_tmp, &f.man_remote_name)?;
    {
        let mut w = BufWriter::new(File::create(&f.man_part).ctx(&f.man_part)?);
        spool(&mut w, &f.man_part)?;
        w.flush().ctx(&f.man_part)?;
    }
    let _ = std::fs::remove_file(&f.filelist_path);
    std::fs::rename(&f.man_part, &f.man_local).ctx(&f.man_local)?;
    stats.end_time = time::now();
    if cfg.req.jsonstat {
        // After the manifest: the statistics never make a set look complete.
        let json = serde_json::to_string(&stats.jsonstat(0.0))
            .map_err(std::io::Error::from)
            .ctx(&f.jsonstat_tmp)?;
        let stat_tmp = &f.jsonstat_tmp;
        let mut e = crate::crypt::Encoder::create(stat_tmp, &cfg.codec).ctx(stat_tmp)?;
        e.write_all(json.as_bytes()).ctx(stat_tmp)?;
        e.finish().ctx(stat_tmp)?;
        backend.put(stat_tmp, &f.jsonstat_remote_name)?;
        let local = &f.jsonstat_local;
        let mut e = crate::crypt::Encoder::create(local, &Codec::GZIP).ctx(local)?;
        e.write_all(json.as_bytes()).ctx(local)?;
        e.finish().ctx(local)?;
    }
    // The block index last: a set without one (a run stopped here, or
    // volumes from rPGP's writer) is read whole, as duplicity's are.
    let index_len = std::fs::metadata(&f.blocks_path).map_or(0, |m| m.len());
    if index_len > crate::blocks::MAGIC_LEN {
        let (remote, tmp) = (&f.blocks_remote_name, &f.blocks_tmp);
        let copy = |to: &std::path::Path, codec: &Codec| -> Result<u64> {
            let mut e = crate::crypt::Encoder::create(to, codec).ctx(to)?;
            let mut from = File::open(&f.blocks_path).ctx(&f.blocks_path)?;
            std::io::copy(&mut from, &mut e).ctx(to)?;
            Ok(e.finish().ctx(to)?.size)
        };
        stats.stored_total += copy(tmp, &cfg.codec)?;
        backend.put(tmp, remote)?;
    }
    let _ = std::fs::remove_file(&f.blocks_path);
    let _ = std::fs::remove_file(&f.journal);
    let _ = std::fs::remove_file(f.journal.with_extension("new"));
    stats.end_time = time::now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_mismatch_uses_block_count() {
        let sig = crate::signature::signature_of(&[1u8; 1500], 512);
        assert!(!size_mismatch(1500, Some(&sig)));
        assert!(!size_mismatch(1025, Some(&sig)));
        assert!(size_mismatch(1024, Some(&sig)));
        assert!(size_mismatch(1537, Some(&sig)));
        let empty = crate::signature::signature_of(b"", 512);
        assert!(!size_mismatch(0, Some(&empty)));
        assert!(size_mismatch(1, Some(&empty)));
        assert!(!size_mismatch(99, None));
    }

    /// Delta `new` against `base` as a backup does (new signature in
    /// `new_bs`, content hash beside) and check all three outputs; returns
    /// the delta's length.
    fn delta_roundtrip(base: &[u8], new: &[u8], new_bs: u32) -> usize {
        let bs = crate::signature::block_len(base.len() as u64, None);
        let sig = crate::signature::signature_of(base, bs);
        let sig = fast_rsync::Signature::deserialize(sig).unwrap();
        let mut delta = Vec::new();
        let mut newsig = SigBuilder::new(new_bs);
        let mut content = content::Hasher::for_writing();
        let total = write_delta(
            &sig,
            &mut &new[..],
            &mut delta,
            Some(&mut newsig),
            Some(&mut content),
        )
        .unwrap()
        .unwrap();
        assert_eq!(total, new.len() as u64);
        assert!(newsig.finish() == crate::signature::signature_of(new, new_bs));
        assert_eq!(content.finish().hex, blake3::hash(new).to_hex().as_str());
        let mut back = Vec::new();
        crate::delta::apply(base, &delta[..], &mut back).unwrap();
        assert!(back == new, "the delta rebuilds the new file");
        delta.len()
    }

    /// Blocks that stay in place are copied without a search; every other
    /// kind of edit still finds its matches, across window edges too.
    #[test]
    fn deltas_of_in_place_and_shifting_edits() {
        let base = crate::delta::tests::noise(20_000_000, 0x9E37_79B9_7F4A_7C15);
        let bs = crate::signature::block_len(base.len() as u64, None);
        let b = bs as usize;
        // Overwrites inside and across blocks, and on a window edge.
        let mut new = base.clone();
        new[3 * b + 10..3 * b + 20].fill(1);
        new[9 * b - 5..9 * b + 5].fill(2);
        new[(8 << 20) - 3..(8 << 20) + 3].fill(3);
        assert!(delta_roundtrip(&base, &new, bs) < 5 * b + 512);
        // An edit that keeps a block's rolling checksum (+1, -2, +1 on
        // three bytes): only the strong hash tells the block changed.
        let mut new = base.clone();
        let at = (0..)
            .map(|i| 5 * b + 100 + i)
            .find(|&i| new[i] < 250 && new[i + 1] > 5 && new[i + 2] < 250)
            .unwrap();
        new[at] += 1;
        new[at + 1] -= 2;
        new[at + 2] += 1;
        assert_ne!(new, base);
        assert!(delta_roundtrip(&base, &new, bs) < 2 * b + 512);
        // An insertion shifts every later block off its place.
        let mut new = base.clone();
        new.splice(1_000_003..1_000_003, *b"seven!!");
        assert!(delta_roundtrip(&base, &new, bs) < 2 * b + 512);
        // A deletion, then an append.
        let mut new = base.clone();
        new.drain(5_000_000..5_100_000);
        new.extend_from_slice(&crate::delta::tests::noise(70_000, 5));
        assert!(delta_roundtrip(&base, &new, bs) < 70_000 + 3 * b + 512);
        // Truncated mid-block: the basis' short last block is never "in place".
        let new = base[..15_000_123].to_vec();
        assert!(delta_roundtrip(&base, &new, bs) < b + 512);
        // The new file's block length differs: the search alone.
        let mut new = base.clone();
        new[100..110].fill(4);
        assert!(delta_roundtrip(&base, &new, bs + 512) < 2 * b + 512);
        // Nothing in common, and empty.
        delta_roundtrip(&base, &crate::delta::tests::noise(3_000_000, 9), bs);
        delta_roundtrip(&base, b"", bs);
        delta_roundtrip(b"", &base[..5000], 512);
    }

    proptest::proptest! {
        /// Any edit of a small file: the delta rebuilds it exactly.
        #[test]
        fn deltas_rebuild_any_edit(
            seed in 1u64..u64::MAX,
            len in 0usize..20_000,
            edits in proptest::collection::vec((0usize..20_000, 0usize..700, 0u8..3), 0..5),
        ) {
            let base = crate::delta::tests::noise(len, seed);
            let new = crate::delta::tests::edited(&base, &edits, seed);
            let bs = crate::signature::block_len(base.len() as u64, None);
            delta_roundtrip(&base, &new, bs);
        }
    }

    /// Issue 18: a window edge inside a long file costs no unmatched block.
    /// Before the carry-over, each 8 MiB edge sent about one block (here
    /// 4,608 bytes) as literal; 20 MB has two edges.
    #[test]
    fn window_edges_cost_nothing() {
        let base = crate::delta::tests::noise(20_000_000, 0x9E37_79B9_7F4A_7C15);
        let bs = crate::signature::block_len(base.len() as u64, None);
        assert_eq!(bs, 4608);
        let sig = crate::signature::signature_of(&base, bs);
        let sig = fast_rsync::Signature::deserialize(sig).unwrap();
        let mut new = base.clone();
        new[10_000_000..10_004_096].fill(7);
        let appended = vec![b'x'; 1 << 20];
        new.extend_from_slice(&appended);
        let mut delta = Vec::new();
        let mut newsig = SigBuilder::new(bs);
        let total = write_delta(&sig, &mut &new[..], &mut delta, Some(&mut newsig), None)
            .unwrap()
            .unwrap();
        assert_eq!(total, new.len() as u64);
        assert_eq!(newsig.finish(), crate::signature::signature_of(&new, bs));
        let mut back = Vec::new();
        crate::delta::apply(&base[..], &delta[..], &mut back).unwrap();
        assert!(back == new);
        // Literal: the append, the two blocks the overwrite touches, the
        // old short last block; plus command bytes.
        let bound = appended.len() + 3 * bs as usize + 512;
        assert!(delta.len() <= bound, "{} > {bound}", delta.len());
    }
}
