//! `gram-bench world`: build (once) and describe the embedded world; pretrain a micro-CLIP to pin;
//! replay the pinned pretraining's first steps.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::provenance::{default_cache_dir, git_commit};
use crate::suite::Suite;
use crate::world::build::pretrain_into;
use crate::world::digest::world_digests;
use crate::world::pinned::{
    record_digests, trajectory_differences, verify_committed, write_pin, Pin, PinManifest, DIGESTS_PATH,
};
use crate::world::pretrain::{replay, TRAJECTORY_STEPS};
use crate::world::{ensure_world, WorldConfig, WORLD_VERSION};

#[derive(Args, Debug)]
pub struct WorldArgs {
    #[command(subcommand)]
    pub action: WorldAction,
}

#[derive(Subcommand, Debug)]
pub enum WorldAction {
    /// Build the suite's world (once; cached), print its manifest and verify its content digests.
    Build {
        /// The suite whose [world] table to build.
        suite: PathBuf,
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Record this world's digests in a digests file (the repository's is
        /// src/world/pinned/digests.json), as what every machine must build.
        #[arg(long)]
        record_digests: Option<PathBuf>,
    },
    /// Pretrain the suite's micro-CLIP from scratch and write it as a pin (the files
    /// src/world/pinned/ holds): what regenerates the pinned model.
    Pretrain {
        suite: PathBuf,
        /// Where to write model.safetensors and pin.json.
        #[arg(long)]
        out: PathBuf,
    },
    /// Apply the temperature calibration `pretrain` ends with to an existing pin (one made before
    /// pretraining calibrated): the same weights but the logit scale; running it again changes
    /// nothing.
    Calibrate {
        /// The pin's folder (model.safetensors and pin.json), rewritten in place.
        #[arg(long)]
        pin: PathBuf,
    },
    /// Pretrain the first steps again and compare their losses, bit for bit, with the pin's.
    Replay {
        suite: PathBuf,
        #[arg(long, default_value_t = TRAJECTORY_STEPS)]
        steps: usize,
    },
}

pub fn world(a: &WorldArgs) -> Result<()> {
    match &a.action {
        WorldAction::Build {
            suite,
            cache,
            record_digests,
        } => build(suite, cache.as_deref(), record_digests.as_deref()),
        WorldAction::Pretrain { suite, out } => pretrain(suite, out),
        WorldAction::Replay { suite, steps } => replay_pin(suite, *steps),
        WorldAction::Calibrate { pin } => calibrate_pin(pin),
    }
}

fn world_table(path: &Path) -> Result<WorldConfig> {
    let suite = Suite::load(path)?;
    suite
        .world
        .ok_or_else(|| Error::Input(format!("{}: no [world] table", path.display())))
}

fn build(suite: &Path, cache: Option<&Path>, record: Option<&Path>) -> Result<()> {
    let w = world_table(suite)?;
    let cache = cache.map(Path::to_path_buf).unwrap_or_else(default_cache_dir);
    let art = ensure_world(&cache, &w, &mut |m| eprintln!("{m}"))?;
    let json = serde_json::to_string_pretty(&art.manifest).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{json}");
    eprintln!("data: {}\nmodel: {}", art.data_root.display(), art.model_dir.display());
    // `ensure_world` has checked the files against the build's digests (and the committed ones),
    // so those are what the files hash to now; a world built before builds recorded digests is
    // hashed here.
    let now = match &art.manifest.digests {
        Some(d) => d.clone(),
        None => world_digests(&art.data_root, &art.model_dir)?,
    };
    for (name, d) in &now.datasets {
        eprintln!("dataset {name:<13} {d}");
    }
    eprintln!("weights               {}", now.weights_sha256);
    match &art.manifest.digests {
        None => eprintln!("(this world was built before digests were recorded: nothing to verify against)"),
        Some(_) => eprintln!("verified: every dataset and the weights match the build's digests"),
    }
    if verify_committed(&art.manifest.key, &now)? {
        eprintln!("verified: the world is the one the repository records ({DIGESTS_PATH})");
    } else {
        eprintln!("(the repository records no digests for world {})", art.manifest.key);
    }
    if let Some(path) = record {
        record_digests(path, &art.manifest.key, &now)?;
        eprintln!("recorded world {}'s digests in {}", art.manifest.key, path.display());
    }
    Ok(())
}

