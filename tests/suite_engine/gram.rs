//! GRAM in suites: meta-training cells, hosts, ablations, TSV corpora.

use crate::common::suite_env::*;

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
adam_epsilon = 1e-8
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
adam_epsilon = 1e-8
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
