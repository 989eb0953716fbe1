//! Profiles (issue 8) through the real binary: create/show/edit-check, a
//! backup run with hooks, retention and cleanup, logs and run records,
//! status thresholds, "skipped" when a run of the profile is in progress,
//! notifications (a local HTTP listener, a sendmail stand-in), environment
//! overrides, and secrets kept out of files, logs and previews.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const SECRET: &str = "correct horse battery staple 42";

struct P {
    env: Env,
}

impl P {
    fn new() -> P {
        let env = Env::new();
        for d in ["cfg", "state", "home"] {
            fs::create_dir_all(env.path().join(d)).unwrap();
        }
        P { env }
    }
    fn cfg(&self) -> PathBuf {
        self.env.path().join("cfg/dupr/profiles")
    }
    fn state(&self) -> PathBuf {
        self.env.path().join("state/dupr")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(dupr_bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.env.path().join("home"))
            .env("XDG_CONFIG_HOME", self.env.path().join("cfg"))
            .env("XDG_STATE_HOME", self.env.path().join("state"))
            .env("XDG_CACHE_HOME", self.env.cache())
            .current_dir(self.env.path());
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }
    fn write_profile(&self, name: &str, body: &str) -> PathBuf {
        fs::create_dir_all(self.cfg()).unwrap();
        let p = self.cfg().join(format!("{name}.toml"));
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
    fn pass_file(&self) -> PathBuf {
        let p = self.env.path().join("pass");
        fs::write(&p, format!("{SECRET}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
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

fn tree(src: &Path) {
    for (p, body) in [
        ("docs/a.txt", "a\n"),
        ("docs/b.txt", "b\n"),
        ("cache/junk", "junk\n"),
        ("keep.txt", "keep\n"),
    ] {
        let f = src.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, body).unwrap();
    }
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(all_files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn create_show_check_and_secrets_in_files() {
    let p = P::new();
    let o = p.run(&["profile", "create", "home", "/srv/data", "file:///mnt/b"]);
    assert!(o.status.success(), "{}", show(&o));
    let file = p.cfg().join("home.toml");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = p.run(&["profile", "show", "home"]);
    assert!(
        text(&o.stdout).contains("source = \"/srv/data\""),
        "{}",
        show(&o)
    );
    let o = p.run(&["profile", "list"]);
    assert!(text(&o.stdout).starts_with("home\t"), "{}", show(&o));
    // Creating it twice is refused.
    assert!(!p.run(&["profile", "create", "home"]).status.success());

    // edit-check catches an unknown key, naming it.
    p.write_profile(
        "bad",
        "source = \"/x\"\ntarget = \"file:///y\"\nvolsiz = 5\n",
    );
    let o = p.run(&["profile", "edit-check", "bad"]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("volsiz"),
        "{}",
        show(&o)
    );

    // A clear passphrase in a group/world readable profile is refused,
    // saying how to fix it; `show` hides it once the file is private.
    let f = p.write_profile(
        "clear",
        &format!("source = \"/x\"\ntarget = \"file:///y\"\npassphrase = \"{SECRET}\"\n"),
    );
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
    let o = p.run(&["profile", "show", "clear"]);
    let e = text(&o.stderr);
    assert!(
        !o.status.success() && e.contains("chmod 600"),
        "{}",
        show(&o)
    );
    assert!(!e.contains(SECRET));
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let o = p.run(&["profile", "show", "clear"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stdout).contains(SECRET), "{}", show(&o));
}

#[test]
fn backup_run_with_hooks_retention_logs_records_and_status() {
    let p = P::new();
    let src = p.env.src();
    tree(&src);
    let pass = p.pass_file();
    let marks = p.env.path().join("marks");
    let target = p.env.target_url();
    p.write_profile(
        "home",
        &format!(
            r#"source = "{src}"
target = "{target}"
select = ["- {src}/cache"]
passphrase-file = "{pass}"
volsize = 5
full-if-older-than = "14D"
log-keep-days = 7

[retention]
keep-full = 2

[hooks]
pre = "echo pre $PROFILE $SOURCE $TARGET_URL_PROT $CMD_NEXT >> {marks}"
post = "echo post err=$CMD_ERR >> {marks}"
"#,
            src = src.display(),
            pass = pass.display(),
            marks = marks.display()
        ),
    );
    // Preview: the command lines, no secret, nothing run.
    let o = p.run(&["-p", "home", "--preview", "backup"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        out.contains("dupr backup") && out.contains("--volsize=5"),
        "{out}"
    );
    assert!(
        out.contains("remove-all-but-n-full 2 --force") && out.contains("cleanup --force"),
        "{out}"
    );
    assert!(!out.contains(SECRET) && !marks.exists());
    // An old log is rotated away by the next run.
    let logs = p.state().join("logs/home");
    fs::create_dir_all(&logs).unwrap();
    let old = logs.join("dupr-home-backup-20200101T000000Z.log");
    fs::write(&old, "old").unwrap();
    set_mtime(&old, 1_577_836_800);

    for _ in 0..2 {
        let o = p.run(&["-p", "home", "backup"]);
        assert!(o.status.success(), "{}", show(&o));
        assert!(!text(&o.stderr).contains(SECRET) && !text(&o.stdout).contains(SECRET));
    }
    assert!(!old.exists(), "old log not rotated");
    let m = fs::read_to_string(&marks).unwrap();
    assert!(
        m.contains(&format!("pre home {} file:// backup", src.display()))
            && m.contains("post err=\n"),
        "{m}"
    );
    // The archive holds the selection, and stock duplicity reads it.
    let o = p
        .cmd()
        .env("PASSPHRASE", SECRET)
        .args(["list-current-files", "--name=profile-home"])
        .arg(&target)
        .output()
        .unwrap();
    let listed = parse_listing(&o.stdout);
    assert!(listed.contains(&b"docs/a.txt"[..]), "{}", show(&o));
    assert!(
        !listed.iter().any(|l| l.starts_with(b"cache/")),
        "{}",
        show(&o)
    );
    // Logs and records: no secret anywhere under the state dir.
    for f in all_files(&p.state()) {
        let body = fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains(SECRET),
            "{} holds the passphrase",
            f.display()
        );
    }
    let recs = fs::read_to_string(p.state().join("home.runs.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(recs.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"], "success");
    assert!(last["files"].as_u64().unwrap() >= 4, "{last}");
    assert!(Path::new(last["log"].as_str().unwrap()).exists());

    // status: fresh passes, a tiny max-age fails (for monitoring).
    let o = p.run(&["-p", "home", "status"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("Last success:") && text(&o.stdout).contains("incremental"));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = p.run(&["-p", "home", "status", "--max-age", "1s"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stdout).contains("STALE"), "{}", show(&o));

    // A failing pre hook stops the run: failure recorded, post told.
    let body = fs::read_to_string(p.cfg().join("home.toml"))
        .unwrap()
        .replace("pre = \"echo pre", "pre = \"exit 3; echo pre");
    fs::write(p.cfg().join("home.toml"), body).unwrap();
    let o = p.run(&["-p", "home", "backup"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let recs = fs::read_to_string(p.state().join("home.runs.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(recs.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"], "failure");
    assert_eq!(last["failed_step"], "pre");
    assert!(fs::read_to_string(&marks)
        .unwrap()
        .ends_with("post err=error\n"));
}

#[test]
fn a_second_run_of_a_profile_is_skipped() {
    let p = P::new();
    tree(&p.env.src());
    p.write_profile(
        "home",
        &format!(
            "source = \"{}\"\ntarget = \"{}\"\nno-encryption = true\n",
            p.env.src().display(),
            p.env.target_url()
        ),
    );
    fs::create_dir_all(p.state()).unwrap();
    // Hold the profile's run lock the way a running dupr does (fcntl).
    let lock = p.state().join("home.lock");
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import fcntl,sys,time\nf=open({:?},'a')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('held',flush=True)\ntime.sleep(30)",
            lock
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 5];
    holder
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    let o = p.run(&["-p", "home", "backup"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(102), "{}", show(&o));
    assert!(text(&o.stderr).contains("skipped"), "{}", show(&o));
    assert!(
        !p.env.target().exists(),
        "a skipped run wrote to the target"
    );
    let recs = fs::read_to_string(p.state().join("home.runs.jsonl")).unwrap();
    assert!(recs.contains("\"result\":\"skipped\""), "{recs}");
    // Once free, it runs.
    let o = p.run(&["-p", "home", "backup"]);
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn notifications_webhook_and_mail_and_env_overrides() {
    let p = P::new();
    tree(&p.env.src());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then Content-Length bytes of body.
        loop {
            let n = s.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let t = String::from_utf8_lossy(&req).into_owned();
            if let Some(i) = t.find("\r\n\r\n") {
                let len: usize = t
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if req.len() >= i + 4 + len || n == 0 {
                    break;
                }
            }
        }
        s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    let mail = p.env.path().join("mail.txt");
    p.write_profile(
        "home",
        &format!(
            r#"source = "/does/not/exist"
target = "{}"
no-encryption = true

[notify]
webhook = "http://127.0.0.1:{port}/hook"
email = "ops@example.org"
sendmail = "cat > {}"
on = "always"
"#,
            p.env.target_url(),
            mail.display()
        ),
    );
    // The source is overridden from the environment; the volsize too.
    let o = p
        .cmd()
        .env("DUPR_SOURCE", p.env.src())
        .env("DUPR_VOLSIZE", "7")
        .args(["-p", "home", "--preview", "backup"])
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(
        out.contains(&p.env.src().display().to_string()) && out.contains("--volsize=7"),
        "{}",
        show(&o)
    );
    let o = p
        .cmd()
        .env("DUPR_SOURCE", p.env.src())
        .args(["-p", "home", "backup"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let req = got.join().unwrap();
    assert!(req.starts_with("POST /hook HTTP/1.1"), "{req}");
    assert!(
        req.contains("\"profile\":\"home\"") && req.contains("\"result\":\"success\""),
        "{req}"
    );
    let m = fs::read_to_string(&mail).unwrap();
    assert!(
        m.contains("To: ops@example.org") && m.contains("Subject: dupr home backup: success"),
        "{m}"
    );
}

/// `status` reads the chain with the profile's own options: with a file
/// prefix, the chain is still found (it was read with the default prefixes,
/// and so went unreported).
#[test]
fn status_reads_the_chain_with_the_profiles_prefix() {
    let p = P::new();
    let src = p.env.path().join("src");
    tree(&src);
    let target = format!("file://{}", p.env.path().join("target").display());
    p.write_profile(
        "boxed",
        &format!(
            "source = {src:?}\ntarget = {target:?}\npassphrase-file = {:?}\nfile-prefix = \"box-\"\n",
            p.pass_file()
        ),
    );
    for _ in 0..2 {
        let o = p.run(&["-p", "boxed", "backup"]);
        assert!(o.status.success(), "{}", show(&o));
    }
    let names: Vec<String> = fs::read_dir(p.env.path().join("target"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("box-")), "{names:?}");
    let o = p.run(&["-p", "boxed", "status"]);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("+ 1 incremental(s)"), "{out}");
    assert!(
        out.contains(&format!("in {} file(s)", names.len())),
        "{out}"
    );

    // The same as one JSON document (`--json`).
    let o = p.run(&["-p", "boxed", "status", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["profile"], "boxed");
    assert_eq!(v["stale"], false);
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["target_state"], "reachable");
    assert_eq!(v["chain_incrementals"], 1);
    assert_eq!(v["target_files"], names.len());
    assert_eq!(v["last_success"]["result"], "success");
    // Stale by a tiny allowed age: exit 1, and the document says why.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = p.run(&["-p", "boxed", "status", "--json", "--max-age", "1s"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(v["stale"], true);
    assert_eq!(v["max_age"], "1s");
}

/// A source whose name starts with '-' is passed after `--`, so the run
/// does not read it as an option (found by fuzzing the importer).
#[test]
fn a_source_starting_with_a_dash_backs_up() {
    let p = P::new();
    let src = p.env.path().join("-src");
    tree(&src);
    let target = format!("file://{}", p.env.path().join("target").display());
    p.write_profile(
        "dash",
        &format!(
            "source = \"-src\"\ntarget = {target:?}\npassphrase-file = {:?}\n",
            p.pass_file()
        ),
    );
    let o = p.run(&["-p", "dash", "--preview", "backup"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains(" -- -src "), "{}", show(&o));
    let o = p.run(&["-p", "dash", "backup"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = p
        .cmd()
        .env("PASSPHRASE", SECRET)
        .args(["list-current-files", "--name=profile-dash"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        parse_listing(&o.stdout).contains(&b"docs/a.txt"[..]),
        "{}",
        show(&o)
    );
}
