//! File selection with duplicity's rules (reference section 9): an ordered
//! list of conditions, the first that includes or excludes a path wins, no
//! match means included, and include patterns "scan" the directories above
//! them so those are kept only if something below ends up included.
//!
//! Paths are matched as strings: the source as typed (canonicalised) joined
//! with the path below it, exactly the string duplicity matches. Patterns
//! are compiled once. Wildcard-free patterns (the bulk of long filelists)
//! are looked up in hash maps, so a 10,000-line filelist costs a few lookups
//! per path, not 10,000 regex runs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use regex::bytes::Regex;

use crate::entry::{Kind, Meta};
use crate::walk::Select;

/// One selection option, in command-line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `--include PATTERN`, read per the filter mode in force.
    Include(Vec<u8>),
    /// `--exclude PATTERN`, read per the filter mode in force.
    Exclude(Vec<u8>),
    /// `--include-regexp REGEXP`.
    IncludeRegexp(Vec<u8>),
    /// `--exclude-regexp REGEXP`.
    ExcludeRegexp(Vec<u8>),
    /// `--include-filelist FILE`: patterns one a line, a `- ` prefix excluding.
    IncludeFilelist(PathBuf),
    /// `--exclude-filelist FILE`: patterns one a line, a `+ ` prefix including.
    ExcludeFilelist(PathBuf),
    /// Only these paths (relative to the source), their parents implied.
    FilesFrom(PathBuf),
    /// `--exclude-if-present NAME`: directories holding a file of that name.
    ExcludeIfPresent(Vec<u8>),
    /// Regular files modified before this time (epoch seconds) are left out.
    ExcludeOlderThan(i64),
    /// `--exclude-other-filesystems`: paths on another device than the source.
    ExcludeOtherFilesystems,
    /// `--exclude-device-files`: character and block devices.
    ExcludeDeviceFiles,
    /// A `--filter-*` switch.
    Filter(Filter),
}

/// The `--filter-*` switches: how later patterns are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `--filter-globbing`: shell globs (the default).
    Globbing,
    /// `--filter-literal`: patterns are exact paths.
    Literal,
    /// `--filter-regexp`: patterns are regular expressions.
    Regexp,
    /// `--filter-ignorecase`: match case-insensitively.
    IgnoreCase,
    /// `--filter-strictcase`: match case-sensitively (the default).
    StrictCase,
}

impl Filter {
    /// The option as typed on the command line.
    pub fn option(self) -> &'static str {
        match self {
            Filter::Globbing => "--filter-globbing",
            Filter::Literal => "--filter-literal",
            Filter::Regexp => "--filter-regexp",
            Filter::IgnoreCase => "--filter-ignorecase",
            Filter::StrictCase => "--filter-strictcase",
        }
    }
}

/// The selection options of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    /// The selection options, in command-line order.
    pub rules: Vec<Rule>,
    /// Filelists are split on NUL instead of newline.
    pub null_separator: bool,
}

