//! Storage backends. Every upload is complete or absent: data goes under a
//! temporary name and is renamed into place, or to a service whose writes
//! are atomic; its stored size is checked before it counts as done.
//!
//! The engine defines the [`Backend`] trait and serves `file://` (and
//! `fortestsonly://`, duplicity's test backend) itself; every other scheme
//! is in the dupr-backend crate (OpenDAL), which hands the engine a
//! `Backend`. Each backend is wrapped in [`retry::Retrying`] (retries
//! with exponential backoff on transient errors, size checks), and, for
//! tests, in [`fault::Faulty`] (`DUPR_FAULTS`), by [`wrap`].

pub mod fault;
pub mod retry;
pub mod url;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};

/// A storage target: one flat directory of backup files, by name. Methods
/// block; implementations are shared between threads.
pub trait Backend: Send + Sync {
    /// The URL for messages (secrets redacted).
    fn display_url(&self) -> String;
    /// Names of the files at the target (not recursive).
    fn list(&self) -> Result<Vec<String>>;
    /// Store the local file `local` as `name`. On success `local` may be
    /// gone (moved into place); on failure it is left as it was.
    fn put(&self, local: &Path, name: &str) -> Result<()>;
    /// Open `name` for streaming reads.
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>>;
    /// Download `name` whole into the local file `local`.
    fn get(&self, name: &str, local: &Path) -> Result<()> {
        let mut r = self.open(name)?;
        let mut f = File::create(local).ctx(local)?;
        std::io::copy(&mut r, &mut f).map_err(|e| Error::Backend {
            url: self.display_url(),
            reason: format!("download {name}: {e}"),
            transient: true,
            source: None,
        })?;
        Ok(())
    }
    /// `len` bytes of `name` from `offset` (a ranged GET on object stores,
    /// a seek elsewhere). The default reads and drops what comes before.
    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut r = self.open(name)?;
        let io = |e: std::io::Error| Error::Backend {
            url: self.display_url(),
            reason: format!("read {name}: {e}"),
            transient: true,
            source: None,
        };
        std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink()).map_err(io)?;
        let mut v = Vec::new();
        r.take(len).read_to_end(&mut v).map_err(io)?;
        Ok(v)
    }
    /// A hint that these files will be read soon (remote backends start
    /// downloading them in the background).
    fn prefetch(&self, _names: &[String]) {}
    /// The same backend without retries (for best-effort bookkeeping that
    /// must not hold a failing run up).
    fn without_retries(&self) -> &dyn Backend;
    /// The stored size of `name`; None when it does not exist.
    fn size(&self, name: &str) -> Result<Option<u64>>;
    /// Store `local` as `name` only if nothing is stored under that name:
    /// Ok(true) when created, Ok(false) when it existed. Atomic where
    /// [`Backend::atomic_create`] says so, else a check and then a write.
    fn put_new(&self, local: &Path, name: &str) -> Result<bool> {
        put_new_best_effort(self, local, name)
    }
    /// Whether [`Backend::put_new`] is one atomic step on the service (two
    /// runs creating the same name at once: exactly one succeeds).
    fn atomic_create(&self) -> bool {
        false
    }
    /// A local path to `name` when the backend is a local directory, so
    /// reads need no copy.
    fn local_path(&self, name: &str) -> Option<PathBuf>;
    /// Remove `name`; one that is already gone is not an error.
    fn delete(&self, name: &str) -> Result<()>;
    /// Where to write files that `put` can then move without copying.
    fn staging_dir(&self) -> Option<PathBuf>;
}

