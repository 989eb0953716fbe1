//! Storage servers on loopback for the remote-backend tests: Garage (S3),
//! OpenSSH sshd (SFTP), nginx + dav-ext (WebDAV), and our own fakes of the
//! Dropbox and Google Drive HTTP APIs (`tests/fakes/*.py`).
//!
//! Every server runs as a direct child of the test process (a simple command,
//! so the PID is the server itself), listens on 127.0.0.1 on a free port, and
//! keeps its config, data and log in its own temp dir. [`Proc`] stops it by
//! PID when dropped. A missing server binary is a test failure with a message
//! pointing at `scripts/install-test-deps`, never a skip.
//!
//! Recipes and measurements: `/work/shared/reference/servers.md` (§1 Garage,
//! §2 sshd, §3.1 nginx, §7 start/stop rules).

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "run scripts/install-test-deps (it installs openssh-server, nginx, \
     libnginx-mod-http-dav-ext and curl, and builds Garage 2.5.0 into the test cache)";

fn require(path: &Path, what: &str) {
    if !path.exists() {
        panic!("{what} not found at {}: {INSTALL_HINT}", path.display());
    }
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir for a test server")
}

/// Run a setup command; panic with its output if it fails.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} ({INSTALL_HINT})"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn run_text(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout)
        .trim()
        .to_string()
}

/// A few random hex digits (std's randomly seeded hasher; no rand crate needed).
fn random_hex(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        s.push_str(&format!("{:016x}", h.finish()));
    }
    s.truncate(len);
    s
}

// ------------------------------------------------------------------ ports

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free TCP port on 127.0.0.1 (bound to port 0, then released). Never hands
/// out the same port twice within one test process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&port) {
            seen.push(port);
            return port;
        }
    }
}

// ------------------------------------------------------------------ processes

/// State letter of a process from `/proc/PID/stat` (`R`, `S`, `Z`, ...), or
/// `None` if there is no such process. (`kill -0` succeeds on a zombie, so it
/// cannot tell whether a child has exited.)
pub fn pid_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S ..." where comm may itself contain spaces and parentheses
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True if the process has exited (no such PID, or a zombie awaiting reaping).
pub fn pid_gone(pid: u32) -> bool {
    !matches!(pid_state(pid), Some(s) if s != 'Z')
}

/// A started server process. Dropping it stops it by PID: the stop signal
/// (SIGTERM; SIGQUIT for nginx), up to 5 s for it to exit (checked in
/// `/proc/PID/stat`), then SIGKILL, then reaping. Never kills by name.
pub struct Proc {
    name: String,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    stop_signal: i32,
}

