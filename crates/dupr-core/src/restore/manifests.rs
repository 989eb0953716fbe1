//! Reading a set's manifest: the cached plain copy or the target's, its
//! integrity checked, and what a manifest that does not open means
//! (a wrong passphrase or damage).

use super::*;

/// Load a set's manifest: the cached plain copy, else the remote one.
/// The manifest without its Filelist (which can hold a line per file of the
/// backup and is not needed here), read to the end so an encrypted
/// manifest still reaches its integrity check.
pub(super) fn manifest_head(r: Box<dyn Read + Send>) -> io::Result<Vec<u8>> {
    use std::io::BufRead;
    let mut r = io::BufReader::new(r);
    let mut text = Vec::new();
    let mut line = Vec::new();
    let mut in_filelist = false;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(text);
        }
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"filelist") {
            in_filelist = true;
            continue;
        }
        // Filelist items are indented; a Filelist written before the
        // volume records (duplicity's other layout) ends at "Volume".
        if in_filelist && line.first().is_some_and(|c| c.is_ascii_whitespace()) {
            continue;
        }
        in_filelist = false;
        text.extend_from_slice(&line);
    }
}

/// A set's manifest without its Filelist (all a restore needs), read from
/// the cache when it has a copy, else from the target.
pub fn load_manifest(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Result<Manifest> {
    read_manifest(backend, cache, set, prefixes, crypto, false, false)
}

/// A set's manifest with its Filelist (the changed paths), for status
/// reports; restores never need it.
pub fn load_manifest_with_filelist(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Result<Manifest> {
    read_manifest(backend, cache, set, prefixes, crypto, false, true)
}

/// The target's own copy of a set's manifest, ignoring the cache.
pub fn load_remote_manifest(
    backend: &dyn Backend,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Result<Manifest> {
    read_manifest(backend, None, set, prefixes, crypto, true, false)
}

/// `name` failed to decrypt or failed its integrity check. Symmetric
/// OpenPGP cannot tell a wrong passphrase from damage (no key check before
/// the MDC at the end), so read other encrypted files of the archive
/// (`others`; manifests first, they are small) to their end: if the
/// passphrase opens one, `name` is damaged; else the passphrase is wrong.
pub fn wrong_passphrase_or_damaged(
    backend: &dyn Backend,
    name: &str,
    why: &str,
    others: &[String],
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Error {
    let opens = |other: &String| -> bool {
        let Some(p) = naming::parse(other, prefixes) else {
            return false;
        };
        let Ok(codec) = Codec::for_name(true, p.gzipped, crypto, other) else {
            return false;
        };
        backend
            .open(other)
            .ok()
            .and_then(|r| crypt::decoder(r, &codec).ok())
            .is_some_and(|mut r| io::copy(&mut r, &mut io::sink()).is_ok())
    };
    let mut candidates: Vec<(u8, &String)> = others
        .iter()
        .filter(|o| *o != name)
        .filter_map(|o| {
            let p = naming::parse(o, prefixes)?;
            if !p.encrypted || p.partial {
                return None;
            }
            let rank = match p.kind {
                naming::FileType::Manifest => 0,
                naming::FileType::Signature
                | naming::FileType::JsonStat
                | naming::FileType::Blocks => 1,
                naming::FileType::Volume(_) => 2,
            };
            Some((rank, o))
        })
        .collect();
    candidates.sort();
    match candidates.iter().take(2).find(|(_, o)| opens(o)) {
        Some((_, other)) => Error::Damaged {
            name: name.to_string(),
            reason: format!("{why} (the same passphrase decrypts {other})"),
        },
        None => Error::WrongPassphrase,
    }
}

/// [`read_manifest_inner`], telling a damaged encrypted manifest from a
/// wrong passphrase.
pub(super) fn read_manifest(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    remote_only: bool,
    with_filelist: bool,
) -> Result<Manifest> {
    let r = read_manifest_inner(
        backend,
        cache,
        set,
        prefixes,
        crypto,
        remote_only,
        with_filelist,
    );
    let name = set.manifest.as_deref().unwrap_or_default();
    let from_cache = !remote_only
        && cache
            .and_then(|c| Cache::local_name(name, prefixes).map(|l| c.path(&l)))
            .is_some_and(|p| p.exists());
    let encrypted = !from_cache && naming::parse(name, prefixes).is_some_and(|p| p.encrypted);
    match r {
        Err(Error::WrongPassphrase) if encrypted => {
            let others: Vec<String> = set.volumes.values().cloned().collect();
            Err(wrong_passphrase_or_damaged(
                backend,
                name,
                "it does not decrypt",
                &others,
                prefixes,
                crypto,
            ))
        }
        // Unreadable after decryption began: damage, or garbage from a
        // wrong key.
        Err(Error::BadManifest { reason, .. } | Error::Damaged { reason, .. }) if encrypted => {
            let others: Vec<String> = set.volumes.values().cloned().collect();
            Err(wrong_passphrase_or_damaged(
                backend, name, &reason, &others, prefixes, crypto,
            ))
        }
        r => r,
    }
}

pub(super) fn read_manifest_inner(
    backend: &dyn Backend,
    cache: Option<&Cache>,
    set: &BackupSet,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    remote_only: bool,
    with_filelist: bool,
) -> Result<Manifest> {
    let name = set.manifest.as_deref().ok_or_else(|| Error::BadManifest {
        name: format!("set {}", crate::time::to_filename(set.end)),
        reason: "missing".into(),
    })?;
    let bad = |reason: String| Error::BadManifest {
        name: name.to_string(),
        reason,
    };
    let cached = cache
        .and_then(|c| Cache::local_name(name, prefixes).map(|l| c.path(&l)))
        .filter(|p| p.exists() && !remote_only);
    let reader: Box<dyn Read + Send> = match cached {
        Some(p) => Box::new(File::open(&p).ctx(&p)?),
        None => {
            let p = naming::parse(name, prefixes).ok_or_else(|| bad("unparsable name".into()))?;
            let codec = Codec::for_name(p.encrypted, p.gzipped, crypto, name)?;
            crypt::decoder(backend.open(name)?, &codec)?
        }
    };
    let read_err = |e: io::Error| match crypt::signature_failure(&e) {
        Some(sig) => sig,
        None => bad(e.to_string()),
    };
    let text = if with_filelist {
        let mut v = Vec::new();
        let mut r = reader;
        r.read_to_end(&mut v).map_err(read_err)?;
        v
    } else {
        manifest_head(reader).map_err(read_err)?
    };
    let m = Manifest::parse(&text).map_err(|e| bad(e.to_string()))?;
    // duplicity (0.6 on) and dupr write "Hash SHA1 <40 hex>" for every
    // volume; without it the volume's check would be skipped silently.
    for (n, v) in &m.volumes {
        let ok = v.hash.as_ref().is_some_and(|(alg, h)| {
            alg == "SHA1" && h.len() == 40 && h.bytes().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(bad(format!(
                "volume {n} has no valid \"Hash SHA1\" line (damaged manifest)"
            )));
        }
    }
    // Every set has at least one volume; a manifest that lists none (empty
    // or garbage text) would otherwise look like an empty backup.
    if m.volumes.is_empty() && !set.volumes.is_empty() {
        return Err(bad(format!(
            "it lists no volumes, but the target holds {} volume file(s) of this set",
            set.volumes.len()
        )));
    }
    Ok(m)
}
