"""
microgpt: a whole GPT, trained and sampled, in one file of dependency-free Python.

    python3 microgpt.py           train on input.txt (names), then invent new ones
    python3 microgpt.py --help    every setting below is also a flag

Read it top to bottom, next to walkthrough.md. The data flows through the file in order: text ->
tokens -> embeddings -> transformer blocks -> logits -> loss -> gradients -> update -> samples.
Each `# %%` line starts a section that notebook-aware editors run as a cell. After a run, the
notebook (or `python3 -i microgpt.py`) holds what it made: config, docs, tokenizer, state_dict,
losses.
"""
import argparse, collections, contextlib, gc, json, math, operator, os, random, signal, sys, time
from dataclasses import dataclass, fields, replace


# %% Settings
@dataclass
class Config:
    """Every setting of a run. Each is also a flag (--n-embd 32). In a notebook, change a default
    here and run this cell, or run `config = replace(config, n_layer=2)`; then the Run cell."""
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
    top_k: int = 0               # sampling: draw from the k likeliest tokens only (0: from all)
    prompt: str = ''             # every sample starts with this text
    save: str = ''               # write the trained model to this JSON file
    load: str = ''               # skip training: sample from a model saved with --save


config = Config()   # this run's settings; the Run cell applies the flags to it


class InputError(Exception):
    """A setting or input that cannot work: one line, not a traceback (in the Run, and Jupyter)."""

    def _render_traceback_(self):   # how IPython and Jupyter show it: one line, no traceback
        return [f"microgpt: error: {self}"]


def require(ok, message):
    if not ok: raise InputError(message)


# %% Dataset
def load_docs(path):
    """A UTF-8 text file -> its documents: one per line, surrounding whitespace stripped, blank
    lines dropped. ('utf-8-sig' also drops the byte-order mark some editors write first.)"""
    with open(path, encoding='utf-8-sig') as f:
        return [line.strip() for line in f if line.strip()]


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
    return ([tokenizer.bos] + tokenizer.encode(doc) + [tokenizer.bos])[:block_size + 1]