/// S3 options (duplicity's `--s3-*`).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// `--s3-endpoint-url`: the service's address, for S3-compatible stores.
    pub endpoint_url: Option<String>,
    /// `--s3-region-name`; without it the endpoint's region, else
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`, else us-east-1.
    pub region_name: Option<String>,
    /// `--s3-unencrypted-connection`: plain HTTP to the endpoint.
    pub unencrypted_connection: bool,
    /// `--s3-use-new-style`: virtual-host-style bucket addressing.
    pub use_new_style: bool,
    /// `--s3-european-buckets`: region eu-west-1 when nothing else names one.
    pub european_buckets: bool,
    /// STANDARD_IA, GLACIER, ... (manifests and signatures stay STANDARD
    /// for the archive classes, as duplicity does).
    pub storage_class: Option<String>,
    /// Server-side encryption of stored objects; None for the bucket's default.
    pub sse: Option<SseMode>,
}

/// S3 server-side encryption (`--s3-use-server-side-encryption`,
/// `--s3-use-server-side-kms-encryption` with its key id).
#[derive(Clone, Debug)]
pub enum SseMode {
    /// SSE-S3: AES-256 with keys the service manages.
    Aes256,
    /// SSE-KMS with this KMS key id.
    Kms(String),
}

/// How backends behave: retries, timeouts, parallelism and each service's
/// options. Credentials come from the environment, as duplicity reads them.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Attempts after the first, for transient errors.
    pub num_retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub retry_delay: Duration,
    /// Connect/read inactivity limit of one request.
    pub timeout: Duration,
    /// Volumes uploaded or downloaded at once.
    pub concurrency: usize,
    /// Where downloads are staged.
    pub tempdir: PathBuf,
    /// The S3 options.
    pub s3: S3Options,
    /// `--s3-multipart-chunk-size`: bytes per part of an S3 upload (at least
    /// 5 MiB).
    pub s3_multipart_chunk_size: u64,
    /// `--s3-multipart-max-procs`: parts of one S3 upload sent at once.
    pub s3_multipart_max_procs: usize,
    /// `--ssh-options` as given, for sftp targets (each may hold several
    /// `-oKey=value` words).
    pub ssh_options: Vec<String>,
    /// `--ssl-cacert-file`: CA certificates (PEM) to trust for HTTPS.
    pub ssl_cacert_file: Option<PathBuf>,
    /// `--ssl-cacert-path`: a directory of CA certificates to trust for HTTPS.
    pub ssl_cacert_path: Option<PathBuf>,
    /// `--ssl-no-check-certificate`: accept any server certificate.
    pub ssl_no_check_certificate: bool,
    /// `--webdav-headers`: extra headers (name, value) on WebDAV requests.
    pub webdav_headers: Vec<(String, String)>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            num_retries: 5,
            retry_delay: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            concurrency: 1,
            tempdir: std::env::temp_dir(),
            s3: S3Options::default(),
            s3_multipart_chunk_size: 8 << 20,
            s3_multipart_max_procs: 2,
            ssh_options: Vec::new(),
            ssl_cacert_file: None,
            ssl_cacert_path: None,
            ssl_no_check_certificate: false,
            webdav_headers: Vec::new(),
        }
    }
}

/// [`Backend::put_new`] where the service has no exclusive create: a
/// window between the check and the write remains (the target lock
/// narrows it with a read-back after a settle delay).
pub fn put_new_best_effort<B: Backend + ?Sized>(b: &B, local: &Path, name: &str) -> Result<bool> {
    if b.size(name)?.is_some() {
        return Ok(false);
    }
    b.put(local, name)?;
    Ok(true)
}

/// An environment variable, when set and not empty.
pub fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// duplicity's backend password: `BACKEND_PASSWORD`, else 0.8's `FTP_PASSWORD`.
pub fn password() -> Option<String> {
    env_var("BACKEND_PASSWORD").or_else(|| env_var("FTP_PASSWORD"))
}

/// Open a local target: `file://PATH`, or duplicity's `fortestsonly://PATH`
/// (a local directory whose faults come from the `DUP_FAIL_*` variables its
/// test suite sets), wrapped as [`wrap`] does. None for any other scheme
/// (dupr-backend serves those).
pub fn open_local(url: &str, opts: &BackendOptions) -> Result<Option<Arc<dyn Backend>>> {
    let bad = |reason: &str| Error::BadUrl {
        url: redact(url),
        reason: reason.to_string(),
    };
    let (faults, rest) = match url.split_once("://") {
        Some(("file", rest)) => (String::new(), rest),
        Some(("fortestsonly", rest)) => {
            let rules = fault::duplicity_test_rules().map_err(|e| Error::Usage(e.to_string()))?;
            (rules, rest)
        }
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Err(bad("no path"));
    }
    let local = Box::new(Local::new(PathBuf::from(rest), url));
    wrap(local, opts, &faults).map(Some)
}

/// `inner` as the engine uses every backend: with retries on transient
/// errors and size checks, and in test builds the faults of `DUPR_FAULTS`
/// (plus `faults`, rules in the same syntax).
pub fn wrap(
    inner: Box<dyn Backend>,
    opts: &BackendOptions,
    faults: &str,
) -> Result<Arc<dyn Backend>> {
    let inner = match fault::Faulty::from_env(inner, opts.timeout, faults)? {
        Ok(f) => Box::new(f) as Box<dyn Backend>,
        Err(b) => b,
    };
    Ok(Arc::new(retry::Retrying::new(inner, opts)))
}

