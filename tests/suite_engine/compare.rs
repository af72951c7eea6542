//! `report --compare`: two stores of one table side by side, paired by row and seed — with equal
//! keys (one thread against two: bit-identical) and with keys a setting outside the table made
//! different (f16 against f32).

use crate::common::suite_env::*;

fn compare_json(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(env.path("reports/tiny/compare/compare.json")).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn two_runs_pair_by_row_and_seed_whether_or_not_their_keys_match() {
    let env = Env::new();
    let s = env.write_suite("tiny.toml", TINY);
    let s = s.to_str().unwrap();
    for (store, threads) in [("one", "1"), ("two", "2")] {
        let out = env.run_with(
            &["run", s, "--store", store, "--no-report"],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = env.run(&["report", s, "--store", "one", "--compare", "two"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = String::from_utf8_lossy(&out.stdout);
    // zero-shot and CoOp few-shot at 2 seeds, CoOp base and new at 1 (4 + 1 HM derived rows are not seed values).
    assert!(
        md.contains("6 values paired") && md.contains("6 bit-identical") && md.contains("0 values in only one run"),
        "{md}"
    );
    assert!(compare_json(&env).iter().all(|r| r["delta"] == 0.0));

    // The same table at f16: other keys, the same rows.
    let f16 = env.write_suite("tiny16.toml", &TINY.replace("default = \"f32\"", "default = \"f16\""));
    let out = env.run(&["run", f16.to_str().unwrap(), "--store", "half", "--no-report"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&[
        "report",
        s,
        "--store",
        "one",
        "--compare",
        "half",
        "--compare-suite",
        f16.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        md.contains("6 values paired") && md.contains("0 values in only one run"),
        "{md}"
    );
    let rows = compare_json(&env);
    assert_eq!(rows.iter().map(|r| r["n"].as_u64().unwrap()).sum::<u64>(), 6);
    // The figures overlaid, in their own folder, each linked from compare.md and well-formed; the
    // report's own figures beside report.md are untouched by the comparison and it by them.
    let dir = env.path("reports/tiny/compare");
    let svgs = crate::figures::parse_svgs(&dir);
    assert_eq!(
        svgs,
        [
            "base-to-new-average.svg",
            "base-to-new-shapes.svg",
            "delta-forest.svg",
            "few-shot-1-shots.svg"
        ],
        "TINY has one shot count: bars, no curve"
    );
    let md = std::fs::read_to_string(dir.join("compare.md")).unwrap();
    assert!(svgs.iter().all(|f| md.contains(&format!("]({f})"))), "{md}");
    let bars = std::fs::read_to_string(dir.join("base-to-new-shapes.svg")).unwrap();
    assert!(
        bars.contains("base · one") && bars.contains("base · half"),
        "both runs' bars named in the legend"
    );
    assert!(env.path("reports/tiny/report.md").exists());
    let out = env.run(&["report", s, "--store", "one"]);
    assert!(
        out.status.success() && dir.join("delta-forest.svg").exists(),
        "{}",
        stderr(&out)
    );
    // Without the other suite its records are not found (its keys differ): one clear error.
    let out = env.run(&["report", s, "--store", "one", "--compare", "half"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no finished cells"),
        "{}",
        stderr(&out)
    );
}
