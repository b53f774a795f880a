"""Issue 12, item 5: `python -m kernelmmd.test A B` reads what spreadsheets and databases export (or refuses it with
one line "error: FILE: ..." and exit 2), always prints valid JSON with --json, sends everything else to stderr, and
exits 3 ("cannot decide") on a non-finite statistic — never "reject". In-process through kernelmmd.test.main, plus
one subprocess for the file-descriptor-level stdout redirect."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import kernelmmd as km
from kernelmmd import test as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WANT = np.array([[1.5, 2.0], [3.0, 4.0], [-0.25, 1e-3]])


def _strict_json(text):
    """json.loads that refuses NaN / Infinity (what json.dumps(allow_nan=True) would have written)."""
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=bad)


def _main(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def good(tmp_path):
    np.save(tmp_path / "good.npy", np.random.default_rng(0).normal(size=(6, 2)))
    return tmp_path / "good.npy"


# ---------------------------------------------------------------------------------------------- text variants
READ = {  # name: (file name, bytes) -> WANT
    "plain": ("a.csv", b"1.5,2\n3,4\n-0.25,0.001\n"),
    "utf8-bom": ("a.csv", b"\xef\xbb\xbf1.5,2\n3,4\n-0.25,0.001\n"),
    "crlf": ("a.csv", b"1.5,2\r\n3,4\r\n-0.25,0.001\r\n"),
    "cr-only": ("a.csv", b"1.5,2\r3,4\r-0.25,0.001\r"),
    "semicolon-decimal-comma": ("a.csv", b"x;y\n1,5;2\n3;4\n-0,25;0,001\n"),
    "excel-european": ("a.csv", b'\xef\xbb\xbf"x";"y"\r\n"1,5";"2"\r\n3;4\r\n-0,25;1e-3\r\n\r\n'),
    "tab-in-csv": ("a.csv", b"1.5\t2\n3\t4\n-0.25\t0.001\n"),
    "tab-decimal-comma": ("a.csv", b"1,5\t2\n3\t4\n-0,25\t0,001\n"),
    "quoted": ("a.csv", b'"1.5","2"\n"3","4"\n"-0.25","0.001"\n'),
    "quoted-decimal-comma": ("a.csv", b'"1,5",2\n3,4\n"-0,25",0.001\n'),
    "header-any-text": ("a.csv", b"first col,second (m/s) \xc3\xa9\n1.5,2\n3,4\n-0.25,0.001\n"),
    "numpy-savetxt-header": ("a.csv", b"# u,v\n1.5,2\n3,4\n-0.25,0.001\n"),
    "whitespace-around": ("a.csv", b"  1.5 ,\t2  \n3 ,  4\n -0.25,0.001 \n"),
    "blank-trailing-lines": ("a.csv", b"1.5,2\n3,4\n-0.25,0.001\n\n   \n\r\n"),
    "trailing-delimiter": ("a.csv", b"a,b,\n1.5,2,\n3,4,\n-0.25,0.001,\n"),
    "trailing-semicolon": ("a.csv", b"1,5;2;\n3;4;\n-0,25;0,001;\n"),
    "scientific": ("a.csv", b"1.5e0,2E+00\n3.0e+0,40e-1\n-2.5E-1,1e-3\n"),
    "utf16-excel-unicode-text": ("a.txt", "1,5\t2\r\n3\t4\r\n-0,25\t0,001\r\n".encode("utf-16")),
    "tsv": ("a.tsv", b"x\ty\n1.5\t2\n3\t4\n-0.25\t0.001\n"),
    "txt-savetxt-spaces": ("a.txt", b"1.500000000000000000e+00 2.000000000000000000e+00\n3 4\n-0.25 0.001\n"),
    "no-final-newline": ("a.csv", b"1.5,2\n3,4\n-0.25,0.001"),
}


@pytest.mark.parametrize("name", list(READ))
def test_text_variants_are_read(tmp_path, capsys, good, name):
    fname, data = READ[name]
    (tmp_path / fname).write_bytes(data)
    a = cli.load_samples(str(tmp_path / fname))
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, WANT)
    code, out, err = _main(capsys, tmp_path / fname, good, "--permutations", "5", "--seed", "0", "--json")
    assert code == 0 and err == "" and _strict_json(out)["d"] == 2


def test_pandas_index_column_dropped_with_note(tmp_path, capsys, good):
    import io

    df_text = io.StringIO()
    try:
        import pandas as pd

        pd.DataFrame(WANT, columns=["a", "b"]).to_csv(df_text)
        text = df_text.getvalue()
    except ImportError:
        text = ",a,b\n0,1.5,2.0\n1,3.0,4.0\n2,-0.25,0.001\n"
    assert text.startswith(",a,b")
    (tmp_path / "p.csv").write_text(text)
    code, out, err = _main(capsys, tmp_path / "p.csv", good, "--permutations", "5", "--json")
    assert code == 0 and _strict_json(out)["d"] == 2
    assert err.count("\n") == 1 and err.startswith(f"note: {tmp_path / 'p.csv'}: dropped the first column")
    np.testing.assert_array_equal(cli.load_samples(str(tmp_path / "p.csv"), note=lambda m: None), WANT)
    # an unnamed first column that is not 0..n-1 is data (kept, with a note)
    (tmp_path / "q.csv").write_text(",a\n5,1\n7,2\n")
    notes = []
    assert cli.load_samples(str(tmp_path / "q.csv"), note=notes.append).shape == (2, 2)
    assert "kept as data" in notes[0]


REFUSE = {  # name: (file name, bytes, message regex)
    "psql-null-empty": ("a.csv", b"x,y\n1.5,\n3,4\n", r"line 2, column 2: missing value '' \(a database NULL\?\)"),
    "psql-null-last-col": ("a.csv", b"1.5,2\n3,4\n5,\n", r"line 3, column 2: missing value ''"),
    "mysql-backslash-n": ("a.tsv", b"1.5\t\\N\n3\t4\n", r"line 1, column 2: missing value '\\\\N'"),
    "null-word": ("a.csv", b"a,b\n1.5,2\nNULL,4\n", r"line 3, column 1: missing value 'NULL'"),
    "excel-na": ("a.csv", b"a;b\n1,5;#N/A\n3;4\n", r"line 2, column 2: missing value '#N/A'"),
    "ragged-long": ("a.csv", b"1,2\n3,4,5\n6,7\n", r"line 2 has 3 fields, but line 1 \(the first data row\) has 2"),
    "ragged-short": ("a.csv", b"1,2\n3,4\n6\n", r"line 3 has 1 fields"),
    "header-mismatch": ("a.csv", b"a,b,c\n1,2\n3,4\n", r"the header \(line 1\) has 3 fields, but the data rows have 2"),
    "not-a-number": ("a.csv", b"1,2\n3,abc\n", r"line 2, column 2: cannot read 'abc' as a number"),
    "nan-field": ("a.csv", b"1,2\n3,nan\n", r"line 2, column 2: 'nan' is not a finite number"),
    "overflow-field": ("a.csv", b"1,2\n3,1e999\n", r"line 2, column 2: '1e999' is not a finite number"),
    "blank-line-inside": ("a.csv", b"1,2\n\n3,4\n", r"line 2 is empty \(a missing value\?\)"),
    "header-only": ("a.csv", b"a,b\r\n\r\n", r"no data rows \(only a header line\)"),
    "comments-only": ("a.csv", b"# nothing\n\n", r"no data \(only blank or comment lines\)"),
    "empty": ("a.csv", b"", r"empty file"),
    "whitespace-only": ("a.csv", b"\n \n", r"no data"),
    "binary": ("a.csv", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\xfd", r"not UTF-8 text|not a text file"),
    "one-row": ("a.csv", b"a,b\n1,2\n", r"need at least 2 samples"),
    "thousands-separators": ("a.csv", b"a;b\n1.234,5;2\n3;4\n", r"line 2, column 1: cannot read '1.234,5' as a"),
}


@pytest.mark.parametrize("name", list(REFUSE))
def test_text_variants_are_refused_with_one_line(tmp_path, capsys, good, name):
    fname, data, message = REFUSE[name]
    path = tmp_path / fname
    path.write_bytes(data)
    code, out, err = _main(capsys, path, good, "--permutations", "5")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1 and err.endswith("\n"), err
    import re

    assert re.search(message, err), err


# ------------------------------------------------------------------------------------------ binary formats
def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _save(obj, path):
    if path.suffix == ".pt":
        torch.save(obj, path)
    else:
        np.save(path, obj, allow_pickle=True)
    return path


@pytest.mark.parametrize(
    "name,make,message",
    [
        ("complex-npy", lambda p: _save(np.ones((3, 2)) * 1j, p / "c.npy"), r"complex values are not supported"),
        ("complex-pt", lambda p: _save(torch.ones(3, 2, dtype=torch.complex64), p / "c.pt"), r"complex values"),
        ("object-npy", lambda p: _save(np.array([{}, {}], dtype=object), p / "o.npy"),
         r"holds Python objects .* refusing to unpickle"),
        ("structured-npy", lambda p: _save(np.zeros(3, dtype=[("a", "f8"), ("b", "f8")]), p / "s.npy"),
         r"structured array with fields \['a', 'b'\]"),
        ("string-npy", lambda p: _save(np.array([["1", "2"], ["3", "4"]]), p / "u.npy"), r"expected real numbers"),
        ("pt-dict", lambda p: _save({"x": torch.zeros(3, 2)}, p / "d.pt"), r"expected a saved torch.Tensor, found dic"),
        ("pt-list", lambda p: _save([torch.zeros(3, 2)], p / "l.pt"), r"expected a saved torch.Tensor, found list"),
        ("pt-int", lambda p: _save(3, p / "i.pt"), r"expected a saved torch.Tensor, found int"),
        ("pt-unsafe-pickle", lambda p: _save(np.zeros((3, 2)), p / "n.pt"),
         r"cannot be loaded safely: it holds objects other than tensors.*re-save it with torch.save\(tensor\)"),
        ("empty-npy", lambda p: _write(p / "e.npy", b""), r"empty file"),
        ("empty-pt", lambda p: _write(p / "e.pt", b""), r"empty file"),
        ("truncated-npy", lambda p: _write(p / "t.npy", b"\x93NUMPY\x01\x00v\x00{'descr'"),
         r"cannot read .npy file"),
        ("garbage-pt", lambda p: _write(p / "g.pt", b"not a torch file"), r"cannot read .pt file"),
        ("directory", lambda p: (p / "dir.npy").mkdir() or p / "dir.npy", r"is a directory, not a file"),
        ("missing", lambda p: p / "missing.csv", r"no such file"),
        ("no-suffix", lambda p: _write(p / "data", b"1,2\n3,4\n"), r"unsupported file type '\(none\)'"),
        ("empty-features", lambda p: _save(np.zeros((3, 0)), p / "z.npy"), r"no features: shape \(3, 0\)"),
        ("nan-npy", lambda p: _save(np.array([[1.0, 2.0], [3.0, np.inf]]), p / "f.npy"),
         r"contains NaN or Inf values \(first at row 2, column 2: inf\)"),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith(("r", "(")) else None,
)
def test_binary_inputs_refused_with_one_line(tmp_path, capsys, good, name, make, message):
    import re

    path = make(tmp_path)
    code, out, err = _main(capsys, good, path)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_permission_denied(tmp_path, capsys, good, monkeypatch):
    path = tmp_path / "locked.csv"
    path.write_text("1,2\n3,4\n")

    def fake_open(p, *a, **k):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(cli, "open", fake_open, raising=False)  # root ignores chmod 000: fake the OS refusal
    code, out, err = _main(capsys, path, good)
    assert code == 2 and out == "" and err == f"error: {path}: permission denied (cannot open the file for reading)\n"


def test_value_types_read(tmp_path):
    _save(np.eye(3, dtype=bool), tmp_path / "b.npy")
    a = cli.load_samples(str(tmp_path / "b.npy"))
    assert a.dtype == np.float64 and a.tolist() == np.eye(3).tolist()
    _save(torch.eye(3, dtype=torch.bool), tmp_path / "b.pt")
    assert cli.load_samples(str(tmp_path / "b.pt")).dtype == np.float64
    for dt in (torch.bfloat16, torch.float16):
        t = torch.randn(5, 3).to(dt)
        _save(t, tmp_path / "h.pt")
        a = cli.load_samples(str(tmp_path / "h.pt"))
        assert a.dtype == np.float32 and np.array_equal(a, t.float().numpy())
    _save(np.ones((3, 2), dtype=np.float16), tmp_path / "h.npy")
    assert cli.load_samples(str(tmp_path / "h.npy")).dtype == np.float32
    _save(np.arange(6, dtype=np.uint8).reshape(3, 2), tmp_path / "u.npy")
    assert cli.load_samples(str(tmp_path / "u.npy")).dtype == np.float64
    _save(torch.nn.Parameter(torch.ones(3, 2)), tmp_path / "par.pt")
    assert cli.load_samples(str(tmp_path / "par.pt")).shape == (3, 2)


# ------------------------------------------------------------------------------------ output and exit codes
@pytest.fixture
def huge(tmp_path):
    """float64 data at 1e200: squared distances overflow at any bandwidth, the statistic is NaN."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "h1.npy", rng.normal(size=(20, 3)) * 1e200)
    np.save(tmp_path / "h2.npy", rng.normal(size=(15, 3)) * 1e200)
    return tmp_path / "h1.npy", tmp_path / "h2.npy"


