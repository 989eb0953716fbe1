//! dupr-backend: the storage services behind dupr's remote URLs, through
//! Apache OpenDAL (S3 and S3-compatible stores, GCS, B2, Azure, Swift,
//! SFTP, WebDAV, Dropbox, Google Drive, OneDrive).
//!
//! The engine (dupr-core) defines the [`Backend`] trait, serves `file://`
//! itself and wraps every backend in its retries; this crate adds the
//! services that need an async runtime, an HTTP client and service SDK
//! logic, so that the engine depends on none of them.

#![warn(missing_docs)]

mod google;
mod http;
pub mod remote;
mod services;

use std::sync::Arc;

use dupr_core::backend::{self, url::Url, Backend, BackendOptions};
use dupr_core::Result;

pub use http::{backend_error, one_line, ServiceError};
pub use remote::{Remote, SCHEMES};

/// Open a duplicity URL: `file://` (and duplicity's `fortestsonly://`)
/// through the engine, every other scheme through OpenDAL; wrapped in
/// retries (and, in test builds, `DUPR_FAULTS`).
pub fn open(url: &str, opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    if let Some(local) = backend::open_local(url, opts)? {
        return Ok(local);
    }
    let u = Url::parse(url)?;
    backend::wrap(Box::new(Remote::open(&u, url, opts)?), opts, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dupr_core::Error;

    #[test]
    fn urls() {
        let o = BackendOptions::default();
        assert!(open("file:///tmp/x", &o).is_ok());
        assert!(matches!(open("/tmp/x", &o), Err(Error::BadUrl { .. })));
        let e = open("foo://u:secret@h/p", &o).err().unwrap().to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(e.contains("foo") && !e.contains("secret"), "{e}");
    }
}
