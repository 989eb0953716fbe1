//! Remote targets through Apache OpenDAL: duplicity's URL schemes and
//! credential variables mapped onto OpenDAL services.
//!
//! The engine is synchronous; each remote backend owns a small tokio runtime
//! and blocks on it. Uploads stream from the staged volume file (multipart
//! where the service has it), downloads stream to a local file.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use opendal::layers::TimeoutLayer;
use opendal::{services, Buffer, ErrorKind, HttpBody, HttpTransport, HttpTransporter, Operator};

use super::url::Url;
use super::{env_var, Backend, BackendOptions};
use crate::error::{Error, IoContext, Result};

/// The schemes dupr serves, for error messages.
pub const SCHEMES: &str = "file, s3, s3+http, boto3+s3, gs, b2, azure, gdrive, gdocs, pydrive, \
dpbx, onedrive, sftp, scp, paramiko+sftp, pexpect+sftp, webdav, webdavs, http, https, swift";

/// Dropbox refuses one-shot uploads over 150 MB, and a one-shot upload is
/// held in memory whole: files over 8 MiB go in an upload session of 8 MiB
/// chunks (a multiple of 4 MiB, as Dropbox recommends).
const DROPBOX_ONESHOT_MAX: u64 = 8 << 20;
const DROPBOX_CHUNK: u64 = 8 << 20;

/// A download started ahead: its task, and the file it writes.
type Prefetch = (tokio::task::JoinHandle<Result<PathBuf>>, PathBuf);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    S3,
    Sftp,
    Webdav,
    Dropbox,
    Gdrive,
    Other,
}

pub struct Remote {
    url: String,
    rt: tokio::runtime::Runtime,
    /// Manifests, signatures, locks.
    op: Operator,
    /// Volumes (an S3 storage class such as GLACIER applies only to them).
    vol_op: Operator,
    kind: Kind,
    /// Write under a temporary name, then rename (services without atomic
    /// object writes).
    rename: bool,
    multi: bool,
    chunk: usize,
    parts: usize,
    tempdir: PathBuf,
    /// Volumes downloaded ahead of their use (--concurrency).
    ahead: usize,
    dropbox_token: Option<String>,
    transport: HttpTransporter,
    client: reqwest::Client,
    dav: Option<Dav>,
    /// Downloads started ahead: the task and the file it writes.
    prefetched: Mutex<HashMap<String, Prefetch>>,
}

/// The HTTP transport every service uses: reqwest with dupr's timeouts and
/// TLS options, extra headers (`--webdav-headers`), and URL prefix rewrites
/// (`DUPR_HTTP_REWRITE=https://api.dropboxapi.com=http://127.0.0.1:8090,...`,
/// for proxies and for the tests' local fakes of Dropbox and Google Drive).
struct Transport {
    inner: opendal_http_transport_reqwest::ReqwestTransport,
    rewrite: Vec<(String, String)>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Fresh bearer tokens for Google's APIs (service accounts).
    google: Option<std::sync::Arc<super::google::TokenSource>>,
}

impl HttpTransport for Transport {
    async fn fetch(
        &self,
        mut req: http::Request<Buffer>,
    ) -> opendal::Result<http::Response<HttpBody>> {
        let u = req.uri().to_string();
        if let Some(g) = &self.google {
            if u.starts_with("https://www.googleapis.com/") {
                let t = g.bearer().await.map_err(|e| {
                    opendal::Error::new(ErrorKind::PermissionDenied, e).set_temporary()
                })?;
                if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}")) {
                    req.headers_mut().insert(http::header::AUTHORIZATION, v);
                }
            }
        }
        for (from, to) in &self.rewrite {
            if let Some(rest) = u.strip_prefix(from.as_str()) {
                if let Ok(uri) = format!("{to}{rest}").parse() {
                    *req.uri_mut() = uri;
                }
                break;
            }
        }
        for (k, v) in &self.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        self.inner.fetch(req).await
    }
}

fn transport(
    opts: &BackendOptions,
    headers: &[(String, String)],
    google: Option<std::sync::Arc<super::google::TokenSource>>,
) -> Result<(HttpTransporter, reqwest::Client)> {
    let bad = |what: String| Error::Usage(what);
    let mut b = reqwest::Client::builder()
        .connect_timeout(opts.timeout)
        .read_timeout(opts.timeout);
    if opts.ssl_no_check_certificate {
        b = b.danger_accept_invalid_certs(true);
    }
    let mut cas: Vec<PathBuf> = opts.ssl_cacert_file.iter().cloned().collect();
    if let Some(dir) = &opts.ssl_cacert_path {
        if let Ok(rd) = std::fs::read_dir(dir) {
            cas.extend(rd.flatten().map(|e| e.path()));
        }
    }
    let explicit = opts.ssl_cacert_file.clone();
    for f in cas {
        if f.is_dir() {
            continue;
        }
        let pem = std::fs::read(&f).ctx(&f)?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) => {
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            // Other files in a --ssl-cacert-path directory are not ours.
            Err(_) if Some(&f) != explicit.as_ref() => {}
            Err(e) => return Err(bad(format!("--ssl-cacert-file {}: {e}", f.display()))),
        }
    }
    let client = b
        .build()
        .map_err(|e| bad(format!("cannot set up HTTP client: {e}")))?;
    let rewrite = env_var("DUPR_HTTP_REWRITE")
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut hs = Vec::new();
    for (k, v) in headers {
        let k = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| bad(format!("--webdav-headers: bad header name {k:?}")))?;
        let v = http::HeaderValue::from_str(v)
            .map_err(|_| bad(format!("--webdav-headers: bad value for {k}")))?;
        hs.push((k, v));
    }
    Ok((
        HttpTransporter::new(Transport {
            inner: opendal_http_transport_reqwest::ReqwestTransport::from(client.clone()),
            rewrite,
            headers: hs,
            google,
        }),
        client,
    ))
}

