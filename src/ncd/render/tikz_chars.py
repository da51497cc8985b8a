r"""LaTeX for the characters of a drawing's text beyond ASCII, as ``pdflatex`` typesets them with the picture's
Computer Modern fonts (OT1) and ``amssymb``: Greek letters, Latin letters with accents, superscript and subscript
letters and digits, double-struck capitals, arrows and common mathematical symbols.

A character with no such form (CJK, emoji, Hebrew, most pictographs) is written as ``\ncdglyph{code}{width}``: by
default an empty box in the width the layout gave it, as the PNG and PDF draw it (cairo has only the bundled faces),
and :func:`paint_tikz <ncd.render.tikz.paint_tikz>` warns with :class:`~ncd.render.raster.MissingGlyphWarning`.
A document compiled by XeLaTeX or LuaLaTeX with a font that has the characters draws them by redefining the hook,
e.g. ``\renewcommand\ncdglyph[2]{\makebox[#2][c]{\char"#1}}`` (the code is hexadecimal). The ``.tex`` file stays
ASCII, so no input encoding is needed.

>>> latex_char("Δ"), latex_char("é"), latex_char("ʹ"), latex_char("₂"), latex_char("≤")
('$\\Delta$', "\\'{e}", "$'$", '$_{2}$', '$\\leq$')
>>> latex_char("注") is None
True
"""

from __future__ import annotations

import functools
import unicodedata

__all__ = ["latex_char", "combining_accent", "GLYPH_HOOK", "glyph_hook_call"]

_GREEK = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi o pi rho varsigma sigma tau "
          "upsilon phi chi psi omega").split()
#: Greek capitals with a letter of their own in TeX (the others look like Latin capitals and are written so)
_GREEK_CAPITALS = {"Γ": "Gamma", "Δ": "Delta", "Θ": "Theta", "Λ": "Lambda", "Ξ": "Xi", "Π": "Pi", "Σ": "Sigma",
                   "Υ": "Upsilon", "Φ": "Phi", "Ψ": "Psi", "Ω": "Omega"}
_LATIN_CAPITALS = dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΧ", "ABEZHIKMNOPTX"))

#: combining accents and the OT1 accent commands that put them on a letter
_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0306": "u", "\u0307": ".",
            "\u0308": '"', "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c"}

_MATH_ACCENTS = {"\u0300": "grave", "\u0301": "acute", "\u0302": "hat", "\u0303": "tilde", "\u0304": "bar",
                 "\u0306": "breve", "\u0307": "dot", "\u0308": "ddot", "\u030a": "mathring", "\u030c": "check"}

#: an accent goes on the dotless i and j
_DOTLESS = {"i": "\\i{}", "j": "\\j{}"}

#: a right triangle drawn in LaTeX's picture mode (amssymb has none): its diagonal, and the two sides given
_TRIANGLE = ("{{\\setlength\\unitlength{{0.1em}}\\begin{{picture}}(7,7)\\put(0,7){{\\line(1,-1){{7}}}}{}"
             "\\end{{picture}}}}")

