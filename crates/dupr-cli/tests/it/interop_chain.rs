//! Incremental chains across implementations, with the real reference
//! duplicitys (0.8.22 and 3.2.1; never skipped: a missing one is a failure).
//!
//! 1. A dupr chain (full + 6 incrementals) exercising every kind of change
//!    (content, append, truncate, delete, re-create, file→dir→symlink→file,
//!    fifo→file, rename of files and directories, permission-only,
//!    mtime-only, multi-volume snapshots and multi-volume diffs with
//!    `--volsize 1`). Every point in time is restored by dupr and by both
//!    duplicitys and compared with a `cp -a` snapshot taken before that
//!    backup; `list-current-files -t T` of dupr equals duplicity 3.2.1's
//!    (and the snapshot's path set).
//! 2. A mixed chain on one target: dupr full, duplicity 3.2.1 incremental,
//!    dupr incremental, duplicity 0.8.22 incremental, dupr incremental;
//!    every point in time restores with dupr (warm and cold cache) and both
//!    duplicitys.
//! 3. Both of the above with `--no-encryption` and with symmetric OpenPGP
//!    (`PASSPHRASE`, same for every tool).
//! 4. Encryption specifics: gpg decrypts dupr's volumes/manifest/sigtar;
//!    dupr restores encrypted chains written by each duplicity; a wrong
//!    passphrase makes dupr's restore fail without creating the target.

use crate::common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const PASS: &str = "chain passphrase: äöü \"quoted\" 42";

/// The multi-volume file of the base tree (`big.bin` of the tricky tree).
const BIG: usize = 3_000_000;

use common::interop::{Ctx, Mode};

impl Ctx {
    /// `dupr [CMD] --volsize 1 SRC URL` (CMD None = the implicit form).
    fn dupr_backup(&self, cmd: Option<&str>) {
        let mut c = self.dupr();
        if let Some(cmd) = cmd {
            c.arg(cmd);
        }
        c.args(["--volsize", "1", "--no-print-statistics"])
            .arg(self.src())
            .arg(self.url())
            .assert()
            .success();
    }

    /// `duplicity CMD --volsize 1 SRC URL`.
    fn dup_backup(&self, v: Dup, cmd: &str) {
        let src = self.src();
        let url = self.url();
        self.dup(
            v,
            cmd,
            &[
                OsStr::new("--volsize"),
                OsStr::new("1"),
                src.as_os_str(),
                OsStr::new(&url),
            ],
        );
    }

    /// dupr restore of time `t` into a new directory `dest`, with the given
    /// `XDG_CACHE_HOME`.
    fn dupr_restore(&self, t: i64, dest: &Path, cache: &Path) {
        self.dupr()
            .env("XDG_CACHE_HOME", cache)
            .args(["restore", "-t", &t.to_string()])
            .arg(self.url())
            .arg(dest)
            .assert()
            .success();
    }

    fn dup_restore(&self, v: Dup, t: i64, dest: &Path) {
        let url = self.url();
        let ts = t.to_string();
        self.dup(
            v,
            "restore",
            &[
                OsStr::new("-t"),
                OsStr::new(&ts),
                OsStr::new(&url),
                dest.as_os_str(),
            ],
        );
    }

    fn dupr_listing(&self, t: i64) -> std::collections::BTreeSet<Vec<u8>> {
        let out = self
            .dupr()
            .args(["list-current-files", "-t", &t.to_string()])
            .arg(self.url())
            .assert()
            .success();
        parse_listing(&out.get_output().stdout)
    }

    fn dup_listing(&self, v: Dup, t: i64) -> std::collections::BTreeSet<Vec<u8>> {
        let url = self.url();
        let ts = t.to_string();
        let out = self.dup(
            v,
            "list-current-files",
            &[OsStr::new("-t"), OsStr::new(&ts), OsStr::new(&url)],
        );
        parse_listing(&out.stdout)
    }

