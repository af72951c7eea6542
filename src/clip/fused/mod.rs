//! Fused CPU kernels for the blocks' element-wise work, bit-identical to the tensor-op compositions
//! they replace.
//!
//! Why: on the CPU backend every tensor op is one pass over memory into a fresh buffer, run on one
//! thread for element-wise maps, and under autodiff every op also keeps its inputs for the backward.
//! QuickGELU `x · σ(1.702 x)` is three ops forward and five backward; at ViT-B/16's text shapes it
//! cost more than a third of the forward + backward's non-matmul time (docs/performance.md,
//! "Performance").
//!
//! Why bit-identical: the embedded world's micro-CLIP is pinned, and `world replay` checks that
//! pretraining still reproduces its first steps bit for bit; the embedded suites' baselines allow no
//! change. So each fused kernel computes, per element, exactly the f32 operations the composition
//! computes, in the same order (element-wise maps have no summation order to differ in), using the
//! same `exp`; its backward repeats autodiff's formulas for the composed ops, and the two gradient
//! contributions the composition adds are added once (IEEE addition is commutative). Tests compare
//! values and gradients bit for bit with the composition.
//!
//! Attention's head split and merge are copies (`[b, l, h, d] ↔ [b, h, l, d]`): done as strided views,
//! the CPU backend materialized them element by element in its generic strided iterator; here they
//! are one contiguous copy of `d`-long runs, and a copy changes no value.
//!
//! Attention on the CPU backend (no autodiff) is burn-flex's "naive" kernel — per (batch, head) one
//! score matrix product, a row softmax, one value product — run one head after another on one
//! thread; here the same per-head arithmetic (the same `gemm` calls and row loop) runs in parallel
//! over heads, each head independent of the others, so any thread count gives the same bits.
//!
//! Layer norm under autodiff is burn's composition (mean, centre, variance, `√(var + ε)`, divide,
//! scale, shift: nine ops forward, about twenty backward), each a serial pass. `layer_norm` runs the
//! very same backend ops — forward, and backward formula by formula as autodiff would — on slices of
//! the batch in parallel: every op of it works row by row, so a slice computes the rows' bits the
//! whole tensor would; the reductions across rows (γ's and β's gradients) run once on the whole
//! tensor, and the input's two gradient contributions are registered in autodiff's order.
//!
//! How they are reached from backend-generic code: a downcast on the concrete tensor type (safe
//! `Any`), so the model stays generic over `Backend`; the CPU backend, with or without autodiff,
//! takes the fused kernel in f32, every other backend or dtype the composition. Why not a backend
//! extension trait, as burn's custom-kernel example does: its bound would have to appear on every
//! generic function that reaches the model (about 190 bounds in 45 files: methods, runner, GRAM,
//! estimates) and every backend would need an impl of its own, while here the choice is made in
//! one function (`on_cpu`, and `attention`/`layer_norm` beside it) that no caller sees; the tests
//! below pin the fused path and the composition to the same bits.

use std::any::Any;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::nn::LayerNorm;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{Bytes, DType, Tensor, TensorPrimitive};
use burn_flex::{FlexTensor, Layout};

use rayon::prelude::*;

use crate::backend::Cpu;

mod attention;
mod gelu;
mod layer_norm;

use attention::*;
use gelu::*;
use layer_norm::*;

/// QuickGELU's constant, as the composition's `x * 1.702` hands it to the backend (an f64 scalar
/// the CPU backend narrows to f32).
const QUICK_GELU_ALPHA: f32 = 1.702f64 as f32;

/// Elements per parallel chunk: large enough to amortize a task, small enough to spread over cores.
/// Element-wise, so the result does not depend on how chunks fall on threads.
const CHUNK: usize = 1 << 14;

/// burn-flex 0.21's `NAIVE_SCORE_BUDGET`: the largest `seq_q · seq_kv` its attention runs naively.
const NAIVE_SCORE_BUDGET: usize = 256 * 1024;

/// `x · σ(1.702 x)` (OpenAI CLIP's QuickGELU), as the composition `x * sigmoid(x * 1.702)`.
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    on_cpu(x, quick_gelu_autodiff, quick_gelu_cpu, quick_gelu_composed)
}

/// The composition the fused kernels reproduce (and every other backend runs).
pub(crate) fn quick_gelu_composed<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * sigmoid(x * 1.702)
}

/// `[a, m, n, c] → [a, n, m, c]`, materialized contiguous (what `swap_dims(1, 2)` is as a view).
/// Attention splits heads with it (`[b, l, h, d] → [b, h, l, d]`) and merges them back.
pub(crate) fn swap_middle<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    on_cpu(t, swap_middle_autodiff, swap_middle_cpu, |t| t.swap_dims(1, 2))
}

