"""Raw documents written byte by byte for `rag-e2e prepare` tests: a PDF with no PDF library, a web page with
navigation boilerplate, Markdown, a cp1252 text file. Every fact sentence is random, so a test cannot pass on text
it did not extract."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("amber basalt cedar delta ember fjord garnet harbor iris juniper kelp lagoon marble nectar onyx prairie "
         "quartz raven sierra tundra umber valley willow xenon yarrow zephyr").split()


def fact(rng: random.Random, n: int = 9) -> str:
    """A sentence of `n` random words, capitalised, ending with a period."""
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def pdf_bytes(pages: list[list[str]], title: str = "") -> bytes:
    """A valid PDF 1.4: one page per list, one Helvetica text line per string, and an Info title if given.

    Offsets in the cross-reference table are computed from the bytes written, as the format requires.
    """
    objects: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    font = 3 + 2 * n_pages
    for i, lines in enumerate(pages):
        content = "BT /F1 11 Tf 14 TL 72 760 Td " + " ".join(f"({_escape(line)}) Tj T*" for line in lines) + " ET"
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        data = content.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    info = None
    if title:
        objects.append(f"<< /Title ({_escape(title)}) >>".encode("latin-1"))
        info = len(objects)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R" + (f" /Info {info} 0 R" if info else "") + " >>"
    out += b"trailer\n" + trailer.encode() + b"\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def html_page(title: str, paragraphs: list[str], nav: list[str], footer: str) -> str:
    """An article page with a navigation menu, a cookie banner and a footer around the main text."""
    menu = "".join(f'<li><a href="/{item.lower()}">{item}</a></li>' for item in nav)
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<header><nav><ul>{menu}</ul></nav></header>"
            f"<div class='cookie-banner'>We use cookies. Accept all cookies</div>"
            f"<main><article><h1>{title}</h1>{body}</article></main>"
            f"<footer><p>{footer}</p><nav><a href='/privacy'>Privacy policy</a></nav></footer></body></html>")


def write(path: Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding))
    return path


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