def test_nan_statistic_json_exit_3(huge, capsys):
    code, out, err = _main(capsys, *huge, "--sigma", "1.0", "--permutations", "10", "--seed", "0", "--json")
    assert code == cli.EXIT_UNDECIDED == 3
    res = _strict_json(out)
    assert out.count("\n") == 1
    assert res["statistic"] is None and res["p_value"] is None and res["reject"] is False
    assert res["status"] == "cannot decide" and res["reason"] == "statistic is NaN"
    lines = err.splitlines()
    assert any(ln.startswith("warning: NumericalWarning: mmd_test: cannot decide: the statistic MMD²_u is nan")
               for ln in lines), err
    assert all(ln.startswith("warning: ") for ln in lines)  # one line per warning, no source-line echo


def test_nan_statistic_text_never_rejects(huge, capsys):
    code, out, err = _main(capsys, *huge, "--sigma", "1.0", "--permutations", "10", "--alpha", "0.99")
    assert code == 3
    assert "at alpha = 0.99: cannot decide: statistic is NaN; the test could not be computed" in out
    assert ": reject H0" not in out and "do not reject" not in out
    assert "statistic (MMD^2_u): nan" in out and "p-value: nan" in out


def test_nan_null_statistics_exit_3(good, capsys, monkeypatch):
    from kernelmmd import two_sample

    real = two_sample.mmd_test

    def poisoned(*a, **k):
        res = real(*a, **k)
        res.null_samples[0] = float("nan")
        res.p_value = float("nan")  # what the library does for NaN nulls (tests/test_reliability_tests.py)
        return res

    monkeypatch.setattr(two_sample, "mmd_test", poisoned)
    code, out, _ = _main(capsys, good, good, "--permutations", "5", "--json")
    res = _strict_json(out)
    assert code == 3 and res["p_value"] is None and res["statistic"] is not None and res["reject"] is False
    assert res["reason"] == "p-value is NaN (some permuted statistics are not finite)"


