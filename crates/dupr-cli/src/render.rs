//! Text as duplicity prints it, from what the engine returns.

use dupr_core::backup::Stats;
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
