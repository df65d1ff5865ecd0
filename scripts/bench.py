"""Benchmark microgpt: milliseconds per training step, per trained token and per sampled token,
and peak memory, for the default model and a few larger ones.

    python3 scripts/bench.py                 # every size, median of 5 runs each
    python3 scripts/bench.py --repeats 3 --sizes default
    pypy3 scripts/bench.py                   # the same on PyPy

Each size runs in its own process, so that its peak memory (the process's maximum resident set
size) is its own. Training steps use the documents of input.txt in the order training would.
Peak memory comes from the `resource` module, which exists on Linux and macOS only.
"""
import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import microgpt  # noqa: E402

SIZES = {  # name: (n_layer, n_embd, n_head, block_size, training steps per timed run)
    'default': (1, 16, 4, 16, 100),
    'L2-E32': (2, 32, 4, 16, 20),
    'L4-E32': (4, 32, 4, 16, 10),
    'L2-E64': (2, 64, 4, 16, 5),
    'L4-E64-B64': (4, 64, 4, 64, 3),
}


def measure(size, repeats):
    """Time one model size in this process; returns a dict of medians."""
    n_layer, n_embd, n_head, block_size, steps = SIZES[size]
    config = microgpt.Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size)
    docs = microgpt.load_docs(os.path.join(ROOT, 'input.txt'))
    rng = random.Random(config.seed)
    rng.shuffle(docs)
    tokenizer = microgpt.Tokenizer(''.join(docs))
    state_dict = microgpt.init_params(tokenizer.vocab_size, config, rng)
    optimizer = microgpt.Adam(microgpt.flat_params(state_dict))
    gc.disable()   # as microgpt.run() does
    step_ms, token_ms, sample_ms = [], [], []
    next_doc = 0
    for _ in range(repeats + 1):   # the first run only warms up
        tokens_seen = 0
        start = time.perf_counter()
        for _ in range(steps):
            tokens = microgpt.doc_tokens(docs[next_doc], tokenizer, block_size)
            next_doc += 1
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
        gc.collect()   # as train() does every 100 steps (PyPy's own collector lets garbage pile up)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # kilobytes on Linux
    return {'size': size, 'params': len(optimizer.params), 'ms_per_step': statistics.median(step_ms[1:]),
            'ms_per_train_token': statistics.median(token_ms[1:]),
            'ms_per_sampled_token': statistics.median(sample_ms[1:]), 'peak_mb': peak_kb / 1024}


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'an unknown CPU'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per size (median reported)')
    parser.add_argument('--sizes', default=','.join(SIZES), help='comma-separated: ' + ', '.join(SIZES))
    parser.add_argument('--one', help=argparse.SUPPRESS)   # internal: measure one size, print JSON
    args = parser.parse_args()
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
