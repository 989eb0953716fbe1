//! Full backups across implementations, with the real reference duplicitys
//! (0.8.22 and 3.2.1; never skipped: a missing one is a failure):
//!
//! 1. dupr writes, duplicity restores / lists / reports collection status;
//! 2. duplicity writes, dupr restores (whole tree, one file, one directory) and lists;
//! 3. GNU tar reads dupr's gzip'd volumes;
//! 4. a single-path restore only needs the volumes whose manifest range
//!    covers the path, while a full restore needs them all.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Enough for several 1 MiB volumes and a file that spans volumes.
const BIG: usize = 3_000_000;

/// The path of the tricky tree's ~300-byte deep file.
fn deep_file() -> String {
    let mut p = String::new();
    for i in 0..4 {
        p.push_str(&format!("{i}-{}/", "d".repeat(60)));
    }
    p.push_str(&format!("deep-{}.txt", "f".repeat(40)));
    p
}

/// `dupr full --no-encryption --volsize 1 SRC URL` (must succeed).
fn dupr_full(env: &Env) {
    env.dupr()
        .args(["full", "--no-encryption", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
}

/// `duplicity full --no-encryption --volsize 1 SRC URL` with `v`'s archive dir.
fn duplicity_full(env: &Env, v: Dup) {
    let archive = env.archive_dir(v);
    run_duplicity(
        v,
        [
            OsStr::new("full"),
            OsStr::new("--no-encryption"),
            OsStr::new("--volsize"),
            OsStr::new("1"),
            OsStr::new("--archive-dir"),
            archive.as_os_str(),
            env.src().as_os_str(),
            OsStr::new(&env.target_url()),
        ],
        &[],
    );
}

/// `dupr list-current-files` of the env's target, as a path set.
fn dupr_listing(env: &Env) -> std::collections::BTreeSet<Vec<u8>> {
    let out = env
        .dupr()
        .args(["list-current-files", "--no-encryption"])
        .arg(env.target_url())
        .assert()
        .success();
    parse_listing(&out.get_output().stdout)
}

/// duplicity `v`'s `list-current-files` of the env's target, as a path set.
fn duplicity_listing(env: &Env, v: Dup) -> std::collections::BTreeSet<Vec<u8>> {
    let archive = env.archive_dir(v);
    let out = run_duplicity(
        v,
        [
            OsStr::new("list-current-files"),
            OsStr::new("--no-encryption"),
            OsStr::new("--archive-dir"),
            archive.as_os_str(),
            OsStr::new(&env.target_url()),
        ],
        &[],
    );
    parse_listing(&out.stdout)
}

fn show(set: &std::collections::BTreeSet<Vec<u8>>) -> Vec<String> {
    set.iter()
        .map(|p| lossy(p).escape_debug().to_string())
        .collect()
}

/// Assert that a restored single file equals the source file (bytes, mode, mtime).
fn assert_same_file(src: &Path, restored: &Path) {
    let (a, b) = (fs::read(src).unwrap(), fs::read(restored).unwrap());
    assert!(
        a == b,
        "{} differs from {} ({} vs {} bytes)",
        restored.display(),
        src.display(),
        b.len(),
        a.len()
    );
    let (ma, mb) = (fs::metadata(src).unwrap(), fs::metadata(restored).unwrap());
    assert_eq!(
        ma.mode() & 0o7777,
        mb.mode() & 0o7777,
        "mode of {}",
        restored.display()
    );
    assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", restored.display());
}

// ------------------------------------------------------- 1. dupr → duplicity

#[test]
fn dupr_full_backup_is_restored_listed_and_reported_by_duplicity() {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, BIG);
    dupr_full(&env);

    let vols = full_volumes(&env.target());
    assert!(
        vols.len() >= 3,
        "expected a multi-volume backup, got {vols:?}"
    );
    let manifest = parse_manifest(&fs::read(full_manifest(&env.target())).unwrap());
    assert_eq!(
        manifest.len(),
        vols.len(),
        "manifest volume records vs volume files"
    );

    let dupr_paths = dupr_listing(&env);
    assert_eq!(
        show(&dupr_paths),
        show(&listing_of_tree(&src)),
        "dupr list-current-files vs the source tree"
    );

    for v in Dup::ALL {
        let archive = env.archive_dir(v);
        let dest = env.restore_dir(v.label());
        run_duplicity(
            v,
            [
                OsStr::new("restore"),
                OsStr::new("--no-encryption"),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                OsStr::new(&env.target_url()),
                dest.as_os_str(),
            ],
            &[],
        );
        assert_same_tree(&src, &dest);

        assert_eq!(
            show(&duplicity_listing(&env, v)),
            show(&dupr_paths),
            "duplicity {} list-current-files vs dupr's",
            v.label()
        );

        let out = run_duplicity(
            v,
            [
                OsStr::new("collection-status"),
                OsStr::new("--no-encryption"),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                OsStr::new(&env.target_url()),
            ],
            &[],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let n = vols.len();
        for needle in [
            "Found primary backup chain with matching signature chain".to_string(),
            "Number of contained backup sets: 1".to_string(),
            format!("Total number of contained volumes: {n}"),
            "No orphaned or incomplete backup sets found.".to_string(),
        ] {
            assert!(
                text.contains(&needle),
                "duplicity {} collection-status lacks {needle:?}:\n{text}",
                v.label()
            );
        }
        let rows: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("Full ") || l.starts_with("Incremental "))
            .collect();
        assert_eq!(rows.len(), 1, "set rows in:\n{text}");
        assert!(
            rows[0].ends_with(&format!(" {n}")),
            "full set row should end in {n} volumes: {:?}",
            rows[0]
        );
    }
}

// ------------------------------------------------------- 2. duplicity → dupr

fn duplicity_backup_restored_by_dupr(v: Dup) {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, BIG);
    duplicity_full(&env, v);
    assert!(full_volumes(&env.target()).len() >= 3);

    // Whole tree.
    let dest = env.restore_dir("all");
    env.dupr()
        .args(["restore", "--no-encryption"])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&src, &dest);

    // Listings agree with each other and with the source.
    let dupr_paths = dupr_listing(&env);
    assert_eq!(show(&dupr_paths), show(&duplicity_listing(&env, v)));
    assert_eq!(show(&dupr_paths), show(&listing_of_tree(&src)));

    // One multi-volume file.
    let dest = env.restore_dir("big");
    env.dupr()
        .args(["restore", "--no-encryption", "--path-to-restore", "big.bin"])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_file(&src.join("big.bin"), &dest);

    // One directory, with the 0.8 spelling of the option.
    let dest = env.restore_dir("dir");
    env.dupr()
        .args(["restore", "--no-encryption", "--file-to-restore", "dir"])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&src.join("dir"), &dest);

    // A nested directory via `-r`, implied restore (URL first).
    let dest = env.restore_dir("sub");
    env.dupr()
        .args(["--no-encryption", "-r", "dir/sub"])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&src.join("dir/sub"), &dest);

    // The ~300-byte deep path (PAX path record in the tar).
    let deep = deep_file();
    let dest = env.restore_dir("deep");
    env.dupr()
        .args(["restore", "--no-encryption", "--path-to-restore", &deep])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_file(&src.join(&deep), &dest);
}