/// A WebDAV target for dupr's own streaming PUT: OpenDAL's WebDAV writer
/// sends a file in one buffered request, which would hold a whole volume
/// in memory.
struct Dav {
    /// `http://host:port/root/` (path segments percent-encoded).
    base: String,
    /// The collections from the server root down to `base`, to create.
    dirs: Vec<String>,
    auth: Option<(String, Option<String>)>,
    headers: Vec<(String, String)>,
    made: std::sync::atomic::AtomicBool,
}

fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Kv = Vec<(String, String)>;

fn kv(pairs: &[(&str, &str)]) -> Kv {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One service with its config, before the operator is built.
struct Spec {
    kind: Kind,
    build: fn(Kv) -> opendal::Result<Operator>,
    config: Kv,
    /// Extra config for the volume operator only.
    volume_config: Kv,
    headers: Vec<(String, String)>,
}

fn spec<B: opendal::Builder>(kind: Kind, config: Kv) -> Spec {
    Spec {
        kind,
        build: |c: Kv| Operator::from_iter::<B>(c),
        config,
        volume_config: Vec::new(),
        headers: Vec::new(),
    }
}

impl Remote {
    pub fn open(u: &Url, raw: &str, opts: &BackendOptions) -> Result<Remote> {
        let display = super::redact(raw);
        let bad = |reason: String| Error::BadUrl {
            url: display.clone(),
            reason,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dupr-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let (mut pre_transport, mut client) = transport(opts, &[], None)?;
        let mut s = match u.scheme.as_str() {
            "s3" | "s3+http" | "boto3+s3" | "boto+s3" => s3_spec(u, opts).map_err(bad)?,
            "gs" => gs_spec(u).map_err(bad)?,
            "sftp" | "scp" | "paramiko+sftp" | "paramiko+scp" | "pexpect+sftp" | "pexpect+scp"
            | "lftp+sftp" => sftp_spec(u, opts).map_err(bad)?,
            "webdav" | "webdavs" | "http" | "https" | "lftp+webdav" | "lftp+webdavs" => {
                webdav_spec(u, opts).map_err(bad)?
            }
            "dpbx" => {
                let token = env_var("DPBX_ACCESS_TOKEN").ok_or_else(|| {
                    bad("DPBX_ACCESS_TOKEN is not set (a Dropbox access token)".into())
                })?;
                let root = format!("/{}", u.host_and_segments().join("/"));
                spec::<services::Dropbox>(
                    Kind::Dropbox,
                    kv(&[("root", &root), ("access_token", &token)]),
                )
            }
            "gdrive" | "gdocs" | "pydrive" | "pydrive+gdocs" => {
                let (creds, tokens) = rt
                    .block_on(super::google::drive_auth(u, &pre_transport))
                    .map_err(bad)?;
                if tokens.is_some() {
                    (pre_transport, client) = transport(opts, &[], tokens)?;
                }
                let mut c = kv(&[("root", &format!("/{}", u.segments().join("/")))]);
                c.extend(creds);
                spec::<services::Gdrive>(Kind::Gdrive, c)
            }
            "onedrive" => onedrive_spec(u).map_err(bad)?,
            "b2" => {
                let c = rt.block_on(b2_config(u, &pre_transport)).map_err(bad)?;
                spec::<services::B2>(Kind::Other, c)
            }
            "azure" => azure_spec(u).map_err(bad)?,
            "swift" => swift_spec(u).map_err(bad)?,
            other => {
                return Err(bad(format!(
                    "scheme {other:?} is not supported by dupr (supported: {SCHEMES})"
                )))
            }
        };
        let dav = (s.kind == Kind::Webdav).then(|| {
            let get = |k: &str| {
                s.config
                    .iter()
                    .find(|(kk, _)| kk == k)
                    .map(|(_, v)| v.clone())
            };
            let endpoint = get("endpoint").unwrap_or_default();
            let mut dirs = Vec::new();
            let mut base = endpoint.trim_end_matches('/').to_string();
            for seg in u.segments() {
                base.push('/');
                base.push_str(&encode_segment(seg));
                dirs.push(format!("{base}/"));
            }
            base.push('/');
            Dav {
                base,
                dirs,
                auth: get("username").map(|u| (u, get("password"))),
                headers: s.headers.clone(),
                made: std::sync::atomic::AtomicBool::new(false),
            }
        });
        if !s.headers.is_empty() {
            (pre_transport, client) = transport(opts, &std::mem::take(&mut s.headers), None)?;
        }
        let tp = pre_transport;
        let make = |extra: &Kv| -> Result<Operator> {
            let mut c = s.config.clone();
            c.extend(extra.iter().cloned());
            let op = (s.build)(c).map_err(|e| bad(one_line(&e.to_string())))?;
            let ctx = op.context().with_http_transport(tp.clone());
            // Idle connections are reqwest's read timeout (--timeout); this
            // is the backstop for a call that hangs anyway. An I/O call may
            // carry a whole one-shot upload, so its limit is generous.
            let t = opts.timeout.max(Duration::from_secs(1));
            Ok(op.with_context(ctx).layer(
                TimeoutLayer::new()
                    .with_timeout(t * 20)
                    .with_io_timeout((t * 60).max(Duration::from_secs(1800))),
            ))
        };
        let op = make(&Vec::new())?;
        let vol_op = if s.volume_config.is_empty() {
            op.clone()
        } else {
            make(&s.volume_config)?
        };
        let cap = op.info().capability();
        let kind = s.kind;
        let chunk = match kind {
            Kind::S3 => opts.s3_multipart_chunk_size.max(5 << 20),
            _ => 8 << 20,
        } as usize;
        Ok(Remote {
            url: display.clone(),
            rt,
            op,
            vol_op,
            kind,
            rename: matches!(kind, Kind::Sftp | Kind::Webdav) && cap.rename,
            multi: cap.write_can_multi,
            chunk,
            parts: opts.s3_multipart_max_procs.max(1),
            tempdir: opts.tempdir.clone(),
            ahead: opts.concurrency.max(1),
            dropbox_token: if kind == Kind::Dropbox {
                env_var("DPBX_ACCESS_TOKEN")
            } else {
                None
            },
            transport: tp,
            client,
            dav,
            prefetched: Mutex::new(HashMap::new()),
        })
    }

    fn err(&self, what: &str, name: &str, e: opendal::Error) -> Error {
        backend_error(&self.url, what, name, e)
    }

    fn op_for(&self, name: &str) -> &Operator {
        if name.contains(".difftar") {
            &self.vol_op
        } else {
            &self.op
        }
    }

    async fn upload(&self, local: &Path, dest: &str, size: u64) -> Result<()> {
        let op = self.op_for(dest);
        let io = |e| Error::io(local, e);
        if self.kind == Kind::Dropbox && size > dropbox_oneshot_max() {
            return self.dropbox_session(local, dest, size).await;
        }
        if let Some(dav) = &self.dav {
            return self.dav_put(dav, local, dest, size).await;
        }
        if self.multi && size > self.chunk as u64 {
            let mut w = op
                .writer_with(dest)
                .chunk(self.chunk)
                .concurrent(self.parts)
                .await
                .map_err(|e| self.err("upload", dest, e))?;
            let mut f = std::fs::File::open(local).map_err(io)?;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let n = match read_full(&mut f, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(io(e));
                    }
                };
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if let Err(e) = w.write(Bytes::from(buf)).await {
                    let _ = w.abort().await;
                    return Err(self.err("upload", dest, e));
                }
            }
            if let Err(e) = w.close().await {
                // No orphaned multipart parts left billed on the service.
                let _ = w.abort().await;
                return Err(self.err("upload", dest, e));
            }
        } else {
            // One request: the service (WebDAV, Dropbox, Drive) takes the
            // whole object at once.
            let data = std::fs::read(local).map_err(io)?;
            op.write(dest, data)
                .await
                .map_err(|e| self.err("upload", dest, e))?;
        }
        Ok(())
    }

    async fn dav_put(&self, dav: &Dav, local: &Path, dest: &str, size: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        let fail = |e: String, transient: bool| Error::Backend {
            url: self.url.clone(),
            reason: format!("upload {dest}: {e}"),
            transient,
        };
        let send = |req: reqwest::RequestBuilder| {
            let mut req = req;
            if let Some((u, p)) = &dav.auth {
                req = req.basic_auth(u, p.as_ref());
            }
            for (k, v) in &dav.headers {
                req = req.header(k, v);
            }
            req.send()
        };
        let status_error = |what: &str, st: reqwest::StatusCode| {
            let cause = match st.as_u16() {
                401 | 403 => "permission denied",
                404 | 409 => "not found",
                507 => "no space left on the server",
                _ => "failed",
            };
            fail(
                format!("{what}: {cause}: HTTP {st}"),
                st.is_server_error() && st.as_u16() != 507 || st.as_u16() == 429,
            )
        };
        if !dav.made.load(Ordering::Relaxed) {
            for (i, d) in dav.dirs.iter().enumerate() {
                let mkcol = reqwest::Method::from_bytes(b"MKCOL").expect("a method name");
                let r = send(self.client.request(mkcol, d))
                    .await
                    .map_err(|e| fail(request_error(&e), true))?;
                // 405: it exists already. Collections above the target may
                // refuse (403 on a hosted server's own folders): only the
                // target's own matters.
                let st = r.status();
                let last = i + 1 == dav.dirs.len();
                if last && !(st.is_success() || st.as_u16() == 405 || st.is_redirection()) {
                    return Err(status_error("MKCOL", st));
                }
            }
            dav.made.store(true, Ordering::Relaxed);
        }
        let f = std::fs::File::open(local).ctx(local)?;
        let stream = futures::stream::unfold(f, |mut f| async move {
            let mut buf = vec![0u8; 1 << 20];
            match read_full(&mut f, &mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let url = format!("{}{}", dav.base, encode_segment(dest));
        let r = send(
            self.client
                .put(&url)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await
        .map_err(|e| fail(request_error(&e), true))?;
        if !r.status().is_success() {
            return Err(status_error("PUT", r.status()));
        }
        Ok(())
    }

    async fn dropbox_session(&self, local: &Path, dest: &str, size: u64) -> Result<()> {
        let token = self.dropbox_token.clone().unwrap_or_default();
        let root = self.op.info().root().trim_end_matches('/').to_string();
        let path = format!("{root}/{dest}");
        let chunk = dropbox_chunk();
        let mut f = std::fs::File::open(local).ctx(local)?;
        let mut offset = 0u64;
        let mut session = String::new();
        let fail = |what: &str, e: String, temporary: bool| Error::Backend {
            url: self.url.clone(),
            reason: format!("upload {dest}: Dropbox upload session {what}: {e}"),
            transient: temporary,
        };
        loop {
            let mut buf = vec![0u8; chunk.min(size - offset) as usize];
            let n = read_full(&mut f, &mut buf).ctx(local)?;
            buf.truncate(n);
            let last = offset + n as u64 >= size;
            let (endpoint, arg) = if session.is_empty() {
                ("start", serde_json::json!({"close": false}))
            } else if !last {
                (
                    "append_v2",
                    serde_json::json!({"cursor": {"session_id": session, "offset": offset}, "close": false}),
                )
            } else {
                (
                    "finish",
                    serde_json::json!({
                        "cursor": {"session_id": session, "offset": offset},
                        "commit": {"path": path, "mode": "overwrite", "autorename": false, "mute": true}
                    }),
                )
            };
            let req = http::Request::post(format!(
                "https://content.dropboxapi.com/2/files/upload_session/{endpoint}"
            ))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/octet-stream")
            .header("Dropbox-API-Arg", arg.to_string())
            .body(Buffer::from(buf))
            .map_err(|e| fail(endpoint, e.to_string(), false))?;
            let resp = self
                .transport
                .send(req)
                .await
                .map_err(|e| fail(endpoint, e.to_string(), e.is_temporary()))?;
            let status = resp.status();
            let body = String::from_utf8_lossy(&resp.body().to_bytes()).into_owned();
            if !status.is_success() {
                let temporary = status.is_server_error() || status.as_u16() == 429;
                return Err(fail(
                    endpoint,
                    format!("HTTP {status}: {}", one_line(&body)),
                    temporary,
                ));
            }
            if endpoint == "start" {
                let v: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| fail(endpoint, e.to_string(), true))?;
                session = v["session_id"].as_str().unwrap_or_default().to_string();
                if session.is_empty() {
                    return Err(fail(endpoint, "no session_id in reply".into(), true));
                }
            }
            offset += n as u64;
            if endpoint == "finish" {
                return Ok(());
            }
            // A start that held everything is closed by an empty finish.
        }
    }

    async fn download(&self, name: &str, local: &Path) -> Result<()> {
        let r = self
            .op
            .reader_with(name)
            .chunk(4 << 20)
            .concurrent(2)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::MissingVolume {
                    name: name.to_string(),
                },
                _ => self.err("download", name, e),
            })?;
        let mut stream = r
            .into_bytes_stream(..)
            .await
            .map_err(|e| download_error(&self.url, name, e))?;
        let mut f = private_file(local)?;
        while let Some(b) = stream.next().await {
            let b = b.map_err(|e| stream_error(&self.url, name, e))?;
            f.write_all(&b).ctx(local)?;
        }
        f.sync_all().ctx(local)?;
        Ok(())
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tempdir.join(format!(
            ".dupr-get.{}.{n}.{}",
            std::process::id(),
            name.replace('/', "_")
        ))
    }
}

impl Backend for Remote {
    fn without_retries(&self) -> &dyn Backend {
        self
    }

    fn display_url(&self) -> String {
        self.url.clone()
    }

    fn list(&self) -> Result<Vec<String>> {
        let entries = match self.rt.block_on(self.op.list("/")) {
            Ok(v) => v,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err("list", "", e)),
        };
        let mut out: Vec<String> = entries
            .iter()
            .map(|e| e.path())
            .filter(|p| !p.is_empty() && !p.ends_with('/'))
            // Some services list bare names, others root-relative paths.
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn put(&self, local: &Path, name: &str) -> Result<()> {
        let size = std::fs::metadata(local).ctx(local)?.len();
        let dest = if self.rename {
            format!(".dupr-tmp.{}.{name}", std::process::id())
        } else {
            name.to_string()
        };
        self.rt.block_on(async {
            self.upload(local, &dest, size).await?;
            if self.rename {
                if let Err(e) = self.op.rename(&dest, name).await {
                    // SFTP's rename refuses an existing target.
                    let _ = self.op.delete(name).await;
                    if let Err(e2) = self.op.rename(&dest, name).await {
                        let _ = self.op.delete(&dest).await;
                        drop(e);
                        return Err(self.err("rename", name, e2));
                    }
                }
            }
            Ok(())
        })
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let tmp = self.temp_path(name);
        self.get(name, &tmp)?;
        let f = std::fs::File::open(&tmp).ctx(&tmp);
        let _ = std::fs::remove_file(&tmp);
        Ok(Box::new(f?))
    }

    fn get(&self, name: &str, local: &Path) -> Result<()> {
        let pending = self.prefetched.lock().expect("prefetch map").remove(name);
        if let Some((h, _)) = pending {
            if let Ok(Ok(p)) = self.rt.block_on(h) {
                if std::fs::rename(&p, local).is_ok() {
                    return Ok(());
                }
                let _ = std::fs::remove_file(&p);
            }
        }
        let r = self.rt.block_on(self.download(name, local));
        if r.is_err() {
            let _ = std::fs::remove_file(local);
        }
        r
    }

    fn prefetch(&self, names: &[String]) {
        let mut map = self.prefetched.lock().expect("prefetch map");
        for name in names {
            if map.len() >= self.ahead {
                break;
            }
            if map.contains_key(name) {
                continue;
            }
            let op = self.op.clone();
            let tmp = self.temp_path(name);
            let path = tmp.clone();
            let url = self.url.clone();
            let name2 = name.clone();
            let h = self.rt.spawn(async move {
                let r = async {
                    let r = op
                        .reader_with(&name2)
                        .chunk(4 << 20)
                        .await
                        .map_err(|e| backend_error(&url, "download", &name2, e))?;
                    let mut s = r
                        .into_bytes_stream(..)
                        .await
                        .map_err(|e| download_error(&url, &name2, e))?;
                    let mut f = private_file(&tmp)?;
                    while let Some(b) = s.next().await {
                        let b = b.map_err(|e| stream_error(&url, &name2, e))?;
                        f.write_all(&b).ctx(&tmp)?;
                    }
                    Ok(tmp.clone())
                }
                .await;
                if r.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                r
            });
            map.insert(name.clone(), (h, path));
        }
    }

    fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.rt.block_on(self.op.stat(name)) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", name, e)),
        }
    }

    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self.rt.block_on(self.op.delete(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", name, e)),
        }
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        None
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Prefetched volumes nobody asked for.
        let map = std::mem::take(&mut *self.prefetched.lock().expect("prefetch map"));
        for (_, (h, path)) in map {
            h.abort();
            let _ = self.rt.block_on(h);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A download error; a missing object is a missing volume (exit 53).
fn download_error(url: &str, name: &str, e: opendal::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        return Error::MissingVolume {
            name: name.to_string(),
        };
    }
    backend_error(url, "download", name, e)
}

/// An error in the middle of a download stream: OpenDAL's own error when it
/// is one (its display would carry the request URI, which may hold a
/// signature), else the I/O error's kind.
fn stream_error(url: &str, name: &str, e: std::io::Error) -> Error {
    let kind = e.kind();
    match e.into_inner().map(|i| i.downcast::<opendal::Error>()) {
        Some(Ok(oe)) => download_error(url, name, *oe),
        _ => Error::Backend {
            url: url.to_string(),
            reason: format!("download {name}: interrupted ({kind})"),
            transient: true,
        },
    }
}

/// A new file only we can read (downloaded volumes may be unencrypted).
fn private_file(p: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(p);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .ctx(p)
}

/// A reqwest error with its causes (connection refused, TLS, ...).
fn request_error(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    one_line(&msg)
}

fn dropbox_oneshot_max() -> u64 {
    env_var("DUPR_DPBX_CHUNK_SIZE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DROPBOX_ONESHOT_MAX)
}

fn dropbox_chunk() -> u64 {
    env_var("DUPR_DPBX_CHUNK_SIZE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DROPBOX_CHUNK)
        .max(1)
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Collapse an error text (service replies can be multi-line XML) to one
/// short line.
pub fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s
    }
}

/// `S3Error { code: "X", message: "Y", .. }` (a Debug dump) as `X: Y`.
fn tidy_service_error(m: &str) -> String {
    let field = |name: &str| -> Option<String> {
        let i = m.find(&format!("{name}: \""))? + name.len() + 3;
        let end = m[i..].find('"')?;
        Some(m[i..i + end].to_string())
    };
    match (m.contains("Error {"), field("code"), field("message")) {
        (true, Some(c), Some(msg)) if !msg.is_empty() => format!("{c}: {msg}"),
        (true, Some(c), _) => c,
        _ => m.to_string(),
    }
}

pub fn backend_error(url: &str, what: &str, name: &str, e: opendal::Error) -> Error {
    let cause = match e.kind() {
        _ if e.to_string().contains("status: 404") => "not found",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::NotFound => "not found",
        ErrorKind::ConfigInvalid => "configuration rejected",
        ErrorKind::RateLimited => "rate limited",
        ErrorKind::Unsupported => "not supported by the service",
        _ => "failed",
    };
    let full = e.to_string();
    let mut msg = tidy_service_error(e.message());
    if let Some(i) = full.find("status: ") {
        // The HTTP status, from the error's context (its full dump is noise).
        let code: String = full[i + 8..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if !code.is_empty() && !msg.contains(&code) {
            msg = if msg.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {msg}")
            };
        }
    }
    // The underlying cause (connection refused, DNS, TLS) is in the source chain.
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    let target = if name.is_empty() {
        String::new()
    } else {
        format!(" {name}")
    };
    Error::Backend {
        url: url.to_string(),
        reason: if msg.is_empty() {
            format!("{what}{target}: {cause}")
        } else {
            format!("{what}{target}: {cause}: {}", one_line(&msg))
        },
        transient: e.is_temporary() || e.kind() == ErrorKind::RateLimited,
    }
}

// ------------------------------------------------------------------ S3

/// Whether the first part of an `s3://X/...` URL is a host (duplicity 0.8's
/// boto form `s3://s3.amazonaws.com/bucket`) rather than a bucket (3.x).
fn looks_like_s3_host(h: &str) -> bool {
    let h = h.to_ascii_lowercase();
    h.contains(':')
        || h.parse::<std::net::IpAddr>().is_ok()
        || h.ends_with(".amazonaws.com")
        || h == "localhost"
        // s3.example.org, but not a bucket named s3-backups
        || ((h.starts_with("s3.") || h.starts_with("s3-")) && h.matches('.').count() >= 2)
        || h.contains(".s3.")
}

fn s3_spec(u: &Url, opts: &BackendOptions) -> std::result::Result<Spec, String> {
    let mut parts: Vec<String> = u
        .host_and_segments()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let hostport = match u.port {
        Some(p) => format!("{}:{p}", u.host),
        None => u.host.clone(),
    };
    let mut endpoint = opts.s3.endpoint_url.clone();
    if u.scheme != "boto3+s3"
        && !u.host.is_empty()
        && parts.len() > 1
        && looks_like_s3_host(&hostport)
    {
        parts.remove(0);
        if endpoint.is_none() {
            let scheme = if u.scheme == "s3+http" || opts.s3.unencrypted_connection {
                "http"
            } else {
                "https"
            };
            endpoint = Some(format!("{scheme}://{hostport}"));
        }
    }
    if parts.is_empty() {
        return Err("S3 requires a bucket name (s3://BUCKET/PREFIX)".into());
    }
    let bucket = parts.remove(0);
    let root = format!("/{}", parts.join("/"));
    // s3.eu-central-1.amazonaws.com / s3-eu-west-1.amazonaws.com
    let host_region = endpoint.as_deref().and_then(|e| {
        let h = e.split("://").nth(1).unwrap_or(e);
        let r = h
            .strip_suffix(".amazonaws.com")?
            .trim_start_matches("s3.")
            .trim_start_matches("s3-")
            .to_string();
        (!r.is_empty() && r != "s3" && !r.contains('.')).then_some(r)
    });
    let region = opts
        .s3
        .region_name
        .clone()
        .or(host_region)
        .or_else(|| env_var("AWS_REGION"))
        .or_else(|| env_var("AWS_DEFAULT_REGION"))
        .or_else(|| opts.s3.european_buckets.then(|| "eu-west-1".to_string()))
        .unwrap_or_else(|| "us-east-1".to_string());
    let mut c = kv(&[("bucket", &bucket), ("root", &root), ("region", &region)]);
    if let Some(mut e) = endpoint {
        if !e.contains("://") {
            e = format!(
                "{}://{e}",
                if opts.s3.unencrypted_connection {
                    "http"
                } else {
                    "https"
                }
            );
        }
        c.push(("endpoint".into(), e));
    }
    let key = env_var("AWS_ACCESS_KEY_ID").or_else(|| u.user.clone());
    let secret = env_var("AWS_SECRET_ACCESS_KEY").or_else(|| u.password.clone());
    if let (Some(k), Some(s)) = (key, secret) {
        c.push(("access_key_id".into(), k));
        c.push(("secret_access_key".into(), s));
        if let Some(t) = env_var("AWS_SESSION_TOKEN") {
            c.push(("session_token".into(), t));
        }
        // Explicit keys: no profile files may change the result.
        c.push(("disable_config_load".into(), "true".into()));
    } else if let Some(p) = env_var("AWS_PROFILE") {
        c.push(("profile".into(), p));
    }
    if opts.s3.use_new_style {
        c.push(("enable_virtual_host_style".into(), "true".into()));
    }
    match &opts.s3.sse {
        Some(SseMode::Aes256) => c.push(("server_side_encryption".into(), "AES256".into())),
        Some(SseMode::Kms(id)) => {
            c.push(("server_side_encryption".into(), "aws:kms".into()));
            c.push(("server_side_encryption_aws_kms_key_id".into(), id.clone()));
        }
        None => {}
    }
    let mut s = spec::<services::S3>(Kind::S3, c);
    if let Some(class) = &opts.s3.storage_class {
        // duplicity keeps manifests and signatures readable (STANDARD) even
        // when volumes go to an archive class.
        let archive = ["GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"].contains(&class.as_str());
        if archive {
            s.volume_config
                .push(("default_storage_class".into(), class.clone()));
        } else {
            s.config
                .push(("default_storage_class".into(), class.clone()));
        }
    }
    Ok(s)
}

#[derive(Clone, Debug)]
pub enum SseMode {
    Aes256,
    Kms(String),
}

fn gs_spec(u: &Url) -> std::result::Result<Spec, String> {
    let parts = u.host_and_segments();
    let Some((bucket, rest)) = parts.split_first() else {
        return Err("gs:// requires a bucket name (gs://BUCKET/PREFIX)".into());
    };
    let root = format!("/{}", rest.join("/"));
    // duplicity 0.8's boto used HMAC keys through GCS's S3-compatible API.
    if let (Some(k), Some(s)) = (env_var("GS_ACCESS_KEY_ID"), env_var("GS_SECRET_ACCESS_KEY")) {
        return Ok(spec::<services::S3>(
            Kind::S3,
            kv(&[
                ("bucket", bucket),
                ("root", &root),
                ("region", "auto"),
                ("endpoint", "https://storage.googleapis.com"),
                ("access_key_id", &k),
                ("secret_access_key", &s),
                ("disable_config_load", "true"),
            ]),
        ));
    }
    let mut c = kv(&[("bucket", bucket), ("root", &root)]);
    if let Some(p) = env_var("GOOGLE_APPLICATION_CREDENTIALS") {
        c.push(("credential_path".into(), p));
    }
    Ok(spec::<services::Gcs>(Kind::Other, c))
}

// ----------------------------------------------------------------- SFTP

/// `--ssh-options` as ssh's `-o` list: (lowercased key, value).
pub fn ssh_options(opts: &BackendOptions) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let words: Vec<String> = opts
        .ssh_options
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let opt = if let Some(o) = w.strip_prefix("-o") {
            if o.is_empty() {
                i += 1;
                words.get(i).cloned().unwrap_or_default()
            } else {
                o.to_string()
            }
        } else if w == "-i" {
            i += 1;
            format!("IdentityFile={}", words.get(i).cloned().unwrap_or_default())
        } else {
            String::new()
        };
        if let Some((k, v)) = opt.split_once('=').or_else(|| opt.split_once(' ')) {
            out.push((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ));
        }
        i += 1;
    }
    out
}

