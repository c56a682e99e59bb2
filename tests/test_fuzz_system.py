"""Fuzz over DDS: a running line (every node in its own process under its lifecycle manager) gets
a few hundred generated messages on every topic its nodes subscribe to, and every service they
serve is called with extreme arguments (tests/fuzz_messages.py: NaN, inf, negative and maximal
integers, unknown enum values, empty and huge strings and arrays, and mutants of valid
messages). After each node family: every process is alive, the line is locked again, parts are
conserved, and the refused inputs are counted in the family's 'boundary' diagnostics.

One test per node family; each family must leave the line whole.
"""
from __future__ import annotations

import pytest

from fuzz_line import FAMILIES, FuzzLine, settle, vision_answers

N = 200    # messages per topic (half generated from the type, half mutants of a valid message)


@pytest.fixture(scope='module')
def line(tmp_path_factory):
    fl = FuzzLine(tmp_path_factory.mktemp('fuzz'))
    try:
        fl.start()
        fl.wait_whole(150.0)
        yield fl
    finally:
        fl.close()


def fuzz(line: FuzzLine, name: str) -> dict:
    family = FAMILIES[name](N, line)
    sent = line.run(family)
    result = settle(line, family)
    print(f'fuzz {name}: {sent}, {result}')
    assert not line.dead(), f'process(es) died: {line.dead()}'
    assert result['locked'], 'line not locked after the fuzz'
    assert result['conserved'], 'parts not conserved'
    assert all(result['refused'].values()), f"refusals not counted: {result['refused']}"
    assert sent['unanswered'] == 0, f"{sent['unanswered']} service call(s) got no answer"
    return result


def test_vision_family(line):
    line.responder_answer = vision_answers(line, N)
    try:
        fuzz(line, 'vision')
    finally:
        line.responder_answer = None


def test_energy_family(line):
    result = fuzz(line, 'energy')
    assert not any(result['faults'].values()), f"exceptions reached the boundary: {result['faults']}"


def test_inference_family(line):
    result = fuzz(line, 'inference')
    assert not any(result['faults'].values()), f"exceptions reached the boundary: {result['faults']}"


def test_line_family(line):
    result = fuzz(line, 'line')
    assert not any(result['faults'].values()), f"exceptions reached the boundary: {result['faults']}"
