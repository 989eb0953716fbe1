//! Shared helpers for dupr's integration tests (`mod common;`).
//!
//! * [`dupr`] / [`Env`]: run the `dupr` binary in an isolated temp layout.
//! * [`Dup`], [`duplicity`], [`run_duplicity`]: run the stock reference
//!   duplicitys (0.8.22 from Debian, 3.2.1 from PyPI), as installed by
//!   `scripts/install-test-deps`. A missing reference binary is a test
//!   failure, never a silent skip.
//! * [`make_tricky_tree`], [`assert_same_tree`], [`tree_paths`]: a source tree
//!   with every file type and awkward name duplicity handles, and a strict
//!   comparison of two trees.
#![allow(dead_code)]

pub mod interop;
pub mod servers;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// ------------------------------------------------------------------- dupr

/// Environment variables that must not leak from the developer's shell into
/// a test run of dupr or duplicity (they change behaviour or supply secrets).
pub const SCRUBBED_ENV: &[&str] = &[
    "PASSPHRASE",
    "SIGN_PASSPHRASE",
    "FTP_PASSWORD",
    "GNUPGHOME",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
];

/// The `dupr` binary under test, with secrets/behaviour-changing variables
/// from the outer environment removed and a fixed locale. Where its cache goes
/// (`XDG_CACHE_HOME` / `--archive-dir`) is the caller's business; see
/// [`Env::dupr`] for a fully isolated one.
pub fn dupr() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("dupr").expect("dupr binary is built by cargo test");
    for v in SCRUBBED_ENV {
        c.env_remove(v);
    }
    c.env("LC_ALL", "C.UTF-8");
    c
}

/// A per-test temporary directory with a conventional layout:
/// `src/` (created), `target/` (backup destination, not created),
/// `cache/` (created; dupr's XDG cache / duplicity's archive dir),
/// `restore-<name>/` (not created: duplicity refuses an existing target).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("dupr-test-")
            .tempdir()
            .expect("create temp dir");
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::create_dir(dir.path().join("cache")).unwrap();
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The source tree directory (exists, empty).
    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    /// The backup destination directory (not created).
    pub fn target(&self) -> PathBuf {
        self.dir.path().join("target")
    }

    /// `file://` URL of [`Env::target`].
    pub fn target_url(&self) -> String {
        file_url(&self.target())
    }

    /// Cache directory (exists). Use as `XDG_CACHE_HOME` for dupr.
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// An archive dir (`--archive-dir`) for one reference duplicity, kept
    /// apart from dupr's cache so the two never share state by accident.
    pub fn archive_dir(&self, v: Dup) -> PathBuf {
        let p = self.dir.path().join(format!("archive-{}", v.label()));
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Where to restore to (not created).
    pub fn restore_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("restore-{name}"))
    }

    /// [`dupr`] with `XDG_CACHE_HOME` pointing at [`Env::cache`] and the
    /// working directory in the temp dir.
    pub fn dupr(&self) -> assert_cmd::Command {
        let mut c = dupr();
        c.env("XDG_CACHE_HOME", self.cache());
        c.current_dir(self.dir.path());
        c
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// `file://` URL for an absolute (or made-absolute) local path.
pub fn file_url(path: &Path) -> String {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap().join(path)
    };
    format!(
        "file://{}",
        abs.to_str().expect("test paths for URLs must be UTF-8")
    )
}

// --------------------------------------------------------- reference duplicity

/// One of the two stock duplicity versions dupr must be compatible with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dup {
    /// Debian bookworm's duplicity 0.8.22 (`DUPR_DUPLICITY08`, default `/usr/bin/duplicity`).
    V08,
    /// PyPI duplicity 3.2.1 in a venv (`DUPR_DUPLICITY3`, default
    /// `${DUPR_TEST_CACHE:-$HOME/.cache/dupr-test}/venv-duplicity-3.2.1/bin/duplicity`).
    V3,
}

impl Dup {
    pub const ALL: [Dup; 2] = [Dup::V08, Dup::V3];