fn sftp_spec(u: &Url, opts: &BackendOptions) -> std::result::Result<Spec, String> {
    if u.host.is_empty() {
        return Err("no host (sftp://[user@]host[:port]/path)".into());
    }
    let o = ssh_options(opts);
    let get = |k: &str| {
        o.iter()
            .rev()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
    };
    let user = u.user.clone().or_else(|| get("user"));
    let port = u.port.or_else(|| get("port").and_then(|p| p.parse().ok()));
    let mut endpoint = String::from("ssh://");
    if let Some(user) = &user {
        endpoint.push_str(user);
        endpoint.push('@');
    }
    endpoint.push_str(&u.host);
    if let Some(p) = port {
        endpoint.push_str(&format!(":{p}"));
    }
    let strategy = match get("stricthostkeychecking").as_deref() {
        Some("no") | Some("off") => "accept",
        Some("accept-new") => "add",
        _ => "strict",
    };
    if u.password.is_some() || super::password().is_some() {
        tracing::warn!(
            "SSH password log-in is not supported; dupr uses keys (--ssh-options=-oIdentityFile=…) and the ssh agent"
        );
    }
    let root = if u.path.starts_with('/') {
        u.path.clone()
    } else {
        // Relative to the login directory, which only the server knows.
        let home = sftp_home(u, user.as_deref(), port, opts)?;
        format!("{}/{}", home.trim_end_matches('/'), u.path)
    };
    let mut c = kv(&[
        ("endpoint", &endpoint),
        ("root", &root),
        ("known_hosts_strategy", strategy),
    ]);
    if let Some(k) = get("identityfile") {
        c.push(("key".into(), k));
    }
    Ok(spec::<services::Sftp>(Kind::Sftp, c))
}