impl Spec {
    /// True when no selection option was given.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A selection that cannot be built; each is a user error duplicity also
/// reports, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A pattern that can match nothing below the source: duplicity requires
    /// it to begin with the source directory (or a wildcard matching it).
    #[error("the file specification {pattern:?} cannot match any files in the base directory {base:?}; useful specifications begin with the base directory or a pattern (such as '**') that matches it")]
    FilePrefix {
        /// The pattern as given.
        pattern: String,
        /// The source directory, as matched.
        base: String,
    },
    /// A restore pattern that is absolute or holds `.` or `..` elements.
    #[error("restore selection pattern {0:?} is invalid: restore patterns are relative to the archive root, as list-current-files prints them, without '.' or '..' elements")]
    RestorePattern(String),
    /// A pattern that does not compile, or an option restore does not support.
    #[error("bad selection pattern {pattern:?}: {reason}")]
    Globbing {
        /// The pattern (or the option) as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The last selection option includes, which changes nothing (the value is
    /// its description).
    #[error("the last selection expression {0} only includes files; as everything is included by default it is redundant (add --exclude '**' after it)")]
    RedundantInclusion(String),
    /// A `--filter-*` switch comes last, with no pattern after it to affect
    /// (the value is the option).
    #[error("the last selection option is the filter option {0}, which has no effect as no selection option follows it")]
    TrailingFilter(&'static str),
    /// Only the default filter modes were asked for (the value lists them).
    #[error("only the default filter mode options {0} were given; they have no effect")]
    RedundantFilter(String),
    /// A `--files-from` list holds an absolute path.
    #[error("files-from list {list:?} contains the absolute path {path:?}; paths must be relative to the backup source")]
    AbsoluteFilesFrom {
        /// The list file.
        list: PathBuf,
        /// The absolute path in it.
        path: String,
    },
    /// A `--files-from` list holds no path.
    #[error("files-from list {0:?} names no files; the backup would be empty")]
    EmptyFilesFrom(PathBuf),
    /// A filelist or files-from list cannot be read, or is not UTF-8.
    #[error("cannot read filelist {path:?}: {cause}")]
    Filelist {
        /// The list file.
        path: PathBuf,
        /// Why it cannot be read.
        cause: std::io::Error,
    },
}

impl SelectError {
    /// duplicity's exit code (reference section 10.5).
    pub fn exit_code(&self) -> i32 {
        match self {
            SelectError::FilePrefix { .. } | SelectError::RestorePattern(_) => 14,
            SelectError::Globbing { .. } => 15,
            SelectError::RedundantInclusion(_) => 16,
            SelectError::RedundantFilter(_) => 70,
            SelectError::TrailingFilter(_) => 71,
            SelectError::AbsoluteFilesFrom { .. } => 72,
            SelectError::EmptyFilesFrom(_) => 73,
            SelectError::Filelist { .. } => 23,
        }
    }
}

/// A pattern's verdict on a path: duplicity's None / 0 / 1 / 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Include,
    Exclude,
    Scan,
}

/// A condition that needs more than a hash lookup.
enum Test {
    Glob {
        re: Regex,
        /// `^glob$` for a glob given with a trailing slash: an exact match
        /// counts only for directories.
        exact: Option<Regex>,
        scan: Option<Regex>,
    },
    /// `**` (or `ignorecase:**`): every path.
    All,
    Literal {
        lit: Vec<u8>,
        ignore_case: bool,
    },
    Regexp(Regex),
    IfPresent(Vec<u8>),
    OlderThan(i64),
    OtherFilesystems(u64),
    DeviceFiles,
}

struct Cond {
    /// Position in duplicity's list (front-inserted conditions first).
    pos: usize,
    include: bool,
    test: Test,
}

/// Wildcard-free patterns, keyed by the string they match.
#[derive(Default)]
struct LiteralIndex {
    /// Exact path (or ancestor of the path) -> conditions, by position.
    matches: HashMap<Vec<u8>, Vec<LitMatch>>,
    /// Directory above an include pattern -> first such condition.
    scans: HashMap<Vec<u8>, usize>,
}

#[derive(Clone, Copy)]
struct LitMatch {
    pos: usize,
    include: bool,
    /// Glob given with a trailing slash: its exact match needs a directory.
    dir_only: bool,
    /// Glob semantics also match the name followed by one newline
    /// (Python's `$`); literal mode does not.
    glob: bool,
}

/// Compiled selection for one source root.
pub struct Selection {
    conds: Vec<Cond>,
    literals: LiteralIndex,
    /// `--files-from`: directory path -> the names listed in it.
    files_from: Option<HashMap<Vec<u8>, Vec<Vec<u8>>>>,
}

impl Selection {
    /// Compile `spec` for the source `root`, given as the string duplicity
    /// matches against (see [`canonical`]).
    pub fn new(root: &Path, spec: &Spec) -> Result<Self, SelectError> {
        Self::build(root, spec, false)
    }

    /// Selection for restore (duplicity 3.2's restore `--include` and
    /// `--exclude`): patterns name archive paths as list-current-files
    /// prints them (`docs/**`), matched against the path inside the
    /// archive, `""` being the root.
    pub fn for_archive(spec: &Spec) -> Result<Self, SelectError> {
        for r in &spec.rules {
            let opt = match r {
                Rule::ExcludeIfPresent(_) => "--exclude-if-present",
                Rule::ExcludeOtherFilesystems => "--exclude-other-filesystems",
                Rule::FilesFrom(_) => "--files-from",
                _ => continue,
            };
            return Err(SelectError::Globbing {
                pattern: opt.into(),
                reason: "not supported for restore".into(),
            });
        }
        Self::build(Path::new(""), spec, true)
    }

    fn build(root: &Path, spec: &Spec, archive: bool) -> Result<Self, SelectError> {
        use std::os::unix::ffi::OsStrExt;
        let root_bytes = root.as_os_str().as_bytes().to_vec();
        let root_dev = std::fs::symlink_metadata(root)
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .unwrap_or(0);
        let root_is_dir = std::fs::metadata(root).is_ok_and(|m| m.is_dir());
        check_filters(&spec.rules)?;

        let mut b = Builder {
            root: root_bytes,
            archive,
            root_is_dir,
            front: Vec::new(),
            back: Vec::new(),
            last: None,
        };
        let mut glob = Mode::Globbing;
        let mut ignore_case = false;
        let mut files_from = None;
        for rule in &spec.rules {
            match rule {
                Rule::Include(p) => b.pattern(p, true, glob, ignore_case)?,
                Rule::Exclude(p) => b.pattern(p, false, glob, ignore_case)?,
                Rule::IncludeRegexp(p) => b.pattern(p, true, Mode::Regexp, ignore_case)?,
                Rule::ExcludeRegexp(p) => b.pattern(p, false, Mode::Regexp, ignore_case)?,
                Rule::IncludeFilelist(f) | Rule::ExcludeFilelist(f) => {
                    let include = matches!(rule, Rule::IncludeFilelist(_));
                    for (line, inc) in read_filelist(f, spec.null_separator, include)? {
                        b.pattern(&line, inc, glob, ignore_case)?;
                    }
                }
                Rule::FilesFrom(f) => {
                    files_from = Some(read_files_from(f, &b.root, spec.null_separator)?);
                }
                Rule::ExcludeIfPresent(name) => b.front(Test::IfPresent(name.clone())),
                Rule::ExcludeDeviceFiles => b.front(Test::DeviceFiles),
                Rule::ExcludeOlderThan(t) => b.push(
                    Pending::Test(Test::OlderThan(*t), false),
                    format!("Select older than {t}"),
                ),
                Rule::ExcludeOtherFilesystems => b.push(
                    Pending::Test(Test::OtherFilesystems(root_dev), false),
                    "Match other filesystems".into(),
                ),
                Rule::Filter(Filter::Globbing) => glob = Mode::Globbing,
                Rule::Filter(Filter::Literal) => glob = Mode::Literal,
                Rule::Filter(Filter::Regexp) => glob = Mode::Regexp,
                Rule::Filter(Filter::IgnoreCase) => ignore_case = true,
                Rule::Filter(Filter::StrictCase) => ignore_case = false,
            }
        }
        if let Some((include, name)) = &b.last {
            if *include {
                return Err(SelectError::RedundantInclusion(name.clone()));
            }
        }
        Ok(b.finish(files_from))
    }

