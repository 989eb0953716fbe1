//! Text as duplicity prints it, from what the engine returns.

use std::fmt::Write as _;

use dupr_core::backup::Stats;
use dupr_core::chain::{Chain, Collection};
use dupr_core::status::StatusProblem;
use dupr_core::time;

/// duplicity's statistics block, printed after a backup.
pub fn backup_statistics(stats: &Stats, elapsed_secs: f64) -> String {
    let sz = |b: u64| human(b);
    let mut s = String::new();
    s.push_str("--------------[ Backup Statistics ]--------------\n");
    s.push_str(&format!(
        "StartTime {}.00 ({})\n",
        stats.start_time,
        time::pretty_local(stats.start_time)
    ));
    s.push_str(&format!(
        "EndTime {}.00 ({})\n",
        stats.end_time,
        time::pretty_local(stats.end_time)
    ));
    s.push_str(&format!(
        "ElapsedTime {:.2} ({})\n",
        elapsed_secs,
        secs_pretty(elapsed_secs)
    ));
    s.push_str(&format!("SourceFiles {}\n", stats.source_files));
    s.push_str(&format!(
        "SourceFileSize {} ({})\n",
        stats.source_file_size,
        sz(stats.source_file_size)
    ));
    s.push_str(&format!("NewFiles {}\n", stats.new_files));
    s.push_str(&format!(
        "NewFileSize {} ({})\n",
        stats.new_file_size,
        sz(stats.new_file_size)
    ));
    s.push_str(&format!("DeletedFiles {}\n", stats.deleted_files));
    s.push_str(&format!("ChangedFiles {}\n", stats.changed_files));
    s.push_str(&format!(
        "ChangedFileSize {} ({})\n",
        stats.changed_file_size,
        sz(stats.changed_file_size)
    ));
    s.push_str(&format!("ChangedDeltaSize {} ({})\n", 0, sz(0)));
    s.push_str(&format!("DeltaEntries {}\n", stats.delta_entries));
    s.push_str(&format!(
        "RawDeltaSize {} ({})\n",
        stats.raw_delta_size,
        sz(stats.raw_delta_size)
    ));
    s.push_str(&format!(
        "TotalDestinationSizeChange {} ({})\n",
        stats.dest_size,
        sz(stats.dest_size)
    ));
    s.push_str(&format!("Errors {}\n", stats.errors));
    s.push_str("-------------------------------------------------\n");
    s
}

/// A byte count as duplicity shows it (`1.50 MB`).
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

fn chain_block(out: &mut String, ch: &Chain) {
    let _ = writeln!(out, "Chain start time: {}", time::pretty_local(ch.start()));
    let _ = writeln!(out, "Chain end time: {}", time::pretty_local(ch.end()));
    let _ = writeln!(
        out,
        "Number of contained backup sets: {}",
        ch.incs.len() + 1
    );
    let vols: usize = ch.sets().map(|s| s.volumes.len()).sum();
    let _ = writeln!(out, "Total number of contained volumes: {vols}");
    let _ = writeln!(
        out,
        "{:>20}{:>33}{:>18}",
        " Type of backup set:", "Time:", "Num volumes:"
    );
    for s in ch.sets() {
        let kind = if s.is_full() { "Full" } else { "Incremental" };
        let _ = writeln!(
            out,
            "{:>20}{:>33}{:>18}",
            kind,
            time::pretty_local(s.end),
            s.volumes.len()
        );
    }
}

/// duplicity 3.x's collection-status text, and dupr's addition: which
/// sets are incomplete, and why.
pub fn collection_status(
    c: &Collection,
    backend_name: &str,
    archive_dir: &str,
    problems: &[StatusProblem],
) -> String {
    let mut out = String::new();
    match c.chains.last() {
        Some(ch) => {
            let _ = writeln!(
                out,
                "Last full backup date: {}",
                time::pretty_local(ch.start())
            );
        }
        None => out.push_str("Last full backup date: none\n"),
    }
    out.push_str("Collection Status\n-----------------\n");
    let _ = writeln!(out, "Connecting with backend: {backend_name}");
    let _ = writeln!(out, "Archive dir: {archive_dir}");
    out.push('\n');
    let primary = c.chains.last();
    let secondary: Vec<&Chain> = c
        .chains
        .iter()
        .take(c.chains.len().saturating_sub(1))
        .collect();
    let _ = writeln!(out, "Found {} secondary backup chain(s).", secondary.len());
    for (i, ch) in secondary.iter().enumerate() {
        let _ = writeln!(out, "Secondary chain {} of {}:", i + 1, secondary.len());
        out.push_str("-------------------------\n");
        chain_block(&mut out, ch);
        out.push_str("-------------------------\n");
    }
    out.push('\n');
    match primary {
        Some(ch) => {
            if c.sig_chain_for(ch).is_some() {
                out.push_str("Found primary backup chain with matching signature chain:\n");
            } else {
                out.push_str("Found primary backup chain without matching signature chain:\n");
            }
            out.push_str("-------------------------\n");
            chain_block(&mut out, ch);
            out.push_str("-------------------------\n");
        }
        None => out.push_str("No backup chains with active signatures found\n"),
    }
    if c.orphaned.is_empty() && c.incomplete.is_empty() {
        out.push_str("No orphaned or incomplete backup sets found.\n");
    } else {
        if !c.orphaned.is_empty() {
            let _ = writeln!(
                out,
                "Also found {} backup set(s) not part of any chain,",
                c.orphaned.len()
            );
        }
        if !c.incomplete.is_empty() {
            let _ = writeln!(out, "and {} incomplete backup set(s).", c.incomplete.len());
        }
        out.push_str("These may be deleted by running duplicity with the \"cleanup\" command.\n");
    }
    for p in problems {
        let _ = writeln!(
            out,
            "Problem: {} ({}): {}",
            p.file,
            time::pretty_local(p.time),
            p.what
        );
    }
    out
}
