//! `dupr profile import`: duplicity-backup.sh configs and duply profile
//! directories converted into dupr profiles, then used for real backups.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{file_url, parse_listing};

/// A temporary HOME with its own XDG config, state and cache directories.
struct Ctx {
    dir: tempfile::TempDir,
}

impl Ctx {
    fn new() -> Ctx {
        let dir = tempfile::Builder::new()
            .prefix("dupr-import-")
            .tempdir()
            .unwrap();
        for d in ["home", "cfg", "state", "cache"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        Ctx { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn home(&self) -> PathBuf {
        self.p("home")
    }

    fn dupr(&self) -> assert_cmd::Command {
        let mut c = common::dupr();
        c.env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.p("cfg"))
            .env("XDG_STATE_HOME", self.p("state"))
            .env("XDG_CACHE_HOME", self.p("cache"))
            .current_dir(self.dir.path());
        for v in [
            "DUPR_TARGET",
            "DUPR_SOURCE",
            "DUPR_ARCHIVE_DIR",
            "DUPR_NAME",
        ] {
            c.env_remove(v);
        }
        c
    }

    fn profile(&self, name: &str) -> PathBuf {
        self.p(&format!("cfg/dupr/profiles/{name}.toml"))
    }

    /// `dupr profile import FROM NAME`: stdout, which must name the notes.
    fn import(&self, from: &Path, name: &str) -> String {
        let out = self
            .dupr()
            .args(["profile", "import"])
            .arg(from)
            .arg(name)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "import failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.starts_with(&format!("imported {} as profile {name}", from.display())),
            "{stdout}"
        );
        let mode = fs::metadata(self.profile(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the profile must be private");
        stdout
    }

    fn table(&self, name: &str) -> toml::Table {
        toml::from_str(&fs::read_to_string(self.profile(name)).unwrap()).unwrap()
    }

    /// `dupr -p NAME ACTION` against a local target, source rewritten.
    fn run(&self, name: &str, action: &str, source: &Path, target: &Path) -> String {
        let out = self
            .dupr()
            .args(["-p", name, action])
            .env("DUPR_SOURCE", source)
            .env("DUPR_TARGET", file_url(target))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "dupr -p {name} {action} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn s(v: &str) -> toml::Value {
    toml::Value::String(v.into())
}

fn strs(v: &[&str]) -> toml::Value {
    toml::Value::Array(v.iter().map(|x| s(x)).collect())
}

fn write(p: &Path, text: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// Paths `list-current-files` prints, as strings.
fn listing(stdout: &str) -> BTreeSet<String> {
    parse_listing(stdout.as_bytes())
        .into_iter()
        .map(|p| String::from_utf8(p).unwrap())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The seed's real config, imported verbatim, field by field; then the
/// command lines a profile run would execute.
#[test]
fn seed_duplicity_backup_conf_imports_field_by_field() {
    let ctx = Ctx::new();
    let conf = fixture("duplicity-backup.conf");
    let stdout = ctx.import(&conf, "seed");
    for want in [
        "not converted: PASSPHRASE: copied into the profile in clear",
        "passphrase-file",
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: not profile fields",
        "environment of the scheduled run",
        "LOG_FILE:",
        "LOG_FILE_OWNER:",
        "HOSTNAME:",
        "EMAIL_FAILURE_ONLY, MAIL: unused, as EMAIL_TO is empty",
        "NOTIFICATION_FAILURE_ONLY, SLACK_HOOK_URL, SLACK_CHANNEL, SLACK_USERNAME, SLACK_EMOJI, IFTTT_MAKER_EVENT, IFTTT_HOOK_URL: unused, as NOTIFICATION_SERVICE is empty",
    ] {
        assert!(stdout.contains(want), "no note {want:?} in:\n{stdout}");
    }
    // Secrets are never echoed, and credentials never stored.
    let text = fs::read_to_string(ctx.profile("seed")).unwrap();
    for secret in ["wJalrXUtnFEMI", "AKIAEXAMPLESEEDKEY01"] {
        assert!(!stdout.contains(secret) && !text.contains(secret));
    }
    assert!(!stdout.contains("correct horse"));

    let t = ctx.table("seed");
    let keys: BTreeSet<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "source",
            "target",
            "select",
            "passphrase",
            "log-dir",
            "encrypt-key",
            "sign-key",
            "gpg-options",
            "full-if-older-than",
            "s3-use-new-style",
            "verbosity",
            "retention",
        ])
    );
    assert_eq!(t["source"], s("/"));
    assert_eq!(t["target"], s("s3+http://seed-backups-eu/seed-host/"));
    // --include for each INCLIST entry, then --exclude=** (EXCLIST empty).
    assert_eq!(
        t["select"],
        strs(&["+ /precious", "+ /data/secret", "- **"])
    );
    assert_eq!(t["passphrase"], s("correct horse battery staple"));
    assert_eq!(t["log-dir"], s("/var/log/duplicity/"));
    assert_eq!(t["encrypt-key"], strs(&["6F1B2C3D4E5A6978"]));
    assert_eq!(t["sign-key"], s("6F1B2C3D4E5A6978"));
    assert_eq!(t["gpg-options"], strs(&["--list-options no-show-photos"]));
    assert_eq!(t["full-if-older-than"], s("14D"));
    assert_eq!(t["s3-use-new-style"], toml::Value::Boolean(true));
    assert_eq!(t["verbosity"], s("3"));
    let r = t["retention"].as_table().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r["keep-full"], toml::Value::Integer(4));

    // The profile is valid as it stands.
    let out = ctx
        .dupr()
        .args(["profile", "edit-check", "seed"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What a backup run would execute.
    let out = ctx
        .dupr()
        .arg("-c")
        .arg(ctx.profile("seed"))
        .args(["--preview", "backup"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let preview = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!preview.contains("correct horse"), "{preview}");
    let lines: Vec<&str> = preview.lines().collect();
    assert_eq!(lines[0], "# PASSPHRASE from the profile (hidden)");
    let select = ctx.p("state/dupr/seed.select");
    let backup = lines[1];
    assert!(backup.starts_with("dupr backup "), "{backup}");
    for want in [
        "--encrypt-key=6F1B2C3D4E5A6978",
        "--sign-key=6F1B2C3D4E5A6978",
        "--full-if-older-than=14D",
        "--s3-use-new-style",
        "--verbosity=3",
        "'--gpg-options=--list-options no-show-photos'",
    ] {
        assert!(
            backup.contains(&format!(" {want} ")),
            "no {want} in {backup}"
        );
    }
    // The selection (+ /precious, + /data/secret, - **) is the last
    // option, right before the source and the target.
    assert!(
        backup.ends_with(&format!(
            " --include-filelist={} / s3+http://seed-backups-eu/seed-host/",
            select.display()
        )),
        "{backup}"
    );
    assert!(!backup.contains("--include=") && !backup.contains("--exclude"));
    assert!(
        lines[2].starts_with("dupr remove-all-but-n-full 4 --force "),
        "{preview}"
    );
    assert!(lines[2].ends_with(" s3+http://seed-backups-eu/seed-host/"));
    assert!(lines[3].starts_with("dupr cleanup --force "), "{preview}");
    assert_eq!(lines.len(), 4, "{preview}");
}

/// The tree both backup tests use.
fn make_tree(root: &Path) {
    for (p, body) in [
        ("precious/a.txt", "a"),
        ("precious/.DS_Store", "finder"),
        ("precious/tmp/scratch", "tmp"),
        ("precious/sub/b.txt", "b"),
        ("data/secret/s.txt", "s"),
        ("data/other/o.txt", "o"),
        ("top.txt", "top"),
        ("www/index.html", "i"),
        ("www/cache/c.bin", "c"),
        ("www/tmp/t.tmp", "t"),
        ("www/logs/l.log", "l"),
        ("www/big/.nobackup", ""),
        ("www/big/huge.iso", "h"),
    ] {
        write(&root.join(p), body);
    }
}

/// A duplicity-backup.sh config imported, then a real backup through the
/// profile: it selects exactly what the wrapper's command line selects.
#[test]
fn duplicity_backup_conf_import_then_backup() {
    let ctx = Ctx::new();
    let tree = ctx.home().join("tree");
    make_tree(&tree);
    let stdout = ctx.import(&fixture("duplicity-backup-local.conf"), "local");
    for want in [
        "NOTIFICATION_SERVICE=\"slack\" (and NOTIFICATION_FAILURE_ONLY, SLACK_HOOK_URL, SLACK_CHANNEL)",
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: not profile fields",
        "PASSPHRASE: copied into the profile in clear",
        "MAIL: unused, as EMAIL_TO is empty",
    ] {
        assert!(stdout.contains(want), "no note {want:?} in:\n{stdout}");
    }
    let t = ctx.table("local");
    let home = ctx.home().display().to_string();
    assert_eq!(
        t["select"],
        strs(&[
            "- /**.DS_Store",
            &format!("- {home}/tree/precious/tmp"),
            &format!("+ {home}/tree/precious"),
            &format!("+ {home}/tree/data/secret"),
            "- **",
        ])
    );
    assert_eq!(t["exclude-device-files"], toml::Value::Boolean(true));
    assert_eq!(t["volsize"], toml::Value::Integer(1));
    assert_eq!(t["verbosity"], s("4"));
    assert_eq!(t["log-dir"], s(&format!("{home}/logs/")));
    assert_eq!(t["log-keep-days"], toml::Value::Integer(30));
    assert!(t.get("encrypt-key").is_none() && t.get("gpg-options").is_none());

    // ROOT is "/", DEST s3: the run goes to the temp tree and a local target.
    let target = ctx.p("target");
    ctx.run("local", "backup", &tree, &target);
    let got = listing(&ctx.run("local", "list", &tree, &target));
    let want = set(&[
        ".",
        "data",
        "data/secret",
        "data/secret/s.txt",
        "precious",
        "precious/a.txt",
        "precious/sub",
        "precious/sub/b.txt",
    ]);
    assert_eq!(got, want);

    // The wrapper's own command line, run directly, selects the same.
    let direct = ctx.p("direct");
    let out = ctx
        .dupr()
        .env("PASSPHRASE", "local test passphrase")
        .arg("--exclude-device-files")
        .args(["--exclude", "/**.DS_Store"])
        .arg(format!("--exclude={home}/tree/precious/tmp"))
        .arg(format!("--include={home}/tree/precious"))
        .arg(format!("--include={home}/tree/data/secret"))
        .arg("--exclude=**")
        .arg(&tree)
        .arg(file_url(&direct))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctx
        .dupr()
        .env("PASSPHRASE", "local test passphrase")
        .arg("list-current-files")
        .arg(file_url(&direct))
        .output()
        .unwrap();
    assert_eq!(listing(&String::from_utf8_lossy(&out.stdout)), want);

    // The run used the profile's passphrase (the volumes are encrypted)
    // and logged to LOGDIR.
    let vols: Vec<String> = fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".difftar"))
        .collect();
    assert!(
        !vols.is_empty() && vols.iter().all(|n| n.ends_with(".gpg")),
        "{vols:?}"
    );
    let logs = fs::read_dir(ctx.home().join("logs")).unwrap().count();
    assert!(logs >= 2, "no run logs in LOGDIR");
}

/// A duply profile directory imported, then a real backup through it.
#[test]
fn duply_profile_import_then_backup() {
    let ctx = Ctx::new();
    let tree = ctx.home().join("tree");
    make_tree(&tree);
    let www = tree.join("www");
    let dir = ctx.home().join(".duply/web");
    fs::create_dir_all(ctx.home().join("tmp")).unwrap();
    write(
        &dir.join("conf"),
        r#"# duply profile conf (duply 2.4)
GPG_KEY='disabled'
GPG_PW='_GPG_PASSWORD_'

TARGET='sftp://backuphost//srv/duply/web'
TARGET_USER='backup'
TARGET_PASS='very-secret-password'
export AWS_ACCESS_KEY_ID='AKIAEXAMPLEDUPLY001'

SOURCE='/srv'

MAX_AGE=6M
MAX_FULL_BACKUPS=2
MAX_FULLS_WITH_INCRS=1
MAX_FULLBKP_AGE=1M
DUPL_PARAMS="$DUPL_PARAMS --full-if-older-than $MAX_FULLBKP_AGE "
VOLSIZE=1
DUPL_PARAMS="$DUPL_PARAMS --volsize $VOLSIZE "
FILENAME='.nobackup'
DUPL_PARAMS="$DUPL_PARAMS --exclude-if-present '$FILENAME'"

VERBOSITY=4
TEMP_DIR="$HOME/tmp"
"#,
    );
    let w = www.display();
    write(
        &dir.join("exclude"),
        &format!(
            "# although called exclude, this file is actually a globbing file list\n\
             - **.tmp\n\
             {w}/cache\n\
             + {w}/logs\n\
             - {w}/logs/**\n\
             \n"
        ),
    );
    let marker = ctx.p("hooks.log");
    write(
        &dir.join("pre"),
        &format!(
            "#!/bin/sh\necho \"pre $PROFILE $CMD_NEXT\" >> {}\n",
            marker.display()
        ),
    );
    fs::set_permissions(dir.join("pre"), fs::Permissions::from_mode(0o755)).unwrap();
    write(
        &dir.join("post"),
        &format!("echo \"post err=$CMD_ERR\" >> {}\n", marker.display()),
    );
    write(&dir.join("gpgkey.6F1B2C3D.pub.asc"), "");

    // NAME defaults to the directory's name.
    let out = ctx
        .dupr()
        .args(["profile", "import"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.starts_with(&format!("imported {} as profile web", dir.display())));
    for want in [
        "not converted: gpgkey.6F1B2C3D.pub.asc: duply's exported keys; import them with `gpg --import FILE`",
        "TARGET_PASS: credentials are not profile fields; duply passed it as FTP_PASSWORD",
        "AWS_ACCESS_KEY_ID: not a profile field",
        "MAX_AGE (purge), MAX_FULL_BACKUPS (purgeFull), MAX_FULLS_WITH_INCRS (purgeIncr)",
        "post: not executable",
        "TARGET_USER: put into the target URL",
    ] {
        assert!(stdout.contains(want), "no note {want:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("very-secret-password") && !stdout.contains("AKIAEXAMPLEDUPLY001"));
    assert_eq!(
        fs::metadata(ctx.profile("web"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let t = ctx.table("web");
    assert_eq!(t["source"], s("/srv"));
    assert_eq!(t["target"], s("sftp://backup@backuphost//srv/duply/web"));
    assert_eq!(t["name"], s("duply_web"));
    assert_eq!(t["no-encryption"], toml::Value::Boolean(true));
    assert!(t.get("passphrase").is_none());
    assert_eq!(t["full-if-older-than"], s("1M"));
    assert_eq!(t["volsize"], toml::Value::Integer(1));
    assert_eq!(t["verbosity"], s("4"));
    assert_eq!(
        t["tempdir"],
        s(&ctx.home().join("tmp").display().to_string())
    );
    assert_eq!(t["exclude-if-present"], strs(&[".nobackup"]));
    assert_eq!(
        t["select"],
        strs(&[
            "- **.tmp",
            &format!("- {w}/cache"),
            &format!("+ {w}/logs"),
            &format!("- {w}/logs/**"),
        ])
    );
    let r = t["retention"].as_table().unwrap();
    assert_eq!(r["remove-older-than"], s("6M"));
    assert_eq!(r["keep-full"], toml::Value::Integer(2));
    assert_eq!(r["keep-incrementals-of"], toml::Value::Integer(1));
    let hooks = t["hooks"].as_table().unwrap();
    assert_eq!(hooks["pre"], s(&dir.join("pre").display().to_string()));
    assert_eq!(
        hooks["post"],
        s(&format!("bash {}", dir.join("post").display()))
    );

    let target = ctx.p("target");
    ctx.run("web", "backup", &www, &target);
    let got = listing(&ctx.run("web", "list", &www, &target));
    // big/ holds .nobackup; **.tmp, cache and (after logs) logs/** go.
    let want = set(&[".", "index.html", "logs", "logs/l.log", "tmp"]);
    assert_eq!(got, want);
    // duply's own command line: DUPL_PARAMS, then --exclude-filelist.
    let direct = ctx.p("direct");
    let out = ctx
        .dupr()
        .args(["--no-encryption", "--exclude-if-present", ".nobackup"])
        .arg("--exclude-filelist")
        .arg(dir.join("exclude"))
        .arg(&www)
        .arg(file_url(&direct))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctx
        .dupr()
        .arg("list-current-files")
        .arg(file_url(&direct))
        .output()
        .unwrap();
    assert_eq!(listing(&String::from_utf8_lossy(&out.stdout)), want);
    let hooks = fs::read_to_string(&marker).unwrap();
    assert_eq!(hooks, "pre web backup\npost err=\n");
}

/// duply's cache is `--name duply_PROFILE`; the imported profile keeps that
/// name, so a run finds the cache duply left (or makes it under that name).
#[test]
fn duply_import_keeps_duplys_cache_name() {
    let ctx = Ctx::new();
    let tree = ctx.home().join("tree");
    make_tree(&tree);
    let dir = ctx.home().join(".duply/photos");
    write(
        &dir.join("conf"),
        "GPG_KEY='disabled'\nTARGET='file:///mnt/elsewhere'\nSOURCE='/srv/photos'\n",
    );
    ctx.import(&dir, "photos");
    assert_eq!(ctx.table("photos")["name"], s("duply_photos"));
    ctx.run("photos", "backup", &tree, &ctx.p("target"));
    assert!(
        ctx.p("cache/dupr/duply_photos").is_dir(),
        "the run did not use the profile's own `name` for its cache: profile::plan appends --name=profile-NAME after the profile's options, and the last --name wins"
    );
}

#[test]
fn import_refuses_an_existing_profile_name() {
    let ctx = Ctx::new();
    let conf = fixture("duplicity-backup.conf");
    ctx.import(&conf, "seed");
    let before = fs::read(ctx.profile("seed")).unwrap();
    let out = ctx
        .dupr()
        .args(["profile", "import"])
        .arg(&conf)
        .arg("seed")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(fs::read(ctx.profile("seed")).unwrap(), before);
}

#[test]
fn import_rejects_what_it_cannot_read() {
    let ctx = Ctx::new();
    let other = ctx.p("notes.txt");
    write(&other, "just some text\n");
    let out = ctx
        .dupr()
        .args(["profile", "import"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither a duplicity-backup.sh config"),
        "{err}"
    );
    let empty = ctx.p("emptydir");
    fs::create_dir(&empty).unwrap();
    let out = ctx
        .dupr()
        .args(["profile", "import"])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a duply profile"));
    assert!(!ctx.p("cfg/dupr/profiles").join("notes.toml").exists());
}
