#!/usr/bin/env python3
"""GRAM's reconstruction against the code it is declared after: SUPMER's own regulator module
(`model/grad_trans.py`) and its first-order meta step (`Meta.forward` in `model/meta.py`), run from a
checkout of github.com/beepkh/SUPMER at a pinned commit, on small random tensors and the tiny
fixture CLIP. Writes tests/fixtures/supmer_meta.safetensors (+ .json); tests/supmer.rs compares
gram-bench's regulator forward, its gradients and one meta step with them. Run once:

    git clone https://github.com/beepkh/SUPMER && git -C SUPMER checkout adaddb3
    python tests/reference/supmer_meta.py path/to/SUPMER

SUPMER's code is imported from the checkout as it is; nothing of it is copied here. What a CPU-only
run on a CLIP instead of T5 needs, and nothing else, is stood in (each also in the JSON's
`stand_ins`):

1. The model. `Meta.forward` drives a T5 prompt model through keyword calls (support: `.loss` and
   `.encoder_last_hidden_state`; query: `forward_choice=1` returns encoder states, `=2` the loss of
   mixed states). `CoOpStandIn` answers those calls with CoOp's loss on the tiny CLIP: its
   `prompt_embedding` is the learned context (θ₀), "encoder states" are each query image's
   cross-entropy under the adapted context, and its support "encoder_last_hidden_state" is the
   support images' L2-normalized features, so SUPMER's task embedding (their mean) is gram-bench's
   `image-mean` task embedding.
2. The query mixup. SUPMER mixes two query batches' encoder states by λ ~ Beta; gram-bench has no
   mixup. The stand-in's second query set is the first one again, so the mix is the query loss
   itself (λ·L + (1 − λ)·L = L up to rounding).
3. The coefficient net's input width. SUPMER conditions ψ on an embedding as wide as the prompt
   (T5's hidden size); gram-bench on the image feature (32 here, the prompt 64 wide), so
   `linear_1` is rebuilt `nn.Linear(32, 24)` after `GradientTransform` makes it.
4. The regularizer of the coefficient. SUPMER adds (½·domain_sim + ½·qry_spt_sim − c)² to φ's loss;
   gram-bench has no such term. The one-task step is recorded as SUPMER runs it (`step.one_supmer`)
   and with `reg_loss` returning 0·c (`step.one_noreg`), which gram-bench's step must equal.
"""
import hashlib
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPModel, CLIPTokenizerFast

PINNED = "adaddb3144183a823247fdba80102b0c9185e871"
USED = ["model/grad_trans.py", "model/meta.py"]

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
MODEL = os.path.join(FIX, "tiny-clip-hf")

if len(sys.argv) != 2:
    sys.exit("usage: supmer_meta.py PATH_TO_SUPMER_CHECKOUT")
checkout = os.path.abspath(sys.argv[1])
head = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
if head != PINNED:
    sys.exit(f"{checkout} is at {head or 'no git commit'}, not SUPMER {PINNED}")
digests = {}
for rel in USED:
    with open(os.path.join(checkout, rel), "rb") as f:
        digests[rel] = hashlib.sha256(f.read()).hexdigest()
sys.path.insert(0, checkout)
from model.grad_trans import GradientTransform  # noqa: E402  (SUPMER's own code)
from model.meta import Meta  # noqa: E402

torch.manual_seed(0)
np.random.seed(0)
tensors = {}
meta = {
    "supmer": {"repository": "github.com/beepkh/SUPMER", "commit": PINNED, "files": digests},
    "torch": torch.__version__,
    "stand_ins": [
        "model: CoOp's loss on the tiny fixture CLIP behind T5's keyword interface (prompt_embedding = θ₀)",
        "task embedding: the support images' mean L2-normalized feature as encoder_last_hidden_state",
        "query mixup: the second query set is the first, so the mix is the query loss",
        "coefficient net: linear_1 rebuilt nn.Linear(32, 24) for a 32-wide task embedding",
        "*_noreg steps: GradientTransform.reg_loss returns 0·c (gram-bench has no coefficient regularizer)",
    ],
}


def put(name, t):
    tensors[name] = t.detach().clone().float().contiguous()


# --- 1. ψ_φ alone: forward, and the gradients of a fixed linear read-out ---------------------------
D, E, RANK, HIDDEN = 64, 32, 8, 1
gt = GradientTransform(D, n_hidden=HIDDEN, rank=RANK, init="xavier")
gt.mlp.linear_1 = nn.Linear(E, 24)
gt.train()
g = torch.randn(4, D) * 1e-2
g.requires_grad_(True)
embed = torch.randn(E)
readout = torch.randn(4, D)


