//! Issue 13 "Trust": never exit 0 with wrong, lost or unrestorable data.
//!
//! 1. Incomplete sets (a manifest, a whole set or all but the signature file
//!    deleted) make every command that reads the state at a time the set
//!    covers fail with exit 30 naming it; earlier times still restore; verify
//!    and collection-status report it.
//! 2. Content hashes (`DUPR.blake3` PAX records; `DUPR.sha256` in archives
//!    from before BLAKE3, still checked) are written for snapshots and
//!    deltas, checked on restore and verify; duplicity still restores.
//! 3. A signature file swapped for another of the chain is refused by the
//!    next incremental and reported by `verify URL`.
//! 4. A manifest with a garbled `Hash` line is refused, not skipped.
//! 5. A damaged encrypted manifest is "damaged" (21), a wrong passphrase is
//!    "wrong passphrase" (31); an empty PASSPHRASE is refused for a backup.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const T0: i64 = 1_700_000_000;
const PASS: &str = "trust passphrase";

/// A target, a source and an archive dir, with or without encryption.
struct Arch {
    env: Env,
    enc: bool,
}

impl Arch {
    fn new(enc: bool) -> Arch {
        Arch {
            env: Env::new(),
            enc,
        }
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

    /// dupr with `args`, the archive dir `cache` (default: the env's).
    fn run_in<S: AsRef<OsStr>>(&self, cache: Option<&Path>, args: &[S]) -> Output {
        let default = self.env.cache().join("arch");
        let mut c = self.env.dupr();
        c.arg("--archive-dir").arg(cache.unwrap_or(&default));
        if self.enc {
            c.env("PASSPHRASE", PASS);
        } else {
            c.arg("--no-encryption");
        }
        c.args(args).output().unwrap()
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_in(None, args)
    }

    /// A fresh, empty archive dir.
    fn fresh(&self, tag: &str) -> PathBuf {
        let p = self.env.path().join(format!("fresh-{tag}"));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn backup(&self, kind: &str, t: i64) {
        let o = self.run(&[
            kind.to_string(),
            "--current-time".into(),
            t.to_string(),
            self.src().display().to_string(),
            self.url(),
        ]);
        assert!(o.status.success(), "{kind} at {t}: {}", out_text(&o));
    }

    fn restore(&self, cache: Option<&Path>, time: Option<i64>, dest: &Path) -> Output {
        let mut a: Vec<String> = vec!["restore".into()];
        if let Some(t) = time {
            a.extend(["-t".into(), t.to_string()]);
        }
        a.extend([self.url(), dest.display().to_string()]);
        self.run_in(cache, &a)
    }

    /// Target file names containing all of `parts`.
    fn files(&self, parts: &[&str]) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.target())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                parts.iter().all(|x| n.contains(x))
            })
            .collect();
        v.sort();
        v
    }

    fn one(&self, parts: &[&str]) -> PathBuf {
        let v = self.files(parts);
        assert_eq!(v.len(), 1, "want one file with {parts:?}: {v:?}");
        v.into_iter().next().unwrap()
    }
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// duplicity's file-name time of `t` (UTC).
fn ftime(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Three states of a small tree (one file changes, one is added), each
/// copied aside; a full at T0 and incrementals at T0+1000 and T0+2000.
fn three_sets(a: &Arch) -> Vec<PathBuf> {
    let src = a.src();
    fs::write(src.join("keep.txt"), b"unchanged\n").unwrap();
    let mut snaps = Vec::new();
    for i in 0..3i64 {
        let mut data = pseudo_random_bytes(150_000, 7);
        data[1000 + i as usize * 5000] ^= 0x55;
        data.extend_from_slice(format!("state {i}\n").as_bytes());
        fs::write(src.join("changing.bin"), &data).unwrap();
        if i == 2 {
            fs::write(src.join("new.txt"), b"added later\n").unwrap();
        }
        set_mtime(&src.join("changing.bin"), T0 - 100 + i * 10);
        a.backup(if i == 0 { "full" } else { "incremental" }, T0 + i * 1000);
        let snap = a.env.path().join(format!("snap{i}"));
        copy_tree(&src, &snap);
        snaps.push(snap);
    }
    snaps
}

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn stderr_line(o: &Output) -> String {
    lossy(&o.stderr).trim().to_string()
}

// ------------------------------------------------------ 1. incomplete sets

/// What reading "now" says after `damage`; an earlier time still restores.
fn incomplete_case(
    enc: bool,
    what: &str,
    earlier: (i64, usize),
    damage: &dyn Fn(&Arch) -> Vec<String>,
) {
    let a = Arch::new(enc);
    let snaps = three_sets(&a);
    let named = damage(&a);
    for (tag, cache) in [("cache", None), ("fresh", Some(a.fresh(what)))] {
        let cache = cache.as_deref();
        let dest = a.env.path().join(format!("r-{what}-{tag}"));
        let o = a.restore(cache, None, &dest);
        let e = stderr_line(&o);
        assert_eq!(
            o.status.code(),
            Some(30),
            "{what} ({tag}): {}",
            out_text(&o)
        );
        assert_eq!(e.lines().count(), 1, "{what}: one line: {e}");
        assert!(e.contains("incomplete"), "{what}: {e}");
        for n in &named {
            assert!(e.contains(n.as_str()), "{what}: error names {n}: {e}");
        }
        assert!(
            !dest.exists() || fs::read_dir(&dest).unwrap().next().is_none(),
            "{what}: restore wrote files"
        );
        // The state before the damaged set restores exactly.
        let o = a.restore(cache, Some(earlier.0), &dest);
        assert!(o.status.success(), "{what} -t: {}", out_text(&o));
        assert_same_tree(&snaps[earlier.1], &dest);
        fs::remove_dir_all(&dest).unwrap();
        // list-current-files and verify of "now" fail the same way.
        let o = a.run_in(cache, &["list-current-files".to_string(), a.url()]);
        assert_eq!(o.status.code(), Some(30), "{what} list: {}", out_text(&o));
        let o = a.run_in(
            cache,
            &[
                "verify".to_string(),
                "--compare-data".into(),
                a.url(),
                a.src().display().to_string(),
            ],
        );
        assert_eq!(o.status.code(), Some(30), "{what} verify: {}", out_text(&o));
        // ... while list-current-files of the earlier time works.
        let o = a.run_in(
            cache,
            &[
                "list-current-files".to_string(),
                "-t".into(),
                earlier.0.to_string(),
                a.url(),
            ],
        );
        assert!(o.status.success(), "{what} list -t: {}", out_text(&o));
        // verify URL reports the damage, naming the file.
        let o = a.run_in(cache, &["verify".to_string(), a.url()]);
        let out = lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{what} verify URL: {}",
            out_text(&o)
        );
        assert!(
            out.contains("Problem: ") && named.iter().any(|n| out.contains(n.as_str())),
            "{what}: verify URL names {named:?}:\n{out}"
        );
    }
    // collection-status still works and describes it.
    let o = a.run(&["collection-status".to_string(), a.url()]);
    assert!(o.status.success(), "{}", out_text(&o));
    let out = lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("Problem: ") && named.iter().any(|n| l.contains(n.as_str()))),
        "{what}: collection-status names {named:?}:\n{out}"
    );
}

