"""Tests for microgpt's model side: logsumexp, softmax, rmsnorm, cross-entropy, the full GPT's
gradients and attention weights, the tokenizer, load_docs and find_input, Adam, the fast paths
(dot, linear, logsumexp, softmax) against plain Value arithmetic, training, graphs around training
(recorded or not, several models and optimizers in one process), evaluation and sampling (top-k,
prompts), a learner's own changes (another MLP, a learned RMSNorm gain), memory and determinism.

Expected numbers are derived by hand (the derivation is in a comment) or computed independently
in plain floats; gradients are checked against central finite differences.
"""
import collections
import contextlib
import dataclasses
import gc
import io
import math
import os
import random
import sys
import tempfile
import unittest
from unittest import mock

try:
    import tracemalloc
except ImportError:   # PyPy
    tracemalloc = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import microgpt  # noqa: E402

Value = microgpt.Value
H = 1e-6

NAMES = ['ana', 'bob', 'cara', 'dan', 'eve', 'fay', 'gus', 'hal', 'ida', 'jo',
         'kim', 'lea', 'max', 'nia', 'ole', 'pam', 'ray', 'sue', 'tom', 'una',
         'val', 'wes', 'xia', 'yan', 'zoe', 'abe', 'bea', 'cal', 'dee', 'eli']


def close(actual, expected, atol, rtol):
    return abs(actual - expected) <= atol + rtol * abs(expected)   # False on nan


def tiny_model(seed=0, n_layer=2, n_embd=8, n_head=2, block_size=6, chars='abcd', **kw):
    config = microgpt.Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                             block_size=block_size, **kw)
    tokenizer = microgpt.Tokenizer(chars)
    state_dict = microgpt.init_params(tokenizer.vocab_size, config, random.Random(seed))
    return config, tokenizer, state_dict


def central_difference(f, xs, i):
    """d f / d xs[i] by central finite differences: (f(x + h) - f(x - h)) / 2h."""
    up, down = list(xs), list(xs)
    up[i] += H
    down[i] -= H
    return (f(up) - f(down)) / (2 * H)


def assert_grads_match(test, leaves, f, xs):
    """Each leaf's .grad equals the central difference of the float function f at xs."""
    for i, leaf in enumerate(leaves):
        fd = central_difference(f, xs, i)
        test.assertTrue(close(leaf.grad, fd, 1e-8, 1e-6), (i, leaf.grad, fd))


def flat_params(state_dict):
    """Every weight, matrix by matrix and row by row: the order in which train() hands them to
    Adam."""
    return [p for matrix in state_dict.values() for row in matrix for p in row]


def new_kv_cache(config):
    """What document_loss and generate start from: per layer, (keys, values, attention)."""
    return [([], [], []) for _ in range(config.n_layer)]


def composite_logsumexp(x):
    """log(sum_i e^x_i) built from Value ops: the max subtracted as a constant (which changes
    neither value nor gradient), exp, +, log, then the max added back."""
    composite_logsumexp.calls += 1
    top = max(xi.data for xi in x)
    return sum((xi - top).exp() for xi in x).log() + top


def composite_softmax(logits):
    """e^x_i / sum_j e^x_j built from Value ops: exp of x - max, +, a reciprocal, *."""
    composite_softmax.calls += 1
    top = max(x.data for x in logits)
    exps = [(x - top).exp() for x in logits]
    inv_total = sum(exps) ** -1
    return [e * inv_total for e in exps]


composite_logsumexp.calls = composite_softmax.calls = 0


class NoRecordingTestCase(unittest.TestCase):
    """No recording is on when a test starts, and none is left on when it ends: Value.tape is None
    outside `with Value.recording():` (train() records each step, and ends its recording)."""

    def setUp(self):
        self.assertIsNone(Value.tape)
        self.addCleanup(lambda: self.assertIsNone(Value.tape))


def float_softmax(xs):
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


# %% logsumexp, softmax, rmsnorm, cross_entropy
class TestLogsumexp(NoRecordingTestCase):
    def test_hand_values(self):
        # log(e^0 + e^(ln 2) + e^(ln 3)) = log(1 + 2 + 3) = ln 6; and log(e^a) = a for one value
        lse = microgpt.logsumexp([Value(0.0), Value(math.log(2)), Value(math.log(3))])
        self.assertAlmostEqual(lse.data, math.log(6), delta=1e-15)
        self.assertEqual(microgpt.logsumexp([Value(-7.5)]).data, -7.5)

    def test_one_node_whose_local_gradients_are_softmax(self):
        # d/dx_i log(sum_j e^x_j) = e^x_i / sum_j e^x_j: for [0, ln 2, ln 3], (1, 2, 3) / 6
        leaves = [Value(0.0), Value(math.log(2)), Value(math.log(3))]
        with Value.recording():
            lse = microgpt.logsumexp(leaves)
            self.assertEqual(Value.tape, [lse])
        self.assertEqual(lse._children, tuple(leaves))
        for g, expected in zip(lse._local_grads, (1 / 6, 2 / 6, 3 / 6)):
            self.assertAlmostEqual(g, expected, delta=1e-15)

    def test_large_and_small_values_stay_finite(self):
        # log(e^1000 + e^1000) = 1000 + ln 2, though e^1000 alone overflows a float;
        # log(e^-1000 + e^-1001) = -1000 + ln(1 + 1/e), though e^-1000 rounds to 0.
        self.assertAlmostEqual(microgpt.logsumexp([Value(1000.0)] * 2).data, 1000 + math.log(2),
                               delta=1e-12)
        lse = microgpt.logsumexp([Value(-1000.0), Value(-1001.0)])
        self.assertAlmostEqual(lse.data, -1000 + math.log(1 + 1 / math.e), delta=1e-12)

    def test_gradient_against_finite_differences(self):
        rng = random.Random(15)
        for n in (1, 2, 6):
            xs = [rng.gauss(0, 2) for _ in range(n)]
            leaves = [Value(x) for x in xs]
            (microgpt.logsumexp(leaves) * 1.5).backward()
            f = lambda v: 1.5 * math.log(sum(math.exp(x) for x in v))  # noqa: E731
            assert_grads_match(self, leaves, f, xs)


class TestSoftmax(NoRecordingTestCase):
    def test_hand_values(self):
        # exp(0), exp(ln 2), exp(ln 3) = 1, 2, 3 -> 1/6, 2/6, 3/6
        probs = microgpt.softmax([Value(0.0), Value(math.log(2)), Value(math.log(3))])
        for p, expected in zip(probs, (1 / 6, 2 / 6, 3 / 6)):
            self.assertIsInstance(p, Value)
            self.assertAlmostEqual(p.data, expected, delta=1e-15)

    def test_sums_to_one(self):
        rng = random.Random(3)
        for n in (1, 2, 5, 27):
            probs = microgpt.softmax([Value(rng.gauss(0, 3)) for _ in range(n)])
            self.assertAlmostEqual(sum(p.data for p in probs), 1.0, delta=1e-12)
            self.assertTrue(all(0.0 <= p.data <= 1.0 for p in probs))

    def test_large_logits_do_not_overflow(self):
        # softmax is shift-invariant: [1000, 1001, 1002] -> [0, 1, 2] -> e^k / (1 + e + e^2).
        # (math.exp(1000) alone would raise OverflowError.)
        probs = [p.data for p in microgpt.softmax([Value(1000.0), Value(1001.0), Value(1002.0)])]
        z = 1 + math.e + math.e ** 2
        for p, expected in zip(probs, (1 / z, math.e / z, math.e ** 2 / z)):
            self.assertAlmostEqual(p, expected, delta=1e-14)

    def test_very_negative_logit(self):
        # [-1000, 0]: e^-1000 ~ 5e-435 is below the smallest double, so exactly [0.0, 1.0].
        probs = [p.data for p in microgpt.softmax([Value(-1000.0), Value(0.0)])]
        self.assertEqual(probs, [0.0, 1.0])

    def test_gradient_against_finite_differences(self):
        # f = sum_i w_i softmax(x)_i with fixed weights w
        rng = random.Random(5)
        xs = [rng.uniform(-2, 2) for _ in range(5)]
        ws = [rng.uniform(-1, 1) for _ in range(5)]
        f = lambda v: sum(w * p for w, p in zip(ws, float_softmax(v)))  # noqa: E731
        leaves = [Value(x) for x in xs]
        out = sum(p * w for w, p in zip(ws, microgpt.softmax(leaves)))
        out.backward()
        assert_grads_match(self, leaves, f, xs)

    def test_one_logsumexp_node_then_one_node_per_probability(self):
        # softmax of n Values adds n + 1 nodes: ONE logsumexp over all n, then each p_i =
        # e^(x_i - lse) with the two children x_i and lse, local gradients p_i and -p_i.
        # (Built from exp, + and a shared reciprocal, as composite_softmax does, it takes 4n + 1.)
        for n in (1, 3, 27):
            logits = [Value(float(i)) for i in range(n)]   # leaves: not recorded
            with Value.recording():
                probs = microgpt.softmax(logits)
                self.assertEqual(len(Value.tape), n + 1, n)
                lse = Value.tape[0]
                self.assertEqual(lse._children, tuple(logits))
                self.assertEqual(Value.tape[1:], probs)
            for x, p in zip(logits, probs):
                self.assertEqual(p._children, (x, lse))
                self.assertEqual(p._local_grads, (p.data, -p.data))
            with Value.recording():
                composite_softmax(logits)
                self.assertEqual(len(Value.tape), 4 * n + 1, n)

    def test_matches_a_composite_of_value_operations(self):
        # The same probabilities built node by node (exp, +, ** -1, *): same values and the same
        # gradients of a weighted sum of them.
        rng = random.Random(14)
        for n in (1, 2, 5, 27):
            xs = [rng.gauss(0, 3) for _ in range(n)]
            ws = [rng.uniform(-1, 1) for _ in range(n)]
            fast, composite = [Value(x) for x in xs], [Value(x) for x in xs]
            a = sum(p * w for w, p in zip(ws, microgpt.softmax(fast)))
            a.backward()
            b = sum(p * w for w, p in zip(ws, composite_softmax(composite)))
            b.backward()
            self.assertAlmostEqual(a.data, b.data, delta=1e-14)
            for u, v in zip(fast, composite):
                self.assertAlmostEqual(u.grad, v.grad, delta=1e-14)


