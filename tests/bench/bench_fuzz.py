"""Fuzz benchmark: the system test's fuzz (tests/fuzz_line.py) at a larger count per topic, every
family one after the other on one running line (the line family last: what it breaks stays
broken). One line:

BENCH fuzz messages=.. calls=.. crashes=.. processes_alive=../.. line_locked_after=0|1
      rejects_counted=.. faults_caught=.. families_whole=..

crashes: processes that died; line_locked_after: the line's cells locked again (and parts
conserved) after the last family; rejects_counted / faults_caught: the refusals and caught
exceptions the fuzzed nodes' 'boundary' diagnostics count; families_whole: the families after
which the line was whole (every process alive, locked, parts conserved, refusals counted).
"""
from __future__ import annotations

import os

from fuzz_line import FAMILIES, FuzzLine, settle, vision_answers

N = int(os.environ.get('CELLOS_FUZZ_MESSAGES', '600'))   # messages per topic


def test_fuzz_benchmark(tmp_path):
    line = FuzzLine(tmp_path)
    refused = faults = 0
    whole = []
    locked = 0
    try:
        line.start()
        line.wait_whole(150.0)
        for name, make in FAMILIES.items():
            family = make(N, line)
            if name == 'vision':
                line.responder_answer = vision_answers(line, N)
            sent = line.run(family)
            line.responder_answer = None
            try:
                result = settle(line, family)
            except AssertionError as e:
                print(f'fuzz {name}: {sent}; the line is not whole: {e}')
                continue
            refused += sum(result['refused'].values())
            faults += sum(result['faults'].values())
            ok = result['locked'] and result['conserved'] and all(result['refused'].values()) and not line.dead()
            print(f'fuzz {name}: {sent}, {result}')
            if ok:
                whole.append(name)
        try:
            state = line.wait_whole(45.0)
            locked = int(line.conserved(state))
        except AssertionError as e:
            print(f'after the fuzz: {e}')
        total = len(line.processes.procs)
        dead = line.dead()
        print(f'BENCH fuzz messages={line.messages} calls={line.calls} crashes={len(dead)} '
              f'processes_alive={total - len(dead)}/{total} line_locked_after={locked} rejects_counted={refused} '
              f'faults_caught={faults} families_whole={"+".join(whole) or "none"}')
        if dead:
            print(f'dead: {dead}')
    finally:
        line.close()
