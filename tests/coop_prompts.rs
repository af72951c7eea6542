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
    use gram_bench::methods::{Batch, CoOpConfig, Epochs, SgdConfig};
    use gram_bench::run::CellMethod;
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
    let mut m = CellMethod::build(
        &cfg,
        &gram_bench::methods::BuildInputs {
            clip: &clip.model,
            tok: &clip.tokenizer,
            classnames: &names,
            template: "a photo of a {}.",
            imagenet_like: false,
            dataset: "test",
            shots: 1,
            seed: 7,
        },
    )
    .and_then(CellMethod::into_learner)
    .unwrap();
    let ctx0 = m.artifact()["ctx"].clone();
    let size = 32; // the fixture's image size
    for step in 0..3 {
        let batch = Batch {
            pixels: Tensor::<AB, 4>::random([4, 3, size, size], Distribution::Normal(0.0, 1.0), &dev),
            labels: Tensor::<AB, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, step], [4]), &dev),
        };
        let loss = m.step(&clip.model, batch, 0.5).unwrap();
        assert!(loss.is_finite());
    }
    let ctx1 = m.artifact()["ctx"].clone();
    assert_eq!(ctx0.0, ctx1.0);
    assert!(ctx0.1 != ctx1.1, "the context did not move");
    assert!(clip.model.to_hf_tensors() == before, "a backbone tensor changed");
    // The artifact round-trips into a fresh instance (GRAM's initialisation seam).
    let mut m2 = CellMethod::build(
        &cfg,
        &gram_bench::methods::BuildInputs {
            clip: &clip.model,
            tok: &clip.tokenizer,
            classnames: &names,
            template: "a photo of a {}.",
            imagenet_like: false,
            dataset: "test",
            shots: 1,
            seed: 8,
        },
    )
    .and_then(CellMethod::into_learner)
    .unwrap();
    m2.load(&m.artifact()).unwrap();
    assert_eq!(m2.artifact(), m.artifact());
}

/// ProGrad's context from its template (upstream prograd.py:78-95), built independently here from
/// the tokenizer and the token embedding: "a type of pet, a photo of a" is 8 words but more tokens
/// (the comma is one; the tiny fixture's short vocabulary splits words too), so 8 zero slots, then
/// the first 8 tokens' embeddings, and the rest of the phrase stays in the frozen suffix before
/// the class name, as upstream's slicing leaves it.
#[test]
fn prograd_template_context_is_upstreams_including_its_word_token_quirk() {
    use gram_bench::clip::model::ids_tensor;
    use gram_bench::methods::text_prompts::template_context;
    let dev = Default::default();
    let clip = load_clip::<B>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    let (model, tok) = (&clip.model, &clip.tokenizer);
    let phrase = "a type of pet, a photo of a";
    let n = tok.tokens(phrase).unwrap().len();
    assert!(n > 8, "more tokens than words ({n}), so the quirk is exercised");
    let (placeholder, ctx) = template_context(model, tok, "a type of pet, a photo of a {}.", 16).unwrap();
    assert_eq!(placeholder, format!("{} {phrase}", ["X"; 8].join(" ")));
    assert_eq!(ctx.dims()[..2], [1, 16]);
    let width = ctx.dims()[2];
    let ids = tok.encode_padded(&[phrase]).unwrap();
    let emb = model.text_model.embed_tokens(ids_tensor(&ids, &dev));
    let zeros = values(ctx.clone().narrow(1, 0, 8)).1;
    assert!(zeros.iter().all(|&v| v == 0.0) && zeros.len() == 8 * width);
    assert_eq!(values(ctx.narrow(1, 8, 8)).1, values(emb.clone().narrow(1, 1, 8)).1);
    let p = ClassPrompts::new(model, tok, &placeholder, 16, &["beagle".to_string()]).unwrap();
    assert_eq!(
        values(p.suffix.narrow(1, 0, 1)).1,
        values(emb.narrow(1, 9, 1)).1,
        "the phrase's 9th token opens the frozen suffix"
    );
    // A four-word phrase of four tokens fills the last four of 16 slots exactly.
    let (placeholder, _) = template_context(model, tok, "a photo of a {}.", 16).unwrap();
    assert_eq!(placeholder, format!("{} a photo of a", ["X"; 12].join(" ")));
    for (bad, why) in [
        ("a photo of a {}, a type of texture.", "ending"),
        ("{} texture.", "ending"),
    ] {
        let e = template_context(model, tok, bad, 16).expect_err(why).to_string();
        assert!(e.contains("\" {}.\""), "{bad}: {e}");
    }
    let e = template_context(model, tok, "a type of pet, a photo of a {}.", 4)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("8 words but n_ctx = 4"), "{e}");
}
