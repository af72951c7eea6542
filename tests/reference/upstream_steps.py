#!/usr/bin/env python3
"""One training step and one evaluation of every prompt-tuning method, run by the code that published
it: each repository's own CustomCLIP, prompt learner, trainer (`build_model`, `forward_backward`,
`model_inference`) and Dassl's optimizer and update, imported from checkouts at pinned commits, on the
tiny fixture CLIP. Writes tests/fixtures/upstream_steps.safetensors (+ .json); tests/upstream_steps.rs
checks gram-bench's methods against them. Run once:

    for r in KaiyangZhou/CoOp KaiyangZhou/Dassl.pytorch htyao89/KgCoOp BeierZhu/Prompt-align \\
             muzairkhattak/multimodal-prompt-learning muzairkhattak/PromptSRC; do
        git clone https://github.com/$r; done    # and check out the commits in PINNED below
    pip install yacs
    python tests/reference/upstream_steps.py --coop CoOp --dassl Dassl.pytorch --kgcoop KgCoOp \\
        --prograd Prompt-align --mpl multimodal-prompt-learning --promptsrc PromptSRC

| fixture | upstream | trainer |
| --- | --- | --- |
| coop, cocoop | KaiyangZhou/CoOp trainers/coop.py, cocoop.py + KaiyangZhou/Dassl.pytorch | CoOp, CoCoOp |
| kgcoop | htyao89/KgCoOp KgCoOp/trainers/kgcoop.py + its Dassl.ProGrad.pytorch | KgCoOp |
| prograd, prograd_agree, prograd_template, prograd_template_on_target (logits only) | BeierZhu/Prompt-align ProGrad.public/trainers/prograd.py + its Dassl.ProGrad.pytorch (`prograd_backward_and_update`) | ProGrad |
| vpt, vpt_as_published, maple, ivlp | muzairkhattak/multimodal-prompt-learning trainers/vpt.py, maple.py, independentVL.py, clip/model.py + Dassl.pytorch | VPT, MaPLe, IVLP |
| promptsrc, promptsrc_60_templates | muzairkhattak/PromptSRC trainers/promptsrc.py, clip/model.py + Dassl.pytorch | PromptSRC |
| prograd_teacher_f16_run (logits), promptsrc_anchors_f16_run (anchors) | ProGrad's `CLIP` teacher and PromptSRC's `fixed_embeddings` as an fp16 run builds them (stand-in 10) | — |

Every method runs on the batch, class names, template, learning rate and initial learnable tensors of
tests/fixtures/method_steps.* (the project's own re-implementation), so the two fixture sets compare
directly; the script prints and records max |upstream - method_steps| per method. Each trainer is
built by Dassl's own `SimpleTrainer.__init__` from a config made by Dassl's `get_cfg_default` and the
repository's own `train.py:extend_cfg`; the learnable tensors are then overwritten with the fixture's
(the state the trainer's optimizer holds them in); logits are `model_inference` with the registered
models in eval mode, as Dassl's `test` calls it; the step is `forward_backward` on the first batch of
a two-batch epoch (so no epoch-end scheduler or PromptSRC GPA update runs), with OPTIM sgd, lr from the
fixture, momentum 0.9, weight decay 5e-4 (Dassl's defaults), no warm-up.

Upstream code is imported from the checkouts as it is; nothing of it is copied here, and the JSON
lists the sha256 of every file of a checkout that the run imported. What a CPU-only, network-less run
on the tiny CLIP needs, and nothing else, is stood in (each also in the JSON's `stand_ins`):

1. Weights. `clip._download(url)` returns a local file holding the fixture's OpenAI-layout state dict
   (tests/fixtures/tiny-clip-openai.safetensors, written with torch.save); the repositories' own
   `load_clip_to_cpu` then loads it as they load a non-JIT checkpoint (`torch.jit.load` fails,
   `torch.load` reads the state dict) and calls their own `build_model`.
2. Attention heads. `build_model` hard-codes heads = width // 64 (1 for the fixture's width 64); the
   fixture has heads of width 16, so after `build_model` each `nn.MultiheadAttention` gets
   `num_heads = embed_dim // 16` (the parameters do not depend on the head count).
3. Precision. `build_model`'s `convert_weights` (an fp16 cast of the weights, lossless for OpenAI's
   fp16 release, rounding for the f32 fixture) is a no-op; every trainer runs with PREC "fp32"; and
   `Tensor.half()` / `Module.half()` are the identity. In upstream's published fp16 runs those casts
   are no-ops (every tensor is already half); run in fp32 without this, MaPLe's `proj.half()` and
   PromptSRC's `fixed_embeddings.half()` mix dtypes and stop the run. VPT is the exception: its
   `load_clip_to_cpu` returns `model.float()`, so upstream runs VPT in f32 with only the prompt tokens
   cast to f16 (clip/model.py `.half()` on `VPT`/`VPT_shallow`); `vpt_as_published` records that run,
   with `.half()` live.
4. Device. `Tensor.cuda()` and `Module.cuda()` are the identity (CPU only).
5. Tokenizer. `clip.tokenize` and each trainer's `_tokenizer.encode` use the fixture's tokenizer
   (tests/fixtures/tiny-clip-hf/tokenizer.json, a 1000-token CLIP BPE with the same SOS/EOS framing
   and EOT as the highest id) instead of CLIP's 49408-token vocabulary.
6. Data. `SimpleTrainer.build_data_loader` (datasets on disk) is replaced by one that sets
   `dm.dataset.classnames`, `lab2cname` and `num_classes` from the fixture's class names; the batch
   is handed to `forward_backward` as `{"img": pixels, "label": labels}`.
7. ViT-B/16 widths hard-coded in MaPLe (maple.py:103,111,116: `nn.Linear(ctx_dim, 768)`,
   `torch.empty(n_ctx, 512)`): maple.py's module globals `nn` and `torch` are wrappers that read
   512 as the fixture's text width and 768 as its vision width (both 64) in `nn.Linear` and
   `torch.empty`, and pass everything else through.
8. Absent packages. torchvision, PIL, ftfy, tabulate, gdown, sklearn, wilds, pandas and
   torch.utils.tensorboard, where not installed, import as inert modules: Dassl and CLIP import them
   for data loading, image transforms, evaluation metrics, logging and text cleanup, none of which
   runs here.
9. PromptSRC's anchor templates. `promptsrc` replaces promptsrc.py's `IMAGENET_TEMPLATES` with
   method_steps' two templates; `promptsrc_60_templates` runs with upstream's own 60.
10. fp16 weights. An fp16 run's checkpoint holds fp16 values (OpenAI's release); the fixture's are
   f32. For `prograd_teacher_f16_run` and `promptsrc_anchors_f16_run`, `clip._download` returns the
   fixture rounded to fp16 (what gram-bench's f16 cell loads), and upstream's own `.float()` widens it
   for the teacher (prograd.py `CLIP`) and the anchors (promptsrc.py `load_clip_to_cpu(cfg, True).float()`),
   which run at fp32 on the f32 pixels as in a PREC fp16 run.
"""
import argparse
import contextlib
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
MODEL = os.path.join(FIX, "tiny-clip-hf")

