//! `gram-bench world`: build (once) and describe the embedded world.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::provenance::default_cache_dir;
use crate::suite::Suite;
use crate::world::digest::{differences, world_digests};
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
    // The files as they are now, against what the build recorded.
    let now = world_digests(&art.data_root, &art.model_dir)?;
    for (name, d) in &now.datasets {
        eprintln!("dataset {name:<9} {d}");
    }
    eprintln!("weights           {}", now.weights_sha256);
    match &art.manifest.digests {
        None => eprintln!("(this world was built before digests were recorded: nothing to verify against)"),
        Some(recorded) => {
            let diff = differences(recorded, &now);
            if !diff.is_empty() {
                return Err(Error::Input(format!(
                    "the cached world differs from its build: {}; delete {} to rebuild it",
                    diff.join(", "),
                    art.data_root.parent().unwrap_or(&art.data_root).display()
                )));
            }
            eprintln!("verified: every dataset and the weights match the build's digests");
        }
    }
    Ok(())
}
