"""Tests for microgpt's scalar autograd: every Value operation, constants, the tape and backward(),
and the dot() node.

Values are checked against plain-float arithmetic from the math module, and gradients against
central finite differences of those plain-float functions, so that neither side is derived from
the code under test.
"""
import math
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import microgpt  # noqa: E402

Value = microgpt.Value
H = 1e-6         # finite-difference step
ATOL = 1e-7      # central differences at h = 1e-6 are good to ~1e-9 for these O(1) functions
RTOL = 1e-6


def central_diff(f, xs, i, h=H):
    """d f(xs) / d xs[i] by a central finite difference; f takes and returns plain floats."""
    up, down = list(xs), list(xs)
    up[i] += h
    down[i] -= h
    return (f(up) - f(down)) / (2 * h)


class TapeTestCase(unittest.TestCase):
    """Each test starts and ends with an empty tape. backward() no longer empties it, so without
    this every graph of every earlier test (10,000-node chains included) would stay on it: kept
    alive, zeroed and replayed by each later backward(), and counted by tests that look at it."""

    def setUp(self):
        Value.tape.clear()
        self.addCleanup(Value.tape.clear)


class GradTestCase(TapeTestCase):
    def assertClose(self, actual, expected, atol=ATOL, rtol=RTOL, msg=None):
        bound = atol + rtol * abs(expected)
        if not abs(actual - expected) <= bound:   # also fails on nan
            self.fail(f"{actual!r} != {expected!r} within {bound:.3g}" + (f": {msg}" if msg else ""))

    def check_op(self, value_fn, float_fn, xs, name):
        """value_fn builds the expression from Values, float_fn computes it from floats.
        Checks the forward value, and the gradient of every input against central differences."""
        leaves = [Value(x) for x in xs]
        out = value_fn(*leaves)
        self.assertIsInstance(out, Value, name)
        self.assertClose(out.data, float_fn(*xs), atol=1e-12, rtol=1e-12, msg=f"{name} value")
        out.backward()
        for i, leaf in enumerate(leaves):
            fd = central_diff(lambda v: float_fn(*v), xs, i)
            self.assertClose(leaf.grad, fd, msg=f"{name}: d/d(input {i}) at {xs}")


class TestBinaryOps(GradTestCase):
    # Points on both signs, none where an operation is undefined.
    PAIRS = [(1.3, -0.7), (-2.1, 0.4), (0.5, 3.0)]

    def test_add(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x + y, lambda x, y: x + y, [a, b], 'a + b')

    def test_sub(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x - y, lambda x, y: x - y, [a, b], 'a - b')

    def test_mul(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x * y, lambda x, y: x * y, [a, b], 'a * b')

    def test_truediv(self):
        for a, b in self.PAIRS:
            self.check_op(lambda x, y: x / y, lambda x, y: x / y, [a, b], 'a / b')

    def test_exact_local_gradients(self):
        # By hand at a = 3, b = -2 (all exact in binary floating point):
        #   a*b: d/da = b = -2,  d/db = a = 3
        #   a/b: d/da = 1/b = -0.5,  d/db = -a/b^2 = -3/4 = -0.75
        #   a-b: d/da = 1, d/db = -1
        cases = [(lambda x, y: x * y, -6.0, -2.0, 3.0),
                 (lambda x, y: x / y, -1.5, -0.5, -0.75),
                 (lambda x, y: x - y, 5.0, 1.0, -1.0),
                 (lambda x, y: x + y, 1.0, 1.0, 1.0)]
        for fn, value, da, db in cases:
            a, b = Value(3.0), Value(-2.0)
            out = fn(a, b)
            out.backward()
            self.assertEqual((out.data, a.grad, b.grad), (value, da, db))


class TestPow(GradTestCase):
    def test_pow_positive_base(self):
        # Integer, zero, negative and fractional exponents on a positive base.
        for k in (2, 3, 1, 0, -1, -2.5, 0.5, 1.5, -0.5):
            for a in (1.7, 0.3):
                self.check_op(lambda x: x ** k, lambda x: x ** k, [a], f'a ** {k}')

    def test_pow_negative_base_integer_exponent(self):
        for k in (2, 3, -1, -2):
            self.check_op(lambda x: x ** k, lambda x: x ** k, [-1.2], f'a ** {k}')

    def test_pow_by_hand(self):
        # a = 4: a ** 0.5 = 2, d/da = 0.5 * 4 ** -0.5 = 0.25
        #        a ** -1 = 0.25, d/da = -1 * 4 ** -2 = -0.0625
        for k, value, grad in ((0.5, 2.0, 0.25), (-1, 0.25, -0.0625), (3, 64.0, 48.0)):
            a = Value(4.0)
            out = a ** k
            out.backward()
            self.assertEqual((out.data, a.grad), (value, grad))


