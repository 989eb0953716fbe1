//! Maintenance commands against the reference duplicitys (0.8.22 and 3.2.1;
//! never skipped: a missing one is a failure).
//!
//! 1. Retention: three dupr chains (full+2 incs, full+1 inc, full). For
//!    `remove-older-than`, `remove-all-but-n-full 2` (encrypted) and
//!    `remove-all-inc-of-but-n-full 1`: a run without `--force` deletes
//!    nothing and lists the files; with `--force` exactly the files the
//!    reference's rules (6.6) name are gone, remotely and from dupr's cache;
//!    `collection-status` of dupr, duplicity 3.2.1 and 0.8.22 agree; the
//!    newest state still restores (dupr and duplicity 3.2.1); the same
//!    removal by each duplicity on a copy of the target leaves the same files.
//! 2. `cleanup`: an incomplete set (a volume without a manifest) and an
//!    orphaned incremental (files of an inc renamed to times matching no
//!    chain) are listed, then deleted with `--force`; complete sets and a
//!    foreign file stay; duplicity 3.2.1's cleanup would list the same files.
//! 3. `verify`: without `--compare-data` nothing local is compared; with it,
//!    an unchanged tree has 0 differences, changed content (same size and
//!    mtime), a chmod and a new file are named (exit 1); `-t` picks an older
//!    state; a corrupted volume fails naming the volume.
//! 4. Run lock: a python-held fcntl lock makes every dupr command exit 23
//!    without touching the target, and makes duplicity 3.2.1 / 0.8.22 refuse
//!    the same cache (`--archive-dir D --name N`); a running (stopped) dupr
//!    excludes duplicity, python and another dupr; after `kill -9` the stale
//!    lockfile does not block the next backup; the interrupted set is cleaned.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PASS: &str = "maintenance passphrase ÄÖ \"q\" 7";

use common::interop::{Ctx, Mode};

impl Ctx {
    /// Run dupr with `args`, return its output (no status check).
    fn dupr_run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut c = self.dupr();
        for a in args {
            c.arg(a);
        }
        c.output().unwrap()
    }

    /// Run dupr with `args`; panic unless it exits 0.
    fn dupr_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let o = self.dupr_run(args);
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

    /// As [`Ctx::dup_with_archive`] with the version's own archive dir; must succeed.
    fn dup_ok(&self, v: Dup, cmd: &str, rest: &[&OsStr]) -> Output {
        let o = self.dup_with_archive(v, &self.env.archive_dir(v), cmd, rest);
        assert!(
            o.status.success(),
            "duplicity {} {cmd} {:?} failed: {}",
            v.label(),
            rest,
            out_text(&o)
        );
        o
    }

    /// A backup (`full` / `incremental`); returns the new set.
    fn backup(&self, kind: &str) -> SetId {
        let before = remote_names(&self.env.target());
        self.dupr_ok(&[
            OsStr::new(kind),
            OsStr::new("--volsize"),
            OsStr::new("1"),
            OsStr::new("--no-print-statistics"),
            self.src().as_os_str(),
            OsStr::new(&self.url()),
        ]);
        let new: BTreeSet<SetId> = remote_names(&self.env.target())
            .difference(&before)
            .filter_map(|n| set_of(n))
            .collect();
        assert_eq!(new.len(), 1, "{kind} made one new set: {new:?}");
        new.into_iter().next().unwrap()
    }

    /// dupr's cache directory for the target (`$XDG_CACHE_HOME/dupr/<md5>`).
    fn cache_dir(&self) -> PathBuf {
        let root = self.env.cache().join("dupr");
        let dirs: Vec<PathBuf> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(
            dirs.len(),
            1,
            "one cache dir under {}: {dirs:?}",
            root.display()
        );
        dirs.into_iter().next().unwrap()
    }
}

// ------------------------------------------------------------ names, times

/// A backup set's identity: full at T, or inc from T1 to T2.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SetId {
    Full(String),
    Inc(String, String),
}

impl SetId {
    /// The set's (end) time.
    fn time(&self) -> &str {
        match self {
            SetId::Full(t) | SetId::Inc(_, t) => t,
        }
    }
}

/// Which set a duplicity file name (volume, manifest, signature; remote or
/// cache) belongs to.
fn set_of(name: &str) -> Option<SetId> {
    let t = |s: &str| -> Option<String> {
        (s.len() == 16 && s.as_bytes()[8] == b'T' && s.ends_with('Z')).then(|| s.to_string())
    };
    let parts: Vec<&str> = name.split('.').collect();
    match parts.first().copied()? {
        "duplicity-full" | "duplicity-full-signatures" => Some(SetId::Full(t(parts.get(1)?)?)),
        "duplicity-inc" | "duplicity-new-signatures" => {
            if *parts.get(2)? != "to" {
                return None;
            }
            Some(SetId::Inc(t(parts.get(1)?)?, t(parts.get(3)?)?))
        }
        _ => None,
    }
}

fn remote_names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// `YYYYMMDDTHHMMSSZ` -> epoch seconds.
fn t_to_epoch(t: &str) -> i64 {
    let n = |a: usize, b: usize| t[a..b].parse::<i32>().unwrap();
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = n(0, 4) - 1900;
    tm.tm_mon = n(4, 6) - 1;
    tm.tm_mday = n(6, 8);
    tm.tm_hour = n(9, 11);
    tm.tm_min = n(11, 13);
    tm.tm_sec = n(13, 15);
    unsafe { libc::timegm(&mut tm) as i64 }
}

