//! Browsing a target: every backup time as a read-only tree, built from the
//! signature files alone (listing reads no volume), and one file's bytes
//! rebuilt on demand by the restore path (so every integrity check of a
//! restore applies) into a bounded on-disk cache. `dupr mount` serves this
//! through FUSE; nothing here knows about FUSE.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use crate::chain::Collection;
use crate::entry::{Kind, Meta};
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::ops::Target;
use crate::restore::{self, RestoreOptions, Sink};
use crate::sigtar::SigMerge;
use crate::time::{self, Timestamp};

/// One backup time: the state `restore -t` rebuilds for it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The backup time: a full's time or an incremental's end.
    pub time: Timestamp,
    /// True when a full set was made at this time.
    pub full: bool,
    /// `2026-12-05T12:27:09Z`: the directory name a mount shows.
    pub name: String,
}

/// One path of a snapshot's tree.
#[derive(Clone, Debug)]
pub struct Node {
    /// Last path component (empty for the root).
    pub name: Vec<u8>,
    /// The parent directory's node id (0, itself, for the root).
    pub parent: u32,
    /// In name order (signature files are in index order).
    pub children: Vec<u32>,
    /// The file's type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub perms: u32,
    /// The owner's user id.
    pub uid: u32,
    /// The owner's group id.
    pub gid: u32,
    /// Modification time, in seconds since the epoch.
    pub mtime: i64,
    /// Regular files: the size dupr's signature files record, or for
    /// duplicity's an upper bound from the signature's block count.
    pub size: u64,
    /// False when `size` is only the bound a duplicity signature gives.
    pub size_exact: bool,
    /// The symlink's target; empty for other kinds.
    pub link: Vec<u8>,
    /// Major device number (character and block devices).
    pub devmajor: u32,
    /// Minor device number (character and block devices).
    pub devminor: u32,
}

/// A snapshot's paths; node 0 is the backup root.
#[derive(Debug)]
pub struct Tree {
    /// The nodes, indexed by node id.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Node `id`, if there is one.
    pub fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    /// The child of directory `dir` called `name`.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Option<u32> {
        let kids = &self.node(dir)?.children;
        kids.binary_search_by(|&k| self.nodes[k as usize].name.as_slice().cmp(name))
            .ok()
            .map(|i| kids[i])
    }

    /// The archive path of a node.
    pub fn index(&self, mut id: u32) -> Index {
        let mut parts = Vec::new();
        while id != 0 {
            let n = &self.nodes[id as usize];
            parts.push(n.name.as_slice());
            id = n.parent;
        }
        parts.reverse();
        if parts.is_empty() {
            return Index::root();
        }
        Index::from_bytes(parts.join(&b'/'))
    }

    /// Build from signature entries in index order (the newest state of
    /// each present path). Parents missing from the stream (a damaged or
    /// hostile file) are made up as plain directories rather than refused.
    fn build<R: Read>(m: &mut SigMerge<R>) -> Result<Tree> {
        let mut nodes = vec![Node::dir(Vec::new(), 0)];
        // Node ids of the directories on the path to the last entry.
        let mut stack: Vec<u32> = vec![0];
        while let Some(e) = m.next_present()? {
            let Some(meta) = e.meta else { continue };
            let comps: Vec<&[u8]> = e.index.components().collect();
            let Some((last, dirs)) = comps.split_last() else {
                let root = Node::from_meta(Vec::new(), 0, &meta, None);
                nodes[0] = Node {
                    children: std::mem::take(&mut nodes[0].children),
                    ..root
                };
                continue;
            };
            // Keep the stack's prefix that matches this entry's parents.
            let mut keep = 1;
            while keep < stack.len()
                && keep <= dirs.len()
                && nodes[stack[keep] as usize].name == dirs[keep - 1]
            {
                keep += 1;
            }
            stack.truncate(keep);
            for d in &dirs[keep - 1..] {
                let parent = *stack.last().expect("root stays");
                let id = push(&mut nodes, Node::dir(d.to_vec(), parent));
                stack.push(id);
            }
            let parent = *stack.last().expect("root stays");
            let node = Node::from_meta(last.to_vec(), parent, &meta, e.signature.as_deref());
            let is_dir = node.kind == Kind::Dir;
            let id = push(&mut nodes, node);
            if is_dir {
                stack.push(id);
            }
        }
        m.drain()?;
        Ok(Tree { nodes })
    }
}

