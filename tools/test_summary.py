#!/usr/bin/env python3
"""The end of `make test`: the counts of the unit tests (colcon test, one junit XML per package
in build/<package>/pytest.xml) and of the system tests (build/tests/pytest.xml), every skip
with its reason, every failure by name. Usage: tools/test_summary.py [build folder]
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Counts:
    passed: int = 0
    skipped: list = field(default_factory=list)    # (test, reason)
    failed: list = field(default_factory=list)     # test

    def text(self) -> str:
        return f'{self.passed} passed, {len(self.skipped)} skipped, {len(self.failed)} failed'


def read(xml: Path) -> Counts:
    out = Counts()
    for case in ET.parse(xml).getroot().iter('testcase'):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(':')
        skipped = case.find('skipped')
        if case.find('failure') is not None or case.find('error') is not None:
            out.failed.append(name)
        elif skipped is not None:
            out.skipped.append((name, (skipped.get('message') or skipped.text or '').strip()))
        else:
            out.passed += 1
    return out


def main(argv: list[str]) -> int:
    build = Path(argv[1] if len(argv) > 1 else 'build')
    units = {xml.parent.name: read(xml) for xml in sorted(build.glob('*/pytest.xml')) if xml.parent.name != 'tests'}
    system = build / 'tests' / 'pytest.xml'
    systems = {'tests/': read(system)} if system.is_file() else {}
    if not units and not systems:
        print(f'test summary: no results in {build}/*/pytest.xml')
        return 1
    rows = []
    for title, group in (('unit tests (colcon test)', units), ('system tests (pytest tests/)', systems)):
        if group:
            cs = list(group.values())
            total = Counts(sum(c.passed for c in cs), [x for c in cs for x in c.skipped],
                           [x for c in cs for x in c.failed])
            rows.append((title, total))
            if len(group) > 1:
                rows += [(f'  {name}', c) for name, c in group.items()]
    width = max(len(label) for label, _ in rows)
    print('\n=== make test: summary ===')
    for label, c in rows:
        print(f'{label:<{width}}  {c.text()}')
    everything = [*units.values(), *systems.values()]
    reasons: dict[str, list[str]] = {}
    for c in everything:
        for name, reason in c.skipped:
            reasons.setdefault(reason, []).append(name)
    if reasons:
        print('skipped, with the reason:')
        for reason, names in reasons.items():
            print(f'  {reason}')
            for name in names:
                print(f'    {name}')
    failures = [f for c in everything for f in c.failed]
    if failures:
        print('FAILED:')
        for name in failures:
            print(f'  {name}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
