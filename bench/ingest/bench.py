#!/usr/bin/env python3
"""make bench-ingest: ds-ingest against datatrove and resiliparse on the same WET and WARC files.

The pages are built deterministically from the real text in ../shared/data/text: each page's
main text is paragraphs of one source (a C4 or CCNet document, a run of Wikipedia sentences,
a Shakespeare scene, a passage of the Chinese novel), set in one of four page layouts (a blog
with comments, a news story with ads between paragraphs, an old table layout with <br>
paragraphs, a wiki article with headings, a table of contents and an infobox) among
navigation, sidebars, related links, share buttons, cookie notices, scripts and styles. The
WARC files hold a request, a response and a metadata record a page, as Common Crawl's do (a
few responses are redirects or PDFs, and half the Chinese pages are GBK, declared in a <meta>
or not at all, as much of the Chinese web is); the WET files a conversion record a page with all of
the page's visible text, as Common Crawl's WET files do. One gzip member a record.

Tools, each on all files with 2 workers, timed as whole processes that read the files and
write Parquet:
  ours                     ds-ingest --threads 2 (WET: the records; WARC: readability's
                           algorithm through dom_smoothie)
  datatrove                WarcReader + ParquetWriter (warcio), 2 workers
  datatrove-trafilatura    WarcReader + Trafilatura(favour_precision=True) (FineWeb's
                           extractor) + ParquetWriter
  datatrove-readability    WarcReader + ReadabilityInscriptis (readability, the same
                           algorithm as ours) + ParquetWriter; not in the default list: it
                           needs Hugging Face's fork of readability-lxml, which is on GitHub
                           only (not reachable from the machines this was written on)
  resiliparse              FastWARC + resiliparse's extract_plain_text(main_content=True)
                           (NeMo Curator's default extractor) + pyarrow, 2 processes; on WET
                           files FastWARC alone
Printed per tool: documents written, documents/s and MB/s (uncompressed record bytes) of wall
time, documents per CPU-second (the process tree's user + system time: the figure that load
on the machine does not change), peak memory; for WARC also how well the main text was found:
recall (share of the main text's words the output keeps, counted as multisets) and precision
(share of the output's words that are the main text's or the title's), averaged over the
HTML pages (a page without output has recall 0 and no precision).

Needs: datatrove[io,processing], resiliparse, pyarrow, psutil in this Python.
Usage: python3 bench/ingest/bench.py --pages 10000 --ours target/release/ds-ingest
"""

import argparse
import collections
import gzip
import json
import os
import random
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import run_measured  # noqa: E402

DUMP = "CC-MAIN-2024-51"
TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]|[^\W_]+")
SITES = ["riverside-gazette.com", "thehomesteadblog.net", "cityhall-news.org", "gardening-corner.co.uk",
         "techbeat.io", "old-forum.example.net", "wiki.localhistory.org", "travelnotes.blog", "xinwen.example.cn"]
NAV = ["Home", "News", "Sports", "Business", "Opinion", "Culture", "Travel", "About us", "Contact", "Archive",
       "Subscribe", "Login", "Events", "Photos", "Podcasts", "Jobs", "Shop", "Help"]
FOOTER = ["Privacy policy", "Terms of use", "Cookie settings", "Advertise with us", "Careers", "Sitemap", "RSS"]
COMMENTERS = ["Mike R.", "anna_k", "Tom from Leeds", "J. Smith", "guest", "Rosa", "dave1971"]
COMMENTS = ["Great article, thanks for sharing!", "I completely disagree with the second point.",
            "Does anyone know where to find more information about this?", "This is exactly what I was looking for.",
            "Bookmarked. Will read again later.", "Not sure this is accurate, can you cite a source?"]
SCRIPT = ("window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);} "
          "gtag('js', new Date()); gtag('config', 'UA-000000-1'); "
          "(function(){var s=document.createElement('script');s.async=true;s.src='https://ads.example.com/show.js';"
          "document.head.appendChild(s);})(); var menu=document.querySelectorAll('.menu li');"
          "for(var i=0;i<menu.length;i++){menu[i].addEventListener('click',function(e){this.classList.toggle('open');});}")