    /// True when nothing is selected away (no conditions, no files-from).
    pub fn is_trivial(&self) -> bool {
        self.conds.is_empty() && self.literals.matches.is_empty() && self.files_from.is_none()
    }

    /// The names to walk in directory `dir` (its full path string), when
    /// `--files-from` restricts them; None means "list the directory".
    pub fn listing(&self, dir: &[u8]) -> Option<Vec<Vec<u8>>> {
        let ff = self.files_from.as_ref()?;
        Some(ff.get(dir).cloned().unwrap_or_default())
    }

    /// duplicity's verdict on `path` (its full path string).
    pub fn select(&self, path: &[u8], fs_path: &Path, meta: &Meta) -> Select {
        let is_dir = meta.kind == Kind::Dir;
        let (mut pos, mut result) = self.literal_verdict(path, is_dir);
        let mut scan_pending = false;
        for c in &self.conds {
            if c.pos >= pos {
                break;
            }
            match c.test(path, fs_path, meta, is_dir) {
                Some(Verdict::Scan) => scan_pending = true,
                Some(v) => {
                    (pos, result) = (c.pos, Some(v));
                    break;
                }
                None => {}
            }
        }
        // A wildcard-free include ahead of the deciding condition scans.
        scan_pending |= self.literal_scan(path).is_some_and(|p| p < pos);
        match result {
            Some(Verdict::Include) => Select::Include,
            _ if scan_pending => Select::Scan,
            Some(Verdict::Exclude) => Select::Exclude,
            _ => Select::Include,
        }
    }

    /// The first wildcard-free condition that decides `path`.
    fn literal_verdict(&self, path: &[u8], is_dir: bool) -> (usize, Option<Verdict>) {
        let mut best: (usize, Option<Verdict>) = (usize::MAX, None);
        if self.literals.matches.is_empty() {
            return best;
        }
        let mut consider = |key: &[u8], exact: bool, newline: bool| {
            if let Some(list) = self.literals.matches.get(key) {
                for m in list {
                    if m.pos >= best.0 {
                        break;
                    }
                    if newline && !m.glob {
                        continue;
                    }
                    if exact && m.dir_only && !is_dir {
                        continue;
                    }
                    let v = if m.include {
                        Verdict::Include
                    } else {
                        Verdict::Exclude
                    };
                    best = (m.pos, Some(v));
                    break;
                }
            }
        };
        consider(path, true, false);
        if let Some(p) = path.strip_suffix(b"\n") {
            consider(p, true, true);
        }
        for (i, &c) in path.iter().enumerate() {
            if c == b'/' && i > 0 {
                consider(&path[..i], false, false);
            }
        }
        best
    }

    fn literal_scan(&self, path: &[u8]) -> Option<usize> {
        let s = &self.literals.scans;
        if s.is_empty() {
            return None;
        }
        let a = s.get(path).copied();
        let b = path.strip_suffix(b"\n").and_then(|p| s.get(p)).copied();
        match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }
}

impl Cond {
    fn test(&self, path: &[u8], fs_path: &Path, meta: &Meta, is_dir: bool) -> Option<Verdict> {
        let verdict = if self.include {
            Verdict::Include
        } else {
            Verdict::Exclude
        };
        match &self.test {
            Test::All => Some(verdict),
            Test::Glob { re, exact, scan } => {
                if re.is_match(path) {
                    match exact {
                        Some(ex) if ex.is_match(path) => is_dir.then_some(verdict),
                        _ => Some(verdict),
                    }
                } else if scan.as_ref().is_some_and(|s| s.is_match(path)) {
                    Some(Verdict::Scan)
                } else {
                    None
                }
            }
            Test::Literal { lit, ignore_case } => {
                let owned;
                let p: &[u8] = if *ignore_case {
                    owned = casefold(path);
                    &owned
                } else {
                    path
                };
                literal_test(lit, p, self.include)
            }
            Test::Regexp(re) => re.is_match(&python_text(path)).then_some(verdict),
            Test::IfPresent(name) => {
                if is_dir {
                    use std::os::unix::ffi::OsStrExt;
                    let probe = fs_path.join(std::ffi::OsStr::from_bytes(name));
                    std::fs::symlink_metadata(probe).is_ok().then_some(verdict)
                } else {
                    None
                }
            }
            Test::OlderThan(t) => (meta.kind == Kind::File && meta.mtime < *t).then_some(verdict),
            Test::OtherFilesystems(dev) => (meta.dev != *dev).then_some(verdict),
            Test::DeviceFiles => matches!(meta.kind, Kind::Char | Kind::Block).then_some(verdict),
        }
    }
}

/// Restore selection applied to the archive's entries in index order, the
/// way duplicity 3.2 filters them: a directory some pattern scans is placed
/// only once something below it is; an excluded directory drops its contents.
pub struct ArchiveFilter {
    sel: std::sync::Arc<Selection>,
    deferred: Vec<(crate::index::Index, Meta)>,
    excluded: Vec<crate::index::Index>,
}

impl ArchiveFilter {
    /// A filter applying `sel`, which [`Selection::for_archive`] built.
    pub fn new(sel: std::sync::Arc<Selection>) -> Self {
        ArchiveFilter {
            sel,
            deferred: Vec::new(),
            excluded: Vec::new(),
        }
    }

