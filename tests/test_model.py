"""Tests for microgpt's model side: softmax, rmsnorm, cross-entropy, the full GPT's gradients,
the tokenizer, load_docs, Adam, the dot() fast path against plain Value arithmetic, training,
memory and determinism.

Expected numbers are derived by hand (the derivation is in a comment) or computed independently
in plain floats; gradients are checked against central finite differences.
"""
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def float_softmax(xs):
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


# %% softmax, rmsnorm, cross_entropy
class TestSoftmax(unittest.TestCase):
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
        out = sum(w * p for w, p in zip(ws, microgpt.softmax(leaves)))
        out.backward()
        assert_grads_match(self, leaves, f, xs)


class TestRmsnorm(unittest.TestCase):
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
        out = sum(w * y for w, y in zip(ws, microgpt.rmsnorm(leaves)))
        self.assertAlmostEqual(out.data, f(xs), delta=1e-12)
        out.backward()
        assert_grads_match(self, leaves, f, xs)


class TestCrossEntropy(unittest.TestCase):
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


# %% The full model
def float_forward(tokens, state_dict, config):
    """An independent plain-float GPT forward pass: the logits at every input position."""
    W = {name: [[p.data for p in row] for row in m] for name, m in state_dict.items()}
    hd = config.n_embd // config.n_head

    def lin(x, w):
        return [sum(a * b for a, b in zip(row, x)) for row in w]

    def rms(x):
        s = (sum(a * a for a in x) / len(x) + 1e-5) ** -0.5
        return [a * s for a in x]

    keys = [[] for _ in range(config.n_layer)]
    vals = [[] for _ in range(config.n_layer)]
    out = []
    for pos, tok in enumerate(tokens):
        x = rms([a + b for a, b in zip(W['wte'][tok], W['wpe'][pos])])
        for i in range(config.n_layer):
            res = x
            x = rms(x)
            q, k, v = (lin(x, W[f'layer{i}.attn.{n}']) for n in ('wq', 'wk', 'wv'))
            keys[i].append(k)
            vals[i].append(v)
            heads = []
            for h in range(config.n_head):
                lo, hi = h * hd, (h + 1) * hd
                scores = [sum(q[j] * kt[j] for j in range(lo, hi)) / math.sqrt(hd) for kt in keys[i]]
                w = float_softmax(scores)
                heads += [sum(w[t] * vals[i][t][j] for t in range(len(w))) for j in range(lo, hi)]
            x = [a + b for a, b in zip(lin(heads, W[f'layer{i}.attn.wo']), res)]
            res = x
            x = lin(rms(x), W[f'layer{i}.mlp.fc1'])
            x = [max(0.0, a) ** 2 for a in x]
            x = [a + b for a, b in zip(lin(x, W[f'layer{i}.mlp.fc2']), res)]
        out.append(lin(x, W['lm_head']))
    return out


class TestModel(unittest.TestCase):
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
        self.assertEqual(len(microgpt.flat_params(sd)), 1664)

    def test_forward_matches_plain_float_reference(self):
        config, tok, sd = tiny_model(seed=4)
        tokens = [tok.bos, 0, 1, 2, 0, tok.bos]
        kv = microgpt.new_kv_cache(config)
        expected = float_forward(tokens[:-1], sd, config)
        for pos, tok_id in enumerate(tokens[:-1]):
            logits = microgpt.gpt(tok_id, pos, kv, sd, config)
            self.assertEqual(len(logits), tok.vocab_size)
            for a, b in zip(logits, expected[pos]):
                self.assertAlmostEqual(a.data, b, delta=1e-12)
        self.assertEqual([len(keys) for keys, _ in kv], [5, 5])
        # document_loss is the mean over positions of -log softmax(logits)[next token]
        losses = [-math.log(float_softmax(lg)[nxt]) for lg, nxt in zip(expected, tokens[1:])]
        loss = microgpt.document_loss(tokens, sd, config)
        self.assertAlmostEqual(loss.data, sum(losses) / len(losses), delta=1e-12)

    def test_attention_is_causal(self):
        # The logits at position t depend only on tokens 0..t: changing a later token must not
        # change them, and changing an earlier one must.
        config, tok, sd = tiny_model(seed=5)

        def logits_of(tokens):
            kv = microgpt.new_kv_cache(config)
            return [[v.data for v in microgpt.gpt(t, pos, kv, sd, config)] for pos, t in enumerate(tokens)]

        a = logits_of([tok.bos, 0, 1, 2])
        b = logits_of([tok.bos, 0, 1, 3])
        c = logits_of([tok.bos, 3, 1, 2])
        self.assertEqual(a[:3], b[:3])
        self.assertNotEqual(a[3], b[3])
        self.assertEqual(a[0], c[0])
        self.assertNotEqual(a[2], c[2])

    def test_zero_lm_head_gives_log_vocab_loss(self):
        # lm_head = 0 -> every logit is 0 -> softmax is uniform -> every position's loss is ln V
        config, tok, sd = tiny_model(seed=6)
        for row in sd['lm_head']:
            for p in row:
                p.data = 0.0
        loss = microgpt.document_loss([tok.bos, 1, 2, tok.bos], sd, config)
        self.assertAlmostEqual(loss.data, math.log(tok.vocab_size), delta=1e-12)

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

    def test_errors(self):
        cases = {
            'missing': os.path.join(self.tmp.name, 'no-such-file.txt'),
            'directory': self.tmp.name,
            'empty': self.write(b'', 'empty.txt'),
            'whitespace only': self.write(b'  \n\t\r\n \n', 'blank.txt'),
            'bom and blank lines only': self.write(b'\xef\xbb\xbf\n\n', 'bom.txt'),
            'not utf-8': self.write('café\n'.encode('latin-1'), 'latin1.txt'),
        }
        for what, path in cases.items():
            with self.subTest(what):
                with self.assertRaises(microgpt.InputError) as ctx:
                    microgpt.load_docs(path)
                self.assertIn(path, str(ctx.exception))


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
    return [atomic_dot(row, x) for row in w]