STYLE = ("body{font-family:Helvetica,Arial,sans-serif;margin:0;color:#222}.site-header{background:#003366;color:#fff;"
         "padding:10px}.menu li{display:inline-block;margin:0 8px}.sidebar{float:right;width:300px}.post p{line-height:1.6}"
         ".footer{font-size:12px;color:#999;border-top:1px solid #ddd}.ad{background:#f4f4f4;text-align:center}")


def tokens(text):
    return TOKEN.findall(text.lower())


# ---- corpus -------------------------------------------------------------------------------


def sources(data_dir):
    """Lists of paragraphs, by source: each a candidate main text."""
    d = Path(data_dir)
    out = {"web": [], "wiki": [], "play": [], "zh": []}
    for name in ["c4_sample.jsonl.gz", "ccnet_head_0091.jsonl.gz"]:
        for line in gzip.open(d / name, "rt"):
            paras = [p.strip() for p in json.loads(line)["text"].split("\n") if p.strip()]
            if sum(len(p.split()) for p in paras) >= 60:
                out["web"].append(paras)
    sentence = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
    for article in gzip.open(d / "wiki_sample.txt.gz", "rt").read().split("\n"):
        sents = sentence.split(article.strip())
        out["wiki"].append([" ".join(sents[i : i + 4]) for i in range(0, len(sents), 4) if sents[i:i + 4]])
    speeches = [s.strip().replace("\n", " ") for s in (d / "tinyshakespeare.txt").read_text().split("\n\n") if s.strip()]
    out["play"] = [speeches[i : i + 12] for i in range(0, len(speeches), 12)]
    novel = [p.strip() for p in gzip.open(d / "zh_hongloumeng.txt.gz", "rt").read().split("\n") if len(p.strip()) > 30]
    out["zh"] = [novel[i : i + 8] for i in range(0, len(novel), 8)]
    return out


def main_text(rng, src):
    """(source kind, paragraphs) of one page: at least 60 words (150 characters of Chinese)."""
    while True:
        kind = rng.choices(["web", "wiki", "play", "zh"], weights=[55, 20, 10, 15])[0]
        paras = rng.choice(src[kind])
        if kind != "web":
            start = rng.randrange(max(1, len(paras) - 6))
            paras = paras[start : start + rng.randrange(3, 9)]
        paras = [p for p in paras if p]
        if (sum(map(len, paras)) >= 150) if kind == "zh" else (sum(len(p.split()) for p in paras) >= 60):
            return kind, paras


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def links(rng, words, n, prefix="/"):
    items = []
    for _ in range(n):
        label = " ".join(rng.sample(words, min(len(words), rng.randrange(3, 7)))).capitalize()
        items.append((f"{prefix}{rng.randrange(10**6)}", label))
    return items