/// The login directory, from the system sftp client (which also works for
/// accounts limited to SFTP).
fn sftp_home(
    u: &Url,
    user: Option<&str>,
    port: Option<u16>,
    opts: &BackendOptions,
) -> std::result::Result<String, String> {
    let mut cmd = std::process::Command::new("sftp");
    cmd.arg("-q").arg("-b").arg("-");
    if let Some(p) = port {
        cmd.arg("-P").arg(p.to_string());
    }
    for (k, v) in ssh_options(opts) {
        cmd.arg("-o").arg(format!("{k}={v}"));
    }
    cmd.arg("-o").arg("BatchMode=yes");
    cmd.arg("-o")
        .arg(format!("ConnectTimeout={}", opts.timeout.as_secs().max(1)));
    let dest = match user {
        Some(usr) => format!("{usr}@{}", u.host),
        None => u.host.clone(),
    };
    cmd.arg(dest);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the sftp client (needed for SSH targets): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"pwd\n");
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("sftp client: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("Remote working directory: ") {
            return Ok(d.trim().to_string());
        }
    }
    Err(format!(
        "cannot log in over SSH: {}",
        one_line(&String::from_utf8_lossy(&out.stderr))
    ))
}

// --------------------------------------------------------------- WebDAV

fn webdav_spec(u: &Url, opts: &BackendOptions) -> std::result::Result<Spec, String> {
    if u.host.is_empty() {
        return Err("no host (webdav://[user@]host[:port]/path)".into());
    }
    let tls = matches!(u.scheme.as_str(), "webdavs" | "https" | "lftp+webdavs");
    let mut endpoint = format!("{}://{}", if tls { "https" } else { "http" }, u.host);
    if let Some(p) = u.port {
        endpoint.push_str(&format!(":{p}"));
    }
    let mut c = kv(&[
        ("endpoint", &endpoint),
        ("root", &format!("/{}", u.segments().join("/"))),
    ]);
    if let Some(user) = &u.user {
        c.push(("username".into(), user.clone()));
        if let Some(p) = u.password.clone().or_else(super::password) {
            c.push(("password".into(), p));
        }
    }
    let mut s = spec::<services::Webdav>(Kind::Webdav, c);
    s.headers = opts.webdav_headers.clone();
    Ok(s)
}

