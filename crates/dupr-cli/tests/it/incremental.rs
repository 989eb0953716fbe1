//! Incremental behaviour of dupr through the real binary (`--no-encryption`):
//!
//! 1. `--full-if-older-than` switches between incremental and full
//!    (`duplicity-inc.*` vs `duplicity-full.*`, two chains in
//!    collection-status), intervals like `14D` are accepted.
//! 2. `incremental` without a chain: exit 17, nothing written.
//! 3. Source path mismatch (exit 42, both paths named, nothing uploaded;
//!    `--allow-source-mismatch` proceeds) and hostname mismatch (exit 3),
//!    and a remote manifest that differs from the cached one (exit 5).
//! 4. Corrupt or missing signature files: corrupt cache + remote copy stop
//!    the incremental before anything is uploaded; a missing cached copy is
//!    rebuilt from the target; no signatures at all -> `incremental` fails
//!    (17) and the implicit backup falls back to a full.
//! 5. Change detection (reference 2.8 plus dupr's size extension): content
//!    change with restored mtime and a different block count is caught,
//!    same size is missed (like duplicity), permission-only changes,
//!    no-change incrementals, deletions (`deleted/` entries, Filelist).
//! 6. A delta that cannot be applied at restore: exit non-zero naming the
//!    path, every other file still restored.
//! 7. `restore -t` with an epoch, an ISO time, tomorrow's date (latest) and
//!    an interval reaching before the full (oldest chain).

use crate::common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

// ------------------------------------------------------------- helpers

/// Sleep long enough that the next backup gets a later (whole-second) set time.
fn tick() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Run dupr (isolated cache) with `--no-encryption` plus `args`.
fn run<S: AsRef<OsStr>>(env: &Env, args: &[S]) -> Output {
    let mut c = env.dupr();
    c.arg("--no-encryption");
    for a in args {
        c.arg(a.as_ref());
    }
    c.output().expect("run dupr")
}

/// Like [`run`], panicking unless dupr succeeds.
fn ok<S: AsRef<OsStr>>(env: &Env, args: &[S]) -> Output {
    let o = run(env, args);
    assert!(
        o.status.success(),
        "dupr {:?} failed: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        show(&o)
    );
    o
}

/// `dupr <kind> SRC URL` (kind "" = implicit backup) plus extra options.
fn backup(env: &Env, kind: &str, src: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if !kind.is_empty() {
        args.push(kind.to_string());
    }
    args.push(src.to_str().unwrap().to_string());
    args.push(env.target_url());
    run(env, &args)
}

fn backup_ok(env: &Env, kind: &str, src: &Path, extra: &[&str]) -> Output {
    let o = backup(env, kind, src, extra);
    assert!(
        o.status.success(),
        "backup {kind} {} failed: {}",
        src.display(),
        show(&o)
    );
    o
}

/// `dupr restore [extra] URL DEST` into a fresh restore dir; returns it and the output.
fn restore(env: &Env, name: &str, extra: &[&str]) -> (PathBuf, Output) {
    let dest = env.restore_dir(name);
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.push("restore".into());
    args.push(env.target_url());
    args.push(dest.to_str().unwrap().into());
    (dest.clone(), run(env, &args))
}

fn restore_ok(env: &Env, name: &str, extra: &[&str]) -> PathBuf {
    let (dest, o) = restore(env, name, extra);
    assert!(o.status.success(), "restore {extra:?} failed: {}", show(&o));
    dest
}

/// File names in the target directory.
fn target_names(env: &Env) -> BTreeSet<String> {
    match fs::read_dir(env.target()) {
        Err(_) => BTreeSet::new(),
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    }
}

/// Names in the target starting with `prefix` and containing `needle`.
fn names_like(env: &Env, prefix: &str, needle: &str) -> Vec<String> {
    target_names(env)
        .into_iter()
        .filter(|n| n.starts_with(prefix) && n.contains(needle))
        .collect()
}

fn full_manifests(env: &Env) -> Vec<String> {
    names_like(env, "duplicity-full.", ".manifest")
}

fn inc_manifests(env: &Env) -> Vec<String> {
    names_like(env, "duplicity-inc.", ".manifest")
}

fn md5_hex(s: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run md5sum");
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)[..32].to_string()
}

/// dupr's cache directory for the env's target: `$XDG_CACHE_HOME/dupr/<md5(url)>`.
fn cache_dir(env: &Env) -> PathBuf {
    env.cache().join("dupr").join(md5_hex(&env.target_url()))
}

