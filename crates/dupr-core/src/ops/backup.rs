//! `backup`: what to back up, full or incremental, resuming an interrupted
//! set, and the run around `backup::write_set`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backup::{self, BackupConfig, Counters, Plan, Stats};
use crate::cache::Cache;
use crate::crypt;
use crate::crypt::Codec;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::manifest::Manifest;
use crate::naming::SetType;
use crate::restore::{self};
use crate::select::Selection;
use crate::sigtar::{SigMerge, SigtarReader};
use crate::time::Timestamp;
use crate::walk::{Select, Walker};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

use super::resume::{find_resume, has_partial};
use super::{remove_stale_temps, remove_target_temps, selected_walker, Target};

/// What to back up, and how: duplicity's backup options.
pub struct BackupRequest {
    /// The directory (or file) to back up.
    pub source: PathBuf,
    /// The source as typed, for the manifest's Localdir.
    pub source_arg: Vec<u8>,
    /// Volume size in MiB (`--volsize`).
    pub volsize_mib: u64,
    /// Largest rsync block for signatures and deltas (`--max-blocksize`).
    pub max_blocksize: Option<u32>,
    /// Walk and count what would be backed up; write nothing (`--dry-run`).
    pub dry_run: bool,
    /// Live counters for a progress display.
    pub counters: Option<Arc<Counters>>,
    /// Compiled selection options; None backs up everything.
    pub selection: Option<Arc<Selection>>,
    /// Full, incremental, or whichever the target's state calls for.
    pub kind: BackupKind,
    /// A full backup instead when the chain's full is older than this.
    pub full_if_older_than: Option<Timestamp>,
    /// A full backup instead when the chain has this many incrementals.
    pub full_if_n_inc: Option<usize>,
    /// Build on a chain made from another host or source directory.
    pub allow_source_mismatch: bool,
    /// Write nothing when an incremental finds no change.
    pub skip_if_no_change: bool,
    /// Record changed paths in the manifest's Filelist.
    pub files_changed: bool,
    /// Back up what symlinks point to.
    pub copy_links: bool,
    /// Store the statistics as a `.jsonstat` file with the set.
    pub jsonstat: bool,
}

impl BackupRequest {
    /// Back up `source` as duplicity does by default: incremental when the
    /// target has a chain, else full; 200 MiB volumes; everything selected.
    pub fn new(source: impl Into<PathBuf>) -> BackupRequest {
        let source = source.into();
        BackupRequest {
            source_arg: source.as_os_str().as_bytes().to_vec(),
            source,
            volsize_mib: 200,
            max_blocksize: None,
            dry_run: false,
            counters: None,
            selection: None,
            kind: BackupKind::Auto,
            full_if_older_than: None,
            full_if_n_inc: None,
            allow_source_mismatch: false,
            skip_if_no_change: false,
            files_changed: false,
            copy_links: false,
            jsonstat: false,
        }
    }
}

fn hostname() -> Vec<u8> {
    nix::unistd::gethostname()
        .map(|h| h.into_encoded_bytes())
        .unwrap_or_default()
}

/// Which kind of set a backup writes (`full`, `incremental`, or neither
/// word on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKind {
    /// A full set, starting a new chain.
    Full,
    /// An incremental on the latest chain; an error when there is none.
    Incremental,
    /// Incremental when a usable chain exists, else full.
    Auto,
}

/// What [`backup()`] did.
pub struct BackupOutcome {
    /// The run's statistics.
    pub stats: Stats,
    /// Whether the set written (or skipped) was an incremental.
    pub incremental: bool,
}