// ------------------------------------------------------------- OneDrive

fn onedrive_spec(u: &Url) -> std::result::Result<Spec, String> {
    let root = format!("/{}", u.host_and_segments().join("/"));
    let mut c = kv(&[("root", &root)]);
    let token_file = env_var("DUPLICITY_ONEDRIVE_TOKEN").ok_or(
        "DUPLICITY_ONEDRIVE_TOKEN is not set (the path of duplicity's OneDrive token file)",
    )?;
    let text = std::fs::read_to_string(&token_file)
        .map_err(|e| format!("DUPLICITY_ONEDRIVE_TOKEN {token_file}: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("DUPLICITY_ONEDRIVE_TOKEN {token_file}: not JSON: {e}"))?;
    if let Some(rt) = v["refresh_token"].as_str() {
        c.push(("refresh_token".into(), rt.into()));
        let id = env_var("DUPLICITY_ONEDRIVE_CLIENT_ID")
            .ok_or("DUPLICITY_ONEDRIVE_CLIENT_ID is not set (needed to refresh the token)")?;
        c.push(("client_id".into(), id));
    } else if let Some(at) = v["access_token"].as_str() {
        c.push(("access_token".into(), at.into()));
    } else {
        return Err(format!(
            "DUPLICITY_ONEDRIVE_TOKEN {token_file}: no access_token or refresh_token"
        ));
    }
    Ok(spec::<services::Onedrive>(Kind::Other, c))
}

// ------------------------------------------------------------------- B2

/// `b2://KEY_ID[:KEY]@BUCKET/DIR`: OpenDAL wants the bucket's id, which the
/// B2 API gives for its name.
async fn b2_config(u: &Url, tp: &HttpTransporter) -> std::result::Result<Kv, String> {
    let id = u
        .user
        .clone()
        .ok_or("b2:// needs the application key id: b2://KEY_ID[:KEY]@BUCKET/DIR")?;
    let key = u
        .password
        .clone()
        .or_else(super::password)
        .ok_or("no B2 application key (in the URL or BACKEND_PASSWORD)")?;
    let bucket = u.host.clone();
    if bucket.is_empty() {
        return Err("b2:// needs a bucket: b2://KEY_ID[:KEY]@BUCKET/DIR".into());
    }
    let root = format!("/{}", u.segments().join("/"));
    let bucket_id = match env_var("B2_BUCKET_ID") {
        Some(b) => b,
        None => {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"));
            let req =
                http::Request::get("https://api.backblazeb2.com/b2api/v2/b2_authorize_account")
                    .header("Authorization", format!("Basic {basic}"))
                    .body(Buffer::new())
                    .map_err(|e| e.to_string())?;
            let auth = json_reply(tp, req, "B2 log-in").await?;
            let api = auth["apiUrl"].as_str().unwrap_or_default();
            let token = auth["authorizationToken"].as_str().unwrap_or_default();
            let account = auth["accountId"].as_str().unwrap_or_default();
            let body = serde_json::json!({"accountId": account, "bucketName": bucket}).to_string();
            let req = http::Request::post(format!("{api}/b2api/v2/b2_list_buckets"))
                .header("Authorization", token)
                .body(Buffer::from(body))
                .map_err(|e| e.to_string())?;
            let list = json_reply(tp, req, "B2 bucket lookup").await?;
            list["buckets"][0]["bucketId"]
                .as_str()
                .ok_or(format!("B2 bucket {bucket:?} not found"))?
                .to_string()
        }
    };
    Ok(kv(&[
        ("root", &root),
        ("bucket", &bucket),
        ("bucket_id", &bucket_id),
        ("application_key_id", &id),
        ("application_key", &key),
    ]))
}

pub(super) async fn json_reply(
    tp: &HttpTransporter,
    req: http::Request<Buffer>,
    what: &str,
) -> std::result::Result<serde_json::Value, String> {
    let resp = tp
        .send(req)
        .await
        .map_err(|e| format!("{what}: {}", one_line(&e.to_string())))?;
    let body = resp.body().to_bytes();
    if !resp.status().is_success() {
        return Err(format!(
            "{what}: HTTP {}: {}",
            resp.status(),
            one_line(&String::from_utf8_lossy(&body))
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{what}: reply is not JSON: {e}"))
}

// ---------------------------------------------------------------- Azure

fn azure_spec(u: &Url) -> std::result::Result<Spec, String> {
    let parts = u.host_and_segments();
    let Some((container, rest)) = parts.split_first() else {
        return Err("azure:// needs a container: azure://CONTAINER[/PREFIX]".into());
    };
    let mut c = kv(&[
        ("container", container),
        ("root", &format!("/{}", rest.join("/"))),
    ]);
    let mut account = env_var("AZURE_ACCOUNT_NAME");
    let mut key = env_var("AZURE_ACCOUNT_KEY");
    let mut sas = env_var("AZURE_SHARED_ACCESS_SIGNATURE");
    let mut endpoint = None;
    if let Some(cs) = env_var("AZURE_CONNECTION_STRING") {
        let mut protocol = "https".to_string();
        let mut suffix = "core.windows.net".to_string();
        for part in cs.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim() {
                "AccountName" => account = Some(v.to_string()),
                "AccountKey" => key = Some(v.to_string()),
                "SharedAccessSignature" => sas = Some(v.to_string()),
                "BlobEndpoint" => endpoint = Some(v.trim_end_matches('/').to_string()),
                "DefaultEndpointsProtocol" => protocol = v.to_string(),
                "EndpointSuffix" => suffix = v.to_string(),
                _ => {}
            }
        }
        if endpoint.is_none() {
            if let Some(a) = &account {
                endpoint = Some(format!("{protocol}://{a}.blob.{suffix}"));
            }
        }
    }
    let Some(account) = account else {
        return Err("no Azure account: set AZURE_CONNECTION_STRING (or AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_KEY)".into());
    };
    let endpoint = endpoint.unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    c.push(("account_name".into(), account));
    c.push(("endpoint".into(), endpoint));
    if let Some(k) = key {
        c.push(("account_key".into(), k));
    }
    if let Some(s) = sas {
        c.push(("sas_token".into(), s));
    }
    Ok(spec::<services::Azblob>(Kind::Other, c))
}

// ---------------------------------------------------------------- Swift

fn swift_spec(u: &Url) -> std::result::Result<Spec, String> {
    let parts = u.host_and_segments();
    let Some((container, rest)) = parts.split_first() else {
        return Err("swift:// needs a container: swift://CONTAINER[/PREFIX]".into());
    };
    let (Some(endpoint), Some(token)) =
        (env_var("SWIFT_PREAUTHURL"), env_var("SWIFT_PREAUTHTOKEN"))
    else {
        return Err("swift:// needs SWIFT_PREAUTHURL and SWIFT_PREAUTHTOKEN (dupr does not log in to Keystone with SWIFT_USERNAME/SWIFT_PASSWORD)".into());
    };
    Ok(spec::<services::Swift>(
        Kind::Other,
        kv(&[
            ("endpoint", &endpoint),
            ("container", container),
            ("root", &format!("/{}", rest.join("/"))),
            ("token", &token),
        ]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(url: &str, opts: &BackendOptions) -> Kv {
        s3_spec(&Url::parse(url).unwrap(), opts).unwrap().config
    }

    fn get<'a>(c: &'a Kv, k: &str) -> Option<&'a str> {
        c.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn s3_url_forms() {
        let o = BackendOptions::default();
        let c = s3("s3+http://bucket/prefix/dir", &o);
        assert_eq!(get(&c, "bucket"), Some("bucket"));
        assert_eq!(get(&c, "root"), Some("/prefix/dir"));
        assert_eq!(get(&c, "endpoint"), None);
        let c = s3("s3:///bucket/p", &o);
        assert_eq!(
            (get(&c, "bucket"), get(&c, "root")),
            (Some("bucket"), Some("/p"))
        );
        let c = s3("boto3+s3://bucket", &o);
        assert_eq!(
            (get(&c, "bucket"), get(&c, "root")),
            (Some("bucket"), Some("/"))
        );
        // duplicity 0.8's host form
        let c = s3("s3://s3.eu-central-1.amazonaws.com/bucket/p", &o);
        assert_eq!(get(&c, "bucket"), Some("bucket"));
        assert_eq!(
            get(&c, "endpoint"),
            Some("https://s3.eu-central-1.amazonaws.com")
        );
        let c = s3("s3+http://127.0.0.1:3900/bucket/p", &o);
        assert_eq!(get(&c, "endpoint"), Some("http://127.0.0.1:3900"));
        // A bucket with dots is still a bucket.
        let c = s3("s3://my.bucket/p", &o);
        assert_eq!(get(&c, "bucket"), Some("my.bucket"));
        let mut o = BackendOptions::default();
        o.s3.european_buckets = true;
        o.s3.endpoint_url = Some("127.0.0.1:9000".into());
        o.s3.unencrypted_connection = true;
        let c = s3("s3://b", &o);
        assert_eq!(get(&c, "endpoint"), Some("http://127.0.0.1:9000"));
        if env_var("AWS_REGION").is_none() && env_var("AWS_DEFAULT_REGION").is_none() {
            assert_eq!(get(&c, "region"), Some("eu-west-1"));
        }
        assert!(s3_spec(&Url::parse("s3:///").unwrap(), &o).is_err());
    }

    #[test]
    fn ssh_option_forms() {
        let o = BackendOptions {
            ssh_options: vec![
                "-oIdentityFile=/k -o StrictHostKeyChecking=no".into(),
                "-i /k2".into(),
            ],
            ..Default::default()
        };
        let v = ssh_options(&o);
        assert_eq!(
            v,
            vec![
                ("identityfile".to_string(), "/k".to_string()),
                ("stricthostkeychecking".to_string(), "no".to_string()),
                ("identityfile".to_string(), "/k2".to_string()),
            ]
        );
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(one_line("a\n  b\tc\n"), "a b c");
    }
}