class TestLinear(NoRecordingTestCase):
    def test_empty_vector_gives_float_zeros_off_the_tape(self):
        # No columns: each row's dot product is the empty sum, 0.0 (a float, like every other
        # Value's data), with no children, so nothing is recorded on the tape.
        with Value.recording():
            out = microgpt.linear([], [[], []])
            self.assertEqual(Value.tape, [])
        self.assertEqual([(type(y.data), y.data, y._children) for y in out], [(float, 0.0, [])] * 2)

    def test_hand_values_and_gradients(self):
        # w = [[1, 2], [3, -1], [0.5, 0]], x = [4, -2]:
        #   y = w @ x = [1*4 + 2*(-2), 3*4 + (-1)*(-2), 0.5*4 + 0*(-2)] = [0, 14, 2]
        # L = 1*y0 + 2*y1 - 1*y2 = 26:  dL/dw[r][j] = c_r x_j with c = (1, 2, -1),
        #   dL/dx_j = sum_r c_r w[r][j] = (1 + 6 - 0.5, 2 - 2 - 0) = (6.5, 0)
        w = [[Value(a) for a in row] for row in ((1.0, 2.0), (3.0, -1.0), (0.5, 0.0))]
        x = [Value(4.0), Value(-2.0)]
        with Value.recording():
            y = microgpt.linear(x, w)
            self.assertEqual(Value.tape, y)   # one node per row of w
        for row, node in zip(w, y):
            self.assertTrue(all(a is b for a, b in zip(node._children, row + x)))
        self.assertEqual([v.data for v in y], [0.0, 14.0, 2.0])
        loss = y[0] + y[1] * 2 - y[2]
        loss.backward()
        self.assertEqual(loss.data, 26.0)
        self.assertEqual([[p.grad for p in row] for row in w],
                         [[4.0, -2.0], [8.0, -4.0], [-4.0, 2.0]])
        self.assertEqual([v.grad for v in x], [6.5, 0.0])

    def test_gradient_against_finite_differences(self):
        # f = sum_r exp(0.3 * (w @ x)_r): every entry of w and x through a nonlinearity
        rng = random.Random(14)
        rows, cols = 3, 4
        xs = [rng.uniform(-1, 1) for _ in range(rows * cols + cols)]   # w row by row, then x

        def f(v):
            w, x = [v[r * cols:(r + 1) * cols] for r in range(rows)], v[rows * cols:]
            return sum(math.exp(0.3 * sum(a * b for a, b in zip(row, x))) for row in w)

        leaves = [Value(v) for v in xs]
        w = [leaves[r * cols:(r + 1) * cols] for r in range(rows)]
        out = sum((y * 0.3).exp() for y in microgpt.linear(leaves[rows * cols:], w))
        self.assertAlmostEqual(out.data, f(xs), delta=1e-12)
        out.backward()
        assert_grads_match(self, leaves, f, xs)


class TestRmsnorm(NoRecordingTestCase):
    def test_output_has_unit_rms(self):
        rng = random.Random(8)
        for scale in (0.5, 1.0, 30.0):
            x = [Value(rng.gauss(0, scale)) for _ in range(16)]
            y = microgpt.rmsnorm(x)
            rms = math.sqrt(sum(v.data ** 2 for v in y) / len(y))
            self.assertAlmostEqual(rms, 1.0, delta=1e-4)

    def test_hand_values(self):
        # x = [3, 4]: mean square = (9 + 16) / 2 = 12.5, scale = 1 / sqrt(12.5 + 1e-5)
        y = [v.data for v in microgpt.rmsnorm([Value(3.0), Value(4.0)])]
        s = 1 / math.sqrt(12.50001)
        self.assertAlmostEqual(y[0], 3 * s, delta=1e-15)
        self.assertAlmostEqual(y[1], 4 * s, delta=1e-15)
        # x = 0: the 1e-5 keeps it finite: output 0, gradient 1 / sqrt(1e-5) per unit of input
        zeros = [Value(0.0), Value(0.0)]
        y = microgpt.rmsnorm(zeros)
        self.assertEqual([v.data for v in y], [0.0, 0.0])
        y[0].backward()
        self.assertAlmostEqual(zeros[0].grad, 1e-5 ** -0.5, delta=1e-9)
        self.assertEqual(zeros[1].grad, 0.0)

    def test_gradient_against_finite_differences(self):
        rng = random.Random(9)
        xs = [rng.gauss(0, 1) for _ in range(6)]
        ws = [rng.uniform(-1, 1) for _ in range(6)]

        def f(v):   # sum_i w_i * rmsnorm(v)_i, in floats
            s = (sum(a * a for a in v) / len(v) + 1e-5) ** -0.5
            return sum(w * a * s for w, a in zip(ws, v))

        leaves = [Value(x) for x in xs]
        out = sum(y * w for w, y in zip(ws, microgpt.rmsnorm(leaves)))
        self.assertAlmostEqual(out.data, f(xs), delta=1e-12)
        out.backward()
        assert_grads_match(self, leaves, f, xs)


class TestCrossEntropy(NoRecordingTestCase):
    def test_equals_minus_log_softmax(self):
        logits = [0.5, -1.0, 2.0, 0.0]
        for target in range(4):
            expected = -math.log(math.exp(logits[target]) / sum(math.exp(x) for x in logits))
            loss = microgpt.cross_entropy([Value(x) for x in logits], target)
            self.assertAlmostEqual(loss.data, expected, delta=1e-14)

    def test_uniform_logits_give_log_vocab(self):
        # all logits equal: p = 1/n, loss = ln n
        loss = microgpt.cross_entropy([Value(1.7)] * 5, 3)
        self.assertAlmostEqual(loss.data, math.log(5), delta=1e-15)

    def test_extreme_logits_stay_finite(self):
        # logits [0, -1e4, 1e4]: logsumexp = 1e4 + ln(1 + e^-1e4 + e^-2e4) = 1e4 in floats, so
        # the loss for target t is 1e4 - logits[t]: 1e4, 2e4, 0.
        logits = [0.0, -1e4, 1e4]
        # The naive route fails: softmax rounds the probability of target 1 down to 0.
        self.assertEqual(float_softmax(logits)[1], 0.0)
        for target, expected in ((0, 1e4), (1, 2e4), (2, 0.0)):
            leaves = [Value(x) for x in logits]
            loss = microgpt.cross_entropy(leaves, target)
            self.assertEqual(loss.data, expected)
            loss.backward()
            # softmax is (0, 0, 1) to within e^-1e4, so the gradient is that minus one-hot
            onehot = [1.0 if i == target else 0.0 for i in range(3)]
            self.assertEqual([v.grad for v in leaves], [p - o for p, o in zip([0.0, 0.0, 1.0], onehot)])

    def test_is_logsumexp_minus_the_target_logit(self):
        # Three nodes: logsumexp over all the logits, -logits[target], and their sum.
        leaves = [Value(x) for x in (0.5, -1.0, 2.0, 0.0)]
        with Value.recording():
            loss = microgpt.cross_entropy(leaves, 2)
            lse, minus_target = Value.tape[:2]
            self.assertEqual(Value.tape, [lse, minus_target, loss])
        self.assertEqual(lse._children, tuple(leaves))
        self.assertEqual(minus_target._children, (leaves[2],))
        self.assertEqual(loss._children, (lse, minus_target))
        self.assertEqual(loss.data, lse.data - 2.0)

    def test_matches_a_composite_of_value_operations(self):
        # The same loss built node by node (exp, sum, log, -) must agree in value and gradient.
        rng = random.Random(12)
        for n in (2, 5, 27):
            xs = [rng.gauss(0, 3) for _ in range(n)]
            target = rng.randrange(n)
            fused, composite = [Value(x) for x in xs], [Value(x) for x in xs]
            a = microgpt.cross_entropy(fused, target)
            (a * 0.5).backward()   # through one more node: each local gradient times 0.5
            b = composite_logsumexp(composite) - composite[target]   # (a's graph is still alive)
            (b * 0.5).backward()
            self.assertAlmostEqual(a.data, b.data, delta=1e-12)
            for u, v in zip(fused, composite):
                self.assertAlmostEqual(u.grad, v.grad, delta=1e-14)

    def test_equal_huge_logits(self):
        # n equal logits, however large: p = 1/n, loss = ln n, gradient 1/n - one_hot.
        # (exp(1000) alone overflows; e^0 = 1 after subtracting the max.)
        leaves = [Value(1000.0) for _ in range(4)]
        loss = microgpt.cross_entropy(leaves, 1)
        self.assertAlmostEqual(loss.data, math.log(4), delta=1e-12)
        loss.backward()
        self.assertEqual([v.grad for v in leaves], [0.25, -0.75, 0.25, 0.25])

    def test_gradient_is_softmax_minus_onehot(self):
        # loss = ln(sum_j e^x_j) - x_t  =>  d loss / d x_i = e^x_i / sum_j e^x_j - [i == t]
        logits = [0.5, -1.0, 2.0]
        exps = [math.exp(x) for x in logits]
        p = [e / sum(exps) for e in exps]
        for target in range(3):
            leaves = [Value(x) for x in logits]
            microgpt.cross_entropy(leaves, target).backward()
            for i, leaf in enumerate(leaves):
                expected = p[i] - (1.0 if i == target else 0.0)
                self.assertAlmostEqual(leaf.grad, expected, delta=1e-15)
                # and against a central difference of the float formula
                f = lambda v: math.log(sum(math.exp(x) for x in v)) - v[target]  # noqa: E731
                self.assertAlmostEqual(leaf.grad, central_difference(f, logits, i), delta=1e-8)

    def test_gradient_against_finite_differences_at_random_points(self):
        # d/dx_i of ln(sum_j e^x_j) - x_t, by central differences of the float formula.
        rng = random.Random(13)
        for _ in range(5):
            n = rng.randrange(2, 8)
            xs = [rng.gauss(0, 2) for _ in range(n)]
            target = rng.randrange(n)
            f = lambda v: math.log(sum(math.exp(x) for x in v)) - v[target]  # noqa: E731
            leaves = [Value(x) for x in xs]
            loss = microgpt.cross_entropy(leaves, target)
            self.assertAlmostEqual(loss.data, f(xs), delta=1e-12)
            loss.backward()
            assert_grads_match(self, leaves, f, xs)


# %% The full model
def float_squared_relu(a):
    return max(0.0, a) ** 2


def float_forward(tokens, state_dict, config, attention=None, nonlinearity=float_squared_relu):
    """An independent plain-float GPT forward pass: the logits at every input position. If a
    list is given as `attention`, per layer, it receives each head's attention weights in order:
    for each position, for each head. The MLP's nonlinearity can be swapped; an RMSNorm gain
    (a 1-row matrix 'ln_0', 'layer{i}.ln_1' or 'layer{i}.ln_2' in state_dict) scales by 1 + g."""
    W = {name: [[p.data for p in row] for row in m] for name, m in state_dict.items()}
    hd = config.n_embd // config.n_head

    def lin(x, w):
        return [sum(a * b for a, b in zip(row, x)) for row in w]

    def rms(x, gain_name=None):
        s = (sum(a * a for a in x) / len(x) + 1e-5) ** -0.5
        gain = W[gain_name][0] if gain_name in W else [0.0] * len(x)
        return [a * s * (1 + g) for a, g in zip(x, gain)]

    keys = [[] for _ in range(config.n_layer)]
    vals = [[] for _ in range(config.n_layer)]
    out = []
    for pos, tok in enumerate(tokens):
        x = rms([a + b for a, b in zip(W['wte'][tok], W['wpe'][pos])], 'ln_0')
        for i in range(config.n_layer):
            res = x
            x = rms(x, f'layer{i}.ln_1')
            q, k, v = (lin(x, W[f'layer{i}.attn.{n}']) for n in ('wq', 'wk', 'wv'))
            keys[i].append(k)
            vals[i].append(v)
            heads = []
            for h in range(config.n_head):
                lo, hi = h * hd, (h + 1) * hd
                scores = [sum(q[j] * kt[j] for j in range(lo, hi)) / math.sqrt(hd) for kt in keys[i]]
                w = float_softmax(scores)
                if attention is not None:
                    attention[i].append(w)
                heads += [sum(w[t] * vals[i][t][j] for t in range(len(w))) for j in range(lo, hi)]
            x = [a + b for a, b in zip(lin(heads, W[f'layer{i}.attn.wo']), res)]
            res = x
            x = lin(rms(x, f'layer{i}.ln_2'), W[f'layer{i}.mlp.fc1'])
            x = [nonlinearity(a) for a in x]
            x = [a + b for a, b in zip(lin(x, W[f'layer{i}.mlp.fc2']), res)]
        out.append(lin(x, W['lm_head']))
    return out


@contextlib.contextmanager
def recorded_linear_calls():
    """While active, every microgpt.linear(x, w) call is appended to the yielded list as
    (x, w, out)."""
    calls, linear = [], microgpt.linear

    def recording_linear(x, w):
        out = linear(x, w)
        calls.append((x, w, out))
        return out
    with mock.patch.object(microgpt, 'linear', recording_linear):
        yield calls


