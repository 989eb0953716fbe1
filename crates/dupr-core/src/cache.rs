//! The local archive cache: plain manifests and gzipped sigtars of the
//! target, so listing and incrementals never download volumes. The remote is
//! authoritative; `sync` brings the cache in line with it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::backend::Backend;
use std::sync::Arc;

use crate::crypt::{self, Codec, Crypto, Encoder};
use crate::error::{Error, IoContext, Result};
use crate::naming::{self, FileType, Prefixes};

/// The cache directory of one target (duplicity's archive directory for
/// a `--name`): plain manifests and gzipped signature files.
pub struct Cache {
    dir: PathBuf,
}

/// `$XDG_CACHE_HOME/dupr`, or `~/.cache/dupr`.
pub fn default_root() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) => PathBuf::from(x).join("dupr"),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
            PathBuf::from(home).join(".cache").join("dupr")
        }
    }
}

/// duplicity's default `--name`: MD5 hex of the URL exactly as typed.
pub fn name_for_url(url: &str) -> String {
    hex::encode(Md5::digest(url.as_bytes()))
}

impl Cache {
    /// The cache of `url` under `archive_dir` (default [`default_root`]), in the
    /// subdirectory `name` (default [`name_for_url`]); created when missing.
    pub fn open(archive_dir: Option<&Path>, name: Option<&str>, url: &str) -> Result<Cache> {
        let root = archive_dir.map_or_else(default_root, Path::to_path_buf);
        let dir = root.join(name.map_or_else(|| name_for_url(url), str::to_string));
        std::fs::create_dir_all(&dir).ctx(&dir)?;
        Ok(Cache { dir })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of cache file `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The names of the files in the cache, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for de in std::fs::read_dir(&self.dir).ctx(&self.dir)? {
            let de = de.ctx(&self.dir)?;
            if let Ok(n) = de.file_name().into_string() {
                out.push(n);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The cache file name for a remote manifest or sigtar name.
    pub fn local_name(remote: &str, prefixes: &Prefixes) -> Option<String> {
        let mut p = naming::parse(remote, prefixes)?;
        match p.kind {
            FileType::Manifest => {
                p.encrypted = false;
                p.gzipped = false;
            }
            FileType::Signature | FileType::JsonStat | FileType::Blocks => {
                p.encrypted = false;
                p.gzipped = true;
            }
            FileType::Volume(_) => return None,
        }
        Some(naming::name(&p, prefixes))
    }

    /// Download remote manifests and sigtars missing here; drop cached ones
    /// the remote no longer has.
    pub fn sync(
        &self,
        backend: &dyn Backend,
        remote: &[String],
        prefixes: &Prefixes,
        crypto: Option<&Arc<Crypto>>,
    ) -> Result<()> {
        let mut wanted = std::collections::BTreeSet::new();
        for r in remote {
            let Some(p) = naming::parse(r, prefixes) else {
                continue;
            };
            if p.partial {
                continue;
            }
            let Some(local) = Self::local_name(r, prefixes) else {
                continue;
            };
            wanted.insert(local.clone());
            let lp = self.path(&local);
            // Block indexes are fetched when a restore needs one.
            if lp.exists() || p.kind == FileType::Blocks {
                continue;
            }
            let codec = Codec::for_name(p.encrypted, p.gzipped, crypto, r)?;
            let mut plain = match crypt::decoder(backend.open(r)?, &codec) {
                Ok(p) => p,
                Err(Error::WrongPassphrase) => {
                    return Err(crate::restore::wrong_passphrase_or_damaged(
                        backend,
                        r,
                        "it does not decrypt",
                        remote,
                        prefixes,
                        crypto,
                    ))
                }
                Err(e) => return Err(e),
            };
            let tmp = self.path(&crate::temp_name(&local));
            let local_codec = if matches!(p.kind, FileType::Manifest) {
                Codec::Plain
            } else {
                Codec::GZIP
            };
            let corrupt = |reason: String| match p.kind {
                FileType::Signature => Error::BadSignature {
                    name: r.clone(),
                    reason,
                },
                _ => Error::BadManifest {
                    name: r.clone(),
                    reason,
                },
            };
            let copied = (|| -> Result<()> {
                let mut enc = Encoder::create(&tmp, &local_codec).ctx(&tmp)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = plain.read(&mut buf).map_err(|e| corrupt(e.to_string()))?;
                    if n == 0 {
                        break;
                    }
                    enc.write_all(&buf[..n]).ctx(&tmp)?;
                }
                enc.finish().ctx(&tmp)?;
                Ok(())
            })();
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e {
                    // An integrity failure of an encrypted file: damage, or
                    // garbage from a wrong key.
                    Error::BadSignature { reason, .. } | Error::BadManifest { reason, .. }
                        if p.encrypted =>
                    {
                        crate::restore::wrong_passphrase_or_damaged(
                            backend, r, &reason, remote, prefixes, crypto,
                        )
                    }
                    e => e,
                });
            }
            std::fs::rename(&tmp, &lp).ctx(&lp)?;
        }
        for l in self.list()? {
            let Some(p) = naming::parse(&l, prefixes) else {
                continue;
            };
            if matches!(
                p.kind,
                FileType::Manifest | FileType::Signature | FileType::Blocks
            ) && !p.partial
                && !wanted.contains(&l)
            {
                let _ = std::fs::remove_file(self.path(&l));
            }
        }
        Ok(())
    }
}
