//! Per-target checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`)
//! and the corpus replay test (`crates/dupr-core/tests/fuzz_corpus.rs`).
//!
//! Every function takes the raw bytes a backup target could hand back and
//! runs them through dupr-core's public API. Besides "no panic", each one
//! asserts what it can: parse → write → parse round trips where dupr-core
//! has a writer, outputs bounded by the input, and agreement with a small
//! independent reference where the format is simple enough (librsync deltas).
//!
//! Every function returns normally for any input; a failed assertion is a
//! finding.

#![allow(dead_code)]

use std::io::{Cursor, Read};

use dupr_core::blocks;
use dupr_core::crypt::{self, Codec, Crypto};
use dupr_core::delta;
use dupr_core::index::Index;
use dupr_core::manifest::Manifest;
use dupr_core::naming::{self, Prefixes};
use dupr_core::sigtar::SigtarReader;
use dupr_core::tar;
use dupr_core::time;

/// A target's check: panics on any violated property.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, as `(name, check)`: the replay test walks
/// `fuzz/corpus/<name>` and `fuzz/regressions/<name>` for each.
pub const TARGETS: &[(&str, Check)] = &[
    ("manifest", manifest),
    ("tar", tar),
    ("delta", delta),
    ("sigtar", sigtar),
    ("blocks", blocks),
    ("naming", naming),
    ("time", time),
    ("url", url),
    ("gzip", gzip),
    ("pgp", pgp),
    ("multivol", multivol),
];

/// Most plaintext read from a decoder per input (a decompression bomb is
/// cut here; any real finding shows well before).
const READ_CAP: u64 = 64 << 20;

/// Manifest text: parse; whatever parses must survive `to_bytes` → `parse`
/// unchanged (dupr rewrites manifests it read, e.g. on a resumed backup).
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    let text = m.to_bytes();
    let again = Manifest::parse(&text)
        .unwrap_or_else(|e| panic!("manifest written from a parsed one does not parse: {e}"));
    assert_eq!(again.volumes, m.volumes, "volumes changed in a round trip");
    assert_eq!(
        again.filelist, m.filelist,
        "filelist changed in a round trip"
    );
    assert_eq!(again.sigtar_hash, m.sigtar_hash);
    // Writing is a fixed point from the first rewrite on.
    assert_eq!(again.to_bytes(), text, "manifest text not stable");
    for v in m.volumes.values() {
        let _ = v.contains(&v.start);
        let _ = v.contains(&v.end);
    }
}

/// Read every header and all entry data of a tar stream.
/// Returns the entries read before the end or the first error.
fn read_tar(data: &[u8]) -> Vec<(tar::Header, Vec<u8>)> {
    let mut r = tar::Reader::new(data);
    let mut out = Vec::new();
    let mut total = 0u64;
    loop {
        match r.next_header() {
            Ok(Some(h)) => {
                let mut body = Vec::new();
                // The header's size is untrusted: the read must stop at the
                // input's end, whatever the header says.
                match (&mut r).take(READ_CAP).read_to_end(&mut body) {
                    Ok(_) => {}
                    Err(_) => return out,
                }
                assert!(body.len() as u64 <= h.size, "read past the entry's size");
                total += body.len() as u64;
                assert!(total <= data.len() as u64, "more entry data than input");
                out.push((h, body));
            }
            Ok(None) | Err(_) => return out,
        }
    }
}

fn write_tar(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, body) in entries {
        let mut h = h.clone();
        h.size = body.len() as u64;
        h.encode(&mut out);
        out.extend_from_slice(body);
        tar::pad_block(&mut out);
    }
    out.extend_from_slice(&[0u8; 2 * tar::BLOCK]);
    out
}

