//! `verify URL` without a source tree (a dupr extension): read the target's
//! volumes (all, or a sample with `--read-data-subset`), check each against
//! its manifest's SHA-1, decrypt it and parse its tar to the end, and for
//! every volume that is missing or damaged name the exact paths it holds,
//! taken from the set's signature file.

use std::io::Read;
use std::path::PathBuf;

use crate::backend::Backend;
use crate::cache::Cache;
use crate::chain::{BackupSet, Collection};
use crate::crypt::{self, Codec, Crypto};
use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::manifest::VolumeInfo;
use crate::naming::{self, Prefixes};
use crate::sigtar::SigtarReader;
use std::sync::Arc;

/// One damaged or missing file and what it takes with it.
#[derive(serde::Serialize)]
pub struct Problem {
    /// The file at fault (a volume, manifest or signature file; "volume N"
    /// when the set does not list that volume).
    pub file: String,
    /// What is wrong with it.
    pub what: String,
    /// The set it belongs to, e.g. "full set of Tue Nov 24 ...".
    pub set: String,
    /// Paths whose data or state in that set lives in the file.
    pub affected: Vec<Index>,
    /// Later sets of the chain that build on this one.
    pub later_sets: usize,
    /// `affected` lists the paths the file holds (a volume); false for a
    /// problem of the whole set (manifest, signature file, completeness).
    pub per_path: bool,
}

/// What `verify URL` without a source found.
#[derive(Default, serde::Serialize)]
pub struct CheckReport {
    /// Sets of the target's chains checked.
    pub sets: usize,
    /// Volumes their manifests list.
    pub volumes_total: usize,
    /// Volumes read (all of them, or the day's sample).
    pub volumes_read: usize,
    /// Stored bytes of the volumes read.
    pub bytes_read: u64,
    /// Everything found wrong; empty for a sound target.
    pub problems: Vec<Problem>,
}

/// Whether volume `name` is in today's `percent` sample: a hash of the name
/// and the day, so daily runs cover different volumes. (std's
/// `DefaultHasher` may change with a Rust release; that only moves the
/// sample.)
fn sampled(name: &str, percent: f64, day: i64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (name, day).hash(&mut h);
    (h.finish() % 10_000) as f64 / 100.0 < percent
}

pub struct CheckOptions<'a> {
    pub percent: f64,
    pub tempdir: PathBuf,
    pub crypto: Option<&'a Arc<Crypto>>,
}

