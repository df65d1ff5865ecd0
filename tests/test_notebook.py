"""microgpt.py leaves what it made in the namespace it runs in, however it is run: runpy (as
IPython's %run does), the whole file as one Jupyter cell, its `# %%` cells one by one, or
`python3 -i`. The Run cell trains whatever `config` holds, so settings can change between runs.
A mistake there is one line on stderr and the session goes on; `import microgpt` runs nothing.

    python3 -m unittest discover -s tests -p test_notebook.py -v

Jupyter and IPython are not installed: a kernel is simulated as test_cli.NotebookTest does, with
empty modules named 'ipykernel' and 'IPython' and a kernel's own command line in sys.argv. Every
run is a child process, almost always with a tiny model on test_cli's synthetic names (one session
trains the default model on the real input.txt for a few steps); expected values (document
counts, vocabulary, weight shapes, parameter counts, which flags were given) come from the data
and the settings.
"""
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli as cli   # noqa: E402  (its helpers: the data, the child's environment, Result)

ROOT, SCRIPT, TINY, NAMES = cli.ROOT, cli.SCRIPT, cli.TINY, cli.NAMES
SMALL = TINY + ['--num-samples', '2']
SMALL_SETTINGS = {'n_embd': 8, 'n_head': 2, 'block_size': 8, 'num_samples': 2}

# What every run leaves behind, printed by the child as one JSON line "NAMESPACE {...}".
SUMMARY = r'''
def summary(ns):
    import json, random
    names = ('config', 'given', 'docs', 'train_docs', 'val_docs', 'n_val', 'tokenizer',
             'state_dict', 'losses', 'progress', 'rng')
    missing = [name for name in names if name not in ns]
    if missing:
        return 'NAMESPACE ' + json.dumps({'missing': missing})
    sd = ns['state_dict']
    return 'NAMESPACE ' + json.dumps({
        'missing': [],
        'config': {k: getattr(ns['config'], k) for k in ('steps', 'n_layer', 'n_embd', 'n_head',
                                                         'block_size', 'num_samples', 'seed')},
        'config_type': type(ns['config']).__name__,
        'given': ns['given'], 'docs': ns['docs'], 'train_docs': ns['train_docs'],
        'val_docs': ns['val_docs'], 'n_val': ns['n_val'],
        'chars': ns['tokenizer'].chars, 'vocab_size': ns['tokenizer'].vocab_size,
        'shapes': {name: [len(m), len(m[0])] for name, m in sd.items()},
        'weight_type': type(sd['wte'][0][0]).__name__,
        'losses': ns['losses'], 'progress_type': type(ns['progress']).__name__,
        'rng_is_random': isinstance(ns['rng'], random.Random)})
'''

# The kernel simulation: the modules a kernel has loaded, its command line.
KERNEL = r'''
import sys, types
for name in ('ipykernel', 'IPython'):
    sys.modules[name] = types.ModuleType(name)
sys.argv = ['/x/ipykernel_launcher.py', '-f', '/tmp/kernel-1234.json']
'''

# (b) The whole file pasted into one cell, with Config's defaults edited in the source as a
# notebook user would (argv: the script, then a JSON object {field: new default}).
ONE_CELL = SUMMARY + r'''
import json, re, sys
script, edits = sys.argv[1], json.loads(sys.argv[2])
''' + KERNEL + r'''
with open(script, encoding='utf-8') as f:
    source = f.read()
for field, value in edits.items():
    source, count = re.subn(r'(?m)^(    %s: \w+ = )\S+' % field, r'\g<1>' + value, source)
    assert count == 1, field
namespace = {'__name__': '__main__'}   # a kernel's namespace: __main__, and no __file__
try:
    exec(compile(source, '<cell>', 'exec'), namespace)
except SystemExit as e:
    print('SystemExit', e.code)
    raise
print(summary(namespace) if 'losses' in namespace else 'CELL DONE')
'''

