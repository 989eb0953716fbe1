//! What duplicity's own functional test suite (testing/functional of its
//! source, run by `scripts/duplicity-suite`) found dupr doing differently,
//! one focused test each, driven through the real `dupr` binary:
//!
//! * negative numbers as option values (`--show-changes-in-set -1`), as
//!   duplicity's argparse parser reads them;
//! * the passphrase typed on standard input when the process has no
//!   controlling terminal (a pty under `setsid`, as the suite's harness runs
//!   duplicity, or a pipe), read as Python's getpass reads it;
//! * `verify --compare-data --path-to-restore P URL LOCAL` compares the
//!   archive's P with LOCAL itself (a single file with a file), as duplicity;
//! * secret keys of a GnuPG 1 home (`secring.gpg`, the suite's keyring), with
//!   a hidden recipient, with and without gpg 2's migrated copy, named or
//!   not (then every secret key at hand is tried, as gpg does);
//! * `fortestsonly://` (duplicity's test backend: a local directory) and the
//!   `DUP_FAIL_*` failure injection its tests set;
//! * resuming a backup that duplicity was interrupted in, from its own
//!   partial manifest, as duplicity resumes it.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Run dupr in `env` with `args`; the output, whatever the exit.
fn dupr_run(env: &Env, args: &[&str]) -> Output {
    let mut c = env.dupr();
    c.env_remove("DUPR_ARCHIVE_DIR");
    c.args(args);
    c.output().expect("run dupr")
}

fn dupr_ok(env: &Env, args: &[&str]) -> Output {
    let o = dupr_run(env, args);
    assert!(o.status.success(), "dupr {args:?} failed:\n{}", show(&o));
    o
}

// ------------------------------------------------ negative option values

/// A full (a.txt), then an incremental adding b.txt, then one adding c.txt.
fn three_sets(env: &Env) {
    let url = env.target_url();
    let src = env.src();
    let src = src.to_str().unwrap();
    write(&env.src().join("a.txt"), b"a\n");
    dupr_ok(
        env,
        &[
            "full",
            "--no-encryption",
            "--current-time",
            "1700000000",
            src,
            &url,
        ],
    );
    write(&env.src().join("b.txt"), b"b\n");
    dupr_ok(
        env,
        &[
            "incremental",
            "--no-encryption",
            "--current-time",
            "1700003600",
            src,
            &url,
        ],
    );
    write(&env.src().join("c.txt"), b"c\n");
    dupr_ok(
        env,
        &[
            "incremental",
            "--no-encryption",
            "--current-time",
            "1700007200",
            src,
            &url,
        ],
    );
}

/// The `File:` rows of a classic `--show-changes-in-set` listing.
fn changed_files(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("File:"))
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// duplicity indexes the sets newest first with a Python index: -1 is the
/// oldest set of the chain (the full), -2 the one after it; with --jsonstat
/// a negative index prints every set (duplicity's test_jsonstat_missing
/// runs `--show-changes-in-set -1 --jsonstat`).
#[test]
fn show_changes_in_set_takes_negative_indexes_as_duplicity_does() {
    let env = Env::new();
    three_sets(&env);
    let url = env.target_url();
    let status = |n: &str, json: bool| {
        let mut a = vec![
            "collection-status",
            "--no-encryption",
            "--show-changes-in-set",
            n,
        ];
        if json {
            a.push("--jsonstat");
        }
        a.push(&url);
        text(&dupr_ok(&env, &a).stdout)
    };
    assert_eq!(changed_files(&status("0", false)), ["c.txt"]);
    let full = status("-1", false);
    assert!(
        changed_files(&full).contains(&"a.txt".to_string())
            && !changed_files(&full).contains(&"b.txt".to_string()),
        "-1 is the full:\n{full}"
    );
    assert_eq!(changed_files(&status("-2", false)), ["b.txt"]);
    // `=` spelling too; -3 of three sets is the newest, as in Python.
    let o = dupr_ok(
        &env,
        &[
            "collection-status",
            "--no-encryption",
            "--show-changes-in-set=-3",
            &url,
        ],
    );
    assert_eq!(changed_files(&text(&o.stdout)), ["c.txt"]);

    let json = status("-1", true);
    for (kind, time, file) in [
        ("full", "20231114T221320Z", "a.txt"),
        ("inc", "20231114T231320Z", "b.txt"),
        ("inc", "20231115T001320Z", "c.txt"),
    ] {
        let key = format!("\"{kind}-{time}\"");
        let at = json
            .find(&key)
            .unwrap_or_else(|| panic!("no {key} in:\n{json}"));
        assert!(
            json[at..].contains(&format!("\"{file}\": \"new\"")),
            "{json}"
        );
    }
    // newest first, as duplicity prints them
    assert!(
        json.find("20231115T001320Z") < json.find("20231114T221320Z"),
        "{json}"
    );
    let one = status("1", true);
    assert!(
        one.contains("\"inc-20231114T231320Z\"") && !one.contains("full-"),
        "{one}"
    );
}

