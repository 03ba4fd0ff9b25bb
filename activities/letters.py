"""A declared letter written for its reader: their language, their date format, a plain-text
part and an HTML part made from the same text (escaped, the link as a button, inline CSS
only, nothing remote), and names no mail client turns into links."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2

from partnerflow.activities.i18n import choose, of_country, translations, unlinkable, when
from partnerflow.states.declaration import N_, LetterFacts

BUTTON = N_("Open the request")

_html = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=True,  # a company called <b> is text
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class Written:
    language: str
    subject: str
    text: str
    html: str


def language_of(locale: str | None, country: str | None) -> str:
    """The reader's language: the one given, else their country's, else English."""
    return choose(locale, of_country(country))


def write(
    letter: object,
    *,
    partner_name: str,
    company: str,
    expires_at: datetime | None,
    reason: str,
    link: str,
    locale: str | None,
    country: str | None,
) -> Written:
    """`letter` (a declaration's letter: LetterFacts → subject, body) for this reader."""
    language = language_of(locale, country)
    gettext = translations(language).gettext
    facts = LetterFacts(
        partner_name=unlinkable(partner_name),
        company=unlinkable(company),
        expires_at=expires_at,
        reason=unlinkable(reason),
        link=link,
        expires=when(expires_at, language, country) if expires_at else "",
        translate=gettext,
    )
    assert callable(letter)
    subject, text = letter(facts)
    # The text's line breaks are for plain-text readers: HTML reflows each paragraph (Japanese
    # needs no space where a line was broken).
    joiner = "" if language == "ja" else " "
    paragraphs = [
        {"link": link, "text": ""}
        if link and block.strip() == link
        else {"link": "", "text": joiner.join(block.split("\n"))}
        for block in (b.strip("\n") for b in text.split("\n\n"))
        if block.strip()
    ]
    html = _html.get_template("letter.html").render(
        language=language, subject=subject, paragraphs=paragraphs, button=gettext(BUTTON)
    )
    return Written(language, subject, text, html)
