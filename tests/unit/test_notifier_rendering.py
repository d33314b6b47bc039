"""Reminder templates: rendering (autoescape, strictness) and the start-up check."""

import re
from pathlib import Path

import pytest

from config.notifier import ReminderPolicy, ReminderStep
from streams.notifier.rendering import (
    PARAMETERS,
    SAMPLE_CONTEXT,
    TemplateError,
    check_templates,
    environment,
    money,
    render,
)


def write_template(root: Path, name: str, subject: str = "Hi {{ customer_name }}",
                   text: str = "{{ total }}", html: str = "<p>{{ customer_name }}</p>") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text(subject)
    (folder / "body.txt").write_text(text)
    (folder / "body.html").write_text(html)
    return root


def policy(root: Path | None, *templates: str) -> ReminderPolicy:
    return ReminderPolicy(templates_dir=root, steps=[
        ReminderStep(after=60.0 * (n + 1), template=t) for n, t in enumerate(templates)])


def test_sample_context_covers_every_parameter():
    assert set(SAMPLE_CONTEXT) == PARAMETERS


def test_built_in_templates_pass_the_check_and_render_every_line():
    envs = check_templates([("defaults", policy(None, "reminder", "last-chance"))])
    rendered = render(envs[None], "reminder", SAMPLE_CONTEXT)

    assert rendered.subject == "Ada, you left 2 items in your cart at Example Shop"
    assert "2 x Mug (MUG-1)  9.50 EUR = 19.00 EUR" in rendered.text
    assert "https://shop.example/cart?token=t" in rendered.text
    assert "https://shop.example/unsubscribe?token=t" in rendered.html
    assert '<img src="https://shop.example/mug.png"' in rendered.html
    assert "COMEBACK10" in rendered.html


@pytest.mark.parametrize("template", ["reminder", "last-chance"])
def test_the_image_column_is_left_out_when_no_line_has_an_image(template):
    """Every row of the cart table has the same cells: an image cell for every line (empty
    where a line has none) when any line has an image, none at all when no line has one."""
    env = check_templates([("defaults", policy(None, template))])[None]
    with_one = render(env, template, SAMPLE_CONTEXT).html
    without = render(env, template, {**SAMPLE_CONTEXT, "lines": [
        {**line, "image": None} for line in SAMPLE_CONTEXT["lines"]]}).html

    def cells_per_row(html: str) -> set[int]:
        table = html[html.index("border-collapse"):]
        table = table[:table.index("</table>")]
        return {row.count("<td") for row in table.split("<tr")[1:]}

    assert '<td width="72"' in with_one and cells_per_row(with_one) == {3}
    assert '<td width="72"' not in without and cells_per_row(without) == {2}


@pytest.mark.parametrize("template", ["reminder", "last-chance"])
@pytest.mark.parametrize("name", ["Ada", None])
def test_built_in_paragraphs_start_with_a_capital_letter(template, name):
    """After "Hello Ada," comes a new sentence: "You left ...", not "you left ..."."""
    env = check_templates([("defaults", policy(None, template))])[None]
    rendered = render(env, template, {**SAMPLE_CONTEXT, "customer_name": name})

    paragraphs = [re.sub(r"<[^>]+>", "", p).strip()
                  for p in re.findall(r"<p[^>]*>(.*?)</p>", rendered.html, re.S)]
    assert len(paragraphs) >= 3 and all(p[0].isupper() for p in paragraphs), paragraphs
    greeting, second = rendered.text.split("\n\n")[:2]
    assert greeting.startswith("Hello") and second[0].isupper(), second


def test_html_is_autoescaped_but_text_is_not(tmp_path):
    env = environment(write_template(tmp_path, "t"))
    rendered = render(env, "t", {**SAMPLE_CONTEXT, "customer_name": "<b>&"})

    assert rendered.html == "<p>&lt;b&gt;&amp;</p>"
    assert rendered.subject == "Hi <b>&"


def test_subject_is_folded_onto_one_line(tmp_path):
    env = environment(write_template(tmp_path, "t", subject="Hi\n{{ customer_name }}\r\n!"))

    assert render(env, "t", SAMPLE_CONTEXT).subject == "Hi Ada !"


