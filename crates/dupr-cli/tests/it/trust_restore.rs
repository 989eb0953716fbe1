//! Restore never destroys what it did not write: `--force` replaces only the
//! exact paths the archive holds, and only with complete content; a killed
//! restore's temporaries are cleaned by the next one; sparse files stay
//! sparse; paths longer than PATH_MAX are backed up and restored.

use crate::common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use common::*;

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn backup_of(env: &Env, source: &Path, extra: &[&str]) {
    let o = env
        .dupr()
        .args(["full", "--no-encryption"])
        .args(extra)
        .arg(source)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "backup failed: {}", text(&o));
}

fn restore(env: &Env, dest: &Path, extra: &[&str]) -> Output {
    env.dupr()
        .args(["restore", "--no-encryption"])
        .args(extra)
        .arg(env.target_url())
        .arg(dest)
        .output()
        .unwrap()
}

/// Names of restore temporaries in `dir` (not recursive).
fn temps_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dupr-restore"))
        .collect()
}

/// Temporaries anywhere under `root`.
fn temps_under(root: &Path) -> Vec<String> {
    tree_paths(root)
        .into_iter()
        .map(|p| lossy(&p))
        .filter(|p| p.contains(".dupr-restore"))
        .collect()
}

fn one_line_error(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(e.trim_end().lines().count(), 1, "one error line: {e}");
    e
}

/// A user's directory with files of its own.
fn user_dir(p: &Path) {
    fs::create_dir_all(p.join("sub")).unwrap();
    fs::write(p.join("mine.txt"), b"user data\n").unwrap();
    fs::write(p.join("sub/keep"), b"keep me\n").unwrap();
}

fn assert_user_dir(p: &Path) {
    assert_eq!(fs::read(p.join("mine.txt")).unwrap(), b"user data\n");
    assert_eq!(fs::read(p.join("sub/keep")).unwrap(), b"keep me\n");
    assert_eq!(tree_paths(p).len(), 3, "{:?}", tree_paths(p));
}

#[test]
fn file_backup_never_replaces_a_non_empty_directory() {
    let env = Env::new();
    let file = env.path().join("one.txt");
    fs::write(&file, b"the archived file\n").unwrap();
    backup_of(&env, &file, &[]);

    // A non-empty directory in the way: kept, with or without --force, as
    // duplicity 3.2.1 does (exit 11).
    let dest = env.restore_dir("dir");
    user_dir(&dest);
    for force in [false, true] {
        let o = restore(&env, &dest, if force { &["--force"] } else { &[] });
        assert_eq!(o.status.code(), Some(11), "force={force}: {}", text(&o));
        assert!(one_line_error(&o).contains("restore-dir"), "{}", text(&o));
        assert_user_dir(&dest);
    }
    let dup = try_duplicity(
        Dup::V3,
        [
            "restore".as_ref(),
            "--force".as_ref(),
            "--no-encryption".as_ref(),
            "--archive-dir".as_ref(),
            env.archive_dir(Dup::V3).as_os_str(),
            env.target_url().as_ref(),
            dest.as_os_str(),
        ],
        &[],
    );
    assert_eq!(
        dup.status.code(),
        Some(11),
        "duplicity 3.2.1: {}",
        text(&dup)
    );
    assert_user_dir(&dest);

    // An empty directory becomes the file (duplicity 3.2.1 does the same).
    let empty = env.restore_dir("empty");
    fs::create_dir(&empty).unwrap();
    let o = restore(&env, &empty, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&empty).unwrap(), b"the archived file\n");
    assert!(
        temps_in(env.path()).is_empty(),
        "{:?}",
        temps_in(env.path())
    );

    // An existing file: kept without --force, replaced with it.
    let old = env.restore_dir("file");
    fs::write(&old, b"old\n").unwrap();
    let o = restore(&env, &old, &[]);
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    assert_eq!(fs::read(&old).unwrap(), b"old\n");
    let o = restore(&env, &old, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&old).unwrap(), b"the archived file\n");
    assert!(
        temps_in(env.path()).is_empty(),
        "{:?}",
        temps_in(env.path())
    );
}

