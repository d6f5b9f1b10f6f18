"""Every results table in README.md and docs/ equals its rendering from benchmarks/results/*.csv."""

import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_renderer():
    spec = importlib.util.spec_from_file_location("render_tables", ROOT / "benchmarks" / "render_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_tables_match_the_csvs():
    stale = load_renderer().stale_tables()
    assert not stale, f"tables differ from their CSVs (run python benchmarks/render_tables.py): {stale}"


def test_a_changed_csv_value_is_detected(tmp_path, monkeypatch):
    renderer = load_renderer()
    results = tmp_path / "results"
    shutil.copytree(renderer.RESULTS, results)
    source = (renderer.RESULTS / "microbench_mace.csv").read_text()
    (results / "microbench_mace.csv").write_text(source.replace("99.792", "49.896"))
    monkeypatch.setattr(renderer, "RESULTS", results)
    assert renderer.stale_tables([ROOT / "docs" / "benchmarks_tp.md"]) == ["docs/benchmarks_tp.md: tp_mace"]


def test_every_marker_names_a_known_table():
    renderer = load_renderer()
    for path in renderer.DOCUMENTS:
        for match in renderer.MARKER.finditer(path.read_text()):
            assert match["name"] in renderer.RENDERERS, f"{path.name}: unknown table {match['name']}"