impl Proc {
    /// Start `cmd` with stdin from /dev/null and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path, stop_signal: i32) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}\n{INSTALL_HINT}"));
        Proc {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
            stop_signal,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's stdout+stderr so far (for diagnostics).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(no log at {}: {e})", self.log.display()))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Still running (started, not exited)?
    pub fn running(&self) -> bool {
        self.child.is_some() && !pid_gone(self.pid)
    }

    /// Panic with the server's log.
    pub fn fail(&self, why: &str) -> ! {
        panic!(
            "{} (pid {}): {why}\n----- {} -----\n{}\n-----",
            self.name,
            self.pid,
            self.log.display(),
            self.log()
        )
    }

    /// Poll `ready` every 20 ms until it returns true; panic with the log if
    /// the server exits first or `timeout` passes. Returns the time it took.
    pub fn wait_ready(
        &self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        loop {
            if ready() {
                return t0.elapsed();
            }
            if !self.running() {
                self.fail(&format!("exited while waiting for {what}"));
            }
            if t0.elapsed() > timeout {
                self.fail(&format!("not ready after {timeout:?} (waiting for {what})"));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        if !pid_gone(self.pid) {
            // SAFETY: plain kill(2) on our own child's PID, which is not yet reaped
            // (the child handle is still held), so it cannot have been reused.
            unsafe {
                libc::kill(self.pid as libc::pid_t, sig);
            }
        }
    }

    fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Stop the server (idempotent); returns how long it took.
    pub fn stop(&mut self) -> Duration {
        let t0 = Instant::now();
        if self.child.is_none() {
            return Duration::ZERO;
        }
        self.signal(self.stop_signal);
        while !pid_gone(self.pid) && t0.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(10));
        }
        if !pid_gone(self.pid) {
            eprintln!(
                "{} (pid {}) still running 5 s after signal {}; SIGKILL",
                self.name, self.pid, self.stop_signal
            );
            self.signal(libc::SIGKILL);
        }
        self.reap();
        t0.elapsed()
    }

    /// SIGKILL at once (crash simulation), and reap.
    pub fn kill9(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGKILL);
            self.reap();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------ tiny HTTP client

/// (status, headers, body) of an HTTP reply.
pub type HttpReply = (u16, Vec<(String, String)>, Vec<u8>);

/// A minimal HTTP/1.1 client (one request per connection) for readiness probes
/// and the fakes' debug endpoints.
pub fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpReply> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| io::Error::other(format!("not an http:// URL: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if hdrs
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Ok((status, hdrs, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_txt = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

fn http_status(url: &str) -> Option<u16> {
    http("GET", url, &[], b"").ok().map(|r| r.0)
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let ent = &tail[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if ent.starts_with("#x") => u32::from_str_radix(&ent[2..], 16)
                .ok()
                .and_then(char::from_u32),
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Text of every `<tag>...</tag>` in `xml` (no nesting of the same tag).
fn xml_all<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let from = i + open.len();
        let Some(j) = rest[from..].find(&close) else {
            break;
        };
        out.push(&rest[from..from + j]);
        rest = &rest[from + j + close.len()..];
    }
    out
}

fn current_user() -> String {
    run_text(Command::new("id").arg("-un"))
}

// ------------------------------------------------------------------ Garage (S3)

/// Fixed credentials of the key Garage creates at start (servers.md §1.1, Way A).
pub const GARAGE_KEY_ID: &str = "GK31c2f218a2e44f485b94239e";
pub const GARAGE_SECRET: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835";
const GARAGE_RPC_SECRET: &str = "4f1c1d5e0b9a7c3e2d6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";
const GARAGE_ADMIN_TOKEN: &str = "test-admin-token";

/// A single-node Garage 2.5.0: one bucket (`backup`) and one key with
/// read/write/owner on it, created by the server itself
/// (`server --single-node --default-bucket`).
pub struct Garage {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` (S3 API; path-style requests).
    pub endpoint: String,
    /// `garage` (must match in SigV4).
    pub region: String,
    pub key_id: String,
    pub secret: String,
    /// `backup`
    pub bucket: String,
    pub admin_endpoint: String,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Garage {
    /// `$DUPR_GARAGE`, else `$DUPR_TEST_CACHE/tools/bin/garage`, else
    /// `~/.cache/dupr-test/tools/bin/garage`; panics if it is not there.
    pub fn bin() -> PathBuf {
        let p = if let Some(p) = std::env::var_os("DUPR_GARAGE").filter(|v| !v.is_empty()) {
            PathBuf::from(p)
        } else if let Some(c) = std::env::var_os("DUPR_TEST_CACHE").filter(|v| !v.is_empty()) {
            PathBuf::from(c).join("tools/bin/garage")
        } else {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            PathBuf::from(home).join(".cache/dupr-test/tools/bin/garage")
        };
        require(&p, "Garage (S3 server)");
        p
    }

    pub fn start() -> Garage {
        let bin = Self::bin();
        let dir = temp_dir("dupr-garage-");
        let d = dir.path();
        fs::create_dir_all(d.join("meta")).unwrap();
        fs::create_dir_all(d.join("data")).unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = d.join("garage.toml");
        fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{GARAGE_RPC_SECRET}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{GARAGE_ADMIN_TOKEN}"
"#,
                meta = d.join("meta").display(),
                data = d.join("data").display(),
            ),
        )
        .unwrap();
        let admin_endpoint = format!("http://127.0.0.1:{admin}");
        let proc = Self::spawn(&bin, &config, d, &admin_endpoint);
        Garage {
            proc,
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            key_id: GARAGE_KEY_ID.into(),
            secret: GARAGE_SECRET.into(),
            bucket: "backup".into(),
            admin_endpoint,
            config,
            dir,
        }
    }

    fn spawn(bin: &Path, config: &Path, dir: &Path, admin: &str) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", GARAGE_KEY_ID)
            .env("GARAGE_DEFAULT_SECRET_KEY", GARAGE_SECRET)
            .env("GARAGE_DEFAULT_BUCKET", "backup")
            .env("RUST_LOG", "garage=info")
            .current_dir(dir);
        let proc = Proc::spawn("garage", &mut cmd, &dir.join("server.log"), libc::SIGTERM);
        let health = format!("{admin}/health");
        proc.wait_ready(Duration::from_secs(30), "admin /health 200", || {
            http_status(&health) == Some(200)
        });
        proc
    }

    /// Run the garage CLI against this server (`garage -c CONFIG args...`);
    /// panics with the output on failure. Returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        run_text(
            Command::new(Self::bin())
                .arg("-c")
                .arg(&self.config)
                .args(args),
        )
    }

    /// Create a bucket and give the default key read, write and owner on it.
    pub fn create_bucket(&self, name: &str) {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "--key",
            &self.key_id,
            name,
        ]);
    }

    /// Import a new key named `name` (random id `GK` + 24 hex, 64-hex secret)
    /// and allow it `--read` and/or `--write` on `bucket`. Write alone permits
    /// PUT and DELETE but neither GET nor listing (403 AccessDenied).
    pub fn create_key(
        &self,
        name: &str,
        bucket: &str,
        read: bool,
        write: bool,
    ) -> (String, String) {
        let id = format!("GK{}", random_hex(24));
        let secret = random_hex(64);
        self.cli(&["key", "import", "--yes", "-n", name, &id, &secret]);
        let mut args = vec!["bucket", "allow"];
        if read {
            args.push("--read");
        }
        if write {
            args.push("--write");
        }
        if read || write {
            args.extend(["--key", id.as_str(), bucket]);
            self.cli(&args);
        }
        (id, secret)
    }

    /// Credentials for a client reading the AWS environment.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            ("AWS_DEFAULT_REGION".into(), self.region.clone()),
            ("AWS_REGION".into(), self.region.clone()),
        ]
    }

    /// A curl command signed with SigV4 for this server's default key.
    pub fn curl(&self) -> Command {
        self.curl_as(&self.key_id, &self.secret)
    }

    /// A curl command signed with SigV4 for the given key. curl 7.88 signs the
    /// query string as written: give query parameters sorted by name with
    /// values [`url_encode`]d, or Garage answers "Invalid signature".
    pub fn curl_as(&self, key_id: &str, secret: &str) -> Command {
        let mut c = Command::new("curl");
        c.args(["-sS", "--aws-sigv4"])
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{key_id}:{secret}"))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        c
    }

    /// `http://127.0.0.1:PORT/BUCKET/KEY`
    pub fn object_url(&self, bucket: &str, key: &str) -> String {
        let key: Vec<String> = key.split('/').map(url_encode).collect();
        format!("{}/{bucket}/{}", self.endpoint, key.join("/"))
    }

    /// Keys and sizes of the objects in the default bucket under `prefix`
    /// (ListObjectsV2 through curl, all pages).
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        self.objects_in(&self.bucket, prefix)
    }

    pub fn objects_in(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = String::new();
            if let Some(t) = &token {
                q.push_str(&format!("continuation-token={}&", url_encode(t)));
            }
            q.push_str(&format!("list-type=2&prefix={}", url_encode(prefix)));
            let url = format!("{}/{bucket}?{q}", self.endpoint);
            let o = run_ok(self.curl().arg("-f").arg(&url));
            let xml = String::from_utf8_lossy(&o.stdout).into_owned();
            if !xml.contains("<ListBucketResult") {
                panic!("ListObjectsV2 {url}: unexpected answer {xml}");
            }
            for c in xml_all(&xml, "Contents") {
                let key = xml_all(c, "Key")
                    .first()
                    .map(|k| xml_unescape(k))
                    .unwrap_or_default();
                let size = xml_all(c, "Size")
                    .first()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((key, size));
            }
            let truncated = xml_all(&xml, "IsTruncated").first() == Some(&"true");
            token = xml_all(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if !truncated || token.is_none() {
                return out;
            }
        }
    }

    /// Crash and restart: SIGKILL, then start again on the same config, dirs
    /// and ports (data, keys and buckets survive).
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Self::spawn(
            &Self::bin(),
            &self.config,
            self.dir.path(),
            &self.admin_endpoint,
        );
    }
}

// ------------------------------------------------------------------ sshd (SFTP)

/// OpenSSH's sshd on a free port with its own host key, accepting one client
/// key (ed25519, no passphrase) for the current user, `internal-sftp`.
pub struct Sshd {
    pub proc: Proc,
    pub port: u16,
    /// The current user (login name).
    pub user: String,
    /// Client private key.
    pub key: PathBuf,
    /// A writable directory to keep backups under (absolute).
    pub home: PathBuf,
    /// A known_hosts file with this server's host key (`[127.0.0.1]:PORT ...`).
    pub known_hosts: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        require(sshd, "sshd (Debian openssh-server)");
        require(
            Path::new("/usr/bin/ssh-keygen"),
            "ssh-keygen (Debian openssh-client)",
        );
        if unsafe { libc::geteuid() } == 0 && !Path::new("/run/sshd").is_dir() {
            // as root sshd refuses to start without its privilege separation dir
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
            fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dir = temp_dir("dupr-sshd-");
        let d = dir.path().to_path_buf();
        let home = d.join("home");
        fs::create_dir_all(&home).unwrap();
        for k in ["host_ed25519", "client_ed25519"] {
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", k, "-f"])
                    .arg(d.join(k)),
            );
        }
        let auth = d.join("authorized_keys");
        fs::copy(d.join("client_ed25519.pub"), &auth).unwrap();
        fs::set_permissions(&auth, fs::Permissions::from_mode(0o600)).unwrap();
        let port = free_port();
        let host_pub = fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let known_hosts = d.join("known_hosts");
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
        )
        .unwrap();
        let cfg = d.join("sshd_config");
        fs::write(
            &cfg,
            format!(
                "Port {port}
ListenAddress 127.0.0.1
HostKey {host}
PidFile {pid}
AuthorizedKeysFile {auth}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding no
X11Forwarding no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
",
                host = d.join("host_ed25519").display(),
                pid = d.join("sshd.pid").display(),
                auth = auth.display(),
            ),
        )
        .unwrap();
        run_ok(Command::new(sshd).arg("-t").arg("-f").arg(&cfg));
        let log = d.join("sshd.log");
        let proc = Proc::spawn(
            "sshd",
            Command::new(sshd).arg("-D").arg("-e").arg("-f").arg(&cfg),
            &log,
            libc::SIGTERM,
        );
        let banner = format!("Server listening on 127.0.0.1 port {port}");
        proc.wait_ready(Duration::from_secs(10), &banner, || {
            fs::read_to_string(&log).is_ok_and(|l| l.contains(&banner))
        });
        Sshd {
            proc,
            port,
            user: current_user(),
            key: d.join("client_ed25519"),
            home,
            known_hosts,
            dir,
        }
    }

    /// duplicity-style URL: `sftp://USER@127.0.0.1:PORT/` + `path`, so an
    /// absolute path gives the `//abs/path` form (a relative one is relative
    /// to the login user's home directory).
    pub fn url(&self, path: &str) -> String {
        format!("sftp://{}@127.0.0.1:{}/{path}", self.user, self.port)
    }

    /// What duplicity's `--ssh-options` takes: `-oIdentityFile=KEY`.
    pub fn ssh_options(&self) -> String {
        format!("-oIdentityFile={}", self.key.display())
    }

    /// Options for the OpenSSH clients (ssh, sftp, scp) to reach this server
    /// non-interactively with strict host key checking against [`Self::known_hosts`].
    pub fn client_options(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.key.display().to_string(),
            "-oIdentitiesOnly=yes".into(),
            "-oBatchMode=yes".into(),
            "-oStrictHostKeyChecking=yes".into(),
            format!("-oUserKnownHostsFile={}", self.known_hosts.display()),
        ]
    }

    /// `sftp -b BATCHFILE` with `commands` (one per line); panics on failure.
    pub fn sftp_batch(&self, commands: &str) -> String {
        let batch = self.dir.path().join(format!("batch-{}", random_hex(8)));
        fs::write(&batch, commands).unwrap();
        let out = run_text(
            Command::new("sftp")
                .args(self.client_options())
                .arg("-P")
                .arg(self.port.to_string())
                .arg("-b")
                .arg(&batch)
                .arg(format!("{}@127.0.0.1", self.user)),
        );
        let _ = fs::remove_file(batch);
        out
    }

    /// An `ssh USER@127.0.0.1 -p PORT` command; append the remote command.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.client_options())
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user));
        c
    }
}