#[test]
fn deleted_manifest_of_newest_incremental_fails_restore_of_now() {
    for enc in [false, true] {
        incomplete_case(enc, "manifest", (T0 + 1000, 1), &|a| {
            let m = a.one(&["duplicity-inc.", &ftime(T0 + 2000), ".manifest"]);
            fs::remove_file(&m).unwrap();
            vec![name_of(&m), ftime(T0 + 2000)]
        });
    }
}

#[test]
fn deleted_middle_set_fails_restore_of_now() {
    incomplete_case(false, "middle", (T0 + 500, 0), &|a| {
        // Every file of the first incremental: the second one is orphaned.
        let t = format!("{}.to.{}", ftime(T0), ftime(T0 + 1000));
        for f in a.files(&[&t]) {
            fs::remove_file(f).unwrap();
        }
        vec![ftime(T0 + 1000)]
    });
}

#[test]
fn signature_without_its_set_fails_restore_of_now() {
    incomplete_case(false, "sigonly", (T0 + 1000, 1), &|a| {
        let t = format!("{}.to.{}", ftime(T0 + 1000), ftime(T0 + 2000));
        for f in a.files(&["duplicity-inc.", &t]) {
            fs::remove_file(f).unwrap();
        }
        vec![ftime(T0 + 2000)]
    });
}

