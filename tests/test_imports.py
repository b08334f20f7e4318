"""The package's import graph: no cycle, and every import points down the declared layers.

Every `.py` under `pipeline/`, `transforms/` and `schemas/` is parsed (not imported); every
`import` statement counts, those inside functions and under `if TYPE_CHECKING:` included, so
neither a lazy import nor an annotation-only one can hide a cycle or an upward dependency (the
extractor config and registry once formed a loop that only a `TYPE_CHECKING` import closed).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "transforms", "pipeline")

#: Lowest first. A module belongs to the longest prefix that names it; it may import modules of
#: its own unit and of lower layers only, not a sibling unit of its own layer (outside `SEAMS`).
#: The order of the transforms stages is the one their imports have (`transforms/__init__.py`):
#: the plumbing and the extractors import no stage; ingest the plumbing; features read the image
#: store and decode; matching reads the features store and the extractors' registry and writes
#: through the image store's parts; selection (the audit) and overlap verify with matching's
#: `verify_pair` and read the features store, and neither imports the other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("schemas",),
    ("transforms.plumbing", "transforms.features.extractors"),
    ("transforms.ingest",),
    ("transforms.features",),
    ("transforms.matching",),
    ("transforms.selection", "transforms.overlap"),
    ("pipeline.runner",),
    ("pipeline.curation", "pipeline.baselines", "pipeline.report", "pipeline.demo", "pipeline.review"),
    ("pipeline.cli",),
)

#: The documented seams between units (see each subpackage's docstring): importer -> imported.
SEAMS = {
    # the feature step computes the audit's perceptual hash and mean descriptor on its pixels
    ("transforms.features.stage", "transforms.selection.audit_signatures"),
    # adaptive verification reads the selection rule: which pairs can change no decision
    ("transforms.matching.rounds", "transforms.selection.select"),
    ("pipeline.curation.curate", "pipeline.report.page"),  # report.html at the end of a curation
    ("pipeline.curation.overlap", "pipeline.report.page"),  # report.html after gld overlap
    ("pipeline.demo.run", "pipeline.curation.config"),  # gld demo runs a curation
    ("pipeline.demo.run", "pipeline.curation.curate"),
    ("pipeline.report.page", "pipeline.review.queues"),  # the report counts and links the review's items
    ("pipeline.review.app", "pipeline.curation.run_folder"),  # gld review reads finished runs only
    ("pipeline.review.pictures", "pipeline.report.images"),  # thumbnails and drawn matches, as the report's
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The project modules one import statement loads."""
    found = set()
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    else:
        return found
    for name in names:
        while name and name not in modules:  # `import a.b.c` of a name inside a module: its module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def _is_type_checking(node: ast.AST) -> bool:
    """An `if TYPE_CHECKING:` (or `if typing.TYPE_CHECKING:`) block."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` but those under `if TYPE_CHECKING:` (annotations only, never run):
    what a module loads when it runs (`_third_party`)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def import_graph(type_checking: bool = True) -> dict[str, set[str]]:
    """module -> the project modules it imports: anywhere in its body, inside functions and, unless
    `type_checking` is False, under `if TYPE_CHECKING:`."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree) if type_checking else _runtime_nodes(tree):
            edges |= _imported(node, name, is_package, set(modules))
        graph[name] = edges - {name}
    return graph


