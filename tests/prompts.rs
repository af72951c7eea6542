//! The prompt-injection inputs methods use: token embeddings, deep text prompts, shallow and deep
//! vision prompts; gradients reach the prompts and never the frozen backbone.

mod common;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use common::*;
use gram_bench::clip::model::ids_tensor;
use gram_bench::clip::{load_clip, DeepPrompts, LoadOptions, LoadedClip, PromptSlot, VisionPrompts};

fn tiny<Bk: Backend>() -> LoadedClip<Bk> {
    load_clip::<Bk>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &Default::default()).unwrap()
}

fn close<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    max_diff("close", values(a), values(b))
}

#[test]
fn deep_text_prompts_replace_the_slot_entering_each_layer() {
    let clip = tiny::<B>();
    let tm = &clip.model.text_model;
    let dev = Default::default();
    let ids = clip.tokenizer.encode_padded(&["x x x x a photo of a dog."]).unwrap();
    let eos = tm.eos_positions(&ids);
    let embeds = tm.embed_tokens(ids_tensor(&ids, &dev));
    let plain = tm.forward_embeds(embeds.clone(), &eos, None, true);
    // No prompt at any layer is the plain forward.
    let none = DeepPrompts {
        slot: PromptSlot::At(1),
        layers: vec![None, None],
    };
    assert!(
        close(
            tm.forward_embeds(embeds.clone(), &eos, Some(&none), false).pooled,
            plain.pooled.clone()
        ) == 0.0
    );
    let p = Tensor::<B, 3>::random([1, 4, 64], Distribution::Normal(0.0, 1.0), &dev);
    let deep = DeepPrompts {
        slot: PromptSlot::At(1),
        layers: vec![None, Some(p.clone())],
    };
    let out = tm.forward_embeds(embeds, &eos, Some(&deep), true);
    // The input of block 1 holds the prompt at positions 1..5 and is untouched elsewhere.
    let h1 = out.hidden_states[1].clone();
    assert_eq!(close(h1.clone().narrow(1, 1, 4), p), 0.0);
    assert_eq!(
        close(
            h1.clone().narrow(1, 0, 1),
            plain.hidden_states[1].clone().narrow(1, 0, 1)
        ),
        0.0
    );
    assert_eq!(
        close(h1.narrow(1, 5, 72), plain.hidden_states[1].clone().narrow(1, 5, 72)),
        0.0
    );
    assert!(
        close(out.pooled, plain.pooled) > 1e-3,
        "a deep prompt must change the pooled output"
    );
}

#[test]
fn pooling_on_the_trimmed_prefix_equals_the_full_context() {
    let clip = tiny::<B>();
    let tm = &clip.model.text_model;
    let dev = Default::default();
    let ids = clip
        .tokenizer
        .encode_padded(&[
            "a photo of a cat.",
            "x x x x a small purple striped triangle in the corner.",
            "hi",
        ])
        .unwrap();
    let eos = tm.eos_positions(&ids);
    let embeds = tm.embed_tokens(ids_tensor(&ids, &dev));
    let full = tm.forward_embeds(embeds.clone(), &eos, None, false).pooled;
    assert!(close(tm.forward_pooled(embeds.clone(), &eos, None), full) <= 1e-6);
    // A deep prompt reaching past the last EOS keeps the prefix long enough to hold it.
    let p = Tensor::<B, 3>::random([1, 20, 64], Distribution::Normal(0.0, 1.0), &dev);
    let deep = DeepPrompts {
        slot: PromptSlot::At(1),
        layers: vec![None, Some(p)],
    };
    let full = tm.forward_embeds(embeds.clone(), &eos, Some(&deep), false).pooled;
    assert!(close(tm.forward_pooled(embeds, &eos, Some(&deep)), full) <= 1e-6);
}