#[test]
fn interrupted_backup_is_described_and_then_completed() {
    let a = Arch::new(false);
    let snaps = three_sets(&a);
    // What an interrupted third incremental leaves: volumes without a
    // manifest on the target, a partial manifest in the cache.
    let t = format!("{}.to.{}", ftime(T0 + 1000), ftime(T0 + 2000));
    let m = a.one(&["duplicity-inc.", &t, ".manifest"]);
    let cache = a.env.cache().join("arch");
    let cached = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let local_m = cached.join(name_of(&m));
    fs::rename(&local_m, cached.join(format!("{}.part", name_of(&m)))).unwrap();
    fs::remove_file(&m).unwrap();
    for f in a.files(&["new-signatures", &t]) {
        fs::remove_file(f).unwrap();
    }
    let o = a.run(&["collection-status".to_string(), a.url()]);
    let out = lossy(&o.stdout);
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(out.contains("interrupted backup"), "{out}");
    let dest = a.env.path().join("r-int");
    let o = a.restore(None, None, &dest);
    assert_eq!(o.status.code(), Some(30), "{}", out_text(&o));
    assert!(
        stderr_line(&o).contains("interrupted") && stderr_line(&o).contains(&ftime(T0 + 2000)),
        "{}",
        out_text(&o)
    );
    // The next backup deals with it (no dupr journal: it is discarded and a
    // new incremental written); then "now" restores the source.
    let o = a.run(&[
        "incremental".to_string(),
        "--current-time".into(),
        (T0 + 3000).to_string(),
        a.src().display().to_string(),
        a.url(),
    ]);
    assert!(o.status.success(), "{}", out_text(&o));
    let o = a.restore(None, None, &dest);
    assert!(o.status.success(), "{}", out_text(&o));
    assert_same_tree(&snaps[2], &dest);
}

// ------------------------------------------------------ 2. content hashes

/// The PAX `record` records of a gzip'd volume, as (tar name, hash).
fn records(vol: &Path, record: &str) -> Vec<(String, String)> {
    let py = r#"
import tarfile, sys
with tarfile.open(sys.argv[1], "r:gz") as t:
    for m in t:
        h = m.pax_headers.get(sys.argv[2])
        if h:
            print(m.name + "\t" + h)
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", py])
        .arg(vol)
        .arg(record)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_text(&o));
    lossy(&o.stdout)
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    let o = c.wait_with_output().unwrap();
    lossy(&o.stdout)[..64].to_string()
}

fn b3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

#[test]
fn content_hashes_are_recorded_for_snapshots_and_deltas() {
    let a = Arch::new(false);
    let src = a.src();
    // A multi-chunk file (several 64 KiB tar chunks) and a small one.
    let big = pseudo_random_bytes(300_000, 3);
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("small.txt"), b"small\n").unwrap();
    a.backup("full", T0);
    let vol = a.one(&["duplicity-full.", ".vol1."]);
    let recs = records(&vol, "DUPR.blake3");
    assert!(
        recs.contains(&("snapshot/small.txt".into(), b3_hex(b"small\n"))),
        "{recs:?}"
    );
    // BLAKE3 only: SHA-256 is what older archives carry.
    assert_eq!(records(&vol, "DUPR.sha256"), vec![]);
    // The multivol file: on its last chunk only.
    let on_big: Vec<_> = recs.iter().filter(|r| r.0.contains("big.bin")).collect();
    assert_eq!(on_big.len(), 1, "{recs:?}");
    assert_eq!(on_big[0].1, b3_hex(&big));
    // A delta records the hash of the new content.
    let mut big2 = big.clone();
    big2[150_000] ^= 1;
    fs::write(src.join("big.bin"), &big2).unwrap();
    set_mtime(&src.join("big.bin"), T0 + 5);
    a.backup("incremental", T0 + 1000);
    let ivol = a.one(&["duplicity-inc.", ".vol1."]);
    let recs = records(&ivol, "DUPR.blake3");
    assert!(
        recs.iter()
            .any(|r| r.0.starts_with("diff/big.bin") && r.1 == b3_hex(&big2)),
        "{recs:?}"
    );
}