# %% Autograd
class Value:
    """One number in the computation, plus what it takes to run the chain rule back through it.
    Every operation makes a new Value that remembers its inputs (`_children`) and the local
    derivative with respect to each (`_local_grads`). backward() walks that graph from the output
    back to the inputs: reverse-mode automatic differentiation. It lives while used, or recorded."""
    __slots__ = ('data', 'grad', '_children', '_local_grads')
    tape = None   # a list while Value.recording() is on: see there

    def __init__(self, data, children=(), local_grads=()):
        self.data = data                  # the number itself, computed on the forward pass
        self.grad = 0.0                   # d(output)/d(this number), filled in by backward()
        self._children = children         # the Values this one was computed from
        self._local_grads = local_grads   # d(this)/d(child), one per child
        if children and Value.tape is not None:
            Value.tape.append(self)

    def __repr__(self): return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"   # print(loss)

    # Each operation: its forward value, then its local derivative with respect to each input.
    # A plain number (2, 1e-5, len(x)) is a constant: it needs no gradient, so it is not a node.
    def __add__(self, other):    # d(a+b)/da = 1, d(a+b)/db = 1
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1.0, 1.0))
        return Value(self.data + other, (self,), (1.0,))

    def __mul__(self, other):    # d(a*b)/da = b, d(a*b)/db = a
        if isinstance(other, Value):
            return Value(self.data * other.data, (self, other), (other.data, self.data))
        return Value(self.data * other, (self,), (other,))

    def __pow__(self, k):        # k is a plain number: d(a^k)/da = k * a^(k-1)
        return Value(math.pow(self.data, k), (self,), (k * self.data ** (k - 1),))   # (real only)

    def exp(self):               # d(e^a)/da = e^a
        return Value(math.exp(self.data), (self,), (math.exp(self.data),))

    def log(self):               # d(ln a)/da = 1/a
        return Value(math.log(self.data), (self,), (1.0 / self.data,))

    def tanh(self):              # d(tanh a)/da = 1 - tanh(a)^2
        return Value(math.tanh(self.data), (self,), (1.0 - math.tanh(self.data) ** 2,))

    def relu(self):              # d(max(0, a))/da = 1 if a > 0 else 0
        return Value(max(self.data, 0.0), (self,), (float(self.data > 0),))

    def relu_squared(self):      # d(max(0, a)^2)/da = 2 max(0, a)
        return Value(max(self.data, 0.0) ** 2, (self,), (2.0 * max(self.data, 0.0),))

    # The rest are made of the above. Python calls __rsub__ for 2 - a, __rtruediv__ for 2 / a.
    def __neg__(self): return self * -1.0                     # -a = a * -1
    def __sub__(self, other): return self + (-other)          # a - b = a + (-b)
    def __rsub__(self, other): return other + (-self)         # b - a = b + (-a)
    def __truediv__(self, other): return self * other ** -1   # a / b = a * b^-1
    def __rtruediv__(self, other): return self ** -1 * other  # b / a = a^-1 * b
    __radd__, __rmul__ = __add__, __mul__                     # b + a = a + b, b * a = a * b

    def backward(self):
        """Fill in .grad of every Value self was computed from: d(self)/d(that Value) (but for the
        inputs that linear() leaves out: see there). Newest first, so that a Value passes its
        gradient on only once all of it has arrived. Computed Values start from 0 each time;
        leaves (the weights) add up over calls until reset, as in PyTorch, which keeps the graph
        for a second backward() only if asked (retain_graph)."""
        nodes = Value.tape if Value.tape and Value.tape[-1] is self else self.graph()
        for node in nodes:
            node.grad = 0.0
        self.grad += 1.0   # (0 + 1 for a computed Value; a leaf adds up, as ever)
        for node in reversed(nodes):
            node_grad = node.grad
            if node_grad:   # (zero for Values off self's path: they have nothing to pass on)
                for child, local_grad in zip(node._children, node._local_grads):
                    child.grad += local_grad * node_grad

    def graph(self):
        """Every computed Value self is or depends on, each after its inputs (a topological order),
        by depth-first search as in micrograd; a loop, as recursion would fail 1000 Values deep."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, inputs_listed = stack.pop()
            if inputs_listed:
                order.append(node)
            elif node not in seen:
                seen.add(node)   # list it once its inputs are: they go on the stack above it
                stack += [(node, True)] + [(c, False) for c in node._children if c._children]
        return order if self._children else []   # (a leaf: nothing to replay)

    @staticmethod
    @contextlib.contextmanager
    def recording():
        """Inside `with Value.recording():` each computed Value is also appended to Value.tape as
        it is made: a Wengert list, or tape. A Value is made after its inputs, so the tape is in
        order already: backward() from its newest Value replays it instead of searching the graph.
        train() records each step. The rule: a computed Value made before the recording must not
        be an input to one made in it (backward() would not look past it). A recording inside
        another goes on with the other's tape."""
        outer, Value.tape = Value.tape, [] if Value.tape is None else Value.tape
        try:
            yield
        finally:
            Value.tape = outer


def linear(x, w):
    """Matrix times vector, w @ x: for each row of w, the dot product row[0]*x[0] + row[1]*x[1]
    + ... as ONE node, instead of 2n - 1 separate * and + nodes. No bias, as in many modern GPTs.
    Same chain rule, fewer nodes: d(out[i])/d(w[i][j]) = x[j], d(out[i])/d(x[j]) = w[i][j]: the
    local gradients are simply the other vector. Most of a GPT's arithmetic is dot products, so
    this node makes training many times faster. An input that is 0 with slope 0 (a ReLU that is
    off) adds nothing and passes no gradient on: it gets no edge, and its own .grad stays 0."""
    x_data = [xi.data for xi in x]   # read once for all rows, not once per row
    if 0.0 in x_data:   # keep only the inputs that add something or pass a gradient on
        keep = [j for j, xi in enumerate(x) if xi.data or not xi._children or any(xi._local_grads)]
        x, x_data = [x[j] for j in keep], [x_data[j] for j in keep]
        w = [[row[j] for j in keep] for row in w]
    w_data = [[wi.data for wi in row] for row in w]
    return [Value(sum(map(operator.mul, row_data, x_data), 0.0), row + x, x_data + row_data)
            for row, row_data in zip(w, w_data)]   # (0.0: a float even when x is empty)


