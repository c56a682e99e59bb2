"""Every QoS profile of the graph, in one table. README "QoS" mirrors this file.

topic                        reliability  durability       depth  deadline / liveliness
cell_i/timing/cycle          best effort  volatile         5      none; automatic, 1 s
    latest report matters, a late retransmit is worse than none; no DDS deadline: its timer
    would be restarted by every report on both sides (1600 a second at 32 cells x 50 Hz),
    the coordinator times the silence itself (core.line_coordinator.check_lost)
cell_i/timing/cycle (watch)  best effort  volatile         50     none requested
    monitors: match any period, keep a burst
cell_i/timing/correction     best effort  volatile         1      none offered; automatic, 1 s
    each correction carries the absolute schedule, so a lost one is replaced by the next
line, gate state, feed       reliable     transient local  1      -
    state: late joiners (RViz, ros2 topic echo, a restarted cell) get the current value
inference request / result   reliable     volatile         100    -
    every request ends with exactly one result: nothing may be dropped by the transport
plant/state                  reliable     volatile         1      -
    full flow state in every message: only the latest counts, a backlog would make
    backpressure act on stale levels
status, markers              reliable     volatile         5      -
    what RViz and `ros2 topic echo` subscribe with by default
annotated image out          reliable     volatile         1      -
    reliable so RViz' default (reliable) subscription matches; depth 1 drops stale frames
camera image in              best effort  volatile         1      -
    sensor data: matches every camera driver, reliable or not
/diagnostics                 reliable     volatile         10     -
    diagnostic_updater's and diagnostic_aggregator's default
/audit/operator_action,      reliable     transient local  100    -
  <executor>/registry
    audit events: a recorder that (re)starts gets the recent ones; none is dropped by the transport
audit recorder (its side)    as offered   as offered       1000   -
    matches each topic's publisher; deep enough that a slow disk write loses nothing
"""
from rclpy.duration import Duration
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile,
                       ReliabilityPolicy)


def cycle_report(depth: int = 5) -> QoSProfile:
    """depth 1: the coordinator and the plant simulation, which after a stall must take each
    cell's latest report (with the cycles missed), not replay a backlog.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
        liveliness=LivelinessPolicy.AUTOMATIC, liveliness_lease_duration=Duration(seconds=1.0))


def cycle_watch() -> QoSProfile:
    """For tools that only watch the cycle reports (the runner's monitor, tests): a deeper
    queue, to keep a burst.
    """
    return _keep_last(50, reliable=False)


def correction() -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=1,
        reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
        liveliness=LivelinessPolicy.AUTOMATIC, liveliness_lease_duration=Duration(seconds=1.0))


def _keep_last(depth: int, reliable: bool, latched: bool = False) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def latched_state() -> QoSProfile:
    return _keep_last(1, reliable=True, latched=True)


def inference() -> QoSProfile:
    return _keep_last(100, reliable=True)


def plant_state() -> QoSProfile:
    return _keep_last(1, reliable=True)


def status() -> QoSProfile:
    return _keep_last(5, reliable=True)


def image_out() -> QoSProfile:
    return _keep_last(1, reliable=True)


def camera_in() -> QoSProfile:
    return _keep_last(1, reliable=False)


def diagnostics() -> QoSProfile:
    return _keep_last(10, reliable=True)


def audit_event() -> QoSProfile:
    return _keep_last(100, reliable=True, latched=True)


def recorder(reliable: bool, latched: bool = False) -> QoSProfile:
    """The audit recorder's subscription to a topic offered reliable or best effort, volatile or
    transient local (requesting transient local from a volatile publisher would not match).
    """
    return _keep_last(1000, reliable=reliable, latched=latched)
