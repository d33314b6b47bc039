"""The read-model figures (``cartwatch bench --only read-model``) at a small scale, against the
real test PostgreSQL: both stores hold every record, every query kind is timed, the floors are
judged. Its figures mean nothing; their shape does."""

import json

from cartwatch_dev.bench.read_model import QUERY_KINDS, ReadModelRun
from cartwatch_dev.bench.read_model_input import KINDS, Synthetic
from cartwatch_dev.bench.report import Report

from streams.operator.feed import DECODERS
from streams.operator.pgstore import PostgresReadModel
from streams.operator.store import ReadModel


def test_the_input_is_the_same_for_a_seed_and_every_record_decodes():
    data = Synthetic(300)
    records = list(data.records())

    assert records == list(Synthetic(300).records())
    assert records != list(Synthetic(300, seed=19).records())
    assert {kind for kind, _ in records} == set(KINDS)
    assert all(DECODERS[kind](value) is not None for kind, value in records)
    abandoned = [json.loads(value) for kind, value in records if kind == "abandoned"]
    assert len({doc["abandonment_id"] for doc in abandoned}) == 300
    assert {len(doc["cart"]["lines"]) for doc in abandoned} == {1, 2, 3, 4, 5}
    assert [doc["abandoned_at"] for doc in abandoned] == sorted(
        doc["abandoned_at"] for doc in abandoned)


def test_the_group_feeds_both_stores_times_every_query_and_judges_the_floors(
        postgres_database, tmp_path):
    report = Report(mode="quick", command="test")
    data = Synthetic(2_000)
    stores = {"sqlite": ReadModel(tmp_path / "read-model.sqlite3"),
              "pg": PostgresReadModel(postgres_database.url, postgres_database.password)}
    try:
        checks = ReadModelRun(data, stores, report, say=lambda _: None, repetitions=6).run()
    finally:
        for store in stores.values():
            store.close()

    expected = checks["expected_sizes"]
    assert expected["abandonments"] == 2_000 and checks["undecodable"] == 0
    assert checks["records"]["abandoned"] == 2_000
    for backend in ("sqlite", "pg"):
        found = checks["backends"][backend]
        assert {table: found["sizes"][table] for table in expected} == expected, backend
        assert found["feed"]["records_per_s"] > 0 and found["feed"]["x_pipeline"] > 0
        assert set(found["queries"]) == set(QUERY_KINDS)
        for kind, timing in found["queries"].items():
            assert timing["n"] == 6, (backend, kind)
            assert 0 < timing["p50_ms"] <= timing["p99_ms"] <= timing["max_ms"], (backend, kind)
        assert found["export"]["rows"] == expected["lines"], backend  # one line per SKU
    pg = checks["backends"]["pg"]["explain"]
    assert pg["search.product"]["trigram_index"] and pg["search.customer"]["trigram_index"], pg
    assert not checks["backends"]["sqlite"]["explain"]["search.product"]["trigram_index"]

    figures = {figure.key: figure for figure in report.figures}
    for backend in ("sqlite", "pg"):
        assert figures[f"r.keep.{backend}"].ok is not None  # judged against the pipeline
        for kind in QUERY_KINDS:
            assert figures[f"r.{kind}.{backend}"].value is not None
    assert figures["r.search.product.pg"].ok is not None
    assert figures["r.search.customer.pg"].ok is not None
    assert figures["r.search.product.sqlite"].ok is None  # the floor is PostgreSQL's
    assert "| read model, 2,000 abandonments | SQLite | PostgreSQL |" in report.table()
