"""A stand-in application for tests: holds MySQL connections and obeys stdin commands.

    python -m tests.support.worker NAME HOST PORT USER CONNECTIONS
    (password from WORKER_PASSWORD)

Commands, one per line: `query I` runs SELECT 1 on connection I and prints `ok I` or
`error I CODE`; `sql I STATEMENT` runs that statement instead; `busy I SECONDS` starts
SELECT SLEEP on connection I in a thread; `keepalive I SECONDS` sets TCP keepalive's first
probe on connection I's socket after SECONDS of silence (PyMySQL turns keepalive on with the
kernel's default, 7200 s), `keepalive I off` turns it off; `ports` prints the local ports;
`exit` quits. It names its process NAME so the exporter's process label can be checked.
WORKER_INTERACTIVE=1 makes its connections interactive clients.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

import pymysql


def main(argv: list[str]) -> int:
    name, host, port, user, count = argv[0], argv[1], int(argv[2]), argv[3], int(argv[4])
    ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)
    # WORKER_INTERACTIVE=1: connect as an interactive client (CLIENT_INTERACTIVE, as the
    # mysql/mariadb command-line clients do): the server then applies interactive_timeout.
    flags = pymysql.constants.CLIENT.INTERACTIVE if os.environ.get("WORKER_INTERACTIVE") else 0
    connections = [
        pymysql.connect(host=host, port=port, user=user, password=os.environ.get(
            "WORKER_PASSWORD", ""), autocommit=True, ssl_disabled=True, connect_timeout=5,
            client_flag=flags)
        for _ in range(count)
    ]
    for connection in connections:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    print("ready " + " ".join(str(c._sock.getsockname()[1]) for c in connections), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "exit":
            break
        if words[0] == "ports":
            print(" ".join(str(c._sock.getsockname()[1]) if c._sock else "-"
                           for c in connections), flush=True)
        elif words[0] == "sql":  # sql I STATEMENT...: any statement on connection I
            index, statement = int(words[1]), line.split(None, 2)[2]
            try:
                with connections[index].cursor() as cursor:
                    cursor.execute(statement)
                print(f"ok {index}", flush=True)
            except pymysql.err.Error as error:
                print(f"error {index} {error.args[0]}", flush=True)
        elif words[0] == "query":
            index = int(words[1])
            try:
                with connections[index].cursor() as cursor:
                    cursor.execute("SELECT 1")
                print(f"ok {index}", flush=True)
            except pymysql.err.Error as error:
                print(f"error {index} {error.args[0]}", flush=True)
        elif words[0] == "keepalive":
            index, sock = int(words[1]), connections[int(words[1])]._sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(words[2] != "off"))
            if words[2] != "off":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, int(words[2]))
            print(f"ok {index}", flush=True)
        elif words[0] == "busy":
            index, seconds = int(words[1]), float(words[2])

            def run(connection=connections[index], seconds=seconds) -> None:
                try:
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT SLEEP(%s)", (seconds,))
                except pymysql.err.Error:
                    pass

            threading.Thread(target=run, daemon=True).start()
            print(f"busy {index}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
