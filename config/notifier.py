"""Settings of the reminder notifier: SMTP, link signing, and the reminder policy of each store.

The policy is one model (``ReminderPolicy``): ``notifier.reminders`` holds the defaults and
``notifier.stores.<id>`` overrides any of its fields for one store. Every store's merged policy
is validated when the settings load, so a typo in a store section stops the worker at start-up.
Secrets (the SMTP password, the link secret) are ``SecretStr``: they never show in a repr, a log
line or a settings error.
"""

from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from config.campaigns import (
    Campaign,
    ReentryLimit,
    ReminderStep,
    default_campaign,
)
from config.durations import Duration
from config.secrets import read_secret
from schemas.common import Email, TimeZone, Url

MIN_SECRET_BYTES = 16
UNSUBSCRIBE_ROUTE = "/cartwatch/unsubscribe/"
CLICK_ROUTE = "/cartwatch/r/"
"""The worker's routes of the unsubscribe and click links (``streams.operator.web``)."""
ENV_PREFIX = "CARTWATCH_"


OperatorEvent = Literal["sent", "failed", "skipped", "deferred"]
_FAILED_ONLY: tuple[OperatorEvent, ...] = ("failed",)


class QuietHours(BaseModel):
    """A daily window, in the customer's local time, in which no reminder goes out.

    ``start`` after ``end`` spans midnight (21:00-08:00). A reminder falling inside is deferred
    to the window's end, never dropped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time
    end: time

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("quiet_hours start and end must differ")
        return self


class ReminderPolicy(BaseModel):
    """How one store reminds: sequence, consent, pressure limits, sender, links, channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    store_name: str | None = Field(None, max_length=200)
    steps: list[ReminderStep] = Field(
        default_factory=lambda: [ReminderStep(after=86_400.0)], min_length=1, max_length=10
    )
    require_marketing_consent: bool = True
    cancel_on_reactivation: bool = True
    frequency_cap: Duration | None = 16 * 3_600.0
    """At most one reminder per email address in this long, across carts (None: no cap)."""
    quiet_hours: QuietHours | None = None
    timezone: TimeZone = "UTC"
    """Time zone of quiet hours for customers whose own time zone is unknown."""
    stale_after: Duration = 2 * 86_400.0
    """A step decided this long after it fell due (worker down, backlog) is skipped as stale."""
    from_address: Email = "reminders@cartwatch.invalid"
    from_name: str | None = Field(None, max_length=200)
    reply_to: Email | None = None
    bcc: list[Email] = Field(default_factory=list, max_length=20)
    templates_dir: Path | None = None
    """Searched first for a step's template; the built-in templates are the fallback."""
    discount_code: str | None = Field(None, max_length=100)
    shop_url: Url | None = None
    """The shop's home page: the email's link when the cart has none, so every reminder leads
    somewhere (a shop that sends no ``cart_url`` would otherwise get emails without a button)."""
    unsubscribe_url: Url = "http://127.0.0.1:6066/cartwatch/unsubscribe/"
    click_url: Url | None = None
    """Where reminders' cart links lead: the worker's ``/cartwatch/r/`` at its public address
    (the click token is appended). None: derived from ``unsubscribe_url`` when that is the
    worker's own unsubscribe endpoint (so a deployment that already publishes the worker for
    unsubscribes needs no new setting); else links lead straight to the cart, uncounted."""
    link_ttl: Duration = 30 * 86_400.0
    webhook_url: Url | None = None
    webhook_fallback: bool = True
    """Use the webhook when the customer has no email address or no marketing consent."""
    webhook_timeout: Duration = 10.0
    operator_events: list[OperatorEvent] = Field(default_factory=lambda: list(_FAILED_ONLY))
    campaigns: list[Campaign] = Field(default_factory=list, max_length=50)
    """In order: an abandonment enters the first whose segment matches (none: ``steps`` make
    one ``default`` campaign for every abandonment)."""
    reentry_limit: ReentryLimit | None = None
    """At most ``count`` reminders per address per ``period`` across carts and campaigns."""

    @field_validator("campaigns", mode="before")
    @classmethod
    def _each_campaign(cls, value: Any) -> Any:
        """Validate campaigns one by one, so an error names the campaign, not its index."""
        if not isinstance(value, list):
            return value
        campaigns = []
        for index, raw in enumerate(value):
            if isinstance(raw, Campaign):
                campaigns.append(raw)
                continue
            name = raw.get("name") if isinstance(raw, dict) else None
            try:
                campaigns.append(Campaign.model_validate(raw))
            except ValidationError as exc:
                problems = "; ".join(
                    ": ".join(filter(None, ('.'.join(str(p) for p in error['loc']),
                                            error['msg'].removeprefix("Value error, "))))
                    for error in exc.errors()
                )
                label = repr(name) if isinstance(name, str) else f"#{index + 1}"
                raise ValueError(f"campaign {label}: {problems}") from None
        return campaigns

    @model_validator(mode="after")
    def _steps_in_order(self) -> Self:
        afters = [step.after for step in self.steps]
        if afters != sorted(set(afters)):
            raise ValueError("steps must have strictly increasing 'after' delays")
        return self

    @model_validator(mode="after")
    def _campaigns_consistent(self) -> Self:
        names = [campaign.name for campaign in self.campaigns]
        if len(set(names)) != len(names):
            raise ValueError("campaign names must be unique")
        for campaign in self.campaign_list():
            steps = self.campaign_steps(campaign)
            for number, step in enumerate(steps, 1):
                if step.channel == "webhook" and self.webhook_url is None:
                    raise ValueError(f"campaign {campaign.name!r}: steps.{number}.channel: "
                                     "a webhook step needs the store's webhook_url")
            for variant in campaign.variants:
                for number in variant.steps:
                    if not 1 <= number <= len(steps):
                        raise ValueError(
                            f"campaign {campaign.name!r}: variants.{variant.name}.steps.{number}:"
                            f" no such step (the campaign has {len(steps)})")
        return self

    def click_base(self) -> str | None:
        """The URL the click token is appended to, or None when clicks cannot be tracked."""
        if self.click_url is not None:
            return self.click_url if self.click_url.endswith("/") else self.click_url + "/"
        base, found, rest = self.unsubscribe_url.partition(UNSUBSCRIBE_ROUTE)
        if found and not rest:
            return base + CLICK_ROUTE
        return None

    def campaign_list(self) -> list[Campaign]:
        """The campaigns in order, or the implicit ``default`` one of a policy without any."""
        return self.campaigns or [default_campaign(self.steps)]

    def campaign(self, name: str | None) -> Campaign | None:
        """The campaign of that name (None: the ``default`` one of a plan made before campaigns
        existed, when the policy still has no campaigns)."""
        if name is None:
            return None if self.campaigns else default_campaign(self.steps)
        return next((c for c in self.campaign_list() if c.name == name), None)

    def campaign_steps(self, campaign: Campaign) -> list[ReminderStep]:
        return campaign.steps if campaign.steps is not None else self.steps