def test_an_unknown_parameter_fails_the_check_with_file_and_name(tmp_path):
    write_template(tmp_path, "typo", text="{{ totl }} {{ custmer }}")

    with pytest.raises(TemplateError) as info:
        check_templates([("tea", policy(tmp_path, "typo"))])

    message = str(info.value)
    assert "tea step 1" in message and "typo/body.txt" in message
    assert "unknown parameter(s) custmer, totl" in message


def test_an_unknown_line_attribute_fails_the_check(tmp_path):
    write_template(tmp_path, "attr", html="{% for line in lines %}{{ line.colour }}{% endfor %}")

    with pytest.raises(TemplateError, match="colour"):
        check_templates([("tea", policy(tmp_path, "attr"))])


def test_a_template_that_breaks_on_missing_optional_values_fails_the_check(tmp_path):
    write_template(tmp_path, "upper", subject="{{ discount_code.upper() }}")

    with pytest.raises(TemplateError, match="upper/subject.txt"):
        check_templates([("tea", policy(tmp_path, "upper"))])


def test_syntax_errors_and_missing_templates_fail_the_check(tmp_path):
    write_template(tmp_path, "broken", text="{% for %}")

    with pytest.raises(TemplateError, match=r"broken/body.txt:1"):
        check_templates([("tea", policy(tmp_path, "broken"))])
    with pytest.raises(TemplateError, match="template nowhere/subject.txt not found"):
        check_templates([("tea", policy(tmp_path, "nowhere"))])
    with pytest.raises(TemplateError, match="no folder"):
        check_templates([("tea", policy(tmp_path / "missing", "reminder"))])


def test_a_store_folder_overrides_a_built_in_template_and_falls_back_to_the_others(tmp_path):
    write_template(tmp_path, "reminder", subject="Custom {{ store_name }}")
    envs = check_templates([("tea", policy(tmp_path, "reminder", "last-chance"))])

    assert render(envs[tmp_path], "reminder", SAMPLE_CONTEXT).subject == "Custom Example Shop"
    assert render(envs[tmp_path], "last-chance", SAMPLE_CONTEXT).subject.startswith("Last chance")


@pytest.mark.parametrize(("amount", "text"), [("12.999", "13.00"), ("4.333", "4.33"),
                                              ("5", "5.00"), ("0.005", "0.01")])
def test_money(amount, text):
    from decimal import Decimal

    assert money(Decimal(amount)) == text


# -- locales ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tag", "candidates"), [
    ("de-DE", "de-DE", ["de-DE", "de"]),
    ("de_de", "de-DE", ["de-DE", "de"]),
    ("DE", "de", ["de"]),
    ("zh_hant_tw", "zh-Hant-TW", ["zh-Hant-TW", "zh-Hant", "zh"]),
    ("es-419", "es-419", ["es-419", "es"]),
    (None, None, []), ("", None, []), ("--", None, []), ("12-DE", None, []),
])
def test_locale_tags_and_the_fallback_order(text, tag, candidates):
    from streams.notifier.rendering import locale_candidates, locale_tag

    assert locale_tag(text) == tag
    assert locale_candidates(text) == candidates


@pytest.mark.parametrize(("amount", "currency", "locale", "expected"), [
    ("1234.5", "EUR", "de-DE", "1.234,50\xa0€"),
    ("1234.5", "EUR", "de", "1.234,50\xa0€"),
    ("1234.5", "EUR", "en-US", "€1,234.50"),
    ("1234.5", "EUR", None, "€1,234.50"),  # no locale: English
    ("1234.5", "CHF", "de-CH", "CHF\xa01'234.50"),
    ("1234.5", "EUR", "fr-FR", "1\u202f234,50\xa0€"),
    ("1234", "JPY", "ja-JP", "￥1,234"),  # the currency's own decimals: none
    ("1234.5", "EUR", "xx-YY", "€1,234.50"),  # a tag CLDR does not know: English
    ("1234.5", "EUR", "de-ZZ", "1.234,50\xa0€"),  # an unknown region: the language's
    ("1234.5", "", "de-DE", "1.234,50"),  # no currency: the number alone
])
def test_money_is_formatted_for_the_locale_by_babel(amount, currency, locale, expected):
    from streams.notifier.rendering import format_money

    assert format_money(amount, currency, locale) == expected


