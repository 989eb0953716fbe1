//! Crash tests: the real `dupr` binary killed with SIGKILL at chosen moments,
//! then run again with the same command (issue 7, item 5).
//!
//! 1. Kill points (`crash_points_*`): four groups of seeded, deterministic
//!    points (27 in all) on trees of ~65 MB (1.4k small files, big multi-volume
//!    files, the harness's tricky tree), full, incremental and automatic
//!    backups, `--volsize 2..5`, encrypted (PASSPHRASE) and `--no-encryption`.
//!    Triggers are observed, not timed: the N-th volume begun / stored / half
//!    written, N records in `.manifest.part`, the signature file being written
//!    or stored, the walk started; plus a few seeded delays. The exact
//!    moments (between volumes, after the last volume but before the
//!    signatures, after the signatures but before the manifest) are reached
//!    by a FIFO put where dupr is about to create its staged file: its
//!    `open()` blocks there (seen in `/proc/PID/task/*/wchan`) until the kill.
//!    Between the kill and the next run the source is sometimes changed,
//!    before or after the end of the stored volumes, so a resume and a
//!    discard-then-start-over both happen; some points kill the rerun too.
//!    The outcome is predicted from what the kill left (the target, the
//!    partial manifest, the journal) and checked: exit 0, the stderr message
//!    (resuming after volume K / starting over / cannot be resumed), volumes
//!    1..K not rewritten on a resume, collection-status clean with the
//!    expected chains, restore of the latest time == source, `verify
//!    --compare-data` clean, restore of the previous time == the previous
//!    tree, a clean cache, and (every 4th point and the first resume of each
//!    group) stock duplicity 3.2.1 restoring the same tree.
//!    `DUPR_CRASH_SEED` changes the seed; each point prints one summary line
//!    (`cargo test --release -p dupr-cli --test crash -- --nocapture`).
//! 2. `remove-older-than --force` and `cleanup --force` killed after their
//!    first deletions (inotify): collection-status stays consistent, every
//!    chain it lists restores its tree, the same command then completes.
//! 3. Lock: a killed run leaves `lockfile`; the next run is not blocked,
//!    holds the lock (F_GETLK names its pid), and a concurrent dupr on the
//!    same cache exits 23 naming the lock file. (maintenance.rs covers a
//!    lock held by python / a frozen dupr / duplicity; this adds the stale
//!    lockfile of a crash with a live successor.)
//! 4. Reproductions of the bugs found (each test says what goes wrong):
//!    an incremental killed after storing its signatures is not resumed;
//!    entries gone from the end of the stored volumes go unnoticed on
//!    resume; a wrong passphrase is sometimes taken after a kill; volumes
//!    exceed `--volsize`.
//!
//! `bench/soak.py` runs the same kill-and-rerun loop for hundreds of points.

#[path = "it/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PASS: &str = "crash passphrase \u{e4} 9";
const DEFAULT_SEED: u64 = 0x00C0_FFEE_D00D_0007;
const MIB: u64 = 1 << 20;
/// Environment variables that must not leak into a run (as in common).
const SCRUB: &[&str] = &[
    "PASSPHRASE",
    "SIGN_PASSPHRASE",
    "FTP_PASSWORD",
    "GNUPGHOME",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
];

// ------------------------------------------------------------------ rng