# (c) The file split at its `# %%` lines, run cell by cell in one namespace. After each cell,
# every function it defined may use only names that exist by then (so no cell needs one below
# it). __file__ is the one exception: a notebook has none, and find_input() checks for it.
CELL_BY_CELL = SUMMARY + r'''
import builtins, dis, json, re, sys, types
script = sys.argv[1]
''' + KERNEL + r'''
with open(script, encoding='utf-8') as f:
    source = f.read()
source = re.sub(r'(?m)^(    steps: int = )\d+', r'\g<1>5', source)
cells = re.split(r'(?m)^(?=# %%)', source)
print('CELLS', json.dumps([cell.splitlines()[0] for cell in cells]))

def code_objects(code):
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const
            yield from code_objects(const)

namespace, needs = {'__name__': '__main__'}, []
for i, cell in enumerate(cells):
    code = compile(cell, '<cell %d>' % i, 'exec')
    exec(code, namespace)
    for inner in code_objects(code):
        for ins in dis.get_instructions(inner):
            if (ins.opname == 'LOAD_GLOBAL' and ins.argval not in namespace
                    and not hasattr(builtins, ins.argval) and ins.argval != '__file__'):
                needs.append([i, inner.co_name, ins.argval])
print('NEEDS', json.dumps(needs))
print(summary(namespace))
# Config's docstring: change a default, run the Settings cell and the Run cell again.
settings = [i for i, cell in enumerate(cells) if cell.startswith('# %% Settings')]
run = [i for i, cell in enumerate(cells) if cell.startswith('# %% Run')]
assert len(settings) == len(run) == 1, (settings, run)
exec(cells[settings[0]].replace('steps: int = 5', 'steps: int = 3'), namespace)
exec(cells[run[0]], namespace)
print('RERUN', len(namespace['losses']))
'''

# A learner's session, cell by cell (argv: the script): a first run with `steps: int = 2` and
# `num_samples: int = 3` edited into Config; then `config = replace(config, n_layer=2, steps=3)`
# and the Run cell again; then `steps: int = 4` edited into the Settings cell, that cell run
# again, and the Run cell. Each run is framed by "BEGIN <label>" and "END <label> <json of what
# it left>".
REPLACE_THEN_RERUN = r'''
import json, re, sys
script = sys.argv[1]
''' + KERNEL + r'''
with open(script, encoding='utf-8') as f:
    source = f.read()
for field, value in (('steps', 2), ('num_samples', 3)):
    source, count = re.subn(r'(?m)^(    %s: int = )\d+' % field, r'\g<1>%d' % value, source)
    assert count == 1, field
cells = re.split(r'(?m)^(?=# %%)', source)
settings, = [i for i, cell in enumerate(cells) if cell.startswith('# %% Settings')]
run, = [i for i, cell in enumerate(cells) if cell.startswith('# %% Run')]
namespace = {'__name__': '__main__'}

def run_cells(label, indices, cells=cells):
    print('BEGIN', label, flush=True)
    for i in indices:
        exec(compile(cells[i], '<cell %d>' % i, 'exec'), namespace)
    config, sd = namespace['config'], namespace['state_dict']
    print('END', label, json.dumps({
        'n_layer': config.n_layer, 'steps': config.steps, 'losses': len(namespace['losses']),
        'given': namespace['given'], 'vocab_size': namespace['tokenizer'].vocab_size,
        'num_samples': config.num_samples,
        'shapes': {name: [len(m), len(m[0])] for name, m in sd.items()}}), flush=True)

run_cells('first', range(len(cells)))
exec('config = replace(config, n_layer=2, steps=3)', namespace)
run_cells('replaced', [run])
edited = list(cells)
edited[settings] = cells[settings].replace('steps: int = 2', 'steps: int = 4')
assert edited[settings] != cells[settings]
run_cells('default edited', [settings, run], edited)
'''


# runpy.run_path, as IPython's %run runs a script (argv: script, then its flags).
RUNPY = SUMMARY + r'''
import runpy, sys
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
print(summary(runpy.run_path(script, run_name='__main__')))
'''

# %run in IPython (IPython imported, no kernel), with a mistake in the flags.
RUNPY_IN_IPYTHON = r'''
import runpy, sys, types
sys.modules['IPython'] = types.ModuleType('IPython')
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
try:
    namespace = runpy.run_path(script, run_name='__main__')
except SystemExit as e:
    print('SystemExit', e.code)
    raise
print('CELL DONE', 'losses' in namespace, namespace['config'] == namespace['Config']())
'''


def expected_shapes(vocab, e, block, n_layer=1):
    return {name: list(shape) for name, shape in cli.expected_shapes(vocab, n_layer, e, block).items()}


