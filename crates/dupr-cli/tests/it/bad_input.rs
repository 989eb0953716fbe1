//! Bad input: each case must fail (or warn) with one line naming the culprit
//! on stderr, a non-zero exit (duplicity's code where it has one), and must
//! not clobber anything: the backup target, an existing restore target, or
//! anything outside the restore directory.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Mtime given to the small trees' root (and restored after edits).
const ROOT_MTIME: i64 = 1_690_000_000;

/// A small tree: two text files, a directory; plus `big.bin` of `big` bytes
/// (pseudo-random, so it does not compress) when `big > 0`.
fn small_tree(src: &Path, big: usize) {
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("hello.txt"), b"hello\n").unwrap();
    fs::write(src.join("dir/a.txt"), b"a\n").unwrap();
    if big > 0 {
        fs::write(src.join("big.bin"), pseudo_random_bytes(big, 7)).unwrap();
    }
    fs::write(src.join("zz-last.txt"), b"last\n").unwrap();
    for (i, p) in ["hello.txt", "dir/a.txt", "dir", "zz-last.txt"]
        .iter()
        .enumerate()
    {
        set_mtime(&src.join(p), 1_700_000_000 + i as i64);
    }
    if big > 0 {
        set_mtime(&src.join("big.bin"), 1_700_000_100);
    }
    set_mtime(src, ROOT_MTIME);
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error output must be exactly one line and mention every `needles`.
fn assert_one_line_naming(o: &Output, needles: &[&str]) {
    let e = stderr_of(o);
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{e}");
    for n in needles {
        assert!(e.contains(n), "error should name {n:?}: {e}");
    }
}

fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p).unwrap().next().is_none()
}

/// `dupr full --no-encryption [--volsize 1]` of the env's source.
fn backup(env: &Env, volsize1: bool) {
    let mut c = env.dupr();
    c.args(["full", "--no-encryption", "--no-print-statistics"]);
    if volsize1 {
        c.args(["--volsize", "1"]);
    }
    c.arg(env.src()).arg(env.target_url()).assert().success();
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

/// Every regular file under `dest` must be byte-identical to the file at the
/// same relative path under `src`, and `dest` must hold no path `src` lacks
/// (no partial file at a final path, no leftover temporary file).
fn assert_only_good_files(src: &Path, dest: &Path) {
    if !dest.exists() {
        return;
    }
    let have = tree_paths(dest);
    let want = tree_paths(src);
    let extra: Vec<String> = have.difference(&want).map(|p| lossy(p)).collect();
    assert!(extra.is_empty(), "restore left unexpected paths: {extra:?}");
    for p in &have {
        let d = dest.join(std::ffi::OsStr::from_bytes(p));
        if d.is_file() {
            let s = src.join(std::ffi::OsStr::from_bytes(p));
            assert!(
                fs::read(&d).unwrap() == fs::read(&s).unwrap(),
                "{} was written with wrong (corrupted or partial) content",
                d.display()
            );
        }
    }
}

// --------------------------------------------------------------- backup side

#[test]
fn missing_source_dir_exits_13_naming_it_and_writes_nothing() {
    let env = Env::new();
    fs::create_dir(env.target()).unwrap();
    let missing = env.path().join("no-such-source");
    let out = env
        .dupr()
        .args(["full", "--no-encryption"])
        .arg(&missing)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", stderr_of(&out));
    assert_one_line_naming(&out, &["no-such-source"]);
    assert!(dir_is_empty(&env.target()), "target was written to");

    // Same through the implied command (`dupr SRC URL`).
    let out = env
        .dupr()
        .arg("--no-encryption")
        .arg(&missing)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(13), "{}", stderr_of(&out));
    assert!(dir_is_empty(&env.target()), "target was written to");
}

#[test]
fn unreadable_file_is_warned_counted_skipped_and_the_rest_restores() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src, 0);
    let locked = src.join("dir/locked.txt");
    fs::write(&locked, b"you cannot read me\n").unwrap();
    chmod(&locked, 0o000);
    set_mtime(&src.join("dir"), 1_700_000_002);

    // Root reads everything; run dupr without CAP_DAC_OVERRIDE/READ_SEARCH.
    // Never skipped: if capabilities cannot be dropped here the set-up is
    // broken (util-linux's setpriv is installed by scripts/install-test-deps).
    let mut c = dupr_without_dac_override(&env)
        .expect("running as root and setpriv cannot drop CAP_DAC_OVERRIDE: fix the test machine");
    let out = c
        .args(["full", "--no-encryption"])
        .arg(&src)
        .arg(env.target_url())
        .output()
        .unwrap();
    let (so, se) = (String::from_utf8_lossy(&out.stdout), stderr_of(&out));
    assert!(out.status.success(), "backup failed: {se}");
    assert!(
        se.contains("locked.txt"),
        "no warning naming the file: {se}"
    );
    assert!(
        so.lines().any(|l| l == "Errors 1"),
        "statistics should count 1 error:\n{so}"
    );

    // Everything else comes back; the unreadable file is simply absent.
    let dest = env.restore_dir("r");
    let out = restore(&env, &dest, &[]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    chmod(&locked, 0o600);
    fs::remove_file(&locked).unwrap();
    set_mtime(&src.join("dir"), 1_700_000_002);
    assert_same_tree(&src, &dest);
}

