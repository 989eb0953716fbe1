//! Remote and cache file names (reference 1.2-1.4): parsing every form
//! duplicity accepts, and rendering the long form dupr writes.

use crate::time::{self, Timestamp};

/// Full backup set or incremental set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetType {
    /// A full backup set (`duplicity-full.*`).
    Full,
    /// An incremental set (`duplicity-inc.*`, `duplicity-new-signatures.*`).
    Inc,
}

/// What a file holds. `Signature` of a `Full` set is `duplicity-full-signatures`,
/// of an `Inc` set `duplicity-new-signatures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A difftar volume, by number from 1.
    Volume(u32),
    /// The set's manifest.
    Manifest,
    /// The set's signature file (sigtar).
    Signature,
    /// The `--jsonstat` statistics file.
    JsonStat,
    /// dupr's block index of the set's volumes (see `blocks`); duplicity's
    /// patterns do not match it, so duplicity ignores it.
    Blocks,
}

/// `--file-prefix` (`file`) and the per-type prefixes written after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes {
    /// `--file-prefix`: in front of every name.
    pub file: String,
    /// `--file-prefix-archive`: after `file`, in front of volume names.
    pub archive: String,
    /// `--file-prefix-manifest`: after `file`, in front of manifest (and block
    /// index) names.
    pub manifest: String,
    /// `--file-prefix-signature`: after `file`, in front of signature file names.
    pub signature: String,
    /// `--file-prefix-jsonstat`: after `file`, in front of statistics file names.
    pub jsonstat: String,
}

/// A duplicity file name, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedName {
    /// Full or incremental.
    pub set: SetType,
    /// What the file holds.
    pub kind: FileType,
    /// Start time of an incremental; `None` for full sets.
    pub start: Option<Timestamp>,
    /// Time of a full set, end time of an incremental.
    pub end: Timestamp,
    /// The name ends in `.gpg` (or the short form's `.g`, or `.p7m`).
    pub encrypted: bool,
    /// The name ends in `.gz` (or the short form's `.z`).
    pub gzipped: bool,
    /// The name carries the partial marker (`.part`, `.p`): a file of a
    /// backup not finished (duplicity keeps such manifests and signatures in
    /// its cache).
    pub partial: bool,
}

