"""SQuAD v1.1 articles written out as raw documents, to walk the whole workflow (prepare -> train -> export -> ask /
serve) on real text: the README's "From your documents to a served model".

    python experiments/workflow/squad_documents.py [squad=../shared/data/squad-v1.1-dev/dev-v1.1.json.zip]
        [out=runs/workflow/raw] [articles=12]

Writes `out/docs/`: each article as one document, in turn a Markdown file, a web page with navigation, cookie banner
and footer, or a cp1252 text file; plus an exact copy of the first article (which `prepare` should drop). Writes
`out/squad.json`: the same articles' questions in SQuAD format, to be aligned to the passages with `qa=`.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.compose import split_options
from rag_e2e.data.qa import read_json_document

NAV = ("Home", "Articles", "Random page", "Donate", "Log in")


def as_markdown(title: str, paragraphs: list[str]) -> str:
    return f"# {title}\n\n" + "\n\n".join(paragraphs) + "\n"


def as_web_page(title: str, paragraphs: list[str]) -> str:
    menu = "".join(f'<li><a href="/{item.lower().replace(" ", "-")}">{item}</a></li>' for item in NAV)
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<header><nav><ul>{menu}</ul></nav></header><div class='banner'>This site uses cookies.</div>"
            f"<main><article><h1>{html.escape(title)}</h1>{body}</article></main>"
            "<footer><p>Text is available under the CC BY-SA 4.0 license.</p>"
            "<a href='/privacy'>Privacy policy</a></footer></body></html>")


def write_documents(squad: Path, out: Path, n_articles: int) -> tuple[int, int]:
    """Write the first `n_articles` articles as documents and their questions as squad.json; (documents, questions)."""
    data = read_json_document(squad)["data"][:n_articles]
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for i, article in enumerate(data):
        title = article["title"].replace("_", " ")
        paragraphs = [p["context"] for p in article["paragraphs"]]
        stem = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()
        kind = i % 3
        if kind == 0:
            atomic.write_text(docs / f"{stem}.md", as_markdown(title, paragraphs))
        elif kind == 1:
            atomic.write_text(docs / "web" / f"{stem}.html", as_web_page(title, paragraphs))
        else:
            text = f"{title}\n\n" + "\n\n".join(paragraphs) + "\n"
            try:
                atomic.write_bytes(docs / f"{stem}.txt", text.encode("cp1252"))  # not UTF-8: prepare must detect it
            except UnicodeEncodeError:
                atomic.write_bytes(docs / f"{stem}.txt", text.encode("utf-8"))
        if i == 0:
            atomic.write_text(docs / f"{stem}-copy.md", as_markdown(title, paragraphs))
    atomic.write_json(out / "squad.json", {"version": "1.1", "data": data})
    questions = sum(len(p["qas"]) for a in data for p in a["paragraphs"])
    return len(data) + 1, questions


def main(argv: list[str] | None = None) -> int:
    opts, rest = split_options(sys.argv[1:] if argv is None else argv,
                               {"squad": "../shared/data/squad-v1.1-dev/dev-v1.1.json.zip", "out": "runs/workflow/raw",
                                "articles": "12"})
    if rest:
        print(__doc__, file=sys.stderr)
        return 2
    n_docs, n_questions = write_documents(Path(opts["squad"]), Path(opts["out"]), int(opts["articles"]))
    print(f"wrote {n_docs} documents under {opts['out']}/docs and {n_questions} questions to {opts['out']}/squad.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
