//! `dupr mount` through real FUSE: every backup time of archives written by
//! dupr and by stock duplicity 3.2.1 is compared, file by file, with what
//! `dupr restore -t` rebuilds for the same time; damage gives EIO and a log
//! line naming the volume; unmount by signal and by `fusermount3 -u`; the
//! rebuilt-file cache stays within its limit; memory stays bounded.

use crate::common;

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    dupr_bin, flip_middle_byte, full_volumes, make_tricky_tree, pseudo_random_bytes, run_duplicity,
    set_mtime, tree_diffs, Dup, Env, SCRUBBED_ENV,
};

const PASS: &str = "mount test passphrase";

fn is_mounted(p: &Path) -> bool {
    let p = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| m.as_bytes() == p.as_os_str().as_bytes())
    })
}

/// A `dupr mount` running in the foreground.
struct Mounted {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

fn mount_cmd(env: &Env, url: &str, mnt: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(dupr_bin());
    for v in SCRUBBED_ENV {
        c.env_remove(v);
    }
    c.env("LC_ALL", "C.UTF-8")
        .env("XDG_CACHE_HOME", env.cache())
        .env("PASSPHRASE", PASS)
        .arg("mount")
        .args(extra)
        .arg(url)
        .arg(mnt);
    c
}

impl Mounted {
    fn start(env: &Env, url: &str, extra: &[&str]) -> Mounted {
        let dir = env.path().join("mnt");
        fs::create_dir_all(&dir).unwrap();
        let log = env.path().join("mount.log");
        let mut c = mount_cmd(env, url, &dir, extra);
        c.stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let mut child = c.spawn().expect("spawn dupr mount");
        let t0 = Instant::now();
        while !is_mounted(&dir) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "dupr mount exited ({st}) before mounting: {}",
                    fs::read_to_string(&log).unwrap()
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "mount timed out");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mounted { child, dir, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap()
    }

    fn snapshots(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "latest")
            .collect();
        v.sort();
        v
    }

