//! Trust (issue 13):
//! 1. the target lock is taken with an exclusive create: two backups with
//!    different caches started together, or racing to take over a stale
//!    lock, end with exactly one exit 0 and one exit 23, and the archive
//!    restores;
//! 2. numeric options out of range fail with one line and exit 23 before
//!    anything touches the target; an error after the lock releases it;
//! 3. temporaries a killed run left on the target are removed by the next
//!    run and by `cleanup --force` (listed by its dry run);
//! 4. SIGINT/SIGTERM stop a backup or restore at a safe point: temporaries
//!    removed, locks released, `dupr: interrupted by SIGTERM`, exit 130/143,
//!    and the backup resumes afterwards.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_tree(src: &Path, files: usize, size: usize) {
    for i in 0..files {
        let d = src.join(format!("d{}", i % 5));
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("f{i:03}.bin")),
            pseudo_random_bytes(size, i as u64 + 7),
        )
        .unwrap();
    }
}

/// Names in the target directory.
fn target_names(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(env.target())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn temporaries(env: &Env) -> Vec<String> {
    target_names(env)
        .into_iter()
        .filter(|n| n.starts_with(".dupr-tmp.") || n.starts_with(".dupr-new."))
        .collect()
}

/// Files anywhere under `root` whose name starts with `prefix`.
fn files_named(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p);
            }
        }
    }
    out
}

fn manifests(env: &Env) -> usize {
    target_names(env)
        .iter()
        .filter(|n| n.contains(".manifest"))
        .count()
}

/// A backup process with its own cache, not waited for.
fn spawn_dupr(env: &Env, cache: &Path, faults: &str, args: &[&str]) -> Child {
    let mut c = Command::new(dupr_bin());
    c.env("XDG_CACHE_HOME", cache)
        .env("LC_ALL", "C.UTF-8")
        .env_remove("PASSPHRASE")
        .current_dir(env.path())
        .args(["--no-encryption", "--timeout", "1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !faults.is_empty() {
        c.env("DUPR_FAULTS", faults);
    }
    c.spawn().unwrap()
}

fn spawn_full(env: &Env, cache: &Path, faults: &str) -> Child {
    let (src, url) = (env.src(), env.target_url());
    spawn_dupr(
        env,
        cache,
        faults,
        &["full", "--volsize", "1", src.to_str().unwrap(), &url],
    )
}

fn finish(c: Child) -> Output {
    c.wait_with_output().unwrap()
}

fn dupr_in(env: &Env, cache: &Path) -> assert_cmd::Command {
    let mut c = dupr();
    c.env("XDG_CACHE_HOME", cache)
        .current_dir(env.path())
        .arg("--no-encryption");
    c
}

fn restore_matches(env: &Env, cache: &Path, name: &str) {
    let dest = env.restore_dir(name);
    let o = dupr_in(env, cache)
        .arg("restore")
        .arg(env.target_url())
        .arg(&dest)
        .output()
        .unwrap();
    assert!(o.status.success(), "restore: {}", text(&o.stderr));
    assert_same_tree(&env.src(), &dest);
}

/// Of two runs, exactly one succeeded and the other was refused with
/// exit 23 and one line naming the lock; returns the winner's index.
fn one_winner(a: &Output, b: &Output, what: &str) -> usize {
    let codes = (a.status.code(), b.status.code());
    let (ea, eb) = (text(&a.stderr), text(&b.stderr));
    let (winner, loser) = match codes {
        (Some(0), Some(23)) => (0, &eb),
        (Some(23), Some(0)) => (1, &ea),
        _ => panic!("{what}: exit codes {codes:?}, want one 0 and one 23\nA: {ea}\nB: {eb}"),
    };
    assert!(
        loser.contains("another dupr run") && loser.contains(".dupr-lock"),
        "{what}: {loser}"
    );
    assert_eq!(loser.trim().lines().count(), 1, "{what}: {loser}");
    winner
}

#[test]
fn concurrent_full_backups_exactly_one_proceeds() {
    // Uploads slowed (1 s each, --timeout 1) so each run holds the lock for
    // seconds; in some rounds one run's lock create is slowed as well, in
    // others the two race unhindered.
    let rounds: [(&str, &str); 6] = [
        ("put:1-2:slow", "put:1-2:slow"),
        ("put:1-2:slow,lock:1:slow", "put:1-2:slow"),
        ("put:1-2:slow", "put:1-2:slow,lock:1:slow"),
        ("put:1-2:slow", "put:1-2:slow"),
        ("put:1-2:slow,lock:1:slow", "put:1-2:slow"),
        ("put:1-2:slow", "put:1-2:slow"),
    ];
    for (round, (fa, fb)) in rounds.iter().enumerate() {
        let env = Env::new();
        write_tree(&env.src(), 12, 300_000);
        let (ca, cb) = (env.path().join("cache-a"), env.path().join("cache-b"));
        let a = spawn_full(&env, &ca, fa);
        let b = spawn_full(&env, &cb, fb);
        let (oa, ob) = (finish(a), finish(b));
        let w = one_winner(&oa, &ob, &format!("round {round}"));
        assert_eq!(
            manifests(&env),
            1,
            "round {round}: {:?}",
            target_names(&env)
        );
        assert!(
            !env.target().join(".dupr-lock").exists(),
            "round {round}: lock left"
        );
        assert_eq!(temporaries(&env), Vec::<String>::new(), "round {round}");
        restore_matches(&env, if w == 0 { &ca } else { &cb }, "r");
    }
}

fn stale_lock_text(host: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "dupr-lock 1\nhost {host}\npid 4242\ncache /other/cache\nstarted {t}\nheartbeat {t}\n",
        t = now - 3600
    )
}