/// epoch seconds -> `YYYYMMDDTHHMMSSZ`.
fn epoch_to_t(e: i64) -> String {
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt = e as libc::time_t;
    unsafe { libc::gmtime_r(&tt, &mut tm) };
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// A time as collection-status prints it (local time, asctime style), in a
/// whitespace-normalised form: `Tue Nov 4 06:36:06 2026`.
fn pretty(t: &str) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let tt = t_to_epoch(t) as libc::time_t;
    unsafe { libc::localtime_r(&tt, &mut tm) };
    format!(
        "{} {} {} {:02}:{:02}:{:02} {}",
        DAYS[tm.tm_wday as usize],
        MONS[tm.tm_mon as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

/// Normalise a printed time (`Tue Nov  4 06:36:06 2026` / `Tue Nov 04 ...`).
fn norm_time(words: &[&str]) -> String {
    format!(
        "{} {} {} {} {}",
        words[0],
        words[1],
        words[2].parse::<u32>().unwrap(),
        words[3],
        words[4]
    )
}

// ------------------------------------------------------- collection-status

/// One row of a "Type of backup set" table: (Full|Incremental, time, volumes).
type Row = (String, String, u32);

#[derive(Debug, PartialEq, Eq)]
struct Status {
    /// Chains in printed order (secondaries, then the primary), rows in order.
    chains: Vec<Vec<Row>>,
    /// "No orphaned or incomplete backup sets found."
    clean: bool,
}

fn parse_status(text: &str) -> Status {
    let mut chains: Vec<Vec<Row>> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Chain start time:") {
            chains.push(Vec::new());
            continue;
        }
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 7 && (w[0] == "Full" || w[0] == "Incremental") {
            if let Ok(n) = w[6].parse::<u32>() {
                chains
                    .last_mut()
                    .unwrap_or_else(|| panic!("set row before any chain:\n{text}"))
                    .push((w[0].to_string(), norm_time(&w[1..6]), n));
            }
        }
    }
    Status {
        chains,
        clean: text.contains("No orphaned or incomplete backup sets found."),
    }
}

/// The chains (set kinds and times; volumes not compared) `sets` form,
/// oldest chain first.
fn expected_chains(sets: &BTreeSet<SetId>) -> Vec<Vec<(String, String)>> {
    let mut chains: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut fulls: Vec<&SetId> = sets
        .iter()
        .filter(|s| matches!(s, SetId::Full(_)))
        .collect();
    fulls.sort_by_key(|s| s.time().to_string());
    for f in fulls {
        let mut rows = vec![("Full".to_string(), pretty(f.time()))];
        let mut end = f.time().to_string();
        loop {
            let next = sets
                .iter()
                .find(|s| matches!(s, SetId::Inc(a, _) if *a == end));
            match next {
                Some(s) => {
                    rows.push(("Incremental".to_string(), pretty(s.time())));
                    end = s.time().to_string();
                }
                None => break,
            }
        }
        chains.insert(end, rows);
    }
    chains.into_values().collect()
}

fn strip_vols(s: &Status) -> Vec<Vec<(String, String)>> {
    s.chains
        .iter()
        .map(|c| c.iter().map(|(k, t, _)| (k.clone(), t.clone())).collect())
        .collect()
}

/// collection-status of dupr, duplicity 3.2.1 and 0.8.22 (each with a fresh
/// archive dir named `tag`) agree with each other and with `sets`, with no
/// orphaned or incomplete sets.
fn check_status_agrees(ctx: &Ctx, sets: &BTreeSet<SetId>, tag: &str) {
    let url = ctx.url();
    let dupr_out = ctx.dupr_ok(&["collection-status", url.as_str()]);
    let dupr_text = lossy(&dupr_out.stdout);
    let dupr_status = parse_status(&dupr_text);
    let want = expected_chains(sets);
    assert_eq!(
        strip_vols(&dupr_status),
        want,
        "{tag}: dupr collection-status chains vs expected:\n{dupr_text}"
    );
    assert!(
        dupr_status.clean,
        "{tag}: dupr reports problems:\n{dupr_text}"
    );
    for v in Dup::ALL {
        let archive = ctx.env.path().join(format!("archive-{tag}-{}", v.label()));
        fs::create_dir_all(&archive).unwrap();
        let o = ctx.dup_with_archive(v, &archive, "collection-status", &[OsStr::new(&url)]);
        assert!(
            o.status.success(),
            "{tag}: duplicity {} collection-status: {}",
            v.label(),
            out_text(&o)
        );
        let text = lossy(&o.stdout);
        let st = parse_status(&text);
        assert_eq!(
            st,
            dupr_status,
            "{tag}: duplicity {} collection-status differs from dupr's\n--- duplicity ---\n{text}\n--- dupr ---\n{dupr_text}",
            v.label()
        );
    }
}

/// The newest state restores with dupr and duplicity 3.2.1 and equals `src`.
fn check_restore_newest(ctx: &Ctx, tag: &str) {
    let url = ctx.url();
    let r = ctx.env.restore_dir(&format!("{tag}-dupr"));
    ctx.dupr_ok(&[OsStr::new("restore"), OsStr::new(&url), r.as_os_str()]);
    assert_same_tree(&ctx.src(), &r);
    let r3 = ctx.env.restore_dir(&format!("{tag}-dup3"));
    ctx.dup_ok(Dup::V3, "restore", &[OsStr::new(&url), r3.as_os_str()]);
    assert_same_tree(&ctx.src(), &r3);
}

// ------------------------------------------------------- 1. retention

struct ThreeChains {
    /// All sets, in backup order: F1 I1a I1b F2 I2a F3.
    sets: Vec<SetId>,
    /// Remote listing after the six backups.
    names: BTreeSet<String>,
}

/// Three chains (full, inc, inc; full, inc; full) with a content change
/// before each backup; 2.1 s between the chains so a whole second lies
/// strictly between them.
fn three_chains(ctx: &Ctx) -> ThreeChains {
    let src = ctx.src();
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("big.bin"), pseudo_random_bytes(1_500_000, 9)).unwrap();
    let plan = [
        "full",
        "incremental",
        "incremental",
        "full",
        "incremental",
        "full",
    ];
    let mut sets = Vec::new();
    for (i, kind) in plan.iter().enumerate() {
        fs::write(src.join(format!("d/step-{i}.txt")), format!("step {i}\n")).unwrap();
        fs::write(
            src.join("changing.txt"),
            format!("state {i}\n").repeat(i + 1),
        )
        .unwrap();
        if i > 0 {
            fs::remove_file(src.join(format!("d/step-{}.txt", i - 1))).unwrap();
        }
        sets.push(ctx.backup(kind));
        let pause = if plan.get(i + 1) == Some(&"full") {
            2100
        } else {
            1100
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
    assert!(matches!(sets[0], SetId::Full(_)) && matches!(sets[1], SetId::Inc(..)));
    assert!(matches!(sets[3], SetId::Full(_)) && matches!(sets[5], SetId::Full(_)));
    let names = remote_names(&ctx.env.target());
    ThreeChains { sets, names }
}

fn names_of(names: &BTreeSet<String>, sets: &BTreeSet<SetId>) -> BTreeSet<String> {
    names
        .iter()
        .filter(|n| set_of(n).is_some_and(|s| sets.contains(&s)))
        .cloned()
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Run one deleting command (`cmd arg`) on the three chains and check
/// everything against `keep` (indexes into the six sets).
fn retention_case(mode: Mode, cmd: &str, arg: impl Fn(&ThreeChains) -> String, keep: &[usize]) {
    let ctx = Ctx::new(mode, PASS);
    let tc = three_chains(&ctx);
    let url = ctx.url();
    let target = ctx.env.target();
    let a = arg(&tc);
    let all: BTreeSet<SetId> = tc.sets.iter().cloned().collect();
    let kept: BTreeSet<SetId> = keep.iter().map(|&i| tc.sets[i].clone()).collect();
    let doomed: BTreeSet<SetId> = all.difference(&kept).cloned().collect();
    let doomed_names = names_of(&tc.names, &doomed);
    let kept_names: BTreeSet<String> = tc.names.difference(&doomed_names).cloned().collect();
    assert!(!doomed_names.is_empty());
    let pristine = ctx.env.path().join("pristine-target");
    copy_dir(&target, &pristine);

    // Without --force: nothing deleted, the files are listed.
    let o = ctx.dupr_ok(&[cmd, a.as_str(), url.as_str()]);
    assert_eq!(
        remote_names(&target),
        tc.names,
        "{cmd} without --force deleted something"
    );
    let text = lossy(&o.stdout);
    for n in &doomed_names {
        assert!(
            text.contains(n.as_str()),
            "{cmd} {a} without --force does not list {n}:\n{text}"
        );
    }
    for n in &kept_names {
        assert!(
            !text.contains(n.as_str()),
            "{cmd} {a} without --force lists kept {n}:\n{text}"
        );
    }

    // With --force: exactly the doomed files go.
    let o = ctx.dupr_ok(&[cmd, a.as_str(), "--force", url.as_str()]);
    assert_eq!(
        remote_names(&target),
        kept_names,
        "{cmd} {a} --force: remaining files\n{}",
        out_text(&o)
    );
    // ...from the cache too.
    let cache = ctx.cache_dir();
    let cached = remote_names(&cache);
    for n in &cached {
        if let Some(s) = set_of(n) {
            assert!(
                !doomed.contains(&s),
                "{cmd}: cache file {n} of a deleted set survived: {cached:?}"
            );
        }
    }
    for s in &kept {
        let has_manifest = cached
            .iter()
            .any(|n| set_of(n).as_ref() == Some(s) && n.contains(".manifest"));
        let has_sig = cached
            .iter()
            .any(|n| set_of(n).as_ref() == Some(s) && n.contains(".sigtar"));
        assert!(
            has_manifest && has_sig,
            "{cmd}: cache lost files of kept set {s:?}: {cached:?}"
        );
    }

    check_status_agrees(&ctx, &kept, "after");
    check_restore_newest(&ctx, "after");

    // A second --force run finds nothing more.
    ctx.dupr_ok(&[cmd, a.as_str(), "--force", url.as_str()]);
    assert_eq!(
        remote_names(&target),
        kept_names,
        "{cmd} second --force run"
    );

    // The same removal by each stock duplicity on a copy of the target.
    for v in Dup::ALL {
        let copy = ctx.env.path().join(format!("dup-target-{}", v.label()));
        copy_dir(&pristine, &copy);
        let archive = ctx.env.path().join(format!("archive-rm-{}", v.label()));
        fs::create_dir_all(&archive).unwrap();
        let curl = file_url(&copy);
        let o = ctx.dup_with_archive(
            v,
            &archive,
            cmd,
            &[OsStr::new(&a), OsStr::new("--force"), OsStr::new(&curl)],
        );
        assert!(
            o.status.success(),
            "duplicity {} {cmd}: {}",
            v.label(),
            out_text(&o)
        );
        // duplicity does not know dupr's block indexes: it leaves those of
        // the sets it deletes (dupr's cleanup removes them later).
        let no_index = |names: &BTreeSet<String>| -> BTreeSet<String> {
            names
                .iter()
                .filter(|n| !n.contains(".dupr-blocks."))
                .cloned()
                .collect()
        };
        assert_eq!(
            no_index(&remote_names(&copy)),
            no_index(&kept_names),
            "duplicity {} {cmd} {a} --force leaves other files than dupr\n{}",
            v.label(),
            out_text(&o)
        );
    }
}

#[test]
fn remove_older_than_between_chains() {
    // T = one second after chain 1's end, strictly before chain 2's start.
    retention_case(
        Mode::Plain,
        "remove-older-than",
        |tc| {
            let t = epoch_to_t(t_to_epoch(tc.sets[2].time()) + 1);
            assert!(t.as_str() < tc.sets[3].time());
            t
        },
        &[3, 4, 5],
    );
}

#[test]
fn remove_older_than_boundaries() {
    // end < T is required: T = chain 1's end time deletes nothing; T inside
    // chain 2 keeps chain 2 (newer sets depend on it); T = now never deletes
    // the primary chain.
    let ctx = Ctx::new(Mode::Plain, PASS);
    let tc = three_chains(&ctx);
    let url = ctx.url();
    let target = ctx.env.target();
    let o = ctx.dupr_ok(&[
        "remove-older-than",
        tc.sets[2].time(),
        "--force",
        url.as_str(),
    ]);
    assert_eq!(
        remote_names(&target),
        tc.names,
        "T = chain end must keep the chain\n{}",
        out_text(&o)
    );
    // Inside chain 2 (= its inc's time): chain 1 goes, chain 2 stays.
    let o = ctx.dupr_ok(&[
        "remove-older-than",
        tc.sets[4].time(),
        "--force",
        url.as_str(),
    ]);
    let keep: BTreeSet<SetId> = tc.sets[3..].iter().cloned().collect();
    assert_eq!(
        remote_names(&target),
        names_of(&tc.names, &keep),
        "{}",
        out_text(&o)
    );
    let all = format!("{}{}", lossy(&o.stdout), lossy(&o.stderr));
    assert!(
        all.contains("can't be deleted") || all.contains("depend"),
        "no warning that chain 2 has sets older than T that newer sets depend on:\n{all}"
    );
    // now: everything but the primary (newest) chain.
    let o = ctx.dupr_ok(&["remove-older-than", "now", "--force", url.as_str()]);
    let keep: BTreeSet<SetId> = [tc.sets[5].clone()].into_iter().collect();
    assert_eq!(
        remote_names(&target),
        names_of(&tc.names, &keep),
        "{}",
        out_text(&o)
    );
    check_status_agrees(&ctx, &keep, "now");
    check_restore_newest(&ctx, "now");
}

#[test]
fn remove_all_but_n_full_encrypted() {
    retention_case(
        Mode::Gpg,
        "remove-all-but-n-full",
        |_| "2".into(),
        &[3, 4, 5],
    );
}

#[test]
fn remove_all_but_n_full_more_than_chains_deletes_nothing() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    let tc = three_chains(&ctx);
    let url = ctx.url();
    for n in ["3", "4"] {
        let o = ctx.dupr_ok(&["remove-all-but-n-full", n, "--force", url.as_str()]);
        assert_eq!(
            remote_names(&ctx.env.target()),
            tc.names,
            "n = {n}\n{}",
            out_text(&o)
        );
        let o = ctx.dupr_ok(&["remove-all-inc-of-but-n-full", n, "--force", url.as_str()]);
        assert_eq!(
            remote_names(&ctx.env.target()),
            tc.names,
            "n = {n}\n{}",
            out_text(&o)
        );
    }
    // 0 is refused (duplicity: "n must be > 0").
    let o = ctx.dupr_run(&["remove-all-but-n-full", "0", "--force", url.as_str()]);
    assert!(!o.status.success(), "n = 0 accepted: {}", out_text(&o));
    assert_eq!(remote_names(&ctx.env.target()), tc.names);
}

#[test]
fn remove_all_inc_of_but_n_full() {
    retention_case(
        Mode::Plain,
        "remove-all-inc-of-but-n-full",
        |_| "1".into(),
        &[0, 3, 5],
    );
}

// ------------------------------------------------------- 2. cleanup

#[test]
fn cleanup_removes_incomplete_and_orphaned_sets_only() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    let src = ctx.src();
    fs::write(src.join("big.bin"), pseudo_random_bytes(2_500_000, 5)).unwrap();
    fs::write(src.join("f.txt"), "one\n").unwrap();
    let f1 = ctx.backup("full");
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(src.join("f.txt"), "two\n").unwrap();
    let i1 = ctx.backup("incremental");
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(src.join("f.txt"), "three\n").unwrap();
    let f2 = ctx.backup("full");
    let target = ctx.env.target();
    let url = ctx.url();
    let good = remote_names(&target);
    let SetId::Full(t_f2) = &f2 else {
        unreachable!()
    };
    let SetId::Inc(i1_start, i1_end) = &i1 else {
        unreachable!()
    };
    let _ = f1;

    // An incomplete full (a volume without manifest), one year after f2.
    let shift = |t: &str, years: i32| -> String {
        format!("{}{}", t[..4].parse::<i32>().unwrap() + years, &t[4..])
    };
    let t_inc = shift(t_f2, 1);
    let mut fake: BTreeSet<String> = BTreeSet::new();
    for n in &good {
        if set_of(n) == Some(f2.clone()) && n.contains(".vol1.") {
            let new = n.replace(t_f2.as_str(), &t_inc);
            fs::copy(target.join(n), target.join(&new)).unwrap();
            fake.insert(new);
        }
    }
    // An orphaned incremental (all its files: manifest, volume, new-sig):
    // i1 shifted by one year, so its start time ends no chain.
    let (o_start, o_end) = (shift(i1_start, 1), shift(i1_end, 1));
    for n in &good {
        if set_of(n) == Some(i1.clone()) {
            let new = n.replace(
                &format!("{i1_start}.to.{i1_end}"),
                &format!("{o_start}.to.{o_end}"),
            );
            fs::copy(target.join(n), target.join(&new)).unwrap();
            fake.insert(new);
        }
    }
    // Manifest, volume, signatures (a small incremental gets no block
    // index).
    assert_eq!(fake.len(), 1 + 3, "{fake:?}");
    // Foreign files: never touched.
    fs::write(target.join("README.txt"), "not duplicity's\n").unwrap();
    fs::write(target.join("duplicity-notes.txt"), "not a set either\n").unwrap();
    let before = remote_names(&target);

    // dupr's collection-status sees them.
    let o = ctx.dupr_ok(&["collection-status", url.as_str()]);
    let st_text = lossy(&o.stdout);
    assert!(
        !parse_status(&st_text).clean,
        "collection-status misses the extra sets:\n{st_text}"
    );
    // duplicity 3.2.1 agrees about what is wrong.
    let o3 = ctx.dup_ok(Dup::V3, "collection-status", &[OsStr::new(&url)]);
    let st3 = lossy(&o3.stdout);
    for needle in [
        "1 backup set(s) not part of any chain",
        "1 incomplete backup set(s)",
    ] {
        assert!(
            st3.contains(needle),
            "duplicity 3.2.1 status lacks {needle:?}:\n{st3}"
        );
        assert!(
            st_text.contains(needle),
            "dupr status lacks {needle:?}:\n{st_text}"
        );
    }

    // cleanup without --force lists exactly those, deletes nothing.
    let o = ctx.dupr_ok(&["cleanup", url.as_str()]);
    let text = lossy(&o.stdout);
    assert_eq!(
        remote_names(&target),
        before,
        "cleanup without --force deleted files"
    );
    for n in &before {
        let listed = text.contains(n.as_str());
        assert_eq!(
            listed,
            fake.contains(n),
            "cleanup listing {} {n}:\n{text}",
            if listed { "wrongly names" } else { "lacks" }
        );
    }
    // duplicity 3.2.1 would delete the same remote files.
    let o3 = ctx.dup_ok(Dup::V3, "cleanup", &[OsStr::new(&url)]);
    let t3 = lossy(&o3.stdout);
    let listing = t3
        .split("Found the following file(s) to delete:")
        .nth(1)
        .unwrap_or_else(|| panic!("duplicity 3.2.1 cleanup lists nothing:\n{t3}"));
    let dup_listed: BTreeSet<String> = listing
        .lines()
        .map(str::trim)
        .filter(|l| before.contains(*l))
        .map(str::to_string)
        .collect();
    // (all but dupr's block index, which duplicity does not know)
    let fake_without_index: BTreeSet<String> = fake
        .iter()
        .filter(|n| !n.contains(".dupr-blocks."))
        .cloned()
        .collect();
    assert_eq!(
        dup_listed, fake_without_index,
        "duplicity 3.2.1 cleanup would delete other files:\n{t3}"
    );
    assert_eq!(remote_names(&target), before);

    // cleanup --force deletes exactly those.
    let o = ctx.dupr_ok(&["cleanup", "--force", url.as_str()]);
    let mut want = good.clone();
    want.insert("README.txt".into());
    want.insert("duplicity-notes.txt".into());
    assert_eq!(
        remote_names(&target),
        want,
        "after cleanup --force\n{}",
        out_text(&o)
    );
    for n in remote_names(&ctx.cache_dir()) {
        assert!(
            !n.contains(&t_inc) && !n.contains(&o_start),
            "cache keeps {n}"
        );
    }
    // Nothing left to clean.
    let o = ctx.dupr_ok(&["cleanup", url.as_str()]);
    assert!(
        lossy(&o.stdout).contains("No extraneous files found"),
        "{}",
        out_text(&o)
    );
    let o = ctx.dupr_ok(&["cleanup", "--force", url.as_str()]);
    assert_eq!(remote_names(&target), want, "{}", out_text(&o));
    let sets: BTreeSet<SetId> = good.iter().filter_map(|n| set_of(n)).collect();
    check_status_agrees(&ctx, &sets, "cleaned");
    check_restore_newest(&ctx, "cleaned");
}

// ------------------------------------------------------- 3. verify

struct VerifyResult {
    code: Option<i32>,
    text: String,
    /// N of "Verify complete: N file(s) compared, M difference(s) found."
    compared: u64,
    /// M of the same line.
    differences: u64,
    /// Distinct paths named by `Difference found:` lines, in order.
    paths: Vec<String>,
}

fn parse_verify(o: &Output) -> VerifyResult {
    let stdout = lossy(&o.stdout);
    let mut compared = u64::MAX;
    let mut differences = u64::MAX;
    let mut paths: Vec<String> = Vec::new();
    for l in stdout.lines() {
        if let Some(rest) = l.strip_prefix("Verify complete: ") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            compared = w[0].parse().unwrap();
            differences = w[3].parse().unwrap();
        }
        if let Some(rest) = l.strip_prefix("Difference found: ") {
            let p = rest.split(": ").next().unwrap().to_string();
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    VerifyResult {
        code: o.status.code(),
        text: out_text(o),
        compared,
        differences,
        paths,
    }
}

fn verify(ctx: &Ctx, extra: &[&str], src: &Path) -> VerifyResult {
    let url = ctx.url();
    let mut args: Vec<OsString> = vec!["verify".into()];
    args.extend(extra.iter().map(OsString::from));
    args.push(url.into());
    args.push(src.as_os_str().to_os_string());
    parse_verify(&ctx.dupr_run(&args))
}

/// duplicity 3.2.1's verify: exit code and its "Verify complete" counts.
fn dup_verify(ctx: &Ctx, extra: &[&str], src: &Path) -> (Option<i32>, u64, u64, String) {
    let url = ctx.url();
    let mut rest: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
    rest.push(OsStr::new(&url));
    rest.push(src.as_os_str());
    let o = ctx.dup_with_archive(Dup::V3, &ctx.env.archive_dir(Dup::V3), "verify", &rest);
    let r = parse_verify(&o);
    (o.status.code(), r.compared, r.differences, r.text)
}

/// A full (T1, hello.txt "version one") and an incremental (T2, hello.txt
/// changed) of the tricky tree with a 3 MB file in 1 MiB volumes.
fn verify_setup(ctx: &Ctx) -> (SetId, SetId) {
    let src = ctx.src();
    make_tricky_tree(&src, 3_000_000);
    fs::write(src.join("hello.txt"), "version one\n").unwrap();
    set_mtime(&src.join("hello.txt"), 1_700_000_500);
    set_mtime(&src, 1_699_999_999);
    let t1 = ctx.backup("full");
    std::thread::sleep(Duration::from_millis(1100));
    fs::write(src.join("hello.txt"), "version two, longer\n").unwrap();
    set_mtime(&src, 1_699_999_999);
    let t2 = ctx.backup("incremental");
    (t1, t2)
}

#[test]
fn verify_compare_data() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    let src = ctx.src();
    let (t1, t2) = verify_setup(&ctx);
    let n_entries = listing_of_tree(&src).len() as u64;

    // Unchanged tree: 0 differences.
    let r = verify(&ctx, &["--compare-data"], &src);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.differences, 0, "{}", r.text);
    assert_eq!(
        r.compared, n_entries,
        "entries compared (tree has {n_entries}):\n{}",
        r.text
    );

    // -t of the full: hello.txt differs, nothing else.
    let r = verify(&ctx, &["--compare-data", "-t", t1.time()], &src);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert_eq!(r.paths, vec!["hello.txt".to_string()], "{}", r.text);
    let r = verify(&ctx, &["--compare-data", "-t", t2.time()], &src);
    assert_eq!((r.code, r.differences), (Some(0), 0), "{}", r.text);

    // Change content (same size, same mtime), permissions, add a file.
    let a = src.join("dir/a.txt");
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(&a).unwrap().mtime();
    fs::write(&a, "b\n").unwrap();
    set_mtime(&a, m);
    chmod(&src.join("private-0600"), 0o640);
    fs::write(src.join("added.txt"), "new\n").unwrap();
    set_mtime(&src, 1_699_999_999); // the root's mtime as backed up

    // Without --compare-data nothing local is compared.
    let r = verify(&ctx, &[], &src);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert!(r.text.contains("Verify complete"), "{}", r.text);
    assert_eq!(r.differences, 0, "{}", r.text);

    let r = verify(&ctx, &["--compare-data"], &src);
    assert_eq!(r.code, Some(1), "{}", r.text);
    let named: BTreeSet<&str> = r.paths.iter().map(|s| s.as_str()).collect();
    let want: BTreeSet<&str> = ["dir/a.txt", "private-0600", "added.txt"]
        .into_iter()
        .collect();
    assert_eq!(named, want, "paths named by the differences:\n{}", r.text);

    // duplicity 3.2.1 agrees that there are differences, and on which paths.
    let (code, _, m3, dtext) = dup_verify(&ctx, &["--compare-data"], &src);
    assert_eq!(code, Some(1), "duplicity 3.2.1 verify: {dtext}");
    assert_eq!(m3, 3, "duplicity 3.2.1 verify: {dtext}");
    for p in &want {
        assert!(
            dtext.contains(p),
            "duplicity 3.2.1 verify does not name {p}:\n{dtext}"
        );
    }

    // --path-to-restore restricts the comparison to a subtree, compared (as
    // by duplicity) with the local path given, here src/dir.
    let r = verify(
        &ctx,
        &["--compare-data", "--path-to-restore", "dir"],
        &src.join("dir"),
    );
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert_eq!(
        r.paths,
        vec!["a.txt".to_string()],
        "subtree verify:\n{}",
        r.text
    );

    // A corrupted volume: non-zero, naming the volume.
    let vols = full_volumes(&ctx.env.target());
    assert!(vols.len() >= 3, "want a multi-volume full: {vols:?}");
    let (_, victim) = &vols[1];
    flip_middle_byte(victim);
    let vname = victim.file_name().unwrap().to_string_lossy().into_owned();
    for extra in [&[][..], &["--compare-data"][..]] {
        let r = verify(&ctx, extra, &src);
        assert!(
            r.code.is_some_and(|c| c != 0),
            "corrupt volume accepted: {}",
            r.text
        );
        assert!(
            r.text.contains(&vname),
            "error does not name {vname}: {}",
            r.text
        );
    }
}

