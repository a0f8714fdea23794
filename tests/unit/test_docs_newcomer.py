"""What a newcomer reads first stays true: the README's Quick start runs in a root shell
without sudo and in a user's shell with it, the README says how to grant before it shows a
command against a real server, and docs/status.md documents every key of /status.json."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from exporter import advice
from exporter.status import NOTICE_KEYS, to_json
from tests.support.status import every_state_view

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
STATUS_DOC = (REPO / "docs/status.md").read_text(encoding="utf-8")


def quick_start() -> str:
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the Quick start has no sh block"
    return block.group(1)


def stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("with_sudo", [False, True], ids=["root shell, no sudo", "with sudo"])
def test_quick_start_runs_with_and_without_sudo(tmp_path: Path, with_sudo: bool) -> None:
    """Each command the Quick start runs is a stub that logs itself: the shell plumbing
    (finding sudo or doing without it) is what is tested, not apt or pip."""
    bin_dir, work, log = tmp_path / "bin", tmp_path / "checkout", tmp_path / "log"
    bin_dir.mkdir()
    work.mkdir()
    # Only the stubs are on PATH: coreutils are named by their full path.
    record = f'echo "${{0##*/}} $*" >> {log}'
    stub(bin_dir, "apt-get", record)
    # `python3 -m venv .venv` makes a .venv whose pip and command log themselves too.
    stub(bin_dir, "python3", f"""{record}
/bin/mkdir -p .venv/bin
for tool in pip mysql-idle-exporter; do
    printf '#!/bin/bash\\necho "${{0##*/}} $*" >> {log}\\n' > .venv/bin/$tool
    /bin/chmod +x .venv/bin/$tool
done""")
    if with_sudo:
        stub(bin_dir, "sudo", f'{record}\nexec "$@"')
    result = subprocess.run(["/bin/bash", "-e", "-c", quick_start()], cwd=work,
                            env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    ran = log.read_text().splitlines()
    apt = ["apt-get update", "apt-get install -y mariadb-server python3-venv"]
    if with_sudo:
        apt = [line for command in apt for line in (f"sudo {command}", command)]
    assert ran == [*apt, "python3 -m venv .venv", "pip install .",
                   "mysql-idle-exporter demo"], ran


def test_grants_come_before_the_first_real_server_command() -> None:
    grants = README.index("GRANT PROCESS ON *.* TO")
    first_run = README.index("mysql-idle-exporter --mysql.address=")
    assert grants < first_run
    assert README.index("## Quick start") < README.index("## Watching a real server") < (
        README.index("## Configuration"))
    assert README.index("## Running the tests") > README.index("## Configuration")


def test_the_readme_shows_the_status_page_and_inspect() -> None:
    assert "![The status page" in README and (REPO / "docs/status-page.png").is_file()
    why = README.split("## Why", 1)[1].split("## Quick start", 1)[0]
    assert "netstat" in why and "mysql-idle-exporter inspect" in why
    assert "only `/healthz` is open" in README


def keys(document: object) -> set[str]:
    """Every key of a JSON document, at any depth."""
    if isinstance(document, dict):
        return set(document) | {k for value in document.values() for k in keys(value)}
    if isinstance(document, list):
        return {k for value in document for k in keys(value)}
    return set()


def test_every_key_of_the_status_document_is_documented() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", STATUS_DOC))
    missing = keys(to_json(every_state_view())) - documented - {"idle", "active", "dropped",
                                                                 "at_risk", "phantom",
                                                                 "unmatched"}
    assert not missing, f"docs/status.md does not document {sorted(missing)}"
    for key in NOTICE_KEYS:
        assert f"`{key}`" in STATUS_DOC, key
    for tip in advice.ALL:
        assert f"`{tip.key}`" in STATUS_DOC, tip.key
