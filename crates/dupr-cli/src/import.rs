//! `dupr profile import`: a duplicity-backup.conf or a duply profile
//! directory converted into a dupr profile.
//!
//! Both wrappers keep their settings in bash that they `source`: zertrin's
//! duplicity-backup.sh a file of variables and arrays, duply
//! `<profile>/conf`. [`Shell`] evaluates the subset such files use
//! (assignments, quoting, arrays over several lines, comments, `$VAR` and
//! `${VAR}` of earlier variables and of HOME) without running anything.
//! The converters then map each setting to a profile field or to a dupr
//! option, in the order the wrapper put them on duplicity's command line
//! (selection rules are order-sensitive), and say in a note what they could
//! not convert and why. Secrets never appear in a note.

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, CommandFactory};

use crate::cli::Cli;
use crate::profile::{shell_quote, Profile};

/// The profile TOML for `from`, and what could not be converted.
pub fn import(from: &Path) -> Result<(String, Vec<String>)> {
    let meta = std::fs::metadata(from).with_context(|| format!("reading {}", from.display()))?;
    let (conf, dir) = if meta.is_dir() {
        let conf = from.join("conf");
        if !conf.is_file() {
            bail!(
                "{} is a directory without a conf file: not a duply profile",
                from.display()
            );
        }
        (conf, Some(from.to_path_buf()))
    } else {
        (from.to_path_buf(), None)
    };
    let text =
        std::fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
    convert(&text, &conf, dir.as_deref(), from)
}

/// [`import`] of `text`, the content of `conf`: a duply profile when `dir`
/// (its directory) is given or when its variables are duply's, else a
/// duplicity-backup.sh config. `from` is what the user named (for the
/// profile's header comment).
pub fn convert(
    text: &str,
    conf: &Path,
    dir: Option<&Path>,
    from: &Path,
) -> Result<(String, Vec<String>)> {
    let duply_conf = dir.is_some()
        || {
            let sh = Shell::parse(text, base_env());
            let has = |names: &[&str]| names.iter().any(|n| sh.vars.contains_key(*n));
            if has(&["ROOT", "DEST", "INCLIST", "EXCLIST", "STATIC_OPTIONS"]) {
                false
            } else if has(&["SOURCE", "TARGET", "GPG_KEY", "DUPL_PARAMS"]) {
                true
            } else {
                bail!(
                "{}: neither a duplicity-backup.sh config (no ROOT or DEST) nor a duply conf (no SOURCE or TARGET)",
                from.display()
            );
            }
        };
    if duply_conf {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => conf
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
        };
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        duply(&dir, text)?.finish(from, "duply profile")
    } else {
        zertrin(text)?.finish(from, "duplicity-backup.sh config")
    }
}

/// What a config may read from the environment of the import: values that
/// are the same when the backup runs later.
fn base_env() -> BTreeMap<String, String> {
    ["HOME", "USER", "LOGNAME"]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect()
}

// ------------------------------------------------------------ bash subset

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Arr(Vec<String>),
}

#[derive(Clone, Debug)]
struct Var {
    val: Val,
    line: usize,
    exported: bool,
    /// The value ran a command (`$(...)`, backticks) or used an expansion
    /// the evaluator does not do; that part was left out.
    dynamic: bool,
}

impl Var {
    /// `$NAME`: a string, or an array's first element.
    fn text(&self) -> String {
        match &self.val {
            Val::Str(s) => s.clone(),
            Val::Arr(a) => a.first().cloned().unwrap_or_default(),
        }
    }

    fn is_empty(&self) -> bool {
        match &self.val {
            Val::Str(s) => s.is_empty(),
            Val::Arr(a) => a.iter().all(String::is_empty),
        }
    }
}

/// The variables a sourced bash file sets, evaluated without running it.
struct Shell {
    vars: BTreeMap<String, Var>,
    env: BTreeMap<String, String>,
    /// Variables other assignments read (helpers rather than settings).
    used: BTreeSet<String>,
    /// Variables read but set neither in the file nor in `env`, with the
    /// line of the first reference.
    unset: BTreeMap<String, usize>,
    exported: BTreeSet<String>,
    notes: Vec<String>,
    s: Vec<char>,
    i: usize,
    line: usize,
    /// Nesting of if/case/loops/functions/braces: assignments inside are
    /// conditional and not taken.
    depth: usize,
    dynamic: bool,
    glob: bool,
    /// Reading a command we ignore: its references count for nothing.
    quiet: bool,
    assigning: Option<String>,
    /// Bytes produced by variable expansions so far, and whether that
    /// passed [`EXPANSION_BUDGET`].
    expanded: usize,
    overflow: bool,
}

/// Most bytes all expansions of one file may produce: real configs expand
/// a few KiB; this bounds memory and time on a hostile one.
const EXPANSION_BUDGET: usize = 16 << 20;

fn is_name(w: &str) -> bool {
    let mut c = w.chars();
    c.next()
        .is_some_and(|f| f == '_' || f.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric())
}