/// "N file(s) compared, M difference(s) found" count like duplicity's:
/// N counts every collated path (archive and source, so a new local file
/// too), M counts differing paths (one per path, however many attributes
/// differ).
#[test]
fn verify_counts_match_duplicity() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    let src = ctx.src();
    let (t1, _) = verify_setup(&ctx);
    let mut report = Vec::new();
    let mut check = |what: &str, extra: &[&str]| {
        let r = verify(&ctx, extra, &src);
        let (code, n3, m3, dtext) = dup_verify(&ctx, extra, &src);
        if (r.code, r.compared, r.differences) != (code, n3, m3) {
            report.push(format!(
                "{what}: dupr (exit {:?}, {} compared, {} differences) vs duplicity 3.2.1 (exit {code:?}, {n3}, {m3})\n--- dupr ---\n{}\n--- duplicity ---\n{dtext}",
                r.code, r.compared, r.differences, r.text
            ));
        }
    };
    check("unchanged", &["--compare-data"]);
    // hello.txt differs in mtime and data at T1: one differing path.
    let t1s = t1.time().to_string();
    check("-t T1", &["--compare-data", "-t", &t1s]);
    fs::write(src.join("added.txt"), "new\n").unwrap();
    set_mtime(&src, 1_699_999_999);
    check("new file", &["--compare-data"]);
    assert!(report.is_empty(), "{}", report.join("\n\n"));
}

