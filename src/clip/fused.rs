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
//! Layer norm under autodiff is burn's composition (mean, centre, variance, `√(var + ε)`, divide,
//! scale, shift: nine ops forward, about twenty backward), each a serial pass. `layer_norm` runs the
//! very same backend ops — forward, and backward formula by formula as autodiff would — on slices of
//! the batch in parallel: every op of it works row by row, so a slice computes the rows' bits the
//! whole tensor would; the reductions across rows (γ's and β's gradients) run once on the whole
//! tensor, and the input's two gradient contributions are registered in autodiff's order.
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
use burn::nn::LayerNorm;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::ops::FloatTensorOps;
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
    on_cpu(x, quick_gelu_autodiff, quick_gelu_cpu, quick_gelu_composed)
}

/// The composition the fused kernels reproduce (and every other backend runs).
pub fn quick_gelu_composed<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * sigmoid(x * 1.702)
}

/// `[a, m, n, c] → [a, n, m, c]`, materialized contiguous (what `swap_dims(1, 2)` is as a view).
/// Attention splits heads with it (`[b, l, h, d] → [b, h, l, d]`) and merges them back.
pub fn swap_middle<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
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
pub fn layer_norm<B: Backend>(ln: &LayerNorm<B>, eps: f64, x: Tensor<B, 3>) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
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

/// burn-flex's `sigmoid_f32` — `1 / (1 + e^-x)` for `x ≥ 0`, `e^x / (1 + e^x)` below — without its
/// branch, which the sign of random activations mispredicts half the time: both branches take the
/// exponential of `-|x|` (for `x = -0.0` too: `e^0 = e^-0 = 1`), and only the numerator differs.
#[inline]
fn sigmoid_f32(x: f32) -> f32 {
    let e = (-x.abs()).exp();
    let numerator = if x >= 0.0 { 1.0 } else { e };
    numerator / (1.0 + e)
}

fn new_f32(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    let shape = like.layout().shape().clone();
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), DType::F32)
}

/// Forward: `y = x · s` with `s = σ(x · α)`; `s` is also returned when `keep_s` (for the backward).
fn quick_gelu_forward(x: &FlexTensor, keep_s: bool) -> (FlexTensor, Option<FlexTensor>) {
    let x = x.to_contiguous();
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
    let (x, s, g) = (x.to_contiguous(), s.to_contiguous(), grad.to_contiguous());
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
    let t = t.to_contiguous();
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
    let (q, k, v) = (q.to_contiguous(), k.to_contiguous(), v.to_contiguous());
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
            matmul_into(scores, [seq_q, seq_kv, head_dim], (q, head_dim, 1), (k, 1, head_dim));
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
            matmul_into(out, [seq_q, val_dim, seq_kv], (scores, seq_kv, 1), (v, val_dim, 1));
        },
    );
    FlexTensor::new(
        Bytes::from_elems(output),
        Layout::contiguous([batch, heads, seq_q, val_dim].into()),
        DType::F32,
    )
}

/// `dst = lhs · rhs` into the row-major `m × n` matrix `dst`, each operand given as (values, row
/// stride, column stride): the `gemm` call burn-flex's naive attention makes (no accumulation into
/// `dst`, one thread), so the sums run in its order. The crate's one `unsafe` block.
#[allow(unsafe_code)]
fn matmul_into(
    dst: &mut [f32],
    [m, n, k]: [usize; 3],
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs;
    assert!(dst.len() >= m * n, "matmul_into: destination too small");
    assert!(lhs.len() > last(m, k, lhs_rs, lhs_cs), "matmul_into: lhs too small");
    assert!(rhs.len() > last(k, n, rhs_rs, rhs_cs), "matmul_into: rhs too small");
    // SAFETY: `gemm::gemm` reads `lhs` at `i·lhs_rs + p·lhs_cs` and `rhs` at `p·rhs_rs + j·rhs_cs`
    // for i < m, p < k, j < n, and writes `dst` at `i·n + j`; the asserts above keep the largest
    // of each inside its slice, and the strides are non-negative. `dst` is a `&mut` borrow, so it
    // aliases neither input. With `read_dst = false` (and alpha 0) `dst`'s old values are never
    // read, so uninitialized-looking contents cannot leak in. `Parallelism::None`: no other thread
    // touches the buffers.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[derive(Debug)]
struct SwapMiddleBackward;

impl Backward<Cpu, 1> for SwapMiddleBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| swap_middle_copy(&grad));
    }
}

