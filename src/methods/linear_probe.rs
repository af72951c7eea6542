//! Linear-probe CLIP (the few-shot tables' baseline, CoOp's `lpclip`): multinomial logistic
//! regression on the frozen image features of the K-shot training images (eval transform, no
//! augmentation), with sklearn's objective `C · Σ CE + ½‖W‖²` (bias unpenalized) minimized by
//! L-BFGS, and `C` chosen on the few-shot validation images: a coarse grid, then a bisection in log
//! space around the best, as CoOp's `linear_probe.py` searches it.

use burn::tensor::activation::softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::spec::{BuildInputs, EncoderUse, MethodSpec, Training};
use super::{Builder, ClassSet, FeatureFit, PromptArtifact, Scorer};
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearProbeConfig {
    /// Initial grid of inverse regularization strengths C (CoOp: 1e6, 1e4, …, 1e-6).
    pub c_grid: Vec<f64>,
    /// Refinement steps after the grid, as CoOp's `lpclip/linear_probe.py` takes them: the bracket
    /// starts at [C*/10, 10·C*] around the best grid value C*; each step fits both ends, the better
    /// one (the left on a tie) is the step's C, and the bracket halves towards it in log10(C). The
    /// last step's C is kept (0 steps: C*).
    pub c_search_steps: usize,
    /// L-BFGS iterations per fit (sklearn's `max_iter`, 1000 in CoOp's script).
    pub max_iter: usize,
    /// Stop when the largest gradient component is below this (sklearn's `tol`, 1e-4).
    pub tol: f64,
    /// L2-normalize the image features before the regression.
    pub normalize_features: bool,
}

impl MethodSpec for LinearProbeConfig {
    const PAPER_NAME: &'static str = "LinearProbe";
    const ENCODERS: EncoderUse = EncoderUse::FROZEN;
    // It scores only the classes it was fitted on.
    const OPEN_VOCABULARY: bool = false;

    fn validate(&self) -> std::result::Result<(), String> {
        if self.c_grid.is_empty() || self.c_grid.iter().any(|c| c.is_nan() || *c <= 0.0) {
            return Err("c_grid must list positive values".into());
        }
        if self.max_iter == 0 || self.tol.is_nan() || self.tol <= 0.0 {
            return Err("max_iter and tol must be positive".into());
        }
        Ok(())
    }

    fn training(&self) -> Training<'_> {
        Training::Features
    }

    fn build<B: AutodiffBackend, V: Builder<B>>(&self, i: &BuildInputs<B>, to: V) -> Result<V::Out> {
        Ok(to.features(Box::new(LinearProbe::new(self.clone(), i.classnames))))
    }
}

/// Features and labels on the host.
pub struct Labelled {
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    pub dim: usize,
}