    /// Copy the source tree (`cp -a`) to `snapshots/<n>` and return it.
    fn snapshot(&self, n: usize) -> PathBuf {
        let dir = self.env.path().join("snapshots");
        fs::create_dir_all(&dir).unwrap();
        let snap = dir.join(n.to_string());
        let st = Command::new("cp")
            .arg("-a")
            .arg(self.src())
            .arg(&snap)
            .status()
            .expect("run cp");
        assert!(
            st.success(),
            "cp -a {} {}",
            self.src().display(),
            snap.display()
        );
        snap
    }
}

/// Current time in whole seconds; then wait so that the next backup gets a
/// strictly later time than the returned one (backup times are whole seconds
/// taken when the backup starts, so `set time <= returned < next set time`).
fn mark_time() -> i64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    std::thread::sleep(Duration::from_millis(1100));
    t
}

fn show(set: &std::collections::BTreeSet<Vec<u8>>) -> Vec<String> {
    set.iter()
        .map(|p| lossy(p).escape_debug().to_string())
        .collect()
}

/// `assert_same_tree` with a description of what was compared.
fn assert_tree(expected: &Path, restored: &Path, what: &str) {
    let diffs = tree_diffs(expected, restored);
    if !diffs.is_empty() {
        let n = diffs.len();
        panic!(
            "{what}: restored tree {} differs from snapshot {} ({n} difference(s), first 30):\n  {}",
            restored.display(),
            expected.display(),
            diffs.iter().take(30).cloned().collect::<Vec<_>>().join("\n  ")
        );
    }
}

// ------------------------------------------------------------ tree mutation

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn append(p: &Path, data: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(p).unwrap();
    f.write_all(data).unwrap();
}

/// Overwrite `data` at `offset` in place (file size unchanged if it fits).
fn overwrite_at(p: &Path, offset: u64, data: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(p).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
}

