"""Numbers as the reader reads them: grouped, with the decimal mark and the compact forms of their
locale (en_US 12.3M, zh_CN 1234.6万, de_DE 12,3 Mio.), money with its currency, shares as %.

Every place that shows a figure to people (the report, the workbook's headers and formats, `kam
diff`, `kam changes`, the notebook display) asks a `Reader` here, with the figure's unit
(`engine.language.units`), so one value reads the same everywhere. The locale data is CLDR's,
through Babel: nothing here is a hand-written table. Formatting many values goes through a fast
path built from the locale's own symbols and grouping, which is checked against Babel on probe
values when the reader is made (and Babel does every value itself where the two would differ).

`because` texts keep their own format specs (`{profit:,.0f}`): the policy author chose those.
Exact values for machines (CSV, JSON, the manifest) stay `engine.language.numbers.number_text`.
"""

from __future__ import annotations

import decimal
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .numbers import MISSING_TEXT
from .units import COUNT, MONEY, PERCENT, Unit

DEFAULT_LOCALE = "en_US"
# digits enough for any float written out in full (1.8e308 with 12 decimals): the default context's
# 28 made quantize fail on 1e26
_WIDE = decimal.Context(prec=400, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_PROBES = (0.0, -0.0, 0.001, -0.001, 0.005, 0.015, 1.005, 2.5, 3.5, 7, -7, 12.5, 999.995, 1234.5, -1234.5,
           12345.678, 123456.7, 1234567.891, -12345678.9, 123456789012.5, 1e15, 0.2195, -0.5)


def known_locale(name: str) -> bool:
    """Whether CLDR (through Babel) has this locale (`zh_CN`, `de-DE`, `fr`)."""
    from babel import Locale, UnknownLocaleError, localedata

    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):  # a name, never a path into Babel's data folder
        return False
    if localedata.exists(name.replace("-", "_")):  # a file of CLDR's: no need to load it (kam check starts light)
        return True
    try:
        Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return False
    return True


def _finite(value: Any) -> bool:
    return value is not None and value is not False and value is not True and isinstance(value, (int, float)) \
        and math.isfinite(value)


@dataclass(frozen=True)
class Reader:
    """How one locale writes numbers. Made by `reader()`, which caches one per locale."""

    locale: str
    _decimal: str = field(repr=False, default=".")
    _group: str = field(repr=False, default=",")
    _minus: str = field(repr=False, default="-")
    _grouping: tuple[int, int] = field(repr=False, default=(3, 3))
    _percent: tuple[str, str] = field(repr=False, default=("", "%"))
    _fast: bool = field(repr=False, default=False)

    # -- one figure -------------------------------------------------------------------------

    def number(self, value: Any, unit: Unit | None = None) -> str:
        """A figure in full, as a table cell shows it: `1,234,567.89`, `22.0%`, `1,234`; `missing`
        for no value. Money carries no symbol here: the column's label says the currency."""
        if not _finite(value):
            return MISSING_TEXT
        unit = unit or Unit()
        decimals = unit.shown_decimals
        if unit.kind == PERCENT:
            return self._fixed(float(value), decimals, percent=True)
        return self._fixed(float(value), decimals)

    def compact(self, value: Any, unit: Unit | None = None) -> str:
        """A headline figure: short, in the locale's compact form, money with its currency symbol
        (`CN¥1.0M`, `¥103.4万`); shares and counts as `number` writes them."""
        from babel.numbers import format_compact_currency, format_compact_decimal

        if not _finite(value):
            return MISSING_TEXT
        unit = unit or Unit()
        if unit.kind in (PERCENT, COUNT) or abs(value) < 10_000:
            return self._whole(value, unit)
        if unit.kind == MONEY and unit.currency:
            text = format_compact_currency(value, unit.currency, locale=self.locale, fraction_digits=1)
        else:
            text = format_compact_decimal(value, locale=self.locale, fraction_digits=1)
        # a locale without a short form at this size (de writes 10000): in full, grouped
        return self._whole(value, unit) if re.search(r"\d{5}", text) else text

    def _whole(self, value: float, unit: Unit) -> str:
        """A figure without decimals; money with its currency where the locale writes it (`CN¥12,345`,
        `12.345 CN¥`)."""
        from babel import Locale
        from babel.numbers import format_currency

        if unit.kind != MONEY:
            return self.number(value, unit)
        if not unit.currency:
            return self.number(value, Unit(MONEY, None, 0))
        pattern = Locale.parse(self.locale).currency_formats["standard"].pattern.split(";")[0]
        return format_currency(value, unit.currency, format=re.sub(r"\.0+", "", pattern), locale=self.locale,
                               currency_digits=False)

    def label(self, text: str, unit: Unit | None = None) -> str:
        """A column or axis label with the currency its money is in: `profit (CN¥)` (shares and counts
        say their unit in every figure: `22.0%`)."""
        if unit is not None and unit.kind == MONEY and unit.currency:
            return f"{text} ({self.currency_symbol(unit.currency)})"
        return text

    def currency_symbol(self, currency: str | None) -> str:
        """The symbol this locale writes for a currency (`¥` in zh_CN, `CN¥` in en_US)."""
        from babel.numbers import get_currency_symbol

        return get_currency_symbol(currency, locale=self.locale) if currency else ""

    def numbers(self, values: Any, unit: Unit | None = None) -> list[str]:
        """Many figures of one unit (a column), each as `number` writes it."""
        return [self.number(v, unit) for v in values]

    # -- how ----------------------------------------------------------------------------------

    def _fixed(self, x: float, decimals: int | None, percent: bool = False) -> str:
        if not self._fast:
            return self._babel(x, decimals, percent)
        d = decimal.Decimal(repr(x))  # exact: a float has at most 17 significant digits
        if percent:
            d = d.scaleb(2)
        negative = d.is_signed()
        d = abs(d)
        if decimals is None:  # up to 3 decimals, trailing zeros dropped (CLDR's #,##0.###)
            text = format(d.quantize(decimal.Decimal("0.001"), rounding=decimal.ROUND_HALF_EVEN, context=_WIDE), "f")
            if "." in text:
                text = text.rstrip("0").rstrip(".")
        else:
            text = format(d.quantize(decimal.Decimal(1).scaleb(-decimals), rounding=decimal.ROUND_HALF_EVEN,
                                     context=_WIDE), "f")
        whole, _, frac = text.partition(".")
        out = self._grouped(whole) + (self._decimal + frac if frac else "")
        if percent:
            out = self._percent[0] + out + self._percent[1]
        return self._minus + out if negative else out

    def _grouped(self, digits: str) -> str:
        size, rest = self._grouping
        parts: list[str] = []
        while len(digits) > size:
            parts.insert(0, digits[-size:])
            digits = digits[:-size]
            size = rest
        return self._group.join([digits, *parts]) if parts else digits

    def _babel(self, x: float, decimals: int | None, percent: bool = False) -> str:
        from babel.numbers import format_decimal, format_percent

        pattern = _pattern(self.locale, percent, decimals)
        return format_percent(x, format=pattern, locale=self.locale) if percent else \
            format_decimal(x, format=pattern, locale=self.locale)


