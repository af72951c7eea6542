#!/usr/bin/env python3
"""A CoOp prompt learner checkpoint as Dassl's save_checkpoint writes it after training, for a machine
without PyTorch: the byte layout of torch.save (a zip holding <archive>/data.pkl, pickle protocol 2,
tensors as torch._utils._rebuild_tensor_v2 over persistent storages <archive>/data/<key>), with
what made every real release unreadable before:

- "optimizer": SGD's state_dict after steps, whose `state` has integer keys:
  {0: {"momentum_buffer": tensor}};
- "scheduler": Dassl's ConstantWarmupScheduler state_dict, which pickles its `successor`
  (a CosineAnnealingLR object) and through it the SGD object, whose `state` is a
  collections.defaultdict keyed by the Parameter itself;
- "epoch": 50 and "val_result": None.

Writes tests/fixtures/released/trained/coop/eurosat/seed1/prompt_learner/model.pth.tar-50 and
tests/fixtures/released/trained/expected.json (the ctx values, as float32). Run once:

    python3 tests/reference/dassl_checkpoint.py
"""
import collections
import io
import json
import os
import pickle
import random
import struct
import sys
import types
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "released", "trained")
N_CTX, WIDTH, N_CLS = 4, 64, 4


def fake_module(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        if isinstance(v, type) or callable(v):
            v.__module__ = name
            v.__qualname__ = k
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def _rebuild_tensor_v2(*a):
    raise RuntimeError("never called: only pickled")


def _rebuild_parameter(*a):
    raise RuntimeError("never called: only pickled")


class FloatStorage:
    pass


class SGD:
    pass


class CosineAnnealingLR:
    pass


fake_module("torch", FloatStorage=FloatStorage)
fake_module("torch._utils", _rebuild_tensor_v2=_rebuild_tensor_v2, _rebuild_parameter=_rebuild_parameter)
fake_module("torch.optim.sgd", SGD=SGD)
fake_module("torch.optim.lr_scheduler", CosineAnnealingLR=CosineAnnealingLR)


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    """Pickles as torch.Tensor does: _rebuild_tensor_v2(storage, offset, size, stride, grad, hooks)."""

    def __init__(self, storage, size, offset=0, stride=None):
        self.storage, self.size, self.offset = storage, size, offset
        if stride is None:
            stride, acc = [], 1
            for d in reversed(size):
                stride.insert(0, acc)
                acc *= d
        self.stride = tuple(stride)

    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2,
                (self.storage, self.offset, tuple(self.size), self.stride, False, collections.OrderedDict()))


class Parameter:
    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce_ex__(self, proto):
        return (_rebuild_parameter, (self.tensor, True, collections.OrderedDict()))

    def __hash__(self):
        return id(self)


storages = []


def tensor(values, size, offset=0, stride=None):
    s = Storage(str(len(storages)), values)
    storages.append(s)
    return Tensor(s, size, offset, stride)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None


rng = random.Random(7)
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
ctx_values = [f32(rng.gauss(0, 0.02)) for _ in range(N_CTX * WIDTH)]
ctx = tensor(ctx_values, [N_CTX, WIDTH])
momentum = tensor([f32(rng.gauss(0, 1e-3)) for _ in range(N_CTX * WIDTH)], [N_CTX, WIDTH])
# The buffers a release carries: token_prefix is a view at an offset into a shared storage.
emb = tensor([f32(rng.gauss(0, 0.02)) for _ in range(N_CLS * 9 * WIDTH)], [N_CLS, 9, WIDTH])
prefix = Tensor(emb.storage, [N_CLS, 1, WIDTH], 0, (9 * WIDTH, WIDTH, 1))
suffix = Tensor(emb.storage, [N_CLS, 8, WIDTH], WIDTH, (9 * WIDTH, WIDTH, 1))

param = Parameter(ctx)
group = {"lr": 1.0e-5, "momentum": 0.9, "dampening": 0, "weight_decay": 5e-4, "nesterov": False,
         "initial_lr": 0.002}
sgd = SGD()
sgd.__dict__.update({
    "defaults": dict(group),
    "_optimizer_step_pre_hooks": collections.OrderedDict(),
    "state": collections.defaultdict(dict, {param: {"momentum_buffer": momentum}}),
    "param_groups": [dict(group, params=[param])],
})
cosine = CosineAnnealingLR()
cosine.__dict__.update({"optimizer": sgd, "T_max": 50, "eta_min": 0, "base_lrs": [0.002], "last_epoch": 50,
                        "_step_count": 51, "verbose": False, "_get_lr_called_within_step": False,
                        "_last_lr": [0.0]})
checkpoint = {
    "state_dict": collections.OrderedDict([("ctx", ctx), ("token_prefix", prefix), ("token_suffix", suffix)]),
    "epoch": 50,
    "optimizer": {"state": {0: {"momentum_buffer": momentum}}, "param_groups": [dict(group, params=[0])]},
    "scheduler": {"successor": cosine, "warmup_epoch": 1, "cons_lr": 1e-5, "base_lrs": [0.002],
                  "last_epoch": 50, "_step_count": 51, "verbose": False, "_get_lr_called_within_step": False,
                  "_last_lr": [0.0]},
    "val_result": None,
}

buf = io.BytesIO()
TorchPickler(buf, protocol=2).dump(checkpoint)
d = os.path.join(OUT, "coop", "eurosat", "seed1", "prompt_learner")
os.makedirs(d, exist_ok=True)
with zipfile.ZipFile(os.path.join(d, "model.pth.tar-50"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("model/data.pkl", buf.getvalue())
    z.writestr("model/byteorder", "little")
    for s in storages:
        z.writestr(f"model/data/{s.key}", struct.pack(f"<{len(s.values)}f", *s.values))
    z.writestr("model/version", "3\n")
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"epoch": 50, "ctx": {"shape": [N_CTX, WIDTH], "values": ctx_values},
               "token_prefix_first": emb.storage.values[:WIDTH],
               "token_suffix_first": emb.storage.values[WIDTH:2 * WIDTH]}, f)
print("wrote", d)
