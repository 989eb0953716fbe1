//! The backup pipeline: walk → select → (snapshot | delta) → tar blocks →
//! volumes (own thread: compression/encryption, upload) and, beside it, the
//! signature tar. The manifest is uploaded last, so a set without one is
//! visibly incomplete.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backend::Backend;
use crate::cache::Cache;
use crate::crypt::Codec;
use crate::entry::{entry_name, Kind, Role};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{Change, Manifest, VolumeInfo};
use crate::naming::{self, FileType, ParsedName, Prefixes, SetType};
use crate::signature::{block_len, SigBuilder};
use crate::sigtar::SigtarWriter;
use crate::tar;
use crate::time::{self, Timestamp};
use crate::volume::{Block, VolumeWriter};
use crate::walk::Walker;

/// Live counters a progress display can poll.
#[derive(Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct BackupConfig {
    pub source: PathBuf,
    /// The source as typed, for the manifest's Localdir.
    pub source_arg: Vec<u8>,
    pub volsize: u64,
    pub codec: Codec,
    pub max_blocksize: Option<u32>,
    pub dry_run: bool,
    pub hostname: Vec<u8>,
    pub prefixes: Prefixes,
    pub counters: Option<Arc<Counters>>,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    pub source_files: u64,
    pub source_file_size: u64,
    pub new_files: u64,
    pub new_file_size: u64,
    pub deleted_files: u64,
    pub changed_files: u64,
    pub changed_file_size: u64,
    pub delta_entries: u64,
    pub raw_delta_size: u64,
    pub volumes: u32,
    pub dest_size: u64,
    pub errors: u64,
}

impl Stats {
    /// duplicity's statistics block.
    pub fn render(&self, elapsed_secs: f64) -> String {
        let sz = |b: u64| human(b);
        let mut s = String::new();
        s.push_str("--------------[ Backup Statistics ]--------------\n");
        s.push_str(&format!(
            "StartTime {}.00 ({})\n",
            self.start_time,
            time::pretty_local(self.start_time)
        ));
        s.push_str(&format!(
            "EndTime {}.00 ({})\n",
            self.end_time,
            time::pretty_local(self.end_time)
        ));
        s.push_str(&format!(
            "ElapsedTime {:.2} ({})\n",
            elapsed_secs,
            secs_pretty(elapsed_secs)
        ));
        s.push_str(&format!("SourceFiles {}\n", self.source_files));
        s.push_str(&format!(
            "SourceFileSize {} ({})\n",
            self.source_file_size,
            sz(self.source_file_size)
        ));
        s.push_str(&format!("NewFiles {}\n", self.new_files));
        s.push_str(&format!(
            "NewFileSize {} ({})\n",
            self.new_file_size,
            sz(self.new_file_size)
        ));
        s.push_str(&format!("DeletedFiles {}\n", self.deleted_files));
        s.push_str(&format!("ChangedFiles {}\n", self.changed_files));
        s.push_str(&format!(
            "ChangedFileSize {} ({})\n",
            self.changed_file_size,
            sz(self.changed_file_size)
        ));
        s.push_str(&format!("ChangedDeltaSize {} ({})\n", 0, sz(0)));
        s.push_str(&format!("DeltaEntries {}\n", self.delta_entries));
        s.push_str(&format!(
            "RawDeltaSize {} ({})\n",
            self.raw_delta_size,
            sz(self.raw_delta_size)
        ));
        s.push_str(&format!(
            "TotalDestinationSizeChange {} ({})\n",
            self.dest_size,
            sz(self.dest_size)
        ));
        s.push_str(&format!("Errors {}\n", self.errors));
        s.push_str("-------------------------------------------------\n");
        s
    }
}

pub fn human(b: u64) -> String {
    let units = ["bytes", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

fn secs_pretty(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2} seconds")
    } else {
        let m = (s / 60.0).floor();
        format!(
            "{} minute{} {:.2} seconds",
            m,
            if m == 1.0 { "" } else { "s" },
            s - m * 60.0
        )
    }
}

