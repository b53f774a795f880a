"""gan.experiments.compare: the --quick smoke run trains every loss with two seeds, scores each run, and writes the
table (markdown + JSON) and the sample pictures; finished runs are reused."""

from __future__ import annotations

import json

import pytest

from gan.experiments import compare as C


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
    mp.delenv("KERNELMMD_FEATURES_DIR", raising=False)
    mp.setenv("KERNELMMD_LENET_EPOCHS", "1")
    try:
        assert C.main(["--quick", "--out", str(base / "out"), "--data", "mnist"]) == 0
        yield base / "out"
    finally:
        mp.undo()


def test_quick_writes_the_table_and_pictures(quick, capsys):
    result = json.loads((quick / "compare.json").read_text())
    assert [r["loss"] for r in result["rows"]] == list(C.LOSS_ORDER)
    assert len(result["runs"]) == 2 * len(C.LOSS_ORDER) and result["seeds"] == [0, 1]
    for r in result["rows"]:
        assert r["steps"] == C.QUICK["steps"] and r["seeds"] == [0, 1] and r["kid_init"] > 0
        assert r["kid_std"] >= 0 and r["wall_s"] > 0 and r["fid"] > 0
    md = (quick / "compare.md").read_text()
    assert "| mnist | smmd |" in md and "KID ×10³ (mean ± std over seeds)" in md and "wall s / run" in md
    for loss in C.LOSS_ORDER:
        assert (quick / f"samples-mnist-{loss}.png").is_file()
    assert (quick / "samples-mnist.png").is_file()
    scores = json.loads((quick / "mnist" / "gcmmd" / "seed-1" / "scores.json").read_text())
    assert {"kid", "kid_init", "kid_sd", "kid_init_sd"} <= set(scores)


def test_finished_runs_are_reused(quick, monkeypatch):
    import gan.train

    monkeypatch.setattr(gan.train, "train", lambda *a, **k: pytest.fail("trained again"))
    out = C.run(quick, datas=["mnist"], losses=["smmd", "wgan-gp"], seeds=(0, 1), quick=True, verbose=False)
    assert [r["loss"] for r in out["rows"]] == ["smmd", "wgan-gp"]


def test_available_data(monkeypatch, tmp_path):
    monkeypatch.setattr(C, "FASHION_MNIST_DEFAULT_DIR", tmp_path)
    assert C.available_data() == ["mnist"]
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert C.available_data() == ["mnist", "fashion-mnist"]
