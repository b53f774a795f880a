"""Issue 12, items 3 and 4: bad parameters are rejected at the public boundary with a message naming the argument and
the value given; every estimator and test takes ``backend=``; gcmmd2 / smmd2 share the (x, y, kernel, *, z, lam)
signature, with the old positional order deprecated (FutureWarning) but still working."""

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

import kernelmmd as km

NAN, INF = float("nan"), float("inf")
G = torch.Generator().manual_seed(12)
X = torch.randn(8, 3, generator=G, dtype=torch.float64)
Y = torch.randn(8, 3, generator=G, dtype=torch.float64) + 0.5
Z = torch.randn(6, 3, generator=G, dtype=torch.float64)


# ---------------------------------------------------------------------------------------- kernel parameters
@pytest.mark.parametrize(
    "make,exc,match",
    [
        # NaN / inf / ≤ 0 / wrong type / bool, in every constructor
        (lambda: km.RBF(NAN), ValueError, r"sigma must be a finite number > 0, got nan"),
        (lambda: km.RBF(-INF), ValueError, r"sigma must be a finite number > 0, got -inf"),
        (lambda: km.RBF(True), TypeError, r"sigma must be a real number, got bool True"),
        (lambda: km.RBF("medain"), ValueError, r"sigma must be a number > 0 or one of \[.*\], got 'medain'"),
        (lambda: km.RBF(torch.tensor(NAN)), ValueError, r"sigma must be a finite number > 0, got nan"),
        (lambda: km.RBF(torch.tensor([1.0, 2.0])), ValueError, r"sigma must be a scalar, got a tensor of shape \(2,\)"),
        (lambda: km.RBF(torch.tensor(True)), TypeError, r"sigma must be a real number, got a tensor of dtype torch.bo"),
        (lambda: km.Laplacian(0.0), ValueError, r"sigma must be a finite number > 0, got 0.0"),
        (lambda: km.RQ(INF), ValueError, r"alpha must be a finite number > 0, got inf"),
        (lambda: km.RQ("median"), TypeError, r"alpha must be a real number, got str 'median'"),
        (lambda: km.MixRBF([1.0, NAN]), ValueError, r"sigmas\[1\] must be a finite number > 0, got nan"),
        (lambda: km.MixRBF([1.0, "a"]), TypeError, r"sigmas\[1\] must be a real number, got str 'a'"),
        (lambda: km.MixRBF([1.0, -2.0]), ValueError, r"sigmas\[1\] must be a finite number > 0, got -2.0"),
        (lambda: km.MixRBF([True]), TypeError, r"sigmas\[0\] must be a real number, got bool True"),
        (lambda: km.MixRBF([]), ValueError, r"sigmas must contain at least one value, got an empty sequence"),
        (lambda: km.MixRBF(2.0), TypeError, r"sigmas must be a sequence of numbers, got float 2.0"),
        (lambda: km.MixRBF(torch.ones(2, 2)), ValueError, r"sigmas must be a 1-D sequence .* shape \(2, 2\)"),
        (lambda: km.MixRBF(torch.tensor([1.0, INF])), ValueError, r"sigmas\[1\] must be a finite number > 0, got inf"),
        (lambda: km.MixRQ([0.5, 0.0]), ValueError, r"alphas\[1\] must be a finite number > 0, got 0.0"),
        (lambda: km.MixRQ(np.array([[1.0]])), ValueError, r"alphas must be a 1-D sequence .* shape \(1, 1\)"),
        (lambda: km.RBFBounded(1.0, lower=NAN), ValueError, r"lower must be a finite number > 0, got nan"),
        (lambda: km.RBFBounded(1.0, upper=INF), ValueError, r"upper must be a finite number > 0, got inf"),
        (lambda: km.RBFBounded(1.0, lower=True), TypeError, r"lower must be a real number, got bool True"),
        (lambda: km.RBFBounded(1.0, lower=5.0, upper=4.0), ValueError, r"lower must be <= upper, got lower=5.0"),
        (lambda: km.RBFBounded(1.0, xy="low"), ValueError, r"xy must be 'lower', 'upper' or None, got 'low'"),
        (lambda: km.Poly(coef0=NAN), ValueError, r"coef0 must be a finite real number, got nan"),
        (lambda: km.Poly(coef0=INF), ValueError, r"coef0 must be a finite real number, got inf"),
        (lambda: km.Poly(coef0=torch.tensor(NAN)), ValueError, r"coef0 must be a finite real number, got nan"),
        (lambda: km.Poly(coef0=torch.ones(2)), ValueError, r"coef0 must be a scalar, got a tensor of shape \(2,\)"),
        (lambda: km.Poly(coef0="1"), TypeError, r"coef0 must be a real number, got str '1'"),
        (lambda: km.Poly(gamma=NAN), ValueError, r"gamma must be a finite number > 0, got nan"),
        (lambda: km.Poly(gamma="median"), TypeError, r"gamma must be a number > 0 or None .* got str 'median'"),
        (lambda: km.Poly(degree=2.0), TypeError, r"degree must be an integer >= 0, got float 2.0"),
        (lambda: km.Poly(degree=True), TypeError, r"degree must be an integer >= 0, got bool True"),
        (lambda: km.Poly(degree=-1), ValueError, r"degree must be an integer >= 0, got -1"),
        # by name
        (lambda: km.get_kernel("rq", alpha=NAN), ValueError, r"alpha must be a finite number > 0, got nan"),
        (lambda: km.get_kernel("poly", coef0=INF), ValueError, r"coef0 must be a finite real number, got inf"),
        (lambda: km.get_kernel("mix_rbf", sigmas=[1.0, 0.0]), ValueError, r"sigmas\[1\] must be .* got 0.0"),
        (lambda: km.get_kernel("rbf", sigma=False), TypeError, r"sigma must be a real number, got bool False"),
        (lambda: km.DeepKernel(lambda a: a, "rbf", sigma=NAN), ValueError, r"sigma must be a finite .* got nan"),
        # through an estimator's **params
        (lambda: km.mmd2_unbiased(X, Y, "laplacian", sigma=-1.0), ValueError, r"sigma must be .* got -1.0"),
    ],
)
def test_bad_kernel_parameters(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_kernel_parameters_that_are_fine():
    assert km.MixRBF(np.array([1.0, 2.0])).sigmas == [1.0, 2.0]  # a 1-D numpy array is a sequence of numbers
    assert km.Poly(coef0=-1.0).coef0 == -1.0  # coef0 may be negative or 0
    assert km.RBF(np.float64(2.0)).sigma == 2.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: km.RBF(1.0).profile(torch.ones(2), 4), r"order must be 0, 1, 2 or 3, got 4"),
        (lambda: km.RBF(1.0).profile(torch.ones(2), True), r"order must be 0, 1, 2 or 3, got True"),
        (lambda: km.Poly(gamma=1.0).profile(torch.ones(2), -1), r"order must be an integer >= 0, got -1"),
        (lambda: km.Linear().profile(torch.ones(2), "a"), r"order must be an integer >= 0, got 'a'"),
    ],
)
def test_bad_profile_order(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -------------------------------------------------------------------------------------- unresolved heuristics
@pytest.mark.parametrize(
    "kernel", [km.RBF("median"), km.RBF("mean"), km.Laplacian("median"), km.RBFBounded("median")], ids=repr
)
@pytest.mark.parametrize(
    "use",
    [
        lambda k: k.profile(torch.ones(3), 0),
        lambda k: k.profile(torch.ones(3), 1),
        lambda k: k.profiles(torch.ones(3)),
        lambda k: k.param_grads(torch.ones(3)),
        lambda k: k.matrix(X, Y),
        lambda k: k.pairwise(X, Y),
    ],
    ids=["profile0", "profile1", "profiles", "param_grads", "matrix", "pairwise"],
)
def test_unresolved_heuristic_is_a_clear_error(kernel, use):
    with pytest.raises(ValueError, match=r"\(sigma='(median|mean)'\) must be resolved on data .*kernel\.resolve\(x, y"):
        use(kernel)
    assert float(kernel.resolve(X, Y).matrix(X, X)[0, 0]) == pytest.approx(1.0)  # resolved: fine


def test_unresolved_poly_gamma_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Poly\(gamma=None\) must be resolved on data first"):
        km.Poly().matrix(X, Y)


# ------------------------------------------------------------------------------------------------ bandwidth
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: km.bandwidth(X, rule="medain"), ValueError, r"rule must be one of \['mean', 'median'\], got 'medain'"),
        (lambda: km.bandwidth(X, rule=None), ValueError, r"rule must be one of .* got None"),
        (lambda: km.bandwidth(X, max_points=1), ValueError, r"max_points must be an integer >= 2, got 1"),
        (lambda: km.bandwidth(X, max_points=2.5), TypeError, r"max_points must be an integer >= 2, got float 2.5"),
        (lambda: km.bandwidth(X, max_points=True), TypeError, r"max_points must be an integer >= 2, got bool True"),
        (lambda: km.bandwidth([[1.0]]), TypeError, r"x must be a torch.Tensor or a numpy.ndarray .* got list"),
        (lambda: km.bandwidth(X * NAN), ValueError, r"x contains NaN or Inf"),
        (lambda: km.bandwidth(X, Y[:, :2]), ValueError, r"y has feature shape \(2,\) but x has \(3,\)"),
        (lambda: km.bandwidth(torch.ones(2, 2, 2)), ValueError, r"x must have shape \(n, d\) .* got \(2, 2, 2\)"),
    ],
)
def test_bandwidth_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bandwidth_accepts_numpy_and_1d():
    assert km.bandwidth(X.numpy(), Y.numpy()) == pytest.approx(km.bandwidth(X, Y))
    assert km.bandwidth(torch.tensor([0.0, 2.0])) == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------ DeepKernel φ failures
