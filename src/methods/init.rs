//! Host-side initialisation, so a cell's initial parameters do not depend on the backend's RNG or
//! on how a reloaded weight was laid out.

use rand::Rng;

/// A row-major `[rows, cols]` matrix transposed on the host, so a reloaded weight is laid out as a
/// freshly built one (a transposed view multiplies with another summation order, 1 ulp apart).
pub fn transposed(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| data[r * cols + c]))
        .collect()
}

/// `n` draws of N(0, std²) (Box–Muller), so the init is the same on every backend.
pub(crate) fn normal(rng: &mut impl Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}
