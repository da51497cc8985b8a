r"""The TikZ/PGF painter: the same drawing as the SVG, as LaTeX source that ``pdflatex`` compiles.

The picture uses ``x=1pt, y=-1pt`` so layout coordinates (points, ``y`` down) are used as
they are.  Text is typeset in Computer Modern Sans (the paper's font) with symbols in
math italic; non-ASCII characters are mapped to LaTeX commands.

>>> latex_text("C_λ → 2")
'C\\_$\\lambda$ $\\rightarrow$ 2'
"""

from __future__ import annotations

from ncd.render.model import Circle, Drawing, Path, Polygon, Rect, Text

__all__ = ["paint_tikz", "latex_text"]

_SYMBOLS = {
    "−": "$-$", "·": "$\\cdot$", "∗": "$\\ast$", "→": "$\\rightarrow$", "⊙": "$\\odot$", "√": "$\\surd$",
    "×": "$\\times$", "◁": "$\\triangleleft$", "★": "$\\star$", "…": "\\ldots{}", "∪": "$\\cup$", "⊸": "$\\multimap$",
    "λ": "$\\lambda$", "σ": "$\\sigma$", "μ": "$\\mu$", "α": "$\\alpha$", "β": "$\\beta$", "γ": "$\\gamma$",
    "δ": "$\\delta$", "ε": "$\\epsilon$", "θ": "$\\theta$", "π": "$\\pi$", "τ": "$\\tau$", "ω": "$\\omega$",
    "η": "$\\eta$", "ρ": "$\\rho$", "φ": "$\\phi$", "χ": "$\\chi$", "ψ": "$\\psi$", "Σ": "$\\Sigma$", "𝔼": "$\\mathbb{E}$",
    "↢": "$\\leftarrowtail$", "↣": "$\\rightarrowtail$", "↦": "$\\mapsto$", "▮": "$\\blacksquare$", "▯": "$\\square$",
    "◸": "$\\triangle$", "▭": "$\\square$", "⧺": "$+\\!\\!+$", "➤": "$\\blacktriangleright$", "•": "$\\bullet$",
    "²": "$^2$", "³": "$^3$", "ᵀ": "$^T$", "₊": "$_+$", "\u00a0": "~", "\u0305": "",
    "#": "\\#", "$": "\\$", "%": "\\%", "&": "\\&", "_": "\\_", "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}", "\\": "\\textbackslash{}", "<": "$<$", ">": "$>$", "|": "$|$",
}


def latex_text(text: str) -> str:
    """``text`` with LaTeX specials escaped and known symbols replaced (unknown ones become ``?``)."""
    out = []
    for ch in text:
        if ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def _n(v: float) -> str:
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _colour(value: str) -> str:
    r, g, b = (int(value[k:k + 2], 16) for k in (1, 3, 5))
    return f"{{rgb,255:red,{r};green,{g};blue,{b}}}"


def _style(fill: str | None, stroke: str | None, width: float, extra: str = "") -> str:
    opts = []
    if fill:
        opts.append(f"fill={_colour(fill)}")
    if stroke:
        opts.append(f"draw={_colour(stroke)}")
        opts.append(f"line width={_n(width)}pt")
    if extra:
        opts.append(extra)
    return ",".join(opts)


def _path(p: Path) -> str:
    out = []
    for c in p.commands:
        if c[0] == "M":
            out.append(f"({_n(c[1])},{_n(c[2])})")
        elif c[0] == "L":
            out.append(f"-- ({_n(c[1])},{_n(c[2])})")
        elif c[0] == "C":
            out.append(f".. controls ({_n(c[1])},{_n(c[2])}) and ({_n(c[3])},{_n(c[4])}) .. ({_n(c[5])},{_n(c[6])})")
        elif c[0] == "Z":
            out.append("-- cycle")
    return " ".join(out)


def paint_tikz(drawing: Drawing, *, standalone: bool = True) -> str:
    """TikZ source of ``drawing``; with ``standalone`` a complete document for ``pdflatex``."""
    lines = ["\\begin{tikzpicture}[x=1pt,y=-1pt,line cap=round,line join=round]",
             f"\\useasboundingbox (0,0) rectangle ({_n(drawing.width)},{_n(drawing.height)});"]
    for it in drawing.visible:
        if isinstance(it, Rect):
            extra = f"rounded corners={_n(it.radius)}pt" if it.radius else ""
            style = _style(it.fill, it.stroke, it.width, extra)
            lines.append(f"\\path[{style}] ({_n(it.x)},{_n(it.y)}) rectangle ({_n(it.x + it.w)},{_n(it.y + it.h)});")
        elif isinstance(it, Path):
            extra = "dash pattern=on 4pt off 3pt" if it.dashed else ""
            if it.arrow:
                extra = ",".join(e for e in (extra, "-{Stealth}") if e)
            style = _style(it.fill, it.stroke, it.width, extra)
            lines.append(f"\\path[{style}] {_path(it)};")
        elif isinstance(it, Polygon):
            pts = " -- ".join(f"({_n(x)},{_n(y)})" for x, y in it.points)
            lines.append(f"\\path[{_style(it.fill, it.stroke, it.width)}] {pts} -- cycle;")
        elif isinstance(it, Circle):
            lines.append(f"\\path[{_style(it.fill, it.stroke, it.width)}] ({_n(it.cx)},{_n(it.cy)}) circle[radius={_n(it.r)}pt];")
        elif isinstance(it, Text):
            for run in it.runs:
                font = f"\\fontsize{{{_n(run.size)}}}{{{_n(run.size * 1.2)}}}\\selectfont"
                font += "\\rmfamily" if run.serif else "\\sffamily"
                if run.italic:
                    font += "\\itshape"
                if run.bold:
                    font += "\\bfseries"
                lines.append(f"\\node[anchor=base west,inner sep=0pt,font={font}] at ({_n(it.x + run.dx)},{_n(it.y + run.dy)})"
                             f" {{{latex_text(run.text)}}};")
    lines.append("\\end{tikzpicture}")
    body = "\n".join(lines) + "\n"
    if not standalone:
        return body
    return ("\\documentclass[tikz,border=0pt]{standalone}\n\\usepackage{lmodern}\n\\usepackage{amssymb}\n"
            "\\usetikzlibrary{arrows.meta}\n\\begin{document}\n" + body + "\\end{document}\n")