#[test]
fn duplicity_08_full_backup_is_restored_by_dupr() {
    duplicity_backup_restored_by_dupr(Dup::V08);
}

#[test]
fn duplicity_3_full_backup_is_restored_by_dupr() {
    duplicity_backup_restored_by_dupr(Dup::V3);
}

// ------------------------------------------------------------ 3. GNU tar

#[test]
fn gnu_tar_lists_dupr_volumes() {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, BIG);
    dupr_full(&env);

    let vols = full_volumes(&env.target());
    assert!(vols.len() >= 3, "{vols:?}");
    let mut names: Vec<String> = Vec::new();
    for (_, vol) in &vols {
        // GNU tar on the decompressed stream (gzip checked on its own, so a
        // failure is pinned on the right tool).
        let out = Command::new("gzip").arg("-dc").arg(vol).output().unwrap();
        assert!(out.status.success(), "gzip -dc {} failed", vol.display());
        let tarfile = env.path().join("vol.tar");
        fs::write(&tarfile, &out.stdout).unwrap();
        let out = Command::new("tar")
            .args(["-t", "--quoting-style=literal", "-f"])
            .arg(&tarfile)
            .output()
            .expect("run tar");
        assert!(
            out.status.success(),
            "tar t of {} failed ({}): {}",
            vol.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for l in stderr.lines() {
            // GNU tar may warn about the PAX hdrcharset=BINARY record of the
            // non-UTF-8 name; anything else is a problem.
            assert!(
                l.contains("hdrcharset") || l.contains("Ignoring unknown extended header"),
                "tar complained about {}: {stderr}",
                vol.display()
            );
        }
        names.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(String::from),
        );
    }
    assert_eq!(
        names.first().map(String::as_str),
        Some("snapshot/./"),
        "first entry"
    );
    for want in [
        "snapshot/hello.txt".to_string(),
        "snapshot/dir/".to_string(),
        "snapshot/dir/sub/b.txt".to_string(),
        "snapshot/link-rel".to_string(),
        "snapshot/fifo".to_string(),
        format!("snapshot/{}", "L".repeat(150)),
        format!("snapshot/{}", deep_file()),
        "multivol_snapshot/exact-64k.bin/1".to_string(),
        "multivol_snapshot/200000.bin/4".to_string(),
    ] {
        assert!(
            names.contains(&want),
            "{want:?} not in tar listing: {names:#?}"
        );
    }
    // big.bin: chunks 1..=ceil(BIG / 64 KiB), each once, in order.
    let chunks: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_prefix("multivol_snapshot/big.bin/"))
        .map(|n| n.parse().unwrap())
        .collect();
    let expect: Vec<u64> = (1..=(BIG as u64).div_ceil(65536)).collect();
    assert_eq!(chunks, expect, "big.bin chunks across volumes");
}

