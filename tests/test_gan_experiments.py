"""gan.experiments: the numbers of the paper reproductions (fast settings), not just that files exist.

* DiracGAN: closed forms of SPEC §10, the analytic vector field, MMD stalls from the far start point C while SMMD and
  GCMMD converge to θ = 0;
* Gaussians (Fig. 7): SMMD ∝ MMD for a fixed kernel, SMMD ≤ GCMMD ≤ MMD²/λ, optimised SMMD and GCMMD rank the grid
  alike, optimised MMD is flat for separated distributions while optimised SMMD keeps growing;
* repulsive toy (seed 002 App. A.2): both MMD-rbf and MMD-rep settle near w₁ ≈ 1.55.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gan.experiments import diracgan, gaussians, normal_quantiles, one_thread, repulsive_toy, uniform_quantiles
from tests import reference_np as ref


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Thousands of tiny kernel sums: one thread, as the experiment commands use (restored afterwards)."""
    with one_thread():
        yield


def test_one_thread_restores():
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_quantile_samples():
    x = normal_quantiles(1001, 1.0, 2.0)
    assert float(x[500]) == pytest.approx(1.0, abs=1e-12) and float(x.std()) == pytest.approx(2.0, rel=0.01)
    u = uniform_quantiles(4)
    assert u.tolist() == [-0.75, -0.25, 0.25, 0.75]


# ------------------------------------------------------------------------------------------------ DiracGAN


@pytest.mark.parametrize(("theta", "psi"), [(0.7, 1.3), (-2.0, 0.4), (4.0, 4.0)])
def test_dirac_closed_forms(theta, psi):
    th, ps = torch.tensor(theta, dtype=torch.float64), torch.tensor(psi, dtype=torch.float64)
    mmd2 = 2.0 * (1.0 - math.exp(-(psi**2) * theta**2 / 2))  # SPEC §10
    assert float(diracgan.generator_objective("mmd", th, ps)) == pytest.approx(mmd2, rel=1e-12, abs=1e-300)
    assert float(diracgan.generator_objective("smmd", th, ps)) == pytest.approx(mmd2 / (1.0 + 1.0 + psi**2),
                                                                                rel=1e-12, abs=1e-300)
    gc = float(diracgan.generator_objective("gcmmd", th, ps).detach())
    assert mmd2 / (2.0 + psi**2) - 1e-12 <= gc <= mmd2 + 1e-12  # SMMD ≤ GCMMD ≤ MMD²/λ (λ = 1)
    e = math.exp(-(psi**2) * theta**2 / 2)
    d_theta, d_psi = diracgan.field("mmd", theta, psi)
    assert d_theta == pytest.approx(-2.0 * psi**2 * theta * e, rel=1e-9, abs=1e-300)
    assert d_psi == pytest.approx(2.0 * psi * theta**2 * e, rel=1e-9, abs=1e-300)
    # MMD-GP: ∇η̂(0) = −ψ²θ e (input space), penalty (|∇η̂(0)| − 1)² with λ_GP = 1
    gp = float(diracgan.critic_objective("mmd-gp", th, ps))
    assert gp == pytest.approx(mmd2 - (psi**2 * abs(theta) * e - 1.0) ** 2, rel=1e-10)


def test_dirac_mmd_stalls_far_away_smmd_and_gcmmd_converge():
    c = diracgan.STARTS["C"]
    final = {name: diracgan.trajectory(name, *c, lr=0.5, steps=150)[-1] for name in diracgan.LOSSES}
    for name in ("mmd", "mmd-gp"):  # e^{-128}-small gradients: nothing moves
        assert float(final[name][0]) == c[0] and float(final[name][1]) == pytest.approx(c[1], abs=1e-12)
    for name in ("smmd", "gcmmd"):
        assert abs(float(final[name][0])) < 0.05, name
        assert 0.3 < float(final[name][1]) < 4.0  # ψ first shrank (wider kernel), then settled
    near = diracgan.trajectory("mmd", *diracgan.STARTS["A"], lr=0.2, steps=60)
    assert abs(float(near[-1, 0])) < 0.05  # from A the MMD converges too (Fig. 1 (a))


def test_dirac_command_writes_figures_and_numbers(tmp_path, capsys):
    assert diracgan.main(["--out", str(tmp_path), "--steps", "4", "--grid", "3", "--mu-points", "4"]) == 0
    assert (tmp_path / "diracgan_fields.png").stat().st_size > 0 and (tmp_path / "diracgan_theta.png").is_file()
    res = json.loads((tmp_path / "diracgan.json").read_text())
    assert set(res["results"]) == set(diracgan.LOSSES) and set(res["results"]["mmd"]) == {"A", "B", "C"}
    c = res["results"]["mmd"]["C"]
    assert c["stalled"] and not c["converged"] and c["final_theta"] == 4.0
    assert "mmd" in capsys.readouterr().out


def test_dirac_bad_mu():
    with pytest.raises(ValueError, match=r"mu must be one of \['uniform', 'normal', 'p'\], got 'cauchy'"):
        diracgan.generator_objective("gcmmd", torch.tensor(1.0, dtype=torch.float64),
                                     torch.tensor(1.0, dtype=torch.float64), diracgan.Setup(mu="cauchy"))
    with pytest.raises(ValueError, match="loss must be one of"):
        diracgan.generator_objective("wgan", torch.tensor(1.0), torch.tensor(1.0))


