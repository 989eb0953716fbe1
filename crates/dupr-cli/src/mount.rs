//! `dupr mount URL MOUNTPOINT`: a read-only FUSE view of every backup time.
//! The engine's `browse` module does the work (trees from signature files,
//! files rebuilt and checked through restore); this is the FUSE glue: inode
//! numbers, attributes, and the mount's life (foreground until SIGINT,
//! SIGTERM or `fusermount3 -u`; `--daemon` to go to the background).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dupr_core::browse::{Browser, Node, Tree};
use dupr_core::entry::Kind;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, Request,
};

/// Snapshot trees never change; attributes may be cached long.
const TTL: Duration = Duration::from_secs(3600);
/// Node ids take the low bits of an inode number, snapshot numbers + 1 the
/// high ones; inode 1 is the root and 2 is `latest`.
const NODE_BITS: u32 = 40;
const LATEST: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ino {
    Root,
    Latest,
    Node { snap: usize, node: u32 },
}

fn decode(ino: INodeNo) -> Option<Ino> {
    let v = ino.0;
    match (v >> NODE_BITS, v & ((1 << NODE_BITS) - 1)) {
        (0, 1) => Some(Ino::Root),
        (0, LATEST) => Some(Ino::Latest),
        (0, _) | (_, 0) => None,
        (s, n) => Some(Ino::Node {
            snap: (s - 1) as usize,
            node: u32::try_from(n - 1).ok()?,
        }),
    }
}

fn encode(snap: usize, node: u32) -> INodeNo {
    INodeNo(((snap as u64 + 1) << NODE_BITS) | (u64::from(node) + 1))
}