def test_dates_are_formatted_for_the_locale():
    from datetime import date

    from streams.notifier.rendering import format_day

    assert format_day(date(2026, 12, 3), "de-DE") == "3. Dezember 2026"
    assert format_day(date(2026, 12, 3), None) == "December 3, 2026"
    assert format_day(date(2026, 12, 3), "fr", "short") == "03/12/2026"


def write_variants(root: Path) -> Path:
    for folder, word in (("greet", "base"), ("greet/de", "de"), ("greet/de-DE", "de-DE"),
                         ("greet/pt-BR", "pt-BR")):
        write_template(root, folder, subject=word,
                       text="{{ total|money }} {{ abandoned_at|date }}")
    return root


@pytest.mark.parametrize(("locale", "chosen"), [
    ("de-DE", "de-DE"), ("de_de", "de-DE"), ("de-AT", "de"), ("de", "de"), ("pt-BR", "pt-BR"),
    ("pt-PT", "base"), ("fr-FR", "base"), (None, "base"), ("not a locale!", "base"),
])
def test_the_most_specific_locale_variant_is_chosen(tmp_path, locale, chosen):
    root = write_variants(tmp_path)
    env = check_templates([("s", policy(root, "greet"))])[root]
    rendered = render(env, "greet", {**SAMPLE_CONTEXT, "locale": locale, "total": "1234.50"})
    assert rendered.subject == chosen
    if chosen.startswith("de"):  # the folder is the language's, the format the locale's
        amount = "€\xa01.234,50" if locale == "de-AT" else "1.234,50\xa0€"
        assert rendered.text == f"{amount} 3. Dezember 2026"


def test_the_german_reminder_is_built_in():
    env = check_templates([("defaults", policy(None, "reminder"))])[None]
    context = {**SAMPLE_CONTEXT, "locale": "de-DE", "total": "1234.50"}
    rendered = render(env, "reminder", context)

    assert rendered.subject == "Ada, Ihr Warenkorb bei Example Shop wartet auf Sie"
    assert "am 3. Dezember 2026 haben Sie 2 Artikel" in rendered.text
    assert "2 x Mug (MUG-1)  9,50\xa0€ = 19,00\xa0€" in rendered.text
    assert "Summe: 1.234,50\xa0€" in rendered.text
    assert '<html lang="de">' in rendered.html and "Zurück zum Warenkorb" in rendered.html
    assert "1.234,50\xa0€</td>" in rendered.html and "9,50\xa0€</span>" in rendered.html
    for english in ("Total", "Unsubscribe", "Return to your cart", "Use the code", "EUR"):
        assert english not in rendered.text + rendered.html, english
    # without a discount code or a cart link, a guest: still German, still well-formed
    guest = render(env, "reminder", {**context, "customer_name": None, "discount_code": None,
                                     "links_to_cart": False})
    assert guest.text.startswith("Guten Tag,") and "Example Shop besuchen" in guest.html
    austrian = render(env, "reminder", {**context, "locale": "de-AT"})  # reminder/de
    assert "Summe: €\xa01.234,50" in austrian.text


def test_a_store_template_without_a_german_variant_is_not_replaced_by_the_built_in_one(
        tmp_path):
    root = write_template(tmp_path, "reminder", subject="Our own")
    env = check_templates([("s", policy(root, "reminder"))])[root]
    assert render(env, "reminder", {**SAMPLE_CONTEXT, "locale": "de-DE"}).subject == "Our own"


@pytest.mark.parametrize(("folder", "files", "message"), [
    ("greet/de", {"body.html": None}, r"greet/de/body.html not found"),
    ("greet/german", {}, r"greet/german: not a locale tag"),
    ("greet/de_DE", {}, r"greet/de_DE: not a locale tag"),
    ("greet/de", {"body.txt": "{{ totl|money }}"}, r"unknown parameter\(s\) totl"),
    ("greet/de", {"body.txt": "{{ total|money(2) }}"}, r"greet/de/body.txt"),
])
def test_broken_locale_variants_stop_start_up(tmp_path, folder, files, message):
    write_template(tmp_path, "greet")
    write_template(tmp_path, folder)
    for name, content in files.items():
        path = tmp_path / folder / name
        if content is None:
            path.unlink()
        else:
            path.write_text(content)
    with pytest.raises(TemplateError, match=message):
        check_templates([("s", policy(tmp_path, "greet"))])