/// Archives written before BLAKE3 carry `DUPR.sha256`: restore checks the
/// file against it, and refuses a file that does not match it.
#[test]
fn sha256_records_of_older_archives_are_still_checked() {
    let a = Arch::new(false);
    let src = a.src();
    let data = b"written by an older dupr\n".repeat(500);
    fs::write(src.join("old.txt"), &data).unwrap();
    a.backup("full", T0);
    let vol = a.one(&["duplicity-full.", ".vol1."]);
    let man = a.one(&["duplicity-full.", ".manifest"]);
    let mut mans = cached(&a, &name_of(&man));
    mans.push(man);
    let as_sha256 = |sha: String| {
        move |tar: &mut Vec<u8>| {
            let key = b"DUPR.blake3=";
            let at = tar.windows(key.len()).position(|w| w == key).unwrap();
            tar[at..at + key.len()].copy_from_slice(b"DUPR.sha256=");
            let v = at + key.len();
            tar[v..v + 64].copy_from_slice(sha.as_bytes());
        }
    };
    rewrite_volume(&vol, &mans, &as_sha256(sha256_hex(&data)));
    assert_eq!(records(&vol, "DUPR.blake3"), vec![]);
    assert_eq!(records(&vol, "DUPR.sha256").len(), 1);
    let dest = a.env.path().join("r-sha");
    let o = a.restore(None, None, &dest);
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(fs::read(dest.join("old.txt")).unwrap() == data);
    // The same record with another file's hash: refused, nothing placed.
    let other = sha256_hex(b"something else");
    let sha = sha256_hex(&data);
    rewrite_volume(&vol, &mans, &|tar: &mut Vec<u8>| {
        let at = tar.windows(64).position(|w| w == sha.as_bytes()).unwrap();
        tar[at..at + 64].copy_from_slice(other.as_bytes());
    });
    let dest = a.env.path().join("r-sha-bad");
    let o = a.restore(None, None, &dest);
    assert_eq!(o.status.code(), Some(21), "{}", out_text(&o));
    assert!(stderr_line(&o).contains("old.txt"), "{}", out_text(&o));
    assert!(!dest.join("old.txt").exists());
}

/// Files changed in two incrementals restore exactly at every time: an
/// in-place change then an append (deltas that only move forward, streamed
/// from the base through both), and halves swapped (a delta that moves
/// back, applied from a written-out base), alone and chained.
#[test]
fn files_patched_by_delta_chains_restore_exactly() {
    let a = Arch::new(true);
    let src = a.src();
    let put = |name: &str, data: &[u8], t: i64| {
        fs::write(src.join(name), data).unwrap();
        set_mtime(&src.join(name), t);
    };
    let f0 = pseudo_random_bytes(700_000, 21);
    let g0 = pseudo_random_bytes(700_000, 22);
    put("f.bin", &f0, T0 - 10);
    put("g.bin", &g0, T0 - 10);
    a.backup("full", T0);
    let mut f1 = f0.clone();
    f1[350_000..350_100].fill(1);
    let mut g1 = g0[350_000..].to_vec();
    g1.extend_from_slice(&g0[..350_000]);
    put("f.bin", &f1, T0 + 10);
    put("g.bin", &g1, T0 + 10);
    a.backup("incremental", T0 + 1000);
    let mut f2 = f1.clone();
    f2.extend_from_slice(b"appended");
    let mut g2 = g1.clone();
    g2[10..20].fill(2);
    put("f.bin", &f2, T0 + 20);
    put("g.bin", &g2, T0 + 20);
    a.backup("incremental", T0 + 2000);
    assert_eq!(
        a.files(&["duplicity-inc.", ".vol1."]).len(),
        2,
        "two incrementals"
    );
    for (tag, t, f, g) in [
        ("full", Some(T0 + 500), &f0, &g0),
        ("inc1", Some(T0 + 1500), &f1, &g1),
        ("inc2", None, &f2, &g2),
    ] {
        let dest = a.env.path().join(format!("r-chain-{tag}"));
        let o = a.restore(None, t, &dest);
        assert!(o.status.success(), "{tag}: {}", out_text(&o));
        assert!(fs::read(dest.join("f.bin")).unwrap() == *f, "{tag}: f.bin");
        assert!(fs::read(dest.join("g.bin")).unwrap() == *g, "{tag}: g.bin");
    }
}

