//! The burn backbone against the reference implementations (transformers 5.24 / open_clip 3.3), from
//! fixtures recorded by tests/reference/make_fixtures.py.

mod common;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use common::*;
use gram_bench::clip::{load_clip, Clip, LoadOptions, LoadedClip, VisionPrompts};
use safetensors::Dtype;

const TOL: f32 = 1e-4;

fn load(path: &Path, config: Option<&Path>) -> LoadedClip<B> {
    load_on::<B>(path, config, &Default::default())
}

fn load_on<Bk: Backend>(path: &Path, config: Option<&Path>, dev: &Bk::Device) -> LoadedClip<Bk> {
    let opts = LoadOptions {
        config: config.map(Path::to_path_buf),
        tokenizer: None,
    };
    let opts = if path.is_dir() {
        opts
    } else {
        LoadOptions {
            tokenizer: Some(fixture("tiny-clip-hf/tokenizer.json")),
            ..opts
        }
    };
    load_clip::<Bk>(path, &opts, dev).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pixels<Bk: Backend>(r: &Reference, dev: &Bk::Device) -> Tensor<Bk, 4> {
    let (shape, data) = r.get("pixel_values");
    Tensor::from_data(TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]), dev)
}

/// (image embeds, text embeds, logits) of `model` on the recorded inputs; embeds L2-normalized.
fn outputs<Bk: Backend>(model: &Clip<Bk>, r: &Reference, ids_name: &str) -> [(Vec<usize>, Vec<f32>); 3] {
    let ids = r.ids(ids_name);
    let dev = model.logit_scale.val().device();
    let image = model.encode_image(pixels(r, &dev), &VisionPrompts::default());
    let text = model.text_features(model.text_model.forward_ids(&ids, &dev, false).pooled);
    let logits = model.logits_per_image(image.clone(), text.clone());
    [
        values(Clip::normalize(image)),
        values(Clip::normalize(text)),
        values(logits),
    ]
}

fn check_all_outputs<Bk: Backend>(clip: &LoadedClip<Bk>, label: &str) {
    let r = Reference::load();
    let m = &clip.model;
    let dev = m.logit_scale.val().device();
    let ids = r.ids("input_ids");
    let text = m.text_model.forward_ids(&ids, &dev, true);
    let vision = m
        .vision_model
        .forward(pixels(&r, &dev), &VisionPrompts::default(), true);
    let mut worst: Vec<(String, f32)> = Vec::new();
    let mut cmp = |name: &str, got: (Vec<usize>, Vec<f32>)| {
        let d = max_diff(name, got, r.get(name));
        worst.push((name.to_string(), d));
    };
    assert_eq!(text.hidden_states.len(), 3);
    for (i, h) in text.hidden_states.iter().enumerate() {
        cmp(&format!("text_hidden.{i}"), values(h.clone()));
    }
    for (i, h) in vision.hidden_states.iter().enumerate() {
        cmp(&format!("vision_hidden.{i}"), values(h.clone()));
    }
    cmp("text_last_hidden", values(text.last_hidden.clone()));
    cmp("vision_last_hidden", values(vision.last_hidden.clone()));
    cmp("text_pooled", values(text.pooled.clone()));
    cmp("image_pooled", values(vision.pooled.clone()));
    let [image_embeds, text_embeds, logits] = outputs(m, &r, "input_ids");
    cmp("image_embeds", image_embeds);
    cmp("text_embeds", text_embeds);
    cmp("logits_per_image", logits);
    for (name, d) in &worst {
        assert!(
            *d <= TOL,
            "{label}: {name} differs from transformers by {d:e} (> {TOL:e})"
        );
    }
    eprintln!(
        "{label}: worst diff {:?}",
        worst.iter().map(|w| w.1).fold(0.0, f32::max)
    );
}

#[test]
fn hf_layout_matches_transformers_everywhere() {
    let clip = load(&fixture("tiny-clip-hf"), None);
    assert_eq!(
        clip.config.vision.num_attention_heads, 4,
        "heads come from config.json, not width/64"
    );
    check_all_outputs(&clip, "HF layout");
}

#[test]
fn openai_layout_matches_transformers_and_open_clip() {
    // The open_clip model config, and the HF config.json, both describe the OpenAI-layout file.
    for cfg in [fixture("tiny-clip-openai.json"), fixture("tiny-clip-hf/config.json")] {
        let clip = load(&fixture("tiny-clip-openai.safetensors"), Some(&cfg));
        check_all_outputs(&clip, "OpenAI layout");
        check_open_clip(&clip);
    }
}