fn truncate(p: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The base tree: the tricky tree (with a 3 MB `big.bin` that spans volumes at
/// `--volsize 1`) plus files the incremental steps change.
fn make_base(src: &Path) {
    make_tricky_tree(src, BIG);
    let r = |p: &str| src.join(p);
    write(&r("mod.txt"), "version 0\n".repeat(100).as_bytes());
    write(&r("append.log"), b"line 0\n");
    write(&r("trunc.bin"), &pseudo_random_bytes(100_000, 10));
    write(&r("del.txt"), b"to be deleted\n");
    write(&r("recreate.txt"), b"original\n");
    write(&r("morph"), b"I am a regular file\n");
    write(&r("old-name.txt"), &pseudo_random_bytes(5000, 11));
    write(&r("perm.txt"), b"permissions change\n");
    chmod(&r("perm.txt"), 0o644);
    write(&r("mtime.txt"), b"only the mtime changes\n");
    set_mtime(&r("mtime.txt"), 1_600_000_000);
    write(&r("same-size.bin"), &pseudo_random_bytes(65536, 12));
    fs::create_dir_all(r("dir2/y")).unwrap();
    write(&r("dir2/x.txt"), b"x\n");
    write(&r("dir2/y/z.txt"), &pseudo_random_bytes(7000, 13));
}

/// Number of incremental steps [`mutate`] knows.
const STEPS: usize = 6;

/// Apply change step `step` (1..=STEPS) to the tree at `src`.
fn mutate(src: &Path, step: usize) {
    let r = |p: &str| src.join(p);
    match step {
        1 => {
            // Modified content (same size), appended, truncated, deleted.
            write(&r("mod.txt"), "version 1\n".repeat(100).as_bytes());
            append(&r("append.log"), b"line 1\n");
            truncate(&r("trunc.bin"), 1000);
            fs::remove_file(r("del.txt")).unwrap();
            fs::remove_file(r("recreate.txt")).unwrap();
            // The multi-volume file modified in the middle.
            overwrite_at(&r("big.bin"), 1_500_000, &pseudo_random_bytes(4096, 20));
            // file -> dir
            fs::remove_file(r("morph")).unwrap();
            fs::create_dir(r("morph")).unwrap();
            write(&r("morph/child.txt"), b"inside the morphed dir\n");
        }
        2 => {
            // Re-created with other content.
            write(&r("recreate.txt"), b"re-created, different\n");
            // dir -> symlink
            fs::remove_dir_all(r("morph")).unwrap();
            symlink("hello.txt", r("morph")).unwrap();
            // Renamed (keeps its old mtime).
            fs::rename(r("old-name.txt"), r("new-name.txt")).unwrap();
            // Permission-only and mtime-only changes.
            chmod(&r("perm.txt"), 0o600);
            set_mtime(&r("mtime.txt"), 1_600_000_123);
            append(&r("append.log"), b"line 2\n");
        }
        3 => {
            // symlink -> file
            fs::remove_file(r("morph")).unwrap();
            write(&r("morph"), b"a regular file again\n");
            // Directory renamed, directory tree deleted.
            fs::rename(r("dir2"), r("dir2-renamed")).unwrap();
            fs::remove_dir_all(r("dir/sub")).unwrap();
            // A new file that spans volumes (multi-volume snapshot in an inc).
            write(&r("big2.bin"), &pseudo_random_bytes(2_500_000, 30));
            // big.bin modified in the middle again and grown.
            overwrite_at(&r("big.bin"), 1_000_000, b"changed again in step 3");
            append(&r("big.bin"), &pseudo_random_bytes(100_000, 31));
            // Permission-only change on a directory; a hard link removed.
            chmod(&r("empty-dir"), 0o700);
            fs::remove_file(r("hardlink-2")).unwrap();
        }
        4 => {
            // empty -> non-empty, non-empty -> empty.
            write(&r("empty"), b"no longer empty\n");
            truncate(&r("hello.txt"), 0);
            // mtime-only change of a directory.
            set_mtime(&r("empty-dir"), 1_600_000_456);
            // Same size, different content.
            write(&r("same-size.bin"), &pseudo_random_bytes(65536, 40));
            // fifo -> regular file, and a new fifo.
            fs::remove_file(r("fifo")).unwrap();
            write(&r("fifo"), b"not a fifo any more\n");
            mkfifo(&r("fifo2"), 0o600);
            // New nested directories.
            fs::create_dir_all(r("newdir/a")).unwrap();
            write(&r("newdir/a/b.txt"), b"new in step 4\n");
            // Second half of the big file rewritten: a diff spanning volumes.
            overwrite_at(
                &r("big.bin"),
                1_400_000,
                &pseudo_random_bytes(1_700_000, 41),
            );
        }
        5 => {
            // The multi-volume file truncated in the middle, big2 modified in
            // the middle.
            truncate(&r("big.bin"), 1_200_000);
            overwrite_at(&r("big2.bin"), 1_250_000, &pseudo_random_bytes(10_000, 50));
            // Different size; deleted file comes back; setuid bit dropped.
            write(&r("mod.txt"), "version five\n".repeat(77).as_bytes());
            write(&r("del.txt"), b"back again\n");
            chmod(&r("setuid"), 0o755);
            // A file replaced by a directory of the same name at depth.
            fs::remove_file(r("dir2-renamed/x.txt")).unwrap();
            fs::create_dir(r("dir2-renamed/x.txt")).unwrap();
            // mtime-only change of the root.
            set_mtime(src, 1_650_000_000);
        }
        6 => {
            // Nothing changes: an empty incremental.
        }
        _ => unreachable!("no step {step}"),
    }
}

// ------------------------------------------------------ target inspection

/// Volume counts per backup set on the target, keyed by the set's (end) time
/// string, in time order; `(is_full, volumes)`.
fn volumes_per_set(target: &Path) -> BTreeMap<String, (bool, usize)> {
    let mut out: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    for e in fs::read_dir(target).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let (full, rest) = if let Some(r) = name.strip_prefix("duplicity-full.") {
            (true, r)
        } else if let Some(r) = name.strip_prefix("duplicity-inc.") {
            (false, r)
        } else {
            continue;
        };
        let time = if full {
            rest.split('.').next().unwrap().to_string()
        } else {
            // START.to.END.rest
            rest.split('.').nth(2).unwrap().to_string()
        };
        let entry = out.entry(time).or_insert((full, 0));
        if name.contains(".difftar") {
            entry.1 += 1;
        }
    }
    out
}

/// Names of the manifests on the target, (full, inc) counts.
fn manifest_counts(target: &Path) -> (usize, usize) {
    let mut full = 0;
    let mut inc = 0;
    for e in fs::read_dir(target).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !name.contains(".manifest") {
            continue;
        }
        if name.starts_with("duplicity-full.") {
            full += 1;
        } else if name.starts_with("duplicity-inc.") {
            inc += 1;
        }
    }
    (full, inc)
}

