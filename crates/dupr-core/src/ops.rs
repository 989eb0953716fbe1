//! The commands, as library calls: what the CLI (and later profiles) run.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{self, Backend};
use crate::backup::{self, BackupConfig, Counters, Plan, Stats};
use crate::cache::Cache;
use crate::chain::Collection;
use crate::crypt;
use crate::crypt::{Codec, Crypto};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::naming::Prefixes;
use crate::naming::{FileType, SetType};
use crate::restore::{self, RestoreOptions, RestoreStats};
use crate::select::Selection;
use crate::sigtar::{SigMerge, SigtarReader};
use crate::status;
use crate::time::Timestamp;
use crate::walk::{Select, Walker};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

/// Settings shared by every command.
pub struct Settings {
    pub url: String,
    pub archive_dir: Option<PathBuf>,
    pub name: Option<String>,
    /// How new files are written.
    pub codec: Codec,
    /// Deflate level for incremental sets' volumes (None: `codec`'s).
    pub incremental_level: Option<u32>,
    /// Keys for reading encrypted files (and writing, when `codec` is Gpg).
    pub crypto: Option<Arc<Crypto>>,
    pub prefixes: Prefixes,
    pub tempdir: PathBuf,
    /// Compare the target's manifests with the cache's before building on
    /// them (`--no-check-remote` turns it off).
    pub check_remote: bool,
    /// Retries, timeouts, parallelism and service options.
    pub backend: backend::BackendOptions,
}

pub struct Target {
    pub backend: Arc<dyn Backend>,
    pub cache: Cache,
    pub settings: Settings,
}

