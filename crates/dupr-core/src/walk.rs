//! Walk the source tree in index order (depth first, each directory's
//! children sorted by raw name bytes), asking a selection function about each
//! path. Memory is bounded by the depth times the widest directory, never by
//! the tree size.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::entry::{Kind, Meta, Names};
use crate::index::Index;

/// What selection says about one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The path is backed up.
    Include,
    /// The path is left out (a directory with everything below it).
    Exclude,
    /// A directory kept only if something below it is included (implied parent).
    Scan,
}

/// One path of the source tree, as the walk yields it.
pub struct WalkEntry {
    /// The path relative to the source root.
    pub index: Index,
    /// The full path (for messages and selection; may exceed PATH_MAX).
    pub path: PathBuf,
    /// A path the kernel accepts for this entry: `path` itself, or one
    /// relative to an open ancestor directory (`/proc/self/fd/N/...`) when
    /// `path` is too long.
    pub access: PathBuf,
    /// Its metadata, from lstat.
    pub meta: Meta,
}

struct Frame {
    index: Index,
    path: PathBuf,
    /// How to reach this directory (see [`WalkEntry::access`]).
    access: PathBuf,
    /// Held open while `access` goes through it.
    _fd: Option<std::fs::File>,
    /// The names to visit, sorted; with the directory entry when it was
    /// read here (its `lstat` is then relative to the open directory, not
    /// a lookup of every component of the path again).
    names: Vec<(OsString, Option<std::fs::DirEntry>)>,
    pos: usize,
}

/// Frames deeper than this keep names only: each entry kept holds its
/// directory open, and a deep tree must not run out of descriptors.
const ENTRIES_DEPTH: usize = 64;

/// Longest access path used as is; deeper directories are opened and
/// reached through their descriptor, so no path handed to the kernel
/// comes near PATH_MAX (4096) and deep trees are walked whole.
const ACCESS_MAX: usize = 2048;

/// A directory's own access path and, when that grew long, the open
/// descriptor it now goes through.
pub(crate) fn dir_access(access: &Path) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    if access.as_os_str().len() <= ACCESS_MAX {
        return Ok((access.to_path_buf(), None));
    }
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(access)?;
    let via = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    Ok((via, Some(f)))
}

/// The selection function: asked for each path's verdict with its index,
/// full path and metadata.
pub type Selector<'a> = Box<dyn FnMut(&Index, &Path, &Meta) -> Select + 'a>;

/// The names to walk in a directory when selection restricts them
/// (`--files-from`); None means "read the directory".
pub type Lister<'a> = Box<dyn Fn(&Path) -> Option<Vec<Vec<u8>>> + 'a>;

/// An iterator over the source tree's selected paths in index order, the
/// root first. Unreadable paths are warned about, counted and skipped.
pub struct Walker<'a> {
    stack: Vec<Frame>,
    /// Directories emitted only once a descendant is (implied parents).
    pending: Vec<WalkEntry>,
    first: Option<WalkEntry>,
    /// Entries ready to hand out before walking further.
    replay: std::collections::VecDeque<WalkEntry>,
    select: Selector<'a>,
    listing: Option<Lister<'a>>,
    /// `--copy-links`: store what symlinks point to.
    follow_links: bool,
    names: Names,
    /// Entries that could not be read and were left out, counted.
    pub errors: u64,
}

impl<'a> Walker<'a> {
    /// A walk of `root`, asking `select` about each path below it; fails when
    /// `root` cannot be read.
    pub fn new(root: &Path, select: Selector<'a>) -> std::io::Result<Self> {
        let mut names = Names::default();
        let md = std::fs::symlink_metadata(root)?;
        let link = read_link(root, &md);
        let meta = Meta::from_fs(&md, link, &mut names);
        let mut w = Walker {
            stack: Vec::new(),
            pending: Vec::new(),
            first: None,
            replay: Default::default(),
            select,
            listing: None,
            follow_links: false,
            names,
            errors: 0,
        };
        let e = WalkEntry {
            index: Index::root(),
            path: root.to_path_buf(),
            access: root.to_path_buf(),
            meta,
        };
        if e.meta.kind == Kind::Dir {
            std::fs::read_dir(root)?;
        }
        w.first = Some(e);
        Ok(w)
    }

