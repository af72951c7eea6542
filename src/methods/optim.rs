//! The optimizer and learning-rate schedule every CoOp-family method uses (Dassl's defaults, written
//! out in the suite): SGD with momentum and coupled weight decay, a constant warm-up, then cosine.

use std::collections::BTreeMap;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Epochs at the constant `warmup_lr` before the cosine schedule starts (Dassl's
    /// `ConstantWarmupScheduler`).
    pub warmup_epochs: usize,
    pub warmup_lr: f64,
}

impl SgdConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.lr > 0.0 && self.warmup_lr >= 0.0 && self.weight_decay >= 0.0 && (0.0..1.0).contains(&self.momentum))
        {
            return Err("optim: lr > 0, warmup_lr >= 0, weight_decay >= 0 and 0 <= momentum < 1 are required".into());
        }
        Ok(())
    }

    /// The learning rate of epoch `epoch` (0-based) out of `max_epochs`: `warmup_lr` during warm-up,
    /// then `CosineAnnealingLR(T_max = max_epochs)` stepped once per epoch after it, exactly as
    /// Dassl chains the two (the cosine's step count restarts when the warm-up ends).
    pub(crate) fn lr_at(&self, epoch: usize, max_epochs: usize) -> f64 {
        if epoch < self.warmup_epochs {
            return self.warmup_lr;
        }
        let t = (epoch - self.warmup_epochs) as f64;
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t / max_epochs as f64).cos())
    }

    /// burn's SGD configured as torch's `SGD(momentum, dampening=0, nesterov=False, weight_decay)`.
    pub(crate) fn burn_config(&self) -> burn::optim::SgdConfig {
        burn::optim::SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: self.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay(Some(WeightDecayConfig {
                penalty: self.weight_decay as f32,
            }))
    }
}

/// A setting that may differ by dataset or shot count, as upstream configs do (CoOp trains 1 shot
/// for 50 epochs, 2–4 for 100, 8–16 for 200; PromptSRC's GPA depends on the dataset): one value,
/// or a table keyed by dataset name, shot count or `default`, looked up in that order; values may
/// be tables themselves: `{ imagenet = 50, 1 = 50, 2 = 100, 4 = 100, 8 = 200, 16 = 200 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerCell<T> {
    Fixed(T),
    Table(BTreeMap<String, PerCell<T>>),
}

/// Training length in epochs.
pub type Epochs = PerCell<usize>;

impl<T: Clone> PerCell<T> {
    /// The value for a cell training on `dataset` with `shots` per class.
    pub fn resolve(&self, dataset: &str, shots: usize) -> Result<T, String> {
        match self {
            PerCell::Fixed(v) => Ok(v.clone()),
            PerCell::Table(m) => m
                .get(dataset)
                .or_else(|| m.get(&shots.to_string()))
                .or_else(|| m.get("default"))
                .ok_or_else(|| format!("no entry for dataset `{dataset}`, {shots} shots or `default`"))?
                .resolve(dataset, shots),
        }
    }

    /// Whether every value (at any depth) satisfies `ok` and no table is empty.
    pub fn all(&self, ok: &impl Fn(&T) -> bool) -> bool {
        match self {
            PerCell::Fixed(v) => ok(v),
            PerCell::Table(m) => !m.is_empty() && m.values().all(|v| v.all(ok)),
        }
    }
}

impl Epochs {
    pub fn validate(&self) -> Result<(), String> {
        if self.all(&|&n| n > 0) {
            Ok(())
        } else {
            Err("epochs must be a positive number or a table of them keyed by dataset, shot count or `default`".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_constant_warmup_then_dassl_cosine() {
        let c = SgdConfig {
            lr: 0.002,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 1,
            warmup_lr: 1e-5,
        };
        assert_eq!(c.lr_at(0, 10), 1e-5);
        assert_eq!(c.lr_at(1, 10), 0.002);
        // Epoch 2 is the cosine's first step: 0.002 · (1 + cos(π/10)) / 2.
        assert!((c.lr_at(2, 10) - 0.002 * 0.5 * (1.0 + (std::f64::consts::PI / 10.0).cos())).abs() < 1e-15);
        assert!(c.lr_at(9, 10) > 0.0 && c.lr_at(9, 10) < c.lr_at(8, 10));
    }

    #[test]
    fn epochs_by_dataset_then_shot_count_then_default() {
        let parse = |t: &str| toml::from_str::<BTreeMap<String, Epochs>>(t).unwrap()["e"].clone();
        let e = parse("e = { 1 = 50, 16 = 200 }");
        assert_eq!(e.resolve("dtd", 16), Ok(200));
        assert!(e.resolve("dtd", 4).is_err());
        assert_eq!(Epochs::Fixed(3).resolve("dtd", 4), Ok(3));
        // CoOp's few-shot schedule: ImageNet always 50.
        let e = parse("e = { imagenet = 50, 1 = 50, 2 = 100, 4 = 100, 8 = 200, 16 = 200 }");
        assert_eq!(e.resolve("imagenet", 16), Ok(50));
        assert_eq!(e.resolve("food101", 2), Ok(100));
        let e = parse("e = { imagenet = 50, default = 200 }");
        assert_eq!(e.resolve("eurosat", 16), Ok(200));
        assert!(parse("e = { imagenet = 0 }").validate().is_err());
    }
}