#[test]
fn racing_takeovers_of_a_stale_lock_let_exactly_one_in() {
    let rounds: [(&str, &str); 4] = [
        ("put:1-2:slow", "put:1-2:slow"),
        ("put:1-2:slow,lock:1:slow", "put:1-2:slow"),
        ("put:1-2:slow", "put:1-2:slow,lock:2:slow"),
        ("put:1-2:slow", "put:1-2:slow"),
    ];
    for (round, (fa, fb)) in rounds.iter().enumerate() {
        let env = Env::new();
        write_tree(&env.src(), 12, 300_000);
        fs::create_dir_all(env.target()).unwrap();
        fs::write(env.target().join(".dupr-lock"), stale_lock_text("gonehost")).unwrap();
        let (ca, cb) = (env.path().join("cache-a"), env.path().join("cache-b"));
        let a = spawn_full(&env, &ca, fa);
        let b = spawn_full(&env, &cb, fb);
        let (oa, ob) = (finish(a), finish(b));
        let w = one_winner(&oa, &ob, &format!("round {round}"));
        // The winner warns if it removed the stale lock itself; it may
        // instead have found it already removed by the loser, which never
        // warns (its refusal is its one line).
        let err = text(&[&oa, &ob][w].stderr);
        assert!(
            !err.contains("Took over") || err.contains("gonehost"),
            "round {round}: {err}"
        );
        assert_eq!(manifests(&env), 1, "round {round}");
        // No lock and no takeover markers are left behind.
        let left: Vec<String> = target_names(&env)
            .into_iter()
            .filter(|n| n.starts_with(".dupr"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "round {round}");
        restore_matches(&env, if w == 0 { &ca } else { &cb }, "r");
    }
}

#[test]
fn out_of_range_numbers_fail_before_touching_the_target() {
    let env = Env::new();
    write_tree(&env.src(), 2, 1000);
    for (opt, val) in [
        ("--concurrency", "100000"),
        ("--concurrency", "0"),
        ("--volsize", "0"),
        ("--volsize", "99999999999999"),
        ("--num-retries", "100000"),
        ("--max-blocksize", "0"),
        ("--timeout", "0"),
        ("--timeout", "18446744073709551615"),
        ("--backend-retry-delay", "18446744073709551615"),
        ("--s3-multipart-chunk-size", "99999999999999"),
        ("--s3-multipart-max-procs", "100000"),
    ] {
        let o = env
            .dupr()
            .args(["--no-encryption", "full", opt, val])
            .arg(env.src())
            .arg(env.target_url())
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(23), "{opt} {val}: {err}");
        assert!(
            err.starts_with(&format!("dupr: {opt} {val}: out of range (allowed: ")),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!env.target().exists(), "{opt} {val} touched the target");
    }
    // The limits themselves are accepted.
    let o = env
        .dupr()
        .args([
            "--no-encryption",
            "full",
            "--concurrency",
            "128",
            "--volsize",
            "1",
        ])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    restore_matches(&env, &env.cache(), "r");
}