// ------------------------------------------ 4. single-path restore, volumes

/// Who writes the backup for [`single_path_restore_reads_only_needed_volumes`].
#[derive(Clone, Copy, Debug)]
enum Writer {
    Dupr,
    Duplicity(Dup),
}

fn single_path_restore_reads_only_needed_volumes(w: Writer) {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, BIG);
    match w {
        Writer::Dupr => dupr_full(&env),
        Writer::Duplicity(v) => duplicity_full(&env, v),
    }
    let vols = full_volumes(&env.target());
    let manifest = parse_manifest(&fs::read(full_manifest(&env.target())).unwrap());
    assert_eq!(manifest.len(), vols.len());

    // The wanted path comes after big.bin, so the first volumes don't cover it.
    let want = "hello.txt";
    let unneeded: Vec<&ManifestVolume> = manifest
        .iter()
        .filter(|m| !m.needed_for(want.as_bytes()))
        .collect();
    assert!(
        unneeded.len() >= 2,
        "{w:?}: expected >= 2 volumes not covering {want}: {manifest:#?}"
    );
    let vol_path = |n: u32| -> PathBuf { vols.iter().find(|(k, _)| *k == n).unwrap().1.clone() };
    // Delete one volume that does not cover the path, corrupt another.
    let deleted = vol_path(unneeded[0].num);
    let corrupted = vol_path(unneeded[1].num);
    fs::remove_file(&deleted).unwrap();
    flip_middle_byte(&corrupted);

    let dest = env.restore_dir("one");
    env.dupr()
        .args(["restore", "--no-encryption", "--path-to-restore", want])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_file(&src.join(want), &dest);

    // A directory after big.bin too.
    let dest = env.restore_dir("dir");
    env.dupr()
        .args(["restore", "--no-encryption", "-r", "dir"])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .success();
    assert_same_tree(&src.join("dir"), &dest);

    // The full restore needs every volume: it fails and names the deleted one.
    let dest = env.restore_dir("all");
    let out = env
        .dupr()
        .args(["restore", "--no-encryption"])
        .arg(env.target_url())
        .arg(&dest)
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let file = deleted.file_name().unwrap().to_string_lossy().into_owned();
    let num = unneeded[0].num;
    assert!(
        stderr.contains(&file) || stderr.contains(&format!("volume {num} of")),
        "{w:?}: full restore error should name the missing volume {file}: {stderr}"
    );
    assert!(!stderr.contains("volume volume"), "stutter in: {stderr}");
}

#[test]
fn single_path_restore_needs_only_covering_volumes_dupr_backup() {
    single_path_restore_reads_only_needed_volumes(Writer::Dupr);
}

#[test]
fn single_path_restore_needs_only_covering_volumes_duplicity_08_backup() {
    single_path_restore_reads_only_needed_volumes(Writer::Duplicity(Dup::V08));
}

#[test]
fn single_path_restore_needs_only_covering_volumes_duplicity_3_backup() {
    single_path_restore_reads_only_needed_volumes(Writer::Duplicity(Dup::V3));
}

// ------------------------------------------- collection-status text layout

/// dupr's collection-status set table uses duplicity's column widths
/// (20 / 30 / 15, right aligned; reference section 8.4), so scripts that
/// parse it work unchanged. Compared line by line with both duplicitys on the
/// same (dupr-written) target.
#[test]
fn collection_status_set_table_matches_duplicity_layout() {
    let env = Env::new();
    fs::write(env.src().join("f"), b"x\n").unwrap();
    env.dupr()
        .args(["full", "--no-encryption", "--no-print-statistics"])
        .arg(env.src())
        .arg(env.target_url())
        .assert()
        .success();
    let table = |text: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(text)
            .lines()
            .skip_while(|l| !l.starts_with(" Type of backup set:"))
            .take_while(|l| !l.starts_with("---"))
            .map(String::from)
            .collect()
    };
    let out = env
        .dupr()
        .args(["collection-status", "--no-encryption"])
        .arg(env.target_url())
        .assert()
        .success();
    let mine = table(&out.get_output().stdout);
    assert_eq!(mine.len(), 2, "header + one full row: {mine:#?}");
    for v in Dup::ALL {
        let archive = env.archive_dir(v);
        let out = run_duplicity(
            v,
            [
                OsStr::new("collection-status"),
                OsStr::new("--no-encryption"),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                OsStr::new(&env.target_url()),
            ],
            &[],
        );
        assert_eq!(
            mine,
            table(&out.stdout),
            "dupr vs duplicity {} collection-status set table",
            v.label()
        );
    }
}