class TestUnaryOps(GradTestCase):
    def test_neg(self):
        for a in (1.3, -0.7):
            self.check_op(lambda x: -x, lambda x: -x, [a], '-a')

    def test_exp(self):
        for a in (-1.3, 0.0, 2.5):
            self.check_op(lambda x: x.exp(), math.exp, [a], 'exp a')

    def test_relu_squared_both_sides(self):
        relu_squared = lambda x: max(0.0, x) ** 2  # noqa: E731
        for a in (0.8, 2.0, -0.8, -3.0, 0.01, -0.01):   # (smooth at 0 too: slope 2 max(0, a))
            self.check_op(lambda x: x.relu_squared(), relu_squared, [a], 'relu_squared a')
        # By hand: 1.5 -> 2.25 with slope 2 * 1.5 = 3;  -1.5 -> 0 with slope 0;  0 -> 0, slope 0
        pos, neg, zero = Value(1.5), Value(-1.5), Value(0.0)
        out = pos.relu_squared() + neg.relu_squared() + zero.relu_squared()
        out.backward()
        self.assertEqual((out.data, pos.grad, neg.grad, zero.grad), (2.25, 3.0, 0.0, 0.0))


class TestConstants(GradTestCase):
    """A plain number as an operand is a constant: it enters the one node the operation makes as a
    number (its local gradient, or part of the value), never as a node of its own."""

    def test_number_on_the_right(self):
        for a in (1.3, -0.7):
            self.check_op(lambda x: x + 2, lambda x: x + 2, [a], 'a + 2')
            self.check_op(lambda x: x - 2, lambda x: x - 2, [a], 'a - 2')
            self.check_op(lambda x: x * 2, lambda x: x * 2, [a], 'a * 2')
            self.check_op(lambda x: x / 2, lambda x: x / 2, [a], 'a / 2')
            self.check_op(lambda x: x * -0.3, lambda x: x * -0.3, [a], 'a * -0.3')

    def test_number_on_the_left_of_plus(self):
        # Only + takes a number on its left (__radd__): that is what sum() needs, as it starts
        # from 0 + v[0].
        for a in (1.3, -0.7):
            self.check_op(lambda x: 2 + x, lambda x: 2 + x, [a], '2 + a')
            self.check_op(lambda x: 0 + x, lambda x: 0 + x, [a], '0 + a')
        self.check_op(lambda x, y, z: sum([x, y * y, z]), lambda x, y, z: x + y * y + z,
                      [0.3, -1.1, 2.0], 'sum([a, b*b, c])')

    def test_constants_by_hand(self):
        # At a = 2 (all exact in binary floating point):
        #   a + 5 = 7, slope 1;    a - 5 = -3, slope 1;   a * 3 = 6, slope 3
        #   a / 4 = a * 0.25 = 0.5, slope 0.25;   5 + a = 7, slope 1
        #   sum([a, a, a]) = 0 + a + a + a = 6, slope 3
        cases = [(lambda x: x + 5, 7.0, 1.0), (lambda x: x - 5, -3.0, 1.0),
                 (lambda x: x * 3, 6.0, 3.0), (lambda x: x / 4, 0.5, 0.25),
                 (lambda x: 5 + x, 7.0, 1.0), (lambda x: sum([x, x, x]), 6.0, 3.0)]
        for fn, value, grad in cases:
            a = Value(2.0)
            out = fn(a)
            out.backward()
            self.assertEqual((out.data, a.grad), (value, grad))

    def test_a_constant_makes_one_node_with_one_child(self):
        # Each of these operations on one Value and a number adds exactly one Value to the tape,
        # whose only child is `a`. (Were the number wrapped in a Value, the result would have two
        # children; the wrapper, a leaf, would not be on the tape.)
        a = Value(2.0)
        ops = {'a + 2': lambda: a + 2, 'a - 2': lambda: a - 2, 'a * 2': lambda: a * 2,
               'a / 2': lambda: a / 2, 'a ** 2': lambda: a ** 2, '2 + a': lambda: 2 + a,
               '-a': lambda: -a, 'a.exp()': lambda: a.exp(),
               'a.relu_squared()': lambda: a.relu_squared()}
        for name, op in ops.items():
            start = len(Value.tape)
            out = op()
            self.assertEqual(Value.tape[start:], [out], name)
            self.assertEqual(len(out._children), 1, name)
            self.assertIs(out._children[0], a, name)
            self.assertEqual(len(out._local_grads), 1, name)

    def test_node_counts_of_operations_on_two_values(self):
        # a + b and a * b: one node with children (a, b).  a - b = a + (-b): two nodes, -b and the
        # sum.  a / b = a * b**-1: two nodes, b**-1 and the product.  sum of n Values: n nodes,
        # 0 + v0 (the 0 a constant), then one + per further Value.
        a, b, c = Value(2.0), Value(4.0), Value(8.0)
        for name, op, nodes in (('a + b', lambda: a + b, 1), ('a * b', lambda: a * b, 1),
                                ('a - b', lambda: a - b, 2), ('a / b', lambda: a / b, 2),
                                ('sum([a, b, c])', lambda: sum([a, b, c]), 3)):
            start = len(Value.tape)
            out = op()
            self.assertEqual(len(Value.tape) - start, nodes, name)
            self.assertIs(Value.tape[-1], out, name)
        for out in (a + b, a * b):   # (Value has no __eq__: lists of Values compare by identity)
            self.assertEqual(list(out._children), [a, b])


