//! Layer norm under autodiff: burn's composition, forward and backward, on slices of the batch in
//! parallel.

use super::*;

pub(super) type F = Cpu;

/// Batch items per slice: about 64K values, at least one item.
pub(super) fn slices(batch: usize, per_item: usize) -> Vec<(usize, usize)> {
    let step = (65_536 / per_item.max(1)).clamp(1, batch.max(1));
    (0..batch).step_by(step).map(|s| (s, step.min(batch - s))).collect()
}

pub(super) fn slice0(t: &FlexTensor, (start, len): (usize, usize)) -> FlexTensor {
    t.narrow(0, start, len).to_contiguous()
}

/// Each slice's rows and what its backward needs.
pub(super) type KeptSlices = Vec<((usize, usize), LnSlice)>;

/// What the backward of one slice needs, as autodiff's composed ops would have kept it.
#[derive(Clone, Debug)]
pub(super) struct LnSlice {
    centered: FlexTensor,
    var_eps: FlexTensor,
    denom: FlexTensor,
    normalized: FlexTensor,
}

/// burn-backend's `ModuleOps::layer_norm` on one slice (rank 3, last dim), op for op.
pub(super) fn ln_forward_slice(
    x: FlexTensor,
    gamma_b: &FlexTensor,
    beta_b: &FlexTensor,
    eps: f64,
) -> (FlexTensor, LnSlice) {
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
pub(super) fn ln_backward_slice(g: FlexTensor, gamma_b: &FlexTensor, s: &LnSlice) -> (FlexTensor, FlexTensor) {
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
pub(super) fn reduce_to(mut grad: FlexTensor, shape: &[usize]) -> FlexTensor {
    for (i, &n) in shape.iter().enumerate() {
        if grad.layout().shape()[i] != n {
            grad = F::float_sum_dim(grad, i);
        }
    }
    grad
}

#[derive(Debug)]
pub(super) struct LayerNormBackward;

#[derive(Clone, Debug)]
pub(super) struct LnState {
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

pub(super) fn layer_norm_autodiff(
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
    let run = || -> (FlexTensor, KeptSlices) {
        let (outs, kept): (Vec<FlexTensor>, KeptSlices) = ranges
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
