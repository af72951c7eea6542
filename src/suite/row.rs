//! What one number of a report is. Every table, baseline, pairing, comparison and finding term
//! matches rows on this identity; files spell it as six flat fields (`protocol`, `method`,
//! `dataset`, `source`, `shots`, `metric`), with `average` for the mean over a table's datasets and
//! an empty `source` for rows that are not transfer targets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Metric, Protocol, Scope};

/// The identity of one report row (seeds pooled).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RowId {
    pub protocol: Protocol,
    pub method: String,
    /// A dataset (a transfer table's target, or its source on the source's own row), or the average.
    pub dataset: Scope,
    /// The source dataset of a transfer target's row; None on every other row.
    #[serde(serialize_with = "source_out", deserialize_with = "source_in")]
    pub source: Option<String>,
    pub shots: usize,
    pub metric: Metric,
}

impl RowId {
    /// Whether this row counts in its table's average (transfer tables average their targets).
    pub fn averaged(&self) -> bool {
        self.protocol.averaged(self.source.as_deref())
    }

    /// The same row under another metric.
    pub fn with_metric(&self, metric: Metric) -> RowId {
        RowId { metric, ..self.clone() }
    }

    /// The dataset as a table names it: `source → target` for transfer targets.
    pub fn dataset_label(&self) -> String {
        match &self.source {
            Some(s) => format!("{s} → {}", self.dataset),
            None => self.dataset.to_string(),
        }
    }
}

/// Files write no source as "" (the form saved baselines and aggregates have always had).
fn source_out<S: Serializer>(source: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(source.as_deref().unwrap_or(""))
}

fn source_in<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then_some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(dataset: Scope, source: Option<&str>) -> RowId {
        RowId {
            protocol: Protocol::CrossDomain,
            method: "coop".into(),
            dataset,
            source: source.map(str::to_string),
            shots: 16,
            metric: Metric::Accuracy,
        }
    }

    #[test]
    fn files_spell_the_average_and_no_source_as_they_always_have() {
        for r in [
            id(Scope::Average, Some("world")),
            id(Scope::Dataset("world".into()), None),
            id(Scope::Dataset("sketch".into()), Some("world")),
        ] {
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["dataset"], r.dataset.as_str());
            assert_eq!(json["source"], r.source.as_deref().unwrap_or(""));
            assert_eq!(serde_json::from_value::<RowId>(json).unwrap(), r);
        }
        let avg = serde_json::to_string(&id(Scope::Average, Some("world"))).unwrap();
        assert_eq!(
            avg,
            r#"{"protocol":"cross-domain","method":"coop","dataset":"average","source":"world","shots":16,"metric":"accuracy"}"#
        );
    }

    #[test]
    fn transfer_rows_average_their_targets_only() {
        assert!(id(Scope::Dataset("sketch".into()), Some("world")).averaged());
        assert!(!id(Scope::Dataset("world".into()), None).averaged());
    }

    #[test]
    fn rows_order_as_their_names_did() {
        let (a, w) = (Scope::Average, Scope::Dataset("world".into()));
        assert!(a < w && Scope::Dataset("apple".into()) < a);
    }
}