def dot(a, b):
    """a[0]*b[0] + a[1]*b[1] + ... as one node: linear with the one row a, times the vector b."""
    return linear(b, [a])[0]


def logsumexp(x):
    """log(e^x_0 + e^x_1 + ...) as ONE node: d/dx_i = e^x_i / sum_j e^x_j = softmax(x)_i, reused by
    softmax(). Subtracting the largest x first (added back after the log) keeps exp() in range."""
    top = max(xi.data for xi in x)
    exps = [math.exp(xi.data - top) for xi in x]
    total = sum(exps)   # at least 1 (the largest x gives e^0), so its log is always defined
    return Value(top + math.log(total), tuple(x), [e / total for e in exps])


def softmax(logits):
    """Scores -> probabilities that sum to 1: p_i = e^x_i / sum_j e^x_j = e^(x_i - lse). One node
    per p_i, local gradients p_i (to x_i) and -p_i (to lse); the p_i are lse's local gradients."""
    lse = logsumexp(logits)
    return [Value(p, (x, lse), (p, -p)) for x, p in zip(logits, lse._local_grads)]


# %% Parameters
def param_shapes(vocab_size, config):
    """Name -> (rows, columns) of every weight matrix. wte, wpe and lm_head are GPT-2's names;
    nanoGPT fuses q, k, v into one matrix (c_attn), kept apart here to keep each one visible."""
    e = config.n_embd
    # Token embedding: one row per token; position embedding: one row per position.
    shapes = {'wte': (vocab_size, e), 'wpe': (config.block_size, e)}
    for i in range(config.n_layer):   # attention's query, key, value and output projections,
        shapes.update({f'layer{i}.attn.{w}': (e, e) for w in ('wq', 'wk', 'wv', 'wo')})
        shapes.update({f'layer{i}.mlp.fc1': (4 * e, e), f'layer{i}.mlp.fc2': (e, 4 * e)})   # MLP
    shapes['lm_head'] = (vocab_size, e)        # from a vector back to one score per token
    return shapes


def init_params(vocab_size, config, rng):
    """Every weight starts as a small random number: small so the first predictions are close
    to uniform, random so that different neurons can learn different things."""
    return {name: [[Value(rng.gauss(0.0, 0.08)) for _ in range(cols)] for _ in range(rows)]
            for name, (rows, cols) in param_shapes(vocab_size, config).items()}


# %% Model
def rmsnorm(x, gain=None):
    """Rescale x to a root-mean-square of 1, so every block sees inputs of the same size however
    large the residual stream grows. No learned gain, unlike GPT-2: to learn one, add e.g.
    'layer0.ln_1': (1, n_embd) to param_shapes; it scales by 1 + g, near 1 at first, as in Gemma."""
    scale = (dot(x, x) / len(x) + 1e-5) ** -0.5   # 1 / sqrt(mean square); 1e-5: never 1 / 0
    if gain:
        return [xi * scale * (1 + g) for xi, g in zip(x, gain[0])]
    return [xi * scale for xi in x]


def attention(x, layer, kv_cache, state_dict, config):
    """Multi-head causal self-attention at one position (nanoGPT's CausalSelfAttention). The
    position's key and value join this layer's cache, and its query attends to every cached one:
    itself and the past, never the future, so no mask is needed. Each head's weights are kept in
    the cache's third list, for looking inside."""
    head_dim = config.n_embd // config.n_head
    q = linear(x, state_dict[f'{layer}.attn.wq'])
    k = linear(x, state_dict[f'{layer}.attn.wk'])
    v = linear(x, state_dict[f'{layer}.attn.wv'])
    keys, values, attention_weights = kv_cache
    keys.append(k)
    values.append(v)
    heads = []
    for h in range(config.n_head):
        lo, hi = h * head_dim, (h + 1) * head_dim
        # softmax(q.k_t / sqrt(head_dim)) over the cached t, then the sum of weight_t * v_t. The
        # division keeps the scores' spread the same for any head size, so softmax stays soft.
        scores = linear(q[lo:hi], [k_t[lo:hi] for k_t in keys])
        weights = softmax([s / math.sqrt(head_dim) for s in scores])
        attention_weights.append(weights)
        heads += linear(weights, [[v_t[j] for v_t in values] for j in range(lo, hi)])
    return linear(heads, state_dict[f'{layer}.attn.wo'])