/// Back up `req.source`: a full set or an incremental on the latest chain.
pub fn backup(t: &Target, req: BackupRequest) -> Result<BackupOutcome> {
    let kind = req.kind;
    let cfg = BackupConfig {
        volsize: req.volsize_mib.max(1) * 1024 * 1024,
        codec: t.settings.codec.clone(),
        incremental_level: t.settings.incremental_level,
        hostname: hostname(),
        prefixes: t.settings.prefixes.clone(),
        concurrency: t.settings.backend.concurrency,
        req,
    };
    let req = &cfg.req;
    // Backups must not include their own target or cache (matched by
    // device and inode, without resolving every path).
    let excluded: Vec<(u64, u64)> = [t.backend.local_path(""), Some(t.cache.dir().to_path_buf())]
        .into_iter()
        .flatten()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
        .collect();
    let walker = || -> Result<Walker<'_>> {
        let selection = req.selection.clone();
        let excluded = excluded.clone();
        let select = Box::new(
            move |_ix: &Index, path: &std::path::Path, m: &crate::entry::Meta| {
                if m.kind == crate::entry::Kind::Dir && excluded.contains(&(m.dev, m.ino)) {
                    return Select::Exclude;
                }
                match &selection {
                    Some(s) => s.select(path.as_os_str().as_bytes(), path, m),
                    None => Select::Include,
                }
            },
        );
        Ok(
            selected_walker(&cfg.req.source, select, req.selection.clone())?
                .with_follow_links(req.copy_links),
        )
    };
    let plan = |t: &Target| -> Result<Plan> {
        if kind == BackupKind::Full {
            return Ok(Plan::Full);
        }
        Ok(incremental_plan(t, &cfg)?.unwrap_or(Plan::Full))
    };

    remove_stale_temps(t);
    // Read-only checks first (a refused incremental writes nothing, not
    // even the target lock); an interrupted set is looked at under the lock.
    let partial = !cfg.req.dry_run && has_partial(t);
    let early_plan = if partial { None } else { Some(plan(t)?) };
    let _target_lock = if cfg.req.dry_run {
        None
    } else {
        Some(t.lock_target()?)
    };
    if !cfg.req.dry_run {
        remove_target_temps(t);
        crate::interrupt::check()?;
    }
    // An interrupted set is continued where it stopped, if it can be.
    let mut resume = if partial { find_resume(t, &cfg)? } else { None };
    // Finishing an interrupted full comes first, whatever was asked, as
    // duplicity does; an interrupted incremental must still fit the chain.
    let the_plan = match (&resume, early_plan) {
        (Some(r), _) if r.set.set == SetType::Full => Plan::Full,
        (_, Some(p)) => p,
        (_, None) => plan(t)?,
    };
    if let Some(r) = &resume {
        let fits = match (&the_plan, r.set.set) {
            (_, SetType::Full) => true,
            (Plan::Incremental { start, .. }, SetType::Inc) => Some(*start) == r.set.start,
            _ => false,
        };
        if !fits {
            tracing::warn!("The interrupted backup no longer fits the chain; removing it");
            backup::discard_set(t.backend.as_ref(), &t.cache, &r.set, &t.settings.prefixes);
            resume = None;
        }
    }
    let resuming = resume.is_some();
    let incremental = matches!(the_plan, Plan::Incremental { .. });
    let r = backup::run_backup(&cfg, &t.backend, &t.cache, walker()?, the_plan, resume);
    let stats = match r {
        Err(Error::ResumeInvalid(why)) if resuming => {
            // The source changed under the stored volumes: start the set
            // over (run_backup removed the interrupted one).
            tracing::warn!("Cannot resume the interrupted backup ({why}); starting it over");
            plan(t).and_then(|p| backup::run_backup(&cfg, &t.backend, &t.cache, walker()?, p, None))
        }
        r => r,
    };
    if stats.is_err() && !cfg.req.dry_run {
        // Whatever stopped the run (an error, SIGINT/SIGTERM), its staged
        // volumes and uploads go; we still hold the target lock.
        remove_target_temps(t);
        remove_stale_temps(t);
    }
    let stats = stats?;
    Ok(BackupOutcome { stats, incremental })
}

