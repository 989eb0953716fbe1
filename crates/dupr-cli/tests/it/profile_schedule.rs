//! `dupr schedule install|list|remove` (systemd user timers and crontab
//! lines, through fake `systemctl` / `crontab` commands named by
//! DUPR_SYSTEMCTL / DUPR_CRONTAB) and `dupr -p NAME export-keys FILE` /
//! `dupr import-keys FILE` with real gpg keys in throwaway GnuPG homes, the
//! export opened by the real gpg and GNU tar.
//!
//! Every test runs the real binary with HOME and the XDG directories in a
//! temp dir.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A temp HOME with XDG dirs, a profile `home`, and fake systemctl/crontab.
struct Box_ {
    dir: tempfile::TempDir,
}

impl Box_ {
    fn new() -> Box_ {
        let dir = tempfile::Builder::new()
            .prefix("dupr-sched-")
            .tempdir()
            .unwrap();
        let b = Box_ { dir };
        for d in ["home", "config", "state", "cache", "src", "bin"] {
            fs::create_dir_all(b.p(d)).unwrap();
        }
        let fake_systemctl = format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexit 0\n",
            b.p("systemctl.log").display()
        );
        b.script("systemctl", &fake_systemctl);
        b.script(
            "systemctl-broken",
            "#!/bin/sh\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n",
        );
        let fake_crontab = format!(
            "#!/bin/sh\nT='{}'\ncase \"$1\" in\n  -l) if [ -f \"$T\" ]; then cat \"$T\"; else echo \"no crontab for $(id -un)\" >&2; exit 1; fi ;;\n  -) cat > \"$T\" ;;\n  *) exit 2 ;;\nesac\n",
            b.p("crontab.txt").display()
        );
        b.script("crontab", &fake_crontab);
        b.profile("home", "");
        b
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn script(&self, name: &str, text: &str) {
        let p = self.p("bin").join(name);
        fs::write(&p, text).unwrap();
        chmod(&p, 0o755);
    }

    fn profile_path(&self, name: &str) -> PathBuf {
        self.p("config/dupr/profiles").join(format!("{name}.toml"))
    }

    fn profile(&self, name: &str, extra: &str) {
        let path = self.profile_path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = format!(
            "source = \"{}\"\ntarget = \"{}\"\n{extra}",
            self.p("src").display(),
            file_url(&self.p("target"))
        );
        let _ = fs::remove_file(&path);
        fs::write(&path, text).unwrap();
        chmod(&path, 0o600);
    }

    fn unit_dir(&self) -> PathBuf {
        self.p("config/systemd/user")
    }

    fn systemctl_log(&self) -> String {
        fs::read_to_string(self.p("systemctl.log")).unwrap_or_default()
    }

    fn crontab(&self) -> String {
        fs::read_to_string(self.p("crontab.txt")).unwrap_or_default()
    }