def mlp(x, layer, state_dict):
    """Each position thinks on its own, through a 4x wider hidden layer (nanoGPT's MLP), with
    squared ReLU as its nonlinearity: cheap, and smooth where it is not 0."""
    h = [hj.relu_squared() for hj in linear(x, state_dict[f'{layer}.mlp.fc1'])]
    return linear(h, state_dict[f'{layer}.mlp.fc2'])


def gpt(token_id, pos_id, kv_cache, state_dict, config):
    """One step of the GPT: the token at position pos_id -> scores (logits) for the next token.
    Tokens go in one at a time; kv_cache holds, per layer, what attention() keeps of the past.
    Each block adds attention's output, then the MLP's, to x (the residual stream)."""
    x = [t + p for t, p in zip(state_dict['wte'][token_id], state_dict['wpe'][pos_id])]
    x = rmsnorm(x, state_dict.get('ln_0'))   # not in GPT-2: starts the stream at size 1
    for i in range(config.n_layer):
        h = rmsnorm(x, state_dict.get(f'layer{i}.ln_1'))
        x = [a + b for a, b in zip(x, attention(h, f'layer{i}', kv_cache[i], state_dict, config))]
        h = rmsnorm(x, state_dict.get(f'layer{i}.ln_2'))
        x = [a + b for a, b in zip(x, mlp(h, f'layer{i}', state_dict))]
    return linear(x, state_dict['lm_head'])


# %% Loss
def cross_entropy(logits, target):
    """-log(softmax(logits)[target]) = logsumexp(logits) - logits[target], in nats; it never takes
    log(0). Gradient softmax - one_hot: each logit down by its probability, the target up by 1."""
    return logsumexp(logits) - logits[target]


def document_loss(tokens, state_dict, config):
    """Mean cross-entropy of predicting each next token of one document, in nats."""
    kv_cache = [([], [], []) for _ in range(config.n_layer)]   # per layer: keys, values, attention
    logits = [gpt(tokens[pos], pos, kv_cache, state_dict, config) for pos in range(len(tokens) - 1)]
    losses = [cross_entropy(scores, target) for scores, target in zip(logits, tokens[1:])]
    return sum(losses) / len(losses)


# %% Optimizer
class Adam:
    """Adam: each parameter moves by (running mean of its gradient) / (running RMS of its
    gradient). The division makes the step's size independent of the gradient's scale: about the
    learning rate where the gradient is steady, less where it flips sign, more where it grows."""

    def __init__(self, params, beta1=0.85, beta2=0.99, eps=1e-8):
        # Betas below the usual 0.9 / 0.999: with one document per step and only 1000 steps,
        # shorter memories of the gradient adapt faster.
        self.params, self.beta1, self.beta2, self.eps = params, beta1, beta2, eps
        # Running means of each gradient (first moment) and of its square (second moment); steps.
        self.m, self.v, self.t = [0.0] * len(params), [0.0] * len(params), 0

    def step(self, lr):
        """Update every parameter from its .grad, then reset .grad to 0 (PyTorch: zero_grad())."""
        self.t += 1
        b1, b2, m, v = self.beta1, self.beta2, self.m, self.v
        # Bias correction: m and v start at 0, so after t steps they are too small by a factor
        # (1 - beta^t), v far more so; uncorrected, the first steps would be too large.
        m_correction, v_correction = 1.0 / (1.0 - b1 ** self.t), 1.0 / (1.0 - b2 ** self.t)
        for i, p in enumerate(self.params):
            g = p.grad
            m[i] = b1 * m[i] + (1.0 - b1) * g
            v[i] = b2 * v[i] + (1.0 - b2) * g * g
            p.data -= lr * (m[i] * m_correction) / (math.sqrt(v[i] * v_correction) + self.eps)
            p.grad = 0.0


