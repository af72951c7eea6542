//! Fused CPU kernels for the blocks' element-wise work, bit-identical to the tensor-op compositions
//! they replace.
//!
//! Why: on the CPU backend every tensor op is one pass over memory into a fresh buffer, run on one
//! thread for element-wise maps, and under autodiff every op also keeps its inputs for the backward.
//! QuickGELU `x · σ(1.702 x)` is three ops forward and five backward; at ViT-B/16's text shapes it
//! cost more than a third of the forward + backward's non-matmul time (README, "Performance").
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
//! How they are reached from backend-generic code: a downcast on the concrete tensor type (safe
//! `Any`), so the model stays generic over `Backend`; the CPU backend, with or without autodiff,
//! takes the fused kernel in f32, every other backend or dtype the composition.

use std::any::Any;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bytes, DType, Tensor, TensorPrimitive};
use burn_flex::{FlexTensor, Layout};

use rayon::prelude::*;

use crate::backend::Cpu;

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
    if x.dtype() != DType::F32 {
        return quick_gelu_composed(x);
    }
    let x = match downcast::<_, Tensor<Autodiff<Cpu>, D>>(x) {
        Ok(t) => return upcast(quick_gelu_autodiff(t)),
        Err(x) => x,
    };
    match downcast::<_, Tensor<Cpu, D>>(x) {
        Ok(t) => upcast(quick_gelu_cpu(t)),
        Err(x) => quick_gelu_composed(x),
    }
}

/// The composition the fused kernels reproduce (and every other backend runs).
pub fn quick_gelu_composed<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * sigmoid(x * 1.702)
}

/// `[a, m, n, c] → [a, n, m, c]`, materialized contiguous (what `swap_dims(1, 2)` is as a view).
/// Attention splits heads with it (`[b, l, h, d] → [b, h, l, d]`) and merges them back.
pub fn swap_middle<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    if t.dtype() != DType::F32 {
        return t.swap_dims(1, 2);
    }
    let t = match downcast::<_, Tensor<Autodiff<Cpu>, 4>>(t) {
        Ok(t) => return upcast(swap_middle_autodiff(t)),
        Err(t) => t,
    };
    match downcast::<_, Tensor<Cpu, 4>>(t) {
        Ok(t) => upcast(Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(
            swap_middle_copy(&t.into_primitive().tensor()),
        ))),
        Err(t) => t.swap_dims(1, 2),
    }
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

/// burn-flex's `sigmoid_f32` — `1 / (1 + e^-x)` for `x ≥ 0`, `e^x / (1 + e^x)` below — without its
/// branch, which the sign of random activations mispredicts half the time: both branches take the
/// exponential of `-|x|` (for `x = -0.0` too: `e^0 = e^-0 = 1`), and only the numerator differs.
#[inline]
fn sigmoid_f32(x: f32) -> f32 {
    let e = (-x.abs()).exp();
    let numerator = if x >= 0.0 { 1.0 } else { e };
    numerator / (1.0 + e)
}

fn contiguous_f32(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

fn new_f32(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    let shape = like.layout().shape().clone();
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), DType::F32)
}

/// Forward: `y = x · s` with `s = σ(x · α)`; `s` is also returned when `keep_s` (for the backward).
fn quick_gelu_forward(x: &FlexTensor, keep_s: bool) -> (FlexTensor, Option<FlexTensor>) {
    let x = contiguous_f32(x);
    let xs: &[f32] = x.storage();
    let n = x.layout().num_elements();
    let xs = &xs[..n];
    let mut y = vec![0f32; n];
    let mut s = if keep_s { vec![0f32; n] } else { Vec::new() };
    if keep_s {
        y.par_chunks_mut(CHUNK)
            .zip(s.par_chunks_mut(CHUNK))
            .zip(xs.par_chunks(CHUNK))
            .for_each(|((y, s), x)| {
                for i in 0..x.len() {
                    let si = sigmoid_f32(x[i] * QUICK_GELU_ALPHA);
                    s[i] = si;
                    y[i] = x[i] * si;
                }
            });
    } else {
        y.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(y, x)| {
            for i in 0..x.len() {
                y[i] = x[i] * sigmoid_f32(x[i] * QUICK_GELU_ALPHA);
            }
        });
    }
    let s = keep_s.then(|| new_f32(s, &x));
    (new_f32(y, &x), s)
}

/// Backward of the composition `x * sigmoid(x * α)`, formula by formula as autodiff runs it:
/// the product's `g · s` (to its left factor) and `g · x` (to its right), the sigmoid's
/// `g' · s · (1 − s)` (burn-flex's `sigmoid_backward`), the scalar product's `· α`; the two
/// contributions to `x` added.
fn quick_gelu_backward(x: &FlexTensor, s: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let (x, s, g) = (contiguous_f32(x), contiguous_f32(s), contiguous_f32(grad));
    let n = x.layout().num_elements();
    let (xs, ss, gs): (&[f32], &[f32], &[f32]) = (&x.storage()[..n], &s.storage()[..n], &g.storage()[..n]);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK))
        .zip(ss.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
        .for_each(|((o, x), (s, g))| {
            for i in 0..x.len() {
                let to_x = g[i] * s[i];
                let to_s = g[i] * x[i];
                let to_u = to_s * s[i] * (1.0 - s[i]);
                o[i] = to_u * QUICK_GELU_ALPHA + to_x;
            }
        });
    new_f32(out, &x)
}