#[test]
fn vision_prompts_extend_and_replace_the_tail() {
    let clip = tiny::<B>();
    let vm = &clip.model.vision_model;
    let dev = Default::default();
    let px = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let plain = vm.forward(px.clone(), &VisionPrompts::default(), true);
    let shallow = Tensor::<B, 3>::random([1, 3, 64], Distribution::Normal(0.0, 1.0), &dev);
    let deep1 = Tensor::<B, 3>::random([1, 3, 64], Distribution::Normal(0.0, 1.0), &dev);
    let prompts = VisionPrompts {
        shallow: Some(shallow),
        deep: vec![None, Some(deep1.clone())],
    };
    let out = vm.forward(px, &prompts, true);
    assert_eq!(out.hidden_states[0].dims(), [2, 17 + 3, 64]);
    assert_eq!(out.last_hidden.dims(), [2, 20, 64]);
    assert_eq!(
        close(out.hidden_states[1].clone().narrow(1, 17, 3), deep1.expand([2, 3, 64])),
        0.0
    );
    assert_eq!(out.pooled.dims(), plain.pooled.dims());
    assert!(
        close(out.pooled, plain.pooled) > 1e-3,
        "prompts must reach the class token through attention"
    );
}

/// Counts parameters that have a gradient.
struct GradCount<'a, Bk: burn::tensor::backend::AutodiffBackend> {
    grads: &'a Bk::Gradients,
    with: usize,
    total: usize,
}

impl<Bk: burn::tensor::backend::AutodiffBackend> ModuleVisitor<Bk> for GradCount<'_, Bk> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        self.total += 1;
        if param.val().grad(self.grads).is_some() {
            self.with += 1;
        }
    }
}

#[test]
fn gradients_reach_prompts_and_never_the_frozen_backbone() {
    type AB = Autodiff<B>;
    let clip = tiny::<AB>();
    let m = &clip.model;
    let dev = Default::default();
    let ids = clip.tokenizer.encode_padded(&["x x x x cat.", "x x x x dog."]).unwrap();
    let eos = m.text_model.eos_positions(&ids);
    let tokens = m.text_model.embed_tokens(ids_tensor(&ids, &dev));
    // CoOp-style context: four learnable vectors in place of the "x" tokens, plus a deep prompt.
    let ctx = Tensor::<AB, 3>::random([1, 4, 64], Distribution::Normal(0.0, 0.02), &dev).require_grad();
    let deep = Tensor::<AB, 3>::random([1, 4, 64], Distribution::Normal(0.0, 0.02), &dev).require_grad();
    let vpt = Tensor::<AB, 3>::random([1, 2, 64], Distribution::Normal(0.0, 0.02), &dev).require_grad();
    let embeds = Tensor::cat(
        vec![
            tokens.clone().narrow(1, 0, 1),
            ctx.clone().expand([2, 4, 64]),
            tokens.narrow(1, 5, 72),
        ],
        1,
    );
    let text = m.text_features(
        m.text_model
            .forward_embeds(
                embeds,
                &eos,
                Some(&DeepPrompts {
                    slot: PromptSlot::At(1),
                    layers: vec![None, Some(deep.clone())],
                }),
                false,
            )
            .pooled,
    );
    let px = Tensor::<AB, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let image = m.encode_image(
        px,
        &VisionPrompts {
            shallow: Some(vpt.clone()),
            deep: vec![],
        },
    );
    let loss = m.logits_per_image(image, text).powf_scalar(2.0).mean();
    let grads = loss.backward();
    for (name, t) in [("ctx", ctx.grad(&grads)), ("deep", deep.grad(&grads))] {
        let g = t.unwrap_or_else(|| panic!("{name} has no gradient"));
        assert!(g.abs().sum().into_scalar() > 0.0, "{name} gradient is zero");
    }
    let vg = vpt.grad(&grads).expect("visual prompt gradient");
    assert_eq!(vg.dims(), [1, 2, 64]);
    let mut count = GradCount::<AB> {
        grads: &grads,
        with: 0,
        total: 0,
    };
    m.visit(&mut count);
    assert!(count.total > 70);
    assert_eq!(
        count.with, 0,
        "{} of {} backbone parameters received a gradient",
        count.with, count.total
    );
}
