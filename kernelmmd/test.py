r"""Command line two-sample test: ``python -m kernelmmd.test A B [options]``.

A and B hold arrays of shape (n, d) (or (n,) for one-dimensional data). Runs a two-sample test and prints its
statistic, p-value and kernel(s) (``--json`` for one JSON object). ``--test`` chooses it:

* ``permutation`` (default) — :func:`kernelmmd.mmd_test` with ``--kernel`` / ``--sigma`` / ``--param``;
* ``mmdagg`` — :func:`kernelmmd.mmdagg_test` over ``--kernels`` (default ``laplace,gaussian``), ``--bandwidths`` each,
  ``--weights``, ``--permutations`` + ``--correction`` resamples (default 2000 + 2000); the JSON object has the
  per-kernel ``statistics``, ``p_values``, ``thresholds`` and ``rejected_by`` (``statistic`` / ``p_value`` null);
* ``mmdfuse`` — :func:`kernelmmd.mmdfuse_test` (``--kernels``, ``--bandwidths``; 2000 permutations by default);
* ``optimized`` — :func:`kernelmmd.optimized_mmd_test`: ``--kernel`` (default ``ard``) optimised on a training split
  (``--train-fraction``, ``--steps``, ``--lr``), permutation test on the held-out points (``n``, ``m`` their sizes).

An option that the chosen test does not take is a usage error (exit code 2).

Input files (by suffix):

* ``.npy`` — a numeric numpy array (no pickles: object arrays are refused; bytes after the array — several arrays
  saved into one file — are refused).
* ``.pt`` — one tensor saved with ``torch.save``, loaded with ``weights_only=True`` (a file that needs unsafe
  unpickling, or holds a dict / list / anything but one tensor, is refused).
* ``.csv``, ``.tsv``, ``.txt`` — delimited text as spreadsheets and databases export it: UTF-8 (with or without a
  BOM), UTF-16 with a BOM, or else Windows-1252 (with a note); LF, CRLF or CR line ends; the delimiter is detected —
  ``;`` (Excel in European locales), tab, ``,`` in that order of preference when it separates every line, else runs of
  whitespace (``.tsv``: always tab); decimal commas (``1,5``) are read as decimal points wherever a field holds one
  (in a comma-separated file only quoted fields can); quoted fields, whitespace around fields, scientific notation,
  ``#`` comment lines and blank lines at the end are fine; a trailing delimiter at every line end is ignored.
  ``−`` (U+2212) is a minus sign.
  The first line is a header when any of its fields is text, or it is pandas's ``,0,1,…`` (``DataFrame(array)
  .to_csv()``), or ``0,1,…`` above float data (with a note). A pandas ``to_csv`` index (empty or ``Unnamed: 0``
  first header field above a first column 0, 1, …, n−1) and R row names (``write.csv``: ``""`` header field;
  ``write.table``: one header field fewer; above 1, 2, …, n) are dropped, with a note on stderr.
  Refused, naming the line (and column): ragged rows, missing values (empty fields, ``\N``, ``NULL``, ``NA``:
  database NULLs), non-numbers (thousands separators included), NaN/Inf, blank lines between rows.
* FIFOs, sockets and devices are refused (a pipe would block): save the samples to a file.

Values: integer and bool data are read as float64 (bool as 0/1); float16 / bfloat16 / float8 as float32 (quantized
tensors dequantized); float32 and float64 as they are (A and B of different float types: both float64). Complex,
string, structured and object arrays are refused.

Output: text, or with ``--json`` exactly one JSON object on stdout (strict JSON: NaN / Inf become ``null``).
Everything else — warnings (one ``warning: ...`` line each), notes, the progress bar, and anything a backend prints
to stdout while computing (KeOps's compiler messages: stdout is redirected to stderr at the file-descriptor level
while the test runs) — goes to stderr.

Exit codes:

* 0 — the test was computed (whatever the p-value; read ``reject`` or the verdict line).
* 1 — unexpected internal error (a bug, or e.g. running out of memory; Python traceback on stderr).
* 2 — bad usage, or an input file that is missing or cannot be read (one line ``error: FILE: ...`` on stderr).
* 3 — the test could not be computed: the statistic or the p-value is not finite (e.g. kernel values overflow
  at the data's scale). The verdict is "cannot decide", never reject; ``--json`` still prints its object, with
  ``"statistic"`` / ``"p_value"`` ``null``, ``"reject": false`` and ``"status": "cannot decide"``.

Example::

    python -m kernelmmd.test real.npy fake.npy --kernel rbf --sigma median --permutations 1000 --seed 0
    python -m kernelmmd.test real.npy fake.npy --test mmdagg --seed 0 --json
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import pathlib
import re
import stat
import sys
import warnings

import numpy as np

__all__ = ["main", "load_samples", "InputError", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_UNDECIDED"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNDECIDED = 0, 1, 2, 3
_TEXT = (".csv", ".tsv", ".txt")
_SUFFIXES = (".npy", ".pt", *_TEXT)
#: fields a database or spreadsheet writes for a missing value (psql CSV: empty; psql text / MySQL: \N)
_NULLS = {"", "\\n", "null", "na", "n/a", "#n/a", "none", "nil", "-"}
#: first header fields of a pandas ``to_csv`` index column (empty; ``Unnamed: 0`` after a read/write round trip)
_INDEX_NAMES = {"", "unnamed: 0"}

_EPILOG = """\
input files: .npy (numeric, no pickles), .pt (one tensor, weights_only), .csv / .tsv / .txt (delimiter ; tab , or
whitespace detected; decimal commas; optional header; pandas index dropped; BOM, CRLF, quotes fine; missing values
refused).

