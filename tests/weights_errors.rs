//! Bad checkpoints: every problem is an error naming the tensor (and both shapes), never a silent skip.

mod common;

use std::path::Path;

use common::*;
use gram_bench::clip::{load_clip, LoadOptions};
use safetensors::Dtype;

fn load_err(path: &Path, config: Option<&Path>) -> String {
    let opts = LoadOptions {
        config: config.map(Path::to_path_buf),
        tokenizer: Some(fixture("tiny-clip-hf/tokenizer.json")),
    };
    match load_clip::<B>(path, &opts, &Default::default()) {
        Ok(_) => panic!("{} loaded, but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn hf_variant(dir: &Path, f: impl FnMut(&str, Tensor32) -> Vec<(String, Tensor32)>) -> std::path::PathBuf {
    copy_hf_dir(dir);
    rewrite(
        &fixture("tiny-clip-hf/model.safetensors"),
        &dir.join("model.safetensors"),
        Dtype::F32,
        f,
    );
    dir.to_path_buf()
}

#[test]
fn hf_missing_unexpected_and_misshaped_tensors_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = hf_variant(&tmp.path().join("missing"), |n, t| {
        if n == "vision_model.encoder.layers.1.layer_norm2.bias" {
            vec![]
        } else {
            vec![(n.into(), t)]
        }
    });
    let e = load_err(&missing, None);
    assert!(
        e.contains("missing tensor `vision_model.encoder.layers.1.layer_norm2.bias`"),
        "{e}"
    );

    let extra = hf_variant(&tmp.path().join("extra"), |n, t| {
        let mut v = vec![(n.to_string(), t.clone())];
        if n == "logit_scale" {
            v.push(("text_model.encoder.layers.2.mlp.fc1.weight".into(), t));
        }
        v
    });
    let e = load_err(&extra, None);
    assert!(
        e.contains("unexpected") && e.contains("text_model.encoder.layers.2.mlp.fc1.weight"),
        "{e}"
    );

    let shaped = hf_variant(&tmp.path().join("shaped"), |n, (s, v)| {
        if n == "text_model.encoder.layers.0.mlp.fc1.weight" {
            vec![(n.into(), (vec![128, 128], v))] // same element count, wrong shape
        } else {
            vec![(n.into(), (s, v))]
        }
    });
    let e = load_err(&shaped, None);
    assert!(
        e.contains("text_model.encoder.layers.0.mlp.fc1.weight") && e.contains("[128, 128]") && e.contains("[256, 64]"),
        "{e}"
    );
}

#[test]
fn openai_errors_name_the_file_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = fixture("tiny-clip-openai.json");
    let path = tmp.path().join("bad.safetensors");
    rewrite(
        &fixture("tiny-clip-openai.safetensors"),
        &path,
        Dtype::F32,
        |n, (s, v)| {
            if n == "transformer.resblocks.1.attn.in_proj_weight" {
                vec![(n.into(), (vec![64 * 3 - 1, 64], v[..(64 * 3 - 1) * 64].to_vec()))]
            } else {
                vec![(n.into(), (s, v))]
            }
        },
    );
    let e = load_err(&path, Some(&cfg));
    assert!(
        e.contains("transformer.resblocks.1.attn.in_proj_weight") && e.contains("[191, 64]") && e.contains("[192, 64]"),
        "{e}"
    );

    rewrite(&fixture("tiny-clip-openai.safetensors"), &path, Dtype::F32, |n, t| {
        if n == "visual.ln_post.bias" {
            vec![]
        } else {
            vec![(n.into(), t)]
        }
    });
    assert!(load_err(&path, Some(&cfg)).contains("missing tensor `visual.ln_post.bias`"));

    rewrite(&fixture("tiny-clip-openai.safetensors"), &path, Dtype::F32, |n, t| {
        let mut v = vec![(n.to_string(), t.clone())];
        if n == "logit_scale" {
            v.push(("visual.extra_head.weight".into(), t));
        }
        v
    });
    assert!(load_err(&path, Some(&cfg)).contains("visual.extra_head.weight"));
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_hf_dir(&dir);
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["vision_config"]["num_hidden_layers"] = serde_json::json!(3);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(&dir, None);
    assert!(e.contains("missing tensor `vision_model.encoder.layers.2."), "{e}");
}

#[test]
fn pickles_and_non_checkpoints_are_refused_with_a_way_forward() {
    let tmp = tempfile::tempdir().unwrap();
    // A TorchScript archive is a zip holding constants.pkl.
    let pt = tmp.path().join("ViT-B-32.pt");
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend_from_slice(b"....archive/constants.pkl....archive/data.pkl");
    std::fs::write(&pt, zip).unwrap();
    let e = load_err(&pt, None);
    assert!(
        e.contains("TorchScript") && e.contains("torch.jit.load") && e.contains("safetensors"),
        "{e}"
    );
    let pkl = tmp.path().join("model.bin");
    std::fs::write(&pkl, b"\x80\x02}q\x00.").unwrap();
    assert!(load_err(&pkl, None).contains("PyTorch pickle"));
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(load_err(&junk, None).contains("not a safetensors file"));
    let not_clip = tmp.path().join("other.safetensors");
    rewrite(
        &fixture("tiny-clip-openai.safetensors"),
        &not_clip,
        Dtype::F32,
        |n, t| {
            if n.starts_with("visual.") {
                vec![]
            } else {
                vec![(n.into(), t)]
            }
        },
    );
    assert!(load_err(&not_clip, None).contains("not a CLIP checkpoint"));
    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    assert!(load_err(&empty_dir, None).contains("no model.safetensors"));
}