/// A tree of a few files, big enough with `--volsize 1` for 3+ volumes.
fn small_tree(src: &Path, big: usize) {
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("a.txt"), b"a\n").unwrap();
    fs::write(src.join("d/b.txt"), b"b\n").unwrap();
    fs::write(src.join("d/e/c.txt"), b"c\n").unwrap();
    if big > 0 {
        fs::write(src.join("m-big.bin"), pseudo_random_bytes(big, 7)).unwrap();
    }
    fs::write(src.join("z-last.txt"), b"z\n").unwrap();
}

#[test]
fn dir_backup_replaces_a_file_only_once_the_tree_is_complete() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src, 3_000_000);
    backup_of(&env, &src, &["--volsize", "1"]);

    let dest = env.restore_dir("r");
    fs::write(&dest, b"a file where the tree goes\n").unwrap();
    let o = restore(&env, &dest, &[]);
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    assert_eq!(fs::read(&dest).unwrap(), b"a file where the tree goes\n");

    // A restore that fails halfway (a damaged middle volume) leaves the
    // file as it was and no partial tree anywhere.
    let vols = full_volumes(&env.target());
    assert!(vols.len() >= 3, "{vols:?}");
    let saved = fs::read(&vols[1].1).unwrap();
    flip_middle_byte(&vols[1].1);
    let o = restore(&env, &dest, &["--force"]);
    assert_eq!(o.status.code(), Some(21), "{}", text(&o));
    assert_eq!(fs::read(&dest).unwrap(), b"a file where the tree goes\n");
    assert!(
        temps_in(env.path()).is_empty(),
        "{:?}",
        temps_in(env.path())
    );

    fs::write(&vols[1].1, saved).unwrap();
    let o = restore(&env, &dest, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_tree(&src, &dest);
    assert!(
        temps_in(env.path()).is_empty(),
        "{:?}",
        temps_in(env.path())
    );
}

