//! The ground floor's file helpers: atomic writes, SHA-256 digests, `${VAR}` expansion and strict
//! TOML reading with `file:line:col` errors. Every layer above uses these; they know nothing of
//! suites, locks or records.

use std::fs::File;
use std::path::Path;

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename. A
/// reader sees the old file or the whole new one, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique per write, not only per process: a run's workers may write the same file at once
    // (two cells caching one dataset's features), and each must rename its own whole temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("file"),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        // A failed write (a full disk) leaves no partial temp file behind to fill it further.
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Removes the temp files `write_atomic` left in `dir` when its process was killed mid-write: those
/// whose writer (the pid in the name) is no longer running. Returns how many were removed. Temp
/// files of live writers (another runner on the same store) are left alone.
pub(crate) fn sweep_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".tmp-"))
            .and_then(|(_, writer)| writer.split('-').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        // Without /proc, keep every temp file: removing a live writer's would lose its record.
        true
    }
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
        // A dead writer's temp (pid far above pid_max) goes; this process's own stays.
        let dead = dir.path().join(".a.json.tmp-4294967");
        let dead_write = dir.path().join(".c.json.tmp-4294967-12");
        let mine = dir.path().join(format!(".b.json.tmp-{}-3", std::process::id()));
        for p in [&dead, &dead_write, &mine] {
            std::fs::write(p, b"partial").unwrap();
        }
        assert_eq!(sweep_stale_temps(dir.path()), 2);
        assert!(!dead.exists() && !dead_write.exists() && mine.exists());
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