// ------------------------------------------------------------------ nginx (WebDAV)

/// nginx with `dav` + `dav_ext` (PROPFIND) serving [`Nginx::data`].
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    /// The served directory (the WebDAV root).
    pub data: PathBuf,
    /// Basic-auth user and password, if started with them.
    pub auth: Option<(String, String)>,
    pub dir: tempfile::TempDir,
}

const NGINX: &str = "/usr/sbin/nginx";
const DAV_EXT: &str = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so";

impl Nginx {
    pub fn start() -> Nginx {
        Self::start_inner(None)
    }

    /// With `auth_basic`: the password is stored `openssl passwd -5` (SHA-256
    /// crypt, which Debian's nginx checks through libc crypt()).
    pub fn start_with_auth(user: &str, pass: &str) -> Nginx {
        Self::start_inner(Some((user.to_string(), pass.to_string())))
    }

    fn start_inner(auth: Option<(String, String)>) -> Nginx {
        require(Path::new(NGINX), "nginx (Debian nginx)");
        require(
            Path::new(DAV_EXT),
            "nginx's dav-ext module (Debian libnginx-mod-http-dav-ext)",
        );
        let dir = temp_dir("dupr-nginx-");
        let d = dir.path().to_path_buf();
        let data = d.join("data");
        for sub in ["data", "tmp", "logs"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let mut auth_conf = String::new();
        if let Some((user, pass)) = &auth {
            let hash = run_text(Command::new("openssl").args(["passwd", "-5", pass]));
            let file = d.join("htpasswd");
            fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            auth_conf = format!(
                "auth_basic \"dupr test\";\n        auth_basic_user_file {};",
                file.display()
            );
        }
        // As root the workers would run as nobody and could not write the data dir.
        let user_conf = if unsafe { libc::geteuid() } == 0 {
            format!(
                "user {} {};",
                current_user(),
                run_text(Command::new("id").arg("-gn"))
            )
        } else {
            String::new()
        };
        let port = free_port();
        let t = d.join("tmp");
        let conf = d.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "load_module {DAV_EXT};
{user_conf}
daemon off;
master_process on;
worker_processes 1;
pid {pid};
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log {access};
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        client_max_body_size 0;
        dav_methods PUT DELETE MKCOL COPY MOVE;
        dav_ext_methods PROPFIND OPTIONS;
        create_full_put_path on;
        dav_access user:rw group:r all:r;
        {auth_conf}
    }}
}}
",
                pid = d.join("nginx.pid").display(),
                access = d.join("logs/access.log").display(),
                t = t.display(),
                root = data.display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(&d)
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr"]);
        let proc = Proc::spawn("nginx", &mut cmd, &d.join("nginx.log"), libc::SIGQUIT);
        let probe = format!("http://127.0.0.1:{port}/");
        proc.wait_ready(Duration::from_secs(10), "an HTTP answer", || {
            http_status(&probe).is_some()
        });
        Nginx {
            proc,
            port,
            data,
            auth,
            dir,
        }
    }

    /// `webdav://127.0.0.1:PORT/path` (a leading `/` in `path` is dropped).
    pub fn url(&self, path: &str) -> String {
        format!(
            "webdav://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// `http://127.0.0.1:PORT/path`, for plain HTTP tools.
    pub fn http_url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
}

// ------------------------------------------------------------------ API fakes

const PYTHON: &str = "/usr/bin/python3";

fn fakes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes")
}