def run_steps(seed, steps, config, tokenizer, docs):
    """init_params from a seeded rng, then `steps` training steps exactly as train() takes them.
    Returns the step losses and the final weights. Keeps no graph alive once it returns."""
    state_dict = microgpt.init_params(tokenizer.vocab_size, config, random.Random(seed))
    optimizer = microgpt.Adam(microgpt.flat_params(state_dict))
    losses = []
    for step in range(steps):
        tokens = microgpt.doc_tokens(docs[step % len(docs)], tokenizer, config.block_size)
        loss = microgpt.document_loss(tokens, state_dict, config)
        loss.backward()
        optimizer.step(config.learning_rate * (1 - step / steps))
        losses.append(loss.data)
    return losses, [p.data for p in microgpt.flat_params(state_dict)]


class TestTraining(unittest.TestCase):
    def test_fast_paths_match_atomic_operations(self):
        config = microgpt.Config(n_layer=2, n_embd=8, n_head=2, block_size=6, learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        fast_losses, fast_weights = run_steps(21, 3, config, tok, NAMES)
        before = atomic_dot.calls
        with mock.patch.object(microgpt, 'dot', atomic_dot), \
                mock.patch.object(microgpt, 'linear', atomic_linear):
            slow_losses, slow_weights = run_steps(21, 3, config, tok, NAMES)
        self.assertGreater(atomic_dot.calls - before, 100)   # the patch really took effect
        self.assertIsNot(microgpt.dot, atomic_dot)   # and was undone
        self.assertIsNot(microgpt.linear, atomic_linear)
        self.assertEqual(len(fast_losses), 3)
        for a, b in zip(fast_losses, slow_losses):
            self.assertAlmostEqual(a, b, delta=1e-9)
        self.assertEqual(len(fast_weights), len(slow_weights))
        self.assertLess(max(abs(a - b) for a, b in zip(fast_weights, slow_weights)), 1e-9)
        # the weights did move, so matching them is not trivial: each moved ~lr at step 1
        init = [p.data for p in microgpt.flat_params(
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
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            losses = microgpt.train(NAMES, [], tok, state_dict, config)
        self.assertEqual(len(losses), 60)
        self.assertIn('step   60 /   60', out.getvalue())
        first, last = sum(losses[:15]) / 15, sum(losses[-15:]) / 15
        self.assertLess(last, first - 0.5, (first, last))
        end = microgpt.evaluate(NAMES, tok, state_dict, config)
        self.assertLess(end, start - 0.5, (start, end))

    def test_no_graph_outlives_a_training_step(self):
        # microgpt.run() switches the cycle collector off, relying on reference counting alone to
        # free each step's graph. So do the same here, and count the live Values: after a step
        # returns, only the parameters may remain.
        def live_values():
            return sum(1 for o in gc.get_objects() if type(o) is Value)

        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        state_dict = microgpt.init_params(tok.vocab_size, config, random.Random(4))
        n_params = len(microgpt.flat_params(state_dict))
        optimizer = microgpt.Adam(microgpt.flat_params(state_dict))

        def step(i):
            tokens = microgpt.doc_tokens(NAMES[i % len(NAMES)], tok, config.block_size)
            loss = microgpt.document_loss(tokens, state_dict, config)
            loss.backward()
            optimizer.step(0.01)
            return loss.data

        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            baseline = live_values()   # every Value alive, ours included
            counts = {}
            for i in range(1, 21):
                step(i)
                if i in (5, 20):
                    counts[i] = live_values()
            with contextlib.redirect_stdout(io.StringIO()):
                microgpt.train(NAMES, [], tok, state_dict, dataclasses.replace(config, steps=5))
            after_train = live_values()
        finally:
            if was_enabled:
                gc.enable()
        self.assertGreater(n_params, 500)
        self.assertGreaterEqual(baseline, n_params)
        self.assertEqual(counts[5], baseline)
        self.assertEqual(counts[20], baseline)
        self.assertEqual(after_train, baseline)

    def test_same_seed_same_run(self):
        config = microgpt.Config(n_layer=1, n_embd=8, n_head=2, block_size=8, learning_rate=0.01)
        tok = microgpt.Tokenizer(''.join(NAMES))
        a = run_steps(42, 3, config, tok, NAMES)
        b = run_steps(42, 3, config, tok, NAMES)
        self.assertEqual(a, b)   # losses and weights, exactly
        c = run_steps(43, 3, config, tok, NAMES)
        self.assertNotEqual(a[0], c[0])   # a different seed really is a different run


class TestScale(unittest.TestCase):
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
        optimizer = microgpt.Adam(microgpt.flat_params(state_dict))
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