    /// Follow symbolic links (duplicity's `--copy-links`); a link back to a
    /// directory being walked stays a link, so loops end.
    pub fn with_follow_links(mut self, on: bool) -> Self {
        self.follow_links = on;
        self
    }

    /// Walk only the names `listing` gives for each directory.
    pub fn with_listing(mut self, listing: Lister<'a>) -> Self {
        self.listing = Some(listing);
        self
    }

    /// Open a directory for walking; false (with a warning) if it cannot
    /// be listed, in which case duplicity leaves it out entirely.
    fn push_dir(&mut self, e: &WalkEntry) -> bool {
        let (access, fd) = match dir_access(&e.access) {
            Ok(a) => a,
            Err(err) => {
                self.warn(&e.path, &err);
                return false;
            }
        };
        if let Some(names) = self.listing.as_ref().and_then(|l| l(&e.path)) {
            let mut names: Vec<(OsString, Option<std::fs::DirEntry>)> = names
                .into_iter()
                .map(|n| (OsString::from_vec(n), None))
                .collect();
            names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            self.stack.push(Frame {
                index: e.index.clone(),
                path: e.path.clone(),
                access,
                _fd: fd,
                names,
                pos: 0,
            });
            return true;
        }
        match std::fs::read_dir(&access) {
            Ok(rd) => {
                let keep = self.stack.len() < ENTRIES_DEPTH;
                let mut names = Vec::new();
                for de in rd {
                    match de {
                        Ok(de) => names.push((de.file_name(), keep.then_some(de))),
                        Err(err) => {
                            self.warn(&e.path, &err);
                            break;
                        }
                    }
                }
                names.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                self.stack.push(Frame {
                    index: e.index.clone(),
                    path: e.path.clone(),
                    access,
                    _fd: fd,
                    names,
                    pos: 0,
                });
                true
            }
            Err(err) => {
                self.warn(&e.path, &err);
                false
            }
        }
    }

    /// Whether a directory with this identity is open on the walk's stack.
    fn on_stack(&self, md: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.stack.iter().any(|f| {
            std::fs::metadata(&f.access).is_ok_and(|m| m.dev() == md.dev() && m.ino() == md.ino())
        })
    }

    fn warn(&mut self, path: &Path, err: &std::io::Error) {
        self.errors += 1;
        tracing::warn!(
            "Error accessing possibly locked file {}: {}",
            path.display(),
            err
        );
    }
}