def page(rng, i, src):
    """(url, html, visible text lines as a WET would hold them, title, main paragraphs)."""
    kind, paras = main_text(rng, src)
    site = SITES[-1] if kind == "zh" else rng.choice(SITES[:-1])
    if kind == "zh":  # link labels of two-character words, not whole unspaced paragraphs
        joined = "".join(paras)[:600]
        words = [joined[k : k + 2] for k in range(0, len(joined) - 1, 2)]
    else:
        words = [w for w in " ".join(paras).split() if w.isalpha()] or ["news", "story", "today", "local"]
    first = paras[0]
    title = first[:24] if kind == "zh" else " ".join(first.split()[:rng.randrange(5, 10)]).rstrip(".,;:")
    url = f"https://{site}/{rng.choice(['2024/05', 'articles', 'posts', 'wiki', 'story'])}/{i}-{rng.randrange(10**5)}"
    nav = rng.sample(NAV, rng.randrange(6, 12))
    related = links(rng, words, rng.randrange(4, 9))
    date = f"2024-0{rng.randrange(1, 10)}-{rng.randrange(10, 28)}"
    layout = rng.choice(["blog", "news", "table", "wiki"])
    visible = [title] + nav
    # Real pages carry far more markup than text (Common Crawl's HTML responses average tens of
    # KB): inline styles and scripts, structured data, icons, a menu of every section.
    css = "".join(f".c{rng.randrange(10**4)} .{rng.choice(['btn', 'card', 'col', 'row', 'nav'])}-{k}{{margin:{k % 9}px;padding:{k % 7}px {k % 5}px;color:#{rng.randrange(16**6):06x}}}" for k in range(rng.randrange(40, 160)))
    script = SCRIPT * rng.randrange(2, 8)
    ld = json.dumps({"@context": "https://schema.org", "@type": "Article", "headline": title, "datePublished": "2024-05-01",
                     "publisher": {"@type": "Organization", "name": site, "logo": {"@type": "ImageObject", "url": f"https://{site}/logo.png"}}})
    head = (f"<!DOCTYPE html><html lang=\"{'zh' if kind == 'zh' else 'en'}\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)} | {site}</title><meta name=\"viewport\" content=\"width=device-width\">"
            f"<meta name=\"description\" content=\"{esc(first[:150])}\"><link rel=\"stylesheet\" href=\"/static/main.css\">"
            f"<script type=\"application/ld+json\">{esc(ld)}</script><script>{script}</script><style>{STYLE}{css}</style></head>")
    icon = "<svg width=\"12\" height=\"12\" viewBox=\"0 0 24 24\"><path d=\"M12 2L2 7l10 5 10-5-10-5zm0 7.5L4.5 6 12 2.5 19.5 6 12 9.5z\"/></svg>"
    mega = "".join(f"<div class=\"mega-col\"><span>{n}</span><ul>" + "".join(f"<li><a href=\"{h}\">{esc(t)}</a></li>" for h, t in links(rng, words, rng.randrange(4, 10))) + "</ul></div>" for n in nav[:4])
    nav_html = "".join(f"<li class=\"menu-item\"><a href=\"/{n.lower().replace(' ', '-')}\">{icon}<span>{n}</span></a></li>" for n in nav) + f"<li class=\"mega\" style=\"display:none\">{mega}</li>"
    related_html = "".join(f"<li><a href=\"{h}\">{esc(t)}</a></li>" for h, t in related)
    footer_items = rng.sample(FOOTER, 4)
    footer = (f"<p>&copy; 2024 {site}. All rights reserved.</p><p>" + " | ".join(f"<a href=\"/{f.lower().replace(' ', '-')}\">{f}</a>" for f in footer_items) + "</p>")
    cookie = "<div id=\"cookie-banner\">We use cookies to improve your experience. By continuing to browse you agree to our <a href=\"/privacy\">privacy policy</a>. <button>Accept all</button></div>"
    body_paras = "".join(f"<p>{esc(p)}</p>" for p in paras)
    if layout == "blog":
        comments = rng.sample(COMMENTS, rng.randrange(0, 4))
        comment_html = "".join(f"<div class=\"comment\"><span class=\"author\">{rng.choice(COMMENTERS)}</span><p>{c}</p><a href=\"#reply\">Reply</a></div>" for c in comments)
        body = (f"<body>{cookie}<header class=\"site-header\"><a class=\"logo\" href=\"/\">{site}</a><nav><ul class=\"menu\">{nav_html}</ul></nav></header>"
                f"<div class=\"container\"><main><article class=\"post\"><h1>{esc(title)}</h1><div class=\"meta\">By {rng.choice(COMMENTERS)} on {date} &middot; {len(comments)} comments</div>"
                f"{body_paras}<div class=\"share\">Share this: <a href=\"#\">Facebook</a> <a href=\"#\">Twitter</a> <a href=\"#\">Email</a></div></article>"
                f"<section class=\"comments\"><h3>{len(comments)} Comments</h3>{comment_html}<form><textarea>Leave a reply</textarea><button>Post comment</button></form></section></main>"
                f"<aside class=\"sidebar\"><h3>Popular posts</h3><ul>{related_html}</ul><h3>Newsletter</h3><form>Sign up for our weekly newsletter <input type=\"email\"><button>Subscribe</button></form></aside></div>"
                f"<footer class=\"footer\">{footer}</footer></body></html>")
        visible += [f"By on {date}"] + paras + ["Share this: Facebook Twitter Email"] + comments + [t for _, t in related] + ["Sign up for our weekly newsletter"]
    elif layout == "news":
        chunks = []
        for k, p in enumerate(paras):
            chunks.append(f"<p>{esc(p)}</p>")
            if k % 3 == 2:
                h, t = rng.choice(related)
                chunks.append(f"<div class=\"ad\">Advertisement</div><p class=\"read-more\"><strong>Read more:</strong> <a href=\"{h}\">{esc(t)}</a></p>")
        body = (f"<body><div id=\"top-bar\"><a href=\"/\">{site}</a> <span>{date}</span> <a href=\"/subscribe\">Subscribe now</a></div><div id=\"nav\"><ul class=\"menu\">{nav_html}</ul></div>"
                f"<div id=\"main-content\"><div class=\"story-header\"><h1>{esc(title)}</h1><span class=\"byline\">Staff reporter</span></div><div class=\"story-body\">{''.join(chunks)}</div>"
                f"<div class=\"tags\">Tags: <a href=\"/t/1\">{nav[0]}</a>, <a href=\"/t/2\">{nav[1]}</a></div></div>"
                f"<div id=\"right-rail\"><div class=\"ad\">Advertisement</div><h4>Most read</h4><ol>{related_html}</ol></div>{cookie}<div id=\"footer\">{footer}</div></body></html>")
        visible += ["Staff reporter"] + paras + ["Advertisement", "Most read"] + [t for _, t in related]
    elif layout == "table":
        cells = "<br><br>\n".join(esc(p) for p in paras)
        nav_br = "<br>".join(f"<a href=\"/{n.lower()}\">{n}</a>" for n in nav)
        links_line = " - ".join(f"<a href=\"{h}\">{esc(t)}</a>" for h, t in related)
        body = (f"<body bgcolor=\"#ffffff\"><table width=\"100%\" border=\"0\"><tr><td colspan=\"2\"><font size=\"5\"><b>{site}</b></font></td></tr>"
                f"<tr><td width=\"180\" valign=\"top\" class=\"nav\">{nav_br}</td>"
                f"<td valign=\"top\"><font face=\"Verdana\" size=\"2\"><b>{esc(title)}</b><br><br>\n{cells}</font></td></tr>"
                f"<tr><td colspan=\"2\"><hr><small>Links: {links_line}</small><br><small>&copy; 2024 {site}</small></td></tr></table></body></html>")
        visible += paras + [t for _, t in related]
    else:
        sections, toc = [], []
        for k in range(0, len(paras), 2):
            heading = " ".join(paras[k].split()[:3]).strip(".,;:") or f"Part {k}"
            toc.append(heading)
            sections.append(f"<h2><span class=\"mw-headline\">{esc(heading)}</span><span class=\"edit\">[<a href=\"#edit\">edit</a>]</span></h2>"
                            + "".join(f"<p>{esc(p)}</p>" for p in paras[k : k + 2]))
        body = (f"<body><div id=\"mw-head\"><ul>{nav_html}</ul><form><input name=\"search\" placeholder=\"Search\"></form></div>"
                f"<div id=\"content\"><h1 id=\"firstHeading\">{esc(title)}</h1><div id=\"siteSub\">From {site}, the free local encyclopedia</div>"
                f"<table class=\"infobox\"><tr><th>Type</th><td>{nav[0]}</td></tr><tr><th>Updated</th><td>{date}</td></tr></table>"
                f"<div id=\"toc\"><h2>Contents</h2><ul>{''.join(f'<li>{k + 1} {esc(t)}</li>' for k, t in enumerate(toc))}</ul></div>"
                f"{''.join(sections)}<div class=\"catlinks\">Categories: <a href=\"/c/1\">{nav[1]}</a> | <a href=\"/c/2\">{nav[2]}</a></div></div>"
                f"<div id=\"footer\">This page was last edited on {date}. {footer}</div></body></html>")
        visible += ["Contents"] + toc + paras
    visible += [f"© 2024 {site}. All rights reserved."] + footer_items
    return url, head + body, visible, title, paras