/// splitmix64: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn base_seed() -> u64 {
    match std::env::var("DUPR_CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DUPR_CRASH_SEED={s:?} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

fn group_seed(name: &str) -> u64 {
    let mut h = base_seed();
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

// ------------------------------------------------------------------ trees

fn text_bytes(len: usize, salt: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("line {salt} {i}: the quick brown fox jumps over the lazy dog\n").as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// ~65 MB: `a-big.bin` (10 MiB), 16 directories of 90 small files (text and
/// random, 200 B..24 KB), `d07/m-big.bin` (14 MiB), the harness's tricky
/// tree under `m-tricky/`, `q-text.txt` (4 MiB of text), `z-big.bin` (18 MiB)
/// and `zz-tail/` (30 small files, so something follows the big files).
fn build_tree(src: &Path, rng: &mut Rng) {
    let s = rng.next();
    fs::write(
        src.join("a-big.bin"),
        pseudo_random_bytes(10 * MIB as usize, s),
    )
    .unwrap();
    for d in 0..16u64 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..90u64 {
            let len = rng.range(200, 24_000) as usize;
            let data = if f % 3 == 0 {
                pseudo_random_bytes(len, rng.next())
            } else {
                text_bytes(len, d * 1000 + f)
            };
            fs::write(dir.join(format!("f{f:03}.txt")), data).unwrap();
        }
    }
    fs::write(
        src.join("d07/m-big.bin"),
        pseudo_random_bytes(14 * MIB as usize, rng.next()),
    )
    .unwrap();
    make_tricky_tree(&src.join("m-tricky"), MIB as usize);
    fs::write(src.join("q-text.txt"), text_bytes(4 * MIB as usize, 7)).unwrap();
    fs::write(
        src.join("z-big.bin"),
        pseudo_random_bytes(18 * MIB as usize, rng.next()),
    )
    .unwrap();
    fs::create_dir(src.join("zz-tail")).unwrap();
    for f in 0..30u64 {
        let len = rng.range(200, 8_000) as usize;
        fs::write(
            src.join(format!("zz-tail/t{f:02}.txt")),
            text_bytes(len, 90_000 + f),
        )
        .unwrap();
    }
}

/// Regular files that may be changed (not the tricky tree: its hard links
/// and modes are there to be restored, not edited).
fn editable_files(src: &Path) -> Vec<Vec<u8>> {
    tree_paths(src)
        .into_iter()
        .filter(|p| !p.starts_with(b"m-tricky"))
        .filter(|p| {
            fs::symlink_metadata(src.join(OsStr::from_bytes(p)))
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .collect()
}

fn small_files(src: &Path) -> Vec<Vec<u8>> {
    editable_files(src)
        .into_iter()
        .filter(|p| (p.starts_with(b"d") || p.starts_with(b"zz-")) && p.ends_with(b".txt"))
        .collect()
}

fn p(src: &Path, rel: &[u8]) -> PathBuf {
    src.join(OsStr::from_bytes(rel))
}

fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(data).unwrap();
}

/// Move a file's mtime 3 s on (in place: the directory's mtime stays).
fn touch(path: &Path) {
    let m = fs::metadata(path).unwrap();
    set_mtime(path, m.mtime() + 3);
}

/// Change the tree for the next backup; returns about how many bytes an
/// incremental will have to store. `big`: add a new multi-volume file and
/// rewrite part of `z-big.bin`.
fn evolve(src: &Path, rng: &mut Rng, step: u32, big: bool) -> u64 {
    let mut bytes = 0;
    if big {
        let d = rng.below(16);
        let n = rng.range(4, 9) * MIB;
        fs::write(
            src.join(format!("d{d:02}/new-{step:02}.bin")),
            pseudo_random_bytes(n as usize, rng.next()),
        )
        .unwrap();
        bytes += n;
        // Rewrite a region of z-big.bin in place (a delta).
        let len = rng.range(1, 3) * MIB;
        let off = rng.below(15 * MIB);
        let mut f = OpenOptions::new()
            .write(true)
            .open(src.join("z-big.bin"))
            .unwrap();
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&pseudo_random_bytes(len as usize, rng.next()))
            .unwrap();
        bytes += len + MIB / 4;
    }
    // Bound the growth: drop the new file of two steps ago.
    if step >= 2 {
        for e in editable_files(src) {
            if e.ends_with(format!("new-{:02}.bin", step - 2).as_bytes()) {
                fs::remove_file(p(src, &e)).unwrap();
            }
        }
    }
    let small = small_files(src);
    for _ in 0..4 {
        let f = rng.pick(&small);
        append(&p(src, f), format!("appended at step {step}\n").as_bytes());
    }
    for _ in 0..2 {
        let f = rng.pick(&small).clone();
        touch(&p(src, &f));
    }
    for _ in 0..2 {
        let f = rng.pick(&small).clone();
        let _ = fs::remove_file(p(src, &f));
    }
    let d = rng.below(16);
    for i in 0..6 {
        let len = rng.range(100, 30_000) as usize;
        fs::write(
            src.join(format!("d{d:02}/added-{step:02}-{i}.txt")),
            text_bytes(len, step as u64 * 100 + i),
        )
        .unwrap();
        bytes += len as u64;
    }
    bytes + 200_000
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

// ------------------------------------------------------------------ archive

/// One target with its source tree and dupr's cache (`--archive-dir A
/// --name crash`, so the cache dir is known before the first run).
struct Archive {
    env: Env,
    enc: bool,
    gnupg: GpgHome,
}

impl Archive {
    fn new(enc: bool) -> Archive {
        let env = Env::new();
        let gnupg = GpgHome::new(env.path());
        Archive { env, enc, gnupg }
    }

    fn src(&self) -> PathBuf {
        self.env.src()
    }
    fn target(&self) -> PathBuf {
        self.env.target()
    }
    fn url(&self) -> String {
        self.env.target_url()
    }
    fn archive_root(&self) -> PathBuf {
        self.env.path().join("ad")
    }
    fn cache_dir(&self) -> PathBuf {
        self.archive_root().join("crash")
    }
    fn vol_ext(&self) -> &'static str {
        if self.enc {
            "gpg"
        } else {
            "gz"
        }
    }

    /// `dupr` with a clean environment, the passphrase or
    /// `--no-encryption`, and the fixed cache dir.
    fn cmd(&self) -> Command {
        self.cmd_with(self.archive_root().as_path(), Some(PASS))
    }

    /// [`Archive::cmd`] with another archive dir and passphrase.
    fn cmd_with(&self, archive_root: &Path, pass: Option<&str>) -> Command {
        let mut c = Command::new(dupr_bin());
        for v in SCRUB {
            c.env_remove(v);
        }
        c.env("LC_ALL", "C.UTF-8").current_dir(self.env.path());
        match (self.enc, pass) {
            (true, Some(p)) => {
                c.env("PASSPHRASE", p);
            }
            (true, None) => {}
            (false, _) => {
                c.arg("--no-encryption");
            }
        }
        c.arg("--archive-dir")
            .arg(archive_root)
            .arg("--name")
            .arg("crash");
        c
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn run_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let o = self.run(args);
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        assert!(
            o.status.success(),
            "dupr {} failed: {}",
            shown.join(" "),
            out_text(&o)
        );
        o
    }

    fn backup_args(&self, cmd: Cmd, volsize: u64) -> Vec<OsString> {
        let mut a: Vec<OsString> = cmd.words().iter().map(OsString::from).collect();
        a.extend([
            "--volsize".into(),
            volsize.to_string().into(),
            "--no-print-statistics".into(),
            self.src().into(),
            self.url().into(),
        ]);
        a
    }

    fn restore(&self, time: Option<&str>, dest: &Path) {
        let mut a: Vec<OsString> = vec!["restore".into()];
        if let Some(t) = time {
            a.extend(["-t".into(), t.into()]);
        }
        a.extend([self.url().into(), dest.into()]);
        self.run_ok(&a);
    }

    /// Stock duplicity 3.2.1 restores the latest state into `dest`.
    fn dup_restore(&self, dest: &Path, tag: &str) {
        let ad = self.env.path().join(format!("dup-archive-{tag}"));
        fs::create_dir_all(&ad).unwrap();
        let mut args: Vec<OsString> = vec!["restore".into()];
        if !self.enc {
            args.push("--no-encryption".into());
        }
        args.extend([
            "--archive-dir".into(),
            ad.clone().into(),
            self.url().into(),
            dest.into(),
        ]);
        let mut env = vec![("GNUPGHOME", self.gnupg.to_str().unwrap())];
        if self.enc {
            env.push(("PASSPHRASE", PASS));
        }
        run_duplicity(Dup::V3, &args, &env);
        let _ = fs::remove_dir_all(&ad);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Full,
    Incr,
    /// No command word: incremental when a chain exists, else full.
    Auto,
}

impl Cmd {
    fn words(self) -> &'static [&'static str] {
        match self {
            Cmd::Full => &["full"],
            Cmd::Incr => &["incremental"],
            Cmd::Auto => &[],
        }
    }
    fn label(self) -> &'static str {
        match self {
            Cmd::Full => "full",
            Cmd::Incr => "incr",
            Cmd::Auto => "auto",
        }
    }
}

// ------------------------------------------------------------ file names

fn names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// A backup set: `full.T` or `inc.T1.to.T2`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SetKey(String);

impl SetKey {
    fn is_full(&self) -> bool {
        self.0.starts_with("full.")
    }
    fn end(&self) -> &str {
        &self.0[self.0.len() - 16..]
    }
    /// The volume / manifest file prefix (`duplicity-full.T`).
    fn prefix(&self) -> String {
        format!("duplicity-{}", self.0)
    }
    fn vol(&self, n: u32, ext: &str) -> String {
        format!("{}.vol{n}.difftar.{ext}", self.prefix())
    }
    fn sig_prefix(&self) -> String {
        match self.0.strip_prefix("inc.") {
            Some(r) => format!("duplicity-new-signatures.{r}"),
            None => format!("duplicity-full-signatures.{}", &self.0[5..]),
        }
    }
    fn manifest_part(&self) -> String {
        format!("{}.manifest.part", self.prefix())
    }
    fn journal(&self) -> String {
        format!(".dupr-journal.{}.manifest", self.prefix())
    }
}

fn is_time(s: &str) -> bool {
    s.len() == 16 && s.as_bytes()[8] == b'T' && s.ends_with('Z')
}

/// The set a target or cache file name belongs to.
fn set_of(name: &str) -> Option<SetKey> {
    let parts: Vec<&str> = name.split('.').collect();
    let kind = *parts.first()?;
    let full = matches!(kind, "duplicity-full" | "duplicity-full-signatures");
    let inc = matches!(kind, "duplicity-inc" | "duplicity-new-signatures");
    if full && is_time(parts.get(1)?) {
        return Some(SetKey(format!("full.{}", parts[1])));
    }
    if inc && is_time(parts.get(1)?) && *parts.get(2)? == "to" && is_time(parts.get(3)?) {
        return Some(SetKey(format!("inc.{}.to.{}", parts[1], parts[3])));
    }
    None
}

/// Sets whose manifest is on the target.
fn complete_sets(target: &Path) -> BTreeSet<SetKey> {
    names(target)
        .iter()
        .filter(|n| n.starts_with("duplicity-") && n.contains(".manifest"))
        .filter_map(|n| set_of(n))
        .collect()
}

/// Newest set first by end time.
fn newest(sets: impl IntoIterator<Item = SetKey>) -> Option<SetKey> {
    sets.into_iter()
        .max_by(|a, b| a.end().cmp(b.end()).then(a.cmp(b)))
}

// ------------------------------------------------------ partial manifest

/// `(volume number, EndingPath index)` of each complete record.
fn part_records(text: &[u8]) -> Vec<(u32, Vec<Vec<u8>>)> {
    // A record is complete once its Hash line is: cut a torn tail.
    let mut keep = text.len();
    if let Some(last) = find_last(text, b"Volume ") {
        let tail = &text[last..];
        if !(tail.windows(5).any(|w| w == b"Hash ") && tail.ends_with(b"\n")) {
            keep = last;
        }
    }
    parse_manifest(&text[..keep])
        .into_iter()
        .map(|v| (v.num, v.end))
        .collect()
}

fn find_last(h: &[u8], n: &[u8]) -> Option<usize> {
    (0..=h.len().saturating_sub(n.len()))
        .rev()
        .find(|&i| h[i..].starts_with(n) && (i == 0 || h[i - 1] == b'\n'))
}

/// What a killed run left of its set.
#[derive(Debug, Clone)]
struct Left {
    set: SetKey,
    /// Its manifest is on the target: the set is complete.
    complete: bool,
    /// The cache holds its partial manifest.
    part: bool,
    journal: bool,
    /// Volumes 1..=stored are recorded and on the target.
    stored: u32,
    /// EndingPath of volume `stored`.
    until: Option<Vec<Vec<u8>>>,
    sig_stored: bool,
    remote_vols: usize,
}

impl Left {
    fn brief(&self) -> String {
        if self.complete {
            return "set completed".into();
        }
        format!(
            "{} vol(s) on target, {} recorded{}{}{}",
            self.remote_vols,
            self.stored,
            if self.part {
                ""
            } else {
                ", no partial manifest"
            },
            if self.journal { "" } else { ", no journal" },
            if self.sig_stored { ", sigs stored" } else { "" },
        )
    }
}

/// The newest set on the target or in the cache that is not in `known`.
fn inspect(a: &Archive, known: &BTreeSet<SetKey>) -> Option<Left> {
    let target = names(&a.target());
    let cache = names(&a.cache_dir());
    let cands = target
        .iter()
        .filter(|n| n.starts_with("duplicity-"))
        .chain(cache.iter().filter(|n| n.ends_with(".manifest.part")))
        .filter_map(|n| set_of(n))
        .filter(|s| !known.contains(s));
    let set = newest(cands)?;
    let pre = set.prefix();
    let complete = target
        .iter()
        .any(|n| n.starts_with(&format!("{pre}.manifest")));
    let part_text = fs::read(a.cache_dir().join(set.manifest_part())).ok();
    let mut stored = 0;
    let mut until = None;
    if let Some(t) = &part_text {
        for (i, (num, end)) in part_records(t).into_iter().enumerate() {
            if num as usize != i + 1 || !target.contains(&set.vol(num, a.vol_ext())) {
                break;
            }
            stored = num;
            until = Some(end);
        }
    }
    Some(Left {
        complete,
        part: part_text.is_some(),
        journal: cache.contains(&set.journal()),
        stored,
        until,
        sig_stored: target.iter().any(|n| n.starts_with(&set.sig_prefix())),
        remote_vols: target
            .iter()
            .filter(|n| n.starts_with(&format!("{pre}.vol")))
            .count(),
        set,
    })
}

// ------------------------------------------------------------ triggers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trig {
    /// A seeded delay after the start.
    Delay,
    /// The walk started (`.dupr-filelist.PID` appeared in the cache).
    WalkStart,
    /// Volume N begun (its staged file appeared).
    VolTmp,
    /// Volume N half written (its staged file is not empty).
    MidVol,
    /// Volume N stored (its final name appeared).
    VolStored,
    /// The partial manifest has N volume records.
    Records,
    /// The signature file is being written (after the last volume).
    SigWrite,
    /// The signature file is stored.
    SigStored,
    /// The manifest is stored.
    ManifestStored,
    /// Blocked opening volume N's staged file: N-1 stored and recorded.
    FifoVol,
    /// Blocked opening the staged signature file (plain: after the last
    /// volume, before the signatures are uploaded).
    FifoSig,
    /// Blocked opening the staged manifest (signatures stored).
    FifoManifest,
}

