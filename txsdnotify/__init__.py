"""
txsdnotify: Twisted web servers as first-class systemd services.

The parts, each usable alone:
  - L{Notifier}, L{notifyNow}: the notification client (C{NOTIFY_SOCKET}).
  - L{WebService}: serves a twisted.web L{Site} with readiness, live status
    and a draining stop; C{twistd -n sdweb} runs one.
  - L{RequestStats}, L{TrackingFactory}, L{Drain}: what the service is made of.
"""

from .drain import Drain, DrainResult
from .message import NotifyAddressError, formatMessage, parseAddress, sanitizeStatus
from .notify import Notifier, monotonicUsec, notifyNow
from .service import ListenError, ListenFailed, WebService
from .stats import RequestStats, StatusFigures, StatusSampler
from .tracking import TrackingFactory

__all__ = [
    "Drain",
    "DrainResult",
    "ListenError",
    "ListenFailed",
    "Notifier",
    "NotifyAddressError",
    "RequestStats",
    "StatusFigures",
    "StatusSampler",
    "TrackingFactory",
    "WebService",
    "formatMessage",
    "monotonicUsec",
    "notifyNow",
    "parseAddress",
    "sanitizeStatus",
]