    pub fn label(self) -> &'static str {
        match self {
            Dup::V08 => "0.8.22",
            Dup::V3 => "3.2.1",
        }
    }

    /// Path of this version's `duplicity` executable (may not exist).
    pub fn bin(self) -> PathBuf {
        match self {
            Dup::V08 => std::env::var_os("DUPR_DUPLICITY08")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/bin/duplicity")),
            Dup::V3 => std::env::var_os("DUPR_DUPLICITY3")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let cache = std::env::var_os("DUPR_TEST_CACHE")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| {
                            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                                .join(".cache/dupr-test")
                        });
                    cache.join("venv-duplicity-3.2.1/bin/duplicity")
                }),
        }
    }
}

/// A `Command` for the reference duplicity `v`, with a clean environment:
/// no secrets from the outer shell, `PYTHONWARNINGS=ignore`, `LC_ALL=C.UTF-8`.
/// Callers must pass `--archive-dir` (e.g. [`Env::archive_dir`]) so the
/// user's real cache is never touched.
///
/// Panics (never skips) if the binary is missing.
pub fn duplicity(v: Dup) -> Command {
    let bin = v.bin();
    if !bin.is_file() {
        panic!(
            "reference duplicity {} not found at {} — run scripts/install-test-deps \
             (or scripts/test, which runs it and sets DUPR_DUPLICITY08 / DUPR_DUPLICITY3)",
            v.label(),
            bin.display()
        );
    }
    let mut c = Command::new(&bin);
    for var in SCRUBBED_ENV {
        c.env_remove(var);
    }
    c.env("PYTHONWARNINGS", "ignore");
    c.env("LC_ALL", "C.UTF-8");
    c
}

/// Run duplicity `v` with `args` and extra `env`, without checking the exit status.
pub fn try_duplicity<I, S>(v: Dup, args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = duplicity(v);
    c.args(args);
    for (k, val) in env {
        c.env(k, val);
    }
    c.output()
        .unwrap_or_else(|e| panic!("cannot run duplicity {}: {e}", v.label()))
}

