"""Settings of the matrix's Django project: one MySQL database over TCP with mysqlclient.

DB_SETTING picks the variant: "" is a persistent connection (CONN_MAX_AGE=None, what
long-running workers are told to use), "conn_max_age" a connection that is replaced at the
next request once older than CONN_MAX_AGE, with CONN_HEALTH_CHECKS on."""

import os

SECRET_KEY = "driver-matrix-only"  # a test project: nothing to keep secret
INSTALLED_APPS = ["idleapp"]
USE_TZ = True
_SETTING = os.environ.get("DB_SETTING", "")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.mysql",
        "HOST": os.environ["DB_HOST"],
        "PORT": os.environ["DB_PORT"],
        "USER": os.environ["DB_USER"],
        "PASSWORD": os.environ["DB_PASSWORD"],
        "NAME": os.environ["DB_NAME"],
        "CONN_MAX_AGE": int(os.environ["DB_MAX_AGE"]) if _SETTING == "conn_max_age" else None,
        "CONN_HEALTH_CHECKS": _SETTING == "conn_max_age",
    }
}
