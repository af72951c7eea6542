//! Two cells trained at once (`run --jobs 2`) share one process, so burn's autodiff graphs of both
//! live side by side. burn-autodiff 0.21's `backward()` swept every graph in the process for
//! orphaned entries, including one another thread was still building: a node whose only reference
//! was the operation being registered looked unused, its step was dropped, and that thread's
//! gradient came back missing or short (tracel-ai/burn#5573) — ProGrad, whose two backward passes
//! reuse one leaf per step, trained to other numbers beside another ProGrad cell. The vendored
//! burn-autodiff sweeps only the calling thread's graphs (docs/vendor.md); this test is the race:
//! it fails on the published crate and passes on the vendored one.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};

type B = Autodiff<Flex>;

const SIZE: usize = 128;
const ROUNDS: usize = 400;

fn data(seed: usize) -> TensorData {
    let v: Vec<f32> = (0..SIZE * SIZE)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    TensorData::new(v, [SIZE, SIZE])
}

/// One step shaped like ProGrad's: a leaf goes through one backward (which drops its entry in the
/// graph locator, so the next operation on it starts a fresh graph), then through a `cat` (whose
/// preparation leaves the fresh graph's first node referenced only by the operation in flight) and
/// a second backward. Returns the leaf's gradient from the second backward, if it has one.
fn step(seed: usize) -> Option<Vec<f32>> {
    let device = Default::default();
    let a = Tensor::<B, 2>::from_data(data(seed), &device).require_grad();
    let b = Tensor::<B, 2>::from_data(data(seed + 1), &device);
    let _first = (a.clone() * 2.0).sum().backward();
    let y = Tensor::cat(vec![a.clone().exp(), b], 0);
    let grads = (y.clone() * y).sum().backward();
    a.grad(&grads)
        .map(|g| g.into_data().to_vec::<f32>().expect("f32 gradient"))
}

#[test]
fn a_backward_on_one_thread_leaves_another_threads_graph_whole() {
    let expected = step(0).expect("one thread alone: the leaf has its gradient");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lost = std::thread::scope(|s| {
        // Sweepers: a steady stream of small backward passes, each sweeping for orphans.
        for _ in 0..2 {
            s.spawn(|| {
                let device = Default::default();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let x = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device).require_grad();
                    let _ = (x.clone() * x).sum().backward();
                }
            });
        }
        let victim = s.spawn(|| {
            (0..ROUNDS)
                .filter(|_| step(0).as_deref() != Some(expected.as_slice()))
                .count()
        });
        let lost = victim.join().expect("the victim thread does not panic");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        lost
    });
    assert_eq!(
        lost, 0,
        "{lost} of {ROUNDS} steps lost or changed their gradient while other threads ran backward"
    );
}