# %% Training
def train(docs, tokenizer, state_dict, config, losses, log=None):
    """Show the model one document per step, nudging every weight to make it likelier; append
    each step's loss to losses. After each step, log(step, loss) may report (True: stop)."""
    optimizer = Adam([p for matrix in state_dict.values() for row in matrix for p in row])
    for step in range(config.steps):
        tokens = doc_tokens(docs[step % len(docs)], tokenizer, config.block_size)
        with Value.recording():
            loss = document_loss(tokens, state_dict, config)   # forward: builds the graph
            loss.backward()                                    # backward: d(loss)/d(every weight)
        optimizer.step(config.learning_rate * (1 - step / config.steps))   # update; lr decays to 0
        losses.append(loss.data)
        if log and log(step + 1, losses[-1]):
            break


def evaluate(docs, tokenizer, state_dict, config):
    """Mean loss per predicted token over docs, in nats (training's loss is a mean per document
    instead, so each document's mean counts here as many times as it has predictions). Forward
    passes only: nothing is learned."""
    token_lists = [doc_tokens(doc, tokenizer, config.block_size) for doc in docs]
    total = sum(document_loss(t, state_dict, config).data * (len(t) - 1) for t in token_lists)
    return total / sum(len(t) - 1 for t in token_lists)


# %% Sampling
def check_prompt(prompt, tokenizer, config):
    require(set(prompt) <= set(tokenizer.chars) and len(prompt) < config.block_size,
            "--prompt must be shorter than --block-size, in characters of the data")


def generate(state_dict, tokenizer, config, rng, prompt=''):
    """Invent one document: feed BOS (and the prompt), then repeatedly draw the next token from
    the model's probabilities and feed it back in, until the model says BOS (the end)."""
    check_prompt(prompt, tokenizer, config)
    tokens = [tokenizer.bos] + tokenizer.encode(prompt)
    kv_cache = [([], [], []) for _ in range(config.n_layer)]
    for pos in range(config.block_size):
        logits = gpt(tokens[pos], pos, kv_cache, state_dict, config)
        if pos + 1 < len(tokens):
            continue   # still reading the prompt: this step only fills the KV cache
        # Temperature divides the logits: below 1 the likeliest tokens get likelier, above 1 the
        # odds even out. choices() only needs relative weights, so softmax's division is skipped.
        top = max(logit.data for logit in logits)
        require(math.isfinite(top), "the model's scores are not finite: its weights blew up")
        weights = [math.exp((logit.data - top) / config.temperature) for logit in logits]
        # Top-k, as nanoGPT's generate(): only the k likeliest tokens (and any tied with the kth).
        kth = sorted(weights, reverse=True)[:config.top_k or None][-1]   # top_k 0: all of them
        weights = [w if w >= kth else 0.0 for w in weights]
        next_id = rng.choices(range(tokenizer.vocab_size), weights=weights)[0]
        if next_id == tokenizer.bos:
            break
        tokens.append(next_id)
    return tokenizer.decode(tokens[1:])


def print_samples(state_dict, tokenizer, config, seen=(), docs=()):
    """Print config.num_samples samples, drawn afresh from config.seed each time it is called,
    marking each that is a document: seen in training (maybe memorised), or real but unseen."""
    check_prompt(config.prompt, tokenizer, config)   # (before the header: one line if it fails)
    print("--- samples ---")
    rng = random.Random(config.seed)   # fresh, so a loaded checkpoint draws the same samples
    known = {doc: '   <- in the data, never seen' for doc in docs}
    known.update({doc: '   <- seen in training' for doc in seen})
    for i in range(1, config.num_samples + 1):
        sample = generate(state_dict, tokenizer, config, rng, config.prompt)
        print(f"sample {i:2d}: {sample}{known.get(sample, '')}")


# %% Plumbing: flags, checks, progress, Ctrl-C, checkpoints
def flag(name): return '--lr' if name == 'learning_rate' else '--' + name.replace('_', '-')


class ArgumentParser(argparse.ArgumentParser):   # one clear line instead of argparse's usage dump
    def error(self, message): raise InputError(f"{message} (see --help)")