fn push(nodes: &mut Vec<Node>, n: Node) -> u32 {
    let id = nodes.len() as u32;
    let parent = n.parent as usize;
    nodes.push(n);
    nodes[parent].children.push(id);
    id
}

impl Node {
    fn dir(name: Vec<u8>, parent: u32) -> Node {
        Node {
            name,
            parent,
            children: Vec::new(),
            kind: Kind::Dir,
            perms: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            size_exact: true,
            link: Vec::new(),
            devmajor: 0,
            devminor: 0,
        }
    }

    fn from_meta(name: Vec<u8>, parent: u32, m: &Meta, sig: Option<&[u8]>) -> Node {
        let (size, size_exact) = match (m.kind, m.exact) {
            (Kind::File, Some(x)) => (x.size, true),
            (Kind::File, None) => sig.map_or((0, false), size_bound),
            _ => (0, true),
        };
        Node {
            name,
            parent,
            children: Vec::new(),
            kind: m.kind,
            perms: m.perms,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
            size,
            size_exact,
            link: m.link.clone(),
            devmajor: m.devmajor,
            devminor: m.devminor,
        }
    }
}

/// What a librsync signature says of its file's size: blocks × block
/// length, at most one block over (exact only for a header alone: empty).
fn size_bound(sig: &[u8]) -> (u64, bool) {
    let word = |i: usize| {
        sig.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(block), Some(strong)) = (word(4), word(8)) else {
        return (0, false);
    };
    let blocks = (sig.len() as u64).saturating_sub(12) / (4 + u64::from(strong));
    (blocks.saturating_mul(u64::from(block)), sig.len() == 12)
}

/// The name a snapshot directory gets: ISO 8601 in UTC.
pub fn snapshot_name(t: Timestamp) -> String {
    let f = time::to_filename(t);
    if f.len() != 16 {
        return f;
    }
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &f[0..4],
        &f[4..6],
        &f[6..8],
        &f[9..11],
        &f[11..13],
        &f[13..15]
    )
}

/// How many snapshot trees stay in memory at once.
const TREES_KEPT: usize = 2;

/// A target opened for browsing: its snapshots, their trees (built on
/// first use, a few kept), and the files rebuilt so far.
pub struct Browser {
    target: Target,
    collection: Collection,
    snapshots: Vec<Snapshot>,
    trees: Mutex<Vec<(usize, Arc<Tree>)>>,
    building: Mutex<()>,
    files: Arc<FileCache>,
}

/// Plain volume copies for the restore path, kept in the browser's cache.
struct PlainCopies(Arc<FileCache>);

impl crate::restore::PlainVolumes for PlainCopies {
    fn open(&self, name: &str, sha1: &str) -> Option<File> {
        self.0.lookup(&FileKey::Volume(name.into(), sha1.into()))
    }

    fn scratch(&self) -> Option<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".plain-")
            .tempfile_in(self.0.dir.path())
            .ok()
    }

    fn keep(&self, name: &str, sha1: &str, copy: tempfile::NamedTempFile) {
        if let Ok(p) = copy.into_temp_path().keep() {
            self.0.insert(FileKey::Volume(name.into(), sha1.into()), p);
        }
    }
}

impl Browser {
    /// Read the target's listing and bring the local cache of signature
    /// files and manifests up to date. `cache_dir` holds rebuilt files (at
    /// most about `cache_limit` bytes of them; a file bigger than that is
    /// still served) and is removed when the browser is dropped.
    pub fn open(target: Target, cache_dir: &Path, cache_limit: u64) -> Result<Browser> {
        let (names, collection) = target.collection()?;
        if collection.chains.is_empty() {
            return Err(Error::NoBackups(target.backend.display_url()));
        }
        target.sync(&names)?;
        // Listing reads the plain local cache: check the keys now on the
        // newest set's own (small) manifest, so a wrong passphrase or a
        // missing secret key fails the mount instead of every later read.
        if let Some(set) = collection.chains.last().and_then(|ch| ch.sets().last()) {
            if set.encrypted {
                crate::restore::load_remote_manifest(
                    target.backend.as_ref(),
                    set,
                    &target.settings.prefixes,
                    target.settings.crypto.as_ref(),
                )?;
            }
        }
        let mut snapshots: Vec<Snapshot> = collection
            .chains
            .iter()
            .flat_map(|ch| ch.sets())
            .map(|s| Snapshot {
                time: s.end,
                full: s.is_full(),
                name: snapshot_name(s.end),
            })
            .collect();
        snapshots.sort_by_key(|s| s.time);
        snapshots.dedup_by_key(|s| s.time);
        let dir = tempfile::Builder::new()
            .prefix("dupr-mount-")
            .tempdir_in(cache_dir)
            .ctx(cache_dir)?;
        Ok(Browser {
            target,
            collection,
            snapshots,
            trees: Mutex::new(Vec::new()),
            building: Mutex::new(()),
            files: Arc::new(FileCache::new(dir, cache_limit)),
        })
    }

