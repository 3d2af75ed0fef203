"""SHAFTS network: key names/shapes, variant detection, safe loading, numerics."""
from pathlib import Path
import glob
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edifice.models.checkpoint import CheckpointError, save_checkpoint
from edifice.models.shafts import (build_shafts_model, detect_shafts_variant, load_shafts_checkpoint,
                                   shafts_card)

torch.set_num_threads(1)
KEY_DIR = str(Path(__file__).resolve().parents[1] / "data" / "shafts-keys")  # copied from shared/docs
KEY_FILES = sorted(glob.glob(os.path.join(KEY_DIR, "keys_*.txt")))


def _parse_keys(path):
    out = {}
    for line in open(path):
        if line.strip():
            name, shape = line.split(None, 1)
            out[name] = tuple(int(s) for s in shape.strip().strip("()").split(",") if s.strip())
    return out


def _variant_of_file(path):
    name = os.path.basename(path)[len("keys_"):]
    res = int(name.split("m_")[0])
    return res, ("multi" if "MTL" in name else "height"), (2 if "nb2" in name else 1)


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for k, v in sd.items():
        if v.dtype.is_floating_point:
            r = torch.rand(v.shape, generator=g)
            if k.endswith("running_var"):
                v.copy_(0.5 + r)
            elif k.endswith("weight") and v.ndim == 1:
                v.copy_(0.5 + r)
            else:
                v.copy_((r - 0.5) * 0.4)
    return model


@pytest.mark.skipif(not KEY_FILES, reason="key files not available")
@pytest.mark.parametrize("path", KEY_FILES, ids=os.path.basename)
def test_state_dict_matches_shafts_keys(path):
    expected = _parse_keys(path)
    res, task, nb = _variant_of_file(path)
    model = build_shafts_model(res, task, nb)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    v = detect_shafts_variant(model.state_dict())
    assert res in v.resolutions_m and v.num_blocks == nb and v.multi_task == (task == "multi")


def test_detection_250_500_ambiguous_and_nb2():
    assert detect_shafts_variant(build_shafts_model(250).state_dict()).resolutions_m == (250, 500)
    assert detect_shafts_variant(build_shafts_model(1000).state_dict()).resolutions_m == (1000,)
    v = detect_shafts_variant(build_shafts_model(100, "multi", 2).state_dict())
    assert v.resolutions_m == (100,) and v.num_blocks == 2
    with pytest.raises(CheckpointError):
        detect_shafts_variant({"w": torch.zeros(1)})


@pytest.mark.parametrize("res", [100, 250, 500, 1000])
def test_feature_maps_are_5x5(res):
    m = build_shafts_model(res).eval()
    s = m.patch_size
    for branch, c in ((m.features, 6), (m.aux_features, 1)):
        x = torch.zeros(1, c, s, s)
        x = branch.relu(branch.bn1(branch.conv1(x)))
        if branch.maxpool is not None:
            x = branch.maxpool(x)
        assert branch.res_layer(x).shape[-2:] == (5, 5)


# ---- independent functional re-implementation (from shafts-compat.md, written out) ----
STRIDES = {100: (False, [1, 2, 2]), 250: (True, [1, 1, 2]), 500: (True, [1, 2, 2]), 1000: (True, [1, 2, 2, 2])}


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], training=False, eps=1e-5)


def _branch(x, sd, pre, res, nb):
    big, strides = STRIDES[res]
    if big:
        x = F.relu(_bn(F.conv2d(x, sd[pre + ".conv1.weight"], stride=2, padding=1), sd, pre + ".bn1"))
        x = F.max_pool2d(x, 3, 2, 1)
    else:
        x = F.relu(_bn(F.conv2d(x, sd[pre + ".conv1.weight"], stride=1, padding=1), sd, pre + ".bn1"))
    for li, s in enumerate(strides):
        for bi in range(nb):
            p = f"{pre}.res_layer.{li}.{bi}"
            st = s if bi == 0 else 1
            out = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=st, padding=1), sd, p + ".bn1"))
            out = _bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=1, padding=1), sd, p + ".bn2")
            e = out.mean(dim=(2, 3))
            e = torch.sigmoid(F.linear(F.relu(F.linear(e, sd[p + ".SEfc.0.weight"])), sd[p + ".SEfc.2.weight"]))
            out = out * e[:, :, None, None]
            if p + ".downsample.0.weight" in sd:
                idn = _bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=st), sd, p + ".downsample.1")
            else:
                idn = x
            x = F.relu(out + idn)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _head(z, sd, suffix):
    h = F.linear(z, sd["fc" + suffix + ".weight"], sd["fc" + suffix + ".bias"])
    h = F.relu(_bn(h, sd, "bn_out" + suffix))
    return F.linear(h, sd["fc_out" + suffix + ".weight"], sd["fc_out" + suffix + ".bias"])[:, 0]


@pytest.mark.parametrize("res,task,nb", [(100, "multi", 2), (100, "footprint", 1), (250, "multi", 1),
                                         (500, "height", 1), (1000, "multi", 1)])
def test_matches_functional_reimplementation(res, task, nb):
    m = _randomise(build_shafts_model(res, task, nb), seed=res + nb).eval()
    sd = m.state_dict()
    g = torch.Generator().manual_seed(1)
    s = m.patch_size
    x = torch.rand(3, 6, s, s, generator=g)
    d = torch.rand(3, 1, s, s, generator=g) * 50
    with torch.no_grad():
        got = m(x, d)
        z = torch.cat([_branch(x, sd, "features", res, nb), _branch(d, sd, "aux_features", res, nb)], 1)
        if task == "multi":
            ref = {"height": F.relu(_head(z, sd, "_height")), "footprint": torch.sigmoid(_head(z, sd, "_footprint"))}
        else:
            y = _head(z, sd, "")
            ref = {task: F.relu(y) if task == "height" else torch.sigmoid(y)}
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-5)