#: letters and symbols with a command of their own
_COMMANDS = {
    "ß": "\\ss{}", "æ": "\\ae{}", "Æ": "\\AE{}", "œ": "\\oe{}", "Œ": "\\OE{}", "ø": "\\o{}", "Ø": "\\O{}",
    "ł": "\\l{}", "Ł": "\\L{}", "ı": "\\i{}", "ȷ": "\\j{}", "å": "\\aa{}", "Å": "\\AA{}", "ð": "$\\eth$",
    "¡": "!`", "¿": "?`", "§": "\\S{}", "¶": "\\P{}", "©": "\\copyright{}", "£": "\\pounds{}", "†": "\\dag{}",
    "‡": "\\ddag{}", "–": "--", "—": "---", "‘": "`", "’": "'", "“": "``", "”": "''", "\u00ad": "",
    "ʹ": "$'$", "′": "$'$", "″": "$''$", "‴": "$'''$",
    "ϑ": "$\\vartheta$", "ϕ": "$\\phi$", "ϵ": "$\\epsilon$", "ϱ": "$\\varrho$", "ϖ": "$\\varpi$", "ϰ": "$\\varkappa$",
    "ℓ": "$\\ell$", "ℏ": "$\\hbar$", "ℵ": "$\\aleph$", "∂": "$\\partial$", "∇": "$\\nabla$", "∆": "$\\Delta$",
    "∀": "$\\forall$", "∃": "$\\exists$", "∄": "$\\nexists$", "∅": "$\\emptyset$", "∈": "$\\in$",
    "∉": "$\\notin$", "∋": "$\\ni$", "∏": "$\\prod$", "∐": "$\\coprod$", "∑": "$\\sum$", "∓": "$\\mp$",
    "±": "$\\pm$", "÷": "$\\div$", "∕": "/", "∖": "$\\setminus$", "∘": "$\\circ$", "∙": "$\\bullet$",
    "⋅": "$\\cdot$", "∝": "$\\propto$", "∞": "$\\infty$", "∠": "$\\angle$", "∣": "$\\mid$", "∥": "$\\parallel$",
    "∧": "$\\wedge$", "∨": "$\\vee$", "∩": "$\\cap$", "∫": "$\\int$", "∮": "$\\oint$", "∴": "$\\therefore$",
    "∼": "$\\sim$", "≃": "$\\simeq$", "≅": "$\\cong$", "≈": "$\\approx$", "≠": "$\\neq$", "≡": "$\\equiv$",
    "≤": "$\\leq$", "≥": "$\\geq$", "≪": "$\\ll$", "≫": "$\\gg$", "≺": "$\\prec$", "≻": "$\\succ$",
    "⊂": "$\\subset$", "⊃": "$\\supset$", "⊆": "$\\subseteq$", "⊇": "$\\supseteq$", "⊕": "$\\oplus$",
    "⊖": "$\\ominus$", "⊗": "$\\otimes$", "⊘": "$\\oslash$", "⊤": "$\\top$", "⊥": "$\\bot$", "⊢": "$\\vdash$",
    "⋆": "$\\star$", "⋯": "$\\cdots$", "⋮": "$\\vdots$", "⋱": "$\\ddots$", "⌈": "$\\lceil$", "⌉": "$\\rceil$",
    "⌊": "$\\lfloor$", "⌋": "$\\rfloor$", "←": "$\\leftarrow$", "↑": "$\\uparrow$", "↓": "$\\downarrow$",
    "↔": "$\\leftrightarrow$", "⇐": "$\\Leftarrow$", "⇒": "$\\Rightarrow$", "⇔": "$\\Leftrightarrow$",
    "↗": "$\\nearrow$", "↖": "$\\nwarrow$", "↙": "$\\swarrow$", "↩": "$\\hookleftarrow$", "↪": "$\\hookrightarrow$",
    "■": "$\\blacksquare$", "□": "$\\square$", "▲": "$\\blacktriangle$", "△": "$\\vartriangle$",
    "▼": "$\\blacktriangledown$", "▽": "$\\triangledown$", "▶": "$\\blacktriangleright$", "▷": "$\\triangleright$",
    "◀": "$\\blacktriangleleft$", "○": "$\\bigcirc$", "●": "$\\bullet$", "◇": "$\\Diamond$", "◆": "$\\blacklozenge$",
    "☆": "$\\star$", "✓": "$\\checkmark$", "°": "$^\\circ$", "¬": "$\\neg$", "¯": "$\\bar{}$", "´": "\\'{}",
    "¨": '\\"{}', "«": "$\\ll$", "»": "$\\gg$", "‖": "$\\|$", "‹": "$<$", "›": "$>$", "‐": "-", "‑": "-", "‒": "--",
    "⊻": "$\\veebar$", "∿": "$\\sim$", "⤨": "\\rlap{$\\nearrow$}$\\searrow$",
    "◺": _TRIANGLE.format("\\put(0,0){\\line(1,0){7}}\\put(0,0){\\line(0,1){7}}"),
    "◹": _TRIANGLE.format("\\put(0,7){\\line(1,0){7}}\\put(7,0){\\line(0,1){7}}"),
    "\u00a0": "~", "\u2009": "\\,", "\u200a": "\\,", "\u2002": "\\enspace{}", "\u2003": "\\quad{}",
}