class TestModel(NoRecordingTestCase):
    def test_param_shapes(self):
        config, tok, sd = tiny_model()
        e, v = 8, tok.vocab_size
        expected = {'wte': (v, e), 'wpe': (6, e), 'lm_head': (v, e)}
        for i in range(2):
            expected.update({f'layer{i}.attn.wq': (e, e), f'layer{i}.attn.wk': (e, e),
                             f'layer{i}.attn.wv': (e, e), f'layer{i}.attn.wo': (e, e),
                             f'layer{i}.mlp.fc1': (4 * e, e), f'layer{i}.mlp.fc2': (e, 4 * e)})
        self.assertEqual({n: (len(m), len(m[0])) for n, m in sd.items()}, expected)
        self.assertTrue(all(len(row) == len(m[0]) for m in sd.values() for row in m))
        # 2*5*8 + 6*8 + 2 layers * (4*64 + 2*256) = 80 + 48 + 1536
        self.assertEqual(len(flat_params(sd)), 1664)

    def test_forward_matches_plain_float_reference(self):
        config, tok, sd = tiny_model(seed=4)
        tokens = [tok.bos, 0, 1, 2, 0, tok.bos]
        kv = new_kv_cache(config)
        expected = float_forward(tokens[:-1], sd, config)
        for pos, tok_id in enumerate(tokens[:-1]):
            logits = microgpt.gpt(tok_id, pos, kv, sd, config)
            self.assertEqual(len(logits), tok.vocab_size)
            for a, b in zip(logits, expected[pos]):
                self.assertAlmostEqual(a.data, b, delta=1e-12)
        self.assertEqual([(len(keys), len(values)) for keys, values, _ in kv], [(5, 5), (5, 5)])
        # document_loss is the mean over positions of -log softmax(logits)[next token]
        losses = [-math.log(float_softmax(lg)[nxt]) for lg, nxt in zip(expected, tokens[1:])]
        loss = microgpt.document_loss(tokens, sd, config)
        self.assertAlmostEqual(loss.data, sum(losses) / len(losses), delta=1e-12)

    def test_attention_is_causal(self):
        # The logits at position t depend only on tokens 0..t: changing a later token must not
        # change them, and changing an earlier one must.
        config, tok, sd = tiny_model(seed=5)

        def logits_of(tokens):
            kv = new_kv_cache(config)
            return [[v.data for v in microgpt.gpt(t, pos, kv, sd, config)] for pos, t in enumerate(tokens)]

        a = logits_of([tok.bos, 0, 1, 2])
        b = logits_of([tok.bos, 0, 1, 3])
        c = logits_of([tok.bos, 3, 1, 2])
        self.assertEqual(a[:3], b[:3])
        self.assertNotEqual(a[3], b[3])
        self.assertEqual(a[0], c[0])
        self.assertNotEqual(a[2], c[2])

    def test_attention_weights_in_the_cache(self):
        # After position pos, each layer's attention list holds n_head lists per position so far:
        # (pos + 1) * n_head. The newest n_head are this position's weights, one per head, over
        # positions 0..pos: pos + 1 probabilities summing to 1, equal to softmax(q.k / sqrt(4))
        # recomputed in plain floats (head_dim = 8 // 2 = 4).
        config, tok, sd = tiny_model(seed=8)
        tokens = [tok.bos, 2, 0, 3, 1]
        expected = [[], []]
        float_forward(tokens, sd, config, attention=expected)
        kv = new_kv_cache(config)
        for pos, t in enumerate(tokens):
            microgpt.gpt(t, pos, kv, sd, config)
            for i, (_, _, attention) in enumerate(kv):
                self.assertEqual(len(attention), (pos + 1) * 2)
                for weights in attention[-2:]:
                    self.assertEqual(len(weights), pos + 1)
                    self.assertTrue(all(isinstance(w, Value) for w in weights))
                    self.assertAlmostEqual(sum(w.data for w in weights), 1.0, delta=1e-12)
        for i, (_, _, attention) in enumerate(kv):
            self.assertEqual(len(attention), len(expected[i]))
            for got, want in zip(attention, expected[i]):
                self.assertEqual(len(got), len(want))
                for a, b in zip(got, want):
                    self.assertAlmostEqual(a.data, b, delta=1e-12)
        # and they are not trivially uniform: the check above could tell them apart
        self.assertGreater(max(abs(w.data - 1 / len(ws)) for ws in kv[0][2] for w in ws), 1e-3)

    def test_zero_queries_attend_uniformly(self):
        # Layer 0's wq = 0 -> q = 0 -> every score q.k / sqrt(head_dim) is 0 -> softmax of pos + 1
        # equal scores is 1 / (pos + 1) each, in every head.
        config, tok, sd = tiny_model(seed=9, n_layer=1)
        for row in sd['layer0.attn.wq']:
            for p in row:
                p.data = 0.0
        kv = new_kv_cache(config)
        for pos, t in enumerate([tok.bos, 0, 1, 2]):
            microgpt.gpt(t, pos, kv, sd, config)
        weights = [[w.data for w in ws] for ws in kv[0][2]]
        self.assertEqual(len(weights), 4 * 2)
        for pos in range(4):
            for h in range(2):
                for w in weights[pos * 2 + h]:
                    self.assertAlmostEqual(w, 1 / (pos + 1), delta=1e-15)

    def test_zero_lm_head_gives_log_vocab_loss(self):
        # lm_head = 0 -> every logit is 0 -> softmax is uniform -> every position's loss is ln V
        config, tok, sd = tiny_model(seed=6)
        for row in sd['lm_head']:
            for p in row:
                p.data = 0.0
        loss = microgpt.document_loss([tok.bos, 1, 2, tok.bos], sd, config)
        self.assertAlmostEqual(loss.data, math.log(tok.vocab_size), delta=1e-12)

    def test_evaluate_is_the_mean_loss_per_token(self):
        # evaluate() weighs each document by its number of predictions (tokens - 1), unlike a mean
        # of document means: here 'ab' has 3 predictions, 'cadbcadb' (cut to block_size) 6.
        config, tok, sd = tiny_model(seed=11)
        docs = ['ab', 'cadbcadb']
        total, count = 0.0, 0
        for doc in docs:
            tokens = microgpt.doc_tokens(doc, tok, config.block_size)
            logits = float_forward(tokens[:-1], sd, config)
            total += sum(-math.log(float_softmax(lg)[n]) for lg, n in zip(logits, tokens[1:]))
            count += len(tokens) - 1
        self.assertEqual(count, 3 + 6)
        self.assertAlmostEqual(microgpt.evaluate(docs, tok, sd, config), total / count, delta=1e-12)

    def test_long_document_fits_the_position_table(self):
        # doc_tokens cuts to block_size + 1 tokens, so the model reads positions 0..block_size-1,
        # exactly the rows of wpe: no IndexError, and the loss averages block_size predictions.
        config, tok, sd = tiny_model(seed=7, block_size=4)
        tokens = microgpt.doc_tokens('abcdabcd', tok, config.block_size)
        self.assertEqual(len(tokens), 5)
        loss = microgpt.document_loss(tokens, sd, config)
        logits = float_forward(tokens[:-1], sd, config)
        expected = sum(-math.log(float_softmax(lg)[n]) for lg, n in zip(logits, tokens[1:])) / 4
        self.assertAlmostEqual(loss.data, expected, delta=1e-12)

    def test_fc2_gets_edges_only_from_the_active_units(self):
        # Squared ReLU is exactly 0, with slope 0, for every input <= 0. linear() gives such an
        # input no edge: the logits are those of the dense float reference, and each of fc2's
        # nodes has 2 children per active unit (its weight and the unit), not 2 per unit.
        config, tok, sd = tiny_model(seed=4, n_layer=1)
        kv = new_kv_cache(config)
        tokens = [tok.bos, 0, 1, 2]
        expected = float_forward(tokens, sd, config)
        with recorded_linear_calls() as calls:
            for pos, t in enumerate(tokens):
                logits = microgpt.gpt(t, pos, kv, sd, config)
                for a, b in zip(logits, expected[pos]):
                    self.assertAlmostEqual(a.data, b, delta=1e-12)
        fc1, fc2 = sd['layer0.mlp.fc1'], sd['layer0.mlp.fc2']
        fc1_calls = [i for i, (x, w, out) in enumerate(calls) if w is fc1]
        self.assertEqual(len(fc1_calls), 4)   # one per position
        active_counts = []
        for i in fc1_calls:
            before_relu = calls[i][2]
            active = [j for j, z in enumerate(before_relu) if z.data > 0]
            x, w, out = calls[i + 1]   # the next matrix product is fc2's, given every unit
            self.assertIs(w, fc2)
            self.assertEqual(len(x), 4 * config.n_embd)
            for node, fc2_row in zip(out, fc2):
                self.assertEqual(len(node._children), 2 * len(active))
                self.assertTrue(all(a is b for a, b in zip(
                    node._children, [fc2_row[j] for j in active] + [x[j] for j in active])))
            active_counts.append(len(active))
        # some units are active and some are not, so the test sees both kinds
        self.assertTrue(all(0 < n < 4 * config.n_embd for n in active_counts), active_counts)

    def test_linear_skips_a_unit_only_if_its_value_and_slope_are_0(self):
        # Rows of fc1 made from one row k whose output at position 0 is clearly positive, z_k:
        # row 0 = 1e-8 * row k (value ~1e-16 z_k^2, tiny but not 0: kept), row 1 = 1e-170 * row k
        # (its square underflows to 0.0, but the slope 2e-170 z_k does not: kept), row 2 = 0
        # (value 0, slope 0: skipped), row 3 = -row k (negative: value 0, slope 0: skipped).
        config, tok, sd = tiny_model(seed=4, n_layer=1)
        fc1 = sd['layer0.mlp.fc1']

        def fc2_inputs_at_position_0():
            with recorded_linear_calls() as calls:
                microgpt.gpt(tok.bos, 0, new_kv_cache(config), sd, config)
            i = next(i for i, (x, w, out) in enumerate(calls) if w is fc1)
            node = calls[i + 1][2][0]   # fc2's first output: its weights, then its inputs
            return calls[i][2], node._children[len(node._children) // 2:]
        hidden, _ = fc2_inputs_at_position_0()
        k = max(range(4, len(fc1)), key=lambda j: hidden[j].data)
        self.assertGreater(hidden[k].data, 0.1)
        for j, scale in ((0, 1e-8), (1, 1e-170), (2, 0.0), (3, -1.0)):
            for p, q in zip(fc1[j], fc1[k]):
                p.data = scale * q.data
        hidden, fc2_x = fc2_inputs_at_position_0()
        self.assertGreater(hidden[0].data, 0.0)
        self.assertEqual(hidden[1].data ** 2, 0.0)
        kept = [xj._children[0] for xj in fc2_x]   # the fc1 outputs behind fc2's inputs
        self.assertTrue(any(h is hidden[0] for h in kept))
        self.assertTrue(any(h is hidden[1] for h in kept))
        self.assertFalse(any(h is hidden[2] or h is hidden[3] for h in kept))
        self.assertTrue(any(h is hidden[k] for h in kept))

    def test_mlp_with_another_nonlinearity_keeps_units_at_0_with_a_slope(self):
        # A learner swaps squared ReLU for tanh. With fc1 = 0 every hidden unit is tanh(0) = 0,
        # but its slope is 1, so it must still reach fc2 and pass gradient back to fc1: fc1's
        # gradient must match central differences of the loss, and not be all 0.
        config, tok, sd = tiny_model(seed=8, n_layer=1)
        for row in sd['layer0.mlp.fc1']:
            for p in row:
                p.data = 0.0
        tokens = [tok.bos, 2, 0, tok.bos]
        with mock.patch.object(Value, 'relu_squared', Value.tanh):
            loss = microgpt.document_loss(tokens, sd, config)
            loss.backward()
            fc1 = sd['layer0.mlp.fc1']
            self.assertTrue(any(p.grad != 0.0 for row in fc1 for p in row))
            for r, c in ((0, 0), (5, 3), (17, 7), (31, 2)):
                p, saved = fc1[r][c], fc1[r][c].data
                losses = []
                for value in (saved + H, saved - H):
                    p.data = value
                    losses.append(microgpt.document_loss(tokens, sd, config).data)
                p.data = saved
                fd = (losses[0] - losses[1]) / (2 * H)
                self.assertTrue(close(p.grad, fd, 1e-8, 1e-5), (r, c, p.grad, fd))

    def test_mlp_with_no_active_unit(self):
        # fc1 = 0: every hidden unit is 0, so fc2's nodes get no edges at all. Its outputs are then
        # the float 0.0 (an empty sum started at 0.0, not the int 0), constants with no gradient.
        config, tok, sd = tiny_model(seed=5, n_layer=1)
        for row in sd['layer0.mlp.fc1']:
            for p in row:
                p.data = 0.0
        tokens = [tok.bos, 1, 0, tok.bos]
        logits = float_forward(tokens[:-1], sd, config)
        expected = sum(-math.log(float_softmax(lg)[n]) for lg, n in zip(logits, tokens[1:])) / 3
        with recorded_linear_calls() as calls:
            loss = microgpt.document_loss(tokens, sd, config)
        fc2_outputs = [y for x, w, out in calls if w is sd['layer0.mlp.fc2'] for y in out]
        self.assertAlmostEqual(loss.data, expected, delta=1e-12)
        self.assertEqual(len(fc2_outputs), 3 * config.n_embd)   # 3 positions, no inputs each
        self.assertEqual({(type(y.data), y.data) for y in fc2_outputs}, {(float, 0.0)})
        self.assertEqual({len(y._children) for y in fc2_outputs}, {0})
        loss.backward()
        for name in ('layer0.mlp.fc1', 'layer0.mlp.fc2'):
            self.assertEqual({p.grad for row in sd[name] for p in row}, {0.0}, name)
        self.assertTrue(any(p.grad != 0.0 for row in sd['layer0.attn.wv'] for p in row))

    def test_gradients_of_every_matrix_against_finite_differences(self):
        config, tok, sd = tiny_model(seed=1)
        tokens = microgpt.doc_tokens('abca', tok, config.block_size)
        self.assertEqual(tokens, [4, 0, 1, 2, 0, 4])   # inputs: tokens 4, 0, 1, 2 at positions 0..4
        loss = microgpt.document_loss(tokens, sd, config)
        loss.backward()

        def loss_at(p, value):
            saved = p.data
            p.data = value
            try:
                return microgpt.document_loss(tokens, sd, config).data
            finally:
                p.data = saved

        rng = random.Random(2)
        checked = 0
        for name, matrix in sd.items():
            grads = [abs(p.grad) for row in matrix for p in row]
            # Every matrix takes part in the loss: some entry has a clearly nonzero gradient.
            self.assertGreater(max(grads), 1e-6, name)
            entries = {(rng.randrange(len(matrix)), rng.randrange(len(matrix[0]))) for _ in range(3)}
            flat_max = grads.index(max(grads))
            entries.add(divmod(flat_max, len(matrix[0])))   # the entry with the largest gradient
            if name == 'wte':   # rows of the input tokens 4, 0, 1, 2, and row 3 ('d'), unused
                entries |= {(4, 1), (0, 2), (1, 3), (2, 4), (3, 5)}
            if name == 'wpe':   # rows of positions 0..4, and row 5, never reached
                entries |= {(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)}
            for r, c in sorted(entries):
                p = matrix[r][c]
                fd = (loss_at(p, p.data + H) - loss_at(p, p.data - H)) / (2 * H)
                self.assertTrue(close(p.grad, fd, 1e-7, 1e-5), f"{name}[{r}][{c}]: {p.grad} vs {fd}")
                checked += 1
        # rows that never feed the forward pass get exactly no gradient
        self.assertEqual([p.grad for p in sd['wte'][3]], [0.0] * 8)
        self.assertEqual([p.grad for p in sd['wpe'][5]], [0.0] * 8)
        # wte rows of used tokens and wpe rows of used positions do get gradient
        for r in (0, 1, 2, 4):
            self.assertTrue(any(p.grad != 0.0 for p in sd['wte'][r]), r)
        for r in range(5):
            self.assertTrue(any(p.grad != 0.0 for p in sd['wpe'][r]), r)
        self.assertGreaterEqual(checked, 15 * 3)


# %% Tokenizer and documents
class TestTokenizer(unittest.TestCase):
    def test_round_trip(self):
        for text in ('hello world', 'Zoë Ångström café', '日本語のテキスト', 'mixed: ñ 中 é 🙂'):
            tok = microgpt.Tokenizer(text)
            self.assertEqual(tok.decode(tok.encode(text)), text)
            self.assertEqual(len(tok.encode(text)), len(text))   # one token per character

    def test_ids_in_sorted_order(self):
        # distinct characters of 'cabbage' sorted: a b c e g -> ids 0..4
        tok = microgpt.Tokenizer('cabbage')
        self.assertEqual(tok.chars, ['a', 'b', 'c', 'e', 'g'])
        self.assertEqual(tok.encode('abceg'), [0, 1, 2, 3, 4])
        self.assertEqual(tok.encode('cabbage'), [2, 0, 1, 1, 0, 4, 3])
        # by code point: 'Z' (90) < 'a' (97) < 'é' (233) < '日' (26085)
        tok = microgpt.Tokenizer('日éaZ')
        self.assertEqual(tok.encode('Zaé日'), [0, 1, 2, 3])

    def test_bos_is_the_last_id(self):
        tok = microgpt.Tokenizer('cabbage')
        self.assertEqual(tok.bos, 5)
        self.assertEqual(tok.bos, len(tok.chars))
        self.assertEqual(tok.vocab_size, 6)
        self.assertEqual(tok.bos, tok.vocab_size - 1)

    def test_doc_tokens_short_doc(self):
        tok = microgpt.Tokenizer('abc')   # a=0 b=1 c=2, bos=3
        self.assertEqual(microgpt.doc_tokens('cab', tok, 16), [3, 2, 0, 1, 3])
        # a doc of exactly block_size - 1 characters still fits whole, with both BOS
        self.assertEqual(microgpt.doc_tokens('cab', tok, 4), [3, 2, 0, 1, 3])

    def test_doc_tokens_long_doc_is_cut(self):
        tok = microgpt.Tokenizer('abc')
        tokens = microgpt.doc_tokens('abcabcabc', tok, 4)
        self.assertEqual(tokens, [3, 0, 1, 2, 0])   # block_size + 1 = 5 tokens: BOS + 4 chars
        self.assertEqual(microgpt.doc_tokens('abca', tok, 4), [3, 0, 1, 2, 0])   # end BOS cut off


class TestLoadDocs(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def write(self, data, name='input.txt'):
        path = os.path.join(self.tmp.name, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def test_lines_cleaned(self):
        data = '\ufeffAnna\r\n  Bob  \r\n\r\n\t \n Zoë\n日本\nlast'.encode('utf-8')
        self.assertTrue(data.startswith(b'\xef\xbb\xbf'))
        self.assertEqual(microgpt.load_docs(self.write(data)), ['Anna', 'Bob', 'Zoë', '日本', 'last'])

    def test_crlf_only(self):
        path = self.write(b'a\r\nb\r\n')
        self.assertEqual(microgpt.load_docs(path), ['a', 'b'])

    def test_blank_files_give_no_documents(self):
        # load_docs only reads: an empty result is the caller's to refuse.
        for name, data in (('empty.txt', b''), ('blank.txt', b'  \n\t\r\n \n'),
                           ('bom.txt', b'\xef\xbb\xbf\n\n')):
            self.assertEqual(microgpt.load_docs(self.write(data, name)), [], name)

    def test_errors_are_the_native_ones(self):
        with self.assertRaises(FileNotFoundError):
            microgpt.load_docs(os.path.join(self.tmp.name, 'no-such-file.txt'))
        with self.assertRaises(OSError) as ctx:   # IsADirectoryError; PermissionError on Windows
            microgpt.load_docs(self.tmp.name)
        self.assertIsInstance(ctx.exception, (IsADirectoryError, PermissionError))
        with self.assertRaises(UnicodeDecodeError):   # 'é' in Latin-1 is the lone byte 0xe9
            microgpt.load_docs(self.write('café\n'.encode('latin-1'), 'latin1.txt'))


class TestFindInput(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        cwd = os.getcwd()
        os.chdir(self.dir)   # relative names are looked up here
        self.addCleanup(os.chdir, cwd)

    def test_a_regular_file_is_returned(self):
        with open('names.txt', 'w', encoding='utf-8') as f:
            f.write('ana\n')
        self.assertEqual(microgpt.find_input('names.txt'), 'names.txt')
        full = os.path.join(self.dir, 'names.txt')
        self.assertEqual(microgpt.find_input(full), full)

    def test_missing_file_or_directory_is_an_input_error(self):
        os.mkdir('folder')
        for path in ('no-such-file.txt', 'folder', os.path.join(self.dir, 'folder')):
            with self.assertRaises(microgpt.InputError) as ctx:
                microgpt.find_input(path)
            self.assertEqual(str(ctx.exception),
                             f"input file not found (or not a regular file): {path}")

    def test_default_input_is_also_looked_for_beside_the_script(self):
        # Here (a fresh folder) there is no input.txt, but there is one beside microgpt.py.
        beside = os.path.join(os.path.dirname(os.path.abspath(microgpt.__file__)), 'input.txt')
        self.assertTrue(os.path.isfile(beside))
        self.assertEqual(microgpt.find_input(microgpt.Config.input), beside)
        # One in the current folder comes first.
        with open('input.txt', 'w', encoding='utf-8') as f:
            f.write('ana\n')
        self.assertEqual(microgpt.find_input('input.txt'), 'input.txt')

    def test_other_names_are_not_looked_for_beside_the_script(self):
        # README.md is beside microgpt.py, but only the default name is looked for there.
        script_dir = os.path.dirname(os.path.abspath(microgpt.__file__))
        self.assertTrue(os.path.isfile(os.path.join(script_dir, 'README.md')))
        with self.assertRaises(microgpt.InputError) as ctx:
            microgpt.find_input('README.md')
        self.assertTrue(str(ctx.exception).endswith(': README.md'), str(ctx.exception))


# %% Optimizer
class TestAdam(unittest.TestCase):
    def test_two_steps_by_hand(self):
        p1, p2, p3 = Value(1.0), Value(-0.5), Value(0.25)
        opt = microgpt.Adam([p1, p2, p3])
        self.assertEqual((opt.beta1, opt.beta2, opt.eps), (0.85, 0.99, 1e-8))

        # Step 1, lr 0.01, grads g = 0.5, -2.0, 0.0:
        #   m = 0.15 g = 0.075, -0.3, 0;   v = 0.01 g^2 = 0.0025, 0.04, 0
        #   m_hat = m / (1 - 0.85) = g;    v_hat = v / (1 - 0.99) = g^2
        #   update = lr g / (|g| + eps) ~ lr sign(g); the zero-gradient parameter stays put.
        p1.grad, p2.grad, p3.grad = 0.5, -2.0, 0.0
        opt.step(0.01)
        self.assertAlmostEqual(opt.m[0], 0.075, delta=1e-15)
        self.assertAlmostEqual(opt.m[1], -0.3, delta=1e-15)
        self.assertAlmostEqual(opt.v[0], 0.0025, delta=1e-15)
        self.assertAlmostEqual(opt.v[1], 0.04, delta=1e-15)
        self.assertAlmostEqual(p1.data, 1.0 - 0.01 * 0.5 / (0.5 + 1e-8), delta=1e-15)
        self.assertAlmostEqual(p2.data, -0.5 + 0.01 * 2.0 / (2.0 + 1e-8), delta=1e-15)
        self.assertAlmostEqual(p1.data, 0.99, delta=1e-9)    # ~ 1 - lr
        self.assertAlmostEqual(p2.data, -0.49, delta=1e-9)   # ~ -0.5 + lr
        self.assertEqual(p3.data, 0.25)
        self.assertEqual((p1.grad, p2.grad, p3.grad), (0.0, 0.0, 0.0))

        # Step 2, lr 0.005, grads 0.1, 1.0, 0.0:
        #   p1: m = 0.85 * 0.075 + 0.15 * 0.1 = 0.07875,  v = 0.99 * 0.0025 + 0.01 * 0.01 = 0.002575
        #   p2: m = 0.85 * -0.3 + 0.15 * 1.0 = -0.105,    v = 0.99 * 0.04 + 0.01 * 1.0 = 0.0496
        #   bias corrections: 1 - 0.85^2 = 0.2775,  1 - 0.99^2 = 0.0199
        #   p1: m_hat = 0.07875 / 0.2775 = 0.283784,  v_hat = 0.002575 / 0.0199 = 0.129397
        #   p2: m_hat = -0.105 / 0.2775 = -0.378378,  v_hat = 0.0496 / 0.0199 = 2.492462
        #   update = 0.005 * m_hat / (sqrt(v_hat) + 1e-8):
        #   p1: 0.005 * 0.283784 / 0.359718 = 0.0039445;  p2: 0.005 * -0.378378 / 1.578753 = -0.0011983
        p1.grad, p2.grad = 0.1, 1.0
        before1, before2 = p1.data, p2.data
        opt.step(0.005)
        self.assertAlmostEqual(opt.m[0], 0.07875, delta=1e-15)
        self.assertAlmostEqual(opt.v[0], 0.002575, delta=1e-15)
        self.assertAlmostEqual(opt.m[1], -0.105, delta=1e-15)
        self.assertAlmostEqual(opt.v[1], 0.0496, delta=1e-15)
        upd1 = 0.005 * (0.07875 / 0.2775) / (math.sqrt(0.002575 / 0.0199) + 1e-8)
        upd2 = 0.005 * (-0.105 / 0.2775) / (math.sqrt(0.0496 / 0.0199) + 1e-8)
        self.assertAlmostEqual(upd1, 0.0039445, delta=1e-7)
        self.assertAlmostEqual(upd2, -0.0011983, delta=1e-7)
        self.assertAlmostEqual(p1.data, before1 - upd1, delta=1e-15)
        self.assertAlmostEqual(p2.data, before2 - upd2, delta=1e-15)
        self.assertEqual(p3.data, 0.25)
        self.assertEqual(opt.t, 2)
        self.assertEqual((p1.grad, p2.grad, p3.grad), (0.0, 0.0, 0.0))


# %% Training
def atomic_dot(a, b):
    """Reference dot product built from Value * and + only: a[0]*b[0] + a[1]*b[1] + ..."""
    assert len(a) == len(b)
    atomic_dot.calls += 1
    products = [x * y for x, y in zip(a, b)]
    total = products[0]
    for p in products[1:]:
        total = total + p
    return total


atomic_dot.calls = 0


def atomic_linear(x, w):
    """Reference matrix-vector product: one atomic dot product per row."""
    atomic_linear.calls += 1
    return [atomic_dot(row, x) for row in w]


atomic_linear.calls = 0


def train(docs, tokenizer, state_dict, config, log=None):
    """microgpt.train, returning the list of step losses it appended to."""
    losses = []
    microgpt.train(docs, tokenizer, state_dict, config, losses, log)
    return losses


def run_steps(seed, steps, config, tokenizer, docs):
    """init_params from a seeded rng, then train() for `steps` steps. Returns the step losses and
    the final weights. Keeps no graph alive once it returns."""
    state_dict = microgpt.init_params(tokenizer.vocab_size, config, random.Random(seed))
    losses = train(docs, tokenizer, state_dict, dataclasses.replace(config, steps=steps))
    return losses, [p.data for p in flat_params(state_dict)]


def live_values():
    return sum(1 for o in gc.get_objects() if type(o) is Value)


class TestTraining(NoRecordingTestCase):
    def test_fast_paths_match_atomic_operations(self):
        # dot() and linear() as plain * and + nodes, logsumexp() and softmax() as exp, +, log
        # and ** -1 nodes: the same losses and the same weights after three steps of training.
        config = microgpt.Config(n_layer=2, n_embd=8, n_head=2, block_size=6, learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        fast_losses, fast_weights = run_steps(21, 3, config, tok, NAMES)
        patches = {'dot': atomic_dot, 'linear': atomic_linear, 'logsumexp': composite_logsumexp,
                   'softmax': composite_softmax}
        calls = {name: f.calls for name, f in patches.items()}
        with contextlib.ExitStack() as stack:
            for name, f in patches.items():
                stack.enter_context(mock.patch.object(microgpt, name, f))
            slow_losses, slow_weights = run_steps(21, 3, config, tok, NAMES)
        # the patches really took effect: one logsumexp per prediction ('ana', 'bob', 'cara'
        # make 4 + 4 + 5), one softmax per head per position (2 layers x 2 heads x 13)
        self.assertGreater(atomic_dot.calls - calls['dot'], 100)
        self.assertGreater(atomic_linear.calls - calls['linear'], 100)
        self.assertEqual(composite_logsumexp.calls - calls['logsumexp'], 13)
        self.assertEqual(composite_softmax.calls - calls['softmax'], 2 * 2 * 13)
        for name, f in patches.items():   # and were undone
            self.assertIsNot(getattr(microgpt, name), f)
        self.assertEqual(len(fast_losses), 3)
        for a, b in zip(fast_losses, slow_losses):
            self.assertAlmostEqual(a, b, delta=1e-9)
        self.assertEqual(len(fast_weights), len(slow_weights))
        self.assertLess(max(abs(a - b) for a, b in zip(fast_weights, slow_weights)), 1e-9)
        # the weights did move, so matching them is not trivial: each moved ~lr at step 1
        init = [p.data for p in flat_params(
            microgpt.init_params(tok.vocab_size, config, random.Random(21)))]
        self.assertGreater(max(abs(a - b) for a, b in zip(fast_weights, init)), 0.005)

    def test_short_training_run_lowers_the_loss(self):
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=60,
                                 learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(3))
        start = microgpt.evaluate(NAMES, tok, state_dict, config)
        # small random weights: the first predictions are close to uniform, loss ~ ln V
        self.assertAlmostEqual(start, math.log(tok.vocab_size), delta=0.2)
        logged = []
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            losses = train(NAMES, tok, state_dict, config,
                                    lambda step, loss: logged.append((step, loss)))
        self.assertEqual(out.getvalue(), '')   # train() reports only through log
        self.assertEqual(len(losses), 60)
        self.assertEqual(logged, list(zip(range(1, 61), losses)))   # steps count from 1
        first, last = sum(losses[:15]) / 15, sum(losses[-15:]) / 15
        self.assertLess(last, first - 0.5, (first, last))
        end = microgpt.evaluate(NAMES, tok, state_dict, config)
        self.assertLess(end, start - 0.5, (start, end))

    def test_log_returning_true_stops_training(self):
        # Stopping after step 3 of 10 leaves the first 3 steps exactly as a full run takes them
        # (same documents, same learning rates, which decay over all 10 steps).
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=10)
        tok = microgpt.Tokenizer(''.join(NAMES))
        full, _ = run_steps(5, 10, config, tok, NAMES)
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(5))
        steps_logged = []

        def log(step, loss):
            steps_logged.append(step)
            return step == 3

        stopped = train(NAMES, tok, state_dict, config, log)
        self.assertEqual(steps_logged, [1, 2, 3])
        self.assertEqual(stopped, full[:3])
        self.assertEqual(len(full), 10)
        # zero steps: nothing logged, nothing learned
        before = [p.data for p in flat_params(state_dict)]
        no_steps = dataclasses.replace(config, steps=0)
        self.assertEqual(train(NAMES, tok, state_dict, no_steps, log), [])
        self.assertEqual(steps_logged, [1, 2, 3])
        self.assertEqual([p.data for p in flat_params(state_dict)], before)

    def test_losses_so_far_survive_an_error(self):
        # train() appends each step's loss to the caller's list as it goes, so a run stopped by
        # an error (here a divergence, as Progress.log reports it) still holds the steps it took:
        # the same numbers as the first steps of a run that was not stopped.
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=10,
                                 learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        full = train(NAMES, tok, microgpt.init_params(tok.vocab_size, config, random.Random(5)),
                     config)

        tapes = []

        def log(step, loss):
            tapes.append(Value.tape)
            microgpt.require(step < 3, f"training diverged at step {step}")

        losses = []
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(5))
        with self.assertRaisesRegex(microgpt.InputError, 'diverged at step 3'):
            microgpt.train(NAMES, tok, state_dict, config, losses, log)
        self.assertEqual(losses, full[:3])
        self.assertEqual(tapes, [None] * 3)   # log runs after the step's recording has ended

    def test_no_graph_outlives_a_training_step(self):
        # Progress switches the cycle collector off while training (and runs it every 40 steps),
        # relying on reference counting to free each step's graph. So train inside Progress, and
        # count the live Values at every step before Progress's own log can collect anything:
        # the parameters, what other tests hold, and this step's graph (held by train()'s `loss`
        # until the next step's is made), and nothing more. Each step's graph is measured as it
        # is made: linear() leaves out inputs that are 0 with slope 0, which are then freed.
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, steps=15,
                                 learning_rate=0.01)
        docs = [name for name in NAMES if len(name) == 3]
        self.assertGreater(len(docs), 15)
        tok = microgpt.Tokenizer(''.join(docs))
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(4))
        n_params = len(flat_params(state_dict))
        # One step first, so that anything a first step creates once is in the baseline.
        train(docs, tok, state_dict, dataclasses.replace(config, steps=1))
        gc.collect()
        baseline = live_values()   # the parameters and any Values other tests still hold
        was_enabled = gc.isenabled()
        counts, tapes, collector_on, graph_sizes = [], [], [], []
        document_loss = microgpt.document_loss

        def measured_document_loss(*args):
            loss = document_loss(*args)
            graph_sizes.append(len(loss.graph()))
            return loss
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    microgpt.Progress(config, tok.vocab_size) as progress:
                def log(step, loss):
                    counts.append(live_values())
                    tapes.append(Value.tape)
                    collector_on.append(gc.isenabled())
                    return progress.log(step, loss)

                with mock.patch.object(microgpt, 'document_loss', measured_document_loss):
                    losses = train(docs, tok, state_dict, config, log)
            after = live_values()
        finally:
            if was_enabled:
                gc.enable()
        self.assertTrue(was_enabled)
        self.assertTrue(gc.isenabled())   # Progress switched the collector back on
        self.assertEqual(collector_on, [False] * 15)
        self.assertEqual(len(losses), 15)
        self.assertEqual(tapes, [None] * 15)
        self.assertGreater(n_params, 500)
        self.assertGreaterEqual(baseline, n_params)
        self.assertTrue(all(size > 500 for size in graph_sizes))
        self.assertEqual(counts, [baseline + size for size in graph_sizes])   # only this step's
        self.assertEqual(after, baseline)

    def test_same_seed_same_run(self):
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        a = run_steps(42, 3, config, tok, NAMES)
        b = run_steps(42, 3, config, tok, NAMES)
        self.assertEqual(a, b)   # losses and weights, exactly
        c = run_steps(43, 3, config, tok, NAMES)
        self.assertNotEqual(a[0], c[0])   # a different seed really is a different run


