"""Samples for the stop-gradient (``ncd.prims.detach``), against torch's ``detach``: its value is its input's, and
the gradients of a wire read both through it and past it (``x + sg(x²)``, a straight-through ``x + sg(x·2 − x)``)
are autograd's (only the path past it)."""

from __future__ import annotations

import ncd
from ncd.errors import ParseError
from ncd.prims.detach import Detach
from ncd.prims.elementwise import Scale, Square
from tests.opdb import error, sample

# x + sg(x²): gradient 1 (2x + 1 if the box passed gradients on)
sample("detach", "beside-its-input", lambda: ncd.Copy("k m") >> (
       ncd.Identity.of("k m") @ (Square() >> Detach())) >> ncd.Add(),
       {"k": 3, "m": 4}, lambda p, x: x[0] + (x[0] ** 2).detach(), cod="k m")
# a straight-through estimator, x + sg(2x − x): the value 2x, the gradient 1
_TWICE_LESS_ONCE = lambda: (ncd.Copy("m") >> ((ncd.Identity.of("m") >> Scale(2.0)) @ (ncd.Identity.of("m") >> Scale(-1.0)))
                            >> ncd.Add())
sample("detach", "straight-through", lambda: ncd.Copy("m") >> (ncd.Identity.of("m") @ (_TWICE_LESS_ONCE() >> Detach()))
       >> ncd.Add(), {"m": 5}, lambda p, x: x[0] + (2 * x[0] - x[0]).detach(), cod="m")
error("detach", "axes", lambda: Detach("k"), r"detach takes a float scalar segment '' .*not 'k'", ParseError)
error("detach", "index", lambda: Detach("[5]"), r"detach takes a float scalar segment .*not '\[5\]' of index",
      ParseError)