fn cache_names(env: &Env) -> BTreeSet<String> {
    match fs::read_dir(cache_dir(env)) {
        Err(_) => BTreeSet::new(),
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
    }
}

/// The only full sigtar name on the target.
fn full_sigtar_name(env: &Env) -> String {
    let v = names_like(env, "duplicity-full-signatures.", ".sigtar");
    assert_eq!(v.len(), 1, "one full sigtar expected: {v:?}");
    v.into_iter().next().unwrap()
}

/// `cp -a from to`.
fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// Write `data` to `p`, keeping `p`'s mtime (and its parent's).
fn write_keep_mtime(p: &Path, data: &[u8]) {
    let old = fs::symlink_metadata(p).unwrap();
    let parent = p.parent().unwrap();
    let pold = fs::symlink_metadata(parent).unwrap();
    fs::write(p, data).unwrap();
    set_mtime(p, std::os::unix::fs::MetadataExt::mtime(&old));
    set_mtime(parent, std::os::unix::fs::MetadataExt::mtime(&pold));
}

/// A small tree with fixed mtimes.
fn small_tree(src: &Path) {
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    fs::write(src.join("dir/b.txt"), b"bravo\n").unwrap();
    fs::write(src.join("data.bin"), pseudo_random_bytes(20_000, 11)).unwrap();
    fs::write(src.join("z.txt"), b"zulu\n").unwrap();
    for (i, p) in ["a.txt", "data.bin", "dir/b.txt", "dir", "z.txt"]
        .iter()
        .enumerate()
    {
        set_mtime(&src.join(p), 1_700_000_000 + i as i64);
    }
    set_mtime(src, 1_690_000_000);
}

/// Parse a `YYYYMMDDTHHMMSSZ` time string to epoch seconds.
fn parse_timestr(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(4, 6), n(6, 8));
    let (hh, mm, ss) = (n(9, 11), n(11, 13), n(13, 15));
    // days_from_civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86400 + hh * 3600 + mm * 60 + ss
}

/// End times (epoch) of the sets on the target, sorted.
fn set_times(env: &Env) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::new();
    for n in full_manifests(env) {
        out.push(parse_timestr(&n["duplicity-full.".len()..][..16]));
    }
    for n in inc_manifests(env) {
        let to = n.find(".to.").unwrap() + 4;
        out.push(parse_timestr(&n[to..to + 16]));
    }
    out.sort();
    out
}

/// The `Filelist` records of a manifest: (type, unquoted path).
fn filelist(manifest: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_list = false;
    let mut count = None;
    for line in manifest.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"Filelist ") {
            count = Some(text(rest).trim().parse::<usize>().unwrap());
            in_list = true;
            continue;
        }
        if in_list && line.starts_with(b"    ") {
            let t = text(line);
            let t = t.trim_start();
            let (kind, path) = t.split_once(' ').unwrap();
            let path = manifest_unquote(path.trim_start().as_bytes());
            out.push((kind.to_string(), text(&path)));
        }
    }
    let count = count.expect("manifest has a Filelist line");
    assert_eq!(count, out.len(), "Filelist count vs records");
    out
}

/// The manifest text of the newest incremental.
fn last_inc_manifest(env: &Env) -> Vec<u8> {
    let m = inc_manifests(env);
    let last = m.last().expect("an incremental manifest");
    fs::read(env.target().join(last)).unwrap()
}

/// The (single) volume of the newest incremental.
fn last_inc_volume(env: &Env) -> PathBuf {
    let m = inc_manifests(env);
    let last = m.last().expect("an incremental manifest");
    let stem = last.strip_suffix(".manifest").unwrap();
    let vols = names_like(env, &format!("{stem}.vol"), ".difftar");
    assert_eq!(vols.len(), 1, "one volume expected: {vols:?}");
    env.target().join(&vols[0])
}

fn gunzip(p: &Path) -> Vec<u8> {
    let o = Command::new("gzip").arg("-dc").arg(p).output().unwrap();
    assert!(o.status.success(), "gzip -dc {}: {}", p.display(), show(&o));
    o.stdout
}

