//! The evaluation protocols of the paper tables, and every rule that depends on one: which fields
//! an experiment needs, which classes a train cell learns, which evaluations follow it and where
//! their numbers go (metric, dataset, source), which rows a table's average covers, and which
//! metrics derive from others (base-to-new's harmonic mean). A new protocol is one variant here
//! and its arms in this file.

use serde::{Deserialize, Serialize};

use crate::data::Subsample;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Train and test on all classes of each dataset with K shots per class.
    FewShot,
    /// Train on the base half of the classes, test on base and on new.
    BaseToNew,
    /// Train on a source dataset, test on other datasets' label spaces.
    CrossDataset,
    /// Train on a source dataset, test on its domain-shifted variants.
    CrossDomain,
}

/// What a number is: top-1 accuracy, or base-to-new's base / new accuracy and their harmonic mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Accuracy,
    Base,
    New,
    Hm,
}

impl Metric {
    pub(crate) const ALL: [Metric; 4] = [Metric::Accuracy, Metric::Base, Metric::New, Metric::Hm];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Base => "base",
            Metric::New => "new",
            Metric::Hm => "hm",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One number a trained cell leads to: measured by the train cell itself (`target` None) or by an
/// eval cell on `target`'s `classes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The dataset tested (None: the train cell's own test split and classes).
    pub target: Option<(String, Subsample)>,
    /// The dataset the number is reported under.
    pub dataset: String,
    pub metric: Metric,
    /// Transfer rows: the source dataset.
    pub source: Option<String>,
}

/// The datasets one number of a table covers: one dataset, or the table's average over its
/// datasets (over the targets only, for transfer tables). Files and suites spell the average
/// `average`, which is why no dataset may take that name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Dataset(String),
    Average,
}

impl Scope {
    /// How files and suites spell the average.
    pub(crate) const AVERAGE: &'static str = "average";

    pub fn as_str(&self) -> &str {
        match self {
            Scope::Dataset(d) => d,
            Scope::Average => Scope::AVERAGE,
        }
    }

    /// The scope a file or suite names.
    pub fn parse(s: &str) -> Scope {
        if s == Scope::AVERAGE {
            Scope::Average
        } else {
            Scope::Dataset(s.to_string())
        }
    }

    /// The dataset, unless this is the average.
    pub fn dataset(&self) -> Option<&str> {
        match self {
            Scope::Dataset(d) => Some(d),
            Scope::Average => None,
        }
    }

    pub fn is_average(&self) -> bool {
        matches!(self, Scope::Average)
    }
}

/// Ordered by name, so every table keeps the order its rows had when the average was a name.
impl Ord for Scope {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Scope {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Scope {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Scope {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom("a dataset name is empty"));
        }
        Ok(Scope::parse(&s))
    }
}

/// A base/new harmonic mean (0 when both are 0).
pub(crate) fn harmonic_mean(base: f64, new: f64) -> f64 {
    if base + new == 0.0 {
        0.0
    } else {
        2.0 * base * new / (base + new)
    }
}

/// A derived metric, the two it is computed from, and the rule.
pub(crate) type Derivation = (Metric, [Metric; 2], fn(f64, f64) -> f64);

impl Protocol {
    pub(crate) const ALL: [Protocol; 4] = [
        Protocol::FewShot,
        Protocol::BaseToNew,
        Protocol::CrossDataset,
        Protocol::CrossDomain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::FewShot => "few-shot",
            Protocol::BaseToNew => "base-to-new",
            Protocol::CrossDataset => "cross-dataset",
            Protocol::CrossDomain => "cross-domain",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Train on one source, test on targets.
    pub(crate) fn transfer(self) -> bool {
        matches!(self, Protocol::CrossDataset | Protocol::CrossDomain)
    }

    /// An experiment's fields as this protocol needs them (`datasets`, `targets`).
    pub(crate) fn check_fields(self, datasets: &[String], targets: &[String]) -> std::result::Result<(), String> {
        if self.transfer() {
            if datasets.len() != 1 || targets.is_empty() {
                return Err("needs exactly one source in `datasets` and at least one `targets`".into());
            }
        } else if !targets.is_empty() {
            return Err("`targets` belongs to cross-dataset and cross-domain only".into());
        }
        Ok(())
    }

    /// The classes a train cell learns.
    pub(crate) fn train_classes(self) -> Subsample {
        match self {
            Protocol::BaseToNew => Subsample::Base,
            _ => Subsample::All,
        }
    }

    /// The numbers a train cell on `dataset` leads to, in report order.
    pub fn evaluations(self, dataset: &str, targets: &[String]) -> Vec<Evaluation> {
        let own = |metric| Evaluation {
            target: None,
            dataset: dataset.to_string(),
            metric,
            source: None,
        };
        match self {
            Protocol::FewShot => vec![own(Metric::Accuracy)],
            Protocol::BaseToNew => vec![
                own(Metric::Base),
                Evaluation {
                    target: Some((dataset.to_string(), Subsample::New)),
                    ..own(Metric::New)
                },
            ],
            Protocol::CrossDataset | Protocol::CrossDomain => std::iter::once(own(Metric::Accuracy))
                .chain(targets.iter().map(|t| Evaluation {
                    target: Some((t.clone(), Subsample::All)),
                    dataset: t.clone(),
                    metric: Metric::Accuracy,
                    source: Some(dataset.to_string()),
                }))
                .collect(),
        }
    }

    /// Whether a row (with `source`, None for non-transfer rows) counts in its table's average:
    /// transfer tables average their targets only (the source row is reported on its own).
    pub fn averaged(self, source: Option<&str>) -> bool {
        !self.transfer() || source.is_some()
    }

    /// A metric derived from two others of the same row, and how: base-to-new's harmonic mean.
    pub fn derived(self) -> Option<Derivation> {
        match self {
            Protocol::BaseToNew => Some((Metric::Hm, [Metric::Base, Metric::New], harmonic_mean)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.as_str()), Some(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
    }

    #[test]
    fn transfer_tables_average_targets_and_need_one_source() {
        let t = vec!["b".to_string()];
        assert!(Protocol::CrossDomain.check_fields(&["a".into()], &t).is_ok());
        assert!(Protocol::CrossDomain
            .check_fields(&["a".into(), "c".into()], &t)
            .is_err());
        assert!(Protocol::FewShot.check_fields(&["a".into()], &t).is_err());
        assert!(!Protocol::CrossDataset.averaged(None) && Protocol::CrossDataset.averaged(Some("a")));
        assert!(Protocol::BaseToNew.averaged(None));
        let e = Protocol::CrossDataset.evaluations("a", &t);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].source.as_deref(), Some("a"));
        assert_eq!(e[1].target, Some(("b".to_string(), Subsample::All)));
    }

    #[test]
    fn base_to_new_derives_the_harmonic_mean() {
        let (m, from, f) = Protocol::BaseToNew.derived().unwrap();
        assert_eq!((m, from), (Metric::Hm, [Metric::Base, Metric::New]));
        assert!((f(80.0, 60.0) - 68.571_428_571).abs() < 1e-6);
        assert_eq!(f(0.0, 0.0), 0.0);
        assert!(Protocol::FewShot.derived().is_none());
    }
}
