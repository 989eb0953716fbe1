//! Unattended safety (issue 7):
//! 1. `verify URL` without a source tree reads every volume (or a
//!    `--read-data-subset` sample), and for a corrupt or missing volume
//!    names exactly the paths that volume holds (checked against GNU tar's
//!    listing of the volume);
//! 2. the lock object on the target: a live run with another cache is
//!    refused (exit 23, naming its host and cache), a stale one is taken
//!    over, our own leftover is reused, and the object is gone afterwards;
//!    two real concurrent runs with different caches exclude each other;
//! 3. the PID-record lock used where fcntl locks fail: held by a live run it
//!    refuses, left by a killed run it is stale and removed;
//! 4. monitoring: the one-line summary on stderr and `--detailed-exit-codes`
//!    (100 skipped files, 101 nothing to do).

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(c: &mut assert_cmd::Command) -> Output {
    c.output().expect("run dupr")
}

fn write_tree(src: &Path, files: usize, size: usize) {
    for i in 0..files {
        let d = src.join(format!("d{}", i % 7));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("f{i:03}.bin")),
            pseudo_random_bytes(size, i as u64 + 1),
        )
        .unwrap();
    }
}

fn volumes(target: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(target)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".difftar"))
        .collect();
    v.sort();
    v
}

/// The archive paths a plain (gzip) volume holds, from GNU tar's listing.
fn paths_in_volume(vol: &Path) -> BTreeSet<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' | tar t", vol.display()))
        .output()
        .unwrap();
    let mut set = BTreeSet::new();
    for line in text(&out.stdout).lines() {
        let (kind, rest) = line.split_once('/').unwrap_or((line, ""));
        let rest = rest.trim_end_matches('/');
        let path = match kind {
            // multivol_snapshot/<path>/<n>
            "multivol_snapshot" | "multivol_diff" => {
                rest.rsplit_once('/').map(|(p, _)| p).unwrap_or(rest)
            }
            _ => rest,
        };
        let path = path.strip_prefix("./").unwrap_or(path);
        set.insert(if path.is_empty() || path == "." {
            ".".to_string()
        } else {
            path.to_string()
        });
    }
    set
}

#[test]
fn verify_without_source_names_the_paths_of_a_damaged_volume() {
    let env = Env::new();
    write_tree(&env.src(), 40, 150_000);
    let o = run(env
        .dupr()
        .args(["full", "--no-encryption", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let vols = volumes(&env.target());
    assert!(vols.len() >= 4, "want several volumes, got {}", vols.len());

    // Intact: every volume read, no problem, exit 0.
    let o = run(env.dupr().arg("verify").arg(env.target_url()));
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains(&format!("{} of {} volume(s) read", vols.len(), vols.len()))
            && out.contains("0 problem(s)"),
        "{out}"
    );

    // A sample reads fewer volumes (and at least one).
    let o = run(env
        .dupr()
        .args(["verify", "--read-data-subset", "40%"])
        .arg(env.target_url()));
    let out = text(&o.stdout);
    let read: usize = out
        .split(" of ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {out}"));
    assert!(
        read < vols.len(),
        "a 40% sample read {read} of {}",
        vols.len()
    );
    let bad = run(env
        .dupr()
        .args(["verify", "--read-data-subset", "0"])
        .arg(env.target_url()));
    assert_eq!(bad.status.code(), Some(23), "{}", text(&bad.stderr));

    // Damage volume 2 (flip a byte) and remove volume 3.
    let v2 = vols
        .iter()
        .find(|p| p.to_string_lossy().contains(".vol2."))
        .unwrap();
    let v3 = vols
        .iter()
        .find(|p| p.to_string_lossy().contains(".vol3."))
        .unwrap();
    let want2 = paths_in_volume(v2);
    let want3 = paths_in_volume(v3);
    flip_middle_byte(v2);
    fs::remove_file(v3).unwrap();
    let o = run(env.dupr().arg("verify").arg(env.target_url()));
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("2 problem(s)"), "{out}");
    // Each problem block: "Problem: <file> ...", "  affects N path(s) ...",
    // then the paths indented by four spaces.
    let mut blocks: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("Problem: ") {
            blocks.push((rest.to_string(), BTreeSet::new()));
        } else if let Some(p) = line.strip_prefix("    ") {
            blocks.last_mut().unwrap().1.insert(p.to_string());
        }
    }
    assert_eq!(blocks.len(), 2, "{out}");
    let b2 = blocks
        .iter()
        .find(|b| b.0.contains(".vol2."))
        .expect("vol2 named");
    assert!(b2.0.contains("SHA-1"), "{}", b2.0);
    assert_eq!(b2.1, want2, "paths reported for the corrupt volume 2");
    let b3 = blocks
        .iter()
        .find(|b| b.0.starts_with("volume 3"))
        .expect("missing volume 3 named");
    assert!(b3.0.contains("missing"), "{}", b3.0);
    assert_eq!(b3.1, want3, "paths reported for the missing volume 3");
}