/// Past either end: one line naming the option, non-zero exit, no panic.
#[test]
fn show_changes_in_set_out_of_range_is_one_line_error() {
    let env = Env::new();
    three_sets(&env);
    let url = env.target_url();
    for n in ["-4", "3"] {
        let o = dupr_run(
            &env,
            &[
                "collection-status",
                "--no-encryption",
                "--show-changes-in-set",
                n,
                &url,
            ],
        );
        let err = text(&o.stderr);
        assert!(
            !o.status.success() && o.status.code() != Some(101),
            "{n}: {}",
            show(&o)
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{n}: {}", show(&o));
        assert!(err.contains("--show-changes-in-set"), "{n}: {}", show(&o));
    }
}

/// A negative number after any option that takes a value is its value, as in
/// duplicity (argparse), never "no such option: -1"; options that cannot be
/// negative then refuse it in one line.
#[test]
fn negative_numbers_are_option_values() {
    let env = Env::new();
    write(&env.src().join("a.txt"), b"a\n");
    let url = env.target_url();
    let src = env.src();
    let src = src.to_str().unwrap();
    for opt in [
        "--volsize",
        "--num-retries",
        "--concurrency",
        "--full-if-n-inc",
    ] {
        let o = dupr_run(&env, &["full", "--no-encryption", opt, "-1", src, &url]);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{opt} -1 was accepted:\n{}", show(&o));
        assert!(!err.contains("no such option"), "{opt}: {}", show(&o));
        assert!(
            err.contains(opt),
            "{opt}: error does not name it:\n{}",
            show(&o)
        );
        assert!(!env.target().exists(), "{opt}: target written");
    }
    // --current-time is an epoch number; duplicity takes negative ones.
    let o = dupr_run(
        &env,
        &[
            "full",
            "--no-encryption",
            "--current-time",
            "-1",
            "--dry-run",
            src,
            &url,
        ],
    );
    assert!(!text(&o.stderr).contains("no such option"), "{}", show(&o));
}

// ------------------------------------------------ passphrase on stdin

/// A command that runs `dupr` in a new session, so it has no controlling
/// terminal even when the tests run in one (`/dev/tty` cannot be opened).
fn dupr_setsid(env: &Env) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(dupr_bin());
    c.env_clear();
    c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c.env("HOME", env.path());
    c.env("LC_ALL", "C.UTF-8");
    c.env("XDG_CACHE_HOME", env.cache());
    c.current_dir(env.path());
    // SAFETY: setsid is async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Symmetric full backup and restore with the passphrase piped on stdin
/// (twice for the backup, once for the restore), no terminal anywhere.
#[test]
fn passphrase_piped_on_stdin_without_a_terminal() {
    use std::io::Write;
    let env = Env::new();
    write(&env.src().join("a.txt"), b"secret data\n");
    let url = env.target_url();
    let run = |args: &[&std::ffi::OsStr], input: &[u8]| -> Output {
        let mut c = dupr_setsid(&env);
        c.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("spawn dupr");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let src = env.src();
    let o = run(
        &["full".as_ref(), src.as_os_str(), url.as_ref()],
        b"pipe-pass\npipe-pass\n",
    );
    assert!(o.status.success(), "{}", show(&o));
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(all.contains("passphrase"), "no prompt:\n{}", show(&o));
    assert!(
        !all.contains("pipe-pass"),
        "passphrase printed:\n{}",
        show(&o)
    );
    let vol = fs::read_dir(env.target())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.contains(".vol1.difftar.gpg"))
        .expect("an encrypted volume");
    // Really encrypted with that passphrase: gpg opens it with it.
    let g = std::process::Command::new("gpg")
        .args(["--batch", "--homedir"])
        .arg(env.path())
        .args([
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "pipe-pass",
            "-d",
        ])
        .arg(env.target().join(&vol))
        .output()
        .unwrap();
    assert!(g.status.success(), "gpg: {}", text(&g.stderr));

    let dest = env.restore_dir("piped");
    let o = run(
        &["restore".as_ref(), url.as_ref(), dest.as_os_str()],
        b"pipe-pass\n",
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"secret data\n");

    // A wrong one is refused; two that differ are refused.
    let o = run(
        &[
            "restore".as_ref(),
            url.as_ref(),
            env.restore_dir("bad").as_os_str(),
        ],
        b"wrong\n",
    );
    assert!(!o.status.success(), "{}", show(&o));
    let o = run(
        &[
            "full".as_ref(),
            src.as_os_str(),
            format!("file://{}", env.path().join("t2").display()).as_ref(),
        ],
        b"one\ntwo\n",
    );
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("do not match"), "{}", show(&o));
    // Commands that work from the cache ask nothing (nor does duplicity):
    // collection-status with a standard input that never ends returns.
    let mut c = dupr_setsid(&env);
    c.args([
        "collection-status".as_ref(),
        url.as_ref() as &std::ffi::OsStr,
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let _open_stdin = child.stdin.take();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("collection-status waits on standard input");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "collection-status: {status}");
    // Standard input closed at once (/dev/null): no passphrase, one line.
    let o = run(
        &[
            "full".as_ref(),
            src.as_os_str(),
            format!("file://{}", env.path().join("t3").display()).as_ref(),
        ],
        b"",
    );
    assert!(
        !o.status.success() && o.status.code() != Some(101),
        "{}",
        show(&o)
    );
    assert!(text(&o.stderr).contains("PASSPHRASE"), "{}", show(&o));
}

/// A pseudo-terminal pair: (master, slave) file descriptors.
fn openpty() -> (fs::File, fs::File) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two fds; the null pointers mean no name and
    // default settings.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds owned by nobody else.
    unsafe { (fs::File::from_raw_fd(m), fs::File::from_raw_fd(s)) }
}

