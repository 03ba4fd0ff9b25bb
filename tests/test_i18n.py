"""The customer's language: every letter and page text in every language, letters as text and
HTML, the reader's language chosen as promised, names that no mail client makes a link."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from email import message_from_bytes
from html import escape, unescape
from pathlib import Path

import pytest

from partnerflow.activities.email import Letter, Mailer, SmtpSettings
from partnerflow.activities.i18n import (
    SUPPORTED,
    accepted,
    choose,
    extracted,
    merged,
    of_country,
    translations,
    unlinkable,
    untranslated,
    when,
)
from partnerflow.activities.letters import write
from partnerflow.mailsink import text_of
from partnerflow.states.relationship_letters import LETTERS

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
LINK = "http://127.0.0.1:8080/invitation?relationship=relationship%2Fp-100%2Fc-1&token=" + "T" * 43
EXPIRES = datetime(2026, 12, 28, 14, 0, tzinfo=UTC)
HREF = f'href="{escape(LINK)}"'  # as HTML writes it (& is &amp;)
HOSTILE = "Evil <b>Corp</b> evil.example http://evil.example/x admin@evil.example & {link}"
PLACEHOLDER = re.compile(r"\{\w+\}")
# What mail clients turn into links: a URL, a bare domain, an address.
LINKABLE = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)+\b|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def letter(name: str, language: str, company: str = "Contoso Ltd", partner: str = "Fabrikam") -> tuple[str, str, str]:
    written = write(
        LETTERS[name],
        partner_name=partner,
        company=company,
        expires_at=EXPIRES,
        reason="too expensive",
        link=LINK if "{link}" in LETTERS[name].body else "",
        locale=language,
        country="DE",
    )
    assert written.language == language
    return written.subject, written.text, written.html


def test_every_message_of_letters_and_pages_is_translated_in_every_language() -> None:
    template = extracted()
    assert len(template) > 60, "the letters and the page's texts are all extracted"
    for language in SUPPORTED[1:]:
        catalog = merged(language, template)
        assert untranslated(catalog) == [], f"{language}: run `python -m partnerflow.activities.i18n` and translate"
        for message in catalog:
            if message.id:
                wanted = set(PLACEHOLDER.findall(str(message.id)))
                assert set(PLACEHOLDER.findall(str(message.string))) == wanted, (language, message.id)


@pytest.mark.parametrize("language", SUPPORTED)
@pytest.mark.parametrize("name", sorted(LETTERS))
def test_every_letter_renders_as_text_and_html_in_every_language(name: str, language: str) -> None:
    subject, text, html = letter(name, language)
    english = letter(name, "en")
    assert "Contoso Ltd" in subject + text and "{" not in subject + text
    if language != "en":
        assert (subject, text) != english[:2], f"{name} is not in {language}"
    assert f'<html lang="{language}">' in html and f"<title>{subject}</title>" in unescape(html)
    if "{link}" in LETTERS[name].body:
        assert text.count(LINK) == 1 and html.count(HREF) == 1, "the link, once, as a button"
    for remote in ("<img", "<link", "<style", "<script", "src=", "url("):
        assert remote not in html, f"{remote}: inline CSS only, nothing remote"
    assert re.findall(r'href="([^"]*)"', html) in ([], [escape(LINK)])


@pytest.mark.parametrize("language", SUPPORTED)
def test_names_become_neither_markup_nor_links(language: str) -> None:
    for name in ("invitation", "customer_suspended", "partner_removed"):
        subject, text, html = letter(name, language, company=HOSTILE, partner="fabrikam.example")
        assert "<b>" not in html and "&lt;b&gt;" in html
        found = {m for m in LINKABLE.findall(subject + "\n" + text)} - {LINK}
        assert found == set(), f"{name}/{language}: a mail client would link {found}"
        visible = unescape(re.sub(r"<[^>]+>", " ", html.replace(HREF, "")))
        assert {m for m in LINKABLE.findall(visible)} - {LINK} == set()
        assert "{link}" in text.replace("\u2060", ""), "a brace in a name stays text"


def test_the_message_is_multipart_with_both_parts_and_its_language() -> None:
    subject, text, html = letter("invitation", "de")
    built = Mailer(SmtpSettings()).build(Letter("a@b.example", subject, text, html, "de"), "<x@partnerflow>")
    parsed = message_from_bytes(built.as_bytes())
    assert parsed.get_content_type() == "multipart/alternative" and parsed["Content-Language"] == "de"
    assert text_of(parsed) == text and text_of(parsed, "html").strip() == html.strip()
    assert "möchte der Cloud-Reseller von Contoso Ltd werden" in text_of(parsed)


def test_dates_are_in_the_reader_s_format_and_time_zone_named() -> None:
    assert when(EXPIRES, "de", "DE") == "28. Dezember 2026, 15:00:00 MEZ"
    assert when(EXPIRES, "en", "US").startswith("December 28, 2026, 9:00:00") and when(EXPIRES, "en", "US").endswith(
        "EST"
    )
    assert when(EXPIRES, "ja", "JP").startswith("2026年12月28日 23:00:00")
    assert when(None, "fr") == "bientôt"


def test_the_reader_s_language_is_chosen_as_promised() -> None:
    assert choose("de-CH") == "de" and choose("pt-BR") == "en", "a language partnerflow does not write: English"
    assert of_country("JP") == "ja" and of_country("BE") is None and of_country(None) is None
    assert list(accepted("fr-CA;q=0.4, ja;q=0.9, de;q=0, en;q=0.1")) == ["ja", "fr", "en"]
    assert list(accepted("xx, ;q=, *")) == []
    # The page: its own choice, the start's locale, the browser's, the country's, English.
    assert choose(None, None, accepted("es-MX,es;q=0.9"), of_country("DE")) == "es"
    assert choose("ja", "de", accepted("es"), "fr") == "ja"
    assert choose("evil<script>", None, [], None) == "en"


def test_a_missing_translation_falls_back_to_english() -> None:
    assert translations("de").gettext("a sentence no catalog has") == "a sentence no catalog has"
    assert translations("pt").gettext("Accept") == "Accept"


def test_unlinkable_changes_nothing_a_reader_sees() -> None:
    name = unlinkable("contoso.example a@b.c http://x/y Ltd.")
    assert name.replace("\u2060", "") == "contoso.example a@b.c http://x/y Ltd."
    assert name.endswith("Ltd."), "a full stop at the end is left alone"


@pytest.mark.parametrize(("name", "language"), [("invitation", "de"), ("invitation", "ja"), ("reminder", "fr")])
def test_snapshots_reviewed_by_eye(name: str, language: str) -> None:
    """Committed renderings (tests/snapshots/), read by a person once; a change shows in review.
    `PARTNERFLOW_UPDATE_SNAPSHOTS=1 pytest tests/test_i18n.py` rewrites them."""
    subject, text, html = letter(name, language)
    rendered = {"txt": f"Subject: {subject}\n\n{text}", "html": html}
    for suffix, content in rendered.items():
        path = SNAPSHOTS / f"{name}.{language}.{suffix}"
        if os.environ.get("PARTNERFLOW_UPDATE_SNAPSHOTS"):
            path.parent.mkdir(exist_ok=True)
            path.write_text(content)
        assert path.read_text() == content, f"{path.name} changed: review it and update the snapshots"
