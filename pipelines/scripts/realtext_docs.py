# Real text from ../shared/data/text (C4 and Wikipedia samples, Shakespeare, a Chinese novel) as
# a documents Parquet table in the ds-ingest schema, for runs that need text a tiny model cannot
# exhaust (the scaling demo: ds-synth's templated corpus stops improving near 0.6 bits per byte).
#   python3 pipelines/scripts/realtext_docs.py ../shared/data/text work/realtext/docs
import gzip, json, hashlib, sys, pyarrow as pa, pyarrow.parquet as pq
root, out = sys.argv[1], sys.argv[2]
texts = []
for line in gzip.open(f"{root}/c4_sample.jsonl.gz", "rt"):
    texts.append(("c4", json.loads(line)["text"]))
def chunks(name, text, size=3000):
    paras, cur = text.split("\n"), ""
    for p in paras:
        cur += p + "\n"
        if len(cur) >= size:
            texts.append((name, cur)); cur = ""
    if cur.strip(): texts.append((name, cur))
chunks("wiki", gzip.open(f"{root}/wiki_sample.txt.gz", "rt").read())
chunks("shakespeare", open(f"{root}/tinyshakespeare.txt").read())
chunks("zh", gzip.open(f"{root}/zh_hongloumeng.txt.gz", "rt").read(), 1500)
ids = [hashlib.md5(f"{s}{i}".encode()).hexdigest() for i, (s, _) in enumerate(texts)]
table = pa.table({
    "id": pa.array(ids, pa.string()), "dump": pa.array(["REALTEXT"] * len(texts)),
    "url": pa.array([f"file://{s}/{i}" for i, (s, _) in enumerate(texts)]), "domain": pa.array([s for s, _ in texts]),
    "date": pa.array([""] * len(texts)), "lang": pa.array(["zh" if s == "zh" else "en" for s, _ in texts], pa.string()),
    "lang_score": pa.array([1.0] * len(texts), pa.float32()), "text": pa.array([t for _, t in texts]),
})
import os; os.makedirs(out, exist_ok=True)
pq.write_table(table, f"{out}/part-00000.parquet")
print(len(texts), "documents", sum(len(t.encode()) for _, t in texts), "bytes")
