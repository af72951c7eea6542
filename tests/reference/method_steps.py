#!/usr/bin/env python3
"""One training step of each prompt-tuning method, in PyTorch, on the tiny HF fixture CLIP:
tests/fixtures/method_steps.safetensors (+ .json).

Each method follows its reference code's structure (KaiyangZhou/CoOp trainers/coop.py and
cocoop.py; KgCoOp's trainers/kgcoop.py; ProGrad's trainers/prograd.py + Dassl's
prograd_backward_and_update; the MaPLe repository's VPT: prompts appended after the patch tokens,
replaced before blocks 1..depth-1), re-implemented here on transformers' CLIP modules. For a fixed
batch it records the method's initial parameters, its logits before training, the training loss,
and the parameters after one step of torch.optim.SGD(lr, momentum 0.9, weight_decay 5e-4) — what
Dassl builds. The Rust tests (tests/method_steps.rs) load the same initial parameters and must
match all three within 1e-4. Run once:

    python tests/reference/method_steps.py
"""
import itertools
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import CLIPModel, CLIPTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures")
MODEL = os.path.join(FIX, "tiny-clip-hf")

torch.manual_seed(0)
model = CLIPModel.from_pretrained(MODEL).eval()
for p in model.parameters():
    p.requires_grad_(False)
tok = CLIPTokenizerFast.from_pretrained(MODEL)
tm, vm = model.text_model, model.vision_model
S = model.config.vision_config.image_size
LR, MOMENTUM, WD = 0.01, 0.9, 5e-4

classnames = ["dog", "sea_lion", "aircraft carrier"]
template = "a photo of a {}."
pixels = torch.randn(4, 3, S, S)
labels = torch.tensor([0, 2, 1, 2])
logit_scale = model.logit_scale.exp()


def tokenize(texts):
    return torch.tensor([row + [0] * (77 - len(row)) for row in tok(texts)["input_ids"]])


class Fixed(nn.Module):
    """Stands in for the token embedding so the encoder sees the given prompt embeddings."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def forward(self, _ids):
        return self.x


def encode_prompts(embeds, ids):
    """CoOp's TextEncoder: the encoder on prompt embeddings, pooled at EOT, projected."""
    real = tm.embeddings.token_embedding
    tm.embeddings.token_embedding = Fixed(embeds)
    try:
        out = tm(input_ids=ids)
    finally:
        tm.embeddings.token_embedding = real
    return model.text_projection(out.pooler_output)


def norm(x):
    return x / x.norm(dim=-1, keepdim=True)


def handcrafted(names, tmpl):
    with torch.no_grad():
        ids = tokenize([tmpl.format(n.replace("_", " ")) for n in names])
        return norm(model.text_projection(tm(input_ids=ids).pooler_output))


def image_features(x, vpt=None, depth=0):
    """CLIP's vision tower; with VPT prompts appended after the patch tokens (before ln_pre) and
    replaced before blocks 1..depth-1, as the MaPLe repository's VisionTransformer does."""
    h = vm.embeddings(x)
    if vpt is not None:
        h = torch.cat([h, vpt[0].expand(h.shape[0], -1, -1)], dim=1)
    h = vm.pre_layrnorm(h)
    for i, layer in enumerate(vm.encoder.layers):
        if vpt is not None and 0 < i < depth:
            n = vpt[i].shape[1]
            h = torch.cat([h[:, :-n], vpt[i].expand(h.shape[0], -1, -1)], dim=1)
        out = layer(h, None)
        h = out[0] if isinstance(out, tuple) else out
    return model.visual_projection(vm.post_layernorm(h[:, 0]))


with torch.no_grad():
    img_plain = image_features(pixels)
img_n = norm(img_plain)

# CoOp's prompt pieces: "X X X X {name}." with the SOS prefix and class-token suffix.
n_ctx = 4
width = tm.config.hidden_size
names = [n.replace("_", " ") for n in classnames]
ids = tokenize([" ".join(["X"] * n_ctx) + " " + n + "." for n in names])
with torch.no_grad():
    emb = tm.embeddings.token_embedding(ids)
