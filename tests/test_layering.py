"""The layering holds (docs/ARCHITECTURE.md): torch-free layers stay torch-free, the engine never imports a
face, and no module imports another module's underscore names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tinker_nb"

TORCH_FREE = ["tinker_nb", "tinker_nb.security", "tinker_nb.ledger", "tinker_nb.tgsp", "tinker_nb.storage",
              "tinker_nb.privacy", "tinker_nb.accounting", "tinker_nb.run_record", "tinker_nb.workspace",
              "tinker_nb.types", "tinker_nb.config", "tinker_nb.records", "tinker_nb.cli"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_layers_do_not_import_torch(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'opacus')); "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"importing {module} imported {out.stdout.strip()[:300]} {out.stderr[-500:]}"


def test_cli_verify_path_does_not_import_torch(tmp_path):
    code = ("import sys; from tinker_nb.cli import main\n"
            "rc = main(['verify', 'missing.tgsp', '--trust', 'missing.pub'])\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch']\n"
            "sys.exit(3 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-1000:]


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out.append((name, ast.parse(p.read_text(), filename=str(p))))
    return out


def _resolve(mod: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = mod.split(".")
    base = parts if is_pkg else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, tree: ast.Module, is_pkg: bool):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node, is_pkg)
            for alias in node.names:
                yield target, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def test_engine_never_imports_a_face():
    faces = ("tinker_nb.notebook", "tinker_nb.server", "tinker_nb.remote", "tinker_nb.cli")
    for name, tree in _modules():
        if not name.startswith("tinker_nb.engine"):
            continue
        is_pkg = (PKG.parent / name.replace(".", "/") / "__init__.py").exists()
        for target, _ in _imports(name, tree, is_pkg):
            assert not target.startswith(faces), f"{name} imports {target}"


def test_torch_free_layers_never_import_the_engine():
    lower = ("tinker_nb.security", "tinker_nb.ledger", "tinker_nb.storage", "tinker_nb.privacy",
             "tinker_nb.accounting", "tinker_nb.run_record", "tinker_nb.workspace", "tinker_nb.types")
    for name, tree in _modules():
        if not any(name == p or name.startswith(p + ".") for p in lower):
            continue
        is_pkg = (PKG.parent / name.replace(".", "/") / "__init__.py").exists()
        for target, _ in _imports(name, tree, is_pkg):
            assert not target.startswith(("tinker_nb.engine", "tinker_nb.client", "tinker_nb.notebook",
                                          "tinker_nb.server")), f"{name} imports {target}"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, tree in _modules():
        is_pkg = (PKG.parent / name.replace(".", "/") / "__init__.py").exists()
        for target, alias in _imports(name, tree, is_pkg):
            if not target.startswith("tinker_nb") or alias is None:
                continue
            if alias.startswith("_") and not alias.startswith("__") and target != name:
                offenders.append(f"{name}: from {target} import {alias}")
    assert not offenders, "\n".join(offenders)