#[derive(Clone, Copy, Debug)]
struct Trigger {
    trig: Trig,
    n: u32,
    delay_ms: u64,
}

impl Trigger {
    fn describe(&self) -> String {
        match self.trig {
            Trig::Delay => format!("delay {}ms", self.delay_ms),
            Trig::WalkStart => "walk start".into(),
            Trig::VolTmp => format!("vol {} begun", self.n),
            Trig::MidVol => format!("mid vol {}", self.n),
            Trig::VolStored => format!("vol {} stored", self.n),
            Trig::Records => format!("{} manifest records", self.n),
            Trig::SigWrite => "signature write".into(),
            Trig::SigStored => "signatures stored".into(),
            Trig::ManifestStored => "manifest stored".into(),
            Trig::FifoVol => format!("fifo: opening vol {}", self.n),
            Trig::FifoSig => "fifo: before signature upload".into(),
            Trig::FifoManifest => "fifo: before manifest upload".into(),
        }
    }
}

enum Fired {
    Killed(String),
    Finished(ExitStatus),
}

fn kill9(pid: i32) {
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn signal(pid: i32, sig: libc::c_int) {
    unsafe { libc::kill(pid, sig) };
}

/// Whether a thread of `pid` is blocked opening a FIFO: its wait channel
/// says so, or (where wchan is hidden) it sleeps in openat(2).
fn blocked_on_fifo(pid: i32) -> bool {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    rd.flatten().any(|t| {
        let wchan = fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
        if wchan.contains("wait_for_partner") || wchan.contains("fifo_open") {
            return true;
        }
        let sleeping = fs::read_to_string(t.path().join("stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('S'))
            })
            .unwrap_or(false);
        let in_openat = fs::read_to_string(t.path().join("syscall"))
            .map(|s| s.starts_with(&format!("{} ", libc::SYS_openat)))
            .unwrap_or(false);
        (wchan.is_empty() || wchan.trim() == "0") && sleeping && in_openat
    })
}

fn mkfifo_at(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    unsafe { libc::mkfifo(c.as_ptr(), 0o600) == 0 }
}

fn size_of(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The set the run `pid` is writing: the partial manifest in the cache once
/// its `.dupr-filelist.PID` exists (written right after it).
fn current_set(cache: &Path, pid: i32) -> Option<SetKey> {
    let ns = names(cache);
    if !ns.contains(&format!(".dupr-filelist.{pid}")) {
        return None;
    }
    newest(
        ns.iter()
            .filter(|n| n.ends_with(".manifest.part"))
            .filter_map(|n| set_of(n)),
    )
}

/// Where a FIFO trigger blocks the run writing `set`.
fn fifo_path(a: &Archive, t: &Trigger, set: &SetKey, pid: i32) -> PathBuf {
    let name = match t.trig {
        Trig::FifoVol => set.vol(t.n, a.vol_ext()),
        Trig::FifoSig => format!(
            "{}.sigtar.{}",
            set.sig_prefix(),
            if a.enc { "gpg" } else { "gz" }
        ),
        Trig::FifoManifest => format!(
            "{}.manifest{}",
            set.prefix(),
            if a.enc { ".gpg" } else { "" }
        ),
        _ => unreachable!(),
    };
    a.target().join(format!(".dupr-tmp.{pid}.{name}"))
}

/// Run dupr with `args` and kill it when `t` fires. stderr goes to `log`.
fn run_and_kill(a: &Archive, args: &[OsString], t: &Trigger, log: &Path) -> Fired {
    let target = a.target();
    let cache = a.cache_dir();
    let before = names(&target);
    let mut child: Child = a
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let tmp_pre = format!(".dupr-tmp.{pid}.");
    let start = Instant::now();
    let is_fifo = matches!(t.trig, Trig::FifoVol | Trig::FifoSig | Trig::FifoManifest);
    // (set, path) of the FIFO in place.
    let mut fifo: Option<(SetKey, PathBuf)> = None;
    let fired = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Fired::Finished(st);
        }
        if start.elapsed() > Duration::from_secs(120) {
            kill9(pid);
            let _ = child.wait();
            panic!("dupr ran for 2 minutes under trigger {}", t.describe());
        }
        let now_target = || names(&target);
        let fire: Option<String> = match t.trig {
            Trig::Delay => (start.elapsed() >= Duration::from_millis(t.delay_ms))
                .then(|| format!("after {}ms", start.elapsed().as_millis())),
            Trig::WalkStart => names(&cache)
                .contains(&format!(".dupr-filelist.{pid}"))
                .then(|| "filelist created".into()),
            Trig::VolTmp | Trig::MidVol => {
                let want = format!(".vol{}.difftar", t.n);
                now_target()
                    .iter()
                    .find(|n| n.starts_with(&tmp_pre) && n.contains(&want))
                    .filter(|n| t.trig == Trig::VolTmp || size_of(&target.join(n)) > 0)
                    .map(|n| format!("{n} ({} bytes)", size_of(&target.join(n))))
            }
            Trig::VolStored => {
                let want = format!(".vol{}.difftar", t.n);
                now_target()
                    .iter()
                    .find(|n| {
                        n.starts_with("duplicity-") && n.contains(&want) && !before.contains(*n)
                    })
                    .cloned()
            }
            Trig::Records => current_set(&cache, pid).and_then(|s| {
                let text = fs::read(cache.join(s.manifest_part())).unwrap_or_default();
                let n = part_records(&text).len() as u32;
                (n >= t.n).then(|| format!("{n} records"))
            }),
            Trig::SigWrite => {
                let remote = now_target().into_iter().find(|n| {
                    n.starts_with(&tmp_pre)
                        && n.contains("signatures")
                        && size_of(&target.join(n)) > 0
                });
                let local = names(&cache).into_iter().find(|n| {
                    n.contains(".sigtar.part")
                        && fs::metadata(cache.join(n))
                            .ok()
                            .filter(|m| m.len() > 0)
                            .and_then(|m| m.modified().ok())
                            .is_some_and(|m| m.elapsed().map_or(true, |e| e < start.elapsed()))
                });
                remote.or(local)
            }
            Trig::SigStored => now_target().into_iter().find(|n| {
                n.starts_with("duplicity-") && n.contains("signatures") && !before.contains(n)
            }),
            Trig::ManifestStored => now_target().into_iter().find(|n| {
                n.starts_with("duplicity-") && n.contains(".manifest") && !before.contains(n)
            }),
            Trig::FifoVol | Trig::FifoSig | Trig::FifoManifest => {
                let cur = current_set(&cache, pid);
                let placed = fifo.clone();
                match (placed, cur) {
                    (_, None) => None,
                    (Some((s, path)), Some(c)) if s == c => {
                        blocked_on_fifo(pid).then(|| format!("blocked on {}", path.display()))
                    }
                    (old, Some(c)) => {
                        // (Re)place the FIFO for the set being written.
                        signal(pid, libc::SIGSTOP);
                        if let Some((_, op)) = old {
                            let _ = fs::remove_file(op);
                        }
                        let path = fifo_path(a, t, &c, pid);
                        let passed = t.trig == Trig::FifoVol && {
                            let ns = now_target();
                            (t.n..t.n + 64).any(|k| {
                                let v = c.vol(k, a.vol_ext());
                                ns.contains(&v) || ns.contains(&format!("{tmp_pre}{v}"))
                            })
                        };
                        let made = !passed && mkfifo_at(&path);
                        signal(pid, libc::SIGCONT);
                        if made {
                            fifo = Some((c, path));
                            None
                        } else {
                            Some(format!("missed the fifo at {} (passed)", path.display()))
                        }
                    }
                }
            }
        };
        if let Some(what) = fire {
            kill9(pid);
            let _ = child.wait();
            break Fired::Killed(what);
        }
        if !is_fifo || fifo.is_none() {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    if let Some((_, path)) = fifo {
        // What a crash leaves there is a half-written staged file.
        let _ = fs::remove_file(&path);
        if matches!(fired, Fired::Killed(_)) {
            fs::write(&path, pseudo_random_bytes(3000, 5)).unwrap();
        }
    }
    fired
}

// ------------------------------------------------------------ mutations

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mut {
    None,
    /// Change something the stored volumes hold: the set must start over.
    Early,
    /// Change only what comes after the stored volumes: it must resume.
    Late,
    /// One of the three, seeded.
    Any,
}

/// Apply a change of `class` relative to `until` (the end of the stored
/// volumes); returns its description and whether it touches an entry at or
/// before `until` (None: nothing was changed).
fn mutate(
    src: &Path,
    rng: &mut Rng,
    class: Mut,
    until: Option<&Vec<Vec<u8>>>,
    step: u32,
) -> (String, Option<bool>) {
    let class = match class {
        Mut::Any => *rng.pick(&[Mut::None, Mut::Early, Mut::Late]),
        c => c,
    };
    if class == Mut::None {
        return ("no change".into(), None);
    }
    let early = class == Mut::Early;
    // With nothing stored everything is "after" the stored volumes.
    let le = |ix: &Vec<Vec<u8>>| until.is_some_and(|u| ix <= u);
    let parent = |f: &[u8]| -> Vec<u8> {
        match f.iter().rposition(|&b| b == b'/') {
            Some(i) => f[..i].to_vec(),
            None => b".".to_vec(),
        }
    };
    let files = editable_files(src);
    let op = *rng.pick(&["touch", "append", "add", "delete"]);
    let fits = |f: &Vec<u8>| -> bool {
        let fi = index_of(f);
        let pi = index_of(&parent(f));
        match (op, early) {
            ("touch" | "append", true) => le(&fi),
            ("touch" | "append", false) => !le(&fi),
            ("delete", true) => le(&fi),
            ("delete", false) => !le(&pi) && !pi.is_empty(),
            ("add", true) => le(&pi),
            ("add", false) => !le(&pi) && !pi.is_empty(),
            _ => unreachable!(),
        }
    };
    let cands: Vec<&Vec<u8>> = files.iter().filter(|f| fits(f)).collect();
    if cands.is_empty() {
        return (
            format!(
                "{} {op}: no candidate, no change",
                if early { "early" } else { "late" }
            ),
            None,
        );
    }
    let f = (*rng.pick(&cands)).clone();
    let shown = String::from_utf8_lossy(&f).into_owned();
    let path = p(src, &f);
    let dir_mtime = |d: &[u8]| fs::metadata(p(src, d)).unwrap().mtime();
    let dir_before = dir_mtime(&parent(&f));
    let touched: Vec<Vec<Vec<u8>>> = match op {
        "touch" => {
            touch(&path);
            vec![index_of(&f)]
        }
        "append" => {
            append(&path, format!("late change {step}\n").as_bytes());
            vec![index_of(&f)]
        }
        "delete" => {
            fs::remove_file(&path).unwrap();
            vec![index_of(&parent(&f)), index_of(&f)]
        }
        _ => {
            let dir = parent(&f);
            let new = if dir == b"." {
                format!("crash-add-{step}.txt").into_bytes()
            } else {
                [dir.as_slice(), format!("/crash-add-{step}.txt").as_bytes()].concat()
            };
            fs::write(p(src, &new), text_bytes(5000, step as u64)).unwrap();
            vec![index_of(&dir), index_of(&new)]
        }
    };
    // dupr keeps whole-second mtimes of directories: one changed within
    // the same second is not a change.
    let dir_changed = dir_mtime(&parent(&f)) != dir_before;
    let hits = touched
        .iter()
        .enumerate()
        .any(|(i, t)| le(t) && (i > 0 || op == "touch" || op == "append" || dir_changed));
    let shown = if op == "add" {
        format!("add in dir of {shown}")
    } else {
        format!("{op} {shown}")
    };
    (
        format!("{} {shown}", if hits { "early" } else { "late" }),
        Some(hits),
    )
}

// ------------------------------------------------------ collection-status

/// Chains as collection-status prints them: the kinds of their sets.
fn status_chains(text: &str) -> (Vec<Vec<String>>, bool) {
    let mut chains: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Chain start time:") {
            chains.push(Vec::new());
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 7 && (w[0] == "Full" || w[0] == "Incremental") && w[6].parse::<u32>().is_ok()
        {
            if let Some(c) = chains.last_mut() {
                c.push(w[0].to_string());
            }
        }
    }
    let clean = text.contains("No orphaned or incomplete backup sets found.");
    (chains, clean)
}

fn model_chains(chains: &[usize]) -> Vec<Vec<String>> {
    chains
        .iter()
        .map(|&n| {
            let mut c = vec!["Full".to_string()];
            c.extend(std::iter::repeat_n("Incremental".to_string(), n - 1));
            c
        })
        .collect()
}

// ------------------------------------------------------------ a point

#[derive(Clone, Copy, Debug)]
struct Spec {
    cmd: Cmd,
    trig: Trig,
    mutate: Mut,
    /// Kill the rerun too.
    second: Option<Trig>,
}

const fn sp(cmd: Cmd, trig: Trig, mutate: Mut) -> Spec {
    Spec {
        cmd,
        trig,
        mutate,
        second: None,
    }
}

const fn sp2(cmd: Cmd, trig: Trig, mutate: Mut, second: Trig) -> Spec {
    Spec {
        cmd,
        trig,
        mutate,
        second: Some(second),
    }
}

/// What the run after a kill must do.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Nothing to resume (nothing left, or the set completed).
    Fresh,
    /// A partial set that cannot be resumed is removed.
    GiveUp,
    Resume(u32),
    StartOver,
}