def warc_record(headers, content):
    """One WARC record's bytes (its own gzip member is added by the caller)."""
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + f"Content-Length: {len(content)}\r\n\r\n"
    return head.encode() + content + b"\r\n\r\n"


def write_corpus(data_dir, n_pages, files, work, seed=1):
    """Writes work/warc/*.warc.gz and work/wet/*.warc.wet.gz. Returns, by URL of the HTML pages,
    (title, main paragraphs) and the WET record's text; and the uncompressed record bytes."""
    src = sources(data_dir)
    rng = random.Random(seed)
    uid = random.Random(seed + 1)
    new_id = lambda: f"<urn:uuid:{uuid.UUID(int=uid.getrandbits(128))}>"  # noqa: E731
    truth, wet_texts, sizes = {}, {}, {"warc": 0, "wet": 0}
    (work / "warc").mkdir(parents=True)
    (work / "wet").mkdir(parents=True)
    per = (n_pages + files - 1) // files
    for f in range(files):
        name = f"{DUMP}-bench-{f:05d}"
        with open(work / "warc" / f"{name}.warc.gz", "wb") as warc, open(work / "wet" / f"{name}.warc.wet.gz", "wb") as wet:
            for out, kind in [(warc, "warc"), (wet, "wet")]:
                info = f"isPartOf: {DUMP}\r\npublisher: Common Crawl\r\nformat: WARC File Format 1.1\r\n".encode()
                rec = warc_record([("WARC-Type", "warcinfo"), ("WARC-Date", "2024-12-01T00:00:00Z"), ("WARC-Filename", f"{name}.{kind}"),
                                   ("WARC-Record-ID", new_id()), ("Content-Type", "application/warc-fields")], info)
                out.write(gzip.compress(rec, 6))
                sizes[kind] += len(rec)
            for i in range(f * per, min(n_pages, (f + 1) * per)):
                url, html, visible, title, paras = page(rng, i, src)
                date = f"2024-12-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
                roll = rng.random()
                http_charset = ""
                if roll < 0.02:
                    status, ctype, body = "301 Moved Permanently", "text/html", b"<html><body>Moved</body></html>"
                elif roll < 0.04:
                    status, ctype, body = "200 OK", "application/pdf", b"%PDF-1.4\n" + bytes(rng.randrange(256) for _ in range(2000))
                else:
                    status, ctype, body, http_charset = "200 OK", "text/html", html.encode(), "; charset=UTF-8"
                    truth[url] = (title, paras)
                    if url.split("/")[2] == SITES[-1] and rng.random() < 0.5:
                        # Much of the Chinese web is still GBK, declared only in a <meta> or not at all.
                        declared = '<meta charset="gbk">' if rng.random() < 0.5 else ""
                        try:
                            body, http_charset = html.replace('<meta charset="utf-8">', declared).encode("gbk"), ""
                        except UnicodeEncodeError:
                            pass
                host = url.split("/")[2]
                request = f"GET /{url.split('/', 3)[3]} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: CCBot/2.0 (https://commoncrawl.org/faq/)\r\nAccept: text/html\r\n\r\n".encode()
                http = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}{http_charset}\r\nContent-Length: {len(body)}\r\nServer: nginx\r\n\r\n".encode() + body
                meta = f"fetchTimeMs: {rng.randrange(50, 900)}\r\ncharset-detected: UTF-8\r\n".encode()
                response_id = new_id()
                for headers, content in [
                    ([("WARC-Type", "request"), ("WARC-Date", date), ("WARC-Record-ID", new_id()), ("Content-Type", "application/http; msgtype=request"), ("WARC-Target-URI", url)], request),
                    ([("WARC-Type", "response"), ("WARC-Date", date), ("WARC-Record-ID", response_id), ("Content-Type", "application/http; msgtype=response"),
                      ("WARC-Target-URI", url), ("WARC-Identified-Payload-Type", ctype)], http),
                    ([("WARC-Type", "metadata"), ("WARC-Date", date), ("WARC-Record-ID", new_id()), ("Content-Type", "application/warc-fields"), ("WARC-Target-URI", url)], meta),
                ]:
                    rec = warc_record(headers, content)
                    warc.write(gzip.compress(rec, 6))
                    sizes["warc"] += len(rec)
                if ctype == "text/html" and status.startswith("200"):
                    wet_texts[url] = "\n".join(visible)
                    text = wet_texts[url].encode()
                    lang = "zho" if url.split("/")[2] == SITES[-1] else "eng"
                    rec = warc_record([("WARC-Type", "conversion"), ("WARC-Target-URI", url), ("WARC-Date", date), ("WARC-Record-ID", new_id()),
                                       ("WARC-Refers-To", response_id), ("WARC-Identified-Content-Language", lang), ("Content-Type", "text/plain")], text)
                    wet.write(gzip.compress(rec, 6))
                    sizes["wet"] += len(rec)
    return truth, wet_texts, sizes