#[test]
fn forced_dir_restore_merges_and_keeps_what_the_archive_lacks() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src, 0);
    // Paths where the target holds something of another kind.
    fs::write(src.join("was-dir"), b"archived file\n").unwrap();
    fs::write(src.join("was-empty-dir"), b"archived file 2\n").unwrap();
    fs::create_dir(src.join("was-file")).unwrap();
    fs::write(src.join("was-file/inner"), b"inner\n").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    backup_of(&env, &src, &[]);

    // duplicity 0.8.22 with --force: archive entries overwrite, the rest stays.
    let dest = env.restore_dir("r");
    user_dir(&dest);
    fs::write(dest.join("a.txt"), b"stale\n").unwrap();
    fs::create_dir(dest.join("d")).unwrap();
    fs::write(dest.join("d/user-in-d"), b"u\n").unwrap();
    fs::create_dir(dest.join("was-dir")).unwrap();
    fs::write(dest.join("was-dir/precious"), b"precious\n").unwrap();
    fs::create_dir(dest.join("was-empty-dir")).unwrap();
    fs::write(dest.join("was-file"), b"a file in the way\n").unwrap();
    fs::create_dir(dest.join("link")).unwrap();

    let o = restore(&env, &dest, &["--force"]);
    // One entry could not be placed without deleting the user's files.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("was-dir"), "{e}");
    assert!(e.contains("1 error"), "{e}");
    assert_eq!(
        fs::read(dest.join("was-dir/precious")).unwrap(),
        b"precious\n"
    );
    assert_eq!(fs::read(dest.join("mine.txt")).unwrap(), b"user data\n");
    assert_eq!(fs::read(dest.join("sub/keep")).unwrap(), b"keep me\n");
    assert_eq!(fs::read(dest.join("d/user-in-d")).unwrap(), b"u\n");
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"a\n");
    assert_eq!(fs::read(dest.join("d/e/c.txt")).unwrap(), b"c\n");
    assert_eq!(
        fs::read(dest.join("was-empty-dir")).unwrap(),
        b"archived file 2\n"
    );
    assert_eq!(fs::read(dest.join("was-file/inner")).unwrap(), b"inner\n");
    // An empty directory in the way of a symlink is replaced too.
    assert_eq!(
        fs::read_link(dest.join("link")).unwrap(),
        Path::new("a.txt")
    );
    assert!(temps_under(&dest).is_empty(), "{:?}", temps_under(&dest));
    // Everything else equals the source.
    fs::remove_dir_all(dest.join("was-dir")).unwrap();
    fs::write(dest.join("was-dir"), b"archived file\n").unwrap();
    for p in ["mine.txt", "sub/keep", "sub", "d/user-in-d"] {
        let p = dest.join(p);
        if p.is_dir() {
            fs::remove_dir(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    let mt = fs::metadata(src.join("was-dir")).unwrap().mtime();
    set_mtime(&dest.join("was-dir"), mt);
    set_mtime(
        &dest.join("d"),
        fs::metadata(src.join("d")).unwrap().mtime(),
    );
    set_mtime(&dest, fs::metadata(&src).unwrap().mtime());
    assert_same_tree(&src, &dest);
}

#[test]
fn path_to_restore_over_existing_paths() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src, 0);
    backup_of(&env, &src, &[]);

    // A directory over a directory holding other files: merged.
    let dest = env.restore_dir("d");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("b.txt"), b"old b\n").unwrap();
    fs::write(dest.join("other"), b"other\n").unwrap();
    let o = restore(&env, &dest, &["--path-to-restore", "d"]);
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    assert_eq!(fs::read(dest.join("b.txt")).unwrap(), b"old b\n");
    let o = restore(&env, &dest, &["--force", "--path-to-restore", "d"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(dest.join("b.txt")).unwrap(), b"b\n");
    assert_eq!(fs::read(dest.join("e/c.txt")).unwrap(), b"c\n");
    assert_eq!(fs::read(dest.join("other")).unwrap(), b"other\n");

    // One file over a non-empty directory: refused; over a file: replaced.
    let o = restore(&env, &dest, &["--force", "--path-to-restore", "d/b.txt"]);
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    assert!(one_line_error(&o).contains("restore-d"), "{}", text(&o));
    assert_eq!(fs::read(dest.join("other")).unwrap(), b"other\n");
    let one = dest.join("other");
    let o = restore(&env, &one, &["--force", "--path-to-restore", "d/b.txt"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(&one).unwrap(), b"b\n");

    // A directory over a file: swapped in complete.
    let o = restore(&env, &one, &["--force", "--path-to-restore", "d/e"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_tree(&src.join("d/e"), &one);
    assert!(temps_under(&dest).is_empty(), "{:?}", temps_under(&dest));
}

// ------------------------------------------------------------ temporaries

#[test]
fn killed_restore_leaves_temporaries_that_a_forced_restore_removes() {
    let env = Env::new();
    let src = env.src();
    fs::write(src.join("a.txt"), b"a\n").unwrap();
    fs::write(src.join("big.bin"), pseudo_random_bytes(96 << 20, 3)).unwrap();
    backup_of(&env, &src, &[]);

    let dest = env.restore_dir("r");
    let mut child = std::process::Command::new(dupr_bin())
        .env("XDG_CACHE_HOME", env.cache())
        .current_dir(env.path())
        .args(["restore", "--no-encryption"])
        .arg(env.target_url())
        .arg(&dest)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while big.bin is being rebuilt: its temporary exists and has
    // data, and 96 MiB are far from written. (A temporary alone may be
    // a.txt's, renamed in place before the kill lands.)
    let big_temp_growing = || {
        temps_in(&dest)
            .iter()
            .any(|n| fs::symlink_metadata(dest.join(n)).is_ok_and(|m| m.len() > (1 << 20)))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if dest.is_dir() && big_temp_growing() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "restore finished before a temporary was seen"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !temps_in(&dest).is_empty(),
        "the killed restore left nothing"
    );
    assert!(!dest.join("big.bin").exists(), "big.bin was complete");

    let o = restore(&env, &dest, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(temps_under(&dest).is_empty(), "{:?}", temps_under(&dest));
    assert_same_tree(&src, &dest);
}

// ---------------------------------------------------------------- sparse

/// Bytes actually allocated on disk.
fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

fn sparse_file(p: &Path, len: u64, writes: &[(u64, &[u8])]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(p)
        .unwrap();
    f.set_len(len).unwrap();
    for (off, data) in writes {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(data).unwrap();
    }
}

#[test]
fn sparse_files_restore_sparse() {
    let env = Env::new();
    let src = env.src();
    let len = 200u64 << 20;
    let p = src.join("sparse.img");
    let data = pseudo_random_bytes(5000, 9);
    sparse_file(
        &p,
        len,
        &[(0, b"head"), (100 << 20 | 77, &data), (len - 3, b"end")],
    );
    // Ends in a hole too.
    sparse_file(&src.join("tail-hole.img"), 50 << 20, &[(1 << 20, b"x")]);
    assert!(allocated(&p) < 1 << 20, "source is not sparse here");
    backup_of(&env, &src, &[]);

    let dest = env.restore_dir("r");
    let o = restore(&env, &dest, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_tree(&src, &dest);
    for f in ["sparse.img", "tail-hole.img"] {
        let a = allocated(&dest.join(f));
        assert!(a < 1 << 20, "{f}: {a} bytes allocated");
    }

    // Rebuilt from a delta, it stays sparse too.
    sparse_file(&p, len, &[(150 << 20, b"changed")]);
    let o = env
        .dupr()
        .args(["incremental", "--no-encryption"])
        .arg(&src)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let dest = env.restore_dir("inc");
    let o = restore(&env, &dest, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same_tree(&src, &dest);
    let a = allocated(&dest.join("sparse.img"));
    assert!(a < 1 << 20, "after delta: {a} bytes allocated");
}

// ------------------------------------------------------- beyond PATH_MAX

use std::collections::BTreeMap;
use std::ffi::CString;

fn c(name: &[u8]) -> CString {
    CString::new(name).unwrap()
}

/// `openat(dir, name)` or panic.
fn openat(dir: libc::c_int, name: &[u8], flags: libc::c_int, mode: libc::c_uint) -> libc::c_int {
    let fd = unsafe { libc::openat(dir, c(name).as_ptr(), flags | libc::O_CLOEXEC, mode) };
    assert!(
        fd >= 0,
        "openat {}: {}",
        lossy(name),
        std::io::Error::last_os_error()
    );
    fd
}

/// A chain of `levels` directories with `name_len`-byte names under
/// `root`, made with descriptors (the path soon exceeds PATH_MAX), with a
/// file every 5 levels and a symlink at the bottom. Returns the depth in
/// path bytes.
fn deep_tree(root: &Path, levels: usize, name_len: usize) -> usize {
    let mut fd = openat(
        libc::AT_FDCWD,
        root.as_os_str().as_encoded_bytes(),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    );
    let mut depth = root.as_os_str().len();
    for i in 0..levels {
        let name = format!("{i:03}{}", "d".repeat(name_len - 3));
        assert_eq!(
            unsafe { libc::mkdirat(fd, c(name.as_bytes()).as_ptr(), 0o755) },
            0,
            "mkdirat: {}",
            std::io::Error::last_os_error()
        );
        let next = openat(fd, name.as_bytes(), libc::O_RDONLY | libc::O_DIRECTORY, 0);
        unsafe { libc::close(fd) };
        fd = next;
        depth += 1 + name.len();
        if i % 5 == 4 || i + 1 == levels {
            let f = openat(
                fd,
                b"file.txt",
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o640,
            );
            let data = format!("level {i}, {depth} bytes deep\n");
            let n = unsafe { libc::write(f, data.as_ptr().cast(), data.len()) };
            assert_eq!(n as usize, data.len());
            unsafe { libc::close(f) };
        }
    }
    let rc = unsafe { libc::symlinkat(c(b"file.txt").as_ptr(), fd, c(b"link").as_ptr()) };
    assert_eq!(rc, 0, "symlinkat: {}", std::io::Error::last_os_error());
    unsafe { libc::close(fd) };
    depth
}

/// Everything under `root` (walked with descriptors): relative path →
/// (kind and mode, size, mtime, content or link target).
fn fd_tree(root: &Path) -> BTreeMap<Vec<u8>, (u32, i64, i64, Vec<u8>)> {
    fn walk(dir: libc::c_int, rel: &[u8], out: &mut BTreeMap<Vec<u8>, (u32, i64, i64, Vec<u8>)>) {
        let d = unsafe { libc::fdopendir(libc::dup(dir)) };
        assert!(!d.is_null());
        let mut names = Vec::new();
        loop {
            let e = unsafe { libc::readdir(d) };
            if e.is_null() {
                break;
            }
            let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) }
                .to_bytes()
                .to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        unsafe { libc::closedir(d) };
        for name in names {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::fstatat(dir, c(&name).as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
            };
            assert_eq!(rc, 0);
            let mut p = rel.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&name);
            let kind = st.st_mode & libc::S_IFMT;
            let mut body = Vec::new();
            if kind == libc::S_IFREG {
                let f = openat(dir, &name, libc::O_RDONLY, 0);
                let mut buf = [0u8; 4096];
                loop {
                    let n = unsafe { libc::read(f, buf.as_mut_ptr().cast(), buf.len()) };
                    assert!(n >= 0);
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..n as usize]);
                }
                unsafe { libc::close(f) };
            } else if kind == libc::S_IFLNK {
                let mut buf = [0u8; 4096];
                let n = unsafe {
                    libc::readlinkat(dir, c(&name).as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                };
                assert!(n >= 0);
                body.extend_from_slice(&buf[..n as usize]);
            }
            let mtime = if kind == libc::S_IFLNK {
                0
            } else {
                st.st_mtime
            };
            // A directory's size is the file system's business.
            let size = if kind == libc::S_IFDIR { 0 } else { st.st_size };
            out.insert(p.clone(), (st.st_mode, size, mtime, body));
            if kind == libc::S_IFDIR {
                let sub = openat(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0);
                walk(sub, &p, out);
                unsafe { libc::close(sub) };
            }
        }
    }
    let fd = openat(
        libc::AT_FDCWD,
        root.as_os_str().as_encoded_bytes(),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    );
    let mut out = BTreeMap::new();
    walk(fd, b"", &mut out);
    unsafe { libc::close(fd) };
    out
}

#[test]
fn paths_longer_than_path_max_are_backed_up_and_restored() {
    let env = Env::new();
    let src = env.src();
    fs::write(src.join("top.txt"), b"top\n").unwrap();
    let depth = deep_tree(&src, 40, 200);
    assert!(depth > 8000, "{depth}");
    let want = fd_tree(&src);
    assert_eq!(want.len(), 1 + 40 + 8 + 1, "{}", want.len());

    let o = env
        .dupr()
        .args(["full", "--no-encryption", "--detailed-exit-codes"])
        .arg(&src)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let listing = env
        .dupr()
        .args(["list-current-files", "--no-encryption"])
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", text(&listing));
    let listed = parse_listing(&listing.stdout);
    for p in want.keys() {
        assert!(listed.contains(p), "not in the backup: {} bytes", p.len());
    }

    let dest = env.restore_dir("r");
    let o = restore(&env, &dest, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let got = fd_tree(&dest);
    assert_eq!(got.len(), want.len());
    for (p, w) in &want {
        assert_eq!(got.get(p), Some(w), "differs at {} bytes deep", p.len());
    }

    // Restoring again with --force over the deep tree works the same.
    let o = restore(&env, &dest, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fd_tree(&dest), want);
}
