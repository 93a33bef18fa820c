"""Which locale the figures are written for, as every surface asks it (the commands, the studio, the
Python API): one place, so an unknown locale reads the same wherever it was given."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..language.errors import InputError, Location, Problem

if TYPE_CHECKING:
    from ..language.figures import Reader
    from ..language.model import PolicySet

LOCALE_HINT = "a locale as CLDR names it, language_TERRITORY: en_US, zh_CN, de_DE, fr_FR, ja_JP"


def unknown_locale(name: str, given_as: str = "--locale") -> InputError:
    """A usage error (exit 2) for a locale CLDR does not know, with the closest one it does."""
    import difflib

    from babel.localedata import locale_identifiers

    # only a close match: a loose one names some other country's language (zh_CM -> zgh_MA)
    close = difflib.get_close_matches(name.replace("-", "_"), sorted(locale_identifiers()), n=1, cutoff=0.8)
    return InputError(Problem("usage", f"unknown locale {name!r}", Location("command line"),
                              (f"did you mean `{close[0]}`? " if close else "") + f"{given_as} takes {LOCALE_HINT}"))


def figures_reader(locale: str | None, policy_set: "PolicySet | None" = None, given_as: str = "--locale"
                   ) -> "Reader":
    """The reader the figures are written for: --locale, else the policy set's `locale:`, else en_US
    (an unknown locale is a usage error, exit 2, with a hint that names how it was `given_as`)."""
    from ..language.figures import reader

    chosen = locale or (policy_set.locale if policy_set is not None else None)
    try:
        return reader(chosen)
    except ValueError:
        raise unknown_locale(str(chosen), given_as) from None
