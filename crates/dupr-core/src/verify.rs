//! `verify`: run the whole restore pipeline (download, SHA-1, decrypt, tar,
//! deltas) without writing anything, and with `--compare-data` compare each
//! archived path with the source tree, as duplicity does.

use std::io::Read;
use std::path::PathBuf;

use crate::entry::{Kind, Meta};
use crate::error::{IoContext, Result};
use crate::index::Index;
use crate::restore::Sink;
use crate::walk::{WalkEntry, Walker};

pub struct VerifySink<'a> {
    tempdir: PathBuf,
    prefix: Index,
    compare_data: bool,
    local: Option<std::iter::Peekable<Walker<'a>>>,
    pub compared: u64,
    pub differences: Vec<String>,
    pub errors: u64,
}

impl<'a> VerifySink<'a> {
    /// Compare against the walk of the source tree (the path `prefix` of
    /// the archive) when `compare_data` is set; `local` is None when that
    /// tree is missing, and every path is then reported missing, as
    /// duplicity does.
    pub fn new(
        local: Option<Walker<'a>>,
        prefix: Index,
        compare_data: bool,
        tempdir: PathBuf,
    ) -> Result<Self> {
        // The source is walked even without --compare-data: duplicity
        // counts every path of either side as compared.
        let local = local.map(Iterator::peekable);
        Ok(VerifySink {
            tempdir,
            prefix,
            compare_data,
            local,
            compared: 0,
            differences: Vec::new(),
            errors: 0,
        })
    }

    fn diff(&mut self, rel: &Index, what: String) {
        if !self.compare_data {
            return;
        }
        let line = format!("Difference found: {}: {what}", rel);
        self.differences.push(line);
    }

    /// Local paths before `rel` are not in the archive.
    fn drain_local_before(&mut self, rel: &Index) -> Option<WalkEntry> {
        let local = self.local.as_mut()?;
        let mut news = Vec::new();
        let mut same = None;
        while let Some(e) = local.peek() {
            if e.index < *rel {
                news.push(local.next().expect("peeked").index);
            } else {
                if e.index == *rel {
                    same = local.next();
                }
                break;
            }
        }
        for n in news {
            self.compared += 1;
            self.diff(&n, "new file, not in the backup".into());
        }
        same
    }

    /// Compare one path, reporting (like duplicity) only its first
    /// difference, in duplicity's order: type, permissions, mtime, data.
    fn compare(
        &mut self,
        rel: &Index,
        meta: &Meta,
        local: Option<WalkEntry>,
        data: Option<tempfile::NamedTempFile>,
    ) -> Result<()> {
        let Some(l) = local else {
            self.diff(rel, "missing from the source tree".into());
            return Ok(());
        };
        let lm = &l.meta;
        let what = if lm.kind != meta.kind {
            Some(format!(
                "type {:?} in the source, {:?} in the backup",
                lm.kind, meta.kind
            ))
        } else if meta.kind != Kind::Symlink && lm.perms != meta.perms {
            Some(format!(
                "permissions {:o} in the source, {:o} in the backup",
                lm.perms, meta.perms
            ))
        } else if matches!(meta.kind, Kind::File | Kind::Dir | Kind::Fifo) && lm.mtime != meta.mtime
        {
            Some(format!(
                "mtime {} in the source, {} in the backup",
                lm.mtime, meta.mtime
            ))
        } else {
            match meta.kind {
                Kind::Symlink if lm.link != meta.link => Some("symlink target differs".into()),
                Kind::Char | Kind::Block
                    if (lm.devmajor, lm.devminor) != (meta.devmajor, meta.devminor) =>
                {
                    Some("device numbers differ".into())
                }
                Kind::File => match data {
                    Some(t) if !same_content(t.path(), &l.path)? => Some("data differs".into()),
                    _ => None,
                },
                _ => None,
            }
        };
        if let Some(w) = what {
            self.diff(rel, w);
        }
        Ok(())
    }
}

fn same_content(a: &std::path::Path, b: &std::path::Path) -> Result<bool> {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).ctx(a)?,
        std::fs::File::open(b).ctx(b)?,
    );
    if fa.metadata().ctx(a)?.len() != fb.metadata().ctx(b)?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba).ctx(a)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n]).ctx(b)?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

impl Sink for VerifySink<'_> {
    fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".dupr-verify.")
            .tempfile_in(&self.tempdir)
            .ctx(&self.tempdir)
    }

    fn place(
        &mut self,
        index: &Index,
        meta: &Meta,
        data: Option<tempfile::NamedTempFile>,
    ) -> Result<()> {
        self.compared += 1;
        let rel = index.strip_prefix(&self.prefix).unwrap_or_default();
        let local = self.drain_local_before(&rel);
        if !self.compare_data {
            return Ok(());
        }
        self.compare(&rel, meta, local, data)
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(local) = self.local.take() {
            for e in local {
                self.compared += 1;
                self.diff(&e.index, "new file, not in the backup".into());
            }
        }
        Ok(())
    }

    fn error(&mut self) {
        self.errors += 1;
    }
}