def parse_args(config):
    """config with the flags applied -> (that Config, the settings given as flags). A Jupyter
    kernel starts Python with arguments of its own (-f kernel.json), so a notebook reads none."""
    parser = ArgumentParser(allow_abbrev=False, argument_default=argparse.SUPPRESS)
    for f in fields(Config):
        parser.add_argument(flag(f.name), dest=f.name, type=f.type, help=f"(default: {f.default})")
    given = vars(parser.parse_args([] if 'ipykernel' in sys.modules else sys.argv[1:]))
    for name in ('input', 'save', 'load'):   # e.g. --save "$OUT" with OUT unset
        require(given.get(name) != '', f"--{name} needs a file name, got an empty one")
    return check_config(replace(config, **given)), given


def check_config(config):
    for f in fields(Config):   # (a notebook's replace() converts nothing, so types are checked)
        require(type(getattr(config, f.name)) in (f.type, int if f.type is float else f.type),
                f"{flag(f.name)} must be of type {f.type.__name__}")
    for name, low in (('n_layer', 1), ('n_embd', 1), ('n_head', 1), ('block_size', 1),
                      ('steps', 0), ('num_samples', 0), ('top_k', 0), ('learning_rate', 0)):
        require(low <= getattr(config, name) < math.inf, f"{flag(name)} must be finite, >= {low}")
    require(0 < config.temperature < math.inf, "--temperature must be finite and above 0")
    require(config.n_embd % config.n_head == 0, "--n-embd must be a multiple of --n-head")
    return config


def find_input(path):
    """The file to train on. The default input.txt is also looked for beside this script, so the
    lesson runs from any folder. Only a regular file will do: a pipe or device might never end."""
    beside = os.path.join(os.path.dirname(os.path.abspath(globals().get('__file__', path))), path)
    places = [path] if path != Config.input or beside == os.path.abspath(path) else [path, beside]
    found = [place for place in places if os.path.isfile(place)]
    require(found, f"input file not found (or not a regular file): {' or '.join(places)}")
    return found[0]


def check_run(config, tokenizer, n_params):
    """Fail before training, not after it, when the prompt or --save could not work."""
    check_prompt(config.prompt, tokenizer, config)
    require(n_params <= 10**7, f"{n_params} parameters: too many for pure Python (max 10 million)")
    folder, name = os.path.split(config.save)
    require(not config.save or name and os.access(folder or '.', os.W_OK),
            f"--save {config.save}: cannot write a file there")
    require(not config.save or not os.path.exists(config.save) or is_checkpoint(config.save),
            f"--save {config.save} is not a microgpt checkpoint: not overwriting it")


