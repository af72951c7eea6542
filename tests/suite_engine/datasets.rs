//! CoOp's datasets and user datasets: end-to-end runs on replicas, pinning and verifying.

use std::process::Output;

use crate::common::suite_env::*;

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