impl Shell {
    fn parse(text: &str, env: BTreeMap<String, String>) -> Shell {
        let mut sh = Shell {
            vars: BTreeMap::new(),
            env,
            used: BTreeSet::new(),
            unset: BTreeMap::new(),
            exported: BTreeSet::new(),
            notes: Vec::new(),
            s: text.chars().collect(),
            i: 0,
            line: 1,
            depth: 0,
            dynamic: false,
            glob: false,
            quiet: false,
            assigning: None,
            expanded: 0,
            overflow: false,
        };
        while sh.i < sh.s.len() {
            sh.statement();
        }
        for (name, v) in sh.vars.iter_mut() {
            v.exported |= sh.exported.contains(name);
        }
        sh
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek2(&self) -> Option<char> {
        self.s.get(self.i + 1).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Spaces, tabs and line continuations.
    fn blanks(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t') => {
                    self.bump();
                }
                Some('\\') if self.peek2() == Some('\n') => {
                    self.bump();
                    self.bump();
                }
                _ => break,
            }
        }
    }

    fn comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    fn statement(&mut self) {
        self.blanks();
        match self.peek() {
            None => return,
            Some('\n' | ';' | '&' | '|') => {
                self.bump();
                return;
            }
            Some('#') => return self.comment(),
            _ => {}
        }
        let line = self.line;
        // Some(exported) after export/declare/readonly/local.
        let mut decl: Option<bool> = None;
        loop {
            self.blanks();
            if matches!(self.peek(), None | Some('\n' | ';' | '#')) {
                return;
            }
            if let Some((name, append)) = self.assignment_head() {
                self.assign(name, append, decl == Some(true), line);
                continue;
            }
            self.quiet = true;
            let word = self.word();
            self.quiet = false;
            match (word.as_deref(), decl) {
                (Some("export"), None) => decl = Some(true),
                (Some("readonly" | "declare" | "typeset" | "local"), None) => decl = Some(false),
                (Some(w), Some(_)) if w.starts_with('-') => {}
                (Some(w), Some(export)) if is_name(w) => {
                    if export {
                        self.exported.insert(w.to_string());
                    }
                }
                (Some("then" | "do" | "else"), None) => {}
                _ => return self.other(line, word),
            }
        }
    }

    /// `NAME=` or `NAME+=` at the current position, consumed.
    fn assignment_head(&mut self) -> Option<(String, bool)> {
        let mut j = self.i;
        let s = &self.s;
        if !s
            .get(j)
            .is_some_and(|c| *c == '_' || c.is_ascii_alphabetic())
        {
            return None;
        }
        while s
            .get(j)
            .is_some_and(|c| *c == '_' || c.is_ascii_alphanumeric())
        {
            j += 1;
        }
        let name: String = s[self.i..j].iter().collect();
        let append = s.get(j) == Some(&'+');
        if append {
            j += 1;
        }
        if s.get(j) != Some(&'=') {
            return None;
        }
        self.i = j + 1;
        Some((name, append))
    }

    fn assign(&mut self, name: String, append: bool, export: bool, line: usize) {
        self.assigning = Some(name.clone());
        self.dynamic = false;
        let val = if self.peek() == Some('(') {
            self.bump();
            Val::Arr(self.array(&name))
        } else {
            Val::Str(self.word().unwrap_or_default())
        };
        self.assigning = None;
        if self.depth > 0 {
            self.notes.push(format!(
                "{name} (line {line}) is set inside a shell block (if, case, loop or function), which import does not evaluate"
            ));
            return;
        }
        let prev = self.vars.get(&name);
        let dynamic = self.dynamic || (append && prev.is_some_and(|v| v.dynamic));
        let exported = export || prev.is_some_and(|v| v.exported);
        let val = match (append, prev.map(|v| v.val.clone()), val) {
            (true, Some(Val::Str(a)), Val::Str(b)) => Val::Str(a + &b),
            (true, Some(Val::Arr(mut a)), Val::Arr(b)) => {
                a.extend(b);
                Val::Arr(a)
            }
            (_, _, v) => v,
        };
        self.vars.insert(
            name,
            Var {
                val,
                line,
                exported,
                dynamic,
            },
        );
    }

    /// The elements of `( ... )`, over as many lines as it takes.
    fn array(&mut self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            self.blanks();
            match self.peek() {
                None => {
                    self.notes
                        .push(format!("{name}: the array is not closed with `)`"));
                    break;
                }
                Some(')') => {
                    self.bump();
                    break;
                }
                Some('\n') => {
                    self.bump();
                }
                Some('#') => self.comment(),
                _ => {
                    self.glob = false;
                    match self.word() {
                        Some(w) => {
                            if self.glob {
                                self.notes.push(format!(
                                    "{name}: the unquoted element {w:?} is a pattern bash would expand against the files present when the config is read; taken literally"
                                ));
                            }
                            out.push(w);
                        }
                        None => {
                            self.bump();
                        }
                    }
                }
            }
        }
        out
    }

    /// A statement that is not an assignment: skipped, with its nesting
    /// tracked so that assignments inside blocks are not taken.
    fn other(&mut self, line: usize, first: Option<String>) {
        let top = self.depth == 0;
        let mut words: Vec<String> = first.into_iter().collect();
        if words.is_empty() {
            self.bump();
        }
        self.quiet = true;
        loop {
            self.blanks();
            match self.peek() {
                None | Some('\n' | ';' | '#') => break,
                Some('(' | ')' | '<' | '>' | '&' | '|') => {
                    self.bump();
                }
                _ => match self.word() {
                    Some(w) => words.push(w),
                    None => {
                        self.bump();
                    }
                },
            }
        }
        self.quiet = false;
        self.dynamic = false;
        let first = words.first().map(String::as_str).unwrap_or("");
        match first {
            "if" | "while" | "until" | "for" | "case" | "select" => self.depth += 1,
            "fi" | "done" | "esac" => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        for w in &words {
            match w.as_str() {
                "{" => self.depth += 1,
                "}" => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        if top && !matches!(first, "fi" | "done" | "esac" | "}") {
            let what = if self.depth > 0 {
                format!("a `{first}` block: import does not evaluate shell code, so nothing set inside it is converted")
            } else {
                format!("the command `{first}` is not a variable assignment; ignored")
            };
            self.notes.push(format!("line {line}: {what}"));
        }
    }

    /// One shell word, expanded; None at a word boundary.
    fn word(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut any = false;
        if self.peek() == Some('~')
            && matches!(
                self.peek2(),
                None | Some('/' | ' ' | '\t' | '\n' | ';' | ')')
            )
        {
            self.bump();
            out.push_str(&self.lookup("HOME"));
            any = true;
        }
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
                '\\' => {
                    self.bump();
                    if let Some(x) = self.bump() {
                        if x != '\n' {
                            out.push(x);
                        }
                    }
                }
                '\'' => {
                    self.bump();
                    while let Some(x) = self.bump() {
                        if x == '\'' {
                            break;
                        }
                        out.push(x);
                    }
                }
                '"' => {
                    self.bump();
                    self.dquoted(&mut out, true);
                }
                '$' => {
                    self.bump();
                    self.dollar(&mut out);
                }
                '`' => {
                    self.bump();
                    self.backtick();
                }
                _ => {
                    self.glob |= matches!(c, '*' | '?' | '[');
                    out.push(c);
                    self.bump();
                }
            }
            any = true;
        }
        any.then_some(out)
    }

    /// The inside of "...", up to the closing quote (or the end).
    fn dquoted(&mut self, out: &mut String, closing: bool) {
        while let Some(c) = self.bump() {
            match c {
                '"' if closing => return,
                '\\' => match self.peek() {
                    Some(x @ ('$' | '`' | '"' | '\\')) => {
                        self.bump();
                        out.push(x);
                    }
                    Some('\n') => {
                        self.bump();
                    }
                    _ => out.push('\\'),
                },
                '$' => self.dollar(out),
                '`' => self.backtick(),
                _ => out.push(c),
            }
        }
    }

    fn backtick(&mut self) {
        while let Some(c) = self.bump() {
            match c {
                '`' => break,
                '\\' => {
                    self.bump();
                }
                _ => {}
            }
        }
        self.dynamic = true;
    }

    /// After a `$`.
    fn dollar(&mut self, out: &mut String) {
        match self.peek() {
            Some('{') => {
                self.bump();
                let mut body = String::new();
                let mut nest = 0;
                while let Some(c) = self.bump() {
                    match c {
                        '}' if nest == 0 => break,
                        '{' => nest += 1,
                        '}' => nest -= 1,
                        _ => {}
                    }
                    body.push(c);
                }
                self.braced(&body, out);
            }
            Some('(') => {
                // $(command) or $((arithmetic)): not run.
                let mut nest = 0;
                while let Some(c) = self.bump() {
                    match c {
                        '(' => nest += 1,
                        ')' => {
                            nest -= 1;
                            if nest == 0 {
                                break;
                            }
                        }
                        '\'' => while self.bump().is_some_and(|x| x != '\'') {},
                        '\\' => {
                            self.bump();
                        }
                        _ => {}
                    }
                }
                self.dynamic = true;
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let mut name = String::new();
                while let Some(c) = self
                    .peek()
                    .filter(|c| *c == '_' || c.is_ascii_alphanumeric())
                {
                    name.push(c);
                    self.bump();
                }
                let v = self.lookup(&name);
                out.push_str(&v);
            }
            Some('\'') => {
                // $'...' with the common escapes.
                self.bump();
                while let Some(c) = self.bump() {
                    match c {
                        '\'' => break,
                        '\\' => match self.bump() {
                            Some('n') => out.push('\n'),
                            Some('t') => out.push('\t'),
                            Some(x) => out.push(x),
                            None => break,
                        },
                        _ => out.push(c),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                self.bump();
                self.dynamic = true;
            }
            _ => out.push('$'),
        }
    }

    /// `${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`, `${NAME+word}`
    /// (and `=`/`:=` read as `-`/`:-`); anything else is left out.
    fn braced(&mut self, body: &str, out: &mut String) {
        let n = body
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(body.len());
        let (name, op) = body.split_at(n);
        if !is_name(name) {
            self.dynamic = true;
            return;
        }
        let set = self.vars.contains_key(name) || self.env.contains_key(name);
        let (colon, op) = match op.strip_prefix(':') {
            Some(rest) => (true, rest),
            None => (false, op),
        };
        let Some(kind) = op.chars().next() else {
            let v = self.lookup(name);
            out.push_str(&v);
            return;
        };
        let word = &op[kind.len_utf8()..];
        let value = if set {
            self.lookup(name)
        } else {
            String::new()
        };
        let present = set && !(colon && value.is_empty());
        match kind {
            '-' | '=' if present => out.push_str(&value),
            '-' | '=' => {
                let w = self.expand(word);
                out.push_str(&w);
            }
            '+' if present => {
                let w = self.expand(word);
                out.push_str(&w);
            }
            '+' => {}
            _ => self.dynamic = true,
        }
    }

    fn lookup(&mut self, name: &str) -> String {
        let own = self.assigning.as_deref() == Some(name);
        if let Some(v) = self.vars.get(name) {
            self.dynamic |= v.dynamic;
            let text = v.text();
            if !own && !self.quiet {
                self.used.insert(name.to_string());
            }
            return self.charge(text);
        }
        if let Some(v) = self.env.get(name) {
            let text = v.clone();
            return self.charge(text);
        }
        if !own && !self.quiet {
            self.unset.entry(name.to_string()).or_insert(self.line);
        }
        String::new()
    }

    /// `text` if the file's expansions stay within [`EXPANSION_BUDGET`];
    /// past it, nothing more is expanded (`A=$A$A` repeated would double
    /// a value per line).
    fn charge(&mut self, text: String) -> String {
        self.expanded = self.expanded.saturating_add(text.len());
        if self.expanded <= EXPANSION_BUDGET {
            return text;
        }
        self.dynamic = true;
        if !self.overflow {
            self.overflow = true;
            self.notes.push(format!(
                "line {}: variables expand to more than {} MiB in all; import stopped expanding them there",
                self.line,
                EXPANSION_BUDGET >> 20
            ));
        }
        String::new()
    }

    /// Run `f` on `text` as the input, then return to the file.
    fn on_text<T>(&mut self, text: &str, f: impl FnOnce(&mut Shell) -> T) -> T {
        let s = std::mem::replace(&mut self.s, text.chars().collect());
        let (i, line) = (self.i, self.line);
        self.i = 0;
        let r = f(self);
        (self.s, self.i, self.line) = (s, i, line);
        r
    }

    /// `text` expanded as between double quotes.
    fn expand(&mut self, text: &str) -> String {
        self.on_text(text, |sh| {
            let mut out = String::new();
            sh.dquoted(&mut out, false);
            out
        })
    }

    /// `text` split into words as `eval` does (quotes, expansions).
    fn split(&mut self, text: &str) -> Vec<String> {
        self.on_text(text, |sh| {
            let mut words = Vec::new();
            loop {
                sh.blanks();
                match sh.peek() {
                    None | Some('#') => break,
                    Some('\n' | ';') => {
                        sh.bump();
                    }
                    _ => match sh.word() {
                        Some(w) => words.push(w),
                        None => {
                            sh.bump();
                        }
                    },
                }
            }
            words
        })
    }
}

// ------------------------------------------------------- dupr's options

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Flag,
    Int,
    Float,
    Str,
}

struct Spec {
    long: String,
    kind: Kind,
    append: bool,
    selection: bool,
}

/// dupr's long options as the clap parser defines them.
struct Options {
    specs: Vec<Spec>,
    names: BTreeMap<String, usize>,
    shorts: BTreeMap<char, usize>,
}

/// Options that belong to an invocation, not to a profile (profile.rs).
const NOT_IN_PROFILE: &[&str] = &[
    "help", "version", "generate", "profile", "config", "preview",
];

impl Options {
    fn new() -> Options {
        let mut cmd = Cli::command();
        cmd.build();
        let ints = [
            TypeId::of::<u64>(),
            TypeId::of::<u32>(),
            TypeId::of::<usize>(),
            TypeId::of::<i64>(),
            TypeId::of::<i32>(),
        ];
        let mut o = Options {
            specs: Vec::new(),
            names: BTreeMap::new(),
            shorts: BTreeMap::new(),
        };
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            let takes = a.get_num_args().is_some_and(|n| n.takes_values())
                && !matches!(a.get_action(), ArgAction::SetTrue | ArgAction::Count);
            let t = a.get_value_parser().type_id();
            let kind = if !takes {
                Kind::Flag
            } else if ints.iter().any(|i| t == *i) {
                Kind::Int
            } else if t == TypeId::of::<f64>() {
                Kind::Float
            } else {
                Kind::Str
            };
            let ix = o.specs.len();
            o.specs.push(Spec {
                long: long.to_string(),
                kind,
                append: matches!(a.get_action(), ArgAction::Append),
                selection: a.get_help_heading() == Some("Selection"),
            });
            o.names.insert(long.to_string(), ix);
            for alias in a.get_all_aliases().unwrap_or_default() {
                o.names.insert(alias.to_string(), ix);
            }
            if let Some(c) = a.get_short() {
                o.shorts.insert(c, ix);
            }
        }
        o
    }

    /// A long option by name, alias or unique abbreviation.
    fn find(&self, name: &str) -> Result<usize, String> {
        if let Some(&ix) = self.names.get(name) {
            return Ok(ix);
        }
        let hits: BTreeSet<usize> = self
            .names
            .range(name.to_string()..)
            .take_while(|(k, _)| k.starts_with(name))
            .map(|(_, &ix)| ix)
            .collect();
        match hits.len() {
            1 => Ok(*hits.first().expect("one")),
            0 => Err("not an option dupr knows".into()),
            _ => Err(format!(
                "ambiguous abbreviation of {}",
                hits.iter()
                    .map(|&i| format!("--{}", self.specs[i].long))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

// ------------------------------------------------------------ the result

/// One selection rule, in the wrapper's order.
enum Sel {
    /// A select line, "+ PATTERN" or "- PATTERN".
    Line(String),
    /// A selection option other than a pattern or a filelist.
    Opt(String, toml::Value),
    /// `include-filelist` / `exclude-filelist` FILE.
    List { key: String, path: String },
}

/// A select line for an --include/--exclude pattern, quoted where the
/// filelist reader would otherwise trim or unquote it.
fn select_line(include: bool, pat: &str) -> Option<String> {
    if pat.is_empty() || pat.contains(['\n', '\r']) {
        return None;
    }
    let ws = |c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c);
    let quoted = |q: char| pat.len() >= 2 && pat.starts_with(q) && pat.ends_with(q);
    let quote =
        pat != pat.trim_matches(ws) || quoted('\'') || quoted('"') || pat == "'" || pat == "\"";
    let sign = if include { '+' } else { '-' };
    Some(if quote {
        format!("{sign} '{pat}'")
    } else {
        format!("{sign} {pat}")
    })
}

/// The rules of a filelist as select lines, each with an explicit sign
/// (a bare line takes the list's default), as duplicity reads them.
fn filelist_lines(text: &str, include: bool) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let sign = if include { '+' } else { '-' };
    text.split('\n')
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            if l.starts_with("+ ") || l.starts_with("- ") {
                l.to_string()
            } else {
                format!("{sign} {l}")
            }
        })
        .collect()
}

struct Out {
    p: Profile,
    sel: Vec<Sel>,
    notes: Vec<String>,
    opts: Options,
}

impl Out {
    fn new() -> Out {
        Out {
            p: Profile::default(),
            sel: Vec::new(),
            notes: Vec::new(),
            opts: Options::new(),
        }
    }

    fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Command-line words of the wrapper (STATIC_OPTIONS, DUPL_PARAMS, ...).
    fn words(&mut self, words: &[String], origin: &str) {
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            i += 1;
            let (ix, inline) = if let Some(body) = w.strip_prefix("--") {
                if body.is_empty() {
                    self.note(format!(
                        "{origin}: the arguments after `--` are not options; dropped"
                    ));
                    break;
                }
                let (name, inline) = match body.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (body, None),
                };
                match self.opts.find(name) {
                    Ok(ix) => (ix, inline),
                    Err(why) => {
                        let value = if inline.is_none()
                            && words.get(i).is_some_and(|n| !n.starts_with('-'))
                        {
                            i += 1;
                            format!(" {}", words[i - 1])
                        } else {
                            String::new()
                        };
                        self.note(format!("{origin}: --{name}{value}: {why}; dropped"));
                        continue;
                    }
                }
            } else if w.len() > 1 && w.starts_with('-') {
                let c = w[1..].chars().next().expect("len > 1");
                let rest = &w[1 + c.len_utf8()..];
                match self.opts.shorts.get(&c) {
                    Some(&ix) => (ix, (!rest.is_empty()).then(|| rest.to_string())),
                    None => {
                        self.note(format!("{origin}: {w}: not an option dupr knows; dropped"));
                        continue;
                    }
                }
            } else {
                self.note(format!("{origin}: {w:?} is not an option; dropped"));
                continue;
            };
            let (long, kind) = (self.opts.specs[ix].long.clone(), self.opts.specs[ix].kind);
            let raw = match (kind, inline) {
                (Kind::Flag, _) => None,
                (_, Some(v)) => Some(v),
                (_, None) => match words.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(v.clone())
                    }
                    None => {
                        self.note(format!("{origin}: --{long} has no value; dropped"));
                        continue;
                    }
                },
            };
            if NOT_IN_PROFILE.contains(&long.as_str()) {
                self.note(format!(
                    "{origin}: --{long} belongs on the command line, not in a profile; dropped"
                ));
                continue;
            }
            self.put(&long, raw.as_deref(), origin);
        }
    }

    /// Set option `long` (an exact name) from a wrapper setting.
    fn put(&mut self, long: &str, raw: Option<&str>, origin: &str) {
        let ix = self.opts.find(long).expect("a dupr option");
        let spec = &self.opts.specs[ix];
        let raw_s = raw.unwrap_or_default();
        let v = match spec.kind {
            Kind::Flag => toml::Value::Boolean(true),
            Kind::Int => raw_s
                .parse::<i64>()
                .map(toml::Value::Integer)
                .unwrap_or_else(|_| toml::Value::String(raw_s.into())),
            Kind::Float => raw_s
                .parse::<f64>()
                .map(toml::Value::Float)
                .unwrap_or_else(|_| toml::Value::String(raw_s.into())),
            Kind::Str => toml::Value::String(raw_s.into()),
        };
        if spec.kind != Kind::Flag {
            // What dupr's parser would refuse (a number that is not one,
            // a value outside an option's choices) would fail every run.
            let arg = format!("--{long}={raw_s}");
            if let Err(e) = crate::cli::command().try_get_matches_from(["dupr", arg.as_str()]) {
                let why = e.kind().as_str().unwrap_or("refused").to_string();
                self.note(format!(
                    "{origin}: --{long} {raw_s:?} is not a value dupr takes ({why}); dropped"
                ));
                return;
            }
        }
        if spec.selection {
            let sel = match long {
                "include" | "exclude" => match select_line(long == "include", raw_s) {
                    Some(l) => Sel::Line(l),
                    None => {
                        self.note(format!(
                            "{origin}: --{long} {raw_s:?} cannot be a select line; dropped"
                        ));
                        return;
                    }
                },
                "include-filelist" | "exclude-filelist" => Sel::List {
                    key: long.into(),
                    path: raw_s.into(),
                },
                _ => Sel::Opt(long.into(), v),
            };
            self.sel.push(sel);
            return;
        }
        self.set(ix, v, origin);
    }

    fn set(&mut self, ix: usize, v: toml::Value, origin: &str) {
        let spec = &self.opts.specs[ix];
        let key = spec.long.clone();
        if spec.append && spec.kind != Kind::Flag {
            let slot = self
                .p
                .options
                .entry(key)
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            if let toml::Value::Array(a) = slot {
                a.push(v);
            }
        } else if let Some(old) = self.p.options.insert(key.clone(), v.clone()) {
            if old != v {
                self.note(format!("{origin}: {key} = {v} replaces {key} = {old}"));
            }
        }
    }

    /// The selection as profile options (dupr passes them first) and select
    /// lines (passed after them). Where that would change the wrapper's
    /// order, filelists are copied into the select lines instead.
    fn place_selection(&mut self) {
        let sel = std::mem::take(&mut self.sel);
        let arrange = |inline: bool| {
            let mut order: Vec<Option<String>> = Vec::new();
            let mut opts: Vec<(String, toml::Value)> = Vec::new();
            let mut lines: Vec<String> = Vec::new();
            let mut copied: Vec<(String, usize)> = Vec::new();
            for s in &sel {
                match s {
                    Sel::Line(l) => {
                        lines.push(l.clone());
                        order.push(None);
                    }
                    Sel::Opt(k, v) => {
                        opts.push((k.clone(), v.clone()));
                        order.push(Some(k.clone()));
                    }
                    Sel::List { key, path } => {
                        let text = if inline {
                            std::fs::read_to_string(path).ok()
                        } else {
                            None
                        };
                        match text {
                            Some(t) => {
                                let ls = filelist_lines(&t, key == "include-filelist");
                                copied.push((path.clone(), ls.len()));
                                order.extend(ls.iter().map(|_| None));
                                lines.extend(ls);
                            }
                            None => {
                                opts.push((key.clone(), toml::Value::String(path.clone())));
                                order.push(Some(key.clone()));
                            }
                        }
                    }
                }
            }
            let mut keys: Vec<Option<String>> = opts.iter().map(|(k, _)| Some(k.clone())).collect();
            keys.sort();
            keys.extend(lines.iter().map(|_| None));
            (opts, lines, copied, keys == order)
        };
        let (mut opts, mut lines, _, kept) = arrange(false);
        if !kept {
            let (o, l, copied, kept) = arrange(true);
            for (path, n) in copied {
                self.note(format!(
                    "{path}: its {n} rule(s) were copied into select to keep their place among the other selection rules; later edits of that file are not read"
                ));
            }
            if !kept {
                let mut keys: Vec<&str> = o.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort();
                keys.dedup();
                self.note(format!(
                    "selection order: a profile passes its selection options ({}) before its select lines, but the wrapper had some of them after a pattern; a path both match may be selected differently",
                    keys.join(", ")
                ));
            }
            (opts, lines) = (o, l);
        }
        for (k, v) in opts {
            let ix = self.opts.find(&k).expect("a dupr option");
            self.set(ix, v, "selection");
        }
        self.p.select.append(&mut lines);
    }

    fn finish(mut self, from: &Path, what: &str) -> Result<(String, Vec<String>)> {
        self.place_selection();
        for n in &mut self.notes {
            *n = n.replace(['\n', '\r'], " ");
        }
        let from = std::fs::canonicalize(from).unwrap_or_else(|_| from.to_path_buf());
        let mut text = format!(
            "# dupr profile imported by `dupr profile import` from\n#   {} ({what})\n",
            from.display()
        );
        if !self.notes.is_empty() {
            text.push_str("# What the import could not convert as is:\n");
            for n in &self.notes {
                text.push_str(&format!("#   - {n}\n"));
            }
        }
        text.push('\n');
        text.push_str(&toml::to_string_pretty(&self.p).context("writing the profile")?);
        let back: Profile =
            toml::from_str(&text).context("the converted profile does not read back")?;
        if back != self.p {
            bail!("the converted profile does not read back as written");
        }
        Ok((text, self.notes))
    }
}

