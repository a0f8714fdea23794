"""The application label of a process, from its name and command line (pure)."""

from __future__ import annotations

import pytest

from exporter.sockets.appname import (
    MAX_LENGTH,
    application_name,
    interpreter,
    split_cmdline,
)

CASES = [
    # --- not interpreters: the name as it is ------------------------------------------
    ("mariadb", ["mariadb", "-h", "127.0.0.1"], "mariadb"),
    ("go-sql-client", ["/tmp/go-sql-client"], "go-sql-client"),
    # A script started through its #! line: the kernel names the process after it.
    ("celery", ["/usr/bin/python3", "/venv/bin/celery", "-A", "proj", "worker"], "celery"),
    # A process that renamed itself (prctl, process.title) keeps its new name.
    ("demo-worker", ["python3", "-m", "exporter.demo_worker"], "demo-worker"),
    ("pythonista", ["pythonista", "x.py"], "pythonista"),
    # --- Python -------------------------------------------------------------------------
    ("python3", ["python3", "manage.py", "runserver"], "manage.py"),
    ("python3", ["python3", "/srv/shop/manage.py", "runserver"], "shop/manage.py"),
    ("python3", ["python3", "./shop/./manage.py"], "shop/manage.py"),
    ("python3", ["python3", "../manage.py"], "manage.py"),
    ("python3.11", ["/usr/bin/python3.11", "-u", "/opt/jobs/nightly_report.py"],
     "nightly_report.py"),
    ("python3", ["python3", "-m", "celery", "-A", "proj", "worker"], "celery"),
    ("python3", ["python3", "-mcelery", "worker"], "celery"),
    ("python3", ["python3", "-um", "gunicorn.app.wsgiapp"], "gunicorn.app.wsgiapp"),
    ("python3", ["python3", "-W", "ignore", "-X", "dev", "sync.py"], "sync.py"),
    ("python3", ["python3", "-Wignore", "-OO", "sync.py"], "sync.py"),
    ("python3", ["python3", "--check-hash-based-pycs", "never", "sync.py"], "sync.py"),
    ("python3", ["python3", "-I", "--", "sync.py"], "sync.py"),
    ("python", ["python", "-c", "import app; app.run()"], "python"),
    ("python3", ["python3", "-uc", "print(1)"], "python3"),
    ("python3", ["python3"], "python3"),
    ("python3", ["python3", "-i"], "python3"),
    ("python3", ["python3", "-"], "python3"),
    ("python3", ["python3", "-m"], "python3"),
    ("python3", ["python3", "--version"], "python3"),
    ("pypy3", ["pypy3", "worker.py"], "worker.py"),
    # --- Java ---------------------------------------------------------------------------
    ("java", ["java", "-jar", "/opt/app/app.jar"], "app.jar"),
    ("java", ["java", "-Xmx512m", "-Dspring.profiles.active=prod", "-jar", "app.jar",
              "--server.port=8080"], "app.jar"),
    ("java", ["java", "-cp", "/a.jar:/b.jar", "com.example.Main", "arg"], "com.example.Main"),
    ("java", ["java", "-classpath", "lib/*", "-ea", "HikariClient"], "HikariClient"),
    ("java", ["java", "--class-path=lib/*", "com.example.Main"], "com.example.Main"),
    ("java", ["java", "@/tmp/args", "com.example.Main"], "com.example.Main"),
    ("java", ["java", "-p", "mods", "-m", "shop.app/com.shop.Main"], "com.shop.Main"),
    ("java", ["java", "--module=shop.app"], "shop.app"),
    ("java", ["java", "--add-opens", "java.base/java.lang=ALL-UNNAMED", "-jar", "x.jar"],
     "x.jar"),
    ("java", ["java", "-version"], "java"),
    ("java", ["java", "-cp"], "java"),
    # --- Node.js ------------------------------------------------------------------------
    ("node", ["node", "mysql2_client.js"], "mysql2_client.js"),
    ("node", ["node", "/app/dist/index.js"], "dist/index.js"),
    ("node", ["node", "--max-old-space-size", "4096", "-r", "dotenv/config", "server.mjs"],
     "server.mjs"),
    ("node", ["node", "--inspect=0.0.0.0:9229", "--require=ts-node/register", "api.ts"],
     "api.ts"),
    ("node", ["node", "/srv/api"], "api"),
    ("node", ["node", "."], "node"),
    ("node", ["node", "-e", "require('x')"], "node"),
    ("nodejs", ["nodejs", "app.js"], "app.js"),
    # --- Ruby, Perl, PHP ----------------------------------------------------------------
    ("ruby", ["ruby", "-Ilib", "-r", "bundler/setup", "bin/worker.rb"], "worker.rb"),
    ("ruby3.1", ["ruby3.1", "-w", "-e", "puts 1"], "ruby3.1"),
    ("ruby", ["ruby", "-v", "job.rb"], "job.rb"),
    ("ruby", ["ruby", "--version"], "ruby"),
    ("perl", ["perl", "-I", "lib", "-MDBI", "/opt/bin/sync.pl"], "sync.pl"),
    ("perl", ["perl", "-wle", "print 1"], "perl"),
    ("perl", ["perl", "-l012", "-0777", "slurp.pl"], "slurp.pl"),
    ("ruby", ["ruby", "-0777", "-x", "slurp.rb"], "slurp.rb"),
    ("php8.2", ["php8.2", "artisan", "queue:work"], "artisan"),
    ("php", ["php", "-dmemory_limit=1G", "-f", "/var/www/cron.php"], "cron.php"),
    ("php", ["php", "bin/console", "messenger:consume"], "bin/console"),
    ("php", ["php", "-S", "0.0.0.0:8000"], "php"),
    # --- hostile command lines ----------------------------------------------------------
    ("python3", ["python3", 'ev"l\\\n}{x="1"} 1.py'], "ev_l____x__1___1.py"),
    ("python3", ["python3", "\ufffd\ufffd.py"], "__.py"),
    ("python3", ["python3", "/a/b/"], "b"),
    ("python3", ["python3", "///"], "python3"),
    ("python3", ["python3", ".."], "python3"),
    ("python3", ["python3", "-m", "..."], "python3"),
    ("python3", ["python3", ""], "python3"),
    ("python3", ["python3", "x" * 10_000], "x" * MAX_LENGTH),
    ("java", ["java", "org." * 40 + "Main"], ("org." * 40 + "Main")[-MAX_LENGTH:]),
]


@pytest.mark.parametrize(("name", "argv", "label"), CASES)
def test_application_name(name: str, argv: list[str], label: str) -> None:
    assert application_name(name, argv) == label


@pytest.mark.parametrize(
    ("name", "family"),
    [("python3", "python"), ("python3.11", "python"), ("python", "python"),
     ("pypy3", "pypy"), ("node", "node"), ("nodejs", "nodejs"), ("java", "java"),
     ("perl5.36.0", "perl"), ("php8.2", "php"), ("ruby", "ruby"),
     ("python3-config", None), ("javac", None), ("celery", None), ("", None),
     ("Python3", None), ("3", None)],
)
def test_interpreter_families(name: str, family: str | None) -> None:
    assert interpreter(name) == family


def test_cmdline_words() -> None:
    assert split_cmdline(b"python3\0-m\0celery\0") == ["python3", "-m", "celery"]
    assert split_cmdline(b"python3\0\0x\0") == ["python3", "", "x"]
    # setproctitle-style: one word with spaces, no terminating NUL.
    assert split_cmdline(b"gunicorn: worker [app]") == ["gunicorn: worker [app]"]
    assert split_cmdline(b"py\xff\0") == ["py\ufffd"]
    assert split_cmdline(b"") == []