impl Target {
    pub fn open(settings: Settings) -> Result<Self> {
        let backend = backend::open(&settings.url, &settings.backend)?;
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

pub struct BackupRequest {
    pub source: PathBuf,
    pub source_arg: Vec<u8>,
    pub volsize_mib: u64,
    pub max_blocksize: Option<u32>,
    pub dry_run: bool,
    pub counters: Option<Arc<Counters>>,
    /// Compiled selection options; None backs up everything.
    pub selection: Option<Arc<Selection>>,
    pub kind: BackupKind,
    /// A full backup instead when the chain's full is older than this.
    pub full_if_older_than: Option<Timestamp>,
    /// A full backup instead when the chain has this many incrementals.
    pub full_if_n_inc: Option<usize>,
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

fn hostname() -> Vec<u8> {
    nix::unistd::gethostname()
        .map(|h| h.into_encoded_bytes())
        .unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKind {
    Full,
    Incremental,
    /// Incremental when a usable chain exists, else full.
    Auto,
}

pub struct BackupOutcome {
    pub stats: Stats,
    pub incremental: bool,
}

/// Back up `req.source`: a full set or an incremental on the latest chain.
pub fn backup(t: &Target, req: BackupRequest) -> Result<BackupOutcome> {
    let kind = req.kind;
    let cfg = BackupConfig {
        source: req.source.clone(),
        source_arg: req.source_arg.clone(),
        volsize: req.volsize_mib.max(1) * 1024 * 1024,
        codec: t.settings.codec.clone(),
        incremental_level: t.settings.incremental_level,
        max_blocksize: req.max_blocksize,
        dry_run: req.dry_run,
        hostname: hostname(),
        prefixes: t.settings.prefixes.clone(),
        counters: req.counters.clone(),
        files_changed: req.files_changed,
        skip_if_no_change: req.skip_if_no_change,
        jsonstat: req.jsonstat,
        concurrency: t.settings.backend.concurrency,
    };
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
        Ok(selected_walker(&cfg.source, select, req.selection.clone())?
            .with_follow_links(req.copy_links))
    };
    let plan = |t: &Target| -> Result<Plan> {
        if kind == BackupKind::Full {
            return Ok(Plan::Full);
        }
        Ok(incremental_plan(t, &cfg, &req)?.unwrap_or(Plan::Full))
    };

    remove_stale_temps(t);
    // Read-only checks first (a refused incremental writes nothing, not
    // even the target lock); an interrupted set is looked at under the lock.
    let partial = !cfg.dry_run && has_partial(t);
    let early_plan = if partial { None } else { Some(plan(t)?) };
    let _target_lock = if cfg.dry_run {
        None
    } else {
        Some(t.lock_target()?)
    };
    if !cfg.dry_run {
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
    if stats.is_err() && !cfg.dry_run {
        // Whatever stopped the run (an error, SIGINT/SIGTERM), its staged
        // volumes and uploads go; we still hold the target lock.
        remove_target_temps(t);
        remove_stale_temps(t);
    }
    let stats = stats?;
    Ok(BackupOutcome { stats, incremental })
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

/// A `Write` that feeds a SHA-1.
struct HashWriter<'a>(&'a mut sha1::Sha1);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        sha1::Digest::update(self.0, b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether the cache holds a partial manifest (an interrupted set).
fn has_partial(t: &Target) -> bool {
    t.cache.list().is_ok_and(|names| {
        names.iter().any(|n| {
            crate::naming::parse(n, &t.settings.prefixes)
                .is_some_and(|p| p.partial && p.kind == FileType::Manifest)
        })
    })
}

/// The newest set the cache holds a partial manifest of, if it can be
/// continued; sets that cannot are removed here so they never block a run.
fn find_resume(t: &Target, cfg: &BackupConfig) -> Result<Option<backup::Resume>> {
    let prefixes = &t.settings.prefixes;
    let remote = t.backend.list()?;
    let mut partials: Vec<crate::naming::ParsedName> = t
        .cache
        .list()?
        .iter()
        .filter_map(|n| crate::naming::parse(n, prefixes))
        .filter(|p| p.partial && p.kind == FileType::Manifest)
        .collect();
    partials.sort_by_key(|p| p.end);
    let newest = partials.pop();
    for old in partials {
        backup::discard_set(t.backend.as_ref(), &t.cache, &old, prefixes);
    }
    let Some(set) = newest else {
        return Ok(None);
    };
    let same_set = |n: &crate::naming::ParsedName| {
        n.set == set.set && n.start == set.start && n.end == set.end
    };
    let parsed: Vec<crate::naming::ParsedName> = remote
        .iter()
        .filter_map(|n| crate::naming::parse(n, prefixes))
        .filter(|n| same_set(n))
        .collect();
    if parsed
        .iter()
        .any(|n| n.kind == FileType::Manifest && !n.partial)
    {
        // The set completed after all; the partial copy is stale.
        let part = t.cache.path(&crate::naming::name(&set, prefixes));
        let _ = std::fs::remove_file(part);
        let _ = std::fs::remove_file(t.cache.path(&backup::journal_name(&set, prefixes)));
        return Ok(None);
    }
    let give_up = |why: &str| {
        tracing::warn!(
            "Removing the interrupted backup set of {}: it cannot be resumed ({why})",
            crate::time::pretty_local(set.end)
        );
        backup::discard_set(t.backend.as_ref(), &t.cache, &set, prefixes);
        Ok(None)
    };
    // Without dupr's journal (the set was interrupted while duplicity wrote
    // it) the set is continued as duplicity continues it.
    let checked = t.cache.path(&backup::journal_name(&set, prefixes)).exists();
    let part_path = t.cache.path(&crate::naming::name(&set, prefixes));
    let Ok(text) = std::fs::read(&part_path) else {
        return give_up("its partial manifest is unreadable");
    };
    let Ok(m) = crate::manifest::Manifest::parse(&text) else {
        return give_up("its partial manifest is malformed");
    };
    let (enc, gz) = cfg.codec.flags();
    let vol_name = |n: u32| {
        crate::naming::name(
            &crate::naming::ParsedName {
                kind: FileType::Volume(n),
                encrypted: enc,
                gzipped: gz,
                partial: false,
                ..set
            },
            prefixes,
        )
    };
    let mut volumes = Vec::new();
    for (n, v) in &m.volumes {
        if *n as usize != volumes.len() + 1 || !remote.contains(&vol_name(*n)) {
            break;
        }
        volumes.push((*n, v.clone()));
    }
    if volumes.is_empty() {
        return give_up("no volume of it was stored, or the encryption settings changed");
    }
    // Decided after the passphrase is proved: a wrong one keeps the set.
    let mut start_over = None;
    if !checked {
        // duplicity's restart: the last volume stored may be incomplete
        // (its upload cut short), so it is written again with every one
        // after it, whatever the partial manifest lists; the ones before
        // must be in it. Only volume 1 stored: start over.
        let stored = (1..).take_while(|n| remote.contains(&vol_name(*n))).count();
        let keep = stored.saturating_sub(1);
        if keep == 0 {
            start_over = Some("only its first volume was stored (duplicity starts over then too)");
        } else if volumes.len() < keep {
            start_over = Some("its partial manifest lists fewer volumes than are stored");
        } else {
            volumes.truncate(keep);
        }
    }
    // Prove the passphrase (and the codec) on volume 1, as duplicity does:
    // read it whole, so the integrity check at its end (MDC, gzip CRC)
    // rules out a wrong key that happens to decrypt to plausible bytes.
    let first = vol_name(1);
    let codec = Codec::for_name(enc, gz, t.settings.crypto.as_ref(), &first)?;
    let proof = crate::crypt::decoder(t.backend.open(&first)?, &codec).and_then(|mut r| {
        std::io::copy(&mut r, &mut std::io::sink())
            .map(|_| ())
            .map_err(|e| match crate::crypt::signature_failure(&e) {
                Some(sig) => sig,
                None if e.to_string().to_lowercase().contains("passphrase") => {
                    Error::WrongPassphrase
                }
                None => Error::io(&first, e),
            })
    });
    match proof {
        Ok(_) => {}
        Err(e) => {
            // Intact but undecryptable: the passphrase is wrong (symmetric
            // OpenPGP cannot tell otherwise); refuse and keep the set.
            // Damaged: it cannot be continued.
            let intact = volumes
                .first()
                .and_then(|(_, v)| v.hash.clone())
                .is_some_and(|(_, want)| {
                    let mut h = <sha1::Sha1 as sha1::Digest>::new();
                    let read = t.backend.open(&first).and_then(|mut r| {
                        std::io::copy(&mut r, &mut HashWriter(&mut h))
                            .map_err(|e| Error::io(&first, e))
                    });
                    read.is_ok() && hex::encode(sha1::Digest::finalize(h)) == want
                });
            // Public keys without the secret one here (duplicity skips
            // this proof for them too): an intact volume 1 is enough.
            if intact && matches!(e, Error::SecretKey(_)) {
                tracing::info!("volume 1 of the interrupted backup not decrypted: {e}");
            } else if intact || matches!(e, Error::WrongPassphrase) {
                return Err(Error::WrongPassphrase);
            } else {
                return give_up(&format!("volume 1 is damaged: {e}"));
            }
        }
    }
    if let Some(why) = start_over {
        return give_up(why);
    }
    if !checked {
        // The volumes written again go first; the source is trusted not to
        // have changed before the resume point, as duplicity trusts it.
        let keep = volumes.len() as u32;
        for n in &remote {
            if crate::naming::parse(n, prefixes)
                .is_some_and(|p| same_set(&p) && matches!(p.kind, FileType::Volume(v) if v > keep))
            {
                t.backend.delete(n)?;
            }
        }
        // A partial manifest may lack a volume's hash: take it from the
        // stored volume, so the finished manifest records every one.
        for (n, v) in volumes.iter_mut().filter(|(_, v)| v.hash.is_none()) {
            let name = vol_name(*n);
            let mut h = <sha1::Sha1 as sha1::Digest>::new();
            let mut r = t.backend.open(&name)?;
            std::io::copy(&mut r, &mut HashWriter(&mut h)).map_err(|e| Error::io(&name, e))?;
            v.hash = Some(("SHA1".into(), hex::encode(sha1::Digest::finalize(h))));
        }
        tracing::warn!(
            "Resuming a backup set interrupted without a dupr journal (written by duplicity?) \
             after volume {keep}, as duplicity does: trusting that the source has not changed"
        );
    }
    // Signatures the interrupted run uploaded before its manifest would
    // make the chain look longer than it is; the resumed run writes them
    // again.
    for n in &remote {
        if crate::naming::parse(n, prefixes)
            .is_some_and(|p| same_set(&p) && p.kind == FileType::Signature)
        {
            t.backend.delete(n)?;
            if let Some(l) = Cache::local_name(n, prefixes) {
                let _ = std::fs::remove_file(t.cache.path(&l));
            }
        }
    }
    Ok(Some(backup::Resume {
        set: crate::naming::ParsedName {
            kind: FileType::Manifest,
            partial: false,
            encrypted: false,
            gzipped: false,
            ..set
        },
        volumes,
        stored: 0,
        checked,
    }))
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

/// The incremental plan, or None when a full backup must be made instead.
fn incremental_plan(t: &Target, cfg: &BackupConfig, req: &BackupRequest) -> Result<Option<Plan>> {
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
    if cached_copy.is_some() && t.settings.check_remote {
        let remote = match restore::load_remote_manifest(
            t.backend.as_ref(),
            last,
            &t.settings.prefixes,
            t.settings.crypto.as_ref(),
        ) {
            Ok(r) => Some(r),
            // A public-key archive backed up without the decryption key
            // (or its passphrase) at hand, as duplicity allows: compare
            // what can be seen without decrypting.
            Err(Error::SecretKey(why)) => {
                tracing::info!("remote manifest not compared with the cache's copy: {why}");
                None
            }
            Err(e) => return Err(e),
        };
        let key = |m: &crate::manifest::Manifest| {
            let vols: Vec<_> = m
                .volumes
                .iter()
                .map(|(n, v)| (*n, v.start.clone(), v.end.clone(), v.hash.clone()))
                .collect();
            (m.hostname.clone(), m.localdir.clone(), vols)
        };
        let mismatch = match &remote {
            Some(remote) => key(remote) != key(&m),
            // The volumes the cached manifest lists are the ones stored.
            None => !m.volumes.keys().eq(last.volumes.keys()),
        };
        if mismatch {
            return Err(Error::ManifestMismatch(
                last.manifest.clone().unwrap_or_default(),
            ));
        }
    }
    if !allow_source_mismatch {
        let host = cfg.hostname.clone();
        if !m.hostname.is_empty() && m.hostname != host {
            return Err(Error::HostMismatch {
                recorded: String::from_utf8_lossy(&m.hostname).into_owned(),
                current: String::from_utf8_lossy(&host).into_owned(),
            });
        }
        let here = backup::canonical_localdir(&cfg.source_arg);
        if !m.localdir.is_empty() && m.localdir != here {
            return Err(Error::SourceMismatch {
                recorded: String::from_utf8_lossy(&m.localdir).into_owned(),
                current: String::from_utf8_lossy(&here).into_owned(),
            });
        }
    }
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
                if let Some(want) = m.sigtar_sha256 {
                    plain = Box::new(crate::sigtar::CheckedSigtar::new(plain, want, &f.name));
                }
            }
            readers.push(SigtarReader::new(plain, &f.name, true));
        }
        SigMerge::new(readers)
    };
    // The signature chain is read once, during the backup, to its
    // checksums; a corrupt one fails the run and its volumes are discarded.
    Ok(Some(Plan::Incremental {
        start: chain.end(),
        old: open()?,
    }))
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

/// What to restore, and how.
pub struct RestoreRequest {
    pub time: Timestamp,
    pub dest: PathBuf,
    /// Only this archive path (`--path-to-restore`).
    pub path: Option<Index>,
    pub force: bool,
    pub restore_owner: bool,
    pub numeric_owner: bool,
    pub rename: Vec<(Index, Index)>,
    /// Restore-time selection (archive-relative patterns).
    pub selection: Option<Arc<Selection>>,
}

pub fn restore(t: &Target, req: RestoreRequest) -> Result<RestoreStats> {
    let RestoreRequest {
        time,
        dest,
        path,
        force,
        restore_owner,
        numeric_owner,
        rename,
        selection,
    } = req;
    let (names, c) = t.collection()?;
    let ch = c
        .chain_at(time)
        .ok_or_else(|| Error::NoBackups(t.backend.display_url()))?;
    refuse_incomplete(t, &c, &names, ch, time)?;
    let sets = ch.sets_at(time);
    let opts = RestoreOptions {
        dest,
        path,
        force,
        restore_owner,
        numeric_owner,
        rename,
        selection,
        tempdir: t.settings.tempdir.clone(),
        crypto: t.settings.crypto.clone(),
        plain: None,
    };
    restore::restore(
        t.backend.as_ref(),
        Some(&t.cache),
        &sets,
        &t.settings.prefixes,
        &opts,
    )
}

/// `list-current-files`: the newest full's time, then every path present
/// at `time`, handed to `sink`.
pub fn list_current_files(
    t: &Target,
    time: Timestamp,
    sink: &mut dyn status::ListSink,
) -> Result<u64> {
    let (names, c) = t.collection()?;
    // duplicity 3.2.1's first line: the full of the newest chain, whatever
    // the time asked for.
    sink.last_full(c.last_chain().map(|ch| ch.start()))
        .map_err(|e| Error::io("stdout", e))?;
    let ch = c
        .chain_at(time)
        .ok_or_else(|| Error::NoBackups(t.backend.display_url()))?;
    refuse_incomplete(t, &c, &names, ch, time)?;
    t.sync(&names)?;
    status::list_current_files(
        t.backend.as_ref(),
        &t.cache,
        &c,
        time,
        &t.settings.prefixes,
        t.settings.crypto.as_ref(),
        sink,
    )
}

pub fn collection_status(t: &Target) -> Result<String> {
    let (names, c) = t.collection()?;
    let mut out =
        status::collection_status(&c, "BackendWrapper", &t.cache.dir().display().to_string());
    // dupr's addition: which sets are incomplete, and why.
    for p in status_problems(t, &c, &names) {
        out.push_str(&format!(
            "Problem: {} ({}): {}\n",
            p.file,
            crate::time::pretty_local(p.time),
            p.what
        ));
    }
    Ok(out)
}

/// `collection-status` as data (`--json`).
pub fn collection_report(t: &Target) -> Result<status::StatusReport> {
    let (names, c) = t.collection()?;
    let problems = status_problems(t, &c, &names);
    Ok(status::status_report(&c, problems))
}

/// The incomplete sets of `c` and why; a set whose partial manifest is in
/// the cache is an interrupted backup.
fn status_problems(t: &Target, c: &Collection, names: &[String]) -> Vec<status::StatusProblem> {
    let partial: Vec<Timestamp> = t
        .cache
        .list()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| crate::naming::parse(n, &t.settings.prefixes))
        .filter(|p| p.partial && p.kind == FileType::Manifest)
        .map(|p| p.end)
        .collect();
    crate::check::incomplete_problems(c, names, &t.settings.prefixes)
        .into_iter()
        .map(|(end, what, file)| status::StatusProblem {
            what: if partial.contains(&end) {
                "incomplete set: an interrupted backup, which the next backup resumes".to_string()
            } else {
                what
            },
            file,
            time: end,
        })
        .collect()
}

/// `verify URL` without a source tree: read the target's volumes (or a
/// `percent` sample) and report damage with the paths it affects.
pub fn check(t: &Target, percent: f64) -> Result<crate::check::CheckReport> {
    let (names, c) = t.collection()?;
    if c.chains.is_empty() {
        return Err(Error::NoBackups(t.backend.display_url()));
    }
    // A file that cannot be cached is damage to report, not a reason to
    // stop: the check reads the target's copies itself.
    if let Err(e) = t.sync(&names) {
        tracing::warn!("{e}");
    }
    crate::check::check(
        t.backend.as_ref(),
        &t.cache,
        &c,
        &names,
        &t.settings.prefixes,
        &crate::check::CheckOptions {
            percent,
            tempdir: t.settings.tempdir.clone(),
            crypto: t.settings.crypto.as_ref(),
        },
    )
}

/// `collection-status --file-changed PATH`: the sets of the latest chain
/// whose Filelist names the path, as duplicity prints them.
pub fn file_changed(t: &Target, path: &Index) -> Result<String> {
    let (names, c) = t.collection()?;
    let mut out = String::new();
    let Some(chain) = c.last_chain() else {
        return Ok(out);
    };
    t.sync(&names)?;
    let mut rows = Vec::new();
    for (i, set) in chain.sets().enumerate() {
        let m = restore::load_manifest_with_filelist(
            t.backend.as_ref(),
            Some(&t.cache),
            set,
            &t.settings.prefixes,
            t.settings.crypto.as_ref(),
        )?;
        if let Some((change, _)) = m.filelist.iter().find(|(_, ix)| ix == path) {
            let kind = if i == 0 { "Full" } else { "Incremental" };
            let word = change.word();
            let title = format!("{}{}", word[..1].to_uppercase(), &word[1..]);
            rows.push(format!(
                "{kind:>20}   {:>30}  {title:>20}",
                crate::time::pretty_local(set.end)
            ));
        }
    }
    out.push_str("-------------------------\n");
    out.push_str(&format!(
        "File: {}\n",
        String::from_utf8_lossy(path.display_bytes())
    ));
    out.push_str(&format!("Total number of backup: {}\n", rows.len()));
    out.push_str(&format!(
        "{:>20}   {:>30}  {:>20}\n",
        "Type of backup set:", "Time:", "Type of file change:"
    ));
    for r in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("-------------------------\n");
    Ok(out)
}

/// `collection-status --show-changes-in-set N`: the Filelist of the N-th
/// newest set of the latest chain (0 = newest). As in duplicity, a negative
/// N counts from the oldest end (-1 = the full); with `--jsonstat` a negative
/// N means every set of the chain, newest first.
pub fn changes_in_set(t: &Target, n: i64, json: bool) -> Result<String> {
    let (names, c) = t.collection()?;
    let Some(chain) = c.last_chain() else {
        return Ok(String::new());
    };
    let mut sets: Vec<_> = chain.sets().collect();
    sets.reverse(); // newest first, as duplicity numbers them
    let chosen: Vec<_> = if json && n < 0 {
        sets.clone()
    } else {
        let len = sets.len() as i64;
        let i = if n < 0 { len + n } else { n };
        let set = usize::try_from(i)
            .ok()
            .and_then(|i| sets.get(i).copied())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--show-changes-in-set {n}: the latest chain has {len} set(s), numbered 0 (newest) to {} or -1 (oldest) to -{len}",
                    len - 1
                ))
            })?;
        vec![set]
    };
    t.sync(&names)?;
    let mut manifests = Vec::with_capacity(chosen.len());
    for set in &chosen {
        manifests.push(restore::load_manifest_with_filelist(
            t.backend.as_ref(),
            Some(&t.cache),
            set,
            &t.settings.prefixes,
            t.settings.crypto.as_ref(),
        )?);
    }
    if json {
        // duplicity 3's JSON form: each set's statistics and its changes.
        let mut out = String::from("{");
        for (k, (set, m)) in chosen.iter().zip(&manifests).enumerate() {
            let stat = set
                .jsonstat
                .as_deref()
                .and_then(|r| Cache::local_name(r, &t.settings.prefixes))
                .and_then(|l| std::fs::File::open(t.cache.path(&l)).ok())
                .and_then(|f| {
                    let mut s = String::new();
                    flate2::read::GzDecoder::new(f)
                        .read_to_string(&mut s)
                        .ok()?;
                    Some(s)
                })
                .unwrap_or_else(|| "{}".into());
            let kind = if set.is_full() { "full" } else { "inc" };
            out.push_str(if k == 0 { "\n" } else { ",\n" });
            out.push_str(&format!(
                "    \"{kind}-{}\": {{\n        \"json_stat\": {},\n        \"files_changed\": {{",
                crate::time::to_filename(set.end),
                stat.trim()
            ));
            for (i, (change, ix)) in m.filelist.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                out.push_str(&format!(
                    "{sep}\n            {}: \"{}\"",
                    json_string(&String::from_utf8_lossy(ix.display_bytes())),
                    change.word()
                ));
            }
            out.push_str("\n        }\n    }");
        }
        out.push_str("\n}\n");
        return Ok(out);
    }
    let (set, m) = (chosen[0], &manifests[0]);
    let width = m
        .filelist
        .iter()
        .map(|(_, ix)| ix.display_bytes().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = String::from("-------------------------\n");
    out.push_str(&format!(
        " Backup set time: {}\n",
        crate::time::pretty_local(set.end)
    ));
    out.push_str(&format!("Total number of changes: {}\n", m.filelist.len()));
    out.push_str(&format!(
        "{:<width$}  {:>20}\n",
        "File:", "Type of file change:"
    ));
    for (change, ix) in &m.filelist {
        out.push_str(&format!(
            "{:<width$}  {:>20}\n",
            String::from_utf8_lossy(ix.display_bytes()),
            change.word()
        ));
    }
    out.push_str("-------------------------\n");
    Ok(out)
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a deleting command removes (reference 6.6).
#[derive(Clone, Copy, Debug)]
pub enum Removal {
    /// Orphaned and incomplete sets, orphaned signatures.
    Cleanup,
    /// Whole chains ending before the time, never the latest chain.
    OlderThan(Timestamp),
    /// Chains older than the N-th newest full.
    AllButNFull(usize),
    /// Only the incrementals of chains older than the N-th newest full.
    AllIncOfButNFull(usize),
}

/// The outcome of a deleting command: what was (or, without force, would be)
/// deleted, and a report for the user.
#[derive(serde::Serialize)]
pub struct RemovalReport {
    pub files: Vec<String>,
    /// duplicity's listing of the sets concerned.
    #[serde(skip)]
    pub text: String,
}

/// Delete (with `force`) or list what `policy` selects, remote files first,
/// newest incrementals before their full, then the matching cache files.
pub fn remove(t: &Target, policy: Removal, force: bool) -> Result<RemovalReport> {
    use std::fmt::Write as _;
    let (names, c) = t.collection()?;
    let prefixes = &t.settings.prefixes;
    let mut doomed: Vec<String> = Vec::new();
    let mut text = String::new();
    // Manifest first: a set interrupted mid-deletion is then merely
    // incomplete (cleanup material), never a complete set missing volumes.
    let add_set = |doomed: &mut Vec<String>, s: &crate::chain::BackupSet| {
        doomed.extend(s.manifest.clone());
        doomed.extend(s.jsonstat.clone());
        doomed.extend(s.blocks.clone());
        doomed.extend(s.volumes.values().cloned());
        doomed.extend(s.sig_files(&names, prefixes));
    };
    let cutoff = |n: usize| -> Option<Timestamp> {
        if n == 0 || c.chains.len() < n {
            None
        } else {
            Some(c.chains[c.chains.len() - n].start())
        }
    };
    match policy {
        Removal::Cleanup => {
            for s in c.orphaned.iter().chain(c.incomplete.iter()) {
                add_set(&mut doomed, s);
            }
            doomed.extend(c.orphaned_sigs.iter().map(|s| s.name.clone()));
            // Block indexes of sets duplicity's own retention removed.
            doomed.extend(c.stray_blocks.iter().cloned());
            // Left by killed runs: deleted with --force, which holds the
            // target lock, so none can belong to a live run then.
            doomed.extend(names.iter().filter(|n| is_target_temp(n)).cloned());
            if doomed.is_empty() {
                text.push_str("No extraneous files found, nothing deleted in cleanup.\n");
            }
        }
        Removal::OlderThan(_) | Removal::AllButNFull(_) => {
            let limit = match policy {
                Removal::OlderThan(x) => Some(x),
                Removal::AllButNFull(n) => cutoff(n),
                _ => None,
            };
            let old: Vec<&crate::chain::Chain> = match limit {
                Some(limit) => c
                    .chains
                    .iter()
                    .take(c.chains.len().saturating_sub(1))
                    .filter(|ch| ch.end() < limit)
                    .collect(),
                None => Vec::new(),
            };
            if old.is_empty() {
                text.push_str("No old backup sets found, nothing deleted.\n");
            } else {
                text.push_str("Found old backup chains at the following times:\n");
                for ch in &old {
                    let _ = writeln!(text, "    {}", crate::time::pretty_local(ch.start()));
                    for s in ch.incs.iter().rev() {
                        add_set(&mut doomed, s);
                    }
                    add_set(&mut doomed, &ch.full);
                }
            }
            if let Some(limit) = limit {
                let kept_old: Vec<_> = c
                    .chains
                    .iter()
                    .filter(|ch| ch.start() < limit && ch.end() >= limit)
                    .collect();
                for ch in kept_old {
                    let _ = writeln!(
                        text,
                        "Chain starting {} has sets older than the limit that can't be deleted because newer sets depend on them.",
                        crate::time::pretty_local(ch.start())
                    );
                }
            }
        }
        Removal::AllIncOfButNFull(n) => {
            let old: Vec<&crate::chain::Chain> = match cutoff(n) {
                Some(limit) => c
                    .chains
                    .iter()
                    .filter(|ch| ch.end() < limit && !ch.incs.is_empty())
                    .collect(),
                None => Vec::new(),
            };
            if old.is_empty() {
                text.push_str("No old backup sets found, nothing deleted.\n");
            } else {
                text.push_str("Found old incremental sets in the chains at the following times:\n");
                for ch in &old {
                    let _ = writeln!(text, "    {}", crate::time::pretty_local(ch.start()));
                    for s in ch.incs.iter().rev() {
                        add_set(&mut doomed, s);
                    }
                }
            }
        }
    }
    if !doomed.is_empty() {
        if force {
            text.push_str("Deleting these files from the target:\n");
        } else {
            text.push_str(
                "Which can't be deleted without --force. These files would be deleted:\n",
            );
        }
        for f in &doomed {
            let _ = writeln!(text, "    {f}");
        }
        if !force {
            text.push_str("Run again with --force to delete them.\n");
        }
    }
    if force {
        for f in &doomed {
            // A signal stops between deletions (newest sets go first, so
            // what is left is still a readable archive).
            crate::interrupt::check()?;
            t.backend.delete(f)?;
            if let Some(local) = Cache::local_name(f, prefixes) {
                let _ = std::fs::remove_file(t.cache.path(&local));
            }
        }
    }
    Ok(RemovalReport {
        files: doomed,
        text,
    })
}

#[derive(serde::Serialize)]
pub struct VerifyReport {
    pub compared: u64,
    pub differences: Vec<String>,
    pub errors: u64,
}

/// `verify URL SRC`: exercise the archive at `time`; with `compare_data`,
/// compare it (or its `path`) with `source`.
pub fn verify(
    t: &Target,
    time: Timestamp,
    source: PathBuf,
    path: Option<Index>,
    compare_data: bool,
    selection: Option<Arc<Selection>>,
) -> Result<VerifyReport> {
    let (names, c) = t.collection()?;
    let ch = c
        .chain_at(time)
        .ok_or_else(|| Error::NoBackups(t.backend.display_url()))?;
    refuse_incomplete(t, &c, &names, ch, time)?;
    let sets = ch.sets_at(time);
    // As in duplicity, SOURCE is the local counterpart of what is verified:
    // with --path-to-restore P it is compared with the archive's P (a single
    // file with a file), not with SOURCE/P.
    let local_root = source;
    let sel = selection.clone();
    let select = Box::new(
        move |_: &Index, p: &std::path::Path, m: &crate::entry::Meta| match &sel {
            Some(s) => s.select(p.as_os_str().as_bytes(), p, m),
            None => Select::Include,
        },
    );
    let local = selected_walker(&local_root, select, selection).ok();
    let mut sink = crate::verify::VerifySink::new(
        local,
        path.clone().unwrap_or_default(),
        compare_data,
        t.settings.tempdir.clone(),
    )?;
    let opts = RestoreOptions {
        dest: PathBuf::new(),
        path,
        force: true,
        restore_owner: false,
        numeric_owner: false,
        rename: Vec::new(),
        selection: None,
        tempdir: t.settings.tempdir.clone(),
        crypto: t.settings.crypto.clone(),
        plain: None,
    };
    restore::collate(
        t.backend.as_ref(),
        Some(&t.cache),
        &sets,
        &t.settings.prefixes,
        &opts,
        &mut sink,
    )?;
    Ok(VerifyReport {
        compared: sink.compared,
        differences: sink.differences,
        errors: sink.errors,
    })
}