// -------------------------------------------------------- shared helpers

/// duplicity's default cache root, where the wrappers' caches live.
fn duplicity_cache_root() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => Some(PathBuf::from(x).join("duplicity")),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache/duplicity")),
    }
}

/// Backend credentials the wrappers export for duplicity.
fn is_credential(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "AWS_",
        "GS_",
        "SWIFT_",
        "DPBX_",
        "B2_",
        "AZURE_",
        "CLOUDFILES_",
        "GOOGLE_",
        "BOTO_",
        "MEGA_",
        "PCA_",
        "ONEDRIVE_",
        "HUBIC_",
        "OS_",
        "RCLONE_",
        "BACKEND_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || ["FTP_PASSWORD", "IMAP_PASSWORD"].contains(&name)
        || ["PASSWORD", "SECRET", "TOKEN"]
            .iter()
            .any(|w| name.contains(w))
}

/// Does the URL carry a password (`scheme://user:pass@host`)?
fn url_has_password(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .and_then(|auth| auth.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Python's `urllib.parse.quote` (keeps `/`), as duply uses for user names.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Access to the parsed file: each setting is taken once; what was not
/// taken at the end was not converted.
struct Conv {
    sh: Shell,
    taken: BTreeSet<String>,
    o: Out,
}

impl Conv {
    fn new(mut sh: Shell) -> Conv {
        let mut o = Out::new();
        o.notes.append(&mut sh.notes);
        Conv {
            sh,
            taken: BTreeSet::new(),
            o,
        }
    }

    fn take(&mut self, name: &str) -> Option<Var> {
        if !self.taken.insert(name.to_string()) {
            return None;
        }
        self.sh.vars.get(name).cloned()
    }

    /// A setting's text (an array's first element), noting a value that ran
    /// a command.
    fn var(&mut self, name: &str) -> Option<String> {
        let v = self.take(name)?;
        if v.dynamic {
            self.o.note(format!(
                "{name} (line {}) runs a command or uses an expansion import does not evaluate; that part was left out of its value",
                v.line
            ));
        }
        Some(v.text())
    }

    fn nonempty(&mut self, name: &str) -> Option<String> {
        self.var(name).filter(|s| !s.is_empty())
    }

    /// `${NAME[@]}`: the elements (a string is one element), or None if unset.
    fn list(&mut self, name: &str) -> Option<Vec<String>> {
        Some(match self.take(name)?.val {
            Val::Str(s) => vec![s],
            Val::Arr(a) => a,
        })
    }

    /// Take settings without converting them; the non-empty ones.
    fn discard(&mut self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .filter(|n| self.take(n).is_some_and(|v| !v.is_empty() || v.dynamic))
            .map(|n| n.to_string())
            .collect()
    }

    fn put(&mut self, long: &str, raw: &str, origin: &str) {
        self.o.put(long, Some(raw), origin);
    }

    fn flag(&mut self, long: &str, origin: &str) {
        self.o.put(long, None, origin);
    }

    fn words(&mut self, text: &str, origin: &str) {
        let w = self.sh.split(text);
        self.o.words(&w, origin);
    }

    fn target_notes(&mut self, url: &str) {
        if url_has_password(url) {
            self.o.note(
                "the target URL holds a password: the profile is private (mode 600), but the password would be better in FTP_PASSWORD in the environment of the scheduled run",
            );
        }
    }

    /// Notes for what is left: credentials, other exported variables, and
    /// settings without a dupr equivalent. Empty ones and helpers read by
    /// other settings are passed over.
    fn leftovers(mut self, wrapper: &str) -> Out {
        let mut env = Vec::new();
        for (name, v) in std::mem::take(&mut self.sh.vars) {
            if self.taken.contains(&name) || v.is_empty() || self.sh.used.contains(&name) {
                continue;
            }
            if v.exported || is_credential(&name) {
                env.push(name);
            } else {
                self.o.note(format!(
                    "{name} (line {}): not a {wrapper} setting dupr has an equivalent for",
                    v.line
                ));
            }
        }
        if !env.is_empty() {
            let (what, them) = if env.len() == 1 {
                ("not a profile field", "it")
            } else {
                ("not profile fields", "them")
            };
            self.o.note(format!(
                "{}: {what} (dupr keeps no backend credentials in a profile); set {them} in the environment of the scheduled run",
                env.join(", ")
            ));
        }
        let unset: Vec<String> = self
            .sh
            .unset
            .iter()
            .map(|(n, l)| format!("${n} (line {l})"))
            .collect();
        if !unset.is_empty() {
            self.o.note(format!(
                "{} not set in the file: taken as empty (the wrapper may have had them from its environment)",
                unset.join(", ")
            ));
        }
        self.o
    }
}

// ------------------------------------------------- duplicity-backup.sh

/// zertrin's duplicity-backup.sh (1.6): `duplicity CMD VERBOSITY
/// STATIC_OPTIONS ENCRYPT EXCLUDE INCLUDE [--exclude=**] ROOT DEST`.
fn zertrin(text: &str) -> Result<Out> {
    let mut c = Conv::new(Shell::parse(text, base_env()));
    c.o.p.source = c.nonempty("ROOT");
    let dest = c.nonempty("DEST");
    if let Some(d) = &dest {
        c.target_notes(d);
    }
    c.o.p.target = dest.clone();
    if c.o.p.source.is_none() || dest.is_none() {
        c.o.note("ROOT or DEST is not set: give the profile a source and a target");
    }

    if let Some(v) = c.nonempty("VERBOSITY") {
        c.words(&v, "VERBOSITY");
    }
    let mut static_options = c.var("STATIC_OPTIONS").unwrap_or_default();
    if let Some(s) = c.nonempty("STORAGECLASS") {
        static_options = format!("{static_options} {s}");
    }
    c.words(&static_options, "STATIC_OPTIONS");

    // Encryption (ENCRYPT).
    let encryption = c.var("ENCRYPTION").unwrap_or_default();
    let enc_key = c.nonempty("GPG_ENC_KEY");
    let sign_key = c.nonempty("GPG_SIGN_KEY");
    let hide = c.var("HIDE_KEY_ID").is_some_and(|h| h == "yes");
    let keyring = c.nonempty("SECRET_KEYRING");
    let gpg_options = c.nonempty("GPG_OPTIONS");
    let passphrase = c.var("PASSPHRASE");
    let mut keys_used = false;
    match encryption.as_str() {
        "yes" => {
            if let Some(o) = &gpg_options {
                c.put("gpg-options", o, "GPG_OPTIONS");
            }
            match (&enc_key, &sign_key) {
                (Some(e), Some(s)) => {
                    keys_used = true;
                    let opt = if hide {
                        "hidden-encrypt-key"
                    } else {
                        "encrypt-key"
                    };
                    c.put(opt, e, "GPG_ENC_KEY");
                    c.put("sign-key", s, "GPG_SIGN_KEY");
                    if let Some(k) = &keyring {
                        c.put("encrypt-secret-keyring", k, "SECRET_KEYRING");
                    }
                }
                (None, None) => {}
                _ => c.o.note(
                    "GPG_ENC_KEY and GPG_SIGN_KEY: the wrapper uses keys only when both are set, so it encrypted with PASSPHRASE alone",
                ),
            }
        }
        "no" => c.flag("no-encryption", "ENCRYPTION"),
        "" => {}
        other => c.o.note(format!(
            "ENCRYPTION={other:?} is neither yes nor no: the wrapper then passed no encryption options (PASSPHRASE alone), and so does the profile"
        )),
    }
    // Key ids the wrapper set but did not use: said, never dropped silently.
    if encryption != "yes" && (enc_key.is_some() || sign_key.is_some()) {
        let mut set = Vec::new();
        let mut add = Vec::new();
        if let Some(e) = &enc_key {
            set.push(format!("GPG_ENC_KEY={e}"));
            add.push(format!(
                "encrypt-key = [{}]",
                toml::Value::String(e.clone())
            ));
        }
        if let Some(s) = &sign_key {
            set.push(format!("GPG_SIGN_KEY={s}"));
            add.push(format!("sign-key = {}", toml::Value::String(s.clone())));
        }
        let why = if encryption == "no" {
            "ENCRYPTION='no' (unencrypted backups)".to_string()
        } else if encryption.is_empty() {
            "ENCRYPTION is not 'yes', so the wrapper did not pass them to duplicity (it encrypted with PASSPHRASE alone)".to_string()
        } else {
            format!("ENCRYPTION={encryption:?} is not 'yes', so the wrapper did not pass them to duplicity")
        };
        c.o.note(format!(
            "{}: {why}; to back up to the key(s), add to the profile: {}",
            set.join(", "),
            add.join(", ")
        ));
    }
    match passphrase {
        Some(pw) if !pw.is_empty() && encryption != "no" => {
            c.o.p.passphrase = Some(pw.clone());
            // The wrapper sets SIGN_PASSPHRASE=PASSPHRASE; dupr uses
            // PASSPHRASE for signing only when the sign key is a recipient.
            if keys_used && enc_key != sign_key {
                c.o.p.sign_passphrase = Some(pw);
            }
            c.o.note(
                "PASSPHRASE: copied into the profile in clear (the profile is private, mode 600, as dupr requires then); better put it in a private file and replace `passphrase` with `passphrase-file = \"/path/to/file\"` (or `passphrase-command`)",
            );
        }
        Some(pw) if !pw.is_empty() => {
            c.o.note("PASSPHRASE: not needed with ENCRYPTION=no; not copied");
        }
        _ => {}
    }

    // Selection: EXCLUDE (device files, EXCLIST), INCLUDE (INCLIST,
    // INCEXCFILE), then --exclude=** when anything was included.
    if c.var("EXDEVICEFILES")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|n| n != 0)
    {
        c.flag("exclude-device-files", "EXDEVICEFILES");
    }
    for e in c.list("EXCLIST").unwrap_or_default() {
        if !e.is_empty() {
            c.o.put("exclude", Some(&e), "EXCLIST");
        }
    }
    let inclist = c.list("INCLIST");
    for i in inclist.iter().flatten() {
        if !i.is_empty() {
            c.o.put("include", Some(i), "INCLIST");
        }
    }
    let incexc = c.nonempty("INCEXCFILE");
    if let Some(f) = &incexc {
        c.put("include-filelist", f, "INCEXCFILE");
    }
    if inclist.as_ref().is_some_and(|l| !l.is_empty()) || incexc.is_some() {
        if inclist
            .as_ref()
            .is_some_and(|l| l.iter().all(String::is_empty))
            && incexc.is_none()
        {
            c.o.note(
                "INCLIST holds only empty entries: the wrapper then excluded everything (--exclude=** with nothing included), and so does the profile",
            );
        }
        c.o.put("exclude", Some("**"), "INCLIST");
    }

    // Retention (duplicity_cleanup, after each backup as in dupr).
    let cleanup = c.var("CLEAN_UP_TYPE").unwrap_or_default();
    let count = c.var("CLEAN_UP_VARIABLE").unwrap_or_default();
    let number = |what: &str, v: &str, c: &mut Conv| -> Option<u32> {
        let n = v.trim().parse::<u32>().ok();
        if n.is_none() {
            c.o.note(format!("{what}={v:?} is not a count"));
        }
        n
    };
    if !count.is_empty() {
        match cleanup.as_str() {
            "remove-older-than" => c.o.p.retention.remove_older_than = Some(count.clone()),
            "remove-all-but-n-full" => {
                c.o.p.retention.keep_full = number("CLEAN_UP_VARIABLE", &count, &mut c);
            }
            "remove-all-inc-of-but-n-full" => {
                c.o.p.retention.keep_incrementals_of = number("CLEAN_UP_VARIABLE", &count, &mut c);
            }
            "none" | "" => {}
            other => c.o.note(format!(
                "CLEAN_UP_TYPE={other:?}: not a duplicity remove command"
            )),
        }
    }
    if let Some(v) = c.nonempty("REMOVE_INCREMENTALS_OLDER_THAN") {
        if let Ok(n) = v.trim().parse::<u32>() {
            let old = c.o.p.retention.keep_incrementals_of;
            if old.is_some_and(|old| old != n) {
                c.o.note(
                    "REMOVE_INCREMENTALS_OLDER_THAN and CLEAN_UP_TYPE=remove-all-inc-of-but-n-full both ran: the profile keeps the smaller count, which is what the two runs amounted to",
                );
            }
            c.o.p.retention.keep_incrementals_of = Some(old.map_or(n, |old| old.min(n)));
        } else {
            c.o.note(format!(
                "REMOVE_INCREMENTALS_OLDER_THAN={v:?}: not a count, so the wrapper skipped it"
            ));
        }
    }

    // Logs, temporary files, mail, notifications.
    c.o.p.log_dir = c.nonempty("LOGDIR");
    if let Some(v) = c.nonempty("REMOVE_LOGS_OLDER_THAN") {
        match v.trim().parse::<u64>() {
            Ok(d) => c.o.p.log_keep_days = Some(d),
            Err(_) => c.o.note(format!(
                "REMOVE_LOGS_OLDER_THAN={v:?} is not a number of days"
            )),
        }
    }
    if c.discard(&["LOG_FILE"]).len() == 1 {
        c.o.note(
            "LOG_FILE: dupr names each run's log itself (dupr-NAME-ACTION-TIME.log in log-dir)",
        );
    }
    if c.discard(&["LOG_FILE_OWNER"]).len() == 1 {
        c.o.note("LOG_FILE_OWNER: dupr writes its logs as the user that runs it");
    }
    if let Some(t) = c.nonempty("TMPDIR") {
        c.put("tempdir", &t, "TMPDIR");
    }
    match c.nonempty("EMAIL_TO") {
        Some(to) => {
            c.o.p.notify.email = Some(to);
            c.o.p.notify.email_from = c.nonempty("EMAIL_FROM");
            let failure_only = c.var("EMAIL_FAILURE_ONLY").is_some_and(|v| v == "yes");
            c.o.p.notify.on = Some(if failure_only { "failure" } else { "always" }.into());
            if c.discard(&["EMAIL_SUBJECT"]).len() == 1 {
                c.o.note("EMAIL_SUBJECT: dupr's mail subject names the profile, the action and the result");
            }
            let mail = c.var("MAIL").unwrap_or_default();
            let prog = mail.split_whitespace().next().unwrap_or("");
            match prog.rsplit('/').next().unwrap_or("") {
                "" | "sendmail" if !prog.contains('/') => {}
                "sendmail" | "ssmtp" | "msmtp" => c.o.p.notify.sendmail = Some(format!("{mail} -t")),
                "mailx" | "mail" => c.o.note(format!(
                    "MAIL={mail:?}: dupr mails through `sendmail -t` (set notify.sendmail to another command reading the whole message on stdin)"
                )),
                _ => c.o.note(format!(
                    "MAIL={mail:?}: the wrapper called a custom script as MAIL SUBJECT TO FROM with the body on stdin; dupr's notify.sendmail gets the whole message, headers included, on stdin"
                )),
            }
        }
        None => {
            let unused = c.discard(&["EMAIL_FROM", "EMAIL_SUBJECT", "EMAIL_FAILURE_ONLY", "MAIL"]);
            if !unused.is_empty() {
                c.o.note(format!(
                    "{}: unused, as EMAIL_TO is empty",
                    unused.join(", ")
                ));
            }
        }
    }
    let service = c.nonempty("NOTIFICATION_SERVICE");
    let service_settings = c.discard(&[
        "NOTIFICATION_FAILURE_ONLY",
        "SLACK_HOOK_URL",
        "SLACK_CHANNEL",
        "SLACK_USERNAME",
        "SLACK_EMOJI",
        "PUSHOVER_TOKEN",
        "PUSHOVER_USER",
        "IFTTT_KEY",
        "IFTTT_MAKER_EVENT",
        "IFTTT_HOOK_URL",
        "IFTTT_VALUE2",
        "TELEGRAM_CHATID",
        "TELEGRAM_KEY",
    ]);
    if service.is_none() && !service_settings.is_empty() {
        c.o.note(format!(
            "{}: unused, as NOTIFICATION_SERVICE is empty",
            service_settings.join(", ")
        ));
    }
    if let Some(s) = service {
        c.o.note(format!(
            "NOTIFICATION_SERVICE={s:?} (and {}): dupr's notify.webhook POSTs its JSON run record, which {s} does not take as is: point notify.webhook at a relay, or use notify.email",
            service_settings.join(", ")
        ));
    }
    if c.discard(&["HOSTNAME"]).len() == 1 {
        c.o.note("HOSTNAME: only named the host in the wrapper's mail subject");
    }
    if c.discard(&["S3CMD_CONF_FILE"]).len() == 1 {
        c.o.note("S3CMD_CONF_FILE: only served the wrapper's size report");
    }
    if c.discard(&["ECHO"]).len() == 1 {
        c.o.note("ECHO: the wrapper's dry run; use `dupr -p NAME --preview backup` instead");
    }

    // Reuse the wrapper's duplicity cache, if there is one for DEST.
    if let (Some(d), Some(root)) = (&dest, duplicity_cache_root()) {
        let name = dupr_core::cache::name_for_url(d);
        let opts = &c.o.p.options;
        if root.join(&name).is_dir()
            && !opts.contains_key("name")
            && !opts.contains_key("archive-dir")
        {
            c.put("archive-dir", &root.display().to_string(), "cache");
            c.put("name", &name, "cache");
            c.o.note(format!(
                "archive-dir and name: set to the cache duplicity kept for DEST ({}), so no metadata has to be fetched again",
                root.join(&name).display()
            ));
        }
    }
    Ok(c.leftovers("duplicity-backup.sh"))
}

// ------------------------------------------------------------------ duply

/// A duply profile: `duplicity CMD --name duply_PROFILE KEYS VERBOSITY
/// GPG_OPTS DUPL_PARAMS --exclude-filelist DIR/exclude SOURCE TARGET`.
fn duply(dir: &Path, text: &str) -> Result<Out> {
    let profile = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "profile".into());
    let mut env = base_env();
    env.insert("CONFDIR".into(), dir.display().to_string());
    env.insert("PROFILE".into(), profile.clone());
    let mut c = Conv::new(Shell::parse(text, env));

    // Source and target.
    c.o.p.source = c.nonempty("SOURCE");
    if c.o.p.source.as_deref() == Some("/path/of/source") {
        c.o.note("SOURCE is still duply's template value");
    }
    let mut target = c.nonempty("TARGET");
    if target.as_deref() == Some("scheme://user[:password]@host[:port]/[/]path") {
        c.o.note("TARGET is still duply's template value");
    }
    if let (Some(user), Some(t)) = (c.nonempty("TARGET_USER"), target.clone()) {
        match t.split_once("://") {
            Some((scheme, rest)) if !scheme.eq_ignore_ascii_case("file") => {
                let host = rest.split('/').next().unwrap_or("");
                if host.contains('@') {
                    c.o.note("TARGET_USER: the TARGET URL names a user already");
                } else {
                    target = Some(format!("{scheme}://{}@{rest}", url_encode(&user)));
                    c.o.note("TARGET_USER: put into the target URL, as duply did");
                }
            }
            _ => c.o.note("TARGET_USER: not used with this target"),
        }
    }
    let pass = c.nonempty("TARGET_PASS").or(c.nonempty("TARGET_PW"));
    if pass.is_some() {
        let var = if target
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("imap"))
        {
            "IMAP_PASSWORD"
        } else {
            "FTP_PASSWORD"
        };
        c.o.note(format!(
            "TARGET_PASS: credentials are not profile fields; duply passed it as {var}: set {var} in the environment of the scheduled run"
        ));
    }
    if let Some(t) = &target {
        c.target_notes(t);
    }
    c.o.p.target = target;
    if c.o.p.source.is_none() || c.o.p.target.is_none() {
        c.o.note("SOURCE or TARGET is not set: give the profile a source and a target");
    }

    // The cache: --name duply_PROFILE, or --archive-dir ARCH_DIR --name PROFILE.
    match c.nonempty("ARCH_DIR") {
        Some(arch) => {
            let old = format!("duply_{profile}");
            let name = if Path::new(&arch).join(&old).is_dir() {
                old
            } else {
                profile.clone()
            };
            c.put("archive-dir", &arch, "ARCH_DIR");
            c.put("name", &name, "ARCH_DIR");
        }
        None => {
            let name = format!("duply_{profile}");
            c.put("name", &name, "PROFILE");
            if let Some(root) = duplicity_cache_root().filter(|r| r.join(&name).is_dir()) {
                c.put("archive-dir", &root.display().to_string(), "cache");
                c.o.note(format!(
                    "archive-dir: set to duplicity's cache root, where duply's cache {} is, so no metadata has to be fetched again",
                    root.join(&name).display()
                ));
            }
        }
    }

    // Encryption.
    let gpg_key = c.var("GPG_KEY").unwrap_or_default();
    let keys_enc = c.var("GPG_KEYS_ENC").unwrap_or_default();
    let key_sign = c.var("GPG_KEY_SIGN");
    let pw = c.var("GPG_PW");
    let pw_sign = c.var("GPG_PW_SIGN");
    let disabled = gpg_key.eq_ignore_ascii_case("disabled")
        || (gpg_key.is_empty()
            && keys_enc.is_empty()
            && key_sign.as_deref().unwrap_or("").is_empty()
            && pw.is_none());
    if disabled {
        if !gpg_key.eq_ignore_ascii_case("disabled") {
            c.o.note("GPG_KEY, GPG_KEYS_ENC, GPG_KEY_SIGN and GPG_PW are all empty: duply then disabled encryption, and so does the profile (no-encryption)");
        }
        c.flag("no-encryption", "GPG_KEY");
    } else {
        let mut keys = Vec::new();
        for k in split_keyset(&format!("{gpg_key},{keys_enc}")) {
            if k == "_KEY_ID_" {
                c.o.note("GPG_KEY is still duply's template value");
            } else {
                keys.push(k);
            }
        }
        for k in &keys {
            c.put("encrypt-key", k, "GPG_KEY");
        }
        match key_sign.as_deref().map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("disabled") => {}
            Some(s) if !s.is_empty() => c.put("sign-key", s, "GPG_KEY_SIGN"),
            _ => {
                if let Some(first) = keys.first().cloned() {
                    c.put("sign-key", &first, "GPG_KEY");
                    c.o.note(format!(
                        "sign-key: duply signed with the first GPG_KEY ({first}) only when its secret key was in the keyring; remove sign-key if it is not"
                    ));
                }
            }
        }
        match pw {
            Some(p) if p == "_GPG_PASSWORD_" => {
                c.o.note("GPG_PW is still duply's template value; not copied");
            }
            Some(p) => {
                let clear = !p.is_empty();
                c.o.p.passphrase = Some(p);
                if clear {
                    c.o.note("GPG_PW: copied into the profile as passphrase, in clear (the profile is private, mode 600, as dupr requires then); better put it in a private file and replace `passphrase` with `passphrase-file = \"/path/to/file\"` (or `passphrase-command`)");
                }
            }
            None => {}
        }
        if let Some(p) = pw_sign {
            let clear = !p.is_empty();
            c.o.p.sign_passphrase = Some(p);
            if clear {
                c.o.note("GPG_PW_SIGN: copied into the profile as sign-passphrase, in clear; better use sign-passphrase-file or sign-passphrase-command");
            }
        }
    }
    if let Some(o) = c.nonempty("GPG_OPTS") {
        c.put("gpg-options", &o, "GPG_OPTS");
    }
    if let Some(g) = c.nonempty("GPG").filter(|g| g != "gpg") {
        c.put("gpg-binary", &g, "GPG");
    }
    let tests = c.discard(&["GPG_TEST", "GPG_IMPORT", "GPG_EXPORT"]);
    if !tests.is_empty() {
        c.o.note(format!(
            "{}: dupr neither tests, imports nor exports keys before a run",
            tests.join(", ")
        ));
    }
    let mut keyfiles: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("gpgkey"))
                .collect()
        })
        .unwrap_or_default();
    keyfiles.sort();
    if !keyfiles.is_empty() {
        c.o.note(format!(
            "{}: duply's exported keys; import them with `gpg --import FILE` as the user that runs dupr first (dupr reads keys from that GnuPG home)",
            keyfiles.join(", ")
        ));
    }

    // Options, then DUPL_PARAMS, which override them (duply passed only
    // DUPL_PARAMS; its template puts MAX_FULLBKP_AGE and VOLSIZE there).
    if let Some(v) = c.nonempty("VERBOSITY") {
        c.put("verbosity", &v, "VERBOSITY");
    }
    if let Some(t) = c.nonempty("TEMP_DIR") {
        c.put("tempdir", &t, "TEMP_DIR");
    }
    let params = c.var("DUPL_PARAMS").unwrap_or_default();
    let params_words = c.sh.split(&params);
    let in_params = |opt: &str| {
        params_words
            .iter()
            .any(|w| w == opt || w.starts_with(&format!("{opt}=")))
    };
    for (var, opt) in [
        ("MAX_FULLBKP_AGE", "full-if-older-than"),
        ("VOLSIZE", "volsize"),
    ] {
        if let Some(v) = c.nonempty(var) {
            c.put(opt, &v, var);
            if !in_params(&format!("--{opt}")) {
                c.o.note(format!(
                    "{var}: duply applied it only through DUPL_PARAMS (--{opt} ${var}), which this conf does not do; the profile applies it"
                ));
            }
        }
    }
    c.o.words(&params_words, "DUPL_PARAMS");

    // Retention.
    let mut retention = Vec::new();
    if let Some(a) = c.nonempty("MAX_AGE") {
        c.o.p.retention.remove_older_than = Some(a);
        retention.push("MAX_AGE (purge)");
    }
    for (var, cmd) in [
        ("MAX_FULL_BACKUPS", "purgeFull"),
        ("MAX_FULLS_WITH_INCRS", "purgeIncr"),
    ] {
        if let Some(v) = c.nonempty(var) {
            match v.trim().parse::<u32>() {
                Ok(n) if var == "MAX_FULL_BACKUPS" => c.o.p.retention.keep_full = Some(n),
                Ok(n) => c.o.p.retention.keep_incrementals_of = Some(n),
                Err(_) => {
                    c.o.note(format!("{var}={v:?} is not a count"));
                    continue;
                }
            }
            retention.push(if cmd == "purgeFull" {
                "MAX_FULL_BACKUPS (purgeFull)"
            } else {
                "MAX_FULLS_WITH_INCRS (purgeIncr)"
            });
        }
    }
    if !retention.is_empty() {
        c.o.note(format!(
            "{}: duply applied them only when its purge commands ran; `dupr -p NAME backup` applies the retention after every backup (`dupr -p NAME purge` alone)",
            retention.join(", ")
        ));
    }
    if c.discard(&["DUPL_PRECMD"]).len() == 1 {
        c.o.note("DUPL_PRECMD: dupr runs itself, with no command in front");
    }
    if c.discard(&["PYTHON"]).len() == 1 {
        c.o.note("PYTHON: dupr needs no interpreter");
    }

    // The exclude file: duply passes it as --exclude-filelist, after
    // DUPL_PARAMS; its rules go into select in that place.
    let exclude = dir.join("exclude");
    if exclude.is_file() {
        let t = std::fs::read_to_string(&exclude)
            .with_context(|| format!("reading {}", exclude.display()))?;
        for l in filelist_lines(&t, false) {
            c.o.sel.push(Sel::Line(l));
        }
    }

    // pre and post scripts.
    for which in ["pre", "post"] {
        let script = dir.join(which);
        let Ok(meta) = std::fs::metadata(&script) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let body = std::fs::read_to_string(&script).unwrap_or_default();
        let mut cmd = shell_quote(&script.display().to_string());
        if meta.permissions().mode() & 0o111 == 0 {
            cmd = format!("bash {cmd}");
            c.o.note(format!(
                "{which}: not executable, so duply sourced it into its own shell; the hook runs it with bash, where only exported variables are set"
            ));
        }
        if body.contains("CONFDIR") {
            cmd = format!("CONFDIR={} {cmd}", shell_quote(&dir.display().to_string()));
        }
        let missing: Vec<&str> = [
            "TARGET_URL_USER",
            "TARGET_URL_PASS",
            "GPG_KEYS_ENC",
            "GPG_KEY_SIGN",
            "GPG_PW",
            "CND_PREV",
            "CND_NEXT",
        ]
        .into_iter()
        .filter(|v| body.contains(v))
        .collect();
        if !missing.is_empty() {
            c.o.note(format!(
                "{which} reads {}, which dupr's hooks do not set",
                missing.join(", ")
            ));
        }
        if which == "pre" {
            c.o.p.hooks.pre = Some(cmd);
            c.o.note("pre: duply's backup ran even when pre failed; dupr stops the run");
        } else {
            c.o.p.hooks.post = Some(cmd);
        }
    }
    Ok(c.leftovers("duply"))
}