pub fn check(
    backend: &dyn Backend,
    cache: &Cache,
    c: &Collection,
    names: &[String],
    prefixes: &Prefixes,
    opts: &CheckOptions,
) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let day = crate::time::now() / 86_400;
    for chain in &c.chains {
        let sets: Vec<&BackupSet> = chain.sets().collect();
        for (i, set) in sets.iter().enumerate() {
            r.sets += 1;
            let label = format!(
                "{} set of {}",
                if set.is_full() { "full" } else { "incremental" },
                crate::time::pretty_local(set.end)
            );
            let later_sets = sets.len() - 1 - i;
            // The target's copy: the cache's may hide damage to it.
            let m = match crate::restore::load_remote_manifest(backend, set, prefixes, opts.crypto)
            {
                Ok(m) => m,
                Err(e) => {
                    r.problems.push(Problem {
                        file: set.manifest.clone().unwrap_or_default(),
                        what: e.to_string(),
                        set: label,
                        affected: Vec::new(),
                        later_sets,
                        per_path: false,
                    });
                    continue;
                }
            };
            // The set's signature file: present, and the one its manifest
            // recorded (the target's copy, which a fresh cache would take).
            let sig_problem = match set.sig_files(names, prefixes).first() {
                None => Some((
                    expected_sig_name(set, prefixes),
                    "signature file missing from the target".to_string(),
                )),
                Some(sig) => match &m.sigtar_hash {
                    None => None,
                    Some(want) => match remote_sig_hash(backend, sig, prefixes, opts.crypto, want.algo) {
                        Ok(got) if got == *want => None,
                        Ok(got) => Some((
                            sig.clone(),
                            format!(
                                "signature file does not belong to this set: its {} hash {} differs from the manifest's record {} (replaced by another set's?)",
                                want.algo.name(),
                                got.hex,
                                want.hex
                            ),
                        )),
                        Err(e) => Some((sig.clone(), format!("signature file unreadable: {e}"))),
                    },
                },
            };
            if let Some((file, what)) = sig_problem {
                r.problems.push(Problem {
                    file,
                    what,
                    set: label.clone(),
                    affected: Vec::new(),
                    later_sets,
                    per_path: false,
                });
            }
            let mut damaged: Vec<(String, String, VolumeInfo)> = Vec::new();
            for (n, v) in &m.volumes {
                r.volumes_total += 1;
                let Some(name) = set.volumes.get(n) else {
                    damaged.push((
                        format!("volume {n}"),
                        "missing from the target".into(),
                        v.clone(),
                    ));
                    continue;
                };
                if !sampled(name, opts.percent, day) {
                    continue;
                }
                r.volumes_read += 1;
                match read_volume(backend, name, v, prefixes, opts) {
                    Ok(bytes) => r.bytes_read += bytes,
                    Err(e) => damaged.push((name.clone(), e.to_string(), v.clone())),
                }
            }
            if damaged.is_empty() {
                continue;
            }
            let paths = set_paths(backend, cache, set, names, prefixes, opts.crypto);
            for (file, what, v) in damaged {
                let affected = match &paths {
                    // Entries from the volume's first to its last (a file
                    // split across volumes belongs to each of them).
                    Ok(all) => all
                        .iter()
                        .filter(|ix| v.start <= **ix && **ix <= v.end)
                        .cloned()
                        .collect(),
                    Err(_) => Vec::new(),
                };
                r.problems.push(Problem {
                    file,
                    what,
                    set: label.clone(),
                    affected,
                    later_sets,
                    per_path: true,
                });
            }
        }
    }
    for (end, what, file) in incomplete_problems(c, names, prefixes) {
        r.problems.push(Problem {
            file,
            what,
            set: format!("set of {}", crate::time::pretty_local(end)),
            affected: Vec::new(),
            later_sets: 0,
            per_path: false,
        });
    }
    // Rebuild each chain's latest state (every delta applied) and check
    // each file against the content hash recorded at backup time; only for
    // a full read of chains whose files all checked out above.
    if opts.percent >= 100.0 && r.problems.is_empty() {
        for chain in &c.chains {
            let sets: Vec<&BackupSet> = chain.sets().collect();
            let ropts = crate::restore::RestoreOptions {
                force: true,
                ..crate::restore::RestoreOptions::new(
                    opts.tempdir.clone(),
                    opts.tempdir.clone(),
                    opts.crypto.cloned(),
                )
            };
            let mut sink = Discard {
                dir: opts.tempdir.clone(),
            };
            if let Err(e) =
                crate::restore::collate(backend, Some(cache), &sets, prefixes, &ropts, &mut sink)
            {
                let file = match &e {
                    Error::ContentMismatch { path, .. } => path.clone(),
                    _ => chain
                        .incs
                        .last()
                        .unwrap_or(&chain.full)
                        .manifest
                        .clone()
                        .unwrap_or_default(),
                };
                r.problems.push(Problem {
                    file,
                    what: e.to_string(),
                    set: format!("state of {}", crate::time::pretty_local(chain.end())),
                    affected: Vec::new(),
                    later_sets: 0,
                    per_path: false,
                });
            }
        }
    }
    Ok(r)
}

/// Rebuilt files, checked by `collate`, then dropped.
struct Discard {
    dir: PathBuf,
}

impl crate::restore::Sink for Discard {
    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".dupr-check.")
            .tempfile_in(&self.dir)
            .ctx(&self.dir)
    }
    fn place(
        &mut self,
        _: &Index,
        _: &crate::entry::Meta,
        _: Option<tempfile::NamedTempFile>,
    ) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
    fn error(&mut self) {}
}

/// Sets without a manifest, complete sets that fit no chain, and signature
/// files with no set: (time, what, file).
pub fn incomplete_problems(
    c: &Collection,
    names: &[String],
    prefixes: &Prefixes,
) -> Vec<(crate::time::Timestamp, String, String)> {
    let mut out = Vec::new();
    for s in &c.incomplete {
        let man = naming::name(
            &naming::ParsedName {
                set: s.set_type,
                kind: naming::FileType::Manifest,
                start: s.start,
                end: s.end,
                encrypted: s.encrypted,
                gzipped: false,
                partial: false,
            },
            prefixes,
        );
        out.push((
            s.end,
            format!(
                "incomplete set: its manifest is missing ({} volume file(s) present); an interrupted backup resumes it, otherwise `dupr cleanup` removes it",
                s.volumes.len()
            ),
            man,
        ));
    }
    for s in &c.orphaned {
        out.push((
            s.end,
            "set not part of any chain: a set it builds on is missing".to_string(),
            s.manifest.clone().unwrap_or_default(),
        ));
    }
    let in_chain = |p: &naming::ParsedName| {
        c.chains
            .iter()
            .flat_map(|ch| ch.sets())
            .chain(c.orphaned.iter())
            .chain(c.incomplete.iter())
            .any(|s| s.set_type == p.set && s.start == p.start && s.end == p.end)
    };
    for n in names {
        if let Some(p) = naming::parse(n, prefixes) {
            if p.kind == naming::FileType::Signature && !p.partial && !in_chain(&p) {
                out.push((
                    p.end,
                    "signature file without its set (manifest and volumes missing)".to_string(),
                    n.clone(),
                ));
            }
        }
    }
    out
}

