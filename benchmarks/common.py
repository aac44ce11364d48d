"""Helpers shared by the benchmark scripts: provenance header and atomic result files.

Every results file starts with the command that made it, the machine, the date and the git commit,
so a number can be traced back to how it was produced::

    from common import header, write_text
    text = header("Natural-image tasks") + body
    write_text(out_dir / "natural.md", text)
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran this script, as a shell line relative to the project root."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0]).resolve()
        try:
            argv[0] = str(script.relative_to(ROOT))
        except ValueError:
            argv[0] = str(script)
    return shlex.join(["python", *argv])


def git_commit(root: Path = ROOT) -> str:
    """Short commit hash of the working tree, with ``+dirty`` when it has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=20
        )
        if rev.returncode != 0:
            return "unknown (not a git checkout)"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=20,
        )
        dirty = "+dirty" if status.stdout.strip() else ""
        return rev.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> str:
    """One line: CPU, core count, load, OS, Python, torch (+ CUDA device when there is one)."""
    import torch

    parts = [f"{_cpu_model()}, {os.cpu_count()} cores"]
    try:
        parts.append("load average {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg()))
    except OSError:
        pass
    parts.append(f"{platform.system()} {platform.release()}")
    parts.append(f"Python {platform.python_version()}")
    parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    if torch.cuda.is_available():
        parts.append(f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
    return "; ".join(parts)


def now() -> str:
    """The current date and time, UTC, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def header(title: str, command: str | None = None) -> str:
    """Markdown heading plus the provenance block (command, machine, date, commit)."""
    return (
        f"# {title}\n\n"
        f"- command: `{command or command_line()}`\n"
        f"- machine: {machine_info()}\n"
        f"- date: {now()}\n"
        f"- git commit: {git_commit()}\n\n"
    )


def mean_std(values) -> tuple[float, float]:
    """Mean and population std of ``values`` (nan, nan when empty; std 0 for one value)."""
    import math
    import statistics

    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan
    return statistics.fmean(v), (statistics.pstdev(v) if len(v) > 1 else 0.0)


def fmt(values, spec: str) -> str:
    """``"mean ± std"`` of ``values`` with the format ``spec`` for both."""
    m, s = mean_std(values)
    return f"{m:{spec}} ± {s:{spec}}"


def photons_label(i0: float) -> str:
    """A photon count as short as it stays exact: 1e4, 2.5e4, 12345 -> "1.2345e4"."""
    for digits in range(16):
        text = f"{float(i0):.{digits}e}"
        if float(text) == float(i0):
            mantissa, exponent = text.split("e")
            return f"{mantissa}e{int(exponent)}"
    return repr(float(i0))


def key_values(ap, text: str, option: str) -> dict:
    """``"k=v,k=v"`` -> ``{k: v}``, parsed as the CLI's ``--param`` (``preflight.parse_params``:
    bool / None / int / float / string); a malformed item ends the program through ``ap.error``
    naming ``option``."""
    from diffinv.errors import DiffinvError
    from diffinv.preflight import parse_params

    try:
        return parse_params([s for s in (t.strip() for t in text.split(",")) if s], option)
    except DiffinvError as e:
        ap.error(str(e))


def positive_ints(ap, text: str | None, default, name: str) -> list[int]:
    """Parse a comma-separated ``--name`` option of positive integers (``default`` when None);
    bad values end the program through ``ap.error`` with a one-line message."""
    if text is None:
        return list(default)
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--{name} must be comma-separated integers, got {text!r}")
    if not vals or min(vals) < 1:
        ap.error(f"--{name} needs positive integers, got {text!r}")
    return vals


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def save_png(path: str | os.PathLike, image) -> Path:
    """Save a PIL image as PNG atomically."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return write_bytes(path, buf.getvalue())


def result_path(name: str, out: str | os.PathLike | None = None) -> Path:
    """``<out>/<name>``, default ``benchmarks/results/<name>``."""
    return Path(out if out is not None else RESULTS) / name


PALETTE = [(66, 114, 196), (237, 125, 49), (112, 173, 71), (165, 105, 189), (255, 192, 0), (91, 155, 213)]


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str = "PSNR (dB)",
    hlines: dict[str, float] | None = None,
    log_x: bool = False,
    size: tuple[int, int] = (520, 320),
    colors: dict | None = None,
):
    """A PIL line chart (no plotting library): one polyline with markers per series, optional
    dashed horizontal reference lines (e.g. baselines), log-scaled x when ``log_x``."""
    import math

    from PIL import Image, ImageDraw

    W, H = size
    left, right, top, bottom = 48, 130, 26, 40
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((6, 6), title, fill="black")
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    ys = [p[1] for p in pts] + list((hlines or {}).values())
    xs = [p[0] for p in pts]
    if not pts:
        return img
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_lo, x_hi = fx(min(xs)), fx(max(xs))
    y_lo, y_hi = math.floor(min(ys) - 1), math.ceil(max(ys) + 1)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    pw, ph = W - left - right, H - top - bottom

    def px(x, y):
        return (left + pw * (fx(x) - x_lo) / (x_hi - x_lo), top + ph * (1 - (y - y_lo) / (y_hi - y_lo)))

    d.line([(left, top), (left, top + ph), (left + pw, top + ph)], fill="black")
    step = max(1, round((y_hi - y_lo) / 6))
    for v in range(int(y_lo), int(y_hi) + 1, step):
        _, yy = px(min(xs), v)
        d.line([(left - 4, yy), (left, yy)], fill="black")
        d.text((6, yy - 6), f"{v:g}", fill="black")
    for v in sorted(set(xs)):
        xx, _ = px(v, y_lo)
        d.line([(xx, top + ph), (xx, top + ph + 4)], fill="black")
        d.text((xx - d.textlength(f"{v:g}") / 2, top + ph + 6), f"{v:g}", fill="black")
    d.text((left + pw / 2 - d.textlength(xlabel) / 2, H - 16), xlabel, fill="black")
    d.text((left + 4, top + 2), ylabel, fill=(90, 90, 90))
    legend_y = top
    for k, (name, val) in enumerate((hlines or {}).items()):
        _, yy = px(min(xs), val)
        col = (120, 120, 120) if k % 2 == 0 else (200, 60, 60)
        for x0 in range(left, left + pw, 10):
            d.line([(x0, yy), (min(x0 + 5, left + pw), yy)], fill=col)
        d.text((left + pw + 8, legend_y), f"-- {name}", fill=col)
        legend_y += 14
    for i, (name, s) in enumerate(series.items()):
        col = (colors or {}).get(name, PALETTE[i % len(PALETTE)])
        p = [px(x, y) for x, y in s if math.isfinite(y)]
        if len(p) > 1:
            d.line(p, fill=col, width=2)
        for xx, yy in p:
            d.ellipse([xx - 3, yy - 3, xx + 3, yy + 3], fill=col)
        d.text((left + pw + 8, legend_y), name, fill=col)
        legend_y += 14
    return img