// ------------------------------------------------------ verification

/// For every `(time, snapshot)`: dupr (with each cache in `dupr_caches`) and
/// both duplicitys restore `-t time` and must reproduce the snapshot; dupr's
/// and duplicity 3.2.1's `list-current-files -t time` must both equal the
/// snapshot's path set.
fn verify_points(ctx: &Ctx, points: &[(i64, PathBuf)], dupr_caches: &[PathBuf], label: &str) {
    for (i, (t, snap)) in points.iter().enumerate() {
        for (k, cache) in dupr_caches.iter().enumerate() {
            let dest = ctx.env.restore_dir(&format!("dupr-{i}-{k}"));
            ctx.dupr_restore(*t, &dest, cache);
            assert_tree(
                snap,
                &dest,
                &format!(
                    "{label}: dupr restore -t {t} (point {i}, cache {})",
                    cache.display()
                ),
            );
            fs::remove_dir_all(&dest).unwrap();
        }
        for v in Dup::ALL {
            let dest = ctx.env.restore_dir(&format!("{}-{i}", v.label()));
            ctx.dup_restore(v, *t, &dest);
            assert_tree(
                snap,
                &dest,
                &format!(
                    "{label}: duplicity {} restore -t {t} (point {i})",
                    v.label()
                ),
            );
            fs::remove_dir_all(&dest).unwrap();
        }
        let expected = listing_of_tree(snap);
        let dupr_list = ctx.dupr_listing(*t);
        let dup_list = ctx.dup_listing(Dup::V3, *t);
        assert_eq!(
            show(&dupr_list),
            show(&dup_list),
            "{label}: list-current-files -t {t} (point {i}): dupr vs duplicity 3.2.1"
        );
        assert_eq!(
            show(&dupr_list),
            show(&expected),
            "{label}: dupr list-current-files -t {t} (point {i}) vs the snapshot"
        );
    }
}

/// collection-status of dupr and duplicity 3.2.1 both see one chain with
/// `sets` sets and nothing orphaned.
fn check_collection_status(ctx: &Ctx, sets: usize, label: &str) {
    let out = ctx
        .dupr()
        .arg("collection-status")
        .arg(ctx.url())
        .assert()
        .success();
    let dupr_text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let url = ctx.url();
    let dup_text = String::from_utf8_lossy(
        &ctx.dup(Dup::V3, "collection-status", &[OsStr::new(&url)])
            .stdout,
    )
    .into_owned();
    for (who, text) in [("dupr", &dupr_text), ("duplicity 3.2.1", &dup_text)] {
        for needle in [
            "Found primary backup chain with matching signature chain".to_string(),
            format!("Number of contained backup sets: {sets}"),
            "No orphaned or incomplete backup sets found.".to_string(),
        ] {
            assert!(
                text.contains(&needle),
                "{label}: {who} collection-status lacks {needle:?}:\n{text}"
            );
        }
    }
}

// ------------------------------------------------------- 1. dupr chains

