"""End-to-end tests of microgpt.py's command line: each test runs the script in a subprocess, in a
fresh temporary directory holding small synthetic data written by the test.

    python3 -m unittest discover -s tests -p test_cli.py -v     (or: python3 -m pytest tests/test_cli.py)

Almost every run uses a tiny model (n_embd 8, 2 heads, block_size 8) and a few dozen short names,
so the whole file takes seconds; the few that need the default model or the real input.txt are
kept short. Some runs go through runpy (RUN_THEN) to see what the run left in its namespace;
test_notebook.py does that for every way of running the lesson. Expected numbers (document
counts, vocabulary and parameter counts, ln(V), the set of progress steps) are computed here from
the data and the config, never copied from the program's own output.
"""
import contextlib
import errno
import gc
import glob
import io
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'microgpt.py')
TIMEOUT = 90          # seconds allowed for any one run; a hang fails the test instead of the suite
TINY = ['--n-embd', '8', '--n-head', '2', '--block-size', '8']
FLAGS = ['--input', '--steps', '--n-layer', '--n-embd', '--n-head', '--block-size', '--lr', '--seed',
         '--temperature', '--num-samples', '--top-k', '--prompt', '--save', '--load']
POSIX_SIGNALS = hasattr(signal, 'SIGINT') and os.name == 'posix'
NOT_A_CHECKPOINT = 'no microgpt checkpoint (made by --save) at '   # missing, or not one at all
DAMAGED = 'not a usable microgpt checkpoint (damaged or edited)'   # starts like one
AS_IT_IS = '--load takes the model from ck.json as it is; drop '   # a flag it cannot take

STEP_LINE = re.compile(r'^step +(\d+) / +(\d+) \| loss (\d+\.\d{4})')
# A sample, and its mark when it is one of the documents (the run knows which were held out).
SAMPLE_LINE = re.compile(r'^sample +(\d+): (.*?)(?:   <- (seen in training|in the data, never seen))?$')
# The report: the train part is left out after 0 steps, the val part with no held-out docs.
REPORT_LINE = re.compile(r'^(?:train loss (\d+\.\d{4}) \| )?(?:val loss (\d+\.\d{4}) \| )?'
                         r'uniform guess ln\((\d+)\) = (\d+\.\d{4})$')
MEASURING_LINE = re.compile(r'^measuring the loss on docs trained on: (\d+), held out: (\d+)\.\.\.$')
TOOK_LINE = re.compile(r'^training took \d+\.\d s$')
DIVERGED = re.compile(r'^microgpt: error: training diverged at step (\d+): try a smaller --lr$')

# Names made of two syllables: enough structure that a few hundred steps visibly learn something.
SYLLABLES = ['an', 'bel', 'cor', 'di', 'el', 'fa', 'gil', 'ho', 'ka', 'lin', 'mar', 'no', 'ra',
             'sa', 'ti', 'vo']


def make_names(n=50, seed=1234):
    rng = random.Random(seed)
    return [rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(n)]   # 3..6 characters


NAMES = make_names()


def child_env():
    env = dict(os.environ)
    env['PYTHONIOENCODING'] = 'utf-8'   # decode the output the same way on every platform
    for name in ('PYTHONSTARTUP', 'PYTHONWARNINGS', 'PYTHONINSPECT', 'PYTHONUNBUFFERED'):
        env.pop(name, None)
    return env


def default_sigint():
    """Run in the child before exec: a shell may start background jobs with SIGINT ignored, which
    Python would inherit; a user at a terminal has the default, so the tests give it that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.lines = stdout.splitlines()

    def samples(self):
        return [m.group(2) for m in map(SAMPLE_LINE.match, self.lines) if m]

    def marks(self):
        return [m.group(3) for m in map(SAMPLE_LINE.match, self.lines) if m]

    def steps(self):
        return [m for m in map(STEP_LINE.match, self.lines) if m]

    def report(self):
        found = [m for m in map(REPORT_LINE.match, self.lines) if m]
        return found[-1] if found else None

    def value(self, prefix):
        """The integer after `prefix` on the line that starts with it, e.g. value('num docs:')."""
        for line in self.lines:
            if line.startswith(prefix):
                return int(line[len(prefix):].split()[0])
        raise AssertionError(f"no line starting with {prefix!r} in:\n{self.stdout}")

    def __repr__(self):
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def run_script(args, cwd, timeout=TIMEOUT, script=SCRIPT, env=None):
    """Run microgpt.py; stdout/stderr are decoded by hand so that a stray '\\r' stays visible."""
    proc = subprocess.run([sys.executable, script] + list(args), cwd=cwd, env=env or child_env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)
    return Result(proc.returncode, proc.stdout.decode('utf-8'), proc.stderr.decode('utf-8'))


def num_docs_line(n_docs):
    """The first line of a training run: a tenth of the documents (rounded down) is held out."""
    return f'num docs: {n_docs} ({n_docs // 10} held out for validation)'


# microgpt.py run as `python3 microgpt.py ARGS` would run it, but through runpy in a child
# process, so that a test can see what the run left in its namespace. `before` runs first (to
# patch something), then the script, then `after`: an expression over the script's namespace,
# whose value is printed as JSON on a last line "AFTER <json>".
RUN_THEN = r'''
import json, runpy, sys
script, before, after = sys.argv[1:4]
sys.argv = [script] + sys.argv[4:]
exec(before)
namespace = runpy.run_path(script, run_name='__main__')
print('AFTER ' + json.dumps(eval(after, namespace)))
'''


class CliTestCase(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        tmp = tempfile.TemporaryDirectory(prefix='microgpt-test-')
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, content):
        data = content if isinstance(content, bytes) else content.encode('utf-8')
        with open(self.path(name), 'wb') as f:
            f.write(data)
        return self.path(name)

    def write_names(self, names=NAMES, name='input.txt'):
        return self.write(name, ''.join(n + '\n' for n in names))

    def run_cli(self, *args, timeout=TIMEOUT):
        return run_script(args, self.dir, timeout)

    def run_python(self, code, *args, stdin=None, cwd=None):
        """`python3 -c code args` in the test's folder, with `stdin` (a str) as its input."""
        proc = subprocess.run([sys.executable, '-c', code] + list(args), cwd=cwd or self.dir,
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=TIMEOUT, **({'stdin': subprocess.DEVNULL} if stdin is None
                                                  else {'input': stdin.encode('utf-8')}))
        return Result(proc.returncode, proc.stdout.decode('utf-8'), proc.stderr.decode('utf-8'))

    def run_then(self, after, *args, before=''):
        """Run the script with `args` through RUN_THEN: (the Result, the value of `after`)."""
        result = self.run_python(RUN_THEN, SCRIPT, before, after, *args)
        last = result.lines[-1] if result.lines else ''
        return result, json.loads(last[len('AFTER '):]) if last.startswith('AFTER ') else None

    def train(self, *args, steps=20, names=NAMES):
        """A tiny training run on `names` (written to names.txt) that must succeed."""
        self.write_names(names, 'names.txt')
        result = self.run_cli('--input', 'names.txt', '--steps', str(steps), *TINY, *args)
        self.assertSucceeded(result)
        return result

    def make_checkpoint(self, name='ck.json', *args):
        result = self.train('--save', name, '--num-samples', '6', *args)
        self.assertTrue(os.path.isfile(self.path(name)), result)
        return result

    def load_json(self, name):
        with open(self.path(name), encoding='utf-8') as f:
            return json.load(f)

    def dump_json(self, name, obj):
        with open(self.path(name), 'w', encoding='utf-8') as f:
            json.dump(obj, f)

    def temp_files(self):
        return glob.glob(os.path.join(self.dir, '.microgpt-*.tmp'))

    # -- assertions --------------------------------------------------------------------------
    def assertNoTraceback(self, result):
        self.assertNotIn('Traceback', result.stdout, result)
        self.assertNotIn('Traceback', result.stderr, result)

    def assertNoTraining(self, result):
        self.assertEqual(result.steps(), [], result)
        self.assertFalse([line for line in result.lines if line.startswith('step')], result)
        self.assertNotIn('training took', result.stdout, result)
        self.assertNotIn('--- samples ---', result.stdout, result)
        self.assertEqual(result.samples(), [], result)

    def assertCleanError(self, result, quiet_stdout=True, mentions=None):
        """Exit 2, exactly one 'microgpt: error:' line on stderr, no traceback, no training."""
        self.assertEqual(result.returncode, 2, result)
        self.assertNoTraceback(result)
        err_lines = result.stderr.splitlines()
        self.assertEqual(len(err_lines), 1, result)
        self.assertTrue(err_lines[0].startswith('microgpt: error:'), result)
        self.assertGreater(len(err_lines[0]), len('microgpt: error: '), result)
        if mentions is not None:
            self.assertIn(mentions.lower(), err_lines[0].lower(), result)
        self.assertNoTraining(result)
        if quiet_stdout:   # the error comes before anything is read or printed
            self.assertEqual(result.stdout, '', result)

    def assertSucceeded(self, result, num_samples=None):
        self.assertEqual(result.returncode, 0, result)
        self.assertNoTraceback(result)
        self.assertIn('--- samples ---', result.lines, result)
        if num_samples is not None:
            self.assertEqual(len(result.samples()), num_samples, result)