/// duplicity compares directories' mtimes too (path.compare_verbose checks
/// mtime for regular files, directories and fifos).
#[test]
fn verify_reports_directory_mtime_change() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    let src = ctx.src();
    verify_setup(&ctx);
    set_mtime(&src.join("empty-dir"), 1_600_000_000);
    let r = verify(&ctx, &["--compare-data"], &src);
    let (code, _, m3, dtext) = dup_verify(&ctx, &["--compare-data"], &src);
    assert_eq!((code, m3), (Some(1), 1), "duplicity 3.2.1: {dtext}");
    assert!(dtext.contains("empty-dir"), "{dtext}");
    assert_eq!(
        r.code,
        Some(1),
        "dupr misses a directory mtime change: {}",
        r.text
    );
    assert_eq!(r.paths, vec!["empty-dir".to_string()], "{}", r.text);
}

// ------------------------------------------------------- 4. run lock

/// A python process holding `fcntl.lockf(LOCK_EX|LOCK_NB)` on `path` until
/// dropped.
struct PyLock {
    child: Child,
}

impl PyLock {
    fn hold(path: &Path) -> PyLock {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let script = "import fcntl,sys\n\
f=open(sys.argv[1],'a')\n\
fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n\
print('locked',flush=True)\n\
sys.stdin.read()\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "locked",
            "python could not take the lock on {}",
            path.display()
        );
        PyLock { child }
    }
}