/// Entry names of a gzipped tar (`gzip -dc | tar t`).
fn tar_names(p: &Path) -> Vec<String> {
    let o = Command::new("tar").arg("-tzf").arg(p).output().unwrap();
    assert!(o.status.success(), "tar -tzf {}: {}", p.display(), show(&o));
    text(&o.stdout).lines().map(str::to_string).collect()
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

// ------------------------------------------------ 1. --full-if-older-than

#[test]
fn full_if_older_than_switches_between_inc_and_full() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    assert_eq!(full_manifests(&env).len(), 1);

    // Recent full: an incremental.
    tick();
    fs::write(src.join("a.txt"), b"alpha 2\n").unwrap();
    backup_ok(&env, "", &src, &["--full-if-older-than", "1h"]);
    assert_eq!(full_manifests(&env).len(), 1, "{:?}", target_names(&env));
    assert_eq!(inc_manifests(&env).len(), 1, "{:?}", target_names(&env));
    assert_eq!(names_like(&env, "duplicity-inc.", ".vol1.difftar").len(), 1);
    assert_eq!(
        names_like(&env, "duplicity-new-signatures.", ".sigtar").len(),
        1
    );

    // Full older than 1 s: a new full, a second chain.
    std::thread::sleep(Duration::from_millis(2100));
    fs::write(src.join("a.txt"), b"alpha 3\n").unwrap();
    backup_ok(&env, "", &src, &["--full-if-older-than", "1s"]);
    assert_eq!(full_manifests(&env).len(), 2, "{:?}", target_names(&env));
    assert_eq!(inc_manifests(&env).len(), 1, "{:?}", target_names(&env));
    assert_eq!(
        names_like(&env, "duplicity-full-signatures.", ".sigtar").len(),
        2
    );
    let st = text(&ok(&env, &["collection-status", &env.target_url()]).stdout);
    assert!(
        st.contains("Found 1 secondary backup chain"),
        "two chains expected:\n{st}"
    );
    assert!(
        st.contains("Found primary backup chain with matching signature chain"),
        "{st}"
    );

    // An interval in days is accepted (and the new full is recent: inc).
    tick();
    fs::write(src.join("a.txt"), b"alpha 4\n").unwrap();
    backup_ok(&env, "", &src, &["--full-if-older-than", "14D"]);
    assert_eq!(full_manifests(&env).len(), 2, "{:?}", target_names(&env));
    assert_eq!(inc_manifests(&env).len(), 2, "{:?}", target_names(&env));

    // `incremental` with an expired full also makes a full (as duplicity).
    std::thread::sleep(Duration::from_millis(2100));
    fs::write(src.join("a.txt"), b"alpha 5\n").unwrap();
    backup_ok(&env, "incremental", &src, &["--full-if-older-than", "1s"]);
    assert_eq!(full_manifests(&env).len(), 3, "{:?}", target_names(&env));
    assert_eq!(inc_manifests(&env).len(), 2);

    // The latest state restores.
    let r = restore_ok(&env, "latest", &[]);
    assert_same_tree(&src, &r);
}

#[test]
fn full_if_older_than_rejects_garbage_without_writing() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    let before = target_names(&env);
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let o = backup(&env, "", &src, &["--full-if-older-than", "yesterdayish"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("yesterdayish"), "{}", show(&o));
    assert_eq!(before, target_names(&env));
}

// ------------------------------------------- 2. incremental without a chain

#[test]
fn incremental_on_empty_target_fails_17_and_writes_nothing() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    // Target does not exist.
    let o = backup(&env, "incremental", &src, &[]);
    assert_eq!(o.status.code(), Some(17), "{}", show(&o));
    let e = text(&o.stderr);
    assert!(
        e.contains("signature") && e.contains("full backup"),
        "message should say there is no signature chain and to run a full backup: {e}"
    );
    assert!(target_names(&env).is_empty(), "{:?}", target_names(&env));

    // Target exists and is empty.
    fs::create_dir(env.target()).unwrap();
    let o = backup(&env, "incremental", &src, &[]);
    assert_eq!(o.status.code(), Some(17), "{}", show(&o));
    assert!(target_names(&env).is_empty(), "{:?}", target_names(&env));
    assert!(
        cache_names(&env).iter().all(|n| n == "lockfile"),
        "cache got files: {:?}",
        cache_names(&env)
    );

    // The implicit backup makes a full there.
    backup_ok(&env, "", &src, &[]);
    assert_eq!(full_manifests(&env).len(), 1);
    assert!(inc_manifests(&env).is_empty());
}

// ------------------------------------------------- 3. source/host mismatch

