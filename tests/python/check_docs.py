"""Checks that documents Parquet written by ds-ingest opens unchanged in pyarrow, polars and
duckdb, has the documents schema, and that each folder's manifest accounts for every record.

Usage: python3 tests/python/check_docs.py DOCS_DIR [DOCS_DIR ...]
"""
import json
import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq

SCHEMA = {
    "id": "string", "dump": "string", "url": "string", "domain": "string",
    "date": "string", "lang": "string", "lang_score": "float", "text": "string",
}


def check(folder: Path) -> int:
    parts = sorted(folder.glob("part-*.parquet"))
    assert parts, f"{folder}: no part files"
    table = pq.read_table(parts)
    got = {f.name: str(f.type) for f in table.schema}
    assert got == SCHEMA, f"{folder}: schema {got}"
    frame = pl.read_parquet(folder / "part-*.parquet")
    assert frame.height == table.num_rows
    assert frame["id"].n_unique() == frame.height, f"{folder}: duplicate ids"
    rows = duckdb.sql(f"select count(*) from read_parquet('{folder}/part-*.parquet')").fetchall()[0][0]
    assert rows == table.num_rows
    manifest = json.loads((folder / "_manifest.json").read_text())
    c = manifest["counts"]
    assert c["read"] == c["kept"] + c["removed"] + c["quarantined"], c
    assert c["kept"] == table.num_rows, (c, table.num_rows)
    quarantined = sorted((folder / "quarantine").glob("*.parquet"))
    q_rows = pq.read_table(quarantined).num_rows if quarantined else 0
    assert q_rows == c["quarantined"], (q_rows, c)
    print(f"{folder}: {table.num_rows} documents; pyarrow, polars and duckdb agree; "
          f"manifest read {c['read']} = kept {c['kept']} + removed {c['removed']} + quarantined {c['quarantined']}")
    return table.num_rows


if __name__ == "__main__":
    folders = [Path(p) for p in sys.argv[1:]]
    if not folders:
        sys.exit("usage: check_docs.py DOCS_DIR [DOCS_DIR ...]")
    total = sum(check(f) for f in folders)
    print(f"{len(folders)} passed, 0 failed: {total} documents")