def hstack(images, gap: int = 8):
    """Images side by side on white (same top edge)."""
    from PIL import Image

    W = sum(im.width for im in images) + gap * (len(images) - 1)
    H = max(im.height for im in images)
    out = Image.new("RGB", (W, H), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def vstack(images, gap: int = 8):
    """Images one below the other on white (same left edge)."""
    from PIL import Image

    W = max(im.width for im in images)
    H = sum(im.height for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (W, H), "white")
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + gap
    return out


# ---------------------------------------------------------------- evaluation loop (faces.py, ct_real.py)
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rel_path(p) -> str:
    """``p`` relative to the project root (``src/...``, ``../shared/...``) when it lies below the
    root's parent, else as given."""
    p = Path(p).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if p.is_relative_to(base):
            return prefix + p.relative_to(base).as_posix()
    return str(p)


def load_prior(name: str, shape: tuple[int, ...], option: str = "--prior"):
    """``priors.load(name)``; a missing prior or one of the wrong image shape ends the program with a
    one-line message naming ``option``."""
    from diffinv import priors

    try:
        prior = priors.load(name)
    except Exception as exc:  # unknown name, missing folder, unreadable weights
        raise SystemExit(f"error: {option} {name}: {' '.join(str(exc).split())}") from None
    if tuple(prior.image_shape) != tuple(shape):
        raise SystemExit(f"error: {option} {name} has image shape {tuple(prior.image_shape)}, need {shape}")
    return prior


def solver_run(method: str, prior=None, steps: int | None = None, samples: int = 1, **params):
    """A run ``(y, op, sigma, seed) -> (x_hat, seconds, nfe, steps or iters used)`` of a diffinv solver;
    ``steps=None`` keeps the library's defaults (per operator family). ``sigma`` is the noise std,
    or a tensor of y's per-bin noise variance (Poisson CT: ``pipeline.solve_with_variance``, weighted
    least squares where the method can use it; NFE then counts one image's calls).

    ``samples = K > 1``: ``x_hat`` is the Monte-Carlo posterior mean ``(1/K) sum_k clamp(x^(k), 0, 1)``
    of K samples per image (``y`` repeated image-major, one solver call, as ``posterior.sample``
    batches them; clamped to the image range before averaging, as ``posterior.py`` scores them);
    seconds are those of all K samples, NFE one sample's (per image,
    as for every method: the K samples run as one batch)."""

    def run(y, op, sigma, seed):
        import torch

        from diffinv import pipeline

        solver = pipeline.make_solver(method, prior, steps, **params)
        if samples > 1:
            y = y.repeat_interleave(samples, dim=0)
            sigma = sigma.repeat_interleave(samples, dim=0) if torch.is_tensor(sigma) else sigma
        if torch.is_tensor(sigma):
            r = pipeline.solve_with_variance(y, op, solver, sigma, seed)
            x, seconds = r.x, r.seconds
        else:
            x = solver(y, op, sigma_y=sigma, generator=torch.Generator().manual_seed(seed))
            seconds = solver.last_seconds
        if samples > 1:
            x = x.clamp(0, 1).unflatten(0, (-1, samples)).mean(1)
        # read after the call: solver.params are then the ones used on op (its family's defaults)
        used = solver.params.get("steps", solver.params.get("iters"))
        return x, seconds, solver.last_nfe, used

    return run


class BatchStore:
    """The finished batches of a long benchmark run, kept so that a run that was cut resumes
    (``--resume DIR`` of ``ct_real.py`` / ``ct_tune.py``).

    Each batch's ``(x_hat, seconds, nfe, steps)`` is written atomically to
    ``DIR/<label>/<row>/batch-<b>.pt`` when the batch ends, and read back (tensors and numbers only,
    ``torch.load(weights_only=True)``) instead of running it again. ``DIR/run.json`` holds the
    arguments that decide the outputs (``identity``); a run with other such arguments is refused
    rather than mixed with them. The code is not part of the identity: resume across a change to a
    solver only when the change cannot alter its outputs.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        identity: dict,
        option: str = "--resume",
        ignore: tuple[str, ...] = (),
        create: bool = True,
    ):
        """``ignore``: identity keys that may differ (a ``--pool`` store's seed); ``create=False``
        opens a finished run's store to read only, refusing a folder that holds none."""
        import json

        self.folder = Path(folder)
        self.identity = identity
        record = self.folder / "run.json"
        if record.is_file():
            try:
                held = json.loads(record.read_text())["identity"]
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"error: {option} {folder}: unreadable {record.name} ({e})") from None
            keys = (held.keys() | identity.keys()) - set(ignore)
            differ = sorted(k for k in keys if held.get(k) != identity.get(k))
            if differ:
                raise SystemExit(
                    f"error: {option} {folder} holds a run with other arguments ({', '.join(differ)}); "
                    "use a new folder"
                )
            self.identity = held
        elif not create:
            raise SystemExit(f"error: {option} {folder} holds no {record.name} (not a --resume folder)")
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise SystemExit(f"error: {option} {folder} is not empty and holds no {record.name}")
        else:
            body = {"identity": identity, "git_commit": git_commit(), "started": now()}
            write_text(record, json.dumps(body, indent=1, sort_keys=True) + "\n")

    def _path(self, label: str, name: str, b: int) -> Path:
        slug = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in s) or "_"  # noqa: E731
        return self.folder / slug(label) / slug(name) / f"batch-{b}.pt"

    def get(self, label: str, name: str, b: int, shape) -> tuple | None:
        """The stored outputs of batch ``b`` of row ``name``, or None; refused if not ``shape``."""
        import torch

        path = self._path(label, name, b)
        if not path.is_file():
            return None
        d = torch.load(path, weights_only=True)
        if tuple(d["x"].shape) != tuple(shape):
            raise SystemExit(
                f"error: {path} holds {tuple(d['x'].shape)} images, this run makes {tuple(shape)}"
            )
        return d["x"], d["seconds"], d["nfe"], d["steps"]

    def put(self, label: str, name: str, b: int, x_hat, seconds: float, nfe, steps) -> None:
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"x": x_hat.detach().cpu(), "seconds": float(seconds), "nfe": nfe, "steps": steps}, buf)
        write_bytes(self._path(label, name, b), buf.getvalue())


