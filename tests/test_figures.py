"""scripts/figures.py draws the trained model, and figures/ holds what it draws now.

- Each committed figure is, byte for byte, what the script draws from the default run.
- Each is an SVG a browser shows alike on a light or dark page: it parses as XML, has a <title>,
  a viewBox, an opaque background filling it, and no text under 11 px.
- walkthrough.md embeds every figure, with alt text.
- The numbers drawn are the model's, found here independently of the drawing code: attention
  weights from gpt()'s cache, next-token odds from the logits, principal components checked as
  such, the computation graph's gradients worked out by hand.
- The script, given a checkpoint, writes the same files twice, and they are the committed ones;
  a learner's own model, of another size or built from a notebook's own cells, draws too.

Run from the repo root: python3 -m unittest discover -s tests -p 'test_figures.py' -v
"""
import ast
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import types
import unittest
import xml.etree.ElementTree as ET
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import figures  # noqa: E402
import microgpt  # noqa: E402
from lesson_run import default_run  # noqa: E402

FIGURES = ('training_curve', 'attention', 'embeddings', 'next_letter', 'graph')
SVG_NS = '{http://www.w3.org/2000/svg}'


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def texts(svg_text):
    """Every <text> of an SVG document, as (its string, its attributes), in document order."""
    root = ET.fromstring(svg_text)
    return [(t.text or '', t.attrib) for t in root.iter(SVG_NS + 'text')]


class CommittedFiguresTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ns, _ = default_run()
        cls.drawn = figures.draw_all(cls.ns)

    def test_each_committed_figure_is_what_the_script_draws_now(self):
        self.assertEqual(sorted(self.drawn), sorted(FIGURES))
        for name in FIGURES:
            with self.subTest(figure=name):
                self.assertEqual(read(os.path.join(ROOT, 'figures', name + '.svg')), self.drawn[name],
                                 f"figures/{name}.svg is stale: run python3 scripts/figures.py")

    def test_every_figure_reads_anywhere(self):
        for name in FIGURES:
            with self.subTest(figure=name):
                root = ET.fromstring(read(os.path.join(ROOT, 'figures', name + '.svg')))
                self.assertEqual(root.tag, SVG_NS + 'svg')
                title = root.find(SVG_NS + 'title')
                self.assertTrue(title is not None and len(title.text) > 10)
                _, _, width, height = map(float, root.attrib['viewBox'].split())
                background = root.find(SVG_NS + 'rect')   # the first shape: painted under the rest
                self.assertEqual((background.attrib['fill'], float(background.attrib['width']),
                                  float(background.attrib['height'])), ('#ffffff', width, height))
                sizes = [float(a.get('font-size', root.attrib['font-size']))
                         for _, a in texts(read(os.path.join(ROOT, 'figures', name + '.svg')))]
                self.assertGreater(len(sizes), 5)
                self.assertGreaterEqual(min(sizes + [float(root.attrib['font-size'])]), 11)

    def test_the_walkthrough_embeds_each_figure_with_alt_text(self):
        embedded = dict((name, alt) for alt, name in
                        re.findall(r'!\[([^\]]*)\]\(figures/(\w+)\.svg\)', read(os.path.join(ROOT, 'walkthrough.md'))))
        self.assertEqual(sorted(embedded), sorted(FIGURES))
        for name, alt in embedded.items():
            self.assertGreater(len(alt), 40, f"the alt text of {name} says too little")

    def test_the_attention_cells_are_the_models_weights(self):
        # The weights read back from gpt()'s cache here, as the walkthrough does, against the
        # numbers written in the cells, head by head, row by row (a cell for each key up to the
        # query: the future has none).
        ns = self.ns
        tokens = [ns['tokenizer'].bos] + ns['tokenizer'].encode('emma')
        kv_cache = [([], [], []) for _ in range(ns['config'].n_layer)]
        for pos, token in enumerate(tokens):
            ns['gpt'](token, pos, kv_cache, ns['state_dict'], ns['config'])
        weights = kv_cache[0][2]
        # Each cell by where it stands: its head's panel, its row (the query), its column (the key).
        cells = [(float(a['x']), float(a['y']), s) for s, a in texts(self.drawn['attention'])
                 if re.fullmatch(r'\d\.\d\d', s)]
        self.assertEqual(len(cells), 4 * (1 + 2 + 3 + 4 + 5))
        xs = sorted({x for x, _, _ in cells})
        ys = sorted({y for _, y, _ in cells})
        self.assertEqual((len(xs), len(ys)), (4 * 5, 5))
        for x, y, shown in cells:
            head, key, query = xs.index(x) // 5, xs.index(x) % 5, ys.index(y)
            self.assertLessEqual(key, query)   # the future has no number
            self.assertEqual(shown, f'{weights[query * 4 + head][key].data:.2f}')
        alt = re.search(r'!\[([^\]]*)\]\(figures/attention\.svg\)', read(os.path.join(ROOT, 'walkthrough.md'))).group(1)
        for number in re.findall(r'\d\.\d\d', alt):   # the alt text's numbers are the figure's
            self.assertIn(number, [shown for _, _, shown in cells])

    def test_the_bars_are_the_models_odds(self):
        # After "em": softmax of the logits divided by T, worked out here from gpt()'s logits.
        # Each bar's height, over the tallest bar's, is its probability over the largest.
        ns = self.ns
        tok = ns['tokenizer']
        tokens = [tok.bos] + tok.encode('em')
        kv_cache = [([], [], []) for _ in range(ns['config'].n_layer)]
        for pos, token in enumerate(tokens):
            logits = [v.data for v in ns['gpt'](token, pos, kv_cache, ns['state_dict'], ns['config'])]
        odds = []
        for t in (0.5, 1.0, 2.0):
            e = [math.exp(s / t) for s in logits]
            odds.append([x / sum(e) for x in e])
        order = sorted(range(tok.vocab_size), key=lambda i: -odds[1][i])
        labels = [s for s, a in texts(self.drawn['next_letter']) if a.get('font-size') == '13']
        self.assertEqual(labels, ['.' if i == tok.bos else tok.chars[i] for i in order])
        root = ET.fromstring(self.drawn['next_letter'])
        bars = [float(r.attrib['height']) for r in root.iter(SVG_NS + 'rect')
                if r.attrib['fill'] in (figures.VERMILLION, figures.BLUE, figures.ORANGE)][:3 * tok.vocab_size]
        expected = [odds[t][i] for i in order for t in range(3)]
        self.assertEqual(len(bars), len(expected))
        for bar, p in zip(bars, expected):
            self.assertAlmostEqual(bar / max(bars), p / max(expected), delta=0.002)

    def test_the_embedding_axes_are_the_principal_components(self):
        # Each axis is a unit vector, at right angles to the other, and an eigenvector of the
        # covariance of the 27 embeddings; no direction spreads them more than the first, and
        # none at right angles to it more than the second (checked against 200 random ones).
        vectors = [[p.data for p in row] for row in self.ns['state_dict']['wte']]
        points, (u, v), shares = figures.principal_axes(vectors)
        n, dim = len(vectors), len(vectors[0])
        mean = [sum(c) / n for c in zip(*vectors)]
        cov = [[sum((r[i] - mean[i]) * (r[j] - mean[j]) for r in vectors) / n for j in range(dim)] for i in range(dim)]
        times = lambda a: [sum(c * x for c, x in zip(row, a)) for row in cov]  # noqa: E731
        dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
        self.assertAlmostEqual(dot(u, u), 1.0, delta=1e-12)
        self.assertAlmostEqual(dot(v, v), 1.0, delta=1e-12)
        self.assertAlmostEqual(dot(u, v), 0.0, delta=1e-9)
        for axis in (u, v):
            spread = dot(axis, times(axis))
            self.assertLess(max(abs(a - spread * b) for a, b in zip(times(axis), axis)), 1e-9 * spread)
        rng = random.Random(0)
        for _ in range(200):
            r = [rng.gauss(0, 1) for _ in range(dim)]
            r = [x / math.sqrt(dot(r, r)) for x in r]
            self.assertLessEqual(dot(r, times(r)), dot(u, times(u)) + 1e-12)
            r = [x - dot(r, u) * y for x, y in zip(r, u)]
            r = [x / math.sqrt(dot(r, r)) for x in r]
            self.assertLessEqual(dot(r, times(r)), dot(v, times(v)) + 1e-12)
        self.assertEqual(len(points), 27)
        trace = sum(cov[i][i] for i in range(dim))   # the share of the spread the axes label
        self.assertEqual([round(x, 12) for x in shares], [round(dot(a, times(a)) / trace, 12) for a in (u, v)])
        self.assertGreater(shares[0], shares[1])
        shown = [s for s, a in texts(self.drawn['embeddings']) if a.get('font-size') == '14']
        tok = self.ns['tokenizer']
        self.assertEqual(shown, [tok.chars[i] if i < tok.bos else '.' for i in range(tok.vocab_size)])
        root = ET.fromstring(self.drawn['embeddings'])
        self.assertEqual(len(list(root.iter(SVG_NS + 'circle'))), 5 + 1)   # a e i o u, and the legend's

    def test_the_graph_shows_the_chain_rule_by_hand(self):
        # L = (a*b + c)^2 at a = 2, b = -3, c = 10: p = -6, s = 4, L = 16; dL/ds = 2s = 8,
        # dL/dp = dL/dc = 8, dL/da = 8 * b = -24, dL/db = 8 * a = 16.
        shown = [s for s, _ in texts(self.drawn['graph'])]
        for name, data, grad in (('a', '2', '-24'), ('b', '-3', '16'), ('c', '10', '8'),
                                 ('p = a*b', '-6', '8'), ('s = p + c', '4', '8'), ('L = s^2', '16', '1')):
            i = shown.index(name)   # each box: its name, then its data, then its grad
            self.assertEqual(shown[i:i + 3], [name, 'data ' + data, 'grad ' + grad])
        for edge in ('dp/da = -3', 'dp/db = 2', 'ds/dp = 1', 'ds/dc = 1', 'dL/ds = 8'):
            self.assertIn(edge, shown)