_BAD_PHI = [
    (lambda a: a[:4], ValueError, r"phi\(x\) must return shape \(n,\) or \(n, s\) with n = 8 .* got \(4, 3\)"),
    (lambda a: a.detach().numpy(), TypeError, r"phi\(x\) must return a torch.Tensor .* got ndarray of shape \(8, 3\)"),
    (lambda a: (a,), TypeError, r"phi\(x\) must return a torch.Tensor .* got tuple"),
    (lambda a: None, TypeError, r"phi\(x\) must return a torch.Tensor .* got NoneType"),
    (lambda a: a.sum(), ValueError, r"phi\(x\) must return shape \(n,\) or \(n, s\) with n = 8 .* got \(\)"),
    (lambda a: (a > 0).long(), TypeError, r"phi\(x\) must return floating-point features, got dtype torch.int64"),
    (lambda a: a * NAN, ValueError, r"phi\(x\) returned NaN or Inf features"),
]
_DEEP_USES = {
    "mmd2_unbiased": lambda k: km.mmd2_unbiased(X, Y, k),
    "mmd2_linear": lambda k: km.mmd2_linear(X, Y, k),
    "kernel_matrix": lambda k: km.kernel_matrix(X, Y, k),
    "witness_grad": lambda k: km.witness_grad(X, Y, X, k),  # φ(t) is formed first: t = X
    "mmd_test": lambda k: km.mmd_test(X, Y, k, n_permutations=3, seed=0),
    "smmd2": lambda k: km.smmd2(X, Y, k),
    "gcmmd2": lambda k: km.gcmmd2(X, Y, k),
    "matrix": lambda k: k.matrix(X, Y),
}