fn read_link(path: &Path, md: &std::fs::Metadata) -> Vec<u8> {
    if md.file_type().is_symlink() {
        std::fs::read_link(path)
            .map(|p| p.into_os_string().into_vec())
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

impl Iterator for Walker<'_> {
    type Item = WalkEntry;

    fn next(&mut self) -> Option<WalkEntry> {
        if let Some(root) = self.first.take() {
            // The root is always included; selection cannot drop it.
            if root.meta.kind == Kind::Dir {
                self.push_dir(&root);
            }
            return Some(root);
        }
        if let Some(e) = self.replay.pop_front() {
            return Some(e);
        }
        loop {
            let frame = self.stack.last_mut()?;
            if frame.pos >= frame.names.len() {
                let done = self.stack.pop().expect("non-empty");
                if self.pending.last().is_some_and(|p| p.index == done.index) {
                    self.pending.pop();
                }
                continue;
            }
            let (name, entry) = std::mem::take(&mut frame.names[frame.pos]);
            frame.pos += 1;
            let path = frame.path.join(&name);
            let access = frame.access.join(&name);
            let index = frame.index.join(name.as_bytes());
            let lstat = match entry {
                Some(de) => de.metadata(),
                None => std::fs::symlink_metadata(&access),
            };
            let md = match lstat {
                Ok(md) if self.follow_links && md.file_type().is_symlink() => {
                    match std::fs::metadata(&access) {
                        Ok(t) if t.is_dir() && self.on_stack(&t) => md,
                        Ok(t) => t,
                        // Dangling: keep the link itself.
                        Err(_) => md,
                    }
                }
                Ok(md) => md,
                // A listed name (--files-from) that does not exist.
                Err(err)
                    if self.listing.is_some() && err.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(err) => {
                    self.warn(&path, &err);
                    continue;
                }
            };
            let link = read_link(&access, &md);
            let meta = Meta::from_fs(&md, link, &mut self.names);
            let sel = (self.select)(&index, &path, &meta);
            if sel == Select::Exclude || (sel == Select::Scan && meta.kind != Kind::Dir) {
                continue;
            }
            if meta.kind == Kind::Socket {
                tracing::info!("Skipping socket {}", path.display());
                continue;
            }
            let e = WalkEntry {
                index,
                path,
                access,
                meta,
            };
            if e.meta.kind == Kind::Dir {
                if !self.push_dir(&e) {
                    continue;
                }
                if sel == Select::Scan {
                    self.pending.push(e);
                    continue;
                }
            }
            if !self.pending.is_empty() {
                // Emit implied parents first, in order; they come before `e`.
                self.replay.extend(self.pending.drain(..));
                self.replay.push_back(e);
                return self.replay.pop_front();
            }
            return Some(e);
        }
    }
}

/// Total bytes of regular files under `root` (stat only), for progress ETA.
pub fn total_size(root: &Path) -> u64 {
    match Walker::new(root, Box::new(|_, _, _| Select::Include)) {
        Ok(w) => w.map(|e| e.meta.size).sum(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    /// A tree deeper than ENTRIES_DEPTH, with a file and a symlink at each
    /// level: every entry's metadata is its lstat (above the depth through
    /// the open directory, below it by path), and the walk does not hold a
    /// descriptor per level.
    #[test]
    fn deep_tree_entries_are_their_lstat_with_bounded_descriptors() {
        const LEVELS: usize = 200;
        let t = tempfile::tempdir().unwrap();
        let mut d = t.path().to_path_buf();
        for i in 0..LEVELS {
            d = d.join("d");
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("f"), vec![b'x'; i]).unwrap();
            std::os::unix::fs::symlink(format!("f{i}"), d.join("l")).unwrap();
        }
        let before = open_fds();
        let mut most = before;
        let w = Walker::new(
            t.path(),
            Box::new(|_: &Index, _: &Path, _: &Meta| Select::Include),
        )
        .unwrap();
        let mut n = 0;
        for e in w {
            most = most.max(open_fds());
            let md = std::fs::symlink_metadata(&e.path).unwrap();
            assert_eq!(
                e.meta.size,
                if md.is_file() { md.len() } else { 0 },
                "{:?}",
                e.path
            );
            assert_eq!(e.meta.mtime, md.mtime(), "{:?}", e.path);
            match e.path.file_name().and_then(|n| n.to_str()) {
                Some("l") => {
                    assert_eq!(e.meta.kind, Kind::Symlink);
                    let want = std::fs::read_link(&e.path).unwrap();
                    assert_eq!(e.meta.link, want.as_os_str().as_bytes());
                }
                Some("f") => assert_eq!(e.meta.kind, Kind::File),
                _ => assert_eq!(e.meta.kind, Kind::Dir),
            }
            n += 1;
        }
        assert_eq!(n, 1 + 3 * LEVELS);
        // Other tests of this binary open files at the same time: a margin.
        assert!(
            most - before <= ENTRIES_DEPTH + 40,
            "{} descriptors open during a {LEVELS}-level walk",
            most - before
        );
    }
}
