"""A SQLAlchemy 2 worker with PyMySQL and a connection pool: the matrix's contract
(tests/support/drivers/__init__.py).

DB_SETTING picks the pool's variant: "" (the defaults), "pool_pre_ping" (a ping at each
checkout) or "pool_recycle" (a connection older than DB_RECYCLE seconds is replaced at
checkout)."""

import os
import sys

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError


def main() -> int:
    env = os.environ
    setting = env.get("DB_SETTING", "")
    options: dict[str, object] = {}
    if setting == "pool_pre_ping":
        options["pool_pre_ping"] = True
    elif setting == "pool_recycle":
        options["pool_recycle"] = float(env["DB_RECYCLE"])
    elif setting:
        raise SystemExit(f"unknown DB_SETTING {setting!r}")
    url = URL.create(
        "mysql+pymysql",
        username=env["DB_USER"],
        password=env["DB_PASSWORD"],
        host=env["DB_HOST"],
        port=int(env["DB_PORT"]),
        database=env["DB_NAME"],
    )
    engine = create_engine(url, pool_size=1, max_overflow=0, **options)

    def job() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())

    print(f"ready {job()}", flush=True)
    for line in sys.stdin:
        if line.strip() == "exit":
            break
        try:
            print(f"ok {job()}", flush=True)
        except DBAPIError as error:
            orig = error.orig
            code = orig.args[0] if orig is not None and orig.args else "-"
            print(f"error {code} {type(error).__name__} {orig!r}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