fn quick_gelu_cpu<const D: usize>(x: Tensor<Cpu, D>) -> Tensor<Cpu, D> {
    let p = x.into_primitive().tensor();
    let (y, _) = quick_gelu_forward(&p, false);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

#[derive(Debug)]
struct QuickGeluBackward;

impl Backward<Cpu, 1> for QuickGeluBackward {
    /// The input and its sigmoid, as the composition keeps them.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x, s) = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| quick_gelu_backward(&x, &s, &grad));
    }
}

fn quick_gelu_autodiff<const D: usize>(x: Tensor<Autodiff<Cpu>, D>) -> Tensor<Autodiff<Cpu>, D> {
    let x = x.into_primitive().tensor();
    let out = match QuickGeluBackward
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, s) = quick_gelu_forward(&x.primitive, true);
            prep.finish((x.primitive.clone(), s.expect("kept")), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(quick_gelu_forward(&x.primitive, false).0),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

fn swap_middle_copy(t: &FlexTensor) -> FlexTensor {
    let t = contiguous_f32(t);
    let dims = t.layout().shape().clone();
    let [a, m, n, c] = [dims[0], dims[1], dims[2], dims[3]];
    let src: &[f32] = &t.storage()[..a * m * n * c];
    let mut out = vec![0f32; src.len()];
    // One output row block `[n_i]` of `m · c` values per task: source rows `(a_i, ·, n_i)`.
    out.par_chunks_mut((m * c).max(1)).enumerate().for_each(|(row, dst)| {
        let (ai, ni) = (row / n, row % n);
        for mi in 0..m {
            let from = ((ai * m + mi) * n + ni) * c;
            dst[mi * c..(mi + 1) * c].copy_from_slice(&src[from..from + c]);
        }
    });
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous([a, n, m, c].into()),
        DType::F32,
    )
}

/// burn-flex's `attention_naive_impl` for f32 without mask, bias or softcap, one task per head.
fn attention_heads(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, causal: bool) -> FlexTensor {
    let (q, k, v) = (contiguous_f32(q), contiguous_f32(k), contiguous_f32(v));
    let qs = q.layout().shape().clone();
    let [batch, heads, seq_q, head_dim] = [qs[0], qs[1], qs[2], qs[3]];
    let seq_kv = k.layout().shape()[2];
    let val_dim = v.layout().shape()[3];
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let causal_offset = causal.then_some(seq_kv as isize - seq_q as isize);
    let (qd, kd, vd): (&[f32], &[f32], &[f32]) = (q.storage(), k.storage(), v.storage());
    let mut output = vec![0f32; batch * heads * seq_q * val_dim];
    output.par_chunks_mut(seq_q * val_dim).enumerate().for_each_init(
        || vec![0f32; seq_q * seq_kv],
        |scores, (bh, out)| {
            let q = &qd[bh * seq_q * head_dim..][..seq_q * head_dim];
            let k = &kd[bh * seq_kv * head_dim..][..seq_kv * head_dim];
            let v = &vd[bh * seq_kv * val_dim..][..seq_kv * val_dim];
            // SAFETY: every pointer spans its slice at the dimensions and strides given.
            unsafe {
                gemm::gemm(
                    seq_q,
                    seq_kv,
                    head_dim,
                    scores.as_mut_ptr(),
                    1,
                    seq_kv as isize,
                    false,
                    q.as_ptr(),
                    1,
                    head_dim as isize,
                    k.as_ptr(),
                    head_dim as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for qi in 0..seq_q {
                let row = &mut scores[qi * seq_kv..(qi + 1) * seq_kv];
                let mut row_max = f32::NEG_INFINITY;
                for (ki, s) in row.iter_mut().enumerate() {
                    let mut val = *s * scale;
                    if let Some(offset) = causal_offset {
                        if (ki as isize) > (qi as isize) + offset {
                            val = f32::NEG_INFINITY;
                        }
                    }
                    *s = val;
                    if val > row_max {
                        row_max = val;
                    }
                }
                if row_max == f32::NEG_INFINITY {
                    row.fill(0.0);
                    continue;
                }
                let mut sum = 0f32;
                for s in row.iter_mut() {
                    let e = (*s - row_max).exp();
                    *s = e;
                    sum += e;
                }
                let inv_sum = 1.0 / sum;
                for s in row.iter_mut() {
                    *s *= inv_sum;
                }
            }
            // SAFETY: as above.
            unsafe {
                gemm::gemm(
                    seq_q,
                    val_dim,
                    seq_kv,
                    out.as_mut_ptr(),
                    1,
                    val_dim as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    seq_kv as isize,
                    v.as_ptr(),
                    1,
                    val_dim as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    FlexTensor::new(
        Bytes::from_elems(output),
        Layout::contiguous([batch, heads, seq_q, val_dim].into()),
        DType::F32,
    )
}

#[derive(Debug)]
struct SwapMiddleBackward;

impl Backward<Cpu, 1> for SwapMiddleBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| swap_middle_copy(&grad));
    }
}

fn swap_middle_autodiff(t: Tensor<Autodiff<Cpu>, 4>) -> Tensor<Autodiff<Cpu>, 4> {
    let t = t.into_primitive().tensor();
    let out = match SwapMiddleBackward
        .prepare::<NoCheckpointing>([t.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((), swap_middle_copy(&t.primitive)),
        OpsKind::UnTracked(prep) => prep.finish(swap_middle_copy(&t.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
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
    fn strided_input_is_read_in_logical_order() {
        let x = inputs::<Cpu>().swap_dims(0, 1);
        assert_eq!(bits(quick_gelu(x.clone())), bits(quick_gelu_composed(x)));
    }
}