/// One element of a name pattern. The patterns mirror duplicity's anchored
/// regular expressions, matched with the same (lazy-time, greedy-rest)
/// semantics so that odd names resolve the way duplicity resolves them.
#[derive(Debug, Clone, Copy)]
enum Tok {
    Lit(&'static str),
    /// `.*?`: a long-form time token.
    Lazy,
    /// `[0-9]+`: a long-form volume number.
    Dec,
    /// `[0-9a-z]+`: a short-form time or volume number.
    B36,
    /// Optional partial marker (`.part` / `.p`).
    Part(&'static str),
    /// End of name or a `.`; whatever follows the dot is tolerated.
    End,
}

#[derive(Debug, Clone, Copy)]
enum Prefix {
    Archive,
    Manifest,
    Signature,
    JsonStat,
}

struct Pattern {
    prefix: Prefix,
    set: SetType,
    /// `kind` with a placeholder volume number; the real one is captured.
    kind: FileType,
    short: bool,
    toks: &'static [Tok],
}

use Tok::{Dec, End, Lazy, Lit, Part, B36};

const fn pat(
    prefix: Prefix,
    set: SetType,
    kind: FileType,
    short: bool,
    toks: &'static [Tok],
) -> Pattern {
    Pattern {
        prefix,
        set,
        kind,
        short,
        toks,
    }
}

/// In duplicity's order: full, inc, signatures, jsonstat; short before long.
/// Incremental volumes have no partial marker in duplicity's patterns.
#[rustfmt::skip]
const PATTERNS: &[Pattern] = {
    use FileType::*;
    use Prefix as P;
    use SetType::*;
    &[
        pat(P::Archive, Full, Volume(0), true, &[Lit("df."), B36, Lit("."), B36, Lit(".dt"), Part(".p"), End]),
        pat(P::Manifest, Full, Manifest, true, &[Lit("df."), B36, Lit(".m"), Part(".p"), End]),
        pat(P::Archive, Full, Volume(0), false, &[Lit("duplicity-full."), Lazy, Lit(".vol"), Dec, Lit(".difftar"), Part(".part"), End]),
        pat(P::Manifest, Full, Manifest, false, &[Lit("duplicity-full."), Lazy, Lit(".manifest"), Part(".part"), End]),
        pat(P::Archive, Inc, Volume(0), true, &[Lit("di."), B36, Lit("."), B36, Lit("."), B36, Lit(".dt"), End]),
        pat(P::Manifest, Inc, Manifest, true, &[Lit("di."), B36, Lit("."), B36, Lit(".m"), Part(".p"), End]),
        pat(P::Archive, Inc, Volume(0), false, &[Lit("duplicity-inc."), Lazy, Lit(".to."), Lazy, Lit(".vol"), Dec, Lit(".difftar"), End]),
        pat(P::Manifest, Inc, Manifest, false, &[Lit("duplicity-inc."), Lazy, Lit(".to."), Lazy, Lit(".manifest"), Part(".part"), End]),
        pat(P::Signature, Full, Signature, true, &[Lit("dfs."), B36, Lit(".st"), Part(".p"), End]),
        pat(P::Signature, Full, Signature, false, &[Lit("duplicity-full-signatures."), Lazy, Lit(".sigtar"), Part(".part"), End]),
        pat(P::Signature, Inc, Signature, true, &[Lit("dns."), B36, Lit("."), B36, Lit(".st"), Part(".p"), End]),
        pat(P::Signature, Inc, Signature, false, &[Lit("duplicity-new-signatures."), Lazy, Lit(".to."), Lazy, Lit(".sigtar"), Part(".part"), End]),
        pat(P::JsonStat, Full, JsonStat, true, &[Lit("dfst."), B36, Lit(".jst"), Part(".p"), End]),
        pat(P::JsonStat, Inc, JsonStat, true, &[Lit("dist."), B36, Lit("."), B36, Lit(".jst"), Part(".p"), End]),
        pat(P::JsonStat, Full, JsonStat, false, &[Lit("duplicity-full."), Lazy, Lit(".jsonstat"), Part(".part"), End]),
        pat(P::JsonStat, Inc, JsonStat, false, &[Lit("duplicity-inc."), Lazy, Lit(".to."), Lazy, Lit(".jsonstat"), Part(".part"), End]),
        pat(P::Manifest, Full, Blocks, false, &[Lit("duplicity-full."), Lazy, Lit(".dupr-blocks"), Part(".part"), End]),
        pat(P::Manifest, Inc, Blocks, false, &[Lit("duplicity-inc."), Lazy, Lit(".to."), Lazy, Lit(".dupr-blocks"), Part(".part"), End]),
    ]
};

/// Decode a remote or cache file name; `None` if it is not a duplicity file.
///
/// Prefixes are matched literally (duplicity pastes them into its regular
/// expressions unescaped, so a `.` there would be a wildcard; we do not
/// emulate that).
pub fn parse(name: &str, p: &Prefixes) -> Option<ParsedName> {
    let rest = name.strip_prefix(p.file.as_str())?;
    // The first pattern that matches structurally decides, as in duplicity:
    // a bad time in it makes the name unparseable rather than trying on.
    let (pattern, caps, partial) = PATTERNS.iter().find_map(|pat| {
        let type_prefix = match pat.prefix {
            Prefix::Archive => &p.archive,
            Prefix::Manifest => &p.manifest,
            Prefix::Signature => &p.signature,
            Prefix::JsonStat => &p.jsonstat,
        };
        let body = rest.strip_prefix(type_prefix.as_str())?;
        let mut caps = Vec::new();
        let mut partial = false;
        matches(pat.toks, body, &mut caps, &mut partial).then_some((pat, caps, partial))
    })?;

    let time = |s: &str| {
        if pattern.short {
            base36(s)
        } else {
            time::from_filename(s)
        }
    };
    let mut caps = caps.into_iter();
    let (start, end) = match pattern.set {
        SetType::Full => (None, time(caps.next()?)?),
        SetType::Inc => (Some(time(caps.next()?)?), time(caps.next()?)?),
    };
    let kind = match pattern.kind {
        FileType::Volume(_) => {
            let n = caps.next()?;
            let n = if pattern.short {
                u32::try_from(base36(n)?).ok()?
            } else {
                n.parse().ok()?
            };
            FileType::Volume(n)
        }
        other => other,
    };
    Some(ParsedName {
        set: pattern.set,
        kind,
        start,
        end,
        encrypted: [".gpg", ".g", ".p7m"].iter().any(|s| name.ends_with(s)),
        gzipped: [".gz", ".z"].iter().any(|s| name.ends_with(s)),
        partial,
    })
}

/// Render the long name: `.part` (if partial) after the base name, then
/// `.gpg` if encrypted, else `.gz` if gzipped. An `Inc` name without a start
/// time is a caller bug; it renders with start = end.
pub fn name(n: &ParsedName, p: &Prefixes) -> String {
    let end = time::to_filename(n.end);
    let times = match n.set {
        SetType::Full => end,
        SetType::Inc => {
            debug_assert!(n.start.is_some(), "incremental name without start time");
            format!("{}.to.{end}", time::to_filename(n.start.unwrap_or(n.end)))
        }
    };
    let set = match n.set {
        SetType::Full => "full",
        SetType::Inc => "inc",
    };
    let (type_prefix, base) = match n.kind {
        FileType::Volume(v) => (
            &p.archive,
            format!("duplicity-{set}.{times}.vol{v}.difftar"),
        ),
        FileType::Manifest => (&p.manifest, format!("duplicity-{set}.{times}.manifest")),
        FileType::JsonStat => (&p.jsonstat, format!("duplicity-{set}.{times}.jsonstat")),
        FileType::Blocks => (&p.manifest, format!("duplicity-{set}.{times}.dupr-blocks")),
        FileType::Signature => {
            let which = match n.set {
                SetType::Full => "full",
                SetType::Inc => "new",
            };
            (
                &p.signature,
                format!("duplicity-{which}-signatures.{times}.sigtar"),
            )
        }
    };
    let part = if n.partial { ".part" } else { "" };
    let suffix = if n.encrypted {
        ".gpg"
    } else if n.gzipped {
        ".gz"
    } else {
        ""
    };
    format!("{}{type_prefix}{base}{part}{suffix}", p.file)
}

/// Match `toks` against the whole of `s` (anchored at the start; `End`
/// tolerates a trailing `.anything`). On success `caps` holds the captures in
/// order; on failure it is left as it was.
fn matches<'a>(toks: &[Tok], s: &'a str, caps: &mut Vec<&'a str>, partial: &mut bool) -> bool {
    let Some((&tok, rest)) = toks.split_first() else {
        return true;
    };
    let mark = caps.len();
    let ok = match tok {
        Lit(l) => s
            .strip_prefix(l)
            .is_some_and(|s| matches(rest, s, caps, partial)),
        // Shortest first, like a lazy regex group.
        Lazy => (0..=s.len()).filter(|&i| s.is_char_boundary(i)).any(|i| {
            caps.push(&s[..i]);
            matches(rest, &s[i..], caps, partial) || {
                caps.pop();
                false
            }
        }),
        // Greedy; the next token always starts with '.', so the longest run
        // is the only one that can match.
        Dec | B36 => {
            let n = s
                .bytes()
                .take_while(|b| {
                    b.is_ascii_digit() || (matches!(tok, B36) && b.is_ascii_lowercase())
                })
                .count();
            n > 0 && {
                caps.push(&s[..n]);
                matches(rest, &s[n..], caps, partial)
            }
        }
        Part(l) => match s.strip_prefix(l) {
            Some(r) if matches(rest, r, caps, partial) => {
                *partial = true;
                true
            }
            _ => matches(rest, s, caps, partial),
        },
        End => s.is_empty() || s.starts_with('.'),
    };
    if !ok {
        caps.truncate(mark);
    }
    ok
}

/// Lower-case base 36, as short names write times and volume numbers.
fn base36(s: &str) -> Option<i64> {
    i64::from_str_radix(s, 36).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 20261124T063606Z and 20261124T063655Z from the reference's listing.
    const T1: Timestamp = 1_795_502_166;
    const T2: Timestamp = 1_795_502_215;
    const T1_B36: &str = "tozuc6";
    const T2_B36: &str = "tozudj";

    fn none() -> Prefixes {
        Prefixes::default()
    }

    fn full(kind: FileType) -> ParsedName {
        ParsedName {
            set: SetType::Full,
            kind,
            start: None,
            end: T1,
            encrypted: false,
            gzipped: false,
            partial: false,
        }
    }

    fn inc(kind: FileType) -> ParsedName {
        ParsedName {
            set: SetType::Inc,
            start: Some(T1),
            end: T2,
            ..full(kind)
        }
    }

    fn gz(n: ParsedName) -> ParsedName {
        ParsedName { gzipped: true, ..n }
    }

    fn gpg(n: ParsedName) -> ParsedName {
        ParsedName {
            encrypted: true,
            ..n
        }
    }

    fn part(n: ParsedName) -> ParsedName {
        ParsedName { partial: true, ..n }
    }

    fn to_b36(mut n: u64) -> String {
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut out = Vec::new();
        loop {
            out.push(digits[(n % 36) as usize]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        out.reverse();
        String::from_utf8(out).unwrap()
    }

    /// Both directions for names dupr itself writes.
    fn both_ways(s: &str, n: ParsedName) {
        assert_eq!(parse(s, &none()), Some(n), "parse {s}");
        assert_eq!(name(&n, &none()), s);
    }

    #[test]
    fn reference_listing() {
        use FileType::*;
        both_ways(
            "duplicity-full-signatures.20261124T063606Z.sigtar.gz",
            gz(full(Signature)),
        );
        both_ways("duplicity-full.20261124T063606Z.manifest", full(Manifest));
        both_ways(
            "duplicity-full.20261124T063606Z.vol1.difftar.gz",
            gz(full(Volume(1))),
        );
        both_ways(
            "duplicity-inc.20261124T063606Z.to.20261124T063655Z.manifest",
            inc(Manifest),
        );
        both_ways(
            "duplicity-inc.20261124T063606Z.to.20261124T063655Z.vol1.difftar.gz",
            gz(inc(Volume(1))),
        );
        both_ways(
            "duplicity-new-signatures.20261124T063606Z.to.20261124T063655Z.sigtar.gz",
            gz(inc(Signature)),
        );
    }

    #[test]
    fn encrypted_plain_and_jsonstat() {
        use FileType::*;
        both_ways(
            "duplicity-full.20261124T063606Z.vol10.difftar.gpg",
            gpg(full(Volume(10))),
        );
        both_ways(
            "duplicity-full.20261124T063606Z.manifest.gpg",
            gpg(full(Manifest)),
        );
        both_ways(
            "duplicity-full-signatures.20261124T063606Z.sigtar.gpg",
            gpg(full(Signature)),
        );
        both_ways(
            "duplicity-full.20261124T063606Z.vol2.difftar",
            full(Volume(2)),
        );
        both_ways(
            "duplicity-full-signatures.20261124T063606Z.sigtar",
            full(Signature),
        );
        both_ways(
            "duplicity-full.20261124T063606Z.jsonstat.gpg",
            gpg(full(JsonStat)),
        );
        both_ways(
            "duplicity-inc.20261124T063606Z.to.20261124T063655Z.jsonstat.gz",
            gz(inc(JsonStat)),
        );
        // gpgsm output is encrypted too; dupr would rename it .gpg.
        let n = parse("duplicity-full.20261124T063606Z.manifest.p7m", &none()).unwrap();
        assert_eq!(n, gpg(full(Manifest)));
    }

    #[test]
    fn partial_markers() {
        use FileType::*;
        both_ways(
            "duplicity-full.20261124T063606Z.manifest.part",
            part(full(Manifest)),
        );
        both_ways(
            "duplicity-inc.20261124T063606Z.to.20261124T063655Z.manifest.part",
            part(inc(Manifest)),
        );
        both_ways(
            "duplicity-full-signatures.20261124T063606Z.sigtar.part.gz",
            part(gz(full(Signature))),
        );
        both_ways(
            "duplicity-new-signatures.20261124T063606Z.to.20261124T063655Z.sigtar.part.gz",
            part(gz(inc(Signature))),
        );
        both_ways(
            "duplicity-full.20261124T063606Z.vol3.difftar.part.gpg",
            part(gpg(full(Volume(3)))),
        );
        both_ways(
            "duplicity-full.20261124T063606Z.jsonstat.part.gz",
            part(gz(full(JsonStat))),
        );
        // Incremental volumes have no partial marker: `.part` is just tolerated.
        assert_eq!(
            parse(
                "duplicity-inc.20261124T063606Z.to.20261124T063655Z.vol1.difftar.part.gz",
                &none()
            ),
            Some(gz(inc(Volume(1))))
        );
        // `.partial` is not the marker.
        assert_eq!(
            parse("duplicity-full.20261124T063606Z.manifest.partial", &none()),
            Some(full(Manifest))
        );
    }

    #[test]
    fn short_names() {
        use FileType::*;
        let p = none();
        let cases = [
            (format!("df.{T1_B36}.1.dt.g"), gpg(full(Volume(1)))),
            (format!("df.{T1_B36}.a.dt.z"), gz(full(Volume(10)))),
            (format!("df.{T1_B36}.1.dt.p.z"), part(gz(full(Volume(1))))),
            (format!("df.{T1_B36}.m"), full(Manifest)),
            (format!("df.{T1_B36}.m.p"), part(full(Manifest))),
            (format!("df.{T1_B36}.m.g"), gpg(full(Manifest))),
            (
                format!("di.{T1_B36}.{T2_B36}.2s.dt.z"),
                gz(inc(Volume(100))),
            ),
            (format!("di.{T1_B36}.{T2_B36}.m.p"), part(inc(Manifest))),
            (format!("dfs.{T1_B36}.st.z"), gz(full(Signature))),
            (format!("dfs.{T1_B36}.st.p.z"), part(gz(full(Signature)))),
            (format!("dns.{T1_B36}.{T2_B36}.st.g"), gpg(inc(Signature))),
            (format!("dfst.{T1_B36}.jst.z"), gz(full(JsonStat))),
            (format!("dist.{T1_B36}.{T2_B36}.jst.p"), part(inc(JsonStat))),
            // Long suffixes count on short names too.
            (format!("df.{T1_B36}.1.dt.gpg"), gpg(full(Volume(1)))),
        ];
        for (s, want) in cases {
            assert_eq!(parse(&s, &p), Some(want), "{s}");
        }
        // Inc volumes have no `.p`; it is tolerated as trailing text.
        assert_eq!(
            parse(&format!("di.{T1_B36}.{T2_B36}.1.dt.p.z"), &p),
            Some(gz(inc(Volume(1))))
        );
        // Upper case is not base 36 as written by duplicity.
        assert_eq!(parse("df.TOZUC6.1.dt.g", &p), None);
    }

    #[test]
    fn legacy_time_strings() {
        use FileType::*;
        let t = 1_029_626_221; // 2002-08-17T23:17:01Z
        let legacy = |n: ParsedName| ParsedName { end: t, ..n };
        assert_eq!(
            parse(
                "duplicity-full.2002-08-17T16:17:01-07:00.vol1.difftar.gpg",
                &none()
            ),
            Some(legacy(gpg(full(Volume(1)))))
        );
        // A `.` time separator does not confuse the lazy time match.
        assert_eq!(
            parse("duplicity-full.2002-08-17T16.17.01-07.00.manifest", &none()),
            Some(legacy(full(Manifest)))
        );
        assert_eq!(
            parse(
                "duplicity-inc.2002-08-17T16:17:01-07:00.to.20261124T063655Z.manifest.gpg",
                &none()
            ),
            Some(gpg(ParsedName {
                start: Some(t),
                ..inc(Manifest)
            }))
        );
        // Lower-case time tokens are accepted (duplicity upper-cases them).
        assert_eq!(
            parse("duplicity-full.20261124t063606z.manifest", &none()),
            Some(full(Manifest))
        );
    }

    #[test]
    fn prefixes() {
        use FileType::*;
        let p = Prefixes {
            file: "host1_".into(),
            archive: "a_".into(),
            manifest: "m_".into(),
            signature: "s_".into(),
            jsonstat: "j_".into(),
        };
        let cases = [
            (
                "host1_a_duplicity-full.20261124T063606Z.vol1.difftar.gpg",
                gpg(full(Volume(1))),
            ),
            (
                "host1_m_duplicity-full.20261124T063606Z.manifest.gpg",
                gpg(full(Manifest)),
            ),
            (
                "host1_s_duplicity-new-signatures.20261124T063606Z.to.20261124T063655Z.sigtar.gpg",
                gpg(inc(Signature)),
            ),
            (
                "host1_j_duplicity-full.20261124T063606Z.jsonstat.gpg",
                gpg(full(JsonStat)),
            ),
        ];
        for (s, n) in cases {
            assert_eq!(parse(s, &p), Some(n), "{s}");
            assert_eq!(name(&n, &p), s);
        }
        assert_eq!(
            parse(&format!("host1_a_df.{T1_B36}.1.dt.g"), &p),
            Some(gpg(full(Volume(1))))
        );
        // Wrong or missing prefix: not ours.
        for s in [
            "duplicity-full.20261124T063606Z.vol1.difftar.gpg",
            "host1_duplicity-full.20261124T063606Z.vol1.difftar.gpg",
            "host1_m_duplicity-full.20261124T063606Z.vol1.difftar.gpg",
            "host2_a_duplicity-full.20261124T063606Z.vol1.difftar.gpg",
        ] {
            assert_eq!(parse(s, &p), None, "{s}");
        }
    }

    #[test]
    fn tolerated_trailing_text() {
        use FileType::*;
        assert_eq!(
            parse("duplicity-full.20261124T063606Z.manifest.foo", &none()),
            Some(full(Manifest))
        );
        assert_eq!(
            parse(
                "duplicity-full.20261124T063606Z.vol1.difftar.gpg.par2",
                &none()
            ),
            Some(full(Volume(1)))
        );
    }

    #[test]
    fn not_duplicity_files() {
        for s in [
            "",
            "lockfile",
            "progress",
            "foo.txt",
            "duplicity-full",
            "duplicity-full.",
            "duplicity-full.garbage.manifest",
            "duplicity-full..manifest",
            "duplicity-full.20261124T063606Z",
            "duplicity-full.20261124T063606Z.manifestx",
            "duplicity-full.20261124T063606Z.vol.difftar.gz",
            "duplicity-full.20261124T063606Z.volx.difftar.gz",
            "duplicity-full.20261124T063606Z.vol1.difftarx",
            "duplicity-full.20261124T063606Z.vol99999999999.difftar.gz",
            "duplicity-full.20261124T063606Z.sigtar.gz",
            "duplicity-inc.20261124T063606Z.vol1.difftar.gz",
            "duplicity-inc.20261124T063606Z.to.garbage.manifest",
            "duplicity-inc.20261124T063606Z.to..manifest",
            "duplicity-new-signatures.20261124T063606Z.sigtar.gz",
            "duplicity-full-signatures.21001124T063606Z.sigtar.gz",
            "Duplicity-full.20261124T063606Z.manifest",
            " duplicity-full.20261124T063606Z.manifest",
            "xduplicity-full.20261124T063606Z.manifest",
            "df.tozuc6.dt.g",
            "df..1.dt",
            "df.tozuc6.1.dt1",
            "df.toz-c6.m",
            "di.tozuc6.m",
            "dfs.tozuc6.sigtar",
            "df.zzzzzzzzzzzzzzzzzzzz.m",
            "df.tozuc6.zzzzzzz.dt",
        ] {
            assert_eq!(parse(s, &none()), None, "{s:?}");
        }
    }

    #[test]
    fn block_index_names() {
        for (s, set, enc, gz) in [
            (
                "duplicity-full.20261124T063606Z.dupr-blocks.gpg",
                SetType::Full,
                true,
                false,
            ),
            (
                "duplicity-inc.20261124T063606Z.to.20261124T063655Z.dupr-blocks.gz",
                SetType::Inc,
                false,
                true,
            ),
        ] {
            let n = parse(s, &none()).expect(s);
            assert_eq!(
                (n.kind, n.set, n.encrypted, n.gzipped),
                (FileType::Blocks, set, enc, gz)
            );
            assert_eq!(name(&n, &none()), s);
        }
        // Not mistaken for a manifest or a volume.
        assert_eq!(
            parse("duplicity-full.20261124T063606Z.dupr-blocks.gpg", &none()).map(|n| n.kind),
            Some(FileType::Blocks)
        );
    }

    #[test]
    fn first_structural_match_decides() {
        // The time is the shortest run before `.manifest`; a bad time there
        // rejects the name even though a later `.manifest` would fit.
        assert_eq!(
            parse(
                "duplicity-full.x.manifest.20261124T063606Z.manifest",
                &none()
            ),
            None
        );
    }

    fn arb_name() -> impl Strategy<Value = ParsedName> {
        const LO: Timestamp = 0;
        const HI: Timestamp = 4_102_444_799; // 2099-12-31T23:59:59Z
        let kind = prop_oneof![
            (1u32..=1_000_000).prop_map(FileType::Volume),
            Just(FileType::Manifest),
            Just(FileType::Signature),
            Just(FileType::JsonStat),
        ];
        (
            any::<bool>(),
            kind,
            LO..=HI,
            LO..=HI,
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(is_inc, kind, a, b, (encrypted, gz, partial))| {
                let (set, start, end) = if is_inc {
                    (SetType::Inc, Some(a.min(b)), a.max(b))
                } else {
                    (SetType::Full, None, a)
                };
                ParsedName {
                    set,
                    kind,
                    start,
                    end,
                    encrypted,
                    // One suffix only: encryption wins, as in duplicity.
                    gzipped: gz && !encrypted,
                    // Incremental volumes cannot carry a partial marker.
                    partial: partial && !(is_inc && matches!(kind, FileType::Volume(_))),
                }
            })
    }

    fn arb_prefixes() -> impl Strategy<Value = Prefixes> {
        let p = || "[a-z0-9_-]{0,4}";
        (p(), p(), p(), p(), p()).prop_map(|(file, archive, manifest, signature, jsonstat)| {
            Prefixes {
                file,
                archive,
                manifest,
                signature,
                jsonstat,
            }
        })
    }

    /// The short form of `n`, as duplicity's `--short-filenames` wrote it.
    fn short_name(n: &ParsedName) -> String {
        let b = |t: Timestamp| to_b36(t as u64);
        let times = match n.set {
            SetType::Full => b(n.end),
            SetType::Inc => format!("{}.{}", b(n.start.unwrap()), b(n.end)),
        };
        let (f, i) = (n.set == SetType::Full, n.set == SetType::Inc);
        let base = match n.kind {
            FileType::Volume(v) => format!(
                "d{}.{times}.{}.dt",
                if f { "f" } else { "i" },
                to_b36(v.into())
            ),
            FileType::Manifest => format!("d{}.{times}.m", if f { "f" } else { "i" }),
            FileType::Signature => format!("d{}s.{times}.st", if i { "n" } else { "f" }),
            FileType::JsonStat => format!("d{}st.{times}.jst", if f { "f" } else { "i" }),
            FileType::Blocks => unreachable!("dupr's block index has no short name"),
        };
        let part = if n.partial { ".p" } else { "" };
        let suffix = if n.encrypted {
            ".g"
        } else if n.gzipped {
            ".z"
        } else {
            ""
        };
        format!("{base}{part}{suffix}")
    }

    proptest! {
        #[test]
        fn long_round_trip(n in arb_name()) {
            let s = name(&n, &Prefixes::default());
            prop_assert_eq!(parse(&s, &Prefixes::default()), Some(n), "{}", s);
        }

        #[test]
        fn long_round_trip_with_prefixes(n in arb_name(), p in arb_prefixes()) {
            let s = name(&n, &p);
            prop_assert_eq!(parse(&s, &p), Some(n), "{}", s);
        }

        #[test]
        fn short_matches_long(n in arb_name()) {
            let s = short_name(&n);
            prop_assert_eq!(parse(&s, &Prefixes::default()), Some(n), "{}", s);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = parse(&s, &Prefixes::default());
        }

        #[test]
        fn parse_never_panics_near_misses(
            s in "(duplicity-(full|inc|full-signatures|new-signatures)|df|di|dfs|dns|dfst|dist)[.a-z0-9TZ:-]{0,50}"
        ) {
            if let Some(n) = parse(&s, &Prefixes::default()) {
                prop_assert_eq!(n.start.is_some(), n.set == SetType::Inc);
            }
        }
    }
}