    /// The backup times, oldest first; a snapshot's number is its position.
    pub fn snapshots(&self) -> &[Snapshot] {
        &self.snapshots
    }

    /// The target's URL for messages (secrets redacted).
    pub fn display_url(&self) -> String {
        self.target.backend.display_url()
    }

    fn cached_tree(&self, snap: usize) -> Option<Arc<Tree>> {
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        let i = trees.iter().position(|(s, _)| *s == snap)?;
        // Most recently used last.
        let hit = trees.remove(i);
        let t = hit.1.clone();
        trees.push(hit);
        Some(t)
    }

    /// The tree of snapshot `snap`, from the signature chain up to its time.
    pub fn tree(&self, snap: usize) -> Result<Arc<Tree>> {
        if let Some(t) = self.cached_tree(snap) {
            return Ok(t);
        }
        // One build at a time: trees of big backups are big.
        let _b = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = self.cached_tree(snap) {
            return Ok(t);
        }
        let s = self.snapshot(snap)?;
        let url = self.display_url();
        let sc = self
            .collection
            .sig_chain_at(s.time)
            .ok_or_else(|| Error::NoSignatures(url.clone()))?;
        let files = sc.files_at(s.time);
        // A missing signature file would show an older state under this
        // time's name: refuse instead.
        if files.last().map(|f| f.end) != Some(s.time) {
            return Err(Error::IncompleteSet {
                set: time::to_filename(s.time),
                missing: "its signature file is missing; its file list cannot be shown".into(),
            });
        }
        let t = &self.target;
        let readers = crate::status::sig_readers(
            t.backend.as_ref(),
            &t.cache,
            &files,
            &t.settings.prefixes,
            t.settings.crypto.as_ref(),
            true,
        )?;
        let tree = Arc::new(Tree::build(&mut SigMerge::new(readers)?)?);
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        if trees.len() >= TREES_KEPT {
            trees.remove(0);
        }
        trees.push((snap, tree.clone()));
        Ok(tree)
    }

    fn snapshot(&self, snap: usize) -> Result<&Snapshot> {
        self.snapshots
            .get(snap)
            .ok_or_else(|| Error::Usage(format!("no snapshot number {snap}")))
    }

    /// The size of a file once it has been rebuilt (exact even where the
    /// tree only has a bound).
    pub fn rebuilt_size(&self, snap: usize, node: u32) -> Option<u64> {
        self.files.size_of(&FileKey::File(snap, node))
    }

    /// Open regular file `node` of snapshot `snap`: rebuilt once (full,
    /// then deltas) through the restore path, checked, then read from the
    /// cache. Returns the open file and its size.
    pub fn open_file(&self, snap: usize, node: u32) -> Result<(File, u64)> {
        let tree = self.tree(snap)?;
        let n = tree
            .node(node)
            .ok_or_else(|| Error::Usage(format!("no node {node}")))?;
        if n.kind != Kind::File {
            return Err(Error::Usage(format!(
                "{} is not a regular file",
                tree.index(node)
            )));
        }
        let path = tree.index(node);
        self.files.get(FileKey::File(snap, node), |dir| {
            self.rebuild(snap, &path, dir)
        })
    }