fn expect_for(left: &Option<Left>, hits: Option<bool>) -> Expect {
    match left {
        None => Expect::Fresh,
        Some(l) if l.complete => Expect::Fresh,
        Some(l) if !l.part => Expect::Fresh,
        Some(l) if l.stored == 0 || !l.journal => Expect::GiveUp,
        Some(l) => {
            if hits == Some(true) {
                Expect::StartOver
            } else {
                Expect::Resume(l.stored)
            }
        }
    }
}

fn check_messages(err: &str, e: &Expect) -> Result<(), String> {
    let resuming = err.contains("Resuming the interrupted backup after volume");
    let over = err.contains("starting it over");
    let gave_up = err.contains("it cannot be resumed");
    let ok = match e {
        Expect::Fresh => !resuming && !over && !gave_up,
        Expect::GiveUp => gave_up && !resuming,
        Expect::Resume(k) => {
            err.contains(&format!(
                "Resuming the interrupted backup after volume {k} "
            )) && !over
                && !gave_up
        }
        Expect::StartOver => over && !gave_up,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {e:?}; stderr:\n{err}"))
    }
}

/// (inode, mtime ns, size) of volumes 1..=k of `set`.
fn vol_ids(a: &Archive, set: &SetKey, k: u32) -> Vec<(u32, u64, i64, u64)> {
    (1..=k)
        .map(|n| {
            let m = fs::metadata(a.target().join(set.vol(n, a.vol_ext()))).unwrap();
            (
                n,
                m.ino(),
                m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                m.len(),
            )
        })
        .collect()
}

/// A group of points sharing one target, in order.
struct Group {
    name: &'static str,
    a: Archive,
    rng: Rng,
    /// Set count of each chain, oldest first (the model).
    chains: Vec<usize>,
    known: BTreeSet<SetKey>,
    /// The newest complete set's time and a copy of its tree.
    prev: Option<(String, PathBuf)>,
    step: u32,
    dup_resume_done: bool,
    points: u32,
    resumed: u32,
    started_over: u32,
}

impl Group {
    fn new(name: &'static str, enc: bool, dup_on_resume: bool) -> Group {
        let a = Archive::new(enc);
        let mut rng = Rng::new(group_seed(name));
        build_tree(&a.src(), &mut rng);
        Group {
            name,
            a,
            rng,
            chains: Vec::new(),
            known: BTreeSet::new(),
            prev: None,
            step: 0,
            dup_resume_done: !dup_on_resume,
            points: 0,
            resumed: 0,
            started_over: 0,
        }
    }

    fn est_vols(&self, bytes: u64, volsize: u64) -> u32 {
        let payload = volsize * MIB - 66 * 1024;
        (bytes / payload).max(1) as u32
    }

    fn resolve(&mut self, trig: Trig, est: u32, after: u32, share: u32) -> Trigger {
        // Volume numbers within the first `share`% of the run, past `after`
        // (volumes a resumed run does not write again).
        let hi = (est * share / 100).max(after + 2);
        // A first run may open volume 1 before its set is seen; a rerun
        // opens volume `after + 1` only after replaying the stored ones.
        let first_new = if after == 0 { 2 } else { after + 1 };
        let n = match trig {
            // share 0: the first volume the run writes.
            _ if share == 0 => after + 1,
            Trig::FifoVol | Trig::VolTmp => self.rng.range(first_new as u64, hi as u64) as u32,
            _ => self.rng.range(after as u64 + 1, hi as u64) as u32,
        };
        Trigger {
            trig,
            n,
            // gpg derives its key first (~0.1 s); ~30 ms a volume.
            delay_ms: self.rng.range(20, (120 + 30 * est as u64).min(600)),
        }
    }

    fn tree_bytes(&self) -> u64 {
        editable_files(&self.a.src())
            .iter()
            .map(|f| size_of(&p(&self.a.src(), f)))
            .sum()
    }

    /// Record the sets the runs of this point completed; returns them.
    fn new_sets(&mut self) -> Vec<SetKey> {
        let now = complete_sets(&self.a.target());
        let mut new: Vec<SetKey> = now.difference(&self.known).cloned().collect();
        new.sort_by(|a, b| a.end().cmp(b.end()));
        for s in &new {
            if s.is_full() {
                self.chains.push(1);
            } else {
                *self.chains.last_mut().expect("an inc after a full") += 1;
            }
        }
        self.known = now;
        new
    }

