//! Meta-training episodes from the clustered corpus (reconstruction \[U\]): an N-way K-shot support
//! set from the classes of one domain and a query set shifted in domain. The declared rule
//! (`query = "nearest-class-other-domain"`): another domain is drawn, each support class is matched
//! to a distinct class there by the cosine of their class-name (caption) features, greedily from
//! the most similar pair, and that class's items are the query for the support class's label — the
//! same concept seen in another domain. `"same-domain"` (the ablation without a shift) draws the
//! query from the support classes' remaining items.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Hierarchy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryRule {
    NearestClassOtherDomain,
    SameDomain,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeConfig {
    pub ways: usize,
    pub shots: usize,
    /// Query items per class (at most; fewer when a class has fewer).
    pub queries: usize,
    pub query: QueryRule,
}

/// One task: items are corpus indices, labels are 0..ways in the order of `classes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub domain: usize,
    pub classes: Vec<usize>,
    pub support: Vec<(usize, usize)>,
    pub query_domain: usize,
    pub query: Vec<(usize, usize)>,
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-12)
}

/// Draws episodes from one hierarchy; each class's items are listed once, not per episode (a
/// 1M-pair corpus has thousands of classes).
pub(crate) struct EpisodeSampler<'a> {
    h: &'a Hierarchy,
    class_text: &'a [Vec<f32>],
    items: Vec<Vec<usize>>,
}

impl<'a> EpisodeSampler<'a> {
    /// `class_text[c]` is class c's name feature.
    pub fn new(h: &'a Hierarchy, class_text: &'a [Vec<f32>]) -> Self {
        let mut items = vec![Vec::new(); h.class_domain.len()];
        for (i, &c) in h.class.iter().enumerate() {
            items[c].push(i);
        }
        Self { h, class_text, items }
    }