fn expected_sig_name(set: &BackupSet, prefixes: &Prefixes) -> String {
    naming::name(
        &naming::ParsedName {
            set: set.set_type,
            kind: naming::FileType::Signature,
            start: set.start,
            end: set.end,
            encrypted: set.encrypted,
            gzipped: !set.encrypted,
            partial: false,
        },
        prefixes,
    )
}

/// SHA-256 of the target's copy of a signature file, decoded.
fn remote_sig_hash(
    backend: &dyn Backend,
    sig: &str,
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
    algo: crate::content::Algo,
) -> Result<crate::content::ContentHash> {
    let p = naming::parse(sig, prefixes).expect("listed names parse");
    let codec = Codec::for_name(p.encrypted, p.gzipped, crypto, sig)?;
    let mut r = crypt::decoder(backend.open(sig)?, &codec)?;
    let mut h = crate::content::Hasher::new(algo);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::BadSignature {
            name: sig.to_string(),
            reason: e.to_string(),
        })?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// Read one volume whole: SHA-1 against the manifest, then decrypt and
/// parse every tar entry to the end. Returns the stored bytes.
fn read_volume(
    backend: &dyn Backend,
    name: &str,
    v: &VolumeInfo,
    prefixes: &Prefixes,
    opts: &CheckOptions,
) -> Result<u64> {
    let p = naming::parse(name, prefixes).expect("listed names parse");
    let codec = Codec::for_name(p.encrypted, p.gzipped, opts.crypto, name)?;
    let (path, temp) = match backend.local_path(name) {
        Some(p) => (p, None),
        None => {
            let tmp = opts
                .tempdir
                .join(format!(".dupr-check.{}", std::process::id()));
            backend.get(name, &tmp)?;
            (tmp.clone(), Some(tmp))
        }
    };
    let res = (|| -> Result<u64> {
        let size = std::fs::metadata(&path).ctx(&path)?.len();
        if let Some((alg, want)) = &v.hash {
            if alg.eq_ignore_ascii_case("SHA1") {
                let got = crypt::sha1_file(&path).ctx(&path)?;
                if got != *want {
                    return Err(Error::HashMismatch {
                        name: name.to_string(),
                        expected: want.clone(),
                        got,
                    });
                }
            }
        }
        let f = std::fs::File::open(&path).ctx(&path)?;
        let corrupt = |e: std::io::Error| {
            crypt::signature_failure(&e).unwrap_or_else(|| Error::CorruptVolume {
                name: name.to_string(),
                reason: e.to_string(),
            })
        };
        let mut tar = crate::tar::Reader::new(crypt::decoder(f, &codec)?);
        while tar.next_header().map_err(corrupt)?.is_some() {
            std::io::copy(&mut tar, &mut std::io::sink()).map_err(corrupt)?;
        }
        // The rest (padding, then the decoder's own checks: gzip CRC, MDC).
        let mut rest = tar.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink()).map_err(corrupt)?;
        Ok(size)
    })();
    if let Some(t) = temp {
        let _ = std::fs::remove_file(t);
    }
    res
}

/// Every path the set's signature file records (the paths its volumes hold).
fn set_paths(
    backend: &dyn Backend,
    cache: &Cache,
    set: &BackupSet,
    names: &[String],
    prefixes: &Prefixes,
    crypto: Option<&Arc<Crypto>>,
) -> Result<Vec<Index>> {
    let sigs = set.sig_files(names, prefixes);
    let sig = sigs.first().ok_or_else(|| Error::BadSignature {
        name: format!(
            "signatures of the set at {}",
            crate::time::to_filename(set.end)
        ),
        reason: "missing".into(),
    })?;
    let local = Cache::local_name(sig, prefixes).map(|l| cache.path(&l));
    let reader: Box<dyn Read + Send> = match local.filter(|p| p.exists()) {
        Some(p) => crypt::decoder(std::fs::File::open(&p).ctx(&p)?, &Codec::GZIP)?,
        None => {
            let p = naming::parse(sig, prefixes).expect("parsed above");
            let codec = Codec::for_name(p.encrypted, p.gzipped, crypto, sig)?;
            crypt::decoder(backend.open(sig)?, &codec)?
        }
    };
    let mut r = SigtarReader::new(reader, sig, false);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        out.push(e.index);
    }
    Ok(out)
}