#[test]
fn source_path_mismatch_exits_42_and_uploads_nothing() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    let other = env.path().join("elsewhere");
    copy_tree(&src, &other);
    fs::write(other.join("new.txt"), b"only in the copy\n").unwrap();
    tick();
    let before = target_names(&env);
    for kind in ["incremental", ""] {
        let o = backup(&env, kind, &other, &[]);
        assert_eq!(o.status.code(), Some(42), "{kind:?}: {}", show(&o));
        let e = text(&o.stderr);
        assert!(
            e.contains(src.to_str().unwrap()) && e.contains(other.to_str().unwrap()),
            "error should name both {} and {}: {e}",
            src.display(),
            other.display()
        );
        assert_eq!(before, target_names(&env), "{kind:?} uploaded something");
    }
    backup_ok(&env, "incremental", &other, &["--allow-source-mismatch"]);
    assert_eq!(inc_manifests(&env).len(), 1);
    let r = restore_ok(&env, "other", &[]);
    assert_same_tree(&other, &r);
}

/// `Localdir` is compared after dropping `.` components and trailing
/// slashes: `src` and `./src/` are the same source.
#[test]
fn equivalent_source_spellings_are_no_mismatch() {
    let env = Env::new();
    small_tree(&env.src());
    ok(&env, &["full", "src", &env.target_url()]);
    tick();
    fs::write(env.src().join("a.txt"), b"changed\n").unwrap();
    ok(&env, &["incremental", "./src/", &env.target_url()]);
    tick();
    fs::write(env.src().join("z.txt"), b"changed too\n").unwrap();
    ok(&env, &["incremental", "src//.", &env.target_url()]);
    assert_eq!(inc_manifests(&env).len(), 2);
    let m = text(&last_inc_manifest(&env));
    assert!(m.contains("\nLocaldir src\n"), "{m}");
    let r = restore_ok(&env, "latest", &[]);
    assert_same_tree(&env.src(), &r);
}

#[test]
fn dry_run_incremental_writes_nothing() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    fs::write(src.join("new.txt"), b"new\n").unwrap();
    let (before, cache_before) = (target_names(&env), cache_names(&env));
    backup_ok(&env, "incremental", &src, &["--dry-run"]);
    assert_eq!(before, target_names(&env));
    assert_eq!(cache_before, cache_names(&env));
    backup_ok(&env, "incremental", &src, &[]);
    let fl: BTreeSet<(String, String)> = filelist(&last_inc_manifest(&env)).into_iter().collect();
    let want: BTreeSet<(String, String)> = [("changed", "a.txt"), ("new", "new.txt")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(fl, want);
}

/// Replace the `Hostname` line of the last set's manifest (cache and target).
fn set_manifest_hostname(env: &Env, manifest: &str, host: &str, remote: bool, cached: bool) {
    let mut paths = Vec::new();
    if remote {
        paths.push(env.target().join(manifest));
    }
    if cached {
        paths.push(cache_dir(env).join(manifest));
    }
    for p in paths {
        let t = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        let t = text(&t);
        let mut out = String::new();
        let mut done = false;
        for line in t.split_inclusive('\n') {
            if line.starts_with("Hostname ") {
                out.push_str(&format!("Hostname {host}\n"));
                done = true;
            } else {
                out.push_str(line);
            }
        }
        assert!(done, "no Hostname line in {}", p.display());
        fs::write(&p, out).unwrap();
    }
}

#[test]
fn hostname_mismatch_exits_3() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    let m = full_manifests(&env).remove(0);
    set_manifest_hostname(&env, &m, "some-other-host", true, true);
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let before = target_names(&env);
    let o = backup(&env, "incremental", &src, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(text(&o.stderr).contains("some-other-host"), "{}", show(&o));
    assert_eq!(before, target_names(&env));
    backup_ok(&env, "incremental", &src, &["--allow-source-mismatch"]);
    assert_eq!(inc_manifests(&env).len(), 1);
    let r = restore_ok(&env, "after", &[]);
    assert_same_tree(&src, &r);
}

/// Reference 4.4: before an incremental, the last set's remote manifest is
/// compared with the cached one; a difference is fatal (exit 5).
#[test]
fn remote_manifest_differing_from_cache_exits_5() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    let m = full_manifests(&env).remove(0);
    // Only the remote copy changes.
    set_manifest_hostname(&env, &m, "some-other-host", true, false);
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    // Enough new data for several 1 MB volumes: the check runs beside the
    // walk, and none of them may be stored before it has failed.
    fs::write(src.join("big.bin"), pseudo_random_bytes(3_500_000, 7)).unwrap();
    let before = target_names(&env);
    let cached = cache_names(&env);
    for extra in [&["--volsize", "1"][..], &["--dry-run"][..]] {
        let o = backup(&env, "incremental", &src, extra);
        assert_eq!(
            o.status.code(),
            Some(5),
            "a remote manifest that differs from the cached one must stop the incremental ({extra:?}): {}",
            show(&o)
        );
        assert!(
            text(&o.stderr).contains("does not match the local cache"),
            "{}",
            show(&o)
        );
        assert_eq!(before, target_names(&env), "{extra:?}");
        assert_eq!(cached, cache_names(&env), "{extra:?}");
    }
}