/// The embeddings and logits against open_clip's own run of the OpenAI-layout file.
fn check_open_clip<Bk: Backend>(clip: &LoadedClip<Bk>) {
    let r = Reference::load();
    let [image, text, logits] = outputs(&clip.model, &r, "input_ids");
    assert!(max_diff("openclip image", image, r.get("openclip_image_embeds")) <= TOL);
    assert!(max_diff("openclip text", text, r.get("openclip_text_embeds")) <= TOL);
    assert!(max_diff("openclip logits", logits, r.get("openclip_logits_per_image")) <= TOL);
}

#[test]
fn legacy_eos_token_id_two_pools_at_argmax() {
    let dir = tempfile::tempdir().unwrap();
    copy_hf_dir(dir.path());
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["text_config"]["eos_token_id"] = serde_json::json!(2);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let clip = load(dir.path(), None);
    let r = Reference::load();
    let [_, text, _] = outputs(&clip.model, &r, "input_ids_legacy");
    let d = max_diff("legacy", text, r.get("legacy_text_embeds"));
    assert!(d <= TOL, "legacy argmax pooling differs by {d:e}");
}

#[test]
fn half_precision_weights_load_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let r = Reference::load();
    for (dtype, tag) in [(Dtype::F16, "f16"), (Dtype::BF16, "bf16")] {
        let hf = dir.path().join(format!("hf-{tag}"));
        copy_hf_dir(&hf);
        rewrite(
            &fixture("tiny-clip-hf/model.safetensors"),
            &hf.join("model.safetensors"),
            dtype,
            |n, t| vec![(n.to_string(), t)],
        );
        let oa = dir.path().join(format!("openai-{tag}.safetensors"));
        rewrite(&fixture("tiny-clip-openai.safetensors"), &oa, dtype, |n, t| {
            vec![(n.to_string(), t)]
        });
        for clip in [load(&hf, None), load(&oa, Some(&fixture("tiny-clip-openai.json")))] {
            let [image, text, logits] = outputs(&clip.model, &r, "input_ids");
            for (name, got) in [
                ("image_embeds", image),
                ("text_embeds", text),
                ("logits_per_image", logits),
            ] {
                let d = max_diff(name, got, r.get(&format!("{tag}_{name}")));
                assert!(d <= TOL, "{tag} {name}: {d:e}");
            }
        }
    }
}

#[test]
fn an_openai_state_dict_with_its_config_scalars_loads_and_an_unknown_tensor_is_refused() {
    // `torch.jit.load(...).state_dict()` of OpenAI's archives holds `input_resolution`,
    // `context_length` and `vocab_size` beside the weights.
    let dir = tempfile::tempdir().unwrap();
    let r = Reference::load();
    let cfg = fixture("tiny-clip-openai.json");
    let with = |extra: &'static [&'static str]| {
        let path = dir.path().join(format!("openai-{}.safetensors", extra.join("-")));
        let mut added = false;
        rewrite(&fixture("tiny-clip-openai.safetensors"), &path, Dtype::F32, |n, t| {
            let mut out = vec![(n.to_string(), t)];
            if !std::mem::replace(&mut added, true) {
                out.extend(extra.iter().map(|e| (e.to_string(), (vec![], vec![1.0]))));
            }
            out
        });
        path
    };
    let clip = load(&with(&["input_resolution", "context_length", "vocab_size"]), Some(&cfg));
    let [image, _, _] = outputs(&clip.model, &r, "input_ids");
    assert!(max_diff("image_embeds", image, r.get("image_embeds")) <= TOL);
    let opts = LoadOptions {
        config: Some(cfg),
        tokenizer: Some(fixture("tiny-clip-hf/tokenizer.json")),
    };
    let e = load_clip::<B>(&with(&["stray_tensor"]), &opts, &Default::default())
        .err()
        .expect("refused");
    assert!(e.to_string().contains("stray_tensor"), "{e}");
}

/// The same checks on the wgpu backend (CI runs them on Mesa's lavapipe, a software Vulkan device:
/// the cubecl kernels the GPU backends share, executed), at the same tolerance.
#[cfg(feature = "wgpu")]
#[test]
fn both_layouts_match_the_references_on_wgpu() {
    let dev = Default::default();
    let hf = load_on::<burn::backend::Wgpu>(&fixture("tiny-clip-hf"), None, &dev);
    check_all_outputs(&hf, "HF layout, wgpu");
    let oa = load_on::<burn::backend::Wgpu>(
        &fixture("tiny-clip-openai.safetensors"),
        Some(&fixture("tiny-clip-openai.json")),
        &dev,
    );
    check_all_outputs(&oa, "OpenAI layout, wgpu");
    check_open_clip(&oa);
}
