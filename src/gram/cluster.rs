//! Cross-modal hierarchical clustering of an image–text corpus into meta-training structure
//! (reconstruction \[U\]; docs/gram.md, "Choices the paper leaves open"): spherical k-means on the
//! caption features gives coarse groups ("domains"); inside each domain, spherical k-means on the
//! image features gives fine groups ("classes"); each class is named by the caption nearest its captions' mean
//! feature. All arithmetic runs on the burn backend (similarities as matmuls, row chunks bound
//! memory), so the same code serves a CPU or a GPU.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Rows per similarity block (rows × k floats at a time).
const CHUNK: usize = 8192;

/// The clustering's parameters (suite-visible).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub domains: usize,
    pub classes_per_domain: usize,
    /// Lloyd iterations of each k-means.
    pub iterations: usize,
    /// Which modality makes the domains and which the classes within them \[U\].
    pub order: ClusterOrder,
}

/// The cross-modal order of the two levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterOrder {
    /// Domains from caption features (what the data is about and how it is described), classes
    /// from image features within each domain: the reconstruction's default.
    CaptionsThenImages,
    /// Domains from image features (visual style), classes from caption features.
    ImagesThenCaptions,
}

fn normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let n = x.clone().powi_scalar(2).sum_dim(1).sqrt().add_scalar(1e-12);
    x / n
}

/// Best centroid (by cosine) of every row of unit-norm `x`, and that similarity.
fn assign<B: Backend>(x: &Tensor<B, 2>, centroids: &Tensor<B, 2>) -> (Vec<usize>, Vec<f32>) {
    let n = x.dims()[0];
    let (mut idx, mut sim) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for start in (0..n).step_by(CHUNK) {
        let len = CHUNK.min(n - start);
        let s = x.clone().narrow(0, start, len).matmul(centroids.clone().transpose());
        let best = s.clone().argmax(1);
        let val = s.gather(1, best.clone());
        idx.extend(
            best.into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .expect("i64")
                .into_iter()
                .map(|v| v as usize),
        );
        sim.extend(val.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
    }
    (idx, sim)
}

/// Spherical k-means of the rows of `x` (`[n, d]`): k-means++ seeding (by cosine distance),
/// `iterations` Lloyd steps; returns each row's cluster and the unit-norm centroids. `k` is capped
/// at `n`; an emptied cluster keeps its previous centroid.
pub(crate) fn kmeans<B: Backend>(
    x: Tensor<B, 2>,
    k: usize,
    iterations: usize,
    seed: u64,
) -> (Vec<usize>, Tensor<B, 2>) {
    let [n, d] = x.dims();
    let k = k.min(n).max(1);
    let device = x.device();
    let x = normalize(x);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // k-means++: the next centre is drawn with probability ∝ (1 − best cosine)²; the best cosine
    // of every row is updated against each new centre only (O(n·k·d) in all).
    let mut chosen = vec![rng.random_range(0..n)];
    let mut best = vec![f32::NEG_INFINITY; n];
    while chosen.len() < k {
        let last = *chosen.last().expect("non-empty");
        let (_, sim) = assign(&x, &x.clone().narrow(0, last, 1));
        for (b, s) in best.iter_mut().zip(sim) {
            *b = b.max(s);
        }
        let w: Vec<f64> = best.iter().map(|s| ((1.0 - *s as f64).max(0.0)).powi(2)).collect();
        let total: f64 = w.iter().sum();
        let next = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut r = rng.random::<f64>() * total;
            w.iter()
                .position(|wi| {
                    r -= wi;
                    r <= 0.0
                })
                .unwrap_or(n - 1)
        };
        chosen.push(next);
    }
    let idx = Tensor::<B, 1, Int>::from_data(
        TensorData::new(chosen.iter().map(|&i| i as i64).collect::<Vec<_>>(), [k]),
        &device,
    );
    let mut centroids = x.clone().select(0, idx);
    let mut labels = assign(&x, &centroids).0;
    for _ in 0..iterations {
        // Sums per cluster as one-hotᵀ · x, in row chunks.
        let mut sums = Tensor::<B, 2>::zeros([k, d], &device);
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let lab = Tensor::<B, 1, Int>::from_data(
                TensorData::new(
                    labels[start..start + len].iter().map(|&l| l as i64).collect::<Vec<_>>(),
                    [len],
                ),
                &device,
            );
            sums = sums
                + lab
                    .one_hot::<2>(k)
                    .float()
                    .transpose()
                    .matmul(x.clone().narrow(0, start, len));
        }
        let counts: Vec<usize> = (0..k).map(|c| labels.iter().filter(|&&l| l == c).count()).collect();
        let keep = Tensor::<B, 1>::from_data(
            TensorData::new(
                counts
                    .iter()
                    .map(|&c| if c == 0 { 1.0f32 } else { 0.0 })
                    .collect::<Vec<_>>(),
                [k],
            ),
            &device,
        )
        .unsqueeze_dim::<2>(1);
        // Empty clusters keep their centroid; the others move to their normalized mean.
        centroids = normalize(sums + centroids * keep);
        let next = assign(&x, &centroids).0;
        if next == labels {
            break;
        }
        labels = next;
    }
    (labels, centroids)
}