def test_success_json_is_strict_and_stdout_only_json(good, capfd, monkeypatch):
    """Warnings, Python prints and fd-level writes during the computation end up on stderr (in-process, capfd)."""
    from kernelmmd import two_sample

    real = two_sample.mmd_test

    def noisy(*a, **k):
        print("python print to stdout")
        os.write(1, b"fd 1 write\n")
        warnings.warn("something numerical", km.NumericalWarning, stacklevel=2)
        return real(*a, **k)

    monkeypatch.setattr(two_sample, "mmd_test", noisy)
    code = cli.main([str(good), str(good), "--permutations", "9", "--seed", "1", "--json"])
    out, err = capfd.readouterr()
    assert code == 0
    res = _strict_json(out)
    assert res["status"] == "ok" and res["reason"] is None and 0 < res["p_value"] <= 1
    assert "python print to stdout" in err and "fd 1 write" in err
    assert "warning: NumericalWarning: something numerical" in err


def test_fd_level_stdout_redirect_subprocess(tmp_path, good):
    """A fresh interpreter: C-level stdio (unflushed printf), a child process and Python prints during the test all
    reach stderr; stdout is exactly one JSON line."""
    pre = (
        "import ctypes, os, kernelmmd.two_sample as ts\n"
        "real = ts.mmd_test\n"
        "def noisy(*a, **k):\n"
        "    ctypes.CDLL(None).printf(b'libc printf without newline ')\n"
        "    os.system('echo child process output')\n"
        "    print('[KeOps] Compiling formula ... done')\n"
        "    return real(*a, **k)\n"
        "ts.mmd_test = noisy\n"
    )
    args = [str(good), str(good), "--permutations", "9", "--seed", "0", "--json"]
    code = f"{pre}\nimport sys, runpy\nsys.argv = ['kernelmmd.test', *{args!r}]\n" \
           "runpy.run_module('kernelmmd.test', run_name='__main__', alter_sys=True)"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and _strict_json(proc.stdout)["status"] == "ok", proc.stdout
    for noise in ("libc printf without newline", "child process output", "[KeOps] Compiling formula"):
        assert noise in proc.stderr, proc.stderr


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for line in ("0  the test was computed", "1  unexpected internal error", "2  bad usage or unreadable input",
                 "3  the test could not be computed"):
        assert line in out
    doc = cli.__doc__
    assert all(f"* {c} —" in doc for c in "0123")