/// Start `tests/fakes/<script>` on a port it picks itself (PORT 0: no race),
/// with contents under DIR/data; returns (base URL, token, dir, proc).
fn start_fake(
    script: &str,
    prefix: &str,
    env: &[(&str, &str)],
) -> (String, String, tempfile::TempDir, Proc) {
    require(Path::new(PYTHON), "python3 (Debian python3)");
    let dir = temp_dir(prefix);
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let token = format!("test-token-{}", random_hex(12));
    let mut cmd = Command::new(PYTHON);
    cmd.arg(fakes_dir().join(script))
        .arg("0")
        .env("FAKE_TOKEN", &token)
        .env("FAKE_DATA", &data)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = dir.path().join("server.log");
    let proc = Proc::spawn(script, &mut cmd, &log, libc::SIGTERM);
    let mut port = 0u16;
    proc.wait_ready(Duration::from_secs(10), "its \"listening on\" line", || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        port = text
            .lines()
            .find_map(|l| l.split("listening on 127.0.0.1:").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        port != 0
    });
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("{base}/__fake/health");
    proc.wait_ready(Duration::from_secs(10), "/__fake/health", || {
        http_status(&health) == Some(200)
    });
    (base, token, dir, proc)
}

/// Request lines ("METHOD /path[?query]") the fake logged, in order.
fn logged_requests(proc: &Proc) -> Vec<String> {
    const METHODS: [&str; 7] = [
        "GET ", "POST ", "PUT ", "PATCH ", "DELETE ", "HEAD ", "OPTIONS ",
    ];
    proc.log()
        .lines()
        .filter(|l| {
            METHODS
                .iter()
                .any(|m| l.starts_with(m) && l[m.len()..].starts_with('/'))
        })
        .map(str::to_string)
        .collect()
}

