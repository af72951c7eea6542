//! Frozen references at upstream's precision inside an f16 cell. Upstream computes ProGrad's
//! zero-shot teacher (prograd.py `CLIP`, `clip_model.float()`) and PromptSRC's text anchors
//! (promptsrc.py `load_clip_to_cpu(cfg, True).float()`) at fp32 even in a PREC fp16 run. The
//! fixtures `prograd_teacher_f16_run` and `promptsrc_anchors_f16_run` are those upstream objects
//! built from the tiny CLIP's weights rounded to fp16 (tests/reference/upstream_steps.py, stand-in
//! 10); here the same model is loaded into a process computing at f16, as a cell of a paper suite
//! is, and the teacher and anchors must equal upstream's to f32 rounding — which the same
//! quantities computed at f16 do not.
//!
//! One test in its own binary: burn fixes a device's float format once per process.

mod common;

use burn::tensor::backend::set_default_float_dtype;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use common::method_harness::Fixture;
use common::{fixture, max_diff, values, B};
use gram_bench::clip::{load_clip, LoadOptions};
use gram_bench::methods::coop::ZeroShotTeacher;
use gram_bench::methods::promptsrc::anchors;

/// The tolerance for logits; the anchors are unit vectors.
const LOGITS: f32 = 1e-4;
const ANCHORS: f32 = 1e-5;

#[test]
fn in_an_f16_cell_prograds_teacher_and_promptsrcs_anchors_are_upstreams_fp32() {
    let dev = Default::default();
    set_default_float_dtype::<B>(&dev, FloatDType::F16).expect("the first tensor of this process is f16");
    let clip = load_clip::<B>(&fixture("tiny-clip-hf"), &LoadOptions::default(), &dev).unwrap();
    assert_eq!(clip.model.dtype(), DType::F16, "the cell's backbone computes at f16");
    let f = Fixture::load("upstream_steps");
    let (shape, data) = f.get("pixels");
    let pixels = || {
        Tensor::<B, 4>::from_data(
            TensorData::new(data.clone(), [shape[0], shape[1], shape[2], shape[3]]),
            (&dev, DType::F32),
        )
    };

    // ProGrad.
    let template = f.meta["prograd_teacher_f16_run"]["template"].as_str().unwrap();
    let want = f.get("prograd_teacher_f16_run.logits");
    let teacher = ZeroShotTeacher::new(&clip.model, &clip.tokenizer, template, &f.names).unwrap();
    let own = clip.model.encode_image(pixels(), &Default::default());
    let got = teacher.logits(pixels(), own.clone());
    assert_eq!(got.dtype(), DType::F32);
    let d = max_diff("prograd teacher", values(got), want.clone());
    assert!(
        d <= LOGITS,
        "ProGrad's teacher in an f16 cell is {d:.1e} from upstream's fp32 teacher"
    );
    // What the teacher was before: the cell's own backbone at f16.
    let text = clip
        .model
        .encode_text(
            &clip.tokenizer,
            &f.names
                .iter()
                .map(|n| template.replace("{}", &n.replace('_', " ")))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let at_f16 = clip.model.logits_per_image(own, text).cast(DType::F32);
    let d16 = max_diff("prograd teacher at f16", values(at_f16), want);
    eprintln!("ProGrad teacher vs upstream's fp32: {d:.1e}; the all-f16 teacher: {d16:.1e}");
    assert!(
        d16 > 10.0 * LOGITS,
        "the all-f16 teacher is only {d16:.1e} from upstream's: this fixture cannot tell the precisions apart"
    );

    // PromptSRC.
    let templates: Vec<String> = f.meta["promptsrc_anchors_f16_run"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let want = f.get("promptsrc_anchors_f16_run.anchors");
    let got = anchors(&clip.model, &clip.tokenizer, &templates, &f.names).unwrap();
    assert_eq!(got.dtype(), DType::F32);
    let d = max_diff("promptsrc anchors", values(got), want.clone());
    assert!(
        d <= ANCHORS,
        "PromptSRC's anchors in an f16 cell are {d:.1e} from upstream's fp32 ones"
    );
    let mut sum: Option<Tensor<B, 2>> = None;
    for t in &templates {
        let texts: Vec<String> = f.names.iter().map(|n| t.replace("{}", &n.replace('_', " "))).collect();
        let e = clip.model.encode_text(&clip.tokenizer, &texts).unwrap();
        sum = Some(sum.map_or(e.clone(), |s| s + e));
    }
    let at_f16 = gram_bench::clip::Clip::normalize(sum.unwrap()).cast(DType::F32);
    let d16 = max_diff("promptsrc anchors at f16", values(at_f16), want);
    eprintln!("PromptSRC anchors vs upstream's fp32: {d:.1e}; the all-f16 anchors: {d16:.1e}");
    assert!(
        d16 > 10.0 * ANCHORS,
        "the all-f16 anchors are only {d16:.1e} from upstream's: this fixture cannot tell the precisions apart"
    );
}