# name: (repository, commit, code folder, Dassl folder inside the same checkout or None)
PINNED = {
    "coop": ("github.com/KaiyangZhou/CoOp", "ff61507c790454bce7c5052c3ac39e60772f1f89", ".", None),
    "dassl": ("github.com/KaiyangZhou/Dassl.pytorch", "c61a1b570ac6333bd50fb5ae06aea59002fb20bb", ".", None),
    "kgcoop": ("github.com/htyao89/KgCoOp", "c43ccc32c8739f64b165cfa205fcc6c0f5bb5b17", "KgCoOp",
               "Dassl.ProGrad.pytorch"),
    "prograd": ("github.com/BeierZhu/Prompt-align", "1b762036cbe97ecf504e17bb94d89191679e4e6e", "ProGrad.public",
                "Dassl.ProGrad.pytorch"),
    "mpl": ("github.com/muzairkhattak/multimodal-prompt-learning", "69bce21ae8eda80ad6187534b2dce09cf6c59e17", ".",
            None),
    "promptsrc": ("github.com/muzairkhattak/PromptSRC", "bb95c77b634d63488f2cad81ff4a72d53bdd06d5", ".", None),
}

# The files whose code a step runs (the JSON's `run`; `files` has the digest of every file imported).
DASSL_RUN = ["dassl/config/defaults.py", "dassl/engine/build.py", "dassl/engine/trainer.py", "dassl/optim/optimizer.py",
             "dassl/optim/lr_scheduler.py"]
RUN = {
    "coop": ["train.py", "trainers/coop.py", "trainers/cocoop.py", "clip/clip.py", "clip/model.py"],
    "dassl": DASSL_RUN,
    "kgcoop": ["KgCoOp/train.py", "KgCoOp/trainers/kgcoop.py", "KgCoOp/clip/clip.py", "KgCoOp/clip/model.py"]
    + [f"Dassl.ProGrad.pytorch/{f}" for f in DASSL_RUN],
    "prograd": ["ProGrad.public/train.py", "ProGrad.public/trainers/prograd.py", "ProGrad.public/clip/clip.py",
                "ProGrad.public/clip/model.py"] + [f"Dassl.ProGrad.pytorch/{f}" for f in DASSL_RUN],
    "mpl": ["train.py", "trainers/vpt.py", "trainers/maple.py", "trainers/independentVL.py", "clip/clip.py",
            "clip/model.py"],
    "promptsrc": ["train.py", "trainers/promptsrc.py", "trainers/imagenet_templates.py", "clip/clip.py", "clip/model.py"],
}

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
for k in PINNED:
    ap.add_argument(f"--{k}", required=True, metavar="PATH", help=f"a checkout of {PINNED[k][0]}@{PINNED[k][1][:7]}")
