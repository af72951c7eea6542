//! Builders for the suite-engine tests: a tiny suite on a tiny embedded world (a micro-CLIP
//! trained for two steps: the numbers are not the point), a temporary working directory that runs
//! the binary, replicas of CoOp's layouts and the committed tiny fixture backbone.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gram_bench::lock::Lock;
use gram_bench::resolve::ResolvedSuite;
use gram_bench::suite::Suite;

pub const TINY: &str = r#"
schema = 1
name = "tiny"
version = 1
description = "test suite"
published = []

[backbone]
name = "micro-clip"
[precision]
default = "f32"

[world]
seed = 3
test_images = 128
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
fail_on = "regression"

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

pub struct Env {
    pub dir: tempfile::TempDir,
}
impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn write_suite(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }
    /// `run` with extra environment variables.
    pub fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gram-bench"))
            .args(args)
            .current_dir(self.dir.path())
            .env("GRAM_BENCH_CACHE", self.path("cache"))
            .envs(vars.iter().copied())
            .output()
            .expect("binary runs")
    }
    pub fn records(&self, suite: &str) -> BTreeMap<String, Vec<u8>> {
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

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn parse(text: &str) -> Result<Suite, String> {
    Suite::parse(Path::new("suites/x.toml"), text).map_err(|e| e.to_string())
}

pub fn keys(text: &str) -> Vec<String> {
    let s = parse(text).unwrap();
    ResolvedSuite::new(s, &Lock::default(), None)
        .unwrap()
        .plan
        .cells
        .into_iter()
        .map(|c| c.key)
        .collect()
}

/// A miniature EuroSAT in CoOp's layout: `eurosat/2750/<Class>/<Class>_<i>.png` + split file.
pub fn eurosat_replica(root: &Path) {
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
pub fn tiny_backbone(env: &Env) -> String {
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
pub fn real_data_suite(dataset: &str) -> String {
    let world = TINY.find("[world]").unwrap();
    let eval = TINY.find("[eval]").unwrap();
    format!("{}{}", &TINY[..world], &TINY[eval..])
        .replace("name = \"micro-clip\"", "name = \"tiny\"")
        .replace("datasets = [\"shapes\"]", &format!("datasets = [\"{dataset}\"]"))
        .replace("ctx_init = \"a photo of a\"", "ctx_init = \"\"")
}

/// TINY's settings with one GRAM experiment instead of its own: a meta-training cell, two train
/// cells that depend on it (seeds 1, 2), and two target evaluations of each.
pub fn tiny_gram_suite() -> String {
    let first = TINY.find("[[experiment]]").unwrap();
    format!("{}{}", &TINY[..first], GRAM_TAIL)
}

const GRAM_TAIL: &str = r#"
[gram.meta]
seed = 1
corpus = { world = { size = 60 } }

[gram.meta.train]
text = { n_ctx = 4, depth = 1 }
init_std = 0.02
inner_lr = 1.0
inner_steps = 1
task_embedding = "image-mean"
outer_lr = 1e-3
weight_decay = 0.0
adam_epsilon = 1e-8
clip_norm = 1.0
steps = 40
tasks_per_step = 1
cluster = { domains = 2, classes_per_domain = 2, iterations = 5, order = "captions-then-images" }
episode = { ways = 2, shots = 1, queries = 2, query = "nearest-class-other-domain" }
regulator = { rank = 4, hidden_layers = 0, coef_hidden = 8, init = "xavier" }

[methods.gram-c]
kind = "gram"
host = "coop"
meta = "meta"
init = true
regulate = true

[[experiment]]
protocol = "cross-domain"
methods = ["gram-c"]
datasets = ["world"]
targets = ["world_sketch", "world_cartoon"]
shots = [1]
seeds = [1, 2]
"#;

/// The records of a store as JSON values.
pub fn record_values(env: &Env, suite: &str) -> Vec<serde_json::Value> {
    env.records(suite)
        .values()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect()
}

/// A few-shot CoOp suite on the EuroSAT replica with the given `[data]` policy and seeds.
pub fn eurosat_fewshot_suite(fewshot: &str, on_corrupt: &str, methods: &str, seeds: &str) -> String {
    let text = real_data_suite("eurosat");
    let b2n = text.find("[[experiment]]\nprotocol = \"base-to-new\"").unwrap();
    text[..b2n]
        .replace("fewshot = \"sample\"", &format!("fewshot = \"{fewshot}\""))
        .replace("on_corrupt = \"fail\"", &format!("on_corrupt = \"{on_corrupt}\""))
        .replace("methods = [\"zs\", \"coop\"]", &format!("methods = {methods}"))
        .replace("seeds = [1, 2]", &format!("seeds = {seeds}"))
}

pub fn tiny_lock(env: &Env) {
    std::fs::write(
        env.path("datasets.lock"),
        format!("version = 1\n{}", tiny_backbone(env)),
    )
    .unwrap();
}
