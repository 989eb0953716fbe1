//! The commands that report on the archive from names and the cache:
//! `list-current-files` and `collection-status`.

use std::ffi::OsString;
use std::io::Write;

use anyhow::Context;
use dupr_core::entry::Meta;
use dupr_core::index::Index;
use dupr_core::ops;
use dupr_core::status::ListSink;
use dupr_core::time;
use serde_json::json;

use super::{archive_path, json, open, parse_time, want_args, Access};
use crate::cli::Cli;

/// duplicity's text: `<asctime of mtime> <path>` per path.
struct TextList<W: Write> {
    out: W,
    last_mtime: i64,
    last_str: String,
    line: Vec<u8>,
}

impl<W: Write> ListSink for TextList<W> {
    fn last_full(&mut self, t: Option<time::Timestamp>) -> std::io::Result<()> {
        let when = t.map(time::pretty_local);
        writeln!(
            self.out,
            "Last full backup date: {}",
            when.as_deref().unwrap_or("none")
        )
    }

    fn file(&mut self, index: &Index, meta: &Meta) -> std::io::Result<()> {
        // Formatting a time is the costly part; runs of equal mtimes are common.
        if meta.mtime != self.last_mtime {
            self.last_mtime = meta.mtime;
            self.last_str = time::pretty_local(meta.mtime);
        }
        self.line.clear();
        self.line.extend_from_slice(self.last_str.as_bytes());
        self.line.push(b' ');
        self.line.extend_from_slice(index.display_bytes());
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

/// One JSON document, streamed (a million paths need no memory):
/// `{"last_full": T, "time": T, "files": [{"path", "type", "mtime"}, ...]}`.
/// The head is written with the first path, or at the end, so a run that
/// fails before any path leaves stdout empty.
struct JsonList<W: Write> {
    out: W,
    time: time::Timestamp,
    last_full: Option<time::Timestamp>,
    head_written: bool,
    files: u64,
}

impl<W: Write> JsonList<W> {
    fn write_head(&mut self) -> std::io::Result<()> {
        if !self.head_written {
            self.head_written = true;
            let last_full = json!(self.last_full);
            write!(
                self.out,
                "{{\"time\": {}, \"last_full\": {last_full}, \"files\": [",
                self.time
            )?;
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.write_head()?;
        writeln!(self.out, "]}}")?;
        self.out.flush()
    }
}

impl<W: Write> ListSink for JsonList<W> {
    fn last_full(&mut self, t: Option<time::Timestamp>) -> std::io::Result<()> {
        self.last_full = t;
        Ok(())
    }

    fn file(&mut self, index: &Index, meta: &Meta) -> std::io::Result<()> {
        self.write_head()?;
        let sep = if self.files == 0 { "" } else { "," };
        self.files += 1;
        let item = json!({"path": index, "type": meta.kind.word(), "mtime": meta.mtime});
        write!(self.out, "{sep}\n{item}")
    }
}

/// `dupr list-current-files URL`.
pub fn list(cli: &Cli, args: &[OsString]) -> anyhow::Result<i32> {
    want_args(args, 1, "URL")?;
    let t = parse_time(cli)?;
    let (target, _lock) = open(cli, &args[0], Access::Read)?;
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    if cli.general.json {
        let mut sink = JsonList {
            out,
            time: t,
            last_full: None,
            head_written: false,
            files: 0,
        };
        ops::list_current_files(&target, t, &mut sink)?;
        sink.finish().context("writing to stdout")?;
    } else {
        let mut sink = TextList {
            out,
            last_mtime: i64::MIN,
            last_str: String::new(),
            line: Vec::with_capacity(256),
        };
        ops::list_current_files(&target, t, &mut sink)?;
        sink.out.flush().context("writing to stdout")?;
    }
    Ok(0)
}

/// `dupr collection-status URL`, with `--show-changes-in-set` or
/// `--file-changed`.
pub fn collection(cli: &Cli, args: &[OsString]) -> anyhow::Result<i32> {
    want_args(args, 1, "URL")?;
    let (target, _lock) = open(cli, &args[0], Access::Read)?;
    if let Some(n) = cli.restore.show_changes_in_set {
        // --json asks for the same document as --jsonstat.
        let as_json = cli.general.jsonstat || cli.general.json;
        let sets = ops::changes_in_set(&target, n, as_json)?;
        if as_json {
            print!("{}", changes_json(&sets));
        } else if let Some(set) = sets.first() {
            print!("{}", changes_text(set));
        }
    } else if let Some(p) = &cli.restore.file_changed {
        let ix = archive_path("--file-changed", p)?;
        let rows = ops::file_changed(&target, &ix)?;
        if cli.general.json {
            json::line(&json!({"path": ix, "changes": rows.unwrap_or_default()}));
        } else if let Some(rows) = rows {
            print!("{}", file_changed_text(&ix, &rows));
        }
    } else if cli.general.json {
        json::line(&serde_json::to_value(ops::collection_report(&target)?)?);
    } else {
        let (c, problems) = ops::collection_status(&target)?;
        let archive_dir = target.cache.dir().display().to_string();
        print!(
            "{}",
            crate::render::collection_status(&c, "BackendWrapper", &archive_dir, &problems)
        );
    }
    Ok(0)
}

/// `--file-changed` as duplicity prints it.
/// duplicity's table of one set's changes.
fn changes_text(set: &ops::SetChanges) -> String {
    let width = set
        .files
        .iter()
        .map(|(_, ix)| ix.display_bytes().len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = String::from("-------------------------\n");
    out.push_str(&format!(
        " Backup set time: {}\n",
        time::pretty_local(set.end)
    ));
    out.push_str(&format!("Total number of changes: {}\n", set.files.len()));
    out.push_str(&format!(
        "{:<width$}  {:>20}\n",
        "File:", "Type of file change:"
    ));
    for (change, ix) in &set.files {
        out.push_str(&format!(
            "{:<width$}  {:>20}\n",
            String::from_utf8_lossy(ix.display_bytes()),
            change.word()
        ));
    }
    out.push_str("-------------------------\n");
    out
}

/// duplicity 3's JSON form (`--jsonstat`): each set's statistics and its
/// changes, sets newest first and paths in the manifest's order (which a
/// JSON object built with serde_json's sorted map would not keep).
fn changes_json(sets: &[ops::SetChanges]) -> String {
    let lit = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut out = String::from("{");
    for (k, set) in sets.iter().enumerate() {
        let kind = if set.full { "full" } else { "inc" };
        out.push_str(if k == 0 { "\n" } else { ",\n" });
        out.push_str(&format!(
            "    \"{kind}-{}\": {{\n        \"json_stat\": {},\n        \"files_changed\": {{",
            time::to_filename(set.end),
            set.jsonstat.as_deref().unwrap_or("{}")
        ));
        for (i, (change, ix)) in set.files.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            out.push_str(&format!(
                "{sep}\n            {}: {}",
                lit(&String::from_utf8_lossy(ix.display_bytes())),
                lit(change.word())
            ));
        }
        out.push_str("\n        }\n    }");
    }
    out.push_str("\n}\n");
    out
}

fn file_changed_text(path: &Index, rows: &[ops::FileChange]) -> String {
    let mut out = String::from("-------------------------\n");
    out.push_str(&format!(
        "File: {}\n",
        String::from_utf8_lossy(path.display_bytes())
    ));
    out.push_str(&format!("Total number of backup: {}\n", rows.len()));
    out.push_str(&format!(
        "{:>20}   {:>30}  {:>20}\n",
        "Type of backup set:", "Time:", "Type of file change:"
    ));
    let title = |w: &str| format!("{}{}", w[..1].to_uppercase(), &w[1..]);
    for r in rows {
        out.push_str(&format!(
            "{:>20}   {:>30}  {:>20}\n",
            title(r.kind),
            time::pretty_local(r.time),
            title(r.change)
        ));
    }
    out.push_str("-------------------------\n");
    out
}
