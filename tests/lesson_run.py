"""The default run of microgpt.py, made once per test process and shared by the test modules that
need a trained model (the walkthrough's examples, the figures): `python3 microgpt.py` with no
flags, its output captured, its globals kept as a notebook or `python3 -i` would hold them."""
import contextlib
import functools
import io
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_PATH = os.path.join(ROOT, 'microgpt.py')


@functools.lru_cache(maxsize=None)
def default_run():
    """(the run's globals, what it printed). Callers must not change the objects they get."""
    argv, output = sys.argv, io.StringIO()
    sys.argv = ['microgpt.py']   # the default run, exactly: no flags
    try:
        with contextlib.redirect_stdout(output):
            namespace = runpy.run_path(CODE_PATH, run_name='__main__')
    finally:
        sys.argv = argv
    return namespace, output.getvalue()
