"""ResNet encoders (torchvision naming), channel adaptation, multi-task U-Net, card round trip."""
import pytest
import torch

from edifice.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from edifice.models.resnet import ResNetEncoder, adapt_first_conv, adapt_torchvision_state
from edifice.models.unet import ARCHITECTURE, UNetResNet, build_from_card, load_model

torch.set_num_threads(1)

# (name, shape) of a few entries of torchvision's resnet34().state_dict()
TORCHVISION_RESNET34 = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1.running_mean", (64,)),
    ("bn1.num_batches_tracked", ()),
    ("layer1.0.conv1.weight", (64, 64, 3, 3)),
    ("layer1.2.bn2.bias", (64,)),
    ("layer2.0.conv1.weight", (128, 64, 3, 3)),
    ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("layer2.0.downsample.1.running_var", (128,)),
    ("layer3.5.conv2.weight", (256, 256, 3, 3)),
    ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer4.2.bn2.weight", (512,)),
]
RESNET34_PARAMS_WITH_FC = 21_797_672
FC_PARAMS = 512 * 1000 + 1000


def test_resnet34_names_shapes_and_count():
    enc = ResNetEncoder("resnet34", 3)
    sd = enc.state_dict()
    for name, shape in TORCHVISION_RESNET34:
        assert tuple(sd[name].shape) == shape, name
    assert sum(p.numel() for p in enc.parameters()) == RESNET34_PARAMS_WITH_FC - FC_PARAMS
    assert len(sd) == 218 - 2  # torchvision's 218 keys less fc.weight, fc.bias
    assert not any(k.startswith("fc.") for k in sd)
    assert "layer4.2.conv2.weight" in sd and "layer4.3.conv1.weight" not in sd


def test_resnet18_50_counts():
    assert sum(p.numel() for p in ResNetEncoder("resnet18").parameters()) == 11_689_512 - FC_PARAMS
    r50 = ResNetEncoder("resnet50")
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032 - (2048 * 1000 + 1000)
    assert tuple(r50.state_dict()["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1)
    assert r50.out_channels == (64, 256, 512, 1024, 2048)


def test_channel_adaptation_math():
    w = torch.randn(8, 3, 7, 7)
    a = adapt_first_conv(w, 6)
    assert a.shape == (8, 6, 7, 7)
    assert torch.equal(a[:, :3], w)
    for c in range(3, 6):
        assert torch.allclose(a[:, c], w.mean(dim=1))
    assert torch.equal(adapt_first_conv(w, 1)[:, 0], w[:, 0])


def test_torchvision_state_loads_into_six_band_encoder_and_unet():
    src = ResNetEncoder("resnet18", 3, base_width=16)
    tv = dict(src.state_dict())
    tv["fc.weight"] = torch.zeros(1000, 128)
    tv["fc.bias"] = torch.zeros(1000)
    adapted = adapt_torchvision_state(tv, 6)
    enc6 = ResNetEncoder("resnet18", 6, base_width=16)
    enc6.load_state_dict(adapted, strict=True)
    assert torch.equal(enc6.conv1.weight[:, :3], src.conv1.weight)
    net = UNetResNet("resnet18", 6, base_width=16)
    missing, unexpected = net.load_state_dict(adapt_torchvision_state(tv, 6, prefix="encoder."), strict=False)
    assert not unexpected and all(not k.startswith("encoder.") for k in missing)


@pytest.mark.parametrize("variant,cin,heads", [
    ("imagery_single", 3, {"use"}),
    ("imagery_poi_single", 6, {"use"}),
    ("imagery_poi_multitask", 6, {"use", "footprint"}),
])
def test_unet_variants_output_shapes(variant, cin, heads):
    net = UNetResNet("resnet18", cin, variant, base_width=8).eval()
    with torch.no_grad():
        out = net(torch.randn(2, cin, 64, 64))
        odd = net(torch.randn(1, cin, 50, 70))
    assert set(out) == heads
    assert out["use"].shape == (2, 3, 64, 64)
    assert odd["use"].shape == (1, 3, 50, 70)
    if "footprint" in heads:
        assert out["footprint"].shape == (2, 1, 64, 64)
    with pytest.raises(ValueError):
        net(torch.randn(1, cin + 1, 64, 64))


def test_unet_resnet34_default_is_six_band_multitask():
    net = UNetResNet()
    assert net.in_channels == 6 and net.multitask and net.encoder.name == "resnet34"
    with pytest.raises(ValueError):
        UNetResNet("resnet18", 3, "imagery_poi_multitask")  # POI variant needs > 3 bands


def _card(params, nbands):
    return {"task": "building_use", "architecture": {"name": ARCHITECTURE, "params": params},
            "bands": [{"name": f"b{i}", "scale": 1.0, "offset": 0.0} for i in range(nbands)],
            "gsd_m": 0.5, "window": 64,
            "classes": [{"index": 1, "name": "residential", "color": "#e8c547"}], "outputs": {}}


def test_card_round_trip(tmp_path):
    params = {"encoder": "resnet18", "in_channels": 6, "variant": "imagery_poi_multitask", "base_width": 8}
    net = UNetResNet(**params).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, net.state_dict(), _card(params, 6))
    state, card = load_checkpoint(path)
    assert card["architecture"]["params"] == params
    model, card2 = load_model(path)
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x)["use"], net(x)["use"])


def test_wrong_architecture_or_bands_is_checkpoint_error(tmp_path):
    params = {"encoder": "resnet18", "in_channels": 6, "variant": "imagery_poi_multitask", "base_width": 8}
    card = _card(params, 6)
    card["architecture"]["name"] = "se_resnet_height"
    with pytest.raises(CheckpointError, match="not a building-use model"):
        build_from_card(card)
    with pytest.raises(CheckpointError, match="bands"):
        build_from_card(_card(params, 3))
    with pytest.raises(CheckpointError):
        build_from_card(_card({**params, "encoder": "vgg16"}, 6))
    with pytest.raises(CheckpointError):
        build_from_card(_card({**params, "bogus": 1}, 6))
    # weights of another size do not load
    small = UNetResNet(**{**params, "base_width": 4})
    path = tmp_path / "m.pt"
    save_checkpoint(path, small.state_dict(), _card(params, 6))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(path)
