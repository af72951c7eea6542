//! `[[finding]]`: a robust result of the literature, declared as contrasts of the suite's own
//! numbers; `report::findings` judges them.

use serde::{Deserialize, Serialize};

use super::{Metric, Protocol, RowId, Scope};

/// `[[finding]]`: one claim of the literature and the contrasts that test it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// A short tag (`F1`), the report's row name.
    pub id: String,
    /// The claim, as the literature states it.
    pub claim: String,
    /// Where the literature states it (paper, figure or table).
    pub reference: String,
    /// What is known of this finding on this suite's data (e.g. why the embedded world does not
    /// show it, with the measurement that says so); printed under the Findings table. Never a
    /// verdict: verdicts are computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Every contrast must hold for the finding to hold.
    #[serde(rename = "contrast")]
    pub contrasts: Vec<Contrast>,
}

/// Σ `plus` − Σ `minus` per seed, expected to be on the `expect` side of 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contrast {
    pub label: String,
    pub expect: Sign,
    pub plus: Vec<Term>,
    pub minus: Vec<Term>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sign {
    Positive,
    Negative,
}

impl Sign {
    /// The expectation as reports write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sign::Positive => "> 0",
            Sign::Negative => "< 0",
        }
    }
}

/// One number of the suite per seed: the row a report table shows, before the mean over seeds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub protocol: Protocol,
    pub method: String,
    /// A dataset, or `average` (the table's mean over its datasets, targets only for transfer).
    pub dataset: Scope,
    /// Transfer tables: the source dataset (its own row names the source as `dataset` and has no
    /// `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub shots: usize,
    pub metric: Metric,
}

impl Term {
    /// The report row this term reads.
    pub fn id(&self) -> RowId {
        RowId {
            protocol: self.protocol,
            method: self.method.clone(),
            dataset: self.dataset.clone(),
            source: self.source.clone(),
            shots: self.shots,
            metric: self.metric,
        }
    }

    pub fn describe(&self) -> String {
        let from = self.source.as_ref().map(|s| format!(" from {s}")).unwrap_or_default();
        format!(
            "{} {} {}{from} {}-shot {}",
            self.protocol, self.method, self.dataset, self.shots, self.metric
        )
    }
}