/// Run duplicity `v` with `args` and extra `env`; panic with the full command,
/// exit status, stdout and stderr unless it succeeds.
pub fn run_duplicity<I, S>(v: Dup, args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let out = try_duplicity(v, &args, env);
    if !out.status.success() {
        panic!(
            "duplicity {} failed ({}): {} {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            v.label(),
            out.status,
            v.bin().display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

// ------------------------------------------------------------- tricky tree

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn check(rc: libc::c_int, what: &str, p: &Path) {
    if rc != 0 {
        panic!(
            "{what} {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }
}

pub fn mkfifo(p: &Path, mode: u32) {
    let c = cpath(p);
    check(
        unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) },
        "mkfifo",
        p,
    );
}

pub fn mknod_char(p: &Path, mode: u32, major: u32, minor: u32) {
    let c = cpath(p);
    let dev = libc::makedev(major, minor);
    check(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | mode as libc::mode_t, dev) },
        "mknod",
        p,
    );
}

/// Set atime and mtime (whole seconds) without following a final symlink.
pub fn set_mtime(p: &Path, secs: i64) {
    let c = cpath(p);
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    check(
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        "utimensat",
        p,
    );
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Deterministic pseudo-random bytes (xorshift64*), same for the same seed.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_file(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

/// Fill `root` (created if needed) with every kind of entry duplicity handles:
///
/// * regular files: small text, exactly 65536 bytes (the chunk size), 200000
///   bytes, `big_file_bytes` pseudo-random bytes (fixed seed), an empty file,
///   a sparse file (1 MiB hole then data);
/// * directories: nested, an empty one, a sticky 01777 one;
/// * symlinks: relative, absolute, dangling, to a directory;
/// * a fifo; a char device 1,3 (like /dev/null) only when running as root;
/// * a hard-link pair;
/// * modes 04755 (setuid), 0600, 0444, 01777 (dir);
/// * names: non-UTF-8 (0xFF), with a newline, with spaces/quotes/backslash,
///   unicode, a 150-byte component (> tar's 100-byte name field) and a
///   relative path of ~300 bytes through nested directories;
/// * fixed mtimes on everything (1700000000 + i in sorted path order; set on
///   contents before their directories).
pub fn make_tricky_tree(root: &Path, big_file_bytes: usize) {
    fs::create_dir_all(root).unwrap();
    let r = |rel: &str| root.join(rel);

    // Regular files.
    write_file(&r("hello.txt"), b"hello, dupr\nsecond line\n");
    write_file(&r("exact-64k.bin"), &pseudo_random_bytes(65536, 1));
    write_file(&r("200000.bin"), &pseudo_random_bytes(200_000, 2));
    write_file(
        &r("big.bin"),
        &pseudo_random_bytes(big_file_bytes, 0x5EED_D0B1),
    );
    write_file(&r("empty"), b"");
    {
        let mut f = File::create(r("sparse")).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"data after a 1 MiB hole\n").unwrap();
    }

    // Directories.
    fs::create_dir_all(r("dir/sub/subsub")).unwrap();
    write_file(&r("dir/a.txt"), b"a\n");
    write_file(&r("dir/sub/b.txt"), b"b\n");
    write_file(&r("dir/sub/subsub/c.txt"), &pseudo_random_bytes(3000, 3));
    fs::create_dir(r("empty-dir")).unwrap();
    fs::create_dir(r("sticky")).unwrap();
    write_file(&r("sticky/inside"), b"in a sticky dir\n");

    // Symlinks.
    symlink("hello.txt", r("link-rel")).unwrap();
    symlink("/etc/hostname", r("link-abs")).unwrap();
    symlink("does/not/exist", r("link-dangling")).unwrap();
    symlink("dir/sub", r("link-dir")).unwrap();
    symlink("../hello.txt", r("dir/link-up")).unwrap();

    // Special files.
    mkfifo(&r("fifo"), 0o644);
    if is_root() {
        mknod_char(&r("chardev"), 0o644, 1, 3);
    }

    // Hard-link pair.
    write_file(&r("hardlink-1"), b"shared by two names\n");
    fs::hard_link(r("hardlink-1"), r("hardlink-2")).unwrap();

    // Permissions (after content, so writes don't clear setuid).
    write_file(&r("setuid"), b"#!/bin/sh\nexit 0\n");
    chmod(&r("setuid"), 0o4755);
    write_file(&r("private-0600"), b"secret\n");
    chmod(&r("private-0600"), 0o600);
    write_file(&r("readonly-0444"), b"read only\n");
    chmod(&r("readonly-0444"), 0o444);
    chmod(&r("sticky"), 0o1777);

    // Awkward names.
    write_file(
        &root.join(os(b"non-utf8-\xff-name")),
        b"latin1 byte 0xff in name\n",
    );
    write_file(&r("new\nline"), b"newline in name\n");
    write_file(&r("sp ace 'single' \"double\" back\\slash"), b"quotes\n");
    write_file(&r("unicodé-名前-🦀.txt"), "unicode name\n".as_bytes());
    let long_component = "L".repeat(150);
    write_file(&r(&long_component), b"150-byte name\n");
    let mut deep = root.to_path_buf();
    for i in 0..4 {
        deep.push(format!("{i}-{}", "d".repeat(60)));
    }
    fs::create_dir_all(&deep).unwrap();
    write_file(
        &deep.join(format!("deep-{}.txt", "f".repeat(40))),
        b"a path of ~300 bytes\n",
    );

    // Fixed mtimes, children before parents (deepest first), root last.
    let mut all: Vec<Vec<u8>> = tree_paths(root).into_iter().collect();
    let index: BTreeMap<Vec<u8>, i64> = all
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), i as i64))
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
    for rel in &all {
        set_mtime(&root.join(os(rel)), 1_700_000_000 + index[rel]);
    }
    set_mtime(root, 1_699_999_999);
}

// ------------------------------------------------------------ comparison

/// Every entry under `root` (not `root` itself), as raw relative path bytes
/// (`a/b/c`), without following symlinks.
pub fn tree_paths(root: &Path) -> BTreeSet<Vec<u8>> {
    fn walk(root: &Path, rel: &[u8], out: &mut BTreeSet<Vec<u8>>) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(rel))
        };
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let e = e.unwrap();
            let mut p = rel.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(e.file_name().as_bytes());
            let is_dir = e.file_type().unwrap().is_dir();
            out.insert(p.clone());
            if is_dir {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, b"", &mut out);
    out
}

