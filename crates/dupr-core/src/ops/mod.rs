//! The commands, as library calls: what the CLI (and later profiles) run.
//! One module per command family; here what they share: the target with
//! its settings, temporaries, the source walker, and the refusal to read
//! a state whose sets are incomplete.

mod backup;
mod remove;
mod restore;
mod resume;
mod status;

pub use crate::check::{CheckReport, Problem};
pub(crate) use backup::RemoteCheck;
pub use backup::{backup, BackupKind, BackupOutcome, BackupRequest};
pub use remove::{remove, Removal, RemovalReport};
pub use restore::{restore, verify, RestoreRequest, VerifyReport};
pub use status::{
    changes_in_set, check, collection_report, collection_status, file_changed, list_current_files,
    FileChange, SetChanges,
};

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{self, Backend};
use crate::cache::Cache;
use crate::chain::Collection;
use crate::crypt::{Codec, Crypto};
use crate::error::{Error, Result};
use crate::naming::FileType;
use crate::naming::Prefixes;
use crate::select::Selection;
use crate::time::Timestamp;
use crate::walk::Walker;
use std::os::unix::ffi::OsStrExt;

/// Settings shared by every command.
pub struct Settings {
    /// The target URL, as given.
    pub url: String,
    /// Where caches live (`--archive-dir`; duplicity's default without it).
    pub archive_dir: Option<PathBuf>,
    /// The cache's name under it (`--name`; a hash of the URL without it).
    pub name: Option<String>,
    /// How new files are written.
    pub codec: Codec,
    /// Deflate level for incremental sets' volumes (None: `codec`'s).
    pub incremental_level: Option<u32>,
    /// Keys for reading encrypted files (and writing, when `codec` is Gpg).
    pub crypto: Option<Arc<Crypto>>,
    /// File name prefixes on the target (`--file-prefix` and friends).
    pub prefixes: Prefixes,
    /// Where temporary files go (`--tempdir`).
    pub tempdir: PathBuf,
    /// Compare the target's manifests with the cache's before building on
    /// them (`--no-check-remote` turns it off).
    pub check_remote: bool,
    /// Retries, timeouts, parallelism and service options.
    pub backend: backend::BackendOptions,
}

impl Settings {
    /// Settings for `url` as duplicity defaults them: new files encrypted
    /// with `crypto` (OpenPGP, compressed) or, without it, gzip-compressed;
    /// duplicity's cache directory and file names; the system's temporary
    /// directory; the default retries and timeouts.
    pub fn new(url: impl Into<String>, crypto: Option<Arc<Crypto>>) -> Settings {
        Settings {
            url: url.into(),
            archive_dir: None,
            name: None,
            codec: match &crypto {
                Some(c) => Codec::Gpg(c.clone()),
                None => Codec::GZIP,
            },
            incremental_level: Some(crate::crypt::INCREMENTAL_LEVEL),
            crypto,
            prefixes: Prefixes::default(),
            tempdir: std::env::temp_dir(),
            check_remote: true,
            backend: backend::BackendOptions::default(),
        }
    }
}

impl Settings {
    /// Choose how new files are written, as duplicity's options do:
    /// OpenPGP with `self.crypto`, tuned by `tuning` (`--compress-level`,
    /// `--no-compression`, gpg's compression options); or, when `encrypt` is
    /// false (`--no-encryption`), gzip at the tuning's level, or plain files
    /// when compression is off too. An explicit level applies to every set;
    /// without one, incrementals' volumes get a higher one.
    ///
    /// With encryption on and no passphrase or key, a command that writes
    /// fails; one that only reads still opens files encrypted to a secret key
    /// of the GnuPG home, and the others say what they need.
    pub fn with_encoding(
        mut self,
        encrypt: bool,
        tuning: &crate::crypt::Tuning,
        writing: bool,
    ) -> Result<Settings> {
        self.crypto = self.crypto.map(|c| Crypto::tuned(c, tuning));
        self.codec = match &self.crypto {
            _ if !encrypt && tuning.compress => Codec::Gzip(tuning.level),
            _ if !encrypt => Codec::Plain,
            Some(c) => Codec::Gpg(c.clone()),
            None if writing => {
                return Err(Error::NoPassphrase {
                    subject: "no passphrase or key to encrypt the backup with".into(),
                    hint: ", or pass --no-encryption for an unencrypted backup",
                })
            }
            None => {
                self.crypto = Some(Crypto::keyring_only());
                Codec::GZIP
            }
        };
        self.incremental_level = (!tuning.level_given).then_some(crate::crypt::INCREMENTAL_LEVEL);
        Ok(self)
    }
}

/// An archive: where it is stored, its local cache, and the settings every
/// command on it uses.
pub struct Target {
    /// The storage, with retries.
    pub backend: Arc<dyn Backend>,
    /// The local cache of manifests and signatures.
    pub cache: Cache,
    /// The settings it was opened with.
    pub settings: Settings,
}

