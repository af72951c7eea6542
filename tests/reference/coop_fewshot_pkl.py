"""Writes CoOp-format few-shot caches (split_fewshot/shot_K-seed_S.pkl) for the EuroSAT replica the
integration tests generate (tests/suite_engine.rs: eurosat_replica), the way CoOp's datasets/*.py do:
pickle.dump({"train": [Datum...], "val": [Datum...]}, f, protocol=pickle.HIGHEST_PROTOCOL), with
Dassl's Datum (module dassl.data.datasets.base_dataset; attributes _impath, _label, _domain,
_classname). Paths are absolute on "another machine", as in a copied DATA/ folder.

Run once: python tests/reference/coop_fewshot_pkl.py  (writes tests/fixtures/coop_fewshot/)
"""
import os
import pickle
import sys
import types

# Dassl's Datum, under the module path the real pickles reference (Dassl itself is not needed).
mod = types.ModuleType("dassl.data.datasets.base_dataset")
for name in ["dassl", "dassl.data", "dassl.data.datasets"]:
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules[mod.__name__] = mod


class Datum:
    def __init__(self, impath="", label=0, domain=0, classname=""):
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname


Datum.__module__ = mod.__name__
mod.Datum = Datum

ROOT = "/home/someone/DATA/eurosat/2750"
CLASSES = ["AnnualCrop", "Forest", "Highway", "River"]
NAMES = ["Annual Crop Land", "Forest", "Highway or Road", "River"]


def d(label, i):
    c = CLASSES[label]
    return Datum(f"{ROOT}/{c}/{c}_{i}.png", label, 0, NAMES[label])


out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "coop_fewshot")
os.makedirs(out, exist_ok=True)
# 1 shot, seed 1: the second training image of classes 0 and 2, the first of 1 and 3 (the replica's
# train split is images 0 and 1 of each class, val image 2).
files = {
    "shot_1-seed_1.pkl": {"train": [d(0, 1), d(1, 0), d(2, 1), d(3, 0)], "val": [d(l, 2) for l in range(4)]},
    # ImageNet's caches hold only "train".
    "shot_1-seed_2.pkl": {"train": [d(0, 0), d(1, 1), d(2, 0), d(3, 1)]},
    # A cache whose labels disagree with the split file.
    "shot_1-seed_3.pkl": {"train": [Datum(f"{ROOT}/Forest/Forest_0.png", 3, 0, "River")], "val": []},
}
for name, data in files.items():
    with open(os.path.join(out, name), "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    print("wrote", name)
