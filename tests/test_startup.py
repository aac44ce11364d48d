"""A fast command line: ``diffinv --help``, ``tasks``, ``methods`` and early errors import no torch.

Importing torch takes 2-3 s (more on a loaded machine), so these are import-level properties,
checked in fresh interpreters, not timings. The torch-free tables in :mod:`diffinv.catalog` that
make ``tasks`` and ``methods`` possible are checked against the real registries here too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffinv import catalog, operators, solvers

SRC = Path(__file__).resolve().parents[1] / "src"
FACE = SRC / "diffinv" / "assets" / "images" / "face_189080.png"
#: modules that take seconds to import (or pull in the network code); none may load at start-up
HEAVY = ("torch", "numpy", "scipy", "diffusers", "skimage", "safetensors", "diffinv.priors")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def _heavy(modules) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_cli_commands_that_need_no_model_import_no_heavy_module(tmp_path):
    """Help of every command, the listings, parse errors and output/input errors: no torch."""
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        import diffinv.cli as cli

        parser = cli.build_parser()
        codes = {{}}
        for argv in ([], ["demo"], ["restore"], ["eval"], ["train"], ["models"], ["tasks"], ["methods"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    parser.parse_args([*argv, "--help"])
                except SystemExit as e:
                    codes[" ".join([*argv, "--help"])] = e.code
        out_file = {str(a_file)!r}
        calls = {{
            "tasks": ["tasks"],
            "methods": ["methods"],
            "bad flag": ["restore", "--bogus"],
            "bad int": ["eval", "--limit", "many"],
            "restore --out file": ["restore", {str(FACE)!r}, "--task", "sr4", "--out", out_file],
            "restore missing input": ["restore", "nope.png", "--task", "sr4", "--out", "o"],
            "restore bad param": ["restore", {str(FACE)!r}, "--task", "sr4", "--param", "eta"],
            "eval --out file": ["eval", "--data", "ellipses:2", "--task", "ct18", "--methods", "pinv",
                                "--out", out_file],
            "eval missing data": ["eval", "--data", "nope/", "--task", "sr4", "--methods", "pinv",
                                  "--out", "o"],
            "demo --out file": ["demo", "--out", out_file],
            "train --out file": ["train", "--data", "ellipses", "--out", out_file],
        }}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for name, argv in calls.items():
                codes[name] = cli.main(argv)
        print(json.dumps({{"codes": codes, "modules": sorted(sys.modules)}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    codes = result["codes"]
    assert all(codes[k] == 0 for k in codes if k.endswith("--help")), codes
    assert codes.pop("tasks") == 0 and codes.pop("methods") == 0
    assert all(codes[k] == 2 for k in codes if not k.endswith("--help")), codes
    assert _heavy(result["modules"]) == []
    assert not (tmp_path / "o").exists()


def test_python_m_diffinv_help_imports_no_heavy_module(tmp_path):
    """The real entry point, ``python -X importtime -m diffinv --help``: its import list has no torch."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "diffinv", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0 and "usage: diffinv" in proc.stdout, proc.stderr[-2000:]
    imported = [ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    assert "diffinv.cli" in imported  # (the import list was read)
    assert _heavy(imported) == []


def test_catalog_specs_match_the_operators():
    assert catalog.SPECS == operators.available_specs()


def test_catalog_methods_match_the_solver_registry():
    registry = [
        catalog.MethodInfo(name, cls.needs_prior, cls.requires_svd, cls.description)
        for name, cls in ((n, solvers.get_class(n)) for n in solvers.available())
    ]
    assert catalog.METHODS == registry


def test_check_method_falls_back_to_the_registry(monkeypatch):
    """A name missing from the table is looked up in the registry: a stale table never refuses."""
    monkeypatch.setattr(catalog, "METHODS", [m for m in catalog.METHODS if m.name != "ddnm"])
    catalog.check_method("ddnm")  # not in the (stale) table, but registered: accepted
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        catalog.check_method("magic")