class NamespaceTestCase(cli.CliTestCase):

    def namespace(self, result):
        """The child's NAMESPACE line, decoded."""
        return self.tagged(result, 'NAMESPACE')

    def tagged(self, result, tag):
        found = [line for line in result.lines if line.startswith(tag + ' ')]
        self.assertEqual(len(found), 1, result)
        return json.loads(found[0][len(tag) + 1:])

    def check_namespace(self, result, ns, steps, given, n_embd=8, n_head=2, block_size=8):
        """What a run on NAMES with these settings must leave behind, derived from NAMES."""
        self.assertEqual(ns['missing'], [], result)
        self.assertEqual(ns['config_type'], 'Config')
        self.assertEqual(ns['given'], given)
        self.assertEqual({k: ns['config'][k] for k in ('steps', 'n_embd', 'n_head', 'block_size')},
                         {'steps': steps, 'n_embd': n_embd, 'n_head': n_head, 'block_size': block_size})
        self.assertEqual(sorted(ns['docs']), sorted(NAMES))
        n_val = len(NAMES) // 10
        self.assertEqual(ns['n_val'], n_val)
        self.assertEqual(ns['val_docs'], ns['docs'][:n_val])
        self.assertEqual(ns['train_docs'], ns['docs'][n_val:])
        chars = sorted(set(''.join(NAMES)))
        self.assertEqual((ns['chars'], ns['vocab_size']), (chars, len(chars) + 1))
        self.assertEqual(ns['shapes'], expected_shapes(len(chars) + 1, n_embd, block_size))
        self.assertEqual(ns['weight_type'], 'Value')
        self.assertEqual((ns['progress_type'], ns['rng_is_random']), ('Progress', True))
        # One loss per step: the very numbers the progress lines printed.
        self.assertEqual(len(ns['losses']), steps, result)
        self.assertTrue(all(isinstance(x, float) for x in ns['losses']), ns['losses'])
        before = cli.Result(0, ''.join(result.stdout.partition('\nNAMESPACE ')[0]), '')
        printed = {int(m.group(1)): m.group(3) for m in before.steps()}
        self.assertTrue(printed, result)
        for step, loss in printed.items():
            self.assertEqual(f"{ns['losses'][step - 1]:.4f}", loss, step)

    def assertOneErrorLine(self, result, message):
        """One 'microgpt: error:' line, saying `message`; no traceback, no SystemExit."""
        self.assertNoTraceback(result)
        errors = [line for line in result.stderr.splitlines() if 'microgpt: error:' in line]
        self.assertEqual(errors, [f'microgpt: error: {message}'], result)
        self.assertNotIn('SystemExit', result.stdout + result.stderr, result)