impl Drop for PyLock {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Whether python can take the lock on `path` right now (probe, released at once).
fn py_can_lock(path: &Path) -> bool {
    let st = Command::new("python3")
        .arg("-c")
        .arg("import fcntl,sys\nf=open(sys.argv[1],'a')\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n sys.exit(7)\n")
        .arg(path)
        .status()
        .unwrap();
    match st.code() {
        Some(0) => true,
        Some(7) => false,
        other => panic!("lock probe: {other:?}"),
    }
}

fn assert_locked_out(o: &Output, what: &str) {
    let err = lossy(&o.stderr).to_lowercase();
    assert_eq!(
        o.status.code(),
        Some(23),
        "{what} with the lock held: {}",
        out_text(o)
    );
    assert!(
        err.contains("another") && err.contains("running"),
        "{what}: message should say another instance is running: {}",
        out_text(o)
    );
}

#[test]
fn lock_held_by_another_process_blocks_every_command() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    let src = ctx.src();
    fs::write(src.join("f.txt"), "locked content\n").unwrap();
    let url = ctx.url();
    let target = ctx.env.target();
    let cache_root = ctx.env.cache().join("dupr");

    // (a) Nothing exists yet: a locked first backup writes nothing.
    // The cache dir is `--archive-dir D --name N` -> D/N here.
    {
        let d = ctx.env.path().join("ad");
        let _l = PyLock::hold(&d.join("nm").join("lockfile"));
        let o = ctx.dupr_run(&[
            OsStr::new("--archive-dir"),
            d.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("nm"),
            src.as_os_str(),
            OsStr::new(&url),
        ]);
        assert_locked_out(&o, "first backup");
        assert!(
            remote_names(&target).is_empty(),
            "locked backup wrote {:?}",
            remote_names(&target)
        );
        // The lock is per cache dir: another --name runs.
        ctx.dupr_ok(&[
            OsStr::new("--archive-dir"),
            d.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("other"),
            OsStr::new("collection-status"),
            OsStr::new(&url),
        ]);
        // Stock duplicity on the same --archive-dir/--name refuses too.
        for v in Dup::ALL {
            let o = try_duplicity(
                v,
                [
                    OsStr::new("collection-status"),
                    OsStr::new("--no-encryption"),
                    OsStr::new("--archive-dir"),
                    d.as_os_str(),
                    OsStr::new("--name"),
                    OsStr::new("nm"),
                    OsStr::new(&url),
                ],
                &ctx.dup_env(),
            );
            let all = format!("{}{}", lossy(&o.stdout), lossy(&o.stderr));
            // Both versions exit 23 (Debian's 0.8.22 too, although the
            // reference, 10.5, says 2 for 0.8).
            assert_eq!(
                o.status.code(),
                Some(23),
                "duplicity {}: {}",
                v.label(),
                out_text(&o)
            );
            assert!(
                all.contains("Another duplicity instance is already running"),
                "duplicity {}: {}",
                v.label(),
                out_text(&o)
            );
        }
    }