@pytest.mark.parametrize("phi,exc,match", _BAD_PHI)
@pytest.mark.parametrize("use", list(_DEEP_USES), ids=list(_DEEP_USES))
def test_deep_kernel_phi_failures(phi, exc, match, use):
    if use == "witness_grad":
        match = match.replace(r"phi\(x\)", r"phi\(t\)")
    with pytest.raises(exc, match=match):
        _DEEP_USES[use](km.DeepKernel(phi, "rbf", sigma=1.0))


@pytest.mark.parametrize(
    "call,arg",
    [
        (lambda k: km.mmd2_unbiased(X.abs(), -Y.abs() - 1, k), "y"),
        (lambda k: km.witness(X.abs(), Y.abs(), -X[:2].abs() - 1, k), "t"),
        (lambda k: km.smmd2(X.abs(), Y.abs(), k, z=-Z.abs() - 1), "z"),
        (lambda k: km.gcmmd2(X.abs(), -Y.abs() - 1, k), "y"),
        (lambda k: km.sigma2_inv(k, -Z.abs() - 1), "z"),
    ],
)
def test_deep_kernel_nonfinite_features_name_the_input_set(call, arg):
    k = km.DeepKernel(lambda a: a.log(), "rbf", sigma=1.0)  # finite on positive inputs only
    with pytest.raises(ValueError, match=rf"phi\({arg}\) returned NaN or Inf features"):
        call(k)