/// Rewrite a gzip'd volume with `edit` applied to its tar bytes, and fix
/// the SHA-1 in `manifests` (the target's and cached copies) so only the
/// content hash can notice.
fn rewrite_volume(vol: &Path, manifests: &[PathBuf], edit: &dyn Fn(&mut Vec<u8>)) {
    let old_sha = sha1_file(vol);
    let o = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(vol)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut tar = o.stdout;
    edit(&mut tar);
    let plain = vol.with_extension("plain");
    fs::write(&plain, &tar).unwrap();
    let o = std::process::Command::new("gzip")
        .arg("-c")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(o.status.success());
    fs::remove_file(&plain).unwrap();
    fs::write(vol, o.stdout).unwrap();
    let new_sha = sha1_file(vol);
    for m in manifests {
        let t = fs::read_to_string(m).unwrap();
        assert!(t.contains(&old_sha), "{}", m.display());
        fs::write(m, t.replace(&old_sha, &new_sha)).unwrap();
    }
}

/// The cache's copies of target file `name` (the default archive dir).
fn cached(a: &Arch, name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in fs::read_dir(a.env.cache().join("arch")).unwrap().flatten() {
        let p = d.path().join(name);
        if p.exists() {
            v.push(p);
        }
    }
    v
}

#[test]
fn content_mismatch_fails_restore_and_verify_naming_the_path() {
    let a = Arch::new(false);
    let src = a.src();
    let data = b"precious data that must come back exactly\n".repeat(100);
    fs::write(src.join("precious.txt"), &data).unwrap();
    fs::write(src.join("other.txt"), b"other\n").unwrap();
    a.backup("full", T0);
    let vol = a.one(&["duplicity-full.", ".vol1."]);
    let man = a.one(&["duplicity-full.", ".manifest"]);
    // Change one data byte inside the tar (the volume and its SHA-1 then
    // agree: as if dupr itself had written wrong bytes).
    let mut mans = cached(&a, &name_of(&man));
    assert_eq!(mans.len(), 1);
    mans.push(man.clone());
    rewrite_volume(&vol, &mans, &|tar| {
        let at = tar
            .windows(20)
            .position(|w| w == b"precious data that m")
            .unwrap();
        tar[at + 3] ^= 0x20;
    });
    for (tag, cache) in [("cache", None), ("fresh", Some(a.fresh("cm")))] {
        let cache = cache.as_deref();
        let dest = a.env.path().join(format!("r-cm-{tag}"));
        let o = a.restore(cache, None, &dest);
        let e = stderr_line(&o);
        assert_eq!(o.status.code(), Some(21), "{tag}: {}", out_text(&o));
        assert!(
            e.contains("precious.txt") && e.contains("content hash"),
            "{e}"
        );
        assert!(
            !dest.join("precious.txt").exists(),
            "wrong bytes left at the final path"
        );
        let o = a.run_in(
            cache,
            &[
                "verify".to_string(),
                "--compare-data".into(),
                a.url(),
                src.display().to_string(),
            ],
        );
        assert_eq!(o.status.code(), Some(21), "{tag}: {}", out_text(&o));
        assert!(stderr_line(&o).contains("precious.txt"), "{}", out_text(&o));
        let o = a.run_in(cache, &["verify".to_string(), a.url()]);
        assert_eq!(o.status.code(), Some(1), "{tag}: {}", out_text(&o));
        assert!(
            lossy(&o.stdout).contains("Problem: precious.txt"),
            "{}",
            out_text(&o)
        );
    }
}

