"""walkthrough.md keeps its promises to the reader of microgpt.py.

- Every ```python block in walkthrough.md is a verbatim excerpt of microgpt.py: a contiguous run
  of whole lines, indentation included. Only trailing whitespace on each line and blank lines at
  the start and end of a block are ignored.
- Every `# %% <Title>` section of microgpt.py has a heading in walkthrough.md, in the file's
  order. The rule: take the part of the title before any ':' (so '# %% Run: the lesson from
  start to end' gives 'Run'); the first markdown heading that contains it as a whole word,
  ignoring case, is that section's heading. Every section needs one, and their positions must
  increase in the order of the file's sections.
- walkthrough.md has a ```mermaid flowchart and a ```mermaid xychart.

Run from the repo root: python3 -m unittest discover -s tests -p 'test_walkthrough.py' -v
"""
import os
import re
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

CODE_PATH = os.path.join(ROOT, 'microgpt.py')
WALKTHROUGH_PATH = os.path.join(ROOT, 'walkthrough.md')

FENCE = re.compile(r'^\s*(`{3,}|~{3,})\s*([^`\s]*)')
HEADING = re.compile(r'^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$')
SECTION = re.compile(r'^# %% (.+?)\s*$')


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def scan_markdown(text):
    """Split markdown into fenced blocks and the heading lines outside them.

    Returns (blocks, headings): blocks is a list of (language, first line number, lines of the
    block's body); headings is a list of (line number, heading text). Line numbers count from 1.
    A fence closes on a line of the same character, at least as long, with nothing after it.
    """
    blocks, headings = [], []
    fence = None   # (marker, language, start line, body lines) while inside a fence
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            m = FENCE.match(line)
            if m:
                fence = (m.group(1), m.group(2).lower(), number, [])
                continue
            h = HEADING.match(line)
            if h:
                headings.append((number, h.group(1)))
        else:
            marker, language, start, body = fence
            stripped = line.strip()
            if (stripped and stripped[0] == marker[0] and len(stripped) >= len(marker)
                    and set(stripped) == {marker[0]}):
                blocks.append((language, start, body))
                fence = None
            else:
                body.append(line)
    if fence is not None:   # an unclosed fence runs to the end of the document
        blocks.append((fence[1], fence[2], fence[3]))
    return blocks, headings


def normalise(lines):
    """Drop trailing whitespace on each line and blank lines at both ends."""
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stale_excerpts(markdown, code):
    """The ```python blocks of `markdown` that are not a run of whole lines of `code`.

    Returns (line number of the block's fence, first line of the block) for each, in order.
    """
    code_text = '\n' + '\n'.join(normalise(code.splitlines())) + '\n'
    stale = []
    blocks, _ = scan_markdown(markdown)
    for language, start, body in blocks:
        if language != 'python':
            continue
        lines = normalise(body)
        if not lines:
            stale.append((start, '(empty block)'))
        elif '\n' + '\n'.join(lines) + '\n' not in code_text:
            stale.append((start, lines[0]))
    return stale


def file_sections(code):
    """The titles of the `# %% <Title>` lines of the code, in order."""
    return [m.group(1) for m in map(SECTION.match, code.splitlines()) if m]


def section_problems(markdown, code):
    """Sections of `code` whose heading is missing from `markdown` or out of order."""
    _, headings = scan_markdown(markdown)
    problems = []
    previous = None   # (title, line number) of the last section's heading
    for title in file_sections(code):
        key = title.split(':')[0].strip()
        pattern = re.compile(r'(?<!\w)' + re.escape(key) + r'(?!\w)', re.IGNORECASE)
        found = next(((number, text) for number, text in headings if pattern.search(text)), None)
        if found is None:
            problems.append(f"section '# %% {title}' has no heading containing {key!r}")
            continue
        if previous is not None and found[0] <= previous[1]:
            problems.append(f"section '# %% {title}': its heading {found[1]!r} (line {found[0]}) "
                            f"comes before the heading of the previous section "
                            f"'{previous[0]}' (line {previous[1]}); headings must follow the "
                            f"file's order")
        previous = (title, found[0])
    return problems


def mermaid_blocks(markdown):
    blocks, _ = scan_markdown(markdown)
    return ['\n'.join(body) for language, _, body in blocks if language == 'mermaid']


class WalkthroughTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.code = read(CODE_PATH)
        cls.markdown = read(WALKTHROUGH_PATH)

    def test_python_excerpts_are_verbatim(self):
        blocks = [b for b in scan_markdown(self.markdown)[0] if b[0] == 'python']
        self.assertTrue(blocks, "walkthrough.md quotes no ```python excerpt of microgpt.py")
        stale = stale_excerpts(self.markdown, self.code)
        if stale:
            line, first = stale[0]
            self.fail(f"{len(stale)} ```python excerpt(s) in walkthrough.md are not verbatim runs "
                      f"of whole lines of microgpt.py; the first, at line {line}, starts with: "
                      f"{first!r}")

    def test_every_section_has_a_heading_in_order(self):
        self.assertTrue(file_sections(self.code), "microgpt.py has no '# %% <Title>' sections")
        problems = section_problems(self.markdown, self.code)
        if problems:
            self.fail('\n'.join(problems))

    def test_mermaid_pictures(self):
        blocks = mermaid_blocks(self.markdown)
        self.assertTrue(any('flowchart' in b for b in blocks),
                        "walkthrough.md has no ```mermaid block with a flowchart")
        self.assertTrue(any('xychart' in b for b in blocks),
                        "walkthrough.md has no ```mermaid block with an xychart (the loss curve)")


class CheckerSelfTest(unittest.TestCase):
    """The checks above can fail: they are run on small texts made up here."""

    CODE = ("# %% Alpha\n"
            "def f(x):\n"
            "    y = x + 1    \n"
            "    return y\n"
            "\n"
            "# %% Beta: more\n"
            "def g():\n"
            "    return 2\n")

    def test_verbatim_excerpts_pass(self):
        md = ("# Alpha\n\n```python\n\ndef f(x):\n    y = x + 1\n    return y\n\n```\n\n"
              "# Beta\n\n```python\n    return 2\n```\n")
        self.assertEqual(stale_excerpts(md, self.CODE), [])

    def test_a_line_not_in_the_code_is_reported(self):
        md = ("# Alpha\n\n```python\ndef f(x):\n    y = x + 2\n    return y\n```\n\n"
              "```python\ndef g():\n```\n")
        self.assertEqual(stale_excerpts(md, self.CODE), [(3, 'def f(x):')])

    def test_partial_lines_reindented_lines_and_gaps_are_reported(self):
        md = ("```python\n    y = x\n```\n"                      # part of a line
              "```python\ny = x + 1\n```\n"                      # indentation lost
              "```python\ndef f(x):\n    return y\n```\n"        # lines not contiguous
              "```python\n\n```\n")                              # quotes nothing
        self.assertEqual([first for _, first in stale_excerpts(md, self.CODE)],
                         ['    y = x', 'y = x + 1', 'def f(x):', '(empty block)'])

    def test_only_python_fences_are_checked(self):
        md = "```text\nnot code\n```\n```pycon\n>>> 1 + 1\n```\n```console\n$ ls\n```\n"
        self.assertEqual(stale_excerpts(md, self.CODE), [])

    def test_sections_in_order_pass(self):
        md = "# Intro\n\n## 1. alpha\n\n```text\n# Beta inside a fence is no heading\n```\n## 2. BETA\n"
        self.assertEqual(section_problems(md, self.CODE), [])

    def test_missing_and_misordered_sections_are_reported(self):
        missing = section_problems("## Alpha\n\n```text\n## Beta\n```\n", self.CODE)
        self.assertEqual(len(missing), 1)
        self.assertIn("'# %% Beta: more' has no heading containing 'Beta'", missing[0])
        misordered = section_problems("## Beta\n\n## Alpha\n", self.CODE)
        self.assertEqual(len(misordered), 1)
        self.assertIn("'# %% Beta: more': its heading 'Beta' (line 1)", misordered[0])
        self.assertIn("must follow the file's order", misordered[0])
        # a whole word only: 'Alphabet' does not name section 'Alpha'
        self.assertEqual(len(section_problems("## Alphabet\n\n## Beta\n", self.CODE)), 1)

    def test_mermaid_blocks_are_found(self):
        md = "```mermaid\nflowchart TD\n    a --> b\n```\n```text\nxychart-beta\n```\n"
        blocks = mermaid_blocks(md)
        self.assertEqual(blocks, ['flowchart TD\n    a --> b'])
        self.assertFalse(any('xychart' in b for b in blocks))


if __name__ == '__main__':
    unittest.main()