/// The incremental plan, or None when a full backup must be made instead.
fn incremental_plan(t: &Target, cfg: &BackupConfig) -> Result<Option<Plan>> {
    let req = &cfg.req;
    let kind = req.kind;
    let allow_source_mismatch = req.allow_source_mismatch;
    let (names, c) = t.collection()?;
    let url = t.backend.display_url();
    let no_sigs = || Error::NoSignatures(url.clone());
    let Some(chain) = c.last_chain() else {
        return if kind == BackupKind::Incremental {
            Err(no_sigs())
        } else {
            Ok(None)
        };
    };
    let Some(sc) = c.sig_chain_for(chain) else {
        return if kind == BackupKind::Incremental {
            Err(no_sigs())
        } else {
            Ok(None)
        };
    };
    if let Some(limit) = req.full_if_older_than {
        if chain.start() < limit {
            tracing::warn!("Last full backup is too old, forcing full backup");
            return Ok(None);
        }
    }
    if let Some(n) = req.full_if_n_inc {
        if chain.incs.len() >= n {
            tracing::warn!("Latest chain has too many incrementals, forcing full backup");
            return Ok(None);
        }
    }
    let last = chain.incs.last().unwrap_or(&chain.full);
    let m = restore::load_manifest(
        t.backend.as_ref(),
        Some(&t.cache),
        last,
        &t.settings.prefixes,
        t.settings.crypto.as_ref(),
    )?;
    // The target is authoritative: its manifest must say what the cache's
    // says (block numbers aside), as duplicity checks before incrementals.
    let cached_copy =
        Cache::local_name(last.manifest.as_deref().unwrap_or(""), &t.settings.prefixes)
            .map(|l| t.cache.path(&l))
            .filter(|p| p.exists());
    if !allow_source_mismatch {
        let host = cfg.hostname.clone();
        if !m.hostname.is_empty() && m.hostname != host {
            return Err(Error::HostMismatch {
                recorded: String::from_utf8_lossy(&m.hostname).into_owned(),
                current: String::from_utf8_lossy(&host).into_owned(),
            });
        }
        let here = backup::canonical_localdir(&cfg.req.source_arg);
        if !m.localdir.is_empty() && m.localdir != here {
            return Err(Error::SourceMismatch {
                recorded: String::from_utf8_lossy(&m.localdir).into_owned(),
                current: String::from_utf8_lossy(&here).into_owned(),
            });
        }
    }
    // Decrypting the target's copy costs the passphrase's key derivation
    // (tens of ms): it runs beside the walk and is waited for before the
    // first volume is stored.
    let check =
        (cached_copy.is_some() && t.settings.check_remote).then(|| RemoteCheck::start(t, last, &m));
    t.sync(&names)?;
    let open = || -> Result<SigMerge<Box<dyn Read + Send>>> {
        let mut readers = Vec::new();
        for f in sc.files() {
            let local = Cache::local_name(&f.name, &t.settings.prefixes)
                .map(|l| t.cache.path(&l))
                .filter(|p| p.exists())
                .ok_or_else(|| Error::BadSignature {
                    name: f.name.clone(),
                    reason: "missing from the cache and the target".into(),
                })?;
            let file = std::fs::File::open(&local).map_err(|e| Error::io(&local, e))?;
            let stored = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut plain = crypt::decoder(file, &Codec::GZIP)?;
            // The manifest's record of this set's signature tar, if any.
            let set = chain.sets().find(|s| s.end == f.end && s.start == f.start);
            if let Some(set) = set {
                let m = restore::load_manifest(
                    t.backend.as_ref(),
                    Some(&t.cache),
                    set,
                    &t.settings.prefixes,
                    t.settings.crypto.as_ref(),
                )?;
                if let Some(want) = m.sigtar_hash {
                    plain = Box::new(crate::sigtar::CheckedSigtar::new(plain, want, &f.name));
                }
            }
            // A full's signature file is decoded beside the walk.
            readers.push(SigtarReader::new(
                crate::stream::ahead_if_large(plain, stored),
                &f.name,
                true,
            ));
        }
        SigMerge::new(readers)
    };
    // The signature chain is read once, during the backup, to its
    // checksums; a corrupt one fails the run and its volumes are discarded.
    Ok(Some(Plan::Incremental {
        start: chain.end(),
        old: open()?,
        check,
    }))
}

/// The comparison of the last set's manifest on the target with the cache's
/// copy, on its own thread.
pub(crate) struct RemoteCheck(std::thread::JoinHandle<Result<()>>);

impl RemoteCheck {
    fn start(t: &Target, last: &crate::chain::BackupSet, cached: &Manifest) -> RemoteCheck {
        let backend = t.backend.clone();
        let last = last.clone();
        let prefixes = t.settings.prefixes.clone();
        let crypto = t.settings.crypto.clone();
        let want = manifest_key(cached);
        // The volumes the cached manifest lists are the ones stored.
        let stored_as_cached = cached.volumes.keys().eq(last.volumes.keys());
        RemoteCheck(std::thread::spawn(move || {
            let remote = match restore::load_remote_manifest(
                backend.as_ref(),
                &last,
                &prefixes,
                crypto.as_ref(),
            ) {
                Ok(r) => Some(r),
                // A public-key archive backed up without the decryption
                // key (or its passphrase) at hand, as duplicity allows:
                // compare what can be seen without decrypting.
                Err(Error::SecretKey(why)) => {
                    tracing::info!("remote manifest not compared with the cache's copy: {why}");
                    None
                }
                Err(e) => return Err(e),
            };
            let matches = match &remote {
                Some(remote) => manifest_key(remote) == want,
                None => stored_as_cached,
            };
            if matches {
                Ok(())
            } else {
                Err(Error::ManifestMismatch(
                    last.manifest.clone().unwrap_or_default(),
                ))
            }
        }))
    }

    /// The check's outcome, once it is done.
    pub(crate) fn wait(self) -> Result<()> {
        self.0
            .join()
            .unwrap_or_else(|_| Err(Error::Usage("the remote manifest check panicked".into())))
    }
}

/// What must agree between the target's manifest and the cache's copy:
/// host, source and each volume's range and hash (block numbers aside).
type ManifestKey = (
    Vec<u8>,
    Vec<u8>,
    Vec<(u32, Index, Index, Option<(String, String)>)>,
);

fn manifest_key(m: &Manifest) -> ManifestKey {
    let vols = m
        .volumes
        .iter()
        .map(|(n, v)| (*n, v.start.clone(), v.end.clone(), v.hash.clone()))
        .collect();
    (m.hostname.clone(), m.localdir.clone(), vols)
}
