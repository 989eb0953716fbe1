//! Volumes: tar blocks are packed into stored files of about `--volsize`,
//! closed on whole entries and ended with NULs to a 10240-byte record, as
//! duplicity 3.x does. Each finished volume is handed to the backend and
//! recorded (index range + SHA-1) for the manifest.
//!
//! Uploads run on `--concurrency` worker threads while the next volume is
//! built; volumes are recorded in order, each once it and all before it are
//! stored, so the partial manifest only ever lists stored volumes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use crate::crypt::{Codec, Encoder};
use crate::error::{IoContext, Result};
use crate::index::Index;
use crate::manifest::VolumeInfo;
use crate::naming::{self, FileType, ParsedName, Prefixes};
use crate::tar::RECORD;

/// One whole tar entry (PAX + header + data + padding) and its position.
pub struct Block {
    pub index: Index,
    /// Manifest block number: the chunk number of a multivol chunk that is
    /// not the file's last, else None.
    pub chunk: Option<u64>,
    pub data: Vec<u8>,
    /// On an entry's first block: a digest of what was archived (type,
    /// metadata, size), journalled so an interrupted backup can tell on
    /// resume whether the source still matches the volumes already stored.
    pub key: Option<u64>,
}

/// Where an interrupted set left off, for [`VolumeWriter::resume`].
pub struct ResumePoint {
    /// Volumes already stored (1..=count).
    pub count: u32,
    pub stored: u64,
    /// The last block of volume `count`.
    pub until: (Index, Option<u64>),
    /// The journal the interrupted run wrote (and that this run's
    /// journal replaces once past the resume point).
    pub journal: PathBuf,
    /// Whether that journal exists to check the source against. A set
    /// interrupted without one (written by duplicity) is continued as
    /// duplicity continues it: trusting that the source did not change.
    pub checked: bool,
}

/// The journal of (entry, key) records, flushed before each volume is
/// recorded in the partial manifest, so it always covers the stored volumes.
struct Journal {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl Journal {
    fn record(&mut self, index: &Index, key: u64) -> Result<()> {
        let b = index.as_bytes();
        let mut rec = Vec::with_capacity(12 + b.len());
        rec.extend_from_slice(&key.to_le_bytes());
        rec.extend_from_slice(&(b.len() as u32).to_le_bytes());
        rec.extend_from_slice(b);
        self.out.write_all(&rec).ctx(&self.path)
    }
}

fn read_record(r: &mut impl std::io::Read) -> Option<(u64, Vec<u8>)> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).ok()?;
    let key = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).ok()?;
    Some((key, b))
}

/// Replaying the part of the stream the interrupted run already stored.
struct Skip {
    until: (Index, Option<u64>),
    /// The interrupted run's journal; None when there is none to check.
    old: Option<std::io::BufReader<std::fs::File>>,
    journal: PathBuf,
}

impl Skip {
    fn check_nothing_missing(&mut self) -> Result<()> {
        let Some(old) = self.old.as_mut() else {
            return Ok(());
        };
        if let Some((_, ix)) = read_record(old) {
            let ix = Index::from_bytes(ix);
            if ix <= self.until.0 {
                return Err(crate::Error::ResumeInvalid(format!(
                    "{ix} is stored but no longer in the source"
                )));
            }
        }
        Ok(())
    }
}

/// Whether block (index, chunk) was stored by a run that stopped after `until`.
fn at_or_before(index: &Index, chunk: Option<u64>, until: &(Index, Option<u64>)) -> bool {
    match index.cmp(&until.0) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => match (until.1, chunk) {
            (None, _) => true,
            (Some(c), Some(b)) => b <= c,
            (Some(_), None) => false,
        },
    }
}

/// Worker threads that upload finished volumes.
struct Uploader {
    jobs: Option<crossbeam_channel::Sender<(u32, PathBuf, String)>>,
    /// (volume, result); None for an upload cancelled after another failed.
    done: crossbeam_channel::Receiver<(u32, Option<Result<()>>)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
}

