//! The suite engine as a user drives it: strict suite files with file:line errors, stable cell
//! keys, resume after a kill, failed cells, reports, baselines and the regression check, on a tiny
//! embedded world (a micro-CLIP trained for two steps: the numbers are not the point here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gram_bench::lock::Lock;
use gram_bench::resolve::ResolvedSuite;
use gram_bench::suite::Suite;

const TINY: &str = r#"
schema = 1
name = "tiny"
version = 1
description = "test suite"
published = []

[backbone]
name = "micro-clip"

[world]
seed = 3
image_size = 16
patch_size = 8
width = 32
layers = 1
context_length = 32
corpus_size = 64
steps = 2
batch_size = 16
lr = 0.001
weight_decay = 0.1
warmup_steps = 1

[eval]
batch_size = 64

[data]
fewshot = "sample"
on_corrupt = "fail"

[check]
abs_tolerance = 1.0
std_factor = 2.0

[methods.zs]
kind = "zeroshot"
templates = "dataset"

[methods.coop]
kind = "coop"
n_ctx = 4
ctx_init = "a photo of a"
init_std = 0.02
csc = false
class_token_position = "end"
batch_size = 8
epochs = 2
optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }

[[experiment]]
protocol = "few-shot"
methods = ["zs", "coop"]
datasets = ["shapes"]
shots = [1]
seeds = [1, 2]

