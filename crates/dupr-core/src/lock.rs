//! The run lock: a POSIX `fcntl` record lock on `lockfile` in the cache
//! directory, the very lock stock duplicity takes (through `fasteners`), so
//! dupr and duplicity exclude each other. The kernel drops the lock when the
//! process dies, so a lock file left by a crash never blocks a later run.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Take the lock on `<cache_dir>/lockfile` without waiting.
    pub fn acquire(cache_dir: &Path) -> Result<RunLock> {
        let path = cache_dir.join("lockfile");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(&path)?;
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: a valid descriptor and a fully initialised flock struct.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EAGAIN) => Err(Error::Locked(path)),
                _ => Err(Error::io(&path, err)),
            };
        }
        // Another process may have removed the file between our open and
        // our lock (duplicity 3.x unlinks it even when refused): make sure the
        // path still names the locked file, else the lock excludes nobody.
        if !same_file(&file, &path) {
            return Err(Error::Locked(path));
        }
        Ok(RunLock { _file: file, path })
    }
}

fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove while still holding the lock, as duplicity does, but only
        // our own file, never one a later run created.
        if same_file(&self._file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_another_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _l = RunLock::acquire(dir.path()).unwrap();
        // fcntl locks are per process: probe from a child process.
        let status = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import fcntl,sys\nf=open({:?},'a')\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n sys.exit(7)\nsys.exit(0)",
                dir.path().join("lockfile")
            ))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(7));
    }
}
