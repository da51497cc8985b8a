r"""The TikZ/PGF painter: the same drawing as the SVG, as LaTeX source that ``pdflatex`` compiles.

The picture uses ``x=1pt, y=-1pt`` so layout coordinates (points, ``y`` down) are used as
they are.  Text is typeset in Computer Modern Sans and Serif Italic at their 10 pt design size,
scaled (the fonts the layout measures: CMU Sans and Serif are these designs), so every run has the
width it has in the SVG (``tests/test_render_notation.py`` checks it with pdflatex, to 0.5 pt);
non-ASCII characters are mapped to LaTeX commands, each boxed to the width the layout gave it
(``$\surd$`` is wider in TeX's math font); spaces are kept (``y = x``).

Every element is drawn in a **named style** a user can restyle: ``ncd wire``, ``ncd separator``,
``ncd box``, ``ncd fence``, ``ncd glyph``, ``ncd legend``, ``ncd paren``, ``ncd dot``, ``ncd shadow``,
``ncd label`` (wire labels), ``ncd title``, ``ncd text``.  Each is defined only if it is not defined
already, so ``\tikzset{ncd wire/.style={line width=1.2pt}}`` before the picture wins.  Colours are
named too (``ncd-DCD8EE``), defined with ``\providecolor``.

>>> latex_text("C_λ → 2")
'C\\_$\\lambda$\\ $\\rightarrow$\\ 2'
"""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import replace

from ncd.render.fonts import advance, face_for
from ncd.render.model import Circle, Drawing, Path, Polygon, Rect, Run, Text
from ncd.render.tikz_chars import GLYPH_HOOK, combining_accent, glyph_hook_call, latex_char

__all__ = ["paint_tikz", "latex_text", "unwritten", "run_font", "run_body", "ROLES"]

_SYMBOLS = {
    "−": "$-$", "·": "$\\cdot$", "∗": "$\\ast$", "→": "$\\rightarrow$", "⊙": "$\\odot$", "√": "$\\surd$",
    "×": "$\\times$", "◁": "$\\triangleleft$", "★": "$\\bigstar$", "…": "\\ldots{}", "∪": "$\\cup$", "⊸": "$\\multimap$",
    "λ": "$\\lambda$", "σ": "$\\sigma$", "μ": "$\\mu$", "α": "$\\alpha$", "β": "$\\beta$", "γ": "$\\gamma$",
    "δ": "$\\delta$", "ε": "$\\epsilon$", "θ": "$\\theta$", "π": "$\\pi$", "τ": "$\\tau$", "ω": "$\\omega$",
    "η": "$\\eta$", "ρ": "$\\rho$", "φ": "$\\phi$", "χ": "$\\chi$", "ψ": "$\\psi$", "Σ": "$\\Sigma$", "𝔼": "$\\mathbb{E}$",
    "↢": "$\\leftarrowtail$", "↣": "$\\rightarrowtail$", "↦": "$\\mapsto$", "▮": "$\\blacksquare$", "▯": "$\\square$",
    "◸": "$\\triangle$", "↘": "$\\searrow$", "▭": "$\\square$", "⧺": "$+\\!\\!+$", "➤": "$\\blacktriangleright$", "•": "$\\bullet$",
    " ": "\\ ", "²": "$^2$", "³": "$^3$", "ᵀ": "$^T$", "₊": "$_+$", "\u00a0": "~", "\u0305": "",
    "#": "\\#", "$": "\\$", "%": "\\%", "&": "\\&", "_": "\\_", "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}", "\\": "\\textbackslash{}", "<": "$<$", ">": "$>$", "|": "$|$",
    "`": "\\`{}", '"': "{\\fontfamily{cmtt}\\selectfont\\char34}",  # (OT1's " is a closing quote; typewriter's is straight)
}