# ---- the Python tools, each in its own process (python bench.py --tool X --kind K --work DIR) -----


def tool_datatrove(kind, work, extractor, files):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter

    pipeline = [WarcReader(str(work / kind))]
    if extractor == "trafilatura":
        from datatrove.pipeline.extractors import Trafilatura

        pipeline.append(Trafilatura(favour_precision=True))
    elif extractor == "readability":
        from datatrove.pipeline.extractors import ReadabilityInscriptis

        pipeline.append(ReadabilityInscriptis())
    name = "datatrove" + (f"-{extractor}" if extractor else "")
    pipeline.append(ParquetWriter(str(work / "out" / f"{name}-{kind}")))
    LocalPipelineExecutor(pipeline=pipeline, tasks=files, workers=2, logging_dir=str(work / "logs" / f"{name}-{kind}")).run()


def resiliparse_file(args):
    """One file through FastWARC (+ resiliparse's main-content extraction for WARC) into Parquet."""
    path, out, kind = args
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    rows = {"id": [], "url": [], "date": [], "text": []}
    wanted = WarcRecordType.response if kind == "warc" else WarcRecordType.conversion
    for record in ArchiveIterator(str(path), record_types=wanted, parse_http=(kind == "warc")):
        body = record.reader.read()
        if kind == "warc":
            if record.http_headers.status_code != 200 or "html" not in (record.http_content_type or ""):
                continue
            text = extract_plain_text(bytes_to_str(body, detect_encoding(body)), main_content=True)
        else:
            text = body.decode("utf-8", errors="replace")
        if not text.strip():
            continue
        rows["id"].append(record.record_id)
        rows["url"].append(record.headers.get("WARC-Target-URI"))
        rows["date"].append(record.headers.get("WARC-Date"))
        rows["text"].append(text)
    pq.write_table(pa.table(rows), out / (Path(path).name.split(".")[0] + ".parquet"), compression="zstd")
    return len(rows["text"])


