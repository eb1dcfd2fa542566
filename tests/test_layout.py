"""The package layout: no import circles between san_ext's modules, studies apart from speed benchmarks."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'san_ext'


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split('.') if is_package else module.split('.')[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> san_ext modules it imports anywhere in its body (function-level imports included). Imports of a
    package's ``__init__`` are left out: the lazy top-level ``san_ext`` re-exports would make every module a cycle."""
    files = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == '__init__.py'
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module) if node.level else node.module or ''
                targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in files else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and not files[t].name == '__init__.py' and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None (iterative DFS with colours)."""
    colour = dict.fromkeys(graph, 0)
    for root in graph:
        if colour[root]:
            continue
        stack, path = [(root, iter(sorted(graph[root])))], [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[child] == 1:
                return path[path.index(child):] + [child]
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_san_ext_has_no_import_cycles():
    graph = import_graph()
    assert 'san_ext.data.sources' in graph and 'san_ext.studies.digits_report' in graph  # the graph sees them
    assert find_cycle(graph) is None


@pytest.mark.parametrize('study', ['toy', 'dot', 'digits'])
def test_bench_aliases_are_the_study_modules(study):
    old = importlib.import_module(f'san_ext.bench.{study}')
    assert old is importlib.import_module(f'san_ext.studies.{study}')


def test_bench_alias_runs_the_study_cli_with_a_warning():
    res = subprocess.run([sys.executable, '-m', 'san_ext.bench.toy', '--help'], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert 'python -m san_ext.studies.toy' in res.stderr and '--optimizers' in res.stdout


def test_speed_benchmarks_import_no_study():
    graph = import_graph()
    bench = [m for m in graph if m.startswith('san_ext.bench.') and not m.startswith('san_ext.bench._alias')]
    aliases = {'san_ext.bench.toy', 'san_ext.bench.dot', 'san_ext.bench.digits'}
    for module in set(bench) - aliases:
        assert not {t for t in graph[module] if t.startswith('san_ext.studies')}, module


# -- floors: lower rooms never reach up --------------------------------------------------------------------------------
# The package's floors, bottom to top; each imports only floors below it (and itself), never by string. The root
# (its lazy re-exports) and san-patch (apart: no torch) stand outside them.
FLOORS = {
    'ground': ('san_ext.layers', 'san_ext.losses', 'san_ext.diagnostics', 'san_ext.penalties', 'san_ext.critic_score',
               'san_ext.dist', 'san_ext.images', 'san_ext.files', 'san_ext.data'),
    'above': ('san_ext.convert', 'san_ext.networks', 'san_ext.metrics', 'san_ext.checkpoint', 'san_ext.dot',
              'san_ext.legacy'),
    'training': ('san_ext.training',),
    'top': ('san_ext.bench', 'san_ext.studies'),
}
APART = ('san_ext', 'san_ext.patching')


def _within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(f'{r}.') for r in roots)


def _targets(name: str, is_package: bool, node: ast.AST) -> list[str]:
    """The modules (and imported names) that ``node`` imports, or the module a string constant names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _resolve(name, is_package, node.level, node.module) if node.level else node.module or ''
        return [base, *(f'{base}.{a.name}' for a in node.names)]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value.startswith('san_ext.') and ' ' not in node.value else []
    return []


def upward_imports(lower: tuple[str, ...], upper: tuple[str, ...]) -> set[tuple[str, str]]:
    """(module, target) for every import, by name or by a string naming a module (importlib, registries), from a
    module under ``lower`` to one under ``upper``. Unlike :func:`import_graph` this keeps imports of packages
    (``from san_ext import training``), and follows none: each lower module is read itself."""
    files = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    found = set()
    for name, path in files.items():
        if not _within(name, lower):
            continue
        is_package = path.name == '__init__.py'
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            found |= {(name, t) for t in _targets(name, is_package, node) if _within(t, upper)}
    return found


def floor_violations() -> set[tuple[str, str]]:
    """Every (module, target) where a floor imports a floor above it."""
    floors = list(FLOORS.values())
    return set().union(*(upward_imports(low, sum(floors[i + 1:], ())) for i, low in enumerate(floors[:-1])))


def test_upward_imports_finds_planted_ones(tmp_path, monkeypatch):
    pkg = tmp_path / 'san_ext'
    (pkg / 'dot').mkdir(parents=True)
    (pkg / 'dot' / 'x.py').write_text('from san_ext.training import loss\nimport san_ext.bench.ops\n'
                                      'NAME = "san_ext.studies.toy"\nfrom ..training.config import LossConfig\n')
    (pkg / 'images.py').write_text('from san_ext import networks\nimport san_ext.metrics.features\n'
                                   'from .dot import x\nfrom . import dist\n')
    monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', pkg)
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    assert floor_violations() == {('san_ext.dot.x', t) for t in (
        'san_ext.training', 'san_ext.training.loss', 'san_ext.bench.ops', 'san_ext.studies.toy',
        'san_ext.training.config', 'san_ext.training.config.LossConfig')} | {('san_ext.images', t) for t in (
        'san_ext.networks', 'san_ext.metrics.features', 'san_ext.dot', 'san_ext.dot.x')}