@lru_cache(maxsize=64)
def _pattern(locale: str, percent: bool, decimals: int | None) -> str:
    """The locale's own pattern (its grouping, where its sign goes) with the decimals asked for."""
    from babel import Locale

    loc = Locale.parse(locale)
    base = (loc.percent_formats if percent else loc.decimal_formats)[None].pattern.split(";")[0]
    digits = "".join(c for c in base if c in "#,0.")
    whole = digits.split(".")[0]
    frac = "###" if decimals is None else "0" * decimals
    return base.replace(digits, whole + ("." + frac if frac else ""), 1)


@lru_cache(maxsize=64)
def reader(locale: str | None = None) -> Reader:
    """The reader of a locale (`zh_CN`, `de-DE`; None: en_US). An unknown locale is a ValueError."""
    from babel import Locale, UnknownLocaleError
    from babel.numbers import get_decimal_symbol, get_group_symbol, get_minus_sign_symbol, parse_pattern

    name = (locale or DEFAULT_LOCALE).replace("-", "_")
    try:
        loc = Locale.parse(name)
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(f"unknown locale {locale!r}") from None
    name = str(loc)
    number = parse_pattern(loc.decimal_formats[None].pattern)
    pct = parse_pattern(loc.percent_formats[None].pattern)
    grouping = (int(number.grouping[0]), int(number.grouping[1]))
    built = Reader(name, get_decimal_symbol(name), get_group_symbol(name), get_minus_sign_symbol(name), grouping,
                   (pct.prefix[0], pct.suffix[0]), _fast=True)
    slow = Reader(name)
    agrees = all(built._fixed(x, d, p) == slow._fixed(x, d, p)
                 for x in _PROBES for d in (None, 0, 1, 2) for p in (False, True))
    return built if agrees else slow


def excel_format(unit: Unit | None = None) -> str:
    """The Excel number format of a unit, from the same definition as `Reader.number`: money
    `#,##0.00` (its shown decimals), a percentage `0.0%`, a count `#,##0`, a plain number `General`
    (`#,##0.00` where it declares decimals). The codes are Excel's locale-neutral ones: Excel shows
    them with the reader's own grouping and decimal marks. Money carries no symbol: the column's
    label says the currency (`Reader.label`)."""
    unit = unit or Unit()
    decimals = unit.shown_decimals
    fraction = "." + "0" * decimals if decimals else ""
    if unit.kind == PERCENT:
        return f"0{fraction}%"
    if unit.kind in (MONEY, COUNT) or decimals is not None:
        return f"#,##0{fraction}"
    # a plain number shows what it holds; `#,##0.###` would end whole numbers in a bare point ("7.")
    return "General"
