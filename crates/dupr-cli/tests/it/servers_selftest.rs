//! Self-test of the test-server harness (`tests/it/common/servers.rs`): every
//! server starts, answers a real round trip made with plain tools (curl with
//! SigV4 for Garage, sftp/ssh for sshd, curl WebDAV for nginx, curl API calls
//! for the Dropbox and Google Drive fakes), then stops, and its process is
//! gone. A missing server binary fails the test (see scripts/install-test-deps).

use crate::common;

use common::servers::*;
use std::borrow::BorrowMut;
use std::fs;
use std::process::{Command, Output};
use std::time::Instant;

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run curl with `-w "\n%{http_code}"`; return (status, body).
fn curl_status(mut cmd: impl BorrowMut<Command>) -> (u16, String) {
    let cmd = cmd.borrow_mut();
    let o = run(cmd.args(["-s", "-w", "\n%{http_code}"]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {cmd:?}: no status in {out:?} / {}", text(&o)));
    (code, body.to_string())
}

fn curl() -> Command {
    let mut c = Command::new("curl");
    c.arg("-sS");
    c
}

/// Stop the server by dropping what owns it; assert that its PID is gone.
fn assert_stops<T>(name: &str, owner: T, pid: u32) {
    let t0 = Instant::now();
    drop(owner);
    let took = t0.elapsed();
    assert!(
        pid_gone(pid),
        "{name} (pid {pid}) still there after drop: state {:?}",
        pid_state(pid)
    );
    // reaped too: not even a zombie is left
    assert_eq!(pid_state(pid), None, "{name} (pid {pid}) not reaped");
    eprintln!("{name}: stopped in {took:?}");
}

#[test]
fn garage_s3_round_trip_permissions_and_crash_restart() {
    let t0 = Instant::now();
    let mut g = Garage::start();
    eprintln!("garage: ready in {:?} (pid {})", t0.elapsed(), g.proc.pid());
    assert!(g.proc.running());
    assert_eq!(g.region, "garage");
    assert_eq!(g.bucket, "backup");
    let env = g.aws_env();
    assert!(env.contains(&("AWS_ACCESS_KEY_ID".into(), g.key_id.clone())));
    assert!(env.contains(&("AWS_REGION".into(), "garage".into())));

    let data = pseudo_random(3 << 20, 1);
    let src = g.dir.path().join("upload.bin");
    fs::write(&src, &data).unwrap();
    let url = g.object_url("backup", "dir/vol 1.bin");
    let (code, body) = curl_status(g.curl().arg("-T").arg(&src).arg(&url));
    assert_eq!(code, 200, "PUT {url}: {body}\n{}", g.proc.log());
    let got = g.dir.path().join("got.bin");
    let (code, _) = curl_status(g.curl().arg("-o").arg(&got).arg(&url));
    assert_eq!(code, 200);
    assert!(fs::read(&got).unwrap() == data, "GET returned other bytes");
    let (code, _) = curl_status(
        g.curl()
            .args(["-H", "Range: bytes=10-19", "-o"])
            .arg(&got)
            .arg(&url),
    );
    assert_eq!(code, 206);
    assert!(
        fs::read(&got).unwrap() == data[10..20],
        "ranged GET returned other bytes"
    );
    assert_eq!(
        g.objects("dir/"),
        vec![("dir/vol 1.bin".to_string(), data.len() as u64)]
    );
    assert_eq!(g.objects("nothing/"), vec![]);

    // Paging in objects(): more keys than one ListObjectsV2 page holds is too
    // slow here; check the continuation path with an explicit max-keys instead.
    fs::write(g.dir.path().join("small"), b"x").unwrap();
    for i in 0..3 {
        let (code, _) = curl_status(
            g.curl()
                .arg("-T")
                .arg(g.dir.path().join("small"))
                .arg(g.object_url("backup", &format!("page/{i}"))),
        );
        assert_eq!(code, 200);
    }
    let first = g.endpoint.clone() + "/backup?list-type=2&max-keys=2&prefix=page%2F";
    let (code, xml) = curl_status(g.curl().arg(&first));
    assert_eq!(code, 200, "{xml}");
    assert!(xml.contains("<IsTruncated>true</IsTruncated>"), "{xml}");
    assert_eq!(g.objects("page/").len(), 3);

    // Another bucket, owned by the default key.
    g.create_bucket("other");
    let (code, body) = curl_status(g.curl().arg("-T").arg(&src).arg(g.object_url("other", "x")));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        g.objects_in("other", ""),
        vec![("x".to_string(), data.len() as u64)]
    );

    // A write-only key: PUT and DELETE work, GET and LIST are denied.
    let (wid, wsecret) = g.create_key("writer", "backup", false, true);
    assert!(wid.starts_with("GK") && wid.len() == 26, "{wid}");
    let wurl = g.object_url("backup", "wo/obj");
    let (code, body) = curl_status(g.curl_as(&wid, &wsecret).arg("-T").arg(&src).arg(&wurl));
    assert_eq!(code, 200, "write-only PUT: {body}");
    let (code, body) = curl_status(g.curl_as(&wid, &wsecret).arg(&wurl));
    assert_eq!(code, 403, "write-only GET: {body}");
    assert!(body.contains("AccessDenied"), "{body}");
    let list = g.endpoint.clone() + "/backup?list-type=2&prefix=wo%2F";
    let (code, body) = curl_status(g.curl_as(&wid, &wsecret).arg(&list));
    assert_eq!(code, 403, "write-only LIST: {body}");
    // read-only key: GET yes, PUT no
    let (rid, rsecret) = g.create_key("reader", "backup", true, false);
    let (code, _) = curl_status(
        g.curl_as(&rid, &rsecret)
            .arg("-o")
            .arg("/dev/null")
            .arg(&wurl),
    );
    assert_eq!(code, 200);
    let (code, _) = curl_status(g.curl_as(&rid, &rsecret).arg("-T").arg(&src).arg(&wurl));
    assert_eq!(code, 403);
    // a key with no permission on the bucket
    let (nid, nsecret) = g.create_key("nobody", "backup", false, false);
    let (code, _) = curl_status(g.curl_as(&nid, &nsecret).arg(&url));
    assert_eq!(code, 403);
    let (code, _) = curl_status(g.curl_as(&wid, &wsecret).args(["-X", "DELETE"]).arg(&wurl));
    assert_eq!(code, 204);

    // kill -9 and restart: data, keys and buckets survive.
    let old = g.proc.pid();
    let t0 = Instant::now();
    g.restart();
    eprintln!("garage: kill -9 + restart ready in {:?}", t0.elapsed());
    assert!(pid_gone(old));
    assert_ne!(g.proc.pid(), old);
    let (code, _) = curl_status(g.curl().arg("-o").arg(&got).arg(&url));
    assert_eq!(code, 200);
    assert!(
        fs::read(&got).unwrap() == data,
        "data changed across kill -9"
    );
    let (code, _) = curl_status(
        g.curl_as(&rid, &rsecret)
            .arg("-o")
            .arg("/dev/null")
            .arg(&url),
    );
    assert_eq!(code, 200, "imported key lost across restart");
    assert_eq!(g.objects_in("other", "").len(), 1);

    let pid = g.proc.pid();
    assert_stops("garage", g, pid);
}

#[test]
fn sshd_sftp_round_trip() {
    let t0 = Instant::now();
    let s = Sshd::start();
    eprintln!("sshd: ready in {:?} (pid {})", t0.elapsed(), s.proc.pid());
    assert!(s.home.is_absolute() && s.home.is_dir());
    let url = s.url(s.home.to_str().unwrap());
    assert_eq!(
        url,
        format!(
            "sftp://{}@127.0.0.1:{}/{}",
            s.user,
            s.port,
            s.home.display()
        )
    );
    assert!(
        url.contains(&format!(":{}//", s.port)),
        "absolute path must give //: {url}"
    );
    assert_eq!(
        s.ssh_options(),
        format!("-oIdentityFile={}", s.key.display())
    );

    let data = pseudo_random(1 << 20, 2);
    let local = s.dir.path().join("local.bin");
    fs::write(&local, &data).unwrap();
    let back = s.dir.path().join("back.bin");
    let remote = s.home.join("sub");
    s.sftp_batch(&format!(
        "mkdir {r}\nput {l} {r}/vol.bin\nls -l {r}\nget {r}/vol.bin {b}\n",
        r = remote.display(),
        l = local.display(),
        b = back.display()
    ));
    assert!(
        fs::read(remote.join("vol.bin")).unwrap() == data,
        "sftp put stored other bytes"
    );
    assert!(
        fs::read(&back).unwrap() == data,
        "sftp get returned other bytes"
    );
    // and a plain ssh command (strict host key checking against known_hosts)
    let o = run(s.ssh().arg(format!("wc -c < {}/vol.bin", remote.display())));
    assert!(
        o.status.success(),
        "ssh failed: {}\n{}",
        text(&o),
        s.proc.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        data.len().to_string()
    );
    // a wrong key is refused
    let other = s.dir.path().join("other_key");
    let o = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other));
    assert!(o.status.success());
    let o = run(Command::new("ssh")
        .args(["-F", "/dev/null", "-oBatchMode=yes", "-oIdentitiesOnly=yes"])
        .arg("-i")
        .arg(&other)
        .arg(format!("-oUserKnownHostsFile={}", s.known_hosts.display()))
        .arg("-p")
        .arg(s.port.to_string())
        .arg(format!("{}@127.0.0.1", s.user))
        .arg("true"));
    assert!(!o.status.success(), "a foreign key got in");

    let pid = s.proc.pid();
    assert_stops("sshd", s, pid);
}