/// Drop `.` components and repeated/trailing slashes (Localdir as duplicity writes it).
pub fn canonical_localdir(arg: &[u8]) -> Vec<u8> {
    let abs = arg.starts_with(b"/");
    let parts: Vec<&[u8]> = arg
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let mut out = if abs { b"/".to_vec() } else { Vec::new() };
    out.extend_from_slice(&parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// Read until `buf` is full or EOF.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

const CHUNK: usize = 65536;

/// Run a full backup of `cfg.source` to `backend`.
pub fn full_backup(
    cfg: &BackupConfig,
    backend: &dyn Backend,
    cache: &Cache,
    select: crate::walk::Selector<'_>,
) -> Result<Stats> {
    std::fs::symlink_metadata(&cfg.source).map_err(|_| Error::SourceMissing(cfg.source.clone()))?;
    let remote = backend.list()?;
    // Set times are whole seconds; never reuse a time the target already has.
    let mut t = time::now();
    for n in &remote {
        if let Some(p) = naming::parse(n, &cfg.prefixes) {
            if p.end >= t {
                t = p.end + 1;
            }
        }
    }
    let mut stats = Stats {
        start_time: t,
        ..Default::default()
    };
    let set = ParsedName {
        set: SetType::Full,
        kind: FileType::Manifest,
        start: None,
        end: t,
        encrypted: false,
        gzipped: false,
        partial: false,
    };
    let walker =
        Walker::new(&cfg.source, select).map_err(|_| Error::SourceMissing(cfg.source.clone()))?;

    if cfg.dry_run {
        let mut walker = walker;
        for e in walker.by_ref() {
            stats.source_files += 1;
            stats.source_file_size += e.meta.size;
            if e.meta.kind == Kind::File {
                stats.new_files += 1;
                stats.new_file_size += e.meta.size;
            }
        }
        stats.errors = walker.errors;
        stats.end_time = time::now();
        return Ok(stats);
    }

    let staging = backend
        .staging_dir()
        .unwrap_or_else(|| cache.dir().to_path_buf());
    let (enc, gz) = cfg.codec.flags();
    let name_of = |kind: FileType, encrypted: bool, gzipped: bool, partial: bool| {
        naming::name(
            &ParsedName {
                kind,
                encrypted,
                gzipped,
                partial,
                ..set
            },
            &cfg.prefixes,
        )
    };
    let sig_local_part = cache.path(&name_of(FileType::Signature, false, true, true));
    let sig_local = cache.path(&name_of(FileType::Signature, false, true, false));
    let sig_remote_name = name_of(FileType::Signature, enc, gz, false);
    let man_part = cache.path(&name_of(FileType::Manifest, false, false, true));
    let man_local = cache.path(&name_of(FileType::Manifest, false, false, false));
    let man_remote_name = name_of(FileType::Manifest, enc, false, false);
    let filelist_path = cache.path(&format!(".dupr-filelist.{}", std::process::id()));

    let remote_sig_tmp = staging.join(format!(
        ".dupr-tmp.{}.{}",
        std::process::id(),
        sig_remote_name
    ));
    let mut sigtar = SigtarWriter::create(
        &sig_local_part,
        (cfg.codec != Codec::Gzip).then_some((remote_sig_tmp.as_path(), cfg.codec)),
    )?;
    let mut manifest = Manifest {
        hostname: cfg.hostname.clone(),
        localdir: canonical_localdir(&cfg.source_arg),
        ..Default::default()
    };
    std::fs::write(&man_part, manifest.header_bytes()).ctx(&man_part)?;
    let mut filelist = BufWriter::new(File::create(&filelist_path).ctx(&filelist_path)?);
    let mut filelist_count = 0u64;

    let (tx, rx) = crossbeam_channel::bounded::<Block>(64);
    let result = std::thread::scope(|s| -> Result<(u32, Vec<(u32, VolumeInfo)>)> {
        let writer = s.spawn(|| -> Result<(u32, Vec<(u32, VolumeInfo)>)> {
            let mut vw = VolumeWriter::new(
                backend,
                staging.clone(),
                cfg.codec,
                set,
                cfg.prefixes.clone(),
                cfg.volsize,
            );
            let mut vols = Vec::new();
            let mut record = |n: u32, v: VolumeInfo| -> Result<()> {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&man_part)
                    .ctx(&man_part)?;
                f.write_all(&Manifest::volume_bytes(n, &v)).ctx(&man_part)?;
                vols.push((n, v));
                Ok(())
            };
            for b in rx.iter() {
                if let Err(e) = vw.add(b, &mut record) {
                    vw.abort();
                    return Err(e);
                }
            }
            let n = vw.finish(&mut record)?;
            Ok((n, vols))
        });

        let produced = (|| -> Result<()> {
            let mut walker = walker;
            let mut buf = vec![0u8; CHUNK];
            while let Some(e) = walker.next() {
                stats.source_files += 1;
                if let Some(c) = &cfg.counters {
                    c.files.fetch_add(1, Ordering::Relaxed);
                }
                let send = |b: Block| {
                    tx.send(b)
                        .map_err(|_| Error::Usage("volume writer stopped".into()))
                };
                if e.meta.kind != Kind::File {
                    let mut data = Vec::with_capacity(1024);
                    e.meta
                        .header(
                            entry_name(
                                Role::Snapshot,
                                &e.index,
                                None,
                                e.meta.kind == Kind::Dir,
                                true,
                            ),
                            0,
                        )
                        .encode(&mut data);
                    send(Block {
                        index: e.index.clone(),
                        chunk: None,
                        data,
                    })?;
                    sigtar.add_meta(&e.index, Some(&e.meta))?;
                    continue;
                }
                let mut f = match File::open(&e.path) {
                    Ok(f) => f,
                    Err(err) => {
                        walker.errors += 1;
                        tracing::warn!(
                            "Error accessing possibly locked file {}: {}",
                            e.path.display(),
                            err
                        );
                        continue;
                    }
                };
                let mut sig = SigBuilder::new(block_len(e.meta.size, cfg.max_blocksize));
                let mut n = 0u64;
                let mut total = 0u64;
                loop {
                    let got = read_full(&mut f, &mut buf).ctx(&e.path)?;
                    sig.update(&buf[..got]);
                    total += got as u64;
                    let first_short = n == 0 && got < CHUNK;
                    let last = got < CHUNK;
                    let chunk = if first_short {
                        None
                    } else {
                        n += 1;
                        Some(n)
                    };
                    let name = entry_name(Role::Snapshot, &e.index, chunk, false, true);
                    let mut data = Vec::with_capacity(got + 2048);
                    e.meta.header(name, got as u64).encode(&mut data);
                    data.extend_from_slice(&buf[..got]);
                    tar::pad_block(&mut data);
                    let mchunk = if last { None } else { chunk };
                    send(Block {
                        index: e.index.clone(),
                        chunk: mchunk,
                        data,
                    })?;
                    if let Some(c) = &cfg.counters {
                        c.bytes.fetch_add(got as u64, Ordering::Relaxed);
                    }
                    if last {
                        break;
                    }
                }
                stats.source_file_size += total;
                stats.new_files += 1;
                stats.new_file_size += total;
                sigtar.add_signature(&e.index, &e.meta, &sig.finish())?;
                filelist
                    .write_all(&Manifest::filelist_line(&Change::New, &e.index))
                    .ctx(&filelist_path)?;
                filelist_count += 1;
            }
            stats.errors = walker.errors;
            Ok(())
        })();
        drop(tx);
        let written = writer.join().expect("volume writer panicked");
        produced?;
        written
    });
    let (nvols, vols) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&filelist_path);
            return Err(e);
        }
    };
    stats.volumes = nvols;
    for (n, v) in vols {
        manifest.volumes.insert(n, v);
    }

    // Signatures, then the manifest: the manifest marks the set complete.
    let (local_w, remote_w) = sigtar.finish()?;
    stats.dest_size += remote_w.as_ref().map_or(local_w.size, |w| w.size);
    match remote_w {
        Some(_) => backend.put(&remote_sig_tmp, &sig_remote_name)?,
        None => {
            std::fs::copy(&sig_local_part, &remote_sig_tmp).ctx(&remote_sig_tmp)?;
            backend.put(&remote_sig_tmp, &sig_remote_name)?;
        }
    }
    std::fs::rename(&sig_local_part, &sig_local).ctx(&sig_local)?;

    filelist.flush().ctx(&filelist_path)?;
    drop(filelist);
    let mut text = manifest.header_bytes();
    for (n, v) in &manifest.volumes {
        text.extend_from_slice(&Manifest::volume_bytes(*n, v));
    }
    text.extend_from_slice(format!("Filelist {filelist_count}\n").as_bytes());
    text.extend_from_slice(&std::fs::read(&filelist_path).ctx(&filelist_path)?);
    let _ = std::fs::remove_file(&filelist_path);
    let man_tmp = staging.join(format!(
        ".dupr-tmp.{}.{}",
        std::process::id(),
        man_remote_name
    ));
    crate::crypt::write_file(&man_tmp, &text, if enc { cfg.codec } else { Codec::Plain })?;
    stats.dest_size += std::fs::metadata(&man_tmp).map(|m| m.len()).unwrap_or(0);
    backend.put(&man_tmp, &man_remote_name)?;
    std::fs::write(&man_part, &text).ctx(&man_part)?;
    std::fs::rename(&man_part, &man_local).ctx(&man_local)?;
    stats.end_time = time::now();
    Ok(stats)
}
