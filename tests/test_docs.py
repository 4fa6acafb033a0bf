"""The docs a learner reads: every relative link resolves (its file, and its #anchor to a heading there), and
every `python SCRIPT --setting` the docs show is a real script whose --help lists that setting."""
import functools
import re
import subprocess
import sys

import pytest

from conftest import ROOT

DOCS = [ROOT / 'README.md', ROOT / 'exercises' / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped but - and _, spaces to -."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path):
    text = re.sub(r'```.*?```', '', path.read_text(encoding='utf-8'), flags=re.S)
    return {slug(h) for h in re.findall(r'^#+ (.*)$', text, re.M)}


def links(path):
    text = re.sub(r'```.*?```', '', path.read_text(encoding='utf-8'), flags=re.S)
    return [t for t in re.findall(r'\]\(([^)\s]+)\)', text) if not re.match(r'[a-z]+:', t)]


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert links(doc) or doc.name != 'README.md'
    for target in links(doc):
        file, _, anchor = target.partition('#')
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: {target} (no such file)"
        if anchor:
            assert anchor in anchors(path), f"{doc.name}: {target} (no such heading in {path.name})"


def commands(doc):
    """(script, settings) of each `python SCRIPT ...` in the doc's code blocks and inline code."""
    text = doc.read_text(encoding='utf-8')
    spans = re.findall(r'```(?:bash|sh)?\n(.*?)```', text, re.S) + re.findall(r'`([^`\n]+)`', text)
    found = []
    for span in spans:
        for line in span.splitlines():
            m = re.match(r'\s*python (\S+\.py)(.*)', line.split('#')[0])
            if m and not re.search(r'(^|/)[A-Z]+\.py$', m.group(1)):  # not a placeholder: exercises/NAME.py
                found.append((m.group(1), re.findall(r'(--[a-z_]+)', m.group(2))))
    return found


@functools.cache
def help_text(script):
    result = subprocess.run([sys.executable, str(ROOT / script), '--help'], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"python {script} --help: {result.stderr}"
    return result.stdout


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_is_a_real_script_and_setting(doc):
    shown = commands(doc)
    assert shown or doc.parent.name == 'docs'
    for script, settings in shown:
        assert (ROOT / script).is_file(), f"{doc.name}: python {script} (no such script)"
        for setting in settings:
            assert setting == '--help' or re.search(rf'{setting}\b', help_text(script)), \
                f"{doc.name}: python {script} {setting} (not in its --help)"
