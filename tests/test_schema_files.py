"""The published JSON Schema files must match the pydantic models they are generated from."""

from schemas.generate import SCHEMA_DIR, schema_files


def test_schema_files_match_models() -> None:
    expected = schema_files()
    on_disk = {path.name: path.read_text() for path in SCHEMA_DIR.glob("*.schema.json")}
    assert on_disk.keys() == expected.keys(), "run: python -m schemas.generate"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale; run: python -m schemas.generate"
