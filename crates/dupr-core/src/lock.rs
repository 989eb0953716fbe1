//! The run lock: a POSIX `fcntl` record lock on `lockfile` in the cache
//! directory, the very lock stock duplicity takes (through `fasteners`), so
//! dupr and duplicity exclude each other. The kernel drops the lock when the
//! process dies, so a lock file left by a crash never blocks a later run.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The cache directory's run lock, held until dropped.
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
/// a record from another host is trusted for a day). A record that does not
/// parse is stale only once it is a minute old: where records cannot be
/// linked into place whole (or an older dupr wrote it), the run that
/// created it may not have written it yet, and taking its lock then would
/// let both run.
fn record_is_stale(text: &str, age: std::time::Duration) -> bool {
    let mut it = text.split_whitespace();
    let (Some(host), Some(pid), Some(ticks)) = (it.next(), it.next(), it.next()) else {
        return age.as_secs() >= 60;
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
        // SAFETY: flock is plain integers, for which all-zero is valid.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        let forced = crate::test_hook("DUPR_LOCK_FALLBACK").is_some();
        let rc = if forced {
            -1
        } else {
            // SAFETY: a valid descriptor and a fully initialised flock struct.
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

    /// The fallback lock: `lockfile.pid`, holding our host, pid and start
    /// time; a record whose process is gone is removed. The record is
    /// written whole under a name of our own and then hard-linked into
    /// place (which fails if one exists), so another run never reads a
    /// half-written record and takes it for a dead one's.
    fn by_record(file: File, path: PathBuf) -> Result<RunLock> {
        use std::io::Write;
        let rec = path.with_extension("pid");
        let mine = path.with_extension(format!("pid.{}", std::process::id()));
        let written = (|| {
            let mut f = File::create(&mine)?;
            f.write_all(own_record().as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&mine);
            return Err(Error::io(&mine, e));
        }
        let taken = Self::link_record(&mine, &rec);
        let _ = std::fs::remove_file(&mine);
        taken?;
        Ok(RunLock {
            _file: file,
            path,
            record: Some(rec),
        })
    }

    /// Link the complete record `mine` to `rec`, removing a stale `rec`
    /// once. File systems without hard links get `rec` created exclusively
    /// and written (a record caught half-written is then live for a minute:
    /// see [`record_is_stale`]).
    fn link_record(mine: &Path, rec: &Path) -> Result<()> {
        use std::io::Write;
        for _ in 0..2 {
            let linked = match std::fs::hard_link(mine, rec) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(rec)
                        .and_then(|mut f| {
                            f.write_all(own_record().as_bytes())?;
                            f.sync_all()
                        })
                }
                r => r,
            };
            match linked {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(rec).unwrap_or_default();
                    let age = std::fs::metadata(rec)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .unwrap_or_default();
                    if !record_is_stale(&text, age) {
                        return Err(Error::Locked(rec.to_path_buf()));
                    }
                    tracing::warn!("Removing stale lock {} ({})", rec.display(), text.trim());
                    let _ = std::fs::remove_file(rec);
                }
                Err(e) => return Err(Error::io(rec, e)),
            }
        }
        Err(Error::Locked(rec.to_path_buf()))
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
///
/// Taken with the backend's exclusive create ([`Backend::put_new`]): where
/// that is atomic (local, S3, SFTP, ...) exactly one of two runs starting
/// together wins. Elsewhere the record is read back after a settle delay.
/// A stale lock is taken over through a marker object named after it,
/// itself created exclusively, so only one taker deletes and replaces it.
///
/// [`Backend::put_new`]: crate::backend::Backend::put_new
pub struct TargetLock {
    record: Record,
    backend: std::sync::Arc<dyn crate::backend::Backend>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    beat: Option<std::thread::JoinHandle<()>>,
}

/// The target lock's object name, at the top of the target.
pub const TARGET_LOCK: &str = ".dupr-lock";
const HEARTBEAT_SECS: u64 = 300;
const STALE_SECS: i64 = 1800;
/// A takeover takes seconds; a marker older than this is a dead taker's.
const TAKEOVER_SECS: i64 = 600;
/// Markers per stale lock: each dead taker costs one generation.
const TAKEOVER_GENERATIONS: u32 = 8;

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

    /// A complete record, or None (garbage, or one still being written
    /// where the service shows a created object before its content).
    fn parse(text: &str) -> Option<Record> {
        let mut lines = text.lines();
        if lines.next()? != "dupr-lock 1" {
            return None;
        }
        let (mut host, mut pid, mut cache, mut started, mut heartbeat) =
            (None, None, None, None, None);
        for line in lines {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "host" => host = Some(v.to_string()),
                "pid" => pid = v.parse().ok(),
                "cache" => cache = Some(v.to_string()),
                "started" => started = v.parse().ok(),
                "heartbeat" => heartbeat = v.parse().ok(),
                _ => {}
            }
        }
        Some(Record {
            host: host?,
            pid: pid?,
            cache: cache?,
            started: started?,
            heartbeat: heartbeat?,
        })
    }

    fn same_run(&self, o: &Record) -> bool {
        (self.host.as_str(), self.pid, self.started) == (o.host.as_str(), o.pid, o.started)
    }

    fn describe(&self, now: i64) -> String {
        format!(
            "host {}, pid {}, cache {}, last heard from {} s ago",
            self.host,
            self.pid,
            self.cache,
            now - self.heartbeat
        )
    }
}