// --------------------------------------------- 4. corrupt/missing sigtars

fn assert_sig_failure(env: &Env, o: &Output, before: &BTreeSet<String>, sig: &str) {
    assert!(
        !o.status.success(),
        "incremental on a corrupt signature chain must fail: {}",
        show(o)
    );
    eprintln!("signature failure: {}", show(o));
    let e = text(&o.stderr);
    assert!(e.contains(sig), "error should name {sig}: {e}");
    assert!(
        e.contains("full backup"),
        "error should suggest a full backup: {e}"
    );
    assert_eq!(
        before,
        &target_names(env),
        "nothing may be uploaded after a signature failure"
    );
    assert!(inc_manifests(env).is_empty());
}

/// dupr goes beyond duplicity here: 0.8.22 happily runs the incremental on
/// such a sigtar (checked by hand), but dupr promises to read the whole chain
/// before writing anything (ops/backup.rs `incremental_plan`).
#[test]
fn corrupt_sigtar_in_cache_and_target_stops_incremental() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    fs::write(src.join("big.bin"), pseudo_random_bytes(300_000, 5)).unwrap();
    set_mtime(&src.join("big.bin"), 1_700_000_100);
    set_mtime(&src, 1_690_000_000);
    backup_ok(&env, "full", &src, &[]);
    let sig = full_sigtar_name(&env);
    flip_middle_byte(&env.target().join(&sig));
    flip_middle_byte(&cache_dir(&env).join(&sig));
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let before = target_names(&env);
    let o = backup(&env, "incremental", &src, &[]);
    assert_sig_failure(&env, &o, &before, &sig);
}

/// A damaged gzip trailer (CRC-32) is only noticed when the sigtar is read to
/// its end; the incremental must still refuse it.
#[test]
fn sigtar_with_bad_gzip_crc_stops_incremental() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    let sig = full_sigtar_name(&env);
    for p in [env.target().join(&sig), cache_dir(&env).join(&sig)] {
        let mut d = fs::read(&p).unwrap();
        let n = d.len();
        d[n - 8] ^= 0x55; // first byte of the CRC-32
        fs::write(&p, d).unwrap();
    }
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let before = target_names(&env);
    let o = backup(&env, "incremental", &src, &[]);
    assert_sig_failure(&env, &o, &before, &sig);
}

/// Only the remote copy is corrupt and the cache is empty: the download
/// fails, naming the file, nothing is uploaded, no temp file is left.
#[test]
fn corrupt_remote_sigtar_with_empty_cache_stops_incremental() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    fs::write(src.join("big.bin"), pseudo_random_bytes(300_000, 5)).unwrap();
    set_mtime(&src.join("big.bin"), 1_700_000_100);
    set_mtime(&src, 1_690_000_000);
    backup_ok(&env, "full", &src, &[]);
    let sig = full_sigtar_name(&env);
    flip_middle_byte(&env.target().join(&sig));
    fs::remove_dir_all(env.cache().join("dupr")).unwrap();
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let before = target_names(&env);
    let o = backup(&env, "incremental", &src, &[]);
    let leftovers: Vec<String> = cache_names(&env)
        .into_iter()
        .filter(|n| n.contains("tmp"))
        .collect();
    assert_sig_failure(&env, &o, &before, &sig);
    assert!(
        leftovers.is_empty(),
        "temporary files left in the cache: {leftovers:?}"
    );
}