/// Scaled dot-product attention over `[batch, heads, seq, head_dim]` (scale `1/√head_dim`, no mask
/// but the causal one), as `burn::tensor::module::attention` computes it.
pub fn attention<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, causal: bool) -> Tensor<B, 4> {
    let composed = |q, k, v| {
        let opts = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        burn::tensor::module::attention(q, k, v, None, None, opts)
    };
    let [_, _, seq_q, _] = q.dims();
    let seq_kv = k.dims()[2];
    // burn-flex takes its tiled ("flash") kernel above this score-matrix size; leave those to it.
    if q.dtype() != DType::F32 || seq_q * seq_kv > NAIVE_SCORE_BUDGET {
        return composed(q, k, v);
    }
    match downcast::<_, (Tensor<Cpu, 4>, Tensor<Cpu, 4>, Tensor<Cpu, 4>)>((q, k, v)) {
        Ok((q, k, v)) => {
            let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
            upcast(Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(
                attention_heads(&q, &k, &v, causal),
            )))
        }
        Err((q, k, v)) => composed(q, k, v),
    }
}

/// `ln(x)` over the last dim of `[batch, seq, width]`, as `LayerNorm::forward` computes it, when `x` is
/// the CPU backend's f32 tensor under autodiff and `ln` has a shift; otherwise `x` comes back as
/// `Err`, for the caller's own norm. `eps` must be the one `ln` was made with (burn keeps it private).
pub(crate) fn layer_norm<B: Backend>(
    ln: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, 3>,
) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
    if x.dtype() != DType::F32 || ln.beta.is_none() {
        return Err(x);
    }
    let Some(ad) = (ln as &dyn Any).downcast_ref::<LayerNorm<Autodiff<Cpu>>>() else {
        return Err(x);
    };
    downcast::<_, Tensor<Autodiff<Cpu>, 3>>(x).map(|x| upcast(layer_norm_autodiff(ad, eps, x)))
}

/// `x` through the CPU backend's kernel when it is that backend's f32 tensor, with autodiff or
/// without; through `composed` on every other backend or dtype.
fn on_cpu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    autodiff: fn(Tensor<Autodiff<Cpu>, D>) -> Tensor<Autodiff<Cpu>, D>,
    plain: fn(Tensor<Cpu, D>) -> Tensor<Cpu, D>,
    composed: fn(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    if x.dtype() != DType::F32 {
        return composed(x);
    }
    let x = match downcast::<_, Tensor<Autodiff<Cpu>, D>>(x) {
        Ok(t) => return upcast(autodiff(t)),
        Err(x) => x,
    };
    match downcast::<_, Tensor<Cpu, D>>(x) {
        Ok(t) => upcast(plain(t)),
        Err(x) => composed(x),
    }
}

fn downcast<T: Any, U: Any>(t: T) -> std::result::Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(t);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(b) => Err(*b.downcast::<T>().expect("the value just boxed")),
    }
}

fn upcast<T: Any, U: Any>(t: T) -> U {
    downcast(t).unwrap_or_else(|_| unreachable!("upcast is only called with U = T"))
}

