//! The pinned micro-CLIP: the weights `gram-bench world pretrain` produced for the embedded suites'
//! `[world]` table, shipped inside the binary, so every machine runs the same model (pretraining's
//! float kernels would otherwise be the only part of the world that a CPU can change) and nobody
//! waits for pretraining. A `[world]` table it was not made for is pretrained on the spot.
//!
//! `pin.json` records what produced the weights and the exact losses of the first steps;
//! `gram-bench world replay` (and a test) pretrains those steps again and compares them bit for bit,
//! so a change to the code that would no longer reproduce the pinned model cannot pass unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::digest::{differences, WorldDigests};
use super::pretrain::{micro_clip_config, PretrainReport};
use super::{WorldConfig, WORLD_VERSION};
use crate::error::{Error, Result};
use crate::files::{sha256_hex, write_atomic};

/// The pinned weights (`model.safetensors` of an HF CLIP directory).
const WEIGHTS: &[u8] = include_bytes!("pinned/model.safetensors");
/// What produced them (a [`PinManifest`]; `null` when nothing is pinned).
const MANIFEST: &str = include_str!("pinned/pin.json");
/// The content digests of the worlds the repository's suites build, by world key: what every
/// machine must build (`gram-bench world build SUITE --record-digests` writes an entry).
const DIGESTS: &str = include_str!("pinned/digests.json");
/// Where `DIGESTS` lives in the repository.
pub(crate) const DIGESTS_PATH: &str = "src/world/pinned/digests.json";

/// The committed digests of the world `key`, if the repository records them.
pub(crate) fn committed_digests(key: &str) -> Result<Option<WorldDigests>> {
    let all: BTreeMap<String, WorldDigests> =
        serde_json::from_str(DIGESTS).map_err(|e| Error::Internal(format!("{DIGESTS_PATH}: {e}")))?;
    Ok(all.get(key).cloned())
}

/// Compares world `key`'s `digests` with the committed ones: `Ok(true)` when they match,
/// `Ok(false)` when the repository records none for it, an error naming what differs otherwise.
pub(crate) fn verify_committed(key: &str, digests: &WorldDigests) -> Result<bool> {
    let Some(committed) = committed_digests(key)? else {
        return Ok(false);
    };
    let diff = differences(&committed, digests);
    if diff.is_empty() {
        return Ok(true);
    }
    Err(Error::Run(format!(
        "world {key} differs from the one the repository records ({DIGESTS_PATH}): {}; if it was built \
         from a clean checkout, please report it with your CPU's flags (grep flags /proc/cpuinfo)",
        diff.join(", ")
    )))
}

/// Adds (or replaces) the digests of world `key` in the digests file at `path`.
pub(crate) fn record_digests(path: &Path, key: &str, digests: &WorldDigests) -> Result<()> {
    let mut all: BTreeMap<String, WorldDigests> = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    all.insert(key.to_string(), digests.clone());
    let text = serde_json::to_string_pretty(&all).expect("digests serialize") + "\n";
    write_atomic(path, text.as_bytes())
}

/// `pin.json`: the world the weights belong to and how they were made.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PinManifest {
    /// The generator version the weights were pretrained under.
    pub world_version: u32,
    pub config: WorldConfig,
    pub weights_sha256: String,
    /// The pretraining run's report (accuracies, time, first losses, loss curve).
    pub pretrain: PretrainReport,
    /// The command, commit, CPU and thread count of the run that produced it.
    pub produced_by: String,
    pub git_commit: String,
    pub cpu: String,
    pub threads: usize,
}

/// The pinned micro-CLIP.
pub(crate) struct Pin {
    pub manifest: PinManifest,
    weights: &'static [u8],
}

impl Pin {
    /// The pin built into this binary, if there is one; an error if the shipped files disagree
    /// with each other.
    pub fn embedded() -> Result<Option<Pin>> {
        let manifest: Option<PinManifest> =
            serde_json::from_str(MANIFEST).map_err(|e| Error::Internal(format!("src/world/pinned/pin.json: {e}")))?;
        let Some(manifest) = manifest else {
            return Ok(None);
        };
        let pin = Pin {
            manifest,
            weights: WEIGHTS,
        };
        let actual = sha256_hex(pin.weights);
        if actual != pin.manifest.weights_sha256 {
            return Err(Error::Internal(format!(
                "the pinned micro-CLIP's weights hash to {actual}, its pin.json says {}",
                pin.manifest.weights_sha256
            )));
        }
        Ok(Some(pin))
    }