/// Tar streams (every dialect the reader accepts: ustar, PAX incl.
/// `DUPR.*`, GNU long names, base-256). Entries read are written back with
/// dupr's encoder and read again: once through the encoder the entries must
/// be a fixed point (what dupr writes, dupr reads back unchanged).
pub fn tar(data: &[u8]) {
    let first = read_tar(data);
    let mut complete: Vec<(tar::Header, Vec<u8>)> = first
        .into_iter()
        .filter(|(h, b)| b.len() as u64 == h.size)
        .collect();
    // The encoder writes no entry for an empty name; keep the property to
    // what the writer is for.
    complete.retain(|(h, _)| !h.name.is_empty());
    let once = write_tar(&complete);
    let second = read_tar(&once);
    let twice = write_tar(&second);
    let third = read_tar(&twice);
    assert_eq!(second.len(), complete.len(), "entries lost in a round trip");
    assert_eq!(second, third, "tar entries not stable through the encoder");
    for ((h1, b1), (h2, b2)) in complete.iter().zip(&second) {
        assert_eq!(b1, b2, "entry data changed");
        assert_eq!(h1.name, h2.name, "entry name changed");
        assert_eq!(h1.linkname, h2.linkname, "link name changed");
    }
}

/// The basis file every delta is applied to.
fn delta_basis() -> Vec<u8> {
    (0..1000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// An independent reading of the librsync delta format (magic, then
/// commands: 0 end, 1..=0x40 short literal, 0x41..=0x44 literal with a
/// 1/2/4/8-byte length, 0x45..=0x54 copy with 1/2/4/8-byte offset and
/// length). None where the delta is invalid.
fn reference_delta(basis: &[u8], d: &[u8]) -> Option<Vec<u8>> {
    fn be(d: &[u8], at: &mut usize, w: usize) -> Option<u64> {
        let b = d.get(*at..*at + w)?;
        *at += w;
        Some(b.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
    }
    if d.get(..4)? != [0x72, 0x73, 0x02, 0x36] {
        return None;
    }
    let widths = [1usize, 2, 4, 8];
    let mut at = 4;
    let mut out = Vec::new();
    loop {
        let op = *d.get(at)?;
        at += 1;
        match op {
            0 => return Some(out),
            1..=0x40 => {
                let n = op as usize;
                out.extend_from_slice(d.get(at..at.checked_add(n)?)?);
                at += n;
            }
            0x41..=0x44 => {
                let n = be(d, &mut at, widths[(op - 0x41) as usize])?;
                let n = usize::try_from(n).ok()?;
                out.extend_from_slice(d.get(at..at.checked_add(n)?)?);
                at += n;
            }
            0x45..=0x54 => {
                let k = (op - 0x45) as usize;
                let start = be(d, &mut at, widths[k / 4])?;
                let len = be(d, &mut at, widths[k % 4])?;
                let end = start.checked_add(len)?;
                if end > basis.len() as u64 {
                    return None;
                }
                out.extend_from_slice(&basis[start as usize..end as usize]);
            }
            _ => return None,
        }
    }
}

/// librsync deltas against a 1000-byte basis: `delta::apply` must agree
/// with the reference reading (same output, or an error where it has
/// none), and its returned length must be the bytes it wrote.
pub fn delta(data: &[u8]) {
    let basis = delta_basis();
    let mut out = Vec::new();
    let got = delta::apply(&basis[..], data, &mut out);
    let want = reference_delta(&basis, data);
    match (got, want) {
        (Ok(n), Some(w)) => {
            assert_eq!(
                n,
                out.len() as u64,
                "returned length is not the bytes written"
            );
            assert_eq!(out, w, "output differs from the reference");
        }
        (Err(_), None) => {}
        (Ok(_), None) => panic!("delta accepted where the reference rejects it"),
        (Err(e), Some(_)) => panic!("delta rejected where the reference accepts it: {e}"),
    }
    // A delta that only moves forward gives the same bytes applied to the
    // basis as a stream (restore's way for such deltas), in any pieces; a
    // delta rejected above is rejected there too.
    if let Ok(true) = delta::is_forward(data) {
        for piece in [1usize, 7, 4096] {
            let streamed = (|| {
                let mut f = delta::Forward::new(vec![data], Vec::new())?;
                for c in basis.chunks(piece) {
                    std::io::Write::write_all(&mut f, c)?;
                }
                f.finish()
            })();
            match (&streamed, &out_ok(&basis, data)) {
                (Ok(a), Some(b)) => assert_eq!(a, b, "streamed output differs (pieces of {piece})"),
                (Err(_), None) => {}
                (Ok(_), None) => panic!("streamed application accepts what apply rejects"),
                (Err(e), Some(_)) => panic!("streamed application rejects what apply accepts: {e}"),
            }
        }
    }
}

/// `delta::apply`'s output, if it accepts the delta.
fn out_ok(basis: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    delta::apply(basis, data, &mut out).ok().map(|_| out)
}

/// Signature tars: read every entry with signatures. A signature is never
/// longer than the input; a second pass without signatures must see the
/// same entries.
pub fn sigtar(data: &[u8]) {
    let read = |want_sigs: bool| {
        let mut r = SigtarReader::new(data, "fuzz.sigtar", want_sigs);
        let mut out = Vec::new();
        let mut failed = false;
        loop {
            match r.next_entry() {
                Ok(Some(e)) => {
                    if let Some(s) = &e.signature {
                        assert!(s.len() <= data.len(), "signature longer than the input");
                    }
                    out.push((e.index, e.meta.is_some(), e.signature.is_some()));
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        (out, failed)
    };
    let (with, with_failed) = read(true);
    let (without, without_failed) = read(false);
    for (i, ((a, am, _), (b, bm, bs))) in with.iter().zip(&without).enumerate() {
        assert_eq!(a, b, "entry {i} differs between passes");
        assert_eq!(am, bm);
        assert!(!bs, "signature read though not wanted");
    }
    if !with_failed && !without_failed {
        assert_eq!(with.len(), without.len());
    }
}

/// `.dupr-blocks` files: whatever `read_volumes` accepts, `write_volume`
/// writes back to bytes that read as the same volumes. (An index of the
/// first version, SHA-256, is written back as the current one: the same
/// records, only the hash named differs.)
pub fn blocks(data: &[u8]) {
    let Ok(read) = blocks::read_volumes(data, |_| true) else {
        return;
    };
    let vols: Vec<_> = read
        .iter()
        .cloned()
        .map(|mut v| {
            v.layout.hash = blocks::BlockHash::Blake3;
            v
        })
        .collect();
    let mut out = Vec::new();
    blocks::write_magic(&mut out).unwrap();
    for v in &vols {
        blocks::write_volume(&mut out, v).unwrap();
        // Lookups on the hostile index must not panic.
        let _ = v.start_for(&Index::root());
        let _ = v.start_for(&Index::from_bytes(*b"a/b"));
        for f in &v.firsts {
            let (k, _) = v.start_for(&f.index);
            let _ = k;
        }
    }
    // Reading blocks through a hostile layout (offsets, lengths, framing
    // from the index) fails cleanly: no panic, no allocation sized by a
    // wrapped length. The input itself stands in for the volume.
    for v in read.iter().take(4) {
        for k in 0..v.layout.blocks.len().min(16) {
            let mut f = Cursor::new(data.to_vec());
            if let Ok(plain) = v.layout.read_block(&mut f, &[7u8; 32], k) {
                let len = plain.len();
                if let Ok((_, tar)) = v.layout.tar_of_block(k, plain) {
                    assert!(tar.len() <= len, "a block's tar is longer than the block");
                }
            }
        }
    }
    let again = blocks::read_volumes(&out[..], |_| true).expect("written block index reads");
    assert_eq!(again, vols, "block index changed in a round trip");
    // Keeping a subset reads the same records.
    let odd = blocks::read_volumes(data, |n| n % 2 == 1).expect("reads with a filter");
    let want: Vec<_> = read.iter().filter(|v| v.num % 2 == 1).cloned().collect();
    assert_eq!(odd, want);
}

/// Years 1901..=2099: the range dupr (like duplicity) reads file-name and
/// W3C times in (`time::to_utc_checked`).
const MIN_T: i64 = -2_177_452_800;
const MAX_T: i64 = 4_102_444_799;

/// Remote file names under the default and a custom set of prefixes: a
/// parsed name renders (long form) to a name that parses to the same
/// value, for times the long form can hold.
pub fn naming(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let custom = Prefixes {
        file: "f-".into(),
        archive: "a_".into(),
        manifest: "m_".into(),
        signature: "s_".into(),
        jsonstat: "j_".into(),
    };
    for p in [Prefixes::default(), custom] {
        let Some(n) = naming::parse(s, &p) else {
            continue;
        };
        let in_range = |t: i64| (MIN_T..=MAX_T).contains(&t);
        if !in_range(n.end) || n.start.is_some_and(|t| !in_range(t)) {
            continue;
        }
        let written = naming::name(&n, &p);
        let back = naming::parse(&written, &p)
            .unwrap_or_else(|| panic!("{written:?} (written from {s:?}) does not parse"));
        assert_eq!(back.set, n.set);
        assert_eq!(back.kind, n.kind);
        assert_eq!(back.start, n.start);
        assert_eq!(back.end, n.end);
        assert_eq!(back.partial, n.partial);
        assert_eq!(back.encrypted, n.encrypted);
        if !n.encrypted {
            assert_eq!(back.gzipped, n.gzipped);
        }
    }
}

/// Time strings (`--time`, `-t`, `remove-older-than`) and file-name times.
pub fn time(data: &[u8]) {
    let now = 1_780_000_000;
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = time::parse_time_string(s, now) {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                assert_eq!(Some(t), s.parse().ok(), "epoch seconds misread");
            }
        }
        if let Some(t) = time::from_filename(s) {
            let _ = time::to_filename(t);
        }
    }
    // to_filename ↔ from_filename for any time in range.
    if data.len() >= 8 {
        let raw = i64::from_le_bytes(data[..8].try_into().unwrap());
        let t = MIN_T + raw.rem_euclid(MAX_T - MIN_T + 1);
        let f = time::to_filename(t);
        assert_eq!(f.len(), 16, "{t} renders as {f:?}");
        assert_eq!(
            time::from_filename(&f),
            Some(t),
            "{t} → {f:?} does not read back"
        );
        assert_eq!(time::parse_time_string(&f, now).ok(), Some(t));
    }
}

/// Backend URLs (from the command line, and from profiles/config files).
pub fn url(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = dupr_core::backend::redact(s);
    let Ok(u) = dupr_core::backend::url::Url::parse(s) else {
        return;
    };
    assert!(!u.scheme.is_empty());
    assert!(
        u.scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)),
        "scheme {:?} not normalised",
        u.scheme
    );
    let _ = u.segments();
    let _ = u.host_and_segments();
    for (k, _) in &u.query {
        assert!(u.query(k).is_some());
    }
}

/// A gzip volume: decompress (bounded) and read it as a tar stream, as
/// restore and verify do.
pub fn gzip(data: &[u8]) {
    let Ok(d) = crypt::decoder(Cursor::new(data.to_vec()), &Codec::GZIP) else {
        return;
    };
    let mut plain = Vec::new();
    if d.take(READ_CAP).read_to_end(&mut plain).is_err() {
        return;
    }
    let _ = read_tar(&plain);
}

/// One `Crypto` for every input: it caches the session key derived per
/// SKESK packet, as dupr does across the files of a run, so inputs whose
/// SKESK is unchanged skip the (deliberately slow) S2K and the fuzzer
/// spends its time on the packets after it.
fn pgp_crypto() -> Option<std::sync::Arc<Crypto>> {
    static C: std::sync::OnceLock<Option<std::sync::Arc<Crypto>>> = std::sync::OnceLock::new();
    C.get_or_init(|| Crypto::symmetric(b"fuzz".to_vec().into(), false).ok())
        .clone()
}

/// An OpenPGP volume with passphrase `fuzz` (the seeds are encrypted with
/// it, so mutations reach the packets inside the encryption too): decrypt
/// (bounded) and read the plaintext as a tar stream.
pub fn pgp(data: &[u8]) {
    let Some(c) = pgp_crypto() else {
        return;
    };
    let _ = c.session_key_of(data);
    let Ok(d) = crypt::decoder(Cursor::new(data.to_vec()), &Codec::Gpg(c)) else {
        return;
    };
    let mut plain = Vec::new();
    if d.take(READ_CAP).read_to_end(&mut plain).is_err() {
        return;
    }
    let _ = read_tar(&plain);
}

/// Marks where one volume of a `multivol` input ends and the next begins.
pub const VOLUME_SEPARATOR: &[u8] = b"\n--dupr-fuzz-next-volume--\n";

/// A full set whose plain (`--no-encryption --no-compression`) volumes are
/// the input cut at [`VOLUME_SEPARATOR`] (at most 8), with a manifest that
/// vouches for each (its SHA-1), restored through `restore::collate`: the
/// path that joins `multivol_snapshot/PATH/N` chunks across volumes back
/// into whole files. The restored data never exceeds the input, and paths
/// come out in strictly increasing order, each once.
pub fn multivol(data: &[u8]) {
    let (placed, _) = multivol_restore(data);
    let total: u64 = placed.iter().map(|(_, n)| n).sum();
    assert!(
        total <= data.len() as u64,
        "restored {total} bytes from {} bytes of volumes",
        data.len()
    );
    for w in placed.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "paths out of order: {:?} then {:?}",
            w[0].0,
            w[1].0
        );
    }
}