args = ap.parse_args()
checkouts = {}
for k, (repo, commit, _, _) in PINNED.items():
    path = os.path.abspath(getattr(args, k))
    head = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head != commit:
        sys.exit(f"{path} is at {head or 'no git commit'}, not {repo}@{commit}")
    if subprocess.run(["git", "-C", path, "diff", "--quiet", "HEAD"]).returncode != 0:
        sys.exit(f"{path}: tracked files differ from {repo}@{commit}")
    checkouts[k] = path
try:
    import yacs  # noqa: F401  (Dassl's config; a real dependency, not stood in)
except ImportError:
    sys.exit("Dassl's config needs yacs: pip install yacs")

# --- 8. Absent packages import as inert modules -------------------------------------------------------
INERT_ROOTS = ["torchvision", "PIL", "ftfy", "tabulate", "gdown", "sklearn", "wilds", "pandas"]
inert = [r for r in INERT_ROOTS if importlib.util.find_spec(r) is None]
if importlib.util.find_spec("tensorboard") is None:
    inert.append("torch.utils.tensorboard")


class _InertMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _inert_class(f"{cls.__name__}.{name}")


def _inert_class(name):
    return _InertMeta(name, (), {"__init__": lambda self, *a, **k: None})


class _InertModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = _inert_class(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if any(name == r or name.startswith(r + ".") for r in inert):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _InertModule(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


finder = _InertFinder()
sys.meta_path.insert(0, finder)

# --- The fixture: the same batch, classes and initial tensors as method_steps --------------------------
ms_meta = json.load(open(os.path.join(FIX, "method_steps.json")))
ms = load_file(os.path.join(FIX, "method_steps.safetensors"))
classnames = ms_meta["classnames"]
template = ms_meta["template"]
LR = ms_meta["lr"]
pixels = ms["pixels"]
labels = torch.tensor(ms_meta["labels"])
S = pixels.shape[-1]
open_cfg = json.load(open(os.path.join(FIX, "tiny-clip-openai.json")))
TEXT_W = open_cfg["text_cfg"]["width"]
VISION_W = open_cfg["vision_cfg"]["width"]
TEXT_HEAD_W = TEXT_W // open_cfg["text_cfg"]["heads"]
VISION_HEAD_W = open_cfg["vision_cfg"]["head_width"]
assert TEXT_HEAD_W == VISION_HEAD_W, "one head width for both towers"
HEAD_W = TEXT_HEAD_W

state_dict = load_file(os.path.join(FIX, "tiny-clip-openai.safetensors"))
tmp = tempfile.TemporaryDirectory()
WEIGHTS = os.path.join(tmp.name, "tiny-clip-openai.pt")
torch.save(state_dict, WEIGHTS)
WEIGHTS16 = os.path.join(tmp.name, "tiny-clip-openai-fp16-values.pt")  # stand-in 10
torch.save({k: v.half().float() for k, v in state_dict.items()}, WEIGHTS16)
hf_tok = CLIPTokenizerFast.from_pretrained(MODEL)


def fixture_tokenize(texts, context_length=77, truncate=False):
    """Stand-in 5: clip.tokenize's framing ([SOS] + encode(text) + [EOT], zero-padded) on the fixture's BPE."""
    if isinstance(texts, str):
        texts = [texts]
    rows = hf_tok(texts)["input_ids"]
    out = torch.zeros(len(rows), context_length, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) > context_length:
            raise RuntimeError(f"Input {texts[i]} is too long for context length {context_length}")
        out[i, : len(r)] = torch.tensor(r)
    return out


class FixtureTokenizer:
    """Stand-in 5: SimpleTokenizer.encode (no SOS/EOT) on the fixture's BPE."""

    def encode(self, text):
        return hf_tok(text, add_special_tokens=False)["input_ids"]


class WidthShim:
    """Stand-in 7: a module global (`nn` or `torch`) whose `attr` reads the ViT-B/16 widths as the fixture's."""

    def __init__(self, real, attr):
        self._real, self._attr = real, attr
        self._widths = {512: TEXT_W, 768: VISION_W}

    def __getattr__(self, name):
        value = getattr(self._real, name)
        if name != self._attr:
            return value
        return lambda *a, **k: value(*[self._widths.get(x, x) if isinstance(x, int) else x for x in a], **k)


# --- Importing one repository (and its Dassl) from its checkout ---------------------------------------
OWN = ("clip", "trainers", "datasets", "dassl", "train")
used = {}  # repo key -> {relative path: sha256}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def purge():
    for name in list(sys.modules):
        if name.split(".")[0] in OWN:
            del sys.modules[name]


@contextlib.contextmanager
def repository(key, dassl_key="dassl"):
    """Imports `key`'s train.py (its extend_cfg, datasets and trainers) and its Dassl; yields train."""
    repo, _, code, own_dassl = PINNED[key]
    roots = {key: os.path.join(checkouts[key], code)}
    if own_dassl:
        roots[key + ":dassl"] = os.path.join(checkouts[key], own_dassl)
    else:
        roots[dassl_key] = checkouts[dassl_key]
    purge()
    sys.path[:0] = list(roots.values())
    try:
        train = importlib.import_module("train")
        from clip import clip as clip_mod
        from clip import model as clip_model_mod

        clip_mod._download = lambda url, root=None: WEIGHTS  # stand-in 1
        clip_mod.tokenize = fixture_tokenize  # stand-in 5
        clip_mod._tokenizer = FixtureTokenizer()
        published_convert_weights = clip_model_mod.convert_weights
        clip_model_mod.convert_weights = lambda model: None  # stand-in 3
        real_build = clip_mod.build_model

        def build_model(*a, **k):  # stand-in 2
            m = real_build(*a, **k)
            for mha in m.modules():
                if isinstance(mha, nn.MultiheadAttention):
                    mha.num_heads, mha.head_dim = mha.embed_dim // HEAD_W, HEAD_W
            return m

        clip_mod.build_model = build_model
        clip_mod.published_convert_weights = published_convert_weights  # for the GPA fixture
        for name, mod in list(sys.modules.items()):
            if name.startswith("trainers.") and hasattr(mod, "_tokenizer"):
                mod._tokenizer = FixtureTokenizer()
        yield train
    finally:
        for name, mod in list(sys.modules.items()):
            f = getattr(mod, "__file__", None)
            if not f:
                continue
            f = os.path.abspath(f)
            for rk, root in roots.items():
                repo_key = key if rk.startswith(key) else rk
                base = checkouts[repo_key]
                if f.startswith(os.path.abspath(root) + os.sep):
                    used.setdefault(repo_key, {})[os.path.relpath(f, base)] = sha256(f)
        for r in roots.values():
            sys.path.remove(r)
        purge()


@contextlib.contextmanager
def patched(half_is_identity=True):
    """Stand-ins 3 and 4: .cuda() (and .half()) as the identity while a trainer is built and run."""
    saved = (torch.Tensor.cuda, nn.Module.cuda, torch.Tensor.half, nn.Module.half)
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    if half_is_identity:
        torch.Tensor.half = lambda self, *a, **k: self
        nn.Module.half = lambda self: self
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda, torch.Tensor.half, nn.Module.half = saved


def set_path(cfg, dotted, value):
    node = cfg
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)


def make_trainer(train, name, settings, names=classnames):
    """Dassl's SimpleTrainer.__init__ on a config from get_cfg_default + the repository's extend_cfg."""
    from dassl.config import get_cfg_default
    from dassl.engine import TRAINER_REGISTRY

    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    for k, v in {
        "TRAINER.NAME": name,
        "MODEL.BACKBONE.NAME": "ViT-B/16",
        "INPUT.SIZE": (S, S),
        "DATASET.NAME": "Caltech101",  # its CUSTOM_TEMPLATES entry (KgCoOp, ProGrad) is "a photo of a {}."
        "OPTIM.NAME": "sgd",
        "OPTIM.LR": LR,
        "OPTIM.MAX_EPOCH": 1,
        "OPTIM.LR_SCHEDULER": "cosine",
        "USE_CUDA": False,
        **settings,
    }.items():
        set_path(cfg, k, v)
    assert cfg.OPTIM.MOMENTUM == 0.9 and cfg.OPTIM.WEIGHT_DECAY == 5e-4 and cfg.OPTIM.WARMUP_EPOCH <= 0

    def build_data_loader(self):  # stand-in 6
        self.dm = types.SimpleNamespace(dataset=types.SimpleNamespace(classnames=list(names)))
        self.num_classes = len(names)
        self.lab2cname = dict(enumerate(names))

    cls = TRAINER_REGISTRY.get(name)
    return type(name, (cls,), {"build_data_loader": build_data_loader})(cfg), cfg


def learnable(trainer):
    """The trainer's learnable tensors under gram-bench's artifact names (the state-dict name less
    `prompt_learner.`)."""
    return {n.removeprefix("prompt_learner."): p for n, p in trainer.model.named_parameters() if p.requires_grad}


tensors = {"pixels": pixels.contiguous()}
meta = {
    "classnames": classnames,
    "template": template,
    "labels": labels.tolist(),
    "lr": LR,
    "torch": torch.__version__,
    "stand_ins": [
        "weights: clip._download returns a local torch.save of tests/fixtures/tiny-clip-openai.safetensors; "
        "load_clip_to_cpu and build_model run as published",
        "attention heads: after build_model (heads = width // 64), each nn.MultiheadAttention gets "
        "num_heads = embed_dim // 16, the fixture's head width",
        "precision: convert_weights is a no-op, PREC fp32, Tensor.half()/Module.half() are the identity "
        "(except in vpt_as_published)",
        "device: Tensor.cuda()/Module.cuda() are the identity",
        "tokenizer: clip.tokenize and _tokenizer.encode use the fixture's 1000-token BPE (tiny-clip-hf/tokenizer.json)",
        "data: SimpleTrainer.build_data_loader sets dm.dataset.classnames, lab2cname, num_classes from the "
        "fixture; the batch is method_steps' pixels and labels",
        "maple widths: maple.py's `nn.Linear` and `torch.empty` read 512 and 768 (ViT-B/16) as the fixture's 64 and 64",
        f"absent packages imported as inert modules: {', '.join(inert) or 'none'}",
        "promptsrc: promptsrc.py's IMAGENET_TEMPLATES replaced by method_steps' templates "
        "(promptsrc_60_templates keeps upstream's 60)",
        "fp16 weights: for prograd_teacher_f16_run and promptsrc_anchors_f16_run, clip._download returns the "
        "fixture rounded to fp16, which upstream's own .float() widens",
    ],
    "runs": {},
    "comparison": {},
}


def put(name, t):
    tensors[name] = t.detach().clone().float().contiguous()


def step(trainer, init, step_labels, loss_key="loss"):
    """Loads `init` into the trainer's learnable tensors; returns their own initial values, the logits
    (`model_inference`, registered models in eval mode), one `forward_backward`'s loss and the
    tensors after it (in `init`'s shapes)."""
    params = learnable(trainer)
    assert sorted(params) == sorted(init), f"upstream learns {sorted(params)}, the fixture has {sorted(init)}"
    own_init = {}
    with torch.no_grad():
        for k, p in params.items():
            own_init[k] = p.detach().clone()
            p.copy_(init[k].reshape(p.shape))
    trainer.set_model_mode("eval")
    with torch.no_grad():
        logits = trainer.model_inference(pixels)
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    summary = trainer.forward_backward({"img": pixels, "label": step_labels})
    loss = torch.tensor([summary[loss_key]], dtype=torch.float32)
    after = {k: p.detach().clone().reshape(init[k].shape) for k, p in params.items()}
    return own_init, logits, loss, after


def record(fixture, trainer, init, step_labels, loss_key="loss", extra=None, compare_to=None):
    """`step`, recorded under `fixture`, and compared with method_steps' `compare_to` (default: the
    same name) where that exists."""
    own_init, logits, loss, after = step(trainer, init, step_labels, loss_key)
    for k, v in init.items():
        put(f"{fixture}.init.{k}", v)
    put(f"{fixture}.logits", logits)
    put(f"{fixture}.loss", loss)
    for k, v in after.items():
        put(f"{fixture}.after.{k}", v)
    meta[fixture] = {**{k: v for k, v in (extra or {}).items() if k != "loss"}, "loss": float(loss),
                     "labels": step_labels.tolist()}
    ref = compare_to or fixture
    if f"{ref}.after.{next(iter(init))}" in ms:
        d = {k: (after[k] - ms[f"{ref}.after.{k}"]).abs().max().item() for k in init}
        meta["comparison"][fixture] = {
            "against": f"method_steps {ref}",
            "logits": (logits - ms[f"{ref}.logits"]).abs().max().item() if f"{ref}.logits" in ms else None,
            "loss": abs(float(loss) - ms[f"{ref}.loss"].item()),
            "after_max": max(d.values()),
            "after": d,
        }
    return own_init


def init_of(name):
    p = f"{name}.init."
    return {k[len(p):]: v for k, v in ms.items() if k.startswith(p)}


# --- CoOp and CoCoOp: KaiyangZhou/CoOp ------------------------------------------------------------------
with repository("coop") as train, patched():
    # The two fixture layouts hold the same weights: upstream's CLIP on the OpenAI layout against
    # transformers' CLIP on the HF layout.
    from transformers import CLIPModel

    from clip import clip as clip_mod

    hf = CLIPModel.from_pretrained(MODEL).eval()
    oa = clip_mod.build_model(dict(state_dict)).eval()
    ids = fixture_tokenize([template.format(n.replace("_", " ")) for n in classnames])
    with torch.no_grad():
        img_hf = hf.get_image_features(pixel_values=pixels)
        img_hf = img_hf if torch.is_tensor(img_hf) else img_hf.pooler_output
        txt_hf = hf.get_text_features(input_ids=ids)
        txt_hf = txt_hf if torch.is_tensor(txt_hf) else txt_hf.pooler_output
        meta["layouts"] = {
            "image_features": (oa.encode_image(pixels) - img_hf).abs().max().item(),
            "text_features": (oa.encode_text(ids) - txt_hf).abs().max().item(),
            "logit_scale": abs(oa.logit_scale.item() - hf.logit_scale.item()),
        }
    assert max(meta["layouts"].values()) < 1e-5, meta["layouts"]

    t, _ = make_trainer(train, "CoOp",
                        {"TRAINER.COOP.N_CTX": 4, "TRAINER.COOP.CTX_INIT": "", "TRAINER.COOP.PREC": "fp32"})
    record("coop", t, init_of("coop"), labels)
    meta["runs"]["coop"] = "KaiyangZhou/CoOp trainers/coop.py: CoOp"

    t, _ = make_trainer(train, "CoCoOp",
                        {"TRAINER.COCOOP.N_CTX": 4, "TRAINER.COCOOP.CTX_INIT": "", "TRAINER.COCOOP.PREC": "fp32"})
    record("cocoop", t, init_of("cocoop"), labels, extra={"meta_net_reduction": 16})
    meta["runs"]["cocoop"] = "KaiyangZhou/CoOp trainers/cocoop.py: CoCoOp"

# --- KgCoOp: htyao89/KgCoOp -------------------------------------------------------------------------------
with repository("kgcoop") as train, patched():
    W = ms_meta["kgcoop"]["weight"]
    t, _ = make_trainer(train, "KgCoOp",
                        {"TRAINER.COOP.N_CTX": 4, "TRAINER.COOP.CTX_INIT": False, "TRAINER.COOP.W": W,
                         "TRAINER.COOP.PREC": "fp32"})
    record("kgcoop", t, init_of("kgcoop"), labels, extra={"weight": W})
    meta["runs"]["kgcoop"] = "htyao89/KgCoOp KgCoOp/trainers/kgcoop.py: KgCoOp"

# --- ProGrad: BeierZhu/Prompt-align -----------------------------------------------------------------------
with repository("prograd") as train, patched():
    pg = {"TRAINER.COOP.N_CTX": 4, "TRAINER.COOP.CTX_INIT": False, "TRAINER.COOP.PREC": "fp32",
          "LOSS.NAME": "prograd", "LOSS.T": ms_meta["prograd"]["temperature"],
          "LOSS.LAMBDA": ms_meta["prograd"]["lambda"]}
    extra = {"lambda": ms_meta["prograd"]["lambda"], "temperature": ms_meta["prograd"]["temperature"]}
    t, pg_cfg = make_trainer(train, "ProGrad", pg)
    record("prograd", t, init_of("prograd"), torch.tensor(ms_meta["prograd"]["labels"]), "xe_loss", extra)
    # Stand-in 10: the zero-shot teacher as a PREC fp16 run builds it (prograd.py `CLIP`:
    # `clip_model.float()`), on the f32 pixels.
    from clip import clip as clip_mod

    clip_mod._download = lambda url, root=None: WEIGHTS16
    zs = sys.modules["trainers.prograd"].CLIP(pg_cfg, classnames)
    with torch.no_grad():
        put("prograd_teacher_f16_run.logits", zs(pixels))
    clip_mod._download = lambda url, root=None: WEIGHTS
    meta["prograd_teacher_f16_run"] = {"template": sys.modules["trainers.prograd"].CUSTOM_TEMPLATES["Caltech101"]}
    t, _ = make_trainer(train, "ProGrad", pg)
    record("prograd_agree", t, init_of("prograd"), torch.tensor(ms_meta["prograd_agree"]["labels"]), "xe_loss",
           extra)
    # Upstream's template context (CTX_INIT set): zeros, then the dataset's template less " {}." in the
    # last slots. OxfordPets' "a type of pet, a photo of a {}." has more tokens than words, so its last
    # tokens stay in the frozen part before the class name. The initial context is upstream's own.
    N_T = 12
    pets = dict(pg, **{"TRAINER.COOP.N_CTX": N_T, "TRAINER.COOP.CTX_INIT": True, "DATASET.NAME": "OxfordPets"})
    t, cfg = make_trainer(train, "ProGrad", pets)
    prograd_py = sys.modules["trainers.prograd"]
    own = {k: p.detach().clone().unsqueeze(0) for k, p in learnable(t).items()}  # method_steps' (1, n_ctx, width)
    record("prograd_template", t, own, torch.tensor(ms_meta["prograd"]["labels"]), "xe_loss",
           dict(extra, n_ctx=N_T, prior_template=prograd_py.CUSTOM_TEMPLATES["OxfordPets"]))
    # On another dataset upstream evaluates a trainer built for that dataset, into which load_model
    # (prograd.py:403-439) loads the trained prompt learner less token_prefix/token_suffix: the
    # placeholder words, so the frozen suffix, are the target's template's (Caltech101: "a photo of a {}.").
    ckpt = os.path.join(tmp.name, "prograd_template")
    t.save_model(0, ckpt)
    target, _ = make_trainer(train, "ProGrad", dict(pets, **{"DATASET.NAME": "Caltech101"}))
    target.load_model(ckpt, epoch=1)
    target.set_model_mode("eval")
    with torch.no_grad():
        put("prograd_template_on_target.logits", target.model_inference(pixels))
    meta["prograd_template_on_target"] = {
        "trained_on": "OxfordPets", "template": prograd_py.CUSTOM_TEMPLATES["Caltech101"],
        "ctx": "prograd_template.after.ctx",
    }
    meta["runs"]["prograd"] = "BeierZhu/Prompt-align ProGrad.public/trainers/prograd.py: ProGrad"

# --- VPT, MaPLe, IVLP: muzairkhattak/multimodal-prompt-learning ---------------------------------------------
with repository("mpl") as train:
    vpt_init = init_of("vpt")
    depth = ms_meta["vpt"]["depth"]
    vs = {"TRAINER.VPT.N_CTX_VISION": ms_meta["vpt"]["n_ctx"], "TRAINER.VPT.PROMPT_DEPTH_VISION": depth,
          "TRAINER.VPT.PREC": "fp32"}
    with patched():
        t, _ = make_trainer(train, "VPT", vs)
        record("vpt", t, vpt_init, labels, extra={"n_ctx": ms_meta["vpt"]["n_ctx"], "depth": depth})
    with patched(half_is_identity=False):
        t, _ = make_trainer(train, "VPT", vs)
        record("vpt_as_published", t, vpt_init, labels, extra={"n_ctx": ms_meta["vpt"]["n_ctx"], "depth": depth},
               compare_to="vpt")
    # What vpt_as_published differs by is the f16 rounding of the prompt tokens (clip/model.py:405 and
    # :238 cast VPT and VPT_shallow with .half() before they join the f32 tokens): the f32 run from the
    # f16-rounded initial tokens gives its logits and loss, and the same step (after - init).
    rounded = {k: v.to(torch.float16).float() for k, v in vpt_init.items()}
    with patched():
        t, _ = make_trainer(train, "VPT", vs)
        _, logits_r, loss_r, after_r = step(t, rounded, labels)
    meta["vpt_as_published"]["f32_from_f16_rounded_init"] = {
        "logits": (logits_r - tensors["vpt_as_published.logits"]).abs().max().item(),
        "loss": abs(float(loss_r) - float(tensors["vpt_as_published.loss"])),
        "step": max((after_r[k] - rounded[k] - (tensors[f"vpt_as_published.after.{k}"] - vpt_init[k])).abs().max().item()
                    for k in vpt_init),
    }
    meta["runs"]["vpt"] = "muzairkhattak/multimodal-prompt-learning trainers/vpt.py: VPT"

    maple_py = sys.modules["trainers.maple"]
    maple_py.nn = WidthShim(nn, "Linear")  # stand-in 7
    maple_py.torch = WidthShim(torch, "empty")
    mm = ms_meta["maple"]
    with patched():
        t, _ = make_trainer(train, "MaPLe",
                            {"TRAINER.MAPLE.N_CTX": mm["n_ctx"], "TRAINER.MAPLE.CTX_INIT": mm["ctx_init"],
                             "TRAINER.MAPLE.PROMPT_DEPTH": mm["depth"], "TRAINER.MAPLE.PREC": "fp32"})
        own = record("maple", t, init_of("maple"), labels, extra=dict(mm))
    meta["maple"]["own_init_ctx_vs_fixture"] = (own["ctx"] - init_of("maple")["ctx"]).abs().max().item()
    meta["runs"]["maple"] = "muzairkhattak/multimodal-prompt-learning trainers/maple.py: MaPLe"

    iv = ms_meta["ivlp"]
    with patched():
        t, _ = make_trainer(train, "IVLP",
                            {"TRAINER.IVLP.N_CTX_TEXT": iv["n_ctx_text"], "TRAINER.IVLP.N_CTX_VISION": iv["n_ctx_vision"],
                             "TRAINER.IVLP.CTX_INIT": iv["ctx_init"], "TRAINER.IVLP.PROMPT_DEPTH_TEXT": iv["text_depth"],
                             "TRAINER.IVLP.PROMPT_DEPTH_VISION": iv["vision_depth"], "TRAINER.IVLP.PREC": "fp32"})
        own = record("ivlp", t, init_of("ivlp"), labels, extra=dict(iv))
    meta["ivlp"]["own_init_ctx_vs_fixture"] = (own["ctx"] - init_of("ivlp")["ctx"]).abs().max().item()
    meta["runs"]["ivlp"] = "muzairkhattak/multimodal-prompt-learning trainers/independentVL.py: IVLP"

# --- PromptSRC: muzairkhattak/PromptSRC ---------------------------------------------------------------------
with repository("promptsrc") as train, patched():
    iv = ms_meta["ivlp"]
    ps = ms_meta["promptsrc"]
    src = {"TRAINER.PROMPTSRC.N_CTX_TEXT": iv["n_ctx_text"], "TRAINER.PROMPTSRC.N_CTX_VISION": iv["n_ctx_vision"],
           "TRAINER.PROMPTSRC.CTX_INIT": iv["ctx_init"], "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT": iv["text_depth"],
           "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION": iv["vision_depth"], "TRAINER.PROMPTSRC.PREC": "fp32",
           "TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT": ps["text_loss_weight"],
           "TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT": ps["image_loss_weight"]}
    promptsrc_py = sys.modules["trainers.promptsrc"]
    upstream_templates = list(promptsrc_py.IMAGENET_TEMPLATES)
    promptsrc_py.IMAGENET_TEMPLATES = list(ps["templates"])  # stand-in 9
    t, _ = make_trainer(train, "PromptSRC", src)
    own = record("promptsrc", t, init_of("promptsrc"), labels, extra=dict(ps))
    meta["promptsrc"]["own_init_ctx_vs_fixture"] = (own["ctx"] - init_of("promptsrc")["ctx"]).abs().max().item()
    # Stand-in 10: the anchors as a PREC fp16 run builds them (`load_clip_to_cpu(cfg, True).float()`).
    from clip import clip as clip_mod

    clip_mod._download = lambda url, root=None: WEIGHTS16
    t, _ = make_trainer(train, "PromptSRC", src)
    fe = t.model.prompt_learner.fixed_embeddings
    put("promptsrc_anchors_f16_run.anchors", fe / fe.norm(dim=-1, keepdim=True))
    clip_mod._download = lambda url, root=None: WEIGHTS
    meta["promptsrc_anchors_f16_run"] = {"templates": list(ps["templates"])}
    promptsrc_py.IMAGENET_TEMPLATES = upstream_templates
    t, _ = make_trainer(train, "PromptSRC", src)
    record("promptsrc_60_templates", t, init_of("promptsrc"), labels, extra=dict(ps, templates=upstream_templates))
    meta["runs"]["promptsrc"] = "muzairkhattak/PromptSRC trainers/promptsrc.py: PromptSRC"
    # GPA over the whole state dict (promptsrc.py:322-335, `prompt_only=False`): the frozen backbone
    # of an fp16 run (the fixture's fp16 values; clip/model.py's own `convert_weights` makes its
    # dtype mix) and of an fp32 run, aggregated by the trainer's own `state_dict_weighting` and
    # `state_dict_add` over GPA_EPOCHS epochs. Written in the OpenAI layout, as f32.
    import copy

    import numpy as np

    GPA_EPOCHS, GPA_MEAN, GPA_STD = 20, 15.0, 1.0
    gauss = t.get_gauss(GPA_MEAN, GPA_STD)
    g = np.array([gauss(a) for a in range(1, GPA_EPOCHS + 1)])
    g = g / sum(g)
    gpa_meta = {"epochs": GPA_EPOCHS, "mean": GPA_MEAN, "std": GPA_STD}
    clip_mod._download = lambda url, root=None: WEIGHTS16
    for run in ["fp16", "fp32"]:
        m = promptsrc_py.load_clip_to_cpu(t.cfg, True)  # the frozen model PromptSRC builds
        if run == "fp16":
            identity, torch.Tensor.half = torch.Tensor.half, lambda self, *a, **k: self.to(torch.float16)
            clip_mod.published_convert_weights(m)  # with a real .half(), which stand-in 3 makes the identity
            torch.Tensor.half = identity
        sd = m.state_dict()
        if run == "fp16":
            # PromptSRC's state dict holds no token_embedding: the class-name token embeddings it
            # aggregates are the `token_prefix`/`token_suffix` buffers, taken at the run's dtype
            # (promptsrc.py:117,131-132). Their fold is the table's, rows at fp16.
            sd["token_embedding.weight"] = sd["token_embedding.weight"].to(torch.float16)
        gpa_meta[run] = {"fp16": sorted(k for k, v in sd.items() if v.dtype == torch.float16)}
        prev = None
        for e in range(GPA_EPOCHS):
            w = t.state_dict_weighting(copy.deepcopy(sd), g[e])
            prev = w if prev is None else t.state_dict_add(w, prev)
        save_file({k: v.float().contiguous() for k, v in prev.items()},
                  os.path.join(FIX, f"gpa_whole_model_{run}.safetensors"))
    clip_mod._download = lambda url, root=None: WEIGHTS
    meta["gpa_whole_model"] = gpa_meta

sys.meta_path.remove(finder)
for name in [n for n in sys.modules if any(n == r or n.startswith(r + ".") for r in inert)]:
    del sys.modules[name]

meta["upstream"] = {}
for k in PINNED:
    files = dict(sorted(used.get(k, {}).items()))
    missing = [f for f in RUN[k] if f not in files]
    assert not missing, f"{k}: {missing} not imported"
    meta["upstream"][k] = {"repository": PINNED[k][0], "commit": PINNED[k][1], "run": RUN[k], "files": files}

save_file(tensors, os.path.join(FIX, "upstream_steps.safetensors"))
with open(os.path.join(FIX, "upstream_steps.json"), "w") as f:
    json.dump(meta, f, indent=1)

print(f"{'fixture':<24}{'against':<22}{'logits':>10}{'loss':>10}{'after':>10}")
for k, c in meta["comparison"].items():
    lg = "-" if c["logits"] is None else f"{c['logits']:.1e}"
    print(f"{k:<24}{c['against']:<22}{lg:>10}{c['loss']:>10.1e}{c['after_max']:>10.1e}")
print("layouts (OpenAI vs HF fixture):", meta["layouts"])
print("wrote tests/fixtures/upstream_steps.safetensors and .json")