def tool_resiliparse(kind, work):
    import multiprocessing as mp

    out = work / "out" / f"resiliparse-{kind}"
    out.mkdir(parents=True, exist_ok=True)
    with mp.Pool(2) as pool:
        pool.map(resiliparse_file, [(p, out, kind) for p in sorted((work / kind).iterdir())], chunksize=1)


def run_tool(tool, kind, work, files):
    if tool == "resiliparse":
        tool_resiliparse(kind, work)
    else:
        tool_datatrove(kind, work, tool.removeprefix("datatrove").removeprefix("-") or None, files)


# ---- scoring -------------------------------------------------------------------------------


def read_output(folder):
    """URL -> extracted text, from any tool's Parquet (datatrove keeps the URL in `metadata`)."""
    import pyarrow.parquet as pq

    texts = {}
    for f in sorted(Path(folder).rglob("*.parquet")):
        if "quarantine" in f.parts:
            continue
        t = pq.read_table(f).to_pylist()
        for row in t:
            url = row.get("url") or (row.get("metadata") or {}).get("url")
            texts[url] = row["text"]
    return texts


def quality(texts, truth):
    """Mean recall and precision of the main text's words over the HTML pages."""
    recalls, precisions = [], []
    for url, (title, paras) in truth.items():
        main = collections.Counter(tokens(" ".join(paras)))
        allowed = main + collections.Counter(tokens(title))
        got = collections.Counter(tokens(texts.get(url, "")))
        recalls.append(sum((got & main).values()) / max(1, sum(main.values())))
        if got:
            precisions.append(sum((got & allowed).values()) / sum(got.values()))
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return mean(recalls), mean(precisions)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--ours", default="target/release/ds-ingest")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text"))
    ap.add_argument("--tools", default="ours,datatrove,datatrove-trafilatura,resiliparse")
    ap.add_argument("--kinds", default="wet,warc")
    ap.add_argument("--tool", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tool:
        return run_tool(args.tool, args.kind, Path(args.work), args.files)
    if not Path(args.data).exists():
        print(f"SKIPPED: {args.data} not found (real text lives in ../shared/data)")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        truth, _, sizes = write_corpus(args.data, args.pages, args.files, work)
        print(f"{args.pages} pages ({len(truth)} HTML pages with main text) in {args.files} files: "
              f"WARC {sizes['warc'] / 2**20:.1f} MB, WET {sizes['wet'] / 2**20:.1f} MB of records (uncompressed); "
              f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
        print(f"{'kind':<5} {'tool':<22} {'docs':>6} {'docs/s':>8} {'MB/s':>6} {'docs/CPU-s':>10} {'peak MB':>8} {'recall':>7} {'precision':>9}")
        results = {}
        for kind in args.kinds.split(","):
            for tool in args.tools.split(","):
                if tool == "datatrove" and kind == "warc":
                    continue  # datatrove's reader alone keeps the HTML: not a text extraction
                if tool in ("datatrove-trafilatura", "datatrove-readability") and kind == "wet":
                    continue  # extractors of HTML: nothing to do on WET text
                out = work / "out" / f"{tool}-{kind}"
                try:
                    if tool == "ours":
                        cmd = [args.ours, "--input", str(work / kind), "--output", str(out), "--threads", "2"]
                    else:
                        cmd = [sys.executable, __file__, "--tool", tool, "--kind", kind, "--work", str(work), "--files", str(args.files)]
                    secs, peak, _, cpu = run_measured(cmd)
                except Exception as e:  # a tool that cannot run here is reported, not fatal
                    print(f"{kind:<5} {tool:<22} failed: {str(e)[:300]}")
                    continue
                texts = read_output(out)
                n = len(texts)
                r = {"documents": n, "seconds": secs, "docs_per_s": n / secs, "mb_per_s": sizes[kind] / 2**20 / secs,
                     "cpu_seconds": cpu, "docs_per_cpu_s": n / cpu if cpu > 0 else None, "peak_mb": peak}
                if kind == "warc":
                    r["recall"], r["precision"] = quality(texts, truth)
                results[f"{kind}/{tool}"] = r
                per_cpu = f"{r['docs_per_cpu_s']:>10.0f}" if r["docs_per_cpu_s"] else f"{'':>10}"
                q = f"{r['recall']:>7.3f} {r['precision']:>9.3f}" if kind == "warc" else ""
                print(f"{kind:<5} {tool:<22} {n:>6} {r['docs_per_s']:>8.0f} {r['mb_per_s']:>6.1f} {per_cpu} {peak:>8.0f} {q}", flush=True)
            ours = results.get(f"{kind}/ours")
            for key, r in results.items():
                if ours and key.startswith(f"{kind}/") and key != f"{kind}/ours":
                    cpu_ratio = f", per CPU second {ours['docs_per_cpu_s'] / r['docs_per_cpu_s']:.1f}x" if r["docs_per_cpu_s"] and ours["docs_per_cpu_s"] else ""
                    print(f"  {kind}: ours / {key.split('/')[1]}: {ours['docs_per_s'] / r['docs_per_s']:.1f}x docs/s{cpu_ratio}")
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        print(json.dumps({"pages": args.pages, "html_pages": len(truth), "record_mb": sizes, "results": results}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