fn swap_middle_cpu(t: Tensor<Cpu, 4>) -> Tensor<Cpu, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(swap_middle_copy(&t.into_primitive().tensor())))
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

type F = Cpu;

/// Batch items per slice: about 64K values, at least one item.
fn slices(batch: usize, per_item: usize) -> Vec<(usize, usize)> {
    let step = (65_536 / per_item.max(1)).clamp(1, batch.max(1));
    (0..batch).step_by(step).map(|s| (s, step.min(batch - s))).collect()
}

fn slice0(t: &FlexTensor, (start, len): (usize, usize)) -> FlexTensor {
    t.narrow(0, start, len).to_contiguous()
}

/// What the backward of one slice needs, as autodiff's composed ops would have kept it.
#[derive(Clone, Debug)]
struct LnSlice {
    centered: FlexTensor,
    var_eps: FlexTensor,
    denom: FlexTensor,
    normalized: FlexTensor,
}

/// burn-backend's `ModuleOps::layer_norm` on one slice (rank 3, last dim), op for op.
fn ln_forward_slice(x: FlexTensor, gamma_b: &FlexTensor, beta_b: &FlexTensor, eps: f64) -> (FlexTensor, LnSlice) {
    let mean = F::float_mean_dim(x.clone(), 2);
    let centered = F::float_sub(x, mean);
    let var = F::float_mean_dim(F::float_mul(centered.clone(), centered.clone()), 2);
    let var_eps = F::float_add_scalar(var, eps.into());
    let denom = F::float_sqrt(var_eps.clone());
    let normalized = F::float_div(centered.clone(), denom.clone());
    let scaled = F::float_mul(normalized.clone(), gamma_b.clone());
    let out = F::float_add(scaled, beta_b.clone());
    (
        out,
        LnSlice {
            centered,
            var_eps,
            denom,
            normalized,
        },
    )
}

/// autodiff's backward of that composition for the input, on one slice: the two contributions
/// it registers for `x` (first the centring's, then the mean's).
fn ln_backward_slice(g: FlexTensor, gamma_b: &FlexTensor, s: &LnSlice) -> (FlexTensor, FlexTensor) {
    let shape = g.layout().shape().clone();
    let d = shape[2];
    let device = Default::default();
    // scaled = normalized * γ: to `normalized`.
    let g_n = F::float_mul(g, gamma_b.clone());
    // normalized = centered / denom: to `centered` (first contribution) and to `denom` (summed
    // over the broadcast last dim).
    let c1 = F::float_mul(g_n.clone(), F::float_recip(s.denom.clone()));
    let value = F::float_div(
        F::float_neg(s.centered.clone()),
        F::float_powi_scalar(s.denom.clone(), 2.into()),
    );
    let g_denom = F::float_sum_dim(F::float_mul(g_n, value), 2);
    // denom = sqrt(var + ε).
    let g_var = F::float_mul(
        g_denom,
        F::float_div_scalar(F::float_powf_scalar(s.var_eps.clone(), (-0.5).into()), 2f32.into()),
    );
    // var = mean(centered²): the mean's backward, then the square's two contributions.
    let mean_back = |grad: FlexTensor| {
        let val = F::float_mul_scalar(
            F::float_ones(shape.clone(), &device, DType::F32.into()),
            (1_f64 / d as f64).into(),
        );
        F::float_mul(val, F::float_sum_dim(grad, 2))
    };
    let g_sq = mean_back(g_var);
    let c2 = F::float_mul(g_sq.clone(), s.centered.clone());
    let c3 = F::float_mul(g_sq, s.centered.clone());
    let g_c = F::float_add(c3, F::float_add(c2, c1));
    // centered = x - mean: to `x`, and to `mean` (negated, summed over the last dim).
    let g_mean = F::float_sum_dim(F::float_neg(g_c.clone()), 2);
    (g_c, mean_back(g_mean))
}