    /// One kill point: evolve the tree, run and kill, maybe change the
    /// source, maybe run and kill again, run to the end, check everything.
    fn point(&mut self, id: u32, spec: Spec, dup_every: u32) -> Result<String, String> {
        let t0 = Instant::now();
        let a_src = self.a.src();
        self.step += 1;
        let step = self.step;
        let inc = spec.cmd != Cmd::Full && !self.chains.is_empty();
        let volsize = if inc {
            self.rng.range(2, 3)
        } else {
            self.rng.range(2, 5)
        };
        let bytes = if self.chains.is_empty() {
            self.tree_bytes()
        } else {
            let changed = evolve(&a_src, &mut self.rng, step, inc);
            if inc {
                changed
            } else {
                self.tree_bytes()
            }
        };
        let est = self.est_vols(bytes, volsize);
        let share = if spec.second.is_some() { 35 } else { 60 };
        let trig1 = self.resolve(spec.trig, est, 0, share);
        let args = self.a.backup_args(spec.cmd, volsize);
        let logs = self.a.env.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        let log1 = logs.join(format!("p{id}-run1.err"));

        // Run 1, killed.
        let f1 = run_and_kill(&self.a, &args, &trig1, &log1);
        let mut fired = match &f1 {
            Fired::Killed(w) => format!("killed ({w})"),
            Fired::Finished(st) => {
                if !st.success() {
                    return Err(format!(
                        "run 1 failed: {st:?}\n{}",
                        fs::read_to_string(&log1).unwrap_or_default()
                    ));
                }
                "NOT interrupted (finished first)".into()
            }
        };
        let left1 = inspect(&self.a, &self.known);
        // A set run 1 completed has the tree as it was: keep a copy if the
        // source is about to change.
        let mut snaps: Vec<(SetKey, PathBuf)> = Vec::new();
        let completed1 = left1.as_ref().filter(|l| l.complete).map(|l| l.set.clone());
        let until = left1
            .as_ref()
            .filter(|l| !l.complete)
            .and_then(|l| l.until.clone());
        if let Some(s) = &completed1 {
            if spec.mutate != Mut::None {
                let snap = self.a.env.path().join(format!("snap-{id}"));
                copy_tree(&a_src, &snap);
                snaps.push((s.clone(), snap));
            }
        }
        let (mdesc, hits) = mutate(&a_src, &mut self.rng, spec.mutate, until.as_ref(), step);
        let mut expect = expect_for(&left1, hits);
        let mut left_desc = left1.as_ref().map_or("nothing left".into(), Left::brief);

        // Run 2 (optional), killed too.
        if let Some(t2) = spec.second {
            let after = match &expect {
                Expect::Resume(k) => *k,
                _ => 0,
            };
            // The first volume the rerun writes.
            let trig2 = self.resolve(t2, est, after, 0);
            let log2 = logs.join(format!("p{id}-run2.err"));
            let f2 = run_and_kill(&self.a, &args, &trig2, &log2);
            let err2 = fs::read_to_string(&log2).unwrap_or_default();
            match &f2 {
                Fired::Killed(w) => {
                    fired.push_str(&format!("; rerun killed at {} ({w})", trig2.describe()))
                }
                Fired::Finished(st) => {
                    if !st.success() {
                        return Err(format!("run 2 failed: {st:?}\n{err2}"));
                    }
                    fired.push_str("; rerun NOT interrupted");
                }
            }
            // Run 2 saw the change; what run 3 must do follows from what
            // run 2 left (the source no longer changes).
            if let Expect::Resume(k) = expect {
                if err2.contains("Resuming") && !err2.contains(&format!("after volume {k} ")) {
                    return Err(format!("run 2 should resume after volume {k}:\n{err2}"));
                }
            }
            // Sets completed so far are known; run 2's own set is new.
            let mut known = self.known.clone();
            known.extend(completed1.iter().cloned());
            let left2 = inspect(&self.a, &known);
            expect = expect_for(&left2, None);
            left_desc = format!(
                "{left_desc}; rerun left {}",
                left2.as_ref().map_or("nothing".into(), Left::brief)
            );
        }

        // The set a resume continues, and its stored volumes.
        let resume_set = inspect(&self.a, &{
            let mut k = self.known.clone();
            k.extend(complete_sets(&self.a.target()));
            k
        });
        let ids_before = match (&expect, &resume_set) {
            (Expect::Resume(k), Some(l)) => Some((l.set.clone(), vol_ids(&self.a, &l.set, *k))),
            _ => None,
        };

        // The final run.
        let o = self.a.run(&args);
        let err = lossy(&o.stderr);
        if !o.status.success() {
            return Err(format!(
                "the run after the kill failed (expected {expect:?}): {}",
                out_text(&o)
            ));
        }
        check_messages(&err, &expect)?;
        if let Some((set, ids)) = &ids_before {
            let k = ids.len() as u32;
            let after = vol_ids(&self.a, set, k);
            if &after != ids {
                return Err(format!(
                    "resumed set {set:?}: volumes 1..{k} were rewritten: {ids:?} -> {after:?}"
                ));
            }
            if !complete_sets(&self.a.target()).contains(set) {
                return Err(format!("the resumed set {set:?} is not the one completed"));
            }
        }
        match &expect {
            Expect::Resume(_) => self.resumed += 1,
            Expect::StartOver => self.started_over += 1,
            _ => {}
        }

        // Sets: what run 1 / run 2 completed, plus the final run's.
        let was_empty = self.chains.is_empty();
        let new = self.new_sets();
        let want_kind_full = match spec.cmd {
            Cmd::Full => true,
            Cmd::Incr | Cmd::Auto => was_empty,
        };
        let last = new.last().cloned();
        match &last {
            Some(s) if s.is_full() == want_kind_full => {}
            _ => {
                return Err(format!(
                    "expected the final set to be {}, new sets {new:?}\nstderr:\n{err}",
                    if want_kind_full {
                        "a full"
                    } else {
                        "an incremental"
                    }
                ))
            }
        }
        let interrupted_completed = completed1.is_some() as usize;
        if new.len() < 1 + interrupted_completed || new.len() > 3 {
            return Err(format!(
                "expected {} new set(s), got {new:?}",
                1 + interrupted_completed
            ));
        }
        self.check_archive(id, &snaps, dup_every, &expect, &err, !want_kind_full)?;
        let secs = t0.elapsed().as_secs_f64();
        let outcome = match &expect {
            Expect::Resume(k) => format!("resumed after vol {k}"),
            Expect::StartOver => "started over".into(),
            Expect::GiveUp => "partial removed, fresh set".into(),
            Expect::Fresh => "fresh set".into(),
        };
        self.points += 1;
        Ok(format!(
            "crash point {:>2} [{} {} {} vol{volsize}] trigger {}: {fired}; left {left_desc}; {mdesc} -> {outcome}, sets {:?}, {secs:.1}s",
            id,
            self.name,
            if self.a.enc { "gpg" } else { "plain" },
            spec.cmd.label(),
            trig1.describe(),
            self.chains,
        ))
    }

    fn check_archive(
        &mut self,
        id: u32,
        snaps: &[(SetKey, PathBuf)],
        dup_every: u32,
        expect: &Expect,
        err: &str,
        inc: bool,
    ) -> Result<(), String> {
        let a = &self.a;
        let src = a.src();
        let url = a.url();
        // collection-status: the expected chains, nothing incomplete.
        let st = a.run_ok(&["collection-status", url.as_str()]);
        let text = lossy(&st.stdout);
        let (chains, clean) = status_chains(&text);
        if !clean || chains != model_chains(&self.chains) {
            return Err(format!(
                "collection-status: want chains {:?} and clean, got {chains:?} clean={clean}:\n{text}\nlast stderr:\n{err}",
                self.chains
            ));
        }
        // The cache: no partial files, journals, temps or lock left.
        let leftovers: Vec<String> = names(&a.cache_dir())
            .into_iter()
            .filter(|n| n.contains(".part") || n.starts_with(".dupr-") || n == "lockfile")
            .collect();
        if !leftovers.is_empty() {
            return Err(format!("left in the cache: {leftovers:?}"));
        }
        // The latest state.
        let latest = a.env.path().join(format!("restore-{id}"));
        a.restore(None, &latest);
        let diffs = tree_diffs(&src, &latest);
        if !diffs.is_empty() {
            return Err(format!(
                "restore of the latest time differs: {:?}",
                &diffs[..diffs.len().min(10)]
            ));
        }
        let v = a.run(&[
            OsStr::new("verify"),
            OsStr::new("--compare-data"),
            OsStr::new(&url),
            src.as_os_str(),
        ]);
        if !v.status.success() || !lossy(&v.stdout).contains(" 0 difference(s)") {
            return Err(format!("verify --compare-data: {}", out_text(&v)));
        }
        // After an incremental, the previous state; and any set a killed run
        // completed.
        let mut olds: Vec<(String, PathBuf)> = Vec::new();
        if inc {
            olds.extend(self.prev.iter().cloned());
        }
        olds.extend(snaps.iter().map(|(s, p)| (s.end().to_string(), p.clone())));
        for (i, (t, tree)) in olds.iter().enumerate() {
            let r = a.env.path().join(format!("restore-{id}-old{i}"));
            a.restore(Some(t), &r);
            let diffs = tree_diffs(tree, &r);
            if !diffs.is_empty() {
                return Err(format!(
                    "restore -t {t} differs from the tree then: {:?}",
                    &diffs[..diffs.len().min(10)]
                ));
            }
            fs::remove_dir_all(&r).unwrap();
        }
        for (_, p) in snaps {
            fs::remove_dir_all(p).unwrap();
        }
        // Stock duplicity: every `dup_every`-th point and (in the groups that
        // ask for it) the first resumed one.
        let first_resume = matches!(expect, Expect::Resume(_)) && !self.dup_resume_done;
        if id.is_multiple_of(dup_every) || first_resume {
            if first_resume {
                self.dup_resume_done = true;
            }
            let r = a.env.path().join(format!("restore-{id}-dup"));
            a.dup_restore(&r, &id.to_string());
            let diffs = tree_diffs(&src, &r);
            if !diffs.is_empty() {
                return Err(format!(
                    "duplicity 3.2.1 restore differs: {:?}",
                    &diffs[..diffs.len().min(10)]
                ));
            }
            fs::remove_dir_all(&r).unwrap();
        }
        // The restored tree is the next point's previous state.
        if let Some((_, old)) = self.prev.take() {
            let _ = fs::remove_dir_all(old);
        }
        let newest_set = newest(self.known.iter().cloned()).unwrap();
        self.prev = Some((newest_set.end().to_string(), latest));
        Ok(())
    }
}