class SmtpSettings(BaseModel):
    """The SMTP relay; ``tls`` is implicit TLS (port 465), ``starttls`` upgrades a plain one."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    """A file holding the password (a mounted secret), instead of ``password``."""
    starttls: bool = False
    tls: bool = False
    validate_certs: bool = True
    timeout: Duration = 30.0
    """Longest silence of the server: connect, greeting, each command's reply (DATA's too).
    A tarpit or hung relay costs one attempt this long, then it is retried with backoff."""
    connections: int = Field(4, ge=1, le=64)
    """SMTP connections the sender keeps open at most, to overlap deliveries."""

    @model_validator(mode="after")
    def _password_from_file(self) -> Self:
        if self.password_file is not None:
            if self.password is not None:
                raise ValueError("set one of smtp.password and smtp.password_file")
            self.password = read_secret(
                "smtp_password", {"CARTWATCH_SMTP_PASSWORD_FILE": str(self.password_file)})
        return self

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Self:
        if self.starttls and self.tls:
            raise ValueError("choose one of smtp.tls (implicit TLS) and smtp.starttls")
        if (self.username is None) != (self.password is None):
            raise ValueError("smtp.username and smtp.password go together")
        return self


class NotifierSettings(BaseModel):
    """The ``notifier`` section of the settings."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    smtp: SmtpSettings = SmtpSettings()
    link_secret: SecretStr | None = None
    link_secret_file: Path | None = None
    retry_initial: Duration = 1.0
    retry_max: Duration = 300.0
    give_up_after: Duration = 3_600.0
    """A transient delivery failure is retried (backing off) until this long after the first try."""
    reminders: ReminderPolicy = ReminderPolicy()
    stores: dict[str, dict[str, Any]] = {}
    _policies: dict[str, ReminderPolicy] = PrivateAttr(default_factory=dict)
    _secret: bytes | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        defaults = self.reminders.model_dump()
        for store_id, overrides in self.stores.items():
            try:
                self._policies[store_id] = ReminderPolicy.model_validate(
                    {**defaults, **overrides}
                )
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in error['loc']) or 'store'}: {error['msg']}"
                    for error in exc.errors()
                )
                raise ValueError(f"store {store_id!r}: {problems}") from None
        self._secret = self._read_secret()
        if self.enabled and self._secret is None:
            raise ValueError(
                "the notifier needs a link secret: set CARTWATCH_LINK_SECRET, "
                "notifier.link_secret or notifier.link_secret_file"
            )
        return self

    def _read_secret(self) -> bytes | None:
        if self.link_secret is not None and self.link_secret_file is not None:
            raise ValueError("set one of link_secret and link_secret_file")
        if self.link_secret is not None:
            secret = self.link_secret.get_secret_value().encode()
        elif self.link_secret_file is not None:
            try:
                secret = self.link_secret_file.read_bytes().strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read link_secret_file {self.link_secret_file}: {exc.strerror}"
                ) from None
        else:
            return None
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the link secret must be at least {MIN_SECRET_BYTES} bytes long")
        return secret

    def policy(self, store_id: str) -> ReminderPolicy:
        """The store's reminder policy: its overrides over ``reminders``."""
        return self._policies.get(store_id, self.reminders)

    def policies(self) -> dict[str, ReminderPolicy]:
        """Every configured store's policy (for checking templates at start-up)."""
        return dict(self._policies)

    @property
    def secret(self) -> bytes:
        """The link-signing secret; only asked for when the notifier is enabled."""
        if self._secret is None:
            raise RuntimeError("no link secret configured")
        return self._secret