#[test]
fn an_error_after_taking_the_lock_releases_it() {
    let env = Env::new();
    write_tree(&env.src(), 6, 400_000);
    // The second volume's upload is refused (a permanent error).
    let c = spawn_full(&env, &env.cache(), "put:2:deny");
    let o = finish(c);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(50), "{err}");
    assert!(err.contains("permission denied (injected)"), "{err}");
    assert!(!env.target().join(".dupr-lock").exists(), "lock left");
    assert_eq!(temporaries(&env), Vec::<String>::new());
    // Another cache may write at once.
    let o = dupr_in(&env, &env.path().join("cache-b"))
        .args(["full", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    restore_matches(&env, &env.path().join("cache-b"), "r");
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
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A full backup killed with SIGKILL while a volume is staged on the
/// target: returns with the temporary still there.
fn killed_backup(env: &Env) {
    write_tree(&env.src(), 10, 400_000);
    let mut c = spawn_full(env, &env.cache(), "put:1+:slow");
    wait_for("a staged volume", || {
        temporaries(env).iter().any(|n| n.contains(".difftar"))
    });
    signal(&c, "-KILL");
    c.wait().unwrap();
    assert!(
        temporaries(env).iter().any(|n| n.contains(".difftar")),
        "{:?}",
        target_names(env)
    );
}

#[test]
fn stale_temporaries_go_with_the_next_run() {
    let env = Env::new();
    killed_backup(&env);
    let o = dupr_in(&env, &env.cache())
        .args(["full", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(temporaries(&env), Vec::<String>::new());
    assert!(!env.target().join(".dupr-lock").exists());
    restore_matches(&env, &env.cache(), "r");
}

#[test]
fn cleanup_lists_and_deletes_stale_temporaries() {
    let env = Env::new();
    killed_backup(&env);
    let temps = temporaries(&env);
    let o = dupr_in(&env, &env.cache())
        .arg("cleanup")
        .arg(env.target_url())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for t in &temps {
        assert!(out.contains(t.as_str()), "{t} not listed:\n{out}");
    }
    assert_eq!(temporaries(&env), temps, "a dry run deleted something");
    let o = dupr_in(&env, &env.cache())
        .args(["cleanup", "--force"])
        .arg(env.target_url())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("nothing to delete"), "{err}");
    assert_eq!(temporaries(&env), Vec::<String>::new());
    assert!(!env.target().join(".dupr-lock").exists());
}

fn interrupted_backup(sig: &str, code: i32, name: &str) {
    let env = Env::new();
    write_tree(&env.src(), 20, 400_000);
    let c = spawn_full(&env, &env.cache(), "put:1+:slow");
    // Interrupted once the first volume is stored.
    wait_for("the first volume", || {
        target_names(&env)
            .iter()
            .any(|n| n.contains(".vol1.difftar") && !n.starts_with('.'))
    });
    signal(&c, sig);
    let t = Instant::now();
    let o = finish(c);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        err.trim().lines().last(),
        Some(format!("dupr: interrupted by {name}").as_str()),
        "{err}"
    );
    assert_eq!(temporaries(&env), Vec::<String>::new());
    assert!(
        !env.target().join(".dupr-lock").exists(),
        "target lock left"
    );
    assert_eq!(files_named(&env.cache(), "lockfile"), Vec::<PathBuf>::new());
    assert_eq!(manifests(&env), 0, "an interrupted set is not complete");
    // The next run resumes it.
    let o = dupr_in(&env, &env.cache())
        .args(["full", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("Resuming"), "{err}");
    assert_eq!(manifests(&env), 1);
    restore_matches(&env, &env.cache(), "r");
}

#[test]
fn sigterm_stops_a_backup_at_a_safe_point() {
    interrupted_backup("-TERM", 143, "SIGTERM");
}

#[test]
fn sigint_stops_a_backup_at_a_safe_point() {
    interrupted_backup("-INT", 130, "SIGINT");
}

#[test]
fn sigterm_stops_a_restore_without_temporaries() {
    let env = Env::new();
    write_tree(&env.src(), 10, 400_000);
    let o = dupr_in(&env, &env.cache())
        .args(["full", "--volsize", "1"])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let dest = env.restore_dir("cut");
    let (d, url) = (dest.display().to_string(), env.target_url());
    let c = spawn_dupr(
        &env,
        &env.cache(),
        "get:2+:slow,open:2+:slow",
        &["restore", &url, &d],
    );
    wait_for("the first restored file", || {
        !files_named(&dest, "f0").is_empty()
    });
    signal(&c, "-TERM");
    let o = finish(c);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(
        err.trim().ends_with("dupr: interrupted by SIGTERM"),
        "{err}"
    );
    assert_eq!(files_named(&dest, ".dupr-restore."), Vec::<PathBuf>::new());
    assert_eq!(files_named(&env.cache(), "lockfile"), Vec::<PathBuf>::new());
    // Not everything arrived; a new restore completes it.
    assert!(files_named(&dest, "f").len() < 10);
    restore_matches(&env, &env.cache(), "again");
}

/// `--current-time` (duplicity's test aid, also used to replay old dates)
/// moves set names, never the lock's clock: a live run whose clock is set
/// 60 days back is not taken for a stale lock by another run, and a run set
/// back in time still takes over a lock that is really stale.
#[test]
fn a_run_with_current_time_in_the_past_keeps_and_takes_the_lock_by_the_real_clock() {
    let env = Env::new();
    write_tree(&env.src(), 12, 300_000);
    let past = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60 * 86_400)
        .to_string();
    let (ca, cb) = (env.path().join("cache-a"), env.path().join("cache-b"));
    let (src, url) = (env.src(), env.target_url());
    let a = spawn_dupr(
        &env,
        &ca,
        "put:1+:slow",
        &[
            "full",
            "--volsize",
            "1",
            "--current-time",
            &past,
            src.to_str().unwrap(),
            &url,
        ],
    );
    wait_for("run A's lock", || env.target().join(".dupr-lock").exists());
    let ob = finish(spawn_full(&env, &cb, ""));
    let oa = finish(a);
    assert_eq!(one_winner(&oa, &ob, "past clock"), 0);
    assert_eq!(manifests(&env), 1);
    restore_matches(&env, &ca, "a");

    // A really stale lock, and a run whose clock is 60 days back.
    let env = Env::new();
    write_tree(&env.src(), 2, 1000);
    fs::create_dir_all(env.target()).unwrap();
    fs::write(env.target().join(".dupr-lock"), stale_lock_text("gonehost")).unwrap();
    let o = dupr_in(&env, &env.cache())
        .args(["full", "--current-time", &past])
        .arg(env.src())
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!env.target().join(".dupr-lock").exists());
}

/// `remove-older-than --force` stopped by SIGTERM between deletions: one
/// line, exit 143, the target lock released, what is left still readable,
/// and a second run finishes the job.
#[test]
fn sigterm_stops_a_removal_between_deletions() {
    let env = Env::new();
    write_tree(&env.src(), 4, 300_000);
    let cache = env.cache();
    for kind in ["full", "full"] {
        let o = dupr_in(&env, &cache)
            .args([kind, "--volsize", "1"])
            .arg(env.src())
            .arg(env.target_url())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let url = env.target_url();
    let c = spawn_dupr(
        &env,
        &cache,
        "delete:1+:slow",
        &["remove-all-but-n-full", "1", "--force", &url],
    );
    // Wait for the first deletion to be under way.
    std::thread::sleep(Duration::from_millis(1500));
    signal(&c, "-TERM");
    let o = finish(c);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert_eq!(
        err.trim().lines().last(),
        Some("dupr: interrupted by SIGTERM"),
        "{err}"
    );
    assert!(
        !env.target().join(".dupr-lock").exists(),
        "target lock left"
    );
    restore_matches(&env, &cache, "after-stop");
    let o = dupr_in(&env, &cache)
        .args(["remove-all-but-n-full", "1", "--force"])
        .arg(env.target_url())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(manifests(&env), 1);
    restore_matches(&env, &cache, "after-rerun");
}
