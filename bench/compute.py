"""Compute workloads of `cargo xtask bench`, run unchanged under native python3, in each
sandbox variant and under Pyodide. The runner appends `report("<name>")`; that prints the
seconds the workload's own work took, measured inside the interpreter (start-up and
compilation of this file are not part of it). Each workload checks its result, so a side that
computes something else fails instead of looking fast."""

import json
import re
import time


def nbody(steps=50_000):
    # Five bodies under gravity, advanced with a fixed time step (semi-implicit Euler).
    bodies = [
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 39.478],
        [4.841, -1.160, -0.103, 0.606, 2.811, -0.025, 0.0377],
        [8.343, 4.125, -0.403, -1.010, 1.825, 0.008, 0.0113],
        [12.894, -15.111, -0.223, 1.082, 0.868, -0.011, 0.0017],
        [15.379, -25.919, 0.179, 0.979, 0.594, -0.034, 0.0020],
    ]
    pairs = [(bodies[i], bodies[j]) for i in range(5) for j in range(i + 1, 5)]
    dt = 0.01
    for _ in range(steps):
        for a, b in pairs:
            dx = a[0] - b[0]
            dy = a[1] - b[1]
            dz = a[2] - b[2]
            d2 = dx * dx + dy * dy + dz * dz
            mag = dt / (d2 * d2**0.5)
            bm = b[6] * mag
            am = a[6] * mag
            a[3] -= dx * bm
            a[4] -= dy * bm
            a[5] -= dz * bm
            b[3] += dx * am
            b[4] += dy * am
            b[5] += dz * am
        for body in bodies:
            body[0] += dt * body[3]
            body[1] += dt * body[4]
            body[2] += dt * body[5]
    momentum = sum(body[3] * body[6] for body in bodies)
    assert momentum == momentum and abs(momentum) < 1e3, momentum


def json_roundtrip(records=50_000):
    # Encode a list of small dicts to JSON text and decode it again.
    data = [
        {"id": n, "name": "record %d" % n, "score": n / 7, "tags": ["x", "y", str(n % 13)], "ok": n % 2 == 0}
        for n in range(records)
    ]
    text = json.dumps(data)
    back = json.loads(text)
    assert back == data and len(text) > records * 50


def regex(megabytes=1):
    # Find every address-like token in about a megabyte of generated text, then substitute.
    words = []
    size = 0
    while size < megabytes * 1_000_000:
        word = "alpha%d beta.%d mail%d@site%d.test" % (len(words), len(words) * 3, len(words), len(words) % 11)
        words.append(word)
        size += len(word) + 1
    n = len(words)
    text = " ".join(words)
    found = re.findall(r"([a-z]+\d+)@([a-z]+\d+)\.test", text)
    assert len(found) == n, (len(found), n)
    replaced = re.sub(r"\bbeta\.(\d+)", r"<\1>", text)
    assert replaced.count("<") == n


def dict_churn(entries=200_000):
    # Fill a dict of string keys, look every key up, update, and delete half of them.
    table = {}
    for n in range(entries):
        table["key%d" % n] = n
    total = 0
    for n in range(entries):
        total += table["key%d" % n]
    for n in range(0, entries, 2):
        table["key%d" % n] += 1
    for n in range(1, entries, 2):
        del table["key%d" % n]
    assert len(table) == entries // 2 and total == entries * (entries - 1) // 2


WORKLOADS = {"nbody": nbody, "json": json_roundtrip, "regex": regex, "dict": dict_churn}


def report(name):
    started = time.perf_counter()
    WORKLOADS[name]()
    print(time.perf_counter() - started)