/// Run the points of one group; a failed point ends the group (the archive
/// is then in an unknown state). Panics at the end listing failures.
fn run_group(name: &'static str, enc: bool, dup_on_resume: bool, first_id: u32, specs: &[Spec]) {
    let t0 = Instant::now();
    let mut g = Group::new(name, enc, dup_on_resume);
    let mut failures = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let id = first_id + i as u32;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.point(id, *spec, 4)));
        let r = match r {
            Ok(r) => r,
            Err(e) => Err(e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())),
        };
        match r {
            Ok(line) => println!("{line}"),
            Err(e) => {
                let line = format!(
                    "crash point {id:>2} [{name}] {:?} FAILED (seed {}): {e}",
                    spec,
                    base_seed()
                );
                println!("{line}");
                failures.push(line);
                break;
            }
        }
    }
    println!(
        "group {name}: {} point(s) passed, {} resumed, {} started over, {:.1}s",
        g.points,
        g.resumed,
        g.started_over,
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ------------------------------------------------------------ the points

use Cmd::{Auto, Full, Incr};

/// Encrypted: fulls killed between volumes, mid-volume, by record count,
/// before the manifest; then incrementals.
#[test]
fn crash_points_gpg_full_then_incremental() {
    run_group(
        "g1-gpg",
        true,
        true,
        1,
        &[
            sp(Full, Trig::FifoVol, Mut::None),
            sp(Full, Trig::MidVol, Mut::Late),
            sp(Full, Trig::SigWrite, Mut::Early),
            sp(Full, Trig::FifoManifest, Mut::None),
            sp(Incr, Trig::FifoVol, Mut::Late),
            sp(Incr, Trig::MidVol, Mut::Early),
            sp(Auto, Trig::Records, Mut::Any),
        ],
    );
}

/// `--no-encryption`: after the last volume but before the signatures
/// (full and incremental), new volume begun, a delay, records, stored sigs.
#[test]
fn crash_points_plain() {
    run_group(
        "g2-plain",
        false,
        true,
        8,
        &[
            sp(Full, Trig::FifoSig, Mut::None),
            sp(Full, Trig::VolTmp, Mut::Early),
            sp(Full, Trig::Delay, Mut::Any),
            sp(Incr, Trig::FifoSig, Mut::Late),
            sp(Auto, Trig::Records, Mut::Late),
            sp(Incr, Trig::VolStored, Mut::None),
        ],
    );
}

/// Encrypted incrementals on one chain, one killed twice, then a full on
/// top killed at its walk start.
#[test]
fn crash_points_gpg_incrementals() {
    run_group(
        "g3-gpg-inc",
        true,
        false,
        14,
        &[
            sp(Full, Trig::VolStored, Mut::None),
            sp(Incr, Trig::FifoVol, Mut::Early),
            sp2(Incr, Trig::FifoVol, Mut::None, Trig::FifoVol),
            sp(Auto, Trig::Delay, Mut::Any),
            sp(Incr, Trig::VolStored, Mut::Late),
            sp(Full, Trig::WalkStart, Mut::None),
            sp(Incr, Trig::ManifestStored, Mut::None),
        ],
    );
}

/// Encrypted, mixed: the first backup automatic, reruns killed again,
/// delays, signature and manifest moments.
#[test]
fn crash_points_gpg_mixed() {
    run_group(
        "g4-gpg-mixed",
        true,
        false,
        21,
        &[
            sp(Auto, Trig::WalkStart, Mut::None),
            sp2(Full, Trig::FifoVol, Mut::Late, Trig::Records),
            sp(Full, Trig::SigStored, Mut::None),
            sp(Incr, Trig::Delay, Mut::Any),
            sp2(Incr, Trig::VolStored, Mut::None, Trig::WalkStart),
            sp(Full, Trig::Delay, Mut::Any),
            sp(Incr, Trig::FifoManifest, Mut::None),
        ],
    );
}

// ------------------------------------------- 2. killed deleting commands

/// Run dupr with `args` and SIGKILL it once `n` files named `duplicity-*`
/// have been deleted from `dir` (inotify). Returns how many deletions were
/// seen before the kill, or None if the command finished first.
fn kill_after_deletions(a: &Archive, args: &[OsString], dir: &Path, n: usize) -> Option<usize> {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(
        fd >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_DELETE) };
    assert!(
        wd >= 0,
        "inotify_add_watch: {}",
        std::io::Error::last_os_error()
    );
    let mut child = a
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut seen = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut pfd, 1, 1) };
        let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if got > 0 {
            let mut off = 0usize;
            let hdr = std::mem::size_of::<libc::inotify_event>();
            while off + hdr <= got as usize {
                // SAFETY: the kernel wrote whole events into buf.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name = &buf[off + hdr..off + hdr + ev.len as usize];
                if name.starts_with(b"duplicity-") {
                    seen += 1;
                }
                off += hdr + ev.len as usize;
            }
            if seen >= n {
                kill9(pid);
                let _ = child.wait();
                break Some(seen);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{args:?} failed before the kill: {st:?}");
            break None;
        }
    };
    unsafe { libc::close(fd) };
    result
}

/// Chains (set lists, oldest first) formed by the complete sets on the target.
fn chains_of(target: &Path) -> Vec<Vec<SetKey>> {
    let sets = complete_sets(target);
    let mut fulls: Vec<&SetKey> = sets.iter().filter(|s| s.is_full()).collect();
    fulls.sort_by(|a, b| a.end().cmp(b.end()));
    fulls
        .into_iter()
        .map(|f| {
            let mut chain = vec![f.clone()];
            loop {
                let end = chain.last().unwrap().end().to_string();
                match sets
                    .iter()
                    .find(|s| s.0.starts_with(&format!("inc.{end}.to.")))
                {
                    Some(s) => chain.push(s.clone()),
                    None => break,
                }
            }
            chain
        })
        .collect()
}

/// collection-status lists exactly the chains the target's complete sets
/// form, and each of them restores the tree of its newest set.
fn check_chains_restore(a: &Archive, snaps: &Path, tag: &str) {
    let st = a.run_ok(&["collection-status", a.url().as_str()]);
    let text = lossy(&st.stdout);
    let (printed, _) = status_chains(&text);
    let chains = chains_of(&a.target());
    let lens: Vec<usize> = chains.iter().map(Vec::len).collect();
    let mut printed_lens: Vec<usize> = printed.iter().map(Vec::len).collect();
    printed_lens.sort();
    let mut want = lens.clone();
    want.sort();
    assert_eq!(
        printed_lens, want,
        "{tag}: collection-status chains vs the target's complete sets {chains:?}:\n{text}"
    );
    for chain in &chains {
        let end = chain.last().unwrap().end();
        let r = a.env.path().join(format!("restore-{tag}-{end}"));
        a.restore(Some(end), &r);
        assert_same_tree(&snaps.join(end), &r);
        fs::remove_dir_all(&r).unwrap();
    }
}