# 1. Bad input -----------------------------------------------------------------------------------
class BadInputTest(CliTestCase):

    def test_missing_input_file(self):
        self.assertCleanError(self.run_cli('--input', 'nope.txt', *TINY), mentions='nope.txt')

    def test_input_is_a_directory(self):
        os.mkdir(self.path('data'))
        self.assertCleanError(self.run_cli('--input', 'data', *TINY), mentions='data')

    def test_empty_file(self):
        self.write('empty.txt', b'')
        self.assertCleanError(self.run_cli('--input', 'empty.txt', *TINY))

    def test_whitespace_only_file(self):
        self.write('blank.txt', '  \n\t\n\r\n   \n\n')
        self.assertCleanError(self.run_cli('--input', 'blank.txt', *TINY))

    def test_file_that_is_not_utf8(self):
        self.write('latin1.txt', 'anna\nzo\xeb\nbj\xf6rk\n'.encode('latin-1') + b'\xff\xfe\n')
        self.assertCleanError(self.run_cli('--input', 'latin1.txt', *TINY), mentions='utf-8')

    def test_n_embd_not_divisible_by_n_head(self):
        self.write_names()
        self.assertCleanError(self.run_cli('--n-embd', '10', '--n-head', '4', '--block-size', '8'))

    def test_model_sizes_must_be_positive(self):
        self.write_names()
        for flag, value in [('--n-layer', '0'), ('--n-embd', '0'), ('--n-head', '0'),
                            ('--block-size', '0'), ('--block-size', '-3'), ('--n-layer', '-1')]:
            with self.subTest(flag=flag, value=value):
                args = list(TINY)
                if flag in args:
                    args[args.index(flag) + 1] = value
                else:
                    args += [flag, value]
                self.assertCleanError(self.run_cli('--steps', '5', *args), mentions=flag)

    def test_negative_steps(self):
        self.write_names()
        self.assertCleanError(self.run_cli('--steps', '-1', *TINY), mentions='--steps')

    def test_bad_top_k(self):
        self.write_names()
        for value, message in [('-1', '--top-k must be finite, >= 0'),
                               ('1.5', "argument --top-k: invalid int value: '1.5'"),
                               ('two', "argument --top-k: invalid int value: 'two'")]:
            with self.subTest(top_k=value):
                self.assertCleanError(self.run_cli('--steps', '5', '--top-k', value, *TINY),
                                      mentions=message)

    def test_bad_temperature(self):
        self.write_names()
        for value in ['0', '-1', 'nan', 'inf']:
            with self.subTest(temperature=value):
                self.assertCleanError(self.run_cli('--steps', '5', '--temperature', value, *TINY),
                                      mentions='--temperature')

    def test_bad_learning_rate(self):
        self.write_names()
        for value in ['nan', 'inf', '-inf', '-1']:
            with self.subTest(lr=value):
                self.assertCleanError(self.run_cli('--steps', '5', '--lr', value, *TINY),
                                      mentions='--lr')

    def test_non_numeric_flag_values(self):
        self.write_names()
        for args in (['--steps', 'ten'], ['--steps', '2.5'], ['--n-embd', 'x'], ['--lr', 'fast']):
            with self.subTest(args=args):
                self.assertCleanError(self.run_cli(*args))

    def test_unknown_flag(self):
        self.write_names()
        self.assertCleanError(self.run_cli('--steps', '5', '--bogus', *TINY), mentions='--bogus')

    def test_flag_missing_its_value(self):
        self.write_names()
        self.assertCleanError(self.run_cli(*TINY, '--steps'))

    def test_load_missing_file(self):
        self.assertCleanError(self.run_cli('--load', 'missing.json'),
                              mentions='no microgpt checkpoint (made by --save) at missing.json')

    def test_load_file_that_is_not_json(self):
        self.write('notes.json', 'this is not JSON {\n')
        self.assertCleanError(self.run_cli('--load', 'notes.json'), mentions=NOT_A_CHECKPOINT)
        self.write('binary.json', bytes(range(256)))
        self.assertCleanError(self.run_cli('--load', 'binary.json'), mentions=NOT_A_CHECKPOINT)

    def test_load_json_that_is_not_a_checkpoint(self):
        for i, obj in enumerate([[1, 2], {}, {'format': 'something-else'}, 'hello', None, 3]):
            with self.subTest(obj=obj):
                self.dump_json(f'other{i}.json', obj)
                self.assertCleanError(self.run_cli('--load', f'other{i}.json'),
                                      mentions=NOT_A_CHECKPOINT + f'other{i}.json')

    def test_load_truncated_checkpoint(self):
        self.make_checkpoint()
        with open(self.path('ck.json'), 'rb') as f:
            data = f.read()
        self.write('half.json', data[:len(data) // 2])
        self.assertCleanError(self.run_cli('--load', 'half.json'), mentions='half.json: ' + DAMAGED)
        self.write('empty.json', b'')
        self.assertCleanError(self.run_cli('--load', 'empty.json'),
                              mentions=NOT_A_CHECKPOINT + 'empty.json')

    def test_load_checkpoint_with_wrong_matrix_shape(self):
        self.make_checkpoint()
        good = self.load_json('ck.json')
        edits = {
            'row missing from wte': lambda sd: sd['wte'].pop(),
            'column missing from layer0.attn.wq': lambda sd: sd['layer0.attn.wq'][3].pop(),
            'extra column in lm_head': lambda sd: sd['lm_head'][0].append(0.1),
            'fc1 transposed': lambda sd: sd.__setitem__(
                'layer0.mlp.fc1', [list(col) for col in zip(*sd['layer0.mlp.fc1'])]),
            'matrix missing': lambda sd: sd.pop('wpe'),
            'number is a string': lambda sd: sd['wpe'][0].__setitem__(0, '0.5'),
            'number is null': lambda sd: sd['wpe'][0].__setitem__(0, None),
        }
        for what, edit in edits.items():
            with self.subTest(what):
                ck = json.loads(json.dumps(good))
                edit(ck['state_dict'])
                self.dump_json('bad.json', ck)
                self.assertCleanError(self.run_cli('--load', 'bad.json'), mentions='bad.json: ' + DAMAGED)

    def test_load_checkpoint_with_bad_config_or_vocab(self):
        self.make_checkpoint()
        good = self.load_json('ck.json')
        edits = {
            'n_embd not divisible by n_head': lambda ck: ck['config'].__setitem__('n_head', 3),
            'n_layer zero': lambda ck: ck['config'].__setitem__('n_layer', 0),
            'n_embd a string': lambda ck: ck['config'].__setitem__('n_embd', '8'),
            'config missing': lambda ck: ck.pop('config'),
            'vocab unsorted': lambda ck: ck['vocab'].reverse(),
            'vocab has a 2-char token': lambda ck: ck['vocab'].__setitem__(0, 'aa'),
            'vocab one token short': lambda ck: ck['vocab'].pop(),
        }
        for what, edit in edits.items():
            with self.subTest(what):
                ck = json.loads(json.dumps(good))
                edit(ck)
                self.dump_json('bad.json', ck)
                self.assertCleanError(self.run_cli('--load', 'bad.json'), mentions='bad.json: ' + DAMAGED)

    def test_load_with_size_flag_that_contradicts_checkpoint(self):
        self.make_checkpoint()   # saved with n_embd 8, n_head 2, block_size 8, n_layer 1
        for args in (['--n-embd', '16'], ['--n-head', '4'], ['--block-size', '16'], ['--n-layer', '2']):
            with self.subTest(args=args):
                self.assertCleanError(self.run_cli('--load', 'ck.json', *args), mentions=AS_IT_IS + args[0])
        # Flags that agree with the checkpoint are fine.
        self.assertSucceeded(self.run_cli('--load', 'ck.json', '--n-embd', '8', '--num-samples', '2'))

    def test_load_with_training_flags(self):
        self.make_checkpoint()
        for args in (['--steps', '10'], ['--input', 'names.txt'], ['--lr', '0.1'], ['--save', 'x.json']):
            with self.subTest(args=args):
                self.assertCleanError(self.run_cli('--load', 'ck.json', *args), mentions=AS_IT_IS + args[0])
        self.assertFalse(os.path.exists(self.path('x.json')))

    def test_empty_paths_are_errors_not_silently_ignored(self):
        """`--save "$OUT"` or `--load "$CKPT"` with an unset variable passes an empty path. No file
        has that name: the run must say so, not train without saving or train instead of loading."""
        self.write_names()
        with self.subTest('--save ""'):
            result = self.run_cli('--steps', '20', *TINY, '--save', '')
            self.assertCleanError(result, quiet_stdout=False, mentions='--save')
        with self.subTest('--load ""'):   # (a model this small, should it train, trains fast)
            self.assertCleanError(self.run_cli('--load', '', '--n-embd', '2', '--n-head', '1',
                                               '--block-size', '2', '--num-samples', '0'))
        with self.subTest('--input ""'):
            self.assertCleanError(self.run_cli('--input', '', *TINY))

    def test_load_huge_integer_weight(self):
        """JSON integers have no size limit; one too large for a float must be rejected cleanly."""
        self.make_checkpoint()
        ck = self.load_json('ck.json')
        ck['state_dict']['wte'][0][0] = 10 ** 400
        self.dump_json('huge.json', ck)
        self.assertCleanError(self.run_cli('--load', 'huge.json'), mentions='huge.json: ' + DAMAGED)

    def test_load_deeply_nested_json(self):
        """Valid JSON, not a checkpoint: nested deeper than Python's recursion limit."""
        self.write('deep.json', '[' * 100000 + ']' * 100000)
        self.assertCleanError(self.run_cli('--load', 'deep.json'), mentions=NOT_A_CHECKPOINT + 'deep.json')

    def test_prompt_with_character_not_in_data(self):
        self.write_names()
        self.assertFalse(any('Q' in n for n in NAMES))
        result = self.run_cli('--steps', '5', '--prompt', 'kaQ', *TINY)
        self.assertCleanError(result, quiet_stdout=False, mentions='prompt')
        self.make_checkpoint()
        self.assertCleanError(self.run_cli('--load', 'ck.json', '--prompt', 'Q'), mentions='prompt')

    def test_prompt_as_long_as_the_context(self):
        self.write_names()
        result = self.run_cli('--steps', '5', '--prompt', 'anananan', *TINY)   # 8 chars, block 8
        self.assertCleanError(result, quiet_stdout=False, mentions='prompt')

    def test_save_into_missing_directory_fails_before_training(self):
        self.write_names()
        result = self.run_cli('--steps', '20', '--save', os.path.join('no_such_dir', 'ck.json'), *TINY)
        self.assertCleanError(result, quiet_stdout=False, mentions='no_such_dir')
        self.assertFalse(os.path.exists(self.path('no_such_dir')))

    def test_save_onto_a_directory_fails_before_training(self):
        self.write_names()
        os.mkdir(self.path('out'))
        result = self.run_cli('--steps', '20', '--save', 'out', *TINY)
        self.assertCleanError(result, quiet_stdout=False, mentions='out')
        self.assertEqual(os.listdir(self.path('out')), [])

    def test_save_never_overwrites_a_file_that_is_not_a_checkpoint(self):
        # e.g. --save pointing at the training data itself
        path = self.write_names()
        with open(path, 'rb') as f:
            before = f.read()
        result = self.run_cli('--steps', '20', '--save', 'input.txt', *TINY)
        self.assertCleanError(result, quiet_stdout=False, mentions='not a microgpt checkpoint')
        with open(path, 'rb') as f:
            self.assertEqual(f.read(), before)

    def test_input_that_is_not_a_regular_file(self):
        if not os.path.exists('/dev/zero'):
            self.skipTest('no /dev/zero on this system')
        self.assertCleanError(self.run_cli('--input', '/dev/zero'), mentions='not a regular file')

    def test_model_too_large_is_refused_before_allocating(self):
        # 12 * 4096^2 weights in one block alone: far above the 10M cap, refused at once
        self.write_names()
        result = self.run_cli('--n-embd', '4096', '--n-head', '1', timeout=30)
        self.assertCleanError(result, quiet_stdout=False, mentions='parameters')
        self.assertIn('num params: ', result.stdout)

    def test_abbreviated_flags_are_refused(self):
        """`--step 5` is a typo, not --steps: argparse would take any unambiguous prefix as the
        flag it starts, and silently run with a setting the user never spelled out."""
        self.write_names()
        for args in (['--step', '5'], ['--temp', '0.8'], ['--n-emb', '8']):
            with self.subTest(args=args):
                result = self.run_cli('--steps', '2', *TINY, '--num-samples', '1', *args)
                self.assertCleanError(result, mentions=f'unrecognized arguments: {" ".join(args)}')

    def test_messages_say_what_to_fix(self):
        """Each mistake gets its own message, naming the flag and what it must be."""
        self.write_names()
        vocab = len(set(''.join(NAMES))) + 1
        e = 4096
        too_many = 2 * vocab * e + 8 * e + 12 * e * e   # wte, lm_head; wpe (block 8); one block
        checks_before_reading = [
            (['--n-layer', '0'], '--n-layer must be finite, >= 1'),
            (['--n-embd', '-8'], '--n-embd must be finite, >= 1'),
            (['--n-head', '0'], '--n-head must be finite, >= 1'),
            (['--block-size', '0'], '--block-size must be finite, >= 1'),
            (['--steps', '-1'], '--steps must be finite, >= 0'),
            (['--num-samples', '-1'], '--num-samples must be finite, >= 0'),
            (['--lr', '-0.5'], '--lr must be finite, >= 0'),
            (['--lr', 'nan'], '--lr must be finite, >= 0'),
            (['--lr', 'inf'], '--lr must be finite, >= 0'),
            (['--temperature', 'inf'], '--temperature must be finite'),
            (['--temperature', '0'], '--temperature must be finite and above 0'),
            (['--top-k', '-1'], '--top-k must be finite, >= 0'),
            (['--n-embd', '10', '--n-head', '4'], '--n-embd must be a multiple of --n-head'),
            (['--save', ''], '--save needs a file name, got an empty one'),
            (['--load', ''], '--load needs a file name, got an empty one'),
            (['--input', ''], '--input needs a file name, got an empty one'),
            (['--input', 'nope.txt'], 'input file not found (or not a regular file): nope.txt'),
        ]
        checks_after_reading = [   # these need the data: 'num docs' and such come first
            (['--prompt', 'anananan'], '--prompt must be shorter than --block-size'),
            (['--prompt', 'kaQ'], '--prompt'),
            (['--n-embd', str(e), '--n-head', '1'],
             f'{too_many} parameters: too many for pure Python (max 10 million)'),
            (['--save', 'input.txt'],
             '--save input.txt is not a microgpt checkpoint: not overwriting it'),
        ]
        for quiet, cases in ((True, checks_before_reading), (False, checks_after_reading)):
            for args, message in cases:
                with self.subTest(args=args):
                    result = self.run_cli('--steps', '2', *TINY, *args)
                    self.assertCleanError(result, quiet_stdout=quiet, mentions=message)
                    if args[1] == 'kaQ':   # (whatever the wording, it is about the characters)
                        self.assertRegex(result.stderr, r'(?i)characters?\b.*\bdata\b')


# 1b. The default input.txt ----------------------------------------------------------------------
class DefaultInputTest(CliTestCase):
    """The default input.txt is looked for in the current folder, then beside microgpt.py, so
    the lesson runs from any folder. Here a copy of microgpt.py sits in lesson/ and runs from
    elsewhere/."""

    def setUp(self):
        super().setUp()
        self.lesson, self.elsewhere = self.path('lesson'), self.path('elsewhere')
        os.mkdir(self.lesson)
        os.mkdir(self.elsewhere)
        self.script = shutil.copy(SCRIPT, os.path.join(self.lesson, 'microgpt.py'))

    def run_copy(self, *args, script=None):
        return run_script(['--steps', '2', *TINY, '--num-samples', '1', *args], self.elsewhere,
                          script=script or self.script)

    def test_found_beside_the_script(self):
        self.write_names(NAMES[:30], os.path.join('lesson', 'input.txt'))
        for script in (self.script, os.path.join('..', 'lesson', 'microgpt.py')):
            with self.subTest(script=script):
                result = self.run_copy(script=script)
                self.assertSucceeded(result, num_samples=1)
                self.assertIn(num_docs_line(30), result.lines)

    def test_the_current_folder_comes_first(self):
        self.write_names(NAMES[:30], os.path.join('lesson', 'input.txt'))
        self.write_names(NAMES, os.path.join('elsewhere', 'input.txt'))
        result = self.run_copy()
        self.assertSucceeded(result, num_samples=1)
        self.assertIn(num_docs_line(len(NAMES)), result.lines)

    def test_missing_from_both_places_names_both(self):
        beside = os.path.join(self.lesson, 'input.txt')
        self.assertCleanError(self.run_copy(), mentions=f'input.txt or {beside}')
        # A file named with --input is looked for only where it says.
        self.write_names(NAMES, os.path.join('lesson', 'names.txt'))
        result = self.run_copy('--input', 'names.txt')
        self.assertCleanError(result, mentions='input file not found (or not a regular file): names.txt')
        self.assertNotIn(self.lesson, result.stderr)


# 2. Inputs that must simply work ----------------------------------------------------------------
class InputsThatWorkTest(CliTestCase):

    def check_runs(self, content, expected_docs, *args, steps=20):
        """Train on `content` (str or bytes); the run must print samples made only of the data's
        characters, and the counts the test derives from `expected_docs`."""
        self.write('data.txt', content)
        result = self.run_cli('--input', 'data.txt', '--steps', str(steps), '--num-samples', '12',
                              '--temperature', '1.5', *TINY, *args)
        self.assertSucceeded(result, num_samples=12)
        chars = set(''.join(expected_docs))
        self.assertEqual(result.value('num docs:'), len(expected_docs), result)
        self.assertEqual(result.value('vocab size:'), len(chars) + 1, result)
        for sample in result.samples():
            self.assertLessEqual(set(sample), chars, (sample, result))
        self.assertNotRegex(result.stdout, r'\r(?!\n)')
        return result

    def test_crlf_line_endings(self):
        self.check_runs('\r\n'.join(NAMES) + '\r\n', NAMES)

    def test_unicode_letters(self):
        names = ['zoë', 'björk', 'łucja', 'なお', 'åsa', 'çelik', 'ñandú', 'øystein', 'ψυχή', 'сергей',
                 'zoë', 'björn', 'なおみ'] + NAMES[:20]
        result = self.check_runs('\n'.join(names) + '\n', names)
        # A third of the characters are non-ASCII: at temperature 1.5, some of the 12 samples
        # use them, and they come out as the same characters (check_runs: only data characters).
        self.assertTrue(any(ord(ch) > 127 for s in result.samples() for ch in s), result)

    def test_lines_longer_than_block_size(self):
        long_names = [n * 3 for n in NAMES[:12]]   # 9..18 characters, block_size 8
        docs = long_names + NAMES[12:30]
        result = self.check_runs('\n'.join(docs) + '\n', docs)
        notes = [line for line in result.lines if line.startswith('note:')]
        self.assertEqual(len(notes), 1, result)
        self.assertIn('block_size', notes[0])

    def test_lines_that_just_fit_block_size_give_no_note(self):
        # BOS + 7 characters + BOS = 9 tokens = block_size + 1: the model sees all of each doc.
        docs = [(n * 4)[:7] for n in NAMES[:30]]
        result = self.check_runs('\n'.join(docs) + '\n', docs, steps=5)
        self.assertFalse([line for line in result.lines if line.startswith('note:')], result)
        # One character more and every one of them is cut.
        docs = [(n * 4)[:8] for n in NAMES[:30]]
        result = self.check_runs('\n'.join(docs) + '\n', docs, steps=5)
        self.assertEqual(len([line for line in result.lines if line.startswith('note:')]), 1, result)
        n_train = len(docs) - len(docs) // 10   # all of them: the note counts the training docs
        self.assertIn(f'note: {n_train} training docs exceed block_size: only their start is seen',
                      result.lines)

    def test_single_line_file(self):
        result = self.check_runs('anna', ['anna'])   # and no newline at the end
        self.assertIsNone(result.report().group(2), result)   # no validation docs: no val loss
        self.assertIn(num_docs_line(1), result.lines)   # says that none is held out

    def test_duplicate_lines(self):
        docs = ['bob'] * 25 + ['bo'] * 5
        result = self.check_runs('\n'.join(docs) + '\n', docs)
        self.assertEqual(result.value('vocab size:'), 3)

    def test_utf8_byte_order_mark(self):
        result = self.check_runs('\ufeff' + '\n'.join(NAMES) + '\n', NAMES)
        self.assertNotIn('\ufeff', result.stdout)

    def test_blank_lines_and_surrounding_whitespace(self):
        content = '\n\n'.join('  ' + n + ' \t' for n in NAMES[:30]) + '\n   \n'
        self.check_runs(content, NAMES[:30])


# 3. Output format -------------------------------------------------------------------------------
class OutputFormatTest(CliTestCase):

    def test_counts_and_parameter_count(self):
        names = NAMES[:47]
        content = ''.join(f'  {n}\t\n' + ('\n  \n' if i % 5 == 0 else '') for i, n in enumerate(names))
        self.write('data.txt', content)
        n_layer, e, block = 2, 8, 6
        result = self.run_cli('--input', 'data.txt', '--steps', '5', '--n-layer', str(n_layer),
                              '--n-embd', str(e), '--n-head', '4', '--block-size', str(block),
                              '--num-samples', '3')
        self.assertSucceeded(result, num_samples=3)
        n_docs = len(names)
        vocab = len(set(''.join(names))) + 1
        per_layer = 4 * e * e + 2 * 4 * e * e            # attention wq wk wv wo, MLP fc1 fc2
        params = vocab * e + block * e + vocab * e + n_layer * per_layer   # + wte, wpe, lm_head
        n_val = n_docs // 10
        self.assertIn(f'num docs: {n_docs} ({n_val} held out for validation)', result.lines)
        self.assertIn(f'vocab size: {vocab}', result.lines)
        self.assertIn(f'num params: {params}', result.lines)

    def test_progress_lines_when_piped(self):
        result = self.train(steps=20)
        self.assertNotRegex(result.stdout, r'\r(?!\n)')   # no live, self-rewriting line in a pipe
        steps = result.steps()
        # First step, every tenth of the run (here every 2nd step), and the last one.
        self.assertEqual([int(m.group(1)) for m in steps], [1] + list(range(2, 21, 2)), result)
        self.assertTrue(all(m.group(2) == '20' for m in steps), result)
        for m in steps:
            self.assertTrue(0 < float(m.group(3)) < 20, m.group(0))
        # Progress comes before the report and the samples.
        last_step = max(i for i, line in enumerate(result.lines) if STEP_LINE.match(line))
        self.assertLess(last_step, result.lines.index('--- samples ---'))

    def test_progress_when_steps_do_not_divide_by_ten(self):
        result = self.train(steps=7)
        self.assertEqual([int(m.group(1)) for m in result.steps()], list(range(1, 8)), result)

    def test_samples_found_in_the_data_are_marked(self):
        # A sample that is one of the documents says whether the model trained on it. The test
        # finds those documents itself, as the run takes them: shuffled with the seed, the first
        # 10% held out, then one training document per step, from the first.
        pairs = [a + b for a in SYLLABLES for b in SYLLABLES]   # 256 names: the model makes
        docs = list(pairs)                                    # some up that it never saw
        random.Random(42).shuffle(docs)
        seen = set(docs[len(docs) // 10:][:150])
        result = self.train('--num-samples', '40', '--temperature', '0.8', steps=150, names=pairs)
        expected = ['seen in training' if s in seen else 'in the data, never seen' if s in docs
                    else None for s in result.samples()]
        self.assertEqual(result.marks(), expected, result)
        self.assertEqual(set(expected), {'seen in training', 'in the data, never seen', None})

    def test_number_of_samples(self):
        for n in (0, 1, 13):
            with self.subTest(num_samples=n):
                result = self.train('--num-samples', str(n), steps=3)
                sample_lines = [line for line in result.lines if SAMPLE_LINE.match(line)]
                self.assertEqual(len(sample_lines), n, result)
                self.assertEqual([int(SAMPLE_LINE.match(x).group(1)) for x in sample_lines],
                                 list(range(1, n + 1)))

    def test_loss_report_line(self):
        result = self.train(steps=20)
        vocab = len(set(''.join(NAMES))) + 1
        report = result.report()
        self.assertIsNotNone(report, result)
        self.assertIsNotNone(report.group(2), result)     # 50 docs: 5 held out, so a val loss
        self.assertEqual(int(report.group(3)), vocab)
        self.assertEqual(report.group(4), f'{math.log(vocab):.4f}')
        self.assertAlmostEqual(float(report.group(4)), math.log(vocab), places=4)
        for loss in (report.group(1), report.group(2)):
            self.assertTrue(0 < float(loss) < 2 * math.log(vocab), result)

    def test_train_loss_is_on_the_last_100_docs_trained_on(self):
        """300 docs (30 held out) and 150 steps: step s trained on train_docs[s], so the last 100
        docs trained on are train_docs[50:150]. The printed losses must be evaluate() on those and
        on the held-out docs, with the weights the run ended with, and not on the first 100."""
        self.write_names(make_names(300, seed=99), 'names.txt')
        after = ('[evaluate(train_docs[50:150], tokenizer, state_dict, config), '
                 'evaluate(train_docs[:100], tokenizer, state_dict, config), '
                 'evaluate(val_docs, tokenizer, state_dict, config), len(train_docs)]')
        result, value = self.run_then(after, '--input', 'names.txt', '--steps', '150', *TINY,
                                      '--num-samples', '1')
        self.assertSucceeded(result, num_samples=1)
        last_100, first_100, val, n_train = value
        self.assertEqual(n_train, 270)
        self.assertIn('measuring the loss on docs trained on: 100, held out: 30...', result.lines)
        report = result.report()
        self.assertEqual(report.group(1), f'{last_100:.4f}', result)
        self.assertNotEqual(report.group(1), f'{first_100:.4f}', result)   # (so it could fail)
        self.assertEqual(report.group(2), f'{val:.4f}', result)

    def test_reader_going_away_is_not_a_traceback(self):
        """`python3 microgpt.py | head -1`: the pipe closes while samples are still printed."""
        self.write_names()
        proc = subprocess.Popen([sys.executable, SCRIPT, '--steps', '0', '--num-samples', '100000']
                                + TINY, cwd=self.dir, env=child_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            first = proc.stdout.readline()
            proc.stdout.close()                  # like head: read a line, then leave
            _, stderr = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)
        self.assertEqual(first.decode('utf-8'), num_docs_line(len(NAMES)) + '\n')
        self.assertNotEqual(proc.returncode, 0)   # it could not print its samples
        self.assertEqual(proc.returncode, 1)      # ... and says so only by its status
        self.assertNotIn(b'Traceback', stderr, stderr.decode('utf-8', 'replace'))
        self.assertNotIn(b'Exception ignored', stderr, stderr.decode('utf-8', 'replace'))
        self.assertEqual(stderr, b'')

    def test_zero_steps_still_reports_and_samples(self):
        result = self.train('--num-samples', '4', steps=0)
        self.assertEqual(result.steps(), [])
        self.assertIsNotNone(result.report(), result)
        self.assertEqual(len(result.samples()), 4)
        # Nothing was trained on: no train loss, only the held-out one.
        self.assertIsNone(result.report().group(1), result)
        self.assertIsNotNone(result.report().group(2), result)
        self.assertIn('measuring the loss on docs trained on: 0, held out: 5...', result.lines)

    def test_a_tenth_is_held_out_when_there_are_ten_docs_or_more(self):
        for n_docs, val_part in ((9, False), (10, True), (21, True)):
            with self.subTest(n_docs=n_docs):
                result = self.train('--num-samples', '1', steps=3, names=NAMES[:n_docs])
                self.assertIn(num_docs_line(n_docs), result.lines)
                self.assertIn(f'measuring the loss on docs trained on: 3, held out: {n_docs // 10}...',
                              result.lines)
                self.assertIsNotNone(result.report().group(1), result)
                self.assertEqual(result.report().group(2) is not None, val_part, result)

    def test_training_took_line(self):
        result = self.train(steps=5)
        took = [line for line in result.lines if line.startswith('training took')]
        self.assertEqual(len(took), 1, result)
        self.assertRegex(took[0], TOOK_LINE)   # seconds only: "training took 0.3 s"

    def test_every_line_fits_80_columns(self):
        """The default model on the test data, with every kind of line: the note about long
        documents, progress, the report, the save, long samples (high temperature), then the
        same model loaded, the real data's counts (the widest numbers), and --help."""
        docs = NAMES + [n * 4 for n in NAMES[:10]]   # 12 to 24 characters, block_size is 16
        self.write_names(docs)
        runs = [self.run_cli('--steps', '30', '--temperature', '3', '--save', 'ck.json'),
                self.run_cli('--load', 'ck.json', '--temperature', '3'),
                self.run_cli('--input', os.path.join(ROOT, 'input.txt'), '--steps', '2',
                             '--num-samples', '2')]
        for result in runs:
            self.assertSucceeded(result)
        self.assertTrue([line for line in runs[0].lines if line.startswith('note:')], runs[0])
        self.assertTrue(any(len(s) > 12 for s in runs[1].samples()), runs[1])
        self.assertIn('measuring the loss on docs trained on: 2, held out: 100...', runs[2].lines)
        env = child_env()
        env.pop('COLUMNS', None)   # a terminal's own width, if the tests run in one
        runs.append(run_script(['--help'], self.dir, env=env))
        for result in runs:
            for line in result.lines:
                self.assertLessEqual(len(line), 80, line)


# 4. Help and default numbers --------------------------------------------------------------------
class HelpAndDefaultsTest(CliTestCase):

    def help_text(self):
        result = self.run_cli('--help')
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, '', result)
        self.assertNoTraceback(result)
        return result.stdout

    def test_help_mentions_every_flag(self):
        text = self.help_text()
        for flag in FLAGS:
            with self.subTest(flag=flag):
                self.assertRegex(text, re.escape(flag) + r'\b')
        self.assertFalse(os.listdir(self.dir))   # --help trains nothing and writes nothing

    def test_help_shows_every_default(self):
        text = ' '.join(self.help_text().split())
        documented = {'--input': 'input.txt', '--n-layer': '1', '--n-embd': '16', '--n-head': '4',
                      '--block-size': '16', '--steps': '1000', '--lr': '0.01', '--seed': '42',
                      '--temperature': '0.5', '--num-samples': '20', '--top-k': '0',
                      '--prompt': '', '--save': '', '--load': ''}   # (the README's table)
        self.assertEqual(set(documented), set(FLAGS))
        for flag, default in documented.items():
            with self.subTest(flag=flag):
                shown = re.search(re.escape(flag) + r' \S+ \(default: ([^)]*)\)', text)
                self.assertIsNotNone(shown, text)
                self.assertEqual(shown.group(1).strip(), default)

    def test_defaults_in_help_are_the_ones_used(self):
        text = ' '.join(self.help_text().split())
        steps = int(re.search(r'--steps \S+ [^()]*\(default: (\d+)\)', text).group(1))
        num_samples = int(re.search(r'--num-samples \S+ [^()]*\(default: (\d+)\)', text).group(1))
        default_input = re.search(r'--input \S+ [^()]*\(default: ([^)\s]+)\)', text).group(1)
        self.assertEqual((steps, num_samples, default_input), (1000, 20, 'input.txt'))  # documented
        self.write_names(name=default_input)
        result = self.run_cli('--steps', '0', *TINY)   # no --input, no --num-samples
        self.assertSucceeded(result, num_samples=num_samples)
        self.assertIn(num_docs_line(len(NAMES)), result.lines)
        # Without --steps the run is `steps` long: read the first progress line, then stop it.
        proc = subprocess.Popen([sys.executable, SCRIPT] + TINY, cwd=self.dir, env=child_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        self.addCleanup(proc.stdout.close)
        try:
            line = ''
            deadline = time.monotonic() + TIMEOUT
            while not line.startswith('step') and time.monotonic() < deadline:
                raw = proc.stdout.readline()
                if not raw:
                    break
                line = raw.decode('utf-8')
        finally:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        self.assertRegex(line, rf'^step +1 / +{steps} \|')


# 5. Determinism ---------------------------------------------------------------------------------
def without_timing(stdout):
    lines = [line for line in stdout.splitlines() if not line.startswith('training took')]
    return [re.sub(r' \| eta \d+ s', '', line) for line in lines]


class DeterminismTest(CliTestCase):

    def test_same_seed_same_output(self):
        a = self.train('--seed', '3', '--num-samples', '10', '--temperature', '1.0', steps=30)
        b = self.train('--seed', '3', '--num-samples', '10', '--temperature', '1.0', steps=30)
        self.assertEqual(without_timing(a.stdout), without_timing(b.stdout))
        self.assertEqual(len(a.samples()), 10)

    def test_different_seed_different_samples(self):
        a = self.train('--seed', '3', '--num-samples', '10', '--temperature', '1.0', steps=30)
        b = self.train('--seed', '4', '--num-samples', '10', '--temperature', '1.0', steps=30)
        self.assertNotEqual(a.samples(), b.samples())
        self.assertNotEqual(without_timing(a.stdout), without_timing(b.stdout))


# 6. Save and load -------------------------------------------------------------------------------
def expected_shapes(vocab, n_layer, e, block):
    shapes = {'wte': (vocab, e), 'wpe': (block, e), 'lm_head': (vocab, e)}
    for i in range(n_layer):
        for w in ('wq', 'wk', 'wv', 'wo'):
            shapes[f'layer{i}.attn.{w}'] = (e, e)
        shapes[f'layer{i}.mlp.fc1'] = (4 * e, e)   # e -> 4e: 4e rows of e inputs each
        shapes[f'layer{i}.mlp.fc2'] = (e, 4 * e)
    return shapes


def import_microgpt():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import microgpt
    return microgpt


class SaveLoadTest(CliTestCase):

    def test_checkpoint_is_json_with_the_documented_structure(self):
        self.train('--save', 'ck.json', '--n-layer', '2')
        ck = self.load_json('ck.json')
        self.assertEqual(set(ck), {'format', 'config', 'vocab', 'state_dict'})
        self.assertIsInstance(ck['format'], str)
        self.assertEqual(ck['config'], {'n_layer': 2, 'n_embd': 8, 'n_head': 2, 'block_size': 8})
        self.assertEqual(ck['vocab'], sorted(set(''.join(NAMES))))
        shapes = expected_shapes(len(ck['vocab']) + 1, 2, 8, 8)
        self.assertEqual(set(ck['state_dict']), set(shapes))
        for name, (rows, cols) in shapes.items():
            matrix = ck['state_dict'][name]
            self.assertEqual(len(matrix), rows, name)
            self.assertTrue(all(len(row) == cols for row in matrix), name)
            self.assertTrue(all(isinstance(x, float) and math.isfinite(x) for row in matrix for x in row))
        self.assertEqual(self.temp_files(), [])

    def test_load_prints_the_same_samples_as_the_run_that_saved(self):
        saved = self.make_checkpoint('ck.json', '--seed', '7', '--temperature', '0.8')
        loaded = self.run_cli('--load', 'ck.json', '--seed', '7', '--temperature', '0.8',
                              '--num-samples', '6')
        self.assertSucceeded(loaded, num_samples=6)
        self.assertNoTraining(self.__class__.strip_samples(loaded))
        self.assertEqual(loaded.lines[0], '--- samples ---', loaded)   # and nothing else but them
        self.assertEqual(len(loaded.lines), 7, loaded)
        self.assertEqual(loaded.samples(), saved.samples())
        self.assertEqual(loaded.marks(), [None] * 6)   # a checkpoint keeps no documents
        # And it is the weights that make them: another seed draws other samples.
        other = self.run_cli('--load', 'ck.json', '--seed', '8', '--temperature', '0.8',
                             '--num-samples', '6')
        self.assertSucceeded(other, num_samples=6)
        self.assertNotEqual(other.samples(), saved.samples())

    @staticmethod
    def strip_samples(result):
        """The load run minus its samples, to check it printed nothing about training."""
        return Result(result.returncode, '\n'.join(l for l in result.lines if not SAMPLE_LINE.match(l)
                                                    and l != '--- samples ---'), result.stderr)

    def test_load_with_prompt(self):
        self.make_checkpoint()
        prompt = NAMES[0][:2]
        result = self.run_cli('--load', 'ck.json', '--prompt', prompt, '--num-samples', '8',
                              '--temperature', '1.2')
        self.assertSucceeded(result, num_samples=8)
        for sample in result.samples():
            self.assertTrue(sample.startswith(prompt), (prompt, sample))
            self.assertLessEqual(len(sample), 8)   # never more than block_size characters

    def test_train_with_prompt(self):
        prompt = NAMES[3][:3]
        result = self.train('--prompt', prompt, '--num-samples', '5')
        self.assertEqual(len(result.samples()), 5)
        self.assertTrue(all(s.startswith(prompt) for s in result.samples()), result)

    def test_failed_run_leaves_existing_checkpoint_untouched(self):
        self.make_checkpoint()
        with open(self.path('ck.json'), 'rb') as f:
            before = f.read()
        mtime = os.stat(self.path('ck.json')).st_mtime_ns
        result = self.run_cli('--input', 'names.txt', '--steps', '5', *TINY, '--save', 'ck.json',
                              '--prompt', 'Q')
        self.assertCleanError(result, quiet_stdout=False)
        with open(self.path('ck.json'), 'rb') as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.stat(self.path('ck.json')).st_mtime_ns, mtime)
        self.assertEqual(self.temp_files(), [])
        # A successful run does replace it (so the check above could have failed).
        self.train('--save', 'ck.json', '--seed', '99')
        with open(self.path('ck.json'), 'rb') as f:
            self.assertNotEqual(f.read(), before)

    def test_save_checkpoint_is_atomic(self):
        """In-process: json.dump writes half the checkpoint, then fails."""
        microgpt = import_microgpt()
        config = microgpt.Config(n_embd=8, n_head=2, block_size=8)
        tokenizer = microgpt.Tokenizer('abcdef')
        path = self.path('ck.json')
        microgpt.save_checkpoint(path, config, tokenizer,
                                 microgpt.init_params(tokenizer.vocab_size, config, random.Random(0)))
        with open(path, 'rb') as f:
            before = f.read()
        json.loads(before.decode('utf-8'))
        new_weights = microgpt.init_params(tokenizer.vocab_size, config, random.Random(1))

        # The failure itself comes out, unchanged (one_line_errors() makes an OSError one line).
        for error in [RuntimeError('boom'), KeyboardInterrupt(), OSError(28, 'No space left on device')]:
            with self.subTest(error=type(error).__name__):
                def half_dump(obj, f, *args, **kwargs):
                    text = json.dumps(obj)
                    f.write(text[:len(text) // 2])
                    f.flush()
                    raise error

                with mock.patch.object(microgpt.json, 'dump', half_dump):
                    with self.assertRaises(type(error)) as raised:
                        microgpt.save_checkpoint(path, config, tokenizer, new_weights)
                self.assertIs(raised.exception, error)
                with open(path, 'rb') as f:
                    self.assertEqual(f.read(), before)
                self.assertEqual(self.temp_files(), [])
                self.assertEqual(os.listdir(self.dir), ['ck.json'])

        microgpt.save_checkpoint(path, config, tokenizer, new_weights)   # unpatched: it works
        with open(path, 'rb') as f:
            after = f.read()
        self.assertNotEqual(after, before)
        self.assertEqual(os.listdir(self.dir), ['ck.json'])
        loaded, tok, cfg = microgpt.load_checkpoint(path, microgpt.Config(), {})
        self.assertEqual(loaded['wte'][2][3].data, new_weights['wte'][2][3].data)

    def test_a_save_that_fails_is_one_line(self):
        """The disk fills up while the checkpoint is written, after training: the run says so in
        one line and exits 2 before any sample, leaving neither a file nor a temporary file."""
        before = ("import errno, json\n"
                  "def dump(obj, f, *args, **kwargs):\n"
                  "    f.write('{\"format\": \"microgpt-checkpoint-1\", ')\n"
                  "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
                  "json.dump = dump\n")
        self.write_names(name='names.txt')
        result, _ = self.run_then('None', '--input', 'names.txt', '--steps', '3', *TINY,
                                  '--save', 'ck.json', before=before)
        self.assertEqual(result.returncode, 2, result)
        self.assertNoTraceback(result)
        self.assertEqual(result.stderr.splitlines(),
                         [f'microgpt: error: [Errno {errno.ENOSPC}] No space left on device'], result)
        self.assertEqual(len(result.steps()), 3, result)   # it did train
        self.assertNotIn('--- samples ---', result.lines, result)
        self.assertFalse([line for line in result.lines if line.startswith('saved')], result)
        self.assertEqual(sorted(os.listdir(self.dir)), ['names.txt'])

    def test_ctrl_c_right_after_the_rename(self):
        """CPython can run a pending signal handler as soon as a builtin call returns, so a
        Ctrl-C that arrives while os.replace() runs raises KeyboardInterrupt inside the try block
        after the temporary file has already become the checkpoint. The interrupt must still come
        out as KeyboardInterrupt (so run() exits 130), not as an error from cleaning up a
        temporary file that no longer exists."""
        microgpt = import_microgpt()
        config = microgpt.Config(n_embd=8, n_head=2, block_size=8)
        tokenizer = microgpt.Tokenizer('abcdef')
        weights = microgpt.init_params(tokenizer.vocab_size, config, random.Random(0))
        path = self.path('ck.json')
        real_replace = os.replace

        def replace_then_interrupt(src, dst):
            real_replace(src, dst)
            raise KeyboardInterrupt

        with mock.patch.object(microgpt.os, 'replace', replace_then_interrupt):
            with self.assertRaises(KeyboardInterrupt):
                microgpt.save_checkpoint(path, config, tokenizer, weights)
        self.assertEqual(os.listdir(self.dir), ['ck.json'])
        microgpt.load_checkpoint(path, microgpt.Config(), {})   # complete and loadable

    @unittest.skipUnless(os.name == 'posix', 'file modes are POSIX')
    def test_checkpoint_is_not_private(self):
        self.make_checkpoint()
        self.assertTrue(os.stat(self.path('ck.json')).st_mode & 0o044, 'checkpoint unreadable to others')

    def test_checkpoint_strings_are_never_run(self):
        self.make_checkpoint()
        good = self.load_json('ck.json')
        code = "__import__('pathlib').Path('PWNED').touch()"
        edits = {
            'code as format': lambda ck: ck.__setitem__('format', code),
            'code as vocab entry': lambda ck: ck['vocab'].append(code),
            'code as config value': lambda ck: ck['config'].__setitem__('n_layer', code),
            'code as a weight': lambda ck: ck['state_dict']['wte'][0].__setitem__(0, code),
            'code as matrix name': lambda ck: ck['state_dict'].__setitem__(code, [[0.0]]),
            'code under an extra key': lambda ck: ck.update({'__reduce__': code, 'eval': code}),
        }
        for what, edit in edits.items():
            with self.subTest(what):
                ck = json.loads(json.dumps(good))
                edit(ck)
                self.dump_json('evil.json', ck)
                result = self.run_cli('--load', 'evil.json', '--num-samples', '2')
                self.assertIn(result.returncode, (0, 2), result)   # rejected, or just data
                self.assertNoTraceback(result)
                if result.returncode == 2:
                    self.assertCleanError(result)
                self.assertFalse(os.path.exists(self.path('PWNED')), what)


class TopKTest(CliTestCase):
    """--top-k k: each token is drawn from the k likeliest only. k = 1 is greedy decoding."""

    def test_top_k_1_samples_greedily_and_a_k_past_the_vocabulary_changes_nothing(self):
        self.make_checkpoint('ck.json')
        microgpt = import_microgpt()
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import test_model   # its greedy(): argmax decoding, computed there from gpt()
        state_dict, tokenizer, config = microgpt.load_checkpoint(self.path('ck.json'),
                                                                 microgpt.Config(), {})
        vocab = len(set(''.join(NAMES))) + 1
        self.assertEqual(tokenizer.vocab_size, vocab)
        for prompt in ('', NAMES[0][:2]):
            with self.subTest(prompt=prompt):
                expected = test_model.greedy(state_dict, tokenizer, config, prompt)
                args = ['--load', 'ck.json', '--temperature', '1.5', '--num-samples', '5',
                        '--prompt', prompt]
                greedy = self.run_cli(*args, '--top-k', '1')
                self.assertSucceeded(greedy, num_samples=5)
                self.assertEqual(greedy.samples(), [expected] * 5, greedy)
                # Without top-k, the same seed and temperature draw samples that differ; with k
                # at least the vocabulary's size, exactly the same ones.
                everything = self.run_cli(*args)
                self.assertSucceeded(everything, num_samples=5)
                self.assertGreater(len(set(everything.samples())), 1, everything)
                past = self.run_cli(*args, '--top-k', str(vocab if prompt else 1000))
                self.assertEqual(past.stdout, everything.stdout, past)


# 7. Ctrl-C --------------------------------------------------------------------------------------
class LineReader:
    """Reads a pipe in a thread, so a test can wait for a line without blocking forever."""

    def __init__(self, stream):
        self.lines, self.queue = [], queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line)
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self.queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                return None
            if re.search(pattern, line):
                return line

    def snapshot(self):
        """What has been read so far (for failure messages; does not wait)."""
        return ''.join(self.lines)

    def text(self):
        """Everything, once the stream has closed."""
        self.thread.join(TIMEOUT)
        return ''.join(self.lines)


@unittest.skipUnless(POSIX_SIGNALS, 'sends SIGINT to a child process (POSIX only)')
class CtrlCTest(CliTestCase):

    def start(self, *args, env=None):
        proc = subprocess.Popen([sys.executable, SCRIPT] + list(args), cwd=self.dir,
                                env=env or child_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, encoding='utf-8', bufsize=1,
                                preexec_fn=default_sigint)

        def stop():
            if proc.poll() is None:
                proc.kill()
            proc.wait(TIMEOUT)
            proc.stdout.close()
            proc.stderr.close()
        self.addCleanup(stop)
        return proc, LineReader(proc.stdout), LineReader(proc.stderr)

    def test_first_ctrl_c_stops_training_then_reports_saves_and_samples(self):
        self.write_names()
        proc, out, err = self.start('--steps', '100000', *TINY, '--num-samples', '5', '--save', 'ck.json')
        self.assertIsNotNone(out.wait_for(r'^step +1 / 100000 \|', TIMEOUT), out.snapshot())
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=60)
        stdout, stderr = out.text(), err.text()
        result = Result(status, stdout, stderr)
        self.assertEqual(status, 0, result)
        self.assertNoTraceback(result)
        self.assertRegex(stdout + stderr, r'(?i)stop\w* early|stopping')
        self.assertEqual(stderr, '\nCtrl-C: stopping after this step (press again to quit now)\n')
        self.assertIsNotNone(result.report(), result)
        self.assertEqual(len(result.samples()), 5, result)
        # The report covers the steps taken, k, up to 100 of them; no progress line goes past k.
        measured = [m for m in map(MEASURING_LINE.match, result.lines) if m]
        self.assertEqual(len(measured), 1, result)
        trained_on, held_out = int(measured[0].group(1)), int(measured[0].group(2))
        self.assertEqual(held_out, len(NAMES) // 10, result)
        self.assertTrue(1 <= trained_on <= 100, result)   # stopped long before step 100000
        shown = [int(m.group(1)) for m in result.steps()]
        self.assertEqual(shown[0], 1, result)
        if trained_on < 100:
            self.assertLessEqual(max(shown), trained_on, result)
        # (All 100000 steps would take minutes: exiting within the timeout means it stopped early.)
        self.assertTrue(os.path.isfile(self.path('ck.json')), result)
        self.assertEqual(self.temp_files(), [])
        loaded = self.run_cli('--load', 'ck.json', '--num-samples', '5')
        self.assertSucceeded(loaded, num_samples=5)
        self.assertEqual(loaded.samples(), result.samples())   # same weights, same default seed

    def test_second_ctrl_c_quits_at_once(self):
        # A slower model and 2000 docs make the work after training take seconds, even on PyPy,
        # so the second Ctrl-C lands before the save. (Stopped after a step or two, the loss
        # report covers those few docs and 100 held-out ones: n_embd 64 makes that last.)
        rng = random.Random(5)
        self.write_names([''.join(rng.choice('abcdefghijklmnop') for _ in range(rng.randint(10, 14)))
                          for _ in range(2000)])
        # The test waits for the first Ctrl-C's message on stderr before pressing again. PyPy
        # block-buffers a piped stderr (CPython line-buffers it): unbuffered, the message comes
        # when it is printed, not at exit.
        env = dict(child_env(), PYTHONUNBUFFERED='1')
        proc, out, err = self.start('--steps', '100000', '--n-embd', '64', '--n-head', '2',
                                    '--block-size', '16', '--save', 'ck.json', env=env)
        self.assertIsNotNone(out.wait_for(r'^step +1 / 100000 \|', TIMEOUT), out.snapshot())
        proc.send_signal(signal.SIGINT)
        self.assertIsNotNone(err.wait_for(r'(?i)stop', 60), err.snapshot())
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        status = proc.wait(timeout=60)
        elapsed = time.monotonic() - start
        result = Result(status, out.text(), err.text())
        self.assertEqual(status, 130, result)
        self.assertLess(elapsed, 10, result)
        self.assertNoTraceback(result)
        self.assertEqual(result.stderr.splitlines()[-1], 'microgpt: interrupted', result)
        self.assertEqual(result.samples(), [], result)
        self.assertFalse(os.path.exists(self.path('ck.json')), result)
        self.assertEqual(self.temp_files(), [])


# 8. Numerical robustness ------------------------------------------------------------------------
class NumericalRobustnessTest(CliTestCase):

    def check_survives(self, lr, steps):
        self.write_names()
        result = self.run_cli('--steps', str(steps), '--lr', lr, *TINY, '--num-samples', '3')
        self.assertIn(result.returncode, (0, 2), result)   # finishes, or stops cleanly
        self.assertNoTraceback(result)
        if result.returncode == 0:
            self.assertEqual(len(result.samples()), 3, result)
        else:
            err = result.stderr.splitlines()
            self.assertEqual(len(err), 1, result)
            self.assertTrue(err[0].startswith('microgpt: error:'), result)
            self.assertEqual(result.samples(), [], result)

    def test_large_learning_rate(self):
        self.check_survives('2', 200)

    def test_huge_learning_rates(self):
        """Finite but absurd --lr values are accepted by check_config, so they must end in samples
        or in the one-line error, never in a traceback."""
        for lr in ('1e120', '1e200', '1.7e308'):
            with self.subTest(lr=lr):
                self.check_survives(lr, 50)


class ReviewFindingsTest(CliTestCase):
    """Cases found by trying the file as a new user would."""

    def test_a_blow_up_in_the_last_update_is_one_line_not_a_traceback(self):
        # One step at an absurd learning rate: the only loss the divergence check sees is the
        # first, still fine; the update after it blows the weights up. Reporting or sampling
        # must then stop with the one-line error (Python 3.11+ would raise in random.choices,
        # 3.9 and PyPy would print empty samples).
        self.write_names()
        result = self.run_cli('--steps', '1', '--lr', '1e200', '--num-samples', '2', *TINY)
        self.assertEqual(result.returncode, 2, result)
        self.assertNoTraceback(result)
        err = result.stderr.splitlines()
        self.assertEqual(len(err), 1, result)
        self.assertTrue(err[0].startswith('microgpt: error:'), result)
        self.assertEqual(result.samples(), [], result)

    def test_a_small_output_into_a_closed_pipe_exits_quietly(self):
        # Everything fits in the output buffer, so the closed pipe only shows when Python
        # flushes it: that must happen inside the run, not at interpreter exit.
        self.write_names()
        proc = subprocess.Popen([sys.executable, SCRIPT, '--steps', '2', '--num-samples', '3']
                                + TINY, cwd=self.dir, env=child_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()   # the reader has gone before anything was read
        _, stderr = proc.communicate(timeout=TIMEOUT)
        self.assertEqual(proc.returncode, 1, stderr)
        self.assertEqual(stderr, b'')

    def test_pretty_printed_checkpoint_loads(self):
        self.make_checkpoint('ck.json', '--seed', '5')
        with open(self.path('ck.json'), encoding='utf-8') as f:
            checkpoint = json.load(f)
        with open(self.path('pretty.json'), 'w', encoding='utf-8') as f:
            json.dump(checkpoint, f, indent=2)
        a = self.run_cli('--load', 'ck.json', '--num-samples', '3', '--seed', '5')
        b = self.run_cli('--load', 'pretty.json', '--num-samples', '3', '--seed', '5')
        self.assertSucceeded(b, num_samples=3)
        self.assertEqual(a.samples(), b.samples())

    def test_save_to_a_folder_name_fails_before_training(self):
        self.write_names()
        result = self.run_cli('--steps', '20', '--save', 'newdir' + os.sep, *TINY)
        self.assertCleanError(result, quiet_stdout=False, mentions='--save')
        self.assertFalse(os.path.exists(self.path('newdir')))

    def test_checkpoint_parts_of_the_wrong_type_or_size(self):
        self.make_checkpoint()
        good = self.load_json('ck.json')
        edits = {
            'config is a list': lambda ck: ck.__setitem__('config', [1, 8, 2, 8]),
            'state_dict is a list': lambda ck: ck.__setitem__('state_dict', [[0.0]]),
            'n_head is a float': lambda ck: ck['config'].__setitem__('n_head', 2.0),
            'an extra setting': lambda ck: ck['config'].__setitem__('num_samples', 3),
            'a huge block_size': lambda ck: ck['config'].__setitem__('block_size', 10 ** 12),
        }
        for what, edit in edits.items():
            with self.subTest(what):
                ck = json.loads(json.dumps(good))
                edit(ck)
                self.dump_json('bad.json', ck)
                self.assertCleanError(self.run_cli('--load', 'bad.json', timeout=30),
                                      mentions='bad.json: ' + DAMAGED)


def count_docs(path):
    with open(path, encoding='utf-8-sig') as f:
        return sum(1 for line in f if line.strip())


# Progress's rule: training has diverged when the mean of the last 100 step losses is not below
# this many times ln(vocab size), the loss of a uniform guess.
DIVERGED_AT = 30


class TtyStdout(io.StringIO):
    def isatty(self):   # a terminal: Progress draws its live line
        return True


class ProgressEndTest(unittest.TestCase):
    """Progress covers training only: the save and the report run after it, with Ctrl-C and the
    collector as they were before training. How training ends matters after it."""

    def test_an_error_during_training_starts_on_a_line_of_its_own(self):
        microgpt = import_microgpt()
        out = TtyStdout()
        with contextlib.redirect_stdout(out), self.assertRaises(OverflowError):
            with microgpt.Progress(microgpt.Config(steps=10), 27) as progress:
                progress.log(1, 3.0)
                raise OverflowError('math range error')   # e.g. raised by the second step
        self.assertTrue(out.getvalue().startswith('\rstep    1 /   10 | loss 3.0000'), out.getvalue())
        self.assertTrue(out.getvalue().endswith('\n'), out.getvalue())   # the live line ended
        # Training that ended normally has ended its line already: no blank line after it.
        out = TtyStdout()
        with contextlib.redirect_stdout(out), self.assertRaises(OverflowError):
            with microgpt.Progress(microgpt.Config(steps=1), 27) as progress:
                progress.log(1, 3.0)
                raise OverflowError('math range error')   # e.g. raised by the report
        self.assertRegex(out.getvalue(), r'^\rstep    1 /    1 \| loss 3\.0000 \| eta 0 s   \n'
                                         r'training took \d+\.\d s\n$')

    def test_after_training_a_ctrl_c_quits_at_once(self):
        microgpt = import_microgpt()
        # Once the last step is logged, a Ctrl-C (while its line is printed) quits.
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()) as err, \
                microgpt.Progress(microgpt.Config(steps=3), 27) as progress:
            for step in range(1, 4):
                self.assertEqual(progress.log(step, 3.0), step == 3)   # the last stops
            with self.assertRaises(KeyboardInterrupt):
                progress.interrupt(signal.SIGINT, None)
            self.assertEqual(err.getvalue(), '')   # no "stopping after this step"
        # After the block (the save, the report; and --steps 0, which trains nothing), Ctrl-C
        # is Python's own again: KeyboardInterrupt, which one_line_errors() makes status 130.
        for steps in (0, 3):
            before = signal.getsignal(signal.SIGINT)
            with self.subTest(steps=steps), contextlib.redirect_stdout(io.StringIO()):
                with microgpt.Progress(microgpt.Config(steps=steps), 27) as progress:
                    self.assertEqual(signal.getsignal(signal.SIGINT), progress.interrupt)
                    self.assertFalse(gc.isenabled())
                    for step in range(1, steps + 1):
                        progress.log(step, 3.0)
                self.assertIs(signal.getsignal(signal.SIGINT), before)
                self.assertTrue(gc.isenabled())
        # During training, the first Ctrl-C only asks to stop after the step.
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()) as err, \
                microgpt.Progress(microgpt.Config(steps=3), 27) as progress:
            progress.log(1, 3.0)
            progress.interrupt(signal.SIGINT, None)
            self.assertIn('stopping after this step', err.getvalue())
            self.assertTrue(progress.log(2, 3.0))

    def test_a_damaged_checkpoint_is_one_error_not_a_chain(self):
        microgpt = import_microgpt()
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'ck.json')
            with open(path, 'w', encoding='utf-8') as f:
                f.write('{"format": "microgpt-checkpoint-1", "config": {}}')   # no state_dict
            with self.assertRaises(microgpt.InputError) as caught:
                microgpt.load_checkpoint(path, microgpt.Config(), {})
        self.assertEqual(str(caught.exception),
                         f"{path}: not a usable microgpt checkpoint (damaged or edited)")
        self.assertTrue(caught.exception.__suppress_context__)   # a notebook shows one traceback


class DivergenceTest(CliTestCase):
    """Training that has diverged stops with one line, before it reports, saves or samples."""

    def assertDiverged(self, result, steps):
        self.assertEqual(result.returncode, 2, result)
        self.assertNoTraceback(result)
        err = result.stderr.splitlines()
        self.assertEqual(len(err), 1, result)
        stopped = DIVERGED.match(err[0])
        self.assertIsNotNone(stopped, result)
        self.assertTrue(1 <= int(stopped.group(1)) <= steps, result)
        self.assertNotIn('--- samples ---', result.lines, result)
        self.assertEqual(result.samples(), [], result)
        self.assertIsNone(result.report(), result)
        self.assertFalse([line for line in result.lines if line.startswith('measuring')], result)

    def test_exploding_learning_rates_stop_training(self):
        """The cases from the issue: the default data and model at --lr 2, 10 and 1e30."""
        n_docs = count_docs(os.path.join(ROOT, 'input.txt'))
        for lr in ('2', '10', '1e30'):
            with self.subTest(lr=lr):
                # (No --input: the default input.txt, found beside microgpt.py.)
                result = self.run_cli('--lr', lr, '--save', 'ck.json')
                self.assertIn(num_docs_line(n_docs), result.lines)
                self.assertDiverged(result, 1000)
                self.assertEqual(os.listdir(self.dir), [])   # a broken model is not saved

    def test_a_loss_that_spikes_once_keeps_training(self):
        """99 docs 'aaaaaaa' and one 'bbbbbbb': by the time the odd one comes up, the model is so
        sure of 'a' that its loss on it is above the limit (about 3 times). That is one step; the
        next ones are back near 0, so the mean of the last 100 stays low and training goes on."""
        self.write('ab.txt', 'aaaaaaa\n' * 99 + 'bbbbbbb\n')
        limit = DIVERGED_AT * math.log(3)   # vocab: a, b and BOS
        result, value = self.run_then('[losses, train_docs]', '--input', 'ab.txt', '--steps', '70',
                                      '--lr', '0.1', '--seed', '4', *TINY, '--num-samples', '2')
        self.assertSucceeded(result, num_samples=2)
        losses, train_docs = value
        self.assertEqual(len(losses), 70)
        odd = train_docs.index('bbbbbbb')   # (seed 4 puts it in training, at step 52)
        self.assertLess(odd, 60)
        self.assertGreater(losses[odd], limit, result)   # the spike
        self.assertLess(max(losses[:odd] + losses[odd + 1:]), limit, result)


class DivergenceRuleTest(unittest.TestCase):
    """Progress.log on made-up losses, in-process, for a vocabulary of 27."""

    LIMIT = DIVERGED_AT * math.log(27)

    def feed(self, losses):
        """The step at which log() stops training (None if it never does), and its message."""
        microgpt = import_microgpt()
        progress = microgpt.Progress(microgpt.Config(steps=1000), 27)
        with contextlib.redirect_stdout(io.StringIO()), progress:
            for step, loss in enumerate(losses, 1):
                try:
                    self.assertFalse(progress.log(step, loss))   # (True would mean Ctrl-C)
                except microgpt.InputError as e:
                    return step, str(e)
        return None, None

    # One loss of 60 times the limit among 99 of 3.0 averages 0.6 limit + 2.97: below the limit.
    SPIKE = [3.0] * 150 + [60 * LIMIT] + [3.0] * 149

    def test_one_huge_loss_among_normal_ones_does_not_stop_training(self):
        self.assertEqual(self.feed(self.SPIKE), (None, None))

    def test_a_sustained_high_loss_stops_training(self):
        high = 1.5 * self.LIMIT
        # After the spike has left the window, k losses of `high` among 100 - k of 3: the mean
        # (high k + 3 (100 - k)) / 100 reaches the limit at the first k >= (100 limit - 300) /
        # (high - 3).
        k = math.ceil((100 * self.LIMIT - 300) / (high - 3))
        self.assertTrue(50 < k < 100, k)
        step, message = self.feed(self.SPIKE + [high] * 200)
        self.assertEqual(step, 300 + k)
        self.assertEqual(message, f'training diverged at step {300 + k}: try a smaller --lr')

    def test_the_limit_is_a_multiple_of_a_uniform_guess(self):
        microgpt = import_microgpt()
        for vocab_size in (3, 27, 1000):
            progress = microgpt.Progress(microgpt.Config(), vocab_size)
            self.assertAlmostEqual(progress.limit, DIVERGED_AT * math.log(vocab_size))

    def test_a_loss_that_is_not_a_number_stops_training(self):
        self.assertEqual(self.feed([3.0] * 50 + [math.nan] + [3.0] * 10)[0], 51)


# 9. Jupyter notebook ----------------------------------------------------------------------------
NOTEBOOK_CELL = r'''
import os, re, sys, types
script, workdir, fake_kernel = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
if fake_kernel:
    sys.modules['ipykernel'] = types.ModuleType('ipykernel')
sys.argv = ['/x/ipykernel_launcher.py', '-f', '/tmp/kernel-1234.json']
os.chdir(workdir)
with open(script, encoding='utf-8') as f:
    source = f.read()
# The notebook user edits the default number of steps in the Config cell.
source, count = re.subn(r'(?m)^(\s*steps: int = )\d+', r'\g<1>5', source)
if count != 1:
    sys.stderr.write('test setup: expected one "steps: int = " line, found %d\n' % count)
    sys.exit(99)
exec(compile(source, script, 'exec'), {'__name__': '__main__'})
'''


class NotebookTest(CliTestCase):

    def run_cell(self, fake_kernel):
        self.write_names()
        proc = subprocess.run([sys.executable, '-c', NOTEBOOK_CELL, SCRIPT, self.dir,
                               '1' if fake_kernel else '0'],
                              cwd=self.dir, env=child_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
        result = Result(proc.returncode, proc.stdout.decode('utf-8'), proc.stderr.decode('utf-8'))
        self.assertNotEqual(result.returncode, 99, result)
        return result

    def test_runs_in_a_jupyter_kernel(self):
        result = self.run_cell(fake_kernel=True)
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stderr, '', result)
        self.assertIn(num_docs_line(len(NAMES)), result.lines)   # read ./input.txt
        self.assertEqual([int(m.group(1)) for m in result.steps()], [1, 2, 3, 4, 5], result)
        self.assertTrue(all(m.group(2) == '5' for m in result.steps()), result)
        self.assertEqual(len(result.samples()), 20, result)      # the default --num-samples

    def test_kernel_arguments_are_rejected_outside_a_kernel(self):
        result = self.run_cell(fake_kernel=False)
        self.assertCleanError(result, mentions='unrecognized arguments')
        self.assertIn('-f', result.stderr)


# 10. Training learns ----------------------------------------------------------------------------
class LearningTest(CliTestCase):

    def test_short_training_run_lowers_the_loss(self):
        result = self.train(steps=200)
        vocab = len(set(''.join(NAMES))) + 1
        uniform = math.log(vocab)
        report = result.report()
        self.assertIsNotNone(report, result)
        train_loss, val_loss = float(report.group(1)), float(report.group(2))
        # Untrained, the model is close to a uniform guess; 200 steps must beat it clearly.
        self.assertLess(train_loss, uniform - 0.5, result)
        self.assertLess(val_loss, uniform, result)
        losses = [float(m.group(3)) for m in result.steps()]
        self.assertLess(abs(losses[0] - uniform), 0.5, result)   # starts near ln(V)
        self.assertLess(sum(losses[-5:]) / 5, losses[0] - 0.5, result)


# 11. one_line_errors(), on its own --------------------------------------------------------------
ONE_LINE_ERRORS = r'''
import sys, types
root, case, notebook = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
sys.path.insert(0, root)
import microgpt
if notebook:   # IPython (a notebook, or %run in IPython): it is imported before the cell runs
    sys.modules['IPython'] = types.ModuleType('IPython')
errors = {'input': lambda: microgpt.InputError('--steps must be finite, >= 0'),
          'oserror': lambda: OSError(28, 'No space left on device'),
          'unicode': lambda: UnicodeDecodeError('utf-8', b'\xff', 0, 1, 'invalid start byte'),
          'overflow': lambda: OverflowError('math range error'),
          'memory': lambda: MemoryError(),
          'interrupt': lambda: KeyboardInterrupt(),
          'bug': lambda: ZeroDivisionError('a bug')}
with microgpt.one_line_errors():
    raise errors[case]()
print('went on')
'''


class OneLineErrorsTest(CliTestCase):
    """Each expected failure is one line on stderr and an exit status; a bug stays a traceback.
    In IPython the line is printed and the session goes on (no SystemExit)."""

    EXPECTED = {   # case: (status, stderr)
        'input': (2, 'microgpt: error: --steps must be finite, >= 0\n'),
        'oserror': (2, 'microgpt: error: [Errno 28] No space left on device\n'),
        'unicode': (2, "microgpt: error: 'utf-8' codec can't decode byte 0xff in position 0: "
                       "invalid start byte\n"),
        'overflow': (2, 'microgpt: error: a number grew past the largest float: try a smaller --lr\n'),
        'memory': (2, 'microgpt: error: out of memory: try a smaller model\n'),
        'interrupt': (130, '\nmicrogpt: interrupted\n'),
    }

    def run_case(self, case, notebook):
        return self.run_python(ONE_LINE_ERRORS, ROOT, case, '1' if notebook else '0')

    def test_on_the_command_line_each_is_one_line_and_a_status(self):
        for case, (status, stderr) in self.EXPECTED.items():
            with self.subTest(case):
                result = self.run_case(case, notebook=False)
                self.assertEqual((result.returncode, result.stderr, result.stdout),
                                 (status, stderr, ''), result)

    def test_in_ipython_the_line_is_printed_and_the_session_goes_on(self):
        for case, (status, stderr) in self.EXPECTED.items():
            with self.subTest(case):
                result = self.run_case(case, notebook=True)
                self.assertEqual((result.returncode, result.stderr, result.stdout),
                                 (0, stderr, 'went on\n'), result)

    def test_a_bug_is_not_hidden(self):
        for notebook in (False, True):
            with self.subTest(notebook=notebook):
                result = self.run_case('bug', notebook)
                self.assertEqual(result.returncode, 1, result)
                self.assertIn('Traceback', result.stderr, result)
                self.assertIn('ZeroDivisionError: a bug', result.stderr, result)
                self.assertNotIn('microgpt: error', result.stderr, result)


if __name__ == '__main__':
    unittest.main()


class NotebookSettingsTest(unittest.TestCase):
    """In a notebook, settings come from `replace(config, ...)`, not from argparse, so nothing has
    turned them into the right type: check_config does, for every field. A float where a whole
    number belongs (range(2.0), a slice of 2.0) or None where text belongs would otherwise fail
    with a traceback deep in training or sampling."""

    def test_a_value_of_the_wrong_type_is_one_clear_error(self):
        microgpt = import_microgpt()
        cases = [('n_layer', 2.0, '--n-layer', 'int'), ('steps', 3e3, '--steps', 'int'),
                 ('top_k', 2.0, '--top-k', 'int'), ('top_k', True, '--top-k', 'int'),
                 ('seed', None, '--seed', 'int'), ('temperature', None, '--temperature', 'float'),
                 ('learning_rate', '0.1', '--lr', 'float'), ('prompt', None, '--prompt', 'str'),
                 ('input', None, '--input', 'str'), ('save', 5, '--save', 'str')]
        for name, value, flag, kind in cases:
            with self.subTest(name=name, value=value):
                config = microgpt.replace(microgpt.Config(), **{name: value})
                with self.assertRaises(microgpt.InputError) as caught:
                    microgpt.check_config(config)
                self.assertEqual(str(caught.exception), f'{flag} must be of type {kind}')

    def test_an_int_will_do_for_a_float(self):
        microgpt = import_microgpt()
        for name, value in (('learning_rate', 1), ('learning_rate', 0), ('temperature', 2)):
            config = microgpt.replace(microgpt.Config(), **{name: value})
            self.assertIs(microgpt.check_config(config), config)