#[test]
fn duplicity_restores_a_dupr_chain_with_content_hashes() {
    let a = Arch::new(false);
    let snaps = three_sets(&a);
    assert!(!records(&a.one(&["duplicity-full.", ".vol1."]), "DUPR.blake3").is_empty());
    let m = fs::read_to_string(a.one(&["duplicity-full.", ".manifest"])).unwrap();
    assert!(m.contains("DuprSigtarBLAKE3 "), "{m}");
    for v in Dup::ALL {
        let dest = a.env.restore_dir(v.label());
        let archive = a.env.archive_dir(v);
        run_duplicity(
            v,
            [
                OsStr::new("restore"),
                OsStr::new("--no-encryption"),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                OsStr::new(&a.url()),
                dest.as_os_str(),
            ],
            &[],
        );
        assert_same_tree(&snaps[2], &dest);
        // And an earlier state of the chain.
        let dest = a.env.restore_dir(&format!("{}-t1", v.label()));
        run_duplicity(
            v,
            [
                OsStr::new("restore"),
                OsStr::new("--no-encryption"),
                OsStr::new("-t"),
                OsStr::new(&(T0 + 1000).to_string()),
                OsStr::new("--archive-dir"),
                archive.as_os_str(),
                OsStr::new(&a.url()),
                dest.as_os_str(),
            ],
            &[],
        );
        assert_same_tree(&snaps[1], &dest);
    }
}

// -------------------------------------------------- 3. swapped signatures

/// Replace the first incremental's signature file (target and cache) by a
/// copy of the full's: a valid signature file of the same chain.
fn swap_first_inc_sig(a: &Arch) -> String {
    let full = a.one(&["duplicity-full-signatures."]);
    let t = format!("{}.to.{}", ftime(T0), ftime(T0 + 1000));
    let inc = a.one(&["duplicity-new-signatures.", &t]);
    fs::copy(&full, &inc).unwrap();
    let cache = a.env.cache().join("arch");
    for d in fs::read_dir(&cache).unwrap().flatten() {
        let c = d.path().join(name_of(&inc));
        if c.exists() {
            fs::copy(d.path().join(name_of(&full)), &c).unwrap();
        }
    }
    name_of(&inc)
}

/// A full of a 200 kB random f.bin (`seed`), then an incremental with the
/// byte at `flip` changed; returns (full's bytes, incremental's bytes).
fn full_then_one_flip(a: &Arch, seed: u64, flip: usize) -> (Vec<u8>, Vec<u8>) {
    let src = a.src();
    let base = pseudo_random_bytes(200_000, seed);
    fs::write(src.join("f.bin"), &base).unwrap();
    a.backup("full", T0);
    let mut v2 = base.clone();
    v2[flip] ^= 1;
    fs::write(src.join("f.bin"), &v2).unwrap();
    set_mtime(&src.join("f.bin"), T0 + 10);
    a.backup("incremental", T0 + 1000);
    (base, v2)
}

/// `from` with the byte at `flip` changed, as f.bin's next state.
fn next_state(a: &Arch, from: &[u8], flip: usize) {
    let mut v = from.to_vec();
    v[flip] ^= 1;
    fs::write(a.src().join("f.bin"), &v).unwrap();
    set_mtime(&a.src().join("f.bin"), T0 + 20);
}

/// The incremental at T0 + 2000, with the default cache or `cache`; its
/// outcome, whatever it is.
fn third_incremental(a: &Arch, cache: Option<&Path>) -> Output {
    a.run_in(
        cache,
        &[
            "incremental".to_string(),
            "--current-time".into(),
            (T0 + 2000).to_string(),
            a.src().display().to_string(),
            a.url(),
        ],
    )
}

/// Every manifest, on the target and in the cache.
fn manifests_everywhere(a: &Arch) -> Vec<PathBuf> {
    let mut mans: Vec<PathBuf> = a.files(&[".manifest"]);
    for d in fs::read_dir(a.env.cache().join("arch")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            if name_of(&f.path()).ends_with(".manifest") {
                mans.push(f.path());
            }
        }
    }
    mans
}

