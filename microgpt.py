"""
microgpt: a whole GPT, trained and sampled, in one file of dependency-free Python.

    python3 microgpt.py           train on input.txt (names), then invent new ones
    python3 microgpt.py --help    every setting below is also a flag

Read it top to bottom, next to walkthrough.md. The data flows through the file in order:
text -> tokens -> embeddings -> transformer blocks -> logits -> loss -> gradients -> update -> samples.
Each `# %%` line starts a section that notebook-aware editors run as a cell.
"""
import argparse
import gc
import itertools
import json
import math
import operator
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace


# %% Settings
@dataclass
class Config:
    input: str = 'input.txt'     # training text: one document (here, one name) per line
    n_layer: int = 1             # transformer blocks stacked on top of each other
    n_embd: int = 16             # width of each token's vector (the "residual stream")
    n_head: int = 4              # attention heads; each works on n_embd // n_head dimensions
    block_size: int = 16         # context length: the most tokens the model ever sees at once
    steps: int = 1000            # training steps, one document each
    learning_rate: float = 0.01  # Adam's step size at the start; it decays linearly to 0
    seed: int = 42               # seeds every random choice, so a run can be repeated exactly
    temperature: float = 0.5     # sampling: below 1 plays it safe, above 1 takes chances
    num_samples: int = 20        # names to invent after training
    prompt: str = ''             # every sample starts with this text
    save: str = ''               # write the trained model to this JSON file
    load: str = ''               # skip training: sample from a model saved with --save


class InputError(Exception):
    """Something wrong with what the user asked for: shown as one line, never as a traceback."""


# %% Dataset
def load_docs(path):
    """Read a UTF-8 text file: one document per line, surrounding whitespace stripped, blanks skipped."""
    if os.path.isdir(path):
        raise InputError(f"{path} is a directory, not a text file")
    if os.path.exists(path) and not os.path.isfile(path):   # a pipe or device might never end
        raise InputError(f"{path} is not a regular file")
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(f"input file not found: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = raw.decode('utf-8-sig')  # '-sig' drops the byte-order mark some editors put first
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (undecodable byte at offset {e.start})") from None
    docs = [line.strip() for line in text.splitlines()]  # splitlines() also handles \r\n endings
    docs = [doc for doc in docs if doc]
    if not docs:
        raise InputError(f"{path} holds no documents: every line is blank")
    return docs


# %% Tokenizer
class Tokenizer:
    """Characters <-> integer ids. Each distinct character is one token; one extra token, BOS,
    marks the boundary between documents (it both starts and ends every document)."""

    def __init__(self, chars):
        self.chars = sorted(set(chars))   # token ids 0..n-1, in a fixed (sorted) order
        self.bos = len(self.chars)        # id n: Beginning Of Sequence
        self.vocab_size = len(self.chars) + 1
        self.ids = {ch: i for i, ch in enumerate(self.chars)}

    def encode(self, text):
        return [self.ids[ch] for ch in text]

    def decode(self, ids):
        return ''.join(self.chars[i] for i in ids)


def doc_tokens(doc, tokenizer, block_size):
    """BOS + document + BOS, cut to block_size + 1 tokens: the model reads the first block_size
    of them, and at every position the target is the token that comes next."""
    tokens = [tokenizer.bos] + tokenizer.encode(doc) + [tokenizer.bos]
    return tokens[:block_size + 1]


# %% Autograd
class Value:
    """One number in the computation, plus what it takes to run the chain rule back through it.

    Every operation makes a new Value that remembers its inputs (`_children`) and the local
    derivative of its output with respect to each input (`_local_grads`). backward() then
    walks the graph from the loss to the parameters, multiplying local derivatives together.
    """
    __slots__ = ('data', 'grad', '_children', '_local_grads', '_order')
    _counter = itertools.count()   # numbers the Values in the order they are made

    def __init__(self, data, children=(), local_grads=()):
        self.data = data                  # the number itself, computed on the forward pass
        self.grad = 0.0                   # d(loss)/d(this number), filled in by backward()
        self._children = children         # the Values this one was computed from
        self._local_grads = local_grads   # d(this)/d(child), one per child
        self._order = next(Value._counter)   # used by backward() to order the graph

    def __repr__(self):   # what a notebook shows for print(loss)
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"

    # Each operation: its forward value, then its local derivative with respect to each input.
    def __add__(self, other):    # d(a+b)/da = 1, d(a+b)/db = 1
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __sub__(self, other):    # d(a-b)/da = 1, d(a-b)/db = -1
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data - other.data, (self, other), (1.0, -1.0))

    def __mul__(self, other):    # d(a*b)/da = b, d(a*b)/db = a
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __truediv__(self, other):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data / other.data, (self, other),
                     (1.0 / other.data, -self.data / (other.data * other.data)))

    def __pow__(self, k):        # k is a plain number: d(a^k)/da = k * a^(k-1)
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def __rpow__(self, base):    # base is a plain number: d(base^a)/da = base^a * ln(base)
        out = base ** self.data
        return Value(out, (self,), (out * math.log(base),))

    def __neg__(self):           # d(-a)/da = -1
        return Value(-self.data, (self,), (-1.0,))

    def log(self):               # d(ln a)/da = 1/a
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def exp(self):               # d(e^a)/da = e^a
        out = math.exp(self.data)
        return Value(out, (self,), (out,))

    def relu(self):              # d(max(0, a))/da = 1 where a > 0, else 0
        return Value(max(0.0, self.data), (self,), (1.0 if self.data > 0 else 0.0,))

    # A plain number on the left (2 + a, 2 - a, 2 * a, 2 / a) becomes a constant Value. The model
    # itself only needs 0 + a (from sum()); the others are here so that any formula works.
    def __radd__(self, other):
        return Value(other) + self

    def __rsub__(self, other):
        return Value(other) - self

    def __rmul__(self, other):
        return Value(other) * self

    def __rtruediv__(self, other):
        return Value(other) / self

    def backward(self):
        """Fill in .grad of every Value this one was computed from: d(self)/d(that Value).
        Gradients add up (+=), so call it once per graph, with the leaves' grads at zero."""
        # 1. Find every node this one depends on. An explicit stack instead of recursion,
        #    so a graph of any depth works (Python stops recursing after ~1000 calls).
        #    Leaves (weights, constants) have nothing to pass on, so they are not collected.
        graph, stack = {self}, [self]
        while stack:
            for child in stack.pop()._children:
                if child._children and child not in graph:
                    graph.add(child)
                    stack.append(child)
        # 2. A node is always created after the nodes it is computed from, so newest-first is an
        #    order in which each node's gradient is complete before it is passed to its children.
        # 3. Chain rule: d(self)/d(child) += d(node)/d(child) * d(self)/d(node).
        self.grad = 1.0
        for node in sorted(graph, key=operator.attrgetter('_order'), reverse=True):
            node_grad = node.grad
            for child, local_grad in zip(node._children, node._local_grads):
                child.grad += local_grad * node_grad