    /// SIGTERM: the mount goes away and the process exits 0.
    fn stop(mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        assert!(
            st.success(),
            "dupr mount after SIGTERM: {st}: {}",
            self.log()
        );
        assert!(!is_mounted(&self.dir), "still mounted after SIGTERM");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Every snapshot of the mount equals `dupr restore -t` of its time
/// (contents, types, modes, mtimes, symlink targets, device numbers). The
/// snapshot directory itself is synthetic, so only what is in it counts.
fn assert_mount_matches_restore(env: &Env, m: &Mounted, url: &str, extra: &[&str]) {
    for name in m.snapshots() {
        let dest = env.restore_dir(&name.replace(':', "-"));
        let out = env
            .dupr()
            .env("PASSPHRASE", PASS)
            // The directory name is an ISO time `-t` reads as it is.
            .args(["restore", "-t", &name])
            .args(extra)
            .arg(url)
            .arg(&dest)
            .output()
            .unwrap();
        assert!(out.status.success(), "restore -t {name}: {out:?}");
        // Read every file first: sizes that duplicity's signatures only
        // bound become exact once a file has been rebuilt.
        for p in common::tree_paths(&dest) {
            let q = m.dir.join(&name).join(std::ffi::OsStr::from_bytes(&p));
            if fs::symlink_metadata(&q).is_ok_and(|md| md.is_file()) {
                let mut v = Vec::new();
                fs::File::open(&q)
                    .and_then(|mut f| f.read_to_end(&mut v))
                    .unwrap_or_else(|e| panic!("reading {}: {e}", q.display()));
            }
        }
        let diffs: Vec<String> = tree_diffs(&m.dir.join(&name), &dest)
            .into_iter()
            .filter(|d| !d.starts_with(".: "))
            .collect();
        assert!(diffs.is_empty(), "{name}: mount vs restore: {diffs:#?}");
    }
}

fn dupr_ok(env: &Env, args: &[&str]) {
    let out = env
        .dupr()
        .env("PASSPHRASE", PASS)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "dupr {args:?}: {out:?}");
}

#[test]
fn every_backup_time_reads_as_restore_rebuilds_it() {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, 3 << 20);
    let url = env.target_url();
    let s = src.to_str().unwrap();
    dupr_ok(&env, &["full", s, &url]);
    // Second set: a delta of big.bin, a new file, a deleted one.
    let mut big = fs::read(src.join("big.bin")).unwrap();
    big[1_000_000..1_004_096].copy_from_slice(&pseudo_random_bytes(4096, 77));
    big.extend(pseudo_random_bytes(100_000, 78));
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("dir/new.txt"), b"new in the first incremental\n").unwrap();
    fs::remove_file(src.join("dir/a.txt")).unwrap();
    set_mtime(&src.join("big.bin"), 1_800_000_000);
    std::thread::sleep(Duration::from_millis(1100));
    dupr_ok(&env, &["incremental", s, &url]);
    // Third: another delta on top, a changed mode.
    big.truncate(2_500_000);
    fs::write(src.join("big.bin"), &big).unwrap();
    set_mtime(&src.join("big.bin"), 1_800_000_100);
    common::chmod(&src.join("hello.txt"), 0o600);
    std::thread::sleep(Duration::from_millis(1100));
    dupr_ok(&env, &["incremental", s, &url]);

    let scratch = env.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let m = Mounted::start(&env, &url, &["--tempdir", scratch.to_str().unwrap()]);
    let snaps = m.snapshots();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    assert_eq!(
        fs::read_link(m.dir.join("latest")).unwrap(),
        PathBuf::from(&snaps[2])
    );
    // The newest state, read through `latest`.
    assert_eq!(fs::read(m.dir.join("latest/big.bin")).unwrap(), big);
    assert_mount_matches_restore(&env, &m, &url, &[]);
    // Read-only.
    let w = fs::OpenOptions::new()
        .write(true)
        .open(m.dir.join("latest/hello.txt"));
    assert!(w.is_err());
    assert!(fs::write(m.dir.join("latest/x"), b"x").is_err());
    m.stop();
    // The scratch space of rebuilt files went with the mount.
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn duplicity_archives_mount_with_exact_sizes_once_read() {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, 2 << 20);
    let url = env.target_url();
    let arch = env.archive_dir(Dup::V3);
    let a = arch.to_str().unwrap();
    let s = src.to_str().unwrap();
    run_duplicity(
        Dup::V3,
        ["full", s, &url, "--archive-dir", a],
        &[("PASSPHRASE", PASS)],
    );
    let mut big = fs::read(src.join("big.bin")).unwrap();
    big[500_000..500_100].fill(7);
    big.extend(b"appended\n");
    fs::write(src.join("big.bin"), &big).unwrap();
    set_mtime(&src.join("big.bin"), 1_800_000_000);
    std::thread::sleep(Duration::from_millis(1100));
    run_duplicity(
        Dup::V3,
        ["incremental", s, &url, "--archive-dir", a],
        &[("PASSPHRASE", PASS)],
    );
    let m = Mounted::start(&env, &url, &[]);
    assert_eq!(m.snapshots().len(), 2);
    // duplicity writes no block index: the first read decodes (and checks)
    // the volume once; later reads of its files come from that plain copy,
    // even with the volume gone from the target meanwhile.
    let full = env.path().join("mnt").join(&m.snapshots()[0]);
    assert_eq!(
        fs::read(full.join("hello.txt")).unwrap(),
        b"hello, dupr\nsecond line\n"
    );
    let moved: Vec<(PathBuf, PathBuf)> = full_volumes(&env.target())
        .into_iter()
        .map(|(_, v)| (v.clone(), env.path().join(v.file_name().unwrap())))
        .collect();
    for (a, b) in &moved {
        fs::rename(a, b).unwrap();
    }
    assert_eq!(fs::read(full.join("dir/sub/b.txt")).unwrap(), b"b\n");
    for (a, b) in &moved {
        fs::rename(b, a).unwrap();
    }
    // Before reading, the size is a bound no smaller than the truth.
    let p = m.dir.join("latest/big.bin");
    let bound = fs::metadata(&p).unwrap().len();
    assert!(bound >= big.len() as u64, "{bound} < {}", big.len());
    assert_eq!(fs::read(&p).unwrap(), big);
    assert_eq!(fs::metadata(&p).unwrap().len(), big.len() as u64);
    assert_mount_matches_restore(&env, &m, &url, &[]);
    m.stop();
}

