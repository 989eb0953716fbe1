//! Storage backends. Every upload is complete or absent: data is written
//! under a temporary name and renamed into place.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub trait Backend: Send + Sync {
    /// The URL for messages (secrets redacted).
    fn display_url(&self) -> String;
    /// Names of the files at the target (not recursive).
    fn list(&self) -> Result<Vec<String>>;
    /// Store the local file `local` as `name`; `local` is consumed.
    fn put(&self, local: &Path, name: &str) -> Result<()>;
    /// Open `name` for streaming reads.
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>>;
    /// A local path to `name` when the backend is a local directory, so
    /// reads need no copy.
    fn local_path(&self, name: &str) -> Option<PathBuf>;
    fn delete(&self, name: &str) -> Result<()>;
    /// Where to write files that `put` can then move without copying.
    fn staging_dir(&self) -> Option<PathBuf>;
}

/// Parse a duplicity URL into a backend.
pub fn from_url(url: &str) -> Result<Box<dyn Backend>> {
    let bad = |reason: &str| Error::BadUrl {
        url: redact(url),
        reason: reason.to_string(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("not a URL (expected scheme://…, e.g. file:///path)"));
    };
    match scheme {
        "file" => {
            if rest.is_empty() {
                return Err(bad("no path"));
            }
            Ok(Box::new(Local::new(PathBuf::from(rest), url)))
        }
        s if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') && !s.is_empty() => Err(bad(
            &format!("scheme {s:?} is not supported by this build of dupr"),
        )),
        _ => Err(bad("malformed scheme")),
    }
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

pub struct Local {
    dir: PathBuf,
    url: String,
}

impl Local {
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
        let tmp = self
            .dir
            .join(format!(".dupr-tmp.{}.{name}", std::process::id()));
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

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.join(name))
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
        assert!(from_url("file:///tmp/x").is_ok());
        assert!(matches!(from_url("/tmp/x"), Err(Error::BadUrl { .. })));
        let e = from_url("foo://u:secret@h/p").err().unwrap().to_string();
        assert!(e.contains("foo") && !e.contains("secret"), "{e}");
        assert_eq!(redact("sftp://u:pw@h/x"), "sftp://u:***@h/x");
    }
}
