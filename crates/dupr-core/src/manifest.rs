//! The manifest: which volumes a backup set has, the index range each covers
//! and the SHA-1 of each stored volume (reference section 4).

use std::collections::BTreeMap;

use crate::content::{Algo, ContentHash};
use crate::index::Index;

/// One volume's record: the range of paths it holds, and its hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The first path with data in the volume.
    pub start: Index,
    /// The 64 KiB block of `start` the volume begins at, when it begins
    /// inside a file that an earlier volume started.
    pub start_block: Option<u64>,
    /// The last path with data in the volume.
    pub end: Index,
    /// The block of `end` the volume stops after, when the file goes on in
    /// the next volume.
    pub end_block: Option<u64>,
    /// (algorithm, lowercase hex), e.g. ("SHA1", "7217…").
    pub hash: Option<(String, String)>,
}

impl VolumeInfo {
    /// duplicity's volume pick for a requested index `p`:
    /// `start[:len(p)] <= p <= end`.
    pub fn contains(&self, p: &Index) -> bool {
        self.start.truncate(p.len()) <= *p && *p <= self.end
    }
}

/// How a path changed in a set, as the manifest's Filelist records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The path is new since the previous set (every path of a full).
    New,
    /// Its content or metadata changed.
    Changed,
    /// The previous set had it; this one records its deletion.
    Deleted,
}

impl Change {
    /// The Filelist's word for the change.
    pub fn word(&self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::Deleted => "deleted",
        }
    }
}

/// A backup set's manifest (reference section 4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The host the set was made on.
    pub hostname: Vec<u8>,
    /// The source directory, as given, without `.` parts and extra slashes.
    pub localdir: Vec<u8>,
    /// The volumes, by number from 1.
    pub volumes: BTreeMap<u32, VolumeInfo>,
    /// The changed paths (written with `--files-changed`, or by duplicity 3).
    pub filelist: Vec<(Change, Index)>,
    /// The hash of the set's signature tar (its plain tar bytes): a dupr
    /// line duplicity ignores, so a signature file swapped for another
    /// set's is caught. BLAKE3 since it is written; SHA-256 in older sets.
    pub sigtar_hash: Option<ContentHash>,
}

/// The manifest lines recording [`Manifest::sigtar_hash`], by algorithm.
const SIGTAR_FIELDS: [(&str, Algo); 2] = [
    ("DuprSigtarBLAKE3", Algo::Blake3),
    ("DuprSigtarSHA256", Algo::Sha256),
];

