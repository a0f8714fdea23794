"""The chart's sidecar pod, run for real: the seed story seen from inside the pod as the
chart deploys it, and the privilege matrix, one pod per security setting
(tests/support/privilege_matrix.py), whose results are the table of docs/kubernetes.md.

All pods run at once, so the module costs one `wait_timeout` (10 s) plus start-up: about
25 s on top of the image (tests/containers/conftest.py). Set MYSQL_IDLE_EXPORTER_UPDATE_DOCS=1
to write the measured table into docs/kubernetes.md instead of comparing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containers import REPO, BuiltImage, Podman
from tests.support.privilege_matrix import (
    APP_PROCESS,
    CASES,
    HEADROOM,
    Case,
    Observation,
    doc_table,
    matrix_table,
    run_matrix,
    with_doc_table,
)

DOC = REPO / "docs" / "kubernetes.md"
UPDATE_DOCS = os.environ.get("MYSQL_IDLE_EXPORTER_UPDATE_DOCS") == "1"


@pytest.fixture(scope="module")
def matrix(
    podman: Podman, image: BuiltImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Observation]]:
    workdir: Path = tmp_path_factory.mktemp("pods")
    for observations in run_matrix(podman, image, CASES, workdir):
        yield {o.case.id: o for o in observations}


def test_seed_story_in_the_chart_pod(matrix: dict[str, Observation]) -> None:
    """The chart's defaults (same uid and gid, shared process namespace): the application's
    idle session goes idle, then at_risk, then dropped while the application holds it, and
    the drop is counted once, under the application's process name and pid."""
    seen = matrix["same-uid-and-gid"]
    timeline = [(round(s.seconds, 1), s.state()) for s in seen.samples]
    states = [state for _, state in timeline if state is not None]
    assert states, f"the exporter never saw the application's socket: {seen.log}"
    assert "idle" in states and "at_risk" in states and states[-1] == "dropped", timeline
    assert states.index("idle") < states.index("at_risk") < states.index("dropped"), timeline
    at_risk = [s for s in seen.samples if s.state() == "at_risk"]
    for sample in at_risk:  # (the server may keep an expired session a moment longer)
        [(labels, headroom)] = sample.target("mysql_idle_min_headroom_seconds")
        assert labels["process"] == APP_PROCESS and headroom <= HEADROOM, (labels, headroom)
    dropped = [s for s in seen.samples if s.state() == "dropped"]
    for sample in dropped:  # counted once, however often it is scraped
        assert sample.target("mysql_idle_sessions_dropped_total") == [
            ({"target": "127.0.0.1:3306", "process": APP_PROCESS}, 1.0)]
    assert len(dropped) >= 2, timeline
    assert seen.pids and seen.process_names
    assert seen.reasons == set() and seen.log_lines == []


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_privilege_case(matrix: dict[str, Observation], case: Case) -> None:
    seen = matrix[case.id]
    # The exporter runs with exactly what Kubernetes would grant its rendered securityContext.
    uid, gid, capabilities = seen.expected_exporter
    assert (seen.exporter.uid, seen.exporter.gid, seen.exporter.effective_caps) == (
        uid, gid, capabilities), seen.exporter
    assert seen.exporter.no_new_privs  # allowPrivilegeEscalation: false
    # Whatever the privileges: the socket, its state and its kernel idle time, and the drop.
    assert seen.sockets and seen.states and seen.idle_time, seen.log
    assert seen.drop_counted, [s.dropped_total() for s in seen.samples]
    # Owners: all of them, or none and the exporter says why, once.
    owner_columns = (seen.process_names, seen.pids, seen.rst_dropped)
    if seen.case.owners_visible:
        assert owner_columns == (True, True, True)
        assert seen.reasons == set() and seen.log_lines == []
    else:
        assert owner_columns == (False, False, False)
        assert seen.reasons == {seen.case.reason}
        [line] = seen.log_lines
        if seen.case.reason == "no_permission":
            assert "uid AND gid" in line and "CAP_DAC_READ_SEARCH" in line
        else:
            assert "shareProcessNamespace: true" in line


def test_the_docs_table_is_the_measured_matrix(matrix: dict[str, Observation]) -> None:
    measured = matrix_table([matrix[case.id] for case in CASES])
    text = DOC.read_text()
    if UPDATE_DOCS:
        DOC.write_text(with_doc_table(text, measured))
    assert doc_table(DOC.read_text()) == measured, (
        "docs/kubernetes.md's privilege matrix differs from what the pods showed; run "
        "MYSQL_IDLE_EXPORTER_UPDATE_DOCS=1 .venv/bin/pytest tests/containers/test_pod.py "
        f"to write it. Measured:\n{measured}"
    )