/// duplicity (0.8.22 and 3.2.1) skips a directory it cannot list entirely
/// (warning "Error accessing possibly locked file"); dupr must store the same
/// set of paths.
#[test]
fn unreadable_directory_is_skipped_like_duplicity() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src, 0);
    fs::create_dir(src.join("lockdir")).unwrap();
    fs::write(src.join("lockdir/inside.txt"), b"x\n").unwrap();
    chmod(&src.join("lockdir"), 0o000);

    // Never skipped: if capabilities cannot be dropped here the set-up is
    // broken (util-linux's setpriv is installed by scripts/install-test-deps).
    let mut c = dupr_without_dac_override(&env)
        .expect("running as root and setpriv cannot drop CAP_DAC_OVERRIDE: fix the test machine");
    let out = c
        .args(["full", "--no-encryption", "--no-print-statistics"])
        .arg(&src)
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("lockdir"), "{}", stderr_of(&out));
    let listed = env
        .dupr()
        .args(["list-current-files", "--no-encryption"])
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(listed.status.success());
    let dupr_paths = parse_listing(&listed.stdout);

    // The references, made under the same restriction.
    let show = |s: &BTreeSet<Vec<u8>>| s.iter().map(|p| lossy(p)).collect::<Vec<_>>();
    for v in Dup::ALL {
        let archive = env.archive_dir(v);
        let dup_target = env.path().join(format!("dup-target-{}", v.label()));
        let mut d = if is_root() {
            let mut d = Command::new("setpriv");
            d.args([
                "--bounding-set",
                "-dac_override,-dac_read_search",
                "--inh-caps=-all",
            ]);
            d
        } else {
            Command::new("env")
        };
        let out = d
            .arg(v.bin())
            .args(["full", "--no-encryption", "--archive-dir"])
            .arg(&archive)
            .arg(&src)
            .arg(file_url(&dup_target))
            .env("PYTHONWARNINGS", "ignore")
            .env("LC_ALL", "C.UTF-8")
            .env_remove("PASSPHRASE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let out = run_duplicity(
            v,
            [
                "list-current-files".as_ref(),
                "--no-encryption".as_ref(),
                "--archive-dir".as_ref(),
                archive.as_os_str(),
                file_url(&dup_target).as_ref(),
            ],
            &[],
        );
        let dup_paths = parse_listing(&out.stdout);
        assert_eq!(
            show(&dupr_paths),
            show(&dup_paths),
            "dupr vs duplicity {} paths stored with an unreadable directory",
            v.label()
        );
    }
    chmod(&src.join("lockdir"), 0o755);
}

/// Warnings and errors on a pipe (not a terminal) are plain text: no ANSI
/// colour escape sequences in what scripts and log files capture.
#[test]
fn messages_on_a_pipe_have_no_terminal_escape_codes() {
    let env = Env::new();
    small_tree(&env.src(), 0);
    // Never skipped: if capabilities cannot be dropped here the set-up is
    // broken (util-linux's setpriv is installed by scripts/install-test-deps).
    let mut c = dupr_without_dac_override(&env)
        .expect("running as root and setpriv cannot drop CAP_DAC_OVERRIDE: fix the test machine");
    let locked = env.src().join("locked.txt");
    fs::write(&locked, b"x").unwrap();
    chmod(&locked, 0o000);
    let out = c
        .args(["full", "--no-encryption", "--no-print-statistics"])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(out.status.success());
    let e = stderr_of(&out);
    assert!(e.contains("locked.txt"), "{e}");
    assert!(!e.contains('\u{1b}'), "escape codes on a pipe: {e:?}");
}