class Progress:
    """Watches training. On a terminal, one line rewrites itself every step; in a log or a pipe, a
    line for the first step, each tenth of the run and the last. The first Ctrl-C stops training
    after the step (the run still saves, reports and samples); a second quits. Diverged: a mean
    loss over the last 100 steps (fewer at first) above 30x a uniform guess's, or nan."""

    def __init__(self, config, vocab_size):
        self.steps, self.limit, self.stop = config.steps, 30 * math.log(vocab_size), False
        self.recent, self.start = collections.deque(maxlen=100), time.perf_counter()

    def __enter__(self):   # Ctrl-C is ours while training
        self.previous = signal.signal(signal.SIGINT, self.interrupt)
        # A step's Values form no reference cycle: reference counting frees them, and the cycle
        # collector, which would scan them all again and again, can be off (PyPy: log() collects).
        gc.disable()
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        gc.enable()
        # An error cut training short on a terminal: end the live line before the error's line.
        print(end='\n' if sys.stdout.isatty() and self.recent and not self.stop else '')

    def interrupt(self, signum, frame):
        if self.stop: raise KeyboardInterrupt   # a second Ctrl-C, or one during the last log
        self.stop = True
        print("\nCtrl-C: stopping after this step (press again to quit now)", file=sys.stderr)

    def log(self, step, loss):
        # Read once (a Ctrl-C may arrive while this step is logged); the last step stops too.
        stop = self.stop or step == self.steps
        self.recent.append(loss)   # (nan is never below the limit: it stops training too)
        require(sum(self.recent) / len(self.recent) < self.limit,
                f"training diverged at step {step}: try a smaller --lr")
        eta = (time.perf_counter() - self.start) / step * (self.steps - step)
        line = f"step {step:4d} / {self.steps:4d} | loss {loss:.4f} | eta {eta:.0f} s"
        if sys.stdout.isatty():   # \r returns to the line's start
            print('\r' + line + '   ', end='\n' if stop else '', flush=True)
        elif stop or step == 1 or step % max(1, self.steps // 10) == 0:
            print(line, flush=True)
        if step % 40 == 0: gc.collect()   # collection is off while training; PyPy needs some
        if stop:   # training is over; from now on a Ctrl-C quits
            self.stop = True
            print(f"training took {time.perf_counter() - self.start:.1f} s")
        return stop


def loss_report(train_docs, val_docs, steps, tokenizer, state_dict, config):
    """Loss on the last 100 documents trained on next to 100 it never saw: a gap between the two
    means the model memorises rather than learns what a name looks like."""
    train_docs = [train_docs[s % len(train_docs)] for s in range(max(0, steps - 100), steps)]
    val_docs = val_docs[:100]
    print(f"measuring the loss on docs trained on: {len(train_docs)}, held out: {len(val_docs)}...")
    report = [f"{name} loss {evaluate(docs, tokenizer, state_dict, config):.4f}"
              for name, docs in (('train', train_docs), ('val', val_docs)) if docs]
    uniform = f"uniform guess ln({tokenizer.vocab_size}) = {math.log(tokenizer.vocab_size):.4f}"
    return ' | '.join(report + [uniform])   # uniform: the loss of giving every token equal odds


MODEL_SHAPE = ('n_layer', 'n_embd', 'n_head', 'block_size')   # all a checkpoint needs of Config
CHECKPOINT_START = b'{"format":"microgpt-checkpoint-1"'   # (white space left out)


def is_checkpoint(path):   # not a pipe or device: they are never one, and reading may block
    with open(path if os.path.isfile(path) else os.devnull, 'rb') as f:   # (empty: no)
        return b''.join(f.read(100).split()).startswith(CHECKPOINT_START)


def save_checkpoint(path, config, tokenizer, state_dict):
    """Write the model as plain JSON (format in README.md). Atomic: the JSON goes to a temporary
    file beside `path`, renamed over it only once complete, so a crash or Ctrl-C never leaves
    half a checkpoint, and never spoils a good one already there."""
    shape = {name: getattr(config, name) for name in MODEL_SHAPE}
    weights = {name: [[p.data for p in row] for row in m] for name, m in state_dict.items()}
    checkpoint = {'format': 'microgpt-checkpoint-1', 'config': shape,
                  'vocab': tokenizer.chars, 'state_dict': weights}   # vocab[i] is token id i
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f'.microgpt-{os.getpid()}.tmp')
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())   # on disk before the rename, not just in a buffer
        os.replace(tmp, path)      # atomic: readers see the old file or the new one, never half
    finally:
        if os.path.exists(tmp):    # gone already if the rename went through
            os.unlink(tmp)


def load_checkpoint(path, config, given):
    """Read a checkpoint written by save_checkpoint. It is plain data: loading runs no code from
    the file, and every part is checked before use. Returns (state_dict, tokenizer, config)."""
    require(is_checkpoint(path), f"no microgpt checkpoint (made by --save) at {path}")
    try:
        with open(path, encoding='utf-8') as f:
            checkpoint = json.load(f)
        weights, shape, vocab = checkpoint['state_dict'], checkpoint['config'], checkpoint['vocab']
        # Every check below raises if it fails, and any error here (not UTF-8, not JSON, nested
        # thousands deep, not the shape it says) means the same thing.
        require(set(shape) == set(MODEL_SHAPE) and {type(n) for n in shape.values()} == {int}, '')
        config, tokenizer = check_config(replace(config, **shape)), Tokenizer(''.join(vocab))
        sizes = {k: (len(m), {len(row) for row in m}) for k, m in weights.items()}   # rows, widths
        shapes = param_shapes(len(vocab) + 1, config)
        require(tokenizer.chars == vocab and sizes == {k: (r, {c}) for k, (r, c) in shapes.items()}
                and all(type(x) in (int, float) and abs(x) <= sys.float_info.max   # not nan, inf
                        for m in weights.values() for row in m for x in row), '')   # or 10**400
    except (ValueError, RecursionError, TypeError, KeyError, AttributeError, InputError):
        raise InputError(f"{path}: not a usable microgpt checkpoint (damaged or edited)") from None
    clash = [flag(name) for name in given if name in ('input', 'steps', 'learning_rate', 'save')
             or name in MODEL_SHAPE and given[name] != shape[name]]
    require(not clash, f"--load takes the model from {path} as it is; drop {', '.join(clash)}")
    check_run(config, tokenizer, 0)
    return ({name: [[Value(float(x)) for x in r] for r in m] for name, m in weights.items()},
            tokenizer, config)