def latex_text(text: str, face: str | None = None, size: float = 0.0) -> str:
    """``text`` with LaTeX specials escaped and other characters written as LaTeX does (:mod:`ncd.render.tikz_chars`;
    one with no LaTeX form is ``\\ncdglyph{code}{width}``, an empty box in its room unless the document redefines it).

    With ``face`` and ``size``, each symbol set in math (``$\\surd$``, ``$-$``) is centred in a box as wide as
    the layout measured it in that face, so TeX's math glyphs do not move what follows."""
    out = []
    for ch in unicodedata.normalize("NFC", text) if not text.isascii() else text:
        if ch in _SYMBOLS:
            body = _SYMBOLS[ch]
            if face is not None and ch != " " and body:  # (TeX's _ ^ ~ are narrower than the fonts' own)
                body = f"\\makebox[{_n(advance(ch, face, size))}pt][c]{{{body}}}"
            out.append(body)
        elif ord(ch) < 128:
            out.append(ch)
        elif out and (accent := combining_accent(ch, math=not out[-1].isalpha())):  # θ̂ (no precomposed letter)
            out[-1] = f"\\{accent}{{{out[-1]}}}" if out[-1].isalpha() else f"$\\{accent}{{\\mbox{{{out[-1]}}}}}$"
        else:
            form = latex_char(ch)
            width = advance(ch, face or "sans", size or 10.0)
            if form is None:  # no LaTeX form (CJK, emoji, ...): the hook, an empty box in its room by default
                out.append(glyph_hook_call(ch, _n(width)))
            elif form and face is not None:  # boxed to the layout's width, as the symbols above
                out.append(f"\\makebox[{_n(width)}pt][c]{{{form}}}")
            else:
                out.append(form)
    return "".join(out)


def unwritten(text: str) -> str:
    """The characters of ``text`` the picture writes as ``\\ncdglyph`` (no LaTeX form), in order, each once."""
    return "".join(dict.fromkeys(ch for ch in unicodedata.normalize("NFC", text)
                                 if ord(ch) >= 128 and ch not in _SYMBOLS and latex_char(ch) is None))


_NUMBERS: dict[float, str] = {}


def _n(v: float) -> str:
    text = _NUMBERS.get(v)  # coordinates repeat (a drawing's rows share their x): each formatted once
    if text is None:
        text = f"{v:.2f}".rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
        if len(_NUMBERS) > 200_000:
            _NUMBERS.clear()
        _NUMBERS[v] = text
    return text


ROLES = ("wire", "separator", "box", "fence", "glyph", "legend", "paren", "dot", "shadow", "label", "title", "text")
#: The default look of each role (what a user overrides with ``\tikzset{ncd <role>/.style=...}``).
_ROLE_DEFAULTS = {"separator": "dash pattern=on 4pt off 3pt", "label": "anchor=base west,inner sep=0pt",
                  "title": "anchor=base west,inner sep=0pt", "text": "anchor=base west,inner sep=0pt"}


def _colour(value: str) -> str:
    return f"ncd-{value.lstrip('#').upper()}"


def _style(role: str, fill: str | None, stroke: str | None, width: float, extra: str = "", scale: float = 1.0) -> str:
    opts = []
    if fill:
        opts.append(f"fill={_colour(fill)}")
    if stroke:
        opts.append(f"draw={_colour(stroke)}")
        opts.append(f"line width={_n(width * scale)}pt")
    if extra:
        opts.append(extra)
    opts.append(f"ncd {role}")  # last: a user's style for the role overrides what the drawing chose
    return ",".join(opts)


def _preamble(drawing: Drawing) -> list[str]:
    colours: set[str] = set()
    for it in drawing.visible:
        for c in (getattr(it, "fill", None), getattr(it, "stroke", None)):
            if c:
                colours.add(c)
    lines = ["\\providecommand\\ncdstyle[2]{\\pgfkeysifdefined{/tikz/#1/.@cmd}{}{\\tikzset{#1/.style={#2}}}}"]
    lines += [f"\\ncdstyle{{ncd {role}}}{{{_ROLE_DEFAULTS.get(role, '')}}}" for role in ROLES]
    lines += _FONTS
    lines += [f"\\providecolor{{{_colour(c)}}}{{HTML}}{{{c.lstrip('#').upper()}}}" for c in sorted(colours)]
    return lines


