#!/usr/bin/env python3
"""A Django project's manage.py, as `django-admin startproject` writes it: the driver
matrix runs `python manage.py idlecheck` (tests/support/drivers/__init__.py has the
contract)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "idleapp.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
