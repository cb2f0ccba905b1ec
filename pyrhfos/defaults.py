"""Where things live on a node by default: lvs.cf, the pid file, pulse's control socket.

Shared by the pulse commands and piranha-gui; each is defined here only.
"""

from __future__ import annotations

CONFIG_PATHS = ("/etc/sysconfig/ha/lvs.cf", "/etc/lvs.cf")  # searched in this order
PIDFILE = "/var/run/pulse.pid"
SOCKET = "/var/run/pulse.sock"