#[test]
fn swapped_signature_file_is_refused_and_reported() {
    let a = Arch::new(false);
    let (_, v2) = full_then_one_flip(&a, 11, 10);
    let swapped = swap_first_inc_sig(&a);
    next_state(&a, &v2, 190_000);
    let before = a.files(&[""]);
    for (tag, cache) in [("cache", None), ("fresh", Some(a.fresh("sw")))] {
        let o = third_incremental(&a, cache.as_deref());
        assert_eq!(o.status.code(), Some(18), "{tag}: {}", out_text(&o));
        assert!(
            stderr_line(&o).contains(&swapped) && stderr_line(&o).contains("does not belong"),
            "{}",
            out_text(&o)
        );
        assert_eq!(a.files(&[""]), before, "{tag}: the refused run left files");
    }
    let o = a.run(&["verify".to_string(), a.url()]);
    let out = lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        out.contains(&format!("Problem: {swapped}")) && out.contains("does not belong"),
        "{out}"
    );
    // A deleted signature file is named too.
    fs::remove_file(a.target().join(&swapped)).unwrap();
    let o = a.run_in(Some(&a.fresh("sw2")), &["verify".to_string(), a.url()]);
    let out = lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        out.contains(&format!("Problem: {swapped}")) && out.contains("missing"),
        "{out}"
    );
}

/// The SHA-256 of a gzipped file's plain bytes, by gzip and sha256sum.
fn gunzip_sha256(p: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | sha256sum")
        .arg("sh")
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_text(&o));
    lossy(&o.stdout)[..64].to_string()
}

/// Sets written before the BLAKE3 record carry `DuprSigtarSHA256`: it is
/// still checked, with SHA-256, by verify and before an incremental.
#[test]
fn an_older_sets_sha256_signature_record_still_guards_it() {
    let a = Arch::new(false);
    let (_, v2) = full_then_one_flip(&a, 12, 10);
    let full_sig = gunzip_sha256(&a.one(&["duplicity-full-signatures."]));
    let inc_sig = gunzip_sha256(&a.one(&["duplicity-new-signatures."]));
    let mans = manifests_everywhere(&a);
    assert_eq!(mans.len(), 4, "{mans:?}");
    for m in &mans {
        let sha = if name_of(m).starts_with("duplicity-full.") {
            &full_sig
        } else {
            &inc_sig
        };
        let t = fs::read_to_string(m).unwrap();
        assert_eq!(t.matches("DuprSigtarBLAKE3 ").count(), 1, "{t}");
        let old: String = t
            .lines()
            .map(|l| match l.starts_with("DuprSigtarBLAKE3 ") {
                true => format!("DuprSigtarSHA256 {sha}\n"),
                false => format!("{l}\n"),
            })
            .collect();
        fs::write(m, old).unwrap();
    }
    let o = a.run(&["verify".to_string(), a.url()]);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let swapped = swap_first_inc_sig(&a);
    next_state(&a, &v2, 190_000);
    let o = third_incremental(&a, None);
    assert_eq!(o.status.code(), Some(18), "{}", out_text(&o));
    let e = stderr_line(&o);
    assert!(
        e.contains(&swapped) && e.contains("does not belong") && e.contains("SHA-256"),
        "{}",
        out_text(&o)
    );
    let o = a.run(&["verify".to_string(), a.url()]);
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        lossy(&o.stdout).contains(&format!("Problem: {swapped}")),
        "{}",
        out_text(&o)
    );
}

/// Without the manifest's record (an archive written before it, or by
/// duplicity), the swapped base goes unnoticed by the incremental, but the
/// content hash of the delta it wrote stops the restore.
#[test]
fn delta_against_a_swapped_base_fails_restore_by_content_hash() {
    let a = Arch::new(false);
    let (base, _) = full_then_one_flip(&a, 12, 100_000);
    // Drop the records from every manifest (target and cache).
    for m in &manifests_everywhere(&a) {
        let t = fs::read_to_string(m).unwrap();
        let kept: String = t
            .lines()
            .filter(|l| !l.starts_with("DuprSigtar"))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(m, kept).unwrap();
    }
    swap_first_inc_sig(&a);
    // Back to the full's bytes around 100000: the delta (against the
    // swapped-in base) copies that block from a basis that differs there.
    next_state(&a, &base, 199_000);
    a.backup("incremental", T0 + 2000);
    let dest = a.env.path().join("r-swap");
    let o = a.restore(None, None, &dest);
    assert_eq!(o.status.code(), Some(21), "{}", out_text(&o));
    assert!(stderr_line(&o).contains("f.bin"), "{}", out_text(&o));
    assert!(!dest.join("f.bin").exists());
    let o = a.run(&["verify".to_string(), a.url()]);
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    assert!(
        lossy(&o.stdout).contains("Problem: f.bin"),
        "{}",
        out_text(&o)
    );
}