fn pretrain(suite: &Path, out: &Path) -> Result<()> {
    let w = world_table(suite)?;
    let model_dir = std::env::temp_dir().join(format!("gram-bench-pretrain-{}", std::process::id()));
    let report = pretrain_into(&w, &model_dir, &mut |m| eprintln!("{m}"))?;
    let manifest = PinManifest {
        world_version: WORLD_VERSION,
        config: w,
        weights_sha256: crate::files::file_sha256(&model_dir.join("model.safetensors"))?,
        pretrain: report,
        produced_by: format!("gram-bench world pretrain {}", suite.display()),
        git_commit: git_commit(),
        cpu: cpu_name(),
        threads: rayon::current_num_threads(),
    };
    write_pin(out, &model_dir, &manifest)?;
    std::fs::remove_dir_all(&model_dir).map_err(|e| Error::io(&model_dir, e))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?
    );
    eprintln!("pinned in {}", out.display());
    Ok(())
}

fn calibrate_pin(dir: &Path) -> Result<()> {
    use crate::world::pretrain::{calibrate_temperature, micro_clip_config};
    let path = dir.join("pin.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut manifest: PinManifest =
        serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let tmp = std::env::temp_dir().join(format!("gram-bench-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let cfg = micro_clip_config(&manifest.config);
    crate::clip::export::write_hf_config(&tmp, &cfg)?;
    let weights = dir.join("model.safetensors");
    std::fs::copy(&weights, tmp.join("model.safetensors")).map_err(|e| Error::io(&weights, e))?;
    let device = Default::default();
    let loaded = crate::clip::load_clip::<crate::backend::Cpu>(&tmp, &Default::default(), &device)?;
    let tok = crate::clip::ClipTokenizer::openai(manifest.config.context_length)?;
    let pre = crate::clip::Preprocess::clip(manifest.config.image_size);
    // Calibrating again starts from the scale pretraining learned, so the record keeps it.
    let learned = match &manifest.pretrain.calibration {
        Some(first) => loaded.model.with_logit_scale(first.learned),
        None => loaded.model,
    };
    let cal = calibrate_temperature(&manifest.config, &learned, &tok, &pre, &device)?;
    let model = learned.with_logit_scale(cal.logit_scale);
    crate::clip::export::save_hf_dir(&tmp, &cfg, &model)?;
    eprintln!(
        "logit scale {:.2} (learned {:.2}): zero-shot NLL {:.4} (learned: {:.4})",
        cal.logit_scale, cal.learned, cal.nll, cal.nll_learned
    );
    manifest.world_version = WORLD_VERSION;
    manifest.weights_sha256 = crate::files::file_sha256(&tmp.join("model.safetensors"))?;
    manifest.pretrain.calibration = Some(cal);
    if !manifest.produced_by.contains("world calibrate") {
        manifest.produced_by = format!(
            "{}, then gram-bench world calibrate --pin {}",
            manifest.produced_by,
            dir.display()
        );
    }
    write_pin(dir, &tmp, &manifest)?;
    std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?
    );
    Ok(())
}

fn replay_pin(suite: &Path, steps: usize) -> Result<()> {
    let w = world_table(suite)?;
    let pin = Pin::embedded()?.filter(|p| p.fits(&w)).ok_or_else(|| {
        Error::Input(format!(
            "{}: no micro-CLIP is pinned for this [world] table (under world version {WORLD_VERSION})",
            suite.display()
        ))
    })?;
    let pinned = &pin.manifest.pretrain.first_losses;
    if steps == 0 {
        return Err(Error::Input("--steps 0 replays nothing: give at least 1".into()));
    }
    if steps > pinned.len() {
        return Err(Error::Input(format!(
            "the pin records the first {} steps' losses; asked to replay {steps}",
            pinned.len()
        )));
    }
    let got = replay::<burn::backend::Autodiff<crate::backend::Cpu>>(&w, &Default::default(), steps)?;
    for (i, (a, b)) in pinned.iter().zip(&got).enumerate() {
        eprintln!("step {:>2}: pinned {a:.9}  replayed {b:.9}", i + 1);
    }
    let diff = trajectory_differences(&pinned[..steps], &got);
    if !diff.is_empty() {
        return Err(Error::Run(format!(
            "pretraining no longer reproduces the pinned micro-CLIP: {} of {steps} steps differ (first: step {})",
            diff.len(),
            diff[0].0
        )));
    }
    println!("replayed {steps} steps: identical to the pinned run, bit for bit");
    Ok(())
}

/// The CPU's model name, for the record of who produced a pin.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
