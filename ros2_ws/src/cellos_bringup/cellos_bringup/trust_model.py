"""Who may publish which topic and call which service: the one table of the trust model
(docs/trust_model.md), and the SROS2 policy it makes for a launch plan.

Each node of the launch plan gets its own enclave, /cellos<node's fully qualified name>
(e.g. /cellos/line1/cell_01/vision), allowed exactly the topics and services of its executable
below. People and tools get roles of their own: ``operator`` (the actions that change what the
line does: hold and release, period, resync, energy override, models, drift reset, the
lifecycle manager, parameters) and ``monitor`` (read only: what RViz, the runner's monitor and
``ros2 topic echo`` read). With DDS-Security (a ROS 2 distro: ``ros2 security create_keystore``,
``create_enclave`` per path, ``create_permission`` with this policy, ROS_SECURITY_ENABLE=true,
ROS_SECURITY_STRATEGY=Enforce) a process outside its enclave's permissions cannot publish,
subscribe, serve or call. The PyPI wheels have no DDS-Security: there, this table is what the
nodes check by content and what the fuzz test holds them to, not an authentication.

Names: relative ones are in the node's namespace (as the node resolves them), '~/' is the
node's own name; '{line}' is the node's line namespace ('/line1'), '*' any one name token
(sros2 passes expressions to DDS as fnmatch patterns).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from cellos_bringup import launch_plan as plan

POLICY_VERSION = '0.2.0'   # sros2 policy format (sros2/policy/schemas/policy.xsd)
ENCLAVE_ROOT = '/cellos'


@dataclass(frozen=True)
class Rights:
    publish: tuple = ()
    subscribe: tuple = ()
    reply: tuple = ()        # services served
    request: tuple = ()      # services called


# what every node does besides its own work: log, parameters, clock, diagnostics
NODE = Rights(publish=('/rosout', '/parameter_events', '/diagnostics'), subscribe=('/parameter_events', '/clock'),
              reply=('~/describe_parameters', '~/get_parameter_types', '~/get_parameters', '~/list_parameters',
                     '~/set_parameters', '~/set_parameters_atomically', '~/get_type_description'))
# a managed (lifecycle) node: its state machine's services, served to the lifecycle manager
LIFECYCLE = Rights(publish=('~/transition_event',),
                   reply=('~/change_state', '~/get_state', '~/get_available_states', '~/get_available_transitions',
                          '~/get_transition_graph'))

# executable -> what its node does (in its namespace)
NODES: dict[str, Rights] = {
    'coordinator_node': Rights(
        publish=('line_state', 'line_markers', '{line}/*/timing/correction', '/audit/operator_action'),
        subscribe=('{line}/*/timing/cycle', '{line}/*/vision/drift', '{line}/*/energy/gate', 'plant/state'),
        reply=('hold_cell', 'set_line_period', 'resync')),
    'plant_node': Rights(publish=('plant/state',), subscribe=('{line}/*/timing/cycle',)),
    'timing_node': Rights(publish=('timing/cycle',), subscribe=('timing/correction',)),
    'arbiter_node': Rights(
        publish=('arbiter/result', 'inference/request'),
        subscribe=('arbiter/request', 'inference/result', '/*/executor/status', 'energy/gate')),
    'vision_node': Rights(
        publish=('arbiter/request', 'vision/inspection', 'vision/annotated', 'vision/drift'),
        subscribe=('arbiter/result', 'vision/feedback', 'timing/cycle', 'camera/image'),
        reply=('vision/reset_drift',)),
    'energy_gate_node': Rights(publish=('energy/gate',), subscribe=('/site/energy_feed',),
                               reply=('energy/defer',)),
    'executor_node': Rights(
        publish=('~/status', '~/registry', '/*/*/inference/result', '/audit/operator_action'),
        subscribe=('/*/*/inference/request', '/site/energy_feed'),
        reply=('~/load_model', '~/unload_model', '~/list_models')),
    'energy_feed_node': Rights(publish=('energy_feed', '/audit/operator_action'), reply=('set_override',)),
    'audit_recorder_node': Rights(subscribe=(
        '{line}/*/vision/inspection', '{line}/*/arbiter/result', '{line}/*/energy/gate', '{line}/*/vision/drift',
        '{line}/*/timing/correction', 'line_state', '/*/executor/status', '/*/executor/registry',
        '/site/energy_feed', '/audit/operator_action')),
    'lifecycle_manager': Rights(
        reply=('~/startup', '~/shutdown', '~/is_active'),
        request=('/*/change_state', '/*/get_state', '/*/*/change_state', '/*/*/get_state',
                 '/*/*/*/change_state', '/*/*/*/get_state')),
}
MANAGED = set(NODES) - {'lifecycle_manager'}

# roles of people and tools (enclave, node name): absolute names
ROLES: dict[str, Rights] = {
    # operator actions: each changes what the line does, so each is an operator's decision
    'operator': Rights(
        request=('/*/hold_cell', '/*/set_line_period', '/*/resync', '/*/set_override', '/*/executor/load_model',
                 '/*/executor/unload_model', '/*/executor/list_models', '/*/*/vision/reset_drift',
                 '/*/*/energy/defer', '/*/lifecycle_manager/startup', '/*/lifecycle_manager/shutdown',
                 '/*/lifecycle_manager/is_active', '/*/*/set_parameters', '/*/*/*/set_parameters',
                 '/*/*/get_parameters', '/*/*/*/get_parameters', '/*/*/list_parameters',
                 '/*/*/*/list_parameters', '/*/*/describe_parameters', '/*/*/*/describe_parameters'),
        subscribe=('/diagnostics', '/*/line_state', '/*/line_markers', '/site/energy_feed')),
    # read only: RViz, the runner's monitor, dashboards
    'monitor': Rights(
        subscribe=('/diagnostics', '/rosout', '/*/line_state', '/*/line_markers', '/*/plant/state',
                   '/*/*/timing/cycle', '/*/*/vision/inspection', '/*/*/vision/annotated', '/*/*/vision/drift',
                   '/*/*/energy/gate', '/*/executor/status', '/*/executor/registry', '/site/energy_feed',
                   '/audit/operator_action'),
        publish=('/rosout',)),
}


def rights_of(executable: str) -> Rights:
    own = NODES[executable]
    parts = [NODE, own] + ([LIFECYCLE] if executable in MANAGED else [])
    return Rights(*(tuple(dict.fromkeys(x for p in parts for x in getattr(p, f))) for f in
                    ('publish', 'subscribe', 'reply', 'request')))


def line_namespace(spec: plan.NodeSpec) -> str:
    """The line a node belongs to ('/line1' for /line1/cell_01/vision), '' for site-wide nodes."""
    parts = [p for p in spec.namespace.split('/') if p]
    return '/' + parts[0] if parts and spec.namespace not in (plan.EXECUTOR_NS, plan.SITE_NS) else ''


def expand(name: str, spec: plan.NodeSpec) -> str:
    return name.replace('{line}', line_namespace(spec) or '/*')


@dataclass
class Enclave:
    path: str
    namespace: str
    node: str
    rights: Rights
    expand_for: plan.NodeSpec | None = field(default=None, repr=False)


def enclaves(specs: list[plan.NodeSpec], roles: bool = True) -> list[Enclave]:
    out = [Enclave(ENCLAVE_ROOT + s.fqn, s.namespace, s.name, rights_of(s.executable), s) for s in specs]
    if roles:
        out += [Enclave(f'{ENCLAVE_ROOT}/{role}', '/', role, rights) for role, rights in ROLES.items()]
    return out


def _list(tag: str, item: str, rules: dict, names) -> str:
    if not names:
        return ''
    attrs = ' '.join(f'{k}="{v}"' for k, v in rules.items())
    body = ''.join(f'\n            <{item}>{n}</{item}>' for n in names)
    return f'\n          <{tag} {attrs}>{body}\n          </{tag}>'


def policy_xml(specs: list[plan.NodeSpec], roles: bool = True) -> str:
    """The SROS2 policy (format POLICY_VERSION) of a launch plan, one enclave per node (and role)."""
    parts = []
    for e in enclaves(specs, roles):
        r = e.rights
        x = (lambda names: [expand(n, e.expand_for) for n in names]) if e.expand_for else list
        body = (_list('topics', 'topic', {'publish': 'ALLOW'}, x(r.publish))
                + _list('topics', 'topic', {'subscribe': 'ALLOW'}, x(r.subscribe))
                + _list('services', 'service', {'reply': 'ALLOW'}, x(r.reply))
                + _list('services', 'service', {'request': 'ALLOW'}, x(r.request)))
        parts.append(f'\n    <enclave path={quoteattr(e.path)}>\n      <profiles>\n'
                     f'        <profile ns={quoteattr(e.namespace)} node={quoteattr(e.node)}>{body}\n'
                     '        </profile>\n      </profiles>\n    </enclave>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!-- generated by cellos_bringup.trust_model.policy_xml from the launch plan: do not edit by hand -->\n'
            f'<policy version="{POLICY_VERSION}">\n  <enclaves>{"".join(parts)}\n  </enclaves>\n</policy>\n')


def default_plan() -> list[plan.NodeSpec]:
    """The plan the shipped policy is made for: `make run`'s line (line1, 4 cells, every part) and
    its lifecycle manager.
    """
    nodes = plan.line_nodes('line1', 4, with_executor=True, with_vision=True, with_energy=True, with_flow=True,
                            with_audit=True)
    return [*nodes, plan.manager_node('line1', nodes)]
