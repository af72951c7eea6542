#!/usr/bin/env python3
"""Released-checkpoint fixtures: prompt learners saved the way Dassl's save_checkpoint writes them
(torch.save of {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}, named
prompt_learner/model.pth.tar-N), for the tiny fixture CLIP's widths:

- released/coop/{eurosat}/seed1/prompt_learner/model.pth.tar-2: CoOp's PromptLearner state dict
  (unified `ctx` [4, 64] plus the `token_prefix`/`token_suffix` buffers a release carries);
- released/cocoop/eurosat/seed1/prompt_learner/model.pth.tar-2: a CoCoOp learner saved under a
  `prompt_learner.` prefix, as whole-model checkpoints have it.

released/expected.safetensors holds the tensors the Rust side must end up with. Run once:

    python tests/reference/released_checkpoints.py
"""
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "released")
torch.manual_seed(5)
width, vis_dim, n_ctx, n_cls = 64, 32, 4, 4


def save(state, method, epoch=2):
    d = os.path.join(OUT, method, "eurosat", "seed1", "prompt_learner")
    os.makedirs(d, exist_ok=True)
    params = [v for k, v in state.items() if "token_" not in k]
    opt = torch.optim.SGD([nn.Parameter(p.clone()) for p in params], lr=0.002, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epoch)
    torch.save({"state_dict": state, "epoch": epoch, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "val_result": None},
               os.path.join(d, f"model.pth.tar-{epoch}"))


expected = {}
ctx = torch.randn(n_ctx, width) * 0.02
save({"ctx": ctx, "token_prefix": torch.zeros(n_cls, 1, width), "token_suffix": torch.zeros(n_cls, 8, width)}, "coop")
expected["coop.ctx"] = ctx.unsqueeze(0).contiguous()

cctx = torch.randn(n_ctx, width) * 0.02
l1, l2 = nn.Linear(vis_dim, vis_dim // 16), nn.Linear(vis_dim // 16, width)
state = {"prompt_learner.ctx": cctx, "prompt_learner.meta_net.linear1.weight": l1.weight.detach(),
         "prompt_learner.meta_net.linear1.bias": l1.bias.detach(),
         "prompt_learner.meta_net.linear2.weight": l2.weight.detach(),
         "prompt_learner.meta_net.linear2.bias": l2.bias.detach(),
         "prompt_learner.token_prefix": torch.zeros(n_cls, 1, width)}
save(state, "cocoop")
for k, v in state.items():
    if "token_" not in k:
        expected["cocoop." + k.removeprefix("prompt_learner.")] = v.clone().contiguous()
save_file(expected, os.path.join(OUT, "expected.safetensors"))
print(sorted(expected))
