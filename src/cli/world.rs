//! `gram-bench world`: build (once) and describe the embedded world.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::provenance::default_cache_dir;
use crate::suite::Suite;
use crate::world::ensure_world;

#[derive(Args, Debug)]
pub struct WorldArgs {
    /// The suite whose [world] table to build.
    pub suite: PathBuf,
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

pub fn world(a: &WorldArgs) -> Result<()> {
    let suite = Suite::load(&a.suite)?;
    let w = suite
        .world
        .as_ref()
        .ok_or_else(|| Error::Input(format!("{}: no [world] table", a.suite.display())))?;
    let cache = a.cache.clone().unwrap_or_else(default_cache_dir);
    let art = ensure_world(&cache, w, &mut |m| eprintln!("{m}"))?;
    let json = serde_json::to_string_pretty(&art.manifest).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{json}");
    eprintln!("data: {}\nmodel: {}", art.data_root.display(), art.model_dir.display());
    Ok(())
}
