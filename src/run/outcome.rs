//! What a cell's phases find, as types: each phase returns its outcome, and [`Outcome::write_into`]
//! is the one place a finished cell's findings enter its record. A failed cell's record holds what
//! it ran with and its error.

use crate::data::images::BadImage;
use crate::store::{
    CellDigests, ClassAccuracy, FeatureOrigin, FewShotOrigin, MetaDigest, Metrics, Record, TrainSummary,
};

/// Images the suite's `on_corrupt = "skip"` left out, each once, in the order they were met.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Skipped(Vec<BadImage>);

impl Skipped {
    pub(super) fn add(&mut self, bad: Vec<BadImage>) {
        for b in bad {
            if !self.0.contains(&b) {
                self.0.push(b);
            }
        }
    }

    /// How many images were left out and why the first one was, for an error that follows from
    /// them (a failed cell's record keeps its error, not its findings).
    pub(super) fn explain(&self) -> String {
        match self.0.first() {
            None => String::new(),
            Some(b) => format!(
                " ({} image(s) left out by on_corrupt = \"skip\"; the first: {})",
                self.0.len(),
                b.error
            ),
        }
    }

    fn then(mut self, later: Skipped) -> Skipped {
        self.add(later.0);
        self
    }
}

/// Where an evaluation's (or a corpus's) frozen image features came from, and the seconds spent
/// computing them (0 unless computed for this cell's feature-cache entry).
#[derive(Debug, Clone, Copy)]
pub(super) struct Features {
    pub origin: FeatureOrigin,
    pub compute_s: f64,
}

impl Features {
    pub(super) fn cached() -> Features {
        Features {
            origin: FeatureOrigin::Cached,
            compute_s: 0.0,
        }
    }

    pub(super) fn computed(compute_s: f64) -> Features {
        Features {
            origin: FeatureOrigin::Computed,
            compute_s,
        }
    }
}

/// A train cell's training: its few-shot subset, what training did, GRAM's meta-training cell when
/// a gram method trained.
pub(super) struct TrainOutcome {
    pub fewshot: FewShotOrigin,
    pub summary: TrainSummary,
    pub meta: Option<MetaDigest>,
    pub skipped: Skipped,
    pub seconds: f64,
}

/// An evaluation on a test split.
pub(super) struct EvalOutcome {
    pub metrics: Metrics,
    pub per_class: Vec<ClassAccuracy>,
    pub features: Features,
    pub skipped: Skipped,
    pub seconds: f64,
}

/// A cell that trains, loads or fetches a method and evaluates it.
pub(super) struct HostOutcome {
    pub load_s: f64,
    /// The backbone's, the data's and a released checkpoint's digests (the meta digest comes with
    /// the training).
    pub digests: CellDigests,
    pub train: Option<TrainOutcome>,
    pub eval: EvalOutcome,
}

/// A meta-training cell.
pub(super) struct MetaOutcome {
    pub load_s: f64,
    pub features: Features,
    pub skipped: Skipped,
    pub digests: CellDigests,
    pub summary: TrainSummary,
    pub train_s: f64,
}

pub(super) enum Outcome {
    Host(Box<HostOutcome>),
    Meta(Box<MetaOutcome>),
}

impl Outcome {
    /// Fills `record`'s findings (its status, error and total time are the caller's).
    pub(super) fn write_into(self, record: &mut Record) {
        match self {
            Outcome::Host(h) => {
                record.timings.load_s = h.load_s;
                let mut skipped = Skipped::default();
                let h = *h;
                let mut digests = h.digests;
                if let Some(t) = h.train {
                    record.fewshot = Some(t.fewshot);
                    record.train = Some(t.summary);
                    record.timings.train_s = t.seconds;
                    digests.meta = t.meta;
                    skipped = t.skipped;
                }
                let e = h.eval;
                record.digests = digests;
                record.metrics = Some(e.metrics);
                record.per_class = e.per_class;
                record.features = Some(e.features.origin);
                record.timings.features_s = e.features.compute_s;
                record.timings.eval_s = e.seconds;
                record.skipped_images = skipped.then(e.skipped).0;
            }
            Outcome::Meta(m) => {
                let m = *m;
                record.timings.load_s = m.load_s;
                record.features = Some(m.features.origin);
                record.timings.features_s = m.features.compute_s;
                record.skipped_images = m.skipped.0;
                record.digests = m.digests;
                record.train = Some(m.summary);
                record.timings.train_s = m.train_s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(p: &str) -> BadImage {
        BadImage {
            path: p.into(),
            error: format!("{p}: does not decode"),
        }
    }

    #[test]
    fn skipped_images_keep_their_first_order_and_appear_once() {
        let mut a = Skipped::default();
        a.add(vec![bad("x"), bad("y"), bad("x")]);
        let mut b = Skipped::default();
        b.add(vec![bad("z"), bad("y")]);
        let all = a.then(b);
        assert_eq!(all.0, vec![bad("x"), bad("y"), bad("z")]);
        assert_eq!(
            all.explain(),
            " (3 image(s) left out by on_corrupt = \"skip\"; the first: x: does not decode)"
        );
        assert_eq!(Skipped::default().explain(), "");
    }
}
