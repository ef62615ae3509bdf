"""The docs site builds with `mkdocs build --strict` (a broken link, a missing page or a page
outside the nav fails), and the README stays a first page: at most 250 lines, every docs page
linked from it."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip('mkdocs', reason='mkdocs-material is a test extra: pip install -e .[test]')


def _build(config: str, site: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, NO_MKDOCS_2_WARNING='1')
  return subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-f', config,
                         '--site-dir', site], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, env=env)


def test_the_site_builds_strictly(tmp_path):
  out = _build(os.path.join(ROOT, 'mkdocs.yml'), str(tmp_path / 'site'))
  assert out.returncode == 0, out.stdout + out.stderr
  assert (tmp_path / 'site' / 'pipeline' / 'index.html').exists()


def test_a_broken_link_fails_the_build(tmp_path):
  """The strictness is real: the same site with one link to a page that does not exist fails."""
  docs = tmp_path / 'docs'
  shutil.copytree(os.path.join(ROOT, 'docs'), docs)
  (docs / 'lora.md').write_text((docs / 'lora.md').read_text() + '\nSee [the missing page](nope.md).\n')
  config = open(os.path.join(ROOT, 'mkdocs.yml')).read().replace('docs_dir: docs', f'docs_dir: {docs}')
  (tmp_path / 'mkdocs.yml').write_text(config)
  out = _build(str(tmp_path / 'mkdocs.yml'), str(tmp_path / 'site'))
  assert out.returncode != 0 and 'nope.md' in out.stdout + out.stderr


def test_the_readme_is_short_and_links_every_page():
  text = open(os.path.join(ROOT, 'README.md')).read()
  assert text.count('\n') <= 250, f'README.md has {text.count(chr(10))} lines: move detail to docs/'
  pages = {f for f in os.listdir(os.path.join(ROOT, 'docs')) if f.endswith('.md')} - {'index.md'}
  linked = set(re.findall(r'\]\(docs/([\w-]+\.md)', text))
  assert pages <= linked, f'pages the README does not link: {sorted(pages - linked)}'