fn system_time(t: i64) -> SystemTime {
    if t >= 0 {
        UNIX_EPOCH + Duration::from_secs(t as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

pub struct ArchiveFs {
    browser: Arc<Browser>,
    /// Owner of the synthetic entries (root, snapshot directories).
    uid: u32,
    gid: u32,
    handles: Mutex<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
}

impl ArchiveFs {
    pub fn new(browser: Arc<Browser>) -> ArchiveFs {
        ArchiveFs {
            browser,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn synthetic(&self, ino: INodeNo, kind: FileType, mtime: i64, size: u64) -> FileAttr {
        let t = system_time(mtime);
        FileAttr {
            ino,
            size,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm: if kind == FileType::Symlink {
                0o777
            } else {
                0o555
            },
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn latest_target(&self) -> Option<&str> {
        self.browser.snapshots().last().map(|s| s.name.as_str())
    }

    fn root_attr(&self) -> FileAttr {
        let newest = self.browser.snapshots().last().map_or(0, |s| s.time);
        self.synthetic(INodeNo::ROOT, FileType::Directory, newest, 0)
    }

    fn latest_attr(&self) -> FileAttr {
        let newest = self.browser.snapshots().last().map_or(0, |s| s.time);
        let len = self.latest_target().map_or(0, str::len) as u64;
        self.synthetic(INodeNo(LATEST), FileType::Symlink, newest, len)
    }

    /// Snapshot directories are synthetic, so listing the root builds no
    /// tree.
    fn snapshot_attr(&self, snap: usize) -> Option<FileAttr> {
        let s = self.browser.snapshots().get(snap)?;
        Some(self.synthetic(encode(snap, 0), FileType::Directory, s.time, 0))
    }

    fn node_attr(&self, snap: usize, id: u32, n: &Node) -> FileAttr {
        let size = match n.kind {
            Kind::File if !n.size_exact => self.browser.rebuilt_size(snap, id).unwrap_or(n.size),
            Kind::File => n.size,
            Kind::Symlink => n.link.len() as u64,
            _ => 0,
        };
        let t = system_time(n.mtime);
        FileAttr {
            ino: encode(snap, id),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: file_type(n.kind),
            perm: (n.perms & 0o7777) as u16,
            nlink: if n.kind == Kind::Dir { 2 } else { 1 },
            uid: n.uid,
            gid: n.gid,
            rdev: libc::makedev(n.devmajor, n.devminor) as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Attributes of an inode, with the TTL to give them: none for a file
    /// whose size is only bounded until it is rebuilt.
    fn attr(&self, ino: INodeNo) -> Result<(FileAttr, Duration), Errno> {
        match decode(ino).ok_or(Errno::ENOENT)? {
            Ino::Root => Ok((self.root_attr(), TTL)),
            Ino::Latest => Ok((self.latest_attr(), TTL)),
            Ino::Node { snap, node: 0 } => {
                Ok((self.snapshot_attr(snap).ok_or(Errno::ENOENT)?, TTL))
            }
            Ino::Node { snap, node } => {
                let tree = self.tree(snap)?;
                let n = tree.node(node).ok_or(Errno::ENOENT)?;
                let a = self.node_attr(snap, node, n);
                let ttl = if n.kind == Kind::File && !n.size_exact {
                    Duration::ZERO
                } else {
                    TTL
                };
                Ok((a, ttl))
            }
        }
    }

    fn tree(&self, snap: usize) -> Result<Arc<Tree>, Errno> {
        self.browser.tree(snap).map_err(|e| {
            let name = self
                .browser
                .snapshots()
                .get(snap)
                .map_or("?", |s| s.name.as_str());
            tracing::error!("listing the backup of {name}: {e}");
            Errno::EIO
        })
    }

    fn snapshot_by_name(&self, name: &[u8]) -> Option<usize> {
        self.browser
            .snapshots()
            .iter()
            .position(|s| s.name.as_bytes() == name)
    }
}

impl Filesystem for ArchiveFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes();
        let r = match decode(parent) {
            Some(Ino::Root) if name == b"latest" && self.latest_target().is_some() => {
                Ok((self.latest_attr(), TTL))
            }
            Some(Ino::Root) => match self.snapshot_by_name(name) {
                Some(s) => Ok((self.snapshot_attr(s).expect("listed"), TTL)),
                None => Err(Errno::ENOENT),
            },
            Some(Ino::Node { snap, node }) => self.tree(snap).and_then(|tree| {
                let dir = tree.node(node).ok_or(Errno::ENOENT)?;
                if dir.kind != Kind::Dir {
                    return Err(Errno::ENOTDIR);
                }
                let id = tree.lookup(node, name).ok_or(Errno::ENOENT)?;
                self.attr(encode(snap, id))
            }),
            Some(Ino::Latest) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        };
        match r {
            Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Ok((a, ttl)) => reply.attr(&ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match decode(ino) {
            Some(Ino::Latest) => match self.latest_target() {
                Some(t) => reply.data(t.as_bytes()),
                None => reply.error(Errno::ENOENT),
            },
            Some(Ino::Node { snap, node }) if node > 0 => match self.tree(snap) {
                Ok(tree) => match tree.node(node) {
                    Some(n) if n.kind == Kind::Symlink => reply.data(&n.link),
                    Some(_) => reply.error(Errno::EINVAL),
                    None => reply.error(Errno::ENOENT),
                },
                Err(e) => reply.error(e),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some(Ino::Node { snap, node }) = decode(ino) else {
            return reply.error(Errno::EISDIR);
        };
        let tree = match self.tree(snap) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        let Some(n) = tree.node(node) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind != Kind::File {
            return reply.error(Errno::EISDIR);
        }
        // Rebuilt before this open: the attributes the kernel just fetched
        // (no TTL for bounded sizes) were already exact.
        let exact = n.size_exact || self.browser.rebuilt_size(snap, node).is_some();
        match self.browser.open_file(snap, node) {
            Ok((f, _size)) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fh, Arc::new(f));
                // Where the kernel only has a bound of the size, it must
                // not trust it: reads go to us and end at the real end.
                let flags = if exact {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::FOPEN_DIRECT_IO
                };
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => {
                let name = self
                    .browser
                    .snapshots()
                    .get(snap)
                    .map_or("?", |s| s.name.as_str());
                tracing::error!("{name}/{}: {e}", tree.index(node));
                reply.error(Errno::EIO);
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = self
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .cloned();
        let Some(f) = f else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut n = 0;
        while n < buf.len() {
            match f.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return reply.error(Errno::EIO),
            }
        }
        reply.data(&buf[..n]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut entries: Vec<(INodeNo, FileType, Vec<u8>)> = Vec::new();
        match decode(ino) {
            Some(Ino::Root) => {
                entries.push((INodeNo::ROOT, FileType::Directory, b".".to_vec()));
                entries.push((INodeNo::ROOT, FileType::Directory, b"..".to_vec()));
                if self.latest_target().is_some() {
                    entries.push((INodeNo(LATEST), FileType::Symlink, b"latest".to_vec()));
                }
                for (i, s) in self.browser.snapshots().iter().enumerate() {
                    entries.push((encode(i, 0), FileType::Directory, s.name.clone().into()));
                }
            }
            Some(Ino::Node { snap, node }) => {
                let tree = match self.tree(snap) {
                    Ok(t) => t,
                    Err(e) => return reply.error(e),
                };
                let Some(dir) = tree.node(node) else {
                    return reply.error(Errno::ENOENT);
                };
                if dir.kind != Kind::Dir {
                    return reply.error(Errno::ENOTDIR);
                }
                let parent = if node == 0 {
                    INodeNo::ROOT
                } else {
                    encode(snap, dir.parent)
                };
                entries.push((ino, FileType::Directory, b".".to_vec()));
                entries.push((parent, FileType::Directory, b"..".to_vec()));
                for &k in &dir.children {
                    let c = &tree.nodes[k as usize];
                    entries.push((encode(snap, k), file_type(c.kind), c.name.clone()));
                }
            }
            _ => return reply.error(Errno::ENOTDIR),
        }
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}

/// Mount `browser` at `mountpoint` and serve it until a signal or an
/// outside unmount. `ready` is called once the mount is in place.
pub fn serve(browser: Browser, mountpoint: &Path, ready: impl FnOnce()) -> anyhow::Result<()> {
    let url = browser.display_url();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::FSName(format!("dupr:{url}")),
        MountOption::Subtype("dupr".into()),
    ];
    // A file being rebuilt holds one thread; the others keep listing and
    // reading what is cached.
    config.n_threads = Some(4);
    let fs = ArchiveFs::new(Arc::new(browser));
    let session = fuser::spawn_mount(fs, mountpoint, &config)
        .with_context(|| format!("mounting {} at {}", url, mountpoint.display()))?;
    tracing::info!("{} mounted at {}", url, mountpoint.display());
    ready();
    loop {
        if session.guard.is_finished() {
            // Unmounted from outside (fusermount3 -u, umount).
            return session
                .join()
                .context("the FUSE session ended with an error");
        }
        if let Some(sig) = dupr_core::interrupt::pending() {
            tracing::info!(
                "{}: unmounting {}",
                dupr_core::interrupt::name(sig),
                mountpoint.display()
            );
            return session
                .umount_and_join()
                .with_context(|| format!("unmounting {}", mountpoint.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The child side of `--daemon`: tells the waiting parent the mount is up.
pub struct Daemon {
    ready: std::os::fd::OwnedFd,
}

impl Daemon {
    /// Release the parent (it exits 0) and leave the terminal.
    pub fn ready(self) {
        let _ = nix::unistd::write(&self.ready, b"1");
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            use std::os::fd::AsRawFd;
            for fd in 0..3 {
                // SAFETY: dup2 onto the standard descriptors, which stay
                // open; nothing holds Rust-side ownership of them.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
    }
}

/// Fork for `--daemon`: the parent waits until the child has mounted (exit
/// 0) or failed (the child's exit code; its error went to the terminal).
/// Called before the process starts any thread.
pub fn daemonize() -> anyhow::Result<Daemon> {
    let (r, w) = nix::unistd::pipe().context("--daemon: pipe")?;
    // SAFETY: the process is single-threaded here (no backend, runtime or
    // session has started), so the child may go on running Rust code.
    match unsafe { nix::unistd::fork() }.context("--daemon: fork")? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut b = [0u8; 1];
            let got = loop {
                match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut b) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            if matches!(got, Ok(1)) {
                std::process::exit(0);
            }
            let code = match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) if c != 0 => c,
                _ => 1,
            };
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            Ok(Daemon { ready: w })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_round_trip() {
        assert_eq!(decode(INodeNo::ROOT), Some(Ino::Root));
        assert_eq!(decode(INodeNo(LATEST)), Some(Ino::Latest));
        assert_eq!(decode(INodeNo(0)), None);
        assert_eq!(decode(INodeNo(3)), None);
        for (snap, node) in [
            (0, 0),
            (0, 7),
            (41, (1u32 << 31) + 5),
            (1 << 20, u32::MAX - 1),
        ] {
            let ino = encode(snap, node);
            assert!(ino.0 > LATEST);
            assert_eq!(decode(ino), Some(Ino::Node { snap, node }));
        }
        assert_eq!(decode(INodeNo(1 << NODE_BITS)), None);
    }
}
