"""Reminder templates: loading, checking at start-up, and rendering (a pure function).

A template is a folder ``<name>/`` with ``subject.txt``, ``body.txt`` and ``body.html``, looked
up first in the store's ``templates_dir`` and then among the built-in ones. Jinja2 renders them
with ``StrictUndefined`` and HTML autoescaping (``.html`` only), so a customer name such as
``<script>`` shows as text. Every template a store's steps name is parsed and rendered against a
sample cart when the worker starts: an unknown parameter stops start-up with a clear message
instead of failing the first real reminder hours later.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from config.campaigns import Campaign
from config.notifier import ReminderPolicy

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
PARTS = ("subject.txt", "body.txt", "body.html")
PARAMETERS = frozenset({
    "customer_name", "cart_link", "links_to_cart", "lines", "item_count", "total", "currency",
    "store_name", "discount_code", "unsubscribe_link", "step", "steps",
})
"""Everything a template may use; each line has name, sku, quantity, price, line_total,
image and url."""
CENT = Decimal("0.01")


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


def environment(templates_dir: Path | None) -> jinja2.Environment:
    """A Jinja2 environment over the store's folder (if any), then the built-in templates."""
    search = [str(templates_dir)] if templates_dir is not None else []
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*search, str(BUILTIN_TEMPLATES)]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )


def render(env: jinja2.Environment, template: str, context: Mapping[str, Any]) -> RenderedReminder:
    """Render the three parts of ``template``; the subject is folded onto one line."""
    subject, text, html = (env.get_template(f"{template}/{part}").render(context) for part in PARTS)
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
            for part in PARTS:
                _check_part(env, f"{step.template}/{part}", f"{store} step {number}")
        for campaign in policy.campaigns:
            for where, template in campaign_templates(campaign, policy):
                for part in PARTS:
                    _check_part(env, f"{template}/{part}", f"{store} {where}")
    return environments


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


def _check_part(env: jinja2.Environment, name: str, where: str) -> None:
    assert env.loader is not None
    try:
        source, filename, _ = env.loader.get_source(env, name)
        unknown = meta.find_undeclared_variables(env.parse(source)) - PARAMETERS
        if unknown:
            raise TemplateError(
                f"{where}: template {filename} uses unknown parameter(s) "
                f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(PARAMETERS))}"
            )
        env.get_template(name).render(SAMPLE_CONTEXT)
        env.get_template(name).render({**SAMPLE_CONTEXT, "customer_name": None,
                                       "discount_code": None, "cart_link": None,
                                       "links_to_cart": False})
    except jinja2.TemplateNotFound:
        raise TemplateError(f"{where}: template {name} not found") from None
    except jinja2.TemplateSyntaxError as exc:
        location = f"{exc.filename or name}:{exc.lineno}"
        raise TemplateError(f"{where}: {location}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{where}: template {name}: {exc.message}") from None
