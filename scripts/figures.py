"""Pictures of a trained microgpt, drawn as SVG with the standard library alone.

    python3 scripts/figures.py                  train the default model, write figures/*.svg
    python3 scripts/figures.py --load m.json    draw a model saved with --save (no training curve)
    python3 scripts/figures.py --out DIR        write the files somewhere else

Each figure is a function that takes the model's objects and returns SVG text, so a notebook can
draw its own model after a run (walkthrough.md, section 14):

    import sys; sys.path.insert(0, 'scripts'); import figures
    from IPython.display import SVG
    SVG(figures.attention(state_dict, tokenizer, config))

Every figure has a <title>, a viewBox, an opaque background and text of 11 px or more, and uses
the Okabe-Ito colours, which stay apart for the colour-blind. Running the script twice writes the
same bytes: the run is seeded, and every number is printed to a fixed number of digits.
"""
import argparse
import contextlib
import io
import math
import os
import runpy
import sys
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import microgpt  # noqa: E402

# Okabe and Ito's colours, chosen to stay distinct for every kind of colour blindness.
BLUE, SKY, ORANGE, GREEN, VERMILLION, GREY = '#0072B2', '#56B4E9', '#E69F00', '#009E73', '#D55E00', '#777777'
BARS = (VERMILLION, BLUE, ORANGE, GREEN, SKY)


# --- SVG, by hand: a document, text, lines, boxes ------------------------------------------------
def svg(width, height, title, body):
    """A whole SVG document: its title (what screen readers and browsers show), a viewBox so it
    scales, and a white background so it reads on a dark page too."""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">\n'
            f'<title>{escape(title)}</title>\n'
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n' + ''.join(body) + '</svg>\n')


def text(x, y, s, size=13, anchor='start', color='#000000', bold=False, halo=False, rotate=False):
    """A label at (x, y); a halo (a white outline) keeps it readable where it crosses a line."""
    extra = ' font-weight="bold"' if bold else ''
    extra += ' stroke="#ffffff" stroke-width="4" paint-order="stroke"' if halo else ''
    place = f'transform="translate({x:.1f} {y:.1f}) rotate(-90)"' if rotate else f'x="{x:.1f}" y="{y:.1f}"'
    return (f'<text {place} font-size="{size}" text-anchor="{anchor}" fill="{color}"{extra}>'
            f'{escape(str(s))}</text>\n')


def line(x1, y1, x2, y2, color='#000000', width=1.0, dash=''):
    dashes = f' stroke-dasharray="{dash}"' if dash else ''
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
            f'stroke-width="{width}"{dashes}/>\n')


def rect(x, y, w, h, fill, stroke='none'):
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}" stroke="{stroke}"/>\n'


def circle(x, y, r, fill):
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="#000000"/>\n'


def diamond(x, y, r, fill):
    corners = f'M {x:.1f} {y - r:.1f} L {x + r:.1f} {y:.1f} L {x:.1f} {y + r:.1f} L {x - r:.1f} {y:.1f} Z'
    return f'<path d="{corners}" fill="{fill}"/>\n'


def shade(weight):
    """A weight in [0, 1] as a colour from white to BLUE: one hue, darker means more."""
    rgb = [round(255 + (int(BLUE[i:i + 2], 16) - 255) * weight) for i in (1, 3, 5)]
    return '#' + ''.join(f'{c:02x}' for c in rgb)