_SMTP_ENV = ("host", "port", "username", "password", "password_file", "starttls", "tls",
             "connections", "timeout")


def notifier_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``notifier`` values from ``CARTWATCH_SMTP_*``, ``CARTWATCH_LINK_SECRET[_FILE]``,
    ``CARTWATCH_NOTIFIER_ENABLED`` and ``CARTWATCH_REMINDER_STEPS`` ("1h:reminder,24h:last")."""
    values: dict[str, Any] = {}
    smtp = {
        name: environ[f"{ENV_PREFIX}SMTP_{name.upper()}"]
        for name in _SMTP_ENV
        if f"{ENV_PREFIX}SMTP_{name.upper()}" in environ
    }
    if smtp:
        values["smtp"] = smtp
    for name in ("link_secret", "link_secret_file", "notifier_enabled"):
        if ENV_PREFIX + name.upper() in environ:
            values[name.removeprefix("notifier_")] = environ[ENV_PREFIX + name.upper()]
    steps = environ.get(f"{ENV_PREFIX}REMINDER_STEPS", "").strip()
    if steps:
        parsed = []
        for part in steps.split(","):
            after, _, template = part.strip().partition(":")
            parsed.append({"after": after, **({"template": template} if template else {})})
        values["reminders"] = {"steps": parsed}
    return values