def test_scaled_losses_name_the_batch_of_a_bad_critic():
    with pytest.raises(ValueError, match=r"phi\(x_fake\) returned NaN or Inf features"):
        km.smmd_loss(lambda a: a.log(), X.abs(), -X.abs() - 1)
    with pytest.raises(TypeError, match=r"phi\(x_real\) must return a torch.Tensor .* got ndarray"):
        km.swgan_loss(lambda a: a.detach().numpy(), X, Y)


# ------------------------------------------------------------------------------------------ scores: kid, fid
@pytest.mark.parametrize(
    "kw,exc,match",
    [
        ({"coef0": NAN}, ValueError, r"coef0 must be a finite real number, got nan"),
        ({"coef0": INF}, ValueError, r"coef0 must be a finite real number, got inf"),
        ({"gamma": NAN}, ValueError, r"gamma must be a finite number > 0, got nan"),
        ({"gamma": 0.0}, ValueError, r"gamma must be a finite number > 0, got 0.0"),
        ({"degree": 3.0}, TypeError, r"degree must be an integer >= 0, got float 3.0"),
        ({"subsets": 0}, ValueError, r"subsets must be an integer >= 1, got 0"),
        ({"subsets": True}, TypeError, r"subsets must be an integer >= 1, got bool True"),
        ({"subset_size": NAN}, TypeError, r"subset_size must be an integer >= 2, got float nan"),
        ({"subset_size": 100}, ValueError, r"subset_size must be <= the number .* got 100"),
        ({"seed": -1}, ValueError, r"seed must be an int >= 0, None or a torch.Generator, got -1"),
        ({"seed": "0"}, TypeError, r"seed must be an int >= 0, None or a torch.Generator, got str '0'"),
        ({"backend": "gpu"}, ValueError, r"backend must be one of .* got 'gpu'"),
    ],
)
def test_kid_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        km.kid(X, Y, **{"subsets": 2, "subset_size": 4, "seed": 0, **kw})


_E = torch.eye(3, dtype=torch.float64)


@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((torch.zeros(3), _E + torch.triu(torch.ones(3, 3), 1), torch.zeros(3), _E), ValueError,
         r"cov1 must be a symmetric covariance matrix, got max \|cov1 - cov1.T\| = 1"),
        ((torch.zeros(3), _E, torch.zeros(3), -_E), ValueError,
         r"cov2 must be positive semi-definite \(a covariance\), got an eigenvalue -1"),
        ((torch.zeros(3), torch.ones(3, 2), torch.zeros(3), _E), ValueError,
         r"cov1 must have shape \(3, 3\) to match mu1, got \(3, 2\)"),
        ((torch.zeros(3), _E, torch.zeros(3), _E * NAN), ValueError, r"cov2 contains NaN or Inf"),
        ((torch.zeros(3, dtype=torch.complex64), _E, torch.zeros(3), _E), TypeError,
         r"mu1 must hold real numbers, got dtype torch.complex64"),
        ((torch.zeros(0), torch.zeros(0, 0), torch.zeros(0), torch.zeros(0, 0)), ValueError,
         r"mu1 must have at least one entry"),
    ],
)
def test_frechet_distance_arguments(args, exc, match):
    with pytest.raises(exc, match=match):
        km.frechet_distance(*args)


def test_frechet_distance_accepts_rounding_asymmetry_and_singular_covariances():
    a = torch.randn(5, 3, generator=G, dtype=torch.float32)
    c = (a.T @ a) / 4  # rank ≤ 3, float32 rounding
    c[0, 1] += 1e-7 * float(c.abs().max())
    assert km.frechet_distance(torch.zeros(3), c, torch.zeros(3), c) == pytest.approx(0.0, abs=1e-4)
    assert km.fid(X, Y) > 0


