"""The socket side: local TCP sockets to the watched database ports and their owners."""
