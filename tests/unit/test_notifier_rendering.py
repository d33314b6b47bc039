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