class TestGraphs(GradTestCase):
    def test_node_used_several_times_gets_summed_gradient(self):
        # f = a*a + a*b + exp(a):  df/da = 2a + b + exp(a),  df/db = a
        a0, b0 = 0.7, -1.9
        a, b = Value(a0), Value(b0)
        f = a * a + a * b + a.exp()
        f.backward()
        self.assertClose(f.data, a0 * a0 + a0 * b0 + math.exp(a0), atol=1e-15, rtol=1e-15)
        self.assertClose(a.grad, 2 * a0 + b0 + math.exp(a0), atol=1e-15, rtol=1e-15)
        self.assertClose(b.grad, a0, atol=1e-15, rtol=1e-15)
        float_f = lambda v: v[0] * v[0] + v[0] * v[1] + math.exp(v[0])  # noqa: E731
        self.assertClose(a.grad, central_diff(float_f, [a0, b0], 0))
        self.assertClose(b.grad, central_diff(float_f, [a0, b0], 1))

    def test_same_value_on_both_sides(self):
        # a*a: d/da = 2a;  a/a = 1: d/da = 1/a - a/a^2 = 0;  a - a = 0: slope 0
        a = Value(1.5)
        (a * a).backward()
        self.assertEqual(a.grad, 3.0)
        a = Value(1.5)
        (a / a).backward()
        self.assertEqual(a.grad, 0.0)
        a = Value(1.5)
        (a - a).backward()
        self.assertEqual(a.grad, 0.0)

    def test_composite_expression_of_several_variables(self):
        def build(x, y, z, w):
            # f = exp(x*y) / (z^2 + 1) + relu(w - x)^2 * y^3 - exp(z/2) * w + (w + 3)^-1 + 1 + -y
            return ((x * y).exp() / (z ** 2 + 1) + (w - x).relu_squared() * y ** 3
                    - (z / 2).exp() * w + (w + 3) ** -1 + 1 + -y)

        def floats(v):
            x, y, z, w = v
            return (math.exp(x * y) / (z ** 2 + 1) + max(0.0, w - x) ** 2 * y ** 3
                    - math.exp(z / 2) * w + 1 / (w + 3) + 1 - y)

        rng = random.Random(1234)
        for _ in range(5):
            xs = [rng.uniform(-1.5, 1.5) for _ in range(4)]
            self.check_op(build, lambda *v: floats(v), xs, 'composite')

    def test_backward_sets_root_grad_to_one(self):
        a = Value(2.0)
        out = a * 3.0
        out.backward()
        self.assertEqual(out.grad, 1.0)
        self.assertEqual(a.grad, 3.0)

    def test_constants_do_not_disturb_leaves(self):
        # Only the leaves the expression uses get gradient; an unrelated Value keeps 0.
        a, unused = Value(1.0), Value(5.0)
        (a * 4 + 1).backward()
        self.assertEqual((a.grad, unused.grad), (4.0, 0.0))