def finite_difference(loss_at, p):
    """d loss / d p by a central difference: loss_at() recomputes the loss from the weights."""
    saved, losses = p.data, []
    for value in (saved + H, saved - H):
        p.data = value
        losses.append(loss_at())
    p.data = saved
    return (losses[0] - losses[1]) / (2 * H)


def some_weights(state_dict, rng, per_matrix=1):
    """A few weights to check by finite differences: from every matrix, the one with the largest
    gradient and per_matrix more at random."""
    chosen = []
    for matrix in state_dict.values():
        flat = [p for row in matrix for p in row]
        chosen.append(max(flat, key=lambda p: abs(p.grad)))
        chosen += rng.sample(flat, per_matrix)
    return chosen


class TestGraphsAroundTheModel(NoRecordingTestCase):
    """A document's loss is a graph of computed Values over the weights, kept alive by the loss
    alone: evaluate(), generate(), training steps (this model's or another's) may run between its
    forward pass and its backward(), which still gives the gradients of that graph, exactly. A
    recording holds computed Values only, never the weights. backward() can be called again (the
    weights add up), graphs backpropagated earlier do not leak into later ones, and summed losses
    backpropagate as one."""

    CONFIG = dict(seed=10, n_layer=1, n_embd=8, n_head=2, block_size=8, chars='abcdeo')

    def grads(self, state_dict):
        return [p.grad for p in flat_params(state_dict)]

    def assertGradsMatchFiniteDifferences(self, state_dict, loss_at, rng, per_matrix=1):
        for p in some_weights(state_dict, rng, per_matrix):
            fd = finite_difference(loss_at, p)
            self.assertTrue(close(p.grad, fd, 1e-7, 1e-5), (p.grad, fd))

    def test_evaluate_and_generate_keep_an_earlier_graph(self):
        # Two copies of the same model: the first backpropagates its loss straight away, the
        # second runs evaluate() and generate() between building its loss and backward(). Same
        # graph, searched the same way, so the same gradients, exactly.
        config, tok, sd_a = tiny_model(**self.CONFIG)
        tokens = microgpt.doc_tokens('abode', tok, config.block_size)
        loss_a = microgpt.document_loss(tokens, sd_a, config)
        loss_a.backward()
        expected = self.grads(sd_a)
        self.assertGreater(sum(g != 0.0 for g in expected), 100)

        _, _, sd_b = tiny_model(**self.CONFIG)
        loss_b = microgpt.document_loss(tokens, sd_b, config)
        microgpt.evaluate(['cab', 'deed', 'bead'], tok, sd_b, config)
        rng = random.Random(0)
        for prompt in ('', 'b', 'dec'):
            sample = microgpt.generate(sd_b, tok, config, rng, prompt)
            self.assertTrue(sample.startswith(prompt), (prompt, sample))
        self.assertEqual(self.grads(sd_b), [0.0] * len(expected))   # nothing backpropagated yet
        loss_b.backward()
        self.assertEqual(loss_b.data, loss_a.data)
        self.assertEqual(self.grads(sd_b), expected)

    def test_exact_gradients_after_training_evaluating_and_sampling(self):
        config, tok, sd = tiny_model(**self.CONFIG)
        train(['abode', 'cab'], tok, sd, dataclasses.replace(config, steps=2))
        self.assertIsNone(Value.tape)   # train() ended its recordings
        microgpt.evaluate(['abode'], tok, sd, config)
        microgpt.generate(sd, tok, config, random.Random(1), 'a')
        self.assertIsNone(Value.tape)
        # out = a*b + exp(c) at a = 1.5, b = -2, c = 0: d/da = b = -2, d/db = a = 1.5,
        # d/dc = e^0 = 1, exactly
        a, b, c = Value(1.5), Value(-2.0), Value(0.0)
        with Value.recording():
            out = a * b + c.exp()
            out.backward()
            self.assertEqual(len(Value.tape), 3)   # a * b, exp(c), the sum: backward() keeps them
            self.assertIs(Value.tape[-1], out)
        self.assertEqual((out.data, a.grad, b.grad, c.grad), (-2.0, -2.0, 1.5, 1.0))

    def test_only_computed_values_are_on_the_tape(self):
        # init_params makes leaves only, so the tape stays empty; a document's loss puts its
        # computed Values on it, the loss last, and never a weight.
        with Value.recording():
            config, tok, sd = tiny_model(**self.CONFIG)
            self.assertEqual(Value.tape, [])
            tokens = microgpt.doc_tokens('cab', tok, config.block_size)
            loss = microgpt.document_loss(tokens, sd, config)
            tape = Value.tape
        self.assertGreater(len(tape), 500)
        self.assertIs(tape[-1], loss)
        self.assertTrue(all(node._children for node in tape))
        on_tape = {id(node) for node in tape}
        self.assertFalse(any(id(p) in on_tape for p in flat_params(sd)))
        # Every Value graph() finds from the loss is on it (the tape also holds Values the loss
        # does not depend on: the MLP's inactive units, which fc2 never reads)
        self.assertLessEqual({id(node) for node in loss.graph()}, on_tape)

    def test_a_loss_built_before_training_still_backpropagates(self):
        # A loss built before train() keeps its own graph: afterwards backward() gives the
        # gradient of that graph, at the weights it was built from, exactly as it would have
        # before training. Computing it again gives a loss that the two steps have lowered: the
        # first step trained on this very document.
        config, tok, sd = tiny_model(**self.CONFIG)
        tokens = microgpt.doc_tokens('abode', tok, config.block_size)
        _, _, sd_ref = tiny_model(**self.CONFIG)
        microgpt.document_loss(tokens, sd_ref, config).backward()
        expected = self.grads(sd_ref)
        early = microgpt.document_loss(tokens, sd, config)
        train(['abode', 'cab'], tok, sd, dataclasses.replace(config, steps=2))
        n = len(flat_params(sd))
        self.assertEqual(self.grads(sd), [0.0] * n)   # Adam's last step reset them
        self.assertNotEqual([p.data for p in flat_params(sd)],
                            [p.data for p in flat_params(sd_ref)])
        early.backward()
        self.assertEqual(self.grads(sd), expected)
        self.assertGreater(sum(g != 0.0 for g in expected), 100)
        for p in flat_params(sd):
            p.grad = 0.0
        again = microgpt.document_loss(tokens, sd, config)
        again.backward()
        self.assertGreater(sum(g != 0.0 for g in self.grads(sd)), 100)
        self.assertLess(again.data, early.data)

    def test_a_hand_written_loop_with_adam_records_nothing_and_keeps_nothing(self):
        # A learner's own training loop (forward, backward, Adam.step, with no recording and no
        # housekeeping): nothing is recorded, and each step's graph is freed once its loss is
        # dropped, so the number of live Values is the same after every step.
        config, tok, sd = tiny_model(**self.CONFIG)
        optimizer = microgpt.Adam(flat_params(sd))
        loss = None
        counts = []
        for doc in ['abode', 'cab', 'dab', 'bead', 'ace', 'deco']:
            loss = microgpt.document_loss(microgpt.doc_tokens(doc, tok, config.block_size), sd,
                                          config)
            self.assertIsNone(Value.tape)
            loss.backward()
            optimizer.step(0.01)
            loss = None
            gc.collect()
            counts.append(live_values())
        self.assertEqual(counts, [counts[0]] * 6)

    def test_a_graph_backpropagated_before_training_does_not_leak_into_it(self):
        # A graph backpropagated before train() has no part in train()'s steps. So, with the
        # weights' grads reset (as Adam.step() leaves them), training goes exactly as it would
        # have without it: same losses, same weights.
        docs, steps = ['abode', 'cab'], dict(steps=2)
        config, tok, sd_a = tiny_model(**self.CONFIG, **steps)
        deed = microgpt.doc_tokens('deed', tok, config.block_size)
        earlier = microgpt.document_loss(deed, sd_a, config)
        earlier.backward()
        for p in flat_params(sd_a):
            p.grad = 0.0
        losses_a = train(docs, tok, sd_a, config)
        _, _, sd_b = tiny_model(**self.CONFIG, **steps)
        losses_b = train(docs, tok, sd_b, config)
        weights = [p.data for p in flat_params(sd_b)]
        self.assertEqual(losses_a, losses_b)
        self.assertEqual([p.data for p in flat_params(sd_a)], weights)
        # Without that reset, the weights' grads from 'deed' add into the first step, as in
        # PyTorch: same first loss (the forward pass does not read .grad), different weights.
        _, _, sd_c = tiny_model(**self.CONFIG, **steps)
        microgpt.document_loss(deed, sd_c, config).backward()
        losses_c = train(docs, tok, sd_c, config)
        self.assertEqual(losses_c[0], losses_b[0])
        self.assertGreater(max(abs(p.data - w)
                               for p, w in zip(flat_params(sd_c), weights)), 1e-4)

    def test_backward_twice_on_a_model_loss(self):
        # The weights add the gradient up: twice what one call gives them (to rounding, as the
        # second call adds each contribution onto the first call's sum). Every computed Value gets
        # the same gradient again, exactly: it starts from 0 and the pass is the same. Whether
        # backward() replays a recording or searches the graph.
        for way, context in (('outside a recording', contextlib.nullcontext),
                             ('recording', Value.recording)):
            with self.subTest(way), context():
                config, tok, sd = tiny_model(**self.CONFIG)
                loss = microgpt.document_loss(microgpt.doc_tokens('abode', tok, config.block_size),
                                              sd, config)
                nodes = loss.graph()
                loss.backward()
                once, nodes_once = self.grads(sd), [node.grad for node in nodes]
                self.assertGreater(sum(g != 0.0 for g in once), 100)
                self.assertGreater(sum(g != 0.0 for g in nodes_once), 100)
                loss.backward()
                self.assertEqual([node.grad for node in nodes], nodes_once)
                twice = self.grads(sd)
                for g1, g2 in zip(once, twice):
                    self.assertTrue(close(g2, 2 * g1, 1e-15, 1e-12), (g1, g2))
                    self.assertEqual(g2 == 0.0, g1 == 0.0)   # weights off the loss's path stay 0

    def test_training_gives_the_same_run_recorded_or_not(self):
        # train() records each step and backward() replays the recording; a learner's own loop
        # (forward, backward, Adam.step) records nothing, so backward() searches the graph. Same
        # graph, same forward arithmetic: the losses agree, and so do the weights, to the last
        # bit or nearly: the two orders visit a Value's users in different orders (creation
        # order against depth-first order), so a weight used in many places, at every position,
        # sums the same contributions in another order, which can change its gradient's last bit
        # (measured: ~1e-16, the weights ~1e-15 apart after a few steps). Anything more than
        # rounding, a missed or doubled contribution, would be ~lr = 1e-2 apart.
        config, tok, sd_train = tiny_model(seed=12, n_layer=2, n_embd=8, n_head=2, block_size=8,
                                           chars=''.join(NAMES), steps=4, learning_rate=0.01)
        _, _, sd_own = tiny_model(seed=12, n_layer=2, n_embd=8, n_head=2, block_size=8,
                                  chars=''.join(NAMES))
        replayed, backward = [], Value.backward

        def spy(self):   # was this backward() a replay of a recording?
            replayed.append(Value.tape is not None and Value.tape[-1] is self)
            return backward(self)

        with mock.patch.object(Value, 'backward', spy):
            losses_train = train(NAMES, tok, sd_train, config)
            self.assertEqual(replayed, [True] * 4)
            optimizer, losses_own = microgpt.Adam(flat_params(sd_own)), []
            for step in range(config.steps):
                tokens = microgpt.doc_tokens(NAMES[step], tok, config.block_size)
                loss = microgpt.document_loss(tokens, sd_own, config)
                loss.backward()
                optimizer.step(config.learning_rate * (1 - step / config.steps))
                losses_own.append(loss.data)
            self.assertEqual(replayed, [True] * 4 + [False] * 4)
        for a, b in zip(losses_train, losses_own):
            self.assertTrue(close(a, b, 1e-14, 1e-13), (a, b))
        start = [p.data for p in flat_params(tiny_model(seed=12, n_layer=2, n_embd=8, n_head=2,
                                                        block_size=8, chars=''.join(NAMES))[2])]
        moved = [p.data for p in flat_params(sd_train)]
        self.assertGreater(max(abs(a - b) for a, b in zip(start, moved)), 0.005)   # they trained
        for a, b in zip(moved, [p.data for p in flat_params(sd_own)]):
            self.assertTrue(close(a, b, 1e-13, 1e-12), (a, b))

    def test_two_optimizers_stepping_interleaved(self):
        # Two models with their own Adam in one process, their steps interleaved: A's forward,
        # B's forward, A's backward and update, B's backward and update. Each backward() gives
        # the gradients of its own loss, as central differences of that loss measure them.
        config_a, tok_a, sd_a = tiny_model(seed=21, n_layer=1, n_embd=8, n_head=2, block_size=6)
        config_b, tok_b, sd_b = tiny_model(seed=22, n_layer=2, n_embd=4, n_head=1, block_size=5,
                                           chars='xyz')
        opt_a, opt_b = microgpt.Adam(flat_params(sd_a)), microgpt.Adam(flat_params(sd_b))
        rng = random.Random(23)
        for doc_a, doc_b in (('abca', 'xyzzy'), ('dab', 'zyx')):
            tokens_a = microgpt.doc_tokens(doc_a, tok_a, config_a.block_size)
            tokens_b = microgpt.doc_tokens(doc_b, tok_b, config_b.block_size)
            loss_a = microgpt.document_loss(tokens_a, sd_a, config_a)
            loss_b = microgpt.document_loss(tokens_b, sd_b, config_b)
            for loss, sd, config, tokens, optimizer in ((loss_a, sd_a, config_a, tokens_a, opt_a),
                                                        (loss_b, sd_b, config_b, tokens_b, opt_b)):
                loss.backward()
                self.assertGradsMatchFiniteDifferences(
                    sd, lambda: microgpt.document_loss(tokens, sd, config).data, rng)
                optimizer.step(0.05)
                self.assertEqual({p.grad for p in flat_params(sd)}, {0.0})

    def test_a_second_model_trained_between_forward_and_backward(self):
        # Model B (its own config and vocabulary) builds its loss; model A trains for three steps
        # (recorded, as train() does); then B's backward() gives exactly the gradients it gives
        # with nothing in between, and they match central differences.
        config_a, tok_a, sd_a = tiny_model(seed=31, n_layer=1, n_embd=8, n_head=2, block_size=6,
                                           steps=3)
        config_b, tok_b, sd_b = tiny_model(seed=32, n_layer=2, n_embd=12, n_head=3, block_size=7,
                                           chars='eprst')
        tokens_b = microgpt.doc_tokens('strept', tok_b, config_b.block_size)
        _, _, sd_ref = tiny_model(seed=32, n_layer=2, n_embd=12, n_head=3, block_size=7,
                                  chars='eprst')
        microgpt.document_loss(tokens_b, sd_ref, config_b).backward()
        loss_b = microgpt.document_loss(tokens_b, sd_b, config_b)
        losses_a = train(['abc', 'cab', 'dad'], tok_a, sd_a, config_a)
        self.assertEqual(len(losses_a), 3)
        loss_b.backward()
        self.assertEqual(self.grads(sd_b), self.grads(sd_ref))
        self.assertGradsMatchFiniteDifferences(
            sd_b, lambda: microgpt.document_loss(tokens_b, sd_b, config_b).data, random.Random(33))

    def test_summed_document_losses_give_summed_gradients(self):
        # Batching: backward() of loss1 + loss2 gives each weight the sum of the gradients that
        # separate backward() calls give it (equal up to the order of the float additions).
        config, tok, sd_a = tiny_model(**self.CONFIG)
        docs = [microgpt.doc_tokens(d, tok, config.block_size) for d in ('abode', 'cab')]
        total = sum(microgpt.document_loss(t, sd_a, config) for t in docs)
        total.backward()
        _, _, sd_b = tiny_model(**self.CONFIG)
        separate = []
        for t in docs:
            loss = microgpt.document_loss(t, sd_b, config)
            loss.backward()
            separate.append(loss.data)
        self.assertAlmostEqual(total.data, sum(separate), delta=1e-12)
        batched, summed = self.grads(sd_a), self.grads(sd_b)
        self.assertGreater(max(abs(g) for g in summed), 1e-3)
        for x, y in zip(batched, summed):
            self.assertTrue(close(x, y, 1e-14, 1e-10), (x, y))
        # and the sum differs from either document's gradient alone
        _, _, sd_c = tiny_model(**self.CONFIG)
        microgpt.document_loss(docs[0], sd_c, config).backward()
        self.assertGreater(max(abs(x - y) for x, y in zip(self.grads(sd_c), summed)), 1e-3)


