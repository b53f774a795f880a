"""Bad input gives TypeError/ValueError naming the argument, what was given and what is accepted."""

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd import _validate as V
from kernelmmd.ops import reference, routine, select_backend

X = torch.randn(5, 3)
Y = torch.randn(6, 3)


@pytest.mark.parametrize("f", [km.mmd2_unbiased, km.mmd2_biased, km.mmd2_and_variance, km.mmd2_linear])
def test_common_input_errors(f):
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\) or \(n,\), got \(3, 4, 5\)"):
        f(torch.randn(3, 4, 5), Y)
    with pytest.raises(ValueError, match=r"y has feature shape \(2,\) but x has \(3,\)"):
        f(X, torch.randn(5, 2))
    with pytest.raises(ValueError, match="y must be non-empty"):
        f(X, torch.randn(0, 3))
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        f(torch.tensor([[0.0, float("nan"), 1.0]] * 5), Y)
    with pytest.raises(ValueError, match="y contains NaN or Inf"):
        f(X, torch.tensor([[0.0, float("inf"), 1.0]] * 6))
    with pytest.raises(TypeError, match="x must be a torch.Tensor or a numpy.ndarray.*got list"):
        f([[1.0, 2.0, 3.0]], Y)
    with pytest.raises(TypeError, match="y has dtype torch.float64 but x has torch.float32"):
        f(X, Y.double())
    with pytest.raises(ValueError, match="y is on device meta but x is on cpu"):
        f(X, torch.empty(6, 3, device="meta"))
    with pytest.raises(TypeError, match="x must be a floating-point tensor.*got dtype torch.int64"):
        f(torch.ones(5, 3, dtype=torch.long), Y)
    with pytest.raises(TypeError, match="x must be a real floating-point tensor, got dtype torch.bool"):
        f(torch.ones(5, 3, dtype=torch.bool), Y)
    with pytest.raises(ValueError, match="kernel must be one of .* got 'gauss'"):
        f(X, Y, "gauss")


def test_integer_numpy_arrays_are_accepted_and_object_arrays_rejected():
    a = np.arange(12).reshape(4, 3)
    assert isinstance(km.mmd2_unbiased(a, a + 1), float)
    with pytest.raises(TypeError, match="x must hold real numbers, got a numpy array of dtype object"):
        km.mmd2_unbiased(np.array([[None, 1]] * 3, dtype=object), a)


def test_too_few_points_for_unbiased_estimators():
    with pytest.raises(ValueError, match="x must have at least 2 points for this estimator, got 1"):
        km.mmd2_unbiased(torch.randn(1, 3), Y)
    with pytest.raises(ValueError, match="y must have at least 2 points"):
        km.kernel_means(X, torch.randn(1, 3))


@pytest.mark.parametrize(
    "call",
    [
        lambda: km.mmd2_and_variance(X, Y),
        lambda: km.mmd2_linear(X, Y),
        lambda: km.mmd2_block(X, Y, block_size=2),
    ],
)
def test_equal_sizes_required(call):
    with pytest.raises(ValueError, match="needs n == m, got x with 5 points and y with 6"):
        call()


def test_block_size_errors():
    with pytest.raises(ValueError, match="block_size must be an integer >= 2, got 1"):
        km.mmd2_block(X, Y[:5], block_size=1)
    with pytest.raises(TypeError, match="block_size must be an integer >= 2, got float 2.5"):
        km.mmd2_block(X, Y[:5], block_size=2.5)
    with pytest.raises(ValueError, match="block_size must be <= n = 5, got 6"):
        km.mmd2_block(X, Y[:5], block_size=6)


@pytest.mark.parametrize(
    "kernel,params,exc,msg",
    [
        ("rbf", {"sigma": 0.0}, ValueError, "sigma must be a finite number > 0, got 0.0"),
        ("rbf", {"sigma": -1.0}, ValueError, "sigma must be a finite number > 0, got -1.0"),
        ("rbf", {"sigma": "mode"}, ValueError, r"sigma must be a number > 0 or one of \['median', 'mean'\], got 'mo"),
        ("rbf", {"sigma": [1.0]}, TypeError, "sigma must be a real number, got list"),
        ("rbf", {"sigma": torch.ones(2)}, ValueError, r"sigma must be a scalar, got a tensor of shape \(2,\)"),
        ("rbf", {"sigma": float("inf")}, ValueError, "sigma must be a finite number > 0, got inf"),
        ("rq", {"alpha": -0.5}, ValueError, "alpha must be a finite number > 0, got -0.5"),
        ("mix_rq", {"alphas": [0.2, 0.0]}, ValueError, r"alphas\[1\] must be a finite number > 0, got 0.0"),
        ("mix_rbf", {"sigmas": []}, ValueError, "sigmas must contain at least one value"),
        ("mix_rbf", {"sigmas": 2.0}, TypeError, "sigmas must be a sequence of numbers, got float"),
        ("poly", {"degree": -1}, ValueError, "degree must be an integer >= 0, got -1"),
        ("poly", {"degree": 2.5}, TypeError, "degree must be an integer >= 0, got float 2.5"),
        ("poly", {"gamma": -1.0}, ValueError, "gamma must be a finite number > 0, got -1.0"),
        ("poly", {"coef0": "one"}, TypeError, "coef0 must be a real number, got str"),
        ("rbf", {"bandwidth": 1.0}, TypeError, r"kernel 'rbf' takes parameters \['sigma'\], got \['bandwidth'\]"),
        ("rbf_bounded", {"lower": 5.0, "upper": 4.0}, ValueError, "lower must be <= upper"),
        ("rbf_bounded", {"xx": "both"}, ValueError, "xx must be 'lower', 'upper' or None, got 'both'"),
        ("laplacian", {"sigma": 0}, ValueError, "sigma must be a finite number > 0, got 0.0"),
    ],
)
def test_invalid_kernel_parameters(kernel, params, exc, msg):
    with pytest.raises(exc, match=msg):
        km.mmd2_unbiased(X, Y, kernel, **params)


