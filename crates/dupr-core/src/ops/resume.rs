//! Resuming an interrupted backup: find what the partial set on the target
//! holds and check it before anything is appended.

use crate::backup::{self, BackupConfig};
use crate::cache::Cache;
use crate::crypt::Codec;
use crate::error::{Error, Result};
use crate::naming::FileType;

use super::Target;

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

/// The newest set the cache holds a partial manifest of; older ones are
/// discarded (only the newest can be continued).
fn newest_partial(t: &Target) -> Result<Option<crate::naming::ParsedName>> {
    let prefixes = &t.settings.prefixes;
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
    Ok(newest)
}

/// The SHA-1 (hex) of the stored file `name`.
fn stored_sha1(t: &Target, name: &str) -> Result<String> {
    let mut h = <sha1::Sha1 as sha1::Digest>::new();
    let mut r = t.backend.open(name)?;
    std::io::copy(&mut r, &mut HashWriter(&mut h)).map_err(|e| Error::io(name, e))?;
    Ok(hex::encode(sha1::Digest::finalize(h)))
}

/// Prove the passphrase (and the codec) on volume 1, as duplicity does:
/// read it whole, so the integrity check at its end (MDC, gzip CRC) rules
/// out a wrong key that happens to decrypt to plausible bytes.
///
/// An intact volume (its SHA-1 is `want`) that does not decrypt means a
/// wrong passphrase: an error, and the set is kept. A damaged one cannot be
/// continued: `Ok(Err(why))`.
fn prove_passphrase(
    t: &Target,
    first: &str,
    codec: &Codec,
    want: Option<String>,
) -> Result<std::result::Result<(), Error>> {
    let proof = crate::crypt::decoder(t.backend.open(first)?, codec).and_then(|mut r| {
        std::io::copy(&mut r, &mut std::io::sink())
            .map(|_| ())
            .map_err(|e| match crate::crypt::signature_failure(&e) {
                Some(sig) => sig,
                None if e.to_string().to_lowercase().contains("passphrase") => {
                    Error::WrongPassphrase
                }
                None => Error::io(first, e),
            })
    });
    let Err(e) = proof else {
        return Ok(Ok(()));
    };
    // Symmetric OpenPGP cannot tell a wrong passphrase from damage
    // otherwise: the stored hash decides.
    let intact = want.is_some_and(|want| stored_sha1(t, first).is_ok_and(|got| got == want));
    if intact && matches!(e, Error::SecretKey(_)) {
        // Public keys without the secret one here (duplicity skips this
        // proof for them too): an intact volume 1 is enough.
        tracing::info!("volume 1 of the interrupted backup not decrypted: {e}");
        Ok(Ok(()))
    } else if intact || matches!(e, Error::WrongPassphrase) {
        Err(Error::WrongPassphrase)
    } else {
        Ok(Err(e))
    }
}

/// Whether the cache holds a partial manifest (an interrupted set).
pub(super) fn has_partial(t: &Target) -> bool {
    t.cache.list().is_ok_and(|names| {
        names.iter().any(|n| {
            crate::naming::parse(n, &t.settings.prefixes)
                .is_some_and(|p| p.partial && p.kind == FileType::Manifest)
        })
    })
}

/// The newest set the cache holds a partial manifest of, if it can be
/// continued; sets that cannot are removed here so they never block a run.
pub(super) fn find_resume(t: &Target, cfg: &BackupConfig) -> Result<Option<backup::Resume>> {
    let prefixes = &t.settings.prefixes;
    let remote = t.backend.list()?;
    let Some(set) = newest_partial(t)? else {
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
    let first = vol_name(1);
    let codec = Codec::for_name(enc, gz, t.settings.crypto.as_ref(), &first)?;
    let first_hash = volumes.first().and_then(|(_, v)| v.hash.clone());
    if let Err(damage) = prove_passphrase(t, &first, &codec, first_hash.map(|(_, h)| h))? {
        return give_up(&format!("volume 1 is damaged: {damage}"));
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
            v.hash = Some(("SHA1".into(), stored_sha1(t, &vol_name(*n))?));
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
