"""The documentation names only what exists: README.md and docs/*.md.

* every relative link points to a file or folder of the repository (README: every link does,
  none leaves the repository);
* every source path a document names in backticks (`derive/bea/slow_manifold.py`,
  `numerics/`) exists, and a bare file name (`series.py`) is the name of a file in the tree;
* every dotted name in backticks that starts with ``nmech`` (`nmech.derive.symbols.exact_values`),
  with a class of the code (`SymmetryDynamics.exact_at`) or with a module of the code
  (`latex.display`) resolves by import; names of other libraries and of local variables
  (`torch.func.grad`, `me.field`) are not the code's and are left alone;
* in a table row with a cell that is one source file or folder alone, every plain name or call
  in backticks (`gradient_at`, `predict(dynamics, ...)`) is defined in that file or folder.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [ROOT / "README.md", *DOCS]
#: Top-level folders of source (paths under them are checked) and their import names.
PACKAGES = {
    "derive": "nmech.derive",
    "numerics": "nmech.numerics",
    "validation": "nmech.validation",
    "benchmarks": "nmech.benchmarks",
    "nmech": "nmech",
}
SOURCE_TOPS = (*PACKAGES, "tests", "docs", "scripts")
#: Names of files a document may mention that a run writes (not files of the repository).
FILE_SUFFIXES = (".md", ".json", ".h5", ".tex", ".png", ".pdf", ".pt", ".py", ".toml", ".txt")

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?$")
CALL_OR_NAME = re.compile(r"^([A-Za-z_]\w*)(?:\(.*\))?$")
SOURCE_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)*/?$")


@cache
def _file_names() -> frozenset[str]:
    """Names of the files in the tree (hidden folders such as .venv and .git left out)."""
    names = set()
    for _folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        names.update(files)
    return frozenset(names)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code_spans(text: str) -> list[str]:
    """Backticked spans outside fenced code blocks (the examples are tested elsewhere)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return [s.strip() for s in CODE.findall(prose)]


@cache
def _sources() -> list[Path]:
    return sorted(
        p for top in PACKAGES for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts
    )


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join([PACKAGES[parts[0]], *parts[1:]]).removesuffix(".__init__")


@cache
def _index() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """class name -> modules defining it; module basename -> modules with that basename."""
    classes: dict[str, set[str]] = {}
    modules: dict[str, set[str]] = {}
    for path in _sources():
        name = _module_name(path)
        modules.setdefault(name.rsplit(".", 1)[-1], set()).add(name)
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, set()).add(name)
    return classes, modules


def _has(obj: object, attr: str) -> bool:
    if hasattr(obj, attr):
        return True
    if dataclasses.is_dataclass(obj) and attr in {f.name for f in dataclasses.fields(obj)}:
        return True
    return attr in getattr(obj, "__annotations__", {}) or attr in getattr(obj, "_fields", ())


def _resolve(obj: object, attrs: list[str]) -> bool:
    for attr in attrs:
        if isinstance(obj, type(importlib)) and not hasattr(obj, attr):
            try:  # a submodule not imported by its package
                obj = importlib.import_module(f"{obj.__name__}.{attr}")
                continue
            except ImportError:
                return False
        if not _has(obj, attr):
            return False
        obj = getattr(obj, attr, None)
        if obj is None:  # a field without a class-level value: nothing further to check
            return attr == attrs[-1]
    return True


def _resolves_in_module(module: str, attrs: list[str]) -> bool:
    try:
        return _resolve(importlib.import_module(module), attrs)
    except ImportError:
        return False


def _dotted_ok(name: str) -> bool | None:
    """True/False for a dotted name of the code; None when it is not the code's."""
    head, *rest = name.split(".")
    classes, modules = _index()
    if head == "nmech":
        for cut in range(len(rest), -1, -1):
            module = ".".join(["nmech", *rest[:cut]])
            try:
                importlib.import_module(module)
            except ImportError:
                continue
            return _resolves_in_module(module, rest[cut:])
        return False
    if head in classes:
        return any(_resolves_in_module(m, [head, *rest]) for m in classes[head])
    if head in modules:
        return any(_resolves_in_module(m, rest) for m in modules[head])
    return None


