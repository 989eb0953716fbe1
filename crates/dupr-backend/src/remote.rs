//! Remote targets through Apache OpenDAL: the operator for a scheme's
//! service (`services.rs`), uploads and downloads (the HTTP
//! transport and errors are in `http.rs`).
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
use opendal::{services, Buffer, ErrorKind, HttpTransporter, Operator};

use crate::http::{
    backend_error, download_error, one_line, request_error, stream_error, transport, SetupError,
};
use crate::services::{
    azure_spec, b2_config, gs_spec, kv, onedrive_spec, s3_spec, sftp_spec, spec, swift_spec,
    webdav_spec, Kind, Kv,
};
use dupr_core::backend::url::Url;
use dupr_core::backend::{env_var, redact, Backend, BackendOptions};
use dupr_core::error::{Error, IoContext, Result};

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

/// A target on a storage service: an OpenDAL operator for the scheme's
/// service on a small tokio runtime of its own (the engine is synchronous).
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

impl Remote {
    /// Connect to the target of `u` (`raw` is the URL as given, shown with
    /// its password redacted); services that log in (B2, Google Drive)
    /// do so here.
    pub fn open(u: &Url, raw: &str, opts: &BackendOptions) -> Result<Remote> {
        let display = redact(raw);
        let bad = |e: SetupError| e.at(&display);
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
                    .block_on(crate::google::drive_auth(u, &pre_transport))
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
                )
                .into()))
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
            let op = (s.build)(c).map_err(|e| bad(one_line(&e.to_string()).into()))?;
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
                let n = match dupr_core::stream::read_full(&mut f, &mut buf) {
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
            source: None,
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
            match dupr_core::stream::read_full(&mut f, &mut buf) {
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
            source: None,
        };
        loop {
            let mut buf = vec![0u8; chunk.min(size - offset) as usize];
            let n = dupr_core::stream::read_full(&mut f, &mut buf).ctx(local)?;
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
            dupr_core::temp_name(name)
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

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.rt.block_on(async {
            let b = self
                .op
                .read_with(name)
                .range(offset..offset + len)
                .await
                .map_err(|e| self.err("download", name, e))?;
            Ok(b.to_vec())
        })
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

    fn put_new(&self, local: &Path, name: &str) -> Result<bool> {
        if !self.atomic_create() {
            return dupr_core::backend::put_new_best_effort(self, local, name);
        }
        // S3 `If-None-Match: *`, SFTP's exclusive open, Azure/GCS
        // preconditions: the service refuses an existing name.
        let data = std::fs::read(local).ctx(local)?;
        match self
            .rt
            .block_on(async { self.op.write_with(name, data).if_not_exists(true).await })
        {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("create", name, e)),
        }
    }

    fn atomic_create(&self) -> bool {
        self.op.info().capability().write_with_if_not_exists
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

fn dropbox_oneshot_max() -> u64 {
    dupr_core::test_hook("DUPR_DPBX_CHUNK_SIZE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DROPBOX_ONESHOT_MAX)
}

fn dropbox_chunk() -> u64 {
    dupr_core::test_hook("DUPR_DPBX_CHUNK_SIZE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DROPBOX_CHUNK)
        .max(1)
}