/// A small tree (~2.5 MB) changed before each set; `--current-time` gives
/// each set its own (past) time without waiting; a copy of the tree per set.
fn make_sets(a: &Archive, plan: &[(i64, Cmd)], snaps: &Path) {
    let src = a.src();
    fs::create_dir_all(src.join("s")).unwrap();
    fs::write(src.join("big.bin"), pseudo_random_bytes(2_400_000, 77)).unwrap();
    fs::create_dir_all(snaps).unwrap();
    for (i, (t, cmd)) in plan.iter().enumerate() {
        fs::write(
            src.join(format!("s/f{:02}.txt", i % 20)),
            format!("set {i}\n").repeat(i + 1),
        )
        .unwrap();
        fs::write(
            src.join("s/changing.bin"),
            pseudo_random_bytes(40_000 + i * 1000, i as u64),
        )
        .unwrap();
        let mut args: Vec<OsString> = cmd.words().iter().map(OsString::from).collect();
        args.extend([
            "--volsize".into(),
            "1".into(),
            "--no-print-statistics".into(),
            "--current-time".into(),
            t.to_string().into(),
            src.clone().into(),
            a.url().into(),
        ]);
        a.run_ok(&args);
        let set = newest(complete_sets(&a.target())).unwrap();
        copy_tree(&src, &snaps.join(set.end()));
    }
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Six chains of a full and four incrementals, 5 days apart, 60 days ago
/// (`--current-time`); returns the archive, the tree copies and the base time.
fn six_chains() -> (Archive, PathBuf, i64) {
    let a = Archive::new(false);
    let snaps = a.env.path().join("snaps");
    let base = epoch_now() - 60 * 86_400;
    let mut plan = Vec::new();
    for c in 0..6i64 {
        for k in 0..5i64 {
            let t = base + c * 5 * 86_400 + k * 3_600;
            plan.push((t, if k == 0 { Cmd::Full } else { Cmd::Incr }));
        }
    }
    make_sets(&a, &plan, &snaps);
    assert_eq!(chains_of(&a.target()).len(), 6);
    (a, snaps, base)
}

/// `remove-older-than --force` (the four oldest chains: 68 files) killed
/// after `n` deletions; the chains dupr then lists restore; the same command
/// completes; cleanup removes what the interrupted one left incomplete.
fn killed_remove_older_than(n: usize) -> Option<String> {
    let (a, snaps, base) = six_chains();
    let url = a.url();
    let limit = (base + 4 * 5 * 86_400 - 60).to_string();
    let args: Vec<OsString> = ["remove-older-than", &limit, "--force", &url]
        .iter()
        .map(OsString::from)
        .collect();
    let seen = kill_after_deletions(&a, &args, &a.target(), n)?;
    let after_kill = chains_of(&a.target());
    check_chains_restore(&a, &snaps, "rot-killed");
    a.run_ok(&args);
    let chains = chains_of(&a.target());
    assert_eq!(chains.len(), 2, "after the second run: {chains:?}");
    assert!(chains.iter().all(|c| c.len() == 5), "{chains:?}");
    check_chains_restore(&a, &snaps, "rot-done");
    a.run_ok(&["cleanup", "--force", url.as_str()]);
    let st = a.run_ok(&["collection-status", url.as_str()]);
    assert!(status_chains(&lossy(&st.stdout)).1, "{}", lossy(&st.stdout));
    Some(format!(
        "remove-older-than killed after {seen} deletion(s) (trigger {n}): chains then {:?}",
        after_kill.iter().map(Vec::len).collect::<Vec<_>>()
    ))
}

/// `cleanup --force` on the six chains after the newest got 20 more
/// incrementals and lost the manifest of its 8th set (so that set is
/// incomplete and the later ones orphans), killed after `n` deletions.
fn killed_cleanup(n: usize) -> Option<String> {
    let (a, snaps, base) = six_chains();
    let url = a.url();
    let mut plan = Vec::new();
    let start = base + 30 * 86_400;
    for k in 0..20i64 {
        plan.push((start + k * 3_600, Cmd::Incr));
    }
    make_sets(&a, &plan, &snaps);
    let chain = chains_of(&a.target()).pop().unwrap();
    assert_eq!(chain.len(), 25);
    let broken = &chain[7];
    for dir in [a.target(), a.cache_dir()] {
        for n in names(&dir) {
            if n.starts_with(&format!("{}.manifest", broken.prefix())) {
                fs::remove_file(dir.join(&n)).unwrap();
            }
        }
    }
    let st = a.run_ok(&["collection-status", url.as_str()]);
    assert!(
        !status_chains(&lossy(&st.stdout)).1,
        "{}",
        lossy(&st.stdout)
    );
    let args: Vec<OsString> = ["cleanup", "--force", &url]
        .iter()
        .map(OsString::from)
        .collect();
    let seen = kill_after_deletions(&a, &args, &a.target(), n)?;
    check_chains_restore(&a, &snaps, "cleanup-killed");
    a.run_ok(&args);
    let st = a.run_ok(&["collection-status", url.as_str()]);
    let text = lossy(&st.stdout);
    assert!(
        status_chains(&text).1,
        "cleanup did not finish the job:\n{text}"
    );
    let chains = chains_of(&a.target());
    // The sets before the broken one are left: the chain's first seven.
    assert_eq!(chains.last().unwrap().len(), 7, "{chains:?}");
    check_chains_restore(&a, &snaps, "cleanup-done");
    // And the chain takes a new incremental (now) that restores the source.
    a.run_ok(&[
        OsStr::new("incremental"),
        OsStr::new("--no-print-statistics"),
        a.src().as_os_str(),
        OsStr::new(&url),
    ]);
    let r = a.env.path().join("restore-final");
    a.restore(None, &r);
    assert_same_tree(&a.src(), &r);
    Some(format!(
        "cleanup killed after {seen} deletion(s) (trigger {n})"
    ))
}

/// `f(n)`, again on a fresh archive if the command finished before the
/// kill (a busy machine can deschedule the watcher for a few ms).
fn with_retries(what: &str, n: usize, f: impl Fn(usize) -> Option<String>) {
    for _ in 0..3 {
        if let Some(line) = f(n) {
            println!("{line}");
            return;
        }
        println!("{what} finished before the kill after {n} deletion(s); again");
    }
    panic!("{what} finished before it could be killed, three times");
}

/// `remove-older-than --force` killed after its first deletions and again
/// deep into them, then `cleanup --force` killed likewise: the chains dupr
/// lists still restore, and the same commands then complete.
#[test]
fn killed_remove_older_than_and_cleanup_leave_restorable_chains() {
    let t0 = Instant::now();
    let mut rng = Rng::new(group_seed("remove"));
    for n in [rng.range(1, 6), rng.range(14, 40)] {
        with_retries("remove-older-than", n as usize, killed_remove_older_than);
    }
    with_retries("cleanup", rng.range(1, 8) as usize, killed_cleanup);
    println!(
        "remove-older-than / cleanup kills: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------ 3. lock

/// The pid holding a write lock on `path` (F_GETLK), if any.
fn lock_holder(path: &Path) -> Option<i32> {
    let f = OpenOptions::new().read(true).write(true).open(path).ok()?;
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    use std::os::unix::io::AsRawFd;
    // SAFETY: valid descriptor, initialised struct.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    assert_eq!(rc, 0, "F_GETLK: {}", std::io::Error::last_os_error());
    (fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid)
}

/// A killed backup leaves `lockfile` behind, unlocked; the next run takes
/// it (F_GETLK names its pid) and is not blocked; while it runs, another
/// dupr on the same cache exits 23 naming the lock file and writes nothing.
#[test]
fn stale_lockfile_of_a_killed_run_blocks_nothing_and_the_live_run_excludes_others() {
    let a = Archive::new(false);
    let mut rng = Rng::new(group_seed("lock"));
    build_tree(&a.src(), &mut rng);
    let args = a.backup_args(Cmd::Full, 2);
    let log = a.env.path().join("run1.err");
    let t = Trigger {
        trig: Trig::VolStored,
        n: 3,
        delay_ms: 0,
    };
    assert!(matches!(
        run_and_kill(&a, &args, &t, &log),
        Fired::Killed(_)
    ));
    let lockfile = a.cache_dir().join("lockfile");
    assert!(lockfile.exists(), "a killed run leaves its lockfile");
    assert_eq!(
        lock_holder(&lockfile),
        None,
        "a dead process's lock is held"
    );

    // The next run takes the stale file's lock; freeze it while it holds it.
    let mut child = a
        .cmd()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let end = Instant::now() + Duration::from_secs(60);
    while lock_holder(&lockfile) != Some(pid) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the rerun ended before it was seen holding the lock"
        );
        assert!(Instant::now() < end, "the rerun never took the lock");
        std::thread::sleep(Duration::from_micros(300));
    }
    signal(pid, libc::SIGSTOP);
    let target_before = names(&a.target());
    let lock_text = format!("{:?}", lockfile);
    for (what, args) in [
        ("backup", args.clone()),
        (
            "collection-status",
            vec!["collection-status".into(), a.url().into()],
        ),
        (
            "cleanup",
            vec!["cleanup".into(), "--force".into(), a.url().into()],
        ),
    ] {
        let o = a.run(&args);
        let err = lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(23),
            "{what} during a live run: {}",
            out_text(&o)
        );
        assert!(
            err.contains(&lock_text) && err.contains("already running"),
            "{what}: the message should name the lock {lock_text}: {err}"
        );
        assert_eq!(
            names(&a.target()),
            target_before,
            "{what} touched the target"
        );
        assert_eq!(lock_holder(&lockfile), Some(pid), "{what} broke the lock");
    }
    signal(pid, libc::SIGCONT);
    let out = child.wait_with_output().unwrap();
    let err = lossy(&out.stderr);
    assert!(out.status.success(), "the rerun: {err}");
    assert!(
        err.contains("Resuming the interrupted backup after volume"),
        "{err}"
    );
    assert!(!lockfile.exists(), "lockfile left after a clean run");
    let r = a.env.path().join("restore");
    a.restore(None, &r);
    assert_same_tree(&a.src(), &r);
}

// ------------------------------------------------- 4. bug reproductions

/// A small tree: three 5 MiB random files and a directory of small ones.
fn small_tree(src: &Path) {
    for (i, n) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        fs::write(
            src.join(n),
            pseudo_random_bytes(5 * MIB as usize, 40 + i as u64),
        )
        .unwrap();
    }
    fs::create_dir(src.join("d")).unwrap();
    for f in 0..50u64 {
        fs::write(src.join(format!("d/f{f:02}.txt")), text_bytes(3000, f)).unwrap();
    }
}

/// An incremental killed after its signature file was stored but before its
/// manifest was (the last step of a set) must be resumed by the next run,
/// like any other interrupted set.
fn inc_killed_before_manifest(cmd: Cmd) {
    let a = Archive::new(true);
    small_tree(&a.src());
    a.run_ok(&a.backup_args(Cmd::Full, 2));
    fs::write(
        a.src().join("d/new.bin"),
        pseudo_random_bytes(6 * MIB as usize, 99),
    )
    .unwrap();
    let args = a.backup_args(cmd, 2);
    let t = Trigger {
        trig: Trig::FifoManifest,
        n: 0,
        delay_ms: 0,
    };
    let fired = run_and_kill(&a, &args, &t, &a.env.path().join("run1.err"));
    assert!(matches!(fired, Fired::Killed(_)), "not killed");
    let known = complete_sets(&a.target());
    let left = inspect(&a, &known).expect("an interrupted set");
    assert!(
        !left.set.is_full() && !left.complete && left.sig_stored && left.stored >= 2,
        "{left:?}"
    );
    let o = a.run(&args);
    let err = lossy(&o.stderr);
    assert!(
        o.status.success(),
        "`dupr {}` after the kill: {}",
        cmd.words().join(" "),
        out_text(&o)
    );
    assert!(
        err.contains(&format!(
            "Resuming the interrupted backup after volume {} ",
            left.stored
        )),
        "the interrupted incremental was not resumed: {err}"
    );
    let now = complete_sets(&a.target());
    let new: Vec<&SetKey> = now.difference(&known).collect();
    assert_eq!(
        new,
        vec![&left.set],
        "the resumed incremental completes: {err}"
    );
    let r = a.env.path().join("restore");
    a.restore(None, &r);
    assert_same_tree(&a.src(), &r);
}

