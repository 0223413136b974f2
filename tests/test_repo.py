"""The repository's promises: notebooks stored clean, set-up files in step, `make lab` serves the course."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIRST_CELL = "import minisoftpick as msp\n\nFAST, DEVICE = msp.course.start(seed=0)"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = load(path)
    for i, cell in enumerate(code_cells(nb)):
        assert cell["outputs"] == [], f"{path.name}: code cell {i} has stored outputs"
        assert cell["execution_count"] is None, f"{path.name}: code cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_name_and_first_cell(path):
    assert re.fullmatch(r"\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb", path.name), path.name
    nb = load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "".join(code_cells(nb)[0]["source"]).strip() == FIRST_CELL
    assert nb["cells"][0]["cell_type"] == "markdown", "a notebook opens with its title and goals"


def test_notebooks_are_numbered_without_gaps():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1))


def test_every_notebook_is_in_the_readme_syllabus():
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        assert path.stem in readme, f"README.md's syllabus does not list {path.name}"


def test_readme_and_ci_use_the_same_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert re.search(r"^\s*time make test\s*$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_environment_yml_installs_the_lock_and_the_project():
    env = (ROOT / "environment.yml").read_text()
    assert "- -r requirements.lock" in env and "- -e ." in env
    python = re.search(r"- python=(\d+\.\d+)", env).group(1)
    assert f"Python {python}" in (ROOT / "requirements.lock").read_text().splitlines()[0]


def test_lock_pins_every_dependency_exactly():
    lock = [
        line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and line[0] not in "#-"
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^=\s;]+(; .+)?", line) for line in lock), lock
    pinned = {re.split(r"==", line)[0].lower().replace("_", "-") for line in lock}
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = re.findall(r'^\s+"([A-Za-z0-9_\-]+)[<>=!~]', pyproject, re.M)
    missing = {name.lower() for name in declared} - pinned
    assert not missing, f"pyproject.toml names dependencies requirements.lock does not pin: {missing}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_lab_serves_the_notebooks(tmp_path):
    port, token = free_port(), "minisoftpick-test"
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path)}
    server = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/contents?token={token}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    listing = json.load(reply)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
                time.sleep(1)
        assert {p.name for p in NOTEBOOKS} <= {item["name"] for item in listing["content"]}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as reply:
            assert reply.status == 200 and b"JupyterLab" in reply.read()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


DESIGN_DOC = ROOT / "docs" / "design.md"
CITATION = re.compile(r'docs/design\.md, \\?"([^"\\]+)\\?"')


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [
        ROOT / n for n in names.split() if Path(n).suffix in {".py", ".md", ".ipynb", ".sh", ".txt", ".toml"}
    ]


def test_no_file_cites_a_document_outside_the_repository():
    outside = [p.name for p in tracked_text_files() if re.search(r"DESIGN\.md|\.\./shared", p.read_text())]
    assert not outside, f"these files cite a design document that is not in the repository: {outside}"


def test_every_design_citation_names_a_section_of_docs_design():
    sections = set(re.findall(r"^## (.+)$", DESIGN_DOC.read_text(), flags=re.MULTILINE))
    cited = {(p.name, s) for p in tracked_text_files() for s in CITATION.findall(p.read_text())}
    assert cited, "no file cites docs/design.md"
    missing = sorted((name, s) for name, s in cited if s not in sections)
    assert not missing, f"citations of docs/design.md sections that do not exist: {missing}"
