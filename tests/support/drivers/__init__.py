"""The client programs of the driver matrix, one per driver, all with one contract.

Each is a real application-shaped process (its own interpreter or binary, so the exporter
labels it as it would label a user's application) that connects over TCP, works, idles and
uses its connection again when told:

- Environment: DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME; DB_SETTING picks the
  variant ("" is the driver's or framework's defaults), and variant-specific values come
  in other DB_* variables. The password is never on a command line.
- Standard output, one line each:
  - ``ready SESSION_ID`` once connected and a first ``SELECT CONNECTION_ID()`` has run;
  - for each line ``query`` on standard input, the same statement again, then
    ``ok SESSION_ID`` (a new id: the driver reconnected) or
    ``error CODE CLASS TEXT`` (CODE is the MySQL error number, ``-`` when the driver gives
    none; CLASS the exception's class, ``ERROR`` for a client that prints its errors);
  - ``event TEXT`` whenever the driver tells the application something on its own (Node's
    ``error`` event when the server resets the connection, the CLI's error message before
    it reconnects);
  - ``fatal TEXT`` when it cannot start.
- ``exit`` on standard input (or its end) ends it.

programs.py says how each is built and started; matrix.py runs them against throwaway
servers with the exporter watching.
"""
