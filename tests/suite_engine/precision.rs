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
