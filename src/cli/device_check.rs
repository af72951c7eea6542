//! `gram-bench device-check`: the one command a person runs on a GPU machine (no network, no
//! toolchain: carry the stripped binary, `suites/`, `datasets.lock` and `tests/fixtures/`). The
//! measuring is the library's (`crate::device_check`); this file holds the arguments, runs parts
//! 1–3 in a process per precision and the suite on two backends, and prints the tables.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::backend::{BackendKind, Precision};
use crate::device_check::{compare_stores, measure, DeviceReport, Measurement, Part, PrecisionRun, SuiteCell};
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::report::markdown_table;
use crate::resolve::ResolvedSuite;
use crate::store::Store;
use crate::suite::Suite;

#[derive(Args, Debug)]
pub struct DeviceCheckArgs {
    /// The backend to check (the suite part also runs on cpu, for the comparison).
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// Images per encoder batch and per training step; prompts per text batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Classes of a method's training step (its prompts per text pass).
    #[arg(long, default_value_t = 100)]
    pub classes: usize,
    /// Timed repetitions of each measurement, after one untimed warm-up (the median is kept).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// The suite whose methods' training steps are timed (their settings, at ViT-B/16 shapes).
    #[arg(long, default_value = "suites/cross-domain.toml")]
    pub methods_from: PathBuf,
    /// The suite run on this backend and on the CPU.
    #[arg(long, default_value = "suites/backend-check.toml")]
    pub suite: PathBuf,
    #[arg(long, default_value = "datasets.lock")]
    pub lock: PathBuf,
    /// The parity fixtures: the tiny CLIP in both layouts and transformers' outputs on it.
    #[arg(long, default_value = "tests/fixtures")]
    pub fixtures: PathBuf,
    /// The precisions parts 1–3 run at (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "f32,f16")]
    pub precision: Vec<Precision>,
    /// The card's peak dense f32 TFLOP/s, to print the achieved fraction (optional).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// The card's peak dense f16/bf16 tensor-core TFLOP/s (optional).
    #[arg(long)]
    pub peak_tflops_half: Option<f64>,
    /// Where the suite's stores and world cache go.
    #[arg(long, default_value = "device-check")]
    pub work: PathBuf,
    /// The JSON file written.
    #[arg(long, default_value = "device-check.json")]
    pub out: PathBuf,
    /// Leave out parts (repeatable).
    #[arg(long, value_enum)]
    pub skip: Vec<Part>,
    /// Internal: compute parts 1–3 at the one `--precision` given and write them to `--out`.
    #[arg(long, hide = true)]
    pub child: bool,
}

impl DeviceCheckArgs {
    fn measurement(&self) -> Measurement {
        Measurement {
            batch: self.batch,
            classes: self.classes,
            repeats: self.repeats,
            methods_from: self.methods_from.clone(),
            fixtures: self.fixtures.clone(),
            peak_tflops: self.peak_tflops,
            peak_tflops_half: self.peak_tflops_half,
            skip: self.skip.clone(),
        }
    }
}

/// The suite on `backend` and on the CPU (each through this binary's `run`), cell by cell.
fn suite_part(a: &DeviceCheckArgs) -> Result<Vec<SuiteCell>> {
    let exe = super::common::this_binary()?;
    let store = |b: BackendKind| a.work.join(format!("store-{b}"));
    for b in [BackendKind::Cpu, a.backend] {
        let status = std::process::Command::new(&exe)
            .args([
                "run",
                &a.suite.to_string_lossy(),
                "--no-report",
                "--backend",
                &b.to_string(),
            ])
            .arg("--store")
            .arg(store(b))
            .arg("--cache")
            .arg(a.work.join("cache"))
            .arg("--lock")
            .arg(&a.lock)
            .status()
            .map_err(|e| Error::Run(format!("running {}: {e}", exe.display())))?;
        if !status.success() {
            return Err(Error::Run(format!("the suite on {b} failed ({status})")));
        }
    }
    let resolved = ResolvedSuite::new(Suite::load(&a.suite)?, &Lock::load(&a.lock)?, None)?;
    let open = |b: BackendKind| Store::open_read(&store(b), &resolved.suite.name);
    compare_stores(&resolved, &open(BackendKind::Cpu), &open(a.backend))
}