def dot(a, b):
    """a[0]*b[0] + a[1]*b[1] + ... as ONE node instead of 2n - 1 separate * and + nodes.

    Same chain rule, fewer nodes: d(dot)/d(a[i]) = b[i] and d(dot)/d(b[i]) = a[i], so the local
    gradients are simply the other vector. Almost all of a GPT's arithmetic is dot products, so
    this one node type makes training many times faster than building them from + and *.
    """
    assert len(a) == len(b), "dot product of vectors of different lengths"
    a_data = [x.data for x in a]
    b_data = [x.data for x in b]
    return Value(sum(map(operator.mul, a_data, b_data)), a + b, b_data + a_data)


# %% Parameters
def param_shapes(vocab_size, config):
    """Name -> (rows, columns) of every weight matrix. wte, wpe and lm_head are GPT-2's names;
    nanoGPT fuses q, k, v into one matrix (c_attn), kept apart here to keep each one visible."""
    e = config.n_embd
    shapes = {'wte': (vocab_size, e),          # token embedding: one row per token
              'wpe': (config.block_size, e)}   # position embedding: one row per position
    for i in range(config.n_layer):
        shapes[f'layer{i}.attn.wq'] = (e, e)   # query, key, value and output projections
        shapes[f'layer{i}.attn.wk'] = (e, e)
        shapes[f'layer{i}.attn.wv'] = (e, e)
        shapes[f'layer{i}.attn.wo'] = (e, e)
        shapes[f'layer{i}.mlp.fc1'] = (4 * e, e)   # the MLP widens 4x, then narrows back
        shapes[f'layer{i}.mlp.fc2'] = (e, 4 * e)
    shapes['lm_head'] = (vocab_size, e)        # from a vector back to one score per token
    return shapes