def test_every_module_stands_on_a_floor():
    modules = {_module_name(p) for p in PACKAGE.rglob('*.py')}
    placed = sum(FLOORS.values(), ())
    assert {'san_ext.dist', 'san_ext.images', 'san_ext.files', 'san_ext.data.sampler'} <= modules
    assert not [m for m in modules if not _within(m, placed) and m not in APART and not _within(m, APART[1:])]


def test_no_module_imports_a_higher_floor_by_name_or_by_string():
    assert 'san_ext.dot.loading' in {_module_name(p) for p in PACKAGE.rglob('*.py')}
    assert floor_violations() == set()


# -- siblings that always ship together are imported unconditionally -------------------------------------------------
CLIS = ('train.py', 'calc_metrics.py', 'gen_images.py', 'dataset_tool.py')


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return handler.type is None or any(isinstance(n, (ast.Name, ast.Attribute)) and
                                       (n.id if isinstance(n, ast.Name) else n.attr) in
                                       ('ImportError', 'ModuleNotFoundError', 'Exception', 'BaseException')
                                       for n in names)


def guarded_sibling_imports(paths: list[Path]) -> list[str]:
    """``path:line`` of every import of our own code (``san_ext``, ``torch_utils`` or relative) inside a ``try``
    whose handlers catch ImportError: a sibling that ships in the same package is never optional."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if not isinstance(node, ast.Try) or not any(_catches_import_error(h) for h in node.handlers):
                continue
            for inner in (n for stmt in node.body for n in ast.walk(stmt)):
                if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or '').split('.')[0] in (
                        'san_ext', 'torch_utils')):
                    found.append(f'{path.name}:{inner.lineno}')
                elif isinstance(inner, ast.Import) and any(a.name.split('.')[0] in ('san_ext', 'torch_utils')
                                                           for a in inner.names):
                    found.append(f'{path.name}:{inner.lineno}')
    return found


def test_guarded_sibling_imports_finds_planted_ones(tmp_path):
    (tmp_path / 'a.py').write_text('try:\n    from san_ext.checkpoint import load_generator\nexcept ImportError:\n'
                                   '    pass\ntry:\n    import timm\nexcept ImportError:\n    pass\n')
    (tmp_path / 'b.py').write_text('def f():\n    try:\n        import san_ext.metrics as m\n        from . import x\n'
                                   '    except (ValueError, ModuleNotFoundError):\n        return None\n')
    assert guarded_sibling_imports([tmp_path / 'a.py', tmp_path / 'b.py']) == ['a.py:2', 'b.py:3', 'b.py:4']


def test_siblings_that_ship_together_are_imported_unconditionally():
    paths = [*PACKAGE.rglob('*.py'), *(ROOT / 'torch_utils').rglob('*.py'), *(ROOT / c for c in CLIS)]
    assert guarded_sibling_imports(paths) == []


# -- links to docs -----------------------------------------------------------------------------------------------------
# A Markdown file named in code, docstrings or docs (anything under docs/ or reference/, and any NAME.md in capitals)
# must exist in this repository. Lower-case names (table.md, DIR/gpu_check.md) are files the tools write. csrc/ is left
# out: a comment there changes the extension's build hash, so its one old reference waits for the next kernel change.
_MD_LINK = re.compile(r'(?<![\w./-])((?:docs|reference)/[\w./-]+\.md|(?:[\w.-]+/)*[A-Z][A-Z0-9_]*\.md)\b')


def dead_doc_links(root: Path, skip: tuple[Path, ...] = ()) -> list[str]:
    """``file:line: link`` for every Markdown path named in ``root``'s Python, Markdown and CLI files (but ``skip``)
    that does not exist beside the file, under ``root`` or under ``root/docs``."""
    files = [*root.glob('*.py'), *root.glob('*.md'), *(p for d in ('san_ext', 'torch_utils', 'tests', 'docs',
                                                                  'patches') for p in (root / d).rglob('*')
                                                     if p.suffix in ('.py', '.md'))]
    dead = []
    for path in (p for p in files if p.resolve() not in skip):
        for lineno, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
            for link in _MD_LINK.findall(line):
                if not any((base / link).is_file() for base in (path.parent, root, root / 'docs')):
                    dead.append(f'{path.relative_to(root)}:{lineno}: {link}')
    return dead


def test_dead_doc_links_finds_planted_ones(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'LOSSES.md').write_text('see [SAN](SAN.md) and README.md\n')
    (tmp_path / 'README.md').write_text('[losses](docs/LOSSES.md), [metrics](docs/METRICS.md)\n')
    (tmp_path / 'x.py').write_text('"""As in reference/stylegan_xl.md and DESIGN.md; writes table.md."""\n')
    assert sorted(dead_doc_links(tmp_path)) == ['README.md:1: docs/METRICS.md', 'docs/LOSSES.md:1: SAN.md',
                                                'x.py:1: DESIGN.md', 'x.py:1: reference/stylegan_xl.md']


def test_links_to_docs_point_at_files_in_the_repository():
    assert dead_doc_links(ROOT, skip=(Path(__file__).resolve(),)) == []  # this file names dead links on purpose