#[test]
fn nginx_webdav_round_trip() {
    let t0 = Instant::now();
    let n = Nginx::start();
    eprintln!("nginx: ready in {:?} (pid {})", t0.elapsed(), n.proc.pid());
    assert_eq!(
        n.url("/backup/x"),
        format!("webdav://127.0.0.1:{}/backup/x", n.port)
    );
    let data = pseudo_random(2 << 20, 3);
    let local = n.dir.path().join("local.bin");
    fs::write(&local, &data).unwrap();
    let (code, body) = curl_status(
        curl()
            .arg("-T")
            .arg(&local)
            .arg(n.http_url("backup/deep/vol.bin")),
    );
    assert!(
        code == 201 || code == 204,
        "PUT: {code} {body}\n{}",
        n.proc.log()
    );
    assert!(fs::read(n.data.join("backup/deep/vol.bin")).unwrap() == data);
    let (code, body) = curl_status(
        curl()
            .args(["-X", "PROPFIND", "-H", "Depth: 1"])
            .arg(n.http_url("backup/deep/")),
    );
    assert_eq!(code, 207, "PROPFIND: {body}\n{}", n.proc.log());
    assert!(
        body.contains("vol.bin") && body.contains(&data.len().to_string()),
        "{body}"
    );
    let (code, _) = curl_status(
        curl()
            .args(["-X", "MKCOL"])
            .arg(n.http_url("backup/empty/")),
    );
    assert_eq!(code, 201);
    let back = n.dir.path().join("back.bin");
    let (code, _) = curl_status(
        curl()
            .arg("-o")
            .arg(&back)
            .arg(n.http_url("backup/deep/vol.bin")),
    );
    assert_eq!(code, 200);
    assert!(fs::read(&back).unwrap() == data);
    let (code, _) = curl_status(
        curl()
            .args(["-X", "DELETE"])
            .arg(n.http_url("backup/deep/vol.bin")),
    );
    assert_eq!(code, 204);
    assert!(!n.data.join("backup/deep/vol.bin").exists());
    let pid = n.proc.pid();
    assert_stops("nginx", n, pid);

    let n = Nginx::start_with_auth("dupr", "s3cret pass");
    let url = n.http_url("a.txt");
    // a small body: with a big one nginx may reset the connection while curl still sends
    let local = n.dir.path().join("small.txt");
    fs::write(&local, b"hello").unwrap();
    let (code, _) = curl_status(curl().arg("-T").arg(&local).arg(&url));
    assert_eq!(code, 401, "no credentials must be refused");
    let (code, _) = curl_status(
        curl()
            .args(["-u", "dupr:wrong"])
            .arg("-T")
            .arg(&local)
            .arg(&url),
    );
    assert_eq!(code, 401, "a wrong password must be refused");
    let (code, body) = curl_status(
        curl()
            .args(["-u", "dupr:s3cret pass"])
            .arg("-T")
            .arg(&local)
            .arg(&url),
    );
    assert_eq!(code, 201, "PUT with credentials: {body}\n{}", n.proc.log());
    assert_eq!(
        n.auth,
        Some(("dupr".to_string(), "s3cret pass".to_string()))
    );
    let pid = n.proc.pid();
    assert_stops("nginx (auth)", n, pid);
}

