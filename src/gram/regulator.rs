//! GRAM's gradient regulating function ψ_φ, as the same group's public SUPMER code builds it
//! (`model/grad_trans.py`; reconstruction \[U\] for GRAM, see docs/gram.md):
//!
//! - each row `g_j` of a prompt gradient `[rows, d]` goes through `hidden_layers + 1` low-rank
//!   layers `x ← ReLU(x Vᵀ Uᵀ + b)` (U ∈ R^{d×r}, V ∈ R^{r×d}, b = 0 at init);
//! - each output row is rescaled to its input row's norm (`x_j ← x_j/(‖x_j‖+ε)·(‖g_j‖+ε)`);
//! - a mixing coefficient `c = σ(W2·ReLU(W1·e + b1) + b2)` from a task embedding `e`;
//! - `ψ(g) = (1 − c)·x + c·g`.

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

const EPS: f64 = 1e-8;

/// How ψ_φ's low-rank factors start (SUPMER: `xavier` = xavier-uniform with ReLU gain for U and gain
/// 1 for V; `randn` = standard normal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegulatorInit {
    Xavier,
    Randn,
}

/// ψ_φ's sizes, all suite parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegulatorConfig {
    /// Rank r of each low-rank layer; a rank above the gradient's width is the width (SUPMER's
    /// `LRLinear`: `mid_dim = min(rank, in_features)`).
    pub rank: usize,
    /// Low-rank layers beyond the first (SUPMER's `n_hidden`).
    pub hidden_layers: usize,
    /// Width of the coefficient net's hidden layer (24 in SUPMER).
    pub coef_hidden: usize,
    pub init: RegulatorInit,
}

impl RegulatorConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.rank == 0 || self.coef_hidden == 0 {
            return Err("regulator: rank and coef_hidden must be positive".into());
        }
        Ok(())
    }

    /// ψ_φ for gradients `d` wide and task embeddings `e` wide, seeded on the host.
    pub fn init<B: Backend>(&self, d: usize, e: usize, seed: u64, device: &B::Device) -> Regulator<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut uniform = |n: usize, bound: f64| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let param = |v: Vec<f32>, s: [usize; 2]| Param::from_tensor(Tensor::from_data(TensorData::new(v, s), device));
        let zeros = |n: usize| Param::from_tensor(Tensor::zeros([n], device));
        let r = self.rank.min(d);
        let layers = (0..=self.hidden_layers)
            .map(|_| {
                // Stored transposed for `x · Vᵀ · Uᵀ`: vt = Vᵀ [d, r], ut = Uᵀ [r, d].
                let (vt, ut) = match self.init {
                    RegulatorInit::Xavier => {
                        let b = (6.0 / (d + r) as f64).sqrt();
                        (uniform(d * r, b), uniform(r * d, b * 2f64.sqrt()))
                    }
                    RegulatorInit::Randn => (
                        crate::methods::init::normal(
                            &mut crate::seeds::rng(seed, crate::seeds::Stream::RegulatorDown),
                            d * r,
                            1.0,
                        ),
                        crate::methods::init::normal(
                            &mut crate::seeds::rng(seed, crate::seeds::Stream::RegulatorUp),
                            r * d,
                            1.0,
                        ),
                    ),
                };
                LowRank {
                    vt: param(vt, [d, r]),
                    ut: param(ut, [r, d]),
                    b: zeros(d),
                }
            })
            .collect();
        let h = self.coef_hidden;
        let (b1, b2) = (1.0 / (e as f64).sqrt(), 1.0 / (h as f64).sqrt());
        Regulator {
            layers,
            w1: param(uniform(e * h, b1), [e, h]),
            c1: Param::from_tensor(Tensor::from_data(TensorData::new(uniform(h, b1), [h]), device)),
            w2: param(uniform(h, b2), [h, 1]),
            c2: Param::from_tensor(Tensor::from_data(TensorData::new(uniform(1, b2), [1]), device)),
        }
    }
}

