"""Benchmark microgpt.

Two measurements:

    python3 scripts/bench.py                        # per model size: ms per training step,
                                                    # per trained token, per sampled token, peak MB
    python3 scripts/bench.py --repeats 3 --sizes default
    python3 scripts/bench.py --against OLD.py       # the whole default run, side by side with
                                                    # another version of microgpt.py
    python3 scripts/bench.py --recording            # training steps recorded (tape) against
                                                    # not (graph searched), side by side
    pypy3 scripts/bench.py ...                      # the same on PyPy

The per-size measurement runs each size in its own process, so that its peak memory (the
process's maximum resident set size) is its own; steps use the documents of input.txt in the
order training would. The side-by-side measurement runs `python microgpt.py` (no flags) for this
version and for OLD.py in turn, alternating them so that a machine that speeds up or slows down
affects both alike, and reports the median wall time of each, its spread, the ratio of the
medians, the median of the run-by-run ratios and each run's peak memory. It also checks that
both versions print the same step losses and samples. Peak memory comes from the `resource`
module and `os.wait4`: Linux and macOS only. On a busy or virtual machine, pin the runs to one
core (`taskset -c 1 python3 scripts/bench.py ...`) and take more runs.
"""
import argparse
import contextlib
import gc
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'microgpt.py')

SIZES = {  # name: (n_layer, n_embd, n_head, block_size, training steps per timed run)
    'default': (1, 16, 4, 16, 100),
    'L2-E32': (2, 32, 4, 16, 20),
    'L4-E32': (4, 32, 4, 16, 10),
    'L2-E64': (2, 64, 4, 16, 5),
    'L4-E64-B64': (4, 64, 4, 64, 3),
}


def all_weights(state_dict):
    """Every weight of the model in one list, as train() hands them to Adam."""
    return [p for matrix in state_dict.values() for row in matrix for p in row]


def measure(size, repeats):
    """Time one model size in this process; returns a dict of medians."""
    sys.path.insert(0, ROOT)
    import microgpt
    n_layer, n_embd, n_head, block_size, steps = SIZES[size]
    config = microgpt.Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size)
    docs = microgpt.load_docs(os.path.join(ROOT, 'input.txt'))
    rng = random.Random(config.seed)
    rng.shuffle(docs)
    tokenizer = microgpt.Tokenizer(''.join(docs))
    state_dict = microgpt.init_params(tokenizer.vocab_size, config, rng)
    optimizer = microgpt.Adam(all_weights(state_dict))
    gc.disable()   # as microgpt's Progress does while training
    step_ms, token_ms, sample_ms = [], [], []
    next_doc = 0
    for _ in range(repeats + 1):   # the first run only warms up
        tokens_seen = 0
        start = time.perf_counter()
        for _ in range(steps):
            tokens = microgpt.doc_tokens(docs[next_doc], tokenizer, block_size)
            next_doc += 1
            with microgpt.Value.recording():   # as train() does
                loss = microgpt.document_loss(tokens, state_dict, config)
                loss.backward()
            optimizer.step(config.learning_rate)
            tokens_seen += len(tokens) - 1
        seconds = time.perf_counter() - start
        step_ms.append(1000 * seconds / steps)
        token_ms.append(1000 * seconds / tokens_seen)
        sampled, start = 0, time.perf_counter()
        sample_rng = random.Random(0)
        while sampled < 100:
            sampled += len(microgpt.generate(state_dict, tokenizer, config, sample_rng)) + 1
        sample_ms.append(1000 * (time.perf_counter() - start) / sampled)
        gc.collect()   # (PyPy's collector lets garbage pile up while it is disabled)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # kilobytes on Linux
    return {'size': size, 'params': len(optimizer.params), 'ms_per_step': statistics.median(step_ms[1:]),
            'ms_per_train_token': statistics.median(token_ms[1:]),
            'ms_per_sampled_token': statistics.median(sample_ms[1:]), 'peak_mb': peak_kb / 1024}