#: The fonts of the drawing: Computer Modern at its 10 pt design size, scaled (CMU Sans and Serif, which the
#: layout measures, are these fonts; LaTeX's own sizes would pick the narrower 12 pt design of ``lmss12``).
_FONTS = [
    "\\DeclareFontFamily{OT1}{ncdss}{}",
    "\\DeclareFontShape{OT1}{ncdss}{m}{n}{<-> cmss10}{}",
    "\\DeclareFontShape{OT1}{ncdss}{bx}{n}{<-> cmssbx10}{}",
    "\\DeclareFontShape{OT1}{ncdss}{b}{n}{<-> ssub * ncdss/bx/n}{}",
    "\\DeclareFontFamily{OT1}{ncdrm}{}",
    "\\DeclareFontShape{OT1}{ncdrm}{m}{n}{<-> cmr10}{}",
    "\\DeclareFontShape{OT1}{ncdrm}{m}{it}{<-> cmti10}{}",
]


def run_font(run: Run) -> str:
    """The LaTeX font commands of a text run: Computer Modern Sans (or Serif) at the run's size."""
    font = f"\\fontsize{{{_n(run.size)}}}{{{_n(run.size * 1.2)}}}\\fontencoding{{OT1}}"
    font += "\\fontfamily{ncdrm}" if run.serif else "\\fontfamily{ncdss}"
    font += "\\fontseries{bx}" if run.bold else "\\fontseries{m}"
    font += "\\fontshape{it}" if run.italic else "\\fontshape{n}"
    return font + "\\selectfont"


def run_body(run: Run) -> str:
    """The LaTeX text of a run: symbols boxed to the width the layout measured for them."""
    face = face_for(run.bold, run.italic, run.serif, run.symbol)
    body = latex_text(run.text, face, run.size)
    if run.symbol:  # centred in the width the layout measured for it (the TeX glyph may differ)
        body = f"\\makebox[{_n(advance(run.text, 'symbols', run.size))}pt][c]{{{latex_text(run.text)}}}"
    return body


def _path(p: Path, k: float = 1.0) -> str:
    out = []
    for c in p.commands:
        if c[0] == "M":
            out.append(f"({_n(c[1] * k)},{_n(c[2] * k)})")
        elif c[0] == "L":
            out.append(f"-- ({_n(c[1] * k)},{_n(c[2] * k)})")
        elif c[0] == "C":
            out.append(f".. controls ({_n(c[1] * k)},{_n(c[2] * k)}) and ({_n(c[3] * k)},{_n(c[4] * k)}) .. "
                       f"({_n(c[5] * k)},{_n(c[6] * k)})")
        elif c[0] == "Z":
            out.append("-- cycle")
    return " ".join(out)