/// Quote a path as duplicity does: raw unless it holds whitespace, a
/// backslash or a quote; then wrapped in `"` with each such byte as `\xNN`.
pub fn quote(b: &[u8]) -> Vec<u8> {
    let special = |c: u8| {
        matches!(
            c,
            b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c | b'\\' | b'"' | b'\''
        )
    };
    if !b.iter().any(|&c| special(c)) {
        return b.to_vec();
    }
    let mut out = vec![b'"'];
    for &c in b {
        if special(c) {
            out.extend_from_slice(format!("\\x{c:02x}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out.push(b'"');
    out
}

/// Undo [`quote`]: a path in `"` with `\xNN` escapes, or a raw one.
pub fn unquote(b: &[u8]) -> Vec<u8> {
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return b.to_vec();
    }
    let inner = &b[1..b.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && i + 3 < inner.len() && inner[i + 1] == b'x' {
            if let Some(v) = std::str::from_utf8(&inner[i + 2..i + 4])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(inner[i]);
        i += 1;
    }
    out
}

fn path_field(out: &mut Vec<u8>, ix: &Index, block: Option<u64>) {
    out.extend_from_slice(&quote(ix.display_bytes()));
    out.push(b' ');
    match block {
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
        None => out.push(b' '),
    }
    out.push(b'\n');
}

impl Manifest {
    /// The header lines (written before any volume record).
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.hostname.is_empty() {
            // Real host names come out unchanged (as duplicity writes them);
            // quoting keeps a damaged one with blanks the same when read.
            out.extend_from_slice(b"Hostname ");
            out.extend_from_slice(&quote(&self.hostname));
            out.push(b'\n');
        }
        if !self.localdir.is_empty() {
            out.extend_from_slice(b"Localdir ");
            out.extend_from_slice(&quote(&self.localdir));
            out.push(b'\n');
        }
        if let Some(h) = &self.sigtar_hash {
            let (name, _) = SIGTAR_FIELDS
                .iter()
                .find(|(_, a)| *a == h.algo)
                .expect("every algorithm has a line");
            out.extend_from_slice(format!("{name} {}\n", h.hex).as_bytes());
        }
        out
    }

    /// The record of volume `num` as the manifest writes it.
    pub fn volume_bytes(num: u32, v: &VolumeInfo) -> Vec<u8> {
        let mut out = format!("Volume {num}:\n").into_bytes();
        out.extend_from_slice(b"    StartingPath   ");
        path_field(&mut out, &v.start, v.start_block);
        out.extend_from_slice(b"    EndingPath     ");
        path_field(&mut out, &v.end, v.end_block);
        if let Some((algo, hex)) = &v.hash {
            out.extend_from_slice(format!("    Hash {algo} {hex}\n").as_bytes());
        }
        out
    }

    /// One Filelist line: the change and the quoted path.
    pub fn filelist_line(c: &Change, ix: &Index) -> Vec<u8> {
        let mut out = format!("    {:<7}  ", c.word()).into_bytes();
        out.extend_from_slice(&quote(ix.display_bytes()));
        out.push(b'\n');
        out
    }

    /// The Filelist section: its count line, then one line per path.
    pub fn filelist_bytes(&self) -> Vec<u8> {
        let mut out = format!("Filelist {}\n", self.filelist.len()).into_bytes();
        for (c, ix) in &self.filelist {
            out.extend_from_slice(&Self::filelist_line(c, ix));
        }
        out
    }

    /// The whole manifest text: header, volumes, Filelist.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header_bytes();
        for (n, v) in &self.volumes {
            out.extend_from_slice(&Self::volume_bytes(*n, v));
        }
        out.extend_from_slice(&self.filelist_bytes());
        out
    }

    /// Parse manifest text as duplicity does (4.3): later duplicate volume
    /// records replace earlier ones; the Filelist may come anywhere.
    pub fn parse(text: &[u8]) -> Result<Manifest, ManifestError> {
        let mut m = Manifest::default();
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        let field = |line: &[u8], name: &str| -> Option<Vec<u8>> {
            let n = name.len();
            if line.len() > n
                && line[..n].eq_ignore_ascii_case(name.as_bytes())
                && line[n].is_ascii_whitespace()
            {
                Some(unquote(trim(&line[n + 1..])))
            } else {
                None
            }
        };
        for line in &lines {
            if m.hostname.is_empty() {
                if let Some(v) = field(line, "Hostname") {
                    m.hostname = v;
                    continue;
                }
            }
            if m.localdir.is_empty() {
                if let Some(v) = field(line, "Localdir") {
                    m.localdir = v;
                    continue;
                }
            }
            if m.sigtar_hash.is_none() {
                for (name, algo) in SIGTAR_FIELDS {
                    let Some(v) = field(line, name) else {
                        continue;
                    };
                    // dupr writes 64 hex digits; anything else is damage,
                    // and a hash that cannot match must not pass as one.
                    if v.len() != 64 || !v.iter().all(u8::is_ascii_hexdigit) {
                        return Err(ManifestError::BadSigtarHash(lossy(line)));
                    }
                    m.sigtar_hash = Some(ContentHash {
                        algo,
                        hex: String::from_utf8_lossy(&v).to_ascii_lowercase(),
                    });
                    break;
                }
            }
        }
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if let Some(rest) = strip_ci(line, b"volume") {
                if rest.first().is_some_and(|c| c.is_ascii_whitespace()) {
                    let rest = trim(rest);
                    let num: u32 = rest
                        .strip_suffix(b":")
                        .and_then(|d| std::str::from_utf8(d).ok())
                        .and_then(|d| d.parse().ok())
                        .ok_or_else(|| ManifestError::BadVolumeLine(lossy(line)))?;
                    i += 1;
                    let mut v = VolumeInfo::default();
                    let (mut have_start, mut have_end) = (false, false);
                    while i < lines.len() {
                        let l = lines[i];
                        if strip_ci(l, b"volume")
                            .is_some_and(|r| r.first().is_some_and(|c| c.is_ascii_whitespace()))
                        {
                            break;
                        }
                        i += 1;
                        let words: Vec<&[u8]> = l
                            .split(|c| c.is_ascii_whitespace())
                            .filter(|w| !w.is_empty())
                            .collect();
                        let Some(first) = words.first() else { continue };
                        let key = first.to_ascii_lowercase();
                        match key.as_slice() {
                            b"startingpath" | b"endingpath" => {
                                let p = words.get(1).ok_or(ManifestError::PathMissing(num))?;
                                let ix = Index::parse(&unquote(p))
                                    .ok_or(ManifestError::PathEscapes(num))?;
                                let block = words
                                    .get(2)
                                    .and_then(|b| std::str::from_utf8(b).ok())
                                    .and_then(|b| b.parse().ok());
                                if key == b"startingpath" {
                                    v.start = ix;
                                    v.start_block = block;
                                    have_start = true;
                                } else {
                                    v.end = ix;
                                    v.end_block = block;
                                    have_end = true;
                                }
                            }
                            b"hash" => {
                                if let (Some(a), Some(h)) = (words.get(1), words.get(2)) {
                                    v.hash = Some((
                                        String::from_utf8_lossy(a).to_ascii_uppercase(),
                                        String::from_utf8_lossy(h).to_ascii_lowercase(),
                                    ));
                                }
                            }
                            _ => {}
                        }
                    }
                    if !have_start || !have_end {
                        return Err(ManifestError::RangeMissing(num));
                    }
                    // A restarted backup re-records volumes: drop records
                    // numbered above this one, then replace.
                    m.volumes.retain(|&k, _| k < num);
                    m.volumes.insert(num, v);
                    continue;
                }
            }
            i += 1;
        }
        m.filelist = parse_filelist(&lines);
        Ok(m)
    }
}

/// Why manifest text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// dupr's signature-tar hash line holds something other than 64 hex
    /// digits (the line, as read).
    #[error("bad signature-tar hash line {0:?}")]
    BadSigtarHash(String),
    /// A `Volume` line without a volume number and colon (the line, as read).
    #[error("bad volume line {0:?}")]
    BadVolumeLine(String),
    /// A volume's StartingPath or EndingPath line names no path.
    #[error("volume {0}: path missing")]
    PathMissing(u32),
    /// A volume's path climbs out of the backup with `..`.
    #[error("volume {0}: path with '..'")]
    PathEscapes(u32),
    /// A volume record without its StartingPath or EndingPath.
    #[error("volume {0}: StartingPath or EndingPath missing")]
    RangeMissing(u32),
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

fn parse_filelist(lines: &[&[u8]]) -> Vec<(Change, Index)> {
    let mut out = Vec::new();
    let Some(start) = lines
        .iter()
        .position(|l| strip_ci(l, b"filelist").is_some())
    else {
        return out;
    };
    for l in &lines[start + 1..] {
        let t = trim(l);
        let Some(sp) = t.iter().position(|c| c.is_ascii_whitespace()) else {
            continue;
        };
        let change = match &t[..sp] {
            b"new" => Change::New,
            b"changed" => Change::Changed,
            b"deleted" => Change::Deleted,
            _ => break,
        };
        if let Some(ix) = Index::parse(&unquote(trim(&t[sp..]))) {
            out.push((change, ix));
        }
    }
    out
}

fn strip_ci<'a>(line: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    if line.len() >= word.len() && line[..word.len()].eq_ignore_ascii_case(word) {
        Some(&line[word.len()..])
    } else {
        None
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBSERVED: &str = "Hostname myhost\nLocaldir src\nVolume 1:\n    StartingPath   .  \n    EndingPath     dir1/large.bin 12\n    Hash SHA1 7217d4731469f0c70a8cecef2ceaa6674ef6cdb9\nVolume 2:\n    StartingPath   dir1/large.bin 13\n    EndingPath     newfile  \n    Hash SHA1 12f7f0e6b0686bdb6eb60b85f558682e139d75ca\nFilelist 2\n    new      a.txt\n    new      \"dir1/with\\x20space\"\n";

    #[test]
    fn parses_and_reproduces_duplicity_text() {
        let m = Manifest::parse(OBSERVED.as_bytes()).unwrap();
        assert_eq!(m.hostname, b"myhost");
        assert!(m.to_bytes().starts_with(b"Hostname myhost\n"));
        assert_eq!(m.volumes.len(), 2);
        assert_eq!(m.volumes[&1].end_block, Some(12));
        assert_eq!(m.volumes[&2].start, Index::from_bytes(*b"dir1/large.bin"));
        assert_eq!(m.filelist[1].1, Index::from_bytes(*b"dir1/with space"));
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), OBSERVED);
    }

    #[test]
    fn duplicate_volume_records_replace() {
        let t = "Volume 1:\n StartingPath . \n EndingPath a \n Hash SHA1 aa\nVolume 2:\n StartingPath a \n EndingPath b \n Hash SHA1 bb\nVolume 2:\n StartingPath a \n EndingPath c \n Hash SHA1 cc\n";
        let m = Manifest::parse(t.as_bytes()).unwrap();
        assert_eq!(m.volumes.len(), 2);
        assert_eq!(m.volumes[&2].hash.as_ref().unwrap().1, "cc");
        assert!(Manifest::parse(b"Volume 1:\n    Hash SHA1 aa\n").is_err());
        assert!(Manifest::parse(b"Volume x:\n").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(b"a b"), b"\"a\\x20b\"");
        assert_eq!(quote(b"\xff\xc3\xbc"), b"\xff\xc3\xbc");
        for s in [&b"a\nb\"c'd\\e\tf"[..], b"plain", b"\"q"] {
            assert_eq!(unquote(&quote(s)), s);
        }
    }

    #[test]
    fn containing_volumes() {
        let v = VolumeInfo {
            start: Index::from_bytes(*b"b/c"),
            end: Index::from_bytes(*b"d"),
            ..Default::default()
        };
        assert!(v.contains(&Index::from_bytes(*b"b")));
        assert!(v.contains(&Index::root()));
        assert!(v.contains(&Index::from_bytes(*b"c")));
        assert!(!v.contains(&Index::from_bytes(*b"a")));
        assert!(!v.contains(&Index::from_bytes(*b"e")));
    }

    /// Found by the manifest fuzzer: a quoted host name with trailing
    /// blanks was written unquoted, so reading it back lost the blanks.
    #[test]
    fn a_host_name_with_blanks_reads_back_the_same() {
        let m = Manifest::parse(b"HosTname   \"amTname   \"").unwrap();
        assert_eq!(m.hostname, b"amTname   ");
        let text = m.to_bytes();
        let again = Manifest::parse(&text).unwrap();
        assert_eq!(again.hostname, m.hostname);
        assert_eq!(again.to_bytes(), text);
    }

    /// Found by the manifest fuzzer: a DuprSigtarSHA256 value with
    /// carriage returns and quotes did not read back the same; a value
    /// that is not 64 hex digits is damage and refuses the manifest.
    /// Both lines (BLAKE3, written now; SHA-256, older sets) read back.
    #[test]
    fn a_sigtar_hash_that_is_not_hex_is_refused() {
        let h = "ab".repeat(32);
        for (name, algo) in SIGTAR_FIELDS {
            let m = Manifest::parse(format!("{name} {}\n", h.to_uppercase()).as_bytes()).unwrap();
            let want = ContentHash {
                algo,
                hex: h.clone(),
            };
            assert_eq!(m.sigtar_hash.as_ref(), Some(&want));
            assert_eq!(
                Manifest::parse(&m.to_bytes()).unwrap().sigtar_hash,
                Some(want)
            );
            for bad in [
                format!("{name} \"\r\ri \\\\pla\""),
                format!("{name} {}", &h[1..]),
                format!("{name} {h}0"),
                format!("{name} {}g", &h[1..]),
            ] {
                let e = Manifest::parse(bad.as_bytes()).unwrap_err();
                assert!(matches!(e, ManifestError::BadSigtarHash(_)), "{e}");
                assert!(
                    e.to_string().starts_with("bad signature-tar hash line"),
                    "{e}"
                );
            }
        }
    }
}
