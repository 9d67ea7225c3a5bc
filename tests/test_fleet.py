"""The fleet (issue 11): fit-many with Ray, the index, resume, Ray Serve over HTTP, the client.

A local Ray with 2 CPUs is started here (127.0.0.1, no dashboard) and stopped at the end. The
parts are small subsets of the real data in ../shared (5 training images each, 64x64 input),
plus a deliberately broken folder. Skipped, with the reason, only when Ray is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED

from npad_edge.errors import InvalidInputError, ModelFormatError
from npad_edge.fleet import index as fx

BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"
TILE = SHARED / "data" / "magnetic_tile"
SIZE = (64, 64)


def _settings(**kw):
    from npad_edge.fleet import FitSettings

    # One pinned exposure target, so that both parts (same backbone, same HxW) share one IR.
    base = dict(method="patchcore", image_size=SIZE, method_settings={"coreset": 0.5}, holdout=1, export="fp32",
                exposure_target=100.0)
    base.update(kw)
    return FitSettings(**base)


def _copy(src: Path, dst: Path, n: int, start: int = 0) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.iterdir() if p.is_file())[start:start + n]:
        shutil.copy(f, dst / f.name)


# --------------------------------------------------------------------------- no Ray needed


def test_index_roundtrip_and_refusals(tmp_path):
    idx = fx.read_index(tmp_path)  # no index yet: an empty fleet
    assert idx.parts == {}
    idx.parts["a"] = {"status": "complete", "model": "models/a"}
    idx.parts["b"] = {"status": "failed", "error": "x"}
    fx.write_index(idx)
    back = fx.read_index(tmp_path)
    assert set(back.complete()) == {"a"} and set(back.failed()) == {"b"}
    assert back.model_path("a") == tmp_path / "models" / "a"
    with pytest.raises(KeyError):
        back.model_path("b")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    data = json.loads((tmp_path / fx.INDEX_NAME).read_text())
    data["format_version"] = fx.FORMAT_VERSION + 1
    (tmp_path / fx.INDEX_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match="newer"):
        fx.read_index(tmp_path)
    data["format_version"] = 1
    data["parts"]["a"]["model"] = "../../etc"
    (tmp_path / fx.INDEX_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match="inside the fleet"):
        fx.read_index(tmp_path).model_path("a")
    (tmp_path / fx.INDEX_NAME).write_text("{not json")
    with pytest.raises(ModelFormatError, match="JSON"):
        fx.read_index(tmp_path)
    for bad in ("", ".hidden", "a b", "a/b", "x" * 200, 3):
        with pytest.raises(InvalidInputError):
            fx.check_part_id(bad)


def test_hash_files_reuses_known_and_sees_changes(tmp_path):
    (tmp_path / "a.png").write_bytes(b"one")
    (tmp_path / "b.png").write_bytes(b"two")
    (tmp_path / ".hidden").write_bytes(b"ignored")
    d1, files = fx.hash_files(tmp_path)
    assert set(files) == {"a.png", "b.png"}
    # A recorded hash is trusted while size and mtime are unchanged (not re-read)...
    fake = {k: [v[0], v[1], "0" * 64] for k, v in files.items()}
    d_fake, _ = fx.hash_files(tmp_path, fake)
    assert d_fake != d1
    # ...and a changed file is read again.
    (tmp_path / "b.png").write_bytes(b"TWO!")
    d2, _ = fx.hash_files(tmp_path, files)
    assert d2 != d1
    assert fx.train_folder(tmp_path) == tmp_path


def test_request_parsing_errors():
    from npad_edge.fleet.serve import RequestError, decode_body, parse_shape

    assert parse_shape("4,5,3") == (4, 5, 3) and parse_shape("4x5x3") == (4, 5, 3)
    for bad in ("4,5", "a,b,3", "4,5,1", "0,5,3"):
        with pytest.raises(RequestError) as e:
            parse_shape(bad)
        assert e.value.status == 400
    img = decode_body(bytes(range(24)), "2,4,3", 100)
    assert img.shape == (2, 4, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    for body, shape, status in ((b"", None, 400), (b"abc", None, 400), (b"abc", "1,1,3", 200),
                                (b"abcd", "1,1,3", 400), (b"x" * 300, "10,10,3", 413)):
        if status == 200:
            assert decode_body(body, shape, 100).shape == (1, 1, 3)
            continue
        with pytest.raises(RequestError) as e:
            decode_body(body, shape, 50)
        assert e.value.status == status and "\n" not in e.value.message


def test_cli_fleet_errors_are_one_line(tmp_path, capsys):
    from npad_edge.cli import main

    cases = [(["fit-many", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "f")], 1, "not found"),
             (["fit-many", "--data", str(tmp_path), "--out", str(tmp_path / "f"), "--image-size", "10"], 2, "at least 32"),
             (["fit-many", "--data", str(tmp_path), "--out", str(tmp_path / "f"), "--image-size", "6x"], 2, "N or HxW"),
             (["fit-many", "--data", str(tmp_path), "--out", str(tmp_path / "f"), "--address", "auto",
               "--num-cpus", "2"], 2, "--num-cpus"),
             (["serve", "--fleet", str(tmp_path)], 1, "has no fleet.json")]
    for argv, code, text in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert text in err[-1] and "Traceback" not in "\n".join(err), err


def test_runtime_does_not_import_ray():
    code = ("import sys, npad_edge.runtime, npad_edge.fleet, npad_edge.fleet.index, npad_edge.fleet.client; "
            "from npad_edge import Detector; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    src = Path(__file__).resolve().parents[1] / "npad_edge" / "runtime"
    for f in src.rglob("*.py"):
        assert "import ray" not in f.read_text() and "from ray" not in f.read_text(), f


# --------------------------------------------------------------------------- with Ray

# The test's Ray stays on 127.0.0.1 (Ray reads this when it is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the fleet extra (Ray) is not installed: pip install -e '.[fleet]'")


@pytest.fixture(scope="module")
def ray_local():
    if not BOTTLE.is_dir() or not TILE.is_dir():
        pytest.skip(f"real data not found under {SHARED / 'data'}")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning",
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fleet_data")
    _copy(BOTTLE / "train" / "good", root / "bottle" / "train" / "good", 5)
    _copy(TILE / "train" / "good", root / "magnetic_tile" / "train" / "good", 5)
    broken = root / "broken" / "train" / "good"
    broken.mkdir(parents=True)
    (broken / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, then junk
    return root


@pytest.fixture(scope="module")
def fleet(ray_local, data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    events = []
    res = fit_many_call(data_root, out, events)
    return {"root": out, "result": res, "events": events}


def fit_many_call(data_root, out, events=None, **kw):
    from npad_edge.fleet import fit_many

    return fit_many(data_root, out, kw.pop("settings", None) or _settings(), cpus_per_fit=1,
                    progress=None if events is None else events.append, **kw)


def test_fit_many_index_and_failed_part(fleet):
    res, root = fleet["result"], fleet["root"]
    assert sorted(res.fitted) == ["bottle", "magnetic_tile"] and res.skipped == []
    assert list(res.failed) == ["broken"] and "000.png" in res.failed["broken"]
    idx = fx.read_index(root)
    assert idx.to_dict()["format"] == fx.FORMAT and idx.settings["image_size"] == list(SIZE)
    assert set(idx.parts) == {"bottle", "magnetic_tile", "broken"}
    b = idx.parts["broken"]
    assert b["status"] == "failed" and "\n" not in b["error"] and b["model"] is None
    from npad_edge import artifact

    for part in ("bottle", "magnetic_tile"):
        e = idx.parts[part]
        assert e["status"] == "complete" and e["kind"] == "exported" and e["precision"] == "fp32"
        path = idx.model_path(part)
        assert artifact.sha256_file(path / "manifest.json") == e["manifest_sha256"]
        m = artifact.read_manifest(path)
        assert m.extra["dataset"] == part and m.extra["n_train_images"] == 5
        assert e["metrics"]["threshold"] == m.threshold.value and e["metrics"]["input_size"] == list(SIZE)
        assert len(e["data_files"]) == 5 and e["fit_seconds"] > 0
    # One backbone group: byte-identical IR files, different method state.
    a, t = idx.model_path("bottle"), idx.model_path("magnetic_tile")
    from npad_edge.artifact import read_manifest
    assert read_manifest(a).preprocess.exposure["target"] == read_manifest(t).preprocess.exposure["target"] == 100.0
    assert idx.parts["bottle"]["backbone_group"] == idx.parts["magnetic_tile"]["backbone_group"]
    for name in ("backbone.xml", "backbone.bin"):
        assert (a / name).read_bytes() == (t / name).read_bytes()
    assert (a / "arrays" / "bank.npy").read_bytes() != (t / "arrays" / "bank.npy").read_bytes()
    assert not (root / fx.WORK_DIR).exists()
    # Progress: one event per part, counts consistent, the last with nothing remaining.
    ev = fleet["events"]
    assert len(ev) == 3 and ev[-1]["remaining"] == 0 and ev[-1]["done"] == 2 and ev[-1]["failed"] == 1
    assert all(e["total"] == 3 for e in ev)


def test_fit_many_resume_skips_unchanged_and_refits_changed(fleet, data_root, tmp_path):
    root = fleet["root"]
    before = fx.read_index(root)
    res = fit_many_call(data_root, root)
    assert sorted(res.skipped) == ["bottle", "magnetic_tile"] and res.fitted == [] and list(res.failed) == ["broken"]
    after = fx.read_index(root)
    for part in ("bottle", "magnetic_tile"):
        assert after.parts[part]["manifest_sha256"] == before.parts[part]["manifest_sha256"]
    # A changed training image refits that part only; its IR still comes from its group.
    shutil.copytree(data_root, tmp_path / "data")
    d = tmp_path / "data"
    shutil.rmtree(d / "broken")
    img = sorted((d / "magnetic_tile" / "train" / "good").iterdir())[0]
    img.write_bytes(sorted((TILE / "train" / "good").iterdir())[7].read_bytes())  # another real image
    res2 = fit_many_call(d, root)
    assert res2.fitted == ["magnetic_tile"] and res2.skipped == ["bottle"] and res2.failed == {}
    idx = fx.read_index(root)
    assert idx.parts["magnetic_tile"]["manifest_sha256"] != before.parts["magnetic_tile"]["manifest_sha256"]
    assert (idx.model_path("magnetic_tile") / "backbone.bin").read_bytes() == \
        (idx.model_path("bottle") / "backbone.bin").read_bytes()
    assert "broken" in idx.parts  # parts not in this data root stay listed


@pytest.mark.slow  # about a minute on 2 busy cores: a second driver process, two more fits
def test_fit_many_resume_after_killed_run(ray_local, tmp_path):
    """A fit-many CLI process killed (SIGKILL) after its first part: the re-run keeps that part and
    fits only the rest. cpus-per-fit 2 on a 2-CPU Ray runs the parts one after the other."""
    data = tmp_path / "data"
    _copy(TILE / "train" / "good", data / "tile_a", 4)
    _copy(TILE / "train" / "good", data / "tile_b", 4, start=4)
    out = tmp_path / "fleet"
    cmd = [sys.executable, "-m", "npad_edge.cli", "fit-many", "--data", str(data), "--out", str(out),
           "--address", ray_local, "--cpus-per-fit", "2", "--image-size", "64x64", "--coreset", "0.5", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    first = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = fx.read_index(out).complete()
            except ModelFormatError:
                done = {}
            if done:
                first = next(iter(done))
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert first is not None, f"fit-many finished no part: {err.decode()[-800:]}"
    idx = fx.read_index(out)
    other = ({"tile_a", "tile_b"} - {first}).pop()
    if other in idx.complete():
        pytest.skip("both parts completed before the kill (machine too fast for this check)")
    sha = idx.parts[first]["manifest_sha256"]
    from npad_edge.fleet import FitSettings, fit_many

    res = fit_many(data, out, FitSettings(method="patchcore", image_size=SIZE, method_settings={"coreset": 0.5}),
                   cpus_per_fit=2)
    assert res.skipped == [first] and res.fitted == [other] and res.failed == {}
    idx = fx.read_index(out)
    assert idx.parts[first]["manifest_sha256"] == sha and set(idx.complete()) == {"tile_a", "tile_b"}


# --------------------------------------------------------------------------- serving


def test_part_models_share_one_compiled_backbone(fleet):
    from npad_edge import Detector
    from npad_edge.fleet import PartModels

    img = np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8))
    pm = PartModels(fleet["root"], max_resident=1, threads=1)
    s1 = pm.predict("bottle", img).score
    s2 = pm.predict("magnetic_tile", img).score
    assert len(pm.cache) == 1 and pm.cache.hits == 1  # the second part reused the compiled model
    assert pm.resident() == ["magnetic_tile"] and pm.evictions == 1
    for part, s in (("bottle", s1), ("magnetic_tile", s2)):
        assert Detector.load(fx.read_index(fleet["root"]).model_path(part), threads=1)(img).score == s
    with pytest.raises(KeyError):
        pm.get("broken")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(fleet):
    from npad_edge.fleet import Client, ServeSettings, serve_fleet

    port = _free_port()
    serve_fleet(fleet["root"], ServeSettings(max_resident=1, max_body_bytes=3 << 20, max_pixels=4_000_000,
                                             threads=1), port=port)
    with Client(f"http://127.0.0.1:{port}", timeout=120) as c:
        yield c


def test_serve_predictions_equal_local_detector(server, fleet):
    from npad_edge import Detector
    from npad_edge.data import read_image

    idx = fx.read_index(fleet["root"])
    assert [p["part"] for p in server.parts()] == ["bottle", "magnetic_tile"]
    assert server.health()["status"] == "ok"
    cases = [("bottle", BOTTLE / "test" / "broken_large" / "000.png"), ("bottle", BOTTLE / "test" / "good" / "000.png"),
             ("magnetic_tile", sorted((TILE / "test" / "blowhole").glob("*.jpg"))[0])]
    for part, path in cases:
        det = Detector.load(idx.model_path(part), threads=1)
        local = det(path)
        by_file = server.predict(part, path, maps=True)  # PNG / JPEG body
        assert by_file["score"] == local.score and by_file["is_anomalous"] == local.is_anomalous
        assert by_file["threshold"] == det.threshold
        assert by_file["decision"] == ("anomalous" if local.is_anomalous else "good")
        assert np.array_equal(by_file["mask"], local.mask)
        assert by_file["heatmap"].shape == (*local.anomaly_map.shape, 3)
        raw = server.predict(part, read_image(path))  # raw uint8 + shape
        assert raw["score"] == local.score and set(raw["timings"]) >= {"backbone", "search", "total"}


def test_serve_bad_requests_are_4xx_one_line(server):
    png = (BOTTLE / "test" / "good" / "000.png").read_bytes()
    cases = [
        ("POST", "/v1/parts/nope/predict", png, 404),
        ("POST", "/v1/parts/broken/predict", png, 404),  # a failed part is not servable
        ("POST", "/v1/parts/bottle/predict", b"", 400),
        ("POST", "/v1/parts/bottle/predict", b"this is not an image", 400),
        ("POST", "/v1/parts/bottle/predict", png[:200], 400),  # truncated PNG
        ("POST", "/v1/parts/bottle/predict?shape=2,2,3", b"abc", 400),
        ("POST", "/v1/parts/bottle/predict?shape=2,2", b"a" * 12, 400),
        ("POST", "/v1/parts/bottle/predict?shape=a,b,3", b"a" * 12, 400),
        ("POST", "/v1/parts/bottle/predict?shape=3000,3000,3", b"a" * 12, 413),
        ("POST", "/v1/parts/bottle/predict?maps=yes", png, 400),
        ("POST", "/v1/parts/bottle/predict?colour=1", png, 400),
        ("POST", "/v1/parts/bottle/predict", b"\0" * (4 << 20), 413),
        ("GET", "/v1/parts/bottle/predict", None, 405),
        ("POST", "/v1/parts", b"", 405),
        ("GET", "/v2/anything", None, 404),
    ]
    for method, path, body, status in cases:
        got, data = server.request(method, path, body, {"Content-Type": "application/octet-stream"})
        assert got == status, (path, got, data)
        assert set(data) == {"error"} and data["error"] and "\n" not in data["error"], (path, data)
    assert server.health()["status"] == "ok"  # still serving


def test_serve_evicts_beyond_resident_bound(server):
    img = np.zeros((64, 64, 3), np.uint8)
    server.predict("bottle", img)
    server.predict("magnetic_tile", img)
    st = server.health()["replica"]
    assert st["resident"] == ["magnetic_tile"]  # max_resident=1: bottle was evicted
    loads = st["loads"]
    server.predict("bottle", img)
    st = server.health()["replica"]
    assert st["resident"] == ["bottle"] and st["loads"] == loads + 1
    assert st["compiled_backbones"] == 1  # reloading a part of the same group compiles nothing new