fn fake_files(proc: &Proc, base: &str) -> Vec<(String, u64)> {
    let url = format!("{base}/__fake/files");
    let (status, _, body) =
        http("GET", &url, &[], b"").unwrap_or_else(|e| proc.fail(&format!("GET {url}: {e}")));
    if status != 200 {
        proc.fail(&format!("GET {url}: HTTP {status}"));
    }
    let v: Vec<(String, u64)> = serde_json::from_slice(&body)
        .unwrap_or_else(|e| proc.fail(&format!("GET {url}: bad JSON ({e})")));
    v
}

/// Which API a [`Fake`] serves: its script and the HTTPS hosts it stands for.
pub trait FakeApi {
    const SCRIPT: &'static str;
    const TEMP_PREFIX: &'static str;
    const HOSTS: &'static [&'static str];
}

/// The Dropbox API v2 (`tests/fakes/fake_dropbox.py`): both
/// api.dropboxapi.com and content.dropboxapi.com paths, and `/oauth2/token`.
pub struct DropboxApi;
impl FakeApi for DropboxApi {
    const SCRIPT: &'static str = "fake_dropbox.py";
    const TEMP_PREFIX: &'static str = "dupr-fake-dropbox-";
    const HOSTS: &'static [&'static str] = &[
        "https://api.dropboxapi.com",
        "https://content.dropboxapi.com",
    ];
}

