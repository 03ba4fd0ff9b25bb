"""The reader's language: gettext catalogs (Babel), which language a reader gets, dates in
their format and time zone, and names a mail client cannot turn into links.

The catalogs are `states/locales/<language>/LC_MESSAGES/partnerflow.po`: English is the
source text (the msgids in `states/relationship_letters.py` and the page's templates), and a
message a catalog lacks falls back to it. `python -m partnerflow.activities.i18n` refreshes
the template and every catalog from the sources (tests/test_i18n.py lists none missing).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import cache
from gettext import NullTranslations
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.dates import format_datetime
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from babel.support import Translations

import partnerflow.states

DOMAIN = "partnerflow"
DEFAULT = "en"
SUPPORTED = ("en", "de", "fr", "es", "ja")  # every letter and page, in each
NAMES = {"en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "ja": "日本語"}
LOCALES = Path(partnerflow.states.__file__).resolve().parent / "locales"
SOURCES = Path(partnerflow.states.__file__).resolve().parent.parent  # states/ and portal/ (in the package)

#: The main zone of a country with several, where CLDR's first is a small one; else CLDR's only/first.
MAIN_ZONE = {
    "US": "America/New_York",
    "CA": "America/Toronto",
    "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo",
    "AR": "America/Argentina/Buenos_Aires",
    "CL": "America/Santiago",
    "AU": "Australia/Sydney",
    "NZ": "Pacific/Auckland",
    "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon",
    "DE": "Europe/Berlin",
    "RU": "Europe/Moscow",
    "ID": "Asia/Jakarta",
}


@cache
def translations(language: str) -> NullTranslations:
    """The catalog of `language` (compiled in memory; fuzzy entries left out), else English."""
    po = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == DEFAULT or not po.is_file():
        return NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def supported(tag: str | None) -> str | None:
    """The supported language of a BCP 47 tag (`de-CH` → `de`), or None."""
    if not tag:
        return None
    try:
        language = Locale.parse(tag.strip().replace("-", "_")).language
    except (ValueError, UnknownLocaleError):
        return None
    return language if language in SUPPORTED else None


def of_country(country: str | None) -> str | None:
    """The supported language most people of a country read (`DE` → `de`, `BE` → none of ours)."""
    return supported(f"und_{country}") if country else None


def accepted(header: str | None) -> Iterator[str]:
    """The languages of an Accept-Language header, most wanted first (q=0 never)."""
    ranked = []
    for position, part in enumerate((header or "")[:512].split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                continue
        if tag and weight > 0:
            ranked.append((-weight, position, tag))
    for _, _, tag in sorted(ranked):
        if language := supported(tag):
            yield language


def choose(*candidates: str | Iterable[str] | None) -> str:
    """The first supported language among candidates (tags, or lists of them), else English."""
    for candidate in candidates:
        for tag in [candidate] if candidate is None or isinstance(candidate, str) else candidate:
            if language := supported(tag):
                return language
    return DEFAULT


def zone_of(country: str | None) -> ZoneInfo:
    zones = get_global("territory_zones").get(country or "", [])
    return ZoneInfo(MAIN_ZONE.get(country or "") or (zones[0] if zones else "UTC"))


def when(value: datetime | None, language: str, country: str | None = None) -> str:
    """A moment as the reader writes it, in their country's time and naming the zone."""
    if value is None:
        return translations(language).gettext("soon")
    return format_datetime(value, format="long", tzinfo=zone_of(country), locale=language)


_LINKABLE = re.compile(r"([.@:/\\])(?=\S)")


def unlinkable(name: str) -> str:
    """A name a mail client will not turn into a link: a word joiner (U+2060, invisible)
    after each `.`, `@`, `:`, `/` inside a word, so `evil.example` is no domain to it."""
    return _LINKABLE.sub("\\1\u2060", name)


# --- keeping the catalogs in step with the sources --------------------------------------

METHODS = [
    ("states/**.py", "python"),
    ("activities/**.py", "python"),
    ("portal/**.py", "python"),
    ("portal/templates/**.html", "jinja2"),
]
KEYWORDS = {"N_": None, "_": None}


def extracted() -> Catalog:
    """Every message of the sources: the letters (marked `N_`) and the page (`_`)."""
    template = Catalog(domain=DOMAIN, project="partnerflow", charset="utf-8")
    for filename, line, message, comments, context in extract_from_dir(SOURCES, METHODS, keywords=KEYWORDS):
        template.add(message, None, [(filename, line)], auto_comments=comments, context=context)
    return template


def merged(language: str, template: Catalog) -> Catalog:
    """`language`'s catalog as it is on disk, brought in step with `template` (in memory)."""
    po = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    catalog = Catalog(locale=language, domain=DOMAIN)
    if po.is_file():
        with po.open("rb") as source:
            catalog = read_po(source, locale=language)
    catalog.update(template, no_fuzzy_matching=True)
    return catalog


def untranslated(catalog: Catalog) -> list[str]:
    return [str(m.id) for m in catalog if m.id and (not m.string or m.fuzzy)]


def update() -> list[str]:
    """Refresh partnerflow.pot and merge it into each language's catalog; what is untranslated."""
    template = extracted()
    LOCALES.mkdir(parents=True, exist_ok=True)
    with (LOCALES / f"{DOMAIN}.pot").open("wb") as out:
        write_po(out, template, omit_header=True, sort_output=True)
    missing = []
    for language in SUPPORTED[1:]:
        catalog = merged(language, template)
        po = LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        po.parent.mkdir(parents=True, exist_ok=True)
        with po.open("wb") as out:
            write_po(out, catalog, omit_header=True, sort_output=True, ignore_obsolete=True)
        missing += [f"{language}: {m!r}" for m in untranslated(catalog)]
    return missing


if __name__ == "__main__":
    print("\n".join(update()) or "every catalog is complete")
    sys.exit(0)