class NamespaceAfterARunTest(NamespaceTestCase):

    def test_runpy_run_path(self):
        """(a) runpy.run_path(script, run_name='__main__'), as IPython's %run does it."""
        self.write_names(name='names.txt')
        result = self.run_python(RUNPY, SCRIPT, '--input', 'names.txt', '--steps', '4', *SMALL)
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, '', result)
        self.assertEqual(len(result.samples()), 2, result)
        self.check_namespace(result, self.namespace(result), steps=4,
                             given=dict(SMALL_SETTINGS, input='names.txt', steps=4))

    def test_whole_file_as_one_jupyter_cell(self):
        """(b) The file pasted into one cell of a kernel, with `steps: int = 5` edited in: the
        kernel's own arguments are not read, ./input.txt is, and the cell's globals hold it all."""
        self.write_names()
        edits = {'steps': '5', 'n_embd': '8', 'n_head': '2', 'block_size': '8', 'num_samples': '2'}
        result = self.run_python(ONE_CELL, SCRIPT, json.dumps(edits))
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, '', result)
        self.assertEqual([int(m.group(1)) for m in result.steps()], [1, 2, 3, 4, 5], result)
        self.assertEqual(len(result.samples()), 2, result)
        self.check_namespace(result, self.namespace(result), steps=5, given={})

    def test_cell_by_cell(self):
        """(c) Jupytext's view of the file: a cell per `# %%` line, run in order, each on its own;
        then the Settings cell with another default and the Run cell again."""
        self.write_names()
        result = self.run_python(CELL_BY_CELL, SCRIPT)
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, '', result)
        cells = self.tagged(result, 'CELLS')
        self.assertGreaterEqual(len(cells), 10, cells)   # the preamble, then one per section
        self.assertTrue(all(title.startswith('# %% ') for title in cells[1:]), cells)
        self.check_namespace(result, self.namespace(result), steps=5, given={},
                             n_embd=16, n_head=4, block_size=16)   # Config's own defaults
        self.assertEqual(self.tagged(result, 'RERUN'), 3, result)
        self.assertEqual(self.tagged(result, 'NEEDS'), [], 'a function needs a later cell')

    def test_python_dash_i(self):
        """(d) `python3 -i microgpt.py ...`: after the run, the prompt has its objects."""
        self.write_names(name='names.txt')
        commands = ("print('LOOK', len(losses), type(state_dict).__name__, config.steps, "
                    "len(train_docs) + len(val_docs), tokenizer.vocab_size)\n"
                    "print('GIVEN', sorted(given))\n")
        proc = subprocess.run([sys.executable, '-i', SCRIPT, '--input', 'names.txt', '--steps', '3',
                               *SMALL], cwd=self.dir, env=cli.child_env(), input=commands.encode(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=cli.TIMEOUT)
        result = cli.Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        self.assertEqual(result.returncode, 0, result)
        self.assertNoTraceback(result)
        self.assertEqual(len(result.samples()), 2, result)
        vocab = len(set(''.join(NAMES))) + 1
        self.assertIn(f'LOOK 3 dict 3 {len(NAMES)} {vocab}', result.stdout, result)
        given = sorted(dict(SMALL_SETTINGS, input='', steps=0))
        self.assertIn(f'GIVEN {given}', result.stdout, result)


class SettingsBetweenRunsTest(NamespaceTestCase):
    """In a notebook, the Run cell trains whatever `config` holds: after a run, a learner can
    `config = replace(config, n_layer=2)` and run the Run cell again; or change a default in
    Config and run the Settings cell (which starts config afresh from Config) and then the Run
    cell. On the real input.txt, with Config's defaults but for the numbers of steps and samples."""

    @staticmethod
    def n_params(vocab, e, block, n_layer):
        # wte and lm_head: vocab x e each; wpe: block x e; per block, attention's wq wk wv wo
        # (e x e each) and the MLP's fc1 and fc2 (4e x e and e x 4e)
        return vocab * e + block * e + n_layer * (4 * e * e + 8 * e * e) + vocab * e

    def test_replace_config_then_run_again(self):
        shutil.copy(os.path.join(ROOT, 'input.txt'), self.dir)   # (a notebook has no __file__)
        with open(os.path.join(ROOT, 'input.txt'), encoding='utf-8') as f:
            vocab = len(set(''.join(line.strip() for line in f))) + 1
        self.assertEqual(vocab, 27)   # a to z, and BOS
        result = self.run_python(REPLACE_THEN_RERUN, SCRIPT)
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, '', result)
        runs, printed, samples, label = {}, {}, {}, None
        for line in result.lines:
            if line.startswith('BEGIN '):
                label = line[len('BEGIN '):]
            elif cli.SAMPLE_LINE.match(line):
                samples[label] = samples.get(label, 0) + 1
            elif line.startswith('END '):
                name, _, summary = line[len('END '):].partition(' {')
                runs[name] = json.loads('{' + summary)
            elif line.startswith('num params: '):
                printed[label] = int(line[len('num params: '):])
        self.assertEqual(list(runs), ['first', 'replaced', 'default edited'], result)
        expected = {'first': (1, 2), 'replaced': (2, 3), 'default edited': (1, 4)}
        for name, (n_layer, steps) in expected.items():
            with self.subTest(name):
                ns = runs[name]
                self.assertEqual((ns['n_layer'], ns['steps'], ns['losses']),
                                 (n_layer, steps, steps), result)
                self.assertEqual(ns['given'], {})   # a kernel's own arguments are never read
                self.assertEqual((ns['num_samples'], samples[name]), (3, 3), result)
                self.assertEqual(ns['vocab_size'], vocab)
                self.assertEqual(ns['shapes'], expected_shapes(vocab, 16, 16, n_layer))
                self.assertEqual(printed[name], self.n_params(vocab, 16, 16, n_layer), result)
                self.assertEqual(printed[name], sum(r * c for r, c in ns['shapes'].values()))
        self.assertEqual(self.n_params(27, 16, 16, 2), 7264)   # 432 + 256 + 2 * 3072 + 432


