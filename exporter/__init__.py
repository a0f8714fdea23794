"""mysql-idle-exporter: warns before MySQL/MariaDB drops an idle client session."""

__version__ = "0.1.0"
