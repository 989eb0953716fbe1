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
    /// The PID record used instead where fcntl locks do not work.
    record: Option<PathBuf>,
}

/// This process, as a lock record: host, pid and the process start time
/// (so a reused PID is not mistaken for the owner).
fn own_record() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    format!("{host} {pid} {}\n", start_ticks(pid).unwrap_or(0))
}

/// A process's start time in clock ticks since boot (field 22 of stat).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Whether a lock record names a process that is gone (same host only;
/// a record from another host is trusted for a day).
fn record_is_stale(text: &str, age: std::time::Duration) -> bool {
    let mut it = text.split_whitespace();
    let (Some(host), Some(pid), Some(ticks)) = (it.next(), it.next(), it.next()) else {
        return true;
    };
    let ours = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    if host != ours {
        return age.as_secs() > 24 * 3600;
    }
    let (Ok(pid), Ok(ticks)) = (pid.parse::<u32>(), ticks.parse::<u64>()) else {
        return true;
    };
    start_ticks(pid) != Some(ticks)
}

impl RunLock {
    /// Take the lock on `<cache_dir>/lockfile` without waiting.
    pub fn acquire(cache_dir: &Path) -> Result<RunLock> {
        Self::acquire_file(&cache_dir.join("lockfile"))
    }

    /// Take the lock on the file `path` without waiting.
    pub fn acquire_file(path: &Path) -> Result<RunLock> {
        let path = path.to_path_buf();
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
        let forced = std::env::var_os("DUPR_LOCK_FALLBACK").is_some();
        let rc = if forced {
            -1
        } else {
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) }
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EAGAIN) if !forced => Err(Error::Locked(path)),
                // No working fcntl locks here (NFS without lockd, some FUSE
                // file systems): fall back to a PID record.
                Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                    Self::by_record(file, path)
                }
                _ if forced => Self::by_record(file, path),
                _ => Err(Error::io(&path, err)),
            };
        }
        // Another process may have removed the file between our open and
        // our lock (duplicity 3.x unlinks it even when refused): make sure the
        // path still names the locked file, else the lock excludes nobody.
        if !same_file(&file, &path) {
            return Err(Error::Locked(path));
        }
        Ok(RunLock {
            _file: file,
            path,
            record: None,
        })
    }

    /// The fallback lock: `lockfile.pid`, created exclusively, holding our
    /// host, pid and start time; a record whose process is gone is removed.
    fn by_record(file: File, path: PathBuf) -> Result<RunLock> {
        use std::io::Write;
        let rec = path.with_extension("pid");
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&rec) {
                Ok(mut f) => {
                    f.write_all(own_record().as_bytes()).ctx(&rec)?;
                    f.sync_all().ctx(&rec)?;
                    return Ok(RunLock {
                        _file: file,
                        path,
                        record: Some(rec),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&rec).unwrap_or_default();
                    let age = std::fs::metadata(&rec)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .unwrap_or_default();
                    if !record_is_stale(&text, age) {
                        return Err(Error::Locked(rec));
                    }
                    tracing::warn!("Removing stale lock {} ({})", rec.display(), text.trim());
                    let _ = std::fs::remove_file(&rec);
                }
                Err(e) => return Err(Error::io(&rec, e)),
            }
        }
        Err(Error::Locked(rec))
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
        if let Some(rec) = &self.record {
            if std::fs::read_to_string(rec).is_ok_and(|t| t == own_record()) {
                let _ = std::fs::remove_file(rec);
            }
        }
        // Remove while still holding the lock, as duplicity does, but only
        // our own file, never one a later run created.
        if same_file(&self._file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The lock object on the target: two runs with different caches (two
/// machines, or two `--archive-dir`s) never write the same target at once.
/// duplicity ignores the object (its name is not a duplicity name). A
/// heartbeat keeps it fresh; one silent for half an hour is stale, so a
/// crash or a sleeping laptop never wedges later runs.
pub struct TargetLock {
    record: Record,
    backend: std::sync::Arc<dyn crate::backend::Backend>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    beat: Option<std::thread::JoinHandle<()>>,
}

pub const TARGET_LOCK: &str = ".dupr-lock";
const HEARTBEAT_SECS: u64 = 300;
const STALE_SECS: i64 = 1800;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    host: String,
    pid: u32,
    cache: String,
    started: i64,
    heartbeat: i64,
}

impl Record {
    fn text(&self) -> String {
        format!(
            "dupr-lock 1\nhost {}\npid {}\ncache {}\nstarted {}\nheartbeat {}\n",
            self.host, self.pid, self.cache, self.started, self.heartbeat
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let mut r = Record {
            host: String::new(),
            pid: 0,
            cache: String::new(),
            started: 0,
            heartbeat: 0,
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            match k {
                "host" => r.host = v.into(),
                "pid" => r.pid = v.parse().ok()?,
                "cache" => r.cache = v.into(),
                "started" => r.started = v.parse().ok()?,
                "heartbeat" => r.heartbeat = v.parse().ok()?,
                _ => {}
            }
        }
        Some(r)
    }

    fn same_run(&self, o: &Record) -> bool {
        (self.host.as_str(), self.pid, self.started) == (o.host.as_str(), o.pid, o.started)
    }
}

fn read_record(b: &dyn crate::backend::Backend) -> Option<Record> {
    // Asked for by name: some servers (nginx WebDAV) hide dotfiles in listings.
    b.size(TARGET_LOCK).ok()??;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut b.open(TARGET_LOCK).ok()?, &mut text).ok()?;
    Record::parse(&text)
}

fn write_record(b: &dyn crate::backend::Backend, staging: &Path, r: &Record) -> Result<()> {
    let tmp = staging.join(format!(".dupr-tmp.{}.lock", std::process::id()));
    std::fs::write(&tmp, r.text()).ctx(&tmp)?;
    b.put(&tmp, TARGET_LOCK)
}

impl TargetLock {
    /// Take the target's lock for a run using `cache_dir`; `url` must
    /// name the same target as `backend` (the heartbeat opens its own).
    pub fn acquire(
        backend: std::sync::Arc<dyn crate::backend::Backend>,
        cache_dir: &Path,
    ) -> Result<TargetLock> {
        let now = crate::time::now();
        let me = Record {
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            cache: cache_dir.display().to_string(),
            started: now,
            heartbeat: now,
        };
        if let Some(held) = read_record(backend.as_ref()) {
            // Same host and cache: its owner is dead, since we hold the
            // cache's lock. Otherwise it counts until it goes stale.
            let ours = held.host == me.host && held.cache == me.cache;
            let silent = now - held.heartbeat;
            if !ours && silent < STALE_SECS {
                return Err(Error::TargetBusy {
                    url: backend.display_url(),
                    holder: format!(
                        "host {}, pid {}, cache {}, last heard from {} s ago",
                        held.host, held.pid, held.cache, silent
                    ),
                });
            }
            if !ours {
                tracing::warn!(
                    "Taking over the stale target lock of host {} (pid {}, silent for {} min)",
                    held.host,
                    held.pid,
                    silent / 60
                );
            }
        }
        write_record(backend.as_ref(), cache_dir, &me)?;
        // Two runs that both found no lock: the later write wins, the
        // other sees it and backs off.
        match read_record(backend.as_ref()) {
            Some(r) if r.same_run(&me) => {}
            other => {
                return Err(Error::TargetBusy {
                    url: backend.display_url(),
                    holder: other
                        .map(|r| format!("host {}, pid {}, cache {}", r.host, r.pid, r.cache))
                        .unwrap_or_else(|| "a run that removed the lock".into()),
                })
            }
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let beat = {
            let b = backend.clone();
            let staging = cache_dir.to_path_buf();
            let mut rec = me.clone();
            std::thread::spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(std::time::Duration::from_secs(HEARTBEAT_SECS))
                {
                    rec.heartbeat = crate::time::now();
                    // One try: a retry's backoff would hold up the run's end.
                    let _ = write_record(b.without_retries(), &staging, &rec);
                }
            })
        };
        Ok(TargetLock {
            record: me,
            backend,
            stop: Some(tx),
            beat: Some(beat),
        })
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.beat.take() {
            let _ = t.join();
        }
        let b = self.backend.without_retries();
        if read_record(b).is_some_and(|r| r.same_run(&self.record)) {
            let _ = b.delete(TARGET_LOCK);
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
