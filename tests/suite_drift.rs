//! The paper suites cannot drift from the upstream settings silently: every value below is what the
//! upstream code runs (repository@commit, file:line, as `docs/upstream-settings.md`
//! records them), and the test fails when a suite's method says otherwise. A value the project
//! deliberately keeps different is not listed here; it is justified in the suite file instead.

use std::path::Path;

/// PromptSRC's anchor templates: PromptSRC@bb95c77 trainers/imagenet_templates.py:3-64, all 60 of
/// them averaged (trainers/promptsrc.py:122-128).
const IMAGENET_TEMPLATES: &str = "[\"a photo of a {}.\", \"a bad photo of a {}.\", \"a photo of many {}.\", \"a sculpture of a {}.\", \"a photo of the hard to see {}.\", \"a low resolution photo of the {}.\", \"a rendering of a {}.\", \"graffiti of a {}.\", \"a bad photo of the {}.\", \"a cropped photo of the {}.\", \"a tattoo of a {}.\", \"the embroidered {}.\", \"a photo of a hard to see {}.\", \"a bright photo of a {}.\", \"a photo of a clean {}.\", \"a photo of a dirty {}.\", \"a dark photo of the {}.\", \"a drawing of a {}.\", \"a photo of my {}.\", \"the plastic {}.\", \"a photo of the cool {}.\", \"a close-up photo of a {}.\", \"a black and white photo of the {}.\", \"a painting of the {}.\", \"a painting of a {}.\", \"a pixelated photo of the {}.\", \"a sculpture of the {}.\", \"a bright photo of the {}.\", \"a cropped photo of a {}.\", \"a plastic {}.\", \"a photo of the dirty {}.\", \"a jpeg corrupted photo of a {}.\", \"a blurry photo of the {}.\", \"a photo of the {}.\", \"a good photo of the {}.\", \"a rendering of the {}.\", \"a {} in a video game.\", \"a photo of one {}.\", \"a doodle of a {}.\", \"a close-up photo of the {}.\", \"the origami {}.\", \"the {} in a video game.\", \"a sketch of a {}.\", \"a doodle of the {}.\", \"a origami {}.\", \"a low resolution photo of a {}.\", \"the toy {}.\", \"a rendition of the {}.\", \"a photo of the clean {}.\", \"a photo of a large {}.\", \"a rendition of a {}.\", \"a photo of a nice {}.\", \"a photo of a weird {}.\", \"a blurry photo of a {}.\", \"a cartoon {}.\", \"art of a {}.\", \"a sketch of the {}.\", \"a embroidered {}.\", \"a pixelated photo of a {}.\", \"itap of the {}.\"]";

/// ProGrad's teacher templates where they differ from CoOp's: BeierZhu/Prompt-align@1b76203
/// ProGrad.public/trainers/prograd.py:201-217 (CUSTOM_TEMPLATES).
const PROGRAD_TEMPLATES: &str = "{ oxford_pets = \"a type of pet, a photo of a {}.\", oxford_flowers = \"a type of flower, a photo of a {}.\", fgvc_aircraft = \"a type of aircraft, a photo of a {}.\", dtd = \"a texture of {}.\", food101 = \"a type of food, a photo of {}.\" }";