/// Objective and gradient of `C · Σ CE(xW + b) + ½‖W‖²`, divided by N·C for conditioning (the same
/// minimizer), with `w = [W (dim × k) ‖ b (k)]` flattened.
fn objective<B: Backend>(
    x: &Tensor<B, 2>,
    y: &Tensor<B, 2>,
    w: &[f32],
    dim: usize,
    k: usize,
    c: f64,
) -> (f64, Vec<f32>) {
    let device = x.device();
    let n = x.dims()[0] as f64;
    let wm = Tensor::<B, 2>::from_data(TensorData::new(w[..dim * k].to_vec(), [dim, k]), (&device, DType::F32));
    let b = Tensor::<B, 1>::from_data(TensorData::new(w[dim * k..].to_vec(), [k]), (&device, DType::F32));
    let logits = x.clone().matmul(wm.clone()) + b.unsqueeze::<2>();
    let p = softmax(logits.clone(), 1);
    // CE via log-sum-exp of the logits, stable.
    let max = logits.clone().max_dim(1);
    let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max;
    // Summed on the host in f64: the line search compares objective values whose differences near
    // the optimum are below f32 resolution.
    let per = (lse - (logits * y.clone()).sum_dim(1)).into_data().convert::<f32>();
    let ce: f64 = per.to_vec::<f32>().expect("f32").iter().map(|&v| v as f64).sum();
    let reg: f64 = w[..dim * k].iter().map(|&v| v as f64 * v as f64).sum();
    let f = ce / n + reg / (2.0 * c * n);
    let d = p - y.clone(); // [n, k]
    let gw = x.clone().transpose().matmul(d.clone()).div_scalar(n) + wm.div_scalar(c * n);
    let gb = d.sum_dim(0).div_scalar(n).reshape([k]);
    let mut g = gw.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    g.extend(gb.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
    (f, g)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// The probe's weights at a fixed C: L-BFGS (10 corrections, backtracking Armijo line search)
/// from zero weights. Always in f32, whatever the cell's precision: upstream fits the probe with
/// scikit-learn in f64 on the features of its fp16 CLIP.
pub fn fit<B: Backend>(data: &Labelled, k: usize, c: f64, cfg: &LinearProbeConfig, device: &B::Device) -> Vec<f32> {
    let n = data.y.len();
    let x = Tensor::<B, 2>::from_data(TensorData::new(data.x.clone(), [n, data.dim]), (device, DType::F32));
    let labels = Tensor::<B, 1, Int>::from_data(
        TensorData::new(data.y.iter().map(|&l| l as i64).collect::<Vec<_>>(), [n]),
        device,
    );
    let y = labels.one_hot(k).float().cast(DType::F32);
    let mut w = vec![0.0f32; data.dim * k + k];
    let (mut f, mut g) = objective(&x, &y, &w, data.dim, k, c);
    let mut hist: Vec<(Vec<f32>, Vec<f32>, f64)> = Vec::new();
    for _ in 0..cfg.max_iter {
        if g.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 <= cfg.tol {
            break;
        }
        // Two-loop recursion: d = −H·g.
        let mut q: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * s.iter().zip(&q).map(|(a, b)| *a as f64 * b).sum::<f64>();
            for (qi, yi) in q.iter_mut().zip(yv) {
                *qi -= a * *yi as f64;
            }
            alphas.push(a);
        }
        if let Some((s, yv, _)) = hist.last() {
            let gamma = dot(s, yv) / dot(yv, yv);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let bta = rho * yv.iter().zip(&q).map(|(a, b)| *a as f64 * b).sum::<f64>();
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - bta) * *si as f64;
            }
        }
        let d: Vec<f64> = q.iter().map(|v| -v).collect();
        let gd: f64 = g.iter().zip(&d).map(|(a, b)| *a as f64 * b).sum();
        let d = if gd < 0.0 {
            d
        } else {
            g.iter().map(|&v| -(v as f64)).collect()
        };
        let gd: f64 = g.iter().zip(&d).map(|(a, b)| *a as f64 * b).sum();
        let mut step = 1.0;
        let (w_new, f_new, g_new) = loop {
            let cand: Vec<f32> = w.iter().zip(&d).map(|(a, b)| (*a as f64 + step * b) as f32).collect();
            let (fc, gc) = objective(&x, &y, &cand, data.dim, k, c);
            if fc <= f + 1e-4 * step * gd || step < 1e-10 {
                break (cand, fc, gc);
            }
            step *= 0.5;
        };
        let s: Vec<f32> = w_new.iter().zip(&w).map(|(a, b)| a - b).collect();
        let yv: Vec<f32> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            hist.push((s, yv, 1.0 / sy));
            if hist.len() > 10 {
                hist.remove(0);
            }
        }
        // No decrease left at f32 precision: the line search found nothing better.
        let done = f_new >= f;
        w = w_new;
        f = f_new;
        g = g_new;
        if done {
            break;
        }
    }
    w
}

fn accuracy(w: &[f32], data: &Labelled, k: usize) -> f64 {
    let dim = data.dim;
    let correct = data
        .y
        .iter()
        .enumerate()
        .filter(|(i, &label)| {
            let xi = &data.x[i * dim..(i + 1) * dim];
            let score = |c: usize| -> f64 {
                (0..dim).map(|j| xi[j] as f64 * w[j * k + c] as f64).sum::<f64>() + w[dim * k + c] as f64
            };
            let best = (0..k).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0);
            best == label
        })
        .count();
    correct as f64 / data.y.len().max(1) as f64
}