    fn rebuild(&self, snap: usize, path: &Index, dir: &Path) -> Result<PathBuf> {
        let s = self.snapshot(snap)?;
        let url = self.display_url();
        let ch = self
            .collection
            .chain_at(s.time)
            .ok_or_else(|| Error::NoBackups(url.clone()))?;
        let sets = ch.sets_at(s.time);
        let t = &self.target;
        let opts = RestoreOptions {
            path: Some(path.clone()),
            force: true,
            // Archives without a block index: each volume is decoded once.
            plain: Some(Arc::new(PlainCopies(self.files.clone()))),
            ..RestoreOptions::new(
                dir.to_path_buf(),
                dir.to_path_buf(),
                t.settings.crypto.clone(),
            )
        };
        let mut sink = OneFile {
            want: path,
            dir,
            got: None,
            errors: 0,
        };
        restore::collate(
            t.backend.as_ref(),
            Some(&t.cache),
            &sets,
            &t.settings.prefixes,
            &opts,
            &mut sink,
        )?;
        let not_rebuilt = |reason: &str| Error::Damaged {
            name: format!("{} as of {}", path, s.name),
            reason: reason.into(),
        };
        if sink.errors > 0 {
            return Err(not_rebuilt("a delta of it did not apply (see above)"));
        }
        let got = sink
            .got
            .ok_or_else(|| not_rebuilt("the backup's volumes do not hold it"))?;
        let out = got
            .into_temp_path()
            .keep()
            .map_err(|e| Error::io(dir, e.error))?;
        Ok(out)
    }
}

/// A restore sink that keeps one regular file's checked data.
struct OneFile<'a> {
    want: &'a Index,
    dir: &'a Path,
    got: Option<tempfile::NamedTempFile>,
    errors: u64,
}

impl Sink for OneFile<'_> {
    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".rebuild-")
            .tempfile_in(self.dir)
            .ctx(self.dir)
    }

    fn place(
        &mut self,
        index: &Index,
        meta: &Meta,
        data: Option<tempfile::NamedTempFile>,
    ) -> Result<()> {
        if index == self.want && meta.kind == Kind::File {
            self.got = data;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    fn error(&mut self) {
        self.errors += 1;
    }
}

/// What the disk cache holds: rebuilt files (snapshot, node) and plain
/// copies of volumes (name and manifest hash), under one limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    File(usize, u32),
    Volume(String, String),
}

enum Slot {
    /// Another thread is rebuilding it: wait.
    Building,
    Ready {
        path: PathBuf,
        size: u64,
        used: u64,
    },
}

struct CacheState {
    slots: HashMap<FileKey, Slot>,
    bytes: u64,
    clock: u64,
}

/// Rebuilt files on disk, least recently used evicted past the limit. An
/// evicted file stays readable through descriptors already open on it.
struct FileCache {
    dir: tempfile::TempDir,
    limit: u64,
    state: Mutex<CacheState>,
    done: Condvar,
}

impl FileCache {
    fn new(dir: tempfile::TempDir, limit: u64) -> FileCache {
        FileCache {
            dir,
            limit,
            state: Mutex::new(CacheState {
                slots: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
            done: Condvar::new(),
        }
    }

    fn size_of(&self, key: &FileKey) -> Option<u64> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match st.slots.get(key) {
            Some(Slot::Ready { size, .. }) => Some(*size),
            _ => None,
        }
    }

    /// The cached file for `key`, if it is ready.
    fn lookup(&self, key: &FileKey) -> Option<File> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.clock += 1;
        let now = st.clock;
        match st.slots.get_mut(key) {
            Some(Slot::Ready { path, used, .. }) => {
                *used = now;
                File::open(&*path).ok()
            }
            _ => None,
        }
    }

    /// Add a file made outside [`Self::get`] (replacing any older copy).
    fn insert(&self, key: FileKey, path: PathBuf) {
        let Ok(size) = std::fs::metadata(&path).map(|m| m.len()) else {
            return;
        };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.clock += 1;
        let used = st.clock;
        if let Some(Slot::Ready {
            path: old, size: n, ..
        }) = st
            .slots
            .insert(key.clone(), Slot::Ready { path, size, used })
        {
            let _ = std::fs::remove_file(old);
            st.bytes -= n;
        }
        st.bytes += size;
        self.evict(&mut st, &key);
    }