def run_identity(
    args, skip=("out", "resume", "pool", "project", "threads", "tv_variant", "tv_variants")
) -> dict:
    """The parsed arguments, less those that cannot change the stored outputs, as JSON values (a
    :class:`BatchStore`'s identity; ``--pool`` and ``--project`` only add rows made from stored ones,
    and a ``--tv-variant`` row is stored under a name that spells its parameters)."""
    import json

    return json.loads(json.dumps({k: v for k, v in vars(args).items() if k not in skip}, default=str))


def empty_row(lpips: bool) -> dict:
    """A row of :func:`evaluate` before its first batch."""
    return {"psnr": [], "ssim": [], **({"lpips": []} if lpips else {}), "sec": 0.0, "out": []}


def score_batch(r: dict, x_hat, xb, lpips: bool) -> None:
    """Append one batch's scores to a row ``r`` of :func:`evaluate`: PSNR, SSIM (, LPIPS) of
    ``x_hat`` clamped to [0, 1] against ``xb``, and the clamped output."""
    import torch

    from diffinv import metrics as M

    xc = x_hat.clamp(0, 1).to(xb.dtype)
    r["psnr"] += M.psnr(xc, xb).tolist()
    r["ssim"] += M.ssim(xc, xb).tolist()
    if lpips:
        with torch.no_grad():
            r["lpips"] += M.lpips(xc, xb).tolist()
    r["out"].append(xc)


