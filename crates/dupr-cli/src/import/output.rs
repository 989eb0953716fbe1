//! The converted profile being built: fields, options and selection
//! lines in order, and the notes on what was not converted.

use super::*;

/// One selection rule, in the wrapper's order.
pub(super) enum Sel {
    /// A select line, "+ PATTERN" or "- PATTERN".
    Line(String),
    /// A selection option other than a pattern or a filelist.
    Opt(String, toml::Value),
    /// `include-filelist` / `exclude-filelist` FILE.
    List { key: String, path: String },
}

/// A select line for an --include/--exclude pattern, quoted where the
/// filelist reader would otherwise trim or unquote it.
pub(super) fn select_line(include: bool, pat: &str) -> Option<String> {
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
pub(super) fn filelist_lines(text: &str, include: bool) -> Vec<String> {
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

pub(super) struct Out {
    pub(super) p: Profile,
    pub(super) sel: Vec<Sel>,
    pub(super) notes: Vec<String>,
    pub(super) opts: Options,
}

impl Out {
    pub(super) fn new() -> Out {
        Out {
            p: Profile::default(),
            sel: Vec::new(),
            notes: Vec::new(),
            opts: Options::new(),
        }
    }

    pub(super) fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Command-line words of the wrapper (STATIC_OPTIONS, DUPL_PARAMS, ...).
    pub(super) fn words(&mut self, words: &[String], origin: &str) {
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
    pub(super) fn put(&mut self, long: &str, raw: Option<&str>, origin: &str) {
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

    pub(super) fn set(&mut self, ix: usize, v: toml::Value, origin: &str) {
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
    pub(super) fn place_selection(&mut self) {
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

    pub(super) fn finish(mut self, from: &Path, what: &str) -> Result<(String, Vec<String>)> {
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
