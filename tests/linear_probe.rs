//! The linear probe's L-BFGS fit against scikit-learn's LogisticRegression (the estimator CoOp's
//! linear-probe script uses) on fixed features: same weights and decision values for a strongly
//! and a weakly regularized C (tests/reference/linear_probe.py).
mod common;

use common::{fixture, read_raw, B};
use gram_bench::clip::weights::SafetensorsStore;
use gram_bench::methods::linear_probe::{fit, Labelled};
use gram_bench::methods::LinearProbeConfig;

#[test]
fn the_fit_matches_scikit_learn() {
    let refs = SafetensorsStore::open(&[fixture("linear_probe.safetensors")]).unwrap();
    let (xs, x) = refs.read("x").unwrap();
    let y: Vec<usize> = read_raw(&fixture("linear_probe.safetensors"), "y")
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    let (n, d) = (xs[0], xs[1]);
    let k = 3;
    let data = Labelled {
        x: x.clone(),
        y,
        dim: d,
    };
    let cfg = LinearProbeConfig {
        c_grid: vec![1.0],
        c_search_steps: 0,
        max_iter: 5000,
        tol: 1e-7,
        normalize_features: false,
    };
    // f32 gradients bound how close a weakly regularized (flat) optimum can be approached.
    for (c, name, tol) in [(0.5, "c0.5", 2e-4), (100.0, "c100.0", 2e-3)] {
        let w = fit::<B>(&data, k, c, &cfg, &Default::default());
        let (_, coef) = refs.read(&format!("{name}.coef")).unwrap(); // [k, d]
        let (_, intercept) = refs.read(&format!("{name}.intercept")).unwrap();
        let (_, decision) = refs.read(&format!("{name}.decision")).unwrap(); // [n, k]
                                                                             // Ours is [d × k ‖ k]; softmax is invariant to a shared shift of the k scores, which the
                                                                             // unpenalized intercept leaves free, so decisions are compared after centring each row.
        let ours: Vec<f32> = (0..n)
            .flat_map(|i| {
                let row: Vec<f32> = (0..k)
                    .map(|c2| (0..d).map(|j| x[i * d + j] * w[j * k + c2]).sum::<f32>() + w[d * k + c2])
                    .collect();
                let m = row.iter().sum::<f32>() / k as f32;
                row.into_iter().map(move |v| v - m)
            })
            .collect();
        let theirs: Vec<f32> = decision
            .chunks(k)
            .flat_map(|r| {
                let m = r.iter().sum::<f32>() / k as f32;
                r.iter().map(move |v| v - m).collect::<Vec<_>>()
            })
            .collect();
        // f32 arithmetic: agreement is relative to the scale of the decision values (which grows as
        // C weakens the regularization).
        let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let dd = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale;
        eprintln!("C = {c}: decisions {dd:e} of scale {scale}");
        assert!(
            dd < tol,
            "C = {c}: decision values differ by {dd} of their scale {scale}"
        );
        let wscale = coef.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let dw = (0..k)
            .flat_map(|c2| (0..d).map(move |j| (c2, j)))
            .map(|(c2, j)| (w[j * k + c2] - coef[c2 * d + j]).abs())
            .fold(0.0, f32::max)
            / wscale;
        eprintln!("C = {c}: weights {dw:e} of scale {wscale}");
        assert!(dw < tol, "C = {c}: weights differ by {dw} of their scale {wscale}");
        let _ = &intercept;
    }
}
