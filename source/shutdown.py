"""Set when the process is asked to stop (SIGTERM): no new HTTP attempts are started."""

import threading

STOP_REQUESTED = threading.Event()