def paint_tikz(drawing: Drawing, *, standalone: bool = True) -> str:
    """TikZ source of ``drawing``; with ``standalone`` a complete document for ``pdflatex``.

    TeX has no length over 16,384 pt: a drawing larger than a PDF page may be (200 inches, as the PDF export) is
    scaled down to it, text and lines with it, with a :class:`~ncd.render.raster.DrawingTooLargeWarning`."""
    k = _fit_scale(drawing)
    lines = ["\\begin{tikzpicture}[x=1pt,y=-1pt,line cap=round,line join=round]", *_preamble(drawing),
             f"\\useasboundingbox (0,0) rectangle ({_n(drawing.width * k)},{_n(drawing.height * k)});"]
    runs: dict[int, tuple[Run, str, str]] = {}
    for it in drawing.visible:
        if isinstance(it, Rect):
            extra = f"rounded corners={_n(it.radius * k)}pt" if it.radius else ""
            style = _style(it.role, it.fill, it.stroke, it.width, extra, k)
            lines.append(f"\\path[{style}] ({_n(it.x * k)},{_n(it.y * k)}) rectangle "
                         f"({_n((it.x + it.w) * k)},{_n((it.y + it.h) * k)});")
        elif isinstance(it, Path):
            extra = "dash pattern=on 4pt off 3pt" if it.dashed and it.role != "separator" else ""
            if it.arrow:
                extra = ",".join(e for e in (extra, "-{Stealth}") if e)
            style = _style(it.role, it.fill, it.stroke, it.width, extra, k)
            lines.append(f"\\path[{style}] {_path(it, k)};")
        elif isinstance(it, Polygon):
            pts = " -- ".join(f"({_n(x * k)},{_n(y * k)})" for x, y in it.points)
            lines.append(f"\\path[{_style(it.role, it.fill, it.stroke, it.width, scale=k)}] {pts} -- cycle;")
        elif isinstance(it, Circle):
            style = _style(it.role, it.fill, it.stroke, it.width, scale=k)
            lines.append(f"\\path[{style}] ({_n(it.cx * k)},{_n(it.cy * k)}) circle[radius={_n(it.r * k)}pt];")
        elif isinstance(it, Text):
            for run in it.runs:
                made = runs.get(id(run))  # (labels share their typeset runs: each run's font and body made once)
                if made is None:
                    sized = run if k == 1.0 else replace(run, size=run.size * k)
                    made = runs[id(run)] = (run, run_font(sized), run_body(sized))
                lines.append(f"\\node[font={made[1]},ncd {it.role}] at ({_n((it.x + run.dx) * k)},{_n((it.y + run.dy) * k)}) "
                             f"{{{made[2]}}};")
    lines.append("\\end{tikzpicture}")
    missing = unwritten("".join(made[0].text for made in runs.values()))
    if missing:
        lines.insert(1, GLYPH_HOOK)
        _warn_unwritten(missing)
    body = "\n".join(lines) + "\n"
    if not standalone:
        return body
    return ("\\documentclass[tikz,border=0pt]{standalone}\n\\usepackage{lmodern}\n\\usepackage{amssymb}\n\\usepackage{xcolor}\n"
            "\\usetikzlibrary{arrows.meta}\n\\begin{document}\n" + body + "\\end{document}\n")


def _warn_unwritten(missing: str) -> None:
    from ncd.render.raster import MissingGlyphWarning

    shown = missing if len(missing) <= 12 else missing[:12] + "…"
    warnings.warn(f"TikZ: {len(missing)} character(s) of the drawing's text have no form in pdflatex's fonts ({shown}) "
                  "and print as empty boxes (\\ncdglyph); with XeLaTeX or LuaLaTeX and a font that has them, "
                  "\\renewcommand\\ncdglyph[2]{\\makebox[#2][c]{\\char\"#1}} draws them", MissingGlyphWarning, stacklevel=4)


def _fit_scale(drawing: Drawing) -> float:
    """1, or the factor that brings a drawing larger than :data:`~ncd.render.raster.MAX_PDF_POINTS` down to it."""
    from ncd.render.raster import MAX_PDF_POINTS, DrawingTooLargeWarning

    largest = max(drawing.width, drawing.height)
    if largest <= MAX_PDF_POINTS:
        return 1.0
    k = MAX_PDF_POINTS / largest
    warnings.warn(f"TikZ: the drawing is {drawing.width:.0f} x {drawing.height:.0f} pt, more than TeX can measure "
                  f"(16,384 pt) or a PDF viewer shows (200 in): scaled by {k:.3f} to {MAX_PDF_POINTS:.0f} pt",
                  DrawingTooLargeWarning, stacklevel=3)
    return k
