"""Per operator family defaults: explicit params > ``task_defaults[family]`` > generic defaults;
the values a run used are in ``solver.params`` and in the records of ``restore`` / ``eval``."""

from __future__ import annotations

import json

import pytest
import torch
from problems import correlated_prior, selection_operator

from diffinv import pipeline, solvers
from diffinv.families import FAMILIES, family, family_of_spec
from diffinv.operators import from_spec


@pytest.mark.parametrize(
    "spec, fam",
    [
        ("ct18", "ct"),
        ("ct8", "ct"),
        ("inpaint-box", "inpaint"),
        ("inpaint-random0.5", "inpaint"),
        ("inpaint-strokes", "inpaint"),
        ("sr4", "sr"),
        ("sr4-bicubic", "sr"),
        ("deblur-gauss", "deblur"),
        ("deblur-motion", "deblur"),
        ("colorize", "colorize"),
        ("cs0.25", "cs"),
        ("cs0.25-block", "cs"),
        ("denoise", "denoise"),
        ("colorize+sr4", "sr"),  # a composition: its last factor
        ("sr2+inpaint-box", "inpaint"),
        ("sr4 window + known overlap", "sr"),  # tiling's window operators
        ("colorize+sr4 window", "sr"),
        ("dense-nosvd", None),
        ("", None),
    ],
)
def test_family_of_spec(spec, fam):
    assert family_of_spec(spec) == fam
    assert fam is None or fam in FAMILIES


def test_family_of_operators():
    assert family(from_spec("ct8", (1, 16, 16))) == "ct"
    assert family(from_spec("colorize+sr4", (3, 16, 16))) == "sr"
    assert family(from_spec("inpaint-box", (3, 16, 16))) == "inpaint"
    op = selection_operator((1, 4, 4), 5)  # a MatrixOperator without a spec: generic
    assert family(op) is None and family(None) is None
    from diffinv.operators.ct import ParallelBeamCT

    assert family(ParallelBeamCT(8, 4)) == "ct"  # no spec: by class


def test_families_helper_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; import diffinv.families as f; "
        "assert f.family('ct18') == 'ct'; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- resolution
def test_explicit_params_override_family_defaults():
    prior = correlated_prior((1, 8, 8))
    mcg = solvers.get_class("mcg")
    ct_vp = mcg.task_defaults["ct"]
    assert ct_vp["steps"] != mcg.defaults["steps"]
    eff = solvers.get("mcg", prior).effective_params("ct18")
    assert eff["steps"] == ct_vp["steps"] and eff["grad_weight"] == 1.0  # None resolved to VP's value
    assert eff["weight_matrix"] == "identity"  # "auto" resolved to the value VP uses
    eff = solvers.get("mcg", prior, steps=1000, grad_weight=0.5).effective_params("ct18")
    assert eff["steps"] == 1000 and eff["grad_weight"] == 0.5
    # another family (no table entry): the generic defaults
    eff = solvers.get("mcg", prior).effective_params("sr4")
    assert eff["steps"] == mcg.defaults["steps"] and eff["grad_weight"] == 1.0
    # form="ve" takes the VE table
    eff = solvers.get("mcg", prior, form="ve", steps=2000).effective_params("ct8")
    assert eff["steps"] == 2000 and eff["predictor"] == mcg.ve_task_defaults["ct"]["predictor"]
    assert eff["grad_weight"] == 0.05 and eff["weight_matrix"] == "pinv"
    # the class-level resolution used by the benchmarks agrees
    assert mcg.resolve_params("ct", {"form": "vp"})["steps"] == ct_vp["steps"]


def test_params_after_a_call_are_the_values_used():
    """A run on a CT operator uses the CT defaults (NFE = their steps); one on a mask the generic ones."""
    shape = (1, 8, 8)
    prior = correlated_prior(shape)
    x = prior.sample(1, torch.Generator().manual_seed(0))
    op = from_spec("ct4", shape)
    ct_steps = solvers.get_class("ddnm").task_defaults["ct"]["steps"]
    assert ct_steps != solvers.get_class("ddnm").defaults["steps"]
    solver = solvers.get("ddnm", prior)
    solver(op.A(x), op, generator=torch.Generator().manual_seed(0))
    assert solver.params["steps"] == ct_steps and solver.last_nfe == ct_steps and solver.last_family == "ct"
    mask = selection_operator(shape, 20)
    solver(mask.A(x), mask, generator=torch.Generator().manual_seed(0))
    assert solver.params["steps"] == 100 and solver.last_nfe == 100 and solver.last_family is None
    explicit = solvers.get("ddnm", prior, steps=7)
    explicit(op.A(x), op, generator=torch.Generator().manual_seed(0))
    assert explicit.params["steps"] == 7 and explicit.last_nfe == 7
    # the pipeline's Restoration carries them
    r = pipeline.degrade_and_restore(x, op, "ddnm", prior, seed=0)
    assert r.params["steps"] == ct_steps and r.nfe == ct_steps


def test_ddnm_plus_records_the_eta_it_used():
    shape = (1, 8, 8)
    prior = correlated_prior(shape)
    op = selection_operator(shape, 20)
    y = op.A(prior.sample(1, torch.Generator().manual_seed(0)))
    solver = solvers.get("ddnm+", prior, steps=3)
    assert solver.params["eta"] is None
    solver(y, op, sigma_y=0.0, generator=torch.Generator().manual_seed(0))
    assert solver.params["eta"] == 0.85
    solver(y, op, sigma_y=0.05, generator=torch.Generator().manual_seed(0))
    assert solver.params["eta"] == 1.0


def test_restore_and_eval_records_hold_the_effective_params(tmp_path):
    """fista-tv has a CT default (lam 0.05 instead of 0.02): the records show the value used."""
    from diffinv.data.ellipses import random_phantoms
    from diffinv.data.io import save_image
    from diffinv.evaluate import evaluate
    from diffinv.restore import restore_files

    tv = solvers.get_class("fista-tv")
    assert tv.task_defaults["ct"]["lam"] != tv.defaults["lam"]
    png = save_image(random_phantoms(1, 32, generator=torch.Generator().manual_seed(1)), tmp_path / "ph.png")
    (rec,) = restore_files(png, "ct8", "fista-tv", params={"iters": 3}, out=tmp_path / "a", progress=False)
    assert rec["solver_params"]["lam"] == tv.task_defaults["ct"]["lam"] and rec["solver_params"]["iters"] == 3
    (rec,) = restore_files(png, "ct8", "fista-tv", params={"lam": 0.2}, out=tmp_path / "b", progress=False)
    assert rec["solver_params"]["lam"] == 0.2
    (rec,) = restore_files(png, "sr2", "fista-tv", params={"iters": 3}, out=tmp_path / "c", progress=False)
    assert rec["solver_params"]["lam"] == tv.defaults["lam"]  # not CT: the generic value

    out = tmp_path / "eval"
    evaluate("ellipses:1", "ct8", ["fista-tv"], out, crop=32, steps=3, quiet=True, figure_rows=0)
    (path,) = (out / "records" / "fista-tv").glob("*.json")
    params = json.loads(path.read_text())["solver_params"]
    assert params["lam"] == tv.task_defaults["ct"]["lam"] and params["iters"] == 3