def ink_on(fill):
    """Black or white, whichever stands out more on `fill` (WCAG's relative luminance)."""
    channels = [int(fill[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return '#000000' if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else '#ffffff'


# --- The model, run with the code its weights came from -----------------------------------------
def model_code(state_dict):
    """(the module whose functions go with these weights, the weights). A notebook that ran the
    file's cells made its Values with its own Value class, and its gpt() may have a part swapped
    in: use those. Otherwise microgpt's own, with the weights copied into its Values."""
    cls = type(state_dict['wte'][0][0])
    module = sys.modules.get(cls.__module__)
    if getattr(module, 'Value', None) is cls and hasattr(module, 'gpt'):
        return module, state_dict
    return microgpt, {name: [[microgpt.Value(p.data) for p in row] for row in m]
                      for name, m in state_dict.items()}


def read_text(state_dict, tokenizer, config, text_read):
    """Feed BOS + text_read to the model, a token at a time as generate() does: returns the
    per-layer cache (keys, values, attention weights) and the last position's logits."""
    microgpt.check_prompt(text_read, tokenizer, config)   # letters it knows, and room to read them
    code, weights = model_code(state_dict)
    kv_cache = [([], [], []) for _ in range(config.n_layer)]
    for pos, token in enumerate([tokenizer.bos] + tokenizer.encode(text_read)):
        logits = code.gpt(token, pos, kv_cache, weights, config)
    return kv_cache, [logit.data for logit in logits]


def token_name(tokenizer, i):
    return '.' if i == tokenizer.bos else tokenizer.chars[i]


# --- 1. The training curve ------------------------------------------------------------------------
def bigram_loss(tokenizer, config, train_docs, val_docs):
    """The loss per token on val_docs of a table of letter pairs counted in train_docs, with one
    added to every count (so that no pair has probability 0): section 14's baseline."""
    def pairs(docs):
        for doc in docs:
            tokens = microgpt.doc_tokens(doc, tokenizer, config.block_size)
            yield from zip(tokens, tokens[1:])
    counts = [[1] * tokenizer.vocab_size for _ in range(tokenizer.vocab_size)]
    for a, b in pairs(train_docs):
        counts[a][b] += 1
    held_out = list(pairs(val_docs))
    return sum(-math.log(counts[a][b] / sum(counts[a])) for a, b in held_out) / len(held_out)


def moving_mean(values, window):
    """The mean of the last `window` values at each point (of all so far, at first)."""
    return [sum(values[max(0, i + 1 - window):i + 1]) / min(window, i + 1) for i in range(len(values))]


def training_curve(losses, state_dict, tokenizer, config, train_docs, val_docs, window=50):
    """Every step's loss (faint) and its moving mean, against three levels measured after
    training on the report's 100 held-out names: the model's loss, the letter-pair table's (of
    all training names), and a uniform guess's."""
    code, weights = model_code(state_dict)
    held_out = val_docs[:100]
    levels = [(f'uniform guess, ln {tokenizer.vocab_size}', math.log(tokenizer.vocab_size), GREY, '8 3')]
    if held_out:   # (a file of fewer than 10 documents holds none out)
        model = code.evaluate(held_out, tokenizer, weights, config)
        table = bigram_loss(tokenizer, config, train_docs, held_out)
        levels = [('validation loss after training', model, VERMILLION, '6 4'),
                  ('letter-pair table, all training names', table, GREEN, '2 3')] + levels
    finite = [v for v in losses if math.isfinite(v)] + [level for _, level, _, _ in levels]
    lo, hi = math.floor(2 * min(finite)) / 2, math.ceil(2 * max(finite)) / 2
    W, H, left, right, top, bottom = 820, 400, 60, 290, 40, 50

    def x(step):
        return left + (W - left - right) * (step - 1) / max(1, len(losses) - 1)

    def y(loss):
        return top + (H - top - bottom) * (hi - loss) / (hi - lo)

    def polyline(values, color, width, opacity=1.0):
        points = ' '.join(f'{x(i + 1):.1f},{y(v):.1f}' for i, v in enumerate(values) if math.isfinite(v))
        return (f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="{width}" '
                f'opacity="{opacity}"/>\n')

    body = [text(W / 2, 24, f'Training: the loss of each of {len(losses)} steps', 15, 'middle', bold=True)]
    for k in range(int(round((hi - lo) * 2)) + 1):   # a grid line every half nat
        level = lo + k / 2
        body += [line(left, y(level), W - right, y(level), '#dddddd'),
                 text(left - 8, y(level) + 4, f'{level:.1f}', 12, 'end')]
    every = max(1, len(losses) // 5)
    for step in range(every, len(losses) + 1, every):
        body += [line(x(step), H - bottom, x(step), H - bottom + 5),
                 text(x(step), H - bottom + 19, step, 12, 'middle')]
    body += [line(left, H - bottom, W - right, H - bottom), line(left, top, left, H - bottom),
             text((left + W - right) / 2, H - 12, 'training step', 12, 'middle'),
             text(16, (top + H - bottom) / 2, 'loss, nats per token', 12, 'middle', rotate=True),
             polyline(losses, SKY, 1, 0.6), polyline(moving_mean(losses, window), BLUE, 2.5)]
    legend = [('loss of each step (one name)', SKY, ''), (f'mean of the last {window} steps', BLUE, ''),
              ('on the report\'s 100 held-out names:', None, '')]
    for name, level, color, dash in levels:
        body.append(line(left, y(level), W - right, y(level), color, 2, dash))
        legend.append((f'{name}: {level:.4f}', color, dash))
    for k, (name, color, dash) in enumerate(legend):
        ly = top + 10 + 22 * k
        if color:
            body.append(line(W - right + 14, ly, W - right + 40, ly, color, 2.5, dash))
        body.append(text(W - right + (46 if color else 14), ly + 4, name, 12))
    return svg(W, H, 'Training curve of microgpt', body)


# --- 2. Attention ---------------------------------------------------------------------------------
def attention_maps(state_dict, tokenizer, config, name, layer=0):
    """One map per head: maps[head][query position] lists that position's attention weights over
    the positions 0..query, as the model reads BOS + name."""
    kv_cache, _ = read_text(state_dict, tokenizer, config, name)
    per_step = kv_cache[layer][2]   # each position appends one list per head, head 0 first
    positions = len(per_step) // config.n_head
    maps = [[] for _ in range(config.n_head)]
    for pos in range(positions):
        for head in range(config.n_head):
            maps[head].append([w.data for w in per_step[pos * config.n_head + head]])
    return maps


def attention(state_dict, tokenizer, config, name='emma', layer=0):
    """One heatmap per head: the position that looks (its query) down, the positions it looks at
    (their keys) across, each weight written in its cell; above the diagonal, the future."""
    maps = attention_maps(state_dict, tokenizer, config, name, layer)
    labels = ['.'] + list(name)
    n, cell, gap, left, top = len(labels), 46, 36, 40, 92
    side = n * cell
    W, H = left + config.n_head * (side + gap) - gap + 20, top + side + 44
    body = [text(W / 2, 24, f'Attention of layer {layer} reading "{name}", after BOS (.)', 15, 'middle', bold=True),
            text(W / 2, 44, 'rows: the position that looks (query); columns: the positions it looks at (keys)',
                 12, 'middle')]
    for head, rows in enumerate(maps):
        x0 = left + head * (side + gap)
        body.append(text(x0 + side / 2, top - 26, f'head {head}', 13, 'middle', bold=True))
        for j, ch in enumerate(labels):
            body += [text(x0 + (j + 0.5) * cell, top - 7, ch, 13, 'middle'),
                     text(x0 - 8, top + (j + 0.5) * cell + 5, ch, 13, 'end')]
        for q in range(n):
            for k in range(n):
                cx, cy = x0 + k * cell, top + q * cell
                if k > q:   # the future: no position looks ahead
                    body.append(rect(cx, cy, cell, cell, '#eeeeee', '#ffffff'))
                    continue
                fill = shade(rows[q][k])
                body += [rect(cx, cy, cell, cell, fill, '#ffffff'),
                         text(cx + cell / 2, cy + cell / 2 + 4, f'{rows[q][k]:.2f}', 12, 'middle', ink_on(fill))]
    body.append(text(W / 2, H - 14, 'grey: later positions, which a position never sees (causal attention)',
                     12, 'middle', GREY))
    return svg(W, H, f'Attention heatmaps of microgpt for "{name}"', body)


# --- 3. Embeddings --------------------------------------------------------------------------------
def principal_axes(vectors, count=2, steps=1000):
    """(each vector's coordinates along the axes, the axes, the share of the spread along each).
    The axes are the directions along which the vectors spread most (principal components), by
    power iteration: multiply a start vector by the covariance matrix again and again, and it
    turns towards the direction of largest spread; take that direction out, and repeat."""
    dim = len(vectors[0])
    mean = [sum(column) / len(vectors) for column in zip(*vectors)]
    centred = [[x - m for x, m in zip(v, mean)] for v in vectors]
    cov = [[sum(r[i] * r[j] for r in centred) / len(vectors) for j in range(dim)] for i in range(dim)]
    axes = []
    for _ in range(min(count, dim)):
        v = [1.0 / math.sqrt(dim)] * dim
        for _ in range(steps):
            v = [sum(c * x for c, x in zip(row, v)) for row in cov]
            for a in axes:   # keep it at right angles to the axes found already
                along = sum(x * y for x, y in zip(v, a))
                v = [x - along * y for x, y in zip(v, a)]
            size = math.sqrt(sum(x * x for x in v)) or 1.0
            v = [x / size for x in v]
        if max(v, key=abs) < 0:   # a direction has two signs: take the one whose largest part is +
            v = [-x for x in v]
        axes.append(v)
    total = sum(cov[i][i] for i in range(dim)) or 1.0
    shares = [sum(a[i] * sum(cov[i][j] * a[j] for j in range(dim)) for i in range(dim)) / total for a in axes]
    return [[sum(x * y for x, y in zip(c, a)) for a in axes] for c in centred], axes, shares


def embeddings(state_dict, tokenizer, vowels='aeiou'):
    """The token embeddings (rows of wte) on their two principal components, one scale for both,
    each point labelled with its token (BOS as '.'); vowels and consonants marked apart."""
    points, _, shares = principal_axes([[p.data for p in row] for row in state_dict['wte']])
    points = [p + [0.0] * (2 - len(p)) for p in points]   # (an embedding of one number has one axis)
    shares += [0.0] * (2 - len(shares))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    pad, size = 60, 440   # one scale for both axes: a distance reads the same either way
    W, H = size + 2 * pad, 80 + round(size * (max(ys) - min(ys)) / span) + 60

    def sx(v):
        return pad + size * (v - min(xs)) / span

    def sy(v):
        return 80 + size * (max(ys) - v) / span

    body = [text(W / 2, 24, 'Token embeddings (wte), on their two principal components', 15, 'middle', bold=True),
            text(W / 2, 44, 'tokens whose vectors point alike lie close together, as far as two directions show',
                 12, 'middle'),
            line(pad - 20, H - 40, W - pad + 20, H - 40, GREY),
            text(W - pad + 20, H - 22, f'component 1 ({shares[0]:.0%} of the spread)', 12, 'end', GREY),
            line(pad - 20, 70, pad - 20, H - 40, GREY),
            text(pad - 28, 70, f'component 2 ({shares[1]:.0%})', 12, 'end', GREY, rotate=True)]
    marks = [(sx(px) - 7, sy(py) - 7, sx(px) + 7, sy(py) + 7) for px, py in points]
    placed = list(marks)   # a label takes the first spot beside its mark that covers nothing drawn
    for i, (px, py) in enumerate(points):
        ch = token_name(tokenizer, i)
        x, y = sx(px), sy(py)
        body.append(circle(x, y, 6, ORANGE) if ch in vowels else diamond(x, y, 7, GREY) if i == tokenizer.bos
                    else rect(x - 5, y - 5, 10, 10, BLUE))
        spots = [(9, 5, 'start'), (-9, 5, 'end'), (9, -9, 'start'), (-9, -9, 'end'),
                 (9, 19, 'start'), (-9, 19, 'end')]
        free = [s for s in spots if not any(overlap(label_box(x, y, s, ch), b) for b in placed)]
        dx, dy, anchor = (free or spots)[0]   # (no free spot: the first, overlapping)
        placed.append(label_box(x, y, (dx, dy, anchor), ch))
        if (dx, dy, anchor) != spots[0]:   # moved: a thin line ties the label to its mark
            body.append(line(x, y, x + dx - (3 if anchor == 'start' else -3), y + dy - 5, GREY, 0.8))
        body.append(text(x + dx, y + dy, ch, 14, anchor, bold=ch in vowels, halo=True))
    legend = (('vowel', circle(W - 150, 70, 6, ORANGE)), ('consonant', rect(W - 155, 87, 10, 10, BLUE)),
              ('BOS (.)', diamond(W - 150, 114, 7, GREY)))
    for k, (name, mark) in enumerate(legend):
        body += [mark, text(W - 138, 75 + 22 * k, name, 12)]
    return svg(W, H, 'Token embeddings of microgpt, projected to two dimensions', body)


def label_box(x, y, spot, label):
    dx, dy, anchor = spot
    width = 9 * len(label)
    x0 = x + dx if anchor == 'start' else x + dx - width
    return x0, y + dy - 12, x0 + width, y + dy + 2


def overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --- 4. Next-letter odds at three temperatures ----------------------------------------------------
def next_token_odds(state_dict, tokenizer, config, prefix, temperatures):
    """For each temperature T: the probability of each token after BOS + prefix, as generate()
    draws it, softmax(logits / T)."""
    _, logits = read_text(state_dict, tokenizer, config, prefix)
    odds = []
    for t in temperatures:
        e = [math.exp((s - max(logits)) / t) for s in logits]
        odds.append([x / sum(e) for x in e])
    return odds


def next_letter(state_dict, tokenizer, config, prefix='em', temperatures=(0.5, 1.0, 2.0)):
    """Bars: the model's odds for the token after `prefix`, side by side at each temperature, the
    tokens in order of their odds at the middle temperature."""
    odds = next_token_odds(state_dict, tokenizer, config, prefix, temperatures)
    order = sorted(range(tokenizer.vocab_size), key=lambda i: -odds[len(odds) // 2][i])
    top_p = max(max(o) for o in odds)
    W, H, left, top, bottom = 900, 380, 56, 76, 56
    group = (W - left - 20) / len(order)
    bar = (group - 4) / len(temperatures)

    def y(p):
        return top + (H - top - bottom) * (1 - p / top_p)

    body = [text(W / 2, 24, f'What comes after "{prefix}": the odds of each token at {len(temperatures)} temperatures',
                 15, 'middle', bold=True),
            text(W / 2, 44, 'below 1 the likeliest get likelier; above 1 the odds even out (. is the end of the name)',
                 12, 'middle')]
    for k in range(6):
        p = top_p * k / 5
        body += [line(left, y(p), W - 20, y(p), '#dddddd'), text(left - 6, y(p) + 4, f'{p:.2f}', 11, 'end')]
    for g, i in enumerate(order):
        x0 = left + g * group + 2
        for t, o in enumerate(odds):
            body.append(rect(x0 + t * bar, y(o[i]), bar, H - bottom - y(o[i]), BARS[t % len(BARS)]))
        body.append(text(x0 + group / 2 - 2, H - bottom + 18, token_name(tokenizer, i), 13, 'middle'))
    body.append(line(left, H - bottom, W - 20, H - bottom))
    for t, temp in enumerate(temperatures):
        lx = W - 20 - 95 * (len(temperatures) - t)
        body += [rect(lx, H - 24, 12, 12, BARS[t % len(BARS)]), text(lx + 16, H - 14, f'T = {temp:g}', 12)]
    body.append(text(left, H - 14, 'probability of the next token', 12, color=GREY))
    return svg(W, H, f'Next-token probabilities of microgpt after "{prefix}" at several temperatures', body)


# --- 5. A computation graph -----------------------------------------------------------------------
def graph(root, names, title='A computation graph: each Value with its data and grad'):
    """Draw the graph behind root, as micrograd's draw_dot does with graphviz: each Value a box
    with its data and grad, each edge labelled with its local derivative. `names` maps a name
    (what the box says, e.g. 'p = a*b') to each Value of the graph, leaves first, in the order to
    stack them; the edges call a Value by its name's part before ' ='."""
    name_of = {id(v): n for n, v in names.items()}
    nodes = [v for v in names.values() if not v._children] + root.graph()
    for v in nodes:
        for u in (v,) + tuple(v._children):
            if id(u) not in name_of:
                raise ValueError(f"graph(): `names` has no name for {u!r}, which {root!r} depends on")
    depth, row = {}, {}
    for v in nodes:   # leaves in column 0, each computed Value one right of its deepest input
        depth[id(v)] = 1 + max((depth[id(c)] for c in v._children), default=-1)
        row[id(v)] = sum(row[id(c)] for c in v._children) / len(v._children) if v._children else len(row)
    bw, bh, col, gap = 150, 64, 250, 96
    W = 40 + col * max(depth.values()) + bw + 40
    H = 100 + gap * (max(row.values()) + 1)
    pos = {i: (40 + col * depth[i], 70 + gap * row[i]) for i in depth}
    body = [text(W / 2, 26, title, 15, 'middle', bold=True),
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
            'orient="auto"><path d="M 0 0 L 10 5 L 0 10 z" fill="#000000"/></marker></defs>\n']
    for v in nodes:
        for c, local in zip(v._children, v._local_grads):
            (x1, y1), (x2, y2) = pos[id(c)], pos[id(v)]
            ax, ay, bx, by = x1 + bw, y1 + bh / 2, x2, y2 + bh / 2
            lx, ly = ax + 0.4 * (bx - ax), ay + 0.4 * (by - ay)   # nearer the input: apart from its siblings
            derivative = f"d{name_of[id(v)].split(' =')[0]}/d{name_of[id(c)].split(' =')[0]} = {local:g}"
            body += [f'<line x1="{ax:.1f}" y1="{ay:.1f}" x2="{bx:.1f}" y2="{by:.1f}" stroke="#000000" '
                     f'marker-end="url(#arrow)"/>\n',
                     text(lx, ly - 11, derivative, 12, 'middle', VERMILLION, halo=True)]
    for v in nodes:
        x, y = pos[id(v)]
        body += [f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw}" height="{bh}" rx="8" fill="#ffffff" '
                 f'stroke="{BLUE}" stroke-width="2"/>\n',
                 text(x + bw / 2, y + 20, name_of[id(v)], 14, 'middle', bold=True),
                 text(x + bw / 2, y + 38, f'data {v.data:g}', 12, 'middle'),
                 text(x + bw / 2, y + 55, f'grad {v.grad:g}', 12, 'middle', BLUE)]
    body.append(text(W / 2, H - 14, 'on each edge, its local derivative; in each box, grad = d(output)/d(that Value)',
                     12, 'middle', GREY))
    return svg(W, H, title, body)


def chain_rule_graph():
    """The walkthrough's example by hand, L = (a*b + c)^2 at a = 2, b = -3, c = 10, after backward()."""
    a, b, c = microgpt.Value(2.0), microgpt.Value(-3.0), microgpt.Value(10.0)
    p = a * b
    s = p + c
    L = s ** 2
    L.backward()
    return graph(L, {'a': a, 'b': b, 'c': c, 'p = a*b': p, 's = p + c': s, 'L = s^2': L},
                 'The computation graph of L = (a*b + c)^2, with every gradient')


# --- The script -----------------------------------------------------------------------------------
def run_lesson(flags):
    """Run microgpt.py as the command line would, quietly; returns what it leaves: its globals."""
    argv, sys.argv = sys.argv, [os.path.join(ROOT, 'microgpt.py')] + flags
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return runpy.run_path(sys.argv[0], run_name='__main__')
    finally:
        sys.argv = argv


def draw_all(ns):
    """Every figure the run's objects allow: name -> SVG text (no curve for a loaded model). The
    name read is "emma", or, for a vocabulary without its letters, the first four tokens."""
    sd, tok, config = ns['state_dict'], ns['tokenizer'], ns['config']
    name = 'emma' if set('emma') <= set(tok.chars) else ''.join(tok.chars[:4])
    name = name[:config.block_size - 1]
    drawn = {}
    if 'losses' in ns:
        drawn['training_curve'] = training_curve(ns['losses'], sd, tok, config, ns['train_docs'], ns['val_docs'])
    drawn['attention'] = attention(sd, tok, config, name)
    drawn['embeddings'] = embeddings(sd, tok)
    drawn['next_letter'] = next_letter(sd, tok, config, name[:2])
    drawn['graph'] = chain_rule_graph()
    return drawn


def write_atomically(path, content):
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'w', encoding='utf-8', newline='\n') as f:
            f.write(content)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    parser = argparse.ArgumentParser(description='Draw the trained model as SVG figures.')
    parser.add_argument('--load', default='', help='a checkpoint made with microgpt.py --save')
    parser.add_argument('--out', default=os.path.join(ROOT, 'figures'), help='folder to write into')
    args = parser.parse_args(argv)
    with microgpt.one_line_errors():   # a bad file or folder: one line, before any training
        os.makedirs(args.out, exist_ok=True)
        microgpt.require(os.access(args.out, os.W_OK), f"--out {args.out}: cannot write there")
        ns = run_lesson(['--load', args.load, '--num-samples', '0'] if args.load else [])
        for name, content in draw_all(ns).items():
            path = os.path.join(args.out, name + '.svg')
            write_atomically(path, content)
            print(f'wrote {path}')


if __name__ == '__main__':
    main()
