//! Suite files and cell keys: strict parsing with file:line errors, keys that follow what decides a
//! result and nothing else, one clear line for bad input.

use gram_bench::lock::Lock;
use gram_bench::resolve::ResolvedSuite;
use gram_bench::suite::Suite;

use crate::common::suite_env::*;

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
    assert!(
        e.contains("methods.coop.epochs = 0 is outside its range [1, 100000]"),
        "{e}"
    );
    // A per-dataset setting with no value for one of the experiment's cells fails the load.
    let e = parse(&TINY.replace("epochs = 2", "epochs = { dtd = 2 }")).unwrap_err();
    assert!(e.contains("methods.coop.epochs: no entry for dataset `shapes`"), "{e}");
    assert!(parse(&TINY.replace("epochs = 2", "epochs = { shapes = 2 }")).is_ok());
    assert!(parse(TINY).is_ok());
    // The share of pretraining images seen as crops: in (0, 1], and only with the crops' scale.
    let world = |extra: &str| TINY.replace("warmup_steps = ", &format!("{extra}\nwarmup_steps = "));
    let e = parse(&world("pretrain_crop_share = 0.5")).unwrap_err();
    assert!(e.contains("pretrain_crop_share needs world.pretrain_crop_scale"), "{e}");
    let e = parse(&world("pretrain_crop_scale = [0.08, 1.0]\npretrain_crop_share = 1.5")).unwrap_err();
    assert!(
        e.contains("world.pretrain_crop_share = 1.5 is outside its range (0, 1]"),
        "{e}"
    );
    assert!(parse(&world("pretrain_crop_scale = [0.08, 1.0]\npretrain_crop_share = 0.5")).is_ok());
    let e = parse(&world("template_caption_share = nan")).unwrap_err();
    assert!(
        e.contains("world.template_caption_share = NaN is outside its range (0, 1]"),
        "{e}"
    );
    assert!(parse(&world("template_caption_share = 0.25")).is_ok());
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