#[derive(Module, Debug)]
pub struct LowRank<B: Backend> {
    pub vt: Param<Tensor<B, 2>>,
    pub ut: Param<Tensor<B, 2>>,
    pub b: Param<Tensor<B, 1>>,
}

/// ψ_φ: the low-rank row MLP and the coefficient net.
#[derive(Module, Debug)]
pub struct Regulator<B: Backend> {
    pub layers: Vec<LowRank<B>>,
    pub w1: Param<Tensor<B, 2>>,
    pub c1: Param<Tensor<B, 1>>,
    pub w2: Param<Tensor<B, 2>>,
    pub c2: Param<Tensor<B, 1>>,
}

/// Row norms `[rows, 1]`.
fn row_norms<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.powi_scalar(2).sum_dim(1).sqrt()
}

impl<B: Backend> Regulator<B> {
    /// This regulator made the identity: the coefficient net's output weight is zeroed and its bias
    /// set to 50, so `c = σ(50)`, which is 1 in f32, and `ψ(g) = 0·x + 1·g = g` exactly (the
    /// ablation "regulator off" and the equivalence test with the host alone).
    /// The prompt width its rows have.
    pub fn width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.vt.dims()[0])
    }

    pub fn into_identity(self) -> Self {
        let device = self.c2.val().device();
        let [h, _] = self.w2.dims();
        Self {
            w2: Param::from_tensor(Tensor::zeros([h, 1], &device)),
            c2: Param::from_tensor(Tensor::from_data(TensorData::new(vec![50.0f32], [1]), &device)),
            ..self
        }
    }

    /// The mixing coefficient `c ∈ (0, 1)` of a task embedding `[e]`, as `[1]`.
    pub fn coefficient(&self, task: Tensor<B, 1>) -> Tensor<B, 1> {
        let h = relu(task.unsqueeze::<2>().matmul(self.w1.val()) + self.c1.val().unsqueeze::<2>());
        sigmoid(h.matmul(self.w2.val()) + self.c2.val().unsqueeze::<2>()).reshape([1])
    }

    /// `ψ(g)` for a gradient `[rows, d]`, and the coefficient used.
    pub fn forward(&self, g: Tensor<B, 2>, task: Tensor<B, 1>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let mut x = g.clone();
        for l in &self.layers {
            x = relu(x.matmul(l.vt.val()).matmul(l.ut.val()) + l.b.val().unsqueeze::<2>());
        }
        let x = x.clone() / row_norms(x).add_scalar(EPS) * row_norms(g.clone()).add_scalar(EPS);
        let c = self.coefficient(task);
        let c2 = c.clone().unsqueeze::<2>();
        (x * c2.clone().neg().add_scalar(1.0) + g * c2, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;

    type AB = Autodiff<Cpu>;

    fn cfg() -> RegulatorConfig {
        RegulatorConfig {
            rank: 3,
            hidden_layers: 1,
            coef_hidden: 5,
            init: RegulatorInit::Xavier,
        }
    }

    fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    }

    #[test]
    fn rows_keep_their_norms_and_the_output_mixes_with_the_raw_gradient() {
        let dev = Default::default();
        let psi = cfg().init::<Cpu>(8, 6, 1, &dev);
        let g = Tensor::<Cpu, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &dev);
        let task = Tensor::<Cpu, 1>::random([6], Distribution::Normal(0.0, 1.0), &dev);
        let (out, c) = psi.forward(g.clone(), task.clone());
        assert_eq!(out.dims(), [4, 8]);
        let c = host(c)[0];
        assert!(c > 0.0 && c < 1.0);
        // The MLP branch alone (c removed) has the input's row norms.
        let (mlp, _) = {
            let mut x = g.clone();
            for l in &psi.layers {
                x = relu(x.matmul(l.vt.val()).matmul(l.ut.val()) + l.b.val().unsqueeze::<2>());
            }
            let x = x.clone() / row_norms(x).add_scalar(EPS) * row_norms(g.clone()).add_scalar(EPS);
            (x, ())
        };
        let (a, b) = (host(row_norms(mlp.clone())), host(row_norms(g.clone())));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4 * y.max(1.0), "{x} vs {y}");
        }
        // ψ(g) = (1 − c)·mlp + c·g.
        let want = host(mlp.mul_scalar(1.0 - c) + g.mul_scalar(c));
        let got = host(out);
        assert!(want.iter().zip(&got).all(|(x, y)| (x - y).abs() < 1e-5));
    }

    #[test]
    fn a_rank_above_the_width_is_the_width_as_in_supmers_low_rank_layer() {
        let wide = RegulatorConfig { rank: 100, ..cfg() }.init::<Cpu>(8, 6, 1, &Default::default());
        assert_eq!(wide.layers[0].vt.dims(), [8, 8]);
        assert_eq!(wide.layers[0].ut.dims(), [8, 8]);
    }

    /// First-order meta-gradient of one inner step: θ' = θ0 − α·ψ_φ(g_s) with the support gradient
    /// g_s a constant, query loss L(θ') = ½‖θ' − t‖². The autodiff gradients with respect to θ0 and
    /// to a coefficient-net weight equal central finite differences.
    #[test]
    fn the_first_order_meta_gradient_matches_finite_differences() {
        let dev = Default::default();
        let (rows, d, e, alpha) = (2, 5, 4, 0.3f32);
        let g_s = Tensor::<AB, 2>::random([rows, d], Distribution::Normal(0.0, 1.0), &dev);
        let target = Tensor::<AB, 2>::random([rows, d], Distribution::Normal(0.0, 1.0), &dev);
        let task = Tensor::<AB, 1>::random([e], Distribution::Normal(0.0, 1.0), &dev);
        let theta0 = host(Tensor::<AB, 2>::random([rows, d], Distribution::Normal(0.0, 1.0), &dev));
        let psi = cfg().init::<AB>(d, e, 7, &dev);
        let loss = |theta0: &[f32], psi: &Regulator<AB>, track: bool| {
            let t0 = Tensor::<AB, 2>::from_data(TensorData::new(theta0.to_vec(), [rows, d]), &dev);
            let t0 = if track { t0.require_grad() } else { t0 };
            let (step, _) = psi.forward(g_s.clone().detach(), task.clone());
            let theta = t0.clone() - step.mul_scalar(alpha);
            ((theta - target.clone()).powi_scalar(2).sum().mul_scalar(0.5), t0)
        };
        // Autodiff.
        let psi_g = Regulator {
            w2: Param::from_tensor(psi.w2.val().require_grad()),
            ..psi.clone()
        };
        let (l, t0) = loss(&theta0, &psi_g, true);
        let grads = l.backward();
        let g_theta = host(t0.grad(&grads).unwrap());
        let g_w2 = host(psi_g.w2.val().grad(&grads).unwrap());
        // Finite differences (f64 steps on f32 values; the loss is smooth here).
        let h = 1e-2f32;
        let value = |theta0: &[f32], psi: &Regulator<AB>| host(loss(theta0, psi, false).0)[0];
        for i in [0, 3, rows * d - 1] {
            let (mut p, mut m) = (theta0.clone(), theta0.clone());
            p[i] += h;
            m[i] -= h;
            let fd = (value(&p, &psi) - value(&m, &psi)) / (2.0 * h);
            assert!(
                (fd - g_theta[i]).abs() < 2e-3,
                "θ0[{i}]: fd {fd}, autodiff {}",
                g_theta[i]
            );
        }
        let w2 = host(psi.w2.val());
        for i in 0..w2.len() {
            let shift = |delta: f32| {
                let mut v = w2.clone();
                v[i] += delta;
                Regulator {
                    w2: Param::from_tensor(Tensor::from_data(TensorData::new(v, [w2.len(), 1]), &dev)),
                    ..psi.clone()
                }
            };
            let fd = (value(&theta0, &shift(h)) - value(&theta0, &shift(-h))) / (2.0 * h);
            assert!((fd - g_w2[i]).abs() < 2e-3, "w2[{i}]: fd {fd}, autodiff {}", g_w2[i]);
        }
        assert!(
            g_w2.iter().any(|v| v.abs() > 1e-4),
            "the regulator must receive a gradient"
        );
    }
}