/// Read the pty master into `seen` until `done(seen)` (or 30 s, or the
/// other side is closed); whether `done` came true.
fn read_until(master: &mut fs::File, seen: &mut Vec<u8>, done: impl Fn(&str) -> bool) -> bool {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done(&text(seen)) && std::time::Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    done(&text(seen))
}

/// duplicity's harness (pexpect): dupr in a new session with a pty as
/// stdin/stdout/stderr that is not its controlling terminal; it waits for
/// "passphrase...:" and types the answer. The prompt must come, the typed
/// passphrase must not be echoed, and the backup must be made with it.
#[test]
fn passphrase_typed_on_a_pty_that_is_not_the_controlling_terminal() {
    use std::io::Write;
    let env = Env::new();
    write(&env.src().join("a.txt"), b"pty data\n");
    let url = env.target_url();
    let session = |args: &[&std::ffi::OsStr], answers: &[&str]| -> (i32, String) {
        let (mut master, slave) = openpty();
        let mut c = dupr_setsid(&env);
        c.args(args)
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        let mut child = c.spawn().expect("spawn dupr");
        drop(c);
        let mut seen = Vec::new();
        for (k, a) in answers.iter().enumerate() {
            // pexpect's `expect("passphrase.*:")`, the k-th time.
            let prompted = read_until(&mut master, &mut seen, |t| {
                t.matches("passphrase").count() > k
                    && t.rsplit("passphrase")
                        .next()
                        .is_some_and(|r| r.contains(':'))
            });
            if !prompted {
                let _ = child.kill();
                panic!("no passphrase prompt #{}; output:\n{}", k + 1, text(&seen));
            }
            master.write_all(format!("{a}\n").as_bytes()).unwrap();
        }
        let status = child.wait().unwrap();
        // Drain what is left (the slave is closed once the child is gone).
        read_until(&mut master, &mut seen, |_| false);
        (status.code().unwrap_or(-1), text(&seen))
    };
    let src = env.src();
    let (code, out) = session(
        &["full".as_ref(), src.as_os_str(), url.as_ref()],
        &["pty-pass", "pty-pass"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("pty-pass"), "passphrase echoed:\n{out}");
    let dest = env.restore_dir("pty");
    let (code, out) = session(
        &["restore".as_ref(), url.as_ref(), dest.as_os_str()],
        &["pty-pass"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"pty data\n");
}

// ------------------------------------------------ verify --compare-data

/// duplicity's test_verify_compare_data: a directory backed up, one file of
/// it verified with `--path-to-restore FILE URL SRC/FILE --compare-data`.
/// Also a backup whose source is a single file, verified against it.
/// duplicity 3.2.1 agrees on the counts.
#[test]
fn verify_compare_data_of_a_single_file() {
    let env = Env::new();
    write(&env.src().join("executable"), b"#!/bin/sh\necho hi\n");
    write(&env.src().join("sub/other"), b"other\n");
    let url = env.target_url();
    let src = env.src();
    let s = src.to_str().unwrap();
    dupr_ok(&env, &["full", "--no-encryption", s, &url]);
    let file = src.join("executable");
    let f = file.to_str().unwrap();
    let verify = |extra: &[&str], local: &str, url: &str| {
        let mut a = vec!["verify", "--no-encryption", "--compare-data"];
        a.extend_from_slice(extra);
        a.extend([url, local]);
        dupr_run(&env, &a)
    };
    let o = verify(&["--path-to-restore", "executable"], f, &url);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("1 file(s) compared, 0 difference(s) found"),
        "{}",
        show(&o)
    );
    // A subdirectory, against the local subdirectory.
    let sub = src.join("sub");
    let o = verify(&["--path-to-restore", "sub"], sub.to_str().unwrap(), &url);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("2 file(s) compared, 0 difference(s)"),
        "{}",
        show(&o)
    );

    // duplicity 3.2.1 on the same archive says the same.
    let archive = env.archive_dir(Dup::V3);
    let d = try_duplicity(
        Dup::V3,
        [
            "verify",
            "--no-encryption",
            "--compare-data",
            "--archive-dir",
            archive.to_str().unwrap(),
            "--path-to-restore",
            "executable",
            &url,
            f,
        ],
        &[],
    );
    assert_eq!(d.status.code(), Some(0), "duplicity: {}", show(&d));
    assert!(
        text(&d.stdout).contains("1 file(s) compared, 0 difference(s)"),
        "{}",
        show(&d)
    );

    // Changed data is found.
    fs::write(&file, b"#!/bin/sh\necho HI\n").unwrap();
    let o = verify(&["--path-to-restore", "executable"], f, &url);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stdout).contains("1 difference(s)"), "{}", show(&o));

    // A backup of one file, verified against that file.
    let one = env.path().join("one.txt");
    fs::write(&one, b"just one\n").unwrap();
    let url2 = file_url(&env.path().join("target2"));
    dupr_ok(
        &env,
        &["full", "--no-encryption", one.to_str().unwrap(), &url2],
    );
    let o = verify(&[], one.to_str().unwrap(), &url2);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!text(&o.stdout).contains("missing"), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("1 file(s) compared, 0 difference(s)"),
        "{}",
        show(&o)
    );
}