# %% A learner's changes: another nonlinearity, a learned RMSNorm gain
def gelu(x):
    """GELU by its tanh approximation (GPT-2's), from Value operations."""
    return 0.5 * x * (1 + (math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)).tanh())


def gelu_mlp(x, layer, state_dict):
    """microgpt.mlp with GELU instead of squared ReLU, every hidden unit passed on to fc2."""
    h = microgpt.linear(x, state_dict[f'{layer}.mlp.fc1'])
    return microgpt.linear([gelu(hj) for hj in h], state_dict[f'{layer}.mlp.fc2'])


def float_gelu(a):
    return 0.5 * a * (1 + math.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))


def with_gains(param_shapes):
    """param_shapes plus an RMSNorm gain, a (1, n_embd) matrix, for each of gpt()'s norms."""
    def shapes(vocab_size, config):
        shapes = dict(param_shapes(vocab_size, config), ln_0=(1, config.n_embd))
        for i in range(config.n_layer):
            shapes[f'layer{i}.ln_1'] = shapes[f'layer{i}.ln_2'] = (1, config.n_embd)
        return shapes
    return shapes


class TestLearnersChanges(NoRecordingTestCase):
    """gpt() calls rmsnorm(), attention() and mlp() by their global names and reads an RMSNorm
    gain from state_dict if there is one, so a learner can swap the MLP (`microgpt.mlp = ...`) or
    learn gains (add them to param_shapes) without touching gpt(): the loss, its gradients,
    training and checkpoints follow."""

    def loss_and_grads_check(self, config, tok, sd, tokens, names, nonlinearity):
        """document_loss against the float reference, backward() against central differences
        for a few weights of each named matrix (each with a clearly nonzero gradient somewhere)."""
        loss = microgpt.document_loss(tokens, sd, config)
        logits = float_forward(tokens[:-1], sd, config, nonlinearity=nonlinearity)
        expected = sum(-math.log(float_softmax(lg)[n]) for lg, n in zip(logits, tokens[1:]))
        self.assertAlmostEqual(loss.data, expected / (len(tokens) - 1), delta=1e-12)
        loss.backward()
        rng = random.Random(5)
        for name in names:
            flat = [p for row in sd[name] for p in row]
            self.assertGreater(max(abs(p.grad) for p in flat), 1e-4, name)
            for p in [max(flat, key=lambda p: abs(p.grad))] + rng.sample(flat, 3):
                fd = finite_difference(lambda: microgpt.document_loss(tokens, sd, config).data, p)
                self.assertTrue(close(p.grad, fd, 1e-7, 1e-5), (name, p.grad, fd))
        return loss.data

    def test_gelu_in_place_of_squared_relu(self):
        config, tok, sd = tiny_model(seed=41, n_layer=2)
        tokens = microgpt.doc_tokens('abcab', tok, config.block_size)
        squared_relu_loss = microgpt.document_loss(tokens, sd, config).data
        self.addCleanup(setattr, microgpt, 'mlp', microgpt.mlp)
        microgpt.mlp = gelu_mlp
        loss = self.loss_and_grads_check(
            config, tok, sd, tokens, ['layer0.mlp.fc1', 'layer1.mlp.fc2', 'layer0.attn.wq', 'wte'],
            float_gelu)
        self.assertGreater(abs(loss - squared_relu_loss), 1e-6)
        # GELU is negative below 0 (its minimum, -0.17, at -0.75): no unit is ever left out
        self.assertLess(float_gelu(-0.75), -0.16)

    def test_a_learned_rmsnorm_gain(self):
        with mock.patch.object(microgpt, 'param_shapes', with_gains(microgpt.param_shapes)):
            config, tok, sd = tiny_model(seed=42, n_layer=2)
        gains = ['ln_0', 'layer0.ln_1', 'layer0.ln_2', 'layer1.ln_1', 'layer1.ln_2']
        self.assertEqual({name: (len(sd[name]), len(sd[name][0])) for name in gains},
                         dict.fromkeys(gains, (1, config.n_embd)))
        tokens = microgpt.doc_tokens('dcab', tok, config.block_size)
        _, _, plain = tiny_model(seed=42, n_layer=2)
        plain_loss = microgpt.document_loss(tokens, plain, config).data
        loss = self.loss_and_grads_check(config, tok, sd, tokens, gains + ['layer1.mlp.fc1'],
                                         float_squared_relu)
        self.assertGreater(abs(loss - plain_loss), 1e-6)
        # rmsnorm() itself: x * scale * (1 + g), g = 0 is no gain at all
        x, zero = [Value(3.0), Value(4.0)], [[Value(0.0), Value(0.0)]]
        self.assertEqual([v.data for v in microgpt.rmsnorm(x, zero)],
                         [v.data for v in microgpt.rmsnorm(x)])
        y = microgpt.rmsnorm(x, [[Value(0.5), Value(-1.0)]])
        s = 1 / math.sqrt(12.50001)
        self.assertAlmostEqual(y[0].data, 3 * s * 1.5, delta=1e-15)
        self.assertEqual(y[1].data, 0.0)

    def test_a_model_with_gains_saves_loads_and_trains(self):
        def round_trip(config, tok, sd):
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, 'ck.json')
                microgpt.save_checkpoint(path, config, tok, sd)
                loaded, tok2, config2 = microgpt.load_checkpoint(path, microgpt.Config(), {})
            self.assertEqual(tok2.chars, tok.chars)
            self.assertEqual([getattr(config2, f) for f in microgpt.MODEL_SHAPE],
                             [getattr(config, f) for f in microgpt.MODEL_SHAPE])
            self.assertEqual(list(loaded), list(sd))
            self.assertIn('ln_0', loaded)
            self.assertEqual({n: [[p.data for p in row] for row in m] for n, m in loaded.items()},
                             {n: [[p.data for p in row] for row in m] for n, m in sd.items()})
            tokens = microgpt.doc_tokens('bad', tok, config.block_size)
            self.assertEqual(microgpt.document_loss(tokens, loaded, config2).data,
                             microgpt.document_loss(tokens, sd, config).data)

        with mock.patch.object(microgpt, 'param_shapes', with_gains(microgpt.param_shapes)):
            config, tok, sd = tiny_model(seed=43, n_layer=1, steps=3)
            round_trip(config, tok, sd)
            before = [p.data for p in sd['layer0.ln_2'][0]]
            train(['abc', 'dab', 'cad'], tok, sd, config)   # Adam takes every matrix, gains too
            self.assertTrue(all(p.data != b for p, b in zip(sd['layer0.ln_2'][0], before)))
            round_trip(config, tok, sd)


