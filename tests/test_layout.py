"""The package's import structure: no cycles (counting imports inside functions), and every
import pointing down the layers docs/layout.md draws."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "resnets"

# lower imports nothing higher; modules of one layer may import each other
LAYERS = [
    # "" is the package's own __init__ (lazy: imports nothing)
    ["errors", "_io", "_lazy", "_device", "_precision", "_options", "download", "results", "scoring", ""],
    ["models"],
    ["weights"],
    ["factory", "pretrained"],
    ["data"],
    ["train"],
    ["transfer", "deploy", "interpret"],
    ["studies"],
    ["cli", "__main__"],
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = PACKAGE / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, at the top or inside functions
    (imports under ``if TYPE_CHECKING:`` never run and are left out)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {id(n) for top in ast.walk(tree) if _type_checking_only(top) for n in ast.walk(top) if n is not top}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "resnets"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "resnets":
                continue
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if _is_module(candidate) else source)
    return {m for m in found if m != name}


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} is in no layer; add its folder to LAYERS and to the drawing in docs/layout.md")


def test_the_graph_is_read_and_sees_imports_inside_functions():
    graph = _graph()
    assert "resnets.factory" in graph["resnets.train.engine"]
    # deferred imports count: the server is imported inside the serve command
    assert "resnets.deploy.server" in graph["resnets.cli"]


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_imports_point_down_the_layers():
    wrong = [f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
             for module, targets in sorted(_graph().items()) for target in sorted(targets)
             if _layer(target) > _layer(module)]
    assert not wrong, "\n".join(wrong)


def test_training_never_imports_fine_tuning():
    graph = _graph()
    assert not [(m, t) for m, targets in graph.items() if m.startswith("resnets.train")
                for t in targets if t.startswith("resnets.transfer")]


# what runs a trained network (inference, export, serving, explanations, embeddings) needs nothing of training
INFERENCE = ("resnets.deploy", "resnets.interpret", "resnets.transfer.features", "resnets.pretrained",
             "resnets.scoring", "resnets._precision")


def test_inference_never_imports_the_training_package():
    graph = _graph()
    assert any(m.startswith("resnets.deploy.") for m in graph)
    wrong = [(m, t) for m, targets in sorted(graph.items()) if m.startswith(INFERENCE)
             for t in sorted(targets) if t == "resnets.train" or t.startswith("resnets.train.")]
    assert not wrong, wrong
