"""Reminder templates: loading, checking at start-up, and rendering (a pure function).

A template is a folder ``<name>/`` with ``subject.txt``, ``body.txt`` and ``body.html``, looked
up first in the store's ``templates_dir`` and then among the built-in ones. Jinja2 renders them
with ``StrictUndefined`` and HTML autoescaping (``.html`` only), so a customer name such as
``<script>`` shows as text. Every template a store's steps name is parsed and rendered against a
sample cart when the worker starts: an unknown parameter stops start-up with a clear message
instead of failing the first real reminder hours later.

A template folder may hold locale variants, sub-folders named by a locale tag with the same
three files (``reminder/de-DE/``, ``reminder/de/``). The customer's ``locale`` picks the most
specific one that exists (``de-DE``, then ``de``, then the folder itself). The ``money`` and
``date`` filters format amounts and dates for that locale with Babel (CLDR data), because
decimal separators, symbol position and month names are not something to write by hand.
"""

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2 import meta

from config.campaigns import Campaign
from config.notifier import ReminderPolicy

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
PARTS = ("subject.txt", "body.txt", "body.html")
PARAMETERS = frozenset({
    "customer_name", "cart_link", "links_to_cart", "lines", "item_count", "total", "currency",
    "store_name", "discount_code", "unsubscribe_link", "step", "steps", "locale",
    "abandoned_at",
})
"""Everything a template may use; each line has name, sku, quantity, price, line_total,
image and url."""
LAYOUT_LOOP = frozenset({"line"})
"""The loop variable the layout's scoped blocks (``line_price``, ``line_total``) hand to a
template that overrides them; the static check cannot see where it comes from, the sample
renders check that it is only used there."""
CENT = Decimal("0.01")
DEFAULT_LOCALE = "en"
"""The formatting locale of customers without a (known) locale."""
_SUBTAG = re.compile(r"[A-Za-z0-9]+")


class TemplateError(Exception):
    """A template that cannot be used; raised at start-up, the message names file and cause."""


@dataclass(frozen=True, slots=True)
class RenderedReminder:
    subject: str
    text: str
    html: str


def money(amount: Decimal) -> str:
    """Amounts as shoppers read them: two decimals, rounded half up ("24.97")."""
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def locale_tag(text: str | None) -> str | None:
    """A locale as folder names spell it: ``de_de`` -> ``de-DE``, ``zh_hant_tw`` ->
    ``zh-Hant-TW`` (language lower case, script title case, region upper case); None for
    nothing usable."""
    parts = _SUBTAG.findall(text or "")
    if not parts or not parts[0].isalpha() or not 2 <= len(parts[0]) <= 3:
        return None  # as the event contract's locale: a two- or three-letter language first
    tag = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            tag.append(part.title())
        elif len(part) == 2 and part.isalpha() or len(part) == 3 and part.isdigit():
            tag.append(part.upper())
        else:
            tag.append(part.lower())
    return "-".join(tag)


def locale_candidates(text: str | None) -> list[str]:
    """The variant folders to try, most specific first: ``de-DE`` -> ``["de-DE", "de"]``."""
    tag = locale_tag(text)
    if tag is None:
        return []
    parts = tag.split("-")
    return ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]


@functools.lru_cache(maxsize=256)
def babel_locale(text: str | None) -> Locale:
    """The Babel locale that formats for ``text``: the most specific one CLDR knows, else
    ``DEFAULT_LOCALE`` (a shop may send any tag; a reminder must not fail over it)."""
    for candidate in locale_candidates(text):
        try:
            return Locale.parse(candidate, sep="-")
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse(DEFAULT_LOCALE)


def format_money(amount: Decimal | str | float, currency: str | None,
                 locale: str | None) -> str:
    """``1234.5``, ``EUR``, ``de-DE`` -> ``1.234,50 €`` (CLDR's pattern and symbol for the
    locale; the currency's own decimals). Without a currency, the number alone."""
    value = Decimal(str(amount))
    if not currency:
        return format_decimal(value, format="#,##0.00", locale=babel_locale(locale))
    return format_currency(value, currency, locale=babel_locale(locale))


def format_day(moment: date | datetime, locale: str | None, length: str = "long") -> str:
    """A date as the locale writes it: ``3. Dezember 2026`` (de), ``December 3, 2026`` (en).
    A datetime is taken on its own (already local) calendar day."""
    day = moment.date() if isinstance(moment, datetime) else moment
    return format_date(day, format=length, locale=babel_locale(locale))


@jinja2.pass_context
def _money_filter(context: jinja2.runtime.Context, amount: Any) -> str:
    return format_money(amount, context.get("currency"), context.get("locale"))


@jinja2.pass_context
def _date_filter(context: jinja2.runtime.Context, moment: Any, length: str = "long") -> str:
    return format_day(moment, context.get("locale"), length)


def environment(templates_dir: Path | None) -> jinja2.Environment:
    """A Jinja2 environment over the store's folder (if any), then the built-in templates."""
    search = [str(templates_dir)] if templates_dir is not None else []
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*search, str(BUILTIN_TEMPLATES)]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["money"] = _money_filter
    env.filters["date"] = _date_filter
    return env