/// The corpus organised for meta-training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hierarchy {
    /// Each item's domain.
    pub domain: Vec<usize>,
    /// Each item's class (global id).
    pub class: Vec<usize>,
    /// Each class's domain.
    pub class_domain: Vec<usize>,
    /// Each class's name: the index of the caption nearest its captions' mean feature.
    pub class_caption: Vec<usize>,
}

/// Domains from one modality's features, classes within each domain from the other's (`order`;
/// both `[n, d]`, item i's caption and image in row i). Each class is named by a caption either way.
pub(crate) fn cross_modal_hierarchy<B: Backend>(
    text: Tensor<B, 2>,
    image: Tensor<B, 2>,
    cfg: &ClusterConfig,
    seed: u64,
) -> Hierarchy {
    let n = text.dims()[0];
    let device = text.device();
    let text = normalize(text);
    let (coarse, fine_features) = match cfg.order {
        ClusterOrder::CaptionsThenImages => (text.clone(), image),
        ClusterOrder::ImagesThenCaptions => (image, text.clone()),
    };
    let (domain, _) = kmeans(coarse, cfg.domains, cfg.iterations, seed);
    let mut class = vec![0usize; n];
    let (mut class_domain, mut class_caption) = (Vec::new(), Vec::new());
    let n_domains = domain.iter().copied().max().map_or(0, |m| m + 1);
    for dom in 0..n_domains {
        let members: Vec<usize> = (0..n).filter(|&i| domain[i] == dom).collect();
        if members.is_empty() {
            continue;
        }
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(members.iter().map(|&i| i as i64).collect::<Vec<_>>(), [members.len()]),
            &device,
        );
        let (fine, _) = kmeans(
            fine_features.clone().select(0, idx.clone()),
            cfg.classes_per_domain,
            cfg.iterations,
            seed ^ (dom as u64 + 1).wrapping_mul(0x9e37_79b9),
        );
        let k = fine.iter().copied().max().map_or(0, |m| m + 1);
        let t = text.clone().select(0, idx);
        for c in 0..k {
            let rows: Vec<usize> = (0..members.len()).filter(|&j| fine[j] == c).collect();
            if rows.is_empty() {
                continue;
            }
            let id = class_domain.len();
            for &j in &rows {
                class[members[j]] = id;
            }
            let ri = Tensor::<B, 1, Int>::from_data(
                TensorData::new(rows.iter().map(|&j| j as i64).collect::<Vec<_>>(), [rows.len()]),
                &device,
            );
            let tc = t.clone().select(0, ri);
            let mean = normalize(tc.clone().mean_dim(0));
            let (best, _) = assign(&mean, &tc);
            class_domain.push(dom);
            class_caption.push(members[rows[best[0]]]);
        }
    }
    Hierarchy {
        domain,
        class,
        class_domain,
        class_caption,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    /// Points near `centres[c]` with a little noise, `per` each.
    fn blobs(centres: &[Vec<f32>], per: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..per {
                x.extend(centre.iter().map(|v| v + noise * (rng.random::<f32>() - 0.5)));
                y.push(c);
            }
        }
        (x, y)
    }

    /// Whether two labelings are the same partition.
    fn same_partition(a: &[usize], b: &[usize]) -> bool {
        (0..a.len()).all(|i| (0..a.len()).all(|j| (a[i] == a[j]) == (b[i] == b[j])))
    }

    fn one_hot(d: usize, i: usize) -> Vec<f32> {
        (0..d).map(|j| if j == i { 1.0 } else { 0.0 }).collect()
    }

    #[test]
    fn kmeans_recovers_separated_directions_and_is_seeded() {
        let dev = Default::default();
        let centres: Vec<Vec<f32>> = (0..4).map(|i| one_hot(6, i)).collect();
        let (x, y) = blobs(&centres, 10, 0.2, 1);
        let t = || Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [40, 6]), &dev);
        let (a, c) = kmeans(t(), 4, 20, 3);
        assert!(same_partition(&a, &y));
        assert_eq!(c.dims(), [4, 6]);
        assert_eq!(kmeans(t(), 4, 20, 3).0, a, "same seed, same clustering");
    }

    /// Not a timing test: when asked, prints the cost of k-means and of the whole hierarchy at
    /// the scale a CPU should handle, 100k pairs (`cargo test --lib -- --ignored --nocapture
    /// kmeans_at_scale`; figures in docs/gram-runs.md, "The parts").
    #[test]
    #[ignore]
    fn kmeans_at_scale() {
        let dev = Default::default();
        let (n, d) = (100_000, 512);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect();
        let t = std::time::Instant::now();
        let (a, _) = kmeans(
            Tensor::<Cpu, 2>::from_data(TensorData::new(x, [n, d]), &dev),
            250,
            10,
            1,
        );
        eprintln!(
            "k-means, {n} × {d}, k = 250, 10 iterations: {:.1} s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(a.len(), n);
        // The whole cross-modal hierarchy at that size: 250 caption domains, 8 image classes each.
        let y: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect();
        let x: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect();
        let t = std::time::Instant::now();
        let h = cross_modal_hierarchy(
            Tensor::<Cpu, 2>::from_data(TensorData::new(x, [n, d]), &dev),
            Tensor::<Cpu, 2>::from_data(TensorData::new(y, [n, d]), &dev),
            &ClusterConfig {
                domains: 250,
                classes_per_domain: 8,
                iterations: 10,
                order: ClusterOrder::CaptionsThenImages,
            },
            1,
        );
        eprintln!(
            "cross-modal hierarchy, {n} pairs × {d}, 250 domains × 8 classes, 10 iterations: {:.1} s ({} classes)",
            t.elapsed().as_secs_f64(),
            h.class_domain.len()
        );
    }

    #[test]
    fn domains_come_from_captions_and_classes_from_images_within_them() {
        let dev = Default::default();
        // 2 domains (caption directions) × 3 classes (image directions), 5 items each; the image
        // classes repeat across domains, so only the caption side can separate the domains.
        let (d, per) = (8, 5);
        let mut text = Vec::new();
        let mut image = Vec::new();
        let (mut dom, mut cls) = (Vec::new(), Vec::new());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for g in 0..2 {
            for c in 0..3 {
                for _ in 0..per {
                    text.extend(one_hot(d, g).iter().map(|v| v + 0.1 * rng.random::<f32>()));
                    image.extend(one_hot(d, 2 + c).iter().map(|v| v + 0.1 * rng.random::<f32>()));
                    dom.push(g);
                    cls.push(g * 3 + c);
                }
            }
        }
        let n = dom.len();
        let t = |v: &Vec<f32>| Tensor::<Cpu, 2>::from_data(TensorData::new(v.clone(), [n, d]), &dev);
        let cfg = |order| ClusterConfig {
            domains: 2,
            classes_per_domain: 3,
            iterations: 20,
            order,
        };
        let h = cross_modal_hierarchy(t(&text), t(&image), &cfg(ClusterOrder::CaptionsThenImages), 4);
        assert!(same_partition(&h.domain, &dom));
        assert!(same_partition(&h.class, &cls));
        assert_eq!(h.class_domain.len(), 6);
        for (c, &cap) in h.class_caption.iter().enumerate() {
            assert_eq!(h.class[cap], c, "a class is named by one of its own captions");
            assert_eq!(h.domain[cap], h.class_domain[c]);
        }
        // The other order on the modalities swapped finds the same structure: the domains now
        // come from the image side.
        let h = cross_modal_hierarchy(t(&image), t(&text), &cfg(ClusterOrder::ImagesThenCaptions), 4);
        assert!(same_partition(&h.domain, &dom));
        assert!(same_partition(&h.class, &cls));
    }
}