#[test]
fn missing_cached_sigtar_is_rebuilt_from_target() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    let sig = full_sigtar_name(&env);
    let cached = cache_dir(&env).join(&sig);
    assert!(cached.is_file(), "cache should hold {sig}");
    fs::remove_file(&cached).unwrap();
    tick();
    fs::write(
        src.join("a.txt"),
        b"changed after the cache lost its sigtar\n",
    )
    .unwrap();
    backup_ok(&env, "incremental", &src, &[]);
    assert_eq!(inc_manifests(&env).len(), 1);
    assert!(cached.is_file(), "{sig} should be back in the cache");
    // The incremental is a real one: only a.txt changed.
    let fl = filelist(&last_inc_manifest(&env));
    assert_eq!(fl, vec![("changed".to_string(), "a.txt".to_string())]);
    let r = restore_ok(&env, "latest", &[]);
    assert_same_tree(&src, &r);

    // Whole cache gone: same.
    fs::remove_dir_all(env.cache().join("dupr")).unwrap();
    tick();
    fs::write(src.join("z.txt"), b"zulu changed, cache gone\n").unwrap();
    backup_ok(&env, "incremental", &src, &[]);
    assert_eq!(inc_manifests(&env).len(), 2);
    let fl = filelist(&last_inc_manifest(&env));
    assert_eq!(fl, vec![("changed".to_string(), "z.txt".to_string())]);
    let r = restore_ok(&env, "latest2", &[]);
    assert_same_tree(&src, &r);
}

#[test]
fn no_signatures_incremental_fails_17_backup_falls_back_to_full() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    let sig = full_sigtar_name(&env);
    fs::remove_file(env.target().join(&sig)).unwrap();
    fs::remove_dir_all(env.cache().join("dupr")).unwrap();
    tick();
    fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let before = target_names(&env);
    let o = backup(&env, "incremental", &src, &[]);
    assert_eq!(o.status.code(), Some(17), "{}", show(&o));
    assert!(text(&o.stderr).contains("full backup"), "{}", show(&o));
    assert_eq!(before, target_names(&env));

    // The remote sigtar gone but the cached copy kept: the remote is
    // authoritative (duplicity drops the cached copy), still 17.
    backup_ok(&env, "full", &src, &[]); // second chain, fresh cache
    let sigs = names_like(&env, "duplicity-full-signatures.", ".sigtar");
    assert_eq!(sigs.len(), 1);
    fs::remove_file(env.target().join(&sigs[0])).unwrap();
    assert!(cache_dir(&env).join(&sigs[0]).is_file());
    tick();
    let before = target_names(&env);
    let o = backup(&env, "incremental", &src, &[]);
    assert_eq!(o.status.code(), Some(17), "{}", show(&o));
    assert_eq!(before, target_names(&env));

    // The implicit backup makes a full instead.
    fs::write(src.join("a.txt"), b"changed again\n").unwrap();
    backup_ok(&env, "", &src, &[]);
    assert_eq!(full_manifests(&env).len(), 3, "{:?}", target_names(&env));
    assert!(inc_manifests(&env).is_empty());
    let r = restore_ok(&env, "latest", &[]);
    assert_same_tree(&src, &r);
}

// ---------------------------------------------------- 5. change detection