prefix, suffix = emb[:, :1], emb[:, 1 + n_ctx:]
C = len(classnames)


def coop_logits(ctx, img):
    prompts = torch.cat([prefix, ctx.expand(C, -1, -1), suffix], dim=1)
    text = norm(encode_prompts(prompts, ids))
    return logit_scale * norm(img) @ text.t(), text


def sgd(params):
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD, dampening=0, nesterov=False)


tensors, meta = {}, {"classnames": classnames, "template": template, "labels": labels.tolist(), "lr": LR}
tensors["pixels"] = pixels.contiguous()


def record(name, params, logits, loss, after, extra=None):
    for k, v in params.items():
        tensors[f"{name}.init.{k}"] = v.detach().clone().contiguous()
    tensors[f"{name}.logits"] = logits.detach().clone().contiguous()
    tensors[f"{name}.loss"] = loss.detach().reshape(1)
    for k, v in after.items():
        tensors[f"{name}.after.{k}"] = v.detach().clone().contiguous()
    meta[name] = {"loss": float(loss.detach()), **(extra or {})}


# --- CoOp -------------------------------------------------------------------------------------------
ctx0 = torch.randn(1, n_ctx, width) * 0.02
ctx = nn.Parameter(ctx0.clone())
with torch.no_grad():
    logits0, _ = coop_logits(ctx, img_plain)
opt = sgd([ctx])
logits, _ = coop_logits(ctx, img_plain)
loss = F.cross_entropy(logits, labels)
opt.zero_grad()
loss.backward()
opt.step()
record("coop", {"ctx": ctx0}, logits0, loss, {"ctx": ctx})

# --- KgCoOp: CE + w * (1 - mean cos(text, hand-crafted text)) ---------------------------------------
W = 8.0
zs = handcrafted(classnames, template)
ctx = nn.Parameter(ctx0.clone())
opt = sgd([ctx])
logits, text = coop_logits(ctx, img_plain)
score = 1.0 - torch.mean(nn.CosineSimilarity(dim=1, eps=1e-07)(text, zs))
loss = F.cross_entropy(logits, labels) + W * score
opt.zero_grad()
loss.backward()
opt.step()
record("kgcoop", {"ctx": ctx0}, logits0, loss, {"ctx": ctx}, {"weight": W})

# --- ProGrad: project the CE gradient off the distillation gradient when they conflict -------------
T, LAMBDA = 1.0, 1.0


def prograd_step(ctx_init, labels_):
    ctx = nn.Parameter(ctx_init.clone())
    opt = sgd([ctx])
    logits, _ = coop_logits(ctx, img_plain)
    zs_logits = logit_scale * img_n @ zs.t()
    xe_loss = F.cross_entropy(logits, labels_)
    tea_prob = F.softmax(zs_logits / T, dim=-1)
    kl_loss = (-tea_prob * F.log_softmax(logits / T, -1) * T * T).sum(1).mean()
    opt.zero_grad()
    kl_loss.backward(retain_graph=True)
    b_grad = ctx.grad.clone()
    opt.zero_grad()
    xe_loss.backward()
    a_grad = ctx.grad.clone()
    b_norm = b_grad / torch.linalg.norm(b_grad)
    a_norm = a_grad / torch.linalg.norm(a_grad)
    conflict = bool(torch.dot(a_norm.flatten(), b_norm.flatten()) < 0)
    if conflict:
        ctx.grad = a_grad - LAMBDA * torch.dot(a_grad.flatten(), b_norm.flatten()) * b_norm
    opt.step()
    return ctx, xe_loss, conflict


# Labels are searched so the two gradients conflict and the projection is exercised; a second case
# (labels the zero-shot prior agrees with) checks the unprojected path.
for cand in itertools.product(range(C), repeat=len(labels)):
    pl = torch.tensor(cand)
    ctx, xe, conflict = prograd_step(ctx0, pl)
    if conflict:
        break