// ---------------------------------------------------- 4. garbled Hash line

#[test]
fn manifest_with_a_garbled_hash_line_is_refused() {
    let a = Arch::new(false);
    let src = a.src();
    fs::write(src.join("a.txt"), b"first\n").unwrap();
    a.backup("full", T0);
    let man = a.one(&["duplicity-full.", ".manifest"]);
    let text = fs::read_to_string(&man).unwrap();
    for (i, garbled) in [
        text.replace("    Hash SHA1", "    Hxsh SHA1"),
        text.replace("Hash SHA1", "Hash SHB1"),
        text.replace("Hash SHA1 ", "Hash SHA1 zz"),
    ]
    .iter()
    .enumerate()
    {
        assert_ne!(*garbled, text);
        fs::write(&man, garbled).unwrap();
        let fresh = a.fresh(&format!("gh{i}"));
        let dest = a.env.path().join(format!("r-gh{i}"));
        let o = a.restore(Some(&fresh), None, &dest);
        assert_eq!(o.status.code(), Some(6), "{garbled}: {}", out_text(&o));
        assert!(
            stderr_line(&o).contains(&name_of(&man)) && stderr_line(&o).contains("Hash"),
            "{}",
            out_text(&o)
        );
        // verify reads the target's manifest even with an intact cached one.
        let o = a.run(&["verify".to_string(), a.url()]);
        assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
        assert!(
            lossy(&o.stdout).contains(&format!("Problem: {}", name_of(&man))),
            "{}",
            out_text(&o)
        );
    }
}

// ---------------------------------------------- 5. damage vs passphrase

#[test]
fn damaged_encrypted_manifest_is_not_a_wrong_passphrase() {
    let a = Arch::new(true);
    fs::write(a.src().join("a.txt"), b"first\n".repeat(1000)).unwrap();
    a.backup("full", T0);
    let man = a.one(&["duplicity-full.", ".manifest.gpg"]);
    let orig = fs::read(&man).unwrap();
    // Offsets in the key packet (salt), the encrypted prefix, the middle
    // and the last bytes (MDC).
    let n = orig.len();
    for at in [6, 9, 20, 30, n / 2, n - 5, n - 1] {
        let mut d = orig.clone();
        d[at] ^= 0x01;
        fs::write(&man, &d).unwrap();
        let dest = a.env.path().join(format!("r-dm{at}"));
        let o = a.restore(Some(&a.fresh(&format!("dm{at}"))), None, &dest);
        let e = stderr_line(&o);
        assert_eq!(
            o.status.code(),
            Some(21),
            "byte {at} of {n}: {}",
            out_text(&o)
        );
        assert!(
            e.contains(&name_of(&man)) && e.contains("damaged") && !e.contains("wrong passphrase"),
            "byte {at}: {e}"
        );
    }
    fs::write(&man, &orig).unwrap();
    // A wrong passphrase stays a wrong passphrase (31).
    let dest = a.env.path().join("r-wp");
    let o = a
        .env
        .dupr()
        .args(["--archive-dir"])
        .arg(a.fresh("wp"))
        .env("PASSPHRASE", "not it")
        .args(["restore", &a.url()])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(31), "{}", out_text(&o));
    assert!(
        stderr_line(&o).contains("wrong passphrase"),
        "{}",
        out_text(&o)
    );
}

#[test]
fn empty_passphrase_is_refused_for_an_encrypted_backup() {
    let env = Env::new();
    fs::write(env.src().join("a.txt"), b"x\n").unwrap();
    let o = env
        .dupr()
        .env("PASSPHRASE", "")
        .arg("full")
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(31), "{}", out_text(&o));
    let e = stderr_line(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("empty passphrase"), "{e}");
    assert!(
        !env.target().exists() || fs::read_dir(env.target()).unwrap().next().is_none(),
        "something was written"
    );
}
