//! Writing the restored tree: files under temporary names renamed into
//! place when complete (sparse where the data is zeros), directories
//! filled and then given their metadata, nothing replaced that the
//! archive does not replace.

use super::*;

/// Writes all-zero blocks (4 KiB, aligned to the file offset) as holes, so
/// sparse files restore sparse. Reads hand over chunks of any length; the
/// part of a block not yet complete waits in `pending`.
pub(super) struct SparseWriter<'f> {
    f: &'f mut File,
    pub(super) len: u64,
    pending: Vec<u8>,
}

pub(super) const BLOCK: usize = 4096;

impl<'f> SparseWriter<'f> {
    pub(super) fn new(f: &'f mut File) -> Self {
        SparseWriter {
            f,
            len: 0,
            pending: Vec::with_capacity(BLOCK),
        }
    }

    /// Write whole blocks: data runs at once, zero blocks skipped.
    pub(super) fn blocks(f: &mut File, buf: &[u8]) -> io::Result<()> {
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

    pub(super) fn finish(self) -> io::Result<()> {
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

/// Hashes what passes through, when given an algorithm.
pub(super) struct HashWriter<W> {
    inner: W,
    h: Option<content::Hasher>,
}

impl<W: Write> HashWriter<W> {
    pub(super) fn new(inner: W, algo: Option<content::Algo>) -> Self {
        HashWriter {
            inner,
            h: algo.map(content::Hasher::new),
        }
    }

    pub(super) fn finish(self) -> (W, Option<ContentHash>) {
        (self.inner, self.h.map(content::Hasher::finish))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.h.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
pub(super) struct TreeWriter {
    pub(super) dest: PathBuf,
    prefix: Index,
    pub(super) force: bool,
    pub(super) restore_owner: bool,
    pub(super) numeric_owner: bool,
    pub(super) rename: Vec<(Index, Index)>,
    names: Names,
    /// Open directories, innermost last.
    dirs: Vec<OpenDir>,
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) errors: u64,
    /// The caller's live counters, fed as `files` and `bytes` grow.
    pub(super) counters: Option<Arc<crate::backup::Counters>>,
}

pub(super) struct OpenDir {
    pub(super) index: Index,
    /// Its path relative to the target (after `--rename`).
    rel: Index,
    /// Where it is being written (a staging name when `staged_for`), reached
    /// through its parent.
    pub(super) path: PathBuf,
    /// How its entries are reached: `path`, or through the open descriptor
    /// `_fd` once `path` is long (see `walk::dir_access`).
    pub(super) inner: PathBuf,
    _fd: Option<File>,
    pub(super) meta: Meta,
    /// The final path, now a non-directory, this one replaces when closed.
    staged_for: Option<PathBuf>,
}

/// Name prefix of every temporary a restore creates in the tree; the pid
/// after it tells a later restore whether its owner is gone.
pub(super) const TEMP_PREFIX: &str = ".dupr-restore.";

pub(super) fn temp_prefix() -> String {
    format!("{TEMP_PREFIX}{}.", std::process::id())
}

/// Remove temporaries that restores killed before they finished left in
/// `dir`: those whose owning process no longer runs (or of unknown owner).
pub(super) fn remove_stale_temps(dir: &Path) {
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
pub(super) fn last_name(ix: &Index) -> &[u8] {
    let b = ix.as_bytes();
    match b.iter().rposition(|&c| c == b'/') {
        Some(p) => &b[p + 1..],
        None => b,
    }
}

/// A temporary path of ours that is removed unless kept.
pub(super) struct Temp(Option<PathBuf>);

impl Temp {
    pub(super) fn path(&self) -> &Path {
        self.0.as_deref().expect("not yet kept")
    }
    pub(super) fn keep(mut self) {
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
pub(super) fn make_temp(dir: &Path, make: impl Fn(&Path) -> io::Result<()>) -> Result<Temp> {
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
    pub(super) fn new(opts: &RestoreOptions, prefix: Index) -> Self {
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
    pub(super) fn map(&self, p: PathBuf) -> PathBuf {
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
    pub(super) fn abort(&mut self) {
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
