"""Credentials: my.cnf parsing, precedence, TLS options, and the password never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pymysql
import pytest

from exporter.sessions.connection import describe_error, ssl_kwargs
from exporter.sessions.credentials import (
    PASSWORD_ENV,
    ConfigError,
    Credentials,
    SslMode,
    SslOptions,
    load_credentials,
    read_my_cnf,
    unquote,
)

SECRET = "s3cr3t-P@ss#word"


def write(tmp_path: Path, text: str, name: str = "my.cnf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("not really a certificate\n")
    return path


def test_basic_client_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[client]\nuser=exporter\npassword=hunter22\nhost=db\nport=3307\n")
    creds = load_credentials(my_cnf=path, environ={})
    assert creds == Credentials("exporter", "hunter22", host="db", port=3307)


def test_mysql_syntax_variants(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = (
        "# leading comment\n"
        "; another comment\n"
        "[mysqld]\n"
        "user=mysql\n"
        "[client]\n"
        "  user = 'monitor'   # indented, quoted, trailing comment\n"
        f'password = "{SECRET}"\n'
        "loose-socket=/run/mysqld/mysqld.sock\n"
        "default-character-set=utf8mb4\n"
        "no-auto-rehash\n"
        "!include /etc/mysql/other.cnf\n"
        "!includedir /etc/mysql/conf.d/\n"
        "[client]\n"
        "host=::1\n"
    )
    path = write(tmp_path, text)
    with caplog.at_level(logging.WARNING):
        creds = load_credentials(my_cnf=path, environ={})
    assert creds.user == "monitor"
    assert creds.password == SECRET  # '#' inside quotes is kept
    assert creds.socket == "/run/mysqld/mysqld.sock"
    assert creds.host == "::1"
    warnings = [r.getMessage() for r in caplog.records]
    assert any("line 11: !include is not supported" in w for w in warnings), warnings
    assert any("line 12: !includedir" in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("  spaced  ", "spaced"),
        ("'single # not a comment'", "single # not a comment"),
        ('"double"', "double"),
        ("unquoted # comment", "unquoted"),
        ("with\\ttab", "with\ttab"),
        ("back\\\\slash", "back\\slash"),
        ("'it\\'s'", "it's"),
        ("\"mismatched'", "\"mismatched'"),
        ("", ""),
    ],
)
def test_unquote(raw: str, expected: str) -> None:
    assert unquote(raw) == expected


def test_option_names_with_underscores_and_dashes(tmp_path: Path, pem: Path) -> None:
    path = write(
        tmp_path,
        f"[client]\nuser=u\nssl_ca={pem}\nssl-verify-server-cert\n",
    )
    creds = load_credentials(my_cnf=path, environ={})
    assert creds.ssl == SslOptions(mode=SslMode.VERIFY_IDENTITY, ca=str(pem))
    path = write(tmp_path, f"[client]\nuser=u\nssl-ca={pem}\nssl_verify_server_cert=0\n")
    assert load_credentials(my_cnf=path, environ={}).ssl == SslOptions(
        mode=SslMode.VERIFY_CA, ca=str(pem)
    )


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # Nothing said: TLS when the server offers it, as the MySQL client does.
        ("", SslOptions(mode=SslMode.PREFERRED)),
        ("ssl-mode=DISABLED\n", None),
        ("ssl-mode=preferred\n", SslOptions(mode=SslMode.PREFERRED)),
        ("ssl-mode=REQUIRED\n", SslOptions(mode=SslMode.REQUIRED)),
        ("ssl\n", SslOptions(mode=SslMode.REQUIRED)),
        ("skip-ssl\n", None),
        ("ssl=0\n", None),
        ("ssl-ca={pem}\n", SslOptions(mode=SslMode.VERIFY_CA, ca="{pem}")),
        ("ssl-ca={pem}\nssl-mode=REQUIRED\n", SslOptions(mode=SslMode.REQUIRED, ca="{pem}")),
        ("ssl-ca={pem}\nssl-mode=VERIFY_IDENTITY\n",
         SslOptions(mode=SslMode.VERIFY_IDENTITY, ca="{pem}")),
        ("ssl-cert={pem}\nssl-key={pem}\n",
         SslOptions(mode=SslMode.REQUIRED, cert="{pem}", key="{pem}")),
    ],
)
def test_ssl_options(tmp_path: Path, pem: Path, lines: str, expected: SslOptions | None) -> None:
    path = write(tmp_path, "[client]\nuser=u\n" + lines.format(pem=pem))
    got = load_credentials(my_cnf=path, environ={}).ssl
    if expected is None:
        assert got is None
    else:
        assert got == SslOptions(
            mode=expected.mode,
            ca=expected.ca and expected.ca.format(pem=pem),
            cert=expected.cert and expected.cert.format(pem=pem),
            key=expected.key and expected.key.format(pem=pem),
        )


def test_precedence_flag_env_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[client]\nuser=fromfile\npassword=filepass\n")
    assert load_credentials(user="fromflag", my_cnf=path, environ={}).user == "fromflag"
    creds = load_credentials(my_cnf=path, environ={PASSWORD_ENV: "envpass"})
    assert (creds.user, creds.password) == ("fromfile", "envpass")
    # An empty variable does not wipe the file's password.
    assert load_credentials(my_cnf=path, environ={PASSWORD_ENV: ""}).password == "filepass"


def test_without_file(tmp_path: Path) -> None:
    creds = load_credentials(user="exporter", environ={PASSWORD_ENV: SECRET})
    assert creds == Credentials("exporter", SECRET)
    assert creds.ssl == SslOptions(mode=SslMode.PREFERRED)


def test_section_choice(tmp_path: Path) -> None:
    path = write(tmp_path, "[client]\nuser=a\n[client.db2]\nuser=b\n")
    assert load_credentials(my_cnf=path, section="client.db2", environ={}).user == "b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"user=x\npassword={SECRET}\n", "line 1: option outside of a [section]"),
        (f"[mysqld]\npassword={SECRET}\n", "no [client] section"),
        (f"[client]\npassword={SECRET}\nport=abc\n", "port: 'abc' is not a number"),
        (f"[client]\npassword={SECRET}\nport=70000\n", "port: '70000' is not a number"),
        (f"[client]\npassword={SECRET}\nssl-mode=SOMETIMES\n", "ssl-mode: 'SOMETIMES' is not one"),
        (f"[client]\npassword={SECRET}\nssl-verify-server-cert=maybe\n",
         "ssl-verify-server-cert: 'maybe' is not a boolean"),
        (f"[client]\npassword={SECRET}\nssl-ca=/nonexistent/ca.pem\n",
         "ssl-ca: /nonexistent/ca.pem: no such readable file"),
        (f"[client]\npassword={SECRET}\nssl-mode=VERIFY_CA\n", "VERIFY_CA needs ssl-ca"),
        (f"[client]\npassword={SECRET}\n", "no MySQL user given: pass --mysql.user or set user"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_credentials(my_cnf=path, environ={})
    text_of_error = str(info.value)
    assert message in text_of_error
    assert str(path) in text_of_error
    assert "\n" not in text_of_error
    assert "s3cr3t" not in text_of_error
    assert "s3cr3t" not in repr(info.value)
    # No chained exception (configparser's would quote the line) rides along.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_unreadable_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.cnf: cannot read: No such file"):
        read_my_cnf(tmp_path / "missing.cnf")
    with pytest.raises(ConfigError, match="cannot read: Is a directory"):
        read_my_cnf(tmp_path)


def test_cert_without_key(tmp_path: Path, pem: Path) -> None:
    path = write(tmp_path, f"[client]\nuser=u\nssl-cert={pem}\n")
    with pytest.raises(ConfigError, match="ssl-cert and ssl-key must be given together"):
        load_credentials(my_cnf=path, environ={})


def test_non_utf8_password_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "latin1.cnf"
    path.write_bytes(b"[client]\nuser=u\npassword=caf\xe9\n")
    creds = load_credentials(my_cnf=path, environ={})
    assert creds.password.encode("utf-8", errors="surrogateescape") == b"caf\xe9"


def test_password_never_shown() -> None:
    creds = Credentials("exporter", SECRET, SslOptions())
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds])):
        assert SECRET not in text
        assert "password=<set>" in text
    assert "password=<empty>" in repr(Credentials("exporter"))


def test_describe_error_masks_password() -> None:
    exc = pymysql.err.OperationalError(1045, f"Access denied (password {SECRET})")
    text = describe_error(exc, secret=SECRET)
    assert SECRET not in text
    assert text == "(1045) Access denied (password ***)"
    assert describe_error(pymysql.err.InterfaceError(0, "")) == "connection already closed"
    long = describe_error(RuntimeError("x" * 1000 + "\nsecond line"))
    assert len(long) <= 200 and "\n" not in long


def test_ssl_kwargs() -> None:
    assert ssl_kwargs(None) == {"ssl_disabled": True}
    assert ssl_kwargs(SslOptions(mode=SslMode.PREFERRED)) == {"ssl_disabled": False}
    assert ssl_kwargs(SslOptions(mode=SslMode.REQUIRED)) == {
        "ssl_disabled": False, "ssl": {"verify_mode": False, "check_hostname": False}}
    assert ssl_kwargs(SslOptions(mode=SslMode.VERIFY_IDENTITY, ca="/ca", cert="/c", key="/k")) == {
        "ssl_disabled": False,
        "ssl": {"verify_mode": True, "check_hostname": True, "ca": "/ca", "cert": "/c",
                "key": "/k"},
    }
    verify_ca = ssl_kwargs(SslOptions(mode=SslMode.VERIFY_CA, ca="/ca"))
    assert verify_ca["ssl"]["check_hostname"] is False


def test_ssl_options_validation() -> None:
    with pytest.raises(ValueError, match="use ssl=None"):
        SslOptions(mode=SslMode.DISABLED)
    with pytest.raises(ValueError, match="needs ssl-ca"):
        SslOptions(mode=SslMode.VERIFY_IDENTITY)