def recording_against_search(runs, steps=300):
    """The default model's training steps as train() takes them, inside Value.recording() (the
    tape is replayed), against the same steps outside one (backward() searches the graph),
    alternating, in this process; the same documents and weights either way."""
    sys.path.insert(0, ROOT)
    import microgpt
    config = microgpt.Config(steps=steps)
    docs = microgpt.load_docs(os.path.join(ROOT, 'input.txt'))
    random.Random(config.seed).shuffle(docs)
    tokenizer = microgpt.Tokenizer(''.join(docs))

    def run(record):
        state_dict = microgpt.init_params(tokenizer.vocab_size, config, random.Random(config.seed))
        optimizer = microgpt.Adam(all_weights(state_dict))
        gc.disable()   # as microgpt's Progress does while training
        start = time.perf_counter()
        for step in range(steps):
            tokens = microgpt.doc_tokens(docs[len(docs) // 10 + step], tokenizer, config.block_size)
            with microgpt.Value.recording() if record else contextlib.nullcontext():
                loss = microgpt.document_loss(tokens, state_dict, config)
                loss.backward()
            optimizer.step(config.learning_rate * (1 - step / steps))
            if step % 40 == 0:
                gc.collect()
        seconds = time.perf_counter() - start
        gc.enable()
        return seconds

    print(f"{platform.python_implementation()} {platform.python_version()} on {cpu_name()}: "
          f"{steps} training steps of the default model, {runs} runs each, alternating")
    times = {True: [], False: []}
    for _ in range(runs):
        for record in (True, False):
            times[record].append(run(record))
    for record, name in ((True, 'recorded (tape replayed)'), (False, 'graph searched')):
        t = sorted(times[record])
        print(f"  {name:26s} median {statistics.median(t):.2f} s (min {t[0]:.2f}, max {t[-1]:.2f})")
    print(f"graph searched / recorded: {statistics.median(times[False]) / statistics.median(times[True]):.2f}")


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'an unknown CPU'


def run_once(script):
    """Run `python script` (the default lesson) from the repository root; returns
    (wall seconds, peak resident MB, the lines that do not depend on timing)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, encoding='utf-8')
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)   # (so Popen knows the child is gone)
    if proc.returncode != 0:
        sys.exit(f"bench: {script} exited with status {proc.returncode}")
    # Without the eta, and without the marks of samples found in the data (older versions print none).
    kept = [re.sub(r' \| eta \d+ s|   <- .*', '', line) for line in out.splitlines()
            if line.startswith(('step', 'sample'))]
    return seconds, usage.ru_maxrss / 1024, kept


def side_by_side(against, runs):
    """The whole default run of this microgpt.py against another version, alternating."""
    print(f"{platform.python_implementation()} {platform.python_version()} on {cpu_name()}, "
          f"{os.cpu_count()} cores: `{os.path.basename(sys.executable)} microgpt.py`, "
          f"{runs} runs each, alternating")
    results = {SCRIPT: [], against: []}
    outputs = {}
    for _ in range(runs):
        for script in (against, SCRIPT):
            seconds, peak_mb, kept = run_once(script)
            results[script].append((seconds, peak_mb))
            outputs[script] = kept
            print(f"  {os.path.relpath(script, ROOT):40s} {seconds:6.2f} s  {peak_mb:6.0f} MB", flush=True)
    medians = {}
    for script, rows in results.items():
        times = sorted(t for t, _ in rows)
        medians[script] = statistics.median(times)
        print(f"{os.path.relpath(script, ROOT):40s} median {medians[script]:.2f} s "
              f"(min {times[0]:.2f}, max {times[-1]:.2f}), peak {max(m for _, m in rows):.0f} MB")
    print(f"ratio (this / other): {medians[SCRIPT] / medians[against]:.3f}")
    # Each run of this version over the run of the other just before it: a machine whose speed
    # drifts during the measurement affects both runs of a pair alike.
    pairs = sorted(t / o for (t, _), (o, _) in zip(results[SCRIPT], results[against]))
    print(f"ratio run by run: median {statistics.median(pairs):.3f} "
          f"(min {pairs[0]:.3f}, max {pairs[-1]:.3f})")
    same = outputs[SCRIPT] == outputs[against]
    print("step losses and samples: " + ("identical" if same else "DIFFERENT"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per size (median reported)')
    parser.add_argument('--sizes', default=','.join(SIZES), help='comma-separated: ' + ', '.join(SIZES))
    parser.add_argument('--against', metavar='OLD.py',
                        help='time the whole default run side by side with this other microgpt.py')
    parser.add_argument('--runs', type=int, default=5, help='runs of each version with --against')
    parser.add_argument('--recording', action='store_true',
                        help="training steps with Value.recording() against without (--runs each)")
    parser.add_argument('--one', help=argparse.SUPPRESS)   # internal: measure one size, print JSON
    args = parser.parse_args()
    if args.recording:
        recording_against_search(args.runs)
        return
    if args.against:
        side_by_side(os.path.abspath(args.against), args.runs)
        return
    if args.one:
        print(json.dumps(measure(args.one, args.repeats)))
        return
    print(f"{platform.python_implementation()} {platform.python_version()} on {cpu_name()}, "
          f"{os.cpu_count()} cores")
    print(f"{'size':12s} {'params':>8s} {'ms/step':>9s} {'ms/token':>9s} {'ms/sampled token':>17s} {'peak MB':>8s}")
    for size in args.sizes.split(','):
        out = subprocess.run([sys.executable, __file__, '--one', size, '--repeats', str(args.repeats)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        print(f"{size:12s} {r['params']:8d} {r['ms_per_step']:9.2f} {r['ms_per_train_token']:9.3f} "
              f"{r['ms_per_sampled_token']:17.3f} {r['peak_mb']:8.0f}", flush=True)


if __name__ == '__main__':
    main()