@contextlib.contextmanager
def one_line_errors():
    """Run the lesson with every expected failure shown as one line on stderr, not a traceback.
    On the command line it exits (2; 130: Ctrl-C; 1: a pipe's reader has gone); a notebook or
    `python3 -i` carries on."""
    if hasattr(sys.stdout, 'reconfigure'):   # a console that cannot show a character shows '?'
        sys.stdout.reconfigure(errors='replace')
    try:
        yield
        return sys.stdout.flush()   # done; a reader that has gone shows up here, not at exit
    except BrokenPipeError:   # e.g. `python3 microgpt.py | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    except KeyboardInterrupt:
        print("\nmicrogpt: interrupted", file=sys.stderr)
        status = 130
    except (InputError, OSError, UnicodeDecodeError, OverflowError, MemoryError) as e:
        hint = {OverflowError: "a number grew past the largest float: try a smaller --lr",
                MemoryError: "out of memory: try a smaller model"}.get(type(e), e)
        print(f"microgpt: error: {hint}", file=sys.stderr)
        status = 2
    if not (sys.flags.inspect or 'IPython' in sys.modules):
        sys.exit(status)


# %% Run: settings, data, tokenizer, parameters, training, report, samples
if __name__ == '__main__':
    with one_line_errors():
        config, given = parse_args(config)
        if config.load:   # a trained model from disk: straight to the samples
            state_dict, tokenizer, config = load_checkpoint(config.load, config, given)
            print_samples(state_dict, tokenizer, config)   # (a checkpoint keeps no documents)
        else:
            docs = load_docs(find_input(config.input))
            require(docs, f"{config.input} holds no documents: every line is blank")
            rng = random.Random(config.seed)   # one seeded generator: the shuffle and the init
            rng.shuffle(docs)
            n_val = len(docs) // 10   # hold out 10% to measure how well the model generalises
            val_docs, train_docs = docs[:n_val], docs[n_val:]
            print(f"num docs: {len(docs)} ({n_val} held out for validation)")
            tokenizer = Tokenizer(''.join(docs))
            print(f"vocab size: {tokenizer.vocab_size}")
            # A doc fits when BOS + doc + BOS is at most block_size + 1 tokens (see doc_tokens).
            too_long = sum(len(doc) + 1 > config.block_size for doc in train_docs)
            if too_long:
                print(f"note: {too_long} training docs exceed block_size: only their start is seen")
            n_params = sum(r * c for r, c in param_shapes(tokenizer.vocab_size, config).values())
            print(f"num params: {n_params}")
            check_run(config, tokenizer, n_params)
            state_dict = init_params(tokenizer.vocab_size, config, rng)

            losses = []   # made first, so that a notebook keeps the losses of a run cut short
            with Progress(config, tokenizer.vocab_size) as progress:
                train(train_docs, tokenizer, state_dict, config, losses, progress.log)
            if config.save:   # first: the report below can take a while
                save_checkpoint(config.save, config, tokenizer, state_dict)
                print(f"saved the model to {config.save}")
            print(loss_report(train_docs, val_docs, len(losses), tokenizer, state_dict, config))

            print_samples(state_dict, tokenizer, config, train_docs[:len(losses)], docs)
