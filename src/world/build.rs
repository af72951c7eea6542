//! Building the embedded world once: datasets on disk and the pretrained micro-CLIP, cached under a
//! directory named by the hash of everything that decides them. A build goes to a temporary
//! directory and is renamed into place, under a lock, so a crash leaves no half-built world and two
//! runners never build the same one at once.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::datasets::{write_dataset, WORLD_DATASETS};
use super::digest::{differences, world_digests, WorldDigests};
use super::pinned::{verify_committed, Pin};
use super::pretrain::{pretrain, PretrainReport};
use super::{WorldConfig, WORLD_VERSION};
use crate::clip::save_hf_dir;
use crate::error::{Error, Result};

/// Where a built world lives.
#[derive(Clone, Debug)]
pub(crate) struct WorldArtifacts {
    /// The data root holding one folder per world dataset.
    pub data_root: PathBuf,
    /// The micro-CLIP as an HF directory.
    pub model_dir: PathBuf,
    pub manifest: WorldManifest,
}

/// `world.json` in a built world: what it is and how the micro-CLIP did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WorldManifest {
    pub world_version: u32,
    pub key: String,
    pub config: WorldConfig,
    pub pretrain: PretrainReport,
    pub build_seconds: f64,
    /// The content digests of its datasets and weights, taken when it was built (None in worlds
    /// built before digests were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests: Option<WorldDigests>,
    /// Where the micro-CLIP came from: the pin shipped in the binary, or pretrained here.
    #[serde(default)]
    pub micro_clip: WeightsSource,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WeightsSource {
    /// `src/world/pinned/`: the same bits on every machine.
    Pinned,
    /// Pretrained on this machine (a `[world]` table nothing is pinned for).
    #[default]
    Pretrained,
}

/// Pretrains the micro-CLIP for `cfg` on the CPU and saves it as an HF directory at `model_dir`.
pub(crate) fn pretrain_into(cfg: &WorldConfig, model_dir: &Path, log: &mut dyn FnMut(&str)) -> Result<PretrainReport> {
    let device = Default::default();
    let mut last_print = std::time::Instant::now();
    let (clip_cfg, model, report) =
        pretrain::<burn::backend::Autodiff<crate::backend::Cpu>>(cfg, &device, &mut |step, total, loss| {
            if last_print.elapsed().as_secs_f64() > 10.0 || step == total {
                last_print = std::time::Instant::now();
                log(&format!(
                    "  micro-CLIP pretraining: step {step}/{total}, loss {loss:.3}"
                ));
            }
        })?;
    save_hf_dir(model_dir, &clip_cfg, &model)?;
    Ok(report)
}