/// dupr makes a full + STEPS incrementals; every point in time restores with
/// dupr and both duplicitys and lists the same as duplicity 3.2.1.
fn dupr_chain(mode: Mode) {
    let label = format!("dupr chain ({mode:?})");
    let ctx = Ctx::new(mode, PASS);
    let src = ctx.src();
    make_base(&src);

    let mut points = Vec::new();
    // Exercise every spelling of an incremental, including the implicit one.
    let commands: [Option<&str>; STEPS + 1] = [
        Some("full"),
        Some("incremental"),
        Some("incr"),
        Some("inc"),
        None,
        Some("incremental"),
        None,
    ];
    for (step, cmd) in commands.into_iter().enumerate() {
        if step > 0 {
            mutate(&src, step);
        }
        let snap = ctx.snapshot(step);
        ctx.dupr_backup(cmd);
        points.push((mark_time(), snap));
        assert_eq!(
            manifest_counts(&ctx.env.target()),
            (1, step),
            "{label}: after step {step} ({cmd:?}) expected 1 full and {step} inc manifests"
        );
    }

    check_collection_status(&ctx, STEPS + 1, &label);
    verify_points(&ctx, &points, &[ctx.env.cache()], &label);

    // The volume layout really exercises multi-volume snapshots and diffs
    // (checked last so that a volume-size problem does not hide the restore
    // results above).
    let sets: Vec<(bool, usize)> = volumes_per_set(&ctx.env.target()).into_values().collect();
    assert_eq!(sets.len(), STEPS + 1, "{label}: sets {sets:?}");
    assert!(
        sets[0].0 && sets[0].1 >= 3,
        "{label}: full set volumes (--volsize 1, 3 MB random + 1 MiB zeros) {sets:?}"
    );
    assert!(
        sets[3].1 >= 2,
        "{label}: step 3 (new 2.5 MB file) volumes {sets:?}"
    );
    assert!(
        sets[4].1 >= 2,
        "{label}: step 4 (1.7 MB rewritten) volumes {sets:?}"
    );
}

#[test]
fn dupr_chain_restores_at_every_time_plain() {
    dupr_chain(Mode::Plain);
}

#[test]
fn dupr_chain_restores_at_every_time_encrypted() {
    dupr_chain(Mode::Gpg);
}

// ------------------------------------------------------- 2. mixed chains

/// Who makes each backup of the mixed chain.
#[derive(Clone, Copy, Debug)]
enum Maker {
    Dupr,
    Dup(Dup),
}

fn mixed_chain(mode: Mode) {
    let label = format!("mixed chain ({mode:?})");
    let ctx = Ctx::new(mode, PASS);
    let src = ctx.src();
    make_base(&src);

    let makers = [
        Maker::Dupr,
        Maker::Dup(Dup::V3),
        Maker::Dupr,
        Maker::Dup(Dup::V08),
        Maker::Dupr,
    ];
    let mut points = Vec::new();
    for (step, maker) in makers.into_iter().enumerate() {
        if step > 0 {
            mutate(&src, step);
        }
        let snap = ctx.snapshot(step);
        match (step, maker) {
            (0, Maker::Dupr) => ctx.dupr_backup(Some("full")),
            (_, Maker::Dupr) => ctx.dupr_backup(Some("incremental")),
            (_, Maker::Dup(v)) => ctx.dup_backup(v, "incremental"),
        }
        points.push((mark_time(), snap));
        assert_eq!(
            manifest_counts(&ctx.env.target()),
            (1, step),
            "{label}: after step {step} ({maker:?}) expected 1 full and {step} inc manifests"
        );
    }

    check_collection_status(&ctx, makers.len(), &label);
    let cold = ctx.env.path().join("cache-cold");
    fs::create_dir(&cold).unwrap();
    verify_points(&ctx, &points, &[ctx.env.cache(), cold], &label);
}

#[test]
fn mixed_chain_restores_everywhere_plain() {
    mixed_chain(Mode::Plain);
}

#[test]
fn mixed_chain_restores_everywhere_encrypted() {
    mixed_chain(Mode::Gpg);
}

// ------------------------------------------------ 4. encryption specifics

/// `gpg --batch --pinentry-mode loopback --passphrase P -d FILE` into `out`.
fn gpg_decrypt(gnupg: &Path, pass: &str, file: &Path, out: &Path) -> Output {
    Command::new("gpg")
        .env("GNUPGHOME", gnupg)
        .env("LC_ALL", "C.UTF-8")
        .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
        .args(["--passphrase", pass, "--output"])
        .arg(out)
        .arg("-d")
        .arg(file)
        .output()
        .expect("run gpg")
}

