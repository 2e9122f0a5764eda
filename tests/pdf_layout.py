"""What a reviewer checks on a PDF page, measured with pdfminer: text sizes and empty pages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pdfminer.converter import PDFPageAggregator
from pdfminer.layout import LTPage
from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
from pdfminer.pdfpage import PDFPage

#: The paper's text block on US letter with 1 in margins (pt).
TEXT_BOTTOM, TEXT_TOP = 72.0, 720.0


@dataclass(frozen=True)
class Glyph:
    page: int
    size: float
    text: str


class _Recorder(PDFPageAggregator):
    """Keeps every glyph's effective size: font size times the scale of its full matrix (text,
    current transformation and any figure it sits in)."""

    def __init__(self, manager: PDFResourceManager) -> None:
        super().__init__(manager, laparams=None)
        self.glyphs: list[tuple[float, str]] = []

    def render_char(self, matrix, font, fontsize, scaling, rise, cid, ncs, graphicstate):
        a, b, c, d = matrix[:4]
        advance = super().render_char(matrix, font, fontsize, scaling, rise, cid, ncs, graphicstate)
        text = self.cur_item._objs[-1].get_text() if self.cur_item._objs else ""
        self.glyphs.append((fontsize * math.sqrt(abs(a * d - b * c)), text))
        return advance


def read_pdf(path: Path) -> tuple[list[Glyph], list[LTPage]]:
    """Every glyph with its size, and each page's layout."""
    manager = PDFResourceManager()
    device = _Recorder(manager)
    interpreter = PDFPageInterpreter(manager, device)
    glyphs: list[Glyph] = []
    pages: list[LTPage] = []
    with open(path, "rb") as handle:
        for number, page in enumerate(PDFPage.get_pages(handle), start=1):
            device.glyphs = []
            interpreter.process_page(page)
            pages.append(device.get_result())
            glyphs += [Glyph(number, size, text) for size, text in device.glyphs]
    return glyphs, pages


def small_text(path: Path, minimum: float = 8.0) -> list[Glyph]:
    """Glyphs under ``minimum`` points (visible ones: spaces do not count)."""
    glyphs, _ = read_pdf(path)
    return [g for g in glyphs if g.text.strip() and g.size < minimum - 0.05]


def coverage(page: LTPage) -> float:
    """Share of the text block's height that holds anything (text, figures, rules)."""
    spans = sorted(
        (max(item.y0, TEXT_BOTTOM), min(item.y1, TEXT_TOP))
        for item in page
        if item.y1 > TEXT_BOTTOM and item.y0 < TEXT_TOP
    )
    covered, reach = 0.0, TEXT_BOTTOM
    for low, high in spans:
        if high > reach:
            covered += high - max(low, reach)
            reach = high
    return covered / (TEXT_TOP - TEXT_BOTTOM)


def sparse_pages(path: Path, minimum: float = 0.4) -> list[tuple[int, float]]:
    """Pages before the last whose content fills less than ``minimum`` of the text block: a
    float alone on a mostly empty page, a heading left at the end of an empty page."""
    _, pages = read_pdf(path)
    found = [(n, coverage(page)) for n, page in enumerate(pages[:-1], start=1)]
    return [(n, share) for n, share in found if share < minimum]
