"""The application container of the pod tests: connects to the database named by the chart's
demo environment (DB_HOST, DB_PORT, DB_USER, MYSQL_PWD), runs one query, then holds the
connection idle for ever, like a worker that sleeps between jobs. It names its process
`shop-worker` so the exporter's `process` label can be checked.

The tests pass this file's text as `python -c` (the exporter's image has PyMySQL), so it
imports nothing from the repository.
"""

import ctypes
import os
import signal
import sys
import time

import pymysql

PR_SET_NAME = 15
# As PID 1 (no shared process namespace) SIGTERM would be ignored: the pod's stop would wait.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ctypes.CDLL(None).prctl(PR_SET_NAME, b"shop-worker", 0, 0, 0)
# The database starts after the pod (inside its network namespace): wait for it, with a limit.
deadline = time.monotonic() + 120
while True:
    try:
        connection = pymysql.connect(
            host=os.environ["DB_HOST"],
            port=int(os.environ["DB_PORT"]),
            user=os.environ["DB_USER"],
            password=os.environ.get("MYSQL_PWD", ""),
            ssl_disabled=True,
            connect_timeout=2,
        )
        break
    except pymysql.err.OperationalError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
with connection.cursor() as cursor:
    cursor.execute("SELECT 1")
print(f"connected from port {connection._sock.getsockname()[1]}", flush=True)
while True:
    signal.pause()
