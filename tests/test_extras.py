"""Dependencies by use: the core package runs check, test, diff, run, explain and stream without the
extras (DuckDB, matplotlib, the Excel libraries, Dask), and a command that needs a missing extra says
which one to install (exit 2) before it does any work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

import pytest

from .conftest import ROOT, kam_here

EXTRA_MODULES = {"duckdb", "matplotlib", "xlsxwriter", "python_calamine", "dask", "distributed", "bokeh"}

# the command line with every extra's module refused on import, as in an install of the core alone
CORE_ONLY = f"""
import sys

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(EXTRA_MODULES)!r}:
            raise ImportError(f"{{name}} is not in the core install")
        return None

sys.meta_path.insert(0, _Refuse())
from engine.surfaces.cli import main
main(sys.argv[1:], prog_name="kam")
"""


def _core(*args: str, cwd=ROOT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CORE_ONLY, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, input=stdin)


def test_the_core_runs_every_command_of_the_light_install(tmp_path):
    base = tmp_path / "base"
    shutil.copytree(ROOT / "policies", base)
    r = _core("check", "policies", "--strict")
    assert r.returncode == 0, r.stderr
    r = _core("test", "policies", "--min-coverage", "100")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _core("run", "--out", str(tmp_path / "out"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "customer_decisions.csv").exists()
    r = _core("explain", "000123")
    assert r.returncode == 0 and "customer 000123" in r.stdout, r.stderr
    r = _core("diff", "policies", "--base", str(base))
    assert r.returncode == 0, r.stderr
    r = _core("run", "--entity", "customer", "--out", str(tmp_path / "out2"), "--quiet",
              "--save-calibration", str(tmp_path / "cal.json"))
    assert r.returncode == 0, r.stderr
    r = _core("stream", "--calibration", str(tmp_path / "cal.json"), "--initial", "examples/customers.csv",
              stdin='{"customer_id": "000123", "profit": -5000}\n')
    assert r.returncode == 0 and "1 events applied" in r.stderr, r.stderr


def test_the_refusal_is_real(tmp_path):
    """The core-only runner refuses the extras: a command that needs one fails under it."""
    r = _core("run", "--out", str(tmp_path / "out"), "--output-format", "xlsx")
    assert r.returncode == 2 and "pip install 'kam[excel]'" in r.stderr, r.stderr


@pytest.mark.parametrize("module, args, extra", [
    ("xlsxwriter", ["run", "--output-format", "xlsx"], "excel"),
    ("duckdb", ["run", "--history", "{tmp}/h.duckdb", "--period", "2026-11"], "history"),
    ("matplotlib", ["run", "--report", "{tmp}/r.html"], "report"),
    ("matplotlib", ["report", "-o", "{tmp}/r.html"], "report"),
    ("python_calamine", ["run", "--input", "customer={tmp}/c.xlsx"], "excel"),
    ("dask.distributed", ["run", "--engine", "dask"], "dask"),
])
def test_a_missing_extra_is_named_before_any_work(tmp_path, monkeypatch, module, args, extra):
    (tmp_path / "c.xlsx").write_bytes(b"PK\x03\x04")  # never opened: the reader is missing
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    out = tmp_path / "out"
    r = kam_here(*[a.format(tmp=tmp_path) for a in args], "--out", str(out)) if args[0] == "run" else \
        kam_here(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2, r.stderr
    assert f"pip install 'kam[{extra}]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists() and not (tmp_path / "r.html").exists() and not (tmp_path / "h.duckdb").exists()


def test_the_history_commands_name_their_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    for args in (["history", "000123", "--history", str(tmp_path / "h.duckdb")],
                 ["changes", "--history", str(tmp_path / "h.duckdb")],
                 ["explain", "000123", "--history", str(tmp_path / "h.duckdb")]):
        (tmp_path / "h.duckdb").write_bytes(b"")
        r = kam_here(*args)
        assert r.returncode == 2 and "pip install 'kam[history]'" in r.stderr, (args, r.stderr)


def test_the_extras_cover_what_the_core_leaves_out():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = " ".join(project["dependencies"]).lower()
    extras = project["optional-dependencies"]
    for name in ("duckdb", "matplotlib", "xlsxwriter", "python-calamine", "dask", "starlette", "uvicorn"):
        assert name not in core, f"{name} is a dependency of the core"
        assert any(name in " ".join(reqs).lower() for reqs in extras.values()), f"no extra brings {name}"
    assert extras["all"] == ["kam[history,report,excel,dask,studio]"]
    assert "kam[all]" in extras["test"]


def test_kam_studio_names_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "starlette", None)
    r = kam_here("studio", "--no-browser")
    assert r.returncode == 2 and "pip install 'kam[studio]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
