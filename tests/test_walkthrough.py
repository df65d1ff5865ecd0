"""walkthrough.md keeps its promises to the reader of microgpt.py.

- Every ```python block in walkthrough.md is a verbatim excerpt of microgpt.py: a contiguous run
  of whole lines, indentation included. Only trailing whitespace on each line and blank lines at
  the start and end of a block are ignored.
- Every `# %% <Title>` section of microgpt.py has a heading in walkthrough.md, in the file's
  order. The rule: take the part of the title before any ':' (so '# %% Run: the lesson from
  start to end' gives 'Run'); the first markdown heading that contains it as a whole word,
  ignoring case, is that section's heading. Every section needs one, and their positions must
  increase in the order of the file's sections.
- walkthrough.md has a ```mermaid flowchart.
- Every >>> example of its ```pycon blocks gives the output shown, run by the standard library's
  doctest against the real default trained model: the file is run once, as `python3 microgpt.py`
  would run it, and all blocks then run in document order in the namespace it leaves (as a
  notebook or `python3 -i microgpt.py` would hold it), so a block can use what an earlier one
  defined. They run in an empty temporary folder, so an example may write files.
- The default run's output quoted in the walkthrough is that run's (timings aside). (Its
  figures, drawn from the same run, are checked by test_figures.py.)

Run from the repo root: python3 -m unittest discover -s tests -p 'test_walkthrough.py' -v
"""
import doctest
import os
import re
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lesson_run import default_run  # noqa: E402

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


def run_examples(markdown, globs, filename='walkthrough.md'):
    """Run the >>> examples of every ```pycon block of `markdown` with doctest, in document order,
    all in the one namespace `globs`. Returns doctest's report of each example whose output
    differs from the one shown (or that raises unexpectedly), naming its line in `markdown`; an
    empty list means that all pass.
    """
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(verbose=False)
    reports = []
    for language, start, body in scan_markdown(markdown)[0]:
        if language != 'pycon':
            continue
        # The fence is on line `start`, so line k (from 0) of the body is line start + 1 + k,
        # and doctest reports an example on body line k as line `start` + k + 1.
        test = parser.get_doctest('\n'.join(body) + '\n', globs, f'the block at line {start}',
                                  filename, start)
        if not test.examples:
            reports.append(f'File "{filename}", line {start}: a ```pycon block with no >>> example\n')
        test.globs = globs   # one namespace for all blocks (get_doctest gave the test a copy)
        runner.run(test, out=reports.append, clear_globs=False)
    return reports


def quoted_run(markdown):
    """The lines of the ```text block that starts with `$ python3 microgpt.py`, that line left out."""
    for language, _, body in scan_markdown(markdown)[0]:
        if language == 'text' and body and body[0].strip() == '$ python3 microgpt.py':
            return body[1:]
    return None


def without_timings(lines):
    """Output lines with the machine-dependent times replaced by 'N'."""
    lines = [re.sub(r'eta \d+ s', 'eta N s', line.rstrip()) for line in lines]
    return [re.sub(r'training took [\d.]+ s', 'training took N s', line) for line in lines]


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


class ExamplesTest(unittest.TestCase):
    """The walkthrough's >>> examples and its quoted run, against a real run."""

    @classmethod
    def setUpClass(cls):
        cls.markdown = read(WALKTHROUGH_PATH)
        cls.namespace, cls.output = default_run()

    def test_pycon_examples_give_the_output_shown(self):
        self.assertIn('>>> ', self.markdown, "walkthrough.md has no >>> example")
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            try:
                reports = run_examples(self.markdown, dict(self.namespace))
            finally:
                os.chdir(cwd)
        if reports:
            self.fail(f"{len(reports)} example(s) in walkthrough.md fail:\n" + ''.join(reports))

    def test_the_quoted_run_is_the_real_one(self):
        quoted = quoted_run(self.markdown)
        self.assertIsNotNone(quoted, "walkthrough.md quotes no ```text block of `$ python3 microgpt.py`")
        self.assertEqual(without_timings(normalise(quoted)),
                         without_timings(normalise(self.output.splitlines())))
        # and the report line, quoted again on its own where the numbers are explained
        report = [line for line in self.output.splitlines() if line.startswith('train loss ')]
        for language, start, body in scan_markdown(self.markdown)[0]:
            for line in body:
                if language == 'text' and line.startswith('train loss '):
                    self.assertEqual([line.rstrip()], report, f"the report quoted at line {start}")


