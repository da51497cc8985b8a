"""Samples for the Fourier family: transforms, the parts of a complex number, the complex product (against torch.fft)."""

from __future__ import annotations

import torch

import ncd
from ncd.errors import ParseError, SizeError, TypeMismatchError
from tests.opdb import error, sample

# (grad=False where the output is complex: the harness differentiates real outputs only)
# -- transforms ----------------------------------------------------------------------------------
sample("fourier", "fft2-woven-after", lambda: ncd.Identity.of("t m c") >> ncd.Fourier("t m"), {"t": 4, "m": 3, "c": 2},
       lambda p, x: torch.fft.fftn(x[0], dim=(-3, -2)), cod="t m c [complex]", grad=False)
sample("fourier", "ifft-complex-ortho", lambda: ncd.Identity.of("c t [complex]") >> ncd.Fourier(
       "t", inverse=True, norm="ortho", complex_input=True), {"t": 5, "c": 2},
       lambda p, x: torch.fft.ifft(x[0], dim=-1, norm="ortho"), cod="c t [complex]", grad=False)
sample("fourier", "rfft", lambda: ncd.Identity.of("t m") >> ncd.Fourier("t", "f:3", real=True), {"t": 5, "m": 2},
       lambda p, x: torch.fft.rfft(x[0], dim=-2), cod="f:3 m [complex]", grad=False)
sample("fourier", "irfft-forward", lambda: ncd.Identity.of("f:3 c [complex]") >> ncd.Fourier(
       "f:3", "t:4", real=True, inverse=True, norm="forward"), {"c": 2},
       lambda p, x: torch.fft.irfft(x[0], n=4, dim=-2, norm="forward"), cod="t:4 c")
sample("fourier", "spectral-filter", lambda: ncd.Identity.of("t m") >> ncd.Fourier("t", "f:3", real=True) >> ncd.Fourier(
       "f:3 [complex]", "t:4", real=True, inverse=True), {"t": 4, "m": 3},
       lambda p, x: torch.fft.irfft(torch.fft.rfft(x[0], dim=-2), n=4, dim=-2))
error("fourier", "frequencies", lambda: ncd.Fourier("t:8", "f:4", real=True), r"the last axis of 8 points has 5 non-negative"
      r" frequencies, but f has size 4", SizeError)
error("fourier", "norm", lambda: ncd.Fourier("t", norm="unit"), r"fft over 't': norm must be 'backward', 'ortho' or 'forward'",
      ParseError)
error("fourier", "real-needs-axes", lambda: ncd.Fourier("t", real=True), r"rfft over 't': name the axes it makes", ParseError)
error("fourier", "renamed", lambda: ncd.Fourier("t m", "s f", real=True), r"rfft over 't m': axis t comes out as s",
      ParseError)
error("fourier", "not-complex", lambda: ncd.Identity.of("t") >> ncd.Fourier("t", complex_input=True),
      r"t \[complex\]", TypeMismatchError)

# -- parts of a complex number, and the complex product --------------------------------------------
sample("complex_part", "real", lambda: ncd.Identity.of("t m") >> ncd.Fourier("t m") >> ncd.ComplexPart("real"),
       {"t": 4, "m": 3}, lambda p, x: torch.fft.fftn(x[0], dim=(-2, -1)).real, cod="t m")
sample("complex_part", "imag", lambda: ncd.Identity.of("t m [complex]") >> ncd.ComplexPart("imag"), {"t": 4, "m": 3},
       lambda p, x: x[0].imag, cod="t m")
error("complex_part", "part", lambda: ncd.ComplexPart("abs"), r"complex part: 'real' or 'imag', not 'abs'",  # type: ignore[arg-type]
      ParseError)
sample("complex_multiply", "same-wires", lambda: ncd.Identity.of("t m [complex], t m [complex]") >> ncd.ComplexMultiply(),
       {"t": 4, "m": 3}, lambda p, x: x[0] * x[1], cod="t m [complex]", grad=False)
sample("complex_multiply", "filter", lambda: ncd.Identity.of("t m [complex], m [complex]") >> ncd.ComplexMultiply(),
       {"t": 4, "m": 3}, lambda p, x: x[0] * x[1][:, None, :], cod="t m [complex]", grad=False)
error("complex_multiply", "real-operand", lambda: ncd.Identity.of("t m, t m [complex]") >> ncd.ComplexMultiply(),
      r"complex", TypeMismatchError)

# -- a pair wire read as complex numbers, and back (torch.view_as_complex / view_as_real) -----------
sample("complex_view", "to-complex", lambda: ncd.Identity.of("t m r:2") >> ncd.ComplexView("r:2"), {"t": 4, "m": 3},
       lambda p, x: torch.view_as_complex(x[0]), cod="t m [complex]", grad=False)
sample("complex_view", "to-complex-woven-after", lambda: ncd.Identity.of("t r:2 m") >> ncd.ComplexView("r:2"),
       {"t": 4, "m": 3}, lambda p, x: torch.view_as_complex(x[0].transpose(-2, -1).contiguous()), cod="t m [complex]",
       grad=False)
sample("complex_view", "to-real", lambda: ncd.Identity.of("t m [complex]") >> ncd.ComplexView("r:2", to="real"),
       {"t": 4, "m": 3}, lambda p, x: torch.view_as_real(x[0]), cod="t m r:2")
sample("complex_view", "rotation", lambda: ncd.Identity.of("t m r:2, m [complex]") >> (ncd.ComplexView("r:2") @ ncd.Identity.of(
       "m [complex]")) >> ncd.ComplexMultiply() >> ncd.ComplexView("r:2", to="real"), {"t": 4, "m": 3},
       lambda p, x: torch.view_as_real(torch.view_as_complex(x[0]) * x[1][:, None, :]), cod="t m r:2")
error("complex_view", "size", lambda: ncd.ComplexView("r:3"), r"the wire r holding the real and imaginary parts has size 3",
      SizeError)
error("complex_view", "two-wires", lambda: ncd.ComplexView("r:2 s:2"), r"one float wire holds the real and imaginary parts",
      ParseError)
error("complex_view", "to", lambda: ncd.ComplexView("r:2", to="both"),  # type: ignore[arg-type]
      r"to 'complex' or 'real', not 'both'", ParseError)

# -- the complex conjugate (torch.conj; Autoformer's auto-correlation rfft(q) ⊙ conj(rfft(k))) --------------------
sample("complex_conjugate", "woven", lambda: ncd.Identity.of("t m [complex]") >> ncd.ComplexConjugate(), {"t": 4, "m": 3},
       lambda p, x: torch.conj(x[0]), cod="t m [complex]", grad=False)
error("complex_conjugate", "real-wire", lambda: ncd.Identity.of("t m") >> ncd.ComplexConjugate(), r"\[complex\]",
      TypeMismatchError)
