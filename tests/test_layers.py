"""Imports inside lmresearch/ run one way, down the layers, and form no cycle.

Every import is read with `ast`, at module level and inside functions alike (a lazy import is
still a dependency). A module's layer is its folder under lmresearch/: the folders' order is
declared below, and every module directly in lmresearch/ is an entry point (`python -m
lmresearch.<verb>`) or their runtime, the top layer. A new folder must be placed in the order.
"""
import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, 'lmresearch')

# Folders, lowest first. A module may import its own layer or a lower one, never a higher one.
LAYERS = (
    ('core',),                   # errors, paths (fileio), the mesh and its logical axis rules
    ('models', 'text'),          # the network and its families; tokenizers, chat templates, answers
    ('data',),                   # sources, formats, packing, the embedded world and its labeler
    ('training', 'generation'),  # the config, the one trainer; the sampler, stops, the engine
    ('stages',),                 # what each stage optimizes; a trained run loaded for use
    ('evals',),                  # tasks, prompting, the pipeline's measurements, lm-eval
    ('studies', 'web'),          # experiments as sweeps, verdicts, rendering; the server's apps
)
ENTRY = len(LAYERS)              # lmresearch/<verb>.py and runtime.py
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
FOLDERS = {d for d in os.listdir(PACKAGE) if os.path.isdir(os.path.join(PACKAGE, d))
           and os.path.exists(os.path.join(PACKAGE, d, '__init__.py'))}

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
  parts = module.split('.')
  if len(parts) == 2 and parts[1] not in FOLDERS:
    return ENTRY
  assert parts[1] in LAYER, f'{module}: put lmresearch/{parts[1]}/ in LAYERS of tests/test_layers.py'
  return LAYER[parts[1]]


def test_every_folder_has_a_layer_and_the_top_level_holds_only_entry_points():
  assert FOLDERS == set(LAYER), (sorted(FOLDERS ^ set(LAYER)), 'LAYERS names the folders')
  top = sorted(f[:-3] for f in os.listdir(PACKAGE) if f.endswith('.py') and f != '__init__.py')
  entry = [m for m in top if m != 'runtime']
  for m in entry:   # an entry point runs as `python -m lmresearch.<verb>`
    text = open(os.path.join(PACKAGE, m + '.py'), encoding='utf-8').read()
    assert "if __name__ == '__main__':" in text, f'lmresearch/{m}.py is not an entry point: ' \
        'library code belongs in a folder'


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