def put_regulator(prefix, module):
    for i, layer in enumerate(module.mlp.layers):
        put(f"{prefix}.layers.{i}.u", layer.u)
        put(f"{prefix}.layers.{i}.v", layer.v)
        put(f"{prefix}.layers.{i}.bias", layer.bias)
    put(f"{prefix}.linear_1.weight", module.mlp.linear_1.weight)
    put(f"{prefix}.linear_1.bias", module.mlp.linear_1.bias)
    put(f"{prefix}.linear_2.weight", module.mlp.linear_2.weight)
    put(f"{prefix}.linear_2.bias", module.mlp.linear_2.bias)


put_regulator("psi.init", gt)
out, coeff = gt(g, embed)
(out * readout).sum().backward()
put("psi.grad_in", g)
put("psi.embed", embed)
put("psi.readout", readout)
put("psi.out", out)
put("psi.coeff", coeff.reshape(1))
put("psi.d_grad_in", g.grad)
for i, layer in enumerate(gt.mlp.layers):
    put(f"psi.d.layers.{i}.u", layer.u.grad)
    put(f"psi.d.layers.{i}.v", layer.v.grad)
    put(f"psi.d.layers.{i}.bias", layer.bias.grad)
for n in ["linear_1", "linear_2"]:
    lin = getattr(gt.mlp, n)
    put(f"psi.d.{n}.weight", lin.weight.grad)
    put(f"psi.d.{n}.bias", lin.bias.grad)
meta["psi"] = {"rank": RANK, "hidden_layers": HIDDEN, "coef_hidden": 24, "width": D, "task_dim": E}

# --- 2. One meta step: SUPMER's Meta.forward on CoOp's loss over the tiny CLIP ----------------------
clip = CLIPModel.from_pretrained(MODEL).eval()
for p in clip.parameters():
    p.requires_grad_(False)
tok = CLIPTokenizerFast.from_pretrained(MODEL)
tm = clip.text_model
N_CTX = 4
WIDTH = tm.config.hidden_size
assert WIDTH == D
S = clip.config.vision_config.image_size
classnames = ["red circle", "blue square", "green star"]
C = len(classnames)


def tokenize(texts):
    return torch.tensor([row + [0] * (77 - len(row)) for row in tok(texts)["input_ids"]])


ids = tokenize([" ".join(["X"] * N_CTX) + " " + n + "." for n in classnames])
with torch.no_grad():
    emb = tm.embeddings.token_embedding(ids)
prefix, suffix = emb[:, :1], emb[:, 1 + N_CTX:]


class Fixed(nn.Module):
    def __init__(self, x):
        super().__init__()
        self.x = x

    def forward(self, _ids):
        return self.x


def norm(x):
    return x / x.norm(dim=-1, keepdim=True)


def class_features(ctx):
    prompts = torch.cat([prefix, ctx.unsqueeze(0).expand(C, -1, -1), suffix], dim=1)
    real = tm.embeddings.token_embedding
    tm.embeddings.token_embedding = Fixed(prompts)
    try:
        out = tm(input_ids=ids)
    finally:
        tm.embeddings.token_embedding = real
    return norm(clip.text_projection(out.pooler_output))


SUPPORT, QUERY = 6, 6
N_IMAGES = 2 * (SUPPORT + QUERY)
with torch.no_grad():
    features = clip.get_image_features(pixel_values=torch.randn(N_IMAGES, 3, S, S))
    features = features if torch.is_tensor(features) else features.pooler_output
labels = torch.tensor([i % C for i in range(N_IMAGES)])
logit_scale = clip.logit_scale.exp()


def per_image_ce(ctx, idx):
    logits = logit_scale * norm(features[idx]) @ class_features(ctx).t()
    return F.cross_entropy(logits, labels[idx], reduction="none")


class Out(SimpleNamespace):
    def __getitem__(self, i):
        return [self.last_hidden_state][i]