class ScriptTest(unittest.TestCase):

    def test_a_checkpoint_draws_the_same_files_twice_and_they_are_the_committed_ones(self):
        ns, _ = default_run()
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = os.path.join(folder, 'model.json')
            microgpt.save_checkpoint(checkpoint, ns['config'], ns['tokenizer'], ns['state_dict'])
            outputs = []
            for out in ('one', 'two'):
                result = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'figures.py'),
                                         '--load', checkpoint, '--out', os.path.join(folder, out)],
                                        capture_output=True, text=True, timeout=120)
                self.assertEqual(result.returncode, 0, result.stderr)
                outputs.append({f: read(os.path.join(folder, out, f)) for f in os.listdir(os.path.join(folder, out))})
            self.assertEqual(outputs[0], outputs[1])
            self.assertEqual(sorted(outputs[0]), sorted(f + '.svg' for f in FIGURES if f != 'training_curve'))
            for name, content in outputs[0].items():   # a checkpoint holds every weight exactly
                self.assertEqual(content, read(os.path.join(ROOT, 'figures', name)), name)

    def test_a_missing_checkpoint_is_one_line(self):
        result = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'figures.py'),
                                 '--load', 'no-such-file.json', '--out', tempfile.gettempdir()],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.strip().splitlines(),
                         ['microgpt: error: no microgpt checkpoint (made by --save) at no-such-file.json'])

    def test_a_folder_that_cannot_be_written_is_one_line_before_any_training(self):
        with tempfile.TemporaryDirectory() as folder:
            blocker = os.path.join(folder, 'a-file')
            with open(blocker, 'w'):
                pass
            result = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'figures.py'),
                                     '--out', os.path.join(blocker, 'figures')],
                                    capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 2)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertTrue(result.stderr.startswith('microgpt: error: '), result.stderr)
            self.assertEqual(result.stdout, '')

    def test_standard_library_only(self):
        tree = ast.parse(read(os.path.join(ROOT, 'scripts', 'figures.py')))
        imported = {a.name.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        self.assertLessEqual(imported, {'argparse', 'contextlib', 'io', 'math', 'os', 'runpy', 'sys', 'xml', 'microgpt'})


class LearnersOwnModelTest(unittest.TestCase):

    def test_another_size_draws_one_map_per_head(self):
        config = microgpt.Config(n_layer=2, n_embd=12, n_head=3, block_size=8)
        tok = microgpt.Tokenizer('abcdemr')
        sd = microgpt.init_params(tok.vocab_size, config, random.Random(3))
        svg = figures.attention(sd, tok, config, name='emma', layer=1)
        heads = [s for s, _ in texts(svg) if s.startswith('head ')]
        self.assertEqual(heads, ['head 0', 'head 1', 'head 2'])
        self.assertIn('Attention of layer 1', svg)
        ET.fromstring(figures.next_letter(sd, tok, config, prefix='a'))
        ET.fromstring(figures.embeddings(sd, tok))

    def test_odd_models_draw_or_say_why_in_one_line(self):
        # A vocabulary without the letters of 'emma', a tiny context, one number per embedding,
        # a run too small to hold any document out.
        config = microgpt.Config(n_embd=2, n_head=1, block_size=3)
        tok = microgpt.Tokenizer('xyz')
        sd = microgpt.init_params(tok.vocab_size, config, random.Random(7))
        drawn = figures.draw_all({'state_dict': sd, 'tokenizer': tok, 'config': config,
                                  'losses': [3.0, 2.5, float('nan')], 'train_docs': ['xy'], 'val_docs': []})
        self.assertEqual(sorted(drawn), sorted(FIGURES))
        for content in drawn.values():
            ET.fromstring(content)
        self.assertIn('reading "xy"', drawn['attention'])   # the first tokens, cut to the context
        with self.assertRaises(microgpt.InputError):
            figures.next_letter(sd, tok, config, prefix='xyz')   # no room after it
        with self.assertRaises(microgpt.InputError):
            figures.attention(sd, tok, config, name='em')        # letters it has no token for
        one = microgpt.Config(n_embd=1, n_head=1)
        ET.fromstring(figures.embeddings(microgpt.init_params(tok.vocab_size, one, random.Random(8)), tok))

    def test_a_notebooks_own_cells_draw_with_their_own_gpt(self):
        # A notebook that ran the file's cells has its own Value class and its own gpt(), which
        # may have a part swapped in. The figure must run that gpt(), on those Values.
        notebook = types.ModuleType('a_notebook')
        sys.modules['a_notebook'] = notebook
        try:
            exec(compile(read(os.path.join(ROOT, 'microgpt.py')), 'a_notebook', 'exec'), notebook.__dict__)
            self.assertIsNot(notebook.Value, microgpt.Value)
            config = notebook.Config(n_embd=8, n_head=2, block_size=8)
            tok = notebook.Tokenizer('abcdemr')
            sd = notebook.init_params(tok.vocab_size, config, random.Random(5))
            calls, gpt = [], notebook.gpt
            notebook.gpt = lambda *args: calls.append(1) or gpt(*args)
            code, weights = figures.model_code(sd)
            self.assertIs(code, notebook)
            self.assertIs(weights, sd)
            mine = figures.attention(sd, tok, config)
            self.assertEqual(len(calls), 5)   # BOS + 'emma'
            # The same weights as microgpt's own Values (a class of no module): the same picture.
            orphan = type('Value', (microgpt.Value,), {'__module__': 'nowhere'})
            copied = {k: [[orphan(p.data) for p in row] for row in m] for k, m in sd.items()}
            self.assertIs(figures.model_code(copied)[0], microgpt)
            self.assertEqual(figures.attention(copied, tok, config), mine)
        finally:
            del sys.modules['a_notebook']


if __name__ == '__main__':
    unittest.main()
