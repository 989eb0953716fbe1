//! Issue 13, "Trust": the wrapper's workflow as a user meets it, through the
//! real binary. A profile run's passphrase (profile > PASSPHRASE > terminal,
//! the prompt driven through a pty by `script`), `schedule install
//! --preview` writing nothing, the wrapper commands' own `--help`, the
//! export's own passphrase, import notes for unused key ids, log rotation
//! in a shared log directory, `list-current-files`'s "Last full backup
//! date:" line, and exit 23 for a bad option value.
//!
//! Every test runs with HOME and the XDG directories in a temp dir.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const SECRET: &str = "correct horse battery staple 42";
/// 2026-12-05 12:00:00 UTC.
const NOON: &str = "1796472000";

struct T {
    env: Env,
}

impl T {
    fn new() -> T {
        let env = Env::new();
        for d in ["cfg", "state", "home", "bin"] {
            fs::create_dir_all(env.path().join(d)).unwrap();
        }
        let t = T { env };
        fs::write(t.env.src().join("a.txt"), "alpha\n").unwrap();
        fs::create_dir_all(t.env.src().join("d")).unwrap();
        fs::write(t.env.src().join("d/b.txt"), "beta\n").unwrap();
        t
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.env.path().join(rel)
    }
    fn cfg(&self) -> PathBuf {
        self.p("cfg/dupr/profiles")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(dupr_bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.p("home"))
            .env("XDG_CONFIG_HOME", self.p("cfg"))
            .env("XDG_STATE_HOME", self.p("state"))
            .env("XDG_CACHE_HOME", self.env.cache())
            .env("TZ", "UTC")
            .env("LC_ALL", "C.UTF-8")
            .current_dir(self.env.path())
            .stdin(Stdio::null());
        c
    }
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
    /// A profile backing up `src/` to `target/`, plus `extra` lines.
    fn profile(&self, name: &str, extra: &str) -> PathBuf {
        fs::create_dir_all(self.cfg()).unwrap();
        let p = self.cfg().join(format!("{name}.toml"));
        fs::write(
            &p,
            format!(
                "source = \"{}\"\ntarget = \"{}\"\n{extra}",
                self.env.src().display(),
                self.env.target_url()
            ),
        )
        .unwrap();
        chmod(&p, 0o600);
        p
    }
    fn private_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.p(name);
        fs::write(&p, text).unwrap();
        chmod(&p, 0o600);
        p
    }
    /// The same command line run on a pseudo-terminal (`script`), `input`
    /// typed into it.
    fn on_pty(&self, args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
        let mut line = shell_word(&dupr_bin().display().to_string());
        for a in args {
            line.push(' ');
            line.push_str(&shell_word(a));
        }
        let mut c = self.cmd();
        c.env("SHELL", "/bin/sh");
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_clear()
            .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .current_dir(self.env.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux");
        let mut w = child.stdin.take().unwrap();
        // One line per prompt, each once the prompt has had time to turn
        // the echo off (which may flush what was typed ahead).
        for l in input.split_inclusive('\n') {
            std::thread::sleep(std::time::Duration::from_millis(700));
            w.write_all(l.as_bytes()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(w);
        child.wait_with_output().unwrap()
    }
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--stdout--\n{}\n--stderr--\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(files_under(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The error lines of a run (duplicity's "Enter 'dupr --help'" hint aside).
fn error_lines(o: &Output) -> Vec<String> {
    text(&o.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Enter 'dupr --help'"))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------- 1. a profile's passphrase

#[test]
fn profile_run_takes_passphrase_from_the_environment() {
    let t = T::new();
    t.profile("home", "");
    // Preview says where the passphrase will come from, never the secret.
    let o = t.run(
        &["-p", "home", "--preview", "backup"],
        &[("PASSPHRASE", SECRET)],
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert_eq!(
        out.lines().next(),
        Some("# PASSPHRASE from the environment variable PASSPHRASE (hidden)"),
        "{out}"
    );
    assert!(!out.contains(SECRET), "{out}");
    let o = t.run(&["-p", "home", "--preview", "backup"], &[]);
    assert!(
        text(&o.stdout).lines().next().unwrap().starts_with(
            "# PASSPHRASE none: the profile names no passphrase source, PASSPHRASE is unset"
        ),
        "{}",
        show(&o)
    );

    // Without any source a backup fails on the missing passphrase (31).
    let o = t.run(&["-p", "home", "backup"], &[]);
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
    assert!(!t.env.target().exists() || files_under(&t.env.target()).is_empty());

    // With PASSPHRASE it backs up, encrypted with it.
    let o = t.run(&["-p", "home", "backup"], &[("PASSPHRASE", SECRET)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let names: Vec<String> = files_under(&t.env.target())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".difftar.gpg")),
        "{names:?}"
    );
    // The listing opens with the same passphrase, from the environment...
    let o = t.run(&["-p", "home", "list"], &[("PASSPHRASE", SECRET)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let l = parse_listing(&o.stdout);
    assert!(l.contains(b"d/b.txt".as_slice()), "{}", show(&o));
    // ...and a wrong one fails as a wrong passphrase.
    let dest = t.p("restored");
    let o = t.run(
        &["-p", "home", "restore", dest.to_str().unwrap()],
        &[("PASSPHRASE", "wrong")],
    );
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
    // The secret is in no log.
    for f in files_under(&t.p("state")) {
        let body = fs::read(&f).unwrap();
        assert!(!text(&body).contains(SECRET), "{}", f.display());
    }
}

#[test]
fn profile_passphrase_source_wins_over_the_environment() {
    let t = T::new();
    let pw = t.private_file("pw", &format!("{SECRET}\n"));
    t.profile("home", &format!("passphrase-file = \"{}\"\n", pw.display()));
    let o = t.run(
        &["-p", "home", "--preview", "backup"],
        &[("PASSPHRASE", "other")],
    );
    assert_eq!(
        text(&o.stdout).lines().next(),
        Some(format!("# PASSPHRASE from the file {}", pw.display()).as_str()),
        "{}",
        show(&o)
    );
    let o = t.run(&["-p", "home", "backup"], &[("PASSPHRASE", "other")]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // The backup is under the file's passphrase, not the environment's.
    let o = t
        .env
        .dupr()
        .env("PASSPHRASE", SECRET)
        .args(["list-current-files", "--name", "profile-home"])
        .arg(t.env.target_url())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let o = t
        .env
        .dupr()
        .env("PASSPHRASE", "other")
        .args(["list-current-files", "--name", "other-cache"])
        .arg(t.env.target_url())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
}

#[test]
fn profile_run_asks_on_the_terminal() {
    let t = T::new();
    t.profile("home", "");
    let o = t.on_pty(&["-p", "home", "--preview", "backup"], &[], "");
    assert!(
        text(&o.stdout).contains("# PASSPHRASE asked on the terminal before the run"),
        "{}",
        show(&o)
    );
    // Nothing is asked when nothing is encrypted.
    let o = t.on_pty(
        &["-p", "home", "--preview", "--no-encryption", "backup"],
        &[],
        "",
    );
    assert!(
        text(&o.stdout)
            .contains("# PASSPHRASE not needed (unencrypted, or a backup to public keys)"),
        "{}",
        show(&o)
    );
    // A backup asks twice; a mismatch stops it before anything is written.
    let o = t.on_pty(&["-p", "home", "backup"], &[], "one\ntwo\n");
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("do not match") || text(&o.stderr).contains("do not match"),
        "{}",
        show(&o)
    );
    assert!(files_under(&t.env.target()).is_empty());
    let o = t.on_pty(
        &["-p", "home", "backup"],
        &[],
        &format!("{SECRET}\n{SECRET}\n"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let shown = text(&o.stdout);
    assert!(shown.contains("GnuPG passphrase:"), "{shown}");
    assert!(
        !shown.contains(SECRET),
        "the passphrase was echoed: {shown}"
    );
    // The typed passphrase is the backup's.
    let o = t.run(&["-p", "home", "list"], &[("PASSPHRASE", SECRET)]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // A listing asks once.
    let o = t.on_pty(&["-p", "home", "list"], &[], &format!("{SECRET}\n"));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stdout).contains("d/b.txt"), "{}", show(&o));
}

// --------------------------------------------- 2. schedule install --preview

fn sched_env(t: &T) -> Vec<(String, String)> {
    let log = t.p("tools.log");
    for name in ["systemctl", "crontab"] {
        let p = t.p("bin").join(name);
        fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        chmod(&p, 0o755);
    }
    vec![
        (
            "DUPR_SYSTEMCTL".into(),
            t.p("bin/systemctl").display().to_string(),
        ),
        (
            "DUPR_CRONTAB".into(),
            t.p("bin/crontab").display().to_string(),
        ),
    ]
}

fn run_env(t: &T, args: &[&str], env: &[(String, String)]) -> Output {
    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    t.run(args, &e)
}

#[test]
fn schedule_install_preview_writes_nothing() {
    let t = T::new();
    t.profile("home", "");
    let env = sched_env(&t);
    let before = files_under(t.env.path());
    let units = t.p("cfg/systemd/user");
    for flag in ["--preview", "--dry-run"] {
        let o = run_env(
            &t,
            &["schedule", "install", "-p", "home", "--every", "1h", flag],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        let out = text(&o.stdout);
        let service = units.join("dupr-home.service");
        assert!(
            out.starts_with(&format!("# would write {}:\n", service.display())),
            "{out}"
        );
        assert!(out.contains("OnUnitActiveSec=1h\n"), "{out}");
        assert!(out.contains(" -p home backup\n"), "{out}");
        assert!(out.contains("0 * * * * "), "{out}");
        assert!(out.ends_with("# preview: nothing was written\n"), "{out}");
        assert!(!units.exists(), "{flag} created {}", units.display());
        assert!(
            !t.p("tools.log").exists(),
            "{flag} ran systemctl or crontab"
        );
        assert_eq!(before, files_under(t.env.path()), "{flag} wrote a file");
    }
    let o = run_env(
        &t,
        &[
            "schedule",
            "install",
            "-p",
            "home",
            "--every",
            "15m",
            "--cron",
            "--preview",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "# would add this line to the crontab (replacing any line tagged # dupr:home):"
    );
    assert!(
        lines[1].starts_with("*/15 * * * * ") && lines[1].ends_with(" # dupr:home"),
        "{out}"
    );
    assert!(!t.p("tools.log").exists());

    // What the preview shows is exactly what an install writes.
    let o = run_env(
        &t,
        &[
            "schedule",
            "install",
            "-p",
            "home",
            "--every",
            "1h",
            "--preview",
        ],
        &env,
    );
    let preview = text(&o.stdout);
    let o = run_env(
        &t,
        &["schedule", "install", "-p", "home", "--every", "1h"],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    for unit in ["dupr-home.service", "dupr-home.timer"] {
        let body = fs::read_to_string(units.join(unit)).unwrap();
        let block = format!(
            "# would write {}:\n{body}# would",
            units.join(unit).display()
        );
        assert!(
            preview.contains(&block),
            "{unit}:\n{body}\nnot in\n{preview}"
        );
    }
    // remove --preview names the units and removes nothing.
    let calls = fs::read_to_string(t.p("tools.log")).unwrap();
    let o = run_env(&t, &["schedule", "remove", "-p", "home", "--preview"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stdout).contains(&format!(
            "# would remove {}",
            units.join("dupr-home.timer").display()
        )),
        "{}",
        show(&o)
    );
    assert!(units.join("dupr-home.timer").exists());
    let after = fs::read_to_string(t.p("tools.log")).unwrap();
    assert!(
        !after[calls.len()..].contains("systemctl"),
        "remove --preview ran: {after}"
    );
}

// ----------------------------------------------------- 3. their own --help

#[test]
fn wrapper_commands_have_their_own_help() {
    let t = T::new();
    let generic = t.run(&["--help"], &[]);
    assert!(generic.status.success());
    let generic = text(&generic.stdout);
    for want in [
        "dupr profile",
        "dupr schedule install|list|remove",
        "dupr -p NAME export-keys FILE",
        "dupr import-keys FILE",
    ] {
        assert!(generic.contains(want), "top-level help lacks {want:?}");
    }
    let cases: &[(&[&str], &str)] = &[
        (&["profile", "--help"], "profile"),
        (&["profile", "import", "-h"], "profile"),
        (&["-p", "home", "--help"], "profile"),
        (&["schedule", "--help"], "schedule"),
        (&["schedule", "install", "--help"], "schedule"),
        (&["export-keys", "--help"], "export_keys"),
        (&["-p", "home", "export-keys", "--help"], "export_keys"),
        (&["import-keys", "--help"], "import_keys"),
    ];
    for (args, snap) in cases {
        let o = t.run(args, &[]);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", show(&o));
        let out = text(&o.stdout);
        assert!(
            out.lines().count() < 60 && !out.contains("--s3-endpoint-url"),
            "{args:?} printed the generic help"
        );
        insta::assert_snapshot!(format!("help_{snap}"), out);
    }
}

// -------------------------------------------- 4. the export's own passphrase

fn gpg_decrypt(t: &T, file: &Path, pass: &str) -> Option<Vec<u8>> {
    let home = t.p("gpghome");
    fs::create_dir_all(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    let o = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            pass,
            "-d",
        ])
        .arg(file)
        .output()
        .unwrap();
    o.status.success().then_some(o.stdout)
}

fn readme_of(tar: &[u8]) -> String {
    let mut c = Command::new("tar")
        .args(["xO", "dupr-home/README.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(tar).unwrap();
    text(&c.wait_with_output().unwrap().stdout)
}

#[test]
fn export_keys_has_its_own_passphrase() {
    let t = T::new();
    t.profile("home", "");
    let backup_pw = "backup-pass-1";
    let export_pw = "export-pass-2";

    // DUPR_EXPORT_PASSPHRASE encrypts the export; the backup one does not open it.
    let out = t.p("e1.dupr");
    let o = t.run(
        &["-p", "home", "export-keys", out.to_str().unwrap()],
        &[
            ("PASSPHRASE", backup_pw),
            ("DUPR_EXPORT_PASSPHRASE", export_pw),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stdout).contains(
            "encrypted with the export passphrase from the environment variable DUPR_EXPORT_PASSPHRASE"
        ),
        "{}",
        show(&o)
    );
    assert!(gpg_decrypt(&t, &out, backup_pw).is_none());
    let tar = gpg_decrypt(&t, &out, export_pw).expect("the export passphrase opens it");
    let readme = readme_of(&tar);
    assert!(
        readme.contains("The passphrase of this export: the export passphrase from the environment variable DUPR_EXPORT_PASSPHRASE."),
        "{readme}"
    );
    assert!(!readme.contains(export_pw) && !readme.contains(backup_pw));

    // import-keys takes the same: the backup passphrase is refused (31),
    // the export's opens it.
    let o = t.run(
        &["import-keys", out.to_str().unwrap()],
        &[("DUPR_EXPORT_PASSPHRASE", backup_pw)],
    );
    assert_eq!(o.status.code(), Some(31), "{}", show(&o));
    fs::remove_file(t.cfg().join("home.toml")).unwrap();
    let o = t.run(
        &["import-keys", out.to_str().unwrap()],
        &[("DUPR_EXPORT_PASSPHRASE", export_pw)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(t.cfg().join("home.toml").exists());

    // --export-passphrase-file, private only.
    let pwf = t.private_file("export.pw", &format!("{export_pw}\n"));
    let out2 = t.p("e2.dupr");
    let o = t.run(
        &[
            "-p",
            "home",
            "export-keys",
            out2.to_str().unwrap(),
            "--export-passphrase-file",
            pwf.to_str().unwrap(),
        ],
        &[
            ("PASSPHRASE", backup_pw),
            ("DUPR_EXPORT_PASSPHRASE", "ignored"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let readme = readme_of(&gpg_decrypt(&t, &out2, export_pw).expect("file's passphrase"));
    assert!(
        readme.contains(&format!(
            "The passphrase of this export: the export passphrase from the file {} (--export-passphrase-file).",
            pwf.display()
        )),
        "{readme}"
    );
    let o = t.run(
        &[
            "import-keys",
            out2.to_str().unwrap(),
            "--export-passphrase-file",
            pwf.to_str().unwrap(),
        ],
        &[],
    );
    // The profile exists now: refused, but only after the export opened.
    assert!(
        text(&o.stderr).contains("exists"),
        "the passphrase file did not open it: {}",
        show(&o)
    );
    chmod(&pwf, 0o644);
    let o = t.run(
        &[
            "-p",
            "home",
            "export-keys",
            t.p("e3.dupr").to_str().unwrap(),
            "--export-passphrase-file",
            pwf.to_str().unwrap(),
        ],
        &[("PASSPHRASE", backup_pw)],
    );
    assert_ne!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stderr).contains("chmod 600"), "{}", show(&o));
    assert!(!t.p("e3.dupr").exists());

    // Without one (no terminal), the backup passphrase, and the README says so.
    let out4 = t.p("e4.dupr");
    let o = t.run(
        &["-p", "home", "export-keys", out4.to_str().unwrap()],
        &[("PASSPHRASE", backup_pw)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let readme = readme_of(&gpg_decrypt(&t, &out4, backup_pw).expect("backup passphrase"));
    assert!(
        readme.contains("The passphrase of this export: the profile's backup passphrase (no export passphrase was given)."),
        "{readme}"
    );
}

// ----------------------------------------------- 5. import: unused key ids

#[test]
fn import_says_which_key_ids_were_not_converted() {
    let t = T::new();
    let conf = t.p("dbs.conf");
    fs::write(
        &conf,
        "ROOT=\"/srv\"\nDEST=\"file:///mnt/b\"\nPASSPHRASE='s3cret'\nGPG_ENC_KEY=\"6F1B2C3D4E5A6978\"\nGPG_SIGN_KEY=\"1122334455667788\"\n",
    )
    .unwrap();
    let o = t.run(&["profile", "import", conf.to_str().unwrap(), "dbs"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.contains("GPG_ENC_KEY"))
        .unwrap_or_else(|| panic!("the key ids are not mentioned: {out}"));
    assert_eq!(
        line,
        "not converted: GPG_ENC_KEY=6F1B2C3D4E5A6978, GPG_SIGN_KEY=1122334455667788: ENCRYPTION is not 'yes', so the wrapper did not pass them to duplicity (it encrypted with PASSPHRASE alone); to back up to the key(s), add to the profile: encrypt-key = [\"6F1B2C3D4E5A6978\"], sign-key = \"1122334455667788\""
    );
    let profile: toml::Table =
        toml::from_str(&fs::read_to_string(t.cfg().join("dbs.toml")).unwrap()).unwrap();
    assert!(
        !profile.contains_key("encrypt-key") && !profile.contains_key("sign-key"),
        "{profile:?}"
    );
}

// ------------------------------------------------------------- 6. log files

#[test]
fn log_rotation_keeps_other_profiles_logs_and_runs_never_share_a_log() {
    let t = T::new();
    let logs = t.p("logs");
    fs::create_dir_all(&logs).unwrap();
    let extra = format!(
        "no-encryption = true\nlog-dir = \"{}\"\nlog-keep-days = 1\n",
        logs.display()
    );
    t.profile("home", &extra);
    t.profile("home-x", &extra);
    let old = [
        "dupr-home-backup-20200101T000000Z.log",
        "dupr-home-list-20200101T000000Z-2.log",
        "dupr-home-x-backup-20200101T000000Z.log",
        "dupr-homely-backup-20200101T000000Z.log",
        "dupr-home-backup-notes.log",
        "notes.txt",
    ];
    for f in old {
        let p = logs.join(f);
        fs::write(&p, "old\n").unwrap();
        set_mtime(&p, 1_577_836_800);
    }
    let o = t.run(&["-p", "home", "--current-time", NOON, "backup"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let mut left: Vec<String> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "dupr-home-backup-20261205T120000Z.log",
            "dupr-home-backup-notes.log",
            "dupr-home-x-backup-20200101T000000Z.log",
            "dupr-homely-backup-20200101T000000Z.log",
            "notes.txt",
        ]
    );
    // Two runs in the same second: two logs, each with its own run.
    for _ in 0..2 {
        let o = t.run(&["-p", "home", "--current-time", NOON, "list"], &[]);
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    }
    let a = logs.join("dupr-home-list-20261205T120000Z.log");
    let b = logs.join("dupr-home-list-20261205T120000Z-2.log");
    for l in [&a, &b] {
        let body = fs::read_to_string(l).unwrap();
        assert_eq!(
            body.matches("== dupr list-current-files").count(),
            1,
            "{}: {body}",
            l.display()
        );
    }
    let recs = fs::read_to_string(t.p("state/dupr/home.runs.jsonl")).unwrap();
    assert!(recs.contains(&a.display().to_string()) && recs.contains(&b.display().to_string()));
}

// ------------------------------------------------- 7. Last full backup date

#[test]
fn list_current_files_prints_the_last_full_backup_date() {
    let t = T::new();
    let url = t.env.target_url();
    let list = |extra: &[&str]| {
        let mut c = t.cmd();
        c.args(["list-current-files", "--no-encryption"])
            .args(extra)
            .arg(&url);
        c.output().unwrap()
    };
    let o = list(&[]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        "Last full backup date: none\n",
        "{}",
        show(&o)
    );

    for (kind, now) in [
        ("full", NOON),
        ("full", "1796479200"),
        ("incremental", "1796482800"),
    ] {
        let o = t
            .cmd()
            .args([kind, "--no-encryption", "--current-time", now])
            .arg(t.env.src())
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    }
    // The newest chain's full (14:00), whatever time is asked for.
    for extra in [&[][..], &["-t", NOON][..]] {
        let o = list(extra);
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        assert_eq!(
            text(&o.stdout).lines().next(),
            Some("Last full backup date: Sat Dec  5 14:00:00 2026"),
            "{}",
            show(&o)
        );
    }
    // duplicity 3.2.1 prints the same line for the same target.
    if let Some(dup) = std::env::var_os("DUPR_DUPLICITY3").filter(|p| Path::new(p).exists()) {
        let arch = t.p("dup-archive");
        let o = Command::new(dup)
            .env("TZ", "UTC")
            .args(["list-current-files", "--no-encryption", "--archive-dir"])
            .arg(&arch)
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        let theirs = text(&o.stdout)
            .lines()
            .find(|l| l.starts_with("Last full backup date:"))
            .map(str::to_string);
        assert_eq!(
            theirs.as_deref(),
            Some("Last full backup date: Sat Dec  5 14:00:00 2026")
        );
    }
}

// ------------------------------------------------ 8. bad values exit 23

#[test]
fn bad_option_values_exit_23_naming_the_option() {
    let t = T::new();
    t.profile("home", "no-encryption = true\n");
    let o = t
        .cmd()
        .args(["full", "--no-encryption", "--current-time", NOON])
        .arg(t.env.src())
        .arg(t.env.target_url())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let before = files_under(&t.env.target());
    let url = t.env.target_url();
    let src = t.env.src().display().to_string();
    let dest = t.p("restored").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["restore", "--no-encryption", "-t", "garbage", &url, &dest],
            "--time",
        ),
        (
            vec![
                "restore",
                "--no-encryption",
                "--restore-time",
                "garbage",
                &url,
                &dest,
            ],
            "--time",
        ),
        (
            vec![
                "list-current-files",
                "--no-encryption",
                "--time",
                "garbage",
                &url,
            ],
            "--time",
        ),
        (
            vec![
                "incremental",
                "--no-encryption",
                "--full-if-older-than",
                "garbage",
                &src,
                &url,
            ],
            "--full-if-older-than",
        ),
        (
            vec!["remove-older-than", "garbage", "--no-encryption", &url],
            "remove-older-than",
        ),
        (
            vec!["collection-status", "--num-retries", "garbage", &url],
            "--num-retries",
        ),
        (
            vec!["collection-status", "-v", "garbage", &url],
            "--verbosity",
        ),
        (
            vec![
                "verify",
                "--no-encryption",
                "--read-data-subset",
                "garbage",
                &url,
            ],
            "--read-data-subset",
        ),
        (
            vec!["-p", "home", "status", "--max-age", "garbage"],
            "--max-age",
        ),
        (
            vec!["remove-all-but-n-full", "garbage", "--no-encryption", &url],
            "remove-all-but-n-full",
        ),
    ];
    for (args, option) in &cases {
        let o = t.run(args, &[]);
        assert_eq!(o.status.code(), Some(23), "{args:?}: {}", show(&o));
        let e = error_lines(&o);
        assert_eq!(e.len(), 1, "{args:?}: {}", show(&o));
        assert!(
            e[0].contains(option) && e[0].contains("garbage"),
            "{args:?}: {}",
            e[0]
        );
    }
    assert!(!t.p("restored").exists());
    assert_eq!(before, files_under(&t.env.target()), "a bad value wrote");
    // duplicity 3.2.1 exits 23 for a bad restore time too.
    if let Some(dup) = std::env::var_os("DUPR_DUPLICITY3").filter(|p| Path::new(p).exists()) {
        let o = Command::new(dup)
            .args([
                "restore",
                "--no-encryption",
                "-t",
                "garbage",
                "--archive-dir",
            ])
            .arg(t.p("dup-archive"))
            .arg(&url)
            .arg(t.p("dup-restored"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(23), "{}", show(&o));
    }
}