use crate::backend::Backend;

/// The text of `name` on the target; None when there is none.
fn read_text(b: &dyn Backend, name: &str) -> Result<Option<String>> {
    // Asked for by name: some servers (nginx WebDAV) hide dotfiles in listings.
    if b.size(name)?.is_none() {
        return Ok(None);
    }
    let mut r = match b.open(name) {
        Ok(r) => r,
        // Released between the two calls.
        Err(Error::MissingVolume { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut data).map_err(|e| Error::io(name, e))?;
    Ok(Some(String::from_utf8_lossy(&data).into_owned()))
}

fn read_record(b: &dyn Backend) -> Option<Record> {
    Record::parse(&read_text(b, TARGET_LOCK).ok()??)
}

fn stage(staging: &Path, r: &Record) -> Result<PathBuf> {
    let tmp = staging.join(crate::temp_name("lock"));
    std::fs::write(&tmp, r.text()).ctx(&tmp)?;
    Ok(tmp)
}

/// Overwrite `name` with `r` (the heartbeat).
fn write_record(b: &dyn Backend, staging: &Path, r: &Record) -> Result<()> {
    let tmp = stage(staging, r)?;
    let res = b.put(&tmp, TARGET_LOCK);
    let _ = std::fs::remove_file(&tmp);
    res
}

/// Create `name` holding `r` if nothing is there; whether we created it.
fn create(b: &dyn Backend, staging: &Path, name: &str, r: &Record) -> Result<bool> {
    let tmp = stage(staging, r)?;
    let res = b.put_new(&tmp, name);
    let _ = std::fs::remove_file(&tmp);
    res
}

/// 64-bit FNV-1a: a stable short name for a lock record's text.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Wait after a non-atomic create before reading the record back
/// (`DUPR_LOCK_SETTLE_MS`, for tests).
fn settle() -> std::time::Duration {
    let ms = crate::backend::env_var("DUPR_LOCK_SETTLE_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    std::time::Duration::from_millis(ms)
}

impl TargetLock {
    /// Take the target's lock for a run using `cache_dir`.
    pub fn acquire(
        backend: std::sync::Arc<dyn crate::backend::Backend>,
        cache_dir: &Path,
    ) -> Result<TargetLock> {
        let now = wall_now();
        let me = Record {
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            cache: cache_dir.display().to_string(),
            started: now,
            heartbeat: now,
        };
        let b = backend.as_ref();
        let busy = |holder: String| Error::TargetBusy {
            url: b.display_url(),
            holder,
        };
        // Each pass either takes the lock, gives up, or removes a stale or
        // vanished holder; a few passes cover a release in between.
        let mut took_over: Option<String> = None;
        for _ in 0..4 {
            if create(b, cache_dir, TARGET_LOCK, &me)? {
                if !b.atomic_create() {
                    // Two runs that both found no lock: the later write
                    // wins, the other sees it and backs off.
                    std::thread::sleep(settle());
                }
                return match read_record(b) {
                    Some(r) if r.same_run(&me) => {
                        if let Some(w) = took_over {
                            tracing::warn!("{w}");
                        }
                        Ok(Self::start(backend.clone(), cache_dir, me))
                    }
                    Some(r) => Err(busy(r.describe(wall_now()))),
                    None => Err(busy("a run that removed the lock".into())),
                };
            }
            let Some(text) = read_text(b, TARGET_LOCK)? else {
                continue;
            };
            let held = match Record::parse(&text) {
                Some(r) => r,
                None => {
                    // Being written, or garbage: garbage stays the same.
                    std::thread::sleep(settle());
                    if read_text(b, TARGET_LOCK)?.as_deref() == Some(&text)
                        && Self::take_over(b, cache_dir, &text, &me)?
                    {
                        tracing::warn!("Removed the unreadable target lock {TARGET_LOCK}");
                    }
                    continue;
                }
            };
            if held.same_run(&me) {
                // Our own create, its reply lost and retried.
                return Ok(Self::start(backend.clone(), cache_dir, me));
            }
            // Same host and cache: its owner is dead, since we hold the
            // cache's lock. Otherwise it counts until it goes stale.
            let ours = held.host == me.host && held.cache == me.cache;
            let silent = wall_now() - held.heartbeat;
            if !ours && silent < STALE_SECS {
                return Err(busy(held.describe(wall_now())));
            }
            // Warned once the lock is ours: a taker that removed the stale
            // lock but lost the create to another run only says busy.
            if Self::take_over(b, cache_dir, &text, &me)? && !ours {
                took_over = Some(format!(
                    "Took over the stale target lock of host {} (pid {}, silent for {} min)",
                    held.host,
                    held.pid,
                    silent / 60
                ));
            }
        }
        Err(busy("runs that keep taking the lock".into()))
    }

    /// Remove the stale lock whose text is `stale`, unless another run is
    /// already taking it over: the taker is whoever creates the marker
    /// `.dupr-lock.take.<hash of stale>.<generation>` first. The caller
    /// then creates its lock exclusively as usual. Whether we removed it.
    fn take_over(b: &dyn Backend, staging: &Path, stale: &str, me: &Record) -> Result<bool> {
        let id = fnv(stale);
        let marker = |g: u32| format!("{TARGET_LOCK}.take.{id:016x}.{g}");
        for g in 1..=TAKEOVER_GENERATIONS {
            if create(b, staging, &marker(g), me)? {
                // Still the stale record (not replaced by a faster taker
                // that finished before our marker): ours to remove.
                let r = if read_text(b, TARGET_LOCK)?.as_deref() == Some(stale) {
                    b.delete(TARGET_LOCK).map(|_| true)
                } else {
                    Ok(false)
                };
                for old in 1..=g {
                    let _ = b.delete(&marker(old));
                }
                return r;
            }
            match read_text(b, &marker(g))?.and_then(|t| Record::parse(&t)) {
                Some(m) if m.same_run(me) => {
                    // Our own marker (a create retried after a lost reply):
                    // start over from the lock's current state.
                    let _ = b.delete(&marker(g));
                    return Ok(false);
                }
                Some(m) if wall_now() - m.heartbeat < TAKEOVER_SECS => {
                    return Err(Error::TargetBusy {
                        url: b.display_url(),
                        holder: format!(
                            "host {}, pid {} is taking over a stale lock",
                            m.host, m.pid
                        ),
                    });
                }
                // A taker that died halfway (or a marker gone meanwhile):
                // the next generation.
                _ => {}
            }
        }
        Err(Error::TargetBusy {
            url: b.display_url(),
            holder: format!("{TAKEOVER_GENERATIONS} takers of a stale lock died"),
        })
    }

    fn start(
        backend: std::sync::Arc<dyn crate::backend::Backend>,
        cache_dir: &Path,
        me: Record,
    ) -> TargetLock {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let beat = {
            let b = backend.clone();
            let staging = cache_dir.to_path_buf();
            let mut rec = me.clone();
            std::thread::Builder::new()
                .name("dupr-lock".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        rx.recv_timeout(std::time::Duration::from_secs(HEARTBEAT_SECS))
                    {
                        // One try: a retry's backoff would hold up the run's end.
                        let b = b.without_retries();
                        // Never overwrite a lock another run took over after
                        // ours went silent (a suspended machine).
                        match read_record(b) {
                            Some(r) if r.same_run(&rec) => {}
                            _ => {
                                tracing::warn!("The target lock is no longer ours");
                                crate::interrupt::lock_lost();
                                return;
                            }
                        }
                        rec.heartbeat = wall_now();
                        let _ = write_record(b, &staging, &rec);
                    }
                })
        };
        if let Err(e) = &beat {
            // Never a panic holding the lock: the run goes on, and its
            // lock looks stale to others after half an hour.
            tracing::warn!("No heartbeat for the target lock: {e}");
        }
        TargetLock {
            record: me,
            backend,
            stop: Some(tx),
            beat: beat.ok(),
        }
    }
}

/// The real clock for heartbeats and staleness: `--current-time` (a test
/// and replay aid) must never make a live lock look stale, or a dead one
/// look fresh.
fn wall_now() -> i64 {
    chrono::Utc::now().timestamp()
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

    #[test]
    fn record_lock_refuses_a_half_written_record_and_takes_a_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lockfile");
        let rec = dir.path().join("lockfile.pid");
        let open = || File::create(&path).unwrap();
        // Created by another run that has not written it yet: refused.
        File::create(&rec).unwrap();
        assert!(matches!(
            RunLock::by_record(open(), path.clone()),
            Err(Error::Locked(_))
        ));
        // A whole record of a process that is gone: taken over, and ours
        // is complete the moment it exists.
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        std::fs::write(&rec, format!("{host} 999999999 1\n")).unwrap();
        let lock = RunLock::by_record(open(), path.clone()).unwrap();
        assert_eq!(std::fs::read_to_string(&rec).unwrap(), own_record());
        // Only the record is left beside the lock file: no private copy.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["lockfile", "lockfile.pid"]);
        // Live: a second taker is refused.
        assert!(matches!(
            RunLock::by_record(open(), path.clone()),
            Err(Error::Locked(_))
        ));
        drop(lock);
        assert!(!rec.exists());
    }

    #[test]
    fn a_fresh_record_not_yet_written_is_live() {
        use std::time::Duration;
        // Created, not yet written: its creator holds the lock.
        assert!(!record_is_stale("", Duration::from_secs(0)));
        assert!(!record_is_stale("host 12", Duration::from_secs(5)));
        // Left empty by a run killed in between: taken over after a minute.
        assert!(record_is_stale("", Duration::from_secs(61)));
        // A complete record of a process that is gone: stale at once.
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert!(record_is_stale(
            &format!("{host} 999999999 1\n"),
            Duration::ZERO
        ));
        // Ours: live.
        assert!(!record_is_stale(&own_record(), Duration::ZERO));
    }

    #[test]
    fn lock_records_parse_only_when_complete() {
        let r = Record {
            host: "h".into(),
            pid: 7,
            cache: "/c d".into(),
            started: 5,
            heartbeat: 9,
        };
        assert_eq!(Record::parse(&r.text()), Some(r.clone()));
        let t = r.text();
        assert_eq!(Record::parse(&t[..t.len() - 12]), None);
        assert_eq!(Record::parse(""), None);
        assert_eq!(Record::parse("host h\npid 1\n"), None);
    }
}