# ------------------------------------------------------------------------------------------------ Gaussians


@pytest.fixture(scope="module")
def gauss(tmp_path_factory):
    out = tmp_path_factory.mktemp("gauss")
    return out, gaussians.run(out, grid=5, points=24, n_psis=7)


def test_gaussians_fixed_kernel_relations(gauss):
    _, res = gauss
    c = res["checks"]
    for p in (0.1, 10.0):
        r = c[f"smmd_over_mmd_psi{p:g}"]
        assert r["min"] == pytest.approx(1.0 / (2.0 + p * p), rel=1e-9)
        assert r["max"] == pytest.approx(1.0 / (2.0 + p * p), rel=1e-9)  # SMMD ∝ MMD for a fixed kernel
        assert c[f"smmd_le_gcmmd_psi{p:g}"] and c[f"gcmmd_le_mmd_over_lam_psi{p:g}"]
        assert c[f"rank_corr_smmd_gcmmd_psi{p:g}"] > 0.9  # MMD ∝ SMMD and GCMMD behave alike


def test_gaussians_optimised_distances(gauss):
    out, res = gauss
    c = res["checks"]
    assert c["rank_corr_opt_smmd_opt_gcmmd"] >= 0.85  # optimising SMMD and GCMMD is similar
    assert c["opt_mmd2_far_min_over_max"] > 0.95  # optimised MMD: essentially constant once separated
    assert c["opt_smmd2_far_min_over_max"] < 0.6  # optimised SMMD keeps growing with |µ|
    assert c["opt_smmd2_increasing_in_mu"] and c["opt_gcmmd2_increasing_in_mu"]
    assert (out / "gaussians.png").stat().st_size > 0 and json.loads((out / "gaussians.json").read_text())


def test_gaussians_distances_match_numpy_reference():
    x = normal_quantiles(10, 0.0, 0.1)[:, None]
    y = normal_quantiles(12, 0.5, 0.3)[:, None]
    d = gaussians.distances(x, y, psi=2.0)
    mmd2 = ref.mmd2_biased(x.numpy(), y.numpy(), "rbf", sigma=0.5)
    assert d["mmd2"] == pytest.approx(mmd2, rel=1e-10)
    assert d["smmd2"] == pytest.approx(mmd2 / (1.0 + 1.0 + 4.0), rel=1e-10)
    a, b = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([30.0, 10.0, 20.0])
    assert gaussians.rank_correlation(a, b) == pytest.approx(1.0)
    assert gaussians.rank_correlation(a, -b) == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------------------ repulsive toy


def test_repulsive_losses_match_numpy_reference():
    x, z = repulsive_toy.samples("normal", 30)
    w1, w2 = torch.tensor(1.3, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    loss_g, loss_d = repulsive_toy.losses("mmd-rep", w1, w2, x, z)
    dx, dy = (0.6 * x**2).numpy()[:, None], (0.6 * (1.3 * z) ** 2).numpy()[:, None]
    assert float(loss_g) == pytest.approx(ref.mmd2_unbiased(dx, dy, "rbf", sigma=0.5), rel=1e-10)
    kxx = (ref.kmat("rbf", dx, dx, sigma=0.5).sum() - 30) / (30 * 29)
    kyy = (ref.kmat("rbf", dy, dy, sigma=0.5).sum() - 30) / (30 * 29)
    assert float(loss_d) == pytest.approx(kxx - kyy, rel=1e-10)  # L_D^{rep,1} = E k(x,x') − E k(y,y')
    _, loss_att = repulsive_toy.losses("mmd-rbf", w1, w2, x, z)
    assert float(loss_att) == pytest.approx(-float(loss_g), rel=1e-12)


@pytest.mark.parametrize(("model", "tol"), [("mmd-rbf", 0.08), ("mmd-rep", 0.03)])
def test_repulsive_settles_near_paper_value(model, tol):
    x, z = repulsive_toy.samples("normal", 100)
    path = repulsive_toy.trajectory(model, 1.0, 1.0, x, z, steps=250)
    w1, w2 = float(path[-1, 0]), float(path[-1, 1])
    assert abs(w1 - 1.55) < tol, (model, w1)  # seed 002 Fig. S1 (c), (d): w1 ≈ 1.55 for both
    assert 0.1 < w2 < 1.0
    assert float((path[-20:] - path[-1]).abs().max()) < 5e-3  # settled
    assert np.hypot(*repulsive_toy.field(model, w1, w2, x, z)) < 1e-3


def test_repulsive_command(tmp_path, capsys):
    assert repulsive_toy.main(["--out", str(tmp_path), "--points", "20", "--steps", "3", "--grid", "3"]) == 0
    res = json.loads((tmp_path / "repulsive_toy.json").read_text())
    assert len(res["runs"]) == 2 * 2 * 3 and res["paper_w1"] == 1.55
    assert (tmp_path / "repulsive_toy.png").stat().st_size > 0
    assert "settles at" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"data must be one of \['normal', 'uniform'\], got 'cauchy'"):
        repulsive_toy.samples("cauchy", 10)
    with pytest.raises(ValueError, match=r"model must be one of \['mmd-rbf', 'mmd-rep'\], got 'mmd'"):
        repulsive_toy.losses("mmd", torch.tensor(1.0), torch.tensor(1.0), *repulsive_toy.samples("normal", 4))