def init_params(vocab_size, config, rng):
    """Every weight starts as a small random number: small so the first predictions are close
    to uniform, random so that different neurons can learn different things."""
    return {name: [[Value(rng.gauss(0.0, 0.08)) for _ in range(cols)] for _ in range(rows)]
            for name, (rows, cols) in param_shapes(vocab_size, config).items()}


def flat_params(state_dict):
    return [p for matrix in state_dict.values() for row in matrix for p in row]


# %% Model
def linear(x, w):
    """Matrix times vector, w @ x: one dot-product node per row of w, the very node dot(row, x)
    makes, but with x's numbers read once for all rows instead of once per row, which makes the
    forward pass ~15% faster. No bias, as in many modern GPTs."""
    x_data = [xi.data for xi in x]
    out = []
    for row in w:
        row_data = [wi.data for wi in row]
        out.append(Value(sum(map(operator.mul, row_data, x_data)), row + x, x_data + row_data))
    return out


def softmax(logits):
    """Scores -> probabilities that sum to 1. Subtracting the largest score first changes nothing
    mathematically but keeps exp() from overflowing on large scores."""
    top = max(x.data for x in logits)
    exps = [(x - top).exp() for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    """Rescale x to a root-mean-square of 1 (no learned gain), so every block sees inputs of the
    same size however large the residual stream grows. 1e-5 avoids dividing by zero."""
    mean_square = dot(x, x) / len(x)
    scale = (mean_square + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def new_kv_cache(config):
    """Per layer, the keys and values of every position seen so far."""
    return [([], []) for _ in range(config.n_layer)]


def gpt(token_id, pos_id, kv_cache, state_dict, config):
    """One step of the GPT: the token at position pos_id -> scores (logits) for the next token.

    Tokens go in one at a time. Each position appends its key and value to kv_cache, and its
    query attends over the cache: everything up to and including itself, never the future.
    That is causal self-attention, with no mask needed.
    """
    head_dim = config.n_embd // config.n_head
    x = [t + p for t, p in zip(state_dict['wte'][token_id], state_dict['wpe'][pos_id])]
    x = rmsnorm(x)   # not in GPT-2: starts the residual stream at size 1, whatever the init
    for i in range(config.n_layer):
        # Multi-head causal self-attention: each position gathers information from earlier ones.
        x_residual = x
        x = rmsnorm(x)
        q = linear(x, state_dict[f'layer{i}.attn.wq'])
        k = linear(x, state_dict[f'layer{i}.attn.wk'])
        v = linear(x, state_dict[f'layer{i}.attn.wv'])
        keys, values = kv_cache[i]
        keys.append(k)
        values.append(v)
        heads = []
        for h in range(config.n_head):
            lo, hi = h * head_dim, (h + 1) * head_dim
            # Dividing by sqrt(head_dim) keeps the scores' spread independent of head size, so
            # softmax does not saturate into a one-hot choice as heads get wider.
            scores = [dot(q[lo:hi], k_t[lo:hi]) / math.sqrt(head_dim) for k_t in keys]
            weights = softmax(scores)
            for j in range(lo, hi):   # this head's output: the weighted average of the values
                heads.append(dot(weights, [v_t[j] for v_t in values]))
        x = linear(heads, state_dict[f'layer{i}.attn.wo'])
        x = [a + b for a, b in zip(x, x_residual)]   # residual: add, don't replace
        # MLP: each position thinks on its own, through a 4x wider hidden layer.
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, state_dict[f'layer{i}.mlp.fc1'])
        x = [xi.relu() ** 2 for xi in x]   # squared ReLU: a cheap, smooth-ish nonlinearity
        x = linear(x, state_dict[f'layer{i}.mlp.fc2'])
        x = [a + b for a, b in zip(x, x_residual)]
    return linear(x, state_dict['lm_head'])


# %% Loss
def cross_entropy(logits, target):
    """-log(softmax(logits)[target]), computed as logsumexp(logits) - logits[target].

    Same number, but it never takes the log of a probability that rounded down to 0: after
    subtracting the largest logit, the sum of exps is at least 1.
    """
    top = max(x.data for x in logits)
    log_sum_exp = sum((x - top).exp() for x in logits).log() + top
    return log_sum_exp - logits[target]


def document_loss(tokens, state_dict, config):
    """Mean cross-entropy of predicting each next token of one document, in nats."""
    kv_cache = new_kv_cache(config)
    losses = []
    for pos in range(len(tokens) - 1):
        logits = gpt(tokens[pos], pos, kv_cache, state_dict, config)
        losses.append(cross_entropy(logits, tokens[pos + 1]))
    return sum(losses) / len(losses)


# %% Optimizer
class Adam:
    """Adam: each parameter moves by (running mean of its gradient) / (running RMS of its gradient),
    so every parameter takes steps of about the learning rate, whatever the scale of its gradient."""

    def __init__(self, params, beta1=0.85, beta2=0.99, eps=1e-8):
        # Betas below the usual 0.9 / 0.999: with one document per step and only 1000 steps,
        # shorter memories of the gradient adapt faster.
        self.params = params
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = [0.0] * len(params)   # running mean of each gradient (first moment)
        self.v = [0.0] * len(params)   # running mean of each squared gradient (second moment)
        self.t = 0                     # steps taken

    def step(self, lr):
        """Update every parameter from its .grad, then reset .grad to 0 for the next backward()."""
        self.t += 1
        b1, b2, m, v = self.beta1, self.beta2, self.m, self.v
        # Bias correction: m and v start at 0, so after t steps they are too small by a factor
        # (1 - beta^t). Dividing it out makes the first steps as large as the later ones.
        m_correction = 1.0 / (1.0 - b1 ** self.t)
        v_correction = 1.0 / (1.0 - b2 ** self.t)
        for i, p in enumerate(self.params):
            g = p.grad
            m[i] = b1 * m[i] + (1.0 - b1) * g
            v[i] = b2 * v[i] + (1.0 - b2) * g * g
            p.data -= lr * (m[i] * m_correction) / (math.sqrt(v[i] * v_correction) + self.eps)
            p.grad = 0.0


# %% Training
EVAL_DOCS = 100    # documents per loss estimate: precise to about 0.03 nats
EVAL_EVERY = 1000  # steps between loss reports during a long run


def train(train_docs, val_docs, tokenizer, state_dict, config):
    """Show the model one document per step and nudge every weight to make it likelier.
    Returns the loss of every step taken."""
    optimizer = Adam(flat_params(state_dict))
    progress = Progress(config.steps)
    losses = []
    with StopOnInterrupt() as interrupt:
        for step in range(config.steps):
            tokens = doc_tokens(train_docs[step % len(train_docs)], tokenizer, config.block_size)
            try:
                loss = document_loss(tokens, state_dict, config)   # forward: builds the graph
                diverged = not math.isfinite(loss.data)
            except OverflowError:   # a number grew past the largest float
                diverged = True
            if diverged:   # an update now would turn every weight into nan
                progress.finish()
                raise InputError(f"training diverged at step {step + 1}: the loss is no longer a "
                                 f"finite number; try a smaller --lr than {config.learning_rate}")
            loss.backward()                    # backward: d(loss)/d(weight) for every weight
            lr = config.learning_rate * (1 - step / config.steps)   # decays linearly to 0
            optimizer.step(lr)                 # update: every weight takes a small step downhill
            losses.append(loss.data)
            del loss                           # free this step's graph before building the next
            progress.update(step + 1, losses[-1])
            if interrupt.requested and step + 1 < config.steps:
                progress.note(f"stopped early at step {step + 1} of {config.steps} (Ctrl-C)")
                break
            if (step + 1) % 100 == 0:
                gc.collect()   # run() turned automatic collection off; PyPy needs it now and then
            if (step + 1) % EVAL_EVERY == 0 and step + 1 < config.steps:
                progress.note(loss_report(train_docs, val_docs, tokenizer, state_dict, config))
    progress.finish()
    return losses


def evaluate(docs, tokenizer, state_dict, config):
    """Mean loss per predicted token over docs, in nats. Forward passes only: nothing is learned."""
    total, count = 0.0, 0
    for doc in docs:
        tokens = doc_tokens(doc, tokenizer, config.block_size)
        total += document_loss(tokens, state_dict, config).data * (len(tokens) - 1)
        count += len(tokens) - 1
    return total / count


def loss_report(train_docs, val_docs, tokenizer, state_dict, config):
    """Loss on documents the model trained on next to documents it never saw (validation): a gap
    between the two means it is memorising rather than learning what names look like."""
    report = f"train loss {evaluate(train_docs[:EVAL_DOCS], tokenizer, state_dict, config):.4f}"
    if val_docs:
        report += f" | val loss {evaluate(val_docs[:EVAL_DOCS], tokenizer, state_dict, config):.4f}"
    uniform = math.log(tokenizer.vocab_size)   # the loss of guessing every token with equal odds
    return report + f" | uniform guess ln({tokenizer.vocab_size}) = {uniform:.4f}  (nats per token)"


# %% Sampling
def generate(state_dict, tokenizer, config, rng, prompt=''):
    """Invent one document: feed BOS (and the prompt), then repeatedly draw the next token from
    the model's probabilities and feed it back in, until the model says BOS (the end)."""
    tokens = [tokenizer.bos] + tokenizer.encode(prompt)
    kv_cache = new_kv_cache(config)
    for pos in range(config.block_size):
        logits = gpt(tokens[pos], pos, kv_cache, state_dict, config)
        if pos + 1 < len(tokens):
            continue   # still reading the prompt: this step only fills the KV cache
        # Temperature divides the logits: below 1 the likeliest tokens get likelier, above 1 the
        # odds even out. choices() only needs relative weights, so softmax's division is skipped.
        top = max(logit.data for logit in logits)
        if not all(math.isfinite(logit.data) for logit in logits):
            raise InputError("the model's scores are not finite numbers: its weights have blown "
                             "up (train again with a smaller --lr)")
        weights = [math.exp((logit.data - top) / config.temperature) for logit in logits]
        next_id = rng.choices(range(tokenizer.vocab_size), weights=weights)[0]
        if next_id == tokenizer.bos:
            break
        tokens.append(next_id)
    return tokenizer.decode(tokens[1:])


# %% Run: the lesson from start to end
def main(argv=None):
    config, given = parse_args(argv)
    if config.load:
        state_dict, tokenizer, config = load_checkpoint(config.load, config, given)
        print(f"loaded {config.load}: vocab size {tokenizer.vocab_size}, "
              f"num params {len(flat_params(state_dict))}")
    else:
        docs = load_docs(config.input)
        rng = random.Random(config.seed)   # one seeded generator: shuffle, init, and nothing else
        rng.shuffle(docs)
        print(f"num docs: {len(docs)}")
        tokenizer = Tokenizer(''.join(docs))
        print(f"vocab size: {tokenizer.vocab_size}")
        check_prompt(config, tokenizer)
        if config.save:
            check_save_path(config.save)
        n_val = len(docs) // 10            # hold out 10% to measure how well the model generalises
        val_docs, train_docs = docs[:n_val], docs[n_val:]
        if n_val:
            print(f"validation: {n_val} docs held out, training on {len(train_docs)}")
        else:
            print("validation: none (it needs 10 docs or more); training on all of them")
        too_long = sum(len(doc) + 1 > config.block_size for doc in train_docs)
        if too_long:
            print(f"note: {too_long} training docs are longer than block_size {config.block_size} "
                  f"allows; the model only sees their first {config.block_size - 1} characters")
        shapes = param_shapes(tokenizer.vocab_size, config)
        n_params = sum(rows * cols for rows, cols in shapes.values())
        print(f"num params: {n_params}")
        if n_params > MAX_PARAMS:   # each weight is a Python object: ~100 bytes, and slow
            raise InputError(f"{n_params} parameters is more than this pure-Python GPT can "
                             f"train (at most {MAX_PARAMS}); use a smaller --n-embd, --n-layer "
                             f"or --block-size")
        state_dict = init_params(tokenizer.vocab_size, config, rng)

        start = time.perf_counter()
        losses = train(train_docs, val_docs, tokenizer, state_dict, config)
        seconds = time.perf_counter() - start
        if losses:
            print(f"training took {seconds:.1f} s ({1000 * seconds / len(losses):.1f} ms/step)")
            print(f"loss curve: {sparkline(losses)}")
        if not math.isfinite(evaluate(train_docs[:1], tokenizer, state_dict, config)):
            raise InputError("the weights have blown up (the loss is no longer a finite number); "
                             "nothing to sample or save; train with a smaller --lr")
        print(loss_report(train_docs, val_docs, tokenizer, state_dict, config))
        if config.save:
            save_checkpoint(config.save, config, tokenizer, state_dict)
            print(f"saved the model to {config.save}")

    print("--- samples ---")
    rng = random.Random(config.seed)   # fresh, so a loaded checkpoint draws the same samples
    for i in range(config.num_samples):
        print(f"sample {i + 1:2d}: {generate(state_dict, tokenizer, config, rng, config.prompt)}")


# %% Plumbing: flags, checks, progress, Ctrl-C, checkpoints
class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):   # one clear line instead of argparse's usage dump
        raise InputError(f"{message} (see --help)")


