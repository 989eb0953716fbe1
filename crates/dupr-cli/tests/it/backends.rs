//! Remote backends end to end, on real servers started on 127.0.0.1 by the
//! test (Garage for S3, OpenSSH sshd for SFTP, nginx + dav-ext for WebDAV)
//! and on local fakes of the Dropbox and Google Drive APIs, which OpenDAL's
//! own client code talks to through dupr's HTTP transport.
//!
//! Each backend runs the same life cycle: full + incremental (encrypted,
//! several volumes), list-current-files, collection-status, restore of all
//! and of one path, an older time, then a second chain and
//! remove-older-than, checked against what the server holds.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;

use common::servers::{FakeDropbox, FakeGdrive, Garage, Nginx, Sshd};
use common::*;

const PASS: &str = "backend test passphrase";

/// How to reach one target: URL, extra options and environment, and a way
/// to list what the server stores there (from the server side).
struct Target<'a> {
    url: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stored: Box<dyn Fn() -> BTreeSet<String> + 'a>,
}

impl Target<'_> {
    fn run(&self, env: &Env, args: &[&str]) -> Output {
        let mut c = env.dupr();
        c.env("PASSPHRASE", PASS);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.args(args);
        c.args(&self.args);
        c.timeout(std::time::Duration::from_secs(300));
        c.output().unwrap()
    }

    fn ok(&self, env: &Env, args: &[&str]) -> Output {
        let o = self.run(env, args);
        assert!(
            o.status.success(),
            "dupr {args:?} failed:\n{}",
            out_text(&o)
        );
        o
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The common life cycle on one target.
fn life_cycle(t: &Target) {
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, 3 << 20);
    fs::write(src.join("more.bin"), pseudo_random_bytes(2 << 20, 9)).unwrap();
    let url = t.url.as_str();

    t.ok(&env, &["full", "--volsize", "1", s(&src), url]);
    let stored = (t.stored)();
    let vols = stored.iter().filter(|n| n.contains(".vol")).count();
    assert!(
        vols >= 4,
        "expected several volumes, the server holds {stored:?}"
    );
    assert!(
        stored.iter().any(|n| n.ends_with(".manifest.gpg")),
        "{stored:?}"
    );
    assert!(
        !stored.iter().any(|n| n.starts_with(".dupr-tmp")),
        "temporary objects left: {stored:?}"
    );
    let full_state = env.path().join("state-full");
    copy_tree(&src, &full_state);

    // Change the source; the incremental stores the differences.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(src.join("hello.txt"), b"changed contents\n").unwrap();
    fs::write(src.join("new.txt"), b"a new file\n").unwrap();
    fs::remove_file(src.join("200000.bin")).unwrap();
    t.ok(&env, &["incremental", "--volsize", "1", s(&src), url]);

    let o = t.ok(&env, &["list-current-files", url]);
    assert_eq!(parse_listing(&o.stdout), listing_of_tree(&src));

    let o = t.ok(&env, &["collection-status", url]);
    let text = lossy(&o.stdout);
    assert!(
        text.contains("Full") && text.contains("Incremental"),
        "{text}"
    );

    // Restore with a fresh cache, as on a new machine.
    let fresh = Env::new();
    let all = fresh.restore_dir("all");
    t.ok(&fresh, &["restore", url, s(&all)]);
    assert_same_tree(&src, &all);

    let one = fresh.restore_dir("one");
    t.ok(
        &fresh,
        &["restore", "--path-to-restore", "more.bin", url, s(&one)],
    );
    assert_eq!(
        fs::read(&one).unwrap(),
        fs::read(src.join("more.bin")).unwrap()
    );

    // The state of the full backup, by time.
    let o = t.ok(&env, &["collection-status", url]);
    let first = first_set_time(&lossy(&o.stdout));
    let old = fresh.restore_dir("old");
    t.ok(&fresh, &["restore", "-t", &first, url, s(&old)]);
    assert_same_tree(&full_state, &old);

    // A second chain, then remove the first.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.ok(&env, &["full", "--volsize", "1", s(&src), url]);
    let before = (t.stored)();
    let o = t.ok(&env, &["collection-status", url]);
    let second = last_full_time(&lossy(&o.stdout));
    t.ok(&env, &["remove-older-than", &second, "--force", url]);
    let after = (t.stored)();
    assert!(after.len() < before.len(), "nothing removed: {after:?}");
    assert!(
        !after.iter().any(|n| n.contains(".to.")),
        "the incremental was not removed: {after:?}"
    );
    let again = fresh.restore_dir("again");
    t.ok(&fresh, &["restore", url, s(&again)]);
    assert_same_tree(&src, &again);
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

/// Set times from collection-status, as epoch-free strings restore -t takes.
fn set_times(status: &str) -> Vec<(String, String)> {
    // Lines like: "                Full         Wed Nov 25 02:55:46 2026                 3"
    status
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 7 && (w[0] == "Full" || w[0] == "Incremental"))
                .then(|| (w[0].to_string(), w[1..6].join(" ")))
        })
        .collect()
}