def evaluate(
    runs: dict,
    x,
    y,
    op,
    sigma: float,
    seed: int,
    batch: int,
    lpips: bool,
    label: str = "",
    store: BatchStore | None = None,
) -> dict:
    """Run every ``runs[name]`` (see :func:`solver_run`) on the images ``x`` / measurements ``y`` in
    batches; returns ``{name: {"psnr", "ssim"[, "lpips"]: per-image lists, "sec": seconds/image,
    "nfe": per call, "steps": used, "out": clamped outputs}}``. With a ``store``, batches it holds
    are read back instead of run, and each batch run is stored as it ends."""
    import torch

    res = {}
    for name, run in runs.items():
        r = empty_row(lpips)
        resumed = 0
        for b, lo in enumerate(range(0, x.shape[0], batch)):
            xb = x[lo : lo + batch]
            sb = sigma[lo : lo + batch] if torch.is_tensor(sigma) else sigma  # per-bin variance
            held = store.get(label, name, b, xb.shape) if store is not None else None
            if held is None:
                x_hat, sec, r["nfe"], r["steps"] = run(y[lo : lo + batch], op, sb, seed + b)
                if store is not None:
                    store.put(label, name, b, x_hat, sec, r["nfe"], r["steps"])
            else:
                x_hat, sec, r["nfe"], r["steps"] = held
                resumed += 1
            score_batch(r, x_hat, xb, lpips)
            r["sec"] += sec / x.shape[0]
        r["out"] = torch.cat(r["out"])
        res[name] = r
        extra = f"  LPIPS {mean_std(r['lpips'])[0]:.3f}" if lpips else ""
        extra += f"  ({resumed} batch(es) read back from {store.folder})" if resumed else ""
        log(
            f"[{now()[11:19]}] {label:<24} {name:<20} PSNR {mean_std(r['psnr'])[0]:6.2f}{extra}  {r['sec']:.2f} s/img"
        )
    return res


def pool_means(
    res: dict, x, batch: int, label: str, own: BatchStore, pools: list[BatchStore], lpips: bool = False
) -> dict:
    """``res`` with each posterior-mean row ``<m>-mean<K>/<prior>`` joined by a row
    ``<m>-mean<K (1 + P)>/<prior>``: the average of this run's stored mean of K and the means of K
    that the P ``pools`` (finished ``--resume`` stores of the same run with other seeds) hold for
    the same batches, i.e. the Monte-Carlo mean of K (1 + P) independent samples.

    Its seconds add up over the stores (NFE stays one sample's). A batch missing from a store is an
    error: a pooled row is over the same slices or not made.
    """
    import re

    import torch

    stores = [own, *pools]
    out = {}
    for name, r in res.items():
        out[name] = r
        k = re.search(r"-mean(\d+)/", name)
        if k is None:
            continue
        pooled_name = name.replace(k.group(0), f"-mean{int(k.group(1)) * len(stores)}/")
        p = empty_row(lpips)
        for b, lo in enumerate(range(0, x.shape[0], batch)):
            xb = x[lo : lo + batch]
            held = [s.get(label, name, b, xb.shape) for s in stores]
            missing = [str(s.folder) for s, h in zip(stores, held) if h is None]
            if missing:
                raise SystemExit(f"error: --pool: {', '.join(missing)} lacks batch {b} of {label} {name}")
            score_batch(p, torch.stack([h[0] for h in held]).mean(0), xb, lpips)
            p["sec"] += sum(h[1] for h in held) / x.shape[0]
            p["nfe"], p["steps"] = held[0][2], held[0][3]
        p["out"] = torch.cat(p["out"])
        out[pooled_name] = p
        log(f"[{now()[11:19]}] {label:<24} {pooled_name:<20} PSNR {mean_std(p['psnr'])[0]:6.2f}  (pooled)")
    return out