/// Replace a password in `scheme://user:pass@host` with `***`.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let auth_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
            }
        }
    }
    url.to_string()
}

/// A `file://` target: a local directory.
pub struct Local {
    dir: PathBuf,
    url: String,
}

impl Local {
    /// The directory `dir`, shown as `url` (its password redacted).
    pub fn new(dir: PathBuf, url: &str) -> Self {
        Local {
            dir,
            url: redact(url),
        }
    }

    fn ensure_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).ctx(&self.dir)
    }
}

impl Backend for Local {
    fn without_retries(&self) -> &dyn Backend {
        self
    }

    fn display_url(&self) -> String {
        self.url.clone()
    }

    fn list(&self) -> Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut out = Vec::new();
        for de in rd {
            let de = de.ctx(&self.dir)?;
            if let Ok(name) = de.file_name().into_string() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn put(&self, local: &Path, name: &str) -> Result<()> {
        self.ensure_dir()?;
        let dest = self.dir.join(name);
        if std::fs::rename(local, &dest).is_ok() {
            return Ok(());
        }
        // Different filesystem: copy to a temporary name, then rename.
        let tmp = self.dir.join(crate::temp_name(name));
        std::fs::copy(local, &tmp).ctx(&tmp)?;
        File::open(&tmp).and_then(|f| f.sync_all()).ctx(&tmp)?;
        std::fs::rename(&tmp, &dest).ctx(&dest)?;
        let _ = std::fs::remove_file(local);
        Ok(())
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.dir.join(name);
        match File::open(&p) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::MissingVolume {
                name: name.to_string(),
            }),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        let p = self.dir.join(name);
        // Missing is a missing volume, as for `open` (exit 53, not an I/O error).
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingVolume {
                    name: name.to_string(),
                })
            }
            Err(e) => return Err(Error::io(p, e)),
        };
        f.seek(SeekFrom::Start(offset)).ctx(&p)?;
        let mut v = Vec::new();
        f.take(len).read_to_end(&mut v).ctx(&p)?;
        Ok(v)
    }

    fn size(&self, name: &str) -> Result<Option<u64>> {
        let p = self.dir.join(name);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.join(name))
    }

    fn put_new(&self, local: &Path, name: &str) -> Result<bool> {
        use std::io::Write;
        self.ensure_dir()?;
        let dest = self.dir.join(name);
        // Written whole under a private name, then linked into place:
        // link() refuses an existing name atomically, and a reader never
        // sees a half-written object. Not `.dupr-tmp.`: those are only
        // written under the target lock.
        let tmp = self
            .dir
            .join(format!(".dupr-new.{}.{name}", std::process::id()));
        std::fs::copy(local, &tmp).ctx(&tmp)?;
        File::open(&tmp).and_then(|f| f.sync_all()).ctx(&tmp)?;
        let linked = std::fs::hard_link(&tmp, &dest);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            // No hard links on this file system (some FUSE and SMB
            // mounts): O_EXCL, equally exclusive, briefly short to readers.
            Err(_) => {}
        }
        let data = std::fs::read(local).ctx(local)?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
        {
            Ok(mut f) => {
                f.write_all(&data).and_then(|_| f.sync_all()).ctx(&dest)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(dest, e)),
        }
    }

    fn atomic_create(&self) -> bool {
        true
    }

    fn delete(&self, name: &str) -> Result<()> {
        let p = self.dir.join(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
            _ => Ok(()),
        }
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        self.ensure_dir().ok()?;
        Some(self.dir.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = BackendOptions::default();
        assert!(open_local("file:///tmp/x", &o).unwrap().is_some());
        assert!(open_local("s3://bucket/x", &o).unwrap().is_none());
        assert!(matches!(
            open_local("file://", &o),
            Err(Error::BadUrl { .. })
        ));
        assert_eq!(redact("sftp://u:pw@h/x"), "sftp://u:***@h/x");
    }

    /// A file that is not there is a missing volume whether it is read
    /// whole or by ranges (through the retry wrapper too).
    #[test]
    fn a_missing_file_is_a_missing_volume_however_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("there"), b"0123456789").unwrap();
        let url = format!("file://{}", dir.path().display());
        let b = open_local(&url, &BackendOptions::default())
            .unwrap()
            .unwrap();
        assert_eq!(b.read_range("there", 2, 3).unwrap(), b"234");
        assert!(matches!(
            b.read_range("gone", 0, 4),
            Err(Error::MissingVolume { name }) if name == "gone"
        ));
        assert!(matches!(b.open("gone"), Err(Error::MissingVolume { .. })));
    }
}