/// Sums over every dim where `shape` is 1, in order, as autodiff's `broadcast_shape` does.
fn reduce_to(mut grad: FlexTensor, shape: &[usize]) -> FlexTensor {
    for (i, &n) in shape.iter().enumerate() {
        if grad.layout().shape()[i] != n {
            grad = F::float_sum_dim(grad, i);
        }
    }
    grad
}

#[derive(Debug)]
struct LayerNormBackward;

#[derive(Clone, Debug)]
struct LnState {
    slices: Vec<((usize, usize), LnSlice)>,
    gamma_b: FlexTensor,
}

impl Backward<Cpu, 3> for LayerNormBackward {
    type State = LnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let g = grads.consume::<Cpu>(&ops.node).to_contiguous();
        let LnState { slices, gamma_b } = ops.state;
        let d = g.layout().shape()[2];
        let flat = |t: FlexTensor| F::float_reshape(t, [d].into());
        if let Some(node) = node_beta {
            grads.register::<Cpu>(node.id, flat(reduce_to(g.clone(), &[1, 1, d])));
        }
        if let Some(node) = node_gamma {
            let parts: Vec<FlexTensor> = slices
                .par_iter()
                .map(|(r, s)| F::float_mul(slice0(&g, *r), s.normalized.clone()))
                .collect();
            grads.register::<Cpu>(node.id, flat(reduce_to(F::float_cat(parts, 0), &[1, 1, d])));
        }
        if let Some(node) = node_x {
            let (first, second): (Vec<FlexTensor>, Vec<FlexTensor>) = slices
                .par_iter()
                .map(|(r, s)| ln_backward_slice(slice0(&g, *r), &gamma_b, s))
                .unzip();
            grads.register::<Cpu>(node.id, F::float_cat(first, 0));
            grads.register::<Cpu>(node.id, F::float_cat(second, 0));
        }
    }
}

fn layer_norm_autodiff(
    ln: &LayerNorm<Autodiff<Cpu>>,
    eps: f64,
    x: Tensor<Autodiff<Cpu>, 3>,
) -> Tensor<Autodiff<Cpu>, 3> {
    let gamma = ln.gamma.val().into_primitive().tensor();
    let beta = ln
        .beta
        .as_ref()
        .expect("checked by the caller")
        .val()
        .into_primitive()
        .tensor();
    let x = x.into_primitive().tensor();
    let d = x.primitive.layout().shape()[2];
    let gamma_b = F::float_reshape(gamma.primitive.clone(), [1, 1, d].into());
    let beta_b = F::float_reshape(beta.primitive.clone(), [1, 1, d].into());
    let input = x.primitive.to_contiguous();
    let dims = input.layout().shape().clone();
    let ranges = slices(dims[0], dims[1] * dims[2]);
    let run = || -> (FlexTensor, Vec<((usize, usize), LnSlice)>) {
        let (outs, kept): (Vec<FlexTensor>, Vec<((usize, usize), LnSlice)>) = ranges
            .par_iter()
            .map(|&r| {
                let (out, keep) = ln_forward_slice(slice0(&input, r), &gamma_b, &beta_b, eps);
                (out, (r, keep))
            })
            .unzip();
        (F::float_cat(outs, 0), kept)
    };
    let out = match LayerNormBackward
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, kept) = run();
            prep.finish(LnState { slices: kept, gamma_b }, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(run().0),
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
