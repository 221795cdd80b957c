"""The public API: documented, importable as the README shows, and free of torch where the
design says so."""

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nmech

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nmech", "nmech.derive", "nmech.numerics", "nmech.validation", "nmech.benchmarks")


def _modules() -> list[str]:
    names = set()
    for top in PACKAGES:
        package = importlib.import_module(top)
        names.add(top)
        names.update(i.name for i in pkgutil.walk_packages(package.__path__, top + "."))
    return sorted(n for n in names if not n.endswith("__main__"))


def _undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = [] if module.__doc__ else [module_name]
    for attr, obj in vars(module).items():
        if attr.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not obj.__doc__:
            missing.append(f"{module_name}.{attr}")
        if inspect.isclass(obj):
            for name, member in vars(obj).items():
                if isinstance(member, property):
                    member = member.fget
                elif isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                member = getattr(member, "func", member)  # functools.cached_property
                if not name.startswith("_") and inspect.isfunction(member) and not member.__doc__:
                    missing.append(f"{module_name}.{attr}.{name}")
    return missing


def test_every_public_function_class_and_method_has_a_docstring():
    missing = [m for name in _modules() for m in _undocumented(name)]
    assert not missing, "no docstring: " + ", ".join(missing)


def test_readme_imports_resolve():
    """Every ``from nmech... import ...`` line of the README's Python examples works."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    lines = [line.strip() for b in blocks for line in b.splitlines()]
    imports = [line for line in lines if re.match(r"(from|import) nmech", line)]
    assert imports
    for line in imports:
        exec(line, {})  # noqa: S102 -- the README's own import lines


@pytest.mark.parametrize("package", ["nmech.derive", "nmech.numerics", "nmech.cli"])
def test_symbolic_side_does_not_import_torch(package):
    code = f"import sys, {package}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_exports_resolve_and_package_is_typed():
    for top in ("nmech.derive", "nmech.numerics"):
        module = importlib.import_module(top)
        for name in module.__all__:
            assert getattr(module, name) is not None
    assert (Path(nmech.__file__).parent / "py.typed").is_file()