def parse_args(argv):
    """Flags -> Config. Returns the config and the flags given explicitly (for --load's checks)."""
    if argv is None:
        # A Jupyter kernel starts Python with arguments of its own (-f kernel.json): not ours.
        argv = [] if 'ipykernel' in sys.modules else sys.argv[1:]
    c = Config
    p = ArgumentParser(prog='microgpt.py', argument_default=argparse.SUPPRESS,
                       description='Train a tiny GPT on a text file (one document per line), '
                                   'then sample new documents from it.')
    p.add_argument('--input', metavar='FILE',
                   help=f'training text, one document per line (default: {c.input})')
    p.add_argument('--steps', type=int, metavar='N',
                   help=f'training steps, one document each (default: {c.steps})')
    p.add_argument('--n-layer', type=int, metavar='N', help=f'transformer blocks (default: {c.n_layer})')
    p.add_argument('--n-embd', type=int, metavar='N', help=f'embedding width (default: {c.n_embd})')
    p.add_argument('--n-head', type=int, metavar='N',
                   help=f'attention heads; must divide --n-embd (default: {c.n_head})')
    p.add_argument('--block-size', type=int, metavar='N',
                   help=f'context length in tokens (default: {c.block_size})')
    p.add_argument('--lr', dest='learning_rate', type=float, metavar='LR',
                   help=f'Adam learning rate, decayed linearly to 0 (default: {c.learning_rate})')
    p.add_argument('--seed', type=int, metavar='N', help=f'random seed (default: {c.seed})')
    p.add_argument('--temperature', type=float, metavar='T',
                   help=f'sampling temperature, > 0; lower is safer (default: {c.temperature})')
    p.add_argument('--num-samples', type=int, metavar='N',
                   help=f'documents to sample (default: {c.num_samples})')
    p.add_argument('--prompt', metavar='TEXT', help='start every sample with this text')
    p.add_argument('--save', metavar='PATH', help='save the trained model to this JSON file')
    p.add_argument('--load', metavar='PATH', help='load a model saved with --save and only sample')
    given = vars(p.parse_args(argv))
    config = Config(**given)
    check_config(config, given)
    return config, given