pub fn device_check(a: &DeviceCheckArgs) -> Result<()> {
    let t0 = Instant::now();
    let m = a.measurement();
    m.validate()?;
    // The JSON is written at the end of a long run: its folder must exist before the run starts.
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    if a.precision.is_empty() {
        return Err(Error::Input("--precision: name at least one (f32, f16, bf16)".into()));
    }
    let mut precisions = a.precision.clone();
    precisions.dedup();
    if a.child {
        let [p] = precisions[..] else {
            return Err(Error::Input("--child computes one --precision".into()));
        };
        let run = measure(&m, a.backend, p)?;
        let json = serde_json::to_string(&run).map_err(|e| Error::Internal(e.to_string()))?;
        return crate::files::write_atomic(&a.out, json.as_bytes());
    }
    let mut r = DeviceReport {
        backend: a.backend.to_string(),
        batch: a.batch,
        ..Default::default()
    };
    if let [p] = precisions[..] {
        r.runs.push(measure(&m, a.backend, p)?);
    } else {
        for p in precisions {
            r.runs.push(measure_in_child(a, p)?);
        }
    }
    if m.runs(Part::Suite) {
        r.suite = suite_part(a)?;
    }
    r.passed = r.passes();
    r.seconds = t0.elapsed().as_secs_f64();
    print_tables(&r);
    let json = serde_json::to_string_pretty(&r).map_err(|e| Error::Internal(e.to_string()))?;
    crate::files::write_atomic(&a.out, json.as_bytes())?;
    eprintln!("wrote {} ({:.0} s)", a.out.display(), r.seconds);
    if !r.passed {
        return Err(Error::Run(format!(
            "the {} backend does not match (see the tables above and {})",
            r.backend,
            a.out.display()
        )));
    }
    Ok(())
}

/// Parts 1–3 at precision `p` in a process of its own (a device's float format is fixed per process).
fn measure_in_child(a: &DeviceCheckArgs, p: Precision) -> Result<PrecisionRun> {
    let exe = super::common::this_binary()?;
    std::fs::create_dir_all(&a.work).map_err(|e| Error::io(&a.work, e))?;
    let out = a.work.join(format!("parts-{p}.json"));
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["device-check", "--child", "--precision", p.as_str()])
        .args(["--backend", &a.backend.to_string()])
        .args(["--batch", &a.batch.to_string()])
        .args(["--classes", &a.classes.to_string()])
        .args(["--repeats", &a.repeats.to_string()])
        .arg("--methods-from")
        .arg(&a.methods_from)
        .arg("--fixtures")
        .arg(&a.fixtures)
        .arg("--out")
        .arg(&out);
    for (flag, v) in [
        ("--peak-tflops", a.peak_tflops),
        ("--peak-tflops-half", a.peak_tflops_half),
    ] {
        if let Some(v) = v {
            cmd.args([flag, &v.to_string()]);
        }
    }
    for s in &a.skip {
        let part = s.to_possible_value().expect("every part has a name");
        cmd.args(["--skip", part.get_name()]);
    }
    let status = cmd
        .status()
        .map_err(|e| Error::Run(format!("running {}: {e}", exe.display())))?;
    if !status.success() {
        return Err(Error::Run(format!(
            "the {p} measurements failed ({status}; the lines above say why)"
        )));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| Error::io(&out, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Internal(format!("{}: {e}", out.display())))
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    println!("{}\n", markdown_table(header, rows));
}

fn print_tables(r: &DeviceReport) {
    println!("device check: backend {}, batch {}\n", r.backend, r.batch);
    for run in &r.runs {
        print_run(run);
    }
    if !r.suite.is_empty() {
        let rows = r
            .suite
            .iter()
            .map(|s| {
                vec![
                    s.cell.clone(),
                    s.cpu.clone(),
                    s.this_backend.clone(),
                    s.images_apart.to_string(),
                    if s.ok { "ok" } else { "FAILED" }.to_string(),
                ]
            })
            .collect();
        print_table(&["Cell", "cpu", &r.backend, "Images apart", "Verdict"], rows);
    }
}

fn print_run(r: &PrecisionRun) {
    let pct = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{:.0}%", 100.0 * v));
    println!("## {}\n", r.precision);
    if !r.parity.is_empty() {
        let rows = r
            .parity
            .iter()
            .map(|p| {
                vec![
                    p.layout.to_string(),
                    p.output.to_string(),
                    format!("{:.1e}", p.max_abs_diff),
                    if p.ok { "ok" } else { "FAILED" }.to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "Layout",
                "Output",
                &format!("Max |diff| (tol {:e})", r.parity_tolerance),
                "Verdict",
            ],
            rows,
        );
    }
    if !r.encoders.is_empty() {
        let rows = r
            .encoders
            .iter()
            .map(|t| {
                vec![
                    t.what.clone(),
                    t.items.to_string(),
                    format!("{:.4}", t.seconds),
                    format!("{:.1}", t.gflops),
                    format!("{:.2}", t.tflops_per_s),
                    pct(t.of_peak),
                ]
            })
            .collect();
        print_table(&["ViT-B/16", "Batch", "Seconds", "GFLOPs", "TFLOP/s", "Of peak"], rows);
    }
    if !r.methods.is_empty() {
        let rows = r
            .methods
            .iter()
            .map(|m| {
                vec![
                    format!("{} ({})", m.method, m.kind),
                    m.batch.to_string(),
                    format!("{:.4}", m.seconds),
                    format!("{:.1}", m.images_per_s),
                    format!("{:.1}", m.gflops),
                    format!("{:.2}×", m.times_flop_time),
                ]
            })
            .collect();
        print_table(
            &["Training step", "Batch", "Seconds", "Images/s", "GFLOPs", "× FLOP time"],
            rows,
        );
    }
}