    // A real backup, then lock its default cache dir.
    let t1 = ctx.backup("full");
    let cache = ctx.cache_dir();
    assert!(cache.starts_with(&cache_root));
    assert!(
        !cache.join("lockfile").exists(),
        "lockfile left after a clean run"
    );
    let before = remote_names(&target);
    let cache_before = remote_names(&cache);
    fs::write(src.join("f.txt"), "changed while locked\n").unwrap();
    let restore = ctx.env.restore_dir("locked");
    let lock = PyLock::hold(&cache.join("lockfile"));
    let t1s = t1.time().to_string();
    let runs: Vec<(&str, Vec<OsString>)> = vec![
        ("backup", vec![src.clone().into(), url.clone().into()]),
        (
            "full",
            vec!["full".into(), src.clone().into(), url.clone().into()],
        ),
        (
            "incremental",
            vec!["incremental".into(), src.clone().into(), url.clone().into()],
        ),
        (
            "restore",
            vec!["restore".into(), url.clone().into(), restore.clone().into()],
        ),
        (
            "verify",
            vec![
                "verify".into(),
                "--compare-data".into(),
                url.clone().into(),
                src.clone().into(),
            ],
        ),
        (
            "collection-status",
            vec!["collection-status".into(), url.clone().into()],
        ),
        (
            "list-current-files",
            vec!["list-current-files".into(), url.clone().into()],
        ),
        (
            "cleanup",
            vec!["cleanup".into(), "--force".into(), url.clone().into()],
        ),
        (
            "remove-older-than",
            vec![
                "remove-older-than".into(),
                "now".into(),
                "--force".into(),
                url.clone().into(),
            ],
        ),
        (
            "remove-all-but-n-full",
            vec![
                "remove-all-but-n-full".into(),
                "1".into(),
                "--force".into(),
                url.clone().into(),
            ],
        ),
        (
            "remove-all-inc-of-but-n-full",
            vec![
                "remove-all-inc-of-but-n-full".into(),
                "1".into(),
                "--force".into(),
                url.clone().into(),
            ],
        ),
        (
            "restore -t",
            vec![
                "-t".into(),
                t1s.clone().into(),
                url.clone().into(),
                restore.clone().into(),
            ],
        ),
    ];
    for (what, args) in &runs {
        let o = ctx.dupr_run(args);
        assert_locked_out(&o, what);
        // A refused run must not remove the holder's lockfile.
        assert!(
            cache.join("lockfile").exists(),
            "{what}: a locked-out run deleted the lockfile"
        );
        assert_eq!(
            remote_names(&target),
            before,
            "{what} touched the target while locked"
        );
        assert!(
            !restore.exists(),
            "{what} created the restore target while locked"
        );
    }
    let mut cache_now = remote_names(&cache);
    cache_now.remove("lockfile"); // python's
    assert_eq!(cache_now, cache_before, "locked runs changed the cache");
    // Duplicity pointed at dupr's cache dir refuses as well.
    let o = try_duplicity(
        Dup::V3,
        [
            OsStr::new("collection-status"),
            OsStr::new("--no-encryption"),
            OsStr::new("--archive-dir"),
            cache_root.as_os_str(),
            OsStr::new("--name"),
            cache.file_name().unwrap(),
            OsStr::new(&url),
        ],
        &ctx.dup_env(),
    );
    assert_eq!(o.status.code(), Some(23), "{}", out_text(&o));
    drop(lock);