assert conflict, "no labelling of the batch makes the CE gradient conflict with the zero-shot one"
record("prograd", {"ctx": ctx0}, logits0, xe, {"ctx": ctx},
       {"lambda": LAMBDA, "temperature": T, "conflict": True, "labels": pl.tolist()})
for cand in itertools.product(range(C), repeat=len(labels)):
    agree = torch.tensor(cand)
    ctx, xe, conflict = prograd_step(ctx0, agree)
    if not conflict:
        break
assert not conflict
meta["prograd_agree"] = {"labels": agree.tolist(), "conflict": conflict, "loss": float(xe.detach())}
tensors["prograd_agree.loss"] = xe.detach().reshape(1)
tensors["prograd_agree.after.ctx"] = ctx.detach().clone().contiguous()

# --- CoCoOp: meta-net bias on every context vector, a text forward per image ------------------------
vis_dim = model.config.projection_dim
meta_net = nn.Sequential(nn.Linear(vis_dim, vis_dim // 16), nn.ReLU(inplace=True), nn.Linear(vis_dim // 16, width))
cctx0 = torch.randn(n_ctx, width) * 0.02
init = {"ctx": cctx0, "meta_net.linear1.weight": meta_net[0].weight.detach().clone(),
        "meta_net.linear1.bias": meta_net[0].bias.detach().clone(),
        "meta_net.linear2.weight": meta_net[2].weight.detach().clone(),
        "meta_net.linear2.bias": meta_net[2].bias.detach().clone()}
cctx = nn.Parameter(cctx0.clone())


def cocoop_logits(img):
    imf = norm(img)
    bias = meta_net(imf).unsqueeze(1)
    shifted = cctx.unsqueeze(0) + bias
    out = []
    for ctx_i, imf_i in zip(shifted, imf):
        pts = torch.cat([prefix, ctx_i.unsqueeze(0).expand(C, -1, -1), suffix], dim=1)
        text = norm(encode_prompts(pts, ids))
        out.append(logit_scale * imf_i @ text.t())
    return torch.stack(out)


with torch.no_grad():
    clogits0 = cocoop_logits(img_plain)
opt = sgd([cctx] + list(meta_net.parameters()))
loss = F.cross_entropy(cocoop_logits(img_plain), labels)
opt.zero_grad()
loss.backward()
opt.step()
after = {"ctx": cctx, "meta_net.linear1.weight": meta_net[0].weight, "meta_net.linear1.bias": meta_net[0].bias,
         "meta_net.linear2.weight": meta_net[2].weight, "meta_net.linear2.bias": meta_net[2].bias}
record("cocoop", init, clogits0, loss, after, {"meta_net_reduction": 16})

# --- VPT (deep over both tiny layers): visual prompts, the text side frozen ------------------------
depth, n_vpt = len(vm.encoder.layers), 2
vwidth = model.config.vision_config.hidden_size
vpt0 = [torch.randn(1, n_vpt, vwidth) * 0.02 for _ in range(depth)]
vpt = [nn.Parameter(v.clone()) for v in vpt0]
vtext = handcrafted(classnames, template)


def vpt_name(i):
    return "image_encoder.VPT" if i == 0 else f"image_encoder.transformer.resblocks.{i}.VPT_shallow"


with torch.no_grad():
    vlogits0 = logit_scale * norm(image_features(pixels, vpt, depth)) @ vtext.t()
opt = sgd(vpt)
loss = F.cross_entropy(logit_scale * norm(image_features(pixels, vpt, depth)) @ vtext.t(), labels)
opt.zero_grad()
loss.backward()
opt.step()
record("vpt", {vpt_name(i): v for i, v in enumerate(vpt0)}, vlogits0, loss,
       {vpt_name(i): v for i, v in enumerate(vpt)}, {"n_ctx": n_vpt, "depth": depth})


# --- Deep text prompts: CLIP's text transformer with tokens after SOS replaced before blocks >= 1 ----
def text_forward(embeds, ids_, deep=()):
    """The text encoder on prompt embeddings; deep[i-1] replaces the n tokens after SOS before block
    i (the MaPLe repository's text ResidualAttentionBlock); pooled at EOT, projected."""
    L = embeds.shape[1]
    h = embeds + tm.embeddings.position_embedding.weight[:L]
    mask = torch.full((L, L), float("-inf")).triu(1)[None, None].expand(h.shape[0], 1, L, L)
    for i, layer in enumerate(tm.encoder.layers):
        if 1 <= i <= len(deep):
            d = deep[i - 1]
            h = torch.cat([h[:, :1], d.unsqueeze(0).expand(h.shape[0], -1, -1), h[:, 1 + d.shape[0]:]], dim=1)
        out = layer(h, mask)
        h = out[0] if isinstance(out, tuple) else out
    h = tm.final_layer_norm(h)
    return model.text_projection(h[torch.arange(h.shape[0]), ids_.argmax(-1)])


with torch.no_grad():
    check = prefix.new_zeros(0)
    x = torch.cat([prefix, ctx0.expand(C, -1, -1), suffix], dim=1)
    assert torch.allclose(text_forward(x, ids), encode_prompts(x, ids), atol=1e-6), "manual text forward"

init_phrase = "a photo of a"
m_ids = tokenize([init_phrase + " " + n + "." for n in names])
with torch.no_grad():
    m_emb = tm.embeddings.token_embedding(m_ids)
    phrase_emb = tm.embeddings.token_embedding(tokenize([init_phrase]))


def multimodal_logits(ctx, text_deep, vision_layers, depth_v, n_ctx_t):
    prompts = torch.cat([m_emb[:, :1], ctx.unsqueeze(0).expand(C, -1, -1), m_emb[:, 1 + n_ctx_t:]], dim=1)
    text = norm(text_forward(prompts, m_ids, text_deep))
    img = norm(image_features(pixels, [v.unsqueeze(0) for v in vision_layers], depth_v))
    return logit_scale * img @ text.t()


def step(params, logits_fn):
    with torch.no_grad():
        logits0 = logits_fn()
    opt = sgd(params)
    loss = F.cross_entropy(logits_fn(), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return logits0, loss


tdepth = len(tm.encoder.layers)
tw = width

# --- MaPLe: visual prompts projected from the text prompts ------------------------------------------
import copy

n_m = 2
m_ctx0 = phrase_emb[0, 1:1 + n_m].clone()
m_ctx = nn.Parameter(m_ctx0.clone())
m_deep = [nn.Parameter(torch.randn(n_m, tw) * 0.02) for _ in range(tdepth - 1)]
proj = nn.Linear(tw, vwidth)
single = nn.Linear(tw, vwidth)
projections = nn.ModuleList([copy.deepcopy(single) for _ in range(tdepth - 1)])
init = {"ctx": m_ctx0, "proj.weight": proj.weight.detach().clone(), "proj.bias": proj.bias.detach().clone()}
for i, d in enumerate(m_deep):
    init[f"compound_prompts_text.{i}"] = d.detach().clone()
    init[f"compound_prompt_projections.{i}.weight"] = projections[i].weight.detach().clone()
    init[f"compound_prompt_projections.{i}.bias"] = projections[i].bias.detach().clone()


def maple_logits():
    vis = [proj(m_ctx)] + [projections[i](m_deep[i]) for i in range(len(m_deep))]
    return multimodal_logits(m_ctx, m_deep, vis, tdepth, n_m)


params = [m_ctx] + m_deep + list(proj.parameters()) + list(projections.parameters())
logits0, loss = step(params, maple_logits)
after = {"ctx": m_ctx, "proj.weight": proj.weight, "proj.bias": proj.bias}
for i, d in enumerate(m_deep):
    after[f"compound_prompts_text.{i}"] = d
    after[f"compound_prompt_projections.{i}.weight"] = projections[i].weight
    after[f"compound_prompt_projections.{i}.bias"] = projections[i].bias
record("maple", init, logits0, loss, after, {"n_ctx": n_m, "ctx_init": init_phrase, "depth": tdepth})

# --- IVLP: independent deep text and vision prompts ---------------------------------------------------
n_t, n_v = 2, 3
i_ctx0 = phrase_emb[0, 1:1 + n_t].clone()
i_ctx = nn.Parameter(i_ctx0.clone())
t_deep0 = [torch.randn(n_t, tw) * 0.02 for _ in range(tdepth - 1)]
v0 = [torch.randn(n_v, vwidth) * 0.02 for _ in range(depth)]
t_deep = [nn.Parameter(t.clone()) for t in t_deep0]
vis = [nn.Parameter(v.clone()) for v in v0]


def ivlp_names():
    out = ["ctx"] + [f"text_encoder.transformer.resblocks.{i + 1}.VPT_shallow" for i in range(len(t_deep))]
    return out + [vpt_name(i) for i in range(len(vis))]


logits0, loss = step([i_ctx] + t_deep + vis, lambda: multimodal_logits(i_ctx, t_deep, vis, depth, n_t))
record("ivlp", dict(zip(ivlp_names(), [i_ctx0] + t_deep0 + v0)), logits0, loss,
       dict(zip(ivlp_names(), [i_ctx] + t_deep + vis)),
       {"n_ctx_text": n_t, "n_ctx_vision": n_v, "ctx_init": init_phrase, "text_depth": tdepth, "vision_depth": depth})

# --- PromptSRC: IVLP prompts + self-regulating losses towards the frozen model (one step) -----------
src_templates = ["a photo of a {}.", "a sketch of the {}."]
with torch.no_grad():
    fixed = norm(torch.stack([model.text_projection(tm(input_ids=tokenize([t.format(n) for n in names])).pooler_output)
                              for t in src_templates]).mean(0))
s_ctx = nn.Parameter(i_ctx0.clone())
s_deep = [nn.Parameter(t.clone()) for t in t_deep0]
s_vis = [nn.Parameter(v.clone()) for v in v0]
TEXT_W, IMAGE_W = 25.0, 10.0


def promptsrc_forward():
    prompts = torch.cat([m_emb[:, :1], s_ctx.unsqueeze(0).expand(C, -1, -1), m_emb[:, 1 + n_t:]], dim=1)
    text = norm(text_forward(prompts, m_ids, s_deep))
    img = norm(image_features(pixels, [v.unsqueeze(0) for v in s_vis], depth))
    return logit_scale * img @ text.t(), text, img


with torch.no_grad():
    s_logits0 = promptsrc_forward()[0]
opt = sgd([s_ctx] + s_deep + s_vis)
logits, text, img = promptsrc_forward()
zs_logits = logit_scale * img_n @ fixed.t()
loss_scl_text = F.l1_loss(text, fixed, reduction="mean") * TEXT_W
loss_scl_image = F.l1_loss(img, img_n, reduction="mean") * IMAGE_W
l_scl_logits = F.kl_div(F.log_softmax(logits / 1, dim=1), F.log_softmax(zs_logits / 1, dim=1), reduction="sum",
                        log_target=True) * (1 * 1) / logits.numel()
loss = F.cross_entropy(logits, labels) + (l_scl_logits + loss_scl_text + loss_scl_image)
opt.zero_grad()
loss.backward()
opt.step()
record("promptsrc", dict(zip(ivlp_names(), [i_ctx0] + t_deep0 + v0)), s_logits0, loss,
       dict(zip(ivlp_names(), [s_ctx] + s_deep + s_vis)),
       {"templates": src_templates, "text_loss_weight": TEXT_W, "image_loss_weight": IMAGE_W})

save_file(tensors, os.path.join(FIX, "method_steps.safetensors"))
with open(os.path.join(FIX, "method_steps.json"), "w") as f:
    json.dump(meta, f, indent=1)
print(json.dumps(meta, indent=1))