def check_config(config, given):
    for name in MODEL_SHAPE:
        value = getattr(config, name)
        if value <= 0:
            raise InputError(f"--{flag(name)} must be a positive whole number, got {value}")
    if config.n_embd % config.n_head:
        raise InputError(f"--n-embd {config.n_embd} is not divisible by --n-head {config.n_head}: "
                         f"each head needs an equal share of the embedding")
    if config.steps < 0:
        raise InputError(f"--steps must be 0 or more, got {config.steps}")
    if config.num_samples < 0:
        raise InputError(f"--num-samples must be 0 or more, got {config.num_samples}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate >= 0):
        raise InputError(f"--lr must be a finite number >= 0, got {config.learning_rate}")
    if not (math.isfinite(config.temperature) and config.temperature > 0):
        raise InputError(f"--temperature must be a finite number > 0, got {config.temperature}")
    for name in ('input', 'save', 'load'):
        if name in given and not given[name]:   # e.g. --save "$OUT" with OUT unset
            raise InputError(f"--{name} needs a file name, got an empty one")
    if config.load:
        training_only = ('input', 'steps', 'learning_rate', 'save')
        unused = [f"--{flag(name)}" for name in training_only if name in given]
        if unused:
            raise InputError(f"--load only samples from a trained model; drop {', '.join(unused)}")


def flag(name):
    return 'lr' if name == 'learning_rate' else name.replace('_', '-')


def check_prompt(config, tokenizer):
    unknown = sorted(set(config.prompt) - set(tokenizer.chars))
    if unknown:
        raise InputError(f"--prompt uses characters the model has no token for: {''.join(unknown)!r}")
    if len(config.prompt) >= config.block_size:
        raise InputError(f"--prompt must be shorter than block_size ({config.block_size} tokens)")


def check_save_path(path):
    """Fail before training, not after it, when the model could not be saved."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"--save {path} is a directory; give a file name")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise InputError(f"--save {path}: cannot write into {folder}")
    if os.path.exists(path):   # replace an old checkpoint, never the data or anything else
        start = b''
        if os.path.isfile(path):   # (a pipe or device is never a checkpoint, and may block)
            try:
                with open(path, 'rb') as f:
                    start = f.read(len(CHECKPOINT_START))
            except OSError:
                pass
        if start != CHECKPOINT_START:
            raise InputError(f"--save {path} exists and is not a microgpt checkpoint; "
                             f"refusing to overwrite it")


def sparkline(losses, width=60):
    """The loss curve as one line of text: the run cut into `width` chunks, each drawn as a bar
    as tall as its mean loss."""
    width = min(width, len(losses))
    means = []
    for i in range(width):
        chunk = losses[i * len(losses) // width:(i + 1) * len(losses) // width]
        means.append(sum(chunk) / len(chunk))
    lo, hi = min(means), max(means)
    bars = '▁▂▃▄▅▆▇█'
    line = ''
    for m in means:   # lowest mean -> shortest bar, highest -> tallest
        level = (m - lo) / (hi - lo) if hi > lo else 0.0
        line += bars[round(level * (len(bars) - 1))]
    return f"{means[0]:.2f} {line} {means[-1]:.2f}"


class Progress:
    """On a terminal, one line that rewrites itself every step; in a log file or pipe, a plain
    line for the first step, every tenth of the run, and the last step."""

    def __init__(self, steps):
        self.steps, self.live = steps, sys.stdout is not None and sys.stdout.isatty()
        self.every = max(1, steps // 10)
        self.start = time.perf_counter()
        self.pending = False   # a live line is on screen without its newline

    def update(self, step, loss):
        eta = (time.perf_counter() - self.start) / step * (self.steps - step)
        line = f"step {step:4d} / {self.steps:4d} | loss {loss:.4f} | eta {eta:.0f} s"
        if self.live:
            print('\r' + line + '   ', end='', flush=True)   # \r returns to the line's start
            self.pending = True
        elif step == 1 or step == self.steps or step % self.every == 0:
            print(line, flush=True)

    def note(self, message):
        self.finish()
        print(message, flush=True)

    def finish(self):
        if self.pending:
            print()
            self.pending = False


class StopOnInterrupt:
    """First Ctrl-C: finish the current step and stop training; the run still reports, saves and
    samples. A second Ctrl-C stops everything at once."""

    def __enter__(self):
        self.requested = False
        try:
            self.previous = signal.signal(signal.SIGINT, self.handle)
        except ValueError:   # only the main thread may handle signals; elsewhere, leave them be
            self.previous = None
        if self.previous is signal.SIG_IGN:   # Ctrl-C was meant to be ignored (a background job)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step (press again to quit now)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


MODEL_SHAPE = ('n_layer', 'n_embd', 'n_head', 'block_size')
MAX_PARAMS = 10_000_000   # about 1 GB of Values, and minutes per step
CHECKPOINT_FORMAT = 'microgpt-checkpoint-1'
CHECKPOINT_START = b'{"format": "' + CHECKPOINT_FORMAT.encode()   # how every checkpoint begins


def save_checkpoint(path, config, tokenizer, state_dict):
    """Write the model as plain JSON (format in README.md). Atomic: the JSON goes to a temporary
    file beside `path`, which is renamed over `path` only once complete, so a crash or Ctrl-C
    never leaves half a checkpoint, and never spoils a good one already there."""
    checkpoint = {
        'format': CHECKPOINT_FORMAT,
        'config': {name: getattr(config, name) for name in MODEL_SHAPE},
        'vocab': tokenizer.chars,   # token id i is vocab[i]; BOS is len(vocab)
        'state_dict': {name: [[p.data for p in row] for row in matrix]
                       for name, matrix in state_dict.items()},
    }
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.microgpt-', suffix='.tmp')
    except OSError as e:
        raise InputError(f"cannot save to {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())   # on disk before the rename, not just in a buffer
        umask = os.umask(0)        # (reading the umask means setting it, then restoring it)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp made it private; give it a new file's usual mode
        os.replace(tmp, path)      # atomic: readers see the old file or the new one, never half
    except BaseException as e:
        if os.path.exists(tmp):    # gone already if the rename went through
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise InputError(f"cannot save to {path}: {e.strerror}") from None
        raise


def load_checkpoint(path, config, given):
    """Read a checkpoint written by save_checkpoint. It is plain data: loading runs no code from
    the file, and every part is checked before use. Returns (state_dict, tokenizer, config)."""
    def bad(problem):
        return InputError(f"{path} is not a usable microgpt checkpoint: {problem}")
    try:
        with open(path, encoding='utf-8-sig') as f:
            checkpoint = json.load(f)
    except FileNotFoundError:
        raise InputError(f"checkpoint not found: {path}") from None
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    except (ValueError, RecursionError):   # RecursionError: brackets nested thousands deep
        raise bad("not valid JSON") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get('format') != CHECKPOINT_FORMAT:
        raise bad(f"its 'format' is not {CHECKPOINT_FORMAT!r}")
    shape, vocab = checkpoint.get('config'), checkpoint.get('vocab')
    weights = checkpoint.get('state_dict')
    if not isinstance(shape, dict) or set(shape) != set(MODEL_SHAPE) or not all(
            type(shape[name]) is int and shape[name] > 0 for name in MODEL_SHAPE):
        raise bad(f"'config' must give {', '.join(MODEL_SHAPE)} as positive whole numbers")
    if shape['n_embd'] % shape['n_head']:
        raise bad("its n_embd is not divisible by its n_head")
    for name in MODEL_SHAPE:
        if name in given and given[name] != shape[name]:
            raise InputError(f"--{flag(name)} {given[name]} does not match the checkpoint "
                             f"{path}, which has {name} {shape[name]}")
    if not (isinstance(vocab, list) and all(isinstance(ch, str) and len(ch) == 1 for ch in vocab)
            and vocab == sorted(set(vocab))):
        raise bad("'vocab' must be a sorted list of distinct characters")
    config = replace(config, **shape)
    tokenizer = Tokenizer(vocab)
    if not isinstance(weights, dict) or len(weights) != 3 + 6 * config.n_layer:
        raise bad(f"'state_dict' must hold {3 + 6 * config.n_layer} matrices for this config")
    shapes = param_shapes(tokenizer.vocab_size, config)
    if set(weights) != set(shapes):
        raise bad(f"'state_dict' must hold exactly {', '.join(shapes)} for this config and vocab")
    for name, (rows, cols) in shapes.items():
        matrix = weights[name]
        if not (isinstance(matrix, list) and len(matrix) == rows and all(
                isinstance(row, list) and len(row) == cols and all(
                    type(x) in (int, float) and abs(x) <= sys.float_info.max for x in row)
                for row in matrix)):   # (abs(x) <= max float is False for nan, inf, 10**400)
            raise bad(f"{name} must be a {rows} x {cols} matrix of finite numbers "
                      f"to match the config and the {len(vocab)}-character vocab")
    check_prompt(config, tokenizer)
    state_dict = {name: [[Value(float(x)) for x in row] for row in weights[name]]
                  for name in shapes}
    return state_dict, tokenizer, config


def run(argv=None):
    """main() with every expected failure turned into one line on stderr and an exit status."""
    if hasattr(sys.stdout, 'reconfigure'):   # a console that cannot show a character shows '?'
        sys.stdout.reconfigure(errors='replace')
    # A training step makes tens of thousands of Values. They hold no reference cycles, so on
    # CPython reference counting frees each step's graph once nothing points to it, and the
    # cycle collector, which would keep rescanning every one of them, can be switched off:
    # ~25% faster. (PyPy has no reference counting; train() collects by hand every 100 steps.)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        main(argv)
    except InputError as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmicrogpt: interrupted", file=sys.stderr)
        return 130
    except OverflowError:     # e.g. weights so large that squaring one exceeds the largest float
        print("microgpt: error: a number grew past the largest float: the weights have blown up "
              "(train with a smaller --lr)", file=sys.stderr)
        return 2
    except MemoryError:
        print("microgpt: error: out of memory: try a smaller model", file=sys.stderr)
        return 2
    except BrokenPipeError:   # e.g. `python3 microgpt.py | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if was_enabled:
            gc.enable()
    return 0


if __name__ == '__main__':
    status = run()
    if status:   # exit quietly on success: in a notebook, sys.exit(0) would print an exception
        sys.exit(status)
