"""The `mariadb` command-line client as a person runs it (on a terminal, so it is an
interactive client), driven through the matrix's contract (tests/support/drivers/__init__.py).

    python -m tests.support.drivers.mariadb_cli     (DB_* from the environment)

This wrapper only types into the client's terminal and reads what it prints: the client
process holds the connection, so the exporter sees `mariadb`. The password goes to the
client in MYSQL_PWD, never on its command line. What the client prints about a lost
connection before its automatic reconnect comes out as `event ERROR CODE`.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

PROMPT = "matrix> "
STATEMENT = "SELECT CONCAT('id=', CONNECTION_ID());"
_ID = re.compile(r"\bid=(\d+)\b")
_ERROR = re.compile(r"^ERROR (\d+) \(\w+\)", re.MULTILINE)


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        # In the wrapper's process group, so ending the group ends the client too.
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.buffer = ""

    def read_until_prompt(self, timeout: float = 60.0) -> str:
        """What the client printed up to its next prompt."""
        deadline = time.monotonic() + timeout
        while PROMPT not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise RuntimeError(f"no prompt from the client; it printed {self.buffer!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the client closed its terminal
                    chunk = b""
                self.buffer += chunk.decode(errors="replace").replace("\r\n", "\n")
        text, _, self.buffer = self.buffer.partition(PROMPT)
        return text

    def run(self, statement: str) -> str:
        os.write(self.master, statement.encode() + b"\n")
        return self.read_until_prompt()


def main() -> int:
    client = shutil.which("mariadb")
    if client is None:
        print("fatal the mariadb client is not installed (apt-get install mariadb-client)")
        return 2
    env = dict(os.environ)
    env.update(MYSQL_PWD=env["DB_PASSWORD"], TERM="dumb", HOME=env.get("HOME", "/"))
    argv = [
        client, "--no-defaults", f"--host={env['DB_HOST']}", f"--port={env['DB_PORT']}",
        f"--user={env['DB_USER']}", f"--prompt={PROMPT}", env["DB_NAME"],
    ]
    terminal = Terminal(argv, env)
    try:
        terminal.read_until_prompt()
        found = _ID.search(terminal.run(STATEMENT))
        if found is None:
            print("fatal no session id in the client's answer")
            return 1
        print(f"ready {found.group(1)}", flush=True)
        for line in sys.stdin:
            if line.strip() == "exit":
                break
            output = terminal.run(STATEMENT)
            errors = _ERROR.findall(output)
            found = _ID.search(output)
            # Errors the client printed before it reconnected and ran the statement again.
            for code in errors if found is not None else errors[:-1]:
                print(f"event ERROR {code}", flush=True)
            if found is not None:
                print(f"ok {found.group(1)}", flush=True)
            else:
                code = errors[-1] if errors else "-"
                text = " ".join(output.split())[-200:]
                print(f"error {code} ERROR {text}", flush=True)
    finally:
        terminal.process.kill()
        terminal.process.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