// ------------------------------------------------ GnuPG 1 keyring

fn gpg(home: &Path, args: &[&str]) -> Output {
    let o = std::process::Command::new("gpg")
        .env("GNUPGHOME", home)
        .env("LC_ALL", "C")
        .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
        .args(args)
        .output()
        .expect("run gpg");
    assert!(o.status.success(), "gpg {args:?}: {}", text(&o.stderr));
    o
}

fn kill_agent(home: &Path) {
    let _ = std::process::Command::new("gpgconf")
        .env("GNUPGHOME", home)
        .args(["--kill", "gpg-agent"])
        .output();
}

fn chmod700(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
}

/// A GnuPG 1 home like duplicity's testing/gnupg: `pubring.gpg` and
/// `secring.gpg` (the same packets `--export-secret-keys` writes), a key
/// protected by the passphrase "test". Returns (home, fingerprint).
fn gnupg1_home(env: &Env) -> (std::path::PathBuf, String) {
    let gen = env.path().join("gen");
    fs::create_dir_all(&gen).unwrap();
    chmod700(&gen);
    gpg(
        &gen,
        &[
            "--passphrase",
            "test",
            "--quick-gen-key",
            "Test User <test@example.com>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    let colons = text(&gpg(&gen, &["--with-colons", "--list-keys", "test@example.com"]).stdout);
    let fpr = colons
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_string();
    gpg(
        &gen,
        &[
            "--passphrase",
            "test",
            "--quick-add-key",
            &fpr,
            "cv25519",
            "encr",
            "never",
        ],
    );
    let public = gpg(&gen, &["--export", &fpr]).stdout;
    let secret = gpg(
        &gen,
        &["--passphrase", "test", "--export-secret-keys", &fpr],
    )
    .stdout;
    kill_agent(&gen);
    let home = env.path().join("gnupg1");
    fs::create_dir_all(&home).unwrap();
    chmod700(&home);
    fs::write(home.join("pubring.gpg"), public).unwrap();
    fs::write(home.join("secring.gpg"), secret).unwrap();
    (home, fpr)
}

/// duplicity's test_asym_with_hidden_recipient_cycle on a GnuPG 1 keyring:
/// full, incremental and restore with `--hidden-encrypt-key K --sign-key K`.
/// First with no gpg on PATH at all (the secret key can only come from
/// secring.gpg), then after gpg 2 migrated the keyring (private-keys-v1.d
/// beside secring.gpg), as it does on first use.
#[test]
fn hidden_recipient_with_a_gnupg1_keyring() {
    let env = Env::new();
    let (home, fpr) = gnupg1_home(&env);
    let url = env.target_url();
    let src = env.src();
    let s = src.to_str().unwrap();
    let no_gpg = env.path().join("empty-path");
    fs::create_dir_all(&no_gpg).unwrap();
    let run = |args: &[&str], path: &Path| -> Output {
        let mut c = env.dupr();
        c.env("GNUPGHOME", &home)
            .env("PASSPHRASE", "test")
            .env("SIGN_PASSPHRASE", "test")
            .env("PATH", path)
            .args(args)
            .args(["--hidden-encrypt-key", &fpr, "--sign-key", &fpr]);
        c.output().unwrap()
    };
    let must = |o: Output| {
        assert!(o.status.success(), "{}", show(&o));
        o
    };
    write(&env.src().join("a.txt"), b"one\n");
    must(run(&["full", "--current-time", "100000", s, &url], &no_gpg));
    write(&env.src().join("b.txt"), b"two\n");
    must(run(
        &["incremental", "--current-time", "200000", s, &url],
        &no_gpg,
    ));
    let dest = env.restore_dir("g1");
    must(run(&["restore", &url, dest.to_str().unwrap()], &no_gpg));
    assert_eq!(fs::read(dest.join("b.txt")).unwrap(), b"two\n");
    // No key named (duplicity's restart test verifies so): the secret keys
    // at hand are tried, as gpg tries them for an anonymous recipient.
    let dest = env.restore_dir("g1-unnamed");
    let mut c = env.dupr();
    c.env("GNUPGHOME", &home)
        .env("PASSPHRASE", "test")
        .env("PATH", &no_gpg)
        .args(["restore", &url])
        .arg(&dest);
    must(c.output().unwrap());
    assert_eq!(fs::read(dest.join("b.txt")).unwrap(), b"two\n");
    // Wrong passphrase: refused (31), no panic.
    let mut c = env.dupr();
    c.env("GNUPGHOME", &home)
        .env("PASSPHRASE", "nope")
        .env("PATH", &no_gpg)
        .args(["restore", &url])
        .arg(env.restore_dir("bad"))
        .args(["--hidden-encrypt-key", &fpr]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));

    // gpg 2 migrates secring.gpg into private-keys-v1.d on first use.
    let path = std::env::var_os("PATH").unwrap();
    gpg(&home, &["--passphrase", "test", "--list-secret-keys"]);
    assert!(home.join("private-keys-v1.d").is_dir());
    write(&env.src().join("c.txt"), b"three\n");
    must(run(
        &["incremental", "--current-time", "300000", s, &url],
        Path::new(&path),
    ));
    let dest = env.restore_dir("g2");
    must(run(
        &["restore", &url, dest.to_str().unwrap()],
        Path::new(&path),
    ));
    assert_eq!(fs::read(dest.join("c.txt")).unwrap(), b"three\n");
    // No key named, only gpg 2's store: found too.
    fs::remove_file(home.join("secring.gpg")).unwrap();
    let dest = env.restore_dir("g2-unnamed");
    let mut c = env.dupr();
    c.env("GNUPGHOME", &home)
        .env("PASSPHRASE", "test")
        .args(["restore", &url])
        .arg(&dest);
    must(c.output().unwrap());
    assert_eq!(fs::read(dest.join("c.txt")).unwrap(), b"three\n");
    kill_agent(&home);
}

// ------------------------------------------------ fortestsonly://

/// A source of three ~1 MB random files: several 1 MB volumes.
fn three_volumes(env: &Env) {
    for (i, seed) in [(1, 11u64), (2, 22), (3, 33)] {
        write(
            &env.src().join(format!("file{i}")),
            &pseudo_random_bytes(1_000_000, seed),
        );
    }
}

fn test_url(env: &Env) -> String {
    format!("fortestsonly://{}", env.target().display())
}

/// dupr with duplicity's test-backend variables set.
fn dupr_faulty(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = env.dupr();
    c.env_remove("DUPR_FAULTS");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.args(args);
    c.output().unwrap()
}

/// The archive's files at the target (not locks or staged temporaries).
fn stored(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(env.target())
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("duplicity-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// fortestsonly:// is a local directory: backup, list, restore.
#[test]
fn fortestsonly_is_a_local_directory() {
    let env = Env::new();
    three_volumes(&env);
    let url = test_url(&env);
    let s = env.src();
    let o = dupr_faulty(
        &env,
        &[],
        &[
            "full",
            "--no-encryption",
            "--volsize=1",
            s.to_str().unwrap(),
            &url,
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    let names = stored(&env);
    assert!(
        names.iter().any(|n| n.contains(".vol3.difftar")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with(".manifest")), "{names:?}");
    let dest = env.restore_dir("t");
    let o = dupr_faulty(
        &env,
        &[],
        &["restore", "--no-encryption", &url, dest.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_same_tree(&env.src(), &dest);
    // No path: one line, non-zero.
    let o = dupr_faulty(&env, &[], &["collection-status", "fortestsonly://"]);
    assert!(
        !o.status.success() && o.status.code() != Some(101),
        "{}",
        show(&o)
    );
    assert_eq!(
        text(&o.stderr).trim_end().lines().count(),
        1,
        "{}",
        show(&o)
    );
}

/// The harness's `fail=N`: DUP_FAIL_BY_SYSTEM_EXIT=volN.difftar ends the
/// process with exit 30 right after volume N is stored; the next run
/// (without it) resumes and completes the set.
#[test]
fn dup_fail_by_system_exit_exits_30_after_storing_the_volume() {
    let env = Env::new();
    three_volumes(&env);
    let url = test_url(&env);
    let s = env.src();
    let args = [
        "full",
        "--no-encryption",
        "--volsize=1",
        s.to_str().unwrap(),
        &url,
    ];
    let o = dupr_faulty(&env, &[("DUP_FAIL_BY_SYSTEM_EXIT", "vol2.difftar")], &args);
    assert_eq!(o.status.code(), Some(30), "{}", show(&o));
    let names = stored(&env);
    assert!(
        names.iter().any(|n| n.contains(".vol2.difftar")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains(".vol3.difftar")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".manifest")), "{names:?}");
    let o = dupr_faulty(&env, &[], &args);
    assert!(o.status.success(), "{}", show(&o));
    let dest = env.restore_dir("t");
    let o = dupr_faulty(
        &env,
        &[],
        &["restore", "--no-encryption", &url, dest.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_same_tree(&env.src(), &dest);
}

/// test_badupload's expectations: an upload that always raises fails the
/// run with duplicity's backend_error (50); one that silently stores
/// nothing, or all but the last byte, with backend_validation_failed (56).
/// Nothing is left claiming to be a complete set.
#[test]
fn dup_fail_upload_faults_give_duplicitys_exit_codes() {
    for (var, code) in [
        ("DUP_FAIL_WITH_EXCEPTION", 50),
        ("DUP_FAIL_SKIP_PUT_SILENT", 56),
        ("DUP_FAIL_LAST_BYTE_MISSING", 56),
    ] {
        let env = Env::new();
        three_volumes(&env);
        let url = test_url(&env);
        let s = env.src();
        let o = dupr_faulty(
            &env,
            &[(var, "vol2.difftar")],
            &[
                "full",
                "--no-encryption",
                "--volsize=1",
                "--num-ret=2",
                "--backend-retry-delay=1",
                s.to_str().unwrap(),
                &url,
            ],
        );
        assert_eq!(o.status.code(), Some(code), "{var}: {}", show(&o));
        let names = stored(&env);
        assert!(
            !names.iter().any(|n| n.ends_with(".manifest")),
            "{var}: {names:?}"
        );
        assert!(
            !names.iter().any(|n| n.contains(".vol2.difftar")),
            "{var}: a bad vol2 is left: {names:?}"
        );
    }
}

/// DUP_FAIL_WAIT_FOR_VOLUME holds volume 1's upload until volume 3 of the
/// same backup is stored: with --concurrency 3 the backup still completes,
/// volume 3 stored before volume 1.
#[test]
fn dup_fail_wait_for_volume_reorders_uploads() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    three_volumes(&env);
    let url = test_url(&env);
    let s = env.src();
    let o = dupr_faulty(
        &env,
        &[(
            "DUP_FAIL_WAIT_FOR_VOLUME",
            r#"["vol1.difftar", "vol3.difftar"]"#,
        )],
        &[
            "full",
            "--no-encryption",
            "--volsize=1",
            "--concurrency=3",
            s.to_str().unwrap(),
            &url,
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    let names = stored(&env);
    let when = |v: &str| {
        let n = names.iter().find(|n| n.contains(v)).unwrap();
        let m = fs::metadata(env.target().join(n)).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    assert!(when(".vol1.difftar") > when(".vol3.difftar"), "{names:?}");
    // A malformed value: one line, before anything is written.
    let env = Env::new();
    three_volumes(&env);
    let o = dupr_faulty(
        &env,
        &[("DUP_FAIL_WAIT_FOR_VOLUME", "vol1.difftar")],
        &[
            "full",
            "--no-encryption",
            env.src().to_str().unwrap(),
            &test_url(&env),
        ],
    );
    assert!(
        !o.status.success() && o.status.code() != Some(101),
        "{}",
        show(&o)
    );
    assert!(
        text(&o.stderr).contains("DUP_FAIL_WAIT_FOR_VOLUME"),
        "{}",
        show(&o)
    );
    assert!(stored(&env).is_empty(), "{:?}", stored(&env));
}

// ------------------------------------------------ resuming duplicity's sets

/// The state duplicity leaves when a full is interrupted after volume
/// `after` was stored: duplicity 3.2.1 writes the full (three ~1 MB files,
/// 1 MB volumes), then the manifest, signatures and later volumes go and
/// the cached manifest becomes a `.manifest.part` listing volumes up to
/// `listed` (`after`, or one fewer when the last upload's record had not
/// been written yet), as duplicity writes it while a backup runs. Returns
/// the archive dir.
fn duplicity_interrupted_full(env: &Env, after: u32, listed: u32) -> std::path::PathBuf {
    three_volumes(env);
    let archive = env.archive_dir(Dup::V3);
    let a = archive.to_str().unwrap();
    run_duplicity(
        Dup::V3,
        [
            "full",
            "--archive-dir",
            a,
            "--name",
            "n1",
            "--volsize",
            "1",
            "-v0",
            "--no-print-statistics",
            env.src().to_str().unwrap(),
            &env.target_url(),
        ],
        &[("PASSPHRASE", "pw")],
    );
    let cache = archive.join("n1");
    let manifest = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "manifest"))
        .expect("duplicity's cached manifest");
    let text = fs::read_to_string(&manifest).unwrap();
    let cut = text
        .find(&format!("Volume {}:", listed + 1))
        .expect("more volumes than kept");
    fs::write(manifest.with_extension("manifest.part"), &text[..cut]).unwrap();
    fs::remove_file(&manifest).unwrap();
    for e in fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        if p.to_str().unwrap().contains(".sigtar") {
            fs::remove_file(p).unwrap();
        }
    }
    for n in stored(env) {
        let vol: Option<u32> = n
            .split(".vol")
            .nth(1)
            .and_then(|r| r.split('.').next())
            .and_then(|d| d.parse().ok());
        if n.contains(".manifest") || n.contains(".sigtar") || vol.is_some_and(|v| v > after) {
            fs::remove_file(env.target().join(n)).unwrap();
        }
    }
    archive
}

/// duplicity's restart tests (test_split_after_*, test_new_file), on a set
/// duplicity itself was writing: dupr continues it as duplicity does. The
/// last stored volume may be incomplete, so it is written again; the ones
/// before are kept byte for byte; the finished set restores with duplicity
/// 3.2.1 and with dupr.
#[test]
fn resumes_a_full_that_duplicity_was_interrupted_in() {
    resume_duplicity_set(2, 2);
}

/// duplicity's own restart tests leave a partial manifest that lists one
/// volume fewer than are stored: duplicity goes by the stored volumes (the
/// last one is written again), and so does dupr.
#[test]
fn resumes_a_duplicity_set_whose_manifest_lists_fewer_volumes() {
    resume_duplicity_set(2, 1);
}

fn resume_duplicity_set(after: u32, listed: u32) {
    let env = Env::new();
    let archive = duplicity_interrupted_full(&env, after, listed);
    let vol1 = stored(&env)
        .into_iter()
        .find(|n| n.contains(".vol1."))
        .unwrap();
    let vol1_bytes = fs::read(env.target().join(&vol1)).unwrap();
    let mut c = env.dupr();
    c.env("PASSPHRASE", "pw").args([
        "full",
        "--archive-dir",
        archive.to_str().unwrap(),
        "--name",
        "n1",
        "--volsize",
        "1",
        env.src().to_str().unwrap(),
        &env.target_url(),
    ]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("Resuming"), "{}", show(&o));
    let names = stored(&env);
    assert_eq!(
        names.iter().filter(|n| n.contains(".manifest")).count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        fs::read(env.target().join(&vol1)).unwrap(),
        vol1_bytes,
        "volume 1 was written again"
    );
    // The set is the one duplicity started (one full, one time).
    assert!(
        names
            .iter()
            .all(|n| n.contains(vol1.split('.').nth(1).unwrap())),
        "{names:?}"
    );

    let theirs = env.restore_dir("dup");
    run_duplicity(
        Dup::V3,
        [
            "restore",
            "--archive-dir",
            env.path().join("arch2").to_str().unwrap(),
            &env.target_url(),
            theirs.to_str().unwrap(),
        ],
        &[("PASSPHRASE", "pw")],
    );
    assert_same_tree(&env.src(), &theirs);
    let ours = env.restore_dir("dupr");
    let mut c = env.dupr();
    c.env("PASSPHRASE", "pw")
        .args(["restore", &env.target_url()])
        .arg(&ours);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_same_tree(&env.src(), &ours);
}

/// Interrupted after its first volume: duplicity starts over, so does dupr
/// (a fresh set, complete, restorable); a wrong passphrase is refused and
/// the interrupted set kept.
#[test]
fn a_duplicity_set_interrupted_after_volume_1_starts_over() {
    let env = Env::new();
    let archive = duplicity_interrupted_full(&env, 1, 1);
    let run = |pass: &str| {
        let mut c = env.dupr();
        c.env("PASSPHRASE", pass).args([
            "full",
            "--archive-dir",
            archive.to_str().unwrap(),
            "--name",
            "n1",
            "--volsize",
            "1",
            env.src().to_str().unwrap(),
            &env.target_url(),
        ]);
        c.output().unwrap()
    };
    let before = stored(&env);
    let o = run("wrong");
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
    assert_eq!(stored(&env), before);
    let o = run("pw");
    assert!(o.status.success(), "{}", show(&o));
    let names = stored(&env);
    assert_eq!(
        names.iter().filter(|n| n.contains(".manifest")).count(),
        1,
        "{names:?}"
    );
    let ours = env.restore_dir("dupr");
    let mut c = env.dupr();
    c.env("PASSPHRASE", "pw")
        .args(["restore", &env.target_url()])
        .arg(&ours);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_same_tree(&env.src(), &ours);
}