exit codes:
  0  the test was computed (whatever the p-value)
  1  unexpected internal error (traceback on stderr)
  2  bad usage or unreadable input (one line "error: ..." on stderr)
  3  the test could not be computed: statistic or p-value not finite ("cannot decide"; JSON null values)

stdout holds only the result (with --json exactly one strict JSON object); warnings and notes go to stderr."""


class InputError(Exception):
    """A user-facing problem with the input files (reported on stderr with exit code 2)."""


def _one_line(msg: str, limit: int = 300) -> str:
    """First non-empty line of a (library) message, shortened: stderr gets one line per problem."""
    line = next((ln.strip() for ln in str(msg).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def load_samples(path: str, note=_note) -> np.ndarray:
    """Read an (n, d) float array from a .npy, .pt, .csv, .tsv or .txt file (see the module docstring).

    Raises :class:`InputError` with a one-line message starting with the path; ``note(msg)`` receives remarks
    such as a dropped pandas index column (default: printed to stderr as ``note: ...``).
    """
    p = pathlib.Path(path)
    suffix = p.suffix.lower()
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    if suffix not in _SUFFIXES:
        raise InputError(f"{path}: unsupported file type {p.suffix or '(none)'!r}; use one of {list(_SUFFIXES)}")
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise InputError(f"{path}: cannot open ({_one_line(e.strerror or e)})") from None
    if not stat.S_ISREG(mode):  # a FIFO would block the open forever, a device could be endless
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise InputError(f"{path}: is {kind}, not a regular file; save the samples to a file first")
    try:
        with open(p, "rb") as f:
            empty = not f.read(1)
    except PermissionError:
        raise InputError(f"{path}: permission denied (cannot open the file for reading)") from None
    except OSError as e:
        raise InputError(f"{path}: cannot open ({_one_line(e.strerror or e)})") from None
    if empty:
        raise InputError(f"{path}: empty file")
    try:
        if suffix == ".npy":
            a = _load_npy(p)
        elif suffix == ".pt":
            a = _load_pt(p)
        else:
            a = _load_text(p, suffix, lambda msg: note(f"{path}: {msg}"))
        return _as_samples(a)
    except InputError as e:
        raise InputError(f"{path}: {_one_line(e)}") from None
    except Exception as e:  # any parse failure of a user file becomes one clear line, not a traceback
        raise InputError(f"{path}: cannot read {suffix} file ({type(e).__name__}: {_one_line(e)})") from None


def _load_npy(p: pathlib.Path) -> np.ndarray:
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise InputError("cannot read .npy file: not in numpy's .npy format (no \\x93NUMPY header)")
    try:
        a = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise InputError("holds Python objects (an object array or a pickle); refusing to unpickle: save a "
                             "numeric array with numpy.save") from None
        raise
    if not isinstance(a, np.ndarray):  # an .npz archive under a .npy name
        raise InputError(f"expected one numpy array, found {type(a).__name__} (an .npz archive?)")
    with open(p, "rb") as f:  # np.load ignores bytes after the array: several arrays saved into one file?
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        read_header(f)
        extra = p.stat().st_size - f.tell() - a.nbytes
    if extra > 0:
        raise InputError(f"{extra} bytes after the array (several arrays saved into one file, or a damaged "
                         "file?); save one array per .npy file")
    return a


def _load_pt(p: pathlib.Path) -> np.ndarray:
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # torch's own remarks while loading (sparse checks, pickle protocol)
            warnings.simplefilter("ignore")
            t = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(e), re.IGNORECASE)
        if needs is None:  # not a pickle of allowed objects at all: a corrupt or foreign file
            why = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            why = why.group(1) if why else _one_line(e, 120)
            raise InputError(f"cannot read .pt file: not a valid torch.save file ({why.strip()})") from None
        needs = f" (it needs {needs.group(1)})"
        raise InputError(f"cannot be loaded safely: it holds objects other than tensors{needs}, which would need "
                         "unsafe unpickling (torch.load(weights_only=True) refused it); re-save it with "
                         "torch.save(tensor)") from None
    except (RuntimeError, KeyError, UnicodeDecodeError, EOFError, ValueError, AttributeError) as e:
        raise InputError(f"cannot read .pt file: not a valid torch.save file, or a damaged one "
                         f"({type(e).__name__}: {_one_line(e, 120)})") from None
    if not isinstance(t, torch.Tensor):
        raise InputError(f"expected a saved torch.Tensor, found {type(t).__name__}")
    if t.device.type == "meta":
        raise InputError("the tensor is on the 'meta' device: it has a shape but no values; save a CPU tensor")
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_complex():
        raise InputError(f"complex values are not supported (dtype {t.dtype})")
    if t.is_floating_point() and t.element_size() < 4:
        t = t.float()  # float16, bfloat16, float8 (numpy has no bfloat16 / float8): computed in float32
    elif not t.is_floating_point():
        t = t.double()  # integers and bool (0/1)
    return t.numpy()


def _as_samples(a: np.ndarray) -> np.ndarray:
    """Check dtype and shape; convert to float32 / float64 (messages without the path: the caller adds it)."""
    kind = a.dtype.kind
    if a.dtype.names is not None:
        raise InputError(f"structured array with fields {list(a.dtype.names)}: save a plain (n, d) float array")
    if kind == "c":
        raise InputError(f"complex values are not supported (dtype {a.dtype})")
    if kind not in "biuf":
        raise InputError(f"expected real numbers, found dtype {a.dtype}")
    if a.ndim not in (1, 2):
        raise InputError(f"expected an array of shape (n, d) or (n,), found shape {a.shape}")
    if a.ndim == 2 and a.shape[1] == 0:
        raise InputError(f"no features: shape {a.shape}")
    if a.shape[0] < 2:
        raise InputError(f"need at least 2 samples (rows), found {a.shape[0]}")
    if kind != "f" or a.dtype.itemsize > 8:
        a = a.astype(np.float64)  # integers, bool (0/1), long double
    elif a.dtype.itemsize < 4:
        a = a.astype(np.float32)  # float16
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0]
        at = f"row {where[0] + 1}" + (f", column {where[1] + 1}" if a.ndim == 2 else "")
        raise InputError(f"contains NaN or Inf values (first at {at}: {float(a[tuple(where)])!r})")
    return a


# -------------------------------------------------------------------------------------------- delimited text
def _decode(raw: bytes, note) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")  # Excel's "Unicode text" export
    if b"\x00" in raw:
        raise InputError("not a text file (contains NUL bytes; UTF-16 without a byte order mark, or binary?)")
    try:
        return raw.decode("utf-8-sig")  # strips a UTF-8 BOM
    except UnicodeDecodeError as e:
        try:  # Excel / Windows tools in Western locales: Windows-1252 (accented header names)
            text = raw.decode("cp1252")
        except UnicodeDecodeError:
            raise InputError(f"not UTF-8 text (undecodable byte at offset {e.start}); a binary file?") from None
        note(f"not UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}): read as Windows-1252 text")
        return text


_QUOTED = re.compile(r'"[^"]*"')


def _delimiter(lines: list[str], suffix: str) -> str | None:
    """';', tab or ',' (outside quotes) in at least half of the lines, in that order of preference; None: whitespace.

    Half, not all: a ragged row without the delimiter must still be read with it (and refused as ragged).
    """
    if suffix == ".tsv":
        return "\t"
    sample = [_QUOTED.sub("", ln) for ln in lines[:200]]
    for d in (";", "\t", ","):
        if 2 * sum(d in ln for ln in sample) >= len(sample):
            return d
    return None


def _fields(lines: list[str], delim: str | None) -> list[list[str]]:
    if delim is None:
        rows = [ln.split() for ln in lines]
        return [[f[1:-1].strip() if len(f) >= 2 and f[0] == f[-1] == '"' else f for f in r] for r in rows]
    return [[f.strip() for f in r] for r in csv.reader(lines, delimiter=delim, quotechar='"', skipinitialspace=True)]


_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]*,[0-9]+(?:[eE][+-]?[0-9]+)?")


def _number(field: str) -> float | None:
    if "," in field:  # a decimal comma ("1,5"; a comma inside a field is never the delimiter): nothing else
        if not _DECIMAL_COMMA.fullmatch(field):
            return None
        field = field.replace(",", ".")
    try:
        return float(field)
    except ValueError:
        return None


def _load_text(p: pathlib.Path, suffix: str, note) -> np.ndarray:
    text = _decode(p.read_bytes(), note).replace("\u2212", "-")  # U+2212 MINUS SIGN (typeset / locale exports)
    numbered = [(i + 1, ln) for i, ln in enumerate(text.splitlines())]  # LF, CRLF, CR
    numbered = [(i, ln) for i, ln in numbered if not ln.lstrip().startswith("#")]  # comments (numpy.savetxt header)
    while numbered and not numbered[-1][1].strip():
        numbered.pop()  # blank lines at the end
    while numbered and not numbered[0][1].strip():
        numbered.pop(0)  # and before the first line
    if not numbered:
        raise InputError("no data (only blank or comment lines)")
    blank = next((i for i, ln in numbered if not ln.strip()), None)
    if blank is not None:
        raise InputError(f"line {blank} is empty (a missing value?); blank lines are allowed only at the end")
    lineno = [i for i, _ in numbered]
    delim = _delimiter([ln for _, ln in numbered], suffix)
    rows = _fields([ln for _, ln in numbered], delim)
    if len(rows) != len(lineno):  # a quoted field spanning lines
        raise InputError("a quoted field spans several lines; not a table of numbers")
    header = None
    columns = [str(j) for j in range(len(rows[0]))]
    if any(_number(f) is None and f.lower() not in _NULLS for f in rows[0]):
        header, rows, lineno = rows[0], rows[1:], lineno[1:]
    elif rows[0] == [""] + columns[:-1]:  # pandas DataFrame(array).to_csv(): index, then column names 0..d-1
        header, rows, lineno = rows[0], rows[1:], lineno[1:]
    elif len(rows[0]) > 1 and rows[0] == columns and any(c in f for r in rows[1:3] for f in r for c in ".eE"):
        note(f"line {lineno[0]} ({','.join(columns)}) read as a header: pandas column names above float data")
        header, rows, lineno = rows[0], rows[1:], lineno[1:]
    if not rows:
        raise InputError("no data rows (only a header line)")
    if delim is not None and len(rows[0]) > 1 and all(r and r[-1] == "" for r in rows):
        rows = [r[:-1] for r in rows]  # a delimiter at the end of every line
        if header is not None and len(header) == len(rows[0]) + 1 and header[-1] == "":
            header = header[:-1]
    ncol = len(rows[0])
    for r, i in zip(rows, lineno):
        if len(r) != ncol:
            raise InputError(f"line {i} has {len(r)} fields, but line {lineno[0]} (the first data row) has {ncol}; "
                             "every row needs the same number of columns")
    row_names = header is not None and len(header) == ncol - 1 > 0  # R write.table: no header field above them
    if header is not None and len(header) != ncol and not row_names:
        raise InputError(f"the header (line {numbered[0][0]}) has "
                         f"{len(header)} fields, but the data rows have {ncol}")
    a = _to_array(rows, lineno)
    n = a.shape[0]
    if header is not None and ncol > 1 and (row_names or header[0].strip().lower() in _INDEX_NAMES):
        if np.array_equal(a[:, 0], np.arange(n)):
            note(f"dropped the first column (a pandas index: unnamed header, values 0..{n - 1})")
            a = a[:, 1:]
        elif np.array_equal(a[:, 0], np.arange(1, n + 1)):
            note(f"dropped the first column (R row names: unnamed header, values 1..{n})")
            a = a[:, 1:]
        elif row_names:
            raise InputError(f"the header (line {numbered[0][0]}) has {len(header)} fields, but the data rows have "
                             f"{ncol} and the first column is not a row index 1..n")
        else:
            note("the first column has an unnamed header but is not 0..n-1: kept as data (drop it if it is an index)")
    return a


_GROUPED = re.compile(r"[+-]?[0-9]{1,3}(?:[,.\u00a0\u202f' ][0-9]{3})+(?:[.,][0-9]*)?")


def _to_array(rows: list[list[str]], lineno: list[int]) -> np.ndarray:
    a = None
    if not any("," in f for r in rows for f in r):
        with contextlib.suppress(ValueError):  # fast path: numpy parses the strings
            a = np.array(rows, dtype=str).astype(np.float64)
    if a is None or not np.isfinite(a).all():  # find the first bad field and name it
        for r, i in zip(rows, lineno):
            for j, f in enumerate(r):
                v = _number(f)
                if f.lower() in _NULLS:
                    raise InputError(f"line {i}, column {j + 1}: missing value {f!r} (a database NULL?); "
                                     "remove or impute it first")
                if v is None:
                    hint = "; thousands separators are not supported: export without digit grouping" if (
                        _GROUPED.fullmatch(f)) else ""
                    raise InputError(f"line {i}, column {j + 1}: cannot read {f!r} as a number{hint}")
                if not math.isfinite(v):
                    raise InputError(f"line {i}, column {j + 1}: {f!r} is not a finite number (NaN or Inf)")
        if a is None:  # numpy disagreed with float() somewhere: use float()
            a = np.array([[_number(f) for f in r] for r in rows], dtype=np.float64)
    return a


def _number_or_heuristic(v: str):
    if v in ("median", "mean"):
        return v
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'median' / 'mean', got {v!r}") from None


def _parse_param(v: str):
    if "=" not in v:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {v!r}")
    name, value = v.split("=", 1)
    try:
        return name, json.loads(value)  # numbers, lists ("[1, 2, 4]"), null
    except json.JSONDecodeError:
        return name, value  # a bare word such as median


def _parser() -> argparse.ArgumentParser:
    from ._cli_tests import TESTS
    from .kernels import KERNELS
    from .ops import BACKENDS
    from .two_sample.optimized import NAMES

    ap = argparse.ArgumentParser(
        prog="python -m kernelmmd.test",
        description="Kernel two-sample test between the samples in files A and B: the permutation test of MMD^2_u "
        "(default), MMDAgg, MMD-FUSE or an optimised-kernel split test (--test).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("a", metavar="A", help="samples of P: .npy, .pt, .csv, .tsv or .txt file of shape (n, d)")
    ap.add_argument("b", metavar="B", help="samples of Q: .npy, .pt, .csv, .tsv or .txt file of shape (m, d)")
    ap.add_argument("--test", default="permutation", choices=list(TESTS),
                    help="permutation (default), mmdagg, mmdfuse or optimized")
    ap.add_argument("--kernel", default=None, choices=sorted({*(k for k in KERNELS if k != "rbf_bounded"), *NAMES}),
                    help="kernel of --test permutation (default rbf) or optimized (default ard)")
    ap.add_argument(
        "--sigma",
        type=_number_or_heuristic,
        default=None,
        help="bandwidth for rbf/laplacian/l1_laplacian: a number, 'median' (default) or 'mean'",
    )
    ap.add_argument(
        "--param",
        type=_parse_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="other kernel parameter, repeatable (e.g. --param alpha=0.5, --param 'sigmas=[1, 2, 4]')",
    )
    ap.add_argument("--permutations", type=int, default=None,
                    help="number of permutations B (default 1000; mmdagg, mmdfuse: 2000)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: not reproducible)")
    ap.add_argument("--backend", default=None, choices=list(BACKENDS), help="kernel backend (default auto)")
    ap.add_argument("--batch-size", type=int, default=None, help="permutations per fused pass")
    agg = ap.add_argument_group("mmdagg / mmdfuse")
    agg.add_argument("--kernels", default=None, help="comma-separated kernel families (default laplace,gaussian)")
    agg.add_argument("--bandwidths", type=int, default=None, help="bandwidths per family (default 10)")
    agg.add_argument("--weights", default=None, choices=["uniform", "increasing", "decreasing", "centred"],
                     help="mmdagg: weights over the bandwidths (default uniform)")
    agg.add_argument("--correction", type=int, default=None,
                     help="mmdagg: resamples for the level correction (default 2000)")
    opt = ap.add_argument_group("optimized")
    opt.add_argument("--steps", type=int, default=None, help="optimisation steps (default 200)")
    opt.add_argument("--lr", type=float, default=None, help="learning rate (default 0.05)")
    opt.add_argument("--train-fraction", type=float, default=None, help="training share of each sample (default 0.5)")
    ap.add_argument("--alpha", type=float, default=0.05, help="level for the reject/accept line (default 0.05)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar (default: when stderr is a terminal; silently off if tqdm is not installed)",
    )
    return ap


def _progress_bar(total: int, enabled):
    """A tqdm bar over permutations, or None (disabled, not a terminal, or tqdm missing: it is optional)."""
    if enabled is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="perm", desc="resamples", disable=None if enabled is None else False)


@contextlib.contextmanager
def _stdout_to_stderr():
    """While computing, everything written to stdout goes to stderr: Python prints (sys.stdout) and, at the file-
    descriptor level, output of C code and subprocesses (KeOps's compiler messages), so stdout keeps only the result.
    """
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    saved = None
    with contextlib.suppress(OSError, ValueError):
        saved = os.dup(1)
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            with contextlib.suppress(Exception):  # C stdio buffers written meanwhile belong to stderr too
                import ctypes

                ctypes.CDLL(None).fflush(None)
            os.dup2(saved, 1)
            os.close(saved)


def _check_options(ap, args, choice) -> None:
    """Usage errors: an option the chosen test does not take, or a count below 1."""
    for opt in ("kernel", "sigma", "param", "backend", "batch_size", "kernels", "bandwidths", "weights", "correction",
                "steps", "lr", "train_fraction"):
        if getattr(args, opt) not in (None, []) and opt not in choice.options:
            ap.error(f"--{opt.replace('_', '-')} does not apply to --test {args.test}")
    if args.permutations is None:
        args.permutations = choice.permutations
    for opt in ("permutations", "correction"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            ap.error(f"--{opt} must be >= 1, got {getattr(args, opt)}")
    if args.seed is not None and args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    if not 0.0 < args.alpha < 1.0:
        ap.error(f"--alpha must be in (0, 1), got {args.alpha}")


def main(argv=None) -> int:
    """Entry point; returns the exit code (see the module docstring: 0 ok, 1 internal, 2 usage/input, 3 undecided)."""
    from ._cli_tests import TESTS

    ap = _parser()
    args = ap.parse_args(argv)
    choice = TESTS[args.test]
    _check_options(ap, args, choice)
    try:
        a, b = load_samples(args.a), load_samples(args.b)
        da = 1 if a.ndim == 1 else a.shape[1]
        db = 1 if b.ndim == 1 else b.shape[1]
        if da != db:
            raise InputError(
                f"dimension mismatch: {args.a} has d = {da} features per sample but {args.b} has d = {db}"
            )
        if a.dtype != b.dtype:
            a, b = a.astype(np.float64), b.astype(np.float64)
    except InputError as e:
        print(f"error: {_one_line(e, 1000)}", file=sys.stderr)
        return EXIT_USAGE

    bar = _progress_bar(choice.progress(args), args.progress) if choice.progress is not None else None
    caught = []
    try:
        with _stdout_to_stderr(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = choice.run(a, b, args, bar.update if bar is not None else None)
    except (TypeError, ValueError) as e:
        print(f"error: {_one_line(e, 1000)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if bar is not None:
            bar.close()
        for w in caught:  # one line each, after the bar
            print(f"warning: {w.category.__name__}: {_one_line(w.message, 2000)}", file=sys.stderr)
    fields, lines, undecided = choice.report(res, args)
    out = {"test": args.test, **fields, "n": res.n, "m": res.m, "d": da, "seed": args.seed, "alpha": args.alpha,
           "status": "ok" if undecided is None else "cannot decide", "reason": undecided}
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        print("\n".join(lines))
        print(f"samples: n = {res.n}, m = {res.m}, d = {da}")
        if undecided is not None:
            print(f"at alpha = {args.alpha:g}: cannot decide: {undecided}; the test could not be computed "
                  "(see the warning on stderr: rescale the data or change the kernel parameters)")
        else:
            verdict = "reject" if out["reject"] else "do not reject"
            print(f"at alpha = {args.alpha:g}: {verdict} H0 (P = Q)")
    return EXIT_OK if undecided is None else EXIT_UNDECIDED


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess in tests/test_cli.py
    sys.exit(main())
