"""Plain English paragraphs from a MediaWiki XML dump (used to build probes/text/wiki.train.txt).

The dump is the shortened English Wikipedia sample that ships inside the gensim 4.4.0 wheel
(`gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`).
Markup is stripped with regular expressions; only prose paragraphs of >= 200 characters are kept.
"""

from __future__ import annotations

import bz2
import re
import xml.etree.ElementTree as ET
from pathlib import Path

_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S)
_TAG = re.compile(r"<[^>]+>")
_FILE = re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I)
_LINK = re.compile(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]")
_EXT = re.compile(r"\[https?://\S+ ?([^\]]*)\]")


def clean(wikitext: str) -> list[str]:
    text = _REF.sub("", wikitext)
    for _ in range(4):  # nested templates
        text = _TEMPLATE.sub("", text)
    text = _TABLE.sub("", text)
    text = _FILE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT.sub(r"\1", text)
    text = _TAG.sub("", text).replace("'''", "").replace("''", "")
    paras = []
    for para in text.split("\n"):
        para = re.sub(r"\s+", " ", para).strip()
        if len(para) >= 200 and not para.startswith(("=", "*", "#", "|", "!", "{", ":")):
            paras.append(para)
    return paras


def extract(dump: Path, max_chars: int = 2_500_000) -> list[str]:
    """Cleaned paragraphs from the dump, in page order, up to `max_chars` characters."""
    out, total = [], 0
    with bz2.open(dump, "rb") as fh:
        for _event, elem in ET.iterparse(fh):
            if elem.tag.endswith("}text") and elem.text:
                for para in clean(elem.text):
                    out.append(para)
                    total += len(para)
                    if total >= max_chars:
                        return out
            elem.clear()
    return out
