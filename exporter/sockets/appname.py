"""The application a process runs, named the way an operator knows it (pure).

The name of an interpreter's process says only which interpreter runs it (`python3`,
`java`, `node`), so two applications on one host would share one `process` label and
their series would merge. For those the command line says what runs: the script or the
module (Python, Node.js, Ruby, Perl, PHP), the jar or the main class (Java). Any other
process keeps its name: a compiled program, a script started through its `#!` line (the
kernel names such a process after the script) and a process that renamed itself
(prctl PR_SET_NAME, Node's process.title).

A command line is whatever the process was started with, so it is untrusted input: the
parse never fails, and the label it gives is short (at most MAX_LENGTH characters) and
made of a small safe set of characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# Long enough for a module path or a Java class name, short enough for a label.
MAX_LENGTH = 64
# How much of /proc/PID/cmdline is read; what the label needs comes early, but a Java
# class path given in full can run to tens of kilobytes before the main class.
CMDLINE_LIMIT = 256 * 1024
# Script names that many applications share: they are named with their directory
# (`/srv/shop/manage.py` is `shop/manage.py`), where the command line gives one.
GENERIC_SCRIPTS = frozenset(
    {
        "manage.py", "__main__.py", "main.py", "app.py", "run.py", "server.py", "wsgi.py",
        "asgi.py", "worker.py", "index.js", "main.js", "app.js", "server.js", "index.mjs",
        "main.mjs", "index.cjs", "main.rb", "app.rb", "index.php", "console",
    }
)  # fmt: skip

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/@+-]")
_INTERPRETER = re.compile(r"([a-z]+)[0-9.]*")

# How an option's argument is given: "next" (attached to the option or the next word),
# "rest" (only attached: the rest of a cluster of short options, possibly empty).
Takes = Literal["next", "rest"]
# What an option's argument is: the program ("script", "module" for Python's -m, "jar"
# and "main" for Java's -jar and --module), or code given inline ("inline": nothing to
# name).
Role = Literal["value", "script", "module", "jar", "main", "inline"]


@dataclass(frozen=True, slots=True)
class _Grammar:
    """The options of one interpreter that matter for finding its program: those that
    take an argument, and those whose argument is the program or inline code. Any other
    word that starts with "-" is a flag."""

    options: dict[str, tuple[Takes, Role]]
    # Short options may be clustered (`-um celery`, `-rbundler/setup`).
    clusters: bool = True
    # A short option's argument may be attached without clustering (PHP's -dkey=value).
    attached: bool = False
    # Java: any word that starts with "@" is an argument file, an option too.
    argfiles: bool = False
    # Java: the first word that is not an option is the main class, not a script.
    positional: Role = "script"


def _opts(takes: Takes, role: Role, *names: str) -> dict[str, tuple[Takes, Role]]:
    return dict.fromkeys(names, (takes, role))


_PYTHON = _Grammar(
    {
        **_opts("next", "value", "-W", "-X", "-Q", "--check-hash-based-pycs"),
        **_opts("next", "module", "-m"),
        **_opts("next", "inline", "-c"),
        **_opts("rest", "inline", "--help", "--version", "-h", "-V", "-?"),
    }
)
_NODE = _Grammar(
    {
        **_opts(
            "next",
            "value",
            "-r", "--require", "--import", "--loader", "--experimental-loader", "-C",
            "--conditions", "--title", "--input-type", "--env-file", "--inspect-port",
            "--debug-port", "--redirect-warnings", "--openssl-config", "--icu-data-dir",
            "--diagnostic-dir", "--report-dir", "--report-directory", "--report-filename",
            "--report-signal", "--heapsnapshot-signal", "--unhandled-rejections",
            "--dns-result-order", "--disable-warning", "--watch-path", "--max-old-space-size",
            "--max-semi-space-size", "--stack-size", "--stack-trace-limit",
            "--max-http-header-size", "--secure-heap", "--secure-heap-min", "--tls-keylog",
        ),
        **_opts("next", "inline", "-e", "--eval", "-p", "--print"),
        **_opts("rest", "inline", "-i", "--interactive", "-h", "--help", "-v", "--version"),
    },
    clusters=False,
)  # fmt: skip
_JAVA = _Grammar(
    {
        **_opts(
            "next",
            "value",
            "-cp", "-classpath", "--class-path", "-p", "--module-path",
            "--upgrade-module-path", "--add-modules", "--limit-modules", "--add-reads",
            "--add-exports", "--add-opens", "--patch-module", "--enable-native-access",
            "--source",
        ),
        **_opts("next", "jar", "-jar"),
        **_opts("next", "main", "-m", "--module"),
        **_opts(
            "rest", "inline", "-version", "--version", "-help", "--help", "-h", "-?",
            "--list-modules", "-d", "--describe-module", "--dry-run",
        ),
    },
    clusters=False,
    argfiles=True,
    positional="main",
)  # fmt: skip
_RUBY = _Grammar(
    {
        **_opts("next", "value", "-I", "-r", "-C", "-E", "--encoding"),
        # -0 takes digits only, which are no options: it needs no entry. -v runs the
        # program given after it (verbosely), so it is a flag.
        **_opts("rest", "value", "-x", "-i", "-T", "-W", "-K", "-F"),
        **_opts("next", "inline", "-e"),
        **_opts("rest", "inline", "-h", "--help", "--version"),
    }
)
_PERL = _Grammar(
    {
        **_opts("next", "value", "-I"),
        # -0 and -l take digits only, which are no options: they need no entry.
        **_opts("rest", "value", "-i", "-C", "-D", "-d", "-M", "-m", "-x", "-V"),
        **_opts("next", "inline", "-e", "-E"),
        **_opts("rest", "inline", "-h", "-v"),
    }
)
_PHP = _Grammar(
    {
        **_opts("next", "value", "-c", "-d", "-z", "-t"),
        **_opts("next", "script", "-f"),
        **_opts("next", "inline", "-r", "-B", "-R", "-F", "-E", "-S"),
        **_opts("rest", "inline", "-a", "-h", "-v", "-i", "-m", "-l", "-s", "-w"),
    },
    clusters=False,
    attached=True,
)
_GRAMMARS: dict[str, _Grammar] = {
    "python": _PYTHON,
    "pypy": _PYTHON,
    "node": _NODE,
    "nodejs": _NODE,
    "java": _JAVA,
    "ruby": _RUBY,
    "perl": _PERL,
    "php": _PHP,
}


def interpreter(name: str) -> str | None:
    """The interpreter family a process name belongs to (`python3.11` is `python`), or None
    for any other program."""
    match = _INTERPRETER.fullmatch(name)
    if match is None or match.group(1) not in _GRAMMARS:
        return None
    return match.group(1)


def split_cmdline(raw: bytes) -> list[str]:
    """The words of /proc/PID/cmdline: NUL-separated, undecodable bytes replaced."""
    text = raw.decode("utf-8", errors="replace")
    words = text.split("\0")
    if words and words[-1] == "":
        words.pop()  # the terminating NUL
    return words


def application_name(name: str, argv: Sequence[str]) -> str:
    """The `process` label of a process called ``name`` (its comm, as psutil completes
    it) started with ``argv``: what the interpreter runs, else ``name`` itself."""
    family = interpreter(name)
    if family is None or len(argv) < 2:
        return name
    found = _program(_GRAMMARS[family], argv[1:])
    if found is None:
        return name
    role, value = found
    label = _label(role, value)
    return label if label is not None else name


def _program(grammar: _Grammar, words: Sequence[str]) -> tuple[Role, str] | None:
    """(role, argument) of the word that names the program, or None when the command line
    runs inline code, reads it from standard input, or names no program."""
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--":
            return (grammar.positional, words[index]) if index < len(words) else None
        if word == "-" or not word:
            return None  # the program comes from standard input (or is nothing)
        if grammar.argfiles and word.startswith("@"):
            continue
        if not word.startswith("-"):
            return grammar.positional, word
        option, attached = _split_option(grammar, word)
        if option is None:
            continue  # a flag (or a cluster of flags)
        takes, role = grammar.options[option]
        if attached is None and takes == "next":
            if index >= len(words):
                return None
            attached = words[index]
            index += 1
        if role == "inline":
            return None
        if role != "value":
            return role, attached or ""
    return None


def _split_option(grammar: _Grammar, word: str) -> tuple[str | None, str | None]:
    """(the option that takes an argument, its attached argument or None) for one word
    that starts with "-"; (None, None) when the word is only flags."""
    if word.startswith("--") or not grammar.clusters:
        head, equals, value = word.partition("=")
        if head in grammar.options:
            return head, (value if equals else None)
        if grammar.attached and word[:2] in grammar.options and not word.startswith("--"):
            return word[:2], word[2:]  # an attached value: -dmemory_limit=1G
        return None, None
    # A cluster of short options: flags until the first one that takes an argument,
    # whose argument is the rest of the cluster (or the next word when that is empty).
    for position in range(1, len(word)):
        option = "-" + word[position]
        if option in grammar.options:
            takes, _ = grammar.options[option]
            rest = word[position + 1 :]
            return option, (rest if rest or takes == "rest" else None)
    return None, None


def _label(role: Role, value: str) -> str | None:
    if role == "module":
        name = value
    elif role == "main":
        # --module NAME/CLASS names the main class after the slash; a main class is a
        # dotted name, given in full (the last part alone, Main or Application, is too
        # often the same).
        name = value.rpartition("/")[2] or value.partition("/")[0]
    else:
        name = _script(value)
    return _bounded(name)


def _script(path: str) -> str:
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        return ""
    base = parts[-1]
    if base in GENERIC_SCRIPTS and len(parts) > 1 and parts[-2] != "..":
        return f"{parts[-2]}/{base}"
    return base


def _bounded(name: str) -> str | None:
    """``name`` in safe characters and at most MAX_LENGTH of them (the end is kept: the
    file or class name is there), or None when nothing telling is left."""
    safe = _UNSAFE.sub("_", name)[-MAX_LENGTH:]
    if not safe.strip("._/-:"):
        return None
    return safe