    /// dupr in this box, with the fakes.
    fn dupr(&self) -> assert_cmd::Command {
        let mut c = dupr();
        c.env("HOME", self.p("home"))
            .env("XDG_CONFIG_HOME", self.p("config"))
            .env("XDG_STATE_HOME", self.p("state"))
            .env("XDG_CACHE_HOME", self.p("cache"))
            .env("DUPR_SYSTEMCTL", self.p("bin/systemctl"))
            .env("DUPR_CRONTAB", self.p("bin/crontab"))
            .env_remove("XDG_DATA_HOME")
            .current_dir(self.dir.path());
        c
    }
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn dupr_abs() -> PathBuf {
    fs::canonicalize(dupr_bin()).unwrap()
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `systemd-analyze verify` of the unit files (scripts/install-test-deps
/// installs it; a missing one is a broken set-up, not a skip).
fn analyze(units: &[PathBuf], scratch: &Path) {
    assert!(
        Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok(),
        "systemd-analyze is missing: run scripts/install-test-deps"
    );
    let rt = scratch.join("runtime");
    fs::create_dir_all(&rt).unwrap();
    chmod(&rt, 0o700);
    let o = Command::new("systemd-analyze")
        .env("XDG_RUNTIME_DIR", &rt)
        .arg("--user")
        .arg("verify")
        .args(units)
        .output()
        .unwrap();
    let err = stderr_of(&o);
    assert!(o.status.success(), "systemd-analyze verify failed: {err}");
    for l in err.lines() {
        assert!(
            !l.contains("dupr-"),
            "systemd-analyze verify complains about our units: {err}"
        );
    }
}

#[test]
fn systemd_install_list_remove() {
    let b = Box_::new();
    let o = b
        .dupr()
        .args(["schedule", "install", "-p", "home", "--every", "15m"])
        .env("PASSPHRASE", "top-secret-pw")
        .env("SIGN_PASSPHRASE", "top-secret-sign")
        .env("DUPR_VOLSIZE", "50")
        .env("GNUPGHOME", b.p("gnupg"))
        .output()
        .unwrap();
    assert!(o.status.success(), "install failed: {}", stderr_of(&o));
    let service = b.unit_dir().join("dupr-home.service");
    let timer = b.unit_dir().join("dupr-home.timer");
    let s = fs::read_to_string(&service).expect("service unit");
    let t = fs::read_to_string(&timer).expect("timer unit");

    let exe = dupr_abs();
    let exec = s
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert_eq!(exec, format!("{} -p home backup", exe.display()), "{s}");
    assert!(Path::new(exec.split(' ').next().unwrap()).is_absolute());
    let env: Vec<&str> = s
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .collect();
    let path_line = env
        .iter()
        .find(|l| l.starts_with("\"PATH="))
        .expect("Environment PATH");
    let bin_dir = exe.parent().unwrap().display().to_string();
    assert!(
        path_line.contains(&bin_dir),
        "PATH lacks the binary's dir: {path_line}"
    );
    for want in [
        format!("\"HOME={}\"", b.p("home").display()),
        format!("\"XDG_CONFIG_HOME={}\"", b.p("config").display()),
        format!("\"XDG_STATE_HOME={}\"", b.p("state").display()),
        format!("\"GNUPGHOME={}\"", b.p("gnupg").display()),
        "\"DUPR_VOLSIZE=50\"".to_string(),
    ] {
        assert!(env.contains(&want.as_str()), "missing {want} in {s}");
    }
    // No secrets, and no test machinery.
    assert!(!s.contains("top-secret"), "{s}");
    assert!(!s.contains("PASSPHRASE="), "{s}");
    assert!(
        !s.contains("DUPR_SYSTEMCTL") && !s.contains("DUPR_CRONTAB"),
        "{s}"
    );

    assert!(t.contains("\nOnBootSec="), "{t}");
    assert!(t.contains("\nOnUnitActiveSec=15min\n"), "{t}");
    assert!(t.contains("\nPersistent=true\n"), "{t}");
    assert!(t.contains("\nWantedBy=timers.target\n"), "{t}");

    let log = b.systemctl_log();
    assert!(log.contains("--user daemon-reload\n"), "{log}");
    assert!(
        log.contains("--user enable --now dupr-home.timer\n"),
        "{log}"
    );
    analyze(&[service.clone(), timer.clone()], b.dir.path());

    // Calendar intervals become OnCalendar timers.
    b.profile("daily", "");
    let o = b
        .dupr()
        .args(["schedule", "install", "-p", "daily", "--every", "@daily"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let dt = fs::read_to_string(b.unit_dir().join("dupr-daily.timer")).unwrap();
    assert!(
        dt.contains("\nOnCalendar=daily\n") && dt.contains("Persistent=true"),
        "{dt}"
    );
    analyze(
        &[
            b.unit_dir().join("dupr-daily.service"),
            b.unit_dir().join("dupr-daily.timer"),
        ],
        b.dir.path(),
    );

    let o = b.dupr().args(["schedule", "list"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let out = stdout_of(&o);
    assert!(out.contains("systemd\thome\tevery 15m\t"), "{out}");
    assert!(out.contains("systemd\tdaily\tevery @daily\t"), "{out}");

    let o = b
        .dupr()
        .args(["schedule", "remove", "-p", "home"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(!service.exists() && !timer.exists());
    assert!(
        b.systemctl_log()
            .contains("--user disable --now dupr-home.timer\n"),
        "{}",
        b.systemctl_log()
    );
    let out = stdout_of(&b.dupr().args(["schedule", "list"]).output().unwrap());
    assert!(
        !out.contains("\thome\t") && out.contains("\tdaily\t"),
        "{out}"
    );
}

#[test]
fn cron_install_list_remove() {
    let b = Box_::new();
    fs::write(
        b.p("crontab.txt"),
        "MAILTO=me\n5 4 * * * /usr/bin/other-job\n",
    )
    .unwrap();
    let o = b
        .dupr()
        .args([
            "schedule", "install", "-p", "home", "--every", "1h", "--cron",
        ])
        .env("PASSPHRASE", "top-secret-pw")
        .output()
        .unwrap();
    assert!(o.status.success(), "install failed: {}", stderr_of(&o));
    let table = b.crontab();
    assert!(
        table.starts_with("MAILTO=me\n5 4 * * * /usr/bin/other-job\n"),
        "{table}"
    );
    let line = table
        .lines()
        .find(|l| l.ends_with("# dupr:home"))
        .expect("tagged line");
    assert!(line.starts_with("0 * * * * PATH="), "{line}");
    let exe = dupr_abs();
    let bin_dir = exe.parent().unwrap().display().to_string();
    let path_word = line.split_whitespace().nth(5).unwrap();
    assert!(path_word.contains(&bin_dir), "{line}");
    assert!(
        line.contains(&format!(" HOME={} ", b.p("home").display())),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "{} -p home backup >/dev/null 2>&1 # dupr:home",
            exe.display()
        )),
        "{line}"
    );
    assert!(!table.contains("top-secret"), "{table}");
    // No systemd units for a cron schedule.
    assert!(!b.unit_dir().join("dupr-home.timer").exists());

    // Installing again replaces the line.
    let o = b
        .dupr()
        .args([
            "schedule", "install", "-p", "home", "--every", "@daily", "--cron",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let table = b.crontab();
    assert_eq!(table.matches("# dupr:home").count(), 1, "{table}");
    assert!(table.contains("\n@daily PATH="), "{table}");

    // One profile on systemd, one on cron: list shows both kinds.
    b.profile("work", "");
    let o = b
        .dupr()
        .args(["schedule", "install", "-p", "work", "--every", "30m"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let o = b.dupr().args(["schedule", "list"]).output().unwrap();
    let out = stdout_of(&o);
    assert!(out.contains("systemd\twork\tevery 30m\t"), "{out}");
    assert!(out.contains("cron\thome\t@daily\t"), "{out}");
    let o = b
        .dupr()
        .args(["schedule", "list", "-p", "home"])
        .output()
        .unwrap();
    let out = stdout_of(&o);
    assert!(
        out.contains("cron\thome") && !out.contains("\twork\t"),
        "{out}"
    );

    // Without a crontab command, switching to cron fails and keeps the timer.
    let o = b
        .dupr()
        .args([
            "schedule", "install", "-p", "work", "--every", "30m", "--cron",
        ])
        .env("DUPR_CRONTAB", b.p("bin/no-such-crontab"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("install cron"), "{}", stderr_of(&o));
    assert!(b.unit_dir().join("dupr-work.timer").exists());
    // Switching kinds leaves one schedule per profile.
    let o = b
        .dupr()
        .args([
            "schedule", "install", "-p", "work", "--every", "30m", "--cron",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(!b.unit_dir().join("dupr-work.timer").exists());
    assert!(
        b.crontab().contains("*/30 * * * * PATH="),
        "{}",
        b.crontab()
    );

    for name in ["home", "work"] {
        let o = b
            .dupr()
            .args(["schedule", "remove", "-p", name])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
    }
    assert_eq!(b.crontab(), "MAILTO=me\n5 4 * * * /usr/bin/other-job\n");
    let o = b
        .dupr()
        .args(["schedule", "remove", "-p", "home"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("no schedule installed for profile home"));
}

#[test]
fn falls_back_to_cron_without_systemd() {
    let b = Box_::new();
    for systemctl in [b.p("bin/systemctl-broken"), b.p("bin/no-such-systemctl")] {
        let _ = fs::remove_file(b.p("crontab.txt"));
        let o = b
            .dupr()
            .args(["schedule", "install", "-p", "home", "--every", "15m"])
            .env("DUPR_SYSTEMCTL", &systemctl)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr_of(&o));
        let err = stderr_of(&o);
        assert!(
            err.contains("systemd is not usable here") && err.contains("using cron"),
            "{err}"
        );
        assert!(!b.unit_dir().join("dupr-home.service").exists());
        assert!(!b.unit_dir().join("dupr-home.timer").exists());
        let table = b.crontab();
        assert!(table.starts_with("*/15 * * * * PATH="), "{table}");
        assert!(table.trim_end().ends_with("# dupr:home"), "{table}");
    }
    // An interval cron can't express is an error then, not a wrong schedule.
    let o = b
        .dupr()
        .args(["schedule", "install", "-p", "home", "--every", "2h30m"])
        .env("DUPR_SYSTEMCTL", b.p("bin/systemctl-broken"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cron can't run something every 2h30m"),
        "{err}"
    );
}

#[test]
fn bad_intervals_and_profiles() {
    let b = Box_::new();
    for (every, cron) in [
        ("15x", false),
        ("", false),
        ("0m", false),
        ("soon", true),
        ("45m", true),
    ] {
        let mut c = b.dupr();
        c.args(["schedule", "install", "-p", "home", "--every", every]);
        if cron {
            c.arg("--cron");
        }
        let o = c.output().unwrap();
        assert!(!o.status.success(), "--every {every:?} was accepted");
        let err = stderr_of(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("dupr: "), "{err}");
        assert!(
            err.contains("interval") || err.contains("cron can't"),
            "{err}"
        );
    }
    assert!(!b.p("crontab.txt").exists());
    assert!(!b.unit_dir().exists());
    assert_eq!(b.systemctl_log(), "");
    // A missing profile, a missing --every.
    let o = b
        .dupr()
        .args(["schedule", "install", "-p", "nope", "--every", "1h"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr_of(&o).contains("does not exist"),
        "{}",
        stderr_of(&o)
    );
    let o = b
        .dupr()
        .args(["schedule", "install", "-p", "home"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("--every"), "{}", stderr_of(&o));
}

#[test]
fn config_file_schedule_uses_absolute_path() {
    let b = Box_::new();
    let other = b.p("elsewhere/my profile.toml");
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    fs::copy(b.profile_path("home"), &other).unwrap();
    chmod(&other, 0o600);
    let o = b
        .dupr()
        .current_dir(b.p("elsewhere"))
        .args([
            "schedule",
            "install",
            "-c",
            "my profile.toml",
            "-p",
            "mine",
            "--every",
            "1d",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    let s = fs::read_to_string(b.unit_dir().join("dupr-mine.service")).unwrap();
    let exec = s
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert_eq!(
        exec,
        format!(
            "{} -p mine -c \"{}\" backup",
            dupr_abs().display(),
            fs::canonicalize(&other).unwrap().display()
        )
    );
    analyze(
        &[
            b.unit_dir().join("dupr-mine.service"),
            b.unit_dir().join("dupr-mine.timer"),
        ],
        b.dir.path(),
    );
}

// ------------------------------------------------------------ export-keys

const KP: &str = "key-and-export-pw";

fn gpg(home: &Path, args: &[&str]) -> Output {
    let o = Command::new("gpg")
        .env("GNUPGHOME", home)
        .env("LC_ALL", "C")
        .args(["--batch", "--no-tty"])
        .args(args)
        .output()
        .expect("run gpg");
    assert!(o.status.success(), "gpg {args:?} failed: {}", stderr_of(&o));
    o
}

fn new_home(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    chmod(p, 0o700);
    p.to_path_buf()
}

fn kill_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home)
        .args(["--kill", "gpg-agent"])
        .output();
}

/// GnuPG homes whose agents are stopped at the end.
struct Homes(Vec<PathBuf>);

impl Drop for Homes {
    fn drop(&mut self) {
        for h in &self.0 {
            kill_agent(h);
        }
    }
}

fn secret_fprs(home: &Path) -> String {
    let o = gpg(home, &["--with-colons", "--list-secret-keys"]);
    stdout_of(&o)
}

#[test]
fn export_and_import_keys() {
    let b = Box_::new();
    let homes = Homes(vec![
        new_home(&b.p("gnupg")),
        new_home(&b.p("gnupg-plain")),
        new_home(&b.p("gnupg-new")),
    ]);
    let gh = &homes.0[0];
    gpg(
        gh,
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            KP,
            "--quick-gen-key",
            "Dana <dana@example.org>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    let listing = stdout_of(&gpg(
        gh,
        &["--with-colons", "--list-keys", "dana@example.org"],
    ));
    let fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_string();
    gpg(
        gh,
        &[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            KP,
            "--quick-add-key",
            &fpr,
            "cv25519",
            "encr",
            "never",
        ],
    );

    // The profile: passphrase from a private file, a filelist at an
    // absolute path, the key as encryption and sign key.
    let list = b.p("lists/home.list");
    fs::create_dir_all(list.parent().unwrap()).unwrap();
    fs::write(&list, "+ **/keep\n- **\n").unwrap();
    let pwfile = b.p("home/pw");
    fs::write(&pwfile, format!("{KP}\n")).unwrap();
    chmod(&pwfile, 0o600);
    b.profile(
        "home",
        &format!(
            "# my comment\npassphrase-file = \"{}\"\ninclude-filelist = [\"{}\"]\nencrypt-key = [\"{fpr}\"]\nsign-key = \"dana@example.org\"\n",
            pwfile.display(),
            list.display()
        ),
    );
    let out = b.p("out/home-keys.gpg");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = b
        .dupr()
        .env("GNUPGHOME", gh)
        .args(["-p", "home", "export-keys"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "export-keys failed: {}", stderr_of(&o));
    let report = stdout_of(&o);
    assert!(
        report.contains(&fpr) && report.contains("public + secret"),
        "{report}"
    );
    assert_eq!(mode_of(&out), 0o600);
    let raw = fs::read(&out).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("PRIVATE KEY"));

    // The real gpg and GNU tar open it.
    let x = b.p("x");
    fs::create_dir_all(&x).unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; gpg --batch --no-tty --pinentry-mode loopback --passphrase '{KP}' -d '{}' | tar x",
            out.display()
        ))
        .env("GNUPGHOME", &homes.0[1])
        .env("LC_ALL", "C")
        .current_dir(&x)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gpg -d | tar x failed: {}",
        stderr_of(&o)
    );
    let top = x.join("dupr-home");
    let profile_text = fs::read_to_string(top.join("profile.toml")).unwrap();
    assert_eq!(
        profile_text,
        fs::read_to_string(b.profile_path("home")).unwrap()
    );
    let readme = fs::read_to_string(top.join("README.txt")).unwrap();
    for want in [
        "gpg -d home-keys.gpg | tar x",
        "gpg --import",
        "dupr import-keys home-keys.gpg",
        "dupr/profiles/home.toml",
    ] {
        assert!(readme.contains(want), "README lacks {want:?}:\n{readme}");
    }
    assert_eq!(
        fs::read_to_string(top.join("files/home.list")).unwrap(),
        "+ **/keep\n- **\n"
    );
    let files_index = fs::read_to_string(top.join("files.toml")).unwrap();
    assert!(
        files_index.contains(&list.display().to_string()),
        "{files_index}"
    );
    let public = top.join(format!("keys/{fpr}.public.asc"));
    let secret = top.join(format!("keys/{fpr}.secret.asc"));
    assert!(fs::read_to_string(&public)
        .unwrap()
        .contains("BEGIN PGP PUBLIC KEY BLOCK"));
    assert!(fs::read_to_string(&secret)
        .unwrap()
        .contains("BEGIN PGP PRIVATE KEY BLOCK"));

    // The secret key imports into a fresh GnuPG home.
    let plain = &homes.0[1];
    gpg(plain, &["--import", &secret.display().to_string()]);
    assert!(secret_fprs(plain).contains(&fpr));

    // dupr import-keys into a fresh account.
    let fresh = Box_::new();
    fs::remove_dir_all(fresh.p("config/dupr")).unwrap();
    let newgh = &homes.0[2];
    let o = fresh
        .dupr()
        .env("GNUPGHOME", newgh)
        .env("PASSPHRASE", KP)
        .arg("import-keys")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "import-keys failed: {}", stderr_of(&o));
    let report = stdout_of(&o);
    let installed = fresh.profile_path("home");
    assert!(
        report.contains(&installed.display().to_string()),
        "{report}"
    );
    assert!(secret_fprs(newgh).contains(&fpr), "{report}");
    assert_eq!(mode_of(&installed), 0o600);
    let new_list = fresh.p("config/dupr/profiles/home.files/home.list");
    assert_eq!(fs::read_to_string(&new_list).unwrap(), "+ **/keep\n- **\n");
    let text = fs::read_to_string(&installed).unwrap();
    assert!(
        text.contains("\n# my comment\n"),
        "comments are kept: {text}"
    );
    let t: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        t["include-filelist"].as_array().unwrap()[0]
            .as_str()
            .unwrap(),
        new_list.display().to_string()
    );
    assert_eq!(
        t["encrypt-key"].as_array().unwrap()[0].as_str().unwrap(),
        fpr
    );
    assert!(report.contains("the profile now points there"), "{report}");

    // A second import refuses to replace the profile.
    let o = fresh
        .dupr()
        .env("GNUPGHOME", newgh)
        .env("PASSPHRASE", KP)
        .arg("import-keys")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert!(
        err.contains("exists already") && err.contains("not replaced"),
        "{err}"
    );

    // A wrong passphrase: one line naming the file.
    let o = fresh
        .dupr()
        .env("GNUPGHOME", newgh)
        .env("PASSPHRASE", "wrong")
        .arg("import-keys")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&out.display().to_string()) && err.contains("wrong passphrase"),
        "{err}"
    );

    // A wrong key passphrase fails the export, and leaves no file behind.
    let bad_pw = b.p("home/badpw");
    fs::write(&bad_pw, "nope\n").unwrap();
    chmod(&bad_pw, 0o600);
    b.profile(
        "bad",
        &format!(
            "passphrase-file = \"{}\"\nencrypt-key = [\"{fpr}\"]\n",
            bad_pw.display()
        ),
    );
    let out2 = b.p("out/bad.gpg");
    let o = b
        .dupr()
        .env("GNUPGHOME", gh)
        .args(["-p", "bad", "export-keys"])
        .arg(&out2)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr_of(&o);
    assert!(err.contains("wrong passphrase for the secret key"), "{err}");
    assert!(!out2.exists());
    assert_eq!(fs::read_dir(b.p("out")).unwrap().count(), 1);
}