fn kind(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

/// First differing byte offset of two files' contents, or None if equal.
fn first_content_diff(a: &Path, b: &Path) -> Option<String> {
    let mut fa = File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if let Some(i) = ba[..na.min(nb)]
            .iter()
            .zip(&bb[..na.min(nb)])
            .position(|(x, y)| x != y)
        {
            return Some(format!("content differs at byte {}", off + i as u64));
        }
        if na != nb {
            return Some(format!(
                "content length differs after byte {}",
                off + na.min(nb) as u64
            ));
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Differences between one entry `rel` in two trees (empty = same).
fn entry_diffs(a: &Path, b: &Path, rel: &str, out: &mut Vec<String>) {
    let ma = fs::symlink_metadata(a).unwrap();
    let mb = fs::symlink_metadata(b).unwrap();
    let (ka, kb) = (kind(&ma.file_type()), kind(&mb.file_type()));
    if ka != kb {
        out.push(format!("{rel}: type {ka} vs {kb}"));
        return;
    }
    if ka != "symlink" && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        out.push(format!(
            "{rel}: mode {:04o} vs {:04o}",
            ma.mode() & 0o7777,
            mb.mode() & 0o7777
        ));
    }
    match ka {
        "file" => {
            if ma.len() != mb.len() {
                out.push(format!("{rel}: size {} vs {}", ma.len(), mb.len()));
            } else if let Some(d) = first_content_diff(a, b) {
                out.push(format!("{rel}: {d}"));
            }
        }
        "symlink" => {
            let (ta, tb) = (fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
            if ta != tb {
                out.push(format!("{rel}: symlink target {ta:?} vs {tb:?}"));
            }
        }
        "chardev" | "blockdev" if ma.rdev() != mb.rdev() => {
            let (x, y) = (ma.rdev(), mb.rdev());
            out.push(format!(
                "{rel}: device {},{} vs {},{}",
                libc::major(x),
                libc::minor(x),
                libc::major(y),
                libc::minor(y)
            ));
        }
        _ => {}
    }
    // duplicity does not restore symlink times (lutimes), so they are not compared.
    if ka != "symlink" && ma.mtime() != mb.mtime() {
        out.push(format!("{rel}: mtime {} vs {}", ma.mtime(), mb.mtime()));
    }
}

/// All differences between trees `a` and `b` (empty = same). See [`assert_same_tree`].
pub fn tree_diffs(a: &Path, b: &Path) -> Vec<String> {
    let (pa, pb) = (tree_paths(a), tree_paths(b));
    let mut out = Vec::new();
    for p in pa.difference(&pb) {
        out.push(format!(
            "only in {}: {}",
            a.display(),
            String::from_utf8_lossy(p).escape_debug()
        ));
    }
    for p in pb.difference(&pa) {
        out.push(format!(
            "only in {}: {}",
            b.display(),
            String::from_utf8_lossy(p).escape_debug()
        ));
    }
    entry_diffs(a, b, ".", &mut out);
    for p in pa.intersection(&pb) {
        let rel = String::from_utf8_lossy(p).escape_debug().to_string();
        entry_diffs(
            &a.join(OsStr::from_bytes(p)),
            &b.join(OsStr::from_bytes(p)),
            &rel,
            &mut out,
        );
    }
    out
}

/// Assert that trees `a` and `b` hold the same entries (relative paths as raw
/// bytes, `a` itself included as `.`), with the same type, permission bits
/// (`mode & 0o7777`), regular-file contents, symlink targets, device numbers
/// and integer mtimes (except symlinks'). Panics listing the first 20
/// differences.
///
/// Deliberately not compared, because duplicity does not promise them:
/// * hard links: duplicity stores each name as a separate regular file, so a
///   restored hard-link pair is two independent files with the same content
///   (link count and inode identity differ);
/// * sparseness: holes come back as written zeros (the content is equal);
/// * symlink mtimes: duplicity never sets them;
/// * atime, ctime, sub-second mtime (duplicity keeps whole seconds);
/// * owner/group (only meaningful as root; compare separately if needed).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let diffs = tree_diffs(a, b);
    if !diffs.is_empty() {
        let n = diffs.len();
        let shown: Vec<&str> = diffs.iter().take(20).map(|s| s.as_str()).collect();
        panic!(
            "trees differ: {} vs {} ({n} difference{}{}):\n  {}",
            a.display(),
            b.display(),
            if n == 1 { "" } else { "s" },
            if n > 20 { ", first 20 shown" } else { "" },
            shown.join("\n  ")
        );
    }
}

// ------------------------------------------------- archive inspection (tests)

/// Path of the built `dupr` executable (for wrapping it in another command,
/// e.g. `setpriv`).
pub fn dupr_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("dupr")
}

/// Volume files (`*.volN.difftar*`) of the full set in `target`, sorted by N.
/// Panics unless there is exactly one full set.
pub fn full_volumes(target: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    let mut times = BTreeSet::new();
    for e in fs::read_dir(target).unwrap_or_else(|e| panic!("read_dir {}: {e}", target.display())) {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("duplicity-full.") else {
            continue;
        };
        let Some((time, rest)) = rest.split_once(".vol") else {
            continue;
        };
        let Some((n, _)) = rest.split_once(".difftar") else {
            continue;
        };
        times.insert(time.to_string());
        out.push((n.parse::<u32>().unwrap(), target.join(&name)));
    }
    assert_eq!(
        times.len(),
        1,
        "expected one full set in {}",
        target.display()
    );
    out.sort();
    out
}

/// The full set's manifest file in `target` (exactly one).
pub fn full_manifest(target: &Path) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("duplicity-full.") && n.contains(".manifest")
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one full manifest: {found:?}");
    found.into_iter().next().unwrap()
}

