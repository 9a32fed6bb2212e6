"""ds-ingest on make bench-ingest's pages (real text from ../shared/data in generated page
layouts, as Common Crawl-like WARC and WET files): every record accounted for in the manifest,
every WET text back byte for byte, and on the WARC files the main text found with recall and
precision no lower than measured when the bench was written (1.000 and 0.927 on 10,000 pages),
less a margin, so that a change of extractor or of its settings that loses text shows here.

Usage: python3 tests/python/check_ingest_extraction.py DS_INGEST_BINARY
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "text"
sys.path.insert(0, str(ROOT / "bench" / "ingest"))
import bench  # noqa: E402

PAGES = 300
MIN_RECALL, MIN_PRECISION = 0.98, 0.90


def ingest(binary, folder, out):
    subprocess.run([binary, "--input", str(folder), "--output", str(out)], check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "_manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["read"] == counts["kept"] + counts["removed"] + counts["quarantined"], f"{out}: counts {counts}"
    assert counts["quarantined"] == 0, f"{out}: quarantined {counts}"
    return counts, bench.read_output(out)


def main():
    if not DATA.exists():
        print(f"SKIPPED: {DATA} not found (real text lives in ../shared/data)")
        return
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="ingest-extraction-") as tmp:
        work = Path(tmp)
        truth, wet_texts, _ = bench.write_corpus(DATA, PAGES, 2, work)
        counts, wet = ingest(binary, work / "wet", work / "out-wet")
        assert counts["kept"] == len(truth), f"WET: kept {counts['kept']} of {len(truth)} conversion records"
        wrong = [url for url, text in wet_texts.items() if wet.get(url) != text]
        assert not wrong, f"WET: {len(wrong)} texts differ from the records', first {wrong[0]}"
        counts, warc = ingest(binary, work / "warc", work / "out-warc")
        # Every page: request + response + metadata records, and a warcinfo a file.
        assert counts["read"] == 3 * PAGES + 2, f"WARC: read {counts['read']}"
        assert counts["kept"] == len(truth), f"WARC: kept {counts['kept']} of {len(truth)} HTML pages"
        removed = counts.get("removed_by_reason", {})
        assert removed.get("http_not_ok", 0) + removed.get("non_html", 0) == PAGES - len(truth), f"WARC: removed {removed}"
        recall, precision = bench.quality(warc, truth)
        print(f"ingest extraction: {len(truth)} pages, main-text recall {recall:.3f}, precision {precision:.3f}")
        assert recall >= MIN_RECALL and precision >= MIN_PRECISION, f"recall {recall:.3f} / precision {precision:.3f} below {MIN_RECALL} / {MIN_PRECISION}"


if __name__ == "__main__":
    main()
