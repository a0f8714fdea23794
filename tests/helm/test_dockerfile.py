"""The Dockerfile, read as text: multi-stage, slim non-root final stage without compilers, the
console script as entrypoint, and a build context that holds what the build copies. The
image is built and run by tests/containers/test_image.py."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass, field

import yaml

from tests.support.helm import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6?-dev|[a-z0-9.+-]+-dev)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile() -> list[Stage]:
    """Instructions per stage, with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    defaults: dict[str, str] = {}  # ARGs before the first FROM: what FROM lines may use
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            defaults[name] = default
        if keyword == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                          lambda m: defaults[m.group(1) or m.group(2)], parts[0])
            stages.append(Stage(base=base, name=name))
        elif keyword != "ARG" or stages:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def console_script() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [name] = project["scripts"]
    return str(name)


def test_build_is_multi_stage() -> None:
    stages = parse_dockerfile()
    assert len(stages) >= 2
    final = stages[-1]
    copied_from = [re.search(r"--from=(\S+)", c) for c in final.all("COPY")]
    names = {s.name for s in stages[:-1]}
    assert any(m and m.group(1) in names for m in copied_from), "final stage copies no build"


def test_final_stage_is_python_slim() -> None:
    stages = parse_dockerfile()
    # By default; the tests build it with BASE_IMAGE set to a Debian base of their own.
    assert stages[-1].base.startswith("python:3.11-slim")
    assert "ARG BASE_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    # The venv's interpreter path must exist in the final image: same base in both stages.
    assert {s.base for s in stages} == {stages[-1].base}


def test_final_stage_runs_as_non_root() -> None:
    final = parse_dockerfile()[-1]
    users = final.all("USER")
    assert users, "final stage has no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]} must be a numeric non-root uid"
    # The chart runs the image with the same uid by default.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["exporter"]["securityContext"]["runAsUser"] == int(user)


def test_final_stage_has_no_build_tools() -> None:
    final = parse_dockerfile()[-1]
    for command in final.all("RUN"):
        assert not BUILD_TOOLS.search(command), f"build tool in final stage: {command}"
    assert not final.all("ADD"), "ADD in the final stage (use COPY --from)"


def test_entrypoint_is_the_console_script() -> None:
    final = parse_dockerfile()[-1]
    [entrypoint] = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == [console_script()], "use the exec form"
    assert not final.all("CMD"), "flags come from the chart's args"


def test_exposes_the_default_port() -> None:
    final = parse_dockerfile()[-1]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert final.all("EXPOSE") == [str(values["exporter"]["port"])] == ["9864"]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [path, *("/".join(path.split("/")[: i + 1]) for i in range(path.count("/")))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", ""))
               for c in candidates):
            result = not negate
    return result


def test_build_context_holds_what_the_build_copies() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources: list[str] = []
    for stage in parse_dockerfile():
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            sources += [s for s in copy.split()[:-1] if not s.startswith("--")]
    assert sources
    for source in sources:
        source = source.rstrip("/")
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not ignored(source, patterns), f"COPY {source} is excluded by .dockerignore"
    for path in ("exporter/cli.py", "pyproject.toml"):
        assert not ignored(path, patterns)
    for path in (".git", ".tools/bin/helm", ".venv", "tests/helm/conftest.py",
                 "exporter/__pycache__/cli.cpython-311.pyc", "helm/sync-files.sh"):
        assert ignored(path, patterns), f"{path} should stay out of the build context"