# %% Sampling: top-k, prompts
def greedy(state_dict, tokenizer, config, prompt=''):
    """Argmax decoding: feed the tokens through gpt() and append the highest-scoring next token
    until it is BOS or the context is full."""
    tokens = [tokenizer.bos] + tokenizer.encode(prompt)
    kv_cache = new_kv_cache(config)
    for pos in range(config.block_size):
        logits = [v.data for v in microgpt.gpt(tokens[pos], pos, kv_cache, state_dict, config)]
        if pos + 1 < len(tokens):
            continue
        best = max(range(len(logits)), key=logits.__getitem__)
        if best == tokenizer.bos:
            break
        tokens.append(best)
    return tokenizer.decode(tokens[1:])


class TestSampling(NoRecordingTestCase):

    def test_top_k_1_is_greedy(self):
        config, tok, sd = tiny_model(seed=51, n_layer=1, block_size=8, chars='abcdefgh')
        for row in sd['lm_head']:   # sharper odds, so that sampling would wander otherwise
            for p in row:
                p.data *= 20
        for prompt in ('', 'a', 'hg'):
            expected = greedy(sd, tok, config, prompt)
            for temperature in (0.5, 1.0, 3.0):
                topk = dataclasses.replace(config, top_k=1, temperature=temperature)
                rng = random.Random(52)
                samples = [microgpt.generate(sd, tok, topk, rng, prompt) for _ in range(5)]
                self.assertEqual(samples, [expected] * 5, (prompt, temperature))
        sampled = dataclasses.replace(config, temperature=3.0)
        rng = random.Random(52)
        self.assertGreater(len({microgpt.generate(sd, tok, sampled, rng) for _ in range(10)}), 1)

    def test_top_k_of_the_vocabulary_or_more_is_no_top_k(self):
        config, tok, sd = tiny_model(seed=53, n_layer=1, temperature=1.0)

        def samples(top_k):
            rng, cfg = random.Random(54), dataclasses.replace(config, top_k=top_k)
            return [microgpt.generate(sd, tok, cfg, rng) for _ in range(30)]
        everything = samples(0)
        self.assertGreater(len(set(everything)), 10)
        for top_k in (tok.vocab_size, tok.vocab_size + 1, 1000):
            self.assertEqual(samples(top_k), everything, top_k)

    def test_top_k_2_draws_only_the_two_likeliest(self):
        # block_size 1: each sample is one draw from the first position's scores ('' is BOS).
        config, tok, sd = tiny_model(seed=55, n_layer=1, block_size=1, chars='abcdefg',
                                     temperature=2.0)
        logits = float_forward([tok.bos], sd, config)[0]
        ranked = sorted(range(tok.vocab_size), key=lambda i: -logits[i])
        self.assertGreater(logits[ranked[1]] - logits[ranked[2]], 1e-6)   # no tie with a third
        two = {tok.decode([i]) if i != tok.bos else '' for i in ranked[:2]}

        def draws(top_k):
            rng, cfg = random.Random(56), dataclasses.replace(config, top_k=top_k)
            return collections.Counter(microgpt.generate(sd, tok, cfg, rng) for _ in range(400))
        self.assertEqual(set(draws(2)), two)
        self.assertEqual(len(draws(0)), tok.vocab_size)   # without top-k, every token comes up

    def test_tokens_tied_with_the_kth_are_kept(self):
        # lm_head = 0: every score is 0, all tied, so top_k = 1 keeps every token.
        config, tok, sd = tiny_model(seed=57, n_layer=1, block_size=1, chars='abc')
        for row in sd['lm_head']:
            for p in row:
                p.data = 0.0
        rng, cfg = random.Random(58), dataclasses.replace(config, top_k=1)
        drawn = {microgpt.generate(sd, tok, cfg, rng) for _ in range(100)}
        self.assertEqual(drawn, {'', 'a', 'b', 'c'})

    def test_a_prompt_the_model_cannot_take_is_an_input_error(self):
        config, tok, sd = tiny_model(seed=59, n_layer=1, block_size=6)
        for prompt in ('aQ', 'é', 'abcabc'):   # not in the data, or not shorter than block_size
            with self.subTest(prompt=prompt):
                with self.assertRaises(microgpt.InputError) as caught:
                    microgpt.generate(sd, tok, config, random.Random(0), prompt)
                self.assertIn('--prompt', str(caught.exception))
                out = io.StringIO()   # nothing printed, not even the header: the error is all
                with contextlib.redirect_stdout(out), self.assertRaises(microgpt.InputError):
                    microgpt.print_samples(sd, tok, dataclasses.replace(config, prompt=prompt))
                self.assertEqual(out.getvalue(), '')
        self.assertEqual(len(microgpt.generate(sd, tok, config, random.Random(0), 'abcab')), 5)

    def test_an_input_error_shows_as_one_line_in_ipython(self):
        # IPython and Jupyter show an exception by its _render_traceback_(), if it has one: a list
        # of lines. For an InputError: one line, no traceback.
        self.assertEqual(microgpt.InputError('x')._render_traceback_(), ['microgpt: error: x'])
        config, tok, sd = tiny_model(seed=60, n_layer=1)
        with self.assertRaises(microgpt.InputError) as caught:
            microgpt.generate(sd, tok, config, random.Random(0), 'Q')
        lines = caught.exception._render_traceback_()
        self.assertEqual(len(lines), 1)
        self.assertNotIn('\n', lines[0])
        self.assertEqual(lines[0], f'microgpt: error: {caught.exception}')
        self.assertIn('--prompt', lines[0])