impl Uploader {
    fn new(backend: Arc<dyn Backend>, n: usize) -> Uploader {
        let (jobs, rx) = crossbeam_channel::bounded::<(u32, PathBuf, String)>(1);
        let (done_tx, done) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let workers = (0..n.max(1))
            .map(|_| {
                let (rx, done_tx, b, cancel) =
                    (rx.clone(), done_tx.clone(), backend.clone(), cancel.clone());
                std::thread::spawn(move || {
                    for (num, tmp, name) in rx.iter() {
                        let r = if cancel.load(Ordering::Relaxed) {
                            let _ = std::fs::remove_file(&tmp);
                            None
                        } else {
                            let r = b.put(&tmp, &name);
                            if r.is_err() {
                                cancel.store(true, Ordering::Relaxed);
                                let _ = std::fs::remove_file(&tmp);
                            }
                            Some(r)
                        };
                        if done_tx.send((num, r)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Uploader {
            jobs: Some(jobs),
            done,
            workers,
            cancel,
        }
    }

    /// Stop: no further uploads start; wait for the running ones.
    fn stop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // A writer dropped on an error path: no upload may outlive it.
        self.stop();
    }
}

pub struct VolumeWriter {
    uploader: Uploader,
    /// Closed volumes whose upload has not been confirmed in order.
    waiting: BTreeMap<u32, VolumeInfo>,
    uploaded: BTreeSet<u32>,
    /// The next volume to record (0: none closed yet).
    next_record: u32,
    staging: PathBuf,
    codec: Codec,
    set: ParsedName,
    prefixes: Prefixes,
    target: u64,
    num: u32,
    /// Bytes stored in the finished volumes.
    pub stored: u64,
    cur: Option<Open>,
    /// Stored/plain ratio of the last finished volume (1.0 before one):
    /// the codec's own count lags by what its stages hold.
    ratio: f64,
    journal: Option<Journal>,
    skip: Option<Skip>,
    /// The set's block index being written (see `blocks`).
    blocks: Option<(std::io::BufWriter<std::fs::File>, PathBuf)>,
    /// Most blocks in one volume so far (the index is kept only if worth it).
    max_blocks: usize,
}

struct Open {
    enc: Encoder,
    tmp: PathBuf,
    plain_len: u64,
    first: (Index, Option<u64>),
    last: (Index, Option<u64>),
    /// The first entry starting in each block (for seeking to a path).
    firsts: Vec<crate::blocks::FirstEntry>,
}

impl VolumeWriter {
    /// `set` names the backup set (its kind is replaced per volume).
    pub fn new(
        backend: &Arc<dyn Backend>,
        concurrency: usize,
        staging: PathBuf,
        codec: Codec,
        set: ParsedName,
        prefixes: Prefixes,
        volsize: u64,
    ) -> Self {
        // duplicity 3.x: aim 50 KiB under volsize and stop once less than one
        // 64 KiB chunk of room is left.
        let mut target = volsize.saturating_sub(50 * 1024).max(1);
        if matches!(codec, Codec::Gpg(_)) {
            target = target.saturating_sub(16 * 1024).max(1);
        }
        VolumeWriter {
            uploader: Uploader::new(backend.clone(), concurrency),
            waiting: BTreeMap::new(),
            uploaded: BTreeSet::new(),
            next_record: 0,
            staging,
            codec,
            set,
            prefixes,
            target,
            num: 0,
            stored: 0,
            cur: None,
            ratio: 1.0,
            journal: None,
            skip: None,
            blocks: None,
            max_blocks: 0,
        }
    }

    /// Record where each volume's blocks are in the file at `path`.
    pub fn with_blocks(mut self, path: PathBuf) -> Result<Self> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).ctx(&path)?);
        crate::blocks::write_magic(&mut f).ctx(&path)?;
        self.blocks = Some((f, path));
        Ok(self)
    }

    /// Journal entries to `path` (see [`ResumePoint`]).
    pub fn with_journal(mut self, path: PathBuf) -> Result<Self> {
        let f = std::fs::File::create(&path).ctx(&path)?;
        self.journal = Some(Journal {
            out: std::io::BufWriter::new(f),
            path,
        });
        Ok(self)
    }

    /// Continue an interrupted set: blocks up to `p.until` are already
    /// stored and are dropped, after checking each entry against the old
    /// journal; a mismatch fails with [`crate::Error::ResumeInvalid`].
    pub fn resume(mut self, p: ResumePoint) -> Result<Self> {
        let old = match p.checked {
            true => Some(std::io::BufReader::new(
                std::fs::File::open(&p.journal).ctx(&p.journal)?,
            )),
            false => None,
        };
        self.num = p.count;
        self.stored = p.stored;
        self.skip = Some(Skip {
            until: p.until,
            old,
            journal: p.journal,
        });
        Ok(self)
    }

    /// During a resume: drop `b` if it was stored already; true if dropped.
    fn replayed(&mut self, b: &Block) -> Result<bool> {
        let Some(skip) = self.skip.as_mut() else {
            return Ok(false);
        };
        if !at_or_before(&b.index, b.chunk, &skip.until) {
            // Past the resume point. An old record still at or before it is
            // an entry the stored volumes hold that the source lost.
            skip.check_nothing_missing()?;
            // The new journal now holds every old record, so it replaces
            // the old one.
            if let Some(j) = self.journal.as_mut() {
                j.out.flush().ctx(&j.path)?;
                std::fs::rename(&j.path, &skip.journal).ctx(&skip.journal)?;
                j.path = skip.journal.clone();
            }
            self.skip = None;
            return Ok(false);
        }
        if let Some(key) = b.key {
            let same = match skip.old.as_mut() {
                Some(old) => {
                    read_record(old).is_some_and(|(k, ix)| k == key && ix == b.index.as_bytes())
                }
                None => true,
            };
            if !same {
                return Err(crate::Error::ResumeInvalid(format!(
                    "{} changed since the interrupted backup stored it",
                    b.index
                )));
            }
            if let Some(j) = self.journal.as_mut() {
                j.record(&b.index, key)?;
            }
        }
        Ok(true)
    }

    fn volume_name(&self, num: u32) -> String {
        let (encrypted, gzipped) = self.codec.flags();
        let p = ParsedName {
            kind: FileType::Volume(num),
            encrypted,
            gzipped,
            partial: false,
            ..self.set
        };
        naming::name(&p, &self.prefixes)
    }

    /// Add one block; `on_volume` is called for each finished volume.
    pub fn add(
        &mut self,
        b: Block,
        on_volume: &mut dyn FnMut(u32, VolumeInfo) -> Result<()>,
    ) -> Result<()> {
        if self.replayed(&b)? {
            return Ok(());
        }
        let boundary = match &self.cur {
            None => true,
            Some(cur) => {
                let est = ((cur.plain_len as f64 * self.ratio) as u64).max(cur.enc.stored_bytes());
                self.target.saturating_sub(est) < 65536
            }
        };
        if boundary {
            if self.cur.is_some() {
                self.close(on_volume)?;
            }
            // Between volumes (checked after the close, which may wait for
            // an upload slot), a SIGINT/SIGTERM stops the run: every upload
            // finishes and is recorded before this block is journaled, so
            // the next run resumes after them.
            if crate::interrupt::pending().is_some() {
                self.collect(true, on_volume)?;
                return crate::interrupt::check();
            }
        }
        if let (Some(key), Some(j)) = (b.key, self.journal.as_mut()) {
            j.record(&b.index, key)?;
        }
        if self.cur.is_none() {
            self.open(b.index.clone(), b.chunk)?;
        }
        let pgp = matches!(self.codec, Codec::Gpg(_));
        let cur = self.cur.as_mut().expect("opened above");
        let block = crate::blocks::block_of(pgp, cur.plain_len);
        if cur.firsts.last().is_none_or(|f| f.block < block) {
            cur.firsts.push(crate::blocks::FirstEntry {
                block,
                tar_offset: cur.plain_len,
                index: b.index.clone(),
            });
        }
        cur.enc.write_all(&b.data).ctx(&cur.tmp)?;
        cur.plain_len += b.data.len() as u64;
        cur.last = (b.index, b.chunk);
        Ok(())
    }

    fn open(&mut self, index: Index, chunk: Option<u64>) -> Result<()> {
        self.num += 1;
        let tmp = self
            .staging
            .join(crate::temp_name(&self.volume_name(self.num)));
        let enc = Encoder::create_volume(&tmp, &self.codec).ctx(&tmp)?;
        self.cur = Some(Open {
            enc,
            tmp,
            plain_len: 0,
            first: (index.clone(), chunk),
            last: (index, chunk),
            firsts: Vec::new(),
        });
        Ok(())
    }

    fn close(&mut self, on_volume: &mut dyn FnMut(u32, VolumeInfo) -> Result<()>) -> Result<()> {
        let Some(mut cur) = self.cur.take() else {
            return Ok(());
        };
        // At least two zero blocks (GNU tar warns about a lone one, which
        // duplicity 3.x sometimes writes), then NULs to a 10240 multiple.
        let after = cur.plain_len + 2 * crate::tar::BLOCK as u64;
        let pad = 2 * crate::tar::BLOCK
            + ((RECORD as u64 - after % RECORD as u64) % RECORD as u64) as usize;
        cur.enc.write_all(&vec![0u8; pad]).ctx(&cur.tmp)?;
        let w = cur.enc.finish().ctx(&cur.tmp)?;
        self.stored += w.size;
        if cur.plain_len > 1 << 20 {
            self.ratio = (w.size as f64 / cur.plain_len as f64).clamp(0.01, 1.1);
        }
        if let (Some((f, path)), Some(layout)) = (self.blocks.as_mut(), w.layout) {
            self.max_blocks = self.max_blocks.max(layout.blocks.len());
            let v = crate::blocks::VolumeIndex {
                num: self.num,
                sha1: w.sha1_hex.clone(),
                layout,
                firsts: std::mem::take(&mut cur.firsts),
            };
            crate::blocks::write_volume(f, &v).ctx(&*path)?;
        }
        let name = self.volume_name(self.num);
        if self.next_record == 0 {
            self.next_record = self.num;
        }
        self.waiting.insert(
            self.num,
            VolumeInfo {
                start: cur.first.0,
                start_block: cur.first.1,
                end: cur.last.0,
                end_block: cur.last.1,
                hash: Some(("SHA1".into(), w.sha1_hex)),
            },
        );
        let jobs = self.uploader.jobs.as_ref().expect("uploader running");
        if jobs.send((self.num, cur.tmp.clone(), name)).is_err() {
            let _ = std::fs::remove_file(&cur.tmp);
        }
        self.collect(false, on_volume)
    }

    /// Record the volumes whose uploads finished, in order; with `all`, wait
    /// for every upload.
    fn collect(
        &mut self,
        all: bool,
        on_volume: &mut dyn FnMut(u32, VolumeInfo) -> Result<()>,
    ) -> Result<()> {
        loop {
            let got = if all && !self.waiting.is_empty() {
                match self.uploader.done.recv() {
                    Ok(v) => Some(v),
                    Err(_) => {
                        return Err(crate::Error::Usage("volume upload workers stopped".into()))
                    }
                }
            } else {
                self.uploader.done.try_recv().ok()
            };
            let Some((num, r)) = got else {
                return Ok(());
            };
            // A cancelled upload: the failure that caused it is on its way.
            let Some(r) = r else {
                continue;
            };
            r?;
            self.uploaded.insert(num);
            while self.uploaded.remove(&self.next_record) {
                if let Some(j) = self.journal.as_mut() {
                    j.out.flush().ctx(&j.path)?;
                }
                let info = self
                    .waiting
                    .remove(&self.next_record)
                    .expect("an uploaded volume was closed");
                on_volume(self.next_record, info)?;
                self.next_record += 1;
            }
        }
    }

    /// Close the last volume; returns the number of volumes and their bytes.
    pub fn finish(
        mut self,
        on_volume: &mut dyn FnMut(u32, VolumeInfo) -> Result<()>,
    ) -> Result<(u32, u64)> {
        if let Some(mut skip) = self.skip.take() {
            // The whole stream was stored before the interruption; nothing
            // follows the last stored volume, unless the source lost some.
            skip.check_nothing_missing()?;
            return Ok((self.num, self.stored));
        }
        if self.cur.is_none() && self.num == 0 {
            // Nothing changed: one volume holding only the end marker, as
            // duplicity 3.x writes.
            self.open(Index::root(), None)?;
        }
        self.close(on_volume)?;
        let r = self.collect(true, on_volume);
        self.uploader.stop();
        r?;
        if let Some((mut f, path)) = self.blocks.take() {
            f.flush().ctx(&path)?;
            if self.max_blocks < crate::blocks::MIN_INDEXED_BLOCKS {
                // Every volume is small: keep only the magic, so no index
                // is written for the set.
                f.get_ref().set_len(crate::blocks::MAGIC_LEN).ctx(&path)?;
            }
        }
        Ok((self.num, self.stored))
    }

    /// Remove a half-written volume after a failure; uploads under way end.
    pub fn abort(mut self) {
        if let Some(cur) = self.cur.take() {
            drop(cur.enc);
            let _ = std::fs::remove_file(&cur.tmp);
        }
        self.uploader.stop();
        // Volumes queued but never uploaded.
        while let Ok((_, r)) = self.uploader.done.try_recv() {
            drop(r);
        }
    }
}