    // Released: the backup runs.
    let t2 = ctx.backup("incremental");
    assert!(matches!(t2, SetId::Inc(..)));
    assert!(
        !cache.join("lockfile").exists(),
        "lockfile left after a clean run"
    );
    check_restore_newest(&ctx, "unlocked");
}

/// Wait until `cond` holds (polling), at most `secs`.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// ~200 MB of incompressible data in 40 files (plus a small one).
fn make_big_tree(src: &Path) {
    for i in 0..40u64 {
        fs::write(
            src.join(format!("r{i:02}.bin")),
            pseudo_random_bytes(5 << 20, 1000 + i),
        )
        .unwrap();
    }
    fs::write(src.join("small.txt"), "small\n").unwrap();
}

/// Start `dupr full --volsize 5 SRC URL` (plus `extra`) in the background,
/// wait for its first volume in `target` and freeze it with SIGSTOP (a
/// stopped process keeps its fcntl lock).
fn start_and_freeze(ctx: &Ctx, extra: &[&OsStr], target: &Path) -> Child {
    let mut child = Command::new(dupr_bin())
        .env_remove("PASSPHRASE")
        .env("LC_ALL", "C.UTF-8")
        .env("XDG_CACHE_HOME", ctx.env.cache())
        .current_dir(ctx.env.path())
        .args([
            "full",
            "--no-encryption",
            "--volsize",
            "5",
            "--no-print-statistics",
        ])
        .args(extra)
        .arg(ctx.src())
        .arg(file_url(target))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let vol1_seen = wait_for(120, || {
        remote_names(target)
            .iter()
            .any(|n| n.contains(".vol1.difftar"))
    });
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert!(vol1_seen, "no volume appeared in {}", target.display());
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup finished before it could be stopped; make the tree bigger"
    );
    child
}