class TestSampleMarks(unittest.TestCase):
    def test_each_sample_says_whether_the_model_saw_it(self):
        # generate() replaced by a fixed list. 'bob' was seen; 'cy' is a document that was not;
        # 'dee' is no document. No documents given (a loaded checkpoint): no marks at all.
        config, tok, sd = tiny_model()
        config = dataclasses.replace(config, num_samples=4)
        for docs, expected in (
                ((['bob'], ['ann', 'bob', 'cy']),
                 ['sample  1: bob   <- seen in training', 'sample  2: cy   <- in the data, never seen',
                  'sample  3: dee', 'sample  4: bob   <- seen in training']),
                ((), ['sample  1: bob', 'sample  2: cy', 'sample  3: dee', 'sample  4: bob'])):
            samples, out = iter(['bob', 'cy', 'dee', 'bob']), io.StringIO()
            with mock.patch.object(microgpt, 'generate', lambda *args: next(samples)), \
                    contextlib.redirect_stdout(out):
                microgpt.print_samples(sd, tok, config, *docs)
            self.assertEqual(out.getvalue().splitlines(), ['--- samples ---'] + expected)


class TestMemory(NoRecordingTestCase):
    """A learner's own loops, with no housekeeping of any kind, keep nothing: forward passes over
    many held-out names (their losses read and dropped, never backpropagated), and a sampler that
    calls gpt() itself. Each document's graph is freed once nothing uses it, so memory after a
    long loop is what it was before it, and its peak is one document's, not the loop's."""

    @classmethod
    def setUpClass(cls):
        # The Run cell's split of the real data: shuffled with the default seed, a tenth held out.
        docs = microgpt.load_docs(os.path.join(ROOT, 'input.txt'))
        random.Random(microgpt.Config.seed).shuffle(docs)
        cls.val_docs = docs[:len(docs) // 10]
        cls.tokenizer = microgpt.Tokenizer(''.join(docs))
        cls.config = microgpt.Config(n_layer=1, n_embd=4, n_head=2, block_size=8)
        cls.state_dict = microgpt.init_params(cls.tokenizer.vocab_size, cls.config,
                                              random.Random(0))

    def assertKeepsNothing(self, run, short, long):
        """run(n) is a loop n long: short, then long. Values alive afterwards: the same number as before it. Where
        tracemalloc can measure (CPython), bytes still allocated after the long loop: none to
        speak of (keeping each graph would keep ~0.3 MB per name for this model); its peak over
        the baseline: no more than a short loop's, plus a margin (one longer name's graph)."""
        gc.collect()
        values_before = live_values()
        if tracemalloc is None:   # (PyPy has no tracemalloc: live Values only)
            run(short)
            run(long)
        else:
            tracemalloc.start()
            try:
                run(short)   # first calls may allocate what later ones reuse
                gc.collect()
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                run(short)
                short_peak = tracemalloc.get_traced_memory()[1] - base
                gc.collect()
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                run(long)
                gc.collect()
                current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            self.assertLess(current - base, 64 * 1024)
            self.assertGreater(short_peak, 100 * 1024)   # a graph is made, and measured
            self.assertLess(peak - base, short_peak + 512 * 1024)
        gc.collect()
        self.assertEqual(live_values(), values_before)

    def test_a_loop_of_forward_passes(self):
        config, tok, sd = self.config, self.tokenizer, self.state_dict
        self.assertGreaterEqual(len(self.val_docs), 110)
        losses = []

        def run(n):
            for doc in self.val_docs[:n]:
                tokens = microgpt.doc_tokens(doc, tok, config.block_size)
                losses.append(microgpt.document_loss(tokens, sd, config).data)
        self.assertKeepsNothing(run, 10, 110)
        self.assertEqual(len(losses), 10 + 10 + 110 if tracemalloc else 10 + 110)
        self.assertTrue(all(0 < loss < 10 for loss in losses))

    def test_a_learners_own_sampling_loop(self):
        config, tok, sd = self.config, self.tokenizer, self.state_dict
        rng, lengths = random.Random(7), []

        def run(n):
            for _ in range(n):
                kv_cache, token, sample = new_kv_cache(config), tok.bos, []
                for pos in range(config.block_size):
                    logits = microgpt.gpt(token, pos, kv_cache, sd, config)
                    probs = [p.data for p in microgpt.softmax(logits)]
                    token = rng.choices(range(tok.vocab_size), weights=probs)[0]
                    if token == tok.bos:
                        break
                    sample.append(token)
                lengths.append(len(sample))
        self.assertKeepsNothing(run, 5, 40)
        self.assertGreater(sum(lengths), 3 * len(lengths))   # samples of several tokens each


class TestScale(NoRecordingTestCase):
    def test_deep_model_on_a_long_document_trains_and_samples(self):
        # 4 blocks over 64 positions make a graph far deeper than Python's ~1000-call recursion
        # limit (each position's residual stream runs through every earlier operation), so this
        # fails with RecursionError on a recursive topological sort.
        config = microgpt.Config(n_layer=4, n_embd=16, n_head=4, block_size=64)
        doc = ('abcd' * 20)[:70]   # longer than block_size: cut to 64 inputs
        tok = microgpt.Tokenizer(doc)
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(3))
        tokens = microgpt.doc_tokens(doc, tok, config.block_size)
        self.assertEqual(len(tokens), 65)
        optimizer = microgpt.Adam(flat_params(state_dict))
        loss = microgpt.document_loss(tokens, state_dict, config)
        self.assertAlmostEqual(loss.data, math.log(tok.vocab_size), delta=0.5)   # ~uniform at init
        loss.backward()
        self.assertTrue(any(p.grad != 0 for p in state_dict['layer0.attn.wq'][0]))
        optimizer.step(0.01)
        second = microgpt.document_loss(tokens, state_dict, config).data
        self.assertLess(second, loss.data)   # one Adam step on this very document helps it
        sample = microgpt.generate(state_dict, tok, dataclasses.replace(config, temperature=1.0),
                                   random.Random(0))
        self.assertLessEqual(len(sample), config.block_size)
        self.assertTrue(set(sample) <= set(doc))


if __name__ == '__main__':
    unittest.main()
