"""Imports inside lmresearch/ run one way, down the layers, and form no cycle.

Every import is read with `ast`, at module level and inside functions alike (a lazy import is
still a dependency). A module belongs to the layer of its top-level name under lmresearch/.
"""
import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, 'lmresearch')

# Lowest first. A module may import its own layer or a lower one, never a higher one.
LAYERS = (
    ('errors', 'fileio', 'answers'),                  # plain Python: no lmresearch imports
    ('models', 'tokenizers', 'hf_tokenizer', 'parallel', 'config'),   # model, text <-> ids, mesh, configs
    ('data',),                                        # sources, formats, packing, the world
    ('training', 'sampling', 'generation'),           # the one trainer; the KV-cache sampler
    ('stages',),                                      # what each stage optimizes
    ('runs',),                                        # a trained run loaded for use (builds a stage's model)
    ('evaluation',),                                  # tasks, prompting, the pipeline's measurements
    ('serving',),                                     # engine, label store, web app, OpenAI API
    ('launch', 'runtime', 'main', 'pipeline', 'sample', 'evaluate', 'convert',   # CLIs, glue
     'sweeps', 'sweep', 'docs', 'serve', 'label'),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

# Known upward edges, each to be deleted when fixed. Keep this list short and say why.
ALLOWED = set()   # (module, imported module) pairs allowed to go up: none today


def _modules() -> dict:
  """'lmresearch.a.b' -> path, for every .py file in the package."""
  out = {}
  for dirpath, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
        if rel[-1] == '__init__':
          rel = rel[:-1]
        out['.'.join(rel)] = os.path.join(dirpath, f)
  return out


def _imports(path: str, module: str, modules) -> set:
  """The lmresearch modules `module` imports, anywhere in its file."""
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  package = module if path.endswith('__init__.py') else module.rsplit('.', 1)[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')
        base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      names = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in modules:   # `import lmresearch.a.b as x` names a module already
        name = name.rpartition('.')[0]
      if name.startswith('lmresearch.') and name != module:
        found.add(name)
  return found


def _layer(module: str) -> int:
  top = module.split('.')[1]
  assert top in LAYER, f'{module}: put lmresearch/{top} in a layer of tests/test_layers.py'
  return LAYER[top]


def _graph() -> dict:
  modules = _modules()
  return {m: _imports(p, m, modules) for m, p in modules.items() if m != 'lmresearch'}


def test_no_module_imports_a_higher_layer():
  upward = sorted(f'{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})'
                  for m, targets in _graph().items() for t in targets
                  if _layer(t) > _layer(m) and (m, t) not in ALLOWED)
  assert not upward, 'imports go up the layers:\n  ' + '\n  '.join(upward)


def test_the_allowed_upward_imports_still_exist():
  """An allow-list entry that no longer occurs must be deleted, so the list only shrinks."""
  graph = _graph()
  stale = [edge for edge in ALLOWED if edge[1] not in graph.get(edge[0], ())]
  assert not stale, f'delete these from ALLOWED in tests/test_layers.py: {stale}'


def test_no_import_cycle():
  graph = _graph()
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = 'open'
    stack.append(m)
    for t in sorted(graph.get(m, ())):
      if (m, t) in ALLOWED:
        continue
      if state.get(t) == 'open':
        cycles.append(stack[stack.index(t):] + [t])
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m)
  assert not cycles, 'import cycles:\n  ' + '\n  '.join(' -> '.join(c) for c in cycles)
