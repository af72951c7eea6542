//! The interval every report table states: a mean's 95% Student-t half-width.

/// The mean of paired differences `d` (0 for none) and the half-width of its 95% Student-t interval
/// (None for fewer than two).
pub(crate) fn mean_ci95(d: &[f64]) -> (f64, Option<f64>) {
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n.max(1) as f64;
    let ci95 = (n > 1).then(|| {
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t975(n - 1) * var.sqrt() / (n as f64).sqrt()
    });
    (mean, ci95)
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom: the standard table to 30, then
/// the Cornish–Fisher expansion around the normal quantile (error < 1e-3 there).
pub(crate) fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => {
            let (z, v) = (1.959_963_985_f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * v) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        }
    }
}