#[test]
fn change_detection() {
    let env = Env::new();
    let src = env.src();
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("grow.txt"), pseudo_random_bytes(1000, 1)).unwrap();
    fs::write(src.join("same.txt"), b"0123456789abcdef\n").unwrap();
    fs::write(src.join("perm.txt"), b"permissions only\n").unwrap();
    fs::write(src.join("dir/gone.txt"), b"to be deleted\n").unwrap();
    fs::write(src.join("keep.txt"), b"unchanged\n").unwrap();
    chmod(&src.join("perm.txt"), 0o644);
    for (i, p) in [
        "dir/gone.txt",
        "dir",
        "grow.txt",
        "keep.txt",
        "perm.txt",
        "same.txt",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&src.join(p), 1_700_000_000 + i as i64);
    }
    set_mtime(&src, 1_690_000_000);
    backup_ok(&env, "full", &src, &[]);
    let same_old = fs::read(src.join("same.txt")).unwrap();

    // (d) nothing changed: Filelist 0, a volume with no entries (or the root).
    tick();
    backup_ok(&env, "incremental", &src, &[]);
    let check_empty_inc = |what: &str| {
        let m = last_inc_manifest(&env);
        assert!(
            filelist(&m).is_empty(),
            "{what}: Filelist should be empty:\n{}",
            text(&m)
        );
        let vol = last_inc_volume(&env);
        let tar = gunzip(&vol);
        if !tar.iter().all(|&b| b == 0) {
            let names = tar_names(&vol);
            assert!(
                names.iter().all(|n| n == "snapshot/./" || n == "snapshot/"),
                "{what}: volume should be empty or hold only the root: {names:?}"
            );
        }
    };
    check_empty_inc("no change");

    // (b) same size, content changed, mtime restored: missed (like duplicity).
    tick();
    write_keep_mtime(&src.join("same.txt"), b"0123456789ABCDEF\n");
    backup_ok(&env, "incremental", &src, &[]);
    check_empty_inc("same size, mtime restored");
    assert_eq!(inc_manifests(&env).len(), 2);

    // (a) size changed past the old signature's block count, mtime restored:
    // dupr's extension catches it. (c) permission-only change. (e) deletion.
    tick();
    write_keep_mtime(&src.join("grow.txt"), &pseudo_random_bytes(3000, 2));
    chmod(&src.join("perm.txt"), 0o600);
    fs::remove_file(src.join("dir/gone.txt")).unwrap();
    backup_ok(&env, "incremental", &src, &[]);
    let fl: BTreeSet<(String, String)> = filelist(&last_inc_manifest(&env)).into_iter().collect();
    let want: BTreeSet<(String, String)> = [
        ("changed", "grow.txt"),
        ("changed", "perm.txt"),
        ("deleted", "dir/gone.txt"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(fl, want, "{}", text(&last_inc_manifest(&env)));
    let names = tar_names(&last_inc_volume(&env));
    assert!(
        names.contains(&"deleted/dir/gone.txt".to_string()),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n == "diff/grow.txt" || n == "snapshot/grow.txt"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n == "diff/perm.txt" || n == "snapshot/perm.txt"),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("keep.txt") || n.ends_with("same.txt")),
        "unchanged files must not be in the volume: {names:?}"
    );

    let r = restore_ok(&env, "latest", &[]);
    assert_eq!(mode_of(&r.join("perm.txt")), 0o600);
    assert_eq!(
        fs::read(r.join("grow.txt")).unwrap(),
        pseudo_random_bytes(3000, 2)
    );
    assert!(!r.join("dir/gone.txt").exists());
    assert_eq!(
        fs::read(r.join("same.txt")).unwrap(),
        same_old,
        "a same-size change with a restored mtime is not backed up"
    );
    // Everything else equals the source.
    let expected = env.path().join("expected");
    copy_tree(&src, &expected);
    write_keep_mtime(&expected.join("same.txt"), &same_old);
    assert_same_tree(&expected, &r);
}

// ------------------------------------------ 6. a delta that does not apply

const REWRITE_DELTA_PY: &str = r#"
import gzip, io, sys, tarfile
vol, entry = sys.argv[1], sys.argv[2]
raw = gzip.decompress(open(vol, 'rb').read())
src = tarfile.open(fileobj=io.BytesIO(raw), mode='r:')
out = io.BytesIO()
dst = tarfile.open(fileobj=out, mode='w:', format=tarfile.PAX_FORMAT)
found = False
for m in src.getmembers():
    data = src.extractfile(m).read() if m.isreg() else None
    if m.name == entry:
        # RS_DELTA_MAGIC, COPY(start u32 0x7fffffff, len u8 0x10), END
        data = b'rs\x026' + b'\x4d\x7f\xff\xff\xff\x10' + b'\x00'
        m.size = len(data)
        found = True
    dst.addfile(m, io.BytesIO(data) if data is not None else None)
dst.close()
assert found, 'no entry ' + entry + ' in ' + repr(src.getnames())
open(vol, 'wb').write(gzip.compress(out.getvalue()))
"#;