/// Undo the manifest quoting (`"..."` with `\xNN` escapes); raw otherwise.
pub fn manifest_unquote(s: &[u8]) -> Vec<u8> {
    if s.len() < 2 || s[0] != b'"' || s[s.len() - 1] != b'"' {
        return s.to_vec();
    }
    let inner = &s[1..s.len() - 1];
    let mut out = Vec::new();
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && i + 3 < inner.len() && inner[i + 1] == b'x' {
            let hex = std::str::from_utf8(&inner[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(inner[i]);
            i += 1;
        }
    }
    out
}

/// A path index as duplicity compares it: components; the root `.` is `[]`.
pub fn index_of(path: &[u8]) -> Vec<Vec<u8>> {
    if path == b"." || path.is_empty() {
        return Vec::new();
    }
    path.split(|&b| b == b'/').map(|c| c.to_vec()).collect()
}

/// One `Volume N:` record of a manifest.
#[derive(Debug, Clone)]
pub struct ManifestVolume {
    pub num: u32,
    pub start: Vec<Vec<u8>>,
    pub start_block: Option<u64>,
    pub end: Vec<Vec<u8>>,
    pub end_block: Option<u64>,
    pub sha1: String,
}

impl ManifestVolume {
    /// duplicity's rule for "this volume is needed to restore `path`":
    /// `start[:len(p)] <= p <= end` (tuple comparison).
    pub fn needed_for(&self, path: &[u8]) -> bool {
        let p = index_of(path);
        let n = p.len().min(self.start.len());
        self.start[..n] <= p[..] && p <= self.end
    }
}

/// Parse the volume records of a manifest (format reference section 4).
pub fn parse_manifest(text: &[u8]) -> Vec<ManifestVolume> {
    let mut vols: Vec<ManifestVolume> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let trimmed: &[u8] = {
            let s = line
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(line.len());
            &line[s..]
        };
        if let Some(rest) = trimmed.strip_prefix(b"Volume ") {
            let n = std::str::from_utf8(rest).unwrap().trim_end_matches(':');
            vols.push(ManifestVolume {
                num: n.parse().unwrap(),
                start: Vec::new(),
                start_block: None,
                end: Vec::new(),
                end_block: None,
                sha1: String::new(),
            });
            continue;
        }
        let Some(v) = vols.last_mut() else { continue };
        let words: Vec<&[u8]> = trimmed
            .split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .collect();
        let path_and_block = |w: &[&[u8]]| {
            let idx = index_of(&manifest_unquote(w[1]));
            let block = w
                .get(2)
                .map(|b| std::str::from_utf8(b).unwrap().parse::<u64>().unwrap());
            (idx, block)
        };
        match words.first().copied() {
            Some(b"StartingPath") => (v.start, v.start_block) = path_and_block(&words),
            Some(b"EndingPath") => (v.end, v.end_block) = path_and_block(&words),
            Some(b"Hash") => v.sha1 = String::from_utf8(words[2].to_vec()).unwrap(),
            _ => {}
        }
    }
    vols
}