    /// One episode, or `None` when no domain has enough classes with enough items (or, for a
    /// shifted query, no second domain has enough classes).
    pub fn sample(&self, cfg: &EpisodeConfig, rng: &mut impl Rng) -> Option<Episode> {
        let (h, class_text, items) = (self.h, self.class_text, &self.items);
        let n_classes = h.class_domain.len();
        let need = match cfg.query {
            QueryRule::SameDomain => cfg.shots + 1,
            QueryRule::NearestClassOtherDomain => cfg.shots,
        };
        let n_domains = h.class_domain.iter().copied().max().map_or(0, |m| m + 1);
        let eligible = |d: usize, min: usize| -> Vec<usize> {
            (0..n_classes)
                .filter(|&c| h.class_domain[c] == d && items[c].len() >= min)
                .collect()
        };
        let domains: Vec<usize> = (0..n_domains)
            .filter(|&d| eligible(d, need).len() >= cfg.ways)
            .collect();
        let &domain = domains.choose(rng)?;
        let mut classes = eligible(domain, need);
        classes.shuffle(rng);
        classes.truncate(cfg.ways);
        let mut support = Vec::new();
        let mut rest: Vec<Vec<usize>> = Vec::new();
        for (label, &c) in classes.iter().enumerate() {
            let mut it = items[c].clone();
            it.shuffle(rng);
            support.extend(it[..cfg.shots].iter().map(|&i| (i, label)));
            rest.push(it[cfg.shots..].to_vec());
        }
        let (query_domain, query) = match cfg.query {
            QueryRule::SameDomain => (
                domain,
                rest.iter()
                    .enumerate()
                    .flat_map(|(label, r)| r.iter().take(cfg.queries).map(move |&i| (i, label)))
                    .collect(),
            ),
            QueryRule::NearestClassOtherDomain => {
                let others: Vec<usize> = (0..n_domains)
                    .filter(|&d| d != domain && eligible(d, 1).len() >= cfg.ways)
                    .collect();
                let &qd = others.choose(rng)?;
                let cands = eligible(qd, 1);
                // Greedy one-to-one matching, most similar pair first.
                let mut pairs: Vec<(f32, usize, usize)> = classes
                    .iter()
                    .enumerate()
                    .flat_map(|(l, &c)| cands.iter().map(move |&q| (cos(&class_text[c], &class_text[q]), l, q)))
                    .collect();
                pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
                let mut matched: Vec<Option<usize>> = vec![None; classes.len()];
                let mut used = Vec::new();
                for (_, l, q) in pairs {
                    if matched[l].is_none() && !used.contains(&q) {
                        matched[l] = Some(q);
                        used.push(q);
                    }
                }
                let mut query = Vec::new();
                for (label, q) in matched.iter().enumerate() {
                    let mut it = items[q.expect("enough candidate classes")].clone();
                    it.shuffle(rng);
                    query.extend(it.into_iter().take(cfg.queries).map(|i| (i, label)));
                }
                (qd, query)
            }
        };
        Some(Episode {
            domain,
            classes,
            support,
            query_domain,
            query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One episode from a sampler built for this call.
    fn sample_episode(
        h: &Hierarchy,
        class_text: &[Vec<f32>],
        cfg: &EpisodeConfig,
        rng: &mut impl Rng,
    ) -> Option<Episode> {
        EpisodeSampler::new(h, class_text).sample(cfg, rng)
    }
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// 2 domains × 3 classes × 6 items; class c in domain 1 shares its name feature's direction
    /// with class c − 3 in domain 0 (the same concept in another domain).
    fn world() -> (Hierarchy, Vec<Vec<f32>>) {
        let mut domain = Vec::new();
        let mut class = Vec::new();
        for c in 0..6 {
            for _ in 0..6 {
                domain.push(c / 3);
                class.push(c);
            }
        }
        let text = (0..6)
            .map(|c| {
                let mut v = vec![0.05f32; 4];
                v[c % 3] = 1.0;
                v[3] = (c / 3) as f32 * 0.3;
                v
            })
            .collect();
        let h = Hierarchy {
            domain,
            class,
            class_domain: vec![0, 0, 0, 1, 1, 1],
            class_caption: vec![0, 6, 12, 18, 24, 30],
        };
        (h, text)
    }

    #[test]
    fn shifted_queries_come_from_the_matching_classes_of_another_domain() {
        let (h, text) = world();
        let cfg = EpisodeConfig {
            ways: 2,
            shots: 2,
            queries: 3,
            query: QueryRule::NearestClassOtherDomain,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let e = sample_episode(&h, &text, &cfg, &mut rng).unwrap();
            assert_ne!(e.domain, e.query_domain);
            assert_eq!(e.support.len(), 4);
            assert_eq!(e.query.len(), 6);
            for &(i, l) in &e.support {
                assert_eq!(h.class[i], e.classes[l]);
                assert_eq!(h.domain[i], e.domain);
            }
            for &(i, l) in &e.query {
                assert_eq!(h.domain[i], e.query_domain);
                // The same concept: class c ↔ c ± 3.
                assert_eq!(h.class[i] % 3, e.classes[l] % 3);
            }
        }
        let a = sample_episode(&h, &text, &cfg, &mut ChaCha8Rng::seed_from_u64(5));
        assert_eq!(a, sample_episode(&h, &text, &cfg, &mut ChaCha8Rng::seed_from_u64(5)));
    }

    #[test]
    fn same_domain_queries_are_the_support_classes_other_items() {
        let (h, text) = world();
        let cfg = EpisodeConfig {
            ways: 3,
            shots: 4,
            queries: 5,
            query: QueryRule::SameDomain,
        };
        let e = sample_episode(&h, &text, &cfg, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        assert_eq!(e.domain, e.query_domain);
        assert_eq!(e.query.len(), 3 * 2, "6 items per class, 4 in support");
        for &(i, l) in &e.query {
            assert_eq!(h.class[i], e.classes[l]);
            assert!(!e.support.iter().any(|&(j, _)| j == i));
        }
        // Too many ways for any domain: no episode.
        let big = EpisodeConfig { ways: 4, ..cfg };
        assert!(sample_episode(&h, &text, &big, &mut ChaCha8Rng::seed_from_u64(2)).is_none());
    }
}