# --------------------------------------------------------------------------------- other numeric arguments
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: km.kernel_means(X, Y, unbiased="no"), TypeError, r"unbiased must be True or False, got str 'no'"),
        (lambda: km.mmd2_block(X, Y, block_size=2, return_blocks=1), TypeError,
         r"return_blocks must be True or False, got int 1"),
        (lambda: km.mmd2_linear(X, Y, return_variance="yes"), TypeError,
         r"return_variance must be True or False, got str 'yes'"),
        (lambda: km.gcmmd2(X, Y, return_info="yes"), TypeError, r"return_info must be True or False, got str 'yes'"),
        (lambda: km.jacobian_sqnorm(lambda a: a, X, create_graph="no"), TypeError,
         r"create_graph must be True or False, got str 'no'"),
        (lambda: km.smmd2(X, Y, create_graph=None), TypeError, r"create_graph must be True or False, got NoneType"),
        (lambda: km.mmd2_block(X, Y, block_size=NAN), TypeError, r"block_size must be an integer >= 2, got float nan"),
        (lambda: km.mmd_test(X, Y, n_permutations=0), ValueError, r"n_permutations must be an integer >= 1, got 0"),
        (lambda: km.mmd_test(X, Y, batch_size=2.0), TypeError, r"batch_size must be an integer >= 1, got float 2.0"),
        (lambda: km.mmd_test(X, Y, seed=NAN), TypeError, r"seed must be an int >= 0, .* got float nan"),
        (lambda: km.select_kernel(X, Y, [km.RBF(1.0)], min_variance=NAN), ValueError,
         r"min_variance must be a finite number >= 0, got nan"),
        (lambda: km.relative_mmd_test(X, Y, Z, min_variance=-1.0), ValueError,
         r"min_variance must be a finite number >= 0, got -1.0"),
        (lambda: km.selected_mmd_test(X, Y, [km.RBF(1.0)], train_fraction=NAN), ValueError,
         r"train_fraction must be a number in \(0, 1\), got nan"),
        (lambda: km.gcmmd2(X, Y, lam=NAN), ValueError, r"lam must be a finite number > 0, got nan"),
        (lambda: km.gcmmd2(X, Y, lam=True), TypeError, r"lam must be a real number, got bool True"),
        (lambda: km.gcmmd2(X, Y, solver="cg", tol=INF), ValueError, r"tol must be a finite number >= 0, got inf"),
        (lambda: km.smmd2(X, Y, lam=-1.0), ValueError, r"lam must be a finite number >= 0, got -1.0"),
        (lambda: km.sigma2_inv("rbf", X, lam=NAN), ValueError, r"lam must be a finite number >= 0, got nan"),
        (lambda: km.smmd_loss(torch.nn.Linear(3, 1).double(), X, Y, scale=INF), ValueError,
         r"scale must be a finite number >= 0, got inf"),
        (lambda: km.mmd2_unbiased(X, Y, precision="fp16"), ValueError,
         r"precision must be one of \['ieee', 'tf32', 'tf32x3'\], got 'fp16'"),
        (lambda: km.a_column(X, True), TypeError, r"index must be an integer >= 0, got bool True"),
        (lambda: km.a_matvec(X, torch.full((8,), NAN, dtype=torch.float64), X), ValueError,
         r"u0 contains NaN or Inf values"),
        (lambda: km.a_matvec(X, torch.zeros(8, dtype=torch.bool), X), TypeError,
         r"u0 must hold real numbers, got dtype torch.bool"),
    ],
)
def test_other_numeric_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------- backend= everywhere
_W = torch.nn.Linear(3, 1).double()
_BACKEND_CALLS = {
    "kernel_matrix": lambda b: km.kernel_matrix(X, Y, backend=b),
    "mmd2_unbiased": lambda b: km.mmd2_unbiased(X, Y, backend=b),
    "mmd2_biased": lambda b: km.mmd2_biased(X, Y, backend=b),
    "mmd2_block": lambda b: km.mmd2_block(X, Y, block_size=4, backend=b),
    "mmd2_linear": lambda b: km.mmd2_linear(X, Y, backend=b),
    "mmd2_and_variance": lambda b: km.mmd2_and_variance(X, Y, backend=b),
    "kernel_means": lambda b: km.kernel_means(X, Y, backend=b),
    "witness": lambda b: km.witness(X, Y, X[:2], backend=b),
    "witness_grad": lambda b: km.witness_grad(X, Y, X[:2], backend=b),
    "derivative_blocks": lambda b: km.derivative_blocks(Z, backend=b),
    "a_matvec": lambda b: km.a_matvec(Z, torch.ones(6, dtype=torch.float64), Z, backend=b),
    "a_diagonal": lambda b: km.a_diagonal(Z, backend=b),
    "a_column": lambda b: km.a_column(Z, 1, backend=b),
    "mmd_test": lambda b: km.mmd_test(X, Y, n_permutations=3, seed=0, backend=b),
    "linear_mmd_test": lambda b: km.linear_mmd_test(X, Y, backend=b),
    "block_mmd_test": lambda b: km.block_mmd_test(X, Y, block_size=2, backend=b),
    "select_kernel": lambda b: km.select_kernel(X, Y, [km.RBF(1.0)], backend=b),
    "selected_mmd_test": lambda b: km.selected_mmd_test(X, Y, [km.RBF(1.0)], n_permutations=3, seed=0, backend=b),
    "mmd2_variance_unbiased": lambda b: km.mmd2_variance_unbiased(X, Y, backend=b),
    "relative_mmd_test": lambda b: km.relative_mmd_test(X, Y, Z, backend=b),
    "kid": lambda b: km.kid(X, Y, subsets=None, backend=b),
    "sigma2_inv": lambda b: km.sigma2_inv("rbf", Z, backend=b),
    "smmd2": lambda b: km.smmd2(X, Y, backend=b),
    "smmd_loss": lambda b: km.smmd_loss(_W, X, Y, backend=b),
    "gcmmd2": lambda b: km.gcmmd2(X, Y, backend=b),
}