/// Paths printed by `list-current-files` (dupr's or duplicity's): records are
/// `<24-char ctime date> <path>`; a path containing a newline continues on
/// the following line(s). Other chatter (duplicity's "Synchronizing...",
/// "Last full backup date: ...", "Duplicity backup complete.") is skipped.
pub fn parse_listing(stdout: &[u8]) -> BTreeSet<Vec<u8>> {
    fn is_record(l: &[u8]) -> bool {
        const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
        l.len() > 25
            && DAYS.contains(&&l[..3])
            && l[3] == b' '
            && l[7] == b' '
            && l[10] == b' '
            && l[13] == b':'
            && l[16] == b':'
            && l[19] == b' '
            && l[20..24].iter().all(u8::is_ascii_digit)
            && l[24] == b' '
    }
    let chatter: &[&[u8]] = &[b"Duplicity backup complete.", b""];
    let mut recs: Vec<Vec<u8>> = Vec::new();
    for line in stdout.split(|&b| b == b'\n') {
        if is_record(line) {
            recs.push(line[25..].to_vec());
        } else if let Some(last) = recs.last_mut() {
            if !chatter.contains(&line) {
                last.push(b'\n');
                last.extend_from_slice(line);
            }
        }
    }
    recs.into_iter().collect()
}

/// `tree_paths(root)` plus the root itself as `.`: what list-current-files prints.
pub fn listing_of_tree(root: &Path) -> BTreeSet<Vec<u8>> {
    let mut s = tree_paths(root);
    s.insert(b".".to_vec());
    s
}

/// Lowercase hex SHA-1 of a file (via `sha1sum`).
pub fn sha1_file(p: &Path) -> String {
    let out = Command::new("sha1sum")
        .arg(p)
        .output()
        .expect("run sha1sum");
    assert!(out.status.success(), "sha1sum {} failed", p.display());
    String::from_utf8_lossy(&out.stdout)[..40].to_string()
}

/// Flip every bit of the byte in the middle of file `p`.
pub fn flip_middle_byte(p: &Path) {
    let mut data = fs::read(p).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(p, data).unwrap();
}

/// Lossy text of a byte string, for messages.
pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `std::process::Command` running `dupr` like [`Env::dupr`], but unable to
/// bypass file permissions even as root: when run as root it goes through
/// `setpriv` with `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` removed from
/// the bounding set (so a `chmod 000` file owned by root is unreadable).
/// Returns None if that cannot be arranged here (root without a working
/// `setpriv`), after checking that the trick really denies access.
pub fn dupr_without_dac_override(env: &Env) -> Option<Command> {
    const DROP: [&str; 3] = [
        "--bounding-set",
        "-dac_override,-dac_read_search",
        "--inh-caps=-all",
    ];
    let mut c = if is_root() {
        // Probe: can a capability-less root read a mode-000 file?
        let probe = env.path().join(".dac-probe");
        fs::write(&probe, b"x").unwrap();
        chmod(&probe, 0o000);
        let denied = Command::new("setpriv")
            .args(DROP)
            .arg("cat")
            .arg(&probe)
            .output()
            .map(|o| o.status.code() == Some(1) && o.stdout.is_empty())
            .unwrap_or(false);
        fs::remove_file(&probe).unwrap();
        if !denied {
            return None;
        }
        let mut c = Command::new("setpriv");
        c.args(DROP).arg(dupr_bin());
        c
    } else {
        Command::new(dupr_bin())
    };
    for v in SCRUBBED_ENV {
        c.env_remove(v);
    }
    c.env("LC_ALL", "C.UTF-8");
    c.env("XDG_CACHE_HOME", env.cache());
    c.current_dir(env.path());
    Some(c)
}

/// A private GNUPGHOME (mode 700) for a test; the gpg-agent started for it
/// is stopped when it is dropped.
pub struct GpgHome(PathBuf);

impl GpgHome {
    /// `<dir>/gnupg`, created.
    pub fn new(dir: &Path) -> GpgHome {
        let p = dir.join("gnupg");
        fs::create_dir(&p).unwrap();
        chmod(&p, 0o700);
        GpgHome(p)
    }
}

impl std::ops::Deref for GpgHome {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<OsStr> for GpgHome {
    fn as_ref(&self) -> &OsStr {
        self.0.as_os_str()
    }
}

impl AsRef<Path> for GpgHome {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--kill", "gpg-agent"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A command's exit status and both streams, for assertion messages.
pub fn out_text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        lossy(&o.stdout),
        lossy(&o.stderr)
    )
}