def projected_rows(res: dict, x, y, op, iters: int, label: str = "", lpips: bool = False) -> dict:
    """``res`` with each row ``<m>[/<prior>]`` followed by ``<m>+proj[/<prior>]``: its clamped
    outputs after ``iters`` rounds of :func:`diffinv.operators.project_feasible` onto
    ``{A x = y} ∩ [0, 1]^n`` (noiseless ``y`` only: that set then holds the true image), scored as
    the other rows; its seconds add the projection's to the row's."""
    import torch

    from diffinv.pipeline import project_measured

    out = {}
    for name, r in res.items():
        out[name] = r
        method, slash, prior = name.partition("/")
        p = empty_row(lpips)
        x_proj, seconds = project_measured(r["out"], y, op, iters)
        p["sec"] = r["sec"] + seconds / x.shape[0]
        score_batch(p, x_proj, x, lpips)
        p["out"], p["nfe"], p["steps"] = torch.cat(p["out"]), r["nfe"], r["steps"]
        out[f"{method}+proj{slash}{prior}"] = p
        log(f"[{now()[11:19]}] {label:<24} {method + '+proj':<20} PSNR {mean_std(p['psnr'])[0]:6.2f}")
    return out


def method_table(res: dict) -> list[str]:
    """Markdown rows: method, steps, PSNR, SSIM (, LPIPS), s/image, NFE, each mean ± std over images."""
    lpips = all("lpips" in r for r in res.values())
    cols = ["method", "steps/iters", "PSNR (dB)", "SSIM"] + (["LPIPS"] if lpips else []) + ["s/image", "NFE"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m, r in res.items():
        cells = [
            m,
            "-" if r["steps"] is None else str(r["steps"]),
            fmt(r["psnr"], ".2f"),
            fmt(r["ssim"], ".3f"),
        ]
        cells += [fmt(r["lpips"], ".3f")] if lpips else []
        lines.append("| " + " | ".join(cells + [f"{r['sec']:.3f}", str(r["nfe"])]) + " |")
    return lines


def summary_table(results: dict, key: str, spec: str, label) -> list[str]:
    """Markdown rows: one per setting (``label(setting)``), one column per method, mean ``key``."""
    methods = list(dict.fromkeys(m for res in results.values() for m in res))
    lines = ["| setting | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for setting, res in results.items():
        cells = [f"{mean_std(res[m][key])[0]:{spec}}" if m in res else "–" for m in methods]
        lines.append(f"| {label(setting)} | " + " | ".join(cells) + " |")
    return lines


def figure_row(x, res: dict, k: int, name: str, measurement=None, truth: str = "truth") -> list:
    """One row of :func:`diffinv.viz.comparison_figure`: the ground truth (label ``truth``, caption
    ``name``), an optional ``(label, image, caption)`` measurement, then every method's output for
    image ``k`` with its PSNR."""
    from diffinv import metrics as M

    row = [(truth, x[k : k + 1], name)] + ([measurement] if measurement else [])
    for m, r in res.items():
        out = r["out"][k : k + 1]
        row.append((m, out, f"{float(M.psnr(out, x[k : k + 1])):.2f} dB"))
    return row


def target_line(
    label: str,
    a: str,
    va: float,
    b: str,
    vb: float,
    need: float,
    spec=".2f",
    unit=" dB",
    lower_is_better: bool = False,
) -> str:
    """``- label: a va vs b vb, margin ... (need ...): **met**/**missed**``; the margin is how much
    better ``a`` is than ``b`` (a beat must be strict when ``need`` is 0)."""
    margin = (vb - va) if lower_is_better else (va - vb)
    ok = margin > need if need == 0 else margin >= need
    return (
        f"- {label}: {a} {va:{spec}} vs {b} {vb:{spec}}, margin {margin:+{spec}}{unit} "
        f"(need {'>' if need == 0 else '>='} {need:+{spec}}): **{'met' if ok else 'missed'}**"
    )