#[test]
fn delta_past_end_of_basis_fails_restore_of_that_path_only() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    backup_ok(&env, "full", &src, &[]);
    tick();
    // data.bin: a few bytes changed in the middle (-> diff/ entry);
    // z.txt: new content (-> diff/ too); new.txt: new file (snapshot/).
    let mut d = fs::read(src.join("data.bin")).unwrap();
    d[10_000..10_010].copy_from_slice(b"CHANGED!!!");
    fs::write(src.join("data.bin"), &d).unwrap();
    fs::write(src.join("z.txt"), b"zulu, second version\n").unwrap();
    fs::write(src.join("new.txt"), b"new in the incremental\n").unwrap();
    backup_ok(&env, "incremental", &src, &[]);
    let vol = last_inc_volume(&env);
    let names = tar_names(&vol);
    assert!(
        names.contains(&"diff/data.bin".to_string()),
        "expected a diff/ entry: {names:?}"
    );

    // Sanity: the untouched chain restores.
    let r = restore_ok(&env, "good", &[]);
    assert_same_tree(&src, &r);

    // Corrupt the delta, keep the manifests' hashes consistent.
    let old_sha = sha1_file(&vol);
    let st = Command::new("python3")
        .arg("-c")
        .arg(REWRITE_DELTA_PY)
        .arg(&vol)
        .arg("diff/data.bin")
        .status()
        .unwrap();
    assert!(st.success(), "python rewrite of {}", vol.display());
    let new_sha = sha1_file(&vol);
    assert_ne!(old_sha, new_sha);
    let manifest = inc_manifests(&env).pop().unwrap();
    for p in [
        env.target().join(&manifest),
        cache_dir(&env).join(&manifest),
    ] {
        let t = text(&fs::read(&p).unwrap());
        assert!(t.contains(&old_sha), "{} lacks {old_sha}", p.display());
        fs::write(&p, t.replace(&old_sha, &new_sha)).unwrap();
    }

    let (r, o) = restore(&env, "bad", &[]);
    assert!(
        !o.status.success(),
        "restore with an unusable delta must fail: {}",
        show(&o)
    );
    eprintln!("restore with a bad delta: {}", show(&o));
    let e = text(&o.stderr);
    assert!(e.contains("data.bin"), "error should name data.bin: {e}");
    // Every other path is restored correctly.
    let expected = env.path().join("expected");
    copy_tree(&src, &expected);
    let root_mtime = std::os::unix::fs::MetadataExt::mtime(&fs::metadata(&src).unwrap());
    fs::remove_file(expected.join("data.bin")).unwrap();
    set_mtime(&expected, root_mtime);
    // Like duplicity, the file whose delta fails is left out.
    assert!(
        !r.join("data.bin").exists(),
        "data.bin cannot be restored and must not be written"
    );
    assert_same_tree(&expected, &r);
}

// ------------------------------------------------------ 7. restore -t TIME

#[test]
fn restore_at_times() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src);
    let snap = |name: &str| {
        let p = env.path().join(format!("snap-{name}"));
        copy_tree(&src, &p);
        p
    };
    backup_ok(&env, "full", &src, &[]);
    let a = snap("a");
    tick();
    fs::write(src.join("a.txt"), b"alpha, state B\n").unwrap();
    fs::write(src.join("dir/new.txt"), b"new in B\n").unwrap();
    backup_ok(&env, "incremental", &src, &[]);
    let b = snap("b");
    tick();
    fs::remove_file(src.join("a.txt")).unwrap();
    fs::write(src.join("dir/new.txt"), b"changed in C\n").unwrap();
    chmod(&src.join("z.txt"), 0o600);
    backup_ok(&env, "incremental", &src, &[]);
    let c = snap("c");

    let times = set_times(&env);
    assert_eq!(times.len(), 3, "{:?}", target_names(&env));
    let (t0, t1, t2) = (times[0], times[1], times[2]);
    assert!(t0 < t1 && t1 < t2);

    // Epoch seconds: exactly each set time.
    for (t, want, name) in [(t0, &a, "t0"), (t1, &b, "t1"), (t2, &c, "t2")] {
        let r = restore_ok(&env, name, &["-t", &t.to_string()]);
        assert_same_tree(want, &r);
    }
    // Between sets: the older one.
    let r = restore_ok(&env, "between", &["-t", &(t2 - 1).to_string()]);
    assert_same_tree(&b, &r);
    // W3C date-time in UTC.
    let iso = {
        let o = Command::new("date")
            .args(["-u", "-d", &format!("@{t1}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        text(&o.stdout).trim().to_string()
    };
    let r = restore_ok(&env, "iso", &["-t", &iso]);
    assert_same_tree(&b, &r);
    // Tomorrow's date (local midnight, after every set): the latest state.
    let tomorrow = {
        let o = Command::new("date")
            .args(["-d", "tomorrow", "+%Y-%m-%d"])
            .output()
            .unwrap();
        text(&o.stdout).trim().to_string()
    };
    let r = restore_ok(&env, "tomorrow", &["-t", &tomorrow]);
    assert_same_tree(&c, &r);
    // An hour ago is before the full: duplicity uses the oldest chain's full.
    let r = restore_ok(&env, "hour-ago", &["-t", "1h"]);
    assert_same_tree(&a, &r);
    // Before the full by epoch as well.
    let r = restore_ok(&env, "before-full", &["-t", &(t0 - 100).to_string()]);
    assert_same_tree(&a, &r);
    // now = latest.
    let r = restore_ok(&env, "now", &["-t", "now"]);
    assert_same_tree(&c, &r);

    // list-current-files at t1 lists state B.
    let o = ok(
        &env,
        &[
            "-t",
            &t1.to_string(),
            "list-current-files",
            &env.target_url(),
        ],
    );
    assert_eq!(parse_listing(&o.stdout), listing_of_tree(&b));
}