/// duply's key list: comma-separated, `\,` for a comma inside a key.
fn split_keyset(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("HOME".to_string(), "/home/u".to_string())].into()
    }

    fn str_of(sh: &Shell, n: &str) -> String {
        sh.vars[n].text()
    }

    #[test]
    fn import_shell_quoting_arrays_and_expansion() {
        let sh = Shell::parse(
            r#"
# comment
ROOT="/"   # trailing comment
A='single $HOME "x"'
B="double $HOME ${HOME}/x \"q\" \$lit"
C=plain\ word#nocomment
INCLIST=( "/home/u/docs" \
          '/etc'   # inside the array
          "${HOME}/My Files"
        )
EMPTY=()
D=~/tilde
E="${UNSET:-fallback} ${A:+set}"
F="$B-suffix"
G=$(hostname -f)
export H=exported
I=1; J=2
P="$P one"
P="$P two"
K+=x
K+=y
"#,
            env(),
        );
        assert_eq!(str_of(&sh, "ROOT"), "/");
        assert_eq!(str_of(&sh, "A"), "single $HOME \"x\"");
        assert_eq!(str_of(&sh, "B"), "double /home/u /home/u/x \"q\" $lit");
        assert_eq!(str_of(&sh, "C"), "plain word#nocomment");
        assert_eq!(
            sh.vars["INCLIST"].val,
            Val::Arr(vec![
                "/home/u/docs".into(),
                "/etc".into(),
                "/home/u/My Files".into()
            ])
        );
        assert_eq!(sh.vars["EMPTY"].val, Val::Arr(vec![]));
        assert_eq!(str_of(&sh, "D"), "/home/u/tilde");
        assert_eq!(str_of(&sh, "E"), "fallback set");
        assert!(sh.used.contains("A") && sh.used.contains("B"));
        assert_eq!(
            str_of(&sh, "F"),
            "double /home/u /home/u/x \"q\" $lit-suffix"
        );
        assert!(sh.vars["G"].dynamic);
        assert_eq!(str_of(&sh, "G"), "");
        assert!(sh.vars["H"].exported && !sh.vars["I"].exported);
        assert_eq!(
            (str_of(&sh, "I"), str_of(&sh, "J")),
            ("1".into(), "2".into())
        );
        assert_eq!(str_of(&sh, "P"), " one two");
        assert_eq!(str_of(&sh, "K"), "xy");
        // Self-references and ${X:-...} of unset names are not "unset".
        assert!(sh.unset.is_empty(), "{:?}", sh.unset);
        assert!(sh.notes.is_empty(), "{:?}", sh.notes);
    }

    /// A value dupr's parser would refuse is dropped with a note, so the
    /// imported profile's runs do not all fail on it (found by fuzzing).
    #[test]
    fn import_drops_option_values_dupr_refuses() {
        let conf = Path::new("/nonexistent/conf");
        let text = "SOURCE=/srv\nTARGET=file:///b\nGPG_KEY=disabled\nVOLSIZE=1x\nDUPL_PARAMS=\"$DUPL_PARAMS --volsize $VOLSIZE --num-retries 3\"\n";
        let (toml, notes) = convert(text, conf, Some(Path::new("/nonexistent")), conf).unwrap();
        assert!(!toml.lines().any(|l| l.starts_with("volsize")), "{toml}");
        assert!(toml.contains("num-retries = 3"), "{toml}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("--volsize \"1x\" is not a value dupr takes")),
            "{notes:?}"
        );
    }

    /// `A=$A$A` doubles a value per line: 64 lines would be 2^64 bytes.
    /// Expansion stops at a budget, with a note, in bounded time.
    #[test]
    fn import_shell_expansion_is_bounded() {
        let mut text = String::from("A=xxxxxxxxxxxxxxxx\n");
        for _ in 0..64 {
            text.push_str("A=\"$A$A\"\nB=(\"$A\" \"$A\" $A)\n");
        }
        let t = std::time::Instant::now();
        let sh = Shell::parse(&text, env());
        assert!(t.elapsed().as_secs() < 10, "took {:?}", t.elapsed());
        assert!(str_of(&sh, "A").len() <= EXPANSION_BUDGET);
        assert!(
            sh.vars["A"].dynamic,
            "a cut value is marked as not evaluated"
        );
        assert!(
            sh.notes
                .iter()
                .any(|n| n.contains("expand to more than 16 MiB")),
            "{:?}",
            sh.notes
        );
    }

    #[test]
    fn import_shell_blocks_and_commands_are_not_taken() {
        let sh = Shell::parse(
            "X=1\nif [ -n \"$X\" ]; then\n  Y=2\nfi\nZ=$MISSING\nsource /etc/other\nf() {\n  W=3\n}\nV=4\n[ -z \"$X\" ] && U=5\nexport X\n",
            env(),
        );
        assert!(sh.vars.contains_key("X") && sh.vars.contains_key("V"));
        for n in ["Y", "W", "U"] {
            assert!(!sh.vars.contains_key(n), "{n} taken");
        }
        assert!(sh.vars["X"].exported);
        assert_eq!(sh.unset.get("MISSING"), Some(&5));
        let notes = sh.notes.join("\n");
        assert!(notes.contains("line 2: a `if` block"), "{notes}");
        assert!(notes.contains("Y (line 3)"), "{notes}");
        assert!(notes.contains("the command `source`"), "{notes}");
        assert!(notes.contains("W (line 8)"), "{notes}");
        assert!(notes.contains("line 11: the command `[`"), "{notes}");
    }

    #[test]
    fn import_options_are_typed_and_canonical() {
        let mut o = Out::new();
        let words: Vec<String> = [
            "--full-if-older-than",
            "14D",
            "--volsize=50",
            "-v4",
            "--s3-use-new-style",
            "--exclude-globbing-filelist",
            "/etc/x",
            "--asynchronous-up",
            "--no-such-option",
            "value",
            "--progress-rate",
            "2.5",
            "--encrypt-key",
            "A",
            "--encrypt-key=B",
            "--preview",
            "stray",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        o.words(&words, "STATIC_OPTIONS");
        let g = |k: &str| o.p.options.get(k).cloned();
        assert_eq!(
            g("full-if-older-than"),
            Some(toml::Value::String("14D".into()))
        );
        assert_eq!(g("volsize"), Some(toml::Value::Integer(50)));
        assert_eq!(g("verbosity"), Some(toml::Value::String("4".into())));
        assert_eq!(g("s3-use-new-style"), Some(toml::Value::Boolean(true)));
        assert_eq!(g("asynchronous-upload"), Some(toml::Value::Boolean(true)));
        assert_eq!(g("progress-rate"), Some(toml::Value::Float(2.5)));
        assert_eq!(
            g("encrypt-key"),
            Some(toml::Value::Array(vec![
                toml::Value::String("A".into()),
                toml::Value::String("B".into())
            ]))
        );
        assert!(
            matches!(&o.sel[..], [Sel::List { key, path }] if key == "exclude-filelist" && path == "/etc/x")
        );
        let notes = o.notes.join("\n");
        assert!(
            notes.contains("--no-such-option value: not an option"),
            "{notes}"
        );
        assert!(
            notes.contains("--preview belongs on the command line"),
            "{notes}"
        );
        assert!(notes.contains("\"stray\" is not an option"), "{notes}");
    }

    #[test]
    fn import_select_lines_survive_the_filelist_reader() {
        assert_eq!(select_line(true, "/a b").unwrap(), "+ /a b");
        assert_eq!(select_line(false, " lead").unwrap(), "- ' lead'");
        assert_eq!(select_line(false, "'q'").unwrap(), "- ''q''");
        assert_eq!(select_line(false, ""), None);
        assert_eq!(
            filelist_lines("# c\n\n  + /a  \n/b\n- /c\r\n'/d'\n", false),
            vec!["+ /a", "- /b", "- /c", "- '/d'"]
        );
        assert_eq!(filelist_lines("/x\n", true), vec!["+ /x"]);
        assert_eq!(
            split_keyset("A, B\\, C ,,D"),
            vec!["A".to_string(), "B, C".into(), "D".into()]
        );
    }

    #[test]
    fn import_zertrin_selection_order() {
        // No INCLIST/EXCLIST: the filelist stays a file, order unchanged.
        let out =
            zertrin("ROOT=/\nDEST=file:///b\nINCEXCFILE=/nonexistent/list\nEXDEVICEFILES=1\n")
                .unwrap();
        let (text, _) = out.finish(Path::new("x.conf"), "t").unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(p.select, vec!["- **"]);
        assert_eq!(
            p.options["include-filelist"],
            toml::Value::Array(vec![toml::Value::String("/nonexistent/list".into())])
        );
        assert_eq!(
            p.options["exclude-device-files"],
            toml::Value::Boolean(true)
        );

        // With patterns before it, a readable filelist is copied in place.
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "- /a/tmp\n/a/keep\n").unwrap();
        let conf = format!(
            "ROOT=/\nDEST=file:///b\nEXCLIST=( '/**.DS_Store' )\nINCLIST=( /a )\nINCEXCFILE={}\nSTATIC_OPTIONS=\"--exclude-other-filesystems\"\n",
            list.display()
        );
        let (text, notes) = zertrin(&conf)
            .unwrap()
            .finish(Path::new("x.conf"), "t")
            .unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(
            p.select,
            vec!["- /**.DS_Store", "+ /a", "- /a/tmp", "+ /a/keep", "- **"]
        );
        assert!(!p.options.contains_key("include-filelist"));
        assert_eq!(
            p.options["exclude-other-filesystems"],
            toml::Value::Boolean(true)
        );
        assert!(
            notes.iter().any(|n| n.contains("copied into select")),
            "{notes:?}"
        );
        assert!(
            !notes.iter().any(|n| n.contains("selection order")),
            "{notes:?}"
        );

        // A selection option after a pattern cannot keep its place.
        let (_, notes) = zertrin("ROOT=/\nDEST=file:///b\nSTATIC_OPTIONS=\"--include /x --exclude-if-present .nobackup\"\n")
            .unwrap()
            .finish(Path::new("x.conf"), "t")
            .unwrap();
        assert!(
            notes.iter().any(|n| n.contains("selection order")),
            "{notes:?}"
        );
    }

    #[test]
    fn import_zertrin_keys_and_passphrases() {
        let conf = "ROOT=/\nDEST=file:///b\nENCRYPTION=yes\nPASSPHRASE='s3cret'\nGPG_ENC_KEY=AAAA\nGPG_SIGN_KEY=BBBB\nHIDE_KEY_ID=yes\nGPG_OPTIONS=''\nCLEAN_UP_TYPE=remove-all-inc-of-but-n-full\nCLEAN_UP_VARIABLE=3\nREMOVE_INCREMENTALS_OLDER_THAN=2\n";
        let (text, notes) = zertrin(conf).unwrap().finish(Path::new("x"), "t").unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(
            p.options["hidden-encrypt-key"],
            toml::Value::Array(vec![toml::Value::String("AAAA".into())])
        );
        assert_eq!(p.options["sign-key"], toml::Value::String("BBBB".into()));
        assert!(!p.options.contains_key("gpg-options"));
        assert_eq!(p.passphrase.as_deref(), Some("s3cret"));
        assert_eq!(p.sign_passphrase.as_deref(), Some("s3cret"));
        assert_eq!(p.retention.keep_incrementals_of, Some(2));
        assert!(notes.iter().all(|n| !n.contains("s3cret")));
        assert!(notes.iter().any(|n| n.contains("passphrase-file")));

        let (text, notes) =
            zertrin("ROOT=/\nDEST=file:///b\nENCRYPTION=no\nPASSPHRASE=x\nGPG_ENC_KEY=AAAA\n")
                .unwrap()
                .finish(Path::new("x"), "t")
                .unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(p.options["no-encryption"], toml::Value::Boolean(true));
        assert!(p.passphrase.is_none() && !p.options.contains_key("encrypt-key"));
        assert!(notes
            .iter()
            .any(|n| n.contains("not needed with ENCRYPTION=no")));
    }

    #[test]
    fn import_duply_conf() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("web");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            d.join("exclude"),
            "- /srv/www/cache\n/srv/www/tmp\n+ /srv/www\n- **\n",
        )
        .unwrap();
        std::fs::write(d.join("gpgkey.AAAA.pub.asc"), "").unwrap();
        let conf = "GPG_KEY='AAAA,BBBB'\nGPG_KEYS_ENC='CCCC'\nGPG_PW='pw'\nGPG_OPTS='--compress-algo=bzip2'\nTARGET='sftp://host//srv/b'\nTARGET_USER='bob smith'\nTARGET_PASS='x'\nSOURCE='/srv/www'\nMAX_AGE=2M\nMAX_FULL_BACKUPS=3\nMAX_FULLS_WITH_INCRS=1\nMAX_FULLBKP_AGE=1M\nDUPL_PARAMS=\"$DUPL_PARAMS --full-if-older-than $MAX_FULLBKP_AGE \"\nVOLSIZE=50\nDUPL_PARAMS=\"$DUPL_PARAMS --volsize $VOLSIZE --exclude-if-present '.nobackup'\"\nVERBOSITY=5\nTEMP_DIR=/var/tmp\nexport AWS_ACCESS_KEY_ID=k\n";
        std::fs::write(d.join("conf"), conf).unwrap();
        let (text, notes) = import(&d).unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        let s = |v: &str| toml::Value::String(v.into());
        assert_eq!(p.source.as_deref(), Some("/srv/www"));
        assert_eq!(p.target.as_deref(), Some("sftp://bob%20smith@host//srv/b"));
        assert_eq!(p.options["name"], s("duply_web"));
        assert_eq!(
            p.options["encrypt-key"],
            toml::Value::Array(vec![s("AAAA"), s("BBBB"), s("CCCC")])
        );
        assert_eq!(p.options["sign-key"], s("AAAA"));
        assert_eq!(
            p.options["gpg-options"],
            toml::Value::Array(vec![s("--compress-algo=bzip2")])
        );
        assert_eq!(p.options["full-if-older-than"], s("1M"));
        assert_eq!(p.options["volsize"], toml::Value::Integer(50));
        assert_eq!(p.options["verbosity"], s("5"));
        assert_eq!(p.options["tempdir"], s("/var/tmp"));
        assert_eq!(
            p.options["exclude-if-present"],
            toml::Value::Array(vec![s(".nobackup")])
        );
        assert_eq!(p.passphrase.as_deref(), Some("pw"));
        assert_eq!(p.retention.remove_older_than.as_deref(), Some("2M"));
        assert_eq!(p.retention.keep_full, Some(3));
        assert_eq!(p.retention.keep_incrementals_of, Some(1));
        assert_eq!(
            p.select,
            vec!["- /srv/www/cache", "- /srv/www/tmp", "+ /srv/www", "- **"]
        );
        let all = notes.join("\n");
        for want in [
            "gpgkey.AAAA.pub.asc",
            "FTP_PASSWORD",
            "AWS_ACCESS_KEY_ID",
            "purge commands",
            "first GPG_KEY",
        ] {
            assert!(all.contains(want), "no note about {want}: {all}");
        }
        assert!(!all.contains("only through DUPL_PARAMS"), "{all}");

        std::fs::write(
            d.join("conf"),
            "GPG_KEY='disabled'\nTARGET='file:///b'\nSOURCE='/s'\n",
        )
        .unwrap();
        let (text, _) = import(&d).unwrap();
        let p: Profile = toml::from_str(&text).unwrap();
        assert_eq!(p.options["no-encryption"], toml::Value::Boolean(true));
        assert!(!p.options.contains_key("encrypt-key") && p.passphrase.is_none());
    }
}
