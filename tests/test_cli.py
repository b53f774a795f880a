"""`python -m kernelmmd.test A B`: end to end through subprocess (a few runs: each starts Python and torch), and the
error paths in-process through `kernelmmd.test.main` (same code, no interpreter start-up)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd import test as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, pre=""):
    """Run the CLI in a fresh interpreter; ``pre`` is Python executed before it (e.g. to hide a package)."""
    code = f"{pre}\nimport sys, runpy\nsys.argv = ['kernelmmd.test', *{list(args)!r}]\n" \
           "runpy.run_module('kernelmmd.test', run_name='__main__', alter_sys=True)"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def samples(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.8
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    return tmp_path, a, b


def test_cli_npy_text_output(samples):
    tmp, a, b = samples
    proc = subprocess.run(
        [sys.executable, "-m", "kernelmmd.test", str(tmp / "a.npy"), str(tmp / "b.npy"), "--permutations", "199",
         "--seed", "0"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    want = km.mmd_test(a, b, sigma="median", n_permutations=199, seed=0)
    out = proc.stdout
    assert f"statistic (MMD^2_u): {want.statistic:.6g}" in out
    assert f"p-value: {want.p_value:.6g} (199 permutations)" in out
    assert f"kernel: {want.kernel!r}" in out and "RBF(sigma=" in out
    assert "samples: n = 40, m = 30, d = 3" in out and "reject H0" in out


def test_cli_csv_and_pt_json_with_progress(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(25, 2)), rng.normal(size=(20, 2))
    np.savetxt(tmp_path / "a.csv", a, delimiter=",", header="u,v", comments="")  # a header line is skipped
    torch.save(torch.from_numpy(b), tmp_path / "b.pt")
    proc = _run(str(tmp_path / "a.csv"), str(tmp_path / "b.pt"), "--kernel", "laplacian", "--sigma", "1.5",
                "--permutations", "50", "--seed", "3", "--json", "--progress", "--batch-size", "10")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    want = km.mmd_test(a, b, "laplacian", sigma=1.5, n_permutations=50, seed=3)
    assert res["p_value"] == want.p_value and res["statistic"] == pytest.approx(want.statistic, rel=1e-12)
    assert res["kernel"] == "Laplacian(sigma=1.5)" and (res["n"], res["m"], res["d"]) == (25, 20, 2)
    assert "50/50" in proc.stderr  # the tqdm bar reached the end


def test_cli_without_tqdm_has_no_bar(samples):
    tmp, _, _ = samples
    hide = "import sys; sys.modules['tqdm'] = None; sys.modules['tqdm.auto'] = None"
    proc = _run(str(tmp / "a.npy"), str(tmp / "b.npy"), "--permutations", "20", "--progress", "--json", pre=hide)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and json.loads(proc.stdout)["n_permutations"] == 20


def test_cli_error_exit_code_via_subprocess(samples):
    tmp, _, _ = samples
    np.save(tmp / "c.npy", np.zeros((10, 4)))
    proc = _run(str(tmp / "a.npy"), str(tmp / "c.npy"))
    assert proc.returncode == 2
    assert "error: dimension mismatch" in proc.stderr and "d = 3" in proc.stderr and "d = 4" in proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------------------------- in-process paths
def _main(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_main_success_matches_library(samples, capsys):
    tmp, a, b = samples
    code, out, _ = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--kernel", "mix_rq", "--param", "alphas=[0.5, 2]",
                         "--permutations", "30", "--seed", "1", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["p_value"] == km.mmd_test(a, b, "mix_rq", alphas=[0.5, 2], n_permutations=30, seed=1).p_value


@pytest.mark.parametrize("kernel", ["rbf", "laplacian", "l1_laplacian"])
def test_main_bandwidth_kernels_default_to_the_median(samples, capsys, kernel):
    tmp, a, b = samples
    code, out, _ = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--kernel", kernel, "--permutations", "20", "--seed",
                         "2", "--json")
    assert code == 0
    want = km.mmd_test(a, b, kernel, sigma="median", n_permutations=20, seed=2)
    assert json.loads(out)["statistic"] == pytest.approx(want.statistic, rel=1e-12)


def test_main_single_column_csv_and_1d_npy(tmp_path, capsys):
    np.savetxt(tmp_path / "a.csv", np.arange(12.0)[:, None], delimiter=",")
    np.save(tmp_path / "b.npy", np.arange(10.0) + 0.5)
    code, out, _ = _main(capsys, tmp_path / "a.csv", tmp_path / "b.npy", "--permutations", "10", "--json")
    assert code == 0 and json.loads(out)["d"] == 1


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: None, "no such file"),
        (lambda p: (p / "x.json").write_text("[[1, 2]]\n"), "unsupported file type '.json'"),
        (lambda p: (p / "x.npy").write_bytes(b"not a numpy file"), "cannot read .npy file"),
        (lambda p: (p / "x.csv").write_text("a,b\n1,x\n2,y\n"), "line 2, column 2: cannot read 'x' as a number"),
        (lambda p: torch.save({"x": torch.zeros(3, 2)}, p / "x.pt"), "expected a saved torch.Tensor, found dict"),
        (lambda p: np.save(p / "x.npy", np.zeros((4, 2, 2))), r"expected an array of shape \(n, d\) or \(n,\)"),
        (lambda p: np.save(p / "x.npy", np.zeros((1, 3))), "need at least 2 samples"),
        (lambda p: np.save(p / "x.npy", np.array([[1.0, np.nan], [0.0, 1.0]])), "contains NaN or Inf"),
        (lambda p: np.save(p / "x.npy", np.array([["a", "b"], ["c", "d"]])), "expected real numbers"),
    ],
    ids=["missing", "suffix", "corrupt-npy", "text-csv", "pt-dict", "3d", "one-row", "nan", "strings"],
)
def test_main_unreadable_inputs_exit_2(samples, capsys, setup, message):
    tmp, _, _ = samples
    setup(tmp)
    bad = next((tmp / f for f in ("x.json", "x.npy", "x.csv", "x.pt") if (tmp / f).exists()), tmp / "missing.npy")
    code, out, err = _main(capsys, tmp / "a.npy", bad)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and str(bad) in err
    assert re.search(message, err), err


def test_main_kernel_parameter_errors_exit_2(samples, capsys):
    tmp, _, _ = samples
    code, _, err = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--kernel", "linear", "--sigma", "1.0")
    assert code == 2 and err.startswith("error: --kernel linear: ")
    assert "kernel 'linear' takes parameters [], got ['sigma']" in err
    code, _, err = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--kernel", "rq", "--param", "beta=2")
    assert code == 2 and "kernel 'rq' takes parameters ['alpha'], got ['beta']" in err
    code, _, err = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--sigma", "-1")
    assert code == 2 and "sigma must be a finite number > 0" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--permutations", "0"], "--permutations must be >= 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--alpha", "2"], r"--alpha must be in \(0, 1\)"),
        (["--sigma", "wide"], "expected a number or 'median' / 'mean', got 'wide'"),
        (["--param", "alpha"], "expected NAME=VALUE, got 'alpha'"),
        (["--kernel", "rbf_bounded"], "invalid choice: 'rbf_bounded'"),
        (["--batch-size", "0"], "batch_size must be an integer >= 1"),
    ],
)
def test_main_usage_errors_exit_2(samples, capsys, args, message):
    tmp, _, _ = samples
    try:
        code = cli.main([str(tmp / "a.npy"), str(tmp / "b.npy"), *args])
    except SystemExit as e:  # argparse reports usage errors by exiting with status 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err


def test_load_samples_integer_npy(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(6).reshape(3, 2))
    a = cli.load_samples(str(tmp_path / "i.npy"))
    assert a.dtype == np.float64 and a.shape == (3, 2)
    torch.save(torch.arange(6).reshape(3, 2), tmp_path / "i.pt")
    assert cli.load_samples(str(tmp_path / "i.pt")).dtype == np.float64


# ------------------------------------------------------------------------------- --test mmdagg / mmdfuse / optimized
def test_cli_mmdagg_json_via_subprocess_with_progress(samples):
    tmp, a, b = samples
    proc = _run(str(tmp / "a.npy"), str(tmp / "b.npy"), "--test", "mmdagg", "--permutations", "150", "--correction",
                "50", "--bandwidths", "4", "--seed", "2", "--json", "--progress")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    want = km.mmdagg_test(a, b, n_bandwidths=4, n_permutations=150, n_correction=50, seed=2)
    assert res["test"] == "mmdagg" and res["reject"] == want.reject and res["method"] == "permutation"
    assert res["statistics"] == pytest.approx(list(want.statistics), rel=1e-12) and res["u"] == want.u
    assert res["kernels"][0].startswith("laplace(lambda=") and len(res["rejected_by"]) == len(want.rejected_by)
    assert res["statistic"] is None and res["p_value"] is None and res["status"] == "ok"
    assert "200/200" in proc.stderr  # B1 + B2 resamples on the bar


def test_main_mmdagg_text(samples, capsys):
    tmp, a, b = samples
    code, out, _ = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--test", "mmdagg", "--kernels", "gaussian",
                         "--weights", "centred", "--permutations", "100", "--correction", "30", "--seed", "0")
    want = km.mmdagg_test(a, b, kernels=("gaussian",), weights="centred", n_permutations=100, n_correction=30, seed=0)
    assert code == 0
    assert "test: MMDAgg (permutation, 10 kernels: gaussian x10)" in out
    assert f"rejected by {len(want.rejected_by)} of 10 single tests" in out
    assert ("at alpha = 0.05: reject H0" in out) == want.reject and "samples: n = 40, m = 30, d = 3" in out


def test_main_mmdfuse_matches_library(samples, capsys):
    tmp, a, b = samples
    code, out, _ = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--test", "mmdfuse", "--permutations", "99", "--seed",
                         "4", "--backend", "tiled", "--batch-size", "40", "--json")
    want = km.mmdfuse_test(a, b, n_permutations=99, seed=4)
    res = json.loads(out)
    assert code == 0 and res["test"] == "mmdfuse" and res["p_value"] == want.p_value
    assert res["statistic"] == pytest.approx(want.statistic, rel=1e-6) and len(res["kernels"]) == 20
    code, out, _ = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--test", "mmdfuse", "--permutations", "99", "--seed",
                         "4")
    assert code == 0 and "statistic (FUSE): " in out and f"p-value: {want.p_value:.6g} (99 permutations)" in out


def test_main_optimized_matches_library(samples, capsys):
    tmp, a, b = samples
    code, out, _ = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--test", "optimized", "--kernel", "rbf", "--steps",
                         "5", "--lr", "0.1", "--train-fraction", "0.4", "--permutations", "50", "--seed", "1",
                         "--json")
    want = km.optimized_mmd_test(a, b, "rbf", steps=5, lr=0.1, train_fraction=0.4, n_permutations=50, seed=1)
    res = json.loads(out)
    assert code == 0 and res["test"] == "optimized" and res["p_value"] == want.p_value
    assert (res["n"], res["m"]) == (want.n, want.m) == (24, 18) and res["kernel"] == repr(want.kernel)
    code, out, _ = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--test", "optimized", "--steps", "2",
                         "--permutations", "20", "--seed", "1")
    assert code == 0 and out.startswith("test: kernel optimised on a training split") and "kernel: ARD(" in out


def test_main_mmdagg_cannot_decide_exit_3(samples, capsys, monkeypatch):
    from kernelmmd.two_sample import aggregated

    real = aggregated.split_statistics

    def poisoned(*args):
        stat, scale, null = real(*args)
        stat[0] = float("nan")
        return stat, scale, null

    monkeypatch.setattr(aggregated, "split_statistics", poisoned)
    tmp, _, _ = samples
    code, out, err = _main(capsys, tmp / "a.npy", tmp / "b.npy", "--test", "mmdagg", "--permutations", "20",
                           "--correction", "20", "--seed", "0", "--json")
    res = json.loads(out)
    assert code == 3 and res["status"] == "cannot decide" and res["reject"] is False and res["u"] is None
    assert res["statistics"][0] is None and "warning: NumericalWarning: mmdagg_test: cannot decide" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--test", "mmdagg", "--kernel", "rbf"], "--kernel does not apply to --test mmdagg"),
        (["--test", "mmdfuse", "--correction", "5"], "--correction does not apply to --test mmdfuse"),
        (["--test", "permutation", "--kernels", "gaussian"], "--kernels does not apply to --test permutation"),
        (["--test", "optimized", "--sigma", "1"], "--sigma does not apply to --test optimized"),
        (["--test", "optimized", "--batch-size", "8"], "--batch-size does not apply to --test optimized"),
        (["--test", "mmdagg", "--correction", "0"], "--correction must be >= 1, got 0"),
        (["--test", "mmdagg", "--kernels", "gaussian,imq"], "kernels must contain names from"),
        (["--test", "mmdfuse", "--bandwidths", "1"], "n_bandwidths must be"),
        (["--test", "optimized", "--kernel", "poly"], r"--kernel poly: --test optimized takes one of \['rbf'"),
        (["--test", "ks"], "invalid choice: 'ks'"),
    ],
)
def test_main_test_choice_usage_errors_exit_2(samples, capsys, args, message):
    tmp, _, _ = samples
    try:
        code = cli.main([str(tmp / "a.npy"), str(tmp / "b.npy"), "--permutations", "5", *args])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err), err
