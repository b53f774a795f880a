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
