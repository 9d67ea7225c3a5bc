"""The npad-edge CLI: one-line errors and exit codes, lazy imports, predict outputs.

Fast tests use small fakes for the model; `test_end_to_end_*` runs the real pipeline on a
few real MVTec bottle images.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import npad_edge
from npad_edge import cli
from npad_edge.errors import DataError, DeviceError, NpadError, WeightsNotFoundError

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("npad-edge: error: ")
    return lines[0]


def subprocess_run(code: str, *args: str):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=120)


# --------------------------------------------------------------------------- lazy imports

LAZY = """
import sys
from npad_edge.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "nncf", "npad_edge.pipeline") if m in sys.modules)
print("HEAVY", heavy, "RC", rc)
"""


def test_help_does_not_import_torch():
    r = subprocess_run(LAZY, "--help")
    assert "HEAVY [] RC 0" in r.stdout, r.stdout + r.stderr
    assert "fit" in r.stdout and "predict" in r.stdout and "demo" in r.stdout


@pytest.mark.parametrize("cmd", ["fit", "export", "predict", "eval", "profile", "info", "demo"])
def test_subcommand_help_does_not_import_torch(cmd):
    r = subprocess_run(LAZY, cmd, "--help")
    assert "HEAVY [] RC 0" in r.stdout, r.stdout + r.stderr


def test_info_does_not_import_torch():
    r = subprocess_run(LAZY, "info")
    assert r.stdout.rstrip().endswith("HEAVY [] RC 0"), r.stdout + r.stderr
    assert "openvino" in r.stdout.lower()


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "npad_edge.cli", "--version"], capture_output=True, text=True,
                       cwd=str(REPO), timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("npad-edge ")


# --------------------------------------------------------------------------- usage and newcomer errors


@pytest.mark.parametrize("argv", [
    [],
    ["nonsense"],
    ["fit", "--data", "x"],                                            # --out missing
    ["fit", "--data", "x", "--out", "y", "--method", "knn"],
    ["export", "--model", "m", "--out", "o", "--fp16", "--int8"],
    ["export", "--model", "m", "--out", "o", "--calib", "c"],          # --calib without --int8
    ["export", "--model", "m", "--out", "o", "--int8"],                # --int8 without --calib
    ["fit", "--data", "x", "--out", "y", "--coreset", "0"],
    ["fit", "--data", "x", "--out", "y", "--set", "novalue"],
])
def test_usage_errors_exit_2(argv, capsys):
    rc, out, err = run(argv, capsys)
    assert rc == 2
    assert "error:" in err and "Traceback" not in err


def test_missing_data_folder(tmp_path, capsys):
    rc, out, err = run(["fit", "--data", tmp_path / "nope", "--out", tmp_path / "m"], capsys)
    assert rc == 1
    line = one_error_line(err)
    assert "nope" in line and "train/good" in line


@pytest.mark.parametrize("argv", [
    ["export", "--model", "{tmp}/nope", "--out", "{tmp}/e"],
    ["predict", "--model", "{tmp}/nope", "--images", "{tmp}", "--out", "{tmp}/o"],
    ["eval", "--model", "{tmp}/nope", "--data", "{tmp}"],
    ["profile", "--model", "{tmp}/nope", "--images", "{tmp}"],
])
def test_model_path_that_does_not_exist(argv, tmp_path, capsys):
    rc, out, err = run([a.format(tmp=tmp_path) for a in argv], capsys)
    assert rc == 1
    line = one_error_line(err)
    assert "model not found" in line and "npad-edge fit --out" in line


def test_predict_without_images(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "empty").mkdir()
    rc, _, err = run(["predict", "--model", tmp_path / "m", "--images", tmp_path / "empty", "--out", tmp_path / "o"],
                     capsys)
    assert rc == 1 and "no images" in one_error_line(err)


def test_library_errors_become_one_line(monkeypatch, tmp_path, capsys):
    def boom(args, parser):
        raise DataError("first line\nsecond line: fix it like this")

    monkeypatch.setattr(cli, "cmd_info", boom)
    rc, _, err = run(["info"], capsys)
    assert rc == 1
    assert one_error_line(err) == "npad-edge: error: first line second line: fix it like this"


def test_debug_shows_traceback_and_ctrl_c_is_130(monkeypatch, capsys):
    def boom(args, parser):
        raise NpadError("broken")

    monkeypatch.setattr(cli, "cmd_info", boom)
    rc, _, err = run(["--debug", "info"], capsys)
    assert rc == 1 and "Traceback" in err and err.rstrip().endswith("npad-edge: error: broken")
    rc, _, err = run(["info", "--debug"], capsys)
    assert rc == 1 and "Traceback" in err

    def interrupt(args, parser):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupt)
    rc, _, err = run(["info"], capsys)
    assert rc == 130 and "interrupted" in err


def test_error_line_variants():
    assert "not found" in cli.error_line(FileNotFoundError(2, "No such file", "/x/y"))
    assert "/x/y" in cli.error_line(FileNotFoundError(2, "No such file", "/x/y"))
    msg = cli.error_line(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert "npad-edge[fit]" in msg
    msg = cli.error_line(TypeError("oops"))
    assert "internal error" in msg and "--debug" in msg
    assert "\n" not in cli.error_line(WeightsNotFoundError("a\nb"))


# --------------------------------------------------------------------------- predict with a fake model


class FakeDetector:
    """Scores an image by its mean brightness; map at half resolution to exercise resizing."""

    threshold = 0.5
    loaded: list = []

    @classmethod
    def load(cls, path, device="CPU", threads=None, **kw):
        if device not in ("CPU",):
            raise DeviceError(f"device {device!r} is not available; available: CPU")
        cls.loaded.append((Path(path), device))
        return cls()

    def __call__(self, image):
        h, w = image.shape[:2]
        score = float(image.mean() / 255.0)
        amap = np.full(((h + 1) // 2, (w + 1) // 2), score, np.float32)
        return types.SimpleNamespace(score=score, is_anomalous=score >= self.threshold, anomaly_map=amap,
                                     mask=amap >= self.threshold, timings={"total": 1.0})


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    model = tmp_path / "edge"
    model.mkdir()
    (model / "manifest.json").write_text("{}")
    monkeypatch.setattr(npad_edge, "Detector", FakeDetector, raising=False)
    return model


def _save(path: Path, h: int, w: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def test_predict_writes_overlay_per_image_and_scores(fake_model, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    _save(imgs / "a.png", 40, 60, 30)            # mixed sizes and formats, nested folders
    _save(imgs / "sub" / "b.jpg", 77, 33, 220)
    _save(imgs / "sub" / "c.bmp", 16, 16, 100)
    (imgs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc, stdout, err = run(["predict", "--model", fake_model, "--images", imgs, "--out", out, "-q"], capsys)
    assert rc == 0, err
    pngs = sorted(p.relative_to(out / "overlays").as_posix() for p in (out / "overlays").rglob("*.png"))
    assert pngs == ["a.png", "sub/b.png", "sub/c.png"]
    for rel, hw in (("a.png", (40, 60)), ("sub/b.png", (77, 33)), ("sub/c.png", (16, 16))):
        with Image.open(out / "overlays" / rel) as im:
            assert im.size == (hw[1], hw[0]) and im.mode == "RGB"
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg", "c.bmp"]
    assert {"path", "score", "is_anomalous", "threshold"} <= set(rows[0])
    assert [r["is_anomalous"] for r in rows] == ["False", "True", "False"]
    data = json.loads((out / "scores.json").read_text())
    assert data["threshold"] == 0.5 and len(data["images"]) == 3
    assert data["images"][1]["is_anomalous"] is True and data["images"][1]["score"] > 0.5
    assert "3 images: 1 anomalous" in stdout


def test_predict_single_file_and_no_overlays(fake_model, tmp_path, capsys):
    _save(tmp_path / "one.png", 20, 20, 10)
    rc, _, err = run(["predict", "--model", fake_model, "--images", tmp_path / "one.png", "--out", tmp_path / "o",
                      "--no-overlays", "-q"], capsys)
    assert rc == 0, err
    assert not (tmp_path / "o" / "overlays").exists()
    assert len(json.loads((tmp_path / "o" / "scores.json").read_text())["images"]) == 1


def test_predict_corrupt_image_fails_or_is_skipped(fake_model, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    _save(imgs / "a.png", 20, 20, 10)
    (imgs / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rc, _, err = run(["predict", "--model", fake_model, "--images", imgs, "--out", tmp_path / "o", "-q"], capsys)
    assert rc == 1 and "bad.png" in one_error_line(err)
    rc, _, err = run(["predict", "--model", fake_model, "--images", imgs, "--out", tmp_path / "o2", "-q",
                      "--skip-bad"], capsys)
    assert rc == 0, err
    rows = json.loads((tmp_path / "o2" / "scores.json").read_text())["images"]
    assert rows[1]["error"] and rows[1]["score"] is None and rows[0]["error"] is None


def test_predict_unknown_device(fake_model, tmp_path, capsys):
    _save(tmp_path / "one.png", 20, 20, 10)
    rc, _, err = run(["predict", "--model", fake_model, "--images", tmp_path / "one.png", "--out", tmp_path / "o",
                      "--device", "NPU7"], capsys)
    assert rc == 1 and "NPU7" in one_error_line(err) and "available" in err


def test_progress_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    assert list(cli.progress_iter(range(5), total=5, desc="x")) == list(range(5))
    assert "x: 5/5" in capsys.readouterr().err


def test_format_table_aligns():
    t = cli.format_table(["name", "value"], [["a", 1.0], ["long name", None]])
    lines = t.splitlines()
    assert len(lines) == 4 and len({len(ln) for ln in lines[:2]}) == 1 and lines[3].endswith("-")


def test_eval_table_and_json_with_fake_evaluation(fake_model, tmp_path, monkeypatch, capsys):
    data = tmp_path / "bottle"
    (data / "test" / "good").mkdir(parents=True)
    calls = []

    def fake_evaluate(model, d, *, eval_size=None, progress=True):
        calls.append((Path(model), Path(d), eval_size))
        return types.SimpleNamespace(
            metrics=dict(image_auroc=0.987, pixel_auroc=0.95, pro=None, eval_resolution=[64, 64], threshold=1.2,
                         f1_threshold=1.1, f1=0.97, n_images=10),
            timings={"median_ms": 12.34, "mean_ms": 50.0}, to_json=lambda: {"metrics": {"image_auroc": 0.987}})

    import npad_edge.evaluation as evaluation  # noqa: F401  (exists once the methods helper lands)

    monkeypatch.setattr(evaluation, "evaluate_model", fake_evaluate)
    rc, out, err = run(["eval", "--model", fake_model, "--data", data, "--json", tmp_path / "r.json",
                        "--eval-size", "64", "-q"], capsys)
    assert rc == 0, err
    assert calls == [(fake_model, data, 64)]
    header, _, row = out.splitlines()[:3]
    assert "image AUROC %" in header and "PRO %" in header and "ms/image" in header
    assert row.startswith("bottle") and "98.7" in row and "12.3" in row
    assert json.loads((tmp_path / "r.json").read_text()) == {"metrics": {"image_auroc": 0.987}}


def test_fit_refuses_a_dataset_root(tmp_path, capsys):
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    (tmp_path / "cable" / "train" / "good").mkdir(parents=True)
    rc, _, err = run(["fit", "--data", tmp_path, "--out", tmp_path / "m"], capsys)
    assert rc == 1
    line = one_error_line(err)
    assert "bottle, cable" in line and str(tmp_path / "bottle") in line


# --------------------------------------------------------------------------- the real pipeline, few real images


@pytest.fixture(scope="module")
def mini_bottle(tmp_path_factory, bottle_dir):
    """A tiny copy of MVTec bottle: 6 train/good, 2 test/good, 2 test/broken_large with masks."""
    import shutil

    root = tmp_path_factory.mktemp("mini") / "bottle"
    picks = [("train/good", 6), ("test/good", 2), ("test/broken_large", 2)]
    for sub, n in picks:
        (root / sub).mkdir(parents=True)
        for p in sorted((bottle_dir / sub).glob("*.png"))[:n]:
            shutil.copy(p, root / sub / p.name)
            if sub == "test/broken_large":
                (root / "ground_truth/broken_large").mkdir(parents=True, exist_ok=True)
                shutil.copy(bottle_dir / "ground_truth/broken_large" / f"{p.stem}_mask.png",
                            root / "ground_truth/broken_large")
    return root


@pytest.fixture(scope="module")
def fitted_model(mini_bottle, tmp_path_factory):
    """A real model fitted through the CLI. Not exported: the Detector runs fitted models with
    torch, and export (tens of seconds) is covered by the export tests and the slow demo test."""
    model = tmp_path_factory.mktemp("models") / "model"
    assert cli.main(["fit", "--data", str(mini_bottle), "--out", str(model), "--image-size", "128",
                     "--coreset", "0.25", "-q"]) == 0
    return model


def test_end_to_end_predict_eval_report(fitted_model, mini_bottle, tmp_path, capsys):
    edge = fitted_model
    capsys.readouterr()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in (mini_bottle / "test/good/000.png", mini_bottle / "test/broken_large/000.png"):
        (imgs / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    with Image.open(mini_bottle / "test/good/000.png") as im:  # a different size and format
        im.convert("RGB").resize((300, 200)).save(imgs / "small.jpg")
    rc, out, err = run(["predict", "--model", edge, "--images", imgs, "--out", tmp_path / "pred", "-q"], capsys)
    assert rc == 0, err
    pngs = sorted((tmp_path / "pred" / "overlays").glob("*.png"))
    assert len(pngs) == 3
    with Image.open(tmp_path / "pred" / "overlays" / "small.png") as im:
        assert im.size == (300, 200)
    rows = json.loads((tmp_path / "pred" / "scores.json").read_text())["images"]
    assert len(rows) == 3 and all(isinstance(r["score"], float) for r in rows)

    rc, out, err = run(["eval", "--model", edge, "--data", mini_bottle, "--json", tmp_path / "r.json",
                        "--report", tmp_path / "r.html", "-q"], capsys)
    assert rc == 0, err
    assert out.splitlines()[2].startswith("bottle")
    assert json.loads((tmp_path / "r.json").read_text())
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<svg" in html


def test_unknown_device_with_a_real_model(fitted_model, mini_bottle, tmp_path, capsys):
    edge = fitted_model
    rc, _, err = run(["predict", "--model", edge, "--images", mini_bottle / "test/good", "--out", tmp_path / "o",
                      "--device", "NPU7"], capsys)
    assert rc == 1
    line = one_error_line(err)
    assert "NPU7" in line and "CPU" in line


def test_data_folder_is_not_a_model(mini_bottle, tmp_path, capsys):
    rc, _, err = run(["predict", "--model", mini_bottle, "--images", mini_bottle / "test/good",
                      "--out", tmp_path / "o"], capsys)
    assert rc == 1 and "manifest" in one_error_line(err).lower()


def test_fit_newcomer_errors_with_the_real_pipeline(tmp_path, capsys, bottle_dir):
    (tmp_path / "empty").mkdir()
    rc, _, err = run(["fit", "--data", tmp_path / "empty", "--out", tmp_path / "m", "-q"], capsys)
    assert rc == 1 and "train/good" in one_error_line(err)
    # a folder with test/ but no train/good
    (tmp_path / "cat" / "test" / "good").mkdir(parents=True)
    (tmp_path / "cat" / "test" / "good" / "000.png").write_bytes((bottle_dir / "test/good/000.png").read_bytes())
    rc, _, err = run(["fit", "--data", tmp_path / "cat", "--out", tmp_path / "m", "-q"], capsys)
    assert rc == 1 and "train" in one_error_line(err)
    assert not (tmp_path / "m").exists()


def test_backbone_without_weights_names_what_to_install(mini_bottle, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    rc, _, err = run(["fit", "--data", mini_bottle, "--out", tmp_path / "m", "--backbone", "wide_resnet50_2",
                      "-q"], capsys)
    assert rc == 1
    line = one_error_line(err)
    assert "wide_resnet50_2" in line and (".pth" in line or "pip install" in line)
    assert not (tmp_path / "m").exists()


def test_eval_several_categories_adds_a_mean_row(tmp_path, monkeypatch, capsys):
    models, data = tmp_path / "models", tmp_path / "mvtec"
    for cat, auc in (("bottle", 0.9), ("cable", 0.8)):
        (models / cat).mkdir(parents=True)
        (models / cat / "manifest.json").write_text("{}")
        (data / cat / "test" / "good").mkdir(parents=True)

    def fake_evaluate(model, d, *, eval_size=None, progress=True):
        auc = 0.9 if Path(d).name == "bottle" else 0.8
        return types.SimpleNamespace(metrics=dict(image_auroc=auc, image_auroc_ci95=[auc - 0.1, auc + 0.05],
                                                  n_images=5), timings={},
                                     to_json=lambda: json.dumps({"image_auroc": auc}))

    import npad_edge.evaluation as evaluation

    monkeypatch.setattr(evaluation, "evaluate_model", fake_evaluate)
    rc, out, err = run(["eval", "--model", models, "--data", data, "--json", tmp_path / "all.json"], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[2].startswith("bottle") and lines[3].startswith("cable") and lines[4].startswith("mean")
    assert "95% CI" in lines[0] and "80.0-95.0" in lines[2] and "70.0-85.0" in lines[3]
    assert "85.0" in lines[4] and lines[4].split()[-1] == "-"
    assert json.loads((tmp_path / "all.json").read_text()) == {"bottle": {"image_auroc": 0.9},
                                                               "cable": {"image_auroc": 0.8}}
    (models / "wire").mkdir()
    (models / "wire" / "manifest.json").write_text("{}")
    rc, _, err = run(["eval", "--model", models, "--data", data], capsys)
    assert rc == 1 and "wire" in one_error_line(err)


def test_profile_table_warnings_and_all_unavailable(fake_model, tmp_path, monkeypatch, capsys):
    import npad_edge.profiling as profiling

    stage = {"median_ms": 1.5, "p90_ms": 2.0}
    calls = []

    def fake_profile(model, images, devices, *, json_out=None):
        calls.append(list(devices))
        ok = {d: {"backend": "openvino", "precision": "int8",
                  "stages": {s: stage for s in cli.PROFILE_STAGES},
                  "sync": {"throughput_ips": 10.0}, "async": {"throughput_ips": 20.0}}
              for d in devices if d == "CPU"}
        bad = {d: f"{d}: not available (available: CPU)" for d in devices if d != "CPU"}
        return {"model": str(model), "kind": "exported", "method": "patchcore", "input_size": [128, 128],
                "images": {"count": 2, "size": [64, 64]}, "n": 5, "devices": ok, "unavailable": bad}

    monkeypatch.setattr(profiling, "profile", fake_profile)
    _save(tmp_path / "imgs" / "a.png", 8, 8, 1)
    rc, out, err = run(["profile", "--model", fake_model, "--images", tmp_path / "imgs", "--device", "CPU, GPU"],
                       capsys)
    assert rc == 0 and calls[-1] == ["CPU", "GPU"]
    row = [ln for ln in out.splitlines() if ln.startswith("CPU")][0]
    assert row.split() == ["CPU", "openvino", "int8"] + ["1.5"] * 6 + ["2", "10", "20"]
    assert err.strip() == "npad-edge: warning: GPU: not available (available: CPU)"
    rc, _, err = run(["profile", "--model", fake_model, "--images", tmp_path / "imgs", "--device", "NPU"], capsys)
    assert rc == 1 and "NPU: not available" in one_error_line(err)


def test_existing_output_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "data" / "train" / "good").mkdir(parents=True)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("{}")
    for argv in (["fit", "--data", tmp_path / "data", "--out", tmp_path / "m"],
                 ["export", "--model", tmp_path / "m", "--out", tmp_path / "m"]):
        rc, _, err = run(argv, capsys)
        assert rc == 1 and "--overwrite" in one_error_line(err)


def test_fit_npad_says_which_reading_it_chose(mini_bottle, tmp_path, capsys):
    from npad_edge import artifact

    out = tmp_path / "npad"
    assert cli.main(["fit", "--data", str(mini_bottle), "--out", str(out), "--method", "npad",
                     "--image-size", "128", "--set", "n_centroids=16", "-q"]) == 0
    reading = artifact.read_manifest(out).method.settings["gaussian"]
    assert reading in ("window", "knn")
    assert f"N-pad reading: {reading}" in capsys.readouterr().out
