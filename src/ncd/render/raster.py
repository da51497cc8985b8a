"""PNG and PDF from the SVG, through cairosvg (a real SVG renderer; fonts come from fontconfig, which is
given the bundled fonts first, so the PDF embeds subsets of the same fonts the SVG uses)."""

from __future__ import annotations

from ncd.errors import InputError

__all__ = ["svg_to_png", "svg_to_pdf"]


def _cairosvg():  # type: ignore[no-untyped-def]
    from ncd.render.fonts import register_with_fontconfig

    register_with_fontconfig()  # the bundled fonts, so cairo draws (and the PDF embeds) the same glyphs everywhere
    try:
        import cairosvg
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise InputError("drawing PNG or PDF needs cairosvg: pip install cairosvg") from error
    return cairosvg


def svg_to_png(svg: str, scale: float = 2.0) -> bytes:
    """Rasterise SVG text at ``scale`` pixels per point."""
    return _cairosvg().svg2png(bytestring=svg.encode("utf-8"), scale=scale)


def svg_to_pdf(svg: str) -> bytes:
    """Vector PDF of SVG text."""
    return _cairosvg().svg2pdf(bytestring=svg.encode("utf-8"))