    /// The cached file for `key`, rebuilt by `build` (into the cache
    /// directory) if it is not there; concurrent callers wait for one build.
    fn get(
        &self,
        key: FileKey,
        build: impl FnOnce(&Path) -> Result<PathBuf>,
    ) -> Result<(File, u64)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            st.clock += 1;
            let now = st.clock;
            match st.slots.get_mut(&key) {
                Some(Slot::Ready { path, size, used }) => {
                    *used = now;
                    let f = File::open(&*path).ctx(&*path)?;
                    return Ok((f, *size));
                }
                Some(Slot::Building) => {
                    st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                None => break,
            }
        }
        st.slots.insert(key.clone(), Slot::Building);
        drop(st);
        let built = build(self.dir.path()).and_then(|p| {
            let f = File::open(&p).ctx(&p)?;
            let size = f.metadata().ctx(&p)?.len();
            Ok((p, f, size))
        });
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = match built {
            Ok((path, f, size)) => {
                st.clock += 1;
                let used = st.clock;
                st.slots
                    .insert(key.clone(), Slot::Ready { path, size, used });
                st.bytes += size;
                self.evict(&mut st, &key);
                Ok((f, size))
            }
            Err(e) => {
                st.slots.remove(&key);
                Err(e)
            }
        };
        self.done.notify_all();
        r
    }

    fn evict(&self, st: &mut CacheState, keep: &FileKey) {
        while st.bytes > self.limit {
            let oldest = st
                .slots
                .iter()
                .filter(|(k, _)| *k != keep)
                .filter_map(|(k, s)| match s {
                    Slot::Ready { used, .. } => Some((*used, k.clone())),
                    Slot::Building => None,
                })
                .min_by_key(|(used, _)| *used);
            let Some((_, k)) = oldest else { break };
            if let Some(Slot::Ready { path, size, .. }) = st.slots.remove(&k) {
                let _ = std::fs::remove_file(&path);
                st.bytes -= size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_iso_utc() {
        assert_eq!(snapshot_name(0), "1970-01-01T00:00:00Z");
        assert_eq!(snapshot_name(1_796_473_629), "2026-12-05T12:27:09Z");
    }

    #[test]
    fn signature_sizes_bound_the_file() {
        // rs_sig header: magic, block length 2048, strong sum 8 bytes.
        let mut sig = vec![0x72, 0x73, 0x01, 0x36, 0, 0, 8, 0, 0, 0, 0, 8];
        assert_eq!(size_bound(&sig), (0, true));
        sig.extend([0u8; 12 * 3]);
        assert_eq!(size_bound(&sig), (3 * 2048, false));
        assert_eq!(size_bound(&sig[..5]), (0, false));
        // A hostile strong-sum length cannot divide by zero or overflow.
        let mut odd = vec![0u8; 12];
        odd[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        odd[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        odd.extend([0u8; 100]);
        assert!(!size_bound(&odd).1);
    }

    #[test]
    fn cache_evicts_least_recently_used_but_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileCache::new(tempfile::tempdir_in(dir.path()).unwrap(), 10);
        let seq = std::sync::atomic::AtomicUsize::new(0);
        let make = |n: usize| {
            let i = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            move |d: &Path| -> Result<PathBuf> {
                let p = d.join(format!("f{i}"));
                std::fs::write(&p, vec![b'x'; n]).unwrap();
                Ok(p)
            }
        };
        let k = |n: u32| FileKey::File(0, n);
        c.get(k(1), make(4)).unwrap();
        c.get(k(2), make(4)).unwrap();
        // Touch 1, so 2 is the oldest when 3 arrives.
        c.get(k(1), |_| panic!("cached")).unwrap();
        c.get(k(3), make(5)).unwrap();
        assert!(c.size_of(&k(1)).is_some());
        assert!(c.size_of(&k(2)).is_none());
        assert_eq!(c.size_of(&k(3)), Some(5));
        // Bigger than the whole cache: still served, everything else goes.
        let (mut f, size) = c.get(k(4), make(30)).unwrap();
        assert_eq!(size, 30);
        let mut s = Vec::new();
        f.read_to_end(&mut s).unwrap();
        assert_eq!(s.len(), 30);
        assert!(c.size_of(&k(1)).is_none() && c.size_of(&k(3)).is_none());
        // A failed build leaves nothing behind and can be tried again.
        let e = c.get(k(5), |_| Err(Error::Usage("boom".into())));
        assert!(e.is_err());
        c.get(k(5), make(1)).unwrap();
        // Copies made elsewhere share the limit; a newer one replaces.
        let v = FileKey::Volume("vol1".into(), "ab".into());
        let p = make(3)(c.dir.path()).unwrap();
        c.insert(v.clone(), p);
        assert_eq!(c.size_of(&v), Some(3));
        let p2 = c.dir.path().join("again");
        std::fs::write(&p2, b"xy").unwrap();
        c.insert(v.clone(), p2);
        assert_eq!(c.size_of(&v), Some(2));
        assert!(c.lookup(&v).is_some());
        assert!(c
            .lookup(&FileKey::Volume("vol1".into(), "cd".into()))
            .is_none());
    }
}