/// What a linear-probe fit chose, as its record keeps it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearProbeFit {
    /// The inverse regularization strength chosen on the validation images.
    pub c: f64,
    pub train_images: usize,
    pub val_images: usize,
}

/// The chosen C and the weights fitted with it (see [`choose_c`]).
pub(crate) fn search<B: Backend>(
    train: &Labelled,
    val: &Labelled,
    k: usize,
    cfg: &LinearProbeConfig,
    device: &B::Device,
) -> (f64, Vec<f32>) {
    choose_c(&cfg.c_grid, cfg.c_search_steps, |c| {
        let w = fit::<B>(train, k, c, cfg, device);
        let acc = if val.y.is_empty() { 0.0 } else { accuracy(&w, val, k) };
        (acc, w)
    })
}

/// CoOp's `lpclip/linear_probe.py` C selection over `eval(C) = (validation accuracy, fit)`: the
/// grid value with the best accuracy (ties: the first, as `np.argmax`), then `steps` refinement
/// steps — the bracket starts at [C*/10, 10·C*]; each step evaluates both ends, the better (the
/// left on a tie) is the step's C, and the bracket halves towards it in log10(C). The last step's
/// C and fit are kept.
pub(crate) fn choose_c<T>(grid: &[f64], steps: usize, mut eval: impl FnMut(f64) -> (f64, T)) -> (f64, T) {
    let mut chosen = grid
        .iter()
        .map(|&c| {
            let (acc, fit) = eval(c);
            (acc, c, fit)
        })
        .reduce(|best, x| if x.0 > best.0 { x } else { best })
        .expect("validated: the grid is not empty");
    let peak = chosen.1.log10();
    let (mut lo, mut hi) = (peak - 1.0, peak + 1.0);
    for _ in 0..steps {
        let (cl, cr) = (10f64.powf(lo), 10f64.powf(hi));
        let (left, right) = (eval(cl), eval(cr));
        let mid = 0.5 * (lo + hi);
        if left.0 < right.0 {
            chosen = (right.0, cr, right.1);
            lo = mid;
        } else {
            chosen = (left.0, cl, left.1);
            hi = mid;
        }
    }
    (chosen.1, chosen.2)
}

pub struct LinearProbe {
    config: LinearProbeConfig,
    classnames: Vec<String>,
    /// `[dim × k ‖ k]` once fitted (or loaded).
    weights: Option<(usize, Vec<f32>)>,
}

impl LinearProbe {
    pub fn new(config: LinearProbeConfig, classnames: &[String]) -> Self {
        Self {
            config,
            classnames: classnames.to_vec(),
            weights: None,
        }
    }

    fn prepare(&self, mut f: Vec<f32>, dim: usize) -> Vec<f32> {
        if self.config.normalize_features {
            for row in f.chunks_mut(dim) {
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|v| *v /= n);
            }
        }
        f
    }
}

impl<B: Backend> FeatureFit<B> for LinearProbe {
    fn fit(&mut self, train: Labelled, val: Labelled, device: &B::Device) -> Result<LinearProbeFit> {
        let k = self.classnames.len();
        let dim = train.dim;
        let train = Labelled {
            x: self.prepare(train.x, dim),
            ..train
        };
        let val = Labelled {
            x: self.prepare(val.x, dim),
            ..val
        };
        let (c, w) = search::<B>(&train, &val, k, &self.config, device);
        self.weights = Some((dim, w));
        Ok(LinearProbeFit {
            c,
            train_images: train.y.len(),
            val_images: val.y.len(),
        })
    }

    fn scorer(&self, classes: &ClassSet, device: &B::Device) -> Result<Scorer<B>> {
        if classes.names != self.classnames.as_slice() {
            return Err(Error::Config(
                "a linear probe scores only the classes it was trained on (no base-to-new or transfer to other classes)"
                    .into(),
            ));
        }
        let (dim, w) = self
            .weights
            .as_ref()
            .ok_or_else(|| Error::Internal("the linear probe has not been fitted".into()))?;
        let k = self.classnames.len();
        let f32 = (device, DType::F32);
        Ok(Scorer::Linear {
            weight: Tensor::<B, 2>::from_data(TensorData::new(w[..dim * k].to_vec(), [*dim, k]), f32),
            bias: Tensor::<B, 1>::from_data(TensorData::new(w[dim * k..].to_vec(), [k]), f32),
            normalize: self.config.normalize_features,
        })
    }

