"""The trust model's SROS2 policy: made from the one table for the launch plan, shipped as made,
valid in the sros2 policy format, and operator actions callable from the operator role only.
"""
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from lxml import etree

from cellos_bringup import launch_plan as plan
from cellos_bringup import trust_model as tm

SECURITY = Path(__file__).resolve().parents[1] / 'config' / 'security'
POLICY = SECURITY / 'cellos.policy.xml'
OPERATOR_ACTIONS = ['/line1/hold_cell', '/line1/set_line_period', '/line1/resync', '/site/set_override',
                    '/gpu0/executor/load_model', '/gpu0/executor/unload_model', '/line1/cell_01/vision/reset_drift',
                    '/line1/lifecycle_manager/startup', '/line1/lifecycle_manager/shutdown',
                    '/line1/coordinator/set_parameters', '/line1/cell_01/timing/set_parameters']


def schema():
    return etree.XMLSchema(etree.parse(str(SECURITY / 'sros2_policy_rules.xsd')))


def test_the_shipped_policy_is_the_one_the_table_makes():
    assert POLICY.read_text() == tm.policy_xml(tm.default_plan()), \
        'config/security/cellos.policy.xml is stale: regenerate it with trust_model.policy_xml(default_plan())'


def test_the_policy_is_valid_in_the_sros2_format():
    doc = etree.parse(str(POLICY))
    doc.xinclude()
    schema().assertValid(doc)
    enclaves = doc.getroot().findall('enclaves/enclave')
    assert {e.get('path') for e in enclaves} >= {'/cellos/operator', '/cellos/monitor',
                                                 '/cellos/line1/cell_01/vision', '/cellos/gpu0/executor'}
    assert len(enclaves) == len(tm.default_plan()) + len(tm.ROLES)


@pytest.mark.parametrize('mutate', [
    lambda r: r.set('version', '0.1.0'),
    lambda r: r.find('enclaves/enclave/profiles/profile/topics').set('publish', 'MAYBE'),
    lambda r: r.find('enclaves/enclave/profiles/profile').attrib.pop('node'),
    lambda r: r.find('enclaves/enclave/profiles/profile').append(etree.Element('parameters')),
])
def test_the_rules_refuse_what_sros2_refuses(mutate):
    doc = etree.parse(str(POLICY))
    mutate(doc.getroot())
    assert not schema().validate(doc)


def test_sros2_itself_loads_the_policy():
    sros2_policy = pytest.importorskip('sros2.policy', reason='sros2 is not installed: it ships with a ROS 2 '
                                       'distro only (no wheel); the rules test above stands in for it here')
    sros2_policy.load_policy(POLICY)


def allowed(enclave, kind: str, name: str) -> bool:
    patterns = getattr(enclave.rights, kind)
    if enclave.expand_for is not None:
        patterns = [tm.expand(p, enclave.expand_for) for p in patterns]
    fqn = f'{enclave.namespace.rstrip("/")}/{enclave.node}'
    full = [p.replace('~', fqn, 1) if p.startswith('~') else p if p.startswith('/')
            else f'{enclave.namespace.rstrip("/")}/{p}' for p in patterns]
    return any(fnmatchcase(name, p) for p in full)


def test_operator_actions_are_the_operator_role_only():
    enclaves = tm.enclaves(tm.default_plan())
    operator = next(e for e in enclaves if e.path == '/cellos/operator')
    for action in OPERATOR_ACTIONS:
        assert allowed(operator, 'request', action), action
        callers = [e.path for e in enclaves if e is not operator and allowed(e, 'request', action)]
        assert callers == [], f'{action} callable by {callers}'
    monitor = next(e for e in enclaves if e.path == '/cellos/monitor')
    assert not monitor.rights.request and monitor.rights.publish == ('/rosout',)


def test_the_feed_and_the_executor_speak_only_for_themselves():
    enclaves = tm.enclaves(tm.default_plan())
    publishers = {t: [e.path for e in enclaves if allowed(e, 'publish', t)]
                  for t in ('/site/energy_feed', '/line1/cell_01/energy/gate', '/line1/cell_01/inference/result',
                            '/line1/cell_01/timing/correction', '/line1/cell_01/arbiter/result')}
    assert publishers == {'/site/energy_feed': ['/cellos/site/energy_feed'],
                          '/line1/cell_01/energy/gate': ['/cellos/line1/cell_01/energy_gate'],
                          '/line1/cell_01/inference/result': ['/cellos/gpu0/executor'],
                          '/line1/cell_01/timing/correction': ['/cellos/line1/coordinator'],
                          '/line1/cell_01/arbiter/result': ['/cellos/line1/cell_01/arbiter']}


def test_every_executable_of_the_plan_has_its_rights():
    assert set(tm.NODES) == set(plan.PACKAGES)


def test_the_document_shows_the_table():
    doc = (Path(__file__).resolve().parents[4] / 'docs' / 'trust_model.md').read_text()
    rows = {line.split('`')[1]: line for line in doc.splitlines() if line.startswith('| ') and '(`' in line}
    assert set(rows) == set(tm.NODES)
    for exe, rights in tm.NODES.items():
        for name in (*rights.publish, *rights.subscribe, *rights.reply):
            assert f"`{name.replace('{line}', '<line>')}`" in rows[exe], f'{exe}: {name} missing in docs/trust_model.md'