class CoOpStandIn(nn.Module):
    """SUPMER's prompt model's calls, answered with CoOp on the tiny CLIP (module docstring, 1)."""

    def __init__(self, theta0):
        super().__init__()
        self.prompt_embedding = nn.Embedding(N_CTX, WIDTH)
        self.prompt_embedding.weight.data.copy_(theta0)
        self.support_losses = []

    def forward(self, input_ids=None, forward_choice=None, prompt_embed_weight=None, encoder_outputs=None, **_):
        if forward_choice == 2:
            return Out(loss=encoder_outputs.last_hidden_state.mean())
        ctx = self.prompt_embedding.weight if prompt_embed_weight is None else prompt_embed_weight
        idx = input_ids[:, 0].sort().values
        if forward_choice == 1:
            return Out(last_hidden_state=per_image_ce(ctx, idx)), torch.ones(len(idx), 1)
        loss = per_image_ce(ctx, idx).mean()
        self.support_losses.append(loss.item())
        hidden = norm(features[idx]).unsqueeze(1)
        return Out(loss=loss, encoder_last_hidden_state=hidden)


def dataset(lo, n):
    return [
        {
            "input_ids": torch.tensor([i]),
            "attention_mask": torch.tensor([1]),
            "decoder_input_ids": torch.tensor([0]),
            "labels": labels[i],
            "decoder_attention_mask": torch.tensor([1]),
            "loss_ids": torch.tensor([0]),
        }
        for i in range(lo, lo + n)
    ]


INNER_LR, OUTER_LR = 0.5, 1e-2
theta0 = torch.randn(N_CTX, WIDTH) * 0.02
psi0 = GradientTransform(WIDTH, n_hidden=0, rank=RANK, init="xavier")
psi0.mlp.linear_1 = nn.Linear(E, 24)
state0 = {k: v.clone() for k, v in psi0.state_dict().items()}
tasks = []
for t in range(2):
    lo = t * (SUPPORT + QUERY)
    spt, qry = dataset(lo, SUPPORT), dataset(lo + SUPPORT, QUERY)
    tasks.append((spt, qry, qry, torch.tensor([[0], [1]])))
cluster_embeds = np.random.randn(2, 8)
put("step.theta0", theta0)
put_regulator("step.psi0", psi0)
put("step.features", features)
meta["step"] = {
    "classnames": classnames,
    "labels": labels.tolist(),
    "support": SUPPORT,
    "query": QUERY,
    "tasks": [[t * (SUPPORT + QUERY), SUPPORT, QUERY] for t in range(2)],
    "inner_lr": INNER_LR,
    "outer_lr": OUTER_LR,
    "clip_norm": 1.0,
    "rank": RANK,
    "hidden_layers": 0,
}


def run(name, task_ids, with_reg):
    model = CoOpStandIn(theta0)
    psi = GradientTransform(WIDTH, n_hidden=0, rank=RANK, init="xavier")
    psi.mlp.linear_1 = nn.Linear(E, 24)
    psi.load_state_dict(state0)
    if not with_reg:
        psi.reg_loss = lambda sim1, sim2, coeff: (coeff * 0).sum()
    # SUPMER's optimizers (pretrain.py): torch.optim.Adam, one for the prompt, one for ψ; one lr
    # for both here, as gram-bench has.
    opt_model = torch.optim.Adam([model.prompt_embedding.weight], lr=OUTER_LR, weight_decay=0.0)
    opt_edit = torch.optim.Adam(psi.parameters(), lr=OUTER_LR, weight_decay=0.0)
    args = SimpleNamespace(
        alpha=1.0,
        per_device_inner_train_batch_size_0=SUPPORT,
        per_device_inner_train_batch_size_1=QUERY,
        per_device_inner_eval_batch_size_1=QUERY,
        inner_lr_1=INNER_LR,
        stop_gradient=True,
    )
    learner = Meta(args, model, opt_model, None, opt_edit, None, None, "cpu", psi)
    learner.setAttr(SUPPORT, QUERY, QUERY, INNER_LR, False, cluster_embeds)
    total, per_task = learner([tasks[i] for i in task_ids], 0, training=True)
    put(f"step.{name}.theta", model.prompt_embedding.weight)
    put_regulator(f"step.{name}.psi", psi)
    meta["step"][name] = {
        "tasks": task_ids,
        "with_reg": with_reg,
        "support_loss": float(np.mean(model.support_losses)),
        "query_loss": float(total),
        "query_losses": per_task,
    }


# One task: gram-bench's step must equal SUPMER's without the regularizer; with it, only the
# coefficient net may differ. Two tasks: SUPMER calls optimizer_model.zero_grad() after each task's
# support pass, so θ₀ keeps only the last task's query gradient while ψ's accumulate over both.
run("one_noreg", [0], False)
run("one_supmer", [0], True)
run("two_noreg", [0, 1], False)

save_file(tensors, os.path.join(FIX, "supmer_meta.safetensors"))
with open(os.path.join(FIX, "supmer_meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
print("wrote tests/fixtures/supmer_meta.safetensors and .json")