    fn artifact(&self) -> PromptArtifact {
        let mut a = PromptArtifact::new();
        if let Some((dim, w)) = &self.weights {
            let k = self.classnames.len();
            a.insert("weight".into(), (vec![*dim, k], w[..dim * k].to_vec()));
            a.insert("bias".into(), (vec![k], w[dim * k..].to_vec()));
        }
        a
    }

    fn load(&mut self, artifact: &PromptArtifact) -> Result<()> {
        let (Some((ws, w)), Some((_, b))) = (artifact.get("weight"), artifact.get("bias")) else {
            return Err(Error::Input("linear-probe artifact needs `weight` and `bias`".into()));
        };
        if ws.len() != 2 || ws[1] != self.classnames.len() {
            return Err(Error::Input(format!(
                "linear-probe weight {ws:?} does not fit {} classes",
                self.classnames.len()
            )));
        }
        let mut all = w.clone();
        all.extend(b);
        self.weights = Some((ws[0], all));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    #[test]
    fn lbfgs_separates_separable_classes_and_the_search_prefers_what_validates() {
        // Three Gaussian blobs in 4-D.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for c in 0..3usize {
            for i in 0..10 {
                let mut p = [0.0f32; 4];
                p[c] = 3.0;
                p[3] = ((i * 7 + c * 3) % 5) as f32 * 0.3 - 0.6;
                x.extend(p);
                y.push(c);
            }
        }
        let data = Labelled { x, y, dim: 4 };
        let cfg = LinearProbeConfig {
            c_grid: vec![1e4, 1.0, 1e-4],
            c_search_steps: 2,
            max_iter: 200,
            tol: 1e-5,
            normalize_features: false,
        };
        let dev = Default::default();
        let w = fit::<Cpu>(&data, 3, 1.0, &cfg, &dev);
        assert_eq!(accuracy(&w, &data, 3), 1.0);
        // The gradient at the solution is (near) zero.
        let xt = Tensor::<Cpu, 2>::from_data(TensorData::new(data.x.clone(), [30, 4]), &dev);
        let yt = Tensor::<Cpu, 1, Int>::from_data(
            TensorData::new(data.y.iter().map(|&l| l as i64).collect::<Vec<_>>(), [30]),
            &dev,
        )
        .one_hot(3)
        .float();
        let (_, g) = objective(&xt, &yt, &w, 4, 3, 1.0);
        assert!(g.iter().all(|v| v.abs() < 1e-4), "{g:?}");
        // Tiny C (strong regularization) cannot separate as well as C = 1 on these blobs.
        let (c, w) = search::<Cpu>(&data, &data, 3, &cfg, &dev);
        assert!(c >= 1e-2, "chose C = {c}");
        assert_eq!(accuracy(&w, &data, 3), 1.0);
    }

    #[test]
    fn c_is_chosen_as_lpclip_chooses_it_and_the_last_steps_c_is_kept() {
        // A validation accuracy that peaks at C = 10^2.3; the grid's best is 1e2.
        let acc = |c: f64| -(c.log10() - 2.3).powi(2);
        let grid = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6];
        let chosen = |steps| choose_c(&grid, steps, |c| (acc(c), c)).0.log10();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(chosen(0), 2.0));
        // Step 1: [1e1, 1e3], the right end wins; the bracket becomes [1e2, 1e3].
        assert!(close(chosen(1), 3.0));
        // Step 2: 1e2 beats 1e3; the bracket becomes [1e2, 10^2.5].
        assert!(close(chosen(2), 2.0));
        // Step 3: 10^2.5 beats 1e2: the last step's winner is kept.
        assert!(close(chosen(3), 2.5));
        // A tie keeps the left end (`acc_left < acc_right` is false).
        assert!(close(choose_c(&[1.0], 1, |_| (0.5, ())).0.log10(), -1.0));
        // The first of equal grid values wins, as np.argmax.
        assert_eq!(choose_c(&[1e4, 1.0], 0, |_| (0.5, ())).0, 1e4);
    }
}