/// What [`multivol`] restores: each path placed, with its data's length
/// (0 without data), in the order they came (up to an error), and the
/// error that ended the restore, if one did.
pub fn multivol_restore(data: &[u8]) -> (Vec<(Index, u64)>, Option<String>) {
    use dupr_core::chain::Collection;
    use dupr_core::entry::Meta;
    use dupr_core::manifest::VolumeInfo;
    use dupr_core::restore::{self, RestoreOptions, Sink};

    let mut vols = Vec::new();
    let mut rest = data;
    while vols.len() < 7 {
        match rest
            .windows(VOLUME_SEPARATOR.len())
            .position(|w| w == VOLUME_SEPARATOR)
        {
            Some(at) => {
                vols.push(&rest[..at]);
                rest = &rest[at + VOLUME_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    vols.push(rest);

    // tmpfs when there is one: the check writes every input to files.
    let dir = tempfile::Builder::new()
        .prefix("dupr-fuzz-multivol.")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    let set = "duplicity-full.20260101T000000Z";
    let mut m = Manifest::default();
    for (i, v) in vols.iter().enumerate() {
        let n = i as u32 + 1;
        let path = dir.path().join(format!("{set}.vol{n}.difftar"));
        std::fs::write(&path, v).expect("writing a volume");
        let sha1 = crypt::sha1_file(&path).expect("hashing a volume");
        m.volumes.insert(
            n,
            VolumeInfo {
                start: Index::default(),
                start_block: None,
                end: Index::default(),
                end_block: None,
                hash: Some(("SHA1".into(), sha1)),
            },
        );
    }
    std::fs::write(dir.path().join(format!("{set}.manifest")), m.to_bytes())
        .expect("writing the manifest");

    let url = format!("file://{}", dir.path().display());
    let backend = dupr_core::backend::open_local(&url, &Default::default())
        .expect("a local backend")
        .expect("a file:// URL");
    let names = backend.list().expect("listing the set");
    let prefixes = Prefixes::default();
    let c = Collection::from_names(&names, &prefixes);
    let chain = c.last_chain().expect("the set is found");
    let sets: Vec<_> = chain.sets().collect();
    let opts = RestoreOptions::new(dir.path().join("restored"), dir.path().to_path_buf(), None);

    struct Record<'a> {
        dir: &'a std::path::Path,
        placed: Vec<(Index, u64)>,
    }
    impl Sink for Record<'_> {
        fn temp_file(&self) -> dupr_core::Result<tempfile::NamedTempFile> {
            tempfile::NamedTempFile::new_in(self.dir).map_err(|e| dupr_core::Error::io(self.dir, e))
        }
        fn place(
            &mut self,
            index: &Index,
            _meta: &Meta,
            data: Option<tempfile::NamedTempFile>,
        ) -> dupr_core::Result<()> {
            let len = data
                .map(|f| f.as_file().metadata().map(|m| m.len()).unwrap_or(0))
                .unwrap_or(0);
            self.placed.push((index.clone(), len));
            Ok(())
        }
        fn finish(&mut self) -> dupr_core::Result<()> {
            Ok(())
        }
        fn error(&mut self) {}
    }
    let mut sink = Record {
        dir: dir.path(),
        placed: Vec::new(),
    };
    let r = restore::collate(&*backend, None, &sets, &prefixes, &opts, &mut sink);
    (sink.placed, r.err().map(|e| e.to_string()))
}