/// duplicity `v` collection-status on `url` with the cache dir `root/name`.
fn dup_status_in(ctx: &Ctx, v: Dup, root: &Path, name: &OsStr, url: &str) -> Output {
    try_duplicity(
        v,
        [
            OsStr::new("collection-status"),
            OsStr::new("--no-encryption"),
            OsStr::new("--archive-dir"),
            root.as_os_str(),
            OsStr::new("--name"),
            name,
            OsStr::new(url),
        ],
        &ctx.dup_env(),
    )
}

fn assert_duplicity_locked_out(v: Dup, o: &Output, what: &str) {
    // Both versions exit 23 (Debian's 0.8.22 too, although the reference,
    // 10.5, says 2 for 0.8).
    assert_eq!(
        o.status.code(),
        Some(23),
        "duplicity {} {what}: {}",
        v.label(),
        out_text(o)
    );
    let all = format!("{}{}", lossy(&o.stdout), lossy(&o.stderr));
    assert!(
        all.contains("Another duplicity instance is already running"),
        "duplicity {} {what}: {}",
        v.label(),
        out_text(o)
    );
}

/// While a dupr backup runs (frozen mid-run) python, another dupr and
/// duplicity 0.8.22 cannot take the lock; after `kill -9` the stale lockfile
/// blocks nothing, the next backup succeeds, cleanup removes the interrupted
/// set and the newest state restores.
#[test]
fn killed_dupr_run_excludes_others_then_leaves_no_blocking_lock() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    let src = ctx.src();
    make_big_tree(&src);
    let url = ctx.url();
    let target = ctx.env.target();
    let cache_root = ctx.env.cache().join("dupr");

    let mut child = start_and_freeze(&ctx, &[], &target);
    let pid = child.id() as libc::pid_t;
    let cache = ctx.cache_dir();
    let lockfile = cache.join("lockfile");
    assert!(
        lockfile.exists(),
        "no lockfile in {} during a run",
        cache.display()
    );
    assert!(
        !py_can_lock(&lockfile),
        "dupr's lock is not an fcntl lock python sees"
    );
    let o = ctx.dupr_run(&[OsStr::new("collection-status"), OsStr::new(&url)]);
    assert_locked_out(&o, "dupr during a dupr run");
    let o = dup_status_in(
        &ctx,
        Dup::V08,
        &cache_root,
        cache.file_name().unwrap(),
        &url,
    );
    assert_duplicity_locked_out(Dup::V08, &o, "during a dupr run");
    assert!(lockfile.exists(), "lockfile gone after refused runs");

    // kill -9 (works on a stopped process).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
    assert!(
        lockfile.exists(),
        "the killed run should leave its lockfile (stale)"
    );
    assert!(py_can_lock(&lockfile), "a dead process's lock still held");

    // The stale lockfile does not block the next backup.
    let o = ctx.dupr_run(&[
        OsStr::new("--volsize"),
        OsStr::new("5"),
        OsStr::new("--no-print-statistics"),
        src.as_os_str(),
        OsStr::new(&url),
    ]);
    assert!(
        o.status.success(),
        "backup after a killed run: {}",
        out_text(&o)
    );
    assert!(!lockfile.exists(), "lockfile left after a clean run");

    // The interrupted set may be incomplete: cleanup removes it.
    let o = ctx.dupr_ok(&["cleanup", "--force", url.as_str()]);
    let o2 = ctx.dupr_ok(&["collection-status", url.as_str()]);
    let st_text = lossy(&o2.stdout);
    assert!(
        parse_status(&st_text).clean,
        "incomplete sets after cleanup --force:\n{}\n{st_text}",
        out_text(&o)
    );
    let o3 = ctx.dup_ok(Dup::V3, "collection-status", &[OsStr::new(&url)]);
    assert!(
        parse_status(&lossy(&o3.stdout)).clean,
        "duplicity 3.2.1: {}",
        out_text(&o3)
    );
    let r = ctx.env.restore_dir("after-kill");
    ctx.dupr_ok(&[OsStr::new("restore"), OsStr::new(&url), r.as_os_str()]);
    assert_same_tree(&src, &r);
}

/// A running dupr (with `--archive-dir D --name N`) makes duplicity 3.2.1
/// on the same `--archive-dir D --name N` refuse with exit 23; the dupr run
/// then completes normally.
#[test]
fn running_dupr_excludes_duplicity_3() {
    let ctx = Ctx::new(Mode::Plain, PASS);
    make_big_tree(&ctx.src());
    let target = ctx.env.target();
    let url = ctx.url();
    let d = ctx.env.path().join("ad");
    let mut child = start_and_freeze(
        &ctx,
        &[
            OsStr::new("--archive-dir"),
            d.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("shared"),
        ],
        &target,
    );
    let lockfile = d.join("shared/lockfile");
    assert!(lockfile.exists(), "no lockfile at {}", lockfile.display());
    let o = dup_status_in(&ctx, Dup::V3, &d, OsStr::new("shared"), &url);
    // Note: duplicity 3.2.1 unlinks the lockfile at exit even when it did
    // not get the lock (util.release_lockfile), so dupr's lock file may be
    // gone now; dupr's lock on the open inode is unaffected.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
    assert_duplicity_locked_out(Dup::V3, &o, "during a dupr run");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let st = child.wait().unwrap();
    assert!(
        st.success(),
        "the frozen dupr run failed after SIGCONT: {st:?}\n{err}"
    );
    assert!(!lockfile.exists(), "lockfile left after a clean run");
}