#[test]
fn unknown_url_scheme_and_plain_path_are_refused() {
    let env = Env::new();
    small_tree(&env.src(), 0);
    for cmd in [&["full", "--no-encryption"][..], &["--no-encryption"][..]] {
        let out = env
            .dupr()
            .args(cmd)
            .arg(env.src())
            .arg("foo://x")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert_ne!(out.status.code(), Some(0));
        assert_one_line_naming(&out, &["foo"]);
    }
    // A bare path is not a URL (duplicity wants file:///path).
    let plain = env.path().join("plain-target");
    let out = env
        .dupr()
        .args(["full", "--no-encryption"])
        .arg(env.src())
        .arg(&plain)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a plain path was accepted as a URL");
    assert_one_line_naming(&out, &["plain-target"]);
    assert!(!plain.exists(), "a plain path was written to");
    // Restoring from an unknown scheme, too.
    let out = env
        .dupr()
        .args(["restore", "--no-encryption", "foo://x"])
        .arg(env.restore_dir("r"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_one_line_naming(&out, &["foo"]);
    assert!(!env.restore_dir("r").exists());
}

#[test]
fn bad_time_string_is_refused_naming_it() {
    let env = Env::new();
    small_tree(&env.src(), 0);
    backup(&env, false);
    let dest = env.restore_dir("r");
    let out = restore(&env, &dest, &["-t", "yesterdayish"]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    assert_one_line_naming(&out, &["yesterdayish"]);
    assert!(
        !dest.exists(),
        "restore target created despite the bad time"
    );
    let out = env
        .dupr()
        .args([
            "list-current-files",
            "--no-encryption",
            "--time",
            "yesterdayish",
        ])
        .arg(env.target_url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    assert_one_line_naming(&out, &["yesterdayish"]);
}

// -------------------------------------------------------------- restore side

#[test]
fn restore_into_non_empty_dir_needs_force() {
    let env = Env::new();
    let src = env.src();
    small_tree(&src, 0);
    backup(&env, false);

    let dest = env.restore_dir("r");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("hello.txt"), b"precious local edit\n").unwrap();
    let out = restore(&env, &dest, &[]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr_of(&out));
    assert_one_line_naming(&out, &["restore-r"]);
    assert_eq!(
        fs::read(dest.join("hello.txt")).unwrap(),
        b"precious local edit\n"
    );
    assert_eq!(tree_paths(&dest).len(), 1, "restore wrote into the target");

    let out = restore(&env, &dest, &["--force"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_same_tree(&src, &dest);
}

/// A backup of 4 one-MiB volumes: vol1 = `.`…big.bin part 1, vol2/vol3 =
/// big.bin middles, vol4 = big.bin tail…zz-last.txt.
fn multivolume_env() -> (Env, Vec<(u32, PathBuf)>) {
    let env = Env::new();
    small_tree(&env.src(), 3_000_000);
    backup(&env, true);
    let vols = full_volumes(&env.target());
    assert!(vols.len() >= 3, "{vols:?}");
    (env, vols)
}

#[test]
fn missing_volume_fails_naming_it() {
    let (env, vols) = multivolume_env();
    let (n, vol) = &vols[1];
    fs::remove_file(vol).unwrap();
    let dest = env.restore_dir("r");
    let out = restore(&env, &dest, &[]);
    assert!(
        !out.status.success(),
        "restore succeeded without volume {n}"
    );
    let file = vol.file_name().unwrap().to_string_lossy().into_owned();
    let e = stderr_of(&out);
    assert!(
        e.contains(&file) || e.contains(&format!("volume {n} of")),
        "error should name volume {n} ({file}): {e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert_only_good_files(&env.src(), &dest);
}

#[test]
fn truncated_volume_fails_naming_it() {
    let (env, vols) = multivolume_env();
    let (_, vol) = &vols[1];
    let file = vol.file_name().unwrap().to_string_lossy().into_owned();
    let len = fs::metadata(vol).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(vol).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);

    let dest = env.restore_dir("r");
    let out = restore(&env, &dest, &[]);
    assert!(
        !out.status.success(),
        "restore of a truncated volume succeeded"
    );
    assert_one_line_naming(&out, &[&file]);
    assert_only_good_files(&env.src(), &dest);

    // The same truncation with the manifest's hash updated to match, so the
    // gzip/tar reader (not the SHA-1 check) must notice the short volume.
    let manifest = full_manifest(&env.target());
    let text = fs::read_to_string(&manifest).unwrap();
    let old = &parse_manifest(text.as_bytes())[1].sha1;
    let text = text.replace(old.as_str(), &sha1_file(vol));
    fs::write(&manifest, text).unwrap();
    fs::remove_dir_all(env.cache().join("dupr")).unwrap();
    let dest = env.restore_dir("r2");
    let out = restore(&env, &dest, &[]);
    assert!(
        !out.status.success(),
        "restore of a truncated volume (matching hash) succeeded"
    );
    assert_one_line_naming(&out, &[&file]);
    assert_only_good_files(&env.src(), &dest);
}

#[test]
fn volume_with_wrong_sha1_exits_21_naming_it_and_writes_no_bad_file() {
    let (env, vols) = multivolume_env();
    for (i, (_, vol)) in vols.iter().enumerate() {
        let orig = fs::read(vol).unwrap();
        flip_middle_byte(vol);
        let file = vol.file_name().unwrap().to_string_lossy().into_owned();
        let dest = env.restore_dir(&format!("r{i}"));
        let out = restore(&env, &dest, &[]);
        assert_eq!(out.status.code(), Some(21), "{file}: {}", stderr_of(&out));
        assert_one_line_naming(&out, &[&file]);
        assert_only_good_files(&env.src(), &dest);
        if i > 0 {
            // Volumes before the bad one may be restored; big.bin spans the
            // bad one, so it must not be at its final path.
            assert!(
                !dest.join("big.bin").exists(),
                "big.bin written from a bad volume"
            );
        }
        fs::write(vol, orig).unwrap();
    }
}

#[test]
fn malformed_manifest_fails_naming_it() {
    let env = Env::new();
    small_tree(&env.src(), 0);
    backup(&env, false);
    let manifest = full_manifest(&env.target());
    let name = manifest.file_name().unwrap().to_string_lossy().into_owned();

    let cases: [(&str, &[u8]); 3] = [
        (
            "volume without paths",
            b"Hostname h\nLocaldir src\nVolume 1:\n    Hash SHA1 0000000000000000000000000000000000000000\n",
        ),
        ("bad volume number", b"Hostname h\nVolume x:\n    StartingPath   .  \n"),
        ("binary junk", b"\x00\xff\xfe\x01 not a manifest \x80\x81\n\x00"),
    ];
    for (i, (what, text)) in cases.iter().enumerate() {
        fs::write(&manifest, text).unwrap();
        // Make dupr read the remote manifest, not its cached copy.
        let _ = fs::remove_dir_all(env.cache().join("dupr"));
        let dest = env.restore_dir(&format!("r{i}"));
        let out = restore(&env, &dest, &[]);
        assert!(!out.status.success(), "{what}: restore succeeded");
        let e = stderr_of(&out);
        assert!(e.contains(&name), "{what}: error should name {name}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{what}: {e}");
        assert!(
            !dest.exists() || dir_is_empty(&dest),
            "{what}: files restored"
        );
    }
}

// ---------------------------------------------- hostile archives (crafted)

/// Python (stdlib tarfile) that writes a gzip'd one-volume full set with the
/// given extra tar entries and a manifest whose SHA-1 matches, named like
/// duplicity's: argv = out_dir, then entries as `kind:name[:linktarget]`
/// (kind `file` or `symlink`).
const MAKE_HOSTILE_SET: &str = r#"
import tarfile, gzip, hashlib, io, os, sys
out = sys.argv[1]
T = "20240101T000000Z"
buf = io.BytesIO()
tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
def add(name, typ=tarfile.REGTYPE, data=b"", link=""):
    ti = tarfile.TarInfo(name)
    ti.type = typ
    ti.mtime = 1700000000
    ti.mode = 0o755 if typ == tarfile.DIRTYPE else 0o644
    ti.linkname = link
    ti.size = len(data) if typ == tarfile.REGTYPE else 0
    tf.addfile(ti, io.BytesIO(data) if typ == tarfile.REGTYPE else None)
add("snapshot/./", tarfile.DIRTYPE)
add("snapshot/a-ok.txt", data=b"fine\n")
for spec in sys.argv[2:]:
    kind, name, *rest = spec.split(":")
    if kind == "symlink":
        add(name, tarfile.SYMTYPE, link=rest[0])
    else:
        add(name, data=b"EVIL\n")
add("snapshot/zz-ok.txt", data=b"fine too\n")
tf.close()
vol = gzip.compress(buf.getvalue())
open(os.path.join(out, "duplicity-full.%s.vol1.difftar.gz" % T), "wb").write(vol)
open(os.path.join(out, "duplicity-full.%s.manifest" % T), "w").write(
    "Hostname evil\nLocaldir src\nVolume 1:\n"
    "    StartingPath   .  \n    EndingPath     zz-ok.txt  \n"
    "    Hash SHA1 %s\nFilelist 0\n" % hashlib.sha1(vol).hexdigest())
"#;

/// Every regular file with the "EVIL" payload anywhere under `root`, except
/// under `allowed`.
fn evil_files(root: &Path, allowed: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for p in tree_paths(root) {
        let full = root.join(std::ffi::OsStr::from_bytes(&p));
        if full.starts_with(allowed) || !full.is_file() {
            continue;
        }
        if fs::read(&full).unwrap() == b"EVIL\n" {
            found.push(full);
        }
    }
    found
}

#[test]
fn tar_entries_escaping_the_restore_dir_are_refused() {
    let env = Env::new();
    let outside = env.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let abs = outside.join("abs.txt");
    let abs = abs.to_str().unwrap();
    let cases: Vec<(String, Vec<String>)> = vec![
        ("dot-dot".into(), vec!["file:snapshot/../evil.txt".into()]),
        (
            "nested dot-dot".into(),
            vec!["file:snapshot/sub/../../evil.txt".into()],
        ),
        (
            "dot-dot to outside".into(),
            vec!["file:snapshot/../outside/evil.txt".into()],
        ),
        (
            "multivol dot-dot".into(),
            vec!["file:multivol_snapshot/../evil.txt/1".into()],
        ),
        ("absolute tar name".into(), vec![format!("file:{abs}")]),
        (
            "absolute after the prefix".into(),
            vec![format!("file:snapshot/{abs}")],
        ),
        (
            "write through a symlink".into(),
            vec![
                format!("symlink:snapshot/link:{}", outside.display()),
                "file:snapshot/link/evil.txt".into(),
            ],
        ),
    ];
    for (i, (what, entries)) in cases.iter().enumerate() {
        let target = env.path().join(format!("target-{i}"));
        fs::create_dir(&target).unwrap();
        let st = Command::new("python3")
            .arg("-c")
            .arg(MAKE_HOSTILE_SET)
            .arg(&target)
            .args(entries)
            .status()
            .expect("run python3");
        assert!(st.success(), "{what}: crafting the volume failed");

        let dest = env.restore_dir(&i.to_string());
        let out = env
            .dupr()
            .args(["restore", "--no-encryption"])
            .arg(file_url(&target))
            .arg(&dest)
            .output()
            .unwrap();
        let e = stderr_of(&out);
        assert!(
            !out.status.success(),
            "{what}: hostile archive restored: {e}"
        );
        assert_eq!(e.trim_end().lines().count(), 1, "{what}: {e}");
        assert!(
            e.contains("vol1.difftar.gz") || e.contains("evil.txt") || e.contains(abs),
            "{what}: error should name the volume or entry: {e}"
        );
        let bad = evil_files(env.path(), &dest);
        assert!(
            bad.is_empty(),
            "{what}: written outside the restore dir: {bad:?}"
        );
        assert!(
            dir_is_empty(&outside),
            "{what}: wrote into {}",
            outside.display()
        );
        assert!(!env.path().join("evil.txt").exists());
    }
}

/// duplicity's machine-readable `--log-file` records (frontends parse them):
/// a target that is not a URL is "ERROR 23 CommandLineError", found before
/// the source (here missing too) or a passphrase is looked at.
#[test]
fn log_file_gets_duplicity_records() {
    let env = Env::new();
    let log = env.path().join("dupr.log");
    let out = env
        .dupr()
        .env_remove("PASSPHRASE")
        .arg(format!("--log-file={}", log.display()))
        .args(["full", "no-such-source-dir", "baddir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(23), "{}", out_text(&out));
    assert_one_line_naming(&out, &["baddir"]);
    let text = fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ERROR 23 CommandLineError"), "{text}");
    assert!(
        lines.next().unwrap().starts_with(". bad URL \"baddir\""),
        "{text}"
    );
    assert!(text.ends_with("\n\n"), "{text:?}");
    // A warning becomes a WARNING record; the run's lines stay on stderr.
    let log2 = env.path().join("dupr2.log");
    let url = env.target_url();
    let out = env
        .dupr()
        .arg(format!("--log-file={}", log2.display()))
        .args(["--no-encryption", "--asynchronous-upload"])
        .args(["full".as_ref(), env.src().as_os_str(), url.as_ref()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out_text(&out));
    let text = fs::read_to_string(&log2).unwrap();
    assert!(
        text.starts_with("WARNING 1\n. --asynchronous-upload is ignored"),
        "{text}"
    );
    for rec in text.split_terminator("\n\n") {
        let mut l = rec.lines();
        let head = l.next().unwrap();
        assert!(
            ["ERROR ", "WARNING ", "NOTICE ", "INFO ", "DEBUG "]
                .iter()
                .any(|p| head.starts_with(p)),
            "{text}"
        );
        assert!(l.all(|x| x.starts_with(". ")), "{text}");
    }
}
