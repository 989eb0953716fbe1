//! Retries with exponential backoff around any backend, and the check that
//! every upload and download has the size the service reports.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Backend, BackendOptions};
use crate::error::{Error, IoContext, Result};

/// The longest wait between two attempts (unless --backend-retry-delay is
/// longer itself).
const MAX_DELAY: Duration = Duration::from_secs(120);

/// A backend whose transient failures are retried, the wait doubling each
/// time up to two minutes, and whose uploads and downloads are checked
/// against the stored size.
pub struct Retrying {
    inner: Box<dyn Backend>,
    retries: u32,
    delay: Duration,
}

impl Retrying {
    /// `inner` with `opts`' retry count and first delay.
    pub fn new(inner: Box<dyn Backend>, opts: &BackendOptions) -> Self {
        Retrying {
            inner,
            retries: opts.num_retries,
            delay: opts.retry_delay,
        }
    }

    fn run<T>(&self, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 0u32;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    let wait = self
                        .delay
                        .saturating_mul(1 << (attempt - 1).min(16))
                        .min(MAX_DELAY.max(self.delay));
                    tracing::warn!(
                        "{what} failed ({e}); retry {attempt} of {} in {:.1} s",
                        self.retries,
                        wait.as_secs_f64()
                    );
                    std::thread::sleep(wait);
                }
                Err(e) if e.is_transient() && self.retries > 0 => {
                    let url = self.inner.display_url();
                    let gave_up = format!("(gave up after {} attempts)", attempt + 1);
                    return Err(match e {
                        Error::UploadMismatch { reason, .. } => Error::UploadMismatch {
                            url,
                            reason: format!("{reason} {gave_up}"),
                        },
                        Error::Backend { reason, source, .. } => Error::Backend {
                            url,
                            reason: format!("{reason} {gave_up}"),
                            transient: true,
                            source,
                        },
                        e => Error::backend(url, format!("{e} {gave_up}"), true),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn upload_mismatch(&self, name: &str, sent: u64, stored: Option<u64>) -> Error {
        Error::UploadMismatch {
            url: self.inner.display_url(),
            reason: match stored {
                Some(g) => {
                    format!("upload {name}: the stored object has {g} bytes, {sent} were sent")
                }
                None => format!("upload {name}: the object is missing afterwards"),
            },
        }
    }
}

impl Backend for Retrying {
    fn display_url(&self) -> String {
        self.inner.display_url()
    }

    fn list(&self) -> Result<Vec<String>> {
        self.run("list", || self.inner.list())
    }

    fn put(&self, local: &Path, name: &str) -> Result<()> {
        let size = std::fs::metadata(local).ctx(local)?.len();
        // Sent, not yet confirmed: a failed size check alone is retried
        // without sending again (a local put has moved the file away).
        let mut sent = false;
        self.run(&format!("upload of {name}"), || {
            if !sent {
                self.inner.put(local, name)?;
                sent = true;
            }
            // Complete or absent: a short object must not count as stored.
            match self.inner.size(name)? {
                Some(s) if s == size => Ok(()),
                got => {
                    sent = false;
                    let e = self.upload_mismatch(name, size, got);
                    let _ = self.inner.delete(name);
                    Err(e)
                }
            }
        })?;
        let _ = std::fs::remove_file(local);
        Ok(())
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>> {
        self.run(&format!("download of {name}"), || self.inner.open(name))
    }

    fn get(&self, name: &str, local: &Path) -> Result<()> {
        self.run(&format!("download of {name}"), || {
            self.inner.get(name, local)?;
            let got = std::fs::metadata(local).ctx(local)?.len();
            match self.inner.size(name)? {
                Some(s) if s == got => Ok(()),
                Some(s) => {
                    let _ = std::fs::remove_file(local);
                    Err(Error::Backend {
                        url: self.inner.display_url(),
                        reason: format!("download {name}: {got} bytes arrived, the object has {s}"),
                        transient: true,
                        source: None,
                    })
                }
                None => Err(Error::MissingVolume {
                    name: name.to_string(),
                }),
            }
        })
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.run(&format!("download of {name}"), || {
            let v = self.inner.read_range(name, offset, len)?;
            if (v.len() as u64) < len {
                return Err(Error::Backend {
                    url: self.inner.display_url(),
                    reason: format!(
                        "download {name}: {} of {len} bytes at {offset} arrived",
                        v.len()
                    ),
                    transient: true,
                    source: None,
                });
            }
            Ok(v)
        })
    }

    fn prefetch(&self, names: &[String]) {
        self.inner.prefetch(names)
    }

    fn without_retries(&self) -> &dyn Backend {
        self.inner.as_ref()
    }

    fn size(&self, name: &str) -> Result<Option<u64>> {
        self.run(&format!("stat of {name}"), || self.inner.size(name))
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.inner.local_path(name)
    }

    fn put_new(&self, local: &Path, name: &str) -> Result<bool> {
        // A retry after a create whose reply was lost finds the object:
        // the caller reads it back to tell its own from another's.
        self.run(&format!("create of {name}"), || {
            self.inner.put_new(local, name)
        })
    }

    fn atomic_create(&self) -> bool {
        self.inner.atomic_create()
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.run(&format!("delete of {name}"), || self.inner.delete(name))
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        self.inner.staging_dir()
    }
}