MODEL_FUNCTIONS = ('rmsnorm', 'attention', 'mlp', 'gpt', 'cross_entropy', 'document_loss',
                   'train', 'evaluate', 'generate', 'print_samples')


SPEED_TALK = re.compile(r'pypy|\bgc\b|collect|\d\s*%|percent', re.I)


def lesson_part(code):
    """The lines of the lesson's sections: from `# %% Settings` up to `# %% Plumbing`."""
    lines = code.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith('# %% Settings'))
    stop = next(i for i, l in enumerate(lines) if l.startswith('# %% Plumbing'))
    return lines[start:stop]


def private_reads(code, names):
    """(function, attribute) for each attribute starting with '_' that a named function reads."""
    import ast
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            found += [(node.name, a.attr) for a in ast.walk(node)
                      if isinstance(a, ast.Attribute) and a.attr.startswith('_')]
    return found


class LessonReadsLikeTheAlgorithmTest(unittest.TestCase):
    """The lesson's sections carry no line for one interpreter, its collector or a measured
    speed-up, and the model's functions use only the public face of Value (.data, .grad, the
    operations): speed ideas live in the engine, where the lesson explains them once."""

    def test_no_interpreter_collector_or_percentage_in_the_lesson(self):
        offending = [l for l in lesson_part(read(CODE_PATH)) if SPEED_TALK.search(l)]
        self.assertEqual(offending, [])

    def test_model_functions_read_no_private_attribute(self):
        self.assertEqual(private_reads(read(CODE_PATH), MODEL_FUNCTIONS), [])

    def test_the_checks_can_fail(self):
        code = "def gpt(x):\n    return x._children\n\ndef other(x):\n    return x._data\n"
        self.assertEqual(private_reads(code, MODEL_FUNCTIONS), [('gpt', '_children')])
        part = lesson_part("# %% Settings\nx = 1   # 9% faster on PyPy\n# %% Plumbing\ngc.disable()\n")
        self.assertEqual(part, ['# %% Settings', 'x = 1   # 9% faster on PyPy'])
        self.assertEqual([bool(SPEED_TALK.search(l)) for l in part], [False, True])


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

    def test_examples_share_one_namespace_and_pass(self):
        md = "# Alpha\n\n```pycon\n>>> x = 2\n```\n\ntext\n\n```pycon\n>>> x * 3\n6\n>>> print('a')\na\n```\n"
        self.assertEqual(run_examples(md, {}), [])

    def test_a_wrong_example_is_reported_with_its_line(self):
        md = ("# Alpha\n\n```pycon\n>>> 1 + 1\n2\n```\n\n"   # passes
              "```python\n>>> 1 + 1\n5\n```\n\n"              # not pycon: not run
              "```pycon\n>>> x = 1\n>>> x + 1\n3\n```\n")      # fails: line 15
        reports = run_examples(md, {})
        self.assertEqual(len(reports), 1)
        self.assertIn('File "walkthrough.md", line 15', reports[0])
        self.assertIn('Expected:\n    3\nGot:\n    2', reports[0])

    def test_an_unexpected_exception_and_an_empty_block_are_reported(self):
        md = "```pycon\n>>> 1 / 0\n```\n```pycon\nno prompt here\n```\n"
        reports = run_examples(md, {})
        self.assertEqual(len(reports), 2)
        self.assertIn('line 2', reports[0])
        self.assertIn('ZeroDivisionError', reports[0])
        self.assertIn('line 4: a ```pycon block with no >>> example', reports[1])

    def test_the_quoted_run_is_found(self):
        md = "```text\n$ python3 microgpt.py\nstep 1 | eta 12 s\ntraining took 9.2 s\n```\n"
        self.assertEqual(without_timings(quoted_run(md)), ['step 1 | eta N s', 'training took N s'])


if __name__ == '__main__':
    unittest.main()
