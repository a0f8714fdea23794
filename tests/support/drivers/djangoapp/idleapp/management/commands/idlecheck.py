"""`manage.py idlecheck`: the matrix's contract (tests/support/drivers/__init__.py) for
Django. Each job runs as Django runs a request: its connection handling (close_old_connections,
which CONN_MAX_AGE and CONN_HEALTH_CHECKS act through) happens at the start and end of it."""

import sys

from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections, connection


def job() -> int:
    close_old_connections()  # what the request_started signal does
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            return int(cursor.fetchone()[0])
    finally:
        close_old_connections()  # what the request_finished signal does


class Command(BaseCommand):
    help = "Connect, then run a query for each line 'query' on standard input."

    def handle(self, *args: object, **options: object) -> None:
        print(f"ready {job()}", flush=True)
        for line in sys.stdin:
            if line.strip() == "exit":
                break
            try:
                print(f"ok {job()}", flush=True)
            except DatabaseError as error:
                code = error.args[0] if error.args else "-"
                print(f"error {code} {type(error).__name__} {error}", flush=True)
