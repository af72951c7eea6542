//! Where and when something ran: the clock, the commit this binary was built from, the cache
//! directory. Records, reports and baselines all stamp themselves with these.

use std::path::PathBuf;

/// UTC timestamp, RFC 3339, from the system clock.
pub(crate) fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The git commit this binary was built from (`build.rs`), or `unknown`.
pub(crate) fn git_commit() -> String {
    option_env!("GRAM_BENCH_GIT_COMMIT").unwrap_or("unknown").to_string()
}

/// Where built worlds and the feature cache live: `$GRAM_BENCH_CACHE`, else
/// `$XDG_CACHE_HOME/gram-bench`, else `~/.cache/gram-bench`.
pub(crate) fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("GRAM_BENCH_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("gram-bench");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("gram-bench"),
        None => PathBuf::from(".gram-bench-cache"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = super::now_utc();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
