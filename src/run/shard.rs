//! `run --shard I/N`: a deterministic partition of a suite's cells, so any launcher (a loop over
//! GPUs, a cluster's job array) can split a suite. A cell's owner is decided by its *unit*: an eval
//! cell goes with the train (or checkpoint) cell whose prompt it tests — evaluations are cheap and
//! need that cell's artifact — and every other cell is its own unit. The unit's key is a SHA-256
//! prefix, so its first 8 hex digits modulo N spread units evenly and the same on every machine.

use crate::suite::cells::{Cell, Phase};

/// Shard `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard {s}: expected I/N with 1 <= I <= N (e.g. 2/8)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The shard (1-based) of `count` that owns `cell`.
    pub(crate) fn owner(cell: &Cell, count: usize) -> usize {
        let unit = match (cell.spec.phase, cell.depends_on.as_deref()) {
            (Phase::Eval, Some(dep)) => dep,
            _ => cell.key.as_str(),
        };
        // Keys are hex digests (`cells::cell_key`: a SHA-256 prefix), so their digits are uniform.
        let h = u64::from_str_radix(&unit[..8], 16).expect("a cell key is hex digits");
        (h % count as u64) as usize + 1
    }

    pub fn owns(&self, cell: &Cell) -> bool {
        Self::owner(cell, self.count) == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_is_not_one() {
        assert_eq!("2/8".parse::<Shard>(), Ok(Shard { index: 2, count: 8 }));
        for bad in ["0/4", "5/4", "1/0", "3", "a/b", "1/2/3"] {
            assert!(bad.parse::<Shard>().unwrap_err().contains("expected I/N"), "{bad}");
        }
    }
}