    /// Whether these weights were pretrained for `cfg` under this generator version.
    pub(crate) fn fits(&self, cfg: &WorldConfig) -> bool {
        self.manifest.world_version == WORLD_VERSION && self.manifest.config.same_pretraining(cfg)
    }

    /// Writes the pinned model as an HF CLIP directory (`config.json`, `model.safetensors`).
    pub(crate) fn write_model_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::clip::export::write_hf_config(dir, &micro_clip_config(&self.manifest.config))?;
        write_atomic(&dir.join("model.safetensors"), self.weights)
    }
}

/// Writes a new pin (the files `include_bytes!` reads) from a freshly pretrained model directory.
pub(crate) fn write_pin(out: &Path, model_dir: &Path, manifest: &PinManifest) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let src = model_dir.join("model.safetensors");
    let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
    write_atomic(&out.join("model.safetensors"), &bytes)?;
    let text = serde_json::to_string_pretty(manifest).expect("a pin manifest serializes") + "\n";
    write_atomic(&out.join("pin.json"), text.as_bytes())
}

/// The first steps' losses that differ between the pinned run and a replay, as
/// `(step, pinned, replayed)`; empty when every one is bit-identical.
pub(crate) fn trajectory_differences(pinned: &[f32], replayed: &[f32]) -> Vec<(usize, f32, f32)> {
    pinned
        .iter()
        .zip(replayed)
        .enumerate()
        .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
        .map(|(i, (a, b))| (i + 1, *a, *b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::pretrain::{replay, TRAJECTORY_STEPS};

    #[test]
    fn the_embedded_pin_is_consistent_and_records_its_first_steps() {
        let pin = Pin::embedded().unwrap().expect("the repository pins a micro-CLIP");
        assert_eq!(pin.manifest.pretrain.first_losses.len(), TRAJECTORY_STEPS);
        assert_eq!(pin.manifest.pretrain.steps, pin.manifest.config.steps);
    }

    /// The recorded trajectory replays bit for bit: the code still computes what produced the
    /// pinned weights (a few steps; the whole run is `gram-bench world pretrain`).
    #[test]
    fn pretraining_reproduces_the_pinned_trajectory() {
        let pin = Pin::embedded().unwrap().expect("the repository pins a micro-CLIP");
        let steps = 3;
        let got =
            replay::<burn::backend::Autodiff<crate::backend::Cpu>>(&pin.manifest.config, &Default::default(), steps)
                .unwrap();
        let want = &pin.manifest.pretrain.first_losses[..steps];
        assert!(
            trajectory_differences(want, &got).is_empty(),
            "pinned {want:?}, replayed {got:?}"
        );
    }

    /// The pinned weights carry the logit scale temperature calibration chooses for them, starting
    /// from the scale pretraining learned, and calibration moved the NLL down.
    #[test]
    fn the_pinned_temperature_is_what_calibration_chooses() {
        use crate::world::pretrain::calibrate_temperature;
        let pin = Pin::embedded().unwrap().expect("the repository pins a micro-CLIP");
        let recorded = pin
            .manifest
            .pretrain
            .calibration
            .clone()
            .expect("the pin is calibrated");
        let dir = tempfile::tempdir().unwrap();
        pin.write_model_dir(dir.path()).unwrap();
        let device = Default::default();
        let loaded = crate::clip::load_clip::<crate::backend::Cpu>(dir.path(), &Default::default(), &device).unwrap();
        let kept = loaded.model.logit_scale_value() as f64;
        assert!(
            (kept - recorded.logit_scale).abs() < 1e-4 * recorded.logit_scale,
            "{kept}"
        );
        let w = &pin.manifest.config;
        let tok = crate::clip::ClipTokenizer::openai(w.context_length).unwrap();
        let pre = crate::clip::Preprocess::clip(w.image_size);
        let learned = loaded.model.with_logit_scale(recorded.learned);
        let again = calibrate_temperature(w, &learned, &tok, &pre, &device).unwrap();
        assert_eq!(again, recorded);
        assert!(again.nll < again.nll_learned);
    }

    #[test]
    fn a_single_changed_bit_is_a_difference() {
        let a = [1.5f32, 2.0];
        let b = [1.5f32, f32::from_bits(2.0f32.to_bits() + 1)];
        assert_eq!(trajectory_differences(&a, &a), vec![]);
        assert_eq!(trajectory_differences(&a, &b), vec![(2, 2.0, b[1])]);
    }
}
