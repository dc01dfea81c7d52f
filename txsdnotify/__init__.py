"""
txsdnotify: Twisted servers as first-class systemd services.

The parts, each usable alone:
  - L{Notifier}, L{notifyNow}: the notification client (C{NOTIFY_SOCKET}).
  - L{Lifecycle}, L{State}: the one place that decides what systemd is
    told, as an explicit state machine.
  - L{WebService}: serves a twisted.web L{Site} with readiness, live status,
    reload, watchdog and a draining stop; C{twistd -n sdweb} runs one.
  - L{NotifyService}: readiness and stopping for any Twisted service tree.
  - L{WSGIApplication}: sdweb's WSGI container, a twisted.web resource.
  - L{RequestStats}, L{TrackingFactory}, L{Drain}, L{WatchdogService},
    L{ReloadHooks}: what the services are made of.
  - L{Metrics}: the figures for Prometheus (C{--metrics}).
  - L{txsdnotify.testing}: a real notification receiver and a recording
    notifier for your own tests.
"""

from txsdnotify.metrics import Metrics
from txsdnotify.ready import NotifyService, ReadinessConditions
from txsdnotify.reload import ReloadHooks, reopenAccessLog
from txsdnotify.service import ListenError, ListenFailed, WebService
from txsdnotify.systemd.activation import InheritedSocket, inheritedSockets
from txsdnotify.systemd.lifecycle import Lifecycle, State, StoppedBeforeReady
from txsdnotify.systemd.message import (
    NotifyAddressError,
    formatMessage,
    parseAddress,
    sanitizeStatus,
)
from txsdnotify.systemd.notify import Notifier, monotonicUsec, notifyNow
from txsdnotify.systemd.watchdog import WatchdogService, watchdogInterval
from txsdnotify.web.drain import Drain, DrainHook, DrainResult
from txsdnotify.web.stats import RequestStats, StatusFigures, StatusSampler
from txsdnotify.web.tracking import TrackingFactory
from txsdnotify.wsgi.container import WSGIApplication

__all__ = [
    "Drain",
    "DrainHook",
    "DrainResult",
    "InheritedSocket",
    "ListenError",
    "Lifecycle",
    "ListenFailed",
    "Metrics",
    "Notifier",
    "NotifyAddressError",
    "NotifyService",
    "ReadinessConditions",
    "ReloadHooks",
    "RequestStats",
    "StatusFigures",
    "State",
    "StatusSampler",
    "StoppedBeforeReady",
    "TrackingFactory",
    "WSGIApplication",
    "WatchdogService",
    "WebService",
    "formatMessage",
    "inheritedSockets",
    "monotonicUsec",
    "notifyNow",
    "parseAddress",
    "reopenAccessLog",
    "sanitizeStatus",
    "watchdogInterval",
]