# ---- loading ----
def test_load_shafts_file_with_numpy_metrics(tmp_path):
    m = _randomise(build_shafts_model(100, "multi", 2), seed=3)
    sd = {"module." + k: v for k, v in m.state_dict().items()}
    path = tmp_path / "check_pt_senet_100m_MTL.pth"
    torch.save({"epoch": 150, "state_dict": sd, "best_pred_footprint": np.float64(0.933),
                "best_pred_height": np.float64(0.728)}, path)
    ck = load_shafts_checkpoint(path)
    assert (ck.resolution_m, ck.task, ck.num_blocks, ck.source) == (100, "multi", 2, "shafts")
    assert ck.metadata["best_pred_height"] == pytest.approx(0.728)
    assert not ck.model.training
    for k, v in m.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v)


def test_load_refuses_other_pickled_objects(tmp_path):
    import decimal
    path = tmp_path / "evil.pth"
    sd = build_shafts_model(100).state_dict()
    torch.save({"state_dict": sd, "x": decimal.Decimal("1")}, path)  # a non-allow-listed global
    with pytest.raises(CheckpointError, match="weights-only"):
        load_shafts_checkpoint(path)
    # numpy scalar first (allow-listed), then something else: the retry refuses too
    torch.save({"a": np.float64(1.0), "state_dict": sd, "x": decimal.Decimal("1")}, path)
    with pytest.raises(CheckpointError, match="beyond numpy scalars"):
        load_shafts_checkpoint(path)


def test_misshaped_checkpoint_fails_loudly(tmp_path):
    sd = build_shafts_model(100, "multi", 1).state_dict()
    sd["fc_height.weight"] = torch.zeros(10, 320)
    path = tmp_path / "bad.pth"
    torch.save({"epoch": 1, "state_dict": sd}, path)
    with pytest.raises(CheckpointError, match="another shape"):
        load_shafts_checkpoint(path)
    sd = build_shafts_model(100, "multi", 1).state_dict()
    del sd["aux_features.res_layer.2.0.SEfc.0.weight"]
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_shafts_checkpoint(path)


def test_resolution_and_target_required_or_checked(tmp_path):
    path = tmp_path / "m250.pth"
    torch.save({"state_dict": build_shafts_model(250).state_dict()}, path)
    with pytest.raises(CheckpointError, match="say which resolution"):
        load_shafts_checkpoint(path)
    assert load_shafts_checkpoint(path, resolution_m=500).resolution_m == 500
    with pytest.raises(CheckpointError):
        load_shafts_checkpoint(path, resolution_m=100)
    p2 = tmp_path / "stl.pth"
    torch.save({"epoch": 1, "state_dict": build_shafts_model(100, "height").state_dict(),
                "best_pred": np.float32(0.5)}, p2)
    with pytest.raises(CheckpointError, match="single-task"):
        load_shafts_checkpoint(p2)
    assert load_shafts_checkpoint(p2, target="footprint").task == "footprint"


def test_edifice_format_roundtrip(tmp_path):
    m = _randomise(build_shafts_model(1000, "multi", 1), seed=5)
    path = tmp_path / "ours.pt"
    save_checkpoint(path, m.state_dict(), shafts_card(1000, "multi", 1, metrics={"val": {"r2_height": 0.7}}))
    ck = load_shafts_checkpoint(path)
    assert (ck.resolution_m, ck.task, ck.source) == (1000, "multi", "edifice")
    assert ck.card["metrics"]["val"]["r2_height"] == 0.7
    with pytest.raises(CheckpointError):
        load_shafts_checkpoint(path, resolution_m=100)


def _rewrite_pickle(path, old: bytes, new: bytes):
    """Replace ``old`` by ``new`` in the pickle (data.pkl) of a torch zip checkpoint; other entries kept."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    out = path.with_suffix(".tmp")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            if name.endswith("/data.pkl"):
                assert old in data
                data = data.replace(old, new)
            z.writestr(name, data)
    out.replace(path)


@pytest.mark.parametrize("alias", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_load_numpy_scalar_saved_under_either_numpy(tmp_path, alias):
    """numpy 1.x pickles name the scalar reconstructor numpy.core.multiarray.scalar, numpy 2.x
    numpy._core.multiarray.scalar: a SHAFTS file saved under either loads (weights_only) under either."""
    sd = build_shafts_model(100, "multi", 1).state_dict()
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 3, "state_dict": sd, "best_pred_height": np.float64(0.728)}, path)
    native = np.float64(0).__reduce__()[0].__module__.encode()
    if native != alias.encode():
        _rewrite_pickle(path, native + b"\nscalar", alias.encode() + b"\nscalar")
    import zipfile
    with zipfile.ZipFile(path) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    assert (alias.encode() + b"\nscalar") in pkl
    other = {"numpy.core.multiarray", "numpy._core.multiarray"} - {alias}
    assert (other.pop().encode() + b"\nscalar") not in pkl
    with pytest.raises(Exception, match="Unsupported global"):   # a plain weights-only load refuses it
        torch.load(path, map_location="cpu", weights_only=True)
    ck = load_shafts_checkpoint(path)
    assert ck.metadata["best_pred_height"] == pytest.approx(0.728) and ck.metadata["epoch"] == 3
    for k, v in sd.items():
        assert torch.equal(ck.model.state_dict()[k], v)


def test_numpy_allow_list_names_both_aliases():
    from edifice.models.shafts import _numpy_allow_list
    named = {n for e in _numpy_allow_list() if isinstance(e, tuple) for n in e[1:]}
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"} <= named