fn lock_object(env: &Env) -> PathBuf {
    env.target().join(".dupr-lock")
}

fn lock_text(host: &str, cache: &str, heartbeat: i64) -> String {
    format!(
        "dupr-lock 1\nhost {host}\npid 4242\ncache {cache}\nstarted {heartbeat}\nheartbeat {heartbeat}\n"
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn backup(env: &Env) -> Output {
    run(env
        .dupr()
        .args(["--no-encryption"])
        .arg(env.src())
        .arg(env.target_url()))
}

#[test]
fn target_lock_object_refuses_live_takes_over_stale() {
    let env = Env::new();
    write_tree(&env.src(), 5, 1000);
    let o = backup(&env);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !lock_object(&env).exists(),
        "the lock object outlived the run"
    );

    // A live run elsewhere: refused with exit 23, naming it; nothing written.
    fs::write(
        lock_object(&env),
        lock_text("otherhost", "/other/cache", now()),
    )
    .unwrap();
    let before = fs::read_dir(env.target()).unwrap().count();
    let o = backup(&env);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(23), "{err}");
    assert!(
        err.contains("otherhost") && err.contains("/other/cache"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(fs::read_dir(env.target()).unwrap().count(), before);
    // Reading is never blocked.
    let o = run(env.dupr().arg("list-current-files").arg(env.target_url()));
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Silent for an hour: stale, taken over with a warning.
    fs::write(
        lock_object(&env),
        lock_text("otherhost", "/other/cache", now() - 3600),
    )
    .unwrap();
    let o = backup(&env);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("stale target lock") && err.contains("otherhost"),
        "{err}"
    );
    assert!(!lock_object(&env).exists());

    // Our own leftover (same host and cache, say after kill -9): reused.
    let host = text(&Command::new("hostname").output().unwrap().stdout)
        .trim()
        .to_string();
    let cache_dir = fs::read_dir(env.cache().join("dupr"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    fs::write(
        lock_object(&env),
        lock_text(&host, &cache_dir.display().to_string(), now()),
    )
    .unwrap();
    let o = backup(&env);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("stale"), "{}", text(&o.stderr));
    assert!(!lock_object(&env).exists());

    // duplicity ignores the object: its collection-status works with it there.
    fs::write(lock_object(&env), lock_text("otherhost", "/x", now())).unwrap();
    let o = try_duplicity(
        Dup::V3,
        [
            "collection-status".to_string(),
            "--archive-dir".to_string(),
            env.archive_dir(Dup::V3).display().to_string(),
            env.target_url(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

fn spawn_backup(env: &Env, cache: &Path, extra: &[&str]) -> Child {
    Command::new(dupr_bin())
        .env("XDG_CACHE_HOME", cache)
        .env("PASSPHRASE", "pw")
        .args(["full", "--volsize", "1"])
        .args(extra)
        .arg(env.src())
        .arg(env.target_url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}

fn backup_with_cache(env: &Env, cache: &Path) -> Output {
    Command::new(dupr_bin())
        .env("XDG_CACHE_HOME", cache)
        .env("PASSPHRASE", "pw")
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap()
}

#[test]
fn two_runs_with_different_caches_exclude_each_other() {
    let env = Env::new();
    write_tree(&env.src(), 60, 400_000);
    let cache_b = env.path().join("cache-b");
    let mut a = spawn_backup(&env, &env.cache(), &[]);
    wait_for("the lock object", || lock_object(&env).exists());
    signal(&a, "-STOP");
    let o = backup_with_cache(&env, &cache_b);
    signal(&a, "-CONT");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(23), "{err}");
    assert!(
        err.contains("another dupr run") && err.contains(".dupr-lock"),
        "{err}"
    );
    let status = a.wait().unwrap();
    assert!(status.success());
    assert!(!lock_object(&env).exists());
    // Now B may run (an incremental on A's chain).
    let o = backup_with_cache(&env, &cache_b);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn pid_record_lock_where_fcntl_fails() {
    let env = Env::new();
    write_tree(&env.src(), 60, 400_000);
    // A live holder refuses a second run on the same cache (the fallback is
    // forced in both through the environment).
    let mut a = Command::new(dupr_bin())
        .env("XDG_CACHE_HOME", env.cache())
        .env("PASSPHRASE", "pw")
        .env("DUPR_LOCK_FALLBACK", "1")
        .args(["full", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let record = || {
        fs::read_dir(env.cache().join("dupr"))
            .ok()
            .and_then(|rd| rd.flatten().next())
            .map(|d| d.path().join("lockfile.pid"))
    };
    wait_for("the lock record", || record().is_some_and(|p| p.exists()));
    signal(&a, "-STOP");
    let o = run(env
        .dupr()
        .env("PASSPHRASE", "pw")
        .env("DUPR_LOCK_FALLBACK", "1")
        .arg("collection-status")
        .arg(env.target_url()));
    assert_eq!(o.status.code(), Some(23), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("lockfile.pid"),
        "{}",
        text(&o.stderr)
    );
    // Killed: its record stays, but names a dead process, so it is stale.
    signal(&a, "-KILL");
    let _ = a.wait();
    assert!(record().unwrap().exists());
    let o = run(env
        .dupr()
        .env("PASSPHRASE", "pw")
        .env("DUPR_LOCK_FALLBACK", "1")
        .args(["full", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url()));
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("stale lock"), "{err}");
    assert!(!record().unwrap().exists(), "the record outlived the run");
}

#[test]
fn summary_line_and_detailed_exit_codes() {
    let env = Env::new();
    write_tree(&env.src(), 3, 1000);
    let o = backup(&env);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dupr: backup done: full set") && last.contains("7 files"),
        "{err}"
    );
    // -v0 keeps stderr quiet.
    let o = run(env
        .dupr()
        .args(["-v0", "--no-encryption"])
        .arg(env.src())
        .arg(env.target_url()));
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        text(&o.stderr)
    );

    // Nothing changed: 0 by default, 101 with --detailed-exit-codes.
    for (flag, code) in [(None, 0), (Some("--detailed-exit-codes"), 101)] {
        let o = run(env
            .dupr()
            .args(["incremental", "--no-encryption", "--skip-if-no-change"])
            .args(flag)
            .arg(env.src())
            .arg(env.target_url()));
        assert_eq!(o.status.code(), Some(code), "{}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("nothing changed"),
            "{}",
            text(&o.stderr)
        );
    }
    let o = run(env
        .dupr()
        .env("DUPR_DETAILED_EXIT_CODES", "1")
        .args(["cleanup", "--force"])
        .arg(env.target_url()));
    assert_eq!(o.status.code(), Some(101), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("nothing to delete"));

    // A file that cannot be read: 0 by default, 100 with the flag.
    let locked = env.src().join("d0/locked");
    fs::write(&locked, b"secret").unwrap();
    chmod(&locked, 0o000);
    for (flag, code) in [(None, 0), (Some("--detailed-exit-codes"), 100)] {
        let mut c = dupr_without_dac_override(&env)
            .expect("setpriv cannot drop CAP_DAC_OVERRIDE: fix the test machine");
        let o = c
            .env("XDG_CACHE_HOME", env.cache())
            .args(["full", "--no-encryption"])
            .args(flag)
            .arg(env.src())
            .arg(env.target_url())
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains("1 file(s) skipped"), "{err}");
    }
    chmod(&locked, 0o600);
}
