//! `[precision]`: a method's cells compute at its precision, in a process of their own when it is
//! not the run's; the precision is part of their keys (f32 cells keep theirs) and of their records.

use crate::common::suite_env::*;

/// TINY with CoOp at `coop` and everything else at f32.
fn suite_with_coop_at(coop: &str) -> String {
    TINY.replace(
        "[precision]\ndefault = \"f32\"\n",
        &format!("[precision]\ndefault = \"f32\"\nmethods = {{ coop = \"{coop}\" }}\n"),
    )
}

#[test]
fn a_method_at_another_precision_runs_in_its_own_process_under_its_own_keys() {
    let env = Env::new();
    let text = suite_with_coop_at("f16");
    let suite = env.write_suite("tiny.toml", &text);
    let out = env.run(&["run", suite.to_str().unwrap(), "--no-report"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");

    let records = record_values(&env, "tiny");
    let coop = records.iter().filter(|r| r["cell"]["method"] == "coop").count();
    assert_eq!(
        (records.len(), coop),
        (keys(&text).len(), 4),
        "2 zero-shot, 2 CoOp few-shot, CoOp base and new"
    );
    assert!(
        err.contains(&format!(
            "running the {coop} cells at precision f16 in a process of their own"
        )),
        "{err}"
    );
    // Zero-shot cells keep the all-f32 suite's keys; CoOp's are new.
    let f32_keys = keys(&suite_with_coop_at("f32"));
    for r in &records {
        let at_f16 = r["cell"]["method"] == "coop";
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["config"]["precision"], if at_f16 { "f16" } else { "f32" }, "{r}");
        assert_eq!(
            f32_keys.contains(&r["key"].as_str().unwrap().to_string()),
            !at_f16,
            "{r}"
        );
        assert!(r["metrics"]["accuracy"].as_f64().unwrap() > 0.0);
    }
    // Everything is recorded: a second run computes nothing, at either precision.
    let out = env.run(&["run", suite.to_str().unwrap(), "--no-report"]);
    let err = stderr(&out);
    assert!(
        out.status.success() && err.contains("0 to run") && !err.contains("process of their own"),
        "{err}"
    );
}

#[test]
fn an_unknown_method_in_the_precision_table_is_a_clear_error() {
    let err = parse(&TINY.replace(
        "[precision]\ndefault = \"f32\"\n",
        "[precision]\ndefault = \"f32\"\nmethods = { cop = \"f16\" }\n",
    ))
    .unwrap_err();
    assert!(err.contains("precision.methods: unknown method `cop`"), "{err}");
    let err = parse(&TINY.replace("default = \"f32\"", "default = \"f8\"")).unwrap_err();
    assert!(err.contains("f8") && err.contains("f16"), "{err}");
}

/// ProGrad (its teacher at f32 inside the cell) and PromptSRC (anchors at f32, the whole-model GPA)
/// train and evaluate at f16: the formats meet where upstream's do, with no mixed-format operation.
#[test]
fn prograd_and_promptsrc_with_their_f32_references_run_at_f16() {
    let env = Env::new();
    let methods = r#"
[methods.prograd]
kind = "prograd"
n_ctx = 4
ctx_init = "a photo of a"
init_std = 0.02
csc = false
class_token_position = "end"
batch_size = 8
epochs = 2
optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }
prior_templates = {}
lambda = 1.0
temperature = 1.0
ctx_source = "ctx_init"

[methods.promptsrc]
kind = "promptsrc"
n_ctx_text = 2
ctx_init = "a photo of a"
text_depth = 1
n_ctx_vision = 2
vision_depth = 1
init_std = 0.02
text_loss_weight = 25.0
image_loss_weight = 10.0
text_templates = ["a photo of a {}.", "a sketch of the {}."]
gpa_mean = 2.0
gpa_std = 1.0
gpa_whole_model = true
batch_size = 8
epochs = 2
optim = { lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 1, warmup_lr = 1e-5 }

[[experiment]]"#;
    let text = TINY
        .replace(
            "[precision]\ndefault = \"f32\"\n",
            "[precision]\ndefault = \"f32\"\nmethods = { prograd = \"f16\", promptsrc = \"f16\" }\n",
        )
        .replacen("[[experiment]]", methods, 1)
        .replace("methods = [\"zs\", \"coop\"]", "methods = [\"prograd\", \"promptsrc\"]");
    let suite = env.write_suite("tiny.toml", &text);
    let out = env.run(&["run", suite.to_str().unwrap(), "--no-report"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let records = record_values(&env, "tiny");
    for m in ["prograd", "promptsrc"] {
        let r: Vec<_> = records.iter().filter(|r| r["cell"]["method"] == m).collect();
        assert_eq!(r.len(), 2, "{m}: two seeds");
        for r in r {
            assert_eq!(
                (&r["status"], &r["config"]["precision"]),
                (&"ok".into(), &"f16".into()),
                "{r}"
            );
            assert!(r["metrics"]["accuracy"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
}