# ------------------------------------------------------------------ QA round 2: more exports a new user brings
READ_WITH_NOTE = {  # name: (file name, bytes, note regex or None) -> WANT
    "pandas-dataframe-default": ("a.csv", b",0,1\n0,1.5,2.0\n1,3.0,4.0\n2,-0.25,0.001\n", r"pandas index"),
    "pandas-no-index-int-names": ("a.csv", b"0,1\n1.5,2.0\n3.0,4.0\n-0.25,0.001\n", r"line 1 \(0,1\) read as a header"),
    "r-write-csv": ("a.csv", b'"","x","y"\n"1",1.5,2\n"2",3,4\n"3",-0.25,0.001\n', r"R row names"),
    "r-write-table": ("a.txt", b'"x" "y"\n"1" 1.5 2\n"2" 3 4\n"3" -0.25 0.001\n', r"R row names"),
    "unicode-minus": ("a.csv", "x;y\n1,5;2\n3;4\n\u22120,25;0,001\n".encode(), None),
    "cp1252-header": ("a.csv", "temp\u00e9rature;\u00e9l\u00e8ve\n1,5;2\n3;4\n-0,25;0,001\n".encode("cp1252"),
                      r"read as Windows-1252"),
}


@pytest.mark.parametrize("name", list(READ_WITH_NOTE))
def test_more_exports_are_read(tmp_path, capsys, good, name):
    fname, data, note = READ_WITH_NOTE[name]
    path = tmp_path / fname
    path.write_bytes(data)
    code, out, err = _main(capsys, path, good, "--permutations", "5", "--seed", "0", "--json")
    assert code == 0 and _strict_json(out)["n"] == 3 and _strict_json(out)["d"] == 2, err
    if note is None:
        assert err == ""
    else:
        import re

        assert err.startswith(f"note: {path}: ") and err.count("\n") == 1 and re.search(note, err), err
    np.testing.assert_array_equal(cli.load_samples(str(path), note=lambda m: None), WANT)


