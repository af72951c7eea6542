//! `gram-bench list`: the suites in a folder and whether they validate.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::Result;
use crate::suite::list_suites;

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(default_value = "suites")]
    pub dir: PathBuf,
}

pub(crate) fn list(dir: &Path) -> Result<()> {
    let suites = list_suites(dir)?;
    if suites.is_empty() {
        println!("no suites in {}", dir.display());
    }
    for (path, s) in suites {
        match s {
            Ok(s) => println!("{}  {} v{}: {}", path.display(), s.name, s.version, s.description),
            Err(e) => println!("{}  INVALID: {e}", path.display()),
        }
    }
    Ok(())
}