fn new_f32(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    let shape = like.layout().shape().clone();
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn bits<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<u32> {
        t.into_data()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    }

    /// Inputs over QuickGELU's whole range: both sigmoid branches, saturation, ±0, over several
    /// parallel chunks with a ragged tail.
    fn inputs<B: Backend>() -> Tensor<B, 3> {
        let device = Default::default();
        let n = 3 * (CHUNK + 25);
        let wide = Tensor::<B, 1>::random([n], Distribution::Normal(0.0, 6.0), &device);
        let mut v = wide.into_data().to_vec::<f32>().unwrap();
        v[..6].copy_from_slice(&[0.0, -0.0, 60.0, -60.0, 1e-8, -1e-8]);
        Tensor::from_data(TensorData::new(v, [CHUNK + 25, 3, 1]), &device)
    }

    #[test]
    fn fused_forward_is_the_composition_bit_for_bit() {
        let x = inputs::<Cpu>();
        assert_eq!(bits(quick_gelu(x.clone())), bits(quick_gelu_composed(x)));
    }

    #[test]
    fn fused_gradient_is_autodiffs_of_the_composition_bit_for_bit() {
        type A = Autodiff<Cpu>;
        let x = inputs::<A>();
        let device = Default::default();
        // A non-uniform upstream gradient, so every factor of the backward matters.
        let w = Tensor::<A, 3>::random(x.dims(), Distribution::Normal(0.0, 1.0), &device);
        let run = |f: fn(Tensor<A, 3>) -> Tensor<A, 3>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let g = (y.clone() * w.clone()).sum().backward();
            (bits(y), bits(x.grad(&g).expect("input gradient")))
        };
        let (y_fused, g_fused) = run(quick_gelu);
        let (y_ref, g_ref) = run(quick_gelu_composed);
        assert_eq!(y_fused, y_ref, "forward");
        assert_eq!(g_fused, g_ref, "gradient");
    }

    #[test]
    fn swap_middle_is_the_view_materialized_and_its_gradient_the_inverse() {
        type A = Autodiff<Cpu>;
        let device = Default::default();
        let x = Tensor::<A, 4>::random([2, 5, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<A, 4>::random([2, 3, 5, 4], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: fn(Tensor<A, 4>) -> Tensor<A, 4>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let g = (y.clone() * w.clone()).sum().backward();
            (bits(y), bits(x.grad(&g).expect("input gradient")))
        };
        assert_eq!(run(swap_middle), run(|t| t.swap_dims(1, 2)));
        let plain = Tensor::<Cpu, 4>::from_data(x.clone().into_data(), &device);
        assert_eq!(bits(swap_middle(plain.clone())), bits(plain.swap_dims(1, 2)));
        // A strided input (a view of a view) is read in its logical order.
        let strided = Tensor::<Cpu, 4>::from_data(w.into_data(), &device).swap_dims(1, 2);
        assert_eq!(bits(swap_middle(strided.clone())), bits(strided.swap_dims(1, 2)));
    }

    #[test]
    fn parallel_attention_is_burn_flexs_bit_for_bit() {
        let device = Default::default();
        for (shape, kv) in [([2, 3, 7, 8], 7), ([3, 4, 77, 16], 77), ([1, 2, 5, 4], 9)] {
            let q = Tensor::<Cpu, 4>::random(shape, Distribution::Normal(0.0, 2.0), &device);
            let kv_shape = [shape[0], shape[1], kv, shape[3]];
            let k = Tensor::<Cpu, 4>::random(kv_shape, Distribution::Normal(0.0, 2.0), &device);
            let v = Tensor::<Cpu, 4>::random(kv_shape, Distribution::Normal(0.0, 1.0), &device);
            for causal in [false, true] {
                let opts = AttentionModuleOptions {
                    is_causal: causal,
                    ..Default::default()
                };
                let reference = burn::tensor::module::attention(q.clone(), k.clone(), v.clone(), None, None, opts);
                let ours = attention(q.clone(), k.clone(), v.clone(), causal);
                assert_eq!(bits(ours), bits(reference), "{shape:?} kv {kv} causal {causal}");
            }
        }
    }

    #[test]
    fn layer_norm_and_its_gradients_are_the_compositions_bit_for_bit() {
        use burn::nn::LayerNormConfig;
        type A = Autodiff<Cpu>;
        let device = Default::default();
        // Several slices (64K values each) and a ragged last one; γ and β learned, off their init.
        let (b, l, d) = (37, 17, 256);
        let eps = 1e-5;
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init::<A>(&device);
        ln.gamma = burn::module::Param::from_tensor(Tensor::random([d], Distribution::Normal(1.0, 0.3), &device));
        ln.beta = Some(burn::module::Param::from_tensor(Tensor::random(
            [d],
            Distribution::Normal(0.0, 0.3),
            &device,
        )));
        let x = Tensor::<A, 3>::random([b, l, d], Distribution::Normal(0.5, 2.0), &device);
        let w = Tensor::<A, 3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
        // The input is also used beside the norm (a residual), so its gradient has three
        // contributions whose order matters.
        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let y = if fused {
                layer_norm(&ln, eps, x.clone()).unwrap_or_else(|_| panic!("the fused path applies"))
            } else {
                ln.forward(x.clone())
            };
            let out = (y.clone() + x.clone() * 0.5) * w.clone();
            let g = out.sum().backward();
            let beta = ln.beta.as_ref().unwrap().val();
            (
                bits(y),
                bits(x.grad(&g).expect("x")),
                bits(ln.gamma.val().grad(&g).expect("gamma")),
                bits(beta.grad(&g).expect("beta")),
            )
        };
        let (fused, composed) = (run(true), run(false));
        assert_eq!(fused.0, composed.0, "forward");
        assert_eq!(fused.1, composed.1, "input gradient");
        assert_eq!(fused.2, composed.2, "gamma gradient");
        assert_eq!(fused.3, composed.3, "beta gradient");
    }

    #[test]
    fn strided_input_is_read_in_logical_order() {
        let x = inputs::<Cpu>().swap_dims(0, 1);
        assert_eq!(bits(quick_gelu(x.clone())), bits(quick_gelu_composed(x)));
    }
}
