//! KgCoOp (Yao et al., CVPR'23): CoOp's prompt learner plus a knowledge-guided prior.

use super::coop::Prior;
use super::coop_family::CoopFamily;

crate::coop_family!(
    /// KgCoOp: CoOp plus `weight` × (1 − mean cosine between learned and hand-crafted class
    /// features); the paper's λ is 8.0 (`TRAINER.COOP.W`).
    KgCoOpConfig {
        weight: f64,
    }
);

impl CoopFamily for KgCoOpConfig {
    const PAPER_NAME: &'static str = "KgCoOp";

    fn prior(&self) -> Prior {
        Prior::KnowledgeGuided { weight: self.weight }
    }

    fn check_own(&self) -> std::result::Result<(), String> {
        if self.weight.is_nan() || self.weight < 0.0 {
            return Err("weight must be >= 0".into());
        }
        Ok(())
    }
}
