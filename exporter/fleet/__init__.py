"""Fleet mode: one standalone exporter reads a database's processlist and serves the
server-side facts; sidecars ask it instead of the database.

The serving side is ``exporter.fleet.server``, the document exchanged
``exporter.fleet.wire``, and a sidecar's side a session source like the others,
``exporter.sessions.fleet_client``. The database's cost is one read per interval however
many sidecars there are, and each sidecar receives only its own sessions.
"""

FLEET_PATH = "/fleet/sessions"
FLEET_PASSWORD_ENV = "MYSQL_IDLE_EXPORTER_FLEET_PASSWORD"  # noqa: S105 (a variable name)
# Default of --fleet.fresh-interval: reads forced by sidecars' new connections start at
# least this far apart, so a burst of new connections across the fleet costs the database
# one read per interval.
DEFAULT_FRESH_INTERVAL_SECONDS = 1.0
