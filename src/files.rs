//! The ground floor's file helpers: atomic writes, SHA-256 digests, `${VAR}` expansion and strict
//! TOML reading with `file:line:col` errors. Every layer above uses these; they know nothing of
//! suites, locks or records.

use std::fs::File;
use std::path::Path;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename. A
/// reader sees the old file or the whole new one, never a part. The temp file is locked while it
/// is written, which is how [`sweep_stale_temps`] tells a live writer's from a killed one's on any
/// host sharing the store.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique per write, not only per process: a run's workers may write the same file at once
    // (two cells caching one dataset's features), and each must rename its own whole temp file;
    // the random part keeps two hosts' runners (equal pids) apart on a shared store.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}{TEMP_MARK}{}-{}-{:016x}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("file"),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        rand::random::<u64>()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.lock()?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        drop(f);
        Ok(())
    })();
    written.map_err(|e| {
        // A failed write (a full disk) leaves no partial temp file behind to fill it further.
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// What marks a [`write_atomic`] temp file's name (after a leading dot and the target's name).
const TEMP_MARK: &str = ".tmp-";

/// How old an unlocked temp file must be before it is swept: a writer creates its file and locks
/// it in the next call, and this keeps that instant out of reach.
const TEMP_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the temp files `write_atomic` left in `dir` when its writer was killed mid-write: those
/// no writer holds locked, and older than [`TEMP_GRACE`]. A live writer's (another runner on this
/// host or another one sharing the store) holds its lock, whatever its pid, and is left alone.
/// Returns how many were removed.
pub(crate) fn sweep_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let is_temp = name
            .to_str()
            .and_then(|n| n.strip_prefix('.'))
            .is_some_and(|n| n.contains(TEMP_MARK));
        if is_temp && stale(&e.path()) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether the temp file at `p` is old and unlocked (its writer is gone).
fn stale(p: &Path) -> bool {
    let old = std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= TEMP_GRACE);
    // Taking the lock proves no writer holds it; it is released when `f` closes, before removal.
    old && File::open(p).is_ok_and(|f| f.try_lock().is_ok())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of a file's content, read in 1 MiB blocks.
pub(crate) fn file_sha256(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `${VAR}` expanded from the environment; an unset variable is an error naming it.
pub fn expand(s: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Error::Config(format!("`{s}`: unclosed ${{")))?;
        let var = &after[..end];
        let val = std::env::var(var)
            .map_err(|_| Error::Config(format!("`{s}` uses ${{{var}}}, which is not set in the environment")))?;
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `text` (read from `path`) as strict TOML; an error points at `file:line:col`.
pub(crate) fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                Error::Input(format!("{}:{line}:{col}: {msg}", path.display()))
            }
            None => Error::Input(format!("{}: {msg}", path.display())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_temp_file_and_a_killed_writers_temp_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming onto a directory fails after the temp file was written.
        let target = dir.path().join("r.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"").unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        // Unlocked and old temps go (whatever pid their name has, this process's included); one a
        // writer holds locked stays, however old, and so does a fresh one.
        let old = std::time::SystemTime::now() - TEMP_GRACE - std::time::Duration::from_secs(1);
        let dead = dir.path().join(".a.json.tmp-4294967");
        let dead_write = dir.path().join(".c.json.tmp-4294967-12-00ab");
        let mine = dir.path().join(format!(".b.json.tmp-{}-3", std::process::id()));
        let live = dir.path().join(".d.json.tmp-1-1-ff");
        let fresh = dir.path().join(".e.json.tmp-1-2-ff");
        for p in [&dead, &dead_write, &mine, &live, &fresh] {
            std::fs::write(p, b"partial").unwrap();
            if p != &fresh {
                File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
            }
        }
        let writer = File::open(&live).unwrap();
        writer.lock().unwrap();
        assert_eq!(sweep_stale_temps(dir.path()), 3);
        assert!(!dead.exists() && !dead_write.exists() && !mine.exists());
        assert!(live.exists() && fresh.exists());
        drop(writer);
        assert_eq!(sweep_stale_temps(dir.path()), 1);
        assert!(!live.exists());
    }

    #[test]
    fn toml_errors_point_at_line_and_column() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let e = parse_toml::<T>(Path::new("x.toml"), "a = 1\nb = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml:2:1:"), "{e}");
    }

    #[test]
    fn variables_expand_and_unset_ones_are_named() {
        std::env::set_var("GRAM_BENCH_FILES_TEST", "v");
        assert_eq!(expand("a/${GRAM_BENCH_FILES_TEST}/b").unwrap(), "a/v/b");
        let e = expand("${GRAM_BENCH_FILES_UNSET}").unwrap_err().to_string();
        assert!(e.contains("GRAM_BENCH_FILES_UNSET"), "{e}");
    }

    #[test]
    fn threads_writing_one_file_at_once_each_write_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let payloads: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1 << 16]).collect();
        std::thread::scope(|s| {
            for bytes in &payloads {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, bytes).unwrap();
                    }
                });
            }
        });
        assert!(payloads.contains(&std::fs::read(&p).unwrap()));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file is left"
        );
    }

    #[test]
    fn an_atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(file_sha256(&p).unwrap(), sha256_hex(b"two"));
    }
}