/// The cache key of a world: its version and full config.
pub(crate) fn world_key(cfg: &WorldConfig) -> String {
    let mut h = Sha256::new();
    h.update(format!("gram-bench world v{WORLD_VERSION}\n"));
    h.update(serde_json::to_vec(cfg).expect("world config serializes"));
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The world for `cfg` in `cache` if it is complete there (its manifest, data and weights); a
/// world with any of them missing counts as not built, and building replaces it.
pub(crate) fn cached_world(cache: &Path, cfg: &WorldConfig) -> Option<WorldArtifacts> {
    let dir = cache.join(format!("world-{}", world_key(cfg)));
    let text = std::fs::read_to_string(dir.join("world.json")).ok()?;
    let manifest: WorldManifest = serde_json::from_str(&text).ok()?;
    let world = WorldArtifacts {
        data_root: dir.join("data"),
        model_dir: dir.join("micro-clip"),
        manifest,
    };
    (world.data_root.is_dir() && world.model_dir.join("model.safetensors").is_file()).then_some(world)
}

/// Checks a cached world's files before anything uses them: every dataset and the weights must
/// hash to what its build recorded and, for a world the repository records, to the committed
/// digests (a split file relabelled in place, or weights changed with `world.json` edited to
/// match, would otherwise give records under the same keys as sound ones).
fn verify_cached(world: &WorldArtifacts, dir: &Path) -> Result<()> {
    let now = world_digests(&world.data_root, &world.model_dir)?;
    let committed = crate::world::pinned::committed_digests(&world.manifest.key)?;
    cached_world_damage(world.manifest.digests.as_ref(), committed.as_ref(), &now).map_err(|what| {
        Error::Input(format!(
            "{}: the cached world {what}; delete that folder and run again (the world is rebuilt)",
            dir.display()
        ))
    })
}

/// What is wrong with a cached world whose files hash to `now`, given what its build recorded
/// (`built`: absent for a world built before builds recorded digests) and what the repository
/// records for its key (`committed`). The committed digests are checked whatever the build
/// recorded: a manifest is a file in the cache, and can be edited to match changed files.
fn cached_world_damage(
    built: Option<&WorldDigests>,
    committed: Option<&WorldDigests>,
    now: &WorldDigests,
) -> std::result::Result<(), String> {
    if let Some(built) = built {
        let diff = differences(built, now);
        if !diff.is_empty() {
            return Err(format!("differs from its build: {}", diff.join(", ")));
        }
    }
    if let Some(committed) = committed {
        let diff = differences(committed, now);
        if !diff.is_empty() {
            return Err(format!(
                "differs from the world the repository records ({}): {}",
                super::pinned::DIGESTS_PATH,
                diff.join(", ")
            ));
        }
    }
    Ok(())
}

/// Whether [`ensure_world`] would pretrain a micro-CLIP for `cfg` (not cached, nothing pinned for it).
pub(crate) fn would_pretrain(cache: &Path, cfg: &WorldConfig) -> Result<bool> {
    Ok(cached_world(cache, cfg).is_none() && !Pin::embedded()?.is_some_and(|p| p.fits(cfg)))
}

/// Returns the world for `cfg` under `cache`, building it first if it is not there.
/// `log` receives human-readable progress lines.
pub(crate) fn ensure_world(cache: &Path, cfg: &WorldConfig, log: &mut dyn FnMut(&str)) -> Result<WorldArtifacts> {
    let key = world_key(cfg);
    let dir = cache.join(format!("world-{key}"));
    if let Some(w) = cached_world(cache, cfg) {
        verify_cached(&w, &dir)?;
        return Ok(w);
    }
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let lock_path = cache.join(format!("world-{key}.lock"));
    let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    // Another runner may have finished it while this one waited for the lock.
    if let Some(w) = cached_world(cache, cfg) {
        verify_cached(&w, &dir)?;
        return Ok(w);
    }
    let t0 = std::time::Instant::now();
    // Holding the lock, no other builder is at work: half-built worlds of killed builders go.
    let prefix = format!("world-{key}.tmp-");
    for entry in std::fs::read_dir(cache).map_err(|e| Error::io(cache, e))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let p = entry.path();
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    let tmp = cache.join(format!("{prefix}{}", std::process::id()));
    log(&format!(
        "building the embedded world {key} (once; cached in {})",
        dir.display()
    ));
    // A build that fails (a bad table, a full disk, a world unlike the committed one) leaves no
    // half-built folder behind.
    let manifest = match build_into(&tmp, &key, cfg, t0, log) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if dir.exists() {
        // An incomplete world (see `cached_world`): replaced whole.
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    let p = &manifest.pretrain;
    log(&format!(
        "  micro-CLIP zero-shot (from its pretraining run): held-out colour-shape pairs {:.1}% (seen {:.1}%, chance 1.6%); built in {:.0} s",
        p.held_out_pairs_acc, p.seen_pairs_acc, manifest.build_seconds
    ));
    Ok(WorldArtifacts {
        data_root: dir.join("data"),
        model_dir: dir.join("micro-clip"),
        manifest,
    })
}

/// Writes world `key`'s datasets, micro-CLIP and manifest into `tmp`.
fn build_into(
    tmp: &Path,
    key: &str,
    cfg: &WorldConfig,
    t0: std::time::Instant,
    log: &mut dyn FnMut(&str),
) -> Result<WorldManifest> {
    for ds in WORLD_DATASETS {
        write_dataset(
            &tmp.join("data"),
            ds,
            cfg.seed,
            cfg.image_size as u32,
            ds.test_per_class(
                cfg.test_images
                    .ok_or_else(|| Error::Config("the [world] table has no test_images".into()))?,
            ),
        )?;
    }
    log(&format!("  datasets written in {:.1} s", t0.elapsed().as_secs_f64()));
    let model_dir = tmp.join("micro-clip");
    let (report, source) = match Pin::embedded()?.filter(|p| p.fits(cfg)) {
        Some(pin) => {
            pin.write_model_dir(&model_dir)?;
            log("  micro-CLIP: the pinned weights (src/world/pinned/)");
            (pin.manifest.pretrain, WeightsSource::Pinned)
        }
        None => {
            log(&format!(
                "  no micro-CLIP is pinned for this [world] table: pretraining it here ({} steps)",
                cfg.steps
            ));
            (pretrain_into(cfg, &model_dir, log)?, WeightsSource::Pretrained)
        }
    };
    let digests = world_digests(&tmp.join("data"), &tmp.join("micro-clip"))?;
    // A world the repository records must come out the same here, or it is not cached at all.
    if verify_committed(key, &digests)? {
        log("  every dataset and the weights match the committed digests");
    }
    let manifest = WorldManifest {
        world_version: WORLD_VERSION,
        key: key.to_string(),
        config: cfg.clone(),
        pretrain: report,
        micro_clip: source,
        build_seconds: t0.elapsed().as_secs_f64(),
        digests: Some(digests),
    };
    let mpath = tmp.join("world.json");
    std::fs::write(
        &mpath,
        serde_json::to_string_pretty(&manifest).expect("manifest serializes"),
    )
    .map_err(|e| Error::io(&mpath, e))?;
    Ok(manifest)
}

#[cfg(test)]
mod damage_tests {
    use super::*;

    fn digests(weights: &str) -> WorldDigests {
        WorldDigests {
            datasets: [("world".to_string(), "d1".to_string())].into(),
            weights_sha256: weights.into(),
        }
    }

    #[test]
    fn changed_weights_with_the_manifest_edited_to_match_are_refused_by_the_committed_digests() {
        let (good, changed) = (digests("w-good"), digests("w-changed"));
        assert_eq!(cached_world_damage(Some(&good), Some(&good), &good), Ok(()));
        assert_eq!(
            cached_world_damage(None, None, &changed),
            Ok(()),
            "nothing recorded: nothing to compare"
        );
        let e = cached_world_damage(Some(&good), Some(&good), &changed).unwrap_err();
        assert!(e.starts_with("differs from its build"), "{e}");
        // The manifest edited to record the changed weights: only the committed digests know.
        let e = cached_world_damage(Some(&changed), Some(&good), &changed).unwrap_err();
        assert!(e.starts_with("differs from the world the repository records"), "{e}");
        assert!(e.contains("weights"), "{e}");
        let e = cached_world_damage(None, Some(&good), &changed).unwrap_err();
        assert!(e.starts_with("differs from the world the repository records"), "{e}");
    }
}