impl Target {
    /// The target at `settings.url`, stored through `backend` (for a local
    /// URL, [`backend::open_local`]; dupr-backend opens the others), and its
    /// local cache.
    pub fn open(settings: Settings, backend: Arc<dyn Backend>) -> Result<Self> {
        let cache = Cache::open(
            settings.archive_dir.as_deref(),
            settings.name.as_deref(),
            &settings.url,
        )?;
        Ok(Target {
            backend,
            cache,
            settings,
        })
    }

    /// The target's lock object, for runs that write to it.
    pub fn lock_target(&self) -> Result<crate::lock::TargetLock> {
        crate::lock::TargetLock::acquire(self.backend.clone(), self.cache.dir())
    }

    /// The target's file names, and the backup sets and chains they make.
    pub fn collection(&self) -> Result<(Vec<String>, Collection)> {
        let names = self.backend.list()?;
        let c = Collection::from_names(&names, &self.settings.prefixes);
        Ok((names, c))
    }

    /// Bring the local cache's manifests and signature files in line with
    /// the target's listing `names`.
    pub fn sync(&self, names: &[String]) -> Result<()> {
        self.cache.sync(
            self.backend.as_ref(),
            names,
            &self.settings.prefixes,
            self.settings.crypto.as_ref(),
        )
    }
}

/// Temporary files a killed run left: in the cache (ours alone while we
/// hold its lock) and, for a local target, staged uploads untouched for an
/// hour (a live run on another machine keeps writing to its own).
fn remove_stale_temps(t: &Target) {
    let is_temp = |n: &str| n.starts_with(crate::TEMP_PREFIX) || n.starts_with(".dupr-filelist.");
    // A journal serves only its set's partial manifest; a run killed after
    // the manifest was stored can leave it alone.
    let orphan_journal = |n: &str| {
        n.strip_prefix(".dupr-journal.").is_some_and(|man| {
            let man = match man.strip_suffix(".new") {
                Some(stem) => format!("{stem}.manifest"),
                None => man.to_string(),
            };
            !t.cache.dir().join(format!("{man}.part")).exists()
        })
    };
    if let Ok(rd) = std::fs::read_dir(t.cache.dir()) {
        for e in rd.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| is_temp(n) || orphan_journal(n))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Whether `name` on the target is a temporary a run left: staged volumes
/// and uploads (`.dupr-tmp.`), written only under the target lock.
pub fn is_target_temp(name: &str) -> bool {
    name.starts_with(crate::TEMP_PREFIX)
}

/// Temporaries on the target that killed runs left. Call only while
/// holding the target lock: no live run then has any there.
pub fn remove_target_temps(t: &Target) {
    if let Ok(names) = t.backend.list() {
        for n in names.iter().filter(|n| is_target_temp(n)) {
            tracing::info!("Removing the stale temporary {n}");
            let _ = t.backend.delete(n);
        }
    }
}

/// A walker over `source` that honours `--files-from`.
fn selected_walker<'a>(
    source: &std::path::Path,
    select: crate::walk::Selector<'a>,
    selection: Option<Arc<Selection>>,
) -> Result<Walker<'a>> {
    let w = Walker::new(source, select).map_err(|_| Error::SourceMissing(source.to_path_buf()))?;
    Ok(match selection {
        Some(s) => w.with_listing(Box::new(move |dir: &std::path::Path| {
            s.listing(dir.as_os_str().as_bytes())
        })),
        None => w,
    })
}

/// Refuse to read the state at `time` from `ch` when a set that state
/// should include is incomplete: the result would silently be an older
/// state (duplicity 3.2.1 fails too).
fn refuse_incomplete(
    t: &Target,
    c: &Collection,
    names: &[String],
    ch: &crate::chain::Chain,
    time: Timestamp,
) -> Result<()> {
    let prefixes = &t.settings.prefixes;
    let Some((end, missing)) = c.incomplete_at(ch, time, names, prefixes) else {
        return Ok(());
    };
    let interrupted = t.cache.list().is_ok_and(|names| {
        names.iter().any(|n| {
            crate::naming::parse(n, prefixes)
                .is_some_and(|p| p.partial && p.kind == FileType::Manifest && p.end == end)
        })
    });
    let advice = if interrupted {
        "it is an interrupted backup: run the backup again to complete it, or read an earlier time with -t"
    } else {
        "read an earlier time with -t, or remove the set with `dupr cleanup`"
    };
    Err(Error::IncompleteSet {
        set: format!(
            "{} ({})",
            crate::time::to_filename(end),
            crate::time::pretty_local(end)
        ),
        missing: format!("{missing}; {advice}"),
    })
}