def test_kernel_object_errors():
    with pytest.raises(TypeError, match=r"kernel parameters \['sigma'\] were given with a kernel object"):
        km.mmd2_unbiased(X, Y, km.RBF(1.0), sigma=2.0)
    with pytest.raises(TypeError, match="kernel must be a kernel name .* got int"):
        km.mmd2_unbiased(X, Y, 3)
    with pytest.raises(TypeError, match="phi must be callable"):
        km.DeepKernel(3)
    with pytest.raises(TypeError, match="top must be a kernel on features, not another DeepKernel"):
        km.DeepKernel(torch.nn.Identity(), km.DeepKernel(torch.nn.Identity()))
    with pytest.raises(ValueError, match="order must be 0, 1, 2 or 3, got 4"):
        km.RBF(1.0).profile(torch.zeros(2), 4)
    with pytest.raises(ValueError, match=r"Poly\(gamma=None\) must be resolved on data first"):
        km.Poly().profile(torch.zeros(2))


def test_backend_errors():
    with pytest.raises(ValueError, match="backend must be one of .* got 'cuda'"):
        km.mmd2_unbiased(X, Y, backend="cuda")
    with pytest.raises(TypeError, match="backend must be a string"):
        select_backend(3, X)
    with pytest.raises(ValueError, match="op must be one of"):
        routine("nope", "torch")


def test_derivative_block_errors():
    z = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="derivative blocks need a twice-differentiable kernel"):
        km.derivative_blocks(z, "laplacian")
    with pytest.raises(TypeError, match="derivative blocks are defined for kernels on R\\^d"):
        km.derivative_blocks(z, km.DeepKernel(torch.nn.Identity()))
    with pytest.raises(ValueError, match=r"u1 must have shape \(4, 2\), got \(4, 3\)"):
        km.a_matvec(z, torch.zeros(4), torch.zeros(4, 3))
    with pytest.raises(TypeError, match="u0 must be a torch.Tensor or numpy.ndarray, got list"):
        km.a_matvec(z, [0.0] * 4, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"index must be in \[0, 12\), got 12"):
        km.a_column(z, 12)
    with pytest.raises(ValueError, match="needs a twice-differentiable radial or dot-product kernel"):
        reference.a_matvec(z, torch.zeros(4), torch.zeros(4, 2), km.Energy())
    with pytest.raises(TypeError, match="kernel_grad_mv needs a radial or dot-product kernel"):
        reference.kernel_grad_mv(z, z, torch.ones(4), km.DeepKernel(torch.nn.Identity()))


def test_deep_kernel_input_shape():
    k = km.DeepKernel(lambda v: v.reshape(v.shape[0], -1))
    assert km.mmd2_unbiased(torch.randn(4, 2, 2), torch.randn(5, 2, 2), k).ndim == 0
    with pytest.raises(ValueError, match="x must have a leading batch dimension"):
        km.mmd2_unbiased(torch.tensor(1.0), torch.randn(5, 2, 2), k)


def test_validate_helpers():
    with pytest.raises(ValueError, match="lam must be a finite number >= 0, got -1.0"):
        V.check_nonnegative("lam", -1.0)
    with pytest.raises(ValueError, match=r"solver must be one of \['a', 'b'\], got 'c'"):
        V.check_choice("solver", "c", {"a", "b"})
    with pytest.raises(TypeError, match="n must be an integer >= 1, got bool True"):
        V.check_int("n", True, minimum=1)


def test_parameters_for_a_kernel_without_parameters():
    with pytest.raises(TypeError, match=r"kernel 'linear' takes parameters \[\], got \['sigma'\]"):
        km.mmd2_unbiased(X, Y, "linear", sigma=1.0)
