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