[[experiment]]
protocol = "base-to-new"
methods = ["coop"]
datasets = ["shapes"]
shots = [1]
seeds = [1]
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write_suite(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gram-bench"))
            .args(args)
            .current_dir(self.dir.path())
            .env("GRAM_BENCH_CACHE", self.path("cache"))
            .output()
            .expect("binary runs")
    }
    fn records(&self, suite: &str) -> BTreeMap<String, Vec<u8>> {
        let dir = self.path(&format!("results/{suite}/records"));
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn parse(text: &str) -> Result<Suite, String> {
    Suite::parse(Path::new("suites/x.toml"), text).map_err(|e| e.to_string())
}

#[test]
fn unknown_keys_and_bad_values_are_errors_with_file_and_line() {
    let e = parse(&TINY.replace("templates = \"dataset\"", "templates = \"dataset\"\ntemperature = 2")).unwrap_err();
    assert!(e.starts_with("suites/x.toml:"), "{e}");
    assert!(e.contains("temperature"), "{e}");
    let e = parse(&TINY.replace("[eval]\nbatch_size = 64", "[eval]\nbatch_size = 64\nbatchsize = 3")).unwrap_err();
    let line = TINY.lines().position(|l| l.starts_with("[eval]")).unwrap() + 3;
    assert!(e.starts_with(&format!("suites/x.toml:{line}:")), "{e}");
    assert!(e.contains("batchsize"), "{e}");
    let e = parse("schema = 1\nname = \n").unwrap_err();
    assert!(e.starts_with("suites/x.toml:2:"), "{e}");
    let e = parse(&TINY.replace("methods = [\"zs\", \"coop\"]", "methods = [\"zs\", \"cocoop\"]")).unwrap_err();
    assert!(e.contains("unknown method `cocoop`"), "{e}");
    // Dataset names resolve against the catalog and datasets.lock (which may declare user datasets).
    let s = parse(&TINY.replace(
        "datasets = [\"shapes\"]\nshots = [1]\nseeds = [1, 2]",
        "datasets = [\"cifar10\"]\nshots = [1]\nseeds = [1, 2]",
    ))
    .unwrap();
    let e = ResolvedSuite::new(s, &Lock::default(), None).err().unwrap().to_string();
    assert!(e.contains("unknown dataset `cifar10`"), "{e}");
    let e = parse(&TINY.replace("schema = 1", "schema = 9")).unwrap_err();
    assert!(e.contains("schema 9 is not supported"), "{e}");
    let e = parse(&TINY.replace("kind = \"zeroshot\"", "kind = \"tip-adapter\"")).unwrap_err();
    assert!(e.contains("unknown variant `tip-adapter`"), "{e}");
    // A kind's own fields are checked too.
    let e = parse(&TINY.replace("kind = \"zeroshot\"", "kind = \"linear-probe\"")).unwrap_err();
    assert!(e.contains("unknown field `templates`") && e.contains("c_grid"), "{e}");
    let e = parse(&TINY.replace("epochs = 2", "epochs = 0")).unwrap_err();
    assert!(e.contains("methods.coop: epochs"), "{e}");
    assert!(parse(TINY).is_ok());
}

#[test]
fn an_experiment_repeating_anothers_cells_adds_no_slot() {
    let base = parse(TINY).unwrap();
    let text = format!(
        "{TINY}\n[[experiment]]\nprotocol = \"few-shot\"\nmethods = [\"zs\"]\ndatasets = [\"shapes\"]\nshots = [1]\nseeds = [1, 2]\n"
    );
    let twice = parse(&text).unwrap();
    let plan = |s: Suite| ResolvedSuite::new(s, &Lock::default(), None).unwrap().plan;
    let (a, b) = (plan(base), plan(twice));
    assert_eq!(a.cells.len(), b.cells.len());
    assert_eq!(
        a.slots.len(),
        b.slots.len(),
        "a repeated slot would count its seeds twice"
    );
}

fn keys(text: &str) -> Vec<String> {
    let s = parse(text).unwrap();
    ResolvedSuite::new(s, &Lock::default(), None)
        .unwrap()
        .plan
        .cells
        .into_iter()
        .map(|c| c.key)
        .collect()
}

#[test]
fn cell_keys_ignore_formatting_and_follow_what_decides_a_result() {
    let base = keys(TINY);
    // 2 seeds × (zs + coop) few-shot, plus base-to-new coop: a train and an eval cell.
    assert_eq!(base.len(), 6);
    let unique: std::collections::HashSet<_> = base.iter().collect();
    assert_eq!(unique.len(), base.len());
    // Comments, blank lines, key order and inline-vs-dotted tables do not matter.
    let reformatted = TINY
        .replace("[eval]\nbatch_size = 64", "# evaluation\n[eval]\n\nbatch_size   =   64 # images")
        .replace(
            "optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }",
            "optim.warmup_lr = 0.00001\noptim.lr = 2e-3\noptim.momentum = 0.9\noptim.weight_decay = 0.0005\noptim.warmup_epochs = 1",
        );
    assert_eq!(keys(&reformatted), base);
    // A CoOp hyper-parameter changes the CoOp cells only.
    let lr = keys(&TINY.replace("lr = 0.002,", "lr = 0.003,"));
    let changed: Vec<bool> = lr.iter().zip(&base).map(|(a, b)| a != b).collect();
    let s = parse(TINY).unwrap();
    let plan = ResolvedSuite::new(s, &Lock::default(), None).unwrap().plan;
    for (c, ch) in plan.cells.iter().zip(changed) {
        assert_eq!(ch, c.spec.method == "coop", "{:?}", c.spec);
    }
    // The suite version and the world change every key.
    assert!(keys(&TINY.replace("version = 1", "version = 2"))
        .iter()
        .all(|k| !base.contains(k)));
    assert!(keys(&TINY.replace("seed = 3", "seed = 4"))
        .iter()
        .all(|k| !base.contains(k)));
}

#[test]
fn a_run_resumes_only_missing_cells_and_leaves_finished_ones_identical() {
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = env.records("tiny");
    assert_eq!(first.len(), 6);
    for (name, bytes) in &first {
        let r: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r["status"], "ok", "{name}");
        assert!(r["metrics"]["accuracy"].as_f64().unwrap() >= 0.0);
        assert!(!r["per_class"].as_array().unwrap().is_empty());
        assert_eq!(r["environment"]["backend"], "cpu");
    }

    // A run killed mid-way: two records never written, one temp file and a lock left behind.
    let victims: Vec<String> = first.keys().take(2).cloned().collect();
    for v in &victims {
        std::fs::remove_file(env.path(&format!("results/tiny/records/{v}"))).unwrap();
    }
    std::fs::write(env.path("results/tiny/records/.half-written.json.tmp-1"), b"{").unwrap();
    let out = env.run(&["plan", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 done, 2 missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("ran 2 cells"), "{}", stderr(&out));
    let second = env.records("tiny");
    assert_eq!(second.len(), 6);
    for (name, bytes) in &first {
        if !victims.contains(name) {
            assert_eq!(&second[name], bytes, "{name} was rewritten");
        }
    }
    // Nothing left to do; `never` and `only-missing` both skip; `always` recomputes the selection.
    let out = env.run(&["run", s, "--overwrite", "never"]);
    assert!(stderr(&out).contains("0 to run"), "{}", stderr(&out));
    let out = env.run(&[
        "run",
        s,
        "--only",
        "method=zs",
        "--only",
        "seed=1",
        "--overwrite",
        "always",
    ]);
    assert!(stderr(&out).contains("1 to run"), "{}", stderr(&out));

    // Report, baseline and check.
    let out = env.run(&["report", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(env.path("reports/tiny/report.md")).unwrap();
    assert!(
        md.contains("## few-shot") && md.contains("## base-to-new") && md.contains("| hm "),
        "{md}"
    );
    assert!(env.path("reports/tiny/aggregate.csv").is_file());
    let out = env.run(&["baseline", "save", "nightly", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["check", s, "--baseline", "nightly"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A baseline 50 points better than reality is a regression; a missing cell is too.
    let path = env.path("baselines/nightly.json");
    let mut b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rows = b["rows"].as_array_mut().unwrap();
    let m = rows[0]["mean"].as_f64().unwrap();
    rows[0]["mean"] = serde_json::json!(m + 50.0);
    std::fs::write(&path, serde_json::to_vec(&b).unwrap()).unwrap();
    let out = env.run(&["check", s, "--baseline", "nightly"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("REGRESSED"));
    assert!(stderr(&out).contains("check failed"), "{}", stderr(&out));
}

#[test]
fn a_failing_cell_records_its_error_and_runs_again_next_time() {
    let env = Env::new();
    // "a photo of a" is four tokens: n_ctx = 3 cannot hold it, which only tokenizing shows.
    let text = TINY
        .replace("n_ctx = 4", "n_ctx = 3")
        .replace("methods = [\"coop\"]\ndatasets", "methods = [\"zs\"]\ndatasets");
    let suite = env.write_suite("tiny.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("2 cells failed"), "{}", stderr(&out));
    let failed: Vec<serde_json::Value> = env
        .records("tiny")
        .values()
        .map(|b| serde_json::from_slice(b).unwrap())
        .filter(|r: &serde_json::Value| r["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("n_ctx = 3"),
        "{}",
        failed[0]["error"]
    );
    let out = env.run(&["run", s]);
    assert!(stderr(&out).contains("2 to run"), "{}", stderr(&out));
}

#[test]
fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let env = Env::new();
    let out = env.run(&["validate", "missing.toml"]);
    assert!(!out.status.success());
    assert!(stderr(&out).starts_with("error: missing.toml:"), "{}", stderr(&out));
    let bad = env.write_suite("bad.toml", &TINY.replace("[eval]", "[eval\n"));
    let out = env.run(&["validate", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    // An unwritable store fails before anything runs.
    let suite = env.write_suite("tiny.toml", TINY);
    std::fs::write(env.path("not-a-dir"), b"").unwrap();
    let out = env.run(&["run", suite.to_str().unwrap(), "--store", "not-a-dir"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("results store"), "{}", stderr(&out));
    let out = env.run(&["run", suite.to_str().unwrap(), "--only", "colour=red"]);
    assert!(!out.status.success());
    if !cfg!(feature = "cuda") {
        // Said before anything runs, whether or not there is work to do.
        let out = env.run(&["run", suite.to_str().unwrap(), "--backend", "cuda"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("--features cuda"), "{}", stderr(&out));
        assert!(!env.path("results/tiny").exists(), "nothing should have been created");
    }
    let out = env.run(&["check", suite.to_str().unwrap(), "--baseline", "nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope.json"), "{}", stderr(&out));
}

#[test]
fn a_backbone_from_the_lock_runs_on_the_world_and_a_wrong_digest_stops_the_run() {
    let env = Env::new();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip-hf");
    let out = env.run(&["lock", "digest", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(digest.len(), 64);
    let lock = |sha: &str| {
        format!(
            "version = 1\n[backbones.tiny]\npath = \"{}\"\nsha256 = \"{sha}\"\n",
            model.display()
        )
    };
    std::fs::write(env.path("datasets.lock"), lock(&digest)).unwrap();
    let text = TINY
        .replace("name = \"micro-clip\"", "name = \"tiny\"")
        .replace("methods = [\"zs\", \"coop\"]", "methods = [\"zs\"]")
        .replace("methods = [\"coop\"]\ndatasets", "methods = [\"zs\"]\ndatasets");
    let suite = env.write_suite("tiny.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rec: serde_json::Value = serde_json::from_slice(env.records("tiny").values().next().unwrap()).unwrap();
    assert_eq!(rec["digests"]["weights_sha256"], digest.as_str());
    assert!(rec["digests"]["backbone"].as_str().unwrap().starts_with("tiny@sha256:"));
    // Another digest is another backbone: new keys, and a run that refuses the file.
    std::fs::write(env.path("datasets.lock"), lock(&"0".repeat(64))).unwrap();
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
    let out = env.run(&["validate", s]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without the pin the suite still validates (a paper suite before its backbone is pinned) and
    // says why its keys cannot be computed; `run` refuses it.
    std::fs::remove_file(env.path("datasets.lock")).unwrap();
    let out = env.run(&["validate", s]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cell keys not computed here") && text.contains("backbone `tiny`"),
        "{text}"
    );
    let out = env.run(&["run", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("backbone `tiny`"), "{}", stderr(&out));
}

#[test]
fn two_runners_on_one_store_share_the_cells_and_compute_each_once() {
    let env = Env::new();
    let suite = env.write_suite("tiny.toml", TINY);
    let s = suite.to_str().unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_gram-bench"))
            .args(["run", s, "--no-report"])
            .current_dir(env.dir.path())
            .env("GRAM_BENCH_CACHE", env.path("cache"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let ran = |o: &Output| -> usize {
        let e = stderr(o);
        let line = e
            .lines()
            .find(|l| l.starts_with("ran "))
            .unwrap_or_else(|| panic!("{e}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(ran(&a) + ran(&b), 6, "A:\n{}\nB:\n{}", stderr(&a), stderr(&b));
    let records = env.records("tiny");
    assert_eq!(records.len(), 6);
    for bytes in records.values() {
        let r: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r["status"], "ok");
    }
}

/// A miniature EuroSAT in CoOp's layout: `eurosat/2750/<Class>/<Class>_<i>.png` + split file.
fn eurosat_replica(root: &Path) {
    let classes = ["AnnualCrop", "Forest", "Highway", "River"];
    let names = ["Annual Crop Land", "Forest", "Highway or Road", "River"];
    let dir = root.join("eurosat");
    let mut split = serde_json::json!({"train": [], "val": [], "test": []});
    for (label, (c, n)) in classes.iter().zip(names).enumerate() {
        std::fs::create_dir_all(dir.join("2750").join(c)).unwrap();
        for i in 0..5 {
            let rel = format!("{c}/{c}_{i}.png");
            let img = image::RgbImage::from_fn(40, 36, |x, y| {
                image::Rgb([(label * 60) as u8, (x * 6) as u8, (y * 7 + i * 20) as u8])
            });
            img.save(dir.join("2750").join(&rel)).unwrap();
            let part = match i {
                0 | 1 => "train",
                2 => "val",
                _ => "test",
            };
            split[part]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!([rel, label, n]));
        }
    }
    std::fs::write(dir.join("split_zhou_EuroSAT.json"), serde_json::to_vec(&split).unwrap()).unwrap();
}

/// `[backbones.tiny]`: the committed fixture model, pinned with the digest `lock digest` prints.
fn tiny_backbone(env: &Env) -> String {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-clip-hf");
    let out = env.run(&["lock", "digest", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    format!(
        "[backbones.tiny]\npath = \"{}\"\nsha256 = \"{digest}\"\n",
        model.display()
    )
}

/// TINY on the fixture backbone and a dataset from the data root, without a world. The fixture's
/// 1000-token vocabulary splits "a photo of a" into 5 tokens, so CoOp's context starts random.
fn real_data_suite(dataset: &str) -> String {
    let world = TINY.find("[world]").unwrap();
    let eval = TINY.find("[eval]").unwrap();
    format!("{}{}", &TINY[..world], &TINY[eval..])
        .replace("name = \"micro-clip\"", "name = \"tiny\"")
        .replace("datasets = [\"shapes\"]", &format!("datasets = [\"{dataset}\"]"))
        .replace("ctx_init = \"a photo of a\"", "ctx_init = \"\"")
}

#[test]
fn a_coop_dataset_runs_end_to_end_with_the_committed_tiny_model() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    std::fs::write(
        env.path("datasets.lock"),
        format!("version = 1\n{}", tiny_backbone(&env)),
    )
    .unwrap();
    let text = real_data_suite("eurosat");
    let suite = env.write_suite("real.toml", &text);
    let s = suite.to_str().unwrap();
    // Without a data root the suite cannot be keyed, and says how to give one.
    let out = env.run(&["plan", s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--data-root"), "{}", stderr(&out));
    let out = env.run(&["run", s, "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("building the embedded world"),
        "{}",
        stderr(&out)
    );
    let records = env.records("tiny");
    assert_eq!(records.len(), 6);
    let mut saw_new = false;
    for bytes in records.values() {
        let r: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(r["status"], "ok", "{}", r["error"]);
        if r["cell"]["target_classes"] == "new" {
            saw_new = true;
            // EuroSAT's 4 classes: base = the first 2, new = the last 2, each relabelled.
            let names: Vec<&str> = r["per_class"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["class"].as_str().unwrap())
                .collect();
            assert_eq!(names, vec!["Highway or Road", "River"]);
            assert_eq!(r["metrics"]["total"], 4);
        }
    }
    assert!(saw_new);
    // Changing the split file changes the keys: the old records no longer match.
    let split = env.path("DATA/eurosat/split_zhou_EuroSAT.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&split).unwrap()).unwrap();
    v["test"].as_array_mut().unwrap().pop();
    std::fs::write(&split, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = env.run(&["plan", s, "--data-root", "DATA"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 done, 6 missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn datasets_lock_pins_what_is_there_and_verify_names_each_problem_and_its_fix() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    std::fs::write(
        env.path("datasets.lock"),
        "version = 1\n[backbones.x]\npath = \"m\"\nsha256 = \"00\"\n",
    )
    .unwrap();
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let out = env.run(&["datasets", "verify", "--data-root", "DATA"]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("FAIL  eurosat: not pinned"), "{}", stdout(&out));
    let out = env.run(&["datasets", "lock", "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lock = std::fs::read_to_string(env.path("datasets.lock")).unwrap();
    assert!(
        lock.contains("[datasets.eurosat]") && lock.contains("[backbones.x]"),
        "{lock}"
    );
    let out = env.run(&["datasets", "verify", "--data-root", "DATA", "--deep"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ok    eurosat: 4 classes, train/val/test [8, 4, 8]"),
        "{}",
        stdout(&out)
    );

    let out = env.run(&["datasets", "describe", "eurosat", "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = stdout(&out);
    assert!(
        d.contains("a centered satellite photo of {}.") && d.contains("base / new  2 / 2"),
        "{d}"
    );
    assert!(
        d.contains("classes     Annual Crop Land, Forest, Highway or Road, River"),
        "{d}"
    );
    // An image gone: only --deep looks at the image files.
    std::fs::remove_file(env.path("DATA/eurosat/2750/River/River_4.png")).unwrap();
    assert!(env
        .run(&["datasets", "verify", "eurosat", "--data-root", "DATA"])
        .status
        .success());
    let out = env.run(&["datasets", "verify", "eurosat", "--data-root", "DATA", "--deep"]);
    assert!(
        stdout(&out).contains("1 images the split lists are absent"),
        "{}",
        stdout(&out)
    );

    // A changed split file: verify says so, and a run refuses it unless told otherwise.
    let split = env.path("DATA/eurosat/split_zhou_EuroSAT.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&split).unwrap()).unwrap();
    v["test"].as_array_mut().unwrap().pop();
    std::fs::write(&split, serde_json::to_vec(&v).unwrap()).unwrap();
    let out = env.run(&["datasets", "verify", "eurosat", "--data-root", "DATA"]);
    assert!(stdout(&out).contains("split definition changed"), "{}", stdout(&out));
    let lock = std::fs::read_to_string(env.path("datasets.lock"))
        .unwrap()
        .replace("[backbones.x]\npath = \"m\"\nsha256 = \"00\"\n", &tiny_backbone(&env));
    std::fs::write(env.path("datasets.lock"), lock).unwrap();
    let text = real_data_suite("eurosat")
        .replace("methods = [\"zs\", \"coop\"]", "methods = [\"zs\"]")
        .replace("methods = [\"coop\"]\ndatasets", "methods = [\"zs\"]\ndatasets");
    let suite = env.write_suite("real.toml", &text);
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("differs from what datasets.lock pins"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&[
        "run",
        suite.to_str().unwrap(),
        "--data-root",
        "DATA",
        "--allow-changed-data",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // ImageNet laid out wrong: loose validation JPEGs, and a variant without classnames.txt.
    let inet = env.path("DATA/imagenet");
    std::fs::create_dir_all(inet.join("images/train/n01440764")).unwrap();
    std::fs::create_dir_all(inet.join("images/val")).unwrap();
    std::fs::write(inet.join("images/val/ILSVRC2012_val_00000001.JPEG"), b"x").unwrap();
    std::fs::write(inet.join("classnames.txt"), "n01440764 tench\n").unwrap();
    let out = env.run(&["datasets", "verify", "imagenet", "--data-root", "DATA"]);
    assert!(stdout(&out).contains("1 loose JPEGs"), "{}", stdout(&out));
    std::fs::create_dir_all(env.path("DATA/imagenet-rendition/imagenet-r/n01440764")).unwrap();
    let out = env.run(&["datasets", "verify", "imagenet_r", "--data-root", "DATA"]);
    assert!(stdout(&out).contains("no classnames.txt"), "{}", stdout(&out));
}

#[test]
fn a_user_dataset_declared_in_the_lock_runs_without_code() {
    let env = Env::new();
    // A EuroSAT-shaped dataset under another name, folder and template.
    eurosat_replica(&env.path("DATA"));
    std::fs::rename(env.path("DATA/eurosat"), env.path("DATA/my-fields")).unwrap();
    let lock = format!(
        "version = 1\n{}\n[user_datasets.fields]\nfolder = \"my-fields\"\nsplit_file = \"split_zhou_EuroSAT.json\"\n\
         image_dir = \"2750\"\ntemplate = \"an aerial photo of {{}}.\"\n",
        tiny_backbone(&env)
    );
    std::fs::write(env.path("datasets.lock"), &lock).unwrap();
    let text = real_data_suite("fields");
    let suite = env.write_suite("user.toml", &text);
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.records("tiny").len(), 6);
    let out = env.run(&["datasets", "lock", "fields", "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["datasets", "verify", "fields", "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // A user dataset may not shadow a built-in one.
    std::fs::write(
        env.path("datasets.lock"),
        lock.replace("[user_datasets.fields]", "[user_datasets.eurosat]"),
    )
    .unwrap();
    let out = env.run(&["validate", suite.to_str().unwrap()]);
    assert!(stderr(&out).contains("name of a built-in dataset"), "{}", stderr(&out));
}

/// The records of a store as JSON values.
fn record_values(env: &Env, suite: &str) -> Vec<serde_json::Value> {
    env.records(suite)
        .values()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect()
}

/// A few-shot CoOp suite on the EuroSAT replica with the given `[data]` policy and seeds.
fn eurosat_fewshot_suite(fewshot: &str, on_corrupt: &str, methods: &str, seeds: &str) -> String {
    let text = real_data_suite("eurosat");
    let b2n = text.find("[[experiment]]\nprotocol = \"base-to-new\"").unwrap();
    text[..b2n]
        .replace("fewshot = \"sample\"", &format!("fewshot = \"{fewshot}\""))
        .replace("on_corrupt = \"fail\"", &format!("on_corrupt = \"{on_corrupt}\""))
        .replace("methods = [\"zs\", \"coop\"]", &format!("methods = {methods}"))
        .replace("seeds = [1, 2]", &format!("seeds = {seeds}"))
}

fn tiny_lock(env: &Env) {
    std::fs::write(
        env.path("datasets.lock"),
        format!("version = 1\n{}", tiny_backbone(env)),
    )
    .unwrap();
}

#[test]
fn coop_few_shot_files_pick_the_reference_images_and_bad_ones_fail_their_cell() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let cache = env.path("DATA/eurosat/split_fewshot");
    std::fs::create_dir_all(&cache).unwrap();
    for f in ["shot_1-seed_1.pkl", "shot_1-seed_2.pkl", "shot_1-seed_3.pkl"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/coop_fewshot")
                .join(f),
            cache.join(f),
        )
        .unwrap();
    }
    let suite = env.write_suite(
        "pkl.toml",
        &eurosat_fewshot_suite("coop", "fail", "[\"coop\"]", "[1, 2, 3, 4]"),
    );
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(!out.status.success(), "seeds 3 and 4 must fail");
    let by_seed = |seed: u64| {
        record_values(&env, "tiny")
            .into_iter()
            .find(|r| r["cell"]["seed"] == seed)
            .unwrap()
    };
    // The replica's train split is images 0 and 1 of each class in class order; the file picks
    // AnnualCrop_1, Forest_0, Highway_1, River_0, and its val holds image 2 of each class.
    let r = by_seed(1);
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    assert_eq!(r["fewshot"]["source"], "coop-pkl");
    assert_eq!(r["fewshot"]["train"], serde_json::json!([1, 2, 5, 6]));
    assert_eq!(r["fewshot"]["val"], serde_json::json!([0, 1, 2, 3]));
    assert_eq!(r["fewshot"]["sha256"].as_str().unwrap().len(), 64);
    // ImageNet-style files hold no val: that half is sampled.
    let r = by_seed(2);
    assert_eq!(r["fewshot"]["train"], serde_json::json!([0, 3, 4, 7]));
    assert_eq!(r["fewshot"]["val_source"], "sampled");
    let r = by_seed(3);
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("has label 3 but the split file says 1"),
        "{}",
        r["error"]
    );
    let r = by_seed(4);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("shot_1-seed_4.pkl: CoOp's few-shot file is not there"),
        "{}",
        r["error"]
    );
    // "coop-if-present" samples where there is no file; the file's cells keep their own keys.
    let suite = env.write_suite(
        "pkl.toml",
        &eurosat_fewshot_suite("coop-if-present", "fail", "[\"coop\"]", "[1, 4]"),
    );
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sampled: Vec<serde_json::Value> = record_values(&env, "tiny")
        .into_iter()
        .filter(|r| r["fewshot"]["source"] == "sampled")
        .collect();
    assert_eq!(sampled.len(), 1);
    assert_eq!(sampled[0]["cell"]["seed"], 4);
}

#[test]
fn a_corrupt_image_fails_its_cell_or_is_skipped_and_counted_as_the_suite_says() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let bad = env.path("DATA/eurosat/2750/River/River_4.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let suite = env.write_suite("c.toml", &eurosat_fewshot_suite("sample", "fail", "[\"zs\"]", "[1]"));
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(!out.status.success());
    let r = &record_values(&env, "tiny")[0];
    assert!(r["error"].as_str().unwrap().contains("River_4.png"), "{}", r["error"]);
    let suite = env.write_suite(
        "c.toml",
        &eurosat_fewshot_suite("sample", "skip", "[\"zs\", \"coop\"]", "[1]"),
    );
    let out = env.run(&["run", suite.to_str().unwrap(), "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for r in record_values(&env, "tiny").iter().filter(|r| r["status"] == "ok") {
        assert_eq!(r["metrics"]["total"], 7, "8 test images, one corrupt");
        assert_eq!(r["skipped_images"].as_array().unwrap().len(), 1);
        assert!(r["skipped_images"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("River_4.png"));
    }
    // --deep verify names it too.
    let out = env.run(&["datasets", "verify", "eurosat", "--data-root", "DATA", "--deep"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 images do not decode"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_feature_cache_serves_frozen_encoders_with_the_numbers_of_encoding_every_time() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let text = real_data_suite("eurosat");
    let suite = env.write_suite("f.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s, "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&[
        "run",
        s,
        "--data-root",
        "DATA",
        "--store",
        "plain",
        "--no-feature-cache",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cached = record_values(&env, "tiny");
    let origins: Vec<&str> = cached.iter().map(|r| r["features"].as_str().unwrap()).collect();
    // One computation of EuroSAT's test features; every other evaluation reads them.
    assert_eq!(origins.iter().filter(|&&o| o == "computed").count(), 1, "{origins:?}");
    assert_eq!(origins.iter().filter(|&&o| o == "cached").count(), cached.len() - 1);
    let plain_dir = env.path("plain/tiny/records");
    for r in &cached {
        let key = r["key"].as_str().unwrap();
        let p: serde_json::Value =
            serde_json::from_slice(&std::fs::read(plain_dir.join(format!("{key}.json"))).unwrap()).unwrap();
        assert_eq!(p["features"], "encoded");
        assert_eq!(p["metrics"]["correct"], r["metrics"]["correct"], "cell {key}");
        assert_eq!(p["per_class"], r["per_class"], "cell {key}");
    }
    let files: Vec<_> = std::fs::read_dir(env.path("cache/features")).unwrap().collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn a_dataset_declared_in_the_suite_runs_and_verifies_without_the_lock_knowing_it() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    std::fs::rename(env.path("DATA/eurosat"), env.path("DATA/my-fields")).unwrap();
    tiny_lock(&env);
    let decl = "[datasets.fields]\nfolder = \"my-fields\"\nsplit_file = \"split_zhou_EuroSAT.json\"\n\
                image_dir = \"2750\"\ntemplate = \"an aerial photo of {}.\"\n\n[check]";
    let text = real_data_suite("fields").replacen("[check]", decl, 1);
    let suite = env.write_suite("own.toml", &text);
    let s = suite.to_str().unwrap();
    let out = env.run(&["run", s, "--data-root", "DATA"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.records("tiny").len(), 6);
    let out = env.run(&["datasets", "describe", "fields", "--suite", s, "--data-root", "DATA"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("an aerial photo of {}."),
        "{}",
        stderr(&out)
    );
    // Without --suite the lock does not know it.
    let out = env.run(&["datasets", "describe", "fields", "--data-root", "DATA"]);
    assert!(stderr(&out).contains("unknown dataset `fields`"), "{}", stderr(&out));
    // A declaration that disagrees with the lock's is refused.
    let lock = std::fs::read_to_string(env.path("datasets.lock")).unwrap()
        + "[user_datasets.fields]\nfolder = \"other\"\nsplit_file = \"s.json\"\nimage_dir = \"\"\ntemplate = \"{}\"\n";
    std::fs::write(env.path("datasets.lock"), lock).unwrap();
    let out = env.run(&["plan", s, "--data-root", "DATA"]);
    assert!(
        stderr(&out).contains("declares dataset `fields` differently"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_names_changed_class_names_and_changed_image_files() {
    let env = Env::new();
    // A miniature ImageNet-Sketch: wnid folders + classnames.txt.
    let sk = env.path("DATA/imagenet-sketch");
    for (k, wnid) in ["n01440764", "n01443537"].iter().enumerate() {
        std::fs::create_dir_all(sk.join("images").join(wnid)).unwrap();
        for i in 0..2 {
            image::RgbImage::from_pixel(9, 9, image::Rgb([k as u8 * 90, i * 50, 7]))
                .save(sk.join("images").join(wnid).join(format!("sketch_{i}.JPEG.png")))
                .unwrap();
        }
    }
    std::fs::write(sk.join("classnames.txt"), "n01440764 tench\nn01443537 goldfish\n").unwrap();
    std::fs::write(env.path("datasets.lock"), "version = 1\n").unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec!["datasets", "verify", "imagenet_sketch", "--data-root", "DATA"];
        args.extend(extra);
        let out = env.run(&args);
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let out = env.run(&["datasets", "lock", "imagenet_sketch", "--data-root", "DATA", "--deep"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lock = std::fs::read_to_string(env.path("datasets.lock")).unwrap();
    assert!(
        lock.contains("classnames_sha256") && lock.contains("images_sha256"),
        "{lock}"
    );
    assert!(verify(&["--deep"]).0);
    // Same folders, another name for a class: the prompts change, so the pin must say so.
    std::fs::write(sk.join("classnames.txt"), "n01440764 tench fish\nn01443537 goldfish\n").unwrap();
    let (ok, text) = verify(&[]);
    assert!(!ok && text.contains("classnames.txt changed"), "{text}");
    std::fs::write(sk.join("classnames.txt"), "n01440764 tench\nn01443537 goldfish\n").unwrap();
    // An image rewritten in place: only --deep reads the files.
    image::RgbImage::from_pixel(9, 9, image::Rgb([1, 2, 3]))
        .save(sk.join("images/n01440764/sketch_0.JPEG.png"))
        .unwrap();
    assert!(verify(&[]).0);
    let (ok, text) = verify(&["--deep"]);
    assert!(!ok && text.contains("image files changed"), "{text}");
}

#[test]
fn released_checkpoints_are_evaluated_as_their_own_cells() {
    let env = Env::new();
    eurosat_replica(&env.path("DATA"));
    tiny_lock(&env);
    let released = env.path("released");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/released");
    for m in ["coop", "cocoop"] {
        let rel = format!("{m}/eurosat/seed1/prompt_learner/model.pth.tar-2");
        std::fs::create_dir_all(released.join(&rel).parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(&rel), released.join(&rel)).unwrap();
    }
    let text = eurosat_fewshot_suite("sample", "fail", "[\"coop\", \"cocoop\"]", "[1]")
        .replace(
            "seeds = [1]\n",
            "seeds = [1]\ncheckpoint = \"${GB_RELEASED}/{method}/{dataset}/seed{seed}/prompt_learner/model.pth.tar-2\"\n",
        )
        .replace(
            "[[experiment]]",
            "[methods.cocoop]\nkind = \"cocoop\"\nn_ctx = 4\nctx_init = \"\"\ninit_std = 0.02\nmeta_net_reduction = 16\n\
             batch_size = 4\nepochs = 1\noptim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, \
             warmup_lr = 1e-5 }\n\n[[experiment]]",
        );
    let suite = env.write_suite("released.toml", &text);
    let s = suite.to_str().unwrap();
    let run = |env: &Env| {
        Command::new(env!("CARGO_BIN_EXE_gram-bench"))
            .args(["run", s, "--data-root", "DATA"])
            .current_dir(env.dir.path())
            .env("GRAM_BENCH_CACHE", env.path("cache"))
            .env("GB_RELEASED", &released)
            .output()
            .unwrap()
    };
    let out = run(&env);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = gram_bench::clip::weights::SafetensorsStore::open(&[fixtures.join("expected.safetensors")]).unwrap();
    let records = record_values(&env, "tiny");
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r["cell"]["phase"], "checkpoint");
        assert_eq!(r["status"], "ok", "{}", r["error"]);
        assert!(r["train"].is_null(), "nothing is trained");
        assert_eq!(r["digests"]["checkpoint"]["sha256"].as_str().unwrap().len(), 64);
        // The loaded parameters are the checkpoint's, to the bit.
        let key = r["key"].as_str().unwrap();
        let art: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.path(&format!("results/tiny/artifacts/{key}.json"))).unwrap())
                .unwrap();
        let method = r["cell"]["method"].as_str().unwrap();
        for (name, v) in art.as_object().unwrap() {
            let (shape, data) = expected.read(&format!("{method}.{name}")).unwrap();
            assert_eq!(v[0], serde_json::json!(shape), "{method}.{name}");
            let got: Vec<f32> = v[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got, data, "{method}.{name}");
        }
    }
    // Another file is another cell; a missing one fails its cell with the path.
    std::fs::remove_file(released.join("coop/eurosat/seed1/prompt_learner/model.pth.tar-2")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gram-bench"))
        .args(["plan", s, "--data-root", "DATA"])
        .current_dir(env.dir.path())
        .env("GB_RELEASED", &released)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 done, 1 missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&env);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the released checkpoint is not there"),
        "{}",
        stderr(&out)
    );
}

/// GRAM through a suite: one meta-training cell (textual and visual prompts, as UNIGRAM's) serves
/// a textual host (CoOp), a visual one (VPT) and the ablation without either part, which equals
/// the host; the report pairs each with its host; mismatched layouts are refused when read.
#[test]
fn gram_meta_trains_once_serves_textual_and_visual_hosts_and_its_ablation_without_either_part_is_the_host() {
    let env = Env::new();
    let gram = r#"
[gram.meta]
seed = 1
corpus = { world = { size = 60 } }

[gram.meta.train]
text = { n_ctx = 4, depth = 1 }
vision = { n_ctx = 2, depth = 1 }
init_std = 0.02
inner_lr = 1.0
inner_steps = 1
task_embedding = "image-mean"
outer_lr = 1e-3
weight_decay = 0.0
clip_norm = 1.0
steps = 3
tasks_per_step = 1
cluster = { domains = 2, classes_per_domain = 2, iterations = 5, order = "captions-then-images" }
episode = { ways = 2, shots = 1, queries = 2, query = "nearest-class-other-domain" }
regulator = { rank = 4, hidden_layers = 0, coef_hidden = 8, init = "xavier" }

[methods.vpt]
kind = "vpt"
n_ctx = 2
depth = 1
init_std = 0.02
text_template = "a photo of a {}."
batch_size = 8
epochs = 2
optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }

[methods.gram-c]
kind = "gram"
host = "coop"
meta = "meta"
init = true
regulate = true

[methods.gram-v]
kind = "gram"
host = "vpt"
meta = "meta"
init = true
regulate = true

[methods.gram-none]
kind = "gram"
host = "coop"
meta = "meta"
init = false
regulate = false

[[experiment]]
protocol = "few-shot"
methods = ["coop", "gram-c", "gram-none", "vpt", "gram-v"]
datasets = ["shapes"]
shots = [1]
seeds = [1, 2]

[[compare]]
method = "gram-v"
against = "gram-c"
"#;
    let b2n = TINY.find("[[experiment]]").unwrap();
    let text = format!("{}{gram}", &TINY[..b2n]);
    let suite = env.write_suite("gram.toml", &text);
    let out = env.run(&["run", suite.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = record_values(&env, "tiny");
    let meta: Vec<&serde_json::Value> = records.iter().filter(|r| r["cell"]["phase"] == "meta").collect();
    assert_eq!(meta.len(), 1, "one meta-training cell serves every gram method");
    assert_eq!(meta[0]["status"], "ok", "{}", meta[0]["error"]);
    assert_eq!(meta[0]["train"]["steps"], 3);
    assert!(meta[0]["train"]["fit"]["final_vision_coefficient"].is_number());
    let by = |m: &str, seed: u64| {
        records
            .iter()
            .find(|r| r["cell"]["method"] == m && r["cell"]["seed"] == seed)
            .unwrap()
    };
    for m in ["gram-c", "gram-v"] {
        assert_eq!(by(m, 1)["status"], "ok", "{}", by(m, 1)["error"]);
        assert_eq!(by(m, 1)["digests"]["meta"]["cell"], meta[0]["key"]);
    }
    // The visual host's prompt started from θ₀'s `vision.0`, not its own draw.
    assert_ne!(
        by("gram-v", 1)["train"]["epoch_loss"],
        by("vpt", 1)["train"]["epoch_loss"]
    );
    // Neither θ₀ nor ψ_φ: exactly the host.
    assert_eq!(by("gram-none", 1)["metrics"], by("coop", 1)["metrics"]);
    assert_eq!(
        by("gram-none", 1)["train"]["epoch_loss"],
        by("coop", 1)["train"]["epoch_loss"]
    );
    // The report pairs each gram method with its host by seed.
    let report = std::fs::read_to_string(env.path("reports/tiny/report.md")).unwrap();
    assert!(report.contains("## ±GRAM (paired over seeds)"), "{report}");
    let csv = std::fs::read_to_string(env.path("reports/tiny/gram_delta.csv")).unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with("few-shot,coop,gram-none,shapes,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        row.contains(",2,") && row.ends_with(",0.000000,0.000000,no clear effect"),
        "{row}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("few-shot,vpt,gram-v,shapes,")),
        "{csv}"
    );
    // A declared comparison is paired the same way.
    assert!(
        csv.lines().any(|l| l.starts_with("few-shot,gram-c,gram-v,shapes,")),
        "{csv}"
    );
    let e = parse(&text.replace("against = \"gram-c\"", "against = \"gram-x\"")).unwrap_err();
    assert!(e.contains("compare: unknown method `gram-x`"), "{e}");

    // Layouts the meta run does not provide are refused when the suite is read.
    let e = parse(&text.replace("text = { n_ctx = 4, depth = 1 }", "text = { n_ctx = 2, depth = 1 }")).unwrap_err();
    assert!(
        e.contains("has 4 text tokens per layer but [gram.meta] meta-learns 2"),
        "{e}"
    );
    let deep = text.replace("n_ctx = 2\ndepth = 1", "n_ctx = 2\ndepth = 2");
    let e = parse(&deep).unwrap_err();
    assert!(e.contains("needs θ₀ `vision.1`"), "{e}");
    let no_vision = text.replace("vision = { n_ctx = 2, depth = 1 }\n", "");
    let e = parse(&no_vision.replace(
        "init = true\nregulate = true\n\n[methods.gram-none]",
        "init = false\nregulate = true\n\n[methods.gram-none]",
    ))
    .unwrap_err();
    assert!(
        e.contains("has vision prompts but [gram.meta] has no vision regulator"),
        "{e}"
    );
}

/// A meta-training run on an open_clip-style TSV corpus named by the suite: the meta cell's key
/// follows the corpus file (one changed caption → a new meta cell), and the gram cell records the
/// artifact's digest.
#[test]
fn gram_meta_trains_on_a_tsv_corpus_named_by_the_suite() {
    let env = Env::new();
    let dir = env.path("corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = vec!["filepath\ttitle".to_string()];
    for (d, style) in ["a photo of a", "a pencil sketch of a"].iter().enumerate() {
        for (c, (name, rgb)) in [
            ("red", [200u8, 30, 30]),
            ("green", [30, 180, 40]),
            ("blue", [30, 40, 200]),
        ]
        .iter()
        .enumerate()
        {
            for i in 0..4u8 {
                let file = format!("img_{d}_{c}_{i}.png");
                image::RgbImage::from_fn(32, 32, |x, y| {
                    let t = ((x * (d as u32 + 1) + y) as u8).wrapping_mul(7).wrapping_add(i * 13);
                    image::Rgb([rgb[0].wrapping_add(t / 6), rgb[1].wrapping_add(t / 6), rgb[2]])
                })
                .save(dir.join(&file))
                .unwrap();
                lines.push(format!("{file}\t{style} {name} circle"));
            }
        }
    }
    let tsv = dir.join("pairs.tsv");
    std::fs::write(&tsv, lines.join("\n")).unwrap();
    let gram = format!(
        r#"
[gram.cc]
seed = 3
corpus = {{ csv = {{ path = "{}", image_column = "filepath", caption_column = "title", separator = "\t" }} }}

[gram.cc.train]
text = {{ n_ctx = 4, depth = 1 }}
init_std = 0.02
inner_lr = 1.0
inner_steps = 1
task_embedding = "image-mean"
outer_lr = 1e-3
weight_decay = 0.0
clip_norm = 1.0
steps = 4
tasks_per_step = 2
cluster = {{ domains = 2, classes_per_domain = 3, iterations = 10, order = "captions-then-images" }}
episode = {{ ways = 2, shots = 1, queries = 2, query = "nearest-class-other-domain" }}
regulator = {{ rank = 4, hidden_layers = 0, coef_hidden = 8, init = "xavier" }}

[methods.gram-c]
kind = "gram"
host = "coop"
meta = "cc"
init = true
regulate = true

[[experiment]]
protocol = "few-shot"
methods = ["gram-c"]
datasets = ["shapes"]
shots = [1]
seeds = [1]
"#,
        tsv.display()
    );
    let b2n = TINY.find("[[experiment]]").unwrap();
    let suite = env.write_suite("gram.toml", &format!("{}{gram}", &TINY[..b2n]));
    let out = env.run(&["run", suite.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = record_values(&env, "tiny");
    let meta: Vec<&serde_json::Value> = records.iter().filter(|r| r["cell"]["phase"] == "meta").collect();
    assert_eq!(meta.len(), 1);
    assert_eq!(meta[0]["train"]["steps"], 4);
    assert_eq!(meta[0]["train"]["images"], 24);
    let key = meta[0]["key"].as_str().unwrap();
    let artifact = std::fs::read(env.path(&format!("results/tiny/artifacts/{key}.meta.json"))).unwrap();
    let art: serde_json::Value = serde_json::from_slice(&artifact).unwrap();
    assert_eq!(
        art["episodes"].as_array().unwrap().len(),
        8,
        "2 tasks per step, 4 steps"
    );
    assert_eq!(art["corpus_digest"], meta[0]["digests"]["corpus_sha256"]);
    let g = records.iter().find(|r| r["cell"]["method"] == "gram-c").unwrap();
    assert_eq!(g["status"], "ok", "{}", g["error"]);
    assert_eq!(
        g["digests"]["meta"]["artifact_sha256"].as_str().unwrap(),
        gram_bench::files::sha256_hex(&artifact)
    );
    // No checkpoint is left behind by a finished meta cell.
    assert!(!env
        .path(&format!("results/tiny/artifacts/{key}.meta-checkpoint.json"))
        .exists());

    // A corpus image that does not decode: the suite's on_corrupt fails the meta cell naming the
    // file, or leaves the pair out and counts it.
    // (The meta cell's key follows the corpus file, not each image's bytes — as a dataset's
    // follows its split file — so the changed image is picked up by recomputing.)
    let original = std::fs::read(dir.join("img_1_2_3.png")).unwrap();
    std::fs::write(dir.join("img_1_2_3.png"), b"\x89PNG not really").unwrap();
    let out = env.run(&["run", suite.to_str().unwrap(), "--overwrite", "always"]);
    assert!(!out.status.success());
    let records = record_values(&env, "tiny");
    let failed = records
        .iter()
        .find(|r| r["cell"]["phase"] == "meta" && r["status"] == "failed")
        .expect("a failed meta record");
    assert!(
        failed["error"].as_str().unwrap().contains("img_1_2_3.png"),
        "{}",
        failed["error"]
    );
    let skip = std::fs::read_to_string(&suite)
        .unwrap()
        .replace("on_corrupt = \"fail\"", "on_corrupt = \"skip\"");
    let suite_skip = env.write_suite("gram-skip.toml", &skip);
    let out = env.run(&["run", suite_skip.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = record_values(&env, "tiny");
    let skipped = records
        .iter()
        .find(|r| r["cell"]["phase"] == "meta" && r["status"] == "ok" && r["train"]["images"] == 23)
        .expect("a meta record without the broken pair");
    assert_eq!(skipped["skipped_images"].as_array().unwrap().len(), 1);
    std::fs::write(dir.join("img_1_2_3.png"), original).unwrap();

    // One changed caption is another corpus: a new meta cell, and the gram cell follows it.
    std::fs::write(
        &tsv,
        lines
            .join("\n")
            .replace("a photo of a red circle", "a photo of a red disc"),
    )
    .unwrap();
    let out = env.run(&["run", suite.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = record_values(&env, "tiny");
    let changed = records
        .iter()
        .find(|r| r["cell"]["phase"] == "meta" && r["status"] == "ok" && r["train"]["images"] == 24)
        .expect("the changed corpus's meta cell");
    assert_ne!(
        changed["key"].as_str().unwrap(),
        key,
        "a changed corpus is another meta cell"
    );
    let g = records
        .iter()
        .find(|r| r["cell"]["method"] == "gram-c" && r["digests"]["meta"]["cell"] == changed["key"])
        .expect("the gram cell of the changed corpus");
    assert_eq!(g["status"], "ok", "{}", g["error"]);
}