class MistakesInASessionTest(NamespaceTestCase):
    """A bad setting where a person is at a prompt: one line, then the prompt is theirs again."""

    def test_python_dash_i_with_a_bad_setting(self):
        """(e) `python3 -i microgpt.py --n-embd 10` (4 heads): the error, then the session."""
        proc = subprocess.run([sys.executable, '-i', SCRIPT, '--n-embd', '10'], cwd=self.dir,
                              env=cli.child_env(), input=b"print('still here', 6 * 7)\n",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=cli.TIMEOUT)
        result = cli.Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        self.assertEqual(result.returncode, 0, result)
        self.assertOneErrorLine(result, '--n-embd must be a multiple of --n-head')
        self.assertTrue(result.stderr.startswith('microgpt: error:'), result)   # before any prompt
        self.assertIn('still here 42\n', result.stdout, result)   # (PyPy prompts on stdout)
        self.assertNotIn('num docs', result.stdout, result)

    def test_jupyter_cell_with_a_bad_setting(self):
        """(f) The same mistake made in a notebook, in Config: the cell completes."""
        self.write_names()
        result = self.run_python(ONE_CELL, SCRIPT, json.dumps({'n_embd': '10'}))
        self.assertEqual(result.returncode, 0, result)
        self.assertOneErrorLine(result, '--n-embd must be a multiple of --n-head')
        self.assertEqual(result.stderr.count('\n'), 1, result)
        self.assertEqual(result.stdout, 'CELL DONE\n', result)

    def test_jupyter_cell_without_input_txt(self):
        """A notebook has no __file__: input.txt is looked for in its folder only."""
        result = self.run_python(ONE_CELL, SCRIPT, json.dumps({'steps': '5'}))
        self.assertEqual(result.returncode, 0, result)
        self.assertOneErrorLine(result, 'input file not found (or not a regular file): input.txt')
        self.assertEqual(result.stdout, 'CELL DONE\n', result)

    def test_percent_run_in_ipython_with_a_bad_setting(self):
        """(f) `%run microgpt.py --n-embd 10` in IPython: its flags are read, and the mistake is
        one line, not the end of the session. Nothing ran: no losses, and config is still
        Config's defaults, the bad flag not applied."""
        result = self.run_python(RUNPY_IN_IPYTHON, SCRIPT, '--n-embd', '10')
        self.assertEqual(result.returncode, 0, result)
        self.assertOneErrorLine(result, '--n-embd must be a multiple of --n-head')
        self.assertEqual(result.stderr.count('\n'), 1, result)
        self.assertEqual(result.stdout, 'CELL DONE False True\n', result)


class ImportTest(cli.CliTestCase):

    def test_import_runs_nothing(self):
        """`import microgpt` defines the lesson's functions and runs none of it: nothing printed,
        no training, no `losses`, Ctrl-C and the garbage collector left as they were. Its one
        setting is `config`, Config's defaults, with no flag applied."""
        self.write_names()   # (an input.txt in the folder, should the import try to train)
        code = ("import gc, json, signal, sys\n"
                f"sys.path.insert(0, {ROOT!r})\n"
                "sys.argv[1:] = ['--n-layer', '3']\n"   # (flags the import must not read)
                "import microgpt\n"
                "names = ('losses', 'given', 'state_dict', 'tokenizer', 'docs', 'progress')\n"
                "print(json.dumps({'left': [n for n in names if hasattr(microgpt, n)],\n"
                "    'config': microgpt.config == microgpt.Config(),\n"
                "    'sigint_default': signal.getsignal(signal.SIGINT) is signal.default_int_handler,\n"
                "    'gc': gc.isenabled(), 'has_run': callable(getattr(microgpt, 'train', None))}))\n")
        result = self.run_python(code)
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, '', result)
        self.assertEqual(len(result.lines), 1, result)   # only the child's own line
        self.assertEqual(json.loads(result.lines[0]), {'left': [], 'config': True,
                                                       'sigint_default': True, 'gc': True,
                                                       'has_run': True})


if __name__ == '__main__':
    unittest.main()