    /// The entries to place for `index`: deferred parents first, then the
    /// entry itself when selected; empty when it is left out.
    pub fn admit(
        &mut self,
        index: &crate::index::Index,
        meta: &Meta,
    ) -> Vec<(crate::index::Index, Meta)> {
        while self
            .deferred
            .last()
            .is_some_and(|(d, _)| !index.starts_with(d))
        {
            self.deferred.pop();
        }
        while self.excluded.last().is_some_and(|d| !index.starts_with(d)) {
            self.excluded.pop();
        }
        if !self.excluded.is_empty() {
            return Vec::new();
        }
        if index.is_root() {
            self.deferred.push((index.clone(), meta.clone()));
            return Vec::new();
        }
        let is_dir = meta.kind == Kind::Dir;
        match self.sel.select(index.as_bytes(), Path::new(""), meta) {
            Select::Include => {
                let mut out: Vec<_> = std::mem::take(&mut self.deferred);
                out.push((index.clone(), meta.clone()));
                out
            }
            Select::Scan if is_dir => {
                self.deferred.push((index.clone(), meta.clone()));
                Vec::new()
            }
            Select::Exclude if is_dir => {
                self.excluded.push(index.clone());
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// duplicity's literal-mode test (`--filter-literal`).
fn literal_test(lit: &[u8], path: &[u8], include: bool) -> Option<Verdict> {
    let verdict = if include {
        Verdict::Include
    } else {
        Verdict::Exclude
    };
    if path == lit || (path.starts_with(lit) && path.get(lit.len()) == Some(&b'/')) {
        Some(verdict)
    } else if include && lit.starts_with(path) && lit.get(path.len()) == Some(&b'/') {
        Some(Verdict::Scan)
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Globbing,
    Literal,
    Regexp,
}

enum Pending {
    Test(Test, bool),
    Lit(LitPattern),
}

/// A wildcard-free pattern, for the hash index.
struct LitPattern {
    include: bool,
    key: Vec<u8>,
    dir_only: bool,
    glob: bool,
    /// Directory strings this include pattern scans.
    scans: Vec<Vec<u8>>,
}

struct Builder {
    root: Vec<u8>,
    /// Restore selection: relative patterns, no base-directory check.
    archive: bool,
    root_is_dir: bool,
    /// Conditions duplicity inserts at the front, newest first.
    front: Vec<Test>,
    back: Vec<Pending>,
    /// The last condition added at the back: (include only?, name).
    last: Option<(bool, String)>,
}

impl Builder {
    fn front(&mut self, t: Test) {
        self.front.insert(0, t);
    }

    fn push(&mut self, p: Pending, name: String) {
        let include = match &p {
            Pending::Test(_, inc) => *inc,
            Pending::Lit(l) => l.include,
        };
        self.last = Some((include, name));
        self.back.push(p);
    }

    fn pattern(
        &mut self,
        raw: &[u8],
        include: bool,
        mode: Mode,
        mut ignore_case: bool,
    ) -> Result<(), SelectError> {
        let shown = String::from_utf8_lossy(raw).into_owned();
        let inc_word = if include { "include" } else { "exclude" };
        let mut pat = raw.to_vec();
        if mode == Mode::Globbing
            && pat.len() >= 11
            && pat[..11].eq_ignore_ascii_case(b"ignorecase:")
        {
            pat = casefold(&pat[11..]);
            ignore_case = true;
        }
        let case_word = if ignore_case { "no-" } else { "" };
        if self.archive && mode != Mode::Regexp {
            while let Some(rest) = pat.strip_prefix(b"./") {
                pat = rest.to_vec();
            }
            let bad_part = pat.split(|&c| c == b'/').any(|p| p == b"." || p == b"..");
            if pat.first() == Some(&b'/') || bad_part {
                return Err(SelectError::RestorePattern(shown));
            }
        }
        match mode {
            Mode::Regexp => {
                let re = compile_with(&python_regex(&pat), ignore_case, false, &shown)?;
                let name = format!("regular expression {inc_word} {case_word}case: {shown}");
                self.push(Pending::Test(Test::Regexp(re), include), name);
            }
            Mode::Literal => {
                let mut lit = pat;
                if lit != b"/" && lit.last() == Some(&b'/') {
                    lit.pop();
                }
                if ignore_case {
                    lit = casefold(&lit);
                }
                let root = if ignore_case {
                    casefold(&self.root)
                } else {
                    self.root.clone()
                };
                if !self.archive && literal_test(&lit, &root, true).is_none() {
                    return Err(self.prefix_error(&shown));
                }
                let name = format!("literal string {inc_word} {case_word}case: {shown}");
                if ignore_case {
                    self.push(
                        Pending::Test(Test::Literal { lit, ignore_case }, include),
                        name,
                    );
                } else {
                    let scans = if include {
                        (1..lit.len())
                            .filter(|&i| lit[i] == b'/')
                            .map(|i| lit[..i].to_vec())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    self.push(
                        Pending::Lit(LitPattern {
                            include,
                            key: lit,
                            dir_only: false,
                            glob: false,
                            scans,
                        }),
                        name,
                    );
                }
            }
            Mode::Globbing => {
                let glob = Glob::compile(&pat, ignore_case, &shown)?;
                if !self.archive && glob.test(&self.root, self.root_is_dir, true).is_none() {
                    return Err(self.prefix_error(&shown));
                }
                let name = format!("shell glob {inc_word} {case_word}case: {shown}");
                let p = if pat == b"**" {
                    Pending::Test(Test::All, include)
                } else if let (Some(key), false) = (glob.literal.clone(), ignore_case) {
                    Pending::Lit(LitPattern {
                        include,
                        key,
                        dir_only: glob.dir_only,
                        glob: true,
                        scans: if include {
                            glob.literal_scans
                        } else {
                            Vec::new()
                        },
                    })
                } else {
                    Pending::Test(
                        Test::Glob {
                            re: glob.re,
                            exact: glob.exact,
                            scan: include.then_some(glob.scan),
                        },
                        include,
                    )
                };
                self.push(p, name);
            }
        }
        Ok(())
    }

    fn prefix_error(&self, pattern: &str) -> SelectError {
        SelectError::FilePrefix {
            pattern: pattern.to_string(),
            base: String::from_utf8_lossy(&self.root).into_owned(),
        }
    }

    fn finish(self, files_from: Option<HashMap<Vec<u8>, Vec<Vec<u8>>>>) -> Selection {
        let mut conds = Vec::new();
        let mut literals = LiteralIndex::default();
        let front_len = self.front.len();
        for (pos, test) in self.front.into_iter().enumerate() {
            conds.push(Cond {
                pos,
                include: false,
                test,
            });
        }
        for (i, p) in self.back.into_iter().enumerate() {
            let pos = front_len + i;
            match p {
                Pending::Test(test, include) => conds.push(Cond { pos, include, test }),
                Pending::Lit(l) => {
                    literals.matches.entry(l.key).or_default().push(LitMatch {
                        pos,
                        include: l.include,
                        dir_only: l.dir_only,
                        glob: l.glob,
                    });
                    for s in l.scans {
                        literals.scans.entry(s).or_insert(pos);
                    }
                }
            }
        }
        Selection {
            conds,
            literals,
            files_from,
        }
    }
}

/// A compiled glob (duplicity's `select_fn_from_glob`).
struct Glob {
    re: Regex,
    exact: Option<Regex>,
    scan: Regex,
    dir_only: bool,
    /// The pattern itself when it has no wildcard (hash lookup instead).
    literal: Option<Vec<u8>>,
    literal_scans: Vec<Vec<u8>>,
}

impl Glob {
    fn compile(pat: &[u8], ignore_case: bool, shown: &str) -> Result<Glob, SelectError> {
        let mut g: Vec<u8> = pat.to_vec();
        let mut dir_only = false;
        if g == b"/" {
            g = b"/**".to_vec();
        } else if g.last() == Some(&b'/') {
            dir_only = true;
            g.pop();
        }
        UNTERMINATED.with(|u| u.set(false));
        let body = glob_to_regex(&g);
        if UNTERMINATED.with(|u| u.get()) {
            // duplicity reads it as a literal '['; say so, then do the same.
            tracing::warn!("selection pattern {shown:?}: unterminated '[' is matched literally");
        }
        let re = compile(&format!("^{body}(?:\\z|\\n\\z|/)"), ignore_case, shown)?;
        let exact = if dir_only {
            Some(compile(&format!("^{body}\\n?\\z"), ignore_case, shown)?)
        } else {
            None
        };
        let mut trunc: &[u8] = &g;
        if let Some(i) = find(&g, b"**") {
            trunc = &g[..i + 2];
        }
        let parts: Vec<&[u8]> = trunc.split(|&c| c == b'/').collect();
        if parts.len() > 2 && parts[1..parts.len() - 1].iter().any(|p| p.is_empty()) {
            return Err(SelectError::Globbing {
                pattern: shown.to_string(),
                reason: "consecutive '/'s found in globbing string".into(),
            });
        }
        let mut prefixes: Vec<Vec<u8>> =
            (0..parts.len()).map(|i| parts[..=i].join(&b'/')).collect();
        if prefixes.first().is_some_and(|p| p.is_empty()) {
            prefixes[0] = b"/".to_vec();
        }
        let alts: Vec<String> = prefixes.iter().map(|p| glob_to_regex(p)).collect();
        let scan = compile(
            &format!("^(?:{})\\n?\\z", alts.join("|")),
            ignore_case,
            shown,
        )?;
        let wild = g.iter().any(|c| matches!(c, b'*' | b'?' | b'['));
        let (literal, literal_scans) = if wild {
            (None, Vec::new())
        } else {
            // The pattern itself is always a match, never a scan.
            prefixes.pop();
            (Some(g.clone()), prefixes)
        };
        Ok(Glob {
            re,
            exact,
            scan,
            dir_only,
            literal,
            literal_scans,
        })
    }

    /// The glob's verdict as an include, used to check it can match the root.
    fn test(&self, path: &[u8], is_dir: bool, include: bool) -> Option<Verdict> {
        let v = if include {
            Verdict::Include
        } else {
            Verdict::Exclude
        };
        if self.re.is_match(path) {
            match &self.exact {
                Some(ex) if ex.is_match(path) => is_dir.then_some(v),
                _ => Some(v),
            }
        } else if include && self.scan.is_match(path) {
            Some(Verdict::Scan)
        } else {
            None
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Python's `str.casefold` (full Unicode case folding: `ß` is `ss`);
/// bytes that are not UTF-8 stay as they are.
fn casefold(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.extend_from_slice(caseless::default_case_fold_str(chunk.valid()).as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// A path as Python's regexps see it: a byte that is not UTF-8 is one
/// character (a surrogate there; a private-use character here), so `.` and
/// `[^/]` match it.
fn python_text(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if std::str::from_utf8(path).is_ok() {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(path.len() + 8);
    for chunk in path.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        for &b in chunk.invalid() {
            let c = char::from_u32(0x10_FF00 + b as u32).expect("valid private-use scalar");
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    std::borrow::Cow::Owned(out)
}

fn compile(re: &str, ignore_case: bool, shown: &str) -> Result<Regex, SelectError> {
    compile_with(re, ignore_case, true, shown)
}

/// `dot_nl`: duplicity compiles its globs with `re.S`, users' regexps without.
fn compile_with(
    re: &str,
    ignore_case: bool,
    dot_nl: bool,
    shown: &str,
) -> Result<Regex, SelectError> {
    regex::bytes::RegexBuilder::new(re)
        .case_insensitive(ignore_case)
        .dot_matches_new_line(dot_nl)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| SelectError::Globbing {
            pattern: shown.to_string(),
            reason: e
                .to_string()
                .lines()
                .last()
                .unwrap_or("invalid")
                .trim()
                .to_string(),
        })
}

/// One character of the path outside `/`: a UTF-8 character, or a byte that
/// is not valid UTF-8 (one "surrogate" character to Python).
const ONE: &str = "(?:[^/]|(?-u:[\\x80-\\xff]))";

/// duplicity's `glob_to_regex`: `*`, `?`, `**` and `[...]` classes, every
/// other character literal, an unterminated `[` literal.
fn glob_to_regex(pat: &[u8]) -> String {
    let units = units(pat);
    let n = units.len();
    let mut res = String::new();
    let mut i = 0;
    while i < n {
        let c = &units[i];
        i += 1;
        match c {
            Unit::Char('*') if matches!(units.get(i), Some(Unit::Char('*'))) => {
                res.push_str("(?s-u:.)*");
                i += 1;
            }
            Unit::Char('*') => {
                res.push_str(ONE);
                res.push('*');
            }
            Unit::Char('?') => res.push_str(ONE),
            Unit::Char('[') => {
                let mut j = i;
                if matches!(units.get(j), Some(Unit::Char('!' | '^'))) {
                    j += 1;
                }
                if matches!(units.get(j), Some(Unit::Char(']'))) {
                    j += 1;
                }
                while j < n && units[j] != Unit::Char(']') {
                    j += 1;
                }
                if j >= n {
                    UNTERMINATED.with(|u| u.set(true));
                    res.push_str("\\[");
                } else {
                    let stuff = &units[i..j];
                    i = j + 1;
                    res.push('[');
                    for (k, u) in stuff.iter().enumerate() {
                        match u {
                            Unit::Char('!' | '^') if k == 0 => res.push('^'),
                            // Characters Rust's class syntax gives a meaning
                            // Python's does not.
                            Unit::Char(ch @ ('[' | '&' | '~' | '\\')) => {
                                res.push('\\');
                                res.push(*ch);
                            }
                            Unit::Char(ch) => res.push(*ch),
                            Unit::Byte(b) => res.push_str(&format!("\\x{{{b:x}}}")),
                        }
                    }
                    res.push(']');
                }
            }
            Unit::Char(ch) => res.push_str(&regex::escape(ch.encode_utf8(&mut [0; 4]))),
            Unit::Byte(b) => res.push_str(&format!("(?-u:\\x{b:02x})")),
        }
    }
    res
}

thread_local! {
    /// Set by `glob_to_regex` when it met a `[` without `]`.
    static UNTERMINATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unit {
    Char(char),
    Byte(u8),
}

fn units(b: &[u8]) -> Vec<Unit> {
    let mut v = Vec::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        v.extend(chunk.valid().chars().map(Unit::Char));
        v.extend(chunk.invalid().iter().map(|&x| Unit::Byte(x)));
    }
    v
}

/// A user regexp (Python `re.search` syntax) for the Rust engine: the
/// common subset is identical; `$` also matches before a final newline in
/// Python, which is rare enough in paths to leave as is.
fn python_regex(pat: &[u8]) -> String {
    String::from_utf8_lossy(pat).into_owned()
}

fn read_text(path: &Path) -> Result<String, SelectError> {
    let bytes = std::fs::read(path).map_err(|cause| SelectError::Filelist {
        path: path.to_path_buf(),
        cause,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| SelectError::Filelist {
        path: path.to_path_buf(),
        cause: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })?;
    // Python's text mode reads \r\n and \r as \n.
    Ok(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// The (pattern, include) lines of a filelist, as duplicity sanitises them.
fn read_filelist(
    path: &Path,
    null_sep: bool,
    include: bool,
) -> Result<Vec<(Vec<u8>, bool)>, SelectError> {
    let text = read_text(path)?;
    let sep = if null_sep { '\0' } else { '\n' };
    let mut out = Vec::new();
    for line in text.split(sep) {
        // Python's str.strip: Unicode whitespace plus the separators \x1c-\x1f.
        let mut line =
            line.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c));
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut inc = include;
        if let Some(rest) = line.strip_prefix("+ ") {
            inc = true;
            line = rest;
        } else if let Some(rest) = line.strip_prefix("- ") {
            inc = false;
            line = rest;
        }
        if line.len() >= 2
            && ((line.starts_with('\'') && line.ends_with('\''))
                || (line.starts_with('"') && line.ends_with('"')))
        {
            line = &line[1..line.len() - 1];
        } else if line == "'" || line == "\"" {
            line = "";
        }
        if line.is_empty() {
            continue;
        }
        out.push((line.as_bytes().to_vec(), inc));
    }
    Ok(out)
}

/// `--files-from`: directory string -> sorted names to walk in it.
fn read_files_from(
    path: &Path,
    root: &[u8],
    null_sep: bool,
) -> Result<HashMap<Vec<u8>, Vec<Vec<u8>>>, SelectError> {
    let text = read_text(path)?;
    let sep = if null_sep { '\0' } else { '\n' };
    let mut map: HashMap<Vec<u8>, BTreeSet<Vec<u8>>> = HashMap::new();
    for line in text.split(sep) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('/') {
            return Err(SelectError::AbsoluteFilesFrom {
                list: path.to_path_buf(),
                path: line.to_string(),
            });
        }
        let mut rest = line.as_bytes();
        while !rest.is_empty() {
            let (dir, base) = split_path(rest);
            let mut key = root.to_vec();
            if !dir.is_empty() {
                if key.last() != Some(&b'/') {
                    key.push(b'/');
                }
                key.extend_from_slice(dir);
            }
            if !base.is_empty() {
                map.entry(key).or_default().insert(base.to_vec());
            }
            rest = dir;
        }
    }
    if map.is_empty() {
        return Err(SelectError::EmptyFilesFrom(path.to_path_buf()));
    }
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect())
}

/// Python's `os.path.split`: head without trailing slashes, and tail.
fn split_path(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&c| c == b'/') {
        Some(i) => {
            let (head, tail) = (&p[..=i], &p[i + 1..]);
            let trimmed = head
                .iter()
                .rposition(|&c| c != b'/')
                .map_or(head, |j| &head[..=j]);
            (trimmed, tail)
        }
        None => (&p[..0], p),
    }
}

/// The errors duplicity raises for the `--filter-*` switches alone.
fn check_filters(rules: &[Rule]) -> Result<(), SelectError> {
    if let Some(Rule::Filter(f)) = rules.last() {
        return Err(SelectError::TrailingFilter(f.option()));
    }
    let used: BTreeSet<&'static str> = rules
        .iter()
        .filter_map(|r| match r {
            Rule::Filter(f) => Some(f.option()),
            _ => None,
        })
        .collect();
    if !used.is_empty()
        && used
            .iter()
            .all(|o| *o == "--filter-globbing" || *o == "--filter-strictcase")
    {
        let list: Vec<&str> = used.into_iter().collect();
        return Err(SelectError::RedundantFilter(list.join(", ")));
    }
    Ok(())
}

/// The string duplicity matches for a source path: `.` segments and
/// repeated or trailing slashes removed, `..` kept.
pub fn canonical(source: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = source
        .split(|&c| c == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    let joined = parts.join(&b'/');
    if source.first() == Some(&b'/') {
        let mut v = b"/".to_vec();
        v.extend_from_slice(&joined);
        v
    } else if joined.is_empty() {
        b".".to_vec()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> Meta {
        let mut m = crate::entry::Meta::from_fs(
            &std::fs::symlink_metadata("/").unwrap(),
            Vec::new(),
            &mut Default::default(),
        );
        m.kind = kind;
        m
    }

    fn sel(rules: Vec<Rule>) -> Selection {
        Selection::new(
            Path::new("/"),
            &Spec {
                rules,
                null_separator: false,
            },
        )
        .unwrap()
    }

    fn inc(p: &str) -> Rule {
        Rule::Include(p.as_bytes().to_vec())
    }
    fn exc(p: &str) -> Rule {
        Rule::Exclude(p.as_bytes().to_vec())
    }

    fn v(s: &Selection, p: &str, kind: Kind) -> Select {
        s.select(p.as_bytes(), Path::new(p), &meta(kind))
    }

    #[test]
    fn first_match_wins_and_parents_are_scanned() {
        let s = sel(vec![inc("/home/u/docs"), exc("**")]);
        assert_eq!(v(&s, "/home", Kind::Dir), Select::Scan);
        assert_eq!(v(&s, "/home/u", Kind::Dir), Select::Scan);
        assert_eq!(v(&s, "/home/u/docs", Kind::Dir), Select::Include);
        assert_eq!(v(&s, "/home/u/docs/a/b", Kind::File), Select::Include);
        assert_eq!(v(&s, "/home/u/other", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/home/u/docsx", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/etc", Kind::Dir), Select::Exclude);
    }

    #[test]
    fn wildcards_classes_and_trailing_slash() {
        let s = sel(vec![
            exc("/**.DS_Store"),
            exc("/**Icon?"),
            exc("/a/[!x]y/"),
            inc("/a/*.txt"),
            exc("/a/**"),
        ]);
        assert_eq!(v(&s, "/z/q/.DS_Store", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/z/Icon\r", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/a/by", Kind::Dir), Select::Exclude);
        // The trailing slash needs a directory for the exact match.
        assert_eq!(v(&s, "/a/by", Kind::File), Select::Exclude); // by /a/**
        assert_eq!(v(&s, "/a/by/f", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/a/xy", Kind::Dir), Select::Exclude);
        assert_eq!(v(&s, "/a/f.txt", Kind::File), Select::Include);
        assert_eq!(v(&s, "/a/d/f.txt", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/b", Kind::File), Select::Include);
    }

    #[test]
    fn literal_and_wildcard_rules_keep_their_order() {
        let s = sel(vec![exc("/a/*/c"), inc("/a/b/c/d"), inc("/a/b"), exc("**")]);
        assert_eq!(v(&s, "/a/b/c/d", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/a/b/x", Kind::File), Select::Include);
        let s = sel(vec![inc("/a/b/c/d"), exc("/a/*/c"), exc("**")]);
        assert_eq!(v(&s, "/a/b/c/d", Kind::File), Select::Include);
        assert_eq!(v(&s, "/a/b/c", Kind::Dir), Select::Scan);
        assert_eq!(v(&s, "/a/b/c/e", Kind::File), Select::Exclude);
    }

    #[test]
    fn ignorecase_and_literal_mode() {
        let s = sel(vec![inc("ignorecase:/A/b*"), exc("**")]);
        assert_eq!(v(&s, "/a/BX", Kind::File), Select::Include);
        // Literal mode: exact strings; the root "/" itself never scans.
        let s = Selection::new(
            Path::new("/tmp"),
            &Spec {
                rules: vec![
                    Rule::Filter(Filter::Literal),
                    inc("/tmp/a/*"),
                    Rule::Filter(Filter::Globbing),
                    exc("**"),
                ],
                null_separator: false,
            },
        )
        .unwrap();
        assert_eq!(v(&s, "/tmp/a/*", Kind::File), Select::Include);
        assert_eq!(v(&s, "/tmp/a/b", Kind::File), Select::Exclude);
        assert_eq!(v(&s, "/tmp/a", Kind::Dir), Select::Scan);
        assert!(Selection::new(
            Path::new("/"),
            &Spec {
                rules: vec![Rule::Filter(Filter::Literal), exc("/a")],
                null_separator: false
            }
        )
        .is_err());
    }

    #[test]
    fn errors_have_duplicitys_codes() {
        let err = |rules: Vec<Rule>| {
            Selection::new(
                Path::new("/tmp"),
                &Spec {
                    rules,
                    null_separator: false,
                },
            )
            .err()
            .map(|e| e.exit_code())
        };
        assert_eq!(err(vec![exc("/etc/x")]), Some(14));
        assert_eq!(err(vec![exc("/tmp//x")]), Some(15));
        assert_eq!(err(vec![inc("/tmp/x")]), Some(16));
        assert_eq!(
            err(vec![exc("/tmp/x"), Rule::Filter(Filter::Literal)]),
            Some(71)
        );
        assert_eq!(
            err(vec![Rule::Filter(Filter::Globbing), exc("/tmp/x")]),
            Some(70)
        );
        assert_eq!(
            err(vec![exc("**"), Rule::ExcludeRegexp(b"(".to_vec())]),
            Some(15)
        );
        assert_eq!(err(vec![exc("/tmp/[x")]), None);
        assert_eq!(err(vec![exc("/tmp/x//")]), None);
    }

    #[test]
    fn canonical_source_strings() {
        assert_eq!(canonical(b"./src/"), b"src");
        assert_eq!(canonical(b"/a//b/./c/"), b"/a/b/c");
        assert_eq!(canonical(b"./"), b".");
        assert_eq!(canonical(b"/"), b"/");
        assert_eq!(canonical(b"../x"), b"../x");
    }

    #[test]
    fn split_like_python() {
        assert_eq!(split_path(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_path(b"a"), (&b""[..], &b"a"[..]));
        assert_eq!(split_path(b"a//b"), (&b"a"[..], &b"b"[..]));
    }
}