fn to_iso(t: &str) -> String {
    // "Wed Nov 25 02:55:46 2026" → "2026-11-25T02:55:46" (local time = UTC in tests)
    let w: Vec<&str> = t.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == w[1]).unwrap() + 1;
    format!("{}-{m:02}-{:0>2}T{}", w[4], w[2], w[3])
}

fn first_set_time(status: &str) -> String {
    to_iso(&set_times(status)[0].1)
}

fn last_full_time(status: &str) -> String {
    let v = set_times(status);
    to_iso(&v.iter().rev().find(|(k, _)| k == "Full").unwrap().1)
}

fn names(v: Vec<(String, u64)>) -> BTreeSet<String> {
    v.into_iter()
        .map(|(n, _)| n.rsplit('/').next().unwrap().to_string())
        .collect()
}

fn garage_target<'a>(g: &'a Garage, prefix: &str) -> Target<'a> {
    let p = format!("{prefix}/");
    Target {
        url: format!("s3://{}/{prefix}", g.bucket),
        args: vec![
            "--s3-endpoint-url".into(),
            g.endpoint.clone(),
            "--s3-region-name".into(),
            g.region.clone(),
        ],
        env: g.aws_env(),
        stored: Box::new(move || names(g.objects(&p))),
    }
}

fn dir_names(d: &Path) -> BTreeSet<String> {
    fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn s3_on_garage() {
    let g = Garage::start();
    life_cycle(&garage_target(&g, "life"));
}

#[test]
fn s3_url_forms_and_concurrency_on_garage() {
    let g = Garage::start();
    let env = Env::new();
    let src = env.src();
    fs::write(src.join("a.bin"), pseudo_random_bytes(6 << 20, 1)).unwrap();
    fs::write(src.join("b.txt"), b"b").unwrap();
    // duplicity 0.8's spelling: the endpoint as the URL's host (s3+http).
    let host = g.endpoint.trim_start_matches("http://");
    let t = Target {
        url: format!("s3+http://{host}/{}/old-style", g.bucket),
        args: vec!["--s3-region-name".into(), g.region.clone()],
        env: g.aws_env(),
        stored: Box::new(|| names(g.objects("old-style/"))),
    };
    t.ok(
        &env,
        &[
            "full",
            "--volsize",
            "1",
            "--concurrency",
            "4",
            s(&src),
            &t.url,
        ],
    );
    assert!((t.stored)().len() >= 7, "{:?}", (t.stored)());
    let r = env.restore_dir("r");
    t.ok(&env, &["restore", "--concurrency", "3", &t.url, s(&r)]);
    assert_same_tree(&src, &r);
    // Volumes bigger than the multipart chunk go up in parts (S3 ETags of
    // multipart objects end in -PARTS).
    fs::write(src.join("c.bin"), pseudo_random_bytes(13 << 20, 2)).unwrap();
    let t3 = garage_target(&g, "multipart");
    t3.ok(
        &env,
        &[
            "full",
            "--volsize",
            "12",
            "--s3-multipart-chunk-size",
            "5",
            s(&src),
            &t3.url,
        ],
    );
    let vol1 = (t3.stored)()
        .into_iter()
        .find(|n| n.contains(".vol1."))
        .unwrap();
    let head = g
        .curl()
        .arg("-I")
        .arg(g.object_url(&g.bucket, &format!("multipart/{vol1}")))
        .output()
        .unwrap();
    let head = lossy(&head.stdout).to_lowercase();
    let etag = head
        .lines()
        .find(|l| l.starts_with("etag:"))
        .unwrap_or_default();
    assert!(
        etag.trim_end().trim_end_matches('"').ends_with("-3"),
        "{head}"
    );
    let r3 = env.restore_dir("r3");
    t3.ok(&Env::new(), &["restore", &t3.url, s(&r3)]);
    assert_same_tree(&src, &r3);
    // boto3+s3:// names the same place as s3:// with an endpoint option.
    let t2 = garage_target(&g, "old-style");
    let o = t2.ok(&env, &["list-current-files", "boto3+s3://backup/old-style"]);
    let mut want = listing_of_tree(&src);
    want.remove(b"c.bin".as_slice());
    assert_eq!(parse_listing(&o.stdout), want);
}

#[test]
fn s3_interop_with_duplicity_3_on_garage() {
    let g = Garage::start();
    let env = Env::new();
    let src = env.src();
    make_tricky_tree(&src, 2 << 20);
    let t = garage_target(&g, "by-dupr");
    t.ok(&env, &["full", "--volsize", "1", s(&src), &t.url]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(src.join("hello.txt"), b"second version\n").unwrap();
    t.ok(&env, &["incremental", "--volsize", "1", s(&src), &t.url]);

    let mut denv: Vec<(&str, &str)> = vec![("PASSPHRASE", PASS)];
    let aws = g.aws_env();
    denv.extend(aws.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // boto3 >= 1.36 checksums that Garage does not take (duplicity's own advice).
    denv.push(("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required"));
    denv.push(("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required"));
    let common_args = |archive: &Path| -> Vec<String> {
        vec![
            "--s3-endpoint-url".into(),
            g.endpoint.clone(),
            "--s3-region-name".into(),
            g.region.clone(),
            "--archive-dir".into(),
            s(archive).into(),
            "--num-retries".into(),
            "1".into(),
        ]
    };
    // Stock duplicity restores what dupr wrote.
    let r = env.restore_dir("dup3");
    let mut a: Vec<String> = vec![
        "restore".into(),
        "boto3+s3://backup/by-dupr".into(),
        s(&r).into(),
    ];
    a.extend(common_args(&env.archive_dir(Dup::V3)));
    run_duplicity(Dup::V3, &a, &denv);
    assert_same_tree(&src, &r);

    // dupr restores what duplicity wrote there.
    let src2 = env.path().join("src2");
    make_tricky_tree(&src2, 1 << 20);
    let mut a: Vec<String> = vec![
        "full".into(),
        "--volsize".into(),
        "1".into(),
        s(&src2).into(),
        "boto3+s3://backup/by-duplicity".into(),
    ];
    a.extend(common_args(&env.path().join("dupcache2")));
    run_duplicity(Dup::V3, &a, &denv);
    let t2 = garage_target(&g, "by-duplicity");
    let r2 = env.restore_dir("dupr");
    t2.ok(&env, &["restore", &t2.url, s(&r2)]);
    assert_same_tree(&src2, &r2);
}

#[test]
fn sftp_on_sshd() {
    let d = Sshd::start();
    let dir = d.home.join("backups");
    let t = Target {
        url: d.url(s(&dir)),
        args: vec![format!(
            "--ssh-options={} -oStrictHostKeyChecking=no",
            d.ssh_options()
        )],
        env: vec![],
        stored: Box::new(|| dir_names(&dir)),
    };
    life_cycle(&t);
}

#[test]
fn sftp_relative_path_is_under_the_login_directory() {
    let d = Sshd::start();
    let env = Env::new();
    fs::write(env.src().join("x.txt"), b"x").unwrap();
    let rel = format!("dupr-rel-{}", std::process::id());
    let url = format!("sftp://{}@127.0.0.1:{}/{rel}", d.user, d.port);
    let t = Target {
        url: url.clone(),
        args: vec![format!(
            "--ssh-options={} -oStrictHostKeyChecking=no",
            d.ssh_options()
        )],
        env: vec![],
        stored: Box::new(BTreeSet::new),
    };
    t.ok(&env, &["full", s(&env.src()), &url]);
    // The server's login directory is the user's home.
    let home = d.sftp_batch("pwd\n");
    let home = home
        .lines()
        .find_map(|l| l.strip_prefix("Remote working directory: "))
        .unwrap()
        .trim()
        .to_string();
    let stored = dir_names(&Path::new(&home).join(&rel));
    let _ = fs::remove_dir_all(Path::new(&home).join(&rel));
    assert!(
        stored.iter().any(|n| n.ends_with(".manifest.gpg")),
        "{stored:?}"
    );
}

#[test]
fn webdav_on_nginx() {
    let n = Nginx::start();
    let dir = n.data.join("dav/backups");
    let t = Target {
        url: n.url("dav/backups"),
        args: vec![],
        env: vec![],
        stored: Box::new(|| dir_names(&dir)),
    };
    life_cycle(&t);
}

#[test]
fn webdav_with_basic_auth_and_a_wrong_password() {
    let n = Nginx::start_with_auth("alice", "s3cret-pw");
    let env = Env::new();
    fs::write(env.src().join("x.txt"), b"x").unwrap();
    let url = n.url("auth").replace("webdav://", "webdav://alice@");
    let t = Target {
        url: url.clone(),
        args: vec![
            "--num-retries".into(),
            "1".into(),
            "--backend-retry-delay".into(),
            "0".into(),
        ],
        env: vec![("BACKEND_PASSWORD".into(), "s3cret-pw".into())],
        stored: Box::new(|| dir_names(&n.data.join("auth"))),
    };
    t.ok(&env, &["full", s(&env.src()), &url]);
    assert!((t.stored)().iter().any(|n| n.ends_with(".manifest.gpg")));
    // The password in the URL is used and never shown.
    let bad = n
        .url("auth")
        .replace("webdav://", "webdav://alice:wrong-pw@");
    let o = t.run(&Env::new(), &["collection-status", &bad]);
    let err = lossy(&o.stderr);
    assert!(!o.status.success(), "{}", out_text(&o));
    assert!(
        err.contains("permission denied") || err.contains("401"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-pw") && err.contains("alice:***@"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn dropbox_on_a_fake_with_upload_sessions_and_paging() {
    let f = FakeDropbox::start_env(&[("FAKE_MAX_UPLOAD", "1048576"), ("FAKE_PAGE_SIZE", "2")]);
    let t = Target {
        url: "dpbx:///dupr/backups".into(),
        args: vec![],
        env: vec![
            ("DPBX_ACCESS_TOKEN".into(), f.token.clone()),
            ("DUPR_HTTP_REWRITE".into(), f.rewrite()),
            // Volumes over 256 KiB go in sessions of 256 KiB chunks (real
            // Dropbox: over 150 MB, in 64 MiB chunks).
            ("DUPR_DPBX_CHUNK_SIZE".into(), "262144".into()),
        ],
        stored: Box::new(|| {
            f.files()
                .into_iter()
                .filter(|(p, _)| p.to_lowercase().starts_with("/dupr/backups/"))
                .map(|(p, _)| p.rsplit('/').next().unwrap().to_string())
                .collect()
        }),
    };
    life_cycle(&t);
    let reqs = f.requests();
    for want in [
        "/2/files/upload_session/start",
        "/2/files/upload_session/append_v2",
        "/2/files/upload_session/finish",
        "/2/files/list_folder/continue",
        "/2/files/upload",
        "/2/files/download",
        "/2/files/delete_v2",
    ] {
        assert!(
            reqs.iter().any(|r| r.ends_with(want)),
            "no {want} request in {reqs:?}"
        );
    }
    // A wrong token: one line, non-zero, no retries of a refused login.
    let env = Env::new();
    let mut bad = Target {
        url: t.url.clone(),
        args: vec![],
        env: t.env.clone(),
        stored: Box::new(BTreeSet::new),
    };
    bad.env[0].1 = "not-the-token".into();
    let o = bad.run(&env, &["collection-status", &t.url]);
    assert!(!o.status.success());
    let err = lossy(&o.stderr);
    assert!(err.contains("dpbx:///dupr/backups"), "{err}");
    assert!(!err.contains("retry"), "{err}");
}

#[test]
fn google_drive_on_a_fake_with_a_service_account() {
    let f = FakeGdrive::start();
    let env = Env::new();
    // A service account key as Google issues them.
    let key = env.path().join("sa.pem");
    let st = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let sa = env.path().join("sa.json");
    fs::write(
        &sa,
        serde_json::json!({
            "type": "service_account",
            "client_email": "dupr@test-project.iam.gserviceaccount.com",
            "private_key": fs::read_to_string(&key).unwrap(),
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string(),
    )
    .unwrap();
    let t = Target {
        url: "gdrive://dupr@test-project.iam.gserviceaccount.com/dupr/backups?myDriveFolderID=root"
            .into(),
        args: vec![],
        env: vec![
            ("GOOGLE_SERVICE_JSON_FILE".into(), s(&sa).into()),
            ("DUPR_HTTP_REWRITE".into(), f.rewrite()),
        ],
        stored: Box::new(|| {
            f.files()
                .into_iter()
                .filter(|(p, _)| p.starts_with("/dupr/backups/"))
                .map(|(p, _)| p.rsplit('/').next().unwrap().to_string())
                .collect()
        }),
    };
    life_cycle(&t);
    let reqs = f.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with("POST /token")),
        "{reqs:?}"
    );
}

#[test]
fn gdocs_with_saved_oauth_credentials() {
    let f = FakeGdrive::start();
    let env = Env::new();
    fs::write(env.src().join("x.txt"), b"x").unwrap();
    let creds = env.path().join("creds.json");
    fs::write(
        &creds,
        serde_json::json!({
            "refresh_token": "fake-refresh-token", "client_id": "cid", "client_secret": "csecret",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string(),
    )
    .unwrap();
    let t = Target {
        url: "gdocs://someone/dupr-docs".into(),
        args: vec![],
        env: vec![
            ("GOOGLE_CREDENTIALS_FILE".into(), s(&creds).into()),
            ("DUPR_HTTP_REWRITE".into(), f.rewrite()),
        ],
        stored: Box::new(BTreeSet::new),
    };
    t.ok(&env, &["full", s(&env.src()), &t.url]);
    let r = env.restore_dir("r");
    t.ok(&env, &["restore", &t.url, s(&r)]);
    assert_same_tree(&env.src(), &r);
    assert!(f.files().iter().any(|(p, _)| p.starts_with("/dupr-docs/")));
}

// ------------------------------------------------ faults at the boundary

/// A small two-volume source and a Garage target with fast retries.
fn fault_setup<'a>(g: &'a Garage, prefix: &str) -> (Env, Target<'a>) {
    let env = Env::new();
    fs::write(env.src().join("a.bin"), pseudo_random_bytes(2 << 20, 3)).unwrap();
    fs::write(env.src().join("b.txt"), b"bee\n").unwrap();
    let mut t = garage_target(g, prefix);
    t.args.extend(
        [
            "--num-retries",
            "3",
            "--backend-retry-delay",
            "0",
            "--timeout",
            "1",
        ]
        .map(String::from),
    );
    (env, t)
}

fn with_faults<'a>(t: &Target<'a>, spec: &str) -> Target<'a> {
    let mut env = t.env.clone();
    env.push(("DUPR_FAULTS".into(), spec.into()));
    Target {
        url: t.url.clone(),
        args: t.args.clone(),
        env,
        stored: Box::new(BTreeSet::new),
    }
}

/// The error lines of a run (without warnings and retry notes).
fn error_lines(o: &Output) -> Vec<String> {
    lossy(&o.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("dupr: warning:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn transient_faults_are_retried_and_the_backup_completes() {
    let g = Garage::start();
    let (env, t) = fault_setup(&g, "retried");
    let f = with_faults(
        &t,
        "list:1:fail,put:2:fail,put:4:timeout,size:3:fail,put:5:truncate",
    );
    let o = f.ok(&env, &["full", "--volsize", "1", s(&env.src()), &t.url]);
    let err = lossy(&o.stderr);
    assert!(err.matches("; retry ").count() >= 5, "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("the stored object has"), "{err}");
    // Every stored object is whole: a fresh restore (which checks each
    // volume's SHA-1) gives the source back, also through a faulty download.
    let fresh = Env::new();
    let r = fresh.restore_dir("r");
    let f = with_faults(&t, "get:2:truncate,get:3:fail");
    let o = f.ok(&fresh, &["restore", &t.url, s(&r)]);
    assert_same_tree(&env.src(), &r);
    assert!(
        lossy(&o.stderr).contains("bytes arrived"),
        "{}",
        out_text(&o)
    );
}

#[test]
fn exhausted_retries_fail_cleanly_and_the_next_run_recovers() {
    let g = Garage::start();
    let (env, t) = fault_setup(&g, "exhausted");
    let f = with_faults(&t, "put:3+:fail");
    let o = f.run(&env, &["full", "--volsize", "1", s(&env.src()), &t.url]);
    assert!(!o.status.success(), "{}", out_text(&o));
    let errs = error_lines(&o);
    assert_eq!(errs.len(), 1, "{}", out_text(&o));
    assert!(
        errs[0].contains(&t.url) && errs[0].contains("gave up after 4 attempts"),
        "{errs:?}"
    );
    // Nothing half-written looks complete: no manifest; the set is listed
    // as incomplete, and its stored volumes stay for the next run.
    let stored = (t.stored)();
    assert!(!stored.iter().any(|n| n.contains("manifest")), "{stored:?}");
    assert!(stored.iter().any(|n| n.contains(".vol1.")), "{stored:?}");
    let o = t.run(&env, &["collection-status", &t.url]);
    let text = lossy(&o.stdout);
    assert!(!text.contains("Full  "), "{}", out_text(&o));
    assert!(text.contains("incomplete"), "{}", out_text(&o));
    // The next run (no faults) resumes after the stored volume, and restores.
    let o = t.ok(&env, &["full", "--volsize", "1", s(&env.src()), &t.url]);
    assert!(
        lossy(&o.stderr).contains("Resuming the interrupted backup after volume"),
        "{}",
        out_text(&o)
    );
    let r = env.restore_dir("r");
    t.ok(&Env::new(), &["restore", &t.url, s(&r)]);
    assert_same_tree(&env.src(), &r);
}

#[test]
fn permanent_errors_are_not_retried() {
    let g = Garage::start();
    let (env, mut t) = fault_setup(&g, "denied");
    t.args
        .extend(["--backend-retry-delay", "30"].map(String::from));
    let f = with_faults(&t, "put:2:deny");
    let t0 = std::time::Instant::now();
    let o = f.run(&env, &["full", "--volsize", "1", s(&env.src()), &t.url]);
    assert!(!o.status.success());
    assert!(t0.elapsed().as_secs() < 20, "took {:?}", t0.elapsed());
    let err = lossy(&o.stderr);
    assert!(!err.contains("retry"), "{err}");
    assert!(err.contains("permission denied"), "{err}");
}

// ------------------------------------------------------------ bad input

/// A run that must fail: exit status, and its one error line.
fn fails(
    env: &Env,
    vars: &[(String, String)],
    args: &[&str],
) -> (i32, String, std::time::Duration) {
    let mut c = env.dupr();
    c.env("PASSPHRASE", PASS);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.args(args).timeout(std::time::Duration::from_secs(120));
    let t0 = std::time::Instant::now();
    let o = c.output().unwrap();
    let took = t0.elapsed();
    assert!(!o.status.success(), "{args:?} succeeded:\n{}", out_text(&o));
    let errs = error_lines(&o);
    assert_eq!(
        errs.len(),
        1,
        "{args:?}: want one error line:\n{}",
        out_text(&o)
    );
    (o.status.code().unwrap_or(-1), errs[0].clone(), took)
}

#[test]
fn storage_errors_name_the_url_and_the_cause() {
    let g = Garage::start();
    let env = Env::new();
    fs::write(env.src().join("x"), b"x").unwrap();
    let src = s(&env.src()).to_string();
    let fast = [
        "--num-retries",
        "2",
        "--backend-retry-delay",
        "0",
        "--timeout",
        "2",
    ];
    let garage_args = |url: &str| -> Vec<String> {
        let mut v: Vec<String> = vec!["full".into(), src.clone(), url.into()];
        v.extend(
            [
                "--s3-endpoint-url",
                &g.endpoint,
                "--s3-region-name",
                &g.region,
            ]
            .map(String::from),
        );
        v.extend(fast.map(String::from));
        v
    };
    let as_str = |v: &[String]| -> Vec<String> { v.to_vec() };

    // Unreachable host: retried within the budget, then one line.
    let closed = common::servers::free_port();
    let mut a = vec!["full".to_string(), src.clone(), "s3://backup/x".into()];
    a.extend([
        "--s3-endpoint-url".into(),
        format!("http://127.0.0.1:{closed}"),
    ]);
    a.extend(fast.map(String::from));
    let a2: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, line, took) = fails(&env, &g.aws_env(), &a2);
    assert!(line.contains("s3://backup/x"), "{line}");
    assert!(line.to_lowercase().contains("connect"), "{line}");
    assert!(line.contains("gave up after 3 attempts"), "{line}");
    assert!(took.as_secs() < 60, "{took:?}");
    assert_ne!(code, 0);

    // Wrong secret: refused, not retried, the secret never shown.
    let mut wrong = g.aws_env();
    wrong[1].1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into();
    let v = as_str(&garage_args("s3://backup/y"));
    let (_, line, _) = fails(
        &env,
        &wrong,
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        line.contains("s3://backup/y") && line.contains("permission denied"),
        "{line}"
    );
    assert!(
        !line.contains("0123456789abcdef") && !line.contains("gave up"),
        "{line}"
    );

    // A bucket that does not exist.
    let v = as_str(&garage_args("s3://no-such-bucket/y"));
    let (_, line, _) = fails(
        &env,
        &g.aws_env(),
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(line.contains("s3://no-such-bucket/y"), "{line}");
    assert!(
        line.contains("NoSuchBucket") || line.contains("not found"),
        "{line}"
    );

    // A key that may write but not list (an IAM-style deny of listing).
    let (id, secret) = g.create_key("writer", &g.bucket, false, true);
    let vars = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), id),
        ("AWS_SECRET_ACCESS_KEY".to_string(), secret.clone()),
    ];
    let mut v = as_str(&garage_args("s3://backup/z"));
    v[0] = "collection-status".into();
    v.remove(1);
    let (_, line, _) = fails(
        &env,
        &vars,
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(line.contains("list: permission denied"), "{line}");
    assert!(!line.contains(&secret), "{line}");

    // SFTP and WebDAV servers that are not there.
    let port = common::servers::free_port();
    let sftp = format!("sftp://nobody@127.0.0.1:{port}//tmp/x");
    let mut a: Vec<String> = vec!["full".into(), src.clone(), sftp.clone()];
    a.extend(fast.map(String::from));
    // The server, not the URL, is at fault: a backend error (duplicity's
    // 50), not a bad URL (23).
    let (code, line, _) = fails(&env, &[], &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(line.contains(&sftp), "{line}");
    assert_eq!(code, 50, "{line}");
    let dav = format!("webdav://u:hunter2@127.0.0.1:{port}/x");
    let mut a: Vec<String> = vec!["full".into(), src.clone(), dav];
    a.extend(fast.map(String::from));
    let (code, line, _) = fails(&env, &[], &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 50, "{line}");
    assert!(
        line.contains("webdav://u:***@127.0.0.1") && !line.contains("hunter2"),
        "{line}"
    );
}

#[test]
fn malformed_urls_and_missing_credentials() {
    let env = Env::new();
    fs::write(env.src().join("x"), b"x").unwrap();
    let src = s(&env.src()).to_string();
    for (url, want) in [
        ("s3://", "bucket"),
        ("sftp://host:notaport/x", "port"),
        ("ftp://user:pw@host/x", "not supported"),
        ("rsync://host/x", "not supported"),
        ("webdav:///x", "host"),
        ("dpbx:///x", "DPBX_ACCESS_TOKEN"),
        (
            "gdrive://a@b.iam.gserviceaccount.com/x",
            "Google credentials",
        ),
        ("b2://bucket/x", "key id"),
        ("swift://container/x", "SWIFT_PREAUTHURL"),
        ("azure://container", "AZURE_CONNECTION_STRING"),
    ] {
        let (code, line, _) = fails(&env, &[], &["full", &src, url]);
        // duplicity 3.2.1: a bad URL is a user error, 23 (0.8's bad_url
        // code 8 is gone).
        assert_eq!(code, 23, "{url}: {line}");
        assert!(line.contains(want), "{url}: {line}");
        assert!(!line.contains("pw@"), "{url}: {line}");
    }
}

/// A failed size check after a local upload (which moved the staged file
/// into place) is retried as a check, not as a second upload of a file that
/// is gone; the backup completes.
#[test]
fn a_failed_size_check_after_a_local_put_is_retried_alone() {
    let env = Env::new();
    fs::write(env.src().join("a.bin"), pseudo_random_bytes(3 << 20, 4)).unwrap();
    let t = Target {
        url: env.target_url(),
        args: ["--num-retries", "5", "--backend-retry-delay", "0"]
            .map(String::from)
            .to_vec(),
        env: vec![(
            "DUPR_FAULTS".into(),
            "size:2:fail,size:4-5:fail,size:7:fail".into(),
        )],
        stored: Box::new(BTreeSet::new),
    };
    let o = t.ok(&env, &["full", "--volsize", "1", s(&env.src()), &t.url]);
    assert!(lossy(&o.stderr).contains("; retry "), "{}", out_text(&o));
    let r = env.restore_dir("r");
    let clean = Target {
        url: t.url.clone(),
        args: vec![],
        env: vec![],
        stored: Box::new(BTreeSet::new),
    };
    clean.ok(&Env::new(), &["restore", &t.url, s(&r)]);
    assert_same_tree(&env.src(), &r);
}
