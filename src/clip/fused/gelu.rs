//! QuickGELU fused: forward and backward, element by element as the composition computes them.

use super::*;

/// burn-flex's `sigmoid_f32` — `1 / (1 + e^-x)` for `x ≥ 0`, `e^x / (1 + e^x)` below — without its
/// branch, which the sign of random activations mispredicts half the time: both branches take the
/// exponential of `-|x|` (for `x = -0.0` too: `e^0 = e^-0 = 1`), and only the numerator differs.
#[inline]
pub(super) fn sigmoid_f32(x: f32) -> f32 {
    let e = (-x.abs()).exp();
    let numerator = if x >= 0.0 { 1.0 } else { e };
    numerator / (1.0 + e)
}

/// Forward: `y = x · s` with `s = σ(x · α)`; `s` is also returned when `keep_s` (for the backward).
pub(super) fn quick_gelu_forward(x: &FlexTensor, keep_s: bool) -> (FlexTensor, Option<FlexTensor>) {
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
pub(super) fn quick_gelu_backward(x: &FlexTensor, s: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
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

pub(super) fn quick_gelu_cpu<const D: usize>(x: Tensor<Cpu, D>) -> Tensor<Cpu, D> {
    let p = x.into_primitive().tensor();
    let (y, _) = quick_gelu_forward(&p, false);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

#[derive(Debug)]
pub(super) struct QuickGeluBackward;

impl Backward<Cpu, 1> for QuickGeluBackward {
    /// The input and its sigmoid, as the composition keeps them.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x, s) = ops.state;
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| quick_gelu_backward(&x, &s, &grad));
    }
}

pub(super) fn quick_gelu_autodiff<const D: usize>(x: Tensor<Autodiff<Cpu>, D>) -> Tensor<Autodiff<Cpu>, D> {
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