#: the hook a character with no LaTeX form is written as (the code point in hexadecimal, the width in points)
GLYPH_HOOK = ("\\providecommand\\ncdglyph[2]{\\makebox[#2][c]{\\fboxsep=0pt\\fboxrule=0.4pt"
              "\\fbox{\\rule{0pt}{0.68em}\\hspace*{\\dimexpr#2*6/10\\relax}}}}")


def combining_accent(ch: str, math: bool = False) -> str | None:
    r"""The accent command (``^`` for ``\^``; with ``math``, ``hat`` for ``\hat``, which goes over any box) of a
    combining mark LaTeX can set over a letter, else None."""
    return (_MATH_ACCENTS if math else _ACCENTS).get(ch)


def glyph_hook_call(ch: str, width: str) -> str:
    r"""``\ncdglyph{code}{width}`` for a character with no LaTeX form."""
    return f"\\ncdglyph{{{ord(ch):X}}}{{{width}pt}}"


@functools.lru_cache(maxsize=4096)
def latex_char(ch: str) -> str | None:
    """LaTeX (OT1 text or ``amssymb`` math) for one character beyond ASCII; ``""`` for one that draws nothing (a
    combining mark or joiner no letter takes); None when it has no LaTeX form."""
    if ch in _COMMANDS:
        return _COMMANDS[ch]
    if ch in _GREEK_CAPITALS:
        return f"$\\{_GREEK_CAPITALS[ch]}$"
    if ch in _LATIN_CAPITALS:
        return _LATIN_CAPITALS[ch]
    code = ord(ch)
    if 0x3B1 <= code <= 0x3C9:  # α … ω (ο is a Latin o; ς is TeX's varsigma)
        name = _GREEK[code - 0x3B1]
        return "o" if name == "o" else f"$\\{name}$"
    category = unicodedata.category(ch)
    if category in ("Mn", "Me", "Cf"):  # a combining mark left alone (no letter before it), a joiner: no ink
        return ""
    parts = unicodedata.decomposition(ch).split()
    if not parts:
        return None
    if parts[0] in ("<super>", "<sub>", "<font>", "<compat>", "<noBreak>", "<narrow>", "<wide>", "<small>"):
        inner = "".join(chr(int(p, 16)) for p in parts[1:])
        body = _word(inner)
        if body is None:
            return None
        if parts[0] == "<super>":
            return f"$^{{{_math(body)}}}$"
        if parts[0] == "<sub>":
            return f"$_{{{_math(body)}}}$"
        if parts[0] == "<font>" and "DOUBLE-STRUCK" in unicodedata.name(ch, "") and inner.isupper():
            return f"$\\mathbb{{{inner}}}$"
        return body
    if parts[0].startswith("<"):
        return None
    base, *marks = (chr(int(p, 16)) for p in parts)
    body = latex_char(base) if ord(base) >= 128 else base
    for mark in marks:
        accent = _ACCENTS.get(mark)
        if body is None or accent is None:
            return None
        body = f"\\{accent}{{{_DOTLESS.get(body, body)}}}"
    return body


def _word(text: str) -> str | None:
    out = []
    for ch in text:
        ch = "-" if ch == "−" else ch
        body = ch if ord(ch) < 128 and (ch.isalnum() or ch in "+-=()") else latex_char(ch) if ord(ch) >= 128 else None
        if body is None:
            return None
        out.append(body)
    return "".join(out)


def _math(body: str) -> str:
    """A text body as the inside of a math script: letters upright, math kept."""
    if body.startswith("$") and body.endswith("$") and body.count("$") == 2:
        return body[1:-1]
    if body.isalpha():
        return f"\\mathrm{{{body}}}"
    return body.replace("$", "")