/// (suite, method, key path, the upstream value as a TOML literal, source).
const UPSTREAM: &[(&str, &str, &str, &str, &str)] = &[
    // CoOp few-shot: CoOp@ff61507 train.py:91-95, coop.py:90, configs/trainers/CoOp/vit_b16.yaml, COOP.md.
    ("few-shot", "coop", "n_ctx", "16", "CoOp train.py:91-93"),
    ("few-shot", "coop", "ctx_init", "\"\"", "CoOp train.py:91-93"),
    ("few-shot", "coop", "init_std", "0.02", "CoOp coop.py:90"),
    ("few-shot", "coop", "csc", "false", "CoOp train.py:92"),
    (
        "few-shot",
        "coop",
        "class_token_position",
        "\"end\"",
        "CoOp train.py:95",
    ),
    ("few-shot", "coop", "batch_size", "32", "CoOp vit_b16.yaml:3"),
    ("few-shot", "coop", "optim.lr", "0.002", "CoOp vit_b16.yaml:17"),
    (
        "few-shot",
        "coop",
        "optim.warmup_epochs",
        "1",
        "CoOp vit_b16.yaml:20-22",
    ),
    ("few-shot", "coop", "optim.warmup_lr", "1e-5", "CoOp vit_b16.yaml:20-22"),
    (
        "few-shot",
        "coop",
        "epochs",
        "{ imagenet = 50, 1 = 50, 2 = 100, 4 = 100, 8 = 200, 16 = 200 }",
        "CoOp COOP.md:13,18-22; vit_b16_ep50.yaml:18",
    ),
    // CoOp ctxv1 (base-to-new, cross-dataset, cross-domain): CoOp scripts/cocoop/base2new_train.sh:14-15.
    (
        "base-to-new",
        "coop",
        "n_ctx",
        "4",
        "CoOp coop.py:75 (words of the init)",
    ),
    (
        "base-to-new",
        "coop",
        "ctx_init",
        "\"a photo of a\"",
        "CoOp vit_b16_ctxv1.yaml:33",
    ),
    (
        "base-to-new",
        "coop",
        "epochs",
        "{ imagenet = 50, default = 200 }",
        "CoOp vit_b16_ctxv1.yaml:18",
    ),
    (
        "cross-dataset",
        "coop",
        "ctx_init",
        "\"a photo of a\"",
        "CoOp xd_train.sh:14",
    ),
    (
        "cross-domain",
        "coop",
        "ctx_init",
        "\"a photo of a\"",
        "CoOp xd_train.sh:14",
    ),
    // CoCoOp: CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml.
    ("base-to-new", "cocoop", "n_ctx", "4", "CoCoOp yaml:33"),
    (
        "base-to-new",
        "cocoop",
        "ctx_init",
        "\"a photo of a\"",
        "CoCoOp yaml:34",
    ),
    ("base-to-new", "cocoop", "batch_size", "1", "CoCoOp yaml (batch1)"),
    ("base-to-new", "cocoop", "epochs", "10", "CoCoOp yaml (ep10)"),
    // KgCoOp: htyao89/KgCoOp@c43ccc3 configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml, scripts/run.sh.
    (
        "base-to-new",
        "kgcoop",
        "batch_size",
        "128",
        "KgCoOp vit_b16_ep100_ctxv1.yaml:3",
    ),
    (
        "base-to-new",
        "kgcoop",
        "epochs",
        "100",
        "KgCoOp vit_b16_ep100_ctxv1.yaml:18",
    ),
    ("base-to-new", "kgcoop", "weight", "8.0", "KgCoOp scripts/run.sh:2"),
    (
        "cross-domain",
        "kgcoop",
        "batch_size",
        "128",
        "KgCoOp vit_b16_ep100_ctxv1.yaml:3",
    ),
    (
        "cross-domain",
        "kgcoop",
        "epochs",
        "100",
        "KgCoOp vit_b16_ep100_ctxv1.yaml:18",
    ),
    // ProGrad: BeierZhu/Prompt-align@1b76203 scripts/base2new_train_prograd.sh:15, rn50_ep100.yaml:26.
    (
        "base-to-new",
        "prograd",
        "lambda",
        "1.0",
        "ProGrad base2new_train_prograd.sh:15",
    ),
    (
        "base-to-new",
        "prograd",
        "temperature",
        "1.0",
        "ProGrad rn50_ep100.yaml:26",
    ),
    // MaPLe: muzairkhattak/multimodal-prompt-learning@69bce21 vit_b16_c2_ep5_batch4_2ctx.yaml and
    // vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml.
    (
        "base-to-new",
        "maple",
        "n_ctx",
        "2",
        "MaPLe vit_b16_c2_ep5_batch4_2ctx.yaml:33",
    ),
    (
        "base-to-new",
        "maple",
        "depth",
        "9",
        "MaPLe vit_b16_c2_ep5_batch4_2ctx.yaml:36",
    ),
    (
        "base-to-new",
        "maple",
        "optim.lr",
        "0.0035",
        "MaPLe vit_b16_c2_ep5_batch4_2ctx.yaml:17",
    ),
    (
        "base-to-new",
        "maple",
        "epochs",
        "5",
        "MaPLe vit_b16_c2_ep5_batch4_2ctx.yaml:18",
    ),
    (
        "base-to-new",
        "maple",
        "batch_size",
        "4",
        "MaPLe vit_b16_c2_ep5_batch4_2ctx.yaml:3",
    ),
    (
        "cross-dataset",
        "maple",
        "depth",
        "3",
        "MaPLe ..._cross_datasets.yaml:36",
    ),
    (
        "cross-dataset",
        "maple",
        "optim.lr",
        "0.0026",
        "MaPLe ..._cross_datasets.yaml:17",
    ),
    (
        "cross-dataset",
        "maple",
        "epochs",
        "2",
        "MaPLe ..._cross_datasets.yaml:18",
    ),
    // IVLP: muzairkhattak/PromptSRC@bb95c77 configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml.
    ("base-to-new", "ivlp", "text_depth", "9", "PromptSRC IVLP yaml:34-39"),
    ("base-to-new", "ivlp", "vision_depth", "9", "PromptSRC IVLP yaml:34-39"),
    ("base-to-new", "ivlp", "optim.lr", "0.0025", "PromptSRC IVLP yaml:18"),
    ("base-to-new", "ivlp", "epochs", "20", "PromptSRC IVLP yaml:19"),
    // PromptSRC: muzairkhattak/PromptSRC@bb95c77 configs/trainers/PromptSRC/.
    (
        "base-to-new",
        "promptsrc",
        "text_depth",
        "9",
        "vit_b16_c2_ep20_batch4_4+4ctx.yaml:34-43",
    ),
    (
        "base-to-new",
        "promptsrc",
        "gpa_mean",
        "15.0",
        "vit_b16_c2_ep20_batch4_4+4ctx.yaml:42",
    ),
    (
        "base-to-new",
        "promptsrc",
        "gpa_std",
        "1.0",
        "vit_b16_c2_ep20_batch4_4+4ctx.yaml:43",
    ),
    (
        "base-to-new",
        "promptsrc",
        "text_loss_weight",
        "25.0",
        "vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    ),
    (
        "base-to-new",
        "promptsrc",
        "image_loss_weight",
        "10.0",
        "vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    ),
    (
        "cross-dataset",
        "promptsrc",
        "text_depth",
        "3",
        "..._cross_datasets.yaml:38-41",
    ),
    (
        "cross-dataset",
        "promptsrc",
        "vision_depth",
        "3",
        "..._cross_datasets.yaml:38-41",
    ),
    (
        "cross-dataset",
        "promptsrc",
        "gpa_mean",
        "6.0",
        "..._cross_datasets.yaml:42",
    ),
    (
        "cross-dataset",
        "promptsrc",
        "gpa_std",
        "10.0",
        "..._cross_datasets.yaml:43",
    ),
    (
        "cross-domain",
        "promptsrc",
        "text_depth",
        "3",
        "..._cross_datasets.yaml:38-41",
    ),
    (
        "cross-domain",
        "promptsrc",
        "gpa_mean",
        "6.0",
        "..._cross_datasets.yaml:42",
    ),
    (
        "cross-domain",
        "promptsrc",
        "gpa_std",
        "10.0",
        "..._cross_datasets.yaml:43",
    ),
    ("few-shot", "promptsrc", "epochs", "50", "..._few_shot.yaml:19"),
    (
        "few-shot",
        "promptsrc",
        "gpa_mean",
        "{ stanford_cars = 45.0, oxford_flowers = 45.0, fgvc_aircraft = 45.0, dtd = 45.0, eurosat = 45.0, default = 30.0 }",
        "..._few_shot.yaml:43-47",
    ),
    (
        "few-shot",
        "promptsrc",
        "gpa_std",
        "{ stanford_cars = 5.0, oxford_flowers = 5.0, fgvc_aircraft = 5.0, dtd = 5.0, eurosat = 5.0, default = 30.0 }",
        "..._few_shot.yaml:43-47",
    ),
    ("few-shot", "promptsrc", "text_templates", IMAGENET_TEMPLATES, "promptsrc.py:122-128"),
    ("base-to-new", "promptsrc", "text_templates", IMAGENET_TEMPLATES, "promptsrc.py:122-128"),
    ("cross-dataset", "promptsrc", "text_templates", IMAGENET_TEMPLATES, "promptsrc.py:122-128"),
    ("cross-domain", "promptsrc", "text_templates", IMAGENET_TEMPLATES, "promptsrc.py:122-128"),
    (
        "base-to-new",
        "kgcoop",
        "prior_templates",
        "{ dtd = \"a photo of a {}, a type of texture.\" }",
        "KgCoOp trainers/kgcoop.py:41",
    ),
    (
        "cross-domain",
        "kgcoop",
        "prior_templates",
        "{ dtd = \"a photo of a {}, a type of texture.\" }",
        "KgCoOp trainers/kgcoop.py:41",
    ),
    ("base-to-new", "prograd", "prior_templates", PROGRAD_TEMPLATES, "ProGrad prograd.py:201-217"),
    // ProGrad's prompt and schedule: base2new_train_prograd.sh:12 (N_CTX 16), rn50_ep100.yaml:3,17,18,37
    // (batch 32, 100 epochs, CTX_INIT True = the template's context, prograd.py:78-95).
    ("base-to-new", "prograd", "n_ctx", "16", "ProGrad base2new_train_prograd.sh:12"),
    ("cross-domain", "prograd", "n_ctx", "16", "ProGrad base2new_train_prograd.sh:12"),
    ("base-to-new", "prograd", "ctx_source", "\"template\"", "ProGrad rn50_ep100.yaml:37, prograd.py:78-95"),
    ("cross-domain", "prograd", "ctx_source", "\"template\"", "ProGrad rn50_ep100.yaml:37, prograd.py:78-95"),
    ("base-to-new", "prograd", "transfer_template", "\"target\"", "ProGrad prograd.py:78-95 (the evaluated dataset's CUSTOM_TEMPLATES)"),
    ("cross-domain", "prograd", "transfer_template", "\"target\"", "ProGrad prograd.py:78-95 (the evaluated dataset's CUSTOM_TEMPLATES)"),
    ("base-to-new", "prograd", "batch_size", "32", "ProGrad rn50_ep100.yaml:3"),
    ("base-to-new", "prograd", "epochs.default", "100", "ProGrad rn50_ep100.yaml:18"),
    ("cross-domain", "prograd", "epochs.default", "100", "ProGrad rn50_ep100.yaml:18"),
    ("base-to-new", "prograd", "optim.lr", "0.002", "ProGrad rn50_ep100.yaml:17"),
    ("cross-domain", "prograd", "prior_templates", PROGRAD_TEMPLATES, "ProGrad prograd.py:201-217"),
    // VPT (deep): multimodal-prompt-learning configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml.
    ("cross-domain", "vpt", "n_ctx", "8", "VPT yaml:34"),
    ("cross-domain", "vpt", "depth", "12", "VPT yaml:37"),
    ("cross-domain", "vpt", "optim.lr", "0.0025", "VPT yaml:18"),
    ("cross-domain", "vpt", "epochs", "5", "VPT yaml:19"),
];

fn value_at<'a>(v: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The table's rows a suite (its text from `read`) contradicts.
fn drift(read: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut wrong = Vec::new();
    for (suite, method, key, want, source) in UPSTREAM {
        let doc: toml::Value = toml::from_str(&read(suite)).unwrap();
        let want: toml::Value = toml::from_str::<toml::Value>(&format!("v = {want}")).unwrap()["v"].clone();
        let got = doc
            .get("methods")
            .and_then(|m| m.get(*method))
            .and_then(|m| value_at(m, key));
        // Integers and floats compare by value (a suite may write 8 or 8.0).
        let same = match (got, &want) {
            (Some(toml::Value::Integer(a)), toml::Value::Float(b))
            | (Some(toml::Value::Float(b)), toml::Value::Integer(a)) => *a as f64 == *b,
            (Some(g), w) => g == w,
            (None, _) => false,
        };
        if !same {
            wrong.push(format!(
                "{suite}.toml [methods.{method}] {key} = {got:?}, upstream {want} ({source})"
            ));
        }
    }
    wrong
}

fn suite_text(suite: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("suites")
        .join(format!("{suite}.toml"));
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn every_paper_suite_method_value_is_the_upstream_one() {
    let wrong = drift(&suite_text);
    assert!(
        wrong.is_empty(),
        "paper suites drifted from upstream:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_changed_value_is_reported_with_its_source() {
    let read = |suite: &str| {
        let text = suite_text(suite);
        if suite == "cross-domain" {
            text.replace("batch_size = 128", "batch_size = 32")
        } else {
            text
        }
    };
    let wrong = drift(&read);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0].contains("cross-domain.toml [methods.kgcoop] batch_size") && wrong[0].contains("yaml:3"),
        "{wrong:?}"
    );
}

/// Every paper suite's method computes at upstream's precision: fp16 (`PREC "fp16"`, the default of
/// CoOp@ff61507 train.py:94,100 and PromptSRC@bb95c77 train.py:109,118,132), VPT and GRAM on VPT in
/// fp32 (multimodal-prompt-learning trainers/vpt.py:41 calls `model.float()`).
fn precision_drift(read: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut wrong = Vec::new();
    for suite in ["few-shot", "base-to-new", "cross-dataset", "cross-domain", "gram"] {
        let doc: toml::Value = toml::from_str(&read(suite)).unwrap();
        let precision = &doc["precision"];
        let methods = doc["methods"].as_table().unwrap();
        for (name, m) in methods {
            let on_vpt = m["kind"].as_str() == Some("vpt")
                || (m["kind"].as_str() == Some("gram")
                    && m.get("host")
                        .and_then(|h| h.as_str())
                        .and_then(|h| methods.get(h))
                        .and_then(|h| h["kind"].as_str())
                        == Some("vpt"));
            let want = if on_vpt { "f32" } else { "f16" };
            let got = precision
                .get("methods")
                .and_then(|t| t.get(name.as_str()))
                .or_else(|| precision.get("default"))
                .and_then(|v| v.as_str());
            if got != Some(want) {
                wrong.push(format!(
                    "{suite}.toml [methods.{name}] computes at {got:?}; upstream at {want}"
                ));
            }
        }
    }
    wrong
}

#[test]
fn every_paper_suite_method_computes_at_the_upstream_precision() {
    let wrong = precision_drift(&suite_text);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // And the check sees a change.
    let read = |suite: &str| {
        let text = suite_text(suite);
        if suite == "gram" {
            text.replace(
                "methods = { vpt = \"f32\", gram-vpt = \"f32\" }",
                "methods = { vpt = \"f32\" }",
            )
        } else {
            text
        }
    };
    assert_eq!(
        precision_drift(&read),
        vec!["gram.toml [methods.gram-vpt] computes at Some(\"f16\"); upstream at f32".to_string()]
    );
}