fn dbx(f: &FakeDropbox, path: &str, arg: Option<&str>, json: Option<&str>) -> Command {
    let mut c = curl();
    c.args(["-X", "POST"])
        .arg(format!("{}{path}", f.base))
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", f.token));
    if let Some(a) = arg {
        c.arg("-H").arg(format!("Dropbox-API-Arg: {a}"));
    }
    if let Some(j) = json {
        c.args(["-H", "Content-Type: application/json", "--data-binary", j]);
    }
    c
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn fake_dropbox_round_trip() {
    let t0 = Instant::now();
    let f = FakeDropbox::start_with(1 << 20, 2);
    eprintln!(
        "fake dropbox: ready in {:?} (pid {})",
        t0.elapsed(),
        f.proc.pid()
    );
    let small = f.dir.path().join("small.bin");
    let data = pseudo_random(300_000, 4);
    fs::write(&small, &data).unwrap();
    let octet = [
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
    ];

    // one-shot upload, stat, ranged download
    let (code, body) = curl_status(
        dbx(
            &f,
            "/2/files/upload",
            Some(r#"{"path":"/Backup/vol1","mode":"overwrite"}"#),
            None,
        )
        .args(octet)
        .arg(format!("@{}", small.display())),
    );
    assert_eq!(code, 200, "{body}\n{}", f.proc.log());
    assert_eq!(json(&body)["size"], 300_000);
    let (code, body) = curl_status(dbx(
        &f,
        "/2/files/get_metadata",
        None,
        Some(r#"{"path":"/backup/VOL1"}"#),
    ));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["path_display"], "/Backup/vol1");
    let (code, body) = curl_status(dbx(
        &f,
        "/2/files/get_metadata",
        None,
        Some(r#"{"path":"/backup/none"}"#),
    ));
    assert_eq!(code, 409);
    assert!(body.contains("path/not_found"), "{body}");
    let got = f.dir.path().join("got.bin");
    let (code, _) = curl_status(
        dbx(
            &f,
            "/2/files/download",
            Some(r#"{"path":"/backup/vol1"}"#),
            None,
        )
        .args(["-H", "Range: bytes=1000-1999", "-o"])
        .arg(&got),
    );
    assert_eq!(code, 206);
    assert!(fs::read(&got).unwrap() == data[1000..2000]);

    // too big for one shot -> 400; the same through an upload session works
    let big = f.dir.path().join("big.bin");
    let bigdata = pseudo_random((1 << 20) + 5000, 5);
    fs::write(&big, &bigdata).unwrap();
    let (code, body) = curl_status(
        dbx(
            &f,
            "/2/files/upload",
            Some(r#"{"path":"/backup/big","mode":"overwrite"}"#),
            None,
        )
        .args(octet)
        .arg(format!("@{}", big.display())),
    );
    assert_eq!(code, 400, "{body}");
    let (a, b) = bigdata.split_at(700_000);
    let (b, c) = b.split_at(200_000);
    let part = |n: &str, d: &[u8]| {
        let p = f.dir.path().join(n);
        fs::write(&p, d).unwrap();
        format!("@{}", p.display())
    };
    let (code, body) = curl_status(
        dbx(
            &f,
            "/2/files/upload_session/start",
            Some(r#"{"close":false}"#),
            None,
        )
        .args(octet)
        .arg(part("a", a)),
    );
    assert_eq!(code, 200, "{body}");
    let sid = json(&body)["session_id"].as_str().unwrap().to_string();
    let cursor = |off: usize| format!(r#"{{"session_id":"{sid}","offset":{off}}}"#);
    let (code, body) = curl_status(
        dbx(
            &f,
            "/2/files/upload_session/append_v2",
            Some(&format!(r#"{{"cursor":{},"close":false}}"#, cursor(5))),
            None,
        )
        .args(octet)
        .arg(part("b", b)),
    );
    assert_eq!(code, 409, "wrong offset must be refused: {body}");
    assert_eq!(json(&body)["error"]["correct_offset"], 700_000);
    let (code, body) = curl_status(
        dbx(
            &f,
            "/2/files/upload_session/append_v2",
            Some(&format!(
                r#"{{"cursor":{},"close":false}}"#,
                cursor(a.len())
            )),
            None,
        )
        .args(octet)
        .arg(part("b", b)),
    );
    assert_eq!(code, 200, "{body}");
    let commit = r#"{"path":"/backup/big","mode":"overwrite","autorename":false,"mute":true}"#;
    let (code, body) = curl_status(
        dbx(
            &f,
            "/2/files/upload_session/finish",
            Some(&format!(
                r#"{{"cursor":{},"commit":{commit}}}"#,
                cursor(a.len() + b.len())
            )),
            None,
        )
        .args(octet)
        .arg(part("c", c)),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["size"], bigdata.len());
    let (code, _) = curl_status(
        dbx(
            &f,
            "/2/files/download",
            Some(r#"{"path":"/backup/big"}"#),
            None,
        )
        .arg("-o")
        .arg(&got),
    );
    assert_eq!(code, 200);
    assert!(
        fs::read(&got).unwrap() == bigdata,
        "session upload stored other bytes"
    );

    // list_folder paging (page size 2) over 3 entries
    let (code, _) = curl_status(dbx(
        &f,
        "/2/files/create_folder_v2",
        None,
        Some(r#"{"path":"/backup/sub"}"#),
    ));
    assert_eq!(code, 200);
    let (code, body) = curl_status(dbx(
        &f,
        "/2/files/list_folder",
        None,
        Some(r#"{"path":"/backup","recursive":false,"limit":1000}"#),
    ));
    assert_eq!(code, 200, "{body}");
    let page1 = json(&body);
    assert_eq!(page1["entries"].as_array().unwrap().len(), 2);
    assert_eq!(page1["has_more"], true);
    let cont = format!(r#"{{"cursor":"{}"}}"#, page1["cursor"].as_str().unwrap());
    let (code, body) = curl_status(dbx(&f, "/2/files/list_folder/continue", None, Some(&cont)));
    assert_eq!(code, 200, "{body}");
    let page2 = json(&body);
    assert_eq!(page2["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page2["has_more"], false);

    // delete, auth, token refresh
    let (code, _) = curl_status(dbx(
        &f,
        "/2/files/delete_v2",
        None,
        Some(r#"{"path":"/backup/vol1"}"#),
    ));
    assert_eq!(code, 200);
    let (code, body) = curl_status(
        curl()
            .args(["-X", "POST", "-H", "Authorization: Bearer wrong"])
            .arg(format!("{}/2/users/get_current_account", f.base)),
    );
    assert_eq!(code, 401, "{body}");
    let (code, body) = curl_status(
        curl()
            .args([
                "-d",
                "grant_type=refresh_token&refresh_token=r&client_id=c&client_secret=s",
            ])
            .arg(format!("{}/oauth2/token", f.base)),
    );
    assert_eq!(code, 200);
    assert_eq!(json(&body)["access_token"], f.token.as_str());

    assert_eq!(
        f.files(),
        vec![("/Backup/big".to_string(), bigdata.len() as u64)]
    );
    let reqs = f.requests();
    assert_eq!(
        reqs.iter().filter(|r| *r == "POST /2/files/upload").count(),
        2,
        "{reqs:?}"
    );
    assert!(
        reqs.contains(&"POST /2/files/upload_session/finish".to_string()),
        "{reqs:?}"
    );
    assert_eq!(reqs.last().unwrap(), "POST /oauth2/token");

    let pid = f.proc.pid();
    assert_stops("fake dropbox", f, pid);
}

#[test]
fn fake_dropbox_fault_injection() {
    let f = FakeDropbox::start_env(&[("FAKE_FAIL", "2:503,3:429")]);
    let call = || {
        curl_status(
            curl()
                .args(["-X", "POST", "-H"])
                .arg(format!("Authorization: Bearer {}", f.token))
                .arg(format!("{}/2/users/get_current_account", f.base)),
        )
        .0
    };
    assert_eq!([call(), call(), call(), call()], [200, 503, 429, 200]);
    let pid = f.proc.pid();
    assert_stops("fake dropbox", f, pid);
}

fn gd(f: &FakeGdrive, method: &str, path: &str) -> Command {
    let mut c = curl();
    c.args(["-X", method])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", f.token))
        .arg(format!("{}{path}", f.base));
    c
}

#[test]
fn fake_gdrive_round_trip() {
    let t0 = Instant::now();
    let f = FakeGdrive::start_env(&[("FAKE_PAGE_SIZE", "2")]);
    eprintln!(
        "fake gdrive: ready in {:?} (pid {})",
        t0.elapsed(),
        f.proc.pid()
    );

    // OpenDAL's refresh: all in the query string, empty body
    let (code, body) = curl_status(curl().args(["-X", "POST", "-H", "Content-Length: 0"]).arg(
        format!(
            "{}/token?refresh_token=r&client_id=c&client_secret=s&grant_type=refresh_token",
            f.base
        ),
    ));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["access_token"], f.token.as_str());

    // folder, then a multipart/form-data upload as OpenDAL sends it
    let (code, body) = curl_status(gd(&f, "POST", "/drive/v3/files").args([
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"backup","mimeType":"application/vnd.google-apps.folder","parents":["root"]}"#,
    ]));
    assert_eq!(code, 200, "{body}");
    let dir_id = json(&body)["id"].as_str().unwrap().to_string();
    let data = pseudo_random(500_000, 6);
    let src = f.dir.path().join("vol.bin");
    fs::write(&src, &data).unwrap();
    let meta = f.dir.path().join("meta.json");
    fs::write(
        &meta,
        format!(r#"{{"name":"vol1","parents":["{dir_id}"]}}"#),
    )
    .unwrap();
    let (code, body) = curl_status(
        gd(&f, "POST", "/upload/drive/v3/files?uploadType=multipart")
            .arg("-F")
            .arg(format!(
                "metadata=@{};type=application/json; charset=UTF-8",
                meta.display()
            ))
            .arg("-F")
            .arg(format!(
                "file=@{};type=application/octet-stream",
                src.display()
            )),
    );
    assert_eq!(code, 200, "{body}\n{}", f.proc.log());
    let file_id = json(&body)["id"].as_str().unwrap().to_string();

    // OpenDAL's path lookup query
    let q = format!(
        "/drive/v3/files?q={}&orderBy=modifiedTime%20desc%2CcreatedTime%20desc&pageSize=1",
        url_encode(&format!(
            "name = 'vol1' and '{dir_id}' in parents and trashed = false"
        ))
    );
    let (code, body) = curl_status(gd(&f, "GET", &q));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["files"][0]["id"], file_id.as_str());
    let (code, body) = curl_status(gd(
        &f,
        "GET",
        &format!("/drive/v3/files/{file_id}?fields=id,name,mimeType,size,modifiedTime"),
    ));
    assert_eq!(code, 200);
    assert_eq!(json(&body)["size"], "500000");
    let got = f.dir.path().join("got.bin");
    let (code, _) = curl_status(
        gd(&f, "GET", &format!("/drive/v3/files/{file_id}?alt=media"))
            .args(["-H", "Range: bytes=100-199", "-o"])
            .arg(&got),
    );
    assert_eq!(code, 206);
    assert!(fs::read(&got).unwrap() == data[100..200]);

    // overwrite by id (uploadType=media), then full read
    let new = pseudo_random(1000, 7);
    fs::write(&src, &new).unwrap();
    let (code, _) = curl_status(
        gd(
            &f,
            "PATCH",
            &format!("/upload/drive/v3/files/{file_id}?uploadType=media"),
        )
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", src.display())),
    );
    assert_eq!(code, 200);
    let (code, _) = curl_status(
        gd(&f, "GET", &format!("/drive/v3/files/{file_id}?alt=media"))
            .arg("-o")
            .arg(&got),
    );
    assert_eq!(code, 200);
    assert!(fs::read(&got).unwrap() == new);

    // listing with paging (page size 2) over 3 children
    for name in ["a", "b"] {
        let (code, _) = curl_status(gd(&f, "POST", "/drive/v3/files").args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(r#"{{"name":"{name}","parents":["{dir_id}"]}}"#),
        ]));
        assert_eq!(code, 200);
    }
    let list = format!(
        "/drive/v3/files?pageSize=1000&q={}&fields=nextPageToken,files(id,name,mimeType,size,modifiedTime,parents)",
        url_encode(&format!("'{dir_id}' in parents and trashed = false"))
    );
    let (code, body) = curl_status(gd(&f, "GET", &list));
    assert_eq!(code, 200, "{body}");
    let p1 = json(&body);
    assert_eq!(p1["files"].as_array().unwrap().len(), 2);
    let token = p1["nextPageToken"]
        .as_str()
        .expect("nextPageToken")
        .to_string();
    let (code, body) = curl_status(gd(&f, "GET", &format!("{list}&pageToken={token}")));
    assert_eq!(code, 200);
    let p2 = json(&body);
    assert_eq!(p2["files"].as_array().unwrap().len(), 1);
    assert!(p2.get("nextPageToken").is_none());

    // trash (OpenDAL's delete) hides it from trashed = false
    let (code, _) = curl_status(
        gd(&f, "PATCH", &format!("/drive/v3/files/{file_id}")).args(["-d", r#"{"trashed":true}"#]),
    );
    assert_eq!(code, 200);
    let (code, body) = curl_status(gd(&f, "GET", &q));
    assert_eq!(code, 200);
    assert_eq!(json(&body)["files"].as_array().unwrap().len(), 0);

    let (code, _) = curl_status(curl().arg(format!("{}/drive/v3/files/root", f.base)));
    assert_eq!(code, 401, "no token must be refused");

    assert_eq!(
        f.files(),
        vec![("/backup/a".to_string(), 0), ("/backup/b".to_string(), 0)]
    );
    let reqs = f.requests();
    assert!(
        reqs.contains(&"POST /upload/drive/v3/files?uploadType=multipart".to_string()),
        "{reqs:?}"
    );
    assert!(reqs[0].starts_with("POST /token?"), "{reqs:?}");

    let pid = f.proc.pid();
    assert_stops("fake gdrive", f, pid);
}

#[test]
fn garage_bin_is_where_the_install_script_puts_it() {
    // The other tests would fail with a clear message anyway; this one says
    // where the suite looks, so a missing build is obvious in the test list.
    let bin = Garage::bin();
    let o = run(Command::new(&bin).arg("--version"));
    let v = text(&o);
    assert!(v.contains("2.5.0"), "{} --version: {v}", bin.display());
}