def _unit(module: str) -> tuple[int, str] | None:
    """(layer, unit prefix) of a module; None for the `pipeline` package itself."""
    best = None
    for level, units in enumerate(LAYERS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best[1])):
                best = (level, unit)
    return best


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up the layers, or across to a sibling unit outside the seams."""
    bad = []
    for module, targets in sorted(graph.items()):
        source = _unit(module)
        for target in sorted(targets):
            dest = _unit(target)
            if source is None or dest is None or source[1] == dest[1] or dest[0] < source[0]:
                continue
            if (module, target) not in SEAMS:
                bad.append(f"{module} -> {target}")
    return bad


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "pipeline.curation.curate" in graph["pipeline.cli.main"]  # imported inside curate_main
    assert "pipeline.runner" in graph["pipeline.curation.curate"]


def test_graph_sees_type_checking_imports():
    extractors = "transforms.features.extractors"
    graph, runtime = import_graph(), import_graph(type_checking=False)
    assert f"{extractors}.delf" in graph[f"{extractors}.registry"]  # inside a function
    assert f"{extractors}.config" in graph[f"{extractors}.sift"]  # annotations only
    assert f"{extractors}.config" not in runtime[f"{extractors}.sift"]


def test_every_module_has_a_layer():
    """Only the two top packages have none: `transforms/` holds no module outside a stage."""
    assert sorted(m for m in import_graph() if _unit(m) is None) == ["pipeline", "transforms"]


def test_no_import_cycle():
    assert find_cycles(import_graph()) == []


def test_imports_point_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_every_seam_is_used():
    graph = import_graph()
    assert [seam for seam in sorted(SEAMS) if seam[1] not in graph.get(seam[0], set())] == []


def test_the_extractor_config_imports_no_extractor():
    """The config holds the extractors' defaults and the registry checks names
    (`check_extractor`). Were the config to import the registry again (which imports the
    extractors, which name the config in their annotations), the cycle check would fail."""
    extractors = "transforms.features.extractors"
    graph = import_graph()
    assert {m for m in graph[f"{extractors}.config"] if m.startswith("transforms")} == set()
    graph[f"{extractors}.config"].add(f"{extractors}.registry")
    loop = ["config", "delf", "learned", "registry", "sift"]  # every extractor the registry imports
    assert find_cycles(graph) == [[f"{extractors}.{name}" for name in loop]]


def test_checks_catch_a_cycle_and_an_upward_import():
    graph = {
        "transforms.matching.a": {"transforms.matching.b"},
        "transforms.matching.b": {"transforms.matching.a", "pipeline.runner"},
    }
    assert find_cycles(graph) == [["transforms.matching.a", "transforms.matching.b"]]
    assert upward_imports(graph) == ["transforms.matching.b -> pipeline.runner"]
    assert upward_imports({"pipeline.report.page": {"pipeline.curation.config"}}) == [
        "pipeline.report.page -> pipeline.curation.config"
    ]


def test_checks_catch_imports_across_the_transforms_stages():
    graph = {
        "transforms.plumbing.store": {"transforms.ingest.image_store", "transforms.features.extractors.base"},
        "transforms.features.extractors.sift": {"transforms.plumbing.threads", "transforms.features.stage"},
        "transforms.ingest.decode": {"transforms.plumbing.routing", "transforms.features.global_descriptor"},
        "transforms.matching.verify": {"transforms.ingest.image_store", "transforms.selection.audit"},
        "transforms.selection.audit": {"transforms.overlap.stage", "transforms.matching.verify"},
        "transforms.overlap.stage": {"transforms.selection.select", "transforms.features.feature_store"},
    }
    assert upward_imports(graph) == [
        "transforms.features.extractors.sift -> transforms.features.stage",
        "transforms.features.extractors.sift -> transforms.plumbing.threads",
        "transforms.ingest.decode -> transforms.features.global_descriptor",
        "transforms.matching.verify -> transforms.selection.audit",
        "transforms.overlap.stage -> transforms.selection.select",
        "transforms.plumbing.store -> transforms.features.extractors.base",
        "transforms.plumbing.store -> transforms.ingest.image_store",
        "transforms.selection.audit -> transforms.overlap.stage",
    ]


def _third_party(path: Path) -> set[str]:
    """Top-level names of what a module imports outside the standard library and the project."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - set(PACKAGES)


def test_schemas_are_plain_data():
    """Records and table schemas need numpy and pyarrow only: no decoder, model or runner, so
    a record never carries a decoded image or a cache and `schemas` loads anywhere."""
    modules = _modules()
    used = {name: _third_party(path) for name, path in modules.items() if name.split(".")[0] == "schemas"}
    assert {name: extra - {"numpy", "pyarrow"} for name, extra in used.items() if extra - {"numpy", "pyarrow"}} == {}
