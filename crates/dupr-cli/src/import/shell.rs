//! The subset of bash that wrapper configuration files use, evaluated
//! without running anything: assignments, quoting, arrays, comments, and
//! `$VAR`/`${VAR}` expansion within a budget.

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Val {
    Str(String),
    Arr(Vec<String>),
}

#[derive(Clone, Debug)]
pub(super) struct Var {
    pub(super) val: Val,
    pub(super) line: usize,
    pub(super) exported: bool,
    /// The value ran a command (`$(...)`, backticks) or used an expansion
    /// the evaluator does not do; that part was left out.
    pub(super) dynamic: bool,
}

impl Var {
    /// `$NAME`: a string, or an array's first element.
    pub(super) fn text(&self) -> String {
        match &self.val {
            Val::Str(s) => s.clone(),
            Val::Arr(a) => a.first().cloned().unwrap_or_default(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match &self.val {
            Val::Str(s) => s.is_empty(),
            Val::Arr(a) => a.iter().all(String::is_empty),
        }
    }
}

/// The variables a sourced bash file sets, evaluated without running it.
pub(super) struct Shell {
    pub(super) vars: BTreeMap<String, Var>,
    pub(super) env: BTreeMap<String, String>,
    /// Variables other assignments read (helpers rather than settings).
    pub(super) used: BTreeSet<String>,
    /// Variables read but set neither in the file nor in `env`, with the
    /// line of the first reference.
    pub(super) unset: BTreeMap<String, usize>,
    pub(super) exported: BTreeSet<String>,
    pub(super) notes: Vec<String>,
    pub(super) s: Vec<char>,
    pub(super) i: usize,
    pub(super) line: usize,
    /// Nesting of if/case/loops/functions/braces: assignments inside are
    /// conditional and not taken.
    pub(super) depth: usize,
    pub(super) dynamic: bool,
    pub(super) glob: bool,
    /// Reading a command we ignore: its references count for nothing.
    pub(super) quiet: bool,
    pub(super) assigning: Option<String>,
    /// Bytes produced by variable expansions so far, and whether that
    /// passed [`EXPANSION_BUDGET`].
    pub(super) expanded: usize,
    pub(super) overflow: bool,
}

/// Most bytes all expansions of one file may produce: real configs expand
/// a few KiB; this bounds memory and time on a hostile one.
pub(super) const EXPANSION_BUDGET: usize = 16 << 20;

pub(super) fn is_name(w: &str) -> bool {
    let mut c = w.chars();
    c.next()
        .is_some_and(|f| f == '_' || f.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric())
}

impl Shell {
    pub(super) fn parse(text: &str, env: BTreeMap<String, String>) -> Shell {
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

    pub(super) fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    pub(super) fn peek2(&self) -> Option<char> {
        self.s.get(self.i + 1).copied()
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Spaces, tabs and line continuations.
    pub(super) fn blanks(&mut self) {
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

    pub(super) fn comment(&mut self) {
        while self.peek().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    pub(super) fn statement(&mut self) {
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
    pub(super) fn assignment_head(&mut self) -> Option<(String, bool)> {
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

    pub(super) fn assign(&mut self, name: String, append: bool, export: bool, line: usize) {
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
    pub(super) fn array(&mut self, name: &str) -> Vec<String> {
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
    pub(super) fn other(&mut self, line: usize, first: Option<String>) {
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
    pub(super) fn word(&mut self) -> Option<String> {
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
    pub(super) fn dquoted(&mut self, out: &mut String, closing: bool) {
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

    pub(super) fn backtick(&mut self) {
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
    pub(super) fn dollar(&mut self, out: &mut String) {
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
    pub(super) fn braced(&mut self, body: &str, out: &mut String) {
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

    pub(super) fn lookup(&mut self, name: &str) -> String {
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
    pub(super) fn charge(&mut self, text: String) -> String {
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
    pub(super) fn on_text<T>(&mut self, text: &str, f: impl FnOnce(&mut Shell) -> T) -> T {
        let s = std::mem::replace(&mut self.s, text.chars().collect());
        let (i, line) = (self.i, self.line);
        self.i = 0;
        let r = f(self);
        (self.s, self.i, self.line) = (s, i, line);
        r
    }

    /// `text` expanded as between double quotes.
    pub(super) fn expand(&mut self, text: &str) -> String {
        self.on_text(text, |sh| {
            let mut out = String::new();
            sh.dquoted(&mut out, false);
            out
        })
    }

    /// `text` split into words as `eval` does (quotes, expansions).
    pub(super) fn split(&mut self, text: &str) -> Vec<String> {
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