#[test]
fn damaged_volume_gives_eio_naming_it_and_wrong_passphrase_refuses_to_mount() {
    let env = Env::new();
    let src = env.src();
    fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    fs::write(src.join("b.bin"), pseudo_random_bytes(300_000, 5)).unwrap();
    let url = env.target_url();
    dupr_ok(&env, &["full", src.to_str().unwrap(), &url]);

    // Wrong passphrase: refused before mounting, exit 31, nothing mounted.
    let mnt = env.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = mount_cmd(&env, &url, &mnt, &[])
        .env("PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(31), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    assert!(!is_mounted(&mnt));
    // A mount point that is not a directory: exit 23 naming it.
    let out = mount_cmd(&env, &url, &env.path().join("nowhere"), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(23), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));

    let (_, vol) = full_volumes(&env.target()).remove(0);
    flip_middle_byte(&vol);
    let scratch = env.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let m = Mounted::start(&env, &url, &["--tempdir", scratch.to_str().unwrap()]);
    // Listing needs no volume.
    let names: Vec<String> = fs::read_dir(m.dir.join("latest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for f in ["a.txt", "b.bin"] {
        let e = fs::read(m.dir.join("latest").join(f)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{f}: {e}");
    }
    // Nothing of the damaged volume was kept for later reads.
    let kept: Vec<_> = fs::read_dir(
        fs::read_dir(&scratch)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap()
    .collect();
    assert!(kept.is_empty(), "{kept:?}");
    let vname = vol.file_name().unwrap().to_str().unwrap().to_string();
    let log = m.log();
    assert!(
        log.contains(&vname) && log.contains("corrupt"),
        "log does not name {vname}: {log}"
    );
    m.stop();
}

#[test]
fn daemon_mode_and_fusermount_unmount() {
    let env = Env::new();
    let src = env.src();
    fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    let url = env.target_url();
    // A plain (gzip) archive: no key is asked for or checked.
    dupr_ok(
        &env,
        &["full", "--no-encryption", src.to_str().unwrap(), &url],
    );
    let mnt = env.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // --daemon returns once mounted.
    let out = mount_cmd(&env, &url, &mnt, &["--daemon", "--no-encryption"])
        .env_remove("PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&mnt));
    assert_eq!(fs::read(mnt.join("latest/a.txt")).unwrap(), b"alpha\n");
    let daemon = find_mount_process(&mnt).expect("the daemon runs");
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    // The daemon notices the outside unmount and exits.
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{daemon}")).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(&mnt));
}

/// The pid of the `dupr mount` serving `mnt`.
fn find_mount_process(mnt: &Path) -> Option<u32> {
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.contains(&b"mount".as_slice()) && args.contains(&mnt.as_os_str().as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn rebuilt_files_stay_within_the_cache_limit_and_memory_stays_bounded() {
    let env = Env::new();
    let src = env.src();
    // Two files of 700 KB against a 1 MiB cache, and one of 96 MiB.
    fs::write(src.join("one"), pseudo_random_bytes(700_000, 1)).unwrap();
    fs::write(src.join("two"), pseudo_random_bytes(700_000, 2)).unwrap();
    let big = pseudo_random_bytes(96 << 20, 3);
    fs::write(src.join("big"), &big).unwrap();
    let url = env.target_url();
    dupr_ok(&env, &["full", src.to_str().unwrap(), &url]);
    let scratch = env.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let m = Mounted::start(
        &env,
        &url,
        &[
            "--tempdir",
            scratch.to_str().unwrap(),
            "--mount-cache-mib",
            "1",
        ],
    );
    let cached = || -> usize {
        let d = fs::read_dir(&scratch)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        fs::read_dir(d).unwrap().count()
    };
    assert_eq!(fs::read(m.dir.join("latest/one")).unwrap().len(), 700_000);
    assert_eq!(cached(), 1);
    assert_eq!(fs::read(m.dir.join("latest/two")).unwrap().len(), 700_000);
    assert_eq!(cached(), 1, "the least recently used file was not evicted");
    // A file bigger than the cache is still served, in full, streamed.
    let mut f = fs::File::open(m.dir.join("latest/big")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert_eq!(&buf[..n], &big[off..off + n], "at {off}");
        off += n;
    }
    assert_eq!(off, big.len());
    let status = fs::read_to_string(format!("/proc/{}/status", m.child.id())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        hwm_kib < 64 * 1024,
        "peak RSS {hwm_kib} KiB reading a 96 MiB file"
    );
    drop(f);
    m.stop();
}

#[test]
fn a_profile_mounts_its_target_beside_its_scheduled_runs() {
    let env = Env::new();
    let src = env.src();
    fs::write(src.join("a.txt"), b"from the profile\n").unwrap();
    let pass = env.path().join("pass");
    fs::write(&pass, format!("{PASS}\n")).unwrap();
    fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let prof = env.path().join("home.toml");
    fs::write(
        &prof,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\npassphrase-file = \"{}\"\n",
            src.display(),
            env.target_url(),
            pass.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&prof, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let profile_cmd = |args: &[&str]| {
        let mut c = Command::new(dupr_bin());
        for v in SCRUBBED_ENV {
            c.env_remove(v);
        }
        c.env("XDG_CACHE_HOME", env.cache())
            .env("XDG_STATE_HOME", env.path().join("state"))
            .arg("-c")
            .arg(&prof)
            .args(args);
        c
    };
    let out = profile_cmd(&["backup"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mnt = env.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut child = profile_cmd(&["mount", mnt.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !is_mounted(&mnt) {
        assert!(child.try_wait().unwrap().is_none(), "profile mount exited");
        assert!(t0.elapsed() < Duration::from_secs(60), "mount timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fs::read(mnt.join("latest/a.txt")).unwrap(),
        b"from the profile\n"
    );
    // The profile's next backup is not held back by the mount.
    fs::write(src.join("b.txt"), b"second\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let out = profile_cmd(&["incr"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // SIGTERM reaches the mount itself (the profile runner became it).
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_webdav_target_mounts_and_reads_through_ranges() {
    let n = common::servers::Nginx::start();
    let env = Env::new();
    let src = env.src();
    // Big enough for a block index: one file is read by its blocks alone.
    let big = pseudo_random_bytes(6 << 20, 9);
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("small.txt"), b"small over webdav\n").unwrap();
    let url = n.url("dav/mount");
    dupr_ok(&env, &["full", src.to_str().unwrap(), &url]);
    let m = Mounted::start(&env, &url, &[]);
    assert_eq!(
        fs::read(m.dir.join("latest/small.txt")).unwrap(),
        b"small over webdav\n"
    );
    assert_eq!(fs::read(m.dir.join("latest/big.bin")).unwrap(), big);
    m.stop();
    // The volume was read by ranges (206), never fetched whole (200).
    let access = fs::read_to_string(n.dir.path().join("logs/access.log")).unwrap();
    let vol_gets: Vec<&str> = access
        .lines()
        .filter(|l| l.contains("\"GET ") && l.contains(".difftar.gpg"))
        .collect();
    assert!(
        vol_gets.iter().any(|l| l.contains("\" 206 ")),
        "no ranged read of the volume: {vol_gets:#?}"
    );
    assert!(
        !vol_gets.iter().any(|l| l.contains("\" 200 ")),
        "a whole-volume read: {vol_gets:#?}"
    );
}