fn tar_list(file: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tf")
        .arg(file)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar -tf {} failed: {}",
        file.display(),
        lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn gpg_decrypts_dupr_volumes_manifest_and_signatures() {
    let ctx = Ctx::new(Mode::Gpg, PASS);
    let src = ctx.src();
    make_base(&src);
    ctx.dupr_backup(Some("full"));
    let target = ctx.env.target();

    let names: Vec<String> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for n in &names {
        assert!(
            n.ends_with(".gpg"),
            "unencrypted file on the target: {n} (all: {names:?})"
        );
    }

    let work = ctx.env.path().join("decrypted");
    fs::create_dir(&work).unwrap();
    let vols = full_volumes(&target);
    assert!(vols.len() >= 2, "expected several volumes: {vols:?}");

    // Volume 1 (and all the others) decrypt with gpg to a tar GNU tar reads.
    let mut all_entries = Vec::new();
    for (n, vol) in &vols {
        let out_tar = work.join(format!("vol{n}.tar"));
        let o = gpg_decrypt(&ctx.gnupg, PASS, vol, &out_tar);
        assert!(
            o.status.success(),
            "gpg -d {} failed:\n{}",
            vol.display(),
            lossy(&o.stderr)
        );
        all_entries.extend(tar_list(&out_tar));
    }
    for want in [
        "snapshot/hello.txt",
        "snapshot/dir/sub/b.txt",
        "snapshot/mod.txt",
    ] {
        assert!(
            all_entries.iter().any(|e| e == want),
            "{want} not in the decrypted volumes: {all_entries:?}"
        );
    }
    assert!(
        all_entries
            .iter()
            .any(|e| e.starts_with("multivol_snapshot/big.bin/")),
        "big.bin is not split across volumes: {all_entries:?}"
    );

    // Also via a pipe, exactly as in the documentation: gpg -d vol1 | tar t.
    let vol1 = &vols[0].1;
    let sh = Command::new("sh")
        .arg("-c")
        .arg("gpg --batch --no-tty --pinentry-mode loopback --passphrase \"$P\" -d \"$V\" | tar t")
        .env("GNUPGHOME", &ctx.gnupg)
        .env("P", PASS)
        .env("V", vol1)
        .output()
        .unwrap();
    assert!(
        // Volume 1 always starts with the root entry; which files follow
        // depends on where the volume boundary fell.
        sh.status.success() && String::from_utf8_lossy(&sh.stdout).starts_with("snapshot/./"),
        "gpg -d | tar t failed ({}):\n{}\n{}",
        sh.status,
        lossy(&sh.stdout),
        lossy(&sh.stderr)
    );

    // The manifest decrypts to the text format.
    let manifest = full_manifest(&target);
    let plain_manifest = work.join("manifest");
    let o = gpg_decrypt(&ctx.gnupg, PASS, &manifest, &plain_manifest);
    assert!(o.status.success(), "gpg -d manifest: {}", lossy(&o.stderr));
    let text = fs::read(&plain_manifest).unwrap();
    assert!(
        text.starts_with(b"Hostname "),
        "decrypted manifest: {}",
        lossy(&text)
    );
    assert_eq!(parse_manifest(&text).len(), vols.len());

    // The signature tar decrypts to a tar of signature/ entries.
    let sig = names
        .iter()
        .find(|n| n.starts_with("duplicity-full-signatures."))
        .expect("a full-signatures file");
    let plain_sig = work.join("sigtar");
    let o = gpg_decrypt(&ctx.gnupg, PASS, &target.join(sig), &plain_sig);
    assert!(o.status.success(), "gpg -d sigtar: {}", lossy(&o.stderr));
    let sig_entries = tar_list(&plain_sig);
    assert!(
        sig_entries.iter().any(|e| e == "signature/big.bin"),
        "sigtar entries: {sig_entries:?}"
    );

    // The wrong passphrase does not decrypt it.
    let o = gpg_decrypt(
        &ctx.gnupg,
        "not the passphrase",
        vol1,
        &work.join("bad.tar"),
    );
    assert!(!o.status.success(), "gpg decrypted with a wrong passphrase");
}

#[test]
fn dupr_restores_encrypted_chains_written_by_duplicity() {
    for v in Dup::ALL {
        let ctx = Ctx::new(Mode::Gpg, PASS);
        let src = ctx.src();
        make_base(&src);
        let mut points = Vec::new();
        for step in 0..=3 {
            if step > 0 {
                mutate(&src, step);
            }
            let snap = ctx.snapshot(step);
            ctx.dup_backup(v, if step == 0 { "full" } else { "incremental" });
            points.push((mark_time(), snap));
        }
        let target_files: Vec<String> = fs::read_dir(ctx.env.target())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            target_files.iter().any(|n| n.contains(".difftar.gpg")),
            "duplicity {} wrote no encrypted volumes: {target_files:?}",
            v.label()
        );
        // dupr has never seen this target: its cache is empty.
        for (i, (t, snap)) in points.iter().enumerate() {
            let dest = ctx.env.restore_dir(&format!("dupr-{i}"));
            ctx.dupr_restore(*t, &dest, &ctx.env.cache());
            assert_tree(
                snap,
                &dest,
                &format!(
                    "dupr restore -t {t} (point {i}) of duplicity {}'s encrypted chain",
                    v.label()
                ),
            );
            assert_eq!(
                show(&ctx.dupr_listing(*t)),
                show(&listing_of_tree(snap)),
                "dupr list-current-files -t {t} of duplicity {}'s encrypted chain",
                v.label()
            );
        }
    }
}