def _defined_names(path: Path) -> set[str]:
    """Names bound at the top level of a file, and the methods and fields of its classes."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _doc_params() -> list:
    return [pytest.param(p, id=_rel(p)) for p in DOCUMENTS]


@pytest.mark.parametrize("doc", _doc_params())
def test_relative_links_point_into_the_repository(doc: Path):
    text = doc.read_text(encoding="utf-8")
    bad = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("#"):
            if doc.name == "README.md":
                bad.append(f"{target} (the README links only to files of the repository)")
            continue
        resolved = (doc.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(ROOT):
            bad.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            bad.append(f"{target} (no such file)")
    assert not bad, f"{_rel(doc)}: " + "; ".join(bad)


def test_readme_links_the_documents():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = set(LINK.findall(text))
    for name in ("architecture.md", "math.md", "records.md", "extending.md"):
        assert f"docs/{name}" in targets, name


@pytest.mark.parametrize("doc", _doc_params())
def test_named_source_paths_exist(doc: Path):
    files = _file_names()
    missing = []
    for span in _code_spans(doc.read_text(encoding="utf-8")):
        if not SOURCE_PATH.match(span):
            continue
        if "/" in span:
            if span.split("/", 1)[0] in SOURCE_TOPS and not (ROOT / span).exists():
                missing.append(span)
        elif span.endswith(".py") and span not in files:
            missing.append(span)
    assert not missing, f"{_rel(doc)} names files that do not exist: {', '.join(missing)}"


@pytest.mark.parametrize("doc", _doc_params())
def test_named_modules_functions_and_attributes_exist(doc: Path):
    missing = []
    for span in _code_spans(doc.read_text(encoding="utf-8")):
        if span.endswith(FILE_SUFFIXES) or "/" in span:
            continue
        match = DOTTED.match(span)
        if match and _dotted_ok(match.group(1)) is False:
            missing.append(span)
    assert not missing, f"{_rel(doc)} names what the code lacks: {', '.join(missing)}"


@pytest.mark.parametrize("doc", _doc_params())
def test_table_rows_name_what_their_file_defines(doc: Path):
    """A table cell that is one source path alone (`derive/algebra/series.py`) makes the other
    cells of its row a list of what that file or folder defines."""
    missing = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        alone = [
            c[1:-1]
            for c in cells
            if re.fullmatch(r"`[^`]+`", c)
            and SOURCE_PATH.match(c[1:-1])
            and c[1:-1].split("/", 1)[0] in PACKAGES
        ]
        if len(alone) != 1:
            continue
        where = ROOT / alone[0]
        assert where.exists(), f"{_rel(doc)}: no {alone[0]}"
        files = [where] if where.is_file() else sorted(where.rglob("*.py"))
        defined = set().union(*(_defined_names(f) for f in files)) | {f.stem for f in files}
        for cell in cells:
            for span in CODE.findall(cell):
                match = CALL_OR_NAME.match(span.replace("\\|", "|"))
                if span != alone[0] and match and match.group(1) not in defined:
                    missing.append(f"{match.group(1)} ({alone[0]})")
    assert not missing, f"{_rel(doc)} table rows name what their file lacks: {', '.join(missing)}"


def test_the_checks_catch_a_wrong_name():
    """The resolvers are real checks: names that do not exist are reported."""
    assert _dotted_ok("nmech.derive.symbols.exact_values") is True
    assert _dotted_ok("nmech.derive.symbols.no_such_function") is False
    assert _dotted_ok("nmech.no_such_module.f") is False
    assert _dotted_ok("SymmetryDynamics.exact_at") is True
    assert _dotted_ok("SymmetryDynamics.no_such_method") is False
    assert _dotted_ok("latex.display") is True
    assert _dotted_ok("torch.func.grad") is None
    assert "gradient_at" in _defined_names(ROOT / "derive/algebra/series.py")
