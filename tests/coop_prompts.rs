//! CoOp's prompt assembly against a re-implementation of the reference `PromptLearner`
//! (tests/reference/coop_prompts.py) on the tiny HF fixture: the assembled embeddings and the
//! resulting text features, for every class-token position and for class-specific context.
mod common;

use burn::tensor::{Tensor, TensorData};
use common::{fixture, max_diff, values, B};
use gram_bench::clip::weights::SafetensorsStore;
use gram_bench::clip::{load_clip, LoadOptions};
use gram_bench::methods::text_prompts::{assemble, encode_prompts, ClassPrompts};
use gram_bench::methods::ClassTokenPosition;

#[test]
fn coop_prompts_match_the_reference_prompt_learner() {
    let dev = Default::default();
    let clip = load_clip::<B>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("coop_prompts.json")).unwrap()).unwrap();
    let names: Vec<String> = meta["classnames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let n_ctx = meta["n_ctx"].as_u64().unwrap() as usize;
    let refs = SafetensorsStore::open(&[fixture("coop_prompts.safetensors")]).unwrap();
    let get = |n: &str| refs.read(n).unwrap();
    let tensor = |n: &str| {
        let (shape, data) = get(n);
        Tensor::<B, 3>::from_data(TensorData::new(data, [shape[0], shape[1], shape[2]]), &dev)
    };
    let p = ClassPrompts::new(&clip.model, &clip.tokenizer, &vec!["X"; n_ctx].join(" "), n_ctx, &names).unwrap();
    let want_lens: Vec<usize> = meta["name_lens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(p.name_lens, want_lens);
    let want_eos: Vec<usize> = meta["eos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(p.eos, want_eos);
    for (case, ctx, pos) in [
        ("end", "ctx_generic", ClassTokenPosition::End),
        ("middle", "ctx_generic", ClassTokenPosition::Middle),
        ("front", "ctx_generic", ClassTokenPosition::Front),
        ("csc_end", "ctx_csc", ClassTokenPosition::End),
        ("csc_middle", "ctx_csc", ClassTokenPosition::Middle),
    ] {
        let embeds = assemble(tensor(ctx), &p, pos);
        let d = max_diff(case, values(embeds), get(&format!("embeds_{case}")));
        assert!(d == 0.0, "{case}: assembled embeddings differ by {d}");
        let feats = encode_prompts(&clip.model, tensor(ctx), &p, pos);
        let d = max_diff(case, values(feats), get(&format!("features_{case}")));
        assert!(d < 1e-5, "{case}: text features differ by {d}");
    }
}

#[test]
fn coop_training_moves_its_context_and_leaves_the_backbone_bit_identical() {
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, Int};
    use gram_bench::methods::{Batch, CoOpConfig, Epochs, PromptMethod, SgdConfig};
    use gram_bench::suite::methods::MethodConfig;
    type AB = Autodiff<B>;
    let dev = Default::default();
    let clip = load_clip::<AB>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let before = clip.model.to_hf_tensors();
    let cfg = MethodConfig::Coop(CoOpConfig {
        n_ctx: 4,
        ctx_init: String::new(),
        init_std: 0.02,
        csc: false,
        class_token_position: ClassTokenPosition::End,
        batch_size: 4,
        epochs: Epochs::Fixed(1),
        optim: SgdConfig {
            lr: 0.5,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 0,
            warmup_lr: 0.0,
        },
    });
    let names: Vec<String> = ["dog", "cat", "sea lion"].iter().map(|s| s.to_string()).collect();
    let mut m: Box<dyn PromptMethod<AB>> = cfg
        .build(&gram_bench::methods::BuildInputs {
            clip: &clip.model,
            tok: &clip.tokenizer,
            classnames: &names,
            template: "a photo of a {}.",
            imagenet_like: false,
            dataset: "test",
            shots: 1,
            seed: 7,
        })
        .unwrap();
    let ctx0 = m.save_artifact()["ctx"].clone();
    let size = 32; // the fixture's image size
    for step in 0..3 {
        let batch = Batch {
            pixels: Tensor::<AB, 4>::random([4, 3, size, size], Distribution::Normal(0.0, 1.0), &dev),
            labels: Tensor::<AB, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, step], [4]), &dev),
        };
        let loss = m.train_step(&clip.model, batch, 0.5).unwrap();
        assert!(loss.is_finite());
    }
    let ctx1 = m.save_artifact()["ctx"].clone();
    assert_eq!(ctx0.0, ctx1.0);
    assert!(ctx0.1 != ctx1.1, "the context did not move");
    assert!(clip.model.to_hf_tensors() == before, "a backbone tensor changed");
    // The artifact round-trips into a fresh instance (GRAM's initialisation seam).
    let mut m2 = cfg
        .build(&gram_bench::methods::BuildInputs {
            clip: &clip.model,
            tok: &clip.tokenizer,
            classnames: &names,
            template: "a photo of a {}.",
            imagenet_like: false,
            dataset: "test",
            shots: 1,
            seed: 8,
        })
        .unwrap();
    m2.load_artifact(&m.save_artifact()).unwrap();
    assert_eq!(m2.save_artifact(), m.save_artifact());
}