/// dupr restore with the wrong passphrase fails, says so, and leaves no
/// target behind; with its cache warm (only volumes need decrypting) and cold
/// (the manifests/signatures need it first).
#[test]
fn wrong_passphrase_fails_and_creates_no_target() {
    let ctx = Ctx::new(Mode::Gpg, PASS);
    let src = ctx.src();
    make_base(&src);
    ctx.dupr_backup(Some("full"));
    mark_time();
    mutate(&src, 1);
    ctx.dupr_backup(Some("incremental"));

    let cold = ctx.env.path().join("cache-cold");
    fs::create_dir(&cold).unwrap();
    for (which, cache) in [("warm", ctx.env.cache()), ("cold", cold.clone())] {
        let dest = ctx.env.restore_dir(&format!("wrong-{which}"));
        let out = ctx
            .env
            .dupr()
            .env("XDG_CACHE_HOME", &cache)
            .env("PASSPHRASE", "this is not the passphrase")
            .arg("restore")
            .arg(ctx.url())
            .arg(&dest)
            .assert()
            .failure();
        let o = out.get_output();
        let stderr = lossy(&o.stderr);
        assert!(
            stderr.to_lowercase().contains("passphrase"),
            "{which} cache: stderr does not mention the passphrase:\n{stderr}"
        );
        let left: Vec<_> = if dest.exists() {
            tree_paths(&dest).into_iter().map(|p| lossy(&p)).collect()
        } else {
            Vec::new()
        };
        assert!(
            left.is_empty(),
            "{which} cache: wrong-passphrase restore left files in {}: {left:?}",
            dest.display()
        );
    }

    // The right passphrase still works afterwards (nothing was poisoned).
    let dest = ctx.env.restore_dir("right");
    ctx.dupr()
        .env("XDG_CACHE_HOME", &cold)
        .arg("restore")
        .arg(ctx.url())
        .arg(&dest)
        .assert()
        .success();
    assert_tree(
        &src,
        &dest,
        "restore with the right passphrase after wrong ones",
    );
}

/// `--volsize 1` gives volumes of about 1 MiB with encryption too, as with
/// `--no-encryption` and as duplicity does (its encrypted volumes of random
/// data are ~1.03 MiB): every volume at most 1.25 MiB.
#[test]
fn encrypted_volumes_honour_volsize() {
    for mode in [Mode::Plain, Mode::Gpg] {
        let ctx = Ctx::new(mode, PASS);
        let src = ctx.src();
        write(&src.join("random.bin"), &pseudo_random_bytes(4_000_000, 99));
        ctx.dupr_backup(Some("full"));
        let sizes: Vec<u64> = full_volumes(&ctx.env.target())
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .collect();
        assert!(
            sizes.len() >= 4 && sizes.iter().all(|&s| s <= 1_310_720),
            "{mode:?}: dupr --volsize 1 volume sizes for 4 MB of random data: {sizes:?} \
             (expected >= 4 volumes of <= 1.25 MiB each)"
        );
    }
}