/// The Google Drive v3 API and Google's OAuth token endpoint
/// (`tests/fakes/fake_gdrive.py`).
pub struct GdriveApi;
impl FakeApi for GdriveApi {
    const SCRIPT: &'static str = "fake_gdrive.py";
    const TEMP_PREFIX: &'static str = "dupr-fake-gdrive-";
    const HOSTS: &'static [&'static str] = &[
        "https://www.googleapis.com",
        "https://oauth2.googleapis.com",
    ];
}

pub type FakeDropbox = Fake<DropboxApi>;
pub type FakeGdrive = Fake<GdriveApi>;

/// A running fake of one service's API.
pub struct Fake<A: FakeApi> {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The bearer token it accepts (also what its token endpoint hands out).
    pub token: String,
    pub dir: tempfile::TempDir,
    api: std::marker::PhantomData<A>,
}

impl<A: FakeApi> Fake<A> {
    pub fn start() -> Self {
        Self::start_env(&[])
    }

    /// Any of the fake's environment options (FAKE_FAIL, FAKE_PAGE_SIZE,
    /// FAKE_MAX_UPLOAD, FAKE_REFRESH_TOKEN, ...; see the script's docstring).
    pub fn start_env(env: &[(&str, &str)]) -> Self {
        let (base, token, dir, proc) = start_fake(A::SCRIPT, A::TEMP_PREFIX, env);
        Fake {
            proc,
            base,
            token,
            dir,
            api: std::marker::PhantomData,
        }
    }

    /// Value for the engine's `DUPR_HTTP_REWRITE` that sends the service's
    /// hosts to this fake.
    pub fn rewrite(&self) -> String {
        A::HOSTS
            .iter()
            .map(|h| format!("{h}={}", self.base))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Request lines as logged, with the query as sent, e.g.
    /// `"POST /2/files/upload"`.
    pub fn requests(&self) -> Vec<String> {
        logged_requests(&self.proc)
    }

    /// Every stored file: (full path, size), sorted by path.
    pub fn files(&self) -> Vec<(String, u64)> {
        fake_files(&self.proc, &self.base)
    }
}

impl Fake<DropboxApi> {
    /// `max_upload`: largest one-shot `/2/files/upload` body (bigger: HTTP 400);
    /// `page_size`: most entries per `list_folder` page.
    pub fn start_with(max_upload: u64, page_size: usize) -> Self {
        Self::start_env(&[
            ("FAKE_MAX_UPLOAD", &max_upload.to_string()),
            ("FAKE_PAGE_SIZE", &page_size.to_string()),
        ])
    }
}
