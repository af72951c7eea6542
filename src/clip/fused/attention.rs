//! Attention's head copies (split and merge) and its per-head kernel, heads in parallel.

use super::*;

pub(super) fn swap_middle_copy(t: &FlexTensor) -> FlexTensor {
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
pub(super) fn attention_heads(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor, causal: bool) -> FlexTensor {
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
pub(super) fn matmul_into(
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
pub(super) struct SwapMiddleBackward;

impl Backward<Cpu, 1> for SwapMiddleBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        unary::<Cpu, _>(ops.parents, ops.node, grads, |grad| swap_middle_copy(&grad));
    }
}

pub(super) fn swap_middle_cpu(t: Tensor<Cpu, 4>) -> Tensor<Cpu, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(swap_middle_copy(&t.into_primitive().tensor())))
}

pub(super) fn swap_middle_autodiff(t: Tensor<Autodiff<Cpu>, 4>) -> Tensor<Autodiff<Cpu>, 4> {
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