def test_pt_variants_are_read_without_torch_warnings(tmp_path, capsys, good):
    x = torch.tensor(WANT, dtype=torch.float32)
    with warnings.catch_warnings():  # "beta" / "deprecated" remarks of torch when making them
        warnings.simplefilter("ignore")
        cases = {
            "sparse": x.to_sparse(),
            "csr": x.to_sparse_csr(),
            "quantized": torch.quantize_per_tensor(x, 0.25, 0, torch.qint32),
            "float8": x.to(torch.float8_e5m2),
            "strided": torch.stack([x, x], 2)[:, :, 0],
        }
    for name, t in cases.items():
        path = _save(t, tmp_path / f"{name}.pt")
        code, out, err = _main(capsys, path, good, "--permutations", "5", "--seed", "0", "--json")
        assert code == 0 and err == "" and _strict_json(out)["n"] == 3, (name, err)


@pytest.mark.parametrize(
    "name,make,message",
    [
        ("fifo", lambda p: os.mkfifo(p / "f.csv") or p / "f.csv", r"is a FIFO \(named pipe\), not a regular file"),
        ("device", lambda p: os.symlink("/dev/zero", p / "z.npy") or p / "z.npy", r"is a device"),
        ("npy-two-arrays", lambda p: _write(p / "two.npy", (_save(np.ones((3, 2)), p / "o.npy").read_bytes() * 2)),
         r"\d+ bytes after the array \(several arrays saved into one file"),
        ("pt-meta", lambda p: _save(torch.empty(3, 2, device="meta"), p / "m.pt"), r"on the 'meta' device"),
        ("pt-code-execution", lambda p: _write(p / "x.pt", b"cposix\nsystem\n(S'true'\ntR."),
         r"cannot be loaded safely: .*\(it needs posix.system\)"),
        ("pt-plain-pickle", lambda p: _write(p / "pp.pt", __import__("pickle").dumps([1.0, 2.0], protocol=4)),
         r"cannot read .pt file: not a valid torch.save file"),
        ("pt-text", lambda p: _write(p / "t.pt", b"hello"), r"not a valid torch.save file"),
        ("thousands-en", lambda p: _write(p / "t.csv", b'x,y\n"1,234.5",2\n3,4\n'),
         r"cannot read '1,234.5' as a number; thousands separators are not supported"),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith(("r", "(")) else None,
)
def test_more_inputs_refused_with_one_line(tmp_path, capsys, good, name, make, message):
    import re

    path = make(tmp_path)
    code, out, err = _main(capsys, good, path, "--permutations", "5")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
