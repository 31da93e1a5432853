"""The package's layering: licq.config and licq.quant at the bottom, nothing importing upward."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "licq"
SUBPACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())


def licq_imports(path: Path) -> set[str]:
    """Every ``licq.*`` module a file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("licq"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("licq"):
            out.add(node.module)
    return out


def test_licq_imports_finds_function_level_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import licq.quant\ndef f():\n    from licq.qat.quantizers import x\n")
    assert licq_imports(f) == {"licq.quant", "licq.qat.quantizers"}


@pytest.mark.parametrize("path", sorted((SRC / "quant").glob("*.py")), ids=lambda p: p.name)
def test_quant_imports_nothing_above_it(path):
    allowed = ("licq.quant", "licq.config", "licq.errors")
    upward = sorted(m for m in licq_imports(path) if not m.startswith(allowed))
    assert not upward, f"licq/quant/{path.name} imports {upward}"


def test_config_imports_nothing_from_licq():
    assert licq_imports(SRC / "config.py") == set()


def _loaded_after_import(module: str) -> subprocess.Popen:
    code = (f"import sys, {module}; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('licq'))))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_every_subpackage_imports_in_isolation_and_quant_loads_only_the_bottom():
    """Each subpackage imported first in a fresh interpreter (an import cycle fails there);
    ``licq.quant`` loads nothing of licq but config, errors and itself."""
    procs = {name: _loaded_after_import(f"licq.{name}") for name in SUBPACKAGES}
    loaded = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"import licq.{name} failed:\n{err[-2000:]}"
        loaded[name] = set(out.split())
    assert "quant" in loaded and "qat" in loaded and "export" in loaded
    bottom = {"licq", "licq._warnings", "licq.config", "licq.errors"}
    above = sorted(m for m in loaded["quant"] if m not in bottom and not m.startswith("licq.quant"))
    assert not above, f"import licq.quant loaded {above}"