class TestDeepChains(TapeTestCase):
    N = 10_000   # far beyond Python's default recursion limit of 1000

    def test_deep_chain_of_additions_of_a_constant(self):
        # x_N = a + N * 1.0: value a + N, dx_N/da = 1 (each + passes the gradient through).
        a = Value(0.5)
        x = a
        for _ in range(self.N):
            x = x + 1.0
        x.backward()
        self.assertEqual(x.data, 0.5 + self.N)
        self.assertEqual(a.grad, 1.0)

    def test_deep_chain_of_additions_of_the_leaf(self):
        # x_0 = a, x_{k+1} = x_k + a  =>  x_N = (N + 1) a,  dx_N/da = N + 1 (each + adds 1).
        a = Value(0.25)
        x = a
        for _ in range(self.N):
            x = x + a
        x.backward()
        self.assertEqual(x.data, 0.25 * (self.N + 1))
        self.assertEqual(a.grad, float(self.N + 1))

    def test_deep_chain_of_multiplications(self):
        # x_N = a * c^N with c = 1.0001, so dx_N/da = c^N = exp(N * ln(1.0001)) ~ e^0.99995.
        # N roundings of ~1e-16 each bound the relative error by ~1e-12.
        c, a0 = 1.0001, 1.5
        a = Value(a0)
        x = a
        for _ in range(self.N):
            x = x * c
        x.backward()
        # 1.0001 ** 10000 = 2.71814592682522486... (exact decimal arithmetic, 40 digits)
        expected_slope = 2.718145926825225
        self.assertLess(abs(math.exp(self.N * math.log1p(1e-4)) - expected_slope), 1e-12)
        self.assertLess(abs(a.grad - expected_slope), 1e-10 * expected_slope)
        self.assertLess(abs(x.data - a0 * expected_slope), 1e-10 * a0 * expected_slope)


class TestDot(GradTestCase):
    A = [1.5, -2.0, 0.25]
    B = [4.0, 0.5, -8.0]

    def test_value_and_exact_gradients(self):
        # 1.5*4 + (-2)*0.5 + 0.25*(-8) = 6 - 1 - 2 = 3;  d/da_i = b_i,  d/db_i = a_i
        a, b = [Value(x) for x in self.A], [Value(x) for x in self.B]
        start = len(Value.tape)
        out = microgpt.dot(a, b)
        self.assertEqual(Value.tape[start:], [out])   # one node, its children all of a and b
        self.assertEqual(list(out._children), a + b)
        self.assertIsInstance(out, Value)
        self.assertEqual(out.data, 3.0)
        out.backward()
        self.assertEqual([x.grad for x in a], self.B)
        self.assertEqual([x.grad for x in b], self.A)

    def test_gradients_against_finite_differences(self):
        rng = random.Random(7)
        n = 6
        xs = [rng.uniform(-2, 2) for _ in range(2 * n)]

        def floats(v):
            # a nonlinear use of the dot product, so every gradient is checked through a chain
            d = sum(v[i] * v[n + i] for i in range(n))
            return math.exp(0.3 * d) + d * d

        leaves = [Value(x) for x in xs]
        d = microgpt.dot(leaves[:n], leaves[n:])
        out = (d * 0.3).exp() + d * d
        self.assertClose(out.data, floats(xs), atol=1e-12, rtol=1e-12)
        out.backward()
        for i, leaf in enumerate(leaves):
            self.assertClose(leaf.grad, central_diff(floats, xs, i), msg=f"input {i}")

    def test_dot_of_a_vector_with_itself(self):
        # dot(x, x) = sum x_i^2 = 2.25 + 4 + 0.0625 = 6.3125;  d/dx_i = 2 x_i
        x = [Value(v) for v in self.A]
        out = microgpt.dot(x, x)
        self.assertEqual(out.data, 6.3125)
        out.backward()
        self.assertEqual([v.grad for v in x], [3.0, -4.0, 0.5])

    def test_vector_shared_between_two_dot_nodes(self):
        # f = dot(x, y) + 3 * dot(x, z):  df/dx = y + 3z,  df/dy = x,  df/dz = 3x
        rng = random.Random(11)
        n = 4
        xs = [rng.uniform(-2, 2) for _ in range(3 * n)]
        x, y, z = ([Value(v) for v in xs[k * n:(k + 1) * n]] for k in range(3))
        f = microgpt.dot(x, y) + microgpt.dot(x, z) * 3
        f.backward()

        def floats(v):
            return sum(v[i] * v[n + i] for i in range(n)) + 3 * sum(v[i] * v[2 * n + i] for i in range(n))

        self.assertClose(f.data, floats(xs), atol=1e-12, rtol=1e-12)
        for i in range(n):
            self.assertClose(x[i].grad, xs[n + i] + 3 * xs[2 * n + i], atol=1e-14, rtol=1e-14)
            self.assertClose(y[i].grad, xs[i], atol=1e-14, rtol=1e-14)
            self.assertClose(z[i].grad, 3 * xs[i], atol=1e-14, rtol=1e-14)
        leaves = x + y + z
        for i, leaf in enumerate(leaves):
            self.assertClose(leaf.grad, central_diff(floats, xs, i), msg=f"input {i}")

    def test_same_value_twice_within_one_vector(self):
        # dot([a, a], [b, c]) = a*b + a*c:  d/da = b + c
        a, b, c = Value(2.0), Value(3.0), Value(-5.0)
        out = microgpt.dot([a, a], [b, c])
        out.backward()
        self.assertEqual((out.data, a.grad, b.grad, c.grad), (-4.0, -2.0, 2.0, 2.0))

    def test_dot_of_computed_values(self):
        # Inputs that are themselves nodes: dot([a*a, exp(a)], [b, 2]) = a^2 b + 2 e^a
        # d/da = 2ab + 2e^a, d/db = a^2
        a0, b0 = 0.8, -1.1
        a, b = Value(a0), Value(b0)
        out = microgpt.dot([a * a, a.exp()], [b, Value(2.0)])
        out.backward()
        self.assertClose(out.data, a0 * a0 * b0 + 2 * math.exp(a0), atol=1e-15, rtol=1e-15)
        self.assertClose(a.grad, 2 * a0 * b0 + 2 * math.exp(a0), atol=1e-15, rtol=1e-14)
        self.assertClose(b.grad, a0 * a0, atol=1e-15, rtol=1e-15)


