"""The rules of the house, read from the imports themselves: no import loop, configs are data, the schedule is a
function of them, and what views a model never needs the trainer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "progan"


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE.parent) -> set[str]:
    """The progan modules a file imports, anywhere in it (function-level imports count: they are loops too)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def find_loop(graph: dict[str, set[str]]) -> list[str]:
    """One import loop as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (loop := visit(nxt, path + [nxt])):
                return loop
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (loop := visit(node, [node])):
            return loop
    return []


def test_no_import_loop(graph):
    loop = find_loop(graph)
    assert not loop, "import loop: " + " -> ".join(loop)


def test_configs_are_data_and_the_schedule_a_function_of_them(graph):
    assert graph["progan.config"] == set()
    assert graph["progan.schedule"] <= {"progan.config", "progan.lod"}
    assert graph["progan.lod"] <= {"progan.config"}
    assert graph["progan.seeds"] == set()


def test_viewers_never_import_the_trainer(graph):
    for name, imported in graph.items():
        if name.startswith(("progan.generate", "progan.metrics", "progan.studio", "progan.model_io",
                            "progan.conditioning.rows", "progan.conditioning.spec")):
            trainer = sorted(m for m in imported if m.startswith("progan.train"))
            assert not trainer, f"{name} imports {trainer}"


def test_only_the_encoder_imports_sentence_transformers():
    users = [p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py")
             if "sentence_transformers" in p.read_text()]
    assert users == ["progan/conditioning/encoder.py"]


def test_the_check_sees_a_loop(tmp_path):
    """The loop finder itself: two modules importing each other are reported."""
    pkg = tmp_path / "progan"
    pkg.mkdir()
    (pkg / "a.py").write_text("from progan.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from progan import a\n")
    modules = {"progan.a", "progan.b"}
    assert imports_of(pkg / "a.py", modules, tmp_path) == {"progan.b"}
    assert imports_of(pkg / "b.py", modules, tmp_path) == {"progan.a"}
    assert find_loop({"progan.a": {"progan.b"}, "progan.b": {"progan.a"}}) == ["progan.a", "progan.b", "progan.a"]
    assert find_loop({"progan.a": {"progan.b"}, "progan.b": set()}) == []