/// Bug: `dupr incremental` after that kill exits 17 ("no signature chain
/// found ... run a full backup first"), and again on every later run: the
/// stored `duplicity-new-signatures` file of the incomplete set extends the
/// signature chain past the backup chain (ops::incremental_plan,
/// Collection::sig_chain_for).
#[test]
fn incremental_killed_before_its_manifest_resumes_with_incremental_command() {
    inc_killed_before_manifest(Cmd::Incr);
}

/// Same bug, automatic backup: the run discards the interrupted incremental
/// ("no longer fits the chain") and makes a new full backup instead.
#[test]
fn incremental_killed_before_its_manifest_resumes_with_automatic_backup() {
    inc_killed_before_manifest(Cmd::Auto);
}

/// Set atime/mtime with nanoseconds (dupr compares sub-second mtimes).
fn set_times_exact(path: &Path, m: &fs::Metadata) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: m.atime() as libc::time_t,
            tv_nsec: m.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: m.mtime() as libc::time_t,
            tv_nsec: m.mtime_nsec() as _,
        },
    ];
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// A full killed when its third volume is about to be written; returns the
/// archive and the path (relative) the stored volumes end in.
fn full_killed_at_vol3() -> (Archive, Vec<u8>) {
    let a = Archive::new(false);
    small_tree(&a.src());
    let t = Trigger {
        trig: Trig::FifoVol,
        n: 3,
        delay_ms: 0,
    };
    let fired = run_and_kill(
        &a,
        &a.backup_args(Cmd::Full, 2),
        &t,
        &a.env.path().join("run1.err"),
    );
    assert!(matches!(fired, Fired::Killed(_)), "not killed");
    let left = inspect(&a, &BTreeSet::new()).unwrap();
    // Volume 2 is recorded once the uploader thread has stored it, which
    // the kill at volume 3 may precede.
    assert!(matches!(left.stored, 1 | 2), "{left:?}");
    let until = left.until.unwrap().join(&b'/');
    (a, until)
}

/// Bug: the resume check (volume::VolumeWriter::replayed) compares each
/// replayed entry with the journal, but when the first block past the
/// stored volumes arrives it ends the check without looking at the journal
/// records left: entries at the *end* of the stored volumes that are gone
/// from the walk go unnoticed. The resumed set then holds them (a partly
/// stored multi-volume file comes back truncated, rc 0). Two ways to get
/// there: the file is deleted (directory mtime kept, as a sync tool that
/// preserves times leaves it), or the rerun excludes it.
#[test]
fn resume_notices_entries_gone_from_the_end_of_the_stored_volumes() {
    let mut failures = Vec::new();
    // (a) deleted, its directory's times put back.
    let (a, until) = full_killed_at_vol3();
    let victim = p(&a.src(), &until);
    let dir = victim.parent().unwrap().to_path_buf();
    let dm = fs::metadata(&dir).unwrap();
    fs::remove_file(&victim).unwrap();
    set_times_exact(&dir, &dm);
    let o = a.run_ok(&a.backup_args(Cmd::Full, 2));
    let r = a.env.path().join("restore");
    a.restore(None, &r);
    let d = tree_diffs(&a.src(), &r);
    if !d.is_empty() {
        failures.push(format!(
            "deleted {} (the end of volume 2): the resumed backup restores {d:?}\nstderr: {}",
            lossy(&until),
            lossy(&o.stderr)
        ));
    }
    // (b) excluded by the rerun.
    let (a, until) = full_killed_at_vol3();
    let mut args = a.backup_args(Cmd::Full, 2);
    let pat = format!("**/{}", lossy(&until));
    args.splice(0..0, ["--exclude".into(), OsString::from(&pat)]);
    let o = a.run_ok(&args);
    let r = a.env.path().join("restore");
    a.restore(None, &r);
    let want: Vec<String> = vec![format!("only in {}: {}", a.src().display(), lossy(&until))];
    let d = tree_diffs(&a.src(), &r);
    if d != want {
        failures.push(format!(
            "rerun with --exclude {pat}: want only {want:?}, the restore differs by {d:?}\nstderr: {}",
            lossy(&o.stderr)
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Target and cache listings with sizes, dupr's own lock/temp files aside.
fn snapshot_listing(a: &Archive) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (tag, dir) in [("target/", a.target()), ("cache/", a.cache_dir())] {
        for n in names(&dir) {
            if n.starts_with(".dupr-") || n == "lockfile" {
                continue;
            }
            out.push((format!("{tag}{n}"), size_of(&dir.join(&n))));
        }
    }
    out
}

/// Bug: a wrong PASSPHRASE is not reliably refused after a kill. find_resume
/// (ops/resume.rs) "proves" the passphrase by reading the first 512 bytes of
/// volume 1 through crypt::decoder, but a symmetric session key is never
/// checked there (no quick check; the MDC only at the end of the message):
/// with a wrong passphrase the reader returns garbage, and when the garbage
/// happens to parse as a packet the first read succeeds. Then the run
/// resumes and writes the rest of the set (volumes, signatures, manifest)
/// under the wrong passphrase: the archive restores with neither passphrase
/// (a fresh cache and the right one: exit 31). When the garbage does not
/// parse, the error is not WrongPassphrase, so the set is given up as
/// "volume 1 is unreadable" and deleted. About 1 passphrase in 20 did one
/// or the other here; 100 tries all must exit 31 and change nothing.
#[test]
fn wrong_passphrase_after_a_kill_is_refused_and_changes_nothing() {
    let a = Archive::new(true);
    small_tree(&a.src());
    let args = a.backup_args(Cmd::Full, 2);
    let t = Trigger {
        trig: Trig::FifoVol,
        n: 3,
        delay_ms: 0,
    };
    let fired = run_and_kill(&a, &args, &t, &a.env.path().join("run1.err"));
    assert!(matches!(fired, Fired::Killed(_)), "not killed");
    let before = snapshot_listing(&a);
    let mut bad = Vec::new();
    for i in 0..100 {
        let pass = format!("not the passphrase {i}");
        let o = a
            .cmd_with(&a.archive_root(), Some(&pass))
            .args(&args)
            .output()
            .unwrap();
        if o.status.code() != Some(31) || snapshot_listing(&a) != before {
            bad.push(format!(
                "try {i} ({pass:?}): exit {:?}, {}",
                o.status.code(),
                lossy(&o.stderr).trim()
            ));
            break;
        }
    }
    if bad.is_empty() {
        // The right passphrase resumes, and a fresh cache restores it.
        let o = a.run_ok(&args);
        // Volume 2 counts as stored once its upload (on the uploader
        // thread) is recorded; the kill at volume 3 may come first.
        let e = lossy(&o.stderr);
        assert!(
            e.contains("Resuming the interrupted backup after volume 2 ")
                || e.contains("Resuming the interrupted backup after volume 1 "),
            "{e}"
        );
        let r = a.env.path().join("restore-fresh-cache");
        let fresh = a.env.path().join("fresh-cache");
        let o = a
            .cmd_with(&fresh, Some(PASS))
            .arg("restore")
            .arg(a.url())
            .arg(&r)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", out_text(&o));
        assert_same_tree(&a.src(), &r);
        return;
    }
    // Show what the accepted wrong passphrase did to the archive.
    let r = a.env.path().join("restore-after");
    let o = a
        .cmd_with(&a.env.path().join("fresh-cache"), Some(PASS))
        .arg("restore")
        .arg(a.url())
        .arg(&r)
        .output()
        .unwrap();
    panic!(
        "a wrong passphrase was not refused after a kill: {}\nrestore with the right passphrase and a fresh cache afterwards: exit {:?} {}",
        bad.join("\n"),
        o.status.code(),
        lossy(&o.stderr).trim()
    );
}

/// Bug (found while sizing the kill points, not crash-specific): volumes are
/// much bigger than `--volsize` on incompressible data. VolumeWriter::add
/// (volume.rs) closes a volume by `Encoder::stored_bytes`, which counts only
/// what has reached the file, not what the 1 MiB write buffer and the
/// compression/encryption layers still hold. With `--volsize 2`: ~5.0 MB
/// volumes encrypted, ~3.7-4.0 MB plain; `--volsize 5`: up to 8.2 MB
/// encrypted (duplicity keeps them within the size).
#[test]
fn volumes_stay_within_volsize() {
    let mut over = Vec::new();
    for enc in [true, false] {
        let a = Archive::new(enc);
        fs::write(
            a.src().join("r.bin"),
            pseudo_random_bytes(16 * MIB as usize, 5),
        )
        .unwrap();
        for volsize in [2u64, 5] {
            let target = a.env.path().join(format!("t{volsize}"));
            a.run_ok(&[
                OsString::from("full"),
                "--volsize".into(),
                volsize.to_string().into(),
                "--no-print-statistics".into(),
                a.src().into(),
                file_url(&target).into(),
            ]);
            let max = names(&target)
                .iter()
                .filter(|n| n.contains(".difftar"))
                .map(|n| size_of(&target.join(n)))
                .max()
                .unwrap();
            // A little slack for the end of the tar and the OpenPGP framing.
            if max > volsize * MIB + 128 * 1024 {
                over.push(format!(
                    "{} --volsize {volsize}: largest volume {max} bytes",
                    if enc { "encrypted" } else { "plain" }
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "volumes larger than --volsize:\n{}",
        over.join("\n")
    );
}