@pytest.mark.parametrize("name", list(_BACKEND_CALLS))
def test_every_kernel_function_accepts_and_validates_backend(name):
    call = _BACKEND_CALLS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", km.NumericalWarning)
        call("torch")
        call(km.Auto())
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'torch', 'tiled', 'keops', 'triton'\].*"
                                         r"got 'gpu'"):
        call("gpu")
    with pytest.raises(TypeError, match=r"backend must be a string, .* got NoneType"):
        call(None)


def test_linear_estimator_is_the_same_on_every_backend_name():
    ref = km.mmd2_linear(X, Y, return_variance=True)
    for b in ("auto", "torch", "tiled"):
        got = km.mmd2_linear(X, Y, return_variance=True, backend=b)
        assert [float(v) for v in got] == [float(v) for v in ref]


# ------------------------------------------------------------------------------- gcmmd2 / smmd2 signatures
def test_gcmmd2_and_smmd2_signatures():
    for f in (km.gcmmd2, km.smmd2):
        ps = inspect.signature(f).parameters
        assert list(ps)[:5] == ["x", "y", "kernel", "z", "lam"], f.__name__
        assert ps["kernel"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert ps["z"].kind is ps["lam"].kind is inspect.Parameter.KEYWORD_ONLY
        assert ps["backend"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    "old_call",
    [
        lambda: km.gcmmd2(X, Y, Z, "rbf", 0.5, "dense", sigma=1.3),  # the whole old positional order
        lambda: km.gcmmd2(X, Y, Z, kernel="rbf", lam=0.5, sigma=1.3),  # z positional, the rest by keyword
        lambda: km.gcmmd2(X, Y, Z.numpy(), "rbf", lam=0.5, sigma=1.3),  # numpy arrays too
    ],
)
def test_gcmmd2_old_positional_order_still_works_with_a_warning(old_call):
    want = km.gcmmd2(X, Y, "rbf", z=Z, lam=0.5, solver="dense", sigma=1.3)
    with pytest.warns(FutureWarning, match=r"gcmmd2\(x, y, z.*deprecated.*old order \(x, y, z, kernel, lam, solver\)"
                                           r".*gcmmd2\(x, y, kernel='rbf', \*, z=None, lam=1.0"):
        got = old_call()
    assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_gcmmd2_new_order_and_old_order_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new order warns about nothing
        a = km.gcmmd2(X, Y, "rbf", z=Z, lam=0.5)
        b = km.gcmmd2(X, Y, kernel=km.RBF(1.0), z=Z, lam=0.5)
    assert float(a) == pytest.approx(float(b))
    with pytest.raises(TypeError, match=r"multiple values for z \(read in the old positional order"):
        km.gcmmd2(X, Y, Z, z=Z)
    with pytest.raises(TypeError, match=r"at most 6 positional arguments in its old order"):
        km.gcmmd2(X, Y, Z, "rbf", 0.5, "dense", "extra")
    with pytest.raises(TypeError):  # new order: z and lam are keyword-only
        km.gcmmd2(X, Y, "rbf", Z)


def test_smmd2_old_positional_order_still_works_with_a_warning():
    want = km.smmd2(X, Y, "rbf", z=Z, lam=0.5, sigma=1.3)
    with pytest.warns(FutureWarning, match=r"smmd2\(x, y, kernel, z, lam\).*deprecated.*pass z=..., lam=... by key"):
        got = km.smmd2(X, Y, "rbf", Z, 0.5, sigma=1.3)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    assert math.isfinite(float(km.smmd2(X, Y, "rbf", lam=0.5)))
