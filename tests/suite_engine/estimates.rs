//! `plan --estimate-on / --rates / --tflops`: every cell's time from the encoder passes it makes,
//! checked against a count by hand, against a device-check file's rates, and (after a run) beside
//! the recorded times.

use gram_bench::clip::{flops, ClipConfig};

use crate::common::suite_env::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The seconds of "Estimated time of the N cells left: S s …".
fn estimated_seconds(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("Estimated time of the"))
        .unwrap_or_else(|| panic!("{out}"));
    line.split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn paper_suite(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("suites")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// CoOp's three ImageNet train cells of the cross-domain table, by hand: 16 shots × 1000 classes,
/// 50 epochs at batch 32 (25,000 steps, each through 1000 class prompts, forward and backward),
/// the images forward every epoch, the test split's 50,000 images encoded once (the feature cache),
/// then 1000 class prompts forward per evaluation.
fn coop_imagenet_by_hand(image_forward: f64, text_forward: f64, text_backward: f64) -> f64 {
    3.0 * 800_000.0 * image_forward
        + 50_000.0 * image_forward
        + 3.0 * 25_000_000.0 * text_backward
        + 3.0 * 1000.0 * text_forward
}

#[test]
fn a_paper_suite_is_estimated_without_its_data_from_its_passes() {
    let env = Env::new();
    let suite = paper_suite("cross-domain.toml");
    let only = ["--only", "method=coop", "--only", "phase=train"];
    let mut args = vec!["plan", suite.as_str(), "--tflops", "400"];
    args.extend(only);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("not resolved here") && text.contains("GPU-hours at an assumed 400 TFLOP/s"),
        "{text}"
    );
    let cfg = ClipConfig::vit_b_16();
    let (fi, ft) = (flops::image_forward(&cfg, 1), flops::text_forward(&cfg, 1, 77));
    let want = coop_imagenet_by_hand(fi, ft, 2.0 * ft) / 400e12;
    let got = estimated_seconds(&text);
    assert!((got - want).abs() <= 1.0, "estimated {got} s, by hand {want} s\n{text}");

    // The same cells at the rates of a device-check report (its f16 run: the suite's precision).
    let row = |items: usize, seconds: f64| serde_json::json!({"what": "x", "items": items, "seconds": seconds, "gflops": 1.0, "tflops_per_s": 1.0, "of_peak": null});
    let report = serde_json::json!({
        "backend": "cuda", "batch": 256, "suite": [], "passed": true, "seconds": 1.0,
        "runs": [
            {"precision": "f32", "parity_tolerance": 1e-4, "parity": [], "methods": [],
             "encoders": [row(1, 1.0), row(1, 1.0), row(1, 1.0), row(1, 1.0)]},
            {"precision": "f16", "parity_tolerance": 1e-2, "parity": [], "methods": [],
             "encoders": [row(256, 0.256), row(256, 0.0512), row(256, 0.768), row(256, 0.128)]}
        ]
    });
    let file = env.path("device-check.json");
    std::fs::write(&file, report.to_string()).unwrap();
    let mut args = vec!["plan", suite.as_str(), "--rates", file.to_str().unwrap()];
    args.extend(only);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    // Per item: image forward 1 ms, text forward 0.2 ms, text forward + backward 0.5 ms.
    let want = coop_imagenet_by_hand(1e-3, 2e-4, 5e-4);
    let got = estimated_seconds(&stdout(&out));
    assert!((got - want).abs() <= 1.0, "estimated {got} s, by hand {want} s");
    assert!(stdout(&out).contains("GPU-hours at the rates"), "{}", stdout(&out));

    // A suite on another backbone cannot use device-check's ViT-B/16 rates.
    let tiny = env.write_suite("tiny.toml", TINY);
    let out = env.run(&["plan", tiny.to_str().unwrap(), "--rates", file.to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("measures ViT-B/16"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_calibrated_estimate_is_shown_beside_the_recorded_times() {
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s, "--no-report"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["plan", s, "--estimate-on", "cpu", "--calibration-batch", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("| Estimate |") && text.contains("CPU-hours on cpu at f32 (calibrated now"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("On the 6 finished cells the model says"))
        .unwrap_or_else(|| panic!("{text}"));
    let ratio: f64 = line.rsplit('×').next().unwrap().trim_end_matches(").").parse().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "{line}");
}