class TestTape(TapeTestCase):
    """The tape: every computed Value (one with children) records itself when it is made; leaves
    (weights, inputs) have nothing to replay and are not recorded. backward() sets the grad of
    every Value on the tape to 0, its own to 1, then replays the tape newest-first, and leaves the
    tape as it was. So computed Values get fresh gradients on every call, while leaves add up
    across calls, as in PyTorch, until reset (Adam.step() resets them). Adam.step() also clears
    the tape; a computed Value that is no longer on it cannot be backpropagated."""

    def test_only_computed_values_are_recorded_in_the_order_made(self):
        start = len(Value.tape)
        a, b = Value(1.0), Value(2.0)   # leaves: not recorded
        self.assertEqual(len(Value.tape), start)
        c = a * b
        d = c + 1
        e = microgpt.dot([a, c], [d, b])
        f = Value(7.0, (e,), (0.5,))    # made directly, but with a child: recorded too
        self.assertEqual(Value.tape[start:], [c, d, e, f])   # (lists of Values: by identity)

    def test_backward_leaves_the_tape_as_it_was(self):
        other = Value(5.0) * 2   # an unrelated graph, never differentiated: kept all the same
        a = Value(3.0)
        out = (a * a).exp() + a
        tape = list(Value.tape)
        self.assertEqual(len(tape), 4)   # other, a * a, its exp, the sum: a itself is a leaf
        self.assertIs(tape[0], other)
        for _ in range(2):
            out.backward()
            self.assertEqual(Value.tape, tape)
        self.assertEqual(other.grad, 0.0)   # off out's path: nothing reached it

    def test_backward_starts_every_value_on_the_tape_from_zero(self):
        # p = a * 2 is backpropagated first, which leaves p.grad = 1 on the tape. Then, with the
        # leaf reset, q = a * 5: dq/da = 5. Were p's stale grad of 1 replayed, a would get 2 more.
        a = Value(1.0)
        p = a * 2
        p.backward()
        self.assertEqual((p.grad, a.grad), (1.0, 2.0))
        a.grad = 0.0
        q = a * 5
        q.backward()
        self.assertEqual((q.grad, p.grad, a.grad), (1.0, 0.0, 5.0))
        # Stale grads left by hand on the graph being differentiated are overwritten the same way:
        # out = m * m with m = 3b, b = 2, m = 6: d/dm = 2m = 12, d/db = 12 * 3 = 36.
        b = Value(2.0)
        m = b * 3
        out = m * m
        m.grad, out.grad = 100.0, -7.0
        out.backward()
        self.assertEqual((out.grad, m.grad, b.grad), (1.0, 12.0, 36.0))

    def test_fresh_graph_gives_exact_derivatives(self):
        # out = (a * b + a) * 2:  d/da = 2(b + 1) = 2 * 4 = 8,  d/db = 2a = -3
        a, b = Value(-1.5), Value(3.0)
        out = (a * b + a) * 2
        out.backward()
        self.assertEqual((out.data, a.grad, b.grad), (-12.0, 8.0, -3.0))

    def test_second_backward_on_the_same_graph_adds_to_the_leaves_only(self):
        # c = (a * 2) * 3 with b = a * 2: c.grad = 1, b.grad = 3, a.grad = 6. Each further call
        # replays the same tape: c and b start again from 0 and get the same 1 and 3 (not 2 and
        # 6), while the leaf a adds its 6 again, as in PyTorch: 12, then 18.
        a = Value(1.0)
        b = a * 2
        c = b * 3
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 6.0))
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 12.0))
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 18.0))

    def test_earlier_graph_after_a_later_one(self):
        # m = a * b is shared by x = m + a and y = m * m, made in that order. At a = 1.5, b = -2
        # (so m = -3), exactly:
        #   y = m^2:    dy/dm = 2m = -6,  dy/da = 2m b = 12,    dy/db = 2m a = -9
        #   x = m + a:  dx/dm = 1,        dx/da = b + 1 = -1,  dx/db = a = 1.5
        # x.backward() after y.backward(): y is newer than x on the tape, but starts from 0, so
        # it passes nothing on; and m no longer carries y's -6.
        a, b = Value(1.5), Value(-2.0)
        m = a * b
        x = m + a
        y = m * m
        y.backward()
        self.assertEqual((y.grad, x.grad, m.grad, a.grad, b.grad), (1.0, 0.0, -6.0, 12.0, -9.0))
        a.grad = b.grad = 0.0
        x.backward()
        self.assertEqual((x.grad, y.grad, m.grad, a.grad, b.grad), (1.0, 0.0, 1.0, -1.0, 1.5))
        # y again, without resetting the leaves: they add y's gradients to x's, -1 + 12 = 11 and
        # 1.5 - 9 = -7.5, while x and m hold y's pass alone.
        y.backward()
        self.assertEqual((y.grad, x.grad, m.grad, a.grad, b.grad), (1.0, 0.0, -6.0, 11.0, -7.5))

    def test_a_node_of_a_backpropagated_graph_can_be_used_again(self):
        # b = a * 2 is part of a graph that was backpropagated; a new graph c = b * 3 built on it
        # still reaches a through b: dc/da = 3 * 2 = 6. (When backward() emptied the tape, b was
        # no longer on it and acted as a leaf: a got 0. Were b's grad of 3 from the first call
        # kept, b would get 6 and a 12.)
        a = Value(1.0)
        b = a * 2
        (b * 3).backward()
        self.assertEqual((b.grad, a.grad), (3.0, 6.0))
        a.grad = 0.0
        c = b * 3
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 6.0))
        # together with a itself: d = b * a = 2a^2, dd/da = 4a = 4 (2 through b, 2 directly)
        a.grad = 0.0
        d = b * a
        d.backward()
        self.assertEqual((d.grad, b.grad, a.grad), (1.0, 1.0, 4.0))

    def test_a_graph_built_again_can_be_differentiated_again(self):
        # Computing the loss again, as each training step does: the leaves add up, 6 + 6 = 12.
        a = Value(1.0)
        (a * 2 * 3).backward()
        (a * 2 * 3).backward()
        self.assertEqual(a.grad, 12.0)

    def test_backward_from_a_node_with_newer_nodes_on_the_tape(self):
        # x = a * 2 is followed on the tape by z = x * 7 (which uses x) and u = a * 100 (which
        # uses a). Neither is on the path from x down to a, so d(x)/d(a) = 2 exactly: z and u
        # still have grad 0 when their turn comes, and pass nothing on. The tape keeps them, so
        # z and u can be backpropagated next: dz/dx = 7, dz/da = 14, du/da = 100, and the leaf
        # adds them up: 2 + 14 = 16, then 16 + 100 = 116.
        a = Value(1.5)
        x = a * 2
        z = x * 7
        u = a * 100
        x.backward()
        self.assertEqual((a.grad, x.grad, z.grad, u.grad), (2.0, 1.0, 0.0, 0.0))
        self.assertEqual(Value.tape, [x, z, u])
        z.backward()
        self.assertEqual((a.grad, x.grad, z.grad, u.grad), (16.0, 7.0, 1.0, 0.0))
        u.backward()
        self.assertEqual((a.grad, x.grad, z.grad, u.grad), (116.0, 0.0, 0.0, 1.0))

    def test_a_value_no_longer_on_the_tape_raises(self):
        # Adam.step() clears the tape after each update, and evaluate() and generate() cut off their own
        # part of it. A computed Value dropped that way can no longer be backpropagated: backward()
        # raises before touching any grad, instead of giving wrong (zero) gradients.
        a = Value(1.5)
        b = a * 2
        c = b * 3
        c.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 6.0))
        Value.tape.clear()   # what train() does after its optimizer step
        for dropped in (c, b):
            with self.assertRaisesRegex(RuntimeError, "no longer on the tape"):
                dropped.backward()
        self.assertEqual((c.grad, b.grad, a.grad), (1.0, 3.0, 6.0))
        self.assertEqual(Value.tape, [])
        # The remedy the message gives: compute it again. a adds 6: 12.
        (a * 2 * 3).backward()
        self.assertEqual(a.grad, 12.0)
        # Cutting off the newer part of the tape (as evaluate() and generate() do) drops only that
        # part: x, made before the cut, still backpropagates (dx/da = 5); y, made after, raises.
        a.grad = 0.0
        x = a * 5
        start = len(Value.tape)
        y = a * 7
        del Value.tape[start:]
        with self.assertRaisesRegex(RuntimeError, "no longer on the tape"):
            y.backward()
        self.assertEqual(a.grad, 0.0)
        x.backward()
        self.assertEqual((x.grad, y.grad, a.grad), (1.0, 0.0, 5.0))

    def test_separate_graphs_over_shared_leaves_accumulate(self):
        # L1 = a*b: (dL1/da, dL1/db) = (b, a) = (3, 2)
        # L2 = a + b*b: (dL2/da, dL2/db) = (1, 2b) = (1, 6)
        # After both backward() calls: a.grad = 3 + 1 = 4, b.grad = 2 + 6 = 8
        a, b = Value(2.0), Value(3.0)
        (a * b).backward()
        self.assertEqual((a.grad, b.grad), (3.0, 2.0))
        (a + b * b).backward()
        self.assertEqual((a.grad, b.grad), (4.0, 8.0))

    def test_summed_losses_give_the_summed_gradients(self):
        # Batching: one backward() of L1 + L2 gives what two backward() calls give, one per
        # loss. At a = 1.5, b = -2 (every number below is exact in binary floating point):
        #   L1 = a*b + a*a:   dL1/da = b + 2a = 1,      dL1/db = a = 1.5
        #   L2 = a*b*b - b:   dL2/da = b^2 = 4,         dL2/db = 2ab - 1 = -7
        #   sum:              d/da = 5,                 d/db = -5.5
        def l1(a, b):
            return a * b + a * a

        def l2(a, b):
            return a * b * b - b

        a, b = Value(1.5), Value(-2.0)
        total = l1(a, b) + l2(a, b)
        total.backward()
        self.assertEqual((total.data, a.grad, b.grad), (-0.75 + 8.0, 5.0, -5.5))
        a, b = Value(1.5), Value(-2.0)
        l1(a, b).backward()
        self.assertEqual((a.grad, b.grad), (1.0, 1.5))
        l2(a, b).backward()
        self.assertEqual((a.grad, b.grad), (5.0, -5.5))

    def test_zeroing_leaves_between_graphs_gives_fresh_gradients(self):
        # What Adam.step() does between training steps: grads to 0, then a new graph.
        a = Value(2.0)
        (a * a).backward()
        self.assertEqual(a.grad, 4.0)
        a.grad = 0.0
        (a * 5).backward()
        self.assertEqual(a.grad, 5.0)


if __name__ == '__main__':
    unittest.main()
