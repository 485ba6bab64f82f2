"""Kubernetes resource quantities (``500m``, ``2Gi``, ``1e3``): their value, and the
canonical form the API server stores them in.

The operator compares the CronJob it renders with the one the API server returns
(:func:`ingestion_operator.reconcile.is_subset`); the server rewrites every quantity to its
canonical form (``1024Mi`` comes back as ``1Gi``, ``0.5`` as ``500m``), so the rendering
writes them that way too, or each reconcile would see a difference and write again. The
rules are apimachinery's ``Quantity.String()``: the suffix kind of the input is kept (binary,
decimal SI, decimal exponent), the number is the largest suffix that keeps it an integer,
and a binary value below 1024 or not a whole number is written in decimal SI.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_SI_SUFFIX = {exp: suffix for suffix, exp in _DECIMAL.items()}
_FORM = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?\d+))?")


class QuantityError(ValueError):
    pass


def parse(text: str) -> tuple[Fraction, str]:
    """The value of ``text`` (rounded up to a billionth, as the API server does) and its
    suffix kind: ``binary``, ``decimal`` (SI) or ``exponent``. Raises QuantityError."""
    # a number is what YAML makes of `cpu: 1` or `cpu: 0.5`; the API server reads it as its text
    ok = isinstance(text, (str, int)) or isinstance(text, float) and math.isfinite(text)
    m = _FORM.fullmatch(str(text).strip()) if ok and not isinstance(text, bool) else None
    if not m:
        raise QuantityError(f"{text!r} is not a quantity (e.g. 500m, 1.5, 256Mi, 2Gi, 1e3)")
    sign, number, suffix, exponent = m.groups()
    value = Fraction(number) * (-1 if sign == "-" else 1)
    if exponent is not None:
        value, kind = value * Fraction(10) ** int(exponent), "exponent"
    elif suffix in _BINARY:
        value, kind = value * 2 ** _BINARY[suffix], "binary"
    else:
        value, kind = value * Fraction(10) ** _DECIMAL[suffix or ""], "decimal"
    return Fraction(math.ceil(value * 10**9), 10**9), kind


def value(text: str) -> Fraction:
    return parse(text)[0]


def canonical(text: str | int | float) -> str:
    """``text`` as the API server writes it back; raises QuantityError."""
    amount, kind = parse(text)
    text = str(text).strip()
    if _kept_as_written(text):
        return text
    if amount == 0:
        return "0"
    if kind == "binary" and abs(amount) >= 1024 and amount.denominator == 1:
        n, power = int(amount), 0
        while n % 1024 == 0 and power < 6:
            n, power = n // 1024, power + 1
        return f"{n}{['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'][power]}"
    # decimal: an integer mantissa times a power of ten that is a multiple of three
    exp = 0
    while amount.denominator != 1:
        amount, exp = amount * 10, exp - 1
    n = int(amount)
    while n % 10 == 0:
        n, exp = n // 10, exp + 1
    shift = exp % 3
    n, exp = n * 10**shift, exp - shift
    if kind != "exponent" and exp in _SI_SUFFIX:
        return f"{n}{_SI_SUFFIX[exp]}"
    return f"{n}e{exp}" if exp else str(n)


def _kept_as_written(text: str) -> bool:
    """apimachinery's ``ParseQuantity`` keeps the string it was given when it looks canonical
    already (its fast path: ``+1Gi``, ``2E3`` and ``100.`` come back as written)."""
    sign, number, suffix, exponent = _FORM.fullmatch(text).groups()
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0") or "0"  # its parser drops leading zeros, but keeps one before a fraction
    digits = whole + fraction
    if suffix in _BINARY:
        if fraction or len(whole) + _BINARY[suffix] * 3 // 10 + 1 > 15:
            return False
        return int(digits) & 7 != 0 and int(digits) << _BINARY[suffix] < 2**63
    scale = (int(exponent) if exponent is not None else _DECIMAL[suffix or ""]) - len(fraction)
    if len(digits) > 18 or scale < -9 or int(digits) * 10 ** max(scale, 0) >= 2**63:
        return False
    return scale % 3 == 0 and not digits.endswith("000") and digits[0] != "0"