@functools.lru_cache(maxsize=256)
def locale_variants(env: jinja2.Environment, template: str) -> tuple[str, ...]:
    """The locale sub-folders (those with a ``subject.txt``) of ``template``, sorted, from the
    folder that provides the template itself: a store that replaces ``reminder`` in its
    ``templates_dir`` but has no ``reminder/de`` sends its own template to German customers,
    not the built-in German one. Listed once per template (``auto_reload`` is off)."""
    loader = env.loader
    roots = loader.searchpath if isinstance(loader, jinja2.FileSystemLoader) else []
    for root in roots:
        folder = Path(root, template)
        if (folder / "subject.txt").is_file():
            return tuple(sorted(child.name for child in folder.iterdir()
                                if (child / "subject.txt").is_file()))
    return ()


def choose_template(env: jinja2.Environment, template: str, locale: str | None) -> str:
    """The folder to render for a customer's locale: ``name/de-DE``, else ``name/de``, else
    ``name``. A variant counts when it has ``subject.txt`` (the start-up check makes sure
    every variant has all three parts)."""
    variants = locale_variants(env, template)
    for tag in locale_candidates(locale):
        if tag in variants:
            return f"{template}/{tag}"
    return template


def render(env: jinja2.Environment, template: str, context: Mapping[str, Any]) -> RenderedReminder:
    """Render the three parts of ``template`` (its variant for ``context["locale"]``); the
    subject is folded onto one line."""
    folder = choose_template(env, template, context.get("locale"))
    subject, text, html = (env.get_template(f"{folder}/{part}").render(context) for part in PARTS)
    return RenderedReminder(subject=" ".join(subject.split()), text=text, html=html)


SAMPLE_CONTEXT: dict[str, Any] = {
    "customer_name": "Ada",
    "cart_link": "https://shop.example/cart?token=t",
    "links_to_cart": True,
    "lines": [{"name": "Mug", "sku": "MUG-1", "quantity": 2, "price": "9.50",
               "line_total": "19.00", "image": "https://shop.example/mug.png",
               "url": "https://shop.example/mug"}],
    "item_count": 2,
    "total": "19.00",
    "currency": "EUR",
    "store_name": "Example Shop",
    "discount_code": "COMEBACK10",
    "unsubscribe_link": "https://shop.example/unsubscribe?token=t",
    "step": 1,
    "steps": 2,
    "locale": None,
    "abandoned_at": datetime(2026, 12, 3, 9, 30),
}


def check_templates(
    policies: Iterable[tuple[str, ReminderPolicy]],
) -> dict[Path | None, jinja2.Environment]:
    """Load and try every template the policies name; ``TemplateError`` on the first problem.

    Returns the environments by ``templates_dir``, ready for rendering.
    """
    environments: dict[Path | None, jinja2.Environment] = {}
    for store, policy in policies:
        env = environments.get(policy.templates_dir)
        if env is None:
            if policy.templates_dir is not None and not policy.templates_dir.is_dir():
                raise TemplateError(f"{store}: templates_dir {policy.templates_dir} is no folder")
            env = environments[policy.templates_dir] = environment(policy.templates_dir)
        for number, step in enumerate(policy.steps, 1):
            _check_template(env, step.template, f"{store} step {number}")
        for campaign in policy.campaigns:
            for where, template in campaign_templates(campaign, policy):
                _check_template(env, template, f"{store} {where}")
    return environments


def _check_template(env: jinja2.Environment, template: str, where: str) -> None:
    """The template and each of its locale variants, rendered in the variant's locale."""
    for part in PARTS:
        _check_part(env, f"{template}/{part}", where)
    for variant in locale_variants(env, template):
        if locale_tag(variant) != variant:
            raise TemplateError(
                f"{where}: template {template}/{variant}: not a locale tag as folders spell "
                f"it (e.g. de-DE, de, pt-BR)")
        for part in PARTS:
            _check_part(env, f"{template}/{variant}/{part}", where, locale=variant)


def campaign_templates(campaign: Campaign, policy: ReminderPolicy) -> list[tuple[str, str]]:
    """Every (where, template) a campaign can send: its steps as each variant changes them."""
    steps = policy.campaign_steps(campaign)
    found = [(f"campaign {campaign.name} step {n}", step.template)
             for n, step in enumerate(steps, 1)]
    for arm in campaign.variants:
        for n in range(1, len(steps) + 1):
            override = arm.steps.get(n)
            template = (override.template if override else None) or arm.template
            if template:
                found.append((f"campaign {campaign.name} variant {arm.name} step {n}", template))
    return found


def _check_part(env: jinja2.Environment, name: str, where: str,
                locale: str | None = None) -> None:
    assert env.loader is not None
    try:
        source, filename, _ = env.loader.get_source(env, name)
        unknown = meta.find_undeclared_variables(env.parse(source)) - PARAMETERS - LAYOUT_LOOP
        if unknown:
            raise TemplateError(
                f"{where}: template {filename} uses unknown parameter(s) "
                f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(PARAMETERS))}"
            )
        sample = {**SAMPLE_CONTEXT, "locale": locale}
        env.get_template(name).render(sample)
        env.get_template(name).render({**sample, "customer_name": None,
                                       "discount_code": None, "cart_link": None,
                                       "links_to_cart": False, "currency": ""})
    except jinja2.TemplateNotFound:
        raise TemplateError(f"{where}: template {name} not found") from None
    except jinja2.TemplateSyntaxError as exc:
        location = f"{exc.filename or name}:{exc.lineno}"
        raise TemplateError(f"{where}: {location}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{where}: template {name}: {exc.message}") from None
    except TemplateError:
        raise
    except Exception as exc:  # e.g. a filter called wrongly: fails every reminder, so stop now
        raise TemplateError(f"{where}: template {name}: {type(exc).__name__}: {exc}") from None
